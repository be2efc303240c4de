//! The pure core of the controller: from a `MultiArchBuild`, the cluster's nodes and the Jobs it
//! owns, decide what should exist and what the status is; and which nodes a rollout's image must cover.
//! No client, no clock, no I/O.

pub mod coverage;
pub mod decide;
pub mod inputs;
pub mod job;
pub mod placement;
pub mod status;
