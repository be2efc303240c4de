//! A pod's volumes as directories of its sandbox: emptyDirs are empty directories; secrets,
//! configMaps, downward API and projected volumes (the service-account token too) are files, one per
//! key, read through the API; hostPaths are the host's own paths.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, ServiceAccountTokenProjection, Volume,
};
use kube::Api;
use kube::api::PostParams;

use super::env::{field_value, get};
use super::pods::PodError;

const DEFAULT_MODE: i32 = 0o644;

/// Materialises every volume of `pod` under `dir`; returns each volume's host path by name.
pub(crate) async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    dir: &Path,
    pod_ip: &str,
) -> Result<HashMap<String, PathBuf>, PodError> {
    let mut paths = HashMap::new();
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
    for volume in &volumes {
        let path = prepare_one(client, pod, volume, &dir.join(&volume.name), pod_ip)
            .await
            .map_err(|e| PodError { reason: e.reason, message: format!("volume {:?}: {}", volume.name, e.message) })?;
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

async fn prepare_one(
    client: &kube::Client,
    pod: &Pod,
    volume: &Volume,
    dir: &Path,
    pod_ip: &str,
) -> Result<PathBuf, PodError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        if matches!(host.type_.as_deref(), Some("DirectoryOrCreate")) {
            std::fs::create_dir_all(&path).map_err(io_error)?;
        }
        return Ok(path);
    }
    std::fs::create_dir_all(dir).map_err(io_error)?;
    if volume.empty_dir.is_some() {
        return Ok(dir.to_path_buf());
    }
    if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        if let Some(secret) = get(&api, &name, s.optional.unwrap_or(false)).await? {
            let data = secret_data(secret);
            write_keys(dir, &data, s.items.as_deref(), s.default_mode, s.optional.unwrap_or(false))?;
        }
    } else if let Some(c) = &volume.config_map {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        if let Some(cm) = get(&api, &c.name, c.optional.unwrap_or(false)).await? {
            write_keys(dir, &config_map_data(cm), c.items.as_deref(), c.default_mode, c.optional.unwrap_or(false))?;
        }
    } else if let Some(d) = &volume.downward_api {
        write_downward(dir, pod, d.items.as_deref().unwrap_or_default(), d.default_mode, pod_ip)?;
    } else if let Some(p) = &volume.projected {
        for source in p.sources.iter().flatten() {
            // Lenient on purpose: the control plane may run without the controller that publishes
            // `kube-root-ca.crt`, and a missing CA file should not stop a pod that never uses it.
            if let Some(s) = &source.secret {
                let api: Api<Secret> = Api::namespaced(client.clone(), ns);
                match api.get_opt(&s.name).await {
                    Ok(Some(secret)) => {
                        write_keys(dir, &secret_data(secret), s.items.as_deref(), p.default_mode, false)?
                    }
                    other => tracing::warn!(secret = s.name, ?other, "projected secret skipped"),
                }
            }
            if let Some(c) = &source.config_map {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
                match api.get_opt(&c.name).await {
                    Ok(Some(cm)) => write_keys(dir, &config_map_data(cm), c.items.as_deref(), p.default_mode, false)?,
                    other => tracing::warn!(configmap = c.name, ?other, "projected configmap skipped"),
                }
            }
            if let Some(d) = &source.downward_api {
                let items = d.items.as_deref().unwrap_or_default();
                write_downward(dir, pod, items, p.default_mode, pod_ip)?;
            }
            if let Some(t) = &source.service_account_token {
                let token = request_token(client, pod, t).await?;
                write_file(dir, &t.path, token.as_bytes(), mode(p.default_mode, None))?;
            }
        }
    } else {
        return Err(PodError::config("volume type not supported by the hostlet".into()));
    }
    Ok(dir.to_path_buf())
}

fn secret_data(secret: Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> =
        secret.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    data.extend(secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    data
}

fn config_map_data(cm: ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> =
        cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    data.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    data
}

/// One file per key, or only the listed `items` at their paths (as the kubelet: a listed key the
/// object lacks is an error, or skipped when the volume is `optional`).
fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<(), PodError> {
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                let Some(bytes) = data.get(&item.key) else {
                    match optional {
                        true => continue,
                        false => return Err(PodError::config(format!("key {:?} not found", item.key))),
                    }
                };
                write_file(dir, &item.path, bytes, mode(default_mode, item.mode))?;
            }
        }
        _ => {
            for (key, bytes) in data {
                write_file(dir, key, bytes, mode(default_mode, None))?;
            }
        }
    }
    Ok(())
}

fn write_downward(
    dir: &Path,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    pod_ip: &str,
) -> Result<(), PodError> {
    for item in items {
        let value = match &item.field_ref {
            Some(f) => field_value(pod, &f.field_path, pod_ip)
                .ok_or_else(|| PodError::config(format!("unsupported fieldRef {}", f.field_path)))?,
            None => {
                tracing::warn!(path = item.path, "downward API item without fieldRef left empty");
                String::new()
            }
        };
        write_file(dir, &item.path, value.as_bytes(), mode(default_mode, item.mode))?;
    }
    Ok(())
}

async fn request_token(
    client: &kube::Client,
    pod: &Pod,
    projection: &ServiceAccountTokenProjection,
) -> Result<String, PodError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.as_ref();
    let account = spec.and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: projection.audience.clone().map(|a| vec![a]),
            expiration_seconds: Some(projection.expiration_seconds.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let response = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| PodError::config(format!("token for service account {account:?}: {e}")))?;
    response.status.and_then(|s| s.token).ok_or_else(|| PodError::config("token request returned no token".into()))
}

fn mode(default_mode: Option<i32>, item_mode: Option<i32>) -> u32 {
    (item_mode.or(default_mode).unwrap_or(DEFAULT_MODE) & 0o777) as u32
}

/// Writes `rel` under `dir`; a key path may have directories but may not climb out of `dir`.
fn write_file(dir: &Path, rel: &str, bytes: &[u8], mode: u32) -> Result<(), PodError> {
    let rel = Path::new(rel);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(PodError::config(format!("invalid path {}", rel.display())));
    }
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error)?;
    }
    std::fs::write(&path, bytes).map_err(io_error)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(io_error)?;
    Ok(())
}

fn io_error(e: std::io::Error) -> PodError {
    PodError::config(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hostlet-volumes-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn keys_become_files_with_items_and_modes() {
        let dir = temp_dir("keys");
        let data = BTreeMap::from([("a".to_string(), b"one".to_vec()), ("b".to_string(), b"two".to_vec())]);
        write_keys(&dir.join("all"), &data, None, Some(0o600), false).unwrap();
        assert_eq!(std::fs::read(dir.join("all/a")).unwrap(), b"one");
        let perms = std::fs::metadata(dir.join("all/b")).unwrap().permissions();
        assert_eq!(perms.mode() & 0o777, 0o600);

        let items =
            [KeyToPath { key: "b".into(), path: "sub/config.json".into(), mode: Some(0o400), ..Default::default() }];
        write_keys(&dir.join("some"), &data, Some(&items), None, false).unwrap();
        assert_eq!(std::fs::read(dir.join("some/sub/config.json")).unwrap(), b"two");
        assert!(!dir.join("some/a").exists());

        let escape = [KeyToPath { key: "a".into(), path: "../x".into(), mode: None, ..Default::default() }];
        assert!(write_keys(&dir.join("bad"), &data, Some(&escape), None, false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
