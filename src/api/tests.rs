use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::*;

fn full_spec() -> MultiArchBuildSpec {
    MultiArchBuildSpec {
        source: Source {
            git: Some(GitSource {
                url: "https://github.com/asksven/blog.git".into(),
                revision: "v2".into(),
                context_dir: "site".into(),
                secret_ref: Some(LocalRef { name: "git-credentials".into() }),
                poll_interval: Some("10m".into()),
            }),
            config_map: None,
        },
        dockerfile: "docker/Dockerfile.web".into(),
        platforms: vec!["linux/amd64".into(), "linux/arm64".into(), "linux/arm/v6".into()],
        build_args: BTreeMap::from([("VERSION".into(), "1.2".into())]),
        platform_build_args: BTreeMap::from([(
            "linux/arm/v6".into(),
            BTreeMap::from([("BASE_IMAGE".into(), "arm32v6/nginx:1.15-alpine".into())]),
        )]),
        placement: Placement::Native,
        builder: BuilderSpec {
            kind: BuilderKind::Buildkit,
            image: Some("moby/buildkit:rootless".into()),
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([("memory".into(), Quantity("2Gi".into()))])),
                ..Default::default()
            }),
            timeout: "1h30m".into(),
            retries: 5,
        },
        output: OutputSpec {
            image: "registry.example.com/asksven/blog".into(),
            tags: vec!["new".into(), "2024-06".into()],
            push_secret: Some(LocalRef { name: "registry-credentials".into() }),
            platform_tags: true,
            insecure_registry: true,
        },
        cache: Some(CacheSpec { image: "registry.example.com/asksven/blog-cache".into() }),
        publish: PublishSpec { policy: PublishPolicy::AvailablePlatforms, wait_for: "2h".into() },
        triggers: Some(TriggersSpec { base_images: Some(BaseImageTrigger { poll_interval: "10m".into() }) }),
        rollout: Some(RolloutSpec {
            targets: vec![RolloutTarget {
                kind: WorkloadKind::StatefulSet,
                name: "blog".into(),
                container: Some("web".into()),
                restrict_to_covered_architectures: true,
                remove_arch_tolerations: vec!["arch".into()],
            }],
        }),
    }
}

fn full_status() -> MultiArchBuildStatus {
    let time = Time(Timestamp::from_second(1_700_000_000).unwrap_or_default());
    MultiArchBuildStatus {
        observed_generation: Some(3),
        conditions: vec![Condition {
            type_: condition::READY.into(),
            status: "True".into(),
            reason: "Published".into(),
            message: "pushed and verified".into(),
            last_transition_time: time.clone(),
            observed_generation: Some(3),
        }],
        phase: Some(BuildPhase::Ready),
        platform_summary: Some("arm/v7".into()),
        platforms: vec![PlatformStatus {
            platform: "linux/arm/v7".into(),
            mode: Some(BuildMode::Native),
            builder: Some(BuildTool::Buildkit),
            placement_reason: Some(
                "no image for linux/arm/v7 nodes in quay.io/buildah/stable:v1.40 (linux/amd64); built with BuildKit"
                    .into(),
            ),
            node: Some("pi-1".into()),
            job: Some("blog-linux-arm-v7-1a2b3c".into()),
            inputs: Some("1a2b3c4d5e".into()),
            phase: PlatformPhase::Succeeded,
            digest: Some(format!("sha256:{}", "ab".repeat(32))),
            started_at: Some(time.clone()),
            completed_at: Some(time.clone()),
            attempts: 1,
            message: None,
            waiting_since: None,
            base_images: vec![BaseImageStatus {
                image: "arm32v7/busybox".into(),
                digest: Some(format!("sha256:{}", "ef".repeat(32))),
                message: None,
            }],
        }],
        image: Some(format!("registry.example.com/asksven/blog@sha256:{}", "cd".repeat(32))),
        last_handled_rebuild_at: Some("2026-12-05T09:00:00Z".into()),
        source: Some(SourceStatus {
            revision: "v2".into(),
            commit: Some("ab".repeat(20)),
            resolved_at: Some(time.clone()),
            generation: Some(3),
            key: Some("0123456789".into()),
            job: Some("blog-resolve-0123456789".into()),
            message: None,
            dockerfile: Some(SourceDockerfile {
                path: "site/Dockerfile".into(),
                commit: "ab".repeat(20),
                gzip: Some("H4sIAAAAAAACA3ML8vdVqOACALklUncHAAAA".into()),
                missing: false,
                message: None,
            }),
        }),
        base_images: vec![BaseImageStatus {
            image: "busybox:1.36".into(),
            digest: None,
            message: Some("cannot read it: 401 Unauthorized".into()),
        }],
        targets: vec![TargetStatus {
            kind: WorkloadKind::Deployment,
            name: "blog".into(),
            state: TargetState::RolledOut,
            containers: vec!["web".into()],
            image: Some(format!("registry.example.com/asksven/blog@sha256:{}", "cd".repeat(32))),
            updated_at: Some(time),
            restricted_to: vec!["linux/amd64".into()],
            message: None,
        }],
    }
}

