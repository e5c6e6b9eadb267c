//! `s3-export-bench`: how fast and how cheap s3-export is, measured in one
//! run on a seeded corpus, single-threaded:
//!
//! - (L) the limit: the same NDJSON bytes compressed with the export's codec
//!   and level (the staging codec's, zstd, is printed beside it); for the
//!   flusher, the staged chunks decompressed and recompressed at the archive
//!   level;
//! - (B) the batcher's path (`batcher::plan_batch` on 6 MB SQS events, for
//!   three producer styles): deserialize, decode, validate, partition,
//!   encode; no network;
//! - (C) the flusher's compaction (`flusher::compaction`) of the chunks the
//!   batcher staged: decompress, de-duplicate, recompress; no network;
//!
//! each in a child process of this binary (its own peak RSS); then the
//! whole pipeline as processes: the compiled batcher and flusher through
//! the Runtime API against moto, their own CPU seconds beside `gzip -6` of
//! the same lines and their peak RSS, and the flusher's peak RSS by
//! partition size (see `process`); then the functions' cold starts and
//! binary sizes, and the cost per million events; then the scale-out
//! simulation (`scale`): issue 17's deployments (`FlushWorkers` × worker
//! memory, one big tenant or a thousand even ones) timed from the rates
//! this run measured. `--phase scale` measures those rates and runs the
//! simulation alone.
//! It prints a table and ends with one JSON line holding every figure.
//! Benchmarks are not pass/fail: the figures are reported as measured.

mod cold_start;
mod corpus;
mod cost;
mod measure;
mod phases;
mod process;
mod scale;
mod scale_phase;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use shared::Config;
use shared::interval::Interval;

use corpus::Style;
use phases::Setup;

#[derive(Parser, Debug)]
#[command(
    name = "s3-export-bench",
    about = "Measure s3-export's throughput against the compression limit, memory, cold starts and cost"
)]
struct Cli {
    /// Events in the corpus.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Tenants (organizations) the events are spread over (default: one
    /// per 1,000 events, so any run keeps the default shape's events per
    /// partition: 1,000 tenants for a million events, 200 for 200,000).
    #[arg(long)]
    tenants: Option<usize>,
    /// Seed of the corpus.
    #[arg(long, default_value_t = 9)]
    seed: u64,
    /// Staging zstd level (default: the batcher's, STAGING_ZSTD_LEVEL's default).
    #[arg(long)]
    staging_level: Option<u32>,
    /// Archive gzip level (default: the flusher's, ARCHIVE_GZIP_LEVEL's default).
    #[arg(long)]
    archive_level: Option<u32>,
    /// Skip the cold starts (they need the release binaries of the functions).
    #[arg(long)]
    no_cold_start: bool,
    /// Skip the process phase (the functions' binaries through the Runtime
    /// API against moto_server: process CPU against gzip -6, peak RSS).
    #[arg(long)]
    no_process: bool,
    /// Alternating rounds (gzip -6, then the pipeline) of the process
    /// phase; medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    process_rounds: u32,
    /// Lines of the largest partition of the process phase's flusher RSS
    /// sweep (three sizes, 1:2:4); default: half the process phase's lines.
    #[arg(long)]
    sweep_lines: Option<usize>,
    /// Run every throughput phase this many times, in turn, and keep each
    /// rate's best: a shared machine's noise only ever slows a run down.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Where the functions' binaries are (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Delivery intervals the cost per delivery interval is printed for:
    /// minutes that divide an hour, 60 (or `hourly`) for hourly.
    #[arg(long, value_delimiter = ',', default_value = "1,5,15,60", value_parser = interval_arg)]
    intervals: Vec<Interval>,
    /// Tenant counts the cost per delivery interval is printed for (a
    /// million events an hour from that many tenants).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    interval_tenants: Vec<usize>,
    #[command(flatten)]
    scale: ScaleArgs,
    /// Run one phase: `scale` measures the rates the scale-out simulation
    /// needs and prints its tables; `process` the functions as processes;
    /// the others (internal) print their JSON.
    #[arg(long)]
    phase: Option<Phase>,
    #[arg(long, hide = true)]
    style: Option<Style>,
    #[arg(long, hide = true)]
    chunks_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Limit,
    Levels,
    Batcher,
    Flusher,
    Process,
    Scale,
}

