//! Replay against moto: rejected records re-fed through the batcher's logic
//! after a configuration fix, and dead-lettered messages moved back to their
//! queue, then carried by the real batcher and flusher into the archive,
//! read back and checked event by event.

use aws_lambda_events::event::sqs::SqsMessage;
use batcher::Batcher;
use batcher::records::{sqs_record, with_stream};
use flusher::{Flusher, Trigger};
use s3_export::errors_replay::{self, ErrorsReplayReport};
use s3_export::inspect::{gunzip, list_keys, read_gzip_ndjson};
use s3_export::moto::MotoServer;
use serde_json::{Value, json};
use shared::Config;

const EXPORT: &str = "exports";
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:events";
/// 2026-11-22T10:00:00Z
const TEN: i64 = 1_795_341_600_000;
const HOUR: i64 = 3_600_000;
const ERRORS_KEY: &str = "errors/2026-11-22/10/1795341600000-req-1.ndjson.gz";

/// The fix: a stream `orders` that was not configured when the records came.
/// With a destination that shows each event's provenance (`_export`).
const WITH_ORDERS: &str = r#"{"streams": {"orders": {"profile": "generic", "tenant": "/account", "time": "/ts", "id": "/order_id"}},
  "destinations": [{"name": "lake", "bucket": "dest-lake", "shared": true, "includeMetadata": true}]}"#;

fn config(document: Option<&str>) -> Config {
    Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
        document,
    )
    .unwrap()
}

fn order(id: &str, minute: u32) -> String {
    format!(
        r#"{{"account":"acme","ts":"2026-11-22T10:{minute:02}:00Z","order_id":"{id}","total":5}}"#
    )
}

async fn object(s3: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    s3.get_object()
        .bucket(EXPORT)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}

async fn error_lines(s3: &aws_sdk_s3::Client) -> Vec<Value> {
    gunzip(&object(s3, ERRORS_KEY).await)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn flush(s3: &aws_sdk_s3::Client, config: Config, now: i64) {
    let trigger =
        Trigger::from_payload(&json!({ "time": shared::time::format_rfc3339_millis(now) }))
            .unwrap();
    let report = flusher::run(&Flusher::new(config, s3.clone()), &trigger, None)
        .await
        .unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
}

/// The events of the archive parts under `prefix` (not their provenance
/// sidecars), sorted.
async fn archived(s3: &aws_sdk_s3::Client, prefix: &str) -> Vec<String> {
    // The committed parts, named `archive/<stream>/<tenant>/…` wherever
    // they are stored.
    let under = prefix.strip_prefix("archive/").unwrap();
    let mut lines: Vec<String> = s3_export::inspect::read_archive(s3, EXPORT, under)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|file| file.lines)
        .collect();
    lines.sort();
    lines
}

async fn replay(s3: &aws_sdk_s3::Client, dry_run: bool) -> ErrorsReplayReport {
    let (first, last) =
        errors_replay::hour_range("2026-11-22T00:00:00Z", "2026-11-23T00:00:00Z").unwrap();
    errors_replay::replay(s3, &config(Some(WITH_ORDERS)), first, last, dry_run)
        .await
        .unwrap()
}

