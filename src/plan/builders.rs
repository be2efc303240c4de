//! What differs between the builders in a build Job: the image, the script, how a build arg is
//! passed, where the builder keeps its storage, and the privileges it needs. The rest of the Job
//! (labels, source, credentials, CA, bounds) is the same for all and lives in `job.rs`.

use k8s_openapi::api::core::v1::{AppArmorProfile, Capabilities, PodSecurityContext, SeccompProfile, SecurityContext};

use super::job::BuilderConfig;
use crate::api::BuildTool;
use crate::platform::Platform;
use crate::registry::Repository;

/// Where BuildKit keeps its state: the rootless image's default root, an emptyDir in the pod.
pub const BUILDKIT_ROOT: &str = "/home/user/.local/share/buildkit";
const BUILDAH_STORAGE: &str = "/var/lib/containers";
/// The rootless image's user.
const BUILDKIT_UID: i64 = 1000;
/// Where `archway assemble` writes its layer (its default `--work-dir`).
const ASSEMBLE_WORK_DIR: &str = "/archway/work";
/// The user of the operator's image (distroless' nonroot).
const ASSEMBLE_UID: i64 = 65532;

/// Builds into private storage and pushes the build tag (a push needs a name; the operator copies the
/// verified image to `platformTags` itself), with its digest written to the termination log. Build
/// args arrive as positional parameters, so no value is ever parsed by the shell.
const BUILDAH_SCRIPT: &str = r#"set -eu
s="--root /var/lib/containers/storage --runroot /var/lib/containers/run --storage-driver vfs"
tls=""
[ -f /archway/auth/config.json ] && tls="--authfile /archway/auth/config.json"
[ -d /archway/ca ] && tls="$tls --cert-dir /archway/ca"
[ "$ARCHWAY_INSECURE" = true ] && tls="$tls --tls-verify=false"
buildah $s build $tls --platform "$ARCHWAY_PLATFORM" --isolation chroot \
  -f "$ARCHWAY_CONTEXT/$ARCHWAY_DOCKERFILE" "$@" -t archway-build "$ARCHWAY_CONTEXT"
buildah $s push $tls --digestfile /dev/termination-log archway-build "docker://$ARCHWAY_IMAGE:$ARCHWAY_BUILD_TAG"
"#;

/// Starts a buildkitd for this one build (buildctl-daemonless.sh), configured for the output registry
/// and the cache's (when insecure, no verification, and plain HTTP if the registry speaks no TLS) and
/// trusting the registry CA for every registry (as buildah's `--cert-dir` does); pushes by digest (no tag is left
/// behind), and writes the digest from the build's metadata to the termination log. Build args arrive as positional parameters (`--opt build-arg:K=V`), never parsed by the shell.
/// Attestations stay off (buildctl adds none unless asked), so the push is one image, not an index.
const BUILDKIT_SCRIPT: &str = r#"set -eu
d=$(mktemp -d)
# The output's registry, and the cache's where it is another.
for r in "$ARCHWAY_REGISTRY" ${ARCHWAY_CACHE_REGISTRY:+"$ARCHWAY_CACHE_REGISTRY"}; do
  echo "[registry.\"$r\"]"
  if [ "$ARCHWAY_INSECURE" = true ]; then
    echo '  http = true'; echo '  insecure = true'
  else
    # BuildKit would speak plain HTTP to a loopback registry.
    echo '  http = false'
  fi
done > "$d/buildkitd.toml"
export BUILDKITD_FLAGS="${BUILDKITD_FLAGS:-} --root $ARCHWAY_BUILDKIT_ROOT --config $d/buildkitd.toml"
export DOCKER_CONFIG=/archway/auth
# Go's system roots: the default bundle file, plus every certificate in these directories.
if [ -f /archway/ca/ca.crt ]; then export SSL_CERT_DIR="/archway/ca:${SSL_CERT_DIR:-/etc/ssl/certs}"; fi
buildctl-daemonless.sh build --frontend dockerfile.v0 \
  --local context="$ARCHWAY_CONTEXT" --local dockerfile="$ARCHWAY_CONTEXT" \
  --opt filename="$ARCHWAY_DOCKERFILE" --opt platform="$ARCHWAY_PLATFORM" "$@" \
  --output "type=image,name=$ARCHWAY_IMAGE,push-by-digest=true,push=true,oci-mediatypes=true" \
  --metadata-file "$d/metadata.json"
