//! The export files are readable as they are, by the tools people point at
//! them: DuckDB (`read_json_auto` over the Hive layout, its Python package
//! from `.venv`, installed by `scripts/setup-python.sh`), and `zcat | jq`
//! (every archive and destination file is gzip of one JSON object per line
//! with a final newline). The data is staged by the real batcher and flushed
//! by the real flusher on moto, then downloaded with its keys as folders.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use batcher::Batcher;
use batcher::records::{sqs_record, with_stream};
use flate2::read::MultiGzDecoder;
use flusher::{Flusher, Trigger};
use s3_export::inspect::list_keys;
use s3_export::moto::MotoServer;
use serde_json::Value;
use shared::Config;

const EXPORT: &str = "exports";
const HIVE: &str = "dest-hive";
const AMPLITUDE: &str = "dest-amplitude";
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:events";
/// 2026-11-22T10:00:00Z
const TEN: i64 = 1_795_341_600_000;
const HOUR: i64 = 3_600_000;
const TENANTS: [&str; 2] = ["t1", "acme-eu"];

const DESTINATIONS: &str = r#"{"destinations":[
  {"name":"hive","bucket":"dest-hive","layout":"hive","shared":true,"successMarker":true},
  {"name":"amplitude","bucket":"dest-amplitude","prefix":"exports/","shared":true}
]}"#;

/// One sent event as DuckDB must read it back: id, time in epoch ms, and
/// its partition (tenant, day, hour).
type Row = (String, i64, String, String, i64);

struct Exported {
    _moto: MotoServer,
    s3: aws_sdk_s3::Client,
    app: Vec<Row>,
    audit: Vec<Row>,
}

fn app_event(tenant: &str, n: i64, sent: i64) -> (String, Row) {
    // Microseconds and a `Z`, as Airkit sends them.
    let time = sent - 30_000 + n * 7;
    let text = shared::time::format_rfc3339_millis(time);
    let body = format!(
        r#"{{"organizationId":"{tenant}","eventTime":"{}456Z","appId":"app-1","sessionId":"s{n}","type":"step_enter","kind":"Session","ipAddresses":["52.9.13.199"],"defaultMetrics":{{"/element/event2/session/on-start.json":{{"e{n}":{{"count":1}}}}}}}}"#,
        text.trim_end_matches('Z')
    );
    (body, partition_row(format!("s{n}"), time, tenant, sent))
}

fn audit_event(tenant: &str, n: i64, sent: i64) -> (String, Row) {
    // Zone-less, read as UTC (Snowflake's TIMESTAMP_NTZ form).
    let time = sent - 20_000 + n * 11;
    let zone_less = shared::time::format_rfc3339_millis(time)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned();
    let body = format!(
        r#"{{"ORGANIZATION_ID":"{tenant}","EVENT_ID":"E-{n}","EVENT_YEAR":"{}","EVENT_DATE":"{}","EVENT_TIME":"{zone_less}","USER_ID":"u{n}","EVENT_TYPE":"user_login"}}"#,
        &zone_less[..4],
        &zone_less[..10]
    );
    (body, partition_row(format!("E-{n}"), time, tenant, sent))
}

/// The partition is the ingest hour (SQS `SentTimestamp`).
fn partition_row(id: String, time: i64, tenant: &str, sent: i64) -> Row {
    let hour = sent - sent.rem_euclid(HOUR);
    let day = shared::time::format_rfc3339_millis(hour)[..10].to_owned();
    let hour_of_day = (hour / HOUR).rem_euclid(24);
    (id, time, tenant.to_owned(), day, hour_of_day)
}

