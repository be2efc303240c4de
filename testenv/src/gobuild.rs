//! Host programs built from Go modules by a `hack/` script (the control plane, BuildKit): the script
//! keeps them in a per-user cache keyed on their version, returns at once when that cache is warm,
//! and shows a cold build's progress on our stderr.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail, ensure};

/// The control plane's programs (a cold build takes 15-35 minutes on 2 cores).
pub const CONTROL_PLANE: Programs = Programs {
    script: "build-control-plane.sh",
    env_var: "ARCHWAY_K8S_BIN",
    binaries: &["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"],
};

/// BuildKit's programs, built by hack/build-buildkit.sh (Debian packages no BuildKit).
pub const BUILDKIT: Programs = Programs {
    script: "build-buildkit.sh",
    env_var: "ARCHWAY_BUILDKIT_BIN",
    binaries: &["buildkitd", "buildctl", "buildctl-daemonless.sh"],
};

/// The registry of distribution v3 (what `registry:3` runs), built by hack/build-registry.sh: the
/// environment's second registry, beside Debian's distribution 2.8.
pub const REGISTRY_V3: Programs =
    Programs { script: "build-registry.sh", env_var: "ARCHWAY_REGISTRY_V3_BIN", binaries: &["registry"] };

/// Helm and gitops-check (kstatus and Argo CD's Lua health checks on their real libraries), built by
/// hack/build-gitops-tools.sh: how GitOps tools read a MultiArchBuild.
pub const GITOPS_TOOLS: Programs =
    Programs { script: "build-gitops-tools.sh", env_var: "ARCHWAY_GITOPS_BIN", binaries: &["helm", "gitops-check"] };

/// Which script builds which programs, and the variable that names a directory holding them instead.
pub struct Programs {
    pub script: &'static str,
    pub env_var: &'static str,
    pub binaries: &'static [&'static str],
}

impl Programs {
    /// `$<env_var>`, or the directory the script prints last.
    pub async fn bin_dir(&self) -> Result<PathBuf> {
        let dir = match std::env::var_os(self.env_var) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack").join(self.script);
                let out = tokio::process::Command::new("bash")
                    .arg(&script)
                    .stderr(Stdio::inherit())
                    .output()
                    .await
                    .with_context(|| format!("running {}", script.display()))?;
                if !out.status.success() {
                    bail!("{} failed ({})", script.display(), out.status);
                }
                let stdout = String::from_utf8(out.stdout)?;
                PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
            }
        };
        for name in self.binaries {
            ensure!(
                dir.join(name).is_file(),
                "{} has no {name}: build it with hack/{} or point {} at a directory with {:?}",
                dir.display(),
                self.script,
                self.env_var,
                self.binaries
            );
        }
        Ok(dir)
    }
}
