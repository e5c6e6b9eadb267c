//! `s3-export`: developer and operator commands for the s3-export pipeline.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use s3_export::athena_cli::{self, AthenaDdlOptions};
use s3_export::dlq_replay::{self, DlqReplayOptions};
use s3_export::errors_replay::{self, ErrorsReplayOptions};
use s3_export::inspect_cli::{self, InspectOptions};
use s3_export::local::{self, LocalOptions};
use s3_export::policy_cli::{self, PolicyOptions};
use s3_export::status::{self, StatusOptions};

#[derive(Parser)]
#[command(
    name = "s3-export",
    version,
    about = "Run and operate the s3-export pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline locally on moto: send a mixed workload through SQS,
    /// deliver it to the batcher, and check what was stored.
    Local(LocalOptions),
    /// Print the bucket policy (and KMS key policy statement) a destination
    /// needs, for its owner to paste.
    Policy(PolicyOptions),
    /// Print the Athena CREATE EXTERNAL TABLE (JSON SerDe, partition
    /// projection) of a stream's export files in a destination.
    AthenaDdl(AthenaDdlOptions),
    /// Re-feed the rejected records of errors/ for a time range through the
    /// batcher's logic after a configuration fix: stage those now accepted,
    /// keep the others with their reason.
    ErrorsReplay(ErrorsReplayOptions),
    /// Move the dead-letter queue's messages back to their queue
    /// (StartMessageMoveTask, else receive, send, delete); --dry-run lists
    /// them.
    DlqReplay(DlqReplayOptions),
    /// List the exports per destination and hour from the manifests:
    /// events, bytes, parts and publish status; --staging lists the hours
    /// still staged instead.
    Status(StatusOptions),
    /// List what staging/ holds, read back whole: each staged object with
    /// its segments (or older chunk), the events waiting per partition, and
    /// any object that cannot be read with its error (exit 1); --file reads
    /// a downloaded staged object.
    Inspect(InspectOptions),
}

#[tokio::main]
async fn main() -> ExitCode {
    shared::telemetry::init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Local(options) => local::run(&options).await,
        Command::Policy(options) => policy_cli::run(&options).map(|()| true),
        Command::AthenaDdl(options) => athena_cli::run(&options).map(|()| true),
        Command::ErrorsReplay(options) => errors_replay::run(&options).await,
        Command::DlqReplay(options) => dlq_replay::run(&options).await,
        Command::Status(options) => status::run(&options).await,
        Command::Inspect(options) => inspect_cli::run(&options).await,
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
