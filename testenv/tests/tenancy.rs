//! A shared cluster: the right to create a MultiArchBuild gives nothing beyond it. Workloads move only
//! when they name the build; a git password reaches only a host its Secret names, and only a Secret
//! made for git is handed to git; only allowed builder images run; a registry's answers are read within
//! bounds, and its token realm gets credentials only where allowed.

mod common;

use std::sync::{Arc, Mutex};

use anyhow::{Result, ensure};
use archway::registry::{Registry, RegistryOptions, RetryPolicy};
use archway_testenv::env::Env;
use common::blog::{NS, api, blog_build, jobs_of, start, wait_status};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a tenant allowed only to create and read MultiArchBuilds in its namespace tries: repointing a
/// Deployment, sending a Secret's password to a server of its own, running a builder image of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_creator_gains_nothing_beyond_the_build() -> Result<()> {
    let (env, admin) = start("tenancy").await?;
    let tenant = tenant_client(&env, &admin).await?;

    // Servers on loopback: a git host that wants a password, a mirror that redirects to it, and the
    // tenant's own listener.
    let (git_host, at_git_host) =
        http_server("127.0.0.1", |_| empty("401 Unauthorized", "WWW-Authenticate: Basic realm=\"git\"\r\n")).await?;
    let target = git_host.clone();
    let (mirror_host, _) = http_server("127.0.0.1", move |head| {
        empty("302 Found", &format!("Location: http://{target}{}\r\n", path(head)))
    })
    .await?;
    let (listener, at_listener) =
        http_server("127.0.0.1", |_| empty("401 Unauthorized", "WWW-Authenticate: Basic\r\n")).await?;

    // What the namespace holds that the tenant may not touch.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    let secret = |name: &str, type_: &str, hosts: Option<&str>| Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: hosts.map(|h| [("archway.dev/git-hosts".to_string(), h.to_string())].into()),
            ..Default::default()
        },
        type_: Some(type_.into()),
        string_data: Some([("username".into(), "blog".into()), ("password".into(), "s3cret".into())].into()),
        ..Default::default()
    };
    let basic_auth = "kubernetes.io/basic-auth";
    secrets.create(&PostParams::default(), &secret("git-credentials", basic_auth, Some(&git_host))).await?;
    secrets.create(&PostParams::default(), &secret("mirror-credentials", basic_auth, Some(&mirror_host))).await?;
    secrets.create(&PostParams::default(), &secret("database", "Opaque", None)).await?;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NS);
    let payments = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "payments"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "payments"}}, "template": {
            "metadata": {"labels": {"app": "payments"}},
            "spec": {"containers": [{"name": "web", "image": format!("{}/asksven/blog:new", env.registry.host)}]},
        }},
    });
    deployments.patch("payments", &PatchParams::apply("owner"), &Patch::Apply(&payments)).await?;
    let before = deployments.get("payments").await?;

    // The premise: on its own, the tenant can neither change the Deployment nor read the Secrets.
    fn denied<T>(result: Result<T, kube::Error>) -> bool {
        matches!(result, Err(kube::Error::Api(e)) if e.code == 403)
    }
    let as_tenant: Api<Deployment> = Api::namespaced(tenant.clone(), NS);
    ensure!(denied(as_tenant.patch("payments", &PatchParams::apply("t"), &Patch::Apply(&payments)).await));
    ensure!(denied(Api::<Secret>::namespaced(tenant.clone(), NS).get("git-credentials").await));

    let builds = api(&tenant);
    let apply = |name: &'static str, build: serde_json::Value| {
        let builds = builds.clone();
        async move { builds.patch(name, &PatchParams::apply("tenant"), &Patch::Apply(&build)).await }
    };
    let git_build = |name: &str, host: &str, secret: &str| {
        let mut build = blog_build(&env, name, &["linux/amd64"], "Dockerfile");
        build["spec"]["source"] = json!({"git": {
            "url": format!("http://{host}/blog.git"), "revision": "main", "secretRef": {"name": secret},
        }});
        build
    };
    let failed_saying = |name: &'static str, says: String| {
        let client = admin.clone();
        async move {
            let status = wait_status(&client, name, |s| s["phase"] == "Failed").await?;
            let message = status["conditions"].to_string().replace("\\\"", "\"");
            ensure!(message.contains(&says), "{name}: {message}");
            ensure!(jobs_of(&client, name).await?.is_empty(), "{name}: a Job was created");
            Ok(())
        }
    };

    // Repointing a Deployment that does not name the build: built, published, and left alone.
    let mut repoint = blog_build(&env, "repoint", &["linux/amd64"], "Dockerfile");
    repoint["spec"]["output"]["tags"] = json!(["repoint"]);
    repoint["spec"]["rollout"] = json!({"targets": [{"kind": "Deployment", "name": "payments"}]});
    apply("repoint", repoint).await?;
    let status = wait_status(&admin, "repoint", |s| s["targets"][0]["state"] == "Blocked").await?;
    let message = status["targets"][0]["message"].as_str().unwrap_or_default();
    ensure!(message.contains("add the annotation archway.dev/rollout-from: repoint"), "{message}");
    let after = deployments.get("payments").await?;
    ensure!(after.metadata.generation == before.metadata.generation, "the Deployment was changed");

    // Sending a password to its own listener, or another type of Secret anywhere: refused, no pod.
    apply("exfiltrate", git_build("exfiltrate", &listener, "git-credentials")).await?;
    failed_saying("exfiltrate", format!("Secret \"git-credentials\" does not name {listener}")).await?;
    apply("from-database", git_build("from-database", &git_host, "database")).await?;
    failed_saying("from-database", "Secret \"database\" is of type Opaque".into()).await?;
    ensure!(at_listener.lock().map(|s| s.is_empty()).unwrap_or(false), "the tenant's listener was called");

    // A builder image of its own (it would run privileged next to the push secret): refused.
    let mut own_builder = blog_build(&env, "own-builder", &["linux/amd64"], "Dockerfile");
    own_builder["spec"]["builder"] = json!({"kind": "buildah", "image": "attacker.example.com/root:1"});
    apply("own-builder", own_builder).await?;
    failed_saying("own-builder", "spec.builder.image: attacker.example.com/root:1 is not among".into()).await?;
    failed_saying("own-builder", "--allowed-builder-images".into()).await?;

    // What the Secrets' owner allowed still works: the git host gets the password...
    apply("direct", git_build("direct", &git_host, "git-credentials")).await?;
    let resolve_failed = |s: &serde_json::Value| s["source"]["message"].as_str().is_some_and(|m| !m.is_empty());
    wait_status(&admin, "direct", resolve_failed).await?;
    let basic = format!("Authorization: Basic {}\r\n", base64_of("blog:s3cret"));
    let asked: Vec<String> = at_git_host.lock().map(|s| s.clone()).unwrap_or_default();
    ensure!(asked.iter().any(|request| request.contains(&basic)), "no credentials sent: {asked:?}");
    // ... and a mirror's password stays with the mirror when it redirects elsewhere.
    at_git_host.lock().map(|mut s| s.clear()).unwrap_or_default();
    apply("via-mirror", git_build("via-mirror", &mirror_host, "mirror-credentials")).await?;
    let status = wait_status(&admin, "via-mirror", resolve_failed).await?;
    let asked: Vec<String> = at_git_host.lock().map(|s| s.clone()).unwrap_or_default();
    ensure!(!asked.is_empty(), "the redirect was not followed: {}", status["source"]);
    ensure!(
        asked.iter().all(|request| !request.to_lowercase().contains("authorization:")),
        "credentials for {mirror_host} went to {git_host}: {asked:?}"
    );

    env.remove().await;
    Ok(())
}

