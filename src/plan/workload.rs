//! A rollout target as the planner sees it, whatever its kind: its pod template, and how far its own
//! controller has got with a rollout, by the rules `kubectl rollout status` applies to each kind.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::WorkloadKind;

#[derive(Clone, Debug)]
pub enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    DaemonSet(DaemonSet),
}

/// How far a workload's controller has got with its current pod template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every pod runs the current template and is available.
    Done,
    /// Still replacing pods; says how far it is.
    Waiting(String),
    /// The workload's controller gave up (a Deployment past its `progressDeadlineSeconds`).
    Stalled(String),
}

impl Workload {
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Workload::Deployment(_) => WorkloadKind::Deployment,
            Workload::StatefulSet(_) => WorkloadKind::StatefulSet,
            Workload::DaemonSet(_) => WorkloadKind::DaemonSet,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Workload::Deployment(d) => &d.metadata,
            Workload::StatefulSet(s) => &s.metadata,
            Workload::DaemonSet(d) => &d.metadata,
        }
    }

    pub fn template(&self) -> &PodTemplateSpec {
        match self {
            Workload::Deployment(d) => &d.spec.template,
            Workload::StatefulSet(s) => &s.spec.template,
            Workload::DaemonSet(d) => &d.spec.template,
        }
    }

    /// Whether a stall is reported by the workload itself (a Deployment's Progressing condition), so
    /// archway needs no deadline of its own.
    pub fn reports_stalls(&self) -> bool {
        matches!(self, Workload::Deployment(_))
    }

    pub fn progress(&self) -> Progress {
        match self {
            Workload::Deployment(d) => deployment_progress(d),
            Workload::StatefulSet(s) => statefulset_progress(s),
            Workload::DaemonSet(d) => daemonset_progress(d),
        }
    }
}

fn not_observed(generation: Option<i64>, observed: Option<i64>) -> Option<Progress> {
    (observed.unwrap_or(0) < generation.unwrap_or(0))
        .then(|| Progress::Waiting("waiting for the workload's controller to see the new template".into()))
}

fn deployment_progress(d: &Deployment) -> Progress {
    let status = d.status.clone().unwrap_or_default();
    if let Some(waiting) = not_observed(d.metadata.generation, status.observed_generation) {
        return waiting;
    }
    let stalled = status.conditions.iter().flatten().find(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.status.as_deref() == Some("False")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(c) = stalled {
        return Progress::Stalled(format!("ProgressDeadlineExceeded: {}", c.message.as_deref().unwrap_or_default()));
    }
    let desired = d.spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        Progress::Waiting(format!("{updated} of {desired} replicas updated"))
    } else if total > updated {
        Progress::Waiting(format!("{} old replicas are pending termination", total - updated))
    } else if available < updated {
        Progress::Waiting(format!("{available} of {updated} updated replicas available"))
    } else {
        Progress::Done
    }
}

fn statefulset_progress(s: &StatefulSet) -> Progress {
    let status = s.status.clone().unwrap_or_default();
    if let Some(waiting) = not_observed(s.metadata.generation, status.observed_generation) {
        return waiting;
    }
    let strategy = s.spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref() == Some("OnDelete") {
        return Progress::Waiting("updateStrategy is OnDelete: delete the pods to roll them out".into());
    }
    let desired = s.spec.replicas.unwrap_or(1);
    let partition = strategy.rolling_update.and_then(|r| r.partition).unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if ready < desired {
        Progress::Waiting(format!("{ready} of {desired} replicas ready"))
    } else if partition > 0 {
        let want = desired.saturating_sub(partition).max(0);
        if updated < want {
            Progress::Waiting(format!("{updated} of {want} replicas above the partition updated"))
        } else {
            Progress::Done
        }
    } else if status.update_revision.is_some() && status.update_revision != status.current_revision {
        Progress::Waiting(format!("{updated} of {desired} replicas updated"))
    } else {
        Progress::Done
    }
}

