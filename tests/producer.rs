//! The producer against moto: events packed into compressed messages,
//! sent with SendMessageBatch (failed entries retried), delivered by the
//! event source mapping emulation to the real batcher, and read back from
//! the staged chunks event by event. Also the README's Python producer and
//! the `s3-export-produce` CLI.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use batcher::Batcher;
use lambda_runtime::{Context, LambdaEvent};
use producer::pack::SQS_MAX_MESSAGE_BYTES;
use producer::{PackOptions, SendOptions, pack, send};
use s3_export::esm::{EventSourceMapping, create_queue_with_dlq};
use s3_export::faults::FailSqsBatchEntries;
use s3_export::inspect::{list_keys, read_gzip_ndjson, read_object};
use s3_export::moto::MotoServer;
use shared::Config;
use shared::content_encoding::ContentEncoding;

const BUCKET: &str = "s3-export-producer";

struct Harness {
    moto: MotoServer,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl Harness {
    async fn start() -> Self {
        let moto = MotoServer::start().await.expect("moto_server starts");
        let s3 = moto.s3_client().await;
        s3.create_bucket().bucket(BUCKET).send().await.unwrap();
        let sqs = moto.sqs_client().await;
        let queues = create_queue_with_dlq(&sqs, "events", 3, 30).await.unwrap();
        Self {
            moto,
            s3,
            sqs,
            queue_url: queues.url,
        }
    }

    /// Delivers every queued message to the real batcher.
    async fn deliver(&self) {
        let batcher = Batcher::new(
            Config::from_sources(
                |name| (name == "EXPORT_BUCKET").then(|| BUCKET.to_owned()),
                None,
            )
            .unwrap(),
            self.s3.clone(),
        );
        let batcher = &batcher;
        let mapping = EventSourceMapping::for_queue(
            self.sqs.clone(),
            &self.queue_url,
            1000,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        let mut invocation = 0;
        let report = mapping
            .drain(
                |event: SqsEvent| {
                    invocation += 1;
                    let mut context = Context::default();
                    context.request_id = format!("req-{invocation}");
                    async move {
                        batcher::handle(batcher, LambdaEvent::new(event, context))
                            .await
                            .map_err(Into::into)
                    }
                },
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
    }

    /// Every staged line, by stream, sorted.
    async fn staged(&self) -> BTreeMap<String, Vec<String>> {
        let mut lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in list_keys(&self.s3, BUCKET, "staging/").await.unwrap() {
            let bytes = read_object(&self.s3, BUCKET, &key).await.unwrap();
            for (segment, staged) in shared::staged::read_object(&bytes).unwrap() {
                lines.entry(segment.stream).or_default().extend(
                    staged
                        .iter()
                        .map(|line| shared::provenance::split_staged_line(line).0.to_owned()),
                );
            }
        }
        for stream_lines in lines.values_mut() {
            stream_lines.sort();
        }
        lines
    }

    async fn errors(&self) -> usize {
        read_gzip_ndjson(&self.s3, BUCKET, "errors/")
            .await
            .unwrap()
            .iter()
            .map(|file| file.lines.len())
            .sum()
    }
}

fn app_events(count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            format!(
                r#"{{"organizationId":"tenant-{}","eventTime":"2022-11-19T23:10:00.{:03}Z","appId":"app-{}","sessionId":"session-{n:06}","type":"step_enter","kind":"Session","n":{n}}}"#,
                n % 7,
                n % 1000,
                n * 7919 % 104_729
            )
        })
        .collect()
}

fn audit_events(count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            format!(
                r#"{{"ORGANIZATION_ID":"tenant-{}","EVENT_ID":"e-{n:06}","EVENT_TIME":"2022-11-19 23:40:02.123","EVENT_TYPE":"user_login","USER_ID":"u{}"}}"#,
                n % 5,
                n * 7919 % 104_729
            )
        })
        .collect()
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

fn quick_retries() -> SendOptions {
    SendOptions {
        initial_backoff: Duration::from_millis(10),
        ..SendOptions::default()
    }
}

