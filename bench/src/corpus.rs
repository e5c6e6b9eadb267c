//! The benchmark's corpus, reproducible from a seed and generated lazily so
//! that no phase holds it whole: Airkit App Events shaped like the seed's
//! `session_start` and audit events (about two app events for one audit
//! event), spread over many tenants, all sent in one hour; then the same
//! events as SQS messages in one of three producer styles, and as the SQS
//! events Lambda delivers to the batcher (at most `BatchSize` records and
//! 6 MB). Beside it, the process phase's corpus: [`LogLines`], generic
//! service logs of about 634 bytes a line, the issue's CPU-target shape.

use std::collections::VecDeque;

use aws_lambda_events::event::sqs::SqsMessageAttribute;
use producer::{Message, PackOptions};
use s3_export::workload::{app_event, audit_event, uuid};
use shared::content_encoding::ContentEncoding;
use shared::profile::{AIRKIT_APP_EVENTS, AIRKIT_AUDIT_EVENT_TYPES, AIRKIT_AUDIT_LOGS};
use shared::time::format_rfc3339_millis;

/// 2026-11-22T10:00:00Z: every event is sent in the hour after this.
pub const HOUR_START: i64 = 1_795_341_600_000;
/// When the messages were sent (SQS `SentTimestamp`).
pub const SENT_MILLIS: i64 = HOUR_START + 30 * 60_000;
pub const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:s3-export-events";
/// Lambda's payload limit for an SQS event (6 MB), less room for the envelope.
pub const MAX_SQS_EVENT_BYTES: usize = 6 * 1024 * 1024 - 1024;
/// The template's default `BatchSize`.
pub const BATCH_SIZE: usize = 1000;

/// One generated event.
pub struct Event {
    pub stream: &'static str,
    pub text: String,
}

/// The corpus: `count` events, generated one at a time.
pub struct Corpus {
    rng: fastrand::Rng,
    tenants: Vec<String>,
    remaining: usize,
    audit_type: usize,
}

impl Corpus {
    pub fn new(count: usize, tenants: usize, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let tenants = (0..tenants.max(1)).map(|_| uuid(&mut rng)).collect();
        Self {
            rng,
            tenants,
            remaining: count,
            audit_type: 0,
        }
    }
}

impl Iterator for Corpus {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.remaining = self.remaining.checked_sub(1)?;
        let tenant = &self.tenants[self.rng.usize(..self.tenants.len())];
        let time = HOUR_START + self.rng.i64(0..3_600_000);
        Some(if self.rng.u8(..3) == 0 {
            let kind = AIRKIT_AUDIT_EVENT_TYPES[self.audit_type % AIRKIT_AUDIT_EVENT_TYPES.len()];
            self.audit_type += 1;
            Event {
                stream: AIRKIT_AUDIT_LOGS,
                text: audit_event(&mut self.rng, tenant, kind, time),
            }
        } else {
            Event {
                stream: AIRKIT_APP_EVENTS,
                text: app_event(&mut self.rng, tenant, time),
            }
        })
    }
}

/// The stream the process phase configures for [`LogLines`] (a generic
/// stream: tenant `/service`, id `/event_id`, time `/timestamp`).
pub const LOG_STREAM: &str = "service-logs";
/// 2026-01-01T00:00:00Z: line `i` happens `i * 37` ms (and up to 36 ms)
/// after this.
pub const LOG_START: i64 = 1_767_225_600_000;
/// The services of [`LogLines`], each a tenant of the generic stream.
pub const LOG_SERVICES: [&str; 6] = [
    "checkout",
    "payments",
    "search",
    "auth",
    "inventory",
    "shipping",
];
const LOG_LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];
const LOG_METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const LOG_STATUSES: [u16; 9] = [200, 200, 200, 201, 204, 301, 400, 404, 500];
const LOG_TIERS: [&str; 3] = ["free", "pro", "enterprise"];
const LOREM: [&str; 19] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
];

