//! The observed state of a `MultiArchBuild`, written by the operator only (status subresource).
//! Follows kstatus conventions: `observedGeneration` and the `Ready`, `Reconciling` and `Stalled`
//! conditions, so Flux, Helm 4, kpt and Argo CD (with `deploy/argocd`) tell busy from failed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::{BuildTool, WorkloadKind};

/// Condition types that archway sets on a `MultiArchBuild`.
pub mod condition {
    /// The image index is pushed, verified and, when `spec.rollout` is set, rolled out.
    pub const READY: &str = "Ready";
    /// At least one platform's build is running or waiting for a node.
    pub const BUILDING: &str = "Building";
    /// The image index is pushed under every tag and verified.
    pub const PUBLISHED: &str = "Published";
    /// Every rollout target runs the image's digest.
    pub const ROLLED_OUT: &str = "RolledOut";
    /// The index is published without some platforms (`spec.publish.policy: AvailablePlatforms`); the
    /// message names them and why. Present only while that is so.
    pub const DEGRADED: &str = "Degraded";
    /// kstatus: the operator is working towards Ready (building, publishing or rolling out); the reason
    /// names the step.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: the build cannot go on without a change (an invalid spec, a failed build, a blocked
    /// rollout); the reason and message say what to change.
    pub const STALLED: &str = "Stalled";
}

/// The observed state of a `MultiArchBuild`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MultiArchBuildStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled, Building, Published and RolledOut.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Summary of the build: Pending, Building, Publishing, Ready or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BuildPhase>,
    /// The platforms of `platforms` in short (`amd64,arm64,arm/v7`; `linux/` left out), for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_summary: Option<String>,
    /// One entry per platform being built.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["platform".into()]))]
    pub platforms: Vec<PlatformStatus>,
    /// The pushed multi-arch image by digest, `<spec.output.image>@sha256:<index digest>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The value of the annotation `archway.dev/rebuild-requested-at` that `image` was built for: a
    /// rebuild request is handled once every platform was built again for it and the index published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_rebuild_at: Option<String>,
    /// The commit a git source builds, and how it was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceStatus>,
    /// The base images of the Dockerfile (its `FROM`s, with the build args), each by the digest every
    /// platform's build takes its image from: one digest per base for all platforms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["image".into()]))]
    pub base_images: Vec<BaseImageStatus>,
    /// One entry per `spec.rollout.targets` workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["kind".into(), "name".into()]))]
    pub targets: Vec<TargetStatus>,
}

/// The revision of a git source, resolved to the commit that every platform builds.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// `spec.source.git.revision` as resolved.
    pub revision: String,
    /// The commit every platform's build checks out, and the index's `org.opencontainers.image.revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// When the revision was resolved to `commit` (the start of the next `pollInterval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Time>,
    /// The `metadata.generation` it was resolved for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// What was resolved: a hash of the URL, revision, generation and rebuild request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The Job that resolves it (or did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Why it is not resolved, or why the last poll failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The Dockerfile at `commit`, as the resolve Job read it: what `baseImages` are read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<SourceDockerfile>,
}

/// A git source's Dockerfile at one commit. Kept in status rather than in the operator's memory: the
/// status is the record of a build, and an operator that restarts must not need a pod with the
/// build's git credentials to learn it again (nor could it, for a branch that moved since). Its
/// compact form is at most what a termination message holds (4 KiB), written once per resolution.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SourceDockerfile {
    /// Its path in the repository: `spec.source.git.contextDir` and `spec.dockerfile`.
    pub path: String,
    /// The commit it was read at.
    pub commit: String,
    /// Its content, gzip-compressed and base64-encoded; absent when it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip: Option<String>,
    /// The commit has no file at `path`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
    /// Why `gzip` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The rollout of one workload to the published image.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// Kind of the workload.
    pub kind: WorkloadKind,
    /// Name of the workload.
    pub name: String,
    /// Pending, Blocked, Progressing, RolledOut or Stalled.
    #[serde(default)]
    pub state: TargetState,
    /// The containers archway set to `image`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
    /// The image the workload was moved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When archway last changed the workload: the start of its rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
    /// Platforms archway restricted the workload's nodes to (`restrictToCoveredArchitectures`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restricted_to: Vec<String>,
    /// What happens, or what to fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where the rollout of one workload stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TargetState {
    /// Nothing published yet.
    #[default]
    Pending,
    /// Not patched: the workload is missing, does not use the image, or could land on a node the
    /// image does not cover. `message` says which; a change to the workload or the build is needed.
    Blocked,
    /// Patched; the workload's controller replaces its pods.
    Progressing,
    /// Every pod runs the published image.
    RolledOut,
    /// The rollout made no progress within its deadline; `message` has the workload's reason.
    Stalled,
}

