//! Where one platform's build runs: on a node that runs its code natively, or under qemu on a node
//! labelled as able to emulate it. Pure: nodes in, a decision out.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};

use super::builder_images::{BuildImages, ToolImage};
use super::nodes::{EmulationLabels, NodeView};
use crate::api::{BuildMode, BuildTool, BuilderKind, Placement};
use crate::platform::{ARCH_LABEL, ARM_VARIANT_LABEL, OS_LABEL, Platform};

/// How many builds a node may run at once, by its architecture (`--max-builds-per-node`): a Pi that
/// runs two builds at once is evicted or swaps; an architecture without an entry has no bound.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildSlots {
    pub per_arch: BTreeMap<String, u32>,
}

impl BuildSlots {
    /// The bound of a node of `platform`, if any.
    pub fn of(&self, platform: Option<&Platform>) -> Option<u32> {
        self.per_arch.get(&platform?.architecture).copied().filter(|max| *max > 0)
    }

    fn free(&self, node: &NodeView) -> bool {
        self.of(node.platform.as_ref()).is_none_or(|max| node.builds < max)
    }
}

/// Where a platform's build goes, as node selector terms for the Job (ORed, as Kubernetes does).
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    pub mode: BuildMode,
    /// The node platform (native), or the emulated platform.
    pub host: Platform,
    pub tool: BuildTool,
    /// Why this builder or mode, where the preferred one (`kind`'s first, native) does not run.
    pub reason: Option<String>,
    pub node_terms: Vec<NodeSelectorTerm>,
    /// The usable nodes the terms select.
    pub candidates: Vec<String>,
    /// Every candidate runs one build at a time (`--max-builds-per-node` 1): the pod keeps away from
    /// other build pods, so two builds placed at once by two reconciles never share a node.
    pub exclusive: bool,
    /// Some candidate counts its builds (`--max-builds-per-node`): Jobs placed so must be placed one
    /// reconcile at a time, each seeing the others'.
    pub bounded: bool,
}

/// Why a platform cannot be placed now; the text goes to status and events as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unplaceable {
    #[error(
        "no Ready, schedulable node runs {platform} natively (placement: native); \
         add or uncordon a node with kubernetes.io/arch={arch}{variant_hint}"
    )]
    NoNativeNode { platform: String, arch: String, variant_hint: String },
    #[error(
        "no Ready, schedulable node is labelled {label}=true to emulate {platform} (placement: emulated); \
         register qemu on a node and label it"
    )]
    NoEmulationNode { platform: String, label: String },
    #[error(
        "no Ready, schedulable node runs {platform} natively, and none is labelled {label}=true to emulate it; \
         add a node of that architecture or label a qemu-enabled node"
    )]
    NoNode { platform: String, label: String },
    #[error("no builder image runs where {platform} can be built: {nodes}; {hint}")]
    NoBuilderImage { platform: String, nodes: String, hint: String },
    #[error(
        "queued: every node that can build {platform} runs as many builds as --max-builds-per-node allows \
         ({nodes}); it starts when one ends"
    )]
    Queued { platform: String, nodes: String },
}

impl Unplaceable {
    /// Only a build that ends is missing, not a node.
    pub fn is_queued(&self) -> bool {
        matches!(self, Unplaceable::Queued { .. })
    }
}

