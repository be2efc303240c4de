//! The hostlet against the real control plane: the real scheduler binds Jobs to our per-architecture
//! nodes, their tool pods really run with their volumes and env, workload pods are resolved in the
//! registry by containerd's platform rules, and deletion and deadlines end pods as a kubelet would.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use anyhow::{Context, Result, bail, ensure};
use archway_testenv::env::{Env, EnvOptions};
use archway_testenv::hostlet::{self, HostletConfig, RegistryAccess};
use common::{meta, phase, pod, run_to_end, served, terminated, wait, wait_phase, wait_pull_backoff};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, ServiceAccount};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const NS: &str = "hostlet-test";
const BUILDAH: &str = archway::plan::job::DEFAULT_BUILDAH_IMAGE;
/// Where a pod of the buildah image that names no node may go: not the Pi (buildah's image has no
/// linux/arm/v7 child, so it would stay in ImagePullBackOff there).
fn on_amd64() -> serde_json::Value {
    json!({"kubernetes.io/arch": "amd64"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostlet_runs_pods_on_per_architecture_nodes() -> Result<()> {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info,archway_testenv=debug").try_init();
    // A fixed dir under target/: a run killed half-way is cleaned up by the next one.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testenv-hostlet");
    let env = Env::start(EnvOptions::new(&dir)).await?;
    let client = env.client();

    nodes_are_ready_with_leases(&client).await?;
    namespace(&client).await?;
    let base = env.base_image.clone().context("base image")?;
    let single_arch = format!("{}/hostlet/busybox:arm64", env.registry.host);
    copy_one_platform(&env, &base, &single_arch, "arm64").await?;

    tokio::try_join!(
        job_lands_on(&client, "arm64", "jetson-1"),
        job_lands_on(&client, "arm", "pi-1"),
        secret_volume_and_env(&client),
        failure_falls_back_to_logs(&client),
        workloads_resolve_by_platform(&client, &env, &base, &single_arch),
        deletion_kills_and_removes(&client),
        deadline_fails_the_pod(&client),
        in_cluster_api_access(&client),
        always_restarts(&client),
    )?;
    env.remove().await;
    Ok(())
}

/// A hostlet that stops and starts again neither runs a finished pod twice nor pretends a pod whose
/// processes died with it still runs; it still finishes the deletion of pods it knew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_hostlet_runs_nothing_twice() -> Result<()> {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testenv-hostlet-restart");
    let env = Env::start(EnvOptions { nodes: false, base_image: false, ..EnvOptions::new(&dir) }).await?;
    let client = env.client();
    let registry = RegistryAccess {
        host: env.registry.host.clone(),
        username: env.registry.username.clone(),
        password: env.registry.password.clone(),
        ca_pem: env.registry.ca_pem.clone().into_bytes(),
    };
    let config = HostletConfig::new(
        env.dir.join("hostlet"),
        registry,
        ("127.0.0.1".into(), env.control_plane.apiserver_port),
        "archway".into(),
        &archway_testenv::gobuild::BUILDKIT.bin_dir().await?,
    );
    let first = hostlet::start(client.clone(), config.clone()).await?;
    namespace(&client).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // A pod that counts its runs in a hostPath file, and one that runs until killed.
    let count = env.dir.join("runs");
    let _ = std::fs::remove_dir_all(&count);
    let once = pod(json!({
        "metadata": {"name": "once"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"kubernetes.io/hostname": "x86-1"},
            "volumes": [{"name": "count", "hostPath": {"path": count, "type": "DirectoryOrCreate"}}],
            "containers": [{
                "name": "main",
                "image": BUILDAH,
                "command": ["sh", "-c", "echo run >> /count/runs"],
                "volumeMounts": [{"name": "count", "mountPath": "/count"}],
            }],
        },
    }))?;
    let once = run_to_end(&Api::namespaced(client.clone(), NS), once).await?;
    ensure!(phase(&once) == "Succeeded");
    let sleeper = pod(json!({
        "metadata": {"name": "sleeper-restart"},
        "spec": {"nodeSelector": on_amd64(), "containers": [{"name": "main", "image": BUILDAH, "command": ["sleep", "615"]}]},
    }))?;
    pods.create(&PostParams::default(), &sleeper).await?;
    wait_phase(&pods, "sleeper-restart", "Running").await?;
    wait("sleep 615 started", || async { Ok(has_process("615").then_some(())) }).await?;

    first.shutdown().await;
    // SIGKILL is delivered asynchronously: give the kernel a moment to end the process.
    let mut gone = false;
    for _ in 0..50 {
        gone = !has_process("615");
        if gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(gone, "shutdown left the pod's process running for 5 s");
    let second = hostlet::start(client.clone(), config).await?;
    let failed = wait_phase(&pods, "sleeper-restart", "Failed").await?;
    let reason = failed.status.and_then(|s| s.reason);
    ensure!(reason.as_deref() == Some("HostletRestarted"), "{reason:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(std::fs::read_to_string(count.join("runs"))? == "run\n", "the finished pod ran again");

    pods.delete("once", &DeleteParams::default()).await?;
    wait("once gone", || async { Ok(pods.get_opt("once").await?.is_none().then_some(())) }).await?;
    second.shutdown().await;
    env.remove().await;
    Ok(())
}

async fn nodes_are_ready_with_leases(client: &Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for spec in HostletConfig::default_nodes() {
        let node = nodes.get(&spec.name).await?;
        let labels = node.metadata.labels.clone().unwrap_or_default();
        ensure!(labels.get("kubernetes.io/arch") == Some(&spec.platform.architecture), "{labels:?}");
        let status = node.status.context("node status")?;
        let ready = status.conditions.unwrap_or_default().into_iter().find(|c| c.type_ == "Ready");
        ensure!(ready.is_some_and(|c| c.status == "True"), "{} not Ready", spec.name);
        ensure!(status.node_info.context("nodeInfo")?.architecture == spec.platform.architecture);
        let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
        ensure!(taints.is_empty(), "{} keeps taints {taints:?}", spec.name);
    }
    let qemu = nodes.get("qemu-1").await?.metadata.labels.unwrap_or_default();
    ensure!(qemu.get("emulate.archway.dev/arm64").map(String::as_str) == Some("true"));
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    wait("leases of all nodes", || async {
        let lease = leases.get_opt("pi-1").await?;
        Ok(lease.and_then(|l| l.spec?.holder_identity).filter(|h| h == "pi-1").map(|_| ()))
    })
    .await
}

/// A test namespace whose `default` ServiceAccount exists (pods are refused until it does).
async fn namespace(client: &Client) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace { metadata: meta(NS), ..Default::default() };
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    wait("default service account", || async { Ok(accounts.get_opt("default").await?.map(|_| ())) }).await
}

/// A Job selecting an architecture is bound by the real scheduler to the matching node, runs there
/// and completes; its pod reports the node's name (downward API) in its termination message.
async fn job_lands_on(client: &Client, arch: &str, node: &str) -> Result<()> {
    let name = format!("job-{arch}");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"kubernetes.io/arch": arch},
                // The git image has a child for every node here (buildah's has none for the Pi).
                "containers": [{
                    "name": "build",
                    "image": archway::plan::job::DEFAULT_GIT_IMAGE,
                    "command": ["sh", "-c", "printf %s \"$NODE\" > /dev/termination-log"],
                    "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                }],
            }},
        },
    }))?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    jobs.create(&PostParams::default(), &job).await?;
    wait(&format!("job {name} Complete"), || async {
        let job = jobs.get(&name).await?;
        let conditions = job.status.and_then(|s| s.conditions).unwrap_or_default();
        if let Some(failed) = conditions.iter().find(|c| c.type_ == "Failed" && c.status == "True") {
            bail!("job {name} failed: {failed:?}");
        }
        Ok(conditions.iter().any(|c| c.type_ == "Complete" && c.status == "True").then_some(()))
    })
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let list = pods.list(&ListParams::default().labels(&format!("job-name={name}"))).await?;
    let pod = list.items.first().context("job pod")?;
    let bound = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    ensure!(bound.as_deref() == Some(node), "job {name} ran on {bound:?}, not {node}");
    let terminated = terminated(pod, "build")?;
    ensure!(terminated.message.as_deref() == Some(node), "{terminated:?}");

    // Deleting the Job: the garbage collector deletes its finished pods gracefully, the hostlet
    // finishes them with grace 0 instead of leaving them for 30 s.
    let started = Instant::now();
    jobs.delete(&name, &DeleteParams::background()).await?;
    let selector = ListParams::default().labels(&format!("job-name={name}"));
    wait(&format!("pods of {name} gone"), || async { Ok(pods.list(&selector).await?.items.is_empty().then_some(())) })
        .await?;
    ensure!(started.elapsed() < Duration::from_secs(20), "pod deletion took {:?}", started.elapsed());
    Ok(())
}

