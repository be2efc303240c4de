use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSpec, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::api::WorkloadKind;

const REPO: &str = "127.0.0.1:5443/blog";
const IMAGE: &str = "127.0.0.1:5443/blog@sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn time(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn node(name: &str, arch: &str, variant: Option<&str>, taint: Option<&str>) -> Node {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch.to_string()),
    ]);
    if let Some(v) = variant {
        labels.insert("archway.dev/arm-variant".into(), v.into());
    }
    let taints = taint.map(|key| vec![Taint { key: key.into(), effect: "NoSchedule".into(), ..Default::default() }]);
    Node {
        metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels), ..Default::default() },
        spec: Some(NodeSpec { taints, ..Default::default() }),
        status: None,
    }
}

/// The local environment's nodes: x86-1, jetson-1, pi-1 (arm/v7) and qemu-1 (amd64).
fn cluster() -> Vec<Node> {
    vec![
        node("x86-1", "amd64", None, None),
        node("jetson-1", "arm64", None, None),
        node("pi-1", "arm", Some("v7"), None),
        node("qemu-1", "amd64", None, None),
    ]
}

fn platforms(list: &[&str]) -> Vec<Platform> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

/// The blog Deployment: a `web` container of `image`, a sidecar, four replicas, and a status saying
/// whether its controller has rolled out the current template.
fn blog(image: &str, pod: serde_json::Value, done: bool) -> Workload {
    let mut spec = pod;
    spec["containers"] = json!([{"name": "web", "image": image}, {"name": "log", "image": "busybox:1.36"}]);
    let updated = if done { 4 } else { 1 };
    Workload::Deployment(
        serde_json::from_value(json!({
            "metadata": {"name": "blog", "generation": 2, "annotations": {ROLLOUT_FROM_ANNOTATION: "blog"}},
            "spec": {"replicas": 4, "selector": {}, "template": {"spec": spec}},
            "status": {"observedGeneration": 2, "replicas": 4, "updatedReplicas": updated, "availableReplicas": updated},
        }))
        .unwrap(),
    )
}

fn target() -> RolloutTarget {
    RolloutTarget { kind: WorkloadKind::Deployment, name: "blog".into(), ..Default::default() }
}

fn plan(
    target: &RolloutTarget,
    workload: Option<&Workload>,
    offered: &[&str],
    previous: Option<&TargetStatus>,
) -> TargetPlan {
    plan_on(target, workload, offered, previous, &cluster(), 1000)
}

fn plan_on(
    target: &RolloutTarget,
    workload: Option<&Workload>,
    offered: &[&str],
    previous: Option<&TargetStatus>,
    nodes: &[Node],
    now: i64,
) -> TargetPlan {
    let repository: Repository = REPO.parse().unwrap();
    let offered = platforms(offered);
    plan_target(&TargetInput {
        build_name: "blog",
        target,
        workload,
        repository: &repository,
        image: IMAGE,
        offered: &offered,
        nodes,
        previous,
        now: &time(now),
    })
}

/// The workload after archway's apply: the fields set on its pod template.
fn applied(workload: &Workload, fields: &TemplateFields, done: bool) -> Workload {
    let Workload::Deployment(d) = workload else { panic!("a deployment") };
    let mut pod = d.spec.template.spec.clone().unwrap();
    for (name, image) in &fields.images {
        pod.containers.iter_mut().find(|c| &c.name == name).unwrap().image = Some(image.clone());
    }
    if let Some(terms) = &fields.node_selector_terms {
        let mut value = serde_json::to_value(&pod).unwrap();
        value["affinity"] =
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}});
        pod = serde_json::from_value(value).unwrap();
    }
    if let Some(tolerations) = &fields.tolerations {
        pod.tolerations = Some(tolerations.clone());
    }
    let image = pod.containers[0].image.clone().unwrap();
    let mut pod_json = serde_json::to_value(&pod).unwrap();
    pod_json.as_object_mut().unwrap().remove("containers");
    let mut after = blog(&image, pod_json, done);
    let Workload::Deployment(d) = &mut after else { unreachable!() };
    if let Some(restricted_to) = &fields.restricted_to {
        let annotations = d.metadata.annotations.get_or_insert_with(Default::default);
        annotations.insert(RESTRICTED_TO_ANNOTATION.to_string(), restricted_to.clone());
    }
    after
}

const ALL: [&str; 3] = ["linux/amd64", "linux/arm64", "linux/arm/v7"];

