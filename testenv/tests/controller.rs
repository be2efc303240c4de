//! The operator end to end: a MultiArchBuild goes in, per-platform Jobs run on nodes of their
//! architecture (or under qemu), and one verified OCI index comes out, read back with skopeo. The
//! operator runs as deploy/ installs it: a pod (on a hostlet node) with its ServiceAccount and RBAC.

mod common;

use anyhow::{Context, Result, ensure};
use archway_testenv::env::Env;
use common::blog::{
    NS, api, apply_and_wait, blog_build, is_ready, jobs_of, notes, raw_index, ready_condition, start, wait_events,
    wait_status,
};
use common::{GitRepo, ImageContents, kill_operator, wait};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blog_builds_natively_then_emulated_and_failures_say_why() -> Result<()> {
    let (env, client) = start("controller").await?;

    // The seed's blog, all four platforms, every one native (arm/v6 on the armv7 Pi); the Pi's with
    // BuildKit, since the buildah image (its stand-in in the registry) has no 32-bit ARM child.
    let build = blog_build(&env, "blog", &["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"], "Dockerfile");
    let status = apply_and_wait(&client, &build, "Ready").await?;
    let image = status["image"].as_str().context("status.image")?.to_string();
    ensure!(image.starts_with(&format!("{}/asksven/blog@sha256:", env.registry.host)), "{image}");
    let platforms = status["platforms"].as_array().context("status.platforms")?;
    for (platform, nodes, builder) in [
        ("linux/amd64", &["x86-1", "qemu-1"][..], "buildah"),
        ("linux/arm64", &["jetson-1"], "buildah"),
        ("linux/arm/v7", &["pi-1"], "buildkit"),
        ("linux/arm/v6", &["pi-1"], "buildkit"),
    ] {
        let entry =
            platforms.iter().find(|p| p["platform"] == platform).with_context(|| format!("{platform} in status"))?;
        ensure!(entry["mode"] == "native" && entry["phase"] == "Succeeded", "{platform}: {entry}");
        ensure!(entry["builder"] == builder, "{platform}: {entry}");
        // Why a builder at all (auto assembles what runs nothing), and why not buildah where it is not.
        let why = entry["placementReason"].as_str().unwrap_or_default();
        ensure!(
            (builder == "buildah" && why == "RUN at line 3 needs a builder")
                || (why.starts_with(
                    "RUN at line 3 needs a builder; no image for linux/arm/v7 nodes in quay.io/buildah/stable:v1.40"
                ) && why.ends_with("built with BuildKit")),
            "{platform}: {entry}"
        );
        ensure!(
            nodes.iter().any(|n| entry["node"] == *n),
            "{platform} built on {}, expected one of {nodes:?}",
            entry["node"]
        );
    }
    let index = raw_index(&env, &format!("{}/asksven/blog:new", env.registry.host)).await?;
    ensure!(index["mediaType"] == "application/vnd.oci.image.index.v1+json", "{index}");
    let manifests = index["manifests"].as_array().context("manifests")?;
    ensure!(manifests.len() == 4, "{index}");
    ensure!(image.ends_with(
        &common::manifest_digest_raw(&env.registry, &format!("{}/asksven/blog:new", env.registry.host)).await?
    ));
    for (arch, variant, uname) in [
        ("amd64", None, "x86_64"),
        ("arm64", None, "aarch64"),
        ("arm", Some("v7"), "armv7l"),
        ("arm", Some("v6"), "armv"),
    ] {
        let child = manifests
            .iter()
            .find(|m| m["platform"]["architecture"] == arch && m["platform"]["variant"].as_str() == variant)
            .with_context(|| format!("no {arch} {variant:?} child in {index}"))?;
        let digest = child["digest"].as_str().context("digest")?;
        let contents =
            ImageContents::fetch(&env.registry, &format!("{}/asksven/blog@{digest}", env.registry.host)).await?;
        let printed = contents.read_file("/srv/arch").await?;
        ensure!(printed.trim().starts_with(uname), "{arch} {variant:?}: /srv/arch holds {printed:?}");
        ensure!(contents.read_file("/srv/index.html").await?.contains("blog"), "index.html missing");
    }
    // pi-1 runs one build at a time: arm/v7 and arm/v6, placed in one pass, ran one after the other.
    let pi = |platform: &str| platforms.iter().find(|p| p["platform"] == platform).cloned().unwrap_or_default();
    let (v7, v6) = (pi("linux/arm/v7"), pi("linux/arm/v6"));
    let time = |p: &serde_json::Value, field: &str| p[field].as_str().unwrap_or_default().to_string();
    ensure!(
        time(&v6, "startedAt") >= time(&v7, "completedAt") || time(&v7, "startedAt") >= time(&v6, "completedAt"),
        "arm/v7 and arm/v6 overlapped on pi-1: {v7} {v6}"
    );
    // distribution 2.8 cannot delete a tag (only a manifest, which the index names): buildah's
    // temporary tags stay, and one event says so with the registry's answer.
    let kept = |e: &[Event]| e.iter().any(|e| e.reason.as_deref() == Some("TemporaryTagsKept"));
    let events = notes(&wait_events(&client, NS, "blog", kept).await);
    let kept: Vec<&String> = events.iter().filter(|n| n.starts_with("TemporaryTagsKept")).collect();
    ensure!(kept.len() == 1, "{events:?}");
    ensure!(kept[0].contains("archway-linux-amd64-") && kept[0].contains("DIGEST_INVALID"), "{kept:?}");
    ensure!(!kept[0].contains("archway-linux-arm-v"), "BuildKit pushed the Pi's by digest: {kept:?}");

    // Two builds of arm/v7 at once: the second waits Queued for pi-1's one slot, then builds there.
    let builds = api(&client);
    for name in ["pi-first", "pi-second"] {
        let mut build = blog_build(&env, name, &["linux/arm/v7"], "Dockerfile");
        build["spec"]["output"]["tags"] = json!([name]);
        builds.patch(name, &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    }
    let queued = wait("one of two arm/v7 builds Queued", || async {
        for name in ["pi-first", "pi-second"] {
            let status = serde_json::to_value(builds.get(name).await?.status)?;
            if status["platforms"][0]["phase"] == "Queued" {
                return Ok(Some((name, status["platforms"][0]["message"].clone())));
            }
        }
        Ok(None)
    })
    .await?;
    ensure!(queued.1.as_str().is_some_and(|m| m.contains("(pi-1: 1 of 1)")), "{queued:?}");
    // The status that said Queued made one Queued event.
    let is_queued = |e: &[Event]| e.iter().any(|e| e.reason.as_deref() == Some("Queued"));
    let events = notes(&wait_events(&client, NS, queued.0, is_queued).await);
    let queued_events: Vec<&String> = events.iter().filter(|n| n.starts_with("Queued")).collect();
    ensure!(queued_events.len() == 1 && queued_events[0].contains("(pi-1: 1 of 1)"), "{events:?}");
    let (first, second) = if queued.0 == "pi-second" { ("pi-first", "pi-second") } else { ("pi-second", "pi-first") };
    let first = wait_status(&client, first, is_ready).await?;
    let second = wait_status(&client, second, is_ready).await?;
    let (first, second) = (&first["platforms"][0], &second["platforms"][0]);
    ensure!(first["node"] == "pi-1" && second["node"] == "pi-1", "{first} {second}");
    ensure!(time(second, "startedAt") >= time(first, "completedAt"), "they overlapped: {first} {second}");

    // buildah pinned, arm/v6 native: no node runs both, so it waits, saying so, with no Job.
    let mut pinned = blog_build(&env, "blog-pinned", &["linux/arm/v6"], "Dockerfile");
    pinned["spec"]["placement"] = json!("native");
    pinned["spec"]["builder"] = json!({"kind": "buildah"});
    api(&client).patch("blog-pinned", &PatchParams::apply("test"), &Patch::Apply(&pinned)).await?;
    let status = wait_status(&client, "blog-pinned", |s| s["platforms"][0]["phase"] == "Waiting").await?;
    let message = status["platforms"][0]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("no builder image runs where linux/arm/v6 can be built"), "{message}");
    ensure!(message.contains("quay.io/buildah/stable:v1.40 (linux/amd64, linux/arm64"), "{message}");
    ensure!(jobs_of(&client, "blog-pinned").await?.is_empty(), "a Job was created for a waiting platform");

    // With the Jetson cordoned, auto placement builds arm64 under qemu, still aarch64 inside.
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.patch("jetson-1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": true}}))).await?;
    let build = blog_build(&env, "blog-emulated", &["linux/arm64"], "Dockerfile");
    let status = apply_and_wait(&client, &build, "Ready").await?;
    let entry = &status["platforms"][0];
    ensure!(entry["mode"] == "emulated" && entry["node"] == "qemu-1", "{entry}");
    let digest = entry["digest"].as_str().context("digest")?;
    let contents = ImageContents::fetch(&env.registry, &format!("{}/asksven/blog@{digest}", env.registry.host)).await?;
    ensure!(contents.read_file("/srv/arch").await?.trim() == "aarch64");

    // Native placement with no native node waits, with no Job, until the node is back.
    let mut native = blog_build(&env, "blog-native", &["linux/arm64"], "Dockerfile");
    native["spec"]["placement"] = json!("native");
    let builds = api(&client);
    builds.patch("blog-native", &PatchParams::apply("test"), &Patch::Apply(&native)).await?;
    let status = wait_status(&client, "blog-native", |s| s["platforms"][0]["phase"] == "Waiting").await?;
    let message = status["platforms"][0]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("kubernetes.io/arch=arm64"), "{message}");
    ensure!(jobs_of(&client, "blog-native").await?.is_empty(), "a Job was created for a waiting platform");
    nodes.patch("jetson-1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": false}}))).await?;
    let status = wait_status(&client, "blog-native", is_ready).await?;
    ensure!(status["platforms"][0]["node"] == "jetson-1", "{status}");

    // `platforms: [auto]`: what the Ready, schedulable nodes run.
    let status = apply_and_wait(&client, &blog_build(&env, "blog-auto", &["auto"], "Dockerfile"), "Ready").await?;
    let mut built: Vec<&str> =
        status["platforms"].as_array().context("platforms")?.iter().filter_map(|p| p["platform"].as_str()).collect();
    built.sort();
    ensure!(built == ["linux/amd64", "linux/arm/v7", "linux/arm64"], "{built:?}");

    // A git source: the clone init container fetches the revision, the build uses its context dir.
    let repo = git_repo(&env, &base_dockerfile(&env)?).await?;
    let mut from_git = blog_build(&env, "blog-git", &["linux/arm/v7"], "Dockerfile");
    // With credentials mounted (unused by a file:// URL, but the clone script must cope with them).
    let credentials = Secret {
        metadata: ObjectMeta { name: Some("git-credentials".into()), ..Default::default() },
        type_: Some("kubernetes.io/basic-auth".into()),
        string_data: Some(
            [("username".to_string(), "blog".to_string()), ("password".to_string(), "s3cret".to_string())].into(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), NS).create(&PostParams::default(), &credentials).await?;
    from_git["spec"]["source"] = json!({"git": {
        "url": repo.url(), "revision": "v1", "contextDir": "site",
        "secretRef": {"name": "git-credentials"},
    }});
    let status = apply_and_wait(&client, &from_git, "Ready").await?;
    let digest = status["platforms"][0]["digest"].as_str().context("digest")?;
    let contents = ImageContents::fetch(&env.registry, &format!("{}/asksven/blog@{digest}", env.registry.host)).await?;
    ensure!(contents.read_file("/srv/index.html").await?.contains("from git v1"), "not the v1 revision");

    // A failing RUN step: the builder's exit code and log tail in status, nothing published.
    let failing = blog_build(&env, "blog-fails", &["linux/amd64"], "Dockerfile.fails");
    let mut failing = failing;
    failing["spec"]["builder"] = json!({"retries": 0});
    let status = apply_and_wait(&client, &failing, "Failed").await?;
    let message = status["platforms"][0]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("exit code") && message.contains("false"), "{message}");
    ensure!(status.get("image").is_none(), "{status}");

    env.remove().await;
    Ok(())
}

