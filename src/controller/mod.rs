//! The thin I/O shell around the pure core in [`crate::plan`]: observe the build, its Jobs and the
//! nodes (from watch caches); plan ([`crate::plan::build`]); create and delete Jobs; publish when every
//! platform is built; roll the published image out to the targets; write status by server-side apply
//! (only when it changed), with an event for each transition.

mod base_images;
mod caches;
mod clients;
pub mod config;
mod error;
mod events;
mod jobs;
mod leader;
mod observe;
mod one_read;
mod publish;
mod rollout;
mod tool_images;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::{Predicate, predicates};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{instrument, warn};

use base_images::{BaseImages, Resolved};
use caches::{Caches, WorkloadKey};
pub use clients::Clients;
pub use config::OperatorConfig;
pub use error::Error;
use events::{EventSink, event, publish_event, record_transitions};
pub use leader::{Election, Fence, LEASE_NAME, while_leading};
use tool_images::{BuildToolImages, ToolImages};

use crate::api::{
    BaseImageStatus, MultiArchBuild, MultiArchBuildSpec, MultiArchBuildStatus, PlatformPhase, Reason, SourceStatus,
    TargetState, WorkloadKind,
};
use crate::metrics::{ErrorLabels, Laps, Metrics, ReconcileLabels};
use crate::plan::assembly::ContextDockerfile;
use crate::plan::build::{BuildPlan, LOOK_AGAIN, Next, Observation, PublishStep, git_source_step, plan};
use crate::plan::decide::{Decision, requested_platforms};
use crate::plan::git::report;
use crate::plan::inputs::{REBUILD_ANNOTATION, build_label};
use crate::plan::job::BUILD_LABEL;
use crate::plan::job::BuilderConfig;
use crate::plan::nodes::{NodeChange, NodeFingerprints};
use crate::plan::status::{Publish, desired_status, is_progress_only};
use crate::plan::validate::positive_duration;
use crate::platform::Platform;
use crate::registry::RegistryOptions;

pub const FIELD_MANAGER: &str = "archway";

/// A build as watched: one that does not deserialize is reported on its own, and the watch goes on.
type Guarded = DeserializeGuard<MultiArchBuild>;

pub struct Context {
    client: Client,
    /// Records events in the background.
    events: EventSink,
    config: OperatorConfig,
    /// What build Jobs are made with (the flags' builder images, tolerations, registry CA).
    builder: BuilderConfig,
    caches: Caches,
    /// Checked before each write that must happen once.
    fence: Fence,
    /// The registry CA the operator itself trusts, as PEM (`--registry-ca-file`).
    registry_ca: Vec<Vec<u8>>,
    /// Where the builder and clone images run.
    tool_images: ToolImages,
    /// What the builds' base images' tags name.
    base_images: BaseImages,
    metrics: Arc<Metrics>,
    /// The status last written per build (by uid); a deleted build's entry goes within 5 minutes, as
    /// do the kept bodies of workloads no build targets any more.
    written: Mutex<HashMap<String, MultiArchBuildStatus>>,
    /// Since when a change of mere progress has waited to be written, per build (by uid).
    held: Mutex<HashMap<String, Instant>>,
    /// Consecutive failures per build, for exponential backoff; reset on success.
    failures: Mutex<HashMap<ObjectRef<Guarded>, u32>>,
    /// Held while a reconcile places and creates build Jobs (see `reconcile_build`).
    placing: tokio::sync::Mutex<()>,
}

impl Context {
    /// How much longer a change of mere progress of build `uid` waits to be written, counted from
    /// when the first one was seen; `None` once it has waited enough.
    fn hold(&self, uid: &str) -> Option<Duration> {
        let mut held = self.held.lock().ok()?;
        let waited = held.entry(uid.to_string()).or_insert_with(Instant::now).elapsed();
        PROGRESS_HELD.checked_sub(waited).filter(|left| !left.is_zero())
    }

