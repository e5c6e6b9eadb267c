//! Security properties, each proven here or named in docs/security.md or
//! the README's "Failure modes" section where another test proves it:
//! - tenant ids, stream names and key templates cannot make a key leave its
//!   prefix, and no two tenants' files can share a key (a template is
//!   accepted only when its keys read back to their tenant);
//! - no configuration or input makes the pipeline write outside the
//!   configured buckets;
//! - the logs carry no event bodies, credentials or pre-signed URLs;
//! - the verify function's writes carry `ExpectedBucketOwner`;
//! - the template's export bucket refuses requests without TLS;
//! - an event whose routing field appears twice is routed nowhere, and with
//!   a `senders` mapping a sender reaches only its own tenants.
//! - the template's roles grant what each destination option needs, only
//!   the named principal may change `config/`, and `config/` is versioned
//!   (the `template` module).

use std::io::Write;
use std::sync::{Arc, Mutex};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use batcher::Batcher;
use flusher::{Flusher, Trigger};
use lambda_runtime::{Context, LambdaEvent};
use s3_export::inspect::read_gzip_ndjson;
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
fn hostile_tenants_keys_read_back_to_their_own_tenant_in_every_layout() {
    for spec in ["amplitude", "date-folders", "hive"] {
        let layout = KeyLayout::parse(spec, false, false).unwrap();
        for tenant in HOSTILE_TENANTS {
            let partition = partition(tenant, "airkit-app-events");
            let key = layout.render("exports/", &partition, 11);
            let fields = layout
                .read_key(key.strip_prefix("exports/").unwrap())
                .unwrap_or_else(|| panic!("layout {spec}: `{key}` does not read back"));
            assert_eq!(
                (fields.tenant.as_ref(), fields.hour, fields.part),
                (Some(&partition.tenant), partition.hour, 11),
                "layout {spec}, tenant {tenant:?}: {key}"
            );
        }
    }
}

#[test]
fn key_templates_whose_keys_could_meet_are_refused_naming_the_field() {
    for template in [
        // Tenant `acme1` part 1 and tenant `acme` part 11.
        "{stream}/{date}/{HH}/{tenant}{part}.{ext}",
        // Hour 1 part 11 and hour 11 part 1.
        "{stream}/{tenant}/{date}_{H}{part}.{ext}",
        // Tenant `a-b` of stream `c` and tenant `a` of stream `b-c`.
        "{tenant}-{stream}/{date}/{HH}/{part}.{ext}",
    ] {
        let document = json!({"destinations": [{
            "name": "d", "bucket": DESTINATION, "prefix": "exports/", "layout": template,
        }]})
        .to_string();
        let error = Config::from_sources(
            |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
            Some(&document),
        )
        .expect_err(template);
        assert_eq!(error.field, "destinations[0].layout", "{template}: {error}");
        assert!(
            error.message.contains(&format!("key layout `{template}`")),
            "{error}"
        );
    }
}

