//! Deleting a tag, and only the tag: `DELETE /v2/<name>/manifests/<tag>`, the distribution spec's
//! tag deletion (distribution v3, zot, Harbor). Never by digest: that deletes the manifest itself,
//! which the published index names. A token registry is asked for the `delete` action, which pushes
//! do not need.

use reqwest::StatusCode;

use super::wire::{Access, Wire, WireError, body_start};

/// What became of a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untagged {
    Deleted,
    /// The registry knows no such tag (deleted before, or never pushed).
    Missing,
    /// The registry does not delete tags, or not for these credentials: its answer, in short.
    Refused(String),
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
pub(super) async fn delete_tag(wire: &Wire, base: &str, repository: &str, tag: &str) -> Result<Untagged, WireError> {
    let url = format!("{base}/v2/{repository}/manifests/{tag}");
    let answer = wire.send(base, repository, Access::Delete, |http| http.delete(&url)).await?;
    let status = answer.status();
    Ok(outcome(status, &body_start(answer).await))
}

#[cfg(test)]
mod tests {
    use super::*;

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