    /// Ends the wait of build `uid`'s held change: written, or gone.
    fn release(&self, uid: &str) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(uid);
        }
    }

    /// Drops what is kept of builds that are no longer in `builds`.
    fn forget_deleted(&self, builds: &Store<Guarded>) {
        let live = builds.state();
        let uids: HashSet<String> = live.iter().filter_map(|b| b.meta().uid.clone()).collect();
        let refs: HashSet<ObjectRef<Guarded>> = live.iter().map(|b| ObjectRef::from_obj(b.as_ref())).collect();
        if let Ok(mut written) = self.written.lock() {
            written.retain(|uid, _| uids.contains(uid));
        }
        if let Ok(mut held) = self.held.lock() {
            held.retain(|uid, _| uids.contains(uid));
        }
        if let Ok(mut failures) = self.failures.lock() {
            failures.retain(|build, _| refs.contains(build));
        }
        let targeted: HashSet<WorkloadKey> = live
            .iter()
            .filter_map(|guarded| guarded.0.as_ref().ok())
            .flat_map(|build| {
                let namespace = build.namespace().unwrap_or_default();
                let targets = build.spec.rollout.iter().flat_map(|r| &r.targets);
                targets.map(move |t| (t.kind, namespace.clone(), t.name.clone()))
            })
            .collect();
        self.caches.retain_workloads(|key| targeted.contains(key));
    }
}

/// Runs the controller until a shutdown signal; with `--leader-elect`, only while this replica leads.
/// Metrics and `/healthz` are served either way.
pub async fn run(clients: Clients, config: OperatorConfig) -> Result<(), Error> {
    let registry_ca =
        flag_file("--registry-ca-file", config.registry_ca_file.as_deref(), |p| std::fs::read_to_string(p))?;
    let registry_auth = flag_file("--registry-auth-file", config.registry_auth_file.as_deref(), |p| std::fs::read(p))?;
    let metrics = Arc::new(Metrics::default());
    tokio::spawn(crate::metrics::serve(config.metrics_addr, metrics.clone()));
    let (election, lease_client) = (config.election(), clients.watches.clone());
    let leading = metrics.leading.clone();
    let work = async move {
        leading.set(1);
        reconcile_until_shutdown(clients, config, registry_ca, registry_auth, metrics).await;
        leading.set(0);
    };
    match election {
        Some(election) => leader::while_leading(lease_client, &election, work).await,
        None => {
            work.await;
            Ok(())
        }
    }
}

/// What the file a flag names holds, if it names one; an error names the flag.
fn flag_file<T>(
    flag: &str,
    path: Option<&std::path::Path>,
    read: impl Fn(&std::path::Path) -> std::io::Result<T>,
) -> Result<Option<T>, Error> {
    path.map(|path| read(path).map_err(|e| Error::Invalid(format!("{flag} {}: {e}", path.display())))).transpose()
}

