//! `s3-export status` against moto: hours flushed by the real flusher into a
//! destination that works, one that refuses, and one added later, listed
//! from the manifests by the library and by the compiled command through
//! the SDK's standard `AWS_ENDPOINT_URL`. And what is still staged, in both
//! staging formats (staged objects and older chunks in one hour, a damaged
//! object beside them): `status --staging` per hour, `s3-export inspect`
//! per object and partition.

use aws_lambda_events::event::sqs::SqsMessage;
use batcher::Batcher;
use batcher::records::sqs_record;
use flusher::{Flusher, Trigger};
use s3_export::fault_proxy::{FaultPlan, FaultProxy};
use s3_export::inspect::{self, StagedPartition, StagingFormat};
use s3_export::moto::MotoServer;
use s3_export::status::{self, StagedHour, StatusOptions, StatusRow};
use serde_json::{Value, json};
use shared::Config;
use shared::layout;
use shared::partition::{Hour, PartitionKey, TenantKey};
use shared::staged::StagedWriter;

const EXPORT: &str = "exports";
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:events";
/// 2026-11-22T10:00:00Z
const TEN: i64 = 1_795_341_600_000;
const HOUR: i64 = 3_600_000;

const FLUSHED_WITH: &str = r#"{"destinations":[
  {"name":"lake","bucket":"dest-lake","shared":true},
  {"name":"gone","bucket":"dest-gone","tenants":["t1"]}]}"#;
const NOW_WITH: &str = r#"{"destinations":[
  {"name":"lake","bucket":"dest-lake","shared":true},
  {"name":"gone","bucket":"dest-gone","tenants":["t1"]},
  {"name":"later","bucket":"dest-later","shared":true}]}"#;

fn config(document: &str) -> Config {
    Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
        Some(document),
    )
    .unwrap()
}

