//! The registry I/O: the distribution API's requests (see `wire.rs`) with timeouts, retries of
//! transient errors, and errors sorted for the controller. Everything it decides is in the pure
//! modules beside it.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use oci_client::Reference;
use oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE;
use oci_client::secrets::RegistryAuth;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use super::error::{ErrorKind, Operation, RegistryError, chain};
use super::index::digest_of;
use super::manifest::{
    ACCEPTED_MANIFEST_TYPES, ChildImage, ImageConfig, RawManifest, config_descriptor, index_platforms, is_index,
    media_type_of, parse_image_config,
};
use super::reference::{Repository, is_sha256_digest};
use super::retry::{RetryPolicy, retry};
use super::untag::{Untagged, delete_tag};
use super::wire::{Access, MAX_MANIFEST_SIZE, Wire, WireError, read_capped, status_error};
use crate::platform::Platform;

mod blobs;
pub use blobs::BlobSource;

const USER_AGENT: &str = concat!("archway/", env!("CARGO_PKG_VERSION"));

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Like Docker's insecure registries: HTTPS without verifying the certificate, and plain HTTP
    /// when the registry does not speak TLS at all. Only for registries you trust on a network you trust.
    pub insecure: bool,
    /// PEM certificates (one or more per entry) of CAs to trust besides the system's.
    pub extra_ca_pem: Vec<Vec<u8>>,
    /// Hosts besides a registry's own that may issue its tokens (`--registry-token-realm`): the
    /// registry's credentials are sent there.
    pub token_realm_hosts: Vec<String>,
    pub connect_timeout: Duration,
    /// Longest silence while reading an answer.
    pub read_timeout: Duration,
    /// Longest time for one try of one operation, whatever it waits for.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: false,
            extra_ca_pem: Vec::new(),
            token_realm_hosts: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

/// A registry client bound to one set of credentials.
pub struct Registry {
    wire: Wire,
    /// Plain HTTP is tried where HTTPS fails its handshake (insecure only).
    insecure: bool,
    /// Hosts found to speak plain HTTP (insecure only).
    plain_hosts: Mutex<BTreeSet<String>>,
    request_timeout: Duration,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("insecure", &self.insecure)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A client with these options and credentials (`RegistryAuth::Anonymous` for none; see
    /// [`super::auth::lookup`] to read them from a dockerconfigjson Secret). Fails if an extra
    /// CA holds no PEM certificate or the TLS setup refuses it.
    pub fn new(options: RegistryOptions, auth: RegistryAuth) -> Result<Registry, RegistryError> {
        let setup = |message: String| RegistryError::new(Operation::Setup, "", ErrorKind::Setup, message);
        let mut roots = Vec::new();
        for (i, pem) in options.extra_ca_pem.iter().enumerate() {
            if !pem_has_certificate(pem) {
                return Err(setup(format!(
                    "extra CA {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    i + 1
                )));
            }
            roots.extend(reqwest::Certificate::from_pem_bundle(pem).map_err(|e| setup(chain(&e)))?);
        }
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(options.insecure)
            .tls_certs_merge(roots)
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| setup(chain(&e)))?;
        Ok(Registry {
            wire: Wire::new(http, auth, options.token_realm_hosts),
            insecure: options.insecure,
            plain_hosts: Mutex::new(BTreeSet::new()),
            request_timeout: options.request_timeout,
            retry: options.retry,
        })
    }

    /// The digest of the manifest a reference names, by HEAD (falling back to GET where the registry
    /// sends no digest header).
    pub async fn head_digest(&self, reference: &Reference) -> Result<String, RegistryError> {
        let op = Operation::HeadManifest;
        let digest = self
            .call(op, reference, |base| async move {
                let url = manifest_url(&base, reference);
                let head = |http: &reqwest::Client| http.head(&url).header(ACCEPT, ACCEPTED_MANIFEST_TYPES.join(", "));
                let answer = self.wire.send(&base, reference.repository(), Access::Pull, head).await?;
                if !answer.status().is_success() {
                    return Err(status_error(answer).await);
                }
                match content_digest(&answer) {
                    Some(digest) => Ok(digest),
                    None => Ok(digest_of(&self.get_manifest(&base, reference).await?.0)),
                }
            })
            .await?;
        if !is_sha256_digest(&digest) {
            return Err(invalid(op, reference, format!("the registry gave digest {digest:?}, not sha256:<64 hex>")));
        }
        Ok(digest)
    }

