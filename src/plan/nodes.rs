//! What placement and coverage read of the cluster's nodes: each node's platform, usability,
//! emulation and build load; and which node events change any of that (a heartbeat changes nothing).

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::Node;

use crate::platform::{self, Platform};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