#[test]
fn full_resource_round_trips_through_yaml() {
    let mut build = MultiArchBuild::new("blog", full_spec());
    build.status = Some(full_status());
    let yaml = serde_saphyr::to_string(&build).expect("serializes");
    let back: MultiArchBuild = serde_saphyr::from_str(&yaml).expect("deserializes");
    assert_eq!(back, build);
}

#[test]
fn fields_are_camel_case_and_enums_as_users_write_them() {
    let mut build = MultiArchBuild::new("blog", full_spec());
    build.status = Some(full_status());
    let json = serde_json::to_value(&build).expect("serializes");
    assert_eq!(json["apiVersion"], "archway.dev/v1alpha1");
    assert_eq!(json["kind"], "MultiArchBuild");
    assert_eq!(json["spec"]["source"]["git"]["contextDir"], "site");
    assert_eq!(json["spec"]["platformBuildArgs"]["linux/arm/v6"]["BASE_IMAGE"], "arm32v6/nginx:1.15-alpine");
    assert_eq!(json["spec"]["placement"], "native");
    assert_eq!(json["spec"]["builder"]["kind"], "buildkit");
    assert_eq!(json["spec"]["output"]["pushSecret"]["name"], "registry-credentials");
    assert_eq!(json["spec"]["output"]["insecureRegistry"], true);
    assert_eq!(json["spec"]["cache"]["image"], "registry.example.com/asksven/blog-cache");
    assert_eq!(json["spec"]["rollout"]["targets"][0]["kind"], "StatefulSet");
    assert_eq!(json["spec"]["rollout"]["targets"][0]["restrictToCoveredArchitectures"], true);
    assert_eq!(json["status"]["observedGeneration"], 3);
    assert_eq!(json["status"]["phase"], "Ready");
    assert_eq!(json["status"]["platforms"][0]["mode"], "native");
    assert_eq!(json["status"]["platforms"][0]["phase"], "Succeeded");
    assert_eq!(json["status"]["platforms"][0]["startedAt"], "2023-11-14T22:13:20Z");
    assert!(json["status"]["platforms"][0].get("message").is_none(), "None fields are left out");
}

#[test]
fn omitted_fields_take_their_defaults() {
    let spec: MultiArchBuildSpec = serde_saphyr::from_str(
        "source: {git: {url: https://example.com/app.git}}\n\
         platforms: [auto]\n\
         output: {image: registry.example.com/app}\n",
    )
    .expect("minimal spec deserializes");
    let git = spec.source.git.as_ref().expect("git source");
    assert_eq!((git.revision.as_str(), git.context_dir.as_str()), ("main", "."));
    assert_eq!(spec.dockerfile, "Dockerfile");
    assert!(spec.build_args.is_empty() && spec.platform_build_args.is_empty());
    assert_eq!(spec.placement, Placement::Auto);
    assert_eq!(spec.builder, BuilderSpec::default());
    assert_eq!(spec.builder.kind, BuilderKind::Auto);
    assert_eq!((spec.builder.timeout.as_str(), spec.builder.retries), ("30m", 2));
    assert_eq!(spec.output.tags, ["latest"]);
    assert!(!spec.output.platform_tags && !spec.output.insecure_registry);
    assert_eq!(spec.output.push_secret, None);
    assert_eq!(spec.rollout, None);
    assert_eq!(spec.cache, None);
}

