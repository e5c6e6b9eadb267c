//! `s3-export local`: the pipeline on one machine. Starts moto_server on
//! loopback (or uses a given endpoint), creates the export bucket, a
//! destination bucket and the events queue with its dead-letter queue, sends
//! a realistic workload through SQS with the SDK, delivers it to the real
//! batcher handler through the event source mapping emulation, flushes every
//! staged hour with the real flusher (its coordinator sending work items to
//! a flush queue on moto, and `--flush-workers` workers flushing them at
//! once, each on a thread of its own), runs the real verify function against
//! the destination, then reads back everything stored and checks it against
//! what was sent.
//!
//! With `--interval`, the destination receives a file every few minutes:
//! while the producer sends, scheduled flush runs fire every
//! `--tick-seconds` (the schedule compressed), each publishing the open
//! hour's new events, and the run measures each event's freshness, from
//! its send to the first file holding it (`crate::freshness`,
//! docs/freshness.md).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_lambda_events::event::sqs::SqsEvent;
use batcher::Batcher;
use flusher::coordinator::FlushQueue;
use flusher::{Flusher, Trigger};
use lambda_runtime::LambdaEvent;
use shared::Config;
use shared::layout::STAGING_PREFIX;
use shared::partition::Hour;

use crate::esm::{
    DrainReport, EventSourceMapping, QueueSet, approximate_message_count, create_queue_with_dlq,
};
use crate::freshness::{DestinationWatch, Freshness, ScheduleReport, Tick};
use crate::inspect::{
    StagingFormat, StagingObject, StoredFile, list_keys, read_export_files, read_gzip_ndjson,
    read_staging,
};
use crate::moto::MotoServer;
use crate::workload::{self, OutgoingMessage, ProducerStyle, StreamMix, Workload, WorkloadSpec};

/// Options of a local run.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalOptions {
    /// Valid events to send (re-sends and malformed records come on top).
    #[arg(long, default_value_t = 2000)]
    pub events: usize,
    /// Distinct tenants (organizations).
    #[arg(long, default_value_t = 5)]
    pub tenants: usize,
    /// Which streams the workload generates: `app` (Airkit App Events),
    /// `audit` (Airkit Audit Logs) or `both`.
    #[arg(long, value_enum, default_value_t = StreamMix::Both)]
    pub streams: StreamMix,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Use this S3/SQS endpoint instead of starting moto_server.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Keep moto_server running afterwards, to explore with the AWS CLI.
    #[arg(long)]
    pub keep_running: bool,
    /// The event source mapping's batch size.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// The event source mapping's batching window, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub batching_window_ms: u64,
    /// Override the batcher's maximum event size (MAX_EVENT_BYTES).
    #[arg(long)]
    pub max_event_bytes: Option<usize>,
    /// How producers shape messages: `mixed` (every body shape, a few
    /// events each), `ndjson` or `gzip` (packed into 256 KiB messages by the
    /// producer crate: far fewer messages, for large runs).
    #[arg(long, value_enum, default_value_t = ProducerStyle::Mixed)]
    pub producer: ProducerStyle,
    /// Flush workers running at once, as the flush queue's event source
    /// mapping runs them (FlushWorkers in the template): the coordinator
    /// sends the closed hours' work items to a flush queue on moto and this
    /// many workers, each on its own thread, flush them. 0: one in-process
    /// flush run instead, as a deployment without a flush queue does.
    #[arg(long, default_value_t = 2)]
    pub flush_workers: usize,
    /// The most staged bytes in one work item (WORK_ITEM_BYTES); smaller
    /// items spread a small run over the workers.
    #[arg(long)]
    pub work_item_bytes: Option<usize>,
    /// Shards of every partition (a power of two up to 1,024; the streams'
    /// `shards` setting): with fewer tenants than workers and small items,
    /// a tenant's hour is flushed as ranges of its shards, several workers
    /// at once (docs/scale-out.md).
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Give the destination a file every this many minutes (its
    /// `interval`: 1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30), the flush
    /// schedule (FLUSH_SCHEDULE) every as many, the hive layout and
    /// `_SUCCESS` markers. While the producer sends, scheduled flush runs
    /// fire every `--tick-seconds`, each publishing the open hour's new
    /// events as new files, until every event is in the destination; then
    /// the closing flush, and the freshness measured (docs/freshness.md).
    #[arg(long, value_name = "MINUTES")]
    pub interval: Option<u32>,
    /// With `--interval`: seconds between two scheduled flush runs. The
    /// tick stands in for the interval, which a local run cannot wait
    /// for: the printed estimate puts the interval back.
    #[arg(long, default_value_t = 3.0, value_name = "S")]
    pub tick_seconds: f64,
}

