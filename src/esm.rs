//! An emulation of Lambda's SQS event source mapping with
//! `ReportBatchItemFailures`, shared by the local runner and the integration
//! tests so both exercise the same delivery contract the batcher meets in AWS.
//!
//! What it guarantees, as Lambda does:
//! - a batch holds at most `batch_size` messages and is gathered for at most
//!   the batching window (and never exceeds Lambda's 6 MB invoke payload);
//! - each record is the `SqsMessage` Lambda builds: `messageId`,
//!   `receiptHandle`, `body`, `md5OfBody`, `md5OfMessageAttributes`, the
//!   system `attributes` (`SentTimestamp`, `ApproximateReceiveCount`, ...), the
//!   `messageAttributes`, `eventSourceARN`, `eventSource: "aws:sqs"`,
//!   `awsRegion`;
//! - after a successful invocation every message not named in
//!   `batchItemFailures` is deleted; the named ones stay on the queue and come
//!   back after the visibility timeout;
//! - a response naming an empty or unknown `itemIdentifier`, or a handler
//!   error, fails the whole batch: nothing is deleted.
//!
//! Dead-letter queues: moto 5.2.5, like SQS, applies a queue's redrive policy
//! itself. During a `ReceiveMessage` on the source queue, a visible message
//! whose receive count has reached `maxReceiveCount` is moved to the
//! dead-letter queue instead of being returned. A message is therefore
//! delivered `maxReceiveCount` times, and the receive after that moves it
//! (same message id and body). The emulation relies on that and does not move
//! messages itself.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
};

/// Largest batch size Lambda accepts for a standard queue.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// Largest batch size Lambda accepts without a batching window.
pub const MAX_BATCH_SIZE_WITHOUT_WINDOW: usize = 10;

/// Longest batching window (`MaximumBatchingWindowInSeconds`) Lambda accepts.
pub const MAX_BATCHING_WINDOW: Duration = Duration::from_secs(300);

/// Lambda's synchronous invocation payload limit, which also bounds a batch.
pub const MAX_INVOKE_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// SQS's limit on messages per `ReceiveMessage` and per batch request.
const SQS_BATCH_LIMIT: usize = 10;

/// Pause between polls of a queue whose remaining messages are in flight or
/// delayed, while draining.
const DRAIN_IDLE_WAIT: Duration = Duration::from_millis(100);

/// What stopped the emulation from doing its job.
#[derive(Debug, thiserror::Error)]
pub enum EsmError {
    /// The batch size is outside what Lambda accepts.
    #[error("batch size {0} is outside 1..={MAX_BATCH_SIZE}")]
    InvalidBatchSize(usize),
    /// The batching window is longer than Lambda accepts.
    #[error("batching window {0:?} exceeds Lambda's maximum of {MAX_BATCHING_WINDOW:?}")]
    InvalidBatchingWindow(Duration),
    /// Lambda requires a batching window for batches above ten messages.
    #[error(
        "batch size {0} needs a batching window of at least 1 s \
         (Lambda requires one above {MAX_BATCH_SIZE_WITHOUT_WINDOW} messages)"
    )]
    BatchingWindowRequired(usize),
    /// The queue ARN does not have the `arn:<partition>:sqs:<region>:<account>:<name>` form.
    #[error("{0:?} is not an SQS queue ARN (arn:<partition>:sqs:<region>:<account>:<name>)")]
    InvalidQueueArn(String),
    /// GetQueueAttributes or CreateQueue answered without a field SQS always sends.
    #[error("SQS {operation} for {queue} answered without {field}")]
    MissingField {
        /// The SQS operation.
        operation: &'static str,
        /// The queue URL or name.
        queue: String,
        /// The missing field.
        field: &'static str,
    },
    /// An SQS call failed.
    #[error("SQS {operation} for {queue} failed: {}", DisplayErrorContext(.source))]
    Sqs {
        /// The SQS operation.
        operation: &'static str,
        /// The queue URL or name.
        queue: String,
        /// The SDK's error (boxed: it is large and errors are rare).
        source: Box<aws_sdk_sqs::Error>,
    },
    /// [`EventSourceMapping::drain`] ran out of time with messages left.
    #[error(
        "queue {queue_url} still held {remaining} message(s) after draining for {timeout:?} \
         ({} poll(s), {} received, {} deleted, handler errors: {:?})",
        report.polls, report.received, report.deleted, report.handler_errors
    )]
    NotDrained {
        /// The queue being drained.
        queue_url: String,
        /// The time allowed.
        timeout: Duration,
        /// Visible + in-flight + delayed messages at the last check.
        remaining: u64,
        /// Everything done before time ran out.
        report: Box<DrainReport>,
    },
}

