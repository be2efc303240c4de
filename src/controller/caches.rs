//! Watch caches that a reconcile reads instead of the apiserver: the nodes, archway's Jobs and their
//! pods (by archway's `managed-by` label), and the metadata of Secrets, ConfigMaps and the workloads
//! rollouts can target. A reconcile of a build where nothing changed then makes no API request. A
//! ConfigMap context's content is read once per change of the ConfigMap (its resourceVersion), and its
//! fingerprint and Dockerfile kept; so is the body of a rollout target, once per change of the workload.
//!
//! One watch per kind: the streams that fill the caches are handed to the controller as its triggers
//! ([`Triggers`]); a store is updated before its object wakes a build. Jobs and pods come by separate
//! watches, so the pod cache may lag behind the Job event that woke a reconcile by a moment; the pod's
//! own event wakes the build again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::plan::assembly::ContextDockerfile;
use std::sync::Mutex;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::WorkloadKind;
use crate::plan::job::MANAGED_BY;
use crate::plan::workload::Workload;

pub struct Caches {
    pub nodes: Store<Node>,
    pub jobs: Store<Job>,
    pub pods: Store<Pod>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    deployments: Store<PartialObjectMeta<Deployment>>,
    statefulsets: Store<PartialObjectMeta<StatefulSet>>,
    daemonsets: Store<PartialObjectMeta<DaemonSet>>,
    /// `(namespace, name)` of a ConfigMap context -> what was read of it at a resourceVersion.
    contexts: Mutex<HashMap<(String, String), (String, ContextRead)>>,
    /// The bodies of rollout targets as last read, each at its resourceVersion.
    workloads: Mutex<HashMap<WorkloadKey, Workload>>,
    /// `(namespace, name)` of a git source's Secret -> what is known of it at a resourceVersion.
    secret_metas: Mutex<HashMap<(String, String), (String, SecretMeta)>>,
    /// Jobs this operator creates, or created, that the Job watch has not delivered yet: counted as
    /// if cached (client-go's "expectations"), so a node's build slot is taken the moment a Job is
    /// planned for it, without waiting for the watch.
    expected_jobs: Mutex<HashMap<(String, String), Expected>>,
}

/// A Job expected, since when.
type Expected = (Instant, Arc<Job>);

/// How long a Job is expected at most: by then the watch has delivered it (or it was deleted again,
/// and the watch delivered that).
const EXPECTATION: Duration = Duration::from_secs(30);

/// What is kept of a ConfigMap context: the fingerprint of its content, and the Dockerfile of key
/// `dockerfile_key` (`spec.dockerfile`), which tells whether `auto` assembles the image.
#[derive(Clone, Debug)]
pub struct ContextRead {
    pub fingerprint: String,
    pub dockerfile_key: String,
    pub dockerfile: Option<ContextDockerfile>,
}

/// What the operator keeps of a Secret it checks (never its data).
#[derive(Clone, Debug)]
pub struct SecretMeta {
    pub type_: String,
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// `(kind, namespace, name)` of a workload.
pub type WorkloadKey = (WorkloadKind, String, String);

/// A watch stream of changed (or deleted) objects, that fills a cache as it is polled.
pub type Trigger<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// The streams behind the caches of what wakes builds; the controller polls them as its triggers.
pub struct Triggers {
    pub jobs: Trigger<Job>,
    pub pods: Trigger<Pod>,
    pub secrets: Trigger<PartialObjectMeta<Secret>>,
    pub config_maps: Trigger<PartialObjectMeta<ConfigMap>>,
    pub deployments: Trigger<PartialObjectMeta<Deployment>>,
    pub statefulsets: Trigger<PartialObjectMeta<StatefulSet>>,
    pub daemonsets: Trigger<PartialObjectMeta<DaemonSet>>,
}

impl Caches {
    /// The caches and the watches that fill them, for the operator's lifetime: the node watch is the
    /// caller's, the others are polled by the controller (`Triggers`).
    pub fn start(client: &Client, nodes: Store<Node>) -> (Caches, Triggers) {
        let managed = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
        let (pods, pod_changes) = reflected(watcher(Api::all(client.clone()), managed.clone()));
        let (jobs, job_changes) = reflected(watcher(Api::all(client.clone()), managed));
        // Metadata only: a Secret's data is read when it is used (to publish), never kept; a ConfigMap's
        // or a workload's when its resourceVersion moved.
        let (secrets, secret_changes) = metadata(client);
        let (config_maps, config_map_changes) = metadata(client);
        let (deployments, deployment_changes) = metadata(client);
        let (statefulsets, statefulset_changes) = metadata(client);
        let (daemonsets, daemonset_changes) = metadata(client);
        let caches = Caches {
            nodes,
            jobs,
            pods,
            secrets,
            config_maps,
            deployments,
            statefulsets,
            daemonsets,
            contexts: Mutex::new(HashMap::new()),
            workloads: Mutex::new(HashMap::new()),
            secret_metas: Mutex::new(HashMap::new()),
            expected_jobs: Mutex::new(HashMap::new()),
        };
        let triggers = Triggers {
            jobs: job_changes,
            pods: pod_changes,
            secrets: secret_changes,
            config_maps: config_map_changes,
            deployments: deployment_changes,
            statefulsets: statefulset_changes,
            daemonsets: daemonset_changes,
        };
        (caches, triggers)
    }

