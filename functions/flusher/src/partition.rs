//! Flushing one partition, in two halves around its group's bundle (see
//! `bundle`): [`prepare`] compacts its new staged data (segments of staged
//! objects, staged chunks of the format before them) into archive parts,
//! the small ones and the id digest appended to the bundle; once the bundle
//! is stored, [`complete`] commits the manifest, publishes, then deletes
//! the consumed chunks (a staged object holds other partitions too: the run
//! deletes it once all of them have consumed it, see `run`).
//!
//! Each step is safe to redo if the run stops after it (docs/design.md,
//! invariants 2 to 4): before the commit, the parts are written again,
//! byte-identical, into a new bundle (the old one, named by no manifest,
//! is ignored); after it, consumed chunks and objects are skipped and only
//! deleted, and pending publishes are retried, unconfirmed ones included
//! while what the commit consumed is still staged (docs/archive.md).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use shared::alert::InvocationAlerts;
use shared::dedup::IdHash;
use shared::layout;
use shared::manifest::{
    self, ArchivePart, ByteRange, Cursor, MANIFEST_VERSION, Manifest, ProvenanceFile, ShardSpan,
    ShardState,
};
use shared::partition::PartitionKey;
use shared::provenance::Provenance;
use shared::time::format_rfc3339_millis;

use crate::archive::PartWriter;
use crate::bundle::Bundle;
use crate::compaction;
use crate::error::FlushError;
use crate::publish::{self, PublishOutcome};
use crate::scan::Source;
use crate::shard;
use crate::staged_read::{self, Spools};
use crate::store;
use crate::trigger::Trigger;
use crate::upload::{UPLOAD_PART_BYTES, Upload};
use crate::work_item::ShardRange;
use crate::{Flusher, Step};

/// What flushing one partition did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    pub events: u64,
    pub duplicates: u64,
    pub parts: Vec<u32>,
    /// Chunks and staged objects consumed by this run's commit.
    pub chunks_consumed: usize,
    pub publish: PublishOutcome,
    /// The staged objects among this partition's sources that its committed
    /// manifest lists (consumed or quarantined): this partition no longer
    /// needs them.
    pub objects_done: Vec<String>,
    /// Staged objects this run refused for a damaged segment of this
    /// partition and recorded as quarantined.
    pub quarantined: Vec<String>,
    /// Whether the run stopped compacting at a checkpoint (its deadline
    /// came) and committed its progress: the partition has staged data
    /// left, which the next run (or the item's next delivery) goes on
    /// with, from the manifest's cursor. Its new parts are published then.
    pub checkpointed: bool,
}

/// A partition being compacted commits its progress (a checkpoint) once
/// the invocation's deadline is this near, so that a partition larger than
/// one invocation can compact finishes over several.
pub const CHECKPOINT_MARGIN: Duration = Duration::from_secs(45);

/// When a partition's compaction stops to commit its progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checkpoints {
    /// The invocation's deadline (see [`CHECKPOINT_MARGIN`]).
    pub deadline: Option<Instant>,
    /// Tests only: stop after this many new events of the run, as if the
    /// deadline had come then (`Flusher::checkpoint_after_events`).
    pub after_events: Option<u64>,
}

/// Events between two looks at the clock while compacting.
const CLOCK_EVENTS: u64 = 256;

impl Checkpoints {
    /// Whether a partition that has written `events` new events in this
    /// run should stop now; `anywhere` looks at the clock whatever the
    /// count (between sources), else every [`CLOCK_EVENTS`] events.
    fn due(&self, events: u64, anywhere: bool) -> bool {
        if self.after_events.is_some_and(|after| events >= after) {
            return true;
        }
        (anywhere || events.is_multiple_of(CLOCK_EVENTS))
            && self
                .deadline
                .is_some_and(|deadline| Instant::now() + CHECKPOINT_MARGIN >= deadline)
    }
}

/// Ids of a digest handed to the bundle at once (1 MiB).
const DIGEST_PIECE_IDS: usize = 64 * 1024;

/// A partition read and compacted, not committed yet: its new parts and
/// id digest are in the run's bundle (or, when large, objects of their
/// own), which must be stored before [`complete`] commits them.
pub struct Prepared {
    manifest: Manifest,
    etag: Option<String>,
    had_pending: bool,
    /// Whether the partition's pending-publish marker was listed.
    marked: bool,
    /// The commit to make, when there was new staged data.
    commit: Option<Commit>,
    report: PartitionReport,
    /// A range of a sharded partition's shards: it publishes only the
    /// parts of that range (its own commits', this delivery's or earlier).
    own_range: Option<ShardSpan>,
}

impl Prepared {
    /// Whether there is new data to commit (whose files are in the bundle).
    pub fn commits(&self) -> bool {
        self.commit.is_some()
    }

    /// Gives up the commit (its bundle could not be stored): deletes the
    /// objects of its own it wrote, which no manifest can name. A failure
    /// to delete them is logged: unnamed, they are not the archive, and
    /// the archive's lifecycle expires them.
    pub async fn abandon(self, flusher: &Flusher) {
        if let Some(commit) = &self.commit {
            remove_unnamed(flusher, &commit.own_objects()).await;
        }
    }
}

/// Deletes `keys`, objects this run wrote that no manifest names (its
/// commit lost, or was never made); logs a failure (see
/// [`Prepared::abandon`]).
pub(crate) async fn remove_unnamed(flusher: &Flusher, keys: &[String]) {
    if keys.is_empty() {
        return;
    }
    let bucket = &flusher.config.export_bucket;
    match store::delete_keys(&flusher.s3, bucket, keys).await {
        Ok(()) => tracing::info!(
            objects = keys.len(),
            "removed the uncommitted parts of this run"
        ),
        Err(error) => {
            tracing::warn!(%error, objects = keys.len(), "uncommitted parts of this run not removed: no manifest names them; the archive's lifecycle expires them")
        }
    }
}

