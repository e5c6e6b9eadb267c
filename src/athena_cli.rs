//! `s3-export athena-ddl`: prints the Athena `CREATE EXTERNAL TABLE` of one
//! stream's export files in a destination (see [`crate::athena`]), from a
//! layout and a location, or from a configuration document's destination.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use shared::Config;
use shared::config::env;
use shared::key_layout::KeyLayout;
use shared::profile::{AIRKIT_APP_EVENTS, AIRKIT_AUDIT_LOGS, Profile};

use crate::athena::{self, DEFAULT_SINCE, TableSpec};

/// Options of `s3-export athena-ddl`.
#[derive(Debug, Args)]
pub struct AthenaDdlOptions {
    /// The stream: `airkit-app-events`, `airkit-audit-logs`, or a stream of
    /// the configuration document.
    #[arg(long)]
    pub stream: String,
    /// The destination's key layout: `amplitude` (the destinations'
    /// default), `date-folders`, `hive`, or a template. Not with
    /// --destination, which gives its own.
    #[arg(long, conflicts_with = "destination")]
    pub layout: Option<String>,
    /// `s3://<bucket>/<prefix>`: the destination's bucket and prefix exactly
    /// as configured. Default with --destination: the destination's.
    #[arg(long)]
    pub location: Option<String>,
    /// The table's name, `[database.]table` (default: the stream's name with
    /// `_` for `-`).
    #[arg(long)]
    pub table: Option<String>,
    /// A configuration document (a file, or inline JSON): the destination's
    /// bucket, prefix, layout and tenants, and the stream's profile.
    #[arg(long)]
    pub config: Option<String>,
    /// The destination of --config (needed when it has several).
    #[arg(long, requires = "config")]
    pub destination: Option<String>,
    /// The first day Athena projects: `yyyy-MM-dd` (the first export), or a
    /// relative date such as `NOW-2YEARS`.
    #[arg(long, default_value = DEFAULT_SINCE)]
    pub since: String,
}

/// Prints the statement on stdout and its notes on stderr.
pub fn run(options: &AthenaDdlOptions) -> anyhow::Result<()> {
    let config = match &options.config {
        None => None,
        Some(text) => {
            let document = if text.trim_start().starts_with('{') {
                text.clone()
            } else {
                std::fs::read_to_string(PathBuf::from(text))
                    .with_context(|| format!("cannot read the configuration document `{text}`"))?
            };
            Some(Config::from_sources(
                |name| {
                    std::env::var(name).ok().or_else(|| {
                        (name == env::EXPORT_BUCKET).then(|| "unused-export-bucket".to_owned())
                    })
                },
                Some(&document),
            )?)
        }
    };
    let profile = match &config {
        Some(config) => config.streams.get(&options.stream).cloned(),
        None => match options.stream.as_str() {
            AIRKIT_APP_EVENTS => Some(Profile::airkit_app_events()),
            AIRKIT_AUDIT_LOGS => Some(Profile::airkit_audit_logs()),
            _ => None,
        },
    };
    let Some(profile) = profile else {
        bail!(
            "unknown stream `{}`: the built-in ones are {AIRKIT_APP_EVENTS} and {AIRKIT_AUDIT_LOGS}; \
             give --config for the streams of a configuration document",
            options.stream
        );
    };
    let destination = match &config {
        None => None,
        Some(config) => Some(match &options.destination {
            Some(name) => config
                .destinations
                .iter()
                .find(|d| &d.name == name)
                .with_context(|| format!("no destination named `{name}` in the configuration"))?,
            None => match config.destinations.as_slice() {
                [only] => only,
                [] => bail!("the configuration has no destinations"),
                several => bail!(
                    "give --destination: the configuration has {}",
                    several
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        }),
    };
    if let Some(destination) = destination
        && let Some(streams) = &destination.streams
        && !streams.contains(&options.stream)
    {
        bail!(
            "the destination `{}` does not receive the stream `{}` (it takes {})",
            destination.name,
            options.stream,
            streams.join(", ")
        );
    }
    let layout = match (destination, &options.layout) {
        (Some(destination), _) => destination.layout.clone(),
        (None, layout) => KeyLayout::parse(layout.as_deref().unwrap_or("amplitude"), true, true)
            .map_err(|e| anyhow::anyhow!("--layout: {e}"))?,
    };
    let location = match (&options.location, destination) {
        (Some(location), _) => location.clone(),
        (None, Some(destination)) => format!("s3://{}/{}", destination.bucket, destination.prefix),
        (None, None) => {
            bail!("give --location s3://<bucket>/<prefix> (or --config and --destination)")
        }
    };
    let spec = TableSpec {
        table: options
            .table
            .clone()
            .unwrap_or_else(|| athena::default_table_name(&options.stream)),
        stream: &options.stream,
        profile: &profile,
        location,
        layout: &layout,
        tenants: destination.and_then(|d| d.tenants.clone()),
        since: options.since.clone(),
    };
    let ddl = athena::table(&spec)?;
    print!("{}", ddl.sql());
    for note in &ddl.notes {
        eprintln!("-- note: {note}");
    }
    Ok(())
}