fn daemonset_progress(d: &DaemonSet) -> Progress {
    let status = d.status.clone().unwrap_or_default();
    if let Some(waiting) = not_observed(d.metadata.generation, status.observed_generation) {
        return waiting;
    }
    let strategy = d.spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref());
    if strategy == Some("OnDelete") {
        return Progress::Waiting("updateStrategy is OnDelete: delete the pods to roll them out".into());
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let available = status.number_available.unwrap_or(0);
    if updated < desired {
        Progress::Waiting(format!("{updated} of {desired} pods updated"))
    } else if available < desired {
        Progress::Waiting(format!("{available} of {desired} updated pods available"))
    } else {
        Progress::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(value: serde_json::Value) -> Workload {
        Workload::Deployment(serde_json::from_value(value).unwrap())
    }

    #[test]
    fn a_deployment_is_done_when_every_replica_is_updated_and_available() {
        let base = |status: serde_json::Value| {
            deployment(
                json!({"metadata": {"generation": 2}, "spec": {"replicas": 4, "selector": {}, "template": {}}, "status": status}),
            )
        };
        let waiting = |w: Workload| matches!(w.progress(), Progress::Waiting(_));
        assert!(waiting(base(
            json!({"observedGeneration": 1, "replicas": 4, "updatedReplicas": 4, "availableReplicas": 4})
        )));
        assert!(waiting(base(
            json!({"observedGeneration": 2, "replicas": 5, "updatedReplicas": 3, "availableReplicas": 4})
        )));
        assert!(waiting(base(
            json!({"observedGeneration": 2, "replicas": 5, "updatedReplicas": 4, "availableReplicas": 4})
        )));
        assert!(waiting(base(
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 4, "availableReplicas": 3})
        )));
        let done = base(json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 4, "availableReplicas": 4}));
        assert_eq!(done.progress(), Progress::Done);
        let stalled = base(json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": "ReplicaSet \"blog-5d\" has timed out progressing."}]}));
        assert_eq!(
            stalled.progress(),
            Progress::Stalled("ProgressDeadlineExceeded: ReplicaSet \"blog-5d\" has timed out progressing.".into())
        );
    }

    #[test]
    fn statefulsets_follow_revisions_and_partitions() {
        let sts = |spec: serde_json::Value, status: serde_json::Value| {
            let mut spec = spec;
            spec["selector"] = json!({});
            spec["template"] = json!({});
            spec["serviceName"] = json!("s");
            Workload::StatefulSet(
                serde_json::from_value(json!({"metadata": {"generation": 1}, "spec": spec, "status": status})).unwrap(),
            )
        };
        let rolling = sts(
            json!({"replicas": 3}),
            json!({"observedGeneration": 1, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 1,
                   "currentRevision": "a", "updateRevision": "b"}),
        );
        assert_eq!(rolling.progress(), Progress::Waiting("1 of 3 replicas updated".into()));
        let done = sts(
            json!({"replicas": 3}),
            json!({"observedGeneration": 1, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 3,
                   "currentRevision": "b", "updateRevision": "b"}),
        );
        assert_eq!(done.progress(), Progress::Done);
        let partitioned = sts(
            json!({"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}),
            json!({"observedGeneration": 1, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 1,
                   "currentRevision": "a", "updateRevision": "b"}),
        );
        assert_eq!(partitioned.progress(), Progress::Done);
        let on_delete =
            sts(json!({"replicas": 1, "updateStrategy": {"type": "OnDelete"}}), json!({"observedGeneration": 1}));
        assert!(matches!(on_delete.progress(), Progress::Waiting(m) if m.contains("OnDelete")));
    }

    #[test]
    fn daemonsets_count_scheduled_pods() {
        let ds = |status: serde_json::Value| {
            Workload::DaemonSet(
                serde_json::from_value(json!({"metadata": {"generation": 3},
                    "spec": {"selector": {}, "template": {}}, "status": status}))
                .unwrap(),
            )
        };
        let status = |updated: i32, available: i32| {
            json!({"observedGeneration": 3, "desiredNumberScheduled": 4, "currentNumberScheduled": 4,
                   "numberMisscheduled": 0, "numberReady": available, "updatedNumberScheduled": updated,
                   "numberAvailable": available})
        };
        assert_eq!(ds(status(2, 4)).progress(), Progress::Waiting("2 of 4 pods updated".into()));
        assert_eq!(ds(status(4, 3)).progress(), Progress::Waiting("3 of 4 updated pods available".into()));
        assert_eq!(ds(status(4, 4)).progress(), Progress::Done);
    }
}
