//! The coordinator: a flush run that spreads its work over flush workers
//! (docs/scale-out.md). It finds the closed work as an in-process run does
//! (`scan::find_work`: closed hours, late objects of flushed hours, pending
//! publishes), cuts it into work items of bounded staged bytes
//! (`work_item::plan`), stores them and a record of the run in the export
//! bucket (`work/<run>/…`), and sends one message per item to the flush
//! queue, whose event source mapping runs the workers (`worker`).
//!
//! Nothing here decides what is exported: the workers' conditional
//! manifest commits do (docs/design.md, invariant 7). A coordinator that
//! stops half-way, an item sent twice, or a second coordinator planning the
//! same hour costs work, never correctness: staged data stays until every
//! partition in it is committed, and the next run plans what is left.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use shared::dedup::IdHash;
use shared::layout;
use shared::partition::PartitionKey;

use crate::error::FlushError;
use crate::trigger::Trigger;
use crate::work_item::{self, ITEM_PARTITIONS, Planned, WorkItem};
use crate::{Flusher, backfill, bundle, scan, store};

/// The flush queue work items are sent to.
#[derive(Debug, Clone)]
pub struct FlushQueue {
    pub sqs: aws_sdk_sqs::Client,
    pub url: String,
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

/// The format of run and done records.
pub const RUN_RECORD_VERSION: u32 = 1;

/// SQS's most entries in one `SendMessageBatch`.
const SEND_BATCH: usize = 10;

/// A coordinator run's record (`layout::work_run_key`): how many items it
/// sent, and, for each staged object every partition of which is in one
/// of its items, the items that read it. Once each of those items is done
/// with the object, the object is deleted (see `worker`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub version: u32,
    pub items: u32,
    pub objects: BTreeMap<String, BTreeSet<u32>>,
    /// When the run queued its items (the wall clock, epoch milliseconds):
    /// a later coordinator leaves the run's objects to it for
    /// [`RUN_LIFETIME_MILLIS`].
    #[serde(default)]
    pub created_millis: i64,
}

/// How long a run's items can still be delivered to a worker: the flush
/// queue's message retention (one hour, the template's
/// `MessageRetentionPeriod`) plus one visibility timeout (960 s). Until
/// then, a later coordinator run does not plan the objects it planned
/// (they would be flushed twice, the second time for nothing); after it,
/// what the run left staged is planned again.
pub const RUN_LIFETIME_MILLIS: i64 = (3600 + 960) * 1000;

/// What a worker records once it has flushed every partition of an item
/// (`layout::work_done_key`): the staged objects every partition of the
/// item that reads them has committed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoneRecord {
    pub version: u32,
    pub objects: BTreeSet<String>,
}

/// The body of a flush queue message: the key of its work item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ItemMessage {
    pub work_item: String,
}

/// The body of a flush queue message for a backfill step: the key of the
/// backfill's progress record (`layout::backfill_progress_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackfillMessage {
    pub backfill: String,
}

/// Any flush queue message, as a worker reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QueueMessage {
    Item(ItemMessage),
    Backfill(BackfillMessage),
}

/// A running backfill no worker has advanced for this long is sent to the
/// flush queue again by the next scheduled coordinator run: the flush
/// queue's visibility timeout, after which a worker that was on it has
/// stopped (a worker advancing it records its progress as it goes).
pub const BACKFILL_IDLE_MILLIS: i64 = 960 * 1000;

/// What a coordinator run did; the handler returns it and logs it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoordinatorReport {
    pub now: String,
    /// The run's id (`work/<run>/`), when it sent items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Work items sent to the flush queue.
    pub items: usize,
    /// Partitions in them.
    pub partitions: usize,
    /// Items that are a range of a partition's shards (a partition larger
    /// than an item, split).
    #[serde(skip_serializing_if = "is_zero")]
    pub shard_ranges: usize,
    /// Their compressed staged bytes.
    pub staged_bytes: u64,
    /// Staged objects refused as damaged while reading their indexes.
    pub quarantined: usize,
    /// Staged objects whose index could not be read (S3 failed): the next
    /// run plans them.
    pub unread: usize,
    /// Staged objects left to earlier runs whose items may still be
    /// flushing them.
    pub in_flight: usize,
    /// The progress records of unfinished backfills a scheduled run sent
    /// to the flush queue (for workers to continue) after its items.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backfills_queued: Vec<String>,
}

