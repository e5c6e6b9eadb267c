//! The scale-out model (issue 17): what `FlushWorkers` workers of a given
//! memory size do with an hour of a given traffic, from per-core rates the
//! benchmark measured in the same run. Plain arithmetic, no I/O: the hour
//! is cut into work items as the coordinator cuts it (consecutive
//! partitions, or a very large tenant's shards, within the item budget),
//! each item costs what its worker reads (a ranged GET per staged object
//! holding any of its data, at S3's per-request latency and per-stream
//! throughput) plus what it compresses (the measured compaction rate times
//! the worker's share of a core) plus what it writes and publishes; the
//! items are run in queue order on the workers, and the hour is published
//! when the last one finishes. What the model leaves out is listed in
//! docs/benchmarks.md ("The scale-out simulation").

/// Lambda's memory for one full vCPU: a function gets memory/1769 of a
/// core (AWS Lambda Developer Guide, "Configuring Lambda function memory").
pub const MB_PER_VCPU: f64 = 1769.0;
/// Lambda's most vCPUs (at 10,240 MB).
pub const MAX_VCPUS: f64 = 6.0;
/// Lambda's longest invocation: a work item (and the coordinator) must
/// finish within it.
pub const LAMBDA_LIMIT_SECONDS: f64 = 900.0;
/// S3's price of a GET (us-east-1, $0.0004 per 1,000), for the hour's
/// read requests.
pub const S3_GET_USD: f64 = 0.0004 / 1000.0;
/// Staged objects a LIST page returns.
const LIST_PAGE: f64 = 1000.0;
/// Messages an SQS SendMessageBatch carries (the coordinator's batches).
const SEND_BATCH: f64 = 10.0;

/// Rates and sizes the run measured, per core of the machine it ran on.
/// Rates are MB (10^6 B) of event NDJSON per CPU second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// The flusher's compaction (decompress, de-duplicate, recompress) of
    /// many small partitions.
    pub compaction_mb_s: f64,
    /// The same of one tenant's large partitions: a big tenant's shards.
    pub compaction_large_mb_s: f64,
    /// The baseline: the codecs alone (zstd decoding and gzip at the
    /// archive level) on the same many small partitions.
    pub limit_mb_s: f64,
    /// The codecs alone on the large partitions.
    pub limit_large_mb_s: f64,
    /// zstd decoding of the staged segments alone.
    pub decompress_mb_s: f64,
    /// gzip at the archive level alone, of 6 MB blocks.
    pub gzip_mb_s: f64,
    /// NDJSON bytes per staged (zstd) byte.
    pub staged_ratio: f64,
    /// NDJSON bytes per archive (gzip) byte.
    pub archive_ratio: f64,
    /// NDJSON bytes per staged object the batcher wrote.
    pub staged_object_bytes: f64,
}

impl Measured {
    /// The same figures with the compaction rates replaced by the codecs'
    /// alone: the model's baseline, a flusher that spent nothing beyond
    /// decompressing and recompressing.
    pub fn at_the_limit(self) -> Self {
        Self {
            compaction_mb_s: self.limit_mb_s,
            compaction_large_mb_s: self.limit_large_mb_s,
            ..self
        }
    }
}

/// What S3 is assumed to do (parameters, not measured here).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct S3Model {
    /// Throughput of one GET or PUT stream, MB/s (AWS: "one concurrent
    /// request for each 85–90 MB/s of desired network throughput").
    pub stream_mb_s: f64,
    /// Time to first byte of a request, seconds (AWS: small-object and
    /// first-byte latencies of "roughly 100–200 milliseconds").
    pub latency_s: f64,
    /// GETs a second one prefix serves (AWS: at least 5,500 GET/HEAD per
    /// partitioned prefix); one hour's staged objects share one prefix.
    pub prefix_gets_per_s: f64,
}

/// How the traffic is spread over tenants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// The share of all events of the one big tenant (0: none).
    pub big_share: f64,
    /// The big tenant's shards (a power of two up to 1,024): each an
    /// independent work unit reading only its own byte ranges.
    pub big_shards: usize,
    /// Tenants sharing the rest evenly.
    pub small_tenants: usize,
}

