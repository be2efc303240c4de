//! The multi-arch base image `library/busybox:usrmerge` (also tagged `latest`), built from Debian's
//! busybox-static packages for amd64, arm64, armhf (linux/arm/v7) and armel (linux/arm/v6) with buildah,
//! and pushed as an OCI index. The registry's storage outlives a run, so this is skipped when the image
//! is already there.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tokio::process::Command;

use crate::process::run;
use crate::registry::Registry;

/// Tagged by layout: a registry kept from a run before the merged-usr layout holds the older one under
/// `latest`, which [`ensure`] would otherwise take as it is.
pub const REPO: &str = "library/busybox:usrmerge";
/// The same index under the name the examples, the demo and the benches use, as a user would.
const LATEST: &str = "library/busybox:latest";
/// The usual PATH, so that a Dockerfile that installs into /usr/local/bin works as on any base.
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A Debian architecture and the OCI platform its packages run on.
struct Arch {
    debian: &'static str,
    oci: &'static str,
    variant: Option<&'static str>,
}

const ARCHES: &[Arch] = &[
    Arch { debian: "amd64", oci: "amd64", variant: None },
    Arch { debian: "arm64", oci: "arm64", variant: Some("v8") },
    Arch { debian: "armhf", oci: "arm", variant: Some("v7") },
    Arch { debian: "armel", oci: "arm", variant: Some("v6") },
];

/// Makes sure the registry holds the base image, and returns its reference.
pub async fn ensure(dir: &Path, registry: &Registry) -> Result<String> {
    let reference = registry.image(REPO);
    let raw = match inspect_raw(registry, &reference).await {
        Ok(raw) if verify(&raw).is_ok() => {
            tracing::info!(%reference, "base image already in the registry");
            raw
        }
        _ => {
            let debs = fetch_debs().await?;
            build(dir, registry, &reference, &debs).await?;
            let raw = inspect_raw(registry, &reference).await?;
            verify(&raw).with_context(|| format!("{reference} after the push"))?;
            raw
        }
    };
    let latest = registry.image(LATEST);
    if inspect_raw(registry, &latest).await.ok() != Some(raw) {
        run(Command::new("skopeo")
            .args(["copy", "--all", "--preserve-digests", "--authfile"])
            .arg(&registry.auth_file)
            .arg("--src-cert-dir")
            .arg(&registry.cert_dir)
            .arg("--dest-cert-dir")
            .arg(&registry.cert_dir)
            .arg(format!("docker://{reference}"))
            .arg(format!("docker://{latest}")))
        .await
        .with_context(|| format!("tagging {reference} as {latest}"))?;
    }
    Ok(reference)
}

/// The index as the registry serves it, read by skopeo (a client we did not write).
pub async fn inspect_raw(registry: &Registry, reference: &str) -> Result<String> {
    run(Command::new("skopeo")
        .args(["inspect", "--raw", "--authfile"])
        .arg(&registry.auth_file)
        .arg("--cert-dir")
        .arg(&registry.cert_dir)
        .arg(format!("docker://{reference}")))
    .await
}

/// An OCI index with exactly the four platforms. An arm entry without its variant would be a bug:
/// containerd reads it as v7, so a v6 Pi would skip it.
pub fn verify(raw: &str) -> Result<()> {
    let index: Value = serde_json::from_str(raw)?;
    ensure!(index["mediaType"] == OCI_INDEX, "not an OCI index: mediaType {}", index["mediaType"]);
    let manifests = index["manifests"].as_array().map(Vec::as_slice).unwrap_or_default();
    let found: BTreeSet<String> = manifests
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let field = |name: &str| p[name].as_str().unwrap_or("?");
            platform(field("os"), field("architecture"), p["variant"].as_str())
        })
        .collect();
    let want: BTreeSet<String> = ARCHES.iter().map(|a| platform("linux", a.oci, a.variant)).collect();
    ensure!(found == want && manifests.len() == want.len(), "index platforms {found:?}, want {want:?}");
    Ok(())
}

/// `os/arch[/variant]`, with arm64's v8 left out: containerd reads a missing arm64 variant as v8.
fn platform(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant.filter(|v| !(arch == "arm64" && *v == "v8")) {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    }
}

/// `<cache>/debs/<debian arch>.deb` for every arch, downloaded with apt once per machine. Foreign
/// architectures are added to dpkg first (a system-wide change, as root) so apt knows their packages.
async fn fetch_debs() -> Result<PathBuf> {
    let debs = cache_dir().join("debs");
    fs::create_dir_all(&debs)?;
    let missing: Vec<&Arch> = ARCHES.iter().filter(|a| !debs.join(format!("{}.deb", a.debian)).exists()).collect();
    if missing.is_empty() {
        return Ok(debs);
    }
    let native = run(Command::new("dpkg").arg("--print-architecture")).await?;
    let foreign = run(Command::new("dpkg").arg("--print-foreign-architectures")).await?;
    for arch in &missing {
        if arch.debian != native.trim() && !foreign.lines().any(|l| l == arch.debian) {
            run(Command::new("dpkg").args(["--add-architecture", arch.debian])).await?;
        }
    }
    // apt's lists may lack a just-added architecture or be stale: update once, on the first
    // failed download. An update that fails in part (a mirror mid-sync) may still have fetched
    // what is needed, so only the download's own failure counts.
    let mut updated = false;
    for arch in missing {
        let target = debs.join(format!("{}.deb", arch.debian));
        let mut result = download(arch.debian, &target).await;
        if result.is_err() && !updated {
            updated = true;
            if let Err(e) = run(Command::new("apt-get").arg("update")).await {
                tracing::warn!("apt-get update: {e:#}");
            }
            result = download(arch.debian, &target).await;
        }
        result.with_context(|| format!("downloading busybox-static for {}", arch.debian))?;
    }
    Ok(debs)
}

