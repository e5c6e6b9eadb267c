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
//! `sub_batch_bytes` they are encoded into one sub-batch of staged objects
//! for the caller to store. At any moment the planner holds at most one
//! sub-batch of events, one decoded body, and the objects not yet taken.
//!
//! A sub-batch is stored as one staged object (`shared::staged`) per hour
//! its events fall in, whatever the number of streams and tenants: one
//! segment per (stream, tenant, shard) that holds events. So an invocation
//! PUTs one object per hour it touched (times its sub-batches, which only
//! a batch of more than `sub_batch_bytes` of accepted events has), plus
//! one errors file when it rejected records.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};
use serde::Serialize;

use shared::config::{Config, PartitionBy};
use shared::content_encoding::{self, CONTENT_ENCODING_ATTRIBUTE, Decoded};
use shared::decode;
use shared::encode::NdjsonGzWriter;
use shared::layout;
use shared::partition::{Hour, PartitionKey, TenantKey};
use shared::provenance::Provenance;
use shared::rejection::{RejectReason, Rejection};
use shared::senders::SENDER_ID_ATTRIBUTE;
use shared::staged::{self, StagedWriter};
use shared::time;

/// The message attribute that names a record's stream.
pub const STREAM_ATTRIBUTE: &str = "stream";

/// Rejected records are kept (errors/ retention): compress them well.
const ERRORS_GZIP_LEVEL: u32 = 6;

/// The content type of a staged object: zstd segments and a binary index,
/// not one compressed stream a client could decode by itself.
pub const STAGED_CONTENT_TYPE: &str = "application/octet-stream";

/// The content type of an `errors/` file: gzip NDJSON.
pub const ERRORS_CONTENT_TYPE: &str = "application/gzip";

/// One object the invocation must store, and the messages whose data it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedObject {
    pub key: String,
    pub body: Vec<u8>,
    /// What the body is: [`STAGED_CONTENT_TYPE`] or [`ERRORS_CONTENT_TYPE`].
    pub content_type: &'static str,
    /// Lines in the object (events in all its segments, or rejected records).
    pub lines: usize,
    /// Indices into the batch's records of the messages that fed it (any of
    /// its segments): a failed store fails exactly these.
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
    /// Staged objects planned: one per hour and sub-batch.
    pub staged_objects: usize,
    /// Staged lines' bytes before compression.
    pub uncompressed_bytes: usize,
    /// Staged objects' bytes.
    pub staged_bytes: usize,
}

/// Everything one invocation must store (or, from [`BatchPlanner::finish`],
/// everything not yet taken with [`BatchPlanner::take_objects`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchPlan {
    /// The staged objects: one per hour and sub-batch, in sub-batch then
    /// hour order.
    pub objects: Vec<PlannedObject>,
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

/// Decodes, checks and partitions every record, then encodes one staged
/// object per hour and sub-batch and one errors file. `ingest_millis` is the
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

/// What an event of a partition of several shards costs beside that: its
/// shard.
const SHARD_HELD_BYTES: usize = std::mem::size_of::<u16>();

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
/// which message each came from (as runs of (message index, events)), its
/// shard count, and, when that is more than one, each event's shard
/// (computed while planning, so encoding only groups them).
struct HeldPartition<'a> {
    events: Vec<HeldEvent<'a>>,
    runs: Vec<(usize, usize)>,
    shards: u32,
    /// `events[i]`'s shard; empty for one shard (nothing is hashed).
    event_shards: Vec<u16>,
}

impl<'a> HeldPartition<'a> {
    fn new(shards: u32) -> Self {
        Self {
            events: Vec::new(),
            runs: Vec::new(),
            shards,
            event_shards: Vec::new(),
        }
    }

