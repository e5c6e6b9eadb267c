//! Planning a batch: the pure part of the batcher. From the SQS records and
//! the configuration it builds every object the invocation must store, and
//! remembers which messages fed each one, so a failed store fails exactly
//! those messages. No I/O, no clock: the ingest time and request id are
//! inputs, so the same batch gives the same keys and bytes.
//!
//! Memory stays bounded whatever the batch holds: records are planned one
//! message at a time (decode, split, validate, route, then the decoded body
//! is dropped), accepted events are held as compact text (a plain body's
//! where it is in the batch, a decoded body's copied), and when they reach
//! `sub_batch_bytes` they are encoded into one sub-batch of chunks for the
//! caller to store. At any moment the planner holds at most one
//! sub-batch of events, one decoded body, and the chunks not yet taken.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};
use serde::Serialize;

use shared::config::{Config, PartitionBy};
use shared::content_encoding::{self, CONTENT_ENCODING_ATTRIBUTE, Decoded};
use shared::decode;
use shared::encode::{NdjsonGzWriter, STAGED_STORED_MAX_BYTES};
use shared::layout;
use shared::partition::{Hour, PartitionKey, TenantKey};
use shared::provenance::Provenance;
use shared::rejection::{RejectReason, Rejection};
use shared::senders::SENDER_ID_ATTRIBUTE;
use shared::time;

/// The message attribute that names a record's stream.
pub const STREAM_ATTRIBUTE: &str = "stream";

/// Rejected records are kept (errors/ retention): compress them well.
const ERRORS_GZIP_LEVEL: u32 = 6;

/// One object the invocation must store, and the messages whose data it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedObject {
    pub key: String,
    pub body: Vec<u8>,
    /// Lines in the object (events, or rejected records).
    pub lines: usize,
    /// Indices into the batch's records of the messages that fed it.
    pub messages: BTreeSet<usize>,
}

/// Counts for one stream in one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StreamCounts {
    pub accepted: usize,
    /// Accepted events whose type is not in the profile's list of known types.
    pub unknown_types: usize,
}

/// What a batch held, for the invocation's log line. Never event contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchStats {
    pub messages: usize,
    pub accepted: usize,
    pub rejected: usize,
    pub streams: BTreeMap<String, StreamCounts>,
    /// Rejected records by reason code.
    pub reasons: BTreeMap<&'static str, usize>,
    pub chunks: usize,
    pub uncompressed_bytes: usize,
    pub staged_bytes: usize,
}

/// Everything one invocation must store (or, from [`BatchPlanner::finish`],
/// everything not yet taken with [`BatchPlanner::take_chunks`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchPlan {
    /// One gzip NDJSON chunk per partition and sub-batch, in sub-batch then
    /// partition order.
    pub chunks: Vec<PlannedObject>,
    /// The rejected records with their reasons, when there are any.
    pub errors: Option<PlannedObject>,
    pub stats: BatchStats,
}

/// One line of an `errors/` file: why a record was refused, where it came
/// from, and its original text, so it can be replayed after a fix.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorRecord<'a> {
    reason: RejectReason,
    detail: &'a str,
    message_id: Option<&'a str>,
    stream: &'a str,
    queue: Option<&'a str>,
    /// Which event of a multi-event message (array element or NDJSON line).
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<Part>,
    rejected_at: &'a str,
    attributes: &'a HashMap<String, String>,
    message_attributes: &'a HashMap<String, SqsMessageAttribute>,
    /// The original text: the whole message body, or the refused part of it.
    body: &'a str,
}

#[derive(Serialize, Clone, Copy)]
struct Part {
    index: usize,
    count: usize,
}

/// The message's `SentTimestamp` (when SQS received it), if it has one.
fn sent_millis(record: &SqsMessage) -> Option<i64> {
    record
        .attributes
        .get("SentTimestamp")
        .and_then(|sent| sent.parse::<i64>().ok())
}

