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

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::{Deserialize, Serialize};

use shared::layout;
use shared::manifest::ShardSpan;
use shared::partition::PartitionKey;
use shared::staged::Segment;

use crate::scan::{Source, Work};

/// The work item format this flusher reads: 2 since an item may be a range
/// of a partition's shards (`ItemPartition::shards`), which a worker of
/// version 1 would flush as the whole partition. Items without a range are
/// written as version 1, so a worker of the release before reads them.
pub const WORK_ITEM_VERSION: u32 = 2;

/// The version of an item without a shard range.
const WHOLE_ITEM_VERSION: u32 = 1;

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
    /// Whether the run closed hours only once their grace had passed (a
    /// scheduled run; a manual flush with `until` closes them at their
    /// end): the worker decides with it which hours are still open.
    /// Absent in items written before it existed: true.
    #[serde(default = "grace_applies", skip_serializing_if = "Clone::clone")]
    pub apply_grace: bool,
    pub partitions: Vec<ItemPartition>,
}

fn grace_applies() -> bool {
    true
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
    /// Whether every staged object of the partition holds only partitions
    /// the run flushes (`Work::objects_go`): an open hour's flush then
    /// need not record what it published. Absent: it records.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub objects_go: bool,
    /// Set when the item is a range of the partition's shards (the
    /// partition's staged bytes exceed the item budget): `sources` then
    /// hold only the segments of that range (and every staged source of
    /// the partition, so that each range records its consumption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardRange>,
}

/// The shards `first..end` of a partition of `count` shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardRange {
    /// The partition's shard count the range was planned with: a worker
    /// finds the item stale when the hour recorded another.
    pub count: u32,
    /// The range's first shard, and the shard after its last.
    pub first: u32,
    pub end: u32,
}

impl ShardRange {
    /// The range's shards.
    pub fn span(self) -> ShardSpan {
        ShardSpan {
            first: self.first,
            end: self.end,
        }
    }

    /// Whether segment `segment` (of its own shard count) holds events of
    /// this range: its shard, in this range's count, overlaps it.
    pub fn overlaps(self, segment: &Segment) -> bool {
        let span = hour_shards(segment, self.count);
        span.first < self.end && self.first < span.end
    }
}

/// The shards, among `count`, that segment `segment` (staged with its own
/// count) holds events of: shards are the top bits of the id key, so a
/// segment of a finer count lies in one shard, one of a coarser count
/// spans several.
pub fn hour_shards(segment: &Segment, count: u32) -> ShardSpan {
    let staged = segment.shards.max(1);
    if staged >= count {
        let first = segment.shard / (staged / count);
        ShardSpan {
            first,
            end: first + 1,
        }
    } else {
        let wide = count / staged;
        ShardSpan {
            first: segment.shard * wide,
            end: (segment.shard + 1) * wide,
        }
    }
}

/// One partition of a planned item, whole or a range of its shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub partition: PartitionKey,
    /// `None`: the whole partition.
    pub shards: Option<ShardRange>,
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
/// partitions whose staged bytes sum to at most `budget`, at most
/// `max_partitions` each. A partition larger than the budget is an item of
/// its own, or, when `shard_counts` gives it more than one shard, items of
/// contiguous shard ranges each within the budget where its shards allow
/// (a range of one shard may exceed it). Every partition of `work` is in
/// exactly one item, or its shards, all of them, in items of their own.
pub fn plan(
    work: &Work,
    budget: u64,
    max_partitions: usize,
    shard_counts: &BTreeMap<PartitionKey, u32>,
) -> Vec<Vec<Planned>> {
    let mut items = Vec::new();
    let mut whole: Vec<PartitionKey> = Vec::new();
    let end_whole = |whole: &mut Vec<PartitionKey>, items: &mut Vec<Vec<Planned>>| {
        let sizes: Vec<u64> = whole.iter().map(|p| work.spooled_bytes(p)).collect();
        for range in split(&sizes, budget, max_partitions) {
            items.push(
                whole[range]
                    .iter()
                    .map(|partition| Planned {
                        partition: partition.clone(),
                        shards: None,
                    })
                    .collect(),
            );
        }
        whole.clear();
    };
    for partition in work.partitions() {
        let count = shard_counts.get(&partition).copied().unwrap_or(1);
        if count > 1 && work.spooled_bytes(&partition) > budget {
            let sizes = shard_bytes(work, &partition, count);
            let spans = split(&sizes, budget, usize::MAX);
            if spans.len() > 1 {
                end_whole(&mut whole, &mut items);
                for span in spans {
                    items.push(vec![Planned {
                        partition: partition.clone(),
                        shards: Some(ShardRange {
                            count,
                            first: span.start as u32,
                            end: span.end as u32,
                        }),
                    }]);
                }
                continue;
            }
        }
        whole.push(partition);
    }
    end_whole(&mut whole, &mut items);
    items
}

