//! Compressed message bodies through the real batcher handler against moto:
//! base64 of gzip or zstd NDJSON marked `content-encoding` is staged event
//! by event; a body that cannot be decoded (unknown encoding, bad base64,
//! not gzip, a decompression bomb, a zstd window over the cap, not UTF-8)
//! goes to `errors/` with its reason and original text, and nothing else in
//! the batch is affected.

use std::collections::BTreeMap;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use batcher::Batcher;
use batcher::records::{sqs_record, with_content_encoding, with_stream};
use lambda_runtime::{Context, LambdaEvent};
use s3_export::inspect::{list_keys, read_gzip_ndjson, read_object};
use s3_export::moto::MotoServer;
use serde_json::Value;
use shared::Config;
use shared::content_encoding::{ContentEncoding, encode_body};

const BUCKET: &str = "s3-export-compressed";
const SENT_MILLIS: i64 = 1_668_900_197_000;
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:events";

async fn start() -> (MotoServer, aws_sdk_s3::Client) {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = moto.s3_client().await;
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    (moto, s3)
}

fn batcher(s3: &aws_sdk_s3::Client, limit: Option<&str>) -> Batcher {
    let config = Config::from_sources(
        |name| match name {
            "EXPORT_BUCKET" => Some(BUCKET.to_owned()),
            "MAX_DECOMPRESSED_BODY_BYTES" => limit.map(str::to_owned),
            _ => None,
        },
        None,
    )
    .expect("config");
    Batcher::new(config, s3.clone())
}

async fn invoke(batcher: &Batcher, records: Vec<SqsMessage>) -> Vec<String> {
    let mut event = SqsEvent::default();
    event.records = records;
    let mut context = Context::default();
    context.request_id = "req-compressed".into();
    let response = batcher::handle(batcher, LambdaEvent::new(event, context))
        .await
        .expect("the invocation succeeds");
    response
        .batch_item_failures
        .into_iter()
        .map(|failure| failure.item_identifier)
        .collect()
}

fn app_events(tenant: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            format!(
                r#"{{"organizationId":"{tenant}","eventTime":"2022-11-19T23:10:00Z","appId":"a","sessionId":"s-{n}","type":"step_enter","kind":"Session","n":{n}}}"#
            )
        })
        .collect()
}

fn audit_events(tenant: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            format!(
                r#"{{"ORGANIZATION_ID":"{tenant}","EVENT_ID":"e-{n}","EVENT_TIME":"2022-11-19 23:40:02.123","EVENT_TYPE":"user_login"}}"#
            )
        })
        .collect()
}

fn ndjson(events: &[String]) -> String {
    events.iter().map(|event| format!("{event}\n")).collect()
}

fn compressed(id: &str, encoding: ContentEncoding, events: &[String]) -> SqsMessage {
    let body = encode_body(encoding, ndjson(events).as_bytes(), 6);
    with_content_encoding(
        sqs_record(id, &body, SENT_MILLIS, QUEUE_ARN),
        encoding.name(),
    )
}

/// Base64 of a zstd frame of `payload` whose header asks for a window of
/// 2^`window_log` bytes (long-distance matching, no content size stated).
fn zstd_with_window(payload: &[u8], window_log: u32) -> String {
    use base64::Engine;
    use std::io::Write;
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    encoder.long_distance_matching(true).unwrap();
    encoder.window_log(window_log).unwrap();
    encoder.write_all(payload).unwrap();
    base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap())
}

/// Staged events (without provenance) by `stream/tenant`, read from each
/// staged object's segments through its index.
async fn staged(s3: &aws_sdk_s3::Client) -> BTreeMap<String, Vec<String>> {
    let mut lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in list_keys(s3, BUCKET, "staging/").await.unwrap() {
        let bytes = read_object(s3, BUCKET, &key).await.unwrap();
        for (segment, staged) in shared::staged::read_object(&bytes).unwrap() {
            lines
                .entry(format!("{}/{}", segment.stream, segment.tenant))
                .or_default()
                .extend(
                    staged
                        .iter()
                        .map(|line| shared::provenance::split_staged_line(line).0.to_owned()),
                );
        }
    }
    lines
}

