//! The coordinator and flush workers against moto: the coordinator's work
//! items go through a real SQS queue (moto's) to workers run by the event
//! source mapping emulation, several at once; every event is read back
//! from the archive and the destination, each once, and what the run
//! leaves behind is checked (no staged data, no run records).

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use batcher::Batcher;
use batcher::records::{sqs_record, with_stream};
use flusher::coordinator::{self, CoordinatorReport, FlushQueue};
use flusher::{Flusher, Trigger, worker};
use s3_export::esm::{
    DrainReport, EventSourceMapping, QueueSet, approximate_message_count, create_queue_with_dlq,
};
use s3_export::fault_proxy::{FaultPlan, FaultProxy, RequestFilter};
use s3_export::inspect::{StoredFile, list_keys, read_archive, read_gzip_ndjson};
use s3_export::moto::MotoServer;
use shared::Config;

const EXPORT: &str = "exports";
const DESTINATION: &str = "dest-all";
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:events";
/// 2026-11-22T10:00:00Z
const TEN: i64 = 1_795_341_600_000;
const HOUR: i64 = 3_600_000;
/// A scheduled run after hour 10 has closed.
const CLOSED: i64 = TEN + HOUR + 15 * 60_000;
/// The flush queue's visibility timeout.
const VISIBILITY_SECONDS: u32 = 10;
/// Items of at most 1 KiB of staged bytes: one or two partitions each, so
/// that a small hour makes many items.
const DOCUMENT: &str = r#"{"workItemBytes": 1024,
  "destinations":[{"name":"everyone","bucket":"dest-all","shared":true}]}"#;

struct Harness {
    moto: MotoServer,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    config: Config,
    queues: QueueSet,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(DOCUMENT).await
    }

    /// A harness whose configuration document is `document`.
    async fn start_with(document: &str) -> Self {
        let moto = MotoServer::start().await.expect("moto_server starts");
        let s3 = moto.s3_client().await;
        let sqs = moto.sqs_client().await;
        for bucket in [EXPORT, DESTINATION] {
            s3.create_bucket().bucket(bucket).send().await.unwrap();
        }
        let config = config_of(document);
        // A failed item comes back after the visibility timeout, long
        // enough that no item still being flushed (by a debug build, on a
        // busy machine) is delivered again; three receives, then the
        // dead-letter queue.
        let queues = create_queue_with_dlq(&sqs, "flush", 3, VISIBILITY_SECONDS)
            .await
            .unwrap();
        Self {
            moto,
            s3,
            sqs,
            config,
            queues,
        }
    }

    /// A flusher (coordinator or worker) talking to S3 through `s3`.
    fn flusher_with(&self, s3: aws_sdk_s3::Client) -> Flusher {
        let mut flusher = Flusher::new(self.config.clone(), s3);
        flusher.queue = Some(FlushQueue {
            sqs: self.sqs.clone(),
            url: self.queues.url.clone(),
        });
        flusher
    }

    fn flusher(&self) -> Flusher {
        self.flusher_with(self.s3.clone())
    }

    async fn stage(&self, records: Vec<SqsMessage>, request_id: &str) {
        self.stage_with(&self.config, records, request_id).await;
    }

    /// Stages `records` with a batcher configured by `config`.
    async fn stage_with(&self, config: &Config, records: Vec<SqsMessage>, request_id: &str) {
        let batcher = Batcher::new(config.clone(), self.s3.clone());
        let response = batcher::process(&batcher, &records, TEN, request_id)
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }

    /// `tenants` tenants' app events, and an audit event each, over
    /// `invocations` batcher invocations (each a staged object holding
    /// every tenant): the events, as staged.
    async fn stage_tenants(&self, tenants: usize, invocations: usize) -> Vec<String> {
        let mut all = Vec::new();
        for invocation in 0..invocations {
            let mut records = Vec::new();
            for tenant in 0..tenants {
                let event = app_event(&format!("t{tenant:03}"), invocation);
                records.push(record(&format!("a-{invocation}-{tenant}"), &event));
                all.push(event);
                let audit = audit_event(&format!("t{tenant:03}"), invocation);
                records.push(with_stream(
                    record(&format!("u-{invocation}-{tenant}"), &audit),
                    "airkit-audit-logs",
                ));
                all.push(audit);
            }
            self.stage(records, &format!("req-{invocation}")).await;
        }
        all.sort();
        all
    }

    async fn coordinate(&self, flusher: &Flusher, now: i64) -> CoordinatorReport {
        let queue = flusher.queue.as_ref().unwrap();
        coordinator::coordinate(flusher, queue, &trigger(now), None)
            .await
            .unwrap()
    }

    fn mapping(&self) -> EventSourceMapping {
        EventSourceMapping::new(
            self.sqs.clone(),
            &self.queues.url,
            &self.queues.arn,
            1,
            Duration::ZERO,
        )
        .unwrap()
    }

    /// Runs `count` workers at once, each polling the flush queue until it
    /// is empty (nothing visible or in flight).
    async fn workers(&self, flusher: &Flusher, count: usize) -> DrainReport {
        let mapping = self.mapping();
        let drains = (0..count).map(|_| {
            mapping.drain(
                |event: SqsEvent| async move {
                    let (response, _) = worker::handle_event(flusher, event, None).await;
                    Ok::<SqsBatchResponse, lambda_runtime::Error>(response)
                },
                Duration::from_secs(120),
            )
        });
        let mut total = DrainReport::default();
        for report in futures::future::join_all(drains).await {
            total.merge(report.unwrap());
        }
        total
    }

    /// The JSON object stored at `key` in the export bucket.
    async fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> T {
        let object = self.s3.get_object().bucket(EXPORT).key(key).send();
        let bytes = object.await.unwrap().body.collect().await.unwrap();
        serde_json::from_slice(&bytes.into_bytes()).unwrap()
    }

    async fn keys(&self, prefix: &str) -> Vec<String> {
        list_keys(&self.s3, EXPORT, prefix).await.unwrap()
    }

    async fn archived(&self) -> Vec<String> {
        lines(&read_archive(&self.s3, EXPORT, "").await.unwrap())
    }

    async fn delivered(&self) -> Vec<String> {
        lines(&read_gzip_ndjson(&self.s3, DESTINATION, "").await.unwrap())
    }

    async fn dead_letters(&self) -> u64 {
        approximate_message_count(&self.sqs, &self.queues.dlq_url)
            .await
            .unwrap()
    }
}

fn config_of(document: &str) -> Config {
    Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
        Some(document),
    )
    .unwrap()
}

