//! The verify function against moto: real PUTs with the destinations'
//! encryption, real S3 errors (moto's own, or S3's error documents injected
//! by the fault layer where moto cannot produce them), the custom resource
//! answer caught by a loopback HTTP listener, and alerts read back from an SQS
//! queue subscribed to the SNS topic. Each test starts its own moto_server;
//! nothing leaves 127.0.0.1.

use std::time::Duration;

use lambda_runtime::{Context, LambdaEvent};
use s3_export::faults::RespondWith;
use s3_export::inbox::AlertInbox;
use s3_export::moto::MotoServer;
use serde_json::{Value, json};
use shared::Config;
use shared::alert::{AlertOutcome, Alerter};
use shared::diagnose::{Diagnosis, Problem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use verify::{Verifier, handle};

const EXPORT_BUCKET: &str = "s3-export-test";
const BUCKET: &str = "acme-exports";
const ROLE: &str = "arn:aws:iam::123456789012:role/s3-export-writer";
const KMS_KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const SCHEDULED: &str = r#"{"version":"0","id":"53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa","detail-type":"Scheduled Event","source":"aws.events","account":"123456789012","time":"2026-11-22T09:30:00Z","region":"us-east-1","resources":["arn:aws:events:us-east-1:123456789012:rule/verify-daily"],"detail":{}}"#;
const VERIFY_KEY: &str = "events/airkit-verify-test-20261122T093000Z";

struct Harness {
    moto: MotoServer,
    s3: aws_sdk_s3::Client,
}

impl Harness {
    async fn start() -> Self {
        let moto = MotoServer::start().await.expect("moto_server starts");
        let s3 = moto.s3_client().await;
        for bucket in [EXPORT_BUCKET, BUCKET] {
            s3.create_bucket()
                .bucket(bucket)
                .send()
                .await
                .expect("bucket");
        }
        Self { moto, s3 }
    }

    fn verifier(&self, s3: aws_sdk_s3::Client, destinations: &str, alerter: Alerter) -> Verifier {
        verifier_for(s3, destinations, alerter)
    }

    async fn sns(&self) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::new(&self.moto.sdk_config().await)
    }
}

fn verifier_for(s3: aws_sdk_s3::Client, destinations: &str, alerter: Alerter) -> Verifier {
    let document = format!(r#"{{"destinations":{destinations}}}"#);
    let config = Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| EXPORT_BUCKET.to_owned()),
        Some(&document),
    );
    let mut verifier = Verifier::new(config, s3, alerter, "test-deployment", vec![ROLE.into()]);
    verifier.write_timeout = Duration::from_secs(5);
    verifier
}

fn no_alerts() -> Alerter {
    Alerter::disabled("test-deployment", "verify")
}

async fn invoke(verifier: &Verifier, payload: Value) -> Value {
    let mut context = Context::default();
    context.request_id = "req-verify".into();
    handle(verifier, LambdaEvent::new(payload, context))
        .await
        .expect("the invocation succeeds")
}

fn scheduled() -> Value {
    serde_json::from_str(SCHEDULED).unwrap()
}

fn result<'a>(report: &'a Value, destination: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["destination"] == destination)
        .unwrap_or_else(|| panic!("no result for {destination} in {report:#}"))
}

