//! The `assemble` builder: the image of a Dockerfile that runs no program of the target platform (no
//! `RUN`), made without a builder, qemu or privileges. Each platform's image is the base image's child for
//! that platform, plus the layer of the Dockerfile's `COPY`/`ADD`s (the same for every platform whose
//! base agrees where it writes) and an edited config.
//!
//! Pure parts: [`dockerfile`] reads a Dockerfile into a [`Recipe`] (or says which line needs a
//! builder), [`layer`] makes the reproducible layer of a recipe's copies from a context directory,
//! [`resolve`] follows symlinks inside the image's root as buildah does, [`config`] edits the base
//! image's config.

pub mod base_files;
pub mod config;
pub mod dockerfile;
pub mod layer;
pub mod resolve;
pub mod run;
mod substitute;

use std::collections::{BTreeMap, BTreeSet};

/// What a RUN-less Dockerfile does for one platform, with every `ARG`/`ENV` reference substituted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipe {
    /// The image of `FROM`.
    pub base: Base,
    /// The `COPY`/`ADD`s of local files, in Dockerfile order.
    pub copies: Vec<CopyStep>,
    /// What the Dockerfile sets in the image's config (`ENV`, `LABEL`, `WORKDIR`, ...).
    pub config: ConfigEdits,
    /// Every `WORKDIR`, in Dockerfile order: each makes its directory, as BuildKit's does, not only the
    /// last (which [`ConfigEdits::working_dir`] holds).
    pub workdirs: Vec<WorkdirStep>,
    /// One entry per instruction that changes the image, as `docker history` shows it: the
    /// instruction's text and whether it made a layer (a `COPY`/`ADD`).
    pub history: Vec<HistoryStep>,
}

/// The image of `FROM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`: no base layers, an empty config.
    Scratch,
    /// `FROM <reference>`, substituted (`FROM ${BASE_IMAGE}`). `platform` is `FROM --platform=...`
    /// when given (substituted, for example `$BUILDPLATFORM`), else the platform being built.
    Image { reference: String, platform: Option<String> },
}

/// One `COPY` or `ADD` of files of the build context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyStep {
    /// 1-based line of the instruction in the Dockerfile, for messages.
    pub line: usize,
    /// Sources, relative to the context root, as written (may hold `*`, `?` and `[...]` wildcards;
    /// a leading `/` or `./` is the context root).
    pub sources: Vec<String>,
    /// Destination as written, made absolute against the `WORKDIR` in effect (a trailing `/` kept:
    /// it means "into this directory").
    pub dest: String,
    /// `--chown=UID[:GID]`, numeric only (a name needs the base image's `/etc/passwd`: builder).
    pub chown: Option<Owner>,
    /// `--chmod=OCTAL`.
    pub chmod: Option<u32>,
    /// `ADD` rather than `COPY`: a source that is a tar archive needs a builder (extracted by `ADD`).
    pub add: bool,
}

/// One `WORKDIR`: the directory it makes, owned by the `USER` then in effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkdirStep {
    /// As [`ConfigEdits::working_dir`]: absolute, or relative to the base image's `WorkingDir`.
    pub dir: String,
    /// The Dockerfile's `USER` at that point, substituted; `None`: the base image's.
    pub user: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// What the Dockerfile sets in the image config, applied on top of the base image's config. `None`
/// (or empty) means "as the base image has it".
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConfigEdits {
    /// `ENV`s in order; a later one of the same name replaces the earlier (and the base's).
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    /// Absolute, or relative to the base image's `WorkingDir` (see `config::resolve_path`).
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `80/tcp` form.
    pub exposed_ports: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    pub entrypoint: Option<Vec<String>>,
    /// `Some(None)`: reset to nothing (an `ENTRYPOINT` without a later `CMD` clears the base's `Cmd`).
    pub cmd: Option<Option<Vec<String>>>,
    pub stop_signal: Option<String>,
    /// The config's `Healthcheck` object (`Test`, `Interval`, ... as Docker writes it).
    pub healthcheck: Option<serde_json::Value>,
    pub shell: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryStep {
    pub created_by: String,
    pub empty_layer: bool,
}

/// Why a Dockerfile needs a real builder: "RUN at line 6 needs a builder".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} at line {line} needs a builder")]
pub struct NeedsBuilder {
    pub line: usize,
    /// The instruction or feature, e.g. `RUN`, `COPY --from`, `ADD of a URL`, `a second FROM`.
    pub what: String,
}
