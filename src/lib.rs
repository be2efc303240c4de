//! archway: build multi-architecture images in a Kubernetes cluster and roll them out.

pub mod api;
pub mod assemble;
pub mod controller;
pub mod metrics;
pub mod plan;
pub mod platform;
pub mod registry;

/// kube and the registry client share rustls, and a process needs exactly one crypto provider:
/// ring, as kube uses it. Idempotent; an error only means a provider is installed already.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