/// What a local run found.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalReport {
    /// Whether what was stored matches what was sent (and, with an
    /// interval, the schedule's checks passed).
    pub ok: bool,
    /// The scheduled flush runs of a run with `--interval`, and the
    /// freshness they measured.
    pub schedule: Option<ScheduleReport>,
}

const MAX_RECEIVE_COUNT: u32 = 3;
/// Where the local destination's files go in its bucket.
const DESTINATION_PREFIX: &str = "exports/";
const VISIBILITY_TIMEOUT_SECS: u32 = 2;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// The flush queue's: longer than a debug build takes to flush one item of
/// a large local run, so that no item still being flushed comes back.
const FLUSH_VISIBILITY_TIMEOUT_SECS: u32 = 120;
/// How long scheduled flush runs go on once everything is sent, for the
/// last events to reach the destination.
const SCHEDULE_TIMEOUT_AFTER_SENDING: Duration = Duration::from_secs(300);
/// Messages sent before the mapping delivers them: moto's SQS slows down with
/// queue depth, and real producers do not wait for the whole workload either.
const SEND_WAVE: usize = 200;

/// Runs the pipeline locally; `Ok(false)` when what was stored does not match
/// what was sent.
pub async fn run(options: &LocalOptions) -> Result<bool> {
    Ok(run_with_report(options).await?.ok)
}

