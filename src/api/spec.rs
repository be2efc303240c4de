//! The desired state of a `MultiArchBuild`: what to build, for which platforms, where to push it and
//! which workloads to roll out. Doc comments here become the CRD's descriptions (`kubectl explain`).
//! Rules that the apiserver enforces live beside the fields they check, in [`rules`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::core::{Message, Reason, Rule};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::{BuildPhase, MultiArchBuildStatus};

/// Build one container image for several CPU architectures inside the cluster, push it as a
/// multi-arch image (an OCI image index) and roll the named workloads out to its digest.
// clippy reads the repeated `type_ = "string"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "archway.dev",
    version = "v1alpha1",
    kind = "MultiArchBuild",
    namespaced,
    shortname = "mab",
    category = "archway",
    status = "MultiArchBuildStatus",
    derive = "PartialEq",
    doc = "A multi-architecture image build: sources and platforms in, one verified image index out.",
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#),
    printcolumn(name = "Platforms", type_ = "string", json_path = ".status.platformSummary"),
    printcolumn(name = "Image", type_ = "string", json_path = ".status.image"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", priority = 1),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#,
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MultiArchBuildSpec {
    /// Where the build context comes from: exactly one of `git` or `configMap`.
    pub source: Source,

    /// Path of the Dockerfile inside the build context, relative to it (default `Dockerfile`).
    #[serde(default = "default_dockerfile")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = rules::relative_path("spec.dockerfile"))]
    #[x_kube(validation = rules::no_parent_segments("spec.dockerfile"))]
    pub dockerfile: String,

    /// Platforms to build, as `os/arch[/variant]`: linux/amd64, linux/386, linux/arm64 (= linux/arm64/v8),
    /// linux/arm/v5, linux/arm/v6, linux/arm/v7 (= linux/arm), linux/ppc64le, linux/s390x, linux/riscv64.
    /// `[auto]` alone means every platform that the cluster's nodes run.
    #[schemars(length(min = 1, max = 16), transform = rules::platform_items)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    #[x_kube(validation = rules::auto_alone())]
    #[x_kube(validation = rules::no_alias("linux/arm64", "linux/arm64/v8"))]
    #[x_kube(validation = rules::no_alias("linux/arm", "linux/arm/v7"))]
    pub platforms: Vec<String>,

    /// Build arguments (`ARG`s of the Dockerfile) passed to every platform's build.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,

    /// Build arguments for single platforms, keyed by platform (for example
    /// `linux/arm/v6: {BASE_IMAGE: arm32v6/nginx:1.15-alpine}`); they override `buildArgs`.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 16))]
    #[x_kube(validation = rules::platform_keys("spec.platformBuildArgs"))]
    pub platform_build_args: BTreeMap<String, BTreeMap<String, String>>,

    /// Where each platform is built: `auto` (a node of that architecture if one is Ready, else a
    /// qemu-enabled node), `native` (only on a node of that architecture) or `emulated` (always under qemu).
    #[serde(default)]
    pub placement: Placement,

    /// How the per-platform builds run.
    #[serde(default)]
    pub builder: BuilderSpec,

    /// Where the image is pushed.
    pub output: OutputSpec,

    /// A registry cache of the builders' layers (default: none), so that a build reuses the steps an
    /// earlier build ran with the same inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,

    /// When the index is published: once every platform is built (default), or, with
    /// `policy: AvailablePlatforms`, also with the platforms that are built when the others failed or
    /// waited longer than `waitFor`.
    #[serde(default)]
    pub publish: PublishSpec,

    /// What else builds the image again: a base image that moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<TriggersSpec>,

    /// Workloads to update to the new image's digest once it is pushed and verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
}

impl MultiArchBuild {
    /// Whether a change of what placement reads of the nodes (added, removed, Ready, cordoned, platform,
    /// emulation) can change what this build does: it is not settled at its generation (a platform may
    /// wait for a node or run on one that goes), or its platforms follow the nodes (`[auto]`). A Ready or
    /// Failed build of fixed platforms does not.
    pub fn places_on_nodes(&self) -> bool {
        let status = self.status.as_ref();
        let observed = status.and_then(|s| s.observed_generation) == self.metadata.generation;
        let settled = matches!(status.and_then(|s| s.phase), Some(BuildPhase::Ready | BuildPhase::Failed));
        !(observed && settled) || self.spec.is_auto()
    }

    /// Whether its rollout's coverage reads the nodes (any label, taint, cordon or Ready).
    pub fn covers_nodes(&self) -> bool {
        self.spec.rollout.as_ref().is_some_and(|r| !r.targets.is_empty())
    }
}

impl MultiArchBuildSpec {
    /// `platforms: [auto]`: what the cluster's nodes run.
    pub fn is_auto(&self) -> bool {
        self.platforms.iter().any(|p| p == AUTO_PLATFORM)
    }

    /// Whether the build reads the ConfigMap of this name (its context).
    pub fn names_config_map(&self, name: &str) -> bool {
        self.source.config_map.as_ref().is_some_and(|c| c.name == name)
    }

    /// Whether the build reads the Secret of this name (push or git credentials).
    pub fn names_secret(&self, name: &str) -> bool {
        let git = self.source.git.as_ref().and_then(|g| g.secret_ref.as_ref());
        [git, self.output.push_secret.as_ref()].into_iter().flatten().any(|s| s.name == name)
    }
}

/// Where the build context comes from: exactly one of `git` or `configMap`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::exactly_one_source())]
pub struct Source {
    /// A Git repository, cloned at `revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// A ConfigMap in the same namespace; each key is a file of the build context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<LocalRef>,
}

/// A Git repository that holds the build context.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// Clone URL, for example `https://github.com/asksven/blog.git`. Credentials go in `secretRef`,
    /// never in the URL (it is copied into the image's annotations and shown by `kubectl get`).
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = rules::no_url_credentials("spec.source.git.url"))]
    pub url: String,
    /// Branch, tag or full 40-character commit to build (default `main`). A branch or tag is resolved
    /// to one commit, recorded in `status.source`, which every platform builds.
    #[serde(default = "default_revision")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[^-]"))]
    pub revision: String,
    /// Directory inside the repository that is the build context (default `.`).
    #[serde(default = "default_context_dir")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = rules::relative_path("spec.source.git.contextDir"))]
    #[x_kube(validation = rules::no_parent_segments("spec.source.git.contextDir"))]
    pub context_dir: String,
    /// Secret in the same namespace with credentials for the repository
    /// (`kubernetes.io/basic-auth` or `kubernetes.io/ssh-auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalRef>,
    /// How often to look whether `revision` moved to another commit, as a duration such as `10m`; a new
    /// commit is built, published and rolled out. Unset: resolved once per change of the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = rules::positive_duration("spec.source.git.pollInterval"))]
    pub poll_interval: Option<String>,
}