/// What a partition's next commit adds.
struct Commit {
    /// The keys of the new staged data it consumes (quarantined ones apart).
    consumed: Vec<String>,
    parts: Vec<ArchivePart>,
    /// The digest of every id the partition now holds: its key and range.
    digest: (String, Option<ByteRange>),
    ids: IdHash,
    /// Where a checkpoint stopped inside the next source; `None` for a
    /// commit that read every source it was given.
    cursor: Option<Cursor>,
}

/// What [`Commit::apply`] left to do once the manifest is stored.
struct Applied {
    numbers: Vec<u32>,
    /// The objects of this run that no manifest names if the commit loses.
    own_objects: Vec<String>,
    /// The digest object the new one supersedes, to delete after the commit.
    previous_digest: Option<String>,
}

impl Commit {
    /// A commit of `parts` consuming the sources `read` (in order; those
    /// `report` quarantined are recorded as such, not as consumed).
    fn new<'a>(
        read: impl IntoIterator<Item = &'a str>,
        report: &PartitionReport,
        parts: Vec<ArchivePart>,
        digest: (String, Option<ByteRange>),
        ids: IdHash,
        cursor: Option<Cursor>,
    ) -> Self {
        let quarantined: HashSet<&str> = report.quarantined.iter().map(String::as_str).collect();
        Self {
            consumed: read
                .into_iter()
                .filter(|key| !quarantined.contains(key))
                .map(str::to_owned)
                .collect(),
            parts,
            digest,
            ids,
            cursor,
        }
    }

    /// Records this commit in `manifest` (with `report`'s counts and
    /// quarantined sources, the trigger's "now", its parts pending for
    /// every destination that selects the partition); the manifest is not
    /// stored yet.
    fn apply(
        self,
        flusher: &Flusher,
        trigger: &Trigger,
        partition: &PartitionKey,
        manifest: &mut Manifest,
        report: &mut PartitionReport,
    ) -> Applied {
        let numbers: Vec<u32> = self.parts.iter().map(|p| p.number).collect();
        let own_objects = self.own_objects();
        let previous_digest = match manifest.id_digest_range {
            // A range of a bundle: it stays with the bundle.
            Some(_) => None,
            None => manifest.id_digest.take(),
        };
        report.chunks_consumed = self.consumed.len();
        // Its parts and digest may be ranges of a bundle now.
        manifest.version = MANIFEST_VERSION;
        manifest.generation += 1;
        manifest.events += report.events;
        manifest.duplicates_dropped += report.duplicates;
        manifest.parts.extend(self.parts);
        manifest.consumed_chunks.extend(self.consumed);
        manifest
            .quarantined_chunks
            .extend(report.quarantined.iter().cloned());
        manifest.cursor = self.cursor;
        (manifest.id_digest, manifest.id_digest_range) = (Some(self.digest.0), self.digest.1);
        manifest.id_digest_version = self.ids.version();
        manifest.committed_at = format_rfc3339_millis(trigger.now_millis);
        let open = hour_open(flusher, trigger, partition);
        publish::assign(flusher, partition, manifest, &numbers, open);
        report.parts = numbers.clone();
        Applied {
            numbers,
            own_objects,
            previous_digest,
        }
    }

    /// The objects of their own (not ranges of the bundle) this commit's
    /// parts and sidecars were written to, at keys of this run's attempt.
    fn own_objects(&self) -> Vec<String> {
        let whole = self
            .parts
            .iter()
            .filter(|part| part.offset.is_none())
            .map(|part| part.key.clone());
        let sidecars = self
            .parts
            .iter()
            .filter_map(|part| part.provenance.as_ref())
            .filter(|sidecar| sidecar.offset.is_none())
            .map(|sidecar| sidecar.key.clone());
        let digest = (self.digest.1.is_none()).then(|| self.digest.0.clone());
        whole.chain(sidecars).chain(digest).collect()
    }
}

/// Stores `stored`, the manifest with `applied` recorded, with the
/// conditional write on `etag` (docs/design.md, invariant 7: the only
/// decision); a run that loses it removes the objects it wrote for nothing
/// (keys of its own attempt, which no manifest names). Once stored, the
/// digest the new one supersedes is deleted. Returns the new etag.
async fn store_commit(
    flusher: &Flusher,
    partition: &PartitionKey,
    stored: &Manifest,
    etag: Option<&str>,
    applied: &Applied,
) -> Result<String, FlushError> {
    let s3 = &flusher.s3;
    let bucket = &flusher.config.export_bucket;
    let key = layout::manifest_key(partition);
    let etag = match store::commit_manifest(s3, bucket, &key, stored, etag).await {
        Ok(etag) => etag,
        Err(error @ FlushError::LostRace { .. }) => {
            remove_unnamed(flusher, &applied.own_objects).await;
            return Err(error);
        }
        Err(error) => return Err(error),
    };
    if let Some(previous) = &applied.previous_digest {
        store::delete_keys(s3, bucket, std::slice::from_ref(previous)).await?;
    }
    Ok(etag)
}

