//! Backfill: publishing archived hours to a destination again, or for the
//! first time (a destination added after those hours were flushed).
//!
//! Every archive part of every hour in range is published through the same
//! path as a normal run ([`crate::publish::publish_part`]), so a backfilled
//! hour has the same keys and the same bytes as its normal export: an hour
//! already exported is overwritten with identical files, and overlapping
//! backfills never duplicate an event (docs/design.md, invariant 2). Each
//! partition's manifest then records the parts as published to the
//! destination.
//!
//! Progress is a record in the export bucket, `backfills/<id>.json`, whose
//! id is derived from the request: the partitions in range are taken in
//! order (hour, stream, tenant), several at once, and the record keeps the
//! last one done with every one before it done too. A
//! backfill stopped by the deadline or by a refused write resumes after it,
//! when invoked again with the same payload or at the next scheduled run,
//! which continues every unfinished backfill with the time it has left.

use std::collections::BTreeSet;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use shared::Config;
use shared::config::Destination;
use shared::diagnose;
use shared::layout::{self, BACKFILLS_PREFIX, MANIFESTS_PREFIX};
use shared::manifest::ArchivePart;
use shared::partition::{Hour, PartitionKey, TenantKey};
use shared::time::{format_rfc3339_millis, parse_timestamp};

use crate::error::FlushError;
use crate::publish::{self, PartFailure, PartPublished};
use crate::store;
use crate::trigger::BackfillRequest;
use crate::{DEADLINE_MARGIN, Flusher};

/// The progress record format written by this version.
pub const PROGRESS_VERSION: u32 = 1;

const DAY_MILLIS: i64 = 24 * 3_600_000;

/// Why a backfill cannot run as asked. Each names the payload field at
/// fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct BackfillError {
    pub field: &'static str,
    pub message: String,
}

impl BackfillError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A request checked against the configuration: what to publish where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillPlan {
    /// The progress record's id: the same request always gets the same one.
    pub id: String,
    pub destination: String,
    pub first_hour: Hour,
    pub last_hour: Hour,
    /// The streams to visit, sorted: those asked for, else every stream the
    /// destination takes.
    pub streams: Vec<String>,
    /// The tenants to visit, when limited (by the request or by the
    /// destination); `None`: every tenant found in the archive.
    pub tenants: Option<Vec<TenantKey>>,
}

/// Checks `request` against `config` at `now_millis`: the destination
/// exists and is enabled, it takes the streams and tenants asked for, and
/// no hour in range is past the archive's retention
/// (`archiveRetentionDays`). Pure: no I/O.
pub fn plan(
    config: &Config,
    request: &BackfillRequest,
    now_millis: i64,
) -> Result<BackfillPlan, BackfillError> {
    let destination = find_destination(config, &request.destination)?;
    let takes_stream = |stream: &str| {
        destination
            .streams
            .as_ref()
            .is_none_or(|s| s.iter().any(|x| x == stream))
    };
    let streams: Vec<String> = match &request.streams {
        Some(asked) => {
            for stream in asked {
                if !config.streams.contains_key(stream) {
                    return Err(BackfillError::new(
                        "backfill.streams",
                        format!("stream `{stream}` is not configured"),
                    ));
                }
                if !takes_stream(stream) {
                    return Err(BackfillError::new(
                        "backfill.streams",
                        format!(
                            "destination `{}` does not take stream `{stream}`",
                            destination.name
                        ),
                    ));
                }
            }
            asked
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        }
        None => {
            let mut all: Vec<String> = config
                .streams
                .keys()
                .filter(|stream| takes_stream(stream))
                .cloned()
                .collect();
            all.sort();
            all
        }
    };
    let tenants = match (&request.tenants, &destination.tenants) {
        (Some(asked), taken) => {
            for tenant in asked {
                if taken
                    .as_ref()
                    .is_some_and(|taken| !taken.iter().any(|t| t == tenant))
                {
                    return Err(BackfillError::new(
                        "backfill.tenants",
                        format!(
                            "destination `{}` does not take tenant `{tenant}`",
                            destination.name
                        ),
                    ));
                }
            }
            Some(asked)
        }
        (None, Some(taken)) => Some(taken),
        (None, None) => None,
    }
    .map(|list| {
        list.iter()
            .map(|tenant| TenantKey::encode(tenant))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    });

    let first_hour = request.first_hour();
    let last_hour = request.last_hour();
    check_retention(config, first_hour, last_hour, now_millis)?;

    Ok(BackfillPlan {
        id: request_id(request),
        destination: destination.name.clone(),
        first_hour,
        last_hour,
        streams,
        tenants,
    })
}

