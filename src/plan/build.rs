//! One pass of a build's reconcile as one pure function: from what was observed, the spec checked
//! once, the git source's next step, the Jobs to create and delete, and whether to publish (and what),
//! or why the build cannot go on. The shell applies it, publishes, rolls out (the second pure step,
//! [`super::rollout::plan_target`], needs the published digest) and writes the status from
//! [`super::status::desired_status`].

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::assembly::{Assembly, ContextDockerfile, assembly};
use super::base_images::PinnedBase;
use super::builder_images::BuildImages;
use super::decide::{self, Decision, JobObservation, SourceRevision, decide, requested_platforms};
use super::git::{GitStep, ResolveObservation, git_step, report};
use super::job::build_tag;
use super::nodes::{EmulationLabels, NodeView};
use super::placement::{BuildSlots, nodes_running};
use super::status::already_published;
use super::validate::{AllowedImages, ValidBuild, validate};
use crate::api::{
    BuildTool, BuilderKind, MultiArchBuildSpec, MultiArchBuildStatus, PlatformPhase, PlatformStatus, Reason,
    SourceStatus,
};
use crate::platform::Platform;

/// What a reconcile observed of one build and the cluster, as plain data.
#[derive(Clone, Copy)]
pub struct Observation<'a> {
    pub build_name: &'a str,
    pub generation: i64,
    pub spec: &'a MultiArchBuildSpec,
    /// The rebuild annotation's value.
    pub rebuild_requested_at: Option<&'a str>,
    /// The base images of each platform, pinned.
    pub bases: &'a BTreeMap<Platform, Vec<PinnedBase>>,
    /// The status as last written.
    pub status: Option<&'a MultiArchBuildStatus>,
    pub nodes: &'a [NodeView],
    pub emulation: &'a EmulationLabels,
    /// The builder and clone images, and where they run.
    pub images: &'a BuildImages<'a>,
    /// The images `spec.builder.image` may name.
    pub allowed_builder_images: &'a AllowedImages,
    /// How many builds a node may run at once.
    pub slots: &'a BuildSlots,
    pub jobs: &'a [JobObservation],
    pub resolve_jobs: &'a [JobObservation],
    pub context_fingerprint: Option<&'a str>,
    /// The Dockerfile of a ConfigMap context, or of the git commit built as its resolve Job reported it.
    pub dockerfile: Option<&'a ContextDockerfile>,
    /// A Secret or ConfigMap the spec names that does not exist, as a message naming field and fix.
    pub missing: Option<&'a str>,
    pub now: &'a Time,
}

/// What to do in this pass.
#[derive(Debug)]
pub struct BuildPlan {
    /// The git source's resolve Jobs to create and delete, whatever comes next.
    pub git: Option<GitStep>,
    pub next: Next,
}

#[derive(Debug)]
pub enum Next {
    /// Only a change can fix this: say so in status, and look again after `recheck` at the latest.
    Stop {
        reason: Reason,
        message: String,
        recheck: Duration,
    },
    Go(Box<Go>),
}

/// A build that can go on: its Jobs, and its index once every platform is built.
#[derive(Debug)]
pub struct Go {
    pub valid: ValidBuild,
    pub decision: Decision,
    pub publish: PublishStep,
    /// The commit a git source builds.
    pub commit: Option<String>,
}

#[derive(Debug, PartialEq)]
pub enum PublishStep {
    /// Not every platform is built yet.
    NotYet,
    /// The status already records the index of exactly these children: nothing to verify or push.
    Done { image: String },
    /// Verify these children and push their index, then delete the tags buildah pushed them to.
    Publish { built: Vec<(Platform, String)>, temporary_tags: Vec<String> },
}

/// The tags buildah pushed the built children to, which only gave the push a name; BuildKit pushes by
/// digest and leaves none. A record from before the builder was recorded was made by the spec's kind.
fn temporary_tags(spec: &MultiArchBuildSpec, decision: &Decision) -> Vec<String> {
    let by_buildah = |p: &&PlatformStatus| {
        p.builder == Some(BuildTool::Buildah) || (p.builder.is_none() && spec.builder.kind == BuilderKind::Buildah)
    };
    let tag = |p: &PlatformStatus| Some(build_tag(&p.platform.parse().ok()?, p.inputs.as_deref()?));
    decision.platforms.iter().filter(by_buildah).filter_map(tag).collect()
}

/// When a permanent failure is looked at again if the change that fixes it is watched (a spec edit, a
/// ConfigMap or Secret the build names, a node): a safety net only.
pub const WAKES_IT: Duration = Duration::from_secs(300);
/// ... and if it is not (a branch pushed to the git server, a foreign Job deleted).
pub const LOOK_AGAIN: Duration = Duration::from_secs(60);

