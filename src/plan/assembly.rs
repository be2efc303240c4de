//! Whether a platform's image can be assembled without a builder (see [`crate::assemble`]): decided
//! from the Dockerfile of a ConfigMap context, which the operator reads anyway (its fingerprint is a
//! build input), or of a git source's commit, as its resolve Job reported it.

use std::collections::{BTreeMap, BTreeSet};

use crate::assemble::dockerfile::{RecipeError, recipe};
use crate::platform::Platform;

/// The Dockerfile of a build's context, and which of the context's files are archives (an `ADD` of
/// one extracts it, which needs a builder).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ContextDockerfile {
    pub text: String,
    /// `None` where the context's files are not read (a git source): any `ADD` may be of an archive.
    pub archives: Option<BTreeSet<String>>,
}

/// Whether the Dockerfile can be assembled for a platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assembly {
    Possible,
    /// Why a builder is needed: "RUN at line 6 needs a builder".
    NeedsBuilder(String),
    /// The operator has not read the Dockerfile (a git source not resolved yet, or whose Dockerfile
    /// could not be reported).
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
        let mut named = copy.sources.iter().map(|s| s.trim_start_matches("./").trim_start_matches('/'));
        let line = copy.line;
        match &dockerfile.archives {
            Some(archives) => named
                .find(|s| archives.contains(*s))
                .map(|s| format!("ADD of the archive {s} at line {line} needs a builder")),
            None => named.next().map(|s| {
                format!("ADD of {s} at line {line} needs a builder: it may be an archive, and a git source's files are not read here")
            }),
        }
    });
    archive.map_or(Assembly::Possible, Assembly::NeedsBuilder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(text: &str) -> ContextDockerfile {
        ContextDockerfile { text: text.into(), archives: Some(BTreeSet::from(["site.tar.gz".to_string()])) }
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
    fn a_dockerfile_not_read_is_unknown() {
        assert_eq!(assembly(None, &BTreeMap::new(), &Platform::linux("amd64", None)), Assembly::Unknown);
    }

    #[test]
    fn without_the_context_files_any_add_needs_a_builder() {
        let git = |text: &str| {
            let dockerfile = ContextDockerfile { text: text.into(), archives: None };
            assembly(Some(&dockerfile), &BTreeMap::new(), &Platform::linux("amd64", None))
        };
        assert_eq!(git("FROM busybox\nCOPY site.tar.gz /srv/\n"), Assembly::Possible);
        assert!(
            matches!(git("FROM busybox\nADD ./index.html /srv/\n"), Assembly::NeedsBuilder(why) if why.starts_with("ADD of index.html at line 2 needs a builder: it may be an archive")),
        );
    }
}
