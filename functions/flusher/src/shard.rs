//! Flushing a partition shard by shard (docs/scale-out.md): a partition
//! whose staged bytes exceed a work item is split by the coordinator into
//! ranges of its shards, and several workers flush them at once, each
//! reading only its range's segments and de-duplicating against its
//! range's ids alone.
//!
//! An event's shard is the top bits of its id key (`manifest::shard_of_key`,
//! the same bits staging cut segments by), so two copies of an event are
//! always in the same shard, and a range's ids are all it needs. The
//! partition keeps one manifest; a sharded commit records, per shard, the
//! digest of its ids, and per staged source which shards it consumed
//! ([`ShardState`]); a source all of whose shards are consumed is listed as
//! consumed as before, so every reader of manifests keeps working.
//!
//! Commits of different ranges never conflict: a commit that finds the
//! manifest changed reads it again and, when no commit since touched its
//! shards (their digests are as it read them), applies itself to the new
//! manifest, its parts numbered after the new manifest's (part numbers are
//! assigned at commit, so destination keys are unique and, once committed,
//! stable). A commit that did touch them (an overlapping range, a redelivered
//! item) is a lost race, as for a whole partition: its objects are removed.
//!
//! The shard count is fixed by the partition's first sharded commit; an
//! item planned with another count is stale and leaves its data staged for
//! the next run to plan again. Segments staged with another count are read
//! when they overlap the range, their lines routed by id key. Once sharded,
//! a partition is always flushed this way (a whole-partition item is the
//! range of all its shards).

use std::collections::{BTreeMap, HashSet};

use shared::alert::InvocationAlerts;
use shared::dedup::IdHash;
use shared::layout;
use shared::manifest::{
    self, ArchivePart, ByteRange, Manifest, SHARDED_MANIFEST_VERSION, ShardDigest, ShardSpan,
    ShardState, shard_of_key,
};
use shared::partition::PartitionKey;
use shared::time::format_rfc3339_millis;

use crate::bundle::Bundle;
use crate::error::FlushError;
use crate::partition::{self, Checkpoints, PartitionReport, Sharding};
use crate::publish;
use crate::scan::Source;
use crate::staged_read::Spools;
use crate::store;
use crate::trigger::Trigger;
use crate::work_item::ShardRange;
use crate::{Flusher, Step};

/// How many times a sharded commit reads the manifest again after another
/// range's commit landed first, before it gives up (the item is retried).
const COMMIT_TRIES: usize = 64;

/// What the manifest said, when read, of the shards a range commits: a
/// commit since that changed any of it touched the same shards.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ShardsAsRead {
    count: Option<u32>,
    digests: BTreeMap<u32, Option<ShardDigest>>,
    base: (Option<String>, Option<ByteRange>),
}

impl ShardsAsRead {
    /// Whether `now` (the manifest as it is now) says a commit since this
    /// was read touched its shards: a first sharded commit of another
    /// range only records the count this one has too.
    fn touched(&self, now: &ShardsAsRead, count: u32) -> bool {
        now.count.unwrap_or(count) != self.count.unwrap_or(count)
            || now.digests != self.digests
            || now.base != self.base
    }

    fn of(manifest: &Manifest, span: ShardSpan) -> Self {
        Self {
            count: manifest.shards.as_ref().map(|state| state.count),
            digests: span
                .shards()
                .map(|shard| {
                    let digest = manifest
                        .shards
                        .as_ref()
                        .and_then(|state| state.digests.get(&shard).cloned());
                    (shard, digest)
                })
                .collect(),
            base: (manifest.id_digest.clone(), manifest.id_digest_range),
        }
    }
}

/// Why a range item is not flushed: it was planned with a shard count other
/// than the partition's, or for a partition that cannot be sharded.
fn stale(partition: &PartitionKey, why: &str) -> PartitionReport {
    tracing::warn!(stream = %partition.stream, tenant = %partition.tenant, hour = %partition.hour, why, "shard range not flushed: its data stays staged for the next run to plan again");
    PartitionReport::default()
}