/// Plans `work` into items: which partitions (or ranges of a partition's
/// shards, for those `shard_counts` gives more than one) each holds, and
/// the run record that says which staged objects the run's workers may
/// delete.
pub fn plan_run(
    work: &scan::Work,
    item_bytes: u64,
    shard_counts: &BTreeMap<PartitionKey, u32>,
) -> (Vec<Vec<Planned>>, RunRecord) {
    let items = work_item::plan(work, item_bytes, ITEM_PARTITIONS, shard_counts);
    // A partition split into shard ranges is in several items.
    let mut items_of: HashMap<&PartitionKey, BTreeSet<u32>> = HashMap::new();
    for (n, planned) in items.iter().enumerate() {
        for p in planned {
            items_of.entry(&p.partition).or_default().insert(n as u32);
        }
    }
    let mut record = RunRecord {
        version: RUN_RECORD_VERSION,
        items: items.len() as u32,
        objects: BTreeMap::new(),
        created_millis: 0,
    };
    for (object, partitions) in &work.objects {
        // An object with a partition outside this run (a manual flush of
        // some tenants) is not this run's to delete.
        let readers: Option<BTreeSet<u32>> = partitions
            .iter()
            .map(|p| items_of.get(p).cloned())
            .try_fold(BTreeSet::new(), |mut all, items| {
                all.extend(items?);
                Some(all)
            });
        if let Some(readers) = readers {
            record.objects.insert(object.clone(), readers);
        }
    }
    // Quarantined: no item reads them; the run's last worker deletes them.
    for object in &work.discard {
        record.objects.insert(object.clone(), BTreeSet::new());
    }
    (items, record)
}

/// The shard count of each partition of `work` whose staged bytes exceed
/// `item_bytes` and which can be flushed shard by shard: the count its
/// manifest recorded (the hour's, once sharded), else the largest count
/// its segments were staged with. A partition whose ids are kept with a
/// hash other than BLAKE3 (written before it) is not sharded: its keys'
/// top bits are not the staged shards.
async fn shard_counts(
    flusher: &Flusher,
    work: &scan::Work,
    item_bytes: u64,
) -> BTreeMap<PartitionKey, u32> {
    let large: Vec<PartitionKey> = work
        .sources
        .keys()
        .filter(|p| work.spooled_bytes(p) > item_bytes)
        .cloned()
        .collect();
    let bucket = &flusher.config.export_bucket;
    let counts: Vec<(PartitionKey, u32)> = stream::iter(large)
        .map(|partition| async move {
            let staged = work.sources[&partition]
                .iter()
                .filter_map(|source| match source {
                    scan::Source::Segments { segments, .. } => {
                        segments.iter().map(|s| s.shards).max()
                    }
                    scan::Source::Chunk(_) => None,
                })
                .max()
                .unwrap_or(1);
            let key = layout::manifest_key(&partition);
            // Unreadable (S3 failed, or a manifest this release refuses): the
            // partition stays whole, and its worker says why it cannot flush.
            let manifest = match store::read_manifest(&flusher.s3, bucket, &key).await {
                Ok(manifest) => manifest,
                Err(error) => {
                    tracing::warn!(%key, %error, "manifest not read: the partition is not split");
                    return (partition, 1);
                }
            };
            let count = match manifest {
                Some((manifest, _)) => match &manifest.shards {
                    Some(state) => state.count,
                    None if manifest.id_digest.is_some()
                        && manifest.id_digest_version != IdHash::Blake3.version() =>
                    {
                        1
                    }
                    None => staged,
                },
                None => staged,
            };
            (partition, count)
        })
        .buffered(flusher.config.flush_concurrency)
        .collect()
        .await;
    counts.into_iter().filter(|(_, count)| *count > 1).collect()
}

/// Runs the coordinator: finds the work (leaving out staged objects that
/// earlier runs' items are still flushing), stores its items and the run
/// record, sends one message per item to `queue`; a scheduled run then
/// continues unfinished backfills. An error means the run stopped: items
/// not sent are planned again by the next run.
pub async fn coordinate(
    flusher: &Flusher,
    queue: &FlushQueue,
    trigger: &Trigger,
    deadline: Option<Instant>,
) -> Result<CoordinatorReport, FlushError> {
    coordinate_at(
        flusher,
        queue,
        trigger,
        deadline,
        crate::wall_clock_millis(),
    )
    .await
}

