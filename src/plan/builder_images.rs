//! The images a build pod runs (its builder's, and the clone's for a git source) and where they run:
//! a node can run the pod only where containerd finds a child of each for the node's platform.

use crate::api::BuildTool;
use crate::platform::{Platform, best_match};

/// An image a build pod runs (a builder, the git clone) and the platforms its index has children for:
/// a node runs it when containerd would find a child for the node's platform. `platforms` is why not
/// when the index could not be read: then it is taken to run everywhere, and the pull has the last word.
#[derive(Clone, Copy, Debug)]
pub struct ToolImage<'a> {
    pub reference: &'a str,
    pub platforms: Result<&'a [Platform], &'a str>,
}

impl ToolImage<'_> {
    pub(super) fn runs_on(&self, host: &Platform) -> bool {
        match self.platforms {
            Ok(children) => best_match(host, children).is_some(),
            Err(_) => true,
        }
    }

    /// `quay.io/buildah/stable:v1.40 (linux/amd64, linux/arm64)`.
    fn described(&self) -> String {
        let platforms = self.platforms.unwrap_or_default().iter().map(Platform::to_string);
        format!("{} ({})", self.reference, platforms.collect::<Vec<_>>().join(", "))
    }
}

/// The images the build pod of one platform may run.
#[derive(Clone, Copy, Debug)]
pub struct BuildImages<'a> {
    pub buildah: ToolImage<'a>,
    pub buildkit: ToolImage<'a>,
    /// The operator's own image, which assembles images (builder `assemble`).
    pub assemble: ToolImage<'a>,
    /// The clone's image, for a git source.
    pub git: Option<ToolImage<'a>>,
}

impl BuildImages<'static> {
    /// Images whose platforms are not known: they count as running everywhere.
    #[cfg(test)]
    pub fn unread() -> BuildImages<'static> {
        let image = |reference| ToolImage { reference, platforms: Err("not read") };
        BuildImages { buildah: image("buildah"), buildkit: image("buildkit"), assemble: image("archway"), git: None }
    }
}

impl BuildImages<'_> {
    fn builder(&self, tool: BuildTool) -> &ToolImage<'_> {
        match tool {
            BuildTool::Buildah => &self.buildah,
            BuildTool::Buildkit => &self.buildkit,
            BuildTool::Assemble => &self.assemble,
        }
    }

    /// Every image the pod of `tool` runs, the builder first.
    fn of(&self, tool: BuildTool) -> impl Iterator<Item = &ToolImage<'_>> {
        std::iter::once(self.builder(tool)).chain(self.git.iter())
    }

    pub(super) fn run_on(&self, tool: BuildTool, host: &Platform) -> bool {
        self.of(tool).all(|image| image.runs_on(host))
    }

    /// Whether `tool`'s images are all known: their children say where they run.
    pub(super) fn known(&self, tool: BuildTool) -> bool {
        self.of(tool).all(|image| image.platforms.is_ok())
    }

    /// For the status: which of `tool`'s images were placed blind, and why.
    pub(super) fn placed_blind(&self, tool: BuildTool) -> Vec<String> {
        let unread = self.of(tool).filter_map(|image| image.platforms.err().map(|why| (image.reference, why)));
        unread
            .map(|(image, why)| format!("where {image} runs is not known ({why}); placed as if on every node"))
            .collect()
    }

    /// The images of `tools` that have no child for `host`, with where they run.
    pub(super) fn missing_on(&self, tools: &[BuildTool], host: &Platform) -> String {
        let mut missing: Vec<String> = Vec::new();
        for image in tools.iter().flat_map(|tool| self.of(*tool)) {
            let described = image.described();
            if !image.runs_on(host) && !missing.contains(&described) {
                missing.push(described);
            }
        }
        missing.join(", ")
    }
}
