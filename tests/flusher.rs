//! The flusher against moto: events staged by the real batcher, flushed into
//! the archive and destinations, read back and checked event by event.

use std::collections::BTreeMap;

use aws_lambda_events::event::sqs::SqsMessage;
use batcher::Batcher;
use batcher::records::{sqs_record, with_stream};
use flusher::{Flusher, Step, Trigger};
use s3_export::inspect::{StoredFile, archive_parts, list_keys, read_archive, read_gzip_ndjson};
use s3_export::moto::MotoServer;
use serde_json::Value;
use shared::Config;
use shared::manifest::Manifest;

const EXPORT: &str = "exports";
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:events";
/// 2026-11-22T10:00:00Z
const TEN: i64 = 1_795_341_600_000;
const HOUR: i64 = 3_600_000;

const DESTINATIONS: &str = r#"{"destinations":[
  {"name":"everyone","bucket":"dest-all","prefix":"exports/","shared":true},
  {"name":"t1-hive","bucket":"dest-t1","tenants":["t1"],"layout":"hive","successMarker":true}
]}"#;

struct Harness {
    moto: MotoServer,
    s3: aws_sdk_s3::Client,
    config: Config,
}

impl Harness {
    async fn start(document: &str) -> Self {
        let moto = MotoServer::start().await.expect("moto_server starts");
        let s3 = moto.s3_client().await;
        for bucket in [EXPORT, "dest-all", "dest-t1"] {
            s3.create_bucket().bucket(bucket).send().await.unwrap();
        }
        let config = Config::from_sources(
            |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
            Some(document),
        )
        .unwrap();
        Self { moto, s3, config }
    }

    async fn stage(&self, records: Vec<SqsMessage>, request_id: &str) {
        let batcher = Batcher::new(self.config.clone(), self.s3.clone());
        let response = batcher::process(&batcher, &records, TEN, request_id)
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }

    /// Stages app events `range` of `tenant`, one message each, sent in hour 10.
    async fn stage_app_events(
        &self,
        tenant: &str,
        range: std::ops::Range<usize>,
        request_id: &str,
    ) {
        let records = range
            .map(|n| record(&format!("m{n}"), &app_event(tenant, n), TEN + 1000))
            .collect();
        self.stage(records, request_id).await;
    }

    fn flusher(&self) -> Flusher {
        Flusher::new(self.config.clone(), self.s3.clone())
    }

    async fn flush(&self, now: i64) -> flusher::FlushReport {
        flush_with(&self.flusher(), now).await
    }

    async fn files(&self, bucket: &str, prefix: &str) -> Vec<StoredFile> {
        read_gzip_ndjson(&self.s3, bucket, prefix).await.unwrap()
    }

    /// The committed archive parts (read where their manifests say they
    /// are) whose names (`layout::archive_part_key`) start with `prefix`.
    async fn archive(&self, prefix: &str) -> Vec<StoredFile> {
        let mut parts = read_archive(&self.s3, EXPORT, "").await.unwrap();
        parts.retain(|part| part.key.starts_with(prefix));
        parts
    }

    /// The compressed bytes of the committed archive part named `name`.
    async fn part_bytes(&self, name: &str) -> Vec<u8> {
        let mut parts = archive_parts(&self.s3, EXPORT, "").await.unwrap();
        parts
            .remove(name)
            .unwrap_or_else(|| panic!("no part {name}"))
    }

    async fn bytes(&self, bucket: &str, key: &str) -> Vec<u8> {
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

    /// Every object of the buckets, key → bytes, but the scratch state.
    /// Every object of the export and destination buckets, the archive as
    /// its manifests commit it (parts by name, wherever stored: bundles
    /// carry their run's attempt in their keys), manifests apart.
    async fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let mut all = archive_parts(&self.s3, EXPORT, "").await.unwrap();
        for bucket in [EXPORT, "dest-all", "dest-t1"] {
            for key in list_keys(&self.s3, bucket, "").await.unwrap() {
                if key.starts_with("manifests/") || key.starts_with("archive/") {
                    continue;
                }
                let bytes = self.bytes(bucket, &key).await;
                all.insert(format!("{bucket}/{key}"), bytes);
            }
        }
        all
    }

    async fn manifest(&self, key: &str) -> Manifest {
        serde_json::from_slice(&self.bytes(EXPORT, key).await).unwrap()
    }
}

async fn flush_with(flusher: &Flusher, now: i64) -> flusher::FlushReport {
    let trigger = Trigger::from_payload(
        &serde_json::json!({ "time": shared::time::format_rfc3339_millis(now) }),
    )
    .unwrap();
    flusher::run(flusher, &trigger, None).await.unwrap()
}

fn app_event(tenant: &str, n: usize) -> String {
    format!(
        r#"{{"organizationId":"{tenant}","eventTime":"2026-11-22T10:{:02}:00Z","type":"step_enter","sessionId":"s{n}","n":{n}}}"#,
        n % 60
    )
}

fn audit_event(tenant: &str, id: &str, user: &str) -> String {
    format!(
        r#"{{"ORGANIZATION_ID":"{tenant}","EVENT_ID":"{id}","EVENT_TIME":"2026-11-22 10:40:02.123","EVENT_TYPE":"user_login","USER_ID":"{user}"}}"#
    )
}

fn record(id: &str, body: &str, sent: i64) -> SqsMessage {
    sqs_record(id, body, sent, QUEUE_ARN)
}

fn lines(files: &[StoredFile]) -> Vec<String> {
    let mut lines: Vec<String> = files.iter().flat_map(|f| f.lines.iter().cloned()).collect();
    lines.sort();
    lines
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

/// Two hours of app and audit events for two tenants, with a redelivered
/// batch, a producer that re-sent messages, and an audit event re-sent with
/// other bytes but the same EVENT_ID.
async fn stage_two_hours(harness: &Harness) -> Vec<String> {
    let first: Vec<SqsMessage> = (0..30)
        .map(|n| {
            record(
                &format!("a{n}"),
                &app_event(if n % 3 == 0 { "t1" } else { "t2" }, n),
                TEN + n as i64 * 1000,
            )
        })
        .collect();
    harness.stage(first.clone(), "req-1").await;
    harness.stage(first[10..20].to_vec(), "req-2").await; // SQS redelivery
    let resent: Vec<SqsMessage> = (0..5)
        .map(|n| {
            record(
                &format!("resent-{n}"),
                &app_event("t1", n * 3),
                TEN + 50_000,
            )
        })
        .collect();
    harness.stage(resent, "req-3").await; // the producer sent twice
    let audit = vec![
        with_stream(
            record("au1", &audit_event("t1", "E-1", "u1"), TEN + 60_000),
            "airkit-audit-logs",
        ),
        with_stream(
            record("au2", &audit_event("t1", "E-2", "u2"), TEN + 61_000),
            "airkit-audit-logs",
        ),
        with_stream(
            record(
                "au1-again",
                &audit_event("t1", "E-1", "u1-retry"),
                TEN + 62_000,
            ),
            "airkit-audit-logs",
        ),
    ];
    harness.stage(audit, "req-4").await;
    let second: Vec<SqsMessage> = (30..40)
        .map(|n| {
            record(
                &format!("b{n}"),
                &app_event("t1", n),
                TEN + HOUR + n as i64 * 1000,
            )
        })
        .collect();
    harness.stage(second, "req-5").await;

    let mut expected: Vec<String> = (0..40)
        .map(|n| app_event(if n < 30 && n % 3 != 0 { "t2" } else { "t1" }, n))
        .collect();
    expected.push(audit_event("t1", "E-1", "u1"));
    expected.push(audit_event("t1", "E-2", "u2"));
    sorted(expected)
}

#[tokio::test]
async fn two_hours_with_redeliveries_and_resends_export_each_event_once() {
    let harness = Harness::start(DESTINATIONS).await;
    let expected = stage_two_hours(&harness).await;

    let report = harness.flush(TEN + 2 * HOUR + 15 * 60_000).await;
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.events, expected.len() as u64);
    assert_eq!(report.duplicates, 10 + 5 + 1);

    let archive = harness.archive("archive/").await;
    assert_eq!(
        lines(&archive),
        expected,
        "each event once, bytes unchanged"
    );
    assert!(
        list_keys(&harness.s3, EXPORT, "staging/")
            .await
            .unwrap()
            .is_empty(),
        "chunks deleted"
    );

    // Every event once in the destination that takes all tenants, in the
    // Amplitude-style layout, with the archive's bytes.
    let everyone = harness.files("dest-all", "").await;
    assert_eq!(lines(&everyone), expected);
    assert!(
        everyone
            .iter()
            .any(|f| f.key == "exports/airkit-app-events/2026-11-22/t1_2026-11-22_10#1.json.gz"),
        "{:?}",
        everyone.iter().map(|f| &f.key).collect::<Vec<_>>()
    );
    for file in &everyone {
        let archive_key = archive_key_for(&file.key);
        assert_eq!(
            harness.bytes("dest-all", &file.key).await,
            harness.part_bytes(&archive_key).await
        );
    }

    // The tenant's own destination gets its events only, Hive-style.
    // The Hive destination marks each complete hour; `_SUCCESS` is empty.
    let markers: Vec<String> = list_keys(&harness.s3, "dest-t1", "")
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.ends_with("_SUCCESS"))
        .collect();
    assert_eq!(
        markers,
        vec![
            "airkit-app-events/tenant=t1/dt=2026-11-22/hour=10/_SUCCESS",
            "airkit-app-events/tenant=t1/dt=2026-11-22/hour=11/_SUCCESS",
            "airkit-audit-logs/tenant=t1/dt=2026-11-22/hour=10/_SUCCESS",
        ]
    );
    assert!(harness.bytes("dest-t1", &markers[0]).await.is_empty());
    let t1 = harness.files("dest-t1", "airkit").await;
    let t1_expected: Vec<String> = expected
        .iter()
        .filter(|l| l.contains("\"t1\""))
        .cloned()
        .collect();
    assert_eq!(lines(&t1), t1_expected);
    assert!(
        t1.iter()
            .all(|f| f.key.contains("/tenant=t1/dt=2026-11-22/hour=")),
        "{:?}",
        t1.iter().map(|f| &f.key).collect::<Vec<_>>()
    );

    let manifest = harness
        .manifest("manifests/airkit-app-events/t1/2026-11-22/10.json")
        .await;
    assert_eq!(manifest.generation, 1);
    assert_eq!(manifest.parts.len(), 1);
    assert_eq!(manifest.parts[0].events, 10);
    assert_eq!(
        manifest.parts[0].min_event_time.as_deref(),
        Some("2026-11-22T10:00:00.000Z")
    );
    assert_eq!(manifest.destinations["everyone"].published, vec![1]);
    assert_eq!(manifest.destinations["t1-hive"].published, vec![1]);
    assert!(!manifest.has_pending());
    // In the run's bundle, with the other partitions' small files.
    assert!(manifest.parts[0].key.starts_with(layout::BUNDLES_PREFIX));
    let part = harness
        .part_bytes("archive/airkit-app-events/t1/2026-11-22/10/part-00001.ndjson.gz")
        .await;
    assert_eq!(manifest.parts[0].bytes, part.len() as u64);
    use sha2::Digest;
    assert_eq!(
        manifest.parts[0].sha256,
        format!("{:x}", sha2::Sha256::digest(&part))
    );

    // Nothing left to do: a second run changes nothing.
    let before = harness.snapshot().await;
    let again = harness.flush(TEN + 3 * HOUR + 15 * 60_000).await;
    assert!(again.partitions.is_empty(), "{again:?}");
    assert_eq!(harness.snapshot().await, before);
}

#[tokio::test]
async fn an_invocation_stored_in_many_sub_batches_exports_each_event_once() {
    // 1 KiB sub-batches: an invocation of 60 messages of three events (about
    // 20 KB) is stored in many, some messages cut across two.
    let harness = Harness::start(
        r#"{"subBatchBytes": 1024, "destinations":[{"name":"everyone","bucket":"dest-all","shared":true}]}"#,
    )
    .await;
    let events: Vec<String> = (0..180)
        .map(|n| app_event(if n % 2 == 0 { "t1" } else { "t2" }, n))
        .collect();
    let records: Vec<SqsMessage> = events
        .chunks(3)
        .enumerate()
        .map(|(m, three)| record(&format!("m{m}"), &three.join("\n"), TEN + 1000))
        .collect();
    harness.stage(records.clone(), "req-cut").await;
    // SQS redelivers a third of the batch to another invocation.
    harness.stage(records[20..40].to_vec(), "req-again").await;

    let staged = list_keys(&harness.s3, EXPORT, "staging/").await.unwrap();
    let first_invocation: Vec<&String> = staged
        .iter()
        .filter(|key| key.contains("-req-cut"))
        .collect();
    assert!(first_invocation.len() > 10, "{staged:?}");
    assert!(
        staged
            .iter()
            .any(|key| key.ends_with("/1795341600000-req-cut.0001.staged")),
        "{staged:?}"
    );

    let report = harness.flush(TEN + HOUR + 15 * 60_000).await;
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.events, 180);
    assert_eq!(report.duplicates, 60, "the redelivered events are dropped");
    assert_eq!(
        lines(&harness.archive("archive/").await),
        sorted(events.clone())
    );
    assert_eq!(lines(&harness.files("dest-all", "").await), sorted(events));
    assert!(
        list_keys(&harness.s3, EXPORT, "staging/")
            .await
            .unwrap()
            .is_empty(),
        "every sub-batch's staged object consumed"
    );
}

/// `exports/<stream>/<date>/<tenant>_<date>_<H>#<n>.json.gz` → its archive key.
fn archive_key_for(key: &str) -> String {
    let file = key.rsplit('/').next().unwrap();
    let stream = key.split('/').nth(1).unwrap();
    let (tenant, rest) = file.split_once('_').unwrap();
    let (date, rest) = rest.split_once('_').unwrap();
    let (hour, part) = rest.trim_end_matches(".json.gz").split_once('#').unwrap();
    format!(
        "archive/{stream}/{tenant}/{date}/{:02}/part-{:05}.ndjson.gz",
        hour.parse::<u32>().unwrap(),
        part.parse::<u32>().unwrap()
    )
}

/// A manual flush of one tenant consumes its share of a staged object that
/// holds another tenant too: the object stays staged, so the run records
/// what it published, and the next run (the other tenant's) does not take
/// the object for a sign that the first run stopped before publishing: it
/// publishes nothing of the first tenant again.
#[tokio::test]
async fn a_flush_of_one_tenant_records_its_publishes_and_the_next_run_does_not_repeat_them() {
    let harness = Harness::start(DESTINATIONS).await;
    let records: Vec<SqsMessage> = (0..5)
        .flat_map(|n| {
            [
                record(&format!("a{n}"), &app_event("t1", n), TEN + 1000),
                record(&format!("b{n}"), &app_event("t2", n), TEN + 1000),
            ]
        })
        .collect();
    harness.stage(records, "one-object").await;
    let until = shared::time::format_rfc3339_millis(TEN + HOUR);
    let t1_only =
        Trigger::from_payload(&serde_json::json!({"flush": {"until": until, "tenants": ["t1"]}}))
            .unwrap();
    let first = flusher::run(&harness.flusher(), &t1_only, None)
        .await
        .unwrap();
    assert_eq!((first.events, first.failed), (5, 0), "{first:?}");
    let staged = list_keys(&harness.s3, EXPORT, "staging/").await.unwrap();
    assert_eq!(staged.len(), 1, "t2's events keep the object: {staged:?}");

    let recorder = s3_export::recorder::RequestRecorder::new();
    let mut flusher = harness.flusher();
    flusher.s3 = recorder.wrap(&flusher.s3);
    let second = flush_with(&flusher, TEN + HOUR + 15 * 60_000).await;
    assert_eq!((second.events, second.failed), (5, 0), "{second:?}");
    let t1_again: Vec<String> = recorder
        .to("/dest-t1/")
        .into_iter()
        .filter(|request| request.method == "PUT" && !request.uri.contains("_SUCCESS"))
        .map(|request| request.uri)
        .collect();
    assert!(
        t1_again.is_empty(),
        "t1's files written again: {t1_again:?}"
    );
    assert!(
        !recorder.to("/dest-all/").is_empty(),
        "t2's file is written"
    );
    let t1: Vec<String> = (0..5).map(|n| app_event("t1", n)).collect();
    assert_eq!(lines(&harness.files("dest-t1", "").await), sorted(t1));
}

