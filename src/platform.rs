//! OCI platforms: parsing, normalisation, containerd's matching rules, and the map from a Node to the
//! platform it runs.
//!
//! Two relations live here and they differ on purpose:
//! - [`best_match`] is what containerd does when it pulls an index on a node (an arm64 node also takes
//!   arm/v7 and v6 children). It decides whether a workload can run on a node.
//! - [`Platform::native_hosts`] is where a *build* may run without emulation. Builds do not count on an
//!   arm64 CPU running 32-bit code (not every one can), so that relation is stricter.

use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Node;

/// Node label that says which ARM variant a node runs; Kubernetes has none of its own.
/// An `arm` node without it counts as v7.
pub const ARM_VARIANT_LABEL: &str = "archway.dev/arm-variant";
/// Well-known Kubernetes node labels.
pub const OS_LABEL: &str = "kubernetes.io/os";
pub const ARCH_LABEL: &str = "kubernetes.io/arch";

/// The platforms archway knows how to build, as users write them.
pub const KNOWN_PLATFORMS: &[&str] = &[
    "linux/amd64",
    "linux/386",
    "linux/arm64",
    "linux/arm64/v8",
    "linux/arm/v5",
    "linux/arm/v6",
    "linux/arm/v7",
    "linux/arm",
    "linux/ppc64le",
    "linux/s390x",
    "linux/riscv64",
];

/// An OCI platform in containerd's normal form: `arm64` carries no variant (v8 is implied), `arm`
/// always carries one (v7 when none was given), architecture aliases are folded (`x86_64` -> `amd64`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error("platform {0:?} is not of the form os/arch[/variant]")]
    Syntax(String),
    #[error("platform {0:?} is not supported; known platforms: {known}", known = KNOWN_PLATFORMS.join(", "))]
    Unknown(String),
    #[error("node {node} has no {ARCH_LABEL} label and no status.nodeInfo.architecture")]
    NodeWithoutArch { node: String },
}