    /// A manifest byte for byte, with its media type and digest; image manifests and indexes, OCI
    /// and Docker, of at most 4 MiB. The bytes are checked against the registry's digest header and
    /// the reference's digest, where there are.
    pub async fn fetch_manifest_raw(&self, reference: &Reference) -> Result<RawManifest, RegistryError> {
        let op = Operation::GetManifest;
        let (bytes, header) =
            self.call(op, reference, |base| async move { self.get_manifest(&base, reference).await }).await?;
        let media_type = media_type_of(&bytes).map_err(|e| invalid(op, reference, e.to_string()))?;
        // The digest of the bytes is what names them, whatever the registry's header said.
        let digest = digest_of(&bytes);
        for claimed in [header.as_deref(), reference.digest()].into_iter().flatten() {
            if claimed != digest {
                return Err(invalid(op, reference, format!("the registry says {claimed} but the bytes are {digest}")));
            }
        }
        Ok(RawManifest { bytes, media_type, digest })
    }

    /// GET of a manifest: its bytes (4 MiB at most) and the digest header, if any.
    async fn get_manifest(&self, base: &str, reference: &Reference) -> Result<(Vec<u8>, Option<String>), WireError> {
        let url = manifest_url(base, reference);
        let get = |http: &reqwest::Client| http.get(&url).header(ACCEPT, ACCEPTED_MANIFEST_TYPES.join(", "));
        let answer = self.wire.send(base, reference.repository(), Access::Pull, get).await?;
        if !answer.status().is_success() {
            return Err(status_error(answer).await);
        }
        let digest = content_digest(&answer);
        Ok((read_capped(answer, MAX_MANIFEST_SIZE, "manifest").await?, digest))
    }

    /// The platform fields of an image's config. `reference` names the image's repository (its tag or
    /// digest does not matter); `manifest` must be a single image, not an index.
    pub async fn fetch_config(
        &self,
        reference: &Reference,
        manifest: &RawManifest,
    ) -> Result<ImageConfig, RegistryError> {
        let op = Operation::GetConfig;
        let config = config_descriptor(manifest).map_err(|e| invalid(op, reference, e.to_string()))?;
        let bytes = self.fetch_blob(reference, &config.digest, config.size).await?;
        parse_image_config(&bytes).map_err(|e| invalid(op, reference, e.to_string()))
    }

    /// The platforms an image runs on: its index's, or a single image's own.
    pub async fn platforms_of(&self, reference: &Reference) -> Result<Vec<Platform>, RegistryError> {
        let manifest = self.fetch_manifest_raw(reference).await?;
        if is_index(&manifest.media_type) {
            return index_platforms(&manifest).map_err(|e| invalid(Operation::GetManifest, reference, e.to_string()));
        }
        let config = self.fetch_config(reference, &manifest).await?;
        Ok(vec![Platform::new(&config.os, &config.architecture, config.variant.as_deref())])
    }

    /// Reads what a builder pushed for one platform: the manifest at `repository@digest` and its config.
    pub async fn fetch_child(&self, repository: &Repository, digest: &str) -> Result<ChildImage, RegistryError> {
        let reference = repository
            .digest(digest)
            .map_err(|e| invalid(Operation::GetManifest, format!("{repository}@{digest}"), e.to_string()))?;
        let manifest = self.fetch_manifest_raw(&reference).await?;
        let config = self.fetch_config(&reference, &manifest).await?;
        Ok(ChildImage { manifest, config })
    }

    /// Pushes index bytes (see [`super::index::assemble_index`]) under each tag, as an OCI image index,
    /// and returns their digest: the sha256 of exactly the bytes pushed. The index's children must
    /// already be in `repository`.
    pub async fn push_index(
        &self,
        repository: &Repository,
        tags: &[String],
        index: &[u8],
    ) -> Result<String, RegistryError> {
        self.push_to_tags(Operation::PushIndex, repository, tags, index, OCI_IMAGE_INDEX_MEDIA_TYPE).await
    }

