//! The scale phase: the per-core rates the scale-out model needs, measured
//! in this run (or read from the whole run's figures), the deployments of
//! issue 17 simulated with them (`scale`), the table printed and the
//! figures as JSON. The rates come from real work on the seeded corpus: the
//! batcher's staged objects of the gzip producer style, the flusher's
//! compaction of them (many tenants, and one tenant for a big tenant's
//! shards), their zstd decoding alone, and gzip of 6 MB blocks alone.

use serde_json::{Value, json};

use crate::corpus::Style;
use crate::phases::{self, Setup};
use crate::scale::{self, Deployment, GOAL_AFTER_CLOSE_S, Hour, Measured, S3Model, Shape};

/// The worker counts (`FlushWorkers`) of the table.
pub const WORKERS: [usize; 3] = [10, 32, 64];
/// The worker memory sizes (MB) of the table: the template's, one vCPU,
/// and the largest before a third vCPU.
pub const MEMORY_MB: [f64; 3] = [1024.0, 1769.0, 3008.0];

/// What the simulated deployments share (the command line's `--scale-*`
/// and `--s3-*` options).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Every setting of the simulated deployments but the shape, the
    /// workers and their memory, which the table varies.
    pub base: Deployment,
    /// The big tenant's share of the events in the first shape.
    pub big_share: f64,
    /// Its shards.
    pub big_shards: usize,
    /// Tenants in all (the big one and the rest in the first shape; all
    /// even in the second).
    pub tenants: usize,
    pub s3: S3Model,
    /// NDJSON bytes per staged object, instead of the measured figure.
    pub staged_object_bytes: Option<f64>,
}

