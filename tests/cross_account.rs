//! Cross-account destinations against moto: a destination with `roleArn`
//! is written with the role's credentials, assumed through moto's STS with
//! the destination's external id, while the destination without one is
//! written with the function's own; the flusher's per-destination client
//! assumes the role once and reuses the credentials. Each test starts its
//! own moto_server; nothing leaves 127.0.0.1.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use flusher::Flusher;
use s3_export::moto::MotoServer;
use s3_export::recorder::RequestRecorder;
use shared::Config;
use shared::alert::Alerter;
use shared::destination_write;
use verify::Verifier;
use verify::payload::Trigger;

const EXPORT_BUCKET: &str = "s3-export-test";
const ROLE: &str = "arn:aws:iam::111122223333:role/s3-export-writer";
const EXTERNAL_ID: &str = "acme-7f3k";
const DESTINATIONS: &str = r#"[
    {"name":"cross","bucket":"cross-bucket","roleArn":"arn:aws:iam::111122223333:role/s3-export-writer","externalId":"acme-7f3k"},
    {"name":"own","bucket":"own-bucket"}]"#;

struct Harness {
    _moto: MotoServer,
    /// The function's S3 client, recording what it sends.
    s3: aws_sdk_s3::Client,
    s3_requests: RequestRecorder,
    /// The function's STS client, recording what it sends.
    sts: aws_sdk_sts::Client,
    sts_requests: RequestRecorder,
    config: Config,
}

impl Harness {
    async fn start() -> Self {
        let moto = MotoServer::start().await.expect("moto_server starts");
        let plain = moto.s3_client().await;
        for bucket in [EXPORT_BUCKET, "cross-bucket", "own-bucket"] {
            plain.create_bucket().bucket(bucket).send().await.unwrap();
        }
        let s3_requests = RequestRecorder::new();
        let s3 = s3_requests.wrap(&plain);
        let sts_requests = RequestRecorder::new();
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&moto.sdk_config().await)
                .interceptor(sts_requests.clone())
                .build(),
        );
        let config = Config::from_sources(
            |name| (name == "EXPORT_BUCKET").then(|| EXPORT_BUCKET.to_owned()),
            Some(&format!(r#"{{"destinations":{DESTINATIONS}}}"#)),
        )
        .unwrap();
        Self {
            _moto: moto,
            s3,
            s3_requests,
            sts,
            sts_requests,
            config,
        }
    }

    fn destination(&self, name: &str) -> &shared::config::Destination {
        self.config
            .destinations
            .iter()
            .find(|d| d.name == name)
            .unwrap()
    }

    /// The access keys that signed the requests to `bucket`.
    fn signers(&self, bucket: &str) -> Vec<String> {
        self.s3_requests
            .to(&format!("/{bucket}/"))
            .into_iter()
            .map(|r| r.access_key_id.expect("signed"))
            .collect()
    }

    fn assume_role_calls(&self) -> Vec<String> {
        self.sts_requests
            .requests()
            .into_iter()
            .filter(|r| r.body.contains("Action=AssumeRole"))
            .map(|r| r.body)
            .collect()
    }
}

#[tokio::test]
async fn verify_writes_with_the_assumed_role_for_that_destination_only() {
    let harness = Harness::start().await;
    let mut verifier = Verifier::new(
        Ok(harness.config.clone()),
        harness.s3.clone(),
        Alerter::disabled("test", "verify"),
        "test",
        Vec::new(),
    );
    verifier.sts = Some(harness.sts.clone());
    let destinations = verify::select(&harness.config, None).unwrap();
    let time = Utc.with_ymd_and_hms(2026, 11, 22, 9, 30, 0).unwrap();
    let report = verifier
        .verify(
            destinations,
            time,
            Trigger::Manual,
            false,
            Duration::from_secs(10),
        )
        .await;
    assert!(report.ok, "{report:#?}");

    let cross = harness.signers("cross-bucket");
    assert!(!cross.is_empty());
    assert!(
        cross.iter().all(|key| key.starts_with("ASIA")),
        "the cross-account write is signed with assumed (temporary) credentials: {cross:?}"
    );
    assert_eq!(harness.signers("own-bucket"), vec!["testing".to_owned()]);

    // One AssumeRole, signed with the function's own credentials, naming
    // the role, the external id and the destination in the session name.
    let calls = harness.assume_role_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert!(
        call.contains(&format!("RoleArn={}", urlencode(ROLE))),
        "{call}"
    );
    assert!(
        call.contains(&format!("ExternalId={EXTERNAL_ID}")),
        "{call}"
    );
    assert!(call.contains("RoleSessionName=s3-export-cross"), "{call}");
    let sts_signers: Vec<_> = harness
        .sts_requests
        .requests()
        .into_iter()
        .map(|r| r.access_key_id.unwrap())
        .collect();
    assert_eq!(sts_signers, vec!["testing".to_owned()]);
}

#[tokio::test]
async fn the_flusher_keeps_one_client_per_destination_and_assumes_the_role_once() {
    let harness = Harness::start().await;
    let mut flusher = Flusher::new(harness.config.clone(), harness.s3.clone());
    flusher.sts = Some(harness.sts.clone());
    for n in 0..3 {
        for name in ["cross", "own"] {
            let destination = harness.destination(name);
            let client = flusher.client_for(destination);
            destination_write::put_object(&client, destination, &format!("part-{n}.json"))
                .body(b"{}\n".to_vec().into())
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!("{name}: {}", aws_sdk_s3::error::DisplayErrorContext(e))
                });
        }
    }
    let cross = harness.signers("cross-bucket");
    assert_eq!(cross.len(), 3);
    assert!(cross[0].starts_with("ASIA"), "{cross:?}");
    assert!(
        cross.iter().all(|key| key == &cross[0]),
        "the assumed credentials are cached: {cross:?}"
    );
    assert_eq!(harness.signers("own-bucket"), vec!["testing".to_owned(); 3]);
    assert_eq!(harness.assume_role_calls().len(), 1);
}

#[tokio::test]
async fn a_role_without_an_sts_client_fails_the_write_saying_so() {
    let harness = Harness::start().await;
    let verifier = Verifier::new(
        Ok(harness.config.clone()),
        harness.s3.clone(),
        Alerter::disabled("test", "verify"),
        "test",
        Vec::new(),
    );
    let destinations = verify::select(&harness.config, Some("cross")).unwrap();
    let time = Utc.with_ymd_and_hms(2026, 11, 22, 9, 30, 0).unwrap();
    let report = verifier
        .verify(
            destinations,
            time,
            Trigger::Manual,
            false,
            Duration::from_secs(10),
        )
        .await;
    assert!(!report.ok);
    let text = serde_json::to_string(&report).unwrap();
    assert!(text.contains("no STS client"), "{text}");
    assert!(harness.signers("cross-bucket").is_empty());
}

fn urlencode(text: &str) -> String {
    text.replace(':', "%3A").replace('/', "%2F")
}