/// Runs the pipeline locally and says what it found: [`run`], with the
/// scheduled flush runs of an `--interval` run.
pub async fn run_with_report(options: &LocalOptions) -> Result<LocalReport> {
    let tick_period = match options.interval {
        Some(_) if !(options.tick_seconds > 0.0 && options.tick_seconds.is_finite()) => {
            bail!(
                "--tick-seconds must be a positive number of seconds, not {}",
                options.tick_seconds
            )
        }
        Some(_) => Some(Duration::from_secs_f64(options.tick_seconds)),
        None => None,
    };
    let (moto, sdk) = match &options.endpoint {
        Some(endpoint) => (None, endpoint_config(endpoint).await),
        None => {
            eprintln!("starting moto_server on 127.0.0.1 ...");
            let moto = MotoServer::start().await?;
            let sdk = moto.sdk_config().await;
            (Some(moto), sdk)
        }
    };
    let endpoint = sdk.endpoint_url().unwrap_or_default().to_owned();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::new(&sdk);

    let run_id = now_millis() / 1000;
    let bucket = format!("s3-export-local-{run_id}");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .context("creating the export bucket")?;
    let queues = create_queue_with_dlq(
        &sqs,
        &format!("s3-export-events-{run_id}"),
        MAX_RECEIVE_COUNT,
        VISIBILITY_TIMEOUT_SECS,
    )
    .await?;
    println!("endpoint      {endpoint}");
    println!("export bucket s3://{bucket}");
    println!(
        "queue         {} (DLQ after {MAX_RECEIVE_COUNT} receives)",
        queues.url
    );

    // With an interval, events of the hour so far, as producers sending
    // now send them: partitioned by event time (PARTITION_BY=event) as by
    // ingest, each is staged in the open hour, the path measured.
    let generated_millis = now_millis();
    let spread_millis = match options.interval {
        Some(_) => generated_millis - Hour::containing(generated_millis).start_millis(),
        None => workload::HOUR_MILLIS,
    };
    let workload = workload::generate(&WorkloadSpec {
        events: options.events,
        tenants: options.tenants,
        seed: options.seed,
        now_millis: generated_millis,
        spread_millis,
        streams: options.streams,
    });
    let messages = workload::messages_for(&workload, options.producer)
        .context("packing the workload's events into messages")?;
    let destination = format!("{bucket}-destination");
    s3.create_bucket()
        .bucket(&destination)
        .send()
        .await
        .context("creating the destination bucket")?;
    let mut document = serde_json::json!({
        "destinations": [{
            "name": "local", "bucket": destination, "prefix": DESTINATION_PREFIX, "shared": true,
        }]
    });
    if let Some(minutes) = options.interval {
        let local = &mut document["destinations"][0];
        local["interval"] = minutes.into();
        local["layout"] = "hive".into();
        local["successMarker"] = true.into();
    }
    if options.shards != 1 {
        let stream =
            |profile: &str| serde_json::json!({"profile": profile, "shards": options.shards});
        document["streams"] = serde_json::json!({
            "airkit-app-events": stream("airkit-app-events"),
            "airkit-audit-logs": stream("airkit-audit-logs"),
        });
    }
    let document = document.to_string();
    let config = Config::from_sources(
        |name| match name {
            shared::config::env::EXPORT_BUCKET => Some(bucket.clone()),
            shared::config::env::MAX_EVENT_BYTES if options.max_event_bytes.is_some() => {
                options.max_event_bytes.map(|bytes| bytes.to_string())
            }
            shared::config::env::WORK_ITEM_BYTES if options.work_item_bytes.is_some() => {
                options.work_item_bytes.map(|bytes| bytes.to_string())
            }
            // The schedule a destination every `minutes` needs.
            shared::config::env::FLUSH_SCHEDULE if options.interval.is_some() => options
                .interval
                .map(|minutes| format!("cron(0/{minutes} * * * ? *)")),
            other => std::env::var(other).ok(),
        },
        Some(&document),
    )?;
    match (options.interval, tick_period) {
        (Some(minutes), Some(tick)) => println!(
            "destination   s3://{destination}/{DESTINATION_PREFIX} (every tenant, the hive layout, _SUCCESS markers, a file every {minutes} minutes: scheduled flush runs every {:.1} s stand in for them)",
            tick.as_secs_f64()
        ),
        _ => println!(
            "destination   s3://{destination}/{DESTINATION_PREFIX} (every tenant, the default key layout)"
        ),
    }
    let batcher = Batcher::new(config.clone(), s3.clone());
    let mapping = EventSourceMapping::for_queue(
        sqs.clone(),
        &queues.url,
        options.batch_size,
        Duration::from_millis(options.batching_window_ms),
    )
    .await?;
    let invocations = AtomicUsize::new(0);
    let mut handler = |event: SqsEvent| {
        let n = invocations.fetch_add(1, Ordering::SeqCst);
        let mut context = lambda_runtime::Context::default();
        context.request_id = format!("local-{run_id}-{n:05}");
        let batcher = &batcher;
        async move {
            batcher::handle(batcher, LambdaEvent::new(event, context))
                .await
                .map_err(lambda_runtime::Error::from)
        }
    };

    let flush =
        LocalFlush::new(&config, &s3, &sqs, &endpoint, run_id, options.flush_workers).await?;
    let mut watch = DestinationWatch::new(
        &destination,
        DESTINATION_PREFIX,
        config.destinations[0].layout.clone(),
    );
    let want: HashSet<&str> = workload
        .expected
        .lines
        .values()
        .flatten()
        .map(String::as_str)
        .collect();

    // Producers and the event source mapping run side by side, as in AWS:
    // a wave of messages is sent, then delivered while the next is prepared.
    // Each record's send time is when SQS acknowledged its wave (its first).
    let mut sent_at: HashMap<&str, Instant> = HashMap::new();
    let sending_done = AtomicBool::new(false);
    let deliver = async {
        let mut delivered = DrainReport::default();
        for (wave, wave_messages) in messages.chunks(SEND_WAVE).enumerate() {
            send(&sqs, &queues.url, wave_messages).await?;
            let acknowledged = Instant::now();
            for record in wave_messages.iter().flat_map(|message| &message.records) {
                sent_at.entry(record.as_str()).or_insert(acknowledged);
            }
            loop {
                let poll = mapping.poll_once(&mut handler).await?;
                let idle = poll.received == 0;
                delivered.add(poll);
                if idle {
                    break;
                }
            }
            eprint!(
                "\rsent {:>6} of {} messages, delivered {:>6}",
                (wave * SEND_WAVE + wave_messages.len()),
                messages.len(),
                delivered.deleted
            );
        }
        eprintln!();
        // Whatever failed comes back after the visibility timeout; wait for it.
        delivered.merge(mapping.drain(&mut handler, DRAIN_TIMEOUT).await?);
        sending_done.store(true, Ordering::SeqCst);
        anyhow::Ok(delivered)
    };
    // With an interval, the flush schedule fires meanwhile, compressed.
    let (drained, ticks) = match tick_period {
        Some(period) => {
            let schedule = tick_until_delivered(
                &flush,
                &s3,
                &mut watch,
                period,
                config.flush_grace_minutes,
                &sending_done,
                &want,
            );
            tokio::try_join!(deliver, schedule)?
        }
        None => (deliver.await?, Vec::new()),
    };
    println!(
        "sent          {} messages: {} events ({} re-sent messages), {} malformed records; producer style {:?}",
        messages.len(),
        workload.expected.distinct_events,
        workload.expected.resent_messages,
        workload.expected.rejected.values().sum::<usize>(),
        options.producer
    );
    let dead_letters = approximate_message_count(&sqs, &queues.dlq_url).await?;
    println!(
        "delivered     {} messages in {} batcher invocations; {} reported failed; {} in the DLQ; {} deletes refused; {} releases refused; {} delivered twice in one batch",
        drained.received,
        drained.invocations,
        drained.failed.len(),
        dead_letters,
        drained.delete_failures.len(),
        drained.release_failures.len(),
        drained.duplicates.len()
    );
    for failure in drained.delete_failures.iter().take(5) {
        println!("  delete refused: {failure}");
    }
    for failure in drained.release_failures.iter().take(5) {
        println!("  release refused: {failure}");
    }
    for id in drained.duplicates.iter().take(5) {
        println!("  delivered twice in one batch: {id}");
    }

    let staged = read_staging(&s3, &bucket, STAGING_PREFIX).await?;
    match tick_period {
        Some(_) => println!(
            "staged        {} (what the scheduled runs left to the closing flush)",
            staged_summary(&staged)
        ),
        None => println!("staged        {}", staged_summary(&staged)),
    }
    let mut staging_problems: Vec<String> = staged
        .iter()
        .filter_map(|object| {
            let error = object.error.as_ref()?;
            Some(format!(
                "s3://{bucket}/{} cannot be read: {error}",
                object.key
            ))
        })
        .collect();

    // The schedule, fired for every hour staged: a manual flush up to the
    // end of the current hour closes them all.
    let until = Hour::containing(now_millis()).end_millis();
    let trigger = Trigger::from_payload(&serde_json::json!({
        "flush": { "until": shared::time::format_rfc3339_millis(until) }
    }))?;
    let started = Instant::now();
    let flushed = flush.run(&trigger).await?;
    println!(
        "flushed       {} ({:.1} s)",
        flushed.summary,
        started.elapsed().as_secs_f64()
    );
    let schedule = match (options.interval, tick_period) {
        (Some(interval_minutes), Some(tick_period)) => {
            let closed_at = Instant::now();
            watch.look(&s3, closed_at).await?;
            let mut samples = Vec::new();
            let mut seen_only_after_close = 0;
            for line in &want {
                let (Some(seen), Some(sent)) = (watch.first_seen(line), sent_at.get(line)) else {
                    continue;
                };
                if seen >= closed_at {
                    seen_only_after_close += 1;
                } else {
                    samples.push(seen.saturating_duration_since(*sent));
                }
            }
            let (folders, folders_with_success) = watch.folders();
            Some(ScheduleReport {
                interval_minutes,
                tick_period,
                ticks,
                freshness: Freshness::of(samples),
                seen_only_after_close,
                folders,
                folders_with_success,
            })
        }
        _ => None,
    };

    // Verify, as after a deploy and every day: the real function writes its
    // airkit-verify-test object into the destination.
    let verified = run_verify(config, &s3).await?;

    let archive = crate::inspect::read_archive(&s3, &bucket, "").await?;
    let published = read_export_files(&s3, &destination, "").await?;
    let errors = read_gzip_ndjson(&s3, &bucket, "errors/").await?;
    staging_problems.extend(left_staged(&list_keys(&s3, &bucket, STAGING_PREFIX).await?));
    print_tree(&format!("{destination}/"), &published);
    print_tree(&format!("{bucket}/errors/"), &errors);
    print_partitions(&archive);
    let rejected = print_rejections(&errors)?;
    print_samples(&published);
    if let Some(schedule) = &schedule {
        println!();
        schedule.print();
    }
    let mut found_problems = staging_problems;
    found_problems.extend(schedule.iter().flat_map(ScheduleReport::problems));
    let ok = check(
        &workload,
        &archive,
        &published,
        &rejected,
        dead_letters,
        &found_problems,
        verified,
    );

    println!();
    println!("where to look next:");
    if options.keep_running || options.endpoint.is_some() {
        println!("  aws --endpoint-url {endpoint} s3 ls --recursive s3://{bucket}/");
        println!("  aws --endpoint-url {endpoint} s3 cp s3://{bucket}/<key> - | zcat | jq .");
    }
    println!(
        "  README.md#configuration for the variables the batcher reads; `cargo run -- local --help` for options"
    );
    if options.keep_running
        && let Some(moto) = &moto
    {
        println!(
            "moto_server keeps running at {} (credentials testing/testing, us-east-1); Ctrl-C stops it",
            moto.endpoint()
        );
        tokio::signal::ctrl_c().await?;
    }
    drop(moto);
    Ok(LocalReport { ok, schedule })
}

