//! The `insecureRegistry` opt-in end to end: a registry on plain HTTP without auth (as home labs run
//! them) takes the per-platform images and the index; without the opt-in the build fails naming it.
//! That registry is distribution v3, which deletes tags: buildah's temporary tags are gone after the
//! publish, and every child of the index is still there.

mod common;

use anyhow::{Context, Result, ensure};
use archway_testenv::process::Processes;
use archway_testenv::registry::start_plain;
use common::blog::{api, blog_build, start, wait_status};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_registry_works_when_the_build_opts_in() -> Result<()> {
    let (env, client) = start("plain-registry").await?;
    let mut procs = Processes::new(&env.dir.join("plain"))?;
    let plain = start_plain(&mut procs, &env.dir).await?;

    let mut build = blog_build(&env, "blog-plain", &["linux/amd64", "linux/arm64"], "Dockerfile");
    // The push secret still holds the credentials for the base image's registry.
    build["spec"]["output"]["image"] = json!(format!("{plain}/asksven/blog"));
    build["spec"]["builder"] = json!({"retries": 0});
    api(&client).patch("blog-plain", &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    let failed = wait_status(&client, "blog-plain", |s| s["phase"] == "Failed").await?;
    let message = failed.to_string();
    ensure!(message.contains("insecureRegistry"), "the failure does not name the opt-in: {message}");

    build["spec"]["output"]["insecureRegistry"] = json!(true);
    api(&client).patch("blog-plain", &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    let status = wait_status(&client, "blog-plain", |s| s["phase"] == "Ready").await?;
    let image = status["image"].as_str().context("status.image")?;
    ensure!(image.starts_with(&format!("{plain}/asksven/blog@sha256:")), "{image}");
    let index = inspect_plain(&format!("{plain}/asksven/blog:new")).await?;
    let mut archs: Vec<&str> = index["manifests"]
        .as_array()
        .context("manifests")?
        .iter()
        .filter_map(|m| m["platform"]["architecture"].as_str())
        .collect();
    archs.sort();
    ensure!(archs == ["amd64", "arm64"], "{index}");

    let tags = skopeo_plain(&["list-tags"], &format!("{plain}/asksven/blog")).await?;
    ensure!(tags["Tags"] == json!(["new"]), "the temporary tags were not deleted: {tags}");
    for child in index["manifests"].as_array().context("manifests")? {
        let digest = child["digest"].as_str().context("digest")?;
        let manifest = inspect_plain(&format!("{plain}/asksven/blog@{digest}")).await?;
        ensure!(manifest["layers"].is_array(), "{digest}: {manifest}");
    }

    drop(procs);
    env.remove().await;
    Ok(())
}

async fn inspect_plain(reference: &str) -> Result<Value> {
    skopeo_plain(&["inspect", "--raw"], reference).await
}

async fn skopeo_plain(command: &[&str], reference: &str) -> Result<Value> {
    let out = tokio::process::Command::new("skopeo")
        .args(command)
        .args(["--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .await?;
    ensure!(out.status.success(), "skopeo {command:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}
