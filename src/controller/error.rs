//! Reconcile errors, each with a category: transient ones retry with backoff, permanent ones wait for
//! a change of the resource (and say in its status and events what to fix).

use crate::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    /// The spec, or an object it names, is wrong; retrying cannot help.
    #[error("{0}")]
    Invalid(String),
    /// Leader election failed or the Lease was lost: the process stops (and restarts as a follower).
    #[error("leader election: {0}")]
    Leader(String),
    /// This replica could not confirm that it still holds the Lease before a write that must happen
    /// once; it writes nothing and tries again (a follower's controller stops soon anyway).
    #[error("not writing: {0}")]
    Fenced(String),
}

impl Error {
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(status)) => status.code == 429 || status.code >= 500 || status.code == 409,
            Error::Kube(_) | Error::Fenced(_) => true,
            Error::Registry(e) => e.is_transient(),
            Error::Invalid(_) | Error::Leader(_) => false,
        }
    }

    /// A short label for metrics and event reasons.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Registry(_) => "registry",
            Error::Invalid(_) => "invalid",
            Error::Leader(_) => "leader",
            Error::Fenced(_) => "fenced",
        }
    }
}
