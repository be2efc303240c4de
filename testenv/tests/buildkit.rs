//! The BuildKit builder end to end: the blog built with `builder: {kind: buildkit}` for amd64 and
//! arm64 (under qemu), by the operator as deploy/ installs it. The hostlet runs the rootless BuildKit
//! image's script with the host's buildkitd, as root (see its config).

mod common;

use anyhow::{Context, Result, ensure};
use common::ImageContents;
use common::blog::{apply_and_wait, blog_build, jobs_of, raw_index, start};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blog_builds_with_buildkit_for_amd64_and_arm64() -> Result<()> {
    let (env, client) = start("buildkit").await?;

    let mut build = blog_build(&env, "blog-buildkit", &["linux/amd64", "linux/arm64"], "Dockerfile");
    // The default retries: BuildKit does not retry a push itself (buildah does), and two platforms pushing
    // the same layer to one repository at once can fail on docker-registry ("provided digest did not match
    // uploaded content"); the Job's retry is archway's answer to that, as in a real cluster.
    build["spec"]["builder"] = json!({"kind": "buildkit"});
    build["spec"]["output"]["platformTags"] = json!(true);
    let status = apply_and_wait(&client, &build, "Ready").await?;

    // Built by BuildKit's image, not buildah's.
    for job in jobs_of(&client, "blog-buildkit").await? {
        let pod = job.spec.and_then(|s| s.template.spec).context("job without pod spec")?;
        let image = pod.containers.first().and_then(|c| c.image.clone()).unwrap_or_default();
        ensure!(image.starts_with("moby/buildkit:"), "{image}");
    }
    let repo = format!("{}/asksven/blog", env.registry.host);
    let image = status["image"].as_str().context("status.image")?;
    ensure!(image.starts_with(&format!("{repo}@sha256:")), "{image}");
    let index = raw_index(&env, &format!("{repo}:new")).await?;
    ensure!(index["mediaType"] == "application/vnd.oci.image.index.v1+json", "{index}");
    let manifests = index["manifests"].as_array().context("manifests")?;
    ensure!(manifests.len() == 2, "{index}");
    for (arch, uname) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let child = manifests
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .with_context(|| format!("no {arch} child in {index}"))?;
        // A single image: attestations would have made the child an index.
        ensure!(child["mediaType"] == "application/vnd.oci.image.manifest.v1+json", "{child}");
        let digest = child["digest"].as_str().context("digest")?;
        let contents = ImageContents::fetch(&env.registry, &format!("{repo}@{digest}")).await?;
        ensure!(contents.platform == format!("linux/{arch}"), "{arch}: config says {}", contents.platform);
        let printed = contents.read_file("/srv/arch").await?;
        ensure!(printed.trim() == uname, "{arch}: /srv/arch holds {printed:?}");
        ensure!(contents.read_file("/srv/index.html").await?.contains("blog"), "index.html missing");
        // The per-platform tag names the same image as the child.
        let tagged = ImageContents::fetch(&env.registry, &format!("{repo}:new-{arch}")).await?;
        ensure!(tagged.digest == digest, "{repo}:new-{arch} is {}, the index names {digest}", tagged.digest);
    }

    env.remove().await;
    Ok(())
}
