//! Crashes: the compiled batcher and flusher binaries, run through the
//! Runtime API emulator with their S3 traffic through the fault proxy, are
//! killed with SIGKILL (a process abort, not a clean error) when the proxy
//! sees the Nth request of a kind: in the middle of the batcher's staging
//! PUTs, and at each step of the flusher (archive part, id digest, manifest
//! commit, destination PUT, manifest update, chunk deletion), before or after
//! moto applied the request. Then the function runs again, as Lambda's retry
//! or the next schedule would, and the result is read back: each event once
//! in the archive and in the destination, nothing lost, nothing left staged,
//! and the archive parts byte-identical to those of a flush that never
//! crashed.
//!
//! The binaries are those `cargo build --workspace --bins` builds
//! (`./scripts/test.sh` does); `S3_EXPORT_BIN_DIR` points elsewhere.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use batcher::Batcher;
use flusher::{Flusher, Trigger};
use lambda_runtime::LambdaEvent;
use s3_export::fault_proxy::{FaultPlan, FaultProxy, KillMoment, KillRule, RequestInfo};
use s3_export::inspect::{StoredFile, archive_parts, list_keys, read_archive, read_gzip_ndjson};
use s3_export::moto::MotoServer;
use s3_export::runtime_api::{Answer, RuntimeApi, function_command};
use s3_export::workload::{self, StreamMix, WorkloadSpec};
use serde_json::{Value, json};
use shared::Config;
use tokio::process::Child;

const EXPORT: &str = "crash-export";
const REFERENCE: &str = "crash-reference";
const DESTINATION: &str = "crash-destination";
const WAIT: Duration = Duration::from_secs(120);
/// The hour every message was sent in (SentTimestamp), and the flush that
/// closes it.
const SENT_MILLIS: i64 = 1_795_338_000_000 + 17 * 60_000; // 2026-11-22T09:17Z
const FLUSH_UNTIL: &str = "2026-11-22T10:00:00Z";

/// The environment both the binaries and the in-process functions read.
fn setting(name: &str, export_bucket: &str) -> Option<String> {
    match name {
        "EXPORT_BUCKET" => Some(export_bucket.to_owned()),
        "DESTINATION_BUCKET" => Some(DESTINATION.to_owned()),
        "DESTINATION_PREFIX" => Some("exports/".to_owned()),
        // The batch is one hour: one staged object, unless the batcher
        // cuts it into sub-batches; small ones give the kill below several
        // staging PUTs to land between.
        "SUB_BATCH_BYTES" => Some("1024".to_owned()),
        _ => None,
    }
}

fn config(export_bucket: &str) -> Config {
    Config::from_sources(|name| setting(name, export_bucket), None).unwrap()
}

/// The reference flush's configuration: the reference bucket, and no
/// destination, so that the destination holds only what the test's runs put.
fn reference_config() -> Config {
    Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| REFERENCE.to_owned()),
        None,
    )
    .unwrap()
}

/// A function process with Lambda's environment, its AWS traffic through
/// `endpoint`.
fn spawn(name: &str, runtime: &RuntimeApi, endpoint: &str) -> Child {
    let mut command = function_command(name, runtime, endpoint);
    command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for name in [
        "EXPORT_BUCKET",
        "DESTINATION_BUCKET",
        "DESTINATION_PREFIX",
        "SUB_BATCH_BYTES",
    ] {
        command.env(name, setting(name, EXPORT).unwrap());
    }
    command.spawn().expect("the binary starts")
}

/// Runs `name` with `payload` through `proxy`, whose kill rule must fire:
/// returns once the process has died of SIGKILL.
async fn run_until_killed(name: &str, proxy: &FaultProxy, kill: &KillRule, payload: Value) {
    let runtime = RuntimeApi::start().await.unwrap();
    let mut child = spawn(name, &runtime, &proxy.endpoint());
    kill.pid
        .store(child.id().expect("a running process"), Ordering::SeqCst);
    runtime.first_poll(WAIT).await.unwrap();
    tokio::select! {
        status = child.wait() => {
            use std::os::unix::process::ExitStatusExt;
            let status = status.unwrap();
            assert_eq!(status.signal(), Some(9), "{name} ended with {status}, not SIGKILL");
        }
        answer = runtime.invoke(payload, WAIT) => {
            panic!("{name} was not killed (it answered {answer:?})");
        }
    }
    assert!(proxy.killed_at().is_some());
}

/// Runs `name` with `payload` through `endpoint` to its answer.
async fn run_to_answer(name: &str, endpoint: &str, payload: Value) -> Answer {
    let runtime = RuntimeApi::start().await.unwrap();
    let _child = spawn(name, &runtime, endpoint);
    runtime.first_poll(WAIT).await.unwrap();
    runtime.invoke(payload, WAIT).await.unwrap()
}