/// A client as the ServiceAccount `tenant`, which may create, change and read MultiArchBuilds in the
/// namespace and nothing else.
async fn tenant_client(env: &Env, admin: &Client) -> Result<Client> {
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "build-creator"},
        "rules": [{"apiGroups": ["archway.dev"], "resources": ["multiarchbuilds"],
                   "verbs": ["create", "patch", "get", "list", "watch"]}],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "tenant"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "build-creator"},
        "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": NS}],
    });
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "tenant"}});
    let apply = PatchParams::apply("test");
    Api::<ServiceAccount>::namespaced(admin.clone(), NS).patch("tenant", &apply, &Patch::Apply(&account)).await?;
    Api::<Role>::namespaced(admin.clone(), NS).patch("build-creator", &apply, &Patch::Apply(&role)).await?;
    Api::<RoleBinding>::namespaced(admin.clone(), NS).patch("tenant", &apply, &Patch::Apply(&binding)).await?;
    let kubeconfig = kube::config::Kubeconfig::read_from(env.kubeconfig())?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{NS}:tenant"));
    Ok(Client::try_from(config)?)
}

/// A registry a tenant names can neither make the shared operator read without bound nor have it send
/// credentials to a host of the registry's choosing; what it answers reaches status only in short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_registry_cannot_exhaust_the_operator_or_take_its_credentials() -> Result<()> {
    let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    let huge = vec![b' '; 5 << 20];
    let realm_host = Arc::new(Mutex::new(String::new()));
    // Another loopback address is another host: where a foreign token realm points.
    let (foreign_realm, asked_abroad) = http_server("127.0.0.2", |_| empty("200 OK", "")).await?;
    let realm = realm_host.clone();
    let (registry, _) = http_server("127.0.0.1", move |head| {
        let own = realm.lock().map(|h| h.clone()).unwrap_or_default();
        let challenge = |realm: &str| format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"r\"\r\n");
        let authorized = head.to_lowercase().contains("authorization: bearer good");
        match path(head) {
            "/v2/ok/manifests/v1" if authorized => {
                with_body("200 OK", "Content-Type: application/vnd.oci.image.index.v1+json\r\n", index, true)
            }
            "/v2/ok/manifests/v1" => empty("401 Unauthorized", &challenge(&format!("http://{own}/token"))),
            p if p.starts_with("/token?scope=repository%3Aok%3Apull") => {
                with_body("200 OK", "", br#"{"token":"good"}"#, true)
            }
            "/v2/declared/manifests/v1" => with_body("200 OK", "", &huge, true),
            "/v2/undeclared/manifests/v1" => with_body("200 OK", "", &huge, false),
            "/v2/abroad/manifests/v1" => empty("401 Unauthorized", &challenge(&format!("http://{own}/steal"))),
            "/v2/big-token/manifests/v1" => empty("401 Unauthorized", &challenge(&format!("http://{own}/big"))),
            p if p.starts_with("/big") => with_body("200 OK", "", &huge[..2 << 20], false),
            _ => with_body("500 Internal Server Error", "", &huge[..1 << 20], true),
        }
    })
    .await?;
    let options = RegistryOptions { insecure: true, retry: RetryPolicy::NONE, ..Default::default() };
    let client = Registry::new(options, RegistryAuth::Basic("tenant".into(), "s3cret".into()))?;
    let read = |repository: &str| {
        let reference: Reference = format!("{registry}/{repository}:v1").parse().expect("a reference");
        let client = &client;
        async move { client.fetch_manifest_raw(&reference).await }
    };
    let refused = |repository: &'static str| {
        let read = &read;
        async move {
            match read(repository).await {
                Ok(_) => anyhow::bail!("{repository}: read"),
                Err(e) => Ok(e.to_string()),
            }
        }
    };

    // The token flow works where the realm is the registry's own.
    realm_host.lock().map(|mut h| *h = registry.clone()).unwrap_or_default();
    ensure!(read("ok").await?.bytes == index, "not the index");
    // Manifests over 4 MiB, said or not, and token answers over 1 MiB are refused while read.
    for repository in ["declared", "undeclared"] {
        let message = refused(repository).await?;
        ensure!(message.contains("manifest is larger than 4194304 bytes"), "{repository}: {message}");
    }
    let message = refused("big-token").await?;
    ensure!(message.contains("token response is larger than 1048576 bytes"), "{message}");
    // A realm on another host gets nothing, and the message names the flag that would allow it.
    realm_host.lock().map(|mut h| *h = foreign_realm.clone()).unwrap_or_default();
    let message = refused("abroad").await?;
    ensure!(message.contains("--registry-token-realm"), "{message}");
    ensure!(asked_abroad.lock().map(|a| a.is_empty()).unwrap_or(false), "the foreign realm was asked");
    // A megabyte of error page is a few hundred characters of message.
    let message = refused("anything-else").await?;
    ensure!(message.contains("HTTP 500") && message.len() < 600, "{} characters: {message}", message.len());
    Ok(())
}

