//! Cost per million 1 KB events, from the run's measured CPU time, request
//! counts and staged output, and AWS's us-east-1 list prices; and the same
//! events through Kinesis Data Firehose. Everything here is arithmetic on
//! those inputs, and every count is scaled by one rule: what follows the
//! bytes (CPU time, SQS requests, batcher invocations and their PUTs, what
//! Firehose ingests) is scaled by the quoted bytes over the measured bytes;
//! what follows the partitions (the flusher's requests, Firehose's objects)
//! is counted per partition-hour, and a million events of the quoted shape
//! hold as many partition-hours as the run held per million of its events.
//! Nothing is scaled by the event size, the message count or the object count.

use serde_json::{Value, json};
use shared::interval::Interval;

/// us-east-1 list prices, in US dollars (on-demand, first tier).
pub mod prices {
    /// Lambda arm64, per GB-second (first 7.5 billion GB-s a month).
    /// Source: <https://aws.amazon.com/lambda/pricing/>, "Arm Price".
    pub const LAMBDA_ARM_GB_SECOND: f64 = 0.000_013_333_4;
    /// Lambda, per request. Source: <https://aws.amazon.com/lambda/pricing/>.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// SQS standard queue, per request, each 64 KB chunk of a request's
    /// payload billed as one. Source: <https://aws.amazon.com/sqs/pricing/>.
    pub const SQS_REQUEST: f64 = 0.40 / 1e6;
    /// S3 Standard PUT, COPY, POST and LIST, per request.
    /// Source: <https://aws.amazon.com/s3/pricing/>, "Requests & data retrievals".
    pub const S3_PUT: f64 = 0.005 / 1000.0;
    /// S3 Standard GET, SELECT and all other requests, per request.
    /// Source: <https://aws.amazon.com/s3/pricing/>; DELETE is free there.
    pub const S3_GET: f64 = 0.0004 / 1000.0;
    /// Firehose Direct PUT ingestion, per GB, each record rounded up to a
    /// multiple of 5 KB. Source: <https://aws.amazon.com/firehose/pricing/>.
    pub const FIREHOSE_GB: f64 = 0.029;
    /// Firehose dynamic partitioning, per GB delivered to S3.
    /// Source: <https://aws.amazon.com/firehose/pricing/>.
    pub const FIREHOSE_PARTITIONING_GB: f64 = 0.020;
    /// Firehose dynamic partitioning, per object delivered to S3 ($0.005 per
    /// 1,000). Source: <https://aws.amazon.com/firehose/pricing/>. Its
    /// optional JQ processing hours are left out: Firehose is quoted at its
    /// cheapest.
    pub const FIREHOSE_PARTITIONING_OBJECT: f64 = 0.005 / 1000.0;
}

/// Lambda's memory for one full vCPU: below it, a function gets
/// memory/1769 of a core, so CPU-bound work costs the same GB-seconds at
/// any smaller memory size (GB-s = CPU seconds × 1769/1024).
pub const LAMBDA_MB_PER_VCPU: f64 = 1769.0;
/// SQS bills each 64 KiB of a request's payload as one request.
pub const SQS_BILLING_CHUNK: usize = 64 * 1024;
/// The event size the cost is quoted for.
pub const QUOTED_EVENT_BYTES: f64 = 1024.0;
/// The events the cost is quoted for.
pub const QUOTED_EVENTS: f64 = 1e6;
/// Assumed latency of one S3 PUT from Lambda, for the batcher's wait on its
/// PUTs (not measured: the benchmark makes no network call).
pub const S3_PUT_SECONDS: f64 = 0.030;
/// Firehose's largest buffer: it delivers an object per partition when a
/// partition's buffer reaches 128 MiB or 900 seconds, whichever is first.
pub const FIREHOSE_BUFFER_BYTES: f64 = 128.0 * 1024.0 * 1024.0;
/// Firehose's longest buffering interval (its range is 0 to 900 seconds).
/// Source: <https://docs.aws.amazon.com/firehose/latest/dev/buffering-hints.html>.
pub const FIREHOSE_MAX_BUFFER_SECONDS: f64 = 900.0;
/// Firehose bills each record's size rounded up to a multiple of 5 KB.
pub const FIREHOSE_RECORD_ROUNDING: usize = 5 * 1000;
/// Firehose's largest record (1,000 KiB, before base64): a message's
/// uncompressed events that exceed it are sent as several records.
/// Source: <https://docs.aws.amazon.com/firehose/latest/dev/limits.html>.
pub const FIREHOSE_MAX_RECORD_BYTES: usize = 1000 * 1024;
/// The destinations a partition's parts are published to, as quoted.
pub const QUOTED_DESTINATIONS: f64 = 1.0;

/// An S3 request's price class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// PUT, COPY, POST, LIST.
    Put,
    /// GET and the rest.
    Get,
    /// DELETE (and DeleteObjects): not billed.
    Free,
}

impl Class {
    fn price(self) -> f64 {
        match self {
            Class::Put => prices::S3_PUT,
            Class::Get => prices::S3_GET,
            Class::Free => 0.0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::Put => "put",
            Class::Get => "get",
            Class::Free => "free",
        }
    }
}

/// How the batcher staged a run's events: what the flusher then reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagedFormat {
    /// One gzip chunk per partition, invocation and sub-batch (the old format).
    Chunks,
    /// One indexed zstd object per invocation (sub-batch) and hour.
    Objects,
}

impl StagedFormat {
    /// The name the batcher phase records.
    pub fn name(self) -> &'static str {
        match self {
            StagedFormat::Chunks => "chunks",
            StagedFormat::Objects => "objects",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [StagedFormat::Chunks, StagedFormat::Objects]
            .into_iter()
            .find(|format| format.name() == name)
    }
}

/// Firehose's view of a producer style's messages: what it would ingest
/// for the records as sent, and for the same events uncompressed (what
/// dynamic partitioning needs), each record rounded up to 5 KB.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FirehoseRecords {
    /// Records as sent: one a message.
    pub records: usize,
    /// Billed bytes of the records as sent (compressed ones compressed).
    pub sent_billed_bytes: usize,
    /// Records of the same events uncompressed: a message's events in
    /// records of at most [`FIREHOSE_MAX_RECORD_BYTES`].
    pub partitioned_records: usize,
    /// Their billed bytes.
    pub partitioned_billed_bytes: usize,
}

fn firehose_billed(bytes: usize) -> usize {
    bytes.div_ceil(FIREHOSE_RECORD_ROUNDING).max(1) * FIREHOSE_RECORD_ROUNDING
}

