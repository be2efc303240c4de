//! The pods bound to our nodes: one watcher per node, a table of the pods we have taken on, and the
//! deletion protocol (kill, report, delete with grace 0, remove the sandbox).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Ctx;
use super::run;
use super::sandbox::Sandbox;

/// Why a pod could not run: becomes the pod's (or a container's) reason and message.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PodError {
    pub reason: String,
    pub message: String,
}

impl PodError {
    pub fn new(reason: &str, message: String) -> PodError {
        PodError { reason: reason.into(), message }
    }

    /// The kubelet's reason for a container whose env or volumes cannot be made.
    pub fn config(message: String) -> PodError {
        PodError::new("CreateContainerConfigError", message)
    }
}

impl std::fmt::Display for PodError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// One pod we know. A pod stays here until the API says it is gone, so that each is handled once.
struct Entry {
    node: String,
    sandbox: Sandbox,
    run: Option<JoinHandle<()>>,
    stop: Option<watch::Sender<bool>>,
    /// Its deletion has begun; a later event changes nothing.
    finishing: bool,
}

pub(crate) struct PodTable {
    ctx: Arc<Ctx>,
    inner: Mutex<Inner>,
}

struct Inner {
    pods: HashMap<String, Entry>,
    ips: IpPool,
}

impl PodTable {
    pub fn new(ctx: Arc<Ctx>) -> PodTable {
        PodTable { ctx, inner: Mutex::new(Inner { pods: HashMap::new(), ips: IpPool::random() }) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not wedge the table: the data stays consistent per operation.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pod was added or changed.
    fn on_pod(self: &Arc<Self>, pod: Pod) {
        let (Some(uid), Some(node)) = (pod.metadata.uid.clone(), node_of(&pod)) else {
            return;
        };
        // Only pods of the nodes we run; an extra node's pods (they are watched by none) never run.
        if self.ctx.node(&node).is_none() {
            return;
        }
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let mut inner = self.lock();
        if let Some(entry) = inner.pods.get_mut(&uid) {
            if deleting && !entry.finishing {
                entry.finishing = true;
                let (run, stop) = (entry.run.take(), entry.stop.take());
                let sandbox = entry.sandbox.clone();
                tokio::spawn(finish(self.ctx.clone(), run, stop, Some(pod), sandbox));
            }
            return;
        }
        let sandbox = Sandbox::for_pod(&self.ctx.config.pods_dir(), &pod);
        let mut entry = Entry { node, sandbox: sandbox.clone(), run: None, stop: None, finishing: deleting };
        let name = pod_name(&pod);
        if deleting {
            tracing::info!(pod = name, "deleting pod");
            tokio::spawn(finish(self.ctx.clone(), None, None, Some(pod), sandbox));
        } else if is_terminal(&pod) {
            tracing::debug!(pod = name, "terminal pod, not run again");
        } else if run::was_started(&pod) && !run::is_workload_only(&self.ctx, &pod) {
            // Its processes died with an earlier hostlet; running them twice could repeat side
            // effects, so the pod fails and its controller decides.
            tracing::warn!(pod = name, "pod was running under an earlier hostlet");
            tokio::spawn(run::fail_orphan(self.ctx.clone(), pod));
        } else {
            let ip = match previous_ip(&pod) {
                Some(ip) => inner.ips.reserve(ip),
                None if host_network(&pod) => Ipv4Addr::LOCALHOST,
                None => inner.ips.allocate(),
            };
            let (stop_tx, stop_rx) = watch::channel(false);
            let table = self.clone();
            tracing::info!(pod = name, node = entry.node, %ip, "running pod");
            entry.run = Some(tokio::spawn(async move {
                run::run_pod(table.ctx.clone(), pod, ip, sandbox, stop_rx).await;
                table.lock().ips.release(ip);
            }));
            entry.stop = Some(stop_tx);
        }
        inner.pods.insert(uid, entry);
    }

    /// The API no longer has the pod (deleted, or missed while the watch was down).
    fn on_gone(&self, uid: &str) {
        let entry = self.lock().pods.remove(uid);
        if let Some(mut entry) = entry
            && !entry.finishing
        {
            tracing::info!(uid, "pod gone");
            tokio::spawn(finish(self.ctx.clone(), entry.run.take(), entry.stop.take(), None, entry.sandbox));
        }
    }

    /// After a re-list of `node`: pods we know there that the list no longer has are gone.
    fn forget_missing(&self, node: &str, listed: &HashSet<String>) {
        let gone: Vec<String> = self
            .lock()
            .pods
            .iter()
            .filter(|(uid, e)| e.node == node && !listed.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            self.on_gone(&uid);
        }
    }

    /// Aborts every pod task; dropping them kills their processes.
    pub fn abort_all(&self) {
        for entry in self.lock().pods.values() {
            if let Some(run) = &entry.run {
                run.abort();
            }
        }
    }

    pub async fn shutdown(&self) {
        let runs: Vec<JoinHandle<()>> = self.lock().pods.values_mut().filter_map(|e| e.run.take()).collect();
        for run in runs {
            run.abort();
            let _ = run.await;
        }
    }
}

/// Stops a pod's run (which reports its final status), deletes it with grace 0 if asked to, and
/// removes its sandbox.
async fn finish(
    ctx: Arc<Ctx>,
    run: Option<JoinHandle<()>>,
    stop: Option<watch::Sender<bool>>,
    pod: Option<Pod>,
    sandbox: Sandbox,
) {
    if let Some(stop) = stop {
        let _ = stop.send(true);
    }
    if let Some(run) = run {
        let _ = run.await;
    }
    if let Some(pod) = pod {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            // The pod of this uid only: a StatefulSet may already have made its successor.
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(pod.metadata.name.as_deref().unwrap_or_default(), &params).await {
            Ok(_) => tracing::debug!(pod = pod_name(&pod), "deleted with grace 0"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(pod = pod_name(&pod), error = %e, "delete failed"),
        }
    }
    sandbox.remove();
}

/// Watches the pods bound to each of our nodes (the extra nodes run nothing) and hands every event to
/// the table.
pub(crate) async fn watch(table: Arc<PodTable>) {
    let api: Api<Pod> = Api::all(table.ctx.client.clone());
    let streams = table.ctx.config.nodes.iter().map(|node| {
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", node.name));
        let name = node.name.clone();
        watcher(api.clone(), config).default_backoff().map(move |event| (name.clone(), event)).boxed()
    });
    let mut events = futures::stream::select_all(streams);
    let mut listed: HashMap<String, HashSet<String>> = HashMap::new();
    while let Some((node, event)) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => {
                listed.insert(node, HashSet::new());
            }
            Ok(watcher::Event::InitApply(pod)) => {
                if let Some(uid) = &pod.metadata.uid {
                    listed.entry(node).or_default().insert(uid.clone());
                }
                table.on_pod(pod);
            }
            Ok(watcher::Event::InitDone) => {
                let seen = listed.remove(&node).unwrap_or_default();
                table.forget_missing(&node, &seen);
            }
            Ok(watcher::Event::Apply(pod)) => table.on_pod(pod),
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(uid) = &pod.metadata.uid {
                    table.on_gone(uid);
                }
            }
            Err(e) => tracing::warn!(node, error = %e, "pod watch error"),
        }
    }
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.node_name.clone()
}