/// The message's `SenderId` (who sent it, as SQS saw it), if it has one.
fn sender_id(record: &SqsMessage) -> Option<&str> {
    record
        .attributes
        .get(SENDER_ID_ATTRIBUTE)
        .map(String::as_str)
}

/// The record's `content-encoding` message attribute (name in any case).
fn content_encoding_of(record: &SqsMessage) -> Option<&str> {
    record
        .message_attributes
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(CONTENT_ENCODING_ATTRIBUTE))
        .map(|(_, attribute)| attribute.string_value.as_deref().unwrap_or_default())
}

/// Decodes, checks and partitions every record, then encodes one chunk per
/// partition and sub-batch and one errors file. `ingest_millis` is the
/// invocation's time. For tools that store a plan whole (errors replay, the
/// benchmark); the batcher stores each sub-batch as it is cut.
pub fn plan_batch(
    config: &Config,
    records: &[SqsMessage],
    ingest_millis: i64,
    request_id: &str,
) -> BatchPlan {
    let mut planner = BatchPlanner::new(config, records, ingest_millis, request_id);
    for index in 0..records.len() {
        planner.plan_message(index);
    }
    planner.finish()
}

/// What a partition costs a sub-batch beside its events: its key, its
/// vectors (grown past what they hold) and its place in the map; a few
/// hundred bytes (tests/batcher_memory.rs). Counted against
/// `sub_batch_bytes` when the partition is opened, so a batch of tiny
/// events for many tenants cannot hold several times the budget.
const PARTITION_HELD_BYTES: usize = 384;

/// What an event costs a sub-batch beside its text: its place in its
/// partition's list.
const EVENT_HELD_BYTES: usize = std::mem::size_of::<HeldEvent<'static>>();

/// Where a held event's compact text is.
#[derive(Clone, Copy)]
enum HeldEvent<'a> {
    /// In the batch itself: a plain body lives as long as the invocation,
    /// so its events are not copied.
    Batch(&'a str),
    /// At `start..end` of the sub-batch's text: copied from a decoded
    /// body (or an SNS envelope, or compacted), which is dropped after its
    /// message.
    Text(u32, u32),
}

/// A partition's accepted events in the current sub-batch, in batch order,
/// which message each came from (as runs of (message index, events)), and
/// the set of those messages.
///
/// The set is built here, while planning, and moved into the chunk whole:
/// building it while encoding would put its small, long-lived nodes in the
/// heap between one partition's compressor and the next, so that each
/// compressor (some 380 KB) no longer fits where the last one was freed
/// and glibc's heap grows by one compressor a partition (the benchmark's
/// batcher went from 38 MB resident to 270 MB).
#[derive(Default)]
struct HeldPartition<'a> {
    events: Vec<HeldEvent<'a>>,
    runs: Vec<(usize, usize)>,
    messages: BTreeSet<usize>,
}

impl<'a> HeldPartition<'a> {
    /// Appends an event of message `index`.
    fn push(&mut self, event: HeldEvent<'a>, index: usize) {
        self.events.push(event);
        match self.runs.last_mut() {
            Some((last, events)) if *last == index => *events += 1,
            _ => {
                self.runs.push((index, 1));
                self.messages.insert(index);
            }
        }
    }
}

/// `event` as a slice of `body` when it is one (a plain body's event, not
/// compacted), so it can be held for the whole invocation without a copy.
fn within<'a>(body: &'a str, event: &str) -> Option<&'a str> {
    let offset = (event.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    body.get(offset..offset.checked_add(event.len())?)
        .filter(|slice| slice.as_ptr() == event.as_ptr())
}

/// The rejected records of a whole invocation: one `errors/` file,
/// compressed as records arrive, and the messages that fed it.
struct Rejected {
    writer: NdjsonGzWriter,
    messages: BTreeSet<usize>,
    count: usize,
    reasons: BTreeMap<&'static str, usize>,
}