digest=$(sed -n 's/.*"containerimage\.digest": *"\(sha256:[0-9a-f]\{64\}\)".*/\1/p' "$d/metadata.json")
if [ -z "$digest" ]; then
  echo "the build's metadata has no containerimage.digest:" >&2; cat "$d/metadata.json" >&2; exit 1
fi
printf '%s' "$digest" > /dev/termination-log
"#;

/// The builder-specific part of a build container.
pub struct Builder {
    pub image: String,
    /// The shell script the container runs (`sh -c`), or `None` for the image's entrypoint (`archway`).
    pub script: Option<&'static str>,
    /// Mounted as an emptyDir: the builder's storage.
    pub storage_dir: &'static str,
    pub security_context: SecurityContext,
    /// Environment beyond what every builder gets.
    pub env: Vec<(&'static str, String)>,
    /// The pod's security context, where the builder needs one.
    pub pod_security_context: Option<PodSecurityContext>,
}

impl Builder {
    /// `image` is `spec.builder.image`, which replaces the operator's default for the kind.
    pub fn new(tool: BuildTool, image: Option<&str>, config: &BuilderConfig) -> Builder {
        let image = |default: &str| image.unwrap_or(default).to_string();
        match tool {
            BuildTool::Buildah => Builder {
                image: image(&config.buildah_image),
                script: Some(BUILDAH_SCRIPT),
                storage_dir: BUILDAH_STORAGE,
                security_context: buildah_security_context(),
                env: Vec::new(),
                pod_security_context: None,
            },
            BuildTool::Buildkit => Builder {
                image: image(&config.buildkit_image),
                script: Some(BUILDKIT_SCRIPT),
                storage_dir: BUILDKIT_ROOT,
                security_context: buildkit_security_context(),
                env: vec![
                    // Else rootless BuildKit gives RUN steps a PID namespace and a fresh /proc, which an
                    // unprivileged pod cannot mount over its masked /proc; RUN steps share the pod's PIDs.
                    ("BUILDKITD_FLAGS", "--oci-worker-no-process-sandbox".into()),
                    ("ARCHWAY_BUILDKIT_ROOT", BUILDKIT_ROOT.into()),
                ],
                pod_security_context: None,
            },
            // `archway assemble` reads files and talks to registries: nothing more.
            BuildTool::Assemble => Builder {
                image: config.assemble_image.clone(),
                script: None,
                storage_dir: ASSEMBLE_WORK_DIR,
                security_context: SecurityContext {
                    allow_privilege_escalation: Some(false),
                    capabilities: Some(Capabilities { add: None, drop: Some(vec!["ALL".into()]) }),
                    ..Default::default()
                },
                env: Vec::new(),
                pod_security_context: Some(restricted_pod()),
            },
        }
    }
}

/// What Pod Security `restricted` asks of a pod: a non-root user and the runtime's seccomp profile
/// (each container also drops every capability and may not escalate).
fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(ASSEMBLE_UID),
        run_as_group: Some(ASSEMBLE_UID),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..Default::default()
    }
}

/// The words that pass one build arg to the builder's script.
pub fn build_arg(tool: BuildTool, key: &str, value: &str) -> [String; 2] {
    match tool {
        BuildTool::Buildah => ["--build-arg".into(), format!("{key}={value}")],
        BuildTool::Buildkit => ["--opt".into(), format!("build-arg:{key}={value}")],
        BuildTool::Assemble => ["--build-arg".into(), format!("{key}={value}")],
    }
}