impl Platform {
    /// Builds a platform and normalises it the way containerd does.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let os = os.to_ascii_lowercase();
        let variant = variant.map(str::to_ascii_lowercase).filter(|v| !v.is_empty());
        let (architecture, variant) = match (architecture.to_ascii_lowercase().as_str(), variant) {
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64".to_string(), v.filter(|v| v != "v1")),
            ("i386" | "i686" | "386", _) => ("386".to_string(), None),
            ("aarch64" | "arm64", v) => {
                let v = v.filter(|v| !matches!(v.as_str(), "8" | "v8" | "v8.0"));
                ("arm64".to_string(), v)
            }
            ("armhf", _) => ("arm".to_string(), Some("v7".to_string())),
            ("armel", _) => ("arm".to_string(), Some("v6".to_string())),
            ("arm", None) => ("arm".to_string(), Some("v7".to_string())),
            ("arm", Some(v)) if v.starts_with('v') => ("arm".to_string(), Some(v)),
            ("arm", Some(v)) => ("arm".to_string(), Some(format!("v{v}"))),
            (other, v) => (other.to_string(), v),
        };
        Platform { os, architecture, variant }
    }

    pub fn linux(architecture: &str, variant: Option<&str>) -> Platform {
        Platform::new("linux", architecture, variant)
    }

    /// The ARM variant as a number (`v7` -> 7), for arm platforms only.
    fn arm_level(&self) -> Option<u8> {
        if self.architecture != "arm" {
            return None;
        }
        self.variant.as_deref()?.strip_prefix('v')?.parse().ok()
    }

    /// Whether this platform is one archway builds (see [`KNOWN_PLATFORMS`]).
    pub fn is_known(&self) -> bool {
        KNOWN_PLATFORMS.iter().any(|k| k.parse::<Platform>().is_ok_and(|p| &p == self))
    }

    /// The platforms of nodes that run this platform's code without emulation, best first:
    /// the exact platform, then ARM nodes of a higher variant (an armv7 Pi runs armv6 code),
    /// and amd64 for 386. arm64 is never listed for 32-bit ARM: not every arm64 CPU runs it.
    pub fn native_hosts(&self) -> Vec<Platform> {
        let mut hosts = vec![self.clone()];
        if let Some(level) = self.arm_level() {
            hosts.extend((level + 1..=8).map(|v| Platform::new(&self.os, "arm", Some(&format!("v{v}")))));
        } else if self.architecture == "386" {
            hosts.push(Platform::new(&self.os, "amd64", None));
        }
        hosts
    }

    /// containerd's preference order of the images a node of this platform runs.
    fn pull_vector(&self) -> Vec<Platform> {
        let os = &self.os;
        let arm_from = |level: u8| (5..=level).rev().map(move |v| Platform::new(os, "arm", Some(&format!("v{v}"))));
        match self.architecture.as_str() {
            "amd64" => vec![self.clone(), Platform::new(os, "386", None)],
            "arm64" => std::iter::once(self.clone()).chain(arm_from(8)).collect(),
            "arm" => arm_from(self.arm_level().unwrap_or(7)).collect(),
            _ => vec![self.clone()],
        }
    }

    /// Whether an image of this platform runs on a node of platform `host`, by containerd's rules.
    pub fn runs_on(&self, host: &Platform) -> bool {
        host.pull_vector().contains(self)
    }

    /// A name fragment usable in Kubernetes object names: `linux-arm-v7`.
    pub fn slug(&self) -> String {
        self.to_string().replace('/', "-")
    }

    /// What `uname -m` prints in a container of this platform.
    pub fn uname_machine(&self) -> Option<&'static str> {
        Some(match (self.architecture.as_str(), self.variant.as_deref()) {
            ("amd64", _) => "x86_64",
            ("386", _) => "i686",
            ("arm64", _) => "aarch64",
            ("arm", Some("v7")) => "armv7l",
            ("arm", Some("v6")) => "armv6l",
            ("arm", Some("v5")) => "armv5tel",
            ("ppc64le", _) => "ppc64le",
            ("s390x", _) => "s390x",
            ("riscv64", _) => "riscv64",
            _ => return None,
        })
    }

    /// The Docker Hub namespace of official images built for this platform (`arm32v6/nginx`).
    pub fn docker_hub_prefix(&self) -> Option<&'static str> {
        Some(match (self.architecture.as_str(), self.variant.as_deref()) {
            ("amd64", _) => "amd64",
            ("386", _) => "i386",
            ("arm64", _) => "arm64v8",
            ("arm", Some("v7")) => "arm32v7",
            ("arm", Some("v6")) => "arm32v6",
            ("arm", Some("v5")) => "arm32v5",
            ("ppc64le", _) => "ppc64le",
            ("s390x", _) => "s390x",
            ("riscv64", _) => "riscv64",
            _ => return None,
        })
    }

    /// The Debian architecture whose packages run on this platform.
    pub fn debian_arch(&self) -> Option<&'static str> {
        Some(match (self.architecture.as_str(), self.variant.as_deref()) {
            ("amd64", _) => "amd64",
            ("386", _) => "i386",
            ("arm64", _) => "arm64",
            ("arm", Some("v7")) => "armhf",
            ("arm", Some("v6" | "v5")) => "armel",
            ("ppc64le", _) => "ppc64el",
            ("s390x", _) => "s390x",
            ("riscv64", _) => "riscv64",
            _ => return None,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// Parses `os/arch[/variant]` and normalises it. Any well-formed platform parses; use
    /// [`Platform::is_known`] to restrict to the ones archway builds.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(PlatformError::Syntax(s.to_string()));
        }
        Ok(Platform::new(parts[0], parts[1], parts.get(2).copied()))
    }
}

