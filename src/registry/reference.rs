//! Image references: a repository without tag or digest, `repo:tag` and `repo@sha256:...`, and
//! digest strings (pure).

use std::fmt;
use std::str::FromStr;

use oci_client::Reference;

/// How many characters of a rejected input an error message quotes.
const QUOTE_MAX: usize = 80;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("{input:?} is not an image repository: {reason}")]
    Repository { input: String, reason: String },
    #[error("{repository}: a repository is named without tag or digest, but {input:?} has a {what}")]
    RepositoryWithTagOrDigest { repository: String, input: String, what: &'static str },
    #[error("{0:?} is not a valid tag (up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-')")]
    Tag(String),
    #[error("{0:?} is not a digest of the form sha256:<64 lowercase hex digits>")]
    Digest(String),
}

/// An image repository such as `registry.example.com/asksven/blog`: a registry host (with port, if
/// any) and a path. Docker Hub names are expanded as Docker does (`busybox` is
/// `docker.io/library/busybox`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository {
    registry: String,
    path: String,
}

impl Repository {
    /// The registry host, with port if any: what credentials are looked up by.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`asksven/blog`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `repository:tag`.
    pub fn tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !is_valid_tag(tag) {
            return Err(ReferenceError::Tag(quote(tag)));
        }
        Ok(Reference::with_tag(self.registry.clone(), self.path.clone(), tag.to_string()))
    }

    /// `repository@sha256:...`; the digest must be exactly of that form.
    pub fn digest(&self, digest: &str) -> Result<Reference, ReferenceError> {
        if !is_sha256_digest(digest) {
            return Err(ReferenceError::Digest(quote(digest)));
        }
        Ok(Reference::with_digest(self.registry.clone(), self.path.clone(), digest.to_string()))
    }
}

impl Repository {
    /// The repository an image reference names, whatever its tag or digest (`blog:new` and
    /// `docker.io/library/blog@sha256:...` are both `docker.io/library/blog`).
    pub fn of_image(image: &str) -> Result<Repository, ReferenceError> {
        let reference: Reference = image.parse().map_err(|e: oci_client::ParseError| ReferenceError::Repository {
            input: quote(image),
            reason: e.to_string(),
        })?;
        Ok(Repository { registry: reference.registry().to_string(), path: reference.repository().to_string() })
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)
    }
}

impl FromStr for Repository {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let repository = Repository::of_image(input)?;
        let reference: Reference = input.parse().map_err(|e: oci_client::ParseError| ReferenceError::Repository {
            input: quote(input),
            reason: e.to_string(),
        })?;
        // The parser adds `latest` when no tag is given; a tag the input really has ends it.
        let what = if reference.digest().is_some() {
            Some("digest")
        } else if reference.tag().is_some_and(|tag| input.ends_with(&format!(":{tag}"))) {
            Some("tag")
        } else {
            None
        };
        match what {
            Some(what) => Err(ReferenceError::RepositoryWithTagOrDigest {
                repository: repository.to_string(),
                input: quote(input),
                what,
            }),
            None => Ok(repository),
        }
    }
}

/// Splits a repository into its registry host and path: `localhost:5000/blog` -> (`localhost:5000`, `blog`).
pub fn split_host(repository: &str) -> Result<(String, String), ReferenceError> {
    let repository: Repository = repository.parse()?;
    Ok((repository.registry, repository.path))
}

/// Reads a digest written by a builder (its termination message or digest file): surrounding white
/// space is dropped, and what is left must be exactly `sha256:<64 lowercase hex digits>`.
pub fn parse_digest(text: &str) -> Result<String, ReferenceError> {
    let digest = text.trim();
    if is_sha256_digest(digest) { Ok(digest.to_string()) } else { Err(ReferenceError::Digest(quote(digest))) }
}

/// Whether `s` is exactly `sha256:` followed by 64 lowercase hex digits.
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// A tag as the distribution spec allows it: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    (1..=128).contains(&bytes.len())
        && bytes.first().is_some_and(|&b| word(b))
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// The input, cut to a length that reads well in a message.
fn quote(input: &str) -> String {
    match input.char_indices().nth(QUOTE_MAX) {
        Some((end, _)) => format!("{}...", &input[..end]),
        None => input.to_string(),
    }
}

/// `reference` as read through the first mirror of its registry: `quay.io=mirror.example.com/quay`
/// turns `quay.io/buildah/stable:v1` into `mirror.example.com/quay/buildah/stable:v1`.
pub fn mirrored(reference: &Reference, mirrors: &[(String, String)]) -> Reference {
    let Some((_, mirror)) = mirrors.iter().find(|(registry, _)| registry == reference.registry()) else {
        return reference.clone();
    };
    let (host, prefix) = match mirror.split_once('/') {
        Some((host, prefix)) => (host, format!("{}/", prefix.trim_end_matches('/'))),
        None => (mirror.as_str(), String::new()),
    };
    let repository = format!("{prefix}{}", reference.repository());
    match (reference.digest(), reference.tag()) {
        (Some(digest), _) => Reference::with_digest(host.into(), repository, digest.into()),
        (None, tag) => Reference::with_tag(host.into(), repository, tag.unwrap_or("latest").into()),
    }
}