pub(crate) fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn is_terminal(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false)
}

/// The loopback IP an earlier hostlet gave the pod, kept so that a restart does not renumber it.
fn previous_ip(pod: &Pod) -> Option<Ipv4Addr> {
    let ip: Ipv4Addr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    (ip.is_loopback() && ip != Ipv4Addr::LOCALHOST).then_some(ip)
}

/// Pod IPs from 127.N.0.0/16, never 127.0.0.1 (the host's), .0 or .255; the first 253 pods get
/// 127.N.0.x. Addresses go round, skipping those in use. Each hostlet takes its own N, so the pods of
/// environments running side by side (tests in parallel) can listen on the same port.
#[derive(Default)]
struct IpPool {
    net: u8,
    next: u16,
    used: HashSet<Ipv4Addr>,
}

impl IpPool {
    /// A pool in a /16 of 127.0.0.0/8 picked from the clock and the process id (no two hostlets of one
    /// test process start in the same nanosecond).
    fn random() -> IpPool {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let net = (nanos ^ std::process::id()) % 254 + 1;
        IpPool { net: net as u8, ..Default::default() }
    }

    fn allocate(&mut self) -> Ipv4Addr {
        for _ in 0..=u16::MAX {
            self.next = self.next.wrapping_add(1);
            let [hi, lo] = self.next.to_be_bytes();
            let ip = Ipv4Addr::new(127, self.net, hi, lo);
            if lo != 0 && lo != 255 && ip != Ipv4Addr::LOCALHOST && self.used.insert(ip) {
                return ip;
            }
        }
        // 65k live pods on one machine will not happen; share an address rather than fail.
        Ipv4Addr::new(127, self.net, 0, 254)
    }

    fn reserve(&mut self, ip: Ipv4Addr) -> Ipv4Addr {
        self.used.insert(ip);
        ip
    }

    fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_are_unique_loopback_and_reused_after_release() {
        let mut pool = IpPool::default();
        let first: Vec<Ipv4Addr> = (0..253).map(|_| pool.allocate()).collect();
        assert_eq!(first[0], Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(first[252], Ipv4Addr::new(127, 0, 0, 254));
        let other = IpPool::random().allocate();
        assert!(other.octets()[1] != 0 && other.octets()[3] == 1, "{other}");
        assert_eq!(first.iter().collect::<HashSet<_>>().len(), 253);
        assert_eq!(pool.allocate(), Ipv4Addr::new(127, 0, 1, 1));
        pool.release(Ipv4Addr::new(127, 0, 0, 9));
        pool.reserve(Ipv4Addr::new(127, 0, 1, 2));
        assert_eq!(pool.allocate(), Ipv4Addr::new(127, 0, 1, 3));
        for ip in first {
            assert!(ip.is_loopback() && ip != Ipv4Addr::LOCALHOST);
        }
    }
}
