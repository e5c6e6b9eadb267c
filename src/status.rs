//! `s3-export status`: the exports per destination and hour, read from the
//! manifests (the commit records), like Amplitude's export status view:
//! events, bytes and parts of each archived hour, and for each destination
//! whether its files are published, still pending (with the last error), or
//! were never sent because the destination was added after the hour (a
//! backfill sends them). `--backfills` lists the backfills' progress
//! records instead, and `--staging` the hours still staged (not yet
//! flushed): their staged objects and older chunks, and the objects'
//! events counted from their indexes. `--runs` lists the coordinator runs
//! whose work items are still being flushed (their records under `work/`).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use flusher::backfill::BackfillProgress;
use shared::Config;
use shared::layout::{self, BACKFILLS_PREFIX, MANIFESTS_PREFIX, STAGING_PREFIX};
use shared::manifest::Manifest;
use shared::partition::{Hour, TenantKey};

use crate::cli_config;
use crate::errors_replay::hour_range;

/// Options of `s3-export status`.
#[derive(Debug, Default, Args)]
pub struct StatusOptions {
    /// The export bucket. Default: `$EXPORT_BUCKET`, else the document's
    /// `exportBucket`.
    #[arg(long)]
    pub bucket: Option<String>,
    /// The configuration document (a file, inline JSON or s3://bucket/key),
    /// to also list destinations that never received an hour. Default:
    /// `$EXPORT_CONFIG`.
    #[arg(long)]
    pub config: Option<String>,
    /// Only this destination.
    #[arg(long)]
    pub destination: Option<String>,
    /// Only this stream.
    #[arg(long)]
    pub stream: Option<String>,
    /// Only this tenant (its original id).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only hours from this one (RFC 3339); with `--to`.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// Only hours before this time (RFC 3339, exclusive); with `--from`.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// List the backfills (their progress records under `backfills/`)
    /// instead of the hours.
    #[arg(long)]
    pub backfills: bool,
    /// List the hours still staged under `staging/` instead of the hours
    /// exported: staged objects (their events counted from their indexes,
    /// read from each object's tail) and older chunks (counted, not read).
    #[arg(long, conflicts_with_all = ["backfills", "destination"])]
    pub staging: bool,
    /// List the coordinator runs whose work items are not all flushed yet
    /// (their records under `work/`): items done of items sent, and the
    /// staged objects the run will delete.
    #[arg(long, conflicts_with_all = ["backfills", "staging", "destination"])]
    pub runs: bool,
    /// Print the rows as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One destination's state for one archived hour of a stream and tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRow {
    /// The hour's start, RFC 3339.
    pub hour: String,
    pub stream: String,
    /// The tenant's key segment.
    pub tenant: String,
    /// The destination's name; `-` for an hour no destination takes.
    pub destination: String,
    /// Events, compressed bytes and parts of the hour in the archive.
    pub events: u64,
    pub bytes: u64,
    pub parts: usize,
    /// Parts stored in the destination, and parts still to publish.
    pub published: usize,
    pub pending: usize,
    /// Parts that were pending when the destination stopped selecting this
    /// stream and tenant, and were therefore never sent.
    pub dropped: usize,
    /// `open` (the hour has not closed: a destination with files every
    /// few minutes has had some of it), `flushing` (the hour's compaction stopped at a checkpoint and goes
    /// on in the next run, or some ranges of its shards are still to
    /// commit: more parts to come), `published`, `pending`,
    /// `dropped` (parts were dropped: the
    /// destination no longer selects this stream and tenant), `partial`
    /// (only the parts committed after
    /// the destination was added: backfill the rest), `not-sent` (the
    /// destination takes this hour but came after it: backfill it) or
    /// `archived` (no destination).
    pub status: String,
    /// Failed attempts since the last success, and the last failure.
    pub failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Runs the command.
pub async fn run(options: &StatusOptions) -> anyhow::Result<bool> {
    let s3 = cli_config::s3_client().await;
    let config = cli_config::load(&s3, options.config.as_deref(), options.bucket.as_deref())
        .await
        .context("the pipeline's configuration")?;
    if options.backfills {
        let backfills = backfills(&s3, &config.export_bucket).await?;
        if options.json {
            println!("{}", serde_json::to_string_pretty(&backfills)?);
        } else {
            print!("{}", render_backfills(&backfills));
        }
        return Ok(true);
    }
    if options.runs {
        let runs = runs(&s3, &config.export_bucket).await?;
        if options.json {
            println!("{}", serde_json::to_string_pretty(&runs)?);
        } else {
            print!("{}", render_runs(&runs));
        }
        return Ok(true);
    }
    if options.staging {
        let hours = staged_hours(&s3, &config.export_bucket, options).await?;
        if options.json {
            println!("{}", serde_json::to_string_pretty(&hours)?);
        } else {
            print!("{}", render_staged_hours(&hours));
        }
        return Ok(hours.iter().all(|hour| hour.unreadable.is_empty()));
    }
    let rows = rows(&s3, &config, options).await?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", render(&rows));
    }
    Ok(true)
}