/// Decides where `platform` is built under `placement`, and with which of `kind`'s builders: a node
/// counts only where the builder's image (and the clone's) has a child for its platform.
pub fn place(
    platform: &Platform,
    placement: Placement,
    kind: BuilderKind,
    nodes: &[NodeView],
    emulation: &EmulationLabels,
    images: &BuildImages,
) -> Result<Placed, Unplaceable> {
    let tools = kind.tools();
    let usable = |host: &Platform| nodes.iter().any(|n| n.usable && n.platform.as_ref() == Some(host));
    let native_hosts: Vec<Platform> = platform.native_hosts().into_iter().filter(|h| usable(h)).collect();
    let arch = &platform.architecture;
    let emulating: Vec<&NodeView> = nodes.iter().filter(|n| n.usable && n.emulates.contains(arch)).collect();
    let emulating_hosts: Vec<Platform> =
        emulating.iter().filter_map(|n| n.platform.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    // Why the preferred builders were passed over on these hosts, for the status.
    let passed_over = |hosts: &[Platform], tools: &[BuildTool]| -> Vec<String> {
        let lacking = hosts.iter().map(|h| (h, images.missing_on(tools, h))).filter(|(_, m)| !m.is_empty());
        lacking.map(|(h, missing)| format!("no image for {h} nodes in {missing}")).collect()
    };
    let native = || {
        for host in &native_hosts {
            for (i, tool) in tools.iter().enumerate() {
                if images.run_on(*tool, host) {
                    let skipped = passed_over(std::slice::from_ref(host), &tools[..i]);
                    let reason = (!skipped.is_empty()).then(|| format!("{}; built with {tool}", skipped.join("; ")));
                    let node_terms = native_terms(host);
                    let candidates = names(nodes.iter().filter(|n| n.usable && n.platform.as_ref() == Some(host)));
                    let (mode, host, tool) = (BuildMode::Native, host.clone(), *tool);
                    return Some(Placed {
                        mode,
                        host,
                        tool,
                        reason,
                        node_terms,
                        candidates,
                        exclusive: false,
                        bounded: false,
                    });
                }
            }
        }
        None
    };
    let emulated = || {
        let label = requirement(&emulation.label(platform), "In", &["true"]);
        for (i, tool) in tools.iter().enumerate() {
            let hosts: Vec<&Platform> = emulating_hosts.iter().filter(|h| images.run_on(*tool, h)).collect();
            let known = images.known(*tool);
            let candidates = names(
                emulating.iter().copied().filter(|n| !known || n.platform.as_ref().is_some_and(|p| hosts.contains(&p))),
            );
            let node_terms = if !emulating.is_empty() && !known {
                // Where the images run is not known: any emulating node may do.
                vec![term(vec![label.clone()])]
            } else if !hosts.is_empty() {
                // Only the emulating nodes whose platform runs the images.
                let with_label = |mut t: NodeSelectorTerm| {
                    t.match_expressions.get_or_insert_with(Vec::new).push(label.clone());
                    t
                };
                hosts.iter().flat_map(|h| native_terms(h)).map(with_label).collect()
            } else {
                continue;
            };
            let mut skipped = passed_over(&native_hosts, tools);
            skipped.extend(passed_over(&emulating_hosts, &tools[..i]));
            let reason = (!skipped.is_empty()).then(|| format!("{}; built emulated with {tool}", skipped.join("; ")));
            let (mode, host, tool) = (BuildMode::Emulated, platform.clone(), *tool);
            return Some(Placed { mode, host, tool, reason, node_terms, candidates, exclusive: false, bounded: false });
        }
        None
    };
    // There are nodes, but no builder image runs on any of them.
    let no_image = |hosts: &[Platform], hint: String| Unplaceable::NoBuilderImage {
        platform: platform.to_string(),
        nodes: passed_over(hosts, tools).join("; "),
        hint,
    };
    let other_kind = match kind {
        BuilderKind::Auto => "",
        _ => "spec.builder.kind: auto also tries the other builder; ",
    };
    let label = emulation.label(platform);
    let placed = match placement {
        Placement::Native => native().ok_or_else(|| {
            if native_hosts.is_empty() {
                Unplaceable::NoNativeNode {
                    platform: platform.to_string(),
                    arch: platform.architecture.clone(),
                    variant_hint: match &platform.variant {
                        Some(v) if platform.architecture == "arm" => format!(" and {ARM_VARIANT_LABEL}={v}"),
                        _ => String::new(),
                    },
                }
            } else {
                no_image(&native_hosts, format!("{other_kind}placement: auto builds it emulated instead"))
            }
        }),
        Placement::Emulated => emulated().ok_or_else(|| {
            if emulating.is_empty() {
                Unplaceable::NoEmulationNode { platform: platform.to_string(), label }
            } else {
                no_image(&emulating_hosts, format!("{other_kind}or label a node they run on {label}=true"))
            }
        }),
        Placement::Auto => native().or_else(emulated).ok_or_else(|| {
            if native_hosts.is_empty() && emulating.is_empty() {
                Unplaceable::NoNode { platform: platform.to_string(), label }
            } else {
                let hosts: Vec<Platform> = native_hosts.iter().chain(&emulating_hosts).cloned().collect();
                no_image(&hosts, format!("{other_kind}or label a node they run on {label}=true"))
            }
        }),
    };
    placed.map(|mut placed| {
        let unread = images.placed_blind(placed.tool);
        if !unread.is_empty() {
            placed.reason = Some(placed.reason.into_iter().chain(unread).collect::<Vec<_>>().join("; "));
        }
        placed
    })
}

/// Where a platform's image is assembled (builder `assemble`): no code of the platform runs, so on any
/// usable node whose platform runs the assemble image (the operator's own) and the clone's, if any.
pub fn place_assembled(platform: &Platform, nodes: &[NodeView], images: &BuildImages) -> Result<Placed, Unplaceable> {
    let tool = BuildTool::Assemble;
    let usable: Vec<&NodeView> = nodes.iter().filter(|n| n.usable).collect();
    let hosts: BTreeSet<&Platform> = usable.iter().filter_map(|n| n.platform.as_ref()).collect();
    let running: Vec<&Platform> = hosts.iter().copied().filter(|h| images.run_on(tool, h)).collect();
    if running.is_empty() {
        let hosts: Vec<Platform> = hosts.into_iter().cloned().collect();
        let nodes = match hosts.is_empty() {
            true => "no node is Ready and schedulable".to_string(),
            false => hosts
                .iter()
                .map(|h| format!("no image for {h} nodes in {}", images.missing_on(&[tool], h)))
                .collect::<Vec<_>>()
                .join("; "),
        };
        let hint = "run the operator's image (--assemble-image) on a platform the cluster has".to_string();
        return Err(Unplaceable::NoBuilderImage { platform: platform.to_string(), nodes, hint });
    }
    let candidates = names(usable.into_iter().filter(|n| n.platform.as_ref().is_some_and(|p| running.contains(&p))));
    let unread = images.placed_blind(tool);
    Ok(Placed {
        mode: BuildMode::Assembled,
        host: platform.clone(),
        tool,
        reason: (!unread.is_empty()).then(|| unread.join("; ")),
        node_terms: running.into_iter().flat_map(native_terms).collect(),
        candidates,
        exclusive: false,
        bounded: false,
    })
}

/// Node selector terms for a pod that runs only `image` (a git source's resolve Job): the usable
/// nodes' platforms it has a child for. `None` when that is not known (its index was not read) or no
/// node runs it: then the scheduler and the pull decide, as for any pod.
pub fn nodes_running(image: &ToolImage, nodes: &[NodeView]) -> Option<Vec<NodeSelectorTerm>> {
    image.platforms.ok()?;
    let hosts: BTreeSet<&Platform> = nodes.iter().filter(|n| n.usable).filter_map(|n| n.platform.as_ref()).collect();
    let terms: Vec<NodeSelectorTerm> = hosts.into_iter().filter(|h| image.runs_on(h)).flat_map(native_terms).collect();
    (!terms.is_empty()).then_some(terms)
}

fn names<'a>(nodes: impl Iterator<Item = &'a NodeView>) -> Vec<String> {
    nodes.map(|n| n.name.clone()).collect()
}

