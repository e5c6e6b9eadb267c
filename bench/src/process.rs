//! The process phase: the compiled batcher and flusher, run as Lambda runs
//! them (each its own process polling the Runtime API emulator of
//! `src/runtime_api.rs`, talking to a private moto_server), on the issue's
//! generic service logs ([`LogLines`]). It measures each function's own
//! CPU seconds (SDK, HTTP and JSON work included, moto's excluded) and peak
//! RSS, beside GNU `gzip -6` of the same lines as a machine-independent
//! yardstick, in alternating rounds; then the flusher's peak RSS flushing
//! one tenant's partition at three sizes; then its peak RSS publishing one
//! archive part as large as the partition, at two sizes, to the archive's
//! format (streamed unchanged) and to plain NDJSON (decompressed and
//! rewritten as it streams): what publishing holds shows as the difference,
//! which must not grow with the part. Every run reads the destination back
//! and checks that each line was exported exactly once.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use s3_export::inspect::{StoredFile, read_export_files};
use s3_export::moto::MotoServer;
use s3_export::runtime_api::{Answer, RuntimeApi, lambda_command};
use serde_json::{Value, json};

use crate::corpus::{LOG_SERVICES, LOG_STREAM, LogLines, Messages, SENT_MILLIS, SqsEvents, Style};
use crate::measure::{ProcessUsage, Timer, median, process_usage, run_measured};

/// The issue's figure: 200,000 lines (a smaller `--events` scales it down).
pub const TARGET_LINES: usize = 200_000;
/// Vector 0.57.0's CPU on the same lines, as a multiple of `gzip -6`'s,
/// measured side by side on a machine like the benchmark's (issue 16:
/// 5.17 s against 2.92 s).
pub const VECTOR_VS_GZIP6: f64 = 5.17 / 2.92;
/// The flusher's archive parts roll over at this many compressed bytes in
/// the RSS sweep (the setting's least), so its largest partition is many
/// parts and the smallest few.
pub const SWEEP_PART_MAX_BYTES: usize = 1024 * 1024;
/// The sweep's partition sizes, as multiples of the smallest.
pub const SWEEP_FACTORS: [usize; 3] = [1, 2, 4];
/// The publishing sweep's part sizes, as fractions of the CPU rounds' lines
/// (the whole of them: 127 MB of NDJSON at the target's 200,000).
pub const PUBLISH_DIVISORS: [usize; 2] = [4, 1];

const EXPORT_BUCKET: &str = "exports";
const DESTINATION_BUCKET: &str = "customer-bucket";
const DESTINATION_PREFIX: &str = "exports/";
/// How long one invocation may take (a debug build on a busy machine).
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(600);
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the phase runs on, and where.
pub struct Options {
    /// Lines of the CPU rounds.
    pub lines: usize,
    /// Lines of the RSS sweep's largest partition (by default half the
    /// CPU rounds'; larger to show the memory's slope further out).
    pub sweep_lines: usize,
    pub seed: u64,
    pub rounds: usize,
    /// Where the `batcher` and `flusher` binaries are.
    pub bin_dir: PathBuf,
    /// Scratch space: the lines file, spool files, the functions' logs.
    pub work_dir: PathBuf,
}

/// The phase's figures as JSON; `{"error": …}` when it could not run
/// (binaries or moto_server missing, or a function failed).
pub fn measure(options: &Options) -> Value {
    let outcome = (|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(run(options))
    })();
    outcome.unwrap_or_else(|error| json!({ "error": error }))
}

/// One batcher-then-flusher run's figures.
struct PipelineRun {
    batcher: ProcessUsage,
    flusher: ProcessUsage,
    invocations: usize,
    largest_sqs_event_bytes: usize,
    /// Destination files (archive parts published) of the run.
    files: usize,
    /// Their bytes, as stored.
    file_bytes: usize,
}

