//! Leader election: with `--leader-elect`, each replica waits for the Lease in its namespace and only
//! its holder runs the controller. A holder that loses the Lease (the apiserver unreachable for longer
//! than the Lease lasts) stops at once, as controller-runtime's managers do, and is restarted as a
//! follower; on a shutdown signal it releases the Lease, so a follower takes over without waiting.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tracing::info;

use super::error::Error;

/// The Lease's name in the operator's namespace (deploy/base/rbac.yaml grants it).
pub const LEASE_NAME: &str = "archway-operator";

#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    /// Who this replica is in the Lease's `holderIdentity`: its pod name.
    pub identity: String,
    pub lease_duration: Duration,
}

/// Runs `work` while this replica holds the Lease; an error when the Lease is lost first.
pub async fn while_leading<F: Future<Output = ()>>(client: Client, election: &Election, work: F) -> Result<(), Error> {
    let lost = |e: kube_lease_manager::LeaseManagerError| Error::Leader(e.to_string());
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.lease_duration.as_secs().max(2))
        .with_grace(election.lease_duration.as_secs().max(2) / 3)
        // Each replica applies the Lease as a field manager of its own (the library's default, by identity):
        // with one shared manager, two replicas starting together both "won" the same Lease.
        .build()
        .await
        .map_err(lost)?;
    let (mut leading, task) = manager.watch().await;
    info!(lease = LEASE_NAME, identity = election.identity, "waiting to lead");
    while !*leading.borrow_and_update() {
        leading.changed().await.map_err(|e| Error::Leader(e.to_string()))?;
    }
    info!(lease = LEASE_NAME, identity = election.identity, "leading");
    let outcome = tokio::select! {
        () = work => Ok(()),
        _ = async { while leading.changed().await.is_ok() && *leading.borrow_and_update() {} } => {
            Err(Error::Leader(format!("lost the Lease {LEASE_NAME}; stopping so that one replica leads")))
        }
    };
    // Closing the channel makes the manager release the Lease.
    drop(leading);
    let _ = task.await;
    outcome
}

/// The check before a write that must happen once or not on stale knowledge (a build Job created or
/// deleted, the index push, a workload patch): this replica holds the Lease, renewed less than its
/// duration ago by the wall clock. A leader that was paused past its Lease (a stopped process, a frozen
/// VM, a partition) learns it here, before writing, rather than after the new leader has written too.
/// The Lease is looked at in a watch of it: a copy the watch has not refreshed is only older, never a
/// later renewal, so when it says the Lease is held, it is. Only when it does not (not listed yet, run
/// out, another holder) is the apiserver asked. Without leader election there is nothing to check.
pub struct Fence {
    leases: Option<Watched>,
}

struct Watched {
    api: Api<Lease>,
    store: Store<Lease>,
    lease: ObjectRef<Lease>,
    identity: String,
    /// Fills `store` for as long as the fence lives.
    watch: tokio::task::JoinHandle<()>,
}

impl Fence {
    /// Starts watching the Lease of `election`'s namespace with `watches`; `requests` asks for it.
    pub fn start(watches: Client, requests: Client, election: Option<&Election>) -> Fence {
        let leases = election.map(|election| {
            let one = watcher::Config::default().fields(&format!("metadata.name={LEASE_NAME}"));
            let (store, writer) = reflector::store();
            let watched = watcher(Api::<Lease>::namespaced(watches, &election.namespace), one);
            let watch = tokio::spawn(reflector::reflector(writer, watched).default_backoff().for_each(|_| async {}));
            Watched {
                api: Api::namespaced(requests, &election.namespace),
                store,
                lease: ObjectRef::new(LEASE_NAME).within(&election.namespace),
                identity: election.identity.clone(),
                watch,
            }
        });
        Fence { leases }
    }

    pub async fn check(&self) -> Result<(), Error> {
        let Some(Watched { api, store, lease, identity, .. }) = &self.leases else { return Ok(()) };
        if store.get(lease).is_some_and(|lease| holds(&lease, identity, Timestamp::now())) {
            return Ok(());
        }
        match api.get_opt(LEASE_NAME).await? {
            Some(lease) if holds(&lease, identity, Timestamp::now()) => Ok(()),
            _ => Err(Error::Fenced(format!("{identity} does not hold the Lease {LEASE_NAME} now"))),
        }
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        if let Some(watched) = &self.leases {
            watched.watch.abort();
        }
    }
}

/// Whether `identity` holds `lease` at `now`: it is the holder, and the last renewal plus the Lease's
/// duration is still ahead.
pub fn holds(lease: &Lease, identity: &str, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return false };
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else { return false };
    let until = renewed.0.checked_add(SignedDuration::from_secs(i64::from(seconds)));
    spec.holder_identity.as_deref() == Some(identity) && until.is_ok_and(|until| until > now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: Option<&str>, renewed: Option<&str>, seconds: Option<i32>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                renew_time: renewed.map(|t| MicroTime(t.parse().unwrap())),
                lease_duration_seconds: seconds,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_holder_of_a_live_lease_holds_it() {
        let now: Timestamp = "2026-12-03T12:00:10Z".parse().unwrap();
        let renewed = Some("2026-12-03T12:00:00Z");
        assert!(holds(&lease(Some("a"), renewed, Some(15)), "a", now));
        assert!(!holds(&lease(Some("a"), renewed, Some(15)), "b", now));
        // Run out: renewed 10 s ago with a 6 s Lease, or exactly at its end.
        assert!(!holds(&lease(Some("a"), renewed, Some(6)), "a", now));
        assert!(!holds(&lease(Some("a"), renewed, Some(10)), "a", now));
        // Released or never renewed.
        assert!(!holds(&lease(None, renewed, Some(15)), "a", now));
        assert!(!holds(&lease(Some("a"), None, Some(15)), "a", now));
        assert!(!holds(&Lease::default(), "a", now));
    }
}
