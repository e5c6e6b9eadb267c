//! The local runner end to end, as the README's first command runs it: a
//! generated workload through SQS, the event source mapping emulation and the
//! batcher, read back and checked.

use s3_export::local::{self, LocalOptions};
use s3_export::moto::MotoServer;
use s3_export::workload::{ProducerStyle, StreamMix};

fn options(endpoint: String) -> LocalOptions {
    LocalOptions {
        events: 300,
        tenants: 3,
        streams: StreamMix::Both,
        seed: 42,
        endpoint: Some(endpoint),
        keep_running: false,
        batch_size: 100,
        batching_window_ms: 1000,
        max_event_bytes: None,
        producer: ProducerStyle::Mixed,
    }
}

#[tokio::test]
async fn local_run_stages_every_valid_event_and_rejects_every_malformed_one() {
    let moto = MotoServer::start().await.unwrap();
    assert!(local::run(&options(moto.endpoint())).await.unwrap());
}

/// The load script's style: events packed into gzip NDJSON messages with
/// the `content-encoding` attribute, malformed records among them, each
/// rejected alone.
#[tokio::test]
async fn local_run_with_packed_gzip_messages_exports_every_event_once() {
    let moto = MotoServer::start().await.unwrap();
    let mut options = options(moto.endpoint());
    options.events = 2000;
    options.producer = ProducerStyle::Gzip;
    assert!(local::run(&options).await.unwrap());
}

#[tokio::test]
async fn local_run_reports_a_mismatch_when_events_are_rejected_unexpectedly() {
    // A maximum event size below the generated events' size makes the
    // batcher refuse them: the run must say the export does not match.
    let moto = MotoServer::start().await.unwrap();
    let mut options = options(moto.endpoint());
    options.max_event_bytes = Some(100);
    assert!(!local::run(&options).await.unwrap());
}
