//! The manifest: a partition's commit record (docs/design.md, invariant 4).
//!
//! Before a manifest names them, archive parts and id digests are scratch:
//! redoing the work rewrites them with the same keys and bytes. After it,
//! the chunks it lists as consumed are ignored, and destinations it lists as
//! pending are retried every run until they succeed.
//!
//! A commit lists the parts it adds as published but `unconfirmed` before
//! writing them, so that a run that publishes them all does not pay for a
//! second write of the manifest: the run deletes the staged data it
//! consumed only after publishing, so while any of it is still staged the
//! unconfirmed parts may not have been written, and the next run publishes
//! them again (the same keys and bytes: an overwrite); once none is, they
//! were ([`Manifest::settle_unconfirmed`]). A run whose consumed staged
//! objects stay staged after it (they hold partitions it does not flush)
//! records what it published instead, so that this holds.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest format written by this version: 2 since parts, sidecars
/// and id digests may be ranges of a bundle (`offset`, `idDigestRange`),
/// which a flusher of version 1 would read as whole objects. A flusher
/// refuses a manifest of a version newer than its own.
pub const MANIFEST_VERSION: u32 = 2;

/// The manifest format of a partition flushed shard by shard
/// ([`Manifest::shards`]): its consumption is recorded per staged object
/// and shard, which a flusher of version 2 would read as not consumed at
/// all (and export again). Written only by sharded commits, so a partition
/// that is never sharded stays readable by the release before.
pub const SHARDED_MANIFEST_VERSION: u32 = 3;

/// The manifest format of a partition some hourly destination of which
/// receives the hour's parts grouped into larger files
/// ([`DestinationState::held`], [`DestinationState::files`]): a flusher of
/// an earlier version would publish the held parts never and the grouped
/// ones as small files. Written only for such partitions.
pub const GROUPED_MANIFEST_VERSION: u32 = 4;

/// The newest manifest format this release reads.
pub const READ_MANIFEST_VERSION: u32 = GROUPED_MANIFEST_VERSION;

/// A partition's committed state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub version: u32,
    pub stream: String,
    /// The tenant's key segment (see `partition::TenantKey`).
    pub tenant: String,
    /// The hour's start, RFC 3339.
    pub hour: String,
    /// Counts commits, starting at 1; names the id digest written with it.
    pub generation: u64,
    pub parts: Vec<ArchivePart>,
    /// Every staged chunk whose events are in `parts`, and every staged
    /// object whose segments of this partition are.
    pub consumed_chunks: Vec<String>,
    /// Staged objects whose segments of this partition were refused as
    /// corrupt (copied to `quarantine/` and alerted): none of their events
    /// are in `parts` (in a sharded partition, none of the shards of the
    /// range that refused them: see [`ShardState::quarantined`]), and they
    /// are not read again. Absent in manifests written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined_chunks: Vec<String>,
    /// The key of the digest of every event id in `parts`: the whole
    /// object, or the range `id_digest_range` of a bundle.
    pub id_digest: Option<String>,
    /// Where the digest is in `id_digest` when that is a bundle holding
    /// other partitions' files too. Absent: the whole object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_digest_range: Option<ByteRange>,
    /// How the digest's ids are hashed (`dedup::IdHash::version`); every
    /// commit of a partition keeps it. Manifests written before the field
    /// existed hold version 1 (SHA-256).
    #[serde(default = "first_id_digest_version")]
    pub id_digest_version: u32,
    pub events: u64,
    /// Events dropped as duplicates, over every commit.
    pub duplicates_dropped: u64,
    /// Publish state per destination name.
    pub destinations: BTreeMap<String, DestinationState>,
    /// The flusher's "now" when it committed, RFC 3339.
    pub committed_at: String,
    /// Set by a commit made at a checkpoint (the invocation's deadline came
    /// while the partition was being compacted): how far into one staged
    /// source `parts` already go. The sources before it are in
    /// `consumed_chunks`; the next run skips the cursor's lines of its
    /// source and goes on from there. Absent once a commit has consumed
    /// every source it read (and in manifests written before it existed;
    /// a flusher that does not know it reads the source again from its
    /// start, and the id digest drops the lines already archived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
    /// Set once the partition is flushed shard by shard (several workers at
    /// once, each a range of its shards, docs/scale-out.md): the hour's
    /// shard count, each shard's id digest, and what each staged source has
    /// had consumed of which shards. Absent for a partition flushed whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardState>,
}

