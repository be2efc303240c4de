//! A pod's sandbox on the host and how one container runs in it: a private mount namespace whose
//! script bind-mounts the volumes at their mountPaths and the container's termination-log file at
//! `/dev/termination-log`, then execs the command. Output goes to a log file in the sandbox.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::image::resolve_in_root;
use super::status::{MESSAGE_LIMIT, log_tail, termination_message};

/// Where a container's termination message goes unless its `terminationMessagePath` says otherwise.
pub(crate) const TERMINATION_LOG: &str = "/dev/termination-log";

/// The sandbox of one pod: `<pods dir>/<ns>_<name>_<uid>/`.
#[derive(Clone, Debug)]
pub(crate) struct Sandbox {
    pub root: PathBuf,
}

impl Sandbox {
    pub fn for_pod(pods_dir: &Path, pod: &Pod) -> Sandbox {
        let m = &pod.metadata;
        let part = |s: &Option<String>| s.clone().unwrap_or_default();
        let dir = format!("{}_{}_{}", part(&m.namespace), part(&m.name), part(&m.uid));
        Sandbox { root: pods_dir.join(dir) }
    }

    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// A directory put first in the containers' PATH, holding the pod's tool under its image name,
    /// so that scripts inside the container find e.g. `archway`.
    pub fn bin_dir(&self) -> PathBuf {
        self.root.join("bin")
    }

    pub fn log_path(&self, container: &str) -> PathBuf {
        self.root.join("logs").join(format!("{container}.log"))
    }

    /// The `index`th of a container's private directories (see `ToolImage::private_dirs`).
    pub fn private_dir(&self, container: &str, index: usize) -> PathBuf {
        self.root.join("private").join(container).join(index.to_string())
    }

    pub fn termination_path(&self, container: &str) -> PathBuf {
        self.root.join("termination").join(container)
    }

    /// Where a container of a real image gets its root: the overlay's upper and work directories and
    /// the mount point of the merged tree.
    pub fn overlay_dirs(&self, container: &str) -> (PathBuf, PathBuf, PathBuf) {
        let dir = self.root.join("rootfs").join(container);
        (dir.join("upper"), dir.join("work"), dir.join("merged"))
    }

    pub fn create(&self) -> Result<()> {
        for dir in [self.volumes_dir(), self.bin_dir(), self.root.join("logs"), self.root.join("termination")] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }

    /// Links `name` in the bin dir to the host program (a PATH name is resolved first).
    pub fn link_tool(&self, name: &str, program: &Path) -> Result<()> {
        let target = if program.components().count() > 1 {
            program.to_path_buf()
        } else {
            match which(program) {
                Some(p) => p,
                None => return Ok(()),
            }
        };
        let link = self.bin_dir().join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(&target, &link).with_context(|| format!("linking {}", link.display()))?;
        }
        Ok(())
    }

    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.root)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.root.display(), error = %e, "removing sandbox failed");
        }
    }
}

fn which(program: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The mount target `/dev/termination-log` has to exist on the host; an empty regular file will do.
pub(crate) fn ensure_termination_log_target() -> Result<()> {
    if !Path::new(TERMINATION_LOG).exists() {
        std::fs::write(TERMINATION_LOG, b"").context("creating the /dev/termination-log mount target")?;
    }
    Ok(())
}

/// One bind mount of a container.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
    /// A file is mounted onto a file, which the script creates if missing; else onto a directory.
    pub is_file: bool,
}

/// The root a container of a real image runs in: an overlay whose lower layer is the unpacked image
/// (shared, never written) and whose upper layer is the container's own, fresh for each run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ImageRoot {
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

impl ImageRoot {
    /// Where a path of the container is on the host, once the overlay is mounted: symlinks of the
    /// image followed inside its root.
    pub fn host_path(&self, container_path: &str) -> PathBuf {
        let inside = resolve_in_root(&self.lower, container_path);
        self.merged.join(inside.strip_prefix(&self.lower).unwrap_or(Path::new("")))
    }
}

