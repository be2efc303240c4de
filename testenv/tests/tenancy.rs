//! A shared cluster: the right to create a MultiArchBuild gives nothing beyond it. A git source's
//! credentials reach only the host of its URL, and only a Secret made for git is handed to git; a
//! registry's answers are read within bounds, and its token realm gets credentials only where allowed.

mod common;

use std::sync::{Arc, Mutex};

use anyhow::{Result, ensure};
use archway::registry::{Registry, RegistryOptions, RetryPolicy};
use common::blog::{NS, api, blog_build, jobs_of, start, wait_status};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_credentials_go_only_to_the_git_host_and_only_from_git_secrets() -> Result<()> {
    let (env, client) = start("tenancy").await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let secret = |name: &str, type_: &str| Secret {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        type_: Some(type_.into()),
        string_data: Some([("username".into(), "blog".into()), ("password".into(), "s3cret".into())].into()),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret("git-credentials", "kubernetes.io/basic-auth")).await?;
    secrets.create(&PostParams::default(), &secret("database", "Opaque")).await?;

    // A git server that wants a password, and one that only redirects to it.
    let (git_host, seen) =
        http_server("127.0.0.1", |_| empty("401 Unauthorized", "WWW-Authenticate: Basic realm=\"git\"\r\n")).await?;
    let target = git_host.clone();
    let (redirect_host, _) = http_server("127.0.0.1", move |head| {
        empty("302 Found", &format!("Location: http://{target}{}\r\n", path(head)))
    })
    .await?;
    let git_build = |name: &str, host: &str, secret: &str| {
        let mut build = blog_build(&env, name, &["linux/amd64"], "Dockerfile");
        build["spec"]["source"] = json!({"git": {
            "url": format!("http://{host}/blog.git"), "revision": "main", "secretRef": {"name": secret},
        }});
        build
    };
    let resolve_failed = |s: &serde_json::Value| s["source"]["message"].as_str().is_some_and(|m| !m.is_empty());

    // Another type of Secret (a database's password) is refused before any pod runs with it.
    let build = git_build("from-database", &git_host, "database");
    api(&client).patch("from-database", &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    let status = wait_status(&client, "from-database", |s| s["phase"] == "Failed").await?;
    let message = status["conditions"].to_string();
    ensure!(message.contains("spec.source.git.secretRef: Secret \\\"database\\\" is of type Opaque"), "{message}");
    ensure!(jobs_of(&client, "from-database").await?.is_empty(), "a Job ran with the database's Secret");
    ensure!(seen.lock().map(|s| s.is_empty()).unwrap_or(false), "the git server was asked");

    // The git host itself gets the credentials...
    let build = git_build("direct", &git_host, "git-credentials");
    api(&client).patch("direct", &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    wait_status(&client, "direct", resolve_failed).await?;
    let basic = format!("Authorization: Basic {}\r\n", base64_of("blog:s3cret"));
    let asked: Vec<String> = seen.lock().map(|s| s.clone()).unwrap_or_default();
    ensure!(asked.iter().any(|request| request.contains(&basic)), "no credentials sent: {asked:?}");

    // ... and a host that redirects to it sends git there without them.
    seen.lock().map(|mut s| s.clear()).unwrap_or_default();
    let build = git_build("via-redirect", &redirect_host, "git-credentials");
    api(&client).patch("via-redirect", &PatchParams::apply("test"), &Patch::Apply(&build)).await?;
    let status = wait_status(&client, "via-redirect", resolve_failed).await?;
    let asked: Vec<String> = seen.lock().map(|s| s.clone()).unwrap_or_default();
    ensure!(!asked.is_empty(), "the redirect was not followed: {}", status["source"]);
    ensure!(
        asked.iter().all(|request| !request.to_lowercase().contains("authorization:")),
        "credentials for {redirect_host} went to {git_host}: {asked:?}"
    );

    env.remove().await;
    Ok(())
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
