//! The flusher: closes hours. For every partition of a closed hour it
//! compacts the staged chunks into canonical archive parts without
//! duplicates, commits the partition's manifest with a conditional write,
//! publishes the new parts to every destination that selects them, and
//! deletes the consumed chunks (see `partition` for why each step is safe to
//! redo). Work that does not fit in one invocation resumes in the next.

pub mod archive;
pub mod error;
pub mod metrics;
pub mod partition;
pub mod publish;
pub mod scan;
pub mod store;
pub mod trigger;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::{self, StreamExt};
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;

use shared::Config;
use shared::alert::Alerter;
use shared::partition::PartitionKey;

pub use error::FlushError;
pub use trigger::Trigger;

/// How alerts name the function that noticed a problem.
pub const SOURCE: &str = "flusher";

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
    pub config: Config,
    pub s3: aws_sdk_s3::Client,
    /// Where publish failures are alerted (once each, when they start).
    pub alerter: Alerter,
    /// The roles that write to destinations, named in the bucket policies a
    /// diagnosis suggests (`FUNCTION_ROLE_ARN`).
    pub principals: Vec<String>,
    /// Stop every partition after this step (tests only).
    pub stop_after: Option<Step>,
    regional: Mutex<HashMap<String, aws_sdk_s3::Client>>,
}

impl Flusher {
    /// A flusher without alerts.
    pub fn new(config: Config, s3: aws_sdk_s3::Client) -> Self {
        Self {
            config,
            s3,
            alerter: Alerter::disabled("s3-export", SOURCE),
            principals: Vec::new(),
            stop_after: None,
            regional: Mutex::default(),
        }
    }

    /// An S3 client for a destination's region (the default client when the
    /// region is unset or the same), built once per region.
    pub fn client_for(&self, region: Option<&str>) -> aws_sdk_s3::Client {
        let Some(region) = region else {
            return self.s3.clone();
        };
        if self
            .s3
            .config()
            .region()
            .is_some_and(|r| r.as_ref() == region)
        {
            return self.s3.clone();
        }
        let mut clients = self.regional.lock().expect("not poisoned");
        clients
            .entry(region.to_owned())
            .or_insert_with(|| {
                let config = self
                    .s3
                    .config()
                    .to_builder()
                    .region(aws_sdk_s3::config::Region::new(region.to_owned()))
                    .build();
                aws_sdk_s3::Client::from_conf(config)
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
    pub events: u64,
    pub duplicates: u64,
    pub failed: usize,
    /// Staged chunks of closed hours still there after the run (deferred or
    /// failed partitions).
    pub pending_chunks: usize,
    /// Partitions with parts still to publish to a destination.
    pub pending_publishes: usize,
}

/// The Lambda handler. Fails the invocation when a partition failed (so the
/// error shows in metrics and alarms); publish failures are not failures:
/// those parts stay pending and are retried every run.
pub async fn handle(
    flusher: &Flusher,
    event: LambdaEvent<Value>,
) -> Result<Value, lambda_runtime::Error> {
    let trigger = Trigger::from_payload(&event.payload)?;
    let deadline = deadline_of(&event.context);
    let report = run(flusher, &trigger, deadline).await?;
    tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "flush run");
    // CloudWatch reads the metrics from this line (Embedded Metric Format),
    // stamped with the wall clock: a manual run's "now" may be long past, and
    // CloudWatch drops metrics more than two weeks old.
    let wall_clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(trigger.now_millis, |since| since.as_millis() as i64);
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

/// Runs one flush: finds the work, then flushes partitions concurrently
/// (at most `flush_concurrency` at once) until the deadline nears.
pub async fn run(
    flusher: &Flusher,
    trigger: &Trigger,
    deadline: Option<Instant>,
) -> Result<FlushReport, FlushError> {
    let work = scan::find_work(flusher, trigger).await?;
    let alerts = flusher.alerter.invocation();
    let alerts = &alerts;
    let partitions: Vec<PartitionKey> = work.partitions().into_iter().collect();
    let empty = Vec::new();
    let outcomes: Vec<(usize, Option<PartitionSummary>)> = stream::iter(&partitions)
        .map(|partition| {
            let staged = work.chunks.get(partition).unwrap_or(&empty);
            async move {
                if deadline.is_some_and(|deadline| Instant::now() + DEADLINE_MARGIN >= deadline) {
                    return (staged.len(), None);
                }
                let result =
                    partition::flush_partition(flusher, alerts, trigger, partition, staged).await;
                (staged.len(), Some(summarize(partition, result)))
            }
        })
        .buffered(flusher.config.flush_concurrency)
        .collect()
        .await;

    let mut report = FlushReport {
        now: shared::time::format_rfc3339_millis(trigger.now_millis),
        ..FlushReport::default()
    };
    for (staged, outcome) in outcomes {
        match outcome {
            None => {
                report.deferred += 1;
                report.pending_chunks += staged;
            }
            Some(summary) => {
                report.events += summary.events;
                report.duplicates += summary.duplicates;
                if summary.error.is_some() {
                    report.failed += 1;
                    report.pending_chunks += staged;
                }
                report.pending_publishes += usize::from(!summary.pending.is_empty());
                report.partitions.push(summary);
            }
        }
    }
    Ok(report)
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
        pending: Vec::new(),
        error: None,
    };
    match result {
        Ok(report) => {
            summary.events = report.events;
            summary.duplicates = report.duplicates;
            summary.parts = report.parts;
            summary.published = report.publish.published;
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