/// Reads `partition`'s manifest and compacts its new staged data (of
/// `sources`, in staged order; the segments of staged objects read from
/// `spools`) into archive parts numbered after the manifest's, appending
/// the small files to `bundle`. Nothing is committed: a run that stops
/// after this has changed nothing a manifest names.
///
/// Except at a checkpoint (`checkpoints`, the deadline near): then the
/// parts written so far (objects of their own) are committed with the
/// sources read whole and a cursor into the one being read (see
/// [`commit_checkpoint`]), and the partition is reported `checkpointed`;
/// nothing of it is in the bundle.
#[allow(clippy::too_many_arguments)]
pub async fn prepare(
    flusher: &Flusher,
    alerts: &InvocationAlerts<'_>,
    trigger: &Trigger,
    partition: &PartitionKey,
    sources: &[Source],
    spools: &Spools,
    marked: bool,
    bundle: &Bundle,
    checkpoints: Checkpoints,
    range: Option<ShardRange>,
) -> Result<Prepared, FlushError> {
    let s3 = &flusher.s3;
    let bucket = &flusher.config.export_bucket;
    let manifest_key = layout::manifest_key(partition);
    let (mut manifest, etag) = match store::read_manifest(s3, bucket, &manifest_key).await? {
        // The hour closed with parts held for its hourly destinations, and
        // nothing new to commit (a commit groups them with its own parts).
        Some((manifest, etag))
            if manifest.has_held()
                && !has_new(&manifest, sources)
                && !hour_open(flusher, trigger, partition) =>
        {
            let (manifest, etag) = group_held(flusher, partition, manifest, etag).await?;
            (manifest, Some(etag))
        }
        Some((manifest, etag)) => (manifest, Some(etag)),
        None => (new_manifest(partition), None),
    };
    // A commit lists the parts its run is about to publish as published,
    // unconfirmed (see `shared::manifest`); staged data it consumed still
    // here means that run stopped before it was done: publish them again.
    let still_staged = {
        let consumed = manifest.consumed();
        sources.iter().any(|source| consumed.contains(source.key()))
    };
    let reopened = manifest.settle_unconfirmed(still_staged);
    if reopened > 0 {
        tracing::info!(stream = %partition.stream, tenant = %partition.tenant, hour = %partition.hour, parts = reopened, "the run that committed these parts stopped before deleting what it consumed: publishing them again");
    }
    // A range of shards, or a partition flushed shard by shard before:
    // committed now, range by range (see `shard`).
    if range.is_some() || manifest.shards.is_some() {
        let had_pending = manifest.has_pending();
        let (manifest, etag, report) = crate::shard::flush_range(
            flusher,
            alerts,
            trigger,
            partition,
            sources,
            spools,
            range,
            bundle,
            checkpoints,
            (manifest, etag),
        )
        .await?;
        return Ok(Prepared {
            manifest,
            etag,
            had_pending,
            marked,
            commit: None,
            report,
            own_range: range.map(ShardRange::span),
        });
    }
    // Going on from a checkpoint: its parts are published first, so that a
    // partition that takes many invocations publishes as it goes.
    let mut etag = etag;
    if manifest.cursor.is_some() && manifest.has_pending() {
        let outcome = publish::publish_pending(
            flusher,
            alerts,
            partition,
            &mut manifest,
            None,
            hour_open(flusher, trigger, partition),
            false,
        )
        .await?;
        if outcome.published > 0 || outcome.dropped > 0 || !outcome.failed.is_empty() {
            manifest.committed_at = format_rfc3339_millis(trigger.now_millis);
            let key = layout::manifest_key(partition);
            etag =
                Some(store::commit_manifest(s3, bucket, &key, &manifest, etag.as_deref()).await?);
        }
    }
    let had_pending = manifest.has_pending();
    let consumed = manifest.consumed();
    let new_sources: Vec<&Source> = sources
        .iter()
        .filter(|source| !consumed.contains(source.key()))
        .collect();
    let mut report = PartitionReport::default();
    let mut commit = None;

    if !new_sources.is_empty() {
        let ids = id_hash(&manifest).ok_or_else(|| FlushError::Corrupt {
            what: format!(
                "id digest s3://{bucket}/{}",
                manifest.id_digest.as_deref().unwrap_or_default()
            ),
            message: format!(
                "id digest version {} is not known to this flusher",
                manifest.id_digest_version
            ),
        })?;
        let mut seen = read_id_digest(flusher, partition, &manifest, etag.as_deref()).await?;
        let (parts, stop) = compact(
            flusher,
            alerts,
            partition,
            &manifest,
            &new_sources,
            spools,
            bundle,
            ids,
            &mut seen,
            &mut report,
            checkpoints,
            None,
        )
        .await?;
        if let Some(stop) = stop {
            let read = new_sources[..stop.read].iter().map(|source| source.key());
            let etag = commit_checkpoint(
                flusher,
                trigger,
                partition,
                bundle.attempt(),
                (&mut manifest, etag.as_deref()),
                (read, parts, stop.cursor),
                seen,
                ids,
                &mut report,
            )
            .await?;
            return Ok(Prepared {
                manifest,
                etag: Some(etag),
                had_pending,
                marked,
                commit: None,
                report,
                own_range: None,
            });
        }
        // Written to the bundle a piece at a time: held whole, the digest
        // would double the id set's memory.
        let ids_sorted = manifest::digest_order(seen);
        let pieces = manifest::id_digest_pieces(&ids_sorted, DIGEST_PIECE_IDS);
        let range = ByteRange {
            offset: bundle.append_pieces(pieces).await?,
            length: ids_sorted.len() as u64 * 16,
        };
        drop(ids_sorted);
        commit = Some(Commit::new(
            new_sources.iter().map(|source| source.key()),
            &report,
            parts,
            (bundle.key().to_owned(), Some(range)),
            ids,
            None,
        ));
    }
    Ok(Prepared {
        manifest,
        etag,
        had_pending,
        marked,
        commit,
        report,
        own_range: None,
    })
}

