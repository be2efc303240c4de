//! What a build Job and its pods say, read into plain data: how the Job ended, what its builder
//! reported, and, while it waits or after it failed, why, in words a person can act on (the pod
//! refused at creation, unschedulable, an image that cannot be pulled, a missing volume, a failed clone).

use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::job::{BUILDER_LABEL, MODE_LABEL, PLACEMENT_REASON_ANNOTATION};
use crate::api::{BuildMode, BuildTool};

/// What the controller saw of one build Job it owns (and of that Job's pods).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobObservation {
    pub name: String,
    pub mode: Option<BuildMode>,
    /// The builder it runs (its label; older Jobs have none).
    pub tool: Option<BuildTool>,
    /// Why that builder or mode (its annotation).
    pub placement_reason: Option<String>,
    pub state: JobState,
    /// Node of the newest pod.
    pub node: Option<String>,
    /// Pods that reached a node (each retry is a new pod; pods deleted since are not counted).
    pub attempts: i32,
    pub started_at: Option<Time>,
    pub completed_at: Option<Time>,
    /// Since when the Job has had no pod on a node: no pod yet (from the Job's start) or the newest
    /// one not scheduled (from its creation). `None` while a pod is on a node, or once it ended.
    pub unplaced_since: Option<Time>,
    /// Why the newest pod does not run, or why none could be created.
    pub problem: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub enum JobState {
    #[default]
    Running,
    /// Complete; the termination message of the pod that succeeded (`None` when no pod is left to
    /// read it from: drained, garbage-collected).
    Succeeded { message: Option<String> },
    /// Failed after its retries (or its deadline); what the last pod or the Job said.
    Failed { exit_code: Option<i32>, message: String },
}

/// Reads a Job, its pods (any order) and, for a Job that has no pod, the message of its latest
/// `FailedCreate` event (Pod Security, quota: the Job controller reports those only as events).
/// `container` is the one whose termination message is the Job's result.
pub fn observe_job(job: &Job, mut pods: Vec<Pod>, create_failure: Option<String>, container: &str) -> JobObservation {
    let builder_terminated = |pod: &Pod| terminated(pod, container);
    pods.sort_by_key(|p| p.metadata.creation_timestamp.clone());
    let status = job.status.clone().unwrap_or_default();
    let condition = |type_: &str| true_condition(job, type_).cloned();
    let newest = pods.last();
    let problem = match newest {
        Some(pod) => pod_problem(pod),
        None => create_failure.map(|m| format!("the Job cannot create its pod: {m}")),
    };
    // A builder that exited 0 has pushed its image and said its digest: that is the platform's result,
    // a second or more before the Job controller marks the Job Complete (and even if the Job's
    // deadline passes meanwhile).
    let success = pods.iter().rev().filter_map(&builder_terminated).find(|t| t.code == 0);
    let complete = condition("Complete");
    let (state, completed_at) = if success.is_some() || complete.is_some() {
        let finished = success.as_ref().and_then(|t| t.finished_at.clone());
        let completed = status.completion_time.clone().or(complete.and_then(|c| c.last_transition_time)).or(finished);
        (JobState::Succeeded { message: success.map(|t| t.message) }, completed)
    } else if let Some(failed) = condition("Failed") {
        let last = pods.iter().rev().find_map(&builder_terminated);
        let exit_code = last.as_ref().map(|t| t.code);
        let job_says = failed.message.clone().unwrap_or_else(|| failed.reason.clone().unwrap_or_default());
        let message = match (last.map(|t| t.message).filter(|m| !m.trim().is_empty()), &problem) {
            (Some(log), _) => log,
            (None, Some(problem)) => format!("{problem} ({job_says})"),
            (None, None) => job_says,
        };
        (JobState::Failed { exit_code, message }, failed.last_transition_time)
    } else {
        (JobState::Running, None)
    };
    let unplaced_since = match (&state, newest) {
        (JobState::Running, None) => status.start_time.clone().or(job.metadata.creation_timestamp.clone()),
        (JobState::Running, Some(pod)) if node_of(pod).is_none() => pod.metadata.creation_timestamp.clone(),
        _ => None,
    };
    let mode = match job.labels().get(MODE_LABEL).map(String::as_str) {
        Some("native") => Some(BuildMode::Native),
        Some("emulated") => Some(BuildMode::Emulated),
        Some("assembled") => Some(BuildMode::Assembled),
        _ => None,
    };
    let tool = match job.labels().get(BUILDER_LABEL).map(String::as_str) {
        Some("buildah") => Some(BuildTool::Buildah),
        Some("buildkit") => Some(BuildTool::Buildkit),
        Some("assemble") => Some(BuildTool::Assemble),
        _ => None,
    };
    JobObservation {
        name: job.name_any(),
        mode,
        tool,
        placement_reason: job.annotations().get(PLACEMENT_REASON_ANNOTATION).cloned(),
        state,
        node: pods.iter().rev().find_map(node_of),
        attempts: pods.iter().filter(|p| node_of(p).is_some()).count() as i32,
        started_at: status.start_time,
        completed_at,
        unplaced_since,
        problem,
    }
}

