//! Child processes of the environment: each runs in its own process group with its output in
//! `<dir>/logs/<name>.log`, and is stopped (SIGTERM, then SIGKILL) when the environment is dropped.
//! Pids are recorded in `<dir>/pids`, so that a start in the same dir first kills what a crashed
//! previous run left behind (a test killed by a signal never runs its destructors).

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long a process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many log lines a readiness failure shows.
const LOG_TAIL_LINES: usize = 30;

/// The processes of one environment directory. Dropping it stops them, the last started first.
pub struct Processes {
    dir: PathBuf,
    children: Vec<Proc>,
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// Kept to start it again: its output still goes to the same log, after what it wrote.
    command: Command,
}

impl Processes {
    /// Takes over `dir`: kills the processes a previous run recorded there that still run.
    pub fn new(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir.join("logs")).with_context(|| format!("creating {}", dir.display()))?;
        kill_leftovers(dir)?;
        Ok(Self { dir: dir.to_path_buf(), children: Vec::new() })
    }

    /// Starts `cmd` as the process `name`, in a new process group, stdout and stderr to its log.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> Result<()> {
        let log = self.log_path(name);
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // NO_PROXY: every connection in the environment stays on loopback, whatever the caller's
        // proxy settings say.
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .process_group(0);
        let child = self.start(name, &mut cmd)?;
        self.children.push(Proc { name: name.to_string(), child, log, command: cmd });
        Ok(())
    }

    fn start(&self, name: &str, cmd: &mut Command) -> Result<Child> {
        let child = cmd.spawn().with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let mut pids = OpenOptions::new().create(true).append(true).open(self.dir.join("pids"))?;
        writeln!(pids, "{} {name}", child.id())?;
        tracing::debug!(name, pid = child.id(), "started");
        Ok(child)
    }

    /// Stops `name` as a drop would (SIGTERM, then SIGKILL), leaves it down for `down`, and starts it
    /// again with the same command: a restart, as of a crashed or upgraded server. The caller waits
    /// until it answers.
    pub async fn restart(&mut self, name: &str, down: Duration) -> Result<()> {
        stop(self.get_mut(name)?);
        tokio::time::sleep(down).await;
        let index = self.children.iter().position(|p| p.name == name).context("no such process")?;
        let mut command = std::mem::replace(&mut self.children[index].command, Command::new("true"));
        let started = self.start(name, &mut command);
        let proc = &mut self.children[index];
        proc.command = command;
        proc.child = started?;
        Ok(())
    }

    /// Polls `probe` until it succeeds. Fails early when the process exits, and after `timeout`;
    /// both errors carry the probe's last error and the tail of the process's log.
    pub async fn wait_ready<F, Fut>(&mut self, name: &str, probe: F, timeout: Duration) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let start = Instant::now();
        loop {
            // A probe may hang on a process that accepts connections but never answers.
            let err = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(())) => {
                    tracing::info!(name, elapsed = ?start.elapsed(), "ready");
                    return Ok(());
                }
                Ok(Err(e)) => e,
                Err(_) => anyhow::anyhow!("no answer within {PROBE_TIMEOUT:?}"),
            };
            let proc = self.get_mut(name)?;
            let problem = if let Some(status) = proc.child.try_wait()? {
                format!("{name} exited ({status}) before it was ready")
            } else if start.elapsed() > timeout {
                format!("{name} was not ready after {timeout:?}")
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            bail!(
                "{problem}; last probe error: {err:#}\n--- last lines of {} ---\n{}",
                proc.log.display(),
                log_tail(&proc.log)
            );
        }
    }

    /// Sends `signal` to the process group of `name`: SIGSTOP and SIGCONT make a fault test's outage.
    pub fn signal(&mut self, name: &str, signal: Signal) -> Result<()> {
        let pid = i32::try_from(self.get_mut(name)?.child.id())?;
        killpg(Pid::from_raw(pid), signal).with_context(|| format!("sending {signal} to {name}"))
    }

    /// The pids of the running processes (tests check that they are gone after a drop).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|p| p.child.id()).collect()
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    fn get_mut(&mut self, name: &str) -> Result<&mut Proc> {
        match self.children.iter_mut().find(|p| p.name == name) {
            Some(p) => Ok(p),
            None => bail!("no process named {name}"),
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        while let Some(mut p) = self.children.pop() {
            stop(&mut p);
        }
        let _ = fs::remove_file(self.dir.join("pids"));
    }
}

