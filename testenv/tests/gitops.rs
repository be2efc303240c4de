//! archway as GitOps tools and cluster admins meet it: installed, upgraded and uninstalled with Helm 4
//! (`charts/archway`), and its status read by the real kstatus library (Flux, kpt, `helm --wait`) and by
//! Argo CD's Lua health check (`deploy/argocd`) on live objects in each phase.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail, ensure};
use archway_testenv::cluster_setup::{OPERATOR_NAMESPACE, REGISTRY_SECRET, create_push_secret, wait_running};
use archway_testenv::env::{Env, EnvOptions};
use archway_testenv::gobuild::GITOPS_TOOLS;
use archway_testenv::{operator_image, toolimages};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

mod common;
use common::blog::{NS, api, apply_and_wait, blog_build, create_context, is_ready, wait_status};
use common::{served, wait};

const CHART: &str = "charts/archway";
const ARGO_HEALTH: &str = "deploy/argocd/archway.dev/MultiArchBuild";

fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A program of the GitOps tools (or kubectl), run to its end: stdout, or an error with stderr.
struct Tool {
    program: PathBuf,
    kubeconfig: PathBuf,
}

impl Tool {
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.kubeconfig.with_file_name("helm-cache"))
            .env("HELM_CONFIG_HOME", self.kubeconfig.with_file_name("helm-config"))
            .env("HELM_DATA_HOME", self.kubeconfig.with_file_name("helm-data"))
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("running {}", self.program.display()))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await?;
        }
        let out = child.wait_with_output().await?;
        let name = self.program.file_name().unwrap_or_default().to_string_lossy();
        if !out.status.success() {
            bail!("{name} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim_end());
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}

struct Tools {
    helm: Tool,
    kubectl: Tool,
    check: Tool,
}

async fn tools(env: &Env) -> Result<Tools> {
    let bin = GITOPS_TOOLS.bin_dir().await?;
    let tool = |program: PathBuf| Tool { program, kubeconfig: env.kubeconfig().to_path_buf() };
    Ok(Tools {
        helm: tool(bin.join("helm")),
        kubectl: tool(env.control_plane.bin_dir.join("kubectl")),
        check: tool(bin.join("gitops-check")),
    })
}

/// What kstatus and Argo CD's health check make of the live object: (kstatus, Argo health, message).
async fn read_as_gitops(tools: &Tools, name: &str) -> Result<(String, String, String)> {
    let object = tools.kubectl.run(&["get", "mab", name, "-n", NS, "-o", "json"], None).await?;
    let kstatus: Value = serde_json::from_str(&tools.check.run(&["kstatus"], Some(&object)).await?)?;
    let lua = repo_path(ARGO_HEALTH).join("health.lua");
    let argo: Value =
        serde_json::from_str(&tools.check.run(&["argo-health", &lua.to_string_lossy()], Some(&object)).await?)?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Ok((text(&kstatus["status"]), text(&argo["status"]), text(&argo["message"])))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_cd_health_check_passes_its_fixtures() -> Result<()> {
    // A stand-in kubeconfig: the checker reads files only.
    let bin = GITOPS_TOOLS.bin_dir().await?;
    let check = Tool { program: bin.join("gitops-check"), kubeconfig: PathBuf::from("/nonexistent") };
    // Without useOpenLibs, as an argocd-cm override runs by default.
    let out = check.run(&["argo-health-test", &repo_path(ARGO_HEALTH).to_string_lossy()], None).await?;
    ensure!(out.contains("6 passed, 0 failed"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kstatus_helm_wait_and_argo_cd_tell_busy_from_failed_from_ready() -> Result<()> {
    let (env, client) = common::blog::start("gitops-status").await?;
    let tools = tools(&env).await?;

    // Waiting for a node that never comes: in progress, not failed.
    let mut waiting = blog_build(&env, "waits", &["linux/riscv64"], "Dockerfile");
    waiting["spec"]["placement"] = json!("native");
    apply_and_wait(&client, &waiting, "Building").await?;
    let (kstatus, argo, message) = read_as_gitops(&tools, "waits").await?;
    ensure!((kstatus.as_str(), argo.as_str()) == ("InProgress", "Progressing"), "{kstatus} {argo}: {message}");
    ensure!(message.contains("linux/riscv64"), "{message}");

    // A spec that cannot be built: failed, with the field to fix.
    let mut invalid = blog_build(&env, "invalid", &["linux/amd64"], "Dockerfile");
    invalid["spec"]["source"] = json!({"configMap": {"name": "no-such-context"}});
    apply_and_wait(&client, &invalid, "Failed").await?;
    let (kstatus, argo, message) = read_as_gitops(&tools, "invalid").await?;
    ensure!((kstatus.as_str(), argo.as_str()) == ("Failed", "Degraded"), "{kstatus} {argo}: {message}");
    ensure!(message.contains("spec.source.configMap"), "{message}");

    // Built and published: current, healthy.
    let ready = blog_build(&env, "ready", &["linux/amd64"], "Dockerfile");
    apply_and_wait(&client, &ready, "Ready").await?;
    let (kstatus, argo, message) = read_as_gitops(&tools, "ready").await?;
    ensure!((kstatus.as_str(), argo.as_str()) == ("Current", "Healthy"), "{kstatus} {argo}: {message}");

    // helm --wait (Helm 4's kstatus watcher) returns once a chart's build is Ready ...
    let chart = build_chart(&env.dir)?;
    let image = format!("{}/asksven/blog", env.registry.host);
    let install = |release: &str, dockerfile: &str| {
        let set = format!("name={release},dockerfile={dockerfile},image={image}");
        let args = ["install", release, &chart.to_string_lossy(), "-n", NS, "--set", &set, "--wait", "--timeout", "4m"]
            .map(String::from);
        let helm = &tools.helm;
        async move { helm.run(&args.iter().map(String::as_str).collect::<Vec<_>>(), None).await }
    };
    install("helm-ok", "Dockerfile").await?;
    let status = api(&client).get_status("helm-ok").await?.status.context("status")?;
    ensure!(status.phase == Some(archway::api::BuildPhase::Ready), "helm --wait returned before Ready: {status:?}");

    // ... and fails for a build that fails, on its own failure, not on the timeout.
    let started = std::time::Instant::now();
    let failed = install("helm-fails", "Dockerfile.fails").await;
    let error = format!("{:#}", failed.err().context("helm install --wait of a failing build succeeded")?);
    ensure!(!error.contains("context deadline exceeded") && started.elapsed().as_secs() < 240, "{error}");
    let status = wait_status(&client, "helm-fails", |s| s["phase"] == "Failed").await?;
    ensure!(status["conditions"].to_string().contains("Stalled"), "{status}");

    env.remove().await;
    Ok(())
}

/// A chart that holds one MultiArchBuild of the blog, as a GitOps repository would.
fn build_chart(dir: &Path) -> Result<PathBuf> {
    let chart = dir.join("blog-chart");
    std::fs::create_dir_all(chart.join("templates"))?;
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: blog\nversion: 0.1.0\n")?;
    std::fs::write(
        chart.join("templates/build.yaml"),
        r#"apiVersion: archway.dev/v1alpha1
kind: MultiArchBuild
metadata:
  name: {{ .Values.name }}
spec:
  source: {configMap: {name: blog-context}}
  dockerfile: {{ .Values.dockerfile }}
  platforms: [linux/amd64]
  builder: {retries: 0}
  output:
    image: {{ .Values.image }}
    tags: [{{ .Values.name }}]
    pushSecret: {name: registry-credentials}
"#,
    )?;
    Ok(chart)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_upgrades_and_uninstalls_the_operator() -> Result<()> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testenv-helm");
    let env = Env::start(EnvOptions { operator: false, ..EnvOptions::new(&dir) }).await?;
    let client = env.client();
    let tools = tools(&env).await?;
    let chart = repo_path(CHART).to_string_lossy().to_string();

    tools.helm.run(&["lint", &chart, "--strict"], None).await?;
    // Everything the chart renders, CRD included, is accepted by the apiserver as it is.
    tools.kubectl.run(&["create", "namespace", OPERATOR_NAMESPACE], None).await?;
    let rendered =
        tools.helm.run(&["template", "archway", &chart, "-n", OPERATOR_NAMESPACE, "--include-crds"], None).await?;
    tools.kubectl.run(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered)).await?;
    // The chart grants exactly what deploy/base grants.
    ensure!(
        rules_of(&rendered, "ClusterRole")? == rules_of(&read(&repo_path("deploy/base/rbac.yaml"))?, "ClusterRole")?
    );
    ensure!(rules_of(&rendered, "Role")? == rules_of(&read(&repo_path("deploy/base/rbac.yaml"))?, "Role")?);

    // Installed from the chart with the operator's own image (the Dockerfile's, built for amd64 only
    // here), the operator builds the blog and rolls out examples/blog/deployment.yaml; only the chart's
    // CA value gives it the registry's CA, and the build's namespace has nothing but the push secret.
    let image = operator_image::build(&env.registry).await?;
    let (repository, tag) = image.rsplit_once(':').context("image tag")?;
    let ca = dir.join("registry-ca.crt");
    std::fs::write(&ca, &env.registry.ca_pem)?;
    let ca_value = format!("registryCA.pem={}", ca.display());
    let image_value = format!("image.repository={repository},image.tag={tag}");
    // The builder images are read from the environment's registry, as the nodes pull them.
    create_push_secret(&client, &env.registry, OPERATOR_NAMESPACE).await?;
    let mirrors = toolimages::mirror_flags(&env.registry.host);
    let mirrors_value = format!("builders.registryMirrors={}", json!(mirrors));
    let auth_value = format!("builders.registryAuthSecret={REGISTRY_SECRET}");
    let install = [
        "install",
        "archway",
        &chart,
        "-n",
        OPERATOR_NAMESPACE,
        "--set-file",
        &ca_value,
        "--set",
        &image_value,
        "--set-json",
        &mirrors_value,
        "--set",
        &auth_value,
        "--set",
        r"leaderElection.leaseDuration=6s,nodeSelector.kubernetes\.io/arch=amd64",
        "--wait",
        "--timeout",
        "3m",
    ];
    tools.helm.run(&install, None).await?;
    wait_running(&client).await?;
    let operator_pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    for pod in operator_pods.list(&Default::default()).await?.items {
        let status = pod.status.and_then(|s| s.container_statuses).unwrap_or_default();
        ensure!(
            status.iter().all(|c| c.image_id.starts_with(repository) && c.restart_count == 0),
            "the operator does not run from {image} without restarts: {status:?}"
        );
    }
    create_push_secret(&client, &env.registry, NS).await?;
    create_context(&client, &env, NS).await?;
    let deployment =
        read(&repo_path("examples/blog/deployment.yaml"))?.replace("registry.example.com", &env.registry.host);
    tools.kubectl.run(&["apply", "-n", NS, "-f", "-"], Some(&deployment)).await?;
    let mut build = blog_build(&env, "blog", &["linux/amd64", "linux/arm64", "linux/arm/v7"], "Dockerfile");
    build["spec"]["rollout"] = json!({"targets": [{"kind": "Deployment", "name": "blog"}]});
    let status = apply_and_wait(&client, &build, "Ready").await?;
    ensure!(is_ready(&status), "{status}");
    served_by_every_node(&client, &status).await?;

    // An upgrade with a changed value reaches the Deployment, and the published build stays as it was.
    let upgrade = [
        "upgrade",
        "archway",
        &chart,
        "-n",
        OPERATOR_NAMESPACE,
        "--reuse-values",
        "--set",
        "concurrency=3",
        "--wait",
        "--timeout",
        "3m",
    ];
    tools.helm.run(&upgrade, None).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let deployment = deployments.get("archway").await?;
    let args = deployment.spec.template.spec.map(|p| p.containers[0].args.clone().unwrap_or_default());
    ensure!(args.as_ref().is_some_and(|a| a.contains(&"--concurrency=3".to_string())), "{args:?}");
    wait_running(&client).await?;
    let patch = json!({"metadata": {"annotations": {"poke": "after-upgrade"}}});
    api(&client).patch("blog", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let after = wait_status(&client, "blog", is_ready).await?;
    ensure!(
        after["image"] == status["image"],
        "the upgrade changed the image: {} -> {}",
        status["image"],
        after["image"]
    );

    // Uninstalled: the operator and its rights go; the CRD and the builds stay (Helm keeps crds/).
    tools.helm.run(&["uninstall", "archway", "-n", OPERATOR_NAMESPACE, "--wait"], None).await?;
    ensure!(deployments.get_opt("archway").await?.is_none(), "the Deployment outlived the release");
    ensure!(Api::<ClusterRole>::all(client.clone()).get_opt("archway").await?.is_none(), "the ClusterRole stayed");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    ensure!(crds.get_opt("multiarchbuilds.archway.dev").await?.is_some(), "the CRD went with the release");
    ensure!(api(&client).get_opt("blog").await?.is_some(), "the build went with the release");

    env.remove().await;
    Ok(())
}

/// Each pod of the rolled-out blog Deployment runs the published index and serves `/arch` (the
/// build's `uname -m`) from its own node's child: natively on the ARM nodes' kind, x86_64 on both
/// amd64 nodes.
async fn served_by_every_node(client: &kube::Client, status: &Value) -> Result<()> {
    let image = status["image"].as_str().context("status.image")?.to_string();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let params = ListParams::default().labels("app=blog");
    let rolled = wait("the blog's four pods on the index digest, running", || async {
        let list = pods.list(&params).await?.items;
        let current: Vec<Pod> = list
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.spec.as_ref().is_some_and(|s| s.containers[0].image.as_deref().is_some_and(|i| i == image)))
            .filter(|p| common::phase(p) == "Running")
            .collect();
        Ok((current.len() == 4).then_some(current))
    })
    .await?;
    let mut seen = Vec::new();
    for pod in &rolled {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let arch = served(pod, "arch").await?;
        seen.push(format!("{node}={}", arch.trim()));
    }
    seen.sort();
    let want = ["jetson-1=aarch64", "pi-1=armv7l", "qemu-1=x86_64", "x86-1=x86_64"];
    ensure!(seen == want, "pods served {seen:?}, want {want:?}");
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The rules of the one object of `kind` (ClusterRole or Role) in a multi-document YAML stream.
fn rules_of(yaml: &str, kind: &str) -> Result<Vec<PolicyRule>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)?;
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    ensure!(found.len() == 1, "{} objects of kind {kind}", found.len());
    Ok(serde_json::from_value(found[0]["rules"].clone())?)
}
