//! A base image that moves: the build records the digest of its base's index and each platform's child,
//! pins every build to them (buildah's `--build-context`), and with `triggers.baseImages.pollInterval`
//! follows the tag. A new index of the base whose arm64 child changed (pushed with host buildah, as a
//! base's publisher would) builds arm64 again, not amd64, and the new index keeps amd64's image and
//! carries an arm64 image built from the new base (its label shows through, read with skopeo). A git
//! source does the same from the Dockerfile its resolve Job reads at the commit.

mod common;

use std::path::Path;

use anyhow::{Context, Result, ensure};
use archway_testenv::registry::Registry;
use common::GitRepo;
use common::blog::{NS, api, jobs_of, notes, raw_index, start, wait_events, wait_status};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NAME: &str = "follows";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_base_image_builds_again_exactly_the_platforms_whose_image_changed() -> Result<()> {
    let (env, client) = start("base-images").await?;
    let registry = &env.registry;
    let base = env.base_image.clone().context("base image")?;
    let moving = format!("{}/library/moving:1", registry.host);
    skopeo(registry, &["copy", "--all", &format!("docker://{base}"), &format!("docker://{moving}")]).await?;
    let first_index = raw_index(&env, &moving).await?;
    let child = |index: &Value, arch: &str| -> Result<String> {
        let children = index["manifests"].as_array().context("an index")?;
        let found = children.iter().find(|m| m["platform"]["architecture"] == arch).context("a child")?;
        Ok(found["digest"].as_str().context("a digest")?.to_string())
    };
    let (amd64_base, arm64_base) = (child(&first_index, "amd64")?, child(&first_index, "arm64")?);

    let context = ConfigMap {
        metadata: ObjectMeta { name: Some("follows-context".into()), ..Default::default() },
        data: Some(
            [
                ("Dockerfile".to_string(), "ARG BASE\nFROM ${BASE}\nRUN uname -m > /arch\n".to_string()),
                ("index.html".to_string(), "hi\n".to_string()),
            ]
            .into(),
        ),
        ..Default::default()
    };
    kube::Api::<ConfigMap>::namespaced(client.clone(), NS).create(&PostParams::default(), &context).await?;
    let build = json!({
        "apiVersion": "archway.dev/v1alpha1",
        "kind": "MultiArchBuild",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "source": {"configMap": {"name": "follows-context"}},
            "platforms": ["linux/amd64", "linux/arm64"],
            "buildArgs": {"BASE": moving},
            "builder": {"kind": "buildah"},
            "output": {"image": format!("{}/asksven/follows", registry.host), "tags": ["new"],
                "pushSecret": {"name": "registry-credentials"}},
            "triggers": {"baseImages": {"pollInterval": "2s"}},
        },
    });
    api(&client).patch(NAME, &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    let ready = wait_status(&client, NAME, |s| s["phase"] == "Ready").await?;
    let recorded = &ready["baseImages"][0];
    ensure!(recorded["image"] == moving.as_str(), "{recorded}");
    let recorded_index = recorded["digest"].as_str().context("a recorded digest")?.to_string();
    ensure!(recorded_index == common::manifest_digest_raw(registry, &moving).await?, "{recorded}");
    let platform_base = |status: &Value, platform: &str| {
        let entries = status["platforms"].as_array().cloned().unwrap_or_default();
        let entry = entries.into_iter().find(|p| p["platform"] == platform).unwrap_or_default();
        entry["baseImages"][0]["digest"].as_str().unwrap_or_default().to_string()
    };
    ensure!(platform_base(&ready, "linux/amd64") == amd64_base, "{ready}");
    ensure!(platform_base(&ready, "linux/arm64") == arm64_base, "{ready}");
    // Each build was pinned: buildah was told to take the FROM from the child by digest.
    let jobs = jobs_of(&client, NAME).await?;
    let pinned = format!("${{BASE}}=docker-image://{}/library/moving@{arm64_base}", registry.host);
    let arm64_job =
        jobs.iter().find(|j| j.metadata.labels.as_ref().is_some_and(|l| l["archway.dev/platform"] == "linux-arm64"));
    let args = arm64_job.and_then(|j| j.spec.as_ref()?.template.spec.as_ref()?.containers[0].args.clone());
    ensure!(args.as_ref().is_some_and(|a| a.contains(&pinned)), "{args:?} lacks {pinned}");
    let old_image = ready["image"].as_str().context("published")?.to_string();
    let old_index = raw_index(&env, &old_image).await?;
    let old_jobs: Vec<String> = jobs.iter().filter_map(|j| j.metadata.name.clone()).collect();

    // The base's publisher moves the tag: a new arm64 image, the other children as they were.
    let moved_arm64 = publish_moved_arm64(registry, &moving, &first_index, &arm64_base).await?;
    let moved = wait_status(&client, NAME, |s| {
        s["phase"] == "Ready"
            && s["baseImages"][0]["digest"] != recorded_index.as_str()
            && s["image"] != old_image.as_str()
    })
    .await?;
    ensure!(platform_base(&moved, "linux/arm64") == moved_arm64, "{moved}");
    ensure!(platform_base(&moved, "linux/amd64") == amd64_base, "{moved}");
    let events = wait_events(&client, NS, NAME, |e| notes(e).iter().any(|n| n.starts_with("BaseImageChanged"))).await;
    let expected = format!(
        "BaseImageChanged: {moving} moved from {recorded_index} to {}; building again: linux/arm64; unchanged: linux/amd64",
        moved["baseImages"][0]["digest"].as_str().unwrap_or_default()
    );
    ensure!(notes(&events).contains(&expected), "{:?}", notes(&events));
    // amd64 was not built again: its Job and its image are the ones of before.
    let jobs: Vec<String> = jobs_of(&client, NAME).await?.into_iter().filter_map(|j| j.metadata.name).collect();
    let amd64_job = old_jobs.iter().find(|j| j.contains("linux-amd64")).context("amd64 job")?;
    ensure!(jobs.contains(amd64_job), "{jobs:?} vs {old_jobs:?}");
    let new_index = raw_index(&env, moved["image"].as_str().context("image")?).await?;
    ensure!(child(&new_index, "amd64")? == child(&old_index, "amd64")?, "{new_index} vs {old_index}");
    ensure!(child(&new_index, "arm64")? != child(&old_index, "arm64")?, "{new_index}");
    let arm64_image = format!("{}/asksven/follows@{}", registry.host, child(&new_index, "arm64")?);
    let config = skopeo(registry, &["inspect", "--config", &format!("docker://{arm64_image}")]).await?;
    let config: Value = serde_json::from_str(&config)?;
    ensure!(config["config"]["Labels"]["moved"] == "yes", "the arm64 image is not of the new base: {config}");
    Ok(())
}

