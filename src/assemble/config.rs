//! The image config and manifest of an assembled image: the base image's, edited as BuildKit's
//! Dockerfile frontend would edit them for the recipe, with nothing that depends on when or where the
//! assembly ran (`created` is the epoch), so that the same inputs give the same digests.
//!
//! Values are `serde_json::Value`s, so that every field of the base this code does not know (and
//! Docker's older fields) passes through unchanged. Key order: the project's `serde_json` has no
//! `preserve_order` (its `Map` is a `BTreeMap`); the results are still rebuilt in sorted order
//! ([`canonical`]), so that enabling that feature somewhere in the build would not change a digest.

use serde_json::{Map, Value, json};

use super::layer::LayerDigests;
use super::{ConfigEdits, HistoryStep, Recipe};
use crate::platform::Platform;

/// The `created` of the config and of each new history entry: fixed, for reproducible digests.
pub const EPOCH: &str = "1970-01-01T00:00:00Z";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// BuildKit's `PATH` of an image `FROM scratch` (`system.DefaultPathEnv` for Linux).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A blob as a manifest names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the base image's config is malformed: {field} is not {expected}")]
    Malformed { field: &'static str, expected: &'static str },
    /// Docker runs a base image's `ONBUILD` triggers as part of `FROM`, and they may `RUN`.
    #[error("the base image has ONBUILD triggers ({triggers}): they run at FROM, which needs a builder")]
    OnBuild { triggers: String },
}

/// The config of the assembled image for `target`: the base's (`None`: `FROM scratch`) with the
/// recipe's edits, its layer (if any) and its history.
pub fn edit_config(
    base: Option<&Value>,
    recipe: &Recipe,
    target: &Platform,
    layer: Option<&LayerDigests>,
) -> Result<Value, ConfigError> {
    let mut image = match base {
        Some(base) => base.as_object().cloned().ok_or(ConfigError::Malformed { field: "it", expected: "an object" })?,
        None => scratch(),
    };
    let triggers = image.get("config").and_then(|c| c.get("OnBuild")).and_then(Value::as_array);
    if let Some(triggers) = triggers.filter(|t| !t.is_empty()) {
        let triggers = triggers.iter().map(|t| t.as_str().map_or_else(|| t.to_string(), str::to_string));
        return Err(ConfigError::OnBuild { triggers: triggers.collect::<Vec<_>>().join("; ") });
    }
    image.insert("architecture".into(), json!(target.architecture));
    image.insert("os".into(), json!(target.os));
    match &target.variant {
        Some(variant) => image.insert("variant".into(), json!(variant)),
        None => image.remove("variant"),
    };
    image.insert("created".into(), json!(EPOCH));

    let rootfs = object(&mut image, "rootfs", "rootfs")?;
    rootfs.entry("type").or_insert_with(|| json!("layers"));
    let diff_ids = array(rootfs, "diff_ids", "rootfs.diff_ids")?;
    if let Some(layer) = layer {
        diff_ids.push(json!(layer.diff_id));
    }
    let history = array(&mut image, "history", "history")?;
    history.extend(history_entries(&recipe.history, layer.is_some()));

    let config = object(&mut image, "config", "config")?;
    apply(config, &recipe.config)?;
    Ok(canonical(Value::Object(image)))
}

/// The manifest of the assembled image: the base's layers (descriptors as they are) and the new one.
/// The base's schema is kept: a Docker schema 2 base gives a Docker manifest, anything else (and
/// scratch) an OCI one; the media types of `config` and `layer` are set to that schema's (a manifest
/// that mixes the two is refused by some registries).
pub fn manifest(base: Option<&Value>, config: Descriptor, layer: Option<Descriptor>) -> Value {
    let docker = base.and_then(|b| b.get("mediaType")).and_then(Value::as_str) == Some(DOCKER_MANIFEST);
    let (manifest_type, config_type, layer_type) = match docker {
        true => (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER),
        false => (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER),
    };
    let mut layers: Vec<Value> =
        base.and_then(|b| b.get("layers")).and_then(Value::as_array).cloned().unwrap_or_default();
    layers.extend(layer.map(|l| descriptor(&Descriptor { media_type: layer_type.into(), ..l })));
    let config = descriptor(&Descriptor { media_type: config_type.into(), ..config });
    canonical(json!({"schemaVersion": 2, "mediaType": manifest_type, "config": config, "layers": layers}))
}

