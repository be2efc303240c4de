//! A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler, built from their Go modules by `hack/build-control-plane.sh` (or taken from
//! `$ARCHWAY_K8S_BIN`), all authenticating with the admin client cert of `<dir>/kubeconfig`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

use crate::certs::Pki;
use crate::gobuild;
use crate::process::{Processes, free_port};

/// The service range exists only as API objects: no connection ever goes to it.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";

/// What the rest needs: the controllers archway's builds use (Jobs and their pods, garbage
/// collection through owner references, workloads for rollouts) plus what makes ServiceAccounts and
/// their tokens work (the token controller, and the root-CA publisher that creates the
/// `kube-root-ca.crt` ConfigMap every projected token volume names), and the ClusterRole aggregation
/// without which the built-in `admin`, `edit` and `view` roles grant nothing. node-lifecycle stays
/// out: the hostlet keeps Leases fresh, but nothing here needs taint-based eviction.
const CONTROLLERS: &[&str] = &[
    "job-controller",
    "garbage-collector-controller",
    "pod-garbage-collector-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
];

#[derive(Clone, Debug)]
pub struct ControlPlane {
    /// Holds etcd, the kube-* binaries and kubectl.
    pub bin_dir: PathBuf,
    /// Admin kubeconfig (group system:masters).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub server: String,
    pub apiserver_port: u16,
}

/// Starts the four processes into `procs` and returns once the apiserver is ready, the
/// controller-manager has created the `default` ServiceAccount, and the scheduler is healthy.
pub async fn start(procs: &mut Processes, dir: &Path, pki: &Pki) -> Result<(ControlPlane, Client)> {
    let bin_dir = gobuild::CONTROL_PLANE.bin_dir().await?;
    let bin = |name: &str| Command::new(bin_dir.join(name));

    let etcd_port = free_port()?;
    let etcd_data = dir.join("etcd");
    // A fresh cluster on every start: stale nodes and pods of a crashed run would confuse tests.
    let _ = std::fs::remove_dir_all(&etcd_data);
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{}", free_port()?);
    let mut etcd = bin("etcd");
    etcd.arg("--name=default")
        .arg(format!("--data-dir={}", etcd_data.display()))
        .arg(format!("--listen-client-urls={etcd_url}"))
        .arg(format!("--advertise-client-urls={etcd_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=default={peer_url}"))
        .arg("--unsafe-no-fsync");
    procs.spawn("etcd", etcd)?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let health = format!("{etcd_url}/health");
    procs.wait_ready("etcd", || etcd_healthy(&http, &health), Duration::from_secs(30)).await?;

    let port = free_port()?;
    let server = format!("https://127.0.0.1:{port}");
    let mut apiserver = bin("kube-apiserver");
    apiserver
        .arg(format!("--etcd-servers={etcd_url}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!("--tls-cert-file={}", pki.apiserver_cert.display()))
        .arg(format!("--tls-private-key-file={}", pki.apiserver_key.display()))
        .arg(format!("--client-ca-file={}", pki.ca_cert.display()))
        .arg("--authorization-mode=RBAC")
        .arg(format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"))
        // No Endpoints for the `kubernetes` Service: nothing may reach the apiserver through the
        // service range; pods are given KUBERNETES_SERVICE_HOST=127.0.0.1 and the real port.
        .arg("--endpoint-reconciler-type=none")
        .arg("--allow-privileged=true")
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg(format!("--service-account-key-file={}", pki.sa_pub.display()))
        .arg(format!("--service-account-signing-key-file={}", pki.sa_key.display()))
        .arg(format!("--audit-policy-file={}", write_audit_policy(dir)?.display()))
        .arg(format!("--audit-log-path={}", dir.join("logs/audit.log").display()))
        .arg("--audit-log-format=json");
    procs.spawn("kube-apiserver", apiserver)?;

    let kubeconfig = dir.join("kubeconfig");
    write_kubeconfig(&kubeconfig, &server, pki)?;
    // Anonymous requests may read /readyz (RBAC's system:public-info-viewer); kube's client would log
    // an error for every early refusal.
    let https = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes())?])
        .build()?;
    let readyz = format!("{server}/readyz");
    procs.wait_ready("kube-apiserver", || get_ok(&https, &readyz), Duration::from_secs(60)).await?;
    let client = client_for(&kubeconfig).await?;

    let component_args = |cmd: &mut Command, name: &str, port: u16| {
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            // The component's own HTTPS port checks callers through the apiserver, as in a real
            // cluster (its /healthz is open either way).
            .arg(format!("--authentication-kubeconfig={}", kubeconfig.display()))
            .arg(format!("--authorization-kubeconfig={}", kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", dir.join(name).display()));
    };
    let mut kcm = bin("kube-controller-manager");
    component_args(&mut kcm, "kube-controller-manager", free_port()?);
    kcm.arg(format!("--controllers={}", CONTROLLERS.join(",")))
        .arg(format!("--root-ca-file={}", pki.ca_cert.display()))
        .arg(format!("--service-account-private-key-file={}", pki.sa_key.display()));
    procs.spawn("kube-controller-manager", kcm)?;

    let scheduler_port = free_port()?;
    let mut scheduler = bin("kube-scheduler");
    component_args(&mut scheduler, "kube-scheduler", scheduler_port);
    procs.spawn("kube-scheduler", scheduler)?;

    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    procs
        .wait_ready(
            "kube-controller-manager",
            || async {
                ensure!(accounts.get_opt("default").await?.is_some(), "no default ServiceAccount yet");
                Ok(())
            },
            Duration::from_secs(60),
        )
        .await?;
    // The scheduler serves a self-signed cert from its --cert-dir; only its health is asked here.
    let insecure = reqwest::Client::builder().no_proxy().danger_accept_invalid_certs(true).build()?;
    let healthz = format!("https://127.0.0.1:{scheduler_port}/healthz");
    procs.wait_ready("kube-scheduler", || get_ok(&insecure, &healthz), Duration::from_secs(30)).await?;

    let cp = ControlPlane { bin_dir, kubeconfig, server, apiserver_port: port };
    Ok((cp, client))
}

fn write_kubeconfig(path: &Path, server: &str, pki: &Pki) -> Result<()> {
    use base64::prelude::{BASE64_STANDARD, Engine};
    let b64 = |s: &str| BASE64_STANDARD.encode(s);
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "archway", "cluster": {
            "server": server,
            "certificate-authority-data": b64(&pki.ca_pem),
        }}],
        "users": [{"name": "admin", "user": {
            "client-certificate-data": b64(&pki.admin_cert_pem),
            "client-key-data": b64(&pki.admin_key_pem),
        }}],
        "contexts": [{"name": "archway", "context": {"cluster": "archway", "user": "admin"}}],
        "current-context": "archway",
    });
    std::fs::write(path, serde_saphyr::to_string(&config)?).with_context(|| format!("writing {}", path.display()))
}