#[tokio::test]
async fn packed_gzip_and_zstd_messages_arrive_and_every_event_is_staged() {
    let harness = Harness::start().await;
    let app = app_events(6000);
    let audit = audit_events(3000);
    let app_messages = pack(&app, &PackOptions::default()).unwrap();
    let audit_messages = pack(
        &audit,
        &PackOptions {
            encoding: ContentEncoding::Zstd,
            level: 3,
            stream: Some("airkit-audit-logs".into()),
            ..PackOptions::default()
        },
    )
    .unwrap();
    assert!(
        app_messages.len() * 20 < app.len(),
        "{} messages for {} events",
        app_messages.len(),
        app.len()
    );
    for messages in [&app_messages, &audit_messages] {
        assert!(messages.iter().all(|m| m.size() <= SQS_MAX_MESSAGE_BYTES));
        let report = send(&harness.sqs, &harness.queue_url, messages, &quick_retries()).await;
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(report.sent_messages, messages.len());
        assert_eq!(report.retried_entries, 0);
    }

    harness.deliver().await;
    let staged = harness.staged().await;
    assert_eq!(staged["airkit-app-events"], sorted(app));
    assert_eq!(staged["airkit-audit-logs"], sorted(audit));
    assert_eq!(harness.errors().await, 0);
}

#[tokio::test]
async fn failed_entries_are_retried_and_every_event_arrives_once() {
    let harness = Harness::start().await;
    let events = app_events(3000);
    // Small messages, so each request carries ten entries.
    let messages = pack(
        &events,
        &PackOptions {
            max_message_bytes: 1024,
            ..PackOptions::default()
        },
    )
    .unwrap();
    assert!(messages.len() >= 30, "{} messages", messages.len());
    // Every third message fails once with SQS's internal error.
    let fault = FailSqsBatchEntries::new(|id| id.parse::<usize>().unwrap() % 3 == 0, 1, false);
    let report = send(
        &fault.wrap(&harness.sqs),
        &harness.queue_url,
        &messages,
        &quick_retries(),
    )
    .await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(fault.failed(), messages.len().div_ceil(3));
    assert_eq!(report.retried_entries, fault.failed());
    assert_eq!(report.sent_messages, messages.len());
    assert_eq!(report.sent_events, events.len());

    harness.deliver().await;
    assert_eq!(harness.staged().await["airkit-app-events"], sorted(events));
}

#[tokio::test]
async fn entries_refused_as_the_senders_fault_are_reported_and_not_retried() {
    let harness = Harness::start().await;
    let events = app_events(2000);
    let messages = pack(
        &events,
        &PackOptions {
            max_message_bytes: 1024,
            ..PackOptions::default()
        },
    )
    .unwrap();
    let fault = FailSqsBatchEntries::new(|id| id == "4", usize::MAX, true);
    let report = send(
        &fault.wrap(&harness.sqs),
        &harness.queue_url,
        &messages,
        &quick_retries(),
    )
    .await;
    assert_eq!(fault.failed(), 1, "sent once, not retried");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].index, 4);
    assert_eq!(report.failed[0].code, "InvalidParameterValue");
    assert!(report.failed[0].sender_fault);
    assert_eq!(report.sent_messages, messages.len() - 1);

    // Everything but message 4's events arrives.
    let before: usize = messages[..4].iter().map(|m| m.events).sum();
    let mut expected = events.clone();
    expected.drain(before..before + messages[4].events);
    harness.deliver().await;
    assert_eq!(
        harness.staged().await["airkit-app-events"],
        sorted(expected)
    );
}