impl Default for GitSource {
    fn default() -> Self {
        GitSource {
            url: String::new(),
            revision: default_revision(),
            context_dir: default_context_dir(),
            secret_ref: None,
            poll_interval: None,
        }
    }
}

/// A reference to an object in the same namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct LocalRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Where each platform is built.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// A node of the platform's own architecture if one is Ready, else a qemu-enabled node.
    #[default]
    Auto,
    /// Only a node that runs the platform's code natively; the build waits until one is Ready.
    Native,
    /// Always a qemu-enabled node, even when a native one exists.
    Emulated,
}

/// How the per-platform builds run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::image_needs_kind())]
pub struct BuilderSpec {
    /// The image builder: `auto` (default: `assemble` where the Dockerfile allows, else buildah, or
    /// BuildKit on the nodes that buildah's image does not run on), `buildah`, `buildkit` or `assemble`.
    #[serde(default)]
    pub kind: BuilderKind,
    /// Builder image to run instead of the operator's default for `kind` (`buildah` or `buildkit`); it
    /// must be one the operator's `--allowed-builder-images` allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,
    /// CPU and memory for each build pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Longest time one platform's build attempt may take, as a duration such as `90s`, `30m` or
    /// `1h30m` (default `30m`).
    #[serde(default = "default_timeout")]
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = rules::positive_duration("spec.builder.timeout"))]
    pub timeout: String,
    /// How often a failed platform build is retried before the build fails, 0 to 10 (default 2).
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: i32,
}

