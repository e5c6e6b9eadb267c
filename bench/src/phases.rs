//! The measured phases. Each runs in a child process of its own (so its
//! peak memory is its own), single-threaded, on the same seeded corpus, and
//! returns its figures as JSON. Generating the input is never timed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use aws_lambda_events::event::sqs::SqsEvent;
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use shared::Config;
use shared::layout;
use shared::partition::Hour;
use shared::staged;

use crate::corpus::{Corpus, Messages, SENT_MILLIS, SqsEvents, Style};
use crate::cost::{FirehoseRecords, SqsRequests, StagedFormat};
use crate::measure::{Timer, mb_per_second, peak_rss_mb};

/// What every phase is given.
pub struct Setup {
    pub events: usize,
    pub tenants: usize,
    pub seed: u64,
    pub config: Config,
}

impl Setup {
    fn corpus(&self) -> Corpus {
        Corpus::new(self.events, self.tenants, self.seed)
    }
}

fn rates(timer: &Timer, bytes: usize, events: usize) -> Value {
    json!({
        "cpu_seconds": timer.cpu_seconds,
        "wall_seconds": timer.wall_seconds,
        "mb_per_s": mb_per_second(bytes, timer.cpu_seconds),
        "events_per_s": events as f64 / timer.cpu_seconds,
    })
}

/// NDJSON blocks of about `block_bytes` of the corpus, with their events.
fn ndjson_blocks(corpus: Corpus, block_bytes: usize) -> impl Iterator<Item = (Vec<u8>, usize)> {
    let mut corpus = corpus.peekable();
    std::iter::from_fn(move || {
        corpus.peek()?;
        let mut block = Vec::with_capacity(block_bytes + 4096);
        let mut events = 0;
        while block.len() < block_bytes {
            let Some(event) = corpus.next() else { break };
            block.extend_from_slice(event.text.as_bytes());
            block.push(b'\n');
            events += 1;
        }
        Some((block, events))
    })
}

/// (L) for the batcher: the corpus's NDJSON compressed in 6 MB blocks with
/// the export's codec and level (gzip at the archive level, which export
/// files keep by default), one stream per block, as the issue defines the
/// limit; and, beside it, with the staging codec and level the batcher uses.
pub fn limit(setup: &Setup) -> Value {
    let export_level = setup.config.archive_gzip_level;
    let staging_level = setup.config.staging_zstd_level;
    let (mut timer, mut staging_timer) = (Timer::default(), Timer::default());
    let (mut bytes, mut events, mut compressed, mut staging_compressed) = (0, 0, 0, 0);
    for (block, count) in ndjson_blocks(setup.corpus(), 6 * 1024 * 1024) {
        compressed += timer.time(|| gzip(&block, export_level).len());
        staging_compressed += staging_timer.time(|| {
            zstd::stream::encode_all(&block[..], staging_level)
                .expect("zstd in memory")
                .len()
        });
        bytes += block.len();
        events += count;
    }
    json!({
        "level": export_level,
        "staging_level": staging_level,
        "bytes": bytes,
        "events": events,
        "compressed_bytes": compressed,
        "staging_compressed_bytes": staging_compressed,
        "rate": rates(&timer, bytes, events),
        "staging_rate": rates(&staging_timer, bytes, events),
        "rss_mb": peak_rss_mb(),
    })
}

fn gzip(bytes: &[u8], level: u32) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 3), Compression::new(level));
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// Compression speed and ratio of gzip (zlib-rs) and zstd levels on the
/// corpus's NDJSON (its first 64 MB at most), in 6 MB blocks.
pub fn levels(setup: &Setup) -> Value {
    let blocks: Vec<(Vec<u8>, usize)> = ndjson_blocks(setup.corpus(), 6 * 1024 * 1024)
        .scan(0usize, |total, block| {
            *total += block.0.len();
            (*total <= 64 * 1024 * 1024 || *total == block.0.len()).then_some(block)
        })
        .collect();
    let bytes: usize = blocks.iter().map(|(block, _)| block.len()).sum();
    let mut rows = Vec::new();
    let mut measure = |codec: &str, level: i32, compress: &dyn Fn(&[u8]) -> Vec<u8>| {
        let mut timer = Timer::default();
        let mut compressed = Vec::new();
        for (block, _) in &blocks {
            compressed.push(timer.time(|| compress(block)));
        }
        let mut unzip = Timer::default();
        for packed in &compressed {
            unzip.time(|| match codec {
                "gzip" => {
                    let mut out = Vec::with_capacity(packed.len() * 6);
                    MultiGzDecoder::new(&packed[..])
                        .read_to_end(&mut out)
                        .expect("gzip");
                    out.len()
                }
                _ => zstd::stream::decode_all(&packed[..]).expect("zstd").len(),
            });
        }
        let size: usize = compressed.iter().map(Vec::len).sum();
        rows.push(json!({
            "codec": codec,
            "level": level,
            "compress_mb_per_s": mb_per_second(bytes, timer.cpu_seconds),
            "decompress_mb_per_s": mb_per_second(bytes, unzip.cpu_seconds),
            "ratio": bytes as f64 / size as f64,
        }));
    };
    for level in [1, 2, 3, 4, 5, 6, 9] {
        measure("gzip", level, &|block| gzip(block, level as u32));
    }
    for level in [1, 3, 6] {
        measure("zstd", level, &|block| {
            zstd::stream::encode_all(block, level).expect("zstd")
        });
    }
    json!({ "bytes": bytes, "levels": rows, "rss_mb": peak_rss_mb() })
}