/// App and audit events of two tenants over two hours, with a redelivered
/// batch and a re-sent audit event (dropped by the flusher), staged by the
/// batcher and flushed into the archive and both destinations.
async fn export() -> Exported {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = moto.s3_client().await;
    for bucket in [EXPORT, HIVE, AMPLITUDE] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let config = Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
        Some(DESTINATIONS),
    )
    .unwrap();
    let batcher = Batcher::new(config.clone(), s3.clone());
    let (mut records, mut app, mut audit) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..24i64 {
        let tenant = TENANTS[(n % 2) as usize];
        let sent = TEN + (n / 12) * HOUR + 100_000 + n * 1000;
        let (body, row) = app_event(tenant, n, sent);
        records.push(sqs_record(&format!("app-{n}"), &body, sent, QUEUE_ARN));
        app.push(row);
        if n % 3 == 0 {
            let (body, row) = audit_event(tenant, n, sent);
            let record = sqs_record(&format!("audit-{n}"), &body, sent, QUEUE_ARN);
            records.push(with_stream(record, "airkit-audit-logs"));
            audit.push(row);
        }
    }
    // A producer that sent an audit event twice: one row.
    let (again, _) = audit_event(TENANTS[0], 0, TEN + 100_000);
    records.push(with_stream(
        sqs_record("audit-0-again", &again, TEN + 100_000, QUEUE_ARN),
        "airkit-audit-logs",
    ));
    for (request, batch) in [("req-1", &records[..]), ("req-2", &records[..5])] {
        let response = batcher::process(&batcher, batch, TEN, request)
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }
    let trigger = Trigger::from_payload(&serde_json::json!({
        "time": shared::time::format_rfc3339_millis(TEN + 3 * HOUR)
    }))
    .unwrap();
    let report = flusher::run(&Flusher::new(config, s3.clone()), &trigger, None)
        .await
        .unwrap();
    assert_eq!(report.failed, 0);
    assert_eq!(report.events as usize, app.len() + audit.len());
    app.sort();
    audit.sort();
    Exported {
        _moto: moto,
        s3,
        app,
        audit,
    }
}

/// A fresh temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "s3-export-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Downloads every object of `bucket` under `prefix` into `into`, each key
/// a path (its `/` are folders); returns the files, key → bytes.
async fn download(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    into: &Path,
) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for key in list_keys(s3, bucket, prefix).await.unwrap() {
        let object = s3.get_object().bucket(bucket).key(&key).send().await;
        let bytes = object.unwrap().body.collect().await.unwrap().into_bytes();
        let path = into.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        files.insert(key, bytes.to_vec());
    }
    files
}

/// The test venv's Python (`.venv/bin/python`), with duckdb importable;
/// fails with what to run when it is not there.
fn venv_python(module: &str) -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let hint = "run ./scripts/setup-python.sh (it creates .venv from requirements-dev.txt, duckdb included)";
    assert!(
        python.exists(),
        "{} does not exist: {hint}",
        python.display()
    );
    let status = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "`{} -c 'import {module}'` failed: {hint}",
        python.display()
    );
    python
}

