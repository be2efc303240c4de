//! Leader election against the real apiserver: replicas that start at the same moment (a rollout, a
//! Deployment of two created at once) agree on one leader.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use archway::controller::{Election, while_leading};
use archway_testenv::env::{Env, EnvOptions};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_start_together_elect_one_leader() -> Result<()> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("testenv-leader-election");
    let env = Env::start(EnvOptions { nodes: false, base_image: false, ..EnvOptions::new(&dir) }).await?;
    let client = env.client();
    // Each round a fresh namespace, so a fresh Lease for two replicas to race for.
    for round in 0..20 {
        let namespace = format!("race-{round}");
        let object: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &object).await?;
        let leaders = Arc::new(AtomicUsize::new(0));
        let replicas: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|identity| {
                let election = Election {
                    namespace: namespace.clone(),
                    identity: format!("replica-{identity}"),
                    lease_duration: Duration::from_secs(10),
                };
                let (client, leaders) = (client.clone(), leaders.clone());
                tokio::spawn(async move {
                    let work = async {
                        leaders.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<()>().await
                    };
                    while_leading(client, &election, work).await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let led = leaders.load(Ordering::SeqCst);
        for replica in replicas {
            replica.abort();
        }
        assert_eq!(led, 1, "round {round}: {led} replicas led at once");
    }
    env.remove().await;
    Ok(())
}
