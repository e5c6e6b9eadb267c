//! The flusher: closes hours. For every partition of a closed hour it
//! compacts the staged data (segments of staged objects, and staged chunks
//! of the format before them) into canonical archive parts without
//! duplicates (the small ones, and the id digests, of up to
//! [`BUNDLE_PARTITIONS`] partitions in one bundle object), commits the
//! partition's manifest with a conditional write,
//! publishes the new parts to every destination that selects them, and
//! deletes what every partition has consumed (see `partition` for why each
//! step is safe to redo; `staged_read` for how staged objects are read
//! with a bounded number of requests). Work that does not fit in one
//! invocation resumes in the next.
//! It also backfills archived hours into a destination (see `backfill`).

pub mod archive;
pub mod backfill;
pub mod bundle;
pub mod compaction;
pub mod coordinator;
pub mod destination_upload;
pub mod error;
pub mod export;
pub mod metrics;
pub mod partition;
pub mod publish;
pub mod scan;
pub mod shard;
pub mod staged_read;
pub mod store;
pub mod trigger;
pub mod upload;
pub mod work_item;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::{self, StreamExt};
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;

use shared::Config;
use shared::alert::Alerter;
use shared::config::Destination;
use shared::config_source::ConfigSource;
use shared::partition::PartitionKey;

use crate::bundle::Bundle;
pub use error::FlushError;
pub use trigger::{BackfillRequest, Invocation, Trigger};

/// How alerts name the function that noticed a problem.
pub const SOURCE: &str = "flusher";

/// Partitions flushed together into one bundle, at most: their commits
/// and publishes wait for the bundle, and must fit in the time the
/// deadline margin leaves.
pub const BUNDLE_PARTITIONS: usize = 256;

/// No partition is started with less than this left before the deadline.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// A step after which a run can be made to stop, as a crash would: the
/// tests use it to prove that every step is safe to redo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    PartsWritten,
    ManifestCommitted,
    SomePublished,
    BeforeDeletingChunks,
}

/// What lives across invocations.
pub struct Flusher {
    /// The configuration this run uses (from [`Flusher::source`], when set,
    /// at the start of each invocation).
    pub config: Arc<Config>,
    /// Where the configuration is reloaded from when its document changes
    /// (`EXPORT_CONFIG=s3://…`); `None`: fixed.
    pub source: Option<Arc<ConfigSource>>,
    pub s3: aws_sdk_s3::Client,
    /// Assumes destinations' cross-account roles (`roleArn`); `None`: a
    /// destination with a role fails to publish saying so (retried later).
    pub sts: Option<aws_sdk_sts::Client>,
    /// Where publish failures are alerted (once each, when they start).
    pub alerter: Alerter,
    /// The roles that write to destinations, named in the bucket policies a
    /// diagnosis suggests (`FUNCTION_ROLE_ARN`).
    pub principals: Vec<String>,
    /// Stop every partition after this step (tests only).
    pub stop_after: Option<Step>,
    /// Commit a partition's progress after this many new events of a run,
    /// as if its deadline had come (tests only; see
    /// `partition::Checkpoints`).
    pub checkpoint_after_events: Option<u64>,
    /// The flush queue (`FLUSH_QUEUE_URL`): when set, flush runs
    /// coordinate (send work items to it) instead of flushing themselves.
    pub queue: Option<coordinator::FlushQueue>,
    /// Destination clients by (name, region, role, external id): each keeps
    /// its assumed role's credentials cached (shared by [`Flusher::with_config`]).
    clients: Arc<Mutex<HashMap<ClientKey, aws_sdk_s3::Client>>>,
}

type ClientKey = (String, Option<String>, Option<String>, Option<String>);

impl Flusher {
    /// A flusher without alerts.
    pub fn new(config: Config, s3: aws_sdk_s3::Client) -> Self {
        Self {
            config: Arc::new(config),
            source: None,
            s3,
            sts: None,
            alerter: Alerter::disabled("s3-export", SOURCE),
            principals: Vec::new(),
            stop_after: None,
            checkpoint_after_events: None,
            queue: None,
            clients: Arc::default(),
        }
    }

