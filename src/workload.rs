//! A realistic mixed workload for local runs and tests, reproducible from a
//! seed: Airkit app events (the seed's `session_start` first), audit events
//! of every documented `EVENT_TYPE` plus an unknown one, several tenants, and
//! every body shape producers send (one object, arrays, NDJSON,
//! pretty-printed, SNS-wrapped), with re-sent duplicates and malformed
//! records mixed in. It also says what the pipeline must make of it.

use std::collections::BTreeMap;

use shared::content_encoding::ContentEncoding;
use shared::profile::{AIRKIT_APP_EVENTS, AIRKIT_AUDIT_EVENT_TYPES, AIRKIT_AUDIT_LOGS};
use shared::time::format_rfc3339_millis;

/// The seed's example App Event, pretty-printed as Airkit documents it.
pub const SESSION_START: &str = include_str!("../tests/fixtures/session_start.json");

/// An hour, in milliseconds: the usual [`WorkloadSpec::spread_millis`].
pub const HOUR_MILLIS: i64 = 3_600_000;

/// What to generate.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Valid events to generate (re-sends come on top).
    pub events: usize,
    /// Distinct tenants (organizations).
    pub tenants: usize,
    /// Seed for every random choice.
    pub seed: u64,
    /// Event times are spread over the `spread_millis` before this epoch
    /// millisecond.
    pub now_millis: i64,
    /// How far back event times go: [`HOUR_MILLIS`] (the hour before
    /// `now_millis`, over two hours' partitions), or the part of the
    /// current hour gone by, for events all of the hour still open (at
    /// least 1).
    pub spread_millis: i64,
    /// Which streams the events (and the malformed records) belong to.
    pub streams: StreamMix,
}

/// The streams a workload generates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamMix {
    /// Airkit App Events only (the default stream, no `stream` attribute).
    App,
    /// Airkit Audit Logs only (`stream` attribute `airkit-audit-logs`).
    Audit,
    /// Both: about two app events for one audit event.
    #[default]
    Both,
}

/// One SQS message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub body: String,
    /// The `stream` message attribute, when the message carries one.
    pub stream: Option<String>,
    /// How the body is encoded (the `content-encoding` attribute when not
    /// identity).
    pub encoding: ContentEncoding,
    /// The body's records, each on one line as an NDJSON producer would
    /// send it (valid events compacted, malformed records as they are), so
    /// the workload can be repacked in another producer style.
    pub records: Vec<String>,
}

impl OutgoingMessage {
    /// The message as the producer crate sends it: its body, and its
    /// `stream` and `content-encoding` attributes when it has them.
    pub fn to_message(&self) -> producer::pack::Message {
        let mut attributes = Vec::new();
        if let Some(stream) = &self.stream {
            attributes.push((producer::pack::STREAM_ATTRIBUTE.to_owned(), stream.clone()));
        }
        if self.encoding != ContentEncoding::Identity {
            attributes.push((
                shared::content_encoding::CONTENT_ENCODING_ATTRIBUTE.to_owned(),
                self.encoding.name().to_owned(),
            ));
        }
        producer::pack::Message {
            body: self.body.clone(),
            attributes,
            events: self.records.len(),
        }
    }
}

/// How the producers shape their messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProducerStyle {
    /// Every body shape producers send: one object, arrays, NDJSON,
    /// pretty-printed, SNS-wrapped; a few events a message.
    #[default]
    Mixed,
    /// NDJSON messages of up to 256 KiB per stream, as the producer crate packs them.
    Ndjson,
    /// The same, gzip-compressed and base64-encoded (`content-encoding: gzip`).
    Gzip,
}

