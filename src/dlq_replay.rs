//! `s3-export dlq-replay`: moves the messages of the dead-letter queue back
//! to the queue they failed on, once the cause is fixed, so the batcher
//! takes them again.
//!
//! Two ways, chosen by `--method`:
//! - `move-task`: SQS's own redrive, `StartMessageMoveTask` (what the
//!   console's "Start DLQ redrive" runs). SQS moves the messages itself,
//!   keeping their attributes; this command starts the task and prints its
//!   handle. Not every SQS implementation has it (moto does not).
//! - `copy`: `ReceiveMessage` from the dead-letter queue, `SendMessageBatch`
//!   of the same body and message attributes to the queue, then
//!   `DeleteMessageBatch` of exactly the messages whose send succeeded, in
//!   that order: a message is deleted only once its copy is in the queue,
//!   so nothing is lost. A run stopped between the send and the delete
//!   leaves a message in both queues; the batcher and the flusher's
//!   de-duplication make that one event.
//!
//! `auto` (the default) starts a move task and falls back to copying when
//! the endpoint refuses it (saying why). Either way a moved message is a new
//! message: its `SentTimestamp` is the time of the move, so under the
//! default `partitionBy: ingest` its events belong to the hour of the
//! replay.

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use clap::{Args, ValueEnum};
use serde::Serialize;

/// SQS takes at most this many messages per receive and per batch call.
const SQS_BATCH: usize = 10;

/// How messages are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// `StartMessageMoveTask`, else copy.
    Auto,
    /// `StartMessageMoveTask` only.
    MoveTask,
    /// Receive, send, delete.
    Copy,
}

/// Options of `s3-export dlq-replay`.
#[derive(Debug, Clone, Args)]
pub struct DlqReplayOptions {
    /// The dead-letter queue's URL (the stack's `DeadLetterQueueUrl`).
    #[arg(long)]
    pub dlq: String,
    /// The queue to move the messages to. Default: the one queue whose
    /// redrive policy names the dead-letter queue.
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long, value_enum, default_value_t = Method::Auto)]
    pub method: Method,
    /// Print the messages that would be moved (they are left in the
    /// dead-letter queue, visible again at once); move nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Move (or list) at most this many messages (copy and dry run).
    #[arg(long)]
    pub max: Option<usize>,
    /// Seconds a received message stays hidden while it is copied; one whose
    /// send failed is visible again after it.
    #[arg(long, default_value_t = 60)]
    pub visibility_timeout: i32,
}

/// A message of the dead-letter queue, as the dry run lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub message_id: String,
    /// When it was first sent (RFC 3339), from `SentTimestamp`.
    pub sent_at: Option<String>,
    pub receive_count: Option<u32>,
    /// Its `stream` message attribute.
    pub stream: Option<String>,
    pub body_bytes: usize,
    /// The body's first characters.
    pub body_start: String,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DlqReplayReport {
    pub dlq_url: String,
    pub queue_url: String,
    /// `move-task` or `copy`: how the messages were (or would be) moved.
    pub method: String,
    /// Why `auto` fell back to copying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// The move task's handle, when one was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_handle: Option<String>,
    pub dry_run: bool,
    /// The dry run's listing.
    pub would_move: Vec<DeadLetter>,
    /// Dead-letter message id → the id of its copy in the queue.
    pub moved: Vec<(String, String)>,
    /// Dead-letter message id → why its send failed (it stays in the
    /// dead-letter queue).
    pub failed: Vec<(String, String)>,
}

/// Runs the command; `Ok(false)` when some messages could not be moved.
pub async fn run(options: &DlqReplayOptions) -> anyhow::Result<bool> {
    let sqs = aws_sdk_sqs::Client::new(&shared::load::sdk_config().await);
    let report = replay(&sqs, options).await?;
    print!("{}", render(&report));
    Ok(report.failed.is_empty())
}

/// Moves (or, in a dry run, lists) the dead-letter queue's messages.
pub async fn replay(
    sqs: &aws_sdk_sqs::Client,
    options: &DlqReplayOptions,
) -> anyhow::Result<DlqReplayReport> {
    let queue_url = match &options.queue {
        Some(url) => url.clone(),
        None => source_queue(sqs, &options.dlq).await?,
    };
    let mut report = DlqReplayReport {
        dlq_url: options.dlq.clone(),
        queue_url: queue_url.clone(),
        dry_run: options.dry_run,
        ..DlqReplayReport::default()
    };
    if options.dry_run {
        report.method = match options.method {
            Method::Copy => "copy",
            _ => "move-task",
        }
        .to_owned();
        report.would_move = list(sqs, &options.dlq, options.max).await?;
        return Ok(report);
    }
    if options.method != Method::Copy {
        match start_move_task(sqs, &options.dlq, &queue_url).await {
            Ok(handle) => {
                report.method = "move-task".into();
                report.task_handle = Some(handle);
                return Ok(report);
            }
            Err(error) if options.method == Method::Auto => {
                report.fallback_reason = Some(format!("{error:#}"));
            }
            Err(error) => return Err(error),
        }
    }
    report.method = "copy".into();
    copy(sqs, options, &queue_url, &mut report).await?;
    Ok(report)
}