/// [`coordinate`], with `wall_millis` as the wall clock (which decides
/// only which earlier runs may still be in flight).
pub async fn coordinate_at(
    flusher: &Flusher,
    queue: &FlushQueue,
    trigger: &Trigger,
    deadline: Option<Instant>,
    wall_millis: i64,
) -> Result<CoordinatorReport, FlushError> {
    let config = &flusher.config;
    let bucket = &config.export_bucket;
    let alerts = flusher.alerter.invocation();
    let mut work = scan::find_work(flusher, trigger, &alerts).await?;
    let busy = in_flight(flusher, wall_millis).await?;
    work.exclude(&busy);
    let item_bytes = config.work_item_bytes.min(config.spool_bytes) as u64;
    let counts = shard_counts(flusher, &work, item_bytes).await;
    let (items, mut record) = plan_run(&work, item_bytes, &counts);
    record.created_millis = wall_millis;
    let mut report = CoordinatorReport {
        now: shared::time::format_rfc3339_millis(trigger.now_millis),
        items: items.len(),
        partitions: items
            .iter()
            .flatten()
            .map(|planned| &planned.partition)
            .collect::<BTreeSet<_>>()
            .len(),
        shard_ranges: items
            .iter()
            .flatten()
            .filter(|planned| planned.shards.is_some())
            .count(),
        staged_bytes: work
            .partitions()
            .iter()
            .map(|p| work.spooled_bytes(p))
            .sum(),
        quarantined: work.quarantined.len(),
        unread: work.unread,
        in_flight: busy.len(),
        ..CoordinatorReport::default()
    };
    if !items.is_empty() {
        let run = format!("{:013}-{}", trigger.now_millis, bundle::attempt_id());
        let body = serde_json::to_vec(&record).expect("run records serialize");
        store::put(
            &flusher.s3,
            bucket,
            &layout::work_run_key(&run),
            body,
            "application/json",
        )
        .await?;
        let count = items.len() as u32;
        let keys: Vec<String> = stream::iter(items.iter().enumerate())
            .map(|(n, partitions)| {
                let mut item =
                    WorkItem::new(&run, n as u32, count, trigger.now_millis, &work, partitions);
                item.apply_grace = trigger.apply_grace;
                let key = layout::work_item_key(&run, n as u32);
                async move {
                    store::put(
                        &flusher.s3,
                        bucket,
                        &key,
                        item.to_json(),
                        "application/json",
                    )
                    .await
                    .map(|()| key)
                }
            })
            .buffered(config.flush_concurrency)
            .try_collect()
            .await?;
        send_items(queue, &keys).await?;
        report.run = Some(run);
    }
    let near_deadline =
        deadline.is_some_and(|deadline| Instant::now() + crate::DEADLINE_MARGIN >= deadline);
    if trigger.apply_grace && !near_deadline {
        let queued = match backfill::idle_running(flusher, wall_millis, BACKFILL_IDLE_MILLIS).await
        {
            Ok(keys) => send_backfills(queue, &keys).await.map(|()| keys),
            Err(error) => Err(error),
        };
        match queued {
            Ok(keys) => report.backfills_queued = keys,
            // The items are sent; the backfills are queued next run.
            Err(error) => tracing::error!(%error, "unfinished backfills not queued"),
        }
    }
    Ok(report)
}

/// The staged objects of earlier coordinator runs that may still be in
/// flight at `wall_millis` (see [`RUN_LIFETIME_MILLIS`]); a run whose
/// record is gone (finished) or unreadable holds none.
async fn in_flight(flusher: &Flusher, wall_millis: i64) -> Result<BTreeSet<String>, FlushError> {
    let s3 = &flusher.s3;
    let bucket = &flusher.config.export_bucket;
    let mut busy = BTreeSet::new();
    for folder in store::list_folders(s3, bucket, layout::WORK_PREFIX).await? {
        let run = folder
            .trim_start_matches(layout::WORK_PREFIX)
            .trim_end_matches('/');
        let key = layout::work_run_key(run);
        let Some((bytes, _)) = store::get(s3, bucket, &key).await? else {
            continue;
        };
        match serde_json::from_slice::<RunRecord>(&bytes) {
            Ok(record) if wall_millis - record.created_millis < RUN_LIFETIME_MILLIS => {
                busy.extend(record.objects.into_keys());
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%key, %error, "not a run record: its objects are planned again")
            }
        }
    }
    Ok(busy)
}