/// How a local run flushes: in one in-process run (no flush workers), or
/// as a deployment with a flush queue does, the coordinator sending work
/// items to a flush queue on moto and the workers flushing them.
struct LocalFlush {
    flusher: Flusher,
    config: Config,
    endpoint: String,
    sqs: aws_sdk_sqs::Client,
    /// The flush queue and its dead-letter queue; `None`: in-process runs.
    queues: Option<QueueSet>,
    workers: usize,
}

/// What one flush run of a local run did.
struct FlushRun {
    events: u64,
    /// Partitions that failed.
    failed: usize,
    /// What it did, in the words of the run's `flushed` line.
    summary: String,
}

impl LocalFlush {
    /// Flushes with `workers` workers (0: in-process runs), creating the
    /// flush queue they need.
    async fn new(
        config: &Config,
        s3: &aws_sdk_s3::Client,
        sqs: &aws_sdk_sqs::Client,
        endpoint: &str,
        run_id: i64,
        workers: usize,
    ) -> Result<Self> {
        let mut flusher = Flusher::new(config.clone(), s3.clone());
        let queues = if workers == 0 {
            None
        } else {
            let queues = create_queue_with_dlq(
                sqs,
                &format!("s3-export-flush-{run_id}"),
                MAX_RECEIVE_COUNT,
                FLUSH_VISIBILITY_TIMEOUT_SECS,
            )
            .await?;
            flusher.queue = Some(FlushQueue {
                sqs: sqs.clone(),
                url: queues.url.clone(),
            });
            Some(queues)
        };
        Ok(Self {
            flusher,
            config: config.clone(),
            endpoint: endpoint.to_owned(),
            sqs: sqs.clone(),
            queues,
            workers,
        })
    }

