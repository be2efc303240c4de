//! The operator's own image, built from the top-level Dockerfile by hack/build-image.sh (what
//! `make image` runs) into an environment's registry, so that a test can run the operator from it.

use std::path::Path;

use anyhow::{Context, Result};
use tokio::process::Command;

use crate::process::run;
use crate::registry::Registry;

/// Builds the image for linux/amd64 and pushes it to `registry`; returns its reference. A release
/// build: minutes the first time, then buildah's cache mounts keep cargo's work.
pub async fn build(registry: &Registry) -> Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/build-image.sh");
    let out = run(Command::new("bash")
        .arg(&script)
        .env("ARCHWAY_REGISTRY", &registry.host)
        .env("REGISTRY_AUTH_FILE", &registry.auth_file)
        .env("ARCHWAY_REGISTRY_CERT_DIR", &registry.cert_dir))
    .await
    .context("building the operator's image (hack/build-image.sh)")?;
    out.lines().last().map(str::to_string).context("hack/build-image.sh printed no image reference")
}