    /// Pushes manifest bytes of `media_type` under each tag (a copy of a manifest that is in the
    /// repository already, or an index of such) and returns their digest. A tag that already names
    /// these bytes is left alone: a repeated publish, or a restart between a push and the status write,
    /// pushes nothing.
    pub async fn push_manifest(
        &self,
        repository: &Repository,
        tags: &[String],
        bytes: &[u8],
        media_type: &str,
    ) -> Result<String, RegistryError> {
        self.push_to_tags(Operation::PushManifest, repository, tags, bytes, media_type).await
    }

    async fn push_to_tags(
        &self,
        op: Operation,
        repository: &Repository,
        tags: &[String],
        bytes: &[u8],
        media_type: &str,
    ) -> Result<String, RegistryError> {
        if tags.is_empty() {
            return Err(invalid(op, repository, "no tags to push".to_string()));
        }
        let references = tags
            .iter()
            .map(|tag| repository.tag(tag).map_err(|e| invalid(op, format!("{repository}:{tag}"), e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let digest = digest_of(bytes);
        for reference in &references {
            if self.head_digest(reference).await.is_ok_and(|current| current == digest) {
                continue;
            }
            self.put_manifest(op, reference, bytes, media_type).await?;
        }
        Ok(digest)
    }

    /// PUT of manifest bytes to `reference` (a tag, or their own digest).
    async fn put_manifest(
        &self,
        op: Operation,
        reference: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), RegistryError> {
        self.call(op, reference, |base| async move {
            let url = manifest_url(&base, reference);
            let put = |http: &reqwest::Client| http.put(&url).header(CONTENT_TYPE, media_type).body(bytes.to_vec());
            let answer = self.wire.send(&base, reference.repository(), Access::Push, put).await?;
            match answer.status().is_success() {
                true => Ok(()),
                false => Err(status_error(answer).await),
            }
        })
        .await
    }

    /// Deletes `tag` and only the tag (see `untag.rs`): one try, for cleaning up. A registry
    /// that cannot delete tags answers [`Untagged::Refused`]; an error means no answer.
    pub async fn delete_tag(&self, repository: &Repository, tag: &str) -> Result<Untagged, RegistryError> {
        let op = Operation::DeleteTag;
        let reference = repository.tag(tag).map_err(|e| invalid(op, format!("{repository}:{tag}"), e.to_string()))?;
        let base = self.base(reference.resolve_registry(), self.is_plain(reference.resolve_registry()));
        let request = delete_tag(&self.wire, &base, reference.repository(), tag);
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(result) => result.map_err(|e| RegistryError::from_wire(op, &reference, &e)),
            Err(_) => Err(timed_out(op, &reference, self.request_timeout)),
        }
    }

    /// One operation: retried while its errors are transient, each try bounded in time, to
    /// `https://host` or (insecure only) `http://host` for a registry without TLS.
    async fn call<'a, T, F, Fut>(&'a self, op: Operation, reference: &Reference, attempt: F) -> Result<T, RegistryError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T, WireError>> + 'a,
    {
        self.call_within(op, reference, self.request_timeout, attempt).await
    }

    /// [`Self::call`] with each try bounded by `limit` (a blob transfer takes longer than a manifest).
    async fn call_within<'a, T, F, Fut>(
        &'a self,
        op: Operation,
        reference: &Reference,
        limit: Duration,
        attempt: F,
    ) -> Result<T, RegistryError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T, WireError>> + 'a,
    {
        let host = reference.resolve_registry();
        let once = |plain: bool| {
            let future = attempt(self.base(host, plain));
            async move {
                match tokio::time::timeout(limit, future).await {
                    Ok(result) => result.map_err(|e| RegistryError::from_wire(op, reference, &e)),
                    Err(_) => Err(timed_out(op, reference, limit)),
                }
            }
        };
        let attempt = move || async move {
            if !self.insecure || self.is_plain(host) {
                return once(self.is_plain(host)).await;
            }
            match once(false).await {
                Err(error) if error.kind == ErrorKind::Tls => {
                    // Certificates are not checked here, so a failed handshake means no TLS at all.
                    let plain = once(true).await;
                    match &plain {
                        Err(e) if matches!(e.kind, ErrorKind::Connect | ErrorKind::Tls) => Err(error),
                        _ => {
                            self.mark_plain(host);
                            plain
                        }
                    }
                }
                result => result,
            }
        };
        retry(self.retry, attempt).await
    }

