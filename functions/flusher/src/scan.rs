//! Finding work: partitions with staged data in closed hours, found by
//! listing `staging/` date and hour folders (hour first, so a run costs in
//! proportion to pending work, not history), and partitions with pending
//! publishes, found by listing `pending/`.
//!
//! An hour folder holds staged objects (one per batcher invocation and
//! hour, every partition in it, see `shared::staged`) and, across an
//! upgrade, staged chunks of the format before them (one per partition).
//! Each staged object's index is read with one ranged GET of its tail
//! (`staged_read::read_index`); an object whose index cannot be read is
//! quarantined here, since no partition can claim it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use shared::alert::InvocationAlerts;
use shared::layout::{self, PENDING_PREFIX, STAGING_PREFIX};
use shared::partition::{Hour, PartitionKey, TenantKey};
use shared::staged::Segment;

use crate::Flusher;
use crate::error::FlushError;
use crate::staged_read;
use crate::store;
use crate::trigger::Trigger;

/// Staged objects whose tails are read at once.
const TAIL_READS_AT_ONCE: usize = 16;

/// Staged data of one partition, in one object (as a work item stores
/// it: `{"chunk": key}` or `{"segments": {"object": key, "segments": […]}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// A staged chunk of the format before staged objects (gzip NDJSON, the
    /// partition's only), read whole.
    Chunk(String),
    /// The partition's segments (one a shard) in the staged object `object`.
    Segments {
        object: String,
        segments: Vec<Segment>,
    },
}

impl Source {
    /// The key of the object the data is in: what a manifest records as
    /// consumed.
    pub fn key(&self) -> &str {
        match self {
            Source::Chunk(key) => key,
            Source::Segments { object, .. } => object,
        }
    }

    /// The compressed bytes a window spools for it (chunks are read whole,
    /// not spooled).
    pub fn spooled_bytes(&self) -> u64 {
        match self {
            Source::Chunk(_) => 0,
            Source::Segments { segments, .. } => segments.iter().map(|s| s.length).sum(),
        }
    }
}

/// Per staged object, the partitions that are done with it.
pub type DoneWith = BTreeMap<String, BTreeSet<PartitionKey>>;

/// What a run has to do.
#[derive(Debug, Default)]
pub struct Work {
    /// The staged data of closed hours, per selected partition, in the
    /// order it was staged (`layout::staged_order`: both formats
    /// interleaved, always in the same order).
    pub sources: BTreeMap<PartitionKey, Vec<Source>>,
    /// The staged objects of closed hours, each with every partition in
    /// its index (selected by the trigger or not): an object is deleted
    /// once all of them have consumed it.
    pub objects: BTreeMap<String, BTreeSet<PartitionKey>>,
    /// Partitions whose manifests list parts still to publish.
    pub publishes: BTreeSet<PartitionKey>,
    /// Partitions every staged object of which holds only partitions this
    /// work flushes: once they are all done, the run deletes those
    /// objects, which tells the next run that the parts committed from
    /// them were published (see `partition::complete`).
    pub objects_go: BTreeSet<PartitionKey>,
    /// Partitions of open hours whose pending-publish marker is there
    /// already (it waits for the close): not visited for it, but not
    /// written again by a run that flushes them.
    pub open_marked: BTreeSet<PartitionKey>,
    /// Staged objects whose index could not be read, quarantined while
    /// listing (a copy made now).
    pub quarantined: Vec<String>,
    /// Staged objects whose index could not be read, now quarantined (a
    /// copy made now or by an earlier run): whoever consumes the run's
    /// work deletes them (the in-process run, or a coordinator run's last
    /// worker; a coordinator itself deletes nothing).
    pub discard: Vec<String>,
    /// Staged objects whose tail could not be fetched, or whose quarantine
    /// copy could not be made (S3 failed): left for the next run, which
    /// reads them as late objects of their hour.
    pub unread: usize,
    /// Partitions of which this work is only a range of shards (a work
    /// item of a partition split by the coordinator, see `shard`): their
    /// sources hold that range's segments only.
    pub ranges: BTreeMap<PartitionKey, crate::work_item::ShardRange>,
}

impl Work {
    /// Whether `partition`'s pending-publish marker was listed (of a
    /// closed hour or an open one).
    pub fn marked(&self, partition: &PartitionKey) -> bool {
        self.publishes.contains(partition) || self.open_marked.contains(partition)
    }

    /// Every partition to visit, in order.
    pub fn partitions(&self) -> BTreeSet<PartitionKey> {
        self.sources
            .keys()
            .cloned()
            .chain(self.publishes.iter().cloned())
            .collect()
    }

    /// The compressed staged bytes `partition` spools.
    pub fn spooled_bytes(&self, partition: &PartitionKey) -> u64 {
        self.sources
            .get(partition)
            .map_or(0, |sources| sources.iter().map(Source::spooled_bytes).sum())
    }

