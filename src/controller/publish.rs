//! Verify each platform's image and push the index: the registry side of a build.

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use oci_client::secrets::RegistryAuth;
use tracing::{info, warn};

use super::Context;
use super::error::Error;
use super::events::{event, publish_event};
use crate::api::{MultiArchBuild, Reason};
use crate::plan::inputs::platform_tags;
use crate::plan::status::Publish;
use crate::plan::validate::ValidBuild;
use crate::platform::Platform;
use crate::registry::{
    Registry, RegistryOptions, Repository, Untagged, assemble_index, index_annotations, lookup, verify,
};

/// Verifies the children and pushes the index under every tag, then deletes `temporary_tags`.
/// Problems a change must fix come back as [`Publish::Failed`]; transient ones as errors, so the
/// reconcile retries.
pub async fn publish(
    ctx: &Context,
    build: &MultiArchBuild,
    valid: &ValidBuild,
    built: &[(Platform, String)],
    temporary_tags: &[String],
    commit: Option<&str>,
) -> Result<Publish, Error> {
    let client = &ctx.client;
    let output = &build.spec.output;
    let repository = &valid.repository;
    let auth = match push_credentials(client, build, repository.registry()).await? {
        Ok(auth) => auth,
        Err((reason, message)) => return Ok(failed(reason, message)),
    };
    let options = RegistryOptions {
        insecure: output.insecure_registry,
        extra_ca_pem: ctx.registry_ca.clone(),
        token_realm_hosts: ctx.config.registry_token_realms.clone(),
        ..Default::default()
    };
    let registry = Registry::new(options, auth)?;
    let (mut children, mut manifests) = (Vec::new(), Vec::new());
    for (platform, digest) in built {
        let child = registry.fetch_child(repository, digest).await?;
        match verify(platform, &child) {
            Ok(verified) => children.push(verified),
            Err(mismatch) => return Ok(failed(Reason::PlatformMismatch, mismatch.to_string())),
        }
        manifests.push((platform, child.manifest));
    }
    let git = build.spec.source.git.as_ref();
    let annotations = index_annotations(git.map(|g| g.url.as_str()), commit);
    let index = match assemble_index(&children, &annotations) {
        Ok(index) => index,
        Err(e) => return Ok(failed(Reason::InvalidIndex, e.to_string())),
    };
    // The spec may have changed while the children were verified: never publish an older generation's
    // index over a newer one's; the newer generation's reconcile publishes instead.
    let namespace = build.namespace().unwrap_or_default();
    let current = Api::<MultiArchBuild>::namespaced(client.clone(), &namespace).get_metadata(&build.name_any()).await?;
    if current.metadata.generation != build.metadata.generation {
        return Ok(Publish::NotYet);
    }
    ctx.fence.check().await?;
    // Each platform's tags name its image only once it is verified, as the index does.
    for (platform, manifest) in &manifests {
        let tags = platform_tags(output, platform);
        if !tags.is_empty() {
            registry.push_manifest(repository, &tags, &manifest.bytes, &manifest.media_type).await?;
        }
    }
    let digest = registry.push_index(repository, &output.tags, &index).await?;
    delete_temporary_tags(ctx, build, &registry, repository, temporary_tags).await;
    Ok(Publish::Published { image: format!("{}@{digest}", output.image) })
}

/// The push Secret's credentials for `host`; anonymous without a Secret or without an entry for the
/// host (the Secret may hold only the credentials of the base image's registry). What is wrong with the
/// Secret comes back as the reason and message to show.
pub(super) async fn push_credentials(
    client: &kube::Client,
    build: &MultiArchBuild,
    host: &str,
) -> Result<Result<RegistryAuth, (Reason, String)>, Error> {
    let Some(secret) = &build.spec.output.push_secret else { return Ok(Ok(RegistryAuth::Anonymous)) };
    let namespace = build.namespace().unwrap_or_default();
    let Some(found) = Api::<Secret>::namespaced(client.clone(), &namespace).get_opt(&secret.name).await? else {
        let message = format!("spec.output.pushSecret: Secret {:?} not found in namespace {namespace:?}", secret.name);
        return Ok(Err((Reason::PushSecretMissing, message)));
    };
    let bytes = found.data.as_ref().and_then(|d| d.get(".dockerconfigjson")).map(|b| b.0.clone());
    let Some(bytes) = bytes else {
        let message = format!("spec.output.pushSecret: Secret {:?} has no .dockerconfigjson key", secret.name);
        return Ok(Err((Reason::PushSecretInvalid, message)));
    };
    Ok(match lookup(&format!("{namespace}/{}", secret.name), &bytes, host) {
        Ok(auth) => Ok(auth.unwrap_or(RegistryAuth::Anonymous)),
        Err(e) => Err((Reason::PushSecretInvalid, format!("spec.output.pushSecret: {e}"))),
    })
}

/// Deletes the tags buildah pushed to, now that the index names the children by digest. Where the
/// registry cannot delete tags (distribution v2, Docker Hub), they stay, and one event says so; a
/// failure here never fails the build (the index is published).
async fn delete_temporary_tags(
    ctx: &Context,
    build: &MultiArchBuild,
    registry: &Registry,
    repository: &Repository,
    tags: &[String],
) {
    let mut kept = Vec::new();
    for tag in tags {
        match registry.delete_tag(repository, tag).await {
            Ok(Untagged::Deleted | Untagged::Missing) => info!(%repository, tag, "deleted the temporary tag"),
            Ok(Untagged::Refused(answer)) => kept.push(format!("{tag} ({answer})")),
            Err(e) => kept.push(format!("{tag} ({e})")),
        }
    }
    if kept.is_empty() {
        return;
    }
    let note = format!(
        "{repository}: the registry did not delete the builders' temporary tags {}; delete them by tag \
         when the registry allows (never by digest: the index names that manifest), or use builder kind \
         buildkit, which pushes by digest",
        kept.join(", ")
    );
    warn!(%repository, "{note}");
    let kept = event(EventType::Normal, Reason::TemporaryTagsKept, "Publish", None, note);
    publish_event(ctx, &build.object_ref(&()), kept).await;
}

fn failed(reason: Reason, message: String) -> Publish {
    Publish::Failed { reason, message }
}
