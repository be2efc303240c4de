//! Where the builder and clone images run: the platforms of their indexes, read from the registry
//! once per reference and kept (an hour; a minute after a failed read), shared by every build. A node
//! can run a build pod only where containerd finds a child of each of its images for the node's platform.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use tracing::{info, warn};

use super::one_read::OneRead;
use crate::api::{BuildTool, BuilderKind, MultiArchBuildSpec};
use crate::plan::builder_images::{BuildImages, ToolImage};
use crate::plan::job::BuilderConfig;
use crate::platform::Platform;
use crate::registry::retry::RetryPolicy;
use crate::registry::{Registry, RegistryOptions, lookup, mirrored};

const KEEP: Duration = Duration::from_secs(3600);
const KEEP_FAILURE: Duration = Duration::from_secs(60);

/// What is known of one image's platforms.
#[derive(Clone, Debug, PartialEq)]
pub enum ImagePlatforms {
    Known(Vec<Platform>),
    /// The index could not be read (the message says why): placement takes it to run everywhere, as
    /// before archway read indexes, and the pull on the node has the last word.
    Unknown(String),
}

impl ImagePlatforms {
    pub fn known(&self) -> Result<&[Platform], &str> {
        match self {
            ImagePlatforms::Known(platforms) => Ok(platforms),
            ImagePlatforms::Unknown(why) => Err(why),
        }
    }
}

pub struct ToolImages {
    /// `registry=mirror` (`--registry-mirror`): where images of a registry are read instead.
    mirrors: Vec<(String, String)>,
    /// A dockerconfigjson (`--registry-auth-file`) with credentials for reading them.
    auth: Option<Vec<u8>>,
    /// How to reach registries: the CA, the token realms allowed.
    options: RegistryOptions,
    read: Mutex<HashMap<String, (Instant, ImagePlatforms)>>,
    /// Images being read.
    reading: OneRead,
}

impl ToolImages {
    pub fn new(mirrors: Vec<(String, String)>, auth: Option<Vec<u8>>, options: RegistryOptions) -> ToolImages {
        // One quick try: a reconcile waits for it, and a failure is read again a minute later.
        let options = RegistryOptions { request_timeout: Duration::from_secs(10), retry: RetryPolicy::NONE, ..options };
        ToolImages { mirrors, auth, options, read: Mutex::new(HashMap::new()), reading: OneRead::default() }
    }

    /// The platforms `image` runs on, from what was read before while it is fresh, else from the registry.
    pub async fn platforms(&self, image: &str) -> ImagePlatforms {
        let fresh = |(at, platforms): &(Instant, ImagePlatforms)| {
            let keep = if matches!(platforms, ImagePlatforms::Known(_)) { KEEP } else { KEEP_FAILURE };
            (at.elapsed() < keep).then(|| platforms.clone())
        };
        let kept = || self.read.lock().ok().and_then(|read| read.get(image).and_then(fresh));
        if let Some(platforms) = kept() {
            return platforms;
        }
        let _reading = self.reading.lock(image).await;
        if let Some(platforms) = kept() {
            return platforms;
        }
        let platforms = match self.fetch(image).await {
            Ok(platforms) => {
                let list: Vec<String> = platforms.iter().map(Platform::to_string).collect();
                info!(image, platforms = list.join(", "), "read where a builder image runs");
                ImagePlatforms::Known(platforms)
            }
            Err(why) => {
                warn!(image, "cannot read where a builder image runs: {why}");
                ImagePlatforms::Unknown(why)
            }
        };
        if let Ok(mut read) = self.read.lock() {
            read.insert(image.to_string(), (Instant::now(), platforms.clone()));
        }
        platforms
    }

    async fn fetch(&self, image: &str) -> Result<Vec<Platform>, String> {
        let reference: Reference = image.parse().map_err(|e| format!("{image:?} is no image reference: {e}"))?;
        let reference = mirrored(&reference, &self.mirrors);
        let host = reference.resolve_registry().to_string();
        let auth = match &self.auth {
            Some(config) => lookup("--registry-auth-file", config, &host).map_err(|e| e.to_string())?,
            None => None,
        };
        let registry =
            Registry::new(self.options.clone(), auth.unwrap_or(RegistryAuth::Anonymous)).map_err(|e| e.to_string())?;
        let platforms = registry.platforms_of(&reference).await.map_err(|e| e.to_string())?;
        if platforms.is_empty() {
            return Err(format!("{reference} names no platform"));
        }
        Ok(platforms)
    }
}

/// The images one build's pods may run and where they run, as read for one reconcile.
pub struct BuildToolImages {
    buildah: (String, ImagePlatforms),
    buildkit: (String, ImagePlatforms),
    assemble: (String, ImagePlatforms),
    git: Option<(String, ImagePlatforms)>,
}

impl BuildToolImages {
    /// Reads the images of the builders `spec.builder.kind` may use (a builder it may not use is never
    /// read) and, for a git source, the clone's.
    pub async fn read(images: &ToolImages, spec: &MultiArchBuildSpec, config: &BuilderConfig) -> BuildToolImages {
        let tools = spec.builder.kind.tools();
        let read = |tool: BuildTool, default: &str| {
            let image = spec.builder.image.clone().unwrap_or_else(|| default.to_string());
            async move {
                let platforms = match tools.contains(&tool) {
                    true => images.platforms(&image).await,
                    false => ImagePlatforms::Unknown("not used".into()),
                };
                (image, platforms)
            }
        };
        let buildah = read(BuildTool::Buildah, &config.buildah_image).await;
        let buildkit = read(BuildTool::Buildkit, &config.buildkit_image).await;
        // `auto` assembles only what the operator reads the Dockerfile of: a ConfigMap context's.
        let assembles = match spec.builder.kind {
            BuilderKind::Assemble => true,
            BuilderKind::Auto => spec.source.config_map.is_some(),
            BuilderKind::Buildah | BuilderKind::Buildkit => false,
        };
        let assemble = match assembles {
            true => (config.assemble_image.clone(), images.platforms(&config.assemble_image).await),
            false => (config.assemble_image.clone(), ImagePlatforms::Unknown("not used".into())),
        };
        let git = match &spec.source.git {
            Some(_) => Some((config.git_image.clone(), images.platforms(&config.git_image).await)),
            None => None,
        };
        BuildToolImages { buildah, buildkit, assemble, git }
    }

    pub fn view(&self) -> BuildImages<'_> {
        fn image((reference, platforms): &(String, ImagePlatforms)) -> ToolImage<'_> {
            ToolImage { reference: reference.as_str(), platforms: platforms.known() }
        }
        BuildImages {
            buildah: image(&self.buildah),
            buildkit: image(&self.buildkit),
            assemble: image(&self.assemble),
            git: self.git.as_ref().map(image),
        }
    }
}