/// A `--registry-mirror` value: `REGISTRY=MIRROR`, the mirror a host with an optional path.
pub fn parse_mirror(text: &str) -> Result<(String, String), String> {
    let (registry, mirror) =
        text.split_once('=')
            .filter(|(r, m)| !r.is_empty() && !m.is_empty() && !r.contains('/'))
            .ok_or_else(|| format!("{text:?}: expected REGISTRY=MIRROR, e.g. quay.io=mirror.example.com/quay.io"))?;
    Ok((registry.to_string(), mirror.trim_end_matches('/').to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_replace_the_registry_and_keep_tag_or_digest() {
        let mirrors =
            vec![parse_mirror("quay.io=127.0.0.1:5000/quay.io").unwrap(), parse_mirror("docker.io=hub.local").unwrap()];
        let read = |image: &str| mirrored(&image.parse().unwrap(), &mirrors).whole();
        assert_eq!(read("quay.io/buildah/stable:v1.40"), "127.0.0.1:5000/quay.io/buildah/stable:v1.40");
        assert_eq!(read("moby/buildkit:v0.26.3-rootless"), "hub.local/moby/buildkit:v0.26.3-rootless");
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(read(&format!("alpine/git@{digest}")), format!("hub.local/alpine/git@{digest}"));
        assert_eq!(read("ghcr.io/archway-dev/archway:dev"), "ghcr.io/archway-dev/archway:dev");
        assert!(parse_mirror("quay.io").unwrap_err().contains("REGISTRY=MIRROR"));
        assert!(parse_mirror("quay.io/x=m").is_err());
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn repositories_and_hosts() {
        let cases = [
            ("registry.example.com/asksven/blog", "registry.example.com", "asksven/blog"),
            ("localhost:5000/blog", "localhost:5000", "blog"),
            ("127.0.0.1:5443/a/b/c", "127.0.0.1:5443", "a/b/c"),
            ("busybox", "docker.io", "library/busybox"),
            ("asksven/blog", "docker.io", "asksven/blog"),
        ];
        for (input, host, path) in cases {
            assert_eq!(split_host(input), Ok((host.to_string(), path.to_string())), "{input}");
        }
        let repository: Repository = "localhost:5000/blog".parse().unwrap();
        assert_eq!(repository.to_string(), "localhost:5000/blog");
    }

    #[test]
    fn the_repository_of_an_image_ignores_its_tag_or_digest() {
        let blog: Repository = "docker.io/library/blog".parse().unwrap();
        assert_eq!(Repository::of_image("blog:new").unwrap(), blog);
        assert_eq!(Repository::of_image(&format!("blog@{DIGEST}")).unwrap(), blog);
        assert_eq!(Repository::of_image("localhost:5000/blog:v1").unwrap().to_string(), "localhost:5000/blog");
        assert!(Repository::of_image("Not An Image").is_err());
    }

    #[test]
    fn repositories_reject_tags_digests_and_junk() {
        for (input, what) in
            [("r.example/blog:new", "tag"), ("r.example/blog:latest", "tag"), ("localhost:5000/b:1", "tag")]
        {
            let error = input.parse::<Repository>().unwrap_err();
            assert!(matches!(error, ReferenceError::RepositoryWithTagOrDigest { what: w, .. } if w == what), "{input}");
        }
        let error = format!("r.example/blog@{DIGEST}").parse::<Repository>().unwrap_err();
        assert!(error.to_string().contains("has a digest"), "{error}");
        for junk in ["", "r.example/UPPER", "a b", "r.example/"] {
            assert!(matches!(junk.parse::<Repository>(), Err(ReferenceError::Repository { .. })), "{junk:?}");
        }
    }

    #[test]
    fn tag_and_digest_references() {
        let repository: Repository = "localhost:5000/blog".parse().unwrap();
        assert_eq!(repository.tag("new").unwrap().to_string(), "localhost:5000/blog:new");
        assert_eq!(repository.digest(DIGEST).unwrap().to_string(), format!("localhost:5000/blog@{DIGEST}"));
        assert!(matches!(repository.tag("-x"), Err(ReferenceError::Tag(_))));
        assert!(matches!(repository.tag(""), Err(ReferenceError::Tag(_))));
        assert!(matches!(repository.tag(&"a".repeat(129)), Err(ReferenceError::Tag(_))));
        assert!(repository.tag(&"a".repeat(128)).is_ok());
        assert!(matches!(repository.digest("sha256:abc"), Err(ReferenceError::Digest(_))));
    }

    #[test]
    fn digests_from_builders() {
        assert_eq!(parse_digest(&format!("  {DIGEST}\n")), Ok(DIGEST.to_string()));
        let bad = [
            "",
            "sha256:",
            &DIGEST.to_uppercase(),
            &DIGEST.replace("sha256", "sha512"),
            &DIGEST[..DIGEST.len() - 1],
            &format!("{DIGEST}0"),
            &format!("{DIGEST}\nerror: something else"),
            &format!("digest: {DIGEST}"),
        ];
        for text in bad {
            assert!(matches!(parse_digest(text), Err(ReferenceError::Digest(_))), "{text:?}");
        }
        // Long garbage is quoted, not copied whole, into the message.
        let message = parse_digest(&"x".repeat(4096)).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
    }
}
