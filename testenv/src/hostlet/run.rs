//! One pod's life on a node: sandbox and volumes, image "pulls" for workloads (retried while they
//! fail), init containers in order, then the main containers together, each state change reported;
//! deletion and `activeDeadlineSeconds` cut it short.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::{Container, ContainerStateTerminated, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::Ctx;
use super::config::{NodeSpec, ToolImage};
use super::env::{DEFAULT_PATH, Env, add_container_env, argv, base_env, tool_argv, tool_env};
use super::image::{self, Unpacked};
use super::pods::{PodError, pod_name};
use super::pull::Pulled;
use super::sandbox::{self, ImageRoot, Launch, Mount, Sandbox, TERMINATION_LOG};
use super::status::{Container as Status, Phase, PodView, State, Terminated, now};
use super::volumes;
use crate::toolimages;

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Shorter than the kubelet's five minutes: tests wait for images that a build is about to push.
const MAX_PULL_BACKOFF: Duration = Duration::from_secs(8);

/// How a pod's run ended, before its final status is written.
enum Outcome {
    /// Every container ran to its end (or an init container failed).
    Done,
    /// It could not run: the reason and message go on the pod.
    Failed(PodError),
    /// Its deletion began.
    Stopped,
    DeadlineExceeded,
}

/// What a running container tells the pod.
enum Event {
    Started(usize),
    Exited { index: usize, terminated: Terminated, restarting: bool },
}

/// Whether an earlier hostlet started any of the pod's containers.
pub(crate) fn was_started(pod: &Pod) -> bool {
    let Some(status) = &pod.status else { return false };
    let statuses = status.container_statuses.iter().chain(&status.init_container_statuses);
    statuses.flatten().filter_map(|c| c.state.as_ref()).any(|s| s.running.is_some() || s.terminated.is_some())
}

/// Whether none of the pod's containers is a tool: such a pod is run again after a hostlet restart, as
/// a kubelet restarts the containers of its pods, while a tool (a build) must not repeat its work.
pub(crate) fn is_workload_only(ctx: &Ctx, pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return true };
    let all = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    all.into_iter().all(|c| ctx.config.tool_for(c.image.as_deref().unwrap_or_default()).is_none())
}

/// Fails a pod whose processes died with an earlier hostlet.
pub(crate) async fn fail_orphan(ctx: Arc<Ctx>, pod: Pod) {
    let finished = Time(now());
    let mut status = pod.status.clone().unwrap_or_default();
    let statuses = status.container_statuses.iter_mut().chain(status.init_container_statuses.iter_mut());
    for c in statuses.flatten() {
        if let Some(state) = c.state.as_mut().filter(|s| s.terminated.is_none()) {
            let started = state.running.take().and_then(|r| r.started_at);
            state.waiting = None;
            state.terminated = Some(ContainerStateTerminated {
                exit_code: 137,
                reason: Some("ContainerStatusUnknown".into()),
                message: Some("the hostlet restarted while the container ran".into()),
                started_at: started,
                finished_at: Some(finished.clone()),
                ..Default::default()
            });
            c.ready = false;
            c.started = Some(false);
        }
    }
    status.phase = Some("Failed".into());
    status.reason = Some("HostletRestarted".into());
    status.message = Some("the hostlet restarted while this pod ran; its processes are gone".into());
    patch_status(&ctx, &pod, json!({ "status": status })).await;
}