#[tokio::test]
async fn a_manifest_newer_than_the_flusher_is_refused_naming_it_and_nothing_is_lost() {
    let harness = Harness::start(DESTINATIONS).await;
    harness.stage_app_events("t1", 0..3, "req-1").await;
    let key = "manifests/airkit-app-events/t1/2026-11-22/10.json";
    let newer = serde_json::json!({"version": 99, "stream": "airkit-app-events", "tenant": "t1",
        "hour": "2026-11-22T10:00:00.000Z", "generation": 1, "parts": [], "consumedChunks": [],
        "idDigest": null, "events": 0, "duplicatesDropped": 0, "destinations": {},
        "committedAt": "2026-11-22T11:15:00.000Z"});
    harness
        .s3
        .put_object()
        .bucket(EXPORT)
        .key(key)
        .body(serde_json::to_vec(&newer).unwrap().into())
        .send()
        .await
        .unwrap();
    let report = harness.flush(TEN + HOUR + 15 * 60_000).await;
    assert_eq!(report.failed, 1, "{report:?}");
    let error = report.partitions[0].error.as_deref().unwrap();
    assert!(
        error.contains(key) && error.contains("version 99 is newer than this flusher reads (4)"),
        "{error}"
    );
    // Its staged data waits for a flusher that reads it.
    assert_eq!(
        list_keys(&harness.s3, EXPORT, "staging/")
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A digest larger than one upload part (600,000 ids, 9.6 MB) is stored
/// in upload parts and reads back as the digest of the whole set.
#[tokio::test]
async fn a_digest_larger_than_an_upload_part_is_stored_whole_in_parts() {
    let harness = Harness::start(DESTINATIONS).await;
    let ids: std::collections::HashSet<u128> = (0..600_000u128)
        .map(|n| n.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835))
        .collect();
    let sorted = shared::manifest::digest_order(ids.clone());
    let key = "manifests/app/t/2026-11-22/10.ids-000001.test";
    flusher::partition::store_sorted_digest(&harness.flusher(), key, &sorted)
        .await
        .unwrap();
    let stored = s3_export::inspect::read_object(&harness.s3, EXPORT, key)
        .await
        .unwrap();
    assert_eq!(stored.len(), 600_000 * 16);
    assert!(stored.len() > flusher::upload::UPLOAD_PART_BYTES);
    assert_eq!(stored, shared::manifest::encode_id_digest(&ids));
    // A multipart upload's ETag names its parts' count.
    let head = harness.s3.head_object().bucket(EXPORT).key(key).send();
    let etag = head.await.unwrap().e_tag().unwrap_or_default().to_owned();
    assert!(etag.trim_matches('"').ends_with("-2"), "{etag}");
}

#[tokio::test]
async fn hours_still_open_are_left_staged() {
    let harness = Harness::start(DESTINATIONS).await;
    harness
        .stage(vec![record("a", &app_event("t1", 1), TEN + 1000)], "req-1")
        .await;
    // 11:09: hour 10 ends at 11:00, plus 10 minutes of grace.
    let report = harness.flush(TEN + HOUR + 9 * 60_000).await;
    assert!(report.partitions.is_empty());
    assert_eq!(
        list_keys(&harness.s3, EXPORT, "staging/")
            .await
            .unwrap()
            .len(),
        1
    );
    let report = harness.flush(TEN + HOUR + 10 * 60_000).await;
    assert_eq!(report.events, 1);
}

#[tokio::test]
async fn late_chunk_for_a_flushed_hour_becomes_the_next_part_without_duplicates() {
    let harness = Harness::start(DESTINATIONS).await;
    harness.stage_app_events("t1", 0..6, "req-1").await;
    harness.flush(TEN + HOUR + 15 * 60_000).await;
    let part_1 = "archive/airkit-app-events/t1/2026-11-22/10/part-00001.ndjson.gz";
    let first_part = harness.part_bytes(part_1).await;

    // A late redelivery of three old events, and two new ones, for hour 10.
    let late: Vec<SqsMessage> = (3..8)
        .map(|n| record(&format!("late{n}"), &app_event("t1", n), TEN + 2000))
        .collect();
    harness.stage(late, "req-late").await;
    let report = harness.flush(TEN + 2 * HOUR + 15 * 60_000).await;
    assert_eq!((report.events, report.duplicates), (2, 3), "{report:?}");

    let manifest = harness
        .manifest("manifests/airkit-app-events/t1/2026-11-22/10.json")
        .await;
    assert_eq!(
        manifest.parts.iter().map(|p| p.number).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(manifest.generation, 2);
    assert_eq!(
        harness.part_bytes(part_1).await,
        first_part,
        "part 1 untouched"
    );
    let part2 = harness
        .archive("archive/airkit-app-events/t1/2026-11-22/10/part-00002")
        .await;
    assert_eq!(
        lines(&part2),
        sorted(vec![app_event("t1", 6), app_event("t1", 7)])
    );
    let everyone = harness
        .files(
            "dest-all",
            "exports/airkit-app-events/2026-11-22/t1_2026-11-22_10#",
        )
        .await;
    assert_eq!(everyone.len(), 2);
    assert_eq!(
        lines(&everyone),
        sorted((0..8).map(|n| app_event("t1", n)).collect())
    );
}

#[tokio::test]
async fn a_run_stopped_after_any_step_converges_when_run_again() {
    // The reference: one uninterrupted run.
    let reference = Harness::start(DESTINATIONS).await;
    stage_two_hours(&reference).await;
    let now = TEN + 2 * HOUR + 15 * 60_000;
    reference.flush(now).await;
    let expected = reference.snapshot().await;
    assert!(expected.keys().any(|k| k.starts_with("dest-t1/")));

    for step in [
        Step::PartsWritten,
        Step::ManifestCommitted,
        Step::SomePublished,
        Step::BeforeDeletingChunks,
    ] {
        let harness = Harness::start(DESTINATIONS).await;
        stage_two_hours(&harness).await;
        let mut crashing = harness.flusher();
        crashing.stop_after = Some(step);
        let report = flush_with(&crashing, now).await;
        assert!(report.failed > 0, "{step:?}: {report:?}");
        let rerun = harness.flush(now + HOUR).await;
        assert_eq!(rerun.failed, 0, "{step:?}: {rerun:?}");
        assert_eq!(
            harness.snapshot().await,
            expected,
            "after stopping at {step:?}"
        );
    }
}

#[tokio::test]
async fn flushing_the_same_staged_input_twice_gives_byte_identical_parts() {
    let harness = Harness::start(DESTINATIONS).await;
    stage_two_hours(&harness).await;
    // Copy the staged chunks to a second export bucket, flush both.
    harness
        .s3
        .create_bucket()
        .bucket("exports-copy")
        .send()
        .await
        .unwrap();
    for key in list_keys(&harness.s3, EXPORT, "staging/").await.unwrap() {
        let bytes = harness.bytes(EXPORT, &key).await;
        harness
            .s3
            .put_object()
            .bucket("exports-copy")
            .key(&key)
            .body(bytes.into())
            .send()
            .await
            .unwrap();
    }
    let mut copy_config = harness.config.clone();
    copy_config.export_bucket = "exports-copy".into();
    copy_config.destinations.clear();
    let now = TEN + 2 * HOUR + 15 * 60_000;
    harness.flush(now).await;
    flush_with(&Flusher::new(copy_config, harness.s3.clone()), now).await;

    // Byte-identical parts, under the same names; only the bundles they
    // are stored in carry each run's attempt.
    let parts = archive_parts(&harness.s3, EXPORT, "").await.unwrap();
    let copies = archive_parts(&harness.s3, "exports-copy", "")
        .await
        .unwrap();
    assert!(parts.len() >= 4);
    assert_eq!(parts, copies);
}

#[tokio::test]
async fn a_destination_that_fails_stays_pending_and_is_delivered_after_the_fix() {
    let document = r#"{"destinations":[
      {"name":"everyone","bucket":"dest-all","shared":true},
      {"name":"later","bucket":"dest-not-yet","tenants":["t1"],"layout":"date-folders"}]}"#;
    let harness = Harness::start(document).await;
    harness.stage_app_events("t1", 0..4, "req-1").await;
    let report = harness.flush(TEN + HOUR + 15 * 60_000).await;
    assert_eq!(
        report.failed, 0,
        "a publish failure is pending, not a failure"
    );
    assert_eq!(report.partitions[0].pending.len(), 1);
    assert!(
        report.partitions[0].pending[0].contains("NoSuchBucket"),
        "{:?}",
        report.partitions[0].pending
    );
    let manifest_key = "manifests/airkit-app-events/t1/2026-11-22/10.json";
    let manifest = harness.manifest(manifest_key).await;
    assert_eq!(manifest.destinations["later"].pending, vec![1]);
    assert_eq!(manifest.destinations["everyone"].published, vec![1]);
    assert_eq!(
        list_keys(&harness.s3, EXPORT, "pending/")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(lines(&harness.files("dest-all", "").await).len(), 4);

    // Still failing: still pending, counted.
    harness.flush(TEN + 2 * HOUR + 15 * 60_000).await;
    assert_eq!(
        harness.manifest(manifest_key).await.destinations["later"].failures,
        2
    );

    harness
        .s3
        .create_bucket()
        .bucket("dest-not-yet")
        .send()
        .await
        .unwrap();
    let report = harness.flush(TEN + 3 * HOUR + 15 * 60_000).await;
    assert_eq!(report.partitions[0].published, 1);
    let delivered = harness.files("dest-not-yet", "").await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].key,
        "airkit-app-events/t1/2026-11-22/10/part-00001.ndjson.gz"
    );
    assert_eq!(
        lines(&delivered),
        sorted((0..4).map(|n| app_event("t1", n)).collect())
    );
    let manifest = harness.manifest(manifest_key).await;
    assert!(!manifest.has_pending());
    assert!(
        list_keys(&harness.s3, EXPORT, "pending/")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        lines(&harness.files("dest-all", "").await).len(),
        4,
        "the other destination is not written twice"
    );
}

#[tokio::test]
async fn two_flushers_racing_on_a_partition_commit_once() {
    let harness = Harness::start(DESTINATIONS).await;
    harness.stage_app_events("t1", 0..50, "req-1").await;
    let (one, two) = (harness.flusher(), harness.flusher());
    let now = TEN + HOUR + 15 * 60_000;
    // Different clocks, so the two manifests differ (committed_at) and the
    // loser's refused commit is a lost race, not its own commit come back.
    let (a, b) = tokio::join!(flush_with(&one, now), flush_with(&two, now + 1));
    assert_eq!(a.failed + b.failed, 0, "{a:?} {b:?}");
    let manifest = harness
        .manifest("manifests/airkit-app-events/t1/2026-11-22/10.json")
        .await;
    assert_eq!(manifest.generation, 1, "exactly one commit");
    assert_eq!(
        lines(&harness.archive("archive/").await),
        sorted((0..50).map(|n| app_event("t1", n)).collect())
    );
    assert_eq!(lines(&harness.files("dest-all", "").await).len(), 50);
}

/// S3 applies the manifest's commit but its answer is lost; the SDK's retry
/// then meets its own commit as a refused condition. The run must see that
/// the stored manifest is the one it wrote and go on to publish, not take
/// it for another flusher's and leave the partition unpublished.
#[tokio::test]
async fn a_commit_whose_answer_was_lost_is_recognised_and_published_in_the_same_run() {
    use s3_export::fault_proxy::{Fault, FaultPlan, FaultProxy, RequestFilter};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let harness = Harness::start(DESTINATIONS).await;
    harness.stage_app_events("t1", 0..20, "req-1").await;
    let manifest_writes = Arc::new(AtomicUsize::new(0));
    let mut plan = FaultPlan::new(1.0, 7);
    plan.kinds = vec![Fault::Truncate];
    plan.only = Some(RequestFilter::new({
        let manifest_writes = manifest_writes.clone();
        move |request| {
            request.writes(EXPORT, "manifests/")
                && request.key().ends_with(".json")
                && manifest_writes.fetch_add(1, Ordering::SeqCst) == 0
        }
    }));
    let proxy = FaultProxy::start(&harness.moto.endpoint(), plan)
        .await
        .unwrap();
    let faulty_s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&harness.moto.sdk_config().await)
            .endpoint_url(proxy.endpoint())
            .force_path_style(true)
            .build(),
    );
    let flusher = Flusher::new(harness.config.clone(), faulty_s3);

    let report = flush_with(&flusher, TEN + HOUR + 15 * 60_000).await;

    assert_eq!(
        proxy.injected().get(&Fault::Truncate),
        Some(&1),
        "the first commit's answer was cut"
    );
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(
        report.pending_chunks + report.pending_publishes,
        0,
        "{report:?}"
    );
    let expected = sorted((0..20).map(|n| app_event("t1", n)).collect());
    assert_eq!(lines(&harness.archive("archive/").await), expected);
    assert_eq!(lines(&harness.files("dest-all", "").await), expected);
    assert_eq!(lines(&harness.files("dest-t1", "").await), expected);
    assert!(
        list_keys(&harness.s3, EXPORT, "staging/")
            .await
            .unwrap()
            .is_empty()
    );
    let manifest = harness
        .manifest("manifests/airkit-app-events/t1/2026-11-22/10.json")
        .await;
    assert!(!manifest.has_pending());
}