fn trigger(now: i64) -> Trigger {
    Trigger::from_payload(&serde_json::json!({ "time": shared::time::format_rfc3339_millis(now) }))
        .unwrap()
}

fn app_event(tenant: &str, n: usize) -> String {
    format!(
        r#"{{"organizationId":"{tenant}","eventTime":"2026-11-22T10:{:02}:00Z","type":"step_enter","sessionId":"s{n}","n":{n}}}"#,
        n % 60
    )
}

fn audit_event(tenant: &str, n: usize) -> String {
    format!(
        r#"{{"ORGANIZATION_ID":"{tenant}","EVENT_ID":"E-{tenant}-{n}","EVENT_TIME":"2026-11-22 10:40:02.123","EVENT_TYPE":"user_login","USER_ID":"u{n}"}}"#
    )
}

fn record(id: &str, body: &str) -> SqsMessage {
    sqs_record(id, body, TEN + 1000, QUEUE_ARN)
}

fn lines(files: &[StoredFile]) -> Vec<String> {
    let mut lines: Vec<String> = files.iter().flat_map(|f| f.lines.iter().cloned()).collect();
    lines.sort();
    lines
}

/// The coordinator cuts a closed hour of 40 partitions (20 tenants, two
/// streams, in 3 staged objects) into many work items; four workers flush
/// them at once through the queue. Each event reaches the archive and the
/// destination once, the last worker deletes the staged objects and the
/// run's records, and nothing goes to the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_flush_a_coordinated_hour_each_event_once() {
    let harness = Harness::start().await;
    let events = harness.stage_tenants(20, 3).await;
    let flusher = harness.flusher();

    let planned = harness.coordinate(&flusher, CLOSED).await;
    assert_eq!(planned.partitions, 40, "{planned:?}");
    assert!(planned.items >= 8, "{planned:?}");
    let run = planned.run.clone().expect("items were sent");
    assert_eq!(
        harness.keys(&format!("work/{run}/item-")).await.len(),
        planned.items
    );
    assert_eq!(harness.keys("staging/").await.len(), 3);

    let drained = harness.workers(&flusher, 4).await;
    assert_eq!(drained.deleted, planned.items, "{drained:?}");
    assert!(drained.failed.is_empty(), "{drained:?}");

    assert_eq!(harness.archived().await, events);
    assert_eq!(harness.delivered().await, events);
    assert!(harness.keys("staging/").await.is_empty());
    assert!(
        harness.keys("work/").await.is_empty(),
        "the run's records are removed"
    );
    assert_eq!(harness.dead_letters().await, 0);

    // The next scheduled run finds nothing to do.
    let next = harness.coordinate(&flusher, CLOSED + HOUR).await;
    assert_eq!((next.items, next.run), (0, None));
}

/// A second coordinator run while the first one's items are queued plans
/// nothing (those staged objects are in flight); one that finds the first
/// run too old to be in flight (its wall clock past the run's lifetime)
/// plans the same items again. With every item of the first run also
/// delivered twice, two workers flush three copies of each item: each
/// event is still exported once, and both runs clean up after themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_delivered_twice_and_a_second_coordinator_change_nothing() {
    let harness = Harness::start().await;
    let events = harness.stage_tenants(6, 2).await;
    let flusher = harness.flusher();
    let queue = flusher.queue.clone().unwrap();
    let wall = flusher::wall_clock_millis();
    let closed = trigger(CLOSED);
    let at = |wall| coordinator::coordinate_at(&flusher, &queue, &closed, None, wall);
    let first = at(wall).await.unwrap();
    let second = at(wall + 60_000).await.unwrap();
    assert_eq!((second.items, second.in_flight), (0, 2), "{second:?}");
    let stale = at(wall + coordinator::RUN_LIFETIME_MILLIS + 1)
        .await
        .unwrap();
    assert_eq!(stale.items, first.items, "{stale:?}");
    assert_ne!(first.run, stale.run);
    // Each of the first run's messages sent again.
    let run = first.run.unwrap();
    let items: Vec<String> = harness.keys(&format!("work/{run}/item-")).await;
    coordinator::send_items(&queue, &items).await.unwrap();

    let drained = harness.workers(&flusher, 2).await;
    assert!(drained.failed.is_empty(), "{drained:?}");
    assert_eq!(drained.deleted, 3 * first.items);

    assert_eq!(harness.archived().await, events);
    assert_eq!(harness.delivered().await, events);
    assert!(harness.keys("staging/").await.is_empty());
    assert!(harness.keys("work/").await.is_empty());
}

/// A worker whose manifest commit fails (S3 answers 500 to the first
/// commit of one partition, past the SDK's retries) reports its item as a
/// batch item failure; SQS delivers it again after the visibility timeout,
/// and the next attempt finishes it: the run completes then (its staged
/// objects and records deleted), and each event is exported once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_that_fails_comes_back_and_its_run_finishes_then() {
    let harness = Harness::start().await;
    let events = harness.stage_tenants(4, 2).await;
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = failures.clone();
    let plan = FaultPlan {
        // Every attempt of the SDK's retries, for one run of the worker.
        always: Some(RequestFilter::new(move |request| {
            request.puts_object(EXPORT)
                && request.key() == "manifests/airkit-app-events/t002/2026-11-22/10.json"
                && counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3
        })),
        ..FaultPlan::none()
    };
    let proxy = FaultProxy::start(&harness.moto.endpoint(), plan)
        .await
        .unwrap();
    let flusher = harness.flusher_with(proxy.s3_client(&harness.s3));
    let planned = harness.coordinate(&flusher, CLOSED).await;

    let drained = harness.workers(&flusher, 2).await;
    assert_eq!(drained.failed.len(), 1, "{drained:?}");
    assert_eq!(drained.deleted, planned.items);
    assert!(failures.load(std::sync::atomic::Ordering::SeqCst) >= 3);

    assert_eq!(harness.archived().await, events);
    assert_eq!(harness.delivered().await, events);
    assert!(harness.keys("staging/").await.is_empty());
    assert!(harness.keys("work/").await.is_empty());
    assert_eq!(harness.dead_letters().await, 0);
}

