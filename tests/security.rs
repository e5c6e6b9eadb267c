//! Security properties, each proven here or named in the README's
//! "Failure modes" section where an older test proves it:
//! - tenant ids, stream names and key templates cannot make a key leave its
//!   prefix;
//! - no configuration or input makes the pipeline write outside the
//!   configured buckets;
//! - the logs carry no event bodies, credentials or pre-signed URLs;
//! - the verify function's writes carry `ExpectedBucketOwner`;
//! - the template's export bucket refuses requests without TLS;
//! - the template's roles grant what each destination option needs, only
//!   the named principal may change `config/`, and `config/` is versioned
//!   (the `template` module).

use std::io::Write;
use std::sync::{Arc, Mutex};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use batcher::Batcher;
use flusher::{Flusher, Trigger};
use lambda_runtime::{Context, LambdaEvent};
use s3_export::moto::MotoServer;
use s3_export::recorder::RequestRecorder;
use serde_json::json;
use shared::Config;
use shared::key_layout::KeyLayout;
use shared::partition::{Hour, PartitionKey, TenantKey};

mod template;

const EXPORT: &str = "sec-export";
const DESTINATION: &str = "sec-destination";
const OTHER: &str = "sec-other";
/// 2026-11-22T09:00Z, the hour every message is sent in.
const NINE: i64 = 1_795_338_000_000;

/// Tenant ids an attacker controls, each trying to climb out of a prefix.
const HOSTILE_TENANTS: [&str; 12] = [
    "..",
    ".",
    "../sec-other",
    "../../../etc/passwd",
    "a/../../b",
    "/absolute",
    "%2e%2e%2f",
    "..\\..\\x",
    "tenant\u{0}nul",
    "a\nb",
    "s3://sec-other/key",
    "?versionId=1&x=../",
];

fn partition(tenant: &str, stream: &str) -> PartitionKey {
    PartitionKey {
        hour: Hour::containing(NINE),
        stream: stream.to_owned(),
        tenant: TenantKey::encode(tenant),
    }
}

/// True when `key` is `prefix` followed by segments none of which is empty,
/// `.` or `..`.
fn stays_under(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .split('/')
                .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
    })
}

#[test]
fn hostile_tenants_render_destination_keys_under_the_prefix_in_every_layout() {
    for spec in [
        "amplitude",
        "date-folders",
        "hive",
        "{stream}/{tenant}/{date}/{HH}/{part5}.{ext}",
        "{tenant}_{yyyy}-{MM}-{dd}_{H}#{part}.{ext}",
    ] {
        let layout = KeyLayout::parse(spec, true, false).unwrap();
        for tenant in HOSTILE_TENANTS {
            let key = layout.render("exports/", &partition(tenant, "airkit-app-events"), 1);
            assert!(
                stays_under(&key, "exports/"),
                "layout {spec}, tenant {tenant:?}: {key}"
            );
        }
    }
}

#[test]
fn key_templates_that_climb_out_are_refused_naming_the_field() {
    for template in [
        "../{tenant}/{date}/{part}.{ext}",
        "{tenant}/../../{date}/{part}.{ext}",
        "/{tenant}/{date}/{part}.{ext}",
        "{tenant}//{date}/{part}.{ext}",
        "{tenant}/./{date}/{part}.{ext}",
    ] {
        let document = json!({"destinations": [{
            "name": "d", "bucket": DESTINATION, "prefix": "exports/", "layout": template, "shared": true,
        }]})
        .to_string();
        let error = Config::from_sources(
            |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
            Some(&document),
        )
        .expect_err(template);
        assert_eq!(error.field, "destinations[0].layout", "{template}: {error}");
    }
}