impl Default for BuilderSpec {
    fn default() -> Self {
        BuilderSpec {
            kind: BuilderKind::default(),
            image: None,
            resources: None,
            timeout: default_timeout(),
            retries: default_retries(),
        }
    }
}

/// The image builder that runs each platform's build.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BuilderKind {
    /// `assemble` when the Dockerfile runs nothing (a ConfigMap context whose Dockerfile has no `RUN`,
    /// ...), else buildah where its image runs, else BuildKit (the operator reads both images' platforms).
    #[default]
    Auto,
    /// buildah (daemonless, rootless-capable).
    Buildah,
    /// BuildKit's buildctl-daemonless.
    Buildkit,
    /// No builder: each platform's image is the base image's child plus the copied files, made by the
    /// operator's own image in an unprivileged pod, on any node, without qemu. Only for Dockerfiles
    /// that run nothing: one `FROM`, `COPY`/`ADD` of context files, `ARG`, `ENV`, `LABEL`, `WORKDIR`,
    /// `USER`, `EXPOSE`, `ENTRYPOINT`, `CMD`, `VOLUME`, `STOPSIGNAL`, `HEALTHCHECK`, `SHELL`.
    Assemble,
}

/// A builder that runs a build: what `kind` resolves to for one platform.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum BuildTool {
    Buildah,
    Buildkit,
    Assemble,
}

impl BuilderKind {
    /// The builders that run Dockerfiles this kind may use, the preferred first (`assemble` is chosen
    /// before these, from the Dockerfile: see `plan::assembly`).
    pub fn tools(self) -> &'static [BuildTool] {
        match self {
            BuilderKind::Auto => &[BuildTool::Buildah, BuildTool::Buildkit],
            BuilderKind::Buildah => &[BuildTool::Buildah],
            BuilderKind::Buildkit => &[BuildTool::Buildkit],
            BuilderKind::Assemble => &[BuildTool::Assemble],
        }
    }
}

impl std::fmt::Display for BuildTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BuildTool::Buildah => "buildah",
            BuildTool::Buildkit => "BuildKit",
            BuildTool::Assemble => "assemble",
        })
    }
}

/// Where the image is pushed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// Image repository to push to, without tag or digest, for example
    /// `registry.example.com/asksven/blog`.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = rules::untagged_image("spec.output.image", "put tags in spec.output.tags"))]
    #[x_kube(validation = rules::image_repository("spec.output.image"))]
    pub image: String,
    /// Tags that point to the multi-arch image (default `[latest]`).
    #[serde(default = "default_tags")]
    #[schemars(length(min = 1, max = 32), inner(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub tags: Vec<String>,
    /// Secret of type `kubernetes.io/dockerconfigjson` in the same namespace with credentials for the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_secret: Option<LocalRef>,
    /// Also push each platform's image under `<tag>-<arch><variant>` (for example `new-arm64`, `new-armv7`).
    #[serde(default)]
    pub platform_tags: bool,
    /// Talk to the registry over plain HTTP or without verifying its TLS certificate. Only for
    /// registries you trust on a network you trust.
    #[serde(default)]
    pub insecure_registry: bool,
}

impl Default for OutputSpec {
    fn default() -> Self {
        OutputSpec {
            image: String::new(),
            tags: default_tags(),
            push_secret: None,
            platform_tags: false,
            insecure_registry: false,
        }
    }
}