/// A git source: its resolve Job reports the Dockerfile at the commit, the operator pins its base per
/// platform (status and buildah's words, as for a ConfigMap context), and a moved base builds again
/// only the platform whose image of it changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_sources_base_images_are_pinned_and_followed() -> Result<()> {
    const GIT: &str = "follows-git";
    let (env, client) = start("base-images-git").await?;
    let registry = &env.registry;
    let base = env.base_image.clone().context("base image")?;
    let moving = format!("{}/library/moving-git:1", registry.host);
    skopeo(registry, &["copy", "--all", &format!("docker://{base}"), &format!("docker://{moving}")]).await?;
    let first_index = raw_index(&env, &moving).await?;
    let (amd64_base, arm64_base) = (child(&first_index, "amd64")?, child(&first_index, "arm64")?);
    let repo = GitRepo::init(env.dir.join("git/follows")).await?;
    repo.write("site/Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN uname -m > /arch\n")?;
    let commit = repo.commit("first").await?;
    let build = json!({
        "apiVersion": "archway.dev/v1alpha1",
        "kind": "MultiArchBuild",
        "metadata": {"name": GIT, "namespace": NS},
        "spec": {
            "source": {"git": {"url": repo.url(), "revision": "main", "contextDir": "site"}},
            "platforms": ["linux/amd64", "linux/arm64"],
            "buildArgs": {"BASE": moving},
            "builder": {"kind": "buildah"},
            "output": {"image": format!("{}/asksven/follows-git", registry.host), "tags": ["new"],
                "pushSecret": {"name": "registry-credentials"}},
            "triggers": {"baseImages": {"pollInterval": "2s"}},
        },
    });
    api(&client).patch(GIT, &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    let ready = wait_status(&client, GIT, |s| s["phase"] == "Ready").await?;
    ensure!(ready["source"]["commit"] == commit.as_str(), "{ready}");
    let dockerfile = &ready["source"]["dockerfile"];
    ensure!(dockerfile["path"] == "site/Dockerfile" && dockerfile["gzip"].is_string(), "{ready}");
    let recorded = &ready["baseImages"][0];
    ensure!(recorded["image"] == moving.as_str(), "{ready}");
    let recorded_index = recorded["digest"].as_str().context("a recorded digest")?.to_string();
    ensure!(recorded_index == common::manifest_digest_raw(registry, &moving).await?, "{recorded}");
    ensure!(platform_base(&ready, "linux/amd64") == amd64_base, "{ready}");
    ensure!(platform_base(&ready, "linux/arm64") == arm64_base, "{ready}");
    let jobs = jobs_of(&client, GIT).await?;
    let pinned = format!("${{BASE}}=docker-image://{}/library/moving-git@{arm64_base}", registry.host);
    let arm64_job =
        jobs.iter().find(|j| j.metadata.labels.as_ref().is_some_and(|l| l["archway.dev/platform"] == "linux-arm64"));
    let args = arm64_job.and_then(|j| j.spec.as_ref()?.template.spec.as_ref()?.containers[0].args.clone());
    ensure!(args.as_ref().is_some_and(|a| a.contains(&pinned)), "{args:?} lacks {pinned}");
    let old_image = ready["image"].as_str().context("published")?.to_string();
    let amd64_job =
        jobs.iter().filter_map(|j| j.metadata.name.clone()).find(|j| j.contains("linux-amd64")).context("amd64 job")?;

    // The base moves: arm64 builds again at the same commit, amd64 does not.
    let moved_arm64 = publish_moved_arm64(registry, &moving, &first_index, &arm64_base).await?;
    let moved = wait_status(&client, GIT, |s| {
        s["phase"] == "Ready"
            && s["baseImages"][0]["digest"] != recorded_index.as_str()
            && s["image"] != old_image.as_str()
    })
    .await?;
    ensure!(moved["source"]["commit"] == commit.as_str(), "{moved}");
    ensure!(platform_base(&moved, "linux/arm64") == moved_arm64, "{moved}");
    ensure!(platform_base(&moved, "linux/amd64") == amd64_base, "{moved}");
    let jobs: Vec<String> = jobs_of(&client, GIT).await?.into_iter().filter_map(|j| j.metadata.name).collect();
    ensure!(jobs.contains(&amd64_job), "amd64 built again: {jobs:?}");
    let events = wait_events(&client, NS, GIT, |e| notes(e).iter().any(|n| n.starts_with("BaseImageChanged"))).await;
    ensure!(notes(&events).iter().any(|n| n.contains("building again: linux/arm64; unchanged: linux/amd64")));
    Ok(())
}

