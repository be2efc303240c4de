//! A shared cluster: the right to create a MultiArchBuild gives nothing beyond it. A git source's
//! credentials reach only the host of its URL, and only a Secret made for git is handed to git.

mod common;

use std::sync::{Arc, Mutex};

use anyhow::{Result, ensure};
use common::blog::{NS, api, blog_build, jobs_of, start, wait_status};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
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
        http_server(|_| "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n".into()).await?;
    let target = git_host.clone();
    let (redirect_host, _) =
        http_server(move |path| format!("HTTP/1.1 302 Found\r\nLocation: http://{target}{path}\r\n")).await?;
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

/// An HTTP server on loopback that answers every request with `answer(path)` (status line and
/// headers) and an empty body; returns its `host:port` and the request heads it received.
async fn http_server(
    answer: impl Fn(&str) -> String + Send + Sync + 'static,
) -> Result<(String, Arc<Mutex<Vec<String>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
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
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                if let Ok(mut seen) = record.lock() {
                    seen.push(head);
                }
                let response = format!("{}Content-Length: 0\r\nConnection: close\r\n\r\n", answer(&path));
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok((host, seen))
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