/// Whether the Job is Complete or Failed: its pods are done, for good.
pub fn has_ended(job: &Job) -> bool {
    true_condition(job, "Complete").is_some() || true_condition(job, "Failed").is_some()
}

/// How long a Job may be without a pod before the Job controller's `FailedCreate` events are read:
/// its pod normally appears within a second or two, and reading events (a LIST) is costly when a
/// namespace holds thousands of them.
pub const POD_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a running Job without pods has been so for longer than [`POD_GRACE`], so it is worth
/// asking why (a Job planned but not in the caches yet has no creation time, and is not).
pub fn pod_overdue(job: &Job, now: &Time) -> bool {
    let waited = job.metadata.creation_timestamp.as_ref().map(|created| now.0.duration_since(created.0));
    waited.is_some_and(|w| w.is_positive() && w.unsigned_abs() > POD_GRACE) && !has_ended(job)
}

fn true_condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == type_ && c.status == "True")
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.node_name.clone()
}

/// How `container` ended.
struct Ended {
    code: i32,
    /// Its termination message.
    message: String,
    finished_at: Option<Time>,
}

fn terminated(pod: &Pod, container: &str) -> Option<Ended> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == container)?;
    let terminated = status.state.as_ref()?.terminated.as_ref()?;
    let mut message = terminated.message.clone().unwrap_or_default();
    if terminated.reason.as_deref() == Some("OOMKilled") {
        let spec = pod.spec.as_ref().and_then(|s| s.containers.iter().find(|c| c.name == container));
        let limits = spec.and_then(|c| c.resources.as_ref()).and_then(|r| r.limits.as_ref());
        let said = match limits.and_then(|l| l.get("memory")) {
            Some(limit) => format!(
                "OOMKilled: the builder used more than its memory limit ({}); raise \
                 spec.builder.resources.limits.memory",
                limit.0
            ),
            None => "OOMKilled: the node ran out of memory (the builder has no memory limit)".to_string(),
        };
        message = match message.trim() {
            "" => said,
            log => format!("{said}; its log ends: {log}"),
        };
    }
    Some(Ended { code: terminated.exit_code, message, finished_at: terminated.finished_at.clone() })
}

