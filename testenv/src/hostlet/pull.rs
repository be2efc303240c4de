//! "Pulling" a workload image: resolve its reference in our registry and choose the manifest a node
//! runs by containerd's platform rules. Only the configured loopback registry is ever contacted.

use archway::platform::{Platform, best_match};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;

use super::config::RegistryAccess;
use super::pods::PodError;

const ACCEPTED: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The manifest a node would run: its digest, as the container's `imageID`.
#[derive(Debug, PartialEq)]
pub(crate) struct Pulled {
    pub image_id: String,
    pub platform: Platform,
}

pub(crate) struct Puller {
    client: Client,
    host: String,
    auth: RegistryAuth,
}

/// The parts of an index or image manifest we read.
#[derive(Deserialize)]
struct RawManifest {
    #[serde(default)]
    manifests: Option<Vec<RawEntry>>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Vec<Layer>,
}

/// One layer of an image manifest.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Layer {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
}

#[derive(Deserialize)]
struct RawEntry {
    digest: String,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawDescriptor {
    digest: String,
}

/// An index entry's platform, or the os/architecture/variant of an image config.
#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl RawPlatform {
    fn platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }
}

impl Puller {
    pub fn new(registry: &RegistryAccess) -> anyhow::Result<Puller> {
        let config = ClientConfig {
            protocol: ClientProtocol::Https,
            extra_root_certificates: vec![Certificate {
                encoding: CertificateEncoding::Pem,
                data: registry.ca_pem.clone(),
            }],
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(5)),
            read_timeout: Some(std::time::Duration::from_secs(30)),
            ..Default::default()
        };
        Ok(Puller {
            client: Client::try_from(config)?,
            host: registry.host.clone(),
            auth: RegistryAuth::Basic(registry.username.clone(), registry.password.clone()),
        })
    }

    /// Resolves `image` for a node of platform `node` (named `node_name` in messages).
    pub async fn pull(&self, image: &str, node_name: &str, node: &Platform) -> Result<Pulled, PodError> {
        let reference: Reference =
            image.parse().map_err(|e| PodError::new("InvalidImageName", format!("{image}: {e}")))?;
        if reference.registry() != self.host {
            // Never connect anywhere but our loopback registry.
            return Err(PodError::new(
                "ErrImagePull",
                format!(
                    "registry {} is not reachable from the hostlet, which pulls only from {}",
                    reference.registry(),
                    self.host
                ),
            ));
        }
        let pull_error = |e: oci_client::errors::OciDistributionError| {
            PodError::new("ErrImagePull", format!("pulling {image}: {e}"))
        };
        let (bytes, digest) =
            self.client.pull_manifest_raw(&reference, &self.auth, ACCEPTED).await.map_err(pull_error)?;
        let manifest: RawManifest = serde_json::from_slice(&bytes)
            .map_err(|e| PodError::new("ErrImagePull", format!("{image}: bad manifest: {e}")))?;
        let repository = format!("{}/{}", reference.registry(), reference.repository());
        if let Some(entries) = manifest.manifests {
            let offered: Vec<(Platform, String)> =
                entries.into_iter().filter_map(|e| Some((e.platform?.platform(), e.digest))).collect();
            let (platform, child) = choose(image, node_name, node, &offered)?;
            return Ok(Pulled { image_id: format!("{repository}@{child}"), platform });
        }
        let config =
            manifest.config.ok_or_else(|| PodError::new("ErrImagePull", format!("{image}: manifest has no config")))?;
        let mut blob = Vec::new();
        self.client.pull_blob(&reference, config.digest.as_str(), &mut blob).await.map_err(pull_error)?;
        let config: RawPlatform = serde_json::from_slice(&blob)
            .map_err(|e| PodError::new("ErrImagePull", format!("{image}: bad config: {e}")))?;
        let (platform, _) = choose(image, node_name, node, &[(config.platform(), digest.clone())])?;
        Ok(Pulled { image_id: format!("{repository}@{digest}"), platform })
    }
}

impl Puller {
    /// The layers and the config blob of the single image `image_id` (`registry/repo@digest`, as
    /// [`Puller::pull`] returns it).
    pub async fn image(&self, image_id: &str) -> Result<(Vec<Layer>, Vec<u8>), PodError> {
        let reference = self.reference(image_id)?;
        let pull_error = |e: oci_client::errors::OciDistributionError| {
            PodError::new("ErrImagePull", format!("pulling {image_id}: {e}"))
        };
        let (bytes, _) = self.client.pull_manifest_raw(&reference, &self.auth, ACCEPTED).await.map_err(pull_error)?;
        let manifest: RawManifest = serde_json::from_slice(&bytes)
            .map_err(|e| PodError::new("ErrImagePull", format!("{image_id}: bad manifest: {e}")))?;
        let config = manifest
            .config
            .ok_or_else(|| PodError::new("ErrImagePull", format!("{image_id}: not an image manifest")))?;
        let mut blob = Vec::new();
        self.client.pull_blob(&reference, config.digest.as_str(), &mut blob).await.map_err(pull_error)?;
        Ok((manifest.layers, blob))
    }