#[test]
fn destinations_whose_prefixes_overlap_are_refused_unless_both_are_shared() {
    let document = |inner_shared: bool| {
        json!({"destinations": [
            {"name": "everyone", "bucket": DESTINATION, "prefix": "exports/", "shared": true},
            {"name": "acme", "bucket": DESTINATION, "prefix": "exports/acme/", "tenants": ["acme"],
             "shared": inner_shared},
        ]})
        .to_string()
    };
    let load = |document: String| {
        Config::from_sources(
            |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
            Some(&document),
        )
    };
    let error = load(document(false)).unwrap_err();
    assert_eq!(error.field, "destinations[1].bucket", "{error}");
    assert!(
        error.message.contains("`everyone`") && error.message.contains("`acme`"),
        "{error}"
    );
    assert!(load(document(true)).is_ok());
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

/// Tenant ids that ambiguous templates would mix: `acme` part 11 and
/// `acme1` part 1, ids holding `_`, `#`, `.` and a date.
const LOOKALIKE_TENANTS: [&str; 7] = ["acme", "acme1", "1", "11", "a_2026-11-22_1", "x#1", "_._"];

#[tokio::test]
async fn lookalike_tenants_each_get_files_whose_keys_read_back_to_them() {
    let (_moto, s3) = moto_with_buckets().await;
    let document = json!({"destinations": [
        {"name": "amplitude", "bucket": DESTINATION, "prefix": "amplitude/"},
        {"name": "custom", "bucket": DESTINATION, "prefix": "custom/",
         "layout": "{stream}/{date}/{tenant}.{H}.{part}{ext}"},
    ]})
    .to_string();
    let config = Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
        Some(&document),
    )
    .unwrap();
    let mut event = SqsEvent::default();
    for (t, tenant) in LOOKALIKE_TENANTS.iter().enumerate() {
        for n in 0..3 {
            let body = json!({
                "organizationId": tenant, "eventTime": "2026-11-22T09:01:00Z", "type": "Session",
                "kind": "session_start", "sessionId": format!("s{t}-{n}"),
            });
            event
                .records
                .push(message(&format!("t{t}-{n}"), &body.to_string(), None));
        }
    }
    let batcher = Batcher::new(config.clone(), s3.clone());
    let response = batcher::handle(&batcher, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let flusher = Flusher::new(config.clone(), s3.clone());
    let trigger =
        Trigger::from_payload(&json!({"flush": {"until": "2026-11-22T10:00:00Z"}})).unwrap();
    let report = flusher::run(&flusher, &trigger, None).await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");

    for destination in &config.destinations {
        let files = read_gzip_ndjson(&s3, DESTINATION, &destination.prefix)
            .await
            .unwrap();
        assert_eq!(files.len(), LOOKALIKE_TENANTS.len(), "{}", destination.name);
        let mut events_by_tenant = std::collections::BTreeMap::new();
        for file in &files {
            let fields = destination
                .layout
                .read_key(file.key.strip_prefix(&destination.prefix).unwrap())
                .unwrap_or_else(|| panic!("`{}` does not read back", file.key));
            assert_eq!(fields.hour, Hour::containing(NINE), "{}", file.key);
            let tenant = fields.tenant.expect("the layouts have {tenant}");
            for line in &file.lines {
                let event: serde_json::Value = serde_json::from_str(line).unwrap();
                let id = event["organizationId"].as_str().unwrap().to_owned();
                assert_eq!(TenantKey::encode(&id), tenant, "{}: {line}", file.key);
                *events_by_tenant.entry(id).or_insert(0) += 1;
            }
        }
        let want: std::collections::BTreeMap<String, usize> = LOOKALIKE_TENANTS
            .iter()
            .map(|tenant| ((*tenant).to_owned(), 3))
            .collect();
        assert_eq!(events_by_tenant, want, "{}", destination.name);
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

/// The records of every errors/ file in the export bucket.
async fn errors_records(s3: &aws_sdk_s3::Client) -> Vec<serde_json::Value> {
    s3_export::inspect::read_gzip_ndjson(s3, EXPORT, "errors/")
        .await
        .unwrap()
        .iter()
        .flat_map(|file| file.lines.iter().map(|l| serde_json::from_str(l).unwrap()))
        .collect()
}

/// Every staged event in the export bucket, without its provenance.
async fn staged_events(s3: &aws_sdk_s3::Client) -> Vec<String> {
    s3_export::inspect::read_staged_events(s3, EXPORT)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|file| file.lines)
        .collect()
}

/// Every exported event under `prefix` in the destination bucket.
async fn exported_events(s3: &aws_sdk_s3::Client, prefix: &str) -> Vec<String> {
    s3_export::inspect::read_export_files(s3, DESTINATION, prefix)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|file| file.lines)
        .collect()
}

/// The issue's event, byte for byte: this reader used to route it by the
/// first `organizationId` (acme) while most JSON readers see the last.
const DUPLICATED_TENANT: &str = r#"{"organizationId":"acme","organizationId":"evil"}"#;

/// The same duplicate in an event that is otherwise valid, so that without
/// the check it would be exported.
const DUPLICATED_TENANT_VALID: &str = r#"{"organizationId":"acme","organizationId":"evil","eventTime":"2026-11-22T09:01:00Z","type":"session_start"}"#;

#[tokio::test]
async fn an_event_with_a_repeated_tenant_reaches_no_staging_and_no_destination() {
    let (_moto, s3) = moto_with_buckets().await;
    let document = json!({"destinations": [
        {"name": "acme", "bucket": DESTINATION, "prefix": "acme/", "tenants": ["acme"]},
        {"name": "evil", "bucket": DESTINATION, "prefix": "evil/", "tenants": ["evil"]},
    ]})
    .to_string();
    let config = || {
        Config::from_sources(
            |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
            Some(&document),
        )
        .unwrap()
    };
    let good = |tenant: &str| {
        format!(
            r#"{{"organizationId":"{tenant}","eventTime":"2026-11-22T09:02:00Z","type":"session_start"}}"#
        )
    };
    let mut batch = SqsEvent::default();
    batch.records = vec![
        message("dup", DUPLICATED_TENANT, None),
        message("dup-valid", DUPLICATED_TENANT_VALID, None),
        message("acme", &good("acme"), None),
        message("evil", &good("evil"), None),
    ];
    let batcher = Batcher::new(config(), s3.clone());
    let response = batcher::handle(&batcher, LambdaEvent::new(batch, Context::default()))
        .await
        .unwrap();
    assert!(
        response.batch_item_failures.is_empty(),
        "refusals are acknowledged"
    );

    let errors = errors_records(&s3).await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    for (record, body) in errors
        .iter()
        .zip([DUPLICATED_TENANT, DUPLICATED_TENANT_VALID])
    {
        assert_eq!(record["reason"], "duplicate_field", "{record}");
        assert_eq!(record["body"], body, "the original bytes");
        assert!(
            record["detail"]
                .as_str()
                .unwrap()
                .contains("field `organizationId` appears 2 times"),
            "{record}"
        );
    }
    let mut staged = staged_events(&s3).await;
    staged.sort();
    assert_eq!(
        staged,
        vec![good("acme"), good("evil")],
        "co-batched events staged"
    );

    let flusher = Flusher::new(config(), s3.clone());
    let trigger =
        Trigger::from_payload(&json!({"flush": {"until": "2026-11-22T10:00:00Z"}})).unwrap();
    let report = flusher::run(&flusher, &trigger, None).await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(exported_events(&s3, "acme/").await, vec![good("acme")]);
    assert_eq!(exported_events(&s3, "evil/").await, vec![good("evil")]);
}

/// The `SenderId` moto gives every message it receives (an IAM user id).
const MOTO_SENDER_ID: &str = "AIDAIT2UOQQY3AUEKVGXU";

#[tokio::test]
async fn a_mapped_sender_reaches_only_its_tenants_through_sqs() {
    use s3_export::esm::{EventSourceMapping, approximate_message_count, create_queue_with_dlq};
    use std::time::Duration;

    let (moto, s3) = moto_with_buckets().await;
    let sqs = moto.sqs_client().await;
    let queues = create_queue_with_dlq(&sqs, "events", 3, 5).await.unwrap();
    let event = |tenant: &str, n: u32| {
        format!(
            r#"{{"organizationId":"{tenant}","eventTime":"2026-11-22T09:0{n}:00Z","type":"session_start"}}"#
        )
    };
    let bodies = [
        event("acme", 1),
        event("evil", 2),
        // One message of two events: only the other tenant's is refused.
        format!("{}\n{}", event("acme-eu", 3), event("evil", 4)),
    ];
    for body in &bodies {
        sqs.send_message()
            .queue_url(&queues.url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    let document = json!({"senders": {MOTO_SENDER_ID: ["acme", "acme-eu"]}}).to_string();
    let config = Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
        Some(&document),
    )
    .unwrap();
    let batcher = Batcher::new(config, s3.clone());
    let mapping = EventSourceMapping::for_queue(sqs.clone(), &queues.url, 10, Duration::ZERO)
        .await
        .unwrap();
    let handler = |event: SqsEvent| {
        let batcher = &batcher;
        async move {
            batcher::handle(batcher, LambdaEvent::new(event, Context::default()))
                .await
                .map_err(lambda_runtime::Error::from)
        }
    };
    let report = mapping
        .drain(handler, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(report.received, 3);
    assert!(report.failed.is_empty(), "refusals are acknowledged");
    assert_eq!(
        approximate_message_count(&sqs, &queues.dlq_url)
            .await
            .unwrap(),
        0
    );

    let errors = errors_records(&s3).await;
    let mut refused: Vec<(String, String)> = errors
        .iter()
        .map(|record| {
            assert_eq!(record["reason"], "tenant_not_allowed", "{record}");
            assert_eq!(record["attributes"]["SenderId"], MOTO_SENDER_ID);
            let detail = record["detail"].as_str().unwrap();
            assert!(
                detail.contains(&format!("sender `{MOTO_SENDER_ID}`")) && detail.contains("`evil`"),
                "{detail}"
            );
            (
                record["body"].as_str().unwrap().to_owned(),
                record["part"]["index"].to_string(),
            )
        })
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        vec![
            (event("evil", 2), "null".to_owned()),
            (event("evil", 4), "1".to_owned())
        ]
    );
    let mut staged = staged_events(&s3).await;
    staged.sort();
    assert_eq!(staged, vec![event("acme", 1), event("acme-eu", 3)]);
}

/// The IAM action and resource (as the evaluated template names them:
/// `ExportBucket.Arn/<key>`) of each S3 request `recorded` made, and the
/// `s3:prefix` of a listing; a request to another bucket than `bucket` is
/// named by its bucket, so that no statement of the export bucket allows it.
fn iam_requests(
    recorded: &[s3_export::recorder::Recorded],
    bucket: &str,
) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    for request in recorded {
        let url = path_and_query(&request.uri);
        let (path, query) = url;
        let path = path.trim_start_matches('/');
        let (in_bucket, key) = path.split_once('/').unwrap_or((path, ""));
        let resource_of = |key: &str| match in_bucket == bucket {
            true => format!("ExportBucket.Arn/{key}"),
            false => format!("arn:aws:s3:::{in_bucket}/{key}"),
        };
        let param = |name: &str| {
            query.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then(|| percent_decode(v))
            })
        };
        let method = request.method.as_str();
        if key.is_empty() {
            if method == "GET" && param("list-type").is_some() {
                let resource = if in_bucket == bucket {
                    "ExportBucket.Arn".to_owned()
                } else {
                    format!("arn:aws:s3:::{in_bucket}")
                };
                out.push((
                    "s3:ListBucket".to_owned(),
                    resource,
                    Some(param("prefix").unwrap_or_default()),
                ));
            } else if method == "POST" && param("delete").is_some() {
                out.push(("s3:DeleteObject".to_owned(), resource_of("*"), None));
            } else {
                out.push((format!("s3:{method}Bucket"), resource_of(""), None));
            }
            continue;
        }
        let key = percent_decode(key);
        match method {
            "GET" | "HEAD" => out.push(("s3:GetObject".to_owned(), resource_of(&key), None)),
            "PUT" | "POST" => {
                out.push(("s3:PutObject".to_owned(), resource_of(&key), None));
                if let Some(source) = request.headers.get("x-amz-copy-source") {
                    let source = percent_decode(source.trim_start_matches('/'));
                    let (source_bucket, source_key) = source.split_once('/').unwrap();
                    assert_eq!(source_bucket, bucket, "a copy from another bucket");
                    out.push((
                        "s3:GetObject".to_owned(),
                        format!("ExportBucket.Arn/{source_key}"),
                        None,
                    ));
                }
            }
            "DELETE" => out.push(("s3:DeleteObject".to_owned(), resource_of(&key), None)),
            other => out.push((format!("s3:{other}"), resource_of(&key), None)),
        }
    }
    out
}