/// A secret volume at its mountPath and a secretKeyRef env var, seen by the process; the git image
/// runs the host's git.
async fn secret_volume_and_env(client: &Client) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let secret = Secret {
        metadata: meta("creds"),
        string_data: Some(BTreeMap::from([("key".into(), "s3cret".into()), ("token".into(), "tok".into())])),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await?;
    let script =
        r#"printf '%s:%s:%s' "$(cat /etc/x/key)" "$TOKEN" "$(git --version | cut -d' ' -f1)" > /dev/termination-log"#;
    let pod = pod(json!({
        "metadata": {"name": "secret-reader"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "creds", "secret": {"secretName": "creds", "items": [{"key": "key", "path": "key"}]}}],
            "containers": [{
                "name": "main",
                "image": archway::plan::job::DEFAULT_GIT_IMAGE,
                "command": ["sh", "-c", script],
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}],
                "volumeMounts": [{"name": "creds", "mountPath": "/etc/x", "readOnly": true}],
            }],
        },
    }))?;
    let pod = run_to_end(&Api::namespaced(client.clone(), NS), pod).await?;
    let status = pod.status.clone().context("status")?;
    ensure!(status.phase.as_deref() == Some("Succeeded"), "{status:?}");
    let ip = status.pod_ip.clone().unwrap_or_default();
    ensure!(ip.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()) && ip != "127.0.0.1", "pod IP {ip}");
    ensure!(status.host_ip.as_deref() == Some("127.0.0.1"));
    let message = terminated(&pod, "main")?.message.clone();
    ensure!(message.as_deref() == Some("s3cret:tok:git"), "{message:?}");
    Ok(())
}