    /// Whether every watch has listed once.
    pub fn is_ready(&self) -> bool {
        let listed = |ready: Option<Result<(), reflector::store::WriterDropped>>| matches!(ready, Some(Ok(())));
        listed(self.nodes.wait_until_ready().now_or_never())
            && listed(self.jobs.wait_until_ready().now_or_never())
            && listed(self.pods.wait_until_ready().now_or_never())
            && listed(self.secrets.wait_until_ready().now_or_never())
            && listed(self.config_maps.wait_until_ready().now_or_never())
            && listed(self.deployments.wait_until_ready().now_or_never())
            && listed(self.statefulsets.wait_until_ready().now_or_never())
            && listed(self.daemonsets.wait_until_ready().now_or_never())
    }

    pub fn secret_exists(&self, namespace: &str, name: &str) -> bool {
        self.secrets.get(&ObjectRef::new(name).within(namespace)).is_some()
    }

    /// The type and annotations of a Secret, read (one GET, its data dropped at once) when its
    /// resourceVersion moved; `None` when there is no such Secret.
    pub async fn secret_meta(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretMeta>, kube::Error> {
        let key = (namespace.to_string(), name.to_string());
        let version = version(&self.secrets, namespace, name);
        let kept = self.secret_metas.lock().ok().and_then(|kept| kept.get(&key).cloned());
        if let Some((_, meta)) = kept.filter(|(v, _)| version.as_ref() == Some(v)) {
            return Ok(Some(meta));
        }
        let Some(secret) = Api::<Secret>::namespaced(client.clone(), namespace).get_opt(name).await? else {
            return Ok(None);
        };
        let meta = SecretMeta {
            type_: secret.type_.unwrap_or_else(|| "Opaque".into()),
            annotations: secret.metadata.annotations.unwrap_or_default(),
        };
        if let (Ok(mut kept), Some(version)) = (self.secret_metas.lock(), secret.metadata.resource_version) {
            kept.insert(key, (version, meta.clone()));
        }
        Ok(Some(meta))
    }

    pub fn config_map_version(&self, namespace: &str, name: &str) -> Option<String> {
        version(&self.config_maps, namespace, name)
    }

    /// What was kept of this ConfigMap context at `version` for the Dockerfile `dockerfile`, if any.
    pub fn context(&self, namespace: &str, name: &str, version: &str, dockerfile: &str) -> Option<ContextRead> {
        let kept = self.contexts.lock().ok()?;
        let (kept_version, read) = kept.get(&(namespace.to_string(), name.to_string()))?;
        (kept_version == version && read.dockerfile_key == dockerfile).then(|| read.clone())
    }

    pub fn keep_context(&self, namespace: &str, name: &str, version: String, read: ContextRead) {
        if let Ok(mut kept) = self.contexts.lock() {
            kept.insert((namespace.to_string(), name.to_string()), (version, read));
        }
    }

    /// The rollout target `key` names: as kept while its resourceVersion in the cache is unchanged,
    /// else read (one GET) and kept. `None` when there is no such workload.
    pub async fn workload(&self, client: &Client, key: &WorkloadKey) -> Result<Option<Workload>, kube::Error> {
        let (kind, namespace, name) = key;
        let version = match kind {
            WorkloadKind::Deployment => version(&self.deployments, namespace, name),
            WorkloadKind::StatefulSet => version(&self.statefulsets, namespace, name),
            WorkloadKind::DaemonSet => version(&self.daemonsets, namespace, name),
        };
        let kept = self.workloads.lock().ok().and_then(|kept| kept.get(key).cloned());
        if let Some(kept) = kept.filter(|w| version.is_some() && w.metadata().resource_version == version) {
            return Ok(Some(kept));
        }
        let client = client.clone();
        let read = match kind {
            WorkloadKind::Deployment => {
                Api::<Deployment>::namespaced(client, namespace).get_opt(name).await?.map(Workload::Deployment)
            }
            WorkloadKind::StatefulSet => {
                Api::<StatefulSet>::namespaced(client, namespace).get_opt(name).await?.map(Workload::StatefulSet)
            }
            WorkloadKind::DaemonSet => {
                Api::<DaemonSet>::namespaced(client, namespace).get_opt(name).await?.map(Workload::DaemonSet)
            }
        };
        if let Ok(mut kept) = self.workloads.lock() {
            match &read {
                Some(workload) => kept.insert(key.clone(), workload.clone()),
                None => kept.remove(key),
            };
        }
        Ok(read)
    }

    /// The Jobs cached, and those expected (see `expected_jobs`) that the cache does not hold yet.
    pub fn jobs(&self) -> Vec<Arc<Job>> {
        let mut jobs = self.jobs.state();
        let Ok(mut expected) = self.expected_jobs.lock() else { return jobs };
        expected.retain(|(namespace, name), (since, _)| {
            since.elapsed() < EXPECTATION && self.jobs.get(&ObjectRef::new(name).within(namespace)).is_none()
        });
        jobs.extend(expected.values().map(|(_, job)| job.clone()));
        jobs
    }

    /// Counts these Jobs, about to be created, as created.
    pub fn expect_jobs(&self, jobs: &[Job]) {
        if let Ok(mut expected) = self.expected_jobs.lock() {
            for job in jobs {
                expected.insert(namespaced_name(job), (Instant::now(), Arc::new(job.clone())));
            }
        }
    }

    /// Stops counting Jobs that were not created after all.
    pub fn unexpect_jobs(&self, jobs: &[Job]) {
        if let Ok(mut expected) = self.expected_jobs.lock() {
            for job in jobs {
                expected.remove(&namespaced_name(job));
            }
        }
    }

    /// Forgets the workloads no build targets any more.
    pub fn retain_workloads(&self, targeted: impl Fn(&WorkloadKey) -> bool) {
        if let Ok(mut kept) = self.workloads.lock() {
            kept.retain(|key, _| targeted(key));
        }
    }
}

fn namespaced_name(job: &Job) -> (String, String) {
    (job.metadata.namespace.clone().unwrap_or_default(), job.metadata.name.clone().unwrap_or_default())
}

fn version<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>, namespace: &str, name: &str) -> Option<String> {
    store.get(&ObjectRef::new(name).within(namespace)).and_then(|object| object.meta().resource_version.clone())
}

/// A store and the watch stream that keeps it up to date as it is polled.
fn reflected<K, S>(watch: S) -> (Store<K>, Trigger<K>)
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let (store, writer) = reflector::store();
    // Who wrote which field is read by no one here, and is often the larger part of an object.
    let watch = watch.modify(|object: &mut K| object.managed_fields_mut().clear());
    (store, reflector::reflector(writer, watch).default_backoff().touched_objects().boxed())
}

/// [`reflected`] for the metadata of every object of a kind.
fn metadata<K>(client: &Client) -> (Store<PartialObjectMeta<K>>, Trigger<PartialObjectMeta<K>>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    reflected(watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), watcher::Config::default()))
}
