//! The build Job of one platform, as a plain value. The builder (buildah or BuildKit, see
//! `builders.rs`) builds for the platform in private storage, pushes by a tag of its own inputs, and
//! writes the pushed manifest's digest to `/dev/termination-log`, where the controller reads it.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMapVolumeSource, Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource,
    EnvVar, KeyToPath, NodeAffinity, NodeSelector, ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSpec,
    PodTemplateSpec, ResourceRequirements, SecretVolumeSource, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};

use super::base_images::pin_args;
use super::builders::{Builder, build_arg, cache_args, platform_cache};
use super::git;
use super::inputs::{BuildInputs, build_label, job_name};
use super::placement::Placed;
use crate::api::{BuildMode, BuildTool, Source};
use crate::platform::Platform;
use crate::registry::{ReferenceError, Repository, split_host};

pub const BUILD_LABEL: &str = "archway.dev/build";
pub const PLATFORM_LABEL: &str = "archway.dev/platform";
pub const INPUTS_LABEL: &str = "archway.dev/inputs";
pub const MODE_LABEL: &str = "archway.dev/mode";
/// The builder that runs the build (`buildah`, `buildkit`): what `spec.builder.kind` resolved to.
pub const BUILDER_LABEL: &str = "archway.dev/builder";
/// On the Job: why its builder or mode was chosen, when not the preferred one (see [`Placed::reason`]).
pub const PLACEMENT_REASON_ANNOTATION: &str = "archway.dev/placement-reason";
/// The container that builds; its termination message carries the pushed digest.
pub const BUILDER_CONTAINER: &str = "build";
/// On every Job archway creates and its pods: what the operator's watches select.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "archway");

const CONTEXT_DIR: &str = "/workspace/context";
const SOURCE_DIR: &str = "/workspace/source";
const AUTH_DIR: &str = "/archway/auth";
const CA_DIR: &str = "/archway/ca";
/// The build pod's annotation that holds the registry CA, mounted as `CA_DIR/ca.crt`.
pub const REGISTRY_CA_ANNOTATION: &str = "archway.dev/registry-ca";

pub const DEFAULT_BUILDAH_IMAGE: &str = "quay.io/buildah/stable:v1.40";
/// The version hack/build-buildkit.sh builds for the local environment, so both run one BuildKit.
pub const DEFAULT_BUILDKIT_IMAGE: &str = "moby/buildkit:v0.26.3-rootless";

pub const DEFAULT_GIT_IMAGE: &str = "alpine/git:2.47.2";

/// The operator's own image, which runs `archway assemble` (`--assemble-image`).
pub const DEFAULT_ASSEMBLE_IMAGE: &str = concat!("ghcr.io/archway-dev/archway:", env!("CARGO_PKG_VERSION"));

pub const DEFAULT_FINISHED_JOB_TTL_SECONDS: i32 = 3600;

/// Operator-level settings of build Jobs (flags of `archway operator`).
#[derive(Clone, Debug, PartialEq)]
pub struct BuilderConfig {
    pub buildah_image: String,
    pub buildkit_image: String,
    pub git_image: String,
    /// The image that runs `archway assemble`: the operator's own.
    pub assemble_image: String,
    /// Tolerations every build pod gets, for tainted build nodes.
    pub tolerations: Vec<Toleration>,
    /// PEM of a CA the builders trust for the registry (the operator's `--registry-ca-file`). It is
    /// public data: each build pod carries it in an annotation, so no namespace needs an object for it.
    pub registry_ca: Option<String>,
    /// How long a finished Job stays (`ttlSecondsAfterFinished`); its result is in the build's status.
    pub finished_job_ttl_seconds: i32,
    /// The `sizeLimit` of the builder's storage (`--build-storage-limit`): a build that writes more is
    /// evicted, instead of filling a small device's disk.
    pub storage_limit: Option<Quantity>,
    /// The memory (request and limit) of a native build on a node of this platform when
    /// `spec.builder.resources` names none (`--build-memory`): a Pi Zero has 512 MB, a Pi 3 1 GB.
    pub memory: BTreeMap<Platform, Quantity>,
}

