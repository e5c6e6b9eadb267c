//! The batcher Lambda: builds its clients and configuration once, then serves
//! SQS batches (see the library for what it guarantees).

use batcher::{Batcher, handle};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let sdk = shared::load::sdk_config().await;
    let s3 = shared::load::s3_client(&sdk);
    let alerter = shared::alert::Alerter::from_env(aws_sdk_sns::Client::new(&sdk), batcher::SOURCE);
    // An `s3://` EXPORT_CONFIG is reloaded when its ETag changes (checked at
    // most once a minute, at the start of an invocation).
    let source = shared::config_source::ConfigSource::from_env(s3.clone(), alerter)
        .await
        .inspect_err(|error| {
            tracing::error!(%error, "cannot start");
        })?;
    let batcher = Batcher::from_source(std::sync::Arc::new(source), s3);
    run(service_fn(|event: LambdaEvent<_>| async {
        handle(&batcher, event).await.map_err(Error::from)
    }))
    .await
}