impl Options {
    /// The two shapes of the table: one big tenant and the rest small, and
    /// every tenant even.
    pub fn shapes(&self) -> [(&'static str, Shape); 2] {
        [
            (
                "big",
                Shape {
                    big_share: self.big_share,
                    big_shards: self.big_shards,
                    small_tenants: self.tenants.saturating_sub(1),
                },
            ),
            (
                "even",
                Shape {
                    big_share: 0.0,
                    big_shards: 1,
                    small_tenants: self.tenants,
                },
            ),
        ]
    }

    fn deployment(&self, shape: Shape, workers: usize, memory_mb: f64) -> Deployment {
        Deployment {
            shape,
            workers,
            memory_mb,
            ..self.base
        }
    }
}

fn f(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

/// The model's measured inputs from the run's figures: `flusher` and
/// `flusher_one_tenant` (compaction, its limit, zstd decoding, the staged
/// and archive sizes), `limit` (gzip alone) and `batcher.gzip` (NDJSON per
/// staged object).
pub fn measured(figures: &Value, staged_object_bytes: Option<f64>) -> Measured {
    let flusher = &figures["flusher"];
    let large = &figures["flusher_one_tenant"];
    let batcher = &figures["batcher"]["gzip"];
    Measured {
        compaction_mb_s: f(flusher, "/rate/mb_per_s"),
        compaction_large_mb_s: f(large, "/rate/mb_per_s"),
        limit_mb_s: f(flusher, "/limit_rate/mb_per_s"),
        limit_large_mb_s: f(large, "/limit_rate/mb_per_s"),
        decompress_mb_s: f(flusher, "/decompress_rate/mb_per_s"),
        gzip_mb_s: f(&figures["limit"], "/rate/mb_per_s"),
        staged_ratio: f(flusher, "/bytes") / f(flusher, "/staged_bytes"),
        archive_ratio: f(flusher, "/bytes") / f(flusher, "/part_bytes"),
        staged_object_bytes: staged_object_bytes
            .unwrap_or_else(|| f(batcher, "/bytes") / f(batcher, "/staged/objects")),
    }
}

/// Measures, in this process, the figures `measured` reads: the limit
/// phase, the batcher's gzip style staging into a scratch folder, and the
/// flusher's phase on what it staged, for the run's tenants and for one.
pub fn measure(setup: &Setup) -> Result<Value, String> {
    let work = std::env::temp_dir().join(format!("s3-export-bench-scale-{}", std::process::id()));
    let outcome = (|| {
        let mut figures = json!({ "limit": phases::limit(setup) });
        for (name, tenants) in [("flusher", setup.tenants), ("flusher_one_tenant", 1)] {
            let dir = work.join(name);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let setup = Setup {
                tenants,
                config: setup.config.clone(),
                ..*setup
            };
            eprintln!("  scale: batcher (gzip) and flusher, {tenants} tenant(s)");
            let staged = phases::batcher(&setup, Style::Gzip, Some(&dir));
            if name == "flusher" {
                figures["batcher"] = json!({ "gzip": staged });
            }
            figures[name] = phases::flusher(&setup, &dir);
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(figures)
    })();
    let _ = std::fs::remove_dir_all(&work);
    outcome
}

/// One row of the table: a shape, W and M simulated at the options' rate,
/// with the most events a second it sustains and meets the goal with.
fn row(
    options: &Options,
    measured: &Measured,
    shape: (&str, Shape),
    workers: usize,
    memory_mb: f64,
) -> Value {
    let (name, shape) = shape;
    let deployment = options.deployment(shape, workers, memory_mb);
    let hour = scale::simulate(&deployment, measured, &options.s3);
    let sustained = scale::max_events_per_s(&deployment, measured, &options.s3, |hour: &Hour| {
        hour.sustainable
    });
    let goal = |hour: &Hour| hour.meets_goal;
    let for_goal = scale::max_events_per_s(&deployment, measured, &options.s3, goal);
    let at_limit =
        scale::max_events_per_s(&deployment, &measured.at_the_limit(), &options.s3, goal);
    // The fewest shards for the goal: a number, "none" if 1,024 are not
    // enough, null for a shape without a big tenant.
    let shards = if shape.big_share > 0.0 {
        scale::shards_for_goal(&deployment, measured, &options.s3)
            .map_or(json!("none"), |shards| json!(shards))
    } else {
        Value::Null
    };
    json!({
        "shape": name,
        "workers": workers,
        "memory_mb": memory_mb,
        "vcpus": scale::vcpus(memory_mb),
        "items": hour.items,
        "staged_objects": hour.staged_objects,
        "gets": hour.gets,
        "gets_usd": hour.gets * scale::S3_GET_USD,
        "longest_item": {
            "ndjson_mb": hour.longest.ndjson_bytes / 1e6,
            "staged_mb": hour.longest.staged_bytes / 1e6,
            "gets": hour.longest.gets,
            "read_s": hour.longest.read_s,
            "cpu_s": hour.longest.cpu_s,
            "write_s": hour.longest.write_s,
            "total_s": hour.longest.total_s(),
        },
        "coordinator_s": hour.coordinator_s,
        "makespan_s": hour.makespan_s,
        "prefix_floor_s": hour.prefix_floor_s,
        "flush_s": hour.flush_s,
        "published_after_close_s": hour.published_after_close_s,
        "fits_lambda": hour.fits_lambda,
        "sustainable": hour.sustainable,
        "meets_goal": hour.meets_goal,
        "max_events_per_s_sustained": sustained,
        "max_events_per_s_goal": for_goal,
        "max_events_per_s_goal_at_limit": at_limit,
        "goal_vs_limit": for_goal / at_limit,
        "shards_for_goal": shards,
    })
}

/// The options and measured figures with all four levers of `levers`
/// pulled: a 30 ms latency, 64 requests at once, work items of 1 GiB and
/// staged objects four times larger.
fn all_levers(options: &Options, measured: &Measured) -> (Options, Measured) {
    (
        Options {
            s3: S3Model {
                latency_s: 0.030,
                ..options.s3
            },
            base: Deployment {
                get_concurrency: 64,
                work_item_bytes: 1024.0 * 1024.0 * 1024.0,
                ..options.base
            },
            ..*options
        },
        Measured {
            staged_object_bytes: measured.staged_object_bytes * 4.0,
            ..*measured
        },
    )
}

/// The big tenant's shards, 1 to 1,024, for W = 64 and 1,769 MB, at the
/// options and with all four levers: where more shards stop shortening the
/// long pole.
fn shard_sweep(options: &Options, measured: &Measured) -> Vec<Value> {
    let levers = all_levers(options, measured);
    let mut rows = Vec::new();
    for (setting, (options, measured)) in
        [("as above", (*options, *measured)), ("all four", levers)]
    {
        for power in (0..=10).step_by(2) {
            let shards = 1usize << power;
            let (_, shape) = options.shapes()[0];
            let shape = Shape {
                big_shards: shards,
                ..shape
            };
            let hour = scale::simulate(
                &options.deployment(shape, 64, 1769.0),
                &measured,
                &options.s3,
            );
            rows.push(json!({
                "setting": setting,
                "shards": shards,
                "items": hour.items,
                "gets": hour.gets,
                "longest_item": {
                    "read_s": hour.longest.read_s,
                    "cpu_s": hour.longest.cpu_s,
                    "total_s": hour.longest.total_s(),
                    "staged_mb": hour.longest.staged_bytes / 1e6,
                },
                "flush_s": hour.flush_s,
                "published_after_close_s": hour.published_after_close_s,
                "fits_lambda": hour.fits_lambda,
                "meets_goal": hour.meets_goal,
            }));
        }
    }
    rows
}

/// What one change to the defaults does, for W = 64 and 1,769 MB: the
/// levers the model points at.
fn levers(options: &Options, measured: &Measured) -> Vec<Value> {
    let s3 = options.s3;
    let all = all_levers(options, measured);
    let changes: [(&str, Options, Measured); 6] = [
        ("as above", *options, *measured),
        (
            "S3 latency 30 ms",
            Options {
                s3: S3Model {
                    latency_s: 0.030,
                    ..s3
                },
                ..*options
            },
            *measured,
        ),
        (
            "64 requests at once (READ_CONCURRENCY)",
            Options {
                base: Deployment {
                    get_concurrency: 64,
                    ..options.base
                },
                ..*options
            },
            *measured,
        ),
        (
            "work items of 1 GiB (WORK_ITEM_BYTES)",
            Options {
                base: Deployment {
                    work_item_bytes: 1024.0 * 1024.0 * 1024.0,
                    ..options.base
                },
                ..*options
            },
            *measured,
        ),
        (
            "staged objects 4x larger",
            *options,
            Measured {
                staged_object_bytes: measured.staged_object_bytes * 4.0,
                ..*measured
            },
        ),
        ("all four", all.0, all.1),
    ];
    let mut rows = Vec::new();
    for (change, options, measured) in changes {
        for (name, shape) in options.shapes() {
            let deployment = options.deployment(shape, 64, 1769.0);
            let hour = scale::simulate(&deployment, &measured, &options.s3);
            let goal =
                scale::max_events_per_s(&deployment, &measured, &options.s3, |hour: &Hour| {
                    hour.meets_goal
                });
            rows.push(json!({
                "change": change,
                "shape": name,
                "items": hour.items,
                "gets": hour.gets,
                "longest_item_s": hour.longest.total_s(),
                "flush_s": hour.flush_s,
                "published_after_close_s": hour.published_after_close_s,
                "fits_lambda": hour.fits_lambda,
                "meets_goal": hour.meets_goal,
                "max_events_per_s_goal": goal,
            }));
        }
    }
    rows
}

/// Whether a simulated hour met the goal: "yes", "late" (published after
/// the 20 minutes, or its flush over an hour) or "limit" (an item or the
/// coordinator over Lambda's 15 minutes, or an item over the spool).
fn goal_label(row: &Value) -> &'static str {
    if row["meets_goal"] == true {
        "yes"
    } else if row["fits_lambda"] == true {
        "late"
    } else {
        "limit"
    }
}

/// Simulates the table's deployments with the run's `figures`, prints the
/// tables, and returns the figures as JSON.
pub fn report(options: &Options, figures: &Value) -> Value {
    let measured = measured(figures, options.staged_object_bytes);
    let hour_gb = options.base.events_per_s * 3600.0 * options.base.event_bytes / 1e9;
    println!();
    println!(
        "scale-out simulation (issue 17): {:.0} events/s of {:.0} B ({hour_gb:.0} GB of NDJSON an hour), {} tenants;",
        options.base.events_per_s, options.base.event_bytes, options.tenants
    );
    println!(
        "shapes: big = one tenant with {:.0}% of the events in {} shards and {} even small tenants; even = {} even tenants",
        options.big_share * 100.0,
        options.big_shards,
        options.tenants.saturating_sub(1),
        options.tenants,
    );
    println!(
        "measured here, MB of NDJSON per CPU second of one core: compaction {:.1} (one tenant's partitions {:.1}), codecs alone {:.1} ({:.1}), zstd decoding {:.0}, gzip level 6 {:.1};",
        measured.compaction_mb_s,
        measured.compaction_large_mb_s,
        measured.limit_mb_s,
        measured.limit_large_mb_s,
        measured.decompress_mb_s,
        measured.gzip_mb_s,
    );
    println!(
        "NDJSON {:.2}x the staged zstd, {:.2}x the archive gzip; {:.1} MB of NDJSON a staged object ({})",
        measured.staged_ratio,
        measured.archive_ratio,
        measured.staged_object_bytes / 1e6,
        if options.staged_object_bytes.is_some() {
            "--staged-object-mb"
        } else {
            "measured: the batcher's gzip style, 6 MB SQS events"
        },
    );
    println!(
        "parameters: S3 {:.0} MB/s a stream, {:.0} ms a request, {:.0} GETs/s a prefix; {} requests at once a worker; items <= {:.0} MiB staged, spool {:.0} MB; \
         {} destination(s); schedule minute {:.0}, grace {:.0} min; a Lambda vCPU = {:.2} core(s) here; {} compaction thread(s)",
        options.s3.stream_mb_s,
        options.s3.latency_s * 1000.0,
        options.s3.prefix_gets_per_s,
        options.base.get_concurrency,
        options.base.work_item_bytes / 1024.0 / 1024.0,
        options.base.spool_bytes / 1e6,
        options.base.destinations,
        options.base.schedule_minute,
        options.base.grace_minutes,
        options.base.vcpu_speed,
        options.base.threads,
    );
    println!(
        "goal: published within {:.0} min of the close (the hour's end + grace), every item and the coordinator within 15 min",
        GOAL_AFTER_CLOSE_S / 60.0
    );
    println!();
    println!(
        "{:<5} {:>3} {:>5} {:>5} {:>6} {:>7} | {:>7} {:>7} {:>7} {:>7} | {:>7} {:>8} {:>5} | {:>9} {:>9} {:>9} {:>6} {:>7}",
        "shape",
        "W",
        "MB",
        "vCPU",
        "items",
        "GETs/h",
        "GETs",
        "read s",
        "CPU s",
        "item s",
        "flush m",
        "close+m",
        "goal",
        "ev/s 1h",
        "ev/s 20m",
        "codecs",
        "ratio",
        "shards",
    );
    println!(
        "{:<37} | {:^31} | {:^23} | most events/s: flush < 1 h; goal; goal with the codecs alone; ratio; fewest shards for the goal",
        "", "the longest item", "the hour"
    );
    let mut rows = Vec::new();
    for shape in options.shapes() {
        for workers in WORKERS {
            for memory_mb in MEMORY_MB {
                let row = row(options, &measured, shape, workers, memory_mb);
                println!(
                    "{:<5} {:>3} {:>5.0} {:>5.2} {:>6} {:>6.1}M | {:>7.0} {:>7.0} {:>7.0} {:>7.0} | {:>7.1} {:>8.1} {:>5} | {:>9.0} {:>9.0} {:>9.0} {:>6.2} {:>7}",
                    row["shape"].as_str().unwrap_or_default(),
                    workers,
                    memory_mb,
                    f(&row, "/vcpus"),
                    f(&row, "/items"),
                    f(&row, "/gets") / 1e6,
                    f(&row, "/longest_item/gets"),
                    f(&row, "/longest_item/read_s"),
                    f(&row, "/longest_item/cpu_s"),
                    f(&row, "/longest_item/total_s"),
                    f(&row, "/flush_s") / 60.0,
                    f(&row, "/published_after_close_s") / 60.0,
                    goal_label(&row),
                    f(&row, "/max_events_per_s_sustained"),
                    f(&row, "/max_events_per_s_goal"),
                    f(&row, "/max_events_per_s_goal_at_limit"),
                    f(&row, "/goal_vs_limit"),
                    match &row["shards_for_goal"] {
                        Value::Null => "-".to_owned(),
                        Value::Number(shards) => shards.to_string(),
                        _ => "none".to_owned(),
                    },
                );
                rows.push(row);
            }
        }
    }
    println!(
        "goal: yes; late (published after the 20 minutes, or the flush over an hour); limit (an item or the coordinator over Lambda's 15 minutes, or an item's staged bytes over the spool)"
    );
    println!();
    println!("levers, W = 64 at 1,769 MB (one change at a time, then all four):");
    println!(
        "{:<42} {:<5} {:>6} {:>7} {:>8} {:>8} {:>8} {:>5} {:>10}",
        "change", "shape", "items", "GETs/h", "item s", "flush m", "close+m", "goal", "ev/s 20m"
    );
    let levers = levers(options, &measured);
    for lever in &levers {
        println!(
            "{:<42} {:<5} {:>6} {:>6.1}M {:>8.0} {:>8.1} {:>8.1} {:>5} {:>10.0}",
            lever["change"].as_str().unwrap_or_default(),
            lever["shape"].as_str().unwrap_or_default(),
            f(lever, "/items"),
            f(lever, "/gets") / 1e6,
            f(lever, "/longest_item_s"),
            f(lever, "/flush_s") / 60.0,
            f(lever, "/published_after_close_s") / 60.0,
            goal_label(lever),
            f(lever, "/max_events_per_s_goal"),
        );
    }
    println!();
    println!(
        "the big tenant's shards, W = 64 at 1,769 MB, at {:.0} events/s, as above and with all four levers:",
        options.base.events_per_s
    );
    println!(
        "{:<9} {:>6} {:>6} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5}",
        "setting",
        "shards",
        "items",
        "GETs/h",
        "item MB",
        "read s",
        "CPU s",
        "item s",
        "flush m",
        "close+m",
        "goal"
    );
    let shards = shard_sweep(options, &measured);
    for row in &shards {
        println!(
            "{:<9} {:>6} {:>6} {:>6.1}M {:>10.0} {:>8.0} {:>8.0} {:>8.0} {:>8.1} {:>8.1} {:>5}",
            row["setting"].as_str().unwrap_or_default(),
            f(row, "/shards"),
            f(row, "/items"),
            f(row, "/gets") / 1e6,
            f(row, "/longest_item/staged_mb"),
            f(row, "/longest_item/read_s"),
            f(row, "/longest_item/cpu_s"),
            f(row, "/longest_item/total_s"),
            f(row, "/flush_s") / 60.0,
            f(row, "/published_after_close_s") / 60.0,
            goal_label(row),
        );
    }
    json!({
        "events_per_s": options.base.events_per_s,
        "event_bytes": options.base.event_bytes,
        "tenants": options.tenants,
        "big_share": options.big_share,
        "big_shards": options.big_shards,
        "measured": {
            "compaction_mb_s": measured.compaction_mb_s,
            "compaction_one_tenant_mb_s": measured.compaction_large_mb_s,
            "limit_mb_s": measured.limit_mb_s,
            "limit_one_tenant_mb_s": measured.limit_large_mb_s,
            "decompress_mb_s": measured.decompress_mb_s,
            "gzip_mb_s": measured.gzip_mb_s,
            "staged_ratio": measured.staged_ratio,
            "archive_ratio": measured.archive_ratio,
            "staged_object_mb": measured.staged_object_bytes / 1e6,
        },
        "parameters": {
            "s3_stream_mb_s": options.s3.stream_mb_s,
            "s3_latency_ms": options.s3.latency_s * 1000.0,
            "s3_prefix_gets_per_s": options.s3.prefix_gets_per_s,
            "get_concurrency": options.base.get_concurrency,
            "work_item_bytes": options.base.work_item_bytes,
            "spool_bytes": options.base.spool_bytes,
            "destinations": options.base.destinations,
            "schedule_minute": options.base.schedule_minute,
            "grace_minutes": options.base.grace_minutes,
            "vcpu_speed": options.base.vcpu_speed,
            "threads": options.base.threads,
        },
        "rows": rows,
        "levers": levers,
        "shards": shards,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::Config;

    fn options() -> Options {
        Options {
            base: Deployment {
                events_per_s: 100_000.0,
                event_bytes: 1000.0,
                shape: Shape {
                    big_share: 0.0,
                    big_shards: 1,
                    small_tenants: 1,
                },
                workers: 1,
                memory_mb: 1024.0,
                get_concurrency: 4,
                index_reads_at_once: 16,
                work_item_bytes: 64.0 * 1024.0 * 1024.0,
                item_partitions: 1024,
                spool_bytes: 1536.0 * 1024.0 * 1024.0,
                destinations: 1,
                schedule_minute: 15.0,
                grace_minutes: 10.0,
                vcpu_speed: 1.0,
                threads: 1.0,
            },
            big_share: 0.9,
            big_shards: 256,
            tenants: 1000,
            s3: S3Model {
                stream_mb_s: 85.0,
                latency_s: 0.1,
                prefix_gets_per_s: 5500.0,
            },
            staged_object_bytes: None,
        }
    }

    #[test]
    fn the_model_reads_each_rate_and_size_from_the_runs_figures() {
        let figures = json!({
            "limit": {"rate": {"mb_per_s": 80.0}},
            "batcher": {"gzip": {"bytes": 40e6, "staged": {"objects": 4}}},
            "flusher": {
                "rate": {"mb_per_s": 50.0},
                "limit_rate": {"mb_per_s": 60.0},
                "decompress_rate": {"mb_per_s": 900.0},
                "bytes": 100.0, "staged_bytes": 25.0, "part_bytes": 20.0,
            },
            "flusher_one_tenant": {"rate": {"mb_per_s": 45.0}, "limit_rate": {"mb_per_s": 58.0}},
        });
        let read = measured(&figures, None);
        assert_eq!(
            read,
            Measured {
                compaction_mb_s: 50.0,
                compaction_large_mb_s: 45.0,
                limit_mb_s: 60.0,
                limit_large_mb_s: 58.0,
                decompress_mb_s: 900.0,
                gzip_mb_s: 80.0,
                staged_ratio: 4.0,
                archive_ratio: 5.0,
                staged_object_bytes: 10e6,
            }
        );
        assert_eq!(measured(&figures, Some(3e6)).staged_object_bytes, 3e6);
    }

    #[test]
    fn the_phase_measures_real_staging_and_compaction_and_simulates_every_deployment() {
        let setup = Setup {
            events: 3_000,
            tenants: 7,
            seed: 3,
            config: Config::from_sources(
                |name| (name == "EXPORT_BUCKET").then(|| "bench".to_owned()),
                None,
            )
            .unwrap(),
        };
        let figures = measure(&setup).unwrap();
        assert_eq!(figures["flusher"]["events"], 3_000);
        assert_eq!(
            figures["flusher"]["partitions"],
            figures["batcher"]["gzip"]["staged"]["partitions"]
        );
        assert_eq!(figures["flusher_one_tenant"]["events"], 3_000);
        let model = measured(&figures, None);
        for rate in [
            model.compaction_mb_s,
            model.compaction_large_mb_s,
            model.limit_mb_s,
            model.decompress_mb_s,
            model.gzip_mb_s,
            model.staged_ratio,
            model.archive_ratio,
            model.staged_object_bytes,
        ] {
            assert!(rate.is_finite() && rate > 0.0, "{model:?}");
        }
        let scale = report(&options(), &figures);
        let rows = scale["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2 * WORKERS.len() * MEMORY_MB.len());
        // The big tenant's rows say how many shards meet the goal (or
        // "none"); the even shape has no big tenant.
        for row in rows {
            match row["shape"].as_str() {
                Some("big") => assert!(!row["shards_for_goal"].is_null(), "{row}"),
                Some("even") => assert!(row["shards_for_goal"].is_null(), "{row}"),
                other => panic!("unknown shape {other:?}"),
            }
        }
        assert_eq!(scale["levers"].as_array().unwrap().len(), 12);
        assert_eq!(scale["shards"].as_array().unwrap().len(), 12);
    }
}