/// `row` of an hour that has not closed: `open` where it would say
/// `published`, `partial`, `flushing` or `held` (more files are to come).
pub fn still_open(mut row: StatusRow) -> StatusRow {
    if matches!(
        row.status.as_str(),
        "published" | "partial" | "flushing" | "held"
    ) {
        row.status = "open".to_owned();
    }
    row
}

/// The rows for every manifest the options select, by hour, stream,
/// tenant, then destination.
pub async fn rows(
    s3: &aws_sdk_s3::Client,
    config: &Config,
    options: &StatusOptions,
) -> anyhow::Result<Vec<StatusRow>> {
    let range = match (&options.from, &options.to) {
        (Some(from), Some(to)) => Some(hour_range(from, to)?),
        _ => None,
    };
    let tenant = options.tenant.as_deref().map(TenantKey::encode);
    let prefix = match (&options.stream, &tenant) {
        (Some(stream), Some(tenant)) => layout::manifest_tenant_prefix(stream, tenant),
        (Some(stream), None) => format!("{MANIFESTS_PREFIX}{stream}/"),
        _ => MANIFESTS_PREFIX.to_owned(),
    };
    let bucket = &config.export_bucket;
    let mut partitions = BTreeSet::new();
    for key in shared::listing::keys(s3, bucket, &prefix)
        .await
        .with_context(|| format!("listing s3://{bucket}/{prefix}"))?
    {
        let Some(partition) = layout::parse_manifest_key(&key) else {
            continue;
        };
        let in_range = range.is_none_or(|(first, last): (Hour, Hour)| {
            partition.hour >= first && partition.hour <= last
        });
        if in_range && tenant.as_ref().is_none_or(|t| *t == partition.tenant) {
            partitions.insert(partition);
        }
    }
    let mut rows = Vec::new();
    // The keys still staged per hour, listed for hours with unconfirmed
    // publishes only.
    let mut staged: BTreeMap<Hour, BTreeSet<String>> = BTreeMap::new();
    for partition in partitions {
        let key = layout::manifest_key(&partition);
        let bytes = crate::inspect::read_object(s3, bucket, &key).await?;
        let mut manifest: Manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("s3://{bucket}/{key} is not a manifest"))?;
        if manifest.has_unconfirmed() {
            let keys = match staged.entry(partition.hour) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    let prefix = layout::staging_hour_prefix(partition.hour);
                    let keys = shared::listing::keys(s3, bucket, &prefix)
                        .await
                        .with_context(|| format!("listing s3://{bucket}/{prefix}"))?;
                    entry.insert(keys.into_iter().collect())
                }
            };
            let consumed = manifest.consumed();
            let still_staged = consumed.iter().any(|key| keys.contains(*key));
            // As the flusher will see it: still staged, not yet published.
            manifest.settle_unconfirmed(still_staged);
        }
        let configured: Vec<String> = config
            .destinations_for(&partition.stream, &partition.tenant)
            .map(|d| d.name.clone())
            .collect();
        // Flushed before it closed (a destination with files every few
        // minutes): not complete yet, whatever has been published.
        let closes_at = partition.hour.end_millis() + config.flush_grace_minutes as i64 * 60_000;
        let open = closes_at > flusher::wall_clock_millis();
        rows.extend(
            manifest_rows(&manifest, &configured)
                .into_iter()
                .map(|row| if open { still_open(row) } else { row })
                .filter(|row| {
                    options
                        .destination
                        .as_ref()
                        .is_none_or(|name| *name == row.destination)
                }),
        );
    }
    Ok(rows)
}

