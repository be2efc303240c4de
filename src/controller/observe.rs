//! What the controller reads before it decides: the nodes, the build's Jobs and their pods, and a
//! fingerprint of a ConfigMap context.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use sha2::{Digest, Sha256};

use super::error::Error;
use crate::api::{BuildMode, MultiArchBuild};
use crate::plan::decide::{JobObservation, JobState};
use crate::plan::job::{BUILD_LABEL, BUILDER_CONTAINER, MODE_LABEL};
use crate::plan::placement::{EmulationLabels, NodeView};

const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

pub struct Observed {
    pub nodes: Vec<NodeView>,
    /// The nodes as read, for the rollout's coverage check.
    pub node_objects: Vec<Node>,
    pub jobs: Vec<JobObservation>,
    pub context_fingerprint: Option<String>,
}

pub async fn observe(client: &Client, build: &MultiArchBuild, emulation: &EmulationLabels) -> Result<Observed, Error> {
    let namespace = build.namespace().unwrap_or_default();
    let selector = ListParams::default().labels(&format!("{BUILD_LABEL}={}", build.name_any()));
    let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await?;
    let jobs = Api::<Job>::namespaced(client.clone(), &namespace).list(&selector).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace).list(&selector).await?;
    let owner = build.uid();
    let mut pods_by_job: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in pods {
        if let Some(job) = pod.labels().get(JOB_NAME_LABEL).cloned() {
            pods_by_job.entry(job).or_default().push(pod);
        }
    }
    let jobs = jobs
        .into_iter()
        .filter(|job| job.owner_references().iter().any(|o| Some(&o.uid) == owner.as_ref()))
        .map(|job| {
            let pods = pods_by_job.remove(&job.name_any()).unwrap_or_default();
            job_observation(&job, pods)
        })
        .collect();
    require_push_secret(client, build, &namespace).await?;
    Ok(Observed {
        nodes: nodes.iter().map(|node| NodeView::from_node(node, emulation)).collect(),
        node_objects: nodes.items,
        jobs,
        context_fingerprint: context_fingerprint(client, build, &namespace).await?,
    })
}

/// Build pods mount the push secret: without it they would hang, so say so before creating them.
async fn require_push_secret(client: &Client, build: &MultiArchBuild, namespace: &str) -> Result<(), Error> {
    let Some(secret) = &build.spec.output.push_secret else { return Ok(()) };
    match Api::<Secret>::namespaced(client.clone(), namespace).get_metadata_opt(&secret.name).await? {
        Some(_) => Ok(()),
        None => Err(Error::Invalid(format!(
            "spec.output.pushSecret: Secret {:?} not found in namespace {namespace:?}; create it with \
             `kubectl create secret docker-registry {} ...`",
            secret.name, secret.name
        ))),
    }
}

/// A hash of a ConfigMap context's content: editing the ConfigMap is a changed build input.
async fn context_fingerprint(
    client: &Client,
    build: &MultiArchBuild,
    namespace: &str,
) -> Result<Option<String>, Error> {
    let Some(source) = &build.spec.source.config_map else { return Ok(None) };
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), namespace).get_opt(&source.name).await?.ok_or_else(|| {
        Error::Invalid(format!(
            "spec.source.configMap: ConfigMap {:?} not found in namespace {namespace:?}; create it with the build context's files",
            source.name
        ))
    })?;
    let mut hasher = Sha256::new();
    for (key, value) in config_map.data.iter().flatten() {
        hasher.update(format!("{}:{key}\0", key.len()));
        hasher.update(value.as_bytes());
    }
    for (key, value) in config_map.binary_data.iter().flatten() {
        hasher.update(format!("{}:{key}\0", key.len()));
        hasher.update(&value.0);
    }
    Ok(Some(hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()))
}

fn job_observation(job: &Job, mut pods: Vec<Pod>) -> JobObservation {
    pods.sort_by_key(|p| p.metadata.creation_timestamp.clone());
    let status = job.status.clone().unwrap_or_default();
    let condition =
        |type_: &str| status.conditions.iter().flatten().find(|c| c.type_ == type_ && c.status == "True").cloned();
    let terminated_of = |pod: &Pod| {
        pod.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find(|c| c.name == BUILDER_CONTAINER)?
            .state
            .clone()?
            .terminated
    };
    let (state, completed_at) = if let Some(complete) = condition("Complete") {
        let message = pods
            .iter()
            .rev()
            .filter_map(terminated_of)
            .find(|t| t.exit_code == 0)
            .and_then(|t| t.message)
            .unwrap_or_default();
        (JobState::Succeeded { message }, status.completion_time.clone().or(complete.last_transition_time))
    } else if let Some(failed) = condition("Failed") {
        let last = pods.iter().rev().find_map(terminated_of);
        let exit_code = last.as_ref().map(|t| t.exit_code);
        let reason = failed.message.clone().unwrap_or_default();
        let message = last.and_then(|t| t.message).filter(|m| !m.trim().is_empty()).unwrap_or(reason);
        (JobState::Failed { exit_code, message }, failed.last_transition_time)
    } else {
        (JobState::Running, None)
    };
    let mode = match job.labels().get(MODE_LABEL).map(String::as_str) {
        Some("native") => Some(BuildMode::Native),
        Some("emulated") => Some(BuildMode::Emulated),
        _ => None,
    };
    JobObservation {
        name: job.name_any(),
        mode,
        state,
        node: pods.last().and_then(|p| p.spec.as_ref()?.node_name.clone()),
        attempts: pods.len() as i32,
        started_at: status.start_time.clone(),
        completed_at,
    }
}
