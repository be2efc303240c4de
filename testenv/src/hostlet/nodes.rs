//! Node registration, Ready heartbeats and Leases: what the scheduler and the node-lifecycle
//! controller need to see to treat our nodes as healthy.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec as NodeObjectSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::config::{EXTRA_NODE_TAINT, NodeSpec};
use super::status::now;

const KUBELET_VERSION: &str = "v1.37.2";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_DURATION_SECONDS: i32 = 40;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(20);
const LEASE_EVERY: Duration = Duration::from_secs(10);
/// Taints the API server's admission puts on new nodes, which only the node-lifecycle controller
/// removes; we may run without that controller, so we remove them ourselves once Ready.
const STARTUP_TAINTS: [&str; 2] = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];

/// Creates the node (or adopts an existing one, keeping its spec, e.g. a cordon, except that a
/// cordoned [`NodeSpec`] is cordoned and tainted again), then reports it Ready.
pub(crate) async fn register(client: &kube::Client, spec: &NodeSpec) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta { name: Some(spec.name.clone()), labels: Some(spec.labels()), ..Default::default() },
        spec: spec.cordoned.then(cordoned_spec),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = spec.name, platform = %spec.platform, cordoned = spec.cordoned, "node created"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let mut patch = json!({ "metadata": { "labels": spec.labels() } });
            if spec.cordoned {
                // A merge patch replaces the taint list: other taints of the node go.
                patch["spec"] = serde_json::to_value(cordoned_spec())?;
            }
            api.patch(&spec.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            tracing::info!(node = spec.name, "node adopted");
        }
        Err(e) => return Err(e.into()),
    }
    let status = json!({ "status": node_status(spec, Time(now())) });
    api.patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    remove_startup_taints(&api, &spec.name).await
}

/// Renews the Ready condition's heartbeat of every node; re-registers a node someone deleted.
pub(crate) async fn heartbeats(client: kube::Client, nodes: Vec<NodeSpec>) {
    let api: Api<Node> = Api::all(client.clone());
    let since = Time(now());
    loop {
        tokio::time::sleep(HEARTBEAT_EVERY).await;
        for spec in &nodes {
            let status = json!({ "status": { "conditions": conditions(since.clone()) } });
            let result = match api.patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(&status)).await {
                Err(kube::Error::Api(e)) if e.code == 404 => register(&client, spec).await,
                Err(e) => Err(e.into()),
                Ok(_) => remove_startup_taints(&api, &spec.name).await,
            };
            if let Err(e) = result {
                tracing::warn!(node = spec.name, error = %e, "node heartbeat failed");
            }
        }
    }
}

/// Keeps one Lease per node in `kube-node-lease` fresh.
pub(crate) async fn leases(client: kube::Client, nodes: Vec<NodeSpec>) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let node_api: Api<Node> = Api::all(client);
    loop {
        for spec in &nodes {
            if let Err(e) = renew_lease(&leases, &node_api, &spec.name).await {
                tracing::warn!(node = spec.name, error = %e, "lease renewal failed");
            }
        }
        tokio::time::sleep(LEASE_EVERY).await;
    }
}

async fn renew_lease(leases: &Api<Lease>, nodes: &Api<Node>, name: &str) -> Result<()> {
    let spec = LeaseSpec {
        holder_identity: Some(name.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
        renew_time: Some(MicroTime(now())),
        ..Default::default()
    };
    if leases.get_opt(name).await?.is_some() {
        let patch = json!({ "spec": spec });
        leases.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        return Ok(());
    }
    // Owned by its node, as the kubelet does, so that deleting the node removes the lease.
    let owner = nodes.get(name).await?.metadata.uid.map(|uid| OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.to_string(),
        uid,
        ..Default::default()
    });
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(spec),
    };
    leases.create(&PostParams::default(), &lease).await?;
    Ok(())
}

/// The spec of a node that runs nothing: cordoned, so that neither the scheduler nor archway's
/// placement (which reads the cordon, not taints) picks it, and tainted, so that DaemonSets (whose pods
/// tolerate a cordon) stay off it too.
fn cordoned_spec() -> NodeObjectSpec {
    NodeObjectSpec {
        unschedulable: Some(true),
        taints: Some(vec![Taint {
            key: EXTRA_NODE_TAINT.into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

async fn remove_startup_taints(api: &Api<Node>, name: &str) -> Result<()> {
    let node = api.get(name).await?;
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    let kept: Vec<&Taint> = taints.iter().filter(|t| !STARTUP_TAINTS.contains(&t.key.as_str())).collect();
    if kept.len() != taints.len() {
        let patch = json!({ "spec": { "taints": kept } });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        tracing::debug!(node = name, "removed start-up taints");
    }
    Ok(())
}

/// The full status of a fresh node: a small machine that is Ready.
fn node_status(spec: &NodeSpec, since: Time) -> NodeStatus {
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity("4".into())),
        ("memory".to_string(), Quantity("8Gi".into())),
        ("pods".to_string(), Quantity("110".into())),
        ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
    ]);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(conditions(since)),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: "127.0.0.1".into() },
            NodeAddress { type_: "Hostname".into(), address: spec.name.clone() },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: spec.platform.architecture.clone(),
            operating_system: spec.platform.os.clone(),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: KUBELET_VERSION.into(),
            container_runtime_version: format!("hostlet://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: kernel,
            os_image: "hostlet".into(),
            machine_id: format!("hostlet-{}", spec.name),
            system_uuid: format!("hostlet-{}", spec.name),
            boot_id: format!("hostlet-{}", std::process::id()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Ready, and no pressure of any kind. `since` is the transition time, which stays put while the
/// heartbeat time moves.
fn conditions(since: Time) -> Vec<NodeCondition> {
    let heartbeat = Time(now());
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(heartbeat.clone()),
        last_transition_time: Some(since.clone()),
    };
    vec![
        condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "hostlet has sufficient memory available"),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "hostlet has no disk pressure"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID", "hostlet has sufficient PID available"),
        condition("Ready", "True", "KubeletReady", "hostlet is posting ready status"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostlet::HostletConfig;

    #[test]
    fn status_matches_labels() {
        let pi = &HostletConfig::default_nodes()[2];
        let status = node_status(pi, Time(now()));
        let info = status.node_info.unwrap();
        assert_eq!(info.architecture, pi.labels()["kubernetes.io/arch"]);
        assert_eq!(info.operating_system, "linux");
        assert_eq!(info.kubelet_version, "v1.37.2");
        let ready = status.conditions.unwrap();
        assert_eq!(ready.last().unwrap().type_, "Ready");
        assert_eq!(ready.last().unwrap().status, "True");
        assert_eq!(status.addresses.unwrap()[0].address, "127.0.0.1");
    }

    #[test]
    fn cordoned_spec_keeps_every_pod_off() {
        let spec = cordoned_spec();
        assert_eq!(spec.unschedulable, Some(true));
        let taints = spec.taints.unwrap();
        assert_eq!(taints.len(), 1);
        assert_eq!((taints[0].key.as_str(), taints[0].effect.as_str()), (EXTRA_NODE_TAINT, "NoSchedule"));
        assert!(!STARTUP_TAINTS.contains(&EXTRA_NODE_TAINT), "the heartbeat would remove it");
    }
}