#[tokio::test]
async fn entries_that_keep_failing_are_reported_after_the_last_attempt() {
    let harness = Harness::start().await;
    let events = app_events(500);
    let messages = pack(
        &events,
        &PackOptions {
            max_message_bytes: 1024,
            ..PackOptions::default()
        },
    )
    .unwrap();
    let fault = FailSqsBatchEntries::new(|id| id == "1", usize::MAX, false);
    let options = SendOptions {
        max_attempts: 3,
        ..quick_retries()
    };
    let report = send(
        &fault.wrap(&harness.sqs),
        &harness.queue_url,
        &messages,
        &options,
    )
    .await;
    // The lone retried entry makes a request of its own, which the fault
    // cannot leave empty: it fails the request instead.
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].index, 1);
    assert_eq!(report.sent_messages, messages.len() - 1);
    assert_eq!(report.retried_entries, 2);
}

/// The fenced block after `marker` in the README.
fn readme_block(marker: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find(marker).expect("the marker is in the README");
    let rest = &readme[start..];
    let open = rest.find("```python\n").expect("a python block follows") + "```python\n".len();
    let close = rest[open..].find("\n```").unwrap();
    rest[open..open + close + 1].to_owned()
}

#[tokio::test]
async fn the_readme_python_producer_sends_what_the_batcher_stages() {
    let harness = Harness::start().await;
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/setup-python.sh",
        python.display()
    );
    let events = app_events(4000);
    let dir = std::env::temp_dir().join(format!("s3-export-producer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("producer.py");
    let input = dir.join("events.ndjson");
    std::fs::write(&input, events.join("\n") + "\n").unwrap();
    std::fs::write(
        &script,
        readme_block("<!-- python-producer -->")
            + "\nimport sys\n\
               events = [json.loads(line) for line in open(sys.argv[2])]\n\
               print(send_events(sys.argv[1], events))\n",
    )
    .unwrap();
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&harness.queue_url)
        .arg(&input)
        .env("AWS_ENDPOINT_URL", harness.moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let messages: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(messages * 20 < events.len(), "{messages} messages");

    harness.deliver().await;
    // json.dumps re-serializes the events: compare them as JSON values.
    let staged: Vec<serde_json::Value> = harness.staged().await["airkit-app-events"]
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let mut expected: Vec<serde_json::Value> = events
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let key = |value: &serde_json::Value| value["n"].as_u64();
    let mut staged = staged;
    staged.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(staged, expected);
}

#[tokio::test]
async fn the_cli_sends_a_file_of_events() {
    let harness = Harness::start().await;
    // target/<profile>/deps/<this test> → target/<profile>/s3-export-produce
    let binary = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("s3-export-produce");
    assert!(
        binary.exists(),
        "{} is missing: `cargo build --workspace --bins` (./scripts/test.sh does)",
        binary.display()
    );
    let events = audit_events(1500);
    let input = std::env::temp_dir().join(format!("s3-export-cli-{}.ndjson", std::process::id()));
    std::fs::write(&input, events.join("\n") + "\n\n").unwrap();
    let output = tokio::process::Command::new(&binary)
        .args([
            "--queue-url",
            &harness.queue_url,
            "--stream",
            "airkit-audit-logs",
        ])
        .arg("--input")
        .arg(&input)
        .env("AWS_ENDPOINT_URL", harness.moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&input);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["events"], 1500, "{summary}");
    assert_eq!(summary["sentEvents"], 1500, "{summary}");
    assert_eq!(summary["failedMessages"], 0, "{summary}");

    harness.deliver().await;
    assert_eq!(harness.staged().await["airkit-audit-logs"], sorted(events));
}

#[tokio::test]
async fn the_cli_refuses_an_event_too_large_naming_it() {
    let harness = Harness::start().await;
    let binary = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("s3-export-produce");
    let input =
        std::env::temp_dir().join(format!("s3-export-cli-big-{}.ndjson", std::process::id()));
    std::fs::write(&input, "{\"a\":1}\n{\"a\":2}\n").unwrap();
    let output = tokio::process::Command::new(&binary)
        .args([
            "--queue-url",
            &harness.queue_url,
            "--encoding",
            "identity",
            "--max-message-bytes",
            "4",
        ])
        .arg("--input")
        .arg(&input)
        .env("AWS_ENDPOINT_URL", harness.moto.endpoint())
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&input);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("event 0 is 8 bytes"), "{stderr}");
}