impl FirehoseRecords {
    /// Counts one message of `size` bytes as sent (one record), carrying
    /// `event_bytes` of NDJSON events (as many records as they need).
    pub fn add_message(&mut self, size: usize, event_bytes: usize) {
        self.records += 1;
        self.sent_billed_bytes += firehose_billed(size);
        let records = event_bytes.div_ceil(FIREHOSE_MAX_RECORD_BYTES).max(1);
        let full = records - 1;
        self.partitioned_records += records;
        self.partitioned_billed_bytes += full * firehose_billed(FIREHOSE_MAX_RECORD_BYTES)
            + firehose_billed(event_bytes - full * FIREHOSE_MAX_RECORD_BYTES);
    }

    pub fn to_json(self) -> Value {
        json!({
            "records": self.records,
            "sent_billed_bytes": self.sent_billed_bytes,
            "partitioned_records": self.partitioned_records,
            "partitioned_billed_bytes": self.partitioned_billed_bytes,
        })
    }
}

/// SQS requests of a queue's traffic: producers' `SendMessageBatch` (ten
/// messages, 256 KiB at most), the event source mapping's `ReceiveMessage`
/// (ten at most) and `DeleteMessageBatch` (ten), each billed per 64 KiB.
#[derive(Debug, Clone, Default)]
pub struct SqsRequests {
    send: Group,
    receive: Group,
    pub messages: usize,
    pub message_bytes: usize,
    pub send_calls: usize,
    pub send_billed: usize,
    pub receive_calls: usize,
    pub receive_billed: usize,
    pub delete_calls: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Group {
    count: usize,
    bytes: usize,
}

fn billed(bytes: usize) -> usize {
    bytes.div_ceil(SQS_BILLING_CHUNK).max(1)
}

impl SqsRequests {
    /// Counts one message of `size` bytes (body and attributes).
    pub fn add_message(&mut self, size: usize) {
        self.messages += 1;
        self.message_bytes += size;
        if self.send.count == 10 || self.send.bytes + size > 256 * 1024 {
            self.close_send();
        }
        self.send.count += 1;
        self.send.bytes += size;
        if self.receive.count == 10 {
            self.close_receive();
        }
        self.receive.count += 1;
        self.receive.bytes += size;
    }

    fn close_send(&mut self) {
        if self.send.count > 0 {
            self.send_calls += 1;
            self.send_billed += billed(self.send.bytes);
        }
        self.send = Group::default();
    }

    fn close_receive(&mut self) {
        if self.receive.count > 0 {
            self.receive_calls += 1;
            self.receive_billed += billed(self.receive.bytes);
            self.delete_calls += 1;
        }
        self.receive = Group::default();
    }

    /// Counts the last, partly filled requests.
    pub fn finish(&mut self) {
        self.close_send();
        self.close_receive();
    }

    pub fn billed(&self) -> usize {
        self.send_billed + self.receive_billed + self.delete_calls
    }

    pub fn to_json(&self) -> Value {
        json!({
            "messages": self.messages,
            "message_bytes": self.message_bytes,
            "send_calls": self.send_calls,
            "send_billed": self.send_billed,
            "receive_calls": self.receive_calls,
            "receive_billed": self.receive_billed,
            "delete_calls": self.delete_calls,
            "billed_requests": self.billed(),
        })
    }
}

/// What one producer style's run measured, all for the whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Events the batcher phase staged, and their NDJSON bytes.
    pub events: f64,
    pub bytes: f64,
    /// Batcher invocations (SQS events of the configured batch size).
    pub invocations: f64,
    /// The batcher's PUTs: staged objects (or chunks) and errors files.
    pub batcher_puts: f64,
    /// The batcher's CPU seconds for the whole run.
    pub batcher_cpu_seconds: f64,
    /// How the run was staged, and how many staged objects (or chunks).
    pub format: StagedFormat,
    pub staged_objects: f64,
    /// Partition-hours (stream, tenant, hour) the run's events fell in.
    pub partitions: f64,
    /// SQS requests as billed (send, receive, delete).
    pub sqs_billed_requests: f64,
    pub firehose: FirehoseRecords,
    /// The flusher's compaction: its CPU seconds over the NDJSON bytes it
    /// compacted (measured on one style's staged output).
    pub flusher_cpu_seconds: f64,
    pub flusher_bytes: f64,
    /// The archive's compressed bytes over the NDJSON bytes compacted
    /// (measured by the same flusher phase).
    pub archive_ratio: f64,
    /// PUT concurrency of the batcher (it waits on its PUTs this many at a time).
    pub put_concurrency: f64,
}

fn number(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("figure {pointer} is missing from {value}"))
}

impl Measured {
    /// The figures of a batcher phase and a flusher phase (their JSON).
    pub fn from_phases(batcher: &Value, flusher: &Value, put_concurrency: usize) -> Self {
        let count = |pointer: &str| number(batcher, pointer) as usize;
        Self {
            events: number(batcher, "/events"),
            bytes: number(batcher, "/bytes"),
            invocations: number(batcher, "/invocations"),
            batcher_puts: number(batcher, "/s3_puts"),
            batcher_cpu_seconds: number(batcher, "/rate/cpu_seconds"),
            format: batcher["staged"]["format"]
                .as_str()
                .and_then(StagedFormat::parse)
                .unwrap_or_else(|| panic!("staged format missing from {batcher}")),
            staged_objects: number(batcher, "/staged/objects"),
            partitions: number(batcher, "/staged/partitions"),
            sqs_billed_requests: number(batcher, "/sqs/billed_requests"),
            firehose: FirehoseRecords {
                records: count("/firehose/records"),
                sent_billed_bytes: count("/firehose/sent_billed_bytes"),
                partitioned_records: count("/firehose/partitioned_records"),
                partitioned_billed_bytes: count("/firehose/partitioned_billed_bytes"),
            },
            flusher_cpu_seconds: number(flusher, "/rate/cpu_seconds"),
            flusher_bytes: number(flusher, "/bytes"),
            archive_ratio: number(flusher, "/part_bytes") / number(flusher, "/bytes"),
            put_concurrency: put_concurrency as f64,
        }
    }

    /// The factor from the run's bytes to the quoted bytes (a million 1 KB
    /// events): what every byte-driven count is multiplied by.
    pub fn byte_scale(&self) -> f64 {
        QUOTED_EVENTS * QUOTED_EVENT_BYTES / self.bytes
    }

    /// The run reshaped so that a million quoted events come from `tenants`
    /// tenants (the run measured `run_tenants`): as many partitions a
    /// tenant (its streams), the same events and bytes, everything else as
    /// measured (the batcher's staged objects follow its invocations, not
    /// its tenants).
    pub fn with_tenants(&self, tenants: f64, run_tenants: f64) -> Self {
        let streams = self.partitions / run_tenants;
        Self {
            partitions: tenants * streams * self.events / QUOTED_EVENTS,
            ..self.clone()
        }
    }