async fn run(options: &Options) -> Result<Value, String> {
    let bin_dir = &options.bin_dir;
    for name in ["batcher", "flusher"] {
        if !bin_dir.join(name).is_file() {
            return Err(format!(
                "{} is missing: cargo build --release --workspace --bins",
                bin_dir.join(name).display()
            ));
        }
    }
    std::fs::create_dir_all(&options.work_dir).map_err(|e| e.to_string())?;
    let pipeline = Pipeline {
        bin_dir,
        work_dir: &options.work_dir,
    };

    // The same lines twice: a file for gzip, SQS events for the batcher.
    let mut lines_bytes = Vec::new();
    for event in LogLines::new(options.lines, options.seed) {
        lines_bytes.extend_from_slice(event.text.as_bytes());
        lines_bytes.push(b'\n');
    }
    let line_bytes = lines_bytes.len();
    let lines_path = options.work_dir.join("lines.ndjson");
    std::fs::write(&lines_path, &lines_bytes)
        .map_err(|e| format!("{}: {e}", lines_path.display()))?;
    let events = sqs_events(LogLines::new(options.lines, options.seed));

    let mut rounds = Vec::new();
    let mut codecs = Vec::new();
    for round in 1..=options.rounds {
        eprintln!(
            "  process round {round} of {}: gzip -6, then batcher and flusher",
            options.rounds
        );
        let gzip = run_measured(
            std::process::Command::new("gzip")
                .args(["-6", "-c"])
                .arg(&lines_path)
                .stdout(Stdio::null()),
        )
        .map_err(|error| format!("gzip -6 (the yardstick): {error}"))?;
        let run = pipeline.run(&events, options.lines, &[]).await?;
        rounds.push((gzip, run));
        codecs.push(codec_floor(&lines_bytes));
    }
    drop(lines_bytes);
    let _ = std::fs::remove_file(&lines_path);
    drop(events);

    // The flusher's memory by partition size: one tenant, three sizes.
    let smallest = (options.sweep_lines / SWEEP_FACTORS[SWEEP_FACTORS.len() - 1]).max(1);
    let mut sweep = Vec::new();
    for factor in SWEEP_FACTORS {
        let lines = smallest * factor;
        eprintln!("  flusher RSS: one partition of {lines} lines");
        let events = sqs_events(LogLines::of_service(lines, options.seed, LOG_SERVICES[0]));
        let part_max = SWEEP_PART_MAX_BYTES.to_string();
        let run = pipeline
            .run(&events, lines, &[("ARCHIVE_PART_MAX_BYTES", &part_max)])
            .await?;
        let ndjson_bytes: usize = events.iter().map(|e| e.event_bytes).sum();
        sweep.push(json!({
            "lines": lines,
            "partition_mb": ndjson_bytes as f64 / 1e6,
            "parts": run.files,
            "flusher_rss_mb": run.flusher.peak_rss_mb,
            "flusher_cpu_seconds": run.flusher.cpu_seconds,
        }));
    }
    let publish = publish_sweep(&pipeline, options).await?;
    let mut figures = summary(options, line_bytes, &rounds, sweep);
    figures["publish_rss_largest_difference_mb"] = publish
        .last()
        .map(|size| size["difference_mb"].clone())
        .unwrap_or_default();
    figures["flusher_rss_publishing"] = publish.into();
    // The yardstick is GNU gzip's; say which one measured it.
    figures["gzip_version"] = std::process::Command::new("gzip")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .into();
    let codec =
        |figure: fn(&CodecFloor) -> f64| median(&codecs.iter().map(figure).collect::<Vec<_>>());
    figures["codec_cpu_seconds"] = json!({
        "staging_zstd": codec(|c| c.staging_zstd),
        "staging_unzstd": codec(|c| c.staging_unzstd),
        "archive_gzip": codec(|c| c.archive_gzip),
        "staging_zstd_level": shared::staged::DEFAULT_STAGING_ZSTD_LEVEL,
        "archive_gzip_level": shared::config::defaults::ARCHIVE_GZIP_LEVEL,
    });
    Ok(figures)
}