/// The words that make the builder read and write its cache in `repository` (one platform's: see
/// [`platform_cache`]). buildah pushes each step's layer as an image tagged by the step's cache key
/// and looks them up before running a step; BuildKit keeps one cache manifest (`mode=max`: every
/// step's layer, not only the final image's) at the tag `buildkit`. `assemble` runs no step: none.
pub fn cache_args(tool: BuildTool, repository: &str) -> Vec<String> {
    match tool {
        BuildTool::Buildah => {
            vec!["--layers".into(), "--cache-from".into(), repository.into(), "--cache-to".into(), repository.into()]
        }
        BuildTool::Buildkit => {
            let reference = format!("type=registry,ref={repository}:{BUILDKIT_CACHE_TAG}");
            vec!["--import-cache".into(), reference.clone(), "--export-cache".into(), format!("{reference},mode=max")]
        }
        BuildTool::Assemble => Vec::new(),
    }
}

/// The tag of BuildKit's cache manifest in a platform's cache repository.
const BUILDKIT_CACHE_TAG: &str = "buildkit";

/// One platform's cache: the repository `<spec.cache.image>-<platform slug>`
/// (`.../blog-cache-linux-arm-v7`), so one platform's build never overwrites another's cache (BuildKit's
/// is one tag) nor finds its layers. A sibling, not a nested repository: Docker Hub and Quay have only
/// `namespace/name`.
pub fn platform_cache(cache: &Repository, platform: &Platform) -> String {
    format!("{cache}-{}", platform.slug())
}

/// buildah in a pod needs to set up user namespaces and mounts for its chroot isolation.
fn buildah_security_context() -> SecurityContext {
    SecurityContext {
        capabilities: Some(Capabilities {
            add: Some(["SETUID", "SETGID", "SYS_ADMIN", "SYS_CHROOT", "MKNOD"].map(String::from).to_vec()),
            drop: None,
        }),
        seccomp_profile: Some(SeccompProfile { type_: "Unconfined".into(), localhost_profile: None }),
        ..Default::default()
    }
}