impl EsmError {
    fn sqs<E>(operation: &'static str, queue: &str) -> impl FnOnce(E) -> Self
    where
        aws_sdk_sqs::Error: From<E>,
    {
        move |err| EsmError::Sqs {
            operation,
            queue: queue.to_owned(),
            source: Box::new(aws_sdk_sqs::Error::from(err)),
        }
    }
}

/// The outcome of one [`EventSourceMapping::poll_once`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Messages received and passed to the handler in one invocation (0 means
    /// the handler was not invoked, as Lambda never sends an empty batch).
    pub received: usize,
    /// Messages deleted from the queue after the invocation.
    pub deleted: usize,
    /// Message ids left on the queue for redelivery, in batch order: those the
    /// response named, or the whole batch when the invocation failed.
    pub failed: Vec<String>,
    /// Why the whole batch failed: the handler's error, or a response naming
    /// an `itemIdentifier` that is empty or not in the batch.
    pub handler_error: Option<String>,
    /// Messages SQS refused to delete (`<message id>: <code> <message>`); they
    /// will be delivered again, as in Lambda.
    pub delete_failures: Vec<String>,
    /// Messages left out of the batch by the 6 MB limit that SQS refused to
    /// make visible again (`<message id>: <code> <message>`); they come back
    /// after the visibility timeout instead of at once.
    pub release_failures: Vec<String>,
    /// Message ids the batch holds more than once (a message whose
    /// visibility timeout ran out while the batch was gathered, received
    /// again), once each.
    pub duplicates: Vec<String>,
}

/// The summed outcome of [`EventSourceMapping::drain`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Receive-and-invoke rounds, including empty ones.
    pub polls: usize,
    /// Handler invocations (rounds that received at least one message).
    pub invocations: usize,
    /// Messages delivered, counting each redelivery.
    pub received: usize,
    /// Messages deleted.
    pub deleted: usize,
    /// Message ids left for redelivery, one entry per failed delivery.
    pub failed: Vec<String>,
    /// Every whole-batch failure reason, in order.
    pub handler_errors: Vec<String>,
    /// Every delete SQS refused, in order.
    pub delete_failures: Vec<String>,
    /// Every release (making a message left out of a batch visible again)
    /// SQS refused, in order.
    pub release_failures: Vec<String>,
    /// Message ids delivered twice in one batch, one entry per batch.
    pub duplicates: Vec<String>,
}

impl DrainReport {
    /// Adds one poll's outcome.
    pub fn add(&mut self, poll: PollReport) {
        self.polls += 1;
        if poll.received > 0 {
            self.invocations += 1;
        }
        self.received += poll.received;
        self.deleted += poll.deleted;
        self.failed.extend(poll.failed);
        self.handler_errors.extend(poll.handler_error);
        self.delete_failures.extend(poll.delete_failures);
        self.release_failures.extend(poll.release_failures);
        self.duplicates.extend(poll.duplicates);
    }

    /// Adds another report's totals.
    pub fn merge(&mut self, other: DrainReport) {
        self.polls += other.polls;
        self.invocations += other.invocations;
        self.received += other.received;
        self.deleted += other.deleted;
        self.failed.extend(other.failed);
        self.handler_errors.extend(other.handler_errors);
        self.delete_failures.extend(other.delete_failures);
        self.release_failures.extend(other.release_failures);
        self.duplicates.extend(other.duplicates);
    }
}

/// A queue with a dead-letter queue, as made by [`create_queue_with_dlq`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSet {
    /// The source queue's URL.
    pub url: String,
    /// The source queue's ARN.
    pub arn: String,
    /// The dead-letter queue's URL.
    pub dlq_url: String,
    /// The dead-letter queue's ARN.
    pub dlq_arn: String,
}