    /// A flusher without alerts whose configuration comes from `source`
    /// (reloaded at the start of each invocation by [`handle`]).
    pub fn from_source(source: Arc<ConfigSource>, s3: aws_sdk_s3::Client) -> Self {
        Self {
            config: source.config(),
            source: Some(source),
            s3,
            sts: None,
            alerter: Alerter::disabled("s3-export", SOURCE),
            principals: Vec::new(),
            stop_after: None,
            checkpoint_after_events: None,
            queue: None,
            clients: Arc::default(),
        }
    }

    /// This flusher with another configuration, sharing its clients (and
    /// their cached credentials), alerter and settings.
    pub fn with_config(&self, config: Arc<Config>) -> Self {
        Self {
            config,
            source: self.source.clone(),
            s3: self.s3.clone(),
            sts: self.sts.clone(),
            alerter: self.alerter.clone(),
            principals: self.principals.clone(),
            stop_after: self.stop_after,
            checkpoint_after_events: self.checkpoint_after_events,
            queue: self.queue.clone(),
            clients: self.clients.clone(),
        }
    }

    /// The S3 client that writes to `destination`: the default client when
    /// the destination has no role and its region is unset or the same;
    /// otherwise one built by [`shared::destination_write::client_for`]
    /// (its region, its assumed role) and kept per destination name, region,
    /// role and external id, so an assumed role's credentials are cached and
    /// refreshed by that client across partitions and invocations.
    pub fn client_for(&self, destination: &Destination) -> aws_sdk_s3::Client {
        let same_region = destination.region.as_deref().is_none_or(|region| {
            self.s3
                .config()
                .region()
                .is_some_and(|r| r.as_ref() == region)
        });
        if same_region && destination.role_arn.is_none() {
            return self.s3.clone();
        }
        let key = (
            destination.name.clone(),
            destination.region.clone(),
            destination.role_arn.clone(),
            destination.external_id.clone(),
        );
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(key)
            .or_insert_with(|| {
                shared::destination_write::client_for(&self.s3, self.sts.as_ref(), destination)
            })
            .clone()
    }
}

/// One partition's outcome in a run report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionSummary {
    pub stream: String,
    pub tenant: String,
    pub hour: String,
    pub events: u64,
    pub duplicates: u64,
    pub parts: Vec<u32>,
    pub published: usize,
    /// Pending parts dropped: their destination no longer selects this
    /// stream and tenant.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a run did; the handler returns it and logs it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlushReport {
    pub now: String,
    pub partitions: Vec<PartitionSummary>,
    /// Partitions left for the next run because the deadline was near.
    pub deferred: usize,
    /// Partitions whose compaction the deadline stopped after committing
    /// its progress (a checkpoint): the next run goes on from there.
    #[serde(skip_serializing_if = "is_zero")]
    pub checkpointed: usize,
    pub events: u64,
    pub duplicates: u64,
    pub failed: usize,
    /// Staged objects and staged chunks (of the format before them) of
    /// closed hours still there after the run: those of deferred or failed
    /// partitions, and objects holding partitions this run did not select.
    pub pending_chunks: usize,
    /// Staged objects refused as corrupt or truncated this run: copied to
    /// `quarantine/` and alerted; none of their damaged data is exported.
    pub quarantined: usize,
    /// Partitions with parts still to publish to a destination.
    pub pending_publishes: usize,
    /// Pending parts dropped because their destination was edited to no
    /// longer select their stream and tenant (never sent elsewhere).
    pub dropped_publishes: usize,
    /// Unfinished backfills a scheduled run continued after its own work.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backfills: Vec<backfill::BackfillReport>,
}

