//! What a hostlet runs: its nodes, the tool images it maps to host programs, the registry it pulls
//! from, and where pods find the API server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use archway::plan::nodes::EmulationLabels;
use archway::platform::{ARCH_LABEL, ARM_VARIANT_LABEL, OS_LABEL, Platform};

/// Well-known node label; ours say `hostlet` so that a reader of `kubectl get nodes -L` knows.
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// The taint of the extra nodes ([`HostletConfig::extra_nodes`]), beside their cordon: a DaemonSet's
/// pods tolerate a cordon, not this.
pub const EXTRA_NODE_TAINT: &str = "hostlet.archway.dev/extra";

/// One fake node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub platform: Platform,
    /// Labels beyond the well-known ones that [`NodeSpec::labels`] derives from the platform.
    pub extra_labels: BTreeMap<String, String>,
    /// Registered cordoned (`spec.unschedulable`) and tainted [`EXTRA_NODE_TAINT`]: a node that only
    /// heartbeats, where no pod lands.
    pub cordoned: bool,
}

impl NodeSpec {
    pub fn new(name: &str, platform: Platform) -> NodeSpec {
        NodeSpec { name: name.to_string(), platform, extra_labels: BTreeMap::new(), cordoned: false }
    }

    pub fn with_label(mut self, key: &str, value: &str) -> NodeSpec {
        self.extra_labels.insert(key.to_string(), value.to_string());
        self
    }

    /// All labels of the node: os, arch, hostname, instance type, the ARM variant for arm nodes,
    /// then the extra ones.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (OS_LABEL.to_string(), self.platform.os.clone()),
            (ARCH_LABEL.to_string(), self.platform.architecture.clone()),
            (HOSTNAME_LABEL.to_string(), self.name.clone()),
            (INSTANCE_TYPE_LABEL.to_string(), "hostlet".to_string()),
        ]);
        if self.platform.architecture == "arm"
            && let Some(variant) = &self.platform.variant
        {
            labels.insert(ARM_VARIANT_LABEL.to_string(), variant.clone());
        }
        labels.extend(self.extra_labels.clone());
        labels
    }
}

/// An image that stands for a program of this host: a container of `repository` (any tag or
/// digest) runs `program` here.
#[derive(Clone, Debug)]
pub struct ToolImage {
    /// Image repository, e.g. `quay.io/buildah/stable` or `alpine/git` (Docker Hub short names are
    /// normalised, so `docker.io/alpine/git` matches too).
    pub repository: String,
    /// The program's name inside the image; a container command whose first word is this name (or a
    /// path ending in it) runs `program` instead.
    pub name: String,
    /// The host program: a name looked up in PATH, or a path.
    pub program: PathBuf,
    /// The image's ENTRYPOINT and CMD, used by Kubernetes' rules when a container leaves out
    /// `command` or `args`.
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// The image's ENV, put before the container's own env.
    pub env: Vec<(String, String)>,
    /// More programs of the image that its scripts call by name: (name, host program), linked into
    /// the pod's PATH beside `name`.
    pub companions: Vec<(String, PathBuf)>,
    /// Directories of the image's own filesystem that each container must have to itself (where a
    /// daemon puts its socket): each run gets an empty one of its sandbox there, so that two
    /// containers of the image on this host never meet.
    pub private_dirs: Vec<String>,
    /// Env set over the container's own: the hostlet runs every image as root, and root refuses some
    /// settings made for the image's own user.
    pub root_env: Vec<(String, String)>,
    /// Resolved first in the registry's mirror of its registry (see [`crate::toolimages`]), for the
    /// node's platform, as a node pulls it: no child for the node's platform, no run.
    pub mirrored: bool,
}