    /// Partition-hours in a million events of the run's shape (events per
    /// partition kept: 1,000 tenants and two streams for a million events
    /// in an hour hold 2,000, as 200 tenants for 200,000 events do).
    pub fn partition_hours(&self) -> f64 {
        self.partitions * QUOTED_EVENTS / self.events
    }
}

/// One kind of S3 request, how many a million quoted events cost, and why
/// the pipeline makes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub who: &'static str,
    pub what: &'static str,
    pub class: Class,
    /// Requests per million quoted events.
    pub count: f64,
    /// Per partition-hour (the flusher's), when it is counted that way.
    pub per_partition_hour: Option<f64>,
    pub why: &'static str,
}

impl Request {
    fn usd(&self) -> f64 {
        self.count * self.class.price()
    }

    fn to_json(&self) -> Value {
        json!({
            "who": self.who,
            "what": self.what,
            "class": self.class.name(),
            "count": self.count,
            "per_partition_hour": self.per_partition_hour,
            "usd": self.usd(),
            "why": self.why,
        })
    }
}

/// Every S3 request of a million quoted events, by kind. The flusher's are
/// the request pattern of its flush (functions/flusher's `partition::prepare`
/// and `complete`, `bundle`, `publish`, `scan`; tests/flusher.rs counts
/// them from S3's side) for a partition-hour flushed once into one part
/// with [`QUOTED_DESTINATIONS`] destination, every partition of the hour
/// flushed together (one bundle);
/// what it reads of the staged input follows the staged format the batcher
/// phase produced.
pub fn s3_requests(run: &Measured) -> Vec<Request> {
    let scale = run.byte_scale();
    let hours = run.partition_hours();
    let objects = run.staged_objects * scale;
    let per_partition = |who, what, class, per: f64, why| Request {
        who,
        what,
        class,
        count: per * hours,
        per_partition_hour: Some(per),
        why,
    };
    let mut requests = vec![Request {
        who: "batcher",
        what: "PUT staged object or chunk, and errors file",
        class: Class::Put,
        count: run.batcher_puts * scale,
        per_partition_hour: None,
        why: "stores what an invocation accepted (and refused) before SQS deletes its messages",
    }];
    requests.push(match run.format {
        StagedFormat::Chunks => per_partition(
            "flusher",
            "GET staged chunk",
            Class::Get,
            objects / hours,
            "each chunk of the partition, read whole once",
        ),
        StagedFormat::Objects => Request {
            who: "flusher",
            what: "GET staged object (index tail, then its segments)",
            class: Class::Get,
            count: 2.0 * objects,
            per_partition_hour: None,
            why: "each staged object read once for every partition it holds: its index, then the ranges",
        },
    });
    requests.extend([
        per_partition(
            "flusher",
            "GET manifest",
            Class::Get,
            1.0,
            "what the partition committed and consumed before (a 404 the first time, billed all the same)",
        ),
        {
            // The quoted hour's archive parts at the measured ratio and its
            // id digests (16 bytes an event), in bundles of at most
            // `BUNDLE_PARTITIONS` partitions, each sent in 8 MiB upload
            // parts with its upload's create and complete.
            let bundles = (hours / flusher::BUNDLE_PARTITIONS as f64).ceil();
            let bytes = QUOTED_EVENTS * QUOTED_EVENT_BYTES * run.archive_ratio + 16.0 * QUOTED_EVENTS;
            let parts_each = (bytes / bundles / flusher::archive::UPLOAD_PART_BYTES as f64).ceil();
            Request {
                who: "flusher",
                what: "PUT bundle (CreateMultipartUpload, UploadPart, Complete)",
                class: Class::Put,
                count: bundles * (parts_each + 2.0),
                per_partition_hour: None,
                why: "one object holds the archive part and id digest of every partition flushed together (up to 256), each at a range its manifest records",
            }
        },
        per_partition(
            "flusher",
            "PUT manifest (commit)",
            Class::Put,
            1.0,
            "the conditional write that commits the parts and the consumed input: exactly once",
        ),
        per_partition(
            "flusher",
            "GET archive part (publish)",
            Class::Get,
            QUOTED_DESTINATIONS,
            "publishing reads the committed part back to write it to the destination",
        ),
        per_partition(
            "flusher",
            "PUT destination copy",
            Class::Put,
            QUOTED_DESTINATIONS,
            "the part in the destination's bucket",
        ),
    ]);
    requests.push(match run.format {
        StagedFormat::Chunks => per_partition(
            "flusher",
            "DeleteObjects staged chunks",
            Class::Free,
            (objects / hours / 1000.0).ceil(),
            "the consumed chunks, once the manifest commits them",
        ),
        StagedFormat::Objects => Request {
            who: "flusher",
            what: "DeleteObjects staged objects",
            class: Class::Free,
            count: (objects / 1000.0).ceil(),
            per_partition_hour: None,
            why: "a staged object, once every partition in its index consumed it",
        },
    });
    requests.push(Request {
        who: "flusher",
        what: "LIST staging and pending",
        class: Class::Put,
        // The date folders, the hour folders, the hour's keys (1,000 a
        // page) and pending/, for the hour flushed.
        count: 3.0 + (objects / 1000.0).ceil(),
        per_partition_hour: None,
        why: "finds the closed hours' staged input and the pending publishes",
    });
    requests
}

/// Firehose at its cheapest buffering delivering the same events, per
/// million quoted events: ingestion of the records as sent alone, and with
/// dynamic partitioning by tenant of uncompressed records, at least
/// four objects a partition-hour (3,600 s over [`FIREHOSE_MAX_BUFFER_SECONDS`]),
/// each with its object fee and the S3 PUT the destination bills.
pub fn firehose(run: &Measured) -> Value {
    firehose_at(run, FIREHOSE_MAX_BUFFER_SECONDS)
}

/// [`firehose`] with a buffering interval of `buffer_seconds` (at most
/// [`FIREHOSE_MAX_BUFFER_SECONDS`]): a partition active all hour gets at
/// least 3,600 / `buffer_seconds` objects, each with its fee and PUT.
pub fn firehose_at(run: &Measured, buffer_seconds: f64) -> Value {
    let scale = run.byte_scale();
    let hours = run.partition_hours();
    let quoted_bytes = QUOTED_EVENTS * QUOTED_EVENT_BYTES;
    let ingest_usd = run.firehose.sent_billed_bytes as f64 * scale / 1e9 * prices::FIREHOSE_GB;
    let partitioned_ingest_usd =
        run.firehose.partitioned_billed_bytes as f64 * scale / 1e9 * prices::FIREHOSE_GB;
    let buffer_seconds = buffer_seconds.min(FIREHOSE_MAX_BUFFER_SECONDS);
    let per_partition = (quoted_bytes / hours / FIREHOSE_BUFFER_BYTES)
        .ceil()
        .max((3600.0 / buffer_seconds).ceil());
    let objects = per_partition * hours;
    let delivered_usd = quoted_bytes / 1e9 * prices::FIREHOSE_PARTITIONING_GB;
    let objects_usd = objects * (prices::FIREHOSE_PARTITIONING_OBJECT + prices::S3_PUT);
    json!({
        "records": run.firehose.records as f64 * scale,
        "partitioned_records": run.firehose.partitioned_records as f64 * scale,
        "ingest_usd": ingest_usd,
        "partitioned_usd": partitioned_ingest_usd + delivered_usd + objects_usd,
        "partitioned_ingest_usd": partitioned_ingest_usd,
        "partitioned_delivered_usd": delivered_usd,
        "partitioned_objects_usd": objects_usd,
        "objects": objects,
        "objects_per_partition_hour": per_partition,
        "buffer_seconds": buffer_seconds,
    })
}

