//! The verify Lambda: builds its clients and configuration once, then serves
//! invocations (see the library for the payloads and what it guarantees).

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use verify::{Verifier, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let sdk = shared::load::sdk_config().await;
    let verifier = Verifier::from_env(&sdk).await;
    if let Err(error) = &verifier.config {
        // Keep serving: a custom resource request must still get its FAILED
        // answer naming the bad field, or the stack waits for an hour.
        tracing::error!(%error, "invalid configuration: every verify will fail with it");
    }
    run(service_fn(|event: LambdaEvent<_>| async {
        handle(&verifier, event).await.map_err(Error::from)
    }))
    .await
}