/// Groups the parts an hour's hourly destinations held while it was open
/// into their files, now that it has closed ([`Manifest::group_held`]),
/// and stores the groups before any file is written, so that every run
/// publishes the same files. Another run storing the manifest first (a
/// range of shards, a commit) is read again; what it grouped stays as it
/// grouped it. Returns the manifest stored and its etag.
async fn group_held(
    flusher: &Flusher,
    partition: &PartitionKey,
    mut manifest: Manifest,
    mut etag: String,
) -> Result<(Manifest, String), FlushError> {
    let s3 = &flusher.s3;
    let bucket = &flusher.config.export_bucket;
    let key = layout::manifest_key(partition);
    let max_bytes = flusher.config.archive_part_max_bytes as u64;
    for _ in 0..GROUPING_TRIES {
        let files = manifest.group_held(max_bytes);
        match store::commit_manifest(s3, bucket, &key, &manifest, Some(&etag)).await {
            Ok(stored) => {
                tracing::info!(stream = %partition.stream, tenant = %partition.tenant, hour = %partition.hour, files, "the hour closed: its hourly destinations' parts are grouped into files");
                return Ok((manifest, stored));
            }
            Err(FlushError::LostRace { .. }) => {
                let Some((now, now_etag)) = store::read_manifest(s3, bucket, &key).await? else {
                    return Err(FlushError::LostRace { key });
                };
                (manifest, etag) = (now, now_etag);
                if !manifest.has_held() {
                    return Ok((manifest, etag));
                }
            }
            Err(error) => return Err(error),
        }
    }
    Err(FlushError::LostRace { key })
}

/// Whether any of `sources` is new to `manifest` (neither consumed nor
/// quarantined).
fn has_new(manifest: &Manifest, sources: &[Source]) -> bool {
    let consumed = manifest.consumed();
    sources
        .iter()
        .any(|source| !consumed.contains(source.key()))
}

/// How often [`group_held`] tries again when another run stored the
/// manifest first.
const GROUPING_TRIES: usize = 8;

/// The event ids a partition's manifest (read with `etag`) says it holds
/// (none before its first commit). A digest gone because another run has
/// committed since (a digest of its own object is deleted once superseded)
/// is a lost race, not damage.
async fn read_id_digest(
    flusher: &Flusher,
    partition: &PartitionKey,
    manifest: &Manifest,
    etag: Option<&str>,
) -> Result<HashSet<u128>, FlushError> {
    let Some(key) = &manifest.id_digest else {
        return Ok(HashSet::new());
    };
    let s3 = &flusher.s3;
    let bucket = &flusher.config.export_bucket;
    let range = manifest.id_digest_range.map(ByteRange::as_range);
    let Some(bytes) = store::get_bytes(s3, bucket, key, range).await? else {
        let manifest_key = layout::manifest_key(partition);
        let now = store::read_manifest(s3, bucket, &manifest_key).await?;
        if now.as_ref().map(|(_, etag)| etag.as_str()) != etag {
            return Err(FlushError::LostRace { key: manifest_key });
        }
        return Err(FlushError::Corrupt {
            what: format!("id digest s3://{bucket}/{key}"),
            message: "named by the manifest but missing".into(),
        });
    };
    manifest::decode_id_digest(&bytes).ok_or_else(|| FlushError::Corrupt {
        what: format!("id digest s3://{bucket}/{key}"),
        message: "its length is not a multiple of 16".into(),
    })
}