/// Generic service logs, one compact JSON object a line of about 634
/// bytes (ids, timestamps, a nested object), seeded: the lines the issue's
/// process-CPU target is measured on (Vector and Fluent Bit read the same
/// shape). Line `i` has `seq` `i`, so a reader can check each was exported
/// once. Every line is of `service` when one is given (one tenant), else
/// of one of [`LOG_SERVICES`] at random.
pub struct LogLines {
    rng: fastrand::Rng,
    next: usize,
    count: usize,
    service: Option<&'static str>,
}

impl LogLines {
    pub fn new(count: usize, seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            next: 0,
            count,
            service: None,
        }
    }

    /// The same lines, every one of them of `service`.
    pub fn of_service(count: usize, seed: u64, service: &'static str) -> Self {
        Self {
            service: Some(service),
            ..Self::new(count, seed)
        }
    }

    fn line(&mut self, seq: usize) -> String {
        let rng = &mut self.rng;
        let millis = LOG_START + seq as i64 * 37 + rng.i64(0..=36);
        let timestamp = format_rfc3339_millis(millis);
        // Microseconds, as loggers that stamp arrival write them.
        let received = format!(
            "{}000Z",
            format_rfc3339_millis(millis + rng.i64(1..=500)).trim_end_matches('Z')
        );
        let (event_id, trace_id) = (uuid4(rng), uuid4(rng));
        let level = pick(rng, &LOG_LEVELS);
        let service = self.service.unwrap_or_else(|| pick(rng, &LOG_SERVICES));
        let message = words(rng, 12..=20).join(" ");
        let method = pick(rng, &LOG_METHODS);
        let path = format!(
            "/api/v{}/{}/{}",
            rng.u8(1..=3),
            pick(rng, &LOG_SERVICES),
            rng.u32(1..=99_999)
        );
        let status = pick(rng, &LOG_STATUSES);
        let latency = ((0.1 + rng.f64() * 2499.9) * 1000.0).round() / 1000.0;
        let ip = format!("10.{}.{}.{}", rng.u8(..), rng.u8(..), rng.u8(1..=254));
        let agent = format!(
            "Mozilla/5.0 (X11; Linux x86_64) bench/{}.{}",
            rng.u8(1..=9),
            rng.u8(0..=99)
        );
        let user = uuid4(rng);
        let tier = pick(rng, &LOG_TIERS);
        let tags = words(rng, 2..=5)
            .iter()
            .map(|tag| format!("\"{tag}\""))
            .collect::<Vec<_>>()
            .join(",");
        // Written out rather than through serde_json: its maps sort keys,
        // and a logger writes its fields in its own order. No value needs
        // escaping.
        format!(
            concat!(
                r#"{{"event_id":"{}","trace_id":"{}","timestamp":"{}","received_at":"{}","#,
                r#""level":"{}","service":"{}","seq":{},"message":"{}","#,
                r#""http":{{"method":"{}","path":"{}","status":{},"latency_ms":{},"#,
                r#""client":{{"ip":"{}","user_agent":"{}"}}}},"#,
                r#""user":{{"id":"{}","tier":"{}"}},"tags":[{}]}}"#
            ),
            event_id,
            trace_id,
            timestamp,
            received,
            level,
            service,
            seq,
            message,
            method,
            path,
            status,
            latency,
            ip,
            agent,
            user,
            tier,
            tags
        )
    }
}

impl Iterator for LogLines {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.next == self.count {
            return None;
        }
        let text = self.line(self.next);
        self.next += 1;
        Some(Event {
            stream: LOG_STREAM,
            text,
        })
    }
}

fn pick<T: Copy>(rng: &mut fastrand::Rng, values: &[T]) -> T {
    values[rng.usize(..values.len())]
}