/// The queue whose redrive policy names `dlq`, when there is exactly one.
async fn source_queue(sqs: &aws_sdk_sqs::Client, dlq: &str) -> anyhow::Result<String> {
    let output = sqs
        .list_dead_letter_source_queues()
        .queue_url(dlq)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "ListDeadLetterSourceQueues {dlq}: {}",
                DisplayErrorContext(e)
            )
        })?;
    match output.queue_urls() {
        [one] => Ok(one.clone()),
        [] => bail!("`--queue`: no queue's redrive policy names {dlq}; give the queue to move to"),
        many => bail!(
            "`--queue`: {dlq} is the dead-letter queue of {} queues ({}); give the one to move to",
            many.len(),
            many.join(", ")
        ),
    }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<String> {
    let output = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GetQueueAttributes {url}: {}", DisplayErrorContext(e)))?;
    output
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .with_context(|| format!("GetQueueAttributes {url}: no QueueArn"))
}

async fn start_move_task(
    sqs: &aws_sdk_sqs::Client,
    dlq: &str,
    queue: &str,
) -> anyhow::Result<String> {
    let source = queue_arn(sqs, dlq).await?;
    let destination = queue_arn(sqs, queue).await?;
    let output = sqs
        .start_message_move_task()
        .source_arn(&source)
        .destination_arn(&destination)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "StartMessageMoveTask refused ({}): {}",
                e.code().unwrap_or("no error code"),
                DisplayErrorContext(&e)
            )
        })?;
    Ok(output.task_handle().unwrap_or_default().to_owned())
}

async fn receive(
    sqs: &aws_sdk_sqs::Client,
    dlq: &str,
    count: usize,
    visibility_timeout: i32,
) -> anyhow::Result<Vec<Message>> {
    let output = sqs
        .receive_message()
        .queue_url(dlq)
        .max_number_of_messages(count.clamp(1, SQS_BATCH) as i32)
        .wait_time_seconds(0)
        .visibility_timeout(visibility_timeout)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("ReceiveMessage {dlq}: {}", DisplayErrorContext(e)))?;
    Ok(output.messages.unwrap_or_default())
}

/// Lists the dead-letter queue's messages (hidden while listing, so each is
/// seen once), then makes them visible again at once.
async fn list(
    sqs: &aws_sdk_sqs::Client,
    dlq: &str,
    max: Option<usize>,
) -> anyhow::Result<Vec<DeadLetter>> {
    let max = max.unwrap_or(usize::MAX);
    let mut seen = Vec::new();
    let mut receipts = Vec::new();
    while seen.len() < max {
        let messages = receive(sqs, dlq, max - seen.len(), 30).await?;
        if messages.is_empty() {
            break;
        }
        for message in messages {
            receipts.push(message.receipt_handle().unwrap_or_default().to_owned());
            seen.push(dead_letter(&message));
        }
    }
    for (index, batch) in receipts.chunks(SQS_BATCH).enumerate() {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(n, receipt)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(format!("m{index}-{n}"))
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .build()
                    .expect("id and receipt are set")
            })
            .collect();
        sqs.change_message_visibility_batch()
            .queue_url(dlq)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "ChangeMessageVisibilityBatch {dlq}: {}",
                    DisplayErrorContext(e)
                )
            })?;
    }
    Ok(seen)
}

fn dead_letter(message: &Message) -> DeadLetter {
    let system = |name: MessageSystemAttributeName| {
        message
            .attributes()
            .and_then(|attributes| attributes.get(&name))
            .cloned()
    };
    let body = message.body().unwrap_or_default();
    DeadLetter {
        message_id: message.message_id().unwrap_or_default().to_owned(),
        sent_at: system(MessageSystemAttributeName::SentTimestamp)
            .and_then(|ms| ms.parse::<i64>().ok())
            .map(shared::time::format_rfc3339_millis),
        receive_count: system(MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|count| count.parse().ok()),
        stream: message
            .message_attributes()
            .and_then(|attributes| attributes.get("stream"))
            .and_then(|value| value.string_value())
            .map(str::to_owned),
        body_bytes: body.len(),
        body_start: body.chars().take(80).collect(),
    }
}

