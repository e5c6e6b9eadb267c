//! Cost per million events, from the run's measured CPU time and request
//! counts and AWS's us-east-1 list prices (the README gives their date and
//! source). Everything here is arithmetic on those inputs.

use serde_json::{Value, json};

/// us-east-1 list prices, in US dollars.
pub mod prices {
    /// Lambda arm64, per GB-second (first 7.5 billion GB-s a month).
    pub const LAMBDA_ARM_GB_SECOND: f64 = 0.000_013_333_4;
    /// Lambda, per request.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// SQS standard queue, per request (each 64 KiB of payload is one).
    pub const SQS_REQUEST: f64 = 0.40 / 1e6;
    /// S3 Standard PUT, COPY, POST, LIST, per request.
    pub const S3_PUT: f64 = 0.005 / 1000.0;
    /// S3 Standard GET, per request.
    pub const S3_GET: f64 = 0.0004 / 1000.0;
    /// Firehose Direct PUT ingestion, per GB, each record rounded up to 5 KB.
    pub const FIREHOSE_GB: f64 = 0.029;
    /// Firehose dynamic partitioning, per GB delivered and per 1,000 objects.
    pub const FIREHOSE_PARTITIONING_GB: f64 = 0.020;
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
/// Assumed latency of one S3 PUT from Lambda, for the batcher's wait on its
/// chunk PUTs (not measured: the benchmark makes no network call).
pub const S3_PUT_SECONDS: f64 = 0.030;

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

/// The inputs of one producer style's cost, all for the whole run.
pub struct StyleRun<'a> {
    /// The batcher phase's figures for this style.
    pub batcher: &'a Value,
    /// The flusher phase's figures (compaction of the staged chunks).
    pub flusher: &'a Value,
    pub put_concurrency: usize,
}

fn number(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("figure {pointer} is missing from {value}"))
}

/// The cost per million 1 KB events of one producer style, itemized, with
/// Firehose's for the same events and records.
pub fn per_million(run: &StyleRun<'_>) -> Value {
    let b = run.batcher;
    let events = number(b, "/events");
    let event_bytes = number(b, "/bytes");
    // CPU time and requests scale with bytes: quote them for 1 KB events.
    let scale = 1e6 / events * QUOTED_EVENT_BYTES / (event_bytes / events);
    let invocations = number(b, "/invocations");
    let puts = number(b, "/s3_puts");
    let batcher_gb_s = number(b, "/rate/cpu_seconds") * LAMBDA_MB_PER_VCPU / 1024.0
        // Waiting on its PUTs (PUT_CONCURRENCY at a time), at 512 MB.
        + puts / run.put_concurrency as f64 * S3_PUT_SECONDS * 0.5;
    let f = run.flusher;
    // The flusher's chunks come from the gzip style's run: scale its costs
    // by its own event count.
    let flusher_scale = 1e6 / number(f, "/events") * QUOTED_EVENT_BYTES
        / (number(f, "/bytes") / number(f, "/events"));
    let flusher_gb_s = number(f, "/rate/cpu_seconds") * LAMBDA_MB_PER_VCPU / 1024.0;
    let partitions = number(f, "/partitions");
    // Per partition: the manifest GET and the chunks' GETs; the part PUT,
    // the id digest PUT, the manifest PUT (commit), the destination PUT and
    // the manifest PUT recording the publish; LIST per 1,000 staged keys.
    let flusher_gets = number(f, "/chunks") + partitions;
    let flusher_puts = partitions * 5.0 + (number(f, "/chunks") / 1000.0).ceil();

    let lambda = ((batcher_gb_s * scale) + flusher_gb_s * flusher_scale)
        * prices::LAMBDA_ARM_GB_SECOND
        + invocations * scale * prices::LAMBDA_REQUEST;
    let sqs = number(b, "/sqs/billed_requests") * scale * prices::SQS_REQUEST;
    let s3 = puts * scale * prices::S3_PUT
        + flusher_puts * flusher_scale * prices::S3_PUT
        + flusher_gets * flusher_scale * prices::S3_GET;
    let total = lambda + sqs + s3;

    // Firehose: a record per message as sent; 5 KB increments; dynamic
    // partitioning by tenant on the ingested bytes (plain JSON only).
    let messages = number(b, "/sqs/messages");
    let message_bytes = number(b, "/sqs/message_bytes");
    let record_kb = (message_bytes / messages / 5000.0).ceil() * 5.0;
    let ingested_gb = messages * record_kb * 1000.0 / 1e9 * scale;
    let style = b["style"].as_str().unwrap_or_default();
    let firehose_ingest = ingested_gb * prices::FIREHOSE_GB;
    let firehose_partitioning = if style == "gzip" {
        None
    } else {
        // Delivered: the events themselves, in one object per partition per
        // buffer flush (at least the flusher's partitions per hour).
        Some(
            event_bytes / 1e9 * scale * prices::FIREHOSE_PARTITIONING_GB
                + partitions * flusher_scale * prices::FIREHOSE_PARTITIONING_OBJECT,
        )
    };
    json!({
        "style": style,
        "usd": total,
        "lambda_usd": lambda,
        "sqs_usd": sqs,
        "s3_usd": s3,
        "sqs_billed_requests": number(b, "/sqs/billed_requests") * scale,
        "batcher_invocations": invocations * scale,
        "batcher_s3_puts": puts * scale,
        "firehose_usd": firehose_ingest + firehose_partitioning.unwrap_or(0.0),
        "firehose_ingest_usd": firehose_ingest,
        "firehose_partitioning_usd": firehose_partitioning,
        "firehose_record_kb": record_kb,
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
}