/// The staged bytes of each of `partition`'s `count` shards (a segment
/// spanning several shards counted in each: each range reads it whole).
fn shard_bytes(work: &Work, partition: &PartitionKey, count: u32) -> Vec<u64> {
    let mut sizes = vec![0u64; count as usize];
    for source in work.sources.get(partition).into_iter().flatten() {
        if let Source::Segments { segments, .. } = source {
            for segment in segments {
                for shard in hour_shards(segment, count).shards() {
                    sizes[shard as usize] += segment.length;
                }
            }
        }
    }
    sizes
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
    /// with their sources and markers from `work` (for a range of shards,
    /// every source with only the range's segments).
    pub fn new(
        run: &str,
        item: u32,
        items: u32,
        now_millis: i64,
        work: &Work,
        partitions: &[Planned],
    ) -> Self {
        let ranged = partitions.iter().any(|p| p.shards.is_some());
        Self {
            version: if ranged {
                WORK_ITEM_VERSION
            } else {
                WHOLE_ITEM_VERSION
            },
            run: run.to_owned(),
            item,
            items,
            now_millis,
            apply_grace: true,
            partitions: partitions
                .iter()
                .map(|planned| {
                    let partition = &planned.partition;
                    let mut sources = work.sources.get(partition).cloned().unwrap_or_default();
                    if let Some(range) = planned.shards {
                        for source in &mut sources {
                            if let Source::Segments { segments, .. } = source {
                                segments.retain(|segment| range.overlaps(segment));
                            }
                        }
                    }
                    ItemPartition {
                        manifest: layout::manifest_key(partition),
                        sources,
                        marked: work.marked(partition),
                        objects_go: work.objects_go.contains(partition),
                        shards: planned.shards,
                    }
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
            if let Some(range) = entry.shards {
                work.ranges.insert(partition.clone(), range);
            }
            if entry.objects_go {
                work.objects_go.insert(partition.clone());
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
        work.objects_go.insert(partition("c"));
        work
    }

    fn whole(partitions: &[PartitionKey]) -> Vec<Planned> {
        partitions
            .iter()
            .map(|partition| Planned {
                partition: partition.clone(),
                shards: None,
            })
            .collect()
    }

    fn sharded(tenant: &str, shard: u32, shards: u32, length: u64) -> Segment {
        Segment {
            shard,
            shards,
            length,
            ..segment(tenant, 0, length)
        }
    }

    #[test]
    fn a_partition_over_the_budget_is_split_into_ranges_of_its_shards() {
        let mut work = work();
        let big = partition("b");
        // Four objects of "b": 8 shards of 100 bytes each, one of 4 shards
        // (each segment two shards wide), one of 16 (half a shard each).
        let mut sources = Vec::new();
        for n in 0..2 {
            sources.push(Source::Segments {
                object: format!("staging/o{n}"),
                segments: (0..8).map(|s| sharded("b", s, 8, 100)).collect(),
            });
        }
        sources.push(Source::Segments {
            object: "staging/o2".into(),
            segments: (0..4).map(|s| sharded("b", s, 4, 100)).collect(),
        });
        sources.push(Source::Segments {
            object: "staging/o3".into(),
            segments: vec![sharded("b", 15, 16, 50)],
        });
        work.sources.insert(big.clone(), sources);
        let counts = BTreeMap::from([(big.clone(), 8)]);
        let items = plan(&work, 700, 10, &counts);
        type Row = (String, Option<(u32, u32)>);
        let ranges: Vec<Vec<Row>> = items
            .iter()
            .map(|item| {
                item.iter()
                    .map(|p| {
                        let range = p.shards.map(|r| (r.first, r.end));
                        (p.partition.tenant.as_str().to_owned(), range)
                    })
                    .collect()
            })
            .collect();
        // Shards hold 300 bytes each (350 the last): two a range.
        let expected = |first, end| vec![("b".to_owned(), Some((first, end)))];
        assert_eq!(
            ranges,
            vec![
                vec![("a".to_owned(), None)],
                expected(0, 2),
                expected(2, 4),
                expected(4, 6),
                expected(6, 8),
                vec![
                    ("c".to_owned(), None),
                    ("d".to_owned(), None),
                    ("e".to_owned(), None)
                ],
            ]
        );
        // A range's item holds every source, with that range's segments.
        let item = WorkItem::new("r", 3, 6, 0, &work, &items[3]);
        assert_eq!(item.version, WORK_ITEM_VERSION);
        let kept: Vec<Vec<u32>> = item.partitions[0]
            .sources
            .iter()
            .map(|source| match source {
                Source::Segments { segments, .. } => segments.iter().map(|s| s.shard).collect(),
                Source::Chunk(_) => vec![],
            })
            .collect();
        assert_eq!(kept, vec![vec![4, 5], vec![4, 5], vec![2], vec![]]);
        let again = WorkItem::from_json("k", &item.to_json()).unwrap().to_work();
        assert_eq!(again.ranges[&big].span(), ShardSpan { first: 4, end: 6 });
        // Without a count, or under the budget, a partition stays whole.
        assert_eq!(plan(&work, 700, 10, &BTreeMap::new()).len(), 3);
        assert_eq!(plan(&work, 5000, 10, &counts).len(), 1);
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
        let items = plan(&work(), 200, 10, &BTreeMap::new());
        let tenants: Vec<Vec<&str>> = items
            .iter()
            .map(|item| item.iter().map(|p| p.partition.tenant.as_str()).collect())
            .collect();
        assert_eq!(tenants, vec![vec!["a", "b"], vec!["c", "d", "e"]]);
    }

    #[test]
    fn an_item_round_trips_and_gives_back_its_partitions_work() {
        let work = work();
        let partitions = [partition("c"), partition("d"), partition("e")];
        let item = WorkItem::new("run-1", 1, 2, 42, &work, &whole(&partitions));
        assert_eq!(item.version, 1, "read by the release before too");
        assert!(
            item.apply_grace
                && !String::from_utf8(item.to_json())
                    .unwrap()
                    .contains("applyGrace")
        );
        // A manual flush closes hours at their end: its workers know it.
        let mut manual = item.clone();
        manual.apply_grace = false;
        let text = String::from_utf8(manual.to_json()).unwrap();
        assert!(text.contains("\"applyGrace\":false"), "{text}");
        assert!(
            !WorkItem::from_json("k", text.as_bytes())
                .unwrap()
                .apply_grace
        );
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
        assert_eq!(again.objects_go, BTreeSet::from([partition("c")]));
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
        let mut item = WorkItem::new("r", 0, 1, 0, &work(), &whole(&[partition("a")]));
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
