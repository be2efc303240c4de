//! The status a build should show, computed from the decision and the publish outcome. Conditions keep
//! their `lastTransitionTime` unless their status changes, so an unchanged build computes an equal
//! status and the controller writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::decide::Decision;
use crate::api::{BuildPhase, MultiArchBuildStatus, PlatformPhase, Reason, TargetState, TargetStatus, condition};
use crate::platform::Platform;

/// Where publishing the index stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Publish {
    /// Not every platform is built yet.
    NotYet,
    /// The index is pushed: `repo@sha256:...`.
    Published { image: String },
    /// Verification or the push failed for a reason a change must fix.
    Failed { reason: Reason, message: String },
}

/// Whether the current status already records the index of exactly these children (the platforms it
/// shows built, with their digests), so nothing needs to be verified or pushed again.
pub fn already_published(
    old: Option<&MultiArchBuildStatus>,
    generation: i64,
    children: Option<&[(Platform, String)]>,
) -> Option<String> {
    let (old, children) = (old?, children?);
    let image = old.image.clone()?;
    let published: Vec<(&str, &str)> = old
        .platforms
        .iter()
        .filter(|p| p.phase == PlatformPhase::Succeeded)
        .filter_map(|p| Some((p.platform.as_str(), p.digest.as_deref()?)))
        .collect();
    let same_children = published.len() == children.len()
        && children.iter().all(|(p, d)| published.contains(&(p.to_string().as_str(), d.as_str())));
    (old.observed_generation == Some(generation) && same_children).then_some(image)
}

/// The status of a build: `targets` has one entry per rollout target (none without `spec.rollout`).
pub fn desired_status(
    generation: i64,
    decision: &Decision,
    publish: &Publish,
    targets: &[TargetStatus],
    old: Option<&MultiArchBuildStatus>,
    now: &Time,
) -> MultiArchBuildStatus {
    let failed: Vec<String> =
        decision.failed().map(|p| format!("{}: {}", p.platform, p.message.as_deref().unwrap_or("failed"))).collect();
    let waits = |phase| decision.platforms.iter().filter(move |p| p.phase == phase);
    let waiting: Vec<String> = waits(PlatformPhase::Waiting)
        .chain(waits(PlatformPhase::Queued))
        .map(|p| format!("{}: {}", p.platform, p.message.as_deref().unwrap_or("waiting")))
        .collect();
    // A missing node is news to act on; a queue only a matter of time.
    let waiting_reason =
        if waits(PlatformPhase::Waiting).next().is_some() { Reason::WaitingForNode } else { Reason::Queued };
    let built = decision.built().is_some();

    // Published without some platforms (`AvailablePlatforms`): what is missing, and why.
    let missing: Vec<String> = decision
        .platforms
        .iter()
        .filter(|p| p.phase != PlatformPhase::Succeeded)
        .map(|p| format!("{} ({})", p.platform, p.message.as_deref().unwrap_or("not built")))
        .collect();
    let (phase, building, published) = match (publish, failed.is_empty()) {
        (Publish::Published { image }, _) if !missing.is_empty() => (
            BuildPhase::Ready,
            cond(false, Reason::Built, "every available platform is built"),
            cond(true, Reason::Published, image),
        ),
        (_, false) => {
            let message = failed.join("; ");
            (BuildPhase::Failed, cond(false, Reason::BuildFailed, &message), cond(false, Reason::BuildFailed, &message))
        }
        (Publish::Published { image }, true) => (
            BuildPhase::Ready,
            cond(false, Reason::Built, "every platform is built"),
            cond(true, Reason::Published, image),
        ),
        // Publishing failed after every platform was built, or nothing could be built at all.
        (Publish::Failed { reason, message }, true) if built => {
            (BuildPhase::Failed, cond(false, Reason::Built, "every platform is built"), cond(false, *reason, message))
        }
        (Publish::Failed { reason, message }, true) => {
            (BuildPhase::Failed, cond(false, *reason, message), cond(false, *reason, message))
        }
        (Publish::NotYet, true) if built => (
            BuildPhase::Publishing,
            cond(false, Reason::Built, "every platform is built"),
            cond(false, Reason::Publishing, "verifying the platform images and pushing the index"),
        ),
        (Publish::NotYet, true) if !waiting.is_empty() => {
            let message = waiting.join("; ");
            (BuildPhase::Building, cond(true, waiting_reason, &message), cond(false, Reason::Building, &message))
        }
        (Publish::NotYet, true) => {
            let count = decision.platforms.len();
            let message = format!("building {count} platform(s)");
            (BuildPhase::Building, cond(true, Reason::Building, &message), cond(false, Reason::Building, &message))
        }
    };
    let mut ready = published.clone();
    let mut phase = phase;
    let rolled_out = (!targets.is_empty()).then(|| rollout_condition(targets));
    if let (Some((status, reason, message)), BuildPhase::Ready) = (&rolled_out, phase) {
        phase = match reason {
            _ if *status => BuildPhase::Ready,
            Reason::RolloutBlocked | Reason::RolloutStalled => BuildPhase::Failed,
            _ => BuildPhase::RollingOut,
        };
        ready = (*status, *reason, message.clone());
    }
    let image = match publish {
        Publish::Published { image } => Some(image.clone()),
        _ => None,
    };
    let last_handled_rebuild_at = match image {
        Some(_) => decision.rebuild_requested_at.clone(),
        None => old.and_then(|o| o.last_handled_rebuild_at.clone()),
    };
    let (reconciling, stalled) = kstatus_conditions(phase, &ready, &building);
    let previous = old.map(|o| o.conditions.as_slice()).unwrap_or_default();
    let conditions = [
        (condition::READY, ready),
        (condition::RECONCILING, reconciling),
        (condition::STALLED, stalled),
        (condition::BUILDING, building),
        (condition::PUBLISHED, published),
    ]
    .into_iter()
    .chain(rolled_out.map(|c| (condition::ROLLED_OUT, c)))
    .chain(image.as_ref().filter(|_| !missing.is_empty()).map(|_| {
        let message = format!("published without {}", missing.join("; "));
        (condition::DEGRADED, (true, Reason::PartiallyPublished, message))
    }))
    .map(|(type_, (status, reason, message))| condition_at(previous, type_, status, reason, &message, generation, now))
    .collect();
    MultiArchBuildStatus {
        observed_generation: Some(generation),
        conditions,
        phase: Some(phase),
        platform_summary: platform_summary(decision),
        platforms: decision.platforms.clone(),
        image,
        last_handled_rebuild_at,
        source: None,
        // The shell's, as `source`.
        base_images: Vec::new(),
        targets: targets.to_vec(),
    }
}