/// A deployment and its traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deployment {
    pub events_per_s: f64,
    pub event_bytes: f64,
    pub shape: Shape,
    /// `FlushWorkers`: workers at once.
    pub workers: usize,
    /// A worker's memory, MB (its share of a vCPU follows).
    pub memory_mb: f64,
    /// Threads a worker compacts on (1: today's flusher compacts on one).
    pub threads: f64,
    /// A Lambda vCPU's speed against one core of the measuring machine.
    pub vcpu_speed: f64,
    /// Requests a worker has in flight at once (`READ_CONCURRENCY`).
    pub get_concurrency: usize,
    /// The coordinator's index reads at once.
    pub index_reads_at_once: usize,
    /// A work item's staged bytes at most (`WORK_ITEM_BYTES`).
    pub work_item_bytes: f64,
    /// A work item's partitions at most.
    pub item_partitions: usize,
    /// A worker's spool (ephemeral storage), bytes: an item must fit.
    pub spool_bytes: f64,
    /// Destinations each partition is published to (in the archive's
    /// format: read back and written unchanged).
    pub destinations: usize,
    /// The minute past each hour the coordinator runs (`FlushSchedule`).
    pub schedule_minute: f64,
    /// `FlushGraceMinutes`.
    pub grace_minutes: f64,
}

/// One unit of work the coordinator places: a partition, or a shard of
/// the big tenant's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit {
    /// Its share of all events.
    pub share: f64,
    /// Whether it is the big tenant's (compacted at the large-partition rate).
    pub large: bool,
}

/// A work item: consecutive units within the budget.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Item {
    pub units: usize,
    pub share: f64,
    pub large: bool,
}

/// What one work item costs its worker, seconds and requests.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ItemCost {
    pub ndjson_bytes: f64,
    pub staged_bytes: f64,
    /// Ranged GETs of staged objects: one per object holding its data.
    pub gets: f64,
    pub read_s: f64,
    pub cpu_s: f64,
    /// Archive parts, manifests and publishes.
    pub write_s: f64,
}

impl ItemCost {
    pub fn total_s(&self) -> f64 {
        self.read_s + self.cpu_s + self.write_s
    }
}

/// The simulated hour.
#[derive(Debug, Clone, PartialEq)]
pub struct Hour {
    pub ndjson_bytes: f64,
    pub staged_objects: f64,
    pub items: usize,
    /// The longest item (the long pole).
    pub longest: ItemCost,
    /// Every item's GETs of staged objects.
    pub gets: f64,
    pub coordinator_s: f64,
    /// Items run in queue order on the workers.
    pub makespan_s: f64,
    /// The hour's GETs at the prefix's rate: no flush is faster.
    pub prefix_floor_s: f64,
    /// The coordinator, then the longer of the makespan and the floor.
    pub flush_s: f64,
    /// When the hour is published, seconds after its end.
    pub published_after_end_s: f64,
    /// The same after its close (its end plus the grace).
    pub published_after_close_s: f64,
    /// Every item and the coordinator within Lambda's 15 minutes, and
    /// every item's staged bytes within the spool.
    pub fits_lambda: bool,
    /// Sustainable: fits Lambda and the flush takes under an hour.
    pub sustainable: bool,
    /// Sustainable, and published within `GOAL_AFTER_CLOSE_S` of the close.
    pub meets_goal: bool,
}

/// Issue 17's goal: each hour published within 20 minutes of its close.
pub const GOAL_AFTER_CLOSE_S: f64 = 20.0 * 60.0;

/// A worker's vCPUs at `memory_mb`.
pub fn vcpus(memory_mb: f64) -> f64 {
    (memory_mb / MB_PER_VCPU).min(MAX_VCPUS)
}

/// The cores a worker compacts with: its vCPUs, but no more than the
/// threads it compacts on.
pub fn compaction_cores(memory_mb: f64, threads: f64) -> f64 {
    vcpus(memory_mb).min(threads)
}

/// The minute after an hour's end of the first coordinator run that finds
/// it closed: the first `schedule_minute` (mod 60) at or after the grace.
pub fn first_run_minute(schedule_minute: f64, grace_minutes: f64) -> f64 {
    let mut minute = schedule_minute.rem_euclid(60.0);
    while minute < grace_minutes {
        minute += 60.0;
    }
    minute
}

/// The shape's units in the order the coordinator plans them: the small
/// tenants' partitions, then the big tenant's shards.
pub fn units(shape: &Shape) -> Vec<Unit> {
    let mut units = Vec::with_capacity(shape.small_tenants + shape.big_shards);
    let small_share = 1.0 - shape.big_share;
    if shape.small_tenants > 0 && small_share > 0.0 {
        let share = small_share / shape.small_tenants as f64;
        units.extend((0..shape.small_tenants).map(|_| Unit {
            share,
            large: false,
        }));
    }
    if shape.big_share > 0.0 {
        let shards = shape.big_shards.max(1);
        let share = shape.big_share / shards as f64;
        units.extend((0..shards).map(|_| Unit { share, large: true }));
    }
    units
}