/// What is still staged for one hour (not yet flushed, or kept for a
/// partition not flushed yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedHour {
    /// The hour's start, RFC 3339.
    pub hour: String,
    /// Staged objects holding a selected partition.
    pub objects: usize,
    /// Older staged chunks of a selected partition (their events are not
    /// counted: that needs reading each whole; `s3-export inspect` does).
    pub chunks: usize,
    /// Events of the selected partitions in the staged objects, from their
    /// indexes.
    pub events: u64,
    /// `s3://bucket/key: why` of each staged object whose index cannot be
    /// read.
    pub unreadable: Vec<String>,
}

/// The hours under `staging/` the options select (`--from`/`--to`,
/// `--stream`, `--tenant`), in order. A staged object costs one ranged GET
/// of its tail (two when its index is longer); a chunk none.
pub async fn staged_hours(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    options: &StatusOptions,
) -> anyhow::Result<Vec<StagedHour>> {
    let range = match (&options.from, &options.to) {
        (Some(from), Some(to)) => Some(hour_range(from, to)?),
        _ => None,
    };
    let tenant = options.tenant.as_deref().map(TenantKey::encode);
    let selects = |stream: &str, key: &TenantKey| {
        options.stream.as_deref().is_none_or(|s| s == stream)
            && tenant.as_ref().is_none_or(|t| t == key)
    };
    let in_range =
        |hour: Hour| range.is_none_or(|(first, last): (Hour, Hour)| hour >= first && hour <= last);
    let mut hours: BTreeMap<Hour, StagedHour> = BTreeMap::new();
    for shared::listing::ListedObject { key, size } in
        shared::listing::objects(s3, bucket, STAGING_PREFIX)
            .await
            .with_context(|| format!("listing s3://{bucket}/{STAGING_PREFIX}"))?
    {
        if let Some(partition) = layout::parse_staging_chunk_key(&key) {
            if in_range(partition.hour) && selects(&partition.stream, &partition.tenant) {
                staged_hour(&mut hours, partition.hour).chunks += 1;
            }
            continue;
        }
        let Some((hour, ..)) = layout::parse_staged_object_key(&key) else {
            continue;
        };
        if !in_range(hour) {
            continue;
        }
        match crate::inspect::read_staged_index(s3, bucket, &key, size).await? {
            Ok(index) => {
                let events: Vec<u64> = index
                    .segments
                    .iter()
                    .filter(|segment| selects(&segment.stream, &segment.tenant_key()))
                    .map(|segment| segment.events)
                    .collect();
                if !events.is_empty() {
                    let staged = staged_hour(&mut hours, hour);
                    staged.objects += 1;
                    staged.events += events.iter().sum::<u64>();
                }
            }
            Err(error) => staged_hour(&mut hours, hour)
                .unreadable
                .push(format!("s3://{bucket}/{key}: {error}")),
        }
    }
    Ok(hours.into_values().collect())
}

fn staged_hour(hours: &mut BTreeMap<Hour, StagedHour>, hour: Hour) -> &mut StagedHour {
    hours.entry(hour).or_insert_with(|| StagedHour {
        hour: shared::time::format_rfc3339_millis(hour.start_millis()),
        ..StagedHour::default()
    })
}