fn words(rng: &mut fastrand::Rng, count: std::ops::RangeInclusive<usize>) -> Vec<&'static str> {
    let count = rng.usize(count);
    (0..count).map(|_| pick(rng, &LOREM)).collect()
}

/// A random version-4 UUID (RFC 9562: version nibble 4, variant bits 10).
pub fn uuid4(rng: &mut fastrand::Rng) -> String {
    let bits = rng.u128(..) & !(0xf << 76) & !(0b11 << 62) | (0x4 << 76) | (0b10 << 62);
    s3_export::workload::uuid_text(bits)
}

/// How producers put events into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Style {
    /// One event per message.
    One,
    /// Many events per message: NDJSON up to 256 KiB.
    Ndjson,
    /// Many events per message, gzip-compressed (the producer crate's default).
    Gzip,
}

impl Style {
    pub const ALL: [Style; 3] = [Style::One, Style::Ndjson, Style::Gzip];

    pub fn name(self) -> &'static str {
        match self {
            Style::One => "one",
            Style::Ndjson => "ndjson",
            Style::Gzip => "gzip",
        }
    }
}

/// Packed styles pack each stream's events in blocks of about this many
/// NDJSON bytes (a producer flushing its buffer).
const PACK_BLOCK_BYTES: usize = 4 * 1024 * 1024;

/// A message with the NDJSON bytes of the events it carries.
pub struct OutMessage {
    pub message: Message,
    pub event_bytes: usize,
}

/// The corpus as messages of `style`, made with the producer crate: of the
/// Airkit corpus by default, or of any other source of events (the
/// process phase's [`LogLines`]).
pub struct Messages<I = Corpus> {
    corpus: I,
    style: Style,
    ready: VecDeque<OutMessage>,
    /// Packed styles: events waiting per stream (app, audit) and their bytes.
    pending: [(Vec<String>, usize); 2],
}

impl<I: Iterator<Item = Event>> Messages<I> {
    pub fn new(corpus: I, style: Style) -> Self {
        Self {
            corpus,
            style,
            ready: VecDeque::new(),
            pending: Default::default(),
        }
    }

    fn pack(&mut self, slot: usize) {
        let (events, _) = std::mem::take(&mut self.pending[slot]);
        if events.is_empty() {
            return;
        }
        let options = PackOptions {
            encoding: match self.style {
                Style::Gzip => ContentEncoding::Gzip,
                _ => ContentEncoding::Identity,
            },
            stream: (slot == 1).then(|| AIRKIT_AUDIT_LOGS.to_owned()),
            ..PackOptions::default()
        };
        let messages = producer::pack(&events, &options).expect("generated events fit a message");
        let mut index = 0;
        for message in messages {
            let event_bytes = events[index..index + message.events]
                .iter()
                .map(|e| e.len() + 1)
                .sum();
            index += message.events;
            self.ready.push_back(OutMessage {
                message,
                event_bytes,
            });
        }
    }
}

impl<I: Iterator<Item = Event>> Iterator for Messages<I> {
    type Item = OutMessage;

    fn next(&mut self) -> Option<OutMessage> {
        loop {
            if let Some(message) = self.ready.pop_front() {
                return Some(message);
            }
            let Some(event) = self.corpus.next() else {
                self.pack(0);
                self.pack(1);
                return self.ready.pop_front();
            };
            let audit = event.stream == AIRKIT_AUDIT_LOGS;
            if self.style == Style::One {
                let event_bytes = event.text.len() + 1;
                let attributes = if audit {
                    vec![("stream".to_owned(), AIRKIT_AUDIT_LOGS.to_owned())]
                } else {
                    Vec::new()
                };
                return Some(OutMessage {
                    message: Message {
                        body: event.text,
                        attributes,
                        events: 1,
                    },
                    event_bytes,
                });
            }
            let slot = usize::from(audit);
            let (events, bytes) = &mut self.pending[slot];
            *bytes += event.text.len() + 1;
            events.push(event.text);
            if *bytes >= PACK_BLOCK_BYTES {
                self.pack(slot);
            }
        }
    }
}

