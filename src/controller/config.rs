//! Operator-level settings: flags of `archway operator` (each also readable from the environment).

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::plan::job::{
    BuilderConfig, DEFAULT_ASSEMBLE_IMAGE, DEFAULT_BUILDAH_IMAGE, DEFAULT_BUILDKIT_IMAGE, DEFAULT_GIT_IMAGE,
};
use crate::plan::nodes::{EMULATION_LABEL_PREFIX, EmulationLabels};
use crate::plan::placement::BuildSlots;
use crate::plan::validate::AllowedImages;
use crate::platform::Platform;

#[derive(clap::Args, Clone, Debug)]
pub struct OperatorConfig {
    /// Image of the buildah builder (`spec.builder.kind: buildah`).
    #[arg(long, env = "ARCHWAY_BUILDAH_IMAGE", default_value = DEFAULT_BUILDAH_IMAGE)]
    pub buildah_image: String,
    /// Image of the BuildKit builder (`spec.builder.kind: buildkit`): a rootless BuildKit image, which
    /// has `buildctl-daemonless.sh` and runs as user 1000.
    #[arg(long, env = "ARCHWAY_BUILDKIT_IMAGE", default_value = DEFAULT_BUILDKIT_IMAGE)]
    pub buildkit_image: String,
    /// An image `spec.builder.image` may name, besides the two default builders (repeatable): an exact
    /// reference, or a repository (its tags and digests) or prefix ending in `/`. Builders run privileged
    /// beside the push secret, so a build naming any other image is refused (InvalidSpec), with no Job.
    #[arg(long = "allowed-builder-images", env = "ARCHWAY_ALLOWED_BUILDER_IMAGES", value_delimiter = ',')]
    pub allowed_builder_images: Vec<String>,
    /// Image that clones git sources.
    #[arg(long, env = "ARCHWAY_GIT_IMAGE", default_value = DEFAULT_GIT_IMAGE)]
    pub git_image: String,
    /// Image that assembles images without a builder (`spec.builder.kind: assemble`): the operator's
    /// own, whose `archway assemble` runs unprivileged (deploy/ and the chart set it to the image they run).
    #[arg(long, env = "ARCHWAY_ASSEMBLE_IMAGE", default_value = DEFAULT_ASSEMBLE_IMAGE)]
    pub assemble_image: String,
    /// A toleration every build pod gets, as KEY[=VALUE]:EFFECT (repeatable), for tainted build nodes.
    #[arg(long = "build-toleration", value_parser = parse_toleration)]
    pub build_tolerations: Vec<Toleration>,
    /// PEM file of a CA trusted for registries besides the system's: by the operator, and by every build
    /// pod, which gets it from the operator (no namespace needs an object for it).
    #[arg(long, env = "ARCHWAY_REGISTRY_CA_FILE")]
    pub registry_ca_file: Option<PathBuf>,
    /// Where to read the builder and clone images of a registry instead of the registry itself, as
    /// REGISTRY=MIRROR (repeatable; the mirror a host with an optional path, e.g.
    /// `quay.io=mirror.example.com/quay.io`): the operator reads their indexes to place each build on
    /// nodes they run on. Give the nodes the same mirrors.
    #[arg(long = "registry-mirror", env = "ARCHWAY_REGISTRY_MIRRORS", value_delimiter = ',', value_parser = crate::registry::parse_mirror)]
    pub registry_mirrors: Vec<(String, String)>,
    /// A host besides a registry's own that may issue its tokens (repeatable): a registry's token realm
    /// gets the push secret's credentials, so one on another host (GitLab's `gitlab.com` for
    /// `registry.gitlab.com`) is refused unless named here. Docker Hub's `auth.docker.io` is known.
    #[arg(long = "registry-token-realm", env = "ARCHWAY_REGISTRY_TOKEN_REALMS", value_delimiter = ',')]
    pub registry_token_realms: Vec<String>,
    /// A Docker config.json (a kubernetes.io/dockerconfigjson Secret's `.dockerconfigjson`) with the
    /// credentials for reading the builder and clone images; anonymous without it.
    #[arg(long, env = "ARCHWAY_REGISTRY_AUTH_FILE")]
    pub registry_auth_file: Option<PathBuf>,
    /// The `sizeLimit` of each build pod's storage (an emptyDir), as a quantity such as `8Gi`; a build
    /// that writes more is evicted and fails saying so. Unlimited without it.
    #[arg(long, env = "ARCHWAY_BUILD_STORAGE_LIMIT", value_parser = parse_quantity)]
    pub build_storage_limit: Option<Quantity>,
    /// The memory (request and limit) of a native build on nodes of a platform, as PLATFORM=QUANTITY
    /// (repeatable, e.g. `linux/arm/v6=384Mi`), where `spec.builder.resources` names none: what fits
    /// a Pi Zero (512 MB) or a Pi 3 (1 GB) beside the kubelet.
    #[arg(long = "build-memory", env = "ARCHWAY_BUILD_MEMORY", value_delimiter = ',', value_parser = parse_platform_quantity)]
    pub build_memory: Vec<(Platform, Quantity)>,
    /// How many builds a node of an architecture runs at once, as ARCH=N (`kubernetes.io/arch` values;
    /// 0 for no bound): a platform whose nodes are all busy is Queued until a build ends. Bounded to 1
    /// on ARM nodes unless set: a Pi runs out of memory with two builds.
    #[arg(long = "max-builds-per-node", env = "ARCHWAY_MAX_BUILDS_PER_NODE", value_delimiter = ',', default_value = "arm=1,arm64=1", value_parser = parse_arch_count)]
    pub max_builds_per_node: Vec<(String, u32)>,
    /// Prefix of the node labels that mark emulation: a node labelled `<prefix><arch>=true` (for example
    /// `emulate.archway.dev/arm64=true`) runs that architecture's code under qemu.
    #[arg(long, env = "ARCHWAY_EMULATION_LABEL_PREFIX", default_value = EMULATION_LABEL_PREFIX)]
    pub emulation_label_prefix: String,
    /// How long a finished build Job (and its pods) stays before the cluster deletes it, as a duration
    /// such as `1h` or `10m`. What it built is kept in the MultiArchBuild's status.
    #[arg(long, env = "ARCHWAY_FINISHED_JOB_TTL", default_value = "1h", value_parser = parse_ttl)]
    pub finished_job_ttl: i32,
    /// Run more than one replica: only the holder of the Lease `archway-operator` in
    /// `--leader-election-namespace` reconciles; the others wait to take over.
    #[arg(long, env = "ARCHWAY_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease (the operator's own; deploy/ sets it from the pod).
    #[arg(long, env = "POD_NAMESPACE", default_value = "archway-system")]
    pub leader_election_namespace: String,
    /// How long a Lease lasts without renewal: how long a crashed leader's replica waits before it leads.
    #[arg(long, env = "ARCHWAY_LEADER_ELECTION_LEASE", default_value = "15s", value_parser = parse_ttl)]
    pub leader_election_lease: i32,
    /// How many builds are reconciled at once (0: no limit).
    #[arg(long, env = "ARCHWAY_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,
    /// Address of the `/metrics` (Prometheus) and `/healthz` endpoint.
    #[arg(long, env = "ARCHWAY_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
}

