//! The measured phases. Each runs in a child process of its own (so its
//! peak memory is its own), single-threaded, on the same seeded corpus, and
//! returns its figures as JSON. Generating the input is never timed.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use aws_lambda_events::event::sqs::SqsEvent;
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use shared::Config;
use shared::layout;

use crate::corpus::{Corpus, Messages, SENT_MILLIS, SqsEvents, Style};
use crate::cost::SqsRequests;
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
    let staging_level = setup.config.staging_gzip_level;
    let (mut timer, mut staging_timer) = (Timer::default(), Timer::default());
    let (mut bytes, mut events, mut compressed, mut staging_compressed) = (0, 0, 0, 0);
    for (block, count) in ndjson_blocks(setup.corpus(), 6 * 1024 * 1024) {
        compressed += timer.time(|| gzip(&block, export_level).len());
        staging_compressed += staging_timer.time(|| gzip(&block, staging_level).len());
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

/// (B) the batcher's path on SQS events of `style`: deserialize the event,
/// decode the bodies, validate, partition, encode (`plan_batch`); no
/// network. With `chunks_dir`, the staged chunks are written there for the
/// flusher's phase (untimed).
pub fn batcher(setup: &Setup, style: Style, chunks_dir: Option<&Path>) -> Value {
    let mut sqs_events = SqsEvents::new(Messages::new(setup.corpus(), style));
    let (mut timer, mut limit) = (Timer::default(), Timer::default());
    let mut sqs = SqsRequests::default();
    let (mut invocations, mut messages, mut events, mut event_bytes) = (0, 0, 0, 0);
    let (mut accepted, mut rejected, mut puts, mut staged_bytes, mut max_event_bytes) =
        (0, 0, 0, 0, 0);
    let mut partitions: BTreeMap<shared::partition::PartitionKey, usize> = BTreeMap::new();
    let mut written = 0usize;
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
        let (chunks, errors) = (plan.chunks.len(), plan.errors.is_some());
        let (plan_accepted, plan_rejected, plan_staged) = (
            plan.stats.accepted,
            plan.stats.rejected,
            plan.stats.staged_bytes,
        );
        if let Some(dir) = chunks_dir {
            for chunk in &plan.chunks {
                let partition =
                    layout::parse_staging_chunk_key(&chunk.key).expect("the batcher's keys parse");
                let next = partitions.len();
                let number = *partitions.entry(partition).or_insert(next);
                let folder = dir.join(format!("p{number:06}"));
                fs::create_dir_all(&folder).expect("chunk folder");
                fs::write(folder.join(format!("c{written:08}.ndjson.gz")), &chunk.body)
                    .expect("chunk written");
                written += 1;
            }
        }
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
        puts += chunks + usize::from(errors);
        staged_bytes += plan_staged;
        for size in sqs_events.take_message_sizes() {
            sqs.add_message(size);
        }
    }
    sqs.finish();
    if let Some(dir) = chunks_dir {
        let index: Vec<Value> = partitions
            .iter()
            .map(|(partition, number)| json!({"folder": format!("p{number:06}"), "stream": partition.stream}))
            .collect();
        fs::write(
            dir.join("partitions.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .expect("index written");
    }
    assert_eq!(accepted, events, "every generated event is accepted");
    json!({
        "style": style.name(),
        "invocations": invocations,
        "messages": messages,
        "events": events,
        "bytes": event_bytes,
        "accepted": accepted,
        "rejected": rejected,
        "s3_puts": puts,
        "staged_bytes": staged_bytes,
        "largest_sqs_event_bytes": max_event_bytes,
        "sqs": sqs.to_json(),
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

/// (C) the flusher's compaction of the staged chunks in `chunks_dir`, one
/// partition at a time (decompress, de-duplicate, recompress at the archive
/// level, with `flusher::compaction`), beside its limit on the same chunks
/// (decompress and recompress only). Reading the files is not timed, as the
/// flusher's GETs are not.
pub fn flusher(setup: &Setup, chunks_dir: &Path) -> Value {
    let level = setup.config.archive_gzip_level;
    let index: Vec<Value> = serde_json::from_slice(
        &fs::read(chunks_dir.join("partitions.json")).expect("the batcher phase wrote its index"),
    )
    .expect("index parses");
    let (mut limit, mut compaction) = (Timer::default(), Timer::default());
    let (mut chunks_read, mut staged_bytes, mut events, mut duplicates, mut bytes) =
        (0, 0, 0, 0, 0);
    let (mut limit_out, mut part_bytes, mut largest_partition) = (0u64, 0u64, 0u64);
    for entry in &index {
        let folder = chunks_dir.join(entry["folder"].as_str().expect("folder"));
        let mut paths: Vec<_> = fs::read_dir(&folder)
            .expect("partition folder")
            .map(|entry| entry.expect("entry").path())
            .collect();
        paths.sort();
        let chunks = || paths.iter().map(|path| fs::read(path).expect("chunk"));
        chunks_read += paths.len();
        staged_bytes += paths
            .iter()
            .map(|path| fs::metadata(path).map_or(0, |m| m.len() as usize))
            .sum::<usize>();

        limit_out += limit.time(|| {
            let mut encoder = GzEncoder::new(CountingSink(0), Compression::new(level));
            let mut buffer = Vec::new();
            for chunk in chunks() {
                buffer.clear();
                MultiGzDecoder::new(&chunk[..])
                    .read_to_end(&mut buffer)
                    .expect("staged chunks are gzip");
                encoder.write_all(&buffer).expect("counting");
            }
            encoder.finish().expect("counting").0
        });

        let profile = entry["stream"]
            .as_str()
            .and_then(|stream| setup.config.streams.get(stream));
        let (compacted, sink) = compaction.time(|| {
            flusher::compaction::compact_chunks(
                chunks().map(std::io::Cursor::new),
                profile,
                shared::dedup::IdHash::CURRENT,
                &mut HashSet::new(),
                level,
                CountingSink(0),
            )
            .expect("staged chunks compact")
        });
        events += compacted.events as usize;
        duplicates += compacted.duplicates as usize;
        bytes += compacted.uncompressed_bytes as usize;
        part_bytes += sink.0;
        largest_partition = largest_partition.max(compacted.uncompressed_bytes);
    }
    json!({
        "level": level,
        "partitions": index.len(),
        "chunks": chunks_read,
        "staged_bytes": staged_bytes,
        "events": events,
        "duplicates": duplicates,
        "bytes": bytes,
        "part_bytes": part_bytes,
        "limit_part_bytes": limit_out,
        "largest_partition_bytes": largest_partition,
        "limit_rate": rates(&limit, bytes, events),
        "rate": rates(&compaction, bytes, events),
        "rss_mb": peak_rss_mb(),
    })
}