impl Default for BuilderConfig {
    fn default() -> Self {
        BuilderConfig {
            buildah_image: DEFAULT_BUILDAH_IMAGE.into(),
            buildkit_image: DEFAULT_BUILDKIT_IMAGE.into(),
            git_image: DEFAULT_GIT_IMAGE.into(),
            assemble_image: DEFAULT_ASSEMBLE_IMAGE.into(),
            tolerations: Vec::new(),
            registry_ca: None,
            finished_job_ttl_seconds: DEFAULT_FINISHED_JOB_TTL_SECONDS,
            storage_limit: None,
            memory: BTreeMap::new(),
        }
    }
}

/// The tag a buildah build pushes to, so the push has a name; the index refers to it by digest.
pub fn build_tag(platform: &Platform, hash: &str) -> String {
    format!("archway-{}-{hash}", platform.slug())
}

/// Everything the Job of one platform depends on.
pub struct JobRequest<'a> {
    pub build_name: &'a str,
    pub namespace: &'a str,
    pub owner: OwnerReference,
    pub platform: &'a Platform,
    pub inputs: &'a BuildInputs,
    pub placed: &'a Placed,
    pub config: &'a BuilderConfig,
    /// `spec.builder.timeout` in seconds, already parsed.
    pub timeout_seconds: i64,
    /// `spec.cache.image`, already parsed (the inputs hold it as written).
    pub cache: Option<&'a Repository>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("spec.output.image: {0}")]
    Image(#[from] ReferenceError),
}