/// One SQS queue feeding one handler, with Lambda's batching and deletion
/// rules. Cheap to clone (the SDK client is shared).
#[derive(Debug, Clone)]
pub struct EventSourceMapping {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    region: String,
    batch_size: usize,
    batching_window: Duration,
}

impl EventSourceMapping {
    /// A mapping for a queue whose ARN is known. The region records carry is
    /// the ARN's. Fails, as `CreateEventSourceMapping` would, when the batch
    /// size is outside `1..=10000`, the window exceeds 300 s, or a batch size
    /// above 10 comes without a window of at least 1 s.
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        queue_arn: impl Into<String>,
        batch_size: usize,
        batching_window: Duration,
    ) -> Result<Self, EsmError> {
        if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
            return Err(EsmError::InvalidBatchSize(batch_size));
        }
        if batching_window > MAX_BATCHING_WINDOW {
            return Err(EsmError::InvalidBatchingWindow(batching_window));
        }
        if batch_size > MAX_BATCH_SIZE_WITHOUT_WINDOW && batching_window < Duration::from_secs(1) {
            return Err(EsmError::BatchingWindowRequired(batch_size));
        }
        let queue_arn = queue_arn.into();
        let region = region_of_queue_arn(&queue_arn)?.to_owned();
        Ok(EventSourceMapping {
            sqs,
            queue_url: queue_url.into(),
            queue_arn,
            region,
            batch_size,
            batching_window,
        })
    }

    /// Like [`EventSourceMapping::new`], looking the queue's ARN up with
    /// `GetQueueAttributes`.
    pub async fn for_queue(
        sqs: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        batch_size: usize,
        batching_window: Duration,
    ) -> Result<Self, EsmError> {
        let queue_url = queue_url.into();
        let queue_arn = queue_arn(&sqs, &queue_url).await?;
        Self::new(sqs, queue_url, queue_arn, batch_size, batching_window)
    }

    /// The queue's URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// The queue's ARN, which every record carries as `eventSourceARN`.
    pub fn queue_arn(&self) -> &str {
        &self.queue_arn
    }

    /// The region every record carries as `awsRegion`.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The most messages one invocation receives.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The longest time spent gathering one batch.
    pub fn batching_window(&self) -> Duration {
        self.batching_window
    }

    /// Gathers one batch, invokes `handler` with it (unless it is empty) and
    /// deletes what the outcome says is done.
    ///
    /// Gathering: `ReceiveMessage` (at most 10 per call, no long polling)
    /// repeats until the batch holds `batch_size` messages, the batching
    /// window has elapsed, or the queue returns nothing. Messages that would
    /// push the event over 6 MB are made visible again at once and left for
    /// the next batch ([`PollReport::release_failures`] names those SQS
    /// refused to release). A message received twice while gathering is
    /// passed twice, as SQS's at-least-once delivery allows, and named in
    /// [`PollReport::duplicates`].
    ///
    /// Deleting: on `Ok`, every message not named in `batch_item_failures`
    /// (10 per `DeleteMessageBatch`), unless the response names an empty or
    /// unknown id, which fails the whole batch; on `Err`, nothing.
    /// Messages left on the queue reappear after its visibility timeout.
    ///
    /// Errors are SQS calls that failed; a failing handler is reported in
    /// [`PollReport::handler_error`], not as an error.
    pub async fn poll_once<F, Fut>(&self, mut handler: F) -> Result<PollReport, EsmError>
    where
        F: FnMut(SqsEvent) -> Fut,
        Fut: Future<Output = Result<SqsBatchResponse, lambda_runtime::Error>>,
    {
        let (records, release_failures) = self.gather_batch().await?;
        if records.is_empty() {
            return Ok(PollReport {
                release_failures,
                ..PollReport::default()
            });
        }
        let delivered: Vec<(String, String)> = records
            .iter()
            .map(|r| {
                (
                    r.message_id.clone().unwrap_or_default(),
                    r.receipt_handle.clone().unwrap_or_default(),
                )
            })
            .collect();
        let mut event = SqsEvent::default();
        event.records = records;

        let mut report = PollReport {
            received: delivered.len(),
            release_failures,
            duplicates: duplicate_ids(&delivered),
            ..PollReport::default()
        };
        let outcome = handler(event).await;
        let failed_ids: HashSet<String> = match outcome {
            Ok(response) => match reported_failures(&response, &delivered) {
                Ok(ids) => ids,
                Err(reason) => {
                    report.handler_error = Some(reason);
                    delivered.iter().map(|(id, _)| id.clone()).collect()
                }
            },
            Err(err) => {
                report.handler_error = Some(err.to_string());
                delivered.iter().map(|(id, _)| id.clone()).collect()
            }
        };
        let mut done = Vec::new();
        for (id, receipt) in &delivered {
            if failed_ids.contains(id) {
                report.failed.push(id.clone());
            } else {
                done.push((id.as_str(), receipt.as_str()));
            }
        }
        for chunk in done.chunks(SQS_BATCH_LIMIT) {
            self.delete_batch(chunk, &mut report).await?;
        }
        Ok(report)
    }

    /// Polls until the queue is empty (no visible, in-flight or delayed
    /// messages, per `GetQueueAttributes`) or `timeout` has passed.
    ///
    /// Messages the handler fails are redelivered after the queue's visibility
    /// timeout and retried until they succeed or the redrive policy moves them
    /// to the dead-letter queue, so draining a queue with failures takes at
    /// least one visibility timeout per retry. Empty receives alone never end
    /// the drain, since they also happen while failed messages are in flight.
    ///
    /// Returns [`EsmError::NotDrained`], carrying the report so far, when time
    /// runs out with messages left.
    pub async fn drain<F, Fut>(
        &self,
        mut handler: F,
        timeout: Duration,
    ) -> Result<DrainReport, EsmError>
    where
        F: FnMut(SqsEvent) -> Fut,
        Fut: Future<Output = Result<SqsBatchResponse, lambda_runtime::Error>>,
    {
        let deadline = Instant::now() + timeout;
        let mut report = DrainReport::default();
        loop {
            let poll = self.poll_once(&mut handler).await?;
            let idle = poll.received == 0;
            report.add(poll);
            let expired = Instant::now() >= deadline;
            if idle || expired {
                let remaining = approximate_message_count(&self.sqs, &self.queue_url).await?;
                if remaining == 0 {
                    return Ok(report);
                }
                if expired {
                    return Err(EsmError::NotDrained {
                        queue_url: self.queue_url.clone(),
                        timeout,
                        remaining,
                        report: Box::new(report),
                    });
                }
                tokio::time::sleep(DRAIN_IDLE_WAIT).await;
            }
        }
    }

    /// One batch, and the releases SQS refused.
    async fn gather_batch(&self) -> Result<(Vec<SqsMessage>, Vec<String>), EsmError> {
        let started = Instant::now();
        let mut records: Vec<SqsMessage> = Vec::new();
        // `{"Records":[` + `]}`, then one comma per further record.
        let mut payload_bytes = 14;
        let mut release_failures = Vec::new();
        loop {
            let want = (self.batch_size - records.len()).min(SQS_BATCH_LIMIT);
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(want as i32)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(EsmError::sqs("ReceiveMessage", &self.queue_url))?;
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            let mut overflow = Vec::new();
            for message in messages {
                let record = lambda_record(message, &self.queue_arn, &self.region);
                let size = serde_json::to_vec(&record).map_or(0, |json| json.len()) + 1;
                if !records.is_empty() && payload_bytes + size > MAX_INVOKE_PAYLOAD_BYTES {
                    overflow.push((
                        record.message_id.unwrap_or_default(),
                        record.receipt_handle.unwrap_or_default(),
                    ));
                } else {
                    payload_bytes += size;
                    records.push(record);
                }
            }
            if !overflow.is_empty() {
                release_failures = self.release(&overflow).await?;
                break;
            }
            if records.len() >= self.batch_size || started.elapsed() >= self.batching_window {
                break;
            }
        }
        Ok((records, release_failures))
    }

    /// Makes received messages, given as (message id, receipt handle), visible
    /// again at once (`ChangeMessageVisibilityBatch` with a timeout of 0, 10
    /// a request). Returns the entries SQS refused (`<message id>: <code>
    /// <message>`), which stay invisible until their visibility timeout
    /// ends; errors are requests that failed as a whole.
    pub async fn release(&self, messages: &[(String, String)]) -> Result<Vec<String>, EsmError> {
        let mut failures = Vec::new();
        for chunk in messages.chunks(SQS_BATCH_LIMIT) {
            let mut request = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&self.queue_url);
            for (i, (_, receipt)) in chunk.iter().enumerate() {
                let entry = ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .build()
                    .expect("id and receipt handle are set");
                request = request.entries(entry);
            }
            let output = request.send().await.map_err(EsmError::sqs(
                "ChangeMessageVisibilityBatch",
                &self.queue_url,
            ))?;
            for failure in output.failed() {
                failures.push(refused_entry(failure, |i| {
                    chunk.get(i).map(|(id, _)| id.as_str())
                }));
            }
        }
        Ok(failures)
    }

    async fn delete_batch(
        &self,
        chunk: &[(&str, &str)],
        report: &mut PollReport,
    ) -> Result<(), EsmError> {
        let mut request = self.sqs.delete_message_batch().queue_url(&self.queue_url);
        for (i, (_, receipt)) in chunk.iter().enumerate() {
            let entry = DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(*receipt)
                .build()
                .expect("id and receipt handle are set");
            request = request.entries(entry);
        }
        let output = request
            .send()
            .await
            .map_err(EsmError::sqs("DeleteMessageBatch", &self.queue_url))?;
        report.deleted += output.successful().len();
        for failure in output.failed() {
            let refused = refused_entry(failure, |i| chunk.get(i).map(|(id, _)| *id));
            report.delete_failures.push(refused);
        }
        Ok(())
    }
}