/// The cost per million 1 KB events of one producer style, itemized (each
/// S3 request kind with its count and why), with Firehose's for the same
/// events.
pub fn per_million(run: &Measured) -> Value {
    let scale = run.byte_scale();
    let invocations = run.invocations * scale;
    let batcher_puts = run.batcher_puts * scale;
    let batcher_gb_s = run.batcher_cpu_seconds * scale * LAMBDA_MB_PER_VCPU / 1024.0
        // Waiting on its PUTs (PUT_CONCURRENCY at a time), at 512 MB.
        + batcher_puts / run.put_concurrency * S3_PUT_SECONDS * 0.5;
    let flusher_gb_s = run.flusher_cpu_seconds / run.flusher_bytes
        * QUOTED_EVENTS
        * QUOTED_EVENT_BYTES
        * LAMBDA_MB_PER_VCPU
        / 1024.0;
    let lambda = (batcher_gb_s + flusher_gb_s) * prices::LAMBDA_ARM_GB_SECOND
        + invocations * prices::LAMBDA_REQUEST;
    let sqs_requests = run.sqs_billed_requests * scale;
    let sqs = sqs_requests * prices::SQS_REQUEST;
    let requests = s3_requests(run);
    let s3: f64 = requests.iter().map(Request::usd).sum();
    let count = |who: &str, class: Class| -> f64 {
        requests
            .iter()
            .filter(|r| r.who == who && r.class == class)
            .map(|r| r.count)
            .sum()
    };
    let flusher_puts = count("flusher", Class::Put);
    let firehose = firehose(run);
    let total = lambda + sqs + s3;
    json!({
        "usd": total,
        "lambda_usd": lambda,
        "sqs_usd": sqs,
        "s3_usd": s3,
        "byte_scale": scale,
        "partition_hours": run.partition_hours(),
        "sqs_billed_requests": sqs_requests,
        "batcher_invocations": invocations,
        "batcher_gb_s": batcher_gb_s,
        "flusher_gb_s": flusher_gb_s,
        "batcher_s3_puts": batcher_puts,
        "flusher_s3_puts": flusher_puts,
        "flusher_puts_per_partition_hour": flusher_puts / run.partition_hours(),
        "s3_gets": count("batcher", Class::Get) + count("flusher", Class::Get),
        "s3_requests": requests.iter().map(Request::to_json).collect::<Vec<_>>(),
        "firehose": firehose,
        "vs_firehose_partitioned": total / number(&firehose, "/partitioned_usd"),
    })
}

/// The flusher's memory in GB (the template's `FlusherFunction`,
/// 1,024 MB): what an extra run's wait on S3 is billed at.
pub const FLUSHER_MEMORY_GB: f64 = 1.0;

/// Whether the staged objects of an open hour outlive the run that
/// flushed them: what decides how much a run with a delivery interval reads
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staying {
    /// Every partition in the hour's staged objects has a destination with
    /// the interval: a run consumes the objects it lists whole, and its last
    /// worker deletes them, so each object is listed, tail-read and
    /// range-read once, as in an hourly flush.
    Deleted,
    /// Each staged object also holds a partition flushed only at the close
    /// (a stream or tenant whose destination is hourly, or that has none):
    /// the objects stay until then, every commit of the open hour records
    /// what it published (a second manifest PUT), and every run of the
    /// open hour lists and tail-reads all of them again, and reads the
    /// manifest of every
    /// interval partition in them to leave out what earlier runs consumed
    /// (`scan::leave_out_consumed`: a partition with nothing new is not
    /// visited). The hourly partitions' own requests are today's model's
    /// and are not added.
    Kept,
}

impl Staying {
    pub fn name(self) -> &'static str {
        match self {
            Staying::Deleted => "deleted",
            Staying::Kept => "kept",
        }
    }
}

/// A deployment whose destinations get a file every `interval`, the flush
/// schedule firing as often.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    pub interval: Interval,
    /// `FlushGraceMinutes`: an hour closes this long after its end.
    pub grace_minutes: u32,
    pub staying: Staying,
    /// `FLUSH_CONCURRENCY` and `READ_CONCURRENCY`: the requests a worker
    /// has in flight, per partition and per staged object.
    pub flush_concurrency: f64,
    pub read_concurrency: f64,
}

impl Delivery {
    /// Runs that flush an hour's new data: one for each interval (the
    /// schedule fires 60 / M times an hour); 1 for an hourly deployment.
    pub fn runs(&self) -> f64 {
        (60 / self.interval.minutes()) as f64
    }

    /// Runs after the hour's end that still find it open (its grace not
    /// over): `ceil(grace / M) - 1`; the next one closes it.
    pub fn grace_runs(&self) -> f64 {
        let minutes = self.interval.minutes();
        (self.grace_minutes.div_ceil(minutes) as f64 - 1.0).max(0.0)
    }

    /// Firehose's buffering interval for the same freshness: M minutes, at
    /// most its longest (900 s).
    pub fn firehose_buffer_seconds(&self) -> f64 {
        (60.0 * self.interval.minutes() as f64).min(FIREHOSE_MAX_BUFFER_SECONDS)
    }
}

/// What a delivery interval adds to [`per_million`] for a million quoted
/// events (an hour of the quoted traffic): S3 requests by kind, SQS
/// requests of the flush queue, flusher invocations and GB-seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extra {
    pub requests: Vec<Request>,
    pub sqs_requests: f64,
    pub invocations: f64,
    pub gb_s: f64,
}

/// The S3 PUT-class requests of one bundle of `bytes`: one PutObject under
/// an upload part, else a multipart upload (`bundle::Bundle::finish`).
fn bundle_puts(bytes: f64) -> f64 {
    let part = flusher::archive::UPLOAD_PART_BYTES as f64;
    if bytes < part {
        1.0
    } else {
        (bytes / part).ceil() + 2.0
    }
}

