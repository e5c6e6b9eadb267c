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
/// 3,600 s over Firehose's longest buffering interval (900 s): the objects a
/// partition active all hour gets at the least.
pub const FIREHOSE_MIN_OBJECTS_PER_PARTITION_HOUR: f64 = 4.0;
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
/// [`FIREHOSE_MIN_OBJECTS_PER_PARTITION_HOUR`] objects a partition-hour,
/// each with its object fee and the S3 PUT the destination bills.
pub fn firehose(run: &Measured) -> Value {
    let scale = run.byte_scale();
    let hours = run.partition_hours();
    let quoted_bytes = QUOTED_EVENTS * QUOTED_EVENT_BYTES;
    let ingest_usd = run.firehose.sent_billed_bytes as f64 * scale / 1e9 * prices::FIREHOSE_GB;
    let partitioned_ingest_usd =
        run.firehose.partitioned_billed_bytes as f64 * scale / 1e9 * prices::FIREHOSE_GB;
    let per_partition = (quoted_bytes / hours / FIREHOSE_BUFFER_BYTES)
        .ceil()
        .max(FIREHOSE_MIN_OBJECTS_PER_PARTITION_HOUR);
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