#[tokio::test]
async fn manual_flush_closes_only_the_chosen_streams_up_to_until() {
    let harness = Harness::start(DESTINATIONS).await;
    harness
        .stage(vec![record("a", &app_event("t1", 1), TEN + 1000)], "r1")
        .await;
    harness
        .stage(
            vec![with_stream(
                record("b", &audit_event("t1", "E-9", "u"), TEN + 1000),
                "airkit-audit-logs",
            )],
            "r2",
        )
        .await;
    let trigger = Trigger::from_payload(&serde_json::json!({"flush": {"until": "2026-11-22T11:00:00Z", "streams": ["airkit-audit-logs"]}})).unwrap();
    let report = flusher::run(&harness.flusher(), &trigger, None)
        .await
        .unwrap();
    assert_eq!(report.partitions.len(), 1);
    assert_eq!(report.partitions[0].stream, "airkit-audit-logs");
    // The app events' staged object is left for a run that selects them;
    // the audit one is consumed and deleted.
    let staged = list_keys(&harness.s3, EXPORT, "staging/").await.unwrap();
    assert_eq!(staged.len(), 1, "{staged:?}");
    assert!(staged[0].ends_with("-r1.staged"), "{staged:?}");
    let report = harness.flush(TEN + HOUR + 15 * 60_000).await;
    assert_eq!((report.partitions.len(), report.events), (1, 1));
    assert!(
        list_keys(&harness.s3, EXPORT, "staging/")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn scheduled_event_is_handled_and_bad_payloads_fail_clearly() {
    let harness = Harness::start(DESTINATIONS).await;
    harness
        .stage(vec![record("a", &app_event("t1", 1), TEN + 1000)], "r1")
        .await;
    let flusher = harness.flusher();
    let mut event: Value =
        serde_json::from_str(include_str!("../events/flusher-scheduled.json")).unwrap();
    event["time"] = Value::from("2026-11-22T11:15:00Z");
    let answer = flusher::handle(
        &flusher,
        lambda_runtime::LambdaEvent::new(event, Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(answer["events"], 1);
    let error = flusher::handle(
        &flusher,
        lambda_runtime::LambdaEvent::new(serde_json::json!({"hello": 1}), Default::default()),
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("unrecognised payload"),
        "{error}"
    );
    drop(harness.moto);
}

/// Events of `size` bytes of random letters, which gzip cannot shrink much.
fn bulky_events(tenant: &str, count: usize, size: usize, seed: u64) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|n| {
            let pad: String = (0..size).map(|_| rng.alphanumeric()).collect();
            format!(r#"{{"organizationId":"{tenant}","eventTime":"2026-11-22T10:{:02}:00Z","type":"blob","n":{n},"pad":"{pad}"}}"#, n % 60)
        })
        .collect()
}

async fn stage_bulky(harness: &Harness, events: &[String]) {
    stage_bulky_as(harness, events, "bulk").await;
}

/// Stages `events`, twenty a batcher invocation, whose request ids (and so
/// staged keys) start with `label`.
async fn stage_bulky_as(harness: &Harness, events: &[String], label: &str) {
    for (batch, chunk) in events.chunks(20).enumerate() {
        let records = chunk
            .iter()
            .enumerate()
            .map(|(n, event)| record(&format!("{label}-{batch}-{n}"), event, TEN + 1000))
            .collect();
        harness.stage(records, &format!("{label}-{batch}")).await;
    }
}

#[tokio::test]
async fn a_large_part_is_streamed_as_a_multipart_upload() {
    let harness = Harness::start(
        r#"{"destinations":[{"name":"everyone","bucket":"dest-all","shared":true}]}"#,
    )
    .await;
    // About 12 MB of letters, 9 MB compressed: more than one upload part.
    let events = bulky_events("big", 120, 100_000, 1);
    stage_bulky(&harness, &events).await;
    let report = harness.flush(TEN + HOUR + 15 * 60_000).await;
    assert_eq!(report.failed, 0, "{report:?}");
    let manifest = harness
        .manifest("manifests/airkit-app-events/big/2026-11-22/10.json")
        .await;
    assert_eq!(manifest.parts.len(), 1);
    assert!(
        manifest.parts[0].bytes > flusher::archive::UPLOAD_PART_BYTES as u64,
        "{}",
        manifest.parts[0].bytes
    );
    let head = harness
        .s3
        .head_object()
        .bucket(EXPORT)
        .key(&manifest.parts[0].key)
        .send()
        .await
        .unwrap();
    assert!(
        head.e_tag().unwrap().contains('-'),
        "a multipart ETag: {:?}",
        head.e_tag()
    );
    let archive = harness.archive("archive/").await;
    assert_eq!(lines(&archive), sorted(events.clone()));
    assert_eq!(lines(&harness.files("dest-all", "").await), sorted(events));
}

// Streaming destination writes: a part above one upload part is sent as a
// multipart upload of fixed 8 MiB parts, the bytes the whole rewrite gives;
// a small one is one PutObject.

mod streaming {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use flusher::export;
    use s3_export::fault_proxy::{Fault, FaultPlan, FaultProxy, RequestFilter, RequestInfo};
    use shared::manifest::ArchivePart;
    use shared::partition::{Hour, PartitionKey, TenantKey};

    /// An archive-format destination and a rewriting one (plain NDJSON with
    /// `_export`), both with the encryption and owner every write carries.
    pub const DESTINATIONS: &str = r#"{"destinations":[
      {"name":"archive","bucket":"dest-all","shared":true,"layout":"hive","encryption":"AES256","accountId":"123456789012"},
      {"name":"plain","bucket":"dest-t1","shared":true,"layout":"hive","format":"ndjson","includeMetadata":true,"encryption":"AES256","accountId":"123456789012"}]}"#;
    pub const BIG: &str = "airkit-app-events/tenant=big/";
    pub const SMALL: &str = "airkit-app-events/tenant=small/";

    /// Stages a partition of `count` events of 100 kB (120: about 12 MB of
    /// text, 9 MB compressed, above one upload part either way) and one of
    /// three small events.
    pub async fn stage(harness: &Harness, count: usize) -> Vec<String> {
        let events = bulky_events("big", count, 100_000, 3);
        stage_bulky(harness, &events).await;
        harness.stage_app_events("small", 0..3, "small").await;
        events
    }

    /// The bytes `bytes` from `offset` of `key` in the export bucket (a
    /// part or sidecar where its manifest says).
    async fn stored(harness: &Harness, key: &str, offset: Option<u64>, bytes: u64) -> Vec<u8> {
        let mut request = harness.s3.get_object().bucket(EXPORT).key(key);
        if let Some(offset) = offset {
            request = request.range(format!("bytes={offset}-{}", offset + bytes - 1));
        }
        let object = request.send().await.unwrap();
        object.body.collect().await.unwrap().into_bytes().to_vec()
    }

    /// The committed part 1 of `tenant`'s partition of hour 10.
    pub async fn part(harness: &Harness, tenant: &str) -> ArchivePart {
        let manifest = harness
            .manifest(&format!(
                "manifests/airkit-app-events/{tenant}/2026-11-22/10.json"
            ))
            .await;
        assert_eq!(manifest.parts.len(), 1, "{manifest:?}");
        manifest.parts[0].clone()
    }

    /// What each destination should hold for `tenant`'s part: the archive
    /// part's bytes, and `export::encode_part` of them (the rewrite, whole,
    /// in memory) for the plain destination.
    pub async fn expected(harness: &Harness, tenant: &str) -> (Vec<u8>, Vec<u8>) {
        let part = part(harness, tenant).await;
        let archive = stored(harness, &part.key, part.offset, part.bytes).await;
        let sidecar = part.provenance.as_ref().expect("staged with provenance");
        let sidecar = stored(harness, &sidecar.key, sidecar.offset, sidecar.bytes).await;
        let plain = harness
            .config
            .destinations
            .iter()
            .find(|d| d.name == "plain")
            .unwrap();
        let partition = PartitionKey {
            hour: Hour::containing(TEN),
            stream: "airkit-app-events".into(),
            tenant: TenantKey::encode(tenant),
        };
        let encoded = export::encode_part(
            &archive,
            &plain.content,
            harness.config.archive_gzip_level,
            &harness.config.streams["airkit-app-events"],
            &export::ExportMetadata::new(&partition, part.number),
            Some(&sidecar),
        )
        .unwrap();
        (archive, encoded.bytes)
    }

    /// Whether the request's query has parameter `name`.
    pub fn has_param(request: &RequestInfo, name: &str) -> bool {
        request
            .query
            .split('&')
            .any(|p| p.split('=').next() == Some(name))
    }

    /// The destination requests S3 received for keys under `prefix` of
    /// `bucket`, as `METHOD?query-operation` (`PUT`, `POST?uploads`,
    /// `PUT?partNumber`, `POST?uploadId`, `DELETE?uploadId`).
    pub fn requests_to(proxy: &FaultProxy, bucket: &str, prefix: &str) -> Vec<String> {
        proxy
            .request_log()
            .into_iter()
            .filter(|r| !r.is_sqs() && r.bucket() == bucket && r.key().starts_with(prefix))
            .map(|r| {
                let operation = ["uploads", "partNumber", "uploadId"]
                    .into_iter()
                    .find(|name| has_param(&r, name));
                match operation {
                    Some(name) => format!("{}?{name}", r.method),
                    None => r.method.clone(),
                }
            })
            .collect()
    }

    /// Which requests a test makes fail.
    pub type Fails = fn(&RequestInfo) -> bool;

    /// A flusher through a fault proxy that fails (S3 internal errors, SDK
    /// retries included) the destination requests `fails` accepts until
    /// the returned switch is turned off.
    pub async fn failing(
        harness: &Harness,
        fails: Fails,
    ) -> (Flusher, FaultProxy, Arc<AtomicBool>) {
        let armed = Arc::new(AtomicBool::new(true));
        let switch = armed.clone();
        let mut plan = FaultPlan::none();
        plan.kinds = vec![Fault::InternalError];
        plan.always = Some(RequestFilter::new(move |request| {
            armed.load(Ordering::SeqCst) && fails(request)
        }));
        let proxy = FaultProxy::start(&harness.moto.endpoint(), plan)
            .await
            .unwrap();
        let flusher = Flusher::new(harness.config.clone(), proxy.s3_client(&harness.s3));
        (flusher, proxy, switch)
    }

    /// The multipart uploads left in progress in `bucket`.
    pub async fn uploads_in_progress(harness: &Harness, bucket: &str) -> usize {
        harness
            .s3
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap()
            .uploads()
            .len()
    }

    /// The single object under `prefix` of `bucket`.
    pub async fn object(harness: &Harness, bucket: &str, prefix: &str) -> Vec<u8> {
        let keys = list_keys(&harness.s3, bucket, prefix).await.unwrap();
        assert_eq!(keys.len(), 1, "{keys:?}");
        harness.bytes(bucket, &keys[0]).await
    }
}

#[tokio::test]
async fn a_large_part_streams_to_each_destination_the_bytes_of_the_whole_rewrite() {
    use s3_export::recorder::RequestRecorder;
    use streaming::*;
    let harness = Harness::start(DESTINATIONS).await;
    let events = stage(&harness, 120).await;
    let (flusher, proxy) = staged::through_proxy(&harness, harness.config.clone()).await;
    let recorder = RequestRecorder::new();
    let mut flusher = flusher;
    flusher.s3 = recorder.wrap(&flusher.s3);
    let report = flush_with(&flusher, TEN + HOUR + 15 * 60_000).await;
    assert_eq!(
        (report.failed, report.pending_publishes),
        (0, 0),
        "{report:?}"
    );

    let (archive, rewritten) = expected(&harness, "big").await;
    assert!(
        archive.len() > flusher::upload::UPLOAD_PART_BYTES,
        "{}",
        archive.len()
    );
    assert!(rewritten.len() > archive.len());
    assert!(
        object(&harness, "dest-all", BIG).await == archive,
        "the archive's bytes"
    );
    assert!(
        object(&harness, "dest-t1", BIG).await == rewritten,
        "encode_part's bytes"
    );
    // Two upload parts each (8 MiB and the rest), no PutObject.
    let multipart = [
        "POST?uploads",
        "PUT?partNumber",
        "PUT?partNumber",
        "POST?uploadId",
    ];
    assert_eq!(requests_to(&proxy, "dest-all", BIG), multipart);
    assert_eq!(requests_to(&proxy, "dest-t1", BIG), multipart);
    // A small part: one PutObject, nothing else.
    for bucket in ["dest-all", "dest-t1"] {
        assert_eq!(requests_to(&proxy, bucket, SMALL), ["PUT"], "{bucket}");
    }
    let (small_archive, small_rewritten) = expected(&harness, "small").await;
    assert!(object(&harness, "dest-all", SMALL).await == small_archive);
    assert!(object(&harness, "dest-t1", SMALL).await == small_rewritten);
    // Each event once.
    let mut all = events.clone();
    all.extend((0..3).map(|n| app_event("small", n)));
    assert_eq!(
        lines(&harness.files("dest-all", "").await),
        sorted(all.clone())
    );
    let plain: Vec<String> = String::from_utf8(object(&harness, "dest-t1", BIG).await)
        .unwrap()
        .lines()
        .map(|line| {
            let mut event: Value = serde_json::from_str(line).unwrap();
            assert_eq!(event["_export"]["part"], 1);
            event.as_object_mut().unwrap().remove("_export");
            event.to_string()
        })
        .collect();
    let reparsed: Vec<String> = events
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap().to_string())
        .collect();
    assert_eq!(sorted(plain), sorted(reparsed));
    // Every step of the uploads carried the owner; the create, the object's
    // settings (its parts inherit them).
    for request in recorder.to("/dest-") {
        let header = |name: &str| request.headers.get(name).map(String::as_str);
        let what = format!("{} {}", request.method, request.uri);
        assert_eq!(
            header("x-amz-expected-bucket-owner"),
            Some("123456789012"),
            "{what}"
        );
        if request.method == "PUT" {
            // The object's, or the part's, SHA-256, which S3 checks.
            assert!(header("x-amz-checksum-sha256").is_some(), "{what}");
        }
        if request.uri.contains("?uploads") || request.uri.contains("x-id=PutObject") {
            // The object's settings (its parts inherit them).
            assert_eq!(
                header("x-amz-server-side-encryption"),
                Some("AES256"),
                "{what}"
            );
        }
        if request.uri.contains("?uploads") {
            assert_eq!(header("x-amz-checksum-algorithm"), Some("SHA256"), "{what}");
        }
        if request.method == "POST" && request.uri.contains("?uploadId") {
            // The completion lists each part with its checksum.
            assert_eq!(
                request.body.matches("<ChecksumSHA256>").count(),
                2,
                "{what}"
            );
        }
    }
}

#[tokio::test]
async fn a_failing_step_of_a_multipart_publish_leaves_the_part_pending_and_a_later_run_writes_the_same_bytes()
 {
    use shared::partition::{Hour, PartitionKey, TenantKey};
    use std::sync::atomic::Ordering;
    use streaming::*;
    let harness = Harness::start(DESTINATIONS).await;
    let events = stage(&harness, 120).await;
    // Each run fails one step of the plain destination's upload of the large
    // part; the archive destination and the small part are published in
    // the first.
    let manifest_key = "manifests/airkit-app-events/big/2026-11-22/10.json";
    let mut now = TEN + HOUR + 15 * 60_000;
    let fails: [(&str, Fails); 4] = [
        ("CreateMultipartUpload", |r| {
            r.bucket() == "dest-t1" && r.method == "POST" && has_param(r, "uploads")
        }),
        ("UploadPart 2", |r| {
            r.bucket() == "dest-t1"
                && r.method == "PUT"
                && r.query.split('&').any(|p| p == "partNumber=2")
        }),
        ("CompleteMultipartUpload", |r| {
            r.bucket() == "dest-t1" && r.method == "POST" && has_param(r, "uploadId")
        }),
        // The completion fails and so does the abort: the upload is left to
        // the bucket's lifecycle rule.
        ("CompleteMultipartUpload and AbortMultipartUpload", |r| {
            r.bucket() == "dest-t1"
                && (r.method == "POST" || r.method == "DELETE")
                && has_param(r, "uploadId")
        }),
    ];
    let mut left = 0;
    for (step, fails) in fails {
        let (flusher, proxy, armed) = failing(&harness, fails).await;
        let report = flush_with(&flusher, now).await;
        now += HOUR;
        assert_eq!(report.failed, 0, "{step}: {report:?}");
        assert_eq!(report.pending_publishes, 1, "{step}: {report:?}");
        let pending = report
            .partitions
            .iter()
            .flat_map(|p| p.pending.iter())
            .collect::<Vec<_>>();
        assert!(
            pending.len() == 1 && pending[0].starts_with("plain: "),
            "{step}: {pending:?}"
        );
        let manifest = harness.manifest(manifest_key).await;
        assert_eq!(manifest.destinations["plain"].pending, vec![1], "{step}");
        assert!(
            list_keys(&harness.s3, "dest-t1", BIG)
                .await
                .unwrap()
                .is_empty(),
            "{step}: nothing stored"
        );
        assert!(proxy.failures_injected() > 0, "{step}");
        if step.contains("Abort") {
            left += 1;
        }
        assert_eq!(
            uploads_in_progress(&harness, "dest-t1").await,
            left,
            "{step}: aborted where permitted"
        );
        armed.store(false, Ordering::SeqCst);
    }
    // The next run publishes it: the bytes of the whole rewrite, each event
    // once, the archive destination untouched.
    let (archive, rewritten) = expected(&harness, "big").await;
    let report = harness.flush(now).await;
    assert_eq!(
        (report.failed, report.pending_publishes),
        (0, 0),
        "{report:?}"
    );
    assert!(object(&harness, "dest-t1", BIG).await == rewritten);
    assert!(object(&harness, "dest-all", BIG).await == archive);
    assert_eq!(
        String::from_utf8(rewritten).unwrap().lines().count(),
        events.len()
    );
    assert!(!harness.manifest(manifest_key).await.has_pending());

    // Published again (a retry whose answer was lost, a backfill): the same
    // key, the same bytes.
    let flusher = harness.flusher();
    let destination = harness
        .config
        .destinations
        .iter()
        .find(|d| d.name == "plain")
        .unwrap();
    let partition = PartitionKey {
        hour: Hour::containing(TEN),
        stream: "airkit-app-events".into(),
        tenant: TenantKey::encode("big"),
    };
    let part = part(&harness, "big").await;
    let before = object(&harness, "dest-t1", BIG).await;
    let published = flusher::publish::publish_part(&flusher, destination, &partition, &part)
        .await
        .unwrap();
    assert!(matches!(
        published,
        flusher::publish::PartPublished::Written(_)
    ));
    assert!(object(&harness, "dest-t1", BIG).await == before);
}

#[tokio::test]
async fn a_refused_multipart_publish_is_diagnosed_as_a_refused_put() {
    use s3_export::faults::RespondWith;
    use streaming::*;
    // The destination's owner has not granted s3:PutObject: S3 refuses the
    // upload's creation (the bucket does not exist on moto, so nothing is
    // stored).
    let document = r#"{"destinations":[{"name":"denied","bucket":"dest-denied","shared":true,"layout":"hive","format":"ndjson"}]}"#;
    let harness = Harness::start(document).await;
    stage(&harness, 120).await;
    let denial = RespondWith::s3_error("/dest-denied/", 403, "AccessDenied", "Access Denied");
    let mut flusher = harness.flusher();
    flusher.s3 = denial.wrap(&harness.s3);
    let report = flush_with(&flusher, TEN + HOUR + 15 * 60_000).await;
    let pending: Vec<&String> = report.partitions.iter().flat_map(|p| &p.pending).collect();
    // The small part's PutObject and the large part's multipart upload:
    // the same diagnosis.
    assert_eq!(pending.len(), 2, "{report:?}");
    for diagnosis in pending {
        assert!(
            diagnosis.starts_with("denied: AccessDenied") && diagnosis.contains("s3:PutObject"),
            "{diagnosis}"
        );
    }
    let manifest = harness
        .manifest("manifests/airkit-app-events/big/2026-11-22/10.json")
        .await;
    assert_eq!(manifest.destinations["denied"].pending, vec![1]);
}

#[tokio::test]
async fn an_archive_part_cut_short_while_streaming_is_not_published_and_the_next_run_publishes_it()
{
    use s3_export::fault_proxy::{Fault, FaultPlan, FaultProxy, RequestFilter};
    use std::sync::atomic::Ordering;
    use streaming::*;
    let harness = Harness::start(DESTINATIONS).await;
    // 18 MB compressed: half of it, what a cut read delivers, is more than
    // one upload part, so the upload has started when the read fails.
    let events = stage(&harness, 240).await;
    // Commit first, with every destination refusing, so the next run's
    // reads of the committed part can be cut.
    let (flusher, _proxy, armed) = failing(&harness, |r| r.bucket().starts_with("dest-")).await;
    let report = flush_with(&flusher, TEN + HOUR + 15 * 60_000).await;
    assert_eq!(report.pending_publishes, 2, "{report:?}");
    armed.store(false, Ordering::SeqCst);
    let part = part(&harness, "big").await;
    assert!(part.offset.is_none(), "a large part is its own object");

    // Every read of the part ends early: the transfer is cut.
    let mut plan = FaultPlan::new(1.0, 7);
    plan.kinds = vec![Fault::Truncate];
    let part_key = part.key.clone();
    plan.only = Some(RequestFilter::new(move |r| {
        r.reads_object(EXPORT) && r.key() == part_key
    }));
    let proxy = FaultProxy::start(&harness.moto.endpoint(), plan)
        .await
        .unwrap();
    let flusher = Flusher::new(harness.config.clone(), proxy.s3_client(&harness.s3));
    let report = flush_with(&flusher, TEN + 2 * HOUR + 15 * 60_000).await;
    assert!(proxy.failures_injected() > 0);
    assert!(
        report.failed > 0 || report.pending_publishes > 0,
        "{report:?}"
    );
    // The archive destination (published first) had its upload started,
    // then aborted.
    let requests = requests_to(&proxy, "dest-all", BIG);
    assert_eq!(
        requests,
        ["POST?uploads", "PUT?partNumber", "DELETE?uploadId"],
        "{report:?}"
    );
    for bucket in ["dest-all", "dest-t1"] {
        assert!(
            list_keys(&harness.s3, bucket, BIG)
                .await
                .unwrap()
                .is_empty(),
            "{bucket}: nothing stored from a part read in part"
        );
        assert_eq!(uploads_in_progress(&harness, bucket).await, 0, "{bucket}");
    }
    let manifest = harness
        .manifest("manifests/airkit-app-events/big/2026-11-22/10.json")
        .await;
    assert!(manifest.has_pending());

    let report = harness.flush(TEN + 3 * HOUR + 15 * 60_000).await;
    assert_eq!(
        (report.failed, report.pending_publishes),
        (0, 0),
        "{report:?}"
    );
    let (archive, rewritten) = expected(&harness, "big").await;
    assert!(object(&harness, "dest-all", BIG).await == archive);
    assert!(object(&harness, "dest-t1", BIG).await == rewritten);
    assert_eq!(lines(&harness.files("dest-all", BIG).await), sorted(events));
}

#[tokio::test]
async fn parts_roll_over_at_the_configured_size() {
    let document = r#"{"archivePartMaxBytes": 1048576, "destinations":[{"name":"everyone","bucket":"dest-all","shared":true}]}"#;
    let harness = Harness::start(document).await;
    // About 3 MiB compressed.
    let events = bulky_events("roll", 40, 100_000, 2);
    stage_bulky(&harness, &events).await;
    harness.flush(TEN + HOUR + 15 * 60_000).await;
    let manifest = harness
        .manifest("manifests/airkit-app-events/roll/2026-11-22/10.json")
        .await;
    assert!(manifest.parts.len() >= 3, "{}", manifest.parts.len());
    for (index, part) in manifest.parts.iter().enumerate() {
        assert_eq!(part.number as usize, index + 1);
        // A part closes at the first event that takes it past the limit.
        assert!(part.bytes < 1024 * 1024 + 200_000, "{}", part.bytes);
    }
    assert_eq!(manifest.parts.iter().map(|p| p.events).sum::<u64>(), 40);
    assert_eq!(
        lines(&harness.archive("archive/").await),
        sorted(events.clone())
    );
    let published = harness.files("dest-all", "").await;
    assert_eq!(published.len(), manifest.parts.len());
    assert_eq!(lines(&published), sorted(events));
}

