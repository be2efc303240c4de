//! The registry I/O: a thin wrapper over oci-client with timeouts, retries of transient errors, and
//! errors sorted for the controller. Everything it decides is in the pure modules beside it.
//!
//! One [`Registry`] holds one set of credentials: oci-client remembers the first credentials it sees
//! for a host, so a client must never be shared between builds that use different push secrets.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OCI_IMAGE_INDEX_MEDIA_TYPE, OciDescriptor};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::error::{ErrorKind, Operation, RegistryError, chain};
use super::index::digest_of;
use super::manifest::{
    ACCEPTED_MANIFEST_TYPES, ChildImage, ImageConfig, RawManifest, config_descriptor, index_platforms, is_index,
    media_type_of, parse_image_config,
};
use super::reference::{Repository, is_sha256_digest};
use super::retry::{RetryPolicy, retry};
use super::untag::{Untagged, delete_tag};
use crate::platform::Platform;

const USER_AGENT: &str = concat!("archway/", env!("CARGO_PKG_VERSION"));

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Like Docker's insecure registries: HTTPS without verifying the certificate, and plain HTTP
    /// when the registry does not speak TLS at all. Only for registries you trust on a network you trust.
    pub insecure: bool,
    /// PEM certificates (one or more per entry) of CAs to trust besides the system's.
    pub extra_ca_pem: Vec<Vec<u8>>,
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
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

