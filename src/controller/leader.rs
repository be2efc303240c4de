//! Leader election: with `--leader-elect`, each replica waits for the Lease in its namespace and only
//! its holder runs the controller. A holder that loses the Lease (the apiserver unreachable for longer
//! than the Lease lasts) stops at once, as controller-runtime's managers do, and is restarted as a
//! follower; on a shutdown signal it releases the Lease, so a follower takes over without waiting.

use std::future::Future;
use std::time::Duration;

use kube::Client;
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