#[tokio::test]
async fn no_partition_is_started_past_the_deadline_and_the_next_run_does_it() {
    let harness = Harness::start(DESTINATIONS).await;
    harness
        .stage(
            (0..3)
                .map(|n| {
                    record(
                        &format!("m{n}"),
                        &app_event(&format!("t{n}"), n),
                        TEN + 1000,
                    )
                })
                .collect(),
            "r",
        )
        .await;
    let trigger =
        Trigger::from_payload(&serde_json::json!({"time": "2026-11-22T11:15:00Z"})).unwrap();
    let nearly_out = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let report = flusher::run(&harness.flusher(), &trigger, Some(nearly_out))
        .await
        .unwrap();
    assert_eq!((report.deferred, report.partitions.len()), (3, 0));
    // The three partitions are in one staged object.
    assert_eq!(report.pending_chunks, 1, "the backlog metric counts it");
    assert_eq!(
        list_keys(&harness.s3, EXPORT, "staging/")
            .await
            .unwrap()
            .len(),
        1
    );
    let report = flusher::run(&harness.flusher(), &trigger, None)
        .await
        .unwrap();
    assert_eq!((report.deferred, report.events), (0, 3));
}

#[tokio::test]
async fn a_failing_destination_is_alerted_once_with_its_diagnosis() {
    let document = r#"{"destinations":[{"name":"gone","bucket":"dest-gone","shared":true}]}"#;
    let harness = Harness::start(document).await;
    let (flusher, inbox) = staged::alerting(&harness).await;

    // Two tenants' partitions fail on the same destination: one alert.
    harness
        .stage(
            vec![
                record("a", &app_event("t1", 1), TEN + 1000),
                record("b", &app_event("t2", 2), TEN + 1000),
            ],
            "r1",
        )
        .await;
    flush_with(&flusher, TEN + HOUR + 15 * 60_000).await;
    let alerts = inbox.read(1).await.unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert!(
        alerts[0]["Subject"].as_str().unwrap().contains("gone"),
        "{}",
        alerts[0]["Subject"]
    );
    let message = alerts[0]["Message"].as_str().unwrap();
    assert!(
        message.contains("NoSuchBucket") && message.contains("dest-gone"),
        "{message}"
    );

    // The next run retries, still failing: no new alert.
    let report = flush_with(&flusher, TEN + 2 * HOUR + 15 * 60_000).await;
    assert_eq!(report.partitions.len(), 2);
    assert!(inbox.read(0).await.unwrap().is_empty());
}

/// Resident set size figures of this process, in MiB: (current, peak).
fn rss_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test]
async fn a_million_event_partition_flushes_with_bounded_memory() {
    const EVENTS: usize = 1_000_000;
    const BATCH: usize = 10_000;
    let harness = Harness::start(
        r#"{"destinations":[{"name":"everyone","bucket":"dest-all","shared":true}]}"#,
    )
    .await;
    for batch in 0..EVENTS / BATCH {
        let records: Vec<SqsMessage> = (0..BATCH)
            .map(|n| {
                let n = batch * BATCH + n;
                record(&format!("m{n}"), &format!(r#"{{"organizationId":"big","eventTime":"2026-11-22T10:{:02}:00Z","type":"step_enter","n":{n}}}"#, n % 60), TEN + 1000)
            })
            .collect();
        harness.stage(records, &format!("b{batch:03}")).await;
    }
    // Reset the peak to what is resident now, so it measures the flush.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (before, _) = rss_mib();
    let report = harness.flush(TEN + HOUR + 15 * 60_000).await;
    let (_, peak) = rss_mib();
    println!(
        "flushing {EVENTS} events: RSS {before} MiB before, peak {peak} MiB during the flush (+{} MiB)",
        peak.saturating_sub(before)
    );
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.events, EVENTS as u64);
    let manifest = harness
        .manifest("manifests/airkit-app-events/big/2026-11-22/10.json")
        .await;
    assert_eq!(
        manifest.parts.iter().map(|p| p.events).sum::<u64>(),
        EVENTS as u64
    );
    assert_eq!(manifest.consumed_chunks.len(), EVENTS / BATCH);
}

#[tokio::test]
async fn a_destination_without_permission_stays_pending_until_access_is_granted() {
    use s3_export::faults::RespondWith;
    let document = r#"{"destinations":[
      {"name":"everyone","bucket":"dest-all","shared":true},
      {"name":"denied","bucket":"dest-denied","tenants":["t1"],"layout":"hive"}]}"#;
    let harness = Harness::start(document).await;
    harness.stage_app_events("t1", 0..3, "r1").await;
    // The destination's owner has not granted s3:PutObject yet: S3 answers
    // AccessDenied (the bucket does not exist on moto, so nothing is stored).
    let denial = RespondWith::s3_error("/dest-denied/", 403, "AccessDenied", "Access Denied");
    let mut flusher = harness.flusher();
    flusher.s3 = denial.wrap(&harness.s3);
    let report = flush_with(&flusher, TEN + HOUR + 15 * 60_000).await;
    assert_eq!(report.failed, 0);
    let pending = &report.partitions[0].pending;
    assert!(
        pending[0].starts_with("denied: AccessDenied") && pending[0].contains("s3:PutObject"),
        "{pending:?}"
    );
    let manifest_key = "manifests/airkit-app-events/t1/2026-11-22/10.json";
    assert_eq!(
        harness.manifest(manifest_key).await.destinations["denied"].pending,
        vec![1]
    );
    assert_eq!(
        lines(&harness.files("dest-all", "").await).len(),
        3,
        "the other destination is not held back"
    );

    // Access granted: the next run delivers, once.
    harness
        .s3
        .create_bucket()
        .bucket("dest-denied")
        .send()
        .await
        .unwrap();
    let report = harness.flush(TEN + 2 * HOUR + 15 * 60_000).await;
    assert_eq!(report.partitions[0].published, 1);
    let delivered = harness.files("dest-denied", "").await;
    assert_eq!(
        delivered[0].key,
        "airkit-app-events/tenant=t1/dt=2026-11-22/hour=10/part-00001.ndjson.gz"
    );
    assert_eq!(
        lines(&delivered),
        sorted((0..3).map(|n| app_event("t1", n)).collect())
    );
    assert!(!harness.manifest(manifest_key).await.has_pending());
}

#[tokio::test]
async fn every_export_write_carries_the_destinations_encryption_and_expected_owner() {
    use s3_export::recorder::RequestRecorder;
    const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let document = format!(
        r#"{{"destinations":[{{"name":"kms","bucket":"dest-all","shared":true,"encryption":"aws:kms","kmsKeyId":"{KEY}","accountId":"123456789012","layout":"hive","successMarker":true}}]}}"#
    );
    let harness = Harness::start(&document).await;
    harness
        .stage(
            (0..3)
                .map(|n| {
                    record(
                        &format!("m{n}"),
                        &app_event(&format!("t{n}"), n),
                        TEN + 1000,
                    )
                })
                .collect(),
            "r",
        )
        .await;
    let recorder = RequestRecorder::new();
    let mut flusher = harness.flusher();
    flusher.s3 = recorder.wrap(&harness.s3);
    flush_with(&flusher, TEN + HOUR + 15 * 60_000).await;

    let writes: Vec<_> = recorder
        .to("/dest-all/")
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(writes.len(), 6, "three parts and three _SUCCESS markers");
    for write in &writes {
        assert_eq!(
            write
                .headers
                .get("x-amz-expected-bucket-owner")
                .map(String::as_str),
            Some("123456789012"),
            "{}",
            write.uri
        );
        assert_eq!(
            write
                .headers
                .get("x-amz-server-side-encryption")
                .map(String::as_str),
            Some("aws:kms"),
            "{}",
            write.uri
        );
        assert_eq!(
            write
                .headers
                .get("x-amz-server-side-encryption-aws-kms-key-id")
                .map(String::as_str),
            Some(KEY)
        );
    }
    // The stored objects say so too.
    let key = "airkit-app-events/tenant=t0/dt=2026-11-22/hour=10/part-00001.ndjson.gz";
    let head = harness
        .s3
        .head_object()
        .bucket("dest-all")
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("aws:kms")
    );
    assert_eq!(head.ssekms_key_id(), Some(KEY));
}

#[tokio::test]
async fn a_bucket_that_changed_hands_is_refused_and_receives_nothing() {
    use s3_export::faults::RespondWith;
    // S3 answers a mismatched ExpectedBucketOwner with 403 AccessDenied and
    // stores nothing; moto ignores the header, so the answer is injected.
    let document = r#"{"destinations":[{"name":"sold","bucket":"dest-sold","shared":true,"accountId":"111122223333"}]}"#;
    let harness = Harness::start(document).await;
    harness
        .stage(vec![record("a", &app_event("t1", 1), TEN + 1000)], "r")
        .await;
    let refusal = RespondWith::s3_error("/dest-sold/", 403, "AccessDenied", "Access Denied");
    let mut flusher = harness.flusher();
    flusher.s3 = refusal.wrap(&harness.s3);
    let report = flush_with(&flusher, TEN + HOUR + 15 * 60_000).await;
    assert_eq!(report.pending_publishes, 1);
    assert!(
        report.partitions[0].pending[0].contains("AccessDenied"),
        "{:?}",
        report.partitions[0].pending
    );
    let manifest = harness
        .manifest("manifests/airkit-app-events/t1/2026-11-22/10.json")
        .await;
    assert_eq!(manifest.destinations["sold"].pending, vec![1]);
    assert!(refusal.replaced() >= 1);
}

// Staged objects (one per batcher invocation and hour, every partition in
// it), written here by `StagedWriter` as the batcher writes them, and staged
// chunks of the format before them.

mod staged {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
    use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
    use aws_sdk_s3::error::BoxError;
    use s3_export::fault_proxy::{FaultPlan, FaultProxy};
    use s3_export::inbox::AlertInbox;
    use shared::encode::NdjsonGzWriter;
    use shared::layout;
    use shared::partition::{Hour, PartitionKey, TenantKey};
    use shared::staged::{self, StagedWriter};

    pub const APP: &str = "airkit-app-events";
    pub const AUDIT: &str = "airkit-audit-logs";
    /// When hour 10 is closed.
    pub const CLOSED: i64 = TEN + HOUR + 15 * 60_000;

    /// The lines of one partition in a staged object or chunk.
    pub struct Staged<'a> {
        pub stream: &'a str,
        pub tenant: &'a str,
        pub events: Vec<String>,
        /// Segments: the events cut into this many shards by their line.
        pub shards: u32,
    }

    pub fn app(tenant: &str, events: std::ops::Range<usize>) -> Staged<'_> {
        Staged {
            stream: APP,
            tenant,
            events: events.map(|n| app_event(tenant, n)).collect(),
            shards: 1,
        }
    }

    /// The bytes of a staged object of hour 10 holding `partitions`, as the
    /// batcher writes them (lines with provenance, segments sorted).
    pub fn staged_object(partitions: &[Staged<'_>], ingest: i64) -> Vec<u8> {
        let mut sorted: Vec<&Staged<'_>> = partitions.iter().collect();
        sorted.sort_by_key(|p| (p.stream, TenantKey::encode(p.tenant)));
        let mut writer = StagedWriter::new(1);
        for partition in sorted {
            let tenant = TenantKey::encode(partition.tenant);
            for shard in 0..partition.shards {
                let lines: Vec<&String> = partition
                    .events
                    .iter()
                    .filter(|e| staged::shard_of(e, false, partition.shards) == shard)
                    .collect();
                if lines.is_empty() {
                    continue;
                }
                writer.begin_segment(partition.stream, &tenant, shard, partition.shards);
                for (n, line) in lines.into_iter().enumerate() {
                    let provenance = format!("\t{ingest}\tm{n}");
                    writer.push_line_parts(&[line.as_bytes(), provenance.as_bytes()]);
                }
            }
        }
        writer.finish(Hour::containing(TEN))
    }

    pub async fn put(harness: &Harness, key: &str, bytes: Vec<u8>) {
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

    /// Stores a staged object of hour 10 for `partitions`; its key.
    pub async fn put_staged(
        harness: &Harness,
        ingest: i64,
        request_id: &str,
        partitions: &[Staged<'_>],
    ) -> String {
        let key = layout::staged_object_key(Hour::containing(TEN), ingest, request_id, 0);
        put(harness, &key, staged_object(partitions, ingest)).await;
        key
    }

    /// Stores a staged chunk of the format before staged objects (gzip
    /// NDJSON, one per partition), as an old batcher did; its key.
    pub async fn put_chunk(
        harness: &Harness,
        ingest: i64,
        request_id: &str,
        partition: &Staged<'_>,
    ) -> String {
        let key = layout::staging_chunk_key(
            &PartitionKey {
                hour: Hour::containing(TEN),
                stream: partition.stream.to_owned(),
                tenant: TenantKey::encode(partition.tenant),
            },
            ingest,
            request_id,
        );
        let mut chunk = NdjsonGzWriter::new(1);
        for event in &partition.events {
            chunk.push_line(&format!("{event}\t{ingest}\told"));
        }
        put(harness, &key, chunk.finish()).await;
        key
    }

    pub async fn staging(harness: &Harness) -> Vec<String> {
        list_keys(&harness.s3, EXPORT, "staging/").await.unwrap()
    }

    /// Every event of the archive and of the destination that takes every
    /// tenant (`dest-all`): both must be `expected`, each event once.
    pub async fn assert_exported_once(harness: &Harness, expected: &[String]) {
        let expected = sorted(expected.to_vec());
        let archive = harness.archive("archive/").await;
        assert_eq!(lines(&archive), expected, "the archive: each event once");
        let everyone = harness.files("dest-all", "").await;
        assert_eq!(
            lines(&everyone),
            expected,
            "the destination: each event once"
        );
    }

    /// Fails the object requests a client sends that `fail` accepts, before
    /// they are sent.
    #[derive(Debug, Clone, Default)]
    pub struct FailingRequests(
        Arc<Mutex<HashMap<(String, String), usize>>>,
        Arc<Mutex<Option<FailWhen>>>,
    );

    /// Which requests fail: given the method, the key and how many requests
    /// of that method and key came before.
    pub type FailWhen = fn(&str, &str, usize) -> bool;

    impl Intercept for FailingRequests {
        fn name(&self) -> &'static str {
            "FailingRequests"
        }

        fn read_before_transmit(
            &self,
            context: &BeforeTransmitInterceptorContextRef<'_>,
            _: &RuntimeComponents,
            _: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let request = context.request();
            let uri = request.uri();
            let path = uri.split('?').next().unwrap_or_default();
            if let Some((_, key)) = path.split_once(&format!("/{EXPORT}/")) {
                let method = request.method().to_owned();
                let before = {
                    let mut log = self.0.lock().unwrap();
                    let count = log.entry((method.clone(), key.to_owned())).or_default();
                    *count += 1;
                    *count - 1
                };
                if let Some(fail) = *self.1.lock().unwrap()
                    && fail(&method, key, before)
                {
                    return Err("injected: the connection was reset".into());
                }
            }
            Ok(())
        }
    }

    impl FailingRequests {
        /// From now on, requests that `fail` accepts fail.
        pub fn fail(&self, fail: Option<FailWhen>) {
            *self.1.lock().unwrap() = fail;
        }

        /// A flusher whose S3 requests may fail here.
        pub fn flusher(&self, harness: &Harness, config: Config) -> Flusher {
            Flusher::new(
                config,
                s3_export::faults::with_interceptor(&harness.s3, self.clone()),
            )
        }
    }

    /// A flusher whose S3 requests go through a fault proxy injecting
    /// nothing, whose request log counts what reached S3.
    pub async fn through_proxy(harness: &Harness, config: Config) -> (Flusher, FaultProxy) {
        let proxy = FaultProxy::start(&harness.moto.endpoint(), FaultPlan::none())
            .await
            .unwrap();
        (Flusher::new(config, proxy.s3_client(&harness.s3)), proxy)
    }

    /// The GetObject requests of staged objects S3 received, by key, each
    /// with its Range header.
    pub fn staged_gets(proxy: &FaultProxy) -> BTreeMap<String, Vec<Option<String>>> {
        let mut gets: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
        for request in proxy.request_log() {
            if request.reads_object(EXPORT) && request.key().ends_with(".staged") {
                gets.entry(request.key()).or_default().push(request.range);
            }
        }
        gets
    }

    /// The PUT-class requests (PutObject, UploadPart, multipart calls) S3
    /// received, by what they wrote: `manifest`, `id digest`, `archive`,
    /// `pending`, `destination` (any other bucket) or `other`.
    pub fn writes_by_kind(proxy: &FaultProxy) -> BTreeMap<&'static str, usize> {
        let mut writes = BTreeMap::new();
        for request in proxy.request_log() {
            let kind = if request.writes(EXPORT, "manifests/") {
                if request.key().ends_with(".json") {
                    "manifest"
                } else {
                    "id digest"
                }
            } else if request.writes(EXPORT, "archive/") {
                "archive"
            } else if request.writes(EXPORT, "pending/") {
                "pending"
            } else if request.writes(EXPORT, "") {
                "other"
            } else if request.writes(request.bucket(), "") {
                "destination"
            } else {
                continue;
            };
            *writes.entry(kind).or_default() += 1;
        }
        writes
    }

    pub const EVERYONE: &str = r#"{"destinations":[{"name":"everyone","bucket":"dest-all","prefix":"exports/","shared":true}]}"#;

    pub async fn alerting(harness: &Harness) -> (Flusher, AlertInbox) {
        let sdk = harness.moto.sdk_config().await;
        let inbox = AlertInbox::create(
            &aws_sdk_sns::Client::new(&sdk),
            &harness.moto.sqs_client().await,
            "alerts",
        )
        .await
        .unwrap();
        let mut flusher = harness.flusher();
        flusher.alerter = shared::alert::Alerter::new(
            aws_sdk_sns::Client::new(&sdk),
            Some(inbox.topic_arn.clone()),
            "test-stack",
            flusher::SOURCE,
        );
        (flusher, inbox)
    }
}