/// The workload's messages as `style` sends them. Packed styles keep every
/// record, in order and once (re-sent messages' records again), in
/// messages of one stream each, so the expected outcome does not change.
/// Where a packed message starts depends on how the records compress, so
/// that a message starts with a malformed record that is not JSON by
/// itself happens by chance (the batcher once refused such a message of
/// 1,190 valid events whole, in a local run at a million events): the
/// first such record of each stream always starts a message, so every
/// packed run shows that each record of such a message is judged alone.
pub fn messages_for(
    workload: &Workload,
    style: ProducerStyle,
) -> Result<Vec<OutgoingMessage>, producer::pack::PackError> {
    let encoding = match style {
        ProducerStyle::Mixed => return Ok(workload.messages.clone()),
        ProducerStyle::Ndjson => ContentEncoding::Identity,
        ProducerStyle::Gzip => ContentEncoding::Gzip,
    };
    let mut by_stream: BTreeMap<Option<&String>, Vec<&str>> = BTreeMap::new();
    for message in &workload.messages {
        by_stream
            .entry(message.stream.as_ref())
            .or_default()
            .extend(message.records.iter().map(String::as_str));
    }
    let mut packed = Vec::new();
    for (stream, records) in by_stream {
        let options = producer::pack::PackOptions {
            encoding,
            stream: stream.cloned(),
            ..producer::pack::PackOptions::default()
        };
        let broken = records
            .iter()
            .position(|record| !is_json_value(record))
            .unwrap_or(records.len());
        for part in [&records[..broken], &records[broken..]] {
            let mut start = 0;
            for message in producer::pack::pack(part, &options)? {
                packed.push(OutgoingMessage {
                    body: message.body,
                    stream: stream.cloned(),
                    encoding,
                    records: part[start..start + message.events]
                        .iter()
                        .map(|record| (*record).to_owned())
                        .collect(),
                });
                start += message.events;
            }
        }
    }
    Ok(packed)
}

/// Whether `text` is one whole JSON value by itself.
fn is_json_value(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// What the pipeline must make of a workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Every valid event line, as it must appear compacted, per
    /// `(stream, tenant)`; a re-sent message contributes its lines again.
    pub lines: BTreeMap<(String, String), Vec<String>>,
    /// Rejected records, by reason code.
    pub rejected: BTreeMap<&'static str, usize>,
    /// Distinct valid events (duplicates counted once).
    pub distinct_events: usize,
    /// Messages that are exact re-sends of earlier ones.
    pub resent_messages: usize,
}

/// A generated workload and what it must produce.
#[derive(Debug, Clone)]
pub struct Workload {
    pub messages: Vec<OutgoingMessage>,
    pub expected: Expected,
}

/// Generates the workload described by `spec`.
pub fn generate(spec: &WorkloadSpec) -> Workload {
    let mut rng = fastrand::Rng::with_seed(spec.seed);
    let tenants: Vec<String> = (0..spec.tenants.max(1)).map(|_| uuid(&mut rng)).collect();
    let mut messages = Vec::new();
    let mut expected = Expected::default();

    // The seed's own example, exactly as documented, comes first.
    let mut made = 0usize;
    if spec.streams != StreamMix::Audit && spec.events > 0 {
        let seed_tenant = "482f2a38-8e9d-4329-b2a0-e97d5bc05d36".to_owned();
        push_valid(
            &mut messages,
            &mut expected,
            OutgoingMessage {
                body: SESSION_START.to_owned(),
                stream: None,
                encoding: ContentEncoding::Identity,
                records: vec![compact_json(SESSION_START)],
            },
            vec![(AIRKIT_APP_EVENTS, seed_tenant, compact_json(SESSION_START))],
        );
        made = 1;
    }
    // Malformed records are audit-shaped (and sent to that stream) only when
    // the workload has no app events.
    let audit_rejects = spec.streams == StreamMix::Audit;

    let mut audit_type = 0usize;
    while made < spec.events {
        let group = (1 + rng.usize(..4)).min(spec.events - made);
        let audit = match spec.streams {
            StreamMix::Both => rng.u8(..3) == 0,
            StreamMix::App => false,
            StreamMix::Audit => true,
        };
        let tenant = &tenants[rng.usize(..tenants.len())];
        let events: Vec<String> = (0..group)
            .map(|_| {
                let spread = spec.spread_millis.max(1);
                let time = spec.now_millis - spread + rng.i64(0..spread);
                if audit {
                    // Every documented type in turn, and now and then one
                    // that is not documented (counted, never refused).
                    let kind = if audit_type % 47 == 46 {
                        "brand_new_audit_type"
                    } else {
                        AIRKIT_AUDIT_EVENT_TYPES[audit_type % 47 % 45]
                    };
                    audit_type += 1;
                    audit_event(&mut rng, tenant, kind, time)
                } else {
                    app_event(&mut rng, tenant, time)
                }
            })
            .collect();
        made += group;
        let stream = if audit {
            AIRKIT_AUDIT_LOGS
        } else {
            AIRKIT_APP_EVENTS
        };
        let body = match (group, rng.u8(..5)) {
            (1, 0) => pretty(&events[0]),
            (1, 1) => sns_envelope(&events[0], &mut rng),
            (1, _) => events[0].clone(),
            (_, 0 | 1) => format!("[{}]", events.join(",")),
            (_, 2) => format!("[\n  {}\n]", events.join(",\n  ")),
            _ => events.join("\n") + "\n",
        };
        let message = OutgoingMessage {
            body,
            stream: audit.then(|| AIRKIT_AUDIT_LOGS.to_owned()),
            encoding: ContentEncoding::Identity,
            records: events.clone(),
        };
        let lines: Vec<_> = events
            .into_iter()
            .map(|line| (stream, tenant.clone(), line))
            .collect();
        push_valid(&mut messages, &mut expected, message.clone(), lines.clone());
        // A producer that sends twice: the same message again, now and then.
        if rng.u8(..20) == 0 {
            push_valid(&mut messages, &mut expected, message, lines);
            expected.resent_messages += 1;
            expected.distinct_events -= group;
        }
        // Malformed records now and then, each a different way.
        if rng.u8(..25) == 0 {
            let kind = rng.u8(..5);
            let (body, reason) = malformed_kind(kind, tenant, spec.now_millis, audit_rejects);
            messages.push(rejected_message(body, audit_rejects));
            *expected.rejected.entry(reason).or_default() += 1;
        }
    }
    // At least one of each rejection, so every path shows in a local run.
    for n in 0..5 {
        let (body, reason) = malformed_kind(n, &tenants[0], spec.now_millis, audit_rejects);
        messages.push(rejected_message(body, audit_rejects));
        *expected.rejected.entry(reason).or_default() += 1;
    }
    Workload { messages, expected }
}

