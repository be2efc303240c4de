//! Real cross-architecture builds in hostlet pods: buildah builds `RUN uname -m > /arch` for each platform
//! (foreign ones under qemu: arm/v7 on the qemu node, since buildah's image has no 32-bit ARM child to run
//! on the Pi), pushes to the registry and reports the digest in its termination message.
//! What the image holds is read back from the registry with skopeo, never from the build log. Then workload
//! pods show containerd's platform rules: the multi-arch base runs everywhere, an amd64-only image does not.

mod common;

use std::path::Path;

use anyhow::{Context, Result, ensure};
use archway::platform::Platform;
use archway_testenv::env::{Env, EnvOptions};
use common::{ImageContents, pod, run_to_end, terminated, wait_phase, wait_pull_backoff};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::json;

const NS: &str = "builds";
const BUILDAH: &str = archway::plan::job::DEFAULT_BUILDAH_IMAGE;

/// Builds into a private storage and pushes; the digest goes to the termination log.
const BUILD_SCRIPT: &str = r#"set -eu
s="--root /var/lib/containers/storage --runroot /var/lib/containers/run --storage-driver vfs"
buildah $s build --platform "$PLATFORM" --isolation chroot --cert-dir /archway/ca \
  --authfile /archway/auth/config.json -t archway-build /workspace/context
buildah $s push --cert-dir /archway/ca --authfile /archway/auth/config.json \
  --digestfile /dev/termination-log archway-build "docker://$DEST"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildah_builds_every_platform_and_workloads_follow_containerd_rules() -> Result<()> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testenv-builds");
    let env = Env::start(EnvOptions::new(&dir)).await?;
    let client = env.client();
    let base = env.base_image.clone().context("base image")?;
    setup(&client, &env, &base).await?;

    let arch = "kubernetes.io/arch";
    let cases = [
        ("linux/arm64", (arch, "arm64"), "jetson-1", "aarch64"),
        ("linux/arm/v7", ("emulate.archway.dev/arm", "true"), "qemu-1", "armv7l"),
        ("linux/amd64", (arch, "amd64"), "x86-1 qemu-1", "x86_64"),
    ];
    let builds = cases
        .iter()
        .map(|(platform, selector, node, uname)| build_and_check(&client, &env, platform, *selector, node, uname));
    let digests = futures::future::try_join_all(builds).await?;

    // The amd64 image has no child for the Pi: the hostlet cannot pull it there, naming both platforms.
    let amd64_only = format!("{}/builds/arch@{}", env.registry.host, digests[2]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.create(&PostParams::default(), &workload("amd64-on-pi", "pi-1", &amd64_only)?).await?;
    let message = wait_pull_backoff(&pods, "amd64-on-pi").await?;
    ensure!(message.contains("linux/arm/v7") && message.contains("offers linux/amd64"), "{message}");

    // The multi-arch base runs on every node kind, each with the child for its platform.
    for node in ["x86-1", "jetson-1", "pi-1", "qemu-1"] {
        pods.create(&PostParams::default(), &workload(&format!("base-on-{node}"), node, &base)?).await?;
    }
    for node in ["x86-1", "jetson-1", "pi-1", "qemu-1"] {
        wait_phase(&pods, &format!("base-on-{node}"), "Running").await?;
    }
    env.remove().await;
    Ok(())
}

/// Runs one platform's build pod on the nodes with the label `selector`, checks where the scheduler put
/// it and what the registry holds.
async fn build_and_check(
    client: &Client,
    env: &Env,
    platform: &str,
    selector: (&str, &str),
    node: &str,
    uname: &str,
) -> Result<String> {
    let slug = platform.replace('/', "-");
    let dest = format!("{}/builds/arch:{slug}", env.registry.host);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod = run_to_end(&pods, build_pod(&format!("build-{slug}"), platform, selector, &dest)?).await?;
    let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    // `node` lists the acceptable nodes: both amd64 nodes fit an amd64 build.
    ensure!(bound.is_some_and(|b| node.split(' ').any(|n| n == b)), "{platform}: bound to {bound:?}, expected {node}");
    let state = terminated(&pod, "build")?;
    ensure!(state.exit_code == 0, "{platform}: build failed: {:?}", state.message);
    let digest = state.message.clone().unwrap_or_default().trim().to_string();
    ensure!(digest.starts_with("sha256:") && digest.len() == 71, "{platform}: termination message {digest:?}");

    let image = ImageContents::fetch(&env.registry, &format!("{}/builds/arch@{digest}", env.registry.host)).await?;
    ensure!(image.digest == digest, "{platform}: registry digest {} != reported {digest}", image.digest);
    let configured: Platform = image.platform.parse()?;
    ensure!(configured == platform.parse()?, "{platform}: image config says {}", image.platform);
    let printed = image.read_file("/arch").await?;
    ensure!(printed.trim() == uname, "{platform}: /arch holds {printed:?}, expected {uname}");
    Ok(digest)
}

fn build_pod(name: &str, platform: &str, (key, value): (&str, &str), dest: &str) -> Result<Pod> {
    pod(json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {key: value},
            "containers": [{
                "name": "build",
                "image": BUILDAH,
                "command": ["sh", "-c", BUILD_SCRIPT],
                "env": [{"name": "PLATFORM", "value": platform}, {"name": "DEST", "value": dest}],
                "volumeMounts": [
                    {"name": "context", "mountPath": "/workspace/context", "readOnly": true},
                    {"name": "auth", "mountPath": "/archway/auth", "readOnly": true},
                    {"name": "ca", "mountPath": "/archway/ca", "readOnly": true},
                    {"name": "storage", "mountPath": "/var/lib/containers"},
                ],
            }],
            "volumes": [
                {"name": "context", "configMap": {"name": "arch-context"}},
                {"name": "auth", "secret": {"secretName": "registry-credentials", "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}},
                {"name": "ca", "configMap": {"name": "registry-ca"}},
                {"name": "storage", "emptyDir": {}},
            ],
        },
    }))
}

fn workload(name: &str, node: &str, image: &str) -> Result<Pod> {
    pod(json!({
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "containers": [{"name": "web", "image": image, "command": ["sleep", "86400"]}]},
    }))
}

/// The namespace, the build context, the registry's credentials and its CA.
async fn setup(client: &Client, env: &Env, base: &str) -> Result<()> {
    let meta = |name: &str| ObjectMeta { name: Some(name.into()), ..Default::default() };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &Namespace { metadata: meta(NS), ..Default::default() })
        .await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let data = |k: &str, v: String| Some([(k.to_string(), v)].into());
    let dockerfile = format!("FROM {base}\nRUN uname -m > /arch\n");
    config_maps
        .create(
            &PostParams::default(),
            &ConfigMap { metadata: meta("arch-context"), data: data("Dockerfile", dockerfile), ..Default::default() },
        )
        .await?;
    config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: meta("registry-ca"),
                data: data("ca.crt", env.registry.ca_pem.clone()),
                ..Default::default()
            },
        )
        .await?;
    let auth = std::fs::read_to_string(&env.registry.auth_file)?;
    let secret = Secret {
        metadata: meta("registry-credentials"),
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        string_data: Some([(".dockerconfigjson".to_string(), auth)].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), NS).create(&PostParams::default(), &secret).await?;
    Ok(())
}
