//! The flusher's errors. A failed partition is left as it was before its
//! commit (safe to redo); the run goes on with the others.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Why a partition, or the run, failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FlushError {
    #[error("{operation} s3://{bucket}/{key}: {message}")]
    S3 {
        operation: &'static str,
        bucket: String,
        key: String,
        /// S3's error code, when S3 answered (`AccessDenied`, `NoSuchBucket`, …).
        code: Option<String>,
        message: String,
    },
    #[error("another flusher committed {key} first; this run's work on it is discarded")]
    LostRace { key: String },
    #[error("{what}: {message}")]
    Corrupt { what: String, message: String },
    #[error("spool directory {dir}: {message}")]
    Spool { dir: String, message: String },
    #[error("{operation} {queue}: {message}")]
    Sqs {
        operation: &'static str,
        queue: String,
        message: String,
    },
    #[error(transparent)]
    WorkItem(#[from] crate::work_item::WorkItemError),
    #[error("stopped after step `{0}` (injected failure)")]
    Injected(&'static str),
}

impl FlushError {
    /// An S3 call's error, with S3's error code when it answered.
    pub fn s3<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
        operation: &'static str,
        bucket: &str,
        key: &str,
        error: SdkError<E, R>,
    ) -> Self {
        let code = error.code().map(str::to_owned);
        Self::S3 {
            operation,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            code,
            message: DisplayErrorContext(&error).to_string(),
        }
    }

    /// S3's error code, when this is an S3 error S3 answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::S3 { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}