async fn reconcile_until_shutdown(
    clients: Clients,
    config: OperatorConfig,
    registry_ca: Option<String>,
    registry_auth: Option<Vec<u8>>,
    metrics: Arc<Metrics>,
) {
    let reporter = Reporter { controller: "archway".into(), instance: std::env::var("HOSTNAME").ok() };
    let client = clients.watches;
    // Node changes that placement or coverage reads (a node added, Ready, cordoned, labelled, tainted)
    // wake the builds they can concern (see `builds_reading_nodes`); a heartbeat changes none of that
    // and wakes nothing. The same watch keeps the node cache.
    let (nodes, node_writer) = reflector::store();
    let mut seen = NodeFingerprints::new(config.emulation_labels());
    let node_watch = watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).modify(|node: &mut Node| {
        // What no one here reads, and most of a node's size: the images it holds, who wrote what.
        node.managed_fields_mut().clear();
        if let Some(status) = node.status.as_mut() {
            status.images = None;
        }
    });
    let node_changes = reflector::reflector(node_writer, node_watch).default_backoff().filter_map(move |event| {
        let change = event.ok().map(|e| seen.change(&e)).filter(|c| *c != NodeChange::None);
        futures::future::ready(change)
    });
    let (caches, triggers) = Caches::start(&client, nodes);
    let registry_options = RegistryOptions {
        extra_ca_pem: registry_ca.iter().map(|pem| pem.clone().into_bytes()).collect(),
        token_realm_hosts: config.registry_token_realms.clone(),
        ..Default::default()
    };
    let ctx = Arc::new(Context {
        metrics,
        events: EventSink::start(clients.requests.clone(), reporter),
        client: clients.requests.clone(),
        caches,
        fence: Fence::start(client.clone(), clients.requests, config.election().as_ref()),
        builder: config.builder(registry_ca.clone()),
        tool_images: ToolImages::new(config.registry_mirrors.clone(), registry_auth, registry_options.clone()),
        base_images: BaseImages::new(config.registry_mirrors.clone(), registry_options),
        config,
        registry_ca: registry_ca.map(String::into_bytes).into_iter().collect(),
        written: Mutex::new(HashMap::new()),
        held: Mutex::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
        placing: tokio::sync::Mutex::new(()),
    });
    // A build is reconciled when its spec, labels or annotations (a rebuild request) change, not when
    // only its status does: the operator wrote that status itself, at the end of a reconcile that saw
    // everything. The store still gets every change.
    let (store, writer) = reflector::store();
    let build_watch =
        watcher(Api::<Guarded>::all(client.clone()), watcher::Config::default()).modify(|guarded: &mut Guarded| {
            if let Ok(build) = guarded.0.as_mut() {
                build.managed_fields_mut().clear();
            }
        });
    let builds = reflector::reflector(writer, build_watch).default_backoff().applied_objects().predicate_filter(
        predicates::generation.combine(predicates::annotations).combine(predicates::labels),
        Default::default(),
    );
    let concurrency = ctx.config.concurrency;
    let controller = Controller::for_stream(builds, store.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency));
    // What is kept per build (the status last written, a held change, the failure count) goes once the
    // build does.
    let (pruning, builds_now) = (ctx.clone(), store.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(300)).await;
            pruning.forget_deleted(&builds_now);
        }
    });
    // A rollout target's status follows its workload: wake the builds naming it.
    let targeting = |kind: WorkloadKind| {
        let store = store.clone();
        move |meta: ObjectMeta| builds_targeting(&store, kind, &meta)
    };
    let (deployments, statefulsets, daemonsets) =
        (targeting(WorkloadKind::Deployment), targeting(WorkloadKind::StatefulSet), targeting(WorkloadKind::DaemonSet));
    // A context ConfigMap or a Secret a build names (created after it, or changed): wake those builds.
    let naming = |names: fn(&MultiArchBuildSpec, &str) -> bool| {
        let store = store.clone();
        move |meta: ObjectMeta| builds_naming(&store, names, &meta)
    };
    let (config_maps, secrets) =
        (naming(MultiArchBuildSpec::names_config_map), naming(MultiArchBuildSpec::names_secret));
    let reading = store.clone();
    let node_wakes = node_changes.flat_map(move |change| futures::stream::iter(builds_reading_nodes(&reading, change)));
    // A build pod's change (scheduled, pulling, running, ended) wakes its build.
    let pods_of = store.clone();
    controller
        .owns_stream(triggers.jobs)
        .watches_stream(triggers.pods, move |pod| build_of_pod(&pods_of, &pod))
        .watches_stream(triggers.config_maps, move |c| config_maps(c.metadata))
        .watches_stream(triggers.secrets, move |s| secrets(s.metadata))
        .watches_stream(triggers.deployments, move |w| deployments(w.metadata))
        .watches_stream(triggers.statefulsets, move |w| statefulsets(w.metadata))
        .watches_stream(triggers.daemonsets, move |w| daemonsets(w.metadata))
        .reconcile_on(node_wakes)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!("reconcile: {e}");
            }
        })
        .await;
}

