//! The operator in the local environment: the registry's credentials and CA as cluster objects, then
//! `kubectl apply -k deploy/dev` (archway's own installation, with the dev overlay), and a wait until
//! the archway pod runs. The hostlet runs that pod with our `archway` binary for archway's image, as
//! the `archway` ServiceAccount, so the operator talks to the apiserver exactly as it would in a cluster.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::controlplane::ControlPlane;
use crate::process::run;
use crate::registry::Registry;
use crate::toolimages;

/// Where deploy/ installs the operator.
pub const OPERATOR_NAMESPACE: &str = "archway-system";
/// The label selector of the operator's pod (deploy/base/deployment.yaml).
pub const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=archway";
/// A `kubernetes.io/dockerconfigjson` Secret with the registry's credentials (a push secret).
pub const REGISTRY_SECRET: &str = "registry-credentials";
/// A ConfigMap in the operator's namespace whose `ca.crt` is the registry's CA: deploy/dev mounts it
/// for `--registry-ca-file`, and the operator hands it to build pods (no other namespace needs it).
pub const REGISTRY_CA_CONFIG_MAP: &str = "registry-ca";
/// A ConfigMap in the operator's namespace whose `mirrors` is the `--registry-mirror` list (comma
/// separated) of the registry's stand-ins for quay.io and Docker Hub (see [`crate::toolimages`]).
pub const REGISTRY_MIRRORS_CONFIG_MAP: &str = "registry-mirrors";
/// Namespaces that get the push Secret: the operator's, and where examples build.
pub const REGISTRY_NAMESPACES: &[&str] = &["default", OPERATOR_NAMESPACE];

const FIELD_MANAGER: &str = "archway-testenv";
/// How long the operator's pod may take to run; a crash ends the wait sooner.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// A pod counts as running once it has stayed Ready, without a restart, this long: a binary that
/// rejects its flags is Running for a moment too.
const STEADY: Duration = Duration::from_secs(3);

/// The overlay `archway-testenv up` applies: deploy/dev of this repository.
pub fn dev_kustomization() -> PathBuf {
    let testenv = Path::new(env!("CARGO_MANIFEST_DIR"));
    testenv.parent().unwrap_or(testenv).join("deploy").join("dev")
}

/// Creates the registry objects, applies `kustomization`, and returns the operator's pod once it runs.
pub async fn install_operator(
    client: &Client,
    control_plane: &ControlPlane,
    registry: &Registry,
    kustomization: &Path,
) -> Result<Pod> {
    // The namespace first, so its Secret and ConfigMap exist before the pod that mounts them.
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": OPERATOR_NAMESPACE},
    }))?;
    apply(&Api::all(client.clone()), OPERATOR_NAMESPACE, &namespace).await?;
    for ns in REGISTRY_NAMESPACES {
        create_push_secret(client, registry, ns).await?;
    }
    let ca = ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some(REGISTRY_CA_CONFIG_MAP.into()), ..Default::default() },
        data: Some([("ca.crt".to_string(), registry.ca_pem.clone())].into()),
        ..Default::default()
    };
    apply(&Api::namespaced(client.clone(), OPERATOR_NAMESPACE), REGISTRY_CA_CONFIG_MAP, &ca).await?;
    let mirrors = toolimages::mirror_flags(&registry.host);
    let mirrors = ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some(REGISTRY_MIRRORS_CONFIG_MAP.into()), ..Default::default() },
        data: Some([("mirrors".to_string(), mirrors.join(","))].into()),
        ..Default::default()
    };
    apply(&Api::namespaced(client.clone(), OPERATOR_NAMESPACE), REGISTRY_MIRRORS_CONFIG_MAP, &mirrors).await?;
    kubectl_apply(control_plane, kustomization).await?;
    wait_running(client).await
}

/// The Secret `registry-credentials` in `ns`.
pub async fn create_push_secret(client: &Client, registry: &Registry, ns: &str) -> Result<()> {
    let auth = std::fs::read(&registry.auth_file)
        .with_context(|| format!("reading the registry's auth file {}", registry.auth_file.display()))?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(REGISTRY_SECRET.into()), ..Default::default() },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some([(".dockerconfigjson".to_string(), ByteString(auth))].into()),
        ..Default::default()
    };
    apply(&Api::namespaced(client.clone(), ns), REGISTRY_SECRET, &secret).await
}

/// Server-side apply of a typed object (apiVersion and kind filled in).
async fn apply<K>(api: &Api<K>, name: &str, object: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let mut value = serde_json::to_value(object)?;
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(value))
        .await
        .with_context(|| format!("applying {} {name}", K::kind(&())))?;
    Ok(())
}

/// `kubectl apply -k`, with the control plane's own kubectl and admin kubeconfig. Server-side, with
/// the field manager that created the namespace, so the two agree on who owns what.
async fn kubectl_apply(control_plane: &ControlPlane, kustomization: &Path) -> Result<()> {
    let mut cmd = tokio::process::Command::new(control_plane.bin_dir.join("kubectl"));
    cmd.arg("--kubeconfig")
        .arg(&control_plane.kubeconfig)
        .arg("apply")
        .arg("--server-side")
        .arg(format!("--field-manager={FIELD_MANAGER}"))
        .arg("-k")
        .arg(kustomization);
    let out = run(&mut cmd).await.with_context(|| format!("kubectl apply -k {}", kustomization.display()))?;
    tracing::info!("kubectl apply -k {}:\n{}", kustomization.display(), out.trim_end());
    Ok(())
}

/// Waits until the operator's pod is Ready and stays so for [`STEADY`]; fails at once, with the
/// container's last words, when it crashes.
pub async fn wait_running(client: &Client) -> Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let params = ListParams::default().labels(OPERATOR_SELECTOR);
    let start = Instant::now();
    let mut ready_since: Option<(String, Instant)> = None;
    loop {
        let list = pods.list(&params).await.context("listing the operator's pods")?;
        let pod = list.items.into_iter().find(|p| p.metadata.deletion_timestamp.is_none());
        if let Some(pod) = pod {
            if let Some(crash) = crashed(&pod) {
                bail!("the operator's pod {} does not run: {crash}", pod.metadata.name.unwrap_or_default());
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            match (&ready_since, is_ready(&pod)) {
                (Some((n, since)), true) if *n == name && since.elapsed() >= STEADY => return Ok(pod),
                (Some((n, _)), true) if *n == name => {}
                (_, true) => ready_since = Some((name, Instant::now())),
                (_, false) => ready_since = None,
            }
        }
        if start.elapsed() > START_TIMEOUT {
            bail!("the operator's pod did not run within {}s", START_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let restarted =
        status.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default().iter().any(|c| c.restart_count > 0);
    running && !restarted && conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Why the pod's container stopped, if it did: a restart, a wait in CrashLoopBackOff, or a failed pod.
fn crashed(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        return Some(status.message.clone().unwrap_or_else(|| "pod failed".into()));
    }
    for c in status.container_statuses.as_deref().unwrap_or_default() {
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        let now = c.state.as_ref().and_then(|s| s.terminated.as_ref());
        if let Some(t) = now.or(last).filter(|t| t.exit_code != 0) {
            let message = t.message.as_deref().unwrap_or_default().trim();
            return Some(format!("container {} exited with {}: {message}", c.name, t.exit_code));
        }
    }
    None
}
