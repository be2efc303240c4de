//! The whole local environment in one value: start it with [`Env::start`], drop it (or
//! [`Env::shutdown`]) to tear everything down, last started first; [`Env::remove`] also deletes its
//! directory.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kube::Client;

use crate::controlplane::{self, ControlPlane};
use crate::hostlet::{self, Hostlet, HostletConfig, RegistryAccess};
use crate::process::Processes;
use crate::registry::{self, Registry};
use crate::{baseimage, binfmt, certs, cluster_setup, gobuild, toolimages};

/// Host programs the environment and its pods run; hack/install-deps.sh installs them.
const TOOLS: &[&str] = &[
    "buildah",
    "skopeo",
    "docker-registry",
    "htpasswd",
    "update-binfmts",
    "qemu-aarch64-static",
    "qemu-arm-static",
    "dpkg-deb",
    "apt-get",
    "git",
    "runc",
];

#[derive(Clone, Debug)]
pub struct EnvOptions {
    /// Holds everything of this environment: logs, pki, etcd data, registry storage, kubeconfig.
    pub dir: PathBuf,
    /// Start the hostlet with its default nodes (x86, Jetson-like arm64, Pi-like arm/v7, qemu).
    pub nodes: bool,
    /// Make sure the registry holds the multi-arch busybox base image.
    pub base_image: bool,
    /// archway's binary, which the hostlet runs for archway's own image; default: `archway` beside
    /// the running executable (cargo puts test binaries one level deeper, in `deps/`).
    pub archway_bin: Option<PathBuf>,
    /// Install the operator (needs `nodes`): the registry's Secret in `default` and `archway-system`
    /// and its CA ConfigMap in `archway-system`, then `kubectl apply -k` of
    /// [`EnvOptions::operator_kustomization`], and wait until the archway pod runs. See [`cluster_setup`].
    pub operator: bool,
    /// The kustomization the operator is installed from; default: deploy/dev of this repository.
    pub operator_kustomization: Option<PathBuf>,
    /// This many more nodes (`extra-1`..), registered and kept alive by the hostlet but cordoned and
    /// running nothing (see [`HostletConfig::extra_nodes`]): node churn for `make bench-scale`.
    pub extra_nodes: usize,
}

impl EnvOptions {
    /// Everything on: nodes and base image.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            nodes: true,
            base_image: true,
            archway_bin: None,
            operator: false,
            operator_kustomization: None,
            extra_nodes: 0,
        }
    }
}

/// A running environment. Fields drop in declaration order: the hostlet (and its pods) before the
/// processes, which stop in reverse start order.
pub struct Env {
    hostlet: Option<Hostlet>,
    processes: Processes,
    client: Client,
    /// Absolute path of the environment's directory.
    pub dir: PathBuf,
    pub control_plane: ControlPlane,
    pub registry: Registry,
    /// `HOST/library/busybox:usrmerge` when [`EnvOptions::base_image`] was set.
    pub base_image: Option<String>,
    /// `<dir>/env.sh`, to `source` in a shell.
    pub env_sh: PathBuf,
    /// The operator's running pod (in `archway-system`) when [`EnvOptions::operator`] was set.
    pub operator_pod: Option<String>,
}

impl Env {
    pub async fn start(opts: EnvOptions) -> Result<Env> {
        archway::install_crypto_provider();
        fs::create_dir_all(&opts.dir).with_context(|| format!("creating {}", opts.dir.display()))?;
        // Absolute paths in every command line: leftovers of a crashed run are recognised by them.
        let dir = fs::canonicalize(&opts.dir)?;
        let mut processes = Processes::new(&dir)?;
        check_tools()?;
        binfmt::ensure().await?;
        let pki = certs::generate(&dir)?;
        let (control_plane, client) = controlplane::start(&mut processes, &dir, &pki).await?;
        let registry = registry::start(&mut processes, &dir, &pki).await?;
        toolimages::ensure(&registry).await.context("pushing the tool image stand-ins")?;
        let base_image = match opts.base_image {
            true => Some(baseimage::ensure(&dir, &registry).await?),
            false => None,
        };
        let hostlet = match opts.nodes {
            true => Some(start_hostlet(&opts, &dir, &client, &control_plane, &registry).await?),
            false => None,
        };
        let env_sh = dir.join("env.sh");
        write_env_sh(&env_sh, &control_plane, &registry)?;
        let mut env =
            Env { hostlet, processes, client, dir, control_plane, registry, base_image, env_sh, operator_pod: None };
        if opts.operator {
            if env.hostlet.is_none() {
                bail!("the operator needs nodes to run on: EnvOptions::operator needs EnvOptions::nodes");
            }
            let kustomization = opts.operator_kustomization.clone().unwrap_or_else(cluster_setup::dev_kustomization);
            let pod =
                cluster_setup::install_operator(&env.client, &env.control_plane, &env.registry, &kustomization).await?;
            env.operator_pod = pod.metadata.name;
        }
        Ok(env)
    }

