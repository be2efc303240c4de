//! `spec.cache.image` end to end: a build whose last layer changed reuses the layers before it from
//! the registry cache. The Dockerfile's `RUN` appends a random line to `/stamp`; the next `COPY` takes
//! a file the test changes. Built once, then again after the file changed (new inputs, new Jobs,
//! each starting with empty builder storage), a cached build's `/stamp` is the same line: the `RUN`
//! did not run again. A build without cache of the same context gets another line.

mod common;

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use archway_testenv::env::Env;
use common::ImageContents;
use common::blog::{NS, apply_and_wait, is_ready, raw_index, start, wait_status};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const CONTEXT: &str = "cache-context";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_last_layer_reuses_the_cached_steps_before_it() -> Result<()> {
    let (env, client) = start("cache").await?;
    let base = env.base_image.clone().context("base image")?;
    let dockerfile = format!("FROM {base}\nRUN cat /proc/sys/kernel/random/uuid >> /stamp\nCOPY changing /changing\n");
    let context = ConfigMap {
        metadata: common::meta(CONTEXT),
        data: Some([("Dockerfile".to_string(), dockerfile), ("changing".into(), "1\n".into())].into()),
        ..Default::default()
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    config_maps.create(&PostParams::default(), &context).await?;

    // buildah for two platforms (arm64 on the Jetson), BuildKit for one: each with a cache of its own.
    let host = &env.registry.host;
    let buildah = cached_build(&env, "cached-buildah", "buildah", &["linux/amd64", "linux/arm64"]);
    let buildkit = cached_build(&env, "cached-buildkit", "buildkit", &["linux/amd64"]);
    let (first_buildah, first_buildkit) = futures::future::try_join(
        apply_and_wait(&client, &buildah, "Ready"),
        apply_and_wait(&client, &buildkit, "Ready"),
    )
    .await?;
    let before_buildah = stamps(&env, &first_buildah).await?;
    let before_buildkit = stamps(&env, &first_buildkit).await?;
    ensure!(before_buildah.len() == 2 && before_buildkit.len() == 1, "{before_buildah:?} {before_buildkit:?}");
    for (platform, slug) in [("linux/amd64", "linux-amd64"), ("linux/arm64", "linux-arm64")] {
        let tags = tags(&env, &format!("{host}/cache-test/cached-buildah-cache-{slug}")).await?;
        ensure!(!tags.is_empty(), "buildah pushed no cache for {platform}");
    }
    let tags = tags(&env, &format!("{host}/cache-test/cached-buildkit-cache-linux-amd64")).await?;
    ensure!(tags == ["buildkit"], "BuildKit's cache tags: {tags:?}");

    // The last layer changes: every platform builds again, from empty storage but for the cache.
    let changed = json!({"data": {"changing": "2\n"}});
    config_maps.patch(CONTEXT, &PatchParams::default(), &Patch::Merge(&changed)).await?;
    let uncached = json!({
        "apiVersion": "archway.dev/v1alpha1",
        "kind": "MultiArchBuild",
        "metadata": {"name": "uncached", "namespace": NS},
        "spec": {
            "source": {"configMap": {"name": CONTEXT}},
            "platforms": ["linux/amd64"],
            "builder": {"kind": "buildah"},
            "output": {"image": format!("{host}/cache-test/uncached"), "pushSecret": {"name": "registry-credentials"}},
        },
    });
    let republished = |first: &Value| {
        let first = first["image"].clone();
        move |s: &Value| is_ready(s) && s["image"] != first
    };
    let (second_buildah, second_buildkit, control) = futures::future::try_join3(
        wait_status(&client, "cached-buildah", republished(&first_buildah)),
        wait_status(&client, "cached-buildkit", republished(&first_buildkit)),
        apply_and_wait(&client, &uncached, "Ready"),
    )
    .await?;
    let after_buildah = stamps(&env, &second_buildah).await?;
    let after_buildkit = stamps(&env, &second_buildkit).await?;
    let control = stamps(&env, &control).await?;
    for (builder, before, after) in
        [("buildah", &before_buildah, &after_buildah), ("BuildKit", &before_buildkit, &after_buildkit)]
    {
        ensure!(after.len() == before.len(), "{builder}: {before:?}, then {after:?}");
        for (platform, (stamp, changing)) in after {
            ensure!(changing == "2\n", "{builder} {platform}: the last layer was not built again: {changing:?}");
            let (earlier, _) = before.get(platform).with_context(|| format!("{builder}: no {platform} before"))?;
            ensure!(stamp.lines().count() == 1, "{builder} {platform}: /stamp is {stamp:?}");
            ensure!(stamp == earlier, "{builder} {platform}: the RUN ran again: /stamp {earlier:?}, then {stamp:?}");
        }
    }
    let amd64 = |stamps: &BTreeMap<String, (String, String)>| stamps.get("linux/amd64").map(|(s, _)| s.clone());
    let stamp = amd64(&control).context("no linux/amd64 child without cache")?;
    ensure!(stamp.lines().count() == 1, "without cache: /stamp is {stamp:?}");
    ensure!(Some(&stamp) != amd64(&after_buildah).as_ref(), "without cache the RUN wrote {stamp:?} as well");
    ensure!(Some(&stamp) != amd64(&after_buildkit).as_ref(), "without cache the RUN wrote {stamp:?} as well");

    env.remove().await;
    Ok(())
}

fn cached_build(env: &Env, name: &str, builder: &str, platforms: &[&str]) -> Value {
    let host = &env.registry.host;
    json!({
        "apiVersion": "archway.dev/v1alpha1",
        "kind": "MultiArchBuild",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "source": {"configMap": {"name": CONTEXT}},
            "platforms": platforms,
            "builder": {"kind": builder},
            "output": {"image": format!("{host}/cache-test/{name}"), "pushSecret": {"name": "registry-credentials"}},
            "cache": {"image": format!("{host}/cache-test/{name}-cache")},
        },
    })
}

/// For each child of the index that `status.image` names: its platform's `/stamp` and `/changing`.
async fn stamps(env: &Env, status: &Value) -> Result<BTreeMap<String, (String, String)>> {
    let image = status["image"].as_str().context("status.image")?;
    let (repository, _) = image.split_once('@').context("status.image by digest")?;
    let index = raw_index(env, image).await?;
    let mut stamps = BTreeMap::new();
    for child in index["manifests"].as_array().context("manifests")? {
        let digest = child["digest"].as_str().context("digest")?;
        let contents = ImageContents::fetch(&env.registry, &format!("{repository}@{digest}")).await?;
        let files = (contents.read_file("/stamp").await?, contents.read_file("/changing").await?);
        stamps.insert(contents.platform.clone(), files);
    }
    Ok(stamps)
}

/// The tags of `repository`, by `skopeo list-tags`.
async fn tags(env: &Env, repository: &str) -> Result<Vec<String>> {
    let out = tokio::process::Command::new("skopeo")
        .arg("list-tags")
        .arg("--authfile")
        .arg(&env.registry.auth_file)
        .arg("--cert-dir")
        .arg(&env.registry.cert_dir)
        .arg(format!("docker://{repository}"))
        .output()
        .await?;
    ensure!(out.status.success(), "skopeo list-tags {repository}: {}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout)?;
    let tags = listed["Tags"].as_array().context("Tags")?;
    Ok(tags.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
}
