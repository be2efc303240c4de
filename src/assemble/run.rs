//! `archway assemble`: what runs in an assemble build pod (the I/O around the pure modules). It reads
//! the Dockerfile and the context, takes the base image's child for the platform, and puts into the
//! output repository the new layer, the base's layers (mounted where the registry can), the config and
//! the manifest; then writes the manifest's digest to the termination log, as the builders do.
//!
//! Each platform's pod makes the same layer from the same inputs (same bytes, same digest): whichever
//! pushes it first, the others find it there and push only their config and manifest. The inputs
//! include what the platform's base has at the paths the layer touches and where its symlinks on them
//! lead (`base_layers`): bases whose children differ there (a merged-usr child beside one with a real
//! `/bin`) get layers of their own.

mod base_layers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use serde_json::Value;

use super::base_files::{BaseFiles, BaseFilesError};
use super::config::{Descriptor, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, edit_config, manifest, resolve_path};
use super::dockerfile::{RecipeError, parse_owner, recipe};
use super::layer::{LayerError, paths_to_know, write_layer};
use super::{Base, Owner, Recipe};
use crate::platform::{Platform, best_match};
use crate::registry::client::BlobSource;
use crate::registry::manifest::{config_descriptor, index_children, is_index};
use crate::registry::{Registry, RegistryError, RegistryOptions, Repository, digest_of, lookup};

/// The largest Dockerfile read (a real one is a few KiB).
const MAX_DOCKERFILE_SIZE: u64 = 1 << 20;

