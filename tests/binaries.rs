//! The compiled function binaries, run as Lambda runs them: each is a
//! process polling a Lambda Runtime API emulator on loopback, configured
//! only by environment variables (`AWS_ENDPOINT_URL` pointing at moto), and
//! invoked with the sample events in `events/`. This proves what in-process
//! tests cannot: `main.rs`, configuration from the environment, endpoint
//! handling. Each binary's size and cold start (process start to its first
//! poll) are printed.
//!
//! The binaries are those `cargo test --workspace` builds (debug); set
//! `S3_EXPORT_BIN_DIR` (for example to `target/release`) to run others.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use s3_export::inspect::{list_keys, read_gzip_ndjson, read_staged_events};
use s3_export::moto::MotoServer;
use s3_export::runtime_api::{Answer, RuntimeApi, function_binary, function_command};
use serde_json::Value;
use tokio::process::Child;

const EXPORT: &str = "exports";
const DESTINATION: &str = "customer-bucket";
const WAIT: Duration = Duration::from_secs(60);

fn sample(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A function process with Lambda's environment, talking to `moto` only.
fn spawn(name: &str, runtime: &RuntimeApi, moto: &MotoServer, extra: &[(&str, &str)]) -> Child {
    let mut command = function_command(name, runtime, &moto.endpoint());
    command
        .env("EXPORT_BUCKET", EXPORT)
        .env("DESTINATION_BUCKET", DESTINATION)
        .env("DESTINATION_PREFIX", "exports/")
        .env(
            "FUNCTION_ROLE_ARN",
            "arn:aws:iam::123456789012:role/s3-export-writer",
        )
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in extra {
        command.env(name, value);
    }
    command.spawn().expect("the binary starts")
}

/// Starts `name`, waits for its first poll, and prints its size and cold start.
async fn start(name: &str, runtime: &RuntimeApi, moto: &MotoServer) -> Child {
    let started = Instant::now();
    let child = spawn(name, runtime, moto, &[]);
    let ready = runtime
        .first_poll(WAIT)
        .await
        .expect("the function polls for events");
    let size = std::fs::metadata(function_binary(name))
        .map(|m| m.len())
        .unwrap_or_default();
    println!(
        "{name}: binary {:.1} MB, cold start {} ms (process start to first poll)",
        size as f64 / 1e6,
        ready.duration_since(started).as_millis()
    );
    child
}

async fn response(runtime: &RuntimeApi, payload: Value) -> Value {
    match runtime.invoke(payload, WAIT).await.expect("an answer") {
        Answer::Response(value) => value,
        Answer::Error(error) => panic!("the function failed: {error}"),
    }
}

#[tokio::test]
async fn each_compiled_function_serves_its_sample_events_through_the_runtime_api() {
    let moto = MotoServer::start().await.unwrap();
    let s3 = moto.s3_client().await;
    for bucket in [EXPORT, DESTINATION] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }

    // The batcher: the mixed sample batch, one malformed record among them.
    let runtime = RuntimeApi::start().await.unwrap();
    let _batcher = start("batcher", &runtime, &moto).await;
    let answer = response(&runtime, sample("sqs-mixed-batch.json")).await;
    assert_eq!(
        answer["batchItemFailures"],
        serde_json::json!([]),
        "{answer}"
    );
    let staged = read_staged_events(&s3, EXPORT).await.unwrap();
    assert_eq!(
        staged.iter().map(|f| f.lines.len()).sum::<usize>(),
        5,
        "{staged:#?}"
    );
    let errors = read_gzip_ndjson(&s3, EXPORT, "errors/").await.unwrap();
    assert_eq!(errors.iter().map(|f| f.lines.len()).sum::<usize>(), 1);

    // The flusher: the manual sample closes those hours into the archive
    // and the destination named by DESTINATION_BUCKET.
    let runtime = RuntimeApi::start().await.unwrap();
    let _flusher = start("flusher", &runtime, &moto).await;
    let mut manual = sample("flusher-manual.json");
    manual["flush"].as_object_mut().unwrap().remove("tenants");
    let report = response(&runtime, manual).await;
    assert_eq!(report["events"], 5, "{report}");
    assert!(list_keys(&s3, EXPORT, "staging/").await.unwrap().is_empty());
    let published = read_gzip_ndjson(&s3, DESTINATION, "exports/")
        .await
        .unwrap();
    assert_eq!(published.iter().map(|f| f.lines.len()).sum::<usize>(), 5);

    // The backfill sample, over every hour: the same files, rewritten.
    let mut backfill = sample("flusher-backfill.json");
    let range = backfill["backfill"].as_object_mut().unwrap();
    range.remove("tenants");
    range.remove("streams");
    range.insert("from".into(), "2000-01-01T00:00:00Z".into());
    range.insert("to".into(), "2100-01-01T00:00:00Z".into());
    let report = response(&runtime, backfill).await;
    assert_eq!(report["status"], "done", "{report}");
    assert_eq!(report["events"], 5, "{report}");
    let again = read_gzip_ndjson(&s3, DESTINATION, "exports/")
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|f| (&f.key, &f.lines)).collect::<Vec<_>>(),
        published
            .iter()
            .map(|f| (&f.key, &f.lines))
            .collect::<Vec<_>>()
    );

    // Verify: `{}` checks every destination and writes its test object.
    let runtime = RuntimeApi::start().await.unwrap();
    let _verify = start("verify", &runtime, &moto).await;
    let result = response(&runtime, sample("verify-all.json")).await;
    assert_eq!(result["ok"], true, "{result}");
    let key = result["results"][0]["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("exports/airkit-verify-test-"), "{key}");
    assert!(
        list_keys(&s3, DESTINATION, &key)
            .await
            .unwrap()
            .contains(&key)
    );
}