impl Rejected {
    fn push(&mut self, line: &ErrorRecord<'_>, index: usize) {
        self.writer
            .push_line(&serde_json::to_string(line).expect("error records serialize"));
        self.messages.insert(index);
        self.count += 1;
        *self.reasons.entry(line.reason.code()).or_default() += 1;
    }
}

/// What does not change while a batch is planned.
struct Batch<'a> {
    config: &'a Config,
    records: &'a [SqsMessage],
    ingest_millis: i64,
    request_id: &'a str,
}

/// The sub-batch being gathered: the compact text of its events, its
/// partitions, the bytes they hold, and its number in the invocation (from
/// 0, part of its chunk keys).
#[derive(Default)]
struct SubBatch<'a> {
    /// Every held event's text, back to back in the order accepted: one
    /// buffer appended to in sequence. A growing buffer a partition instead
    /// scatters thousands of reallocations over the heap (with 1,000
    /// tenants the benchmark's RSS was seven times its heap).
    text: String,
    partitions: BTreeMap<PartitionKey, HeldPartition<'a>>,
    held_bytes: usize,
    number: u32,
}

impl SubBatch<'_> {
    /// Encodes one chunk per partition into `chunks` and starts the next
    /// sub-batch (the text's buffer is kept for it). One partition at a
    /// time, so one compressor is in memory however many partitions there
    /// are.
    fn encode(
        &mut self,
        batch: &Batch<'_>,
        stats: &mut BatchStats,
        chunks: &mut Vec<PlannedObject>,
    ) {
        if self.partitions.is_empty() {
            return;
        }
        let mut provenance_fields = String::new();
        for (partition, held) in std::mem::take(&mut self.partitions) {
            let mut writer = NdjsonGzWriter::with_stored_limit(
                batch.config.staging_gzip_level,
                STAGED_STORED_MAX_BYTES,
            );
            let mut events = held.events.iter();
            for &(index, count) in &held.runs {
                // `<event>\t<ingest millis>\t<message id>` (see
                // shared::provenance): the flusher keeps it beside the
                // archive when a destination asks for `_export` metadata.
                let record = &batch.records[index];
                let provenance = Provenance::new(
                    Some(sent_millis(record).unwrap_or(batch.ingest_millis)),
                    record.message_id.as_deref(),
                );
                provenance_fields.clear();
                provenance.write_fields(&mut provenance_fields);
                for &event in events.by_ref().take(count) {
                    let event = match event {
                        HeldEvent::Batch(text) => text.as_bytes(),
                        HeldEvent::Text(start, end) => {
                            &self.text.as_bytes()[start as usize..end as usize]
                        }
                    };
                    writer.push_line_parts(&[event, b"\t", provenance_fields.as_bytes()]);
                }
            }
            stats.uncompressed_bytes += writer.uncompressed_bytes();
            let lines = writer.lines();
            let body = writer.finish();
            stats.staged_bytes += body.len();
            stats.chunks += 1;
            chunks.push(PlannedObject {
                key: layout::staging_sub_batch_chunk_key(
                    &partition,
                    batch.ingest_millis,
                    batch.request_id,
                    self.number,
                ),
                body,
                lines,
                messages: held.messages,
            });
        }
        self.text.clear();
        self.held_bytes = 0;
        self.number += 1;
    }
}

/// Plans a batch message by message, cutting a sub-batch of chunks each
/// time the accepted events it holds reach the configuration's
/// `sub_batch_bytes`. The caller stores what [`BatchPlanner::take_chunks`]
/// gives after each message, then what [`BatchPlanner::finish`] gives.
/// The keys and bytes depend only on the batch, the configuration, the
/// ingest time and the request id, never on when chunks are taken.
pub struct BatchPlanner<'a> {
    batch: Batch<'a>,
    rejected_at: String,
    sub_batch: SubBatch<'a>,
    /// The decoded body of the message being planned: one buffer for the
    /// whole batch, grown to its largest body, so that decoding message
    /// after message does not allocate and free a body each time (which
    /// fragments the heap: the process then holds far more than it uses).
    decoded: Vec<u8>,
    /// Chunks of the sub-batches cut so far, not yet taken.
    chunks: Vec<PlannedObject>,
    rejected: Rejected,
    stats: BatchStats,
}