    fn base(&self, host: &str, plain: bool) -> String {
        format!("{}://{host}", if plain { "http" } else { "https" })
    }

    fn is_plain(&self, host: &str) -> bool {
        self.insecure && self.plain_hosts.lock().map(|hosts| hosts.contains(host)).unwrap_or(false)
    }

    fn mark_plain(&self, host: &str) {
        if let Ok(mut hosts) = self.plain_hosts.lock()
            && hosts.insert(host.to_string())
        {
            tracing::info!(host, "registry speaks plain HTTP (insecure registry)");
        }
    }
}

fn manifest_url(base: &str, reference: &Reference) -> String {
    let name = reference.digest().or(reference.tag()).unwrap_or("latest");
    format!("{base}/v2/{}/manifests/{name}", reference.repository())
}

/// The `Docker-Content-Digest` header, if the registry sent one.
fn content_digest(answer: &reqwest::Response) -> Option<String> {
    answer.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn timed_out(op: Operation, target: impl std::fmt::Display, limit: Duration) -> RegistryError {
    RegistryError::new(op, target, ErrorKind::Timeout, format!("no answer within {limit:?}"))
}

fn invalid(op: Operation, target: impl std::fmt::Display, message: String) -> RegistryError {
    RegistryError::new(op, target, ErrorKind::Invalid, message)
}

/// Whether some PEM text holds at least one certificate.
fn pem_has_certificate(pem: &[u8]) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    pem.windows(BEGIN.len()).any(|w| w == BEGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pem_certificates_are_recognised() {
        assert!(pem_has_certificate(b"junk\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"));
        assert!(!pem_has_certificate(b"-----BEGIN PRIVATE KEY-----\n"));
        assert!(!pem_has_certificate(b""));
    }

    #[test]
    fn setup_refuses_what_is_not_a_ca() {
        let options = |pem: &[u8]| RegistryOptions { extra_ca_pem: vec![pem.to_vec()], ..RegistryOptions::default() };
        let error = Registry::new(options(b"hello"), RegistryAuth::Anonymous).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Setup);
        assert!(error.to_string().contains("extra CA 1 holds no PEM certificate"), "{error}");
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let error = Registry::new(options(garbage), RegistryAuth::Anonymous).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Setup);
        assert!(
            Registry::new(RegistryOptions { insecure: true, ..RegistryOptions::default() }, RegistryAuth::Anonymous)
                .is_ok()
        );
    }

    /// The controller runs these in spawned tasks: their futures must be Send.
    #[test]
    fn futures_are_send() {
        fn send<T: Send>(_: &T) {}
        let Ok(registry) = Registry::new(RegistryOptions::default(), RegistryAuth::Anonymous) else { panic!("setup") };
        let repository: Repository = "localhost:5000/blog".parse().unwrap();
        let reference = repository.tag("new").unwrap();
        let manifest = RawManifest { bytes: vec![], media_type: String::new(), digest: DIGEST.to_string() };
        send(&registry.head_digest(&reference));
        send(&registry.fetch_manifest_raw(&reference));
        send(&registry.fetch_config(&reference, &manifest));
        send(&registry.fetch_child(&repository, DIGEST));
        send(&registry.push_index(&repository, &[], b"{}"));
    }

    #[tokio::test]
    async fn push_index_refuses_bad_tags_before_any_request() {
        let registry = Registry::new(RegistryOptions::default(), RegistryAuth::Anonymous).unwrap();
        // Port 9 (discard) on loopback: nothing is sent, the checks come first.
        let repository: Repository = "127.0.0.1:9/blog".parse().unwrap();
        let error = registry.push_index(&repository, &[], b"{}").await.unwrap_err();
        assert!(error.to_string().ends_with("no tags to push"), "{error}");
        let error = registry.push_index(&repository, &["ok".into(), "-bad".into()], b"{}").await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Invalid);
        assert!(error.to_string().contains("\"-bad\" is not a valid tag"), "{error}");
    }
}