#[tokio::test]
async fn a_function_with_invalid_configuration_exits_naming_the_variable() {
    let moto = MotoServer::start().await.unwrap();
    let runtime = RuntimeApi::start().await.unwrap();
    let child = spawn(
        "batcher",
        &runtime,
        &moto,
        &[("EXPORT_BUCKET", ""), ("DESTINATION_ACCOUNT_ID", "12")],
    );
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("EXPORT_BUCKET"), "{stderr}");
}

/// The compiled flusher with `FLUSH_QUEUE_URL` set, as the template deploys
/// it: the scheduled sample makes it the coordinator (its answer says how
/// many work items it queued), and the queue's message, delivered to the
/// same process as the event source mapping would, makes it a worker that
/// flushes the item (no batch item failures) into the destination.
#[tokio::test]
async fn the_compiled_flusher_coordinates_with_a_flush_queue_and_works_its_items() {
    let moto = MotoServer::start().await.unwrap();
    let s3 = moto.s3_client().await;
    for bucket in [EXPORT, DESTINATION] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let sqs = moto.sqs_client().await;
    let queues = s3_export::esm::create_queue_with_dlq(&sqs, "flush", 3, 900)
        .await
        .unwrap();

    let runtime = RuntimeApi::start().await.unwrap();
    let _batcher = start("batcher", &runtime, &moto).await;
    response(&runtime, sample("sqs-mixed-batch.json")).await;

    let runtime = RuntimeApi::start().await.unwrap();
    let _flusher = spawn(
        "flusher",
        &runtime,
        &moto,
        &[("FLUSH_QUEUE_URL", queues.url.as_str())],
    );
    runtime.first_poll(WAIT).await.unwrap();
    // The sample's hour closed long ago: every staged hour is closed.
    let mut scheduled = sample("flusher-scheduled.json");
    scheduled["time"] = "2100-01-01T00:15:00Z".into();
    let planned = response(&runtime, scheduled).await;
    assert_eq!(planned["items"], 1, "{planned}");
    assert!(list_keys(&s3, DESTINATION, "").await.unwrap().is_empty());

    let received = sqs
        .receive_message()
        .queue_url(&queues.url)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(received.len(), 1);
    let record = s3_export::esm::lambda_record(received[0].clone(), &queues.arn, "us-east-1");
    let event = serde_json::json!({ "Records": [record] });
    let answer = response(&runtime, event).await;
    assert_eq!(
        answer["batchItemFailures"],
        serde_json::json!([]),
        "{answer}"
    );
    assert!(list_keys(&s3, EXPORT, "staging/").await.unwrap().is_empty());
    assert!(list_keys(&s3, EXPORT, "work/").await.unwrap().is_empty());
    let published = read_gzip_ndjson(&s3, DESTINATION, "exports/")
        .await
        .unwrap();
    assert_eq!(published.iter().map(|f| f.lines.len()).sum::<usize>(), 5);
}
