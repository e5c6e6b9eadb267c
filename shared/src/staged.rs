//! The staged object: everything one batcher invocation (one sub-batch of
//! it) accepted for one hour, whatever the number of streams and tenants,
//! in one S3 object (docs/design.md, "Staging").
//!
//! ```text
//! [segment][segment]…[index][trailer: 24 bytes]
//! ```
//!
//! - A **segment** holds the staged lines (`<event>\t<provenance>`, see
//!   `provenance`) of one (stream, tenant) partition and one shard, as one
//!   zstd frame with its content checksum: each is decodable alone, so a
//!   reader fetches only the byte ranges of the partitions it flushes.
//!   Segments are sorted by (stream, tenant, shard), so the segments of
//!   neighbouring partitions are neighbouring ranges, fetched as one.
//! - A **shard** is an independent de-duplication domain of a partition:
//!   an event's shard is the top bits of its identity's BLAKE3 hash
//!   ([`shard_of`]), the identity de-duplication keys on (its profile id,
//!   else its line), so two copies of an event always land in the same
//!   shard of their partition, whichever invocation staged them, as long as
//!   the partition's shard count is the same.
//! - The **index** (zstd of JSON, [`StagedIndex`]) lists every segment:
//!   partition, shard, offset, length, events and uncompressed bytes.
//! - The **trailer** is fixed-size: the index's length and CRC-32, the
//!   format version and a magic number. A reader fetches the object's tail
//!   with one ranged GET ([`TAIL_READ_BYTES`]), which holds the index in
//!   all but very large objects ([`read_tail`] says which range to fetch
//!   otherwise), as Parquet's footer is read.
//!
//! A truncated or corrupted object is refused with a [`StagedError`] saying
//! what is wrong; a segment whose bytes are damaged fails its zstd checksum
//! when it is decoded, before any of its events is used (the flusher reads
//! a segment whole before exporting it).

use std::io::{self, Read};
use std::ops::Range;

use serde::{Deserialize, Serialize};
use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective as EndDirective;
use zstd::zstd_safe::{self, CCtx, CParameter, InBuffer, OutBuffer};

use crate::partition::{Hour, TenantKey};

/// The staged object format written by this version.
pub const STAGED_FORMAT_VERSION: u32 = 1;

/// The last 8 bytes of every staged object.
pub const STAGED_MAGIC: &[u8; 8] = b"S3XSTAGE";

/// The trailer's size: index length (u64), index CRC-32 (u32), format
/// version (u32), magic (8 bytes), little-endian.
pub const TRAILER_BYTES: usize = 24;

/// How much of an object's tail a reader fetches first: the trailer and,
/// unless the index is larger, the whole index (an index entry is some 30
/// bytes compressed, so 64 KiB holds some two thousand segments).
pub const TAIL_READ_BYTES: u64 = 64 * 1024;

/// The staging codec's default level: zstd 1 compresses several times
/// faster than gzip 1, and smaller.
pub const DEFAULT_STAGING_ZSTD_LEVEL: i32 = 1;

/// The highest shard count a partition can have.
pub const MAX_SHARDS: u32 = 1024;

/// Where one segment is in its object, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub stream: String,
    /// The tenant's key segment (see `partition::TenantKey`).
    pub tenant: String,
    /// This segment's shard, below `shards`.
    pub shard: u32,
    /// The partition's shard count when it was staged (a power of two).
    pub shards: u32,
    /// Where the segment's zstd frame starts in the object.
    pub offset: u64,
    /// The frame's length in bytes.
    pub length: u64,
    /// Staged lines (events) in the segment.
    pub events: u64,
    /// The lines' bytes before compression, newlines included.
    pub bytes: u64,
}

impl Segment {
    /// The segment's byte range in its object.
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.length
    }

    /// The tenant as a key.
    pub fn tenant_key(&self) -> TenantKey {
        TenantKey::from_encoded(&self.tenant)
    }
}

/// A staged object's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedIndex {
    pub version: u32,
    /// How segments are compressed: `zstd`.
    pub codec: String,
    /// The hour every event of the object is partitioned into, as the
    /// key's `<yyyy-mm-dd>/<HH>`.
    pub hour: String,
    /// The segments, sorted by (stream, tenant, shard).
    pub segments: Vec<Segment>,
}

