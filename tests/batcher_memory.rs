//! The batcher's memory, measured: a counting global allocator records the
//! peak of live heap bytes while the real handler stores, in moto's S3, a
//! batch of small zstd bodies that each expand to a few MiB. Held all at
//! once they would be the sum of the bodies; decoded one message at a time
//! and stored in sub-batches they stay under a bound set by the sub-batch
//! size and one body, and every event is still staged exactly once. With
//! tiny events for many tenants, the partitions' bookkeeping is counted
//! against the sub-batch size too, and the peak stays under the same bound.
//!
//! One test in this binary: the allocator counts the whole process, so a
//! second test running beside it would count too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lambda_events::event::sqs::SqsMessage;
use batcher::Batcher;
use batcher::records::{sqs_record, with_content_encoding};
use s3_export::inspect::{list_keys, read_object};
use s3_export::moto::MotoServer;
use shared::Config;
use shared::content_encoding::{ContentEncoding, encode_body};

/// Counts the bytes of every live allocation and keeps the highest count
/// since [`reset_peak`].
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE_BYTES.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The live bytes now, which the peak restarts from.
fn reset_peak() -> usize {
    let live = LIVE_BYTES.load(Ordering::Relaxed);
    PEAK_BYTES.store(live, Ordering::Relaxed);
    live
}

const MIB: usize = 1024 * 1024;
const BUCKET: &str = "s3-export-memory";
const SENT_MILLIS: i64 = 1_668_900_197_000;
const INGEST_MILLIS: i64 = 1_668_900_200_000;
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:events";
const MESSAGES: usize = 40;
/// About 1 KiB each: 2,600 make a body of about 2.6 MiB.
const EVENTS_PER_MESSAGE: usize = 2_600;
const TENANTS: usize = 4;
/// Under the default 16 MiB, so the window and the decoded body of one
/// message are small beside the sum of the batch.
const MAX_DECOMPRESSED_BODY_BYTES: usize = 3 * MIB;
const SUB_BATCH_BYTES: usize = 4 * MIB;
/// What the batcher may hold at once: a sub-batch of lines (its buffers may
/// have grown to twice what they hold), one decoded body (its buffer too),
/// its zstd window, the compressed sub-batch in flight and the SDK's
/// requests. The sum of the decoded bodies is about 100 MiB.
const PEAK_BOUND: usize = 2 * SUB_BATCH_BYTES + 2 * MAX_DECOMPRESSED_BODY_BYTES + 12 * MIB;

fn app_event(number: usize) -> String {
    // The padding makes an event about 1 KiB that zstd and gzip pack well,
    // so the bodies are small and the staged objects cheap to store.
    format!(
        r#"{{"organizationId":"t{}","eventTime":"2022-11-19T23:10:00Z","appId":"a","sessionId":"s-{number}","type":"step_enter","kind":"Session","n":{number},"pad":"{}"}}"#,
        number % TENANTS,
        "p".repeat(850)
    )
}

fn zstd_message(index: usize) -> SqsMessage {
    let mut payload = String::new();
    for n in 0..EVENTS_PER_MESSAGE {
        payload.push_str(&app_event(index * EVENTS_PER_MESSAGE + n));
        payload.push('\n');
    }
    assert!(payload.len() > 2 * MIB && payload.len() <= MAX_DECOMPRESSED_BODY_BYTES);
    let body = encode_body(ContentEncoding::Zstd, payload.as_bytes(), 3);
    with_content_encoding(
        sqs_record(&format!("m{index}"), &body, SENT_MILLIS, QUEUE_ARN),
        "zstd",
    )
}

