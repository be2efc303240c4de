//! Registry errors, sorted into what to do about them: retry soon (transient) or wait for a change
//! (permanent). The sorting is a function of the error alone, tested without a registry.

use std::error::Error as StdError;
use std::fmt;

use oci_client::errors::{OciEnvelope, OciErrorCode};

use super::wire::WireError;

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Likely to pass by itself (a connection, a busy or restarting registry, a rate limit): retry with backoff.
    Transient,
    /// Will fail the same way until something changes (credentials, names, the image, the CA): report and wait.
    Permanent,
}

/// What went wrong, as far as archway acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such manifest, blob or repository.
    NotFound,
    /// The registry wants credentials, or refused the ones given (401).
    Unauthorized,
    /// The credentials may not do this (403).
    Denied,
    /// Too many requests (429).
    RateLimited,
    /// The registry answered with a server error (5xx) or 408.
    Unavailable { status: u16 },
    /// No connection, or it broke.
    Connect,
    /// The TLS handshake failed: an unknown CA, a wrong host name, or plain HTTP on the other end.
    Tls,
    /// No answer in time.
    Timeout,
    /// The registry refused the request for another reason (a 4xx, with its error codes).
    Rejected { status: Option<u16>, codes: Vec<String> },
    /// Something archway cannot use: a registry's answer (a bad manifest, a digest mismatch) or a
    /// caller's input (a bad tag or digest).
    Invalid,
    /// The client could not be built from its options (a CA that is not PEM, ...).
    Setup,
}

impl ErrorKind {
    pub fn category(&self) -> Category {
        match self {
            ErrorKind::RateLimited | ErrorKind::Unavailable { .. } | ErrorKind::Connect | ErrorKind::Timeout => {
                Category::Transient
            }
            ErrorKind::NotFound
            | ErrorKind::Unauthorized
            | ErrorKind::Denied
            | ErrorKind::Tls
            | ErrorKind::Rejected { .. }
            | ErrorKind::Invalid
            | ErrorKind::Setup => Category::Permanent,
        }
    }
}

/// What archway was doing when an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Setup,
    HeadManifest,
    GetManifest,
    GetConfig,
    PushIndex,
    /// A copy of a verified image's manifest to a platform tag.
    PushManifest,
    /// A builder's temporary tag, after the index is pushed.
    DeleteTag,
    /// A layer or config the `assemble` builder made.
    PushBlob,
    /// A base image's layer, into the output repository (`assemble`).
    CopyBlob,
    /// A base image's layer, read for the paths it holds (`assemble`).
    ReadLayer,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Setup => "setting up the registry client",
            Operation::HeadManifest => "resolving",
            Operation::GetManifest => "reading the manifest of",
            Operation::GetConfig => "reading the image config of",
            Operation::PushIndex => "pushing the image index to",
            Operation::PushManifest => "pushing the image manifest to",
            Operation::DeleteTag => "deleting the tag",
            Operation::PushBlob => "pushing a blob to",
            Operation::CopyBlob => "copying a base image layer to",
            Operation::ReadLayer => "reading a layer of",
        })
    }
}

/// A registry error: the operation, its target (an image reference), what kind of failure, and a
/// message meant for a `kubectl describe` reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    pub operation: Operation,
    pub target: String,
    pub kind: ErrorKind,
    pub message: String,
}

impl RegistryError {
    pub fn new(operation: Operation, target: impl fmt::Display, kind: ErrorKind, message: impl Into<String>) -> Self {
        RegistryError { operation, target: target.to_string(), kind, message: message.into() }
    }

    /// An error of a request, sorted.
    pub fn from_wire(operation: Operation, target: impl fmt::Display, error: &WireError) -> Self {
        let (kind, message) = classify(error);
        RegistryError::new(operation, target, kind, message)
    }

    pub fn category(&self) -> Category {
        self.kind.category()
    }

    /// Whether retrying soon may help.
    pub fn is_transient(&self) -> bool {
        self.category() == Category::Transient
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.target.is_empty() {
            write!(f, "{}: {}", self.operation, self.message)
        } else {
            write!(f, "{} {}: {}", self.operation, self.target, self.message)
        }
    }
}