#[tokio::test]
async fn errors_replayed_after_adding_a_stream_are_archived_once_and_the_rest_keep_their_reason() {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = moto.s3_client().await;
    for bucket in [EXPORT, "dest-lake"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }

    let orders =
        |id: &str, body: &str| with_stream(sqs_record(id, body, TEN + 1000, QUEUE_ARN), "orders");
    let records: Vec<SqsMessage> = vec![
        orders("o1", &order("A-1", 1)),
        // Two orders in one message, refused whole as of an unknown stream.
        orders("o2", &format!("{}\n{}", order("A-2", 2), order("A-3", 3))),
        // No order_id: still refused once the stream exists.
        orders(
            "o3",
            r#"{"account":"acme","ts":"2026-11-22T10:04:00Z","total":1}"#,
        ),
        sqs_record("bad", "not json", TEN + 1000, QUEUE_ARN),
        sqs_record(
            "ok",
            r#"{"organizationId":"t1","eventTime":"2026-11-22T10:05:00Z","type":"step_enter"}"#,
            TEN + 1000,
            QUEUE_ARN,
        ),
    ];
    let batcher = Batcher::new(config(None), s3.clone());
    let response = batcher::process(&batcher, &records, TEN, "req-1")
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    flush(&s3, config(None), TEN + HOUR + 15 * 60_000).await;
    let original = object(&s3, ERRORS_KEY).await;
    let reasons: Vec<Value> = error_lines(&s3)
        .await
        .iter()
        .map(|l| l["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        [
            "unknown_stream",
            "unknown_stream",
            "unknown_stream",
            "not_json"
        ]
    );

    // A dry run says what it would do and writes nothing.
    let dry = replay(&s3, true).await;
    assert_eq!((dry.accepted, dry.still_rejected), (3, 2));
    assert_eq!(dry.files[0].outcome, "rewritten");
    assert_eq!(object(&s3, ERRORS_KEY).await, original);
    assert!(list_keys(&s3, EXPORT, "staging/").await.unwrap().is_empty());
    assert!(errors_replay::render(&dry).contains("dry run, nothing written"));

    let report = replay(&s3, false).await;
    assert_eq!((report.accepted, report.still_rejected), (3, 2));
    let file = &report.files[0];
    assert_eq!((file.key.as_str(), file.records), (ERRORS_KEY, 4));
    assert_eq!(
        file.still_rejected
            .iter()
            .map(|(r, n)| (r.as_str(), *n))
            .collect::<Vec<_>>(),
        [("missing_field", 1), ("not_json", 1)]
    );
    assert_eq!(file.chunks.len(), 1);
    // One staged object for the hour, whatever the partitions in it.
    assert!(
        file.chunks[0].starts_with("staging/2026-11-22/10/1795341600000-replay-")
            && file.chunks[0].ends_with(".staged"),
        "{}",
        file.chunks[0]
    );
    assert_eq!(
        list_keys(&s3, EXPORT, "staging/").await.unwrap(),
        file.chunks
    );

    // What is still refused stays, with its new reason and its original bytes.
    let kept = error_lines(&s3).await;
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0]["reason"], "missing_field");
    assert_eq!(kept[0]["messageId"], "o3");
    assert_eq!(kept[0]["stream"], "orders");
    assert!(
        kept[0]["detail"].as_str().unwrap().contains("order_id"),
        "{}",
        kept[0]
    );
    assert_eq!(
        kept[0]["body"],
        r#"{"account":"acme","ts":"2026-11-22T10:04:00Z","total":1}"#
    );
    assert_eq!(kept[1]["reason"], "not_json");
    assert_eq!(kept[1]["body"], "not json");

    // Again: nothing more to stage, nothing rewritten.
    let rewritten = object(&s3, ERRORS_KEY).await;
    let again = replay(&s3, false).await;
    assert_eq!((again.accepted, again.still_rejected), (0, 2));
    assert_eq!(again.files[0].outcome, "unchanged");
    assert_eq!(object(&s3, ERRORS_KEY).await, rewritten);
    assert_eq!(
        list_keys(&s3, EXPORT, "staging/").await.unwrap(),
        file.chunks
    );

    flush(&s3, config(Some(WITH_ORDERS)), TEN + 2 * HOUR + 15 * 60_000).await;
    let expected = vec![order("A-1", 1), order("A-2", 2), order("A-3", 3)];
    assert_eq!(archived(&s3, "archive/orders/").await, expected);
    // The records' message ids and SentTimestamp went through the batcher.
    let mut provenance: Vec<(String, String)> = read_gzip_ndjson(&s3, "dest-lake", "orders/")
        .await
        .unwrap()
        .into_iter()
        .flat_map(|file| file.lines)
        .map(|line| {
            let event: Value = serde_json::from_str(&line).unwrap();
            (
                event["_export"]["messageId"].as_str().unwrap().to_owned(),
                event["_export"]["ingestTime"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    provenance.sort();
    let sent = "2026-11-22T10:00:01.000Z".to_owned();
    assert_eq!(
        provenance,
        [
            ("o1".to_owned(), sent.clone()),
            ("o2".to_owned(), sent.clone()),
            ("o2".to_owned(), sent)
        ]
    );
    assert_eq!(archived(&s3, "archive/airkit-app-events/").await.len(), 1);

    // A replay that stopped before rewriting its errors file is run again:
    // the same chunk is staged again, and the flusher does not archive it twice.
    s3.put_object()
        .bucket(EXPORT)
        .key(ERRORS_KEY)
        .body(original.into())
        .send()
        .await
        .unwrap();
    let rerun = replay(&s3, false).await;
    assert_eq!(rerun.files[0].chunks, file.chunks, "the same chunk key");
    flush(&s3, config(Some(WITH_ORDERS)), TEN + 3 * HOUR + 15 * 60_000).await;
    assert_eq!(
        archived(&s3, "archive/orders/").await,
        expected,
        "each event once"
    );
    assert!(list_keys(&s3, EXPORT, "staging/").await.unwrap().is_empty());
    assert_eq!(error_lines(&s3).await.len(), 2);
}

#[tokio::test]
async fn errors_files_whose_records_are_all_accepted_are_deleted_and_foreign_lines_are_kept() {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = moto.s3_client().await;
    for bucket in [EXPORT, "dest-lake"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let records = vec![with_stream(
        sqs_record("o1", &order("B-1", 1), TEN + 1000, QUEUE_ARN),
        "orders",
    )];
    let batcher = Batcher::new(config(None), s3.clone());
    batcher::process(&batcher, &records, TEN, "req-1")
        .await
        .unwrap();
    batcher::process(&batcher, &records, TEN + 5000, "req-2")
        .await
        .unwrap();
    // A second file with a line that is not an error record.
    let second = "errors/2026-11-22/10/1795341605000-req-2.ndjson.gz";
    let mut text = gunzip(&object(&s3, second).await).unwrap();
    text.push_str("a note someone left\n");
    let mut writer = shared::encode::NdjsonGzWriter::new(6);
    for line in text.lines() {
        writer.push_line(line);
    }
    s3.put_object()
        .bucket(EXPORT)
        .key(second)
        .body(writer.finish().into())
        .send()
        .await
        .unwrap();
    // A file outside the range is not touched.
    let elsewhere = "errors/2026-11-23/10/1795428000000-req-9.ndjson.gz";
    s3.copy_object()
        .bucket(EXPORT)
        .key(elsewhere)
        .copy_source(format!("{EXPORT}/{ERRORS_KEY}"))
        .send()
        .await
        .unwrap();

    // Objects that are not the batcher's errors files are reported and left.
    let foreign = [
        ("errors/2026-11-22/10/notes.txt", b"hello".to_vec()),
        (
            "errors/2026-11-22/10/1795341609000-x.ndjson.gz",
            b"not gzip".to_vec(),
        ),
    ];
    for (key, body) in &foreign {
        s3.put_object()
            .bucket(EXPORT)
            .key(*key)
            .body(body.clone().into())
            .send()
            .await
            .unwrap();
    }

    let report = replay(&s3, false).await;
    // The outcome up to its detail (the gzip error's wording is flate2's).
    let outcomes: Vec<(&str, &str)> = report
        .files
        .iter()
        .map(|f| {
            (
                f.key.as_str(),
                f.outcome.split(": ").take(2).last().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (ERRORS_KEY, "deleted"),
            (second, "rewritten"),
            (foreign[1].0, "not valid gzip of UTF-8 text"),
            (foreign[0].0, "not an errors file of the batcher's layout"),
        ]
    );
    assert!(
        report.files[2..]
            .iter()
            .all(|f| f.outcome.starts_with("skipped: "))
    );
    assert_eq!(report.files[1].unreadable_lines, 1);
    assert_eq!(
        list_keys(&s3, EXPORT, "errors/").await.unwrap(),
        [second, foreign[1].0, foreign[0].0, elsewhere]
    );
    assert_eq!(
        gunzip(&object(&s3, second).await).unwrap(),
        "a note someone left\n"
    );
    // The same event from two messages is archived once.
    flush(&s3, config(Some(WITH_ORDERS)), TEN + HOUR + 15 * 60_000).await;
    assert_eq!(archived(&s3, "archive/orders/").await, [order("B-1", 1)]);
}

/// A batcher handler for the event source mapping emulation.
async fn batch(
    batcher: &Batcher,
    event: aws_lambda_events::event::sqs::SqsEvent,
) -> Result<aws_lambda_events::event::sqs::SqsBatchResponse, lambda_runtime::Error> {
    Ok(batcher::process(batcher, &event.records, TEN, "esm").await?)
}

#[tokio::test]
async fn dead_lettered_messages_replayed_by_copy_then_succeed_once() {
    use s3_export::dlq_replay::{self, DlqReplayOptions, Method};
    use s3_export::esm::{EventSourceMapping, approximate_message_count, create_queue_with_dlq};
    use std::time::Duration;

    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = moto.s3_client().await;
    let sqs = moto.sqs_client().await;
    for bucket in [EXPORT, "dest-lake"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let queues = create_queue_with_dlq(&sqs, "events", 1, 1).await.unwrap();
    let app = |n: usize| {
        format!(
            r#"{{"organizationId":"t1","eventTime":"2026-11-22T10:0{n}:00Z","type":"step_enter","n":{n}}}"#
        )
    };
    let audit = r#"{"ORGANIZATION_ID":"t1","EVENT_ID":"E-1","EVENT_TIME":"2026-11-22 10:40:02.123","EVENT_TYPE":"user_login"}"#;
    for body in [app(1), app(2)] {
        sqs.send_message()
            .queue_url(&queues.url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    sqs.send_message()
        .queue_url(&queues.url)
        .message_body(audit)
        .message_attributes(
            "stream",
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value("airkit-audit-logs")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    // S3 is down: every message fails, and after maxReceiveCount (1) SQS
    // moves it to the dead-letter queue.
    let outage = s3_export::faults::FailRequestsTo::new("/staging/");
    let failing = Batcher::new(config(None), outage.wrap(&s3));
    let esm = EventSourceMapping::for_queue(sqs.clone(), &queues.url, 10, Duration::ZERO)
        .await
        .unwrap();
    esm.drain(|event| batch(&failing, event), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        approximate_message_count(&sqs, &queues.dlq_url)
            .await
            .unwrap(),
        3
    );
    assert!(list_keys(&s3, EXPORT, "staging/").await.unwrap().is_empty());

    // The dry run lists them and leaves them where they are.
    let mut options = DlqReplayOptions {
        dlq: queues.dlq_url.clone(),
        queue: None,
        method: Method::Auto,
        dry_run: true,
        max: None,
        visibility_timeout: 60,
    };
    let dry = dlq_replay::replay(&sqs, &options).await.unwrap();
    assert_eq!(dry.queue_url, queues.url, "found by the redrive policy");
    assert_eq!(dry.would_move.len(), 3);
    let streams: Vec<Option<&str>> = dry.would_move.iter().map(|m| m.stream.as_deref()).collect();
    assert_eq!(
        streams
            .iter()
            .filter(|s| **s == Some("airkit-audit-logs"))
            .count(),
        1
    );
    assert!(
        dry.would_move
            .iter()
            .all(|m| m.receive_count.is_some() && m.sent_at.is_some())
    );
    assert!(dlq_replay::render(&dry).contains("dry run, nothing moved: 3 message(s)"));
    assert_eq!(
        approximate_message_count(&sqs, &queues.dlq_url)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        approximate_message_count(&sqs, &queues.url).await.unwrap(),
        0
    );

    // A queue that cannot take them: the send fails and nothing leaves the
    // dead-letter queue.
    options.dry_run = false;
    let missing = DlqReplayOptions {
        queue: Some(queues.url.replace("/events", "/missing")),
        method: Method::Copy,
        visibility_timeout: 0,
        ..options.clone()
    };
    let error = dlq_replay::replay(&sqs, &missing).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("SendMessageBatch"),
        "{error:#}"
    );
    assert_eq!(
        approximate_message_count(&sqs, &queues.dlq_url)
            .await
            .unwrap(),
        3
    );

    // moto has no StartMessageMoveTask: `auto` copies instead, saying why.
    let report = dlq_replay::replay(&sqs, &options).await.unwrap();
    assert_eq!(report.method, "copy");
    assert!(
        report
            .fallback_reason
            .as_deref()
            .unwrap()
            .contains("StartMessageMoveTask refused"),
        "{report:?}"
    );
    assert_eq!((report.moved.len(), report.failed.len()), (3, 0));
    assert_eq!(
        approximate_message_count(&sqs, &queues.dlq_url)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        approximate_message_count(&sqs, &queues.url).await.unwrap(),
        3
    );

    // Fixed: the batcher takes them, the flusher archives each event once,
    // the audit event in its stream (the message attribute came along).
    outage.heal();
    let healthy = Batcher::new(config(None), s3.clone());
    let drained = esm
        .drain(|event| batch(&healthy, event), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!((drained.received, drained.deleted), (3, 3));
    let trigger =
        Trigger::from_payload(&json!({"flush": {"until": "2100-01-01T00:00:00Z"}})).unwrap();
    flusher::run(&Flusher::new(config(None), s3.clone()), &trigger, None)
        .await
        .unwrap();
    assert_eq!(
        archived(&s3, "archive/airkit-app-events/").await,
        [app(1), app(2)]
    );
    assert_eq!(
        archived(&s3, "archive/airkit-audit-logs/").await,
        [audit.to_owned()]
    );

    // Forcing the move task on moto fails clearly; an unknown dead-letter
    // queue names the option to give.
    options.method = Method::MoveTask;
    let error = dlq_replay::replay(&sqs, &options).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("StartMessageMoveTask refused"),
        "{error:#}"
    );
    // A dead-letter queue shared by two queues: which one must be said.
    let redrive = json!({"deadLetterTargetArn": queues.dlq_arn, "maxReceiveCount": 1}).to_string();
    sqs.create_queue()
        .queue_name("events-b")
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            redrive,
        )
        .send()
        .await
        .unwrap();
    let error = dlq_replay::replay(&sqs, &options).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is the dead-letter queue of 2 queues"),
        "{error}"
    );
    let lonely = sqs
        .create_queue()
        .queue_name("lonely")
        .send()
        .await
        .unwrap();
    options.dlq = lonely.queue_url.unwrap();
    let error = dlq_replay::replay(&sqs, &options).await.unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("`--queue`: no queue's redrive policy names"),
        "{error}"
    );
}

/// Replay re-checks each record's own `SenderId` against the mapping now in
/// force: mapping a sender later lets its refused events through, and the
/// replaying principal never stands in for the original sender.
#[tokio::test]
async fn errors_replayed_after_mapping_a_sender_are_checked_against_their_original_sender() {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = moto.s3_client().await;
    s3.create_bucket().bucket(EXPORT).send().await.unwrap();
    let senders = |tenants: &str| {
        config(Some(&format!(
            r#"{{"senders": {{"AROAEXAMPLEROLEID": [{tenants}]}}}}"#
        )))
    };
    let event = |tenant: &str| {
        format!(
            r#"{{"organizationId":"{tenant}","eventTime":"2026-11-22T10:05:00Z","type":"step_enter"}}"#
        )
    };
    let sent_by = |id: &str, body: &str, sender_id: &str| {
        let mut record = sqs_record(id, body, TEN + 1000, QUEUE_ARN);
        record
            .attributes
            .insert("SenderId".into(), sender_id.to_owned());
        record
    };
    let records = vec![
        sent_by("eu", &event("acme-eu"), "AROAEXAMPLEROLEID:batch-job"),
        sent_by("other", &event("acme"), "AIDAOTHERUSER"),
    ];
    let batcher = Batcher::new(senders(r#""acme""#), s3.clone());
    batcher::process(&batcher, &records, TEN, "req-1")
        .await
        .unwrap();
    let reasons: Vec<Value> = error_lines(&s3)
        .await
        .iter()
        .map(|l| l["reason"].clone())
        .collect();
    assert_eq!(reasons, ["tenant_not_allowed", "tenant_not_allowed"]);

    let (first, last) =
        errors_replay::hour_range("2026-11-22T00:00:00Z", "2026-11-23T00:00:00Z").unwrap();
    let report = errors_replay::replay(&s3, &senders(r#""acme", "acme-eu""#), first, last, false)
        .await
        .unwrap();
    assert_eq!((report.accepted, report.still_rejected), (1, 1));
    let still = error_lines(&s3).await;
    assert_eq!(still.len(), 1);
    assert_eq!(still[0]["messageId"], "other");
    assert_eq!(still[0]["reason"], "tenant_not_allowed");
    assert_eq!(still[0]["attributes"]["SenderId"], "AIDAOTHERUSER");
    let staged = s3_export::inspect::read_staged_events(&s3, EXPORT)
        .await
        .unwrap();
    let staged: Vec<&String> = staged.iter().flat_map(|file| &file.lines).collect();
    assert_eq!(staged, [&event("acme-eu")]);
}
