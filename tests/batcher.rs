//! The batcher against moto's S3: real PUTs, real staged objects read back
//! through `shared::staged` (index, then each segment's zstd frame) and
//! errors files through gzip, event by event. Each test starts its own
//! moto_server on a free loopback port.

use std::collections::{BTreeMap, BTreeSet};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use batcher::records::{sqs_record, with_stream};
use batcher::{Batcher, BatcherError};
use lambda_runtime::{Context, LambdaEvent};
use s3_export::fault_proxy::{FaultPlan, FaultProxy};
use s3_export::faults::FailRequestsTo;
use s3_export::inspect::{list_keys, read_gzip_ndjson, read_object};
use s3_export::moto::MotoServer;
use s3_export::workload::{SESSION_START, compact_json};
use serde_json::Value;
use shared::Config;
use shared::staged::{self, Segment};

const BUCKET: &str = "s3-export-test";
const SENT_MILLIS: i64 = 1_668_900_197_000; // 2022-11-19T23:23:17Z
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:events";

struct Harness {
    /// Kept for its Drop, which stops the server.
    _moto: MotoServer,
    s3: aws_sdk_s3::Client,
}

impl Harness {
    async fn start() -> Self {
        let moto = MotoServer::start().await.expect("moto_server starts");
        let s3 = moto.s3_client().await;
        s3.create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("bucket");
        Self { _moto: moto, s3 }
    }

    fn batcher(&self) -> Batcher {
        self.batcher_with(self.s3.clone(), None)
    }

    fn batcher_with(&self, s3: aws_sdk_s3::Client, document: Option<&str>) -> Batcher {
        let config = Config::from_sources(
            |name| (name == "EXPORT_BUCKET").then(|| BUCKET.to_owned()),
            document,
        )
        .expect("config");
        Batcher::new(config, s3)
    }

    async fn staged(&self) -> Vec<StagedObject> {
        staged_objects(&self.s3, BUCKET).await
    }

    async fn errors(&self) -> Vec<Value> {
        read_gzip_ndjson(&self.s3, BUCKET, "errors/")
            .await
            .unwrap()
            .iter()
            .flat_map(|file| file.lines.iter().map(|l| serde_json::from_str(l).unwrap()))
            .collect()
    }
}

/// A staged object as stored: its key and its segments with their staged
/// lines (event and provenance).
struct StagedObject {
    key: String,
    segments: Vec<(Segment, Vec<String>)>,
}

/// Every staged object in `bucket`, in key order, read through its index.
async fn staged_objects(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<StagedObject> {
    let mut objects = Vec::new();
    for key in list_keys(s3, bucket, "staging/").await.unwrap() {
        assert!(
            shared::layout::parse_staged_object_key(&key).is_some(),
            "only staged objects are written: {key}"
        );
        let bytes = read_object(s3, bucket, &key).await.unwrap();
        let segments = staged::read_object(&bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
        objects.push(StagedObject { key, segments });
    }
    objects
}

/// The event of a staged line (its provenance cut).
fn event_of(line: &str) -> String {
    shared::provenance::split_staged_line(line).0.to_owned()
}

fn message(id: &str, body: &str) -> SqsMessage {
    sqs_record(id, body, SENT_MILLIS, QUEUE_ARN)
}

fn app_event(tenant: &str, n: usize) -> String {
    format!(
        r#"{{"organizationId":"{tenant}","eventTime":"2022-11-19T23:{:02}:00.5Z","appId":"a","sessionId":"s-{n}","type":"step_enter","kind":"Session","n":{n}}}"#,
        n % 60
    )
}

/// The event moved to 22:xx, an hour of its own when partitioned by event
/// time (a staged object of its own).
fn at_22(event: String) -> String {
    event.replace("T23:", "T22:")
}

fn audit_event(tenant: &str, id: &str) -> String {
    format!(
        r#"{{"ORGANIZATION_ID":"{tenant}","EVENT_ID":"{id}","EVENT_TIME":"2022-11-19 23:40:02.123","EVENT_TYPE":"user_login","USER_ID":"u1","LOGIN_TYPE":"password"}}"#
    )
}

async fn invoke(
    batcher: &Batcher,
    records: Vec<SqsMessage>,
    request_id: &str,
) -> Result<SqsBatchResponse, BatcherError> {
    let mut event = SqsEvent::default();
    event.records = records;
    let mut context = Context::default();
    context.request_id = request_id.to_owned();
    batcher::handle(batcher, LambdaEvent::new(event, context)).await
}

fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|failure| failure.item_identifier.clone())
        .collect();
    ids.sort();
    ids
}

