//! Helpers shared by the end-to-end tests of the local environment.
// Each test binary uses a different subset of these.
#![allow(dead_code)]

pub mod blog;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use archway_testenv::cluster_setup::OPERATOR_NAMESPACE;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use serde_json::Value;

/// Waits until the apiserver serves MultiArchBuilds: discovery lags behind the CRD's Established
/// condition, and a request before then answers 404.
pub async fn wait_served(client: &kube::Client) -> Result<()> {
    let builds: Api<archway::api::MultiArchBuild> = Api::namespaced(client.clone(), "default");
    wait("the MultiArchBuild resource to be served", || async { Ok(builds.list(&Default::default()).await.ok()) })
        .await?;
    Ok(())
}

/// How long a test waits for one thing to happen.
pub const TIMEOUT: Duration = Duration::from_secs(120);

pub fn meta(name: &str) -> ObjectMeta {
    ObjectMeta { name: Some(name.into()), ..Default::default() }
}

pub fn pod(value: Value) -> Result<Pod> {
    Ok(serde_json::from_value(value)?)
}

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

pub async fn run_to_end(pods: &Api<Pod>, pod: Pod) -> Result<Pod> {
    let name = pod.metadata.name.clone().context("name")?;
    pods.create(&PostParams::default(), &pod).await?;
    wait(&format!("pod {name} to end"), || async {
        let pod = pods.get(&name).await?;
        Ok(matches!(phase(&pod), "Succeeded" | "Failed").then_some(pod))
    })
    .await
}

pub async fn wait_phase(pods: &Api<Pod>, name: &str, want: &str) -> Result<Pod> {
    wait(&format!("pod {name} {want}"), || async {
        let pod = pods.get(name).await?;
        Ok((phase(&pod) == want).then_some(pod))
    })
    .await
}

/// Waits until the pod's first container waits in `ImagePullBackOff`, as a kubelet leaves a pod whose
/// image it cannot pull; returns that container's message. The pod stays Pending meanwhile.
pub async fn wait_pull_backoff(pods: &Api<Pod>, name: &str) -> Result<String> {
    wait(&format!("pod {name} in ImagePullBackOff"), || async {
        let pod = pods.get(name).await?;
        let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
        let waiting = statuses.and_then(|s| s.first()).and_then(|c| c.state.as_ref()?.waiting.clone());
        let backoff = waiting.filter(|w| w.reason.as_deref() == Some("ImagePullBackOff"));
        if backoff.is_some() && phase(&pod) != "Pending" {
            bail!("pod {name} is {} while its image cannot be pulled", phase(&pod));
        }
        Ok(backoff.map(|w| w.message.unwrap_or_default()))
    })
    .await
}

pub fn terminated<'a>(pod: &'a Pod, container: &str) -> Result<&'a ContainerStateTerminated> {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).context("container statuses")?;
    let status = statuses.iter().find(|c| c.name == container).context("container status")?;
    status.state.as_ref().and_then(|s| s.terminated.as_ref()).with_context(|| format!("{status:?} not terminated"))
}

/// Waits until the apiserver answers again (after an outage a test made), whatever errors meanwhile.
pub async fn wait_answering(client: &kube::Client) -> Result<()> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    wait("the apiserver to answer", || async {
        Ok(namespaces.list(&ListParams::default().limit(1)).await.ok().map(|_| ()))
    })
    .await
}

/// Polls `probe` until it yields a value, for at most [`TIMEOUT`]; a probe error ends the wait.
pub async fn wait<T, F, Fut>(what: &str, probe: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    wait_up_to(what, TIMEOUT, probe).await
}