#[test]
fn a_covering_index_moves_only_the_containers_of_the_output_repository() {
    let before = blog(&format!("{REPO}:new"), json!({}), true);
    let first = plan(&target(), Some(&before), &ALL, None);
    let fields = first.apply.expect("a patch");
    assert_eq!(fields.images, [("web".to_string(), IMAGE.to_string())]);
    assert_eq!((fields.node_selector_terms.as_ref(), fields.tolerations.as_ref()), (None, None));
    assert_eq!(first.status.state, TargetState::Progressing);
    assert_eq!(first.status.updated_at, Some(time(1000)));

    // Its controller is still replacing pods: nothing to apply, still progressing.
    let rolling = applied(&before, &fields, false);
    let second = plan(&target(), Some(&rolling), &ALL, Some(&first.status));
    assert!(second.apply.is_none());
    assert_eq!(second.status.state, TargetState::Progressing);
    assert_eq!(second.status.message.as_deref(), Some("1 of 4 replicas updated"));

    let done = applied(&before, &fields, true);
    let third = plan(&target(), Some(&done), &ALL, Some(&second.status));
    assert!(third.apply.is_none());
    assert_eq!(third.status.state, TargetState::RolledOut);
    assert_eq!(third.status.updated_at, Some(time(1000)), "the rollout's start is kept");
    assert_eq!(third.status.containers, ["web"]);
}

#[test]
fn a_workload_rewritten_after_archways_change_costs_one_patch_then_says_so() {
    // A mutating policy turns the digest back into a tag (of the same repository, or of a mirror for a
    // target that names its container) on every write.
    let named = RolloutTarget { container: Some("web".into()), ..target() };
    for (target, rewritten) in [(target(), format!("{REPO}:new")), (named, "mirror.example.com/blog:new".into())] {
        let before = blog(&format!("{REPO}:new"), json!({}), true);
        let first = plan(&target, Some(&before), &ALL, None);
        assert!(first.apply.is_some());
        let mutated = blog(&rewritten, json!({}), true);
        let second = plan_on(&target, Some(&mutated), &ALL, Some(&first.status), &cluster(), 1300);
        assert!(second.apply.is_none(), "applied again: {:?}", second.apply);
        assert_eq!(second.status.state, TargetState::Blocked);
        assert_eq!(second.status.updated_at, Some(time(1000)), "archway changed nothing since");
        let message = second.status.message.as_deref().unwrap();
        assert!(message.contains(&format!("web={rewritten}")) && message.contains("rewrote"), "{message}");
        // Stable: the same status again, still no patch.
        let third = plan_on(&target, Some(&mutated), &ALL, Some(&second.status), &cluster(), 1600);
        assert!(third.apply.is_none());
        assert_eq!(third.status, second.status);
    }
}

#[test]
fn an_index_that_misses_a_node_platform_blocks_and_names_it() {
    let before = blog(&format!("{REPO}:new"), json!({}), true);
    let plan = plan(&target(), Some(&before), &["linux/amd64", "linux/arm64"], None);
    assert!(plan.apply.is_none());
    assert_eq!(plan.status.state, TargetState::Blocked);
    let message = plan.status.message.unwrap();
    assert!(message.contains("linux/arm/v7") && message.contains("restrictToCoveredArchitectures"), "{message}");
}

#[test]
fn restricting_adds_an_affinity_that_stays_put_and_is_lifted_when_the_index_covers_more() {
    let restricting = RolloutTarget { restrict_to_covered_architectures: true, ..target() };
    let before = blog(&format!("{REPO}:new"), json!({}), true);
    let first = plan(&restricting, Some(&before), &["linux/amd64", "linux/arm64"], None);
    let fields = first.apply.expect("a patch");
    let terms = fields.node_selector_terms.clone().expect("an affinity");
    assert_eq!(terms.len(), 1);
    let arch = &terms[0].match_expressions.as_ref().unwrap()[0];
    assert_eq!((arch.key.as_str(), arch.operator.as_str()), ("kubernetes.io/arch", "In"));
    assert_eq!(arch.values.as_deref(), Some(&["amd64".to_string(), "arm64".to_string()][..]));
    assert_eq!(first.status.restricted_to, ["linux/amd64", "linux/arm64"]);
    assert_eq!(fields.restricted_to.as_deref(), Some("linux/amd64,linux/arm64"));

    let restricted = applied(&before, &fields, true);
    // Read with a stale status (no earlier target entry), the workload itself says what archway added.
    let again = plan(&restricting, Some(&restricted), &["linux/amd64", "linux/arm64"], None);
    assert!(again.apply.is_none(), "an unchanged index changes nothing");
    assert_eq!(again.status.restricted_to, ["linux/amd64", "linux/arm64"]);
    assert_eq!(again.status.state, TargetState::RolledOut);

    // A later index covers arm/v7 too: archway's affinity goes, nothing else.
    let wider = plan(&restricting, Some(&restricted), &ALL, Some(&again.status));
    let fields = wider.apply.expect("a patch that lifts the restriction");
    assert_eq!((fields.node_selector_terms, fields.restricted_to), (None, None));
    assert!(wider.status.restricted_to.is_empty());
}