/// Every staged event, per `stream/tenant`, object after object.
fn lines_by_partition(objects: &[StagedObject]) -> BTreeMap<String, Vec<String>> {
    let mut partitions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for object in objects {
        for (segment, lines) in &object.segments {
            partitions
                .entry(format!("{}/{}", segment.stream, segment.tenant))
                .or_default()
                .extend(lines.iter().map(|line| event_of(line)));
        }
    }
    partitions
}

#[tokio::test]
async fn seed_session_start_lands_in_its_chunk_as_one_unchanged_line() {
    let harness = Harness::start().await;
    let response = invoke(
        &harness.batcher(),
        vec![message("m1", SESSION_START)],
        "req-1",
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());

    let staged = harness.staged().await;
    assert_eq!(staged.len(), 1);
    let key = &staged[0].key;
    assert!(
        key.starts_with("staging/2022-11-19/23/") && key.ends_with("-req-1.staged"),
        "{key}"
    );
    let [(segment, lines)] = staged[0].segments.as_slice() else {
        panic!("one segment: {:?}", staged[0].segments);
    };
    assert_eq!(
        (segment.stream.as_str(), segment.tenant.as_str()),
        ("airkit-app-events", "482f2a38-8e9d-4329-b2a0-e97d5bc05d36")
    );
    assert_eq!(lines.len(), 1);
    let exported: Value = serde_json::from_str(&event_of(&lines[0])).unwrap();
    let sent: Value = serde_json::from_str(SESSION_START).unwrap();
    assert_eq!(exported, sent, "every field unchanged");
    assert!(harness.errors().await.is_empty());

    // The staged line itself ends with its provenance: the message's
    // SentTimestamp and id, after tabs (shared::provenance).
    assert_eq!(
        lines,
        &vec![format!(
            "{}\t{SENT_MILLIS}\tm1",
            compact_json(SESSION_START)
        )]
    );
}

#[tokio::test]
async fn audit_event_and_every_body_shape_are_staged() {
    let harness = Harness::start().await;
    // Pretty-printed by hand: the event's own key order must survive.
    let pretty = app_event("t1", 3)
        .replace('{', "{\n  ")
        .replace(',', ",\n  ")
        .replace('}', "\n}\n");
    let sns = serde_json::json!({
        "Type": "Notification", "MessageId": "sns-1",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:events",
        "Message": format!("{}\n{}", app_event("t1", 5), app_event("t1", 6)),
        "MessageAttributes": {},
    })
    .to_string();
    let records = vec![
        with_stream(
            message("audit", &audit_event("t1", "e-1")),
            "airkit-audit-logs",
        ),
        message(
            "array",
            &format!("[{},{}]", app_event("t1", 0), app_event("t1", 1)),
        ),
        message(
            "ndjson",
            &format!("{}\n{}\n", app_event("t1", 2), app_event("t2", 7)),
        ),
        message("pretty", &pretty),
        message("bom", &format!("\u{feff}{}", app_event("t1", 4))),
        message("sns", &sns),
    ];
    let response = invoke(&harness.batcher(), records, "req-2").await.unwrap();
    assert!(response.batch_item_failures.is_empty());

    let partitions = lines_by_partition(&harness.staged().await);
    let expected_t1: Vec<String> = [0, 1, 2, 3, 4, 5, 6]
        .iter()
        .map(|n| app_event("t1", *n))
        .collect();
    assert_eq!(partitions["airkit-app-events/t1"], expected_t1);
    assert_eq!(partitions["airkit-app-events/t2"], vec![app_event("t2", 7)]);
    assert_eq!(
        partitions["airkit-audit-logs/t1"],
        vec![audit_event("t1", "e-1")]
    );
    assert_eq!(partitions.len(), 3);
}