/// Whether `new` differs from `old` only by platforms moving on before they end (among Waiting, Queued,
/// Pending and Building), and by the words of conditions that say so: nothing kstatus or a rollout
/// acts on. Such a change may wait a moment to be written with the next one: a Job created, its pod
/// scheduled and its start reported make one write, not three.
pub fn is_progress_only(old: &MultiArchBuildStatus, new: &MultiArchBuildStatus) -> bool {
    let under_way = |phase| {
        matches!(
            phase,
            PlatformPhase::Waiting | PlatformPhase::Queued | PlatformPhase::Pending | PlatformPhase::Building
        )
    };
    let platforms = old.platforms.len() == new.platforms.len()
        && old
            .platforms
            .iter()
            .zip(&new.platforms)
            .all(|(o, n)| o.platform == n.platform && (o == n || (under_way(o.phase) && under_way(n.phase))));
    let conditions = old.conditions.len() == new.conditions.len()
        && old.conditions.iter().zip(&new.conditions).all(|(o, n)| (&o.type_, &o.status) == (&n.type_, &n.status));
    let rest = |s: &MultiArchBuildStatus| MultiArchBuildStatus { platforms: vec![], conditions: vec![], ..s.clone() };
    platforms && conditions && rest(old) == rest(new)
}

fn platform_summary(decision: &Decision) -> Option<String> {
    let short = decision.platforms.iter().map(|p| p.platform.strip_prefix("linux/").unwrap_or(&p.platform));
    Some(short.collect::<Vec<_>>().join(",")).filter(|s| !s.is_empty())
}

/// `Reconciling` and `Stalled`, the two conditions kstatus reads besides `observedGeneration`: true while
/// the build moves towards Ready (the reason names the step), and true when it cannot move without a
/// change (the reason and message are Ready's). Both are always present, false when they do not hold.
fn kstatus_conditions(
    phase: BuildPhase,
    ready: &(bool, Reason, String),
    building: &(bool, Reason, String),
) -> ((bool, Reason, String), (bool, Reason, String)) {
    // While building, the Building condition names the step more exactly (waiting for a node or not).
    let (_, reason, message) = if phase == BuildPhase::Building { building } else { ready };
    let reconciling = !matches!(phase, BuildPhase::Ready | BuildPhase::Failed);
    let stalled = phase == BuildPhase::Failed;
    (cond(reconciling, *reason, message), cond(stalled, *reason, message))
}