pub fn build_job(req: &JobRequest) -> Result<Job, JobError> {
    let (registry, _) = split_host(&req.inputs.image)?;
    let tool = req.placed.tool;
    let builder = Builder::new(tool, req.inputs.builder.image.as_deref(), req.config);
    let hash = req.inputs.hash();
    let name = job_name(req.build_name, req.platform, &hash);
    let mut labels = build_labels(req.build_name);
    labels.extend([
        (PLATFORM_LABEL.to_string(), req.platform.slug()),
        (INPUTS_LABEL.to_string(), hash.clone()),
        (MODE_LABEL.to_string(), format!("{:?}", req.placed.mode).to_lowercase()),
        (BUILDER_LABEL.to_string(), tool_label(tool).into()),
    ]);
    let (context_dir, mut init_containers, mut volumes, mut mounts) = source(req);
    let storage = EmptyDirVolumeSource { size_limit: req.config.storage_limit.clone(), ..Default::default() };
    volumes.push(Volume { name: "storage".into(), empty_dir: Some(storage), ..Default::default() });
    mounts.push(mount("storage", builder.storage_dir, false));
    if let Some(secret) = &req.inputs.push_secret {
        volumes.push(Volume {
            name: "auth".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![key_to_path(".dockerconfigjson", "config.json")]),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(mount("auth", AUTH_DIR, true));
    }
    let mut annotations = BTreeMap::new();
    if let Some(ca) = &req.config.registry_ca {
        annotations.insert(REGISTRY_CA_ANNOTATION.to_string(), ca.clone());
        volumes.push(annotation_volume("registry-ca", REGISTRY_CA_ANNOTATION, "ca.crt"));
        mounts.push(mount("registry-ca", CA_DIR, true));
    }
    let mut env = vec![
        ("ARCHWAY_PLATFORM", req.platform.to_string()),
        ("ARCHWAY_CONTEXT", context_dir),
        ("ARCHWAY_DOCKERFILE", req.inputs.dockerfile.clone()),
        ("ARCHWAY_IMAGE", req.inputs.image.clone()),
        ("ARCHWAY_INSECURE", req.inputs.insecure_registry.to_string()),
        ("ARCHWAY_REGISTRY", registry.clone()),
    ];
    if tool == BuildTool::Buildah {
        // buildah pushes to a name; BuildKit pushes by digest alone.
        env.push(("ARCHWAY_BUILD_TAG", build_tag(req.platform, &hash)));
    }
    env.extend(builder.env);
    // `assemble` runs no step, so it has nothing to cache.
    let cache = req.cache.filter(|_| tool != BuildTool::Assemble);
    if let Some(cache) = cache.filter(|c| tool == BuildTool::Buildkit && c.registry() != registry) {
        // BuildKit is configured per registry it talks to; buildah's options hold for every registry.
        env.push(("ARCHWAY_CACHE_REGISTRY", cache.registry().to_string()));
    }
    if builder.pod_security_context.is_some() {
        // An unprivileged builder's pod is unprivileged throughout: the clone runs as its user too.
        for clone in init_containers.iter_mut().flatten() {
            clone.security_context = Some(builder.security_context.clone());
        }
    }
    let (command, mut args) = match builder.script {
        Some(script) => (Some(vec!["sh".into()]), vec!["-c".to_string(), script.to_string(), "build".to_string()]),
        None => (None, vec!["assemble".to_string()]),
    };
    args.extend(cache.into_iter().flat_map(|cache| cache_args(tool, &platform_cache(cache, req.platform))));
    args.extend(req.inputs.build_args.iter().flat_map(|(k, v)| build_arg(tool, k, v)));
    args.extend(pin_args(tool, &req.inputs.base_images));
    let container = Container {
        name: BUILDER_CONTAINER.into(),
        image: Some(builder.image),
        command,
        args: Some(args),
        env: Some(
            env.into_iter().map(|(k, v)| EnvVar { name: k.into(), value: Some(v), ..Default::default() }).collect(),
        ),
        volume_mounts: Some(mounts),
        resources: resources(req),
        security_context: Some(builder.security_context),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(req.namespace.to_string()),
            labels: Some(labels.clone()),
            annotations: req
                .placed
                .reason
                .as_ref()
                .map(|r| BTreeMap::from([(PLACEMENT_REASON_ANNOTATION.into(), r.clone())])),
            owner_references: Some(vec![req.owner.clone()]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(req.inputs.builder.retries),
            active_deadline_seconds: Some(job_deadline_seconds(req.timeout_seconds, req.inputs.builder.retries)),
            ttl_seconds_after_finished: Some(req.config.finished_job_ttl_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    active_deadline_seconds: Some(req.timeout_seconds),
                    affinity: Some(Affinity {
                        node_affinity: Some(NodeAffinity {
                            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                                node_selector_terms: req.placed.node_terms.clone(),
                            }),
                            ..Default::default()
                        }),
                        pod_anti_affinity: req.placed.exclusive.then(one_build_per_node),
                        ..Default::default()
                    }),
                    tolerations: (!req.config.tolerations.is_empty()).then(|| req.config.tolerations.clone()),
                    security_context: builder.pod_security_context,
                    init_containers,
                    containers: vec![container],
                    volumes: Some(volumes),
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

/// Keeps the pod off nodes that run another build pod (of any namespace): the scheduler's guarantee of
/// `--max-builds-per-node` 1, where two reconciles place builds at the same moment.
fn one_build_per_node() -> PodAntiAffinity {
    let build_pods = LabelSelectorRequirement { key: PLATFORM_LABEL.into(), operator: "Exists".into(), values: None };
    PodAntiAffinity {
        required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
            label_selector: Some(LabelSelector { match_expressions: Some(vec![build_pods]), match_labels: None }),
            namespace_selector: Some(LabelSelector::default()),
            topology_key: "kubernetes.io/hostname".into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// `spec.builder.resources`, with the operator's memory for the node's platform where it names none.
fn resources(req: &JobRequest) -> Option<ResourceRequirements> {
    let spec = req.inputs.builder.resources.clone();
    let names_memory = |r: &ResourceRequirements| {
        [&r.requests, &r.limits].iter().any(|q| q.as_ref().is_some_and(|q| q.contains_key("memory")))
    };
    let memory = match req.placed.mode {
        BuildMode::Native => req.config.memory.get(&req.placed.host),
        BuildMode::Emulated | BuildMode::Assembled => None,
    };
    match (spec, memory) {
        (Some(spec), _) if names_memory(&spec) => Some(spec),
        (spec, Some(memory)) => {
            let mut resources = spec.unwrap_or_default();
            resources.requests.get_or_insert_with(Default::default).insert("memory".into(), memory.clone());
            resources.limits.get_or_insert_with(Default::default).insert("memory".into(), memory.clone());
            Some(resources)
        }
        (spec, None) => spec,
    }
}

/// The value of [`BUILDER_LABEL`].
pub fn tool_label(tool: BuildTool) -> &'static str {
    match tool {
        BuildTool::Buildah => "buildah",
        BuildTool::Buildkit => "buildkit",
        BuildTool::Assemble => "assemble",
    }
}

/// The labels of every Job archway creates for a build (and of its pods): what the operator's
/// watches select (`managed-by`) and what tells whose Job it is.
pub fn build_labels(build_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (BUILD_LABEL.to_string(), build_label(build_name)),
    ])
}

/// The Job's own deadline: every attempt's timeout and the Job controller's back-off between them
/// (10 s doubling, at most 6 min). It bounds a Job whose pods never start, which the pods' own
/// deadline cannot (it begins when a node starts the pod).
fn job_deadline_seconds(timeout_seconds: i64, retries: i32) -> i64 {
    let attempts = i64::from(retries.max(0)) + 1;
    let backoff: i64 = (0..attempts - 1).map(|i| (10i64 << i.min(6)).min(360)).sum();
    timeout_seconds.saturating_mul(attempts).saturating_add(backoff)
}

/// Where the context comes from: a ConfigMap mounted as it is, or a Git clone by an init container.
fn source(req: &JobRequest) -> (String, Option<Vec<Container>>, Vec<Volume>, Vec<VolumeMount>) {
    match &req.inputs.source {
        Source { git: Some(git), .. } => {
            let mut volumes =
                vec![Volume { name: "source".into(), empty_dir: Some(Default::default()), ..Default::default() }];
            volumes.extend(git::credentials_volume(git));
            // The inputs' revision is the resolved commit (see `plan::git`).
            let clone =
                git::clone_container(git, &git.revision, &req.config.git_image, mount("source", SOURCE_DIR, false));
            let context = format!("{SOURCE_DIR}/{}", git.context_dir.trim_start_matches("./"));
            (context, Some(vec![clone]), volumes, vec![mount("source", SOURCE_DIR, true)])
        }
        Source { config_map, .. } => {
            let name = config_map.as_ref().map(|c| c.name.clone()).unwrap_or_default();
            let volumes = vec![config_map_volume("context", &name, None)];
            (CONTEXT_DIR.into(), None, volumes, vec![mount("context", CONTEXT_DIR, true)])
        }
    }
}

/// A volume with one file, `path`, holding the pod's annotation `key` (the downward API).
fn annotation_volume(volume: &str, key: &str, path: &str) -> Volume {
    Volume {
        name: volume.into(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![DownwardAPIVolumeFile {
                path: path.into(),
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.annotations['{key}']"),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn config_map_volume(volume: &str, name: &str, items: Option<Vec<KeyToPath>>) -> Volume {
    Volume {
        name: volume.into(),
        config_map: Some(ConfigMapVolumeSource { name: name.into(), items, ..Default::default() }),
        ..Default::default()
    }
}

fn key_to_path(key: &str, path: &str) -> KeyToPath {
    KeyToPath { key: key.into(), path: path.into(), ..Default::default() }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(read_only), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BuilderKind, CacheSpec, GitSource, LocalRef, MultiArchBuildSpec, OutputSpec, Placement};
    use crate::plan::builder_images::BuildImages;
    use crate::plan::builders::BUILDKIT_ROOT;
    use crate::plan::nodes::NodeView;
    use crate::plan::placement::place;

    fn spec() -> MultiArchBuildSpec {
        MultiArchBuildSpec {
            source: Source { config_map: Some(LocalRef { name: "ctx".into() }), git: None },
            platforms: vec!["linux/arm64".into()],
            build_args: [("GREETING".into(), "hello world; rm -rf /".into())].into(),
            output: OutputSpec {
                image: "registry.example.com/blog".into(),
                push_secret: Some(LocalRef { name: "regcred".into() }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn job_for(spec: &MultiArchBuildSpec) -> Job {
        try_job_for(spec).unwrap()
    }

    fn try_job_for(spec: &MultiArchBuildSpec) -> Result<Job, JobError> {
        job_with(spec, &BuilderConfig::default())
    }

    fn job_with(spec: &MultiArchBuildSpec, config: &BuilderConfig) -> Result<Job, JobError> {
        let platform: Platform = "linux/arm64".parse().unwrap();
        let nodes = [NodeView {
            name: "jetson-1".into(),
            platform: Some(platform.clone()),
            usable: true,
            emulates: Default::default(),
            builds: 0,
        }];
        let placed =
            place(&platform, Placement::Auto, spec.builder.kind, &nodes, &Default::default(), &BuildImages::unread())
                .unwrap();
        let inputs = BuildInputs::new(spec, &platform, Some("rv1"));
        let cache = spec.cache.as_ref().map(|c| c.image.parse::<Repository>()).transpose()?;
        let req = JobRequest {
            build_name: "blog",
            namespace: "web",
            owner: OwnerReference::default(),
            platform: &platform,
            inputs: &inputs,
            placed: &placed,
            config,
            timeout_seconds: 1800,
            cache: cache.as_ref(),
        };
        build_job(&req)
    }

    fn container(job: &Job) -> &Container {
        &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
    }

    fn env<'a>(c: &'a Container, name: &str) -> &'a str {
        c.env.as_ref().unwrap().iter().find(|e| e.name == name).and_then(|e| e.value.as_deref()).unwrap()
    }

    #[test]
    fn small_devices_get_the_operators_memory_and_a_bounded_storage() {
        let memory = |job: &Job, side: &str| {
            let resources = container(job).resources.clone().unwrap_or_default();
            let quantities = if side == "requests" { resources.requests } else { resources.limits };
            quantities.and_then(|q| q.get("memory").map(|m| m.0.clone()))
        };
        let config = BuilderConfig {
            memory: [("linux/arm64".parse().unwrap(), Quantity("768Mi".into()))].into(),
            storage_limit: Some(Quantity("4Gi".into())),
            ..BuilderConfig::default()
        };
        let job = job_with(&spec(), &config).unwrap();
        assert_eq!((memory(&job, "requests"), memory(&job, "limits")), (Some("768Mi".into()), Some("768Mi".into())));
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let storage = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "storage").unwrap();
        assert_eq!(storage.empty_dir.as_ref().unwrap().size_limit, Some(Quantity("4Gi".into())));

        // The spec's memory wins; its CPU alone gets the operator's memory beside it.
        let mut own = spec();
        own.builder.resources = Some(ResourceRequirements {
            limits: Some([("memory".to_string(), Quantity("2Gi".into()))].into()),
            ..Default::default()
        });
        let job = job_with(&own, &config).unwrap();
        assert_eq!((memory(&job, "requests"), memory(&job, "limits")), (None, Some("2Gi".into())));
        own.builder.resources = Some(ResourceRequirements {
            requests: Some([("cpu".to_string(), Quantity("1".into()))].into()),
            ..Default::default()
        });
        let job = job_with(&own, &config).unwrap();
        assert_eq!(memory(&job, "limits"), Some("768Mi".into()));
        assert!(container(&job).resources.as_ref().unwrap().requests.as_ref().unwrap().contains_key("cpu"));
        let job = job_with(&spec(), &BuilderConfig::default()).unwrap();
        assert_eq!(container(&job).resources, None, "no memory configured: none set");
    }

    #[test]
    fn job_builds_the_platform_on_its_node_with_args_as_parameters() {
        let job = job_for(&spec());
        let name = job.metadata.name.clone().unwrap();
        assert!(name.starts_with("blog-linux-arm64-"), "{name}");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(2));
        // Three attempts of 30 minutes, with 10 s and 20 s of back-off between them.
        assert_eq!(spec.active_deadline_seconds, Some(3 * 1800 + 30));
        assert_eq!(spec.ttl_seconds_after_finished, Some(DEFAULT_FINISHED_JOB_TTL_SECONDS));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.active_deadline_seconds, Some(1800));
        let c = container(&job);
        assert_eq!(env(c, "ARCHWAY_PLATFORM"), "linux/arm64");
        assert_eq!(env(c, "ARCHWAY_IMAGE"), "registry.example.com/blog");
        // The value travels as one argv word: the shell never parses it.
        let args = c.args.as_ref().unwrap();
        assert!(args.windows(2).any(|w| w == ["--build-arg", "GREETING=hello world; rm -rf /"]), "{args:?}");
        let mounts: Vec<_> = c.volume_mounts.as_ref().unwrap().iter().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(mounts, ["/workspace/context", "/var/lib/containers", "/archway/auth"]);
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MODE_LABEL], "native");
        assert_eq!(labels[PLATFORM_LABEL], "linux-arm64");
    }

    /// The CA travels in the pod's own annotation: a namespace needs no ConfigMap for it.
    #[test]
    fn the_registry_ca_comes_with_the_pod() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let config = BuilderConfig { registry_ca: Some(pem.into()), ..Default::default() };
        let job = job_with(&spec(), &config).unwrap();
        let template = &job.spec.as_ref().unwrap().template;
        let annotations = template.metadata.as_ref().and_then(|m| m.annotations.clone()).unwrap();
        assert_eq!(annotations[REGISTRY_CA_ANNOTATION], pem);
        let pod = template.spec.as_ref().unwrap();
        let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "registry-ca").unwrap();
        let file = &volume.downward_api.as_ref().unwrap().items.as_ref().unwrap()[0];
        assert_eq!(file.path, "ca.crt");
        assert_eq!(file.field_ref.as_ref().unwrap().field_path, "metadata.annotations['archway.dev/registry-ca']");
        let mounts = container(&job).volume_mounts.clone().unwrap();
        assert!(mounts.iter().any(|m| m.name == "registry-ca" && m.mount_path == CA_DIR && m.read_only == Some(true)));
        // Without a CA, nothing of it.
        let plain = job_for(&spec());
        assert!(plain.spec.unwrap().template.metadata.unwrap().annotations.is_none());
    }

    #[test]
    fn git_sources_clone_in_an_init_container() {
        let mut spec = spec();
        spec.source = Source {
            git: Some(GitSource {
                url: "https://example.com/blog.git".into(),
                context_dir: "site".into(),
                secret_ref: Some(LocalRef { name: "git-token".into() }),
                ..Default::default()
            }),
            config_map: None,
        };
        let job = job_for(&spec);
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let clone = &pod.init_containers.as_ref().unwrap()[0];
        assert!(clone.args.as_ref().unwrap().contains(&"https://example.com/blog.git".to_string()));
        let credentials = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "git-credentials").unwrap();
        let secret = credentials.secret.as_ref().unwrap();
        assert_eq!((secret.secret_name.as_deref(), secret.default_mode), (Some("git-token"), Some(0o400)));
        let mounts = clone.volume_mounts.as_ref().unwrap();
        assert!(mounts.iter().any(|m| m.mount_path == "/archway/git" && m.read_only == Some(true)));
        assert_eq!(env(container(&job), "ARCHWAY_CONTEXT"), "/workspace/source/site");
    }

    #[test]
    fn same_inputs_same_job_name() {
        assert_eq!(job_for(&spec()).metadata.name, job_for(&spec()).metadata.name);
        let mut changed = spec();
        changed.build_args.insert("X".into(), "1".into());
        assert_ne!(job_for(&spec()).metadata.name, job_for(&changed).metadata.name);
    }

    fn buildkit(spec: &MultiArchBuildSpec) -> MultiArchBuildSpec {
        let mut spec = spec.clone();
        spec.builder.kind = BuilderKind::Buildkit;
        spec
    }

    #[test]
    fn buildkit_runs_rootless_with_args_as_parameters() {
        let job = job_for(&buildkit(&spec()));
        let c = container(&job);
        assert_eq!(c.image.as_deref(), Some(DEFAULT_BUILDKIT_IMAGE));
        let args = c.args.as_ref().unwrap();
        assert!(args[1].contains("buildctl-daemonless.sh build"), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["--opt", "build-arg:GREETING=hello world; rm -rf /"]), "{args:?}");
        assert_eq!(env(c, "BUILDKITD_FLAGS"), "--oci-worker-no-process-sandbox");
        assert_eq!(env(c, "ARCHWAY_REGISTRY"), "registry.example.com");
        let security = c.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_user, Some(1000));
        assert_eq!(security.seccomp_profile.as_ref().unwrap().type_, "Unconfined");
        assert_eq!(security.app_armor_profile.as_ref().unwrap().type_, "Unconfined");
        assert!(security.capabilities.is_none() && security.privileged.is_none(), "{security:?}");
        let mounts: Vec<_> = c.volume_mounts.as_ref().unwrap().iter().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(mounts, ["/workspace/context", BUILDKIT_ROOT, "/archway/auth"]);
    }

    #[test]
    fn builders_share_everything_but_the_build_container() {
        let mut spec = spec();
        spec.builder.image = Some("registry.example.com/tools/buildkit:pinned".into());
        let (buildah, buildkit) = (job_for(&spec), job_for(&buildkit(&spec)));
        assert_eq!(container(&buildkit).image.as_deref(), Some("registry.example.com/tools/buildkit:pinned"));
        // The kind is an input: switching builders makes a new Job.
        assert_ne!(buildah.metadata.name, buildkit.metadata.name);
        let pod = |job: &Job| job.spec.as_ref().unwrap().template.spec.clone().unwrap();
        let (a, b) = (pod(&buildah), pod(&buildkit));
        assert_eq!(
            (&a.affinity, &a.init_containers, &a.tolerations),
            (&b.affinity, &b.init_containers, &b.tolerations)
        );
        assert_eq!((a.active_deadline_seconds, a.automount_service_account_token), (Some(1800), Some(false)));
        assert_eq!(
            (a.active_deadline_seconds, a.automount_service_account_token),
            (b.active_deadline_seconds, b.automount_service_account_token)
        );
        assert_eq!(a.volumes, b.volumes);
        let shared = |c: &Container| {
            let env = c.env.clone().unwrap_or_default();
            // The build tag carries the inputs' hash, which differs with the kind.
            let own = ["BUILDKITD_FLAGS", "ARCHWAY_BUILDKIT_ROOT", "ARCHWAY_BUILD_TAG"];
            env.into_iter().filter(|e| !own.contains(&e.name.as_str())).collect::<Vec<_>>()
        };
        assert_eq!(shared(container(&buildah)), shared(container(&buildkit)));
    }

    /// Each platform's cache is a repository of its own under `spec.cache.image`, passed as the builder's
    /// own options; `assemble` runs no step and gets none.
    #[test]
    fn the_cache_is_one_repository_per_platform() {
        let mut cached = spec();
        cached.cache = Some(CacheSpec { image: "registry.example.com/blog-cache".into() });
        let repository = "registry.example.com/blog-cache-linux-arm64";
        let args = |job: &Job| container(job).args.clone().unwrap();
        let has_env = |job: &Job, name: &str| container(job).env.as_ref().unwrap().iter().any(|e| e.name == name);

        let buildah = job_for(&cached);
        let words = ["--layers", "--cache-from", repository, "--cache-to", repository];
        assert!(args(&buildah).windows(5).any(|w| w == words), "{:?}", args(&buildah));
        assert!(!has_env(&buildah, "ARCHWAY_CACHE_REGISTRY"));

        let with_buildkit = job_for(&buildkit(&cached));
        let import = format!("type=registry,ref={repository}:buildkit");
        let words =
            ["--import-cache".to_string(), import.clone(), "--export-cache".into(), format!("{import},mode=max")];
        assert!(args(&with_buildkit).windows(4).any(|w| w == words), "{:?}", args(&with_buildkit));
        // On the output's registry, which the build's registry configuration names already.
        assert!(!has_env(&with_buildkit, "ARCHWAY_CACHE_REGISTRY"));
        cached.cache = Some(CacheSpec { image: "cache.example.com:5000/blog".into() });
        assert_eq!(env(container(&job_for(&buildkit(&cached))), "ARCHWAY_CACHE_REGISTRY"), "cache.example.com:5000");

        cached.builder.kind = BuilderKind::Assemble;
        let assembled = job_for(&cached);
        assert!(!args(&assembled).iter().any(|a| a.contains("cache")), "{:?}", args(&assembled));
        assert!(!has_env(&assembled, "ARCHWAY_CACHE_REGISTRY"));
        // Without a cache, no cache option at all.
        assert!(!args(&job_for(&spec())).iter().any(|a| a.contains("cache") || a == "--layers"));
    }

    #[test]
    fn an_image_that_names_no_registry_is_refused() {
        let mut spec = buildkit(&spec());
        spec.output.image = "Blog With Spaces".into();
        assert!(matches!(try_job_for(&spec), Err(JobError::Image(_))));
    }
}
