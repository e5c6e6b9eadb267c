//! `s3-export local`: the pipeline on one machine. Starts moto_server on
//! loopback (or uses a given endpoint), creates the export bucket and the
//! events queue with its dead-letter queue, sends a realistic workload
//! through SQS with the SDK, delivers it to the real batcher handler through
//! the event source mapping emulation, then reads back everything stored and
//! checks it against what was sent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use batcher::Batcher;
use lambda_runtime::LambdaEvent;
use shared::Config;
use shared::partition::TenantKey;

use crate::esm::{
    DrainReport, EventSourceMapping, approximate_message_count, create_queue_with_dlq,
};
use crate::inspect::{StoredFile, read_gzip_ndjson};
use crate::moto::MotoServer;
use crate::workload::{self, OutgoingMessage, Workload, WorkloadSpec};

/// Options of a local run.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalOptions {
    /// Valid events to send (re-sends and malformed records come on top).
    #[arg(long, default_value_t = 2000)]
    pub events: usize,
    /// Distinct tenants (organizations).
    #[arg(long, default_value_t = 5)]
    pub tenants: usize,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Use this S3/SQS endpoint instead of starting moto_server.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Keep moto_server running afterwards, to explore with the AWS CLI.
    #[arg(long)]
    pub keep_running: bool,
    /// The event source mapping's batch size.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// The event source mapping's batching window, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub batching_window_ms: u64,
    /// Override the batcher's maximum event size (MAX_EVENT_BYTES).
    #[arg(long)]
    pub max_event_bytes: Option<usize>,
}

const MAX_RECEIVE_COUNT: u32 = 3;
const VISIBILITY_TIMEOUT_SECS: u32 = 2;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// Messages sent before the mapping delivers them: moto's SQS slows down with
/// queue depth, and real producers do not wait for the whole workload either.
const SEND_WAVE: usize = 200;