/// A batch entry SQS refused, as `<message id>: <code> <message>`: the
/// entry's id is an index, which `message_id` turns into the message's id
/// (the entry's id when it is not one).
fn refused_entry<'a>(
    failure: &aws_sdk_sqs::types::BatchResultErrorEntry,
    message_id: impl Fn(usize) -> Option<&'a str>,
) -> String {
    let id = failure.id();
    let message_id = id.parse::<usize>().ok().and_then(message_id).unwrap_or(id);
    format!(
        "{message_id}: {} {}",
        failure.code(),
        failure.message().unwrap_or_default()
    )
}

/// The message ids `delivered` holds more than once, once each, in order.
fn duplicate_ids(delivered: &[(String, String)]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut reported = HashSet::new();
    delivered
        .iter()
        .filter(|(id, _)| !seen.insert(id.as_str()) && reported.insert(id.as_str()))
        .map(|(id, _)| id.clone())
        .collect()
}

/// The ids a response marks failed, or why the response fails the whole
/// batch (an empty or unknown `itemIdentifier`, as Lambda treats it).
fn reported_failures(
    response: &SqsBatchResponse,
    delivered: &[(String, String)],
) -> Result<HashSet<String>, String> {
    let in_batch: HashSet<&str> = delivered.iter().map(|(id, _)| id.as_str()).collect();
    let mut failed = HashSet::new();
    for failure in &response.batch_item_failures {
        let id = failure.item_identifier.as_str();
        if id.is_empty() || !in_batch.contains(id) {
            return Err(format!(
                "batchItemFailures names itemIdentifier {id:?}, which is not a message of this \
                 batch: the whole batch is treated as failed"
            ));
        }
        failed.insert(id.to_owned());
    }
    Ok(failed)
}

