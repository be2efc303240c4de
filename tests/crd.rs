//! The generated CRD: fresh on disk, its CEL rules compile and are bounded for the apiserver's cost
//! budget, and the examples pass or fail admission as their comments say. Admission is approximated
//! locally (kube's client-side CEL evaluator plus the few OpenAPI checks our schema uses); the
//! end-to-end tests apply the same files to a real apiserver.

use std::path::{Path, PathBuf};

use archway::api::{self, MultiArchBuild, MultiArchBuildStatus, Placement};
use kube::core::cel::{CompiledSchema, Validator, apply_defaults, compile_schema, estimate_rule_cost};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn schema() -> Value {
    let crd = archway::api::crd();
    let schema = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema.expect("the CRD has a schema")).expect("the schema serializes")
}

/// The copy of the CRD that `kubectl apply -k deploy/` installs (kustomize loads nothing outside
/// deploy/, so it cannot name crds/ directly).
const DEPLOY_CRD_PATH: &str = "deploy/base/crd.yaml";
/// The copy Helm installs from the chart's crds/ (Helm loads nothing outside the chart).
const CHART_CRD_PATH: &str = "charts/archway/crds/multiarchbuild.yaml";

#[test]
fn crds_are_fresh() {
    let generated = api::crd_yaml().expect("the CRD renders as YAML");
    for path in [api::CRD_PATH, DEPLOY_CRD_PATH, CHART_CRD_PATH] {
        let on_disk = std::fs::read_to_string(repo().join(path)).unwrap_or_default();
        assert!(generated == on_disk, "{path} is stale: run `make crds`");
    }
}

#[test]
fn deploy_kustomization_lists_the_crd() {
    let kustomization = yaml_object(&repo().join("deploy/base/kustomization.yaml"));
    let resources = kustomization["resources"].as_array().expect("deploy/base/kustomization.yaml has resources");
    assert!(resources.contains(&json!("crd.yaml")), "deploy/base/kustomization.yaml does not list crd.yaml");
}

#[test]
fn cel_rules_compile_and_are_bounded() {
    let schema = schema();
    let mut problems = Vec::new();
    check_rules(&compile_schema(&schema), "", &mut problems);
    check_bounds(&schema, "", &mut problems);
    assert!(problems.is_empty(), "CEL rules in the CRD have problems:\n{}", problems.join("\n"));
}

/// Every rule compiles, and a rough cost estimate stays within the apiserver's per-rule budget.
fn check_rules(node: &CompiledSchema, path: &str, problems: &mut Vec<String>) {
    for err in node.compilation_errors() {
        problems.push(format!("{path}: {err}"));
    }
    for rule in node.validations.iter().flatten() {
        for warning in estimate_rule_cost(&rule.rule.rule, node) {
            problems.push(format!("{path}: {}", warning.message));
        }
    }
    for (name, child) in &node.properties {
        check_rules(child, &join(path, name), problems);
    }
    if let Some(items) = &node.items {
        check_rules(items, &format!("{path}[*]"), problems);
    }
    if let Some(values) = &node.additional_properties {
        check_rules(values, &format!("{path}[*]"), problems);
    }
}

/// The apiserver estimates a rule's cost from the sizes the schema allows: a node that carries rules
/// must bound its strings, lists and maps, or the CRD is rejected for exceeding the budget.
fn check_bounds(node: &Value, path: &str, problems: &mut Vec<String>) {
    if node.get("x-kubernetes-validations").is_some() {
        let bound = match node.get("type").and_then(Value::as_str) {
            Some("string") => Some("maxLength"),
            Some("array") => Some("maxItems"),
            Some("object") if node.get("additionalProperties").is_some() => Some("maxProperties"),
            _ => None,
        };
        if let Some(bound) = bound.filter(|b| node.get(*b).is_none()) {
            problems.push(format!("{path} has CEL rules but no {bound}"));
        }
    }
    for (name, child) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
        check_bounds(child, &join(path, name), problems);
    }
    if let Some(items) = node.get("items") {
        check_bounds(items, &format!("{path}[*]"), problems);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        check_bounds(values, &format!("{path}[*]"), problems);
    }
}

