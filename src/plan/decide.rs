//! The next step of a build, from what was observed: which Jobs to create or delete, and each
//! platform's status. A pure function of plain data (the controller gathers the data and applies).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::assembly::{Assembly, ContextDockerfile, assembly};
use super::base_images::{PinnedBase, shown};
use super::builder_images::BuildImages;
use super::inputs::{BuildInputs, job_name};
pub use super::job_status::{JobObservation, JobState};
use super::nodes::{EmulationLabels, NodeView};
use super::placement::{BuildSlots, Placed, Unplaceable, cluster_platforms, place, place_assembled, take_slot};
use crate::api::{BuildTool, BuilderKind, MultiArchBuildSpec, PlatformPhase, PlatformStatus};
use crate::platform::{Platform, PlatformError, parse_known};
use crate::registry::parse_digest;

/// A platform that needs a Job created.
#[derive(Clone, Debug, PartialEq)]
pub struct JobToCreate {
    pub platform: Platform,
    pub inputs: BuildInputs,
    pub placed: Placed,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Decision {
    pub create: Vec<JobToCreate>,
    /// Owned Jobs to delete: of inputs no longer wanted (an older spec), ended without a readable
    /// result, or still running for a platform whose outcome is already recorded.
    pub delete: Vec<String>,
    pub platforms: Vec<PlatformStatus>,
    /// When to look again although nothing may change meanwhile: a Job's wait for a pod runs out.
    pub recheck_in: Option<Duration>,
    /// The rebuild request (annotation value) the platforms' inputs hold.
    pub rebuild_requested_at: Option<String>,
}

impl Decision {
    /// Every platform is built: `(platform, digest)` of each, ready to verify and publish.
    pub fn built(&self) -> Option<Vec<(Platform, String)>> {
        self.platforms
            .iter()
            .map(|p| match (&p.phase, &p.digest) {
                (PlatformPhase::Succeeded, Some(digest)) => Some((p.platform.parse().ok()?, digest.clone())),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .filter(|built| !built.is_empty())
    }

    /// With `spec.publish.policy: AvailablePlatforms`: the platforms built, once every other one has
    /// failed or waited `partial_after`; else when that will be (`Err`), or `None` when some platform is
    /// on its way (or none is built).
    pub fn available(&self, partial_after: Duration, now: &Time) -> Option<Result<Vec<(Platform, String)>, Duration>> {
        let mut built = Vec::new();
        let mut due = Duration::ZERO;
        for p in &self.platforms {
            match (&p.phase, &p.digest, &p.waiting_since) {
                (PlatformPhase::Succeeded, Some(digest), _) => built.push((p.platform.parse().ok()?, digest.clone())),
                (PlatformPhase::Failed, _, _) => {}
                (PlatformPhase::Waiting | PlatformPhase::Queued, _, Some(since)) => {
                    let waited = now.0.duration_since(since.0).unsigned_abs();
                    due = due.max(partial_after.saturating_sub(waited));
                }
                _ => return None,
            }
        }
        match (built.is_empty(), due.is_zero()) {
            (true, _) => None,
            (false, true) => Some(Ok(built)),
            (false, false) => Some(Err(due)),
        }
    }

    pub fn failed(&self) -> impl Iterator<Item = &PlatformStatus> {
        self.platforms.iter().filter(|p| p.phase == PlatformPhase::Failed)
    }
}

/// The platforms a spec asks for, normalised; `[auto]` means what the cluster's nodes run, cordoned
/// or NotReady ones included: a node that is drained for maintenance still belongs to the cluster.
pub fn requested_platforms(spec: &MultiArchBuildSpec, nodes: &[NodeView]) -> Result<Vec<Platform>, PlatformError> {
    if spec.is_auto() {
        return Ok(cluster_platforms(nodes));
    }
    spec.platforms.iter().map(|p| parse_known(p)).collect()
}

/// What a git source builds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SourceRevision<'a> {
    /// A ConfigMap source.
    NotGit,
    /// The revision is being resolved: no platform can start yet.
    Resolving,
    /// The commit the revision resolved to.
    Commit(&'a str),
}

/// Everything one decision reads.
pub struct Inputs<'a> {
    pub build_name: &'a str,
    pub spec: &'a MultiArchBuildSpec,
    pub platforms: &'a [Platform],
    pub nodes: &'a [NodeView],
    pub emulation: &'a EmulationLabels,
    /// The images a build pod may run, and where they run.
    pub images: &'a BuildImages<'a>,
    /// How many builds a node may run at once.
    pub slots: &'a BuildSlots,
    pub jobs: &'a [JobObservation],
    /// Identifies the content of a ConfigMap context (see [`BuildInputs`]).
    pub context_fingerprint: Option<&'a str>,
    /// The Dockerfile of the context (or of the git commit): whether `auto` assembles the image.
    pub dockerfile: Option<&'a ContextDockerfile>,
    /// The build's rebuild annotation ([`super::inputs::REBUILD_ANNOTATION`]), if set.
    pub rebuild_requested_at: Option<&'a str>,
    /// The base images of each platform, pinned (see [`super::base_images`]).
    pub bases: &'a BTreeMap<Platform, Vec<PinnedBase>>,
    /// For a git source, the commit every platform builds (see [`super::git`]).
    pub source: SourceRevision<'a>,
    /// The platforms of the status last written: the record of what was built.
    pub records: &'a [PlatformStatus],
    /// `spec.builder.timeout`: also how long a Job may go without a pod on a node.
    pub timeout: Duration,
    pub now: &'a Time,
}

/// Decides, per platform, whether it is built (recorded in status with its current inputs), its Job
/// exists, must be created, or waits for a node. Placement is decided once, when a Job is created:
/// what happens to nodes later never undoes a platform that is built or building.
pub fn decide(input: &Inputs) -> Decision {
    let mut decision =
        Decision { rebuild_requested_at: input.rebuild_requested_at.map(str::to_string), ..Decision::default() };
    if input.source == SourceRevision::Resolving {
        let message = "waiting for spec.source.git.revision to be resolved to a commit";
        let pending = |p: &Platform| PlatformStatus {
            platform: p.to_string(),
            message: Some(message.into()),
            ..Default::default()
        };
        decision.platforms = input.platforms.iter().map(pending).collect();
        return decision;
    }
    let mut keep = Vec::new();
    // Each platform placed in this pass takes a build slot on its nodes.
    let mut nodes = input.nodes.to_vec();
    let mut assembling = Assembling::of(input);
    for platform in input.platforms {
        let mut inputs = BuildInputs {
            rebuild_requested_at: input.rebuild_requested_at.map(str::to_string),
            base_images: input.bases.get(platform).cloned().unwrap_or_default(),
            ..BuildInputs::new(input.spec, platform, input.context_fingerprint)
        };
        let bases = shown(&inputs.base_images);
        if let (Some(git), SourceRevision::Commit(commit)) = (inputs.source.git.as_mut(), input.source) {
            // The commit is the input, not the name that led to it; how often to look is no input.
            git.revision = commit.to_string();
            git.poll_interval = None;
        }
        let hash = inputs.hash();
        let name = job_name(input.build_name, platform, &hash);
        let job = input.jobs.iter().find(|j| j.name == name);
        let recorded = input.records.iter().find(|r| {
            r.platform == platform.to_string()
                && r.inputs.as_deref() == Some(hash.as_str())
                && matches!(r.phase, PlatformPhase::Succeeded | PlatformPhase::Failed)
        });
        let status = match (recorded, job) {
            (Some(record), Some(job)) if job.state == JobState::Running && record.phase == PlatformPhase::Failed => {
                // Recorded as failed while it waited for a pod: stop it, the record stands. (A success
                // is recorded from the builder's exit, before the Job controller completes the Job,
                // whose pod a drain may delete meanwhile: that Job stays and completes.)
                decision.delete.push(job.name.clone());
                record.clone()
            }
            (Some(record), _) => {
                keep.push(name);
                record.clone()
            }
            (None, Some(job)) => match observed_status(platform, job, input) {
                Observed::Status(status) => {
                    keep.push(name);
                    let unplaced = match (&job.state, &job.unplaced_since) {
                        (JobState::Running, Some(since)) => Some(remaining(since, input.timeout, input.now)),
                        _ => None,
                    };
                    if let Some(left) = unplaced.or_else(|| awaiting_pod_result(job, input.now)) {
                        decision.recheck_in = Some(decision.recheck_in.map_or(left, |r| r.min(left)));
                    }
                    status
                }
                Observed::Lost(status) => {
                    decision.delete.push(name);
                    status
                }
            },
            (None, None) => {
                let placed = place_build(platform, &inputs, input, &nodes)
                    .and_then(|mut placed| take_slot(&mut placed, &mut nodes, input.slots).map(|()| placed));
                match placed {
                    Ok(placed) if placed.tool == BuildTool::Assemble && assembling == Assembling::First => {
                        PlatformStatus {
                            platform: platform.to_string(),
                            mode: Some(placed.mode),
                            builder: Some(placed.tool),
                            message: Some(
                                "waits for the first assembled platform, which pushes the new layer: the same \
                                 for each platform whose base agrees where the layer writes"
                                    .into(),
                            ),
                            ..Default::default()
                        }
                    }
                    Ok(placed) => {
                        if placed.tool == BuildTool::Assemble && assembling == Assembling::None {
                            assembling = Assembling::First;
                        }
                        let status = PlatformStatus {
                            platform: platform.to_string(),
                            mode: Some(placed.mode),
                            builder: Some(placed.tool),
                            placement_reason: placed.reason.clone(),
                            job: Some(name.clone()),
                            phase: PlatformPhase::Pending,
                            ..Default::default()
                        };
                        keep.push(name);
                        decision.create.push(JobToCreate { platform: platform.clone(), inputs, placed });
                        status
                    }
                    Err(why) => {
                        // A wait goes on while its inputs do: it began when the first pass saw it.
                        let waited = input.records.iter().find(|r| {
                            r.platform == platform.to_string()
                                && r.inputs.as_deref() == Some(hash.as_str())
                                && matches!(r.phase, PlatformPhase::Waiting | PlatformPhase::Queued)
                        });
                        let since = waited.and_then(|r| r.waiting_since.clone()).unwrap_or_else(|| input.now.clone());
                        PlatformStatus { waiting_since: Some(since), ..waiting(platform, &why) }
                    }
                }
            }
        };
        // Every entry records the inputs it is about: the record a later pass compares with.
        decision.platforms.push(PlatformStatus { inputs: Some(hash), base_images: bases, ..status });
    }
    let stale = input.jobs.iter().filter(|j| !keep.contains(&j.name) && !decision.delete.contains(&j.name));
    decision.delete.extend(stale.map(|j| j.name.clone()).collect::<Vec<_>>());
    decision
}

/// How far the build's assembled platforms are: the first goes alone, so that the layer they share is
/// uploaded once (the others find it in the registry), then the rest at once. A platform whose base
/// differs where the layer writes (the paths it touches, and where the base's symlinks on them lead)
/// makes a layer of its own (`assemble::run`), so waiting costs it time, not correctness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Assembling {
    /// None built or building yet.
    None,
    /// One is building: the others wait for it.
    First,
    /// One is built: the layer is there.
    Shared,
}

impl Assembling {
    fn of(input: &Inputs) -> Assembling {
        let built =
            input.records.iter().any(|r| r.builder == Some(BuildTool::Assemble) && r.phase == PlatformPhase::Succeeded);
        let building = input.jobs.iter().any(|j| j.tool == Some(BuildTool::Assemble) && j.state == JobState::Running);
        match (built, building) {
            (true, _) => Assembling::Shared,
            (false, true) => Assembling::First,
            (false, false) => Assembling::None,
        }
    }
}

/// Where and by which builder `platform` is built: assembled where the Dockerfile runs nothing and the
/// kind allows it, else by a builder (`auto` says why in the placement reason).
fn place_build(
    platform: &Platform,
    inputs: &BuildInputs,
    input: &Inputs,
    nodes: &[NodeView],
) -> Result<Placed, Unplaceable> {
    let spec = input.spec;
    let by_builder = || place(platform, spec.placement, spec.builder.kind, nodes, input.emulation, input.images);
    match spec.builder.kind {
        BuilderKind::Assemble => place_assembled(platform, nodes, input.images),
        BuilderKind::Auto => match assembly(input.dockerfile, &inputs.build_args, platform) {
            Assembly::Possible => place_assembled(platform, nodes, input.images).or_else(|_| by_builder()),
            Assembly::NeedsBuilder(why) => by_builder().map(|placed| Placed {
                reason: Some([Some(why), placed.reason.clone()].into_iter().flatten().collect::<Vec<_>>().join("; ")),
                ..placed
            }),
            Assembly::Unknown => by_builder(),
        },
        BuilderKind::Buildah | BuilderKind::Buildkit => by_builder(),
    }
}

/// How long until a wait that began at `since` has lasted `timeout` (at least a second).
fn remaining(since: &Time, timeout: Duration, now: &Time) -> Duration {
    let waited = now.0.duration_since(since.0).unsigned_abs();
    timeout.saturating_sub(waited).max(Duration::from_secs(1))
}

/// How long a Job may be Complete before its pod's result shows in the pod cache: Jobs and pods come
/// by separate watches, and one can run behind the other (a reconnect, a paused process). Only after
/// this is a Complete Job without a readable pod taken as one whose pods were deleted.
const POD_CACHE_LAG: Duration = Duration::from_secs(30);

/// For a Complete Job whose pod's result is not seen yet, within [`POD_CACHE_LAG`] of its completion:
/// when to look again (soon: the pod's event is usually a moment behind, and wakes the build too).
fn awaiting_pod_result(job: &JobObservation, now: &Time) -> Option<Duration> {
    if job.state != (JobState::Succeeded { message: None }) {
        return None;
    }
    let completed = job.completed_at.as_ref()?;
    let waited = now.0.duration_since(completed.0).unsigned_abs();
    (waited < POD_CACHE_LAG).then(|| remaining(completed, POD_CACHE_LAG, now).min(Duration::from_secs(1)))
}

fn waiting(platform: &Platform, why: &Unplaceable) -> PlatformStatus {
    PlatformStatus {
        platform: platform.to_string(),
        phase: if why.is_queued() { PlatformPhase::Queued } else { PlatformPhase::Waiting },
        message: Some(why.to_string()),
        ..Default::default()
    }
}

enum Observed {
    Status(PlatformStatus),
    /// The Job ended, but nothing is left to read its result from (its pods were deleted before the
    /// digest was recorded): it is deleted and the platform built again.
    Lost(PlatformStatus),
}

fn observed_status(platform: &Platform, job: &JobObservation, input: &Inputs) -> Observed {
    let (phase, digest, message) = match &job.state {
        JobState::Running => match &job.unplaced_since {
            Some(since) if remaining(since, input.timeout, input.now) <= Duration::from_secs(1) => {
                let why = job.problem.as_deref().unwrap_or("no reason reported");
                let timeout = &input.spec.builder.timeout;
                let message = format!("no build pod ran within spec.builder.timeout ({timeout}): {why}");
                (PlatformPhase::Failed, None, Some(message))
            }
            // Not started until its pod is on a node and the Job controller has said when it began.
            // Those, and the pod's creation, come within a second: one status change, not four.
            _ if job.node.is_none() || job.started_at.is_none() => (PlatformPhase::Pending, None, job.problem.clone()),
            _ => (PlatformPhase::Building, None, job.problem.clone()),
        },
        JobState::Succeeded { message: None } if awaiting_pod_result(job, input.now).is_some() => {
            (PlatformPhase::Building, None, None)
        }
        JobState::Succeeded { message: None } => {
            return Observed::Lost(PlatformStatus {
                platform: platform.to_string(),
                mode: job.mode,
                builder: job.tool,
                job: Some(job.name.clone()),
                phase: PlatformPhase::Pending,
                message: Some("the build's pods were deleted before its digest was recorded; building again".into()),
                ..Default::default()
            });
        }
        JobState::Succeeded { message: Some(message) } => match parse_digest(message) {
            Ok(digest) => (PlatformPhase::Succeeded, Some(digest), None),
            Err(_) => (
                PlatformPhase::Failed,
                None,
                Some(format!("the builder succeeded but reported {:?} instead of a sha256 digest", tail(message, 200))),
            ),
        },
        JobState::Failed { exit_code, message } => {
            let code = exit_code.map(|c| format!(" with exit code {c}")).unwrap_or_default();
            let attempts = job.attempts.max(1);
            let hint = hint(message).map(|h| format!("; {h}")).unwrap_or_default();
            (
                PlatformPhase::Failed,
                None,
                Some(format!("build failed{code} after {attempts} attempt(s){hint}: {}", tail(message, 1024))),
            )
        }
    };
    // Pending shows nothing of a start that is half reported (see above).
    let started = phase != PlatformPhase::Pending;
    Observed::Status(PlatformStatus {
        platform: platform.to_string(),
        mode: job.mode,
        builder: job.tool,
        placement_reason: job.placement_reason.clone(),
        node: job.node.clone().filter(|_| started),
        job: Some(job.name.clone()),
        // Set by `decide` for every entry.
        inputs: None,
        base_images: Vec::new(),
        phase,
        digest,
        started_at: job.started_at.clone().filter(|_| started),
        completed_at: job.completed_at.clone().or_else(|| (phase == PlatformPhase::Failed).then(|| input.now.clone())),
        attempts: if started { job.attempts } else { 0 },
        message,
        waiting_since: None,
    })
}

/// What to change, for the builder errors whose fix is in the spec or the operator's configuration.
fn hint(log: &str) -> Option<&'static str> {
    let hints = [
        (
            "server gave HTTP response to HTTPS client",
            "the registry speaks plain HTTP: set spec.output.insecureRegistry: true if you trust it",
        ),
        (
            "certificate signed by unknown authority",
            "the registry's certificate is not trusted: give the operator its CA (--registry-ca-file) or \
             set spec.output.insecureRegistry: true",
        ),
        ("authentication required", "the registry refused the credentials: check the Secret of spec.output.pushSecret"),
    ];
    hints.iter().find(|(needle, _)| log.contains(needle)).map(|(_, hint)| *hint)
}

