//! `s3-export-produce`: sends NDJSON events (a file, or standard input) to
//! an s3-export queue, packed into compressed messages. Prints one JSON
//! line of counts; exits 1 when a message could not be sent, 2 on bad input.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use producer::pack::SQS_MAX_MESSAGE_BYTES;
use producer::{PackOptions, SendOptions, pack, send};
use shared::content_encoding::ContentEncoding;

#[derive(Parser)]
#[command(
    name = "s3-export-produce",
    version,
    about = "Send NDJSON events to an s3-export queue, packed and compressed"
)]
struct Cli {
    /// The SQS queue URL.
    #[arg(long)]
    queue_url: String,
    /// NDJSON events, one a line (default: standard input).
    #[arg(long)]
    input: Option<PathBuf>,
    /// The events' stream (the `stream` message attribute); unset: the queue's.
    #[arg(long)]
    stream: Option<String>,
    /// Body encoding.
    #[arg(long, value_enum, default_value_t = Encoding::Gzip)]
    encoding: Encoding,
    /// Compression level (gzip 0-9, zstd 1-22).
    #[arg(long, default_value_t = 6)]
    level: i32,
    /// Most bytes per message, attributes included.
    #[arg(long, default_value_t = SQS_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Attempts per message, the first included.
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum Encoding {
    Gzip,
    Zstd,
    Identity,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let input: Box<dyn Read> = match &cli.input {
        Some(path) => match std::fs::File::open(path) {
            Ok(file) => Box::new(file),
            Err(error) => {
                eprintln!("error: {}: {error}", path.display());
                return ExitCode::from(2);
            }
        },
        None => Box::new(std::io::stdin()),
    };
    let mut events = Vec::new();
    for (number, line) in BufReader::new(input).lines().enumerate() {
        match line {
            Ok(line) if line.trim().is_empty() => {}
            Ok(line) => events.push(line),
            Err(error) => {
                eprintln!("error: line {}: {error}", number + 1);
                return ExitCode::from(2);
            }
        }
    }
    let options = PackOptions {
        encoding: match cli.encoding {
            Encoding::Gzip => ContentEncoding::Gzip,
            Encoding::Zstd => ContentEncoding::Zstd,
            Encoding::Identity => ContentEncoding::Identity,
        },
        level: cli.level,
        max_message_bytes: cli.max_message_bytes,
        stream: cli.stream.clone(),
    };
    let messages = match pack(&events, &options) {
        Ok(messages) => messages,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let send_options = SendOptions {
        max_attempts: cli.max_attempts,
        ..SendOptions::default()
    };
    let report = send(&sqs, &cli.queue_url, &messages, &send_options).await;
    for failed in &report.failed {
        eprintln!(
            "error: message {} ({} events) not sent: {}: {}",
            failed.index, messages[failed.index].events, failed.code, failed.message
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "events": events.len(),
            "messages": messages.len(),
            "sentMessages": report.sent_messages,
            "sentEvents": report.sent_events,
            "requests": report.requests,
            "retriedEntries": report.retried_entries,
            "failedMessages": report.failed.len(),
        })
    );
    if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