/// A registry client bound to one set of credentials.
pub struct Registry {
    /// HTTPS; without certificate checks when insecure.
    https: Client,
    /// Plain HTTP, only when insecure.
    http: Option<Client>,
    /// Hosts found to speak plain HTTP (insecure only).
    plain_hosts: Mutex<BTreeSet<String>>,
    /// For the one request oci-client does not make (deleting a tag), with the same TLS setup.
    untag: reqwest::Client,
    auth: RegistryAuth,
    request_timeout: Duration,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("insecure", &self.http.is_some())
            .field("auth", &self.auth)
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
        let mut extra_root_certificates = Vec::new();
        for (i, pem) in options.extra_ca_pem.iter().enumerate() {
            if !pem_has_certificate(pem) {
                return Err(setup(format!(
                    "extra CA {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    i + 1
                )));
            }
            extra_root_certificates.push(Certificate { encoding: CertificateEncoding::Pem, data: pem.clone() });
        }
        let config = |protocol: ClientProtocol| ClientConfig {
            protocol,
            accept_invalid_certificates: options.insecure,
            extra_root_certificates: extra_root_certificates.clone(),
            connect_timeout: Some(options.connect_timeout),
            read_timeout: Some(options.read_timeout),
            user_agent: USER_AGENT,
            // Children are read by digest; never let the client pick a platform from an index.
            platform_resolver: None,
            ..ClientConfig::default()
        };
        crate::install_crypto_provider();
        // `Client::new` would fall back to defaults on a bad config; `try_from` says what is wrong.
        let build = |protocol| Client::try_from(config(protocol)).map_err(|e| setup(chain(&e)));
        let mut roots = Vec::new();
        for pem in &options.extra_ca_pem {
            roots.extend(reqwest::Certificate::from_pem_bundle(pem).map_err(|e| setup(chain(&e)))?);
        }
        let untag = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(options.insecure)
            .tls_certs_merge(roots)
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| setup(chain(&e)))?;
        Ok(Registry {
            https: build(ClientProtocol::Https)?,
            http: if options.insecure { Some(build(ClientProtocol::Http)?) } else { None },
            plain_hosts: Mutex::new(BTreeSet::new()),
            untag,
            auth,
            request_timeout: options.request_timeout,
            retry: options.retry,
        })
    }

    /// The digest of the manifest a reference names, by HEAD (falling back to GET where the registry
    /// sends no digest header).
    pub async fn head_digest(&self, reference: &Reference) -> Result<String, RegistryError> {
        let op = Operation::HeadManifest;
        let digest = self
            .call(op, reference, |client, auth| {
                let reference = reference.clone();
                async move { client.fetch_manifest_digest(&reference, &auth).await }
            })
            .await?;
        if !is_sha256_digest(&digest) {
            return Err(invalid(op, reference, format!("the registry gave digest {digest:?}, not sha256:<64 hex>")));
        }
        Ok(digest)
    }

    /// A manifest byte for byte, with its media type and digest; image manifests and indexes, OCI
    /// and Docker. When the reference has a digest, the bytes are checked against it.
    pub async fn fetch_manifest_raw(&self, reference: &Reference) -> Result<RawManifest, RegistryError> {
        let op = Operation::GetManifest;
        let (bytes, digest) = self
            .call(op, reference, |client, auth| {
                let reference = reference.clone();
                async move { client.pull_manifest_raw(&reference, &auth, ACCEPTED_MANIFEST_TYPES).await }
            })
            .await?;
        let bytes = bytes.to_vec();
        let media_type = media_type_of(&bytes).map_err(|e| invalid(op, reference, e.to_string()))?;
        // The digest of the bytes is what names them, whatever the registry's header said.
        let computed = digest_of(&bytes);
        if digest != computed {
            return Err(invalid(op, reference, format!("the registry says {digest} but the bytes are {computed}")));
        }
        Ok(RawManifest { bytes, media_type, digest })
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
        let descriptor = OciDescriptor {
            media_type: config.media_type.clone(),
            digest: config.digest.clone(),
            size: i64::try_from(config.size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let limit = config.size;
        let bytes = self
            .call(op, reference, |client, auth| {
                let (reference, descriptor) = (reference.clone(), descriptor.clone());
                async move {
                    client.store_auth_if_needed(reference.resolve_registry(), &auth).await;
                    let mut stream = client.pull_blob_stream(&reference, &descriptor).await?;
                    let mut bytes = Vec::new();
                    while let Some(chunk) = stream.next().await {
                        bytes.extend_from_slice(&chunk?);
                        if bytes.len() as u64 > limit {
                            break; // More than the descriptor says: the digest check below fails.
                        }
                    }
                    Ok(bytes)
                }
            })
            .await?;
        if bytes.len() as u64 != config.size || digest_of(&bytes) != config.digest {
            let why = format!(
                "the config blob is not the {} bytes of {} that the manifest names",
                config.size, config.digest
            );
            return Err(invalid(op, reference, why));
        }
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
        let body = bytes.to_vec();
        let digest = digest_of(bytes);
        for reference in &references {
            if self.head_digest(reference).await.is_ok_and(|current| current == digest) {
                continue;
            }
            self.call(op, reference, |client, auth| {
                let (reference, body) = (reference.clone(), body.clone());
                async move {
                    client.store_auth_if_needed(reference.resolve_registry(), &auth).await;
                    let Ok(content_type) = media_type.parse() else {
                        return Err(OciDistributionError::GenericError(Some(format!("bad content type {media_type}"))));
                    };
                    client.push_manifest_raw(&reference, body, content_type).await
                }
            })
            .await?;
        }
        Ok(digest)
    }

    /// Deletes `tag` and only the tag (see [`super::untag`]): one try, for cleaning up. A registry
    /// that cannot delete tags answers [`Untagged::Refused`]; an error means no answer.
    pub async fn delete_tag(&self, repository: &Repository, tag: &str) -> Result<Untagged, RegistryError> {
        let op = Operation::DeleteTag;
        let reference = repository.tag(tag).map_err(|e| invalid(op, format!("{repository}:{tag}"), e.to_string()))?;
        let host = reference.resolve_registry();
        let scheme = if self.http.is_some() && self.is_plain(host) { "http" } else { "https" };
        let base = format!("{scheme}://{host}");
        let request = delete_tag(&self.untag, &base, reference.repository(), tag, &self.auth);
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(Ok(untagged)) => Ok(untagged),
            Ok(Err(e)) => Err(RegistryError::new(op, &reference, ErrorKind::Connect, chain(&e))),
            Err(_) => Err(RegistryError::new(
                op,
                &reference,
                ErrorKind::Timeout,
                format!("no answer within {:?}", self.request_timeout),
            )),
        }
    }

    /// One operation: retried while its errors are transient, each try bounded in time, over HTTPS
    /// or (insecure only) plain HTTP for a registry without TLS.
    async fn call<T, F, Fut>(&self, op: Operation, reference: &Reference, attempt: F) -> Result<T, RegistryError>
    where
        F: Fn(Client, RegistryAuth) -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        let host = reference.resolve_registry();
        let once = |client: &Client| {
            let future = attempt(client.clone(), self.auth.clone());
            async move {
                match tokio::time::timeout(self.request_timeout, future).await {
                    Ok(result) => result.map_err(|e| RegistryError::from_oci(op, reference, &e)),
                    Err(_) => Err(RegistryError::new(
                        op,
                        reference,
                        ErrorKind::Timeout,
                        format!("no answer within {:?}", self.request_timeout),
                    )),
                }
            }
        };
        let attempt = move || async move {
            let Some(http) = &self.http else { return once(&self.https).await };
            if self.is_plain(host) {
                return once(http).await;
            }
            match once(&self.https).await {
                Err(error) if error.kind == ErrorKind::Tls => {
                    // Certificates are not checked here, so a failed handshake means no TLS at all.
                    let plain = once(http).await;
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
        match retry(self.retry, attempt).await {
            // oci-client sends a request without credentials when its auth probe failed (it drops that
            // error: a timeout, a refused connection) and the registry answers 401. Once more, which
            // probes again; credentials that are really refused are refused twice.
            Err(error) if error.kind == ErrorKind::Unauthorized && self.auth != RegistryAuth::Anonymous => {
                retry(self.retry, attempt).await
            }
            result => result,
        }
    }

    fn is_plain(&self, host: &str) -> bool {
        self.plain_hosts.lock().map(|hosts| hosts.contains(host)).unwrap_or(false)
    }

    fn mark_plain(&self, host: &str) {
        if let Ok(mut hosts) = self.plain_hosts.lock()
            && hosts.insert(host.to_string())
        {
            tracing::info!(host, "registry speaks plain HTTP (insecure registry)");
        }
    }
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
