//! Tenant isolation against moto (docs/design.md, invariant 9): an event is
//! written only to destinations that select its stream and tenant at the
//! moment of writing. Here: pending publishes of a destination edited
//! between the commit and the publish.

use aws_lambda_events::event::sqs::SqsMessage;
use batcher::Batcher;
use batcher::records::sqs_record;
use flusher::{Flusher, Trigger};
use s3_export::inspect::{list_keys, read_gzip_ndjson};
use s3_export::moto::MotoServer;
use s3_export::status::{self, StatusOptions};
use serde_json::Value;
use shared::Config;
use shared::layout;
use shared::manifest::Manifest;
use shared::partition::{Hour, PartitionKey, TenantKey};

const EXPORT: &str = "iso-export";
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:events";
/// 2026-11-22T10:00:00Z
const TEN: i64 = 1_795_341_600_000;
const HOUR: i64 = 3_600_000;
/// The issue's reproduction: 21 pending events of the first tenant.
const PENDING_EVENTS: usize = 21;

fn config(document: &str) -> Config {
    Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| EXPORT.to_owned()),
        Some(document),
    )
    .unwrap()
}

/// Destination `customer` serving `tenant` in `bucket`.
fn customer(tenant: &str, bucket: &str) -> Config {
    config(&format!(
        r#"{{"destinations":[{{"name":"customer","bucket":"{bucket}","tenants":["{tenant}"]}}]}}"#
    ))
}

fn app_event(tenant: &str, n: usize) -> String {
    format!(
        r#"{{"organizationId":"{tenant}","eventTime":"2026-11-22T10:{:02}:00Z","type":"step_enter","sessionId":"s{n}","n":{n}}}"#,
        n % 60
    )
}

async fn stage(config: &Config, s3: &aws_sdk_s3::Client, tenant: &str, sent: i64, request: &str) {
    let records: Vec<SqsMessage> = (0..PENDING_EVENTS)
        .map(|n| {
            sqs_record(
                &format!("{request}-{n}"),
                &app_event(tenant, n),
                sent,
                QUEUE_ARN,
            )
        })
        .collect();
    let batcher = Batcher::new(config.clone(), s3.clone());
    let response = batcher::process(&batcher, &records, sent, request)
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
}

async fn flush(config: &Config, s3: &aws_sdk_s3::Client, now: i64) -> flusher::FlushReport {
    let trigger = Trigger::from_payload(
        &serde_json::json!({ "time": shared::time::format_rfc3339_millis(now) }),
    )
    .unwrap();
    flusher::run(&Flusher::new(config.clone(), s3.clone()), &trigger, None)
        .await
        .unwrap()
}

/// The tenant of every event in `bucket`, one entry per event.
async fn tenants_in(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let mut tenants: Vec<String> = read_gzip_ndjson(s3, bucket, "")
        .await
        .unwrap()
        .iter()
        .flat_map(|file| file.lines.iter())
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap();
            event["organizationId"].as_str().unwrap().to_owned()
        })
        .collect();
    tenants.sort();
    tenants
}

async fn manifest(s3: &aws_sdk_s3::Client, tenant: &str) -> Manifest {
    let key = layout::manifest_key(&PartitionKey {
        hour: Hour::containing(TEN),
        stream: "airkit-app-events".into(),
        tenant: TenantKey::encode(tenant),
    });
    let object = s3
        .get_object()
        .bucket(EXPORT)
        .key(key)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&object.body.collect().await.unwrap().into_bytes()).unwrap()
}

/// Moto with the export bucket and `buckets`; `t1-old` is never created, so
/// every write to it is refused (NoSuchBucket) and its parts stay pending.
async fn moto_with(buckets: &[&str]) -> (MotoServer, aws_sdk_s3::Client) {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let s3 = moto.s3_client().await;
    for bucket in [EXPORT].iter().chain(buckets) {
        s3.create_bucket().bucket(*bucket).send().await.unwrap();
    }
    (moto, s3)
}