use staged::{
    AUDIT, CLOSED, EVERYONE, FailingRequests, Staged, app, assert_exported_once, put_chunk,
    put_staged, staging,
};

#[tokio::test]
async fn moto_honours_ranged_gets() {
    let harness = Harness::start(EVERYONE).await;
    staged::put(&harness, "some/object", b"0123456789".to_vec()).await;
    let mut out = Vec::new();
    let read = flusher::store::get_range_into(&harness.s3, EXPORT, "some/object", 3..7, &mut out)
        .await
        .unwrap();
    assert_eq!((read, out.as_slice()), (Some(4), &b"3456"[..]));
    let mut out = Vec::new();
    let gone = flusher::store::get_range_into(&harness.s3, EXPORT, "no/object", 0..4, &mut out)
        .await
        .unwrap();
    assert_eq!(gone, None);
}

#[tokio::test]
async fn old_chunks_and_staged_objects_in_one_hour_export_each_event_once() {
    let harness = Harness::start(EVERYONE).await;
    // An upgrade in the middle of hour 10: chunks of the old format before
    // it and after it (a batcher not yet replaced), staged objects between,
    // the same events redelivered across both formats.
    let audit = |id: &str, user: &str| audit_event("t1", id, user);
    let chunk_t1 = put_chunk(&harness, TEN + 1000, "old-1", &app("t1", 0..10)).await;
    let chunk_t2 = put_chunk(&harness, TEN + 1000, "old-1", &app("t2", 0..5)).await;
    let chunk_audit = put_chunk(
        &harness,
        TEN + 1000,
        "old-1",
        &Staged {
            stream: AUDIT,
            tenant: "t1",
            events: vec![audit("E-1", "first")],
            shards: 1,
        },
    )
    .await;
    let object = put_staged(
        &harness,
        TEN + 2000,
        "new-1",
        &[
            Staged {
                shards: 4,
                ..app("t1", 5..20)
            },
            app("t2", 3..8),
            Staged {
                stream: AUDIT,
                tenant: "t1",
                // E-1 again with other bytes: the one staged first is kept.
                events: vec![audit("E-1", "again"), audit("E-2", "u")],
                shards: 2,
            },
        ],
    )
    .await;
    let late_chunk = put_chunk(&harness, TEN + 3000, "old-2", &app("t2", 6..12)).await;
    assert_eq!(staging(&harness).await.len(), 5);

    let report = harness.flush(CLOSED).await;
    assert_eq!(report.failed, 0, "{report:?}");
    let mut expected: Vec<String> = (0..20).map(|n| app_event("t1", n)).collect();
    expected.extend((0..12).map(|n| app_event("t2", n)));
    expected.push(audit("E-1", "first"));
    expected.push(audit("E-2", "u"));
    assert_eq!(report.events, expected.len() as u64);
    assert_eq!(report.duplicates, 5 + 2 + 2 + 1);
    assert_exported_once(&harness, &expected).await;
    assert!(staging(&harness).await.is_empty(), "both kinds deleted");
    assert_eq!(report.pending_chunks, 0);

    let manifest = harness
        .manifest("manifests/airkit-app-events/t2/2026-11-22/10.json")
        .await;
    assert_eq!(
        manifest.consumed_chunks,
        vec![chunk_t2, object.clone(), late_chunk],
        "in staged order"
    );
    let audit_manifest = harness
        .manifest("manifests/airkit-audit-logs/t1/2026-11-22/10.json")
        .await;
    assert_eq!(audit_manifest.consumed_chunks, vec![chunk_audit, object]);
    let t1 = harness
        .manifest("manifests/airkit-app-events/t1/2026-11-22/10.json")
        .await;
    assert_eq!(t1.consumed_chunks[0], chunk_t1);

    // Nothing left to do: a second run changes nothing.
    let before = harness.snapshot().await;
    let again = harness.flush(CLOSED + HOUR).await;
    assert_eq!((again.events, again.failed), (0, 0));
    assert_eq!(harness.snapshot().await, before);
}

/// Stages `objects` staged objects of `tenants` tenants each, 3 events a
/// partition; the events.
async fn stage_many_tenants(harness: &Harness, objects: usize, tenants: usize) -> Vec<String> {
    let names: Vec<String> = (0..tenants).map(|t| format!("tenant-{t:03}")).collect();
    let mut expected = Vec::new();
    for object in 0..objects {
        let partitions: Vec<Staged<'_>> = names
            .iter()
            .map(|tenant| app(tenant, object * 3..object * 3 + 3))
            .collect();
        expected.extend(partitions.iter().flat_map(|p| p.events.clone()));
        put_staged(
            harness,
            TEN + 1000 * object as i64,
            &format!("r{object}"),
            &partitions,
        )
        .await;
    }
    expected
}

#[tokio::test]
async fn a_flush_of_every_partition_reads_each_staged_object_with_two_gets() {
    let harness = Harness::start(EVERYONE).await;
    let expected = stage_many_tenants(&harness, 3, 60).await;
    let (flusher, proxy) = staged::through_proxy(&harness, harness.config.clone()).await;
    let report = flush_with(&flusher, CLOSED).await;
    assert_eq!((report.failed, report.partitions.len()), (0, 60));
    assert_exported_once(&harness, &expected).await;
    assert!(staging(&harness).await.is_empty());

    let gets = staged::staged_gets(&proxy);
    assert_eq!(gets.len(), 3, "{gets:?}");
    for (key, ranges) in gets {
        // The tail (index), then every partition's segments in one range.
        assert_eq!(ranges.len(), 2, "{key}: {ranges:?}");
        assert!(ranges.iter().all(Option::is_some), "{key}: {ranges:?}");
        assert!(
            ranges[1].as_deref().unwrap().starts_with("bytes=0-"),
            "{ranges:?}"
        );
    }
}

/// Stages `tenants` app-event partitions in `objects` staged objects,
/// flushes them all through a fault proxy, checks each event exported once,
/// and returns the writes S3 received, by kind.
async fn flush_many_tenants_counting_writes(
    objects: usize,
    tenants: usize,
) -> (Harness, BTreeMap<&'static str, usize>) {
    let harness = Harness::start(EVERYONE).await;
    let expected = stage_many_tenants(&harness, objects, tenants).await;
    let (flusher, proxy) = staged::through_proxy(&harness, harness.config.clone()).await;
    let report = flush_with(&flusher, CLOSED).await;
    assert_eq!((report.failed, report.partitions.len()), (0, tenants));
    assert_exported_once(&harness, &expected).await;
    (harness, staged::writes_by_kind(&proxy))
}

#[tokio::test]
async fn a_flush_of_sixty_small_partitions_costs_two_puts_each_and_one_bundle() {
    let (harness, writes) = flush_many_tenants_counting_writes(3, 60).await;
    // Per partition its commit and its file; the parts and id digests of
    // all sixty in one bundle.
    assert_eq!(
        writes,
        BTreeMap::from([("archive", 1), ("destination", 60), ("manifest", 60)])
    );
    // Each manifest lists its part as published, unconfirmed; nothing it
    // consumed is staged any more, so a later run takes it as published.
    assert!(staging(&harness).await.is_empty());
    let rerun = harness.flush(CLOSED + HOUR).await;
    assert_eq!((rerun.failed, rerun.pending_publishes), (0, 0), "{rerun:?}");
    assert!(
        rerun.partitions.iter().all(|p| p.published == 0),
        "{rerun:?}"
    );
}

#[tokio::test]
async fn partitions_beyond_one_bundles_share_start_the_next_bundle() {
    let tenants = flusher::BUNDLE_PARTITIONS + 4;
    let (_harness, writes) = flush_many_tenants_counting_writes(1, tenants).await;
    assert_eq!(
        writes,
        BTreeMap::from([
            ("archive", 2),
            ("destination", tenants),
            ("manifest", tenants)
        ])
    );
}

#[tokio::test]
async fn a_spool_budget_smaller_than_the_hour_flushes_in_windows_each_event_once() {
    let harness = Harness::start(EVERYONE).await;
    let expected = stage_many_tenants(&harness, 2, 40).await;
    let mut config = harness.config.clone();
    // A few partitions' segments a window.
    config.spool_bytes = 1024;
    // The windows the run plans: partitions in order, their segments'
    // bytes over both objects.
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for key in staging(&harness).await {
        let index = shared::staged::read_index(&harness.bytes(EXPORT, &key).await).unwrap();
        for segment in index.segments {
            *sizes.entry(segment.tenant).or_default() += segment.length;
        }
    }
    let sizes: Vec<u64> = sizes.into_values().collect();
    let windows = flusher::staged_read::plan_windows(&sizes, 1024).len();
    assert!(windows > 2, "{windows} windows");
    let (flusher, proxy) = staged::through_proxy(&harness, config).await;
    let report = flush_with(&flusher, CLOSED).await;
    assert_eq!((report.failed, report.partitions.len()), (0, 40));
    assert_exported_once(&harness, &expected).await;
    assert!(staging(&harness).await.is_empty());
    for (key, ranges) in staged::staged_gets(&proxy) {
        assert_eq!(
            ranges.len(),
            windows + 1,
            "{key}: the tail, then one GET a window"
        );
    }
}

#[tokio::test]
async fn a_staged_object_stays_until_every_partition_in_it_has_consumed_it() {
    let harness = Harness::start(EVERYONE).await;
    let object = put_staged(
        &harness,
        TEN + 1000,
        "r1",
        &[app("t1", 0..3), app("t2", 0..2)],
    )
    .await;
    // A manual flush of one tenant: the object holds another's events.
    let trigger = Trigger::from_payload(
        &serde_json::json!({"flush": {"until": "2026-11-22T11:00:00Z", "tenants": ["t1"]}}),
    )
    .unwrap();
    let report = flusher::run(&harness.flusher(), &trigger, None)
        .await
        .unwrap();
    assert_eq!((report.partitions.len(), report.events), (1, 3));
    assert_eq!(staging(&harness).await, vec![object.clone()]);
    assert_eq!(report.pending_chunks, 1, "the backlog metric counts it");

    // The scheduled run flushes t2 only: t1 has consumed it already.
    let report = harness.flush(CLOSED).await;
    assert_eq!(report.events, 2);
    let t1 = report.partitions.iter().find(|p| p.tenant == "t1").unwrap();
    assert_eq!(t1.events, 0);
    assert!(staging(&harness).await.is_empty());
    let mut expected: Vec<String> = (0..3).map(|n| app_event("t1", n)).collect();
    expected.extend((0..2).map(|n| app_event("t2", n)));
    assert_exported_once(&harness, &expected).await;
}

#[tokio::test]
async fn a_late_or_redelivered_staged_object_becomes_the_next_part_without_duplicates() {
    let harness = Harness::start(EVERYONE).await;
    put_staged(&harness, TEN + 1000, "r1", &[app("t1", 0..5)]).await;
    harness.flush(CLOSED).await;
    // Late: a batch of hour 10 staged after the hour was flushed, holding a
    // redelivery of events 3 and 4, and a redelivered copy of the first
    // object under another request id.
    put_staged(&harness, CLOSED + 1000, "r2", &[app("t1", 3..8)]).await;
    put_staged(&harness, CLOSED + 2000, "r1-again", &[app("t1", 0..5)]).await;
    let report = harness.flush(CLOSED + HOUR).await;
    assert_eq!((report.events, report.duplicates), (3, 7));
    assert_eq!(report.partitions[0].parts, vec![2]);
    assert_exported_once(
        &harness,
        &(0..8).map(|n| app_event("t1", n)).collect::<Vec<_>>(),
    )
    .await;
    assert!(staging(&harness).await.is_empty());
}

#[tokio::test]
async fn a_run_stopped_after_any_step_on_staged_objects_converges() {
    for step in [
        Step::PartsWritten,
        Step::ManifestCommitted,
        Step::SomePublished,
        Step::BeforeDeletingChunks,
    ] {
        let harness = Harness::start(EVERYONE).await;
        put_staged(
            &harness,
            TEN + 1000,
            "r1",
            &[app("t1", 0..4), app("t2", 0..4)],
        )
        .await;
        put_chunk(&harness, TEN + 500, "old", &app("t2", 2..6)).await;
        let mut crashing = harness.flusher();
        crashing.stop_after = Some(step);
        let report = flush_with(&crashing, CLOSED).await;
        assert_eq!(report.failed, 2, "{step:?}");
        assert!(
            !staging(&harness).await.is_empty(),
            "{step:?}: nothing deleted yet"
        );
        let report = harness.flush(CLOSED).await;
        assert_eq!(report.failed, 0, "{step:?}: {report:?}");
        let mut expected: Vec<String> = (0..4).map(|n| app_event("t1", n)).collect();
        expected.extend((0..6).map(|n| app_event("t2", n)));
        assert_exported_once(&harness, &expected).await;
        assert!(staging(&harness).await.is_empty(), "{step:?}");
    }
}

/// Which part of a staged object a test damages.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncated,
    SegmentBit,
    IndexBit,
}

/// Stages three objects of hour 10 (t1 and t2 in each); the middle one is
/// damaged as `damage` says (for a segment, t1's). Returns the damaged
/// object's key, its stored bytes, and the events that must be exported.
async fn stage_with_damage(harness: &Harness, damage: Damage) -> (String, Vec<u8>, Vec<String>) {
    put_staged(
        harness,
        TEN + 1000,
        "r1",
        &[app("t1", 0..3), app("t2", 0..3)],
    )
    .await;
    let partitions = [app("t1", 10..13), app("t2", 10..13)];
    let mut bytes = staged::staged_object(&partitions, TEN + 2000);
    let index = shared::staged::read_index(&bytes).unwrap();
    match damage {
        Damage::Truncated => bytes.truncate(bytes.len() - 100),
        Damage::SegmentBit => {
            let t1 = &index.segments[0];
            assert_eq!(t1.tenant, "t1");
            let at = (t1.offset + t1.length / 2) as usize;
            bytes[at] ^= 0x04;
        }
        Damage::IndexBit => {
            let at = bytes.len() - shared::staged::TRAILER_BYTES - 5;
            bytes[at] ^= 0x04;
        }
    }
    let key = layout::staged_object_key(Hour::containing(TEN), TEN + 2000, "r2", 0);
    staged::put(harness, &key, bytes.clone()).await;
    put_staged(
        harness,
        TEN + 3000,
        "r3",
        &[app("t1", 20..23), app("t2", 20..23)],
    )
    .await;
    let mut expected = Vec::new();
    for tenant in ["t1", "t2"] {
        for range in [0..3, 20..23] {
            expected.extend(range.map(|n| app_event(tenant, n)));
        }
    }
    if matches!(damage, Damage::SegmentBit) {
        // Only t1's segment is damaged: t2's events of the object are good.
        expected.extend((10..13).map(|n| app_event("t2", n)));
    }
    (key, bytes, expected)
}

use shared::layout;
use shared::partition::Hour;

async fn damaged_object_is_quarantined_and_alerted_once(damage: Damage) {
    let harness = Harness::start(EVERYONE).await;
    let (key, bytes, expected) = stage_with_damage(&harness, damage).await;
    let (flusher, inbox) = staged::alerting(&harness).await;

    // A first run that flushes t1 only, then a scheduled one: the damaged
    // object is refused once, alerted once.
    let trigger = Trigger::from_payload(
        &serde_json::json!({"flush": {"until": "2026-11-22T11:00:00Z", "tenants": ["t1"]}}),
    )
    .unwrap();
    let first = flusher::run(&flusher, &trigger, None).await.unwrap();
    assert_eq!(first.failed, 0, "{damage:?}: {first:?}");
    assert_eq!(first.quarantined, 1, "{damage:?}");
    let second = flush_with(&flusher, CLOSED).await;
    assert_eq!(second.failed, 0, "{damage:?}: {second:?}");
    assert_eq!(second.quarantined, 0, "{damage:?}: already quarantined");
    let third = flush_with(&flusher, CLOSED + HOUR).await;
    assert_eq!((third.events, third.quarantined), (0, 0));

    assert_exported_once(&harness, &expected).await;
    assert!(staging(&harness).await.is_empty(), "{damage:?}");
    assert_eq!(
        harness.bytes(EXPORT, &layout::quarantine_key(&key)).await,
        bytes,
        "{damage:?}: the quarantine copy is byte-identical"
    );
    let alerts = inbox.read(1).await.unwrap();
    assert_eq!(alerts.len(), 1, "{damage:?}: {alerts:#?}");
    let message = alerts[0]["Message"].as_str().unwrap();
    assert!(
        message.contains(&format!("s3://{EXPORT}/{key}"))
            && message.contains(&format!("quarantine/{key}")),
        "{message}"
    );
    if matches!(damage, Damage::SegmentBit) {
        assert!(
            message.contains("segment airkit-app-events/t1 shard 0"),
            "{message}"
        );
        let manifest = harness
            .manifest("manifests/airkit-app-events/t1/2026-11-22/10.json")
            .await;
        assert_eq!(manifest.quarantined_chunks, vec![key.clone()]);
        assert!(!manifest.consumed_chunks.contains(&key));
    }
}

#[tokio::test]
async fn a_truncated_staged_object_is_quarantined_and_alerted_once() {
    damaged_object_is_quarantined_and_alerted_once(Damage::Truncated).await;
}

#[tokio::test]
async fn a_flipped_bit_in_a_segment_quarantines_its_object_for_that_partition_only() {
    damaged_object_is_quarantined_and_alerted_once(Damage::SegmentBit).await;
}

#[tokio::test]
async fn a_flipped_bit_in_the_index_quarantines_the_whole_object() {
    damaged_object_is_quarantined_and_alerted_once(Damage::IndexBit).await;
}

