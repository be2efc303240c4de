//! Where one platform's build runs: on a node that runs its code natively, or under qemu on a node
//! labelled as able to emulate it. Pure: nodes in, a decision out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm};

use crate::api::{BuildMode, BuildTool, BuilderKind, Placement};
use crate::platform::{self, ARCH_LABEL, ARM_VARIANT_LABEL, OS_LABEL, Platform, best_match};

/// Nodes that can emulate an architecture carry `<prefix><arch>: "true"`, by default
/// `emulate.archway.dev/arm64`; qemu-user runs every variant of an architecture, so the label has none.
pub const EMULATION_LABEL_PREFIX: &str = "emulate.archway.dev/";

/// The node labels that say which architectures a node emulates (`--emulation-label-prefix`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmulationLabels {
    pub prefix: String,
}

impl Default for EmulationLabels {
    fn default() -> Self {
        EmulationLabels { prefix: EMULATION_LABEL_PREFIX.to_string() }
    }
}

impl EmulationLabels {
    /// The label a node carries when it emulates `platform`'s architecture.
    pub fn label(&self, platform: &Platform) -> String {
        format!("{}{}", self.prefix, platform.architecture)
    }
}

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

/// What the planner needs to know of a Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// `None` when the node's labels do not say (it then only counts for emulation).
    pub platform: Option<Platform>,
    /// Ready and not cordoned: a new build pod can land there.
    pub usable: bool,
    /// Architectures this node emulates (from its `emulate.archway.dev/<arch>` labels).
    pub emulates: BTreeSet<String>,
    /// Build pods on it that have not ended.
    pub builds: u32,
}

impl NodeView {
    pub fn from_node(node: &Node, emulation: &EmulationLabels) -> NodeView {
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
        let emulates = labels
            .iter()
            .filter(|(_, v)| v.as_str() == "true")
            .filter_map(|(k, _)| k.strip_prefix(emulation.prefix.as_str()))
            .map(str::to_string)
            .collect();
        NodeView {
            name: node.metadata.name.clone().unwrap_or_default(),
            platform: platform::node_platform(node).ok(),
            usable: ready && !cordoned,
            emulates,
            builds: 0,
        }
    }
}

/// A hash of what rollout coverage reads of a node: its labels (which a workload's node selectors and
/// affinities may name), taints, cordon and Ready status. Heartbeats and resource figures change the
/// Node object every few seconds without changing this, so they need not wake any build.
pub fn coverage_fingerprint(node: &Node) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    node.metadata.name.hash(&mut hasher);
    node.metadata.labels.hash(&mut hasher);
    let spec = node.spec.as_ref();
    spec.and_then(|s| s.unschedulable).hash(&mut hasher);
    for taint in spec.and_then(|s| s.taints.as_ref()).into_iter().flatten() {
        (&taint.key, &taint.value, &taint.effect).hash(&mut hasher);
    }
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.into_iter().flatten().find(|c| c.type_ == "Ready").map(|c| &c.status).hash(&mut hasher);
    hasher.finish()
}

/// How a node event can concern builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeChange {
    /// Nothing builds read (a heartbeat).
    None,
    /// Only what rollout coverage reads (a label of its own, a taint).
    Coverage,
    /// What placement reads too: a node added or removed, its platform, emulation, Ready or cordon.
    Placement,
}

/// What was seen of each node, to pass on only the node events that change what placement or
/// coverage reads: an added, changed or deleted node, not a heartbeat.
pub struct NodeFingerprints {
    emulation: EmulationLabels,
    /// Node name -> (placement's view, coverage fingerprint).
    seen: HashMap<String, (NodeView, u64)>,
}

impl NodeFingerprints {
    pub fn new(emulation: EmulationLabels) -> NodeFingerprints {
        NodeFingerprints { emulation, seen: HashMap::new() }
    }

