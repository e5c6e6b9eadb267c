//! Sending packed messages with `SendMessageBatch`: up to ten entries per
//! request, within SQS's batch byte limit, and again for the entries SQS
//! reports failed (or all of a request that failed as a whole) with an
//! exponential backoff.
//!
//! Guarantees: every message is either acknowledged by SQS or named in
//! [`SendReport::failed`] with SQS's reason; an entry SQS blames on the
//! sender (it cannot succeed) is not retried.

use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};

use crate::pack::{Message, SQS_MAX_MESSAGE_BYTES, batches};

/// How to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOptions {
    /// Attempts per message, the first included.
    pub max_attempts: u32,
    /// The wait before the second attempt; doubled before each next one.
    pub initial_backoff: Duration,
    /// Most bytes in one `SendMessageBatch` (SQS: 256 KiB).
    pub max_batch_bytes: usize,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_batch_bytes: SQS_MAX_MESSAGE_BYTES,
        }
    }
}

/// A message SQS did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedMessage {
    /// Its index in the messages given to [`send`].
    pub index: usize,
    pub code: String,
    pub message: String,
    pub sender_fault: bool,
}

/// What [`send`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Messages SQS acknowledged, and the events they hold.
    pub sent_messages: usize,
    pub sent_events: usize,
    /// `SendMessageBatch` requests made (retries included).
    pub requests: usize,
    /// Entries sent again after a failure.
    pub retried_entries: usize,
    /// Messages not sent after every attempt, or refused as the sender's fault.
    pub failed: Vec<FailedMessage>,
}

/// Sends `messages` to `queue_url`.
pub async fn send(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[Message],
    options: &SendOptions,
) -> SendReport {
    let mut report = SendReport::default();
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    let mut backoff = options.initial_backoff;
    for attempt in 1..=options.max_attempts.max(1) {
        let mut retry = Vec::new();
        let subset = pending.iter().map(|&i| &messages[i]);
        for group in batches(subset, options.max_batch_bytes) {
            let indices: Vec<usize> = group.iter().map(|&i| pending[i]).collect();
            report.requests += 1;
            let last = attempt == options.max_attempts.max(1);
            for failure in send_batch(sqs, queue_url, messages, &indices).await {
                if failure.sender_fault || last {
                    report.failed.push(failure);
                } else {
                    retry.push(failure.index);
                }
            }
            for &index in &indices {
                let failed =
                    retry.contains(&index) || report.failed.iter().any(|f| f.index == index);
                if !failed {
                    report.sent_messages += 1;
                    report.sent_events += messages[index].events;
                }
            }
        }
        if retry.is_empty() {
            break;
        }
        retry.sort_unstable();
        report.retried_entries += retry.len();
        pending = retry;
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
    report.failed.sort_by_key(|failure| failure.index);
    report
}

/// One `SendMessageBatch` of the messages at `indices`; the failed ones.
async fn send_batch(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[Message],
    indices: &[usize],
) -> Vec<FailedMessage> {
    let entries = indices.iter().map(|&index| {
        let message = &messages[index];
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(index.to_string())
            .message_body(&message.body);
        for (name, value) in &message.attributes {
            entry = entry.message_attributes(
                name,
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(value)
                    .build()
                    .expect("data type is set"),
            );
        }
        entry.build().expect("id and body are set")
    });
    let result = sqs
        .send_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries.collect()))
        .send()
        .await;
    match result {
        Ok(output) => output
            .failed()
            .iter()
            .filter_map(|failed| {
                let index = failed.id().parse::<usize>().ok()?;
                Some(FailedMessage {
                    index,
                    code: failed.code().to_owned(),
                    message: failed.message().unwrap_or_default().to_owned(),
                    sender_fault: failed.sender_fault(),
                })
            })
            .collect(),
        Err(error) => {
            let text = DisplayErrorContext(&error).to_string();
            indices
                .iter()
                .map(|&index| FailedMessage {
                    index,
                    code: "RequestFailed".to_owned(),
                    message: text.clone(),
                    sender_fault: false,
                })
                .collect()
        }
    }
}