#[test]
fn stream_names_and_prefixes_that_climb_out_are_refused_naming_the_field() {
    let cases = [
        (
            json!({"streams": {"../x": {"tenant": "/t", "time": "/ts"}}}),
            "streams.../x",
        ),
        (
            json!({"streams": {"a/b": {"tenant": "/t", "time": "/ts"}}}),
            "streams.a/b",
        ),
        (
            json!({"destinations": [{"name": "d", "bucket": DESTINATION, "prefix": "../up/"}]}),
            "destinations[0].prefix",
        ),
        (
            json!({"destinations": [{"name": "d", "bucket": DESTINATION, "prefix": "/root/"}]}),
            "destinations[0].prefix",
        ),
        (
            json!({"destinations": [{"name": "d", "bucket": "../sec-other"}]}),
            "destinations[0].bucket",
        ),
    ];
    for (document, field) in cases {
        let error = Config::from_sources(
            |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
            Some(&document.to_string()),
        )
        .expect_err(field);
        assert_eq!(error.field, field, "{document}: {error}");
    }
    let error = Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| "sec-export/../sec-other".to_owned()),
        None,
    )
    .unwrap_err();
    assert_eq!(error.field, "EXPORT_BUCKET");
}

fn message(id: &str, body: &str, stream: Option<&str>) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(id.to_owned());
    message.receipt_handle = Some(format!("receipt-{id}"));
    message.body = Some(body.to_owned());
    message.event_source_arn = Some("arn:aws:sqs:us-east-1:123456789012:s3-export-events".into());
    message
        .attributes
        .insert("SentTimestamp".into(), (NINE + 60_000).to_string());
    if let Some(stream) = stream {
        let mut attribute = SqsMessageAttribute::default();
        attribute.data_type = Some("String".into());
        attribute.string_value = Some(stream.to_owned());
        message
            .message_attributes
            .insert("stream".into(), attribute);
    }
    message
}

/// A body marker that must never reach a log line.
const BODY_MARKER: &str = "BODY-MARKER-7f3a";

/// A batch of hostile messages: tenants climbing out, stream attributes
/// naming paths and other buckets, events naming other buckets, malformed
/// records; every body carries [`BODY_MARKER`].
fn hostile_batch() -> SqsEvent {
    let mut records = Vec::new();
    for (n, tenant) in HOSTILE_TENANTS.iter().enumerate() {
        let event = json!({
            "organizationId": tenant, "eventTime": "2026-11-22T09:01:00Z", "type": "Session",
            "kind": "session_start", "bucket": OTHER, "key": "../../escape", "note": BODY_MARKER,
        });
        records.push(message(&format!("t{n}"), &event.to_string(), None));
    }
    for (n, stream) in [
        "../../sec-other",
        "sec-other/x",
        "airkit-app-events/../x",
        "",
    ]
    .iter()
    .enumerate()
    {
        let event = json!({"organizationId": "acme", "eventTime": "2026-11-22T09:01:00Z", "type": "Session", "note": BODY_MARKER});
        records.push(message(&format!("s{n}"), &event.to_string(), Some(stream)));
    }
    records.push(message(
        "bad-json",
        &format!("{{\"organizationId\": \"{BODY_MARKER}"),
        None,
    ));
    records.push(message(
        "bad-time",
        &json!({"organizationId": "acme", "eventTime": BODY_MARKER, "type": "Session"}).to_string(),
        None,
    ));
    records.push(message(
        "bad-tenant",
        &json!({"organizationId": {"nested": BODY_MARKER}, "eventTime": "2026-11-22T09:01:00Z", "type": "Session"}).to_string(),
        None,
    ));
    records.push(message(
        "bad-type",
        &json!({"organizationId": "acme", "eventTime": "2026-11-22T09:01:00Z", "type": [BODY_MARKER]}).to_string(),
        None,
    ));
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

fn config() -> Config {
    let document = json!({"destinations": [{
        "name": "d", "bucket": DESTINATION, "prefix": "exports/", "shared": true,
        "accountId": "123456789012",
    }]})
    .to_string();
    Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
        Some(&document),
    )
    .unwrap()
}

async fn moto_with_buckets() -> (MotoServer, aws_sdk_s3::Client) {
    let moto = MotoServer::start().await.unwrap();
    let s3 = moto.s3_client().await;
    for bucket in [EXPORT, DESTINATION, OTHER] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    (moto, s3)
}