/// Bad messages fail alone, naming what is wrong: a body that is not a
/// work item message, and a work item of a newer format (a worker older
/// than its coordinator). A message whose item is gone (its run finished)
/// is acknowledged.
#[tokio::test]
async fn a_message_that_names_no_usable_item_fails_alone_and_a_finished_one_is_acknowledged() {
    let harness = Harness::start().await;
    let flusher = harness.flusher();
    let newer =
        r#"{"version": 99, "run": "r", "item": 0, "items": 1, "nowMillis": 0, "partitions": []}"#;
    harness
        .s3
        .put_object()
        .bucket(EXPORT)
        .key("work/r/item-00000.json")
        .body(newer.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    let message = |id: &str, body: &str| {
        let mut message = SqsMessage::default();
        message.message_id = Some(id.into());
        message.body = Some(body.into());
        message.event_source = Some("aws:sqs".into());
        message
    };
    let mut event = SqsEvent::default();
    event.records = vec![
        message("garbage", "hello"),
        message("newer", r#"{"workItem":"work/r/item-00000.json"}"#),
        message("finished", r#"{"workItem":"work/gone/item-00000.json"}"#),
    ];
    let (response, reports) = worker::handle_event(&flusher, event, None).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["garbage", "newer"]);
    assert_eq!(reports.len(), 1);
    assert!(reports[0].finished && !reports[0].found, "{reports:?}");

    let error = worker::flush_item(&flusher, "work/r/item-00000.json", None)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("work item work/r/item-00000.json: version 99 is newer"),
        "{error}"
    );
}

/// The Lambda handler: with a flush queue, a scheduled event coordinates
/// (its answer is the coordinator's report) and the queue's SQS event is
/// a worker's (its answer the batch item failures, none here).
#[tokio::test]
async fn the_handler_coordinates_a_schedule_and_works_the_queue() {
    let harness = Harness::start().await;
    let events = harness.stage_tenants(2, 1).await;
    let flusher = harness.flusher();
    let scheduled = serde_json::json!({
        "source": "aws.events",
        "detail-type": "Scheduled Event",
        "time": shared::time::format_rfc3339_millis(CLOSED),
    });
    let answer = flusher::handle(
        &flusher,
        lambda_runtime::LambdaEvent::new(scheduled, Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(answer["partitions"], 4, "{answer}");
    let items = answer["items"].as_u64().unwrap() as usize;

    let received = harness
        .sqs
        .receive_message()
        .queue_url(&harness.queues.url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(received.len(), items);
    let records: Vec<SqsMessage> = received
        .into_iter()
        .map(|m| s3_export::esm::lambda_record(m, &harness.queues.arn, "us-east-1"))
        .collect();
    let mut event = SqsEvent::default();
    event.records = records;
    let answer = flusher::handle(
        &flusher,
        lambda_runtime::LambdaEvent::new(serde_json::to_value(&event).unwrap(), Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(
        answer["batchItemFailures"],
        serde_json::json!([]),
        "{answer}"
    );
    assert_eq!(harness.archived().await, events);
    assert!(harness.keys("staging/").await.is_empty());
}

/// A partition too large for one worker's invocation: each worker stops
/// it at a checkpoint (after 10 new events here, as if the deadline had
/// come), commits its progress and sends the item to the queue again, so
/// the next worker goes on from the cursor. More deliveries than the
/// dead-letter queue's three receives, yet none fails and none goes
/// there; each event is exported once and the run cleans up after itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_larger_than_a_worker_goes_on_from_its_checkpoint_in_the_next() {
    let harness = Harness::start().await;
    let mut events = harness.stage_tenants(3, 1).await;
    for invocation in 0..3 {
        let records = (0..15)
            .map(|n| {
                let event = app_event("big", invocation * 15 + n);
                events.push(event.clone());
                record(&format!("big-{invocation}-{n}"), &event)
            })
            .collect();
        harness.stage(records, &format!("big-{invocation}")).await;
    }
    events.sort();
    let mut flusher = harness.flusher();
    flusher.checkpoint_after_events = Some(10);

    let planned = harness.coordinate(&flusher, CLOSED).await;
    let drained = harness.workers(&flusher, 2).await;
    assert!(drained.failed.is_empty(), "{drained:?}");
    // The big partition's item needed five deliveries (45 events, 10 a
    // run): four of them sent again by the worker.
    assert_eq!(drained.deleted, planned.items + 4, "{drained:?}");
    assert_eq!(harness.dead_letters().await, 0);

    assert_eq!(harness.archived().await, events);
    assert_eq!(harness.delivered().await, events);
    let manifest: shared::manifest::Manifest = harness
        .json("manifests/airkit-app-events/big/2026-11-22/10.json")
        .await;
    assert_eq!((manifest.parts.len(), manifest.cursor), (5, None));
    assert!(harness.keys("staging/").await.is_empty());
    assert!(harness.keys("work/").await.is_empty());
}

/// With a flush queue, a manual backfill is checked, recorded and queued
/// (the coordinator's role writes to no destination); a worker runs it.
/// A scheduled coordinator run queues a running backfill again once no
/// worker has advanced it for a visibility timeout; the worker that gets
/// the second message finds it done and acknowledges it. The destination
/// added after the hour was flushed receives each of its events once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_is_queued_by_the_coordinator_and_run_by_a_worker() {
    let harness = Harness::start().await;
    let events = harness.stage_tenants(3, 1).await;
    let flusher = harness.flusher();
    harness.coordinate(&flusher, CLOSED).await;
    harness.workers(&flusher, 1).await;
    assert_eq!(harness.delivered().await, events);

    // A destination added later, backfilled.
    harness
        .s3
        .create_bucket()
        .bucket("dest-later")
        .send()
        .await
        .unwrap();
    let document = r#"{"workItemBytes": 1024, "destinations":[
        {"name":"everyone","bucket":"dest-all","shared":true},
        {"name":"later","bucket":"dest-later","shared":true}]}"#;
    let config = Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
        Some(document),
    )
    .unwrap();
    let mut later = Flusher::new(config, harness.s3.clone());
    later.queue = flusher.queue.clone();
    let payload = serde_json::json!({"backfill": {"destination": "later",
        "from": "2026-11-22T10:00:00Z", "to": "2026-11-22T11:00:00Z"}});
    let invoke = || {
        flusher::handle(
            &later,
            lambda_runtime::LambdaEvent::new(payload.clone(), lambda_runtime::Context::default()),
        )
    };
    let answer = invoke().await.unwrap();
    // Asked again at once: not queued twice.
    assert_eq!(invoke().await.unwrap()["status"], "running");
    let queued = approximate_message_count(&harness.sqs, &harness.queues.url)
        .await
        .unwrap();
    assert_eq!(queued, 1);
    assert_eq!(answer["status"], "running", "{answer}");
    assert_eq!(
        answer["parts"], 0,
        "queued, nothing published yet: {answer}"
    );
    let progress_key = answer["progressKey"].as_str().unwrap().to_owned();
    assert!(
        read_gzip_ndjson(&harness.s3, "dest-later", "")
            .await
            .unwrap()
            .is_empty()
    );

    // A scheduled run that finds it idle queues it again.
    let queue = later.queue.clone().unwrap();
    let idle = flusher::wall_clock_millis() + coordinator::BACKFILL_IDLE_MILLIS + 1;
    let scheduled = coordinator::coordinate_at(&later, &queue, &trigger(CLOSED + HOUR), None, idle)
        .await
        .unwrap();
    assert_eq!(scheduled.backfills_queued, vec![progress_key.clone()]);

    let drained = harness.workers(&later, 1).await;
    assert_eq!(
        (drained.deleted, drained.failed.len()),
        (2, 0),
        "{drained:?}"
    );
    assert_eq!(
        lines(
            &read_gzip_ndjson(&harness.s3, "dest-later", "")
                .await
                .unwrap()
        ),
        events
    );
    let progress: serde_json::Value = harness.json(&progress_key).await;
    assert_eq!(progress["status"], "done", "{progress}");
    assert_eq!(harness.dead_letters().await, 0);
}

/// A backfill step that stops on an error (its destination's bucket does
/// not exist) is a failure of its message, delivered again after the
/// visibility timeout and counted towards the dead-letter queue: not an
/// item the deadline stopped, which the worker would send again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_step_that_fails_is_a_failed_message_not_sent_again() {
    let harness = Harness::start().await;
    harness.stage_tenants(2, 1).await;
    let flusher = harness.flusher();
    harness.coordinate(&flusher, CLOSED).await;
    harness.workers(&flusher, 1).await;
    let document = r#"{"workItemBytes": 1024, "destinations":[
        {"name":"everyone","bucket":"dest-all","shared":true},
        {"name":"gone","bucket":"dest-gone","shared":true}]}"#;
    let mut later = Flusher::new(config_of(document), harness.s3.clone());
    later.queue = flusher.queue.clone();
    let payload = serde_json::json!({"backfill": {"destination": "gone",
        "from": "2026-11-22T10:00:00Z", "to": "2026-11-22T11:00:00Z"}});
    let answer = flusher::handle(
        &later,
        lambda_runtime::LambdaEvent::new(payload, lambda_runtime::Context::default()),
    )
    .await
    .unwrap();
    let progress_key = answer["progressKey"].as_str().unwrap();
    let message = serde_json::json!({ "backfill": progress_key }).to_string();
    let mut event = SqsEvent::default();
    event.records.push(record("backfill-1", &message));
    let (response, reports) = worker::handle_event(&later, event, None).await;
    assert_eq!(response.batch_item_failures.len(), 1, "{reports:?}");
    let report = &reports[0];
    assert!(report.failed() && !report.continued, "{report:?}");
    let step = report.backfill.as_ref().unwrap();
    assert!(step.error.as_deref().unwrap().contains("gone"), "{step:?}");
    // Only the message the coordinator queued: none sent again.
    let queued = approximate_message_count(&harness.sqs, &harness.queues.url)
        .await
        .unwrap();
    assert_eq!(queued, 1);
}

