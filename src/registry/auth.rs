//! Registry credentials from a `kubernetes.io/dockerconfigjson` Secret (pure).
//!
//! oci-client does not read Docker config files, so the `.dockerconfigjson` bytes are parsed here:
//! `{"auths": {"<host>": {"auth": base64("user:pass")}}}` or `{"username": ..., "password": ...}`,
//! keyed by `host`, `https://host`, `https://host/v1/` and, for Docker Hub, any of its aliases.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

/// Host names under which Docker Hub's credentials are stored.
const DOCKER_HUB_ALIASES: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];

/// Standard base64 that does not insist on padding (Docker writes it; some tools do not).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What is wrong with a pull/push secret, in words the secret's owner can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("secret {secret}: .dockerconfigjson is not valid JSON: {reason}")]
    InvalidJson { secret: String, reason: String },
    #[error(
        "secret {secret}: .dockerconfigjson has no \"auths\" object (is it a kubernetes.io/dockerconfigjson secret?)"
    )]
    NoAuths { secret: String },
    #[error("secret {secret}: the \"auth\" field for {key} is not base64 of user:password: {reason}")]
    BadAuthField { secret: String, key: String, reason: String },
    #[error("secret {secret}: the entry for {key} has an empty username")]
    EmptyUsername { secret: String, key: String },
    #[error(
        "secret {secret}: the entry for {key} only has an identitytoken, which archway cannot use; \
         give username and password (or auth) instead"
    )]
    IdentityTokenOnly { secret: String, key: String },
}

