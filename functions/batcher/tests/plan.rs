//! The batcher's planning, without AWS: what each batch turns into. Staged
//! objects are read back through `shared::staged` (index, then each
//! segment's zstd frame), errors files through gzip.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use aws_lambda_events::event::sqs::SqsMessage;
use batcher::records::{sqs_record, with_content_encoding, with_stream};
use batcher::{BatchPlanner, plan_batch};
use flate2::read::GzDecoder;
use serde_json::Value;
use shared::Config;
use shared::content_encoding::{ContentEncoding, encode_body};
use shared::partition::TenantKey;
use shared::staged::{self, Segment};

const SENT_MILLIS: i64 = 1_668_900_197_000; // 2022-11-19T23:23:17Z
const INGEST_MILLIS: i64 = 1_668_900_200_000;
const SESSION_START_PRETTY: &str = include_str!("../../../tests/fixtures/session_start.json");

fn config(document: Option<&str>) -> Config {
    Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| "exports".to_owned()),
        document,
    )
    .unwrap()
}

fn message(id: &str, body: &str) -> SqsMessage {
    sqs_record(
        id,
        body,
        SENT_MILLIS,
        "arn:aws:sqs:us-east-1:123456789012:events",
    )
}

fn app_event(tenant: &str, n: usize) -> String {
    format!(
        r#"{{"organizationId":"{tenant}","eventTime":"2022-11-19T23:{:02}:00Z","appId":"a","sessionId":"s{n}","type":"session_start","kind":"Session"}}"#,
        n % 60
    )
}

fn audit_event(tenant: &str, id: &str, kind: &str) -> String {
    format!(
        r#"{{"ORGANIZATION_ID":"{tenant}","EVENT_ID":"{id}","EVENT_TIME":"2022-11-19 23:40:02.123","EVENT_TYPE":"{kind}","USER_ID":"u1"}}"#
    )
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    GzDecoder::new(bytes).read_to_string(&mut text).unwrap();
    text
}

/// A staged object's segments, each with its staged lines (event and
/// provenance), read through its index.
fn segments(object: &batcher::PlannedObject) -> Vec<(Segment, Vec<String>)> {
    assert_eq!(object.content_type, "application/octet-stream");
    staged::read_object(&object.body).unwrap_or_else(|e| panic!("{}: {e}", object.key))
}

/// A segment's partition as `stream/tenant`.
fn partition_of(segment: &Segment) -> String {
    format!("{}/{}", segment.stream, segment.tenant)
}

/// The staged lines as written, every segment in order: each event with
/// its provenance.
fn staged_lines(object: &batcher::PlannedObject) -> Vec<String> {
    segments(object)
        .into_iter()
        .flat_map(|(_, lines)| lines)
        .collect()
}

/// The event of a staged line, without its provenance.
fn event_of(line: &str) -> String {
    shared::provenance::split_staged_line(line).0.to_owned()
}

/// The staged events of every segment in order, without their provenance.
fn lines(object: &batcher::PlannedObject) -> Vec<String> {
    staged_lines(object).iter().map(|l| event_of(l)).collect()
}

/// The lines of an errors file.
fn error_lines(object: &batcher::PlannedObject) -> Vec<String> {
    assert_eq!(object.content_type, "application/gzip");
    let text = gunzip(&object.body);
    assert!(text.is_empty() || text.ends_with('\n'), "final newline");
    text.lines().map(str::to_owned).collect()
}

#[test]
fn every_event_is_staged_with_its_message_id_and_sent_time() {
    let mut unsent = message("m2", &app_event("t1", 2));
    unsent.attributes.remove("SentTimestamp");
    let records = vec![
        message(
            "m1",
            &format!("{}\n{}", app_event("t1", 0), app_event("t1", 1)),
        ),
        unsent,
    ];
    let plan = plan_batch(&config(None), &records, INGEST_MILLIS, "r");
    assert_eq!(
        staged_lines(&plan.objects[0]),
        vec![
            format!("{}\t{SENT_MILLIS}\tm1", app_event("t1", 0)),
            format!("{}\t{SENT_MILLIS}\tm1", app_event("t1", 1)),
            // Without a SentTimestamp: the invocation's time.
            format!("{}\t{INGEST_MILLIS}\tm2", app_event("t1", 2)),
        ]
    );
}

