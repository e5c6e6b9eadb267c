//! `s3-export errors-replay`: after a configuration fix (a new stream, a
//! relaxed profile), re-feeds the rejected records of `errors/` for a time
//! range through the batcher's own planning ([`batcher::plan_batch`]), so
//! the records now accepted are staged exactly as the batcher would have
//! staged them, and those still rejected stay in their errors file with
//! their (possibly new) reason.
//!
//! Re-running never duplicates: the staged objects' keys are derived from the
//! errors file (its ingest time, its request id and a digest of its bytes),
//! so replaying the same file again overwrites the same objects with the same
//! bytes, and an object the flusher has already consumed is recognised by its
//! manifest and skipped; the flusher also drops any event it has already
//! archived for the hour. The objects are written first, then the errors file
//! is rewritten with what is still rejected (or deleted when nothing is), so
//! a replay stopped half-way loses nothing and is simply run again.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context as _, bail};
use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};
use aws_sdk_s3::primitives::ByteStream;
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use batcher::plan::{STREAM_ATTRIBUTE, plan_batch};
use shared::Config;
use shared::encode::NdjsonGzWriter;
use shared::layout::{self, ERRORS_PREFIX};
use shared::partition::Hour;

use crate::cli_config;
use crate::inspect::gunzip;

/// Rewritten errors files are kept: compress them like the batcher does.
const ERRORS_GZIP_LEVEL: u32 = 6;

/// Options of `s3-export errors-replay`.
#[derive(Debug, Args)]
pub struct ErrorsReplayOptions {
    /// The first hour of errors files to replay (RFC 3339; the hour in
    /// their key, when the records were rejected).
    #[arg(long)]
    pub from: String,
    /// The end of the range, exclusive (RFC 3339).
    #[arg(long)]
    pub to: String,
    /// The configuration document (a file, inline JSON or s3://bucket/key).
    /// Default: `$EXPORT_CONFIG`, as the functions read it.
    #[arg(long)]
    pub config: Option<String>,
    /// The export bucket. Default: `$EXPORT_BUCKET`, else the document's
    /// `exportBucket`.
    #[arg(long)]
    pub bucket: Option<String>,
    /// Print what would be staged and what would stay rejected; write
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One line of an `errors/` file, as the batcher writes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorLine {
    reason: String,
    #[serde(default)]
    detail: String,
    message_id: Option<String>,
    stream: Option<String>,
    queue: Option<String>,
    part: Option<serde_json::Value>,
    #[serde(default)]
    attributes: HashMap<String, String>,
    #[serde(default)]
    message_attributes: HashMap<String, SqsMessageAttribute>,
    body: String,
}

/// What replaying one errors file did (or would do, in a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileReplay {
    pub key: String,
    /// Rejected records the file held.
    pub records: usize,
    /// Events now accepted, and the staged objects they were staged in.
    pub accepted: usize,
    pub chunks: Vec<String>,
    /// Records still rejected, by reason.
    pub still_rejected: BTreeMap<String, usize>,
    /// Lines that are not error records: kept in the file as they are.
    pub unreadable_lines: usize,
    /// `deleted` (nothing left), `rewritten` (what is still rejected, with
    /// its reason), `unchanged`, or why the file was skipped.
    pub outcome: String,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorsReplayReport {
    pub dry_run: bool,
    pub files: Vec<FileReplay>,
    pub accepted: usize,
    pub still_rejected: usize,
}

/// Runs the command.
pub async fn run(options: &ErrorsReplayOptions) -> anyhow::Result<bool> {
    let (first, last) = hour_range(&options.from, &options.to)?;
    let s3 = cli_config::s3_client().await;
    let config = cli_config::load(&s3, options.config.as_deref(), options.bucket.as_deref())
        .await
        .context("the pipeline's configuration")?;
    let report = replay(&s3, &config, first, last, options.dry_run).await?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(true)
}

/// The hours `[from, to)` covers, first and last; errors name the option.
pub fn hour_range(from: &str, to: &str) -> anyhow::Result<(Hour, Hour)> {
    let from_millis = shared::time::parse_timestamp(from)
        .map_err(|error| anyhow::anyhow!("`--from`: `{from}`: {error}"))?;
    let to_millis = shared::time::parse_timestamp(to)
        .map_err(|error| anyhow::anyhow!("`--to`: `{to}`: {error}"))?;
    if to_millis <= from_millis {
        bail!("`--to`: `{to}` is not after `--from` (`{from}`)");
    }
    Ok((
        Hour::containing(from_millis),
        Hour::containing(to_millis - 1),
    ))
}

/// Replays every errors file of the hours `first..=last` with `config`.
/// Nothing is written when `dry_run`.
pub async fn replay(
    s3: &aws_sdk_s3::Client,
    config: &Config,
    first: Hour,
    last: Hour,
    dry_run: bool,
) -> anyhow::Result<ErrorsReplayReport> {
    let bucket = &config.export_bucket;
    let mut report = ErrorsReplayReport {
        dry_run,
        ..ErrorsReplayReport::default()
    };
    for key in errors_files(s3, bucket, first, last).await? {
        let file = replay_file(s3, config, &key, dry_run).await?;
        report.accepted += file.accepted;
        report.still_rejected += file.still_rejected.values().sum::<usize>();
        report.files.push(file);
    }
    Ok(report)
}

/// The errors files of the hours `first..=last`, in key order.
async fn errors_files(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    first: Hour,
    last: Hour,
) -> anyhow::Result<Vec<String>> {
    let first_date = &first.date_path()[..10];
    let last_date = &last.date_path()[..10];
    let mut keys = Vec::new();
    for date_folder in shared::listing::folders(s3, bucket, ERRORS_PREFIX).await? {
        let date = date_folder
            .trim_start_matches(ERRORS_PREFIX)
            .trim_end_matches('/');
        if date < first_date || date > last_date {
            continue;
        }
        for hour_folder in shared::listing::folders(s3, bucket, &date_folder).await? {
            let path = hour_folder
                .trim_start_matches(ERRORS_PREFIX)
                .trim_end_matches('/');
            if Hour::parse_date_path(path).is_some_and(|hour| hour >= first && hour <= last) {
                keys.extend(shared::listing::keys(s3, bucket, &hour_folder).await?);
            }
        }
    }
    Ok(keys)
}

/// The SQS records an errors file's lines describe, rebuilt as Lambda
/// delivered them (id, body, attributes, message attributes, queue), and
/// the lines that are not error records.
fn records_of(text: &str) -> (Vec<SqsMessage>, Vec<&str>, Vec<(String, String)>) {
    let mut records = Vec::new();
    let mut unreadable = Vec::new();
    let mut reasons = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let Ok(error) = serde_json::from_str::<ErrorLine>(line) else {
            unreadable.push(line);
            continue;
        };
        let mut record = SqsMessage::default();
        record.message_id = error.message_id;
        record.body = Some(error.body);
        record.attributes = error.attributes;
        record.message_attributes = error.message_attributes;
        // The batcher reads only the queue's name from the ARN.
        record.event_source_arn = error.queue.map(|queue| format!("arn:aws:sqs:::{queue}"));
        // One event cut from a multi-event message no longer carries an SNS
        // envelope's `stream`: it keeps the stream it was first given.
        if error.part.is_some()
            && !record.message_attributes.contains_key(STREAM_ATTRIBUTE)
            && let Some(stream) = error.stream
        {
            let mut attribute = SqsMessageAttribute::default();
            attribute.string_value = Some(stream);
            attribute.data_type = Some("String".to_owned());
            record
                .message_attributes
                .insert(STREAM_ATTRIBUTE.to_owned(), attribute);
        }
        reasons.push((error.reason, error.detail));
        records.push(record);
    }
    (records, unreadable, reasons)
}