/// Parses a platform and insists it is one archway builds.
pub fn parse_known(s: &str) -> Result<Platform, PlatformError> {
    let platform: Platform = s.parse()?;
    if platform.is_known() { Ok(platform) } else { Err(PlatformError::Unknown(s.to_string())) }
}

/// The candidate a node of platform `host` would pull, by containerd's preference order.
pub fn best_match<'a>(host: &Platform, candidates: impl IntoIterator<Item = &'a Platform>) -> Option<&'a Platform> {
    let vector = host.pull_vector();
    candidates
        .into_iter()
        .filter_map(|c| vector.iter().position(|v| v == c).map(|rank| (rank, c)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, c)| c)
}

/// The platform a Node runs, from its labels (`kubernetes.io/os`, `kubernetes.io/arch`,
/// `archway.dev/arm-variant`), falling back to `status.nodeInfo` where a label is missing.
pub fn node_platform(node: &Node) -> Result<Platform, PlatformError> {
    let labels = node.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    let info = node.status.as_ref().and_then(|s| s.node_info.as_ref());
    let os = label(OS_LABEL).or(info.map(|i| i.operating_system.as_str())).unwrap_or("linux");
    let arch = label(ARCH_LABEL)
        .or(info.map(|i| i.architecture.as_str()))
        .filter(|a| !a.is_empty())
        .ok_or_else(|| PlatformError::NodeWithoutArch { node: node.metadata.name.clone().unwrap_or_default() })?;
    let variant = if arch == "arm" { label(ARM_VARIANT_LABEL) } else { None };
    Ok(Platform::new(os, arch, variant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    /// Every row of the table in DESIGN.md: OCI platform, kubernetes.io/arch, uname -m, Docker Hub prefix.
    #[test]
    fn design_table_rows() {
        let rows = [
            ("linux/amd64", "amd64", None, "x86_64", "amd64"),
            ("linux/arm64", "arm64", None, "aarch64", "arm64v8"),
            ("linux/arm/v7", "arm", Some("v7"), "armv7l", "arm32v7"),
            ("linux/arm/v6", "arm", Some("v6"), "armv6l", "arm32v6"),
        ];
        for (text, arch, variant, uname, prefix) in rows {
            let platform = p(text);
            assert_eq!(platform.architecture, arch, "{text}");
            assert_eq!(platform.variant.as_deref(), variant, "{text}");
            assert_eq!(platform.to_string(), text);
            assert_eq!(platform.uname_machine(), Some(uname), "{text}");
            assert_eq!(platform.docker_hub_prefix(), Some(prefix), "{text}");
            assert!(platform.is_known(), "{text}");
        }
    }

    #[test]
    fn normalises_aliases() {
        assert_eq!(p("linux/arm64/v8"), p("linux/arm64"));
        assert_eq!(p("linux/arm"), p("linux/arm/v7"));
        assert_eq!(p("linux/arm/7"), p("linux/arm/v7"));
        assert_eq!(p("linux/aarch64"), p("linux/arm64"));
        assert_eq!(p("linux/x86_64"), p("linux/amd64"));
        assert_eq!(p("Linux/ARMHF"), p("linux/arm/v7"));
        assert_eq!(p("linux/armel"), p("linux/arm/v6"));
        assert_eq!(Platform::linux("arm64", Some("v8")).to_string(), "linux/arm64");
        assert_eq!(p("linux/arm64/v9").to_string(), "linux/arm64/v9");
    }

    #[test]
    fn rejects_bad_syntax_and_unknown() {
        for bad in ["", "linux", "linux/", "/amd64", "linux/arm/v7/x", "linux/am d64"] {
            assert_eq!(bad.parse::<Platform>(), Err(PlatformError::Syntax(bad.to_string())), "{bad:?}");
        }
        assert!(matches!(parse_known("linux/arm/v9"), Err(PlatformError::Unknown(_))));
        assert!(matches!(parse_known("windows/amd64"), Err(PlatformError::Unknown(_))));
        let message = parse_known("linux/mips").unwrap_err().to_string();
        assert!(message.contains("linux/arm/v6"), "{message}");
        for known in KNOWN_PLATFORMS {
            assert!(parse_known(known).is_ok(), "{known}");
        }
    }

    #[test]
    fn containerd_matching() {
        let arm64 = p("linux/arm64");
        let v7 = p("linux/arm/v7");
        let v6 = p("linux/arm/v6");
        let v5 = p("linux/arm/v5");
        let amd64 = p("linux/amd64");
        let i386 = p("linux/386");
        // arm64 nodes also run 32-bit ARM images; armv7 falls back to v6 and v5; never upwards.
        for image in [&arm64, &v7, &v6, &v5] {
            assert!(image.runs_on(&arm64), "{image} on arm64");
        }
        assert!(v6.runs_on(&v7) && v5.runs_on(&v7));
        assert!(!v7.runs_on(&v6) && !arm64.runs_on(&v7));
        assert!(i386.runs_on(&amd64) && !amd64.runs_on(&i386));
        assert!(!amd64.runs_on(&arm64) && !arm64.runs_on(&amd64));
        // An arm entry without variant reads as v7: an armv6 Pi never picks it.
        assert!(!Platform::linux("arm", None).runs_on(&v6));
    }

    #[test]
    fn best_match_prefers_exact_then_containerd_order() {
        let index = [p("linux/arm/v6"), p("linux/arm/v7"), p("linux/amd64"), p("linux/386")];
        assert_eq!(best_match(&p("linux/arm64"), &index), Some(&index[1]));
        assert_eq!(best_match(&p("linux/arm/v7"), &index), Some(&index[1]));
        assert_eq!(best_match(&p("linux/arm/v6"), &index), Some(&index[0]));
        assert_eq!(best_match(&p("linux/amd64"), &index), Some(&index[2]));
        assert_eq!(best_match(&p("linux/s390x"), &index), None);
        assert_eq!(best_match(&p("linux/amd64"), &index[3..]), Some(&index[3]));
    }

    #[test]
    fn native_build_hosts_exclude_arm64_for_32_bit_arm() {
        assert_eq!(p("linux/arm/v6").native_hosts()[..2], [p("linux/arm/v6"), p("linux/arm/v7")]);
        assert!(!p("linux/arm/v7").native_hosts().contains(&p("linux/arm64")));
        assert_eq!(p("linux/arm64").native_hosts(), vec![p("linux/arm64")]);
        assert_eq!(p("linux/386").native_hosts(), vec![p("linux/386"), p("linux/amd64")]);
    }

    #[test]
    fn slug_and_debian_arch() {
        assert_eq!(p("linux/arm/v7").slug(), "linux-arm-v7");
        assert_eq!(p("linux/arm/v7").debian_arch(), Some("armhf"));
        assert_eq!(p("linux/arm/v6").debian_arch(), Some("armel"));
    }

    fn node(labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn node_platform_from_labels() {
        let pi = node(&[(OS_LABEL, "linux"), (ARCH_LABEL, "arm"), (ARM_VARIANT_LABEL, "v6")]);
        assert_eq!(node_platform(&pi), Ok(p("linux/arm/v6")));
        let pi_unlabelled = node(&[(OS_LABEL, "linux"), (ARCH_LABEL, "arm")]);
        assert_eq!(node_platform(&pi_unlabelled), Ok(p("linux/arm/v7")));
        // The variant label only means something on arm nodes.
        let jetson = node(&[(OS_LABEL, "linux"), (ARCH_LABEL, "arm64"), (ARM_VARIANT_LABEL, "v7")]);
        assert_eq!(node_platform(&jetson), Ok(p("linux/arm64")));
        assert!(matches!(node_platform(&node(&[])), Err(PlatformError::NodeWithoutArch { .. })));
    }
}