/// A sharded partition's state (see [`Manifest::shards`]).
///
/// A shard's ids are in its own digest once a sharded commit has covered
/// it, else in the partition's digest (`Manifest::id_digest`, written
/// before the partition was sharded; ids sort by shard, so a shard's ids
/// are a slice of it). A staged source is in `consumed_chunks` once every
/// shard of it is consumed; until then `consumed` says which are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardState {
    /// The hour's shard count, fixed by its first sharded commit (a power
    /// of two): an event's shard is the top bits of its id key.
    pub count: u32,
    /// Each shard's id digest: a range of an object of the commit that
    /// last covered it.
    pub digests: BTreeMap<u32, ShardDigest>,
    /// Staged sources some but not all of whose shards are consumed: the
    /// spans of shards that are.
    pub consumed: BTreeMap<String, Vec<ShardSpan>>,
    /// Sources of `consumed` a range refused as damaged (its shards of them
    /// count as consumed: their events are in the quarantine copy, not in
    /// parts). Once every shard is in, such a source is listed as
    /// quarantined, not consumed.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub quarantined: std::collections::BTreeSet<String>,
}

/// Where a shard's ids are (see [`ShardState::digests`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardDigest {
    /// The digest object (one per range commit, `layout::shard_id_digest_key`).
    pub key: String,
    /// The shard's ids in it (16 bytes each, sorted); empty for a shard
    /// without events.
    pub range: ByteRange,
}

/// The shards `first..end` of a partition.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct ShardSpan {
    /// The first shard.
    pub first: u32,
    /// The shard after the last (`first < end` for a span that holds any).
    pub end: u32,
}

impl ShardSpan {
    /// Whether `shard` is in the span.
    pub fn contains(self, shard: u32) -> bool {
        (self.first..self.end).contains(&shard)
    }

    /// The span's shards.
    pub fn shards(self) -> std::ops::Range<u32> {
        self.first..self.end
    }

    /// Whether every shard of `other` is in this span.
    pub fn holds(self, other: ShardSpan) -> bool {
        self.first <= other.first && other.end <= self.end
    }
}

/// The shard of id key `key` among `count` shards (a power of two): its top
/// bits, as `staged::shard_of` gives an event's.
pub fn shard_of_key(key: u128, count: u32) -> u32 {
    if count <= 1 {
        return 0;
    }
    (key >> (128 - count.trailing_zeros())) as u32
}

impl ShardState {
    /// A new state of `count` shards, nothing consumed.
    pub fn new(count: u32) -> Self {
        Self {
            count,
            ..Self::default()
        }
    }

    /// Whether shard `shard` of `source` is consumed (partially consumed
    /// sources only: a whole one is in the manifest's `consumed_chunks`).
    pub fn is_consumed(&self, source: &str, shard: u32) -> bool {
        self.consumed
            .get(source)
            .is_some_and(|spans| spans.iter().any(|span| span.contains(shard)))
    }

    /// Whether every shard of `span` of `source` is consumed.
    pub fn covers(&self, source: &str, span: ShardSpan) -> bool {
        span.shards().all(|shard| self.is_consumed(source, shard))
    }

    /// Records `span` of `source` as consumed; returns true when that makes
    /// every shard of it consumed (it is removed from `consumed`: the
    /// caller lists it as consumed whole).
    pub fn consume(&mut self, source: &str, span: ShardSpan) -> bool {
        let spans = self.consumed.entry(source.to_owned()).or_default();
        spans.push(span);
        spans.sort_unstable();
        let mut merged: Vec<ShardSpan> = Vec::with_capacity(spans.len());
        for span in spans.drain(..) {
            match merged.last_mut() {
                Some(last) if span.first <= last.end => last.end = last.end.max(span.end),
                _ => merged.push(span),
            }
        }
        let whole = merged.len() == 1 && merged[0].first == 0 && merged[0].end >= self.count;
        if whole {
            self.consumed.remove(source);
        } else {
            *spans = merged;
        }
        whole
    }
}

/// Where a checkpoint stopped inside a staged source (see
/// [`Manifest::cursor`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    /// The staged object or chunk, as `consumed_chunks` names sources.
    pub source: String,
    /// Its first staged lines of this partition (blank lines not counted,
    /// duplicates counted) whose events are in the manifest's parts or
    /// were dropped as duplicates.
    pub lines: u64,
}