/// Summary of a build, shown by `kubectl get mab`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BuildPhase {
    /// Accepted, nothing started yet.
    #[default]
    Pending,
    /// Platform builds are running or waiting for a node.
    Building,
    /// Every platform is built; the image index is being pushed and verified.
    Publishing,
    /// The index is published; the rollout targets are moving to it.
    RollingOut,
    /// The image index is pushed and verified (and rolled out, when asked).
    Ready,
    /// A platform build failed after its retries, the spec cannot be built, or a rollout target is
    /// blocked or stalled.
    Failed,
}

/// How a platform's image is built.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BuildMode {
    /// On a node whose CPU runs the platform's code.
    Native,
    /// Under qemu-user-static on a node of another architecture.
    Emulated,
    /// No code of the platform runs: the image is assembled from the base image's child and the
    /// copied files (builder `assemble`), on any node.
    Assembled,
}

/// Progress of one platform's build.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PlatformPhase {
    /// Not started: its build Job is created, or about to be, and no pod of it is on a node yet.
    #[default]
    Pending,
    /// Waiting for a node that can build it (for example `placement: native` and no such node is Ready).
    Waiting,
    /// Its nodes run as many builds as `--max-builds-per-node` allows; it starts when one ends.
    Queued,
    /// The build Job's pod is on a node (`node`, `startedAt` set).
    Building,
    /// Built and pushed; `digest` is set.
    Succeeded,
    /// Failed after all retries; `message` says why.
    Failed,
}

/// A base image (a `FROM` of the Dockerfile, with its build args substituted) and its digest.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BaseImageStatus {
    /// As the Dockerfile names it, e.g. `busybox:1.36`. Where a git source's Dockerfile could not be
    /// read, its path in the repository (and `message` says why no base image is pinned).
    pub image: String,
    /// `sha256:...`; absent when it could not be read (then `message` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The build of one platform.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlatformStatus {
    /// The platform as written in `spec.platforms` (or found on the nodes for `auto`), e.g. `linux/arm/v7`.
    pub platform: String,
    /// Whether the build runs natively or under emulation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<BuildMode>,
    /// The builder that runs it: `buildah` or `buildkit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<BuildTool>,
    /// Why this builder or mode was chosen where another was preferred: which builder image has no
    /// image for which nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_reason: Option<String>,
    /// Node the build runs or ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Name of the build Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Hash of this platform's build inputs. An entry whose inputs are the current ones and that
    /// Succeeded (or Failed) is the record of that build, whatever happened to its Job and pods since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// Progress: Pending, Waiting, Building, Succeeded or Failed.
    #[serde(default)]
    pub phase: PlatformPhase,
    /// Digest of the platform's image manifest, `sha256:...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// When its build Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the build finished, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Build pods that reached a node so far (each retry is a new pod).
    #[serde(default)]
    pub attempts: i32,
    /// The base images this platform's build uses, each by the digest of its image for the platform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_images: Vec<BaseImageStatus>,
    /// Since when it has waited for a node or a build slot (`Waiting`, `Queued`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Time>,
    /// Human-readable detail, such as why the build failed or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