pub fn plan(observed: &Observation) -> BuildPlan {
    let stop = |reason, message: String, recheck| Next::Stop { reason, message, recheck };
    let valid = match validate(observed.spec, observed.allowed_builder_images) {
        Ok(valid) => valid,
        Err(e) => return BuildPlan { git: None, next: stop(Reason::InvalidSpec, e.to_string(), WAKES_IT) },
    };
    if let Some(missing) = observed.missing {
        return BuildPlan { git: None, next: stop(Reason::InvalidSpec, missing.to_string(), WAKES_IT) };
    }
    let platforms = match requested_platforms(observed.spec, observed.nodes) {
        Ok(platforms) => platforms,
        Err(e) => {
            let next = stop(Reason::InvalidPlatform, format!("spec.platforms: {e}"), WAKES_IT);
            return BuildPlan { git: None, next };
        }
    };
    if let Some(message) = not_assemblable(observed, &platforms) {
        return BuildPlan { git: None, next: stop(Reason::InvalidSpec, message, WAKES_IT) };
    }
    let git = source_step(observed, &valid);
    if let Some(message) = git.as_ref().and_then(|step| step.failed.clone()) {
        return BuildPlan { git, next: stop(Reason::RevisionUnresolved, message, LOOK_AGAIN) };
    }
    // The builder would fail on it: say so now, naming the field and the path.
    if let (Some(step), Some(source)) = (&git, &observed.spec.source.git)
        && let Some(message) = report::missing(&step.status, source)
    {
        return BuildPlan { git, next: stop(Reason::InvalidSpec, message, LOOK_AGAIN) };
    }
    let commit = git.as_ref().and_then(|step| step.commit.clone());
    let mut decision = decide(&decide::Inputs {
        build_name: observed.build_name,
        spec: observed.spec,
        platforms: &platforms,
        nodes: observed.nodes,
        emulation: observed.emulation,
        images: observed.images,
        slots: observed.slots,
        jobs: observed.jobs,
        context_fingerprint: observed.context_fingerprint,
        dockerfile: observed.dockerfile,
        rebuild_requested_at: observed.rebuild_requested_at,
        bases: observed.bases,
        source: match (&git, &commit) {
            (None, _) => SourceRevision::NotGit,
            (Some(_), None) => SourceRevision::Resolving,
            (Some(_), Some(commit)) => SourceRevision::Commit(commit),
        },
        records: observed.status.map(|s| s.platforms.as_slice()).unwrap_or_default(),
        timeout: valid.timeout,
        now: observed.now,
    });
    // Every platform; or, with `AvailablePlatforms`, those built once the others failed or waited long enough.
    let children = decision.built().or_else(|| {
        match valid.partial_after.and_then(|after| decision.available(after, observed.now)) {
            Some(Ok(built)) => Some(built),
            Some(Err(due)) => {
                decision.recheck_in = Some(decision.recheck_in.map_or(due, |r| r.min(due)));
                None
            }
            None => None,
        }
    });
    let publish = match (already_published(observed.status, observed.generation, children.as_deref()), children) {
        (Some(image), _) => PublishStep::Done { image },
        (None, Some(built)) => PublishStep::Publish { temporary_tags: temporary_tags(observed.spec, &decision), built },
        (None, None) => PublishStep::NotYet,
    };
    BuildPlan { git, next: Next::Go(Box::new(Go { valid, decision, publish, commit })) }
}

/// The git source's next step: the commit to build and its Dockerfile, from which the shell reads the
/// base images before it plans (see [`git_source_step`]).
fn source_step(observed: &Observation, valid: &ValidBuild) -> Option<GitStep> {
    let git = observed.spec.source.git.as_ref()?;
    Some(GitStep {
        node_terms: observed.images.git.as_ref().and_then(|image| nodes_running(image, observed.nodes)),
        ..git_step(&ResolveObservation {
            build_name: observed.build_name,
            git,
            dockerfile: &observed.spec.dockerfile,
            poll_interval: valid.poll_interval,
            generation: observed.generation,
            rebuild_requested_at: observed.rebuild_requested_at,
            recorded: observed.status.and_then(|s| s.source.as_ref()),
            jobs: observed.resolve_jobs,
            now: observed.now,
        })
    })
}

/// The git source's step as [`plan`] will take it, for the shell to read the base images of the
/// Dockerfile it reports first (`observed.bases` is not read). `None` for another source, or a spec
/// that does not validate (the plan stops then).
pub fn git_source_step(observed: &Observation) -> Option<GitStep> {
    let valid = validate(observed.spec, observed.allowed_builder_images).ok()?;
    source_step(observed, &valid)
}