#[tokio::test]
async fn each_rejection_reason_ends_in_errors_with_its_original_body() {
    let harness = Harness::start().await;
    let batcher = harness.batcher_with(harness.s3.clone(), Some(r#"{"maxEventBytes": 4096}"#));
    let oversized = format!(
        r#"{{"organizationId":"t1","eventTime":"2022-11-19T23:00:00Z","type":"x","pad":"{}"}}"#,
        "p".repeat(5000)
    );
    let cases = [
        (
            message("not-json", r#"{"organizationId": "t1", "#),
            "not_json",
        ),
        (message("not-object", r#""just a string""#), "not_an_object"),
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
                r#"{"organizationId":["t1"],"eventTime":"2022-11-19T23:00:00Z","type":"x"}"#,
            ),
            "wrong_type",
        ),
        (
            message(
                "bad-time",
                r#"{"organizationId":"t1","eventTime":"2022-13-45T99:00:00Z","type":"x"}"#,
            ),
            "bad_time",
        ),
        (message("too-large", &oversized), "too_large"),
        (
            with_stream(message("unknown-stream", &app_event("t1", 1)), "billing"),
            "unknown_stream",
        ),
    ];
    let mut records: Vec<SqsMessage> = cases.iter().map(|(m, _)| m.clone()).collect();
    records.push(message("good", &app_event("t1", 9)));
    let response = invoke(&batcher, records, "req-3").await.unwrap();
    assert!(
        response.batch_item_failures.is_empty(),
        "rejections are acknowledged"
    );

    let errors = harness.errors().await;
    assert_eq!(errors.len(), cases.len());
    for (record, (sent, reason)) in errors.iter().zip(&cases) {
        assert_eq!(record["reason"], *reason);
        assert_eq!(record["messageId"], sent.message_id.clone().unwrap());
        assert_eq!(record["body"], sent.body.clone().unwrap());
        assert!(!record["detail"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        errors[6]["messageAttributes"]["stream"]["stringValue"],
        "billing"
    );
    assert!(
        errors[2]["detail"]
            .as_str()
            .unwrap()
            .contains("organizationId")
    );
    let staged = lines_by_partition(&harness.staged().await);
    assert_eq!(staged["airkit-app-events/t1"], vec![app_event("t1", 9)]);
}

#[tokio::test]
async fn missing_bucket_fails_every_message_and_redelivery_stores_them() {
    let harness = Harness::start().await;
    let mut config = Config::clone(&harness.batcher().config());
    config.export_bucket = "not-created-yet".into();
    let batcher = Batcher::new(config, harness.s3.clone());
    let records: Vec<SqsMessage> = (0..5)
        .map(|n| message(&format!("m{n}"), &app_event(&format!("t{}", n % 2), n)))
        .collect();
    let response = invoke(&batcher, records.clone(), "req-4").await.unwrap();
    assert_eq!(failed_ids(&response), vec!["m0", "m1", "m2", "m3", "m4"]);

    harness
        .s3
        .create_bucket()
        .bucket("not-created-yet")
        .send()
        .await
        .unwrap();
    let redelivered: Vec<SqsMessage> = records
        .into_iter()
        .filter(|m| failed_ids(&response).contains(m.message_id.as_ref().unwrap()))
        .collect();
    let retry = invoke(&batcher, redelivered, "req-5").await.unwrap();
    assert!(retry.batch_item_failures.is_empty());
    let stored = lines_by_partition(&staged_objects(&harness.s3, "not-created-yet").await);
    assert_eq!(stored.values().map(Vec::len).sum::<usize>(), 5);
}

#[tokio::test]
async fn failed_object_put_fails_exactly_the_messages_that_fed_it() {
    let harness = Harness::start().await;
    // Partitioned by event time, the 22:xx events are staged in an object
    // of their own, whose PUT fails.
    let document = Some(r#"{"partitionBy":"event"}"#);
    let fault = FailRequestsTo::new("/staging/2022-11-19/22/");
    let faulty = harness.batcher_with(fault.wrap(&harness.s3), document);
    let records = vec![
        message("ok-1", &app_event("tenant-ok", 1)),
        message(
            "mixed",
            &format!(
                "{}\n{}",
                app_event("tenant-ok", 2),
                at_22(app_event("tenant-broken", 3))
            ),
        ),
        message("broken", &at_22(app_event("tenant-broken", 4))),
        message("ok-2", &app_event("tenant-fine", 5)),
        message("rejected", "not json at all"),
    ];
    let response = invoke(&faulty, records.clone(), "req-6").await.unwrap();
    assert_eq!(failed_ids(&response), vec!["broken", "mixed"]);
    assert!(fault.failed() >= 1);

    // SQS redelivers exactly those; with the fault gone they are stored, and
    // nothing is lost (the re-sent `tenant-ok` line is dropped by the flusher).
    let redelivered: Vec<SqsMessage> = records
        .into_iter()
        .filter(|m| failed_ids(&response).contains(m.message_id.as_ref().unwrap()))
        .collect();
    let retry = invoke(
        &harness.batcher_with(harness.s3.clone(), document),
        redelivered,
        "req-7",
    )
    .await
    .unwrap();
    assert!(retry.batch_item_failures.is_empty());
    let partitions = lines_by_partition(&harness.staged().await);
    assert_eq!(
        partitions["airkit-app-events/tenant-broken"],
        vec![
            at_22(app_event("tenant-broken", 3)),
            at_22(app_event("tenant-broken", 4))
        ]
    );
    let mut ok = partitions["airkit-app-events/tenant-ok"].clone();
    ok.sort();
    assert_eq!(
        ok,
        vec![
            app_event("tenant-ok", 1),
            app_event("tenant-ok", 2),
            app_event("tenant-ok", 2)
        ]
    );
    assert_eq!(harness.errors().await.len(), 1);
}

#[tokio::test]
async fn a_failed_sub_batch_fails_exactly_its_messages_including_one_cut_across_two() {
    let harness = Harness::start().await;
    // 1 KiB sub-batches; messages of three events (about 420 bytes) for one
    // tenant, so cuts fall inside messages.
    let document = Some(r#"{"subBatchBytes":1024}"#);
    let fault = FailRequestsTo::new("-req-cut.0001.staged");
    let faulty = harness.batcher_with(fault.wrap(&harness.s3), document);
    let records: Vec<SqsMessage> = (0..8)
        .map(|m| {
            let events: Vec<String> = (0..3).map(|n| app_event("t1", m * 10 + n)).collect();
            message(&format!("m{m}"), &events.join("\n"))
        })
        .collect();
    // Which messages fed which sub-batch, from the same planning.
    let plan = batcher::plan_batch(&faulty.config(), &records, 0, "req-cut");
    let fed = |suffix: &str| -> BTreeSet<String> {
        plan.objects
            .iter()
            .filter(|chunk| chunk.key.ends_with(suffix))
            .flat_map(|chunk| chunk.messages.iter().map(|&i| format!("m{i}")))
            .collect()
    };
    let first = fed("-req-cut.staged");
    let second = fed("-req-cut.0001.staged");
    assert!(
        first.intersection(&second).count() == 1,
        "one message is cut across the first two sub-batches: {first:?} {second:?}"
    );
    assert!(
        plan.objects
            .iter()
            .any(|chunk| chunk.key.ends_with(".0002.staged"))
    );

    let response = invoke(&faulty, records.clone(), "req-cut").await.unwrap();
    assert!(fault.failed() >= 1);
    let failed: BTreeSet<String> = failed_ids(&response).into_iter().collect();
    assert_eq!(
        failed, second,
        "the messages of the failed sub-batch, no others"
    );
    // The sub-batches before and after it were stored.
    let keys = list_keys(&harness.s3, BUCKET, "staging/").await.unwrap();
    assert!(
        keys.iter().any(|key| key.ends_with("-req-cut.staged")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|key| key.ends_with("-req-cut.0002.staged")),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|key| key.contains("-req-cut.0001")),
        "{keys:?}"
    );

    // SQS redelivers the failed ones; stored, every event is staged (the
    // cut message's first events twice, which the flusher drops).
    let redelivered: Vec<SqsMessage> = records
        .iter()
        .filter(|m| failed.contains(m.message_id.as_ref().unwrap()))
        .cloned()
        .collect();
    let retry = invoke(
        &harness.batcher_with(harness.s3.clone(), document),
        redelivered,
        "req-again",
    )
    .await
    .unwrap();
    assert!(retry.batch_item_failures.is_empty());
    let staged: BTreeSet<String> =
        lines_by_partition(&harness.staged().await)["airkit-app-events/t1"]
            .iter()
            .cloned()
            .collect();
    let every: BTreeSet<String> = (0..8)
        .flat_map(|m| (0..3).map(move |n| app_event("t1", m * 10 + n)))
        .collect();
    assert_eq!(staged, every);
}

#[tokio::test]
async fn failed_errors_put_fails_exactly_the_rejected_messages() {
    let harness = Harness::start().await;
    let fault = FailRequestsTo::new("/errors/");
    let faulty = harness.batcher_with(fault.wrap(&harness.s3), None);
    let records = vec![
        message("good", &app_event("t1", 1)),
        message("bad", "{oops"),
        message("half", &format!("{}\n{{oops", app_event("t1", 2))),
    ];
    let response = invoke(&faulty, records, "req-8").await.unwrap();
    assert_eq!(failed_ids(&response), vec!["bad", "half"]);
    assert_eq!(
        lines_by_partition(&harness.staged().await)["airkit-app-events/t1"].len(),
        2
    );
    assert!(harness.errors().await.is_empty());
}

#[tokio::test]
async fn missing_credentials_fail_the_invocation() {
    #[derive(Debug)]
    struct NoCredentials;
    impl aws_credential_types::provider::ProvideCredentials for NoCredentials {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                aws_credential_types::provider::error::CredentialsError::not_loaded(
                    "no credentials in this test",
                ),
            ))
        }
    }
    let harness = Harness::start().await;
    let config = harness
        .s3
        .config()
        .to_builder()
        .credentials_provider(NoCredentials)
        .build();
    let batcher = harness.batcher_with(aws_sdk_s3::Client::from_conf(config), None);
    let result = invoke(&batcher, vec![message("m1", &app_event("t1", 1))], "req-9").await;
    assert!(
        matches!(result, Err(BatcherError::Credentials(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn ten_thousand_message_batch_is_staged_whole() {
    let harness = Harness::start().await;
    let records: Vec<SqsMessage> = (0..10_000)
        .map(|n| message(&format!("m{n:05}"), &app_event(&format!("t{}", n % 25), n)))
        .collect();
    let response = invoke(&harness.batcher(), records, "req-10").await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    let staged = harness.staged().await;
    assert_eq!(staged.len(), 1, "one object for the hour");
    assert_eq!(staged[0].segments.len(), 25, "a segment a tenant");
    let partitions = lines_by_partition(&staged);
    for tenant in 0..25 {
        let expected: Vec<String> = (0..10_000)
            .filter(|n| n % 25 == tenant)
            .map(|n| app_event(&format!("t{tenant}"), n))
            .collect();
        assert_eq!(
            partitions[&format!("airkit-app-events/t{tenant}")],
            expected
        );
    }
}

#[tokio::test]
async fn one_mebibyte_bodies_are_staged() {
    let harness = Harness::start().await;
    const MIB: usize = 1024 * 1024;
    // One event of exactly 1 MiB (the default maximum event size).
    let head = r#"{"organizationId":"big","eventTime":"2022-11-19T23:00:00Z","type":"x","pad":""#;
    let single = format!("{head}{}\"}}", "p".repeat(MIB - head.len() - 2));
    assert_eq!(single.len(), MIB);
    // And 1 MiB of NDJSON, many events.
    let mut ndjson = String::new();
    let mut n = 0;
    while ndjson.len() + 200 < MIB {
        ndjson.push_str(&app_event("many", n));
        ndjson.push('\n');
        n += 1;
    }
    let response = invoke(
        &harness.batcher(),
        vec![message("single", &single), message("ndjson", &ndjson)],
        "req-11",
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let partitions = lines_by_partition(&harness.staged().await);
    assert_eq!(partitions["airkit-app-events/big"], vec![single]);
    assert_eq!(partitions["airkit-app-events/many"].len(), n);
}

#[tokio::test]
async fn hostile_tenant_ids_cannot_escape_the_staging_prefix() {
    let harness = Harness::start().await;
    let long = "L".repeat(2048);
    let tenants = [
        "../x",
        "a/b",
        "../../errors/x",
        "..",
        ".",
        "a\u{1}b",
        long.as_str(),
        "%2E%2E",
    ];
    let records: Vec<SqsMessage> = tenants
        .iter()
        .enumerate()
        .map(|(n, tenant)| {
            let event = serde_json::json!({"organizationId": tenant, "eventTime": "2022-11-19T23:00:00Z", "type": "x"});
            message(&format!("m{n}"), &event.to_string())
        })
        .collect();
    let response = invoke(&harness.batcher(), records, "req-12").await.unwrap();
    assert!(response.batch_item_failures.is_empty());

    // One object, its key made of the hour and the invocation only: no
    // tenant id reaches a key.
    let keys = list_keys(&harness.s3, BUCKET, "").await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:#?}");
    let segments: Vec<&str> = keys[0].split('/').collect();
    assert_eq!(segments.len(), 4, "{}", keys[0]);
    assert_eq!(&segments[..3], ["staging", "2022-11-19", "23"]);
    assert!(segments[3].ends_with("-req-12.staged"), "{}", keys[0]);
    let staged = harness.staged().await;
    assert_eq!(
        staged[0].segments.len(),
        tenants.len(),
        "a segment a tenant"
    );
    // The index holds each tenant's key segment, and every event still
    // carries its original tenant id.
    let mut originals: Vec<String> = staged[0]
        .segments
        .iter()
        .map(|(segment, lines)| {
            let event = serde_json::from_str::<Value>(&event_of(&lines[0])).unwrap();
            let tenant = event["organizationId"].as_str().unwrap().to_owned();
            assert_eq!(
                segment.tenant,
                shared::partition::TenantKey::encode(&tenant).as_str()
            );
            assert!(
                !segment.tenant.contains('/') && segment.tenant != "." && segment.tenant != "..",
                "{}",
                segment.tenant
            );
            tenant
        })
        .collect();
    originals.sort();
    let mut sent: Vec<String> = tenants.iter().map(|t| t.to_string()).collect();
    sent.sort();
    assert_eq!(originals, sent);
}

/// Through real SQS: the event source mapping emulation delivers, the batcher
/// reports the messages whose staged object failed, SQS redelivers exactly
/// those after the visibility timeout, and once the fault clears every
/// event is staged.
#[tokio::test]
async fn failed_messages_come_back_through_sqs_and_are_stored() {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
    use s3_export::esm::{EventSourceMapping, approximate_message_count, create_queue_with_dlq};
    use std::time::Duration;

    let harness = Harness::start().await;
    let sqs = harness._moto.sqs_client().await;
    // A visibility timeout longer than a loaded machine's moto takes to hand
    // over the 40 messages, so that none comes back within the first batch.
    let queues = create_queue_with_dlq(&sqs, "events", 5, 5).await.unwrap();
    // Partitioned by event time, the broken tenant's events are at 22:xx,
    // in an object of their own, whose PUT fails.
    let document = Some(r#"{"partitionBy":"event"}"#);
    let bodies: Vec<String> = (0..40)
        .map(|n| {
            if n % 4 == 0 {
                at_22(app_event("tenant-broken", n))
            } else {
                app_event("tenant-ok", n)
            }
        })
        .collect();
    for (batch, chunk) in bodies.chunks(10).enumerate() {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(n, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("e{batch}-{n}"))
                    .message_body(body)
                    .build()
                    .unwrap()
            })
            .collect();
        sqs.send_message_batch()
            .queue_url(&queues.url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
    }

    let fault = FailRequestsTo::new("/staging/2022-11-19/22/");
    let batcher = harness.batcher_with(fault.wrap(&harness.s3), document);
    let mapping = EventSourceMapping::new(
        sqs.clone(),
        &queues.url,
        &queues.arn,
        100,
        Duration::from_secs(1),
    )
    .unwrap();
    let mut invocation = 0;
    let mut handler = |event: SqsEvent| {
        invocation += 1;
        let mut context = Context::default();
        context.request_id = format!("req-{invocation}");
        let batcher = &batcher;
        async move {
            batcher::handle(batcher, LambdaEvent::new(event, context))
                .await
                .map_err(lambda_runtime::Error::from)
        }
    };
    let first = mapping.poll_once(&mut handler).await.unwrap();
    assert_eq!(first.received, 40);
    assert_eq!(first.failed.len(), 10, "the ten tenant-broken messages");
    assert_eq!(first.deleted, 30);

    fault.heal();
    let rest = mapping
        .drain(&mut handler, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(rest.received, 10);
    assert!(rest.failed.is_empty());
    assert_eq!(
        approximate_message_count(&sqs, &queues.dlq_url)
            .await
            .unwrap(),
        0
    );

    let partitions = lines_by_partition(&harness.staged().await);
    let mut broken = partitions["airkit-app-events/tenant-broken"].clone();
    broken.sort();
    let mut expected: Vec<String> = (0..40)
        .filter(|n| n % 4 == 0)
        .map(|n| at_22(app_event("tenant-broken", n)))
        .collect();
    expected.sort();
    assert_eq!(
        broken, expected,
        "each once: the failed object was never stored"
    );
    assert_eq!(partitions["airkit-app-events/tenant-ok"].len(), 30);
}

/// The issue's shape: a thousand tenants over two streams in one batch cost
/// one staged object (one PUT for the hour), plus one errors file for the
/// rejected record, whatever the tenant count, counted from the requests
/// that reached S3 through the fault proxy; each event is in its
/// partition's segment exactly once.
#[tokio::test]
async fn a_thousand_tenants_over_two_streams_are_one_staged_object_and_one_errors_file() {
    let harness = Harness::start().await;
    let tenants: Vec<String> = (0..1_000).map(|n| format!("tenant-{n:04}")).collect();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut records = Vec::new();
    // App events: NDJSON bodies of 40 events, two per tenant over the batch.
    let app: Vec<(String, String)> = (0..2_000)
        .map(|n| {
            let tenant = &tenants[(n * 7) % tenants.len()];
            (tenant.clone(), app_event(tenant, n))
        })
        .collect();
    for (m, group) in app.chunks(40).enumerate() {
        let body: Vec<&str> = group.iter().map(|(_, e)| e.as_str()).collect();
        records.push(message(&format!("app-{m}"), &body.join("\n")));
        for (tenant, event) in group {
            expected
                .entry(format!("airkit-app-events/{tenant}"))
                .or_default()
                .push(event.clone());
        }
    }
    // Audit events: one per tenant, 25 a message.
    for (m, group) in tenants.chunks(25).enumerate() {
        let events: Vec<String> = group
            .iter()
            .map(|tenant| audit_event(tenant, &format!("e-{tenant}")))
            .collect();
        records.push(with_stream(
            message(&format!("audit-{m}"), &events.join("\n")),
            "airkit-audit-logs",
        ));
        for (tenant, event) in group.iter().zip(events) {
            expected
                .entry(format!("airkit-audit-logs/{tenant}"))
                .or_default()
                .push(event);
        }
    }
    records.push(message("rejected", "not json"));
    let proxy = FaultProxy::start(&harness._moto.endpoint(), FaultPlan::none())
        .await
        .unwrap();
    let through_proxy = proxy.s3_client(&harness.s3);
    let batcher = harness.batcher_with(through_proxy, None);
    let response = invoke(&batcher, records, "req-wide").await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    let puts: Vec<String> = proxy
        .request_log()
        .iter()
        .filter(|request| request.puts_object(BUCKET))
        .map(|request| request.key())
        .collect();
    assert_eq!(
        puts.len(),
        2,
        "one PUT for the hour, one for errors/: {puts:?}"
    );

    let keys = list_keys(&harness.s3, BUCKET, "").await.unwrap();
    assert_eq!(
        keys.len(),
        2,
        "one staged object and one errors file: {keys:?}"
    );
    let (staged_key, errors_key) = (&keys[1], &keys[0]);
    assert!(
        staged_key.starts_with("staging/2022-11-19/23/")
            && staged_key.ends_with("-req-wide.staged"),
        "{staged_key}"
    );
    assert!(errors_key.starts_with("errors/"), "{errors_key}");
    for (key, content_type) in [
        (staged_key, "application/octet-stream"),
        (errors_key, "application/gzip"),
    ] {
        let head = harness
            .s3
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_type(), Some(content_type), "{key}");
    }

    let staged = harness.staged().await;
    assert_eq!(staged[0].segments.len(), 2_000, "a segment a partition");
    assert_eq!(lines_by_partition(&staged), expected, "each event once");
    let errors = harness.errors().await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["messageId"], "rejected");
}