/// Runs the pod to its end and reports every step. Dropping the future kills its processes.
pub(crate) async fn run_pod(ctx: Arc<Ctx>, pod: Pod, ip: Ipv4Addr, sandbox: Sandbox, mut stop: watch::Receiver<bool>) {
    let spec = pod.spec.clone().unwrap_or_default();
    let inits = spec.init_containers.clone().unwrap_or_default();
    let first_wait = if inits.is_empty() { "ContainerCreating" } else { "PodInitializing" };
    let waiting =
        |c: &Container, reason: &str| Status::waiting(&c.name, c.image.as_deref().unwrap_or_default(), reason);
    let view = PodView::new(
        ip,
        inits.iter().map(|c| waiting(c, "PodInitializing")).collect(),
        spec.containers.iter().map(|c| waiting(c, first_wait)).collect(),
        now(),
    );
    let mut run = PodRun { ctx, pod, view, sandbox, volumes: HashMap::new(), images: HashMap::new() };
    run.report().await;
    let deadline = async {
        match spec.active_deadline_seconds {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs.max(0) as u64)).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        outcome = run.drive() => outcome,
        _ = stop.wait_for(|stop| *stop) => Outcome::Stopped,
        () = deadline => Outcome::DeadlineExceeded,
    };
    run.conclude(outcome);
    run.report().await;
    tracing::info!(pod = pod_name(&run.pod), phase = ?run.view.phase, "pod done");
}

struct PodRun {
    ctx: Arc<Ctx>,
    pod: Pod,
    view: PodView,
    sandbox: Sandbox,
    volumes: HashMap<String, PathBuf>,
    /// The unpacked image of each container that is no tool, by container name.
    images: HashMap<String, Unpacked>,
}

impl PodRun {
    fn spec(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.clone().unwrap_or_default()
    }

    /// The CPU priority of its containers: a Job's pods (the builds) the lowest. On a cluster, builds
    /// run on nodes of their own; here they share this machine's cores with the control plane and
    /// the operator, which they must not starve (a benchmark of the operator would measure this
    /// machine's load, not the operator).
    fn nice(&self) -> i32 {
        let batch = self.pod.metadata.owner_references.iter().flatten().any(|o| o.kind == "Job");
        if batch { 19 } else { 0 }
    }

    fn tool(&self, c: &Container) -> Option<ToolImage> {
        self.ctx.config.tool_for(c.image.as_deref().unwrap_or_default()).cloned()
    }

    async fn drive(&mut self) -> Outcome {
        if let Err(e) = self.prepare().await {
            return Outcome::Failed(e);
        }
        let spec = self.spec();
        for (index, c) in spec.init_containers.iter().flatten().enumerate() {
            let launch = match self.launch(c).await {
                Ok(launch) => launch,
                Err(e) => return self.container_failed(true, index, e),
            };
            let started = now();
            self.view.init[index].state = State::Running { started };
            self.report().await;
            let terminated = run_once(launch, c, started).await;
            let failed = terminated.exit_code != 0;
            self.view.init[index].state = State::Terminated(terminated);
            if failed {
                return Outcome::Done;
            }
        }

        let mut launches = Vec::new();
        for (index, c) in spec.containers.iter().enumerate() {
            match self.launch(c).await {
                Ok(launch) => launches.push(launch),
                Err(e) => return self.container_failed(false, index, e),
            }
        }
        let always = spec.restart_policy.as_deref().unwrap_or("Always") == "Always";
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut running: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
        for (index, launch) in launches.into_iter().enumerate() {
            let c = spec.containers[index].clone();
            running.push(Box::pin(container_loop(index, launch, c, always, tx.clone())));
        }
        loop {
            if self.view.main.iter().all(|c| c.terminated().is_some()) {
                return Outcome::Done;
            }
            tokio::select! {
                Some(event) = rx.recv() => self.on_event(event).await,
                Some(()) = running.next(), if !running.is_empty() => {}
            }
        }
    }