/// The shell script run in the private mount namespace before the command: the volume mounts,
/// parents before children, then the termination-log file at the container's
/// `terminationMessagePath`, the working directory, and `exec "$@"`.
pub(crate) fn mount_script(mounts: &[Mount], termination: &Mount, working_dir: Option<&str>) -> String {
    let mut script = String::from("set -e\n");
    script += &bind_lines(mounts, termination);
    match working_dir.filter(|d| !d.is_empty()) {
        Some(dir) => script += &format!("mkdir -p {0}\ncd {0}\n", quote(dir)),
        None => script += "cd /\n",
    }
    script += "exec \"$@\"\n";
    script
}

/// The script for a container of a real image: the overlay, /proc and /dev under its root, the mounts
/// (whose targets are already host paths under `root.merged`), then the command chrooted there as the
/// container's user, in `working_dir` (a path inside the container).
pub(crate) fn image_script(root: &ImageRoot, mounts: &[Mount], termination: &Mount, working_dir: &str) -> String {
    let [upper, work, merged] = [&root.upper, &root.work, &root.merged].map(|p| quote(&p.display().to_string()));
    let options = quote(&format!(
        "lowerdir={},upperdir={},workdir={}",
        root.lower.display(),
        root.upper.display(),
        root.work.display()
    ));
    let mut script = format!(
        "set -e\nrm -rf {upper} {work}\nmkdir -p {upper} {work} {merged}\n\
         mount -t overlay overlay -o {options} {merged}\n\
         mkdir -p {merged}/proc {merged}/dev\nmount -t proc proc {merged}/proc\nmount --rbind /dev {merged}/dev\n"
    );
    script += &bind_lines(mounts, termination);
    let wd = if working_dir.is_empty() { "/" } else { working_dir };
    script += &format!("mkdir -p {}\n", quote(&root.host_path(wd).display().to_string()));
    script += &format!(
        "exec unshare --root={merged} --wd={} --setgid={} --setuid={} -- \"$@\"\n",
        quote(wd),
        root.gid,
        root.uid
    );
    script
}

/// The bind mounts, parents before children, and the termination-log file last.
fn bind_lines(mounts: &[Mount], termination: &Mount) -> String {
    let mut ordered: Vec<&Mount> = mounts.iter().collect();
    ordered.sort_by_key(|m| m.target.split('/').filter(|s| !s.is_empty()).count());
    ordered.push(termination);
    let mut script = String::new();
    for m in ordered {
        let (source, target) = (quote(&m.source.display().to_string()), quote(&m.target));
        if m.is_file {
            script += &format!("mkdir -p \"$(dirname {target})\"\n[ -e {target} ] || : > {target}\n");
        } else {
            script += &format!("mkdir -p {target}\n");
        }
        script += &format!("mount --bind {source} {target}\n");
        if m.read_only {
            script += &format!("mount -o remount,bind,ro {target}\n");
        }
    }
    script
}

/// Single-quotes a word for sh.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What one container run needs.
#[derive(Clone, Debug)]
pub(crate) struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub script: String,
    pub log: PathBuf,
    pub termination_log: PathBuf,
    /// Its CPU priority (`nice`: 0 normal, 19 the lowest).
    pub nice: i32,
}

/// How a container ended: its exit code, its termination message, and the tail of its log.
#[derive(Debug)]
pub(crate) struct Exit {
    pub code: i32,
    pub message: String,
    pub log_tail: String,
}

/// Kills the whole process group of a container when dropped: commands like buildah start children,
/// and an aborted pod task must leave none behind.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // The group may be gone already; nothing to do then.
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }
}

/// Runs the container to its end. Cancel by dropping the future: the process group is killed.
pub(crate) async fn run(launch: Launch) -> Result<Exit> {
    // A fresh termination log per run, as a restarted container gets.
    std::fs::write(&launch.termination_log, b"")
        .with_context(|| format!("creating {}", launch.termination_log.display()))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .with_context(|| format!("opening {}", launch.log.display()))?;
    let mut cmd = tokio::process::Command::new("nice");
    cmd.args(["-n", &launch.nice.to_string(), "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(&launch.script)
        .arg("sh")
        .args(&launch.argv)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("starting nice unshare")?;
    let _guard = GroupGuard(child.id().map(|id| Pid::from_raw(id as i32)));
    let status = child.wait().await.context("waiting for the container")?;
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(9)
    });
    let message = std::fs::read(&launch.termination_log).unwrap_or_default();
    Ok(Exit { code, message: termination_message(&message), log_tail: log_tail(&read_tail(&launch.log)) })
}