/// The record Lambda builds from a received SQS message: every field the SDK
/// returned, system attributes as strings keyed by their SQS names, message
/// attributes with empty list values, and the queue's ARN and region.
pub fn lambda_record(message: Message, queue_arn: &str, region: &str) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = message.message_id;
    record.receipt_handle = message.receipt_handle;
    record.body = message.body;
    record.md5_of_body = message.md5_of_body;
    record.md5_of_message_attributes = message.md5_of_message_attributes;
    record.attributes = message
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name.as_str().to_owned(), value))
        .collect();
    record.message_attributes = message
        .message_attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name, lambda_attribute(value)))
        .collect::<HashMap<_, _>>();
    record.event_source_arn = Some(queue_arn.to_owned());
    record.event_source = Some("aws:sqs".to_owned());
    record.aws_region = Some(region.to_owned());
    record
}

fn lambda_attribute(value: MessageAttributeValue) -> SqsMessageAttribute {
    let mut attribute = SqsMessageAttribute::default();
    attribute.string_value = value.string_value;
    attribute.binary_value = value.binary_value.map(base64_data);
    attribute.string_list_values = value.string_list_values.unwrap_or_default();
    attribute.binary_list_values = value
        .binary_list_values
        .unwrap_or_default()
        .into_iter()
        .map(base64_data)
        .collect();
    attribute.data_type = Some(value.data_type);
    attribute
}

