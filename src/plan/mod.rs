//! The pure core of the controller: from a `MultiArchBuild`, the cluster's nodes and the Jobs it
//! owns, decide what should exist and what the status is; then how the published image rolls out to
//! the workloads that use it. No client, no clock, no I/O.

pub mod assembly;
pub mod base_images;
pub mod build;
pub mod builder_images;
pub mod builders;
pub mod coverage;
pub mod decide;
pub mod git;
pub mod inputs;
pub mod job;
pub mod job_status;
pub mod nodes;
pub mod placement;
pub mod restrict;
pub mod rollout;
pub mod status;
pub mod validate;
pub mod workload;