impl ToolImage {
    pub fn new(repository: &str, name: &str, program: impl Into<PathBuf>) -> ToolImage {
        ToolImage {
            repository: repository.to_string(),
            name: name.to_string(),
            program: program.into(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            companions: Vec::new(),
            private_dirs: Vec::new(),
            root_env: Vec::new(),
            mirrored: false,
        }
    }

    fn mirrored(mut self) -> ToolImage {
        self.mirrored = true;
        self
    }

    fn entrypoint(mut self, argv: &[&str]) -> ToolImage {
        self.entrypoint = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    fn cmd(mut self, argv: &[&str]) -> ToolImage {
        self.cmd = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    fn env(mut self, key: &str, value: &str) -> ToolImage {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    fn companion(mut self, name: &str, program: impl Into<PathBuf>) -> ToolImage {
        self.companions.push((name.to_string(), program.into()));
        self
    }

    fn private_dir(mut self, path: &str) -> ToolImage {
        self.private_dirs.push(path.to_string());
        self
    }

    fn root_env(mut self, key: &str, value: &str) -> ToolImage {
        self.root_env.push((key.to_string(), value.to_string()));
        self
    }
}

/// The registry the hostlet pulls from: the only one it ever connects to.
#[derive(Clone)]
pub struct RegistryAccess {
    /// `127.0.0.1:PORT`
    pub host: String,
    pub username: String,
    pub password: String,
    /// The CA that signed the registry's serving certificate, PEM.
    pub ca_pem: Vec<u8>,
}

impl std::fmt::Debug for RegistryAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAccess")
            .field("host", &self.host)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
pub struct HostletConfig {
    /// Pod sandboxes live under `work_dir/pods/`.
    pub work_dir: PathBuf,
    /// The nodes that run the pods bound to them.
    pub nodes: Vec<NodeSpec>,
    /// Nodes that are registered and kept alive like `nodes` (status heartbeats, Leases) but run
    /// nothing: cordoned and tainted, and the pod watcher does not look at them. A fleet for a
    /// benchmark's node churn ([`HostletConfig::extra_nodes`]).
    pub extra_nodes: Vec<NodeSpec>,
    pub tools: Vec<ToolImage>,
    pub registry: RegistryAccess,
    /// The API server's real loopback address, given to pods as `KUBERNETES_SERVICE_HOST/PORT`
    /// (the `kubernetes` Service's cluster IP leads nowhere here).
    pub api_server: (String, u16),
}

impl HostletConfig {
    /// The default nodes and tools; `buildkit_bin` holds what hack/build-buildkit.sh builds.
    pub fn new(
        work_dir: PathBuf,
        registry: RegistryAccess,
        api_server: (String, u16),
        archway_bin: PathBuf,
        buildkit_bin: &Path,
    ) -> HostletConfig {
        HostletConfig {
            work_dir,
            nodes: Self::default_nodes(),
            extra_nodes: Vec::new(),
            tools: Self::default_tools(archway_bin, buildkit_bin),
            registry,
            api_server,
        }
    }

    /// An x86 node, a Jetson-like arm64 node, a Pi-like arm/v7 node and a qemu-enabled amd64 node.
    pub fn default_nodes() -> Vec<NodeSpec> {
        vec![
            NodeSpec::new("x86-1", Platform::new("linux", "amd64", None)),
            NodeSpec::new("jetson-1", Platform::new("linux", "arm64", None)),
            NodeSpec::new("pi-1", Platform::new("linux", "arm", Some("v7"))),
            NodeSpec::new("qemu-1", Platform::new("linux", "amd64", None))
                // It runs arm64 and 32-bit arm code under qemu (binfmt_misc): builds may be placed there.
                .with_label(&EmulationLabels::default().label(&Platform::linux("arm64", None)), "true")
                .with_label(&EmulationLabels::default().label(&Platform::linux("arm", None)), "true"),
        ]
    }

    /// `count` nodes `extra-1`..`extra-<count>` that run nothing (see [`HostletConfig::extra_nodes`]),
    /// their platforms in turn amd64, arm64 and arm/v7, like a mixed fleet.
    pub fn extra_nodes(count: usize) -> Vec<NodeSpec> {
        let platforms =
            [Platform::linux("amd64", None), Platform::linux("arm64", None), Platform::linux("arm", Some("v7"))];
        (1..=count)
            .map(|i| {
                let node = NodeSpec::new(&format!("extra-{i}"), platforms[(i - 1) % platforms.len()].clone());
                NodeSpec { cordoned: true, ..node }
            })
            .collect()
    }

    /// Every node the hostlet registers and keeps alive: `nodes`, then `extra_nodes`.
    pub fn all_nodes(&self) -> impl Iterator<Item = &NodeSpec> {
        self.nodes.iter().chain(&self.extra_nodes)
    }

    /// buildah, BuildKit, skopeo and git images, and archway's own image mapped to `archway_bin`.
    /// Entrypoints, commands and env are those of the public images.
    pub fn default_tools(archway_bin: PathBuf, buildkit_bin: &Path) -> Vec<ToolImage> {
        // The buildah images run builds with chroot isolation: no runtime inside a container.
        let buildah = |repo: &str| {
            ToolImage::new(repo, "buildah", "buildah").cmd(&["/bin/sh"]).env("BUILDAH_ISOLATION", "chroot")
        };
        // BuildKit's rootless image: its script starts a buildkitd (with the host's runc) per build.
        // The hostlet runs it as root, so the script runs buildkitd directly, not under rootlesskit;
        // buildkitd then puts its socket in /run/buildkit (private: concurrent builds each have one),
        // and refuses the rootless-only flag of BUILDKITD_FLAGS (it keeps its process sandbox).
        let buildkit =
            ToolImage::new("moby/buildkit", "buildctl-daemonless.sh", buildkit_bin.join("buildctl-daemonless.sh"))
                .companion("buildctl", buildkit_bin.join("buildctl"))
                .companion("buildkitd", buildkit_bin.join("buildkitd"))
                .private_dir("/run/buildkit")
                .root_env("BUILDKITD_FLAGS", "")
                .entrypoint(&["rootlesskit", "buildkitd"])
                .mirrored();
        // The operator's default images and its own have stand-ins in the registry; the others run
        // wherever asked.
        vec![
            buildah("quay.io/buildah/stable").mirrored(),
            buildah("quay.io/containers/buildah"),
            buildkit,
            ToolImage::new("quay.io/skopeo/stable", "skopeo", "skopeo").entrypoint(&["skopeo"]),
            ToolImage::new("quay.io/containers/skopeo", "skopeo", "skopeo").entrypoint(&["skopeo"]),
            ToolImage::new("alpine/git", "git", "git").entrypoint(&["git"]).mirrored(),
            ToolImage::new("ghcr.io/archway-dev/archway", "archway", archway_bin).entrypoint(&["archway"]).mirrored(),
        ]
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.work_dir.join("pods")
    }

    /// The tool an image stands for, if any.
    pub fn tool_for(&self, image: &str) -> Option<&ToolImage> {
        let repo = repository_of(image);
        self.tools.iter().find(|t| {
            let prefix = repository_of(&t.repository);
            repo == prefix || repo.strip_prefix(&prefix).is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// The repository of an image reference, normalised the way Docker does (`alpine/git:v2` ->
/// `docker.io/alpine/git`, `nginx` -> `docker.io/library/nginx`).
pub(crate) fn repository_of(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A tag is a ':' after the last '/'; a ':' before it belongs to a registry port.
    let without_tag = match without_digest.rfind(':') {
        Some(i) if !without_digest[i..].contains('/') => &without_digest[..i],
        _ => without_digest,
    };
    let (first, rest) = without_tag.split_once('/').unwrap_or(("", without_tag));
    let is_registry = first.contains('.') || first.contains(':') || first == "localhost";
    match (first, is_registry) {
        ("", _) => format!("docker.io/library/{rest}"),
        ("index.docker.io", true) => format!("docker.io/{rest}"),
        (_, true) => without_tag.to_string(),
        _ => format!("docker.io/{without_tag}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_normalised() {
        assert_eq!(repository_of("nginx"), "docker.io/library/nginx");
        assert_eq!(repository_of("nginx:1.25"), "docker.io/library/nginx");
        assert_eq!(repository_of("alpine/git:v2.45"), "docker.io/alpine/git");
        assert_eq!(repository_of("docker.io/alpine/git"), "docker.io/alpine/git");
        assert_eq!(repository_of("index.docker.io/alpine/git@sha256:ab"), "docker.io/alpine/git");
        assert_eq!(repository_of("quay.io/buildah/stable:v1.40"), "quay.io/buildah/stable");
        assert_eq!(repository_of("127.0.0.1:5000/blog"), "127.0.0.1:5000/blog");
        assert_eq!(repository_of("127.0.0.1:5000/a/blog:new@sha256:00"), "127.0.0.1:5000/a/blog");
    }

    #[test]
    fn tools_match_by_repository_prefix() {
        let registry = RegistryAccess {
            host: "127.0.0.1:5000".into(),
            username: "u".into(),
            password: "p".into(),
            ca_pem: vec![],
        };
        let config = HostletConfig::new(
            "w".into(),
            registry,
            ("127.0.0.1".into(), 6443),
            "bin/archway".into(),
            Path::new("cache/buildkit/bin"),
        );
        let name = |image: &str| config.tool_for(image).map(|t| t.name.as_str());
        assert_eq!(name("moby/buildkit:v0.26.3-rootless"), Some("buildctl-daemonless.sh"));
        assert_eq!(name("docker.io/moby/buildkit@sha256:00"), Some("buildctl-daemonless.sh"));
        assert_eq!(name("moby/buildkit-extra:v1"), None);
        assert_eq!(name("quay.io/buildah/stable:latest"), Some("buildah"));
        assert_eq!(name("docker.io/alpine/git:2.45.2"), Some("git"));
        assert_eq!(name("alpine/git"), Some("git"));
        assert_eq!(name("ghcr.io/archway-dev/archway:0.1.0"), Some("archway"));
        assert_eq!(name("ghcr.io/archway-dev/archway-extra:0.1.0"), None);
        assert_eq!(name("127.0.0.1:5000/blog:new"), None);
        assert_eq!(name("nginx"), None);
    }

    #[test]
    fn default_nodes_carry_platform_labels() {
        let nodes = HostletConfig::default_nodes();
        let labels: Vec<_> = nodes.iter().map(NodeSpec::labels).collect();
        assert_eq!(labels[0][ARCH_LABEL], "amd64");
        assert_eq!(labels[1][ARCH_LABEL], "arm64");
        assert!(!labels[1].contains_key(ARM_VARIANT_LABEL));
        assert_eq!(labels[2][ARCH_LABEL], "arm");
        assert_eq!(labels[2][ARM_VARIANT_LABEL], "v7");
        assert_eq!(labels[3]["emulate.archway.dev/arm64"], "true");
        assert_eq!(labels[3]["emulate.archway.dev/arm"], "true");
        assert_eq!(labels[3]["kubernetes.io/hostname"], "qemu-1");
        assert!(nodes.iter().all(|n| !n.cordoned));
    }

    #[test]
    fn extra_nodes_are_cordoned_and_spread_over_platforms() {
        assert!(HostletConfig::extra_nodes(0).is_empty());
        let nodes = HostletConfig::extra_nodes(100);
        assert_eq!(nodes.len(), 100);
        assert_eq!(nodes[0].name, "extra-1");
        assert_eq!(nodes[99].name, "extra-100");
        assert!(nodes.iter().all(|n| n.cordoned));
        let names: std::collections::BTreeSet<_> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names.len(), 100);
        let count = |arch: &str| nodes.iter().filter(|n| n.labels()[ARCH_LABEL] == arch).count();
        assert_eq!((count("amd64"), count("arm64"), count("arm")), (34, 33, 33));
        assert_eq!(nodes[2].labels()[ARM_VARIANT_LABEL], "v7");
        assert!(HostletConfig::default_nodes().iter().all(|n| !n.name.starts_with("extra-")));
    }
}