/// Commits a prepared partition (its bundle stored), publishes its pending
/// parts, and deletes the staged chunks its manifest has consumed; returns
/// what it did. `sources` are the partition's staged data, as given to
/// [`prepare`]; `objects_go` says whether the run deletes its staged
/// objects once every partition is done (`scan::Work::objects_go`).
pub async fn complete(
    flusher: &Flusher,
    alerts: &InvocationAlerts<'_>,
    trigger: &Trigger,
    partition: &PartitionKey,
    sources: &[Source],
    objects_go: bool,
    prepared: Prepared,
) -> Result<PartitionReport, FlushError> {
    let s3 = &flusher.s3;
    let bucket = &flusher.config.export_bucket;
    // An hour flushed before it closes (for destinations with files every
    // few minutes): its `_SUCCESS` waits for the close.
    let hour_open = hour_open(flusher, trigger, partition);
    let Prepared {
        mut manifest,
        mut etag,
        had_pending,
        marked,
        commit,
        mut report,
        own_range,
    } = prepared;
    // The manifest as this run's commit stored it.
    let mut committed: Option<Manifest> = None;

    if let Some(commit) = commit {
        if flusher.stop_after == Some(Step::PartsWritten) {
            return Err(FlushError::Injected("parts written"));
        }
        let applied = commit.apply(flusher, trigger, partition, &mut manifest, &mut report);
        // Published by this run right after: stored as published, unconfirmed.
        let stored = manifest.with_unconfirmed(&applied.numbers);
        etag = Some(store_commit(flusher, partition, &stored, etag.as_deref(), &applied).await?);
        committed = Some(stored);
        if flusher.stop_after == Some(Step::ManifestCommitted) {
            return Err(FlushError::Injected("manifest committed"));
        }
    }
    // A checkpoint is out of time: its parts are published by the next run.
    if manifest.has_pending() && !report.checkpointed {
        let stop_early = flusher.stop_after == Some(Step::SomePublished);
        // Other ranges of a sharded partition commit meanwhile: what this
        // run published is merged into the manifest as it is then.
        let before = manifest.clone();
        // A range of shards publishes its own parts: the others' runs
        // publish theirs (and a later run what a stopped one left).
        let own_parts: Option<Vec<u32>> = own_range.map(|range| {
            let parts = manifest.parts.iter();
            parts
                .filter(|part| part.shards.is_some_and(|shards| range.holds(shards)))
                .map(|part| part.number)
                .collect()
        });
        let only = own_parts.as_deref();
        let outcome = publish::publish_pending(
            flusher,
            alerts,
            partition,
            &mut manifest,
            only,
            hour_open,
            stop_early,
        )
        .await;
        // Whatever was published is recorded, even when the run stops here.
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                shard::record_publishes(flusher, partition, &before, manifest, etag.as_deref())
                    .await?;
                return Err(error);
            }
        };
        // A run that published every part its commit listed as unconfirmed,
        // and nothing else changed, has nothing to record.
        let record = match &committed {
            // Staged objects it consumed that hold partitions this run does
            // not flush (an open hour's hourly tenants, a manual flush's
            // other tenants) stay staged, so they cannot tell the next run
            // whether this one published: it records that it did. When
            // the run deletes them, it need not (should another partition
            // of theirs fail, the next run publishes these parts again:
            // the same files).
            Some(_) if !objects_go => true,
            // Parts of a paused destination, for one, stay pending.
            Some(stored) => !manifest.publishes_match(stored),
            None => outcome.published > 0 || outcome.dropped > 0 || !outcome.failed.is_empty(),
        };
        if record {
            manifest.committed_at = format_rfc3339_millis(trigger.now_millis);
            let seen = manifest.clone();
            let stored =
                shard::record_publishes(flusher, partition, &before, manifest, etag.as_deref())
                    .await?;
            manifest = stored.0;
            if manifest.shards.is_some() && !hour_open {
                publish::mark_completed_by_merge(flusher, partition, &seen, &manifest).await;
            }
        }
        report.publish = outcome;
    }
    let pending_key = layout::pending_publish_key(partition);
    if manifest.has_pending() {
        store::put(s3, bucket, &pending_key, b"{}".to_vec(), "application/json").await?;
    } else if hour_open {
        // Flushed before its hour closed: the marker brings the first run
        // after the close here, to write the hour's `_SUCCESS`.
        if !marked && !manifest.parts.is_empty() {
            store::put(s3, bucket, &pending_key, b"{}".to_vec(), "application/json").await?;
        }
    } else if (had_pending || marked) && own_range.is_none() {
        if marked {
            let completed = &report.publish.completed;
            publish::mark_closed_hour(flusher, partition, &manifest, completed).await;
        }
        // Not by a range of shards: another range may have left parts
        // pending (and marked them) since this one read the manifest; a
        // later run's publish item deletes the marker once none is.
        // A marker left by a run that stopped after its last publish was
        // committed, before deleting it, is deleted now.
        store::delete_keys(s3, bucket, &[pending_key]).await?;
    }

    if flusher.stop_after == Some(Step::BeforeDeletingChunks) {
        return Err(FlushError::Injected("before deleting chunks"));
    }
    // Every staged chunk this manifest has consumed: the new ones, and any
    // left by a run that stopped after its commit. Staged objects are the
    // run's to delete, once every partition in them is done.
    let consumed = manifest.consumed();
    let mut done = Vec::new();
    for source in sources.iter().filter(|s| consumed.contains(s.key())) {
        match source {
            Source::Chunk(key) => done.push(key.clone()),
            // A range of shards listed those it consumed already.
            Source::Segments { object, .. } if !report.objects_done.contains(object) => {
                report.objects_done.push(object.clone())
            }
            Source::Segments { .. } => {}
        }
    }
    store::delete_keys(s3, bucket, &done).await?;
    Ok(report)
}

/// Whether `partition`'s hour is still open for this run, in a deployment
/// with destinations that receive files every few minutes (the only one
/// that flushes open hours): then its `_SUCCESS` waits for the close.
pub(crate) fn hour_open(flusher: &Flusher, trigger: &Trigger, partition: &PartitionKey) -> bool {
    let config = &flusher.config;
    config.has_frequent_destinations()
        && !trigger.closes(partition.hour, config.flush_grace_minutes)
}

/// The hash a partition's event ids are kept with: its digest's, so that an
/// event has one identity across commits, or the current one when it has no
/// digest yet; `None` for a digest version this flusher does not know.
fn id_hash(manifest: &Manifest) -> Option<IdHash> {
    match manifest.id_digest {
        Some(_) => IdHash::from_version(manifest.id_digest_version),
        None => Some(IdHash::CURRENT),
    }
}

fn new_manifest(partition: &PartitionKey) -> Manifest {
    Manifest {
        version: MANIFEST_VERSION,
        stream: partition.stream.clone(),
        tenant: partition.tenant.as_str().to_owned(),
        hour: format_rfc3339_millis(partition.hour.start_millis()),
        id_digest_version: IdHash::CURRENT.version(),
        ..Manifest::default()
    }
}

/// The level of provenance sidecars: internal, read back only by exports
/// with `_export` metadata, and mostly random ids: compress them quickly.
const PROVENANCE_GZIP_LEVEL: u32 = 1;

/// An archive part being written, with its provenance sidecar once a line
/// of it has provenance and a destination asks for it (the lines before get
/// empty sidecar lines).
struct OpenPart {
    events: PartWriter,
    /// Where the sidecar goes, when provenance is kept; the S3 client and
    /// bucket to write it with.
    sidecar_key: Option<String>,
    s3: aws_sdk_s3::Client,
    bucket: String,
    provenance: Option<PartWriter>,
}

impl OpenPart {
    /// Part `number` of `partition`, stored in `bundle` when small, else at
    /// a key of the bundle's attempt.
    fn new(
        flusher: &Flusher,
        partition: &PartitionKey,
        number: u32,
        keep_provenance: bool,
        bundle: &Bundle,
    ) -> Self {
        let config = &flusher.config;
        let attempt = bundle.attempt();
        Self {
            events: PartWriter::new(
                flusher.s3.clone(),
                &config.export_bucket,
                layout::archive_part_object_key(partition, number, attempt),
                number,
                config.archive_gzip_level,
            ),
            sidecar_key: keep_provenance
                .then(|| layout::archive_provenance_key(partition, number, attempt)),
            s3: flusher.s3.clone(),
            bucket: config.export_bucket.clone(),
            provenance: None,
        }
    }

