//! Real images: the child a node pulled, unpacked once per digest into a root filesystem (layers in
//! order, OCI whiteouts applied), with the parts of its config a container run needs. Containers run
//! on an overlay of it (see `sandbox::image_script`), so the unpacked tree is never written.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::GzDecoder;
use serde::Deserialize;

use super::pods::PodError;
use super::pull::{Layer, Puller};

/// The parts of an OCI image config that decide how its containers run.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub(crate) struct ImageConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: Option<ImageConfig>,
}

/// An unpacked image.
#[derive(Clone, Debug)]
pub(crate) struct Unpacked {
    pub rootfs: PathBuf,
    pub config: ImageConfig,
}

/// Unpacked images under `<work dir>/images/<digest hex>/`, shared by every pod of the host.
pub(crate) struct ImageStore {
    dir: PathBuf,
}

impl ImageStore {
    pub fn new(dir: PathBuf) -> ImageStore {
        ImageStore { dir }
    }

    /// The image `image_id` (`registry/repo@sha256:...`) unpacked: from the store when an earlier pod
    /// unpacked it, else pulled now. Two pods unpacking the same image at once each make their own
    /// copy; the first to finish wins and the other's is removed.
    pub async fn unpack(&self, puller: &Puller, image_id: &str) -> Result<Unpacked, PodError> {
        let hex = image_id.rsplit_once("@sha256:").map(|(_, hex)| hex).unwrap_or_default();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PodError::new("InvalidImageName", format!("{image_id} is not pinned by a sha256 digest")));
        }
        let done = self.dir.join(hex);
        // An image unpacked before keeps its config beside its root: no registry request.
        let blob = match std::fs::read(done.join("config.json")) {
            Ok(blob) => blob,
            Err(_) => {
                let (layers, blob) = puller.image(image_id).await?;
                let partial = self.dir.join(format!("{hex}.partial-{}", unique()));
                let result = self.fill(puller, image_id, &layers, &blob, &partial).await;
                if let Err(e) = result {
                    let _ = std::fs::remove_dir_all(&partial);
                    return Err(e);
                }
                if std::fs::rename(&partial, &done).is_err() {
                    // Another pod's copy got there first.
                    let _ = std::fs::remove_dir_all(&partial);
                }
                blob
            }
        };
        Ok(Unpacked { rootfs: done.join("rootfs"), config: parse_config(image_id, &blob)? })
    }

    /// Unpacks the layers into `partial/rootfs` and writes the config blob last, as `partial/config.json`.
    async fn fill(
        &self,
        puller: &Puller,
        image_id: &str,
        layers: &[Layer],
        config: &[u8],
        partial: &Path,
    ) -> Result<(), PodError> {
        let rootfs = partial.join("rootfs");
        let failed = |e: std::io::Error| PodError::new("ErrImagePull", format!("unpacking {image_id}: {e}"));
        std::fs::create_dir_all(&rootfs).map_err(failed)?;
        for (index, layer) in layers.iter().enumerate() {
            let blob = partial.join(format!("layer-{index}"));
            puller.blob_to_file(image_id, &layer.digest, &blob).await?;
            let (blob_path, rootfs, media_type) = (blob.clone(), rootfs.clone(), layer.media_type.clone());
            tokio::task::spawn_blocking(move || apply_layer(&blob_path, &media_type, &rootfs))
                .await
                .map_err(|e| PodError::new("ErrImagePull", format!("unpacking {image_id}: {e}")))?
                .map_err(|e| {
                    PodError::new("ErrImagePull", format!("unpacking layer {} of {image_id}: {e}", layer.digest))
                })?;
            std::fs::remove_file(&blob).map_err(failed)?;
        }
        std::fs::write(partial.join("config.json"), config).map_err(failed)
    }
}

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    u64::from(std::process::id()) << 32 | NEXT.fetch_add(1, Ordering::Relaxed)
}

fn parse_config(image_id: &str, blob: &[u8]) -> Result<ImageConfig, PodError> {
    let parsed: ConfigBlob = serde_json::from_slice(blob)
        .map_err(|e| PodError::new("ErrImagePull", format!("{image_id}: bad image config: {e}")))?;
    Ok(parsed.config.unwrap_or_default())
}