async fn failure_falls_back_to_logs(client: &Client) -> Result<()> {
    let pod = pod(json!({
        "metadata": {"name": "failing"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": on_amd64(),
            "containers": [{
                "name": "main",
                "image": BUILDAH,
                "command": ["sh", "-c", "echo boom >&2; exit 4"],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }],
        },
    }))?;
    let pod = run_to_end(&Api::namespaced(client.clone(), NS), pod).await?;
    ensure!(phase(&pod) == "Failed");
    let t = terminated(&pod, "main")?;
    ensure!(t.exit_code == 4 && t.reason.as_deref() == Some("Error"), "{t:?}");
    ensure!(t.message.as_deref() == Some("boom\n"), "{t:?}");
    Ok(())
}

/// The multi-arch base image runs on the Pi as its arm/v7 child; a single-arch arm64 image runs on
/// the Jetson and backs off on x86 with a message naming both platforms; a missing tag backs off until
/// it is pushed.
async fn workloads_resolve_by_platform(client: &Client, env: &Env, base: &str, single: &str) -> Result<()> {
    let raw: Value = serde_json::from_str(&archway_testenv::baseimage::inspect_raw(&env.registry, base).await?)?;
    let v7 = raw["manifests"]
        .as_array()
        .context("index")?
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm" && m["platform"]["variant"] == "v7")
        .and_then(|m| m["digest"].as_str())
        .context("arm/v7 child")?
        .to_string();
    // Each really runs: the image's own busybox (under qemu on the ARM nodes) writes `uname -m` and
    // serves it on the pod's IP.
    let workload = |name: &str, node: &str, image: &str| {
        pod(json!({
            "metadata": {"name": name},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [{
                    "name": "web",
                    "image": image,
                    "command": ["sh", "-c", "mkdir /www && uname -m > /www/arch && exec httpd -f -p \"$POD_IP:80\" -h /www"],
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                }],
            },
        }))
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.create(&PostParams::default(), &workload("web-pi", "pi-1", base)?).await?;
    let running = wait_phase(&pods, "web-pi", "Running").await?;
    let status = &running.status.as_ref().context("status")?.container_statuses.as_ref().context("statuses")?[0];
    ensure!(status.image_id.ends_with(&v7) && status.ready, "{status:?}");
    ensure!(served(&running, "arch").await? == "armv7l\n", "web-pi is not an arm/v7 process");

    pods.create(&PostParams::default(), &workload("arm64-on-jetson", "jetson-1", single)?).await?;
    let running = wait_phase(&pods, "arm64-on-jetson", "Running").await?;
    ensure!(served(&running, "arch").await? == "aarch64\n", "arm64-on-jetson is not an arm64 process");

    pods.create(&PostParams::default(), &workload("arm64-on-x86", "x86-1", single)?).await?;
    let message = wait_pull_backoff(&pods, "arm64-on-x86").await?;
    let expected = format!("image {single} offers linux/arm64, none runs on node x86-1 (linux/amd64)");
    ensure!(message == expected, "{message}");

    // A tool image runs only where its stand-in index has a child for the node: buildah's has no
    // 32-bit ARM, as the real quay.io/buildah/stable.
    let buildah = archway::plan::job::DEFAULT_BUILDAH_IMAGE;
    pods.create(&PostParams::default(), &workload("buildah-on-pi", "pi-1", buildah)?).await?;
    let message = wait_pull_backoff(&pods, "buildah-on-pi").await?;
    let mirror = format!("{}/{buildah}", env.registry.host);
    let expected = format!(
        "image {mirror} offers linux/amd64, linux/arm64, linux/ppc64le, linux/s390x, none runs on node pi-1 (linux/arm/v7)"
    );
    ensure!(message == expected, "{message}");

    // An image pushed while its pod backs off is picked up by the next attempt, as with a kubelet.
    // (A tag of this run: the registry's storage outlives a test run.)
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let later = format!("{}/hostlet/later:run-{run}", env.registry.host);
    pods.create(&PostParams::default(), &workload("later", "x86-1", &later)?).await?;
    let message = wait_pull_backoff(&pods, "later").await?;
    ensure!(message.contains(&format!("later:run-{run}")), "{message}");
    copy_one_platform(env, base, &later, "amd64").await?;
    let running = wait_phase(&pods, "later", "Running").await?;
    ensure!(served(&running, "arch").await? == "x86_64\n", "later is not an amd64 process");

    // A workload pod deleted gracefully goes away without waiting out its grace period.
    pods.delete("web-pi", &DeleteParams::default()).await?;
    wait("web-pi gone", || async { Ok(pods.get_opt("web-pi").await?.is_none().then_some(())) }).await
}

