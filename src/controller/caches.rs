//! Watch caches that a reconcile reads instead of the apiserver: the nodes, archway's Jobs and their
//! pods (by archway's `managed-by` label), and the metadata of Secrets and ConfigMaps. A reconcile of
//! a build where nothing changed then makes no API request. A ConfigMap context's content is read
//! once per change of the ConfigMap (its resourceVersion), and its fingerprint kept.
//!
//! The caches are filled by watches of their own, so one may lag behind the event that woke a
//! reconcile by a moment: a build whose Jobs run is looked at again soon (see the controller).

use std::collections::HashMap;
use std::sync::Mutex;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};

use crate::plan::job::MANAGED_BY;

pub struct Caches {
    pub nodes: Store<Node>,
    pub jobs: Store<Job>,
    pub pods: Store<Pod>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    /// `(namespace, name)` of a ConfigMap context -> `(resourceVersion, fingerprint)`.
    fingerprints: Mutex<HashMap<(String, String), (String, String)>>,
}

impl Caches {
    /// Starts the watches that fill the caches, for the operator's lifetime; the node watch is the
    /// caller's, as it also wakes builds.
    pub fn start(client: &Client, nodes: Store<Node>) -> Caches {
        let managed = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
        let all = watcher::Config::default;
        Caches {
            nodes,
            jobs: reflect(watcher(Api::all(client.clone()), managed.clone())),
            pods: reflect(watcher(Api::all(client.clone()), managed)),
            // Metadata only: a Secret's data is read when it is used (to publish), never kept.
            secrets: reflect(watcher(Api::<PartialObjectMeta<Secret>>::all(client.clone()), all())),
            config_maps: reflect(watcher(Api::<PartialObjectMeta<ConfigMap>>::all(client.clone()), all())),
            fingerprints: Mutex::new(HashMap::new()),
        }
    }

    /// Whether every watch has listed once.
    pub fn is_ready(&self) -> bool {
        let listed = |ready: Option<Result<(), reflector::store::WriterDropped>>| matches!(ready, Some(Ok(())));
        listed(self.nodes.wait_until_ready().now_or_never())
            && listed(self.jobs.wait_until_ready().now_or_never())
            && listed(self.pods.wait_until_ready().now_or_never())
            && listed(self.secrets.wait_until_ready().now_or_never())
            && listed(self.config_maps.wait_until_ready().now_or_never())
    }

    pub fn secret_exists(&self, namespace: &str, name: &str) -> bool {
        self.secrets.get(&ObjectRef::new(name).within(namespace)).is_some()
    }

    pub fn config_map_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.config_maps.get(&ObjectRef::new(name).within(namespace)).and_then(|c| c.meta().resource_version.clone())
    }

    /// The fingerprint kept for this ConfigMap at `version`, if any.
    pub fn fingerprint(&self, namespace: &str, name: &str, version: &str) -> Option<String> {
        let kept = self.fingerprints.lock().ok()?;
        kept.get(&(namespace.to_string(), name.to_string())).filter(|(v, _)| v == version).map(|(_, f)| f.clone())
    }

    pub fn keep_fingerprint(&self, namespace: &str, name: &str, version: String, fingerprint: String) {
        if let Ok(mut kept) = self.fingerprints.lock() {
            kept.insert((namespace.to_string(), name.to_string()), (version, fingerprint));
        }
    }
}

/// A store kept up to date by a watch that runs for the operator's lifetime.
fn reflect<K, S>(watch: S) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watch).default_backoff().touched_objects();
    tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    store
}
