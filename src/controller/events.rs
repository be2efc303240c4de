//! Events and metrics of a status change: one event per platform that changed phase, per rollout
//! target that changed state, and per phase change of the build; builds and rollouts counted as they end.
//! Events are recorded in the background ([`EventSink`]).

use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;
use tracing::warn;

use super::Context;
use crate::api::{
    BuildPhase, MultiArchBuild, MultiArchBuildStatus, PlatformPhase, PlatformStatus, Reason, TargetState, condition,
};
use crate::metrics::{BuildLabels, Metrics, RolloutLabels};
use crate::plan::base_images::moved;

/// One event per platform that changed phase, per rollout target that changed state, and one when the
/// build's phase changes (to Building only where no other event of the change says so).
pub(super) async fn record_transitions(
    build: &MultiArchBuild,
    ctx: &Context,
    old: Option<&MultiArchBuildStatus>,
    new: &MultiArchBuildStatus,
) {
    let mut events = Vec::new();
    for platform in &new.platforms {
        let before = old.and_then(|o| o.platforms.iter().find(|p| p.platform == platform.platform));
        let (type_, reason) = platform_event(platform.phase);
        // Pending and Building are one step for a reader: a Job created, then its pod started.
        if before.map(|b| (platform_event(b.phase).1, &b.job)) == Some((reason, &platform.job)) {
            continue;
        }
        count_build(&ctx.metrics, platform);
        let mode = platform.mode.map(|m| format!(" ({m:?})").to_lowercase()).unwrap_or_default();
        let detail = platform.message.clone().or(platform.digest.clone()).or(platform.job.clone()).unwrap_or_default();
        let job = platform.job.as_ref().map(|name| ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            name: Some(name.clone()),
            namespace: build.namespace(),
            ..Default::default()
        });
        events.push(event(type_, reason, "Build", job, format!("{}{mode}: {detail}", platform.platform)));
    }
    let requested = |p: &&PlatformStatus| new.platforms.iter().all(|n| n.platform != p.platform);
    for dropped in old.iter().flat_map(|o| o.platforms.iter().filter(requested)) {
        let why = if build.spec.is_auto() {
            "the last node of this platform left the cluster (platforms: [auto])"
        } else {
            "no longer in spec.platforms"
        };
        let note = format!("{}: {why}; the next index leaves it out", dropped.platform);
        events.push(event(EventType::Normal, Reason::PlatformDropped, "Build", None, note));
    }
    for target in &new.targets {
        let before = old.and_then(|o| o.targets.iter().find(|t| t.kind == target.kind && t.name == target.name));
        if before.map(|b| (b.state, &b.image)) == Some((target.state, &target.image)) {
            continue;
        }
        let (type_, reason, result) = match target.state {
            TargetState::Pending => continue,
            TargetState::Progressing => (EventType::Normal, Reason::RollingOut, None),
            TargetState::RolledOut => (EventType::Normal, Reason::RolledOut, Some("rolled_out")),
            TargetState::Blocked => (EventType::Warning, Reason::RolloutBlocked, Some("blocked")),
            TargetState::Stalled => (EventType::Warning, Reason::RolloutStalled, Some("stalled")),
        };
        if let Some(result) = result {
            ctx.metrics.rollouts.get_or_create(&RolloutLabels { result: result.into() }).inc();
        }
        let workload = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some(format!("{:?}", target.kind)),
            name: Some(target.name.clone()),
            namespace: build.namespace(),
            ..Default::default()
        };
        let note = format!("{:?}/{}: {}", target.kind, target.name, target.message.as_deref().unwrap_or_default());
        events.push(event(type_, reason, "RollOut", Some(workload), note));
    }
    for note in old.map(|old| moved(old, new)).unwrap_or_default() {
        events.push(event(EventType::Normal, Reason::BaseImageChanged, "Build", None, note));
    }
    // Building is what the platform events of the same change say already (a platform started,
    // waits or is queued): the build's phase event would repeat them.
    let said = new.phase == Some(BuildPhase::Building) && !events.is_empty();
    if old.and_then(|o| o.phase) != new.phase && !said {
        let ready = new.conditions.iter().find(|c| c.type_ == condition::READY);
        let message = ready.map(|c| c.message.clone()).unwrap_or_default();
        let type_ = if new.phase == Some(BuildPhase::Failed) { EventType::Warning } else { EventType::Normal };
        let note = format!("{:?}: {message}", new.phase.unwrap_or_default());
        events.push(event(type_, Reason::PhaseChanged, "Reconcile", None, note));
    }
    let reference = build.object_ref(&());
    for event in events {
        publish_event(ctx, &reference, event).await;
    }
}