impl StdError for RegistryError {}

const HINT_UNAUTHORIZED: &str =
    "the registry wants credentials or refused the ones given: check output.pushSecret and its entry for this registry";
const HINT_DENIED: &str = "the credentials are valid but may not do this: check their rights on this repository";
const HINT_TLS: &str = "if the registry's certificate is from a private CA, give archway that CA; \
                        insecureRegistry: true skips the check (or speaks plain HTTP) for a registry you trust";

/// Sorts a request's error into a kind, with a message that says what happened and what to check.
pub fn classify(error: &WireError) -> (ErrorKind, String) {
    match error {
        WireError::Request(request) => {
            let chain = chain(request);
            if request.is_timeout() {
                (ErrorKind::Timeout, format!("no answer in time: {chain}"))
            } else if request.is_connect() && has_tls_failure(request) {
                (ErrorKind::Tls, format!("TLS handshake failed: {chain}; {HINT_TLS}"))
            } else if request.is_builder() || request.is_redirect() {
                (ErrorKind::Rejected { status: None, codes: vec![] }, chain)
            } else {
                (ErrorKind::Connect, format!("connection failed: {chain}"))
            }
        }
        WireError::Status { status, body } => classify_status(*status, body),
        WireError::TooLarge { what, limit } => {
            (ErrorKind::Invalid, format!("the registry's {what} is larger than {limit} bytes, more than archway reads"))
        }
        WireError::Realm { realm, registry } => (
            ErrorKind::Unauthorized,
            format!(
                "{registry} sends its token requests to {realm:?}, another host, which would get the push secret's \
                 credentials: if you trust it, add its host to the operator's --registry-token-realm"
            ),
        ),
        WireError::Token(why) | WireError::Local(why) => (ErrorKind::Invalid, why.clone()),
    }
}

/// A non-success HTTP status with its body (which may hold an OCI error envelope).
fn classify_status(status: u16, body: &str) -> (ErrorKind, String) {
    if let Ok(envelope) = serde_json::from_str::<OciEnvelope>(body)
        && !envelope.errors.is_empty()
    {
        return classify_envelope(Some(status), &envelope);
    }
    let body = body.trim();
    let detail = if body.is_empty() { String::new() } else { format!(": {}", shorten(body)) };
    let kind = match status {
        401 => return (ErrorKind::Unauthorized, format!("401 Unauthorized: {HINT_UNAUTHORIZED}")),
        403 => return (ErrorKind::Denied, format!("403 Forbidden{detail}: {HINT_DENIED}")),
        404 => ErrorKind::NotFound,
        408 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimited,
        500..=599 => ErrorKind::Unavailable { status },
        _ => ErrorKind::Rejected { status: Some(status), codes: vec![] },
    };
    (kind, format!("HTTP {status}{detail}"))
}

/// An OCI error envelope: the codes decide the kind.
fn classify_envelope(status: Option<u16>, envelope: &OciEnvelope) -> (ErrorKind, String) {
    let has = |code: &OciErrorCode| envelope.errors.iter().any(|e| &e.code == code);
    // A registry repeats an error once per offending item (each missing child, say): say it once.
    let mut codes: Vec<String> = Vec::new();
    let mut descriptions: Vec<String> = Vec::new();
    for e in &envelope.errors {
        let code = code_name(&e.code);
        let text = if e.message.is_empty() { code.clone() } else { format!("{code} ({})", e.message) };
        if !codes.contains(&code) {
            codes.push(code);
        }
        if !descriptions.contains(&text) {
            descriptions.push(text);
        }
    }
    let described = descriptions.join("; ");
    let status_text = status.map(|s| format!("HTTP {s} ")).unwrap_or_default();
    let message = format!("{status_text}{described}");
    if has(&OciErrorCode::Toomanyrequests) || status == Some(429) {
        (ErrorKind::RateLimited, message)
    } else if let Some(status @ 500..) = status {
        (ErrorKind::Unavailable { status }, message)
    } else if has(&OciErrorCode::Unauthorized) || status == Some(401) {
        (ErrorKind::Unauthorized, format!("{message}: {HINT_UNAUTHORIZED}"))
    } else if has(&OciErrorCode::Denied) || status == Some(403) {
        (ErrorKind::Denied, format!("{message}: {HINT_DENIED}"))
    } else if has(&OciErrorCode::ManifestBlobUnknown) {
        let hint = "the index names an image that is not in the repository: each platform's image must be pushed \
                    to the same repository before the index";
        (ErrorKind::Rejected { status, codes }, format!("{message}: {hint}"))
    } else if [
        OciErrorCode::ManifestUnknown,
        OciErrorCode::BlobUnknown,
        OciErrorCode::NameUnknown,
        OciErrorCode::NotFound,
    ]
    .iter()
    .any(has)
        || status == Some(404)
    {
        (ErrorKind::NotFound, message)
    } else {
        (ErrorKind::Rejected { status, codes }, message)
    }
}

