//! Work items: what the coordinator hands a flush worker through the flush
//! queue (see `coordinator`, `worker`). An item is a run of contiguous
//! partitions (in partition order, as staged objects sort their segments,
//! so a worker reads each staged object with one ranged GET) whose staged
//! bytes fit a budget, with everything the worker needs to flush them
//! without listing or reading any index again: each partition's sources
//! (staged chunks, and segments of staged objects with their places) and
//! whether it has a pending-publish marker.
//!
//! An item is stored as a JSON object in the export bucket
//! (`layout::work_item_key`) and the queue's message names it, so a message
//! stays a few hundred bytes whatever the number of staged objects (SQS
//! allows 256 KiB). Items are idempotent: flushing one twice, or two
//! workers flushing it at once, leaves each event once (docs/design.md,
//! invariant 7); flushing one whose partitions another run has already
//! committed finds nothing new and only reports them done.

use std::collections::BTreeSet;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use shared::layout;
use shared::partition::PartitionKey;

use crate::scan::{Source, Work};

/// The work item format this flusher writes and reads.
pub const WORK_ITEM_VERSION: u32 = 1;

/// Partitions in one work item, at most: four bundles' worth (a worker
/// flushes them in groups of `BUNDLE_PARTITIONS`, sharing one read of
/// each staged object).
pub const ITEM_PARTITIONS: usize = 4 * crate::BUNDLE_PARTITIONS;

/// One work item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkItem {
    pub version: u32,
    /// The coordinator run that planned it (`layout::work_run_key`'s id).
    pub run: String,
    /// Its number in the run, from 0, and how many the run planned.
    pub item: u32,
    pub items: u32,
    /// The run's "now", epoch milliseconds: the time the worker's commits
    /// record, whenever it flushes.
    pub now_millis: i64,
    pub partitions: Vec<ItemPartition>,
}

/// One partition of a work item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemPartition {
    /// The partition, as its manifest's key (`layout::manifest_key`).
    pub manifest: String,
    /// Its staged data, in staged order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
    /// Whether its pending-publish marker was listed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub marked: bool,
}

/// Why a stored work item cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkItemError {
    #[error("work item {key}: not a work item: {message}")]
    Malformed { key: String, message: String },
    #[error(
        "work item {key}: version {version} is newer than this flusher's ({WORK_ITEM_VERSION}); \
         deploy the same release to coordinator and workers"
    )]
    Newer { key: String, version: u32 },
    #[error("work item {key}: `{manifest}` does not name a partition")]
    BadPartition { key: String, manifest: String },
}

/// Splits `work`'s partitions (in order) into work items: consecutive
/// partitions whose staged bytes sum to at most `budget` (a partition
/// larger than the budget is an item of its own), at most `max_partitions`
/// each. Every partition of `work` is in exactly one item, in order.
pub fn plan(work: &Work, budget: u64, max_partitions: usize) -> Vec<Vec<PartitionKey>> {
    let partitions: Vec<PartitionKey> = work.partitions().into_iter().collect();
    let sizes: Vec<u64> = partitions.iter().map(|p| work.spooled_bytes(p)).collect();
    split(&sizes, budget, max_partitions)
        .into_iter()
        .map(|range| partitions[range].to_vec())
        .collect()
}

