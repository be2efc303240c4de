//! archway: build multi-architecture images in a Kubernetes cluster and roll them out.

pub mod api;
pub mod plan;
pub mod platform;
pub mod registry;