    async fn push(
        &mut self,
        event: &str,
        event_millis: Option<i64>,
        provenance: Option<Provenance<'_>>,
        fields: &mut String,
    ) -> Result<(), FlushError> {
        if provenance.is_some()
            && self.provenance.is_none()
            && let Some(key) = self.sidecar_key.take()
        {
            let mut sidecar = PartWriter::new(
                self.s3.clone(),
                &self.bucket,
                key,
                self.events.number(),
                PROVENANCE_GZIP_LEVEL,
            );
            for _ in 0..self.events.events() {
                sidecar.push("\t", None).await?;
            }
            self.provenance = Some(sidecar);
        }
        self.events.push(event, event_millis).await?;
        if let Some(sidecar) = &mut self.provenance {
            fields.clear();
            provenance.unwrap_or_default().write_fields(fields);
            sidecar.push(fields, None).await?;
        }
        Ok(())
    }

    /// Ends the part (and its sidecar): into `bundle` when given and small,
    /// else objects of their own.
    async fn finish(self, bundle: Option<&Bundle>) -> Result<ArchivePart, FlushError> {
        let mut part = self.events.finish(bundle).await?;
        if let Some(sidecar) = self.provenance {
            let written = sidecar.finish(bundle).await?;
            part.provenance = Some(ProvenanceFile {
                key: written.key,
                bytes: written.bytes,
                offset: written.offset,
            });
        }
        Ok(part)
    }
}

/// Streams the new staged data in order into archive parts numbered after
/// the manifest's, dropping every event already in `seen` (identities
/// hashed with `ids`, the partition's id digest hash). A staged line's
/// provenance goes to the part's sidecar (when a destination asks for
/// `_export` metadata), never into the part.
///
/// A staged object's segments of this partition are decoded whole and
/// checked before any of their events is used; when one is damaged, none
/// of them is used: the object is quarantined (`report.quarantined`).
#[allow(clippy::too_many_arguments)]
async fn compact(
    flusher: &Flusher,
    alerts: &InvocationAlerts<'_>,
    partition: &PartitionKey,
    manifest: &Manifest,
    sources: &[&Source],
    spools: &Spools,
    bundle: &Bundle,
    ids: IdHash,
    seen: &mut HashSet<u128>,
    report: &mut PartitionReport,
    checkpoints: Checkpoints,
    sharding: Option<&Sharding<'_>>,
) -> Result<(Vec<ArchivePart>, Option<Stop>), FlushError> {
    let config = &flusher.config;
    let bucket = &config.export_bucket;
    let mut out = PartsOut {
        flusher,
        partition,
        bundle,
        parts: Vec::new(),
        number: manifest.next_part_number(),
        writer: None,
        fields: String::new(),
        keep_provenance: config.records_provenance(),
        checkpoints,
        // A range of shards records its consumption per source, without a
        // cursor: it stops between sources only.
        stop_within_sources: sharding.is_none(),
    };
    let mut buffer = Vec::new();
    let mut text = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        // Between sources: the clock first.
        if index > 0 && report.events > 0 && checkpoints.due(report.events, true) {
            let stop = Stop {
                read: index,
                cursor: None,
            };
            return Ok((out.close().await?, Some(stop)));
        }
        // A range of shards reads the lines before a cursor again: the id
        // digest drops them (see `shard`).
        let skip = manifest
            .cursor
            .as_ref()
            .filter(|cursor| sharding.is_none() && cursor.source == source.key())
            .map_or(0, |cursor| cursor.lines);
        let read_shards = sharding.map(|sharding| sharding.read_shards(source.key()));
        let stopped = match source {
            Source::Chunk(chunk) => {
                let Some((bytes, _)) = store::get(&flusher.s3, bucket, chunk).await? else {
                    // Listed a moment ago, gone now: another flusher consumed it.
                    return Err(FlushError::LostRace { key: chunk.clone() });
                };
                let what = format!("staged chunk s3://{bucket}/{chunk}");
                let events = compaction::new_events(
                    &bytes[..],
                    profile(flusher, partition),
                    ids,
                    seen,
                    &mut buffer,
                )
                .skip_lines(skip);
                let events = match read_shards.clone() {
                    Some((count, read)) => events.only_shards(count, read),
                    None => events,
                };
                out.write(events, &what, report).await?
            }
            Source::Segments { object, segments } => {
                let mut compressed = Vec::with_capacity(segments.len());
                let wanted = segments
                    .iter()
                    .filter(|segment| sharding.is_none_or(|sharding| sharding.wants(segment)));
                for segment in wanted {
                    let Some(bytes) = spools.segment_bytes(config, object, segment)? else {
                        // Gone: every partition in it had consumed it, this
                        // one too (its manifest has changed since read).
                        return Err(FlushError::LostRace {
                            key: object.clone(),
                        });
                    };
                    compressed.push((segment, bytes));
                }
                if let Err(error) = staged_read::decode_segments(&compressed, &mut text) {
                    let reason = format!("s3://{bucket}/{object}: {error}");
                    staged_read::quarantine(flusher, alerts, object, &reason).await?;
                    report.quarantined.push(object.clone());
                    continue;
                }
                let what = format!("staged object s3://{bucket}/{object}");
                let events = compaction::new_events_from(
                    &text[..],
                    profile(flusher, partition),
                    ids,
                    seen,
                    &mut buffer,
                )
                .skip_lines(skip);
                let events = match read_shards {
                    Some((count, read)) => events.only_shards(count, read),
                    None => events,
                };
                out.write(events, &what, report).await?
            }
        };
        if let Some(lines) = stopped {
            let stop = Stop {
                read: index,
                cursor: Some(Cursor {
                    source: source.key().to_owned(),
                    lines,
                }),
            };
            return Ok((out.close().await?, Some(stop)));
        }
    }
    // A range of shards commits on its own, before the bundle is stored.
    let parts = match sharding {
        Some(_) => out.close().await?,
        None => out.finish().await?,
    };
    Ok((parts, None))
}