fn base64_data(blob: aws_sdk_sqs::primitives::Blob) -> Base64Data {
    // `Base64Data` is `#[non_exhaustive]`: no tuple constructor outside its crate.
    let mut data = Base64Data::default();
    data.0 = blob.into_inner();
    data
}

/// The region field of `arn:<partition>:sqs:<region>:<account>:<name>`.
pub fn region_of_queue_arn(arn: &str) -> Result<&str, EsmError> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "sqs", region, _, name] if !region.is_empty() && !name.is_empty() => Ok(region),
        _ => Err(EsmError::InvalidQueueArn(arn.to_owned())),
    }
}

/// The queue's ARN, from `GetQueueAttributes`.
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<String, EsmError> {
    let output = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(EsmError::sqs("GetQueueAttributes", queue_url))?;
    output
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| EsmError::MissingField {
            operation: "GetQueueAttributes",
            queue: queue_url.to_owned(),
            field: "QueueArn",
        })
}

/// Visible + in-flight + delayed messages, from `GetQueueAttributes`
/// (approximate in SQS, exact in moto). Zero means nothing will be delivered
/// again without a new send.
pub async fn approximate_message_count(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<u64, EsmError> {
    let counts = [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
    ];
    let mut request = sqs.get_queue_attributes().queue_url(queue_url);
    for name in &counts {
        request = request.attribute_names(name.clone());
    }
    let output = request
        .send()
        .await
        .map_err(EsmError::sqs("GetQueueAttributes", queue_url))?;
    let attributes = output.attributes();
    Ok(counts
        .iter()
        .filter_map(|name| attributes.and_then(|a| a.get(name)))
        .filter_map(|value| value.parse::<u64>().ok())
        .sum())
}

/// Creates `name` and its dead-letter queue `<name>-dlq` (for a FIFO queue,
/// `<base>-dlq.fifo`, both FIFO), with a redrive policy that moves a message
/// to the dead-letter queue after `max_receive_count` receives, and the given
/// visibility timeout on the source queue. Idempotent for the same settings,
/// as CreateQueue is.
pub async fn create_queue_with_dlq(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    max_receive_count: u32,
    visibility_timeout_secs: u32,
) -> Result<QueueSet, EsmError> {
    let fifo = name.ends_with(".fifo");
    let dlq_name = match name.strip_suffix(".fifo") {
        Some(base) => format!("{base}-dlq.fifo"),
        None => format!("{name}-dlq"),
    };
    let mut dlq_request = sqs.create_queue().queue_name(&dlq_name);
    if fifo {
        dlq_request = dlq_request.attributes(QueueAttributeName::FifoQueue, "true");
    }
    let dlq_url = created_url(dlq_request.send().await, &dlq_name)?;
    let dlq_arn = queue_arn(sqs, &dlq_url).await?;

    let redrive_policy = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receive_count,
    })
    .to_string();
    let mut request = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive_policy)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_timeout_secs.to_string(),
        );
    if fifo {
        request = request.attributes(QueueAttributeName::FifoQueue, "true");
    }
    let url = created_url(request.send().await, name)?;
    let arn = queue_arn(sqs, &url).await?;
    Ok(QueueSet {
        url,
        arn,
        dlq_url,
        dlq_arn,
    })
}