/// The path and query of a URL.
fn path_and_query(uri: &str) -> (String, String) {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let path = rest.find('/').map_or("/", |at| &rest[at..]);
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    (path.to_owned(), query.to_owned())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%'
            && at + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[at + 1..at + 3], 16)
        {
            out.push(byte);
            at += 3;
            continue;
        }
        out.push(bytes[at]);
        at += 1;
    }
    String::from_utf8(out).unwrap()
}

/// Whether `pattern` (an IAM resource or condition value, `*` any run of
/// characters) matches `text`.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|skip| glob(tail, &text[head.len() + skip..]))
        }
    }
}

/// Whether `statements` allow `action` on `resource` (with `prefix` as the
/// `s3:prefix` of a listing, checked against a `StringLike` condition).
fn allows(
    statements: &[serde_json::Value],
    action: &str,
    resource: &str,
    prefix: Option<&str>,
) -> bool {
    statements.iter().any(|statement| {
        statement["Effect"] == "Allow"
            && template::strings(&statement["Action"])
                .iter()
                .any(|a| a == action)
            && template::strings(&statement["Resource"])
                .iter()
                .any(|r| glob(r, resource))
            && match &statement["Condition"]["StringLike"]["s3:prefix"] {
                serde_json::Value::Null => true,
                patterns => prefix.is_some_and(|prefix| {
                    template::strings(patterns).iter().any(|p| glob(p, prefix))
                }),
            }
    })
}