#[test]
fn missing_workloads_containers_and_foreign_images_are_blocked_with_the_fix() {
    let blocked = plan(&target(), None, &ALL, None);
    assert_eq!(blocked.status.state, TargetState::Blocked);
    assert_eq!(blocked.status.message.as_deref(), Some("Deployment \"blog\" not found in the build's namespace"));

    let foreign = blog("nginx:1.27", json!({}), true);
    let message = plan(&target(), Some(&foreign), &ALL, None).status.message.unwrap();
    assert!(message.contains("web=nginx:1.27") && message.contains("container"), "{message}");

    let named = RolloutTarget { container: Some("app".into()), ..target() };
    let message = plan(&named, Some(&foreign), &ALL, None).status.message.unwrap();
    assert!(message.contains("no container \"app\" (it has web, log)"), "{message}");

    // A named container is moved whatever image it had.
    let named = RolloutTarget { container: Some("web".into()), ..target() };
    assert!(plan(&named, Some(&foreign), &ALL, None).apply.is_some());
}

#[test]
fn only_a_workload_that_names_the_build_in_its_annotation_is_rolled_out() {
    let with = |annotation: Option<&str>| {
        let mut workload = blog("127.0.0.1:5443/blog:old", json!({}), true);
        let Workload::Deployment(d) = &mut workload else { unreachable!() };
        d.metadata.annotations = annotation.map(|a| [(ROLLOUT_FROM_ANNOTATION.to_string(), a.to_string())].into());
        plan(&target(), Some(&workload), &ALL, None)
    };
    for refused in [None, Some(""), Some("blogger"), Some("other")] {
        let plan = with(refused);
        assert!(plan.apply.is_none(), "{refused:?}");
        assert_eq!(plan.status.state, TargetState::Blocked, "{refused:?}");
        assert_eq!(
            plan.status.message.as_deref(),
            Some(
                "Deployment \"blog\" does not let this build roll it out: add the annotation \
                 archway.dev/rollout-from: blog to its metadata (a comma-separated list of builds)"
            )
        );
    }
    for allowed in ["blog", "other, blog", "blog,other"] {
        assert!(with(Some(allowed)).apply.is_some(), "{allowed}");
    }
}

#[test]
fn arch_tolerations_go_once_the_tainted_nodes_are_covered() {
    let mut nodes = cluster();
    nodes.push(node("zero-1", "arm", Some("v6"), Some("arch")));
    let removing = RolloutTarget { remove_arch_tolerations: vec!["arch".into()], ..target() };
    let tolerant = json!({"tolerations": [
        {"key": "arch", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "gpu", "operator": "Exists"}]});
    let before = blog(&format!("{REPO}:new"), tolerant, true);

    let covering = [ALL.as_slice(), &["linux/arm/v6"]].concat();
    let plan = plan_on(&removing, Some(&before), &covering, None, &nodes, 1);
    let tolerations = plan.apply.expect("a patch").tolerations.expect("tolerations");
    let keys: Vec<_> = tolerations.iter().map(|t| t.key.as_deref().unwrap()).collect();
    assert_eq!(keys, ["gpu"]);

    // No arm/v6 child: the toleration lets pods onto zero-1, so the rollout is blocked and keeps it.
    let plan = plan_on(&removing, Some(&before), &ALL, None, &nodes, 1);
    assert_eq!(plan.status.state, TargetState::Blocked);
    assert!(plan.status.message.unwrap().contains("linux/arm/v6"));
}

#[test]
fn a_daemonset_that_does_not_finish_in_time_is_stalled() {
    let ds = |image: &str| {
        Workload::DaemonSet(
            serde_json::from_value(json!({
                "metadata": {"generation": 1, "annotations": {ROLLOUT_FROM_ANNOTATION: "blog"}},
                "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}},
                "status": {"observedGeneration": 1, "desiredNumberScheduled": 4, "currentNumberScheduled": 4,
                           "numberMisscheduled": 0, "numberReady": 1, "updatedNumberScheduled": 1, "numberAvailable": 1},
            }))
            .unwrap(),
        )
    };
    let daemon = RolloutTarget { kind: WorkloadKind::DaemonSet, ..target() };
    let first = plan_on(&daemon, Some(&ds(&format!("{REPO}:new"))), &ALL, None, &cluster(), 1000);
    assert_eq!(first.status.updated_at, Some(time(1000)));
    let patched = ds(IMAGE);
    let soon = plan_on(&daemon, Some(&patched), &ALL, Some(&first.status), &cluster(), 1300);
    assert_eq!(soon.status.state, TargetState::Progressing);
    let late = plan_on(&daemon, Some(&patched), &ALL, Some(&first.status), &cluster(), 1000 + 601);
    assert_eq!(late.status.state, TargetState::Stalled);
    assert_eq!(late.status.message.as_deref(), Some("no rollout within 600s: 1 of 4 pods updated"));
}