/// SIGTERM to the group, up to STOP_GRACE for the leader to exit, then SIGKILL to whatever of the
/// group is left (children a process started and did not reap).
fn stop(p: &mut Proc) {
    let pgid = Pid::from_raw(p.child.id() as i32);
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if !matches!(p.child.try_wait(), Ok(None)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = p.child.wait();
    tracing::debug!(name = p.name, "stopped");
}

/// Kills the process groups listed in `<dir>/pids` whose leader still runs with a command line that
/// names `dir` (every process we start gets its config or data below `dir`), so that a reused pid
/// belonging to someone else is left alone.
fn kill_leftovers(dir: &Path) -> Result<()> {
    let file = dir.join("pids");
    let Ok(list) = fs::read_to_string(&file) else {
        return Ok(());
    };
    let dir = fs::canonicalize(dir)?;
    let needle = dir.to_string_lossy().into_owned();
    for line in list.lines() {
        let Some(pid) = line.split_whitespace().next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            tracing::warn!(pid, line, "killing a leftover of a previous run");
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            wait_gone(pid);
        }
    }
    fs::remove_file(&file)?;
    Ok(())
}

/// Waits (briefly) until `pid` no longer runs, so its ports are free again.
fn wait_gone(pid: i32) {
    let deadline = Instant::now() + STOP_GRACE;
    while is_running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` exists and is not a zombie (an exited process its parent has not reaped yet: PID 1
/// of a container may take its time).
pub fn is_running(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain anything.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// Runs a tool to completion and returns its stdout; the error names the command and shows its stderr.
pub async fn run(cmd: &mut tokio::process::Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().await.with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A free TCP port on 127.0.0.1: bind port 0 and read what the kernel chose. The port is released
/// before the process binds it: a small race, accepted for a test environment.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("archway-process-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// Whether a live (non-zombie) process of process group `pgid` exists.
    fn group_runs(pgid: i32) -> bool {
        fs::read_dir("/proc").unwrap().flatten().any(|entry| {
            let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let fields: Vec<&str> =
                stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
            fields.len() > 2 && fields[2] == pgid.to_string() && !matches!(fields[0], "Z" | "X")
        })
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[tokio::test]
    async fn drop_stops_the_whole_group() {
        let dir = test_dir("drop");
        let mut procs = Processes::new(&dir).unwrap();
        // A child that ignores SIGTERM, with a grandchild: both must be gone after the drop.
        procs.spawn("stubborn", sh("trap '' TERM; sleep 100 & wait")).unwrap();
        let leader = procs.pids()[0] as i32;
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(procs);
        assert!(!is_running(leader));
        // SIGKILL takes effect asynchronously for the grandchild, which init then reaps.
        let deadline = Instant::now() + Duration::from_secs(2);
        while group_runs(leader) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!group_runs(leader), "the group survived");
        assert!(!dir.join("pids").exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn early_exit_reports_the_log_tail() {
        let dir = test_dir("exit");
        let mut procs = Processes::new(&dir).unwrap();
        procs.spawn("failing", sh("echo bad flag --foo; exit 3")).unwrap();
        let probe = || async { anyhow::bail!("connection refused") };
        let err = procs.wait_ready("failing", probe, Duration::from_secs(10)).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("failing exited"), "{msg}");
        assert!(msg.contains("connection refused") && msg.contains("bad flag --foo"), "{msg}");
        drop(procs);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn leftovers_of_a_crashed_run_are_killed() {
        let dir = test_dir("leftover");
        fs::create_dir_all(&dir).unwrap();
        let marker = fs::canonicalize(&dir).unwrap().join("marker");
        // A process whose command line names the dir, as ours do, recorded as a crashed run would.
        let mut child = sh(&format!("sleep 100; echo {}", marker.display())).process_group(0).spawn().unwrap();
        // spawn returns during the child's exec, before the kernel shows its new command line.
        let cmdline = format!("/proc/{}/cmdline", child.id());
        while !String::from_utf8_lossy(&fs::read(&cmdline).unwrap()).contains("marker") {
            std::thread::sleep(Duration::from_millis(5));
        }
        fs::write(dir.join("pids"), format!("{} sleeper\n", child.id())).unwrap();
        let _procs = Processes::new(&dir).unwrap();
        assert!(child.try_wait().unwrap().is_some(), "leftover still runs");
        fs::remove_dir_all(dir).unwrap();
    }
}
