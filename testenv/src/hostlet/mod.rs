//! The hostlet: a fake kubelet of ours. It registers nodes with real architecture labels, keeps their
//! Leases fresh, and runs the pods the real scheduler binds to them on this host. Pods whose image is
//! a "tool" (buildah, BuildKit, git) run the host's program, each container in a private mount
//! namespace; other images are pulled from the registry by containerd's platform rules, unpacked, and
//! run chrooted on an overlay of their root (foreign architectures under qemu, through binfmt_misc).

mod config;
mod env;
mod image;
mod nodes;
mod pods;
mod pull;
mod run;
mod sandbox;
mod status;
mod volumes;

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::task::JoinHandle;

pub use config::{EXTRA_NODE_TAINT, HostletConfig, INSTANCE_TYPE_LABEL, NodeSpec, RegistryAccess, ToolImage};

/// What the pod tasks share: the client, the configuration and the registry client.
pub(crate) struct Ctx {
    pub client: kube::Client,
    pub config: HostletConfig,
    pub puller: pull::Puller,
    pub images: image::ImageStore,
}

impl Ctx {
    /// A node whose pods this hostlet runs (never one of the extra nodes).
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.config.nodes.iter().find(|n| n.name == name)
    }
}

/// A running hostlet. Dropping it aborts its tasks and kills the processes of its pods; the node
/// objects stay (their Leases simply go stale).
pub struct Hostlet {
    tasks: Vec<JoinHandle<()>>,
    pods: Arc<pods::PodTable>,
}

/// Registers the configured nodes (and the extra ones), then starts their heartbeats and the pod
/// watcher (of `nodes` only).
pub async fn start(client: kube::Client, config: HostletConfig) -> Result<Hostlet> {
    std::fs::create_dir_all(config.pods_dir()).with_context(|| format!("creating {}", config.pods_dir().display()))?;
    sandbox::ensure_termination_log_target()?;
    let puller = pull::Puller::new(&config.registry)?;
    for node in config.all_nodes() {
        nodes::register(&client, node).await.with_context(|| format!("registering node {}", node.name))?;
    }
    let images = image::ImageStore::new(config.work_dir.join("images"));
    let ctx = Arc::new(Ctx { client: client.clone(), config, puller, images });
    let pods = Arc::new(pods::PodTable::new(ctx.clone()));
    // One heartbeat and one Lease loop for all nodes, extra ones included: they look alive alike.
    let all: Vec<NodeSpec> = ctx.config.all_nodes().cloned().collect();
    let tasks = vec![
        tokio::spawn(nodes::heartbeats(client.clone(), all.clone())),
        tokio::spawn(nodes::leases(client, all)),
        tokio::spawn(pods::watch(pods.clone())),
    ];
    tracing::info!(
        nodes = ?ctx.config.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        extra_nodes = ctx.config.extra_nodes.len(),
        "hostlet started"
    );
    Ok(Hostlet { tasks, pods })
}

impl Hostlet {
    /// Stops the heartbeats and the watcher, and kills every pod's processes, waiting until they
    /// are gone.
    pub async fn shutdown(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        self.pods.shutdown().await;
    }
}

impl Drop for Hostlet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.pods.abort_all();
    }
}