    /// Appends an event of message `index`; true when it starts a run (the
    /// message had no event just before it in this partition).
    fn push(&mut self, event: HeldEvent<'a>, index: usize) -> bool {
        self.events.push(event);
        match self.runs.last_mut() {
            Some((last, events)) if *last == index => {
                *events += 1;
                false
            }
            _ => {
                self.runs.push((index, 1));
                true
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
/// partitions, the messages that fed each hour, the bytes they hold, and
/// its number in the invocation (from 0, part of its object keys).
#[derive(Default)]
struct SubBatch<'a> {
    /// Every held event's text, back to back in the order accepted: one
    /// buffer appended to in sequence. A growing buffer a partition instead
    /// scatters thousands of reallocations over the heap (with 1,000
    /// tenants the benchmark's RSS was seven times its heap).
    text: String,
    /// Sorted by (hour, stream, tenant): an hour's partitions are
    /// neighbours, in the order its object's segments are written.
    partitions: BTreeMap<PartitionKey, HeldPartition<'a>>,
    /// Hour → the messages whose events fall in it: each hour's object's
    /// `messages`. Built here, while planning, and moved into the object
    /// whole: building sets while encoding puts small, long-lived nodes
    /// in the heap between one compressor and the next, which glibc then
    /// cannot reuse for the next (the benchmark's batcher once went from
    /// 38 MB resident to 270 MB that way).
    hours: BTreeMap<Hour, BTreeSet<usize>>,
    held_bytes: usize,
    number: u32,
}

/// The bytes of a held event whose copied text is in `text`.
fn event_bytes<'t>(event: &HeldEvent<'t>, text: &'t str) -> &'t [u8] {
    match *event {
        HeldEvent::Batch(in_batch) => in_batch.as_bytes(),
        HeldEvent::Text(start, end) => &text.as_bytes()[start as usize..end as usize],
    }
}

/// Writes `provenance_fields` for message `index`: `<ingest
/// millis>\t<message id>` (see shared::provenance), which the flusher keeps
/// beside the archive when a destination asks for `_export` metadata.
fn write_provenance(batch: &Batch<'_>, index: usize, provenance_fields: &mut String) {
    let record = &batch.records[index];
    let provenance = Provenance::new(
        Some(sent_millis(record).unwrap_or(batch.ingest_millis)),
        record.message_id.as_deref(),
    );
    provenance_fields.clear();
    provenance.write_fields(provenance_fields);
}

/// Writes a partition's events into `writer` as staged lines
/// (`<event>\t<provenance>`): one segment per shard that holds events, in
/// shard order, each shard's events in batch order. `order` is scratch
/// space, kept across partitions so that sorting allocates once.
fn write_partition(
    batch: &Batch<'_>,
    text: &str,
    writer: &mut StagedWriter,
    partition: &PartitionKey,
    held: &HeldPartition<'_>,
    order: &mut Vec<(u16, u32, u32)>,
) {
    let mut provenance_fields = String::new();
    let line = |writer: &mut StagedWriter, event: &HeldEvent<'_>, fields: &str| {
        writer.push_line_parts(&[event_bytes(event, text), b"\t", fields.as_bytes()]);
    };
    if held.shards <= 1 {
        writer.begin_segment(&partition.stream, &partition.tenant, 0, 1);
        let mut events = held.events.iter();
        for &(index, count) in &held.runs {
            write_provenance(batch, index, &mut provenance_fields);
            for event in events.by_ref().take(count) {
                line(writer, event, &provenance_fields);
            }
        }
        return;
    }
    // (shard, position in the partition, message): sorted, each shard's
    // events come together and in batch order.
    order.clear();
    let mut position = 0u32;
    for &(index, count) in &held.runs {
        for _ in 0..count {
            order.push((held.event_shards[position as usize], position, index as u32));
            position += 1;
        }
    }
    order.sort_unstable();
    let mut shard = None;
    let mut message = None;
    for &(event_shard, position, index) in order.iter() {
        if shard != Some(event_shard) {
            writer.begin_segment(
                &partition.stream,
                &partition.tenant,
                u32::from(event_shard),
                held.shards,
            );
            shard = Some(event_shard);
        }
        if message != Some(index) {
            write_provenance(batch, index as usize, &mut provenance_fields);
            message = Some(index);
        }
        line(writer, &held.events[position as usize], &provenance_fields);
    }
}

impl SubBatch<'_> {
    /// Encodes one staged object per hour into `objects` and starts the
    /// next sub-batch (the text's buffer is kept for it). One object at a
    /// time, with one zstd context for all its segments, so one compressor
    /// is in memory however many partitions there are.
    fn encode(
        &mut self,
        batch: &Batch<'_>,
        stats: &mut BatchStats,
        objects: &mut Vec<PlannedObject>,
    ) {
        if self.partitions.is_empty() {
            return;
        }
        let mut partitions = std::mem::take(&mut self.partitions).into_iter().peekable();
        let mut order = Vec::new();
        for (hour, messages) in std::mem::take(&mut self.hours) {
            let mut writer = StagedWriter::new(batch.config.staging_zstd_level);
            while let Some((partition, held)) = partitions.next_if(|(p, _)| p.hour == hour) {
                write_partition(
                    batch,
                    &self.text,
                    &mut writer,
                    &partition,
                    &held,
                    &mut order,
                );
            }
            // The last segment counts once it is ended.
            writer.end_segment();
            let (lines, bytes) = writer.segments().iter().fold((0, 0), |(lines, bytes), s| {
                (lines + s.events, bytes + s.bytes)
            });
            let body = writer.finish(hour);
            stats.uncompressed_bytes += bytes as usize;
            stats.staged_bytes += body.len();
            stats.staged_objects += 1;
            objects.push(PlannedObject {
                key: layout::staged_object_key(
                    hour,
                    batch.ingest_millis,
                    batch.request_id,
                    self.number,
                ),
                body,
                content_type: STAGED_CONTENT_TYPE,
                lines: lines as usize,
                messages,
            });
        }
        debug_assert!(
            partitions.next().is_none(),
            "every partition's hour has messages"
        );
        self.text.clear();
        self.held_bytes = 0;
        self.number += 1;
    }
}

/// Plans a batch message by message, cutting a sub-batch of staged objects
/// each time the accepted events it holds reach the configuration's
/// `sub_batch_bytes`. The caller stores what [`BatchPlanner::take_objects`]
/// gives after each message, then what [`BatchPlanner::finish`] gives.
/// The keys and bytes depend only on the batch, the configuration, the
/// ingest time and the request id, never on when objects are taken.
pub struct BatchPlanner<'a> {
    batch: Batch<'a>,
    rejected_at: String,
    sub_batch: SubBatch<'a>,
    /// The decoded body of the message being planned: one buffer for the
    /// whole batch, grown to its largest body, so that decoding message
    /// after message does not allocate and free a body each time (which
    /// fragments the heap: the process then holds far more than it uses).
    decoded: Vec<u8>,
    /// Staged objects of the sub-batches cut so far, not yet taken.
    objects: Vec<PlannedObject>,
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
            objects: Vec::new(),
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