/// A registry cache of the builders' layers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// Image repository of the cache, without tag or digest, for example
    /// `registry.example.com/asksven/blog-cache`. Each platform has its own cache, the repository
    /// `<image>-<platform>` (`.../blog-cache-linux-arm64`, `.../blog-cache-linux-arm-v7`): buildah
    /// (`--layers --cache-from --cache-to`) pushes every step's layer there, tagged by the step's cache
    /// key; BuildKit (`--export-cache type=registry,mode=max`) its cache as the tag `buildkit`. It is
    /// pushed and pulled with `spec.output.pushSecret` (and `spec.output.insecureRegistry`), so it must
    /// be on a registry that Secret covers. `assemble` runs no step and ignores it.
    #[schemars(length(min = 1, max = 200))]
    #[x_kube(validation = rules::untagged_image("spec.cache.image", "each platform's cache is <image>-<platform>"))]
    #[x_kube(validation = rules::image_repository("spec.cache.image"))]
    pub image: String,
}

/// When the index is published.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PublishSpec {
    /// `AllPlatforms` (default): only an index of every platform. `AvailablePlatforms`: when some
    /// platforms failed or have waited for a node (or a build slot) longer than `waitFor`, an index of the
    /// built ones, with the condition `Degraded` naming the missing; the full index once they are built.
    #[serde(default)]
    pub policy: PublishPolicy,
    /// How long a platform may wait for a node before `AvailablePlatforms` publishes without it, as a
    /// duration such as `30m` (default `30m`).
    #[serde(default = "default_wait_for")]
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = rules::positive_duration("spec.publish.waitFor"))]
    pub wait_for: String,
}

impl Default for PublishSpec {
    fn default() -> Self {
        PublishSpec { policy: PublishPolicy::default(), wait_for: default_wait_for() }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PublishPolicy {
    /// An index only of every platform.
    #[default]
    AllPlatforms,
    /// Also an index of the platforms built, when the others failed or waited longer than `waitFor`.
    AvailablePlatforms,
}

/// What else builds the image again.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TriggersSpec {
    /// Look for new versions of the base images (the Dockerfile's `FROM`s) and build again the
    /// platforms whose base image changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_images: Option<BaseImageTrigger>,
}

/// How base images are followed. Each platform builds from the base image's digest recorded in
/// `status.baseImages`; without this trigger it stays until a rebuild is requested.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BaseImageTrigger {
    /// How often to look whether a base image's tag names another digest, as a duration such as `10m`
    /// (one request per tag and interval, shared by every build that uses it).
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(validation = rules::positive_duration("spec.triggers.baseImages.pollInterval"))]
    pub poll_interval: String,
}

/// Workloads to update to the new image's digest.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Workloads in the same namespace whose container image is set to `<output.image>@<digest>`.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["kind".into(), "name".into()]))]
    pub targets: Vec<RolloutTarget>,
}

/// A workload to roll out to the new image.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    /// Kind of the workload: Deployment, StatefulSet or DaemonSet.
    pub kind: WorkloadKind,
    /// Name of the workload.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Container whose image is replaced; when unset, every container whose image is `output.image`
    /// (with any tag or digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub container: Option<String>,
    /// Also restrict the workload's pods to nodes whose architecture the image covers (a node affinity
    /// on `kubernetes.io/arch`), so no pod lands where the image cannot run.
    #[serde(default)]
    pub restrict_to_covered_architectures: bool,
    /// Toleration keys to remove from the workload once one image runs everywhere, such as the taints
    /// that kept per-architecture Deployments apart.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(min = 1, max = 316)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub remove_arch_tolerations: Vec<String>,
}

/// Kind of a workload that archway can roll out.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    #[default]
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
}

/// The platform value that means "every platform the cluster's nodes run".
pub const AUTO_PLATFORM: &str = "auto";

fn default_dockerfile() -> String {
    "Dockerfile".into()
}

fn default_revision() -> String {
    "main".into()
}

fn default_context_dir() -> String {
    ".".into()
}

fn default_timeout() -> String {
    "30m".into()
}

fn default_retries() -> i32 {
    2
}

fn default_wait_for() -> String {
    "30m".into()
}

fn default_tags() -> Vec<String> {
    vec!["latest".into()]
}

/// The CEL rules of the schema. Each message names the field and what is allowed, because the
/// apiserver shows it to whoever applied the resource.
mod rules {
    use super::*;
    use crate::platform::KNOWN_PLATFORMS;

    fn msg(text: String) -> Message {
        Message::Message(text)
    }

