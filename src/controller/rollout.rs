//! The workload side of a build: read each rollout target, let the planner decide, and apply the
//! fields archway owns on its pod template with server-side apply.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tracing::info;

use super::Context;
use super::error::Error;
use crate::api::{MultiArchBuild, RolloutTarget, TargetState, TargetStatus, WorkloadKind};
use crate::plan::rollout::{RESTRICTED_TO_ANNOTATION, TargetInput, TemplateFields, pending, plan_target};
use crate::plan::validate::ValidBuild;
use crate::platform::Platform;

/// The field manager of archway's workload patches; a GitOps tool's own fields stay its own.
pub const ROLLOUT_FIELD_MANAGER: &str = "archway-rollout";

/// The published image and what it was built for.
pub struct Published<'a> {
    /// `repository@sha256:<index digest>`.
    pub image: &'a str,
    pub platforms: &'a [Platform],
}

/// Moves every target to the published image (or reports them Pending when there is none yet).
pub async fn roll_out(
    ctx: &Context,
    build: &MultiArchBuild,
    valid: &ValidBuild,
    published: Option<Published<'_>>,
    nodes: &[Arc<Node>],
    now: &Time,
) -> Result<Vec<TargetStatus>, Error> {
    let Some(published) = published else {
        return Ok(pending_targets(build));
    };
    // Cloned here only: most builds roll out nothing, and a reconcile should not copy every node.
    let nodes: Vec<Node> = match targets(build).is_empty() {
        true => Vec::new(),
        false => nodes.iter().map(|node| Node::clone(node)).collect(),
    };
    let namespace = build.namespace().unwrap_or_default();
    let mut statuses = Vec::new();
    for target in targets(build) {
        let key = (target.kind, namespace.clone(), target.name.clone());
        let workload = ctx.caches.workload(&ctx.client, &key).await?;
        let previous = previous(build, target);
        let plan = plan_target(&TargetInput {
            build_name: &build.name_any(),
            target,
            workload: workload.as_ref(),
            repository: &valid.repository,
            image: published.image,
            offered: published.platforms,
            nodes: &nodes,
            previous: previous.as_ref(),
            now,
        });
        let mut status = plan.status;
        if let Some(fields) = &plan.apply {
            ctx.fence.check().await?;
            match apply(&ctx.client, &namespace, target, fields).await {
                Ok(()) => info!(kind = ?target.kind, name = target.name, image = published.image, "rolling out"),
                // The API refused the change (the workload was deleted, or is invalid with it): say so.
                Err(kube::Error::Api(e)) if (400..500).contains(&e.code) && e.code != 409 && e.code != 429 => {
                    status.state = TargetState::Blocked;
                    status.message = Some(format!("cannot update {:?} {:?}: {}", target.kind, target.name, e.message));
                    // Not moved to it: the next reconcile tries again rather than taking it as applied.
                    status.image = None;
                    status.updated_at = previous.as_ref().and_then(|p| p.updated_at.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
        statuses.push(status);
    }
    Ok(statuses)
}

/// Every target waiting for an image: before the first publish, or while a newer spec builds.
pub fn pending_targets(build: &MultiArchBuild) -> Vec<TargetStatus> {
    targets(build).iter().map(|t| pending(t, previous(build, t).as_ref())).collect()
}

fn targets(build: &MultiArchBuild) -> &[RolloutTarget] {
    build.spec.rollout.as_ref().map(|r| r.targets.as_slice()).unwrap_or_default()
}

fn previous(build: &MultiArchBuild, target: &RolloutTarget) -> Option<TargetStatus> {
    build.status.as_ref()?.targets.iter().find(|s| s.kind == target.kind && s.name == target.name).cloned()
}

async fn apply(
    client: &Client,
    namespace: &str,
    target: &RolloutTarget,
    fields: &TemplateFields,
) -> Result<(), kube::Error> {
    let body = apply_body(target, fields);
    // Forced: archway takes the image (and, when asked, the affinity and tolerations) from whoever set
    // them; every other field keeps its manager.
    let params = PatchParams::apply(ROLLOUT_FIELD_MANAGER).force();
    let client = client.clone();
    let patch = Patch::Apply(&body);
    match target.kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client, namespace).patch(&target.name, &params, &patch).await?;
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client, namespace).patch(&target.name, &params, &patch).await?;
        }
        WorkloadKind::DaemonSet => {
            Api::<DaemonSet>::namespaced(client, namespace).patch(&target.name, &params, &patch).await?;
        }
    }
    Ok(())
}

/// The apply configuration: only the fields archway owns.
fn apply_body(target: &RolloutTarget, fields: &TemplateFields) -> Value {
    let containers: Vec<Value> =
        fields.images.iter().map(|(name, image)| json!({"name": name, "image": image})).collect();
    let mut pod = json!({ "containers": containers });
    if let Some(terms) = &fields.node_selector_terms {
        pod["affinity"] =
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}});
    }
    if let Some(tolerations) = &fields.tolerations {
        pod["tolerations"] = json!(tolerations);
    }
    let mut metadata = json!({"name": target.name});
    if let Some(restricted_to) = &fields.restricted_to {
        metadata["annotations"] = json!({ RESTRICTED_TO_ANNOTATION: restricted_to });
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": format!("{:?}", target.kind),
        "metadata": metadata,
        "spec": {"template": {"spec": pod}},
    })
}