    /// Leaves out the staged objects `busy` (another coordinator run's
    /// items are flushing them): their segments, the partitions left with
    /// no other staged data (unless they have a publish pending), and the
    /// objects themselves.
    pub fn exclude(&mut self, busy: &BTreeSet<String>) {
        if busy.is_empty() {
            return;
        }
        self.sources.retain(|_, sources| {
            sources.retain(|source| !busy.contains(source.key()));
            !sources.is_empty()
        });
        self.objects.retain(|object, _| !busy.contains(object));
    }

    /// The staged objects of this work every partition of which `done`
    /// says is done with them: those the run (or, for a work item, the
    /// item) may consider consumed.
    pub fn consumed_objects(&self, done: &DoneWith) -> Vec<String> {
        self.objects
            .iter()
            .filter(|(object, partitions)| {
                done.get(*object)
                    .is_some_and(|finished| partitions.is_subset(finished))
            })
            .map(|(object, _)| object.clone())
            .collect()
    }

    /// Staged chunks (of the format before staged objects) of `partition`.
    pub fn chunk_count(&self, partition: &PartitionKey) -> usize {
        self.sources.get(partition).map_or(0, |sources| {
            sources
                .iter()
                .filter(|s| matches!(s, Source::Chunk(_)))
                .count()
        })
    }
}

