//! Blobs: what the `assemble` builder writes (its layer and config) and copies (the base image's
//! layers, mounted from another repository of the same registry where it can, else streamed through).

use std::time::Duration;

use bytes::Bytes;
use oci_client::Reference;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Body, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{Registry, invalid, timed_out};
use crate::registry::error::{Operation, RegistryError};
use crate::registry::reference::Repository;
use crate::registry::wire::{Access, WireError, read_capped, status_error};

/// A layer may take long to stream; each try of a blob transfer gets this long.
const BLOB_TRANSFER_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Where a blob comes from when it is put: bytes in memory, or a file streamed from disk.
pub enum BlobSource<'a> {
    Bytes(&'a [u8]),
    File(&'a std::path::Path),
}

impl Registry {
    /// Whether `repository` holds the blob.
    pub async fn has_blob(&self, repository: &Repository, digest: &str) -> Result<bool, RegistryError> {
        let reference = &blob_reference(Operation::PushBlob, repository, digest)?;
        self.call(Operation::PushBlob, reference, |base| {
            let url = format!("{base}/v2/{}/blobs/{digest}", reference.repository());
            async move {
                let head = |http: &reqwest::Client| http.head(&url);
                let answer = self.wire.send(&base, reference.repository(), Access::Pull, head).await?;
                match answer.status() {
                    status if status.is_success() => Ok(true),
                    StatusCode::NOT_FOUND => Ok(false),
                    _ => Err(status_error(answer).await),
                }
            }
        })
        .await
    }

    /// The registry's answer to a GET of a blob, when it is a success.
    async fn get_blob(&self, base: &str, reference: &Reference, digest: &str) -> Result<Response, WireError> {
        let url = format!("{base}/v2/{}/blobs/{digest}", reference.repository());
        let get = |http: &reqwest::Client| http.get(&url);
        let answer = self.wire.send(base, reference.repository(), Access::Pull, get).await?;
        if !answer.status().is_success() {
            return Err(status_error(answer).await);
        }
        Ok(answer)
    }

    /// The bytes of a config blob, `size` of them at most, checked against its digest.
    pub async fn fetch_blob(&self, reference: &Reference, digest: &str, size: u64) -> Result<Vec<u8>, RegistryError> {
        let op = Operation::GetConfig;
        let bytes = self
            .call(op, reference, |base| async move {
                read_capped(self.get_blob(&base, reference, digest).await?, size, "image config").await
            })
            .await?;
        if bytes.len() as u64 != size || crate::registry::digest_of(&bytes) != digest {
            let why = format!("the config blob is not the {size} bytes of {digest} that the manifest names");
            return Err(invalid(op, reference, why));
        }
        Ok(bytes)
    }

    /// Streams a blob of `size` bytes (a base image's layer) into `chunks`, checking its size and digest
    /// as it passes; an error once streaming has begun is not retried (the receiver has part of it).
    /// Stops early, without error, when the receiver is gone: it failed, and says why itself.
    pub async fn stream_blob(
        &self,
        reference: &Reference,
        digest: &str,
        size: u64,
        chunks: mpsc::Sender<Bytes>,
    ) -> Result<(), RegistryError> {
        let op = Operation::ReadLayer;
        let mut answer =
            self.call(op, reference, |base| async move { self.get_blob(&base, reference, digest).await }).await?;
        let wrong =
            || invalid(op, reference, format!("the layer is not the {size} bytes of {digest} that the manifest names"));
        let stream = async {
            let (mut hasher, mut read) = (Sha256::new(), 0u64);
            while let Some(chunk) =
                answer.chunk().await.map_err(|e| RegistryError::from_wire(op, reference, &e.into()))?
            {
                read += chunk.len() as u64;
                if read > size {
                    return Err(wrong());
                }
                hasher.update(&chunk);
                if chunks.send(chunk).await.is_err() {
                    return Ok(());
                }
            }
            let hex: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
            if read != size || format!("sha256:{hex}") != digest {
                return Err(wrong());
            }
            Ok(())
        };
        match tokio::time::timeout(BLOB_TRANSFER_LIMIT, stream).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(op, reference, BLOB_TRANSFER_LIMIT)),
        }
    }

    /// Puts a blob of `size` bytes under `digest`, unless the repository holds it already. The
    /// registry checks the digest of what it receives.
    pub async fn put_blob(
        &self,
        repository: &Repository,
        digest: &str,
        size: u64,
        source: BlobSource<'_>,
    ) -> Result<(), RegistryError> {
        if self.has_blob(repository, digest).await? {
            return Ok(());
        }
        let op = Operation::PushBlob;
        let reference = &blob_reference(op, repository, digest)?;
        let source = &source;
        self.call_within(op, reference, BLOB_TRANSFER_LIMIT, |base| async move {
            let location = self.start_upload(&base, reference, None).await?.ok_or_else(|| WireError::Status {
                status: 201,
                body: "the registry mounted a blob archway did not ask it to mount".into(),
            })?;
            let body = match source {
                BlobSource::Bytes(bytes) => Body::from(bytes.to_vec()),
                BlobSource::File(path) => match tokio::fs::File::open(path).await {
                    Ok(file) => Body::from(file),
                    Err(error) => return Err(WireError::Local(format!("cannot read {}: {error}", path.display()))),
                },
            };
            self.finish_upload(&base, reference, &location, digest, size, body).await
        })
        .await
    }

    /// Makes the blob of `from`'s repository (a base image's layer) part of `to`: nothing when `to`
    /// holds it, a cross-repository mount on the same registry, else a copy streamed through, read
    /// with `source` (the client with `from`'s registry's credentials, never this one's).
    pub async fn copy_blob(
        &self,
        source: &Registry,
        from: &Reference,
        to: &Repository,
        digest: &str,
        size: u64,
    ) -> Result<(), RegistryError> {
        if self.has_blob(to, digest).await? {
            return Ok(());
        }
        let op = Operation::CopyBlob;
        let target = blob_reference(op, to, digest)?;
        let same_registry = from.resolve_registry() == target.resolve_registry();
        let (target, from_repository) = (&target, from.repository());
        self.call_within(op, target, BLOB_TRANSFER_LIMIT, |base| async move {
            let mount = same_registry.then_some((digest, from_repository));
            let Some(location) = self.start_upload(&base, target, mount).await? else { return Ok(()) };
            // Not mounted (another registry, or one that does not mount): stream it through.
            let source_host = from.resolve_registry();
            let source_base = source.base(source_host, source.is_plain(source_host));
            let url = format!("{source_base}/v2/{from_repository}/blobs/{digest}");
            let get = |http: &reqwest::Client| http.get(&url);
            let answer = source.wire.send(&source_base, from_repository, Access::Pull, get).await?;
            if !answer.status().is_success() {
                return Err(status_error(answer).await);
            }
            let body = Body::wrap_stream(answer.bytes_stream());
            self.finish_upload(&base, target, &location, digest, size, body).await
        })
        .await
    }

    /// Pushes manifest bytes by their digest alone (no tag), as BuildKit's push-by-digest does.
    pub async fn push_manifest_by_digest(
        &self,
        repository: &Repository,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<String, RegistryError> {
        let op = Operation::PushManifest;
        let digest = crate::registry::digest_of(bytes);
        let reference = blob_reference(op, repository, &digest)?;
        self.put_manifest(op, &reference, bytes, media_type).await?;
        Ok(digest)
    }

    /// Starts an upload (`POST .../blobs/uploads/`, with `mount` a cross-repository mount): its
    /// location, or `None` when the registry mounted the blob.
    async fn start_upload(
        &self,
        base: &str,
        target: &Reference,
        mount: Option<(&str, &str)>,
    ) -> Result<Option<String>, WireError> {
        let url = format!("{base}/v2/{}/blobs/uploads/", target.repository());
        let post = |http: &reqwest::Client| {
            let request = http.post(&url).header(CONTENT_LENGTH, 0);
            match mount {
                Some((digest, from)) => request.query(&[("mount", digest), ("from", from)]),
                None => request,
            }
        };
        let answer = self.wire.send(base, target.repository(), Access::Push, post).await?;
        match answer.status() {
            StatusCode::CREATED if mount.is_some() => Ok(None),
            StatusCode::ACCEPTED => {
                let location = answer.headers().get(LOCATION).and_then(|l| l.to_str().ok()).map(str::to_string);
                let location = location.ok_or_else(|| WireError::Status {
                    status: 202,
                    body: "the registry started an upload but named no Location".into(),
                })?;
                Ok(Some(absolute(base, &location)))
            }
            _ => Err(status_error(answer).await),
        }
    }

    /// Sends the whole blob to an upload's location and closes it with its digest.
    async fn finish_upload(
        &self,
        base: &str,
        target: &Reference,
        location: &str,
        digest: &str,
        size: u64,
        body: Body,
    ) -> Result<(), WireError> {
        // A body streams once. The upload's POST got the push token (kept by scope), so this PUT meets no
        // challenge; if it did, the empty body fails the digest check and the retry starts over.
        let body = std::sync::Mutex::new(Some(body));
        let put = |http: &reqwest::Client| {
            let body = body.lock().ok().and_then(|mut b| b.take()).unwrap_or_else(|| Body::from(Vec::new()));
            http.put(location)
                .query(&[("digest", digest)])
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(body)
        };
        let answer = self.wire.send(base, target.repository(), Access::Push, put).await?;
        match answer.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT => Ok(()),
            _ => Err(status_error(answer).await),
        }
    }
}

/// A blob's repository and digest as a reference: what errors name and what the host comes from.
fn blob_reference(op: Operation, repository: &Repository, digest: &str) -> Result<Reference, RegistryError> {
    repository.digest(digest).map_err(|e| invalid(op, format!("{repository}@{digest}"), e.to_string()))
}

/// An upload location as a URL: registries may answer with a path alone.
fn absolute(base: &str, location: &str) -> String {
    match location.starts_with('/') {
        true => format!("{base}{location}"),
        false => location.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_locations_are_made_absolute() {
        assert_eq!(
            absolute("http://127.0.0.1:5000", "/v2/a/blobs/uploads/u?_state=x"),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x"
        );
        assert_eq!(absolute("http://r", "https://s3.example/upload?sig=1"), "https://s3.example/upload?sig=1");
    }
}