/// One SQS event as Lambda delivers it, serialized.
pub struct SqsEventBytes {
    pub json: Vec<u8>,
    pub messages: usize,
    pub events: usize,
    pub event_bytes: usize,
}

/// Groups messages into SQS events of at most [`BATCH_SIZE`] records and
/// [`MAX_SQS_EVENT_BYTES`], each record as Lambda builds it.
pub struct SqsEvents<M: Iterator<Item = OutMessage> = Messages> {
    messages: std::iter::Peekable<M>,
    next_id: usize,
    sizes: Vec<SentMessage>,
}

/// One message as SQS bills it and the NDJSON bytes of the events it
/// carries (what Firehose would ingest, uncompressed, for the same events).
#[derive(Debug, Clone, Copy)]
pub struct SentMessage {
    pub size: usize,
    pub event_bytes: usize,
}

impl<M: Iterator<Item = OutMessage>> SqsEvents<M> {
    pub fn new(messages: M) -> Self {
        Self {
            messages: messages.peekable(),
            next_id: 0,
            sizes: Vec::new(),
        }
    }

    /// The messages of everything yielded so far, sized as SQS counts them.
    pub fn take_messages(&mut self) -> Vec<SentMessage> {
        std::mem::take(&mut self.sizes)
    }
}

impl<M: Iterator<Item = OutMessage>> Iterator for SqsEvents<M> {
    type Item = SqsEventBytes;

    fn next(&mut self) -> Option<SqsEventBytes> {
        let mut json = b"{\"Records\":[".to_vec();
        let mut event = SqsEventBytes {
            json: Vec::new(),
            messages: 0,
            events: 0,
            event_bytes: 0,
        };
        while event.messages < BATCH_SIZE {
            let Some(out) = self.messages.peek() else {
                break;
            };
            let record = record(&out.message, self.next_id);
            let bytes = serde_json::to_vec(&record).expect("records serialize");
            if event.messages > 0 && json.len() + bytes.len() + 3 > MAX_SQS_EVENT_BYTES {
                break;
            }
            let out = self.messages.next().expect("peeked");
            if event.messages > 0 {
                json.push(b',');
            }
            json.extend_from_slice(&bytes);
            self.next_id += 1;
            self.sizes.push(SentMessage {
                size: out.message.size(),
                event_bytes: out.event_bytes,
            });
            event.messages += 1;
            event.events += out.message.events;
            event.event_bytes += out.event_bytes;
        }
        if event.messages == 0 {
            return None;
        }
        json.extend_from_slice(b"]}");
        event.json = json;
        Some(event)
    }
}

