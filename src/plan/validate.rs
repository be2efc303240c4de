//! The spec checked once, into the values the later steps use: what the CRD's schema and CEL rules
//! cannot fully say (an object stored before a rule existed, or written around admission) is found
//! here, with the field and the fix in the message.

use std::time::Duration;

use crate::api::{MultiArchBuildSpec, PublishPolicy};
use crate::registry::Repository;

/// A spec whose fields parse.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidBuild {
    /// `spec.output.image`.
    pub repository: Repository,
    /// `spec.cache.image`: the repository under which each platform's build cache lives.
    pub cache: Option<Repository>,
    /// `spec.builder.timeout`, at least a second.
    pub timeout: Duration,
    /// `spec.source.git.pollInterval`, at least a second.
    pub poll_interval: Option<Duration>,
    /// `spec.publish.waitFor` with `policy: AvailablePlatforms`: how long a platform may wait before the
    /// index is published without it.
    pub partial_after: Option<Duration>,
}

/// The images `spec.builder.image` may name: the configured default builders and the operator's
/// `--allowed-builder-images`, each an exact reference or a repository prefix (`quay.io/buildah/stable`
/// allows its tags and digests, `registry.example.com/tools/` everything under it). A builder runs
/// privileged next to the push secret, so which images do is the cluster admin's choice.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AllowedImages(pub Vec<String>);

impl AllowedImages {
    pub fn allows(&self, image: &str) -> bool {
        self.0.iter().any(|entry| {
            let Some(rest) = image.strip_prefix(entry.as_str()) else { return false };
            // A tag or digest may follow a repository, never a bare host (`host:5000` is another host).
            let repository = entry.trim_end_matches('/').contains('/');
            rest.is_empty()
                || entry.ends_with('/')
                || rest.starts_with('/')
                || (repository && rest.starts_with([':', '@']))
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("spec.output.image: {0}")]
    Image(String),
    #[error("spec.cache.image: {0}")]
    CacheImage(String),
    #[error("spec.builder.timeout: {0}; use a positive duration such as 90s, 30m or 1h30m")]
    Timeout(String),
    #[error("spec.source.git.pollInterval: {0}; use a positive duration such as 5m or 1h")]
    PollInterval(String),
    #[error("spec.triggers.baseImages.pollInterval: {0}; use a positive duration such as 10m or 1h")]
    BasePollInterval(String),
    #[error("spec.publish.waitFor: {0}; use a positive duration such as 30m or 2h")]
    WaitFor(String),
    #[error(
        "spec.builder.image: {image} is not among the builder images this cluster allows ({allowed}); leave it \
         out to use the default builder, or ask the cluster admin to add it to the operator's \
         --allowed-builder-images"
    )]
    BuilderImage { image: String, allowed: String },
}

pub fn validate(spec: &MultiArchBuildSpec, allowed: &AllowedImages) -> Result<ValidBuild, SpecError> {
    if let Some(image) = spec.builder.image.as_ref().filter(|image| !allowed.allows(image)) {
        return Err(SpecError::BuilderImage { image: image.clone(), allowed: allowed.0.join(", ") });
    }
    let repository = spec.output.image.parse::<Repository>().map_err(|e| SpecError::Image(e.to_string()))?;
    let cache = spec.cache.as_ref().map(|c| c.image.parse::<Repository>()).transpose();
    let cache = cache.map_err(|e| SpecError::CacheImage(e.to_string()))?;
    let timeout = positive_duration(&spec.builder.timeout).map_err(SpecError::Timeout)?;
    let poll = spec.source.git.as_ref().and_then(|g| g.poll_interval.as_deref());
    let poll_interval = poll.map(positive_duration).transpose().map_err(SpecError::PollInterval)?;
    if let Some(trigger) = spec.triggers.as_ref().and_then(|t| t.base_images.as_ref()) {
        positive_duration(&trigger.poll_interval).map_err(SpecError::BasePollInterval)?;
    }
    let partial_after = match spec.publish.policy {
        PublishPolicy::AllPlatforms => None,
        PublishPolicy::AvailablePlatforms => {
            Some(positive_duration(&spec.publish.wait_for).map_err(SpecError::WaitFor)?)
        }
    };
    Ok(ValidBuild { repository, cache, timeout, poll_interval, partial_after })
}

pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match text.parse::<kube::core::Duration>() {
        Ok(d) if !d.is_negative() => Ok(Duration::from(d).max(Duration::from_secs(1))),
        Ok(_) => Err("must not be negative".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CacheSpec, OutputSpec};

    fn spec(image: &str, timeout: &str) -> MultiArchBuildSpec {
        let mut spec = MultiArchBuildSpec {
            output: OutputSpec { image: image.into(), ..Default::default() },
            ..Default::default()
        };
        spec.builder.timeout = timeout.into();
        spec
    }

    #[test]
    fn fields_parse_once_and_errors_name_them() {
        let validate = |spec: &MultiArchBuildSpec| validate(spec, &AllowedImages::default());
        let valid = validate(&spec("registry.example.com/blog", "90s")).unwrap();
        assert_eq!(valid.timeout, Duration::from_secs(90));
        assert_eq!(valid.repository.to_string(), "registry.example.com/blog");
        let e = validate(&spec("registry.example.com/blog", "soon")).unwrap_err();
        assert!(e.to_string().starts_with("spec.builder.timeout: "), "{e}");
        assert!(matches!(validate(&spec("Blog With Spaces", "90s")), Err(SpecError::Image(_))));
    }

    #[test]
    fn the_cache_is_a_repository_without_tag() {
        let validate = |spec: &MultiArchBuildSpec| validate(spec, &AllowedImages::default());
        let mut cached = spec("registry.example.com/blog", "90s");
        assert_eq!(validate(&cached).unwrap().cache, None);
        cached.cache = Some(CacheSpec { image: "registry.example.com/blog-cache".into() });
        let cache = validate(&cached).unwrap().cache.unwrap();
        assert_eq!((cache.registry(), cache.path()), ("registry.example.com", "blog-cache"));
        for image in ["registry.example.com/blog-cache:v1", "Blog Cache"] {
            cached.cache = Some(CacheSpec { image: image.into() });
            let e = validate(&cached).unwrap_err();
            assert!(matches!(e, SpecError::CacheImage(_)), "{image}: {e}");
            assert!(e.to_string().starts_with("spec.cache.image: "), "{e}");
        }
    }

    #[test]
    fn only_allowed_builder_images_pass_exact_or_by_repository() {
        let allowed = AllowedImages(vec![
            "quay.io/buildah/stable:v1.40".into(),
            "moby/buildkit".into(),
            "registry.example.com/tools/".into(),
            "registry.example.com".into(),
        ]);
        for image in [
            "quay.io/buildah/stable:v1.40",
            "moby/buildkit:v0.26.3-rootless",
            "moby/buildkit@sha256:0123",
            "registry.example.com/tools/buildah:1",
            "registry.example.com/x/y:1",
        ] {
            assert!(allowed.allows(image), "{image}");
        }
        for image in [
            "quay.io/buildah/stable:v1.41",
            "quay.io/buildah/stable:v1.40-evil",
            "moby/buildkit-evil:1",
            "registry.example.com:5000/tools/buildah:1",
            "registry.example.com.evil.io/x:1",
            "docker.io/moby/buildkit:v1",
        ] {
            assert!(!allowed.allows(image), "{image}");
        }
        let mut with_image = spec("registry.example.com/blog", "90s");
        with_image.builder.image = Some("evil.example.com/root:1".into());
        let e = validate(&with_image, &allowed).unwrap_err().to_string();
        assert!(e.starts_with("spec.builder.image: evil.example.com/root:1 is not among"), "{e}");
        assert!(e.contains("--allowed-builder-images") && e.contains("moby/buildkit, "), "{e}");
    }
}
