//! The rollout of a published index to one target workload: which containers move, whether the index
//! covers every node the pods can land on, the affinity and tolerations to set, and the target's state.
//! Pure: the workload, the nodes and the index's platforms in; the fields to apply (or none) and a
//! status out.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeSelectorTerm, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::coverage::{schedulable_platforms, uncovered};
use super::restrict::{restrict, unrestrict};
use super::workload::{Progress, Workload};
use crate::api::{RolloutTarget, TargetState, TargetStatus};
use crate::platform::Platform;
use crate::registry::Repository;

/// How long a StatefulSet or DaemonSet may take to roll out before its target is Stalled
/// (a Deployment says so itself, after its `progressDeadlineSeconds`, 600 by default).
pub const ROLLOUT_DEADLINE: Duration = Duration::from_secs(600);

/// Records on the workload the platforms archway restricted it to, beside the affinity it added, so
/// the next rollout can take exactly that out again (the build's status may be read stale).
pub const RESTRICTED_TO_ANNOTATION: &str = "archway.dev/restricted-to";

/// A workload opts in to archway's rollout by naming the builds allowed to move it here (a
/// comma-separated list of `MultiArchBuild` names of its namespace): creating a build must not be enough
/// to repoint workloads one could not patch oneself.
pub const ROLLOUT_FROM_ANNOTATION: &str = "archway.dev/rollout-from";

/// The fields archway owns on a workload: what its server-side apply sends.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateFields {
    /// Container name and the image it is set to.
    pub images: Vec<(String, String)>,
    /// Required node-selector terms; `None` leaves them to other managers.
    pub node_selector_terms: Option<Vec<NodeSelectorTerm>>,
    /// The whole toleration list (Kubernetes replaces it as one); `None` leaves it alone.
    pub tolerations: Option<Vec<Toleration>>,
    /// The value of [`RESTRICTED_TO_ANNOTATION`], set with `node_selector_terms`.
    pub restricted_to: Option<String>,
}

/// Everything the rollout of one target depends on.
pub struct TargetInput<'a> {
    /// The `MultiArchBuild` rolling out: the workload must name it in [`ROLLOUT_FROM_ANNOTATION`].
    pub build_name: &'a str,
    pub target: &'a RolloutTarget,
    pub workload: Option<&'a Workload>,
    pub repository: &'a Repository,
    /// `repository@sha256:<index digest>`.
    pub image: &'a str,
    /// The platforms of the index's children.
    pub offered: &'a [Platform],
    pub nodes: &'a [Node],
    pub previous: Option<&'a TargetStatus>,
    pub now: &'a Time,
}

pub struct TargetPlan {
    /// Fields to apply when the workload differs from them; `None` when it already has them.
    pub apply: Option<TemplateFields>,
    pub status: TargetStatus,
}

/// The status of a target while there is no published image yet.
pub fn pending(target: &RolloutTarget, previous: Option<&TargetStatus>) -> TargetStatus {
    TargetStatus {
        state: TargetState::Pending,
        message: Some("waiting for the image index to be published".into()),
        ..base_status(target, previous)
    }
}

