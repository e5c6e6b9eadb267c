//! The local runner end to end, as the README's first command runs it: a
//! generated workload through SQS, the event source mapping emulation and the
//! batcher, read back and checked.

use s3_export::local::{self, LocalOptions};
use s3_export::moto::MotoServer;
use s3_export::workload::{ProducerStyle, StreamMix};

fn options(endpoint: String) -> LocalOptions {
    LocalOptions {
        events: 300,
        tenants: 3,
        streams: StreamMix::Both,
        seed: 42,
        endpoint: Some(endpoint),
        keep_running: false,
        batch_size: 100,
        batching_window_ms: 1000,
        max_event_bytes: None,
        producer: ProducerStyle::Mixed,
        flush_workers: 2,
        // One or two tenants' hour an item: several items for two workers.
        work_item_bytes: Some(4096),
        shards: 1,
        interval: None,
        tick_seconds: 3.0,
    }
}

/// One tenant whose partitions are staged in 8 shards, its app events'
/// larger than an item: the coordinator splits it into ranges of shards
/// and three workers flush them at once; each event is exported once, and
/// the manifest says it was flushed shard by shard.
#[tokio::test]
async fn local_run_of_one_tenant_in_shards_flushes_ranges_at_once_each_event_once() {
    let moto = MotoServer::start().await.unwrap();
    let mut options = options(moto.endpoint());
    (options.events, options.tenants, options.shards) = (2000, 1, 8);
    options.flush_workers = 3;
    assert!(local::run(&options).await.unwrap());
    let s3 = moto.s3_client().await;
    let buckets = s3.list_buckets().send().await.unwrap();
    let bucket = buckets
        .buckets()
        .iter()
        .filter_map(|b| b.name())
        .find(|name| name.starts_with("s3-export-local-") && !name.ends_with("-destination"))
        .unwrap()
        .to_owned();
    let manifests: Vec<String> = s3_export::inspect::list_keys(&s3, &bucket, "manifests/")
        .await
        .unwrap()
        .into_iter()
        .filter(|key| key.ends_with(".json"))
        .collect();
    let mut sharded = 0;
    for key in &manifests {
        let bytes = s3_export::inspect::read_object(&s3, &bucket, key)
            .await
            .unwrap();
        let manifest: shared::manifest::Manifest = serde_json::from_slice(&bytes).unwrap();
        // Partitions within an item are flushed whole.
        if let Some(state) = &manifest.shards {
            assert_eq!(state.count, 8, "{key}");
            sharded += 1;
        }
        assert!(!manifest.in_progress(), "{key}");
    }
    assert!(sharded >= 1, "{manifests:?}");
}

#[tokio::test]
async fn local_run_stages_every_valid_event_and_rejects_every_malformed_one() {
    let moto = MotoServer::start().await.unwrap();
    assert!(local::run(&options(moto.endpoint())).await.unwrap());
}

/// The load script's style: events packed into gzip NDJSON messages with
/// the `content-encoding` attribute, malformed records among them, each
/// rejected alone, also the one that is not JSON at all and starts a
/// message of valid events (the workload packs it there: at a million
/// events such a message was once refused whole, its events never staged).
#[tokio::test]
async fn local_run_with_packed_gzip_messages_exports_every_event_once() {
    let moto = MotoServer::start().await.unwrap();
    let mut options = options(moto.endpoint());
    options.events = 2000;
    options.producer = ProducerStyle::Gzip;
    assert!(local::run(&options).await.unwrap());
}