/// Rootless BuildKit adds no capability: it runs as an ordinary user and makes its own user and
/// mount namespaces, which the default seccomp and AppArmor profiles forbid.
fn buildkit_security_context() -> SecurityContext {
    SecurityContext {
        run_as_user: Some(BUILDKIT_UID),
        run_as_group: Some(BUILDKIT_UID),
        seccomp_profile: Some(SeccompProfile { type_: "Unconfined".into(), localhost_profile: None }),
        app_armor_profile: Some(AppArmorProfile { type_: "Unconfined".into(), localhost_profile: None }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Runs the BuildKit script against a stub `buildctl-daemonless.sh` that records its argv, its
    /// buildkitd flags and config and `SSL_CERT_DIR` in `dir`, in a mount namespace where
    /// `/dev/termination-log` is `dir/termination-log` and, with `ca`, `/archway/ca` holds a `ca.crt`.
    /// Returns whether it succeeded and its stderr.
    fn run_script(dir: &Path, insecure: bool, ca: bool, cache_registry: Option<&str>) -> (bool, String) {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let stub = format!(
            r#"#!/bin/sh
for a in "$@"; do printf '%s\n' "$a"; done > "$OUT/argv"
while [ "$1" != --metadata-file ]; do shift; done
meta=$2
printf '%s' "$BUILDKITD_FLAGS" > "$OUT/flags"
printf '%s' "${{SSL_CERT_DIR:-unset}}" > "$OUT/cert-dir"
set -- $BUILDKITD_FLAGS
cp "$5" "$OUT/buildkitd.toml"
printf '{{\n  "containerimage.descriptor": {{"digest": "sha256:{}"}},\n  "containerimage.digest": "sha256:{}"\n}}' > "$meta"
"#,
            "00".repeat(32),
            "ab".repeat(32)
        );
        let script = bin.join("buildctl-daemonless.sh");
        std::fs::write(&script, stub).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let termination = dir.join("termination-log");
        std::fs::write(&termination, "").unwrap();
        // The bind mount's target, as the hostlet makes it: missing on a machine that never ran a pod.
        if !std::path::Path::new("/dev/termination-log").exists() {
            std::fs::write("/dev/termination-log", "").unwrap();
        }
        let mut wrapper = format!("mount --bind {} /dev/termination-log", termination.display());
        if ca {
            let ca_dir = dir.join("ca");
            std::fs::create_dir_all(&ca_dir).unwrap();
            std::fs::write(ca_dir.join("ca.crt"), "").unwrap();
            wrapper += &format!(" && mkdir -p /archway/ca && mount --bind {} /archway/ca", ca_dir.display());
        }
        wrapper += " && exec \"$@\"";
        let mut command = std::process::Command::new("unshare");
        if let Some(registry) = cache_registry {
            command.env("ARCHWAY_CACHE_REGISTRY", registry);
        }
        let out = command
            .args(["--mount", "--propagation", "private", "sh", "-c", &wrapper, "sh", "sh", "-c", BUILDKIT_SCRIPT])
            .args(["build", "--opt", "build-arg:A=x y; $(false)"])
            .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()))
            .env("OUT", dir)
            .env_remove("SSL_CERT_DIR")
            .env("BUILDKITD_FLAGS", "--oci-worker-no-process-sandbox")
            .env("ARCHWAY_BUILDKIT_ROOT", BUILDKIT_ROOT)
            .env("ARCHWAY_REGISTRY", "127.0.0.1:5000")
            .env("ARCHWAY_INSECURE", insecure.to_string())
            .env("ARCHWAY_IMAGE", "127.0.0.1:5000/blog")
            .env("ARCHWAY_PLATFORM", "linux/arm64")
            .env("ARCHWAY_CONTEXT", "/workspace/context")
            .env("ARCHWAY_DOCKERFILE", "Dockerfile")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    #[test]
    fn buildkit_script_configures_the_registry_and_reports_the_digest() {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
            eprintln!("skipped: mount namespaces need root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("archway-buildkit-script-{}", std::process::id()));
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        let (ok, stderr) = run_script(&dir, false, true, None);
        assert!(ok, "{stderr}");
        assert_eq!(read("termination-log"), format!("sha256:{}", "ab".repeat(32)));
        let argv = read("argv");
        let argv: Vec<&str> = argv.lines().collect();
        assert!(argv.windows(2).any(|w| w == ["--opt", "build-arg:A=x y; $(false)"]), "{argv:?}");
        assert!(argv.windows(2).any(|w| w == ["--opt", "platform=linux/arm64"]), "{argv:?}");
        let output = "type=image,name=127.0.0.1:5000/blog,push-by-digest=true,push=true,oci-mediatypes=true";
        assert!(argv.windows(2).any(|w| w == ["--output", output]), "{argv:?}");
        let flags = read("flags");
        let expected = format!("--oci-worker-no-process-sandbox --root {BUILDKIT_ROOT} --config ");
        assert!(flags.starts_with(&expected), "{flags}");
        assert_eq!(read("buildkitd.toml"), "[registry.\"127.0.0.1:5000\"]\n  http = false\n");
        assert_eq!(read("cert-dir"), "/archway/ca:/etc/ssl/certs");

        let (ok, stderr) = run_script(&dir, true, false, None);
        assert!(ok, "{stderr}");
        assert_eq!(read("buildkitd.toml"), "[registry.\"127.0.0.1:5000\"]\n  http = true\n  insecure = true\n");
        assert_eq!(read("cert-dir"), "unset");

        // A cache on another registry is configured as the output's is.
        let (ok, stderr) = run_script(&dir, false, false, Some("cache.example.com:5000"));
        assert!(ok, "{stderr}");
        let expected =
            "[registry.\"127.0.0.1:5000\"]\n  http = false\n[registry.\"cache.example.com:5000\"]\n  http = false\n";
        assert_eq!(read("buildkitd.toml"), expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