/// The staged hours as an aligned table, a line per unreadable object, and
/// a summary.
pub fn render_staged_hours(hours: &[StagedHour]) -> String {
    let mut out = format!(
        "{:<24}  {:>7}  {:>7}  {:>9}\n",
        "HOUR", "OBJECTS", "CHUNKS", "EVENTS"
    );
    for hour in hours {
        out.push_str(&format!(
            "{:<24}  {:>7}  {:>7}  {:>9}\n",
            hour.hour, hour.objects, hour.chunks, hour.events
        ));
    }
    let unreadable: Vec<&String> = hours.iter().flat_map(|h| &h.unreadable).collect();
    for line in &unreadable {
        out.push_str(&format!("UNREADABLE {line}\n"));
    }
    out.push_str(&format!(
        "{} hour(s) staged: {} staged object(s) with {} event(s), {} chunk(s) (events not counted), {} unreadable\n",
        hours.len(),
        hours.iter().map(|h| h.objects).sum::<usize>(),
        hours.iter().map(|h| h.events).sum::<u64>(),
        hours.iter().map(|h| h.chunks).sum::<usize>(),
        unreadable.len()
    ));
    out
}

/// A coordinator run whose records are still under `work/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunProgress {
    /// The run's id (`work/<run>/`): its "now" and attempt.
    pub run: String,
    /// When it queued its items, RFC 3339 (the wall clock).
    pub created: String,
    pub items: u32,
    /// Items a worker has finished (done records).
    pub done: usize,
    /// Staged objects the run deletes once every item reading them is done.
    pub objects: usize,
}

/// Every coordinator run with records under `work/`, in id order; a run
/// whose record is gone (its last worker is cleaning up) is skipped.
pub async fn runs(s3: &aws_sdk_s3::Client, bucket: &str) -> anyhow::Result<Vec<RunProgress>> {
    let mut runs = Vec::new();
    let listing = |prefix: &str| {
        let prefix = prefix.to_owned();
        async move {
            shared::listing::keys(s3, bucket, &prefix)
                .await
                .with_context(|| format!("listing s3://{bucket}/{prefix}"))
        }
    };
    let folders = shared::listing::folders(s3, bucket, layout::WORK_PREFIX)
        .await
        .with_context(|| format!("listing s3://{bucket}/{}", layout::WORK_PREFIX))?;
    for folder in folders {
        let run = folder
            .trim_start_matches(layout::WORK_PREFIX)
            .trim_end_matches('/')
            .to_owned();
        let key = layout::work_run_key(&run);
        let Ok(bytes) = crate::inspect::read_object(s3, bucket, &key).await else {
            continue;
        };
        let record: flusher::coordinator::RunRecord = serde_json::from_slice(&bytes)
            .with_context(|| format!("s3://{bucket}/{key} is not a run record"))?;
        let done = listing(&folder)
            .await?
            .iter()
            .filter(|key| key.contains("/done-"))
            .count();
        runs.push(RunProgress {
            run,
            created: shared::time::format_rfc3339_millis(record.created_millis),
            items: record.items,
            done,
            objects: record.objects.len(),
        });
    }
    Ok(runs)
}

/// The runs as text: one line each.
pub fn render_runs(runs: &[RunProgress]) -> String {
    let mut out = String::new();
    for run in runs {
        out.push_str(&format!(
            "{}  queued {}  {} of {} item(s) done  {} staged object(s) to delete\n",
            run.run, run.created, run.done, run.items, run.objects
        ));
    }
    out.push_str(&format!("{} run(s) in flight\n", runs.len()));
    out
}