fn first_id_digest_version() -> u32 {
    1
}

/// One canonical archive file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivePart {
    /// From 1; a later commit of the same hour continues the numbering.
    pub number: u32,
    pub key: String,
    pub events: u64,
    /// Compressed size.
    pub bytes: u64,
    pub uncompressed_bytes: u64,
    pub min_event_time: Option<String>,
    pub max_event_time: Option<String>,
    /// SHA-256 of the compressed bytes, hex.
    pub sha256: String,
    /// The part's provenance sidecar (SQS message id and ingest time of each
    /// line, see `provenance`), when its events were staged with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<ProvenanceFile>,
    /// Where the part starts in `key` when that is a bundle (the small
    /// files of the partitions one run flushed together, see
    /// `layout::bundle_key`); its length is `bytes`. Absent: the part is
    /// the whole object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// In a sharded partition: the range of shards whose commit added the
    /// part (its events are of those shards only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardSpan>,
}

impl ArchivePart {
    /// Whether `bytes` are this part as committed: its length and SHA-256.
    /// A reader checks it, so that an object changed after its commit
    /// (which invariant 7 forbids) is an error, never silently other data.
    pub fn holds(&self, bytes: &[u8]) -> bool {
        bytes.len() as u64 == self.bytes && sha256_hex(bytes) == self.sha256
    }
}

/// SHA-256 of `bytes`, lowercase hex, as [`ArchivePart::sha256`] holds it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_of(&Sha256::digest(bytes))
}

/// `digest` in lowercase hex.
pub fn hex_of(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A byte range of an object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
}

impl ByteRange {
    /// The range as `start..end`.
    pub fn as_range(self) -> std::ops::Range<u64> {
        self.offset..self.offset + self.length
    }
}

/// A provenance sidecar: gzip, one line per line of its archive part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvenanceFile {
    pub key: String,
    /// Compressed size.
    pub bytes: u64,
    /// Where it starts in `key` when that is a bundle; absent: the whole
    /// object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// Which parts a destination has received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationState {
    /// Part numbers stored in the destination.
    pub published: Vec<u32>,
    /// Part numbers still to publish.
    pub pending: Vec<u32>,
    /// The last failure, while parts are pending.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// Part numbers that were pending when the destination stopped
    /// selecting the partition's stream or tenant: never sent, so an edited
    /// destination cannot carry one tenant's parts to another's bucket.
    /// Absent in manifests written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<u32>,
    /// Part numbers of `published` that the committing run had not written
    /// yet when it committed: published once none of the staged data the
    /// manifest consumed is still staged (see the module's doc). Absent in
    /// manifests written before it existed, and once a run has confirmed
    /// them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unconfirmed: Vec<u32>,
    /// Part numbers committed while the hour was open (for destinations
    /// with files every few minutes) that this hourly destination receives
    /// once the hour closes, grouped into [`DestinationState::files`]:
    /// neither pending nor published until then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<u32>,
    /// How this destination's parts are grouped into files, recorded before
    /// any is written so that a retry writes the same file: each group's
    /// parts (ascending) are published as one file, their bytes
    /// concatenated (gzip members, zstd frames and NDJSON lines all
    /// concatenate), numbered as its first part. A part of a group is
    /// pending, published or dropped with its group. Absent for a
    /// destination that receives a file per part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<Vec<u32>>,
}

impl DestinationState {
    /// Whether this destination receives the partition's parts grouped
    /// (see [`DestinationState::files`]): then every later part is too, so
    /// that its files never mix with single-part ones.
    pub fn is_grouped(&self) -> bool {
        !self.held.is_empty() || !self.files.is_empty()
    }

    /// The group of part `number`, when it is in one.
    pub fn file_of(&self, number: u32) -> Option<&[u32]> {
        self.files
            .iter()
            .find(|group| group.contains(&number))
            .map(Vec::as_slice)
    }

