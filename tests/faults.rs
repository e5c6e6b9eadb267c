//! The whole pipeline under injected faults: a seeded workload goes through
//! SQS, the event source mapping emulation and the real batcher, then the
//! real flusher closes every hour into the archive and a destination, while
//! every request of the functions (S3) and of the mapping (SQS) passes
//! through the fault proxy, which fails 10% of them (500, 503 SlowDown,
//! throttling, delays, connection resets, truncated answers). The producers
//! and the final read-back talk to moto directly.
//!
//! Proven by reading the files back: every accepted event exactly once in
//! the archive and in the destination, every rejected record in `errors/`
//! with its reason, nothing left staged or pending, nothing in the DLQ; and
//! the proxy did inject failures (so the test can fail).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_lambda_events::event::sqs::SqsEvent;
use batcher::Batcher;
use flusher::{Flusher, Trigger};
use lambda_runtime::LambdaEvent;
use s3_export::esm::{EventSourceMapping, approximate_message_count, create_queue_with_dlq};
use s3_export::fault_proxy::{FaultPlan, FaultProxy, RequestFilter};
use s3_export::inspect::{StoredFile, list_keys, read_export_files, read_gzip_ndjson};
use s3_export::moto::MotoServer;
use s3_export::workload::{self, StreamMix, WorkloadSpec};
use shared::Config;
use shared::partition::Hour;

const EXPORT: &str = "faults-export";
const DESTINATION: &str = "faults-destination";
const FAULT_RATE: f64 = 0.10;
const EVENTS: usize = 1200;
const WAVE: usize = 200;
/// Generous: failures come back through the queue, each after a visibility
/// timeout, and a message must not reach the DLQ by bad luck.
const MAX_RECEIVE_COUNT: u32 = 20;
const VISIBILITY_TIMEOUT_SECS: u32 = 1;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Flush runs before giving up: each is one scheduled run of the flusher.
/// Without SDK retries every request of a partition's run must pass: with
/// ~20 chunks (a loaded machine makes small batches) a partition succeeds in
/// one run of twenty, and the slowest of a dozen partitions needs ~60 runs;
/// each run is quick, and 400 leave a wide margin.
const FLUSH_RUNS: usize = 400;

/// What a faulty run left behind, read back from moto directly.
struct Outcome {
    archive: Vec<StoredFile>,
    published: Vec<StoredFile>,
    errors: Vec<StoredFile>,
    left_staged: usize,
    left_pending: usize,
    dead_letters: u64,
    expected_lines: Vec<String>,
    expected_rejected: BTreeMap<String, usize>,
    /// Failures the proxy injected (errors the callers saw).
    failures_injected: usize,
    /// Batches the mapping saw fail (reported failures or handler errors),
    /// SQS calls of the mapping that failed, flush runs with failed partitions.
    failed_batches: usize,
    failed_polls: usize,
    failed_flush_runs: usize,
}

/// The fault seed: `FAULT_SEED` when set (to replay a failing run, whose
/// seed the test prints), else `default`.
fn seed(default: u64) -> u64 {
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default);
    println!("fault seed {seed} (FAULT_SEED={seed} replays it)");
    seed
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// An SDK configuration for `endpoint`, with `max_attempts` per request.
async fn sdk_for(endpoint: &str, max_attempts: u32) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "faults",
        ))
        .retry_config(RetryConfig::standard().with_max_attempts(max_attempts))
        .load()
        .await
}

fn s3_for(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    )
}

