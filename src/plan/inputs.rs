//! The inputs of one platform's build and the Job name derived from them: a changed input means a new
//! Job (a Job's pod template is immutable), an unchanged one never a duplicate.

use std::collections::BTreeMap;

use serde::Serialize;

use super::base_images::PinnedBase;
use crate::api::{BuilderSpec, MultiArchBuildSpec, OutputSpec, Source};
use crate::platform::Platform;
use crate::registry::digest_of;

/// Kubernetes puts the Job name into the `job-name` label of its pods: at most 63 characters.
const MAX_JOB_NAME: usize = 63;
const MAX_LABEL_VALUE: usize = 63;
const HASH_LEN: usize = 10;

/// Everything that determines what one platform's build produces.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInputs {
    pub platform: String,
    pub source: Source,
    /// A fingerprint of the context's content where the spec names it only by reference (a
    /// ConfigMap's data), so editing the ConfigMap rebuilds.
    pub context_fingerprint: Option<String>,
    pub dockerfile: String,
    /// `buildArgs` overlaid with this platform's `platformBuildArgs`.
    pub build_args: BTreeMap<String, String>,
    pub builder: BuilderSpec,
    pub image: String,
    pub push_secret: Option<String>,
    pub insecure_registry: bool,
    /// `spec.cache.image`: where the builder reads and writes its cache. Left out when unset, so the
    /// hash of a build without a cache is what it was before caches existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// The base images, pinned by the digests this platform's build uses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub base_images: Vec<PinnedBase>,
    /// The value of [`REBUILD_ANNOTATION`]: a new value is new inputs, so every platform builds again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuild_requested_at: Option<String>,
}

/// Changing this annotation of a MultiArchBuild (any value; a timestamp by convention) builds every
/// platform again with unchanged inputs: the way to retry a failed build once its cause is fixed.
pub const REBUILD_ANNOTATION: &str = "archway.dev/rebuild-requested-at";

impl BuildInputs {
    pub fn new(spec: &MultiArchBuildSpec, platform: &Platform, context_fingerprint: Option<&str>) -> BuildInputs {
        BuildInputs {
            platform: platform.to_string(),
            source: spec.source.clone(),
            context_fingerprint: context_fingerprint.map(str::to_string),
            dockerfile: spec.dockerfile.clone(),
            build_args: build_args(spec, platform),
            builder: spec.builder.clone(),
            image: spec.output.image.clone(),
            push_secret: spec.output.push_secret.as_ref().map(|s| s.name.clone()),
            insecure_registry: spec.output.insecure_registry,
            cache: spec.cache.as_ref().map(|c| c.image.clone()),
            base_images: Vec::new(),
            rebuild_requested_at: None,
        }
    }

    /// A short, stable hash of the inputs (hex).
    pub fn hash(&self) -> String {
        // Serialising a struct of BTreeMaps is deterministic; a failure here would be a bug in
        // our own types, and hashing the Debug form keeps the name stable all the same.
        let bytes = serde_json::to_vec(self).unwrap_or_else(|_| format!("{self:?}").into_bytes());
        short_hash(&bytes, HASH_LEN)
    }
}