    /// Sandbox, tool links, volumes and workload image resolution: what has to work before any
    /// container starts.
    async fn prepare(&mut self) -> Result<(), PodError> {
        let setup = |e: anyhow::Error| PodError::new("SandboxSetupError", format!("{e:#}"));
        self.sandbox.create().map_err(setup)?;
        let spec = self.spec();
        let all: Vec<Container> = spec.init_containers.iter().flatten().chain(&spec.containers).cloned().collect();
        for tool in all.iter().filter_map(|c| self.tool(c)) {
            self.sandbox.link_tool(&tool.name, &tool.program).map_err(setup)?;
            for (name, program) in &tool.companions {
                self.sandbox.link_tool(name, program).map_err(setup)?;
            }
        }
        let ip = self.view.pod_ip.to_string();
        self.volumes = volumes::prepare(&self.ctx.client, &self.pod, &self.sandbox.volumes_dir(), &ip).await?;

        let node_name = spec.node_name.clone().unwrap_or_default();
        let Some(node) = self.ctx.node(&node_name).cloned() else {
            return Err(PodError::new("NodeUnknown", format!("node {node_name} is not a hostlet node")));
        };
        let inits = spec.init_containers.iter().flatten().map(|c| (true, c));
        let targets: Vec<(bool, usize, &Container)> = inits
            .enumerate()
            .map(|(i, (init, c))| (init, i, c))
            .chain(spec.containers.iter().enumerate().map(|(i, c)| (false, i, c)))
            .collect();
        for (init, index, c) in targets {
            let image = c.image.as_deref().unwrap_or_default();
            let tool = self.ctx.config.tool_for(image).cloned();
            let image_id = match tool {
                Some(tool) if tool.mirrored => {
                    let mirror = toolimages::mirrored(&self.ctx.config.registry.host, image)
                        .map_err(|e| PodError::new("InvalidImageName", format!("{e:#}")))?;
                    self.pull_until_resolved(init, index, &mirror.whole(), &node, false).await?.0.image_id
                }
                Some(tool) => format!("hostlet-tool://{}", tool.program.display()),
                None => {
                    let (pulled, unpacked) = self.pull_until_resolved(init, index, image, &node, true).await?;
                    tracing::debug!(image, node = node.name, platform = %pulled.platform, "pulled");
                    if let Some(unpacked) = unpacked {
                        self.images.insert(c.name.clone(), unpacked);
                    }
                    pulled.image_id
                }
            };
            let slot = if init { &mut self.view.init[index] } else { &mut self.view.main[index] };
            slot.image_id = image_id;
        }
        Ok(())
    }

    /// Like the kubelet: a pull that fails leaves the pod Pending with `ErrImagePull`, then
    /// `ImagePullBackOff` between attempts, until the image appears or the pod goes away. A name that
    /// cannot be parsed fails the pod at once. With `unpack`, the image is unpacked too (a tool image
    /// runs a host program instead).
    async fn pull_until_resolved(
        &mut self,
        init: bool,
        index: usize,
        image: &str,
        node: &NodeSpec,
        unpack: bool,
    ) -> Result<(Pulled, Option<Unpacked>), PodError> {
        let mut backoff = Duration::from_millis(500);
        loop {
            let pulled = async {
                let pulled = self.ctx.puller.pull(image, &node.name, &node.platform).await?;
                let unpacked = match unpack {
                    true => Some(self.ctx.images.unpack(&self.ctx.puller, &pulled.image_id).await?),
                    false => None,
                };
                Ok::<_, PodError>((pulled, unpacked))
            };
            let e = match pulled.await {
                Ok(pulled) => return Ok(pulled),
                Err(e) if e.reason == "InvalidImageName" => return Err(e),
                Err(e) => e,
            };
            tracing::info!(pod = pod_name(&self.pod), image, reason = e.reason, "pull failed, retrying");
            for reason in ["ErrImagePull", "ImagePullBackOff"] {
                let slot = if init { &mut self.view.init[index] } else { &mut self.view.main[index] };
                slot.state = State::Waiting { reason: reason.into(), message: Some(e.message.clone()) };
                self.report().await;
                tokio::time::sleep(backoff / 2).await;
            }
            backoff = (backoff * 2).min(MAX_PULL_BACKOFF);
        }
    }

    /// Marks a container that could not be set up and fails the pod with its reason.
    fn container_failed(&mut self, init: bool, index: usize, e: PodError) -> Outcome {
        let slot = if init { &mut self.view.init[index] } else { &mut self.view.main[index] };
        slot.state = State::Waiting { reason: e.reason.clone(), message: Some(e.message.clone()) };
        Outcome::Failed(e)
    }