/// Cuts `units` into items as the coordinator does: consecutive units
/// while their staged bytes stay within `budget` and their count within
/// `max_units`; a unit larger than the budget is an item of its own.
pub fn items(
    units: &[Unit],
    staged_bytes_of: impl Fn(f64) -> f64,
    budget: f64,
    max_units: usize,
) -> Vec<Item> {
    let mut items = Vec::new();
    let mut current = Item::default();
    for unit in units {
        let fits = current.units == 0
            || (staged_bytes_of(current.share + unit.share) <= budget && current.units < max_units);
        if !fits {
            items.push(current);
            current = Item::default();
        }
        current.units += 1;
        current.share += unit.share;
        current.large |= unit.large;
    }
    if current.units > 0 {
        items.push(current);
    }
    items
}

/// The expected share of `objects` staged objects of `events_per_object`
/// events each that hold at least one event of a unit with `share` of
/// all events (events land in objects independently).
pub fn objects_holding(share: f64, events_per_object: f64) -> f64 {
    if share >= 1.0 {
        return 1.0;
    }
    1.0 - (events_per_object * (1.0 - share).ln()).exp()
}

/// Requests at once on `streams` connections: `requests` of `latency_s`
/// each and `bytes` at `stream_mb_s` per connection.
fn transfer_s(requests: f64, bytes: f64, streams: usize, s3: &S3Model) -> f64 {
    if requests <= 0.0 && bytes <= 0.0 {
        return 0.0;
    }
    let streams = (streams as f64).min(requests.max(1.0)).max(1.0);
    (requests * s3.latency_s + bytes / (s3.stream_mb_s * 1e6)) / streams
}

/// What `item` costs its worker in an hour of `hour_bytes` NDJSON over
/// `objects` staged objects.
pub fn item_cost(
    item: &Item,
    hour_bytes: f64,
    objects: f64,
    deployment: &Deployment,
    measured: &Measured,
    s3: &S3Model,
) -> ItemCost {
    let ndjson_bytes = item.share * hour_bytes;
    let staged_bytes = ndjson_bytes / measured.staged_ratio;
    let events_per_object = measured.staged_object_bytes / deployment.event_bytes;
    let gets = objects * objects_holding(item.share, events_per_object);
    let read_s = transfer_s(gets, staged_bytes, deployment.get_concurrency, s3);
    let rate = if item.large {
        measured.compaction_large_mb_s
    } else {
        measured.compaction_mb_s
    };
    let cores = compaction_cores(deployment.memory_mb, deployment.threads) * deployment.vcpu_speed;
    let cpu_s = ndjson_bytes / (rate * 1e6 * cores);
    // Each unit: its manifest read and commit, and per destination its
    // part read back and written; the parts' bytes written once and then
    // read and written again per destination.
    let destinations = deployment.destinations as f64;
    let requests = item.units as f64 * (2.0 + 2.0 * destinations);
    let part_bytes = ndjson_bytes / measured.archive_ratio;
    let write_s = transfer_s(
        requests,
        part_bytes * (1.0 + 2.0 * destinations),
        deployment.get_concurrency,
        s3,
    );
    ItemCost {
        ndjson_bytes,
        staged_bytes,
        gets,
        read_s,
        cpu_s,
        write_s,
    }
}

/// The time the last of `durations` ends, run in order on `workers`
/// workers, each item taken by the first worker free (as the flush queue
/// hands messages to `MaximumConcurrency` workers).
pub fn makespan(durations: &[f64], workers: usize) -> f64 {
    let mut free = vec![0.0f64; workers.max(1)];
    for &duration in durations {
        let earliest = free
            .iter_mut()
            .min_by(|a, b| a.total_cmp(b))
            .expect("at least one worker");
        *earliest += duration;
    }
    free.into_iter().fold(0.0, f64::max)
}

/// The coordinator's time: a LIST per 1,000 staged objects, a ranged GET
/// of each object's index (so many at once), a PUT per item (the workers'
/// requests at once) and a SendMessageBatch per ten items.
pub fn coordinator_s(objects: f64, items: usize, deployment: &Deployment, s3: &S3Model) -> f64 {
    let items = items as f64;
    (objects / LIST_PAGE).ceil() * s3.latency_s
        + transfer_s(objects, 0.0, deployment.index_reads_at_once, s3)
        + transfer_s(items, 0.0, deployment.get_concurrency, s3)
        + (items / SEND_BATCH).ceil() * s3.latency_s
}