/// What the build Job passes (as the builders' scripts get it: environment, build args as arguments).
#[derive(clap::Args, Debug)]
pub struct AssembleArgs {
    /// The build context directory.
    #[arg(long, env = "ARCHWAY_CONTEXT")]
    pub context: PathBuf,
    /// The Dockerfile, relative to the context.
    #[arg(long, env = "ARCHWAY_DOCKERFILE", default_value = "Dockerfile")]
    pub dockerfile: String,
    /// The platform to assemble, `os/arch[/variant]`.
    #[arg(long, env = "ARCHWAY_PLATFORM")]
    pub platform: String,
    /// The output repository.
    #[arg(long, env = "ARCHWAY_IMAGE")]
    pub image: String,
    /// Skip TLS verification (and speak plain HTTP to a registry without TLS).
    #[arg(long, env = "ARCHWAY_INSECURE", default_value = "false")]
    pub insecure: bool,
    /// A build argument, `KEY=VALUE` (repeatable).
    #[arg(long = "build-arg", value_parser = key_value)]
    pub build_args: Vec<(String, String)>,
    /// A base image pinned by the operator, `IMAGE=REFERENCE@DIGEST` (repeatable): a `FROM IMAGE` reads
    /// that exact image, whatever the tag names by now.
    #[arg(long = "base", value_parser = key_value)]
    pub bases: Vec<(String, String)>,
    /// Registry credentials (a dockerconfigjson), when the file exists.
    #[arg(long, default_value = "/archway/auth/config.json")]
    pub auth_file: PathBuf,
    /// A CA the registries' certificates may chain to, when the file exists.
    #[arg(long, default_value = "/archway/ca/ca.crt")]
    pub ca_file: PathBuf,
    /// A writable directory for the layer.
    #[arg(long, env = "ARCHWAY_WORK_DIR", default_value = "/archway/work")]
    pub work_dir: PathBuf,
    /// Where the pushed manifest's digest is written.
    #[arg(long, default_value = "/dev/termination-log")]
    pub digest_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    BaseFiles(#[from] BaseFilesError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the base image {reference} has no image for {platform} (it has {available})")]
    NoChild { reference: String, platform: Platform, available: String },
}

/// Assembles the image and writes its digest; returns the digest.
pub async fn assemble(args: &AssembleArgs) -> Result<String, AssembleError> {
    let target: Platform = args.platform.parse().map_err(|e| AssembleError::Input(format!("--platform: {e}")))?;
    let dockerfile = read_capped(&args.context.join(&args.dockerfile), MAX_DOCKERFILE_SIZE)?;
    let build_args: BTreeMap<String, String> = args.build_args.iter().cloned().collect();
    let recipe = recipe(&dockerfile, &build_args, &target, &this_platform())?;
    let output: Repository =
        args.image.parse().map_err(|e| AssembleError::Input(format!("ARCHWAY_IMAGE {:?}: {e}", args.image)))?;
    let clients = Clients::new(args)?;
    let registry = clients.for_host(output.registry())?;

    let base = match &recipe.base {
        Base::Scratch => None,
        Base::Image { reference, platform } => {
            let wanted = match platform {
                Some(p) => p.parse().map_err(|e| AssembleError::Input(format!("FROM --platform: {e}")))?,
                None => target.clone(),
            };
            let pinned = args.bases.iter().find(|(image, _)| image == reference).map(|(_, pinned)| pinned);
            Some(BaseImage::read(&clients, pinned.unwrap_or(reference), &wanted).await?)
        }
    };
    let base_config = base.as_ref().map(|b| &b.config);
    // The base's registry's client, with that registry's credentials.
    let source = base.as_ref().map(|b| clients.for_host(b.reference.resolve_registry())).transpose()?;
    let base_and_source = base.as_ref().zip(source.as_ref());
    let layer = push_layer(&registry, &output, args, &recipe, base_and_source).await?;
    if let Some((base, source)) = base_and_source {
        for (digest, size) in &base.layers {
            registry.copy_blob(source, &base.reference, &output, digest, *size).await?;
        }
    }

    let config = edit_config(base_config, &recipe, &target, layer.as_ref().map(|(digests, _)| digests))
        .map_err(|e| AssembleError::Input(e.to_string()))?;
    let config_bytes = serde_json::to_vec(&config).map_err(|e| AssembleError::Input(e.to_string()))?;
    // `manifest` sets the media types of the base's schema.
    let config_descriptor =
        Descriptor { media_type: OCI_CONFIG.into(), digest: digest_of(&config_bytes), size: config_bytes.len() as u64 };
    registry
        .put_blob(&output, &config_descriptor.digest, config_descriptor.size, BlobSource::Bytes(&config_bytes))
        .await?;
    let base_manifest = base.as_ref().map(|b| &b.manifest_json);
    let image = manifest(base_manifest, config_descriptor, layer.map(|(_, descriptor)| descriptor));
    let image_bytes = serde_json::to_vec(&image).map_err(|e| AssembleError::Input(e.to_string()))?;
    let media_type = image["mediaType"].as_str().unwrap_or(OCI_MANIFEST);
    let digest = registry.push_manifest_by_digest(&output, &image_bytes, media_type).await?;
    std::fs::write(&args.digest_file, &digest)
        .map_err(|error| AssembleError::Read { path: args.digest_file.display().to_string(), error })?;
    Ok(digest)
}

/// Makes the recipe's layer in the work directory and pushes it (unless the repository holds it):
/// its digests and descriptor, or `None` when the Dockerfile copies nothing and sets no WORKDIR.
async fn push_layer(
    registry: &Registry,
    output: &Repository,
    args: &AssembleArgs,
    recipe: &Recipe,
    base: Option<(&BaseImage, &Registry)>,
) -> Result<Option<(super::layer::LayerDigests, Descriptor)>, AssembleError> {
    let base_config = base.map(|(b, _)| &b.config);
    let base_working_dir = base_config.and_then(|c| c.pointer("/config/WorkingDir")).and_then(Value::as_str);
    let workdirs = workdirs(recipe, base_config);
    if recipe.copies.is_empty() && workdirs.is_empty() {
        return Ok(None);
    }
    let resolved: Vec<super::CopyStep> = recipe
        .copies
        .iter()
        .map(|copy| super::CopyStep { dest: resolve_path(base_working_dir, &copy.dest), ..copy.clone() })
        .collect();
    let base_files = match base {
        Some((base, source)) => base_layers::base_files(source, base, paths_to_know(&resolved, &workdirs)).await?,
        None => BaseFiles::default(),
    };
    let path = args.work_dir.join("layer.tar.gz");
    let file = std::fs::File::create(&path)
        .map_err(|error| AssembleError::Read { path: path.display().to_string(), error })?;
    let digests = write_layer(&args.context, &resolved, &workdirs, &base_files, std::io::BufWriter::new(file))?;
    registry.put_blob(output, &digests.digest, digests.size, BlobSource::File(&path)).await?;
    let descriptor = Descriptor { media_type: OCI_LAYER.into(), digest: digests.digest.clone(), size: digests.size };
    Ok(Some((digests, descriptor)))
}

/// The directories the recipe's WORKDIRs make, absolute, each with its owner: the USER then in effect
/// (the base image's `User` before the Dockerfile sets one), as BuildKit's `mkdir` of a WORKDIR. A user
/// by name would need the image's `/etc/passwd`: its directory stays root's.
fn workdirs(recipe: &Recipe, base_config: Option<&Value>) -> Vec<(String, Owner)> {
    let config = base_config.and_then(|c| c.get("config"));
    let base_working_dir = config.and_then(|c| c.get("WorkingDir")).and_then(Value::as_str);
    let base_user = config.and_then(|c| c.get("User")).and_then(Value::as_str);
    let root = Owner { uid: 0, gid: 0 };
    recipe
        .workdirs
        .iter()
        .map(|workdir| {
            let user = workdir.user.as_deref().or(base_user).filter(|u| !u.is_empty());
            let owner = user.and_then(parse_owner).unwrap_or(root);
            (resolve_path(base_working_dir, &workdir.dir), owner)
        })
        .collect()
}

/// The base image's child for the platform: where it is, its manifest, config and layers.
struct BaseImage {
    reference: Reference,
    manifest_json: Value,
    config: Value,
    layers: Vec<(String, u64)>,
}

impl BaseImage {
    async fn read(clients: &Clients, reference: &str, platform: &Platform) -> Result<BaseImage, AssembleError> {
        let named: Reference = reference.parse().map_err(|e| AssembleError::Input(format!("FROM {reference}: {e}")))?;
        let registry = clients.for_host(named.resolve_registry())?;
        let mut manifest = registry.fetch_manifest_raw(&named).await?;
        let mut child = named.clone();
        if is_index(&manifest.media_type) {
            let children =
                index_children(&manifest).map_err(|e| AssembleError::Input(format!("FROM {reference}: {e}")))?;
            let platforms: Vec<Platform> = children.iter().map(|(p, _)| p.clone()).collect();
            let chosen = best_match(platform, &platforms).ok_or_else(|| AssembleError::NoChild {
                reference: reference.to_string(),
                platform: platform.clone(),
                available: platforms.iter().map(Platform::to_string).collect::<Vec<_>>().join(", "),
            })?;
            let digest = children.iter().find(|(p, _)| p == chosen).map(|(_, d)| d.clone()).unwrap_or_default();
            child = Reference::with_digest(named.registry().into(), named.repository().into(), digest);
            manifest = registry.fetch_manifest_raw(&child).await?;
        }
        let manifest_json: Value = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| AssembleError::Input(format!("FROM {reference}: {e}")))?;
        let descriptor =
            config_descriptor(&manifest).map_err(|e| AssembleError::Input(format!("FROM {reference}: {e}")))?;
        let config_bytes = registry.fetch_blob(&child, &descriptor.digest, descriptor.size).await?;
        let config = serde_json::from_slice(&config_bytes)
            .map_err(|e| AssembleError::Input(format!("FROM {reference}: its config is not JSON: {e}")))?;
        let layers = manifest_json["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| Some((l["digest"].as_str()?.to_string(), l["size"].as_u64()?)))
            .collect();
        Ok(BaseImage { reference: child, manifest_json, config, layers })
    }
}

/// A registry client per host, each with that host's credentials from the push secret (builders use
/// the same file for pulls and the push).
struct Clients {
    options: RegistryOptions,
    auths: Option<Vec<u8>>,
}

impl Clients {
    fn new(args: &AssembleArgs) -> Result<Clients, AssembleError> {
        let optional = |path: &Path| match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(AssembleError::Read { path: path.display().to_string(), error }),
        };
        let options = RegistryOptions {
            insecure: args.insecure,
            extra_ca_pem: optional(&args.ca_file)?.into_iter().collect(),
            ..RegistryOptions::default()
        };
        Ok(Clients { options, auths: optional(&args.auth_file)? })
    }

