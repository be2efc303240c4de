//! Rollout end to end: the blog Deployment (and a DaemonSet and a StatefulSet) move to the published
//! index digest and run on every node kind, each node resolving its own child; an index that misses a
//! node platform is not rolled out unless the target restricts the workload to covered nodes (and drops
//! its per-arch toleration); an unchanged index rolls out nothing; another field manager's fields
//! survive archway's patch. The operator's metrics count the builds and rollouts.

mod common;

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use archway_testenv::env::Env;
use common::blog::{NS, api, blog_build, is_ready, raw_index, start, wait_events, wait_status};
use common::{audit_mark, operator_reconciles, operator_requests_since, scrape_operator, wait};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const NODES: [&str; 4] = ["x86-1", "jetson-1", "pi-1", "qemu-1"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blog_deployment_follows_the_index_where_it_covers_every_node() -> Result<()> {
    let (env, client) = start("rollout").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);

    // The seed's end state: one Deployment naming `blog:new`, no tolerations, a pod on every node. Its
    // GitOps tool owns an env var that archway must leave alone.
    let repo = format!("{}/asksven/blog", env.registry.host);
    deployments.patch("blog", &PatchParams::apply("gitops"), &Patch::Apply(deployment("blog", &repo, 4))).await?;
    // And a DaemonSet and a StatefulSet of the same image, named by container.
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), NS);
    let agent = workload("DaemonSet", "blog-agent", &repo);
    daemonsets.patch("blog-agent", &PatchParams::apply("gitops"), &Patch::Apply(agent)).await?;
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let cache = workload("StatefulSet", "blog-cache", &repo);
    statefulsets.patch("blog-cache", &PatchParams::apply("gitops"), &Patch::Apply(cache)).await?;
    let mut build =
        blog_build(&env, "blog", &["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"], "Dockerfile");
    build["spec"]["rollout"] = json!({"targets": [
        {"kind": "Deployment", "name": "blog"},
        {"kind": "DaemonSet", "name": "blog-agent", "container": "agent"},
        {"kind": "StatefulSet", "name": "blog-cache", "container": "agent"},
    ]});
    api(&client).patch("blog", &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    kubectl_wait_ready(&env, "blog").await?;
    let status = wait_status(&client, "blog", is_ready).await?;
    let image = status["image"].as_str().context("status.image")?.to_string();
    for target in status["targets"].as_array().context("status.targets")? {
        ensure!(target["state"] == "RolledOut" && target["image"] == image.as_str(), "{target}");
    }
    ensure!(condition(&status, "RolledOut")["status"] == "True", "{status}");
    let agent = daemonsets.get("blog-agent").await?;
    let agent_image = agent.spec.template.spec.as_ref().and_then(|s| s.containers[0].image.clone());
    ensure!(agent_image.as_deref() == Some(image.as_str()), "{agent_image:?}");
    ensure!(agent.status.is_some_and(|s| s.number_available == Some(4)), "the DaemonSet is not on every node");
    let cache = statefulsets.get("blog-cache").await?;
    let cache_image = cache.spec.template.spec.as_ref().and_then(|s| s.containers[0].image.clone());
    ensure!(cache_image.as_deref() == Some(image.as_str()), "{cache_image:?}");
    ensure!(cache.status.is_some_and(|s| s.ready_replicas == Some(2)), "the StatefulSet is not ready");
    // Events go out in the background, a moment after the status.
    let names = ["Deployment/blog:", "DaemonSet/blog-agent:", "StatefulSet/blog-cache:"];
    let rolled_out = |events: &[Event]| -> Vec<String> {
        events.iter().filter(|e| e.reason.as_deref() == Some("RolledOut")).filter_map(|e| e.note.clone()).collect()
    };
    let events = wait_events(&client, NS, "blog", |events| {
        let notes = rolled_out(events);
        names.iter().all(|name| notes.iter().any(|n| n.starts_with(name)))
    })
    .await;
    let rolled_out = rolled_out(&events);
    for name in names {
        ensure!(rolled_out.iter().any(|n| n.starts_with(name)), "no RolledOut event for {name} in {rolled_out:?}");
    }
    // The same, as Prometheus scrapes it from the operator.
    let metrics = scrape_operator(&client).await?;
    for line in [
        r#"archway_platform_builds_total{platform="linux/arm/v7",mode="native",result="succeeded"} 1"#,
        r#"archway_platform_builds_total{platform="linux/arm64",mode="native",result="succeeded"} 1"#,
        r#"archway_rollouts_total{result="rolled_out"} 3"#,
    ] {
        ensure!(metrics.lines().any(|l| l == line), "no {line:?} in the operator's metrics:\n{metrics}");
    }

    let blog = deployments.get("blog").await?;
    let container = &blog.spec.template.spec.as_ref().context("pod spec")?.containers[0];
    ensure!(container.image.as_deref() == Some(image.as_str()), "{container:?}");
    let env_vars = container.env.as_deref().unwrap_or_default();
    ensure!(env_vars.iter().any(|e| e.name == "SITE" && e.value.as_deref() == Some("blog")), "{env_vars:?}");
    ensure!(managers_of(&blog).contains(&"gitops".to_string()), "gitops lost its fields: {:?}", managers_of(&blog));

    // Every pod runs, one per node, each on the child of its own node's platform.
    let index = raw_index(&env, &image).await?;
    let child = |arch: &str, variant: Option<&str>| -> Result<String> {
        let manifests = index["manifests"].as_array().context("manifests")?;
        let entry = manifests
            .iter()
            .find(|m| m["platform"]["architecture"] == arch && m["platform"]["variant"].as_str() == variant)
            .with_context(|| format!("no {arch} child in {index}"))?;
        Ok(entry["digest"].as_str().context("digest")?.to_string())
    };
    let by_node = running_pods(&client, "blog", 4).await?;
    ensure!(by_node.keys().map(String::as_str).collect::<Vec<_>>() == sorted(&NODES), "{by_node:?}");
    for (node, arch, variant) in
        [("x86-1", "amd64", None), ("qemu-1", "amd64", None), ("jetson-1", "arm64", None), ("pi-1", "arm", Some("v7"))]
    {
        let resolved = &by_node[node];
        ensure!(resolved.ends_with(&child(arch, variant)?), "{node} runs {resolved}, not the {arch} child");
    }

    // The same inputs again (a new generation that changes only the tags): the same index digest,
    // and the Deployment is not touched.
    let generation = blog.metadata.generation;
    build["spec"]["output"]["tags"] = json!(["new", "stable"]);
    api(&client).patch("blog", &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    let again = wait_status(&client, "blog", is_ready).await?;
    ensure!(again["image"] == image.as_str(), "a rebuild of the same inputs published {}", again["image"]);
    ensure!(deployments.get("blog").await?.metadata.generation == generation, "the Deployment was rolled again");

    // A reconcile of the finished build reads its caches only: woken three times (an annotation of
    // its own changes), the operator makes no API request beyond its watches and the Lease.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (mark, before) = (audit_mark(&env)?, operator_reconciles(&client).await?);
    for poke in 1..=3 {
        let annotation = json!({"metadata": {"annotations": {"test.archway.dev/poke": poke.to_string()}}});
        api(&client).patch("blog", &PatchParams::default(), &Patch::Merge(annotation)).await?;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    wait("three reconciles", || async { Ok((operator_reconciles(&client).await? >= before + 3.0).then_some(())) })
        .await?;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let requests = operator_requests_since(&env, mark)?;
    ensure!(requests.is_empty(), "reconciles of a finished build made API requests: {requests:?}");

    // An index without arm/v7: the Deployment could land on pi-1, so it is not patched.
    let partial_repo = format!("{}/asksven/blog-partial", env.registry.host);
    // Three replicas: room for all of them on the nodes the index covers. It still carries the seed's
    // per-arch toleration, which the target asks archway to drop.
    let mut partial = deployment("blog-partial", &partial_repo, 3);
    partial["spec"]["template"]["spec"]["tolerations"] =
        json!([{"key": "arch", "operator": "Exists"}, {"key": "example.com/gpu", "operator": "Exists"}]);
    // At first without the annotation that lets the build move it: it is not touched, and says why.
    let opt_in = partial["metadata"]["annotations"].take();
    deployments.patch("blog-partial", &PatchParams::apply("gitops"), &Patch::Apply(&partial)).await?;
    let mut build = blog_build(&env, "blog-partial", &["linux/amd64", "linux/arm64"], "Dockerfile");
    build["spec"]["output"]["image"] = json!(partial_repo);
    build["spec"]["rollout"] = json!({"targets": [{"kind": "Deployment", "name": "blog-partial"}]});
    api(&client).patch("blog-partial", &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    let blocked = wait_status(&client, "blog-partial", |s| s["targets"][0]["state"] == "Blocked").await?;
    let message = blocked["targets"][0]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("add the annotation archway.dev/rollout-from: blog-partial"), "{message}");
    partial["metadata"]["annotations"] = opt_in;
    deployments.patch("blog-partial", &PatchParams::apply("gitops"), &Patch::Apply(&partial)).await?;
    let blocked = wait_status(&client, "blog-partial", |s| {
        s["targets"][0]["message"].as_str().is_some_and(|m| m.contains("linux/arm/v7"))
    })
    .await?;
    let rolled_out = condition(&blocked, "RolledOut");
    ensure!(rolled_out["status"] == "False" && rolled_out["reason"] == "RolloutBlocked", "{rolled_out}");
    ensure!(rolled_out["message"].as_str().unwrap_or_default().contains("linux/arm/v7"), "{rolled_out}");
    ensure!(blocked["phase"] == "Failed" && condition(&blocked, "Published")["status"] == "True", "{blocked}");
    let untouched = deployments.get("blog-partial").await?;
    let image_now = untouched.spec.template.spec.as_ref().and_then(|s| s.containers[0].image.clone());
    ensure!(image_now == Some(format!("{partial_repo}:new")), "patched anyway: {image_now:?}");

    // Restricted to covered architectures: patched with an affinity, and no pod lands on pi-1.
    build["spec"]["rollout"]["targets"][0]["restrictToCoveredArchitectures"] = json!(true);
    build["spec"]["rollout"]["targets"][0]["removeArchTolerations"] = json!(["arch"]);
    api(&client).patch("blog-partial", &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    let status = wait_status(&client, "blog-partial", is_ready).await?;
    ensure!(status["targets"][0]["restrictedTo"] == json!(["linux/amd64", "linux/arm64"]), "{status}");
    let restricted = deployments.get("blog-partial").await?;
    let affinity = serde_json::to_value(&restricted.spec.template.spec.as_ref().context("pod spec")?.affinity)?;
    let terms = &affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    ensure!(terms[0]["matchExpressions"][0]["values"] == json!(["amd64", "arm64"]), "{affinity}");
    let tolerations = restricted.spec.template.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let keys: Vec<_> = tolerations.iter().filter_map(|t| t.key.as_deref()).collect();
    ensure!(keys == ["example.com/gpu"], "tolerations after the rollout: {keys:?}");
    let by_node = running_pods(&client, "blog-partial", 3).await?;
    ensure!(
        by_node.keys().map(String::as_str).collect::<Vec<_>>() == sorted(&["x86-1", "jetson-1", "qemu-1"]),
        "{by_node:?}"
    );

    env.remove().await;
    Ok(())
}

/// The blog Deployment as its GitOps tool applies it: `replicas` pods at most one per node (so a pod
/// is replaced before its successor starts), the image by tag, an env var of its own; the build of
/// the same name may roll it out.
fn deployment(name: &str, repo: &str, replicas: usize) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "annotations": {"archway.dev/rollout-from": name}},
        "spec": {
            "replicas": replicas,
            "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                        "topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": name}},
                    }]}},
                    "containers": [{
                        "name": "web",
                        "image": format!("{repo}:new"),
                        "command": ["sleep", "86400"],
                        "env": [{"name": "SITE", "value": "blog"}],
                    }],
                },
            },
        },
    })
}