/// A `COPY` destination or a `WORKDIR` made absolute against the base image's `WorkingDir` (`/` when it
/// has none). An absolute path is returned as written (BuildKit keeps it so); a relative one is
/// joined and cleaned, and keeps a trailing `/` or `/.` (a `COPY` destination's "into this directory").
pub fn resolve_path(working_dir: Option<&str>, path: &str) -> String {
    if path.starts_with('/') {
        return path.to_string();
    }
    let base = working_dir.filter(|w| !w.is_empty()).unwrap_or("/");
    let mut joined = clean_absolute(&format!("{base}/{path}"));
    if path.ends_with('/') && joined != "/" {
        joined.push('/');
    } else if path.ends_with("/.") {
        joined.push_str(if joined == "/" { "." } else { "/." });
    }
    joined
}

/// Go's `path.Clean` of `/` + `path`: absolute, no `.` or `..` segments, no trailing `/`.
fn clean_absolute(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// What BuildKit starts a `FROM scratch` stage with.
fn scratch() -> Map<String, Value> {
    let image = json!({
        "config": {"Env": [format!("PATH={DEFAULT_PATH}")], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    });
    match image {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The history entries of the recipe. There is one layer for all the copies (and WORKDIRs), and the
/// OCI spec wants as many non-empty history entries as layers: only the LAST step that made a layer
/// is shown with it (a WORKDIR's when the layer holds only WORKDIRs); the others are marked empty.
fn history_entries(steps: &[HistoryStep], has_layer: bool) -> Vec<Value> {
    let with_layer = match has_layer {
        true => steps
            .iter()
            .rposition(|s| !s.empty_layer)
            .or_else(|| steps.iter().rposition(|s| s.created_by.starts_with("WORKDIR "))),
        false => None,
    };
    let mut entries: Vec<Value> = steps
        .iter()
        .enumerate()
        .map(|(index, step)| match Some(index) == with_layer {
            true => json!({"created": EPOCH, "created_by": step.created_by}),
            false => json!({"created": EPOCH, "created_by": step.created_by, "empty_layer": true}),
        })
        .collect();
    if has_layer && with_layer.is_none() {
        // A layer no step accounts for (the caller made one anyway): still one entry for it.
        entries.push(json!({"created": EPOCH, "created_by": "archway assemble"}));
    }
    entries
}

/// The recipe's edits of the config's `config` object; every field it does not set is kept.
fn apply(config: &mut Map<String, Value>, edits: &ConfigEdits) -> Result<(), ConfigError> {
    if !edits.env.is_empty() {
        let env = array(config, "Env", "config.Env")?;
        for (key, value) in &edits.env {
            let entry = json!(format!("{key}={value}"));
            // In place, as Docker replaces a variable: the order of the others is kept.
            let same_key = |e: &Value| e.as_str().is_some_and(|e| e.split_once('=').map_or(e, |(k, _)| k) == key);
            match env.iter_mut().find(|e| same_key(e)) {
                Some(existing) => *existing = entry,
                None => env.push(entry),
            }
        }
    }
    if !edits.labels.is_empty() {
        let labels = object(config, "Labels", "config.Labels")?;
        labels.extend(edits.labels.iter().map(|(k, v)| (k.clone(), json!(v))));
    }
    if let Some(working_dir) = &edits.working_dir {
        let base = config.get("WorkingDir").and_then(Value::as_str);
        let resolved = resolve_path(base, working_dir);
        config.insert("WorkingDir".into(), json!(resolved));
    }
    if let Some(user) = &edits.user {
        config.insert("User".into(), json!(user));
    }
    if !edits.exposed_ports.is_empty() {
        let ports = object(config, "ExposedPorts", "config.ExposedPorts")?;
        ports.extend(edits.exposed_ports.iter().map(|p| (p.clone(), json!({}))));
    }
    if !edits.volumes.is_empty() {
        let volumes = object(config, "Volumes", "config.Volumes")?;
        volumes.extend(edits.volumes.iter().map(|v| (v.clone(), json!({}))));
    }
    if let Some(entrypoint) = &edits.entrypoint {
        config.insert("Entrypoint".into(), json!(entrypoint));
    }
    match &edits.cmd {
        Some(Some(cmd)) => {
            config.insert("Cmd".into(), json!(cmd));
        }
        Some(None) => {
            config.remove("Cmd");
        }
        None => {}
    }
    if let Some(signal) = &edits.stop_signal {
        config.insert("StopSignal".into(), json!(signal));
    }
    if let Some(healthcheck) = &edits.healthcheck {
        config.insert("Healthcheck".into(), healthcheck.clone());
    }
    if let Some(shell) = &edits.shell {
        config.insert("Shell".into(), json!(shell));
    }
    Ok(())
}

/// The object under `key`, made when absent or `null` (Docker writes `"Labels": null`).
fn object<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<&'a mut Map<String, Value>, ConfigError> {
    let value = map.entry(key).or_insert(Value::Null);
    if value.is_null() {
        *value = Value::Object(Map::new());
    }
    value.as_object_mut().ok_or(ConfigError::Malformed { field, expected: "an object" })
}

/// The array under `key`, made when absent or `null`.
fn array<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<&'a mut Vec<Value>, ConfigError> {
    let value = map.entry(key).or_insert(Value::Null);
    if value.is_null() {
        *value = Value::Array(Vec::new());
    }
    value.as_array_mut().ok_or(ConfigError::Malformed { field, expected: "an array" })
}

fn descriptor(d: &Descriptor) -> Value {
    json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size})
}