/// Simulates one hour of `deployment`'s traffic.
pub fn simulate(deployment: &Deployment, measured: &Measured, s3: &S3Model) -> Hour {
    let hour_bytes = deployment.events_per_s * 3600.0 * deployment.event_bytes;
    let objects = (hour_bytes / measured.staged_object_bytes).ceil().max(1.0);
    let units = units(&deployment.shape);
    let staged_of = |share: f64| share * hour_bytes / measured.staged_ratio;
    let items = items(
        &units,
        staged_of,
        deployment.work_item_bytes,
        deployment.item_partitions,
    );
    let costs: Vec<ItemCost> = items
        .iter()
        .map(|item| item_cost(item, hour_bytes, objects, deployment, measured, s3))
        .collect();
    let durations: Vec<f64> = costs.iter().map(ItemCost::total_s).collect();
    let longest = costs
        .iter()
        .copied()
        .max_by(|a, b| a.total_s().total_cmp(&b.total_s()))
        .unwrap_or_default();
    let gets: f64 = costs.iter().map(|cost| cost.gets).sum();
    let coordinator_s = coordinator_s(objects, items.len(), deployment, s3);
    let makespan_s = makespan(&durations, deployment.workers);
    let prefix_floor_s = gets / s3.prefix_gets_per_s;
    let flush_s = coordinator_s + makespan_s.max(prefix_floor_s);
    let published_after_end_s =
        first_run_minute(deployment.schedule_minute, deployment.grace_minutes) * 60.0 + flush_s;
    let published_after_close_s = published_after_end_s - deployment.grace_minutes * 60.0;
    let fits_lambda = longest.total_s() <= LAMBDA_LIMIT_SECONDS
        && coordinator_s <= LAMBDA_LIMIT_SECONDS
        && costs
            .iter()
            .all(|cost| cost.staged_bytes <= deployment.spool_bytes);
    let sustainable = fits_lambda && flush_s <= 3600.0;
    Hour {
        ndjson_bytes: hour_bytes,
        staged_objects: objects,
        items: items.len(),
        longest,
        gets,
        coordinator_s,
        makespan_s,
        prefix_floor_s,
        flush_s,
        published_after_end_s,
        published_after_close_s,
        fits_lambda,
        sustainable,
        meets_goal: sustainable && published_after_close_s <= GOAL_AFTER_CLOSE_S,
    }
}

/// The most events a second for which `holds` (of the simulated hour) is
/// true, found by doubling and then bisection to 0.1%; 0 when not even a
/// hundred events a second hold.
pub fn max_events_per_s(
    deployment: &Deployment,
    measured: &Measured,
    s3: &S3Model,
    holds: impl Fn(&Hour) -> bool,
) -> f64 {
    let at = |events_per_s: f64| {
        holds(&simulate(
            &Deployment {
                events_per_s,
                ..*deployment
            },
            measured,
            s3,
        ))
    };
    let (mut low, mut high) = (100.0, 200.0);
    if !at(low) {
        return 0.0;
    }
    while at(high) {
        low = high;
        high *= 2.0;
        if high > 1e10 {
            return high;
        }
    }
    while high - low > low * 0.001 {
        let middle = (low + high) / 2.0;
        if at(middle) {
            low = middle;
        } else {
            high = middle;
        }
    }
    low
}