fn code_name(code: &OciErrorCode) -> String {
    match code {
        OciErrorCode::Other(other) => other.clone(),
        known => serde_json::to_value(known).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
    }
}

/// Whether a connect error is a TLS failure: rustls reports those as I/O errors of kind InvalidData,
/// which reqwest wraps in another I/O error (whose `source()` skips the wrapped one: look inside).
fn has_tls_failure(error: &(dyn StdError + 'static)) -> bool {
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::InvalidData {
            return true;
        }
        if let Some(inner) = io.get_ref()
            && has_tls_failure(inner)
        {
            return true;
        }
    }
    error.source().is_some_and(has_tls_failure)
}

/// An error and its sources, joined: reqwest's own message alone ("error sending request") says little.
pub(super) fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn shorten(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status: u16, body: &str) -> WireError {
        WireError::Status { status, body: body.into() }
    }

    fn kind(error: &WireError) -> ErrorKind {
        classify(error).0
    }

    #[test]
    fn statuses() {
        assert_eq!(kind(&server(404, "")), ErrorKind::NotFound);
        assert_eq!(kind(&server(401, "")), ErrorKind::Unauthorized);
        assert_eq!(kind(&server(403, "no")), ErrorKind::Denied);
        assert_eq!(kind(&server(429, "slow down")), ErrorKind::RateLimited);
        assert_eq!(kind(&server(503, "<html>")), ErrorKind::Unavailable { status: 503 });
        assert_eq!(kind(&server(500, "")), ErrorKind::Unavailable { status: 500 });
        assert_eq!(kind(&server(408, "")), ErrorKind::Timeout);
        assert_eq!(kind(&server(400, "bad")), ErrorKind::Rejected { status: Some(400), codes: vec![] });
        assert_eq!(kind(&server(413, "")), ErrorKind::Rejected { status: Some(413), codes: vec![] });
    }

    #[test]
    fn categories_never_retry_4xx_except_429_and_408() {
        for code in 400..500u16 {
            let expected = if code == 429 || code == 408 { Category::Transient } else { Category::Permanent };
            assert_eq!(kind(&server(code, "")).category(), expected, "{code}");
        }
        for code in 500..600u16 {
            assert_eq!(kind(&server(code, "")).category(), Category::Transient, "{code}");
        }
    }

    #[test]
    fn envelopes_in_bodies_and_parsed() {
        let blob_unknown = r#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:ab"}]}"#;
        let (found, message) = classify(&server(400, blob_unknown));
        assert_eq!(found, ErrorKind::Rejected { status: Some(400), codes: vec!["MANIFEST_BLOB_UNKNOWN".into()] });
        assert!(message.starts_with("HTTP 400 MANIFEST_BLOB_UNKNOWN (blob unknown to registry): "), "{message}");
        assert!(message.contains("pushed to the same repository before the index"), "{message}");

        let (found, message) =
            classify(&server(404, r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#));
        assert_eq!((found, message.as_str()), (ErrorKind::NotFound, "HTTP 404 MANIFEST_UNKNOWN (manifest unknown)"));

        assert_eq!(kind_of_envelope(r#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#), ErrorKind::NotFound);
        assert_eq!(kind_of_envelope(r#"{"errors":[{"code":"DENIED"}]}"#), ErrorKind::Denied);
        assert_eq!(kind_of_envelope(r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#), ErrorKind::Unauthorized);
        assert_eq!(kind_of_envelope(r#"{"errors":[{"code":"TOOMANYREQUESTS"}]}"#), ErrorKind::RateLimited);
        assert_eq!(
            kind_of_envelope(r#"{"errors":[{"code":"ARTIFACT_LOCKED","message":"locked"}]}"#),
            ErrorKind::Rejected { status: None, codes: vec!["ARTIFACT_LOCKED".into()] }
        );
        // A 5xx with an envelope is still a server error.
        let body = r#"{"errors":[{"code":"UNKNOWN","message":"storage down"}]}"#;
        assert_eq!(kind(&server(503, body)), ErrorKind::Unavailable { status: 503 });
    }

    /// An envelope with a status that says nothing more (400): the codes decide.
    fn kind_of_envelope(json: &str) -> ErrorKind {
        match kind(&server(400, json)) {
            ErrorKind::Rejected { codes, .. } => ErrorKind::Rejected { status: None, codes },
            other => other,
        }
    }

    #[test]
    fn bounds_and_foreign_realms_are_permanent_and_say_why() {
        let (found, message) = classify(&WireError::TooLarge { what: "manifest", limit: 4 << 20 });
        assert_eq!(found, ErrorKind::Invalid);
        assert_eq!(message, "the registry's manifest is larger than 4194304 bytes, more than archway reads");
        let realm = WireError::Realm { realm: "https://evil.example.net/t".into(), registry: "r.example.com".into() };
        let (found, message) = classify(&realm);
        assert_eq!(found.category(), Category::Permanent);
        assert!(message.contains("--registry-token-realm") && message.contains("evil.example.net"), "{message}");
        assert_eq!(kind(&WireError::Token("no token".into())), ErrorKind::Invalid);
    }

    #[test]
    fn messages_name_operation_and_target() {
        let error = RegistryError::from_wire(Operation::PushIndex, "r.example/blog:new", &server(401, ""));
        assert_eq!(
            error.to_string(),
            format!("pushing the image index to r.example/blog:new: 401 Unauthorized: {HINT_UNAUTHORIZED}")
        );
        assert!(!error.is_transient() && !error.is_not_found());
        let error = RegistryError::from_wire(Operation::HeadManifest, "r/x:y", &server(404, ""));
        assert!(error.is_not_found());
        assert_eq!(error.to_string(), "resolving r/x:y: HTTP 404");
        let setup = RegistryError::new(Operation::Setup, "", ErrorKind::Setup, "extra CA 1 holds no certificate");
        assert_eq!(setup.to_string(), "setting up the registry client: extra CA 1 holds no certificate");
        assert_eq!(setup.category(), Category::Permanent);
    }

    #[test]
    fn repeated_envelope_errors_said_once() {
        let one = r#"{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:ab"}"#;
        let (found, message) = classify(&server(400, &format!(r#"{{"errors":[{one},{one},{one}]}}"#)));
        assert_eq!(found, ErrorKind::Rejected { status: Some(400), codes: vec!["MANIFEST_BLOB_UNKNOWN".into()] });
        assert_eq!(message.matches("MANIFEST_BLOB_UNKNOWN").count(), 1, "{message}");
    }

    #[test]
    fn tls_failures_are_found_inside_wrapped_io_errors() {
        // What reqwest hands over for a rustls handshake failure: Other(InvalidData(rustls error)).
        let rustls = std::io::Error::new(std::io::ErrorKind::InvalidData, "invalid peer certificate: UnknownIssuer");
        let wrapped = std::io::Error::other(rustls);
        assert!(has_tls_failure(&wrapped));
        assert!(!has_tls_failure(&std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
    }

    #[test]
    fn long_bodies_are_cut() {
        let (_, message) = classify(&server(502, &"x".repeat(10_000)));
        assert!(message.len() < 400, "{}", message.len());
    }
}
