//! The batcher Lambda: builds its clients and configuration once, then serves
//! SQS batches (see the library for what it guarantees).

use batcher::{Batcher, handle};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let sdk = shared::load::sdk_config().await;
    let s3 = shared::load::s3_client(&sdk);
    let config = shared::load::config_from_env(&s3)
        .await
        .inspect_err(|error| {
            tracing::error!(%error, "cannot start");
        })?;
    let batcher = Batcher { config, s3 };
    run(service_fn(|event: LambdaEvent<_>| async {
        handle(&batcher, event).await.map_err(Error::from)
    }))
    .await
}