#[tokio::test]
async fn writable_destinations_get_the_verify_object_with_their_encryption() {
    let harness = Harness::start().await;
    let verifier = harness.verifier(
        harness.s3.clone(),
        &format!(
            r#"[{{"name":"acme","bucket":"{BUCKET}","prefix":"events/","encryption":"AES256"}},
               {{"name":"acme-kms","bucket":"{EXPORT_BUCKET}","prefix":"kms/","encryption":"aws:kms","kmsKeyId":"{KMS_KEY}"}},
               {{"name":"off","bucket":"{EXPORT_BUCKET}","prefix":"off/","enabled":false}}]"#
        ),
        no_alerts(),
    );
    let report = invoke(&verifier, scheduled()).await;
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(
        report["results"].as_array().unwrap().len(),
        2,
        "disabled is skipped"
    );
    assert_eq!(result(&report, "acme")["key"], VERIFY_KEY);

    let head = harness
        .s3
        .head_object()
        .bucket(BUCKET)
        .key(VERIFY_KEY)
        .send()
        .await
        .expect("the verify object exists");
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("AES256")
    );
    assert_eq!(head.content_type(), Some("application/json"));
    let body = harness
        .s3
        .get_object()
        .bucket(BUCKET)
        .key(VERIFY_KEY)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["object"], "airkit-verify-test");
    assert_eq!(body["deployment"], "test-deployment");
    assert_eq!(body["destination"], "acme");
    assert_eq!(body["trigger"], "schedule");

    let kms = harness
        .s3
        .head_object()
        .bucket(EXPORT_BUCKET)
        .key("kms/airkit-verify-test-20261122T093000Z")
        .send()
        .await
        .expect("the KMS verify object exists");
    assert_eq!(
        kms.server_side_encryption().map(|s| s.as_str()),
        Some("aws:kms")
    );
    assert_eq!(kms.ssekms_key_id(), Some(KMS_KEY));
    assert_eq!(kms.bucket_key_enabled(), Some(true));
}

#[tokio::test]
async fn one_named_destination_is_verified_even_when_disabled() {
    let harness = Harness::start().await;
    let verifier = harness.verifier(
        harness.s3.clone(),
        &format!(
            r#"[{{"name":"acme","bucket":"{BUCKET}","prefix":"events/"}},
               {{"name":"later","bucket":"{BUCKET}","prefix":"later/","enabled":false}}]"#
        ),
        no_alerts(),
    );
    let report = invoke(&verifier, json!({"destination": "later"})).await;
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["destination"], "later");
    assert_eq!(results[0]["enabled"], false);
    assert_eq!(results[0]["ok"], true);

    let mut context = Context::default();
    context.request_id = "req".into();
    let error = handle(
        &verifier,
        LambdaEvent::new(json!({"destination": "nope"}), context),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "no destination named `nope` (configured: acme, later)"
    );
}

#[tokio::test]
async fn missing_bucket_is_diagnosed_as_no_such_bucket() {
    let harness = Harness::start().await;
    let verifier = harness.verifier(
        harness.s3.clone(),
        r#"[{"name":"gone","bucket":"no-such-bucket-here","prefix":"events/"}]"#,
        no_alerts(),
    );
    let report = invoke(&verifier, json!({})).await;
    assert_eq!(report["ok"], false);
    let gone = result(&report, "gone");
    assert_eq!(gone["ok"], false);
    assert_eq!(gone["diagnosis"]["code"], "NoSuchBucket");
    assert_eq!(gone["diagnosis"]["problem"], "no_such_bucket");
    assert!(
        gone["diagnosis"]["summary"]
            .as_str()
            .unwrap()
            .contains("`no-such-bucket-here`")
    );
    assert!(gone.get("alert").is_none(), "a manual run does not alert");
}

/// Sends one IAM query API request to moto while it still takes
/// unauthenticated requests (`INITIAL_NO_AUTH_ACTION_COUNT`), and returns the
/// XML answer. The credential scope in the header tells moto the service.
async fn moto_iam(moto: &MotoServer, params: &[(&str, &str)]) -> String {
    fn encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    let body = params
        .iter()
        .chain([("Version", "2010-05-08")].iter())
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=testing/20261122/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len(),
        port = moto.port()
    );
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", moto.port()))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
}

fn xml_text(xml: &str, element: &str) -> String {
    let open = format!("<{element}>");
    let start = xml.find(&open).unwrap() + open.len();
    let end = start + xml[start..].find('<').unwrap();
    xml[start..end].to_owned()
}

