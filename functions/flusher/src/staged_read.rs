//! Reading staged objects (see `shared::staged`) with a bounded number of
//! requests, and refusing damaged ones.
//!
//! - An object's index comes from one ranged GET of its tail (a second
//!   only when the index is larger than the tail): [`read_index`].
//! - A run flushes its partitions in *windows* ([`plan_windows`]):
//!   consecutive partitions (sorted, as segments are) whose segment bytes
//!   fit in `spoolBytes`. Per window and object, one ranged GET covers the
//!   window's segments of it (they are adjacent), streamed to its place in
//!   the window's one spool file, never whole in memory ([`fetch_window`]);
//!   each partition then reads its segments from the file by offset. A
//!   typical hour is one
//!   window: an object costs one GET for its index and one for its data,
//!   whatever the number of partitions in it.
//! - A segment is decoded whole and checked against its index (zstd's
//!   checksum, its bytes and lines) before any of its events is used
//!   ([`decode_segments`]); an object whose index or segment is damaged is
//!   copied to `quarantine/<its key>` and alerted once ([`quarantine`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::stream::{self, StreamExt};

use shared::alert::InvocationAlerts;
use shared::diagnose::{Diagnosis, Problem};
use shared::layout;
use shared::partition::PartitionKey;
use shared::staged::{self, Segment, StagedError, StagedIndex};

use crate::Flusher;
use crate::error::FlushError;
use crate::scan::{Source, Work};
use crate::store;

/// The index of the staged object `key` of `size` bytes: one ranged GET of
/// its tail, and a second when the index starts before it. The outer error
/// is S3's (retried next run); the inner one says why the object cannot be
/// read (it is quarantined). `None`: the object is gone.
pub async fn read_index(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    size: u64,
) -> Result<Option<Result<StagedIndex, StagedError>>, FlushError> {
    let index = staged::fetch_index(size, |range| async move {
        let mut bytes = Vec::with_capacity((range.end - range.start) as usize);
        Ok::<_, FlushError>(
            store::get_range_into(s3, bucket, key, range, &mut bytes)
                .await?
                .map(|_| bytes),
        )
    })
    .await?;
    Ok(index.map(|index| index.and_then(|index| check_partitions(key, index))))
}

/// What `shared::staged` checks only with the key (see `staged::check_key`).
fn check_partitions(key: &str, index: StagedIndex) -> Result<StagedIndex, StagedError> {
    let key_hour = layout::parse_staged_object_key(key).map(|(hour, ..)| hour);
    staged::check_key(&index, key_hour)?;
    Ok(index)
}

/// Splits partitions whose staged bytes are `sizes` (in order) into
/// windows of consecutive partitions whose bytes sum to at most `budget`;
/// a partition larger than the budget is a window of its own. Every
/// partition is in exactly one window, in order.
pub fn plan_windows(sizes: &[u64], budget: u64) -> Vec<Range<usize>> {
    crate::work_item::split(sizes, budget, usize::MAX)
}

/// The byte range of each staged object that holds the segments of
/// `partitions`: from the first such segment's start to the last one's end
/// (segments are sorted by partition, so in a window they are adjacent;
/// segments of unselected partitions between them are read too, unused).
pub fn window_ranges<'a>(
    work: &'a Work,
    partitions: &[PartitionKey],
) -> BTreeMap<&'a str, Range<u64>> {
    let mut ranges: BTreeMap<&str, Range<u64>> = BTreeMap::new();
    for partition in partitions {
        for source in work.sources.get(partition).into_iter().flatten() {
            let Source::Segments { object, segments } = source else {
                continue;
            };
            for segment in segments {
                let range = segment.range();
                ranges
                    .entry(object.as_str())
                    .and_modify(|r| *r = r.start.min(range.start)..r.end.max(range.end))
                    .or_insert(range);
            }
        }
    }
    ranges
}

/// Distinguishes the spool files of one process.
static SPOOL_FILES: AtomicU64 = AtomicU64::new(0);