/// The flusher's peak RSS publishing one tenant's partition as one archive
/// part (the default part size) of each of [`PUBLISH_DIVISORS`]' sizes, to
/// a destination in the archive's format and to a plain NDJSON one, each in
/// its own run: the NDJSON run decompresses and rewrites the part, so what
/// it holds beyond the other run's is what publishing costs in memory.
async fn publish_sweep(pipeline: &Pipeline<'_>, options: &Options) -> Result<Vec<Value>, String> {
    let mut sizes = Vec::new();
    for divisor in PUBLISH_DIVISORS {
        let lines = (options.lines / divisor).max(1);
        let events = sqs_events(LogLines::of_service(lines, options.seed, LOG_SERVICES[0]));
        let mut runs = Vec::new();
        for format in ["gzip", "ndjson"] {
            eprintln!("  flusher RSS: publishing one part of {lines} lines as {format}");
            runs.push(
                pipeline
                    .run(&events, lines, &[("DESTINATION_FORMAT", format)])
                    .await?,
            );
        }
        let (archive, ndjson) = (&runs[0], &runs[1]);
        sizes.push(json!({
            "lines": lines,
            "parts": ndjson.files,
            "archive_part_mb": archive.file_bytes as f64 / 1e6,
            "ndjson_part_mb": ndjson.file_bytes as f64 / 1e6,
            "archive_format_rss_mb": archive.flusher.peak_rss_mb,
            "ndjson_rss_mb": ndjson.flusher.peak_rss_mb,
            "difference_mb": ndjson.flusher.peak_rss_mb - archive.flusher.peak_rss_mb,
            "ndjson_cpu_seconds": ndjson.flusher.cpu_seconds,
            "archive_format_cpu_seconds": archive.flusher.cpu_seconds,
        }));
    }
    Ok(sizes)
}

/// The codecs' own work on the same lines, in this process, one thread:
/// what the batcher cannot spend less than (zstd at the staging level) and
/// what the flusher cannot (zstd decoding, gzip at the archive level with
/// its zlib-rs), so a reader can tell them from the rest.
struct CodecFloor {
    staging_zstd: f64,
    staging_unzstd: f64,
    archive_gzip: f64,
}

/// Blocks of about a staged segment's size.
const CODEC_BLOCK_BYTES: usize = 4 * 1024 * 1024;

fn codec_floor(lines: &[u8]) -> CodecFloor {
    let (mut zstd, mut unzstd, mut gzip) = (Timer::default(), Timer::default(), Timer::default());
    let level = shared::staged::DEFAULT_STAGING_ZSTD_LEVEL;
    let gzip_level = flate2::Compression::new(shared::config::defaults::ARCHIVE_GZIP_LEVEL);
    for block in lines.chunks(CODEC_BLOCK_BYTES) {
        let packed = zstd.time(|| zstd::bulk::compress(block, level).expect("zstd in memory"));
        let unpacked =
            unzstd.time(|| zstd::bulk::decompress(&packed, block.len()).expect("zstd in memory"));
        gzip.time(|| {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), gzip_level);
            encoder.write_all(&unpacked).expect("gzip in memory");
            encoder.finish().expect("gzip in memory")
        });
    }
    CodecFloor {
        staging_zstd: zstd.cpu_seconds,
        staging_unzstd: unzstd.cpu_seconds,
        archive_gzip: gzip.cpu_seconds,
    }
}

/// The figures of the rounds (medians, min-max) and of the sweep.
fn summary(
    options: &Options,
    line_bytes: usize,
    rounds: &[(ProcessUsage, PipelineRun)],
    sweep: Vec<Value>,
) -> Value {
    let series = |figure: &dyn Fn(&(ProcessUsage, PipelineRun)) -> f64| -> Vec<f64> {
        rounds.iter().map(figure).collect()
    };
    let batcher = series(&|(_, run)| run.batcher.cpu_seconds);
    let flusher = series(&|(_, run)| run.flusher.cpu_seconds);
    let total = series(&|(_, run)| run.batcher.cpu_seconds + run.flusher.cpu_seconds);
    let gzip = series(&|(gzip, _)| gzip.cpu_seconds);
    // Each round against the yardstick measured beside it.
    let vs_gzip: Vec<f64> = total.iter().zip(&gzip).map(|(t, g)| t / g).collect();
    let figure = |values: &[f64]| {
        json!({
            "median": median(values),
            "min": values.iter().copied().fold(f64::INFINITY, f64::min),
            "max": values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            "rounds": values,
        })
    };
    let vs_gzip_median = median(&vs_gzip);
    let rss = |values: Vec<f64>| values.into_iter().fold(0.0, f64::max);
    let sweep_at = |index: usize, field: &str| {
        sweep
            .get(index)
            .and_then(|size| size[field].as_f64())
            .unwrap_or(f64::NAN)
    };
    let last = sweep.len().saturating_sub(1);
    let (rss_smallest, rss_largest) = (
        sweep_at(0, "flusher_rss_mb"),
        sweep_at(last, "flusher_rss_mb"),
    );
    // What is not flat: MB more for each million more lines in the
    // partition (its de-duplication set, for one, grows with its events).
    let rss_slope =
        (rss_largest - rss_smallest) / (sweep_at(last, "lines") - sweep_at(0, "lines")) * 1e6;
    json!({
        "lines": options.lines,
        "line_bytes": line_bytes as f64 / options.lines as f64,
        "ndjson_mb": line_bytes as f64 / 1e6,
        "rounds": rounds.len(),
        // The binaries' build profile, from their folder (target/<profile>).
        "profile": options.bin_dir.file_name().map(|name| name.to_string_lossy()),
        "invocations": rounds.first().map(|(_, run)| run.invocations),
        "largest_sqs_event_mb": rounds
            .first()
            .map(|(_, run)| run.largest_sqs_event_bytes as f64 / 1e6),
        "destination_files": rounds.first().map(|(_, run)| run.files),
        "process_cpu_seconds": median(&total),
        "process_cpu_batcher_seconds": median(&batcher),
        "process_cpu_flusher_seconds": median(&flusher),
        "gzip6_cpu_seconds": median(&gzip),
        "process_cpu_vs_gzip6": vs_gzip_median,
        "process_cpu_vs_vector_estimate": vs_gzip_median / VECTOR_VS_GZIP6,
        "detail": {
            "total": figure(&total),
            "batcher": figure(&batcher),
            "flusher": figure(&flusher),
            "gzip6": figure(&gzip),
            "vs_gzip6": figure(&vs_gzip),
        },
        "batcher_peak_rss_mb": rss(series(&|(_, run)| run.batcher.peak_rss_mb)),
        "flusher_peak_rss_mb": rss(series(&|(_, run)| run.flusher.peak_rss_mb)),
        "flusher_rss_by_partition": sweep,
        "flusher_rss_largest_vs_smallest": rss_largest / rss_smallest,
        "flusher_rss_mb_per_million_lines": rss_slope,
        "sweep_part_max_bytes": SWEEP_PART_MAX_BYTES,
    })
}