    fn for_host(&self, host: &str) -> Result<Registry, AssembleError> {
        let auth = match &self.auths {
            Some(bytes) => lookup("the push secret", bytes, host).map_err(|e| AssembleError::Input(e.to_string()))?,
            None => None,
        };
        Ok(Registry::new(self.options.clone(), auth.unwrap_or(RegistryAuth::Anonymous))?)
    }
}

/// The platform this binary runs on: `BUILDPLATFORM` of an assembled image.
fn this_platform() -> Platform {
    Platform::linux(std::env::consts::ARCH, None)
}

fn read_capped(path: &Path, limit: u64) -> Result<String, AssembleError> {
    use std::io::Read;
    let read = |error| AssembleError::Read { path: path.display().to_string(), error };
    let mut text = String::new();
    std::fs::File::open(path).map_err(read)?.take(limit + 1).read_to_string(&mut text).map_err(read)?;
    if text.len() as u64 > limit {
        return Err(AssembleError::Input(format!("{} is larger than {limit} bytes", path.display())));
    }
    Ok(text)
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn workdirs_are_made_for_the_user_then_in_effect() {
        let text = "FROM base\nWORKDIR a\nUSER 1000\nWORKDIR b\nUSER 1001:1002\nWORKDIR /c\nUSER app\nWORKDIR /d\n";
        let platform = Platform::linux("amd64", None);
        let recipe = recipe(text, &BTreeMap::new(), &platform, &platform).unwrap();
        let owner = |uid, gid| Owner { uid, gid };
        // The base runs as 65532 in /srv: the first WORKDIR is its, and below /srv as the second. A user
        // by name stays root's.
        let base = json!({"config": {"User": "65532", "WorkingDir": "/srv"}});
        let expected = [
            ("/srv/a".to_string(), owner(65532, 65532)),
            ("/srv/a/b".into(), owner(1000, 1000)),
            ("/c".into(), owner(1001, 1002)),
            ("/d".into(), owner(0, 0)),
        ];
        assert_eq!(workdirs(&recipe, Some(&base)), expected);
        // `FROM scratch`, or a base without a User: root.
        let recipe = super::recipe("FROM scratch\nWORKDIR app\n", &BTreeMap::new(), &platform, &platform).unwrap();
        assert_eq!(workdirs(&recipe, None), [("/app".to_string(), owner(0, 0))]);
    }
}
