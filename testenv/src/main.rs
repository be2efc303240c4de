//! `archway-testenv up|down`: runs the local environment in the foreground until SIGTERM or SIGINT
//! (`make dev-up` starts it in the background and waits for `<dir>/ready`), or stops such a run.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use archway_testenv::cluster_setup;
use archway_testenv::env::{Env, EnvOptions};
use archway_testenv::process::is_running;
use clap::{Parser, Subcommand};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(about = "archway's local environment: control plane, registry, base image, fake nodes")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the environment and keep it up until SIGTERM or SIGINT.
    Up {
        #[arg(long, default_value = ".dev")]
        dir: PathBuf,
        /// Leave out the hostlet (no nodes, hence no operator).
        #[arg(long)]
        no_nodes: bool,
        /// Leave out the operator (deploy/dev is not applied).
        #[arg(long)]
        no_operator: bool,
        /// Install the operator from this kustomization instead of deploy/dev.
        #[arg(long, value_name = "DIR")]
        operator_kustomization: Option<PathBuf>,
        /// Register N more nodes (extra-1..extra-N; amd64, arm64 and arm/v7 in turn) that heartbeat
        /// like the others but are cordoned and run nothing: node churn for benchmarks.
        #[arg(long, value_name = "N", default_value_t = 0)]
        extra_nodes: usize,
        /// The program that stands for archway's image on the nodes (default: the `archway` beside
        /// this program, the debug build); `make bench-scale` passes the release build.
        #[arg(long, value_name = "FILE")]
        archway_bin: Option<PathBuf>,
    },
    /// Stop the environment that `up` runs in this dir.
    Down {
        #[arg(long, default_value = ".dev")]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Cmd::Up { dir, no_nodes, no_operator, operator_kustomization, extra_nodes, archway_bin } => {
            let opts = EnvOptions {
                nodes: !no_nodes,
                operator: !no_nodes && !no_operator,
                operator_kustomization,
                extra_nodes,
                archway_bin,
                ..EnvOptions::new(&dir)
            };
            up(dir, opts).await
        }
        Cmd::Down { dir } => down(&dir),
    }
}

/// Removes the marker files when `up` ends, however it ends.
struct Markers(Vec<PathBuf>);

impl Drop for Markers {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = fs::remove_file(file);
        }
    }
}

async fn up(dir: PathBuf, opts: EnvOptions) -> Result<()> {
    fs::create_dir_all(&dir)?;
    let pid_file = dir.join("testenv.pid");
    let ready = dir.join("ready");
    if let Some(pid) = running_pid(&pid_file) {
        bail!("an environment already runs in {} (pid {pid})", dir.display());
    }
    let _ = fs::remove_file(&ready);
    // Written first, so that `down` can also stop a start that is still under way.
    fs::write(&pid_file, std::process::id().to_string())?;
    let _markers = Markers(vec![pid_file, ready.clone()]);

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let started = Instant::now();
    // The operator is installed here rather than by Env::start: when it does not run (a flag the
    // binary does not know yet, a crash), the environment stays up for everything else, and says so.
    let install_operator = opts.operator;
    let kustomization = opts.operator_kustomization.clone().unwrap_or_else(cluster_setup::dev_kustomization);
    let start = async {
        let mut env = Env::start(EnvOptions { operator: false, ..opts }).await?;
        let mut operator = Ok(());
        if install_operator {
            match cluster_setup::install_operator(&env.client(), &env.control_plane, &env.registry, &kustomization)
                .await
            {
                Ok(pod) => env.operator_pod = pod.metadata.name,
                Err(e) => operator = Err(e),
            }
        }
        anyhow::Ok((env, operator))
    };
    // A signal during the start drops the half-built environment, which stops what it started.
    let (env, operator) = tokio::select! {
        env = start => env?,
        _ = term.recv() => return Ok(()),
        _ = int.recv() => return Ok(()),
    };
    if let Err(e) = &operator {
        tracing::error!("the operator does not run ({e:#}); the environment stays up without it");
    }
    print_summary(&env, started.elapsed(), operator.err());
    fs::write(&ready, "")?;

    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping the environment");
    let _ = fs::remove_file(&ready);
    env.shutdown().await;
    Ok(())
}

fn print_summary(env: &Env, took: Duration, operator_error: Option<anyhow::Error>) {
    println!("archway local environment up in {:.1}s", took.as_secs_f64());
    println!("  apiserver   {}", env.control_plane.server);
    println!("  kubeconfig  {}", env.kubeconfig().display());
    println!("  registry    {} (user {})", env.registry.host, env.registry.username);
    println!("  auth file   {}", env.registry.auth_file.display());
    println!("  cert dir    {}", env.registry.cert_dir.display());
    if let Some(image) = &env.base_image {
        println!("  base image  {image}");
    }
    if let Some(pod) = &env.operator_pod {
        println!("  operator    pod {pod} in {}", cluster_setup::OPERATOR_NAMESPACE);
    }
    if let Some(e) = operator_error {
        println!("  operator    NOT RUNNING: {e:#}");
    }
    println!("  logs        {}", env.dir.join("logs").display());
    println!("use it:       source {}", env.env_sh.display());
}

/// Sends SIGTERM to the `up` process of `dir` and waits until it has torn everything down.
fn down(dir: &Path) -> Result<()> {
    let pid_file = dir.join("testenv.pid");
    let Some(pid) = running_pid(&pid_file) else {
        let _ = fs::remove_file(&pid_file);
        println!("no environment runs in {}", dir.display());
        return Ok(());
    };
    kill(Pid::from_raw(pid), Signal::SIGTERM).with_context(|| format!("signalling pid {pid}"))?;
    // Teardown stops up to a handful of processes with 5 s of grace each.
    let deadline = Instant::now() + Duration::from_secs(60);
    while is_running(pid) {
        if Instant::now() > deadline {
            bail!("pid {pid} still runs 60 s after SIGTERM; see {}", dir.join("testenv.log").display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("environment in {} stopped", dir.display());
    Ok(())
}

/// The pid in `file`, if that process still runs.
fn running_pid(file: &Path) -> Option<i32> {
    let pid: i32 = fs::read_to_string(file).ok()?.trim().parse().ok()?;
    is_running(pid).then_some(pid)
}
