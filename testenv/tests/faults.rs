//! Cluster life, done to a build the way a cluster does it: completed pods deleted (drain, the pod
//! garbage collector), finished Jobs deleted (their TTL), a node cordoned and uncordoned, a namespace
//! whose Pod Security refuses build pods, a namespace without the registry CA, a name longer than a
//! label value. Each case ends with the build converged, a reason a person can act on, no second Job
//! for the same platform and inputs, and the published index digest unchanged when nothing changed.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use archway::plan::inputs::build_label;
use archway_testenv::cluster_setup::create_push_secret;
use archway_testenv::env::Env;
use common::blog::{
    NS, api, apply_and_wait, blog_build, build_events, create_context, is_ready, jobs_of, notes, raw_index, start,
    wait_events, wait_status_in, wait_status_up_to,
};
use common::{
    GitRepo, ImageContents, kill_operator, manifest_digest_raw, operator_reconciles, pause_operator, wait,
    wait_answering,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_build_survives_drain_pod_gc_ttl_and_cordon() -> Result<()> {
    let (env, client) = start("faults-life").await?;
    let name = "blog-life";
    let status = apply_and_wait(&client, &blog_build(&env, name, &["auto"], "Dockerfile"), "Ready").await?;
    let image = status["image"].as_str().context("status.image")?.to_string();
    let platforms = platform_names(&status);
    ensure!(platforms == ["linux/amd64", "linux/arm/v7", "linux/arm64"], "{platforms:?}");
    let tag = format!("{}/asksven/blog:new", env.registry.host);
    let index = manifest_digest_raw(&env.registry, &tag).await?;
    ensure!(image.ends_with(&index), "{image} is not what {tag} names ({index})");
    let jobs = job_names(&jobs_of(&client, name).await?);
    ensure!(jobs.len() == 3, "{jobs:?}");
    let unchanged = Expect { name, image: &image, platforms: &platforms, tag: &tag, index: &index };

    // Drain and the pod garbage collector delete completed pods: the Jobs stay, nothing is rebuilt.
    let selector = ListParams::default().labels(&format!("archway.dev/build={name}"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.delete_collection(&DeleteParams::default(), &selector).await?;
    wait("the build pods to go", || async { Ok(pods.list(&selector).await?.items.is_empty().then_some(())) }).await?;
    poke_and_settle(&client).await?;
    unchanged.check(&client, &env).await?;
    ensure!(job_names(&jobs_of(&client, name).await?) == jobs, "the Jobs changed after their pods were deleted");

    // The Jobs' TTL runs out (or someone deletes them): still built, no Job comes back.
    let jobs_api: Api<Job> = Api::namespaced(client.clone(), NS);
    jobs_api.delete_collection(&DeleteParams::background(), &selector).await?;
    wait("the Jobs to go", || async { Ok(jobs_api.list(&selector).await?.items.is_empty().then_some(())) }).await?;
    poke_and_settle(&client).await?;
    unchanged.check(&client, &env).await?;
    ensure!(jobs_of(&client, name).await?.is_empty(), "a Job was created for a built platform");

    // The only arm64 node cordoned, then uncordoned: [auto] keeps arm64, the index stays the same.
    let nodes: Api<Node> = Api::all(client.clone());
    for unschedulable in [true, false] {
        let patch = json!({"spec": {"unschedulable": unschedulable}});
        nodes.patch("jetson-1", &PatchParams::default(), &Patch::Merge(patch)).await?;
        poke_and_settle(&client).await?;
        unchanged.check(&client, &env).await?;
    }
    ensure!(jobs_of(&client, name).await?.is_empty(), "cordon made a Job");

    // One event per transition: each platform was reported building once, built once.
    let events = build_events(&client, NS, name).await?;
    for reason in ["PlatformBuilding", "PlatformBuilt"] {
        let count = events.iter().filter(|e| e.reason.as_deref() == Some(reason)).count();
        ensure!(count == 3, "{count} {reason} events for 3 platforms: {:?}", notes(&events));
    }
    env.remove().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_end_with_a_reason_and_any_valid_name_builds() -> Result<()> {
    let (env, client) = start("faults-waits").await?;

    // A name longer than a label value (63): built and published all the same.
    let long = format!("blog-{}", "x".repeat(67));
    ensure!(long.len() == 72);
    let status = apply_and_wait(&client, &blog_build(&env, &long, &["linux/amd64"], "Dockerfile"), "Ready").await?;
    ensure!(status["image"].as_str().is_some(), "{status}");
    let jobs = jobs_of(&client, &long).await?;
    ensure!(jobs.len() == 1, "{} Jobs", jobs.len());
    let labels = jobs[0].metadata.labels.clone().unwrap_or_default();
    ensure!(labels.get("archway.dev/build") == Some(&build_label(&long)), "{labels:?}");

    // Pod Security `baseline` refuses the builder's capabilities: the Job never gets a pod. The build
    // fails about when its timeout runs out, and says why.
    let baseline = "psa-baseline";
    build_namespace(&client, &env, baseline, &[("pod-security.kubernetes.io/enforce", "baseline")]).await?;
    let mut refused = blog_build(&env, "blog-refused", &["linux/amd64"], "Dockerfile");
    refused["metadata"]["namespace"] = json!(baseline);
    refused["spec"]["builder"] = json!({"timeout": "30s"});
    let started = Instant::now();
    let status = apply_in(&client, baseline, &refused, "Failed").await?;
    let message = status["platforms"][0]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("spec.builder.timeout (30s)") && message.contains("PodSecurity"), "{message}");
    let took = started.elapsed();
    ensure!(took < Duration::from_secs(30 + 45), "failed after {took:?}, the timeout is 30s");
    // Events are recorded after the status they describe is written.
    let names_psa = |e: &Event| {
        e.reason.as_deref() == Some("PlatformFailed") && e.note.as_deref().is_some_and(|n| n.contains("PodSecurity"))
    };
    let events = wait_events(&client, baseline, "blog-refused", |events| events.iter().any(names_psa)).await;
    ensure!(events.iter().any(names_psa), "no PlatformFailed event naming Pod Security: {:?}", notes(&events));

    env.remove().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_branch_builds_one_commit_for_every_platform_and_polls_for_new_ones() -> Result<()> {
    let (env, client) = start("faults-git").await?;
    let repo = Repo::new(&env).await?;
    let first = repo.commit("commit one").await?;

    // arm64 waits for its only native node while amd64 builds; the branch moves in between.
    let nodes: Api<Node> = Api::all(client.clone());
    let cordon = |on: bool| json!({"spec": {"unschedulable": on}});
    nodes.patch("jetson-1", &PatchParams::default(), &Patch::Merge(cordon(true))).await?;
    let mut build = blog_build(&env, "blog-branch", &["linux/amd64", "linux/arm64"], "Dockerfile");
    build["spec"]["placement"] = json!("native");
    // A builder, so that arm64 waits: `auto` would assemble this Dockerfile on any node.
    build["spec"]["builder"] = json!({"kind": "buildah"});
    build["spec"]["source"] = json!({"git": {"url": repo.url(), "revision": "main"}});
    api(&client).patch("blog-branch", &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    let phase = |s: &Value, platform: &str| {
        let platforms = s["platforms"].as_array().cloned().unwrap_or_default();
        platforms.iter().find(|p| p["platform"] == platform).map(|p| p["phase"].clone()).unwrap_or_default()
    };
    let status = wait_status_in(&client, NS, "blog-branch", |s| {
        phase(s, "linux/amd64") == "Succeeded" && phase(s, "linux/arm64") == "Waiting"
    })
    .await?;
    ensure!(status["source"]["commit"] == first.as_str(), "{}", status["source"]);
    let second = repo.commit("commit two").await?;
    nodes.patch("jetson-1", &PatchParams::default(), &Patch::Merge(cordon(false))).await?;
    let status = wait_status_in(&client, NS, "blog-branch", is_ready).await?;
    ensure!(status["source"]["commit"] == first.as_str(), "the recorded commit moved: {}", status["source"]);
    let image = status["image"].as_str().context("image")?;
    let index = raw_index(&env, image).await?;
    ensure!(index["annotations"]["org.opencontainers.image.revision"] == first.as_str(), "{index}");
    for child in index["manifests"].as_array().context("manifests")? {
        let digest = child["digest"].as_str().context("digest")?;
        let contents =
            ImageContents::fetch(&env.registry, &format!("{}/asksven/blog@{digest}", env.registry.host)).await?;
        let page = contents.read_file("/srv/index.html").await?;
        ensure!(page.contains("commit one"), "{}: {page:?}, not the recorded commit", child["platform"]);
    }

    // With pollInterval, a moved branch is built, published and recorded without an edit.
    let mut polled = blog_build(&env, "blog-poll", &["linux/amd64"], "Dockerfile");
    polled["spec"]["source"] = json!({"git": {"url": repo.url(), "revision": "main", "pollInterval": "5s"}});
    let status = apply_and_wait(&client, &polled, "Ready").await?;
    ensure!(status["source"]["commit"] == second.as_str(), "{}", status["source"]);
    let third = repo.commit("commit three").await?;
    let status =
        wait_status_in(&client, NS, "blog-poll", |s| is_ready(s) && s["source"]["commit"] == third.as_str()).await?;
    let digest = status["platforms"][0]["digest"].as_str().context("digest")?;
    let contents = ImageContents::fetch(&env.registry, &format!("{}/asksven/blog@{digest}", env.registry.host)).await?;
    ensure!(contents.read_file("/srv/index.html").await?.contains("commit three"), "not rebuilt from the new commit");

    // A revision that names nothing fails the build, naming it.
    let mut unknown = blog_build(&env, "blog-no-branch", &["linux/amd64"], "Dockerfile");
    unknown["spec"]["source"] = json!({"git": {"url": repo.url(), "revision": "no-such-branch"}});
    let status = apply_and_wait(&client, &unknown, "Failed").await?;
    let message = status["source"]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("no-such-branch"), "{}", status["source"]);
    ensure!(
        jobs_of(&client, "blog-no-branch").await?.iter().all(|j| j
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.get("archway.dev/role").is_some())),
        "a build Job was created"
    );

    env.remove().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_again_and_again_publishes_one_index_and_patches_once() -> Result<()> {
    // SIGKILLed as soon as another leads, until it is done: after Job creation, mid build, around the
    // publish and the rollout, wherever it lands.
    once_despite("kill", "Dockerfile", |client| async move { kill_operator(&client).await }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_writes_nothing_twice() -> Result<()> {
    // SIGSTOPped past its Lease while another takes over and works for 2 s, then resumed in the middle
    // of whatever it was doing: its fence stops the writes that the new leader makes too. Each pause
    // lasts a Lease (6 s) and more: slow builds, so that several land within the build.
    once_despite(
        "pause",
        "Dockerfile.slow",
        |client| async move { pause_operator(&client, Duration::from_secs(2)).await },
    )
    .await
}

/// A four-platform build with a rollout, with the leading operator disrupted by `disrupt` again and
/// again until the build is Ready: one Job per platform, one index push, one patch of the workload.
async fn once_despite<F, Fut>(name: &str, dockerfile: &str, disrupt: F) -> Result<()>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let (env, client) = start(&format!("faults-{name}")).await?;
    let repo = format!("{}/asksven/blog", env.registry.host);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let build_name = format!("blog-{name}");
    deployments.patch("site", &PatchParams::apply("gitops"), &Patch::Apply(site(&repo, name, &build_name))).await?;
    let generation = |d: Deployment| d.metadata.generation.unwrap_or_default();
    let before = generation(deployments.get("site").await?);

    let platforms = ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"];
    let mut build = blog_build(&env, &build_name, &platforms, dockerfile);
    build["spec"]["output"]["tags"] = json!([name]);
    build["spec"]["rollout"] = json!({"targets": [{"kind": "Deployment", "name": "site"}]});
    api(&client).patch(&build_name, &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    let mut disruptions = 0;
    while disruptions < 12 && !is_ready(&serde_json::to_value(&api(&client).get(&build_name).await?.status)?) {
        disrupt(client.clone()).await?;
        disruptions += 1;
    }
    let status = wait_status_in(&client, NS, &build_name, is_ready).await?;
    ensure!(disruptions >= 3, "the build was done after {disruptions} disruptions: too few to prove anything");

    let jobs = jobs_of(&client, &build_name).await?;
    ensure!(jobs.len() == 4, "{} Jobs for 4 platforms: {:?}", jobs.len(), job_names(&jobs));
    let pushes = manifest_puts(&env, "asksven/blog", name)?;
    ensure!(pushes == 1, "the index was pushed to :{name} {pushes} times over {disruptions} disruptions");
    let image = status["image"].as_str().context("status.image")?;
    let index = manifest_digest_raw(&env.registry, &format!("{repo}:{name}")).await?;
    ensure!(image.ends_with(&index), "{image} is not what :{name} names");
    let site = deployments.get("site").await?;
    let web = site.spec.template.spec.as_ref().map(|p| p.containers[0].image.clone());
    ensure!(web == Some(Some(image.to_string())), "the Deployment runs {web:?}");
    ensure!(generation(site) == before + 1, "the Deployment was patched more than once over {disruptions} disruptions");
    env.remove().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_deleted_under_a_running_build_is_built_again_not_counted() -> Result<()> {
    let (env, client) = start("faults-node").await?;
    let name = "blog-node";
    let mut build = blog_build(&env, name, &["linux/arm64"], "Dockerfile.slow");
    build["spec"]["placement"] = json!("native");
    api(&client).patch(name, &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let selector = ListParams::default().labels(&format!("archway.dev/build={name}"));
    let running = wait("the arm64 build pod to run on jetson-1", || async {
        let found = pods.list(&selector).await?.items.into_iter().find(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("jetson-1")
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        });
        Ok(found)
    })
    .await?;
    // What a node's removal does: the Node object goes, and the pod garbage collector deletes its pods.
    Api::<Node>::all(client.clone()).delete("jetson-1", &DeleteParams::default()).await?;
    let pod_name = running.metadata.name.clone().context("pod name")?;
    pods.delete(&pod_name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await?;

    // The node comes back (its agent registers it again): the platform is built there, by a new pod of
    // the same Job; the killed pod counts for nothing.
    let status = wait_status_in(&client, NS, name, is_ready).await?;
    let platform = &status["platforms"][0];
    ensure!(platform["phase"] == "Succeeded" && platform["node"] == "jetson-1", "{platform}");
    let jobs = jobs_of(&client, name).await?;
    ensure!(jobs.len() == 1, "{} Jobs for one platform", jobs.len());
    let digest = platform["digest"].as_str().context("digest")?;
    let contents = ImageContents::fetch(&env.registry, &format!("{}/asksven/blog@{digest}", env.registry.host)).await?;
    ensure!(contents.read_file("/srv/slow").await.is_ok(), "not the slow build's image");
    env.remove().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_or_apiserver_outage_delays_a_build_and_changes_nothing_else() -> Result<()> {
    let (mut env, client) = start("faults-outage").await?;

    // The registry hangs (frozen, as in a partition) when the builds are done, while the operator
    // verifies and publishes; then it answers again.
    let mut build = blog_build(&env, "blog-registry", &["linux/amd64", "linux/arm64"], "Dockerfile");
    build["spec"]["output"]["tags"] = json!(["outage"]);
    api(&client).patch("blog-registry", &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    jobs_complete(&client, "blog-registry", 2).await?;
    env.pause("registry")?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    env.resume("registry")?;
    let status = wait_status_in(&client, NS, "blog-registry", is_ready).await?;
    // ... and down (stopped, as in a crash or an upgrade) while a second build publishes.
    let mut down = blog_build(&env, "blog-registry-down", &["linux/amd64", "linux/arm64"], "Dockerfile");
    down["spec"]["output"]["tags"] = json!(["down"]);
    api(&client).patch("blog-registry-down", &PatchParams::apply("test"), &Patch::Apply(&down)).await?;
    jobs_complete(&client, "blog-registry-down", 2).await?;
    env.restart("registry", Duration::from_secs(10)).await?;
    let restarted = wait_status_in(&client, NS, "blog-registry-down", is_ready).await?;
    let pushes = manifest_puts(&env, "asksven/blog", "down")?;
    ensure!(pushes == 1, "the index was pushed to :down {pushes} times: {restarted}");
    let pushes = manifest_puts(&env, "asksven/blog", "outage")?;
    ensure!(pushes == 1, "the index was pushed to :outage {pushes} times");
    let image = status["image"].as_str().context("status.image")?;
    let tag = format!("{}/asksven/blog:outage", env.registry.host);
    ensure!(image.ends_with(&manifest_digest_raw(&env.registry, &tag).await?), "{image} is not what {tag} names");

    // The apiserver hangs mid build: watches break, the hostlet cannot report; then it answers again.
    let slow = blog_build(&env, "blog-apiserver", &["linux/amd64"], "Dockerfile.slow");
    api(&client).patch("blog-apiserver", &PatchParams::apply("test"), &Patch::Apply(&slow)).await?;
    wait("the build Job", || async { Ok((!jobs_of(&client, "blog-apiserver").await?.is_empty()).then_some(())) })
        .await?;
    env.pause("kube-apiserver")?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    env.resume("kube-apiserver")?;
    wait_answering(&client).await?;
    let status = wait_status_in(&client, NS, "blog-apiserver", is_ready).await?;
    ensure!(jobs_of(&client, "blog-apiserver").await?.len() == 1, "more than one Job: {status}");

    // ... and restarts mid build (stopped for 10 s, as in an upgrade): every watch and the Lease's
    // renewals fail meanwhile. Ready within 40 s of the restart in most runs; in about one run of
    // three, the restarted apiserver's watch cache stops delivering events (writes and lists still
    // work), and the operator sees the pod's end only when its watches time out (kube's 290 s) and
    // relist: the wait here allows for one such round.
    let slow = blog_build(&env, "blog-apiserver-restart", &["linux/amd64"], "Dockerfile.slow");
    api(&client).patch("blog-apiserver-restart", &PatchParams::apply("test"), &Patch::Apply(&slow)).await?;
    wait("the build Job", || async {
        Ok((!jobs_of(&client, "blog-apiserver-restart").await?.is_empty()).then_some(()))
    })
    .await?;
    env.restart("kube-apiserver", Duration::from_secs(10)).await?;
    wait_answering(&client).await?;
    let started = std::time::Instant::now();
    let limit = Duration::from_secs(600);
    let status = wait_status_up_to(&client, NS, "blog-apiserver-restart", limit, is_ready).await?;
    eprintln!("blog-apiserver-restart: Ready {:.0?} after the apiserver answered again", started.elapsed());
    ensure!(jobs_of(&client, "blog-apiserver-restart").await?.len() == 1, "more than one Job: {status}");
    env.remove().await;
    Ok(())
}

/// Waits until `build` has `count` Jobs, all Complete.
async fn jobs_complete(client: &Client, build: &str, count: usize) -> Result<()> {
    wait("the build Jobs to complete", || async {
        let jobs = jobs_of(client, build).await?;
        let complete = |j: &Job| {
            let conditions = j.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
            conditions.iter().any(|c| c.type_ == "Complete" && c.status == "True")
        };
        Ok((jobs.len() == count && jobs.iter().all(complete)).then_some(()))
    })
    .await
}

/// A Deployment of one replica that runs `<repo>:<tag>` until archway's build `build` rolls it out.
fn site(repo: &str, tag: &str, build: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "site", "namespace": NS, "annotations": {"archway.dev/rollout-from": build}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "site"}},
            "template": {
                "metadata": {"labels": {"app": "site"}},
                "spec": {"containers": [{"name": "web", "image": format!("{repo}:{tag}"), "command": ["sleep", "86400"]}]},
            },
        },
    })
}

/// How often the registry answered a PUT of `repository`'s manifest `tag`, from its access log.
fn manifest_puts(env: &Env, repository: &str, tag: &str) -> Result<usize> {
    let log = std::fs::read_to_string(env.dir.join("logs/registry.log"))?;
    let request = format!("\"PUT /v2/{repository}/manifests/{tag} ");
    Ok(log.lines().filter(|line| line.contains(&request)).count())
}

/// A git repository on this host whose branch `main` holds the blog's context.
struct Repo(GitRepo);

impl Repo {
    async fn new(env: &Env) -> Result<Repo> {
        let repo = GitRepo::init(env.dir.join("git/branch")).await?;
        let base = env.base_image.clone().context("base image")?;
        repo.write("Dockerfile", &format!("FROM {base}\nCOPY index.html /srv/\n"))?;
        Ok(Repo(repo))
    }

    fn url(&self) -> String {
        self.0.url()
    }

    /// Commits an index.html that says `text`; returns the commit.
    async fn commit(&self, text: &str) -> Result<String> {
        self.0.write("index.html", &format!("<h1>{text}</h1>\n"))?;
        self.0.commit(text).await
    }
}

/// What must not move while the cluster changes around a published build.
struct Expect<'a> {
    name: &'a str,
    image: &'a str,
    platforms: &'a [String],
    tag: &'a str,
    index: &'a str,
}

impl Expect<'_> {
    async fn check(&self, client: &Client, env: &Env) -> Result<()> {
        let build = api(client).get(self.name).await?;
        let status = serde_json::to_value(&build.status)?;
        ensure!(is_ready(&status), "no longer Ready: {status}");
        ensure!(status["image"] == self.image, "status.image moved from {}: {status}", self.image);
        ensure!(platform_names(&status) == self.platforms, "platforms changed: {status}");
        let index = manifest_digest_raw(&env.registry, self.tag).await?;
        ensure!(index == self.index, "{} was pushed again: {} -> {index}", self.tag, self.index);
        Ok(())
    }
}

/// Changes what placement reads of every node (as a node agent would): each node starts or stops
/// offering emulation of s390x, which no build asks for. Then waits until the operator has reconciled
/// since: its reconcile count grows, and a moment more for a reconcile that was under way.
async fn poke_and_settle(client: &Client) -> Result<()> {
    const LABEL: &str = "emulate.archway.dev/s390x";
    let before = operator_reconciles(client).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    for node in nodes.list(&ListParams::default()).await? {
        let name = node.metadata.name.clone().unwrap_or_default();
        let offered = node.metadata.labels.as_ref().is_some_and(|l| l.contains_key(LABEL));
        let patch = json!({"metadata": {"labels": {LABEL: if offered { Value::Null } else { json!("true") }}}});
        nodes.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    }
    wait("the operator to reconcile", || async { Ok((operator_reconciles(client).await? > before).then_some(())) })
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(())
}

/// A namespace with `labels`, the registry's push secret and CA, and the blog's context.
async fn build_namespace(client: &Client, env: &Env, name: &str, labels: &[(&str, &str)]) -> Result<()> {
    let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?;
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await?;
    create_push_secret(client, &env.registry, name).await?;
    create_context(client, env, name).await
}

async fn apply_in(client: &Client, namespace: &str, build: &Value, phase: &str) -> Result<Value> {
    let name = build["metadata"]["name"].as_str().context("name")?;
    let builds: Api<archway::api::MultiArchBuild> = Api::namespaced(client.clone(), namespace);
    builds.patch(name, &PatchParams::apply("test"), &Patch::Apply(build)).await?;
    wait_status_in(client, namespace, name, |s| s["phase"] == phase).await
}

fn platform_names(status: &Value) -> Vec<String> {
    let platforms = status["platforms"].as_array().cloned().unwrap_or_default();
    platforms.iter().filter_map(|p| p["platform"].as_str().map(str::to_string)).collect()
}

fn job_names(jobs: &[Job]) -> Vec<String> {
    let mut names: Vec<String> = jobs.iter().filter_map(|j| j.metadata.name.clone()).collect();
    names.sort();
    names
}