/// An HTTP server on `ip` (loopback) that answers every request with the bytes `answer` makes of its
/// head; returns its `host:port` and the request heads it received.
async fn http_server(
    ip: &str,
    answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
) -> Result<(String, Arc<Mutex<Vec<String>>>)> {
    let listener = TcpListener::bind((ip, 0)).await?;
    let host = listener.local_addr()?.to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (record, answer) = (seen.clone(), Arc::new(answer));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (record, answer) = (record.clone(), answer.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    // A TLS hello (a client trying HTTPS first): answer as a plain HTTP server does.
                    if head.first() == Some(&0x16) {
                        let _ = stream.write_all(&empty("400 Bad Request", "")).await;
                        return;
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let response = answer(&head);
                if let Ok(mut seen) = record.lock() {
                    seen.push(head);
                }
                let _ = stream.write_all(&response).await;
            });
        }
    });
    Ok((host, seen))
}

/// The path of a request head.
fn path(head: &str) -> &str {
    head.split_whitespace().nth(1).unwrap_or("/")
}

/// An answer with these extra header lines and no body.
fn empty(status: &str, headers: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
}

/// An answer with a body; without `Content-Length` when `declared` is false (the body then ends
/// with the connection).
fn with_body(status: &str, headers: &str, body: &[u8], declared: bool) -> Vec<u8> {
    let length = if declared { format!("Content-Length: {}\r\n", body.len()) } else { String::new() };
    let mut answer = format!("HTTP/1.1 {status}\r\n{headers}{length}Connection: close\r\n\r\n").into_bytes();
    answer.extend_from_slice(body);
    answer
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