/// The Lambda handler. Fails the invocation when a partition failed (so the
/// error shows in metrics and alarms); publish failures are not failures:
/// those parts stay pending and are retried every run. A backfill payload
/// runs [`backfill::run_backfill`] instead (with the wall clock as "now",
/// for the retention check) and fails when the backfill stopped on an error
/// (its progress is kept: it resumes there). With a flush queue, a flush
/// payload coordinates ([`coordinator::coordinate`]: work items sent to
/// the queue), a backfill payload is recorded and queued for a worker
/// ([`backfill::queue_backfill`]), and an SQS event from the queue is a
/// worker's ([`worker::handle_event`]), answered with its batch item
/// failures.
pub async fn handle(
    flusher: &Flusher,
    event: LambdaEvent<Value>,
) -> Result<Value, lambda_runtime::Error> {
    let deadline = deadline_of(&event.context);
    // The configuration document may have changed (checked once a minute).
    let reloaded;
    let flusher = match &flusher.source {
        Some(source) => {
            reloaded = flusher.with_config(source.current().await);
            &reloaded
        }
        None => flusher,
    };
    if is_sqs_event(&event.payload) {
        let sqs_event: aws_lambda_events::event::sqs::SqsEvent =
            serde_json::from_value(event.payload)?;
        let (response, reports) = worker::handle_event(flusher, sqs_event, deadline).await;
        let wall_clock = wall_clock_millis();
        for report in &reports {
            tracing::info!(report = %serde_json::to_string(report).unwrap_or_default(), "work item");
            if report.found && report.backfill.is_none() {
                println!(
                    "{}",
                    metrics::embedded_metrics(
                        flusher.alerter.deployment(),
                        &report.flush,
                        wall_clock
                    )
                );
            }
        }
        return Ok(serde_json::to_value(response)?);
    }
    let invocation = Invocation::from_payload(&event.payload)?;
    let trigger = match invocation {
        Invocation::Flush(trigger) => trigger,
        // With a flush queue, a worker runs it (and the coordinator's role
        // needs no destination's permissions).
        Invocation::Backfill(request) if flusher.queue.is_some() => {
            let queue = flusher.queue.as_ref().expect("matched");
            let report =
                backfill::queue_backfill(flusher, queue, &request, wall_clock_millis()).await?;
            tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "backfill");
            return Ok(serde_json::to_value(report)?);
        }
        Invocation::Backfill(request) => {
            let report =
                backfill::run_backfill(flusher, &request, wall_clock_millis(), deadline).await?;
            tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "backfill");
            if let Some(error) = &report.error {
                return Err(format!(
                    "backfill {} stopped; it resumes from {} when invoked again or at the next scheduled run: {error}",
                    report.id, report.progress_key
                )
                .into());
            }
            return Ok(serde_json::to_value(report)?);
        }
    };
    if let Some(queue) = &flusher.queue {
        let report = coordinator::coordinate(flusher, queue, &trigger, deadline).await?;
        tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "coordinator run");
        return Ok(serde_json::to_value(report)?);
    }
    let report = run(flusher, &trigger, deadline).await?;
    tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "flush run");
    // CloudWatch reads the metrics from this line (Embedded Metric Format),
    // stamped with the wall clock: a manual run's "now" may be long past, and
    // CloudWatch drops metrics more than two weeks old.
    let wall_clock = wall_clock_millis();
    println!(
        "{}",
        metrics::embedded_metrics(flusher.alerter.deployment(), &report, wall_clock)
    );
    if report.failed > 0 {
        return Err(format!(
            "{} partitions failed; they are retried next run: {}",
            report.failed,
            serde_json::to_string(&report)?
        )
        .into());
    }
    Ok(serde_json::to_value(report)?)
}

/// Runs one flush in this invocation: finds the work, then flushes
/// partitions concurrently (at most `flush_concurrency` at once) until the
/// deadline nears, in windows whose staged bytes fit in `spoolBytes` (see
/// `staged_read`), and deletes the staged objects every partition of which
/// has consumed them. A scheduled run then continues unfinished backfills
/// with the time left. (A deployment with a flush queue spreads the same
/// work over workers instead: see `coordinator`.)
pub async fn run(
    flusher: &Flusher,
    trigger: &Trigger,
    deadline: Option<Instant>,
) -> Result<FlushReport, FlushError> {
    let alerts = flusher.alerter.invocation();
    let alerts = &alerts;
    let work = scan::find_work(flusher, trigger, alerts).await?;
    let outcomes = flush_work(flusher, alerts, trigger, &work, deadline).await;
    let (mut report, done) = tally(trigger, &work, outcomes);

    // A staged object goes once every partition in its index is known, this
    // run, to be done with it; otherwise a later run deletes it.
    let mut consumed = work.consumed_objects(&done);
    report.pending_chunks += work.objects.len() - consumed.len();
    consumed.extend(work.discard.iter().cloned());
    if let Err(error) =
        store::delete_keys(&flusher.s3, &flusher.config.export_bucket, &consumed).await
    {
        // Consumed all the same: the next run deletes them.
        tracing::error!(%error, "consumed staged objects not deleted");
        report.pending_chunks += consumed.len();
    }

    if trigger.apply_grace {
        match backfill::continue_unfinished(flusher, trigger.now_millis, deadline).await {
            Ok(backfills) => report.backfills = backfills,
            // The flush itself succeeded; the backfills are tried next run.
            Err(error) => tracing::error!(%error, "unfinished backfills not continued"),
        }
    }
    Ok(report)
}