/// The scale-out simulation's deployment and S3 (its parameters; the rates
/// are measured). Printed with the tables.
#[derive(clap::Args, Debug)]
struct ScaleArgs {
    /// Simulated events a second.
    #[arg(long, default_value_t = 100_000.0, value_parser = positive)]
    scale_events_per_s: f64,
    /// Simulated event size, bytes of NDJSON.
    #[arg(long, default_value_t = 1000.0, value_parser = positive)]
    scale_event_bytes: f64,
    /// Tenants of the simulated shapes (the big one among them).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    scale_tenants: u32,
    /// The big tenant's share of the events in the first shape.
    #[arg(long, default_value_t = 0.9, value_parser = fraction)]
    scale_big_share: f64,
    /// The big tenant's shards (a power of two, 1 to 1,024).
    #[arg(long, default_value_t = 256, value_parser = shards)]
    scale_shards: usize,
    /// Throughput of one S3 GET or PUT stream, MB/s (AWS's S3 performance
    /// guidance: one concurrent request per 85-90 MB/s).
    #[arg(long, default_value_t = 85.0, value_parser = positive)]
    s3_stream_mb_s: f64,
    /// Latency of one S3 request to its first byte, ms (AWS: roughly
    /// 100-200 ms for small objects and first bytes).
    #[arg(long, default_value_t = 100.0, value_parser = positive)]
    s3_latency_ms: f64,
    /// GETs a second one S3 prefix serves (AWS: at least 5,500); an hour's
    /// staged objects share one prefix.
    #[arg(long, default_value_t = 5500.0, value_parser = positive)]
    s3_prefix_gets_per_s: f64,
    /// Requests a worker has in flight (default: READ_CONCURRENCY's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    scale_get_concurrency: Option<u32>,
    /// A work item's staged bytes at most (default: WORK_ITEM_BYTES's;
    /// 1,024 B to 10 GiB, as WORK_ITEM_BYTES).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1024..=10 * 1024 * 1024 * 1024))]
    scale_work_item_bytes: Option<u64>,
    /// Destinations per partition (in the archive's format).
    #[arg(long, default_value_t = 1)]
    scale_destinations: usize,
    /// The minute past the hour the coordinator runs (FlushSchedule's).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(0..60))]
    scale_schedule_minute: u32,
    /// A Lambda vCPU's speed against one core of this machine.
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    scale_vcpu_speed: f64,
    /// Threads a worker compacts on (today's flusher: 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=6))]
    scale_threads: u32,
    /// NDJSON MB per staged object (default: measured, the batcher's gzip
    /// style on 6 MB SQS events).
    #[arg(long, value_parser = positive)]
    staged_object_mb: Option<f64>,
}

/// A number above zero (a rate, a size, a latency).
fn positive(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(number) if number.is_finite() && number > 0.0 => Ok(number),
        _ => Err(format!("{value} is not a number above 0")),
    }
}

/// A delivery interval: `hourly` or 60, or minutes that divide an hour.
fn interval_arg(value: &str) -> Result<Interval, String> {
    match value.trim() {
        "60" => Ok(Interval::Hourly),
        text => Interval::parse(&Value::String(text.to_owned())),
    }
}

/// A share: a number from 0 to 1.
fn fraction(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(number) if (0.0..=1.0).contains(&number) => Ok(number),
        _ => Err(format!("{value} is not a number from 0 to 1")),
    }
}

/// A shard count: a power of two from 1 to 1,024.
fn shards(value: &str) -> Result<usize, String> {
    let shards: usize = value.parse().map_err(|e| format!("{e}"))?;
    if shards.is_power_of_two() && shards <= 1024 {
        Ok(shards)
    } else {
        Err(format!("{shards} is not a power of two from 1 to 1024"))
    }
}

fn config(cli: &Cli) -> Config {
    let staging = cli.staging_level.map(|level| level.to_string());
    let archive = cli.archive_level.map(|level| level.to_string());
    Config::from_sources(
        |name| match name {
            "EXPORT_BUCKET" => Some("bench".to_owned()),
            "STAGING_ZSTD_LEVEL" => staging.clone(),
            "ARCHIVE_GZIP_LEVEL" => archive.clone(),
            _ => None,
        },
        None,
    )
    .expect("the benchmark's configuration is valid")
}

/// Events per tenant at the default shape (a million events, 1,000 tenants).
const EVENTS_PER_TENANT: usize = 1000;
/// The few-tenants run has this many times fewer tenants (10 for a million
/// events), to show what the tenant count does to PUTs and cost.
const FEW_TENANTS_FACTOR: usize = 100;

impl Cli {
    /// Where the functions' binaries are: as given, or beside this one.
    fn bin_dir(&self) -> Result<PathBuf, String> {
        match &self.bin_dir {
            Some(dir) => Ok(dir.clone()),
            None => Ok(std::env::current_exe()
                .map_err(|e| e.to_string())?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()),
        }
    }

    /// The process phase's lines: the 200,000, or fewer for a
    /// smaller run (the quick CI run's 20,000).
    fn process_lines(&self) -> usize {
        self.events.clamp(1, process::TARGET_LINES)
    }

    /// The tenants of the run: as given, or the default shape's.
    fn tenants(&self) -> usize {
        self.tenants
            .unwrap_or(self.events / EVENTS_PER_TENANT)
            .max(1)
    }

    /// The tenants of the few-tenants run.
    fn few_tenants(&self) -> usize {
        (self.tenants() / FEW_TENANTS_FACTOR).max(1)
    }

