//! Writing one destination object as its bytes come: a single PutObject
//! while they fit in one upload part, else a multipart upload of parts of
//! exactly [`UPLOAD_PART_BYTES`] (the last one shorter). Memory holds at
//! most one upload part and the piece being added, never the object.
//!
//! Small objects cost what they did (one PUT: a multipart upload is three
//! requests at least). Part boundaries depend only on the object's bytes,
//! so a retried publish uploads the same parts. Every request carries the
//! destination's settings ([`shared::destination_write`]); a failure of any
//! step is a [`WriteFailure`] for the diagnosis, and the upload is aborted
//! where the destination allows it (`s3:AbortMultipartUpload`, which it
//! need not grant: its lifecycle rule then removes what is left).

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::CompletedPart;

use shared::config::Destination;
use shared::destination_write;
use shared::diagnose::WriteFailure;

pub use crate::upload::UPLOAD_PART_BYTES;

/// A destination object being written.
pub struct DestinationUpload<'a> {
    s3: aws_sdk_s3::Client,
    destination: &'a Destination,
    key: &'a str,
    content_type: &'a str,
    /// Bytes not sent yet: at most [`UPLOAD_PART_BYTES`] between calls.
    buffered: Vec<u8>,
    upload_id: Option<String>,
    completed: Vec<CompletedPart>,
}

/// The S3 request that failed, and how.
#[derive(Debug)]
pub struct StepFailure {
    /// `PutObject`, `CreateMultipartUpload`, `UploadPart` or
    /// `CompleteMultipartUpload`.
    pub operation: &'static str,
    pub failure: WriteFailure,
}

impl<'a> DestinationUpload<'a> {
    /// An object to be stored at `key` in `destination` through `s3` (the
    /// destination's client); nothing is sent yet.
    pub fn new(
        s3: aws_sdk_s3::Client,
        destination: &'a Destination,
        key: &'a str,
        content_type: &'a str,
    ) -> Self {
        Self {
            s3,
            destination,
            key,
            content_type,
            buffered: Vec::new(),
            upload_id: None,
            completed: Vec::new(),
        }
    }

    /// Adds the object's next bytes, sending every upload part they
    /// complete. A part is sent only once more bytes follow it, so the last
    /// part is never empty and an object of one part's size or less is one
    /// PutObject.
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<(), StepFailure> {
        while self.buffered.len() + bytes.len() > UPLOAD_PART_BYTES {
            let take = UPLOAD_PART_BYTES - self.buffered.len();
            // The next part is as large: allocate it once.
            let mut part =
                std::mem::replace(&mut self.buffered, Vec::with_capacity(UPLOAD_PART_BYTES));
            part.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            self.send_part(part).await?;
        }
        self.buffered.extend_from_slice(bytes);
        Ok(())
    }

    /// Whether an upload part has been sent (the object is a multipart
    /// upload).
    pub fn is_multipart(&self) -> bool {
        self.upload_id.is_some()
    }

    /// Stores the object: one PutObject when no part was sent, else the last
    /// part and the upload's completion. The upload is aborted when a step
    /// fails.
    pub async fn finish(mut self) -> Result<(), StepFailure> {
        let Some(upload_id) = self.upload_id.clone() else {
            let body = std::mem::take(&mut self.buffered);
            return destination_write::put_object(&self.s3, self.destination, self.key)
                .content_type(self.content_type)
                .body(ByteStream::from(body))
                .send()
                .await
                .map(|_| ())
                .map_err(|error| StepFailure {
                    operation: "PutObject",
                    failure: destination_write::write_failure(&error),
                });
        };
        let last = std::mem::take(&mut self.buffered);
        self.send_part(last).await?;
        let parts = std::mem::take(&mut self.completed);
        let completed = destination_write::complete_multipart_upload(
            &self.s3,
            self.destination,
            self.key,
            &upload_id,
            parts,
        )
        .send()
        .await;
        if let Err(error) = completed {
            let failure = destination_write::write_failure(&error);
            self.abort_upload().await;
            return Err(StepFailure {
                operation: "CompleteMultipartUpload",
                failure,
            });
        }
        Ok(())
    }

    /// Gives the object up: a multipart upload started is aborted (where the
    /// destination allows it; a refusal is logged, the bucket's lifecycle
    /// rule removes the upload).
    pub async fn abort(mut self) {
        self.abort_upload().await;
    }

    async fn abort_upload(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let aborted = destination_write::abort_multipart_upload(
            &self.s3,
            self.destination,
            self.key,
            &upload_id,
        )
        .send()
        .await;
        if let Err(error) = aborted {
            let failure = destination_write::write_failure(&error);
            tracing::warn!(destination = %self.destination.name, key = %self.key, code = ?failure.code, kind = ?failure.kind, "the multipart upload could not be aborted; the bucket's lifecycle rule (AbortIncompleteMultipartUpload) removes it");
        }
    }

    /// Sends `part` as the next upload part, creating the multipart upload
    /// first if needed; aborts the upload when the part fails.
    async fn send_part(&mut self, part: Vec<u8>) -> Result<(), StepFailure> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let created = destination_write::create_multipart_upload(
                    &self.s3,
                    self.destination,
                    self.key,
                )
                .content_type(self.content_type)
                .send()
                .await
                .map_err(|error| StepFailure {
                    operation: "CreateMultipartUpload",
                    failure: destination_write::write_failure(&error),
                })?;
                let id = created.upload_id().unwrap_or_default().to_owned();
                self.upload_id = Some(id.clone());
                id
            }
        };
        let part_number = self.completed.len() as i32 + 1;
        let uploaded = destination_write::upload_part(
            &self.s3,
            self.destination,
            self.key,
            &upload_id,
            part_number,
        )
        .body(ByteStream::from(part))
        .send()
        .await;
        match uploaded {
            Ok(uploaded) => {
                self.completed.push(
                    CompletedPart::builder()
                        .part_number(part_number)
                        .set_e_tag(uploaded.e_tag().map(str::to_owned))
                        .set_checksum_sha256(uploaded.checksum_sha256().map(str::to_owned))
                        .build(),
                );
                Ok(())
            }
            Err(error) => {
                let failure = destination_write::write_failure(&error);
                self.abort_upload().await;
                Err(StepFailure {
                    operation: "UploadPart",
                    failure,
                })
            }
        }
    }
}