fn child(index: &Value, arch: &str) -> Result<String> {
    let children = index["manifests"].as_array().context("an index")?;
    let found = children.iter().find(|m| m["platform"]["architecture"] == arch).context("a child")?;
    Ok(found["digest"].as_str().context("a digest")?.to_string())
}

/// The digest of `platform`'s image of the build's first base, as its status shows it.
fn platform_base(status: &Value, platform: &str) -> String {
    let entries = status["platforms"].as_array().cloned().unwrap_or_default();
    let entry = entries.into_iter().find(|p| p["platform"] == platform).unwrap_or_default();
    entry["baseImages"][0]["digest"].as_str().unwrap_or_default().to_string()
}

/// Pushes under `moving`'s tag an index whose arm64 child is a new image (the old one with a label),
/// with host buildah; returns the new child's digest.
async fn publish_moved_arm64(registry: &Registry, moving: &str, index: &Value, arm64: &str) -> Result<String> {
    let scratch = tempfile::tempdir()?;
    let repository = moving.trim_end_matches(":1");
    let tls = ["--cert-dir", path(&registry.cert_dir)?, "--authfile", path(&registry.auth_file)?];
    let b = |args: &[&str]| buildah(scratch.path().to_path_buf(), args.iter().map(|a| a.to_string()).collect());
    b(&[&["from", "--name", "moved"], &tls[..], &[&format!("docker://{repository}@{arm64}")]].concat()).await?;
    b(&["config", "--label", "moved=yes", "moved"]).await?;
    let tagged = format!("{repository}:arm64-moved");
    b(&[&["commit"], &tls[..], &["moved", &format!("docker://{tagged}")]].concat()).await?;
    let moved = common::manifest_digest(registry, &tagged).await?;
    b(&["manifest", "create", "list"]).await?;
    for child in index["manifests"].as_array().context("an index")? {
        let digest = child["digest"].as_str().context("a digest")?;
        let digest = if digest == arm64 { moved.as_str() } else { digest };
        b(&[&["manifest", "add"], &tls[..], &["list", &format!("docker://{repository}@{digest}")]].concat()).await?;
    }
    b(&[&["manifest", "push"], &tls[..], &["list", &format!("docker://{moving}")]].concat()).await?;
    Ok(moved)
}

fn path(path: &Path) -> Result<&str> {
    path.to_str().context("a UTF-8 path")
}

async fn buildah(scratch: std::path::PathBuf, args: Vec<String>) -> Result<String> {
    let out = tokio::process::Command::new("buildah")
        .arg("--root")
        .arg(scratch.join("storage"))
        .arg("--runroot")
        .arg(scratch.join("run"))
        .args(["--storage-driver", "vfs"])
        .args(&args)
        .output()
        .await?;
    ensure!(out.status.success(), "buildah {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn skopeo(registry: &Registry, args: &[&str]) -> Result<String> {
    let (command, rest) = args.split_first().context("a command")?;
    let tls: Vec<&str> = match *command {
        "copy" => vec![
            "--authfile",
            path(&registry.auth_file)?,
            "--src-cert-dir",
            path(&registry.cert_dir)?,
            "--dest-cert-dir",
            path(&registry.cert_dir)?,
        ],
        _ => vec!["--authfile", path(&registry.auth_file)?, "--cert-dir", path(&registry.cert_dir)?],
    };
    let out = tokio::process::Command::new("skopeo").arg(command).args(tls).args(rest).output().await?;
    ensure!(out.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
