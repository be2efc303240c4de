//! The blog build of the seed, as the operator tests apply it: its context ConfigMap, the
//! MultiArchBuild, and waiting on its status.

use std::time::Duration;

use anyhow::{Context, Result};
use archway::api::MultiArchBuild;
use archway::plan::inputs::build_label;
use archway_testenv::env::{Env, EnvOptions};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::{TIMEOUT, wait_up_to};

pub const NS: &str = "default";

pub fn api(client: &Client) -> Api<MultiArchBuild> {
    Api::namespaced(client.clone(), NS)
}

pub fn ready_condition(status: &Value) -> Result<&Value> {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .context("no Ready condition")
}

pub fn is_ready(status: &Value) -> bool {
    status["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

pub async fn apply_and_wait(client: &Client, build: &Value, phase: &str) -> Result<Value> {
    let name = build["metadata"]["name"].as_str().context("name")?.to_string();
    api(client).patch(&name, &PatchParams::apply("test"), &Patch::Apply(build)).await?;
    wait_status(client, &name, |s| s["phase"] == phase).await
}

pub async fn wait_status(client: &Client, name: &str, done: impl Fn(&Value) -> bool) -> Result<Value> {
    wait_status_in(client, NS, name, done).await
}

/// Waits until the status of build `name` in `namespace` describes its generation and satisfies `done`.
pub async fn wait_status_in(
    client: &Client,
    namespace: &str,
    name: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_status_up_to(client, namespace, name, TIMEOUT, done).await
}

/// [`wait_status_in`], for at most `limit`.
pub async fn wait_status_up_to(
    client: &Client,
    namespace: &str,
    name: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let builds: Api<MultiArchBuild> = Api::namespaced(client.clone(), namespace);
    let found = wait_up_to(&format!("MultiArchBuild {name}"), limit, || async {
        let build = builds.get(name).await?;
        let status = serde_json::to_value(&build.status)?;
        let current = build.metadata.generation == build.status.as_ref().and_then(|s| s.observed_generation);
        Ok((current && done(&status)).then_some(status))
    })
    .await;
    match found {
        Ok(status) => Ok(status),
        Err(e) => {
            let last = builds.get(name).await.ok().and_then(|b| b.status);
            Err(e.context(format!("last status of {name}: {last:?}")))
        }
    }
}

pub async fn jobs_of(client: &Client, build: &str) -> Result<Vec<Job>> {
    let params = ListParams::default().labels(&format!("archway.dev/build={}", build_label(build)));
    Ok(Api::<Job>::namespaced(client.clone(), NS).list(&params).await?.items)
}

pub fn blog_build(env: &Env, name: &str, platforms: &[&str], dockerfile: &str) -> Value {
    json!({
        "apiVersion": "archway.dev/v1alpha1",
        "kind": "MultiArchBuild",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "source": {"configMap": {"name": "blog-context"}},
            "dockerfile": dockerfile,
            "platforms": platforms,
            "output": {"image": format!("{}/asksven/blog", env.registry.host), "tags": ["new"], "pushSecret": {"name": "registry-credentials"}},
        },
    })
}

pub async fn raw_index(env: &Env, reference: &str) -> Result<Value> {
    Ok(serde_json::from_str(&archway_testenv::baseimage::inspect_raw(&env.registry, reference).await?)?)
}

/// An environment with the operator installed (in `testenv-<name>` of the test target's tmpdir) and
/// the blog's context in it, and a client for it.
pub async fn start(name: &str) -> Result<(Env, Client)> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("testenv-{name}"));
    let env = Env::start(EnvOptions { operator: true, ..EnvOptions::new(&dir) }).await?;
    let client = env.client();
    setup(&client, &env).await?;
    Ok((env, client))
}

/// The blog's context; the operator's install made the CRD and the registry's Secret and CA.
async fn setup(client: &Client, env: &Env) -> Result<()> {
    create_context(client, env, NS).await?;
    super::wait_served(client).await
}

/// The blog's context ConfigMap `blog-context` in `namespace`.
pub async fn create_context(client: &Client, env: &Env, namespace: &str) -> Result<()> {
    let base = env.base_image.clone().context("base image")?;
    let files = [
        ("Dockerfile", format!("FROM {base}\nCOPY index.html /srv/\nRUN uname -m > /srv/arch\n")),
        ("Dockerfile.fails", format!("FROM {base}\nRUN echo about to fail && false\n")),
        (
            "Dockerfile.slow",
            format!("FROM {base}\nCOPY index.html /srv/\nRUN sleep 6 && uname -m > /srv/arch && touch /srv/slow\n"),
        ),
        ("index.html", "<h1>asksven's blog</h1>\n".to_string()),
    ];
    let context = ConfigMap {
        metadata: ObjectMeta { name: Some("blog-context".into()), ..Default::default() },
        data: Some(files.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), namespace).create(&PostParams::default(), &context).await?;
    Ok(())
}

/// The events about the MultiArchBuild `name`.
pub async fn build_events(client: &Client, namespace: &str, name: &str) -> Result<Vec<Event>> {
    let events = Api::<Event>::namespaced(client.clone(), namespace).list(&ListParams::default()).await?.items;
    let about = |e: &Event| {
        e.regarding
            .as_ref()
            .is_some_and(|r| r.kind.as_deref() == Some("MultiArchBuild") && r.name.as_deref() == Some(name))
    };
    Ok(events.into_iter().filter(about).collect())
}

/// The build's events once `done` holds of them, or as they are after 20 s.
pub async fn wait_events(client: &Client, namespace: &str, name: &str, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..40 {
        events = build_events(client, namespace, name).await.unwrap_or(events);
        if done(&events) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    events
}

pub fn notes(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{}: {}", e.reason.as_deref().unwrap_or(""), e.note.as_deref().unwrap_or("")))
        .collect()
}
