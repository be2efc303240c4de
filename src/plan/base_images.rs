//! Base images pinned by digest (pure): which image of a base each platform's build uses, and the words
//! that make a builder use exactly that image whatever its tag names by the time the build runs. With
//! the digests among a platform's build inputs, a base that moves makes new Jobs for exactly the
//! platforms whose image of it changed, and one index never mixes images of two versions of a base.

use serde::Serialize;

use crate::api::{BaseImageStatus, BuildTool, MultiArchBuildStatus};
use crate::assemble::dockerfile::FromImage;
use crate::platform::{Platform, best_match};
use crate::registry::Repository;

/// What a base image's digest names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseManifest {
    /// An index: its children by platform.
    Index(Vec<(Platform, String)>),
    /// A single image, used for every platform.
    Image,
}

/// One base image of a platform's build, pinned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PinnedBase {
    /// The `FROM` word as written (`${BASE_IMAGE}`): what buildah replaces.
    pub written: String,
    /// As the Dockerfile names it after substitution: `busybox:1.36`.
    pub image: String,
    /// The digest the build uses: the platform's child, or the index itself where the stage is not
    /// built for the target (the builder then picks the child of its own platform from it).
    pub digest: String,
}

impl PinnedBase {
    /// `busybox:1.36` pinned: `docker.io/library/busybox@sha256:...`.
    pub fn reference(&self) -> Option<String> {
        let repository = Repository::of_image(&self.image).ok()?;
        Some(format!("{repository}@{}", self.digest))
    }
}

/// `from` pinned for `platform`, given the digest its tag names and what that digest is; `None` where
/// the index has no image for the platform (the builder reports that, naming what there is).
pub fn pin(from: &FromImage, digest: &str, manifest: &BaseManifest, platform: &Platform) -> Option<PinnedBase> {
    let digest = match manifest {
        BaseManifest::Index(children) if from.for_target => {
            let platforms: Vec<Platform> = children.iter().map(|(p, _)| p.clone()).collect();
            let chosen = best_match(platform, &platforms)?;
            children.iter().find(|(p, _)| p == chosen).map(|(_, d)| d.clone())?
        }
        BaseManifest::Index(_) | BaseManifest::Image => digest.to_string(),
    };
    Some(PinnedBase { written: from.written.clone(), image: from.image.clone(), digest })
}

/// The builder's words that replace each base by its pinned image. buildah replaces a `FROM` by the
/// word as written (before substitution); BuildKit looks named contexts up by the substituted name in
/// Docker's short form without `:latest`; `archway assemble` by the substituted name.
pub fn pin_args(tool: BuildTool, pins: &[PinnedBase]) -> Vec<String> {
    let mut words = Vec::new();
    for pin in pins {
        let Some(reference) = pin.reference() else { continue };
        match tool {
            // A name with `=` cannot be told from the value by buildah: that base stays unpinned.
            BuildTool::Buildah if !pin.written.contains('=') => {
                words.extend(["--build-context".to_string(), format!("{}=docker-image://{reference}", pin.written)]);
            }
            BuildTool::Buildah => {}
            BuildTool::Buildkit => {
                let name = short_name(&pin.image);
                words.extend(["--opt".to_string(), format!("context:{name}=docker-image://{reference}")]);
            }
            BuildTool::Assemble => words.extend(["--base".to_string(), format!("{}={reference}", pin.image)]),
        }
    }
    words
}

/// Docker's familiar form of an image name (`docker.io/library/busybox:latest` is `busybox`), as
/// BuildKit's Dockerfile frontend names contexts.
fn short_name(image: &str) -> String {
    let name = image.strip_prefix("docker.io/").or_else(|| image.strip_prefix("index.docker.io/")).unwrap_or(image);
    let name = name.strip_prefix("library/").filter(|rest| !rest.contains('/')).unwrap_or(name);
    name.strip_suffix(":latest").unwrap_or(name).to_string()
}

/// One note per base image whose digest changed since `old`: from which to which, and which platforms
/// build again (their image of it changed) and which not.
pub fn moved(old: &MultiArchBuildStatus, new: &MultiArchBuildStatus) -> Vec<String> {
    let child = |status: &MultiArchBuildStatus, platform: &str, image: &str| {
        let entry = status.platforms.iter().find(|p| p.platform == platform)?;
        entry.base_images.iter().find(|b| b.image == image).and_then(|b| b.digest.clone())
    };
    let mut notes = Vec::new();
    for base in &new.base_images {
        let before = old.base_images.iter().find(|b| b.image == base.image).and_then(|b| b.digest.as_ref());
        let (Some(before), Some(after)) = (before, base.digest.as_ref()) else { continue };
        if before == after {
            continue;
        }
        let using = new.platforms.iter().filter(|p| child(new, &p.platform, &base.image).is_some());
        let (again, same): (Vec<&str>, Vec<&str>) =
            using.map(|p| p.platform.as_str()).partition(|p| child(old, p, &base.image) != child(new, p, &base.image));
        let list = |platforms: Vec<&str>| if platforms.is_empty() { "none".to_string() } else { platforms.join(", ") };
        notes.push(format!(
            "{} moved from {before} to {after}; building again: {}; unchanged: {}",
            base.image,
            list(again),
            list(same)
        ));
    }
    notes
}