/// An SQS event of the workload's messages (about 60 messages, 4 tenants,
/// both streams, re-sends and malformed records), all sent in one hour.
fn sqs_event(workload: &workload::Workload) -> Value {
    let records: Vec<Value> = workload
        .messages
        .iter()
        .enumerate()
        .map(|(n, message)| {
            let mut attributes = json!({});
            if let Some(stream) = &message.stream {
                attributes = json!({"stream": {"stringValue": stream, "dataType": "String"}});
            }
            json!({
                "messageId": format!("00000000-0000-4000-8000-{n:012}"),
                "receiptHandle": format!("receipt-{n}"),
                "body": message.body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": (SENT_MILLIS + n as i64).to_string(),
                    "SenderId": "AROAEXAMPLE:producer",
                    "ApproximateFirstReceiveTimestamp": (SENT_MILLIS + n as i64 + 40).to_string(),
                },
                "messageAttributes": attributes,
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:s3-export-events",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records })
}

fn workload() -> workload::Workload {
    workload::generate(&WorkloadSpec {
        events: 150,
        tenants: 4,
        seed: 10,
        now_millis: SENT_MILLIS,
        spread_millis: workload::HOUR_MILLIS,
        streams: StreamMix::Both,
    })
}

fn expected_lines(workload: &workload::Workload) -> Vec<String> {
    let mut lines: Vec<String> = workload
        .expected
        .lines
        .values()
        .flatten()
        .cloned()
        .collect();
    lines.sort();
    lines.dedup();
    lines
}

fn sorted_lines(files: &[StoredFile]) -> Vec<String> {
    let mut lines: Vec<String> = files.iter().flat_map(|f| f.lines.clone()).collect();
    lines.sort();
    lines
}

async fn setup() -> (MotoServer, aws_sdk_s3::Client) {
    let moto = MotoServer::start().await.unwrap();
    let s3 = moto.s3_client().await;
    for bucket in [EXPORT, REFERENCE, DESTINATION] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    (moto, s3)
}

/// Stages the workload with the in-process batcher, straight to moto.
async fn stage(s3: &aws_sdk_s3::Client, event: &Value) {
    let batcher = Batcher::new(config(EXPORT), s3.clone());
    let event: SqsEvent = serde_json::from_value(event.clone()).unwrap();
    let mut context = lambda_runtime::Context::default();
    context.request_id = "stage-0001".into();
    let response = batcher::handle(&batcher, LambdaEvent::new(event, context))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
}

/// The archive of a flush that never crashed: the same staged chunks,
/// copied to the reference bucket and flushed in-process.
async fn reference_archive(s3: &aws_sdk_s3::Client) -> BTreeMap<String, Vec<u8>> {
    for key in list_keys(s3, EXPORT, "staging/").await.unwrap() {
        s3.copy_object()
            .bucket(REFERENCE)
            .key(&key)
            .copy_source(format!("{EXPORT}/{key}"))
            .send()
            .await
            .unwrap();
    }
    let flusher = Flusher::new(reference_config(), s3.clone());
    let trigger = Trigger::from_payload(&json!({"flush": {"until": FLUSH_UNTIL}})).unwrap();
    let report = flusher::run(&flusher, &trigger, None).await.unwrap();
    assert_eq!(report.failed, 0);
    assert!(list_keys(s3, DESTINATION, "").await.unwrap().is_empty());
    archive_bytes(s3, REFERENCE).await
}

async fn archive_bytes(s3: &aws_sdk_s3::Client, bucket: &str) -> BTreeMap<String, Vec<u8>> {
    // The parts the manifests commit, wherever they are stored (a bundle
    // of a killed run is no part of the archive).
    archive_parts(s3, bucket, "").await.unwrap()
}

/// Each expected event once in the archive and the destination, nothing
/// left staged or pending.
async fn assert_converged(s3: &aws_sdk_s3::Client, want: &[String]) {
    let archive = read_archive(s3, EXPORT, "").await.unwrap();
    assert_eq!(sorted_lines(&archive), want, "the archive");
    let published = read_gzip_ndjson(s3, DESTINATION, "exports/").await.unwrap();
    assert_eq!(sorted_lines(&published), want, "the destination");
    assert!(list_keys(s3, EXPORT, "staging/").await.unwrap().is_empty());
    assert!(list_keys(s3, EXPORT, "pending/").await.unwrap().is_empty());
}

/// Runs the flusher binary again until a run succeeds (the next schedule).
async fn flush_again(endpoint: &str) {
    for _ in 0..3 {
        if let Answer::Response(report) = run_to_answer(
            "flusher",
            endpoint,
            json!({"flush": {"until": FLUSH_UNTIL}}),
        )
        .await
        {
            assert_eq!(report["failed"], 0, "{report}");
            return;
        }
    }
    panic!("the flusher did not succeed again after the crash");
}

/// Stages the workload, kills the flusher binary where `kill` says, runs it
/// again, and checks convergence against a flush that never crashed.
async fn flusher_killed(kill: KillRule) {
    flusher_killed_with(kill, false).await;
}

/// Like [`flusher_killed`]; with `destination_missing`, the destination
/// bucket is created only after the crash, so the crashed run's publishes
/// fail and are left pending.
async fn flusher_killed_with(kill: KillRule, destination_missing: bool) {
    let (moto, s3) = setup().await;
    let workload = workload();
    stage(&s3, &sqs_event(&workload)).await;
    let reference = reference_archive(&s3).await;
    assert!(reference.len() > 3, "too few parts to crash between");
    if destination_missing {
        s3.delete_bucket().bucket(DESTINATION).send().await.unwrap();
    }

    let proxy =
        FaultProxy::start_with_kill(&moto.endpoint(), FaultPlan::none(), Some(kill.clone()))
            .await
            .unwrap();
    run_until_killed(
        "flusher",
        &proxy,
        &kill,
        json!({"flush": {"until": FLUSH_UNTIL}}),
    )
    .await;
    if destination_missing {
        assert!(!list_keys(&s3, EXPORT, "pending/").await.unwrap().is_empty());
        s3.create_bucket().bucket(DESTINATION).send().await.unwrap();
    }
    flush_again(&proxy.endpoint()).await;

    assert_converged(&s3, &expected_lines(&workload)).await;
    let archive = archive_bytes(&s3, EXPORT).await;
    assert_eq!(
        archive.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>()
    );
    for (key, bytes) in &archive {
        assert!(
            bytes == &reference[key],
            "{key} differs from the uncrashed flush"
        );
    }
}

fn writes(bucket: &'static str, prefix: &'static str) -> impl Fn(&RequestInfo) -> bool {
    move |request| request.writes(bucket, prefix)
}

#[tokio::test]
async fn flusher_killed_while_storing_its_bundle_converges() {
    // The bundle holds every partition's parts and id digest.
    flusher_killed(KillRule::new(
        1,
        KillMoment::BeforeForwarding,
        writes(EXPORT, "archive/"),
    ))
    .await;
}

#[tokio::test]
async fn flusher_killed_after_storing_its_bundle_converges() {
    // Stored, but named by no manifest yet.
    flusher_killed(KillRule::new(
        1,
        KillMoment::AfterForwarding,
        writes(EXPORT, "archive/"),
    ))
    .await;
}

#[tokio::test]
async fn flusher_killed_after_the_manifest_commit_converges() {
    flusher_killed(KillRule::new(1, KillMoment::AfterForwarding, |r| {
        r.writes(EXPORT, "manifests/") && r.key().ends_with(".json")
    }))
    .await;
}

#[tokio::test]
async fn flusher_killed_before_its_first_destination_write_converges() {
    flusher_killed(KillRule::new(
        1,
        KillMoment::BeforeForwarding,
        writes(DESTINATION, ""),
    ))
    .await;
}

#[tokio::test]
async fn flusher_killed_after_a_destination_write_landed_converges() {
    flusher_killed(KillRule::new(
        2,
        KillMoment::AfterForwarding,
        writes(DESTINATION, ""),
    ))
    .await;
}

#[tokio::test]
async fn flusher_killed_between_two_commits_converges() {
    // The second manifest write of the run: one partition committed (and
    // perhaps published), the next committed, nothing deleted yet.
    flusher_killed(KillRule::new(2, KillMoment::AfterForwarding, |r| {
        r.writes(EXPORT, "manifests/") && r.key().ends_with(".json")
    }))
    .await;
}

#[tokio::test]
async fn flusher_killed_after_marking_a_publish_pending_converges() {
    flusher_killed_with(
        KillRule::new(1, KillMoment::AfterForwarding, writes(EXPORT, "pending/")),
        true,
    )
    .await;
}

#[tokio::test]
async fn flusher_killed_before_deleting_consumed_chunks_converges() {
    flusher_killed(KillRule::new(1, KillMoment::BeforeForwarding, |r| {
        r.deletes(EXPORT)
    }))
    .await;
}

#[tokio::test]
async fn flusher_killed_after_deleting_some_chunks_converges() {
    flusher_killed(KillRule::new(1, KillMoment::AfterForwarding, |r| {
        r.deletes(EXPORT)
    }))
    .await;
}

#[tokio::test]
async fn batcher_killed_in_the_middle_of_its_puts_converges_after_redelivery() {
    let (moto, s3) = setup().await;
    let workload = workload();
    let event = sqs_event(&workload);
    let kill = KillRule::new(3, KillMoment::AfterForwarding, writes(EXPORT, "staging/"));
    let proxy =
        FaultProxy::start_with_kill(&moto.endpoint(), FaultPlan::none(), Some(kill.clone()))
            .await
            .unwrap();
    run_until_killed("batcher", &proxy, &kill, event.clone()).await;
    let staged_before = list_keys(&s3, EXPORT, "staging/").await.unwrap().len();
    assert!(
        staged_before >= 3,
        "{staged_before} staged objects (sub-batches) before the kill"
    );

    // The invocation failed, so Lambda delivers the whole batch again.
    match run_to_answer("batcher", &proxy.endpoint(), event).await {
        Answer::Response(answer) => assert_eq!(answer["batchItemFailures"], json!([])),
        Answer::Error(error) => panic!("the batcher failed again: {error}"),
    }
    let staged_after = list_keys(&s3, EXPORT, "staging/").await.unwrap().len();
    assert!(staged_after > staged_before);

    // The next schedule flushes it; the objects of the killed run duplicate
    // events of the retried one, and are dropped.
    flush_again(&proxy.endpoint()).await;
    assert_converged(&s3, &expected_lines(&workload)).await;
    let errors = read_gzip_ndjson(&s3, EXPORT, "errors/").await.unwrap();
    let rejected: usize = workload.expected.rejected.values().sum();
    let lines: usize = errors.iter().map(|f| f.lines.len()).sum();
    assert!(
        lines >= rejected,
        "{lines} rejected records in errors/, {rejected} sent"
    );
}

/// A flush worker (the compiled flusher, given a work item from the flush
/// queue as Lambda's event source mapping would) killed after its first
/// manifest commit: its item was not acknowledged, so SQS delivers it
/// again, and the next attempt, then the run's other items, converge:
/// each event once, the parts byte-identical to a flush that never
/// crashed, the staged objects and the run's records deleted.
#[tokio::test]
async fn flush_worker_killed_after_a_commit_converges_when_its_item_comes_back() {
    use flusher::coordinator::{FlushQueue, coordinate};
    use s3_export::esm::{create_queue_with_dlq, lambda_record};

    let (moto, s3) = setup().await;
    let workload = workload();
    stage(&s3, &sqs_event(&workload)).await;
    let reference = reference_archive(&s3).await;

    // The coordinator, in-process: items of one or two partitions.
    let sqs = moto.sqs_client().await;
    let queues = create_queue_with_dlq(&sqs, "flush", 3, 600).await.unwrap();
    let coordinator_config = Config::from_sources(
        |name| match name {
            "WORK_ITEM_BYTES" => Some("1024".to_owned()),
            other => setting(other, EXPORT),
        },
        None,
    )
    .unwrap();
    let mut coordinator = Flusher::new(coordinator_config, s3.clone());
    let queue = FlushQueue {
        sqs: sqs.clone(),
        url: queues.url.clone(),
    };
    coordinator.queue = Some(queue.clone());
    let trigger = Trigger::from_payload(&json!({"flush": {"until": FLUSH_UNTIL}})).unwrap();
    let planned = coordinate(&coordinator, &queue, &trigger, None)
        .await
        .unwrap();
    assert!(planned.items >= 3, "{planned:?}");

    let mut records = Vec::new();
    while records.len() < planned.items {
        let received = sqs
            .receive_message()
            .queue_url(&queues.url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        records.extend(
            received
                .messages
                .unwrap_or_default()
                .into_iter()
                .map(|m| lambda_record(m, &queues.arn, "us-east-1")),
        );
    }
    let event = |record| {
        let mut event = SqsEvent::default();
        event.records = vec![record];
        serde_json::to_value(event).unwrap()
    };
    let first = event(records.remove(0));

    let kill = KillRule::new(1, KillMoment::AfterForwarding, |r| {
        r.writes(EXPORT, "manifests/") && r.key().ends_with(".json")
    });
    let proxy =
        FaultProxy::start_with_kill(&moto.endpoint(), FaultPlan::none(), Some(kill.clone()))
            .await
            .unwrap();
    run_until_killed("flusher", &proxy, &kill, first.clone()).await;

    // Delivered again: the worker finishes it.
    match run_to_answer("flusher", &proxy.endpoint(), first).await {
        Answer::Response(answer) => assert_eq!(answer["batchItemFailures"], json!([])),
        Answer::Error(error) => panic!("the worker failed again: {error}"),
    }
    // The run's other items.
    for record in records {
        match run_to_answer("flusher", &proxy.endpoint(), event(record)).await {
            Answer::Response(answer) => assert_eq!(answer["batchItemFailures"], json!([])),
            Answer::Error(error) => panic!("a worker failed: {error}"),
        }
    }

    assert_converged(&s3, &expected_lines(&workload)).await;
    assert_eq!(archive_bytes(&s3, EXPORT).await, reference);
    assert!(list_keys(&s3, EXPORT, "work/").await.unwrap().is_empty());
}
