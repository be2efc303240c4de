//! What the controller reads before it decides: the nodes, the build's Jobs and their pods (and why
//! a Job has no pod, from its events), and a ConfigMap context's fingerprint and Dockerfile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use sha2::{Digest, Sha256};

use super::caches::{Caches, ContextRead};
use super::error::Error;
use crate::api::MultiArchBuild;
use crate::assemble::layer::is_archive;
use crate::plan::assembly::ContextDockerfile;
use crate::plan::decide::JobObservation;
use crate::plan::git;
use crate::plan::inputs::build_label;
use crate::plan::job::{BUILD_LABEL, BUILDER_CONTAINER, PLATFORM_LABEL};
use crate::plan::job_status::{has_ended, observe_job, pod_overdue};
use crate::plan::nodes::{EmulationLabels, NodeView};
use crate::plan::placement::matches_terms;

const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

pub struct Observed {
    pub nodes: Vec<NodeView>,
    /// The nodes as cached, for the rollout's coverage check.
    pub node_objects: Vec<Arc<Node>>,
    /// The platforms' build Jobs.
    pub jobs: Vec<JobObservation>,
    /// The Jobs that resolve a git revision.
    pub resolve_jobs: Vec<JobObservation>,
    /// A ConfigMap context's fingerprint and Dockerfile.
    pub context: Option<ContextRead>,
    /// A Secret or ConfigMap the build names that does not exist: what to say.
    pub missing: Option<String>,
}

/// What one reconcile of `build` reads: everything from the watch caches, except a ConfigMap context
/// whose content changed (read once per change) and the events of a running Job that has had no pod for
/// a while ([`pod_overdue`]).
pub async fn observe(
    client: &Client,
    caches: &Caches,
    build: &MultiArchBuild,
    emulation: &EmulationLabels,
    now: &Time,
) -> Result<Observed, Error> {
    let namespace = build.namespace().unwrap_or_default();
    let label = build_label(&build.name_any());
    let ours = |labels: &BTreeMap<String, String>, ns: Option<&String>| {
        ns == Some(&namespace) && labels.get(BUILD_LABEL) == Some(&label)
    };
    let nodes = caches.nodes.state();
    let owner = build.uid();
    let mut pods_by_job: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in caches.pods.state().iter().filter(|p| ours(p.labels(), p.metadata.namespace.as_ref())) {
        if let Some(job) = pod.labels().get(JOB_NAME_LABEL).cloned() {
            pods_by_job.entry(job).or_default().push(Pod::clone(pod));
        }
    }
    let jobs = caches.jobs();
    let owned = jobs.iter().filter(|job| {
        ours(job.labels(), job.metadata.namespace.as_ref())
            && job.owner_references().iter().any(|o| Some(&o.uid) == owner.as_ref())
    });
    let (mut observed, mut resolve_jobs) = (Vec::new(), Vec::new());
    for job in owned {
        let pods = pods_by_job.remove(&job.name_any()).unwrap_or_default();
        let create_failure = match pods.is_empty() && pod_overdue(job, now) {
            true => create_failure(client, job).await?,
            false => None,
        };
        if job.labels().get(git::ROLE_LABEL).map(String::as_str) == Some(git::RESOLVE_ROLE) {
            resolve_jobs.push(observe_job(job, pods, create_failure, git::RESOLVE_CONTAINER));
        } else {
            observed.push(observe_job(job, pods, create_failure, BUILDER_CONTAINER));
        }
    }
    // A Secret or ConfigMap the build names that does not exist is for the planner to report.
    let referenced = async {
        require_push_secret(client, caches, build, &namespace).await?;
        require_git_secret(client, caches, build, &namespace).await?;
        read_context(client, caches, build, &namespace).await
    };
    let (context, missing) = match referenced.await {
        Ok(context) => (context, None),
        Err(Error::Invalid(message)) => (None, Some(message)),
        Err(e) => return Err(e),
    };
    let builds = builds_by_node(caches, &nodes);
    let view = |node: &Arc<Node>| {
        let view = NodeView::from_node(node, emulation);
        NodeView { builds: builds.get(&view.name).copied().unwrap_or_default(), ..view }
    };
    Ok(Observed {
        nodes: nodes.iter().map(view).collect(),
        node_objects: nodes,
        jobs: observed,
        resolve_jobs,
        context,
        missing,
    })
}

/// The builds each node runs or is about to run, of every MultiArchBuild: what `--max-builds-per-node`
/// counts. A build pod on a node counts there; a build Job whose pod is not on a node yet (just created,
/// pending) counts on every node it may land on, so two reconciles never fill one slot twice.
fn builds_by_node(caches: &Caches, nodes: &[Arc<Node>]) -> BTreeMap<String, u32> {
    let mut builds: BTreeMap<String, u32> = BTreeMap::new();
    let mut placed = std::collections::BTreeSet::new();
    for pod in caches.pods.state().iter().filter(|p| p.labels().contains_key(PLATFORM_LABEL)) {
        let ended = matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        match (ended, node) {
            (false, Some(node)) => *builds.entry(node).or_default() += 1,
            (false, None) => continue,
            (true, _) => {}
        }
        if let Some(job) = pod.labels().get(JOB_NAME_LABEL) {
            placed.insert((pod.metadata.namespace.clone(), job.clone()));
        }
    }
    let pending = caches.jobs();
    let pending = pending.iter().filter(|job| {
        job.labels().contains_key(PLATFORM_LABEL)
            && !has_ended(job)
            && !placed.contains(&(job.metadata.namespace.clone(), job.metadata.name.clone().unwrap_or_default()))
    });
    for job in pending {
        let pod = job.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        let affinity = pod.and_then(|p| p.affinity.as_ref()).and_then(|a| a.node_affinity.as_ref());
        let required = affinity.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
        let terms = required.map(|r| r.node_selector_terms.as_slice()).unwrap_or_default();
        for node in nodes.iter().filter(|n| matches_terms(n.labels(), terms)) {
            *builds.entry(node.name_any()).or_default() += 1;
        }
    }
    builds
}