    /// One flush run started by `trigger`: the coordinator and then the
    /// workers until the flush queue is empty, or the in-process run.
    async fn run(&self, trigger: &Trigger) -> Result<FlushRun> {
        let (Some(queues), Some(queue)) = (&self.queues, &self.flusher.queue) else {
            let flushed = flusher::run(&self.flusher, trigger, None).await?;
            return Ok(FlushRun {
                events: flushed.events,
                failed: flushed.failed,
                summary: format!(
                    "{} partitions in one run: {} events archived and published, {} duplicates dropped, {} failed",
                    flushed.partitions.len(),
                    flushed.events,
                    flushed.duplicates,
                    flushed.failed,
                ),
            });
        };
        let planned = flusher::coordinator::coordinate(&self.flusher, queue, trigger, None).await?;
        // On a blocking thread of their own: this runtime keeps serving
        // whatever runs on it (a fault proxy in front of moto, for one).
        let worked = {
            let (config, endpoint, queues) =
                (self.config.clone(), self.endpoint.clone(), queues.clone());
            let workers = self.workers;
            tokio::task::spawn_blocking(move || {
                run_workers(&config, &endpoint, &queues, workers, DRAIN_TIMEOUT)
            })
            .await
            .context("the flush workers' thread")??
        };
        let flush_dead_letters = approximate_message_count(&self.sqs, &queues.dlq_url).await?;
        Ok(FlushRun {
            events: worked.events,
            failed: worked.failed,
            summary: format!(
                "{} partitions in {} work items ({} of them ranges of shards) by {} workers: {} events archived and published, {} duplicates dropped, {} failed, {} items retried, {} in the flush DLQ",
                planned.partitions,
                planned.items,
                planned.shard_ranges,
                self.workers,
                worked.events,
                worked.duplicates,
                worked.failed,
                worked.drained.failed.len(),
                flush_dead_letters,
            ),
        })
    }
}

/// The flush schedule of a destination with an interval, compressed: a
/// scheduled flush run (EventBridge's payload: the grace applies, so the
/// current hour stays open) at every `period` of wall time, each followed
/// by a look at the destination, while the producer sends; once
/// `sending_done`, on until the destination holds every one of `want` (or
/// [`SCHEDULE_TIMEOUT_AFTER_SENDING`] has passed). A run that overruns its
/// period skips the slots it missed, as the next run of a real schedule
/// finds the work of both.
async fn tick_until_delivered(
    flush: &LocalFlush,
    s3: &aws_sdk_s3::Client,
    watch: &mut DestinationWatch,
    period: Duration,
    grace_minutes: usize,
    sending_done: &AtomicBool,
    want: &HashSet<&str>,
) -> Result<Vec<Tick>> {
    let schedule_start = Instant::now();
    let mut ticks: Vec<Tick> = Vec::new();
    let mut sent_by: Option<Instant> = None;
    loop {
        if sending_done.load(Ordering::SeqCst) {
            let since = *sent_by.get_or_insert_with(Instant::now);
            if watch.holds_all(want.iter().copied()) {
                break;
            }
            if since.elapsed() > SCHEDULE_TIMEOUT_AFTER_SENDING {
                eprintln!(
                    "\rscheduled flush runs stop: {} s after the last send, not every event is in the destination",
                    SCHEDULE_TIMEOUT_AFTER_SENDING.as_secs()
                );
                break;
            }
        }
        let slots = (schedule_start.elapsed().as_secs_f64() / period.as_secs_f64()).floor();
        tokio::time::sleep_until((schedule_start + period.mul_f64(slots + 1.0)).into()).await;

        let started = Instant::now();
        let trigger = Trigger::from_payload(&serde_json::json!({
            "time": shared::time::format_rfc3339_millis(now_millis())
        }))?;
        let run = flush
            .run(&trigger)
            .await
            .with_context(|| format!("scheduled flush run {}", ticks.len() + 1))?;
        let published = Instant::now();
        let new = watch.look(s3, published).await?;
        let open =
            |hour: &Option<Hour>| hour.is_some_and(|hour| !trigger.closes(hour, grace_minutes));
        let open_hour_files = new.files.iter().filter(|(_, hour)| open(hour)).count();
        let (early, closed): (Vec<_>, Vec<_>) = new
            .success_markers
            .into_iter()
            .partition(|(_, hour)| hour.is_none() || open(hour));
        let tick = Tick {
            started: started - schedule_start,
            took: published - started,
            events: run.events,
            failed: run.failed,
            open_hour_files,
            closed_hour_files: new.files.len() - open_hour_files,
            new_events: new.new_lines,
            success_markers: closed.len(),
            early_success_markers: early.into_iter().map(|(key, _)| key).collect(),
        };
        eprintln!(
            "\rtick {:>3} at {:>6.1} s: {} new files ({} of an open hour), {} new events, {} _SUCCESS, {} failed partitions ({:.1} s)",
            ticks.len() + 1,
            tick.started.as_secs_f64(),
            new.files.len(),
            tick.open_hour_files,
            tick.new_events,
            tick.success_markers + tick.early_success_markers.len(),
            tick.failed,
            tick.took.as_secs_f64()
        );
        ticks.push(tick);
    }
    Ok(ticks)
}