#[test]
fn seed_session_start_is_one_compact_line_with_fields_unchanged() {
    let plan = plan_batch(
        &config(None),
        &[message("m1", SESSION_START_PRETTY)],
        INGEST_MILLIS,
        "req-1",
    );
    assert_eq!(plan.objects.len(), 1);
    let object = &plan.objects[0];
    assert_eq!(
        object.key,
        "staging/2022-11-19/23/1668900200000-req-1.staged"
    );
    let read = segments(object);
    assert_eq!(read.len(), 1);
    assert_eq!(
        partition_of(&read[0].0),
        "airkit-app-events/482f2a38-8e9d-4329-b2a0-e97d5bc05d36"
    );
    assert_eq!((read[0].0.shard, read[0].0.shards), (0, 1));
    let lines = lines(object);
    assert_eq!(lines.len(), 1);
    let exported: Value = serde_json::from_str(&lines[0]).unwrap();
    let sent: Value = serde_json::from_str(SESSION_START_PRETTY).unwrap();
    assert_eq!(exported, sent);
    assert!(!lines[0].contains(": ") && !lines[0].contains('\n'));
    assert!(
        lines[0].starts_with(r#"{"organizationId":"482f2a38"#),
        "key order kept"
    );
    assert!(plan.errors.is_none());
}

#[test]
fn compact_event_bytes_are_kept_as_sent() {
    let sent =
        r#"{"organizationId": "o1", "eventTime": "2022-11-19T23:23:16Z", "type": "x", "n": 1.50}"#;
    let plan = plan_batch(&config(None), &[message("m1", sent)], INGEST_MILLIS, "r");
    assert_eq!(lines(&plan.objects[0]), vec![sent.to_owned()]);
}

#[test]
fn events_are_grouped_by_stream_tenant_and_hour() {
    let records = vec![
        message("m1", &app_event("t1", 1)),
        message("m2", &app_event("t2", 2)),
        message("m3", &app_event("t1", 3)),
        with_stream(
            message("m4", &audit_event("t1", "e1", "user_login")),
            "airkit-audit-logs",
        ),
    ];
    let plan = plan_batch(&config(None), &records, INGEST_MILLIS, "r");
    assert_eq!(plan.objects.len(), 1, "one object for the hour");
    let object = &plan.objects[0];
    let summary: Vec<(String, u64)> = segments(object)
        .iter()
        .map(|(segment, lines)| {
            assert_eq!(segment.events, lines.len() as u64);
            (partition_of(segment), segment.events)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("airkit-app-events/t1".to_owned(), 2),
            ("airkit-app-events/t2".to_owned(), 1),
            ("airkit-audit-logs/t1".to_owned(), 1),
        ]
    );
    assert_eq!(object.lines, 4);
    assert_eq!(
        object.messages.iter().copied().collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        lines(object),
        vec![
            app_event("t1", 1),
            app_event("t1", 3),
            app_event("t2", 2),
            audit_event("t1", "e1", "user_login"),
        ]
    );
    assert_eq!(plan.stats.accepted, 4);
    assert_eq!(plan.stats.streams["airkit-app-events"].accepted, 3);
}

#[test]
fn array_ndjson_and_sns_bodies_give_each_event_a_line() {
    let array = format!("[{}, {}]", app_event("t1", 1), app_event("t1", 2));
    let ndjson = format!("{}\n{}\n", app_event("t1", 3), app_event("t1", 4));
    let sns = serde_json::json!({
        "Type": "Notification",
        "MessageId": "sns-1",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:events",
        "Message": app_event("t1", 5),
        "Timestamp": "2022-11-19T23:23:17.000Z",
    })
    .to_string();
    let records = vec![
        message("m1", &array),
        message("m2", &ndjson),
        message("m3", &sns),
    ];
    let plan = plan_batch(&config(None), &records, INGEST_MILLIS, "r");
    assert_eq!(plan.objects.len(), 1);
    let expected: Vec<String> = (1..=5).map(|n| app_event("t1", n)).collect();
    assert_eq!(lines(&plan.objects[0]), expected);
}

#[test]
fn stream_comes_from_attribute_then_queue_then_default() {
    let config = config(Some(r#"{"queues":{"audit-events":"airkit-audit-logs"}}"#));
    let mut from_queue = message("m1", &audit_event("t1", "e1", "user_login"));
    from_queue.event_source_arn = Some("arn:aws:sqs:us-east-1:123456789012:audit-events".into());
    let from_default = message("m2", &app_event("t1", 1));
    let plan = plan_batch(&config, &[from_queue, from_default], INGEST_MILLIS, "r");
    let streams: Vec<String> = segments(&plan.objects[0])
        .into_iter()
        .map(|(segment, _)| segment.stream)
        .collect();
    assert_eq!(streams, vec!["airkit-app-events", "airkit-audit-logs"]);
}

#[test]
fn every_rejection_reason_is_recorded_with_its_original_text() {
    let config = config(Some(r#"{"maxEventBytes": 2000}"#));
    let big = format!(
        r#"{{"organizationId":"t1","eventTime":"2022-11-19T23:00:00Z","type":"x","pad":"{}"}}"#,
        "p".repeat(2100)
    );
    let cases: Vec<(SqsMessage, &str)> = vec![
        (
            message("not-json", "{\"organizationId\": \"x\", "),
            "not_json",
        ),
        (message("not-object", "42"), "not_an_object"),
        (
            message(
                "missing",
                r#"{"eventTime":"2022-11-19T23:00:00Z","type":"x"}"#,
            ),
            "missing_field",
        ),
        (
            message(
                "wrong-type",
                r#"{"organizationId":7.5,"eventTime":"2022-11-19T23:00:00Z","type":"x"}"#,
            ),
            "wrong_type",
        ),
        (
            message(
                "bad-time",
                r#"{"organizationId":"t","eventTime":"soon","type":"x"}"#,
            ),
            "bad_time",
        ),
        (message("too-large", &big), "too_large"),
        (
            with_stream(message("unknown-stream", &app_event("t1", 1)), "nope"),
            "unknown_stream",
        ),
        (message("empty", ""), "not_json"),
    ];
    let records: Vec<SqsMessage> = cases.iter().map(|(m, _)| m.clone()).collect();
    let plan = plan_batch(&config, &records, INGEST_MILLIS, "req-9");
    assert!(plan.objects.is_empty());
    let errors = plan.errors.expect("an errors file");
    assert_eq!(
        errors.key,
        "errors/2022-11-19/23/1668900200000-req-9.ndjson.gz"
    );
    assert_eq!(errors.messages.len(), cases.len());
    assert_eq!(errors.content_type, "application/gzip");
    let lines = error_lines(&errors);
    assert_eq!(lines.len(), cases.len());
    for ((sent, reason), line) in cases.iter().zip(&lines) {
        let record: Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["reason"], *reason, "{line}");
        assert_eq!(record["messageId"], sent.message_id.clone().unwrap());
        assert_eq!(
            record["body"],
            sent.body.clone().unwrap(),
            "original body kept"
        );
        assert!(record["detail"].as_str().unwrap().len() > 5);
        assert_eq!(
            record["attributes"]["SentTimestamp"],
            SENT_MILLIS.to_string()
        );
    }
    assert_eq!(plan.stats.rejected, cases.len());
    assert_eq!(plan.stats.reasons["not_json"], 2);
}

#[test]
fn one_bad_line_does_not_lose_the_others() {
    let body = format!("{}\n{{broken\n{}", app_event("t1", 1), app_event("t1", 2));
    let plan = plan_batch(&config(None), &[message("m1", &body)], INGEST_MILLIS, "r");
    assert_eq!(plan.objects[0].lines, 2);
    let errors = plan.errors.unwrap();
    let record: Value = serde_json::from_str(&error_lines(&errors)[0]).unwrap();
    assert_eq!(record["body"], "{broken");
    assert_eq!(record["part"]["index"], 1);
    assert_eq!(record["part"]["count"], 3);
    assert_eq!(errors.messages.iter().copied().collect::<Vec<_>>(), vec![0]);
    assert_eq!(
        plan.objects[0].messages.iter().copied().collect::<Vec<_>>(),
        vec![0]
    );
}

#[test]
fn unknown_audit_type_is_counted_not_refused() {
    let record = with_stream(
        message("m1", &audit_event("t1", "e1", "brand_new")),
        "airkit-audit-logs",
    );
    let plan = plan_batch(&config(None), &[record], INGEST_MILLIS, "r");
    assert_eq!(plan.objects.len(), 1);
    assert_eq!(plan.stats.streams["airkit-audit-logs"].unknown_types, 1);
}

#[test]
fn partition_by_event_time_uses_the_events_hour() {
    let config = config(Some(r#"{"partitionBy":"event"}"#));
    let late = r#"{"organizationId":"t1","eventTime":"2022-11-18T05:10:00Z","type":"x"}"#;
    let plan = plan_batch(&config, &[message("m1", late)], INGEST_MILLIS, "r");
    assert_eq!(
        plan.objects[0].key,
        "staging/2022-11-18/05/1668900200000-r.staged"
    );
    assert_eq!(
        staged::read_index(&plan.objects[0].body).unwrap().hour,
        "2022-11-18/05"
    );
}

#[test]
fn ingest_hour_falls_back_to_invocation_time_without_sent_timestamp() {
    let mut record = message("m1", &app_event("t1", 1));
    record.attributes.clear();
    let plan = plan_batch(&config(None), &[record], 1_700_000_000_000, "r");
    assert_eq!(
        plan.objects[0].key,
        "staging/2023-11-14/22/1700000000000-r.staged"
    );
}

#[test]
fn hostile_tenants_stay_inside_the_staging_prefix() {
    let long = "x".repeat(2048);
    let tenants = ["../x", "a/b", "..", "/", "a\u{0}b", long.as_str()];
    let records: Vec<SqsMessage> = tenants
        .iter()
        .enumerate()
        .map(|(n, tenant)| {
            let event = serde_json::json!({"organizationId": tenant, "eventTime": "2022-11-19T23:00:00Z", "type": "x"});
            message(&format!("m{n}"), &event.to_string())
        })
        .collect();
    let plan = plan_batch(&config(None), &records, INGEST_MILLIS, "r");
    // The tenants are in the index, never in the key.
    assert_eq!(plan.objects.len(), 1);
    assert_eq!(
        plan.objects[0].key,
        "staging/2022-11-19/23/1668900200000-r.staged"
    );
    let read = segments(&plan.objects[0]);
    assert_eq!(read.len(), tenants.len(), "each tenant its own segment");
    for (segment, staged) in &read {
        assert_eq!(segment.stream, "airkit-app-events");
        // The index holds each tenant's key segment, as partitions name it.
        assert!(
            !segment.tenant.contains('/') && segment.tenant != ".." && segment.tenant != ".",
            "{}",
            segment.tenant
        );
        assert!(!segment.tenant.is_empty() && segment.tenant.len() < 300);
        // The event keeps the original tenant id.
        let line: Value = serde_json::from_str(&event_of(&staged[0])).unwrap();
        let tenant = line["organizationId"].as_str().unwrap();
        assert!(tenants.contains(&tenant));
        assert_eq!(segment.tenant, TenantKey::encode(tenant).as_str());
    }
}

#[test]
fn same_batch_gives_same_keys_and_bytes() {
    let records: Vec<SqsMessage> = (0..50)
        .map(|n| message(&format!("m{n}"), &app_event(&format!("t{}", n % 7), n)))
        .collect();
    let first = plan_batch(&config(None), &records, INGEST_MILLIS, "r");
    let second = plan_batch(&config(None), &records, INGEST_MILLIS, "r");
    assert_eq!(first, second);
}

/// Found by fuzzing: an empty array used to be acknowledged with nothing
/// stored, leaving no trace of the message.
#[test]
fn an_empty_array_is_recorded_in_errors_not_dropped() {
    let plan = plan_batch(
        &config(None),
        &[message("m1", "[] "), message("m2", &app_event("t1", 1))],
        INGEST_MILLIS,
        "r",
    );
    let errors = plan.errors.expect("an errors file");
    assert_eq!(errors.messages.iter().copied().collect::<Vec<_>>(), vec![0]);
    let record: Value = serde_json::from_str(&error_lines(&errors)[0]).unwrap();
    assert_eq!(record["reason"], "not_an_object");
    assert_eq!(record["messageId"], "m1");
    assert_eq!(record["body"], "[] ");
    assert_eq!(plan.stats.accepted, 1);
}

/// The record as sent by `sender_id` (SQS's `SenderId` system attribute).
fn sent_by(mut record: SqsMessage, sender_id: &str) -> SqsMessage {
    record
        .attributes
        .insert("SenderId".into(), sender_id.to_owned());
    record
}

/// The errors file's records, parsed.
fn error_records(plan: &batcher::BatchPlan) -> Vec<Value> {
    error_lines(plan.errors.as_ref().expect("an errors file"))
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Every staged event, per `stream/tenant` segment, object after object.
fn staged_by_partition(plan: &batcher::BatchPlan) -> Vec<(String, Vec<String>)> {
    plan.objects
        .iter()
        .flat_map(segments)
        .map(|(segment, staged)| {
            let events = staged.iter().map(|l| event_of(l)).collect();
            (partition_of(&segment), events)
        })
        .collect()
}

/// Thirty messages of twenty events each over two tenants; every message
/// but the last is a bad line then its events, so each feeds errors/ too.
/// Two in three are gzip: their events are copied into the sub-batch; a
/// plain body's are held where they are. Both count against its size.
fn sub_batch_records() -> Vec<SqsMessage> {
    (0..30)
        .map(|m| {
            let events: Vec<String> = (0..20)
                .map(|n| app_event(&format!("t{}", n % 2), m * 100 + n))
                .collect();
            let bad = if m == 29 { "" } else { "{\"noTenant\":true}\n" };
            let payload = format!("{bad}{}", events.join("\n"));
            if m % 3 == 0 {
                return message(&format!("m{m}"), &payload);
            }
            let body = encode_body(ContentEncoding::Gzip, payload.as_bytes(), 6);
            with_content_encoding(message(&format!("m{m}"), &body), "gzip")
        })
        .collect()
}

#[test]
fn a_repeated_routing_field_refuses_the_event_in_every_profile_and_keeps_its_bytes() {
    let config = config(Some(
        r#"{"streams": {"orders": {"profile": "generic", "tenant": "/account/id", "time": "/ts", "id": "/meta/id"}}}"#,
    ));
    // The issue's event, byte for byte (this reader would route it to acme).
    let app = r#"{"organizationId":"acme","organizationId":"evil","eventTime":"2022-11-19T23:23:16Z","type":"session_start"}"#;
    let audit = r#"{"ORGANIZATION_ID":"acme","EVENT_ID":"e-1","EVENT_ID":"e-2","EVENT_TIME":"2022-11-19 23:40:02","EVENT_TYPE":"user_login"}"#;
    let order =
        r#"{"account":{"id":"acme","id":"evil"},"ts":"2022-11-19T23:00:00Z","meta":{"id":"o-1"}}"#;
    let good_order = r#"{"account":{"id":"acme"},"ts":"2022-11-19T23:00:00Z","meta":{"id":"o-2"}}"#;
    // A message of several events: only the refused line goes to errors/.
    let mixed = format!("{}\n{app}\n{}", app_event("acme", 1), app_event("acme", 2));
    let records = vec![
        message("app", app),
        with_stream(message("audit", audit), "airkit-audit-logs"),
        with_stream(message("order", order), "orders"),
        message("mixed", &mixed),
        with_stream(message("good-order", good_order), "orders"),
        // Repeated keys off the routing paths stay accepted.
        message(
            "extra",
            r#"{"organizationId":"acme","eventTime":"2022-11-19T23:23:16Z","type":"x","note":1,"note":2}"#,
        ),
    ];
    let plan = plan_batch(&config, &records, INGEST_MILLIS, "r");

    let errors = error_records(&plan);
    let expected = [
        ("app", app, "organizationId", None),
        ("audit", audit, "EVENT_ID", None),
        ("order", order, "/account/id", None),
        ("mixed", app, "organizationId", Some(1)),
    ];
    assert_eq!(errors.len(), expected.len());
    for (record, (id, body, field, part)) in errors.iter().zip(expected) {
        assert_eq!(record["reason"], "duplicate_field", "{record}");
        assert_eq!(record["messageId"], id);
        assert_eq!(record["body"], body, "original bytes kept");
        assert_eq!(
            record["detail"],
            format!(
                "field `{field}` appears 2 times in the event; refusing to guess which value routes it"
            )
        );
        assert_eq!(
            record["part"]["index"],
            part.map_or(Value::Null, Value::from)
        );
    }
    assert_eq!(plan.stats.reasons["duplicate_field"], 4);
    assert_eq!(
        staged_by_partition(&plan),
        vec![
            (
                "airkit-app-events/acme".to_owned(),
                vec![
                    app_event("acme", 1),
                    app_event("acme", 2),
                    r#"{"organizationId":"acme","eventTime":"2022-11-19T23:23:16Z","type":"x","note":1,"note":2}"#.to_owned(),
                ]
            ),
            ("orders/acme".to_owned(), vec![good_order.to_owned()]),
        ]
    );
}

#[test]
fn without_a_senders_setting_any_sender_and_none_may_send_for_any_tenant() {
    let records = vec![
        message("no-sender", &app_event("acme", 1)),
        sent_by(
            message("role", &app_event("evil", 2)),
            "AROAEXAMPLEROLEID:s",
        ),
    ];
    let plan = plan_batch(&config(None), &records, INGEST_MILLIS, "r");
    assert!(plan.errors.is_none());
    assert_eq!(plan.stats.accepted, 2);
}

#[test]
fn senders_may_send_only_for_their_mapped_tenants() {
    let config = config(Some(
        r#"{"senders": {"AROAEXAMPLEROLEID": ["acme", "acme-eu"], "123456789012": ["*"]}}"#,
    ));
    let role = "AROAEXAMPLEROLEID";
    let mixed = format!("{}\n{}", app_event("acme-eu", 3), app_event("evil", 4));
    let records = vec![
        sent_by(
            message("allowed", &app_event("acme", 1)),
            &format!("{role}:any-session"),
        ),
        sent_by(
            message("other-tenant", &app_event("evil", 2)),
            &format!("{role}:acme"),
        ),
        sent_by(message("mixed", &mixed), role),
        sent_by(message("account", &app_event("globex", 5)), "123456789012"),
        sent_by(message("unmapped", &app_event("acme", 6)), "AIDAOTHERUSER"),
        // The session name is the caller's choice: it never names the sender.
        sent_by(
            message("session-named-like-role", &app_event("acme", 7)),
            &format!("AROAOTHERROLE:{role}"),
        ),
        message("no-sender", &app_event("acme", 8)),
    ];
    let plan = plan_batch(&config, &records, INGEST_MILLIS, "r");

    let errors = error_records(&plan);
    let expected = [
        (
            "other-tenant",
            app_event("evil", 2),
            "sender `AROAEXAMPLEROLEID` may not send events for tenant `evil`",
            None,
        ),
        (
            "mixed",
            app_event("evil", 4),
            "sender `AROAEXAMPLEROLEID` may not send events for tenant `evil`",
            Some(1),
        ),
        (
            "unmapped",
            app_event("acme", 6),
            "sender `AIDAOTHERUSER` is not in `senders`",
            None,
        ),
        (
            "session-named-like-role",
            app_event("acme", 7),
            "sender `AROAOTHERROLE` is not in `senders`",
            None,
        ),
        (
            "no-sender",
            app_event("acme", 8),
            "no `SenderId` attribute",
            None,
        ),
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:?}");
    for (record, (id, body, detail, part)) in errors.iter().zip(expected) {
        assert_eq!(record["reason"], "tenant_not_allowed", "{record}");
        assert_eq!(record["messageId"], id);
        assert_eq!(record["body"], body, "original bytes kept");
        let text = record["detail"].as_str().unwrap();
        assert!(text.contains(detail), "{text}");
        assert_eq!(
            record["part"]["index"],
            part.map_or(Value::Null, Value::from)
        );
    }
    assert_eq!(plan.stats.reasons["tenant_not_allowed"], 5);
    assert_eq!(
        staged_by_partition(&plan),
        vec![
            (
                "airkit-app-events/acme".to_owned(),
                vec![app_event("acme", 1)]
            ),
            (
                "airkit-app-events/acme-eu".to_owned(),
                vec![app_event("acme-eu", 3)]
            ),
            (
                "airkit-app-events/globex".to_owned(),
                vec![app_event("globex", 5)]
            ),
        ]
    );
}

/// Each partition's events (without provenance), in order, across
/// objects, by `hour/stream/tenant`.
fn events_by_partition(objects: &[batcher::PlannedObject]) -> BTreeMap<String, Vec<String>> {
    let mut events: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for object in objects {
        let hour = staged::read_index(&object.body).unwrap().hour;
        for (segment, staged) in segments(object) {
            events
                .entry(format!("{hour}/{}", partition_of(&segment)))
                .or_default()
                .extend(staged.iter().map(|l| event_of(l)));
        }
    }
    events
}

#[test]
fn a_batch_over_the_sub_batch_size_is_cut_into_sub_batches_with_the_same_events() {
    let records = sub_batch_records();
    let whole = plan_batch(&config(None), &records, INGEST_MILLIS, "req-1");
    assert_eq!(
        whole.objects.len(),
        1,
        "one sub-batch at the default size, one hour: one object"
    );
    assert_eq!(segments(&whole.objects[0]).len(), 2, "a segment a tenant");
    // 600 events of about 140 bytes: 84 KB, cut at 8 KiB.
    let small = config(Some(r#"{"subBatchBytes":8192}"#));
    let cut = plan_batch(&small, &records, INGEST_MILLIS, "req-1");
    assert!(cut.objects.len() >= 8, "{} objects", cut.objects.len());

    // The same events in the same order per partition, none lost or repeated.
    assert_eq!(
        events_by_partition(&cut.objects),
        events_by_partition(&whole.objects)
    );
    assert_eq!(cut.stats.accepted, 600);
    assert_eq!(cut.stats.staged_objects, cut.objects.len());
    assert_eq!(
        cut.objects.iter().map(|o| o.lines).sum::<usize>(),
        600,
        "each object counts its events"
    );
    assert_eq!(
        cut.errors, whole.errors,
        "one errors file for the invocation"
    );

    // Unique keys: the first sub-batch's are the keys of an uncut batch,
    // the next ones number their sub-batch.
    let keys: BTreeSet<&str> = cut.objects.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys.len(), cut.objects.len());
    assert_eq!(cut.objects[0].key, whole.objects[0].key);
    assert_eq!(
        cut.objects[1].key,
        "staging/2022-11-19/23/1668900200000-req-1.0001.staged"
    );
    for (number, object) in cut.objects.iter().enumerate() {
        let (_, _, _, sub_batch) = shared::layout::parse_staged_object_key(&object.key)
            .unwrap_or_else(|| panic!("{}", object.key));
        assert_eq!(sub_batch as usize, number, "one object a sub-batch");
    }

    // A message whose events straddle a cut fed objects of both sub-batches,
    // so a failed store of either fails it.
    let sub_batch_of = |key: &str| shared::layout::parse_staged_object_key(key).unwrap().3;
    let straddling = (0..records.len()).any(|index| {
        let sub_batches: BTreeSet<u32> = cut
            .objects
            .iter()
            .filter(|chunk| chunk.messages.contains(&index))
            .map(|chunk| sub_batch_of(&chunk.key))
            .collect();
        sub_batches.len() > 1
    });
    assert!(straddling, "some message is cut in two");

    // Taking each sub-batch as it is cut gives the same keys and bytes.
    let mut planner = BatchPlanner::new(&small, &records, INGEST_MILLIS, "req-1");
    let mut taken = Vec::new();
    for index in 0..records.len() {
        planner.plan_message(index);
        taken.extend(planner.take_objects());
    }
    let rest = planner.finish();
    assert!(!taken.is_empty(), "sub-batches are cut before the end");
    taken.extend(rest.objects);
    assert_eq!(taken, cut.objects);
    assert_eq!(rest.errors, cut.errors);
    assert_eq!(rest.stats, cut.stats);
}

/// The document of the sharding tests: `orders` reads an id and has 4
/// shards, with `small` on 1 and `huge` on 16; app events (no id: their
/// line is their identity) have 64, so that an identity other than the
/// compacted line would put a copy elsewhere.
const SHARDED: &str = r#"{"streams": {
    "orders": {"profile": "generic", "tenant": "/t", "time": "/ts", "id": "/id",
               "shards": 4, "tenantShards": {"small": 1, "huge": 16}},
    "airkit-app-events": {"profile": "airkit-app-events", "shards": 64}
}}"#;

fn order(tenant: &str, n: usize) -> String {
    format!(r#"{{"t":"{tenant}","ts":"2022-11-19T23:00:00Z","id":"o-{n}","n":{n}}}"#)
}

/// What a staged line says: its event, its message id.
fn event_and_message(line: &str) -> (String, String) {
    let (event, provenance) = shared::provenance::split_staged_line(line);
    let message = provenance.and_then(|p| p.message_id).unwrap_or_default();
    (event.to_owned(), message.to_owned())
}

#[test]
fn events_land_in_the_shard_their_identity_names_and_copies_share_it() {
    let config = config(Some(SHARDED));
    let mut records = Vec::new();
    for tenant in ["acme", "small", "huge"] {
        for m in 0..20 {
            let events: Vec<String> = (0..10).map(|n| order(tenant, m * 10 + n)).collect();
            records.push(with_stream(
                message(&format!("{tenant}-{m}"), &events.join("\n")),
                "orders",
            ));
        }
    }
    // Redelivered copies of orders 7 and 123 (same id, another message).
    records.push(with_stream(
        message(
            "acme-again",
            &format!("{}\n{}", order("acme", 7), order("acme", 123)),
        ),
        "orders",
    ));
    // App events: their identity is the compacted line, so the same event
    // pretty-printed and compact shares a shard.
    let pretty = app_event("acme", 5).replace(',', ",\n  ");
    records.push(message("app-pretty", &pretty));
    for n in 0..40 {
        records.push(message(&format!("app-{n}"), &app_event("acme", n)));
    }
    let plan = plan_batch(&config, &records, INGEST_MILLIS, "r");
    assert!(plan.errors.is_none());
    assert_eq!(
        plan.objects.len(),
        1,
        "one object for the hour, shards and all"
    );
    let read = segments(&plan.objects[0]);

    let mut events_seen = 0;
    let mut shards_used: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for (segment, staged) in &read {
        let partition = partition_of(segment);
        let expected_shards = match partition.as_str() {
            "orders/acme" => 4,
            "orders/small" => 1,
            "orders/huge" => 16,
            "airkit-app-events/acme" => 64,
            other => panic!("unexpected partition {other}"),
        };
        assert_eq!(segment.shards, expected_shards, "{partition}");
        assert!(!staged.is_empty(), "no empty segment");
        shards_used
            .entry(partition.clone())
            .or_default()
            .insert(segment.shard);
        let mut last_n = None;
        for line in staged {
            let (event, sent_by) = event_and_message(line);
            let value: Value = serde_json::from_str(&event).unwrap();
            let shard = match value["id"].as_str() {
                Some(id) => staged::shard_of(id, true, segment.shards),
                None => staged::shard_of(&event, false, segment.shards),
            };
            assert_eq!(shard, segment.shard, "{partition}: {event}");
            // Each line keeps the message that sent it.
            assert!(
                records.iter().any(|r| {
                    r.message_id.as_deref() == Some(sent_by.as_str())
                        && shared::decode::compact(r.body.as_deref().unwrap()).contains(&event)
                }),
                "{sent_by}: {event}"
            );
            // Within a shard, batch order (copies come from the last message).
            if partition.starts_with("orders/") && sent_by != "acme-again" {
                let n = value["n"].as_u64().unwrap();
                assert!(last_n < Some(n), "{partition}: {n} after {last_n:?}");
                last_n = Some(n);
            }
            events_seen += 1;
        }
    }
    assert_eq!(
        events_seen,
        3 * 200 + 2 + 41,
        "every event once, copies kept"
    );
    // Shards in order, as many as hold events.
    let order_of: Vec<(String, u32)> = read
        .iter()
        .map(|(s, _)| (partition_of(s), s.shard))
        .collect();
    let mut sorted = order_of.clone();
    sorted.sort();
    assert_eq!(order_of, sorted);
    assert_eq!(shards_used["orders/acme"].len(), 4);
    assert_eq!(shards_used["orders/small"], BTreeSet::from([0]));
    assert!(shards_used["orders/huge"].len() > 8);
    assert!(shards_used["airkit-app-events/acme"].len() > 16);

    // Copies share the segment of their first staging.
    for id in ["o-7", "o-123"] {
        let holding: Vec<u32> = read
            .iter()
            .filter(|(s, _)| partition_of(s) == "orders/acme")
            .flat_map(|(s, staged)| {
                staged
                    .iter()
                    .filter(|l| l.contains(&format!(r#""id":"{id}""#)))
                    .map(|_| s.shard)
            })
            .collect();
        assert_eq!(holding.len(), 2, "{id}");
        assert_eq!(holding[0], holding[1], "{id}");
    }
    let compact = app_event("acme", 5);
    let app_shards: Vec<u32> = read
        .iter()
        .filter(|(s, _)| s.stream == "airkit-app-events")
        .flat_map(|(s, staged)| {
            staged
                .iter()
                .filter(|l| event_of(l) == compact)
                .map(|_| s.shard)
        })
        .collect();
    assert_eq!(
        app_shards.len(),
        2,
        "the pretty copy compacts to the same line"
    );
    assert_eq!(app_shards[0], app_shards[1]);

    // The same batch, the same bytes, shards and all.
    assert_eq!(plan_batch(&config, &records, INGEST_MILLIS, "r"), plan);
}

/// A segment's `stream/tenant` and its events.
type PartitionEvents = (String, Vec<String>);

#[test]
fn partition_by_event_stages_one_object_for_each_hour_with_the_messages_that_fed_it() {
    let config = config(Some(r#"{"partitionBy":"event"}"#));
    let at = |tenant: &str, hour: u32, n: usize| {
        format!(
            r#"{{"organizationId":"{tenant}","eventTime":"2022-11-19T{hour:02}:10:00Z","type":"x","n":{n}}}"#
        )
    };
    let records = vec![
        // Three hours in one message, two tenants.
        message(
            "m0",
            &[at("t1", 21, 0), at("t2", 22, 1), at("t1", 23, 2)].join("\n"),
        ),
        message("m1", &at("t2", 23, 3)),
        message("m2", &[at("t1", 21, 4), at("t2", 21, 5)].join("\n")),
    ];
    let plan = plan_batch(&config, &records, INGEST_MILLIS, "r");
    let summary: Vec<(&str, Vec<usize>, Vec<PartitionEvents>)> = plan
        .objects
        .iter()
        .map(|object| {
            let segments = segments(object)
                .into_iter()
                .map(|(s, staged)| {
                    (
                        partition_of(&s),
                        staged.iter().map(|l| event_of(l)).collect(),
                    )
                })
                .collect();
            (
                object.key.as_str(),
                object.messages.iter().copied().collect(),
                segments,
            )
        })
        .collect();
    let events = |list: &[String]| list.to_vec();
    assert_eq!(
        summary,
        vec![
            (
                "staging/2022-11-19/21/1668900200000-r.staged",
                vec![0, 2],
                vec![
                    (
                        "airkit-app-events/t1".to_owned(),
                        events(&[at("t1", 21, 0), at("t1", 21, 4)])
                    ),
                    (
                        "airkit-app-events/t2".to_owned(),
                        events(&[at("t2", 21, 5)])
                    ),
                ]
            ),
            (
                "staging/2022-11-19/22/1668900200000-r.staged",
                vec![0],
                vec![(
                    "airkit-app-events/t2".to_owned(),
                    events(&[at("t2", 22, 1)])
                )]
            ),
            (
                "staging/2022-11-19/23/1668900200000-r.staged",
                vec![0, 1],
                vec![
                    (
                        "airkit-app-events/t1".to_owned(),
                        events(&[at("t1", 23, 2)])
                    ),
                    (
                        "airkit-app-events/t2".to_owned(),
                        events(&[at("t2", 23, 3)])
                    ),
                ]
            ),
        ]
    );
    for object in &plan.objects {
        let index = staged::read_index(&object.body).unwrap();
        assert!(object.key.contains(&index.hour), "{}", object.key);
        assert_eq!(object.lines as u64, index.events());
    }
    assert_eq!(plan.stats.staged_objects, 3);
}

#[test]
fn the_staging_zstd_level_is_honoured_and_any_level_decodes() {
    let records: Vec<SqsMessage> = (0..200)
        .map(|n| message(&format!("m{n}"), &app_event(&format!("t{}", n % 3), n)))
        .collect();
    let mut bodies = Vec::new();
    for level in [1, 3, 19] {
        let config = config(Some(&format!(r#"{{"stagingZstdLevel": {level}}}"#)));
        let plan = plan_batch(&config, &records, INGEST_MILLIS, "r");
        assert_eq!(plan.objects.len(), 1);
        assert_eq!(
            lines(&plan.objects[0]),
            (0..200)
                .filter(|n| n % 3 == 0)
                .chain((0..200).filter(|n| n % 3 == 1))
                .chain((0..200).filter(|n| n % 3 == 2))
                .map(|n| app_event(&format!("t{}", n % 3), n))
                .collect::<Vec<_>>(),
            "level {level}"
        );
        bodies.push(plan.objects[0].body.clone());
    }
    // The level reaches the compressor: the frames differ, 19 the smallest.
    assert_ne!(bodies[0], bodies[2]);
    assert!(
        bodies[2].len() < bodies[0].len(),
        "{} {}",
        bodies[2].len(),
        bodies[0].len()
    );
}