#[tokio::test]
async fn denied_write_names_put_object_on_the_prefix_and_gives_the_bucket_policy() {
    // moto enforces IAM after its first 4 requests: the bucket, the user,
    // its policy (reads only) and its access key are made before that.
    let moto = MotoServer::start_with_env([("INITIAL_NO_AUTH_ACTION_COUNT", "4")])
        .await
        .expect("moto_server starts");
    let admin = moto.s3_client().await;
    admin.create_bucket().bucket(BUCKET).send().await.unwrap();
    moto_iam(&moto, &[("Action", "CreateUser"), ("UserName", "writer")]).await;
    let read_only = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],"Resource":"*"}]});
    moto_iam(
        &moto,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "writer"),
            ("PolicyName", "read-only"),
            ("PolicyDocument", &read_only.to_string()),
        ],
    )
    .await;
    let key = moto_iam(
        &moto,
        &[("Action", "CreateAccessKey"), ("UserName", "writer")],
    )
    .await;
    let writer_config = aws_sdk_s3::config::Builder::from(&moto.sdk_config().await)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            xml_text(&key, "AccessKeyId"),
            xml_text(&key, "SecretAccessKey"),
            None,
            None,
            "moto-iam",
        ))
        .force_path_style(true)
        .build();
    let writer = aws_sdk_s3::Client::from_conf(writer_config);

    let verifier = verifier_for(
        writer,
        &format!(r#"[{{"name":"acme","bucket":"{BUCKET}","prefix":"events/"}}]"#),
        no_alerts(),
    );
    let report = invoke(&verifier, json!({"destination": "acme"})).await;
    let acme = result(&report, "acme");
    assert_eq!(acme["ok"], false, "{report:#}");
    let diagnosis = &acme["diagnosis"];
    assert_eq!(diagnosis["code"], "AccessDenied", "{diagnosis:#}");
    assert_eq!(diagnosis["problem"], "access_denied");
    let summary = diagnosis["summary"].as_str().unwrap();
    assert!(summary.contains("`s3:PutObject`"), "{summary}");
    assert!(
        summary.contains(&format!("`arn:aws:s3:::{BUCKET}/events/*`")),
        "{summary}"
    );
    assert_eq!(
        diagnosis["bucketPolicy"],
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "S3ExportWrite",
                "Effect": "Allow",
                "Principal": {"AWS": ROLE},
                "Action": ["s3:PutObject"],
                "Resource": [format!("arn:aws:s3:::{BUCKET}/events/*")],
            }]
        })
    );
}

#[tokio::test]
async fn refusing_kms_key_names_the_kms_action_and_the_key() {
    let harness = Harness::start().await;
    // The bucket does not exist in moto, so nothing is stored; the fault
    // layer gives the answer S3 gives when the key policy refuses the role.
    let fault = RespondWith::s3_error(
        "/kms-locked",
        403,
        "AccessDenied",
        &format!(
            "User: arn:aws:sts::123456789012:assumed-role/s3-export-writer/verify is not authorized to perform: kms:GenerateDataKey on resource: {KMS_KEY} because no resource-based policy allows the kms:GenerateDataKey action"
        ),
    );
    let verifier = harness.verifier(
        fault.wrap(&harness.s3),
        &format!(
            r#"[{{"name":"locked","bucket":"kms-locked","encryption":"aws:kms","kmsKeyId":"{KMS_KEY}"}}]"#
        ),
        no_alerts(),
    );
    let report = invoke(&verifier, json!({})).await;
    assert!(fault.replaced() >= 1);
    let diagnosis = &result(&report, "locked")["diagnosis"];
    assert_eq!(diagnosis["code"], "AccessDenied");
    assert_eq!(diagnosis["problem"], "kms_denied");
    let summary = diagnosis["summary"].as_str().unwrap();
    assert!(summary.contains("`kms:GenerateDataKey`"), "{summary}");
    assert!(summary.contains(KMS_KEY), "{summary}");
    assert_eq!(diagnosis["kmsKeyPolicyStatement"]["Principal"]["AWS"], ROLE);
    assert!(diagnosis.get("bucketPolicy").is_none());
}

