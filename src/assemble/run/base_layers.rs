//! The base image's files at the paths the layer touches, read from its layers as they stream from the
//! registry: each blob passes in chunks to a blocking task that gunzips it and reads its tar headers
//! ([`BaseFiles::apply_layer`]); no blob is held whole, in memory or on disk.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::PathBuf;

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use super::{AssembleError, BaseImage};
use crate::assemble::base_files::{BaseFiles, Budget};
use crate::registry::Registry;

/// Chunks in flight between the download and the reader of one layer.
const CHUNKS_IN_FLIGHT: usize = 16;

/// What `base` has at `wanted`, its layers read in order with `registry` (the base's registry's client).
pub(super) async fn base_files(
    registry: &Registry,
    base: &BaseImage,
    wanted: BTreeSet<PathBuf>,
) -> Result<BaseFiles, AssembleError> {
    let mut files = BaseFiles::knowing(wanted);
    let mut budget = Budget::default();
    for (digest, size) in &base.layers {
        let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let read = tokio::task::spawn_blocking(move || {
            let result = files.apply_layer(Chunks { receiver, chunk: Bytes::new() }, &mut budget);
            result.map(|()| (files, budget))
        });
        let streamed = registry.stream_blob(&base.reference, digest, *size, sender).await;
        let read = read.await.map_err(|e| AssembleError::Input(format!("reading the base image's layers: {e}")))?;
        // The download's error first: it explains a reader's truncated tar.
        streamed?;
        (files, budget) = read?;
    }
    Ok(files)
}

/// A blocking reader of the chunks a download sends; the end of the channel is the end of the blob.
struct Chunks {
    receiver: mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.receiver.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        self.chunk.copy_to_slice(&mut buf[..n]);
        Ok(n)
    }
}