impl<'a> BatchPlanner<'a> {
    /// A planner for `records`, received at `ingest_millis` by invocation
    /// `request_id`.
    pub fn new(
        config: &'a Config,
        records: &'a [SqsMessage],
        ingest_millis: i64,
        request_id: &'a str,
    ) -> Self {
        Self {
            batch: Batch {
                config,
                records,
                ingest_millis,
                request_id,
            },
            rejected_at: time::format_rfc3339_millis(ingest_millis),
            sub_batch: SubBatch {
                // Reserved once for the sub-batch (it passes its size by
                // at most one event), not grown by doubling:
                // address space, paged in only as events are copied.
                text: String::with_capacity(config.sub_batch_bytes + config.max_event_bytes),
                ..SubBatch::default()
            },
            decoded: Vec::new(),
            chunks: Vec::new(),
            rejected: Rejected {
                writer: NdjsonGzWriter::new(ERRORS_GZIP_LEVEL),
                messages: BTreeSet::new(),
                count: 0,
                reasons: BTreeMap::new(),
            },
            stats: BatchStats {
                messages: records.len(),
                ..BatchStats::default()
            },
        }
    }

    /// The chunks of every sub-batch cut since the last call (none while
    /// the current one is still filling). A message whose events straddle
    /// two sub-batches is among the `messages` of chunks in both.
    pub fn take_chunks(&mut self) -> Vec<PlannedObject> {
        std::mem::take(&mut self.chunks)
    }