/// Runs the pipeline locally; `Ok(false)` when what was stored does not match
/// what was sent.
pub async fn run(options: &LocalOptions) -> Result<bool> {
    let (moto, sdk) = match &options.endpoint {
        Some(endpoint) => (None, endpoint_config(endpoint).await),
        None => {
            eprintln!("starting moto_server on 127.0.0.1 ...");
            let moto = MotoServer::start().await?;
            let sdk = moto.sdk_config().await;
            (Some(moto), sdk)
        }
    };
    let endpoint = sdk.endpoint_url().unwrap_or_default().to_owned();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::new(&sdk);

    let run_id = now_millis() / 1000;
    let bucket = format!("s3-export-local-{run_id}");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .context("creating the export bucket")?;
    let queues = create_queue_with_dlq(
        &sqs,
        &format!("s3-export-events-{run_id}"),
        MAX_RECEIVE_COUNT,
        VISIBILITY_TIMEOUT_SECS,
    )
    .await?;
    println!("endpoint      {endpoint}");
    println!("export bucket s3://{bucket}");
    println!(
        "queue         {} (DLQ after {MAX_RECEIVE_COUNT} receives)",
        queues.url
    );

    let workload = workload::generate(&WorkloadSpec {
        events: options.events,
        tenants: options.tenants,
        seed: options.seed,
        now_millis: now_millis(),
    });
    let config = Config::from_sources(
        |name| match name {
            shared::config::env::EXPORT_BUCKET => Some(bucket.clone()),
            shared::config::env::MAX_EVENT_BYTES if options.max_event_bytes.is_some() => {
                options.max_event_bytes.map(|bytes| bytes.to_string())
            }
            other => std::env::var(other).ok(),
        },
        None,
    )?;
    let batcher = Batcher {
        config,
        s3: s3.clone(),
    };
    let mapping = EventSourceMapping::for_queue(
        sqs.clone(),
        &queues.url,
        options.batch_size,
        Duration::from_millis(options.batching_window_ms),
    )
    .await?;
    let invocations = AtomicUsize::new(0);
    let mut handler = |event: SqsEvent| {
        let n = invocations.fetch_add(1, Ordering::SeqCst);
        let mut context = lambda_runtime::Context::default();
        context.request_id = format!("local-{run_id}-{n:05}");
        let batcher = &batcher;
        async move {
            batcher::handle(batcher, LambdaEvent::new(event, context))
                .await
                .map_err(lambda_runtime::Error::from)
        }
    };

    // Producers and the event source mapping run side by side, as in AWS:
    // a wave of messages is sent, then delivered while the next is prepared.
    let mut delivered = DrainReport::default();
    for (wave, messages) in workload.messages.chunks(SEND_WAVE).enumerate() {
        send(&sqs, &queues.url, messages).await?;
        loop {
            let poll = mapping.poll_once(&mut handler).await?;
            let idle = poll.received == 0;
            delivered.add(poll);
            if idle {
                break;
            }
        }
        eprint!(
            "\rsent {:>6} of {} messages, delivered {:>6}",
            (wave * SEND_WAVE + messages.len()),
            workload.messages.len(),
            delivered.deleted
        );
    }
    eprintln!();
    // Whatever failed comes back after the visibility timeout; wait for it.
    delivered.merge(mapping.drain(&mut handler, DRAIN_TIMEOUT).await?);
    println!(
        "sent          {} messages: {} events ({} re-sent messages), {} malformed records",
        workload.messages.len(),
        workload.expected.distinct_events,
        workload.expected.resent_messages,
        workload.expected.rejected.values().sum::<usize>()
    );
    let drained = delivered;
    let dead_letters = approximate_message_count(&sqs, &queues.dlq_url).await?;
    println!(
        "delivered     {} messages in {} batcher invocations; {} reported failed; {} in the DLQ",
        drained.received,
        drained.invocations,
        drained.failed.len(),
        dead_letters
    );

    let staged = read_gzip_ndjson(&s3, &bucket, "staging/").await?;
    let errors = read_gzip_ndjson(&s3, &bucket, "errors/").await?;
    print_tree(&bucket, &staged, &errors);
    print_partitions(&staged);
    let rejected = print_rejections(&errors)?;
    print_samples(&staged);
    let ok = check(&workload, &staged, &rejected, dead_letters);

    println!();
    println!("where to look next:");
    if options.keep_running || options.endpoint.is_some() {
        println!("  aws --endpoint-url {endpoint} s3 ls --recursive s3://{bucket}/");
        println!("  aws --endpoint-url {endpoint} s3 cp s3://{bucket}/<key> - | zcat | jq .");
    }
    println!(
        "  README.md#configuration for the variables the batcher reads; `cargo run -- local --help` for options"
    );
    if options.keep_running
        && let Some(moto) = &moto
    {
        println!(
            "moto_server keeps running at {} (credentials testing/testing, us-east-1); Ctrl-C stops it",
            moto.endpoint()
        );
        tokio::signal::ctrl_c().await?;
    }
    drop(moto);
    Ok(ok)
}

async fn endpoint_config(endpoint: &str) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).endpoint_url(endpoint);
    if std::env::var_os("AWS_REGION").is_none() {
        loader = loader.region(Region::new("us-east-1"));
    }
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "local",
        ));
    }
    loader.load().await
}

async fn send(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[OutgoingMessage],
) -> Result<()> {
    for (batch_number, batch) in messages.chunks(10).enumerate() {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(n, message)| {
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(format!("m{n}"))
                    .message_body(&message.body);
                if let Some(stream) = &message.stream {
                    entry = entry.message_attributes(
                        "stream",
                        MessageAttributeValue::builder()
                            .data_type("String")
                            .string_value(stream)
                            .build()?,
                    );
                }
                Ok(entry.build()?)
            })
            .collect::<Result<Vec<_>>>()?;
        let sent = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .with_context(|| format!("sending batch {batch_number}"))?;
        if !sent.failed().is_empty() {
            bail!("SQS refused messages: {:?}", sent.failed());
        }
    }
    Ok(())
}

fn print_tree(bucket: &str, staged: &[StoredFile], errors: &[StoredFile]) {
    const SHOWN: usize = 12;
    println!();
    println!("s3://{bucket}/");
    for files in [staged, errors] {
        for file in files.iter().take(SHOWN) {
            println!(
                "  {:<96} {:>6} lines {:>8} B",
                file.key,
                file.lines.len(),
                file.size
            );
        }
        if files.len() > SHOWN {
            let lines: usize = files[SHOWN..].iter().map(|f| f.lines.len()).sum();
            println!("  … and {} more files ({lines} lines)", files.len() - SHOWN);
        }
    }
}