/// One SQS event as Lambda delivers it to the batcher.
struct SqsEvent {
    json: Vec<u8>,
    /// The NDJSON bytes of the lines it carries.
    event_bytes: usize,
}

/// `lines` as producers send them: NDJSON bodies of up to 256 KiB (the
/// producer crate's packing), in SQS events of up to 6 MB.
fn sqs_events(lines: LogLines) -> Vec<SqsEvent> {
    SqsEvents::new(Messages::new(lines, Style::Ndjson))
        .map(|event| SqsEvent {
            json: event.json,
            event_bytes: event.event_bytes,
        })
        .collect()
}

/// The configuration both functions get: a generic stream keyed by service,
/// and one destination (gzip, the archive's encoding) selecting it.
fn export_config() -> String {
    json!({
        "streams": {
            LOG_STREAM: {
                "profile": "generic",
                "tenant": "/service",
                "id": "/event_id",
                "time": "/timestamp",
            }
        },
        "defaultStream": LOG_STREAM,
    })
    .to_string()
}

/// Where the functions run from and write their logs and spool files.
struct Pipeline<'a> {
    bin_dir: &'a Path,
    work_dir: &'a Path,
}

impl Pipeline<'_> {
    /// A fresh moto_server; the batcher process serves every event, then
    /// the flusher process flushes the hour (with `flusher_env` added);
    /// each process's usage is read while it waits for its next event. The
    /// destination must then hold each of the `lines` lines exactly once.
    async fn run(
        &self,
        events: &[SqsEvent],
        lines: usize,
        flusher_env: &[(&str, &str)],
    ) -> Result<PipelineRun, String> {
        let moto = MotoServer::start().await.map_err(|e| e.to_string())?;
        let s3 = moto.s3_client().await;
        for bucket in [EXPORT_BUCKET, DESTINATION_BUCKET] {
            s3.create_bucket()
                .bucket(bucket)
                .send()
                .await
                .map_err(|e| format!("creating bucket {bucket} in moto: {e:?}"))?;
        }

        let (batcher_runtime, mut batcher) = self.start("batcher", &moto, &[]).await?;
        for (number, event) in events.iter().enumerate() {
            let payload = serde_json::from_slice(&event.json).map_err(|e| e.to_string())?;
            let answer = self.answer("batcher", &batcher_runtime, payload).await?;
            let failures = &answer["batchItemFailures"];
            if failures.as_array().is_none_or(|f| !f.is_empty()) {
                return Err(format!(
                    "the batcher failed records of SQS event {number}: {failures}"
                ));
            }
        }
        let batcher_usage = idle_usage(&batcher).await?;
        let _ = batcher.kill().await;

        let spool = self.work_dir.join("spool");
        std::fs::create_dir_all(&spool).map_err(|e| e.to_string())?;
        let spool = spool.to_string_lossy().into_owned();
        let mut env = vec![("SPOOL_DIR", spool.as_str())];
        env.extend_from_slice(flusher_env);
        let (flusher_runtime, mut flusher) = self.start("flusher", &moto, &env).await?;
        // The hour the batcher staged (by ingest time) and the next have closed.
        let until =
            shared::time::format_rfc3339_millis(SENT_MILLIS / 3_600_000 * 3_600_000 + 7_200_000);
        let report = self
            .answer(
                "flusher",
                &flusher_runtime,
                json!({"flush": {"until": until}}),
            )
            .await?;
        if report["events"].as_u64() != Some(lines as u64) || report["failed"] != 0 {
            return Err(format!(
                "the flusher exported {} of {lines} lines: {report}",
                report["events"]
            ));
        }
        let flusher_usage = idle_usage(&flusher).await?;
        let _ = flusher.kill().await;

        let (files, file_bytes) = exported_once(&s3, lines).await?;
        Ok(PipelineRun {
            batcher: batcher_usage,
            flusher: flusher_usage,
            invocations: events.len(),
            largest_sqs_event_bytes: events.iter().map(|e| e.json.len()).max().unwrap_or(0),
            files,
            file_bytes,
        })
    }

    /// Starts function `name` with the run's configuration (and `env`),
    /// its output in a log file; returns once it polls for an event.
    async fn start(
        &self,
        name: &str,
        moto: &MotoServer,
        env: &[(&str, &str)],
    ) -> Result<(RuntimeApi, tokio::process::Child), String> {
        let runtime = RuntimeApi::start().await.map_err(|e| e.to_string())?;
        let log = std::fs::File::create(self.log_path(name)).map_err(|e| e.to_string())?;
        let mut command = lambda_command(&self.bin_dir.join(name), &runtime, &moto.endpoint());
        command
            .env("EXPORT_BUCKET", EXPORT_BUCKET)
            .env("EXPORT_CONFIG", export_config())
            .env("DESTINATION_BUCKET", DESTINATION_BUCKET)
            .env("DESTINATION_PREFIX", DESTINATION_PREFIX)
            .env("DESTINATION_FORMAT", "gzip")
            .env(
                "FUNCTION_ROLE_ARN",
                "arn:aws:iam::123456789012:role/s3-export-writer",
            )
            // The template's default LogLevel: what a deployment logs.
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        for (variable, value) in env {
            command.env(variable, value);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("{}: {e}", self.bin_dir.join(name).display()))?;
        runtime
            .first_poll(START_TIMEOUT)
            .await
            .map_err(|e| format!("{name}: {e}; {}", self.log_tail(name)))?;
        Ok((runtime, child))
    }

    /// The response of `name` to `payload`; its error, or its silence, is
    /// an error quoting its log.
    async fn answer(
        &self,
        name: &str,
        runtime: &RuntimeApi,
        payload: Value,
    ) -> Result<Value, String> {
        match runtime.invoke(payload, INVOCATION_TIMEOUT).await {
            Ok(Answer::Response(value)) => Ok(value),
            Ok(Answer::Error(error)) => Err(format!(
                "the {name} failed: {error}; {}",
                self.log_tail(name)
            )),
            Err(error) => Err(format!("the {name}: {error:#}; {}", self.log_tail(name))),
        }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.work_dir.join(format!("{name}.log"))
    }

    fn log_tail(&self, name: &str) -> String {
        let log = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "its log ends:\n{}",
            lines[lines.len().saturating_sub(10)..].join("\n")
        )
    }
}