/// A new, empty file in `dir`, unlinked at once (named
/// `s3-export-<label>-<pid>-<n>` for the moment it exists), so that
/// nothing is left in the function's ephemeral storage when the file is
/// dropped or the process is killed.
pub fn unlinked_file(dir: &Path, label: &str) -> io::Result<File> {
    let path = dir.join(format!(
        "s3-export-{label}-{}-{}",
        std::process::id(),
        SPOOL_FILES.fetch_add(1, Ordering::Relaxed)
    ));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// One window's spool file: each object's range at its own offset, so a
/// window holds one file open whatever the number of objects (an hour may
/// have thousands). The file is unlinked as soon as it is created, so it is
/// freed when this is dropped, or when the process ends however it ends: a
/// crash leaves nothing in the function's ephemeral storage.
#[derive(Debug)]
pub struct SpoolFile {
    file: File,
}

impl SpoolFile {
    /// A new empty spool file in `dir`.
    fn create(dir: &Path) -> io::Result<Self> {
        Ok(Self {
            file: unlinked_file(dir, "spool")?,
        })
    }

    /// A writer of bytes from `offset` in the file: concurrent writers of
    /// disjoint ranges need no lock (positioned writes).
    fn writer_at(&self, offset: u64) -> WriterAt<'_> {
        WriterAt {
            file: &self.file,
            offset,
        }
    }
}

/// Writes to a file from an offset on, without moving a shared cursor.
struct WriterAt<'a> {
    file: &'a File,
    offset: u64,
}

impl io::Write for WriterAt<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.file.write_all_at(bytes, self.offset)?;
        self.offset += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where one object's spooled range is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    /// The bytes of the object spooled.
    pub range: Range<u64>,
    /// Where they start in the spool file.
    pub at: u64,
}

impl Spooled {
    /// Where bytes `range` of the object are in the spool file.
    fn place(&self, range: Range<u64>) -> io::Result<u64> {
        if range.start < self.range.start || range.end > self.range.end {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bytes {range:?} are not in the spooled {:?}", self.range),
            ));
        }
        Ok(self.at + range.start - self.range.start)
    }
}

/// What a window fetched of one staged object.
#[derive(Debug)]
pub enum Fetched {
    Spooled(Spooled),
    /// The object is gone: every partition in it has consumed it (another
    /// flusher deleted it).
    Gone,
    /// The GET (or the spooling) failed: the partitions that need it fail
    /// with this error (retried next run).
    Failed(FlushError),
}

/// A window's staged bytes: its spool file, and where each object's range
/// is in it.
#[derive(Debug, Default)]
pub struct Spools {
    file: Option<SpoolFile>,
    objects: HashMap<String, Fetched>,
}

impl Spools {
    /// No staged bytes: for partitions that read only chunks.
    pub fn none() -> Self {
        Self::default()
    }

    /// The compressed bytes of `segment` of `object`. `Ok(None)`: the
    /// object is gone.
    pub fn segment_bytes(
        &self,
        config: &shared::Config,
        object: &str,
        segment: &Segment,
    ) -> Result<Option<Vec<u8>>, FlushError> {
        let spool_error = |error: io::Error| FlushError::Spool {
            dir: config.spool_dir.display().to_string(),
            message: format!(
                "reading s3://{}/{object} back: {error}",
                config.export_bucket
            ),
        };
        match (self.objects.get(object), &self.file) {
            (Some(Fetched::Spooled(spooled)), Some(spool)) => {
                let at = spooled.place(segment.range()).map_err(spool_error)?;
                let mut bytes = vec![0; segment.length as usize];
                spool
                    .file
                    .read_exact_at(&mut bytes, at)
                    .map_err(spool_error)?;
                Ok(Some(bytes))
            }
            (Some(Fetched::Gone), _) => Ok(None),
            (Some(Fetched::Failed(error)), _) => Err(error.clone()),
            _ => Err(FlushError::Corrupt {
                what: format!("staged object s3://{}/{object}", config.export_bucket),
                message: "its segments were not fetched for this window (a bug)".into(),
            }),
        }
    }
}