#[derive(Deserialize)]
struct DockerConfig {
    auths: Option<BTreeMap<String, AuthEntry>>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// The credentials for `host` in a dockerconfigjson Secret (named `secret` in messages), or `None`
/// when it has no entry for that host (an anonymous push, as Docker's).
pub fn lookup(secret: &str, dockerconfigjson: &[u8], host: &str) -> Result<Option<RegistryAuth>, AuthError> {
    find(secret, &parse(secret, dockerconfigjson)?, host)
}

fn find(secret: &str, auths: &BTreeMap<String, AuthEntry>, host: &str) -> Result<Option<RegistryAuth>, AuthError> {
    let wanted = normalise_host(host);
    // An exact key wins over an equivalent one (`https://host/v1/`), so the choice never depends on
    // which spellings a secret happens to hold; among equivalent keys, the first in sorted order.
    let entry = auths
        .iter()
        .find(|(key, _)| key.as_str() == host)
        .or_else(|| auths.iter().find(|(key, _)| normalise_host(key) == wanted));
    entry.map(|(key, entry)| credentials(secret, key, entry)).transpose()
}

fn parse(secret: &str, dockerconfigjson: &[u8]) -> Result<BTreeMap<String, AuthEntry>, AuthError> {
    let config: DockerConfig = serde_json::from_slice(dockerconfigjson)
        .map_err(|e| AuthError::InvalidJson { secret: secret.to_string(), reason: e.to_string() })?;
    config.auths.ok_or_else(|| AuthError::NoAuths { secret: secret.to_string() })
}

fn credentials(secret: &str, key: &str, entry: &AuthEntry) -> Result<RegistryAuth, AuthError> {
    let non_empty = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let (username, password) = if let Some(auth) = non_empty(&entry.auth) {
        let bad = |reason: String| AuthError::BadAuthField { secret: secret.to_string(), key: key.to_string(), reason };
        let decoded = BASE64.decode(auth.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let text = String::from_utf8(decoded).map_err(|_| bad("it decodes to bytes that are not UTF-8".to_string()))?;
        let (user, pass) = text.split_once(':').ok_or_else(|| bad("there is no ':' in it".to_string()))?;
        (user.to_string(), pass.to_string())
    } else if let Some(token) = non_empty(&entry.registrytoken) {
        return Ok(RegistryAuth::Bearer(token));
    } else if let Some(username) = non_empty(&entry.username) {
        (username, entry.password.clone().unwrap_or_default())
    } else if non_empty(&entry.identitytoken).is_some() {
        return Err(AuthError::IdentityTokenOnly { secret: secret.to_string(), key: key.to_string() });
    } else {
        (String::new(), String::new())
    };
    if username.is_empty() {
        return Err(AuthError::EmptyUsername { secret: secret.to_string(), key: key.to_string() });
    }
    Ok(RegistryAuth::Basic(username, password))
}

/// The host a config key or image registry names: scheme and path dropped, lowercased, Docker Hub's
/// aliases folded into `docker.io`.
fn normalise_host(key: &str) -> String {
    let key = key.trim();
    let without_scheme = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or_default().to_ascii_lowercase();
    if DOCKER_HUB_ALIASES.contains(&host.as_str()) { DOCKER_HUB_ALIASES[0].to_string() } else { host }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> RegistryAuth {
        RegistryAuth::Basic(user.to_string(), pass.to_string())
    }

    /// The credentials of a Secret that has an entry for the host.
    fn auth(secret: &str, json: &[u8], host: &str) -> Result<RegistryAuth, AuthError> {
        lookup(secret, json, host).map(|found| found.expect("an entry for the host"))
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn auth_field_and_key_spellings() {
        for key in ["registry.example.com", "https://registry.example.com", "https://registry.example.com/v1/"] {
            let json = format!(r#"{{"auths":{{"{key}":{{"auth":"{}"}}}}}}"#, b64("me:s3:cret"));
            assert_eq!(auth("regcred", json.as_bytes(), "registry.example.com"), Ok(basic("me", "s3:cret")));
        }
    }

    #[test]
    fn username_password_fields_and_ports() {
        let json = br#"{"auths":{"localhost:5000":{"username":"u","password":"p"}}}"#;
        assert_eq!(auth("s", json, "localhost:5000"), Ok(basic("u", "p")));
        // The port is part of the host: another port is another registry.
        assert_eq!(lookup("s", json, "localhost:5001"), Ok(None));
        assert_eq!(lookup("s", json, "localhost"), Ok(None));
    }

    #[test]
    fn docker_hub_aliases() {
        let json = format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#, b64("hub:pw"));
        for host in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            assert_eq!(auth("s", json.as_bytes(), host), Ok(basic("hub", "pw")), "{host}");
        }
    }

    #[test]
    fn exact_key_wins_over_equivalent_one() {
        let json = format!(
            r#"{{"auths":{{"https://r.example":{{"auth":"{}"}},"r.example":{{"auth":"{}"}}}}}}"#,
            b64("old:x"),
            b64("new:y")
        );
        assert_eq!(auth("s", json.as_bytes(), "r.example"), Ok(basic("new", "y")));
    }

    #[test]
    fn auth_without_padding_and_with_newline() {
        let unpadded = b64("ab:c").trim_end_matches('=').to_string();
        let json = format!(r#"{{"auths":{{"r":{{"auth":"{unpadded}\n"}}}}}}"#);
        assert_eq!(auth("s", json.as_bytes(), "r"), Ok(basic("ab", "c")));
    }

    #[test]
    fn registry_token_is_bearer() {
        let json = br#"{"auths":{"r":{"registrytoken":"tok"}}}"#;
        assert_eq!(auth("s", json, "r"), Ok(RegistryAuth::Bearer("tok".to_string())));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let message = |json: &[u8], host: &str| lookup("team/regcred", json, host).unwrap_err().to_string();

        let m = message(b"{not json", "r");
        assert!(m.starts_with("secret team/regcred: .dockerconfigjson is not valid JSON: "), "{m}");

        let m = message(br#"{"r":{"auth":"eDp5"}}"#, "r");
        assert!(m.contains("no \"auths\" object"), "{m}");

        assert_eq!(lookup("s", br#"{"auths":{"other.example":{"auth":"eDp5"}}}"#, "r.example"), Ok(None));
        assert_eq!(lookup("s", br#"{"auths":{}}"#, "r.example"), Ok(None));

        let m = message(br#"{"auths":{"r":{"auth":"%%%"}}}"#, "r");
        assert!(m.starts_with("secret team/regcred: the \"auth\" field for r is not base64 of user:password"), "{m}");

        let no_colon = format!(r#"{{"auths":{{"r":{{"auth":"{}"}}}}}}"#, b64("justuser"));
        assert!(message(no_colon.as_bytes(), "r").ends_with("there is no ':' in it"));

        let m = message(br#"{"auths":{"r":{"identitytoken":"t"}}}"#, "r");
        assert!(m.contains("only has an identitytoken"), "{m}");

        let m = message(br#"{"auths":{"r":{}}}"#, "r");
        assert_eq!(m, "secret team/regcred: the entry for r has an empty username");
    }

    #[test]
    fn a_broken_entry_for_another_host_does_not_matter() {
        let json = format!(r#"{{"auths":{{"a":{{"auth":"%%%"}},"b":{{"auth":"{}"}}}}}}"#, b64("u:p"));
        assert_eq!(auth("s", json.as_bytes(), "b"), Ok(basic("u", "p")));
    }
}