async fn pipeline(moto: &MotoServer) -> aws_sdk_s3::Client {
    let s3 = moto.s3_client().await;
    for bucket in [EXPORT, "dest-lake", "dest-later"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let batcher = Batcher::new(config(FLUSHED_WITH), s3.clone());
    for (hour, tenant, count) in [(10, "t1", 3), (10, "t2", 2), (11, "t1", 1)] {
        let records: Vec<SqsMessage> = (0..count)
            .map(|n| {
                let body = format!(
                    r#"{{"organizationId":"{tenant}","eventTime":"2026-11-22T{hour}:0{n}:00Z","type":"step_enter"}}"#
                );
                sqs_record(&format!("{tenant}-{hour}-{n}"), &body, TEN + (hour - 10) * HOUR + 1000, QUEUE_ARN)
            })
            .collect();
        batcher::process(&batcher, &records, TEN, &format!("r-{hour}-{tenant}"))
            .await
            .unwrap();
    }
    let trigger = Trigger::from_payload(&json!({"time": "2026-11-22T12:15:00Z"})).unwrap();
    let report = flusher::run(
        &Flusher::new(config(FLUSHED_WITH), s3.clone()),
        &trigger,
        None,
    )
    .await
    .unwrap();
    assert_eq!(report.failed, 0);
    s3
}

fn summary(rows: &[StatusRow]) -> Vec<(String, String, String, u64, String)> {
    rows.iter()
        .map(|r| {
            (
                r.hour[11..13].to_owned(),
                r.tenant.clone(),
                r.destination.clone(),
                r.events,
                r.status.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn status_lists_each_destination_and_hour_from_the_manifests() {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = pipeline(&moto).await;
    let rows = status::rows(&s3, &config(NOW_WITH), &StatusOptions::default())
        .await
        .unwrap();
    let row = |hour: &str, tenant: &str, destination: &str, events: u64, status: &str| {
        (
            hour.to_owned(),
            tenant.to_owned(),
            destination.to_owned(),
            events,
            status.to_owned(),
        )
    };
    assert_eq!(
        summary(&rows),
        [
            row("10", "t1", "gone", 3, "pending"),
            row("10", "t1", "lake", 3, "published"),
            row("10", "t1", "later", 3, "not-sent"),
            row("10", "t2", "lake", 2, "published"),
            row("10", "t2", "later", 2, "not-sent"),
            row("11", "t1", "gone", 1, "pending"),
            row("11", "t1", "lake", 1, "published"),
            row("11", "t1", "later", 1, "not-sent"),
        ]
    );
    let gone = &rows[0];
    assert_eq!((gone.pending, gone.published, gone.failures), (1, 0, 1));
    assert!(
        gone.last_error.as_deref().unwrap().contains("NoSuchBucket"),
        "{gone:?}"
    );
    assert!(rows.iter().all(|r| r.bytes > 0 && r.parts == 1));

    let only = StatusOptions {
        destination: Some("lake".into()),
        tenant: Some("t1".into()),
        from: Some("2026-11-22T11:00:00Z".into()),
        to: Some("2026-11-22T12:00:00Z".into()),
        ..StatusOptions::default()
    };
    let rows = status::rows(&s3, &config(NOW_WITH), &only).await.unwrap();
    assert_eq!(summary(&rows), [row("11", "t1", "lake", 1, "published")]);

    let bad = StatusOptions {
        from: Some("2026-11-22T12:00:00Z".into()),
        to: Some("2026-11-22T11:00:00Z".into()),
        ..StatusOptions::default()
    };
    let error = status::rows(&s3, &config(NOW_WITH), &bad)
        .await
        .unwrap_err();
    assert!(error.to_string().starts_with("`--to`:"), "{error}");
}

#[tokio::test]
async fn a_commit_whose_run_stopped_before_publishing_shows_pending_until_a_run_publishes_it() {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = moto.s3_client().await;
    for bucket in [EXPORT, "dest-lake"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let lake = r#"{"destinations":[{"name":"lake","bucket":"dest-lake","shared":true}]}"#;
    let batcher = Batcher::new(config(lake), s3.clone());
    let body = r#"{"organizationId":"t1","eventTime":"2026-11-22T10:01:00Z","type":"step_enter"}"#;
    let records = [sqs_record("m1", body, TEN + 1000, QUEUE_ARN)];
    batcher::process(&batcher, &records, TEN, "r1")
        .await
        .unwrap();
    let trigger = Trigger::from_payload(&json!({"time": "2026-11-22T11:15:00Z"})).unwrap();
    let mut crashing = Flusher::new(config(lake), s3.clone());
    crashing.stop_after = Some(flusher::Step::ManifestCommitted);
    let report = flusher::run(&crashing, &trigger, None).await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    // The commit lists its part as published, unconfirmed: the staged
    // object it consumed is still there, so it is not.
    let key = layout::manifest_key(&PartitionKey {
        stream: "airkit-app-events".into(),
        tenant: TenantKey::encode("t1"),
        hour: Hour::containing(TEN),
    });
    let stored: shared::manifest::Manifest =
        serde_json::from_slice(&inspect::read_object(&s3, EXPORT, &key).await.unwrap()).unwrap();
    assert_eq!(stored.destinations["lake"].unconfirmed, [1]);
    let statuses = |rows: Vec<StatusRow>| -> Vec<(String, usize, usize)> {
        rows.into_iter()
            .map(|r| (r.status, r.published, r.pending))
            .collect()
    };
    let rows = status::rows(&s3, &config(lake), &StatusOptions::default())
        .await
        .unwrap();
    assert_eq!(statuses(rows), [("pending".to_owned(), 0, 1)]);

    let report = flusher::run(&Flusher::new(config(lake), s3.clone()), &trigger, None)
        .await
        .unwrap();
    assert_eq!((report.failed, report.partitions[0].published), (0, 1));
    let rows = status::rows(&s3, &config(lake), &StatusOptions::default())
        .await
        .unwrap();
    assert_eq!(statuses(rows), [("published".to_owned(), 1, 0)]);
}

/// The `s3-export` command against `moto`, with the standard environment.
fn command(moto: &MotoServer, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_s3-export"))
        .args(args)
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("S3_FORCE_PATH_STYLE", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("EXPORT_CONFIG")
        .env_remove("EXPORT_BUCKET")
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_status_command_reads_the_bucket_through_aws_endpoint_url() {
    let moto = MotoServer::start().await.expect("moto_server starts");
    pipeline(&moto).await;
    let command = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_s3-export"))
            .args(args)
            .env("AWS_ENDPOINT_URL", moto.endpoint())
            .env("S3_FORCE_PATH_STYLE", "true")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env_remove("EXPORT_CONFIG")
            .env_remove("EXPORT_BUCKET")
            .output()
            .unwrap()
    };
    let output = command(&["status", "--bucket", EXPORT, "--config", NOW_WITH, "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows.len(), 8);
    assert_eq!(rows[0]["destination"], "gone");
    assert_eq!(rows[0]["status"], "pending");

    let output = command(&[
        "status",
        "--bucket",
        EXPORT,
        "--config",
        NOW_WITH,
        "--destination",
        "later",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("HOUR"), "{text}");
    assert!(
        text.contains("2026-11-22T10:00:00.000Z  airkit-app-events  t1      later        3"),
        "{text}"
    );
    assert!(text.contains("not-sent (added later: backfill)"), "{text}");
    assert!(
        text.ends_with("3 row(s): 0 published, 0 pending, 3 not sent\n"),
        "{text}"
    );

    let output = command(&["status", "--config", "{\"destinations\": 5}"]);
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("destinations"), "{error}");
}

fn partition(hour: i64, stream: &str, tenant: &str) -> PartitionKey {
    PartitionKey {
        hour: Hour::containing(hour),
        stream: stream.to_owned(),
        tenant: TenantKey::encode(tenant),
    }
}

/// A staged line: the event, then its provenance.
fn staged_line(event: &str, n: usize) -> String {
    format!("{event}\t{}\tm-{n}", TEN + 1)
}

/// Hour 10 holds, in this order: an older chunk of app/t1, a staged object
/// (app/t1 in two shards, app/t2, audit/t1), a staged object cut short
/// (truncated: no trailer), and a file of neither layout; hour 11 one more
/// staged object. Returns the keys of the chunk, the damaged object and
/// the whole hour-10 object.
async fn stage_both_formats(s3: &aws_sdk_s3::Client) -> (String, String, String) {
    s3.create_bucket().bucket(EXPORT).send().await.unwrap();
    let put = |key: String, bytes: Vec<u8>| async move {
        s3.put_object()
            .bucket(EXPORT)
            .key(&key)
            .body(bytes.into())
            .send()
            .await
            .unwrap();
        key
    };
    let chunk = put(
        layout::staging_chunk_key(&partition(TEN, "app", "t1"), TEN + 1, "old"),
        shared::encode::stored_gzip(
            format!(
                "{}\n{}\n",
                staged_line("{\"c\":1}", 1),
                staged_line("{\"c\":2}", 2)
            )
            .as_bytes(),
        ),
    )
    .await;
    let object = |segments: &[(&str, &str, u32, u32, usize)], hour: i64| {
        let mut writer = StagedWriter::new(1);
        for (stream, tenant, shard, shards, events) in segments {
            writer.begin_segment(stream, &TenantKey::encode(tenant), *shard, *shards);
            for n in 0..*events {
                let line = staged_line(&format!(r#"{{"{stream}":"{tenant}","n":{n}}}"#), n);
                writer.push_line_parts(&[line.as_bytes()]);
            }
        }
        writer.finish(Hour::containing(hour))
    };
    let staged = put(
        layout::staged_object_key(Hour::containing(TEN), TEN + 2, "new", 0),
        object(
            &[
                ("app", "t1", 0, 2, 3),
                ("app", "t1", 1, 2, 2),
                ("app", "t2", 0, 1, 1),
                ("audit", "t1", 0, 1, 4),
            ],
            TEN,
        ),
    )
    .await;
    let whole = object(&[("app", "t3", 0, 1, 7)], TEN);
    let damaged = put(
        layout::staged_object_key(Hour::containing(TEN), TEN + 3, "cut", 0),
        whole[..whole.len() - 10].to_vec(),
    )
    .await;
    put(
        "staging/2026-11-22/10/notes.txt".to_owned(),
        b"hello".to_vec(),
    )
    .await;
    put(
        layout::staged_object_key(Hour::containing(TEN + HOUR), TEN + HOUR + 1, "later", 0),
        object(&[("app", "t1", 0, 1, 2)], TEN + HOUR),
    )
    .await;
    (chunk, damaged, staged)
}

#[tokio::test]
async fn inspect_reads_staged_objects_and_chunks_of_one_hour_and_names_a_damaged_object() {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = moto.s3_client().await;
    let (chunk, damaged, staged) = stage_both_formats(&s3).await;

    let objects = inspect::read_staging(&s3, EXPORT, "staging/2026-11-22/10/")
        .await
        .unwrap();
    let summary: Vec<(&str, StagingFormat, usize, bool)> = objects
        .iter()
        .map(|o| (o.key.as_str(), o.format, o.events(), o.error.is_some()))
        .collect();
    assert_eq!(
        summary,
        [
            (staged.as_str(), StagingFormat::Staged, 10, false),
            (damaged.as_str(), StagingFormat::Staged, 0, true),
            (chunk.as_str(), StagingFormat::Chunk, 2, false),
            (
                "staging/2026-11-22/10/notes.txt",
                StagingFormat::Other,
                0,
                true
            ),
        ]
    );
    assert!(
        objects[1].error.as_deref().unwrap().contains("magic"),
        "{:?}",
        objects[1]
    );
    // Each segment's events, read back event by event.
    let segment = &objects[0].sources[1];
    assert_eq!(segment.shard, Some((1, 2)));
    assert_eq!(
        segment.lines,
        [
            staged_line(r#"{"app":"t1","n":0}"#, 0),
            staged_line(r#"{"app":"t1","n":1}"#, 1)
        ]
    );
    let partitions = inspect::staged_partitions(&objects);
    let staged_in = |stream, tenant| partitions[&partition(TEN, stream, tenant)].clone();
    let counts = |events, objects, chunks| StagedPartition {
        events,
        objects,
        chunks,
    };
    assert_eq!(staged_in("app", "t1"), counts(7, 1, 1));
    assert_eq!(staged_in("app", "t2"), counts(1, 1, 0));
    assert_eq!(staged_in("audit", "t1"), counts(4, 1, 0));
    assert_eq!(partitions.len(), 3);

    // Reading every staged event fails naming the damaged object…
    let error = inspect::read_staged_events(&s3, EXPORT).await.unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with(&format!("s3://{EXPORT}/{damaged}: ")),
        "{error}"
    );

    // …and the command lists it beside the others, and exits 1.
    let output = command(&moto, &["inspect", "--bucket", EXPORT]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains(&format!("{damaged}  staged  ")) && text.contains("UNREADABLE: its trailer"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{staged}  staged  ")) && text.contains("10 event(s)"),
        "{text}"
    );
    assert!(
        text.contains("  segment app/t1 shard 1 of 2: 2 event(s)"),
        "{text}"
    );
    assert!(text.contains(&format!("{chunk}  chunk  ")), "{text}");
    assert!(
        text.contains("2026-11-22T10:00:00.000Z  app     t1      7       1        1"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "3 staged object(s), 1 chunk(s), 1 other; 2 unreadable; 14 event(s) in 4 partition(s)\n"
        ),
        "{text}"
    );

    let output = command(
        &moto,
        &["inspect", "--bucket", EXPORT, "--prefix", "errors/"],
    );
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("`--prefix`: the prefix `errors/` is not under `staging/`"),
        "{error}"
    );

    let missing = std::env::temp_dir().join("no-such-object.staged");
    let output = command(&moto, &["inspect", "--file", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains(&format!("reading {}", missing.display())),
        "{error}"
    );

    // Without the damaged object, every event once, provenance cut.
    s3.delete_object()
        .bucket(EXPORT)
        .key(&damaged)
        .send()
        .await
        .unwrap();
    let sources = inspect::read_staged_events(&s3, EXPORT).await.unwrap();
    let mut events: Vec<String> = sources.into_iter().flat_map(|s| s.lines).collect();
    events.sort();
    assert_eq!(events.len(), 14);
    assert_eq!(events[0], r#"{"app":"t1","n":0}"#);
    assert!(events.contains(&r#"{"c":2}"#.to_owned()));

    // A downloaded object, read from a file.
    let file = std::env::temp_dir().join(format!("inspect-{}.staged", std::process::id()));
    let bytes = inspect::read_object(&s3, EXPORT, &staged).await.unwrap();
    std::fs::write(&file, bytes).unwrap();
    let output = command(
        &moto,
        &[
            "inspect",
            "--file",
            file.to_str().unwrap(),
            "--lines",
            "--json",
        ],
    );
    std::fs::remove_file(&file).unwrap();
    assert!(output.status.success(), "{output:?}");
    let read: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(read["objects"][0]["events"], 10);
    assert_eq!(read["objects"][0]["sources"].as_array().unwrap().len(), 4);
    assert_eq!(
        read["objects"][0]["sources"][1]["lines"],
        json!([
            staged_line(r#"{"app":"t1","n":0}"#, 0),
            staged_line(r#"{"app":"t1","n":1}"#, 1)
        ])
    );
    assert_eq!(read["partitions"][0]["tenant"], "t1");
}

#[tokio::test]
async fn status_staging_counts_each_hours_objects_from_their_indexes_and_its_chunks() {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = moto.s3_client().await;
    let (_, damaged, _) = stage_both_formats(&s3).await;
    let hours = status::staged_hours(&s3, EXPORT, &StatusOptions::default())
        .await
        .unwrap();
    let hour = |hour: &str, objects, chunks, events, unreadable: Vec<String>| StagedHour {
        hour: hour.to_owned(),
        objects,
        chunks,
        events,
        unreadable,
    };
    let unreadable = format!(
        "s3://{EXPORT}/{damaged}: its trailer does not end in the staged object magic (truncated, or not a staged object)"
    );
    assert_eq!(
        hours,
        [
            hour(
                "2026-11-22T10:00:00.000Z",
                1,
                1,
                10,
                vec![unreadable.clone()]
            ),
            hour("2026-11-22T11:00:00.000Z", 1, 0, 2, vec![]),
        ]
    );
    // One tenant: only the objects and chunks holding it, and its events.
    let only = StatusOptions {
        stream: Some("app".into()),
        tenant: Some("t1".into()),
        from: Some("2026-11-22T10:00:00Z".into()),
        to: Some("2026-11-22T11:00:00Z".into()),
        ..StatusOptions::default()
    };
    let hours = status::staged_hours(&s3, EXPORT, &only).await.unwrap();
    assert_eq!(
        hours,
        [hour("2026-11-22T10:00:00.000Z", 1, 1, 5, vec![unreadable])]
    );

    let output = command(
        &moto,
        &["status", "--staging", "--bucket", EXPORT, "--config", "{}"],
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("2026-11-22T10:00:00.000Z        1        1         10"),
        "{text}"
    );
    assert!(
        text.contains(&format!("UNREADABLE s3://{EXPORT}/{damaged}: its trailer")),
        "{text}"
    );
    assert!(text.ends_with("2 hour(s) staged: 2 staged object(s) with 12 event(s), 1 chunk(s) (events not counted), 1 unreadable\n"), "{text}");
}

#[tokio::test]
async fn status_staging_reads_an_index_longer_than_the_tail_with_a_second_get() {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = moto.s3_client().await;
    s3.create_bucket().bucket(EXPORT).send().await.unwrap();
    // 10,000 tenants of scattered names: an index larger than the tail
    // read first.
    let mut writer = StagedWriter::new(1);
    for tenant in 0..10_000u64 {
        let name = format!(
            "{tenant:05}-{:016x}",
            tenant.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        );
        writer.begin_segment("app", &TenantKey::encode(&name), 0, 1);
        writer.push_line_parts(&[staged_line(&format!(r#"{{"t":{tenant}}}"#), 0).as_bytes()]);
    }
    let bytes = writer.finish(Hour::containing(TEN));
    let object_len = bytes.len() as u64;
    let expected_index = shared::staged::read_index(&bytes).unwrap();
    assert!(object_len - expected_index.data_end() > shared::staged::TAIL_READ_BYTES);
    let key = layout::staged_object_key(Hour::containing(TEN), TEN + 5, "wide", 0);
    s3.put_object()
        .bucket(EXPORT)
        .key(&key)
        .body(bytes.into())
        .send()
        .await
        .unwrap();
    let index = inspect::read_staged_index(&s3, EXPORT, &key, object_len)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(index, expected_index);
    // An empty object has no tail to read: it is unreadable, not an error
    // of the whole listing.
    let empty = layout::staged_object_key(Hour::containing(TEN), TEN + 6, "empty", 0);
    s3.put_object()
        .bucket(EXPORT)
        .key(&empty)
        .body(Vec::new().into())
        .send()
        .await
        .unwrap();
    // An older chunk is counted from its key, never read.
    let chunk = layout::staging_chunk_key(&partition(TEN, "app", "t1"), TEN + 7, "old");
    s3.put_object()
        .bucket(EXPORT)
        .key(&chunk)
        .body(shared::encode::stored_gzip(b"{}\n").into())
        .send()
        .await
        .unwrap();
    // Through the fault proxy, whose log is what reached S3.
    let proxy = FaultProxy::start(&moto.endpoint(), FaultPlan::none())
        .await
        .unwrap();
    let through_proxy = proxy.s3_client(&s3);
    let hours = status::staged_hours(&through_proxy, EXPORT, &StatusOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (hours[0].objects, hours[0].events, hours[0].chunks),
        (1, 10_000, 1)
    );
    assert_eq!(
        hours[0].unreadable,
        [format!(
            "s3://{EXPORT}/{empty}: the object is 0 bytes, shorter than a staged object's trailer (24)"
        )]
    );
    let gets: Vec<(String, Option<String>)> = proxy
        .request_log()
        .into_iter()
        .filter(|request| request.reads_object(EXPORT))
        .map(|request| (request.key(), request.range))
        .collect();
    let index_start = expected_index.data_end();
    assert_eq!(
        gets,
        [
            (
                key.clone(),
                Some(format!("bytes={}-{}", object_len - 65536, object_len - 1))
            ),
            (key, Some(format!("bytes={index_start}-{}", object_len - 1))),
        ],
        "the tail, then the index; no GET of the empty object (its listed size says it) or of the chunk"
    );
}

#[tokio::test]
async fn inspect_reads_what_the_batcher_staged_event_by_event() {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = moto.s3_client().await;
    s3.create_bucket().bucket(EXPORT).send().await.unwrap();
    let batcher = Batcher::new(config(FLUSHED_WITH), s3.clone());
    let mut sent: Vec<(String, String)> = Vec::new();
    let records: Vec<SqsMessage> = (0..30)
        .map(|n| {
            let tenant = format!("t{}", n % 3);
            let body = format!(
                r#"{{"organizationId":"{tenant}","eventTime":"2026-11-22T10:{:02}:00Z","type":"step_enter","n":{n}}}"#,
                n % 60
            );
            sent.push((tenant, body.clone()));
            sqs_record(&format!("m-{n}"), &body, TEN + 1000, QUEUE_ARN)
        })
        .collect();
    batcher::process(&batcher, &records, TEN, "r-1")
        .await
        .unwrap();

    let objects = inspect::read_staging(&s3, EXPORT, "staging/")
        .await
        .unwrap();
    assert_eq!(objects.len(), 1, "one invocation, one hour: one object");
    assert_eq!(
        (objects[0].format, objects[0].error.as_deref()),
        (StagingFormat::Staged, None)
    );
    let tenants: Vec<&str> = objects[0]
        .sources
        .iter()
        .map(|s| s.partition.tenant.as_str())
        .collect();
    assert_eq!(tenants, ["t0", "t1", "t2"]);
    let events = inspect::read_staged_events(&s3, EXPORT).await.unwrap();
    for source in &events {
        let want: Vec<&String> = sent
            .iter()
            .filter(|(tenant, _)| tenant == source.partition.tenant.as_str())
            .map(|(_, body)| body)
            .collect();
        let got: Vec<&String> = source.lines.iter().collect();
        assert_eq!(got, want, "{:?}", source.partition);
    }
}

/// `status --runs`: a coordinator run is listed with its items done of
/// those it queued, and the staged objects it will delete, until its last
/// worker finishes and removes its records.
#[tokio::test]
async fn status_runs_lists_a_coordinator_run_until_its_last_item_is_flushed() {
    use flusher::coordinator::{FlushQueue, coordinate};

    let moto = MotoServer::start().await.unwrap();
    let s3 = moto.s3_client().await;
    for bucket in [EXPORT, "dest-lake"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let document = r#"{"workItemBytes": 1024, "destinations":[{"name":"lake","bucket":"dest-lake","shared":true}]}"#;
    let batcher = Batcher::new(config(document), s3.clone());
    // Random letters, which zstd cannot shrink: a tenant's segment is over
    // the 1 KiB items are made of, so each tenant is an item.
    let mut rng = fastrand::Rng::with_seed(5);
    let records: Vec<SqsMessage> = ["t1", "t2", "t3"]
        .iter()
        .flat_map(|tenant| (0..10).map(move |n| (tenant, n)))
        .map(|(tenant, n)| {
            let pad: String = (0..200).map(|_| rng.alphanumeric()).collect();
            let body = format!(
                r#"{{"organizationId":"{tenant}","eventTime":"2026-11-22T10:00:00Z","type":"step_enter","pad":"{pad}"}}"#
            );
            sqs_record(&format!("{tenant}-{n}"), &body, TEN + 1000, QUEUE_ARN)
        })
        .collect();
    batcher::process(&batcher, &records, TEN, "r-1")
        .await
        .unwrap();

    let sqs = moto.sqs_client().await;
    let queues = s3_export::esm::create_queue_with_dlq(&sqs, "flush", 3, 600)
        .await
        .unwrap();
    let queue = FlushQueue {
        sqs,
        url: queues.url.clone(),
    };
    let mut flusher = Flusher::new(config(document), s3.clone());
    flusher.queue = Some(queue.clone());
    let trigger = Trigger::from_payload(&json!({"time": "2026-11-22T11:15:00Z"})).unwrap();
    let planned = coordinate(&flusher, &queue, &trigger, None).await.unwrap();
    assert_eq!(planned.items, 3, "{planned:?}");
    let run = planned.run.unwrap();

    let runs = status::runs(&s3, EXPORT).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (
            runs[0].run.as_str(),
            runs[0].items,
            runs[0].done,
            runs[0].objects
        ),
        (run.as_str(), 3, 0, 1)
    );
    let text = status::render_runs(&runs);
    assert!(
        text.contains(&format!("{run}  queued "))
            && text.contains("0 of 3 item(s) done  1 staged object(s) to delete")
            && text.ends_with("1 run(s) in flight\n"),
        "{text}"
    );

    for item in 0..3 {
        let key = layout::work_item_key(&run, item);
        let flushed = flusher::worker::flush_item(&flusher, &key, None)
            .await
            .unwrap();
        assert!(flushed.finished, "{flushed:?}");
        let runs = status::runs(&s3, EXPORT).await.unwrap();
        if item < 2 {
            assert_eq!(runs[0].done, item as usize + 1);
        } else {
            assert!(runs.is_empty(), "{runs:?}");
        }
    }
}