/// Where the builds placed so far run: `placed` waits while every candidate node runs as many
/// builds as `slots` allows; else it counts on the least busy of them (where the scheduler puts it).
pub fn take_slot(placed: &mut Placed, nodes: &mut [NodeView], slots: &BuildSlots) -> Result<(), Unplaceable> {
    let candidates = |n: &&mut NodeView| placed.candidates.contains(&n.name);
    let bounds: Vec<Option<u32>> = nodes.iter_mut().filter(candidates).map(|n| slots.of(n.platform.as_ref())).collect();
    placed.exclusive = !bounds.is_empty() && bounds.iter().all(|max| *max == Some(1));
    placed.bounded = bounds.iter().any(Option::is_some);
    let free = nodes.iter_mut().filter(candidates).filter(|n| slots.free(n)).min_by_key(|n| n.builds);
    if let Some(node) = free {
        node.builds += 1;
        return Ok(());
    }
    if bounds.is_empty() {
        return Ok(());
    }
    let busy = nodes.iter_mut().filter(candidates).map(|n| {
        let max = slots.of(n.platform.as_ref()).unwrap_or_default();
        format!("{}: {} of {max}", n.name, n.builds)
    });
    Err(Unplaceable::Queued { platform: placed.host.to_string(), nodes: busy.collect::<Vec<_>>().join(", ") })
}

