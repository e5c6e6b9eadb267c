//! The benchmark's corpus, reproducible from a seed and generated lazily so
//! that no phase holds it whole: Airkit App Events shaped like the seed's
//! `session_start` and audit events (about two app events for one audit
//! event), spread over many tenants, all sent in one hour; then the same
//! events as SQS messages in one of three producer styles, and as the SQS
//! events Lambda delivers to the batcher (at most `BatchSize` records and
//! 6 MB).

use std::collections::VecDeque;

use aws_lambda_events::event::sqs::SqsMessageAttribute;
use producer::{Message, PackOptions};
use s3_export::workload::{app_event, audit_event, uuid};
use shared::content_encoding::ContentEncoding;
use shared::profile::{AIRKIT_APP_EVENTS, AIRKIT_AUDIT_EVENT_TYPES, AIRKIT_AUDIT_LOGS};

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

/// The corpus as messages of `style`, made with the producer crate.
pub struct Messages {
    corpus: Corpus,
    style: Style,
    ready: VecDeque<OutMessage>,
    /// Packed styles: events waiting per stream (app, audit) and their bytes.
    pending: [(Vec<String>, usize); 2],
}

impl Messages {
    pub fn new(corpus: Corpus, style: Style) -> Self {
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

impl Iterator for Messages {
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
pub struct SqsEvents {
    messages: std::iter::Peekable<Messages>,
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

impl SqsEvents {
    pub fn new(messages: Messages) -> Self {
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

impl Iterator for SqsEvents {
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