/// What flushing a partition came to: `None` when it was not started (the
/// deadline was near).
pub type Outcome = (
    PartitionKey,
    Option<Result<partition::PartitionReport, FlushError>>,
);

/// Flushes every partition of `work`, in order, in spool windows and
/// bundle groups, until the deadline nears (partitions not started then
/// are `None`).
pub async fn flush_work(
    flusher: &Flusher,
    alerts: &shared::alert::InvocationAlerts<'_>,
    trigger: &Trigger,
    work: &scan::Work,
    deadline: Option<Instant>,
) -> Vec<Outcome> {
    let partitions: Vec<PartitionKey> = work.partitions().into_iter().collect();
    let sizes: Vec<u64> = partitions.iter().map(|p| work.spooled_bytes(p)).collect();
    let windows = staged_read::plan_windows(&sizes, flusher.config.spool_bytes as u64);
    let near_deadline =
        || deadline.is_some_and(|deadline| Instant::now() + DEADLINE_MARGIN >= deadline);
    let mut outcomes: Vec<Outcome> = Vec::new();
    for window in windows {
        let members = &partitions[window];
        if near_deadline() {
            outcomes.extend(members.iter().map(|partition| (partition.clone(), None)));
            continue;
        }
        let spools = staged_read::fetch_window(flusher, work, members).await;
        let spools = &spools;
        for group in members.chunks(BUNDLE_PARTITIONS) {
            let flushed =
                flush_group(flusher, alerts, trigger, work, spools, group, deadline).await;
            outcomes.extend(
                flushed
                    .into_iter()
                    .map(|(partition, result)| (partition.clone(), result)),
            );
        }
        // The window's spool files are freed here.
    }
    outcomes
}

/// The run report of `outcomes` (of `work`'s partitions), and, per staged
/// object, the partitions done with it: their committed manifests list it
/// (consumed or quarantined).
pub fn tally(
    trigger: &Trigger,
    work: &scan::Work,
    outcomes: Vec<Outcome>,
) -> (FlushReport, scan::DoneWith) {
    let mut report = FlushReport {
        now: shared::time::format_rfc3339_millis(trigger.now_millis),
        ..FlushReport::default()
    };
    let mut done = scan::DoneWith::new();
    let mut quarantined: HashSet<String> = work.quarantined.iter().cloned().collect();
    for (partition, outcome) in outcomes {
        let chunks = work.chunk_count(&partition);
        let Some(result) = outcome else {
            report.deferred += 1;
            report.pending_chunks += chunks;
            continue;
        };
        if let Ok(flushed) = &result {
            if flushed.checkpointed {
                report.checkpointed += 1;
                report.pending_chunks += chunks;
            }
            for object in &flushed.objects_done {
                if work.objects.contains_key(object) {
                    done.entry(object.clone())
                        .or_default()
                        .insert(partition.clone());
                }
            }
            quarantined.extend(flushed.quarantined.iter().cloned());
        }
        let summary = summarize(&partition, result);
        report.events += summary.events;
        report.duplicates += summary.duplicates;
        if summary.error.is_some() {
            report.failed += 1;
            report.pending_chunks += chunks;
        }
        report.pending_publishes += usize::from(!summary.pending.is_empty());
        report.dropped_publishes += summary.dropped;
        report.partitions.push(summary);
    }
    report.quarantined = quarantined.len();
    report.pending_chunks += work.unread;
    (report, done)
}

