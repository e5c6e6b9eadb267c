//! The configuration document reloaded from S3 against moto: a changed
//! document (a new ETag) replaces the configuration at the first check a
//! minute after the last, a check within the minute sends nothing, an
//! unchanged document costs one conditional GET, and a bad document keeps
//! the last good configuration and alerts once through SNS, as does a
//! document larger than the limit, which is not read past it; the document
//! in use is known by its ETag and version id. The clock is a
//! fake one: no test waits a minute. Each test starts its own moto_server;
//! nothing leaves 127.0.0.1.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use s3_export::inbox::AlertInbox;
use s3_export::moto::MotoServer;
use s3_export::recorder::RequestRecorder;
use shared::ConfigError;
use shared::alert::Alerter;
use shared::config_source::{
    CheckOutcome, ConfigSource, DocumentVersion, MAX_DOCUMENT_BYTES, ManualClock,
};

const EXPORT_BUCKET: &str = "s3-export-test";
const CONFIG_BUCKET: &str = "s3-export-config";
const KEY: &str = "config/export.json";
const ONE: &str = r#"{"destinations":[{"name":"a","bucket":"dest-a"}]}"#;
const TWO: &str = r#"{"destinations":[{"name":"a","bucket":"dest-a"},{"name":"b","bucket":"dest-b","tenants":["t1"]}]}"#;
const BAD: &str = r#"{"destinations":[{"name":"a","bucket":"Bad_Bucket"}]}"#;

struct Harness {
    moto: MotoServer,
    s3: aws_sdk_s3::Client,
    requests: RequestRecorder,
    clock: ManualClock,
}

impl Harness {
    async fn start() -> Self {
        let moto = MotoServer::start().await.expect("moto_server starts");
        let plain = moto.s3_client().await;
        for bucket in [EXPORT_BUCKET, CONFIG_BUCKET] {
            plain.create_bucket().bucket(bucket).send().await.unwrap();
        }
        let requests = RequestRecorder::new();
        let s3 = requests.wrap(&plain);
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000));
        Self {
            moto,
            s3,
            requests,
            clock,
        }
    }

    /// Uploads `document`; the version S3 stored.
    async fn upload(&self, document: &str) -> DocumentVersion {
        let stored = self
            .s3
            .put_object()
            .bucket(CONFIG_BUCKET)
            .key(KEY)
            .body(document.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
        DocumentVersion {
            etag: stored.e_tag,
            version_id: stored.version_id,
        }
    }

    async fn source(&self, alerter: Alerter) -> ConfigSource {
        self.load(alerter).await.unwrap()
    }

    async fn load(&self, alerter: Alerter) -> Result<ConfigSource, ConfigError> {
        let vars = HashMap::from([
            ("EXPORT_BUCKET".to_owned(), EXPORT_BUCKET.to_owned()),
            (
                "EXPORT_CONFIG".to_owned(),
                format!("s3://{CONFIG_BUCKET}/{KEY}"),
            ),
        ]);
        ConfigSource::load(
            move |name| vars.get(name).cloned(),
            self.s3.clone(),
            alerter,
            Arc::new(self.clock.clone()),
        )
        .await
    }

    /// GETs of the configuration document so far.
    fn reads(&self) -> usize {
        self.requests
            .to(KEY)
            .iter()
            .filter(|r| r.method == "GET")
            .count()
    }
}

fn names(source: &ConfigSource) -> Vec<String> {
    source
        .config()
        .destinations
        .iter()
        .map(|d| d.name.clone())
        .collect()
}

fn no_alerts() -> Alerter {
    Alerter::disabled("test-deployment", "flusher")
}