/// Where the batcher phase writes the staged objects of the new format
/// (inside `chunks_dir`), in the order the batcher stored them.
const OBJECTS_FOLDER: &str = "objects";
/// Where it writes the index of the old format's chunk folders.
const PARTITIONS_FILE: &str = "partitions.json";

/// What the batcher phase's invocations staged and stored: the objects
/// (or chunks) and errors files they PUT, the hours they touched and the
/// partition-hours they staged, from the keys and indexes of the real
/// output.
#[derive(Default)]
struct Staged {
    format: Option<StagedFormat>,
    objects: usize,
    errors_files: usize,
    puts_max: usize,
    hours_touched: usize,
    hours_max: usize,
    /// Invocations whose PUTs exceeded the hours they touched (plus one
    /// when they rejected records): the issue's target, counted.
    over_target: usize,
    /// Partition-hours (hour, stream, tenant), numbered as first staged.
    partitions: BTreeMap<(Hour, String, String), usize>,
}

impl Staged {
    fn format(&mut self, format: StagedFormat) {
        if let Some(seen) = self.format {
            assert_eq!(seen, format, "a run stages in one format");
        }
        self.format = Some(format);
    }

    /// Counts an invocation's planned objects; with `dir`, writes them for
    /// the flusher's phase. Reading the keys and indexes is not timed.
    fn add_invocation(&mut self, objects: &[(&str, &[u8])], errors: bool, dir: Option<&Path>) {
        let mut hours = BTreeSet::new();
        for &(key, body) in objects {
            let number = self.objects;
            self.objects += 1;
            if let Some((hour, ..)) = layout::parse_staged_object_key(key) {
                self.format(StagedFormat::Objects);
                hours.insert(hour);
                let index = staged::read_index(body)
                    .unwrap_or_else(|error| panic!("staged object {key} is readable: {error}"));
                for segment in &index.segments {
                    let next = self.partitions.len();
                    self.partitions
                        .entry((hour, segment.stream.clone(), segment.tenant.clone()))
                        .or_insert(next);
                }
                if let Some(dir) = dir {
                    let folder = dir.join(OBJECTS_FOLDER);
                    fs::create_dir_all(&folder).expect("objects folder");
                    fs::write(folder.join(format!("o{number:08}.staged")), body)
                        .expect("staged object written");
                }
            } else {
                let partition = layout::parse_staging_chunk_key(key)
                    .unwrap_or_else(|| panic!("the batcher's key {key} parses"));
                self.format(StagedFormat::Chunks);
                hours.insert(partition.hour);
                let next = self.partitions.len();
                let folder = *self
                    .partitions
                    .entry((
                        partition.hour,
                        partition.stream.clone(),
                        partition.tenant.as_str().to_owned(),
                    ))
                    .or_insert(next);
                if let Some(dir) = dir {
                    let folder = dir.join(format!("p{folder:06}"));
                    fs::create_dir_all(&folder).expect("chunk folder");
                    fs::write(folder.join(format!("c{number:08}.ndjson.gz")), body)
                        .expect("chunk written");
                }
            }
        }
        let puts = objects.len() + usize::from(errors);
        self.errors_files += usize::from(errors);
        self.puts_max = self.puts_max.max(puts);
        self.hours_touched += hours.len();
        self.hours_max = self.hours_max.max(hours.len());
        if puts > hours.len() + usize::from(errors) {
            self.over_target += 1;
        }
    }

