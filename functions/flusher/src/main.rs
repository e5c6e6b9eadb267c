//! The flusher Lambda: builds its clients and configuration once, then
//! serves scheduled and manual flush runs, as the coordinator when a flush
//! queue is set, and the queue's work items as a worker (see the library).

use flusher::{Flusher, handle};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let sdk = shared::load::sdk_config().await;
    let s3 = shared::load::s3_client(&sdk);
    let alerter = shared::alert::Alerter::from_env(aws_sdk_sns::Client::new(&sdk), flusher::SOURCE);
    // An `s3://` EXPORT_CONFIG is reloaded when its ETag changes (checked at
    // most once a minute, at the start of an invocation).
    let source = shared::config_source::ConfigSource::from_env(s3.clone(), alerter.clone())
        .await
        .inspect_err(|error| {
            tracing::error!(%error, "cannot start");
        })?;
    let mut flusher = Flusher::from_source(std::sync::Arc::new(source), s3);
    flusher.alerter = alerter;
    flusher.sts = Some(aws_sdk_sts::Client::new(&sdk));
    // With a flush queue, flush runs coordinate and the queue's messages
    // are flushed by workers (the same binary, another function).
    flusher.queue = std::env::var(shared::config::env::FLUSH_QUEUE_URL)
        .ok()
        .filter(|url| !url.is_empty())
        .map(|url| flusher::coordinator::FlushQueue {
            sqs: aws_sdk_sqs::Client::new(&sdk),
            url,
        });
    flusher.principals = std::env::var(shared::config::env::FUNCTION_ROLE_ARN)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|arn| !arn.is_empty())
        .map(str::to_owned)
        .collect();
    run(service_fn(|event: LambdaEvent<_>| handle(&flusher, event))).await
}
