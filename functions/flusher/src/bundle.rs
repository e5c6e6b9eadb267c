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
//! multipart upload as they grow.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::sync::Mutex;

use crate::archive::UPLOAD_PART_BYTES;
use crate::error::FlushError;

/// A bundle being written.
pub struct Bundle {
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bytes not sent yet.
    buffer: Vec<u8>,
    /// Bytes sent in upload parts.
    uploaded: u64,
    upload_id: Option<String>,
    completed: Vec<CompletedPart>,
    /// Files appended.
    files: usize,
    /// Why an upload part failed: the bytes it held are lost, so the bundle
    /// cannot be finished and no manifest may name it.
    failed: Option<String>,
}

impl Bundle {
    /// A bundle to be stored at `key` (see `layout::bundle_key`); nothing
    /// is sent until files are appended.
    pub fn new(s3: aws_sdk_s3::Client, bucket: &str, key: String) -> Self {
        Self {
            s3,
            bucket: bucket.to_owned(),
            key,
            state: Mutex::default(),
        }
    }

    /// Where the bundle is stored.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Appends one file; returns where it starts. Its bytes are stored once
    /// [`Bundle::finish`] succeeds, not before: a manifest may name them
    /// only then.
    pub async fn append(&self, file: &[u8]) -> Result<u64, FlushError> {
        let mut state = self.state.lock().await;
        self.check(&state)?;
        let offset = state.uploaded + state.buffer.len() as u64;
        state.buffer.extend_from_slice(file);
        state.files += 1;
        if state.buffer.len() >= UPLOAD_PART_BYTES {
            let bytes = std::mem::take(&mut state.buffer);
            if let Err(error) = self.upload(&mut state, bytes).await {
                state.failed = Some(error.to_string());
                return Err(error);
            }
        }
        Ok(offset)
    }

    fn check(&self, state: &State) -> Result<(), FlushError> {
        match &state.failed {
            Some(error) => Err(FlushError::Corrupt {
                what: format!("bundle s3://{}/{}", self.bucket, self.key),
                message: format!("an upload part failed, so it cannot be stored: {error}"),
            }),
            None => Ok(()),
        }
    }

    /// Stores the bundle (one PutObject when it is smaller than an upload
    /// part); nothing when no file was appended. Returns the files stored.
    pub async fn finish(&self) -> Result<usize, FlushError> {
        let mut state = self.state.lock().await;
        self.check(&state)?;
        let tail = std::mem::take(&mut state.buffer);
        match state.upload_id.clone() {
            None if state.files == 0 => {}
            None => {
                self.s3
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .content_type("application/octet-stream")
                    .body(ByteStream::from(tail))
                    .send()
                    .await
                    .map_err(|e| FlushError::s3("PutObject", &self.bucket, &self.key, e))?;
            }
            Some(upload_id) => {
                let completed = async {
                    if !tail.is_empty() {
                        self.upload(&mut state, tail).await?;
                    }
                    self.s3
                        .complete_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&self.key)
                        .upload_id(&upload_id)
                        .multipart_upload(
                            CompletedMultipartUpload::builder()
                                .set_parts(Some(std::mem::take(&mut state.completed)))
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(|e| {
                            FlushError::s3("CompleteMultipartUpload", &self.bucket, &self.key, e)
                        })
                }
                .await;
                if let Err(error) = completed {
                    // The bucket's lifecycle rule also aborts what this misses.
                    let _ = self
                        .s3
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&self.key)
                        .upload_id(upload_id)
                        .send()
                        .await;
                    return Err(error);
                }
            }
        }
        Ok(state.files)
    }

    async fn upload(&self, state: &mut State, bytes: Vec<u8>) -> Result<(), FlushError> {
        let upload_id = match &state.upload_id {
            Some(id) => id.clone(),
            None => {
                let created = self
                    .s3
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .content_type("application/octet-stream")
                    .send()
                    .await
                    .map_err(|e| {
                        FlushError::s3("CreateMultipartUpload", &self.bucket, &self.key, e)
                    })?;
                let id = created.upload_id().unwrap_or_default().to_owned();
                state.upload_id = Some(id.clone());
                id
            }
        };
        let part_number = state.completed.len() as i32 + 1;
        let length = bytes.len() as u64;
        let uploaded = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload_id)
            .part_number(part_number)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| FlushError::s3("UploadPart", &self.bucket, &self.key, e))?;
        state.completed.push(
            CompletedPart::builder()
                .part_number(part_number)
                .set_e_tag(uploaded.e_tag().map(str::to_owned))
                .build(),
        );
        state.uploaded += length;
        Ok(())
    }
}

/// A new attempt id: 128 random bits, hex, so that two runs (or workers)
/// never write the same bundle key.
pub fn attempt_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}