/// Flushes the shards `range` of `partition` (all of them when `None`: a
/// sharded partition given whole), from `manifest` as read with `etag`:
/// reads the range's ids, compacts the range's events of `sources` into
/// parts (objects of their own, at keys of `bundle`'s attempt), stores the range's
/// digest, and commits. Returns the manifest as committed, its etag, and
/// the report (`objects_done`: the staged objects whose range this
/// partition has consumed).
#[allow(clippy::too_many_arguments)]
pub async fn flush_range(
    flusher: &Flusher,
    alerts: &InvocationAlerts<'_>,
    trigger: &Trigger,
    partition: &PartitionKey,
    sources: &[Source],
    spools: &Spools,
    range: Option<ShardRange>,
    bundle: &Bundle,
    checkpoints: Checkpoints,
    (mut manifest, mut etag): (Manifest, Option<String>),
) -> Result<(Manifest, Option<String>, PartitionReport), FlushError> {
    let recorded = manifest.shards.as_ref().map(|state| state.count);
    let count = match (recorded, range) {
        (Some(recorded), Some(range)) if recorded != range.count => {
            return Ok((
                manifest,
                etag,
                stale(partition, "planned with another shard count"),
            ));
        }
        (Some(count), _) => count,
        (None, Some(range)) => range.count,
        (None, None) => unreachable!("a partition flushed whole is not sharded"),
    };
    if recorded.is_none()
        && manifest.id_digest.is_some()
        && manifest.id_digest_version != IdHash::Blake3.version()
    {
        return Ok((
            manifest,
            etag,
            stale(partition, "its ids are not kept with BLAKE3"),
        ));
    }
    let span = range.map_or(
        ShardSpan {
            first: 0,
            end: count,
        },
        ShardRange::span,
    );
    let mut report = PartitionReport::default();
    let state = manifest
        .shards
        .clone()
        .unwrap_or_else(|| ShardState::new(count));
    let done = manifest.consumed();
    let new_sources: Vec<&Source> = sources
        .iter()
        .filter(|source| !done.contains(source.key()) && !state.covers(source.key(), span))
        .collect();
    drop(done);
    if new_sources.is_empty() {
        report.objects_done = done_objects(&manifest, sources, span);
        return Ok((manifest, etag, report));
    }
    let as_read = ShardsAsRead::of(&manifest, span);
    let mut seen = read_ids(flusher, partition, &manifest, etag.as_deref(), count, span).await?;
    // Lines before a cursor are archived already: the digest drops them.
    manifest.cursor = None;
    let sharding = Sharding {
        count,
        span,
        state: &state,
    };
    let (parts, stop) = partition::compact_range(
        flusher,
        alerts,
        partition,
        &manifest,
        &new_sources,
        spools,
        bundle,
        &mut seen,
        &mut report,
        checkpoints,
        &sharding,
    )
    .await?;
    let read = stop.unwrap_or(new_sources.len());
    let stop = stop.is_some();
    let quarantined: HashSet<&str> = report.quarantined.iter().map(String::as_str).collect();
    let consumed: Vec<String> = new_sources[..read]
        .iter()
        .map(|source| source.key())
        .filter(|key| !quarantined.contains(key))
        .map(str::to_owned)
        .collect();
    let digest_key = layout::shard_id_digest_key(partition, span.first, bundle.attempt());
    let digests = match store_range_digest(flusher, &digest_key, seen, count, span).await {
        Ok(digests) => digests,
        Err(error) => {
            partition::remove_unnamed(flusher, &own_objects(&parts, &digest_key)).await;
            return Err(error);
        }
    };
    report.chunks_consumed = consumed.len();
    if flusher.stop_after == Some(Step::PartsWritten) {
        return Err(FlushError::Injected("parts written"));
    }
    let commit = RangeCommit {
        count,
        span,
        parts,
        consumed,
        digests,
        digest_key,
        as_read,
    };
    let (manifest, new_etag) = commit
        .store(
            flusher,
            trigger,
            partition,
            manifest,
            etag.take(),
            &mut report,
        )
        .await?;
    if flusher.stop_after == Some(Step::ManifestCommitted) {
        return Err(FlushError::Injected("manifest committed"));
    }
    if stop {
        report.checkpointed = true;
        tracing::info!(stream = %partition.stream, tenant = %partition.tenant, hour = %partition.hour, first = span.first, end = span.end, "checkpoint: a range of shards committed the sources it read whole; the next run goes on");
    }
    report.objects_done = done_objects(&manifest, sources, span);
    Ok((manifest, Some(new_etag), report))
}