pub fn plan_target(input: &TargetInput) -> TargetPlan {
    let base = base_status(input.target, input.previous);
    let blocked = |message: String| TargetPlan {
        apply: None,
        status: TargetStatus { state: TargetState::Blocked, message: Some(message), ..base.clone() },
    };
    let target = input.target;
    let Some(workload) = input.workload else {
        return blocked(format!("{:?} {:?} not found in the build's namespace", target.kind, target.name));
    };
    if !opted_in(workload, input.build_name) {
        return blocked(format!(
            "{:?} {:?} does not let this build roll it out: add the annotation {ROLLOUT_FROM_ANNOTATION}: {} to its \
             metadata (a comma-separated list of builds)",
            target.kind, target.name, input.build_name
        ));
    }
    let Some(pod) = workload.template().spec.as_ref() else {
        return blocked(format!("{:?} {:?} has no pod template", target.kind, target.name));
    };
    let containers = match chosen_containers(target, pod, input.repository) {
        Ok(containers) => containers,
        Err(message) => return blocked(message),
    };

    // The template as it would be without archway's earlier restriction, then with today's changes.
    let recorded = workload.metadata().annotations.as_ref().and_then(|a| a.get(RESTRICTED_TO_ANNOTATION));
    let previously_allowed: BTreeSet<Platform> =
        recorded.into_iter().flat_map(|list| list.split(',')).filter_map(|p| p.trim().parse().ok()).collect();
    let current_terms = required_terms(pod);
    let own_terms = unrestrict(&current_terms, &previously_allowed);
    let mut candidate = pod.clone();
    set_required_terms(&mut candidate, &own_terms);
    let (tolerations, kept_note) = remove_tolerations(pod, target, input.nodes, input.offered);
    candidate.tolerations = tolerations.clone();

    let schedulable = schedulable_platforms(&candidate, input.nodes);
    let missing = uncovered(&schedulable, input.offered);
    let (terms, restricted_to) = if missing.is_empty() {
        (own_terms, Vec::new())
    } else if target.restrict_to_covered_architectures {
        let allowed: BTreeSet<Platform> = schedulable.iter().filter(|p| !missing.contains(p)).cloned().collect();
        if allowed.is_empty() {
            return blocked(format!(
                "the image covers none of the nodes the pods can run on ({})",
                join(schedulable.iter())
            ));
        }
        let names = allowed.iter().map(ToString::to_string).collect();
        (restrict(&own_terms, &allowed), names)
    } else {
        return blocked(format!(
            "not rolled out: the pods can land on {} nodes, which the image does not cover; build those platforms \
             or set restrictToCoveredArchitectures",
            join(missing.iter())
        ));
    };

    let restriction = (!restricted_to.is_empty()).then(|| restricted_to.join(","));
    let fields = TemplateFields {
        images: containers.iter().map(|c| (c.clone(), input.image.to_string())).collect(),
        // An empty list is invalid; leaving the field out releases archway's earlier restriction.
        node_selector_terms: (target.restrict_to_covered_architectures && !terms.is_empty()).then(|| terms.clone()),
        tolerations: (!target.remove_arch_tolerations.is_empty()).then(|| tolerations.clone().unwrap_or_default()),
        restricted_to: restriction.clone(),
    };
    let images_set = containers.iter().all(|c| image_of(pod, c) == Some(input.image));
    let up_to_date = images_set
        && (!target.restrict_to_covered_architectures || (terms == current_terms && restriction.as_ref() == recorded))
        && (target.remove_arch_tolerations.is_empty() || tolerations == pod.tolerations);
    // archway applied this image before (its status says so) and the workload says otherwise: something
    // rewrote it after archway's change. Applying again would fight it on every reconcile.
    let applied_before =
        input.previous.is_some_and(|p| p.image.as_deref() == Some(input.image) && p.updated_at.is_some());
    if !images_set && applied_before {
        let live: Vec<String> =
            containers.iter().map(|c| format!("{c}={}", image_of(pod, c).unwrap_or("(none)"))).collect();
        let mut status = blocked(format!(
            "archway set the image to {} and the workload now has {}: something rewrote it afterwards (a mutating \
             admission policy, another controller, a client-side apply); archway does not apply it again. Exempt \
             this workload from that rewrite, or let it keep the digest",
            input.image,
            live.join(", ")
        ))
        .status;
        status.image = Some(input.image.to_string());
        status.containers = containers;
        return TargetPlan { apply: None, status };
    }
    let status = TargetStatus { containers, image: Some(input.image.to_string()), restricted_to, ..base };
    if !up_to_date {
        let message = format!("rolling out {}{kept_note}", input.image);
        let status = TargetStatus {
            state: TargetState::Progressing,
            updated_at: Some(input.now.clone()),
            message: Some(message),
            ..status
        };
        return TargetPlan { apply: Some(fields), status };
    }
    let (state, message) = match workload.progress() {
        Progress::Done => (TargetState::RolledOut, format!("every pod runs {}{kept_note}", input.image)),
        Progress::Stalled(reason) => (TargetState::Stalled, reason),
        Progress::Waiting(how_far) if !workload.reports_stalls() && past_deadline(&status, input.now) => {
            (TargetState::Stalled, format!("no rollout within {}s: {how_far}", ROLLOUT_DEADLINE.as_secs()))
        }
        Progress::Waiting(how_far) => (TargetState::Progressing, how_far),
    };
    TargetPlan { apply: None, status: TargetStatus { state, message: Some(message), ..status } }
}