/// The builds a change of the cluster's nodes can concern: a change of what placement reads concerns
/// the builds that place on nodes or cover them, any other only those that cover them.
fn builds_reading_nodes(store: &Store<Guarded>, change: NodeChange) -> Vec<ObjectRef<Guarded>> {
    let reads =
        |build: &MultiArchBuild| build.covers_nodes() || (change == NodeChange::Placement && build.places_on_nodes());
    let state = store.state();
    let reading = state.iter().filter(|guarded| guarded.0.as_ref().is_ok_and(reads));
    reading.map(|guarded| ObjectRef::from_obj(guarded.as_ref())).collect()
}

/// The build a build pod belongs to, by its `archway.dev/build` label (the build's name, shortened
/// when longer than a label value may be).
fn build_of_pod(store: &Store<Guarded>, pod: &Pod) -> Option<ObjectRef<Guarded>> {
    let label = pod.labels().get(BUILD_LABEL)?;
    let namespace = pod.namespace();
    let state = store.state();
    let build = state.iter().find(|b| b.namespace() == namespace && build_label(&b.name_any()) == *label)?;
    Some(ObjectRef::from_obj(build.as_ref()))
}

/// The builds that roll out to the workload of this kind and name.
fn builds_targeting(store: &Store<Guarded>, kind: WorkloadKind, workload: &ObjectMeta) -> Vec<ObjectRef<Guarded>> {
    let targets = |spec: &MultiArchBuildSpec, name: &str| {
        spec.rollout.iter().flat_map(|r| &r.targets).any(|t| t.kind == kind && t.name == name)
    };
    builds_naming(store, targets, workload)
}

/// The builds of the object's namespace that name it (`names`: the spec's test for a name).
fn builds_naming(
    store: &Store<Guarded>,
    names: impl Fn(&MultiArchBuildSpec, &str) -> bool,
    object: &ObjectMeta,
) -> Vec<ObjectRef<Guarded>> {
    let Some(name) = object.name.as_deref() else { return Vec::new() };
    let naming = |build: &MultiArchBuild| build.metadata.namespace == object.namespace && names(&build.spec, name);
    store
        .state()
        .iter()
        .filter(|guarded| guarded.0.as_ref().is_ok_and(naming))
        .map(|guarded| ObjectRef::from_obj(guarded.as_ref()))
        .collect()
}