/// Why a pod does not run, or did not get to build: the first of a failed init container (the git
/// clone), a container that cannot start (image pull, missing Secret or ConfigMap), not scheduled, or
/// the pod's own failure reason when its builder never ran.
pub fn pod_problem(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let inits = status.init_container_statuses.iter().flatten();
    for init in inits.clone() {
        if let Some(t) = init.state.as_ref().and_then(|s| s.terminated.as_ref()).filter(|t| t.exit_code != 0) {
            let said = t.message.as_deref().or(t.reason.as_deref()).unwrap_or_default().trim().to_string();
            return Some(format!("init container {:?} failed with exit code {}: {said}", init.name, t.exit_code));
        }
    }
    let waiting = |c: &ContainerStatus| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        let reason = w.reason.as_deref().filter(|r| !matches!(*r, "ContainerCreating" | "PodInitializing"))?;
        Some(format!("container {:?}: {reason}: {}", c.name, w.message.as_deref().unwrap_or_default()))
    };
    if let Some(problem) = inits.chain(status.container_statuses.iter().flatten()).find_map(waiting) {
        return Some(problem);
    }
    let unscheduled = status.conditions.iter().flatten().find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unscheduled {
        let reason = c.reason.as_deref().unwrap_or("Unschedulable");
        return Some(format!("the pod cannot be scheduled ({reason}): {}", c.message.as_deref().unwrap_or_default()));
    }
    let main_ended =
        status.container_statuses.iter().flatten().any(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()));
    if status.phase.as_deref() == Some("Failed") && !main_ended {
        let reason = status.reason.as_deref().unwrap_or("Failed");
        return Some(format!("the pod failed ({reason}): {}", status.message.as_deref().unwrap_or_default()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::job::BUILDER_CONTAINER;
    use serde_json::json;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "blog-linux-amd64-0123456789", "labels": {MODE_LABEL: "native"},
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"startTime": "2026-01-01T00:00:01Z", "conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn a_podless_job_is_asked_about_after_the_grace() {
        let at = |s: &str| Time(s.parse().unwrap());
        let running = job(json!([]));
        assert!(!pod_overdue(&running, &at("2026-01-01T00:00:05Z")), "within the grace");
        assert!(pod_overdue(&running, &at("2026-01-01T00:00:11Z")));
        let failed = job(json!([{"type": "Failed", "status": "True"}]));
        assert!(!pod_overdue(&failed, &at("2026-01-01T00:01:00Z")), "ended");
        let planned = Job::default();
        assert!(!pod_overdue(&planned, &at("2026-01-01T00:01:00Z")), "not created yet");
    }

    fn pod(created: &str, node: Option<&str>, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("p-{created}"), "creationTimestamp": created},
            "spec": {"nodeName": node, "containers": [{"name": BUILDER_CONTAINER}]},
            "status": status,
        }))
        .unwrap()
    }

    fn terminated(code: i32, message: &str) -> serde_json::Value {
        json!({"phase": if code == 0 { "Succeeded" } else { "Failed" }, "containerStatuses": [{
            "name": BUILDER_CONTAINER, "image": "", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "message": message}}}]})
    }

    #[test]
    fn a_complete_job_reports_the_digest_or_nothing_once_its_pods_are_gone() {
        let complete = job(json!([{"type": "Complete", "status": "True"}]));
        let done = pod("2026-01-01T00:00:02Z", Some("x86-1"), terminated(0, "sha256:abc\n"));
        let seen = observe_job(&complete, vec![done], None, BUILDER_CONTAINER);
        assert_eq!(seen.state, JobState::Succeeded { message: Some("sha256:abc\n".into()) });
        assert_eq!((seen.node.as_deref(), seen.attempts, seen.mode), (Some("x86-1"), 1, Some(BuildMode::Native)));
        assert_eq!(
            observe_job(&complete, vec![], None, BUILDER_CONTAINER).state,
            JobState::Succeeded { message: None }
        );
    }

    #[test]
    fn a_builder_that_exited_0_is_the_result_before_the_job_is_complete() {
        let mut done = terminated(0, "sha256:abc");
        done["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = json!("2026-01-01T00:00:09Z");
        let pods = vec![
            pod("2026-01-01T00:00:02Z", Some("x86-1"), terminated(1, "")),
            pod("2026-01-01T00:00:05Z", Some("x86-1"), done),
        ];
        let seen = observe_job(&job(json!([])), pods.clone(), None, BUILDER_CONTAINER);
        assert_eq!(seen.state, JobState::Succeeded { message: Some("sha256:abc".into()) });
        assert_eq!(seen.completed_at, Some(serde_json::from_value(json!("2026-01-01T00:00:09Z")).unwrap()));
        assert_eq!(seen.attempts, 2);
        // The Job's deadline passed after the builder's push: the pushed image is still the result.
        let deadline = job(json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]));
        let seen = observe_job(&deadline, pods, None, BUILDER_CONTAINER);
        assert_eq!(seen.state, JobState::Succeeded { message: Some("sha256:abc".into()) });
    }

    #[test]
    fn a_failed_job_says_what_the_builder_said_else_why_it_never_built() {
        let failed = job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                 "message": "Job has reached the specified backoff limit"}]));
        let log = pod("2026-01-01T00:00:02Z", Some("x86-1"), terminated(1, "RUN false: exit status 1"));
        let seen = observe_job(&failed, vec![log], None, BUILDER_CONTAINER);
        assert_eq!(seen.state, JobState::Failed { exit_code: Some(1), message: "RUN false: exit status 1".into() });

        let no_volume = pod(
            "2026-01-01T00:00:02Z",
            Some("x86-1"),
            json!({"phase": "Failed", "reason": "CreateContainerConfigError", "containerStatuses": [{
                "name": BUILDER_CONTAINER, "image": "", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "CreateContainerConfigError",
                                      "message": "configmap \"registry-ca\" not found"}}}]}),
        );
        let JobState::Failed { exit_code, message } =
            observe_job(&failed, vec![no_volume], None, BUILDER_CONTAINER).state
        else {
            panic!("not failed")
        };
        assert_eq!(exit_code, None);
        assert!(message.contains("configmap \"registry-ca\" not found"), "{message}");
        assert!(message.ends_with("(Job has reached the specified backoff limit)"), "{message}");

        let clone = pod(
            "2026-01-01T00:00:02Z",
            Some("x86-1"),
            json!({"phase": "Failed", "initContainerStatuses": [{
                "name": "clone", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 128, "message": "fatal: repository not found\n"}}}]}),
        );
        let JobState::Failed { message, .. } = observe_job(&failed, vec![clone], None, BUILDER_CONTAINER).state else {
            panic!()
        };
        assert!(message.starts_with("init container \"clone\" failed with exit code 128: fatal: repository"));
    }

    #[test]
    fn an_oom_killed_builder_names_its_memory_limit() {
        let failed = job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]));
        let mut killed = pod("2026-01-01T00:00:02Z", Some("pi-1"), terminated(137, "STEP 3/4: RUN make"));
        killed.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[0]
            .state
            .as_mut()
            .unwrap()
            .terminated
            .as_mut()
            .unwrap()
            .reason = Some("OOMKilled".into());
        let limits = [("memory".to_string(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("384Mi".into()))];
        killed.spec.as_mut().unwrap().containers[0].resources =
            Some(k8s_openapi::api::core::v1::ResourceRequirements {
                limits: Some(limits.into()),
                ..Default::default()
            });
        let JobState::Failed { exit_code, message } = observe_job(&failed, vec![killed], None, BUILDER_CONTAINER).state
        else {
            panic!("not failed")
        };
        assert_eq!(exit_code, Some(137));
        assert_eq!(
            message,
            "OOMKilled: the builder used more than its memory limit (384Mi); raise \
             spec.builder.resources.limits.memory; its log ends: STEP 3/4: RUN make"
        );
    }

    #[test]
    fn a_job_without_a_pod_on_a_node_says_why_and_since_when() {
        let running = job(json!([]));
        let refused = "pods \"x\" is forbidden: violates PodSecurity \"baseline:latest\"";
        let seen = observe_job(&running, vec![], Some(refused.into()), BUILDER_CONTAINER);
        assert_eq!(seen.state, JobState::Running);
        assert!(seen.problem.as_deref().unwrap().contains("violates PodSecurity"), "{seen:?}");
        assert_eq!(seen.unplaced_since, running.status.as_ref().unwrap().start_time);

        let pending = pod(
            "2026-01-01T00:00:05Z",
            None,
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/4 nodes are available: 4 Insufficient memory."}]}),
        );
        let seen = observe_job(&running, vec![pending.clone()], None, BUILDER_CONTAINER);
        assert!(seen.problem.as_deref().unwrap().contains("4 Insufficient memory"), "{seen:?}");
        assert_eq!(seen.unplaced_since, pending.metadata.creation_timestamp);

        let pulling = pod(
            "2026-01-01T00:00:05Z",
            Some("pi-1"),
            json!({"phase": "Pending", "containerStatuses": [{
                "name": BUILDER_CONTAINER, "image": "", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no linux/arm/v7 image"}}}]}),
        );
        let seen = observe_job(&running, vec![pulling], None, BUILDER_CONTAINER);
        assert_eq!(seen.unplaced_since, None, "on a node: the pod's own deadline runs");
        assert_eq!(seen.problem.as_deref(), Some("container \"build\": ImagePullBackOff: no linux/arm/v7 image"));
    }
}
