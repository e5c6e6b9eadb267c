//! `s3-export status` against moto: hours flushed by the real flusher into a
//! destination that works, one that refuses, and one added later, listed
//! from the manifests by the library and by the compiled command through
//! the SDK's standard `AWS_ENDPOINT_URL`.

use aws_lambda_events::event::sqs::SqsMessage;
use batcher::Batcher;
use batcher::records::sqs_record;
use flusher::{Flusher, Trigger};
use s3_export::moto::MotoServer;
use s3_export::status::{self, StatusOptions, StatusRow};
use serde_json::{Value, json};
use shared::Config;

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