    /// Writes a blob of `image_id`'s repository to `path`.
    pub async fn blob_to_file(&self, image_id: &str, digest: &str, path: &std::path::Path) -> Result<(), PodError> {
        let reference = self.reference(image_id)?;
        let failed = |e: String| PodError::new("ErrImagePull", format!("pulling {digest} of {image_id}: {e}"));
        let mut file = tokio::fs::File::create(path).await.map_err(|e| failed(e.to_string()))?;
        self.client.pull_blob(&reference, digest, &mut file).await.map_err(|e| failed(e.to_string()))?;
        Ok(())
    }

    fn reference(&self, image_id: &str) -> Result<Reference, PodError> {
        let reference: Reference =
            image_id.parse().map_err(|e| PodError::new("InvalidImageName", format!("{image_id}: {e}")))?;
        if reference.registry() != self.host {
            return Err(PodError::new("ErrImagePull", format!("{image_id} is not in {}", self.host)));
        }
        Ok(reference)
    }
}

/// The entry a node of platform `node` runs, or a `NoMatchingPlatform` error that names what the
/// image offers.
fn choose(
    image: &str,
    node_name: &str,
    node: &Platform,
    offered: &[(Platform, String)],
) -> Result<(Platform, String), PodError> {
    let platforms: Vec<&Platform> = offered.iter().map(|(p, _)| p).collect();
    match best_match(node, platforms.iter().copied()) {
        Some(chosen) => {
            let (platform, digest) = offered.iter().find(|(p, _)| p == chosen).expect("chosen from offered");
            Ok((platform.clone(), digest.clone()))
        }
        None => {
            let list: Vec<String> = platforms.iter().map(|p| p.to_string()).collect();
            let list = if list.is_empty() { "no platforms".to_string() } else { list.join(", ") };
            Err(PodError::new(
                "NoMatchingPlatform",
                format!("image {image} offers {list}, none runs on node {node_name} ({node})"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    fn index() -> Vec<(Platform, String)> {
        ["linux/amd64", "linux/arm64", "linux/arm/v6", "linux/arm/v7"]
            .iter()
            .enumerate()
            .map(|(i, s)| (p(s), format!("sha256:{i}")))
            .collect()
    }

    #[test]
    fn each_node_gets_its_child() {
        let chosen = |node: &str| choose("img", "n", &p(node), &index()).unwrap().1;
        assert_eq!(chosen("linux/amd64"), "sha256:0");
        assert_eq!(chosen("linux/arm64"), "sha256:1");
        assert_eq!(chosen("linux/arm/v7"), "sha256:3");
        assert_eq!(chosen("linux/arm/v6"), "sha256:2");
    }

    #[test]
    fn an_arm64_node_falls_back_to_arm_v7() {
        let offered = [(p("linux/amd64"), "a".into()), (p("linux/arm/v7"), "b".into())];
        let (platform, digest) = choose("img", "jetson-1", &p("linux/arm64"), &offered).unwrap();
        assert_eq!((platform, digest.as_str()), (p("linux/arm/v7"), "b"));
    }

    #[test]
    fn no_match_names_node_and_offers() {
        let offered = [(p("linux/amd64"), "a".into())];
        let err = choose("127.0.0.1:5000/x:amd64", "pi-1", &p("linux/arm/v7"), &offered).unwrap_err();
        assert_eq!(err.reason, "NoMatchingPlatform");
        assert_eq!(
            err.message,
            "image 127.0.0.1:5000/x:amd64 offers linux/amd64, none runs on node pi-1 (linux/arm/v7)"
        );
    }

    #[test]
    fn an_arm_entry_without_variant_counts_as_v7() {
        let raw: RawManifest = serde_json::from_str(
            r#"{"manifests":[{"digest":"sha256:a","platform":{"os":"linux","architecture":"arm"}},
                {"digest":"sha256:att","platform":{"os":"unknown","architecture":"unknown"}}]}"#,
        )
        .unwrap();
        let offered: Vec<_> =
            raw.manifests.unwrap().into_iter().filter_map(|e| Some((e.platform?.platform(), e.digest))).collect();
        assert!(choose("i", "pi-1", &p("linux/arm/v7"), &offered).is_ok());
        assert!(choose("i", "pi0", &p("linux/arm/v6"), &offered).is_err());
    }
}