/// What a set of flush workers did, summed over the items they flushed.
#[derive(Debug, Default)]
pub struct WorkersReport {
    /// The flush queue's deliveries and deletions.
    pub drained: DrainReport,
    pub events: u64,
    pub duplicates: u64,
    /// Partitions that failed (their items were delivered again).
    pub failed: usize,
}

/// Runs `workers` flush workers at once, each on a thread of its own with
/// its own runtime and clients of `endpoint` (as Lambda runs concurrent
/// invocations), each polling the flush queue `queue` (one message a
/// batch) until it is empty or `timeout` has passed. Blocks the calling
/// thread.
pub fn run_workers(
    config: &Config,
    endpoint: &str,
    queue: &QueueSet,
    workers: usize,
    timeout: Duration,
) -> Result<WorkersReport> {
    let reports: Vec<Result<WorkersReport>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers.max(1))
            .map(|_| {
                scope.spawn(move || -> Result<WorkersReport> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async {
                        let sdk = endpoint_config(endpoint).await;
                        let s3 = aws_sdk_s3::Client::from_conf(
                            aws_sdk_s3::config::Builder::from(&sdk)
                                .force_path_style(true)
                                .build(),
                        );
                        let flusher = &Flusher::new(config.clone(), s3);
                        let mapping = EventSourceMapping::new(
                            aws_sdk_sqs::Client::new(&sdk),
                            &queue.url,
                            &queue.arn,
                            1,
                            Duration::ZERO,
                        )?;
                        let items = std::sync::Mutex::new(Vec::new());
                        let drained = mapping
                            .drain(
                                |event: SqsEvent| {
                                    let items = &items;
                                    async move {
                                        let (response, reports) =
                                            flusher::worker::handle_event(flusher, event, None)
                                                .await;
                                        items.lock().expect("lock").extend(reports);
                                        Ok::<_, lambda_runtime::Error>(response)
                                    }
                                },
                                timeout,
                            )
                            .await?;
                        let mut report = WorkersReport {
                            drained,
                            ..WorkersReport::default()
                        };
                        for item in items.into_inner().expect("lock") {
                            report.events += item.flush.events;
                            report.duplicates += item.flush.duplicates;
                            report.failed += item.flush.failed;
                        }
                        Ok(report)
                    })
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("a flush worker thread panicked"))
            .collect()
    });
    let mut total = WorkersReport::default();
    for report in reports {
        let report = report?;
        total.drained.merge(report.drained);
        total.events += report.events;
        total.duplicates += report.duplicates;
        total.failed += report.failed;
    }
    Ok(total)
}

/// Runs the verify function in-process against every enabled destination
/// and prints its result line per destination; true when all were written.
async fn run_verify(config: Config, s3: &aws_sdk_s3::Client) -> Result<bool> {
    let verifier = verify::Verifier::new(
        Ok(config),
        s3.clone(),
        shared::alert::Alerter::disabled("s3-export-local", verify::SOURCE),
        "s3-export-local",
        Vec::new(),
    );
    let config = verifier.config.as_ref().map_err(Clone::clone)?;
    let destinations = verify::select(config, None)?;
    let report = verifier
        .verify(
            destinations,
            chrono::Utc::now(),
            verify::payload::Trigger::Manual,
            false,
            verify::DEFAULT_WRITE_TIMEOUT,
        )
        .await;
    for result in &report.results {
        match &result.diagnosis {
            None if result.ok => println!(
                "verified      destination {}: ok, wrote s3://{}/{} ({})",
                result.destination, result.bucket, result.key, result.encryption
            ),
            diagnosis => println!(
                "verified      destination {}: FAILED writing s3://{}/{}: {}",
                result.destination,
                result.bucket,
                result.key,
                diagnosis
                    .as_ref()
                    .map_or("no diagnosis".to_owned(), |d| format!(
                        "{}: {} {}",
                        d.code, d.summary, d.remedy
                    ))
            ),
        }
    }
    Ok(report.ok)
}