async fn replay_file(
    s3: &aws_sdk_s3::Client,
    config: &Config,
    key: &str,
    dry_run: bool,
) -> anyhow::Result<FileReplay> {
    let bucket = &config.export_bucket;
    let mut file = FileReplay {
        key: key.to_owned(),
        ..FileReplay::default()
    };
    let Some((_, ingest_millis, request_id)) = layout::parse_errors_key(key) else {
        file.outcome = "skipped: not an errors file of the batcher's layout".into();
        return Ok(file);
    };
    let bytes = crate::inspect::read_object(s3, bucket, key).await?;
    let text = match gunzip(&bytes) {
        Ok(text) => text,
        Err(error) => {
            file.outcome = format!("skipped: {error:#}");
            return Ok(file);
        }
    };
    let (records, unreadable, old_reasons) = records_of(&text);
    file.records = records.len();
    file.unreadable_lines = unreadable.len();

    // The same file always gives the same chunk keys; a rewritten file
    // (fewer records) gives new ones, so a chunk the flusher consumed is
    // never reused for other events.
    let digest = Sha256::digest(&bytes);
    let digest: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let replay_id = format!("replay-{digest}-{request_id}");
    let plan = plan_batch(config, &records, ingest_millis, &replay_id);
    file.accepted = plan.stats.accepted;
    file.chunks = plan.objects.iter().map(|chunk| chunk.key.clone()).collect();
    file.still_rejected = plan
        .stats
        .reasons
        .iter()
        .map(|(reason, count)| ((*reason).to_owned(), *count))
        .collect();

    // What stays: the records still rejected, as the batcher words them
    // now, and the lines that were not error records, unchanged.
    let still: Vec<String> = match &plan.errors {
        Some(errors) => gunzip(&errors.body)?.lines().map(str::to_owned).collect(),
        None => Vec::new(),
    };
    let new_reasons: Vec<(String, String)> = still
        .iter()
        .filter_map(|line| serde_json::from_str::<ErrorLine>(line).ok())
        .map(|error| (error.reason, error.detail))
        .collect();
    let changed = file.accepted > 0 || new_reasons != old_reasons;
    file.outcome = match (changed, still.is_empty() && unreadable.is_empty()) {
        (false, _) => "unchanged",
        (true, true) => "deleted",
        (true, false) => "rewritten",
    }
    .to_owned();
    if dry_run || !changed {
        return Ok(file);
    }

    for chunk in &plan.objects {
        s3.put_object()
            .bucket(bucket)
            .key(&chunk.key)
            .content_type(chunk.content_type)
            .body(ByteStream::from(chunk.body.clone()))
            .send()
            .await
            .with_context(|| format!("staging s3://{bucket}/{}", chunk.key))?;
    }
    if file.outcome == "deleted" {
        s3.delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .with_context(|| format!("deleting s3://{bucket}/{key}"))?;
    } else {
        let mut writer = NdjsonGzWriter::new(ERRORS_GZIP_LEVEL);
        for line in still.iter().map(String::as_str).chain(unreadable) {
            writer.push_line(line);
        }
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/gzip")
            .body(ByteStream::from(writer.finish()))
            .send()
            .await
            .with_context(|| format!("rewriting s3://{bucket}/{key}"))?;
    }
    Ok(file)
}

