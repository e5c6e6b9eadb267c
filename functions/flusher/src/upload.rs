//! Writing one object of the export bucket as its bytes come: in upload
//! parts of a multipart upload once they reach one, or with a single
//! PutObject when they never do. Memory holds what the caller has not sent
//! yet, never the object.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use crate::error::FlushError;

/// Upload parts are sent at this size (S3's minimum is 5 MiB).
pub const UPLOAD_PART_BYTES: usize = 8 * 1024 * 1024;

/// An object being written.
pub struct Upload {
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    content_type: &'static str,
    upload_id: Option<String>,
    completed: Vec<CompletedPart>,
}

impl Upload {
    /// An object to be stored at `key`; nothing is sent yet.
    pub fn new(
        s3: aws_sdk_s3::Client,
        bucket: &str,
        key: String,
        content_type: &'static str,
    ) -> Self {
        Self {
            s3,
            bucket: bucket.to_owned(),
            key,
            content_type,
            upload_id: None,
            completed: Vec::new(),
        }
    }

    /// Where the object is stored.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Sends `bytes` (at least 5 MiB, S3's minimum for all but the last)
    /// as the next upload part, starting the multipart upload if needed.
    pub async fn send_part(&mut self, bytes: Vec<u8>) -> Result<(), FlushError> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let created = self
                    .s3
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .content_type(self.content_type)
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

    /// Stores the object, `tail` its last bytes: one PutObject when no part
    /// was sent, else the last part and the upload's completion (aborted
    /// when that fails; the bucket's lifecycle rule also aborts what this
    /// misses).
    pub async fn finish(mut self, tail: Vec<u8>) -> Result<(), FlushError> {
        let Some(upload_id) = self.upload_id.clone() else {
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .content_type(self.content_type)
                .body(ByteStream::from(tail))
                .send()
                .await
                .map_err(|e| FlushError::s3("PutObject", &self.bucket, &self.key, e))?;
            return Ok(());
        };
        if let Err(error) = self.complete(&upload_id, tail).await {
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
        Ok(())
    }

    async fn complete(&mut self, upload_id: &str, tail: Vec<u8>) -> Result<(), FlushError> {
        if !tail.is_empty() {
            self.send_part(tail).await?;
        }
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