#[tokio::test]
async fn a_destination_repointed_at_another_tenant_never_receives_the_first_tenants_pending_parts()
{
    let (_moto, s3) = moto_with(&["t2-bucket"]).await;
    let before = customer("t1", "t1-old");
    stage(&before, &s3, "t1", TEN + 1_000, "req-t1").await;
    let first = flush(&before, &s3, TEN + 2 * HOUR).await;
    assert_eq!(first.pending_publishes, 1, "{first:?}");
    assert_eq!(
        manifest(&s3, "t1").await.destinations["customer"].pending,
        [1]
    );

    // The operator repoints `customer` at another tenant and its bucket;
    // that tenant's own events arrive in the next hour.
    let after = customer("t2", "t2-bucket");
    stage(&after, &s3, "t2", TEN + HOUR + 1_000, "req-t2").await;
    let second = flush(&after, &s3, TEN + 3 * HOUR).await;

    assert_eq!(
        tenants_in(&s3, "t2-bucket").await,
        vec!["t2".to_owned(); PENDING_EVENTS],
        "only the new tenant's events reach its bucket"
    );
    assert_eq!(second.dropped_publishes, 1, "{second:?}");
    assert_eq!(second.pending_publishes, 0, "{second:?}");
    let state = &manifest(&s3, "t1").await.destinations["customer"];
    assert!(state.pending.is_empty(), "{state:?}");
    assert_eq!(state.dropped, [1]);
    assert!(state.published.is_empty());
    // Dropped from the destination, not lost: the archive keeps them.
    let archived = s3_export::inspect::read_archive(&s3, EXPORT, "")
        .await
        .unwrap();
    let archived_t1 = archived
        .iter()
        .flat_map(|file| file.lines.iter())
        .filter(|line| line.contains(r#""organizationId":"t1""#))
        .count();
    assert_eq!(archived_t1, PENDING_EVENTS);
    // Nothing is left to retry for the old partition.
    assert!(
        list_keys(&s3, EXPORT, shared::layout::PENDING_PREFIX)
            .await
            .unwrap()
            .is_empty()
    );

    // `status` shows the drop.
    let rows = status::rows(&s3, &after, &StatusOptions::default())
        .await
        .unwrap();
    let dropped: Vec<_> = rows.iter().filter(|row| row.status == "dropped").collect();
    assert_eq!(dropped.len(), 1, "{rows:?}");
    assert_eq!(
        (dropped[0].tenant.as_str(), dropped[0].destination.as_str()),
        ("t1", "customer")
    );
    assert_eq!(dropped[0].dropped, 1);
}

#[tokio::test]
async fn a_destination_whose_bucket_changed_for_the_same_tenant_sends_its_pending_parts_there() {
    let (_moto, s3) = moto_with(&["t1-new"]).await;
    let before = customer("t1", "t1-old");
    stage(&before, &s3, "t1", TEN + 1_000, "req-t1").await;
    let first = flush(&before, &s3, TEN + 2 * HOUR).await;
    assert_eq!(first.pending_publishes, 1, "{first:?}");

    let after = customer("t1", "t1-new");
    let second = flush(&after, &s3, TEN + 3 * HOUR).await;
    assert_eq!(
        (second.pending_publishes, second.dropped_publishes),
        (0, 0),
        "{second:?}"
    );
    assert_eq!(
        tenants_in(&s3, "t1-new").await,
        vec!["t1".to_owned(); PENDING_EVENTS]
    );
    let state = &manifest(&s3, "t1").await.destinations["customer"];
    assert_eq!(
        (state.published.as_slice(), state.dropped.len()),
        (&[1][..], 0)
    );
}

#[tokio::test]
async fn a_destination_narrowed_to_other_streams_drops_the_pending_parts_of_the_old_stream() {
    let (_moto, s3) = moto_with(&["t1-new"]).await;
    let before = customer("t1", "t1-old");
    stage(&before, &s3, "t1", TEN + 1_000, "req-t1").await;
    flush(&before, &s3, TEN + 2 * HOUR).await;

    let after = config(
        r#"{"destinations":[{"name":"customer","bucket":"t1-new","tenants":["t1"],"streams":["airkit-audit-logs"]}]}"#,
    );
    let second = flush(&after, &s3, TEN + 3 * HOUR).await;
    assert_eq!(second.dropped_publishes, 1, "{second:?}");
    assert!(list_keys(&s3, "t1-new", "").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_removed_destination_drops_its_pending_parts_and_a_disabled_one_keeps_them() {
    let (_moto, s3) = moto_with(&["t2-bucket"]).await;
    let before = config(
        r#"{"destinations":[
          {"name":"customer","bucket":"t1-old","prefix":"customer/","tenants":["t1"]},
          {"name":"paused","bucket":"t1-old","prefix":"paused/","tenants":["t1"]}
        ]}"#,
    );
    stage(&before, &s3, "t1", TEN + 1_000, "req-t1").await;
    flush(&before, &s3, TEN + 2 * HOUR).await;

    let after = config(
        r#"{"destinations":[{"name":"paused","bucket":"t1-old","prefix":"paused/","tenants":["t1"],"enabled":false}]}"#,
    );
    let second = flush(&after, &s3, TEN + 3 * HOUR).await;
    assert_eq!(second.dropped_publishes, 1, "{second:?}");
    let manifest = manifest(&s3, "t1").await;
    assert_eq!(manifest.destinations["customer"].dropped, [1]);
    assert!(manifest.destinations["customer"].pending.is_empty());
    assert_eq!(manifest.destinations["paused"].pending, [1]);
    assert!(manifest.destinations["paused"].dropped.is_empty());
}