/// A layer's tar stream, gzip-compressed or not, by its media type.
fn open_layer(blob: &Path, media_type: &str) -> std::io::Result<Box<dyn Read>> {
    let file = File::open(blob)?;
    Ok(if media_type.ends_with("gzip") {
        Box::new(GzDecoder::new(file))
    } else if media_type.ends_with("tar") {
        Box::new(file)
    } else {
        return Err(std::io::Error::other(format!("layer media type {media_type} is not supported")));
    })
}

/// Applies one layer onto `rootfs`: first its whiteouts (they hide what lower layers put there), then
/// its entries, with their owners, modes and times.
fn apply_layer(blob: &Path, media_type: &str, rootfs: &Path) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(open_layer(blob, media_type)?);
    for entry in archive.entries()? {
        let entry = entry?;
        let path = entry.path()?.into_owned();
        if let Some(whiteout) = Whiteout::of(&path) {
            whiteout.apply(rootfs)?;
        }
    }
    let mut archive = tar::Archive::new(open_layer(blob, media_type)?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if Whiteout::of(&path).is_none() {
            entry.unpack_in(rootfs)?;
        }
    }
    Ok(())
}

/// An OCI whiteout entry: `.wh.NAME` removes NAME, `.wh..wh..opq` empties its directory.
#[derive(Debug, PartialEq)]
enum Whiteout {
    Remove(PathBuf),
    Opaque(PathBuf),
}

impl Whiteout {
    fn of(path: &Path) -> Option<Whiteout> {
        let name = path.file_name()?.to_str()?;
        let hidden = name.strip_prefix(".wh.")?;
        let parent = path.parent().unwrap_or(Path::new(""));
        // Only plain relative paths: a whiteout never reaches outside the root.
        if !parent.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
            return None;
        }
        Some(match hidden {
            ".wh..opq" => Whiteout::Opaque(parent.to_path_buf()),
            _ if hidden.is_empty() || hidden.contains('/') || hidden == ".." || hidden == "." => return None,
            _ => Whiteout::Remove(parent.join(hidden)),
        })
    }

    fn apply(&self, rootfs: &Path) -> std::io::Result<()> {
        match self {
            Whiteout::Remove(path) => remove_any(&rootfs.join(path)),
            Whiteout::Opaque(dir) => match std::fs::read_dir(rootfs.join(dir)) {
                Ok(mut entries) => entries.try_for_each(|e| remove_any(&e?.path())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        }
    }
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    let result = match path.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// `path` (absolute, as the container sees it) resolved inside `rootfs` the way the container's
/// kernel would: symlinks followed with `rootfs` as their `/`, `..` never above it. Components that do
/// not exist yet are kept as written (the mount script creates them).
pub(crate) fn resolve_in_root(rootfs: &Path, path: &str) -> PathBuf {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<String> = path.split('/').rev().filter(|c| !c.is_empty()).map(String::from).collect();
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        match component.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(&component);
        match std::fs::read_link(rootfs.join(&candidate)) {
            Ok(target) if hops < 40 => {
                hops += 1;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved = PathBuf::new();
                }
                pending.extend(target.split('/').rev().filter(|c| !c.is_empty()).map(String::from));
            }
            _ => resolved = candidate,
        }
    }
    rootfs.join(resolved)
}