    /// The command, environment and mount script of a container: a tool's, or a real image's.
    async fn launch(&self, c: &Container) -> Result<Launch, PodError> {
        match (self.tool(c), self.images.get(&c.name)) {
            (Some(tool), _) => self.launch_tool(c, &tool).await,
            (None, Some(image)) => self.launch_image(c, image).await,
            (None, None) => Err(PodError::new("ErrImageNeverPulled", format!("container {} has no image", c.name))),
        }
    }

    async fn launch_tool(&self, c: &Container, tool: &ToolImage) -> Result<Launch, PodError> {
        let ip = self.view.pod_ip.to_string();
        let mut env = tool_env(&self.pod, &self.ctx.config.api_server, &self.sandbox.bin_dir(), tool);
        add_container_env(&self.ctx.client, &self.pod, c, &ip, &mut env).await?;
        for (key, value) in &tool.root_env {
            env.set(key, value.clone());
        }
        let argv = tool_argv(c, tool, &env);
        if argv.is_empty() {
            return Err(PodError::config(format!("container {} has no command", c.name)));
        }
        let mut mounts = self.volume_mounts(c, &env, |target| target.to_string())?;
        for (index, target) in tool.private_dirs.iter().enumerate() {
            let source = self.sandbox.private_dir(&c.name, index);
            std::fs::create_dir_all(&source)
                .map_err(|e| PodError::new("SandboxSetupError", format!("creating {}: {e}", source.display())))?;
            mounts.push(Mount { source, target: target.clone(), read_only: false, is_file: false });
        }
        let termination = self.termination_mount(c, |target| target.to_string());
        Ok(Launch {
            argv,
            env: env.vars().to_vec(),
            script: sandbox::mount_script(&mounts, &termination, c.working_dir.as_deref()),
            log: self.sandbox.log_path(&c.name),
            termination_log: self.sandbox.termination_path(&c.name),
            nice: self.nice(),
        })
    }

    /// A container of a real image: its ENV, ENTRYPOINT/CMD, WORKDIR and USER under the container's
    /// own settings, run chrooted on an overlay of the unpacked image.
    async fn launch_image(&self, c: &Container, image: &Unpacked) -> Result<Launch, PodError> {
        let ip = self.view.pod_ip.to_string();
        let config = &image.config;
        let image_env: Vec<(String, String)> = config
            .env
            .iter()
            .flatten()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let mut env = base_env(&self.pod, &self.ctx.config.api_server, DEFAULT_PATH.into(), &image_env);
        add_container_env(&self.ctx.client, &self.pod, c, &ip, &mut env).await?;
        let empty = Vec::new();
        let argv = argv(c, config.entrypoint.as_ref().unwrap_or(&empty), config.cmd.as_ref().unwrap_or(&empty), &env);
        if argv.is_empty() {
            return Err(PodError::new("CreateContainerError", format!("container {} has no command", c.name)));
        }
        let (uid, gid) = self.user(c, image)?;
        let (upper, work, merged) = self.sandbox.overlay_dirs(&c.name);
        let root = ImageRoot { lower: image.rootfs.clone(), upper, work, merged, uid, gid };
        let mounts = self.volume_mounts(c, &env, |target| root.host_path(target).display().to_string())?;
        let termination = self.termination_mount(c, |target| root.host_path(target).display().to_string());
        let working_dir = c.working_dir.clone().filter(|d| !d.is_empty()).or_else(|| config.working_dir.clone());
        Ok(Launch {
            argv,
            env: env.vars().to_vec(),
            script: sandbox::image_script(&root, &mounts, &termination, working_dir.as_deref().unwrap_or("/")),
            log: self.sandbox.log_path(&c.name),
            termination_log: self.sandbox.termination_path(&c.name),
            nice: self.nice(),
        })
    }

