//! Writing one archive part: gzip NDJSON streamed to S3 with a multipart
//! upload, so memory holds one upload part (8 MiB), not the archive part.
//! A part that ends up smaller than one upload part goes into the run's
//! bundle (see `bundle`) when it has one, else is a single PutObject.
//! The same lines at the same level give the same bytes, so rewriting a part
//! after a crash is an overwrite, not a copy (docs/design.md, invariant 3).

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use sha2::{Digest, Sha256};

use shared::encode::LineGzEncoder;
use shared::manifest::ArchivePart;
use shared::time::format_rfc3339_millis;

use crate::bundle::Bundle;
use crate::error::FlushError;

/// Upload parts are sent at this size (S3's minimum is 5 MiB).
pub const UPLOAD_PART_BYTES: usize = 8 * 1024 * 1024;

/// An archive part being written.
pub struct PartWriter {
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    number: u32,
    encoder: LineGzEncoder<Vec<u8>>,
    upload_id: Option<String>,
    completed: Vec<CompletedPart>,
    hasher: Sha256,
    uploaded_bytes: u64,
    events: u64,
    uncompressed_bytes: u64,
    min_time: Option<i64>,
    max_time: Option<i64>,
}

impl PartWriter {
    /// Starts part `number` at `key`; nothing is sent until data is.
    pub fn new(s3: aws_sdk_s3::Client, bucket: &str, key: String, number: u32, level: u32) -> Self {
        Self {
            s3,
            bucket: bucket.to_owned(),
            key,
            number,
            encoder: LineGzEncoder::new(Vec::with_capacity(UPLOAD_PART_BYTES), level),
            upload_id: None,
            completed: Vec::new(),
            hasher: Sha256::new(),
            uploaded_bytes: 0,
            events: 0,
            uncompressed_bytes: 0,
            min_time: None,
            max_time: None,
        }
    }

    /// Compressed bytes produced so far; the lines of the block still
    /// being gathered (at most `shared::encode::LINE_BLOCK_BYTES`) are not
    /// compressed yet.
    pub fn compressed_len(&self) -> u64 {
        self.uploaded_bytes + self.encoder.get_ref().len() as u64
    }

    /// The part's number.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Events written so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Appends one event line (without its newline) and its event time.
    pub async fn push(&mut self, line: &str, event_millis: Option<i64>) -> Result<(), FlushError> {
        self.encoder
            .push_line(line.as_bytes())
            .expect("writing to memory");
        self.events += 1;
        self.uncompressed_bytes += line.len() as u64 + 1;
        if let Some(millis) = event_millis {
            self.min_time = Some(self.min_time.map_or(millis, |m| m.min(millis)));
            self.max_time = Some(self.max_time.map_or(millis, |m| m.max(millis)));
        }
        if self.encoder.get_ref().len() >= UPLOAD_PART_BYTES {
            let bytes = std::mem::replace(
                self.encoder.get_mut(),
                Vec::with_capacity(UPLOAD_PART_BYTES),
            );
            self.upload(bytes).await?;
        }
        Ok(())
    }

    async fn upload(&mut self, bytes: Vec<u8>) -> Result<(), FlushError> {
        self.hasher.update(&bytes);
        self.uploaded_bytes += bytes.len() as u64;
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let created = self
                    .s3
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .content_type("application/gzip")
                    .send()
                    .await
                    .map_err(|e| {
                        FlushError::s3("CreateMultipartUpload", &self.bucket, &self.key, e)
                    })?;
                let id = created.upload_id().unwrap_or_default().to_owned();
                self.upload_id = Some(id.clone());
                id
            }
        };
        let part_number = self.completed.len() as i32 + 1;
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
        self.completed.push(
            CompletedPart::builder()
                .part_number(part_number)
                .set_e_tag(uploaded.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }

    /// Ends the gzip stream, stores the rest, and describes the part. A
    /// part smaller than an upload part goes into `bundle` when given (its
    /// key and offset are the bundle's).
    pub async fn finish(mut self, bundle: Option<&Bundle>) -> Result<ArchivePart, FlushError> {
        let rest = std::mem::take(self.encoder.get_mut());
        let encoder = std::mem::replace(&mut self.encoder, LineGzEncoder::new(Vec::new(), 0));
        let mut tail = rest;
        tail.extend(encoder.finish().expect("writing to memory"));
        let mut offset = None;
        match self.upload_id.clone() {
            None if bundle.is_some() => {
                let bundle = bundle.expect("just checked");
                self.hasher.update(&tail);
                self.uploaded_bytes += tail.len() as u64;
                offset = Some(bundle.append(&tail).await?);
                self.key = bundle.key().to_owned();
            }
            None => {
                self.hasher.update(&tail);
                self.uploaded_bytes += tail.len() as u64;
                self.s3
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .content_type("application/gzip")
                    .body(ByteStream::from(tail))
                    .send()
                    .await
                    .map_err(|e| FlushError::s3("PutObject", &self.bucket, &self.key, e))?;
            }
            Some(upload_id) => {
                if let Err(error) = self.complete(upload_id.clone(), tail).await {
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
        Ok(ArchivePart {
            number: self.number,
            key: self.key.clone(),
            events: self.events,
            bytes: self.uploaded_bytes,
            uncompressed_bytes: self.uncompressed_bytes,
            min_event_time: self.min_time.map(format_rfc3339_millis),
            max_event_time: self.max_time.map(format_rfc3339_millis),
            sha256: self
                .hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            provenance: None,
            offset,
        })
    }

    async fn complete(&mut self, upload_id: String, tail: Vec<u8>) -> Result<(), FlushError> {
        self.upload(tail).await?;
        self.s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.completed)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| FlushError::s3("CompleteMultipartUpload", &self.bucket, &self.key, e))?;
        Ok(())
    }
}