/// The report as text: a line per file, then the totals.
pub fn render(report: &ErrorsReplayReport) -> String {
    let mut out = String::new();
    for file in &report.files {
        let rejected: Vec<String> = file
            .still_rejected
            .iter()
            .map(|(reason, count)| format!("{reason} {count}"))
            .collect();
        out.push_str(&format!(
            "{}  records {}  accepted {}  still rejected {}{}  {}\n",
            file.key,
            file.records,
            file.accepted,
            file.still_rejected.values().sum::<usize>(),
            if rejected.is_empty() {
                String::new()
            } else {
                format!(" ({})", rejected.join(", "))
            },
            file.outcome
        ));
        for chunk in &file.chunks {
            out.push_str(&format!("  staged {chunk}\n"));
        }
        if file.unreadable_lines > 0 {
            out.push_str(&format!(
                "  {} line(s) are not error records: kept as they are\n",
                file.unreadable_lines
            ));
        }
    }
    out.push_str(&format!(
        "{}{} file(s): {} event(s) accepted and staged (the flusher archives them at its next run), {} record(s) still rejected\n",
        if report.dry_run { "dry run, nothing written: " } else { "" },
        report.files.len(),
        report.accepted,
        report.still_rejected
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_names_the_bad_option() {
        let error = hour_range("yesterday", "2026-11-22T10:00:00Z").unwrap_err();
        assert!(
            error.to_string().starts_with("`--from`: `yesterday`"),
            "{error}"
        );
        let error = hour_range("2026-11-22T10:00:00Z", "2026-11-22T09:00:00Z").unwrap_err();
        assert_eq!(
            error.to_string(),
            "`--to`: `2026-11-22T09:00:00Z` is not after `--from` (`2026-11-22T10:00:00Z`)"
        );
        let (first, last) = hour_range("2026-11-22T09:30:00Z", "2026-11-22T11:00:00Z").unwrap();
        assert_eq!(first.date_path(), "2026-11-22/09");
        assert_eq!(last.date_path(), "2026-11-22/10");
    }

    #[test]
    fn lines_that_are_not_error_records_are_set_aside() {
        let text = "{\"reason\":\"not_json\",\"detail\":\"d\",\"messageId\":\"m1\",\"stream\":\"s\",\"queue\":\"q\",\"body\":\"x\",\"attributes\":{\"SentTimestamp\":\"5\"}}\nnot json\n";
        let (records, unreadable, reasons) = records_of(text);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].message_id.as_deref(), Some("m1"));
        assert_eq!(
            records[0].event_source_arn.as_deref(),
            Some("arn:aws:sqs:::q")
        );
        assert_eq!(records[0].attributes["SentTimestamp"], "5");
        assert_eq!(unreadable, vec!["not json"]);
        assert_eq!(reasons, vec![("not_json".to_owned(), "d".to_owned())]);
    }

    #[test]
    fn a_part_keeps_the_stream_it_was_given() {
        let text = r#"{"reason":"bad_time","detail":"d","messageId":"m1","stream":"audit","part":{"index":1,"count":2},"body":"{}"}"#;
        let (records, _, _) = records_of(text);
        assert_eq!(
            records[0].message_attributes[STREAM_ATTRIBUTE]
                .string_value
                .as_deref(),
            Some("audit")
        );
    }
}