/// Recovery and change: a base without the platform, a spec changed mid-build, an operator killed mid-build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_crashes_leave_one_job_per_platform_and_one_index() -> Result<()> {
    let (env, client) = start("controller-recovery").await?;

    // The base image has no linux/386 child: that platform fails, naming itself.
    let status = apply_and_wait(&client, &blog_build(&env, "blog-386", &["linux/386"], "Dockerfile"), "Failed").await?;
    let message = status["platforms"][0]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("386"), "{message}");

    // What only a change can fix is said in status, with no Job created: a missing push secret.
    let mut no_secret = blog_build(&env, "blog-no-secret", &["linux/amd64"], "Dockerfile");
    no_secret["spec"]["output"]["pushSecret"]["name"] = json!("missing");
    let status = apply_and_wait(&client, &no_secret, "Failed").await?;
    let ready = ready_condition(&status)?;
    ensure!(
        ready["reason"] == "InvalidSpec"
            && ready["message"].as_str().unwrap_or_default().contains("spec.output.pushSecret"),
        "{ready}"
    );
    ensure!(jobs_of(&client, "blog-no-secret").await?.is_empty(), "blog-no-secret: a Job was created");
    // The Secret created: the build wakes and is built (within the wait's 120 s, well before the 300 s
    // re-check of a permanent failure, so the Secret's watch woke it).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let mut secret = secrets.get("registry-credentials").await?;
    secret.metadata = ObjectMeta { name: Some("missing".into()), ..Default::default() };
    secrets.create(&PostParams::default(), &secret).await?;
    wait_status(&client, "blog-no-secret", is_ready).await?;

    // A spec changed while its Jobs run: the old Jobs go, only the new inputs are published.
    let slow = blog_build(&env, "blog-change", &["linux/amd64", "linux/arm64"], "Dockerfile.slow");
    api(&client).patch("blog-change", &PatchParams::apply("test"), &Patch::Apply(&slow)).await?;
    let old_jobs = wait("the slow Jobs", || async {
        let jobs = jobs_of(&client, "blog-change").await?;
        Ok((jobs.len() == 2).then_some(jobs))
    })
    .await?;
    let status = apply_and_wait(
        &client,
        &blog_build(&env, "blog-change", &["linux/amd64", "linux/arm64"], "Dockerfile"),
        "Ready",
    )
    .await?;
    let jobs = jobs_of(&client, "blog-change").await?;
    let names = |jobs: &[Job]| jobs.iter().filter_map(|j| j.metadata.name.clone()).collect::<Vec<_>>();
    ensure!(
        jobs.len() == 2 && names(&jobs).iter().all(|n| !names(&old_jobs).contains(n)),
        "{:?} after {:?}",
        names(&jobs),
        names(&old_jobs)
    );
    for entry in status["platforms"].as_array().context("platforms")? {
        let digest = entry["digest"].as_str().context("digest")?;
        let contents =
            ImageContents::fetch(&env.registry, &format!("{}/asksven/blog@{digest}", env.registry.host)).await?;
        ensure!(contents.read_file("/srv/slow").await.is_err(), "{}: built from the old Dockerfile", entry["platform"]);
    }

    // The operator killed (SIGKILL) while Jobs run, then started again: one Job per platform, one index.
    let slow = blog_build(&env, "blog-kill", &["linux/amd64", "linux/arm/v7"], "Dockerfile.slow");
    api(&client).patch("blog-kill", &PatchParams::apply("test"), &Patch::Apply(&slow)).await?;
    wait("the Jobs to start", || async { Ok((jobs_of(&client, "blog-kill").await?.len() == 2).then_some(())) }).await?;
    kill_operator(&client).await?;
    let status = wait_status(&client, "blog-kill", is_ready).await?;
    ensure!(jobs_of(&client, "blog-kill").await?.len() == 2, "more than one Job per platform");
    let image = status["image"].as_str().context("image")?;
    let index = raw_index(&env, image).await?;
    ensure!(index["manifests"].as_array().map(Vec::len) == Some(2), "{index}");
    ensure!(image.ends_with(
        &common::manifest_digest_raw(&env.registry, &format!("{}/asksven/blog:new", env.registry.host)).await?
    ));

    env.remove().await;
    Ok(())
}

