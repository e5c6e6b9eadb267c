//! Backfill against moto: hours staged by the real batcher and flushed by
//! the real flusher, then backfilled into destinations, read back and
//! compared key by key and byte by byte with their normal export.

use std::collections::BTreeMap;

use aws_lambda_events::event::sqs::SqsMessage;
use batcher::Batcher;
use batcher::records::sqs_record;
use flusher::backfill::{self, BackfillProgress, BackfillStatus};
use flusher::{BackfillRequest, Flusher, Invocation, Trigger};
use s3_export::faults::FailRequestsTo;
use s3_export::inspect::{list_keys, read_export_files};
use s3_export::moto::MotoServer;
use serde_json::{Value, json};
use shared::Config;
use shared::manifest::Manifest;

const EXPORT: &str = "exports";
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:events";
/// 2026-11-22T10:00:00Z
const TEN: i64 = 1_795_341_600_000;
const HOUR: i64 = 3_600_000;

/// The options both destinations share, so their files must be identical:
/// a rewritten format (events rewritten line by line with `_export`), a
/// folder per hour and its `_SUCCESS` marker.
const OPTIONS: &str =
    r#""layout":"hive","format":"zstd","includeMetadata":true,"successMarker":true,"shared":true"#;

fn document(with_later: bool) -> String {
    let later = if with_later {
        format!(r#",{{"name":"later","bucket":"dest-later",{OPTIONS}}}"#)
    } else {
        String::new()
    };
    format!(r#"{{"destinations":[{{"name":"lake","bucket":"dest-lake",{OPTIONS}}}{later}]}}"#)
}

struct Harness {
    _moto: MotoServer,
    s3: aws_sdk_s3::Client,
}

impl Harness {
    async fn start() -> Self {
        let moto = MotoServer::start().await.expect("moto_server starts");
        let s3 = moto.s3_client().await;
        for bucket in [EXPORT, "dest-lake", "dest-later"] {
            s3.create_bucket().bucket(bucket).send().await.unwrap();
        }
        Self { _moto: moto, s3 }
    }

    fn config(&self, document: &str) -> Config {
        Config::from_sources(
            |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
            Some(document),
        )
        .unwrap()
    }

    fn flusher(&self, document: &str) -> Flusher {
        Flusher::new(self.config(document), self.s3.clone())
    }

    /// Stages `count` app events of `tenant` sent in `hour` (from 10).
    async fn stage(&self, tenant: &str, hour: i64, count: usize) -> Vec<String> {
        let events: Vec<String> = (0..count).map(|n| app_event(tenant, hour, n)).collect();
        let records: Vec<SqsMessage> = events
            .iter()
            .enumerate()
            .map(|(n, body)| {
                sqs_record(
                    &format!("{tenant}-{hour}-{n}"),
                    body,
                    TEN + (hour - 10) * HOUR + 1000,
                    QUEUE_ARN,
                )
            })
            .collect();
        let batcher = Batcher::new(self.config(&document(false)), self.s3.clone());
        let request_id = format!("req-{tenant}-{hour}");
        let response = batcher::process(&batcher, &records, TEN + (hour - 10) * HOUR, &request_id)
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
        events
    }

    /// Every object of `bucket`, key → bytes.
    async fn objects(&self, bucket: &str) -> BTreeMap<String, Vec<u8>> {
        let mut all = BTreeMap::new();
        for key in list_keys(&self.s3, bucket, "").await.unwrap() {
            let object = self
                .s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
            let bytes = object.body.collect().await.unwrap().into_bytes().to_vec();
            all.insert(key, bytes);
        }
        all
    }

    /// Every event line in `bucket`'s export files, without `_export`,
    /// sorted.
    async fn events(&self, bucket: &str) -> Vec<String> {
        let mut lines: Vec<String> = read_export_files(&self.s3, bucket, "")
            .await
            .unwrap()
            .into_iter()
            .flat_map(|file| file.lines)
            .map(|line| without_export(&line))
            .collect();
        lines.sort();
        lines
    }

    async fn manifest(&self, hour: i64, tenant: &str) -> Manifest {
        let key = format!("manifests/airkit-app-events/{tenant}/2026-11-22/{hour}.json");
        serde_json::from_slice(&self.objects_one(EXPORT, &key).await).unwrap()
    }

    async fn objects_one(&self, bucket: &str, key: &str) -> Vec<u8> {
        let object = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        object.body.collect().await.unwrap().into_bytes().to_vec()
    }

    async fn progress(&self, key: &str) -> BackfillProgress {
        serde_json::from_slice(&self.objects_one(EXPORT, key).await).unwrap()
    }
}

fn app_event(tenant: &str, hour: i64, n: usize) -> String {
    format!(
        r#"{{"organizationId":"{tenant}","eventTime":"2026-11-22T{hour}:{:02}:00Z","type":"step_enter","sessionId":"s{n}","n":{n}}}"#,
        n % 60
    )
}

/// The line without the `_export` member the destinations add last.
fn without_export(line: &str) -> String {
    match line.find(r#","_export":"#) {
        Some(at) => format!("{}}}", &line[..at]),
        None => line.to_owned(),
    }
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

async fn flush_at(flusher: &Flusher, now: i64) -> flusher::FlushReport {
    let trigger =
        Trigger::from_payload(&json!({ "time": shared::time::format_rfc3339_millis(now) }))
            .unwrap();
    let report = flusher::run(flusher, &trigger, None).await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    report
}

fn request(backfill: Value) -> BackfillRequest {
    match Invocation::from_payload(&json!({ "backfill": backfill })).unwrap() {
        Invocation::Backfill(request) => request,
        other => panic!("not a backfill: {other:?}"),
    }
}

/// The wall clock a backfill's retention check uses in these tests: the
/// hours are recent.
const NOW: i64 = TEN + 6 * HOUR;

/// Hours 10 and 11 of t1 and t2, flushed into `lake`.
async fn two_flushed_hours(harness: &Harness) -> Vec<String> {
    let mut events = Vec::new();
    events.extend(harness.stage("t1", 10, 20).await);
    events.extend(harness.stage("t2", 10, 5).await);
    events.extend(harness.stage("t1", 11, 7).await);
    flush_at(
        &harness.flusher(&document(false)),
        TEN + 2 * HOUR + 15 * 60_000,
    )
    .await;
    sorted(events)
}

#[tokio::test]
async fn a_backfill_over_an_already_exported_range_rewrites_the_same_keys_and_bytes() {
    let harness = Harness::start().await;
    let events = two_flushed_hours(&harness).await;
    let exported = harness.objects("dest-lake").await;
    assert_eq!(harness.events("dest-lake").await, events);

    // Wider than what was exported, on both sides.
    let flusher = harness.flusher(&document(false));
    let report = backfill::run_backfill(
        &flusher,
        &request(json!({"destination": "lake", "from": "2026-11-22T08:00:00Z", "to": "2026-11-22T13:00:00Z"})),
        NOW,
        None,
    )
    .await
    .unwrap();
    assert_eq!(report.status, BackfillStatus::Done);
    assert_eq!((report.partitions, report.parts, report.events), (3, 3, 32));
    assert_eq!(report.error, None);
    assert_eq!(
        harness.objects("dest-lake").await,
        exported,
        "the same keys with the same bytes: nothing added, nothing changed"
    );
    assert_eq!(harness.events("dest-lake").await, events, "each event once");
    let manifest = harness.manifest(10, "t1").await;
    assert_eq!(manifest.destinations["lake"].published, vec![1]);
    assert!(manifest.destinations["lake"].pending.is_empty());

    // An overlapping second backfill still leaves each event once.
    let report = backfill::run_backfill(
        &flusher,
        &request(json!({"destination": "lake", "from": "2026-11-22T10:30:00Z", "to": "2026-11-22T12:00:00Z", "tenants": ["t1"]})),
        NOW,
        None,
    )
    .await
    .unwrap();
    assert_eq!((report.partitions, report.events), (2, 27));
    assert_eq!(harness.objects("dest-lake").await, exported);
}

#[tokio::test]
async fn a_destination_added_later_gets_its_history_by_backfill_identical_to_a_normal_export() {
    let harness = Harness::start().await;
    let events = two_flushed_hours(&harness).await;
    let with_later = document(true);

    // Added after hours 10 and 11 were flushed: a later run does not send
    // them (hour 12 is new and goes to both).
    let hour_twelve = harness.stage("t2", 12, 3).await;
    let flusher = harness.flusher(&with_later);
    flush_at(&flusher, TEN + 3 * HOUR + 15 * 60_000).await;
    assert_eq!(
        harness.events("dest-later").await,
        sorted(hour_twelve.clone())
    );

    let payload = json!({"backfill": {"destination": "later", "from": "2026-11-22T10:00:00Z", "to": "2026-11-22T12:00:00Z"}});
    let answer = flusher::handle(
        &flusher,
        lambda_runtime::LambdaEvent::new(payload, Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(answer["status"], "done");
    assert_eq!(answer["partitions"], 3);
    assert_eq!(answer["remaining"], 0);

    let lake = harness.objects("dest-lake").await;
    let later = harness.objects("dest-later").await;
    assert_eq!(
        lake.keys().collect::<Vec<_>>(),
        later.keys().collect::<Vec<_>>(),
        "the same keys"
    );
    for (key, bytes) in &lake {
        assert_eq!(bytes, &later[key], "the same bytes at {key}");
    }
    assert!(lake.keys().any(|key| key.ends_with("/_SUCCESS")));
    let mut all = events.clone();
    all.extend(hour_twelve);
    assert_eq!(harness.events("dest-later").await, sorted(all));

    // The manifests record the backfilled parts, as the status command shows.
    let manifest = harness.manifest(10, "t2").await;
    assert_eq!(manifest.destinations["later"].published, vec![1]);
    assert_eq!(manifest.destinations["lake"].published, vec![1]);

    // Asked again, a done backfill does nothing; `restart` redoes it, still
    // with the same keys and bytes.
    let again = backfill::run_backfill(
        &flusher,
        &request(json!({"destination": "later", "from": "2026-11-22T10:00:00Z", "to": "2026-11-22T12:00:00Z"})),
        NOW,
        None,
    )
    .await
    .unwrap();
    assert_eq!((again.status, again.partitions), (BackfillStatus::Done, 0));
    let redone = backfill::run_backfill(
        &flusher,
        &request(json!({"destination": "later", "from": "2026-11-22T10:00:00Z", "to": "2026-11-22T12:00:00Z", "restart": true})),
        NOW,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        (redone.status, redone.partitions),
        (BackfillStatus::Done, 3)
    );
    assert_eq!(harness.objects("dest-later").await, later);
}

#[tokio::test]
async fn a_backfill_interrupted_half_way_resumes_where_it_stopped() {
    let harness = Harness::start().await;
    let mut events = Vec::new();
    for hour in 10..14 {
        events.extend(harness.stage("t1", hour, 4).await);
    }
    let events = sorted(events);
    flush_at(
        &harness.flusher(&document(false)),
        TEN + 4 * HOUR + 15 * 60_000,
    )
    .await;
    assert_eq!(harness.events("dest-later").await, Vec::<String>::new());

    // Writes of hour 12 to the new destination fail, as a network outage would.
    let fault =
        FailRequestsTo::new("/dest-later/airkit-app-events/tenant%3Dt1/dt%3D2026-11-22/hour%3D12/");
    let with_later = document(true);
    let faulty = Flusher::new(harness.config(&with_later), fault.wrap(&harness.s3));
    let payload = json!({"backfill": {"destination": "later", "from": "2026-11-22T00:00:00Z", "to": "2026-11-23T00:00:00Z"}});
    let error = flusher::handle(
        &faulty,
        lambda_runtime::LambdaEvent::new(payload.clone(), Default::default()),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(fault.failed() > 0);
    assert!(
        error.contains("stopped; it resumes from backfills/"),
        "{error}"
    );
    assert!(
        error.contains("later (part 1 of manifests/airkit-app-events/t1/2026-11-22/12.json)"),
        "{error}"
    );

    let Invocation::Backfill(asked) = Invocation::from_payload(&payload).unwrap() else {
        unreachable!()
    };
    let progress_key = shared::layout::backfill_progress_key(&backfill::request_id(&asked));
    let progress = harness.progress(&progress_key).await;
    assert_eq!(progress.status, BackfillStatus::Running);
    assert_eq!(progress.partitions_done, 2);
    let cursor = progress.cursor.clone().unwrap();
    assert_eq!(cursor.hour, "2026-11-22T11:00:00.000Z");
    assert!(progress.last_error.as_deref().unwrap().contains("hour=12"));
    // Hours 10 and 11 are there and 12 is not (13, published concurrently,
    // may be: it is after the cursor, and is published again on resuming).
    let delivered = harness.events("dest-later").await;
    let hour = |h: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.contains(&format!("T{h}:")))
            .cloned()
            .collect()
    };
    for h in ["10", "11"] {
        assert!(hour(h).iter().all(|e| delivered.contains(e)), "hour {h}");
    }
    assert!(!hour("12").iter().any(|e| delivered.contains(e)));

    // `s3-export status --backfills` shows where it stands.
    let listed = s3_export::status::backfills(&harness.s3, EXPORT)
        .await
        .unwrap();
    assert_eq!(listed, std::slice::from_ref(&progress));
    let text = s3_export::status::render_backfills(&listed);
    assert!(
        text.contains("  later  2026-11-22T00:00:00.000Z to 2026-11-23T00:00:00.000Z  running  2 partition(s), 2 part(s), 8 event(s)  last done: 2026-11-22T11:00:00.000Z airkit-app-events t1"),
        "{text}"
    );
    assert!(
        text.contains(
            "  last error: later (part 1 of manifests/airkit-app-events/t1/2026-11-22/12.json)"
        ),
        "{text}"
    );

    // The next scheduled run continues it, once the fault is gone.
    fault.heal();
    let report = flush_at(&harness.flusher(&with_later), TEN + 5 * HOUR + 15 * 60_000).await;
    assert_eq!(report.backfills.len(), 1, "{report:?}");
    let continued = &report.backfills[0];
    assert_eq!(continued.status, BackfillStatus::Done);
    assert_eq!((continued.partitions, continued.events), (2, 8));
    assert_eq!(continued.error, None);
    assert_eq!(
        harness.events("dest-later").await,
        events,
        "each event once"
    );
    assert_eq!(
        harness.objects("dest-later").await,
        harness.objects("dest-lake").await,
        "the same keys and bytes as the normal export"
    );
    let progress = harness.progress(&progress_key).await;
    assert_eq!(
        (progress.status, progress.partitions_done, progress.events),
        (BackfillStatus::Done, 4, 16)
    );

    // Done: later scheduled runs leave it.
    let report = flush_at(&harness.flusher(&with_later), TEN + 6 * HOUR + 15 * 60_000).await;
    assert!(report.backfills.is_empty());
}

#[tokio::test]
async fn a_backfill_out_of_time_records_nothing_done_and_the_same_request_resumes_it() {
    let harness = Harness::start().await;
    let events = two_flushed_hours(&harness).await;
    let flusher = harness.flusher(&document(true));
    let asked = request(
        json!({"destination": "later", "from": "2026-11-22T10:00:00Z", "to": "2026-11-22T12:00:00Z"}),
    );
    let nearly_out = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let report = backfill::run_backfill(&flusher, &asked, NOW, Some(nearly_out))
        .await
        .unwrap();
    assert_eq!(
        (report.status, report.partitions, report.remaining),
        (BackfillStatus::Running, 0, 3)
    );
    assert!(
        list_keys(&harness.s3, "dest-later", "")
            .await
            .unwrap()
            .is_empty()
    );
    let report = backfill::run_backfill(&flusher, &asked, NOW, None)
        .await
        .unwrap();
    assert_eq!(
        (report.status, report.partitions, report.remaining),
        (BackfillStatus::Done, 3, 0)
    );
    assert_eq!(harness.events("dest-later").await, events);
}

#[tokio::test]
async fn bad_backfill_payloads_fail_naming_the_field_and_write_nothing() {
    let harness = Harness::start().await;
    two_flushed_hours(&harness).await;
    let document = r#"{"archiveRetentionDays": 30, "destinations":[{"name":"lake","bucket":"dest-lake","shared":true}]}"#;
    let flusher = harness.flusher(document);
    let before = harness.objects(EXPORT).await;
    let cases = [
        (
            json!({"destination": "nope", "from": "2026-11-22T10:00:00Z", "to": "2026-11-22T12:00:00Z"}),
            "`backfill.destination`: no destination is named `nope` (configured: lake)",
        ),
        (
            json!({"destination": "lake", "from": "2026-11-22T12:00:00Z", "to": "2026-11-22T10:00:00Z"}),
            "`backfill.to`: `2026-11-22T10:00:00Z` is not after `backfill.from`",
        ),
        (
            json!({"destination": "lake", "from": "last tuesday", "to": "2026-11-22T10:00:00Z"}),
            "`backfill.from`: `last tuesday`",
        ),
        (
            json!({"destination": "lake", "from": "2020-01-01T00:00:00Z", "to": "2020-01-01T03:00:00Z"}),
            "`backfill.from`: 3 hour(s), 2020-01-01T00:00:00.000Z to 2020-01-01T02:00:00.000Z, are past the archive's retention of 30 days",
        ),
        (
            json!({"destination": "lake", "from": "2026-11-22T10:00:00Z", "to": "2026-11-22T12:00:00Z", "streams": ["orders"]}),
            "`backfill.streams`: stream `orders` is not configured",
        ),
    ];
    for (backfill, expected) in cases {
        let error = flusher::handle(
            &flusher,
            lambda_runtime::LambdaEvent::new(json!({ "backfill": backfill }), Default::default()),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains(expected), "{error}\nexpected: {expected}");
    }
    assert_eq!(harness.objects(EXPORT).await, before, "nothing written");
}

#[tokio::test]
async fn a_scheduled_run_marks_failed_a_backfill_whose_destination_was_removed() {
    let harness = Harness::start().await;
    two_flushed_hours(&harness).await;
    let with_later = harness.flusher(&document(true));
    let asked = request(
        json!({"destination": "later", "from": "2026-11-22T10:00:00Z", "to": "2026-11-22T12:00:00Z"}),
    );
    let nearly_out = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let report = backfill::run_backfill(&with_later, &asked, NOW, Some(nearly_out))
        .await
        .unwrap();
    assert_eq!(report.status, BackfillStatus::Running);

    let report = flush_at(
        &harness.flusher(&document(false)),
        TEN + 3 * HOUR + 15 * 60_000,
    )
    .await;
    assert_eq!(report.backfills.len(), 1);
    assert_eq!(report.backfills[0].status, BackfillStatus::Failed);
    let error = report.backfills[0].error.as_deref().unwrap();
    assert!(error.contains("no destination is named `later`"), "{error}");
    let progress = harness.progress(&report.backfills[0].progress_key).await;
    assert_eq!(progress.status, BackfillStatus::Failed);
    assert!(
        list_keys(&harness.s3, "dest-later", "")
            .await
            .unwrap()
            .is_empty()
    );
    let report = flush_at(
        &harness.flusher(&document(false)),
        TEN + 4 * HOUR + 15 * 60_000,
    )
    .await;
    assert!(
        report.backfills.is_empty(),
        "a failed backfill is left alone"
    );
}

#[tokio::test]
async fn a_corrupt_progress_record_is_named_and_holds_back_nothing_else() {
    let harness = Harness::start().await;
    two_flushed_hours(&harness).await;
    let asked = request(
        json!({"destination": "later", "from": "2026-11-22T10:00:00Z", "to": "2026-11-22T12:00:00Z"}),
    );
    let key = shared::layout::backfill_progress_key(&backfill::request_id(&asked));
    harness
        .s3
        .put_object()
        .bucket(EXPORT)
        .key(&key)
        .body(b"{not json".to_vec().into())
        .send()
        .await
        .unwrap();
    let flusher = harness.flusher(&document(true));
    let error = backfill::run_backfill(&flusher, &asked, NOW, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("backfill progress s3://{EXPORT}/{key}")),
        "{error}"
    );
    let error = s3_export::status::backfills(&harness.s3, EXPORT)
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains(&format!(
            "s3://{EXPORT}/{key} is not a backfill progress record"
        )),
        "{error:#}"
    );

    // The scheduled run still flushes, and continues the other backfills;
    // this one waits for its record to be fixed (or removed, which starts
    // it over).
    let other = request(
        json!({"destination": "later", "from": "2026-11-22T11:00:00Z", "to": "2026-11-22T12:00:00Z"}),
    );
    let nearly_out = std::time::Instant::now() + std::time::Duration::from_secs(30);
    backfill::run_backfill(&flusher, &other, NOW, Some(nearly_out))
        .await
        .unwrap();
    harness.stage("t1", 12, 2).await;
    let report = flush_at(&flusher, TEN + 3 * HOUR + 15 * 60_000).await;
    assert_eq!(report.events, 2);
    assert_eq!(report.backfills.len(), 1);
    assert_eq!(report.backfills[0].from, "2026-11-22T11:00:00.000Z");
    assert_eq!(report.backfills[0].status, BackfillStatus::Done);
    assert!(
        list_keys(
            &harness.s3,
            "dest-later",
            "airkit-app-events/tenant=t1/dt=2026-11-22/hour=10/"
        )
        .await
        .unwrap()
        .is_empty()
    );
}
