//! The base images of builds, read from their registries: the digest a tag names, read once and
//! shared by every build that reads it with the same credentials (again after the build's poll
//! interval, or a minute for a first read), and what a digest names (kept: that never changes). A
//! build's recorded digests (`status.baseImages`) are used as they are unless it polls or asks for a
//! rebuild, so a reconcile of a settled build makes no request.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oci_client::Reference;
use tracing::{info, warn};

use super::Context;
use super::one_read::OneRead;
use super::publish::push_credentials;
use crate::api::{BaseImageStatus, MultiArchBuild};
use crate::assemble::dockerfile::{FromImage, base_images};
use crate::plan::base_images::{BaseManifest, PinnedBase, pin};
use crate::plan::inputs::{REBUILD_ANNOTATION, build_args};
use crate::platform::Platform;
use crate::registry::manifest::{index_children, is_index};
use crate::registry::retry::RetryPolicy;
use crate::registry::{Registry, RegistryOptions, mirrored};

/// How long a tag's digest read for a build that does not poll serves other builds that need it.
const FIRST_READ_KEEP: Duration = Duration::from_secs(60);
/// The most digests kept of what they name (an index is a few hundred bytes).
const MAX_MANIFESTS: usize = 4096;

/// What each platform of a build builds from.
#[derive(Debug, Default)]
pub struct Resolved {
    pub pins: BTreeMap<Platform, Vec<PinnedBase>>,
    /// One entry per base image: the digest every platform's image of it comes from.
    pub status: Vec<BaseImageStatus>,
}

/// When a tag was read, and the digest it named or why it could not be read.
type TagRead = (Instant, Result<String, String>);

pub struct BaseImages {
    /// `registry=mirror` (`--registry-mirror`): where images of a registry are read instead.
    mirrors: Vec<(String, String)>,
    options: RegistryOptions,
    /// By image and credentials (the namespace's push Secret, or none): when read, and what.
    tags: Mutex<HashMap<(String, String), TagRead>>,
    /// By `repository@digest`.
    manifests: Mutex<HashMap<String, BaseManifest>>,
    /// Tags and digests being read.
    reading: OneRead,
}

impl BaseImages {
    pub fn new(mirrors: Vec<(String, String)>, options: RegistryOptions) -> BaseImages {
        // One quick try: a reconcile waits for it; a failure keeps the recorded digest or none.
        let options = RegistryOptions { request_timeout: Duration::from_secs(10), retry: RetryPolicy::NONE, ..options };
        BaseImages {
            mirrors,
            options,
            tags: Mutex::new(HashMap::new()),
            manifests: Mutex::new(HashMap::new()),
            reading: OneRead::default(),
        }
    }

    /// The base images of `dockerfile` for each platform, pinned. `poll` is the build's poll interval.
    pub async fn resolve(
        &self,
        ctx: &Context,
        build: &MultiArchBuild,
        dockerfile: &str,
        platforms: &[Platform],
        poll: Option<Duration>,
    ) -> Resolved {
        let mut froms: Vec<(Platform, Vec<FromImage>)> = Vec::new();
        for platform in platforms {
            // A Dockerfile that does not parse is the builder's to report.
            if let Ok(images) = base_images(dockerfile, &build_args(&build.spec, platform), platform) {
                froms.push((platform.clone(), images));
            }
        }
        let status = build.status.as_ref();
        let annotation = build.metadata.annotations.as_ref().and_then(|a| a.get(REBUILD_ANNOTATION));
        // A rebuild request not handled yet reads the tags again, as a build from scratch would.
        let rebuilding = annotation.is_some() && annotation != status.and_then(|s| s.last_handled_rebuild_at.as_ref());
        let mut resolved = Resolved::default();
        let mut digests: BTreeMap<String, Option<(String, BaseManifest)>> = BTreeMap::new();
        for from in froms.iter().flat_map(|(_, images)| images) {
            if digests.contains_key(&from.image) {
                continue;
            }
            let recorded = status
                .and_then(|s| s.base_images.iter().find(|b| b.image == from.image))
                .and_then(|b| b.digest.clone());
            let found = match (recorded, poll, rebuilding) {
                (Some(recorded), None, false) => Ok(recorded),
                (recorded, _, _) => {
                    let read = self.tag_digest(ctx, build, &from.image, poll.unwrap_or(FIRST_READ_KEEP)).await;
                    read.or_else(|why| recorded.ok_or(why))
                }
            };
            let found = match found {
                Ok(digest) => self.manifest(ctx, build, &from.image, &digest).await.map(|m| (digest, m)),
                Err(why) => Err(why),
            };
            let entry = match &found {
                Ok((digest, _)) => {
                    BaseImageStatus { image: from.image.clone(), digest: Some(digest.clone()), message: None }
                }
                Err(why) => BaseImageStatus { image: from.image.clone(), digest: None, message: Some(why.clone()) },
            };
            resolved.status.push(entry);
            digests.insert(from.image.clone(), found.ok());
        }
        for (platform, images) in froms {
            let pins = images.iter().filter_map(|from| {
                let (digest, manifest) = digests.get(&from.image)?.as_ref()?;
                pin(from, digest, manifest, &platform)
            });
            resolved.pins.insert(platform.clone(), pins.collect());
        }
        resolved
    }