#[tokio::test]
async fn an_object_left_after_its_quarantine_copy_is_not_alerted_again() {
    let harness = Harness::start(EVERYONE).await;
    let (key, bytes, expected) = stage_with_damage(&harness, Damage::IndexBit).await;
    let (flusher, inbox) = staged::alerting(&harness).await;
    assert_eq!(flush_with(&flusher, CLOSED).await.quarantined, 1);
    // As if the run had stopped after the copy, before deleting it.
    staged::put(&harness, &key, bytes).await;
    let again = flush_with(&flusher, CLOSED + HOUR).await;
    assert_eq!((again.quarantined, again.failed), (0, 0));
    assert!(staging(&harness).await.is_empty());
    assert_eq!(inbox.read(1).await.unwrap().len(), 1);
    assert_exported_once(&harness, &expected).await;
}

#[tokio::test]
async fn a_staged_object_whose_data_cannot_be_fetched_fails_its_partitions_until_it_can() {
    let harness = Harness::start(EVERYONE).await;
    let object = put_staged(
        &harness,
        TEN + 1000,
        "r1",
        &[app("t1", 0..3), app("t2", 0..3)],
    )
    .await;
    put_chunk(&harness, TEN, "old", &app("t3", 0..2)).await;
    let log = FailingRequests::default();
    let flusher = log.flusher(&harness, harness.config.clone());
    // An object's first GET reads its tail; the next its data.
    log.fail(Some(|method, key, before| {
        method == "GET" && key.ends_with(".staged") && before > 0
    }));
    let report = flush_with(&flusher, CLOSED).await;
    assert_eq!((report.failed, report.events), (2, 2), "{report:?}");
    for partition in report.partitions.iter().filter(|p| p.tenant != "t3") {
        let error = partition.error.as_deref().unwrap();
        assert!(
            error.contains(&format!("GetObject s3://{EXPORT}/{object}"))
                && error.contains("injected"),
            "{error}"
        );
    }
    assert_eq!(staging(&harness).await, vec![object]);
    assert_eq!(report.pending_chunks, 1);

    log.fail(None);
    let report = flush_with(&flusher, CLOSED).await;
    assert_eq!((report.failed, report.events), (0, 6));
    let mut expected: Vec<String> = ["t1", "t2"]
        .iter()
        .flat_map(|t| (0..3).map(|n| app_event(t, n)))
        .collect();
    expected.extend((0..2).map(|n| app_event("t3", n)));
    assert_exported_once(&harness, &expected).await;
    assert!(staging(&harness).await.is_empty());
}

#[tokio::test]
async fn a_staged_object_whose_tail_cannot_be_fetched_waits_for_the_next_run() {
    let harness = Harness::start(EVERYONE).await;
    put_staged(&harness, TEN + 1000, "r1", &[app("t1", 0..3)]).await;
    let late = put_staged(&harness, TEN + 2000, "r2", &[app("t1", 2..6)]).await;
    let log = FailingRequests::default();
    let flusher = log.flusher(&harness, harness.config.clone());
    log.fail(Some(|method, key, _| {
        method == "GET" && key.contains("-r2.staged")
    }));
    let report = flush_with(&flusher, CLOSED).await;
    assert_eq!(
        (report.failed, report.events, report.pending_chunks),
        (0, 3, 1)
    );
    assert_eq!(staging(&harness).await, vec![late]);

    // Read next run as a late object of the hour: its next part.
    log.fail(None);
    let report = flush_with(&flusher, CLOSED).await;
    assert_eq!((report.events, report.duplicates), (3, 1));
    assert_exported_once(
        &harness,
        &(0..6).map(|n| app_event("t1", n)).collect::<Vec<_>>(),
    )
    .await;
    assert!(staging(&harness).await.is_empty());
}

#[tokio::test]
async fn a_spool_directory_that_cannot_be_written_fails_the_partitions_naming_it() {
    let harness = Harness::start(EVERYONE).await;
    put_staged(&harness, TEN + 1000, "r1", &[app("t1", 0..3)]).await;
    let mut config = harness.config.clone();
    config.spool_dir = std::env::temp_dir().join("no-such-spool-directory");
    let report = flush_with(&Flusher::new(config, harness.s3.clone()), CLOSED).await;
    assert_eq!(report.failed, 1);
    let error = report.partitions[0].error.as_deref().unwrap();
    assert!(
        error.starts_with("spool directory ") && error.contains("no-such-spool-directory"),
        "{error}"
    );
    assert_eq!(staging(&harness).await.len(), 1);
    let report = harness.flush(CLOSED).await;
    assert_eq!((report.failed, report.events), (0, 3));
    assert!(staging(&harness).await.is_empty());
}

#[tokio::test]
async fn an_index_larger_than_the_first_tail_read_takes_a_second_get() {
    let harness = Harness::start(EVERYONE).await;
    // Tenant names that do not compress: an index of some 200 KiB.
    let mut state = 7u64;
    let mut random = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 16
    };
    let names: Vec<String> = (0..4_000)
        .map(|_| format!("{:012x}{:012x}", random(), random()))
        .collect();
    let partitions: Vec<Staged<'_>> = names.iter().map(|t| app(t, 0..1)).collect();
    let bytes = staged::staged_object(&partitions, TEN);
    let index = shared::staged::read_index(&bytes).unwrap();
    let key = layout::staged_object_key(Hour::containing(TEN), TEN, "big", 0);
    staged::put(&harness, &key, bytes.clone()).await;
    let (flusher, proxy) = staged::through_proxy(&harness, harness.config.clone()).await;
    let read = flusher::staged_read::read_index(&flusher.s3, EXPORT, &key, bytes.len() as u64)
        .await
        .unwrap();
    assert_eq!(read, Some(Ok(index.clone())));
    let gets = staged::staged_gets(&proxy);
    assert_eq!(gets[&key].len(), 2, "{gets:?}");
    assert_eq!(
        gets[&key][1].as_deref(),
        Some(format!("bytes={}-{}", index.data_end(), bytes.len() - 1).as_str())
    );
}

#[tokio::test]
async fn a_pending_marker_left_after_the_last_publish_was_committed_is_deleted() {
    let harness = Harness::start(EVERYONE).await;
    put_staged(&harness, TEN + 1000, "r1", &[app("t1", 0..2)]).await;
    harness.flush(CLOSED).await;
    // As if a run had committed its last publish and stopped before
    // deleting the marker.
    let marker = "pending/airkit-app-events/t1/2026-11-22/10.json";
    staged::put(&harness, marker, b"{}".to_vec()).await;
    let report = harness.flush(CLOSED + HOUR).await;
    assert_eq!((report.failed, report.pending_publishes), (0, 0));
    assert!(
        list_keys(&harness.s3, EXPORT, "pending/")
            .await
            .unwrap()
            .is_empty()
    );
    assert_exported_once(
        &harness,
        &(0..2).map(|n| app_event("t1", n)).collect::<Vec<_>>(),
    )
    .await;
}

#[tokio::test]
async fn a_damaged_object_whose_quarantine_copy_fails_stays_for_the_next_run() {
    let harness = Harness::start(EVERYONE).await;
    let (key, bytes, expected) = stage_with_damage(&harness, Damage::IndexBit).await;
    let log = FailingRequests::default();
    let flusher = log.flusher(&harness, harness.config.clone());
    // CopyObject is a PUT of the copy's key.
    log.fail(Some(|method, key, _| {
        method == "PUT" && key.starts_with("quarantine/")
    }));
    let report = flush_with(&flusher, CLOSED).await;
    assert_eq!((report.failed, report.quarantined), (0, 0), "{report:?}");
    assert_eq!(report.pending_chunks, 1, "the damaged object, left");
    assert_eq!(staging(&harness).await, vec![key.clone()]);

    log.fail(None);
    let report = flush_with(&flusher, CLOSED).await;
    assert_eq!((report.failed, report.quarantined), (0, 1), "{report:?}");
    assert!(staging(&harness).await.is_empty());
    assert_eq!(
        harness.bytes(EXPORT, &layout::quarantine_key(&key)).await,
        bytes
    );
    assert_exported_once(&harness, &expected).await;
}

#[tokio::test]
async fn a_damaged_segment_whose_quarantine_copy_fails_fails_its_partition_until_it_can() {
    let harness = Harness::start(EVERYONE).await;
    let (key, bytes, expected) = stage_with_damage(&harness, Damage::SegmentBit).await;
    let log = FailingRequests::default();
    let flusher = log.flusher(&harness, harness.config.clone());
    log.fail(Some(|method, key, _| {
        method == "PUT" && key.starts_with("quarantine/")
    }));
    let report = flush_with(&flusher, CLOSED).await;
    assert_eq!(report.failed, 1, "{report:?}");
    let t1 = report.partitions.iter().find(|p| p.tenant == "t1").unwrap();
    let error = t1.error.as_deref().unwrap();
    assert!(
        error.contains("CopyObject") && error.contains(&key),
        "{error}"
    );
    // t1 failed: every object holding t1 stays for the next run.
    assert_eq!(staging(&harness).await.len(), 3);

    log.fail(None);
    let report = flush_with(&flusher, CLOSED).await;
    assert_eq!((report.failed, report.quarantined), (0, 1), "{report:?}");
    assert!(staging(&harness).await.is_empty());
    assert_eq!(
        harness.bytes(EXPORT, &layout::quarantine_key(&key)).await,
        bytes
    );
    assert_exported_once(&harness, &expected).await;
}

#[tokio::test]
async fn a_bundle_that_cannot_be_stored_fails_its_partitions_uncommitted_and_the_next_run_converges()
 {
    let harness = Harness::start(EVERYONE).await;
    let expected = stage_many_tenants(&harness, 2, 5).await;
    let log = FailingRequests::default();
    let flusher = log.flusher(&harness, harness.config.clone());
    log.fail(Some(|method, key, _| {
        method == "PUT" && key.starts_with("archive/_bundles/")
    }));
    let report = flush_with(&flusher, CLOSED).await;
    assert_eq!(report.failed, 5, "{report:?}");
    for partition in &report.partitions {
        let error = partition.error.as_deref().unwrap();
        assert!(
            error.contains("PutObject") && error.contains("archive/_bundles/"),
            "{error}"
        );
    }
    // Nothing committed, nothing published, nothing consumed.
    assert!(
        list_keys(&harness.s3, EXPORT, "manifests/")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        list_keys(&harness.s3, "dest-all", "")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(staging(&harness).await.len(), 2);

    log.fail(None);
    let report = flush_with(&flusher, CLOSED).await;
    assert_eq!(report.failed, 0, "{report:?}");
    assert_exported_once(&harness, &expected).await;
    assert!(staging(&harness).await.is_empty());
}

/// A pending part whose stored bytes are no longer those its manifest
/// committed (same length, one byte changed in the bundle) is never
/// written to the destination: the partition fails, naming where the part
/// is stored, the part stays pending, and nothing reaches the bucket.
#[tokio::test]
async fn a_part_changed_after_its_commit_is_not_published() {
    let harness = Harness::start(
        r#"{"destinations":[{"name":"everyone","bucket":"dest-late","shared":true}]}"#,
    )
    .await;
    harness.stage_app_events("t1", 0..20, "req-1").await;
    // The destination does not exist yet: the part stays pending.
    let report = harness.flush(TEN + HOUR + 15 * 60_000).await;
    assert_eq!(report.pending_publishes, 1, "{report:?}");
    let manifest = harness
        .manifest("manifests/airkit-app-events/t1/2026-11-22/10.json")
        .await;
    let part = &manifest.parts[0];
    let mut stored = harness.bytes(EXPORT, &part.key).await;
    let at = part.offset.unwrap_or(0) as usize + 20;
    stored[at] ^= 0x01;
    harness
        .s3
        .put_object()
        .bucket(EXPORT)
        .key(&part.key)
        .body(stored.into())
        .send()
        .await
        .unwrap();
    harness
        .s3
        .create_bucket()
        .bucket("dest-late")
        .send()
        .await
        .unwrap();

    let report = harness.flush(TEN + HOUR + 75 * 60_000).await;
    assert_eq!(report.failed, 1, "{report:?}");
    let error = report.partitions[0].error.as_deref().unwrap_or_default();
    assert!(
        error.contains(&part.key) && error.contains("SHA-256"),
        "{error}"
    );
    assert!(
        list_keys(&harness.s3, "dest-late", "")
            .await
            .unwrap()
            .is_empty()
    );
    let manifest = harness
        .manifest("manifests/airkit-app-events/t1/2026-11-22/10.json")
        .await;
    assert_eq!(manifest.destinations["everyone"].pending, vec![1]);
}

/// Two flush runs of one hour at once (docs/design.md, invariant 7), their
/// interleavings forced with the fault proxy's gate.
mod concurrent {
    use super::*;
    use s3_export::fault_proxy::{FaultPlan, FaultProxy, Gate, Hold, RequestFilter};

    const FLUSH_TIME: i64 = TEN + HOUR + 15 * 60_000;
    const EVERYONE: &str =
        r#"{"destinations":[{"name":"everyone","bucket":"dest-all","shared":true}]}"#;

    /// A flusher whose requests go through a proxy that holds those
    /// `hold` accepts until `gate` opens.
    async fn held_flusher(
        harness: &Harness,
        hold: impl Fn(&s3_export::fault_proxy::RequestInfo) -> bool + Send + Sync + 'static,
        gate: &Gate,
    ) -> (Flusher, FaultProxy) {
        let plan = FaultPlan {
            hold: Some(Hold {
                filter: RequestFilter::new(hold),
                gate: gate.clone(),
            }),
            ..FaultPlan::none()
        };
        let proxy = FaultProxy::start(&harness.moto.endpoint(), plan)
            .await
            .unwrap();
        let flusher = Flusher::new(harness.config.clone(), proxy.s3_client(&harness.s3));
        (flusher, proxy)
    }

    /// The keys under `prefix` in the export bucket.
    async fn keys(harness: &Harness, prefix: &str) -> Vec<String> {
        list_keys(&harness.s3, EXPORT, prefix).await.unwrap()
    }

    /// Run A has read the hour and is writing a large part (an object of
    /// its own) when run B, which also sees a late batch, flushes and
    /// commits the same partitions; A's archive writes are held until then.
    /// A then loses its commits: every part B committed is still what its
    /// manifest says (length and SHA-256, checked by the archive reader),
    /// the late events are there, A's own part is removed, and each event
    /// reached the archive and the destination once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_held_while_another_commits_changes_nothing_the_winner_committed() {
        let harness = Harness::start(EVERYONE).await;
        // About 12 MB of letters, 9 MB compressed: a part of its own.
        let early = bulky_events("big", 120, 100_000, 3);
        stage_bulky_as(&harness, &early, "early").await;
        harness.stage_app_events("t1", 0..20, "small-early").await;

        let gate = Gate::new();
        let (run_a, _proxy) = held_flusher(
            &harness,
            |request| request.writes(EXPORT, "archive/airkit-app-events/big/"),
            &gate,
        )
        .await;
        // A batch staged late, which only run B sees.
        let late = bulky_events("big", 10, 100_000, 4);
        let run_b = async {
            gate.wait_for(1).await;
            stage_bulky_as(&harness, &late, "late").await;
            harness.stage_app_events("t1", 20..30, "small-late").await;
            let b = harness.flush(FLUSH_TIME).await;
            gate.open();
            b
        };
        let (a, b) = tokio::join!(flush_with(&run_a, FLUSH_TIME), run_b);
        assert_eq!(b.failed, 0, "{b:?}");
        assert_eq!(b.events, 160, "{b:?}");
        assert_eq!(a.failed, 0, "a lost race is not a failure: {a:?}");
        assert_eq!(a.events, 0, "run A committed nothing: {a:?}");

        let big = harness
            .manifest("manifests/airkit-app-events/big/2026-11-22/10.json")
            .await;
        assert_eq!(big.generation, 1, "only run B committed");
        assert_eq!(big.parts.len(), 1);
        assert_eq!(
            keys(&harness, "archive/airkit-app-events/big/").await,
            vec![big.parts[0].key.clone()],
            "run A's part, named by no manifest, is removed"
        );
        let t1: Vec<String> = (0..30).map(|n| app_event("t1", n)).collect();
        let all = sorted([early, late, t1].concat());
        assert_eq!(lines(&harness.archive("archive/").await), all);
        assert_eq!(lines(&harness.files("dest-all", "").await), all);

        // A later run finds nothing left to do.
        let before = harness.snapshot().await;
        let again = harness.flush(FLUSH_TIME + 60_000).await;
        assert_eq!((again.events, again.failed), (0, 0), "{again:?}");
        assert_eq!(harness.snapshot().await, before);
        assert!(keys(&harness, "staging/").await.is_empty());
    }

    /// Run A has committed and is publishing (its destination writes held)
    /// when run B flushes the same partition with a late batch: B publishes
    /// A's unconfirmed part again (what A consumed is still staged), commits
    /// the late events as the next part and publishes it; then A's held
    /// publish lands, the same bytes at the same key. Each event reaches the
    /// destination once, in parts 1 and 2.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_held_while_publishing_and_a_later_run_publish_each_part_once() {
        let harness = Harness::start(EVERYONE).await;
        harness.stage_app_events("t1", 0..20, "early").await;

        let gate = Gate::new();
        let (run_a, _proxy) =
            held_flusher(&harness, |request| request.writes("dest-all", ""), &gate).await;
        let run_b = async {
            gate.wait_for(1).await;
            harness.stage_app_events("t1", 20..30, "late").await;
            let b = harness.flush(FLUSH_TIME).await;
            gate.open();
            b
        };
        let (a, b) = tokio::join!(flush_with(&run_a, FLUSH_TIME), run_b);
        assert_eq!(b.failed, 0, "{b:?}");
        assert_eq!(b.events, 10, "only the late events are new to run B: {b:?}");
        assert_eq!((a.events, a.failed), (20, 0), "{a:?}");

        let manifest = harness
            .manifest("manifests/airkit-app-events/t1/2026-11-22/10.json")
            .await;
        assert_eq!(manifest.generation, 2);
        let everyone = &manifest.destinations["everyone"];
        assert_eq!(everyone.published, vec![1, 2]);
        assert!(everyone.pending.is_empty() && everyone.unconfirmed.is_empty());
        let files = harness.files("dest-all", "").await;
        assert_eq!(files.len(), 2, "{files:?}");
        let t1: Vec<String> = (0..30).map(|n| app_event("t1", n)).collect();
        assert_eq!(lines(&files), sorted(t1.clone()));
        assert_eq!(lines(&harness.archive("archive/").await), sorted(t1));
        assert!(keys(&harness, "staging/").await.is_empty());
        assert!(keys(&harness, "pending/").await.is_empty());
    }
}