    pub fn change(&mut self, event: &kube::runtime::watcher::Event<Node>) -> NodeChange {
        use kube::runtime::watcher::Event;
        match event {
            Event::Apply(node) | Event::InitApply(node) => {
                let now = (NodeView::from_node(node, &self.emulation), coverage_fingerprint(node));
                match self.seen.insert(now.0.name.clone(), now.clone()) {
                    Some(before) if before == now => NodeChange::None,
                    Some(before) if before.0 == now.0 => NodeChange::Coverage,
                    _ => NodeChange::Placement,
                }
            }
            Event::Delete(node) => {
                self.seen.remove(node.metadata.name.as_deref().unwrap_or_default());
                NodeChange::Placement
            }
            // A relist ends with InitDone: after a break in the watch, look at every build once.
            Event::InitDone => NodeChange::Placement,
            Event::Init => NodeChange::None,
        }
    }
}

/// An image a build pod runs (a builder, the git clone) and the platforms its index has children for:
/// a node runs it when containerd would find a child for the node's platform. `platforms: None` when
/// the index could not be read: then it is taken to run everywhere.
#[derive(Clone, Copy, Debug)]
pub struct ToolImage<'a> {
    pub reference: &'a str,
    pub platforms: Option<&'a [Platform]>,
}

impl ToolImage<'_> {
    fn runs_on(&self, host: &Platform) -> bool {
        self.platforms.is_none_or(|children| best_match(host, children).is_some())
    }

    /// `quay.io/buildah/stable:v1.40 (linux/amd64, linux/arm64)`.
    fn described(&self) -> String {
        let platforms = self.platforms.unwrap_or_default().iter().map(Platform::to_string);
        format!("{} ({})", self.reference, platforms.collect::<Vec<_>>().join(", "))
    }
}

/// The images the build pod of one platform may run.
#[derive(Clone, Copy, Debug)]
pub struct BuildImages<'a> {
    pub buildah: ToolImage<'a>,
    pub buildkit: ToolImage<'a>,
    /// The clone's image, for a git source.
    pub git: Option<ToolImage<'a>>,
}

impl BuildImages<'static> {
    /// Images whose platforms are not known: they count as running everywhere.
    #[cfg(test)]
    pub fn unread() -> BuildImages<'static> {
        let image = |reference| ToolImage { reference, platforms: None };
        BuildImages { buildah: image("buildah"), buildkit: image("buildkit"), git: None }
    }
}