/// Sends one message per work item key, ten a `SendMessageBatch`; an
/// entry SQS refuses fails the run (naming it).
pub async fn send_items(queue: &FlushQueue, keys: &[String]) -> Result<(), FlushError> {
    send(queue, keys, "work item", |key| {
        QueueMessage::Item(ItemMessage { work_item: key })
    })
    .await
}

/// Sends one message per backfill progress record key (a backfill step
/// for a worker, see `backfill::continue_one`); an entry SQS refuses fails
/// the send (naming it).
pub async fn send_backfills(queue: &FlushQueue, keys: &[String]) -> Result<(), FlushError> {
    send(queue, keys, "backfill", |key| {
        QueueMessage::Backfill(BackfillMessage { backfill: key })
    })
    .await
}

/// Sends `message(key)` for each of `keys` (`what` they name, in errors).
async fn send(
    queue: &FlushQueue,
    keys: &[String],
    what: &str,
    message: impl Fn(String) -> QueueMessage,
) -> Result<(), FlushError> {
    let sqs_error = |operation: &'static str, message: String| FlushError::Sqs {
        operation,
        queue: queue.url.clone(),
        message,
    };
    for batch in keys.chunks(SEND_BATCH) {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(n, key)| {
                let body =
                    serde_json::to_string(&message(key.clone())).expect("messages serialize");
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .message_body(body)
                    .build()
                    .map_err(|error| sqs_error("SendMessageBatch", error.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = queue
            .sqs
            .send_message_batch()
            .queue_url(&queue.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|error| {
                sqs_error(
                    "SendMessageBatch",
                    aws_sdk_sqs::error::DisplayErrorContext(&error).to_string(),
                )
            })?;
        if let Some(failed) = output.failed.first() {
            let key = failed
                .id
                .parse::<usize>()
                .ok()
                .and_then(|n| batch.get(n))
                .map_or("?", String::as_str);
            return Err(sqs_error(
                "SendMessageBatch",
                format!(
                    "the message for {what} {key} was refused: {} {}",
                    failed.code,
                    failed.message.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{Source, Work};
    use shared::partition::{Hour, TenantKey};
    use shared::staged::Segment;

    fn partition(tenant: &str) -> PartitionKey {
        PartitionKey {
            hour: Hour::containing(1_795_341_600_000),
            stream: "app".into(),
            tenant: TenantKey::encode(tenant),
        }
    }

    /// Objects `x` (tenants a, b, c) and `y` (tenant c, and z, which this
    /// run did not select), 100 bytes a segment.
    fn work() -> Work {
        let mut work = Work::default();
        let mut add = |object: &str, tenant: &str, offset: u64, selected: bool| {
            let segment = Segment {
                stream: "app".into(),
                tenant: tenant.into(),
                shard: 0,
                shards: 1,
                offset,
                length: 100,
                events: 1,
                bytes: 10,
            };
            work.objects
                .entry(object.to_owned())
                .or_default()
                .insert(partition(tenant));
            if selected {
                work.sources
                    .entry(partition(tenant))
                    .or_default()
                    .push(Source::Segments {
                        object: object.to_owned(),
                        segments: vec![segment],
                    });
            }
        };
        add("x", "a", 0, true);
        add("x", "b", 100, true);
        add("x", "c", 200, true);
        add("y", "c", 0, true);
        add("y", "z", 100, false);
        work
    }

    #[test]
    fn a_run_may_delete_only_objects_all_of_whose_partitions_it_planned() {
        let (items, record) = plan_run(&work(), 150, &BTreeMap::new());
        // a (100), b (100), c (200 bytes: over the budget, alone).
        assert_eq!(items.len(), 3);
        assert_eq!(record.items, 3);
        assert_eq!(
            record.objects,
            BTreeMap::from([("x".to_owned(), BTreeSet::from([0, 1, 2]))]),
            "y holds z, which this run did not select"
        );
    }

    #[test]
    fn a_message_names_its_item_and_nothing_else() {
        let message: ItemMessage =
            serde_json::from_str(r#"{"workItem":"work/r/item-00000.json"}"#).unwrap();
        assert_eq!(message.work_item, "work/r/item-00000.json");
        assert!(serde_json::from_str::<ItemMessage>(r#"{"workItem":"k","x":1}"#).is_err());
    }
}