fn created_url<E>(
    result: Result<aws_sdk_sqs::operation::create_queue::CreateQueueOutput, E>,
    name: &str,
) -> Result<String, EsmError>
where
    aws_sdk_sqs::Error: From<E>,
{
    let output = result.map_err(EsmError::sqs("CreateQueue", name))?;
    output.queue_url.ok_or_else(|| EsmError::MissingField {
        operation: "CreateQueue",
        queue: name.to_owned(),
        field: "QueueUrl",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::primitives::Blob;

    const ARN: &str = "arn:aws:sqs:us-west-2:123456789012:SQSQueue";

    #[test]
    fn record_has_the_shape_of_lambdas_sample_event() {
        let message = Message::builder()
            .message_id("MessageID_1")
            .receipt_handle("MessageReceiptHandle")
            .body("Message Body")
            .md5_of_body("fce0ea8dd236ccb3ed9b37dae260836f")
            .md5_of_message_attributes("582c92c5c5b6ac403040a4f3ab3115c9")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1520621625029")
            .message_attributes(
                "Attribute1",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("AttributeValue1")
                    .build()
                    .unwrap(),
            )
            .message_attributes(
                "Attribute3",
                MessageAttributeValue::builder()
                    .data_type("Binary")
                    .binary_value(Blob::new(b"1100".to_vec()))
                    .build()
                    .unwrap(),
            )
            .build();
        let record = lambda_record(message, ARN, "us-west-2");
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "messageId": "MessageID_1",
                "receiptHandle": "MessageReceiptHandle",
                "body": "Message Body",
                "md5OfBody": "fce0ea8dd236ccb3ed9b37dae260836f",
                "md5OfMessageAttributes": "582c92c5c5b6ac403040a4f3ab3115c9",
                "eventSourceARN": ARN,
                "eventSource": "aws:sqs",
                "awsRegion": "us-west-2",
                "attributes": {
                    "ApproximateReceiveCount": "2",
                    "SentTimestamp": "1520621625029"
                },
                "messageAttributes": {
                    "Attribute1": {
                        "stringValue": "AttributeValue1",
                        "binaryValue": null,
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": "String"
                    },
                    "Attribute3": {
                        "stringValue": null,
                        "binaryValue": "MTEwMA==",
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": "Binary"
                    }
                }
            })
        );
    }

    #[test]
    fn region_comes_from_the_queue_arn() {
        assert_eq!(region_of_queue_arn(ARN).unwrap(), "us-west-2");
        assert!(region_of_queue_arn("arn:aws:sns:us-west-2:1:topic").is_err());
        assert!(region_of_queue_arn("https://sqs.us-east-1.amazonaws.com/1/q").is_err());
    }

    #[test]
    fn unknown_or_empty_item_identifier_fails_the_whole_batch() {
        let delivered = vec![
            ("a".to_owned(), "ra".to_owned()),
            ("b".to_owned(), "rb".to_owned()),
        ];
        let mut ok = SqsBatchResponse::default();
        ok.add_failure("b");
        assert_eq!(
            reported_failures(&ok, &delivered).unwrap(),
            HashSet::from(["b".to_owned()])
        );
        let mut unknown = SqsBatchResponse::default();
        unknown.set_failures(["b", "zzz"]);
        assert!(reported_failures(&unknown, &delivered).is_err());
        let mut empty = SqsBatchResponse::default();
        empty.add_failure("");
        assert!(reported_failures(&empty, &delivered).is_err());
    }

    #[test]
    fn a_message_twice_in_one_batch_is_named_once() {
        let delivered = [
            ("a", "r1"),
            ("b", "r2"),
            ("a", "r3"),
            ("a", "r4"),
            ("c", "r5"),
        ]
        .map(|(id, receipt)| (id.to_owned(), receipt.to_owned()));
        assert_eq!(duplicate_ids(&delivered), ["a"]);
        assert!(duplicate_ids(&delivered[..2]).is_empty());
    }

    #[test]
    fn mapping_settings_follow_lambdas_limits() {
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder()
                .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                .region(aws_sdk_sqs::config::Region::new("us-east-1"))
                .build(),
        );
        let new = |size, window| EventSourceMapping::new(sqs.clone(), "url", ARN, size, window);
        assert!(matches!(
            new(0, Duration::ZERO),
            Err(EsmError::InvalidBatchSize(0))
        ));
        assert!(matches!(
            new(10_001, Duration::from_secs(1)),
            Err(EsmError::InvalidBatchSize(_))
        ));
        assert!(matches!(
            new(11, Duration::ZERO),
            Err(EsmError::BatchingWindowRequired(11))
        ));
        assert!(matches!(
            new(10, Duration::from_secs(301)),
            Err(EsmError::InvalidBatchingWindow(_))
        ));
        let esm = new(10_000, Duration::from_secs(300)).unwrap();
        assert_eq!(esm.region(), "us-west-2");
    }
}
