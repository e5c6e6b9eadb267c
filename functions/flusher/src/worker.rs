//! A flush worker: flushes the work items the coordinator sent to the
//! flush queue (docs/scale-out.md), one message at a time, reporting the
//! items it could not finish as batch item failures so that SQS delivers
//! them again (after the queue's visibility timeout) and, after
//! `maxReceiveCount` attempts, to the dead-letter queue.
//!
//! An item is flushed exactly as an in-process run flushes its work
//! (`flush_work`: spool windows, bundle groups, conditional commits), so
//! any number of workers, and a manual run beside them, can touch the same
//! partition at once (docs/design.md, invariant 7). A worker that finishes
//! an item records it (`layout::work_done_key`); the worker that finds
//! every item of its run recorded deletes the staged objects all of whose
//! partitions the run committed, then the run's records.

use std::time::Instant;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use serde::Serialize;

use shared::layout;

use crate::backfill::{self, BackfillReport};
use crate::coordinator::{self, DoneRecord, QueueMessage, RUN_RECORD_VERSION, RunRecord};
use crate::error::FlushError;
use crate::trigger::Trigger;
use crate::work_item::WorkItem;
use crate::{FlushReport, Flusher, flush_work, store, tally};

/// What flushing one work item did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemReport {
    /// The item's key.
    pub work_item: String,
    /// False when the item was already done and cleaned up (a message
    /// delivered again after its run finished).
    pub found: bool,
    /// Whether every partition of it was flushed (else it is delivered
    /// again).
    pub finished: bool,
    /// Whether, unfinished for the deadline alone, it was sent to the flush
    /// queue again (a new message) instead of failing this one.
    pub continued: bool,
    /// Staged objects this worker deleted, the last of its run to finish.
    pub objects_deleted: usize,
    pub flush: FlushReport,
    /// For a backfill message: what this step of the backfill did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillReport>,
}

impl ItemReport {
    /// Whether something failed (a partition, or the backfill step), as
    /// opposed to being stopped by the deadline alone: then the message
    /// comes back after the visibility timeout, counted towards the
    /// dead-letter queue.
    pub fn failed(&self) -> bool {
        self.flush.failed > 0
            || self
                .backfill
                .as_ref()
                .is_some_and(|step| step.error.is_some())
    }
}

/// The worker's handler: flushes each record's item in turn; an item that
/// is not finished (a partition failed, or the item could not be read) is
/// a batch item failure. One the deadline stopped (partitions deferred or
/// checkpointed) is sent again and acknowledged ([`continue_later`]).
pub async fn handle_event(
    flusher: &Flusher,
    event: SqsEvent,
    deadline: Option<Instant>,
) -> (SqsBatchResponse, Vec<ItemReport>) {
    let mut response = SqsBatchResponse::default();
    let mut reports = Vec::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let body = record.body.unwrap_or_default();
        let outcome = match serde_json::from_str::<QueueMessage>(&body) {
            Ok(QueueMessage::Item(message)) => {
                flush_item(flusher, &message.work_item, deadline).await
            }
            Ok(QueueMessage::Backfill(message)) => {
                backfill_step(flusher, &message.backfill, deadline).await
            }
            Err(error) => Err(FlushError::Corrupt {
                what: format!("flush queue message {id}"),
                message: format!("not a work item message ({error}): {body:.200}"),
            }),
        };
        match outcome {
            Ok(mut report) => {
                if !report.finished && !continue_later(flusher, &mut report).await {
                    response.batch_item_failures.push(failure(&id));
                }
                reports.push(report);
            }
            Err(error) => {
                tracing::error!(message = %id, %error, "work item not flushed; delivered again");
                response.batch_item_failures.push(failure(&id));
            }
        }
    }
    (response, reports)
}

/// Sends an item that the deadline stopped (partitions deferred or
/// checkpointed, none failed) to the flush queue again, so that the next
/// worker goes on with it now rather than after the visibility timeout,
/// and without the receive count that would move a large item to the
/// dead-letter queue; the message in hand is then acknowledged. Returns
/// whether it was sent (else the message is a batch item failure, and
/// comes back after the visibility timeout).
async fn continue_later(flusher: &Flusher, report: &mut ItemReport) -> bool {
    let Some(queue) = &flusher.queue else {
        return false;
    };
    if report.failed() {
        return false;
    }
    let again = std::slice::from_ref(&report.work_item);
    let sent = match &report.backfill {
        Some(_) => coordinator::send_backfills(queue, again).await,
        None => coordinator::send_items(queue, again).await,
    };
    match sent {
        Ok(()) => {
            tracing::info!(work_item = %report.work_item, deferred = report.flush.deferred, checkpointed = report.flush.checkpointed, "the deadline stopped this item: sent again to go on with it");
            report.continued = true;
            true
        }
        Err(error) => {
            tracing::warn!(work_item = %report.work_item, %error, "the unfinished item could not be sent again: it comes back after the visibility timeout");
            false
        }
    }
}

fn failure(id: &str) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = id.to_owned();
    failure
}