/// Whether the workload's [`ROLLOUT_FROM_ANNOTATION`] names `build`.
fn opted_in(workload: &Workload, build: &str) -> bool {
    let named = workload.metadata().annotations.as_ref().and_then(|a| a.get(ROLLOUT_FROM_ANNOTATION));
    named.is_some_and(|names| names.split(',').any(|name| name.trim() == build))
}

fn base_status(target: &RolloutTarget, previous: Option<&TargetStatus>) -> TargetStatus {
    TargetStatus {
        kind: target.kind,
        name: target.name.clone(),
        updated_at: previous.and_then(|p| p.updated_at.clone()),
        ..Default::default()
    }
}

/// The containers to move: the named one, or every container whose image is in the output repository.
fn chosen_containers(target: &RolloutTarget, pod: &PodSpec, repository: &Repository) -> Result<Vec<String>, String> {
    let names = || pod.containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
    if let Some(name) = &target.container {
        return match pod.containers.iter().any(|c| &c.name == name) {
            true => Ok(vec![name.clone()]),
            false => Err(format!(
                "spec.rollout.targets: {:?} {:?} has no container {name:?} (it has {})",
                target.kind,
                target.name,
                names()
            )),
        };
    }
    let chosen: Vec<String> = pod
        .containers
        .iter()
        .filter(|c| c.image.as_deref().and_then(|i| Repository::of_image(i).ok()).as_ref() == Some(repository))
        .map(|c| c.name.clone())
        .collect();
    if chosen.is_empty() {
        let images: Vec<String> =
            pod.containers.iter().map(|c| format!("{}={}", c.name, c.image.as_deref().unwrap_or_default())).collect();
        return Err(format!(
            "{:?} {:?} has no container whose image is in {repository} ({}); name one in \
             spec.rollout.targets[].container",
            target.kind,
            target.name,
            images.join(", ")
        ));
    }
    Ok(chosen)
}

/// The tolerations without those named in `removeArchTolerations`, once the index covers every node
/// that carries such a taint; otherwise the tolerations as they are and a note saying why.
fn remove_tolerations(
    pod: &PodSpec,
    target: &RolloutTarget,
    nodes: &[Node],
    offered: &[Platform],
) -> (Option<Vec<Toleration>>, String) {
    let keys = &target.remove_arch_tolerations;
    let named = |t: &Toleration| t.key.as_ref().is_some_and(|k| keys.contains(k));
    if keys.is_empty() || !pod.tolerations.iter().flatten().any(named) {
        return (pod.tolerations.clone(), String::new());
    }
    let tainted: BTreeSet<Platform> = nodes
        .iter()
        .filter(|n| {
            n.spec.as_ref().and_then(|s| s.taints.as_ref()).into_iter().flatten().any(|t| keys.contains(&t.key))
        })
        .filter_map(|n| crate::platform::node_platform(n).ok())
        .collect();
    let missing = uncovered(&tainted, offered);
    if !missing.is_empty() {
        let note = format!("; tolerations kept: the image does not cover the tainted {} nodes", join(missing.iter()));
        return (pod.tolerations.clone(), note);
    }
    let kept: Vec<Toleration> = pod.tolerations.iter().flatten().filter(|t| !named(t)).cloned().collect();
    ((!kept.is_empty()).then_some(kept), String::new())
}

fn required_terms(pod: &PodSpec) -> Vec<NodeSelectorTerm> {
    pod.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|s| s.node_selector_terms.clone())
        .unwrap_or_default()
}

fn set_required_terms(pod: &mut PodSpec, terms: &[NodeSelectorTerm]) {
    let affinity = pod.affinity.get_or_insert_with(Default::default);
    let node = affinity.node_affinity.get_or_insert_with(Default::default);
    node.required_during_scheduling_ignored_during_execution =
        (!terms.is_empty()).then(|| k8s_openapi::api::core::v1::NodeSelector { node_selector_terms: terms.to_vec() });
}

fn image_of<'a>(pod: &'a PodSpec, container: &str) -> Option<&'a str> {
    pod.containers.iter().find(|c| c.name == container).and_then(|c| c.image.as_deref())
}

fn past_deadline(status: &TargetStatus, now: &Time) -> bool {
    let Some(since) = &status.updated_at else { return false };
    now.0.duration_since(since.0).as_secs() >= ROLLOUT_DEADLINE.as_secs() as i64
}

fn join<'a>(platforms: impl Iterator<Item = &'a Platform>) -> String {
    platforms.map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