/// Fetches the staged bytes of a window's `partitions` into one spool file
/// in `spool_dir`: one ranged GET per object, at most `read_concurrency`
/// at once, each streamed to its own place in the file.
pub async fn fetch_window(flusher: &Flusher, work: &Work, partitions: &[PartitionKey]) -> Spools {
    let config = &flusher.config;
    let bucket = &config.export_bucket;
    let ranges = window_ranges(work, partitions);
    if ranges.is_empty() {
        return Spools::none();
    }
    let spool_file = match SpoolFile::create(&config.spool_dir) {
        Ok(file) => file,
        Err(error) => {
            let error = FlushError::Spool {
                dir: config.spool_dir.display().to_string(),
                message: error.to_string(),
            };
            tracing::error!(%error, "no spool file");
            let objects = ranges
                .into_keys()
                .map(|key| (key.to_owned(), Fetched::Failed(error.clone())))
                .collect();
            return Spools {
                file: None,
                objects,
            };
        }
    };
    let mut at = 0;
    let places: Vec<(&str, Spooled)> = ranges
        .into_iter()
        .map(|(key, range)| {
            let spooled = Spooled {
                at,
                range: range.clone(),
            };
            at += range.end - range.start;
            (key, spooled)
        })
        .collect();
    let file = &spool_file;
    let fetched: Vec<(String, Fetched)> = stream::iter(places)
        .map(|(key, spooled)| async move {
            let mut writer = file.writer_at(spooled.at);
            let got =
                store::get_range_into(&flusher.s3, bucket, key, spooled.range.clone(), &mut writer)
                    .await;
            let fetched = match got {
                Ok(Some(_)) => Fetched::Spooled(spooled),
                Ok(None) => Fetched::Gone,
                Err(error) => {
                    tracing::error!(%key, %error, "staged object not fetched");
                    Fetched::Failed(error)
                }
            };
            (key.to_owned(), fetched)
        })
        .buffer_unordered(config.read_concurrency)
        .collect()
        .await;
    Spools {
        objects: fetched.into_iter().collect(),
        file: Some(spool_file),
    }
}

/// Decodes `segments` (one partition's, of one object; `bytes` gives each
/// one's compressed bytes) into `text`, whole, each checked against its
/// index entry: its zstd checksum, its byte and line counts. On error
/// `text` holds nothing usable, and no event of these segments may be
/// used. Memory: the partition's share of one staged object, which the
/// batcher bounds (one sub-batch).
pub fn decode_segments(
    segments: &[(&Segment, Vec<u8>)],
    text: &mut Vec<u8>,
) -> Result<(), StagedError> {
    text.clear();
    for (segment, bytes) in segments {
        let error = |message: String| StagedError::Segment {
            stream: segment.stream.clone(),
            tenant: segment.tenant.clone(),
            shard: segment.shard,
            message,
        };
        let start = text.len();
        // A damaged frame cannot make more text than its index says (and
        // one byte to tell it did).
        staged::segment_reader(bytes)
            .and_then(|reader| reader.take(segment.bytes + 1).read_to_end(text))
            .map_err(|e| error(e.to_string()))?;
        let decoded = &text[start..];
        if decoded.len() as u64 != segment.bytes {
            return Err(error(format!(
                "{}{} bytes decoded, the index says {}",
                decoded.len().min(segment.bytes as usize),
                if decoded.len() as u64 > segment.bytes {
                    " or more"
                } else {
                    ""
                },
                segment.bytes
            )));
        }
        let lines = memchr::memchr_iter(b'\n', decoded).count() as u64;
        if lines != segment.events || decoded.last().is_some_and(|&b| b != b'\n') {
            return Err(error(format!(
                "{lines} lines decoded, the index says {}",
                segment.events
            )));
        }
    }
    Ok(())
}