/// What the apiserver would say about `object`, approximately: the OpenAPI checks that this schema
/// uses (required, enum, pattern, lengths, ranges, set semantics) and then every CEL rule, both on
/// the defaulted object.
fn admission_errors(schema: &Value, object: &Value) -> Vec<String> {
    let object = apply_defaults(schema, object);
    let mut errors = Vec::new();
    openapi_errors(schema, &object, "", &mut errors);
    if let Err(cel) = Validator::new().validate(schema, &object, None) {
        errors.extend(cel.iter().map(|e| e.to_string()));
    }
    errors
}

fn openapi_errors(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let int = |key: &str| schema.get(key).and_then(Value::as_u64).map(|n| n as usize);
    let num = |key: &str| schema.get(key).and_then(Value::as_f64);
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: Unsupported value: {value}"));
    }
    match value {
        Value::Object(fields) => {
            for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if let Some(name) = required.as_str().filter(|n| !fields.contains_key(*n)) {
                    errors.push(format!("{}: Required value", join(path, name)));
                }
            }
            if int("maxProperties").is_some_and(|max| fields.len() > max) {
                errors.push(format!("{path}: Too many: {} properties", fields.len()));
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let values = schema.get("additionalProperties").filter(|v| v.is_object());
            for (name, child) in fields {
                if let Some(sub) = properties.and_then(|p| p.get(name)) {
                    openapi_errors(sub, child, &join(path, name), errors);
                } else if let Some(sub) = values {
                    openapi_errors(sub, child, &format!("{path}[{name}]"), errors);
                }
            }
        }
        Value::Array(items) => {
            if int("minItems").is_some_and(|min| items.len() < min) {
                errors.push(format!("{path}: Invalid value: must have at least {min:?} items", min = int("minItems")));
            }
            if int("maxItems").is_some_and(|max| items.len() > max) {
                errors.push(format!("{path}: Too many: {} items", items.len()));
            }
            let set = schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set");
            for (i, item) in items.iter().enumerate() {
                if set && items[..i].contains(item) {
                    errors.push(format!("{path}[{i}]: Duplicate value: {item}"));
                }
                if let Some(sub) = schema.get("items") {
                    openapi_errors(sub, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count();
            if int("minLength").is_some_and(|min| len < min) || int("maxLength").is_some_and(|max| len > max) {
                errors.push(format!("{path}: Invalid value: {s:?}: length out of bounds"));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
                && !matches_pattern(pattern, value)
            {
                errors.push(format!("{path}: Invalid value: {s:?}: should match '{pattern}'"));
            }
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or(f64::NAN);
            if num("minimum").is_some_and(|min| n < min) || num("maximum").is_some_and(|max| n > max) {
                errors.push(format!("{path}: Invalid value: {n}: out of range"));
            }
        }
        _ => {}
    }
}

/// OpenAPI patterns are RE2, like CEL's `matches`, so the CEL evaluator checks them.
fn matches_pattern(pattern: &str, value: &Value) -> bool {
    assert!(!pattern.contains('\''), "pattern {pattern} cannot be quoted in CEL");
    let probe = json!({"type": "string", "x-kubernetes-validations": [{"rule": format!("self.matches('{pattern}')")}]});
    Validator::new().validate(&probe, value, None).is_ok()
}

/// `spec` + `output` -> `spec.output`, as the apiserver writes field paths.
fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_string() } else { format!("{path}.{name}") }
}

fn yaml_object(path: &Path) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

#[test]
fn blog_example_is_admitted() {
    let path = repo().join("examples/blog/multiarchbuild.yaml");
    let object = yaml_object(&path);
    let errors = admission_errors(&schema(), &object);
    assert!(errors.is_empty(), "{} would be rejected:\n{}", path.display(), errors.join("\n"));

    let build: MultiArchBuild = serde_json::from_value(object).expect("the example deserializes");
    let spec = &build.spec;
    assert_eq!(spec.platforms, ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"]);
    assert_eq!(spec.source.config_map.as_ref().map(|c| c.name.as_str()), Some("blog-context"));
    assert_eq!(spec.output.tags, ["new"]);
    assert_eq!(spec.placement, Placement::Auto);
    assert!(spec.build_args["BASE_IMAGE"].ends_with("/library/busybox:latest"), "{:?}", spec.build_args);
}

#[test]
fn blog_static_example_is_admitted() {
    let path = repo().join("examples/blog-static/multiarchbuild.yaml");
    let errors = admission_errors(&schema(), &yaml_object(&path));
    assert!(errors.is_empty(), "{} would be rejected:\n{}", path.display(), errors.join("\n"));
}

#[test]
fn invalid_examples_are_rejected_naming_the_field() {
    let schema = schema();
    let dir = repo().join("examples/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "expected the invalid examples in {}", dir.display());

    let mut failures = Vec::new();
    for file in &files {
        let text = read(file);
        let Some(field) = text.lines().find_map(|l| l.strip_prefix("# expect-field: ")) else {
            failures.push(format!("{}: no `# expect-field: ` comment", file.display()));
            continue;
        };
        let errors = admission_errors(&schema, &yaml_object(file));
        let named = |e: &String| e.starts_with(field) || e.contains(&format!(" {field}"));
        if errors.is_empty() || !errors.iter().all(named) {
            failures.push(format!("{}: expected errors naming {field}, got {errors:#?}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn serde_defaults_match_the_schema_defaults() {
    // What the apiserver stores for a minimal object must read back as what serde fills in.
    let minimal = json!({
        "apiVersion": "archway.dev/v1alpha1",
        "kind": "MultiArchBuild",
        "metadata": {"name": "minimal"},
        "spec": {
            "source": {"git": {"url": "https://example.com/app.git"}},
            "platforms": ["linux/amd64"],
            "output": {"image": "registry.example.com/app"},
            "rollout": {"targets": [{"kind": "Deployment", "name": "app"}]}
        }
    });
    let by_serde: MultiArchBuild = serde_json::from_value(minimal.clone()).expect("minimal deserializes");
    let by_apiserver: MultiArchBuild =
        serde_json::from_value(apply_defaults(&schema(), &minimal)).expect("defaulted deserializes");
    assert_eq!((&by_serde.metadata, &by_serde.spec), (&by_apiserver.metadata, &by_apiserver.spec));
    // The status alone differs, on purpose: an object the operator has not seen reads observedGeneration
    // 0 (for kstatus), where a status written by the operator is read by serde as it is.
    let unobserved = MultiArchBuildStatus { observed_generation: Some(0), ..Default::default() };
    assert_eq!((by_serde.status, by_apiserver.status), (None, Some(unobserved)));
}

/// Sets `value` at a JSON pointer such as `/spec/builder/timeout`, creating objects on the way
/// (an existing array is indexed by number).
fn set(object: &mut Value, pointer: &str, value: Value) {
    let mut node = object;
    for key in pointer.trim_start_matches('/').split('/') {
        node = match node {
            Value::Array(items) => {
                let index: usize = key.parse().expect("a numeric index into an array");
                &mut items[index]
            }
            other => {
                if !other.is_object() {
                    *other = json!({});
                }
                let Value::Object(fields) = other else { unreachable!() };
                fields.entry(key.to_string()).or_insert(Value::Null)
            }
        };
    }
    *node = value;
}

#[test]
fn rules_accept_and_reject_single_fields() {
    let schema = schema();
    let blog = yaml_object(&repo().join("examples/blog/multiarchbuild.yaml"));
    // (pointer, value, None if admitted, else the field the errors must name)
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        ("/spec/output/image", json!("127.0.0.1:5000/asksven/blog"), None),
        ("/spec/output/image", json!("localhost:5000/blog"), None),
        ("/spec/output/image", json!("asksven/blog"), None),
        ("/spec/output/image", json!("registry.example.com/a/b-c/d_e.f"), None),
        ("/spec/output/image", json!("localhost:5000/blog:1.0"), Some("spec.output.image")),
        ("/spec/output/image", json!("registry.example.com/Blog"), Some("spec.output.image")),
        ("/spec/output/image", json!("registry.example.com/blog "), Some("spec.output.image")),
        ("/spec/output/image", json!(""), Some("spec.output.image")),
        ("/spec/output/tags", json!(["v1.0", "_x", "latest"]), None),
        ("/spec/output/tags", json!([]), Some("spec.output.tags")),
        ("/spec/output/tags", json!(["a b"]), Some("spec.output.tags[0]")),
        ("/spec/output/tags", json!(["x".repeat(129)]), Some("spec.output.tags[0]")),
        ("/spec/builder/timeout", json!("90s"), None),
        ("/spec/builder/timeout", json!("1h30m"), None),
        ("/spec/builder/timeout", json!("-5m"), Some("spec.builder.timeout")),
        ("/spec/builder/timeout", json!("soon"), Some("spec.builder.timeout")),
        ("/spec/builder/timeout", json!("0h0m"), Some("spec.builder.timeout")),
        ("/spec/builder/retries", json!(0), None),
        ("/spec/builder/retries", json!(11), Some("spec.builder.retries")),
        ("/spec/builder/kind", json!("kaniko"), Some("spec.builder.kind")),
        ("/spec/dockerfile", json!("./docker/Dockerfile"), None),
        ("/spec/dockerfile", json!("Dockerfile..bak"), None),
        ("/spec/dockerfile", json!("/Dockerfile"), Some("spec.dockerfile")),
        ("/spec/dockerfile", json!("a/../../Dockerfile"), Some("spec.dockerfile")),
        ("/spec/dockerfile", json!(""), Some("spec.dockerfile")),
        ("/spec/platforms", json!(["auto"]), None),
        ("/spec/platforms", json!(["linux/arm", "linux/arm64", "linux/riscv64"]), None),
        ("/spec/platforms", json!([]), Some("spec.platforms")),
        ("/spec/platformBuildArgs", json!({"linux/arm": {"BASE_IMAGE": "arm32v7/busybox"}}), None),
        ("/spec/platformBuildArgs", json!({"linux/arm/v9": {"BASE_IMAGE": "x"}}), Some("spec.platformBuildArgs")),
        ("/spec/placement", json!("emulated"), None),
        ("/spec/placement", json!("remote"), Some("spec.placement")),
        ("/spec/source", json!({"git": {"url": "https://example.com/app.git", "contextDir": "web"}}), None),
        (
            "/spec/source",
            json!({"git": {"url": "https://x/app.git", "contextDir": "/srv"}}),
            Some("spec.source.git.contextDir"),
        ),
        ("/spec/rollout", json!({"targets": [{"kind": "Deployment", "name": "blog", "container": "web"}]}), None),
        (
            "/spec/rollout",
            json!({"targets": [{"kind": "CronJob", "name": "blog"}]}),
            Some("spec.rollout.targets[0].kind"),
        ),
    ];
    let mut failures = Vec::new();
    for (pointer, value, expected) in cases {
        let mut object = blog.clone();
        set(&mut object, pointer, value.clone());
        let errors = admission_errors(&schema, &object);
        let ok = match expected {
            None => errors.is_empty(),
            Some(field) => !errors.is_empty() && errors.iter().all(|e| e.starts_with(field)),
        };
        if !ok {
            failures.push(format!("{pointer} = {value}: expected {expected:?}, got {errors:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
