//! The spec checked once, into the values the later steps use: what the CRD's schema and CEL rules
//! cannot fully say (an object stored before a rule existed, or written around admission) is found
//! here, with the field and the fix in the message.

use std::time::Duration;

use crate::api::MultiArchBuildSpec;
use crate::registry::Repository;

/// A spec whose fields parse.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidBuild {
    /// `spec.output.image`.
    pub repository: Repository,
    /// `spec.builder.timeout`, at least a second.
    pub timeout: Duration,
    /// `spec.source.git.pollInterval`, at least a second.
    pub poll_interval: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("spec.output.image: {0}")]
    Image(String),
    #[error("spec.builder.timeout: {0}; use a positive duration such as 90s, 30m or 1h30m")]
    Timeout(String),
    #[error("spec.source.git.pollInterval: {0}; use a positive duration such as 5m or 1h")]
    PollInterval(String),
}

pub fn validate(spec: &MultiArchBuildSpec) -> Result<ValidBuild, SpecError> {
    let repository = spec.output.image.parse::<Repository>().map_err(|e| SpecError::Image(e.to_string()))?;
    let timeout = positive_duration(&spec.builder.timeout).map_err(SpecError::Timeout)?;
    let poll = spec.source.git.as_ref().and_then(|g| g.poll_interval.as_deref());
    let poll_interval = poll.map(positive_duration).transpose().map_err(SpecError::PollInterval)?;
    Ok(ValidBuild { repository, timeout, poll_interval })
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match text.parse::<kube::core::Duration>() {
        Ok(d) if !d.is_negative() => Ok(Duration::from(d).max(Duration::from_secs(1))),
        Ok(_) => Err("must not be negative".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OutputSpec;

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
        let valid = validate(&spec("registry.example.com/blog", "90s")).unwrap();
        assert_eq!(valid.timeout, Duration::from_secs(90));
        assert_eq!(valid.repository.to_string(), "registry.example.com/blog");
        let e = validate(&spec("registry.example.com/blog", "soon")).unwrap_err();
        assert!(e.to_string().starts_with("spec.builder.timeout: "), "{e}");
        assert!(matches!(validate(&spec("Blog With Spaces", "90s")), Err(SpecError::Image(_))));
    }
}