#[tokio::test]
async fn a_changed_document_is_reloaded_at_the_first_check_after_a_minute() {
    let harness = Harness::start().await;
    harness.upload(ONE).await;
    let source = harness.source(no_alerts()).await;
    assert!(source.reloads());
    assert_eq!(names(&source), vec!["a"]);
    assert_eq!(harness.reads(), 1);

    harness.upload(TWO).await;
    // Within the minute: nothing is sent, the old configuration stays.
    harness.clock.advance(Duration::from_secs(59));
    assert_eq!(source.check().await, CheckOutcome::NotDue);
    assert_eq!(source.current().await.destinations.len(), 1);
    assert_eq!(harness.reads(), 1, "no request within the minute");

    // A minute after the last check: the new ETag is read.
    harness.clock.advance(Duration::from_secs(1));
    let config = source.current().await;
    assert_eq!(
        config
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert_eq!(harness.reads(), 2);
    let t1 = shared::partition::TenantKey::encode("t1");
    assert_eq!(config.destinations_for("airkit-app-events", &t1).count(), 2);

    // Unchanged: one conditional GET answered 304, nothing parsed.
    harness.clock.advance(Duration::from_secs(60));
    assert_eq!(source.check().await, CheckOutcome::Unchanged);
    assert_eq!(harness.reads(), 3);
    let last = harness.requests.to(KEY).pop().unwrap();
    assert_eq!(last.method, "GET");
    assert_eq!(names(&source), vec!["a", "b"]);
    assert_eq!(source.check().await, CheckOutcome::NotDue);
    assert_eq!(harness.reads(), 3);
}

#[tokio::test]
async fn a_bad_document_keeps_the_last_good_one_and_alerts_once() {
    let harness = Harness::start().await;
    let sns = aws_sdk_sns::Client::new(&harness.moto.sdk_config().await);
    let inbox = AlertInbox::create(&sns, &harness.moto.sqs_client().await, "config-alerts")
        .await
        .unwrap();
    let alerter = Alerter::new(
        sns,
        Some(inbox.topic_arn.clone()),
        "test-deployment",
        "flusher",
    );
    harness.upload(ONE).await;
    let source = harness.source(alerter).await;

    harness.upload(BAD).await;
    harness.clock.advance(Duration::from_secs(60));
    match source.check().await {
        CheckOutcome::Rejected { error, etag } => {
            assert_eq!(error.field, "destinations[0].bucket");
            assert!(etag.is_some());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        names(&source),
        vec!["a"],
        "the last good configuration stays"
    );

    let received = inbox.read(1).await.unwrap();
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(
        received[0]["Subject"],
        "s3-export test-deployment: config: other"
    );
    let message = received[0]["Message"].as_str().unwrap();
    assert!(message.contains("destinations[0].bucket"), "{message}");
    assert!(message.contains("InvalidConfiguration"), "{message}");
    assert!(
        message.contains("last good configuration stays"),
        "{message}"
    );
    assert_eq!(
        received[0]["MessageAttributes"]["destination"]["Value"],
        "config"
    );

    // The same bad document is not read or alerted again.
    harness.clock.advance(Duration::from_secs(60));
    assert_eq!(source.check().await, CheckOutcome::Unchanged);
    assert!(inbox.read(0).await.unwrap().is_empty());

    // A fixed document is picked up.
    harness.upload(TWO).await;
    harness.clock.advance(Duration::from_secs(60));
    assert!(matches!(
        source.check().await,
        CheckOutcome::Reloaded { .. }
    ));
    assert_eq!(names(&source), vec!["a", "b"]);
}

#[tokio::test]
async fn an_unreadable_document_keeps_the_last_good_one() {
    let harness = Harness::start().await;
    harness.upload(ONE).await;
    let source = harness.source(no_alerts()).await;
    harness
        .s3
        .delete_object()
        .bucket(CONFIG_BUCKET)
        .key(KEY)
        .send()
        .await
        .unwrap();
    harness.clock.advance(Duration::from_secs(60));
    assert!(matches!(
        source.check().await,
        CheckOutcome::Unreadable { .. }
    ));
    assert_eq!(names(&source), vec!["a"]);
}

#[tokio::test]
async fn an_inline_document_never_reloads() {
    let harness = Harness::start().await;
    let vars = HashMap::from([
        ("EXPORT_BUCKET".to_owned(), EXPORT_BUCKET.to_owned()),
        ("EXPORT_CONFIG".to_owned(), ONE.to_owned()),
    ]);
    let source = ConfigSource::load(
        move |name| vars.get(name).cloned(),
        harness.s3.clone(),
        no_alerts(),
        Arc::new(harness.clock.clone()),
    )
    .await
    .unwrap();
    assert!(!source.reloads());
    assert_eq!(source.document_version(), None);
    harness.clock.advance(Duration::from_secs(3600));
    assert_eq!(source.check().await, CheckOutcome::Fixed);
    assert_eq!(harness.reads(), 0);
}

#[tokio::test]
async fn the_flusher_runs_each_invocation_with_the_current_configuration() {
    let harness = Harness::start().await;
    harness.upload(ONE).await;
    let source = Arc::new(harness.source(no_alerts()).await);
    let flusher = flusher::Flusher::from_source(source.clone(), harness.s3.clone());
    assert_eq!(flusher.config.destinations.len(), 1);
    harness.upload(TWO).await;
    harness.clock.advance(Duration::from_secs(60));
    let event = lambda_runtime::LambdaEvent::new(
        serde_json::json!({"time": "2026-11-22T10:15:00Z"}),
        lambda_runtime::Context::default(),
    );
    flusher::handle(&flusher, event).await.unwrap();
    // The invocation checked (and reloaded) the document.
    assert_eq!(harness.reads(), 2);
    assert_eq!(names(&source), vec!["a", "b"]);
}

#[tokio::test]
async fn the_batcher_accepts_a_stream_added_to_the_document_after_the_reload() {
    use batcher::records::{sqs_record, with_stream};
    let harness = Harness::start().await;
    harness.upload(ONE).await;
    let source = Arc::new(harness.source(no_alerts()).await);
    let batcher = batcher::Batcher::from_source(source, harness.s3.clone());
    let order = |id: &str| {
        with_stream(
            sqs_record(
                id,
                r#"{"account":"t1","ts":"2026-11-22T10:00:00Z","total":3}"#,
                1_795_341_600_000,
                "arn:aws:sqs:us-east-1:123456789012:events",
            ),
            "orders",
        )
    };
    let keys = |prefix: &'static str| {
        let s3 = harness.s3.clone();
        async move {
            s3_export::inspect::list_keys(&s3, EXPORT_BUCKET, prefix)
                .await
                .unwrap()
        }
    };

    // `orders` is not configured yet: the record is refused with its reason.
    let response = batcher::process(&batcher, &[order("m1")], 1_795_341_600_000, "req-1")
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(keys("errors/").await.len(), 1);
    assert!(keys("staging/").await.is_empty());

    // The document gains the stream; a minute later the next invocation
    // reads it and stages the record.
    harness
        .upload(
            r#"{"streams":{"orders":{"profile":"generic","tenant":"/account","time":"/ts"}},
                "destinations":[{"name":"a","bucket":"dest-a"}]}"#,
        )
        .await;
    harness.clock.advance(Duration::from_secs(60));
    let response = batcher::process(&batcher, &[order("m2")], 1_795_341_660_000, "req-2")
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let staged = keys("staging/").await;
    assert_eq!(staged.len(), 1, "{staged:?}");
    let object = s3_export::inspect::read_object(&harness.s3, EXPORT_BUCKET, &staged[0])
        .await
        .unwrap();
    let segments = shared::staged::read_index(&object).unwrap().segments;
    assert_eq!(
        segments
            .iter()
            .map(|s| (s.stream.as_str(), s.tenant.as_str()))
            .collect::<Vec<_>>(),
        [("orders", "t1")],
        "{staged:?}"
    );
    assert_eq!(harness.reads(), 2);
}