/// Whether a node with these labels matches any of a pod's required node selector terms (the
/// operators archway writes: `In`, `NotIn`, `Exists`, `DoesNotExist`; no terms match every node).
pub fn matches_terms(labels: &BTreeMap<String, String>, terms: &[NodeSelectorTerm]) -> bool {
    let matches = |r: &NodeSelectorRequirement| {
        let values = r.values.as_deref().unwrap_or_default();
        match (r.operator.as_str(), labels.get(&r.key)) {
            ("In", Some(v)) => values.contains(v),
            ("NotIn", v) => v.is_none_or(|v| !values.contains(v)),
            ("Exists", v) => v.is_some(),
            ("DoesNotExist", v) => v.is_none(),
            _ => false,
        }
    };
    terms.is_empty() || terms.iter().any(|t| t.match_expressions.iter().flatten().all(matches))
}

/// Node selector terms that match exactly the nodes of platform `host`. An arm node without the
/// variant label counts as v7, so v7 needs a second term for unlabelled nodes.
fn native_terms(host: &Platform) -> Vec<NodeSelectorTerm> {
    let base = vec![requirement(OS_LABEL, "In", &[&host.os]), requirement(ARCH_LABEL, "In", &[&host.architecture])];
    match host.variant.as_deref() {
        Some(variant) if host.architecture == "arm" => {
            let mut terms = vec![term([base.clone(), vec![requirement(ARM_VARIANT_LABEL, "In", &[variant])]].concat())];
            if variant == "v7" {
                terms.push(term([base, vec![requirement(ARM_VARIANT_LABEL, "DoesNotExist", &[])]].concat()));
            }
            terms
        }
        _ => vec![term(base)],
    }
}