/// The requests a delivery interval adds to the hourly flush of
/// [`s3_requests`], counted from the flusher's code (`scan::find_work`,
/// `coordinator`, `worker`, `partition::prepare` and `complete`,
/// `publish`), every partition having events in every interval:
///
/// - each of the 60 / M runs reads the manifest of each partition with
///   staged data in the open hour while planning (`scan::leave_out_consumed`),
///   and commits each partition's new data: a manifest read, an id digest
///   read (none before the first commit), a commit (and, with
///   [`Staying::Kept`], a record of what it published: its consumed
///   objects stay staged), a part read back and a destination file per
///   destination; the first
///   commit writes the pending marker, which the first run after the close
///   visits the partition through (the manifest read the hourly flush
///   makes) and deletes (free);
/// - each run's partitions share bundles (one PUT under 8 MiB), holding
///   their new parts and their whole id digests so far;
/// - each run but the hourly one lists `staging/`, the date, the open
///   hour, `pending/` (a page per 1,000 markers), `work/` and
///   `backfills/`, writes its run record and work items (one per 1,024
///   partitions), sends them (ten a `SendMessageBatch`; the event source
///   mapping receives and deletes each), and each item's worker reads it,
///   records it done and lists the run (the last one reads the run's
///   records);
/// - with [`Staying::Kept`], the re-reads described there.
///
/// Staged objects are counted as the hourly model counts them (every
/// object read once per run that lists it, by one window). Nothing for an
/// hourly deployment.
pub fn interval_extra(run: &Measured, delivery: &Delivery) -> Extra {
    if !delivery.interval.is_minutes() {
        return Extra::default();
    }
    let runs = delivery.runs();
    let grace_runs = delivery.grace_runs();
    let kept = delivery.staying == Staying::Kept;
    let hours = run.partition_hours();
    let objects = run.staged_objects * run.byte_scale();
    let destinations = QUOTED_DESTINATIONS;
    // Runs of the open hour that visit a partition (what earlier runs
    // consumed is left out: a partition is visited only with new data),
    // and those that read its manifest while planning (every run while its
    // objects are staged).
    let visits = runs;
    let planned = if kept { runs + grace_runs } else { runs };
    let per_partition = |what, class, per: f64, why| Request {
        who: "flusher (interval)",
        what,
        class,
        count: per * hours,
        per_partition_hour: Some(per),
        why,
    };
    let per_hour = |what, class, count: f64, why| Request {
        who: "flusher (interval)",
        what,
        class,
        count,
        per_partition_hour: None,
        why,
    };
    let mut requests = vec![
        per_partition(
            "GET manifest",
            Class::Get,
            visits - 1.0 + planned,
            "each open-hour run reads it to plan, and again to flush (the close's flush is the hourly one's)",
        ),
        per_partition(
            "GET id digest (range of a bundle)",
            Class::Get,
            runs - 1.0,
            "each commit after the first de-duplicates against the hour's ids so far",
        ),
        per_partition(
            "PUT manifest (commit, and record of its publishes)",
            Class::Put,
            if kept { 2.0 } else { 1.0 } * (runs - 1.0),
            "a commit a run (the hourly flush has one), and, while its objects stay staged, a record of what it published",
        ),
        per_partition(
            "GET archive part (publish)",
            Class::Get,
            (runs - 1.0) * destinations,
            "each new part read back for each destination",
        ),
        per_partition(
            "PUT destination file",
            Class::Put,
            (runs - 1.0) * destinations,
            "one new file a run",
        ),
        per_partition(
            "PUT pending marker",
            Class::Put,
            1.0,
            "written by the hour's first commit, so that the first run after the close writes _SUCCESS",
        ),
    ];
    // The bundles: per run, the partitions' new parts (a run's share of
    // the hour's archive) and their whole digests so far, in groups of
    // BUNDLE_PARTITIONS; less the hourly flush's bundles.
    let bundles = (hours / flusher::BUNDLE_PARTITIONS as f64).ceil();
    let archive = QUOTED_EVENTS * QUOTED_EVENT_BYTES * run.archive_ratio;
    let digests = 16.0 * QUOTED_EVENTS;
    let interval_bundles: f64 = (1..=runs as u32)
        .map(|k| bundles * bundle_puts((archive / runs + digests * k as f64 / runs) / bundles))
        .sum();
    let hourly_bundles: f64 = s3_requests(run)
        .iter()
        .filter(|r| r.what.starts_with("PUT bundle"))
        .map(|r| r.count)
        .sum();
    requests.push(per_hour(
        "PUT bundles (each run's)",
        Class::Put,
        interval_bundles - hourly_bundles,
        "each run's new parts and whole id digests, a bundle per 256 partitions, less the hourly flush's bundles",
    ));
    // Each staged object listed again by every later run of its open hour.
    let rereads = if kept {
        objects * ((runs + 1.0) / 2.0 + grace_runs)
    } else {
        0.0
    };
    requests.push(per_hour(
        "GET staged object again (index tail)",
        Class::Get,
        rereads,
        "an object still staged is listed and its tail read by every run until the close",
    ));
    // Per run: the coordinator's listing and items, the workers' records.
    let items = (hours / flusher::work_item::ITEM_PARTITIONS as f64).ceil();
    let extra_runs = runs - 1.0;
    // Items: each visiting run's (the close's are the hourly flush's).
    let extra_items = visits * items;
    let hour_pages = if kept {
        (1..=runs as u32)
            .map(|k| (objects * k as f64 / runs / 1000.0).ceil().max(1.0))
            .sum::<f64>()
            + grace_runs * (objects / 1000.0).ceil().max(1.0)
    } else {
        runs * (objects / runs / 1000.0).ceil().max(1.0)
    };
    // staging/, the date, pending/, work/ and backfills/ each run, and the
    // hour's pages; less the hourly run's (the hourly model counts its
    // staging/, date, hour and pending/ LISTs; work/ and backfills/ too here).
    let lists = runs * (4.0 + (hours / 1000.0).ceil()) + hour_pages
        - (5.0 + (objects / 1000.0).ceil())
        + extra_items;
    requests.push(per_hour(
        "LIST staging, the open hour, pending, work and backfills",
        Class::Put,
        lists,
        "each run lists staging/, the date, the open hour's objects, pending/ (every open-hour marker), work/ and backfills/; each worker its run",
    ));
    requests.push(per_hour(
        "PUT run record, work items, done records",
        Class::Put,
        extra_runs + 2.0 * extra_items,
        "the coordinator's record and items of each run, and each worker's done record",
    ));
    requests.push(per_hour(
        "GET work item, run record, done records",
        Class::Get,
        extra_runs + 2.0 * extra_items,
        "each worker reads its item; the run's last reads the run's records",
    ));
    let sqs_requests = extra_runs * (items / 10.0).ceil() + 2.0 * extra_items;
    let invocations = extra_runs + extra_items;
    // Not measured: each extra request waited on at the batcher's assumed
    // S3 latency, per partition `flush_concurrency` at once, per staged
    // object `read_concurrency` at once, the rest one at a time.
    let partition_requests: f64 = requests
        .iter()
        .filter(|r| r.per_partition_hour.is_some())
        .map(|r| r.count)
        .sum();
    let object_requests = rereads;
    let run_requests = lists + 2.0 * (extra_runs + 2.0 * extra_items) + interval_bundles;
    let seconds = (partition_requests / delivery.flush_concurrency
        + object_requests / delivery.read_concurrency
        + run_requests)
        * S3_PUT_SECONDS;
    Extra {
        requests,
        sqs_requests,
        invocations,
        gb_s: seconds * FLUSHER_MEMORY_GB,
    }
}