#[tokio::test]
async fn bucket_in_another_region_is_reported_with_its_real_region() {
    let harness = Harness::start().await;
    let fault = RespondWith::s3_error(
        "/far-away",
        301,
        "PermanentRedirect",
        "The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.",
    )
    .header("x-amz-bucket-region", "eu-central-1");
    let verifier = harness.verifier(
        fault.wrap(&harness.s3),
        r#"[{"name":"far","bucket":"far-away"}]"#,
        no_alerts(),
    );
    let report = invoke(&verifier, json!({})).await;
    let diagnosis = &result(&report, "far")["diagnosis"];
    assert_eq!(diagnosis["code"], "PermanentRedirect");
    assert_eq!(diagnosis["problem"], "wrong_region");
    assert_eq!(diagnosis["actualRegion"], "eu-central-1");
    assert!(
        diagnosis["remedy"]
            .as_str()
            .unwrap()
            .contains(r#""region": "eu-central-1""#)
    );
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_not_permission_problems() {
    // A listener that accepts and never answers, and a port nobody listens on.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let moto = MotoServer::start().await.unwrap();
    let base = moto.s3_client().await;
    // A refused connection is retried with back-off: give the retries time
    // to run out, so it is told as what it is rather than as a timeout.
    for (port, problem, code, budget) in [
        (silent_port, "timeout", "Timeout", 2),
        (closed_port, "network", "NetworkError", 15),
    ] {
        let s3 = aws_sdk_s3::Client::from_conf(
            base.config()
                .to_builder()
                .endpoint_url(format!("http://127.0.0.1:{port}"))
                .build(),
        );
        let mut verifier = verifier_for(
            s3,
            r#"[{"name":"acme","bucket":"acme-exports"}]"#,
            no_alerts(),
        );
        verifier.write_timeout = Duration::from_secs(budget);
        let report = invoke(&verifier, json!({})).await;
        let diagnosis = &result(&report, "acme")["diagnosis"];
        assert_eq!(diagnosis["problem"], problem, "{diagnosis:#}");
        assert_eq!(diagnosis["code"], code);
        assert!(diagnosis.get("bucketPolicy").is_none());
    }
    hold.abort();
}

/// One HTTP request as the listener received it.
#[derive(Debug)]
struct Received {
    request_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A loopback HTTP listener standing in for CloudFormation's pre-signed
/// response URL: it takes one request, answers 200, and hands it over.
async fn response_listener() -> (String, tokio::task::JoinHandle<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/cfn-response/stack%7CVerify%7Creq?X-Amz-Signature=secret",
        listener.local_addr().unwrap()
    );
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut data = Vec::new();
        let mut buffer = [0u8; 4096];
        let head_end = loop {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "connection closed before the headers ended");
            data.extend_from_slice(&buffer[..n]);
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
        };
        let head = String::from_utf8(data[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = data[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0);
            body.extend_from_slice(&buffer[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        Received {
            request_line,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    });
    (url, task)
}

fn custom_resource(request_type: &str, url: &str, destination: &str) -> Value {
    let mut request = json!({
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:s3-export-verify",
        "RequestType": request_type,
        "RequestId": "82304eb2-bdda-469f-a33b-a3f1406d0a52",
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s3-export/16580499",
        "ResourceType": "Custom::DestinationVerify",
        "LogicalResourceId": "VerifyAcme",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:s3-export-verify", "Destination": destination},
    });
    if request_type != "Create" {
        request["PhysicalResourceId"] = json!("VerifyAcme-verify-acme");
    }
    request
}

#[tokio::test]
async fn custom_resource_create_answers_success_at_the_response_url() {
    let harness = Harness::start().await;
    let verifier = harness.verifier(
        harness.s3.clone(),
        &format!(r#"[{{"name":"acme","bucket":"{BUCKET}","prefix":"events/"}}]"#),
        no_alerts(),
    );
    let (url, received) = response_listener().await;
    let answer = invoke(&verifier, custom_resource("Create", &url, "acme")).await;
    let received = received.await.unwrap();

    assert_eq!(
        received.request_line,
        "PUT /cfn-response/stack%7CVerify%7Creq?X-Amz-Signature=secret HTTP/1.1"
    );
    assert_eq!(received.header("content-type"), Some(""));
    let response: Value = serde_json::from_str(&received.body).unwrap();
    assert_eq!(response["Status"], "SUCCESS", "{response:#}");
    assert_eq!(
        response["RequestId"],
        "82304eb2-bdda-469f-a33b-a3f1406d0a52"
    );
    assert_eq!(
        response["StackId"],
        "arn:aws:cloudformation:us-east-1:123456789012:stack/s3-export/16580499"
    );
    assert_eq!(response["LogicalResourceId"], "VerifyAcme");
    assert_eq!(response["PhysicalResourceId"], "VerifyAcme-verify-acme");
    let key = response["Data"]["Key"].as_str().unwrap();
    assert!(key.starts_with("events/airkit-verify-test-"), "{key}");
    assert_eq!(answer["customResource"]["status"], "SUCCESS");
    harness
        .s3
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .expect("the verify object was written");
}

#[tokio::test]
async fn custom_resource_fails_fast_with_the_diagnosis_and_delete_always_succeeds() {
    let harness = Harness::start().await;
    let verifier = harness.verifier(
        harness.s3.clone(),
        r#"[{"name":"acme","bucket":"no-such-bucket-here","prefix":"events/"}]"#,
        no_alerts(),
    );
    let (url, received) = response_listener().await;
    invoke(&verifier, custom_resource("Update", &url, "acme")).await;
    let response: Value = serde_json::from_str(&received.await.unwrap().body).unwrap();
    assert_eq!(response["Status"], "FAILED");
    assert_eq!(response["PhysicalResourceId"], "VerifyAcme-verify-acme");
    let reason = response["Reason"].as_str().unwrap();
    assert!(reason.contains("NoSuchBucket"), "{reason}");
    assert!(reason.contains("`no-such-bucket-here`"), "{reason}");

    let (url, received) = response_listener().await;
    invoke(&verifier, custom_resource("Delete", &url, "acme")).await;
    let response: Value = serde_json::from_str(&received.await.unwrap().body).unwrap();
    assert_eq!(response["Status"], "SUCCESS");
    assert_eq!(response["PhysicalResourceId"], "VerifyAcme-verify-acme");

    // An invalid configuration still gets its answer, naming the field.
    let broken = Verifier::new(
        Config::from_sources(|_| None, None),
        harness.s3.clone(),
        no_alerts(),
        "test-deployment",
        vec![],
    );
    let (url, received) = response_listener().await;
    invoke(&broken, custom_resource("Create", &url, "acme")).await;
    let response: Value = serde_json::from_str(&received.await.unwrap().body).unwrap();
    assert_eq!(response["Status"], "FAILED");
    assert!(
        response["Reason"]
            .as_str()
            .unwrap()
            .contains("EXPORT_BUCKET"),
        "{response:#}"
    );
}

async fn inbox(harness: &Harness) -> AlertInbox {
    AlertInbox::create(
        &harness.sns().await,
        &harness.moto.sqs_client().await,
        "s3-export-alerts",
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn scheduled_failure_alerts_once_through_sns_with_the_diagnosis() {
    let harness = Harness::start().await;
    let inbox = inbox(&harness).await;
    let topic = inbox.topic_arn.clone();
    let alerter = Alerter::new(
        harness.sns().await,
        Some(topic),
        "test-deployment",
        "verify",
    );
    let verifier = harness.verifier(
        harness.s3.clone(),
        &format!(
            r#"[{{"name":"gone","bucket":"no-such-bucket-here"}},{{"name":"acme","bucket":"{BUCKET}"}}]"#
        ),
        alerter,
    );

    // A manual run does not alert; the scheduled one does, for the failure only.
    invoke(&verifier, json!({})).await;
    let report = invoke(&verifier, scheduled()).await;
    assert_eq!(result(&report, "gone")["alert"], "published");
    assert!(result(&report, "acme").get("alert").is_none());

    let received = inbox.read(1).await.unwrap();
    assert_eq!(received.len(), 1, "{received:#?}");
    let notification = &received[0];
    assert_eq!(
        notification["Subject"],
        "s3-export test-deployment: gone: no_such_bucket"
    );
    let message = notification["Message"].as_str().unwrap();
    assert!(message.contains("destination `gone`"), "{message}");
    assert!(message.contains("(NoSuchBucket)"), "{message}");
    assert_eq!(
        notification["MessageAttributes"]["problem"]["Value"],
        "no_such_bucket"
    );
    assert_eq!(
        notification["MessageAttributes"]["destination"]["Value"],
        "gone"
    );
}

#[tokio::test]
async fn alerts_are_one_per_destination_and_problem_within_an_invocation() {
    let harness = Harness::start().await;
    let inbox = inbox(&harness).await;
    let topic = inbox.topic_arn.clone();
    let alerter = Alerter::new(harness.sns().await, Some(topic), "prod", "flusher");
    let denied = Diagnosis {
        code: "AccessDenied".into(),
        problem: Problem::AccessDenied,
        summary: "denied".into(),
        remedy: "paste the policy".into(),
        bucket_policy: None,
        kms_key_policy_statement: None,
    };
    let alerts = alerter.invocation();
    assert!(matches!(
        alerts.alert("acme", &denied).await.unwrap(),
        AlertOutcome::Published { .. }
    ));
    for _ in 0..3 {
        assert_eq!(
            alerts.alert("acme", &denied).await.unwrap(),
            AlertOutcome::AlreadySent
        );
    }
    let timeout = Diagnosis {
        code: "Timeout".into(),
        problem: Problem::Timeout,
        ..denied.clone()
    };
    alerts.alert("acme", &timeout).await.unwrap();
    alerts.alert("other", &denied).await.unwrap();
    // The next invocation alerts again.
    let next = alerter.invocation();
    next.alert("acme", &denied).await.unwrap();

    let mut subjects: Vec<String> = inbox
        .read(4)
        .await
        .unwrap()
        .iter()
        .map(|n| n["Subject"].as_str().unwrap().to_owned())
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec![
            "s3-export prod: acme: access_denied",
            "s3-export prod: acme: access_denied",
            "s3-export prod: acme: timeout",
            "s3-export prod: other: access_denied",
        ]
    );
}

/// A loopback listener that only counts the connections it is offered.
async fn decoy_listener() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/decoy?X-Amz-Signature=x",
        listener.local_addr().unwrap()
    );
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    (url, connections)
}

#[tokio::test]
async fn custom_resource_answers_only_the_response_url_cloudformation_gave() {
    let harness = Harness::start().await;
    let (decoy, connections) = decoy_listener().await;
    // The destination's settings and the resource's properties name other
    // URLs; only the request's own ResponseURL is ever answered.
    let verifier = harness.verifier(
        harness.s3.clone(),
        &format!(r#"[{{"name":"acme","bucket":"{BUCKET}","prefix":"events/"}}]"#),
        no_alerts(),
    );
    let (url, received) = response_listener().await;
    let mut request = custom_resource("Create", &url, "acme");
    request["ResourceProperties"]["ResponseURL"] = json!(decoy);
    request["ResourceProperties"]["ServiceToken"] = json!(decoy);
    request["responseUrl"] = json!(decoy);
    request["OldResourceProperties"] = json!({ "ResponseURL": decoy });
    let answer = invoke(&verifier, request).await;
    let received = received.await.unwrap();
    assert_eq!(
        received.request_line,
        "PUT /cfn-response/stack%7CVerify%7Creq?X-Amz-Signature=secret HTTP/1.1"
    );
    assert_eq!(answer["customResource"]["status"], "SUCCESS");
    // The invocation has returned, so every connection it made is counted.
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}
