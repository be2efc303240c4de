//! Deleting a tag, and only the tag: `DELETE /v2/<name>/manifests/<tag>`, the distribution spec's
//! tag deletion (distribution v3, zot, Harbor). Never by digest: that deletes the manifest itself,
//! which the published index names. oci-client has no delete, so this is one request of our own
//! (with the registry's token flow, asking for the `delete` action that pushes do not need).

use oci_client::secrets::RegistryAuth;
use reqwest::StatusCode;
use reqwest::header::WWW_AUTHENTICATE;

/// What became of a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untagged {
    Deleted,
    /// The registry knows no such tag (deleted before, or never pushed).
    Missing,
    /// The registry does not delete tags, or not for these credentials: its answer, in short.
    Refused(String),
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

/// What an answer to the DELETE means.
fn outcome(status: StatusCode, body: &str) -> Untagged {
    match status {
        StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NO_CONTENT => Untagged::Deleted,
        StatusCode::NOT_FOUND if body.contains("MANIFEST_UNKNOWN") => Untagged::Missing,
        _ => {
            let excerpt: String = body.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect();
            Untagged::Refused(format!("HTTP {}: {excerpt}", status.as_u16()))
        }
    }
}

/// Deletes `tag` of `repository` (its path on the registry) at `base` (`https://host[:port]`).
pub(super) async fn delete_tag(
    http: &reqwest::Client,
    base: &str,
    repository: &str,
    tag: &str,
    auth: &RegistryAuth,
) -> Result<Untagged, reqwest::Error> {
    let url = format!("{base}/v2/{repository}/manifests/{tag}");
    let basic = |request: reqwest::RequestBuilder| match auth {
        RegistryAuth::Basic(user, password) => request.basic_auth(user, Some(password)),
        _ => request,
    };
    let first = match auth {
        RegistryAuth::Bearer(token) => http.delete(&url).bearer_auth(token),
        _ => basic(http.delete(&url)),
    }
    .send()
    .await?;
    let challenge = first.headers().get(WWW_AUTHENTICATE).and_then(|h| h.to_str().ok()).and_then(parse_bearer);
    let answer = match (first.status(), challenge) {
        (StatusCode::UNAUTHORIZED, Some(challenge)) => {
            let scope = format!("repository:{repository}:delete");
            let mut query = vec![("scope", scope.as_str())];
            if let Some(service) = &challenge.service {
                query.push(("service", service));
            }
            let token = basic(http.get(&challenge.realm).query(&query)).send().await?;
            if !token.status().is_success() {
                let status = token.status();
                return Ok(outcome(status, &format!("token for {scope}: {}", token.text().await?)));
            }
            let Ok(token) = serde_json::from_str::<Token>(&token.text().await?) else {
                return Ok(Untagged::Refused(format!("the token for {scope} is not JSON with a token")));
            };
            let Some(token) = token.token.or(token.access_token) else {
                return Ok(Untagged::Refused(format!("the answer for {scope} holds no token")));
            };
            http.delete(&url).bearer_auth(token).send().await?
        }
        _ => first,
    };
    let status = answer.status();
    Ok(outcome(status, &answer.text().await?))
}

#[derive(serde::Deserialize)]
struct Token {
    token: Option<String>,
    access_token: Option<String>,
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
    fn answers_sort_into_deleted_missing_and_refused() {
        assert_eq!(outcome(StatusCode::ACCEPTED, ""), Untagged::Deleted);
        assert_eq!(outcome(StatusCode::NOT_FOUND, r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#), Untagged::Missing);
        // distribution v2 takes the tag for a digest: it cannot delete tags.
        let v2 = "{\"errors\":[{\"code\":\"DIGEST_INVALID\",\n\"message\":\"provided digest did not match uploaded content\"}]}";
        assert_eq!(
            outcome(StatusCode::BAD_REQUEST, v2),
            Untagged::Refused(
                "HTTP 400: {\"errors\":[{\"code\":\"DIGEST_INVALID\", \"message\":\"provided digest did not match uploaded content\"}]}"
                    .into()
            )
        );
        assert!(
            matches!(outcome(StatusCode::METHOD_NOT_ALLOWED, &"x".repeat(500)), Untagged::Refused(m) if m.len() < 220)
        );
        assert!(matches!(outcome(StatusCode::NOT_FOUND, "404 page not found"), Untagged::Refused(_)));
    }
}
