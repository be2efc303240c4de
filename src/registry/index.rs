//! Verifying each platform's image and assembling the OCI image index that names them (pure).
//!
//! The index is serialised by archway itself, with a fixed field order, children sorted by platform
//! and annotations in key order, so the same children and annotations always give the same bytes and
//! so the same digest: reconciling twice never publishes a "new" image.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::manifest::{ChildImage, ImageConfig, is_image_manifest};
use super::reference::is_sha256_digest;
use crate::platform::Platform;

/// Index annotation: where the source came from (a git URL, say).
pub const ANNOTATION_SOURCE: &str = oci_client::annotations::ORG_OPENCONTAINERS_IMAGE_SOURCE;
/// Index annotation: which revision of the source was built.
pub const ANNOTATION_REVISION: &str = oci_client::annotations::ORG_OPENCONTAINERS_IMAGE_REVISION;

/// One platform's image, checked against what was asked for, ready to be named by the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChild {
    pub platform: Platform,
    /// Digest of the child's manifest, as pushed by the builder (`sha256:...`).
    pub digest: String,
    /// Size in bytes of the child's manifest.
    pub size: u64,
    /// Media type of the child's manifest (OCI or Docker image manifest).
    pub media_type: String,
}

/// The image a builder pushed is not of the platform that was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("{asked} was asked for but the image is {found} (check the base image / --platform)")]
    Platform { asked: String, found: String },
    #[error("{asked} was asked for but the image's config names no os/architecture (check the builder)")]
    Unspecified { asked: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("an image index needs at least one platform's image")]
    Empty,
    #[error(
        "{first} and {second} are the same image {digest}: a build ignored its platform \
         (check --platform and the base image)"
    )]
    DuplicateDigest { digest: String, first: String, second: String },
    #[error("{platform} appears twice ({first} and {second}); an index has one image per platform")]
    DuplicatePlatform { platform: String, first: String, second: String },
    #[error("the image for {platform} has digest {digest:?}, not sha256:<64 hex>")]
    Digest { platform: String, digest: String },
    #[error("the image for {platform} has media type {media_type:?}, not a single image manifest")]
    MediaType { platform: String, media_type: String },
    #[error("cannot serialise the image index: {0}")]
    Json(String),
}

/// Checks that an image's config is of the platform asked for, after normalising both as containerd
/// does (an arm64 config with or without `v8` is linux/arm64; an arm config without variant is v7).
/// Returns the normalised platform to put in the index.
pub fn verify_child(asked: &Platform, config: &ImageConfig) -> Result<Platform, Mismatch> {
    if config.os.trim().is_empty() || config.architecture.trim().is_empty() {
        return Err(Mismatch::Unspecified { asked: asked.to_string() });
    }
    let found = Platform::new(&config.os, &config.architecture, config.variant.as_deref());
    let asked_normal = Platform::new(&asked.os, &asked.architecture, asked.variant.as_deref());
    if found == asked_normal {
        Ok(found)
    } else {
        Err(Mismatch::Platform { asked: asked.to_string(), found: found.to_string() })
    }
}

/// Checks a child image read back from the registry (see [`verify_child`]) and describes it for the index.
pub fn verify(asked: &Platform, child: &ChildImage) -> Result<VerifiedChild, Mismatch> {
    Ok(VerifiedChild {
        platform: verify_child(asked, &child.config)?,
        digest: child.manifest.digest.clone(),
        size: child.manifest.bytes.len() as u64,
        media_type: child.manifest.media_type.clone(),
    })
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    let mut digest = String::with_capacity(7 + 64);
    digest.push_str("sha256:");
    for byte in Sha256::digest(bytes) {
        // Writing to a String cannot fail.
        let _ = write!(digest, "{byte:02x}");
    }
    digest
}

/// Annotations for the index: the source and the revision built, where known.
pub fn index_annotations(source: Option<&str>, revision: Option<&str>) -> BTreeMap<String, String> {
    let source = source.map(without_credentials);
    [(ANNOTATION_SOURCE, source.as_deref()), (ANNOTATION_REVISION, revision)]
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_string(), value.filter(|v| !v.is_empty())?.to_string())))
        .collect()
}

/// A URL without the `user:password@` (or token) part: an index is public to whoever can pull it.
/// scp-like `git@host:path` names a user, not a secret, and stays.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme != "ssh" || rest[..at].contains(':') => format!("{scheme}://{}", &rest[at + 1..]),
        _ => url.to_string(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u8,
    media_type: &'static str,
    manifests: Vec<Entry<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    platform: EntryPlatform<'a>,
}

#[derive(Serialize)]
struct EntryPlatform<'a> {
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
}