/// The record Lambda builds for `message`, with SQS's usual attributes.
fn record(message: &Message, number: usize) -> aws_lambda_events::event::sqs::SqsMessage {
    let id = format!("{number:08x}-7c1e-4c6f-9a3e-5b2d4f1a8c90");
    let mut record = batcher::records::sqs_record(&id, &message.body, SENT_MILLIS, QUEUE_ARN);
    // Receipt handles are about 180 characters of base64.
    record.receipt_handle = Some(format!("AQEB{}{id}", "x".repeat(140)));
    record.md5_of_body = Some(format!("{number:032x}"));
    for (name, value) in [
        ("SenderId", "AIDAIENQZJOLO23YVJ4VO"),
        ("ApproximateFirstReceiveTimestamp", "1795343400100"),
    ] {
        record.attributes.insert(name.into(), value.into());
    }
    for (name, value) in &message.attributes {
        let mut attribute = SqsMessageAttribute::default();
        attribute.string_value = Some(value.clone());
        attribute.data_type = Some("String".to_owned());
        record.message_attributes.insert(name.clone(), attribute);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn log_lines_have_the_issues_shape_and_about_634_bytes() {
        let lines: Vec<String> = LogLines::new(2000, 42).map(|event| event.text).collect();
        let mean = lines.iter().map(String::len).sum::<usize>() as f64 / lines.len() as f64;
        assert!((610.0..=660.0).contains(&mean), "mean line {mean} bytes");
        for (seq, line) in lines.iter().enumerate() {
            assert!(!line.contains('\n') && !line.contains(": "), "{line}");
            let event: Value = serde_json::from_str(line).expect(line);
            assert_eq!(event["seq"], seq, "{line}");
            let millis =
                shared::time::parse_timestamp(event["timestamp"].as_str().unwrap()).unwrap();
            let offset = millis - LOG_START - seq as i64 * 37;
            assert!((0..=36).contains(&offset), "{line}");
            let received = event["received_at"].as_str().unwrap();
            assert_eq!(
                received.len(),
                "2026-01-01T00:00:00.000000Z".len(),
                "{line}"
            );
            let delay = shared::time::parse_timestamp(received).unwrap() - millis;
            assert!((1..=500).contains(&delay), "{line}");
            assert!(LOG_SERVICES.contains(&event["service"].as_str().unwrap()));
            for id in ["/event_id", "/trace_id", "/user/id"] {
                let id = event.pointer(id).unwrap().as_str().unwrap();
                assert_eq!((id.len(), &id[14..15]), (36, "4"), "{id}");
                assert!("89ab".contains(&id[19..20]), "{id}");
            }
            let words = event["message"].as_str().unwrap().split(' ').count();
            assert!((12..=20).contains(&words), "{line}");
            let latency = event["http"]["latency_ms"].as_f64().unwrap();
            assert!((0.1..=2500.0).contains(&latency), "{line}");
            assert!(LOG_STATUSES.contains(&(event["http"]["status"].as_u64().unwrap() as u16)));
            let tags = event["tags"].as_array().unwrap().len();
            assert!((2..=5).contains(&tags), "{line}");
            assert_eq!(event.as_object().unwrap().len(), 11, "{line}");
        }
    }

    #[test]
    fn log_lines_are_seeded_and_one_tenant_on_request() {
        let first: Vec<String> = LogLines::new(50, 7).map(|e| e.text).collect();
        let again: Vec<String> = LogLines::new(50, 7).map(|e| e.text).collect();
        assert_eq!(first, again);
        assert_ne!(
            first,
            LogLines::new(50, 8).map(|e| e.text).collect::<Vec<_>>()
        );
        for event in LogLines::of_service(50, 7, "auth") {
            assert_eq!(event.stream, LOG_STREAM);
            let value: Value = serde_json::from_str(&event.text).unwrap();
            assert_eq!(value["service"], "auth");
        }
    }

    #[test]
    fn log_lines_pack_into_ndjson_bodies_of_256_kib_in_6_mb_events() {
        let lines = 12_000;
        let events: Vec<SqsEventBytes> =
            SqsEvents::new(Messages::new(LogLines::new(lines, 1), Style::Ndjson)).collect();
        assert_eq!(events.iter().map(|e| e.events).sum::<usize>(), lines);
        assert!(events.len() > 1);
        for event in &events {
            assert!(event.json.len() <= MAX_SQS_EVENT_BYTES);
            let sqs: Value = serde_json::from_slice(&event.json).unwrap();
            for record in sqs["Records"].as_array().unwrap() {
                let body = record["body"].as_str().unwrap();
                assert!(body.len() <= 256 * 1024, "{}", body.len());
                assert!(record["messageAttributes"].as_object().unwrap().is_empty());
            }
        }
        // Bodies are full but for each stream's last.
        let sqs: Value = serde_json::from_slice(&events[0].json).unwrap();
        let first = sqs["Records"][0]["body"].as_str().unwrap().len();
        assert!(first > 250 * 1024, "{first}");
    }
}
