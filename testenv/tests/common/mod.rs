//! Helpers shared by the end-to-end tests of the local environment.
// Each test binary uses a different subset of these.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::Value;

/// How long a test waits for one thing to happen.
pub const TIMEOUT: Duration = Duration::from_secs(120);

pub fn meta(name: &str) -> ObjectMeta {
    ObjectMeta { name: Some(name.into()), ..Default::default() }
}

pub fn pod(value: Value) -> Result<Pod> {
    Ok(serde_json::from_value(value)?)
}

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

pub async fn run_to_end(pods: &Api<Pod>, pod: Pod) -> Result<Pod> {
    let name = pod.metadata.name.clone().context("name")?;
    pods.create(&PostParams::default(), &pod).await?;
    wait(&format!("pod {name} to end"), || async {
        let pod = pods.get(&name).await?;
        Ok(matches!(phase(&pod), "Succeeded" | "Failed").then_some(pod))
    })
    .await
}

pub async fn wait_phase(pods: &Api<Pod>, name: &str, want: &str) -> Result<Pod> {
    wait(&format!("pod {name} {want}"), || async {
        let pod = pods.get(name).await?;
        Ok((phase(&pod) == want).then_some(pod))
    })
    .await
}

pub fn terminated<'a>(pod: &'a Pod, container: &str) -> Result<&'a ContainerStateTerminated> {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).context("container statuses")?;
    let status = statuses.iter().find(|c| c.name == container).context("container status")?;
    status.state.as_ref().and_then(|s| s.terminated.as_ref()).with_context(|| format!("{status:?} not terminated"))
}

/// Polls `probe` until it yields a value, for at most [`TIMEOUT`]; a probe error ends the wait.
pub async fn wait<T, F, Fut>(what: &str, probe: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await.with_context(|| format!("waiting for {what}"))? {
            return Ok(value);
        }
        if start.elapsed() > TIMEOUT {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