    /// The files parts `numbers` are published as, in order, each once: a
    /// part alone, or the whole group it is recorded in (see
    /// [`DestinationState::files`]). Parts held for the hour's close, and
    /// files with a part `wanted` refuses, are left out.
    pub fn files_for(
        &self,
        numbers: impl IntoIterator<Item = u32>,
        wanted: impl Fn(u32) -> bool,
    ) -> Vec<Vec<u32>> {
        let mut files: Vec<Vec<u32>> = Vec::new();
        for number in numbers {
            let file = match self.file_of(number) {
                Some(group) => group.to_vec(),
                None if self.held.contains(&number) => continue,
                None => vec![number],
            };
            if file.iter().all(|n| wanted(*n)) && !files.contains(&file) {
                files.push(file);
            }
        }
        files
    }

    /// Groups the held parts into files of at most `max_bytes` (compressed,
    /// as archive parts roll over) each (a part larger than that is a file alone), in part order,
    /// and makes them pending; `sizes` gives each part's compressed size.
    /// Returns how many files were formed.
    pub fn group_held(&mut self, sizes: impl Fn(u32) -> u64, max_bytes: u64) -> usize {
        let mut held = std::mem::take(&mut self.held);
        held.sort_unstable();
        held.dedup();
        let before = self.files.len();
        let mut group: Vec<u32> = Vec::new();
        let mut group_bytes = 0u64;
        for number in held {
            let bytes = sizes(number);
            if !group.is_empty() && group_bytes + bytes > max_bytes {
                self.files.push(std::mem::take(&mut group));
                group_bytes = 0;
            }
            group.push(number);
            group_bytes += bytes;
            self.pending.push(number);
        }
        if !group.is_empty() {
            self.files.push(group);
        }
        self.pending.sort_unstable();
        self.pending.dedup();
        self.files.len() - before
    }
}

impl Manifest {
    /// The number the next archive part gets.
    pub fn next_part_number(&self) -> u32 {
        self.parts.iter().map(|p| p.number).max().unwrap_or(0) + 1
    }

    /// The chunks and staged objects this manifest is done with (consumed
    /// or quarantined), for quick lookup.
    pub fn consumed(&self) -> HashSet<&str> {
        self.consumed_chunks
            .iter()
            .chain(&self.quarantined_chunks)
            .map(String::as_str)
            .collect()
    }

    /// Whether the hour's compaction is under way: stopped at a checkpoint
    /// (a cursor), or flushed by ranges of its shards some of which have
    /// not committed yet. More parts are to come.
    pub fn in_progress(&self) -> bool {
        self.cursor.is_some()
            || self
                .shards
                .as_ref()
                .is_some_and(|state| !state.consumed.is_empty())
    }

    /// Whether any hourly destination holds parts for the hour's close.
    pub fn has_held(&self) -> bool {
        self.destinations.values().any(|d| !d.held.is_empty())
    }

    /// Groups every destination's held parts into files (see
    /// [`DestinationState::group_held`]: at most `max_bytes` compressed
    /// each), pending now; the hour has closed. Returns how many files were
    /// formed.
    pub fn group_held(&mut self, max_bytes: u64) -> usize {
        let sizes: BTreeMap<u32, u64> = self
            .parts
            .iter()
            .map(|part| (part.number, part.bytes))
            .collect();
        let size = |number: u32| sizes.get(&number).copied().unwrap_or(0);
        let formed = self
            .destinations
            .values_mut()
            .map(|state| state.group_held(size, max_bytes))
            .sum();
        self.note_format();
        formed
    }

    /// Raises [`Manifest::version`] to what its content needs: the grouped
    /// format once a destination holds or groups parts.
    pub fn note_format(&mut self) {
        if self.destinations.values().any(DestinationState::is_grouped) {
            self.version = self.version.max(GROUPED_MANIFEST_VERSION);
        }
    }

    /// Whether any destination still waits for parts.
    pub fn has_pending(&self) -> bool {
        self.destinations.values().any(|d| !d.pending.is_empty())
    }

    /// Whether any destination has parts listed as published that the
    /// committing run had not confirmed.
    pub fn has_unconfirmed(&self) -> bool {
        self.destinations
            .values()
            .any(|d| !d.unconfirmed.is_empty())
    }