/// Runs the pipeline with every function request through a proxy injecting
/// `plan`; the functions' SDK clients make `max_attempts` attempts each.
async fn run_under_faults(plan: FaultPlan, max_attempts: u32) -> Outcome {
    let moto = MotoServer::start().await.unwrap();
    let proxy = FaultProxy::start(&moto.endpoint(), plan).await.unwrap();
    let s3 = moto.s3_client().await;
    let sqs = moto.sqs_client().await;
    for bucket in [EXPORT, DESTINATION] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let queues = create_queue_with_dlq(
        &sqs,
        "faults-events",
        MAX_RECEIVE_COUNT,
        VISIBILITY_TIMEOUT_SECS,
    )
    .await
    .unwrap();

    let faulty = sdk_for(&proxy.endpoint(), max_attempts).await;
    let faulty_s3 = s3_for(&faulty);
    let faulty_sqs = aws_sdk_sqs::Client::new(&faulty);
    let document = serde_json::json!({
        "destinations": [{"name": "faulty", "bucket": DESTINATION, "prefix": "exports/", "shared": true}]
    })
    .to_string();
    let config = Config::from_sources(
        |name| (name == shared::config::env::EXPORT_BUCKET).then(|| EXPORT.to_owned()),
        Some(&document),
    )
    .unwrap();
    let workload = workload::generate(&WorkloadSpec {
        events: EVENTS,
        tenants: 3,
        seed: 10,
        now_millis: now_millis(),
        spread_millis: workload::HOUR_MILLIS,
        streams: StreamMix::Both,
    });

    let batcher = Batcher::new(config.clone(), faulty_s3.clone());
    let mapping = EventSourceMapping::new(
        faulty_sqs,
        &queues.url,
        &queues.arn,
        100,
        Duration::from_secs(1),
    )
    .unwrap();
    let invocations = AtomicUsize::new(0);
    let mut handler = |event: SqsEvent| {
        let n = invocations.fetch_add(1, Ordering::SeqCst);
        let mut context = lambda_runtime::Context::default();
        context.request_id = format!("faults-{n:05}");
        let batcher = &batcher;
        async move {
            batcher::handle(batcher, LambdaEvent::new(event, context))
                .await
                .map_err(lambda_runtime::Error::from)
        }
    };

    // The mapping's SQS calls fail too; like Lambda's poller, it just polls
    // again. Failed batches come back after the visibility timeout.
    let (mut failed_batches, mut failed_polls) = (0, 0);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    for wave in workload.messages.chunks(WAVE) {
        s3_export::local::send(&sqs, &queues.url, wave)
            .await
            .unwrap();
        loop {
            match mapping.poll_once(&mut handler).await {
                Ok(poll) if poll.received == 0 => break,
                Ok(poll) => {
                    failed_batches +=
                        usize::from(!poll.failed.is_empty() || poll.handler_error.is_some());
                }
                Err(_) => failed_polls += 1,
            }
        }
    }
    loop {
        let remaining = approximate_message_count(&sqs, &queues.url).await.unwrap();
        if remaining == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{remaining} messages still queued after {DRAIN_TIMEOUT:?}"
        );
        match mapping.poll_once(&mut handler).await {
            Ok(poll) if poll.received == 0 => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(poll) => {
                failed_batches +=
                    usize::from(!poll.failed.is_empty() || poll.handler_error.is_some())
            }
            Err(_) => failed_polls += 1,
        }
    }

    // The schedule: the flusher runs until a run leaves nothing to do, as
    // the hourly schedule would retry what failed.
    let until = Hour::containing(now_millis()).end_millis();
    let trigger = Trigger::from_payload(&serde_json::json!({
        "flush": { "until": shared::time::format_rfc3339_millis(until) }
    }))
    .unwrap();
    let flusher = Flusher::new(config, faulty_s3);
    let mut failed_flush_runs = 0;
    let mut last = String::new();
    for run in 0.. {
        assert!(
            run < FLUSH_RUNS,
            "the flusher did not converge in {FLUSH_RUNS} runs; the last: {last}"
        );
        match flusher::run(&flusher, &trigger, None).await {
            Ok(report)
                if report.failed == 0
                    && report.pending_chunks == 0
                    && report.pending_publishes == 0 =>
            {
                break;
            }
            outcome => {
                failed_flush_runs += 1;
                last = match outcome {
                    Ok(report) => serde_json::to_string(&report).unwrap(),
                    Err(error) => error.to_string(),
                };
            }
        }
    }

    let mut expected_lines: Vec<String> = workload
        .expected
        .lines
        .values()
        .flatten()
        .cloned()
        .collect();
    expected_lines.sort();
    expected_lines.dedup();
    Outcome {
        archive: s3_export::inspect::read_archive(&s3, EXPORT, "")
            .await
            .unwrap(),
        published: read_export_files(&s3, DESTINATION, "").await.unwrap(),
        errors: read_gzip_ndjson(&s3, EXPORT, "errors/").await.unwrap(),
        left_staged: list_keys(&s3, EXPORT, "staging/").await.unwrap().len(),
        left_pending: list_keys(&s3, EXPORT, "pending/").await.unwrap().len(),
        dead_letters: approximate_message_count(&sqs, &queues.dlq_url)
            .await
            .unwrap(),
        expected_lines,
        expected_rejected: workload
            .expected
            .rejected
            .iter()
            .map(|(reason, count)| (reason.to_string(), *count))
            .collect(),
        failures_injected: proxy.failures_injected(),
        failed_batches,
        failed_polls,
        failed_flush_runs,
    }
}

