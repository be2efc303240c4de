//! The next step of a build, from what was observed: which Jobs to create or delete, and each
//! platform's status. A pure function of plain data (the controller gathers the data and applies).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::inputs::{BuildInputs, job_name};
use super::placement::{EmulationLabels, NodeView, Placed, Unplaceable, cluster_platforms, place};
use crate::api::{AUTO_PLATFORM, BuildMode, MultiArchBuildSpec, PlatformPhase, PlatformStatus};
use crate::platform::{Platform, PlatformError, parse_known};
use crate::registry::parse_digest;

/// What the controller saw of one build Job it owns (and of that Job's pods).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobObservation {
    pub name: String,
    pub mode: Option<BuildMode>,
    pub state: JobState,
    /// Node of the newest pod.
    pub node: Option<String>,
    /// Pods started so far (each retry is a new pod).
    pub attempts: i32,
    pub started_at: Option<Time>,
    pub completed_at: Option<Time>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub enum JobState {
    #[default]
    Running,
    /// Complete; the termination message of the pod that succeeded.
    Succeeded { message: String },
    /// Failed after its retries; what the last failed pod said.
    Failed { exit_code: Option<i32>, message: String },
}

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
    /// Owned Jobs whose inputs are no longer wanted (an older spec).
    pub delete: Vec<String>,
    pub platforms: Vec<PlatformStatus>,
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

    pub fn failed(&self) -> impl Iterator<Item = &PlatformStatus> {
        self.platforms.iter().filter(|p| p.phase == PlatformPhase::Failed)
    }
}

/// The platforms a spec asks for, normalised; `[auto]` means what the usable nodes run.
pub fn requested_platforms(spec: &MultiArchBuildSpec, nodes: &[NodeView]) -> Result<Vec<Platform>, PlatformError> {
    if spec.platforms.iter().any(|p| p == AUTO_PLATFORM) {
        return Ok(cluster_platforms(nodes));
    }
    spec.platforms.iter().map(|p| parse_known(p)).collect()
}

/// Decides, per platform, whether its Job exists, must be created, or waits for a node.
/// `context_fingerprint` identifies the content of a ConfigMap context (see [`BuildInputs`]).
pub fn decide(
    build_name: &str,
    spec: &MultiArchBuildSpec,
    platforms: &[Platform],
    nodes: &[NodeView],
    emulation: &EmulationLabels,
    jobs: &[JobObservation],
    context_fingerprint: Option<&str>,
) -> Decision {
    let mut decision = Decision::default();
    let mut wanted = Vec::new();
    for platform in platforms {
        let inputs = BuildInputs::new(spec, platform, context_fingerprint);
        let name = job_name(build_name, platform, &inputs.hash());
        let status = match jobs.iter().find(|j| j.name == name) {
            Some(job) => observed_status(platform, job),
            None => match place(platform, spec.placement, nodes, emulation) {
                Ok(placed) => {
                    let status = PlatformStatus {
                        platform: platform.to_string(),
                        mode: Some(placed.mode),
                        job: Some(name.clone()),
                        phase: PlatformPhase::Pending,
                        ..Default::default()
                    };
                    decision.create.push(JobToCreate { platform: platform.clone(), inputs, placed });
                    status
                }
                Err(why) => waiting(platform, &why),
            },
        };
        wanted.push(name);
        decision.platforms.push(status);
    }
    decision.delete = jobs.iter().filter(|j| !wanted.contains(&j.name)).map(|j| j.name.clone()).collect();
    decision
}

fn waiting(platform: &Platform, why: &Unplaceable) -> PlatformStatus {
    PlatformStatus {
        platform: platform.to_string(),
        phase: PlatformPhase::Waiting,
        message: Some(why.to_string()),
        ..Default::default()
    }
}