/// Advances the backfill whose progress record is `key` until it is done,
/// the deadline nears, or a partition fails (see
/// `backfill::continue_one`). Unfinished for the deadline alone, it is
/// sent again ([`continue_later`]); stopped on an error, it is delivered
/// again after the visibility timeout, and after that the next scheduled
/// coordinator run queues it again. A backfill not running any more (done,
/// failed for good, its record gone) is acknowledged.
async fn backfill_step(
    flusher: &Flusher,
    key: &str,
    deadline: Option<Instant>,
) -> Result<ItemReport, FlushError> {
    let mut report = ItemReport {
        work_item: key.to_owned(),
        ..ItemReport::default()
    };
    let Some(step) =
        backfill::continue_one(flusher, key, crate::wall_clock_millis(), deadline).await?
    else {
        report.finished = true;
        return Ok(report);
    };
    report.found = true;
    if let Some(error) = &step.error {
        tracing::warn!(backfill = %step.id, %error, "backfill step stopped on an error");
    }
    report.finished = step.remaining == 0 && step.error.is_none();
    report.backfill = Some(step);
    Ok(report)
}

/// Flushes the work item stored at `key`: every partition in it, then, when
/// all are done, records the item and, as the last of its run, deletes
/// what the run consumed. An item already cleaned up is found done.
pub async fn flush_item(
    flusher: &Flusher,
    key: &str,
    deadline: Option<Instant>,
) -> Result<ItemReport, FlushError> {
    let s3 = &flusher.s3;
    let bucket = &flusher.config.export_bucket;
    let mut report = ItemReport {
        work_item: key.to_owned(),
        ..ItemReport::default()
    };
    let Some((bytes, _)) = store::get(s3, bucket, key).await? else {
        tracing::info!(%key, "work item gone: its run has finished");
        report.finished = true;
        return Ok(report);
    };
    report.found = true;
    let item = WorkItem::from_json(key, &bytes)?;
    let work = item.to_work();
    let trigger = Trigger {
        now_millis: item.now_millis,
        apply_grace: item.apply_grace,
        streams: None,
        tenants: None,
    };
    let alerts = flusher.alerter.invocation();
    let outcomes = flush_work(flusher, &alerts, &trigger, &work, deadline).await;
    let (flush, done) = tally(&trigger, &work, outcomes);
    report.finished = flush.failed == 0 && flush.deferred == 0 && flush.checkpointed == 0;
    report.flush = flush;
    if !report.finished {
        return Ok(report);
    }
    let record = DoneRecord {
        version: RUN_RECORD_VERSION,
        objects: work.consumed_objects(&done).into_iter().collect(),
    };
    store::put(
        s3,
        bucket,
        &layout::work_done_key(&item.run, item.item),
        serde_json::to_vec(&record).expect("done records serialize"),
        "application/json",
    )
    .await?;
    report.objects_deleted = finish_run(flusher, &item.run, item.items).await?;
    Ok(report)
}

/// When every item of run `run` (of `items`) is recorded done: deletes
/// the staged objects each of whose readers is done with them, then the
/// run's records; returns the objects deleted. Two workers finishing last
/// at once both do it, harmlessly.
async fn finish_run(flusher: &Flusher, run: &str, items: u32) -> Result<usize, FlushError> {
    let s3 = &flusher.s3;
    let bucket = &flusher.config.export_bucket;
    let keys = store::list_keys(s3, bucket, &layout::work_run_prefix(run)).await?;
    let done_keys: Vec<&String> = keys.iter().filter(|k| k.contains("/done-")).collect();
    if done_keys.len() < items as usize {
        return Ok(0);
    }
    let run_key = layout::work_run_key(run);
    let Some((bytes, _)) = store::get(s3, bucket, &run_key).await? else {
        // Another worker has finished the run.
        return Ok(0);
    };
    let record: RunRecord =
        serde_json::from_slice(&bytes).map_err(|error| FlushError::Corrupt {
            what: format!("run record s3://{bucket}/{run_key}"),
            message: error.to_string(),
        })?;
    let mut done: Vec<DoneRecord> = Vec::with_capacity(items as usize);
    for n in 0..items {
        let key = layout::work_done_key(run, n);
        let Some((bytes, _)) = store::get(s3, bucket, &key).await? else {
            return Ok(0);
        };
        done.push(
            serde_json::from_slice(&bytes).map_err(|error| FlushError::Corrupt {
                what: format!("done record s3://{bucket}/{key}"),
                message: error.to_string(),
            })?,
        );
    }
    let consumed: Vec<String> = record
        .objects
        .iter()
        .filter(|(object, readers)| {
            readers.iter().all(|n| {
                done.get(*n as usize)
                    .is_some_and(|record| record.objects.contains(*object))
            })
        })
        .map(|(object, _)| object.clone())
        .collect();
    store::delete_keys(s3, bucket, &consumed).await?;
    store::delete_keys(s3, bucket, &keys).await?;
    tracing::info!(%run, objects = consumed.len(), "run finished: consumed staged objects deleted");
    Ok(consumed.len())
}