/// The flush queue refuses entries of the coordinator's second
/// `SendMessageBatch` (its first, ten items, was sent): the coordinator
/// fails naming the first refused work item. What it leaves is consistent:
/// its run record and every item are stored, only the first ten items are
/// queued. The workers flush those; the run never finishes (its other
/// items were never sent), so its staged objects stay, and a coordinator
/// within the run's lifetime leaves them to it. One past the lifetime plans
/// them again, and each event is exported once; the refused run's records
/// stay for the bucket's lifecycle (`ExpireUnfinishedRuns`).
///
/// moto (5.2.5) answers most entries SQS refuses (a FIFO queue's without a
/// group id, a body over the queue's `MaximumMessageSize`) with an error
/// for the whole request; the one refusal it reports per entry, as SQS
/// does, is an invalid delay. So the queue's `DelaySeconds` is set out of
/// range (moto takes it) while the second batch is held at the fault
/// proxy: moto then refuses each of its entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_entry_the_queue_refuses_fails_the_coordinator_naming_its_item() {
    use aws_sdk_sqs::types::QueueAttributeName;
    use s3_export::fault_proxy::{Gate, Hold};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let harness = Harness::start().await;
    let events = harness.stage_tenants(20, 3).await;
    let gate = Gate::new();
    let batches = Arc::new(AtomicUsize::new(0));
    let counted = batches.clone();
    let plan = FaultPlan {
        hold: Some(Hold {
            filter: RequestFilter::new(move |request| {
                request.sqs_operation.as_deref() == Some("SendMessageBatch")
                    && counted.fetch_add(1, Ordering::SeqCst) == 1
            }),
            gate: gate.clone(),
        }),
        ..FaultPlan::none()
    };
    let proxy = FaultProxy::start(&harness.moto.endpoint(), plan)
        .await
        .unwrap();
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&harness.moto.sdk_config().await)
            .endpoint_url(proxy.endpoint())
            .build(),
    );
    let mut flusher = harness.flusher();
    let queue = FlushQueue {
        sqs,
        url: harness.queues.url.clone(),
    };
    flusher.queue = Some(queue.clone());
    let set_delay = |seconds: &'static str| {
        harness
            .sqs
            .set_queue_attributes()
            .queue_url(&harness.queues.url)
            .attributes(QueueAttributeName::DelaySeconds, seconds)
            .send()
    };
    let wall = flusher::wall_clock_millis();
    let closed = trigger(CLOSED);
    let refuse = async {
        gate.wait_for(1).await;
        set_delay("901").await.unwrap();
        gate.open();
    };
    let (result, ()) = tokio::join!(
        coordinator::coordinate_at(&flusher, &queue, &closed, None, wall),
        refuse
    );
    set_delay("0").await.unwrap();

    let error = result.unwrap_err().to_string();
    let runs = harness.keys("work/").await;
    let run = runs[0]
        .trim_start_matches("work/")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let refused = format!("work/{run}/item-00010.json");
    assert!(
        error.starts_with(&format!("SendMessageBatch {}", harness.queues.url))
            && error.contains(&format!("the message for work item {refused} was refused")),
        "{error}"
    );
    // The run's record and all its items are stored; ten were queued.
    let record: coordinator::RunRecord = harness.json(&format!("work/{run}/run.json")).await;
    assert!(record.items > 10, "{record:?}");
    assert_eq!(record.objects.len(), 3, "{record:?}");
    assert_eq!(
        harness.keys(&format!("work/{run}/item-")).await.len(),
        record.items as usize
    );
    assert_eq!(
        batches.load(Ordering::SeqCst),
        2,
        "it stopped at the refusal"
    );
    assert_eq!(
        approximate_message_count(&harness.sqs, &harness.queues.url)
            .await
            .unwrap(),
        10
    );

    // The ten are flushed; the run cannot finish without the others.
    let direct = harness.flusher();
    let drained = harness.workers(&direct, 2).await;
    assert_eq!(drained.deleted, 10, "{drained:?}");
    assert!(drained.failed.is_empty(), "{drained:?}");
    assert_eq!(harness.keys("staging/").await.len(), 3);
    let exported = harness.archived().await;
    assert!(!exported.is_empty() && exported.len() < events.len());

    // Within its lifetime, the run keeps its objects.
    let queue = direct.queue.clone().unwrap();
    let within = coordinator::coordinate_at(&direct, &queue, &closed, None, wall + 60_000)
        .await
        .unwrap();
    assert_eq!((within.items, within.in_flight), (0, 3), "{within:?}");
    // Past it, what it left staged is planned again, and finished.
    let past = coordinator::coordinate_at(
        &direct,
        &queue,
        &closed,
        None,
        wall + coordinator::RUN_LIFETIME_MILLIS + 1,
    )
    .await
    .unwrap();
    assert!(past.items > 0 && past.in_flight == 0, "{past:?}");
    let again = past.run.clone().unwrap();
    let drained = harness.workers(&direct, 2).await;
    assert!(drained.failed.is_empty(), "{drained:?}");
    assert_eq!(drained.deleted, past.items, "{drained:?}");

    assert_eq!(harness.archived().await, events);
    assert_eq!(harness.delivered().await, events);
    assert!(harness.keys("staging/").await.is_empty());
    assert!(harness.keys(&format!("work/{again}/")).await.is_empty());
    // The refused run's records are left to the lifecycle: its record,
    // its items, and the done records of the ten that were sent.
    let left = harness.keys("work/").await;
    let done: Vec<&String> = left.iter().filter(|k| k.contains("/done-")).collect();
    assert_eq!(done.len(), 10, "{left:?}");
    assert_eq!(left.len(), runs.len() + 10, "{left:?}");
    assert!(runs.iter().all(|key| left.contains(key)), "{left:?}");
    assert_eq!(harness.dead_letters().await, 0);
}

