//! The verify Lambda: writes airkit-verify-test-<timestamp> objects to prove destinations are writable.
//! Not implemented yet (issue 4): it starts, and answers every
//! invocation with an error that says so, so nothing mistakes it for working.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

async fn handle(_event: LambdaEvent<Value>) -> Result<Value, Error> {
    Err("the verify is not implemented yet (issue 4)".into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    run(service_fn(handle)).await
}