impl OperatorConfig {
    /// The election this replica takes part in, with `--leader-elect`.
    pub fn election(&self) -> Option<super::leader::Election> {
        self.leader_elect.then(|| super::leader::Election {
            namespace: self.leader_election_namespace.clone(),
            identity: std::env::var("HOSTNAME").unwrap_or_else(|_| format!("archway-{}", std::process::id())),
            lease_duration: std::time::Duration::from_secs(u64::try_from(self.leader_election_lease).unwrap_or(15)),
        })
    }

    pub fn build_slots(&self) -> BuildSlots {
        BuildSlots { per_arch: self.max_builds_per_node.iter().cloned().collect() }
    }

    /// The images `spec.builder.image` may name: the default builders and `--allowed-builder-images`.
    pub fn allowed_builder_images(&self) -> AllowedImages {
        let defaults = [self.buildah_image.clone(), self.buildkit_image.clone()];
        AllowedImages(defaults.into_iter().chain(self.allowed_builder_images.iter().cloned()).collect())
    }

    pub fn emulation_labels(&self) -> EmulationLabels {
        EmulationLabels { prefix: self.emulation_label_prefix.clone() }
    }

    /// What build Jobs are made with; `registry_ca` is the PEM read from `--registry-ca-file`.
    pub fn builder(&self, registry_ca: Option<String>) -> BuilderConfig {
        BuilderConfig {
            buildah_image: self.buildah_image.clone(),
            buildkit_image: self.buildkit_image.clone(),
            git_image: self.git_image.clone(),
            assemble_image: self.assemble_image.clone(),
            tolerations: self.build_tolerations.clone(),
            registry_ca,
            finished_job_ttl_seconds: self.finished_job_ttl,
            storage_limit: self.build_storage_limit.clone(),
            memory: self.build_memory.iter().cloned().collect(),
        }
    }
}