async fn endpoint_config(endpoint: &str) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).endpoint_url(endpoint);
    if std::env::var_os("AWS_REGION").is_none() {
        loader = loader.region(Region::new("us-east-1"));
    }
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "local",
        ));
    }
    loader.load().await
}

/// Sends `messages` to the queue through the producer crate
/// (`SendMessageBatch` within SQS's limits, failed entries retried), each
/// with its `stream` and `content-encoding` attributes; fails naming the
/// first message SQS did not take.
pub async fn send(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[OutgoingMessage],
) -> Result<()> {
    let messages: Vec<producer::pack::Message> =
        messages.iter().map(OutgoingMessage::to_message).collect();
    let report = producer::send::send(
        sqs,
        queue_url,
        &messages,
        &producer::send::SendOptions::default(),
    )
    .await;
    if let Some(failed) = report.failed.first() {
        bail!(
            "SQS refused {} of {} messages; message {}: {}: {}",
            report.failed.len(),
            messages.len(),
            failed.index,
            failed.code,
            failed.message
        );
    }
    Ok(())
}

fn print_tree(location: &str, files: &[StoredFile]) {
    const SHOWN: usize = 12;
    println!();
    println!("s3://{location}");
    for file in files.iter().take(SHOWN) {
        println!(
            "  {:<80} {:>6} lines {:>8} B",
            file.key,
            file.lines.len(),
            file.size
        );
    }
    if files.len() > SHOWN {
        let lines: usize = files[SHOWN..].iter().map(|f| f.lines.len()).sum();
        println!("  … and {} more files ({lines} lines)", files.len() - SHOWN);
    }
}

/// Events per stream, tenant and hour, from the archive's keys
/// (`archive/<stream>/<tenant>/<date>/<HH>/part-N`).
fn print_partitions(archive: &[StoredFile]) {
    let mut partitions: BTreeMap<(String, String, String), (usize, usize)> = BTreeMap::new();
    for file in archive {
        let segments: Vec<&str> = file.key.split('/').collect();
        let entry = partitions
            .entry((
                segments[1].to_owned(),
                segments[2].to_owned(),
                format!("{} {}:00", segments[3], segments[4]),
            ))
            .or_default();
        entry.0 += file.lines.len();
        entry.1 += 1;
    }
    println!();
    println!(
        "{:<20} {:<40} {:<17} {:>7} {:>7}",
        "stream", "tenant", "hour (UTC)", "events", "parts"
    );
    for ((stream, tenant, hour), (events, parts)) in &partitions {
        println!("{stream:<20} {tenant:<40} {hour:<17} {events:>7} {parts:>7}");
    }
}

/// Prints rejected records by reason with one example each; returns the counts.
fn print_rejections(errors: &[StoredFile]) -> Result<BTreeMap<String, usize>> {
    let mut counts: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for line in errors.iter().flat_map(|file| &file.lines) {
        let record: serde_json::Value =
            serde_json::from_str(line).context("an errors/ line is not JSON")?;
        let reason = record["reason"].as_str().unwrap_or("?").to_owned();
        let entry = counts
            .entry(reason)
            .or_insert_with(|| (0, record["detail"].as_str().unwrap_or_default().to_owned()));
        entry.0 += 1;
    }
    println!();
    println!("rejected records (in errors/, with their original bodies):");
    for (reason, (count, example)) in &counts {
        println!("  {reason:<15} {count:>5}  e.g. {}", truncate(example, 100));
    }
    Ok(counts
        .into_iter()
        .map(|(reason, (count, _))| (reason, count))
        .collect())
}

fn print_samples(staged: &[StoredFile]) {
    println!();
    println!("a few exported lines (zcat | jq reads every file):");
    for line in staged
        .iter()
        .flat_map(|file| file.lines.iter().take(1))
        .take(3)
    {
        println!("  {}", truncate(line, 150));
    }
}

/// What the batcher staged, by format: events, staged objects (and their
/// segments), older chunks, unreadable objects.
fn staged_summary(objects: &[StagingObject]) -> String {
    let count = |format: StagingFormat| objects.iter().filter(|o| o.format == format).count();
    let segments: usize = objects
        .iter()
        .filter(|o| o.format == StagingFormat::Staged)
        .map(|o| o.sources.len())
        .sum();
    let mut summary = format!(
        "{} events in {} staged objects ({segments} segments) and {} chunks under staging/",
        objects.iter().map(StagingObject::events).sum::<usize>(),
        count(StagingFormat::Staged),
        count(StagingFormat::Chunk),
    );
    let unreadable = objects.iter().filter(|o| o.error.is_some()).count();
    if unreadable > 0 {
        summary.push_str(&format!("; {unreadable} objects unreadable"));
    }
    summary
}