/// `apt-get download busybox-static:ARCH` into `target`. apt names the file by version; a scratch
/// dir beside `target` makes it easy to find.
async fn download(arch: &str, target: &Path) -> Result<()> {
    let scratch = target.with_extension("download");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    run(Command::new("apt-get").arg("download").arg(format!("busybox-static:{arch}")).current_dir(&scratch)).await?;
    let Some(deb) = fs::read_dir(&scratch)?.flatten().next() else {
        bail!("apt-get download busybox-static:{arch} left no file");
    };
    fs::rename(deb.path(), target)?;
    fs::remove_dir_all(&scratch)?;
    Ok(())
}

/// The per-user cache that hack/build-control-plane.sh uses too.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ARCHWAY_CACHE") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    base.join("archway")
}

/// One image per arch with buildah, in a private store, then an index of the four, pushed with all
/// its children.
async fn build(dir: &Path, registry: &Registry, reference: &str, debs: &Path) -> Result<()> {
    let work = dir.join("baseimage");
    let _ = fs::remove_dir_all(&work);
    let store = work.join("buildah");
    let buildah = |args: &[&str]| {
        let mut cmd = Command::new("buildah");
        cmd.arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        cmd
    };
    run(&mut buildah(&["manifest", "create", "busybox"])).await?;
    for arch in ARCHES {
        let rootfs = work.join(arch.debian);
        make_rootfs(&debs.join(format!("{}.deb", arch.debian)), &rootfs).await?;
        let ctr = run(&mut buildah(&["from", "scratch"])).await?;
        let ctr = ctr.trim();
        run(&mut buildah(&["copy", ctr, &format!("{}/", rootfs.display()), "/"])).await?;
        let mut config = vec!["config", "--os", "linux", "--arch", arch.oci];
        if let Some(variant) = arch.variant {
            config.extend(["--variant", variant]);
        }
        config.extend(["--env", PATH, "--cmd", "sh", ctr]);
        run(&mut buildah(&config)).await?;
        let id = run(&mut buildah(&["commit", "--quiet", "--rm", "--format", "oci", ctr])).await?;
        run(&mut buildah(&["manifest", "add", "busybox", id.trim()])).await?;
    }
    let mut push = buildah(&["manifest", "push", "--all", "--format", "oci"]);
    push.arg("--authfile")
        .arg(&registry.auth_file)
        .arg("--cert-dir")
        .arg(&registry.cert_dir)
        .arg("busybox")
        .arg(format!("docker://{reference}"));
    run(&mut push).await?;
    // The vfs store keeps a full copy of every layer; the registry has them now.
    fs::remove_dir_all(&work)?;
    tracing::info!(%reference, "pushed the base image");
    Ok(())
}

/// `/usr/bin/busybox` from the package, a symlink in /usr/bin for each of its applets, `/srv` and
/// `/tmp`; laid out as a merged-usr Debian is, with `/bin -> usr/bin` and `/var/run -> ../run`, so that
/// what is written below a base's symlinks is tested. The applet list comes from each binary itself
/// (foreign ones run through qemu's binfmt handlers), so it matches that build exactly.
async fn make_rootfs(deb: &Path, rootfs: &Path) -> Result<()> {
    let extracted = rootfs.with_extension("deb-root");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&extracted)).await?;
    let bin = rootfs.join("usr/bin");
    fs::create_dir_all(&bin)?;
    fs::copy(extracted.join("bin/busybox"), bin.join("busybox"))
        .with_context(|| format!("{} has no bin/busybox", deb.display()))?;
    fs::remove_dir_all(&extracted)?;
    let applets = run(Command::new(bin.join("busybox")).arg("--list")).await?;
    for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        symlink("busybox", bin.join(applet))?;
    }
    symlink("usr/bin", rootfs.join("bin"))?;
    fs::create_dir_all(rootfs.join("run"))?;
    fs::create_dir_all(rootfs.join("var"))?;
    symlink("../run", rootfs.join("var/run"))?;
    fs::create_dir_all(rootfs.join("srv"))?;
    fs::create_dir_all(rootfs.join("tmp"))?;
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn index(media_type: &str, platforms: &[(&str, Option<&str>)]) -> String {
        let manifests: Vec<Value> = platforms
            .iter()
            .map(|(arch, variant)| {
                let mut platform = json!({"os": "linux", "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = json!(v);
                }
                json!({"digest": "sha256:00", "platform": platform})
            })
            .collect();
        json!({"mediaType": media_type, "manifests": manifests}).to_string()
    }

    const GOOD: &[(&str, Option<&str>)] =
        &[("amd64", None), ("arm64", Some("v8")), ("arm", Some("v7")), ("arm", Some("v6"))];

    #[test]
    fn accepts_the_four_platforms_with_or_without_arm64_variant() {
        verify(&index(OCI_INDEX, GOOD)).unwrap();
        let no_v8 = [GOOD[0], ("arm64", None), GOOD[2], GOOD[3]];
        verify(&index(OCI_INDEX, &no_v8)).unwrap();
    }

    #[test]
    fn rejects_docker_lists_missing_variants_and_extras() {
        let docker = "application/vnd.docker.distribution.manifest.list.v2+json";
        assert!(verify(&index(docker, GOOD)).is_err());
        let no_v6 = [GOOD[0], GOOD[1], GOOD[2], ("arm", None)];
        assert!(verify(&index(OCI_INDEX, &no_v6)).is_err());
        let twice = [GOOD[0], GOOD[1], GOOD[2], GOOD[3], GOOD[0]];
        assert!(verify(&index(OCI_INDEX, &twice)).is_err());
    }
}