/// A Kubernetes quantity such as `512Mi`, `1.5Gi` or `2G`.
fn parse_quantity(text: &str) -> Result<Quantity, String> {
    let number_end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E"];
    if number.parse::<f64>().is_ok_and(|n| n > 0.0) && suffixes.contains(&suffix) {
        Ok(Quantity(text.to_string()))
    } else {
        Err(format!("{text:?}: expected a positive quantity such as 512Mi or 8Gi"))
    }
}

/// ARCH=N, e.g. `arm=1`.
fn parse_arch_count(text: &str) -> Result<(String, u32), String> {
    let parsed = text.split_once('=').and_then(|(arch, n)| Some((arch, n.parse::<u32>().ok()?)));
    match parsed {
        Some((arch, n)) if !arch.is_empty() && !arch.contains('/') => Ok((arch.to_string(), n)),
        _ => Err(format!("{text:?}: expected ARCH=N with a kubernetes.io/arch value, e.g. arm=1 or amd64=4")),
    }
}

/// PLATFORM=QUANTITY, e.g. `linux/arm/v6=384Mi`.
fn parse_platform_quantity(text: &str) -> Result<(Platform, Quantity), String> {
    let (platform, quantity) =
        text.split_once('=').ok_or_else(|| format!("{text:?}: expected PLATFORM=QUANTITY, e.g. linux/arm/v6=384Mi"))?;
    let platform = crate::platform::parse_known(platform).map_err(|e| format!("{text:?}: {e}"))?;
    Ok((platform, parse_quantity(quantity)?))
}

/// A duration such as `1h` or `90s`, in whole seconds.
fn parse_ttl(text: &str) -> Result<i32, String> {
    let duration: kube::core::Duration = text.parse().map_err(|e| format!("{text:?}: {e}; use e.g. 1h or 30m"))?;
    if duration.is_negative() {
        return Err(format!("{text:?}: must not be negative"));
    }
    i32::try_from(std::time::Duration::from(duration).as_secs()).map_err(|_| format!("{text:?}: too long"))
}

fn parse_toleration(text: &str) -> Result<Toleration, String> {
    let (key_value, effect) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?}: expected KEY[=VALUE]:EFFECT, e.g. build=true:NoSchedule"))?;
    let (key, value) = match key_value.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (key_value, None),
    };
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!("{text:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"));
    }
    Ok(Toleration {
        key: Some(key.to_string()),
        operator: Some(if value.is_some() { "Equal" } else { "Exists" }.to_string()),
        value,
        effect: Some(effect.to_string()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_parse_with_and_without_value() {
        let t = parse_toleration("build=true:NoSchedule").unwrap();
        assert_eq!(
            (t.key.as_deref(), t.value.as_deref(), t.operator.as_deref()),
            (Some("build"), Some("true"), Some("Equal"))
        );
        let t = parse_toleration("arch:NoExecute").unwrap();
        assert_eq!((t.operator.as_deref(), t.value), (Some("Exists"), None));
        assert!(parse_toleration("build=true").unwrap_err().contains("KEY[=VALUE]:EFFECT"));
        assert!(parse_toleration("a:Sometimes").is_err());
    }

    #[test]
    fn build_memory_is_a_platform_and_a_quantity() {
        let (platform, memory) = parse_platform_quantity("linux/arm/v6=384Mi").unwrap();
        assert_eq!((platform.to_string(), memory.0.as_str()), ("linux/arm/v6".into(), "384Mi"));
        assert_eq!(parse_platform_quantity("linux/arm=1.5Gi").unwrap().0.to_string(), "linux/arm/v7");
        assert!(parse_platform_quantity("linux/arm/v6").unwrap_err().contains("PLATFORM=QUANTITY"));
        assert!(parse_platform_quantity("linux/arm/v6=lots").unwrap_err().contains("512Mi"));
        assert!(parse_quantity("0").is_err() && parse_quantity("8Gi").is_ok() && parse_quantity("1e3").is_err());
    }

    #[test]
    fn max_builds_are_per_architecture() {
        assert_eq!(parse_arch_count("arm=1"), Ok(("arm".into(), 1)));
        assert_eq!(parse_arch_count("amd64=0"), Ok(("amd64".into(), 0)));
        assert!(parse_arch_count("linux/arm=1").unwrap_err().contains("ARCH=N"));
        assert!(parse_arch_count("arm=-1").is_err() && parse_arch_count("arm").is_err());
    }

    #[test]
    fn ttls_are_durations_in_seconds() {
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("0s"), Ok(0));
        assert!(parse_ttl("-1m").is_err());
        assert!(parse_ttl("soon").unwrap_err().contains("1h"));
    }
}