/// A client for a kubeconfig file, the way a test or the operator would build one.
pub async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn etcd_healthy(http: &reqwest::Client, url: &str) -> Result<()> {
    let body = http.get(url).send().await?.text().await?;
    ensure!(body.contains(r#""health":"true""#), "etcd says {body}");
    Ok(())
}

/// GET `url` answers 200 with body `ok` (the apiserver's /readyz, a component's /healthz).
async fn get_ok(http: &reqwest::Client, url: &str) -> Result<()> {
    let body = http.get(url).send().await?.error_for_status()?.text().await?;
    ensure!(body.trim() == "ok", "{url} says {body}");
    Ok(())
}

/// The operator's ServiceAccount, whose requests the audit log records (for `make bench`).
pub const OPERATOR_USER: &str = "system:serviceaccount:archway-system:archway";

/// An audit policy that records the operator's requests only, so the log stays small; its status
/// writes with their bodies, so a benchmark can tell what each one changed.
fn write_audit_policy(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("audit-policy.yaml");
    let policy = format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
         - level: Request\n  users: [\"{OPERATOR_USER}\"]\n  verbs: [patch, update]\n\
         \x20 resources: [{{group: archway.dev, resources: [multiarchbuilds/status]}}]\n\
         - level: Metadata\n  users: [\"{OPERATOR_USER}\"]\n- level: None\n"
    );
    std::fs::write(&path, policy).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