    /// Writes the old format's partition index for the flusher's phase.
    fn write_index(&self, dir: &Path) {
        if self.format != Some(StagedFormat::Chunks) {
            return;
        }
        let index: Vec<Value> = self
            .partitions
            .iter()
            .map(|((_, stream, _), number)| json!({"folder": format!("p{number:06}"), "stream": stream}))
            .collect();
        fs::write(
            dir.join(PARTITIONS_FILE),
            serde_json::to_vec(&index).expect("index serializes"),
        )
        .expect("index written");
    }

    fn to_json(&self, invocations: usize) -> Value {
        let puts = self.objects + self.errors_files;
        json!({
            "format": self.format.map(StagedFormat::name),
            "objects": self.objects,
            "errors_files": self.errors_files,
            "partitions": self.partitions.len(),
            "puts_per_invocation": puts as f64 / invocations as f64,
            "puts_per_invocation_max": self.puts_max,
            "hours_per_invocation": self.hours_touched as f64 / invocations as f64,
            "hours_per_invocation_max": self.hours_max,
            "invocations_over_target": self.over_target,
        })
    }
}

/// (B) the batcher's path on SQS events of `style`: deserialize the event,
/// decode the bodies, validate, partition, encode (`plan_batch`); no
/// network. With `chunks_dir`, the staged objects (or the old format's
/// chunks) are written there for the flusher's phase (untimed).
pub fn batcher(setup: &Setup, style: Style, chunks_dir: Option<&Path>) -> Value {
    let mut sqs_events = SqsEvents::new(Messages::new(setup.corpus(), style));
    let (mut timer, mut limit) = (Timer::default(), Timer::default());
    let mut sqs = SqsRequests::default();
    let mut firehose = FirehoseRecords::default();
    let mut staged = Staged::default();
    let (mut invocations, mut messages, mut events, mut event_bytes) = (0, 0, 0, 0);
    let (mut accepted, mut rejected, mut puts, mut staged_bytes, mut max_event_bytes) =
        (0, 0, 0, 0, 0);
    while let Some(event) = sqs_events.next() {
        invocations += 1;
        let request_id = format!("bench-{invocations:06}");
        let plan = timer.time(|| {
            let sqs_event: SqsEvent =
                serde_json::from_slice(&event.json).expect("the SQS event parses");
            batcher::plan_batch(
                &setup.config,
                &sqs_event.records,
                SENT_MILLIS + 60_000,
                &request_id,
            )
        });
        let errors = plan.errors.is_some();
        let (plan_accepted, plan_rejected, plan_staged) = (
            plan.stats.accepted,
            plan.stats.rejected,
            plan.stats.staged_bytes,
        );
        let objects: Vec<(&str, &[u8])> = plan
            .objects
            .iter()
            .map(|object| (object.key.as_str(), &object.body[..]))
            .collect();
        staged.add_invocation(&objects, errors, chunks_dir);
        puts += plan.objects.len() + usize::from(errors);
        drop(plan);
        // The limit on the same events, measured right after the batch so
        // that both see the machine in the same state: their NDJSON (decoded
        // untimed) compressed with the export's codec and level.
        compress_event_ndjson(&event.json, setup.config.archive_gzip_level, &mut limit);
        max_event_bytes = max_event_bytes.max(event.json.len());
        messages += event.messages;
        events += event.events;
        event_bytes += event.event_bytes;
        accepted += plan_accepted;
        rejected += plan_rejected;
        staged_bytes += plan_staged;
        for message in sqs_events.take_messages() {
            sqs.add_message(message.size);
            firehose.add_message(message.size, message.event_bytes);
        }
    }
    sqs.finish();
    if let Some(dir) = chunks_dir {
        staged.write_index(dir);
    }
    assert_eq!(accepted, events, "every generated event is accepted");
    json!({
        "style": style.name(),
        "tenants": setup.tenants,
        "invocations": invocations,
        "messages": messages,
        "events": events,
        "bytes": event_bytes,
        "accepted": accepted,
        "rejected": rejected,
        "s3_puts": puts,
        "staged": staged.to_json(invocations),
        "staged_bytes": staged_bytes,
        "largest_sqs_event_bytes": max_event_bytes,
        "sqs": sqs.to_json(),
        "firehose": firehose.to_json(),
        "rate": rates(&timer, event_bytes, events),
        "limit_rate": rates(&limit, event_bytes, events),
        "rss_mb": peak_rss_mb(),
    })
}