    /// Decodes, checks and routes record `index` (call it for each record,
    /// in order): its events join the current sub-batch, cut whenever the
    /// held events reach `sub_batch_bytes`; what is refused goes to the
    /// errors file. Its decoded body is dropped before this returns.
    pub fn plan_message(&mut self, index: usize) {
        let Self {
            batch,
            rejected_at,
            sub_batch,
            decoded,
            chunks,
            rejected,
            stats,
        } = self;
        let config = batch.config;
        let record = &batch.records[index];
        // A compressed body is decoded first; one that cannot be is refused alone.
        let payload = content_encoding::decode_body_into(
            content_encoding_of(record),
            record.body.as_deref().unwrap_or_default(),
            config.max_decompressed_body_bytes,
            decoded,
        )
        .map(|payload| match payload {
            Decoded::Identity(body) => body,
            Decoded::InBuffer => {
                std::str::from_utf8(decoded).expect("decode_body_into checked it is UTF-8")
            }
        });
        let body = payload.as_ref().map(|body| decode::unwrap_body(body));

        let queue = record
            .event_source_arn
            .as_deref()
            .and_then(|arn| arn.rsplit(':').next());
        let attribute = record
            .message_attributes
            .get(STREAM_ATTRIBUTE)
            .and_then(|attribute| attribute.string_value.as_deref())
            .or(body
                .as_ref()
                .ok()
                .and_then(|body| body.sns_stream.as_deref()));
        let stream = config.stream_for(attribute, queue);
        let mut reject = |rejection: Rejection, text: &str, part: Option<Part>| {
            let line = ErrorRecord {
                reason: rejection.reason,
                detail: &rejection.detail,
                message_id: record.message_id.as_deref(),
                stream,
                queue,
                part,
                rejected_at: rejected_at.as_str(),
                attributes: &record.attributes,
                message_attributes: &record.message_attributes,
                body: text,
            };
            rejected.push(&line, index);
        };
        let original = record.body.as_deref().unwrap_or_default();
        let body = match &body {
            Ok(body) => body,
            Err(rejection) => {
                reject((*rejection).clone(), original, None);
                return;
            }
        };

        let Some(profile) = config.streams.get(stream) else {
            reject(
                Rejection::new(
                    RejectReason::UnknownStream,
                    format!("message attribute `stream` names `{stream}`, which is not configured"),
                ),
                original,
                None,
            );
            return;
        };
        let events = match decode::split_events(&body.payload) {
            Ok(events) => events,
            Err(rejection) => {
                reject(rejection, original, None);
                return;
            }
        };
        let sent_millis = sent_millis(record).unwrap_or(batch.ingest_millis);
        let count = events.len();
        for (position, text) in events.into_iter().enumerate() {
            let part = (count > 1).then_some(Part {
                index: position,
                count,
            });
            if text.len() > config.max_event_bytes {
                let detail = format!(
                    "the event is {} bytes, over the maximum of {}",
                    text.len(),
                    config.max_event_bytes
                );
                reject(
                    Rejection::new(RejectReason::TooLarge, detail),
                    part.map_or(original, |_| text),
                    part,
                );
                continue;
            }
            let fields = match profile.read(text) {
                Ok(fields) => fields,
                Err(rejection) => {
                    // A message of one event is kept whole, byte for byte.
                    reject(rejection, part.map_or(original, |_| text), part);
                    continue;
                }
            };
            if let Some(senders) = &config.senders
                && let Err(rejection) = senders.check(sender_id(record), &fields.tenant)
            {
                reject(rejection, part.map_or(original, |_| text), part);
                continue;
            }
            let hour_millis = match config.partition_by {
                PartitionBy::Ingest => sent_millis,
                PartitionBy::Event => fields.time_millis,
            };
            let key = PartitionKey {
                hour: Hour::containing(hour_millis),
                stream: stream.to_owned(),
                tenant: TenantKey::encode(&fields.tenant),
            };
            let counts = stats.streams.entry(stream.to_owned()).or_default();
            counts.accepted += 1;
            if fields.type_known == Some(false) {
                counts.unknown_types += 1;
            }
            stats.accepted += 1;
            let event = decode::compact(text);
            let held = match sub_batch.partitions.entry(key) {
                Entry::Occupied(held) => held.into_mut(),
                Entry::Vacant(new) => {
                    sub_batch.held_bytes += PARTITION_HELD_BYTES;
                    new.insert(HeldPartition::default())
                }
            };
            let text_len = event.len();
            let event = match within(original, &event) {
                Some(in_batch) => HeldEvent::Batch(in_batch),
                None => {
                    let start = sub_batch.text.len();
                    sub_batch.text.push_str(&event);
                    // The text holds less than SUB_BATCH_BYTES_LIMIT plus
                    // one event.
                    let offset =
                        |at: usize| u32::try_from(at).expect("a sub-batch holds less than 4 GiB");
                    HeldEvent::Text(offset(start), offset(sub_batch.text.len()))
                }
            };
            // A plain body's event counts too, though it is not copied: a
            // sub-batch is cut at the same events whatever their bodies.
            sub_batch.held_bytes += text_len + EVENT_HELD_BYTES;
            held.push(event, index);
            if sub_batch.held_bytes >= config.sub_batch_bytes {
                sub_batch.encode(batch, stats, chunks);
            }
        }
    }

    /// Encodes the last sub-batch and the errors file: everything not yet
    /// taken, and the counts of the whole batch.
    pub fn finish(mut self) -> BatchPlan {
        self.sub_batch
            .encode(&self.batch, &mut self.stats, &mut self.chunks);
        let rejected = self.rejected;
        self.stats.rejected = rejected.count;
        self.stats.reasons = rejected.reasons;
        let ingest_millis = self.batch.ingest_millis;
        let errors = (rejected.writer.lines() > 0).then(|| PlannedObject {
            key: layout::errors_key(
                Hour::containing(ingest_millis),
                ingest_millis,
                self.batch.request_id,
            ),
            lines: rejected.writer.lines(),
            body: rejected.writer.finish(),
            messages: rejected.messages,
        });
        BatchPlan {
            chunks: self.chunks,
            errors,
            stats: self.stats,
        }
    }
}