/// The fewest shards (a power of two up to 1,024) with which the big
/// tenant's hour meets the goal; `None` if none does.
pub fn shards_for_goal(
    deployment: &Deployment,
    measured: &Measured,
    s3: &S3Model,
) -> Option<usize> {
    (0..=10).map(|power| 1usize << power).find(|&shards| {
        let deployment = Deployment {
            shape: Shape {
                big_shards: shards,
                ..deployment.shape
            },
            ..*deployment
        };
        simulate(&deployment, measured, s3).meets_goal
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured() -> Measured {
        Measured {
            compaction_mb_s: 60.0,
            compaction_large_mb_s: 55.0,
            limit_mb_s: 65.0,
            limit_large_mb_s: 70.0,
            decompress_mb_s: 900.0,
            gzip_mb_s: 80.0,
            staged_ratio: 4.0,
            archive_ratio: 4.5,
            staged_object_bytes: 16e6,
        }
    }

    fn s3() -> S3Model {
        S3Model {
            stream_mb_s: 85.0,
            latency_s: 0.1,
            prefix_gets_per_s: 5500.0,
        }
    }

    fn deployment(shape: Shape) -> Deployment {
        Deployment {
            events_per_s: 100_000.0,
            event_bytes: 1000.0,
            shape,
            workers: 64,
            memory_mb: 1024.0,
            threads: 1.0,
            vcpu_speed: 1.0,
            get_concurrency: 4,
            index_reads_at_once: 16,
            work_item_bytes: 64.0 * 1024.0 * 1024.0,
            item_partitions: 1024,
            spool_bytes: 2048e6,
            destinations: 1,
            schedule_minute: 15.0,
            grace_minutes: 10.0,
        }
    }

    fn one_tenant(shards: usize) -> Shape {
        Shape {
            big_share: 1.0,
            big_shards: shards,
            small_tenants: 0,
        }
    }

    #[test]
    fn items_on_workers_end_when_the_busiest_worker_ends() {
        assert_eq!(makespan(&[3.0, 3.0, 3.0, 3.0], 2), 6.0);
        assert_eq!(makespan(&[10.0, 1.0, 1.0], 3), 10.0);
        assert_eq!(makespan(&[10.0, 1.0, 1.0], 1), 12.0);
        // In queue order: the long item last waits for a free worker.
        assert_eq!(makespan(&[1.0, 1.0, 10.0], 2), 11.0);
        assert_eq!(makespan(&[], 4), 0.0);
    }

    #[test]
    fn items_are_consecutive_units_within_the_budget_and_the_count() {
        let unit = |share| Unit {
            share,
            large: false,
        };
        let units = [
            unit(0.2),
            unit(0.2),
            unit(0.7),
            unit(0.1),
            unit(0.1),
            unit(0.1),
        ];
        let cut = items(&units, |share| share * 100.0, 45.0, 2);
        let sizes: Vec<usize> = cut.iter().map(|item| item.units).collect();
        // 0.2+0.2 fits; 0.7 alone (over the budget); 0.1+0.1 (the count); 0.1.
        assert_eq!(sizes, [2, 1, 2, 1]);
        let total: f64 = cut.iter().map(|item| item.share).sum();
        assert!((total - 1.4).abs() < 1e-9);
    }

    #[test]
    fn a_shape_is_its_small_tenants_then_the_big_tenants_shards() {
        let units = units(&Shape {
            big_share: 0.9,
            big_shards: 4,
            small_tenants: 10,
        });
        assert_eq!(units.len(), 14);
        assert!(units[..10].iter().all(|unit| !unit.large));
        assert!((units[0].share - 0.01).abs() < 1e-12);
        assert!((units[13].share - 0.225).abs() < 1e-12);
        let total: f64 = units.iter().map(|unit| unit.share).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_worker_compacts_on_no_more_cores_than_it_has_threads() {
        assert!((vcpus(1024.0) - 0.579).abs() < 0.001);
        assert!((vcpus(10240.0) - 5.789).abs() < 0.001);
        assert_eq!(compaction_cores(3008.0, 1.0), 1.0);
        assert_eq!(compaction_cores(1769.0, 1.0), 1.0);
        assert!(compaction_cores(3008.0, 4.0) > 1.7);
        // So above 1,769 MB a one-thread worker's item takes no less CPU.
        let shape = one_tenant(64);
        let hour = |memory_mb| {
            simulate(
                &Deployment {
                    memory_mb,
                    ..deployment(shape)
                },
                &measured(),
                &s3(),
            )
        };
        assert_eq!(hour(1769.0).longest.cpu_s, hour(3008.0).longest.cpu_s);
        assert!(hour(1024.0).longest.cpu_s > hour(1769.0).longest.cpu_s * 1.7);
    }

    #[test]
    fn an_hour_is_closed_by_the_first_run_after_its_grace() {
        assert_eq!(first_run_minute(15.0, 10.0), 15.0);
        assert_eq!(first_run_minute(15.0, 15.0), 15.0);
        assert_eq!(first_run_minute(5.0, 10.0), 65.0);
        assert_eq!(first_run_minute(15.0, 80.0), 135.0);
    }

    #[test]
    fn a_unit_in_every_event_batch_is_read_from_every_staged_object() {
        assert_eq!(objects_holding(1.0, 10.0), 1.0);
        // A tenant with a thousandth of 16,000-event objects is in all.
        assert!(objects_holding(0.001, 16_000.0) > 0.999_99);
        // One with a millionth is in about 1.6% of them.
        assert!((objects_holding(1e-6, 16_000.0) - 0.0159).abs() < 0.0005);
    }

    #[test]
    fn a_huge_shardless_tenant_does_not_fit_one_worker() {
        let hour = simulate(&deployment(one_tenant(1)), &measured(), &s3());
        assert_eq!(hour.items, 1);
        assert!(hour.longest.total_s() > LAMBDA_LIMIT_SECONDS);
        assert!(hour.longest.staged_bytes > 2048e6);
        assert!(!hour.fits_lambda && !hour.meets_goal);
    }

    #[test]
    fn more_shards_shorten_the_long_pole() {
        let longest = |shards| {
            simulate(&deployment(one_tenant(shards)), &measured(), &s3())
                .longest
                .total_s()
        };
        assert!(longest(64) < longest(16));
        assert!(longest(16) < longest(4));
    }

    #[test]
    fn a_huge_tenants_many_shards_are_bound_by_their_reads() {
        // Each shard reads a range of every staged object (the tenant is in
        // all of them) while it compresses a 1,024th of the tenant.
        let hour = simulate(&deployment(one_tenant(1024)), &measured(), &s3());
        assert!(hour.longest.read_s > hour.longest.cpu_s);
        assert!((hour.longest.gets / hour.staged_objects - 1.0).abs() < 1e-6);
        // So the hour's GETs grow with the shards, and more shards stop
        // paying: the prefix's GET rate bounds the flush.
        let few = simulate(&deployment(one_tenant(64)), &measured(), &s3());
        assert!((hour.gets / few.gets - 16.0).abs() < 1e-3);
        assert!(hour.prefix_floor_s > few.prefix_floor_s * 15.0);
    }

    #[test]
    fn the_hour_is_published_after_the_run_and_the_flush() {
        let hour = simulate(
            &Deployment {
                events_per_s: 1000.0,
                ..deployment(Shape {
                    big_share: 0.0,
                    big_shards: 1,
                    small_tenants: 10,
                })
            },
            &measured(),
            &s3(),
        );
        assert!(hour.meets_goal);
        let flush = hour.coordinator_s + hour.makespan_s.max(hour.prefix_floor_s);
        assert!((hour.published_after_end_s - (15.0 * 60.0 + flush)).abs() < 1e-9);
        assert!((hour.published_after_close_s - (hour.published_after_end_s - 600.0)).abs() < 1e-9);
    }

    #[test]
    fn more_workers_flush_an_even_hour_sooner_until_each_has_one_item() {
        let shape = Shape {
            big_share: 0.0,
            big_shards: 1,
            small_tenants: 1000,
        };
        let flush = |workers| {
            simulate(
                &Deployment {
                    workers,
                    ..deployment(shape)
                },
                &measured(),
                &s3(),
            )
        };
        assert!(flush(64).makespan_s < flush(10).makespan_s / 5.0);
        let all = flush(2000);
        assert_eq!(all.makespan_s, all.longest.total_s());
    }

    #[test]
    fn the_most_events_a_second_hold_and_a_little_more_do_not() {
        let deployment = deployment(Shape {
            big_share: 0.0,
            big_shards: 1,
            small_tenants: 1000,
        });
        let goal = |hour: &Hour| hour.meets_goal;
        let most = max_events_per_s(&deployment, &measured(), &s3(), goal);
        assert!(most > 100.0);
        let at = |events_per_s| {
            simulate(
                &Deployment {
                    events_per_s,
                    ..deployment
                },
                &measured(),
                &s3(),
            )
        };
        assert!(at(most).meets_goal);
        assert!(!at(most * 1.01).meets_goal);
        // The codecs alone are faster than the compaction, never slower.
        let limit = max_events_per_s(&deployment, &measured().at_the_limit(), &s3(), goal);
        assert!(limit >= most);
    }

    #[test]
    fn the_fewest_shards_that_meet_the_goal_are_found() {
        let deployment = Deployment {
            events_per_s: 20_000.0,
            ..deployment(one_tenant(1))
        };
        let shards = shards_for_goal(&deployment, &measured(), &s3()).expect("some shard count");
        let meets = |shards| {
            simulate(
                &Deployment {
                    shape: one_tenant(shards),
                    ..deployment
                },
                &measured(),
                &s3(),
            )
            .meets_goal
        };
        assert!(meets(shards));
        assert!(shards == 1 || !meets(shards / 2));
    }
}