    /// The uid and gid of a container of a real image, refused as the kubelet does when
    /// `runAsNonRoot` meets a root user.
    fn user(&self, c: &Container, image: &Unpacked) -> Result<(u32, u32), PodError> {
        let pod = self.spec().security_context.unwrap_or_default();
        let own = c.security_context.clone().unwrap_or_default();
        let (uid, gid) = image::user_of(
            &image.rootfs,
            image.config.user.as_deref(),
            own.run_as_user.or(pod.run_as_user),
            own.run_as_group.or(pod.run_as_group),
        )
        .map_err(|e| PodError::new("CreateContainerConfigError", format!("container {}: {e}", c.name)))?;
        if uid == 0 && own.run_as_non_root.or(pod.run_as_non_root).unwrap_or(false) {
            return Err(PodError::new(
                "CreateContainerConfigError",
                format!(
                    "container has runAsNonRoot and image will run as root (pod: {:?}, container: {})",
                    pod_name(&self.pod),
                    c.name
                ),
            ));
        }
        Ok((uid, gid))
    }

    /// The container's volume mounts, each target placed by `place` (a container path to a host path).
    fn volume_mounts(&self, c: &Container, env: &Env, place: impl Fn(&str) -> String) -> Result<Vec<Mount>, PodError> {
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let base =
                self.volumes.get(&m.name).ok_or_else(|| PodError::config(format!("no volume named {:?}", m.name)))?;
            let sub = match (&m.sub_path, &m.sub_path_expr) {
                (Some(s), _) if !s.is_empty() => s.clone(),
                (_, Some(expr)) => env.expand(expr),
                _ => String::new(),
            };
            mounts.push(mount(base, &sub, &place(&m.mount_path), m.read_only.unwrap_or(false))?);
        }
        Ok(mounts)
    }

    fn termination_mount(&self, c: &Container, place: impl Fn(&str) -> String) -> Mount {
        let target = c.termination_message_path.clone().unwrap_or_else(|| TERMINATION_LOG.into());
        Mount {
            source: self.sandbox.termination_path(&c.name),
            target: place(&target),
            read_only: false,
            is_file: true,
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Started(index) => {
                self.view.main[index].state = State::Running { started: now() };
                // As a kubelet: Running once a container runs, not when it is being started.
                self.view.phase = Phase::Running;
            }
            Event::Exited { index, terminated, restarting } => {
                let c = &mut self.view.main[index];
                tracing::info!(
                    pod = pod_name(&self.pod),
                    container = c.name,
                    exit_code = terminated.exit_code,
                    "container exited"
                );
                if restarting {
                    c.last_state = Some(State::Terminated(terminated));
                    c.restarts += 1;
                    c.state = State::Waiting { reason: "CrashLoopBackOff".into(), message: None };
                } else {
                    c.state = State::Terminated(terminated);
                }
            }
        }
        self.view.refresh_conditions(now());
        self.report().await;
    }

    /// Writes the outcome into the view: the phase and, for a cut-short pod, terminated containers.
    fn conclude(&mut self, outcome: Outcome) {
        let finished = now();
        match outcome {
            Outcome::Done => {}
            Outcome::Failed(e) => {
                tracing::warn!(pod = pod_name(&self.pod), error = %e, "pod failed");
                self.view.reason = Some(e.reason);
                self.view.message = Some(e.message);
            }
            Outcome::Stopped => self.kill_all(finished, None),
            Outcome::DeadlineExceeded => {
                self.kill_all(finished, Some("DeadlineExceeded"));
                self.view.reason = Some("DeadlineExceeded".into());
                self.view.message = Some("Pod was active on the node longer than the specified deadline".into());
            }
        }
        let init_ok = self.view.init.iter().all(|c| c.terminated().is_some_and(|t| t.exit_code == 0));
        let main_ok = self.view.main.iter().all(|c| c.terminated().is_some_and(|t| t.exit_code == 0));
        let failed = self.view.reason.is_some() || !init_ok || !main_ok;
        self.view.phase = if failed { Phase::Failed } else { Phase::Succeeded };
        self.view.refresh_conditions(finished);
    }

    /// Marks every started, unfinished container terminated: tools as killed (137), images' containers
    /// as having stopped cleanly, the way a server does on the kubelet's SIGTERM (the hostlet kills at
    /// once; it has no grace period).
    fn kill_all(&mut self, finished: Timestamp, reason: Option<&str>) {
        let workload: Vec<bool> = self.spec().containers.iter().map(|c| self.tool(c).is_none()).collect();
        let inits = self.view.init.iter_mut().map(|c| (false, c));
        let mains = self.view.main.iter_mut().zip(workload).map(|(c, w)| (w, c));
        for (workload, c) in inits.chain(mains) {
            if let State::Running { started } = c.state {
                let code = if workload && reason.is_none() { 0 } else { 137 };
                let mut t = Terminated::from_exit(code, None, Some(started), finished);
                if let Some(reason) = reason {
                    t.reason = reason.into();
                }
                c.state = State::Terminated(t);
            }
        }
    }

    async fn report(&self) {
        patch_status(&self.ctx, &self.pod, json!({ "status": self.view.status() })).await;
    }
}