/// Receive, send, delete, until the dead-letter queue has nothing visible
/// (messages whose send failed stay hidden until their visibility timeout,
/// so a run ends) or `max` messages were taken.
async fn copy(
    sqs: &aws_sdk_sqs::Client,
    options: &DlqReplayOptions,
    queue_url: &str,
    report: &mut DlqReplayReport,
) -> anyhow::Result<()> {
    let dlq = &options.dlq;
    let fifo = queue_url.ends_with(".fifo");
    let max = options.max.unwrap_or(usize::MAX);
    let mut taken = 0;
    while taken < max {
        let messages = receive(sqs, dlq, max - taken, options.visibility_timeout).await?;
        if messages.is_empty() {
            break;
        }
        taken += messages.len();
        let by_entry: HashMap<String, &Message> = messages
            .iter()
            .enumerate()
            .map(|(n, message)| (format!("m{n}"), message))
            .collect();
        let entries = messages
            .iter()
            .enumerate()
            .map(|(n, message)| {
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(format!("m{n}"))
                    .message_body(message.body().unwrap_or_default())
                    .set_message_attributes(message.message_attributes().cloned());
                if fifo {
                    let system = |name| {
                        message
                            .attributes()
                            .and_then(|attributes| attributes.get(&name))
                            .cloned()
                    };
                    entry = entry
                        .set_message_group_id(system(MessageSystemAttributeName::MessageGroupId))
                        .message_deduplication_id(
                            system(MessageSystemAttributeName::MessageDeduplicationId)
                                .unwrap_or_else(|| {
                                    message.message_id().unwrap_or_default().to_owned()
                                }),
                        );
                }
                entry.build().expect("id and body are set")
            })
            .collect();
        let sent = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("SendMessageBatch {queue_url}: {}", DisplayErrorContext(e))
            })?;
        for failure in sent.failed() {
            let message = by_entry[failure.id()];
            report.failed.push((
                message.message_id().unwrap_or_default().to_owned(),
                format!(
                    "{}: {}",
                    failure.code(),
                    failure.message().unwrap_or_default()
                ),
            ));
        }
        // Only what is now in the queue leaves the dead-letter queue.
        let mut deletes = Vec::new();
        for success in sent.successful() {
            let message = by_entry[success.id()];
            report.moved.push((
                message.message_id().unwrap_or_default().to_owned(),
                success.message_id().to_owned(),
            ));
            deletes.push(
                DeleteMessageBatchRequestEntry::builder()
                    .id(success.id())
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .build()
                    .expect("id and receipt are set"),
            );
        }
        if deletes.is_empty() {
            continue;
        }
        let deleted = sqs
            .delete_message_batch()
            .queue_url(dlq)
            .set_entries(Some(deletes))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("DeleteMessageBatch {dlq}: {}", DisplayErrorContext(e)))?;
        if let Some(failure) = deleted.failed().first() {
            bail!(
                "DeleteMessageBatch {dlq}: {} ({}): the message was copied to the queue and will be \
                 copied again by the next run; the pipeline de-duplicates it",
                failure.code(),
                failure.message().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// The report as text.
pub fn render(report: &DlqReplayReport) -> String {
    let mut out = String::new();
    if let Some(reason) = &report.fallback_reason {
        out.push_str(&format!(
            "StartMessageMoveTask is not available here, copying instead: {reason}\n"
        ));
    }
    if report.dry_run {
        for letter in &report.would_move {
            out.push_str(&format!(
                "would move {}  sent {}  received {}  stream {}  {} bytes  {}\n",
                letter.message_id,
                letter.sent_at.as_deref().unwrap_or("?"),
                letter
                    .receive_count
                    .map_or_else(|| "?".to_owned(), |n| format!("{n}x")),
                letter.stream.as_deref().unwrap_or("(none)"),
                letter.body_bytes,
                letter.body_start.replace('\n', "\\n")
            ));
        }
        out.push_str(&format!(
            "dry run, nothing moved: {} message(s) in {} would move to {} ({})\n",
            report.would_move.len(),
            report.dlq_url,
            report.queue_url,
            report.method
        ));
        return out;
    }
    if let Some(handle) = &report.task_handle {
        out.push_str(&format!(
            "started a move task from {} to {}: {handle}\n(progress: aws sqs list-message-move-tasks --source-arn <dead-letter queue ARN>)\n",
            report.dlq_url, report.queue_url
        ));
        return out;
    }
    for (from, to) in &report.moved {
        out.push_str(&format!("moved {from} -> {to}\n"));
    }
    for (id, why) in &report.failed {
        out.push_str(&format!(
            "not moved {id}: {why} (it stays in the dead-letter queue)\n"
        ));
    }
    out.push_str(&format!(
        "{} message(s) moved from {} to {} by copy, {} failed\n",
        report.moved.len(),
        report.dlq_url,
        report.queue_url,
        report.failed.len()
    ));
    out
}