/// The batcher and the flusher over the hostile batch, with every request
/// recorded; returns the recorder.
async fn run_hostile_pipeline(s3: &aws_sdk_s3::Client) -> RequestRecorder {
    let recorder = RequestRecorder::new();
    let recorded = recorder.wrap(s3);
    let batcher = Batcher::new(config(), recorded.clone());
    let mut context = Context::default();
    context.request_id = "../../sec-other/req".into();
    let response = batcher::handle(&batcher, LambdaEvent::new(hostile_batch(), context))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let flusher = Flusher::new(config(), recorded);
    let trigger =
        Trigger::from_payload(&json!({"flush": {"until": "2026-11-22T10:00:00Z"}})).unwrap();
    let report = flusher::run(&flusher, &trigger, None).await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(report.events > 0);
    recorder
}

#[tokio::test]
async fn hostile_input_writes_only_inside_the_configured_buckets_and_prefixes() {
    let (_moto, s3) = moto_with_buckets().await;
    let recorder = run_hostile_pipeline(&s3).await;

    let requests = recorder.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        // Path-style: /<bucket>/<key>?query
        let path = request.uri.split("://").nth(1).unwrap_or(&request.uri);
        let path = &path[path.find('/').unwrap_or(0)..];
        let path = path.split('?').next().unwrap();
        let mut segments = path.trim_start_matches('/').splitn(2, '/');
        let bucket = segments.next().unwrap();
        let key = percent_encoding::percent_decode_str(segments.next().unwrap_or_default())
            .decode_utf8_lossy()
            .into_owned();
        assert!(
            bucket == EXPORT || bucket == DESTINATION,
            "{} {} went to bucket {bucket}",
            request.method,
            request.uri
        );
        if request.method == "PUT" && bucket == DESTINATION {
            assert!(stays_under(&key, "exports/"), "{key}");
        }
        if request.method == "PUT" && bucket == EXPORT {
            assert!(
                ["staging/", "errors/", "archive/", "manifests/", "pending/"]
                    .iter()
                    .any(|prefix| stays_under(&key, prefix)),
                "{key}"
            );
        }
    }
    // Nothing reached the other bucket, whatever the events said.
    let other = s3.list_objects_v2().bucket(OTHER).send().await.unwrap();
    assert_eq!(other.key_count(), Some(0));
    // Every destination write carried the owner check.
    let destination_writes: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "PUT" && r.uri.contains(&format!("/{DESTINATION}/")))
        .collect();
    assert!(!destination_writes.is_empty());
    for write in destination_writes {
        assert_eq!(
            write
                .headers
                .get("x-amz-expected-bucket-owner")
                .map(String::as_str),
            Some("123456789012"),
            "{}",
            write.uri
        );
    }
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

const ACCESS_KEY: &str = "AKIAMARKERACCESS0001";
const SECRET_KEY: &str = "SecretMarkerKey/abcdefghijklmnopqrstu";
const SIGNATURE: &str = "SignatureMarker0123456789abcdef";