fn duckdb_read(python: &Path, folder: &Path, time: &str, id: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/duckdb_check.py");
    let output = Command::new(python)
        .arg(script)
        .arg(folder)
        .args([time, id])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "duckdb_check.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn rows(report: &Value) -> Vec<Row> {
    report["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v[0].as_str().unwrap().to_owned(),
                v[1].as_i64().unwrap(),
                v[2].as_str().unwrap().to_owned(),
                v[3].as_str().unwrap().to_owned(),
                v[4].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn duckdb_reads_the_hive_layout_with_timestamps_and_partition_columns() {
    let python = venv_python("duckdb");
    let exported = export().await;
    let dir = TempDir::new("duckdb");
    let files = download(&exported.s3, HIVE, "", &dir.0).await;
    assert!(
        files.keys().any(|k| k.ends_with("/_SUCCESS")),
        "markers are there, and the glob skips them"
    );

    for (stream, time, id, sent) in [
        ("airkit-app-events", "eventTime", "sessionId", &exported.app),
        (
            "airkit-audit-logs",
            "EVENT_TIME",
            "EVENT_ID",
            &exported.audit,
        ),
    ] {
        let report = duckdb_read(&python, &dir.0.join(stream), time, id);
        assert_eq!(report["rows"], sent.len(), "{stream}: {report}");
        // Every event once, its time parsed to the millisecond, in the
        // partition of its ingest hour.
        assert_eq!(&rows(&report), sent, "{stream}");
        let columns = &report["columns"];
        // RFC 3339 with `Z` is TIMESTAMP WITH TIME ZONE; the audit logs'
        // zone-less time is TIMESTAMP. Both without any hint.
        let want = if stream == "airkit-app-events" {
            "TIMESTAMP WITH TIME ZONE"
        } else {
            "TIMESTAMP"
        };
        assert_eq!(columns[time], want, "{stream}: {columns}");
        assert_eq!(report["timeTypes"], serde_json::json!([want]), "{stream}");
        // The Hive folders are columns: tenant text, dt a DATE, hour a number.
        assert_eq!(columns["tenant"], "VARCHAR", "{stream}");
        assert_eq!(columns["dt"], "DATE", "{stream}");
        assert_eq!(columns["hour"], "BIGINT", "{stream}");
        let mut partitions: BTreeMap<(String, String, i64), usize> = BTreeMap::new();
        for (_, _, tenant, day, hour) in sent {
            *partitions
                .entry((tenant.clone(), day.clone(), *hour))
                .or_default() += 1;
        }
        let want: Vec<Value> = partitions
            .iter()
            .map(|((tenant, day, hour), n)| serde_json::json!([tenant, day, hour, n]))
            .collect();
        assert_eq!(report["partitions"], Value::Array(want), "{stream}");
        assert_eq!(partitions.len(), 4, "two tenants, two hours");
    }
}

/// Decompresses (every gzip member) and checks the text: UTF-8, a final
/// newline, one JSON object per line.
fn check_ndjson_gzip(key: &str, bytes: &[u8]) -> String {
    assert_eq!(&bytes[..2], [0x1f, 0x8b], "{key}: no gzip magic");
    let mut text = String::new();
    MultiGzDecoder::new(bytes)
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{key}: not gzip of UTF-8 text: {e}"));
    assert!(
        !text.is_empty() && text.ends_with('\n'),
        "{key}: empty or no final newline"
    );
    for (n, line) in text.lines().enumerate() {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{key}: line {} is not JSON: {e}", n + 1));
        assert!(value.is_object(), "{key}: line {} is not an object", n + 1);
    }
    text
}

/// `zcat <file> | jq -c .` (or, without jq, Python's json module reading
/// zcat's output): the number of JSON objects printed.
fn zcat_pipe(file: &Path, python: &Path) -> (String, usize) {
    let mut zcat = Command::new("zcat")
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("zcat (gzip) is installed");
    let mut decompressed = String::new();
    zcat.stdout
        .take()
        .unwrap()
        .read_to_string(&mut decompressed)
        .unwrap();
    assert!(zcat.wait().unwrap().success(), "zcat {}", file.display());
    let has_jq = Command::new("jq")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut reader = if has_jq {
        Command::new("jq")
            .args(["-e", "-c", "."])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    } else {
        Command::new(python)
            .args([
                "-c",
                "import json, sys\nfor line in sys.stdin:\n    assert isinstance(json.loads(line), dict)\n    print(line, end='')",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    reader
        .stdin
        .take()
        .unwrap()
        .write_all(decompressed.as_bytes())
        .unwrap();
    let output = reader.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{} refused zcat's output of {}",
        if has_jq { "jq" } else { "python json" },
        file.display()
    );
    let objects = String::from_utf8(output.stdout).unwrap().lines().count();
    (decompressed, objects)
}

#[tokio::test]
async fn every_export_file_is_gzip_of_one_json_object_a_line() {
    let python = venv_python("json");
    let exported = export().await;
    let dir = TempDir::new("zcat");
    let mut checked = 0;
    for (bucket, prefix) in [(EXPORT, "archive/"), (HIVE, ""), (AMPLITUDE, "")] {
        let into = dir.0.join(bucket);
        let files = if bucket == EXPORT {
            // Each committed part, cut from its bundle where it is in one.
            let parts = s3_export::inspect::archive_parts(&exported.s3, bucket, "")
                .await
                .unwrap();
            for (key, bytes) in &parts {
                let path = into.join(key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, bytes).unwrap();
            }
            parts
        } else {
            download(&exported.s3, bucket, prefix, &into).await
        };
        let mut lines = 0;
        let mut first = None;
        for (key, bytes) in &files {
            if key.ends_with("/_SUCCESS") {
                assert!(bytes.is_empty(), "{key}: a marker is empty");
                continue;
            }
            assert!(
                key.ends_with(".ndjson.gz") || key.ends_with(".json.gz"),
                "{bucket}/{key}: an export file"
            );
            let text = check_ndjson_gzip(key, bytes);
            lines += text.lines().count();
            first.get_or_insert((key.clone(), text));
            checked += 1;
        }
        assert_eq!(
            lines,
            exported.app.len() + exported.audit.len(),
            "{bucket}: every event once"
        );
        // The system's zcat reads what flate2 read, and jq takes every line.
        let (key, text) = first.expect("files were exported");
        let (decompressed, objects) = zcat_pipe(&into.join(&key), &python);
        assert_eq!(decompressed, text, "{bucket}/{key}: zcat");
        assert_eq!(objects, text.lines().count(), "{bucket}/{key}: jq");
    }
    assert!(checked >= 12, "{checked} files");
}