/// The staged objects among `sources` that `manifest` says this range is
/// done with: consumed whole, quarantined, or consumed in `span`.
fn done_objects(manifest: &Manifest, sources: &[Source], span: ShardSpan) -> Vec<String> {
    let consumed = manifest.consumed();
    sources
        .iter()
        .filter_map(|source| match source {
            Source::Segments { object, .. } => Some(object),
            Source::Chunk(_) => None,
        })
        .filter(|object| {
            consumed.contains(object.as_str())
                || manifest
                    .shards
                    .as_ref()
                    .is_some_and(|state| state.covers(object, span))
        })
        .cloned()
        .collect()
}

/// The parts' and sidecars' keys and the digest's: every object a range
/// commit wrote.
fn own_objects(parts: &[ArchivePart], digest_key: &str) -> Vec<String> {
    parts
        .iter()
        .map(|part| part.key.clone())
        .chain(
            parts
                .iter()
                .filter_map(|part| part.provenance.as_ref().map(|p| p.key.clone())),
        )
        .chain([digest_key.to_owned()])
        .collect()
}

/// The ids of shards `span` (of `count`) of the partition `manifest` (read
/// with `etag`) describes: each shard's own digest, or its slice of the
/// partition's digest from before it was sharded.
async fn read_ids(
    flusher: &Flusher,
    partition: &PartitionKey,
    manifest: &Manifest,
    etag: Option<&str>,
    count: u32,
    span: ShardSpan,
) -> Result<HashSet<u128>, FlushError> {
    let mut ids = HashSet::new();
    let mut from_base = Vec::new();
    // Each object's ranges, read with one GET from the first to the last.
    let mut by_key: BTreeMap<&str, Vec<ByteRange>> = BTreeMap::new();
    for shard in span.shards() {
        match manifest
            .shards
            .as_ref()
            .and_then(|state| state.digests.get(&shard))
        {
            Some(digest) => by_key.entry(&digest.key).or_default().push(digest.range),
            None => from_base.push(shard),
        }
    }
    for (key, ranges) in by_key {
        let start = ranges.iter().map(|r| r.offset).min().unwrap_or(0);
        let end = ranges
            .iter()
            .map(|r| r.offset + r.length)
            .max()
            .unwrap_or(0);
        if end == start {
            continue;
        }
        let bytes = get_digest(flusher, partition, etag, key, Some(start..end)).await?;
        for range in ranges {
            let at = (range.offset - start) as usize;
            let slice = bytes
                .get(at..at + range.length as usize)
                .ok_or_else(|| digest_corrupt(flusher, key, "shorter than the manifest says"))?;
            let decoded = manifest::decode_id_digest(slice)
                .ok_or_else(|| digest_corrupt(flusher, key, "not a multiple of 16 bytes"))?;
            ids.extend(decoded);
        }
    }
    if let (false, Some(key)) = (from_base.is_empty(), &manifest.id_digest) {
        let range = manifest.id_digest_range.map(ByteRange::as_range);
        let bytes = get_digest(flusher, partition, etag, key, range).await?;
        let decoded = manifest::decode_id_digest(&bytes)
            .ok_or_else(|| digest_corrupt(flusher, key, "not a multiple of 16 bytes"))?;
        ids.extend(
            decoded
                .into_iter()
                .filter(|id| from_base.contains(&shard_of_key(*id, count))),
        );
    }
    Ok(ids)
}