/// The cost per million quoted events with `delivery`: [`per_million`]
/// (the hourly flush, unchanged) plus [`interval_extra`], against Firehose
/// buffering as long (its object fees and the destination's PUTs apart
/// too), and per tenant-hour for a run of `tenant_hours` tenant-hours a
/// million events.
pub fn per_million_at(run: &Measured, delivery: &Delivery, tenant_hours: f64) -> Value {
    let hourly = per_million(run);
    let extra = interval_extra(run, delivery);
    let extra_s3: f64 = extra.requests.iter().map(Request::usd).sum();
    let extra_sqs = extra.sqs_requests * prices::SQS_REQUEST;
    let extra_lambda =
        extra.gb_s * prices::LAMBDA_ARM_GB_SECOND + extra.invocations * prices::LAMBDA_REQUEST;
    let usd = number(&hourly, "/usd") + extra_s3 + extra_sqs + extra_lambda;
    let hours = run.partition_hours();
    let sum = |class: Class| -> f64 {
        extra
            .requests
            .iter()
            .filter(|r| r.class == class)
            .map(|r| r.count)
            .sum()
    };
    let firehose = firehose_at(run, delivery.firehose_buffer_seconds());
    let firehose_usd = number(&firehose, "/partitioned_usd");
    let firehose_objects_usd = number(&firehose, "/partitioned_objects_usd");
    json!({
        "interval_minutes": delivery.interval.minutes(),
        "runs_per_hour": delivery.runs(),
        "staged_objects": delivery.staying.name(),
        "usd": usd,
        "per_tenant_hour_usd": usd / tenant_hours,
        "hourly_usd": number(&hourly, "/usd"),
        "extra_usd": usd - number(&hourly, "/usd"),
        "extra_s3_usd": extra_s3,
        "extra_sqs_usd": extra_sqs,
        "extra_lambda_usd": extra_lambda,
        "extra_gb_s": extra.gb_s,
        "extra_invocations": extra.invocations,
        "partition_hours": hours,
        "tenant_hours": tenant_hours,
        "flusher_puts_per_partition_hour": number(&hourly, "/flusher_puts_per_partition_hour") + sum(Class::Put) / hours,
        "flusher_extra_gets_per_partition_hour": sum(Class::Get) / hours,
        "extra_requests": extra.requests.iter().map(Request::to_json).collect::<Vec<_>>(),
        "firehose": firehose,
        "vs_firehose_partitioned": usd / firehose_usd,
        "vs_firehose_object_fees": usd / firehose_objects_usd,
    })
}