/// Deleting a running tool pod kills its process and removes the pod (grace 0 from the hostlet).
async fn deletion_kills_and_removes(client: &Client) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let sleeper = pod(json!({
        "metadata": {"name": "sleeper"},
        "spec": {"nodeSelector": on_amd64(), "containers": [{"name": "main", "image": BUILDAH, "command": ["sleep", "613"]}]},
    }))?;
    pods.create(&PostParams::default(), &sleeper).await?;
    wait_phase(&pods, "sleeper", "Running").await?;
    wait("sleep 613 started", || async { Ok(has_process("613").then_some(())) }).await?;
    let started = Instant::now();
    pods.delete("sleeper", &DeleteParams::default()).await?;
    wait("sleeper gone", || async { Ok(pods.get_opt("sleeper").await?.is_none().then_some(())) }).await?;
    ensure!(started.elapsed() < Duration::from_secs(20), "deletion took {:?}", started.elapsed());
    wait("sleep 613 killed", || async { Ok((!has_process("613")).then_some(())) }).await
}

async fn deadline_fails_the_pod(client: &Client) -> Result<()> {
    let pod = pod(json!({
        "metadata": {"name": "too-slow"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": on_amd64(),
            "activeDeadlineSeconds": 2,
            "containers": [{"name": "main", "image": BUILDAH, "command": ["sleep", "614"]}],
        },
    }))?;
    let pod = run_to_end(&Api::namespaced(client.clone(), NS), pod).await?;
    let status = pod.status.context("status")?;
    ensure!(status.phase.as_deref() == Some("Failed"), "{status:?}");
    ensure!(status.reason.as_deref() == Some("DeadlineExceeded"), "{status:?}");
    ensure!(!has_process("614"), "the deadline left its process running");
    Ok(())
}