impl StagedIndex {
    /// Where the segments end (and the index starts).
    pub fn data_end(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.offset + s.length)
    }

    /// Events in the object.
    pub fn events(&self) -> u64 {
        self.segments.iter().map(|s| s.events).sum()
    }

    /// The hour of the object's events.
    pub fn hour(&self) -> Option<Hour> {
        Hour::parse_date_path(&self.hour)
    }
}

/// Why a staged object cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StagedError {
    #[error("the object is {0} bytes, shorter than a staged object's trailer ({TRAILER_BYTES})")]
    TooShort(u64),
    #[error(
        "its trailer does not end in the staged object magic (truncated, or not a staged object)"
    )]
    BadMagic,
    #[error("staged object format version {0} is not known to this version")]
    UnknownVersion(u32),
    #[error("its index ({index} bytes) does not fit in the object ({object} bytes)")]
    IndexOutOfBounds { index: u64, object: u64 },
    #[error("its index fails its CRC-32 (corrupted)")]
    IndexChecksum,
    #[error("its index cannot be read: {0}")]
    IndexUnreadable(String),
    #[error("its index is inconsistent: {0}")]
    IndexInconsistent(String),
    #[error("its index is of hour `{0}`, its key of another")]
    OtherHour(String),
    #[error("segment {stream}/{tenant} shard {shard} cannot be decoded: {message}")]
    Segment {
        stream: String,
        tenant: String,
        shard: u32,
        message: String,
    },
}

/// The shard of an event whose de-duplication identity is `identity` (its
/// profile id, else its line: `is_id` says which) in a partition of
/// `shards` shards (a power of two): the top bits of the identity's
/// BLAKE3 key (`dedup::IdHash::Blake3`). Always 0 for one shard.
pub fn shard_of(identity: &str, is_id: bool, shards: u32) -> u32 {
    if shards <= 1 {
        return 0;
    }
    let hash = crate::dedup::IdHash::Blake3;
    let key = if is_id {
        hash.id_key(identity)
    } else {
        hash.line_key(identity)
    };
    (key >> (128 - shards.trailing_zeros())) as u32
}

/// Whether `shards` is a shard count a partition can have.
pub fn valid_shard_count(shards: u32) -> bool {
    shards.is_power_of_two() && shards <= MAX_SHARDS
}

/// A segment's lines are gathered up to this many bytes before any reaches
/// the compressor. A segment that fits (any segment of a 6 MB SQS event of
/// plain bodies) is compressed by one call that knows its size, straight
/// from the gathered lines: zstd then neither copies them into its own
/// window nor matches across a window that wrapped around (some 14% less
/// CPU than 128 KiB blocks on a 1 MB segment of log lines). A larger
/// segment streams in blocks of this size, so the writer holds one block
/// whatever the segment's size.
const SEGMENT_BLOCK_BYTES: usize = 4 * 1024 * 1024;

/// Builds one staged object in memory: segments are added in (stream,
/// tenant, shard) order, each line by line. One zstd context serves every
/// segment, so a thousand tenants cost a thousand frames, not a thousand
/// compressors.
pub struct StagedWriter {
    out: Vec<u8>,
    context: CCtx<'static>,
    segments: Vec<Segment>,
    open: Option<Segment>,
    lines: Vec<u8>,
    /// The configured level, restored after a small segment.
    level: i32,
    /// Whether the open segment's frame was started by a streaming call.
    streamed: bool,
    /// Where a small segment is compressed first.
    scratch: Vec<u8>,
}

/// A segment whose lines are fewer bytes than this (most of them with many
/// tenants and small batches, often a single event) is compressed in one
/// call at [`SMALL_SEGMENT_LEVEL`]: building Huffman tables for a few
/// hundred bytes cost the batcher more than the rest of its work on them.
const SMALL_SEGMENT_BYTES: usize = 4 * 1024;

/// zstd's fastest level, which leaves literals unencoded: tiny segments
/// are kept about as large as their lines, as stored gzip chunks were.
const SMALL_SEGMENT_LEVEL: i32 = -1;

impl StagedWriter {
    /// A writer compressing at zstd `level`.
    pub fn new(level: i32) -> Self {
        let mut context = CCtx::create();
        context
            .set_parameter(CParameter::CompressionLevel(level))
            .expect("a zstd level within the configured range");
        context
            .set_parameter(CParameter::ChecksumFlag(true))
            .expect("zstd accepts the checksum flag");
        Self {
            out: Vec::new(),
            context,
            segments: Vec::new(),
            open: None,
            lines: Vec::new(),
            level,
            streamed: false,
            scratch: Vec::new(),
        }
    }