fn digest_corrupt(flusher: &Flusher, key: &str, message: &str) -> FlushError {
    FlushError::Corrupt {
        what: format!("id digest s3://{}/{key}", flusher.config.export_bucket),
        message: message.into(),
    }
}

/// Reads a digest (or its `range`) named by the manifest read with `etag`:
/// gone because another commit has superseded it since is a lost race.
async fn get_digest(
    flusher: &Flusher,
    partition: &PartitionKey,
    etag: Option<&str>,
    key: &str,
    range: Option<std::ops::Range<u64>>,
) -> Result<Vec<u8>, FlushError> {
    let s3 = &flusher.s3;
    let bucket = &flusher.config.export_bucket;
    if let Some(bytes) = store::get_bytes(s3, bucket, key, range).await? {
        return Ok(bytes);
    }
    let manifest_key = layout::manifest_key(partition);
    let now = store::read_manifest(s3, bucket, &manifest_key).await?;
    if now.as_ref().map(|(_, etag)| etag.as_str()) != etag {
        return Err(FlushError::LostRace { key: manifest_key });
    }
    Err(digest_corrupt(
        flusher,
        key,
        "named by the manifest but missing",
    ))
}

/// Stores the digest of `seen` (the ids of shards `span` of `count`) at
/// `key`, and returns where each shard's ids are in it (ids sort by shard).
async fn store_range_digest(
    flusher: &Flusher,
    key: &str,
    seen: HashSet<u128>,
    count: u32,
    span: ShardSpan,
) -> Result<BTreeMap<u32, ShardDigest>, FlushError> {
    let sorted = manifest::digest_order(seen);
    let mut digests = BTreeMap::new();
    let mut at = 0usize;
    for shard in span.shards() {
        let start = at;
        while at < sorted.len() && shard_of_key(sorted[at], count) == shard {
            at += 1;
        }
        digests.insert(
            shard,
            ShardDigest {
                key: key.to_owned(),
                range: ByteRange {
                    offset: start as u64 * 16,
                    length: (at - start) as u64 * 16,
                },
            },
        );
    }
    if at != sorted.len() {
        return Err(FlushError::Corrupt {
            what: format!("shards {}..{} of s3://{key}", span.first, span.end),
            message: "an id of another shard was read into this range".into(),
        });
    }
    partition::store_sorted_digest(flusher, key, &sorted).await?;
    Ok(digests)
}

/// A range's commit, before it is applied to the manifest.
struct RangeCommit {
    count: u32,
    span: ShardSpan,
    parts: Vec<ArchivePart>,
    /// The sources it read whole (quarantined ones apart).
    consumed: Vec<String>,
    digests: BTreeMap<u32, ShardDigest>,
    digest_key: String,
    as_read: ShardsAsRead,
}

