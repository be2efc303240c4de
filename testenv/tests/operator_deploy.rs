//! The operator installed the way the local environment installs it (`kubectl apply -k deploy/dev`):
//! its pod runs as the `archway` ServiceAccount, and the apiserver's authorizer grants that account
//! exactly what deploy/base/rbac.yaml says, no more. The plain `deploy/` is accepted by the apiserver too.

use std::path::Path;

use anyhow::{Context, Result};
use archway_testenv::cluster_setup::{
    OPERATOR_NAMESPACE, OPERATOR_SELECTOR, REGISTRY_CA_CONFIG_MAP, REGISTRY_NAMESPACES, REGISTRY_SECRET,
};
use archway_testenv::env::{Env, EnvOptions};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use kube::api::{ListParams, PostParams};

mod common;

const SERVICE_ACCOUNT: &str = "archway";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_runs_as_its_service_account_with_least_privilege() -> Result<()> {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testenv-operator-deploy");
    let env = Env::start(EnvOptions { operator: true, base_image: false, ..EnvOptions::new(&dir) }).await?;

    // The pod that Env::start waited for runs as the operator's ServiceAccount, hardened as deployed.
    let name = env.operator_pod.clone().context("Env::start names the operator's pod")?;
    let pod = Api::<Pod>::namespaced(env.client(), OPERATOR_NAMESPACE).get(&name).await?;
    assert_eq!(common::phase(&pod), "Running");
    let spec = pod.spec.as_ref().context("pod spec")?;
    assert_eq!(spec.service_account_name.as_deref(), Some(SERVICE_ACCOUNT));
    let container = &spec.containers[0];
    assert_eq!(container.args.as_ref().and_then(|a| a.first()).map(String::as_str), Some("operator"));
    let security = container.security_context.as_ref().context("securityContext")?;
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.privileged, None);
    let dropped = security.capabilities.as_ref().and_then(|c| c.drop.clone()).unwrap_or_default();
    assert_eq!(dropped, ["ALL"]);
    assert!(security.capabilities.as_ref().and_then(|c| c.add.as_ref()).is_none(), "no capability is added");
    // Its image was pulled as a node pulls it: the stand-in's child for the node's platform.
    let image_id = &pod.status.as_ref().and_then(|s| s.container_statuses.clone()).context("statuses")?[0].image_id;
    let mirror = format!("{}/{}@sha256:", env.registry.host, "ghcr.io/archway-dev/archway");
    assert!(image_id.starts_with(&mirror), "{image_id}");

    // The push secret where builds and the operator look for it; the registry CA in the operator's
    // namespace only (the operator hands it to build pods: every e2e build in `default` proves that).
    for ns in REGISTRY_NAMESPACES {
        let secret = Api::<Secret>::namespaced(env.client(), ns).get(REGISTRY_SECRET).await?;
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
        let auths: serde_json::Value =
            serde_json::from_slice(&secret.data.as_ref().context("data")?[".dockerconfigjson"].0)?;
        assert!(auths["auths"][&env.registry.host]["auth"].is_string(), "{ns}: {auths}");
        let ca = Api::<ConfigMap>::namespaced(env.client(), ns).get_opt(REGISTRY_CA_CONFIG_MAP).await?;
        let ca = ca.and_then(|c| c.data).and_then(|d| d.get("ca.crt").cloned());
        assert_eq!(ca.as_ref(), (*ns == OPERATOR_NAMESPACE).then_some(&env.registry.ca_pem), "{ns}");
    }

    // (verb, group, resource, subresource, namespace, allowed)
    let cases: &[(&str, &str, &str, &str, &str, bool)] = &[
        // What the ClusterRole grants, in any namespace.
        ("watch", "archway.dev", "multiarchbuilds", "", "", true),
        ("get", "archway.dev", "multiarchbuilds", "", "web", true),
        ("patch", "archway.dev", "multiarchbuilds", "status", "web", true),
        ("update", "archway.dev", "multiarchbuilds", "status", "web", true),
        ("update", "archway.dev", "multiarchbuilds", "finalizers", "web", true),
        ("create", "batch", "jobs", "", "web", true),
        ("delete", "batch", "jobs", "", "web", true),
        ("watch", "batch", "jobs", "", "", true),
        ("list", "", "pods", "", "web", true),
        ("get", "", "pods", "log", "web", false),
        // Pods and nodes come from watch caches: no single reads.
        ("get", "", "pods", "", "web", false),
        ("get", "", "nodes", "", "", false),
        ("watch", "", "nodes", "", "", true),
        ("get", "", "secrets", "", "web", true),
        ("watch", "", "configmaps", "", "", true),
        ("create", "events.k8s.io", "events", "", "web", true),
        ("patch", "", "events", "", "web", true),
        ("patch", "apps", "deployments", "", "web", true),
        ("watch", "apps", "statefulsets", "", "", true),
        ("patch", "apps", "daemonsets", "", "web", true),
        // Leader election: its own namespace only.
        ("update", "coordination.k8s.io", "leases", "", OPERATOR_NAMESPACE, true),
        ("create", "coordination.k8s.io", "leases", "", OPERATOR_NAMESPACE, true),
        ("patch", "coordination.k8s.io", "leases", "", OPERATOR_NAMESPACE, true),
        ("watch", "coordination.k8s.io", "leases", "", OPERATOR_NAMESPACE, true),
        ("watch", "coordination.k8s.io", "leases", "", "kube-node-lease", false),
        ("update", "coordination.k8s.io", "leases", "", "kube-node-lease", false),
        ("patch", "coordination.k8s.io", "leases", "", "kube-node-lease", false),
        // What it must not do.
        ("create", "archway.dev", "multiarchbuilds", "", "web", false),
        ("update", "archway.dev", "multiarchbuilds", "", "web", false),
        ("delete", "archway.dev", "multiarchbuilds", "", "web", false),
        ("update", "batch", "jobs", "", "web", false),
        ("create", "", "pods", "", "web", false),
        ("delete", "", "pods", "", "web", false),
        ("create", "", "pods", "exec", "web", false),
        ("create", "", "secrets", "", "web", false),
        ("update", "", "secrets", "", "web", false),
        ("create", "", "configmaps", "", "web", false),
        ("delete", "", "nodes", "", "", false),
        ("patch", "", "nodes", "", "", false),
        ("create", "apps", "deployments", "", "web", false),
        ("delete", "apps", "deployments", "", "web", false),
        ("create", "", "serviceaccounts", "token", "web", false),
        ("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", false),
        ("update", "apiextensions.k8s.io", "customresourcedefinitions", "", "", false),
    ];
    let mut wrong = Vec::new();
    for &(verb, group, resource, subresource, namespace, want) in cases {
        let status = review(&env, verb, group, resource, subresource, namespace).await?;
        if status.allowed != want {
            let what = format!(
                "{verb} {group}/{resource}{}{subresource} in {namespace:?}",
                if subresource.is_empty() { "" } else { "/" }
            );
            wrong.push(format!("{what}: allowed={} (want {want}) {:?}", status.allowed, status.reason));
        }
    }
    assert!(
        wrong.is_empty(),
        "the archway ServiceAccount's permissions differ from deploy/base/rbac.yaml:\n{}",
        wrong.join("\n")
    );

    // Two replicas run; the Lease names one of them, which reconciles; the other waits.
    let pods = Api::<Pod>::namespaced(env.client(), OPERATOR_NAMESPACE);
    let leases = Api::<Lease>::namespaced(env.client(), OPERATOR_NAMESPACE);
    let leader = common::wait("two operator pods, one of them leading", || async {
        let running: Vec<String> = pods
            .list(&ListParams::default().labels(OPERATOR_SELECTOR))
            .await?
            .items
            .into_iter()
            .filter(|p| common::phase(p) == "Running")
            .filter_map(|p| p.metadata.name)
            .collect();
        let lease = leases.get_opt(archway::controller::LEASE_NAME).await?;
        let holder = lease.and_then(|l| l.spec?.holder_identity).unwrap_or_default();
        Ok((running.len() == 2 && running.contains(&holder)).then_some(holder))
    })
    .await?;
    // The two started together, and only one ever led: a replica that finds it lost the Lease exits
    // and restarts, so no restart after a Lease's duration (6 s in deploy/dev) means no double leader.
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    for pod in pods.list(&ListParams::default().labels(OPERATOR_SELECTOR)).await?.items {
        let statuses = pod.status.and_then(|s| s.container_statuses).unwrap_or_default();
        let restarts: i32 = statuses.iter().map(|c| c.restart_count).sum();
        assert_eq!(restarts, 0, "{:?} restarted: two replicas led at once", pod.metadata.name);
    }
    // Each says in its metrics and on /healthz (alive either way) whether it leads.
    for pod in pods.list(&ListParams::default().labels(OPERATOR_SELECTOR)).await?.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ip = pod.status.and_then(|s| s.pod_ip).context("operator pod IP")?;
        let http = reqwest::Client::builder().no_proxy().build()?;
        let metrics = http.get(format!("http://{ip}:8080/metrics")).send().await?.text().await?;
        let want = format!("archway_leading {}", u8::from(name == leader));
        assert!(metrics.lines().any(|l| l == want), "{name}: no {want:?} in its metrics:\n{metrics}");
        let health = http.get(format!("http://{ip}:8080/healthz")).send().await?;
        assert!(health.status().is_success(), "{name}: /healthz {}", health.status());
        let health = health.text().await?;
        let want = if name == leader { "ok: leading" } else { "ok: standby" };
        assert!(health.starts_with(want), "{name}: /healthz says {health:?}, not {want:?}");
    }

    // The plain installation (no dev overlay) is valid for the apiserver as well.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("repository")?;
    let out = tokio::process::Command::new(env.control_plane.bin_dir.join("kubectl"))
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args(["apply", "--dry-run=server", "-k"])
        .arg(repo.join("deploy"))
        .output()
        .await?;
    assert!(
        out.status.success(),
        "kubectl apply --dry-run=server -k deploy/: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    env.remove().await;
    Ok(())
}

/// What the authorizer answers for the operator's ServiceAccount, asked by the admin.
async fn review(
    env: &Env,
    verb: &str,
    group: &str,
    resource: &str,
    subresource: &str,
    namespace: &str,
) -> Result<SubjectAccessReviewStatus> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{SERVICE_ACCOUNT}")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{OPERATOR_NAMESPACE}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource: (!subresource.is_empty()).then(|| subresource.into()),
                namespace: (!namespace.is_empty()).then(|| namespace.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(env.client()).create(&PostParams::default(), &review).await?;
    answer.status.context("a SubjectAccessReview without status")
}
