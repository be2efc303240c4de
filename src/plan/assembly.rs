//! Whether a platform's image can be assembled without a builder (see [`crate::assemble`]): decided
//! from the Dockerfile of a ConfigMap context, which the operator reads anyway (its fingerprint is a
//! build input). A git source's Dockerfile is read only by the build pod: `auto` uses a builder for it.

use std::collections::{BTreeMap, BTreeSet};

use crate::assemble::dockerfile::{RecipeError, recipe};
use crate::platform::Platform;

/// The Dockerfile of a ConfigMap context, and which of the context's files are archives (an `ADD` of
/// one extracts it, which needs a builder).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ContextDockerfile {
    pub text: String,
    pub archives: BTreeSet<String>,
}

/// Whether the Dockerfile can be assembled for a platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assembly {
    Possible,
    /// Why a builder is needed: "RUN at line 6 needs a builder".
    NeedsBuilder(String),
    /// The operator does not read the Dockerfile (a git source).
    Unknown,
}

/// Reads the Dockerfile for `platform` with its build args.
pub fn assembly(
    dockerfile: Option<&ContextDockerfile>,
    args: &BTreeMap<String, String>,
    platform: &Platform,
) -> Assembly {
    let Some(dockerfile) = dockerfile else { return Assembly::Unknown };
    // Which platform would assemble it does not change whether it can.
    let recipe = match recipe(&dockerfile.text, args, platform, platform) {
        Ok(recipe) => recipe,
        Err(RecipeError::NeedsBuilder(needs)) => return Assembly::NeedsBuilder(needs.to_string()),
        // A builder reports it, as it would any Dockerfile it cannot read.
        Err(invalid @ RecipeError::Invalid { .. }) => return Assembly::NeedsBuilder(invalid.to_string()),
    };
    let archive = recipe.copies.iter().filter(|c| c.add).find_map(|copy| {
        let named = copy.sources.iter().map(|s| s.trim_start_matches("./").trim_start_matches('/'));
        named.into_iter().find(|s| dockerfile.archives.contains(*s)).map(|s| (copy.line, s.to_string()))
    });
    match archive {
        Some((line, source)) => {
            Assembly::NeedsBuilder(format!("ADD of the archive {source} at line {line} needs a builder"))
        }
        None => Assembly::Possible,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(text: &str) -> ContextDockerfile {
        ContextDockerfile { text: text.into(), archives: BTreeSet::from(["site.tar.gz".to_string()]) }
    }

    fn of(text: &str) -> Assembly {
        assembly(Some(&context(text)), &BTreeMap::new(), &Platform::linux("arm64", None))
    }

    #[test]
    fn a_dockerfile_that_runs_nothing_is_assembled() {
        assert_eq!(of("FROM busybox\nCOPY index.html /srv/\nCMD [\"httpd\"]\n"), Assembly::Possible);
        assert_eq!(of("FROM busybox\nADD index.html /srv/\n"), Assembly::Possible);
    }

    #[test]
    fn what_needs_a_builder_says_where() {
        assert_eq!(
            of("FROM busybox\nCOPY index.html /srv/\nRUN uname -m > /srv/arch\n"),
            Assembly::NeedsBuilder("RUN at line 3 needs a builder".into())
        );
        assert_eq!(
            of("FROM busybox\nADD site.tar.gz /srv/\n"),
            Assembly::NeedsBuilder("ADD of the archive site.tar.gz at line 2 needs a builder".into())
        );
        assert!(matches!(of("COPY x /\n"), Assembly::NeedsBuilder(why) if why.contains("line 1")));
    }

    #[test]
    fn a_git_source_is_not_read() {
        assert_eq!(assembly(None, &BTreeMap::new(), &Platform::linux("amd64", None)), Assembly::Unknown);
    }
}