    /// The staged objects of every sub-batch cut since the last call (none
    /// while the current one is still filling). A message whose events
    /// straddle two sub-batches is among the `messages` of objects in both.
    pub fn take_objects(&mut self) -> Vec<PlannedObject> {
        std::mem::take(&mut self.objects)
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
            objects,
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
            let hour = Hour::containing(hour_millis);
            let key = PartitionKey {
                hour,
                stream: stream.to_owned(),
                tenant: TenantKey::encode(&fields.tenant),
            };
            // Looked up by name first: the stream's name is copied once a
            // batch, not once an event.
            if !stats.streams.contains_key(stream) {
                stats
                    .streams
                    .insert(stream.to_owned(), StreamCounts::default());
            }
            let counts = stats
                .streams
                .get_mut(stream)
                .expect("the stream's counts are there or were just inserted");
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
                    let shards = config.shards_for(stream, &new.key().tenant);
                    new.insert(HeldPartition::new(shards))
                }
            };
            // The shard identity is what the flusher de-duplicates on (the
            // profile's id, else the compacted event), so copies of an
            // event share a shard. One shard (the default) hashes nothing.
            if held.shards > 1 {
                let shard = match fields.id.as_deref() {
                    Some(id) => staged::shard_of(id, true, held.shards),
                    None => staged::shard_of(&event, false, held.shards),
                };
                let shard = u16::try_from(shard).expect("shard counts are at most MAX_SHARDS");
                held.event_shards.push(shard);
                sub_batch.held_bytes += SHARD_HELD_BYTES;
            }
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
            if held.push(event, index) {
                sub_batch.hours.entry(hour).or_default().insert(index);
            }
            if sub_batch.held_bytes >= config.sub_batch_bytes {
                sub_batch.encode(batch, stats, objects);
            }
        }
    }

    /// Encodes the last sub-batch and the errors file: everything not yet
    /// taken, and the counts of the whole batch.
    pub fn finish(mut self) -> BatchPlan {
        self.sub_batch
            .encode(&self.batch, &mut self.stats, &mut self.objects);
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
            content_type: ERRORS_CONTENT_TYPE,
            messages: rejected.messages,
        });
        BatchPlan {
            objects: self.objects,
            errors,
            stats: self.stats,
        }
    }
}