/// The `RolledOut` condition: true when every target runs the image; otherwise the worst state first
/// (blocked or stalled targets need a person), naming each target that is not there yet.
fn rollout_condition(targets: &[TargetStatus]) -> (bool, Reason, String) {
    let describe = |states: &[TargetState]| -> Vec<String> {
        targets
            .iter()
            .filter(|t| states.contains(&t.state))
            .map(|t| format!("{:?}/{}: {}", t.kind, t.name, t.message.as_deref().unwrap_or_default()))
            .collect()
    };
    let worst = [
        (TargetState::Blocked, Reason::RolloutBlocked),
        (TargetState::Stalled, Reason::RolloutStalled),
        (TargetState::Pending, Reason::Pending),
        (TargetState::Progressing, Reason::Progressing),
    ];
    for (state, reason) in worst {
        let found = describe(&[state]);
        if !found.is_empty() {
            return (false, reason, found.join("; "));
        }
    }
    (true, Reason::RolledOut, format!("{} workload(s) run the published image", targets.len()))
}

fn cond(status: bool, reason: Reason, message: &str) -> (bool, Reason, String) {
    (status, reason, message.to_string())
}

/// A condition that keeps the previous `lastTransitionTime` while its status stays the same.
fn condition_at(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: Reason,
    message: &str,
    generation: i64,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        // The apiserver caps condition messages at 32 KiB.
        message: message.chars().take(4096).collect(),
        observed_generation: Some(generation),
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PlatformStatus;
    use k8s_openapi::jiff::Timestamp;

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn platform(name: &str, phase: PlatformPhase, digest: Option<&str>) -> PlatformStatus {
        PlatformStatus { platform: name.into(), phase, digest: digest.map(String::from), ..Default::default() }
    }

    fn decision(platforms: Vec<PlatformStatus>) -> Decision {
        Decision { platforms, ..Default::default() }
    }

    fn condition<'a>(status: &'a MultiArchBuildStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn building_then_ready_keeps_transition_times_of_unchanged_conditions() {
        let building = decision(vec![platform("linux/amd64", PlatformPhase::Building, None)]);
        let first = desired_status(1, &building, &Publish::NotYet, &[], None, &time(100));
        assert_eq!(first.phase, Some(BuildPhase::Building));
        assert_eq!(condition(&first, "Building").status, "True");
        assert_eq!(condition(&first, "Ready").status, "False");
        assert_eq!(first.platform_summary.as_deref(), Some("amd64"));

        // Recomputed later with nothing changed: equal, so the controller writes nothing.
        let again = desired_status(1, &building, &Publish::NotYet, &[], Some(&first), &time(200));
        assert_eq!(again, first);

        let built = decision(vec![platform("linux/amd64", PlatformPhase::Succeeded, Some("sha256:1"))]);
        let image = "r/blog@sha256:idx".to_string();
        let ready =
            desired_status(1, &built, &Publish::Published { image: image.clone() }, &[], Some(&again), &time(300));
        assert_eq!(ready.phase, Some(BuildPhase::Ready));
        assert_eq!(ready.image.as_deref(), Some(image.as_str()));
        assert_eq!(condition(&ready, "Ready").status, "True");
        assert_eq!(condition(&ready, "Ready").last_transition_time, time(300));
        assert_eq!(condition(&ready, "Building").last_transition_time, time(300));
        assert_eq!(condition(&ready, "Ready").observed_generation, Some(1));
    }

    #[test]
    fn platforms_moving_on_before_they_end_are_progress_only() {
        let status = |phases: [PlatformPhase; 2]| {
            let platforms = ["linux/amd64", "linux/arm64"].iter().zip(phases);
            let decision = decision(platforms.map(|(p, phase)| platform(p, phase, None)).collect());
            desired_status(1, &decision, &Publish::NotYet, &[], None, &time(100))
        };
        let (queued, pending, building) = (PlatformPhase::Queued, PlatformPhase::Pending, PlatformPhase::Building);
        let first = status([pending, queued]);
        // Reconciling's reason goes from Queued to Building: words only.
        assert!(is_progress_only(&first, &status([building, pending])));
        let mut started = status([building, building]);
        started.platforms[0].node = Some("x86-1".into());
        assert!(is_progress_only(&first, &started));
        // A platform that ends, a new generation, a platform more: written at once.
        let mut built = started.clone();
        built.platforms[0].phase = PlatformPhase::Succeeded;
        assert!(!is_progress_only(&started, &built));
        assert!(!is_progress_only(&first, &MultiArchBuildStatus { observed_generation: Some(2), ..first.clone() }));
        let mut more = first.clone();
        more.platforms.push(platform("linux/arm/v7", pending, None));
        assert!(!is_progress_only(&first, &more));
        // A condition that changes its status: kstatus reads it.
        let mut waiting = status([PlatformPhase::Waiting, queued]);
        assert!(is_progress_only(&first, &waiting));
        waiting.conditions[0].status = "Unknown".into();
        assert!(!is_progress_only(&first, &waiting));
    }

    #[test]
    fn a_rebuild_request_is_handled_once_its_builds_are_published() {
        let handled = |built: bool, publish: &Publish, old: Option<&MultiArchBuildStatus>| {
            let phase = if built { PlatformPhase::Succeeded } else { PlatformPhase::Building };
            let platforms = vec![platform("linux/amd64", phase, built.then_some("sha256:1"))];
            let decision = Decision { platforms, rebuild_requested_at: Some("t2".into()), ..Default::default() };
            desired_status(1, &decision, publish, &[], old, &time(1)).last_handled_rebuild_at
        };
        let before = MultiArchBuildStatus { last_handled_rebuild_at: Some("t1".into()), ..Default::default() };
        assert_eq!(handled(false, &Publish::NotYet, Some(&before)).as_deref(), Some("t1"), "still building for t2");
        assert_eq!(handled(true, &Publish::NotYet, Some(&before)).as_deref(), Some("t1"), "not published yet");
        let published = Publish::Published { image: "r/blog@sha256:idx".into() };
        assert_eq!(handled(true, &published, Some(&before)).as_deref(), Some("t2"));
        assert_eq!(handled(false, &Publish::NotYet, None), None);
    }

    #[test]
    fn a_failed_platform_fails_the_build_and_names_it() {
        let mut failed = platform("linux/arm/v7", PlatformPhase::Failed, None);
        failed.message = Some("build failed with exit code 1".into());
        let d = decision(vec![platform("linux/amd64", PlatformPhase::Succeeded, Some("sha256:1")), failed]);
        let status = desired_status(2, &d, &Publish::NotYet, &[], None, &time(1));
        assert_eq!(status.phase, Some(BuildPhase::Failed));
        let ready = condition(&status, "Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "BuildFailed"));
        assert!(ready.message.contains("linux/arm/v7: build failed with exit code 1"), "{}", ready.message);
        assert_eq!(status.image, None);
    }

    #[test]
    fn waiting_platforms_say_what_they_wait_for() {
        let mut waiting = platform("linux/arm64", PlatformPhase::Waiting, None);
        waiting.message = Some("no node".into());
        let status = desired_status(1, &decision(vec![waiting]), &Publish::NotYet, &[], None, &time(1));
        assert_eq!(condition(&status, "Building").reason, "WaitingForNode");
        assert!(condition(&status, "Ready").message.contains("linux/arm64: no node"));
    }

    #[test]
    fn with_rollout_targets_ready_waits_for_them() {
        use crate::api::{TargetState, TargetStatus, WorkloadKind};
        let built = decision(vec![platform("linux/amd64", PlatformPhase::Succeeded, Some("sha256:1"))]);
        let published = Publish::Published { image: "r@sha256:i".into() };
        let target = |state, message: &str| TargetStatus {
            kind: WorkloadKind::Deployment,
            name: "blog".into(),
            state,
            message: Some(message.into()),
            ..Default::default()
        };
        let rolling =
            desired_status(1, &built, &published, &[target(TargetState::Progressing, "1 of 4")], None, &time(1));
        assert_eq!(rolling.phase, Some(BuildPhase::RollingOut));
        assert_eq!(condition(&rolling, "Published").status, "True");
        let ready = condition(&rolling, "Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Progressing"));
        assert_eq!(ready.message, "Deployment/blog: 1 of 4");

        let blocked =
            desired_status(1, &built, &published, &[target(TargetState::Blocked, "covers no arm")], None, &time(1));
        assert_eq!(blocked.phase, Some(BuildPhase::Failed));
        assert_eq!(condition(&blocked, "RolledOut").reason, "RolloutBlocked");

        let done =
            desired_status(1, &built, &published, &[target(TargetState::RolledOut, "ok")], Some(&rolling), &time(2));
        assert_eq!(done.phase, Some(BuildPhase::Ready));
        assert_eq!(condition(&done, "Ready").status, "True");
        assert_eq!(condition(&done, "RolledOut").last_transition_time, time(2));
        assert_eq!(condition(&done, "Published").last_transition_time, time(1), "unchanged, kept");

        // Without targets there is no RolledOut condition at all.
        let plain = desired_status(1, &built, &published, &[], None, &time(1));
        assert!(plain.conditions.iter().all(|c| c.type_ != "RolledOut"));
    }

    /// kstatus reads Reconciling and Stalled: busy and failed must never look alike.
    #[test]
    fn reconciling_while_moving_stalled_when_only_a_change_helps() {
        let kstatus = |s: &MultiArchBuildStatus| {
            let c = |t| condition(s, t);
            (c("Reconciling").status.clone(), c("Stalled").status.clone(), c("Reconciling").reason.clone())
        };
        let mut waiting = platform("linux/arm64", PlatformPhase::Waiting, None);
        waiting.message = Some("no node".into());
        let status = desired_status(1, &decision(vec![waiting]), &Publish::NotYet, &[], None, &time(1));
        assert_eq!(kstatus(&status), ("True".into(), "False".into(), "WaitingForNode".into()));

        let built = decision(vec![platform("linux/amd64", PlatformPhase::Succeeded, Some("sha256:1"))]);
        let publishing = desired_status(1, &built, &Publish::NotYet, &[], None, &time(1));
        assert_eq!(kstatus(&publishing), ("True".into(), "False".into(), "Publishing".into()));

        let refused = Publish::Failed { reason: Reason::RegistryError, message: "denied".into() };
        let failed = desired_status(1, &built, &refused, &[], Some(&publishing), &time(2));
        assert_eq!(kstatus(&failed), ("False".into(), "True".into(), "RegistryError".into()));
        assert_eq!(condition(&failed, "Stalled").message, "denied");
        assert_eq!(condition(&failed, "Stalled").last_transition_time, time(2));
        assert_eq!(condition(&failed, "Building").reason, "Built");

        // Nothing built: an invalid spec is not "every platform is built".
        let invalid = Publish::Failed { reason: Reason::InvalidSpec, message: "spec.x: bad".into() };
        let status = desired_status(1, &Decision::default(), &invalid, &[], None, &time(1));
        assert_eq!(kstatus(&status), ("False".into(), "True".into(), "InvalidSpec".into()));
        assert_eq!(condition(&status, "Building").reason, "InvalidSpec");

        let published = Publish::Published { image: "r@sha256:i".into() };
        let ready = desired_status(1, &built, &published, &[], Some(&failed), &time(3));
        assert_eq!(kstatus(&ready), ("False".into(), "False".into(), "Published".into()));
        assert_eq!(condition(&ready, "Stalled").last_transition_time, time(3));
        assert_eq!(condition(&ready, "Reconciling").last_transition_time, time(2), "False since the failure");
    }

    #[test]
    fn publish_is_remembered_only_for_the_same_children_and_generation() {
        let built = decision(vec![platform("linux/amd64", PlatformPhase::Succeeded, Some("sha256:1"))]);
        let published = Publish::Published { image: "r@sha256:i".into() };
        let status = desired_status(3, &built, &published, &[], None, &time(1));
        let children = |d: &Decision| d.built();
        assert_eq!(already_published(Some(&status), 3, children(&built).as_deref()).as_deref(), Some("r@sha256:i"));
        assert_eq!(already_published(Some(&status), 4, children(&built).as_deref()), None);
        let rebuilt = decision(vec![platform("linux/amd64", PlatformPhase::Succeeded, Some("sha256:2"))]);
        assert_eq!(already_published(Some(&status), 3, children(&rebuilt).as_deref()), None);
        assert_eq!(already_published(Some(&status), 3, None), None, "nothing to publish");
    }

    #[test]
    fn an_index_without_some_platforms_is_ready_and_degraded_saying_which() {
        let mut waiting = platform("linux/riscv64", PlatformPhase::Waiting, None);
        waiting.message = Some("no Ready, schedulable node runs linux/riscv64 natively".into());
        let partial = decision(vec![platform("linux/amd64", PlatformPhase::Succeeded, Some("sha256:1")), waiting]);
        let published = Publish::Published { image: "r@sha256:i".into() };
        let status = desired_status(1, &partial, &published, &[], None, &time(1));
        assert_eq!(status.phase, Some(BuildPhase::Ready));
        assert_eq!(
            (condition(&status, "Reconciling").status.as_str(), condition(&status, "Stalled").status.as_str()),
            ("False", "False")
        );
        let degraded = condition(&status, "Degraded");
        assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "PartiallyPublished"));
        assert_eq!(
            degraded.message,
            "published without linux/riscv64 (no Ready, schedulable node runs linux/riscv64 natively)"
        );
        let full = decision(vec![platform("linux/amd64", PlatformPhase::Succeeded, Some("sha256:1"))]);
        let status = desired_status(1, &full, &published, &[], Some(&status), &time(2));
        assert!(status.conditions.iter().all(|c| c.type_ != "Degraded"), "{:?}", status.conditions);
    }
}