fn sorted_lines(files: &[StoredFile]) -> Vec<String> {
    let mut lines: Vec<String> = files.iter().flat_map(|f| f.lines.clone()).collect();
    lines.sort();
    lines
}

/// Lines that occur more than once, and expected lines that are missing.
fn differences(got: &[String], want: &[String]) -> (Vec<String>, Vec<String>) {
    let duplicates = got
        .windows(2)
        .filter(|pair| pair[0] == pair[1])
        .map(|pair| pair[0].clone())
        .collect();
    let missing = want
        .iter()
        .filter(|line| got.binary_search(line).is_err())
        .cloned()
        .collect();
    (duplicates, missing)
}

/// Rejected records by reason, each counted once: a batch retried after its
/// errors file was written (but the answer lost) writes the record again,
/// which is allowed (at least once in `errors/`); a record is known by its
/// message id and its part within the message.
fn distinct_rejections(errors: &[StoredFile]) -> BTreeMap<String, usize> {
    let mut seen = BTreeSet::new();
    let mut counts = BTreeMap::new();
    for line in errors.iter().flat_map(|f| &f.lines) {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            record["body"].is_string(),
            "a rejection without its original body: {line}"
        );
        let identity = (
            record["messageId"].as_str().unwrap_or_default().to_owned(),
            record["part"]["index"].as_u64(),
        );
        if seen.insert(identity) {
            *counts
                .entry(record["reason"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    counts
}

fn assert_exactly_once(outcome: &Outcome) {
    assert!(
        outcome.failures_injected > 0,
        "the proxy injected no failure: this run proves nothing"
    );
    for (place, files) in [
        ("archive", &outcome.archive),
        ("destination", &outcome.published),
    ] {
        let got = sorted_lines(files);
        let (duplicates, missing) = differences(&got, &outcome.expected_lines);
        assert!(
            duplicates.is_empty() && missing.is_empty(),
            "{place}: {} duplicated, {} missing of {} (first duplicate {:?}, first missing {:?})",
            duplicates.len(),
            missing.len(),
            outcome.expected_lines.len(),
            duplicates.first(),
            missing.first()
        );
        assert_eq!(got.len(), outcome.expected_lines.len(), "{place}");
    }
    assert_eq!(
        distinct_rejections(&outcome.errors),
        outcome.expected_rejected
    );
    assert_eq!(outcome.left_staged, 0, "chunks left under staging/");
    assert_eq!(outcome.left_pending, 0, "publishes left pending");
    assert_eq!(outcome.dead_letters, 0, "messages in the DLQ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_under_ten_percent_faults_exports_each_event_once() {
    let outcome = run_under_faults(FaultPlan::new(FAULT_RATE, seed(10)), 3).await;
    println!(
        "faults injected {}, failed batches {}, failed polls {}, flush runs with failures {}",
        outcome.failures_injected,
        outcome.failed_batches,
        outcome.failed_polls,
        outcome.failed_flush_runs
    );
    assert_exactly_once(&outcome);
}

/// Without the SDK's retries every injected failure reaches the pipeline's
/// own recovery: SQS redelivery of the batches it failed, and the next
/// flush run for the partitions that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_without_sdk_retries_recovers_through_redelivery_and_reflush() {
    // Besides the drawn faults, the first staging PUT fails: a batch is
    // reported failed and redelivered, whatever order the requests come in.
    let first = std::sync::atomic::AtomicBool::new(true);
    let plan = FaultPlan {
        always: Some(RequestFilter::new(move |request| {
            request.puts_object(EXPORT)
                && request.key().starts_with("staging/")
                && first.swap(false, Ordering::SeqCst)
        })),
        ..FaultPlan::new(FAULT_RATE, seed(11))
    };
    let outcome = run_under_faults(plan, 1).await;
    println!(
        "faults injected {}, failed batches {}, failed polls {}, flush runs with failures {}",
        outcome.failures_injected,
        outcome.failed_batches,
        outcome.failed_polls,
        outcome.failed_flush_runs
    );
    assert!(
        outcome.failed_batches > 0,
        "no batch failed: nothing was redelivered"
    );
    assert!(
        outcome.failed_flush_runs > 0,
        "no flush run failed: nothing was re-flushed"
    );
    assert_exactly_once(&outcome);
}

/// Each kind of fault, alone at rate 1, as the SDK (one attempt) sees it:
/// S3's and SQS's error codes, a failed dispatch for a reset, a write that
/// landed although its answer was cut, and a delay that is only a delay.
#[tokio::test]
async fn each_injected_fault_reaches_the_sdk_as_the_service_would_send_it() {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    use s3_export::fault_proxy::Fault;

    let moto = MotoServer::start().await.unwrap();
    let s3 = moto.s3_client().await;
    s3.create_bucket().bucket(EXPORT).send().await.unwrap();
    let sqs = moto.sqs_client().await;
    let queue = sqs
        .create_queue()
        .queue_name("shapes")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();

    for fault in Fault::ALL {
        let mut plan = FaultPlan::new(1.0, 1);
        plan.kinds = vec![fault];
        let proxy = FaultProxy::start(&moto.endpoint(), plan).await.unwrap();
        let sdk = sdk_for(&proxy.endpoint(), 1).await;
        let (faulty_s3, faulty_sqs) = (s3_for(&sdk), aws_sdk_sqs::Client::new(&sdk));
        let key = format!("shape-{fault:?}");
        let put = faulty_s3
            .put_object()
            .bucket(EXPORT)
            .key(&key)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
            .send()
            .await;
        let landed = s3
            .head_object()
            .bucket(EXPORT)
            .key(&key)
            .send()
            .await
            .is_ok();
        let receive = faulty_sqs.receive_message().queue_url(&queue).send().await;
        match fault {
            Fault::InternalError => {
                assert_eq!(put.unwrap_err().code(), Some("InternalError"));
                assert_eq!(receive.unwrap_err().code(), Some("InternalFailure"));
                assert!(!landed);
            }
            Fault::SlowDown => {
                assert_eq!(put.unwrap_err().code(), Some("SlowDown"));
                assert_eq!(receive.unwrap_err().code(), Some("ServiceUnavailable"));
                assert!(!landed);
            }
            Fault::Throttling => {
                assert_eq!(put.unwrap_err().code(), Some("SlowDown"));
                assert_eq!(receive.unwrap_err().code(), Some("ThrottlingException"));
                assert!(!landed);
            }
            Fault::Reset => {
                assert!(put.is_err() && receive.is_err());
                assert!(!landed, "a reset request must not reach moto");
            }
            Fault::Truncate => {
                assert!(put.is_err() && receive.is_err());
                assert!(landed, "a truncated answer follows an applied request");
            }
            Fault::Delay => {
                put.unwrap();
                receive.unwrap();
                assert!(landed);
            }
        }
        assert_eq!(proxy.injected().get(&fault), Some(&2), "{fault:?}");
    }
}