/// The uid and gid a container runs as: its securityContext's (the container's over the pod's), else
/// the image's `USER` (`uid`, `uid:gid`, or names looked up in the image's /etc/passwd and
/// /etc/group), else root.
pub(crate) fn user_of(
    rootfs: &Path,
    image_user: Option<&str>,
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
) -> Result<(u32, u32), String> {
    let (user, group) = match image_user.filter(|u| !u.is_empty()) {
        Some(spec) => {
            let (user, group) = spec.split_once(':').map_or((spec, None), |(u, g)| (u, Some(g)));
            (Some(user), group)
        }
        None => (None, None),
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let lookup = |file: &str, name: &str| -> Option<(u32, Option<u32>)> {
        file.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
            .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3).and_then(|g| g.parse().ok()))))
    };
    let (mut uid, mut primary_gid) = (0, 0);
    if let Some(user) = user {
        match user.parse::<u32>() {
            Ok(n) => uid = n,
            Err(_) => {
                let (n, gid) =
                    lookup(&passwd, user).ok_or(format!("user {user:?} is not in the image's /etc/passwd"))?;
                uid = n;
                primary_gid = gid.unwrap_or(0);
            }
        }
    }
    let mut gid = primary_gid;
    if let Some(group) = group {
        gid = match group.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
                lookup(&groups, group).ok_or(format!("group {group:?} is not in the image's /etc/group"))?.0
            }
        };
    }
    let id = |n: i64| u32::try_from(n).map_err(|_| format!("{n} is not a valid id"));
    if let Some(n) = run_as_user {
        uid = id(n)?;
    }
    if let Some(n) = run_as_group {
        gid = id(n)?;
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hostlet-image-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn whiteouts_are_recognised() {
        assert_eq!(Whiteout::of(Path::new("etc/.wh.motd")), Some(Whiteout::Remove("etc/motd".into())));
        assert_eq!(Whiteout::of(Path::new("var/cache/.wh..wh..opq")), Some(Whiteout::Opaque("var/cache".into())));
        assert_eq!(Whiteout::of(Path::new(".wh.top")), Some(Whiteout::Remove("top".into())));
        assert_eq!(Whiteout::of(Path::new("../.wh.x")), None);
        assert_eq!(Whiteout::of(Path::new("etc/motd")), None);
    }

    /// Two layers: the second removes a file, empties a directory and adds its own file there.
    #[test]
    fn layers_apply_in_order_with_whiteouts() {
        let dir = temp("layers");
        let layer = |name: &str, entries: &[(&str, &[u8])]| {
            let path = dir.join(name);
            let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
                File::create(&path).unwrap(),
                flate2::Compression::fast(),
            ));
            for (path, data) in entries {
                let mut header = tar::Header::new_gnu();
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                header.set_uid(0);
                header.set_gid(0);
                header.set_mtime(0);
                header.set_cksum();
                builder.append_data(&mut header, path, *data).unwrap();
            }
            builder.into_inner().unwrap().finish().unwrap();
            path
        };
        let first = layer("1", &[("etc/motd", b"hi"), ("cache/a", b"a"), ("cache/b", b"b"), ("keep", b"k")]);
        let second = layer("2", &[("etc/.wh.motd", b""), ("cache/.wh..wh..opq", b""), ("cache/c", b"c")]);
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
        apply_layer(&first, gzip, &rootfs).unwrap();
        apply_layer(&second, gzip, &rootfs).unwrap();
        assert!(!rootfs.join("etc/motd").exists());
        assert!(!rootfs.join("cache/a").exists() && !rootfs.join("cache/b").exists());
        assert_eq!(std::fs::read(rootfs.join("cache/c")).unwrap(), b"c");
        assert_eq!(std::fs::read(rootfs.join("keep")).unwrap(), b"k");
        assert!(apply_layer(&first, "application/vnd.oci.image.layer.v1.tar+zstd", &rootfs).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn paths_resolve_inside_the_root() {
        let root = temp("resolve");
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("run/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let r = |p: &str| resolve_in_root(&root, p);
        assert_eq!(r("/var/run/secrets/token"), root.join("run/secrets/token"));
        assert_eq!(r("/run/up/etc"), root.join("etc"));
        assert_eq!(r("/a/../../b"), root.join("b"));
        assert!(r("/loop").starts_with(&root));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn users_come_from_the_security_context_then_the_image() {
        let root = temp("users");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nnonroot:x:65532:65533::/home:/bin/sh\n")
            .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let u = |image: Option<&str>, user, group| user_of(&root, image, user, group);
        assert_eq!(u(None, None, None), Ok((0, 0)));
        assert_eq!(u(Some("65532:65532"), None, None), Ok((65532, 65532)));
        assert_eq!(u(Some("nonroot"), None, None), Ok((65532, 65533)));
        assert_eq!(u(Some("nonroot:staff"), None, None), Ok((65532, 50)));
        assert_eq!(u(Some("nonroot"), Some(1000), Some(2000)), Ok((1000, 2000)));
        assert!(u(Some("nobody"), None, None).unwrap_err().contains("nobody"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn configs_parse_with_missing_fields() {
        let config =
            parse_config("i", br#"{"architecture":"arm64","config":{"Cmd":["sh"],"Env":["PATH=/bin"]}}"#).unwrap();
        assert_eq!(config.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(config.entrypoint, None);
        assert_eq!(parse_config("i", br#"{"architecture":"amd64"}"#).unwrap(), ImageConfig::default());
    }
}