/// A pod reaches the API server as in-cluster clients do: the loopback address in
/// `KUBERNETES_SERVICE_HOST/PORT` and the projected service-account token and CA.
async fn in_cluster_api_access(client: &Client) -> Result<()> {
    let script = r#"sa=/var/run/secrets/kubernetes.io/serviceaccount
printf '%s:%s' "$KUBERNETES_SERVICE_HOST" "$(cat $sa/namespace)" > /dev/termination-log
curl -sSf --cacert $sa/ca.crt -H "Authorization: Bearer $(cat $sa/token)" \
  "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/version""#;
    let pod = pod(json!({
        "metadata": {"name": "in-cluster"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": on_amd64(),
            "containers": [{
                "name": "main",
                "image": BUILDAH,
                "command": ["sh", "-c", script],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }],
        },
    }))?;
    let pod = run_to_end(&Api::namespaced(client.clone(), NS), pod).await?;
    let t = terminated(&pod, "main")?;
    ensure!(t.exit_code == 0, "{t:?}");
    ensure!(t.message.as_deref() == Some(format!("127.0.0.1:{NS}").as_str()), "{t:?}");
    Ok(())
}

/// restartPolicy Always (a Deployment's pods): a container that exits is started again, and the pod
/// stays Running with its restart count and last state.
async fn always_restarts(client: &Client) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let crasher = pod(json!({
        "metadata": {"name": "crasher"},
        "spec": {"nodeSelector": on_amd64(), "containers": [{"name": "main", "image": BUILDAH, "command": ["sh", "-c", "echo bye > /dev/termination-log; exit 2"]}]},
    }))?;
    pods.create(&PostParams::default(), &crasher).await?;
    wait("crasher restarted twice", || async {
        let pod = pods.get("crasher").await?;
        let statuses = pod.status.and_then(|s| s.container_statuses).unwrap_or_default();
        Ok(statuses.first().filter(|s| s.restart_count >= 2).map(|_| ()))
    })
    .await?;
    let pod = pods.get("crasher").await?;
    ensure!(phase(&pod) == "Running", "{:?}", pod.status);
    let last = pod.status.and_then(|s| s.container_statuses).context("statuses")?[0].last_state.clone();
    let last = last.and_then(|l| l.terminated).context("last state")?;
    ensure!(last.exit_code == 2 && last.message.as_deref() == Some("bye\n"), "{last:?}");
    pods.delete("crasher", &DeleteParams::default()).await?;
    wait("crasher gone", || async { Ok(pods.get_opt("crasher").await?.is_none().then_some(())) }).await
}

/// Copies one platform of a multi-arch image to `dest` as a single-manifest image.
async fn copy_one_platform(env: &Env, src: &str, dest: &str, arch: &str) -> Result<()> {
    let output = tokio::process::Command::new("skopeo")
        .args(["copy", "--override-arch", arch, "--authfile"])
        .arg(&env.registry.auth_file)
        .arg("--src-cert-dir")
        .arg(&env.registry.cert_dir)
        .arg("--dest-cert-dir")
        .arg(&env.registry.cert_dir)
        .arg(format!("docker://{src}"))
        .arg(format!("docker://{dest}"))
        .output()
        .await?;
    ensure!(output.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// Whether a `sleep <arg>` process runs on this host.
fn has_process(arg: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|e| {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        words.len() >= 2 && words[0].ends_with(b"sleep") && words[1] == arg.as_bytes()
    })
}