    /// The scale-out simulation's options, defaults from `config`.
    fn scale_options(&self, config: &Config) -> scale_phase::Options {
        let args = &self.scale;
        scale_phase::Options {
            base: scale::Deployment {
                events_per_s: args.scale_events_per_s,
                event_bytes: args.scale_event_bytes,
                // The table sets the shape, the workers and their memory.
                shape: scale::Shape {
                    big_share: 0.0,
                    big_shards: 1,
                    small_tenants: 1,
                },
                workers: 1,
                memory_mb: 1024.0,
                get_concurrency: args
                    .scale_get_concurrency
                    .map_or(config.read_concurrency, |requests| requests as usize),
                index_reads_at_once: 16,
                work_item_bytes: args
                    .scale_work_item_bytes
                    .map_or(config.work_item_bytes as f64, |bytes| bytes as f64),
                item_partitions: 1024,
                spool_bytes: config.spool_bytes as f64,
                destinations: args.scale_destinations,
                schedule_minute: f64::from(args.scale_schedule_minute),
                grace_minutes: config.flush_grace_minutes as f64,
                vcpu_speed: args.scale_vcpu_speed,
                threads: f64::from(args.scale_threads),
            },
            big_share: args.scale_big_share,
            big_shards: args.scale_shards,
            tenants: args.scale_tenants as usize,
            s3: scale::S3Model {
                stream_mb_s: args.s3_stream_mb_s,
                latency_s: args.s3_latency_ms / 1000.0,
                prefix_gets_per_s: args.s3_prefix_gets_per_s,
            },
            staged_object_bytes: args.staged_object_mb.map(|mb| mb * 1e6),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let setup = Setup {
        events: cli.events,
        tenants: cli.tenants(),
        seed: cli.seed,
        config: config(&cli),
    };
    if cli.phase == Some(Phase::Scale) {
        return match scale_run(&cli, &setup) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(phase) = cli.phase {
        let result = match phase {
            Phase::Scale => unreachable!("the scale phase ran above"),
            Phase::Limit => phases::limit(&setup),
            Phase::Levels => phases::levels(&setup),
            Phase::Batcher => phases::batcher(
                &setup,
                cli.style.expect("--style with --phase batcher"),
                cli.chunks_dir.as_deref(),
            ),
            Phase::Flusher => phases::flusher(
                &setup,
                cli.chunks_dir
                    .as_deref()
                    .expect("--chunks-dir with --phase flusher"),
            ),
            Phase::Process => {
                let work_dir = std::env::temp_dir()
                    .join(format!("s3-export-bench-process-{}", std::process::id()));
                let figures = match cli.bin_dir() {
                    Ok(bin_dir) => process::measure(&process::Options {
                        lines: cli.process_lines(),
                        sweep_lines: cli.sweep_lines.unwrap_or(cli.process_lines() / 2).max(1),
                        seed: cli.seed,
                        rounds: cli.process_rounds as usize,
                        bin_dir,
                        work_dir: work_dir.clone(),
                    }),
                    Err(error) => json!({ "error": error }),
                };
                let _ = std::fs::remove_dir_all(&work_dir);
                figures
            }
        };
        println!("{result}");
        return ExitCode::SUCCESS;
    }
    match run(&cli, &setup) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// The scale phase on its own: the rates it needs measured in this
/// process (`--rounds` times, each rate's best kept), the simulation's
/// tables, and the JSON line.
fn scale_run(cli: &Cli, setup: &Setup) -> Result<(), String> {
    eprintln!(
        "s3-export-bench --phase scale: {} events, {} tenants, seed {}",
        cli.events,
        cli.tenants(),
        cli.seed
    );
    let mut figures = scale_phase::measure(setup)?;
    for number in 2..=cli.rounds {
        eprintln!("s3-export-bench: round {number} of {}", cli.rounds);
        keep_best(&mut figures, &scale_phase::measure(setup)?);
    }
    println!(
        "s3-export-bench --phase scale  {} events, {} tenants, seed {}; machine {}, commit {}",
        cli.events,
        cli.tenants(),
        cli.seed,
        machine(),
        commit()
    );
    let scale = scale_phase::report(&cli.scale_options(&setup.config), &figures);
    println!();
    println!(
        "{}",
        json!({
            "events": cli.events,
            "tenants": cli.tenants(),
            "seed": cli.seed,
            "rounds": cli.rounds,
            "machine": machine(),
            "commit": commit(),
            "scale": scale,
            "phases": figures,
        })
    );
    Ok(())
}

/// Runs one phase in a child process of this binary; its JSON line.
fn child(cli: &Cli, args: &[&str], tenants: usize) -> Result<Value, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = Command::new(exe);
    command
        .args(["--events", &cli.events.to_string()])
        .args(["--tenants", &tenants.to_string()])
        .args(["--seed", &cli.seed.to_string()])
        .args(args);
    if let Some(level) = cli.staging_level {
        command.args(["--staging-level", &level.to_string()]);
    }
    if let Some(level) = cli.archive_level {
        command.args(["--archive-level", &level.to_string()]);
    }
    eprintln!("  running {}", args.join(" "));
    let output = command.output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "phase {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .map_err(|e| format!("phase {}: {e}", args.join(" ")))
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn run(cli: &Cli, setup: &Setup) -> Result<(), String> {
    let work = std::env::temp_dir().join(format!("s3-export-bench-{}", std::process::id()));
    let chunks = work.join("chunks");
    let chunks_one_tenant = work.join("chunks-one-tenant");
    for dir in [&chunks, &chunks_one_tenant] {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    eprintln!(
        "s3-export-bench: {} events, {} tenants, seed {}",
        cli.events,
        cli.tenants(),
        cli.seed
    );
    let round = || -> Result<Value, String> {
        for dir in [&chunks, &chunks_one_tenant] {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        let limit = child(cli, &["--phase", "limit"], cli.tenants())?;
        let levels = child(cli, &["--phase", "levels"], cli.tenants())?;
        let mut batcher = serde_json::Map::new();
        for style in Style::ALL {
            let mut args = vec!["--phase", "batcher", "--style", style.name()];
            let dir = path_arg(&chunks);
            if style == Style::Gzip {
                args.extend(["--chunks-dir", &dir]);
            }
            batcher.insert(style.name().to_owned(), child(cli, &args, cli.tenants())?);
        }
        // The same events for a hundred times fewer tenants: what the
        // tenant count does to the batcher's PUTs and to the cost.
        let mut few = serde_json::Map::new();
        for style in Style::ALL {
            let args = ["--phase", "batcher", "--style", style.name()];
            few.insert(
                style.name().to_owned(),
                child(cli, &args, cli.few_tenants())?,
            );
        }
        let flusher = child(
            cli,
            &["--phase", "flusher", "--chunks-dir", &path_arg(&chunks)],
            cli.tenants(),
        )?;
        // The same events for one tenant: partitions as large as they get.
        let dir = path_arg(&chunks_one_tenant);
        child(
            cli,
            &[
                "--phase",
                "batcher",
                "--style",
                "gzip",
                "--chunks-dir",
                &dir,
            ],
            1,
        )?;
        let flusher_large = child(cli, &["--phase", "flusher", "--chunks-dir", &dir], 1)?;
        Ok(json!({
            "limit": limit,
            "levels": levels,
            "batcher": batcher,
            "batcher_few_tenants": few,
            "flusher": flusher,
            "flusher_one_tenant": flusher_large,
        }))
    };
    let outcome = (|| -> Result<Value, String> {
        let mut best = round()?;
        for number in 2..=cli.rounds {
            eprintln!("s3-export-bench: round {number} of {}", cli.rounds);
            keep_best(&mut best, &round()?);
        }
        best["rounds"] = json!(cli.rounds);
        Ok(best)
    })();
    let _ = std::fs::remove_dir_all(&work);
    let mut figures = outcome?;
    figures["process"] = if cli.no_process {
        json!({"error": "skipped (--no-process)"})
    } else {
        let bin_dir = path_arg(&cli.bin_dir()?);
        let rounds = cli.process_rounds.to_string();
        let sweep_lines = cli
            .sweep_lines
            .unwrap_or(cli.process_lines() / 2)
            .to_string();
        child(
            cli,
            &[
                "--phase",
                "process",
                "--bin-dir",
                &bin_dir,
                "--process-rounds",
                &rounds,
                "--sweep-lines",
                &sweep_lines,
            ],
            cli.tenants(),
        )?
    };
    figures["cold_start"] = if cli.no_cold_start {
        Value::Null
    } else {
        let bin_dir = cli.bin_dir()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(cold_start::measure(&bin_dir))
    };
    report(cli, setup, &figures);
    Ok(())
}

/// Keeps, in `best`, every rate (`rate`, `limit_rate`, `staging_rate`,
/// `decompress_rate` of any phase) that `other` measured faster, and the
/// larger peak RSS.
fn keep_best(best: &mut Value, other: &Value) {
    let Some(fields) = best.as_object_mut() else {
        return;
    };
    for (name, value) in fields.iter_mut() {
        let Some(theirs) = other.get(name) else {
            continue;
        };
        let faster = |mine: &Value| f(theirs, "/mb_per_s") > f(mine, "/mb_per_s");
        match name.as_str() {
            "rate" | "limit_rate" | "staging_rate" | "decompress_rate" => {
                if faster(value) {
                    *value = theirs.clone();
                }
            }
            "rss_mb" => {
                if theirs.as_f64() > value.as_f64() {
                    *value = theirs.clone();
                }
            }
            _ => keep_best(value, theirs),
        }
    }
}

fn f(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpu}, {}", std::env::consts::ARCH)
}

fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A batcher figure of each producer style.
fn by_style(figures: &Value, pointer: &str) -> Value {
    Style::ALL
        .iter()
        .map(|style| {
            let figure = f(&figures["batcher"][style.name()], pointer);
            (style.name().to_owned(), json!(figure))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn report(cli: &Cli, setup: &Setup, figures: &Value) {
    let limit = &figures["limit"];
    let flusher = &figures["flusher"];
    let large = &figures["flusher_one_tenant"];
    let limit_rate = f(limit, "/rate/mb_per_s");
    let flusher_limit_rate = f(flusher, "/limit_rate/mb_per_s");
    let bytes = f(limit, "/bytes");
    println!();
    println!(
        "s3-export-bench  {} events ({:.0} MB NDJSON, {:.0} B an event), {} tenants, 2 streams, seed {}",
        cli.events,
        bytes / 1e6,
        bytes / cli.events as f64,
        cli.tenants(),
        cli.seed
    );
    println!(
        "machine {}, commit {}; rates are MB (10^6 B) of event NDJSON per CPU second, one thread",
        machine(),
        commit()
    );
    println!();
    println!(
        "{:<52} {:>9} {:>11} {:>8} {:>9}",
        "phase", "MB/s", "events/s", "ratio", "peak RSS"
    );
    let row = |name: String, figure: &Value, rate: &str, ratio: Option<f64>| {
        println!(
            "{:<52} {:>9.1} {:>11.0} {:>8} {:>6.1} MB",
            name,
            f(figure, &format!("{rate}/mb_per_s")),
            f(figure, &format!("{rate}/events_per_s")),
            ratio.map_or(String::new(), |r| format!("{r:.2}")),
            f(figure, "/rss_mb"),
        );
    };
    row(
        format!(
            "(L) gzip level {} of 6 MB blocks (the export's codec)",
            setup.config.archive_gzip_level
        ),
        limit,
        "/rate",
        None,
    );
    row(
        format!(
            "    zstd level {} of 6 MB blocks (the staging codec)",
            setup.config.staging_zstd_level
        ),
        limit,
        "/staging_rate",
        None,
    );
    let mut ratios = serde_json::Map::new();
    for style in Style::ALL {
        let figure = &figures["batcher"][style.name()];
        // Against the limit measured on the same events right after each
        // batch (the separate (L) phase above may have met another machine).
        let ratio = f(figure, "/rate/mb_per_s") / f(figure, "/limit_rate/mb_per_s");
        ratios.insert(style.name().to_owned(), json!(ratio));
        let what = match style {
            Style::One => "one event a message",
            Style::Ndjson => "NDJSON messages of 256 KiB",
            Style::Gzip => "gzip NDJSON messages of 256 KiB",
        };
        row(format!("(B) batcher, {what}"), figure, "/rate", Some(ratio));
    }
    row(
        format!(
            "(L) flusher limit: unzstd + gzip level {}",
            setup.config.archive_gzip_level
        ),
        flusher,
        "/limit_rate",
        None,
    );
    let flusher_ratio = f(flusher, "/rate/mb_per_s") / flusher_limit_rate;
    row(
        "(C) flusher compaction".to_owned(),
        flusher,
        "/rate",
        Some(flusher_ratio),
    );
    let large_ratio = f(large, "/rate/mb_per_s") / f(large, "/limit_rate/mb_per_s");
    row(
        format!(
            "(C) flusher compaction, 1 tenant ({:.0} MB partitions)",
            f(large, "/largest_partition_bytes") / 1e6
        ),
        large,
        "/rate",
        Some(large_ratio),
    );
    println!();
    println!(
        "staged (gzip style): {} {} holding {} pieces of {} partitions ({:.1} events a piece); archive parts {:.2}x smaller than the NDJSON",
        f(flusher, "/staged_files"),
        figures["batcher"]["gzip"]["staged"]["format"]
            .as_str()
            .unwrap_or("files"),
        f(flusher, "/staged_pieces"),
        f(flusher, "/partitions"),
        f(flusher, "/events") / f(flusher, "/staged_pieces"),
        f(flusher, "/bytes") / f(flusher, "/part_bytes"),
    );

    println!();
    println!(
        "compression of the corpus's NDJSON ({:.0} MB), one thread:",
        f(&figures["levels"], "/bytes") / 1e6
    );
    println!(
        "{:<10} {:>6} {:>14} {:>16} {:>7}",
        "codec", "level", "compress MB/s", "decompress MB/s", "ratio"
    );
    for level in figures["levels"]["levels"].as_array().into_iter().flatten() {
        println!(
            "{:<10} {:>6} {:>14.1} {:>16.1} {:>7.2}",
            level["codec"].as_str().unwrap_or_default(),
            level["level"],
            f(level, "/compress_mb_per_s"),
            f(level, "/decompress_mb_per_s"),
            f(level, "/ratio"),
        );
    }

    let mut cold = serde_json::Map::new();
    let mut binary = serde_json::Map::new();
    if let Some(functions) = figures["cold_start"].as_object() {
        println!();
        println!(
            "{:<10} {:>16} {:>12}",
            "function", "cold start ms", "binary MB"
        );
        for (name, figure) in functions {
            if let Some(error) = figure["error"].as_str() {
                println!("{name:<10} {error}");
                continue;
            }
            println!(
                "{:<10} {:>16.1} {:>12.1}",
                name,
                f(figure, "/cold_start_ms"),
                f(figure, "/binary_mb")
            );
            cold.insert(name.clone(), figure["cold_start_ms"].clone());
            binary.insert(name.clone(), figure["binary_mb"].clone());
        }
    }

    println!();
    println!(
        "batcher S3 PUTs per invocation (staged objects or chunks, and errors files; target: <= hours touched, +1 with rejects),"
    );
    println!(
        "at {} and {} tenants ({:.0} and {:.0} per million events):",
        cli.tenants(),
        cli.few_tenants(),
        cli.tenants() as f64 * 1e6 / cli.events as f64,
        cli.few_tenants() as f64 * 1e6 / cli.events as f64,
    );
    println!(
        "{:<10} {:>8} {:>12} {:>12} {:>10} {:>12} {:>12}",
        "style", "tenants", "invocations", "PUTs/inv", "max", "hours/inv", "over target"
    );
    let mut puts_per_invocation = serde_json::Map::new();
    for (run, tenants) in [
        ("batcher", cli.tenants()),
        ("batcher_few_tenants", cli.few_tenants()),
    ] {
        let mut by_style = serde_json::Map::new();
        for style in Style::ALL {
            let figure = &figures[run][style.name()];
            println!(
                "{:<10} {:>8} {:>12} {:>12.2} {:>10} {:>12.2} {:>12}",
                style.name(),
                tenants,
                f(figure, "/invocations"),
                f(figure, "/staged/puts_per_invocation"),
                f(figure, "/staged/puts_per_invocation_max"),
                f(figure, "/staged/hours_per_invocation"),
                f(figure, "/staged/invocations_over_target"),
            );
            by_style.insert(
                style.name().to_owned(),
                figure["staged"]["puts_per_invocation"].clone(),
            );
        }
        puts_per_invocation.insert(tenants.to_string(), by_style.into());
    }

    println!();
    println!(
        "cost per million 1 KB events, us-east-1 list prices (bytes scaled to 1 KB events; partition-hours at the run's events per partition):"
    );
    println!(
        "{:<8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>10}",
        "style",
        "tenants",
        "total",
        "Lambda",
        "SQS",
        "S3",
        "b. PUTs",
        "f. PUTs",
        "Firehose*",
        "ratio",
        "ingest**"
    );
    let mut costs = serde_json::Map::new();
    let mut partitioned = serde_json::Map::new();
    let mut ingest = serde_json::Map::new();
    let mut vs_firehose = serde_json::Map::new();
    let mut few_costs = serde_json::Map::new();
    for (run, tenants) in [
        ("batcher", cli.tenants()),
        ("batcher_few_tenants", cli.few_tenants()),
    ] {
        for style in Style::ALL {
            let measured = cost::Measured::from_phases(
                &figures[run][style.name()],
                flusher,
                setup.config.put_concurrency,
            );
            let cost = cost::per_million(&measured);
            println!(
                "{:<8} {:>8} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.0} {:>9.0} {:>10.4} {:>7.2}x {:>10.4}",
                style.name(),
                tenants,
                f(&cost, "/usd"),
                f(&cost, "/lambda_usd"),
                f(&cost, "/sqs_usd"),
                f(&cost, "/s3_usd"),
                f(&cost, "/batcher_s3_puts"),
                f(&cost, "/flusher_s3_puts"),
                f(&cost, "/firehose/partitioned_usd"),
                f(&cost, "/vs_firehose_partitioned"),
                f(&cost, "/firehose/ingest_usd"),
            );
            if run == "batcher" {
                costs.insert(style.name().to_owned(), cost["usd"].clone());
                partitioned.insert(
                    style.name().to_owned(),
                    cost["firehose"]["partitioned_usd"].clone(),
                );
                ingest.insert(
                    style.name().to_owned(),
                    cost["firehose"]["ingest_usd"].clone(),
                );
                vs_firehose.insert(
                    style.name().to_owned(),
                    cost["vs_firehose_partitioned"].clone(),
                );
                costs.insert(format!("{}_detail", style.name()), cost);
            } else {
                few_costs.insert(style.name().to_owned(), cost);
            }
        }
    }
    println!(
        "*  Firehose partitioned by tenant: uncompressed records (5 KB steps), per GB delivered, >= 4 objects per partition-hour (fee + S3 PUT)"
    );
    println!("** Firehose ingestion only, of the records as sent (no per-tenant files)");
    println!(
        "b./f. PUTs: the batcher's and the flusher's S3 PUT-class requests; ratio: total / Firehose partitioned"
    );

    let intervals = report_intervals(cli, setup, figures);

    report_process(&figures["process"]);
    let scale = scale_phase::report(&cli.scale_options(&setup.config), figures);

    let batcher_rss = Style::ALL
        .iter()
        .map(|style| f(&figures["batcher"][style.name()], "/rss_mb"))
        .fold(0.0, f64::max);
    let mut summary = json!({
        "events": cli.events,
        "tenants": cli.tenants(),
        "few_tenants": cli.few_tenants(),
        "cost_per_interval": intervals,
        "seed": cli.seed,
        "event_bytes": bytes / cli.events as f64,
        "machine": machine(),
        "commit": commit(),
        "staging_zstd_level": setup.config.staging_zstd_level,
        "archive_gzip_level": setup.config.archive_gzip_level,
        "limit_mb_s": limit_rate,
        "staging_codec_mb_s": f(limit, "/staging_rate/mb_per_s"),
        "batcher_mb_s": by_style(figures, "/rate/mb_per_s"),
        "batcher_events_s": by_style(figures, "/rate/events_per_s"),
        "batcher_vs_limit": ratios["ndjson"],
        "batcher_vs_limit_by_style": ratios,
        "flusher_limit_mb_s": flusher_limit_rate,
        "flusher_mb_s": f(flusher, "/rate/mb_per_s"),
        "flusher_events_s": f(flusher, "/rate/events_per_s"),
        "flusher_vs_limit": flusher_ratio,
        "flusher_vs_limit_one_tenant": large_ratio,
        "batcher_rss_mb": batcher_rss,
        "largest_sqs_event_mb": f(&figures["batcher"]["gzip"], "/largest_sqs_event_bytes") / 1e6,
        "flusher_rss_mb": f(flusher, "/rss_mb"),
        "flusher_rss_mb_one_tenant": f(large, "/rss_mb"),
        "largest_partition_mb": f(large, "/largest_partition_bytes") / 1e6,
        "cold_start_ms": cold,
        "binary_mb": binary,
        "cost_per_million_usd": costs,
        "firehose_partitioned_per_million_usd": partitioned,
        "firehose_ingest_per_million_usd": ingest,
        "vs_firehose_partitioned": vs_firehose,
        "cost_per_million_few_tenants": few_costs,
        "batcher_puts_per_invocation": puts_per_invocation,
        "levels": figures["levels"]["levels"],
        "scale": scale,
        "phases": figures,
    });
    // The process phase's headline figures, at the top level too (null
    // when it did not run).
    for (name, field) in [
        ("process_cpu_seconds", "process_cpu_seconds"),
        ("process_cpu_batcher_seconds", "process_cpu_batcher_seconds"),
        ("process_cpu_flusher_seconds", "process_cpu_flusher_seconds"),
        ("gzip6_cpu_seconds", "gzip6_cpu_seconds"),
        ("process_cpu_vs_gzip6", "process_cpu_vs_gzip6"),
        (
            "process_cpu_vs_vector_estimate",
            "process_cpu_vs_vector_estimate",
        ),
        ("process_batcher_rss_mb", "batcher_peak_rss_mb"),
        ("process_flusher_rss_mb", "flusher_peak_rss_mb"),
        ("flusher_rss_by_partition", "flusher_rss_by_partition"),
        (
            "flusher_rss_largest_vs_smallest",
            "flusher_rss_largest_vs_smallest",
        ),
        (
            "flusher_rss_mb_per_million_lines",
            "flusher_rss_mb_per_million_lines",
        ),
        ("flusher_rss_publishing", "flusher_rss_publishing"),
        (
            "publish_rss_largest_difference_mb",
            "publish_rss_largest_difference_mb",
        ),
    ] {
        summary[name] = figures["process"][field].clone();
    }
    println!();
    println!("{summary}");
}

/// MB (10^6 B) as MiB, the unit of Lambda's payload limit.
fn mib(mb: f64) -> f64 {
    mb * 1e6 / (1024.0 * 1024.0)
}

/// The process phase's table: CPU seconds of the functions as processes
/// beside gzip -6, and peak RSS (batcher, and flusher by partition size).
/// The cost per delivery interval (issue 18) of the gzip producer style at
/// the run's tenants, reshaped to each of `--interval-tenants`: printed,
/// and its rows (every style's) for the summary.
fn report_intervals(cli: &Cli, setup: &Setup, figures: &Value) -> Value {
    let config = &setup.config;
    let delivery = cost::Delivery {
        interval: Interval::Hourly,
        grace_minutes: config.flush_grace_minutes as u32,
        staying: cost::Staying::Deleted,
        flush_concurrency: config.flush_concurrency as f64,
        read_concurrency: config.read_concurrency as f64,
    };
    let mut by_style = serde_json::Map::new();
    for style in Style::ALL {
        let measured = cost::Measured::from_phases(
            &figures["batcher"][style.name()],
            &figures["flusher"],
            config.put_concurrency,
        );
        let rows = cost::interval_rows(
            &measured,
            cli.tenants() as f64,
            &cli.interval_tenants,
            &cli.intervals,
            delivery,
        );
        by_style.insert(style.name().to_owned(), rows.into());
    }
    println!();
    println!(
        "cost per delivery interval (issue 18), gzip NDJSON messages, a million 1 KB events an hour from N tenants on two streams, one destination each, every partition with events in every interval; Firehose buffering as long (at most 900 s):"
    );
    println!(
        "{:>7} {:>6} {:>5} | {:>9} {:>11} {:>7} | {:>9} {:>11} | {:>9} {:>6} {:>6} | {:>9} {:>6}",
        "tenants",
        "every",
        "runs",
        "$/M",
        "$/tenant-h",
        "PUTs/ph",
        "kept $/M",
        "$/tenant-h",
        "Firehose",
        "ratio",
        "kept",
        "obj. fees",
        "ratio"
    );
    for row in by_style["gzip"].as_array().into_iter().flatten() {
        let (deleted, kept) = (&row["deleted"], &row["kept"]);
        let minutes = f(row, "/interval_minutes");
        println!(
            "{:>7} {:>6} {:>5} | {:>9.4} {:>11.6} {:>7.2} | {:>9.4} {:>11.6} | {:>9.4} {:>5.2}x {:>5.2}x | {:>9.4} {:>5.2}x",
            f(row, "/tenants"),
            if minutes >= 60.0 {
                "hourly".to_owned()
            } else {
                format!("{minutes} min")
            },
            f(deleted, "/runs_per_hour"),
            f(deleted, "/usd"),
            f(deleted, "/per_tenant_hour_usd"),
            f(deleted, "/flusher_puts_per_partition_hour"),
            f(kept, "/usd"),
            f(kept, "/per_tenant_hour_usd"),
            f(deleted, "/firehose/partitioned_usd"),
            f(deleted, "/vs_firehose_partitioned"),
            f(kept, "/vs_firehose_partitioned"),
            f(deleted, "/firehose/partitioned_objects_usd"),
            f(deleted, "/vs_firehose_object_fees"),
        );
    }
    println!(
        "$/M: s3-export per million events, staged objects deleted by each run (every partition in them has the interval); kept: objects staying until the close (re-read by every run); PUTs/ph: the flusher's PUT-class requests a partition-hour (deleted)"
    );
    println!(
        "Firehose: partitioned, per million events; ratio: s3-export / Firehose (deleted, kept); obj. fees: Firehose's per-object fee and the destination PUT of each object alone; ratio: s3-export (deleted) / them"
    );
    by_style.into()
}

fn report_process(process: &Value) {
    println!();
    if let Some(error) = process["error"].as_str() {
        println!(
            "process CPU and RSS (the functions' binaries through the Runtime API): not measured: {error}"
        );
        return;
    }
    let lines = f(process, "/lines");
    println!(
        "process CPU, the whole pipeline: the {} batcher and flusher binaries as processes through the Runtime API against moto_server",
        match process["profile"].as_str() {
            Some("release") => "release".to_owned(),
            other => format!(
                "{} (not release: the figures mean nothing)",
                other.unwrap_or("unknown")
            ),
        },
    );
    println!(
        "({lines:.0} lines of {:.0} B, generic stream by service, NDJSON bodies of 256 KiB in {:.0} SQS events of up to {:.2} MiB; \
         CPU seconds of each process, moto's excluded), {} alternating rounds:",
        f(process, "/line_bytes"),
        f(process, "/invocations"),
        mib(f(process, "/largest_sqs_event_mb")),
        f(process, "/rounds"),
    );
    if lines < process::TARGET_LINES as f64 {
        println!(
            "  ({lines:.0} lines, fewer than the target's {}: a smaller run's figures, not the target's)",
            process::TARGET_LINES
        );
    }
    println!("{:<40} {:>9} {:>16}", "", "median", "min-max");
    for (name, pointer) in [
        ("batcher CPU seconds", "/detail/batcher"),
        ("flusher CPU seconds", "/detail/flusher"),
        ("total CPU seconds", "/detail/total"),
        ("gzip -6 of the same lines, CPU seconds", "/detail/gzip6"),
        ("total / gzip -6 (each round's)", "/detail/vs_gzip6"),
    ] {
        let figure = &process.pointer(pointer).cloned().unwrap_or_default();
        println!(
            "{:<40} {:>9.2} {:>7.2}-{:<8.2}",
            name,
            f(figure, "/median"),
            f(figure, "/min"),
            f(figure, "/max"),
        );
    }
    println!(
        "{:<40} {:>9.2}   (target <= 0.55; Vector 0.57.0 = {:.2}x gzip -6, issue 16; gzip here: {})",
        "estimated CPU vs Vector",
        f(process, "/process_cpu_vs_vector_estimate"),
        process::VECTOR_VS_GZIP6,
        process["gzip_version"].as_str().unwrap_or("unknown"),
    );
    let codec = |name: &str| f(process, &format!("/codec_cpu_seconds/{name}"));
    println!(
        "codecs alone on the same lines (in-process, one thread): batcher zstd level {} {:.2} s; flusher unzstd {:.2} s + gzip level {} (zlib-rs) {:.2} s",
        process["codec_cpu_seconds"]["staging_zstd_level"],
        codec("staging_zstd"),
        codec("staging_unzstd"),
        process["codec_cpu_seconds"]["archive_gzip_level"],
        codec("archive_gzip"),
    );
    println!(
        "batcher peak RSS {:.1} MB at SQS events of up to {:.2} MiB (Lambda's limit: 6 MiB; target <= 128 MB); flusher peak RSS {:.1} MB",
        f(process, "/batcher_peak_rss_mb"),
        mib(f(process, "/largest_sqs_event_mb")),
        f(process, "/flusher_peak_rss_mb"),
    );
    println!(
        "flusher peak RSS by partition size (one tenant's partition, archive parts of {:.0} MiB; target: flat):",
        f(process, "/sweep_part_max_bytes") / 1024.0 / 1024.0
    );
    println!(
        "{:>10} {:>14} {:>8} {:>14} {:>12}",
        "lines", "partition MB", "parts", "peak RSS MB", "CPU seconds"
    );
    for size in process["flusher_rss_by_partition"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "{:>10} {:>14.1} {:>8} {:>14.1} {:>12.2}",
            f(size, "/lines"),
            f(size, "/partition_mb"),
            f(size, "/parts"),
            f(size, "/flusher_rss_mb"),
            f(size, "/flusher_cpu_seconds"),
        );
    }
    println!(
        "largest / smallest peak RSS: {:.2} (flat: 1.00); {:.1} MB more a million lines more",
        f(process, "/flusher_rss_largest_vs_smallest"),
        f(process, "/flusher_rss_mb_per_million_lines"),
    );
    println!(
        "flusher peak RSS publishing one part (one tenant's partition) to a destination in the archive's format (streamed unchanged) and in plain NDJSON (rewritten as it streams); target: the difference flat, not growing with the part:"
    );
    println!(
        "{:>10} {:>10} {:>10} {:>16} {:>14} {:>12}",
        "lines", "part MB", "NDJSON MB", "archive-fmt RSS", "NDJSON RSS", "difference"
    );
    for size in process["flusher_rss_publishing"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "{:>10} {:>10.1} {:>10.1} {:>16.1} {:>14.1} {:>12.1}",
            f(size, "/lines"),
            f(size, "/archive_part_mb"),
            f(size, "/ndjson_part_mb"),
            f(size, "/archive_format_rss_mb"),
            f(size, "/ndjson_rss_mb"),
            f(size, "/difference_mb"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_keep_each_rate_at_its_best_and_the_largest_memory() {
        let round = |limit: f64, batcher: f64, compaction: f64, rss: f64| {
            json!({
                "limit": {"rate": {"mb_per_s": limit}, "rss_mb": rss},
                "batcher": {"ndjson": {"rate": {"mb_per_s": batcher}, "events": 7}},
                "flusher": {"limit_rate": {"mb_per_s": limit}, "rate": {"mb_per_s": compaction}},
            })
        };
        let mut best = round(50.0, 30.0, 20.0, 10.0);
        keep_best(&mut best, &round(40.0, 45.0, 25.0, 12.0));
        keep_best(&mut best, &round(55.0, 35.0, 15.0, 11.0));
        assert_eq!(best, round(55.0, 45.0, 25.0, 12.0));
    }
}