/// Compresses the NDJSON of the events an SQS event carries (each record's
/// body, decoded untimed when it is compressed, ending in a newline) with
/// the export's codec at `level`, timing only the compression, in blocks of
/// 1 MiB so no more than a block is held beside the compressor.
fn compress_event_ndjson(json: &[u8], level: u32, timer: &mut Timer) -> u64 {
    const BLOCK_BYTES: usize = 1 << 20;
    let sqs_event: SqsEvent = serde_json::from_slice(json).expect("the SQS event parses");
    let mut encoder = GzEncoder::new(CountingSink(0), Compression::new(level));
    let mut block = Vec::with_capacity(BLOCK_BYTES + 64 * 1024);
    for record in &sqs_event.records {
        let encoding = record
            .message_attributes
            .get(shared::content_encoding::CONTENT_ENCODING_ATTRIBUTE)
            .and_then(|attribute| attribute.string_value.as_deref());
        let body = shared::content_encoding::decode_body(
            encoding,
            record.body.as_deref().unwrap_or_default(),
            usize::MAX,
        )
        .expect("generated bodies decode");
        block.extend_from_slice(body.as_bytes());
        if !body.ends_with('\n') {
            block.push(b'\n');
        }
        if block.len() >= BLOCK_BYTES {
            timer.time(|| encoder.write_all(&block).expect("counting"));
            block.clear();
        }
    }
    timer.time(|| {
        encoder.write_all(&block).expect("counting");
        encoder.finish().expect("counting").0
    })
}

/// Bytes written, and nothing kept: where the compacted part goes.
struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len() as u64;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One partition's staged input, in the order the batcher stored it: the
/// old format's chunk files, or ranges of the staged objects.
enum PartitionInput {
    Chunks(Vec<PathBuf>),
    Segments(Vec<(PathBuf, std::ops::Range<u64>)>),
}

impl PartitionInput {
    /// The compressed staged bytes: whole chunks, or each segment's range.
    fn read(&self) -> Vec<Vec<u8>> {
        match self {
            PartitionInput::Chunks(paths) => paths
                .iter()
                .map(|path| fs::read(path).expect("chunk"))
                .collect(),
            PartitionInput::Segments(ranges) => ranges
                .iter()
                .map(|(path, range)| {
                    let mut file = fs::File::open(path).expect("staged object");
                    file.seek(SeekFrom::Start(range.start)).expect("seek");
                    let mut bytes = vec![0; (range.end - range.start) as usize];
                    file.read_exact(&mut bytes).expect("segment bytes");
                    bytes
                })
                .collect(),
        }
    }

    /// A decoder of each of `staged`'s pieces (gzip chunks or zstd segments).
    fn decoders<'a>(&self, staged: &'a [Vec<u8>]) -> Vec<Box<dyn Read + 'a>> {
        staged
            .iter()
            .map(|bytes| -> Box<dyn Read + 'a> {
                match self {
                    PartitionInput::Chunks(_) => Box::new(MultiGzDecoder::new(&bytes[..])),
                    PartitionInput::Segments(_) => {
                        Box::new(staged::segment_reader(bytes).expect("zstd segment"))
                    }
                }
            })
            .collect()
    }
}

/// The partitions the batcher phase staged in `chunks_dir` (either format)
/// with their stream, and how many staged files it wrote.
fn staged_partitions(chunks_dir: &Path) -> (Vec<(String, PartitionInput)>, usize) {
    let objects = chunks_dir.join(OBJECTS_FOLDER);
    if objects.is_dir() {
        let mut paths: Vec<PathBuf> = fs::read_dir(&objects)
            .expect("objects folder")
            .map(|entry| entry.expect("entry").path())
            .collect();
        paths.sort();
        let mut partitions: BTreeMap<(String, String, String), Vec<_>> = BTreeMap::new();
        for path in &paths {
            let index = staged::read_index(&fs::read(path).expect("staged object"))
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            for segment in &index.segments {
                partitions
                    .entry((
                        index.hour.clone(),
                        segment.stream.clone(),
                        segment.tenant.clone(),
                    ))
                    .or_default()
                    .push((path.clone(), segment.range()));
            }
        }
        let partitions = partitions
            .into_iter()
            .map(|((_, stream, _), ranges)| (stream, PartitionInput::Segments(ranges)))
            .collect();
        return (partitions, paths.len());
    }
    let index: Vec<Value> = serde_json::from_slice(
        &fs::read(chunks_dir.join(PARTITIONS_FILE)).expect("the batcher phase wrote its index"),
    )
    .expect("index parses");
    let mut files = 0;
    let partitions = index
        .iter()
        .map(|entry| {
            let folder = chunks_dir.join(entry["folder"].as_str().expect("folder"));
            let mut paths: Vec<_> = fs::read_dir(&folder)
                .expect("partition folder")
                .map(|entry| entry.expect("entry").path())
                .collect();
            paths.sort();
            files += paths.len();
            let stream = entry["stream"].as_str().unwrap_or_default().to_owned();
            (stream, PartitionInput::Chunks(paths))
        })
        .collect();
    (partitions, files)
}