/// Every backfill's progress record, in key order.
pub async fn backfills(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> anyhow::Result<Vec<BackfillProgress>> {
    let mut records = Vec::new();
    for key in shared::listing::keys(s3, bucket, BACKFILLS_PREFIX)
        .await
        .with_context(|| format!("listing s3://{bucket}/{BACKFILLS_PREFIX}"))?
    {
        let bytes = crate::inspect::read_object(s3, bucket, &key).await?;
        records.push(
            serde_json::from_slice(&bytes).with_context(|| {
                format!("s3://{bucket}/{key} is not a backfill progress record")
            })?,
        );
    }
    Ok(records)
}

/// The backfills as text: one line each, then its last error.
pub fn render_backfills(backfills: &[BackfillProgress]) -> String {
    let mut out = String::new();
    for backfill in backfills {
        let status = serde_json::to_value(backfill.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.push_str(&format!(
            "{}  {}  {} to {}  {status}  {} partition(s), {} part(s), {} event(s)  last done: {}\n",
            backfill.id,
            backfill.destination,
            backfill.from,
            backfill.to,
            backfill.partitions_done,
            backfill.parts_published,
            backfill.events,
            backfill.cursor.as_ref().map_or_else(
                || "none".to_owned(),
                |c| format!("{} {} {}", c.hour, c.stream, c.tenant)
            ),
        ));
        if let Some(error) = &backfill.last_error {
            out.push_str(&format!("  last error: {error}\n"));
        }
    }
    out.push_str(&format!("{} backfill(s)\n", backfills.len()));
    out
}

/// One manifest's rows: a row per destination it records, one `not-sent`
/// row per destination of `configured` it does not know, and an `archived`
/// row when there is neither.
pub fn manifest_rows(manifest: &Manifest, configured: &[String]) -> Vec<StatusRow> {
    let row = |destination: &str| StatusRow {
        hour: manifest.hour.clone(),
        stream: manifest.stream.clone(),
        tenant: manifest.tenant.clone(),
        destination: destination.to_owned(),
        events: manifest.parts.iter().map(|p| p.events).sum(),
        bytes: manifest.parts.iter().map(|p| p.bytes).sum(),
        parts: manifest.parts.len(),
        published: 0,
        pending: 0,
        dropped: 0,
        status: String::new(),
        failures: 0,
        last_error: None,
    };
    let mut rows: Vec<StatusRow> = manifest
        .destinations
        .iter()
        .map(|(name, state)| StatusRow {
            published: state.published.len(),
            pending: state.pending.len(),
            dropped: state.dropped.len(),
            status: if manifest.in_progress() {
                "flushing"
            } else if !state.pending.is_empty() {
                "pending"
            } else if !state.held.is_empty() {
                // An hourly destination of an hour flushed while open.
                "held"
            } else if !state.dropped.is_empty() {
                "dropped"
            } else if state.published.len() < manifest.parts.len() {
                // Parts committed before the destination was added.
                "partial"
            } else {
                "published"
            }
            .to_owned(),
            failures: state.failures,
            last_error: state.last_error.clone(),
            ..row(name)
        })
        .collect();
    for name in configured {
        if !manifest.destinations.contains_key(name) {
            rows.push(StatusRow {
                status: "not-sent".to_owned(),
                ..row(name)
            });
        }
    }
    if rows.is_empty() {
        rows.push(StatusRow {
            status: "archived".to_owned(),
            ..row("-")
        });
    }
    rows.sort_by(|a, b| a.destination.cmp(&b.destination));
    rows
}

/// The rows as an aligned table, then a line per pending error and a
/// summary.
pub fn render(rows: &[StatusRow]) -> String {
    let header = [
        "HOUR",
        "STREAM",
        "TENANT",
        "DESTINATION",
        "EVENTS",
        "BYTES",
        "PARTS",
        "STATUS",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|row| {
            [
                row.hour.clone(),
                row.stream.clone(),
                row.tenant.clone(),
                row.destination.clone(),
                row.events.to_string(),
                row.bytes.to_string(),
                format!("{}/{}", row.published, row.parts),
                match row.status.as_str() {
                    "pending" => format!(
                        "pending ({} part(s), {} failure(s))",
                        row.pending, row.failures
                    ),
                    "dropped" => format!(
                        "dropped ({} part(s): the destination no longer selects this stream and tenant)",
                        row.dropped
                    ),
                    "flushing" => format!(
                        "flushing ({} part(s) so far; more to come: a checkpoint, or ranges of shards still flushing)",
                        row.parts
                    ),
                    "open" => format!(
                        "open ({} part(s) so far: the hour has not closed)",
                        row.parts
                    ),
                    "held" => "held (the hour closed: the next run sends its parts as hourly files)"
                        .to_owned(),
                    "not-sent" => "not-sent (added later: backfill)".to_owned(),
                    "partial" => "partial (added later: backfill)".to_owned(),
                    other => other.to_owned(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let mut text = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    let mut out = line(&header.map(str::to_owned));
    for row in &cells {
        out.push_str(&line(row));
    }
    for row in rows.iter().filter(|row| row.last_error.is_some()) {
        out.push_str(&format!(
            "{} {} {} {}: {}\n",
            row.destination,
            row.stream,
            row.tenant,
            row.hour,
            row.last_error.as_deref().unwrap_or_default()
        ));
    }
    let count = |status: &str| rows.iter().filter(|row| row.status == status).count();
    out.push_str(&format!(
        "{} row(s): {} published, {} pending, {} not sent\n",
        rows.len(),
        count("published"),
        count("pending"),
        count("not-sent")
    ));
    let dropped = count("dropped");
    if dropped > 0 {
        out.push_str(&format!(
            "{dropped} row(s) with dropped parts: their destination was edited to no longer select the stream or tenant\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::manifest::{ArchivePart, DestinationState};

    fn manifest() -> Manifest {
        let mut manifest = Manifest {
            stream: "airkit-app-events".into(),
            tenant: "t1".into(),
            hour: "2026-11-22T10:00:00.000Z".into(),
            parts: vec![
                ArchivePart {
                    number: 1,
                    events: 10,
                    bytes: 300,
                    ..ArchivePart::default()
                },
                ArchivePart {
                    number: 2,
                    events: 5,
                    bytes: 200,
                    ..ArchivePart::default()
                },
            ],
            ..Manifest::default()
        };
        manifest.destinations.insert(
            "lake".into(),
            DestinationState {
                published: vec![1, 2],
                ..DestinationState::default()
            },
        );
        manifest.destinations.insert(
            "acme".into(),
            DestinationState {
                published: vec![1],
                pending: vec![2],
                failures: 3,
                last_error: Some("AccessDenied: no s3:PutObject".into()),
                ..DestinationState::default()
            },
        );
        manifest
    }

    #[test]
    fn each_destination_gets_a_row_with_its_state() {
        let rows = manifest_rows(&manifest(), &["lake".into(), "later".into()]);
        let summary: Vec<(&str, &str, usize, usize)> = rows
            .iter()
            .map(|r| {
                (
                    r.destination.as_str(),
                    r.status.as_str(),
                    r.published,
                    r.pending,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("acme", "pending", 1, 1),
                ("lake", "published", 2, 0),
                ("later", "not-sent", 0, 0)
            ]
        );
        assert!(
            rows.iter()
                .all(|r| (r.events, r.bytes, r.parts) == (15, 500, 2))
        );
        let text = render(&rows);
        assert!(text.starts_with("HOUR"), "{text}");
        assert!(text.contains("pending (1 part(s), 3 failure(s))"), "{text}");
        assert!(
            text.contains(
                "acme airkit-app-events t1 2026-11-22T10:00:00.000Z: AccessDenied: no s3:PutObject"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("3 row(s): 1 published, 1 pending, 1 not sent\n"),
            "{text}"
        );
    }

    #[test]
    fn an_hour_stopped_at_a_checkpoint_is_flushing_for_every_destination() {
        let mut checkpointed = manifest();
        checkpointed.cursor = Some(shared::manifest::Cursor {
            source: "staging/2026-11-22/10/1795341601000-r.staged".into(),
            lines: 25,
        });
        let rows = manifest_rows(&checkpointed, &[]);
        assert!(rows.iter().all(|r| r.status == "flushing"), "{rows:?}");
        let text = render(&rows);
        assert!(
            text.contains("flushing (2 part(s) so far; more to come: a checkpoint, or ranges of shards still flushing)"),
            "{text}"
        );
    }

    #[test]
    fn an_hourly_destination_holding_parts_for_the_close_says_held() {
        let mut flushed_open = manifest();
        let name = flushed_open.destinations.keys().next().unwrap().clone();
        let state = flushed_open.destinations.get_mut(&name).unwrap();
        state.pending.clear();
        state.held = vec![1, 2];
        let rows = manifest_rows(&flushed_open, &[]);
        let row = rows.iter().find(|r| r.destination == name).unwrap();
        assert_eq!(row.status, "held", "{rows:?}");
        assert!(render(&rows).contains("held (the hour closed"), "{rows:?}");
        // Before the close it is open, as every destination.
        assert_eq!(still_open(row.clone()).status, "open");
    }

    #[test]
    fn an_hour_not_closed_is_open_whatever_it_has_published() {
        let rows = manifest_rows(&manifest(), &["lake".into(), "later".into()]);
        let open: Vec<StatusRow> = rows.into_iter().map(still_open).collect();
        let statuses: Vec<&str> = open.iter().map(|r| r.status.as_str()).collect();
        assert!(statuses.contains(&"open"), "{statuses:?}");
        // Failures and hours a destination missed say so still.
        assert!(!statuses.contains(&"published"), "{statuses:?}");
        let text = render(&open);
        assert!(
            text.contains("part(s) so far: the hour has not closed"),
            "{text}"
        );
    }

    #[test]
    fn an_hour_some_of_whose_shard_ranges_have_not_committed_is_flushing() {
        let mut sharded = manifest();
        let mut state = shared::manifest::ShardState::new(4);
        let span = shared::manifest::ShardSpan { first: 0, end: 2 };
        state.consume("staging/2026-11-22/10/1795341601000-r.staged", span);
        sharded.shards = Some(state);
        let rows = manifest_rows(&sharded, &[]);
        assert!(rows.iter().all(|r| r.status == "flushing"), "{rows:?}");
        // Every range in: the hour is complete again.
        let state = sharded.shards.as_mut().unwrap();
        let rest = shared::manifest::ShardSpan { first: 2, end: 4 };
        assert!(state.consume("staging/2026-11-22/10/1795341601000-r.staged", rest));
        let rows = manifest_rows(&sharded, &[]);
        assert!(rows.iter().all(|r| r.status != "flushing"), "{rows:?}");
    }

    #[test]
    fn a_destination_whose_pending_parts_were_dropped_says_so() {
        let mut edited = manifest();
        edited.destinations.insert(
            "repointed".into(),
            DestinationState {
                dropped: vec![1, 2],
                ..DestinationState::default()
            },
        );
        let rows = manifest_rows(&edited, &[]);
        let row = rows.iter().find(|r| r.destination == "repointed").unwrap();
        assert_eq!(
            (row.status.as_str(), row.dropped, row.published),
            ("dropped", 2, 0)
        );
        let text = render(&rows);
        assert!(
            text.contains(
                "dropped (2 part(s): the destination no longer selects this stream and tenant)"
            ),
            "{text}"
        );
        assert!(text.ends_with("1 row(s) with dropped parts: their destination was edited to no longer select the stream or tenant\n"), "{text}");
    }

    #[test]
    fn a_destination_added_between_two_parts_is_partial() {
        let mut late = manifest();
        late.destinations.insert(
            "later".into(),
            DestinationState {
                published: vec![2],
                ..DestinationState::default()
            },
        );
        let rows = manifest_rows(&late, &[]);
        let later = rows.iter().find(|r| r.destination == "later").unwrap();
        assert_eq!((later.status.as_str(), later.published), ("partial", 1));
        assert!(render(&rows).contains("1/2    partial (added later: backfill)"));
    }

    #[test]
    fn an_hour_without_destinations_is_archived() {
        let mut bare = manifest();
        bare.destinations.clear();
        let rows = manifest_rows(&bare, &[]);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].destination.as_str(), rows[0].status.as_str()),
            ("-", "archived")
        );
    }
}