    /// Starts the segment of `stream`, `tenant` and `shard` (of `shards`),
    /// ending any open one. Segments must come in (stream, tenant, shard)
    /// order.
    pub fn begin_segment(&mut self, stream: &str, tenant: &TenantKey, shard: u32, shards: u32) {
        self.end_segment();
        let segment = Segment {
            stream: stream.to_owned(),
            tenant: tenant.as_str().to_owned(),
            shard,
            shards,
            offset: self.out.len() as u64,
            length: 0,
            events: 0,
            bytes: 0,
        };
        if let Some(last) = self.segments.last() {
            assert!(
                sort_key(last) < sort_key(&segment),
                "segments are added in (stream, tenant, shard) order"
            );
        }
        self.context
            .reset(zstd_safe::ResetDirective::SessionOnly)
            .expect("resetting a session cannot fail");
        self.open = Some(segment);
        self.streamed = false;
    }

    /// Appends one line (the concatenation of `parts`, then a newline) to
    /// the open segment.
    pub fn push_line_parts(&mut self, parts: &[&[u8]]) {
        assert!(self.open.is_some(), "a segment is open");
        let length = parts.iter().map(|part| part.len()).sum::<usize>() + 1;
        // The block is sent before it would pass its size, so the buffer
        // never grows past it (but for one longer line).
        if !self.lines.is_empty() && self.lines.len() + length > SEGMENT_BLOCK_BYTES {
            self.streamed = true;
            self.compress(EndDirective::ZSTD_e_continue);
        }
        for part in parts {
            self.lines.extend_from_slice(part);
        }
        self.lines.push(b'\n');
        let segment = self.open.as_mut().expect("checked above");
        segment.events += 1;
        segment.bytes += length as u64;
    }

    /// Ends the open segment, if any: its frame is complete in the object.
    pub fn end_segment(&mut self) {
        if self.open.is_none() {
            return;
        }
        if !self.streamed && self.lines.len() < SMALL_SEGMENT_BYTES {
            self.compress_small();
        } else {
            self.compress(EndDirective::ZSTD_e_end);
        }
        let mut segment = self.open.take().expect("checked above");
        segment.length = self.out.len() as u64 - segment.offset;
        self.segments.push(segment);
    }

    /// Bytes of the object so far.
    pub fn len(&self) -> usize {
        self.out.len() + self.lines.len()
    }

    /// Whether nothing was added yet.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.open.is_none()
    }

    /// The segments ended so far.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Compresses the buffered lines, a whole small segment, as one frame
    /// at [`SMALL_SEGMENT_LEVEL`], in one call that knows their size.
    fn compress_small(&mut self) {
        let set_level = |context: &mut CCtx<'static>, level: i32| {
            context
                .set_parameter(CParameter::CompressionLevel(level))
                .expect("a zstd level within its range");
        };
        set_level(&mut self.context, SMALL_SEGMENT_LEVEL);
        self.scratch.clear();
        self.scratch
            .reserve(zstd_safe::compress_bound(self.lines.len()));
        self.context
            .compress2(&mut self.scratch, &self.lines)
            .map_err(zstd_safe::get_error_name)
            .expect("compressing into memory cannot fail");
        set_level(&mut self.context, self.level);
        self.out.extend_from_slice(&self.scratch);
        self.lines.clear();
    }

    /// Compresses the buffered lines into the object; with `End`, ends the
    /// frame. Room for the whole compressed frame is reserved first when
    /// it ends: a frame given whole in that call (a segment that was never
    /// streamed) is then compressed in one pass from `lines` into the
    /// object, its size known.
    fn compress(&mut self, directive: EndDirective) {
        if directive == EndDirective::ZSTD_e_end {
            self.out
                .reserve(zstd_safe::compress_bound(self.lines.len()) + CCtx::out_size());
        }
        let mut input = InBuffer::around(&self.lines);
        loop {
            self.out.reserve(CCtx::out_size());
            let position = self.out.len();
            let mut output = OutBuffer::around_pos(&mut self.out, position);
            let remaining = self
                .context
                .compress_stream2(&mut output, &mut input, directive)
                .map_err(zstd_safe::get_error_name)
                .expect("compressing into memory cannot fail");
            let consumed = input.pos() == input.src.len();
            let done = match directive {
                EndDirective::ZSTD_e_end => remaining == 0,
                _ => consumed,
            };
            if consumed && done {
                break;
            }
        }
        self.lines.clear();
    }

    /// The whole object: its segments, its index for `hour`, its trailer.
    pub fn finish(mut self, hour: Hour) -> Vec<u8> {
        self.end_segment();
        let index = StagedIndex {
            version: STAGED_FORMAT_VERSION,
            codec: "zstd".to_owned(),
            hour: hour.date_path(),
            segments: self.segments,
        };
        let json = serde_json::to_vec(&index).expect("indexes serialize");
        let compressed = zstd::bulk::compress(&json, 3).expect("compressing into memory");
        let mut out = self.out;
        out.extend_from_slice(&compressed);
        out.extend_from_slice(&(compressed.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&compressed).to_le_bytes());
        out.extend_from_slice(&STAGED_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(STAGED_MAGIC);
        out
    }
}

