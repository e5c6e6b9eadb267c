//! `s3-export inspect`: what `staging/` holds, read back whole: each object
//! (a staged object with its segments, or an older staged chunk) and the
//! events waiting per partition (stream, tenant, hour); an object that
//! cannot be read is listed with its error beside the others, and makes the
//! command exit 1. `--file` reads a downloaded staged object instead.
//! Objects are read, printed and dropped one at a time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};
use shared::partition::PartitionKey;

use crate::cli_config;
use crate::inspect::{self, StagedPartition, StagingFormat, StagingObject};

/// Options of `s3-export inspect`.
#[derive(Debug, Default, Args)]
pub struct InspectOptions {
    /// The export bucket. Default: `$EXPORT_BUCKET`, else the document's
    /// `exportBucket`.
    #[arg(long)]
    pub bucket: Option<String>,
    /// The configuration document (a file, inline JSON or s3://bucket/key),
    /// for its export bucket. Default: `$EXPORT_CONFIG`.
    #[arg(long)]
    pub config: Option<String>,
    /// Only the objects under this prefix, e.g. `staging/2026-11-22/10/`
    /// for one hour.
    #[arg(long, default_value = shared::layout::STAGING_PREFIX)]
    pub prefix: String,
    /// Read this downloaded staged object (a `.staged` file) instead of the
    /// bucket.
    #[arg(long, conflicts_with_all = ["bucket", "prefix"])]
    pub file: Option<PathBuf>,
    /// Also print every staged line (`<event>\t<provenance>`) of each
    /// segment or chunk (in JSON, as each source's `lines`).
    #[arg(long)]
    pub lines: bool,
    /// Print the objects and partitions as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command: `Ok(false)` when an object could not be read. Objects
/// are read, printed and dropped one at a time, so memory holds one object
/// whatever the hour's size.
pub async fn run(options: &InspectOptions) -> anyhow::Result<bool> {
    let mut tally = Tally::default();
    let mut objects_json = Vec::new();
    let mut show = |object: StagingObject| {
        if options.json {
            objects_json.push(object_json(&object, options.lines));
        } else {
            print!("{}", render_object(&object, options.lines));
        }
        tally.add(&object);
    };
    match &options.file {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            show(StagingObject::read_staged(
                &path.display().to_string(),
                &bytes,
            ));
        }
        None => {
            let s3 = cli_config::s3_client().await;
            let config =
                cli_config::load(&s3, options.config.as_deref(), options.bucket.as_deref())
                    .await
                    .context("the pipeline's configuration")?;
            let bucket = &config.export_bucket;
            let keys = inspect::staging_keys(&s3, bucket, &options.prefix)
                .await
                .context("`--prefix`")?;
            for key in keys {
                let bytes = inspect::read_object(&s3, bucket, &key).await?;
                show(StagingObject::read(&key, &bytes));
            }
        }
    }
    if options.json {
        let document = json!({ "objects": objects_json, "partitions": tally.partitions_json() });
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        print!("{}", tally.render());
    }
    Ok(tally.unreadable == 0)
}

/// What the objects read so far hold: per partition, and by format.
#[derive(Debug, Default)]
pub struct Tally {
    pub partitions: BTreeMap<PartitionKey, StagedPartition>,
    pub staged: usize,
    pub chunks: usize,
    pub other: usize,
    pub unreadable: usize,
}

impl Tally {
    /// Counts `object`.
    pub fn add(&mut self, object: &StagingObject) {
        inspect::add_partitions(&mut self.partitions, object);
        match object.format {
            StagingFormat::Staged => self.staged += 1,
            StagingFormat::Chunk => self.chunks += 1,
            StagingFormat::Other => self.other += 1,
        }
        self.unreadable += usize::from(object.error.is_some());
    }

    /// The events per partition as a table, then a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.partitions.is_empty() {
            out.push('\n');
            let rows: Vec<[String; 6]> = self
                .partitions
                .iter()
                .map(|(partition, staged)| {
                    [
                        hour_text(partition),
                        partition.stream.clone(),
                        partition.tenant.as_str().to_owned(),
                        staged.events.to_string(),
                        staged.objects.to_string(),
                        staged.chunks.to_string(),
                    ]
                })
                .collect();
            out.push_str(&table(
                ["HOUR", "STREAM", "TENANT", "EVENTS", "OBJECTS", "CHUNKS"],
                &rows,
            ));
        }
        let events: usize = self.partitions.values().map(|p| p.events).sum();
        let _ = writeln!(
            out,
            "{} staged object(s), {} chunk(s), {} other; {} unreadable; {events} event(s) in {} partition(s)",
            self.staged,
            self.chunks,
            self.other,
            self.unreadable,
            self.partitions.len()
        );
        out
    }

    fn partitions_json(&self) -> Vec<Value> {
        self.partitions
            .iter()
            .map(|(partition, staged)| {
                json!({
                    "hour": hour_text(partition),
                    "stream": partition.stream,
                    "tenant": partition.tenant.as_str(),
                    "events": staged.events,
                    "objects": staged.objects,
                    "chunks": staged.chunks,
                })
            })
            .collect()
    }
}

/// One object as text: its line (format, size, events or error), then a
/// line per segment of a staged object, and every staged line when
/// `lines`.
pub fn render_object(object: &StagingObject, lines: bool) -> String {
    let mut out = String::new();
    let format = format_name(object.format);
    match &object.error {
        Some(error) => {
            let _ = writeln!(
                out,
                "{}  {format}  {} B  UNREADABLE: {error}",
                object.key, object.size
            );
        }
        None => {
            let _ = writeln!(
                out,
                "{}  {format}  {} B  {} event(s)",
                object.key,
                object.size,
                object.events()
            );
        }
    }
    for source in &object.sources {
        if let Some((shard, shards)) = source.shard {
            let _ = writeln!(
                out,
                "  segment {}/{} shard {shard} of {shards}: {} event(s), {} B",
                source.partition.stream,
                source.partition.tenant.as_str(),
                source.lines.len(),
                source.compressed_bytes
            );
        }
        if lines {
            for line in &source.lines {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}

/// One object (with its segments, or its error) as JSON; with `lines`,
/// each segment's or chunk's staged lines too.
pub fn object_json(object: &StagingObject, lines: bool) -> Value {
    let sources: Vec<Value> = object
        .sources
        .iter()
        .map(|source| {
            let mut source_json = json!({
                "stream": source.partition.stream,
                "tenant": source.partition.tenant.as_str(),
                "hour": hour_text(&source.partition),
                "shard": source.shard.map(|(shard, _)| shard),
                "shards": source.shard.map(|(_, shards)| shards),
                "compressedBytes": source.compressed_bytes,
                "events": source.lines.len(),
            });
            if lines {
                source_json["lines"] = json!(source.lines);
            }
            source_json
        })
        .collect();
    json!({
        "key": object.key,
        "size": object.size,
        "format": object.format,
        "events": object.events(),
        "sources": sources,
        "error": object.error,
    })
}

fn format_name(format: StagingFormat) -> &'static str {
    match format {
        StagingFormat::Staged => "staged",
        StagingFormat::Chunk => "chunk",
        StagingFormat::Other => "other",
    }
}

/// The partition's hour as status prints it (RFC 3339 of its start).
fn hour_text(partition: &PartitionKey) -> String {
    shared::time::format_rfc3339_millis(partition.hour.start_millis())
}

fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header.map(str::to_owned)).chain(rows.iter().cloned()) {
        let line = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