/// Partitions larger than one invocation: the deadline stops a
/// partition's compaction, which commits its progress (a checkpoint) and
/// goes on in the next run from the manifest's cursor.
mod checkpoints {
    use super::*;

    const CLOSED: i64 = TEN + HOUR + 15 * 60_000;

    /// t1's events in three staged objects: 0..40, then 20..60 (20
    /// duplicates of the first), then 60..90; t2's 0..5 beside them.
    async fn stage_large_partition(harness: &Harness) -> Vec<String> {
        harness.stage_app_events("t1", 0..40, "c1").await;
        let mut second: Vec<SqsMessage> = (20..60)
            .map(|n| record(&format!("m{n}"), &app_event("t1", n), TEN + 1000))
            .collect();
        second.push(record("small", &app_event("t2", 0), TEN + 1000));
        harness.stage(second, "c2").await;
        harness.stage_app_events("t1", 60..90, "c3").await;
        (0..90).map(|n| app_event("t1", n)).collect()
    }

    #[tokio::test]
    async fn a_partition_larger_than_a_run_finishes_over_several_from_its_cursor() {
        let harness = Harness::start(DESTINATIONS).await;
        let expected = stage_large_partition(&harness).await;
        let mut flusher = harness.flusher();
        flusher.checkpoint_after_events = Some(25);
        let manifest_key = "manifests/airkit-app-events/t1/2026-11-22/10.json";
        let marker = "airkit-app-events/tenant=t1/dt=2026-11-22/hour=10/_SUCCESS";

        // The first run stops t1 after 25 events, inside the first object.
        let report = flush_with(&flusher, CLOSED).await;
        assert_eq!(
            (report.checkpointed, report.failed, report.events),
            (1, 0, 26),
            "{report:?}"
        );
        let manifest = harness.manifest(manifest_key).await;
        let cursor = manifest.cursor.clone().expect("a cursor");
        assert!(cursor.source.ends_with("-c1.staged"), "{cursor:?}");
        assert_eq!(cursor.lines, 25);
        assert!(manifest.consumed_chunks.is_empty());
        assert_eq!((manifest.events, manifest.parts.len()), (25, 1));
        // Committed, not yet published; the hour is not complete.
        assert_eq!(manifest.destinations["t1-hive"].pending, vec![1]);
        assert!(
            !list_keys(&harness.s3, "dest-t1", "")
                .await
                .unwrap()
                .iter()
                .any(|k| k == marker)
        );
        // t2, in the second object, is done; no object is deleted yet.
        assert_eq!(
            list_keys(&harness.s3, EXPORT, "staging/")
                .await
                .unwrap()
                .len(),
            3
        );

        // Each later run goes on from the cursor, 25 new events at a time
        // (the duplicates of the second object are not counted as new).
        let mut runs = 1;
        let mut cursors = vec![cursor];
        loop {
            let report = flush_with(&flusher, CLOSED).await;
            runs += 1;
            assert_eq!(report.failed, 0, "{report:?}");
            let manifest = harness.manifest(manifest_key).await;
            if report.checkpointed == 0 {
                assert_eq!(manifest.cursor, None);
                break;
            }
            let cursor = manifest
                .cursor
                .clone()
                .expect("a cursor while checkpointed");
            assert!(!cursors.contains(&cursor), "each run moves on: {cursor:?}");
            // The last checkpoint's parts were published before going on;
            // this one's wait for the next run.
            let hive = lines(&harness.files("dest-t1", "airkit-app-events/").await);
            assert_eq!(hive.len(), 25 * (runs - 1), "run {runs}");
            assert_eq!(manifest.destinations["t1-hive"].pending.len(), 1);
            cursors.push(cursor);
            assert!(runs < 6, "the partition should finish in four runs");
        }
        assert_eq!(runs, 4);
        assert_eq!(
            cursors
                .iter()
                .map(|c| (c.source.rsplit('-').next().unwrap().to_owned(), c.lines))
                .collect::<Vec<_>>(),
            [
                ("c1.staged".into(), 25),
                ("c2.staged".into(), 30),
                ("c3.staged".into(), 15)
            ]
        );

        let manifest = harness.manifest(manifest_key).await;
        assert_eq!((manifest.events, manifest.duplicates_dropped), (90, 20));
        let numbers: Vec<u32> = manifest.parts.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 2, 3, 4]);
        assert!(manifest.destinations.values().all(|d| d.pending.is_empty()));
        // Every event once in the archive and in each destination.
        let t1_archive: Vec<String> = lines(&harness.archive("").await)
            .into_iter()
            .filter(|line| line.contains(r#""organizationId":"t1""#))
            .collect();
        assert_eq!(t1_archive, sorted(expected.clone()));
        let hive = harness.files("dest-t1", "airkit-app-events/").await;
        assert_eq!(lines(&hive), sorted(expected.clone()));
        let mut everyone = expected;
        everyone.push(app_event("t2", 0));
        assert_eq!(
            lines(&harness.files("dest-all", "exports/").await),
            sorted(everyone)
        );
        // Complete now: marked, and the staged data is gone.
        assert!(
            list_keys(&harness.s3, "dest-t1", "")
                .await
                .unwrap()
                .iter()
                .any(|k| k == marker)
        );
        assert!(
            list_keys(&harness.s3, EXPORT, "staging/")
                .await
                .unwrap()
                .is_empty()
        );
        // One digest object, the last commit's (a bundle's range).
        let digests: Vec<String> = list_keys(&harness.s3, EXPORT, "manifests/")
            .await
            .unwrap()
            .into_iter()
            .filter(|key| key.contains(".ids-"))
            .collect();
        assert!(
            digests.is_empty(),
            "superseded digests are deleted: {digests:?}"
        );
    }

    #[tokio::test]
    async fn a_run_stopped_after_a_checkpoint_converges_to_the_same_export() {
        // One run checkpoints, the next crashes after its commit (before
        // publishing), a third finishes: the export is the same as a
        // single run's.
        let single = Harness::start(DESTINATIONS).await;
        let expected = stage_large_partition(&single).await;
        flush_with(&single.flusher(), CLOSED).await;
        let reference = lines(&single.files("dest-all", "exports/").await);

        let harness = Harness::start(DESTINATIONS).await;
        stage_large_partition(&harness).await;
        let mut checkpointing = harness.flusher();
        checkpointing.checkpoint_after_events = Some(40);
        let report = flush_with(&checkpointing, CLOSED).await;
        assert_eq!(report.checkpointed, 1, "{report:?}");
        let mut crashing = harness.flusher();
        crashing.stop_after = Some(Step::ManifestCommitted);
        let trigger = Trigger::from_payload(
            &serde_json::json!({ "time": shared::time::format_rfc3339_millis(CLOSED) }),
        )
        .unwrap();
        let _ = flusher::run(&crashing, &trigger, None).await;
        let report = flush_with(&harness.flusher(), CLOSED).await;
        assert_eq!((report.failed, report.checkpointed), (0, 0), "{report:?}");
        assert_eq!(
            lines(&harness.files("dest-all", "exports/").await),
            reference
        );
        assert!(reference.len() == expected.len() + 1);
    }
}

/// A manifest whose id digest is an object of its own (a checkpoint
/// commit's, `<HH>.ids-<generation>.<attempt>`): the digest vanishing is a
/// lost race when the manifest changed since it was read (a commit deletes
/// the digest it supersedes), and damage when it did not.
mod vanished_digest {
    use super::*;
    use s3_export::fault_proxy::{FaultPlan, FaultProxy, Gate, Hold, RequestFilter};

    const CLOSED: i64 = TEN + HOUR + 15 * 60_000;
    const MANIFEST: &str = "manifests/airkit-app-events/t1/2026-11-22/10.json";

    /// t1's events 0..40 staged, then a run that checkpoints t1 after 25
    /// of them: t1's manifest then names a digest of its own, returned.
    async fn checkpointed(harness: &Harness) -> (Vec<String>, String) {
        harness.stage_app_events("t1", 0..40, "c1").await;
        harness.stage_app_events("t2", 0..5, "c2").await;
        let mut checkpointing = harness.flusher();
        checkpointing.checkpoint_after_events = Some(25);
        let report = flush_with(&checkpointing, CLOSED).await;
        assert_eq!((report.checkpointed, report.failed), (1, 0), "{report:?}");
        let manifest = harness.manifest(MANIFEST).await;
        let digest = manifest.id_digest.clone().expect("a digest");
        assert!(
            manifest.id_digest_range.is_none() && digest.contains(".ids-000001."),
            "a checkpoint's digest, an object of its own: {digest}"
        );
        ((0..40).map(|n| app_event("t1", n)).collect(), digest)
    }

    async fn digests(harness: &Harness) -> Vec<String> {
        list_keys(&harness.s3, EXPORT, "manifests/")
            .await
            .unwrap()
            .into_iter()
            .filter(|key| key.contains(".ids-"))
            .collect()
    }

    /// Run A reads t1's manifest; its GET of the digest the manifest names
    /// is held while run B checkpoints t1 again (a commit, which deletes
    /// that digest). A then finds the digest gone under a changed manifest:
    /// it skips the partition (a lost race: not failed), commits nothing,
    /// and a later run exports each event once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_digest_deleted_by_a_commit_since_the_manifest_was_read_is_a_lost_race() {
        let harness = Harness::start(DESTINATIONS).await;
        let (t1, digest) = checkpointed(&harness).await;

        let gate = Gate::new();
        let held = digest.clone();
        let plan = FaultPlan {
            hold: Some(Hold {
                filter: RequestFilter::new(move |request| {
                    request.reads_object(EXPORT) && request.key() == held
                }),
                gate: gate.clone(),
            }),
            ..FaultPlan::none()
        };
        let proxy = FaultProxy::start(&harness.moto.endpoint(), plan)
            .await
            .unwrap();
        let run_a = Flusher::new(harness.config.clone(), proxy.s3_client(&harness.s3));
        let mut checkpointing = harness.flusher();
        checkpointing.checkpoint_after_events = Some(10);
        let run_b = async {
            gate.wait_for(1).await;
            let b = flush_with(&checkpointing, CLOSED).await;
            gate.open();
            b
        };
        let (a, b) = tokio::join!(flush_with(&run_a, CLOSED), run_b);

        assert_eq!((b.checkpointed, b.failed, b.events), (1, 0, 10), "{b:?}");
        let manifest = harness.manifest(MANIFEST).await;
        assert_eq!(manifest.generation, 2, "run B's checkpoint");
        let b_digest = manifest.id_digest.clone().unwrap();
        assert_eq!(
            digests(&harness).await,
            vec![b_digest.clone()],
            "the digest run A was reading is deleted"
        );
        assert_eq!(gate.arrived(), 1, "run A asked for that digest");
        assert_eq!(a.failed, 0, "a lost race is not a failure: {a:?}");
        let a_t1 = a.partitions.iter().find(|p| p.tenant == "t1").unwrap();
        assert_eq!(
            (a_t1.events, a_t1.error.as_deref()),
            (0, None),
            "skipped: {a:?}"
        );
        assert_eq!((a.events, a.checkpointed), (0, 0), "{a:?}");
        let after_a = harness.manifest(MANIFEST).await;
        assert_eq!(
            (after_a.generation, after_a.id_digest.as_deref()),
            (2, Some(b_digest.as_str())),
            "run A committed nothing"
        );

