//! Registry code, in one place: credentials from a dockerconfigjson Secret, references and digests,
//! reading manifests and configs, verifying each platform's image, and assembling and pushing the OCI
//! image index that names them.
//!
//! Pure modules (plain data in, plain data out): [`auth`], [`reference`](mod@reference), [`manifest`],
//! [`index`], [`error`] (sorting failures into transient and permanent), [`retry`] (the backoff
//! schedule). The I/O is [`client::Registry`] (timeouts, retries, plain HTTP for insecure registries)
//! over `wire` (the distribution API's requests and token flow, with bounded reads and token realms
//! checked); oci-client gives the reference and manifest types.
//!
//! Publishing: each builder pushes its platform's image to the output repository and reports the
//! digest; the operator reads each child back ([`client::Registry::fetch_child`]), checks its
//! platform ([`index::verify`]), assembles the index ([`index::assemble_index`]), and pushes it
//! under every tag ([`client::Registry::push_index`]), naming the children by digest in that same
//! repository.

pub mod auth;
pub mod client;
pub mod error;
pub mod index;
pub mod manifest;
pub mod reference;
pub mod retry;
mod untag;
mod wire;

pub use auth::{AuthError, lookup};
pub use client::{Registry, RegistryOptions};
pub use error::{Category, ErrorKind, Operation, RegistryError};
pub use index::{
    IndexError, Mismatch, VerifiedChild, assemble_index, digest_of, index_annotations, verify, verify_child,
};
pub use manifest::{ChildImage, ImageConfig, ManifestError, RawManifest};
pub use reference::{ReferenceError, Repository, mirrored, parse_digest, parse_mirror, split_host};
pub use retry::RetryPolicy;
pub use untag::Untagged;