impl RangeCommit {
    /// Applies the commit to `manifest` (read with `etag`) and stores it
    /// with the conditional write; when another range's commit landed
    /// first, reads the manifest again and applies itself to it, unless
    /// that commit touched this range's shards (a lost race: its objects
    /// are removed). Then deletes the digests no shard names any more.
    async fn store(
        self,
        flusher: &Flusher,
        trigger: &Trigger,
        partition: &PartitionKey,
        mut manifest: Manifest,
        mut etag: Option<String>,
        report: &mut PartitionReport,
    ) -> Result<(Manifest, String), FlushError> {
        let s3 = &flusher.s3;
        let bucket = &flusher.config.export_bucket;
        let key = layout::manifest_key(partition);
        let own = own_objects(&self.parts, &self.digest_key);
        for _ in 0..COMMIT_TRIES {
            if self
                .as_read
                .touched(&ShardsAsRead::of(&manifest, self.span), self.count)
            {
                partition::remove_unnamed(flusher, &own).await;
                return Err(FlushError::LostRace { key });
            }
            let mut next = manifest.clone();
            let numbers = self.apply(flusher, trigger, partition, &mut next, report);
            match store::commit_manifest(s3, bucket, &key, &next, etag.as_deref()).await {
                Ok(new_etag) => {
                    report.parts = numbers;
                    self.delete_superseded(flusher, &next).await?;
                    return Ok((next, new_etag));
                }
                Err(FlushError::LostRace { .. }) => {
                    let Some((now, now_etag)) = store::read_manifest(s3, bucket, &key).await?
                    else {
                        partition::remove_unnamed(flusher, &own).await;
                        return Err(FlushError::LostRace { key });
                    };
                    tracing::debug!(%key, "another range committed first: committing again on top of it");
                    (manifest, etag) = (now, Some(now_etag));
                    // Ranges that finished together retry apart.
                    let jitter = std::time::Duration::from_millis(fastrand::u64(0..50));
                    tokio::time::sleep(jitter).await;
                }
                Err(error) => return Err(error),
            }
        }
        partition::remove_unnamed(flusher, &own).await;
        Err(FlushError::LostRace { key })
    }

    /// Records the commit in `manifest`: its parts numbered after the
    /// manifest's, its shards' digests, its sources' consumption (a source
    /// with every shard consumed listed as consumed), the counts. Returns
    /// the parts' numbers.
    fn apply(
        &self,
        flusher: &Flusher,
        trigger: &Trigger,
        partition: &PartitionKey,
        manifest: &mut Manifest,
        report: &PartitionReport,
    ) -> Vec<u32> {
        let first = manifest.next_part_number();
        let mut parts = self.parts.clone();
        for (n, part) in parts.iter_mut().enumerate() {
            part.number = first + n as u32;
            part.shards = Some(self.span);
        }
        let numbers: Vec<u32> = parts.iter().map(|part| part.number).collect();
        // Quarantined by another range since (its segments there damaged):
        // nothing more to record of it.
        let done: HashSet<String> = manifest.consumed().into_iter().map(str::to_owned).collect();
        let state = manifest
            .shards
            .get_or_insert_with(|| ShardState::new(self.count));
        state.digests.extend(self.digests.clone());
        // A source refused as damaged counts as consumed in this range's
        // shards (its events there are in the quarantine copy); the other
        // ranges read theirs.
        state.quarantined.extend(report.quarantined.iter().cloned());
        let mut consumed = Vec::new();
        let mut quarantined = Vec::new();
        let sources = self.consumed.iter().chain(&report.quarantined);
        for source in sources.filter(|s| !done.contains(*s)) {
            if state.consume(source, self.span) {
                match state.quarantined.remove(source) {
                    true => quarantined.push(source.clone()),
                    false => consumed.push(source.clone()),
                }
            }
        }
        manifest.consumed_chunks.extend(consumed);
        manifest.quarantined_chunks.extend(quarantined);
        manifest.version = SHARDED_MANIFEST_VERSION;
        manifest.generation += 1;
        manifest.events += report.events;
        manifest.duplicates_dropped += report.duplicates;
        manifest.parts.extend(parts);
        manifest.cursor = None;
        manifest.committed_at = format_rfc3339_millis(trigger.now_millis);
        let open = partition::hour_open(flusher, trigger, partition);
        publish::assign(flusher, partition, manifest, &numbers, open);
        numbers
    }