async fn errors(s3: &aws_sdk_s3::Client) -> Vec<Value> {
    read_gzip_ndjson(s3, BUCKET, "errors/")
        .await
        .unwrap()
        .iter()
        .flat_map(|file| file.lines.iter().map(|l| serde_json::from_str(l).unwrap()))
        .collect()
}

#[tokio::test]
async fn gzip_and_zstd_bodies_are_staged_event_by_event() {
    let (_moto, s3) = start().await;
    let app = app_events("acme", 300);
    let audit = audit_events("globex", 200);
    let failed = invoke(
        &batcher(&s3, None),
        vec![
            compressed("m-gzip", ContentEncoding::Gzip, &app),
            with_stream(
                compressed("m-zstd", ContentEncoding::Zstd, &audit),
                "airkit-audit-logs",
            ),
            with_content_encoding(
                sqs_record(
                    "m-identity",
                    &app_events("initech", 1)[0],
                    SENT_MILLIS,
                    QUEUE_ARN,
                ),
                "identity",
            ),
        ],
    )
    .await;
    assert!(failed.is_empty(), "{failed:?}");

    let staged = staged(&s3).await;
    assert_eq!(staged["airkit-app-events/acme"], app);
    assert_eq!(staged["airkit-audit-logs/globex"], audit);
    assert_eq!(
        staged["airkit-app-events/initech"],
        app_events("initech", 1)
    );
    assert_eq!(staged.len(), 3);
    assert!(errors(&s3).await.is_empty());
}

#[tokio::test]
async fn undecodable_bodies_go_to_errors_with_their_reason_and_nothing_else_is_affected() {
    let (_moto, s3) = start().await;
    let good = app_events("acme", 50);
    let bomb_bytes = vec![b' '; 8 * 1024 * 1024];
    let bomb = encode_body(ContentEncoding::Gzip, &bomb_bytes, 9);
    let not_gzip = encode_body(ContentEncoding::Zstd, ndjson(&good).as_bytes(), 3);
    let not_utf8 = encode_body(ContentEncoding::Gzip, &[0xc3, 0x28, b'\n'], 6);
    let wide_window = zstd_with_window(ndjson(&good).as_bytes(), 27);
    let cases = [
        ("m-brotli", "br", "abc".to_owned(), "bad_encoding", "`br`"),
        (
            "m-base64",
            "gzip",
            "%%% not base64".to_owned(),
            "bad_encoding",
            "not base64",
        ),
        (
            "m-not-gzip",
            "gzip",
            not_gzip,
            "bad_encoding",
            "not valid gzip",
        ),
        ("m-bomb", "gzip", bomb, "too_large", "decompression bomb"),
        ("m-not-utf8", "gzip", not_utf8, "bad_encoding", "UTF-8"),
        // Its header asks the decoder for a 128 MiB window, whatever the
        // body decompresses to: refused before the window is allocated.
        ("m-wide-window", "zstd", wide_window, "too_large", "window"),
    ];
    let mut records = vec![compressed("m-good", ContentEncoding::Gzip, &good)];
    for (id, encoding, body, _, _) in &cases {
        records.push(with_content_encoding(
            sqs_record(id, body, SENT_MILLIS, QUEUE_ARN),
            encoding,
        ));
    }
    records.push(sqs_record("m-plain", &good[0], SENT_MILLIS, QUEUE_ARN));
    // 1 MiB: the bomb (8 MiB of spaces) is over it, the good body far under.
    let failed = invoke(&batcher(&s3, Some("1048576")), records).await;
    assert!(failed.is_empty(), "{failed:?}");

    let staged = staged(&s3).await;
    let mut expected = good.clone();
    expected.push(good[0].clone());
    assert_eq!(staged["airkit-app-events/acme"], expected);
    assert_eq!(staged.len(), 1);

    let errors = errors(&s3).await;
    assert_eq!(errors.len(), cases.len(), "{errors:#?}");
    for (id, _, body, reason, detail) in &cases {
        let record = errors
            .iter()
            .find(|record| record["messageId"] == *id)
            .unwrap_or_else(|| panic!("no error record for {id}"));
        assert_eq!(record["reason"], *reason, "{record}");
        let text = record["detail"].as_str().unwrap();
        assert!(text.contains(detail), "{id}: {text}");
        assert_eq!(record["body"], *body, "{id}: the original body is kept");
        assert!(
            record["messageAttributes"]["content-encoding"].is_object(),
            "{record}"
        );
    }
}