fn push_valid(
    messages: &mut Vec<OutgoingMessage>,
    expected: &mut Expected,
    message: OutgoingMessage,
    lines: Vec<(&'static str, String, String)>,
) {
    expected.distinct_events += lines.len();
    for (stream, tenant, line) in lines {
        expected
            .lines
            .entry((stream.to_owned(), tenant))
            .or_default()
            .push(line);
    }
    messages.push(message);
}

fn rejected_message(body: String, audit: bool) -> OutgoingMessage {
    OutgoingMessage {
        records: vec![body.clone()],
        body,
        stream: audit.then(|| AIRKIT_AUDIT_LOGS.to_owned()),
        encoding: ContentEncoding::Identity,
    }
}

/// A malformed record of kind `kind` (0 to 4), and the reason it must be
/// rejected with: app-event-shaped, or audit-shaped when `audit`.
fn malformed_kind(kind: u8, tenant: &str, now_millis: i64, audit: bool) -> (String, &'static str) {
    if audit {
        return malformed_audit(kind, tenant, now_millis);
    }
    let time = format_rfc3339_millis(now_millis - 60_000);
    match kind {
        0 => (
            format!(r#"{{"organizationId": "{tenant}", "eventTime": "#),
            "not_json",
        ),
        1 => (r#""session_start""#.to_owned(), "not_an_object"),
        2 => (
            format!(r#"{{"eventTime":"{time}","type":"session_start","kind":"Session"}}"#),
            "missing_field",
        ),
        3 => (
            format!(
                r#"{{"organizationId":"{tenant}","eventTime":"yesterday-ish","type":"session_start"}}"#
            ),
            "bad_time",
        ),
        _ => (
            format!(
                r#"{{"organizationId":"{tenant}","eventTime":"{time}","type":"session_end","sessionId":12345}}"#
            ),
            "wrong_type",
        ),
    }
}

fn malformed_audit(kind: u8, tenant: &str, now_millis: i64) -> (String, &'static str) {
    let time = zone_less(now_millis - 60_000);
    match kind {
        0 => (
            format!(r#"{{"ORGANIZATION_ID": "{tenant}", "EVENT_TIME": "#),
            "not_json",
        ),
        1 => (r#""user_login""#.to_owned(), "not_an_object"),
        2 => (
            format!(
                r#"{{"EVENT_ID":"e-missing-org","EVENT_TIME":"{time}","EVENT_TYPE":"user_login"}}"#
            ),
            "missing_field",
        ),
        3 => (
            format!(
                r#"{{"ORGANIZATION_ID":"{tenant}","EVENT_ID":"e-bad-time","EVENT_TIME":"yesterday-ish","EVENT_TYPE":"user_login"}}"#
            ),
            "bad_time",
        ),
        _ => (
            format!(
                r#"{{"ORGANIZATION_ID":"","EVENT_ID":"e-empty-org","EVENT_TIME":"{time}","EVENT_TYPE":"user_login"}}"#
            ),
            "wrong_type",
        ),
    }
}

/// `2026-11-22 10:15:02.113`: the audit logs' zone-less form (UTC).
fn zone_less(millis: i64) -> String {
    format_rfc3339_millis(millis)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

/// One Airkit App Event of `tenant` at `time` (epoch ms), shaped like the
/// seed's `session_start` (about 650 bytes), with random ids from `rng`.
pub fn app_event(rng: &mut fastrand::Rng, tenant: &str, time: i64) -> String {
    const TYPES: [&str; 6] = [
        "session_start",
        "session_end",
        "step_enter",
        "action_run",
        "custom_metric",
        "app_published",
    ];
    let kind = TYPES[rng.usize(..TYPES.len())];
    let platform = kind == "app_published";
    let schema = format!("/element/event2/session/{kind}.json");
    let event_id = uuid(rng);
    serde_json::json!({
        "organizationId": tenant,
        "eventTime": iso_micros(time, rng),
        "appId": uuid(rng),
        "branchId": uuid(rng),
        "sessionId": if platform { serde_json::Value::Null } else { uuid(rng).into() },
        "deployId": uuid(rng),
        "type": kind,
        "actorId": uuid(rng),
        "sourceRuntime": "MANAGER",
        "sourceDetail": "INIT",
        "appEventSchema": schema,
        "appEventId": event_id,
        "ipAddresses": [format!("52.9.{}.{}", rng.u8(..), rng.u8(..))],
        "billingCode": "Journey",
        "kind": if platform { "Platform" } else { "Session" },
        "defaultMetrics": { schema.clone(): { event_id: { "count": 1 } } },
    })
    .to_string()
}

/// One audit log event of `tenant`, `EVENT_TYPE` `kind`, at `time` (epoch
/// ms, written zone-less), with random ids from `rng`.
pub fn audit_event(rng: &mut fastrand::Rng, tenant: &str, kind: &str, time: i64) -> String {
    let zone_less = zone_less(time);
    serde_json::json!({
        "ORGANIZATION_ID": tenant,
        "EVENT_ID": uuid(rng),
        "EVENT_YEAR": &zone_less[..4],
        "EVENT_DATE": &zone_less[..10],
        "EVENT_TIME": zone_less,
        "USER_ID": uuid(rng),
        "ROOT_SCOPE_USER_ID": uuid(rng),
        "APP_ID": uuid(rng),
        "RESOURCE_TYPE": "app",
        "SERVICE": "studio",
        "LOGIN_TYPE": "password",
        "EVENT_TYPE": kind,
    })
    .to_string()
}

fn sns_envelope(message: &str, rng: &mut fastrand::Rng) -> String {
    serde_json::json!({
        "Type": "Notification",
        "MessageId": uuid(rng),
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:s3-export-events",
        "Message": message,
        "Timestamp": "2022-11-19T23:23:17.000Z",
        "SignatureVersion": "1",
    })
    .to_string()
}

fn pretty(event: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(event).expect("generated JSON");
    serde_json::to_string_pretty(&value).expect("serializes")
}

/// The one-line form of a JSON text, as the batcher writes it.
pub fn compact_json(text: &str) -> String {
    shared::decode::compact(text.trim()).into_owned()
}

fn iso_micros(millis: i64, rng: &mut fastrand::Rng) -> String {
    let base = format_rfc3339_millis(millis);
    format!("{}{:03}Z", base.trim_end_matches('Z'), rng.u16(..1000))
}

/// A random UUID-shaped string from `rng`.
pub fn uuid(rng: &mut fastrand::Rng) -> String {
    uuid_text(rng.u128(..))
}

/// 128 bits in the UUID text form (8-4-4-4-12 lowercase hex digits).
pub fn uuid_text(bits: u128) -> String {
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(events: usize) -> WorkloadSpec {
        WorkloadSpec {
            events,
            tenants: 3,
            seed: 7,
            now_millis: 1_700_000_000_000,
            spread_millis: HOUR_MILLIS,
            streams: StreamMix::Both,
        }
    }

    #[test]
    fn one_stream_workloads_hold_only_that_stream() {
        for (mix, stream) in [
            (StreamMix::App, AIRKIT_APP_EVENTS),
            (StreamMix::Audit, AIRKIT_AUDIT_LOGS),
        ] {
            let workload = generate(&WorkloadSpec {
                streams: mix,
                ..spec(200)
            });
            assert_eq!(workload.expected.distinct_events, 200);
            assert!(workload.expected.lines.keys().all(|(s, _)| s == stream));
            let attribute = (mix == StreamMix::Audit).then(|| AIRKIT_AUDIT_LOGS.to_owned());
            assert!(workload.messages.iter().all(|m| m.stream == attribute));
            assert_eq!(workload.expected.rejected.len(), 5, "{mix:?}");
        }
    }

    #[test]
    fn same_seed_same_workload() {
        assert_eq!(generate(&spec(300)).messages, generate(&spec(300)).messages);
    }

    #[test]
    fn packed_styles_carry_every_record_once_in_order_per_stream() {
        let workload = generate(&spec(3000));
        let records_of = |messages: &[OutgoingMessage], stream: Option<&str>| -> Vec<String> {
            messages
                .iter()
                .filter(|m| m.stream.as_deref() == stream)
                .flat_map(|m| m.records.clone())
                .collect()
        };
        for style in [ProducerStyle::Ndjson, ProducerStyle::Gzip] {
            let packed = messages_for(&workload, style).unwrap();
            assert!(
                packed.len() * 20 < workload.messages.len(),
                "{style:?}: {} messages for {}",
                packed.len(),
                workload.messages.len()
            );
            for stream in [None, Some(AIRKIT_AUDIT_LOGS)] {
                assert_eq!(
                    records_of(&packed, stream),
                    records_of(&workload.messages, stream),
                    "{style:?} {stream:?}"
                );
            }
            for message in &packed {
                let body = shared::content_encoding::decode_body(
                    Some(message.encoding.name()),
                    &message.body,
                    usize::MAX,
                )
                .unwrap();
                assert_eq!(body, message.records.join("\n") + "\n");
                assert!(message.body.len() <= producer::pack::SQS_MAX_MESSAGE_BYTES);
                // The batcher judges each record alone, whatever starts
                // the message, so the expected outcome holds.
                assert_eq!(
                    shared::decode::split_events(&body).unwrap(),
                    message.records.iter().map(|r| r.trim()).collect::<Vec<_>>(),
                    "{style:?}: a message starting {:?}",
                    &message.records[0]
                );
            }
            assert!(
                packed
                    .iter()
                    .any(|m| m.records.len() > 1 && !is_json_value(&m.records[0])),
                "{style:?}: a packed message starts with a record that is not JSON by itself"
            );
        }
        assert_eq!(
            messages_for(&workload, ProducerStyle::Mixed).unwrap(),
            workload.messages
        );
    }

    #[test]
    fn event_times_stay_within_the_spread() {
        let now = 1_700_000_000_000;
        for spread in [HOUR_MILLIS, 90_000] {
            let workload = generate(&WorkloadSpec {
                streams: StreamMix::App,
                now_millis: now,
                spread_millis: spread,
                ..spec(300)
            });
            let times: Vec<i64> = workload
                .expected
                .lines
                .values()
                .flatten()
                .filter(|line| **line != compact_json(SESSION_START))
                .map(|line| {
                    let event: serde_json::Value = serde_json::from_str(line).unwrap();
                    shared::time::parse_timestamp(event["eventTime"].as_str().unwrap()).unwrap()
                })
                .collect();
            assert!(times.len() >= 300 - 1);
            assert!(
                times.iter().all(|t| (now - spread..now).contains(t)),
                "{spread}"
            );
            // Spread over the whole range, not bunched at one end.
            let earliest = *times.iter().min().unwrap();
            assert!(earliest < now - spread / 2, "{spread}: {earliest}");
        }
    }

    #[test]
    fn counts_add_up() {
        let workload = generate(&spec(500));
        let lines: usize = workload.expected.lines.values().map(Vec::len).sum();
        assert!(lines >= 500);
        assert_eq!(workload.expected.distinct_events, 500);
        assert!(workload.expected.rejected.len() >= 5);
    }
}