impl BuildImages<'_> {
    fn builder(&self, tool: BuildTool) -> &ToolImage<'_> {
        match tool {
            BuildTool::Buildah => &self.buildah,
            BuildTool::Buildkit => &self.buildkit,
        }
    }

    /// Every image the pod of `tool` runs, the builder first.
    fn of(&self, tool: BuildTool) -> impl Iterator<Item = &ToolImage<'_>> {
        std::iter::once(self.builder(tool)).chain(self.git.iter())
    }

    fn run_on(&self, tool: BuildTool, host: &Platform) -> bool {
        self.of(tool).all(|image| image.runs_on(host))
    }

    /// Whether `tool`'s images are all known: their children say where they run.
    fn known(&self, tool: BuildTool) -> bool {
        self.of(tool).all(|image| image.platforms.is_some())
    }

    /// The images of `tools` that have no child for `host`, with where they run.
    fn missing_on(&self, tools: &[BuildTool], host: &Platform) -> String {
        let mut missing: Vec<String> = Vec::new();
        for image in tools.iter().flat_map(|tool| self.of(*tool)) {
            let described = image.described();
            if !image.runs_on(host) && !missing.contains(&described) {
                missing.push(described);
            }
        }
        missing.join(", ")
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
                    return Some(Placed { mode, host, tool, reason, node_terms, candidates, exclusive: false });
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
            return Some(Placed { mode, host, tool, reason, node_terms, candidates, exclusive: false });
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
    match placement {
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
    }
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
            buildah: ToolImage { reference: "quay.io/buildah/stable:v1.40", platforms: Some(&buildah) },
            buildkit: ToolImage { reference: "moby/buildkit:v0.26.3-rootless", platforms: Some(&buildkit) },
            git: None,
        };
        place(&p(platform), placement, kind, &cluster(true), &EmulationLabels::default(), &images)
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
            buildah: ToolImage { reference: "quay.io/buildah/stable:v1.40", platforms: Some(&buildah) },
            buildkit: ToolImage { reference: "moby/buildkit:v0.26.3-rootless", platforms: Some(&buildkit) },
            git: Some(ToolImage { reference: "alpine/git:2.47.2", platforms: Some(&none) }),
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
    fn a_heartbeat_changes_nothing_a_label_coverage_and_a_cordon_placement() {
        let node = |heartbeat: &str, unschedulable: bool, ready: &str, team: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "jetson-1", "labels": {"kubernetes.io/arch": "arm64", "team": team},
                             "resourceVersion": heartbeat},
                "spec": {"unschedulable": unschedulable},
                "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat}],
                           "allocatable": {"cpu": heartbeat}},
            }))
            .unwrap()
        };
        let before = coverage_fingerprint(&node("2026-01-01T00:00:00Z", false, "True", "a"));
        assert_eq!(before, coverage_fingerprint(&node("2026-01-01T00:00:10Z", false, "True", "a")));
        assert_ne!(before, coverage_fingerprint(&node("2026-01-01T00:00:10Z", true, "True", "a")));
        assert_ne!(before, coverage_fingerprint(&node("2026-01-01T00:00:10Z", false, "Unknown", "a")));

        use kube::runtime::watcher::Event;
        let mut seen = NodeFingerprints::new(EmulationLabels::default());
        let at = |second: u8| format!("2026-01-01T00:00:{second:02}Z");
        let mut change = |event| seen.change(&event);
        assert_eq!(change(Event::InitApply(node(&at(1), false, "True", "a"))), NodeChange::Placement, "a new node");
        assert_eq!(change(Event::Apply(node(&at(2), false, "True", "a"))), NodeChange::None, "a heartbeat");
        assert_eq!(change(Event::Apply(node(&at(3), false, "True", "b"))), NodeChange::Coverage, "a label of its own");
        assert_eq!(change(Event::Apply(node(&at(4), true, "True", "b"))), NodeChange::Placement, "a cordon");
        assert_eq!(change(Event::Apply(node(&at(5), true, "False", "b"))), NodeChange::Coverage, "NotReady, cordoned");
        assert_eq!(change(Event::Delete(node(&at(6), true, "True", "b"))), NodeChange::Placement, "a deletion");
        assert_eq!(change(Event::Apply(node(&at(7), true, "True", "b"))), NodeChange::Placement, "back again");
    }

    #[test]
    fn builds_beyond_a_nodes_slots_are_queued() {
        let slots = BuildSlots { per_arch: [("arm".to_string(), 1)].into() };
        let mut nodes = cluster(true);
        let mut v7 = place_unread("linux/arm/v7", Placement::Native, &nodes).unwrap();
        assert_eq!(v7.candidates, ["pi-1"]);
        take_slot(&mut v7, &mut nodes, &slots).unwrap();
        assert!(v7.exclusive, "pi-1 runs one build at a time");
        // The armv6 build of the same pass finds pi-1 taken.
        let mut v6 = place_unread("linux/arm/v6", Placement::Native, &nodes).unwrap();
        let queued = take_slot(&mut v6, &mut nodes, &slots).unwrap_err();
        assert!(queued.is_queued());
        assert!(queued.to_string().contains("(pi-1: 1 of 1)"), "{queued}");
        // Unbounded architectures take any number.
        for _ in 0..3 {
            let mut amd64 = place_unread("linux/amd64", Placement::Native, &nodes).unwrap();
            take_slot(&mut amd64, &mut nodes, &slots).unwrap();
            assert!(!amd64.exclusive);
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