/// Shards: a partition larger than a work item is flushed as ranges of its
/// shards, by several workers at once (docs/scale-out.md).
mod shards {
    use super::*;
    use flusher::work_item::WorkItem;
    use flusher::worker::ItemReport;
    use s3_export::fault_proxy::{Gate, Hold};
    use shared::manifest::{Manifest, SHARDED_MANIFEST_VERSION};

    /// Tenant `big` of the audit stream is staged in 8 shards; items hold
    /// at most 1 KiB of staged bytes.
    const SHARDED: &str = r#"{"workItemBytes": 1024,
      "streams": {"airkit-audit-logs": {"profile": "airkit-audit-logs", "tenantShards": {"big": 8}}},
      "destinations":[{"name":"everyone","bucket":"dest-all","shared":true,"layout":"hive","successMarker":true}]}"#;
    /// The same, before `big` was sharded.
    const UNSHARDED: &str = r#"{"workItemBytes": 1024,
      "destinations":[{"name":"everyone","bucket":"dest-all","shared":true,"layout":"hive","successMarker":true}]}"#;
    const BIG: &str = "manifests/airkit-audit-logs/big/2026-11-22/10.json";

    /// Audit events `numbers` of tenant `big` as one batcher invocation
    /// (`config`'s), each message id unique to the invocation: a number
    /// sent again is a re-sent event, the same `EVENT_ID`.
    async fn stage_big(
        harness: &Harness,
        config: &Config,
        numbers: std::ops::Range<usize>,
        invocation: &str,
    ) -> Vec<String> {
        let events: Vec<String> = numbers.map(|n| audit_event("big", n)).collect();
        let records = events
            .iter()
            .enumerate()
            .map(|(n, event)| {
                with_stream(
                    record(&format!("{invocation}-{n}"), event),
                    "airkit-audit-logs",
                )
            })
            .collect();
        harness.stage_with(config, records, invocation).await;
        events
    }

    /// The work items of run `run`, with their keys.
    async fn items(harness: &Harness, run: &str) -> Vec<(String, WorkItem)> {
        let mut items = Vec::new();
        for key in harness.keys(&format!("work/{run}/item-")).await {
            let item: WorkItem = harness.json(&key).await;
            items.push((key, item));
        }
        items
    }

    /// `got` is `want`; else the events missing from it and those extra.
    fn assert_same(got: Vec<String>, want: &[String]) {
        let missing: Vec<&String> = want.iter().filter(|e| !got.contains(e)).collect();
        let extra: Vec<&String> = got.iter().filter(|e| !want.contains(e)).collect();
        assert!(
            got == want,
            "{} events, {} wanted; missing {missing:?}; extra {extra:?}",
            got.len(),
            want.len()
        );
    }

    fn sorted(mut lines: Vec<String>) -> Vec<String> {
        lines.sort();
        lines.dedup();
        lines
    }

    /// Every archive object of `big` is a part its manifest names (parts
    /// in a bundle apart), each number once.
    async fn only_committed_parts(harness: &Harness, manifest: &Manifest) {
        let mut named: Vec<String> = manifest
            .parts
            .iter()
            .filter(|p| p.offset.is_none())
            .map(|p| p.key.clone())
            .collect();
        named.sort();
        assert_eq!(
            harness.keys("archive/airkit-audit-logs/big/").await,
            named,
            "an archive object no manifest names"
        );
        let mut numbers: Vec<u32> = manifest.parts.iter().map(|p| p.number).collect();
        numbers.sort_unstable();
        let expected: Vec<u32> = (1..=manifest.parts.len() as u32).collect();
        assert_eq!(numbers, expected);
    }

    /// Hour 10 of `big` is first flushed whole (one object, before it was
    /// sharded); then late objects arrive, one staged before the shard
    /// count changed and two after, re-sending events of each other and of
    /// the flushed object. The coordinator splits the late data into
    /// ranges of the 8 shards (the count the newest segments have), four
    /// workers flush them at once, and each range de-duplicates against
    /// its shards' ids alone (read from the partition's digest of before).
    /// Each event reaches the archive and the destination once, every
    /// staged object and run record is removed, `_SUCCESS` is written once
    /// every range is in, and a later small late batch (one item, the
    /// whole partition) is flushed shard by shard too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_larger_than_an_item_is_flushed_by_ranges_of_shards_at_once() {
        let harness = Harness::start_with(SHARDED).await;
        let unsharded = config_of(UNSHARDED);
        let mut events = stage_big(&harness, &unsharded, 0..30, "first").await;
        // The first flush sees one small object: one item, flushed whole.
        let flusher = harness.flusher();
        let planned = harness.coordinate(&flusher, CLOSED).await;
        assert_eq!(planned.items, 1, "{planned:?}");
        harness.workers(&flusher, 1).await;
        let first: Manifest = harness.json(BIG).await;
        assert!(first.shards.is_none() && first.id_digest.is_some());

        events.extend(stage_big(&harness, &unsharded, 20..70, "late-old").await);
        events.extend(stage_big(&harness, &harness.config, 60..120, "late-new").await);
        events.extend(stage_big(&harness, &harness.config, 0..10, "resent").await);
        let events = sorted(events);
        assert_eq!(events.len(), 120);

        let planned = harness.coordinate(&flusher, CLOSED + HOUR).await;
        let run = planned.run.clone().expect("items were sent");
        let items = items(&harness, &run).await;
        let ranges: Vec<(u32, u32, u32)> = items
            .iter()
            .filter_map(|(_, item)| item.partitions[0].shards)
            .map(|range| (range.count, range.first, range.end))
            .collect();
        assert!(ranges.len() >= 2, "{planned:?}: {ranges:?}");
        assert_eq!(ranges.len(), items.len(), "big is the only partition");
        assert!(ranges.iter().all(|(count, ..)| *count == 8));
        let mut covered: Vec<u32> = ranges.iter().flat_map(|r| r.1..r.2).collect();
        covered.sort_unstable();
        assert_eq!(covered, (0..8).collect::<Vec<u32>>(), "{ranges:?}");

        let drained = harness.workers(&flusher, 4).await;
        assert!(drained.failed.is_empty(), "{drained:?}");
        assert_eq!(drained.deleted, items.len(), "{drained:?}");
        assert_same(harness.archived().await, &events);
        assert_same(harness.delivered().await, &events);
        let big: Manifest = harness.json(BIG).await;
        assert_eq!(big.version, SHARDED_MANIFEST_VERSION);
        let state = big.shards.as_ref().expect("sharded");
        assert_eq!(state.count, 8);
        assert!(state.consumed.is_empty(), "{state:?}");
        assert_eq!(state.digests.len(), 8);
        assert_eq!(big.consumed_chunks.len(), 4);
        assert_eq!(big.events, 120);
        assert_eq!(big.duplicates_dropped, 30);
        assert!(big.destinations["everyone"].pending.is_empty());
        only_committed_parts(&harness, &big).await;
        assert!(harness.keys("staging/").await.is_empty());
        assert!(harness.keys("work/").await.is_empty());
        assert_eq!(harness.dead_letters().await, 0);
        let markers = list_keys(&harness.s3, DESTINATION, "").await.unwrap();
        assert_eq!(
            markers.iter().filter(|k| k.ends_with("_SUCCESS")).count(),
            1,
            "{markers:?}"
        );

        // A small late batch: one item, the whole partition, still sharded.
        let mut all = events.clone();
        all.extend(stage_big(&harness, &harness.config, 115..125, "later").await);
        let all = sorted(all);
        let planned = harness.coordinate(&flusher, CLOSED + 2 * HOUR).await;
        assert_eq!(planned.items, 1, "{planned:?}");
        let drained = harness.workers(&flusher, 2).await;
        assert!(drained.failed.is_empty(), "{drained:?}");
        assert_same(harness.archived().await, &all);
        assert_same(harness.delivered().await, &all);
        let later: Manifest = harness.json(BIG).await;
        assert_eq!(later.events, 125);
        assert_eq!(later.duplicates_dropped, 35);
        assert_eq!(later.shards.as_ref().map(|s| s.count), Some(8));
        only_committed_parts(&harness, &later).await;
        assert!(harness.keys("staging/").await.is_empty());
        // A range leaves the pending-publish marker it may have put (another
        // range may have parts pending): this run's item deleted it.
        assert!(harness.keys("pending/").await.is_empty());
    }

    /// Stages three objects of `big` (8 shards), runs the coordinator, and
    /// returns the keys of its range items.
    async fn planned_ranges(harness: &Harness) -> (Vec<String>, Vec<String>) {
        let mut events = Vec::new();
        for (n, numbers) in [0..50, 40..90, 80..130].into_iter().enumerate() {
            let config = harness.config.clone();
            events.extend(stage_big(harness, &config, numbers, &format!("inv-{n}")).await);
        }
        let flusher = harness.flusher();
        let planned = harness.coordinate(&flusher, CLOSED).await;
        let run = planned.run.expect("items were sent");
        let keys: Vec<String> = items(harness, &run)
            .await
            .into_iter()
            .filter(|(_, item)| item.partitions[0].shards.is_some())
            .map(|(key, _)| key)
            .collect();
        assert!(keys.len() >= 2, "{keys:?}");
        (keys, sorted(events))
    }

    /// Worker A flushes item `a`, its manifest writes held until worker B
    /// has flushed item `b`: their reports.
    async fn race(harness: &Harness, a: &str, b: &str) -> (ItemReport, ItemReport) {
        let gate = Gate::new();
        let (worker_a, _proxy) = held_worker(harness, &gate).await;
        let worker_b = harness.flusher();
        let second = async {
            gate.wait_for(1).await;
            let report = worker::flush_item(&worker_b, b, None).await;
            gate.open();
            report
        };
        let (first, second) = tokio::join!(worker::flush_item(&worker_a, a, None), second);
        (first.unwrap(), second.unwrap())
    }

    /// A worker whose S3 requests go through a proxy holding its manifest
    /// writes until `gate` opens.
    async fn held_worker(harness: &Harness, gate: &Gate) -> (Flusher, FaultProxy) {
        let plan = FaultPlan {
            hold: Some(Hold {
                filter: RequestFilter::new(|request| request.writes(EXPORT, "manifests/")),
                gate: gate.clone(),
            }),
            ..FaultPlan::none()
        };
        let proxy = FaultProxy::start(&harness.moto.endpoint(), plan)
            .await
            .unwrap();
        let flusher = harness.flusher_with(proxy.s3_client(&harness.s3));
        (flusher, proxy)
    }

    /// Worker A has compacted its range and is committing (its manifest
    /// write held) when worker B commits another range of the same
    /// partition. A's conditional write fails; it reads the manifest again,
    /// finds its shards untouched and commits on top of B, its parts
    /// numbered after B's. Then the other ranges are flushed: each event
    /// once, every part named by the manifest, numbers 1 to n.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_whose_commit_finds_another_range_committed_commits_on_top_of_it() {
        let harness = Harness::start_with(SHARDED).await;
        let (ranges, events) = planned_ranges(&harness).await;
        let (a, b) = race(&harness, &ranges[0], &ranges[1]).await;
        assert!(a.finished && b.finished, "{a:?} {b:?}");
        assert!(a.flush.events > 0 && b.flush.events > 0, "{a:?} {b:?}");
        let big: Manifest = harness.json(BIG).await;
        assert_eq!(big.generation, 2, "both ranges committed");
        let parts_b = &b.flush.partitions[0].parts;
        let parts_a = &a.flush.partitions[0].parts;
        assert!(
            parts_a.iter().min() > parts_b.iter().max(),
            "A's parts are numbered after B's: {parts_a:?} {parts_b:?}"
        );
        only_committed_parts(&harness, &big).await;

        let drained = harness.workers(&harness.flusher(), 2).await;
        assert!(drained.failed.is_empty(), "{drained:?}");
        assert_same(harness.archived().await, &events);
        assert_same(harness.delivered().await, &events);
        let big: Manifest = harness.json(BIG).await;
        only_committed_parts(&harness, &big).await;
        assert_eq!(big.events, 130);
        assert!(harness.keys("staging/").await.is_empty());
        assert!(harness.keys("work/").await.is_empty());
    }

    /// The same range item delivered twice at once: worker A's commit is
    /// held while worker B commits the same range. A's conditional write
    /// fails, and on reading the manifest again it finds its shards
    /// committed: a lost race, not a failure; its parts and digest are
    /// removed. Each event once, every part named by the manifest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_flushed_twice_at_once_is_committed_once() {
        let harness = Harness::start_with(SHARDED).await;
        let (ranges, events) = planned_ranges(&harness).await;
        let (a, b) = race(&harness, &ranges[0], &ranges[0]).await;
        assert_eq!(a.flush.failed + b.flush.failed, 0, "{a:?} {b:?}");
        assert!(b.flush.events > 0, "{b:?}");
        assert!(a.flush.partitions[0].parts.is_empty(), "A lost: {a:?}");
        let big: Manifest = harness.json(BIG).await;
        assert_eq!(big.generation, 1, "only B committed");
        only_committed_parts(&harness, &big).await;
        let digests = harness.keys("manifests/airkit-audit-logs/big/").await;
        assert_eq!(digests.len(), 2, "the manifest and B's digest: {digests:?}");

        let drained = harness.workers(&harness.flusher(), 2).await;
        assert!(drained.failed.is_empty(), "{drained:?}");
        assert_same(harness.archived().await, &events);
        assert_same(harness.delivered().await, &events);
        assert!(harness.keys("staging/").await.is_empty());
    }

    /// The bytes stored at `key` in the export bucket.
    async fn object(harness: &Harness, key: &str) -> Vec<u8> {
        let object = harness.s3.get_object().bucket(EXPORT).key(key).send();
        let bytes = object.await.unwrap().body.collect().await.unwrap();
        bytes.into_bytes().to_vec()
    }

    async fn put_object(harness: &Harness, key: &str, bytes: Vec<u8>) {
        harness
            .s3
            .put_object()
            .bucket(EXPORT)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .unwrap();
    }

    /// Flushed to the deadline one staged source at a time (each range
    /// stops after its first source with new events, as at a checkpoint),
    /// each range commits the sources it read and is sent to the queue
    /// again, to go on in the next delivery: never mid-source, since a
    /// range records consumption per source. Each event once, every part
    /// committed, nothing left staged, nothing in the dead-letter queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_stopped_by_its_deadline_commits_what_it_read_and_goes_on_later() {
        let harness = Harness::start_with(SHARDED).await;
        let (ranges, events) = planned_ranges(&harness).await;
        let mut flusher = harness.flusher();
        flusher.checkpoint_after_events = Some(1);
        let drained = harness.workers(&flusher, 3).await;
        assert!(drained.failed.is_empty(), "{drained:?}");
        assert!(
            drained.deleted > ranges.len() + 1,
            "ranges were sent again: {drained:?}"
        );
        assert_eq!(harness.dead_letters().await, 0);
        assert_same(harness.archived().await, &events);
        assert_same(harness.delivered().await, &events);
        let big: Manifest = harness.json(BIG).await;
        assert!(big.cursor.is_none() && !big.in_progress(), "{big:?}");
        assert!(big.generation > ranges.len() as u64, "{big:?}");
        only_committed_parts(&harness, &big).await;
        assert!(harness.keys("staging/").await.is_empty());
        assert!(harness.keys("work/").await.is_empty());
    }

    /// An item planned with a shard count other than the one the hour's
    /// first sharded commit recorded (here: edited to 4 of 8) is stale: its
    /// worker flushes nothing of it and its run deletes no staged object
    /// that range has not consumed. The next coordinator run plans the
    /// rest with the recorded count, and each event is exported once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_planned_with_another_shard_count_leaves_its_data_for_the_next_run() {
        let harness = Harness::start_with(SHARDED).await;
        let (ranges, events) = planned_ranges(&harness).await;
        // One range committed: the hour's count is 8.
        let flusher = harness.flusher();
        let first = worker::flush_item(&flusher, &ranges[0], None)
            .await
            .unwrap();
        assert!(first.flush.events > 0, "{first:?}");
        let mut stale: WorkItem = harness.json(&ranges[1]).await;
        let range = stale.partitions[0].shards.as_mut().unwrap();
        (range.count, range.first, range.end) = (4, 0, 4);
        put_object(&harness, &ranges[1], stale.to_json()).await;

        let drained = harness.workers(&flusher, 2).await;
        assert!(drained.failed.is_empty(), "{drained:?}");
        let big: Manifest = harness.json(BIG).await;
        assert_eq!(big.shards.as_ref().map(|s| s.count), Some(8));
        assert!(big.in_progress(), "the stale range's shards are not in");
        assert_eq!(
            harness.keys("staging/").await.len(),
            3,
            "what the stale range did not consume stays staged"
        );
        assert!(harness.keys("work/").await.is_empty(), "the run finished");

        let next = harness.coordinate(&flusher, CLOSED + HOUR).await;
        assert!(next.items >= 1, "{next:?}");
        let drained = harness.workers(&flusher, 2).await;
        assert!(drained.failed.is_empty(), "{drained:?}");
        assert_same(harness.archived().await, &events);
        assert_same(harness.delivered().await, &events);
        let big: Manifest = harness.json(BIG).await;
        assert!(!big.in_progress(), "{big:?}");
        only_committed_parts(&harness, &big).await;
        assert!(harness.keys("staging/").await.is_empty());
    }

    /// One shard's segment of a staged object is damaged: the range that
    /// reads it quarantines the object (a copy, alerted) and records it as
    /// quarantined, exporting none of the object's events of its shards;
    /// the other ranges export their shards of it, before or after, and
    /// none records it as partly consumed afterwards, so the hour is
    /// complete. Every other event once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_segment_quarantines_its_object_for_its_range_and_the_hour_completes() {
        let harness = Harness::start_with(SHARDED).await;
        let mut events = Vec::new();
        for (n, numbers) in [0..50, 50..100, 100..150].into_iter().enumerate() {
            let config = harness.config.clone();
            events.extend(stage_big(&harness, &config, numbers, &format!("inv-{n}")).await);
        }
        let staged = harness.keys("staging/").await;
        let damaged_key = &staged[1];
        let mut bytes = object(&harness, damaged_key).await;
        let index = shared::staged::read_index(&bytes).unwrap();
        let segment = index
            .segments
            .iter()
            .find(|s| s.tenant == "big" && s.shard == 5)
            .unwrap()
            .clone();
        bytes[(segment.offset + segment.length / 2) as usize] ^= 0x04;
        put_object(&harness, damaged_key, bytes).await;
        let flusher = harness.flusher();
        let planned = harness.coordinate(&flusher, CLOSED).await;
        let run = planned.run.clone().expect("items were sent");
        let range = items(&harness, &run)
            .await
            .into_iter()
            .filter_map(|(_, item)| item.partitions[0].shards)
            .find(|range| (range.first..range.end).contains(&5))
            .expect("a range holds shard 5");
        assert!(range.end - range.first < 8, "{planned:?}: {range:?}");
        // The second object's events of that range are not exported (the
        // object's quarantine copy holds them); its other shards' are.
        let lost: Vec<String> = (50..100)
            .filter(|n| {
                let shard = shared::staged::shard_of(&format!("E-big-{n}"), true, 8);
                (range.first..range.end).contains(&shard)
            })
            .map(|n| audit_event("big", n))
            .collect();
        assert!(!lost.is_empty() && lost.len() < 50);
        events.retain(|event| !lost.contains(event));
        let events = sorted(events);

        let drained = harness.workers(&flusher, 3).await;
        assert!(drained.failed.is_empty(), "{drained:?}");
        assert_same(harness.archived().await, &events);
        assert_same(harness.delivered().await, &events);
        let big: Manifest = harness.json(BIG).await;
        assert_eq!(big.quarantined_chunks, vec![damaged_key.clone()]);
        assert!(!big.in_progress(), "{:?}", big.shards);
        assert!(
            harness
                .keys("quarantine/")
                .await
                .iter()
                .any(|k| k.ends_with(damaged_key.as_str()))
        );
        assert!(harness.keys("staging/").await.is_empty());
    }

    /// A partition over the budget whose manifest the coordinator cannot
    /// use (here one of a newer release) is not split, and the run goes
    /// on: the partition is one item, whose worker fails naming the
    /// manifest, and its data stays staged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_whose_manifest_cannot_be_read_is_planned_whole() {
        let harness = Harness::start_with(SHARDED).await;
        for (n, numbers) in [0..50, 50..100].into_iter().enumerate() {
            let config = harness.config.clone();
            stage_big(&harness, &config, numbers, &format!("inv-{n}")).await;
        }
        let newer = serde_json::json!({"version": 99, "stream": "airkit-audit-logs",
            "tenant": "big", "hour": "2026-11-22T10:00:00.000Z", "generation": 1, "parts": [],
            "consumedChunks": [], "idDigest": null, "events": 0, "duplicatesDropped": 0,
            "destinations": {}, "committedAt": "2026-11-22T11:15:00.000Z"});
        put_object(&harness, BIG, serde_json::to_vec(&newer).unwrap()).await;
        let flusher = harness.flusher();
        let planned = harness.coordinate(&flusher, CLOSED).await;
        assert_eq!((planned.items, planned.shard_ranges), (1, 0), "{planned:?}");
        let run = planned.run.expect("an item was sent");
        let (key, _) = items(&harness, &run).await.remove(0);
        let report = worker::flush_item(&flusher, &key, None).await.unwrap();
        assert!(!report.finished, "{report:?}");
        let error = report.flush.partitions[0].error.as_deref().unwrap();
        assert!(
            error.contains(BIG) && error.contains("version 99"),
            "{error}"
        );
        assert_eq!(harness.keys("staging/").await.len(), 2);
    }

    /// A worker that stops after any step of flushing a range (its parts
    /// written, its commit, some publishes, before deleting what it
    /// consumed) fails its item; the ranges are then flushed again by
    /// workers that do not stop. Each event once, part numbers 1 to n.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_stopped_after_any_step_converges_when_flushed_again() {
        use flusher::Step;
        for step in [
            Step::PartsWritten,
            Step::ManifestCommitted,
            Step::SomePublished,
            Step::BeforeDeletingChunks,
        ] {
            let harness = Harness::start_with(SHARDED).await;
            let (ranges, events) = planned_ranges(&harness).await;
            let mut stopping = harness.flusher();
            stopping.stop_after = Some(step);
            let stopped = worker::flush_item(&stopping, &ranges[0], None).await;
            let stopped = stopped.unwrap();
            assert!(!stopped.finished, "{step:?}: {stopped:?}");
            let drained = harness.workers(&harness.flusher(), 2).await;
            assert!(drained.failed.is_empty(), "{step:?}: {drained:?}");
            assert_same(harness.archived().await, &events);
            assert_same(harness.delivered().await, &events);
            let big: Manifest = harness.json(BIG).await;
            assert!(!big.in_progress(), "{step:?}");
            let mut numbers: Vec<u32> = big.parts.iter().map(|p| p.number).collect();
            numbers.sort_unstable();
            assert_eq!(numbers, (1..=big.parts.len() as u32).collect::<Vec<_>>());
            assert!(harness.keys("staging/").await.is_empty(), "{step:?}");
        }
    }
}