/// Refuses the staged object `key` as damaged (`reason` says how): copies
/// it byte for byte to `quarantine/<key>` and alerts, unless a copy is
/// already there (then it was alerted when the copy was made: a run that
/// stopped before recording it does not alert again). The caller then
/// treats it as consumed; it is deleted from staging like a consumed
/// object. Returns whether the copy was made now.
pub async fn quarantine(
    flusher: &Flusher,
    alerts: &InvocationAlerts<'_>,
    key: &str,
    reason: &str,
) -> Result<bool, FlushError> {
    let bucket = &flusher.config.export_bucket;
    let copy_key = layout::quarantine_key(key);
    tracing::error!(object = %format!("s3://{bucket}/{key}"), %reason, "staged object refused");
    if store::exists(&flusher.s3, bucket, &copy_key).await?
        || !store::copy(&flusher.s3, bucket, key, &copy_key).await?
    {
        return Ok(false);
    }
    let diagnosis = Diagnosis {
        code: "CorruptStagedObject".into(),
        problem: Problem::Other,
        summary: format!(
            "The staged object s3://{bucket}/{key} is refused: {reason}. None of the refused \
             data is exported; the rest of the hour is."
        ),
        remedy: format!(
            "A byte-identical copy is kept at s3://{bucket}/{copy_key} for inspection \
             (`s3-export inspect`); the staged object itself is deleted once every \
             partition in it is flushed. Nothing else needs doing for the pipeline to go on."
        ),
        bucket_policy: None,
        kms_key_policy_statement: None,
    };
    if let Err(error) = alerts.alert(key, &diagnosis).await {
        tracing::error!(%error, "quarantine alert not sent");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::partition::{Hour, TenantKey};
    use shared::staged::StagedWriter;

    #[test]
    fn windows_hold_consecutive_partitions_within_the_budget() {
        assert_eq!(plan_windows(&[], 10), Vec::<Range<usize>>::new());
        assert_eq!(plan_windows(&[3, 3, 3], 10), vec![0..3]);
        assert_eq!(plan_windows(&[4, 4, 4, 4], 10), vec![0..2, 2..4]);
        // A partition over the budget is its own window.
        assert_eq!(plan_windows(&[2, 50, 2, 2], 10), vec![0..1, 1..2, 2..4]);
        assert_eq!(plan_windows(&[0, 0, 10, 0], 10), vec![0..4]);
    }

    fn object(lines: &[(&str, &[&str])]) -> Vec<u8> {
        let mut writer = StagedWriter::new(1);
        for (tenant, lines) in lines {
            writer.begin_segment("s", &TenantKey::encode(tenant), 0, 1);
            for line in *lines {
                writer.push_line_parts(&[line.as_bytes()]);
            }
        }
        writer.finish(Hour::containing(0))
    }

    #[test]
    fn segments_decode_whole_and_must_agree_with_their_index() {
        let bytes = object(&[("a", &["{\"n\":1}", "{\"n\":2}"]), ("b", &["{\"n\":3}"])]);
        let index = staged::read_index(&bytes).unwrap();
        let slice = |s: &Segment| bytes[s.offset as usize..(s.offset + s.length) as usize].to_vec();
        let both: Vec<_> = index.segments.iter().map(|s| (s, slice(s))).collect();
        let mut text = Vec::new();
        decode_segments(&both, &mut text).unwrap();
        assert_eq!(text, b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");

        // A flipped bit: the frame's checksum (or its decoding) fails.
        let mut damaged = both.clone();
        damaged[0].1[12] ^= 0x10;
        let error = decode_segments(&damaged, &mut text).unwrap_err();
        assert!(error.to_string().contains("segment s/a shard 0"), "{error}");

        // An index that disagrees with its segment's bytes or lines.
        let mut wrong = index.segments[1].clone();
        wrong.events = 2;
        let error = decode_segments(&[(&wrong, slice(&wrong))], &mut text).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("1 lines decoded, the index says 2"),
            "{error}"
        );
        wrong.events = 1;
        wrong.bytes = 3;
        let error = decode_segments(&[(&wrong, slice(&wrong))], &mut text).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("3 or more bytes decoded, the index says 3"),
            "{error}"
        );
    }

    #[test]
    fn an_index_of_another_hour_or_with_a_path_in_a_name_is_refused() {
        let hour = Hour::containing(0);
        let key = layout::staged_object_key(hour, 1, "r", 0);
        let index = staged::read_index(&object(&[("a", &["{}"])])).unwrap();
        assert!(check_partitions(&key, index.clone()).is_ok());
        let later = layout::staged_object_key(Hour::containing(3_600_000), 1, "r", 0);
        let error = check_partitions(&later, index.clone()).unwrap_err();
        assert!(error.to_string().contains("hour"), "{error}");
        for bad in ["../archive", "..", ".", ""] {
            let mut climbing = index.clone();
            climbing.segments[0].stream = bad.into();
            let error = check_partitions(&key, climbing).unwrap_err();
            assert!(error.to_string().contains(&format!("`{bad}`")), "{error}");
        }
    }

    #[test]
    fn a_spool_file_holds_each_objects_range_at_its_place() {
        let spool = SpoolFile::create(&std::env::temp_dir()).unwrap();
        // Two objects' ranges, written in any order.
        let second = Spooled {
            range: 50..54,
            at: 10,
        };
        let first = Spooled {
            range: 100..110,
            at: 0,
        };
        io::Write::write_all(&mut spool.writer_at(second.at), b"wxyz").unwrap();
        io::Write::write_all(&mut spool.writer_at(first.at), b"0123").unwrap();
        io::Write::write_all(&mut spool.writer_at(first.at + 4), b"456789").unwrap();
        let read = |spooled: &Spooled, range: Range<u64>| {
            let mut bytes = vec![0; (range.end - range.start) as usize];
            let at = spooled.place(range)?;
            spool.file.read_exact_at(&mut bytes, at)?;
            Ok::<_, io::Error>(bytes)
        };
        assert_eq!(read(&first, 102..105).unwrap(), b"234");
        assert_eq!(read(&second, 51..54).unwrap(), b"xyz");
        assert!(read(&first, 99..101).is_err());
        assert!(read(&second, 52..55).is_err());
    }
}
