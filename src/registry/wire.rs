//! The HTTP of the distribution API for the few requests archway makes (manifests by HEAD, GET and
//! PUT, blobs by GET, tags by DELETE), with the registry's token flow. Ours, not oci-client's: one
//! operator serves every tenant, so what a registry can make it read, and where it sends credentials,
//! must be bounded. oci-client reads whole bodies (`bytes()`, `text()`) and fetches any token realm a
//! registry names, with the credentials, and offers no way to limit either from outside.

use std::collections::HashMap;
use std::sync::Mutex;

use oci_client::secrets::RegistryAuth;
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{RequestBuilder, Response, StatusCode, Url};

/// The largest manifest or index archway reads (real ones are a few KiB; an index of many platforms
/// with annotations stays far below).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// The largest token response archway reads.
pub const MAX_TOKEN_SIZE: u64 = 1 << 20;
/// Of an error answer, archway reads this much; the status shows a short excerpt of it.
const MAX_ERROR_BODY: u64 = 64 << 10;
/// Token realms on another host than their registry's that archway trusts without a flag.
const KNOWN_REALMS: &[(&str, &str)] = &[
    ("registry-1.docker.io", "auth.docker.io"),
    ("index.docker.io", "auth.docker.io"),
    ("docker.io", "auth.docker.io"),
];

/// What a request may do in a repository: the actions of the token scope it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Pull,
    Push,
    Delete,
}

impl Access {
    fn actions(self) -> &'static str {
        match self {
            Access::Pull => "pull",
            Access::Push => "pull,push",
            Access::Delete => "delete",
        }
    }
}

/// Why a request got no usable answer.
#[derive(Debug)]
pub enum WireError {
    Request(reqwest::Error),
    /// A status archway did not want, with (the start of) the body.
    Status {
        status: u16,
        body: String,
    },
    TooLarge {
        what: &'static str,
        limit: u64,
    },
    /// The registry sends its token requests to a host archway may not send credentials to.
    Realm {
        realm: String,
        registry: String,
    },
    /// The token answer is not usable.
    Token(String),
    /// What was to be sent could not be read (a blob's file).
    Local(String),
}

impl From<reqwest::Error> for WireError {
    fn from(error: reqwest::Error) -> Self {
        WireError::Request(error)
    }
}

/// One registry's credentials, the token realms allowed besides its own host, and the tokens issued.
pub struct Wire {
    pub http: reqwest::Client,
    auth: RegistryAuth,
    realm_hosts: Vec<String>,
    /// Bearer tokens by `(base URL, scope)`.
    tokens: Mutex<HashMap<(String, String), String>>,
}

impl Wire {
    pub fn new(http: reqwest::Client, auth: RegistryAuth, realm_hosts: Vec<String>) -> Wire {
        Wire { http, auth, realm_hosts, tokens: Mutex::new(HashMap::new()) }
    }

    /// Sends the request `build` makes (to `base`, `scheme://host[:port]`, for `repository`) with the
    /// credentials: a token the registry issued for this scope before, else Basic ones; on a Bearer
    /// challenge, gets a token from the realm (if it may) and sends again.
    pub async fn send(
        &self,
        base: &str,
        repository: &str,
        access: Access,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, WireError> {
        let key = (base.to_string(), format!("repository:{repository}:{}", access.actions()));
        let kept = self.tokens.lock().ok().and_then(|tokens| tokens.get(&key).cloned());
        let first = self.credentials(build(&self.http), kept.as_deref()).send().await?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let challenge = first.headers().get(WWW_AUTHENTICATE).and_then(|h| h.to_str().ok()).and_then(parse_bearer);
        let Some(challenge) = challenge else { return Ok(first) };
        let token = self.token(base, &challenge, &key.1).await?;
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(key, token.clone());
        }
        Ok(build(&self.http).bearer_auth(token).send().await?)
    }

    fn credentials(&self, request: RequestBuilder, token: Option<&str>) -> RequestBuilder {
        match (token, &self.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Bearer(token)) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, RegistryAuth::Anonymous) => request,
        }
    }

    async fn token(&self, base: &str, challenge: &Challenge, scope: &str) -> Result<String, WireError> {
        let realm = Url::parse(&challenge.realm)
            .map_err(|_| WireError::Token(format!("the token realm {:?} is no URL", challenge.realm)))?;
        let registry = Url::parse(base).map_err(|_| WireError::Token(format!("{base:?} is no URL")))?;
        if !realm_allowed(&registry, &realm, &self.realm_hosts) {
            let registry = registry.host_str().unwrap_or_default().to_string();
            return Err(WireError::Realm { realm: challenge.realm.clone(), registry });
        }
        let mut query = vec![("scope", scope)];
        if let Some(service) = &challenge.service {
            query.push(("service", service));
        }
        let mut request = self.http.get(realm).query(&query);
        if let RegistryAuth::Basic(user, password) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        let answer = request.send().await?;
        if !answer.status().is_success() {
            return Err(status_error(answer).await);
        }
        let body = read_capped(answer, MAX_TOKEN_SIZE, "token response").await?;
        let token: Token = serde_json::from_slice(&body)
            .map_err(|e| WireError::Token(format!("the token response is not JSON with a token: {e}")))?;
        token.token.or(token.access_token).ok_or_else(|| WireError::Token("the token response holds no token".into()))
    }
}

