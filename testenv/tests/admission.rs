//! The generated CRD against the real apiserver: it is accepted and established, the valid examples are
//! accepted, and every invalid example is rejected with a message that names its field.

mod common;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use archway::api::{CRD_PATH, MultiArchBuild};
use archway_testenv::env::{Env, EnvOptions};
use common::{wait, wait_served};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{Api, Client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_admits_valid_and_rejects_invalid_resources() -> Result<()> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testenv-admission");
    let env = Env::start(EnvOptions { nodes: false, base_image: false, ..EnvOptions::new(&dir) }).await?;
    let client = env.client();
    install_crd(&client).await?;
    // Sent as they are written, so the apiserver (not our serde types) judges them.
    let builds: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ApiResource::erase::<MultiArchBuild>(&()));

    let mut admitted = 0;
    for path in yaml_files("examples/blog")? {
        let build = read_build(&path)?;
        if build.types.as_ref().map(|t| t.kind.as_str()) != Some("MultiArchBuild") {
            continue; // the workload it rolls out to
        }
        admitted += 1;
        let name = build.metadata.name.clone().context("example without a name")?;
        builds.create(&PostParams::default(), &build).await.with_context(|| format!("{} rejected", path.display()))?;
        builds.delete(&name, &DeleteParams::default()).await?;
    }
    ensure!(admitted > 0, "no MultiArchBuild in examples/blog");

    let mut checked = 0;
    for path in yaml_files("examples/invalid")? {
        let text = std::fs::read_to_string(&path)?;
        let field = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect-field:"))
            .map(str::trim)
            .with_context(|| format!("{}: no `# expect-field:` line", path.display()))?;
        let build = read_build(&path)?;
        match builds.create(&PostParams::default(), &build).await {
            Ok(_) => bail!("{} was accepted; the apiserver must reject it naming {field}", path.display()),
            Err(kube::Error::Api(status)) => {
                ensure!(status.code == 422, "{}: expected 422 Invalid, got {status:?}", path.display());
                ensure!(
                    status.message.contains(field),
                    "{}: the rejection does not name {field}: {}",
                    path.display(),
                    status.message
                );
            }
            Err(other) => bail!("{}: {other}", path.display()),
        }
        checked += 1;
    }
    ensure!(checked >= 10, "only {checked} invalid examples found");
    env.remove().await;
    Ok(())
}

async fn install_crd(client: &Client) -> Result<()> {
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&std::fs::read_to_string(repo_path(CRD_PATH))?)?;
    let name = crd.metadata.name.clone().context("CRD without a name")?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.context("the apiserver rejected the generated CRD")?;
    wait("the CRD to be established", || async {
        let crd = crds.get(&name).await?;
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        Ok(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(()))
    })
    .await?;
    wait_served(client).await
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

fn yaml_files(dir: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(repo_path(dir))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    ensure!(!files.is_empty(), "no examples in {dir}");
    Ok(files)
}

fn read_build(path: &Path) -> Result<DynamicObject> {
    let text = std::fs::read_to_string(path)?;
    serde_saphyr::from_str(&text).with_context(|| format!("{} is not a Kubernetes object", path.display()))
}
