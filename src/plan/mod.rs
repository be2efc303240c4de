//! The pure core of the build controller: from a `MultiArchBuild`, the cluster's nodes and the Jobs it
//! owns, decide what should exist and what the status is. No client, no clock, no I/O.

pub mod decide;
pub mod inputs;
pub mod job;
pub mod placement;
pub mod status;
