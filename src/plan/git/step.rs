//! Which commit a git build builds, from the spec, the status last written and the resolve Jobs seen.

use std::time::Duration;

use k8s_openapi::api::core::v1::NodeSelectorTerm;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::report::{self, dockerfile_path};
use super::{commit_in, is_commit};
use crate::api::{GitSource, SourceDockerfile, SourceStatus};
use crate::plan::inputs::{resolve_job_name, short_hash};
use crate::plan::job_status::{JobObservation, JobState};

/// Everything the step reads.
pub struct ResolveObservation<'a> {
    pub build_name: &'a str,
    pub git: &'a GitSource,
    /// `spec.dockerfile`: the resolve Job reads it at the commit.
    pub dockerfile: &'a str,
    pub poll_interval: Option<Duration>,
    pub generation: i64,
    /// The rebuild annotation: a rebuild also builds what the branch holds now.
    pub rebuild_requested_at: Option<&'a str>,
    /// `status.source` as last written.
    pub recorded: Option<&'a SourceStatus>,
    /// The build's resolve Jobs.
    pub jobs: &'a [JobObservation],
    pub now: &'a Time,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct GitStep {
    /// The commit every platform builds, once known. While a poll runs, the commit resolved before.
    pub commit: Option<String>,
    pub status: SourceStatus,
    /// A resolve Job to create, by name.
    pub create: Option<String>,
    /// Where its pod may run: the nodes the clone image runs on (`None`: anywhere).
    pub node_terms: Option<Vec<NodeSelectorTerm>>,
    pub delete: Vec<String>,
    /// The revision cannot be resolved (and no earlier commit stands): what to fix.
    pub failed: Option<String>,
    pub recheck_in: Option<Duration>,
}