/// The host path a volume mount binds: the volume, or a path inside it (created as a directory if
/// missing, as the kubelet does).
fn mount(base: &Path, sub: &str, target: &str, read_only: bool) -> Result<Mount, PodError> {
    let sub = Path::new(sub);
    if !sub.components().all(|c| matches!(c, Component::Normal(_))) && !sub.as_os_str().is_empty() {
        return Err(PodError::config(format!("invalid subPath {}", sub.display())));
    }
    let source = base.join(sub);
    if !source.exists() {
        std::fs::create_dir_all(&source).map_err(|e| PodError::config(format!("subPath {}: {e}", sub.display())))?;
    }
    Ok(Mount { is_file: !source.is_dir(), source, target: target.to_string(), read_only })
}

/// Runs a container once and describes its end.
async fn run_once(launch: Launch, c: &Container, started: Timestamp) -> Terminated {
    let fallback = c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    match sandbox::run(launch).await {
        Ok(exit) => {
            let use_logs = fallback && exit.code != 0 && exit.message.is_empty();
            let message = if use_logs { exit.log_tail } else { exit.message };
            Terminated::from_exit(exit.code, Some(message), Some(started), now())
        }
        Err(e) => Terminated {
            exit_code: 128,
            reason: "StartError".into(),
            message: Some(format!("{e:#}")),
            started: Some(started),
            finished: now(),
        },
    }
}

/// A main container: runs it, and again after a growing pause when the pod restarts its containers
/// (restartPolicy Always; OnFailure is treated as Never, since the Job controller retries by pods).
async fn container_loop(
    index: usize,
    launch: Launch,
    c: Container,
    always: bool,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let _ = events.send(Event::Started(index));
        let terminated = run_once(launch.clone(), &c, now()).await;
        let _ = events.send(Event::Exited { index, terminated, restarting: always });
        if !always {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn patch_status(ctx: &Ctx, pod: &Pod, patch: serde_json::Value) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    // Retried while the apiserver does not answer: a status lost here would never be reported again.
    let started = std::time::Instant::now();
    loop {
        match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 => {
                return tracing::debug!(pod = pod_name(pod), "pod gone before its status");
            }
            Err(e) if started.elapsed() < super::env::API_PATIENCE => {
                tracing::debug!(pod = pod_name(pod), error = %e, "status update failed, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return tracing::warn!(pod = pod_name(pod), error = %e, "status update failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_inside_the_volume() {
        let base = std::env::temp_dir().join(format!("hostlet-run-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("config.json"), b"{}").unwrap();
        let file = mount(&base, "config.json", "/home/builder/.docker/config.json", true).unwrap();
        assert!(file.is_file && file.read_only);
        let dir = mount(&base, "a/b", "/x", false).unwrap();
        assert!(!dir.is_file && base.join("a/b").is_dir());
        assert_eq!(mount(&base, "", "/y", false).unwrap().source, base.join(""));
        assert!(mount(&base, "../etc", "/z", false).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
