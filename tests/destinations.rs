//! Per-destination content options against moto: format and level,
//! selection by event type, omitted fields, `_export` metadata, storage
//! class, tags and the SHA-256 integrity checksum. Events are staged by the
//! real batcher and published by the real flusher; every file is read back.

use std::io::Write;
use std::process::{Command, Stdio};

use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_s3::types::{ChecksumMode, StorageClass};
use batcher::Batcher;
use batcher::records::{sqs_record, with_stream};
use flusher::{Flusher, Trigger};
use s3_export::inspect::{gunzip, list_keys};
use s3_export::moto::MotoServer;
use sha2::{Digest, Sha256};
use shared::Config;
use shared::encode::NdjsonGzWriter;
use shared::manifest::Manifest;
use shared::partition::{Hour, PartitionKey, TenantKey};

const EXPORT: &str = "exports";
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:events";
/// 2026-11-22T10:00:00Z
const TEN: i64 = 1_795_341_600_000;
const HOUR: i64 = 3_600_000;

struct Harness {
    _moto: MotoServer,
    s3: aws_sdk_s3::Client,
    config: Config,
}

impl Harness {
    /// Moto with the export bucket and `buckets`, configured with the
    /// destinations' JSON (a list).
    async fn start(buckets: &[&str], destinations: &str) -> Self {
        let moto = MotoServer::start().await.expect("moto_server starts");
        let s3 = moto.s3_client().await;
        for bucket in std::iter::once(&EXPORT).chain(buckets) {
            s3.create_bucket().bucket(*bucket).send().await.unwrap();
        }
        let config = Config::from_sources(
            |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
            Some(&format!(r#"{{"destinations":{destinations}}}"#)),
        )
        .unwrap();
        Self {
            _moto: moto,
            s3,
            config,
        }
    }

    /// Stages the records and flushes their (closed) hour.
    async fn stage_and_flush(&self, records: Vec<SqsMessage>) {
        let batcher = Batcher::new(self.config.clone(), self.s3.clone());
        let response = batcher::process(&batcher, &records, TEN, "req-1")
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
        self.flush().await;
    }

    /// Flushes the staged hour (closed by then) and publishes every part.
    async fn flush(&self) {
        let flusher = Flusher::new(self.config.clone(), self.s3.clone());
        let trigger = Trigger::from_payload(&serde_json::json!({
            "time": shared::time::format_rfc3339_millis(TEN + 2 * HOUR + 15 * 60_000)
        }))
        .unwrap();
        let report = flusher::run(&flusher, &trigger, None).await.unwrap();
        assert_eq!(report.failed, 0, "{report:?}");
        assert_eq!(report.pending_publishes, 0, "{report:?}");
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

    /// The one export file of `stream` in `bucket`: its key and bytes.
    async fn only_file(&self, bucket: &str, stream: &str) -> (String, Vec<u8>) {
        let keys = list_keys(&self.s3, bucket, stream).await.unwrap();
        assert_eq!(keys.len(), 1, "{bucket}: {keys:?}");
        let bytes = self.bytes(bucket, &keys[0]).await;
        (keys[0].clone(), bytes)
    }

    /// The lines of the one gzip export file of `stream` in `bucket`.
    async fn gzip_lines(&self, bucket: &str, stream: &str) -> Vec<String> {
        let (_, bytes) = self.only_file(bucket, stream).await;
        lines(&gunzip(&bytes).unwrap())
    }
}

fn lines(text: &str) -> Vec<String> {
    assert!(text.ends_with('\n'), "the last line ends with a newline");
    text.lines().map(str::to_owned).collect()
}

fn app_event(n: usize) -> String {
    format!(
        r#"{{"organizationId":"t1","eventTime":"2026-11-22T10:{:02}:00Z","type":"step_enter","user":{{"id":"u{n}","location":{{"lat":1.50,"lon":-2}}}},"ip":"10.0.0.{n}","n":{n}}}"#,
        n % 60
    )
}

fn audit_event(id: &str, event_type: &str) -> String {
    format!(
        r#"{{"ORGANIZATION_ID":"t1","EVENT_ID":"{id}","EVENT_TIME":"2026-11-22 10:40:02.123","EVENT_TYPE":"{event_type}","USER_ID":"u"}}"#
    )
}

fn app_records(count: usize) -> Vec<SqsMessage> {
    (0..count)
        .map(|n| sqs_record(&format!("a{n}"), &app_event(n), TEN + n as i64, QUEUE_ARN))
        .collect()
}

const APP: &str = "airkit-app-events";
const AUDIT: &str = "airkit-audit-logs";

#[tokio::test]
async fn zstd_file_is_read_back_by_the_zstd_tool_to_the_same_lines() {
    let harness = Harness::start(
        &["dest-gz", "dest-zst"],
        r#"[{"name":"gz","bucket":"dest-gz","layout":"hive"},
            {"name":"zst","bucket":"dest-zst","layout":"hive","format":"zstd"}]"#,
    )
    .await;
    harness.stage_and_flush(app_records(40)).await;
    let expected = harness.gzip_lines("dest-gz", APP).await;
    assert_eq!(expected.len(), 40);

    let (key, bytes) = harness.only_file("dest-zst", APP).await;
    assert!(key.ends_with("/part-00001.ndjson.zst"), "{key}");
    let mut zstd = Command::new("/usr/bin/zstd")
        .args(["-d", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd runs");
    zstd.stdin.take().unwrap().write_all(&bytes).unwrap();
    let output = zstd.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(lines(&String::from_utf8(output.stdout).unwrap()), expected);
    let head = harness
        .s3
        .head_object()
        .bucket("dest-zst")
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/zstd"));
}

#[tokio::test]
async fn plain_ndjson_and_gzip_at_level_9_hold_the_same_lines() {
    let harness = Harness::start(
        &["dest-gz", "dest-plain", "dest-nine"],
        r#"[{"name":"gz","bucket":"dest-gz"},
            {"name":"plain","bucket":"dest-plain","format":"ndjson"},
            {"name":"nine","bucket":"dest-nine","compressionLevel":9}]"#,
    )
    .await;
    harness.stage_and_flush(app_records(50)).await;
    let (gz_key, gz_bytes) = harness.only_file("dest-gz", APP).await;
    assert!(gz_key.ends_with("#1.json.gz"), "{gz_key}");
    let expected = lines(&gunzip(&gz_bytes).unwrap());

    let (plain_key, plain) = harness.only_file("dest-plain", APP).await;
    assert!(plain_key.ends_with("#1.json"), "{plain_key}");
    assert_eq!(lines(&String::from_utf8(plain).unwrap()), expected);

    let (nine_key, nine) = harness.only_file("dest-nine", APP).await;
    assert_eq!(nine_key, gz_key);
    assert_ne!(nine, gz_bytes, "level 9 is another encoding");
    assert_eq!(lines(&gunzip(&nine).unwrap()), expected);
}

#[tokio::test]
async fn event_types_are_included_or_excluded_and_empty_parts_are_not_written() {
    let harness = Harness::start(
        &["dest-in", "dest-out"],
        r#"[{"name":"in","bucket":"dest-in","layout":"hive","includeEventTypes":["user_login"]},
            {"name":"out","bucket":"dest-out","layout":"hive","excludeEventTypes":["user_login"]}]"#,
    )
    .await;
    let audit = [
        ("E-1", "user_login"),
        ("E-2", "user_logout"),
        ("E-3", "user_login"),
    ];
    let mut records: Vec<SqsMessage> = audit
        .iter()
        .map(|(id, kind)| {
            with_stream(
                sqs_record(id, &audit_event(id, kind), TEN + 1, QUEUE_ARN),
                AUDIT,
            )
        })
        .collect();
    records.extend(app_records(3));
    harness.stage_and_flush(records).await;

    let mut included = harness.gzip_lines("dest-in", AUDIT).await;
    included.sort();
    assert_eq!(
        included,
        vec![
            audit_event("E-1", "user_login"),
            audit_event("E-3", "user_login")
        ]
    );
    assert_eq!(
        harness.gzip_lines("dest-out", AUDIT).await,
        vec![audit_event("E-2", "user_logout")]
    );
    // App events have the type `step_enter`: all of them go to `out`, none
    // to `in`, whose part is recorded as published without a file.
    assert_eq!(harness.gzip_lines("dest-out", APP).await.len(), 3);
    assert!(
        list_keys(&harness.s3, "dest-in", APP)
            .await
            .unwrap()
            .is_empty()
    );
    let manifests = list_keys(&harness.s3, EXPORT, "manifests/").await.unwrap();
    let app_manifest = manifests
        .iter()
        .find(|k| k.contains(APP) && k.ends_with(".json"))
        .unwrap();
    let manifest: Manifest =
        serde_json::from_slice(&harness.bytes(EXPORT, app_manifest).await).unwrap();
    assert_eq!(manifest.destinations["in"].published, vec![1]);
    assert!(manifest.destinations["in"].pending.is_empty());
}

#[tokio::test]
async fn omitted_fields_are_cut_and_metadata_is_appended_leaving_the_rest_byte_identical() {
    let harness = Harness::start(
        &["dest-omit", "dest-meta"],
        r#"[{"name":"omit","bucket":"dest-omit","omitFields":["/user/location","/ip"]},
            {"name":"meta","bucket":"dest-meta","includeMetadata":true}]"#,
    )
    .await;
    harness.stage_and_flush(app_records(5)).await;
    let mut omitted = harness.gzip_lines("dest-omit", APP).await;
    omitted.sort();
    let mut expected: Vec<String> = (0..5)
        .map(|n| {
            format!(
                r#"{{"organizationId":"t1","eventTime":"2026-11-22T10:{n:02}:00Z","type":"step_enter","user":{{"id":"u{n}"}},"n":{n}}}"#
            )
        })
        .collect();
    expected.sort();
    assert_eq!(omitted, expected);

    let mut with_metadata = harness.gzip_lines("dest-meta", APP).await;
    with_metadata.sort();
    // Each line gains `_export` as its last member: the stream, hour and part,
    // then its message's SentTimestamp and SQS message id.
    let mut expected: Vec<String> = (0..5)
        .map(|n| {
            let original = app_event(n);
            let export = format!(
                r#"{{"stream":"airkit-app-events","hour":"2026-11-22T10:00:00.000Z","part":1,"ingestTime":"{}","messageId":"a{n}"}}"#,
                shared::time::format_rfc3339_millis(TEN + n as i64)
            );
            format!("{},\"_export\":{export}}}", original.strip_suffix('}').unwrap())
        })
        .collect();
    expected.sort();
    assert_eq!(with_metadata, expected);
}

/// The archive part a metadata destination is published from: its lines,
/// and the lines of its provenance sidecar.
async fn archive_and_sidecar(
    harness: &Harness,
    stream: &str,
) -> (Vec<String>, Option<Vec<String>>) {
    let manifests = list_keys(&harness.s3, EXPORT, "manifests/").await.unwrap();
    let key = manifests
        .iter()
        .find(|k| k.contains(stream) && k.ends_with(".json"))
        .unwrap();
    let manifest: Manifest = serde_json::from_slice(&harness.bytes(EXPORT, key).await).unwrap();
    assert_eq!(manifest.parts.len(), 1);
    let part = &manifest.parts[0];
    // Each where the manifest says: the whole object, or a bundle's range.
    let read = |key: String, offset: Option<u64>, bytes: u64| async move {
        let range = offset.map(|offset| offset..offset + bytes);
        flusher::store::get_bytes(&harness.s3, EXPORT, &key, range)
            .await
            .unwrap()
            .unwrap()
    };
    let archive = lines(&gunzip(&read(part.key.clone(), part.offset, part.bytes).await).unwrap());
    let sidecar = match &part.provenance {
        Some(file) => Some(lines(
            &gunzip(&read(file.key.clone(), file.offset, file.bytes).await).unwrap(),
        )),
        None => None,
    };
    (archive, sidecar)
}

#[tokio::test]
async fn metadata_names_the_message_an_event_was_first_received_in() {
    let harness = Harness::start(
        &["dest-meta"],
        r#"[{"name":"meta","bucket":"dest-meta","includeMetadata":true}]"#,
    )
    .await;
    // The producer sends the same three events twice, in new messages: the
    // flusher keeps the first of each, with its message id and time.
    let batcher = Batcher::new(harness.config.clone(), harness.s3.clone());
    let first = app_records(3);
    let again: Vec<SqsMessage> = (0..3)
        .map(|n| sqs_record(&format!("b{n}"), &app_event(n), TEN + 60_000, QUEUE_ARN))
        .collect();
    for (records, ingest, request) in [(first, TEN, "req-1"), (again, TEN + 60_000, "req-2")] {
        let response = batcher::process(&batcher, &records, ingest, request)
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }
    harness.flush().await;

    let mut exported: Vec<(i64, String, String)> = harness
        .gzip_lines("dest-meta", APP)
        .await
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let export = &value["_export"];
            (
                value["n"].as_i64().unwrap(),
                export["messageId"].as_str().unwrap().to_owned(),
                export["ingestTime"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    exported.sort();
    let expected: Vec<(i64, String, String)> = (0..3)
        .map(|n| {
            (
                n,
                format!("a{n}"),
                shared::time::format_rfc3339_millis(TEN + n),
            )
        })
        .collect();
    assert_eq!(exported, expected);

    // The archive stays the events alone; the sidecar has a line for each.
    let (archive, sidecar) = archive_and_sidecar(&harness, APP).await;
    let mut events = archive.clone();
    events.sort();
    assert_eq!(events, (0..3).map(app_event).collect::<Vec<_>>());
    let sidecar = sidecar.expect("a provenance sidecar");
    assert_eq!(sidecar.len(), archive.len());
    for (event, provenance) in archive.iter().zip(&sidecar) {
        let n: i64 = serde_json::from_str::<serde_json::Value>(event).unwrap()["n"]
            .as_i64()
            .unwrap();
        assert_eq!(*provenance, format!("{}\ta{n}", TEN + n));
    }
}

#[tokio::test]
async fn chunks_staged_without_provenance_get_the_partition_metadata_only() {
    let harness = Harness::start(
        &["dest-meta"],
        r#"[{"name":"meta","bucket":"dest-meta","includeMetadata":true}]"#,
    )
    .await;
    // A chunk as a batcher before provenance staged it: the events alone.
    let partition = PartitionKey {
        hour: Hour::containing(TEN),
        stream: APP.to_owned(),
        tenant: TenantKey::encode("t1"),
    };
    let mut chunk = NdjsonGzWriter::new(1);
    for n in 0..2 {
        chunk.push_line(&app_event(n));
    }
    harness
        .s3
        .put_object()
        .bucket(EXPORT)
        .key(shared::layout::staging_chunk_key(
            &partition,
            TEN,
            "old-batcher",
        ))
        .body(chunk.finish().into())
        .send()
        .await
        .unwrap();
    harness.flush().await;

    let (archive, sidecar) = archive_and_sidecar(&harness, APP).await;
    assert_eq!(archive.len(), 2);
    assert_eq!(sidecar, None);
    for line in harness.gzip_lines("dest-meta", APP).await {
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value["_export"],
            serde_json::json!({"stream":"airkit-app-events","hour":"2026-11-22T10:00:00.000Z","part":1}),
            "{line}"
        );
    }
}

#[tokio::test]
async fn without_a_metadata_destination_no_sidecar_is_written() {
    let harness = Harness::start(
        &["dest-plain"],
        r#"[{"name":"plain","bucket":"dest-plain"}]"#,
    )
    .await;
    harness.stage_and_flush(app_records(3)).await;
    let (archive, sidecar) = archive_and_sidecar(&harness, APP).await;
    let mut archive = archive;
    archive.sort();
    assert_eq!(archive, (0..3).map(app_event).collect::<Vec<_>>());
    assert_eq!(sidecar, None);
}

#[tokio::test]
async fn storage_class_tags_and_checksum_are_on_the_export_objects() {
    let harness = Harness::start(
        &["dest-plain", "dest-tagged"],
        r#"[{"name":"plain","bucket":"dest-plain"},
            {"name":"tagged","bucket":"dest-tagged","storageClass":"STANDARD_IA",
             "tags":{"team":"data eng","cost-center":"a/b"}}]"#,
    )
    .await;
    harness.stage_and_flush(app_records(3)).await;
    for bucket in ["dest-plain", "dest-tagged"] {
        let (key, bytes) = harness.only_file(bucket, APP).await;
        let head = harness
            .s3
            .head_object()
            .bucket(bucket)
            .key(&key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        let sha256 = aws_smithy_types::base64::encode(Sha256::digest(&bytes));
        assert_eq!(head.checksum_sha256(), Some(sha256.as_str()), "{bucket}");
        if bucket == "dest-tagged" {
            assert_eq!(head.storage_class(), Some(&StorageClass::StandardIa));
            let tagging = harness
                .s3
                .get_object_tagging()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
            let mut tags: Vec<(String, String)> = tagging
                .tag_set()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect();
            tags.sort();
            assert_eq!(
                tags,
                vec![
                    ("cost-center".to_owned(), "a/b".to_owned()),
                    ("team".to_owned(), "data eng".to_owned())
                ]
            );
        } else {
            assert!(matches!(
                head.storage_class(),
                None | Some(StorageClass::Standard)
            ));
        }
    }
}
