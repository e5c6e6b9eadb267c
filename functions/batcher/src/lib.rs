//! The batcher: SQS records in, staged gzip NDJSON chunks out.
//!
//! Guarantees (docs/design.md, invariant 1): a message is acknowledged only when
//! everything it fed is stored, either as events in a staged chunk or as
//! rejected records in `errors/`. A chunk that cannot be stored fails every
//! message that fed it; an errors file that cannot be stored fails the
//! messages it held. Nothing is dropped silently.

pub mod plan;
pub mod records;

use std::collections::BTreeSet;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use futures::stream::{self, StreamExt};
use lambda_runtime::LambdaEvent;

use shared::Config;
use shared::config_source::ConfigSource;

pub use plan::{BatchPlan, BatchStats, PlannedObject, plan_batch};

/// How the batcher signs its alerts.
pub const SOURCE: &str = "batcher";

/// What lives across invocations: the validated configuration and the S3
/// client, both built once at cold start. An `s3://` configuration document
/// is reloaded when it changes (see `shared::config_source`).
pub struct Batcher {
    /// Where each invocation's configuration comes from.
    pub source: Arc<ConfigSource>,
    pub s3: aws_sdk_s3::Client,
}

impl Batcher {
    /// A batcher whose configuration never changes.
    pub fn new(config: Config, s3: aws_sdk_s3::Client) -> Self {
        Self::from_source(Arc::new(ConfigSource::fixed(config)), s3)
    }

    /// A batcher whose configuration comes from `source`, checked for a new
    /// document at the start of each invocation (at most once a minute).
    pub fn from_source(source: Arc<ConfigSource>, s3: aws_sdk_s3::Client) -> Self {
        Self { source, s3 }
    }

    /// The configuration now, without checking for a new document.
    pub fn config(&self) -> Arc<Config> {
        self.source.config()
    }
}

/// Why an invocation failed as a whole (Lambda then retries the whole batch).
#[derive(Debug, thiserror::Error)]
pub enum BatcherError {
    #[error("no AWS credentials to write to S3: {0}")]
    Credentials(String),
    #[error(
        "could not store data of a message that has no messageId, so it cannot be reported alone"
    )]
    UnidentifiedMessage,
}

/// The Lambda handler: plans the batch, stores it, and reports the messages
/// whose data could not be stored.
pub async fn handle(
    batcher: &Batcher,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, BatcherError> {
    let now_millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as i64)
        .unwrap_or_default();
    process(
        batcher,
        &event.payload.records,
        now_millis,
        &event.context.request_id,
    )
    .await
}

/// [`handle`] with the time and request id given, for tests and tools.
pub async fn process(
    batcher: &Batcher,
    records: &[SqsMessage],
    ingest_millis: i64,
    request_id: &str,
) -> Result<SqsBatchResponse, BatcherError> {
    let config = batcher.source.current().await;
    let plan = plan_batch(&config, records, ingest_millis, request_id);
    let failed = store(batcher, &config, &plan).await?;

    let mut response = SqsBatchResponse::default();
    for &index in &failed {
        let id = records[index]
            .message_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .ok_or(BatcherError::UnidentifiedMessage)?;
        response.add_failure(id);
    }
    tracing::info!(
        messages = plan.stats.messages,
        accepted = plan.stats.accepted,
        rejected = plan.stats.rejected,
        chunks = plan.stats.chunks,
        staged_bytes = plan.stats.staged_bytes,
        streams = %serde_json::to_string(&plan.stats.streams).unwrap_or_default(),
        reasons = %serde_json::to_string(&plan.stats.reasons).unwrap_or_default(),
        failed_messages = failed.len(),
        "batch stored"
    );
    Ok(response)
}

/// PUTs every planned object with bounded concurrency; returns the indices of
/// the messages whose data is not stored.
async fn store(
    batcher: &Batcher,
    config: &Config,
    plan: &BatchPlan,
) -> Result<BTreeSet<usize>, BatcherError> {
    let objects = plan.chunks.iter().chain(plan.errors.iter());
    let bucket = config.export_bucket.as_str();
    let results: Vec<(&PlannedObject, Result<(), PutError>)> = stream::iter(objects)
        .map(|object| async move { (object, put(&batcher.s3, bucket, object).await) })
        .buffer_unordered(config.put_concurrency)
        .collect()
        .await;

    let mut failed = BTreeSet::new();
    for (object, result) in results {
        match result {
            Ok(()) => {}
            Err(PutError::Credentials(error)) => return Err(BatcherError::Credentials(error)),
            Err(PutError::Other(error)) => {
                tracing::error!(key = %object.key, messages = object.messages.len(), %error, "put failed");
                failed.extend(object.messages.iter().copied());
            }
        }
    }
    Ok(failed)
}

enum PutError {
    Credentials(String),
    Other(String),
}

async fn put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    object: &PlannedObject,
) -> Result<(), PutError> {
    s3.put_object()
        .bucket(bucket)
        .key(&object.key)
        .content_type("application/gzip")
        .body(ByteStream::from(object.body.clone()))
        .send()
        .await
        .map(|_| ())
        .map_err(|error| {
            let text = DisplayErrorContext(&error).to_string();
            if is_credentials_error(&error) {
                PutError::Credentials(text)
            } else {
                PutError::Other(text)
            }
        })
}

/// Whether an SDK error comes from resolving credentials: retrying single
/// messages cannot help, so the invocation fails.
fn is_credentials_error(error: &(dyn StdError + 'static)) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = source {
        if current
            .downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
        {
            return true;
        }
        source = current.source();
    }
    false
}
