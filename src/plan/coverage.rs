//! Which node platforms a workload's pods can land on, and which of them an image index does not
//! cover. The rollout must not move a workload to an image that some of its possible nodes cannot run.
//! Pure: a pod spec and nodes in, platforms out.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration};

use crate::platform::{self, Platform, best_match};

/// The platforms of the nodes that `pod` may be scheduled on: its node selector, its required node
/// affinity, and its tolerations against the nodes' NoSchedule/NoExecute taints. Cordoned and NotReady
/// nodes count too: they may come back, and the pods would land there then.
pub fn schedulable_platforms(pod: &PodSpec, nodes: &[Node]) -> BTreeSet<Platform> {
    nodes.iter().filter(|node| can_schedule(pod, node)).filter_map(|node| platform::node_platform(node).ok()).collect()
}

/// The node platforms among `nodes` that no child of the index (`offered`) runs on, by containerd's rules.
pub fn uncovered(nodes: &BTreeSet<Platform>, offered: &[Platform]) -> Vec<Platform> {
    nodes.iter().filter(|node| best_match(node, offered).is_none()).cloned().collect()
}

fn can_schedule(pod: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let selector_ok = pod.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let terms = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|s| s.node_selector_terms.as_slice());
    let affinity_ok = match terms {
        None | Some([]) => true,
        Some(terms) => terms.iter().any(|term| term_matches(term, labels, name)),
    };
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    let tolerations = pod.tolerations.as_deref().unwrap_or_default();
    let taints_ok = taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)));
    selector_ok && affinity_ok && taints_ok
}

/// A term matches when all its expressions do; a term with none matches no node (as in Kubernetes).
fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let name_field = BTreeMap::from([("metadata.name".to_string(), name.to_string())]);
    expressions.iter().all(|r| requirement_matches(r, labels))
        && fields.iter().all(|r| requirement_matches(r, &name_field))
}

fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&r.key);
    let values = r.values.as_deref().unwrap_or_default();
    let number = |v: &str| v.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|v| number(v))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// Kubernetes' toleration matching: an empty key with `Exists` tolerates everything; an empty effect
/// matches every effect.
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = toleration.key.as_deref().unwrap_or_default();
    let exists = toleration.operator.as_deref() == Some("Exists");
    let key_ok = (key.is_empty() && exists) || key == taint.key;
    let value_ok =
        exists || toleration.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default();
    effect_ok && key_ok && value_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelector, NodeSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, arch: &str, variant: Option<&str>, taints: Vec<Taint>) -> Node {
        let mut labels = BTreeMap::from([
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), arch.to_string()),
            ("kubernetes.io/hostname".to_string(), name.to_string()),
        ]);
        if let Some(v) = variant {
            labels.insert("archway.dev/arm-variant".into(), v.into());
        }
        Node {
            metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels), ..Default::default() },
            spec: Some(NodeSpec { taints: Some(taints), ..Default::default() }),
            status: None,
        }
    }

    fn taint(key: &str, value: &str) -> Taint {
        Taint { key: key.into(), value: Some(value.into()), effect: "NoSchedule".into(), ..Default::default() }
    }

    /// The seed's cluster: x86, Jetson, a Pi (armv7) and a Pi Zero (armv6) that carries a taint.
    fn cluster() -> Vec<Node> {
        vec![
            node("x86-1", "amd64", None, vec![]),
            node("jetson-1", "arm64", None, vec![]),
            node("pi-1", "arm", Some("v7"), vec![]),
            node("zero-1", "arm", Some("v6"), vec![taint("arch", "armv6")]),
        ]
    }

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    fn names(platforms: &BTreeSet<Platform>) -> Vec<String> {
        platforms.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_plain_pod_lands_on_every_untainted_node() {
        let platforms = schedulable_platforms(&PodSpec::default(), &cluster());
        assert_eq!(names(&platforms), ["linux/amd64", "linux/arm/v7", "linux/arm64"]);
    }

    #[test]
    fn tolerations_open_tainted_nodes() {
        let pod = PodSpec {
            tolerations: Some(vec![Toleration {
                key: Some("arch".into()),
                operator: Some("Equal".into()),
                value: Some("armv6".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(schedulable_platforms(&pod, &cluster()).contains(&p("linux/arm/v6")));
        let everything = PodSpec {
            tolerations: Some(vec![Toleration { operator: Some("Exists".into()), ..Default::default() }]),
            ..Default::default()
        };
        assert_eq!(schedulable_platforms(&everything, &cluster()).len(), 4);
    }

    #[test]
    fn selectors_and_required_affinity_narrow_the_nodes() {
        let pod = PodSpec {
            node_selector: Some([("kubernetes.io/arch".to_string(), "arm".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(names(&schedulable_platforms(&pod, &cluster())), ["linux/arm/v7"]);
        let affinity = |operator: &str, values: &[&str]| PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "kubernetes.io/arch".into(),
                                operator: operator.into(),
                                values: Some(values.iter().map(|v| v.to_string()).collect()),
                            }]),
                            match_fields: None,
                        }],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            names(&schedulable_platforms(&affinity("In", &["amd64", "arm64"]), &cluster())),
            ["linux/amd64", "linux/arm64"]
        );
        assert_eq!(
            names(&schedulable_platforms(&affinity("NotIn", &["amd64", "arm64"]), &cluster())),
            ["linux/arm/v7"]
        );
    }

    #[test]
    fn uncovered_follows_containerd_matching() {
        let nodes: BTreeSet<Platform> =
            [p("linux/amd64"), p("linux/arm64"), p("linux/arm/v7"), p("linux/arm/v6")].into();
        // arm64 nodes run the arm/v7 child; nothing runs on an armv6 node but a v6 (or v5) child.
        let offered = [p("linux/amd64"), p("linux/arm/v7")];
        assert_eq!(uncovered(&nodes, &offered), [p("linux/arm/v6")]);
        let offered = [p("linux/amd64"), p("linux/arm64")];
        assert_eq!(uncovered(&nodes, &offered), [p("linux/arm/v6"), p("linux/arm/v7")]);
        let offered = [p("linux/amd64"), p("linux/arm/v6")];
        assert!(uncovered(&nodes, &offered).is_empty());
    }
}