fn read_tail(path: &Path) -> Vec<u8> {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MESSAGE_LIMIT as u64)))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(buf)
    };
    read().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_mounts_parents_first_and_quotes() {
        let mounts = vec![
            Mount {
                source: "/sb/volumes/cfg/config.json".into(),
                target: "/home/builder/.docker/config.json".into(),
                read_only: true,
                is_file: true,
            },
            Mount { source: "/sb/volumes/work".into(), target: "/workspace".into(), read_only: false, is_file: false },
            Mount {
                source: "/sb/volumes/it's".into(),
                target: "/workspace/sub dir".into(),
                read_only: false,
                is_file: false,
            },
        ];
        let termination = Mount {
            source: "/sb/termination/build".into(),
            target: TERMINATION_LOG.into(),
            read_only: false,
            is_file: true,
        };
        let script = mount_script(&mounts, &termination, Some("/workspace"));
        let expected = "set -e
mkdir -p '/workspace'
mount --bind '/sb/volumes/work' '/workspace'
mkdir -p '/workspace/sub dir'
mount --bind '/sb/volumes/it'\\''s' '/workspace/sub dir'
mkdir -p \"$(dirname '/home/builder/.docker/config.json')\"
[ -e '/home/builder/.docker/config.json' ] || : > '/home/builder/.docker/config.json'
mount --bind '/sb/volumes/cfg/config.json' '/home/builder/.docker/config.json'
mount -o remount,bind,ro '/home/builder/.docker/config.json'
mkdir -p \"$(dirname '/dev/termination-log')\"
[ -e '/dev/termination-log' ] || : > '/dev/termination-log'
mount --bind '/sb/termination/build' '/dev/termination-log'
mkdir -p '/workspace'
cd '/workspace'
exec \"$@\"
";
        assert_eq!(script, expected);
    }

    #[test]
    fn quoting_survives_sh() {
        let word = "a'b \"c\" $d";
        let out =
            std::process::Command::new("/bin/sh").args(["-c", &format!("printf %s {}", quote(word))]).output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), word);
    }

    /// A real run: a volume bound at its mountPath, the termination log, the exit code and the log,
    /// all inside a private mount namespace that leaves the host's `/dev/termination-log` alone.
    #[tokio::test]
    async fn runs_in_a_private_mount_namespace() {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
            eprintln!("skipped: mount namespaces need root");
            return;
        }
        ensure_termination_log_target().unwrap();
        let root = std::env::temp_dir().join(format!("hostlet-sandbox-{}", std::process::id()));
        let sandbox = Sandbox { root: root.join("sb") };
        sandbox.create().unwrap();
        let volume = sandbox.volumes_dir().join("secret");
        std::fs::create_dir_all(&volume).unwrap();
        std::fs::write(volume.join("key"), "s3cret").unwrap();
        let target = root.join("mnt/etc/x").display().to_string();
        let mounts = [Mount { source: volume, target: target.clone(), read_only: true, is_file: false }];
        let termination = Mount {
            source: sandbox.termination_path("c"),
            target: TERMINATION_LOG.into(),
            read_only: false,
            is_file: true,
        };
        let script =
            format!("cat {target}/key > /dev/termination-log; echo out; nice; pwd; touch {target}/no || exit 3");
        let launch = Launch {
            argv: vec!["sh".into(), "-c".into(), script],
            env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
            script: mount_script(&mounts, &termination, Some("/var")),
            log: sandbox.log_path("c"),
            termination_log: sandbox.termination_path("c"),
            nice: 19,
        };
        let exit = run(launch).await.unwrap();
        assert_eq!(exit.code, 3, "read-only mount refused the write; log: {}", exit.log_tail);
        assert_eq!(exit.message, "s3cret");
        assert!(exit.log_tail.starts_with("out\n19\n/var\n"), "{}", exit.log_tail);
        // The mounts stayed in the namespace: the host sees an empty mount point.
        assert!(!Path::new(&target).join("key").exists());
        assert_eq!(std::fs::read(TERMINATION_LOG).unwrap(), b"");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
