//! Writing one archive part: gzip NDJSON streamed to S3 with a multipart
//! upload, so memory holds one upload part (8 MiB), not the archive part.
//! A part that ends up smaller than one upload part goes into the run's
//! bundle (see `bundle`) when it has one, else is a single PutObject.
//! The same lines at the same level give the same bytes, so rewriting a part
//! after a crash is an overwrite, not a copy (docs/design.md, invariant 3).

use sha2::{Digest, Sha256};

use shared::encode::LineGzEncoder;
use shared::manifest::{self, ArchivePart};
use shared::time::format_rfc3339_millis;

use crate::bundle::Bundle;
use crate::error::FlushError;
pub use crate::upload::UPLOAD_PART_BYTES;
use crate::upload::Upload;

/// An archive part being written.
pub struct PartWriter {
    upload: Upload,
    number: u32,
    encoder: LineGzEncoder<Vec<u8>>,
    /// Whether an upload part has been sent (the part is then an object of
    /// its own, whatever its size).
    started: bool,
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
            upload: Upload::new(s3, bucket, key, "application/gzip"),
            number,
            encoder: LineGzEncoder::new(Vec::with_capacity(UPLOAD_PART_BYTES), level),
            started: false,
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
        self.started = true;
        self.upload.send_part(bytes).await
    }

    /// Ends the gzip stream, stores the rest, and describes the part. A
    /// part smaller than an upload part goes into `bundle` when given (its
    /// key and offset are the bundle's).
    pub async fn finish(mut self, bundle: Option<&Bundle>) -> Result<ArchivePart, FlushError> {
        let rest = std::mem::take(self.encoder.get_mut());
        let encoder = std::mem::replace(&mut self.encoder, LineGzEncoder::new(Vec::new(), 0));
        let mut tail = rest;
        tail.extend(encoder.finish().expect("writing to memory"));
        self.hasher.update(&tail);
        self.uploaded_bytes += tail.len() as u64;
        let (key, offset) = match bundle {
            Some(bundle) if !self.started => {
                (bundle.key().to_owned(), Some(bundle.append(&tail).await?))
            }
            _ => {
                let key = self.upload.key().to_owned();
                self.upload.finish(tail).await?;
                (key, None)
            }
        };
        Ok(ArchivePart {
            number: self.number,
            key,
            events: self.events,
            bytes: self.uploaded_bytes,
            uncompressed_bytes: self.uncompressed_bytes,
            min_event_time: self.min_time.map(format_rfc3339_millis),
            max_event_time: self.max_time.map(format_rfc3339_millis),
            sha256: manifest::hex_of(&self.hasher.finalize()),
            provenance: None,
            offset,
            shards: None,
        })
    }
}