#[tokio::test]
async fn a_batch_of_large_zstd_bodies_is_staged_within_a_bounded_peak() {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = moto.s3_client().await;
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    let config = Config::from_sources(
        |name| match name {
            "EXPORT_BUCKET" => Some(BUCKET.to_owned()),
            "MAX_DECOMPRESSED_BODY_BYTES" => Some(MAX_DECOMPRESSED_BODY_BYTES.to_string()),
            "SUB_BATCH_BYTES" => Some(SUB_BATCH_BYTES.to_string()),
            _ => None,
        },
        None,
    )
    .expect("config");
    let batcher = Batcher::new(config, s3.clone());
    let records: Vec<SqsMessage> = (0..MESSAGES).map(zstd_message).collect();
    let compressed: usize = records
        .iter()
        .map(|record| record.body.as_ref().unwrap().len())
        .sum();
    assert!(
        compressed < 4 * MIB,
        "the batch itself is small: {compressed}"
    );

    let before = reset_peak();
    let response = batcher::process(&batcher, &records, INGEST_MILLIS, "req-memory")
        .await
        .expect("the invocation succeeds");
    let peak = PEAK_BYTES.load(Ordering::Relaxed) - before;
    let decoded_sum = MESSAGES * EVENTS_PER_MESSAGE * app_event(0).len();
    eprintln!(
        "peak {:.1} MiB, bound {} MiB, decoded bodies {} MiB",
        peak as f64 / MIB as f64,
        PEAK_BOUND / MIB,
        decoded_sum / MIB
    );
    assert!(
        peak < PEAK_BOUND,
        "peak {} MiB over the bound of {} MiB (the decoded bodies come to {} MiB)",
        peak / MIB,
        PEAK_BOUND / MIB,
        decoded_sum / MIB
    );
    assert!(
        PEAK_BOUND < decoded_sum / 2,
        "the bound is well under the sum"
    );
    assert!(response.batch_item_failures.is_empty(), "no message failed");

    // Read back: every event staged exactly once, over several sub-batches.
    let keys = list_keys(&s3, BUCKET, "staging/").await.unwrap();
    assert!(
        keys.iter().any(|key| key.ends_with(".0001.staged")),
        "{keys:?}"
    );
    assert!(list_keys(&s3, BUCKET, "errors/").await.unwrap().is_empty());
    let mut seen = BTreeSet::new();
    let mut lines = 0;
    for key in &keys {
        let bytes = read_object(&s3, BUCKET, key).await.unwrap();
        for (segment, staged) in shared::staged::read_object(&bytes).unwrap() {
            for line in &staged {
                let (event, _) = shared::provenance::split_staged_line(line);
                let event: serde_json::Value = serde_json::from_str(event).unwrap();
                assert_eq!(
                    event["organizationId"].as_str(),
                    Some(segment.tenant.as_str())
                );
                seen.insert(event["n"].as_u64().unwrap());
                lines += 1;
            }
        }
    }
    assert_eq!(lines, MESSAGES * EVENTS_PER_MESSAGE, "no event twice");
    assert_eq!(
        seen.len(),
        MESSAGES * EVENTS_PER_MESSAGE,
        "every event once"
    );
    drop(moto);

    // Tiny events, each for a tenant of its own: what a sub-batch holds is
    // mostly its partitions' bookkeeping, which counts against the budget
    // too. Planned without S3 (tens of thousands of one-line segments), each
    // cut sub-batch dropped as `process` drops it once stored.
    let config = batcher.config();
    let records: Vec<SqsMessage> = (0..TENANT_MESSAGES)
        .map(one_tenant_an_event_message)
        .collect();
    let before = reset_peak();
    let mut planner = batcher::BatchPlanner::new(&config, &records, INGEST_MILLIS, "req-tenants");
    let mut objects = 0;
    let mut segments = 0;
    for index in 0..records.len() {
        planner.plan_message(index);
        for object in planner.take_objects() {
            objects += 1;
            segments += shared::staged::read_index(&object.body)
                .unwrap()
                .segments
                .len();
        }
    }
    let rest = planner.finish();
    for object in &rest.objects {
        objects += 1;
        segments += shared::staged::read_index(&object.body)
            .unwrap()
            .segments
            .len();
    }
    let peak = PEAK_BYTES.load(Ordering::Relaxed) - before;
    eprintln!(
        "many tenants: peak {:.1} MiB, {objects} objects, {segments} segments",
        peak as f64 / MIB as f64
    );
    assert_eq!(rest.stats.accepted, TENANT_MESSAGES * TENANTS_PER_MESSAGE);
    assert_eq!(
        segments,
        TENANT_MESSAGES * TENANTS_PER_MESSAGE,
        "one segment a tenant"
    );
    assert_eq!(objects, rest.stats.staged_objects, "one object a sub-batch");
    assert!(
        peak < PEAK_BOUND,
        "peak {} MiB over the bound of {} MiB with many tenants",
        peak / MIB,
        PEAK_BOUND / MIB
    );
}

const TENANT_MESSAGES: usize = 6;
const TENANTS_PER_MESSAGE: usize = 20_000;

/// A zstd body of small events, each for a tenant no other event has.
fn one_tenant_an_event_message(index: usize) -> SqsMessage {
    let mut payload = String::new();
    for n in 0..TENANTS_PER_MESSAGE {
        payload.push_str(&format!(
            r#"{{"organizationId":"tenant-{index}-{n}","eventTime":"2022-11-19T23:10:00Z","type":"x"}}"#
        ));
        payload.push('\n');
    }
    let body = encode_body(ContentEncoding::Zstd, payload.as_bytes(), 3);
    with_content_encoding(
        sqs_record(&format!("tenants-{index}"), &body, SENT_MILLIS, QUEUE_ARN),
        "zstd",
    )
}