/// `buildArgs` overlaid with the platform's entry in `platformBuildArgs`. Keys of `platformBuildArgs`
/// are compared after normalisation, so `linux/arm` and `linux/arm/v7` name the same platform.
pub fn build_args(spec: &MultiArchBuildSpec, platform: &Platform) -> BTreeMap<String, String> {
    let mut args = spec.build_args.clone();
    for (key, platform_args) in &spec.platform_build_args {
        if key.parse::<Platform>().is_ok_and(|p| &p == platform) {
            args.extend(platform_args.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    args
}

/// The per-platform tags the operator pushes when `platformTags` is set: `<tag>-<arch><variant>`
/// (`new-armv7`), each naming that platform's verified image.
pub fn platform_tags(output: &OutputSpec, platform: &Platform) -> Vec<String> {
    if !output.platform_tags {
        return Vec::new();
    }
    let arch = format!("{}{}", platform.architecture, platform.variant.as_deref().unwrap_or(""));
    output.tags.iter().map(|tag| format!("{tag}-{arch}")).collect()
}

/// The first `len` hex digits (at most 64) of the sha256 of `bytes`: names derived from content.
pub fn short_hash(bytes: &[u8], len: usize) -> String {
    digest_of(bytes)["sha256:".len()..].chars().take(len).collect()
}

/// `<build>-<platform slug>-<hash>`. When the whole would pass 63 characters, the build name is cut
/// and a hash of all of it added, so two long names that share a beginning still get two Jobs.
pub fn job_name(build: &str, platform: &Platform, hash: &str) -> String {
    let suffix = format!("-{}-{hash}", platform.slug());
    format!("{}{suffix}", shortened(build, MAX_JOB_NAME.saturating_sub(suffix.len())))
}

/// `<build>-resolve-<hash>`: the Job that resolves a git revision, shortened as [`job_name`] is.
pub fn resolve_job_name(build: &str, hash: &str) -> String {
    let suffix = format!("-resolve-{hash}");
    format!("{}{suffix}", shortened(build, MAX_JOB_NAME.saturating_sub(suffix.len())))
}

/// The value of the `archway.dev/build` label for a build name: the name itself when it fits a label
/// value (63 characters), else its beginning and a hash of all of it.
pub fn build_label(build: &str) -> String {
    shortened(build, MAX_LABEL_VALUE)
}

/// `name` if it has at most `room` characters, else its beginning, `-` and 6 hex of its hash in that room.
fn shortened(name: &str, room: usize) -> String {
    if name.len() <= room {
        return name.to_string();
    }
    let hash = short_hash(name.as_bytes(), 6);
    let prefix: String = name.chars().take(room.saturating_sub(hash.len() + 1)).collect();
    format!("{}-{hash}", prefix.trim_end_matches(['-', '.']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CacheSpec, LocalRef};

    fn spec() -> MultiArchBuildSpec {
        MultiArchBuildSpec {
            source: Source { config_map: Some(LocalRef { name: "ctx".into() }), git: None },
            platforms: vec!["linux/amd64".into(), "linux/arm/v6".into()],
            build_args: [("A".into(), "1".into()), ("BASE".into(), "busybox".into())].into(),
            platform_build_args: [("linux/arm/v6".into(), [("BASE".into(), "arm32v6/busybox".into())].into())].into(),
            output: OutputSpec { image: "registry.example.com/blog".into(), ..Default::default() },
            ..Default::default()
        }
    }

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn platform_build_args_override_build_args() {
        let args = build_args(&spec(), &p("linux/arm/v6"));
        assert_eq!(args["BASE"], "arm32v6/busybox");
        assert_eq!(args["A"], "1");
        assert_eq!(build_args(&spec(), &p("linux/amd64"))["BASE"], "busybox");
    }

    #[test]
    fn platform_build_args_keys_are_normalised() {
        let mut spec = spec();
        spec.platform_build_args = [("linux/arm".into(), [("X".into(), "y".into())].into())].into();
        assert_eq!(build_args(&spec, &p("linux/arm/v7")).get("X").map(String::as_str), Some("y"));
    }

    #[test]
    fn hash_follows_inputs() {
        let base = BuildInputs::new(&spec(), &p("linux/amd64"), Some("cm-1")).hash();
        assert_eq!(base.len(), HASH_LEN);
        assert_eq!(base, BuildInputs::new(&spec(), &p("linux/amd64"), Some("cm-1")).hash());
        assert_ne!(base, BuildInputs::new(&spec(), &p("linux/amd64"), Some("cm-2")).hash());
        assert_ne!(base, BuildInputs::new(&spec(), &p("linux/arm/v6"), Some("cm-1")).hash());
        let mut changed = spec();
        changed.dockerfile = "Dockerfile.prod".into();
        assert_ne!(base, BuildInputs::new(&changed, &p("linux/amd64"), Some("cm-1")).hash());
        // Only this platform's own build args count: another platform's entry changes nothing.
        let mut other = spec();
        other.platform_build_args.insert("linux/arm64".into(), [("X".into(), "1".into())].into());
        assert_eq!(base, BuildInputs::new(&other, &p("linux/amd64"), Some("cm-1")).hash());
        // Tags, and platform tags, are pushed by the operator after the build: no input of it.
        let mut retagged = spec();
        retagged.output.tags = vec!["v2".into()];
        retagged.output.platform_tags = true;
        assert_eq!(base, BuildInputs::new(&retagged, &p("linux/amd64"), Some("cm-1")).hash());
        // A rebuild request is a new build of the same spec.
        let requested = BuildInputs {
            rebuild_requested_at: Some("2026-12-03T10:00:00Z".into()),
            ..BuildInputs::new(&spec(), &p("linux/amd64"), Some("cm-1"))
        };
        assert_ne!(base, requested.hash());
        // A cache is an input: turning it on, or moving it, makes new Jobs.
        let mut cached = spec();
        cached.cache = Some(CacheSpec { image: "registry.example.com/blog-cache".into() });
        let with_cache = BuildInputs::new(&cached, &p("linux/amd64"), Some("cm-1")).hash();
        assert_ne!(base, with_cache);
        cached.cache = Some(CacheSpec { image: "registry.example.com/other-cache".into() });
        assert_ne!(with_cache, BuildInputs::new(&cached, &p("linux/amd64"), Some("cm-1")).hash());
    }

    /// Existing builds keep their Job names (and are not built again) when the operator learns caches.
    #[test]
    fn no_cache_leaves_the_hash_as_it_was() {
        let inputs = BuildInputs::new(&spec(), &p("linux/amd64"), Some("cm-1"));
        let json = serde_json::to_value(&inputs).unwrap();
        assert!(json.get("cache").is_none(), "{json}");
    }

    #[test]
    fn platform_tags_name_arch_and_variant() {
        let mut output = spec().output;
        output.tags = vec!["new".into()];
        assert!(platform_tags(&output, &p("linux/arm/v7")).is_empty());
        output.platform_tags = true;
        assert_eq!(platform_tags(&output, &p("linux/arm/v7")), ["new-armv7"]);
        assert_eq!(platform_tags(&output, &p("linux/arm64")), ["new-arm64"]);
    }

    #[test]
    fn job_names_fit_in_a_label() {
        assert_eq!(job_name("blog", &p("linux/arm/v7"), "0123456789"), "blog-linux-arm-v7-0123456789");
        let long = "a".repeat(60) + "-b";
        let name = job_name(&long, &p("linux/arm/v7"), "0123456789");
        assert_eq!(name.len(), MAX_JOB_NAME);
        assert!(name.ends_with("-linux-arm-v7-0123456789"));
        let other = job_name(&("a".repeat(60) + "-c"), &p("linux/arm/v7"), "0123456789");
        assert_ne!(name, other, "names that share their beginning get Jobs of their own");
        let dashed = format!("{}-{}", "a".repeat(31), "b".repeat(10));
        assert!(!job_name(&dashed, &p("linux/arm/v7"), "0123456789").contains("--"));
    }

    #[test]
    fn build_labels_fit_a_label_value() {
        assert_eq!(build_label("blog"), "blog");
        let long = "b".repeat(253);
        let label = build_label(&long);
        assert_eq!(label.len(), MAX_LABEL_VALUE);
        assert_ne!(label, build_label(&("b".repeat(252) + "c")));
    }
}