/// Flushes `group` (partitions of one spool window, in order): compacts
/// each one's new data, its small files into one bundle, stores the bundle
/// (one PUT for them all), then commits and publishes each. Partitions not
/// started because the deadline is near are `None`.
async fn flush_group<'a>(
    flusher: &Flusher,
    alerts: &shared::alert::InvocationAlerts<'_>,
    trigger: &Trigger,
    work: &scan::Work,
    spools: &staged_read::Spools,
    group: &'a [PartitionKey],
    deadline: Option<Instant>,
) -> Vec<(
    &'a PartitionKey,
    Option<Result<partition::PartitionReport, FlushError>>,
)> {
    let near_deadline =
        || deadline.is_some_and(|deadline| Instant::now() + DEADLINE_MARGIN >= deadline);
    let no_sources: &Vec<scan::Source> = &Vec::new();
    let bundle = Bundle::new(
        flusher.s3.clone(),
        &flusher.config.export_bucket,
        trigger.now_millis,
    );
    let bundle = &bundle;
    // Every partition's new data compacted, its small files into the
    // group's bundle...
    let prepared: Vec<_> = stream::iter(group)
        .map(|partition| {
            let sources = work.sources.get(partition).unwrap_or(no_sources);
            let marked = work.marked(partition);
            async move {
                if near_deadline() {
                    return (partition, None);
                }
                let checkpoints = partition::Checkpoints {
                    deadline,
                    after_events: flusher.checkpoint_after_events,
                };
                let result = partition::prepare(
                    flusher,
                    alerts,
                    trigger,
                    partition,
                    sources,
                    spools,
                    marked,
                    bundle,
                    checkpoints,
                    work.ranges.get(partition).copied(),
                )
                .await;
                (partition, Some(result))
            }
        })
        .buffered(flusher.config.flush_concurrency)
        .collect()
        .await;
    // ...the bundle stored (one PUT for them all), then each partition
    // committed and published.
    let stored = bundle.finish().await;
    let stored = &stored;
    stream::iter(prepared)
        .map(|(partition, prepared)| {
            let sources = work.sources.get(partition).unwrap_or(no_sources);
            async move {
                let Some(prepared) = prepared else {
                    return (partition, None);
                };
                let result = match (prepared, stored) {
                    (Ok(prepared), Err(error)) if prepared.commits() => {
                        prepared.abandon(flusher).await;
                        Err(error.clone())
                    }
                    (Ok(prepared), _) => {
                        let objects_go = work.objects_go.contains(partition);
                        partition::complete(
                            flusher, alerts, trigger, partition, sources, objects_go, prepared,
                        )
                        .await
                    }
                    (Err(error), _) => Err(error),
                };
                (partition, Some(result))
            }
        })
        .buffered(flusher.config.flush_concurrency)
        .collect()
        .await
}

/// Whether `payload` is an SQS event (the flush queue's, for a worker).
fn is_sqs_event(payload: &Value) -> bool {
    payload
        .get("Records")
        .and_then(Value::as_array)
        .and_then(|records| records.first())
        .and_then(|record| record.get("eventSource"))
        .is_some_and(|source| source == "aws:sqs")
}

fn is_zero(count: &usize) -> bool {
    *count == 0
}

/// The wall clock, epoch milliseconds (for what must not depend on a
/// run's "now": metrics' timestamps, the age of a coordinator run).
pub fn wall_clock_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

fn summarize(
    partition: &PartitionKey,
    result: Result<partition::PartitionReport, FlushError>,
) -> PartitionSummary {
    let mut summary = PartitionSummary {
        stream: partition.stream.clone(),
        tenant: partition.tenant.as_str().to_owned(),
        hour: shared::time::format_rfc3339_millis(partition.hour.start_millis()),
        events: 0,
        duplicates: 0,
        parts: Vec::new(),
        published: 0,
        dropped: 0,
        pending: Vec::new(),
        error: None,
    };
    match result {
        Ok(report) => {
            summary.events = report.events;
            summary.duplicates = report.duplicates;
            summary.parts = report.parts;
            summary.published = report.publish.published;
            summary.dropped = report.publish.dropped;
            summary.pending = report
                .publish
                .failed
                .into_iter()
                .map(|(name, error)| format!("{name}: {error}"))
                .collect();
        }
        // Another flusher has this partition: nothing is lost, nothing to redo.
        Err(error @ FlushError::LostRace { .. }) => {
            tracing::info!(%error, "partition skipped");
        }
        Err(error) => {
            tracing::error!(stream = %partition.stream, tenant = %partition.tenant, hour = %partition.hour, %error, "partition failed");
            summary.error = Some(error.to_string());
        }
    }
    summary
}

fn deadline_of(context: &lambda_runtime::Context) -> Option<Instant> {
    let now_millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    let deadline = context.deadline;
    (deadline > 0)
        .then(|| Instant::now() + Duration::from_millis(deadline.saturating_sub(now_millis)))
}