/// The flush coordinator's role (the template's `FlushCoordinatorRole`)
/// allows every S3 request the coordinator makes, recorded on moto while
/// it plans two closed hours (one with a staged object whose index is
/// damaged, quarantined; every partition over the item budget, so that it
/// reads their manifests), queues a manual backfill, and runs again beside
/// the first run (reading its record); it sends to the flush queue; and
/// the role allows no write to the archive, manifests, staging, pending
/// publishes or any destination, and no delete at all.
#[tokio::test]
async fn the_coordinator_needs_only_what_its_role_grants() {
    let (moto, s3) = moto_with_buckets().await;
    let sqs = moto.sqs_client().await;
    let queues = s3_export::esm::create_queue_with_dlq(&sqs, "flush", 3, 30)
        .await
        .unwrap();
    let batcher = Batcher::new(config(), s3.clone());
    let response = batcher::process(&batcher, &hostile_batch().records, NINE + 1000, "req-1")
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let hour = Hour::containing(NINE);
    let damaged = shared::layout::staged_object_key(hour, NINE + 2000, "damaged", 0);
    s3.put_object()
        .bucket(EXPORT)
        .key(&damaged)
        .body(b"not a staged object".to_vec().into())
        .send()
        .await
        .unwrap();

    let recorder = RequestRecorder::new();
    // Every partition over the item budget: the coordinator reads its
    // manifest for its shard count.
    let mut planning = config();
    planning.work_item_bytes = 1;
    let mut flusher = Flusher::new(planning, recorder.wrap(&s3));
    flusher.queue = Some(flusher::coordinator::FlushQueue {
        sqs: sqs.clone(),
        url: queues.url.clone(),
    });
    for payload in [
        json!({"time": "2026-11-22T10:15:00Z", "detail-type": "Scheduled Event", "source": "aws.events"}),
        json!({"backfill": {"destination": "d", "from": "2026-11-22T09:00:00Z", "to": "2026-11-22T10:00:00Z"}}),
        json!({"time": "2026-11-22T11:15:00Z", "detail-type": "Scheduled Event", "source": "aws.events"}),
    ] {
        flusher::handle(
            &flusher,
            LambdaEvent::new(payload.clone(), Context::default()),
        )
        .await
        .unwrap_or_else(|error| panic!("{payload}: {error}"));
    }
    let sent = s3_export::esm::approximate_message_count(&sqs, &queues.url)
        .await
        .unwrap();
    assert!(
        sent >= 2,
        "a work item and the backfill were queued: {sent}"
    );
    assert!(
        s3_export::inspect::list_keys(&s3, EXPORT, "quarantine/")
            .await
            .unwrap()
            .iter()
            .any(|k| k.ends_with(&damaged)),
        "the damaged object was quarantined"
    );

    let document = template::load();
    let stack = template::Stack::new(&document, &[]);
    let statements = stack.role_statements("FlushCoordinatorRole");
    let requests = iam_requests(&recorder.requests(), EXPORT);
    assert!(requests.len() > 10, "{requests:?}");
    for (action, resource, prefix) in &requests {
        assert!(
            allows(&statements, action, resource, prefix.as_deref()),
            "the coordinator's role does not allow {action} on {resource} (prefix {prefix:?})"
        );
    }
    assert!(allows(
        &statements,
        "sqs:SendMessage",
        "FlushQueue.Arn",
        None
    ));
    // The schedule runs the coordinator; the queue runs the workers, whose
    // role (the destination writer's) the coordinator does not have.
    let events = |function: &str| -> Vec<String> {
        let properties = stack.resource(function).unwrap();
        properties["Events"]
            .as_object()
            .unwrap()
            .values()
            .map(|event| event["Type"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(events("FlushCoordinatorFunction"), ["Schedule"]);
    assert_eq!(events("FlusherFunction"), ["SQS"]);
    assert_eq!(
        stack.resource("FlushCoordinatorFunction").unwrap()["Role"],
        "FlushCoordinatorRole.Arn"
    );
    let coordinator = stack.environment("FlushCoordinatorFunction");
    assert_eq!(coordinator["FLUSH_QUEUE_URL"], "flushqueue");
    // Least privilege: nothing it must not do.
    for prefix in ["archive/", "manifests/", "staging/", "pending/", "errors/"] {
        let resource = format!("ExportBucket.Arn/{prefix}x");
        for action in ["s3:PutObject", "s3:DeleteObject"] {
            assert!(
                !allows(&statements, action, &resource, None),
                "{action} on {resource}"
            );
        }
    }
    for statement in &statements {
        let actions = template::strings(&statement["Action"]);
        assert!(
            !actions.iter().any(|a| a == "s3:DeleteObject"
                || a.starts_with("sts:")
                || a.starts_with("kms:Encrypt")),
            "{statement}"
        );
        for resource in template::strings(&statement["Resource"]) {
            assert!(
                resource.starts_with("ExportBucket.Arn")
                    || resource == "FlushQueue.Arn"
                    || resource.starts_with("FlushCoordinatorLogGroup")
                    || resource == "alerttopic"
                    || resource.starts_with("AlertTopicKey"),
                "the coordinator reaches {resource}"
            );
        }
    }
}

/// The template's single destination with `DestinationInterval` 5: the
/// flush functions' environment (its `FLUSH_SCHEDULE` from `FlushSchedule`)
/// gives a valid configuration with a schedule every 5 minutes, and the
/// flusher refuses it at cold start, naming the variable, with the default
/// hourly schedule (which the template's rule also refuses at deploy).
#[test]
fn the_template_gives_a_destination_interval_and_its_schedule_to_the_flusher() {
    let document = template::load();
    let config_of = |overrides: &[(&str, &str)]| {
        let stack = template::Stack::new(&document, overrides);
        let environment = stack.environment("FlusherFunction");
        assert!(
            environment.contains_key("FLUSH_SCHEDULE"),
            "{environment:?}"
        );
        Config::from_sources(
            |name| match name {
                "EXPORT_BUCKET" => Some(EXPORT.to_owned()),
                "EXPORT_CONFIG" => None,
                other => environment.get(other).filter(|v| !v.is_empty()).cloned(),
            },
            None,
        )
    };
    let fresh = [
        ("DestinationBucket", "acme-exports"),
        ("DestinationInterval", "5"),
        ("FlushSchedule", "cron(0/5 * * * ? *)"),
    ];
    let config = config_of(&fresh).unwrap();
    assert_eq!(
        config.destinations[0].interval,
        shared::interval::Interval::Minutes(5)
    );
    let error = config_of(&fresh[..2]).unwrap_err();
    assert_eq!(error.field, "DESTINATION_INTERVAL");
    assert!(error.message.contains("cron(15 * * * ? *)"), "{error}");
    // Hourly by default.
    let config = config_of(&fresh[..1]).unwrap();
    assert_eq!(
        config.destinations[0].interval,
        shared::interval::Interval::Hourly
    );
    // The grace must exceed the batcher's batching window, which the
    // template passes along.
    let slow_batches = [
        ("MaximumBatchingWindowInSeconds", "300"),
        ("FlushGraceMinutes", "5"),
    ];
    let error = config_of(&slow_batches).unwrap_err();
    assert_eq!(error.field, "FLUSH_GRACE_MINUTES");
    assert!(error.message.contains("300 s"), "{error}");
    let enough = [
        ("MaximumBatchingWindowInSeconds", "300"),
        ("FlushGraceMinutes", "6"),
    ];
    assert!(config_of(&enough).is_ok());
}