/// What `child` has spent once it is idle: it answers before it polls for
/// the next event, so its usage is read until two reads 50 ms apart agree.
async fn idle_usage(child: &tokio::process::Child) -> Result<ProcessUsage, String> {
    let pid = child.id().ok_or("the function process has exited")?;
    let mut last = process_usage(pid)?;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = process_usage(pid)?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}

/// Reads the destination back (in its format): every line of `0..lines`
/// by `seq`, each exactly once; the number of files and their bytes.
async fn exported_once(s3: &aws_sdk_s3::Client, lines: usize) -> Result<(usize, usize), String> {
    let files = read_export_files(s3, DESTINATION_BUCKET, DESTINATION_PREFIX)
        .await
        .map_err(|e| format!("reading the destination back: {e:#}"))?;
    check_once(&files, lines)?;
    Ok((files.len(), files.iter().map(|file| file.size).sum()))
}

/// Whether `files` hold every line of `0..lines` (by `seq`) exactly once.
fn check_once(files: &[StoredFile], lines: usize) -> Result<(), String> {
    let mut seen = HashSet::with_capacity(lines);
    for file in files {
        for line in &file.lines {
            let seq =
                seq_of(line).ok_or_else(|| format!("{}: a line without seq: {line}", file.key))?;
            if seq >= lines || !seen.insert(seq) {
                return Err(format!(
                    "{}: line seq {seq} exported twice or never sent",
                    file.key
                ));
            }
        }
    }
    if seen.len() != lines {
        return Err(format!(
            "the destination holds {} of the {lines} lines sent",
            seen.len()
        ));
    }
    Ok(())
}