/// The last `max` bytes of a message, on a character boundary: build logs end with the error.
fn tail(text: &str, max: usize) -> &str {
    let text = text.trim();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::{BuildMode, LocalRef, OutputSpec, Placement, Source};
    use k8s_openapi::jiff::Timestamp;

    /// A build of a ConfigMap context `ctx` for `platforms`, to registry.example.com/blog.
    pub(crate) fn spec(platforms: &[&str]) -> MultiArchBuildSpec {
        MultiArchBuildSpec {
            source: Source { config_map: Some(LocalRef { name: "ctx".into() }), git: None },
            platforms: platforms.iter().map(|p| p.to_string()).collect(),
            output: OutputSpec { image: "registry.example.com/blog".into(), ..Default::default() },
            ..Default::default()
        }
    }

    fn node(name: &str, platform: &str, usable: bool, emulates: &[&str]) -> NodeView {
        NodeView {
            name: name.into(),
            platform: Some(platform.parse().unwrap()),
            usable,
            emulates: emulates.iter().map(|s| s.to_string()).collect(),
            builds: 0,
        }
    }

    fn nodes() -> Vec<NodeView> {
        vec![
            node("x86-1", "linux/amd64", true, &[]),
            node("pi-1", "linux/arm/v7", true, &[]),
            node("qemu-1", "linux/amd64", true, &["arm64"]),
        ]
    }

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    /// One build's world: its spec, the nodes, its Jobs and the status last written, at time 1000.
    struct World {
        spec: MultiArchBuildSpec,
        nodes: Vec<NodeView>,
        jobs: Vec<JobObservation>,
        records: Vec<PlatformStatus>,
        fingerprint: &'static str,
        rebuild: Option<String>,
        bases: BTreeMap<Platform, Vec<PinnedBase>>,
        now: Time,
    }

    impl World {
        fn new(spec: MultiArchBuildSpec) -> World {
            World {
                spec,
                nodes: nodes(),
                jobs: vec![],
                records: vec![],
                fingerprint: "fp",
                rebuild: None,
                bases: BTreeMap::new(),
                now: time(1000),
            }
        }

        fn decide(&self) -> Decision {
            let platforms = requested_platforms(&self.spec, &self.nodes).unwrap();
            decide(&Inputs {
                build_name: "blog",
                spec: &self.spec,
                platforms: &platforms,
                nodes: &self.nodes,
                emulation: &EmulationLabels::default(),
                images: &BuildImages::unread(),
                slots: &BuildSlots::default(),
                jobs: &self.jobs,
                context_fingerprint: Some(self.fingerprint),
                dockerfile: None,
                rebuild_requested_at: self.rebuild.as_deref(),
                bases: &self.bases,
                source: SourceRevision::NotGit,
                records: &self.records,
                timeout: Duration::from_secs(30),
                now: &self.now,
            })
        }

        fn job_names(&self) -> Vec<String> {
            self.decide().platforms.iter().map(|p| p.job.clone().unwrap()).collect()
        }
    }

    fn observed(name: &str, state: JobState) -> JobObservation {
        let (node, started_at) = (Some("x86-1".into()), Some(time(900)));
        JobObservation { name: name.into(), state, attempts: 1, node, started_at, ..Default::default() }
    }

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn succeeded(c: char) -> JobState {
        JobState::Succeeded { message: Some(format!("{}\n", digest(c))) }
    }

    #[test]
    fn first_pass_creates_one_job_per_platform() {
        let world = World::new(spec(&["linux/amd64", "linux/arm64", "linux/arm/v6"]));
        let decision = world.decide();
        assert_eq!(decision.create.len(), 3);
        let modes: Vec<_> = decision.create.iter().map(|c| c.placed.mode).collect();
        assert_eq!(modes, [BuildMode::Native, BuildMode::Emulated, BuildMode::Native]);
        assert!(decision.delete.is_empty());
        assert!(decision.platforms.iter().all(|p| p.phase == PlatformPhase::Pending && p.inputs.is_some()));
        assert_eq!(decision.built(), None);
    }

    #[test]
    fn existing_jobs_are_not_created_again_and_report_their_state() {
        let mut world = World::new(spec(&["linux/amd64", "linux/arm/v7"]));
        let names = world.job_names();
        world.jobs = vec![observed(&names[0], succeeded('a')), observed(&names[1], JobState::Running)];
        let decision = world.decide();
        assert!(decision.create.is_empty() && decision.delete.is_empty());
        assert_eq!(decision.platforms[0].digest, Some(digest('a')));
        assert_eq!(decision.platforms[1].phase, PlatformPhase::Building);
        assert_eq!(decision.built(), None);

        world.jobs[1].state = succeeded('b');
        assert_eq!(world.decide().built().unwrap().len(), 2);
    }

    #[test]
    fn a_platform_builds_once_its_pod_is_on_a_node() {
        let mut world = World::new(spec(&["linux/amd64"]));
        let name = world.job_names().remove(0);
        let started = JobObservation { started_at: Some(time(990)), ..observed(&name, JobState::Running) };
        // The Job started and its pod is not scheduled yet, or the pod is and the Job's start not
        // reported yet: one status for all of it, with no start to show.
        let unscheduled = JobObservation { node: None, attempts: 0, ..started.clone() };
        for job in [unscheduled, JobObservation { started_at: None, ..started.clone() }] {
            world.jobs = vec![job];
            let pending = world.decide().platforms.remove(0);
            let shown = (pending.phase, pending.started_at, pending.node, pending.attempts);
            assert_eq!(shown, (PlatformPhase::Pending, None, None, 0));
        }
        world.jobs = vec![started];
        let building = world.decide().platforms.remove(0);
        assert_eq!(building.phase, PlatformPhase::Building);
        assert_eq!((building.started_at, building.node.as_deref()), (Some(time(990)), Some("x86-1")));
    }

    #[test]
    fn the_status_is_the_record_once_jobs_and_pods_are_gone() {
        let mut world = World::new(spec(&["linux/amd64", "linux/arm/v7"]));
        let names = world.job_names();
        world.jobs = vec![observed(&names[0], succeeded('a')), observed(&names[1], succeeded('b'))];
        world.records = world.decide().platforms;
        // Drained: the pods are gone, the Jobs say Complete with nothing to read; then the Jobs go too.
        world.jobs.iter_mut().for_each(|j| j.state = JobState::Succeeded { message: None });
        for jobs in [world.jobs.clone(), vec![]] {
            world.jobs = jobs;
            let decision = world.decide();
            assert!(decision.create.is_empty() && decision.delete.is_empty(), "{decision:?}");
            assert_eq!(decision.platforms, world.records);
        }
        // New inputs are a new build: the record of the old ones does not count.
        world.fingerprint = "fp2";
        assert_eq!(world.decide().create.len(), 2);
    }

    #[test]
    fn a_recorded_success_keeps_its_job_that_the_job_controller_has_not_completed() {
        let mut world = World::new(spec(&["linux/amd64"]));
        let first = world.decide();
        world.records = vec![PlatformStatus {
            phase: PlatformPhase::Succeeded,
            digest: Some(digest('a')),
            ..first.platforms[0].clone()
        }];
        // The builder exited 0 and was recorded; its pod is gone (drained) and the Job not yet Complete.
        world.jobs = vec![observed(&world.job_names()[0], JobState::Running)];
        let decision = world.decide();
        assert!(decision.delete.is_empty(), "{decision:?}");
        assert_eq!(decision.platforms[0].phase, PlatformPhase::Succeeded);
    }

    #[test]
    fn a_complete_job_whose_result_was_never_recorded_is_built_again() {
        let mut world = World::new(spec(&["linux/amd64"]));
        let name = world.job_names().remove(0);
        let complete =
            JobObservation { completed_at: Some(time(990)), ..observed(&name, JobState::Succeeded { message: None }) };
        world.jobs = vec![complete];
        // Complete 10 s ago: its pod's result may be on its way in the pod cache, so look again later.
        let decision = world.decide();
        assert!(decision.delete.is_empty() && decision.create.is_empty(), "{decision:?}");
        assert_eq!(decision.platforms[0].phase, PlatformPhase::Building);
        assert_eq!(decision.recheck_in, Some(Duration::from_secs(1)));
        // Still nothing to read 30 s after: its pods were deleted.
        world.now = time(1020);
        let decision = world.decide();
        assert_eq!(decision.delete, [name]);
        assert!(decision.create.is_empty(), "created again once the old Job is gone");
        assert_eq!(decision.platforms[0].phase, PlatformPhase::Pending);
        assert!(decision.platforms[0].message.as_deref().unwrap().contains("building again"));
        world.jobs.clear();
        assert_eq!(world.decide().create.len(), 1);
    }

    #[test]
    fn failures_carry_exit_code_and_log_tail() {
        let mut world = World::new(spec(&["linux/amd64"]));
        let name = world.job_names().remove(0);
        let log = format!("{}error: building at STEP \"RUN false\": exit status 1", "x".repeat(5000));
        world.jobs = vec![JobObservation {
            attempts: 3,
            ..observed(&name, JobState::Failed { exit_code: Some(1), message: log })
        }];
        let decision = world.decide();
        let status = &decision.platforms[0];
        assert_eq!(status.phase, PlatformPhase::Failed);
        let message = status.message.as_deref().unwrap();
        assert!(message.starts_with("build failed with exit code 1 after 3 attempt(s): "), "{message}");
        assert!(message.ends_with("RUN false\": exit status 1") && message.len() < 1200, "{message}");
        assert_eq!(decision.failed().count(), 1);

        let http =
            "Error: pushing: Get \"https://127.0.0.1:5000/v2/\": http: server gave HTTP response to HTTPS client";
        world.jobs = vec![observed(&name, JobState::Failed { exit_code: Some(125), message: http.into() })];
        let message = world.decide().platforms[0].message.clone().unwrap();
        assert!(
            message.contains("set spec.output.insecureRegistry: true") && message.ends_with("HTTPS client"),
            "{message}"
        );
        world.jobs = vec![observed(&name, JobState::Succeeded { message: Some("pushed!".into()) })];
        assert!(world.decide().platforms[0].message.as_deref().unwrap().contains("instead of a sha256 digest"));
    }

    #[test]
    fn a_job_that_gets_no_pod_on_a_node_fails_after_the_timeout_with_the_reason() {
        let mut world = World::new(spec(&["linux/amd64"]));
        let name = world.job_names().remove(0);
        let refused = "the Job cannot create its pod: violates PodSecurity \"baseline:latest\"";
        world.jobs = vec![JobObservation {
            unplaced_since: Some(time(990)),
            problem: Some(refused.into()),
            attempts: 0,
            node: None,
            ..observed(&name, JobState::Running)
        }];
        let waiting = world.decide();
        assert_eq!(waiting.platforms[0].phase, PlatformPhase::Pending);
        assert_eq!(waiting.platforms[0].message.as_deref(), Some(refused));
        assert_eq!(waiting.recheck_in, Some(Duration::from_secs(20)));

        world.now = time(1021);
        let failed = world.decide();
        assert_eq!(failed.platforms[0].phase, PlatformPhase::Failed);
        let message = failed.platforms[0].message.as_deref().unwrap();
        assert!(message.starts_with("no build pod ran within spec.builder.timeout (30m)"), "{message}");
        assert!(message.ends_with("violates PodSecurity \"baseline:latest\""), "{message}");

        // Recorded: the Job that still waits is deleted, the failure stands.
        world.records = failed.platforms.clone();
        let after = world.decide();
        assert_eq!(after.delete, std::slice::from_ref(&name));
        assert_eq!(after.platforms, failed.platforms);

        // Once the cause is fixed, a rebuild request builds it again under a new Job.
        world.jobs.clear();
        world.rebuild = Some("2026-12-03T10:00:00Z".into());
        let retried = world.decide();
        assert_eq!(retried.create.len(), 1);
        assert_ne!(retried.platforms[0].job.as_deref(), Some(name.as_str()));
    }

    #[test]
    fn a_moved_base_builds_again_exactly_the_platforms_whose_image_of_it_changed() {
        let mut world = World::new(spec(&["linux/amd64", "linux/arm64"]));
        let pin = |c: char| PinnedBase { written: "busybox".into(), image: "busybox".into(), digest: digest(c) };
        let (amd64, arm64) = (Platform::linux("amd64", None), Platform::linux("arm64", None));
        world.bases = BTreeMap::from([(amd64.clone(), vec![pin('a')]), (arm64.clone(), vec![pin('b')])]);
        let names = world.job_names();
        world.jobs = names.iter().map(|n| observed(n, succeeded('d'))).collect();
        let built = world.decide();
        assert!(built.create.is_empty());
        assert_eq!(built.platforms[1].base_images[0].digest, Some(digest('b')), "{:?}", built.platforms[1]);
        world.records = built.platforms;

        // The index moved; only its arm64 image changed.
        world.bases.insert(arm64, vec![pin('c')]);
        let moved = world.decide();
        let created: Vec<String> = moved.create.iter().map(|c| c.platform.to_string()).collect();
        assert_eq!(created, ["linux/arm64"]);
        assert_eq!(moved.delete, [names[1].clone()]);
        assert_eq!(moved.platforms[0].phase, PlatformPhase::Succeeded);
        assert_eq!(moved.platforms[1].base_images[0].digest, Some(digest('c')));
    }

    #[test]
    fn changed_inputs_replace_old_jobs() {
        let mut world = World::new(spec(&["linux/amd64"]));
        let old = world.job_names().remove(0);
        world.jobs = vec![observed(&old, JobState::Running)];
        world.spec.build_args.insert("VERSION".into(), "2".into());
        let decision = world.decide();
        assert_eq!(decision.delete, std::slice::from_ref(&old));
        assert_eq!(decision.create.len(), 1);
        // A changed ConfigMap context is a changed input too.
        world.spec.build_args.clear();
        world.fingerprint = "fp2";
        assert_eq!(world.decide().delete, [old]);
    }

    #[test]
    fn native_without_node_waits_and_says_why() {
        let mut world = World::new(spec(&["linux/arm64"]));
        world.spec.placement = Placement::Native;
        let decision = world.decide();
        assert!(decision.create.is_empty());
        assert_eq!(decision.platforms[0].phase, PlatformPhase::Waiting);
        assert!(decision.platforms[0].message.as_deref().unwrap().contains("kubernetes.io/arch=arm64"));
    }

    #[test]
    fn auto_platforms_follow_the_nodes_that_exist_and_cordon_undoes_nothing() {
        let mut world = World::new(spec(&["auto"]));
        world.nodes.push(node("jetson-1", "linux/arm64", true, &[]));
        let names: Vec<String> = world.decide().platforms.iter().map(|p| p.platform.clone()).collect();
        assert_eq!(names, ["linux/amd64", "linux/arm/v7", "linux/arm64"]);
        let jobs = world.job_names();
        world.jobs = jobs.iter().map(|n| observed(n, succeeded('a'))).collect();
        world.records = world.decide().platforms;
        // Cordoned (or NotReady): the platform stays, its Job is not touched.
        world.nodes[3].usable = false;
        let decision = world.decide();
        assert!(decision.delete.is_empty() && decision.create.is_empty());
        assert_eq!(decision.platforms, world.records);
        // Deleted, the last node of its platform: the platform leaves the index.
        world.nodes.pop();
        let decision = world.decide();
        assert_eq!(decision.platforms.len(), 2);
        assert_eq!(decision.delete, [jobs[2].clone()]);
    }
}