/// What a compaction of a range of a partition's shards reads (see
/// `shard`): the shards of `span` (of `count`) that `state` does not
/// record as consumed, source by source.
pub struct Sharding<'a> {
    /// The hour's shard count.
    pub count: u32,
    /// The shards compacted.
    pub span: ShardSpan,
    /// The manifest's record of what each source has had consumed.
    pub state: &'a ShardState,
}

impl Sharding<'_> {
    /// The shard count, and whether each shard of `source` is read.
    fn read_shards(&self, source: &str) -> (u32, Vec<bool>) {
        let read = (0..self.count)
            .map(|shard| self.span.contains(shard) && !self.state.is_consumed(source, shard))
            .collect();
        (self.count, read)
    }

    /// Whether `segment` holds events of the span.
    fn wants(&self, segment: &shared::staged::Segment) -> bool {
        let shards = crate::work_item::hour_shards(segment, self.count);
        shards.first < self.span.end && self.span.first < shards.end
    }
}

/// Compacts the new events of a range of a sharded partition's shards
/// (`sharding`) from `sources` into parts that are objects of their own
/// (written at keys of `bundle`'s attempt; nothing goes into the bundle),
/// stopping only between sources at a checkpoint. Returns the parts and,
/// when it stopped, how many of `sources` it read (or quarantined).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn compact_range(
    flusher: &Flusher,
    alerts: &InvocationAlerts<'_>,
    partition: &PartitionKey,
    manifest: &Manifest,
    sources: &[&Source],
    spools: &Spools,
    bundle: &Bundle,
    seen: &mut HashSet<u128>,
    report: &mut PartitionReport,
    checkpoints: Checkpoints,
    sharding: &Sharding<'_>,
) -> Result<(Vec<ArchivePart>, Option<usize>), FlushError> {
    let (parts, stop) = compact(
        flusher,
        alerts,
        partition,
        manifest,
        sources,
        spools,
        bundle,
        IdHash::Blake3,
        seen,
        report,
        checkpoints,
        Some(sharding),
    )
    .await?;
    Ok((parts, stop.map(|stop| stop.read)))
}

/// Where a compaction stopped at a checkpoint.
struct Stop {
    /// The sources read whole (or quarantined), the first ones.
    read: usize,
    /// How far it had read into the next.
    cursor: Option<Cursor>,
}

/// Commits the progress of a partition whose compaction stopped at a
/// checkpoint: `progress`'s parts, its sources read whole as consumed
/// (those of `report.quarantined` as quarantined), its cursor, and a digest
/// of `seen` (every id the partition now holds) as an object of the
/// run's `attempt`, with the conditional write on `manifest` as read
/// (its etag beside it). The parts are left pending for every destination
/// that selects the partition: the next run publishes them (this one is
/// out of time). Returns the new manifest's etag, `manifest` updated; a
/// lost race removes what this run wrote and is an error.
#[allow(clippy::too_many_arguments)]
async fn commit_checkpoint<'a>(
    flusher: &Flusher,
    trigger: &Trigger,
    partition: &PartitionKey,
    attempt: &str,
    (manifest, etag): (&mut Manifest, Option<&str>),
    (read, parts, cursor): (
        impl IntoIterator<Item = &'a str>,
        Vec<ArchivePart>,
        Option<Cursor>,
    ),
    seen: HashSet<u128>,
    ids: IdHash,
    report: &mut PartitionReport,
) -> Result<String, FlushError> {
    let digest_key = layout::checkpoint_id_digest_key(partition, manifest.generation + 1, attempt);
    let commit = Commit::new(read, report, parts, (digest_key.clone(), None), ids, cursor);
    if let Err(error) = store_digest(flusher, &digest_key, seen).await {
        remove_unnamed(flusher, &commit.own_objects()).await;
        return Err(error);
    }
    let applied = commit.apply(flusher, trigger, partition, manifest, report);
    let etag = store_commit(flusher, partition, manifest, etag, &applied).await?;
    tracing::info!(stream = %partition.stream, tenant = %partition.tenant, hour = %partition.hour, parts = applied.numbers.len(), events = report.events, cursor = ?manifest.cursor, "checkpoint: progress committed before the deadline; the next run goes on from here");
    report.checkpointed = true;
    Ok(etag)
}

/// Stores the digest of `seen` at `key`, an upload part at a time: held
/// whole, the digest would double the id set's memory.
async fn store_digest(flusher: &Flusher, key: &str, seen: HashSet<u128>) -> Result<(), FlushError> {
    store_sorted_digest(flusher, key, &manifest::digest_order(seen)).await
}

/// Stores the digest of `digest` (ids in the digest's order) at `key`, an
/// upload part at a time (a multipart upload once it passes one part):
/// the bytes `manifest::encode_id_digest` gives, never held whole.
pub async fn store_sorted_digest(
    flusher: &Flusher,
    key: &str,
    digest: &[u128],
) -> Result<(), FlushError> {
    let bucket = &flusher.config.export_bucket;
    let mut upload = Upload::new(
        flusher.s3.clone(),
        bucket,
        key.to_owned(),
        "application/octet-stream",
    );
    let mut pending = Vec::new();
    for piece in manifest::id_digest_pieces(digest, DIGEST_PIECE_IDS) {
        pending.extend(piece);
        if pending.len() >= UPLOAD_PART_BYTES {
            upload.send_part(std::mem::take(&mut pending)).await?;
        }
    }
    upload.finish(pending).await
}

