//! The pure compaction the benchmark measures is the flusher's own: the
//! archive part the real flusher writes to moto is byte for byte what
//! `flusher::compaction::compact_staged` makes of the segments of the same
//! staged objects.

use std::collections::HashSet;

use batcher::Batcher;
use batcher::records::{sqs_record, with_stream};
use flusher::compaction::compact_staged;
use flusher::{Flusher, Trigger};
use s3_export::inspect::list_keys;
use s3_export::moto::MotoServer;
use shared::Config;
use shared::dedup::IdHash;

const EXPORT: &str = "exports";
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:events";
/// 2026-11-22T10:00:00Z
const TEN: i64 = 1_795_341_600_000;

async fn bytes(s3: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    let object = s3
        .get_object()
        .bucket(EXPORT)
        .key(key)
        .send()
        .await
        .unwrap();
    object.body.collect().await.unwrap().into_bytes().to_vec()
}

fn audit(id: usize, second: usize) -> String {
    format!(
        r#"{{"ORGANIZATION_ID":"t1","EVENT_ID":"e-{id}","EVENT_TIME":"2026-11-22 10:00:{second:02}.5","EVENT_TYPE":"user_login","USER_ID":"u{id}"}}"#
    )
}

#[tokio::test]
async fn archive_part_is_what_the_pure_compaction_writes() {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = moto.s3_client().await;
    s3.create_bucket().bucket(EXPORT).send().await.unwrap();
    let config = Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
        None,
    )
    .unwrap();
    let batcher = Batcher::new(config.clone(), s3.clone());
    // Two invocations; the second re-sends events 50..100 with other bytes.
    for (request, range) in [("req-a", 0..100), ("req-b", 50..150)] {
        let records: Vec<_> = range
            .map(|n| {
                let record = sqs_record(&format!("m{n}"), &audit(n, n % 60), TEN + 1000, QUEUE_ARN);
                with_stream(record, "airkit-audit-logs")
            })
            .collect();
        let response = batcher::process(&batcher, &records, TEN + 2000, request)
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }
    let staged_keys = list_keys(&s3, EXPORT, "staging/").await.unwrap();
    assert_eq!(staged_keys.len(), 2);
    let mut staged = Vec::new();
    for key in &staged_keys {
        staged.push(bytes(&s3, key).await);
    }

    let flusher = Flusher::new(config.clone(), s3.clone());
    let trigger =
        Trigger::from_payload(&serde_json::json!({"time": "2026-11-22T11:30:00Z"})).unwrap();
    let report = flusher::run(&flusher, &trigger, None).await.unwrap();
    assert_eq!(report.events, 150, "{report:?}");
    assert_eq!(report.duplicates, 50, "{report:?}");

    let parts = s3_export::inspect::archive_parts(&s3, EXPORT, "")
        .await
        .unwrap();
    assert_eq!(parts.len(), 1, "{:?}", parts.keys());
    let archived = parts.into_values().next().unwrap();

    let profile = &config.streams["airkit-audit-logs"];
    // Every segment of each object, objects in key (staged) order.
    let mut segments = Vec::new();
    for object in &staged {
        let index = shared::staged::read_index(object).unwrap();
        for segment in index.segments {
            let range = segment.range();
            segments.push(&object[range.start as usize..range.end as usize]);
        }
    }
    assert_eq!(segments.len(), 2);
    let (compacted, part) = compact_staged(
        segments
            .into_iter()
            .map(|bytes| shared::staged::segment_reader(bytes).unwrap()),
        Some(profile),
        IdHash::CURRENT,
        &mut HashSet::new(),
        config.archive_gzip_level,
        Vec::new(),
    )
    .unwrap();
    assert_eq!(compacted.events, 150);
    assert_eq!(compacted.duplicates, 50);
    assert!(
        part == archived,
        "the archive part differs from the pure compaction's"
    );
}