        // A later run goes on from run B's cursor: each event once.
        let report = harness.flush(CLOSED).await;
        assert_eq!((report.failed, report.checkpointed), (0, 0), "{report:?}");
        let manifest = harness.manifest(MANIFEST).await;
        assert_eq!((manifest.events, manifest.cursor), (40, None));
        let archived: Vec<String> = lines(&harness.archive("").await)
            .into_iter()
            .filter(|line| line.contains(r#""organizationId":"t1""#))
            .collect();
        assert_eq!(archived, sorted(t1.clone()));
        assert_eq!(
            lines(&harness.files("dest-t1", "airkit-app-events/").await),
            sorted(t1.clone())
        );
        let mut everyone = t1;
        everyone.extend((0..5).map(|n| app_event("t2", n)));
        assert_eq!(
            lines(&harness.files("dest-all", "exports/").await),
            sorted(everyone)
        );
        assert!(digests(&harness).await.is_empty());
        assert!(
            list_keys(&harness.s3, EXPORT, "staging/")
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// The digest a manifest names is missing, and the manifest is as the
    /// run read it: that is damage, not a race. t1 fails naming the
    /// digest's key and nothing of it changes; the run goes on with the
    /// other partitions (t3, staged since).
    #[tokio::test]
    async fn a_digest_missing_under_an_unchanged_manifest_fails_its_partition_naming_it() {
        let harness = Harness::start(DESTINATIONS).await;
        let (_, digest) = checkpointed(&harness).await;
        harness
            .s3
            .delete_object()
            .bucket(EXPORT)
            .key(&digest)
            .send()
            .await
            .unwrap();
        let manifest = harness.manifest(MANIFEST).await;
        let staged = list_keys(&harness.s3, EXPORT, "staging/").await.unwrap();
        harness.stage_app_events("t3", 0..3, "c3").await;

        let report = harness.flush(CLOSED).await;
        assert_eq!((report.failed, report.events), (1, 3), "{report:?}");
        let t1 = report.partitions.iter().find(|p| p.tenant == "t1").unwrap();
        let error = t1.error.as_deref().unwrap();
        assert!(
            error.contains(&format!("id digest s3://{EXPORT}/{digest}"))
                && error.contains("missing"),
            "{error}"
        );
        assert_eq!(t1.events, 0);
        // Nothing committed: the checkpoint's part was published (the
        // first thing a run going on from a checkpoint does), no more.
        let now = harness.manifest(MANIFEST).await;
        assert_eq!(
            (&now.parts, &now.id_digest, &now.cursor, now.generation),
            (
                &manifest.parts,
                &manifest.id_digest,
                &manifest.cursor,
                manifest.generation
            )
        );
        assert!(now.destinations.values().all(|d| d.published == [1]));
        assert_eq!(
            list_keys(&harness.s3, EXPORT, "staging/").await.unwrap(),
            staged,
            "t1's staged data stays; t3's is consumed"
        );
    }
}

/// A run whose bundle cannot be stored (S3 answers 500 to its PUT, past
/// the SDK's retries) gives up the commits of its whole group. A partition
/// of that group with a part large enough to be an object of its own (a
/// multipart upload at `…/part-00001.<attempt>.ndjson.gz`, written before
/// the bundle) has that object removed: no manifest will ever name it.
/// Nothing is committed or published, the staged data stays, and the next
/// run exports each event once.
#[tokio::test]
async fn a_run_whose_bundle_cannot_be_stored_removes_its_large_parts() {
    use s3_export::fault_proxy::{FaultPlan, FaultProxy, RequestFilter};

    let harness = Harness::start(EVERYONE).await;
    // About 12 MB of letters, 9 MB compressed: a part of its own.
    let big = bulky_events("big", 120, 100_000, 5);
    stage_bulky(&harness, &big).await;
    harness.stage_app_events("t1", 0..20, "small-1").await;
    harness.stage_app_events("t2", 0..20, "small-2").await;
    let staged = staging(&harness).await;
    let plan = FaultPlan {
        always: Some(RequestFilter::new(|request| {
            request.writes(EXPORT, layout::BUNDLES_PREFIX)
        })),
        ..FaultPlan::none()
    };
    let proxy = FaultProxy::start(&harness.moto.endpoint(), plan)
        .await
        .unwrap();
    let flusher = Flusher::new(harness.config.clone(), proxy.s3_client(&harness.s3));

    let report = flush_with(&flusher, CLOSED).await;
    assert_eq!(report.failed, 3, "{report:?}");
    for partition in &report.partitions {
        let error = partition.error.as_deref().unwrap();
        assert!(
            error.contains("PutObject") && error.contains(layout::BUNDLES_PREFIX),
            "{error}"
        );
    }
    assert!(
        proxy.failures_injected() >= 2,
        "the SDK retried the bundle's PUT: {:?}",
        proxy.injected()
    );
    // The large part was stored (its multipart upload completed)...
    let log = proxy.request_log();
    let completed: Vec<String> = log
        .iter()
        .filter(|request| {
            request.writes(EXPORT, "archive/airkit-app-events/big/") && request.method == "POST"
        })
        .map(|request| request.key())
        .collect();
    assert_eq!(completed.len(), 1, "{completed:?}");
    let large = &completed[0];
    assert!(
        large.contains("/big/2026-11-22/10/part-00001.") && large.ends_with(".ndjson.gz"),
        "{large}"
    );
    // ...and removed: nothing under archive/ is left of the run (its
    // bundle was never stored).
    assert_eq!(
        list_keys(&harness.s3, EXPORT, "archive/").await.unwrap(),
        Vec::<String>::new(),
        "the large part {large} is removed"
    );
    assert!(
        list_keys(&harness.s3, EXPORT, "manifests/")
            .await
            .unwrap()
            .is_empty(),
        "nothing committed"
    );
    assert!(
        list_keys(&harness.s3, "dest-all", "")
            .await
            .unwrap()
            .is_empty(),
        "nothing published"
    );
    assert_eq!(staging(&harness).await, staged, "the staged data stays");

    let report = harness.flush(CLOSED).await;
    assert_eq!(report.failed, 0, "{report:?}");
    let mut expected = big;
    expected.extend((0..20).map(|n| app_event("t1", n)));
    expected.extend((0..20).map(|n| app_event("t2", n)));
    assert_exported_once(&harness, &expected).await;
    assert!(staging(&harness).await.is_empty());
}

/// Destinations with files every few minutes (issue 18, first step).
mod intervals {
    use super::*;

    /// t1's app events every 5 minutes to `dest-all`; t2's hourly to
    /// `dest-t1`.
    const FRESH: &str = r#"{"destinations":[
      {"name":"fresh","bucket":"dest-all","tenants":["t1"],"interval":5,"layout":"hive","successMarker":true},
      {"name":"hourly","bucket":"dest-t1","tenants":["t2"],"layout":"hive","successMarker":true}]}"#;
    const MINUTE: i64 = 60_000;

    async fn listed(harness: &Harness, bucket: &str, prefix: &str) -> Vec<String> {
        list_keys(&harness.s3, bucket, prefix).await.unwrap()
    }

    fn success(files: &[String]) -> usize {
        files.iter().filter(|k| k.ends_with("_SUCCESS")).count()
    }

    /// Over an open hour, each run on the schedule flushes what t1 staged
    /// since the last and its destination gets it as new files: re-sent
    /// events are dropped, a run that stops after its commit is made good
    /// by the next, and nothing of t2 (an hourly destination's) is flushed
    /// or deleted before the hour closes. No `_SUCCESS` until then; the
    /// first run after the close writes it (with no new data for t1) and
    /// flushes t2's hour. Each event once in its destination.
    #[tokio::test]
    async fn an_interval_destination_gets_each_runs_new_events_as_the_hour_goes() {
        let harness = Harness::start(FRESH).await;
        let delivered = |files: Vec<StoredFile>| lines(&files);
        harness.stage_app_events("t1", 0..20, "a").await;
        harness.stage_app_events("t2", 0..10, "b").await;
        let first = harness.flush(TEN + 5 * MINUTE).await;
        assert_eq!((first.events, first.failed), (20, 0), "{first:?}");
        let t1 = |range: std::ops::Range<usize>| -> Vec<String> {
            sorted(range.map(|n| app_event("t1", n)).collect())
        };
        assert_eq!(delivered(harness.files("dest-all", "").await), t1(0..20));
        assert!(
            harness.files("dest-t1", "").await.is_empty(),
            "t2 is hourly"
        );
        let keys = listed(&harness, "dest-all", "").await;
        assert_eq!(success(&keys), 0, "the hour is open: {keys:?}");

        // Re-sent events and new ones; the next run's new file has the new.
        // t1's staged objects hold t1 alone: the run deletes them, which
        // tells the next run that it published, so its commit is the one
        // manifest write.
        harness.stage_app_events("t1", 15..30, "c").await;
        let recorder = s3_export::recorder::RequestRecorder::new();
        let mut flusher = harness.flusher();
        flusher.s3 = recorder.wrap(&flusher.s3);
        let second = flush_with(&flusher, TEN + 10 * MINUTE).await;
        assert_eq!((second.events, second.duplicates), (10, 5), "{second:?}");
        let manifest_puts = recorder
            .to(".json")
            .into_iter()
            .filter(|request| request.method == "PUT" && request.uri.contains("manifests"))
            .count();
        assert_eq!(manifest_puts, 1, "{:?}", recorder.to("manifests"));
        assert_eq!(delivered(harness.files("dest-all", "").await), t1(0..30));

        // A run that stops once its commit is stored; the next publishes it.
        harness.stage_app_events("t1", 30..40, "d").await;
        let mut stopping = harness.flusher();
        stopping.stop_after = Some(Step::ManifestCommitted);
        let stopped = flush_with(&stopping, TEN + 15 * MINUTE).await;
        assert_eq!(stopped.failed, 1, "{stopped:?}");
        harness.flush(TEN + 20 * MINUTE).await;
        assert_eq!(delivered(harness.files("dest-all", "").await), t1(0..40));
        let keys = listed(&harness, "dest-all", "").await;
        assert!(keys.len() >= 3, "a file a run: {keys:?}");
        assert_eq!(success(&keys), 0, "{keys:?}");
        assert!(
            !listed(&harness, EXPORT, "staging/").await.is_empty(),
            "t2's events stay staged until the hour closes"
        );

        // The first run after the close: t1's `_SUCCESS`, t2's hour.
        let closed = harness.flush(TEN + HOUR + 15 * MINUTE).await;
        assert_eq!((closed.events, closed.failed), (10, 0), "{closed:?}");
        let keys = listed(&harness, "dest-all", "").await;
        assert_eq!(success(&keys), 1, "{keys:?}");
        assert_eq!(delivered(harness.files("dest-all", "").await), t1(0..40));
        let t2: Vec<String> = sorted((0..10).map(|n| app_event("t2", n)).collect());
        assert_eq!(delivered(harness.files("dest-t1", "").await), t2);
        let hourly = listed(&harness, "dest-t1", "").await;
        assert_eq!(success(&hourly), 1, "{hourly:?}");
        assert!(listed(&harness, EXPORT, "staging/").await.is_empty());
        assert!(listed(&harness, EXPORT, "pending/").await.is_empty());
        assert_eq!(
            lines(&harness.archive("archive/").await),
            sorted([t1(0..40), t2].concat())
        );
    }
    /// A staged object holding an interval destination's tenant and an
    /// hourly one's stays staged until the hour closes; the runs before
    /// that do not plan again what an earlier run consumed of it (the
    /// coordinator reads the partition's manifest): a run with nothing new
    /// visits no partition, and one with new data reads only that.
    #[tokio::test]
    async fn an_open_hour_run_leaves_out_what_earlier_runs_consumed() {
        let harness = Harness::start(FRESH).await;
        let both = |range: std::ops::Range<usize>| -> Vec<SqsMessage> {
            range
                .flat_map(|n| {
                    [
                        record(&format!("a{n}"), &app_event("t1", n), TEN + 1000),
                        record(&format!("b{n}"), &app_event("t2", n), TEN + 1000),
                    ]
                })
                .collect()
        };
        harness.stage(both(0..10), "one-object").await;
        let first = harness.flush(TEN + 5 * MINUTE).await;
        assert_eq!((first.events, first.partitions.len()), (10, 1), "{first:?}");
        let staged = listed(&harness, EXPORT, "staging/").await;
        assert_eq!(staged.len(), 1, "t2's events keep the object: {staged:?}");

        let idle = harness.flush(TEN + 10 * MINUTE).await;
        assert!(idle.partitions.is_empty(), "nothing new: {idle:?}");
        assert_eq!(idle.failed, 0);

        // With new data: only that is read, and the pending marker the
        // first run wrote (it waits for the close) is not written again.
        harness.stage(both(10..15), "second").await;
        let recorder = s3_export::recorder::RequestRecorder::new();
        let mut flusher = harness.flusher();
        flusher.s3 = recorder.wrap(&flusher.s3);
        let next = flush_with(&flusher, TEN + 15 * MINUTE).await;
        assert_eq!((next.events, next.duplicates), (5, 0), "{next:?}");
        assert_eq!(next.partitions.len(), 1, "{next:?}");
        let marker_puts = recorder
            .to("/pending/")
            .into_iter()
            .filter(|request| request.method == "PUT")
            .count();
        assert_eq!(marker_puts, 0, "{:?}", recorder.to("/pending/"));
        assert!(
            !recorder.to("/manifests/").is_empty(),
            "requests are recorded"
        );
        assert_eq!(listed(&harness, EXPORT, "pending/").await.len(), 1);

        // The first run after the close, with the hour's last events: each
        // destination's `_SUCCESS` written once (the interval one's by its
        // publish, not again for the closed hour).
        harness.stage(both(15..20), "last").await;
        let recorder = s3_export::recorder::RequestRecorder::new();
        let mut flusher = harness.flusher();
        flusher.s3 = recorder.wrap(&flusher.s3);
        let closed = flush_with(&flusher, TEN + HOUR + 15 * MINUTE).await;
        assert_eq!((closed.events, closed.failed), (25, 0), "{closed:?}");
        let markers: Vec<String> = recorder
            .to("_SUCCESS")
            .into_iter()
            .filter(|request| request.method == "PUT")
            .map(|request| request.uri)
            .collect();
        assert_eq!(markers.len(), 2, "one each: {markers:?}");
        assert!(listed(&harness, EXPORT, "staging/").await.is_empty());
        let t1: Vec<String> = sorted((0..20).map(|n| app_event("t1", n)).collect());
        assert_eq!(lines(&harness.files("dest-all", "").await), t1);
    }

    /// t1's app events to `dest-all` every 5 minutes, and to `dest-t1`
    /// hourly with an `_export` object on each line (a rewrite, not the
    /// archive's bytes).
    const BOTH: &str = r#"{"destinations":[
      {"name":"fresh","bucket":"dest-all","tenants":["t1"],"interval":5,"layout":"hive","successMarker":true},
      {"name":"hourly","bucket":"dest-t1","tenants":["t1"],"layout":"hive","successMarker":true,"includeMetadata":true}]}"#;

    /// A line without its `_export` object, as both destinations hold it.
    fn event_of(line: &str) -> String {
        let mut event: Value = serde_json::from_str(line).unwrap();
        event.as_object_mut().unwrap().remove("_export");
        event.to_string()
    }

    fn events_of(files: &[StoredFile]) -> Vec<String> {
        sorted(
            files
                .iter()
                .flat_map(|f| f.lines.iter())
                .map(|l| event_of(l))
                .collect(),
        )
    }

    /// The files of `hour` (`10` or `11`) in a hive destination.
    async fn hour_files(harness: &Harness, bucket: &str, hour: u32) -> Vec<StoredFile> {
        let mut files = harness.files(bucket, "").await;
        files.retain(|file| file.key.contains(&format!("hour={hour}/")));
        files
    }

    /// Stages t1's app events `range` sent at `sent`, one message each with
    /// id `<message>-<n>` (the same ids again: a redelivery; new ones: a
    /// re-send), through a batcher invocation of its own.
    async fn send_at(harness: &Harness, range: std::ops::Range<usize>, message: &str, sent: i64) {
        let records: Vec<SqsMessage> = range
            .map(|n| record(&format!("{message}-{n}"), &app_event("t1", n), sent))
            .collect();
        let batcher = Batcher::new(harness.config.clone(), harness.s3.clone());
        let invocation = format!("{message}-{sent}");
        let response = batcher::process(&batcher, &records, sent, &invocation)
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }

    /// A manual flush with `until` closes the hours it reaches at once (no
    /// grace), in a deployment with an interval destination too: the hourly
    /// destination of a tenant flushed while its hour was open gets the
    /// hour as one file, each destination its `_SUCCESS`, and a scheduled
    /// run inside the grace afterwards finds nothing to do.
    #[tokio::test]
    async fn a_manual_flush_with_until_closes_an_open_hour_for_both_destinations() {
        let harness = Harness::start(BOTH).await;
        send_at(&harness, 0..10, "m", TEN + 1000).await;
        let open = harness.flush(TEN + 5 * MINUTE).await;
        assert_eq!((open.events, open.failed), (10, 0), "{open:?}");
        assert!(hour_files(&harness, "dest-t1", 10).await.is_empty());

        send_at(&harness, 10..20, "m", TEN + 30 * MINUTE).await;
        let until = shared::time::format_rfc3339_millis(TEN + HOUR);
        let manual =
            Trigger::from_payload(&serde_json::json!({ "flush": { "until": until } })).unwrap();
        let report = flusher::run(&harness.flusher(), &manual, None)
            .await
            .unwrap();
        assert_eq!((report.events, report.failed), (10, 0), "{report:?}");
        let expected: Vec<String> = sorted((0..20).map(|n| app_event("t1", n)).collect());
        let fresh = hour_files(&harness, "dest-all", 10).await;
        assert_eq!(lines(&fresh), expected);
        assert_eq!(fresh.len(), 2, "a file a run");
        let hourly = hour_files(&harness, "dest-t1", 10).await;
        let normalized = sorted(expected.iter().map(|line| event_of(line)).collect());
        assert!(events_of(&hourly) == normalized, "the hour, hourly");
        assert_eq!(hourly.len(), 1, "one file");
        for bucket in ["dest-all", "dest-t1"] {
            let keys = listed(&harness, bucket, "").await;
            assert_eq!(success(&keys), 1, "{bucket}: {keys:?}");
        }
        assert!(listed(&harness, EXPORT, "pending/").await.is_empty());

        let later = harness.flush(TEN + HOUR + 5 * MINUTE).await;
        assert!(later.partitions.is_empty(), "{later:?}");
        assert_eq!(hour_files(&harness, "dest-all", 10).await.len(), 2);
    }

    /// Two destinations of one stream and tenant, one every 5 minutes and
    /// one hourly, over two hours of traffic staged every 5 minutes with
    /// redeliveries and re-sends, a run stopped after its commit while the
    /// hour is open and one stopped after publishing to some destinations
    /// at the close. The 5-minute destination gets a new file each run
    /// while the hour is open; the hourly one nothing until the close, then
    /// the hour's parts grouped into one file (never a file per small
    /// part); each event once in each, the same events in both, one
    /// `_SUCCESS` each per hour and only after the close.
    #[tokio::test]
    async fn an_interval_and_an_hourly_destination_of_one_tenant_get_the_same_events() {
        let harness = Harness::start(BOTH).await;
        let mut sent_so_far = Vec::new();
        for hour in 0..2i64 {
            let start = TEN + hour * HOUR;
            let label = 10 + hour as u32;
            let mut files_before = 0;
            for run in 0..12i64 {
                let first = ((hour * 12 + run) * 10) as usize;
                let at = start + run * 5 * MINUTE + 1_000;
                send_at(&harness, first..first + 10, "m", at).await;
                if run % 3 == 1 {
                    // The same messages delivered again.
                    send_at(&harness, first..first + 10, "m", at + 10).await;
                }
                if run >= 2 && run % 4 == 2 {
                    // Producers sending events of this hour again.
                    let again = format!("again{hour}{run}");
                    send_at(&harness, first - 15..first - 5, &again, at + 20).await;
                }
                sent_so_far.extend((first..first + 10).map(|n| app_event("t1", n)));
                let now = start + (run + 1) * 5 * MINUTE;
                if hour == 0 && run == 6 {
                    let mut stopping = harness.flusher();
                    stopping.stop_after = Some(Step::ManifestCommitted);
                    let stopped = flush_with(&stopping, now).await;
                    assert_eq!(stopped.failed, 1, "{stopped:?}");
                    continue;
                }
                if run == 11 {
                    // The hour's last run comes after its close.
                    continue;
                }
                let report = harness.flush(now).await;
                assert_eq!(report.failed, 0, "run {run} of hour {label}: {report:?}");
                // Every event sent so far of this hour is in the 5-minute
                // destination (those of the run stopped above came with the
                // next), once.
                let fresh = hour_files(&harness, "dest-all", label).await;
                let expected: Vec<String> = (hour as usize * 120..first + 10)
                    .map(|n| app_event("t1", n))
                    .collect();
                assert_eq!(lines(&fresh), sorted(expected), "run {run} of hour {label}");
                assert!(fresh.len() > files_before, "a new file, run {run}");
                files_before = fresh.len();
                assert!(
                    hour_files(&harness, "dest-t1", label).await.is_empty(),
                    "the hourly destination waits for the close (run {run} of hour {label})"
                );
                let keys = listed(&harness, "dest-all", "").await;
                let open_markers = keys
                    .iter()
                    .filter(|k| k.contains(&format!("hour={label}/")) && k.ends_with("_SUCCESS"))
                    .count();
                assert_eq!(open_markers, 0, "{keys:?}");
            }
        }
        // Hour 10 closed at 11:10, hour 11 at 12:10: the first run after
        // the second close stops once some destination has its files; the
        // next finishes.
        let mut stopping = harness.flusher();
        stopping.stop_after = Some(Step::SomePublished);
        let stopped = flush_with(&stopping, TEN + 2 * HOUR + 15 * MINUTE).await;
        assert!(stopped.failed >= 1, "{stopped:?}");
        let last = harness.flush(TEN + 2 * HOUR + 20 * MINUTE).await;
        assert_eq!(last.failed, 0, "{last:?}");

        for (hour, label) in [(0usize, 10u32), (1, 11)] {
            let expected: Vec<String> = sorted(
                (hour * 120..hour * 120 + 120)
                    .map(|n| app_event("t1", n))
                    .collect(),
            );
            let fresh = hour_files(&harness, "dest-all", label).await;
            let hourly = hour_files(&harness, "dest-t1", label).await;
            assert_eq!(lines(&fresh), expected, "hour {label}, every 5 minutes");
            let normalized = sorted(expected.iter().map(|line| event_of(line)).collect());
            assert!(events_of(&hourly) == normalized, "hour {label}, hourly");
            assert!(fresh.len() >= 10, "a file a run: {}", fresh.len());
            let keys: Vec<&str> = hourly.iter().map(|f| f.key.as_str()).collect();
            assert_eq!(hourly.len(), 1, "the hour's parts in one file: {keys:?}");
            assert!(
                hourly[0].lines.iter().all(|l| l.contains(r#""_export":{"#)),
                "each line rewritten"
            );
            for bucket in ["dest-all", "dest-t1"] {
                let keys = listed(&harness, bucket, "").await;
                let markers = keys
                    .iter()
                    .filter(|k| k.contains(&format!("hour={label}/")) && k.ends_with("_SUCCESS"))
                    .count();
                assert_eq!(markers, 1, "{bucket} hour {label}: {keys:?}");
            }
        }
        assert_eq!(
            lines(&harness.archive("archive/").await),
            sorted(sent_so_far)
        );
        assert!(listed(&harness, EXPORT, "staging/").await.is_empty());
        assert!(listed(&harness, EXPORT, "pending/").await.is_empty());
        let mut manifests = listed(&harness, EXPORT, "manifests/").await;
        manifests.retain(|key| key.ends_with(".json"));
        assert_eq!(manifests.len(), 2, "{manifests:?}");
        for key in manifests {
            let manifest = harness.manifest(&key).await;
            assert_eq!(manifest.version, shared::manifest::GROUPED_MANIFEST_VERSION);
            let state = &manifest.destinations["hourly"];
            assert_eq!(state.files.len(), 1, "{state:?}");
            assert!(
                state.held.is_empty() && state.pending.is_empty(),
                "{state:?}"
            );
            assert_eq!(state.published.len(), manifest.parts.len());
        }
    }
}
