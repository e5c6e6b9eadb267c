//! Cold start of each function's release binary, as Lambda starts it: the
//! process polls a Runtime API emulator on loopback (src/runtime_api.rs),
//! configured only by its environment, its SDK clients built; the time from
//! spawning it to its first poll for an event, and the binary's size.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use s3_export::runtime_api::{RuntimeApi, lambda_command};
use serde_json::{Value, json};

/// Starts per function; the median is reported.
const STARTS: usize = 5;

/// Each function's cold start (median of several) and binary size.
pub async fn measure(bin_dir: &Path) -> Value {
    let mut functions = serde_json::Map::new();
    for name in ["batcher", "flusher", "verify"] {
        let binary = bin_dir.join(name);
        let Ok(metadata) = std::fs::metadata(&binary) else {
            functions.insert(
                name.to_owned(),
                json!({"error": format!("{} is missing: cargo build --release --workspace --bins", binary.display())}),
            );
            continue;
        };
        let mut starts = Vec::new();
        for _ in 0..STARTS {
            match start_once(&binary).await {
                Ok(duration) => starts.push(duration.as_secs_f64() * 1000.0),
                Err(error) => {
                    functions.insert(name.to_owned(), json!({"error": error}));
                    break;
                }
            }
        }
        if starts.len() == STARTS {
            starts.sort_by(f64::total_cmp);
            functions.insert(
                name.to_owned(),
                json!({
                    "cold_start_ms": starts[STARTS / 2],
                    "cold_start_ms_all": starts,
                    "binary_mb": metadata.len() as f64 / 1e6,
                }),
            );
        }
    }
    Value::Object(functions)
}

async fn start_once(binary: &Path) -> Result<Duration, String> {
    let runtime = RuntimeApi::start().await.map_err(|e| e.to_string())?;
    let name = binary.file_name().unwrap_or_default().to_string_lossy();
    let started = Instant::now();
    // Nothing listens at the endpoint: starting up makes no AWS call.
    let mut child = lambda_command(binary, &runtime, "http://127.0.0.1:9")
        .env("EXPORT_BUCKET", "exports")
        .env("DESTINATION_BUCKET", "customer-bucket")
        .env(
            "FUNCTION_ROLE_ARN",
            "arn:aws:iam::123456789012:role/s3-export-writer",
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let ready = runtime
        .first_poll(Duration::from_secs(20))
        .await
        .map_err(|e| format!("{name} never polled: {e}"));
    let _ = child.kill().await;
    Ok(ready?.duration_since(started))
}