/// What a flush of every hour left under `staging/` (its keys), by format;
/// `None` when nothing is left.
fn left_staged(keys: &[String]) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    let objects = keys
        .iter()
        .filter(|key| shared::layout::parse_staged_object_key(key).is_some())
        .count();
    let chunks = keys
        .iter()
        .filter(|key| shared::layout::parse_staging_chunk_key(key).is_some())
        .count();
    let other = keys.len() - objects - chunks;
    Some(format!(
        "{objects} staged objects, {chunks} chunks and {other} other objects left under staging/"
    ))
}

/// Every valid event exactly once in the archive and in the destination
/// (re-sends dropped), every malformed record in errors/ with the right
/// reason, nothing in the DLQ, the destination verified, and none of
/// `found_problems` (an unreadable staged object, something left staged;
/// with an interval, what the schedule got wrong).
fn check(
    workload: &Workload,
    archive: &[StoredFile],
    published: &[StoredFile],
    rejected: &BTreeMap<String, usize>,
    dead_letters: u64,
    found_problems: &[String],
    verified: bool,
) -> bool {
    let mut want: Vec<&String> = workload.expected.lines.values().flatten().collect();
    want.sort();
    want.dedup();
    let want_rejected: BTreeMap<String, usize> = workload
        .expected
        .rejected
        .iter()
        .map(|(reason, count)| (reason.to_string(), *count))
        .collect();
    let mut problems = Vec::new();
    for (place, files) in [("the archive", archive), ("the destination", published)] {
        let got = sorted_lines(files);
        if got != want {
            let missing = want
                .iter()
                .filter(|line| got.binary_search(line).is_err())
                .count();
            problems.push(format!(
                "{place} holds {} lines, expected {} ({missing} sent events missing)",
                got.len(),
                want.len()
            ));
        }
    }
    if *rejected != want_rejected {
        problems.push(format!(
            "rejections differ: expected {want_rejected:?}, found {rejected:?}"
        ));
    }
    if dead_letters > 0 {
        problems.push(format!("{dead_letters} messages ended in the DLQ"));
    }
    problems.extend(found_problems.iter().cloned());
    if !verified {
        problems.push("verify could not write to the destination".to_owned());
    }
    println!();
    if problems.is_empty() {
        println!(
            "OK: every valid event exactly once in the archive and the destination ({} events), every malformed record in errors/ with its reason, the destination verified",
            want.len()
        );
        true
    } else {
        for problem in &problems {
            println!("MISMATCH: {problem}");
        }
        false
    }
}

fn sorted_lines(files: &[StoredFile]) -> Vec<&String> {
    let mut lines: Vec<&String> = files.iter().flat_map(|f| &f.lines).collect();
    lines.sort();
    lines
}

fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::partition::{Hour, TenantKey};
    use shared::staged::StagedWriter;

    /// 2026-11-22T10:00:00Z
    const TEN: i64 = 1_795_341_600_000;

    #[test]
    fn the_staged_line_counts_events_through_staged_objects_and_chunks() {
        let mut writer = StagedWriter::new(1);
        for (tenant, shard) in [("t1", 0), ("t1", 1), ("t2", 0)] {
            writer.begin_segment("app", &TenantKey::encode(tenant), shard, 2);
            writer.push_line_parts(&[b"{}\t1\tm"]);
            writer.push_line_parts(&[b"{}\t2\tm"]);
        }
        let object = writer.finish(Hour::containing(TEN));
        let objects = [
            StagingObject::read("staging/2026-11-22/10/1795341600001-r-1.staged", &object),
            StagingObject::read(
                "staging/2026-11-22/10/app/t1/1795341600000-r-0.ndjson.gz",
                &shared::encode::stored_gzip(b"{}\t0\tm\n"),
            ),
        ];
        assert_eq!(
            staged_summary(&objects),
            "7 events in 1 staged objects (3 segments) and 1 chunks under staging/"
        );
        let cut = StagingObject::read(
            "staging/2026-11-22/10/1795341600002-r-2.staged",
            &object[..object.len() - 1],
        );
        assert!(
            staged_summary(&[cut]).ends_with("; 1 objects unreadable"),
            "an unreadable object is said"
        );
    }

    #[test]
    fn what_is_left_under_staging_is_counted_by_format() {
        assert_eq!(left_staged(&[]), None);
        let keys = [
            "staging/2026-11-22/10/1795341600001-r-1.staged",
            "staging/2026-11-22/10/1795341600001-r-2.0001.staged",
            "staging/2026-11-22/10/app/t1/1795341600000-r-0.ndjson.gz",
            "staging/2026-11-22/10/notes.txt",
        ]
        .map(str::to_owned);
        assert_eq!(
            left_staged(&keys).as_deref(),
            Some("2 staged objects, 1 chunks and 1 other objects left under staging/")
        );
    }
}