fn observed_status(platform: &Platform, job: &JobObservation) -> PlatformStatus {
    let (phase, digest, message) = match &job.state {
        JobState::Running => (PlatformPhase::Building, None, None),
        JobState::Succeeded { message } => match parse_digest(message) {
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
    PlatformStatus {
        platform: platform.to_string(),
        mode: job.mode,
        node: job.node.clone(),
        job: Some(job.name.clone()),
        phase,
        digest,
        started_at: job.started_at.clone(),
        completed_at: job.completed_at.clone(),
        attempts: job.attempts,
        message,
    }
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
            "the registry's certificate is not trusted: give the operator its CA (--registry-ca-config-map) or \
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
mod tests {
    use super::*;
    use crate::api::{LocalRef, OutputSpec, Placement, Source};

    fn spec(platforms: &[&str]) -> MultiArchBuildSpec {
        MultiArchBuildSpec {
            source: Source { config_map: Some(LocalRef { name: "ctx".into() }), git: None },
            platforms: platforms.iter().map(|p| p.to_string()).collect(),
            output: OutputSpec { image: "registry.example.com/blog".into(), ..Default::default() },
            ..Default::default()
        }
    }

    fn nodes() -> Vec<NodeView> {
        let node = |name: &str, platform: &str, emulates: &[&str]| NodeView {
            name: name.into(),
            platform: Some(platform.parse().unwrap()),
            usable: true,
            emulates: emulates.iter().map(|s| s.to_string()).collect(),
        };
        vec![
            node("x86-1", "linux/amd64", &[]),
            node("pi-1", "linux/arm/v7", &[]),
            node("qemu-1", "linux/amd64", &["arm64"]),
        ]
    }

    fn platforms(spec: &MultiArchBuildSpec) -> Vec<Platform> {
        requested_platforms(spec, &nodes()).unwrap()
    }

    fn first_decision(spec: &MultiArchBuildSpec) -> Decision {
        decide("blog", spec, &platforms(spec), &nodes(), &EmulationLabels::default(), &[], Some("fp"))
    }

    fn observed(name: &str, state: JobState) -> JobObservation {
        JobObservation { name: name.into(), state, attempts: 1, ..Default::default() }
    }

    #[test]
    fn first_pass_creates_one_job_per_platform() {
        let spec = spec(&["linux/amd64", "linux/arm64", "linux/arm/v6"]);
        let decision = first_decision(&spec);
        assert_eq!(decision.create.len(), 3);
        let modes: Vec<_> = decision.create.iter().map(|c| c.placed.mode).collect();
        assert_eq!(modes, [BuildMode::Native, BuildMode::Emulated, BuildMode::Native]);
        assert!(decision.delete.is_empty());
        assert!(decision.platforms.iter().all(|p| p.phase == PlatformPhase::Pending));
        assert_eq!(decision.built(), None);
    }

    #[test]
    fn existing_jobs_are_not_created_again_and_report_their_state() {
        let spec = spec(&["linux/amd64", "linux/arm/v7"]);
        let names: Vec<String> = first_decision(&spec).platforms.iter().map(|p| p.job.clone().unwrap()).collect();
        let digest = format!("sha256:{}", "a".repeat(64));
        let jobs = [
            observed(&names[0], JobState::Succeeded { message: format!("{digest}\n") }),
            observed(&names[1], JobState::Running),
        ];
        let decision =
            decide("blog", &spec, &platforms(&spec), &nodes(), &EmulationLabels::default(), &jobs, Some("fp"));
        assert!(decision.create.is_empty() && decision.delete.is_empty());
        assert_eq!(decision.platforms[0].digest.as_deref(), Some(digest.as_str()));
        assert_eq!(decision.platforms[1].phase, PlatformPhase::Building);
        assert_eq!(decision.built(), None);

        let jobs = [jobs[0].clone(), observed(&names[1], JobState::Succeeded { message: digest.clone() })];
        let decision =
            decide("blog", &spec, &platforms(&spec), &nodes(), &EmulationLabels::default(), &jobs, Some("fp"));
        assert_eq!(decision.built().unwrap().len(), 2);
    }

    #[test]
    fn failures_carry_exit_code_and_log_tail() {
        let spec = spec(&["linux/amd64"]);
        let name = first_decision(&spec).platforms[0].job.clone().unwrap();
        let log = format!("{}error: building at STEP \"RUN false\": exit status 1", "x".repeat(5000));
        let jobs =
            [JobObservation { attempts: 3, ..observed(&name, JobState::Failed { exit_code: Some(1), message: log }) }];
        let decision =
            decide("blog", &spec, &platforms(&spec), &nodes(), &EmulationLabels::default(), &jobs, Some("fp"));
        let status = &decision.platforms[0];
        assert_eq!(status.phase, PlatformPhase::Failed);
        let message = status.message.as_deref().unwrap();
        assert!(message.starts_with("build failed with exit code 1 after 3 attempt(s): "), "{message}");
        assert!(message.ends_with("RUN false\": exit status 1") && message.len() < 1200, "{message}");
        assert_eq!(decision.failed().count(), 1);

        let http =
            "Error: pushing: Get \"https://127.0.0.1:5000/v2/\": http: server gave HTTP response to HTTPS client";
        let jobs = [observed(&name, JobState::Failed { exit_code: Some(125), message: http.into() })];
        let decision =
            decide("blog", &spec, &platforms(&spec), &nodes(), &EmulationLabels::default(), &jobs, Some("fp"));
        let message = decision.platforms[0].message.as_deref().unwrap();
        assert!(
            message.contains("set spec.output.insecureRegistry: true") && message.ends_with("HTTPS client"),
            "{message}"
        );
        let jobs = [observed(&name, JobState::Succeeded { message: "pushed!".into() })];
        let decision =
            decide("blog", &spec, &platforms(&spec), &nodes(), &EmulationLabels::default(), &jobs, Some("fp"));
        assert!(decision.platforms[0].message.as_deref().unwrap().contains("instead of a sha256 digest"));
    }

    #[test]
    fn changed_inputs_replace_old_jobs() {
        let spec_v1 = spec(&["linux/amd64"]);
        let old = first_decision(&spec_v1).platforms[0].job.clone().unwrap();
        let mut spec_v2 = spec_v1.clone();
        spec_v2.build_args.insert("VERSION".into(), "2".into());
        let jobs = [observed(&old, JobState::Running)];
        let decision =
            decide("blog", &spec_v2, &platforms(&spec_v2), &nodes(), &EmulationLabels::default(), &jobs, Some("fp"));
        assert_eq!(decision.delete, [old]);
        assert_eq!(decision.create.len(), 1);
        // A changed ConfigMap context is a changed input too.
        let decision =
            decide("blog", &spec_v1, &platforms(&spec_v1), &nodes(), &EmulationLabels::default(), &jobs, Some("fp2"));
        assert_eq!(decision.delete.len(), 1);
    }

    #[test]
    fn native_without_node_waits_and_says_why() {
        let mut spec = spec(&["linux/arm64"]);
        spec.placement = Placement::Native;
        let decision = first_decision(&spec);
        assert!(decision.create.is_empty());
        assert_eq!(decision.platforms[0].phase, PlatformPhase::Waiting);
        assert!(decision.platforms[0].message.as_deref().unwrap().contains("kubernetes.io/arch=arm64"));
    }

    #[test]
    fn auto_platforms_follow_usable_nodes() {
        let spec = spec(&["auto"]);
        let names: Vec<String> = platforms(&spec).iter().map(|p| p.to_string()).collect();
        assert_eq!(names, ["linux/amd64", "linux/arm/v7"]);
    }
}