#[instrument(skip_all, fields(build = %guarded.name_any(), namespace = guarded.namespace().unwrap_or_default()))]
async fn reconcile(guarded: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action, Error> {
    let build = match &guarded.0 {
        Ok(build) => build,
        Err(invalid) => {
            // Stored before a schema change, or written around admission: say so, wait for an edit.
            let note = format!("cannot read this MultiArchBuild: {}", invalid.error);
            let event = event(EventType::Warning, Reason::InvalidObject, "Reconcile", None, note);
            publish_event(&ctx, &guarded.object_ref(&()), event).await;
            return Ok(Action::await_change());
        }
    };
    let started = std::time::Instant::now();
    let (mut registry, mut laps) = (false, ctx.metrics.laps());
    let result = reconcile_build(&with_last_written_status(build, &ctx), &ctx, &mut registry, &mut laps).await;
    ctx.metrics.reconciles.inc();
    let labels = ReconcileLabels { registry: registry.to_string() };
    ctx.metrics.reconcile_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    if let Ok(mut failures) = ctx.failures.lock() {
        match &result {
            Ok(_) => failures.remove(&ObjectRef::from_obj(guarded.as_ref())),
            Err(_) => {
                *failures.entry(ObjectRef::from_obj(guarded.as_ref())).or_insert(0) += 1;
                None
            }
        };
    }
    result
}

/// Observe (from the caches), plan (pure), apply: the resolve and build Jobs, the index once every
/// platform is built, the rollout of the published image; then the status, with an event for each
/// transition. `registry` is set when it calls the registry; `laps` times the phases.
async fn reconcile_build(
    build: &MultiArchBuild,
    ctx: &Context,
    registry: &mut bool,
    laps: &mut Laps<'_>,
) -> Result<Action, Error> {
    if !ctx.caches.is_ready() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let generation = build.metadata.generation.unwrap_or_default();
    let now = now();
    let (mut observed, mut bases, mut plan) = observe_and_plan(build, ctx, &now, laps).await?;
    // Two builds placed at once would each see a node's last slot free: placing Jobs on nodes with
    // slots is one reconcile at a time, on what the others placed (planned again under the lock, it
    // may be Queued now). The Jobs it plans count as created (expected in the caches) before the lock
    // goes: the others need not wait for their creation, nor for the watch to deliver them.
    let placing = match &plan.next {
        Next::Go(go) if go.decision.create.iter().any(|create| create.placed.bounded) => {
            let placing = ctx.placing.lock().await;
            laps.lap("placing");
            (observed, bases, plan) = observe_and_plan(build, ctx, &now, laps).await?;
            Some(placing)
        }
        _ => None,
    };
    let created = match &plan.next {
        Next::Go(go) => match jobs::build_jobs(build, ctx, &go.decision, &go.valid) {
            Ok(created) => created,
            Err(message) => {
                drop(placing);
                let source = plan.source();
                return fail_permanently(build, ctx, Reason::InvalidSpec, &message, source, LOOK_AGAIN, laps).await;
            }
        },
        Next::Stop { .. } => Vec::new(),
    };
    ctx.caches.expect_jobs(&created);
    drop(placing);
    if let (Some(step), Some(git)) = (&plan.git, &build.spec.source.git) {
        jobs::apply_resolve(build, ctx, step, git).await.inspect_err(|_| ctx.caches.unexpect_jobs(&created))?;
    }
    let go = match &plan.next {
        Next::Stop { reason, message, recheck } => {
            return fail_permanently(build, ctx, *reason, message, plan.source(), *recheck, laps).await;
        }
        Next::Go(go) => go,
    };
    match jobs::apply_jobs(build, ctx, &created, &go.decision.delete).await {
        Err(Error::Invalid(message)) => {
            let source = plan.source();
            return fail_permanently(build, ctx, Reason::InvalidSpec, &message, source, LOOK_AGAIN, laps).await;
        }
        other => other?,
    }
    laps.lap("jobs");
    let publish = match &go.publish {
        PublishStep::NotYet => Publish::NotYet,
        PublishStep::Done { image } => Publish::Published { image: image.clone() },
        PublishStep::Publish { built, temporary_tags } => {
            *registry = true;
            match publish::publish(ctx, build, &go.valid, built, temporary_tags, go.commit.as_deref()).await {
                Ok(publish) => publish,
                Err(Error::Registry(e)) if !e.is_transient() => {
                    Publish::Failed { reason: Reason::RegistryError, message: e.to_string() }
                }
                Err(e) => return Err(e),
            }
        }
    };
    laps.lap("publish");
    // What the index offers: every platform, or (`AvailablePlatforms`) those built.
    let built = go.decision.platforms.iter().filter(|p| p.phase == PlatformPhase::Succeeded);
    let offered: Vec<Platform> = built.filter_map(|p| p.platform.parse().ok()).collect();
    let published = match &publish {
        Publish::Published { image } => Some(rollout::Published { image, platforms: &offered }),
        _ => None,
    };
    let targets = rollout::roll_out(ctx, build, &go.valid, published, &observed.node_objects, &now).await?;
    laps.lap("rollout");
    let rolling = targets.iter().any(|t| t.state == TargetState::Progressing);
    let status = desired_status(generation, &go.decision, &publish, &targets, build.status.as_ref(), &now);
    let status = MultiArchBuildStatus { source: plan.source(), base_images: bases.status, ..status };
    let held = write_status(build, ctx, status, laps).await?;
    let poll = base_poll_interval(&build.spec).unwrap_or(Duration::MAX);
    Ok(Action::requeue(plan.requeue(rolling).min(poll).min(held.unwrap_or(Duration::MAX))))
}

/// What the caches, the builder images and the base images say of `build` now, and the plan for it.
async fn observe_and_plan(
    build: &MultiArchBuild,
    ctx: &Context,
    now: &Time,
    laps: &mut Laps<'_>,
) -> Result<(observe::Observed, Resolved, BuildPlan), Error> {
    let emulation = ctx.config.emulation_labels();
    let observed = observe::observe(&ctx.client, &ctx.caches, build, &emulation, now).await?;
    laps.lap("observe");
    let images = BuildToolImages::read(&ctx.tool_images, &build.spec, &ctx.builder).await;
    laps.lap("tool_images");
    let (allowed_builder_images, slots, no_bases) =
        (ctx.config.allowed_builder_images(), ctx.config.build_slots(), Default::default());
    let observation = Observation {
        build_name: &build.name_any(),
        generation: build.metadata.generation.unwrap_or_default(),
        spec: &build.spec,
        rebuild_requested_at: build.annotations().get(REBUILD_ANNOTATION).map(String::as_str),
        bases: &no_bases,
        status: build.status.as_ref(),
        nodes: &observed.nodes,
        emulation: &emulation,
        images: &images.view(),
        allowed_builder_images: &allowed_builder_images,
        slots: &slots,
        jobs: &observed.jobs,
        resolve_jobs: &observed.resolve_jobs,
        context_fingerprint: observed.context.as_ref().map(|c| c.fingerprint.as_str()),
        dockerfile: observed.context.as_ref().and_then(|c| c.dockerfile.as_ref()),
        missing: observed.missing.as_deref(),
        now,
    };
    // A ConfigMap context's Dockerfile is read with it; a git source's is reported by its resolve Job
    // for the commit the plan builds (kept in status), so its step comes first.
    let git_dockerfile = git_source_step(&observation).and_then(|step| {
        let path = step.status.dockerfile.as_ref().map(|d| d.path.clone()).unwrap_or_default();
        Some((path, report::text(&step.status)?))
    });
    let context_dockerfile = observed.context.as_ref().and_then(|c| c.dockerfile.as_ref()).map(|d| d.text.clone());
    // What `auto` decides from: the git commit's Dockerfile, whose context files are not read.
    let git_context = match &git_dockerfile {
        Some((_, Ok(text))) => Some(ContextDockerfile { text: text.clone(), archives: None }),
        _ => None,
    };
    let bases = match (context_dockerfile, git_dockerfile) {
        (Some(text), _) | (None, Some((_, Ok(text)))) => {
            let platforms = requested_platforms(&build.spec, &observed.nodes).unwrap_or_default();
            let poll = base_poll_interval(&build.spec);
            ctx.base_images.resolve(ctx, build, &text, &platforms, poll).await
        }
        // Not read: the build goes on with its bases unpinned, and the status says why.
        (None, Some((path, Err(message)))) => Resolved {
            status: vec![BaseImageStatus { image: path, digest: None, message: Some(message) }],
            ..Default::default()
        },
        (None, None) => Resolved::default(),
    };
    laps.lap("base_images");
    let dockerfile = observation.dockerfile.or(git_context.as_ref());
    let plan = plan(&Observation { bases: &bases.pins, dockerfile, ..observation });
    laps.lap("plan");
    Ok((observed, bases, plan))
}

/// `spec.triggers.baseImages.pollInterval`, where it parses (validation reports it where it does not).
fn base_poll_interval(spec: &MultiArchBuildSpec) -> Option<Duration> {
    let trigger = spec.triggers.as_ref().and_then(|t| t.base_images.as_ref())?;
    positive_duration(&trigger.poll_interval).ok()
}

/// A problem only a change can fix: say so in status and an event, and wait for the change, or `recheck`.
/// `source` replaces the git source's status when given; otherwise the one last written stays.
async fn fail_permanently(
    build: &MultiArchBuild,
    ctx: &Context,
    reason: Reason,
    message: &str,
    source: Option<SourceStatus>,
    recheck: Duration,
    laps: &mut Laps<'_>,
) -> Result<Action, Error> {
    let generation = build.metadata.generation.unwrap_or_default();
    let publish = Publish::Failed { reason, message: message.into() };
    let old = build.status.as_ref();
    let targets = rollout::pending_targets(build);
    let status = desired_status(generation, &Decision::default(), &publish, &targets, old, &now());
    let source = source.or_else(|| old.and_then(|o| o.source.clone()));
    let base_images = old.map(|o| o.base_images.clone()).unwrap_or_default();
    let held = write_status(build, ctx, MultiArchBuildStatus { source, base_images, ..status }, laps).await?;
    Ok(Action::requeue(recheck.min(held.unwrap_or(Duration::MAX))))
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The build with the status this operator last wrote, when the watched copy has not caught up with it
/// yet (only this operator writes the status, so what it wrote last is never older). Everything a
/// reconcile derives from the old status then sees the newest: one transition makes one event and
/// counts once, and a published index is not pushed again.
fn with_last_written_status<'a>(build: &'a MultiArchBuild, ctx: &Context) -> Cow<'a, MultiArchBuild> {
    let uid = build.uid().unwrap_or_default();
    let written = ctx.written.lock().ok().and_then(|w| w.get(&uid).cloned());
    match written {
        Some(status) if build.status.as_ref() != Some(&status) => {
            Cow::Owned(MultiArchBuild { status: Some(status), ..build.clone() })
        }
        _ => Cow::Borrowed(build),
    }
}