    /// An admin client (group system:masters).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.control_plane.kubeconfig
    }

    /// The pids of the environment's processes (tests check they are gone after a drop).
    pub fn pids(&self) -> Vec<u32> {
        self.processes.pids()
    }

    /// Freezes the environment's process `name` (`registry`, `kube-apiserver`, ...) with SIGSTOP: it
    /// keeps its sockets, and answers nothing until [`Env::resume`]. An outage as clients see a hung
    /// server or a network partition.
    pub fn pause(&mut self, name: &str) -> Result<()> {
        self.processes.signal(name, nix::sys::signal::Signal::SIGSTOP)
    }

    pub fn resume(&mut self, name: &str) -> Result<()> {
        self.processes.signal(name, nix::sys::signal::Signal::SIGCONT)
    }

    /// Stops the process `name` (`kube-apiserver`, `registry`, ...), leaves it down for `down`, and
    /// starts it again as it was; the caller waits until it answers.
    pub async fn restart(&mut self, name: &str, down: std::time::Duration) -> Result<()> {
        self.processes.restart(name, down).await
    }

    /// Like a drop, but waits for the hostlet's pods to be gone before the control plane stops.
    pub async fn shutdown(mut self) {
        if let Some(hostlet) = self.hostlet.take() {
            hostlet.shutdown().await;
        }
    }

    /// Shuts down, then deletes the environment's directory: the end of a test that passed (a
    /// failed one never gets here and keeps its logs). Each directory holds etcd's data, the
    /// registry's blobs and the pods' unpacked images, and CI's disk is shared.
    pub async fn remove(self) {
        let dir = self.dir.clone();
        self.shutdown().await;
        if let Err(e) = fs::remove_dir_all(&dir) {
            eprintln!("warning: could not remove {}: {e}", dir.display());
        }
    }
}

async fn start_hostlet(
    opts: &EnvOptions,
    dir: &Path,
    client: &Client,
    cp: &ControlPlane,
    registry: &Registry,
) -> Result<Hostlet> {
    let access = RegistryAccess {
        host: registry.host.clone(),
        username: registry.username.clone(),
        password: registry.password.clone(),
        ca_pem: registry.ca_pem.clone().into_bytes(),
    };
    let archway_bin = match &opts.archway_bin {
        Some(bin) => bin.clone(),
        None => default_archway_bin()?,
    };
    let buildkit_bin = gobuild::BUILDKIT.bin_dir().await?;
    let api_server = ("127.0.0.1".to_string(), cp.apiserver_port);
    let mut config = HostletConfig::new(dir.join("hostlet"), access, api_server, archway_bin, &buildkit_bin);
    config.extra_nodes = HostletConfig::extra_nodes(opts.extra_nodes);
    hostlet::start(client.clone(), config).await.context("starting the hostlet")
}

fn default_archway_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("executable without a directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    Ok(dir.join("archway"))
}

fn check_tools() -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> =
        TOOLS.iter().copied().filter(|tool| !std::env::split_paths(&path).any(|d| d.join(tool).is_file())).collect();
    if !missing.is_empty() {
        bail!("missing host programs {missing:?}: run hack/install-deps.sh (as root)");
    }
    Ok(())
}

/// A file to `source`: kubectl and skopeo in a shell then talk to this environment.
fn write_env_sh(path: &Path, cp: &ControlPlane, registry: &Registry) -> Result<()> {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let text = format!(
        "export KUBECONFIG={}\n\
         export ARCHWAY_REGISTRY={}\n\
         export REGISTRY_AUTH_FILE={}\n\
         export ARCHWAY_REGISTRY_CERT_DIR={}\n\
         export PATH={}:\"$PATH\"\n",
        quote(&cp.kubeconfig),
        registry.host,
        quote(&registry.auth_file),
        quote(&registry.cert_dir),
        quote(&cp.bin_dir),
    );
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