#[derive(serde::Deserialize)]
struct Token {
    token: Option<String>,
    access_token: Option<String>,
}

/// Whether archway may send credentials to `realm` for `registry`: over HTTPS (or plain HTTP to a
/// registry that speaks only that), on the registry's own host, a known realm of it, or one the
/// operator's `--registry-token-realm` names.
fn realm_allowed(registry: &Url, realm: &Url, allowed: &[String]) -> bool {
    let (Some(registry_host), Some(realm_host)) = (registry.host_str(), realm.host_str()) else { return false };
    let scheme = realm.scheme() == "https" || (realm.scheme() == "http" && registry.scheme() == "http");
    let known = KNOWN_REALMS.iter().any(|(r, a)| *r == registry_host && *a == realm_host);
    scheme && (realm_host == registry_host || known || allowed.iter().any(|h| h == realm_host))
}

/// A `WWW-Authenticate: Bearer realm="...",service="..."` challenge.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    realm: String,
    service: Option<String>,
}

/// The realm and service of a Bearer challenge; `None` for other schemes or without a realm.
fn parse_bearer(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (mut realm, mut service) = (None, None);
    // Values are quoted strings without commas in every registry seen; scope may hold commas, and
    // is ignored (we ask for our own).
    for param in params.split(',') {
        let Some((key, value)) = param.trim().split_once('=') else { continue };
        let value = value.trim().trim_matches('"').to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            _ => {}
        }
    }
    Some(Challenge { realm: realm?, service })
}

/// The body, when it is at most `limit` bytes; read as it comes, never more than that.
pub async fn read_capped(mut response: Response, limit: u64, what: &'static str) -> Result<Vec<u8>, WireError> {
    if response.content_length().is_some_and(|length| length > limit) {
        return Err(WireError::TooLarge { what, limit });
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > limit {
            return Err(WireError::TooLarge { what, limit });
        }
    }
    Ok(bytes)
}

/// An unwanted answer: its status and the start of its body.
pub async fn status_error(response: Response) -> WireError {
    let status = response.status().as_u16();
    WireError::Status { status, body: body_start(response).await }
}

/// The first 64 KiB of a body (what an error or a short answer needs), as text.
pub async fn body_start(mut response: Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() as u64 >= MAX_ERROR_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_give_realm_and_service() {
        let header = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#;
        assert_eq!(
            parse_bearer(header),
            Some(Challenge {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into())
            })
        );
        assert_eq!(
            parse_bearer(r#"bearer realm="https://a/t""#),
            Some(Challenge { realm: "https://a/t".into(), service: None })
        );
        assert_eq!(parse_bearer(r#"Basic realm="Registry Realm""#), None);
        assert_eq!(parse_bearer(r#"Bearer service="x""#), None);
        assert_eq!(parse_bearer("Bearer"), None);
    }

    #[test]
    fn credentials_go_only_to_the_registrys_own_realms() {
        let url = |s: &str| Url::parse(s).unwrap();
        let allowed = |registry: &str, realm: &str, flag: &[&str]| {
            let flag: Vec<String> = flag.iter().map(|s| s.to_string()).collect();
            realm_allowed(&url(registry), &url(realm), &flag)
        };
        assert!(allowed("https://ghcr.io", "https://ghcr.io/token", &[]));
        assert!(allowed("https://r.example.com:5000", "https://r.example.com/auth", &[]), "another port, same host");
        assert!(allowed("https://registry-1.docker.io", "https://auth.docker.io/token", &[]));
        assert!(!allowed("https://registry.gitlab.com", "https://gitlab.com/jwt/auth", &[]));
        assert!(allowed("https://registry.gitlab.com", "https://gitlab.com/jwt/auth", &["gitlab.com"]));
        assert!(!allowed("https://r.example.com", "https://attacker.example.net/steal", &[]));
        assert!(!allowed("https://r.example.com", "https://auth.docker.io/token", &[]), "docker.io's realm, not ours");
        assert!(!allowed("https://r.example.com", "http://r.example.com/token", &[]), "a downgrade to plain HTTP");
        assert!(allowed("http://127.0.0.1:5000", "http://127.0.0.1:5001/token", &[]), "a plain HTTP registry");
    }
}