#[test]
fn defaults_of_nested_structs_match_serde() {
    let target: RolloutTarget = serde_saphyr::from_str("{kind: DaemonSet, name: agent}").expect("deserializes");
    assert!(!target.restrict_to_covered_architectures && target.remove_arch_tolerations.is_empty());
    assert_eq!(target.container, None);
    let builder: BuilderSpec = serde_saphyr::from_str("{}").expect("deserializes");
    assert_eq!(builder, BuilderSpec::default());
    let output: OutputSpec = serde_saphyr::from_str("{image: r.example.com/x}").expect("deserializes");
    assert_eq!(output, OutputSpec { image: "r.example.com/x".into(), ..OutputSpec::default() });
    let status: PlatformStatus = serde_saphyr::from_str("{platform: linux/amd64}").expect("deserializes");
    assert_eq!((status.phase, status.attempts), (PlatformPhase::Pending, 0));
}

#[test]
fn crd_names_and_columns() {
    let crd = super::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("multiarchbuilds.archway.dev"));
    assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["mab".to_string()][..]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
    let columns: Vec<_> =
        version.additional_printer_columns.iter().flatten().map(|c| (c.name.as_str(), c.json_path.as_str())).collect();
    assert_eq!(
        columns,
        [
            ("Ready", r#".status.conditions[?(@.type=="Ready")].status"#),
            ("Reason", r#".status.conditions[?(@.type=="Ready")].reason"#),
            ("Platforms", ".status.platformSummary"),
            ("Image", ".status.image"),
            ("Age", ".metadata.creationTimestamp"),
            ("Phase", ".status.phase"),
            ("Message", r#".status.conditions[?(@.type=="Ready")].message"#),
        ]
    );
    // An object the operator has not seen reads as not observed, for kstatus.
    let schema = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).unwrap();
    let status = &schema.properties.as_ref().unwrap()["status"];
    assert_eq!(status.default.as_ref().map(|d| &d.0), Some(&serde_json::json!({"observedGeneration": 0})));
}

#[test]
fn platform_enum_follows_the_known_platforms() {
    let yaml = crd_yaml().expect("renders");
    for platform in crate::platform::KNOWN_PLATFORMS.iter().chain([&AUTO_PLATFORM]) {
        assert!(yaml.contains(&format!("- {platform}\n")), "{platform} missing from the CRD's platform enum");
    }
}

#[test]
fn a_build_names_its_context_and_secrets() {
    let mut spec = full_spec();
    assert!(spec.names_secret("git-credentials") && spec.names_secret("registry-credentials"));
    assert!(!spec.names_secret("other") && !spec.names_config_map("git-credentials"));
    spec.source = Source { git: None, config_map: Some(LocalRef { name: "context".into() }) };
    assert!(spec.names_config_map("context") && !spec.names_secret("git-credentials"));
}

#[test]
fn only_unsettled_or_auto_builds_place_on_nodes_and_only_rollouts_cover_them() {
    let build = |phase: Option<BuildPhase>, observed: i64, platforms: &[&str], rollout: bool| {
        let mut spec = full_spec();
        spec.platforms = platforms.iter().map(|p| p.to_string()).collect();
        if !rollout {
            spec.rollout = None;
        }
        let mut build = MultiArchBuild::new("blog", spec);
        build.metadata.generation = Some(2);
        build.status = Some(MultiArchBuildStatus { phase, observed_generation: Some(observed), ..Default::default() });
        build
    };
    let fixed = ["linux/amd64", "linux/arm64"];
    assert!(!build(Some(BuildPhase::Ready), 2, &fixed, false).places_on_nodes());
    assert!(!build(Some(BuildPhase::Failed), 2, &fixed, false).places_on_nodes());
    // Waiting or building platforms, or a spec not yet handled.
    assert!(build(Some(BuildPhase::Building), 2, &fixed, false).places_on_nodes());
    assert!(build(Some(BuildPhase::Pending), 2, &fixed, false).places_on_nodes());
    assert!(build(Some(BuildPhase::Ready), 1, &fixed, false).places_on_nodes());
    assert!(build(None, 0, &fixed, false).places_on_nodes());
    // The index follows the nodes.
    assert!(build(Some(BuildPhase::Ready), 2, &[AUTO_PLATFORM], false).places_on_nodes());
    // The rollout's coverage reads them, settled or not.
    assert!(build(Some(BuildPhase::Ready), 2, &fixed, true).covers_nodes());
    assert!(!build(Some(BuildPhase::Building), 2, &fixed, false).covers_nodes());
}
