//! Reading manifests and image configs as a registry returns them (pure): which kind of manifest the
//! bytes are, where an image's config is, and the platform the config names.

use oci_client::manifest::{
    IMAGE_CONFIG_MEDIA_TYPE, IMAGE_DOCKER_CONFIG_MEDIA_TYPE, IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use serde::Deserialize;

use super::reference::is_sha256_digest;
use crate::platform::Platform;

/// The manifest media types archway reads: OCI and Docker image manifests and indexes.
pub const ACCEPTED_MANIFEST_TYPES: &[&str] =
    &[OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, IMAGE_MANIFEST_LIST_MEDIA_TYPE];

/// The largest image config archway reads (real ones are a few KiB; history can make them larger).
pub const MAX_CONFIG_SIZE: u64 = 8 << 20;

/// A manifest exactly as the registry returned it: bytes, the media type they declare, their digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

/// A child image as read back from the registry: its manifest and the config that manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildImage {
    pub manifest: RawManifest,
    pub config: ImageConfig,
}

/// A descriptor of an image's config blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDescriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// The platform fields of an image config, as written there (not normalised).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not valid JSON: {0}")]
    Json(String),
    #[error("the manifest has schemaVersion {0}; only 2 is supported")]
    SchemaVersion(i64),
    #[error("the manifest has media type {0:?}, which is neither an image manifest nor an image index")]
    MediaType(String),
    #[error("the manifest declares no mediaType and has neither \"config\" nor \"manifests\"")]
    UnknownKind,
    #[error(
        "it is an image index ({0}), not a single image: a builder must push one image per platform \
         (for BuildKit, turn off provenance/SBOM attestations)"
    )]
    IndexNotImage(String),
    #[error("the image's config has media type {0:?}; archway handles container images only")]
    ConfigMediaType(String),
    #[error("the image's config descriptor has digest {0:?}, not sha256:<64 hex>")]
    ConfigDigest(String),
    #[error("the image's config is {0} bytes, more than the {MAX_CONFIG_SIZE} archway reads")]
    ConfigTooLarge(u64),
    #[error("the image's config is not valid JSON: {0}")]
    ConfigJson(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Versioned {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<serde_json::Value>,
    manifests: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifest {
    config: Descriptor,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

/// The media type of a manifest, from its bytes: its `mediaType`, or for an OCI manifest without one,
/// what its shape says (`manifests` -> index, `config` -> image manifest).
pub fn media_type_of(bytes: &[u8]) -> Result<String, ManifestError> {
    let versioned: Versioned = serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    match versioned.schema_version {
        Some(2) => {}
        other => return Err(ManifestError::SchemaVersion(other.unwrap_or(0))),
    }
    match versioned.media_type {
        Some(media_type) if ACCEPTED_MANIFEST_TYPES.contains(&media_type.as_str()) => Ok(media_type),
        Some(media_type) => Err(ManifestError::MediaType(media_type)),
        None if versioned.manifests.is_some() => Ok(OCI_IMAGE_INDEX_MEDIA_TYPE.to_string()),
        None if versioned.config.is_some() => Ok(OCI_IMAGE_MEDIA_TYPE.to_string()),
        None => Err(ManifestError::UnknownKind),
    }
}

/// Whether a media type is an image index or a Docker manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_IMAGE_INDEX_MEDIA_TYPE || media_type == IMAGE_MANIFEST_LIST_MEDIA_TYPE
}

/// Whether a media type is a single-platform image manifest (OCI or Docker).
pub fn is_image_manifest(media_type: &str) -> bool {
    media_type == OCI_IMAGE_MEDIA_TYPE || media_type == IMAGE_MANIFEST_MEDIA_TYPE
}

/// Where an image manifest's config is. An index is refused: children must be single images.
pub fn config_descriptor(manifest: &RawManifest) -> Result<ConfigDescriptor, ManifestError> {
    if is_index(&manifest.media_type) {
        return Err(ManifestError::IndexNotImage(manifest.media_type.clone()));
    }
    let image: ImageManifest =
        serde_json::from_slice(&manifest.bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    let Descriptor { media_type, digest, size } = image.config;
    if media_type != IMAGE_CONFIG_MEDIA_TYPE && media_type != IMAGE_DOCKER_CONFIG_MEDIA_TYPE {
        return Err(ManifestError::ConfigMediaType(media_type));
    }
    if !is_sha256_digest(&digest) {
        return Err(ManifestError::ConfigDigest(digest));
    }
    if size > MAX_CONFIG_SIZE {
        return Err(ManifestError::ConfigTooLarge(size));
    }
    Ok(ConfigDescriptor { media_type, digest, size })
}

/// The platform fields of an image config blob.
pub fn parse_image_config(bytes: &[u8]) -> Result<ImageConfig, ManifestError> {
    serde_json::from_slice(bytes).map_err(|e| ManifestError::ConfigJson(e.to_string()))
}

/// The platforms an index has images for, in its order; attestation entries (`unknown/unknown`)
/// are no platform.
pub fn index_platforms(manifest: &RawManifest) -> Result<Vec<Platform>, ManifestError> {
    Ok(index_children(manifest)?.into_iter().map(|(platform, _)| platform).collect())
}

/// An index's images: each one's platform and digest, in the index's order, attestations left out.
pub fn index_children(manifest: &RawManifest) -> Result<Vec<(Platform, String)>, ManifestError> {
    #[derive(Deserialize)]
    struct Index {
        manifests: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        digest: String,
        platform: Option<ImageConfig>,
    }
    let index: Index = serde_json::from_slice(&manifest.bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    let children = index.manifests.into_iter().filter_map(|entry| Some((entry.platform?, entry.digest)));
    let known = children.filter(|(p, _)| p.os != "unknown" && p.architecture != "unknown");
    Ok(known.map(|(p, digest)| (Platform::new(&p.os, &p.architecture, p.variant.as_deref()), digest)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_lists_its_platforms_without_attestations() {
        let index = raw(r#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
            {"digest": "sha256:1", "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": "sha256:2", "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"digest": "sha256:3", "size": 1, "platform": {"os": "unknown", "architecture": "unknown"}}]}"#);
        let platforms: Vec<String> = index_platforms(&index).unwrap().iter().map(Platform::to_string).collect();
        assert_eq!(platforms, ["linux/arm64", "linux/arm/v7"]);
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn raw(json: &str) -> RawManifest {
        let media_type = media_type_of(json.as_bytes()).unwrap();
        RawManifest { bytes: json.as_bytes().to_vec(), media_type, digest: DIGEST.to_string() }
    }

    fn image_manifest(config_type: &str, size: u64) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_IMAGE_MEDIA_TYPE}",
                "config":{{"mediaType":"{config_type}","digest":"{DIGEST}","size":{size}}},"layers":[]}}"#
        )
    }

    #[test]
    fn media_types_declared_or_inferred() {
        for declared in ACCEPTED_MANIFEST_TYPES {
            let json = format!(r#"{{"schemaVersion":2,"mediaType":"{declared}"}}"#);
            assert_eq!(media_type_of(json.as_bytes()).as_deref(), Ok(*declared));
        }
        assert_eq!(media_type_of(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(), Ok(OCI_IMAGE_INDEX_MEDIA_TYPE));
        assert_eq!(media_type_of(br#"{"schemaVersion":2,"config":{}}"#).as_deref(), Ok(OCI_IMAGE_MEDIA_TYPE));
    }

    #[test]
    fn media_type_errors() {
        assert!(matches!(media_type_of(b"<html>"), Err(ManifestError::Json(_))));
        assert_eq!(media_type_of(br#"{"schemaVersion":1}"#), Err(ManifestError::SchemaVersion(1)));
        assert_eq!(media_type_of(br#"{"config":{}}"#), Err(ManifestError::SchemaVersion(0)));
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#),
            Err(ManifestError::MediaType("text/plain".to_string()))
        );
        assert_eq!(media_type_of(br#"{"schemaVersion":2}"#), Err(ManifestError::UnknownKind));
    }

    #[test]
    fn config_of_an_image() {
        let config = config_descriptor(&raw(&image_manifest(IMAGE_CONFIG_MEDIA_TYPE, 1234))).unwrap();
        assert_eq!(
            config,
            ConfigDescriptor { media_type: IMAGE_CONFIG_MEDIA_TYPE.into(), digest: DIGEST.into(), size: 1234 }
        );
        assert!(config_descriptor(&raw(&image_manifest(IMAGE_DOCKER_CONFIG_MEDIA_TYPE, 1))).is_ok());
    }

    #[test]
    fn config_refusals() {
        let index = raw(r#"{"schemaVersion":2,"manifests":[]}"#);
        let message = config_descriptor(&index).unwrap_err().to_string();
        assert!(message.contains("not a single image") && message.contains("attestations"), "{message}");
        let wasm = raw(&image_manifest("application/vnd.wasm.config.v1+json", 1));
        assert!(matches!(config_descriptor(&wasm), Err(ManifestError::ConfigMediaType(_))));
        let huge = raw(&image_manifest(IMAGE_CONFIG_MEDIA_TYPE, MAX_CONFIG_SIZE + 1));
        assert!(matches!(config_descriptor(&huge), Err(ManifestError::ConfigTooLarge(_))));
        let bad_digest = raw(&image_manifest(IMAGE_CONFIG_MEDIA_TYPE, 1).replace(DIGEST, "sha256:zz"));
        assert!(matches!(config_descriptor(&bad_digest), Err(ManifestError::ConfigDigest(_))));
    }

    #[test]
    fn image_config_platform_fields() {
        let config = parse_image_config(br#"{"architecture":"arm","os":"linux","variant":"v6","config":{}}"#).unwrap();
        assert_eq!(config, ImageConfig { os: "linux".into(), architecture: "arm".into(), variant: Some("v6".into()) });
        assert_eq!(parse_image_config(b"{}"), Ok(ImageConfig::default()));
        assert!(matches!(parse_image_config(b"not json"), Err(ManifestError::ConfigJson(_))));
    }
}