fn platform_event(phase: PlatformPhase) -> (EventType, Reason) {
    match phase {
        PlatformPhase::Failed => (EventType::Warning, Reason::PlatformFailed),
        PlatformPhase::Waiting => (EventType::Warning, Reason::WaitingForNode),
        PlatformPhase::Queued => (EventType::Normal, Reason::Queued),
        PlatformPhase::Succeeded => (EventType::Normal, Reason::PlatformBuilt),
        PlatformPhase::Pending | PlatformPhase::Building => (EventType::Normal, Reason::PlatformBuilding),
    }
}

/// Counts a platform build that just ended, with its duration.
fn count_build(metrics: &Metrics, platform: &PlatformStatus) {
    let result = match platform.phase {
        PlatformPhase::Succeeded => "succeeded",
        PlatformPhase::Failed => "failed",
        _ => return,
    };
    let mode = platform.mode.map(|m| format!("{m:?}").to_lowercase()).unwrap_or_else(|| "none".into());
    let labels = BuildLabels { platform: platform.platform.clone(), mode, result: result.into() };
    metrics.platform_builds.get_or_create(&labels).inc();
    if let (Some(start), Some(end)) = (&platform.started_at, &platform.completed_at) {
        let seconds = end.0.duration_since(start.0).as_secs_f64();
        metrics.platform_build_seconds.get_or_create(&labels).observe(seconds.max(0.0));
    }
}

/// An event about the build; `secondary` is the Job or workload it concerns. The Events API caps a
/// note at 1 kB.
pub(super) fn event(
    type_: EventType,
    reason: Reason,
    action: &str,
    secondary: Option<ObjectReference>,
    note: String,
) -> Event {
    let note: String = note.chars().take(1000).collect();
    Event { type_, reason: reason.as_str().into(), note: Some(note), action: action.into(), secondary }
}

pub(super) async fn publish_event(ctx: &Context, reference: &ObjectReference, event: Event) {
    ctx.events.send(reference, event).await;
}

/// Records events in the background, as client-go's recorder does: a reconcile hands them over and goes
/// on, so an apiserver slow to take events slows the events, not the builds. Each object's events keep
/// their order (one sender per shard, a shard per object); events still queued when the process ends
/// are lost.
pub(super) struct EventSink {
    shards: Vec<mpsc::Sender<(ObjectReference, Event)>>,
}

/// Sending shards: events of different builds go out side by side.
const SHARDS: usize = 4;
/// Events queued per shard before a reconcile waits to hand over more.
const QUEUED: usize = 256;

impl EventSink {
    pub(super) fn start(client: Client, reporter: Reporter) -> EventSink {
        let shards = (0..SHARDS)
            .map(|_| {
                let (sender, mut queue) = mpsc::channel::<(ObjectReference, Event)>(QUEUED);
                let (client, reporter) = (client.clone(), reporter.clone());
                tokio::spawn(async move {
                    while let Some((reference, event)) = queue.recv().await {
                        // A recorder per event: kube's folds events with the same reason into one
                        // series and keeps the first note, and each of ours is a distinct transition.
                        let recorder = Recorder::new(client.clone(), reporter.clone());
                        if let Err(e) = recorder.publish(&event, &reference).await {
                            warn!("cannot record event: {e}");
                        }
                    }
                });
                sender
            })
            .collect();
        EventSink { shards }
    }

    async fn send(&self, reference: &ObjectReference, event: Event) {
        let mut hasher = DefaultHasher::new();
        (&reference.namespace, &reference.name).hash(&mut hasher);
        let shard = &self.shards[hasher.finish() as usize % SHARDS];
        if shard.send((reference.clone(), event)).await.is_err() {
            warn!("cannot record event: its sender has stopped");
        }
    }
}