/// [`wait`], for at most `limit`.
pub async fn wait_up_to<T, F, Fut>(what: &str, limit: Duration, probe: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await.with_context(|| format!("waiting for {what}"))? {
            return Ok(value);
        }
        if start.elapsed() > limit {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What a client that no one here wrote (skopeo) reads of one image in the registry.
pub struct ImageContents {
    /// `os/architecture[/variant]` of the image config.
    pub platform: String,
    /// The manifest's digest as the registry computes it.
    pub digest: String,
    dir: tempfile::TempDir,
    layers: Vec<String>,
}

impl ImageContents {
    /// Copies `reference` (`host/repo:tag` or `host/repo@sha256:...`) out of the registry with skopeo.
    pub async fn fetch(registry: &archway_testenv::registry::Registry, reference: &str) -> Result<ImageContents> {
        let dir = tempfile::tempdir()?;
        let out = tokio::process::Command::new("skopeo")
            .arg("copy")
            .arg("--authfile")
            .arg(&registry.auth_file)
            .arg("--src-cert-dir")
            .arg(&registry.cert_dir)
            .arg(format!("docker://{reference}"))
            .arg(format!("dir:{}", dir.path().display()))
            .output()
            .await?;
        anyhow::ensure!(out.status.success(), "skopeo copy {reference}: {}", String::from_utf8_lossy(&out.stderr));
        let manifest_bytes = std::fs::read(dir.path().join("manifest.json"))?;
        let manifest: Value = serde_json::from_slice(&manifest_bytes)?;
        let blob = |digest: &str| dir.path().join(digest.trim_start_matches("sha256:"));
        let config_digest = manifest["config"]["digest"].as_str().context("manifest without config")?;
        let config: Value = serde_json::from_slice(&std::fs::read(blob(config_digest))?)?;
        let platform = [&config["os"], &config["architecture"], &config["variant"]]
            .iter()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join("/");
        let layers = manifest["layers"]
            .as_array()
            .context("manifest without layers")?
            .iter()
            .filter_map(|l| l["digest"].as_str().map(str::to_string))
            .collect();
        let digest = manifest_digest(registry, reference).await?;
        Ok(ImageContents { platform, digest, dir, layers })
    }

    /// A file of the image's top layer that has it, read with tar.
    pub async fn read_file(&self, path: &str) -> Result<String> {
        let member = path.trim_start_matches('/');
        for layer in self.layers.iter().rev() {
            let blob = self.dir.path().join(layer.trim_start_matches("sha256:"));
            let out = tokio::process::Command::new("tar").arg("-xOf").arg(&blob).arg(member).output().await?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
        }
        bail!("no layer holds {path}")
    }
}

/// The digest of the manifest `reference` names, by `skopeo inspect`.
pub async fn manifest_digest(registry: &archway_testenv::registry::Registry, reference: &str) -> Result<String> {
    let out = tokio::process::Command::new("skopeo")
        .arg("inspect")
        .arg("--authfile")
        .arg(&registry.auth_file)
        .arg("--cert-dir")
        .arg(&registry.cert_dir)
        .arg("--format")
        .arg("{{.Digest}}")
        .arg(format!("docker://{reference}"))
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "skopeo inspect {reference}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The digest of the manifest (or index) `reference` names, as the registry has its raw bytes.
pub async fn manifest_digest_raw(registry: &archway_testenv::registry::Registry, reference: &str) -> Result<String> {
    let raw = archway_testenv::baseimage::inspect_raw(registry, reference).await?;
    Ok(archway::registry::digest_of(raw.as_bytes()))
}

/// The leading operator's `/metrics` (the pod that holds the Lease), from its address and `metrics` port.
pub async fn scrape_operator(client: &kube::Client) -> Result<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let lease = leases.get_opt(archway::controller::LEASE_NAME).await?;
    let leader = lease.and_then(|l| l.spec?.holder_identity).context("no operator holds the Lease")?;
    let pod = Api::<Pod>::namespaced(client.clone(), OPERATOR_NAMESPACE).get(&leader).await?;
    let ip = pod.status.and_then(|s| s.pod_ip).context("the leading operator pod has no IP")?;
    let response =
        reqwest::Client::builder().no_proxy().build()?.get(format!("http://{ip}:8080/metrics")).send().await?;
    ensure!(response.status().is_success(), "GET /metrics: {}", response.status());
    Ok(response.text().await?)
}

/// How many reconciles the leading operator has run (its `archway_reconciles_total`).
pub async fn operator_reconciles(client: &kube::Client) -> Result<f64> {
    let metrics = scrape_operator(client).await?;
    let line = metrics.lines().find(|l| l.starts_with("archway_reconciles_total ")).context("no reconcile count")?;
    Ok(line.rsplit(' ').next().unwrap_or_default().parse()?)
}

/// The apiserver's audit log, which records the operator's ServiceAccount only.
fn audit_log(env: &archway_testenv::env::Env) -> Result<String> {
    let path = env.dir.join("logs/audit.log");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Where the audit log ends now: pass it to [`operator_requests_since`].
pub fn audit_mark(env: &archway_testenv::env::Env) -> Result<usize> {
    Ok(audit_log(env)?.lines().count())
}

/// The operator's requests since `mark`, as "verb resource/name", apart from the leader Lease and the
/// watches (and the lists that start them) that fill its caches.
pub fn operator_requests_since(env: &archway_testenv::env::Env, mark: usize) -> Result<Vec<String>> {
    let mut requests = Vec::new();
    for line in audit_log(env)?.lines().skip(mark).filter(|l| !l.trim().is_empty()) {
        let entry: Value = serde_json::from_str(line)?;
        let (verb, object) = (entry["verb"].as_str().unwrap_or_default(), &entry["objectRef"]);
        let resource = object["resource"].as_str().unwrap_or_default();
        if matches!(verb, "watch" | "list") || resource == "leases" {
            continue;
        }
        requests.push(format!("{verb} {resource}/{}", object["name"].as_str().unwrap_or_default()));
    }
    Ok(requests)
}

/// SIGKILL for the operator: the pod that holds the leader Lease deleted with no grace period (the
/// hostlet kills its process group at once). The other replica leads once the Lease runs out, and the
/// Deployment starts a new follower. Waits until another pod leads and runs.
pub async fn kill_operator(client: &kube::Client) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let holder = || async {
        let lease = leases.get_opt(archway::controller::LEASE_NAME).await?;
        Ok::<_, anyhow::Error>(lease.and_then(|l| l.spec?.holder_identity).filter(|h| !h.is_empty()))
    };
    let leader = wait("an operator to lead", || async { holder().await }).await?;
    pods.delete(&leader, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await?;
    wait("another operator pod to lead", || async {
        let Some(next) = holder().await?.filter(|h| *h != leader) else { return Ok(None) };
        let running = pods.get_opt(&next).await?.and_then(|p| p.status?.phase).as_deref() == Some("Running");
        Ok(running.then_some(()))
    })
    .await
}

/// A pause of the leading operator longer than its Lease (a stopped process, a frozen VM): SIGSTOP to
/// every process of the pod that holds the Lease, until another pod leads and has had `working` to
/// act, then SIGCONT. The paused one resumes in the middle of whatever it was doing.
pub async fn pause_operator(client: &kube::Client, working: Duration) -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let holder = || async {
        let lease = leases.get_opt(archway::controller::LEASE_NAME).await?;
        Ok::<_, anyhow::Error>(lease.and_then(|l| l.spec?.holder_identity).filter(|h| !h.is_empty()))
    };
    let leader = wait("an operator to lead", || async { holder().await }).await?;
    let processes = processes_of_pod(&leader)?;
    ensure!(!processes.is_empty(), "no process of the leading pod {leader}");
    for pid in &processes {
        kill(*pid, Signal::SIGSTOP)?;
    }
    let taken_over =
        wait("another operator pod to lead", || async { Ok(holder().await?.filter(|h| *h != leader).map(|_| ())) })
            .await;
    tokio::time::sleep(working).await;
    for pid in &processes {
        // Gone already is fine: nothing to resume.
        let _ = kill(*pid, Signal::SIGCONT);
    }
    taken_over
}

/// The host processes of a hostlet pod: those whose environment has the pod's name as `HOSTNAME`.
fn processes_of_pod(pod: &str) -> Result<Vec<nix::unistd::Pid>> {
    let wanted = format!("HOSTNAME={pod}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        // A process that ended meanwhile cannot be read: not ours to pause.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        if environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes()) {
            pids.push(nix::unistd::Pid::from_raw(pid));
        }
    }
    Ok(pids)
}

/// A git repository on this host, for builds whose source is `file://` it.
pub struct GitRepo {
    pub dir: std::path::PathBuf,
}

impl GitRepo {
    /// An empty repository on branch `main` at `dir` (whatever was there is removed).
    pub async fn init(dir: std::path::PathBuf) -> Result<GitRepo> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let repo = GitRepo { dir };
        repo.git(&["init", "-q", "-b", "main"]).await?;
        Ok(repo)
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// Writes `path` (relative to the repository) with `content`, making its directories.
    pub fn write(&self, path: &str, content: &str) -> Result<()> {
        let file = self.dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        Ok(std::fs::write(file, content)?)
    }

    /// Commits every change; returns the commit.
    pub async fn commit(&self, message: &str) -> Result<String> {
        self.git(&["add", "."]).await?;
        self.git(&["commit", "-qm", message]).await?;
        Ok(self.git(&["rev-parse", "HEAD"]).await?.trim().to_string())
    }

    pub async fn git(&self, args: &[&str]) -> Result<String> {
        let out = tokio::process::Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
            .args(args)
            .output()
            .await?;
        ensure!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// What a pod serves at `http://<pod IP>/<path>`, once it answers: pods of real images listen on their
/// own loopback pod IP (the hostlet's pods share the host's network namespace).
pub async fn served(pod: &Pod, path: &str) -> Result<String> {
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).context("pod IP")?;
    let ip: std::net::Ipv4Addr = ip.parse()?;
    ensure!(ip.is_loopback(), "pod IP {ip} is not on loopback");
    let url = format!("http://{ip}/{path}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    wait(&format!("{url} to answer"), || async {
        match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => Ok(Some(response.text().await?)),
            _ => Ok(None),
        }
    })
    .await
}
