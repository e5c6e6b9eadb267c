//! A bundle: one archive object holding the small files (archive parts,
//! provenance sidecars, id digests) of every partition a run flushes
//! together, each at a byte range its manifest records. A thousand small
//! partitions then cost one PUT for all of these, not three each: what
//! stays per partition is its manifest commit and its destination file
//! (docs/design.md, invariant 8).
//!
//! Bundles are written before any manifest names them, at a key unique to
//! the run (`layout::bundle_key`), and never rewritten: a run that stops
//! before its commits leaves an object no manifest points to, which the
//! archive's lifecycle expires with the rest. A file's bytes are the same
//! in a bundle as they would be alone (invariant 3: the same staged input
//! gives the same parts; only where they are stored carries the attempt).
//!
//! Memory holds one upload part (8 MiB): larger bundles are sent with a
//! multipart upload as they grow (see `upload`).

use tokio::sync::Mutex;

use shared::layout;

use crate::error::FlushError;
use crate::upload::{UPLOAD_PART_BYTES, Upload};

/// A bundle being written.
pub struct Bundle {
    key: String,
    attempt: String,
    state: Mutex<State>,
}

struct State {
    /// `None` once finished.
    upload: Option<Upload>,
    /// Bytes not sent yet.
    buffer: Vec<u8>,
    /// Bytes sent in upload parts.
    uploaded: u64,
    /// Files appended.
    files: usize,
    /// Why an upload part failed: the bytes it held are lost, so the bundle
    /// cannot be finished and no manifest may name it.
    failed: Option<String>,
}

impl Bundle {
    /// The bundle of a new attempt (a run's group of partitions) whose
    /// "now" is `now_millis`, with a new attempt id (see [`attempt_id`]);
    /// nothing is sent until files are appended.
    pub fn new(s3: aws_sdk_s3::Client, bucket: &str, now_millis: i64) -> Self {
        let attempt = attempt_id();
        let key = layout::bundle_key(now_millis, &attempt);
        let upload = Upload::new(s3, bucket, key.clone(), "application/octet-stream");
        Self {
            key,
            attempt,
            state: Mutex::new(State {
                upload: Some(upload),
                buffer: Vec::new(),
                uploaded: 0,
                files: 0,
                failed: None,
            }),
        }
    }

    /// Where the bundle is stored.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The attempt this bundle belongs to: the other objects its run
    /// writes before committing (large parts, their sidecars) carry it in
    /// their keys too (`layout::archive_part_object_key`).
    pub fn attempt(&self) -> &str {
        &self.attempt
    }

    /// Appends one file; returns where it starts. Its bytes are stored once
    /// [`Bundle::finish`] succeeds, not before: a manifest may name them
    /// only then.
    pub async fn append(&self, file: &[u8]) -> Result<u64, FlushError> {
        self.append_pieces(std::iter::once(file)).await
    }

    /// Appends one file given in pieces (contiguous: no other file comes
    /// between them), sending upload parts as they fill, so the file is
    /// never held whole here; returns where it starts.
    pub async fn append_pieces<P: AsRef<[u8]>>(
        &self,
        pieces: impl IntoIterator<Item = P>,
    ) -> Result<u64, FlushError> {
        let mut state = self.state.lock().await;
        let state = &mut *state;
        self.usable(state)?;
        let offset = state.uploaded + state.buffer.len() as u64;
        state.files += 1;
        for piece in pieces {
            state.buffer.extend_from_slice(piece.as_ref());
            if state.buffer.len() < UPLOAD_PART_BYTES {
                continue;
            }
            let bytes = std::mem::take(&mut state.buffer);
            let length = bytes.len() as u64;
            let upload = state.upload.as_mut().expect("checked usable");
            if let Err(error) = upload.send_part(bytes).await {
                state.failed = Some(error.to_string());
                return Err(error);
            }
            state.uploaded += length;
        }
        Ok(offset)
    }

    /// Stores the bundle (one PutObject when it is smaller than an upload
    /// part); nothing when no file was appended.
    pub async fn finish(&self) -> Result<(), FlushError> {
        let mut state = self.state.lock().await;
        let state = &mut *state;
        self.usable(state)?;
        let upload = state.upload.take().expect("checked usable");
        if state.files > 0 {
            upload.finish(std::mem::take(&mut state.buffer)).await?;
        }
        Ok(())
    }

    /// Refuses a bundle that lost bytes or is already finished.
    fn usable(&self, state: &State) -> Result<(), FlushError> {
        let problem = match (&state.failed, &state.upload) {
            (Some(error), _) => {
                format!("an upload part failed, so it cannot be stored: {error}")
            }
            (None, None) => "already stored: nothing more goes into it".to_owned(),
            (None, Some(_)) => return Ok(()),
        };
        Err(FlushError::Corrupt {
            what: format!("bundle {}", self.key),
            message: problem,
        })
    }
}

/// A new attempt id: 128 random bits, hex, so that two runs (or workers)
/// never write the same key before their commits.
pub(crate) fn attempt_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}