/// The cost per million events and per tenant-hour of every delivery
/// interval of `intervals` at each tenant count of `tenants` (a million
/// events an hour from that many tenants; the run measured `run_tenants`),
/// staged objects deleted by each run and kept until the close.
pub fn interval_rows(
    run: &Measured,
    run_tenants: f64,
    tenants: &[usize],
    intervals: &[Interval],
    delivery: Delivery,
) -> Vec<Value> {
    let mut rows = Vec::new();
    for &count in tenants {
        let shaped = run.with_tenants(count as f64, run_tenants);
        for &interval in intervals {
            let at = |staying| {
                let delivery = Delivery {
                    interval,
                    staying,
                    ..delivery
                };
                per_million_at(&shaped, &delivery, count as f64)
            };
            rows.push(json!({
                "tenants": count,
                "interval_minutes": interval.minutes(),
                "deleted": at(Staying::Deleted),
                "kept": at(Staying::Kept),
            }));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_kilobyte_messages_ten_to_a_request() {
        let mut sqs = SqsRequests::default();
        for _ in 0..25 {
            sqs.add_message(1000);
        }
        sqs.finish();
        assert_eq!((sqs.send_calls, sqs.send_billed), (3, 3));
        assert_eq!(
            (sqs.receive_calls, sqs.receive_billed, sqs.delete_calls),
            (3, 3, 3)
        );
    }

    #[test]
    fn full_messages_are_billed_per_64_kib() {
        let mut sqs = SqsRequests::default();
        for _ in 0..3 {
            sqs.add_message(256 * 1024);
        }
        sqs.finish();
        // One message per SendMessageBatch (256 KiB per request), 4 chunks each.
        assert_eq!((sqs.send_calls, sqs.send_billed), (3, 12));
        // One ReceiveMessage of all three: 12 chunks.
        assert_eq!((sqs.receive_calls, sqs.receive_billed), (1, 12));
        assert_eq!(sqs.billed(), 12 + 12 + 1);
    }

    /// A run of the default shape: 200,000 events of 623 bytes in 400
    /// partition-hours (200 tenants, two streams), NDJSON messages.
    fn run() -> Measured {
        Measured {
            events: 200_000.0,
            bytes: 200_000.0 * 623.0,
            invocations: 24.0,
            batcher_puts: 24.0,
            batcher_cpu_seconds: 1.5,
            format: StagedFormat::Objects,
            staged_objects: 24.0,
            partitions: 400.0,
            sqs_billed_requests: 5_700.0,
            firehose: FirehoseRecords {
                records: 480,
                sent_billed_bytes: 480 * 265_000,
                partitioned_records: 480,
                partitioned_billed_bytes: 480 * 265_000,
            },
            flusher_cpu_seconds: 2.0,
            flusher_bytes: 200_000.0 * 623.0,
            archive_ratio: 0.15,
            put_concurrency: 16.0,
        }
    }

    fn usd(cost: &Value, pointer: &str) -> f64 {
        number(cost, pointer)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
    }

    #[test]
    fn the_same_bytes_in_more_events_messages_and_partitions_cost_the_same() {
        // Twice the events in the same bytes (events half the size), twice
        // the partitions (events per partition kept), twice the messages
        // and objects: nothing that follows the bytes or the partition-hours
        // of a million events changes.
        let base = run();
        let mut finer = run();
        finer.events *= 2.0;
        finer.partitions *= 2.0;
        finer.staged_objects *= 2.0;
        finer.firehose.records *= 2;
        finer.firehose.partitioned_records *= 2;
        let (a, b) = (per_million(&base), per_million(&finer));
        for pointer in [
            "/lambda_usd",
            "/sqs_usd",
            "/batcher_s3_puts",
            "/flusher_s3_puts",
            "/partition_hours",
            "/firehose/partitioned_usd",
        ] {
            assert!(
                close(usd(&a, pointer), usd(&b, pointer)),
                "{pointer}: {} against {}",
                usd(&a, pointer),
                usd(&b, pointer)
            );
        }
    }

    #[test]
    fn larger_events_do_not_multiply_the_partitions() {
        // The same events and partitions in twice the bytes: a million
        // quoted events still hold 2,000 partition-hours, and the
        // flusher's two PUTs each (one destination) do not change.
        let mut larger = run();
        larger.bytes *= 2.0;
        let cost = per_million(&larger);
        assert!(close(usd(&cost, "/partition_hours"), 2_000.0));
        let per_kind = |cost: &Value, what: &str| -> f64 {
            cost["s3_requests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["what"] == what)
                .map(|r| number(r, "/count"))
                .unwrap()
        };
        // The hour's archive (0.15 of 1 GiB) and id digests (16 MB) in
        // eight bundles of 256 partitions or fewer, 21 MB each: three 8 MiB
        // upload parts, the upload's create and complete.
        let bundle = "PUT bundle (CreateMultipartUpload, UploadPart, Complete)";
        assert!(close(per_kind(&cost, bundle), 8.0 * 5.0));
        // Two a partition-hour, the bundles', and four LISTs for the hour.
        assert!(close(
            usd(&cost, "/flusher_puts_per_partition_hour"),
            2.0 + (40.0 + 4.0) / 2_000.0
        ));
        let base = per_million(&run());
        for what in ["PUT manifest (commit)", "PUT destination copy"] {
            assert!(close(per_kind(&cost, what), 2_000.0), "{what}");
            assert!(close(per_kind(&base, what), 2_000.0), "{what}");
        }
    }

    #[test]
    fn doubling_the_measured_bytes_halves_what_follows_them() {
        // CPU, SQS requests, invocations and batcher PUTs measured for
        // twice the bytes cost half as much per quoted byte.
        let base = per_million(&run());
        let mut doubled = run();
        doubled.bytes *= 2.0;
        doubled.flusher_bytes *= 2.0;
        doubled.firehose.sent_billed_bytes *= 2;
        doubled.firehose.partitioned_billed_bytes *= 2;
        let cost = per_million(&doubled);
        for pointer in [
            "/lambda_usd",
            "/sqs_usd",
            "/sqs_billed_requests",
            "/batcher_invocations",
            "/batcher_s3_puts",
            "/batcher_gb_s",
            "/flusher_gb_s",
        ] {
            assert!(
                close(usd(&cost, pointer) * 2.0, usd(&base, pointer)),
                "{pointer}"
            );
        }
        // What Firehose ingests follows the bytes too: the same per byte.
        assert!(close(
            usd(&cost, "/firehose/ingest_usd"),
            usd(&base, "/firehose/ingest_usd")
        ));
    }

    #[test]
    fn firehose_partitioned_delivers_at_least_four_objects_per_partition_hour() {
        let cost = firehose(&run());
        assert!(close(usd(&cost, "/objects"), 4.0 * 2_000.0));
        assert!(close(usd(&cost, "/objects_per_partition_hour"), 4.0));
        // Two partitions for a million 1 KB events: 512 MB an hour each,
        // four 128 MiB buffers' worth.
        let mut one_tenant = run();
        one_tenant.events = 1e6;
        one_tenant.partitions = 2.0;
        let cost = firehose(&one_tenant);
        assert!(close(usd(&cost, "/objects_per_partition_hour"), 4.0));
        // One partition: 1.024 GB an hour, eight 128 MiB buffers.
        one_tenant.partitions = 1.0;
        let cost = firehose(&one_tenant);
        assert!(close(usd(&cost, "/objects_per_partition_hour"), 8.0));
        // Each object: Firehose's fee and the destination's PUT.
        assert!(close(
            usd(&cost, "/partitioned_objects_usd"),
            8.0 * (0.005 + 0.005) / 1000.0
        ));
    }

    #[test]
    fn firehose_bills_records_in_five_kilobyte_steps() {
        let mut records = FirehoseRecords::default();
        records.add_message(600, 600);
        records.add_message(12_000, 40_000);
        assert_eq!(records.records, 2);
        assert_eq!(records.sent_billed_bytes, 5_000 + 15_000);
        assert_eq!(records.partitioned_billed_bytes, 5_000 + 40_000);
        // 256 KiB of gzip holding 1.5 MB of events: two records uncompressed.
        records.add_message(262_144, 1_500_000);
        assert_eq!(records.records, 3);
        assert_eq!(records.partitioned_records, 4);
        assert_eq!(
            records.partitioned_billed_bytes,
            5_000 + 40_000 + 1_025_000 + 480_000
        );
    }

    #[test]
    fn staged_chunks_cost_a_get_each_and_objects_two_for_all_their_partitions() {
        let mut chunks = run();
        chunks.format = StagedFormat::Chunks;
        chunks.staged_objects = 24.0 * 400.0;
        let gets = |run: &Measured| -> f64 {
            s3_requests(run)
                .iter()
                .filter(|r| r.what.starts_with("GET staged"))
                .map(|r| r.count)
                .sum()
        };
        let scale = run().byte_scale();
        assert!(close(gets(&chunks), 24.0 * 400.0 * scale));
        assert!(close(gets(&run()), 2.0 * 24.0 * scale));
    }

    fn delivery(minutes: u32, staying: Staying) -> Delivery {
        Delivery {
            interval: if minutes == 60 {
                Interval::Hourly
            } else {
                Interval::Minutes(minutes)
            },
            grace_minutes: 10,
            staying,
            flush_concurrency: 4.0,
            read_concurrency: 32.0,
        }
    }

    /// The test run reshaped to `tenants` (it holds 200 on two streams).
    fn tenants(count: f64) -> Measured {
        run().with_tenants(count, 200.0)
    }

    fn extra_per_partition(extra: &Extra, what: &str) -> f64 {
        extra
            .requests
            .iter()
            .find(|r| r.what == what)
            .and_then(|r| r.per_partition_hour)
            .unwrap_or_else(|| panic!("{what} missing"))
    }

    #[test]
    fn hourly_delivery_is_todays_model_exactly() {
        for count in [1.0, 10.0, 1000.0] {
            let run = tenants(count);
            let today = per_million(&run);
            for staying in [Staying::Deleted, Staying::Kept] {
                let hourly = per_million_at(&run, &delivery(60, staying), count);
                assert_eq!(hourly["usd"], today["usd"]);
                assert_eq!(hourly["extra_usd"].as_f64(), Some(0.0));
                assert_eq!(hourly["firehose"], today["firehose"]);
                assert_eq!(
                    hourly["flusher_puts_per_partition_hour"],
                    today["flusher_puts_per_partition_hour"]
                );
            }
        }
    }

    #[test]
    fn each_run_of_an_interval_commits_publishes_and_marks_every_partition() {
        // Five minutes: twelve runs a partition-hour, each reading the
        // manifest to plan and to flush; the hourly flush's manifest read,
        // commit and publish are today's model's. The objects go with each
        // run, so no commit records its publishes; one marker for the close.
        let extra = interval_extra(&tenants(1000.0), &delivery(5, Staying::Deleted));
        for (what, per) in [
            ("GET manifest", 23.0),
            ("GET id digest (range of a bundle)", 11.0),
            ("PUT manifest (commit, and record of its publishes)", 11.0),
            ("GET archive part (publish)", 11.0),
            ("PUT destination file", 11.0),
            ("PUT pending marker", 1.0),
        ] {
            assert!(close(extra_per_partition(&extra, what), per), "{what}");
        }
        // Objects deleted by each run are read once, as hourly.
        let again = extra
            .requests
            .iter()
            .find(|r| r.what.starts_with("GET staged object again"))
            .unwrap();
        assert_eq!(again.count, 0.0);
    }

    #[test]
    fn kept_objects_are_read_again_by_every_run_but_not_flushed_again() {
        let run = tenants(1000.0);
        let objects = run.staged_objects * run.byte_scale();
        let (deleted, kept) = (
            interval_extra(&run, &delivery(5, Staying::Deleted)),
            interval_extra(&run, &delivery(5, Staying::Kept)),
        );
        let again = |extra: &Extra| {
            extra
                .requests
                .iter()
                .find(|r| r.what.starts_with("GET staged object again"))
                .unwrap()
                .count
        };
        // Twelve runs list 1/12, 2/12 ... 12/12 of the hour's objects, and
        // the one grace run (minute 5 after the hour, grace 10) all of them:
        // a tail each (what earlier runs consumed is left out).
        assert!(close(again(&kept), objects * (13.0 / 2.0 + 1.0)));
        // The grace run reads the manifest to plan, and finds nothing new:
        // no visit, no marker or file again.
        assert!(close(extra_per_partition(&kept, "GET manifest"), 24.0));
        assert!(close(extra_per_partition(&kept, "PUT pending marker"), 1.0));
        // Each open-hour commit records its publishes too.
        assert!(close(
            extra_per_partition(&kept, "PUT manifest (commit, and record of its publishes)"),
            22.0
        ));
        assert!(close(
            extra_per_partition(&kept, "PUT destination file"),
            11.0
        ));
        let cost = |staying| per_million_at(&run, &delivery(5, staying), 1000.0);
        assert!(usd(&cost(Staying::Kept), "/usd") > usd(&cost(Staying::Deleted), "/usd"));
        assert!(again(&deleted) < again(&kept));
    }

    #[test]
    fn cost_per_tenant_hour_grows_with_the_runs_an_hour() {
        for count in [1.0, 10.0, 100.0, 1000.0] {
            let run = tenants(count);
            for staying in [Staying::Deleted, Staying::Kept] {
                let costs: Vec<f64> = [60, 30, 15, 5, 1]
                    .into_iter()
                    .map(|m| {
                        usd(
                            &per_million_at(&run, &delivery(m, staying), count),
                            "/per_tenant_hour_usd",
                        )
                    })
                    .collect();
                assert!(
                    costs.windows(2).all(|pair| pair[0] < pair[1]),
                    "{count} tenants, {staying:?}: {costs:?}"
                );
                // What an interval adds grows about with its runs: a
                // one-minute delivery adds at least four times a
                // five-minute one's (59 extra runs against 11).
                let extra = |m| {
                    usd(
                        &per_million_at(&run, &delivery(m, staying), count),
                        "/extra_usd",
                    )
                };
                assert!(extra(1) > 4.0 * extra(5), "{count} tenants, {staying:?}");
            }
        }
    }

    #[test]
    fn per_tenant_hour_is_the_million_events_over_their_tenants() {
        let run = tenants(100.0);
        let cost = per_million_at(&run, &delivery(15, Staying::Deleted), 100.0);
        assert!(close(
            usd(&cost, "/per_tenant_hour_usd") * 100.0,
            usd(&cost, "/usd")
        ));
        assert!(close(usd(&cost, "/partition_hours"), 200.0));
    }

    #[test]
    fn firehose_buffering_as_long_delivers_an_object_a_partition_each_interval() {
        let run = tenants(1000.0);
        for (minutes, objects) in [(1, 60.0), (5, 12.0), (15, 4.0), (60, 4.0)] {
            let cost = per_million_at(&run, &delivery(minutes, Staying::Deleted), 1000.0);
            assert!(close(
                usd(&cost, "/firehose/objects_per_partition_hour"),
                objects
            ));
            assert!(close(
                usd(&cost, "/firehose/partitioned_objects_usd"),
                objects * 2_000.0 * (0.005 + 0.005) / 1000.0
            ));
        }
        // Firehose's longest buffer is 900 s: hourly is compared with it.
        assert_eq!(firehose_at(&run, 3600.0), firehose(&run));
    }

    #[test]
    fn a_thousand_tenants_every_five_minutes_cost_more_than_firehoses_object_fees() {
        // With every partition's objects deleted by each run (the cheaper
        // shape), at the test run's measured shape.
        let run = tenants(1000.0);
        let five = per_million_at(&run, &delivery(5, Staying::Deleted), 1000.0);
        assert!(
            usd(&five, "/usd") > usd(&five, "/firehose/partitioned_objects_usd"),
            "{five}"
        );
        // Not so hourly: a tenth of them.
        let hourly = per_million_at(&run, &delivery(60, Staying::Deleted), 1000.0);
        assert!(usd(&hourly, "/usd") < usd(&hourly, "/firehose/partitioned_objects_usd"));
        // Ten tenants every five minutes: less than Firehose's whole bill
        // at a five-minute buffer, whose object fees are small there.
        let ten = per_million_at(&tenants(10.0), &delivery(5, Staying::Deleted), 10.0);
        assert!(usd(&ten, "/usd") < usd(&ten, "/firehose/partitioned_usd"));
    }

    #[test]
    fn the_ratio_is_the_total_over_firehose_partitioned() {
        let cost = per_million(&run());
        assert!(close(
            usd(&cost, "/vs_firehose_partitioned"),
            usd(&cost, "/usd") / usd(&cost, "/firehose/partitioned_usd")
        ));
        assert!(close(
            usd(&cost, "/usd"),
            usd(&cost, "/lambda_usd") + usd(&cost, "/sqs_usd") + usd(&cost, "/s3_usd")
        ));
    }
}
