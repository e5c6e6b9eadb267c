//! The batcher: SQS records in, staged objects out (one per hour and
//! sub-batch, every stream and tenant in it; see `shared::staged`).
//!
//! Guarantees (docs/design.md, invariant 1): a message is acknowledged only when
//! everything it fed is stored, either as events in a staged object or as
//! rejected records in `errors/`. A staged object that cannot be stored
//! fails every message that fed any of its segments; an errors file that
//! cannot be stored fails the messages it held. Nothing is dropped
//! silently. Memory is bounded by the sub-batch size, one decoded body and
//! the objects in flight, never by the batch: no message is failed to stay
//! within it.

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

pub use plan::{BatchPlan, BatchPlanner, BatchStats, PlannedObject, plan_batch};
/// The library the batcher is built on, re-exported so that a crate outside
/// the workspace (the fuzz targets) tests both through one dependency.
pub use shared;

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
///
/// Messages are planned one at a time; each sub-batch of staged objects the
/// planner cuts (at `sub_batch_bytes` of accepted lines) is stored before
/// the next message is decoded, so memory stays bounded whatever the batch
/// holds. A message fails only if an object it fed was not stored, in any
/// sub-batch. PUTs: one per hour touched and sub-batch, plus one errors
/// file when records were rejected.
pub async fn process(
    batcher: &Batcher,
    records: &[SqsMessage],
    ingest_millis: i64,
    request_id: &str,
) -> Result<SqsBatchResponse, BatcherError> {
    let config = batcher.source.current().await;
    let mut planner = BatchPlanner::new(&config, records, ingest_millis, request_id);
    let mut failed = BTreeSet::new();
    for index in 0..records.len() {
        planner.plan_message(index);
        let cut = planner.take_objects();
        if !cut.is_empty() {
            failed.extend(store(batcher, &config, cut).await?);
        }
    }
    let plan = planner.finish();
    let stats = plan.stats;
    let last = plan.objects.into_iter().chain(plan.errors);
    failed.extend(store(batcher, &config, last).await?);

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
        messages = stats.messages,
        accepted = stats.accepted,
        rejected = stats.rejected,
        staged_objects = stats.staged_objects,
        staged_bytes = stats.staged_bytes,
        streams = %serde_json::to_string(&stats.streams).unwrap_or_default(),
        reasons = %serde_json::to_string(&stats.reasons).unwrap_or_default(),
        failed_messages = failed.len(),
        "batch stored"
    );
    Ok(response)
}

/// PUTs `objects` with bounded concurrency, each body handed to its request
/// without a copy; returns the indices of the messages whose data is not
/// stored.
async fn store(
    batcher: &Batcher,
    config: &Config,
    objects: impl IntoIterator<Item = PlannedObject>,
) -> Result<BTreeSet<usize>, BatcherError> {
    let bucket = config.export_bucket.as_str();
    let results: Vec<(String, BTreeSet<usize>, Result<(), PutError>)> = stream::iter(objects)
        .map(|object| async move {
            let PlannedObject {
                key,
                body,
                content_type,
                messages,
                ..
            } = object;
            let result = put(&batcher.s3, bucket, &key, content_type, body).await;
            (key, messages, result)
        })
        .buffer_unordered(config.put_concurrency)
        .collect()
        .await;

    let mut failed = BTreeSet::new();
    for (key, messages, result) in results {
        match result {
            Ok(()) => {}
            Err(PutError::Credentials(error)) => return Err(BatcherError::Credentials(error)),
            Err(PutError::Other(error)) => {
                tracing::error!(%key, messages = messages.len(), %error, "put failed");
                failed.extend(messages);
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
    key: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(), PutError> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .body(ByteStream::from(body))
        // The body's integrity is the CRC-32 checksum the SDK sends with it
        // (and TLS to S3); a SHA-256 of every staged byte for the
        // signature as well cost the batcher 3% of its CPU.
        .customize()
        .disable_payload_signing()
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
