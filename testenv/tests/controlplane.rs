//! Smoke test of the harness without the hostlet: the control plane answers with RBAC on, the registry
//! serves the multi-arch base image to skopeo, and dropping the environment leaves no process behind.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use archway_testenv::baseimage;
use archway_testenv::env::{Env, EnvOptions};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_rbac_registry_and_teardown() -> Result<()> {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
    // A fixed dir under target/: a run killed half-way is cleaned up by the next one.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testenv-controlplane");
    let started = Instant::now();
    let env = Env::start(EnvOptions { nodes: false, ..EnvOptions::new(&dir) }).await?;
    eprintln!("Env::start took {:.1}s", started.elapsed().as_secs_f64());

    let namespaces = Api::<Namespace>::all(env.client()).list(&ListParams::default()).await?;
    let names: Vec<_> = namespaces.iter().filter_map(|ns| ns.metadata.name.as_deref()).collect();
    assert!(names.contains(&"default") && names.contains(&"kube-system"), "{names:?}");

    let unprivileged = service_account_client(&env, "unprivileged").await?;
    let err = Api::<Secret>::namespaced(unprivileged, "default")
        .list(&ListParams::default())
        .await
        .expect_err("a ServiceAccount without roles must not list secrets");
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }

    let image = env.base_image.clone().context("base image")?;
    let raw = baseimage::inspect_raw(&env.registry, &image).await?;
    baseimage::verify(&raw)?;

    let pids = env.pids();
    assert_eq!(pids.len(), 5, "etcd, apiserver, controller-manager, scheduler, registry");
    drop(env);
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} survived the drop");
    }
    assert!(!dir.join("pids").exists());
    Ok(())
}

/// A client that authenticates as a new ServiceAccount with a token from the TokenRequest API.
async fn service_account_client(env: &Env, name: &str) -> Result<Client> {
    let accounts = Api::<ServiceAccount>::namespaced(env.client(), "default");
    let account = ServiceAccount {
        metadata: ObjectMeta { name: Some(name.to_string()), ..Default::default() },
        ..Default::default()
    };
    accounts.create(&PostParams::default(), &account).await?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(600), ..Default::default() }),
        ..Default::default()
    };
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await?
        .status
        .context("TokenRequest without status")?
        .token;

    let admin = Kubeconfig::read_from(env.kubeconfig())?;
    let cluster = admin.clusters[0].cluster.clone().context("cluster")?;
    let kubeconfig: Kubeconfig = serde_json::from_value(json!({
        "clusters": [{"name": "env", "cluster": {
            "server": cluster.server,
            "certificate-authority-data": cluster.certificate_authority_data,
        }}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "env", "user": name}}],
        "current-context": name,
    }))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}