/// (C) the flusher's compaction of what the batcher phase staged in
/// `chunks_dir`, one partition at a time (decompress, de-duplicate,
/// recompress at the archive level, with `flusher::compaction`: chunks
/// with `compact_chunks`, staged objects' segments with `compact_staged`),
/// beside its limit on the same input (decompress and recompress only)
/// and the decoding alone (`decompress_rate`).
/// Reading the files is not timed, as the flusher's GETs are not.
pub fn flusher(setup: &Setup, chunks_dir: &Path) -> Value {
    let level = setup.config.archive_gzip_level;
    let (partitions, files) = staged_partitions(chunks_dir);
    let (mut limit, mut compaction, mut decompress) =
        (Timer::default(), Timer::default(), Timer::default());
    let (mut pieces, mut staged_bytes, mut events, mut duplicates, mut bytes) = (0, 0, 0, 0, 0);
    let (mut limit_out, mut part_bytes, mut largest_partition) = (0u64, 0u64, 0u64);
    for (stream, input) in &partitions {
        let staged = input.read();
        pieces += staged.len();
        staged_bytes += staged.iter().map(Vec::len).sum::<usize>();

        limit_out += limit.time(|| {
            let mut encoder = GzEncoder::new(CountingSink(0), Compression::new(level));
            let mut buffer = Vec::new();
            for mut decoder in input.decoders(&staged) {
                buffer.clear();
                decoder
                    .read_to_end(&mut buffer)
                    .expect("staged input decodes");
                encoder.write_all(&buffer).expect("counting");
            }
            encoder.finish().expect("counting").0
        });

        // The staged segments decoded alone: the reading share of both.
        decompress.time(|| {
            let mut buffer = Vec::new();
            for mut decoder in input.decoders(&staged) {
                buffer.clear();
                decoder
                    .read_to_end(&mut buffer)
                    .expect("staged input decodes");
            }
        });

        let profile = setup.config.streams.get(stream.as_str());
        let (compacted, sink) = compaction
            .time(|| match input {
                PartitionInput::Chunks(_) => flusher::compaction::compact_chunks(
                    staged.iter().map(|chunk| std::io::Cursor::new(&chunk[..])),
                    profile,
                    shared::dedup::IdHash::CURRENT,
                    &mut HashSet::new(),
                    level,
                    CountingSink(0),
                ),
                PartitionInput::Segments(_) => flusher::compaction::compact_staged(
                    input.decoders(&staged),
                    profile,
                    shared::dedup::IdHash::CURRENT,
                    &mut HashSet::new(),
                    level,
                    CountingSink(0),
                ),
            })
            .expect("staged input compacts");
        events += compacted.events as usize;
        duplicates += compacted.duplicates as usize;
        bytes += compacted.uncompressed_bytes as usize;
        part_bytes += sink.0;
        largest_partition = largest_partition.max(compacted.uncompressed_bytes);
    }
    json!({
        "level": level,
        "partitions": partitions.len(),
        "staged_files": files,
        "staged_pieces": pieces,
        "staged_bytes": staged_bytes,
        "events": events,
        "duplicates": duplicates,
        "bytes": bytes,
        "part_bytes": part_bytes,
        "limit_part_bytes": limit_out,
        "largest_partition_bytes": largest_partition,
        "limit_rate": rates(&limit, bytes, events),
        "rate": rates(&compaction, bytes, events),
        "decompress_rate": rates(&decompress, bytes, events),
        "rss_mb": peak_rss_mb(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::HOUR_START;
    use shared::partition::TenantKey;

    fn setup(events: usize, tenants: usize) -> Setup {
        Setup {
            events,
            tenants,
            seed: 3,
            config: Config::from_sources(
                |name| (name == "EXPORT_BUCKET").then(|| "bench".to_owned()),
                None,
            )
            .unwrap(),
        }
    }

    /// A staged object of `hour` holding `lines` per (stream, tenant).
    fn staged_object(hour: Hour, partitions: &[(&str, &str, &[&str])]) -> Vec<u8> {
        let mut writer = staged::StagedWriter::new(staged::DEFAULT_STAGING_ZSTD_LEVEL);
        for (stream, tenant, lines) in partitions {
            writer.begin_segment(stream, &TenantKey::encode(tenant), 0, 1);
            for line in *lines {
                writer.push_line_parts(&[line.as_bytes(), b"\n"]);
            }
            writer.end_segment();
        }
        writer.finish(hour)
    }

    /// A scratch folder of this test's own, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "s3-export-bench-test-{name}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn staged_objects_put_once_an_hour_and_chunks_once_a_partition() {
        let hour = Hour::containing(HOUR_START);
        let line = r#"{"id":"1"}"#;
        let object = staged_object(
            hour,
            &[
                ("app", "t1", &[line]),
                ("app", "t2", &[line]),
                ("audit", "t1", &[line]),
            ],
        );
        let mut objects = Staged::default();
        let key = |n| layout::staged_object_key(hour, HOUR_START, "r1", n);
        // Two invocations: one object and an errors file; two sub-batches.
        let (first, second) = (key(0), key(1));
        objects.add_invocation(&[(&first, &object)], true, None);
        objects.add_invocation(&[(&first, &object), (&second, &object)], false, None);
        let figures = objects.to_json(2);
        assert_eq!(figures["format"], "objects");
        assert_eq!(figures["objects"], 3);
        assert_eq!(figures["errors_files"], 1);
        assert_eq!(figures["partitions"], 3);
        assert_eq!(figures["puts_per_invocation"], 2.0);
        assert_eq!(figures["puts_per_invocation_max"], 2);
        assert_eq!(figures["hours_per_invocation"], 1.0);
        // Two sub-batches of one hour: over the target.
        assert_eq!(figures["invocations_over_target"], 1);

        let mut chunks = Staged::default();
        let chunk = |stream: &str, tenant: &str| {
            format!(
                "staging/{}/{stream}/{}/{HOUR_START}-r1.ndjson.gz",
                hour.date_path(),
                TenantKey::encode(tenant)
            )
        };
        let (t1, t2) = (chunk("app", "t1"), chunk("app", "t2"));
        chunks.add_invocation(&[(&t1, b""), (&t2, b"")], false, None);
        let figures = chunks.to_json(1);
        assert_eq!(figures["format"], "chunks");
        assert_eq!(figures["partitions"], 2);
        assert_eq!(figures["puts_per_invocation"], 2.0);
        assert_eq!(figures["invocations_over_target"], 1);
    }

    #[test]
    fn the_flusher_phase_compacts_staged_objects_by_partition_across_objects() {
        let scratch = Scratch::new("objects");
        let folder = scratch.0.join(OBJECTS_FOLDER);
        fs::create_dir_all(&folder).unwrap();
        let hour = Hour::containing(HOUR_START);
        let (a, b, c) = (r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#);
        // t1's app events in both objects, one of them twice.
        let first = staged_object(hour, &[("app", "t1", &[a, b]), ("app", "t2", &[c])]);
        let second = staged_object(hour, &[("app", "t1", &[b, c])]);
        fs::write(folder.join("o00000000.staged"), first).unwrap();
        fs::write(folder.join("o00000001.staged"), second).unwrap();
        let figures = flusher(&setup(10, 1), &scratch.0);
        assert_eq!(figures["partitions"], 2);
        assert_eq!(figures["staged_files"], 2);
        assert_eq!(figures["staged_pieces"], 3);
        // t1: a, b, c (b once); t2: c.
        assert_eq!(figures["events"], 4);
        assert_eq!(figures["duplicates"], 1);
    }

    #[test]
    fn the_flusher_phase_compacts_every_event_the_batcher_phase_staged() {
        let scratch = Scratch::new("round-trip");
        let setup = setup(3_000, 7);
        let staged = batcher(&setup, Style::Ndjson, Some(&scratch.0));
        let compacted = flusher(&setup, &scratch.0);
        assert_eq!(compacted["events"], staged["events"]);
        assert_eq!(compacted["partitions"], staged["staged"]["partitions"]);
        assert_eq!(compacted["staged_files"], staged["staged"]["objects"]);
    }
}