/// The ranges of consecutive sizes that sum to at most `budget`, at most
/// `max_count` long (at least one each).
pub fn split(sizes: &[u64], budget: u64, max_count: usize) -> Vec<Range<usize>> {
    let max_count = max_count.max(1);
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (at, &size) in sizes.iter().enumerate() {
        if at > start && (bytes.saturating_add(size) > budget || at - start == max_count) {
            ranges.push(start..at);
            start = at;
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
    }
    if start < sizes.len() {
        ranges.push(start..sizes.len());
    }
    ranges
}

impl WorkItem {
    /// Item `item` of `items` of run `run` at `now_millis`: `partitions`,
    /// with their sources and markers from `work`.
    pub fn new(
        run: &str,
        item: u32,
        items: u32,
        now_millis: i64,
        work: &Work,
        partitions: &[PartitionKey],
    ) -> Self {
        Self {
            version: WORK_ITEM_VERSION,
            run: run.to_owned(),
            item,
            items,
            now_millis,
            partitions: partitions
                .iter()
                .map(|partition| ItemPartition {
                    manifest: layout::manifest_key(partition),
                    sources: work.sources.get(partition).cloned().unwrap_or_default(),
                    marked: work.publishes.contains(partition),
                })
                .collect(),
        }
    }

    /// Reads an item stored at `key`: refused when it is not one, when it is
    /// of a newer format, or when a partition is not one.
    pub fn from_json(key: &str, bytes: &[u8]) -> Result<Self, WorkItemError> {
        let item: Self =
            serde_json::from_slice(bytes).map_err(|error| WorkItemError::Malformed {
                key: key.to_owned(),
                message: error.to_string(),
            })?;
        if item.version > WORK_ITEM_VERSION {
            return Err(WorkItemError::Newer {
                key: key.to_owned(),
                version: item.version,
            });
        }
        for partition in &item.partitions {
            if layout::parse_manifest_key(&partition.manifest).is_none() {
                return Err(WorkItemError::BadPartition {
                    key: key.to_owned(),
                    manifest: partition.manifest.clone(),
                });
            }
        }
        Ok(item)
    }

    /// The item as stored.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("work items serialize")
    }

    /// The item's partitions, in order.
    pub fn partition_keys(&self) -> Vec<PartitionKey> {
        self.partitions
            .iter()
            .filter_map(|p| layout::parse_manifest_key(&p.manifest))
            .collect()
    }

    /// The item as the flusher's [`Work`]: its partitions' sources and
    /// markers, and the staged objects they read (each with only this
    /// item's partitions: whether an object can be deleted is the run's
    /// decision, see `worker`).
    pub fn to_work(&self) -> Work {
        let mut work = Work::default();
        for entry in &self.partitions {
            let Some(partition) = layout::parse_manifest_key(&entry.manifest) else {
                continue;
            };
            for source in &entry.sources {
                if let Source::Segments { object, .. } = source {
                    work.objects
                        .entry(object.clone())
                        .or_insert_with(BTreeSet::new)
                        .insert(partition.clone());
                }
            }
            if !entry.sources.is_empty() {
                work.sources
                    .insert(partition.clone(), entry.sources.clone());
            }
            if entry.marked {
                work.publishes.insert(partition);
            }
        }
        work
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::partition::{Hour, TenantKey};
    use shared::staged::Segment;

    fn partition(tenant: &str) -> PartitionKey {
        PartitionKey {
            hour: Hour::containing(1_795_341_600_000),
            stream: "app".into(),
            tenant: TenantKey::encode(tenant),
        }
    }

    fn segment(tenant: &str, offset: u64, length: u64) -> Segment {
        Segment {
            stream: "app".into(),
            tenant: TenantKey::encode(tenant).as_str().to_owned(),
            shard: 0,
            shards: 1,
            offset,
            length,
            events: 3,
            bytes: 300,
        }
    }

    fn work() -> Work {
        let mut work = Work::default();
        for (n, tenant) in ["a", "b", "c", "d"].iter().enumerate() {
            let object = "staging/2026-11-22/10/1795341601000-r.staged".to_owned();
            work.sources.insert(
                partition(tenant),
                vec![Source::Segments {
                    object: object.clone(),
                    segments: vec![segment(tenant, n as u64 * 100, 100)],
                }],
            );
            work.objects
                .entry(object)
                .or_default()
                .insert(partition(tenant));
        }
        work.publishes.insert(partition("e"));
        work
    }

    #[test]
    fn items_are_consecutive_partitions_within_the_budget_and_the_count() {
        assert_eq!(split(&[100, 100, 100, 0, 0], 200, 10), vec![0..2, 2..5]);
        assert_eq!(
            split(&[100, 100, 100, 0, 0], 1000, 2),
            vec![0..2, 2..4, 4..5]
        );
        // A partition over the budget is an item of its own.
        assert_eq!(split(&[50, 500, 50], 100, 10), vec![0..1, 1..2, 2..3]);
        assert_eq!(split(&[], 100, 10), Vec::<Range<usize>>::new());
        let items = plan(&work(), 200, 10);
        let tenants: Vec<Vec<&str>> = items
            .iter()
            .map(|item| item.iter().map(|p| p.tenant.as_str()).collect())
            .collect();
        assert_eq!(tenants, vec![vec!["a", "b"], vec!["c", "d", "e"]]);
    }

    #[test]
    fn an_item_round_trips_and_gives_back_its_partitions_work() {
        let work = work();
        let partitions = [partition("c"), partition("d"), partition("e")];
        let item = WorkItem::new("run-1", 1, 2, 42, &work, &partitions);
        let stored = item.to_json();
        let read = WorkItem::from_json("work/x.json", &stored).unwrap();
        assert_eq!(read, item);
        assert_eq!(read.partition_keys(), partitions.to_vec());
        let again = read.to_work();
        assert_eq!(again.sources.len(), 2);
        assert_eq!(
            again.sources[&partition("c")],
            work.sources[&partition("c")]
        );
        assert!(again.publishes.contains(&partition("e")));
        let object = "staging/2026-11-22/10/1795341601000-r.staged";
        assert_eq!(
            again.objects[object],
            BTreeSet::from([partition("c"), partition("d")])
        );
    }

    #[test]
    fn a_damaged_newer_or_foreign_item_is_refused_naming_its_key() {
        let error = WorkItem::from_json("work/a.json", b"{").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("work item work/a.json: not a work item")
        );
        let mut item = WorkItem::new("r", 0, 1, 0, &work(), &[partition("a")]);
        item.version = WORK_ITEM_VERSION + 1;
        let error = WorkItem::from_json("work/b.json", &item.to_json()).unwrap_err();
        assert!(matches!(error, WorkItemError::Newer { .. }), "{error}");
        item.version = WORK_ITEM_VERSION;
        item.partitions[0].manifest = "archive/x".into();
        let error = WorkItem::from_json("work/c.json", &item.to_json()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "work item work/c.json: `archive/x` does not name a partition"
        );
    }
}