    /// `platforms[*]`: one of the known platforms or `auto` (an `enum`, so the apiserver lists them).
    pub fn platform_items(schema: &mut schemars::Schema) {
        let allowed: Vec<&str> = std::iter::once(AUTO_PLATFORM).chain(KNOWN_PLATFORMS.iter().copied()).collect();
        if let Some(items) = schema.get_mut("items").and_then(|i| i.as_object_mut()) {
            items.insert("enum".into(), serde_json::json!(allowed));
        }
    }

    pub fn auto_alone() -> Rule {
        Rule::new(format!("!('{AUTO_PLATFORM}' in self) || size(self) == 1")).message(
            "spec.platforms: 'auto' must stand alone; list either [auto] or explicit platforms such as \
             [linux/amd64, linux/arm64]",
        )
    }

    /// Two spellings of one platform would build and push it twice.
    pub fn no_alias(short: &str, long: &str) -> Rule {
        Rule::new(format!("!('{short}' in self && '{long}' in self)"))
            .message(msg(format!(
                "spec.platforms lists {short} and {long}, which are the same platform; keep only one of them"
            )))
            .reason(Reason::FieldValueDuplicate)
    }

    pub fn platform_keys(field: &str) -> Rule {
        let quoted: Vec<String> = KNOWN_PLATFORMS.iter().map(|p| format!("'{p}'")).collect();
        Rule::new(format!("self.all(p, p in [{}])", quoted.join(", "))).message(msg(format!(
            "{field} keys must be platforms ({}); 'auto' is not allowed here",
            KNOWN_PLATFORMS.join(", ")
        )))
    }

    pub fn image_needs_kind() -> Rule {
        Rule::new("!has(self.image) || self.kind == 'buildah' || self.kind == 'buildkit'").message(
            "spec.builder.image replaces the default image of one builder: set spec.builder.kind to buildah or \
             buildkit with it",
        )
    }

    pub fn exactly_one_source() -> Rule {
        Rule::new("has(self.git) != has(self.configMap)").message(
            "spec.source must set exactly one of spec.source.git (a repository) or spec.source.configMap \
             (a ConfigMap whose keys are the context's files)",
        )
    }

    /// `https://user:token@host/...` or `https://token@host/...`; `ssh://git@host` names a user only.
    pub fn no_url_credentials(field: &str) -> Rule {
        Rule::new("!self.matches('^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*@') || self.matches('^ssh://[^/:@]*@')").message(
            msg(format!(
                "{field} must not carry credentials (user:password@ or a token before the host): put them in a \
                 kubernetes.io/basic-auth Secret and name it in spec.source.git.secretRef"
            )),
        )
    }

    pub fn relative_path(field: &str) -> Rule {
        Rule::new("!self.startsWith('/')")
            .message(msg(format!("{field} must be a path relative to the build context, not an absolute path")))
    }

    pub fn no_parent_segments(field: &str) -> Rule {
        Rule::new("!self.matches('(^|/)[.][.](/|$)')")
            .message(msg(format!("{field} must stay inside the build context: '..' path segments are not allowed")))
    }

    pub fn positive_duration(field: &str) -> Rule {
        Rule::new("self.matches('^([0-9]+(h|m|s|ms))+$') && duration(self) > duration('0s')")
            .message(msg(format!("{field} must be a positive duration such as 90s, 30m or 1h30m")))
    }

    /// `hint` says where a tag goes instead.
    pub fn untagged_image(field: &str, hint: &str) -> Rule {
        Rule::new("!self.contains('@') && !self.matches(':[^/]*$')")
            .message(msg(format!("{field} must not carry a tag or digest; {hint}")))
    }

    /// Checked only when there is no tag or digest, so that a tagged image gets one clear message.
    pub fn image_repository(field: &str) -> Rule {
        Rule::new(
            "self.contains('@') || self.matches(':[^/]*$') || \
             self.matches('^([A-Za-z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*$')",
        )
        .message(msg(format!(
            "{field} must be an image repository such as registry.example.com/team/app: an optional \
             host[:port]/ and lowercase path components"
        )))
    }
}
