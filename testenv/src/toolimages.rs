//! Stand-ins for the tool images (buildah, BuildKit, git, and the operator's own) in the environment's
//! registry, which the nodes and the operator use as a mirror of quay.io, Docker Hub and ghcr.io
//! (`<registry>/quay.io/...`, `<registry>/docker.io/...`). Each is an index with exactly the platforms the real image is
//! published for (sources in the README, Raspberry Pis); each child is a small marker image. The
//! hostlet resolves a tool image there for its node's platform before it runs the host program
//! that stands for it, so a pod whose image has no child for its node stays in `ImagePullBackOff`,
//! as on a real node.

use anyhow::{Context, Result};
use archway::plan::job::{DEFAULT_BUILDAH_IMAGE, DEFAULT_BUILDKIT_IMAGE, DEFAULT_GIT_IMAGE};
use archway::platform::Platform;
use archway::registry::digest_of;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;

use crate::registry::Registry;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The label on every stand-in child's config: the image it stands for.
pub const STAND_IN_LABEL: &str = "dev.archway.testenv.stand-in";

/// An image the environment stands in for, and the platforms its index has.
pub struct StandIn {
    pub image: &'static str,
    pub platforms: &'static [&'static str],
}

/// The image `deploy/base` runs the operator from.
pub const OPERATOR_IMAGE: &str = "ghcr.io/archway-dev/archway:dev";

/// The operator's default tool images, with the platforms their projects publish, and the operator's
/// own, with those its Dockerfile builds (README, Install).
pub const STAND_INS: &[StandIn] = &[
    StandIn { image: OPERATOR_IMAGE, platforms: &["linux/amd64", "linux/arm64", "linux/arm/v7"] },
    StandIn {
        image: DEFAULT_BUILDAH_IMAGE,
        platforms: &["linux/amd64", "linux/arm64", "linux/ppc64le", "linux/s390x"],
    },
    StandIn {
        image: DEFAULT_BUILDKIT_IMAGE,
        platforms: &["linux/amd64", "linux/arm/v7", "linux/arm64", "linux/s390x", "linux/ppc64le", "linux/riscv64"],
    },
    StandIn {
        image: DEFAULT_GIT_IMAGE,
        platforms: &[
            "linux/amd64",
            "linux/arm/v7",
            "linux/arm64/v8",
            "linux/arm/v6",
            "linux/ppc64le",
            "linux/s390x",
            "linux/386",
        ],
    },
];

/// The registries the environment's registry mirrors, each under its own name: `quay.io/buildah/stable:v1.40`
/// is `<registry>/quay.io/buildah/stable:v1.40` there. As `--registry-mirror` values, they are
/// `quay.io=<registry>/quay.io`.
pub fn mirrors(registry_host: &str) -> Vec<(String, String)> {
    ["quay.io", "docker.io", "ghcr.io"].iter().map(|r| (r.to_string(), format!("{registry_host}/{r}"))).collect()
}

/// [`mirrors`] as `--registry-mirror` values: `quay.io=<registry>/quay.io`, ...
pub fn mirror_flags(registry_host: &str) -> Vec<String> {
    mirrors(registry_host).iter().map(|(registry, mirror)| format!("{registry}={mirror}")).collect()
}

/// Where the environment's registry holds `image`.
pub fn mirrored(registry_host: &str, image: &str) -> Result<Reference> {
    let reference: Reference = image.parse().with_context(|| format!("image reference {image:?}"))?;
    Ok(archway::registry::mirrored(&reference, &mirrors(registry_host)))
}

/// Pushes every stand-in (the same bytes each time: the push of an unchanged one changes nothing).
pub async fn ensure(registry: &Registry) -> Result<()> {
    let client = Client::try_from(ClientConfig {
        protocol: ClientProtocol::Https,
        extra_root_certificates: vec![Certificate {
            encoding: CertificateEncoding::Pem,
            data: registry.ca_pem.clone().into_bytes(),
        }],
        ..Default::default()
    })?;
    let auth = RegistryAuth::Basic(registry.username.clone(), registry.password.clone());
    for stand_in in STAND_INS {
        let target = mirrored(&registry.host, stand_in.image)?;
        client
            .auth(&target, &auth, oci_client::RegistryOperation::Push)
            .await
            .with_context(|| format!("logging in to push {target}"))?;
        let (layer, diff_id) = marker_layer(stand_in.image)?;
        let layer_digest = digest_of(&layer);
        client.push_blob(&target, layer.clone(), &layer_digest).await.with_context(|| format!("{target}: layer"))?;
        let mut children = Vec::new();
        for platform in stand_in.platforms {
            let platform: Platform = platform.parse().with_context(|| format!("platform {platform}"))?;
            let config = serde_json::to_vec(&json!({
                "architecture": platform.architecture, "os": platform.os, "variant": platform.variant,
                "config": {"Labels": {STAND_IN_LABEL: stand_in.image}},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }))?;
            let config_digest = digest_of(&config);
            client
                .push_blob(&target, config.clone(), &config_digest)
                .await
                .with_context(|| format!("{target}: config"))?;
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
                "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer.len()}],
            }))?;
            let digest = digest_of(&manifest);
            let by_digest =
                Reference::with_digest(target.registry().into(), target.repository().into(), digest.clone());
            client.push_manifest_raw(&by_digest, manifest.clone(), OCI_MANIFEST.parse()?).await?;
            let mut entry = json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(),
                                   "platform": {"os": platform.os, "architecture": platform.architecture}});
            if let Some(variant) = &platform.variant {
                entry["platform"]["variant"] = json!(variant);
            }
            children.push(entry);
        }
        let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}))?;
        client
            .push_manifest_raw(&target, index, OCI_INDEX.parse()?)
            .await
            .with_context(|| format!("{target}: index"))?;
        tracing::info!(%target, platforms = stand_in.platforms.join(", "), "pushed a tool image stand-in");
    }
    Ok(())
}

/// A gzipped tar of one file naming the image, with fixed metadata; and its diff ID.
fn marker_layer(image: &str) -> Result<(Vec<u8>, String)> {
    let text = format!("stand-in for {image} in archway's local environment\n");
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, ".archway-stand-in", text.as_bytes())?;
    let tar = tar.into_inner()?;
    let diff_id = digest_of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar)?;
    Ok((gz.finish()?, diff_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_mirrored_under_their_registry() {
        let at = |image| mirrored("127.0.0.1:5000", image).unwrap().whole();
        assert_eq!(at("quay.io/buildah/stable:v1.40"), "127.0.0.1:5000/quay.io/buildah/stable:v1.40");
        assert_eq!(at("moby/buildkit:v0.26.3-rootless"), "127.0.0.1:5000/docker.io/moby/buildkit:v0.26.3-rootless");
        assert_eq!(at("alpine/git"), "127.0.0.1:5000/docker.io/alpine/git:latest");
        assert_eq!(marker_layer("x").unwrap(), marker_layer("x").unwrap(), "the same bytes every time");
    }
}