    /// Settles the unconfirmed parts: `still_staged` says whether any
    /// staged chunk or object this manifest consumed is still staged, that
    /// is whether the run that committed it may have stopped before it had
    /// published them. Then they are pending again (and are published
    /// again, an overwrite); otherwise they stay published. Either way none
    /// is unconfirmed afterwards. Returns how many parts went back to
    /// pending.
    pub fn settle_unconfirmed(&mut self, still_staged: bool) -> usize {
        let mut reopened = 0;
        for state in self.destinations.values_mut() {
            let unconfirmed = std::mem::take(&mut state.unconfirmed);
            if !still_staged {
                continue;
            }
            state
                .published
                .retain(|number| !unconfirmed.contains(number));
            reopened += unconfirmed.len();
            state.pending.extend(unconfirmed);
            state.pending.sort_unstable();
            state.pending.dedup();
        }
        reopened
    }

    /// This manifest as a commit stores it when the committing run is about
    /// to publish `parts` itself: the parts move from `pending` to
    /// `published`, `unconfirmed`, for every destination that waits for
    /// nothing else (one that still waits for older parts keeps them all
    /// pending: a run has to record its outcome anyway).
    pub fn with_unconfirmed(&self, parts: &[u32]) -> Manifest {
        let mut stored = self.clone();
        for state in stored.destinations.values_mut() {
            if state.pending.is_empty() || !state.pending.iter().all(|n| parts.contains(n)) {
                continue;
            }
            let numbers = std::mem::take(&mut state.pending);
            state.published.extend(&numbers);
            state.published.sort_unstable();
            state.published.dedup();
            state.unconfirmed = numbers;
        }
        stored
    }

    /// Whether `stored` records the same publish state as this manifest
    /// once its unconfirmed parts are taken as published: then a run that
    /// stored it and published everything need not write it again.
    pub fn publishes_match(&self, stored: &Manifest) -> bool {
        let mut settled = stored.clone();
        settled.settle_unconfirmed(false);
        let mut current = self.clone();
        current.settle_unconfirmed(false);
        settled.destinations == current.destinations
    }
}

/// Serializes a set of 128-bit event id hashes, sorted, 16 bytes each
/// (little-endian), so the same set always gives the same bytes.
pub fn encode_id_digest(ids: &HashSet<u128>) -> Vec<u8> {
    let mut sorted: Vec<u128> = ids.iter().copied().collect();
    sorted.sort_unstable();
    sorted.iter().flat_map(|id| id.to_le_bytes()).collect()
}

/// A partition's id set in the digest's order (ascending), consuming the
/// set so that its memory is freed as the order is built.
pub fn digest_order(ids: HashSet<u128>) -> Vec<u128> {
    let mut sorted: Vec<u128> = ids.into_iter().collect();
    sorted.sort_unstable();
    sorted
}

/// The digest of `sorted` ids (see [`digest_order`]) in pieces of at most
/// `ids_per_piece` ids: the bytes [`encode_id_digest`] gives, written out
/// piece by piece instead of held whole.
pub fn id_digest_pieces(
    sorted: &[u128],
    ids_per_piece: usize,
) -> impl Iterator<Item = Vec<u8>> + Send + '_ {
    sorted
        .chunks(ids_per_piece.max(1))
        .map(|ids| ids.iter().flat_map(|id| id.to_le_bytes()).collect())
}