/// The `seq` of an exported line.
fn seq_of(line: &str) -> Option<usize> {
    let value: Value = serde_json::from_str(line).ok()?;
    value["seq"].as_u64().map(|seq| seq as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cpu_seconds: f64, peak_rss_mb: f64) -> ProcessUsage {
        ProcessUsage {
            cpu_seconds,
            peak_rss_mb,
        }
    }

    fn round(gzip: f64, batcher: f64, flusher: f64, rss: f64) -> (ProcessUsage, PipelineRun) {
        let run = PipelineRun {
            batcher: usage(batcher, rss),
            flusher: usage(flusher, 2.0 * rss),
            invocations: 22,
            largest_sqs_event_bytes: 6_000_000,
            files: 6,
            file_bytes: 6_000,
        };
        (usage(gzip, 1.0), run)
    }

    #[test]
    fn the_summary_takes_medians_and_each_rounds_ratio_to_its_own_gzip() {
        let options = Options {
            lines: 1000,
            sweep_lines: 1000 / 2,
            seed: 1,
            rounds: 3,
            bin_dir: PathBuf::from("target/release"),
            work_dir: PathBuf::from("unused"),
        };
        // The second round ran on a slower machine: its ratio is still 1.5.
        let rounds = [
            round(2.0, 1.0, 2.0, 40.0),
            round(4.0, 2.0, 4.0, 44.0),
            round(2.0, 1.0, 1.0, 42.0),
        ];
        let sweep = vec![
            json!({"lines": 1000, "flusher_rss_mb": 30.0}),
            json!({"lines": 2000, "flusher_rss_mb": 30.5}),
            json!({"lines": 4000, "flusher_rss_mb": 33.0}),
        ];
        let figures = summary(&options, 634_000, &rounds, sweep);
        assert_eq!(figures["line_bytes"], 634.0);
        assert_eq!(figures["profile"], "release");
        assert_eq!(figures["process_cpu_batcher_seconds"], 1.0);
        assert_eq!(figures["process_cpu_flusher_seconds"], 2.0);
        assert_eq!(figures["process_cpu_seconds"], 3.0);
        assert_eq!(figures["gzip6_cpu_seconds"], 2.0);
        assert_eq!(
            figures["detail"]["vs_gzip6"]["rounds"],
            json!([1.5, 1.5, 1.0])
        );
        assert_eq!(figures["process_cpu_vs_gzip6"], 1.5);
        let vector = figures["process_cpu_vs_vector_estimate"].as_f64().unwrap();
        assert!((vector - 1.5 * 2.92 / 5.17).abs() < 1e-12, "{vector}");
        assert_eq!(figures["detail"]["total"]["min"], 2.0);
        assert_eq!(figures["detail"]["total"]["max"], 6.0);
        assert_eq!(figures["batcher_peak_rss_mb"], 44.0);
        assert_eq!(figures["flusher_peak_rss_mb"], 88.0);
        assert_eq!(figures["flusher_rss_largest_vs_smallest"], 1.1);
        assert_eq!(figures["flusher_rss_mb_per_million_lines"], 1000.0);
    }

    fn file(seqs: &[usize]) -> StoredFile {
        StoredFile {
            key: "exports/part-0001.ndjson.gz".to_owned(),
            size: 0,
            lines: seqs
                .iter()
                .map(|seq| format!(r#"{{"seq":{seq}}}"#))
                .collect(),
        }
    }

    #[test]
    fn the_read_back_accepts_each_line_once_and_names_what_is_wrong() {
        assert_eq!(check_once(&[file(&[2, 0]), file(&[1])], 3), Ok(()));
        let twice = check_once(&[file(&[0, 1]), file(&[1, 2])], 3).unwrap_err();
        assert!(twice.contains("seq 1 exported twice"), "{twice}");
        let unknown = check_once(&[file(&[0, 1, 7])], 3).unwrap_err();
        assert!(unknown.contains("seq 7"), "{unknown}");
        let missing = check_once(&[file(&[0, 2])], 3).unwrap_err();
        assert!(missing.contains("holds 2 of the 3 lines"), "{missing}");
        let mut broken = file(&[0]);
        broken.lines.push("{\"event_id\":\"x\"}".to_owned());
        let error = check_once(&[broken], 1).unwrap_err();
        assert!(
            error.contains("exports/part-0001.ndjson.gz: a line without seq"),
            "{error}"
        );
    }

    #[test]
    fn without_the_functions_binaries_the_phase_says_how_to_build_them() {
        let figures = measure(&Options {
            lines: 10,
            sweep_lines: 10 / 2,
            seed: 1,
            rounds: 1,
            bin_dir: PathBuf::from("no-such-target/release"),
            work_dir: std::env::temp_dir().join("s3-export-bench-process-test-missing"),
        });
        let error = figures["error"].as_str().unwrap();
        assert!(
            error.contains("no-such-target/release/batcher is missing")
                && error.contains("cargo build --release --workspace --bins"),
            "{error}"
        );
    }

    /// The phase end to end on the binaries `cargo test` builds (debug:
    /// its figures mean nothing; that each line is exported once does).
    #[test]
    fn the_phase_runs_the_functions_and_finds_each_line_exported_once() {
        let bin_dir = s3_export::runtime_api::function_binary("flusher")
            .parent()
            .unwrap()
            .to_path_buf();
        let work_dir = std::env::temp_dir().join(format!(
            "s3-export-bench-process-test-{}",
            std::process::id()
        ));
        let figures = measure(&Options {
            lines: 400,
            sweep_lines: 400 / 2,
            seed: 3,
            rounds: 1,
            bin_dir,
            work_dir: work_dir.clone(),
        });
        let _ = std::fs::remove_dir_all(&work_dir);
        assert!(figures["error"].is_null(), "{figures}");
        assert_eq!(figures["lines"], 400);
        assert_eq!(figures["invocations"], 1);
        // One partition a service, one part each.
        assert_eq!(figures["destination_files"], LOG_SERVICES.len());
        for field in [
            "process_cpu_seconds",
            "gzip6_cpu_seconds",
            "batcher_peak_rss_mb",
        ] {
            assert!(
                figures[field].as_f64().unwrap() >= 0.0,
                "{field}: {figures}"
            );
        }
        let sweep = figures["flusher_rss_by_partition"].as_array().unwrap();
        let lines: Vec<u64> = sweep.iter().map(|s| s["lines"].as_u64().unwrap()).collect();
        assert_eq!(lines, [50, 100, 200]);
        let publish = figures["flusher_rss_publishing"].as_array().unwrap();
        let lines: Vec<u64> = publish
            .iter()
            .map(|s| s["lines"].as_u64().unwrap())
            .collect();
        assert_eq!(lines, [100, 400]);
        for size in publish {
            // One part; plain NDJSON is larger than the archive's gzip.
            assert_eq!(size["parts"], 1, "{size}");
            assert!(
                size["ndjson_part_mb"].as_f64() > size["archive_part_mb"].as_f64(),
                "{size}"
            );
        }
    }

    #[test]
    fn exported_lines_are_known_by_their_seq() {
        assert_eq!(seq_of(r#"{"event_id":"a","seq":17,"tags":[]}"#), Some(17));
        assert_eq!(seq_of(r#"{"event_id":"a"}"#), None);
        assert_eq!(seq_of("not json"), None);
    }

    #[test]
    fn both_functions_get_a_generic_stream_keyed_by_service() {
        let document = export_config();
        let config = shared::Config::from_sources(
            |name| (name == "EXPORT_BUCKET").then(|| EXPORT_BUCKET.to_owned()),
            Some(&document),
        )
        .unwrap();
        assert_eq!(config.default_stream, LOG_STREAM);
        assert!(config.streams.contains_key(LOG_STREAM));
    }
}