pub fn git_step(input: &ResolveObservation) -> GitStep {
    let git = input.git;
    let all_jobs = || input.jobs.iter().map(|j| j.name.clone()).collect::<Vec<_>>();
    let base =
        SourceStatus { revision: git.revision.clone(), generation: Some(input.generation), ..Default::default() };
    // A full commit needs no resolving, but its Dockerfile is read all the same (by a Job: only it has
    // the credentials), and the build waits for that: started without it, every platform would be
    // built again once its base images are known and pinned.
    let full_commit = is_commit(&git.revision);
    let path = dockerfile_path(git, input.dockerfile);
    // A commit resolved for this generation (and rebuild request) still stands, unless a poll is due.
    let key =
        format!("{}\n{}\n{}\n{}", git.url, git.revision, input.generation, input.rebuild_requested_at.unwrap_or(""));
    let key_hash = short_hash(key.as_bytes(), 10);
    let current = input.recorded.filter(|r| {
        r.revision == git.revision && r.generation == Some(input.generation) && r.key.as_deref() == Some(&key_hash)
    });
    // A full commit stands once its Dockerfile was read, or could not be. (A branch resolved before
    // the operator read Dockerfiles stands without one: reading it now could land on another commit.)
    let current_standing = current.filter(|r| !full_commit || r.dockerfile.is_some());
    let standing = current_standing.and_then(|r| Some((r.commit.clone()?, r.resolved_at.clone())));
    // Polls come in rounds of `pollInterval` from the last resolution; each round has a Job of its own,
    // so a failed poll is tried again in the next round.
    let poll = match (&standing, input.poll_interval) {
        (Some((_, Some(at))), Some(interval)) if !interval.is_zero() && !full_commit => {
            let waited = input.now.0.duration_since(at.0).unsigned_abs();
            let rounds = waited.as_nanos() / interval.as_nanos();
            let next_in =
                interval.saturating_sub(Duration::from_nanos((waited.as_nanos() % interval.as_nanos()) as u64));
            Some((rounds, next_in.max(Duration::from_secs(1)), format!("{}/{rounds}", at.0)))
        }
        _ => None,
    };
    if let Some((commit, _)) = &standing
        && poll.as_ref().is_none_or(|(rounds, ..)| *rounds == 0)
    {
        let status = current_standing.cloned().unwrap_or_default();
        return GitStep {
            commit: Some(commit.clone()),
            status,
            delete: all_jobs(),
            recheck_in: poll.map(|(_, next_in, _)| next_in),
            ..Default::default()
        };
    }
    let round = poll.as_ref().map(|(.., round)| round.as_str()).unwrap_or_default();
    let name = resolve_job_name(input.build_name, &short_hash(format!("{key}\n{round}").as_bytes(), 10));
    let previous_commit = standing.as_ref().map(|(c, _)| c.clone());
    let stale: Vec<String> = input.jobs.iter().filter(|j| j.name != name).map(|j| j.name.clone()).collect();
    // While a poll runs, the commit, its Dockerfile and the time it was resolved stay as they were (the
    // time names the round).
    let status = SourceStatus {
        key: Some(key_hash),
        job: Some(name.clone()),
        commit: previous_commit.clone(),
        resolved_at: standing.and_then(|(_, at)| at),
        dockerfile: current_standing.and_then(|r| r.dockerfile.clone()),
        ..base
    };
    let step = |status: SourceStatus| GitStep {
        commit: previous_commit.clone(),
        status,
        delete: stale.clone(),
        recheck_in: poll.as_ref().map(|(_, next_in, _)| *next_in),
        ..Default::default()
    };
    let failed = |message: String| {
        let mut step = step(SourceStatus { message: Some(message.clone()), ..status.clone() });
        // A failed poll keeps the commit it had: the build stands, the status says the check failed.
        if step.commit.is_none() {
            step.failed = Some(message);
        }
        step
    };
    // A full commit's Dockerfile that cannot be read: the build goes on, its base images unpinned.
    let unread = |why: &str| {
        let dockerfile = SourceDockerfile {
            path: path.clone(),
            commit: git.revision.clone(),
            message: Some(format!("cannot read it: {why}")),
            ..Default::default()
        };
        let status =
            SourceStatus { commit: Some(git.revision.clone()), dockerfile: Some(dockerfile), ..status.clone() };
        let mut delete = stale.clone();
        delete.push(name.clone());
        GitStep { commit: Some(git.revision.clone()), status, delete, ..Default::default() }
    };
    let recorded_failure = current.filter(|r| r.job.as_deref() == Some(&name)).and_then(|r| r.message.clone());
    match input.jobs.iter().find(|j| j.name == name) {
        None if recorded_failure.is_some() => failed(recorded_failure.unwrap_or_default()),
        None => GitStep { create: Some(name.clone()), ..step(status.clone()) },
        Some(job) => match &job.state {
            JobState::Running => {
                let doing = match full_commit {
                    true => format!("reading {path} at {}", git.revision),
                    false => format!("resolving {} to a commit", git.revision),
                };
                step(SourceStatus { message: Some(job.problem.clone().unwrap_or(doing)), ..status.clone() })
            }
            JobState::Succeeded { message: Some(message) } => {
                let report = report::parse(message);
                let commit = match full_commit {
                    true => Some(git.revision.clone()),
                    false => commit_in(report.refs, &git.revision),
                };
                let Some(commit) = commit else {
                    return failed(format!(
                        "spec.source.git.revision: no branch or tag named {:?} in {}; use a branch, a tag or a \
                         full 40-character commit",
                        git.revision, git.url
                    ));
                };
                let resolved_at = job.completed_at.clone().or(Some(input.now.clone()));
                let dockerfile = Some(report::recorded(report.dockerfile.as_ref(), &commit, &path));
                let status = SourceStatus { commit: Some(commit.clone()), resolved_at, dockerfile, ..status.clone() };
                let mut delete = stale.clone();
                delete.push(name.clone());
                GitStep { commit: Some(commit), status, delete, ..Default::default() }
            }
            // Its pods went before the output was read: resolve again.
            JobState::Succeeded { message: None } => {
                let mut step = step(status.clone());
                step.delete.push(name.clone());
                step
            }
            JobState::Failed { message, .. } if full_commit => unread(message.trim()),
            JobState::Failed { message, .. } => {
                failed(format!("cannot resolve spec.source.git.revision {:?}: {}", git.revision, message.trim()))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    const OLD: &str = "1111111111111111111111111111111111111111";
    const NEW: &str = "2222222222222222222222222222222222222222";

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    struct World {
        git: GitSource,
        poll: Option<Duration>,
        generation: i64,
        recorded: Option<SourceStatus>,
        jobs: Vec<JobObservation>,
        now: Time,
    }

    impl World {
        fn new() -> World {
            let git = GitSource { url: "https://example.com/blog.git".into(), ..Default::default() };
            World { git, poll: None, generation: 1, recorded: None, jobs: vec![], now: time(1000) }
        }

        fn step(&self) -> GitStep {
            git_step(&ResolveObservation {
                build_name: "blog",
                git: &self.git,
                dockerfile: "Dockerfile",
                poll_interval: self.poll,
                generation: self.generation,
                rebuild_requested_at: None,
                recorded: self.recorded.as_ref(),
                jobs: &self.jobs,
                now: &self.now,
            })
        }

        /// The Job the last step asked for, finished with `refs` as its output; each step's status recorded.
        fn finish(&mut self, refs: &str) -> GitStep {
            let asked = self.step();
            self.recorded = Some(asked.status.clone());
            let name = asked.create.expect("a resolve Job");
            let state = JobState::Succeeded { message: Some(refs.into()) };
            self.jobs =
                vec![JobObservation { name, state, completed_at: Some(self.now.clone()), ..Default::default() }];
            let step = self.step();
            self.recorded = Some(step.status.clone());
            self.jobs.clear();
            step
        }
    }

    #[test]
    fn a_branch_is_resolved_once_and_every_later_pass_builds_that_commit() {
        let mut world = World::new();
        let first = world.step();
        assert_eq!((first.commit.as_ref(), first.failed.as_ref()), (None, None));
        assert!(first.create.as_deref().unwrap().starts_with("blog-resolve-"));
        let resolved = world.finish(&format!("{OLD}\trefs/heads/main\n"));
        assert_eq!(resolved.commit.as_deref(), Some(OLD));
        assert_eq!(resolved.status.commit.as_deref(), Some(OLD));
        // Later passes: no Job, the same commit, even though the branch may have moved meanwhile.
        world.now = time(5000);
        let later = world.step();
        assert_eq!((later.commit.as_deref(), later.create.as_ref()), (Some(OLD), None));
        assert_eq!(later.status, resolved.status, "no status churn");
        // A new generation resolves again.
        world.generation = 2;
        assert!(world.step().create.is_some());
    }

    #[test]
    fn a_poll_resolves_again_on_its_interval_and_keeps_the_old_commit_meanwhile() {
        let mut world = World::new();
        world.poll = Some(Duration::from_secs(60));
        world.finish(&format!("{OLD}\trefs/heads/main\n"));
        world.now = time(1030);
        assert_eq!(world.step().recheck_in, Some(Duration::from_secs(30)));
        world.now = time(1061);
        let due = world.step();
        assert_eq!(due.commit.as_deref(), Some(OLD), "the build keeps its commit while the poll runs");
        assert!(due.create.is_some());
        let moved = world.finish(&format!("{NEW}\trefs/heads/main\n"));
        assert_eq!(moved.commit.as_deref(), Some(NEW));
        // A failed poll keeps the commit and says so.
        world.now = time(1200);
        let name = world.step().create.unwrap();
        world.jobs = vec![JobObservation {
            name,
            state: JobState::Failed { exit_code: Some(128), message: "could not resolve host".into() },
            ..Default::default()
        }];
        let failed = world.step();
        assert_eq!((failed.commit.as_deref(), failed.failed.as_ref()), (Some(NEW), None));
        assert!(failed.status.message.as_deref().unwrap().contains("could not resolve host"));
        assert_eq!(failed.recheck_in, Some(Duration::from_secs(1241 - 1200)), "rounds of 60 s from 1061");
        // The next round tries again, with a Job of its own.
        world.recorded = Some(failed.status.clone());
        world.now = time(1242);
        let retried = world.step();
        assert!(retried.create.is_some() && retried.create != failed.status.job, "{retried:?}");
    }

    #[test]
    fn an_unknown_revision_fails_and_stays_failed_after_its_job_is_gone() {
        let mut world = World::new();
        world.git.revision = "nope".into();
        let step = world.finish(&format!("{OLD}\trefs/heads/main\n"));
        let message = step.failed.clone().unwrap();
        assert!(message.contains("no branch or tag named \"nope\""), "{message}");
        // The Job deleted by its TTL: the failure stands, no new Job.
        let again = world.step();
        assert_eq!((again.failed, again.create), (Some(message), None));
    }

    /// What the resolve Job reports for `commit` after `refs`: `FROM x`, gzipped.
    fn with_dockerfile(refs: &str, commit: &str) -> String {
        format!("{refs}archway-dockerfile {commit} gzip\nH4sIAAAAAAACA3ML8vdVqOACALklUncHAAAA\n")
    }

    #[test]
    fn the_dockerfile_read_at_the_commit_stays_with_it_through_polls() {
        let mut world = World::new();
        world.git.context_dir = "./site".into();
        world.poll = Some(Duration::from_secs(60));
        let resolved = world.finish(&with_dockerfile(&format!("{OLD}\trefs/heads/main\n"), OLD));
        let dockerfile = resolved.status.dockerfile.clone().unwrap();
        assert_eq!((dockerfile.path.as_str(), dockerfile.commit.as_str()), ("site/Dockerfile", OLD));
        assert_eq!(report::text(&resolved.status), Some(Ok("FROM x\n".to_string())));
        // While a poll runs, the old commit keeps its Dockerfile; then the new commit brings its own.
        world.now = time(1061);
        let polling = world.step();
        assert_eq!(polling.status.dockerfile, Some(dockerfile));
        let moved = world.finish(&format!("{NEW}\trefs/heads/main\narchway-dockerfile {NEW} too-large 5000\n"));
        let text = report::text(&moved.status).unwrap().unwrap_err();
        assert!(text.starts_with(&format!("site/Dockerfile at {NEW}: it is too large")), "{text}");
        assert_eq!(moved.commit.as_deref(), Some(NEW), "the build goes on, unpinned");
    }

    #[test]
    fn a_full_commit_waits_only_for_its_dockerfile() {
        let mut world = World::new();
        world.git.revision = OLD.into();
        let first = world.step();
        assert_eq!(first.commit, None, "platforms wait: built before the Dockerfile is read, they would build twice");
        assert!(first.create.is_some());
        let read = world.finish(&with_dockerfile("", OLD));
        assert_eq!(read.commit.as_deref(), Some(OLD));
        assert!(matches!(report::text(&read.status), Some(Ok(_))));
        // Read once: no more Jobs, and no polls (a commit never moves).
        world.poll = Some(Duration::from_secs(1));
        world.now = time(9000);
        let later = world.step();
        assert_eq!((later.commit.as_deref(), later.create, later.status), (Some(OLD), None, read.status));
    }

    #[test]
    fn a_full_commit_whose_dockerfile_cannot_be_read_builds_unpinned() {
        let mut world = World::new();
        world.git.revision = OLD.into();
        let name = world.step().create.unwrap();
        world.jobs = vec![JobObservation {
            name,
            state: JobState::Failed { exit_code: Some(128), message: "not our ref".into() },
            ..Default::default()
        }];
        let step = world.step();
        assert_eq!((step.commit.as_deref(), step.failed), (Some(OLD), None));
        assert_eq!(report::text(&step.status), Some(Err(format!("Dockerfile at {OLD}: cannot read it: not our ref"))));
        world.recorded = Some(step.status.clone());
        world.jobs.clear();
        assert_eq!(world.step().create, None, "not tried again");
    }

    #[test]
    fn a_missing_dockerfile_names_the_field_and_the_path() {
        let mut world = World::new();
        world.git.context_dir = "site".into();
        let step = world.finish(&format!("{OLD}\trefs/heads/main\narchway-dockerfile {OLD} missing\n"));
        assert_eq!(step.commit.as_deref(), Some(OLD));
        let message = report::missing(&step.status, &world.git).unwrap();
        assert!(
            message.starts_with(&format!("spec.source.git: no file site/Dockerfile at commit {OLD} of ")),
            "{message}"
        );
        assert_eq!(report::text(&step.status), None);
    }
}