/// Lists the work of a run; staged objects whose index cannot be read are
/// quarantined on the way (alerted through `alerts`).
pub async fn find_work(
    flusher: &Flusher,
    trigger: &Trigger,
    alerts: &InvocationAlerts<'_>,
) -> Result<Work, FlushError> {
    let config = &flusher.config;
    let bucket = &config.export_bucket;
    let grace = config.flush_grace_minutes;
    // Open hours too, for the partitions of destinations that receive
    // files every few minutes (up to the run's "now").
    let open_hours = config.has_frequent_destinations();
    let reached = |hour: Hour| {
        trigger.closes(hour, grace) || (open_hours && hour.start_millis() <= trigger.now_millis)
    };
    let frequent: Mutex<HashMap<(String, TenantKey), bool>> = Mutex::default();
    let mut work = Work::default();
    // The partitions of open hours planned: what earlier runs consumed of
    // them is left out below.
    let mut open_partitions: BTreeSet<PartitionKey> = BTreeSet::new();
    for date_folder in store::list_folders(&flusher.s3, bucket, STAGING_PREFIX).await? {
        let date = date_folder
            .trim_start_matches(STAGING_PREFIX)
            .trim_end_matches('/');
        // The date's first hour not reached: nor are any after it.
        match Hour::parse_date_path(&format!("{date}/00")) {
            Some(first) if reached(first) => {}
            Some(_) => break,
            None => continue,
        }
        for hour_folder in store::list_folders(&flusher.s3, bucket, &date_folder).await? {
            let hour_path = hour_folder
                .trim_start_matches(STAGING_PREFIX)
                .trim_end_matches('/');
            let Some(hour) = Hour::parse_date_path(hour_path) else {
                continue;
            };
            if !reached(hour) {
                break;
            }
            let open = !trigger.closes(hour, grace);
            // Asked for each segment of each object: looked up once a
            // stream and tenant.
            let selected = |partition: &PartitionKey| {
                selects(trigger, partition)
                    && (!open
                        || *frequent
                            .lock()
                            .expect("not poisoned")
                            .entry((partition.stream.clone(), partition.tenant.clone()))
                            .or_insert_with(|| {
                                config.flushes_open_hours(&partition.stream, &partition.tenant)
                            }))
            };
            let mut objects = Vec::new();
            for listed in store::list_objects(&flusher.s3, bucket, &hour_folder).await? {
                if let Some(partition) = layout::parse_staging_chunk_key(&listed.key) {
                    if selected(&partition) {
                        let chunk = Source::Chunk(listed.key);
                        work.sources.entry(partition).or_default().push(chunk);
                    }
                } else if layout::parse_staged_object_key(&listed.key)
                    .is_some_and(|(of, ..)| of == hour)
                {
                    objects.push(listed);
                }
            }
            let indexes: Vec<_> = stream::iter(objects)
                .map(|listed| async move {
                    let index =
                        staged_read::read_index(&flusher.s3, bucket, &listed.key, listed.size)
                            .await;
                    (listed.key, index)
                })
                .buffered(TAIL_READS_AT_ONCE)
                .collect()
                .await;
            for (key, index) in indexes {
                let index = match index {
                    Ok(index) => index,
                    Err(error) => {
                        tracing::error!(%error, "staged object's index not read; next run");
                        work.unread += 1;
                        continue;
                    }
                };
                match index {
                    // Gone since the listing: consumed by every partition.
                    None => {}
                    Some(Ok(index)) => {
                        let partitions = work.objects.entry(key.clone()).or_default();
                        for segment in index.segments {
                            let partition = PartitionKey {
                                hour,
                                stream: segment.stream.clone(),
                                tenant: segment.tenant_key(),
                            };
                            partitions.insert(partition.clone());
                            if !selected(&partition) {
                                continue;
                            }
                            if open {
                                open_partitions.insert(partition.clone());
                            }
                            let sources = work.sources.entry(partition).or_default();
                            match sources.last_mut() {
                                Some(Source::Segments { object, segments }) if *object == key => {
                                    segments.push(segment);
                                }
                                _ => sources.push(Source::Segments {
                                    object: key.clone(),
                                    segments: vec![segment],
                                }),
                            }
                        }
                    }
                    Some(Err(error)) => {
                        let reason = format!("s3://{bucket}/{key}: {error}");
                        match staged_read::quarantine(flusher, alerts, &key, &reason).await {
                            Ok(copied_now) => {
                                if copied_now {
                                    work.quarantined.push(key.clone());
                                }
                                // No partition can claim it: the copy is
                                // all that is kept.
                                work.discard.push(key.clone());
                            }
                            // Left for the next run, which tries again.
                            Err(error) => {
                                tracing::error!(%error, "damaged staged object not quarantined");
                                work.unread += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    leave_out_consumed(flusher, &mut work, open_partitions).await;
    work.objects_go = objects_go(&work);
    for sources in work.sources.values_mut() {
        sources.sort_by_cached_key(|source| layout::staged_order(source.key()));
    }
    // A marker of an open hour (an interval destination's parts, or the
    // hour's `_SUCCESS` still to write) waits for its hour to close; the
    // hour's next staged data is flushed, and published, before that.
    for key in store::list_keys(&flusher.s3, bucket, PENDING_PREFIX).await? {
        if let Some(partition) = layout::parse_pending_publish_key(&key)
            && selects(trigger, &partition)
        {
            match !open_hours || trigger.closes(partition.hour, grace) {
                true => work.publishes.insert(partition),
                false => work.open_marked.insert(partition),
            };
        }
    }
    Ok(work)
}

/// Leaves out of `partitions` (of open hours) the staged data their
/// manifests say earlier runs consumed (or quarantined), and the
/// partitions left with nothing new: a staged object of an open hour stays
/// staged until every partition in it is done (those of hourly
/// destinations wait for the close), and without this every run would
/// plan, fetch and skip its consumed segments again. A partition with
/// parts still to publish, or that a stopped run may not have published,
/// stays planned whole (its flush publishes them). One manifest GET per
/// partition, at most [`TAIL_READS_AT_ONCE`] at once; a manifest that
/// cannot be read leaves the partition as planned (its flush reads it
/// again and decides).
async fn leave_out_consumed(
    flusher: &Flusher,
    work: &mut Work,
    partitions: BTreeSet<PartitionKey>,
) {
    let s3 = &flusher.s3;
    let bucket = &flusher.config.export_bucket;
    let consumed: Vec<(PartitionKey, HashSet<String>)> = stream::iter(partitions)
        .map(|partition| async move {
            let key = layout::manifest_key(&partition);
            let consumed = match store::read_manifest(s3, bucket, &key).await {
                // Parts still to publish (or that a stopped run may not
                // have published): the flush publishes them, and needs the
                // staged objects it consumed to tell.
                Ok(Some((manifest, _))) if manifest.has_pending() || manifest.has_unconfirmed() => {
                    HashSet::new()
                }
                Ok(Some((manifest, _))) => manifest
                    .consumed()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                Ok(None) => HashSet::new(),
                Err(error) => {
                    tracing::warn!(%error, "manifest not read while planning an open hour; its partition is planned whole");
                    HashSet::new()
                }
            };
            (partition, consumed)
        })
        .buffer_unordered(TAIL_READS_AT_ONCE)
        .collect()
        .await;
    for (partition, consumed) in consumed {
        if consumed.is_empty() {
            continue;
        }
        if let Some(sources) = work.sources.get_mut(&partition) {
            sources.retain(|source| !consumed.contains(source.key()));
            if sources.is_empty() {
                work.sources.remove(&partition);
            }
        }
    }
}

/// The partitions of `work` every staged object of which holds only
/// partitions `work` flushes (see [`Work::objects_go`]).
fn objects_go(work: &Work) -> BTreeSet<PartitionKey> {
    let flushed = |object: &str| {
        work.objects
            .get(object)
            .is_some_and(|partitions| partitions.iter().all(|p| work.sources.contains_key(p)))
    };
    work.sources
        .iter()
        .filter(|(_, sources)| {
            sources.iter().all(|source| match source {
                Source::Chunk(_) => true,
                Source::Segments { object, .. } => flushed(object),
            })
        })
        .map(|(partition, _)| partition.clone())
        .collect()
}

fn selects(trigger: &Trigger, partition: &PartitionKey) -> bool {
    trigger
        .streams
        .as_ref()
        .is_none_or(|streams| streams.contains(&partition.stream))
        && trigger.tenants.as_ref().is_none_or(|tenants| {
            tenants
                .iter()
                .any(|t| TenantKey::encode(t) == partition.tenant)
        })
}