/// With `spec.builder.kind: assemble`, why the Dockerfile cannot be assembled for some platform.
fn not_assemblable(observed: &Observation, platforms: &[Platform]) -> Option<String> {
    if observed.spec.builder.kind != BuilderKind::Assemble {
        return None;
    }
    platforms.iter().find_map(|platform| {
        let args = super::inputs::build_args(observed.spec, platform);
        match assembly(observed.dockerfile, &args, platform) {
            Assembly::NeedsBuilder(why) => Some(format!(
                "spec.builder.kind: assemble: {why} (for {platform}); set spec.builder.kind to auto or buildah to \
                 build it with a builder"
            )),
            Assembly::Possible | Assembly::Unknown => None,
        }
    })
}

impl BuildPlan {
    /// The git source's status to write: this pass's, or `None` to keep the one last written.
    pub fn source(&self) -> Option<SourceStatus> {
        self.git.as_ref().map(|step| step.status.clone())
    }

    /// When to look again: soon while platforms build or a revision resolves (the caches may lag a
    /// moment behind the event that woke this pass, and looking costs no API request), every 20 s while
    /// a rollout progresses (for its deadline), when a wait runs out or a git poll is due, and after
    /// 5 minutes anyway, as a safety net.
    pub fn requeue(&self, rolling: bool) -> Duration {
        let go = match &self.next {
            Next::Stop { recheck, .. } => return *recheck,
            Next::Go(go) => go,
        };
        let building = go.decision.platforms.iter().any(|p| {
            // A queued platform looks again as soon: another build's end frees its slot.
            matches!(p.phase, PlatformPhase::Pending | PlatformPhase::Building | PlatformPhase::Queued)
        }) || self.git.as_ref().is_some_and(|step| step.commit.is_none());
        let base = Duration::from_secs(if building {
            5
        } else if rolling {
            20
        } else {
            300
        });
        let rechecks = [go.decision.recheck_in, self.git.as_ref().and_then(|step| step.recheck_in)];
        rechecks.into_iter().flatten().fold(base, Duration::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PlatformPhase;
    use crate::plan::decide::JobState;
    use crate::plan::decide::tests::spec;
    use k8s_openapi::jiff::Timestamp;

    fn nodes() -> Vec<NodeView> {
        let node = |name: &str, platform: &str| NodeView {
            name: name.into(),
            platform: Some(platform.parse().unwrap()),
            usable: true,
            emulates: Default::default(),
            builds: 0,
        };
        vec![node("x86-1", "linux/amd64"), node("jetson-1", "linux/arm64")]
    }

    /// Plans `spec` on two nodes with these Jobs and status, at a fixed time.
    fn plan_of(spec: &MultiArchBuildSpec, jobs: &[JobObservation], status: Option<&MultiArchBuildStatus>) -> BuildPlan {
        plan_at(spec, jobs, status, 1000)
    }

    /// [`plan_of`] at `now` (seconds).
    fn plan_at(
        spec: &MultiArchBuildSpec,
        jobs: &[JobObservation],
        status: Option<&MultiArchBuildStatus>,
        now: i64,
    ) -> BuildPlan {
        let (nodes, now) = (nodes(), Time(Timestamp::from_second(now).unwrap()));
        plan(&Observation {
            build_name: "blog",
            generation: 2,
            spec,
            rebuild_requested_at: None,
            bases: &BTreeMap::new(),
            status,
            nodes: &nodes,
            emulation: &EmulationLabels::default(),
            images: &BuildImages::unread(),
            allowed_builder_images: &AllowedImages::default(),
            slots: &BuildSlots::default(),
            jobs,
            resolve_jobs: &[],
            context_fingerprint: Some("fp"),
            dockerfile: None,
            missing: None,
            now: &now,
        })
    }

    fn go(plan: &BuildPlan) -> &Go {
        match &plan.next {
            Next::Go(go) => go,
            Next::Stop { message, .. } => panic!("stopped: {message}"),
        }
    }

    #[test]
    fn available_platforms_are_published_once_the_others_waited_long_enough() {
        let mut spec = spec(&["linux/amd64", "linux/riscv64"]);
        spec.placement = crate::api::Placement::Native;
        spec.publish =
            crate::api::PublishSpec { policy: crate::api::PublishPolicy::AvailablePlatforms, wait_for: "10m".into() };
        let first = plan_at(&spec, &[], None, 1000);
        let waiting = &go(&first).decision.platforms[1];
        assert_eq!((waiting.phase, waiting.waiting_since.clone()), (PlatformPhase::Waiting, Some(time(1000))));
        let built = JobObservation {
            name: go(&first).decision.platforms[0].job.clone().unwrap(),
            state: JobState::Succeeded { message: Some(format!("sha256:{}", "a".repeat(64))) },
            attempts: 1,
            ..Default::default()
        };
        let status = |plan: &BuildPlan| MultiArchBuildStatus {
            observed_generation: Some(2),
            platforms: go(plan).decision.platforms.clone(),
            ..Default::default()
        };
        // Built, but riscv64 has waited only 2 minutes: not yet, and a look again when the 10 are up.
        let soon = plan_at(&spec, std::slice::from_ref(&built), Some(&status(&first)), 1120);
        assert_eq!(go(&soon).publish, PublishStep::NotYet);
        assert_eq!(go(&soon).decision.platforms[1].waiting_since, Some(time(1000)), "the wait goes on");
        assert_eq!(go(&soon).decision.recheck_in, Some(Duration::from_secs(480)));
        // Ten minutes: the index of amd64 alone.
        let late = plan_at(&spec, std::slice::from_ref(&built), Some(&status(&soon)), 1600);
        let PublishStep::Publish { built: children, .. } = &go(&late).publish else {
            panic!("{:?}", go(&late).publish)
        };
        assert_eq!(children, &[("linux/amd64".parse().unwrap(), format!("sha256:{}", "a".repeat(64)))]);
        // Published: nothing more, until riscv64 is built.
        let published = MultiArchBuildStatus { image: Some("r/blog@sha256:idx".into()), ..status(&late) };
        let again = plan_at(&spec, std::slice::from_ref(&built), Some(&published), 1700);
        assert_eq!(go(&again).publish, PublishStep::Done { image: "r/blog@sha256:idx".into() });
        // The default waits for every platform.
        spec.publish = Default::default();
        assert_eq!(go(&plan_at(&spec, &[built], Some(&status(&soon)), 99_000)).publish, PublishStep::NotYet);
    }

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn a_bad_spec_or_platform_stops_with_the_field_named() {
        let mut bad = spec(&["linux/amd64"]);
        bad.builder.timeout = "soon".into();
        let Next::Stop { reason, message, recheck } = plan_of(&bad, &[], None).next else { panic!("went on") };
        assert_eq!((reason, recheck), (Reason::InvalidSpec, WAKES_IT));
        assert!(message.starts_with("spec.builder.timeout"), "{message}");

        let Next::Stop { reason, message, .. } = plan_of(&spec(&["linux/m68k"]), &[], None).next else {
            panic!("went on")
        };
        assert_eq!(reason, Reason::InvalidPlatform);
        assert!(message.starts_with("spec.platforms"), "{message}");
    }

    /// A git build whose resolve Job reports `message`: the plan of the pass that sees it.
    fn plan_of_git(message: &str) -> BuildPlan {
        let (nodes, now) = (nodes(), time(1000));
        let mut spec = spec(&["linux/amd64"]);
        spec.dockerfile = "Dockerfile".into();
        spec.source = crate::api::Source {
            config_map: None,
            git: Some(crate::api::GitSource {
                url: "https://example.com/blog.git".into(),
                context_dir: "site".into(),
                ..Default::default()
            }),
        };
        let observe = |resolve_jobs: &[JobObservation]| {
            plan(&Observation {
                build_name: "blog",
                generation: 1,
                spec: &spec,
                rebuild_requested_at: None,
                bases: &BTreeMap::new(),
                status: None,
                nodes: &nodes,
                emulation: &EmulationLabels::default(),
                images: &BuildImages::unread(),
                allowed_builder_images: &AllowedImages::default(),
                slots: &BuildSlots::default(),
                jobs: &[],
                resolve_jobs,
                context_fingerprint: None,
                dockerfile: None,
                missing: None,
                now: &now,
            })
        };
        let name = observe(&[]).git.and_then(|step| step.create).expect("a resolve Job");
        let state = JobState::Succeeded { message: Some(message.into()) };
        observe(&[JobObservation { name, state, ..Default::default() }])
    }

    #[test]
    fn a_git_commit_without_the_dockerfile_stops_naming_field_and_path() {
        let commit = "e96170b9f24304f431209b9305930710d7736b5e";
        let refs = format!("{commit}\trefs/heads/main\n");
        let planned = plan_of_git(&format!("{refs}archway-dockerfile {commit} missing\n"));
        let Next::Stop { reason, message, .. } = &planned.next else { panic!("went on") };
        assert_eq!(*reason, Reason::InvalidSpec);
        assert!(
            message.starts_with(&format!("spec.source.git: no file site/Dockerfile at commit {commit}")),
            "{message}"
        );
        assert!(planned.source().and_then(|s| s.dockerfile).is_some_and(|d| d.missing), "recorded for later passes");
        // Too large: the build goes on, at that commit.
        let planned = plan_of_git(&format!("{refs}archway-dockerfile {commit} too-large 6000\n"));
        assert_eq!(go(&planned).commit.as_deref(), Some(commit));
        assert_eq!(go(&planned).decision.create.len(), 1);
    }

    #[test]
    fn a_missing_reference_stops_until_it_appears() {
        let (nodes, now) = (nodes(), Time(Timestamp::from_second(1000).unwrap()));
        let spec = spec(&["linux/amd64"]);
        let planned = plan(&Observation {
            build_name: "blog",
            generation: 1,
            spec: &spec,
            rebuild_requested_at: None,
            bases: &BTreeMap::new(),
            status: None,
            nodes: &nodes,
            emulation: &EmulationLabels::default(),
            images: &BuildImages::unread(),
            allowed_builder_images: &AllowedImages::default(),
            slots: &BuildSlots::default(),
            jobs: &[],
            resolve_jobs: &[],
            context_fingerprint: None,
            dockerfile: None,
            missing: Some("spec.source.configMap: ConfigMap \"ctx\" not found"),
            now: &now,
        });
        let Next::Stop { reason, message, recheck } = planned.next else { panic!("went on") };
        assert_eq!((reason, recheck), (Reason::InvalidSpec, WAKES_IT));
        assert!(message.contains("\"ctx\" not found"));
    }

    #[test]
    fn jobs_first_then_one_publish_then_nothing_more() {
        let spec = spec(&["linux/amd64", "linux/arm64"]);
        let first = plan_of(&spec, &[], None);
        assert_eq!(go(&first).decision.create.len(), 2);
        assert_eq!(go(&first).publish, PublishStep::NotYet);
        assert_eq!(first.requeue(false), Duration::from_secs(5), "looks again soon while building");

        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let jobs: Vec<JobObservation> = go(&first)
            .decision
            .platforms
            .iter()
            .zip(['a', 'b'])
            .map(|(p, c)| JobObservation {
                name: p.job.clone().unwrap(),
                state: JobState::Succeeded { message: Some(digest(c)) },
                tool: Some(BuildTool::Buildah),
                attempts: 1,
                ..Default::default()
            })
            .collect();
        let built = plan_of(&spec, &jobs, None);
        let PublishStep::Publish { built: children, temporary_tags } = &go(&built).publish else { panic!("{built:?}") };
        assert_eq!(children.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(), [digest('a'), digest('b')]);
        let inputs: Vec<&str> = go(&built).decision.platforms.iter().filter_map(|p| p.inputs.as_deref()).collect();
        assert_eq!(
            *temporary_tags,
            [format!("archway-linux-amd64-{}", inputs[0]), format!("archway-linux-arm64-{}", inputs[1])]
        );
        // BuildKit pushes by digest; a record without its builder was built by the spec's kind.
        let mut decision = go(&built).decision.clone();
        decision.platforms[0].builder = Some(BuildTool::Buildkit);
        let with_kind = |kind| MultiArchBuildSpec {
            builder: crate::api::BuilderSpec { kind, ..spec.builder.clone() },
            ..spec.clone()
        };
        assert_eq!(super::temporary_tags(&spec, &decision), temporary_tags[1..]);
        decision.platforms[1].builder = None;
        assert!(super::temporary_tags(&with_kind(BuilderKind::Buildkit), &decision).is_empty());
        assert_eq!(super::temporary_tags(&with_kind(BuilderKind::Buildah), &decision), temporary_tags[1..]);
        assert_eq!(built.requeue(false), Duration::from_secs(300));
        assert_eq!(built.requeue(true), Duration::from_secs(20), "a rollout's deadline is looked at");

        // Published at this generation: the same children are not pushed again.
        let status = MultiArchBuildStatus {
            observed_generation: Some(2),
            image: Some("registry.example.com/blog@sha256:1".into()),
            platforms: go(&built).decision.platforms.clone(),
            ..Default::default()
        };
        let again = plan_of(&spec, &jobs, Some(&status));
        assert_eq!(go(&again).publish, PublishStep::Done { image: "registry.example.com/blog@sha256:1".into() });
        assert!(go(&again).decision.platforms.iter().all(|p| p.phase == PlatformPhase::Succeeded));
    }
}