    /// Deletes the shard digests this commit superseded that no shard of
    /// `committed` names any more (the partition's digest from before it
    /// was sharded is kept: shards not yet committed read it).
    async fn delete_superseded(
        &self,
        flusher: &Flusher,
        committed: &Manifest,
    ) -> Result<(), FlushError> {
        let named: HashSet<&str> = committed
            .shards
            .iter()
            .flat_map(|state| state.digests.values())
            .map(|digest| digest.key.as_str())
            .collect();
        let mut superseded: Vec<String> = self
            .as_read
            .digests
            .values()
            .flatten()
            .map(|digest| digest.key.clone())
            .filter(|key| !named.contains(key.as_str()))
            .collect();
        superseded.sort_unstable();
        superseded.dedup();
        store::delete_keys(&flusher.s3, &flusher.config.export_bucket, &superseded).await
    }
}

/// Records what a run published of a sharded partition (`published`, the
/// manifest after publishing; `before`, as it was before) when the
/// conditional write finds the manifest changed (another range
/// committed): the publish state of each destination is merged into the
/// manifest as it is now, and written again. Returns the manifest stored
/// and its etag.
pub async fn record_publishes(
    flusher: &Flusher,
    partition: &PartitionKey,
    before: &Manifest,
    published: Manifest,
    etag: Option<&str>,
) -> Result<(Manifest, String), FlushError> {
    let s3 = &flusher.s3;
    let bucket = &flusher.config.export_bucket;
    let key = layout::manifest_key(partition);
    match store::commit_manifest(s3, bucket, &key, &published, etag).await {
        Ok(etag) => return Ok((published, etag)),
        Err(FlushError::LostRace { .. }) if published.shards.is_some() => {}
        Err(error) => return Err(error),
    }
    for _ in 0..COMMIT_TRIES {
        let Some((mut now, now_etag)) = store::read_manifest(s3, bucket, &key).await? else {
            return Err(FlushError::LostRace { key });
        };
        merge_publishes(before, &published, &mut now);
        match store::commit_manifest(s3, bucket, &key, &now, Some(&now_etag)).await {
            Ok(etag) => return Ok((now, etag)),
            Err(FlushError::LostRace { .. }) => continue,
            Err(error) => return Err(error),
        }
    }
    Err(FlushError::LostRace { key })
}

/// Applies to `now` what changed from `before` to `after` in each
/// destination's publish state: parts published, parts dropped, and the
/// last failure.
fn merge_publishes(before: &Manifest, after: &Manifest, now: &mut Manifest) {
    for (name, state) in &after.destinations {
        let old = before.destinations.get(name);
        let Some(target) = now.destinations.get_mut(name) else {
            continue;
        };
        let was = |numbers: fn(&manifest::DestinationState) -> &Vec<u32>, n: &u32| {
            old.is_some_and(|old| numbers(old).contains(n))
        };
        for number in &state.published {
            if !was(|s| &s.published, number) {
                publish::record_published(target, *number);
            }
        }
        for number in &state.dropped {
            if !was(|s| &s.dropped, number) {
                target.pending.retain(|n| n != number);
                if !target.dropped.contains(number) {
                    target.dropped.push(*number);
                    target.dropped.sort_unstable();
                }
            }
        }
        if state.failures > old.map_or(0, |old| old.failures) {
            target.failures += 1;
            target.last_error.clone_from(&state.last_error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::manifest::DestinationState;

    #[test]
    fn what_one_run_published_is_merged_into_a_manifest_another_range_changed() {
        let state = |published: &[u32], pending: &[u32]| DestinationState {
            published: published.to_vec(),
            pending: pending.to_vec(),
            ..Default::default()
        };
        let mut before = Manifest::default();
        before.destinations.insert("d".into(), state(&[1], &[2, 3]));
        let mut after = before.clone();
        after
            .destinations
            .insert("d".into(), state(&[1, 2, 3], &[]));
        // Meanwhile another range committed parts 4 and 5.
        let mut now = before.clone();
        now.destinations
            .insert("d".into(), state(&[1], &[2, 3, 4, 5]));
        merge_publishes(&before, &after, &mut now);
        assert_eq!(now.destinations["d"].published, [1, 2, 3]);
        assert_eq!(now.destinations["d"].pending, [4, 5]);
    }
}