/// Reads an id digest back; `None` when its length is not a multiple of 16.
pub fn decode_id_digest(bytes: &[u8]) -> Option<HashSet<u128>> {
    if !bytes.len().is_multiple_of(16) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(16)
            .map(|chunk| u128::from_le_bytes(chunk.try_into().expect("16 bytes")))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(number: u32, bytes: u64) -> ArchivePart {
        ArchivePart {
            number,
            bytes,
            ..ArchivePart::default()
        }
    }

    #[test]
    fn held_parts_are_grouped_in_order_up_to_the_size_and_made_pending() {
        let mut manifest = Manifest {
            version: MANIFEST_VERSION,
            parts: vec![
                part(1, 40),
                part(2, 40),
                part(3, 30),
                part(4, 200),
                part(5, 10),
            ],
            ..Manifest::default()
        };
        let hourly = manifest.destinations.entry("hourly".into()).or_default();
        hourly.held = vec![3, 1, 2, 4, 5];
        manifest
            .destinations
            .entry("fresh".into())
            .or_default()
            .pending = vec![5];
        assert!(manifest.has_held());
        assert_eq!(manifest.group_held(100), 4);
        let hourly = &manifest.destinations["hourly"];
        // 40 + 40 fit, + 30 does not; a part over the size is a file alone.
        assert_eq!(hourly.files, [vec![1, 2], vec![3], vec![4], vec![5]]);
        assert_eq!(hourly.pending, [1, 2, 3, 4, 5]);
        assert!(hourly.held.is_empty() && hourly.is_grouped());
        assert_eq!(hourly.file_of(2), Some(&[1, 2][..]));
        assert_eq!(manifest.destinations["fresh"].files, Vec::<Vec<u32>>::new());
        assert_eq!(manifest.version, GROUPED_MANIFEST_VERSION);
        // Later parts form files of their own: the recorded ones never change.
        manifest.parts.push(part(6, 10));
        let hourly = manifest.destinations.get_mut("hourly").unwrap();
        hourly.held.push(6);
        assert_eq!(manifest.group_held(100), 1);
        assert_eq!(manifest.destinations["hourly"].files.len(), 5);
        assert!(!manifest.has_held());
    }

    #[test]
    fn a_manifest_without_held_parts_keeps_its_version() {
        let mut manifest = Manifest {
            version: MANIFEST_VERSION,
            ..Manifest::default()
        };
        manifest.destinations.entry("d".into()).or_default().pending = vec![1];
        assert_eq!(manifest.group_held(100), 0);
        assert_eq!(manifest.version, MANIFEST_VERSION);
    }

    #[test]
    fn id_digest_round_trips_and_is_canonical() {
        let ids: HashSet<u128> = [3u128, 1, u128::MAX, 0].into_iter().collect();
        let bytes = encode_id_digest(&ids);
        assert_eq!(bytes.len(), 64);
        assert_eq!(decode_id_digest(&bytes), Some(ids.clone()));
        let again: HashSet<u128> = [0u128, u128::MAX, 1, 3].into_iter().collect();
        assert_eq!(encode_id_digest(&again), bytes);
        assert_eq!(decode_id_digest(&bytes[..15]), None);
    }

    #[test]
    fn a_digest_written_in_pieces_is_the_digest() {
        let ids: HashSet<u128> = (0..1000u128).map(|n| n * 7919 % 1009 + (n << 64)).collect();
        let whole = encode_id_digest(&ids);
        for per_piece in [1, 3, 64, 5000] {
            let sorted = digest_order(ids.clone());
            let pieces: Vec<Vec<u8>> = id_digest_pieces(&sorted, per_piece).collect();
            assert!(pieces.iter().all(|piece| piece.len() <= per_piece * 16));
            assert_eq!(pieces.concat(), whole, "{per_piece} ids a piece");
        }
    }

    #[test]
    fn a_source_is_consumed_whole_once_its_spans_cover_every_shard() {
        let mut state = ShardState::new(8);
        let span = |first, end| ShardSpan { first, end };
        assert!(!state.consume("o", span(4, 8)));
        assert!(state.is_consumed("o", 5) && !state.is_consumed("o", 3));
        assert!(!state.consume("o", span(0, 2)));
        assert_eq!(state.consumed["o"], [span(0, 2), span(4, 8)]);
        assert!(state.covers("o", span(6, 8)) && !state.covers("o", span(1, 3)));
        assert!(state.consume("o", span(2, 4)), "0..8 now");
        assert!(!state.consumed.contains_key("o"));
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<ShardState>(&text).unwrap(), state);
        assert_eq!(shard_of_key(u128::MAX, 8), 7);
        assert_eq!(shard_of_key(1, 8), 0);
        assert_eq!(shard_of_key(u128::MAX, 1), 0);
        // The shard staging gives an event is its key's.
        let key = crate::dedup::IdHash::Blake3.id_key("event-7");
        assert_eq!(
            shard_of_key(key, 64),
            crate::staged::shard_of("event-7", true, 64)
        );
    }

    #[test]
    fn next_part_number_continues_after_the_last() {
        let mut manifest = Manifest::default();
        assert_eq!(manifest.next_part_number(), 1);
        manifest.parts.push(ArchivePart {
            number: 2,
            ..Default::default()
        });
        assert_eq!(manifest.next_part_number(), 3);
    }

    #[test]
    fn manifest_json_round_trips() {
        let mut manifest = Manifest {
            version: MANIFEST_VERSION,
            generation: 1,
            ..Default::default()
        };
        manifest.destinations.insert(
            "d".into(),
            DestinationState {
                pending: vec![1],
                ..Default::default()
            },
        );
        let text = serde_json::to_string(&manifest).unwrap();
        assert!(text.contains("\"consumedChunks\""));
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), manifest);
        assert!(manifest.has_pending());
    }

    fn with_pending(destinations: &[(&str, &[u32], &[u32])]) -> Manifest {
        let mut manifest = Manifest::default();
        for (name, published, pending) in destinations {
            manifest.destinations.insert(
                (*name).into(),
                DestinationState {
                    published: published.to_vec(),
                    pending: pending.to_vec(),
                    ..Default::default()
                },
            );
        }
        manifest
    }

    #[test]
    fn a_commit_lists_the_parts_its_run_publishes_as_unconfirmed() {
        // "old" waits for part 1 from an earlier run: it keeps all pending.
        let manifest = with_pending(&[("new", &[1], &[2, 3]), ("old", &[], &[1, 2, 3])]);
        let stored = manifest.with_unconfirmed(&[2, 3]);
        assert_eq!(stored.destinations["new"].published, [1, 2, 3]);
        assert!(stored.destinations["new"].pending.is_empty());
        assert_eq!(stored.destinations["new"].unconfirmed, [2, 3]);
        assert_eq!(stored.destinations["old"], manifest.destinations["old"]);
        assert!(stored.has_unconfirmed() && stored.has_pending());
        let text = serde_json::to_string(&stored).unwrap();
        assert!(text.contains("\"unconfirmed\":[2,3]"), "{text}");
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), stored);
        // Written before the field existed, or with nothing unconfirmed.
        assert!(
            !serde_json::to_string(&manifest)
                .unwrap()
                .contains("unconfirmed")
        );
    }

    #[test]
    fn unconfirmed_parts_are_pending_again_while_consumed_data_is_still_staged() {
        let stored = with_pending(&[("d", &[1], &[2])]).with_unconfirmed(&[2]);
        let mut crashed = stored.clone();
        assert_eq!(crashed.settle_unconfirmed(true), 1);
        assert_eq!(crashed.destinations["d"].published, [1]);
        assert_eq!(crashed.destinations["d"].pending, [2]);
        assert!(!crashed.has_unconfirmed());
        let mut finished = stored.clone();
        assert_eq!(finished.settle_unconfirmed(false), 0);
        assert_eq!(finished.destinations["d"].published, [1, 2]);
        assert!(!finished.has_pending() && !finished.has_unconfirmed());
    }

    #[test]
    fn a_run_that_published_everything_it_committed_need_not_record_it() {
        let mut manifest = with_pending(&[("d", &[1], &[2])]);
        let stored = manifest.with_unconfirmed(&[2]);
        assert!(
            !manifest.publishes_match(&stored),
            "part 2 is still pending"
        );
        let state = manifest.destinations.get_mut("d").unwrap();
        state.pending.clear();
        state.published.push(2);
        assert!(manifest.publishes_match(&stored));
        // A failure is a change to record.
        manifest.destinations.get_mut("d").unwrap().failures = 1;
        assert!(!manifest.publishes_match(&stored));
    }

    #[test]
    fn quarantined_objects_count_as_consumed_and_are_absent_from_older_manifests() {
        let manifest = Manifest {
            consumed_chunks: vec!["staging/a".into()],
            quarantined_chunks: vec!["staging/b".into()],
            ..Default::default()
        };
        let consumed = manifest.consumed();
        assert!(consumed.contains("staging/a") && consumed.contains("staging/b"));
        let text = serde_json::to_string(&manifest).unwrap();
        assert!(
            text.contains("\"quarantinedChunks\":[\"staging/b\"]"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), manifest);
        // Written before the field existed, or with nothing quarantined.
        let none = Manifest::default();
        let text = serde_json::to_string(&none).unwrap();
        assert!(!text.contains("quarantined"), "{text}");
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), none);
    }

    #[test]
    fn a_manifest_without_a_digest_version_holds_sha256_ids() {
        let mut manifest = Manifest {
            version: MANIFEST_VERSION,
            id_digest: Some("ids/1".into()),
            id_digest_version: 2,
            ..Default::default()
        };
        let text = serde_json::to_string(&manifest).unwrap();
        assert!(text.contains("\"idDigestVersion\":2"), "{text}");
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), manifest);
        let old = text.replace(",\"idDigestVersion\":2", "");
        manifest.id_digest_version = 1;
        assert_eq!(serde_json::from_str::<Manifest>(&old).unwrap(), manifest);
    }
}