/// A destination every 5 minutes, its schedule compressed to a run a
/// second: while the producer sends, the scheduled runs (the grace
/// applied, so the hour stays open) publish each run's new events as new
/// files, and no `_SUCCESS` appears before the closing flush, which writes
/// one in every hour folder; each event once, every event's freshness
/// measured from a scheduled run's files.
#[tokio::test]
async fn local_run_with_an_interval_publishes_files_while_the_hour_is_open() {
    let moto = MotoServer::start().await.unwrap();
    let mut options = options(moto.endpoint());
    options.events = 2000;
    options.interval = Some(5);
    options.tick_seconds = 1.0;
    let report = local::run_with_report(&options).await.unwrap();
    assert!(report.ok, "the run's checks");
    let schedule = report
        .schedule
        .expect("an interval run reports its schedule");
    let ticks = &schedule.ticks;
    assert!(
        schedule.ticks_publishing_open_hours() >= 2,
        "files before the hour closed after at least two runs: {ticks:#?}"
    );
    // Every event of the hour so far: no run closed it, so no marker.
    assert!(
        ticks
            .iter()
            .all(|tick| tick.success_markers == 0 && tick.early_success_markers.is_empty()),
        "no _SUCCESS before the closing flush: {ticks:#?}"
    );
    assert!(schedule.folders > 0, "{schedule:?}");
    assert_eq!(
        schedule.folders_with_success, schedule.folders,
        "the closing flush marks every hour folder"
    );
    assert_eq!(schedule.seen_only_after_close, 0, "{schedule:?}");
    let freshness = schedule.freshness.expect("measured");
    assert_eq!(freshness.events, 2000, "every distinct event measured");
    assert!(
        freshness.p50 <= freshness.p95 && freshness.p95 <= freshness.max,
        "{freshness:?}"
    );
}

/// An interval that does not divide an hour is refused by the
/// configuration, naming the destination's setting.
#[tokio::test]
async fn local_run_refuses_an_interval_that_does_not_divide_an_hour() {
    let moto = MotoServer::start().await.unwrap();
    let mut options = options(moto.endpoint());
    options.interval = Some(7);
    let error = local::run_with_report(&options).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("destinations[0].interval"),
        "{error:#}"
    );
}

#[tokio::test]
async fn local_run_reports_a_mismatch_when_events_are_rejected_unexpectedly() {
    // A maximum event size below the generated events' size makes the
    // batcher refuse them: the run must say the export does not match.
    let moto = MotoServer::start().await.unwrap();
    let mut options = options(moto.endpoint());
    options.max_event_bytes = Some(100);
    assert!(!local::run(&options).await.unwrap());
}

/// A thousand tenants through the whole local pipeline (SQS, the event
/// source mapping emulation, the batcher, the flusher), every request
/// through the fault proxy (no faults) so that the batcher's PUTs are
/// counted from its log: each event is exported once, and each batcher
/// invocation PUT one staged object per hour it touched, whatever the
/// number of tenants its batch held.
#[tokio::test]
async fn a_thousand_tenants_cost_each_invocation_one_put_per_hour_and_export_each_event_once() {
    use std::collections::{BTreeMap, BTreeSet};

    use s3_export::fault_proxy::{FaultPlan, FaultProxy};
    use shared::layout;

    let moto = MotoServer::start().await.unwrap();
    let proxy = FaultProxy::start(&moto.endpoint(), FaultPlan::none())
        .await
        .unwrap();
    let mut options = options(proxy.endpoint());
    options.events = 3000;
    options.tenants = 1000;
    options.batch_size = 200;
    assert!(local::run(&options).await.unwrap(), "each event once");

    // Staging PUTs by invocation (the request id in the key): one key per
    // hour and sub-batch, each PUT once.
    let mut staged: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for request in proxy.request_log() {
        let key = request.key();
        if request.is_sqs() || !request.puts_object(request.bucket()) {
            continue;
        }
        if let Some((hour, _, request_id, sub_batch)) = layout::parse_staged_object_key(&key) {
            staged
                .entry(request_id)
                .or_default()
                .push(format!("{}/{sub_batch}", hour.date_path()));
        } else if let Some((_, _, request_id)) = layout::parse_errors_key(&key) {
            *errors.entry(request_id).or_default() += 1;
        }
        assert!(
            layout::parse_staging_chunk_key(&key).is_none(),
            "a chunk of the older format was staged: {key}"
        );
    }
    assert!(staged.len() > 1, "{} invocations staged", staged.len());
    let partitions: usize = 2 * 1000;
    for (request_id, puts) in &staged {
        let keys: BTreeSet<&String> = puts.iter().collect();
        assert_eq!(
            keys.len(),
            puts.len(),
            "{request_id} PUT a staged key twice"
        );
        assert!(
            puts.len() <= 2,
            "{request_id} PUT {} staged objects for at most two hours",
            puts.len()
        );
    }
    assert!(errors.values().all(|&count| count == 1), "{errors:?}");
    let total: usize = staged.values().map(Vec::len).sum();
    assert!(
        total < partitions / 10,
        "{total} staged PUTs for {} invocations and {partitions} possible partitions",
        staged.len()
    );
}
