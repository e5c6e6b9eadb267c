//! The properties the fuzz targets check, shared by the libFuzzer targets
//! (`record.rs`, `batch.rs`) and the workspace test `tests/fuzz_inputs.rs`,
//! which runs them in CI on seeded random inputs: no panic, and
//! - `record`: SNS unwrapping, splitting and validation by the app-events,
//!   audit-logs and a generic profile accept an event only with a tenant that
//!   makes one plain key segment and a compacted line that means the same
//!   JSON, routing fields read as any JSON reader reads them, or reject it
//!   with a reason and a detail;
//! - `batch`: the batcher's plan puts every message in a staged object or
//!   the errors file, every key under its prefix, with the line counts it
//!   claims, each staged object readable through its index.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::OnceLock;

use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};
use batcher::shared::Config;
use batcher::shared::decode::{compact, split_events, unwrap_body};
use batcher::shared::partition::TenantKey;
use batcher::shared::profile::{FieldPath, Profile};

/// Checks one record body (arbitrary bytes, read as SQS reads text).
pub fn check_record(data: &[u8]) {
    let body = String::from_utf8_lossy(data);
    let profiles = [
        Profile::airkit_app_events(),
        Profile::airkit_audit_logs(),
        Profile::generic(
            FieldPath::parse("/tenant/id").unwrap(),
            FieldPath::parse("/ts").unwrap(),
            Some(FieldPath::parse("/id").unwrap()),
            Some(FieldPath::parse("/type").unwrap()),
        ),
    ];
    let unwrapped = unwrap_body(&body);
    let events = match split_events(&unwrapped.payload) {
        Ok(events) => events,
        Err(rejection) => {
            assert!(!rejection.detail.is_empty(), "a rejection without detail");
            return;
        }
    };
    for event in events {
        for profile in &profiles {
            match profile.read(event) {
                Ok(fields) => {
                    // An accepted event is JSON, compacts to one line that
                    // means the same, and routes to a key segment that
                    // cannot leave its prefix.
                    let value: serde_json::Value =
                        serde_json::from_str(event).expect("accepted events are JSON");
                    let line = compact(event);
                    assert!(!line.contains('\n'), "a compacted event spans lines");
                    let again: serde_json::Value =
                        serde_json::from_str(&line).expect("a compacted event is JSON");
                    assert_eq!(value, again, "compacting changed the event");
                    assert!(
                        !fields.tenant.is_empty(),
                        "an accepted event without tenant"
                    );
                    // One routing field, one value: what routes the event
                    // is what any JSON reader sees in it (serde_json's
                    // `Value` keeps a repeated key's last value).
                    let agrees = |path: &FieldPath, read: Option<&str>| {
                        if let Some(serde_json::Value::String(seen)) = value.pointer(path.pointer())
                        {
                            assert_eq!(read, Some(seen.as_str()), "{} of {event}", path);
                        }
                    };
                    agrees(&profile.tenant, Some(&fields.tenant));
                    if let Some(path) = &profile.id {
                        agrees(path, fields.id.as_deref());
                    }
                    if let Some(path) = &profile.event_type {
                        agrees(path, fields.event_type.as_deref());
                    }
                    let segment = TenantKey::encode(&fields.tenant);
                    let segment = segment.as_str();
                    assert!(
                        !segment.is_empty()
                            && !segment.contains('/')
                            && segment != "."
                            && segment != "..",
                        "tenant {:?} became key segment {segment:?}",
                        fields.tenant
                    );
                }
                Err(rejection) => {
                    assert!(!rejection.detail.is_empty(), "a rejection without detail");
                }
            }
        }
    }
}

const STREAMS: [&str; 4] = [
    "airkit-app-events",
    "airkit-audit-logs",
    "custom",
    "nope/../x",
];

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let document =
            r#"{"streams": {"custom": {"profile": "generic", "tenant": "/t", "time": "/ts", "id": "/id"}}}"#;
        Config::from_sources(
            |name| (name == batcher::shared::config::env::EXPORT_BUCKET).then(|| "fuzz-export".to_owned()),
            Some(document),
        )
        .expect("a valid configuration")
    })
}

fn lines_of(gzip: &[u8]) -> usize {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(gzip)
        .read_to_string(&mut text)
        .expect("errors files are gzip UTF-8");
    text.lines().filter(|line| !line.is_empty()).count()
}

/// The events of a staged object, read through its index (every segment's
/// lines checked against what the index says).
fn staged_lines_of(key: &str, object: &[u8]) -> usize {
    batcher::shared::staged::read_object(object)
        .unwrap_or_else(|error| panic!("{key}: {error}"))
        .iter()
        .map(|(_, lines)| lines.len())
        .sum()
}

/// Checks the plan of a batch of up to ten messages, separated by 0xFF.
pub fn check_batch(data: &[u8]) {
    // Messages are separated by 0xFF (never in UTF-8); a message's first
    // byte picks its stream attribute (or none).
    let records: Vec<SqsMessage> = data
        .split(|byte| *byte == 0xFF)
        .take(10)
        .enumerate()
        .map(|(n, raw)| {
            let mut message = SqsMessage::default();
            message.message_id = Some(format!("m{n}"));
            message.event_source_arn = Some("arn:aws:sqs:us-east-1:123456789012:events".into());
            let (selector, body) = raw.split_first().map_or((0, raw), |(s, b)| (*s, b));
            message.body = Some(String::from_utf8_lossy(body).into_owned());
            if let Some(stream) = STREAMS.get(usize::from(selector % 8)) {
                let mut attribute = SqsMessageAttribute::default();
                attribute.data_type = Some("String".into());
                attribute.string_value = Some((*stream).to_owned());
                message
                    .message_attributes
                    .insert("stream".into(), attribute);
            }
            message
        })
        .collect();
    let plan = batcher::plan::plan_batch(config(), &records, 1_795_000_000_000, "fuzz-request");
    let mut covered = BTreeSet::new();
    for object in &plan.objects {
        assert!(
            batcher::shared::layout::parse_staged_object_key(&object.key).is_some(),
            "{}",
            object.key
        );
        assert_eq!(
            staged_lines_of(&object.key, &object.body),
            object.lines,
            "{}",
            object.key
        );
        covered.extend(object.messages.iter().copied());
    }
    if let Some(errors) = &plan.errors {
        assert!(errors.key.starts_with("errors/"), "{}", errors.key);
        assert_eq!(lines_of(&errors.body), errors.lines);
        assert_eq!(errors.lines, plan.stats.rejected);
        covered.extend(errors.messages.iter().copied());
    }
    assert_eq!(
        plan.objects.iter().map(|c| c.lines).sum::<usize>(),
        plan.stats.accepted
    );
    for (index, record) in records.iter().enumerate() {
        assert!(
            covered.contains(&index),
            "message {index} went nowhere: body {:?}, stream {:?}",
            record.body,
            record
                .message_attributes
                .get("stream")
                .and_then(|a| a.string_value.as_deref())
        );
    }
}
