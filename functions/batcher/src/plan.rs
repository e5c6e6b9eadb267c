//! Planning a batch: the pure part of the batcher. From the SQS records and
//! the configuration it builds every object the invocation must store, and
//! remembers which messages fed each one, so a failed store fails exactly
//! those messages. No I/O, no clock: the ingest time and request id are
//! inputs, so the same batch gives the same keys and bytes.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};
use serde::Serialize;

use shared::config::{Config, PartitionBy};
use shared::content_encoding::{self, CONTENT_ENCODING_ATTRIBUTE};
use shared::decode::{self, Unwrapped};
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

/// Everything one invocation must store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchPlan {
    /// One gzip NDJSON chunk per partition, in partition order.
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

/// A partition's events in batch order, each with the index of the message
/// it came from, and the set of those indices.
type PartitionEvents<'a> = (Vec<(Cow<'a, str>, usize)>, BTreeSet<usize>);

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
/// partition and one errors file. `ingest_millis` is the invocation's time.
pub fn plan_batch(
    config: &Config,
    records: &[SqsMessage],
    ingest_millis: i64,
    request_id: &str,
) -> BatchPlan {
    let mut stats = BatchStats {
        messages: records.len(),
        ..BatchStats::default()
    };
    let rejected_at = time::format_rfc3339_millis(ingest_millis);
    // A compressed body is decoded first; one that cannot be is refused alone.
    let payloads: Vec<Result<Cow<'_, str>, Rejection>> = records
        .iter()
        .map(|record| {
            content_encoding::decode_body(
                content_encoding_of(record),
                record.body.as_deref().unwrap_or_default(),
                config.max_decompressed_body_bytes,
            )
        })
        .collect();
    let unwrapped: Vec<Result<Unwrapped<'_>, &Rejection>> = payloads
        .iter()
        .map(|payload| payload.as_ref().map(|body| decode::unwrap_body(body)))
        .collect();

    let mut partitions: BTreeMap<PartitionKey, PartitionEvents<'_>> = BTreeMap::new();
    let mut errors = NdjsonGzWriter::new(ERRORS_GZIP_LEVEL);
    let mut error_messages = BTreeSet::new();

    for (index, (record, body)) in records.iter().zip(&unwrapped).enumerate() {
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
                rejected_at: &rejected_at,
                attributes: &record.attributes,
                message_attributes: &record.message_attributes,
                body: text,
            };
            errors.push_line(&serde_json::to_string(&line).expect("error records serialize"));
            error_messages.insert(index);
            stats.rejected += 1;
            *stats.reasons.entry(rejection.reason.code()).or_default() += 1;
        };
        let original = record.body.as_deref().unwrap_or_default();
        let body = match body {
            Ok(body) => body,
            Err(rejection) => {
                reject((*rejection).clone(), original, None);
                continue;
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
            continue;
        };
        let events = match decode::split_events(&body.payload) {
            Ok(events) => events,
            Err(rejection) => {
                reject(rejection, original, None);
                continue;
            }
        };
        let sent_millis = sent_millis(record).unwrap_or(ingest_millis);
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
            let (lines, messages) = partitions.entry(key).or_default();
            lines.push((decode::compact(text), index));
            messages.insert(index);
        }
    }

    // Encoding one partition at a time keeps one compressor in memory,
    // however many partitions the batch touches.
    let chunks = partitions
        .into_iter()
        .map(|(partition, (lines, messages))| {
            let mut writer = NdjsonGzWriter::with_stored_limit(
                config.staging_gzip_level,
                STAGED_STORED_MAX_BYTES,
            );
            let mut staged = String::new();
            for (event, index) in &lines {
                // `<event>\t<ingest millis>\t<message id>` (see
                // shared::provenance): the flusher keeps it beside the
                // archive when a destination asks for `_export` metadata.
                let record = &records[*index];
                let provenance = Provenance::new(
                    Some(sent_millis(record).unwrap_or(ingest_millis)),
                    record.message_id.as_deref(),
                );
                staged.clear();
                staged.push_str(event);
                staged.push('\t');
                provenance.write_fields(&mut staged);
                writer.push_line(&staged);
            }
            stats.uncompressed_bytes += writer.uncompressed_bytes();
            let lines = writer.lines();
            let body = writer.finish();
            stats.staged_bytes += body.len();
            PlannedObject {
                key: layout::staging_chunk_key(&partition, ingest_millis, request_id),
                body,
                lines,
                messages,
            }
        })
        .collect::<Vec<_>>();
    stats.chunks = chunks.len();

    let errors = (errors.lines() > 0).then(|| PlannedObject {
        key: layout::errors_key(Hour::containing(ingest_millis), ingest_millis, request_id),
        lines: errors.lines(),
        body: errors.finish(),
        messages: error_messages,
    });

    BatchPlan {
        chunks,
        errors,
        stats,
    }
}