fn profile<'a>(
    flusher: &'a Flusher,
    partition: &PartitionKey,
) -> Option<&'a shared::profile::Profile> {
    flusher.config.streams.get(&partition.stream)
}

/// The archive parts being written from a partition's new events.
struct PartsOut<'a> {
    flusher: &'a Flusher,
    partition: &'a PartitionKey,
    /// Where parts and sidecars smaller than an upload part go.
    bundle: &'a Bundle,
    parts: Vec<ArchivePart>,
    /// The number of the part being written (or the next).
    number: u32,
    writer: Option<OpenPart>,
    fields: String,
    keep_provenance: bool,
    checkpoints: Checkpoints,
    /// Whether a checkpoint may stop it inside a source (a whole
    /// partition, with a cursor), not only between sources.
    stop_within_sources: bool,
}

impl PartsOut<'_> {
    /// Writes every event of `events` (staged data named `what` in errors),
    /// rolling parts over at the configured size (a rolled part is an
    /// object of its own, so that a checkpoint can commit it); stops early
    /// at a checkpoint, returning the lines read then.
    async fn write<D: std::io::Read>(
        &mut self,
        mut events: compaction::NewEvents<'_, D>,
        what: &str,
        report: &mut PartitionReport,
    ) -> Result<Option<u64>, FlushError> {
        let max_bytes = self.flusher.config.archive_part_max_bytes as u64;
        while let Some(event) = events.next_event() {
            let event = event.map_err(|error| FlushError::Corrupt {
                what: what.to_owned(),
                message: error.to_string(),
            })?;
            let (flusher, partition, number, keep, bundle) = (
                self.flusher,
                self.partition,
                self.number,
                self.keep_provenance,
                self.bundle,
            );
            let current = self
                .writer
                .get_or_insert_with(|| OpenPart::new(flusher, partition, number, keep, bundle));
            current
                .push(
                    event.event(),
                    event.time_millis,
                    // Parsed only when a destination asks for it.
                    if keep { event.provenance() } else { None },
                    &mut self.fields,
                )
                .await?;
            report.events += 1;
            if current.events.compressed_len() >= max_bytes {
                self.roll().await?;
            }
            if self.stop_within_sources && self.checkpoints.due(report.events, false) {
                report.duplicates += events.duplicates();
                return Ok(Some(events.lines_read()));
            }
        }
        report.duplicates += events.duplicates();
        Ok(None)
    }

    /// Ends the part being written, as an object of its own.
    async fn roll(&mut self) -> Result<(), FlushError> {
        if let Some(writer) = self.writer.take() {
            self.parts.push(writer.finish(None).await?);
            self.number += 1;
        }
        Ok(())
    }

    /// The parts, the last one ended into the bundle when small.
    async fn finish(mut self) -> Result<Vec<ArchivePart>, FlushError> {
        if let Some(writer) = self.writer.take() {
            self.parts.push(writer.finish(Some(self.bundle)).await?);
        }
        Ok(self.parts)
    }

    /// The parts at a checkpoint, every one an object of its own.
    async fn close(mut self) -> Result<Vec<ArchivePart>, FlushError> {
        self.roll().await?;
        Ok(self.parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_digest(version: u32) -> Manifest {
        let text = format!(
            r#"{{"version":1,"stream":"s","tenant":"t","hour":"h","generation":1,"parts":[],
            "consumedChunks":[],"idDigest":"ids/1","events":0,"duplicatesDropped":0,
            "destinations":{{}},"committedAt":"h"{}}}"#,
            if version == 1 {
                String::new()
            } else {
                format!(r#","idDigestVersion":{version}"#)
            }
        );
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn a_checkpoint_is_due_once_the_deadline_is_within_the_margin() {
        let far = Checkpoints {
            deadline: Some(Instant::now() + CHECKPOINT_MARGIN + Duration::from_secs(600)),
            ..Checkpoints::default()
        };
        assert!(!far.due(CLOCK_EVENTS, false) && !far.due(1, true));
        let near = Checkpoints {
            deadline: Some(Instant::now() + CHECKPOINT_MARGIN / 2),
            ..Checkpoints::default()
        };
        // The clock is looked at between sources, and every CLOCK_EVENTS
        // events within one.
        assert!(near.due(1, true));
        assert!(near.due(CLOCK_EVENTS, false));
        assert!(!near.due(CLOCK_EVENTS + 1, false));
        // Without a deadline, only the tests' event count stops it.
        let counted = Checkpoints {
            after_events: Some(10),
            ..Checkpoints::default()
        };
        assert!(!counted.due(9, true) && counted.due(10, false));
        assert!(!Checkpoints::default().due(CLOCK_EVENTS, true));
    }

    #[test]
    fn a_partition_with_a_sha256_digest_keeps_sha256_ids() {
        // Written before digest versions: no idDigestVersion field.
        assert_eq!(id_hash(&with_digest(1)), Some(IdHash::Sha256));
    }

    #[test]
    fn a_partition_keeps_its_digests_hash_and_a_new_one_takes_the_current() {
        assert_eq!(id_hash(&with_digest(2)), Some(IdHash::Blake3));
        let partition = Manifest::default();
        assert_eq!(id_hash(&partition), Some(IdHash::CURRENT));
    }

    #[test]
    fn an_unknown_digest_version_is_refused() {
        assert_eq!(id_hash(&with_digest(99)), None);
    }
}