/// The message of the newest `FailedCreate` event of a Job: the Job controller says only there why
/// it could not create a pod (Pod Security, a quota, a webhook).
async fn create_failure(client: &Client, job: &Job) -> Result<Option<String>, Error> {
    let (Some(namespace), Some(uid)) = (job.namespace(), job.uid()) else { return Ok(None) };
    let params = ListParams::default().fields(&format!("involvedObject.uid={uid},reason=FailedCreate"));
    let events = Api::<Event>::namespaced(client.clone(), &namespace).list(&params).await?;
    let newest = events.items.into_iter().max_by_key(|e| {
        e.last_timestamp.clone().map(|t| t.0).or(e.event_time.clone().map(|t| t.0)).or(e
            .metadata
            .creation_timestamp
            .clone()
            .map(|t| t.0))
    });
    Ok(newest.and_then(|e| e.message))
}

/// Build pods mount the push secret: without it they would hang, so say so before creating them. A
/// Secret the cache does not have (yet) is looked up, so a Secret created a moment ago counts.
async fn require_push_secret(
    client: &Client,
    caches: &Caches,
    build: &MultiArchBuild,
    namespace: &str,
) -> Result<(), Error> {
    let Some(secret) = &build.spec.output.push_secret else { return Ok(()) };
    if caches.secret_exists(namespace, &secret.name)
        || Api::<Secret>::namespaced(client.clone(), namespace).get_metadata_opt(&secret.name).await?.is_some()
    {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "spec.output.pushSecret: Secret {:?} not found in namespace {namespace:?}; create it with \
         `kubectl create secret docker-registry {} ...`",
        secret.name, secret.name
    )))
}

/// The git source's Secret must exist, be made for git, and (for a password) name the URL's host: no
/// other Secret of the namespace, and no credentials for another host, become a build's.
async fn require_git_secret(
    client: &Client,
    caches: &Caches,
    build: &MultiArchBuild,
    namespace: &str,
) -> Result<(), Error> {
    let Some(git) = &build.spec.source.git else { return Ok(()) };
    let Some(secret) = &git.secret_ref else { return Ok(()) };
    let problem = match caches.secret_meta(client, namespace, &secret.name).await? {
        Some(meta) => {
            let hosts = meta.annotations.get(git::GIT_HOSTS_ANNOTATION).map(String::as_str);
            match git::check_credentials(&git.url, &secret.name, &meta.type_, hosts) {
                Ok(()) => return Ok(()),
                Err(problem) => problem,
            }
        }
        None => format!(
            "Secret {:?} not found in namespace {namespace:?}; create a kubernetes.io/basic-auth or \
             kubernetes.io/ssh-auth Secret",
            secret.name
        ),
    };
    Err(Error::Invalid(format!("spec.source.git.secretRef: {problem}")))
}

/// A ConfigMap context: a hash of its content (editing the ConfigMap is a changed build input) and its
/// Dockerfile. Read from the apiserver only when the ConfigMap changed since it was last read.
async fn read_context(
    client: &Client,
    caches: &Caches,
    build: &MultiArchBuild,
    namespace: &str,
) -> Result<Option<ContextRead>, Error> {
    let Some(source) = &build.spec.source.config_map else { return Ok(None) };
    let missing = || {
        Error::Invalid(format!(
            "spec.source.configMap: ConfigMap {:?} not found in namespace {namespace:?}; create it with the build \
             context's files",
            source.name
        ))
    };
    let dockerfile_key = &build.spec.dockerfile;
    // Not cached (yet): read below, as when it changed.
    let version = caches.config_map_version(namespace, &source.name);
    if let Some(kept) = version.as_deref().and_then(|v| caches.context(namespace, &source.name, v, dockerfile_key)) {
        return Ok(Some(kept));
    }
    let config_map =
        Api::<ConfigMap>::namespaced(client.clone(), namespace).get_opt(&source.name).await?.ok_or_else(missing)?;
    let mut hasher = Sha256::new();
    for (key, value) in config_map.data.iter().flatten() {
        hasher.update(format!("{}:{key}\0", key.len()));
        hasher.update(value.as_bytes());
    }
    let mut archives = BTreeSet::new();
    for (key, value) in config_map.binary_data.iter().flatten() {
        hasher.update(format!("{}:{key}\0", key.len()));
        hasher.update(&value.0);
        if is_archive(&value.0) {
            archives.insert(key.clone());
        }
    }
    let fingerprint: String = hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    let text = config_map.data.as_ref().and_then(|data| data.get(dockerfile_key)).cloned();
    let dockerfile = text.map(|text| ContextDockerfile { text, archives: Some(archives) });
    let read = ContextRead { fingerprint, dockerfile_key: dockerfile_key.clone(), dockerfile };
    if let Some(read_version) = config_map.metadata.resource_version {
        caches.keep_context(namespace, &source.name, read_version, read.clone());
    }
    Ok(Some(read))
}