fn find_destination<'a>(config: &'a Config, name: &str) -> Result<&'a Destination, BackfillError> {
    let Some(destination) = config.destinations.iter().find(|d| d.name == name) else {
        let known: Vec<&str> = config
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        return Err(BackfillError::new(
            "backfill.destination",
            format!(
                "no destination is named `{name}` (configured: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    if !destination.enabled {
        return Err(BackfillError::new(
            "backfill.destination",
            format!("destination `{name}` is disabled (`enabled: false`)"),
        ));
    }
    Ok(destination)
}

/// Hours that start before `now - archiveRetentionDays` have left the
/// archive (the export bucket's lifecycle): refuse them, naming them.
fn check_retention(
    config: &Config,
    first_hour: Hour,
    last_hour: Hour,
    now_millis: i64,
) -> Result<(), BackfillError> {
    if config.archive_retention_days == 0 {
        return Ok(());
    }
    let cutoff = now_millis - config.archive_retention_days as i64 * DAY_MILLIS;
    let oldest_kept = {
        let hour = Hour::containing(cutoff);
        if hour.start_millis() < cutoff {
            hour.next()
        } else {
            hour
        }
    };
    if first_hour >= oldest_kept {
        return Ok(());
    }
    let last_expired = if last_hour < oldest_kept {
        last_hour
    } else {
        Hour::containing(oldest_kept.start_millis() - 1)
    };
    let count = (last_expired.start_millis() - first_hour.start_millis()) / 3_600_000 + 1;
    Err(BackfillError::new(
        "backfill.from",
        format!(
            "{count} hour(s), {} to {}, are past the archive's retention of {} days \
             (archiveRetentionDays): their archive has expired and cannot be published; \
             the oldest hour kept is {}",
            format_rfc3339_millis(first_hour.start_millis()),
            format_rfc3339_millis(last_expired.start_millis()),
            config.archive_retention_days,
            format_rfc3339_millis(oldest_kept.start_millis()),
        ),
    ))
}

/// The id of a request: the first 16 hex digits of the SHA-256 of its
/// normalized form (destination, range, sorted streams and tenants), so the
/// same backfill asked again finds its progress.
pub fn request_id(request: &BackfillRequest) -> String {
    let sorted = |list: &Option<Vec<String>>| {
        list.as_ref().map(|list| {
            list.iter()
                .cloned()
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect::<Vec<_>>()
        })
    };
    let normalized = serde_json::json!([
        request.destination,
        request.from_millis,
        request.to_millis,
        sorted(&request.streams),
        sorted(&request.tenants),
    ]);
    let digest = Sha256::digest(normalized.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a backfill has work left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillStatus {
    /// Partitions are left: the next invocation (or scheduled run) goes on.
    Running,
    /// Every partition in range was published.
    Done,
    /// It can no longer run as asked (the destination was removed, the
    /// hours passed the retention): scheduled runs leave it.
    Failed,
}

/// The last partition a backfill finished, in its order (hour, stream,
/// tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    pub hour: String,
    pub stream: String,
    /// The tenant's key segment.
    pub tenant: String,
}

impl Cursor {
    fn of(partition: &PartitionKey) -> Self {
        Self {
            hour: format_rfc3339_millis(partition.hour.start_millis()),
            stream: partition.stream.clone(),
            tenant: partition.tenant.as_str().to_owned(),
        }
    }

    fn partition(&self) -> Option<PartitionKey> {
        Some(PartitionKey {
            hour: Hour::containing(parse_timestamp(&self.hour).ok()?),
            stream: self.stream.clone(),
            tenant: TenantKey::from_encoded(&self.tenant),
        })
    }
}

/// A backfill's progress, `backfills/<id>.json` in the export bucket: the
/// request, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackfillProgress {
    pub version: u32,
    pub id: String,
    pub destination: String,
    /// The first hour's start, RFC 3339.
    pub from: String,
    /// The end of the range, exclusive, RFC 3339.
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<String>>,
    pub status: BackfillStatus,
    pub started_at: String,
    pub updated_at: String,
    /// The last partition done; `None`: none yet.
    pub cursor: Option<Cursor>,
    /// Partitions and parts published, and their events, over every
    /// invocation.
    pub partitions_done: u64,
    pub parts_published: u64,
    pub events: u64,
    /// Why the last invocation stopped before the end, when it failed.
    pub last_error: Option<String>,
}

impl BackfillProgress {
    fn new(request: &BackfillRequest, id: &str, now_millis: i64) -> Self {
        Self {
            version: PROGRESS_VERSION,
            id: id.to_owned(),
            destination: request.destination.clone(),
            from: format_rfc3339_millis(request.from_millis),
            to: format_rfc3339_millis(request.to_millis),
            streams: request.streams.clone(),
            tenants: request.tenants.clone(),
            status: BackfillStatus::Running,
            started_at: format_rfc3339_millis(now_millis),
            updated_at: format_rfc3339_millis(now_millis),
            cursor: None,
            partitions_done: 0,
            parts_published: 0,
            events: 0,
            last_error: None,
        }
    }

    /// The request this record continues.
    pub fn request(&self) -> Result<BackfillRequest, BackfillError> {
        let time = |field: &'static str, text: &str| {
            parse_timestamp(text).map_err(|e| BackfillError::new(field, e.to_string()))
        };
        Ok(BackfillRequest {
            destination: self.destination.clone(),
            from_millis: time("backfill.from", &self.from)?,
            to_millis: time("backfill.to", &self.to)?,
            streams: self.streams.clone(),
            tenants: self.tenants.clone(),
            restart: false,
        })
    }
}

/// What one invocation did for a backfill.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackfillReport {
    pub id: String,
    /// Where its progress is recorded in the export bucket.
    pub progress_key: String,
    pub destination: String,
    pub from: String,
    pub to: String,
    pub status: BackfillStatus,
    /// Partitions, parts and events published by this invocation.
    pub partitions: u64,
    pub parts: u64,
    pub events: u64,
    /// Partitions in range still to do after this invocation.
    pub remaining: usize,
    /// Why it stopped before the end, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs (or resumes) the backfill `request` asks for until it is done, the
/// deadline nears, or a partition fails. A request whose backfill is done
/// does nothing unless it says `restart`. Invalid requests are refused
/// before anything is written.
pub async fn run_backfill(
    flusher: &Flusher,
    request: &BackfillRequest,
    now_millis: i64,
    deadline: Option<Instant>,
) -> Result<BackfillReport, RunError> {
    match start(flusher, request, now_millis).await? {
        Started::Done(report) => Ok(report),
        Started::Running {
            plan,
            progress,
            key,
            ..
        } => Ok(advance(flusher, &plan, progress, &key, now_millis, deadline).await?),
    }
}

/// Records the backfill `request` asks for as running (its progress
/// record, new or continued) and sends its first step to the flush queue,
/// for a worker to run ([`continue_one`]): what a coordinator does with a
/// manual backfill payload. A request whose backfill is done does nothing
/// unless it says `restart`; one a worker has advanced within
/// `coordinator::BACKFILL_IDLE_MILLIS` is not queued again; an invalid one
/// is refused before anything is written. The report says `running`, with
/// nothing published by this invocation.
pub async fn queue_backfill(
    flusher: &Flusher,
    queue: &crate::coordinator::FlushQueue,
    request: &BackfillRequest,
    now_millis: i64,
) -> Result<BackfillReport, RunError> {
    match start(flusher, request, now_millis).await? {
        Started::Done(report) => Ok(report),
        Started::Running {
            plan,
            progress,
            key,
            fresh,
        } => {
            let idle = now_millis - parse_timestamp(&progress.updated_at).unwrap_or(0);
            // Asked again while a worker is on it: not queued twice.
            if fresh || idle >= crate::coordinator::BACKFILL_IDLE_MILLIS {
                crate::coordinator::send_backfills(queue, std::slice::from_ref(&key)).await?;
                tracing::info!(id = %plan.id, %key, "backfill queued for a flush worker");
            } else {
                tracing::info!(id = %plan.id, "backfill already queued or running");
            }
            Ok(report_of(&progress, &key, 0, None))
        }
    }
}

/// A backfill request, checked and recorded.
enum Started {
    /// Done before: nothing to do.
    Done(BackfillReport),
    /// Its progress record saved as running.
    Running {
        plan: Box<BackfillPlan>,
        progress: BackfillProgress,
        key: String,
        /// Whether its record is new (not one being continued).
        fresh: bool,
    },
}

async fn start(
    flusher: &Flusher,
    request: &BackfillRequest,
    now_millis: i64,
) -> Result<Started, RunError> {
    let plan = plan(&flusher.config, request, now_millis)?;
    let key = layout::backfill_progress_key(&plan.id);
    let (progress, fresh) = match read_progress(flusher, &key).await? {
        Some(progress) if !request.restart && progress.status != BackfillStatus::Failed => {
            (progress, false)
        }
        _ => (BackfillProgress::new(request, &plan.id, now_millis), true),
    };
    if progress.status == BackfillStatus::Done {
        tracing::info!(id = %plan.id, "backfill already done; `restart: true` redoes it");
        return Ok(Started::Done(report_of(&progress, &key, 0, None)));
    }
    save_progress(flusher, &key, &progress).await?;
    Ok(Started::Running {
        plan: Box::new(plan),
        progress,
        key,
        fresh,
    })
}

/// Continues every unfinished backfill (status `running`) while the
/// deadline allows; a scheduled run calls it after its own work. A backfill
/// that can no longer run as asked is marked `failed`, naming the reason; a
/// record that cannot be read is logged and skipped.
pub async fn continue_unfinished(
    flusher: &Flusher,
    now_millis: i64,
    deadline: Option<Instant>,
) -> Result<Vec<BackfillReport>, FlushError> {
    let bucket = &flusher.config.export_bucket;
    let mut reports = Vec::new();
    for key in store::list_keys(&flusher.s3, bucket, BACKFILLS_PREFIX).await? {
        if near(deadline) {
            break;
        }
        if let Some(report) = continue_one(flusher, &key, now_millis, deadline).await? {
            reports.push(report);
        }
    }
    Ok(reports)
}

/// Continues the backfill whose progress record is `key` while the
/// deadline allows (a flush worker, for a backfill message): `None` when
/// it is not running (done, failed, gone) or its record cannot be read
/// (logged). A backfill that can no longer run as asked is marked
/// `failed`, naming the reason.
pub async fn continue_one(
    flusher: &Flusher,
    key: &str,
    now_millis: i64,
    deadline: Option<Instant>,
) -> Result<Option<BackfillReport>, FlushError> {
    let mut progress = match read_progress(flusher, key).await {
        Ok(Some(progress)) if progress.status == BackfillStatus::Running => progress,
        Ok(_) => return Ok(None),
        // One unreadable record does not hold the others back.
        Err(error) => {
            tracing::error!(%key, %error, "backfill progress unreadable; skipped");
            return Ok(None);
        }
    };
    let plan = progress
        .request()
        .and_then(|request| plan(&flusher.config, &request, now_millis));
    match plan {
        Ok(plan) => Ok(Some(
            advance(flusher, &plan, progress, key, now_millis, deadline).await?,
        )),
        Err(error) => {
            tracing::warn!(%key, %error, "backfill can no longer run; marked failed");
            progress.status = BackfillStatus::Failed;
            progress.last_error = Some(error.to_string());
            progress.updated_at = format_rfc3339_millis(now_millis);
            save_progress(flusher, key, &progress).await?;
            Ok(Some(report_of(
                &progress,
                key,
                0,
                progress.last_error.clone(),
            )))
        }
    }
}

/// The progress records of running backfills that no worker has advanced
/// for `idle_millis` at `wall_millis` (none is on it now): what a
/// scheduled coordinator sends to the flush queue again. Unreadable
/// records are logged and left out.
pub async fn idle_running(
    flusher: &Flusher,
    wall_millis: i64,
    idle_millis: i64,
) -> Result<Vec<String>, FlushError> {
    let bucket = &flusher.config.export_bucket;
    let mut idle = Vec::new();
    for key in store::list_keys(&flusher.s3, bucket, BACKFILLS_PREFIX).await? {
        match read_progress(flusher, &key).await {
            Ok(Some(progress)) if progress.status == BackfillStatus::Running => {
                let updated = parse_timestamp(&progress.updated_at).unwrap_or(0);
                if wall_millis - updated >= idle_millis {
                    idle.push(key);
                }
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%key, %error, "backfill progress unreadable; skipped"),
        }
    }
    Ok(idle)
}

/// Why a backfill invocation failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid backfill: {0}")]
    Invalid(#[from] BackfillError),
    #[error(transparent)]
    Flush(#[from] FlushError),
}

fn near(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|deadline| Instant::now() + DEADLINE_MARGIN >= deadline)
}

/// Publishes the partitions after the cursor in order (`flushConcurrency`
/// at a time), recording progress after each, until done, near the
/// deadline, or a partition fails (then it stays `running` with the error,
/// to be retried). Partitions after the cursor that were already published
/// when the run stopped are published again next time: the same bytes.
async fn advance(
    flusher: &Flusher,
    plan: &BackfillPlan,
    mut progress: BackfillProgress,
    progress_key: &str,
    now_millis: i64,
    deadline: Option<Instant>,
) -> Result<BackfillReport, FlushError> {
    let after = progress.cursor.as_ref().and_then(Cursor::partition);
    let todo: Vec<PartitionKey> = partitions_in_range(flusher, plan)
        .await?
        .into_iter()
        .filter(|partition| after.as_ref().is_none_or(|after| partition > after))
        .collect();
    let destination = find_destination(&flusher.config, &plan.destination)
        .map_err(|error| FlushError::Corrupt {
            what: format!("backfill {}", plan.id),
            message: error.to_string(),
        })?
        .clone();
    let (mut partitions, mut parts, mut events) = (0u64, 0u64, 0u64);
    let mut error = None;
    // Up to `flushConcurrency` partitions at once, their outcomes taken in
    // order, so the cursor only ever passes partitions that are done.
    let destination = &destination;
    let mut outcomes = stream::iter(todo.iter().enumerate())
        .map(|(index, partition)| async move {
            if near(deadline) {
                return None;
            }
            let outcome = backfill_partition(flusher, destination, partition).await;
            Some((index, partition, outcome))
        })
        .buffered(flusher.config.flush_concurrency);
    while let Some(Some((index, partition, outcome))) = outcomes.next().await {
        match outcome {
            Ok((published, published_events)) => {
                partitions += 1;
                parts += published;
                events += published_events;
                progress.cursor = Some(Cursor::of(partition));
                progress.partitions_done += 1;
                progress.parts_published += published;
                progress.events += published_events;
                progress.last_error = None;
            }
            Err(failure) => {
                tracing::warn!(id = %plan.id, stream = %partition.stream, tenant = %partition.tenant, hour = %partition.hour, %failure, "backfill stopped; it resumes here next time");
                progress.last_error = Some(failure.clone());
                error = Some(failure);
            }
        }
        let stopped = error.is_some();
        if !stopped && index + 1 == todo.len() {
            progress.status = BackfillStatus::Done;
        }
        progress.updated_at = format_rfc3339_millis(now_millis);
        save_progress(flusher, progress_key, &progress).await?;
        if stopped {
            break;
        }
    }
    if todo.is_empty() && progress.status == BackfillStatus::Running {
        progress.status = BackfillStatus::Done;
        progress.updated_at = format_rfc3339_millis(now_millis);
        save_progress(flusher, progress_key, &progress).await?;
    }
    let remaining = todo.len() - partitions as usize;
    let mut report = report_of(&progress, progress_key, remaining, error);
    report.partitions = partitions;
    report.parts = parts;
    report.events = events;
    Ok(report)
}

fn report_of(
    progress: &BackfillProgress,
    key: &str,
    remaining: usize,
    error: Option<String>,
) -> BackfillReport {
    BackfillReport {
        id: progress.id.clone(),
        progress_key: key.to_owned(),
        destination: progress.destination.clone(),
        from: progress.from.clone(),
        to: progress.to.clone(),
        status: progress.status,
        partitions: 0,
        parts: 0,
        events: 0,
        remaining,
        error,
    }
}

/// Publishes every part of one partition's manifest to `destination`, then
/// records them as published in the manifest (a conditional write, like a
/// flush's). Returns the parts and events published; a failure is the
/// diagnosis (or the export bucket's error) as text.
async fn backfill_partition(
    flusher: &Flusher,
    destination: &Destination,
    partition: &PartitionKey,
) -> Result<(u64, u64), String> {
    let s3 = &flusher.s3;
    let bucket = &flusher.config.export_bucket;
    let manifest_key = layout::manifest_key(partition);
    let Some((mut manifest, etag)) = store::read_manifest(s3, bucket, &manifest_key)
        .await
        .map_err(|e| e.to_string())?
    else {
        // Listed a moment ago; the retention removed it since.
        return Ok((0, 0));
    };
    let had_pending = manifest.has_pending();
    let (mut parts, mut events) = (0, 0);
    let files = publish::backfill_files(&manifest, &destination.name);
    for file in &files {
        let members: Vec<&ArchivePart> = manifest
            .parts
            .iter()
            .filter(|part| file.contains(&part.number))
            .collect();
        match publish::publish_file(flusher, destination, partition, &members).await {
            Ok(PartPublished::Written(_)) => {
                parts += members.len() as u64;
                events += members.iter().map(|part| part.events).sum::<u64>();
            }
            Ok(PartPublished::NothingSelected) => {}
            Err(PartFailure::Flush(error)) => return Err(error.to_string()),
            Err(PartFailure::Write { key, failure }) => {
                let diagnosis =
                    diagnose::diagnose(destination, &key, &failure, &flusher.principals);
                return Err(format!(
                    "{} (part {} of {manifest_key}): {}: {}",
                    destination.name, file[0], diagnosis.code, diagnosis.summary
                ));
            }
        }
    }
    // An hour still being compacted (a checkpoint, ranges of shards to
    // come) is not complete yet: its last flush writes the marker.
    if parts > 0 && !manifest.in_progress() {
        publish::write_success_marker(flusher, destination, partition).await;
    }
    let state = manifest
        .destinations
        .entry(destination.name.clone())
        .or_default();
    let before = state.clone();
    let numbers: Vec<u32> = files.into_iter().flatten().collect();
    let state = manifest
        .destinations
        .get_mut(&destination.name)
        .expect("inserted above");
    for number in numbers {
        publish::record_published(state, number);
    }
    if *state != before {
        store::commit_manifest(s3, bucket, &manifest_key, &manifest, Some(&etag))
            .await
            .map_err(|e| e.to_string())?;
        if had_pending && !manifest.has_pending() {
            store::delete_keys(s3, bucket, &[layout::pending_publish_key(partition)])
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok((parts, events))
}

/// Every partition in the plan's range with a manifest, in order (hour,
/// stream, tenant), that the destination takes. Listing goes stream by
/// stream, tenant by tenant, and lists only the dates in range.
pub async fn partitions_in_range(
    flusher: &Flusher,
    plan: &BackfillPlan,
) -> Result<BTreeSet<PartitionKey>, FlushError> {
    let s3 = &flusher.s3;
    let bucket = &flusher.config.export_bucket;
    let first_date = plan.first_hour.date_path()[..10].to_owned();
    let last_date = plan.last_hour.date_path()[..10].to_owned();
    let mut found = BTreeSet::new();
    for stream in &plan.streams {
        let tenants: Vec<TenantKey> = match &plan.tenants {
            Some(tenants) => tenants.clone(),
            None => store::list_folders(s3, bucket, &format!("{MANIFESTS_PREFIX}{stream}/"))
                .await?
                .iter()
                .filter_map(|folder| folder.trim_end_matches('/').rsplit('/').next())
                .map(TenantKey::from_encoded)
                .collect(),
        };
        for tenant in tenants {
            let takes = flusher
                .config
                .destinations_for(stream, &tenant)
                .any(|d| d.name == plan.destination);
            if !takes {
                continue;
            }
            let prefix = layout::manifest_tenant_prefix(stream, &tenant);
            for date_folder in store::list_folders(s3, bucket, &prefix).await? {
                let date = date_folder
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or_default();
                if date < first_date.as_str() || date > last_date.as_str() {
                    continue;
                }
                for key in store::list_keys(s3, bucket, &date_folder).await? {
                    if let Some(partition) = layout::parse_manifest_key(&key)
                        && partition.hour >= plan.first_hour
                        && partition.hour <= plan.last_hour
                    {
                        found.insert(partition);
                    }
                }
            }
        }
    }
    Ok(found)
}

async fn read_progress(
    flusher: &Flusher,
    key: &str,
) -> Result<Option<BackfillProgress>, FlushError> {
    let bucket = &flusher.config.export_bucket;
    let Some((bytes, _)) = store::get(&flusher.s3, bucket, key).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|error| FlushError::Corrupt {
            what: format!("backfill progress s3://{bucket}/{key}"),
            message: error.to_string(),
        })
}

/// Stores `progress` at `key` in the export bucket.
async fn save_progress(
    flusher: &Flusher,
    key: &str,
    progress: &BackfillProgress,
) -> Result<(), FlushError> {
    let json = serde_json::to_vec_pretty(progress).expect("progress records serialize");
    store::put(
        &flusher.s3,
        &flusher.config.export_bucket,
        key,
        json,
        "application/json",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::trigger::Invocation;

    /// 2026-11-22T10:00:00Z
    const TEN: i64 = 1_795_341_600_000;

    fn config(document: &str) -> Config {
        Config::from_sources(
            |name| (name == "EXPORT_BUCKET").then(|| "exports".to_owned()),
            Some(document),
        )
        .unwrap()
    }

    fn request(backfill: serde_json::Value) -> BackfillRequest {
        match Invocation::from_payload(&json!({ "backfill": backfill })).unwrap() {
            Invocation::Backfill(request) => request,
            other => panic!("{other:?}"),
        }
    }

    const DOCUMENT: &str = r#"{"archiveRetentionDays": 30, "destinations":[
      {"name":"lake","bucket":"lake","shared":true},
      {"name":"acme","bucket":"acme","tenants":["acme"],"streams":["airkit-audit-logs"]},
      {"name":"off","bucket":"off","enabled":false}]}"#;

    fn plan_error(backfill: serde_json::Value) -> BackfillError {
        plan(&config(DOCUMENT), &request(backfill), TEN).unwrap_err()
    }

    #[test]
    fn a_plan_takes_the_destinations_streams_and_tenants() {
        let config = config(DOCUMENT);
        let lake = plan(
            &config,
            &request(json!({"destination": "lake", "from": "2026-11-22T08:10:00Z", "to": "2026-11-22T10:00:00Z"})),
            TEN,
        )
        .unwrap();
        assert_eq!(lake.streams.len(), config.streams.len());
        assert_eq!(lake.tenants, None);
        assert_eq!(lake.first_hour, Hour::containing(TEN - 2 * 3_600_000));
        assert_eq!(lake.last_hour, Hour::containing(TEN - 3_600_000));
        let acme = plan(
            &config,
            &request(json!({"destination": "acme", "from": "2026-11-22T08:00:00Z", "to": "2026-11-22T10:00:00Z"})),
            TEN,
        )
        .unwrap();
        assert_eq!(acme.streams, vec!["airkit-audit-logs".to_owned()]);
        assert_eq!(acme.tenants, Some(vec![TenantKey::encode("acme")]));
        assert_ne!(lake.id, acme.id);
        assert_eq!(lake.id.len(), 16);
    }

    #[test]
    fn the_same_request_gets_the_same_id_whatever_the_order_of_its_lists() {
        let one = request(
            json!({"destination": "lake", "from": "2026-11-22T08:00:00Z", "to": "2026-11-22T10:00:00Z", "tenants": ["b", "a"]}),
        );
        let two = request(
            json!({"destination": "lake", "from": "2026-11-22T08:30:00Z", "to": "2026-11-22T10:00:00.000Z", "tenants": ["a", "b"]}),
        );
        assert_eq!(request_id(&one), request_id(&two));
        let other = request(
            json!({"destination": "lake", "from": "2026-11-22T08:00:00Z", "to": "2026-11-22T11:00:00Z", "tenants": ["a", "b"]}),
        );
        assert_ne!(request_id(&one), request_id(&other));
    }

    #[test]
    fn an_unknown_or_disabled_destination_is_named() {
        let error = plan_error(
            json!({"destination": "nope", "from": "2026-11-22T08:00:00Z", "to": "2026-11-22T09:00:00Z"}),
        );
        assert_eq!(error.field, "backfill.destination");
        assert_eq!(
            error.message,
            "no destination is named `nope` (configured: lake, acme, off)"
        );
        let error = plan_error(
            json!({"destination": "off", "from": "2026-11-22T08:00:00Z", "to": "2026-11-22T09:00:00Z"}),
        );
        assert_eq!(error.field, "backfill.destination");
        assert!(error.message.contains("disabled"), "{error}");
    }

    #[test]
    fn streams_and_tenants_the_destination_does_not_take_are_named() {
        let error = plan_error(
            json!({"destination": "lake", "from": "2026-11-22T08:00:00Z", "to": "2026-11-22T09:00:00Z", "streams": ["orders"]}),
        );
        assert_eq!(error.field, "backfill.streams");
        assert_eq!(error.message, "stream `orders` is not configured");
        let error = plan_error(
            json!({"destination": "acme", "from": "2026-11-22T08:00:00Z", "to": "2026-11-22T09:00:00Z", "streams": ["airkit-app-events"]}),
        );
        assert_eq!(error.field, "backfill.streams");
        assert!(
            error
                .message
                .contains("does not take stream `airkit-app-events`")
        );
        let error = plan_error(
            json!({"destination": "acme", "from": "2026-11-22T08:00:00Z", "to": "2026-11-22T09:00:00Z", "tenants": ["globex"]}),
        );
        assert_eq!(error.field, "backfill.tenants");
        assert!(error.message.contains("does not take tenant `globex`"));
    }

    #[test]
    fn hours_past_the_retention_are_named() {
        // 30 days before 2026-11-22T10:00Z is 2026-10-23T10:00Z.
        let error = plan_error(
            json!({"destination": "lake", "from": "2026-10-23T07:00:00Z", "to": "2026-10-24T00:00:00Z"}),
        );
        assert_eq!(error.field, "backfill.from");
        assert!(
            error.message.starts_with(
                "3 hour(s), 2026-10-23T07:00:00.000Z to 2026-10-23T09:00:00.000Z, are past the archive's retention of 30 days"
            ),
            "{error}"
        );
        assert!(
            error
                .message
                .ends_with("the oldest hour kept is 2026-10-23T10:00:00.000Z"),
            "{error}"
        );
        let error = plan_error(
            json!({"destination": "lake", "from": "2026-01-01T00:00:00Z", "to": "2026-01-01T02:00:00Z"}),
        );
        assert!(
            error
                .message
                .starts_with("2 hour(s), 2026-01-01T00:00:00.000Z to 2026-01-01T01:00:00.000Z"),
            "{error}"
        );
        assert!(
            plan(
                &config(DOCUMENT),
                &request(json!({"destination": "lake", "from": "2026-10-23T10:00:00Z", "to": "2026-10-24T00:00:00Z"})),
                TEN
            )
            .is_ok()
        );
        let forever = config(r#"{"destinations":[{"name":"lake","bucket":"lake","shared":true}]}"#);
        assert!(
            plan(
                &forever,
                &request(json!({"destination": "lake", "from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"})),
                TEN
            )
            .is_ok()
        );
    }
}