/// A platform's pins as its status shows them.
pub fn shown(pins: &[PinnedBase]) -> Vec<BaseImageStatus> {
    pins.iter()
        .map(|p| BaseImageStatus { image: p.image.clone(), digest: Some(p.digest.clone()), message: None })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(written: &str, image: &str, for_target: bool) -> FromImage {
        FromImage { written: written.into(), image: image.into(), for_target }
    }

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn index() -> BaseManifest {
        BaseManifest::Index(vec![
            (Platform::linux("amd64", None), digest('a')),
            (Platform::linux("arm64", Some("v8")), digest('b')),
            (Platform::linux("arm", Some("v7")), digest('c')),
        ])
    }

    #[test]
    fn a_target_stage_pins_the_platforms_child_by_containerds_rules() {
        let base = from("${BASE}", "busybox:1.36", true);
        let arm64 = pin(&base, &digest('i'), &index(), &Platform::linux("arm64", None)).map(|p| p.digest);
        assert_eq!(arm64, Some(digest('b')));
        // arm/v6 has no child of its own; v7 does not run on v6, so there is none to pin.
        assert_eq!(pin(&base, &digest('i'), &index(), &Platform::linux("arm", Some("v6"))), None);
        let image = pin(&base, &digest('i'), &BaseManifest::Image, &Platform::linux("arm64", None));
        assert_eq!(image.map(|p| p.digest), Some(digest('i')));
    }

    #[test]
    fn a_stage_of_the_build_platform_pins_the_index() {
        let tools = from("golang:1.23", "golang:1.23", false);
        let pinned = pin(&tools, &digest('i'), &index(), &Platform::linux("arm64", None));
        assert_eq!(pinned.map(|p| p.digest), Some(digest('i')));
    }

    #[test]
    fn each_builder_gets_the_pin_under_the_name_it_looks_up() {
        let pins = [PinnedBase { written: "${BASE}".into(), image: "busybox:latest".into(), digest: digest('b') }];
        let pinned = format!("docker-image://docker.io/library/busybox@{}", digest('b'));
        assert_eq!(pin_args(BuildTool::Buildah, &pins), ["--build-context".to_string(), format!("${{BASE}}={pinned}")]);
        assert_eq!(pin_args(BuildTool::Buildkit, &pins), ["--opt".to_string(), format!("context:busybox={pinned}")]);
        let assemble = format!("busybox:latest=docker.io/library/busybox@{}", digest('b'));
        assert_eq!(pin_args(BuildTool::Assemble, &pins), ["--base".to_string(), assemble]);
        let odd = [PinnedBase { written: "${B:-a=b}".into(), ..pins[0].clone() }];
        assert!(pin_args(BuildTool::Buildah, &odd).is_empty());
    }

    #[test]
    fn a_move_names_the_digests_and_the_platforms_that_build_again() {
        let status = |index: char, amd64: char, arm64: char| {
            let base =
                |c: char| vec![BaseImageStatus { image: "busybox".into(), digest: Some(digest(c)), message: None }];
            let platform = |name: &str, c: char| crate::api::PlatformStatus {
                platform: name.into(),
                base_images: base(c),
                ..Default::default()
            };
            MultiArchBuildStatus {
                base_images: base(index),
                platforms: vec![platform("linux/amd64", amd64), platform("linux/arm64", arm64)],
                ..Default::default()
            }
        };
        let old = status('i', 'a', 'b');
        assert!(moved(&old, &old).is_empty());
        let notes = moved(&old, &status('j', 'a', 'c'));
        let expected = format!(
            "busybox moved from {} to {}; building again: linux/arm64; unchanged: linux/amd64",
            digest('i'),
            digest('j')
        );
        assert_eq!(notes, [expected]);
    }

    #[test]
    fn short_names_are_dockers_familiar_ones() {
        assert_eq!(short_name("docker.io/library/busybox:latest"), "busybox");
        assert_eq!(short_name("busybox:1.36"), "busybox:1.36");
        assert_eq!(short_name("docker.io/grafana/grafana"), "grafana/grafana");
        assert_eq!(short_name("127.0.0.1:5000/library/busybox:latest"), "127.0.0.1:5000/library/busybox");
    }
}