/// The same value with every object's keys in sorted order, whichever `Map` serde_json was built with.
fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.cmp(b));
            Value::Object(entries.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::super::{Base, CopyStep};
    use super::*;

    fn recipe(config: ConfigEdits, history: &[(&str, bool)]) -> Recipe {
        Recipe {
            base: Base::Image { reference: "alpine".into(), platform: None },
            copies: Vec::<CopyStep>::new(),
            config,
            workdirs: Vec::new(),
            history: history.iter().map(|(c, e)| HistoryStep { created_by: c.to_string(), empty_layer: *e }).collect(),
        }
    }

    fn layer() -> LayerDigests {
        LayerDigests { diff_id: "sha256:d1ff".into(), digest: "sha256:9a1b".into(), size: 42 }
    }

    fn arm_v7() -> Platform {
        Platform { os: "linux".into(), architecture: "arm".into(), variant: Some("v7".into()) }
    }

    fn amd64() -> Platform {
        Platform { os: "linux".into(), architecture: "amd64".into(), variant: None }
    }

    /// An nginx-like base config as Docker writes it (nulls included).
    fn base() -> Value {
        json!({
            "architecture": "arm64",
            "variant": "v8",
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {
                "Env": ["PATH=/usr/bin:/bin", "NGINX_VERSION=1.27", "LANG=C"],
                "Cmd": ["nginx", "-g", "daemon off;"],
                "Entrypoint": ["/docker-entrypoint.sh"],
                "ExposedPorts": {"80/tcp": {}},
                "Labels": null,
                "OnBuild": null,
                "ArgsEscaped": true,
                "StopSignal": "SIGQUIT",
                "WorkingDir": "/usr/share/nginx",
            },
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aaaa", "sha256:bbbb"]},
            "history": [
                {"created": "2026-01-01T00:00:00Z", "created_by": "ADD rootfs.tar.xz /"},
                {"created": "2026-01-01T00:00:00Z", "created_by": "ENV LANG=C", "empty_layer": true},
                {"created": "2026-01-01T00:00:00Z", "created_by": "RUN apk add nginx"},
            ],
        })
    }

    fn non_empty(config: &Value) -> usize {
        config["history"].as_array().unwrap().iter().filter(|h| h["empty_layer"] != json!(true)).count()
    }

    #[test]
    fn env_replaces_in_place_and_appends_in_order() {
        let edits = ConfigEdits {
            env: vec![("LANG".into(), "C.UTF-8".into()), ("ZED".into(), "1".into()), ("ALPHA".into(), "a=b".into())],
            ..ConfigEdits::default()
        };
        let config = edit_config(Some(&base()), &recipe(edits, &[]), &amd64(), None).unwrap();
        assert_eq!(
            config["config"]["Env"],
            json!(["PATH=/usr/bin:/bin", "NGINX_VERSION=1.27", "LANG=C.UTF-8", "ZED=1", "ALPHA=a=b"])
        );
    }

    #[test]
    fn fields_are_set_merged_or_cleared() {
        let edits = ConfigEdits {
            labels: BTreeMap::from([("org.opencontainers.image.title".into(), "blog".into())]),
            working_dir: Some("html".into()),
            user: Some("65534".into()),
            exposed_ports: BTreeSet::from(["8080/tcp".into()]),
            volumes: BTreeSet::from(["/cache".into()]),
            entrypoint: Some(vec!["/bin/serve".into()]),
            cmd: Some(None),
            stop_signal: Some("SIGTERM".into()),
            healthcheck: Some(json!({"Test": ["CMD", "true"], "Interval": 5_000_000_000u64})),
            shell: Some(vec!["/bin/ash".into(), "-c".into()]),
            ..ConfigEdits::default()
        };
        let config = edit_config(Some(&base()), &recipe(edits, &[]), &amd64(), None).unwrap();
        let c = &config["config"];
        assert_eq!(c["Labels"], json!({"org.opencontainers.image.title": "blog"}));
        assert_eq!(c["WorkingDir"], "/usr/share/nginx/html");
        assert_eq!(c["User"], "65534");
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "8080/tcp": {}}));
        assert_eq!(c["Volumes"], json!({"/cache": {}}));
        assert_eq!(c["Entrypoint"], json!(["/bin/serve"]));
        assert!(c.get("Cmd").is_none(), "{c}");
        assert_eq!(c["StopSignal"], "SIGTERM");
        assert_eq!(c["Healthcheck"]["Test"], json!(["CMD", "true"]));
        assert_eq!(c["Shell"], json!(["/bin/ash", "-c"]));
        // What the recipe does not set is the base's, nulls included.
        assert_eq!(c["ArgsEscaped"], true);
        assert_eq!(c["OnBuild"], Value::Null);
        assert!(c.as_object().unwrap().contains_key("OnBuild"));
        let cmd = ConfigEdits { cmd: Some(Some(vec!["nginx".into()])), ..ConfigEdits::default() };
        let config = edit_config(Some(&base()), &recipe(cmd, &[]), &amd64(), None).unwrap();
        assert_eq!(config["config"]["Cmd"], json!(["nginx"]));
        assert_eq!(config["config"]["Entrypoint"], json!(["/docker-entrypoint.sh"]));
    }

    #[test]
    fn platform_and_created_are_the_targets() {
        let config = edit_config(Some(&base()), &recipe(ConfigEdits::default(), &[]), &arm_v7(), None).unwrap();
        assert_eq!(
            (&config["architecture"], &config["os"], &config["variant"]),
            (&json!("arm"), &json!("linux"), &json!("v7"))
        );
        assert_eq!(config["created"], EPOCH);
        let config = edit_config(Some(&base()), &recipe(ConfigEdits::default(), &[]), &amd64(), None).unwrap();
        assert!(config.get("variant").is_none(), "{config}");
    }

    #[test]
    fn one_layer_one_non_empty_history_entry() {
        let steps = [
            ("COPY index.html /srv/ # buildkit", false),
            ("USER 65534", true),
            ("COPY arch /srv/arch # buildkit", false),
        ];
        let config =
            edit_config(Some(&base()), &recipe(ConfigEdits::default(), &steps), &amd64(), Some(&layer())).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"], json!(["sha256:aaaa", "sha256:bbbb", "sha256:d1ff"]));
        let history = config["history"].as_array().unwrap();
        assert_eq!(history.len(), 6);
        assert_eq!(
            history[3],
            json!({"created": EPOCH, "created_by": "COPY index.html /srv/ # buildkit", "empty_layer": true})
        );
        assert_eq!(history[4]["empty_layer"], true);
        assert_eq!(history[5], json!({"created": EPOCH, "created_by": "COPY arch /srv/arch # buildkit"}));
        assert_eq!(non_empty(&config), config["rootfs"]["diff_ids"].as_array().unwrap().len());
        // No layer (the recipe copies nothing): every new entry is empty.
        let steps = [("USER 65534", true)];
        let config = edit_config(Some(&base()), &recipe(ConfigEdits::default(), &steps), &amd64(), None).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        assert_eq!(non_empty(&config), 2);
        // A layer of WORKDIRs only: the last WORKDIR is shown with it.
        let steps = [("WORKDIR /app", true), ("WORKDIR /app/data", true), ("USER app", true)];
        let config =
            edit_config(Some(&base()), &recipe(ConfigEdits::default(), &steps), &amd64(), Some(&layer())).unwrap();
        assert_eq!(config["history"][4], json!({"created": EPOCH, "created_by": "WORKDIR /app/data"}));
        assert_eq!(non_empty(&config), 3);
    }

    #[test]
    fn scratch_starts_as_buildkit_does() {
        let edits = ConfigEdits { env: vec![("PATH".into(), "/bin".into())], ..ConfigEdits::default() };
        let steps = [("ENV PATH=/bin", true), ("COPY app / # buildkit", false)];
        let config = edit_config(None, &recipe(edits, &steps), &arm_v7(), Some(&layer())).unwrap();
        assert_eq!(
            config,
            json!({
                "architecture": "arm",
                "os": "linux",
                "variant": "v7",
                "created": EPOCH,
                "config": {"Env": ["PATH=/bin"], "WorkingDir": "/"},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:d1ff"]},
                "history": [
                    {"created": EPOCH, "created_by": "ENV PATH=/bin", "empty_layer": true},
                    {"created": EPOCH, "created_by": "COPY app / # buildkit"},
                ],
            })
        );
        let config = edit_config(None, &recipe(ConfigEdits::default(), &[]), &amd64(), None).unwrap();
        assert_eq!(config["config"]["Env"], json!([format!("PATH={DEFAULT_PATH}")]));
        assert_eq!(config["rootfs"], json!({"type": "layers", "diff_ids": []}));
    }

    #[test]
    fn onbuild_triggers_and_malformed_bases_are_errors() {
        let mut onbuild = base();
        onbuild["config"]["OnBuild"] = json!(["COPY . /app", "RUN make"]);
        let error = edit_config(Some(&onbuild), &recipe(ConfigEdits::default(), &[]), &amd64(), None).unwrap_err();
        assert_eq!(error, ConfigError::OnBuild { triggers: "COPY . /app; RUN make".into() });
        let mut bad = base();
        bad["config"]["Env"] = json!("PATH=/bin");
        let edits = ConfigEdits { env: vec![("A".into(), "1".into())], ..ConfigEdits::default() };
        let error = edit_config(Some(&bad), &recipe(edits, &[]), &amd64(), None).unwrap_err();
        assert_eq!(error.to_string(), "the base image's config is malformed: config.Env is not an array");
        let error = edit_config(Some(&json!([])), &recipe(ConfigEdits::default(), &[]), &amd64(), None).unwrap_err();
        assert_eq!(error, ConfigError::Malformed { field: "it", expected: "an object" });
    }

    fn config_descriptor() -> Descriptor {
        Descriptor { media_type: OCI_CONFIG.into(), digest: "sha256:c0f1".into(), size: 1234 }
    }

    fn layer_descriptor() -> Descriptor {
        Descriptor { media_type: OCI_LAYER.into(), digest: "sha256:9a1b".into(), size: 42 }
    }

    #[test]
    fn docker_base_gives_a_docker_manifest() {
        let base = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": "sha256:0ld", "size": 7},
            "layers": [{"mediaType": DOCKER_LAYER, "digest": "sha256:aaaa", "size": 100, "urls": ["https://x/y"]}],
        });
        let image = manifest(Some(&base), config_descriptor(), Some(layer_descriptor()));
        assert_eq!(
            image,
            json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": DOCKER_CONFIG, "digest": "sha256:c0f1", "size": 1234},
                "layers": [
                    {"mediaType": DOCKER_LAYER, "digest": "sha256:aaaa", "size": 100, "urls": ["https://x/y"]},
                    {"mediaType": DOCKER_LAYER, "digest": "sha256:9a1b", "size": 42},
                ],
            })
        );
    }

    #[test]
    fn oci_and_scratch_give_an_oci_manifest() {
        let base = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": "sha256:0ld", "size": 7},
            "layers": [{"mediaType": OCI_LAYER, "digest": "sha256:aaaa", "size": 100, "annotations": {"a": "b"}}],
            "annotations": {"org.opencontainers.image.base.name": "alpine"},
        });
        let image = manifest(Some(&base), config_descriptor(), Some(layer_descriptor()));
        assert_eq!(image["mediaType"], OCI_MANIFEST);
        assert_eq!(image["config"]["mediaType"], OCI_CONFIG);
        assert_eq!(image["layers"][0]["annotations"], json!({"a": "b"}));
        assert_eq!(image["layers"][1], json!({"mediaType": OCI_LAYER, "digest": "sha256:9a1b", "size": 42}));
        assert!(image.get("annotations").is_none(), "the base's annotations describe the base");
        let scratch = manifest(None, config_descriptor(), None);
        assert_eq!(
            scratch,
            json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": "sha256:c0f1", "size": 1234},
                "layers": [],
            })
        );
    }

    #[test]
    fn serialization_is_sorted_and_stable() {
        let image = manifest(None, config_descriptor(), Some(layer_descriptor()));
        let bytes = String::from_utf8(serde_json::to_vec(&image).unwrap()).unwrap();
        assert_eq!(
            bytes,
            format!(
                r#"{{"config":{{"digest":"sha256:c0f1","mediaType":"{OCI_CONFIG}","size":1234}},"layers":[{{"digest":"sha256:9a1b","mediaType":"{OCI_LAYER}","size":42}}],"mediaType":"{OCI_MANIFEST}","schemaVersion":2}}"#
            )
        );
        let config = |base: &Value| edit_config(Some(base), &recipe(ConfigEdits::default(), &[]), &amd64(), None);
        assert_eq!(
            serde_json::to_vec(&config(&base()).unwrap()).unwrap(),
            serde_json::to_vec(&config(&base()).unwrap()).unwrap()
        );
    }

    #[test]
    fn paths_resolve_against_the_base_working_dir() {
        let cases = [
            (None, "app", "/app"),
            (Some(""), "app/", "/app/"),
            (Some("/srv"), ".", "/srv"),
            (Some("/srv"), "./", "/srv/"),
            (Some("/srv"), "x/.", "/srv/x/."),
            (None, "./", "/"),
            (None, "x/../..", "/"),
            (Some("/srv/www"), "../data", "/srv/data"),
            (Some("/srv"), "/abs/./as-written/", "/abs/./as-written/"),
            (Some("relative"), "x", "/relative/x"),
        ];
        for (working_dir, path, expected) in cases {
            assert_eq!(resolve_path(working_dir, path), expected, "{working_dir:?} {path:?}");
        }
    }
}