/// A DaemonSet (a pod on every node) or a StatefulSet (two replicas) of the blog image, container
/// `agent`, that the build `blog` (and another) may roll out.
fn workload(kind: &str, name: &str, repo: &str) -> Value {
    let mut workload = json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS, "annotations": {"archway.dev/rollout-from": "other, blog"}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "agent", "image": format!("{repo}:new"), "command": ["sleep", "86400"]}]},
            },
        },
    });
    if kind == "StatefulSet" {
        workload["spec"]["serviceName"] = json!(name);
        workload["spec"]["replicas"] = json!(2);
    }
    workload
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == type_)).unwrap_or(&Value::Null)
}

fn managers_of(deployment: &Deployment) -> Vec<String> {
    deployment.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect()
}

fn sorted<'a>(names: &[&'a str]) -> Vec<&'a str> {
    let mut names = names.to_vec();
    names.sort();
    names
}

/// Node name -> the image the hostlet resolved there (`imageID`), once `count` pods of `app` run and
/// are ready and no other is left.
async fn running_pods(client: &Client, app: &str, count: usize) -> Result<BTreeMap<String, String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let params = ListParams::default().labels(&format!("app={app}"));
    wait(&format!("the pods of {app} to run"), || async {
        let list = pods.list(&params).await?.items;
        let mut by_node = BTreeMap::new();
        if list.len() != count {
            return Ok(None);
        }
        for pod in &list {
            let status = pod.status.as_ref();
            let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
            let statuses = status.and_then(|s| s.container_statuses.as_ref());
            let ready = statuses.and_then(|s| s.first()).filter(|c| c.ready);
            match (running && pod.metadata.deletion_timestamp.is_none(), ready) {
                (true, Some(c)) => {
                    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                    by_node.insert(node, c.image_id.clone());
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(by_node))
    })
    .await
}

/// What a user or CI runs: kstatus readiness through kubectl.
async fn kubectl_wait_ready(env: &Env, name: &str) -> Result<()> {
    let out = tokio::process::Command::new(env.control_plane.bin_dir.join("kubectl"))
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args(["-n", NS, "wait", "--for=condition=Ready", "--timeout=120s", &format!("multiarchbuild/{name}")])
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "kubectl wait: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