#[tokio::test]
async fn verify_checks_the_destinations_of_the_current_configuration() {
    let harness = Harness::start().await;
    harness.upload(ONE).await;
    let source = Arc::new(harness.source(no_alerts()).await);
    let mut verifier = verify::Verifier::new(
        Ok(shared::Config::clone(&source.config())),
        harness.s3.clone(),
        no_alerts(),
        "test-deployment",
        Vec::new(),
    );
    verifier.source = Some(source);
    let destinations = |report: &serde_json::Value| -> Vec<String> {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["destination"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(destinations(&invoke(&verifier).await), vec!["a"]);
    harness.upload(TWO).await;
    harness.clock.advance(Duration::from_secs(60));
    assert_eq!(destinations(&invoke(&verifier).await), vec!["a", "b"]);
}

async fn invoke(verifier: &verify::Verifier) -> serde_json::Value {
    let event =
        lambda_runtime::LambdaEvent::new(serde_json::json!({}), lambda_runtime::Context::default());
    verify::handle(verifier, event).await.unwrap()
}

/// `document` padded with trailing spaces (still the same valid JSON) to
/// `bytes` bytes.
fn padded(document: &str, bytes: usize) -> String {
    format!("{document}{}", " ".repeat(bytes - document.len()))
}

#[tokio::test]
async fn a_document_larger_than_the_limit_keeps_the_last_good_one_and_alerts() {
    let harness = Harness::start().await;
    let sns = aws_sdk_sns::Client::new(&harness.moto.sdk_config().await);
    let inbox = AlertInbox::create(&sns, &harness.moto.sqs_client().await, "config-alerts")
        .await
        .unwrap();
    let alerter = Alerter::new(
        sns,
        Some(inbox.topic_arn.clone()),
        "test-deployment",
        "flusher",
    );
    harness.upload(ONE).await;
    let source = harness.source(alerter).await;

    // One byte past the limit: refused for its size alone (it is valid).
    let refused = harness.upload(&padded(TWO, MAX_DOCUMENT_BYTES + 1)).await;
    harness.clock.advance(Duration::from_secs(60));
    match source.check().await {
        CheckOutcome::Rejected { error, etag } => {
            assert_eq!(error.field, "EXPORT_CONFIG");
            assert!(
                error.message.contains("larger than 4194304 bytes"),
                "{error}"
            );
            assert_eq!(etag, refused.etag);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        names(&source),
        vec!["a"],
        "the last good configuration stays"
    );
    let received = inbox.read(1).await.unwrap();
    assert_eq!(received.len(), 1, "{received:#?}");
    let message = received[0]["Message"].as_str().unwrap();
    assert!(message.contains("InvalidConfiguration"), "{message}");
    assert!(message.contains("larger than"), "{message}");

    // Not read or alerted again until it changes.
    harness.clock.advance(Duration::from_secs(60));
    assert_eq!(source.check().await, CheckOutcome::Unchanged);
    assert!(inbox.read(0).await.unwrap().is_empty());

    // Exactly the limit is read.
    harness.upload(&padded(TWO, MAX_DOCUMENT_BYTES)).await;
    harness.clock.advance(Duration::from_secs(60));
    assert!(matches!(
        source.check().await,
        CheckOutcome::Reloaded { .. }
    ));
    assert_eq!(names(&source), vec!["a", "b"]);
}

#[tokio::test]
async fn a_first_document_larger_than_the_limit_is_refused_naming_the_variable() {
    let harness = Harness::start().await;
    harness.upload(&padded(ONE, MAX_DOCUMENT_BYTES + 1)).await;
    let error = harness.load(no_alerts()).await.unwrap_err();
    assert_eq!(error.field, "EXPORT_CONFIG");
    assert!(error.message.contains("larger than"), "{error}");
}

/// In a versioned bucket (the template versions the export bucket), the
/// document in use is known by its ETag and version id; a refused document
/// never becomes it.
#[tokio::test]
async fn the_document_in_use_is_known_by_its_etag_and_version_id() {
    let harness = Harness::start().await;
    harness
        .s3
        .put_bucket_versioning()
        .bucket(CONFIG_BUCKET)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let first = harness.upload(ONE).await;
    assert!(first.version_id.is_some(), "the bucket is versioned");
    let source = harness.source(no_alerts()).await;
    assert_eq!(source.document_version(), Some(first.clone()));

    harness.upload(BAD).await;
    harness.clock.advance(Duration::from_secs(60));
    assert!(matches!(
        source.check().await,
        CheckOutcome::Rejected { .. }
    ));
    assert_eq!(source.document_version(), Some(first));

    let third = harness.upload(TWO).await;
    harness.clock.advance(Duration::from_secs(60));
    assert_eq!(
        source.check().await,
        CheckOutcome::Reloaded {
            etag: third.etag.clone(),
            version_id: third.version_id.clone(),
        }
    );
    assert_eq!(source.document_version(), Some(third));
}