fn base_dockerfile(env: &Env) -> Result<String> {
    let base = env.base_image.clone().context("base image")?;
    Ok(format!("FROM {base}\nCOPY index.html /srv/\nRUN uname -m > /srv/arch\n"))
}

/// A git repository on this host whose tag v1 holds the context in `site/`; `main` has moved on since.
/// `spec.publish.policy: AvailablePlatforms`: a platform that waits longer than `waitFor` is left out of
/// the index (which says so in `Degraded`), and the full index follows once it is built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn available_platforms_are_published_then_the_full_index() -> Result<()> {
    let (env, client) = start("controller-partial").await?;
    // arm/v6 natively with buildah pinned: no node can (the Pi cannot run buildah's image).
    let mut build = blog_build(&env, "partial", &["linux/amd64", "linux/arm/v6"], "Dockerfile");
    build["spec"]["placement"] = json!("native");
    build["spec"]["builder"] = json!({"kind": "buildah"});
    build["spec"]["publish"] = json!({"policy": "AvailablePlatforms", "waitFor": "3s"});
    let degraded = |s: &serde_json::Value| {
        s["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Degraded").cloned()
    };
    let status = apply_and_wait(&client, &build, "Ready").await?;
    let condition = degraded(&status).context("no Degraded condition")?;
    ensure!(condition["status"] == "True" && condition["reason"] == "PartiallyPublished", "{condition}");
    let message = condition["message"].as_str().unwrap_or_default();
    ensure!(message.starts_with("published without linux/arm/v6 (no builder image runs"), "{message}");
    let image = status["image"].as_str().context("status.image")?.to_string();
    let children = |index: &serde_json::Value| -> Vec<String> {
        let platform = |m: &serde_json::Value| {
            let p = &m["platform"];
            [&p["os"], &p["architecture"], &p["variant"]]
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join("/")
        };
        index["manifests"].as_array().into_iter().flatten().map(platform).collect()
    };
    ensure!(children(&raw_index(&env, &image).await?) == ["linux/amd64"], "{image}");
    let amd64 = |s: &serde_json::Value| s["platforms"][0]["digest"].clone();

    // Placement is no build input: with `auto`, arm/v6 is built under qemu and amd64 stays as it is.
    let auto = json!({"spec": {"placement": "auto"}});
    api(&client).patch("partial", &PatchParams::default(), &Patch::Merge(&auto)).await?;
    let full = wait_status(&client, "partial", |s| s["phase"] == "Ready" && s["image"] != image.as_str()).await?;
    ensure!(degraded(&full).is_none(), "{full}");
    ensure!(amd64(&full) == amd64(&status), "amd64 built again: {full}");
    let image = full["image"].as_str().context("status.image")?;
    ensure!(children(&raw_index(&env, image).await?) == ["linux/amd64", "linux/arm/v6"], "{image}");
    env.remove().await;
    Ok(())
}

async fn git_repo(env: &Env, dockerfile: &str) -> Result<GitRepo> {
    let repo = GitRepo::init(env.dir.join("git/blog")).await?;
    repo.write("site/Dockerfile", dockerfile)?;
    repo.write("site/index.html", "<h1>from git v1</h1>\n")?;
    repo.commit("v1").await?;
    repo.git(&["tag", "v1"]).await?;
    repo.write("site/index.html", "<h1>from git, later</h1>\n")?;
    repo.commit("later").await?;
    Ok(repo)
}