    /// The digest `image` names: `image`'s own digest, or its tag's as read within `max_age`.
    async fn tag_digest(
        &self,
        ctx: &Context,
        build: &MultiArchBuild,
        image: &str,
        max_age: Duration,
    ) -> Result<String, String> {
        let reference = parse(image)?;
        if let Some(digest) = reference.digest() {
            return Ok(digest.to_string());
        }
        let credentials = build
            .spec
            .output
            .push_secret
            .as_ref()
            .map(|s| format!("{}/{}", build.metadata.namespace.as_deref().unwrap_or_default(), s.name));
        let key = (image.to_string(), credentials.unwrap_or_default());
        let kept = || self.tags.lock().ok().and_then(|tags| tags.get(&key).cloned());
        if let Some((_, read)) = kept().filter(|(at, _)| at.elapsed() < max_age) {
            return read;
        }
        let _reading = self.reading.lock(&format!("tag {} {}", key.0, key.1)).await;
        if let Some((_, read)) = kept().filter(|(at, _)| at.elapsed() < max_age) {
            return read;
        }
        let registry = self.registry(ctx, build, &reference).await?;
        let read = registry.head_digest(&mirrored(&reference, &self.mirrors)).await.map_err(|e| e.to_string());
        match &read {
            Ok(digest) => info!(image, digest, "read a base image's digest"),
            Err(why) => warn!(image, "cannot read a base image's digest: {why}"),
        }
        if let Ok(mut tags) = self.tags.lock() {
            // Entries no build reads again go once they are older than any poll asks for.
            tags.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(24 * 3600));
            tags.insert(key, (Instant::now(), read.clone()));
        }
        read
    }

    /// What `image@digest` is: an index (with its children) or a single image.
    async fn manifest(
        &self,
        ctx: &Context,
        build: &MultiArchBuild,
        image: &str,
        digest: &str,
    ) -> Result<BaseManifest, String> {
        let named = parse(image)?;
        let reference = Reference::with_digest(named.registry().into(), named.repository().into(), digest.into());
        let key = reference.whole();
        let kept = || self.manifests.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some(kept) = kept() {
            return Ok(kept);
        }
        let _reading = self.reading.lock(&key).await;
        if let Some(kept) = kept() {
            return Ok(kept);
        }
        let registry = self.registry(ctx, build, &reference).await?;
        let raw = registry.fetch_manifest_raw(&mirrored(&reference, &self.mirrors)).await.map_err(|e| e.to_string())?;
        let manifest = match is_index(&raw.media_type) {
            true => BaseManifest::Index(index_children(&raw).map_err(|e| format!("{image}: {e}"))?),
            false => BaseManifest::Image,
        };
        if let Ok(mut manifests) = self.manifests.lock() {
            if manifests.len() >= MAX_MANIFESTS {
                manifests.clear();
            }
            manifests.insert(key, manifest.clone());
        }
        Ok(manifest)
    }

    /// A client for the registry of `reference` (or its mirror) with the build's push credentials for
    /// that host, as its builders pull with them.
    async fn registry(&self, ctx: &Context, build: &MultiArchBuild, reference: &Reference) -> Result<Registry, String> {
        let host = mirrored(reference, &self.mirrors).resolve_registry().to_string();
        let auth = match push_credentials(&ctx.client, build, &host).await {
            Ok(Ok(auth)) => auth,
            Ok(Err((_, message))) => return Err(message),
            Err(e) => return Err(e.to_string()),
        };
        let output_host = crate::registry::Repository::of_image(&build.spec.output.image).ok();
        let insecure = build.spec.output.insecure_registry && output_host.is_some_and(|o| o.registry() == host);
        Registry::new(RegistryOptions { insecure, ..self.options.clone() }, auth).map_err(|e| e.to_string())
    }
}

fn parse(image: &str) -> Result<Reference, String> {
    image.parse().map_err(|e| format!("{image:?} is no image reference: {e}"))
}