fn term(match_expressions: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm { match_expressions: Some(match_expressions), match_fields: None }
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_string(),
        operator: operator.to_string(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

/// The distinct platforms of the cluster's nodes, for `platforms: [auto]`, sorted. Every node counts,
/// cordoned and NotReady ones too: maintenance must not shrink an image.
pub fn cluster_platforms(nodes: &[NodeView]) -> Vec<Platform> {
    let set: BTreeSet<Platform> = nodes.iter().filter_map(|n| n.platform.clone()).collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;

    fn node(name: &str, platform: &str, usable: bool, emulates: &[&str]) -> NodeView {
        NodeView {
            name: name.into(),
            platform: Some(platform.parse().unwrap()),
            usable,
            emulates: emulates.iter().map(|s| s.to_string()).collect(),
            builds: 0,
        }
    }

    fn cluster(jetson_usable: bool) -> Vec<NodeView> {
        vec![
            node("x86-1", "linux/amd64", true, &[]),
            node("jetson-1", "linux/arm64", jetson_usable, &[]),
            node("pi-1", "linux/arm/v7", true, &[]),
            node("qemu-1", "linux/amd64", true, &["arm64", "arm"]),
        ]
    }

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    /// Placement with images whose platforms are not known.
    fn place_unread(platform: &str, placement: Placement, nodes: &[NodeView]) -> Result<Placed, Unplaceable> {
        place(&p(platform), placement, BuilderKind::Auto, nodes, &EmulationLabels::default(), &BuildImages::unread())
    }

    #[test]
    fn auto_prefers_native_then_emulates() {
        let placed = place_unread("linux/arm64", Placement::Auto, &cluster(true)).unwrap();
        assert_eq!((placed.mode, placed.host), (BuildMode::Native, p("linux/arm64")));
        let placed = place_unread("linux/arm64", Placement::Auto, &cluster(false)).unwrap();
        assert_eq!(placed.mode, BuildMode::Emulated);
        let expr = &placed.node_terms[0].match_expressions.as_ref().unwrap()[0];
        assert_eq!(expr.key, "emulate.archway.dev/arm64");
    }

    #[test]
    fn armv6_builds_natively_on_an_armv7_node() {
        let placed = place_unread("linux/arm/v6", Placement::Native, &cluster(true)).unwrap();
        assert_eq!((placed.mode, placed.host.clone()), (BuildMode::Native, p("linux/arm/v7")));
        // v7 also matches arm nodes without the variant label.
        assert_eq!(placed.node_terms.len(), 2);
        let ops: Vec<_> =
            placed.node_terms.iter().map(|t| t.match_expressions.as_ref().unwrap()[2].operator.clone()).collect();
        assert_eq!(ops, ["In", "DoesNotExist"]);
    }

    #[test]
    fn armv7_never_builds_natively_on_arm64() {
        let nodes = vec![node("jetson-1", "linux/arm64", true, &[])];
        let err = place_unread("linux/arm/v7", Placement::Native, &nodes).unwrap_err();
        assert!(err.to_string().contains("kubernetes.io/arch=arm and archway.dev/arm-variant=v7"), "{err}");
    }

    #[test]
    fn emulated_and_missing_nodes_say_what_is_missing() {
        let placed = place_unread("linux/arm/v7", Placement::Emulated, &cluster(true)).unwrap();
        assert_eq!(placed.mode, BuildMode::Emulated);
        let err = place_unread("linux/s390x", Placement::Auto, &cluster(true)).unwrap_err();
        assert!(err.to_string().contains("emulate.archway.dev/s390x=true"), "{err}");
        let nodes = vec![node("x86-1", "linux/amd64", true, &[]), node("qemu-1", "linux/amd64", false, &["arm64"])];
        let err = place_unread("linux/arm64", Placement::Emulated, &nodes).unwrap_err();
        assert!(matches!(err, Unplaceable::NoEmulationNode { .. }), "{err}");
    }

    /// The platforms the published builder images have (see the README, Raspberry Pis).
    fn published() -> (Vec<Platform>, Vec<Platform>) {
        let list = |ps: &[&str]| ps.iter().map(|s| p(s)).collect::<Vec<_>>();
        (
            list(&["linux/amd64", "linux/arm64", "linux/ppc64le", "linux/s390x"]),
            list(&["linux/amd64", "linux/arm/v7", "linux/arm64", "linux/s390x", "linux/ppc64le", "linux/riscv64"]),
        )
    }

    fn place_published(platform: &str, placement: Placement, kind: BuilderKind) -> Result<Placed, Unplaceable> {
        let (buildah, buildkit) = published();
        let images = BuildImages {
            buildah: ToolImage { reference: "quay.io/buildah/stable:v1.40", platforms: Ok(&buildah) },
            buildkit: ToolImage { reference: "moby/buildkit:v0.26.3-rootless", platforms: Ok(&buildkit) },
            assemble: ToolImage { reference: "ghcr.io/archway-dev/archway:0.1.0", platforms: Err("not used") },
            git: None,
        };
        place(&p(platform), placement, kind, &cluster(true), &EmulationLabels::default(), &images)
    }

    #[test]
    fn an_assembled_platform_runs_on_any_node_the_operator_image_runs_on() {
        let operator: Vec<Platform> = ["linux/amd64", "linux/arm64"].iter().map(|s| p(s)).collect();
        let images = BuildImages {
            assemble: ToolImage { reference: "ghcr.io/archway-dev/archway:0.1.0", platforms: Ok(&operator) },
            ..BuildImages::unread()
        };
        // Not one node of the platform, and no qemu: nothing of it runs.
        let nodes = [node("x86-1", "linux/amd64", true, &[]), node("pi-1", "linux/arm/v7", true, &[])];
        let placed = place_assembled(&p("linux/riscv64"), &nodes, &images).unwrap();
        assert_eq!((placed.mode, placed.tool, placed.reason), (BuildMode::Assembled, BuildTool::Assemble, None));
        assert_eq!(placed.candidates, ["x86-1"], "the operator's image has no linux/arm/v7 child");
        assert!(matches_terms(
            &BTreeMap::from([(ARCH_LABEL.into(), "amd64".into()), (OS_LABEL.into(), "linux".into())]),
            &placed.node_terms
        ));
        assert!(!matches_terms(
            &BTreeMap::from([(ARCH_LABEL.into(), "arm".into()), (OS_LABEL.into(), "linux".into())]),
            &placed.node_terms
        ));

        let err = place_assembled(&p("linux/amd64"), &nodes[1..], &images).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no builder image runs where linux/amd64 can be built: no image for linux/arm/v7 nodes in \
             ghcr.io/archway-dev/archway:0.1.0 (linux/amd64, linux/arm64); run the operator's image \
             (--assemble-image) on a platform the cluster has"
        );
    }

    #[test]
    fn a_pi_builds_with_buildkit_where_buildah_has_no_image() {
        for platform in ["linux/arm/v7", "linux/arm/v6"] {
            let placed = place_published(platform, Placement::Auto, BuilderKind::Auto).unwrap();
            assert_eq!(
                (placed.mode, placed.tool, placed.host),
                (BuildMode::Native, BuildTool::Buildkit, p("linux/arm/v7"))
            );
            let reason = placed.reason.unwrap();
            assert!(reason.starts_with("no image for linux/arm/v7 nodes in quay.io/buildah/stable:v1.40 (linux/amd64, linux/arm64, linux/ppc64le, linux/s390x)"), "{reason}");
            assert!(reason.ends_with("; built with BuildKit"), "{reason}");
        }
        let placed = place_published("linux/arm64", Placement::Auto, BuilderKind::Auto).unwrap();
        assert_eq!((placed.tool, placed.reason), (BuildTool::Buildah, None), "the preferred builder says nothing");
    }

    #[test]
    fn an_unreadable_builder_index_is_placed_as_if_everywhere_and_says_so() {
        let (_, buildkit) = published();
        let images = BuildImages {
            buildah: ToolImage { reference: "quay.io/buildah/stable:v1.40", platforms: Err("401 Unauthorized") },
            buildkit: ToolImage { reference: "moby/buildkit:v0.26.3-rootless", platforms: Ok(&buildkit) },
            assemble: ToolImage { reference: "ghcr.io/archway-dev/archway:0.1.0", platforms: Err("not used") },
            git: None,
        };
        let placed =
            place(&p("linux/arm/v7"), Placement::Auto, BuilderKind::Auto, &cluster(true), &Default::default(), &images)
                .unwrap();
        assert_eq!((placed.mode, placed.tool), (BuildMode::Native, BuildTool::Buildah));
        assert_eq!(
            placed.reason.as_deref(),
            Some("where quay.io/buildah/stable:v1.40 runs is not known (401 Unauthorized); placed as if on every node")
        );
    }

    #[test]
    fn a_pod_of_the_clone_image_alone_goes_where_the_image_runs() {
        let children = [p("linux/amd64"), p("linux/arm64")];
        let git = ToolImage { reference: "alpine/git:2.47.2", platforms: Ok(&children) };
        let terms = nodes_running(&git, &cluster(true)).unwrap();
        let arches: Vec<&str> = terms
            .iter()
            .map(|t| t.match_expressions.as_ref().unwrap()[1].values.as_ref().unwrap()[0].as_str())
            .collect();
        assert_eq!(arches, ["amd64", "arm64"], "not pi-1 (arm/v7), which no child runs on");
        let unread = ToolImage { reference: "alpine/git:2.47.2", platforms: Err("timeout") };
        assert_eq!(nodes_running(&unread, &cluster(true)), None);
        let nowhere = [p("linux/s390x")];
        assert_eq!(nodes_running(&ToolImage { platforms: Ok(&nowhere), ..git }, &cluster(true)), None);
    }

    #[test]
    fn a_pinned_builder_that_runs_on_no_pi_waits_or_builds_emulated() {
        let err = place_published("linux/arm/v6", Placement::Native, BuilderKind::Buildah).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Unplaceable::NoBuilderImage { .. }), "{message}");
        assert!(message.contains("no image for linux/arm/v7 nodes in quay.io/buildah/stable:v1.40"), "{message}");
        assert!(message.contains("spec.builder.kind: auto") && message.contains("placement: auto"), "{message}");

        let placed = place_published("linux/arm/v6", Placement::Auto, BuilderKind::Buildah).unwrap();
        assert_eq!((placed.mode, placed.tool), (BuildMode::Emulated, BuildTool::Buildah));
        let reason = placed.reason.unwrap();
        assert!(reason.ends_with("; built emulated with buildah"), "{reason}");
        // Only emulating nodes whose own platform runs buildah: qemu-1, an amd64 node.
        let term = placed.node_terms[0].match_expressions.as_ref().unwrap();
        let pairs: Vec<(&str, &str)> =
            term.iter().map(|r| (r.key.as_str(), r.values.as_ref().unwrap()[0].as_str())).collect();
        assert_eq!(
            pairs,
            [("kubernetes.io/os", "linux"), ("kubernetes.io/arch", "amd64"), ("emulate.archway.dev/arm", "true")]
        );
        assert_eq!(placed.node_terms.len(), 1);
    }

    #[test]
    fn no_builder_image_on_any_node_that_could_build_says_which_images_and_nodes() {
        let (buildah, buildkit) = published();
        let none: Vec<Platform> = vec![p("linux/s390x")];
        let images = BuildImages {
            buildah: ToolImage { reference: "quay.io/buildah/stable:v1.40", platforms: Ok(&buildah) },
            buildkit: ToolImage { reference: "moby/buildkit:v0.26.3-rootless", platforms: Ok(&buildkit) },
            assemble: ToolImage { reference: "ghcr.io/archway-dev/archway:0.1.0", platforms: Err("not used") },
            git: Some(ToolImage { reference: "alpine/git:2.47.2", platforms: Ok(&none) }),
        };
        let err = place(
            &p("linux/arm64"),
            Placement::Auto,
            BuilderKind::Auto,
            &cluster(true),
            &EmulationLabels::default(),
            &images,
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("no builder image runs where linux/arm64 can be built: no image for linux/arm64 nodes in alpine/git:2.47.2 (linux/s390x);"), "{message}");
        assert!(message.contains("no image for linux/amd64 nodes in alpine/git:2.47.2"), "{message}");
    }

    #[test]
    fn the_emulation_label_prefix_is_configurable() {
        use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let labels = EmulationLabels { prefix: "qemu.example.com/".into() };
        let node = Node {
            metadata: ObjectMeta {
                name: Some("builder".into()),
                labels: Some(
                    [
                        ("kubernetes.io/arch", "amd64"),
                        ("qemu.example.com/arm64", "true"),
                        ("emulate.archway.dev/arm", "true"),
                    ]
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .into(),
                ),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let view = NodeView::from_node(&node, &labels);
        assert!(view.usable);
        assert_eq!(view.emulates, ["arm64".to_string()].into());
        let placed =
            place(&p("linux/arm64"), Placement::Emulated, BuilderKind::Auto, &[view], &labels, &BuildImages::unread())
                .unwrap();
        assert_eq!(placed.node_terms[0].match_expressions.as_ref().unwrap()[0].key, "qemu.example.com/arm64");
    }

    #[test]
    fn builds_beyond_a_nodes_slots_are_queued() {
        let slots = BuildSlots { per_arch: [("arm".to_string(), 1)].into() };
        let mut nodes = cluster(true);
        let mut v7 = place_unread("linux/arm/v7", Placement::Native, &nodes).unwrap();
        assert_eq!(v7.candidates, ["pi-1"]);
        take_slot(&mut v7, &mut nodes, &slots).unwrap();
        assert!(v7.exclusive && v7.bounded, "pi-1 runs one build at a time");
        // The armv6 build of the same pass finds pi-1 taken.
        let mut v6 = place_unread("linux/arm/v6", Placement::Native, &nodes).unwrap();
        let queued = take_slot(&mut v6, &mut nodes, &slots).unwrap_err();
        assert!(queued.is_queued());
        assert!(queued.to_string().contains("(pi-1: 1 of 1)"), "{queued}");
        // Unbounded architectures take any number.
        for _ in 0..3 {
            let mut amd64 = place_unread("linux/amd64", Placement::Native, &nodes).unwrap();
            take_slot(&mut amd64, &mut nodes, &slots).unwrap();
            assert!(!amd64.exclusive && !amd64.bounded);
        }
    }

    #[test]
    fn node_selector_terms_match_as_the_scheduler_matches() {
        let labels: BTreeMap<String, String> =
            [("kubernetes.io/arch", "arm"), ("kubernetes.io/os", "linux")].map(|(k, v)| (k.into(), v.into())).into();
        let v7 = native_terms(&p("linux/arm/v7"));
        assert!(matches_terms(&labels, &v7), "an arm node without a variant label counts as v7");
        assert!(!matches_terms(&labels, &native_terms(&p("linux/arm/v6"))));
        assert!(!matches_terms(&labels, &native_terms(&p("linux/arm64"))));
        assert!(matches_terms(&labels, &[]));
    }

    #[test]
    fn cluster_platforms_are_distinct_and_count_unusable_nodes() {
        let platforms = cluster_platforms(&cluster(false));
        assert_eq!(platforms, vec![p("linux/amd64"), p("linux/arm/v7"), p("linux/arm64")]);
    }
}
