//! The flusher Lambda: compacts staged chunks into the archive and publishes them.
//! Not implemented yet (issue 3): it starts, and answers every
//! invocation with an error that says so, so nothing mistakes it for working.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

async fn handle(_event: LambdaEvent<Value>) -> Result<Value, Error> {
    Err("the flusher is not implemented yet (issue 3)".into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    run(service_fn(handle)).await
}
