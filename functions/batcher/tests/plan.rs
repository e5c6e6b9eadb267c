//! The batcher's planning, without AWS: what each batch turns into.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use aws_lambda_events::event::sqs::SqsMessage;
use batcher::records::{sqs_record, with_content_encoding, with_stream};
use batcher::{BatchPlanner, plan_batch};
use flate2::read::GzDecoder;
use serde_json::Value;
use shared::Config;
use shared::content_encoding::{ContentEncoding, encode_body};

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

/// The staged lines as written: each event with its provenance.
fn staged_lines(bytes: &[u8]) -> Vec<String> {
    let text = gunzip(bytes);
    assert!(text.is_empty() || text.ends_with('\n'), "final newline");
    text.lines().map(str::to_owned).collect()
}

/// The staged events, without their provenance.
fn lines(bytes: &[u8]) -> Vec<String> {
    staged_lines(bytes)
        .iter()
        .map(|line| shared::provenance::split_staged_line(line).0.to_owned())
        .collect()
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
        staged_lines(&plan.chunks[0].body),
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
    assert_eq!(plan.chunks.len(), 1);
    let chunk = &plan.chunks[0];
    assert_eq!(
        chunk.key,
        "staging/2022-11-19/23/airkit-app-events/482f2a38-8e9d-4329-b2a0-e97d5bc05d36/1668900200000-req-1.ndjson.gz"
    );
    let lines = lines(&chunk.body);
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
    assert_eq!(lines(&plan.chunks[0].body), vec![sent.to_owned()]);
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
    let summary: Vec<(String, usize, Vec<usize>)> = plan
        .chunks
        .iter()
        .map(|c| {
            (
                c.key
                    .split('/')
                    .skip(3)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join("/"),
                c.lines,
                c.messages.iter().copied().collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("airkit-app-events/t1".to_owned(), 2, vec![0, 2]),
            ("airkit-app-events/t2".to_owned(), 1, vec![1]),
            ("airkit-audit-logs/t1".to_owned(), 1, vec![3]),
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
    assert_eq!(plan.chunks.len(), 1);
    let expected: Vec<String> = (1..=5).map(|n| app_event("t1", n)).collect();
    assert_eq!(lines(&plan.chunks[0].body), expected);
}

#[test]
fn stream_comes_from_attribute_then_queue_then_default() {
    let config = config(Some(r#"{"queues":{"audit-events":"airkit-audit-logs"}}"#));
    let mut from_queue = message("m1", &audit_event("t1", "e1", "user_login"));
    from_queue.event_source_arn = Some("arn:aws:sqs:us-east-1:123456789012:audit-events".into());
    let from_default = message("m2", &app_event("t1", 1));
    let plan = plan_batch(&config, &[from_queue, from_default], INGEST_MILLIS, "r");
    let streams: Vec<&str> = plan
        .chunks
        .iter()
        .map(|c| c.key.split('/').nth(3).unwrap())
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
    assert!(plan.chunks.is_empty());
    let errors = plan.errors.expect("an errors file");
    assert_eq!(
        errors.key,
        "errors/2022-11-19/23/1668900200000-req-9.ndjson.gz"
    );
    assert_eq!(errors.messages.len(), cases.len());
    let lines = lines(&errors.body);
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
    assert_eq!(plan.chunks[0].lines, 2);
    let errors = plan.errors.unwrap();
    let record: Value = serde_json::from_str(&lines(&errors.body)[0]).unwrap();
    assert_eq!(record["body"], "{broken");
    assert_eq!(record["part"]["index"], 1);
    assert_eq!(record["part"]["count"], 3);
    assert_eq!(errors.messages.iter().copied().collect::<Vec<_>>(), vec![0]);
    assert_eq!(
        plan.chunks[0].messages.iter().copied().collect::<Vec<_>>(),
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
    assert_eq!(plan.chunks.len(), 1);
    assert_eq!(plan.stats.streams["airkit-audit-logs"].unknown_types, 1);
}

#[test]
fn partition_by_event_time_uses_the_events_hour() {
    let config = config(Some(r#"{"partitionBy":"event"}"#));
    let late = r#"{"organizationId":"t1","eventTime":"2022-11-18T05:10:00Z","type":"x"}"#;
    let plan = plan_batch(&config, &[message("m1", late)], INGEST_MILLIS, "r");
    assert!(
        plan.chunks[0].key.starts_with("staging/2022-11-18/05/"),
        "{}",
        plan.chunks[0].key
    );
}

#[test]
fn ingest_hour_falls_back_to_invocation_time_without_sent_timestamp() {
    let mut record = message("m1", &app_event("t1", 1));
    record.attributes.clear();
    let plan = plan_batch(&config(None), &[record], 1_700_000_000_000, "r");
    assert!(
        plan.chunks[0].key.starts_with("staging/2023-11-14/22/"),
        "{}",
        plan.chunks[0].key
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
    assert_eq!(
        plan.chunks.len(),
        tenants.len(),
        "each tenant its own partition"
    );
    for chunk in &plan.chunks {
        let segments: Vec<&str> = chunk.key.split('/').collect();
        assert_eq!(segments.len(), 6, "{}", chunk.key);
        assert_eq!(
            &segments[..4],
            ["staging", "2022-11-19", "23", "airkit-app-events"]
        );
        assert!(
            !segments
                .iter()
                .any(|s| *s == ".." || *s == "." || s.is_empty()),
            "{}",
            chunk.key
        );
        assert!(chunk.key.len() < 300);
        // The event keeps the original tenant id.
        let line: Value = serde_json::from_str(&lines(&chunk.body)[0]).unwrap();
        assert!(tenants.contains(&line["organizationId"].as_str().unwrap()));
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
    let record: Value = serde_json::from_str(&lines(&errors.body)[0]).unwrap();
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
    lines(&plan.errors.as_ref().expect("an errors file").body)
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Every staged event, per `stream/tenant`.
fn staged_by_partition(plan: &batcher::BatchPlan) -> Vec<(String, Vec<String>)> {
    plan.chunks
        .iter()
        .map(|chunk| {
            let segments: Vec<&str> = chunk.key.split('/').collect();
            (
                format!("{}/{}", segments[3], segments[4]),
                lines(&chunk.body),
            )
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

/// Each partition's events (without provenance), in order, across chunks.
fn events_by_partition(chunks: &[batcher::PlannedObject]) -> BTreeMap<String, Vec<String>> {
    let mut events: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for chunk in chunks {
        let partition = chunk
            .key
            .split('/')
            .skip(1)
            .take(4)
            .collect::<Vec<_>>()
            .join("/");
        events
            .entry(partition)
            .or_default()
            .extend(lines(&chunk.body));
    }
    events
}

#[test]
fn a_batch_over_the_sub_batch_size_is_cut_into_sub_batches_with_the_same_events() {
    let records = sub_batch_records();
    let whole = plan_batch(&config(None), &records, INGEST_MILLIS, "req-1");
    assert_eq!(whole.chunks.len(), 2, "one sub-batch at the default size");
    // 600 events of about 140 bytes: 84 KB, cut at 8 KiB.
    let small = config(Some(r#"{"subBatchBytes":8192}"#));
    let cut = plan_batch(&small, &records, INGEST_MILLIS, "req-1");
    assert!(cut.chunks.len() >= 16, "{} chunks", cut.chunks.len());

    // The same events in the same order per partition, none lost or repeated.
    assert_eq!(
        events_by_partition(&cut.chunks),
        events_by_partition(&whole.chunks)
    );
    assert_eq!(cut.stats.accepted, 600);
    assert_eq!(cut.stats.chunks, cut.chunks.len());
    assert_eq!(
        cut.errors, whole.errors,
        "one errors file for the invocation"
    );

    // Unique keys: the first sub-batch's are the keys of an uncut batch,
    // the next ones number their sub-batch.
    let keys: BTreeSet<&str> = cut.chunks.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys.len(), cut.chunks.len());
    assert_eq!(cut.chunks[0].key, whole.chunks[0].key);
    assert!(
        cut.chunks[2]
            .key
            .ends_with("/1668900200000-req-1.0001.ndjson.gz"),
        "{}",
        cut.chunks[2].key
    );
    for chunk in &cut.chunks {
        assert!(
            shared::layout::parse_staging_chunk_key(&chunk.key).is_some(),
            "{}",
            chunk.key
        );
    }

    // A message whose events straddle a cut fed chunks of both sub-batches,
    // so a failed store of either fails it.
    let sub_batch_of = |key: &str| {
        let file = key.rsplit('/').next().unwrap();
        file.trim_end_matches(".ndjson.gz")
            .rsplit_once('.')
            .map_or(0, |(_, n)| n.parse::<u32>().unwrap())
    };
    let straddling = (0..records.len()).any(|index| {
        let sub_batches: BTreeSet<u32> = cut
            .chunks
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
        taken.extend(planner.take_chunks());
    }
    let rest = planner.finish();
    assert!(!taken.is_empty(), "sub-batches are cut before the end");
    taken.extend(rest.chunks);
    assert_eq!(taken, cut.chunks);
    assert_eq!(rest.errors, cut.errors);
    assert_eq!(rest.stats, cut.stats);
}
