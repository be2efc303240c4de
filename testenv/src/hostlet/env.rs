//! A container's environment and command line, by Kubernetes' rules: `env` and `envFrom` with their
//! secret, configMap and field references resolved, `$(VAR)` expansion, and the image's
//! ENTRYPOINT/CMD when `command`/`args` are left out.

use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;

use super::config::ToolImage;
use super::pods::PodError;

/// An ordered environment: later entries replace earlier ones of the same name.
#[derive(Clone, Debug, Default)]
pub(crate) struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    pub fn set(&mut self, key: &str, value: String) {
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.vars.push((key.to_string(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    /// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an undefined one is left as
    /// written, and `$$` stands for a literal `$`.
    pub fn expand(&self, input: &str) -> String {
        let mut out = String::with_capacity(input.len());
        let mut rest = input;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(inner) = after.strip_prefix('(')
                && let Some(close) = inner.find(')')
            {
                let name = &inner[..close];
                match self.get(name) {
                    Some(value) => out.push_str(value),
                    None => {
                        out.push_str("$(");
                        out.push_str(name);
                        out.push(')');
                    }
                }
                rest = &inner[close + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        out
    }
}

/// The PATH of an image whose config sets none (containerd's default).
pub(crate) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a tool container's environment starts from: the host's PATH with the pod's tool directory in
/// front, then [`base_env`] with the tool image's ENV.
pub(crate) fn tool_env(pod: &Pod, api_server: &(String, u16), tool_bin: &Path, tool: &ToolImage) -> Env {
    let host_path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
    base_env(pod, api_server, format!("{}:{host_path}", tool_bin.display()), &tool.env)
}

/// What a container's environment starts from: PATH, HOME, the API server's real address, then the
/// image's ENV.
pub(crate) fn base_env(pod: &Pod, api_server: &(String, u16), path: String, image_env: &[(String, String)]) -> Env {
    let mut env = Env::default();
    env.set("PATH", path);
    env.set("HOME", "/root".into());
    env.set("HOSTNAME", pod.metadata.name.clone().unwrap_or_default());
    let (host, port) = api_server;
    env.set("KUBERNETES_SERVICE_HOST", host.clone());
    env.set("KUBERNETES_SERVICE_PORT", port.to_string());
    env.set("KUBERNETES_SERVICE_PORT_HTTPS", port.to_string());
    env.set("KUBERNETES_PORT", format!("tcp://{host}:{port}"));
    for (k, v) in image_env {
        env.set(k, v.clone());
    }
    env
}

/// Adds the container's `envFrom` and `env` to `env`, reading secrets and configMaps through the API.
pub(crate) async fn add_container_env(
    client: &kube::Client,
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
    env: &mut Env,
) -> Result<(), PodError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            if let Some(secret) = get(&secrets, &r.name, optional).await? {
                for (k, v) in secret.data.unwrap_or_default() {
                    env.set(&format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned());
                }
            }
        }
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            if let Some(cm) = get(&config_maps, &r.name, optional).await? {
                for (k, v) in cm.data.unwrap_or_default() {
                    env.set(&format!("{prefix}{k}"), v);
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => Some(env.expand(var.value.as_deref().unwrap_or(""))),
            Some(from) => {
                if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    let secret = get(&secrets, &r.name, optional).await?;
                    let value = secret.and_then(|s| s.data?.remove(&r.key));
                    match value {
                        Some(v) => Some(String::from_utf8_lossy(&v.0).into_owned()),
                        None if optional => None,
                        None => return Err(missing_key("secret", &r.name, &r.key)),
                    }
                } else if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    let cm = get(&config_maps, &r.name, optional).await?;
                    match cm.and_then(|c| c.data?.remove(&r.key)) {
                        Some(v) => Some(v),
                        None if optional => None,
                        None => return Err(missing_key("configmap", &r.name, &r.key)),
                    }
                } else if let Some(r) = &from.field_ref {
                    Some(
                        field_value(pod, &r.field_path, pod_ip)
                            .ok_or_else(|| PodError::config(format!("unsupported fieldRef {}", r.field_path)))?,
                    )
                } else {
                    tracing::warn!(var = var.name, "unsupported valueFrom, left empty");
                    Some(String::new())
                }
            }
        };
        if let Some(value) = value {
            env.set(&var.name, value);
        }
    }
    Ok(())
}

/// Reads an object, retrying briefly when it is not there: a Job's pod may start a moment before the
/// secret it names is created; and for up to [`API_PATIENCE`] while the apiserver does not answer (a
/// kubelet retries a mount for as long as it takes). `Ok(None)` only for an optional reference.
pub(crate) async fn get<K>(api: &Api<K>, name: &str, optional: bool) -> Result<Option<K>, PodError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_lowercase();
    let started = std::time::Instant::now();
    let mut missing = 0;
    loop {
        match api.get_opt(name).await {
            Ok(Some(obj)) => return Ok(Some(obj)),
            Ok(None) if optional => return Ok(None),
            Ok(None) if missing < 9 => missing += 1,
            Ok(None) => return Err(PodError::config(format!("{kind} {name:?} not found"))),
            Err(e) if started.elapsed() < API_PATIENCE => {
                tracing::debug!(kind, name, error = %e, "read failed, retrying")
            }
            Err(e) => return Err(PodError::config(format!("reading {kind} {name:?}: {e}"))),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// How long the hostlet keeps trying a request the apiserver does not answer (a restart, an outage).
pub(crate) const API_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

fn missing_key(kind: &str, name: &str, key: &str) -> PodError {
    PodError::config(format!("couldn't find key {key} in {kind} {name:?}"))
}

/// The downward API's field paths. `pod_ip` is ours to tell: the API may not have it yet.
pub(crate) fn field_value(pod: &Pod, path: &str, pod_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let from_map = |map: &Option<std::collections::BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref()?.get(key).cloned().unwrap_or_default())
    };
    Some(match path {
        "metadata.name" => meta.name.clone()?,
        "metadata.namespace" => meta.namespace.clone()?,
        "metadata.uid" => meta.uid.clone()?,
        "spec.nodeName" => spec?.node_name.clone()?,
        "spec.serviceAccountName" => spec?.service_account_name.clone().unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" => "127.0.0.1".into(),
        _ if path.starts_with("metadata.labels['") => from_map(&meta.labels, "metadata.labels['")?,
        _ if path.starts_with("metadata.annotations['") => from_map(&meta.annotations, "metadata.annotations['")?,
        _ => return None,
    })
}

/// A container's command line: `command` + `args` with the image's ENTRYPOINT/CMD filling in by
/// Kubernetes' rules, `$(VAR)` expanded.
pub(crate) fn argv(container: &Container, entrypoint: &[String], cmd: &[String], env: &Env) -> Vec<String> {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    match (command.is_empty(), args.is_empty()) {
        (false, _) => command.iter().chain(&args).map(|s| env.expand(s)).collect(),
        (true, false) => entrypoint.iter().cloned().chain(args.iter().map(|s| env.expand(s))).collect(),
        (true, true) => entrypoint.iter().chain(cmd).cloned().collect(),
    }
}

/// A tool container's command line: [`argv`], with the tool's own name mapped to its host program.
pub(crate) fn tool_argv(container: &Container, tool: &ToolImage, env: &Env) -> Vec<String> {
    let mut argv = argv(container, &tool.entrypoint, &tool.cmd, env);
    if let Some(first) = argv.first_mut() {
        let base = first.rsplit('/').next().unwrap_or(first);
        if base == tool.name {
            *first = tool.program.display().to_string();
        }
    }
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let mut env = Env::default();
        for (k, v) in pairs {
            env.set(k, v.to_string());
        }
        env
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let env = env(&[("A", "1"), ("B", "two")]);
        assert_eq!(env.expand("$(A)-$(B)"), "1-two");
        assert_eq!(env.expand("$(MISSING)"), "$(MISSING)");
        assert_eq!(env.expand("$$(A)"), "$(A)");
        assert_eq!(env.expand("cost $5 $"), "cost $5 $");
        assert_eq!(env.expand("$(unclosed"), "$(unclosed");
        assert_eq!(env.expand("sh -c 'echo $HOME'"), "sh -c 'echo $HOME'");
    }

    fn tool() -> ToolImage {
        let mut t = ToolImage::new("ghcr.io/archway-dev/archway", "archway", "/opt/bin/archway");
        t.entrypoint = vec!["archway".into()];
        t.cmd = vec!["--help".into()];
        t
    }

    fn container(command: &[&str], args: &[&str]) -> Container {
        let list = |s: &[&str]| (!s.is_empty()).then(|| s.iter().map(|x| x.to_string()).collect());
        Container { name: "c".into(), command: list(command), args: list(args), ..Default::default() }
    }

    #[test]
    fn argv_uses_image_defaults_and_maps_the_tool() {
        let env = env(&[("DIGEST", "sha256:ab")]);
        let tool = tool();
        assert_eq!(tool_argv(&container(&[], &[]), &tool, &env), ["/opt/bin/archway", "--help"]);
        assert_eq!(
            tool_argv(&container(&[], &["verify", "$(DIGEST)"]), &tool, &env),
            ["/opt/bin/archway", "verify", "sha256:ab"]
        );
        assert_eq!(tool_argv(&container(&["/usr/local/bin/archway"], &["x"]), &tool, &env), ["/opt/bin/archway", "x"]);
        assert_eq!(tool_argv(&container(&["sh", "-c", "archway x"], &[]), &tool, &env), ["sh", "-c", "archway x"]);
    }

    #[test]
    fn field_refs() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_string(), "blog".to_string())].into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec { node_name: Some("pi-1".into()), ..Default::default() }),
            ..Default::default()
        };
        let f = |path: &str| field_value(&pod, path, "127.0.0.9");
        assert_eq!(f("metadata.name").as_deref(), Some("p"));
        assert_eq!(f("metadata.namespace").as_deref(), Some("ns"));
        assert_eq!(f("spec.nodeName").as_deref(), Some("pi-1"));
        assert_eq!(f("status.podIP").as_deref(), Some("127.0.0.9"));
        assert_eq!(f("metadata.labels['app']").as_deref(), Some("blog"));
        assert_eq!(f("spec.bogus"), None);
    }
}