fn print_partitions(staged: &[StoredFile]) {
    let mut partitions: BTreeMap<(String, String, String), (usize, usize)> = BTreeMap::new();
    for file in staged {
        let segments: Vec<&str> = file.key.split('/').collect();
        let entry = partitions
            .entry((
                segments[3].to_owned(),
                segments[4].to_owned(),
                format!("{} {}:00", segments[1], segments[2]),
            ))
            .or_default();
        entry.0 += file.lines.len();
        entry.1 += 1;
    }
    println!();
    println!(
        "{:<20} {:<40} {:<17} {:>7} {:>7}",
        "stream", "tenant", "hour (UTC)", "events", "chunks"
    );
    for ((stream, tenant, hour), (events, chunks)) in &partitions {
        println!("{stream:<20} {tenant:<40} {hour:<17} {events:>7} {chunks:>7}");
    }
}

/// Prints rejected records by reason with one example each; returns the counts.
fn print_rejections(errors: &[StoredFile]) -> Result<BTreeMap<String, usize>> {
    let mut counts: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for line in errors.iter().flat_map(|file| &file.lines) {
        let record: serde_json::Value =
            serde_json::from_str(line).context("an errors/ line is not JSON")?;
        let reason = record["reason"].as_str().unwrap_or("?").to_owned();
        let entry = counts
            .entry(reason)
            .or_insert_with(|| (0, record["detail"].as_str().unwrap_or_default().to_owned()));
        entry.0 += 1;
    }
    println!();
    println!("rejected records (in errors/, with their original bodies):");
    for (reason, (count, example)) in &counts {
        println!("  {reason:<15} {count:>5}  e.g. {}", truncate(example, 100));
    }
    Ok(counts
        .into_iter()
        .map(|(reason, (count, _))| (reason, count))
        .collect())
}

fn print_samples(staged: &[StoredFile]) {
    println!();
    println!("a few staged lines:");
    for line in staged
        .iter()
        .flat_map(|file| file.lines.iter().take(1))
        .take(3)
    {
        println!("  {}", truncate(line, 150));
    }
}

/// Every valid event staged (re-sends included: the flusher drops those),
/// every malformed record in errors/ with the right reason, nothing in the DLQ.
fn check(
    workload: &Workload,
    staged: &[StoredFile],
    rejected: &BTreeMap<String, usize>,
    dead_letters: u64,
) -> bool {
    let mut got: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in staged {
        let segments: Vec<&str> = file.key.split('/').collect();
        got.entry((segments[3].to_owned(), segments[4].to_owned()))
            .or_default()
            .extend(file.lines.iter().cloned());
    }
    let mut want: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for ((stream, tenant), lines) in &workload.expected.lines {
        want.entry((
            stream.clone(),
            TenantKey::encode(tenant).as_str().to_owned(),
        ))
        .or_default()
        .extend(lines.iter().cloned());
    }
    for lines in got.values_mut().chain(want.values_mut()) {
        lines.sort();
    }
    let want_rejected: BTreeMap<String, usize> = workload
        .expected
        .rejected
        .iter()
        .map(|(reason, count)| (reason.to_string(), *count))
        .collect();
    let mut problems = Vec::new();
    if got != want {
        let missing: usize = want
            .iter()
            .map(|(k, v)| {
                v.iter()
                    .filter(|l| !got.get(k).is_some_and(|g| g.contains(l)))
                    .count()
            })
            .sum();
        problems.push(format!(
            "staged events differ from those sent ({missing} sent events not staged)"
        ));
    }
    if *rejected != want_rejected {
        problems.push(format!(
            "rejections differ: expected {want_rejected:?}, found {rejected:?}"
        ));
    }
    if dead_letters > 0 {
        problems.push(format!("{dead_letters} messages ended in the DLQ"));
    }
    println!();
    if problems.is_empty() {
        let staged_lines: usize = got.values().map(Vec::len).sum();
        println!(
            "OK: every valid event staged ({staged_lines} lines), every malformed record in errors/ with its reason"
        );
        true
    } else {
        for problem in &problems {
            println!("MISMATCH: {problem}");
        }
        false
    }
}

fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