/// Serialises the OCI image index naming `children`, sorted by platform string. The same inputs give
/// the same bytes, in any order. Refuses an empty list, two children of one platform, and two
/// platforms that resolve to the same image (a build that ignored its platform).
pub fn assemble_index(
    children: &[VerifiedChild],
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<u8>, IndexError> {
    if children.is_empty() {
        return Err(IndexError::Empty);
    }
    let mut sorted: Vec<&VerifiedChild> = children.iter().collect();
    sorted.sort_by_cached_key(|child| (child.platform.to_string(), child.digest.clone()));

    let mut by_digest: BTreeMap<&str, &Platform> = BTreeMap::new();
    for (i, child) in sorted.iter().enumerate() {
        if !is_sha256_digest(&child.digest) {
            return Err(IndexError::Digest { platform: child.platform.to_string(), digest: child.digest.clone() });
        }
        if !is_image_manifest(&child.media_type) {
            return Err(IndexError::MediaType {
                platform: child.platform.to_string(),
                media_type: child.media_type.clone(),
            });
        }
        if let Some(previous) = i.checked_sub(1).and_then(|p| sorted.get(p)).filter(|p| p.platform == child.platform) {
            return Err(IndexError::DuplicatePlatform {
                platform: child.platform.to_string(),
                first: previous.digest.clone(),
                second: child.digest.clone(),
            });
        }
        if let Some(first) = by_digest.insert(&child.digest, &child.platform) {
            return Err(IndexError::DuplicateDigest {
                digest: child.digest.clone(),
                first: first.to_string(),
                second: child.platform.to_string(),
            });
        }
    }

    let index = Index {
        schema_version: 2,
        media_type: OCI_IMAGE_INDEX_MEDIA_TYPE,
        manifests: sorted
            .iter()
            .map(|child| Entry {
                media_type: &child.media_type,
                digest: &child.digest,
                size: child.size,
                platform: EntryPlatform {
                    architecture: &child.platform.architecture,
                    os: &child.platform.os,
                    variant: child.platform.variant.as_deref(),
                },
            })
            .collect(),
        annotations,
    };
    serde_json::to_vec(&index).map_err(|e| IndexError::Json(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::manifest::{IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE};
    use serde_json::{Value, json};

    #[test]
    fn the_source_annotation_never_carries_credentials() {
        let source = |url: &str| index_annotations(Some(url), None)[ANNOTATION_SOURCE].clone();
        assert_eq!(source("https://x-token:ghp_secret@github.com/a/b.git"), "https://github.com/a/b.git");
        assert_eq!(source("https://ghp_secret@github.com/a/b.git"), "https://github.com/a/b.git");
        assert_eq!(source("ssh://git@github.com/a/b.git"), "ssh://git@github.com/a/b.git");
        assert_eq!(source("ssh://git:pw@github.com/a/b.git"), "ssh://github.com/a/b.git");
        assert_eq!(source("git@github.com:a/b.git"), "git@github.com:a/b.git");
        assert_eq!(source("https://example.com/a@b/c.git"), "https://example.com/a@b/c.git");
    }

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn child(platform: &str, n: u8) -> VerifiedChild {
        VerifiedChild {
            platform: p(platform),
            digest: digest(n),
            size: 500 + u64::from(n),
            media_type: OCI_IMAGE_MEDIA_TYPE.into(),
        }
    }

    fn config(os: &str, architecture: &str, variant: Option<&str>) -> ImageConfig {
        ImageConfig { os: os.into(), architecture: architecture.into(), variant: variant.map(Into::into) }
    }

    fn four() -> Vec<VerifiedChild> {
        vec![child("linux/arm/v7", 3), child("linux/amd64", 1), child("linux/arm/v6", 4), child("linux/arm64", 2)]
    }

    #[test]
    fn digest_of_known_bytes() {
        assert_eq!(digest_of(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert!(is_sha256_digest(&digest_of(b"abc")));
    }

    #[test]
    fn index_shape_variants_and_order() {
        let annotations = index_annotations(Some("https://git.example/blog.git"), Some("abc123"));
        let bytes = assemble_index(&four(), &annotations).unwrap();
        let index: Value = serde_json::from_slice(&bytes).unwrap();
        let entry = |n: u8, arch: &str, variant: Option<&str>| {
            let mut platform = json!({"architecture": arch, "os": "linux"});
            if let Some(v) = variant {
                platform["variant"] = json!(v);
            }
            json!({"mediaType": OCI_IMAGE_MEDIA_TYPE, "digest": digest(n), "size": 500 + u64::from(n), "platform": platform})
        };
        assert_eq!(
            index,
            json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    entry(1, "amd64", None),
                    entry(4, "arm", Some("v6")),
                    entry(3, "arm", Some("v7")),
                    entry(2, "arm64", None),
                ],
                "annotations": {
                    "org.opencontainers.image.revision": "abc123",
                    "org.opencontainers.image.source": "https://git.example/blog.git",
                },
            })
        );
        // arm64 carries no variant at all (not even null); arm always does.
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("null") && !text.contains("v8"), "{text}");
    }

    #[test]
    fn same_inputs_same_bytes_in_any_order() {
        let annotations = index_annotations(Some("s"), Some("r"));
        let first = assemble_index(&four(), &annotations).unwrap();
        let mut reversed = four();
        reversed.reverse();
        assert_eq!(assemble_index(&reversed, &annotations).unwrap(), first);
        assert_eq!(digest_of(&assemble_index(&four(), &annotations).unwrap()), digest_of(&first));
        // Different annotations are a different index.
        assert_ne!(assemble_index(&four(), &index_annotations(Some("s"), Some("r2"))).unwrap(), first);
    }

    #[test]
    fn no_annotations_no_field() {
        let bytes = assemble_index(&four()[..1], &index_annotations(None, Some(""))).unwrap();
        let index: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(index.get("annotations").is_none(), "{index}");
    }

    #[test]
    fn docker_media_type_children_are_kept_as_pushed() {
        let mut children = four();
        children[0].media_type = IMAGE_MANIFEST_MEDIA_TYPE.into();
        let index: Value = serde_json::from_slice(&assemble_index(&children, &BTreeMap::new()).unwrap()).unwrap();
        assert_eq!(index["manifests"][2]["mediaType"], IMAGE_MANIFEST_MEDIA_TYPE);
    }

    #[test]
    fn duplicate_digest_is_refused() {
        let mut children = four();
        children[1].digest = children[3].digest.clone(); // amd64 and arm64: one image
        let error = assemble_index(&children, &BTreeMap::new()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "linux/amd64 and linux/arm64 are the same image {}: a build ignored its platform \
                 (check --platform and the base image)",
                digest(2)
            )
        );
    }

    #[test]
    fn duplicate_platform_and_other_refusals() {
        let mut children = four();
        children.push(child("linux/arm/v7", 9));
        let error = assemble_index(&children, &BTreeMap::new()).unwrap_err();
        assert!(matches!(&error, IndexError::DuplicatePlatform { platform, .. } if platform == "linux/arm/v7"));
        assert!(error.to_string().starts_with("linux/arm/v7 appears twice"), "{error}");

        assert_eq!(assemble_index(&[], &BTreeMap::new()), Err(IndexError::Empty));

        let mut bad = child("linux/amd64", 1);
        bad.digest = "sha256:nope".into();
        assert!(matches!(assemble_index(&[bad], &BTreeMap::new()), Err(IndexError::Digest { .. })));

        let mut nested = child("linux/amd64", 1);
        nested.media_type = OCI_IMAGE_INDEX_MEDIA_TYPE.into();
        assert!(matches!(assemble_index(&[nested], &BTreeMap::new()), Err(IndexError::MediaType { .. })));
    }

    #[test]
    fn verify_normalises_variants() {
        let arm64 = p("linux/arm64");
        assert_eq!(verify_child(&arm64, &config("linux", "arm64", None)), Ok(arm64.clone()));
        assert_eq!(verify_child(&arm64, &config("linux", "arm64", Some("v8"))), Ok(arm64.clone()));
        assert_eq!(verify_child(&p("linux/arm/v7"), &config("linux", "arm", None)), Ok(p("linux/arm/v7")));
        assert_eq!(verify_child(&p("linux/arm/v6"), &config("linux", "arm", Some("v6"))), Ok(p("linux/arm/v6")));
        assert_eq!(verify_child(&p("linux/amd64"), &config("linux", "amd64", None)), Ok(p("linux/amd64")));
        // The asked platform is normalised too (a struct built by hand, arm64/v8).
        let hand_made = Platform { os: "linux".into(), architecture: "arm64".into(), variant: Some("v8".into()) };
        assert_eq!(verify_child(&hand_made, &config("linux", "arm64", None)), Ok(arm64));
    }

    #[test]
    fn verify_a_child_image() {
        use crate::registry::manifest::RawManifest;
        let manifest =
            RawManifest { bytes: b"{}".to_vec(), media_type: IMAGE_MANIFEST_MEDIA_TYPE.into(), digest: digest(7) };
        let child = ChildImage { manifest, config: config("linux", "arm", Some("v6")) };
        assert_eq!(
            verify(&p("linux/arm/v6"), &child),
            Ok(VerifiedChild {
                platform: p("linux/arm/v6"),
                digest: digest(7),
                size: 2,
                media_type: IMAGE_MANIFEST_MEDIA_TYPE.into()
            })
        );
        assert!(verify(&p("linux/arm/v7"), &child).is_err());
    }

    #[test]
    fn verify_mismatch_messages() {
        let message = |asked: &str, config: ImageConfig| verify_child(&p(asked), &config).unwrap_err().to_string();
        assert_eq!(
            message("linux/arm/v6", config("linux", "arm", None)),
            "linux/arm/v6 was asked for but the image is linux/arm/v7 (check the base image / --platform)"
        );
        assert_eq!(
            message("linux/arm/v6", config("linux", "arm", Some("v7"))),
            "linux/arm/v6 was asked for but the image is linux/arm/v7 (check the base image / --platform)"
        );
        assert_eq!(
            message("linux/arm64", config("linux", "amd64", None)),
            "linux/arm64 was asked for but the image is linux/amd64 (check the base image / --platform)"
        );
        assert_eq!(
            message("linux/arm/v7", config("linux", "arm64", None)),
            "linux/arm/v7 was asked for but the image is linux/arm64 (check the base image / --platform)"
        );
        assert_eq!(
            message("linux/amd64", config("", "", None)),
            "linux/amd64 was asked for but the image's config names no os/architecture (check the builder)"
        );
    }
}
