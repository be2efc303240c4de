//! The `assemble` builder where builders cannot run: the blog's COPY-only variant for four platforms, in
//! a namespace where Pod Security `restricted` is enforced, with every ARM and qemu node cordoned. No
//! program of a target platform runs and nothing privileged runs; what the registry holds is read back
//! with skopeo, and the rollout runs the child of each node's platform (each serves its own file). A
//! rebuild request then builds every platform again, to the same bytes. `auto` assembles a git source's
//! COPY-only Dockerfile too, as its resolve Job reported it.

mod common;

use anyhow::{Context, Result, ensure};
use archway_testenv::cluster_setup::create_push_secret;
use common::blog::{api, start, wait_status, wait_status_in};
use common::{GitRepo, ImageContents, wait};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NS: &str = "restricted";
/// `(platform, its file's name part, what the file says)`.
const PLATFORMS: [(&str, &str, &str); 4] = [
    ("linux/amd64", "amd64", "x86_64"),
    ("linux/arm64", "arm64", "aarch64"),
    ("linux/arm/v7", "armv7", "armv7l"),
    ("linux/arm/v6", "armv6", "armv6l"),
];
const CORDONED: [&str; 3] = ["jetson-1", "pi-1", "qemu-1"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_only_dockerfile_is_assembled_unprivileged_for_every_platform() -> Result<()> {
    let (env, client) = start("assemble").await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let restricted = Namespace {
        metadata: ObjectMeta {
            name: Some(NS.into()),
            labels: Some([("pod-security.kubernetes.io/enforce".to_string(), "restricted".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces.create(&PostParams::default(), &restricted).await?;
    // The namespace does enforce it: a pod with a builder's rights is refused.
    let privileged = common::pod(json!({
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{"name": "main", "image": archway::plan::job::DEFAULT_BUILDAH_IMAGE,
            "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]},
    }))?;
    let refused = Api::<Pod>::namespaced(client.clone(), NS).create(&PostParams::default(), &privileged).await;
    ensure!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.message.contains("violates PodSecurity \"restricted")),
        "{refused:?}"
    );
    create_push_secret(&client, &env.registry, NS).await?;
    let base = env.base_image.clone().context("base image")?;
    let mut files = vec![
        ("Dockerfile".to_string(), dockerfile()),
        ("index.html".to_string(), "<h1>asksven's blog</h1>\n".to_string()),
    ];
    files.extend(PLATFORMS.iter().map(|(_, part, uname)| (format!("arch-{part}"), format!("{uname}\n"))));
    let context = ConfigMap {
        metadata: ObjectMeta { name: Some("blog-context".into()), ..Default::default() },
        data: Some(files.into_iter().collect()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), NS).create(&PostParams::default(), &context).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    for node in CORDONED {
        nodes.patch(node, &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": true}}))).await?;
    }

    let image = format!("{}/restricted/blog", env.registry.host);
    let build = json!({
        "apiVersion": "archway.dev/v1alpha1",
        "kind": "MultiArchBuild",
        "metadata": {"name": "blog", "namespace": NS},
        "spec": {
            "source": {"configMap": {"name": "blog-context"}},
            "platforms": PLATFORMS.iter().map(|(p, _, _)| *p).collect::<Vec<_>>(),
            "buildArgs": {"BASE_IMAGE": base},
            "output": {"image": image, "tags": ["new"], "pushSecret": {"name": "registry-credentials"}},
            "rollout": {"targets": [{"kind": "Deployment", "name": "blog"}]},
        },
    });
    let builds: Api<archway::api::MultiArchBuild> = Api::namespaced(client.clone(), NS);
    builds.patch("blog", &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    // Published; the rollout waits for its Deployment, made below once the nodes are back.
    let published = |s: &Value| {
        s["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Published" && c["status"] == "True"))
    };
    let status = wait_status_in(&client, NS, "blog", published).await?;
    for platform in status["platforms"].as_array().context("status.platforms")? {
        ensure!(platform["builder"] == "assemble" && platform["mode"] == "assembled", "{platform}");
    }
    // Every build pod ran on the one node left, unprivileged: the namespace admits nothing else.
    let pods = Api::<Pod>::namespaced(client.clone(), NS).list(&ListParams::default()).await?.items;
    ensure!(pods.len() >= PLATFORMS.len(), "{} build pods", pods.len());
    for pod in &pods {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        ensure!(node == Some("x86-1"), "build pod {:?} ran on {node:?}", pod.metadata.name);
    }

    let index = status["image"].as_str().context("status.image")?;
    for (platform, _, uname) in PLATFORMS {
        let child = ImageContents::fetch(&env.registry, &child_of(&env, index, platform).await?).await?;
        ensure!(child.platform == platform, "the {platform} child says {}", child.platform);
        ensure!(child.read_file("/srv/arch").await? == format!("{uname}\n"), "{platform}'s /srv/arch");
        ensure!(child.read_file("/srv/index.html").await?.contains("asksven"), "{platform}'s index.html");
    }

    for node in CORDONED {
        nodes.patch(node, &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": false}}))).await?;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    deployments.create(&PostParams::default(), &serde_json::from_value(deployment(&image))?).await?;
    let status = wait_status_in(&client, NS, "blog", |s| s["targets"][0]["state"] == "RolledOut").await?;
    ensure!(status["targets"][0]["image"] == index, "{status}");
    let served = wait("a blog pod on every node serving its own platform's file", || async {
        let pods =
            Api::<Pod>::namespaced(client.clone(), NS).list(&ListParams::default().labels("app=blog")).await?.items;
        let mut seen = Vec::new();
        for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && common::phase(p) == "Running") {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            if let Ok(arch) = arch_served(pod).await {
                seen.push((node, arch));
            }
        }
        seen.sort();
        Ok((seen.len() == 4).then_some(seen))
    })
    .await?;
    let expected = [("jetson-1", "aarch64"), ("pi-1", "armv7l"), ("qemu-1", "x86_64"), ("x86-1", "x86_64")];
    let expected: Vec<(String, String)> = expected.iter().map(|(n, a)| (n.to_string(), format!("{a}\n"))).collect();
    ensure!(served == expected, "{served:?}");

    // A rebuild request builds every platform once more: new Jobs, the same inputs; assembled, the same
    // bytes, so the same index, and the request is recorded as handled.
    let jobs = |status: &Value| -> Vec<String> {
        status["platforms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["job"].as_str().map(String::from))
            .collect()
    };
    let before = jobs(&status);
    let request = json!({"metadata": {"annotations": {"archway.dev/rebuild-requested-at": "2026-12-05T09:00:00Z"}}});
    builds.patch("blog", &PatchParams::default(), &Patch::Merge(&request)).await?;
    let rebuilt = wait_status_in(&client, NS, "blog", |s| s["lastHandledRebuildAt"] == "2026-12-05T09:00:00Z").await?;
    let after = jobs(&rebuilt);
    ensure!(after.len() == 4 && after.iter().all(|j| !before.contains(j)), "jobs {before:?} then {after:?}");
    ensure!(rebuilt["image"] == index && rebuilt["phase"] == "Ready", "{rebuilt}");
    env.remove().await;
    Ok(())
}

/// `auto` with a git source: the resolve Job reports the commit's Dockerfile, so a COPY-only one is
/// assembled. The next commit adds an `ADD`, which may be of an archive (the operator does not read a
/// git source's files), so a builder builds it, and the platforms say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_assembles_a_git_sources_copy_only_dockerfile() -> Result<()> {
    const NAME: &str = "from-git";
    let (env, client) = start("assemble-git").await?;
    let base = env.base_image.clone().context("base image")?;
    let repo = GitRepo::init(env.dir.join("git/site")).await?;
    repo.write("site/Dockerfile", "ARG BASE\nFROM ${BASE}\nCOPY index.html /srv/\n")?;
    repo.write("site/index.html", "<h1>from git</h1>\n")?;
    let first = repo.commit("copy only").await?;
    let platforms = ["linux/amd64", "linux/arm64"];
    let build = json!({
        "apiVersion": "archway.dev/v1alpha1",
        "kind": "MultiArchBuild",
        "metadata": {"name": NAME, "namespace": common::blog::NS},
        "spec": {
            "source": {"git": {"url": repo.url(), "revision": "main", "contextDir": "site", "pollInterval": "2s"}},
            "platforms": platforms,
            "buildArgs": {"BASE": base},
            "output": {"image": format!("{}/git/site", env.registry.host), "tags": ["new"],
                "pushSecret": {"name": "registry-credentials"}},
        },
    });
    api(&client).patch(NAME, &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    let ready =
        wait_status(&client, NAME, |s| s["phase"] == "Ready" && s["source"]["commit"] == first.as_str()).await?;
    for platform in ready["platforms"].as_array().context("status.platforms")? {
        ensure!(platform["builder"] == "assemble" && platform["mode"] == "assembled", "{platform}");
    }
    let index = ready["image"].as_str().context("status.image")?;
    for platform in platforms {
        let child = ImageContents::fetch(&env.registry, &child_of(&env, index, platform).await?).await?;
        ensure!(child.platform == platform, "the {platform} child says {}", child.platform);
        ensure!(child.read_file("/srv/index.html").await? == "<h1>from git</h1>\n", "{platform}'s index.html");
    }

    repo.write("site/Dockerfile", "ARG BASE\nFROM ${BASE}\nCOPY index.html /srv/\nADD index.html /srv/again.html\n")?;
    let second = repo.commit("add").await?;
    let rebuilt =
        wait_status(&client, NAME, |s| s["phase"] == "Ready" && s["source"]["commit"] == second.as_str()).await?;
    for platform in rebuilt["platforms"].as_array().context("status.platforms")? {
        let reason = platform["placementReason"].as_str().unwrap_or_default();
        ensure!(platform["builder"] == "buildah", "{platform}");
        ensure!(reason.starts_with("ADD of index.html at line 4 needs a builder: it may be an archive"), "{platform}");
    }
    env.remove().await;
    Ok(())
}

/// The blog, COPY only: the base image's child plus the site and a file per platform.
fn dockerfile() -> String {
    "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG TARGETARCH\nARG TARGETVARIANT\n\
     COPY index.html /srv/\nCOPY arch-${TARGETARCH}${TARGETVARIANT} /srv/arch\n\
     USER 65534\nEXPOSE 8080\n"
        .to_string()
}

/// The digest reference of `index`'s child for `platform`, as the registry has the index.
async fn child_of(env: &archway_testenv::env::Env, index: &str, platform: &str) -> Result<String> {
    let raw = common::blog::raw_index(env, index).await?;
    let repository = index.split('@').next().context("index reference")?;
    let wanted: archway::platform::Platform = platform.parse()?;
    for child in raw["manifests"].as_array().context("manifests")? {
        let p = &child["platform"];
        let of = archway::platform::Platform::new(
            p["os"].as_str().unwrap_or_default(),
            p["architecture"].as_str().unwrap_or_default(),
            p["variant"].as_str(),
        );
        if of == wanted {
            return Ok(format!("{repository}@{}", child["digest"].as_str().context("digest")?));
        }
    }
    anyhow::bail!("{index} has no {platform} child: {raw}")
}

/// One pod per node, as Pod Security `restricted` admits it: a non-root user, no capability.
fn deployment(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "blog", "namespace": NS, "annotations": {"archway.dev/rollout-from": "blog"}},
        "spec": {
            "replicas": 4,
            "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "selector": {"matchLabels": {"app": "blog"}},
            "template": {
                "metadata": {"labels": {"app": "blog"}},
                "spec": {
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "blog"}}}
                    ]}},
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "web",
                        "image": format!("{image}:new"),
                        "command": ["httpd", "-f", "-h", "/srv", "-p", "$(POD_IP):8080"],
                        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                    }],
                },
            },
        },
    })
}

/// What a blog pod serves at `/arch` (its own pod IP, on loopback, port 8080).
async fn arch_served(pod: &Pod) -> Result<String> {
    let ip: std::net::Ipv4Addr = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).context("pod IP")?.parse()?;
    ensure!(ip.is_loopback(), "pod IP {ip} is not on loopback");
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(2)).build()?;
    let answer = client.get(format!("http://{ip}:8080/arch")).send().await?;
    ensure!(answer.status().is_success(), "{}", answer.status());
    Ok(answer.text().await?)
}