/// How long a change of mere progress ([`is_progress_only`]) may wait to be written with the next one.
const PROGRESS_HELD: Duration = Duration::from_secs(1);

/// Applies the status and records its transitions, unless it equals the current one: no write, no event.
/// A change of mere progress waits up to [`PROGRESS_HELD`] from when it was first seen, for the next
/// ones: then it returns how much longer, for the reconcile to look again.
async fn write_status(
    build: &MultiArchBuild,
    ctx: &Context,
    status: MultiArchBuildStatus,
    laps: &mut Laps<'_>,
) -> Result<Option<Duration>, Error> {
    let uid = build.uid().unwrap_or_default();
    let current = build.status.as_ref();
    if current == Some(&status) {
        ctx.release(&uid);
        return Ok(None);
    }
    if current.is_some_and(|current| is_progress_only(current, &status))
        && let Some(left) = ctx.hold(&uid)
    {
        return Ok(Some(left));
    }
    ctx.release(&uid);
    patch_status(ctx, build, &status).await?;
    laps.lap("status");
    record_transitions(build, ctx, current, &status).await;
    laps.lap("events");
    if let Ok(mut written) = ctx.written.lock() {
        written.insert(uid, status);
    }
    Ok(None)
}

async fn patch_status(ctx: &Context, build: &MultiArchBuild, status: &MultiArchBuildStatus) -> Result<(), Error> {
    let name = build.name_any();
    let api = Api::<MultiArchBuild>::namespaced(ctx.client.clone(), &build.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": MultiArchBuild::api_version(&()),
        "kind": MultiArchBuild::kind(&()),
        "status": status,
    });
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// Transient errors retry with exponential backoff per build (5 s doubling to 5 min); permanent ones
/// wait for a change, with a slow look now and then.
fn error_policy(build: Arc<Guarded>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(build = %build.name_any(), kind = error.label(), "reconcile failed: {error}");
    ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { kind: error.label().into() }).inc();
    if !error.is_transient() {
        return Action::requeue(Duration::from_secs(300));
    }
    let failures =
        ctx.failures.lock().ok().and_then(|f| f.get(&ObjectRef::from_obj(build.as_ref())).copied()).unwrap_or(1);
    let seconds = 5u64.saturating_mul(1 << failures.min(6).saturating_sub(1));
    Action::requeue(Duration::from_secs(seconds.min(300)))
}