/// The real handlers (batcher, flusher with a destination that refuses,
/// verify answering CloudFormation at a pre-signed URL) at debug level, in
/// the JSON format Lambda uses, with credentials that carry markers.
#[tokio::test(flavor = "current_thread")]
async fn logs_carry_no_event_bodies_credentials_or_presigned_urls() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,batcher=trace,flusher=trace,verify=trace,shared=trace",
        ))
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (moto, _) = moto_with_buckets().await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            Some("SessionTokenMarker".into()),
            None,
            "markers",
        ))
        .load()
        .await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    run_hostile_pipeline(&s3).await;

    // A destination that does not exist: the flusher logs its diagnosis.
    let broken = Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
        Some(
            &json!({"destinations": [{"name": "gone", "bucket": "sec-missing-bucket", "shared": true}]})
                .to_string(),
        ),
    )
    .unwrap();
    let batcher = Batcher::new(broken.clone(), s3.clone());
    let mut context = Context::default();
    context.request_id = "second".into();
    batcher::handle(&batcher, LambdaEvent::new(hostile_batch(), context))
        .await
        .unwrap();
    let flusher = Flusher::new(broken.clone(), s3.clone());
    let trigger =
        Trigger::from_payload(&json!({"flush": {"until": "2026-11-22T10:00:00Z"}})).unwrap();
    flusher::run(&flusher, &trigger, None).await.unwrap();

    // Verify as a custom resource, answering at a pre-signed URL that
    // nothing listens on (the answer fails, and is logged).
    let verifier = verify::Verifier::new(
        Ok(broken),
        s3.clone(),
        shared::alert::Alerter::disabled("sec", verify::SOURCE),
        "sec",
        vec![],
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let request = json!({
        "RequestType": "Create", "RequestId": "r-1",
        "ResponseURL": format!("http://127.0.0.1:{port}/cfn?X-Amz-Credential={ACCESS_KEY}&X-Amz-Signature={SIGNATURE}"),
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1",
        "ResourceType": "Custom::DestinationVerify", "LogicalResourceId": "Verify",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:v", "Destination": "gone"},
    });
    let mut context = Context::default();
    context.request_id = "verify".into();
    let _ = verify::handle(&verifier, LambdaEvent::new(request, context)).await;

    let logs = captured.text();
    assert!(
        logs.lines().count() >= 3,
        "too few log lines to prove anything:\n{logs}"
    );
    for secret in [
        BODY_MARKER,
        ACCESS_KEY,
        SECRET_KEY,
        SIGNATURE,
        "SessionTokenMarker",
    ] {
        assert!(
            !logs.contains(secret),
            "the logs contain {secret}:\n{}",
            logs.lines()
                .filter(|line| line.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test]
async fn verify_writes_carry_the_expected_bucket_owner() {
    let (_moto, s3) = moto_with_buckets().await;
    let recorder = RequestRecorder::new();
    let verifier = verify::Verifier::new(
        Ok(config()),
        recorder.wrap(&s3),
        shared::alert::Alerter::disabled("sec", verify::SOURCE),
        "sec",
        vec![],
    );
    let mut context = Context::default();
    context.request_id = "verify".into();
    let result = verify::handle(&verifier, LambdaEvent::new(json!({}), context))
        .await
        .unwrap();
    assert_eq!(result["ok"], true, "{result}");
    let writes: Vec<_> = recorder
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert!(!writes.is_empty());
    for write in writes {
        assert_eq!(
            write
                .headers
                .get("x-amz-expected-bucket-owner")
                .map(String::as_str),
            Some("123456789012"),
            "{}",
            write.uri
        );
    }
}

/// The template's export bucket policy denies every S3 action on the bucket
/// and its objects to any principal when `aws:SecureTransport` is false.
#[test]
fn template_export_bucket_refuses_requests_without_tls() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml")).unwrap();
    let documents = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    let template = &documents[0];
    let resources = template["Resources"].as_hash().unwrap();
    let policies: Vec<&yaml_rust2::Yaml> = resources
        .values()
        .filter(|resource| resource["Type"].as_str() == Some("AWS::S3::BucketPolicy"))
        .filter(|resource| resource["Properties"]["Bucket"].as_str() == Some("ExportBucket"))
        .collect();
    assert_eq!(policies.len(), 1, "one policy on the export bucket");
    let statements = policies[0]["Properties"]["PolicyDocument"]["Statement"]
        .as_vec()
        .unwrap();
    let denies_plain_http = statements.iter().any(|statement| {
        let resources: Vec<&str> = statement["Resource"]
            .as_vec()
            .map(|list| list.iter().filter_map(|r| r.as_str()).collect())
            .unwrap_or_default();
        statement["Effect"].as_str() == Some("Deny")
            && statement["Principal"].as_str() == Some("*")
            && statement["Action"].as_str() == Some("s3:*")
            && statement["Condition"]["Bool"]["aws:SecureTransport"].as_str() == Some("false")
            && resources.contains(&"ExportBucket.Arn")
            && resources.contains(&"${ExportBucket.Arn}/*")
    });
    assert!(denies_plain_http, "{statements:#?}");
}

#[test]
fn the_tenant_key_of_every_hostile_tenant_is_one_plain_segment() {
    for tenant in HOSTILE_TENANTS {
        let segment = TenantKey::encode(tenant);
        let segment = segment.as_str();
        assert!(
            !segment.is_empty()
                && !segment.contains('/')
                && segment != "."
                && segment != ".."
                && !segment.contains('\0'),
            "{tenant:?} -> {segment:?}"
        );
    }
}