fn sort_key(segment: &Segment) -> (&str, &str, u32) {
    (&segment.stream, &segment.tenant, segment.shard)
}

/// What the tail of an object (its last bytes, `tail`, of an object of
/// `object_len` bytes) gave: the index, or the range still to fetch to
/// read it (the index is longer than the tail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    Index(StagedIndex),
    Fetch(Range<u64>),
}

/// The byte range of the tail a reader fetches first.
pub fn tail_range(object_len: u64) -> Range<u64> {
    object_len.saturating_sub(TAIL_READ_BYTES)..object_len
}

/// Reads the index from the last `tail.len()` bytes of an object of
/// `object_len` bytes (at least the trailer; [`tail_range`] gives what to
/// fetch). When the index starts before the tail, the answer is the range
/// to fetch instead: call again with those bytes.
pub fn read_tail(tail: &[u8], object_len: u64) -> Result<Tail, StagedError> {
    if object_len < TRAILER_BYTES as u64 || tail.len() < TRAILER_BYTES {
        return Err(StagedError::TooShort(object_len));
    }
    let trailer = &tail[tail.len() - TRAILER_BYTES..];
    if &trailer[16..24] != STAGED_MAGIC {
        return Err(StagedError::BadMagic);
    }
    let index_len = u64::from_le_bytes(trailer[0..8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(trailer[8..12].try_into().expect("4 bytes"));
    let version = u32::from_le_bytes(trailer[12..16].try_into().expect("4 bytes"));
    if version != STAGED_FORMAT_VERSION {
        return Err(StagedError::UnknownVersion(version));
    }
    let index_end = object_len - TRAILER_BYTES as u64;
    let index_start = index_end
        .checked_sub(index_len)
        .ok_or(StagedError::IndexOutOfBounds {
            index: index_len,
            object: object_len,
        })?;
    let available = (tail.len() - TRAILER_BYTES) as u64;
    if index_len > available {
        return Ok(Tail::Fetch(index_start..object_len));
    }
    let compressed = &tail[tail.len() - TRAILER_BYTES - index_len as usize..][..index_len as usize];
    if crc32fast::hash(compressed) != crc {
        return Err(StagedError::IndexChecksum);
    }
    let json = zstd::stream::decode_all(compressed)
        .map_err(|error| StagedError::IndexUnreadable(error.to_string()))?;
    let index: StagedIndex = serde_json::from_slice(&json)
        .map_err(|error| StagedError::IndexUnreadable(error.to_string()))?;
    check_index(&index, index_start)?;
    Ok(Tail::Index(index))
}

/// Checks an index against its object's key: that it is of the hour the
/// key names (`key_hour`, `None` when the key names none), so an object
/// cannot place events in another hour than the folder it was listed in,
/// and that every segment names a stream and tenant that can be key
/// segments (as [`read_tail`] checks too).
pub fn check_key(index: &StagedIndex, key_hour: Option<Hour>) -> Result<(), StagedError> {
    if index.hour() != key_hour {
        return Err(StagedError::OtherHour(index.hour.clone()));
    }
    index.segments.iter().try_for_each(check_names)
}

/// A segment's stream and tenant must each be one key segment: not empty,
/// not `.` or `..`, no `/`.
fn check_names(segment: &Segment) -> Result<(), StagedError> {
    let key_segment =
        |name: &str| !(name.is_empty() || name.contains('/') || name == "." || name == "..");
    if key_segment(&segment.stream) && key_segment(&segment.tenant) {
        return Ok(());
    }
    Err(StagedError::IndexInconsistent(format!(
        "segment `{}`/`{}` does not name a stream and tenant",
        segment.stream, segment.tenant
    )))
}

/// Reads the index of a staged object of `size` bytes (from a listing)
/// with `fetch`, which returns the bytes of a range of the object, or
/// `None` when it is gone: one fetch of its tail ([`tail_range`]), and a
/// second of the index when it starts before the tail. The outer error is
/// `fetch`'s; the inner one says why the object is not a readable staged
/// object (an object shorter than a trailer is not fetched at all).
pub async fn fetch_index<E, F, Fut>(
    size: u64,
    mut fetch: F,
) -> Result<Option<Result<StagedIndex, StagedError>>, E>
where
    F: FnMut(Range<u64>) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Vec<u8>>, E>>,
{
    if size < TRAILER_BYTES as u64 {
        return Ok(Some(Err(StagedError::TooShort(size))));
    }
    let mut range = tail_range(size);
    // The tail names the whole index; what a second fetch reads holds it.
    for _ in 0..2 {
        let Some(tail) = fetch(range.clone()).await? else {
            return Ok(None);
        };
        match read_tail(&tail, size) {
            Ok(Tail::Index(index)) => return Ok(Some(Ok(index))),
            Ok(Tail::Fetch(rest)) => range = rest,
            Err(error) => return Ok(Some(Err(error))),
        }
    }
    Ok(Some(Err(StagedError::IndexInconsistent(
        "its index is not where its trailer says".into(),
    ))))
}

/// Reads the index of a whole object in memory.
pub fn read_index(object: &[u8]) -> Result<StagedIndex, StagedError> {
    match read_tail(object, object.len() as u64)? {
        Tail::Index(index) => Ok(index),
        Tail::Fetch(_) => unreachable!("the whole object is the tail"),
    }
}

/// Checks that the segments are in order, contiguous from the object's
/// start to the index, and well formed.
fn check_index(index: &StagedIndex, index_start: u64) -> Result<(), StagedError> {
    let inconsistent = |message: String| Err(StagedError::IndexInconsistent(message));
    if index.codec != "zstd" {
        return inconsistent(format!("codec `{}` is not known", index.codec));
    }
    if index.hour().is_none() {
        return inconsistent(format!("hour `{}` is not `<yyyy-mm-dd>/<HH>`", index.hour));
    }
    let mut at = 0u64;
    let mut previous: Option<&Segment> = None;
    for segment in &index.segments {
        let name = format!(
            "segment {}/{} shard {}",
            segment.stream, segment.tenant, segment.shard
        );
        if segment.offset != at {
            return inconsistent(format!(
                "{name} starts at {}, not where the one before ends ({at})",
                segment.offset
            ));
        }
        check_names(segment)?;
        if !valid_shard_count(segment.shards) || segment.shard >= segment.shards {
            return inconsistent(format!("{name} is not a shard of {}", segment.shards));
        }
        if previous.is_some_and(|p| sort_key(p) >= sort_key(segment)) {
            return inconsistent(format!("{name} is out of order"));
        }
        at = segment
            .offset
            .checked_add(segment.length)
            .filter(|end| *end <= index_start)
            .ok_or_else(|| StagedError::IndexInconsistent(format!("{name} ends past the index")))?;
        previous = Some(segment);
    }
    if at != index_start {
        return inconsistent(format!(
            "the segments end at {at}, the index starts at {index_start}"
        ));
    }
    Ok(())
}

/// A reader of a segment's staged lines, from its compressed bytes (exactly
/// its range of the object). Reading fails at the frame's end if its
/// checksum does not match.
pub fn segment_reader(bytes: &[u8]) -> io::Result<impl Read + '_> {
    Ok(zstd::stream::read::Decoder::with_buffer(bytes)?.single_frame())
}

/// A segment's staged lines, decoded whole: for tools and tests (the
/// flusher streams them).
pub fn segment_lines(segment: &Segment, bytes: &[u8]) -> Result<Vec<String>, StagedError> {
    let error = |message: String| StagedError::Segment {
        stream: segment.stream.clone(),
        tenant: segment.tenant.clone(),
        shard: segment.shard,
        message,
    };
    let mut text = String::new();
    segment_reader(bytes)
        .and_then(|mut reader| reader.read_to_string(&mut text))
        .map_err(|e| error(e.to_string()))?;
    if text.len() as u64 != segment.bytes {
        return Err(error(format!(
            "{} bytes decoded, the index says {}",
            text.len(),
            segment.bytes
        )));
    }
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.len() as u64 != segment.events {
        return Err(error(format!(
            "{} lines decoded, the index says {}",
            lines.len(),
            segment.events
        )));
    }
    Ok(lines)
}

/// Every segment of a whole object in memory with its lines, in order.
pub fn read_object(object: &[u8]) -> Result<Vec<(Segment, Vec<String>)>, StagedError> {
    let index = read_index(object)?;
    index
        .segments
        .into_iter()
        .map(|segment| {
            let range = segment.offset as usize..(segment.offset + segment.length) as usize;
            let lines = segment_lines(&segment, &object[range])?;
            Ok((segment, lines))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour() -> Hour {
        Hour::containing(1_764_583_200_000)
    }

    fn object(segments: &[(&str, &str, u32, u32, Vec<String>)], level: i32) -> Vec<u8> {
        let mut writer = StagedWriter::new(level);
        for (stream, tenant, shard, shards, lines) in segments {
            writer.begin_segment(stream, &TenantKey::encode(tenant), *shard, *shards);
            for line in lines {
                writer.push_line_parts(&[line.as_bytes()]);
            }
        }
        writer.finish(hour())
    }

    fn lines(prefix: &str, count: usize) -> Vec<String> {
        (0..count)
            .map(|i| {
                format!(
                    r#"{{"id":"{prefix}-{i}","v":"{}"}}	1700000000000	m-{i}"#,
                    "x".repeat(i % 50)
                )
            })
            .collect()
    }

    #[test]
    fn segments_round_trip_through_the_index() {
        let input = vec![
            ("a", "t1", 0, 1, lines("a1", 3)),
            ("a", "t2", 0, 2, lines("a2", 5_000)),
            ("a", "t2", 1, 2, lines("a2b", 1)),
            ("b", "t1", 0, 1, lines("b1", 2)),
        ];
        let bytes = object(&input, 1);
        let read = read_object(&bytes).unwrap();
        assert_eq!(read.len(), 4);
        for ((segment, got), (stream, tenant, shard, shards, want)) in read.iter().zip(&input) {
            assert_eq!(&segment.stream, stream);
            assert_eq!(segment.tenant, TenantKey::encode(tenant).as_str());
            assert_eq!((segment.shard, segment.shards), (*shard, *shards));
            assert_eq!(got, want);
            assert_eq!(segment.events, want.len() as u64);
        }
        let index = read_index(&bytes).unwrap();
        assert_eq!(index.hour(), Some(hour()));
        assert_eq!(index.events(), 5_006);
    }

    #[test]
    fn an_index_larger_than_the_tail_names_the_range_to_fetch() {
        let input: Vec<_> = (0..3_000)
            .map(|i| ("s", format!("tenant-{i:05}"), lines(&format!("t{i}"), 1)))
            .collect();
        let mut writer = StagedWriter::new(1);
        for (stream, tenant, lines) in &input {
            writer.begin_segment(stream, &TenantKey::encode(tenant), 0, 1);
            writer.push_line_parts(&[lines[0].as_bytes()]);
        }
        let bytes = writer.finish(hour());
        let len = bytes.len() as u64;
        // The whole index fits in the tail a reader fetches first…
        let tail = tail_range(len);
        assert!(matches!(
            read_tail(&bytes[tail.start as usize..], len),
            Ok(Tail::Index(_))
        ));
        // …and when a tail holds less of it, the answer names the rest.
        let Tail::Fetch(range) = read_tail(&bytes[bytes.len() - 1024..], len).unwrap() else {
            panic!("3,000 segments need more than 1 KiB");
        };
        let Tail::Index(index) = read_tail(&bytes[range.start as usize..], len).unwrap() else {
            panic!("the fetched range holds the index");
        };
        assert_eq!(index.segments.len(), 3_000);
        assert_eq!(index.data_end(), range.start);
    }

    #[test]
    fn truncated_or_corrupted_objects_are_refused() {
        let bytes = object(&[("a", "t", 0, 1, lines("x", 100))], 1);
        assert_eq!(read_index(&bytes[..10]), Err(StagedError::TooShort(10)));
        assert_eq!(
            read_index(&bytes[..bytes.len() - 1]),
            Err(StagedError::BadMagic)
        );
        // A flipped bit in the index.
        let mut flipped = bytes.clone();
        let at = flipped.len() - TRAILER_BYTES - 3;
        flipped[at] ^= 1;
        assert_eq!(read_index(&flipped), Err(StagedError::IndexChecksum));
        // A flipped bit in a segment: its checksum fails when decoded.
        let mut damaged = bytes.clone();
        damaged[20] ^= 0x40;
        let error = read_object(&damaged).unwrap_err();
        assert!(matches!(error, StagedError::Segment { .. }), "{error}");
        assert!(error.to_string().contains("segment a/t shard 0"), "{error}");
        // Another version.
        let mut newer = bytes.clone();
        let at = newer.len() - 12;
        newer[at] = 9;
        assert_eq!(read_index(&newer), Err(StagedError::UnknownVersion(9)));
        // An old gzip chunk is not a staged object.
        let gzip = crate::encode::stored_gzip(b"{\"id\":1}\n");
        assert_eq!(read_index(&gzip), Err(StagedError::BadMagic));
    }

    /// Any set of partitions and shards, written then read back through
    /// the tail and each segment's own range, gives the same lines.
    #[test]
    fn any_set_of_segments_round_trips_by_its_index() {
        let mut rng = fastrand::Rng::with_seed(7);
        let pool: String = std::iter::repeat_with(|| rng.alphanumeric())
            .take(64 * 1024)
            .collect();
        for seed in 0..100u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut partitions = std::collections::BTreeMap::new();
            for _ in 0..rng.usize(0..40) {
                let stream = format!("s{}", rng.u8(0..3));
                let tenant = TenantKey::encode(&format!("t/{}é", rng.u16(0..500)));
                partitions.insert((stream, tenant.as_str().to_owned()), 1u32 << rng.u32(0..4));
            }
            let mut keys = std::collections::BTreeSet::new();
            for ((stream, tenant), shards) in partitions {
                for shard in 0..shards {
                    if rng.bool() {
                        keys.insert((stream.clone(), tenant.clone(), shard, shards));
                    }
                }
            }
            let mut writer = StagedWriter::new(rng.i32(-3..6));
            let mut want = Vec::new();
            for (stream, tenant, shard, shards) in &keys {
                let lines: Vec<String> = (0..rng.usize(1..300))
                    .map(|_| {
                        let len = if rng.u8(0..20) == 0 {
                            40_000
                        } else {
                            rng.usize(0..900)
                        };
                        let start = rng.usize(0..pool.len() - len);
                        pool[start..start + len].to_owned()
                    })
                    .collect();
                writer.begin_segment(stream, &TenantKey::from_encoded(tenant), *shard, *shards);
                for line in &lines {
                    writer.push_line_parts(&[line.as_bytes()]);
                }
                want.push(lines);
            }
            let bytes = writer.finish(hour());
            let len = bytes.len() as u64;
            let mut tail = &bytes[tail_range(len).start as usize..];
            let index = loop {
                match read_tail(tail, len).unwrap() {
                    Tail::Index(index) => break index,
                    Tail::Fetch(range) => tail = &bytes[range.start as usize..],
                }
            };
            assert_eq!(index.segments.len(), keys.len(), "seed {seed}");
            for (segment, lines) in index.segments.iter().zip(&want) {
                let range = segment.range();
                let got = segment_lines(segment, &bytes[range.start as usize..range.end as usize])
                    .unwrap();
                assert_eq!(&got, lines, "seed {seed}");
            }
        }
    }

    #[test]
    fn an_index_naming_no_stream_or_tenant_or_another_hour_is_refused() {
        for (stream, tenant) in [("", "t"), ("s", "."), ("..", "t"), ("s", "a/b")] {
            let mut writer = StagedWriter::new(1);
            writer.begin_segment(stream, &TenantKey::from_encoded(tenant), 0, 1);
            writer.push_line_parts(&[b"{}"]);
            let error = read_index(&writer.finish(hour())).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("does not name a stream and tenant"),
                "{stream}/{tenant}: {error}"
            );
        }
        let index = read_index(&object(&[("a", "t", 0, 1, lines("x", 1))], 1)).unwrap();
        assert_eq!(check_key(&index, Some(hour())), Ok(()));
        let error = check_key(&index, Some(hour().next())).unwrap_err();
        assert!(error.to_string().contains("its key of another"), "{error}");
        assert!(check_key(&index, None).is_err());
    }

    #[test]
    fn a_segment_within_a_block_is_one_sized_frame_and_a_larger_one_streams() {
        let within = lines("w", 20_000);
        let larger = lines("l", 80_000);
        let size = |lines: &[String]| lines.iter().map(|line| line.len() + 1).sum::<usize>();
        assert!(size(&within) < SEGMENT_BLOCK_BYTES && size(&larger) > SEGMENT_BLOCK_BYTES);
        let bytes = object(
            &[
                ("a", "t1", 0, 1, within.clone()),
                ("a", "t2", 0, 1, larger.clone()),
            ],
            1,
        );
        let read = read_object(&bytes).unwrap();
        assert_eq!(read[0].1, within);
        assert_eq!(read[1].1, larger);
        // Compressed whole, a frame states its size; streamed, it cannot.
        let content_size = |segment: &Segment| {
            zstd_safe::get_frame_content_size(&bytes[segment.range().start as usize..])
                .expect("a frame header")
        };
        assert_eq!(content_size(&read[0].0), Some(size(&within) as u64));
        assert_eq!(content_size(&read[1].0), None);
    }

    #[test]
    fn a_small_segment_is_checked_like_a_large_one() {
        let small = lines("s", 3);
        let bytes = object(&[("a", "t", 0, 1, small.clone())], 6);
        assert_eq!(read_object(&bytes).unwrap()[0].1, small);
        let data_end = read_index(&bytes).unwrap().data_end() as usize;
        for at in 0..data_end {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x08;
            assert!(
                read_object(&damaged).is_err(),
                "a flipped bit at {at} went unnoticed"
            );
        }
    }

    #[test]
    fn an_index_is_fetched_from_the_tail_and_only_then_from_where_it_starts() {
        let wide: Vec<_> = (0..20_000)
            .map(|i| ("s", format!("tenant-{i:05}")))
            .collect();
        let mut writer = StagedWriter::new(1);
        for (stream, tenant) in &wide {
            writer.begin_segment(stream, &TenantKey::encode(tenant), 0, 1);
            writer.push_line_parts(&[b"{}"]);
        }
        let large = writer.finish(hour());
        let small = object(&[("a", "t", 0, 1, lines("x", 3))], 1);
        let run = |bytes: &[u8]| {
            let mut ranges = Vec::new();
            let index =
                futures::executor::block_on(fetch_index::<(), _, _>(bytes.len() as u64, |range| {
                    ranges.push(range.clone());
                    let slice = bytes[range.start as usize..range.end as usize].to_vec();
                    std::future::ready(Ok(Some(slice)))
                }));
            (index, ranges)
        };
        let (index, ranges) = run(&small);
        assert_eq!(index, Ok(Some(read_index(&small))));
        assert_eq!(ranges, [tail_range(small.len() as u64)]);
        let (index, ranges) = run(&large);
        let data_end = read_index(&large).unwrap().data_end();
        assert_eq!(index, Ok(Some(read_index(&large))));
        assert_eq!(
            ranges,
            [tail_range(large.len() as u64), data_end..large.len() as u64]
        );
        let (index, ranges) = run(&[]);
        assert_eq!(index, Ok(Some(Err(StagedError::TooShort(0)))));
        assert!(ranges.is_empty(), "nothing to fetch of an empty object");
    }

    #[test]
    fn an_empty_object_has_an_empty_index() {
        let bytes = StagedWriter::new(1).finish(hour());
        let index = read_index(&bytes).unwrap();
        assert!(index.segments.is_empty());
        assert_eq!(index.data_end(), 0);
    }

    #[test]
    #[should_panic(expected = "order")]
    fn segments_out_of_order_are_a_bug() {
        let mut writer = StagedWriter::new(1);
        writer.begin_segment("b", &TenantKey::encode("t"), 0, 1);
        writer.push_line_parts(&[b"{}"]);
        writer.begin_segment("a", &TenantKey::encode("t"), 0, 1);
    }

    #[test]
    fn shards_split_identities_by_their_hash_and_agree_for_copies() {
        assert_eq!(shard_of("anything", true, 1), 0);
        let mut counts = [0u32; 4];
        for i in 0..4_000 {
            let id = format!("event-{i}");
            let shard = shard_of(&id, true, 4);
            assert_eq!(shard, shard_of(&id, true, 4));
            counts[shard as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert!((0..64).all(|i| shard_of(&format!("{i}"), false, 8) < 8));
        assert!(valid_shard_count(1) && valid_shard_count(64));
        assert!(!valid_shard_count(0) && !valid_shard_count(3) && !valid_shard_count(2048));
    }
}
