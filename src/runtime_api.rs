//! A Lambda Runtime API emulator on loopback, so the compiled function
//! binaries run as Lambda runs them: the process polls
//! `/2018-06-01/runtime/invocation/next`, gets an event with its request id
//! and deadline, and posts a response or an error. It measures cold start
//! as Lambda bills it: from process start to the first poll.
//!
//! HTTP/1.1 only, as the runtime client speaks it: keep-alive, bodies with
//! `Content-Length` or chunked transfer encoding.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

const API: &str = "/2018-06-01/runtime";
/// The deadline each invocation is given.
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(900);

/// What the function answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Response(Value),
    /// The error document the runtime posted (`errorType`, `errorMessage`).
    Error(Value),
}

struct Invocation {
    request_id: String,
    payload: Value,
    answer: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct State {
    waiting: HashMap<String, oneshot::Sender<Answer>>,
    first_poll: Option<Instant>,
    init_error: Option<Value>,
}

/// A running emulator; dropped, it stops accepting connections.
pub struct RuntimeApi {
    address: String,
    queue: mpsc::UnboundedSender<Invocation>,
    state: Arc<Mutex<State>>,
    polled: Arc<Notify>,
    next_id: std::sync::atomic::AtomicU64,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Starts the emulator on a free `127.0.0.1` port.
    pub async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let (queue, events) = mpsc::unbounded_channel::<Invocation>();
        let events = Arc::new(Mutex::new(events));
        let state = Arc::new(Mutex::new(State::default()));
        let polled = Arc::new(Notify::new());
        let server = {
            let (state, polled) = (state.clone(), polled.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (events, state, polled) = (events.clone(), state.clone(), polled.clone());
                    tokio::spawn(async move {
                        let _ = serve(stream, events, state, polled).await;
                    });
                }
            })
        };
        Ok(Self {
            address,
            queue,
            state,
            polled,
            next_id: Default::default(),
            server,
        })
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API` for the function process.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Waits until the function polls for its first event, or `timeout`;
    /// returns when that happened.
    pub async fn first_poll(&self, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.polled.notified();
            if let Some(at) = self.state.lock().await.first_poll {
                return Ok(at);
            }
            if let Some(error) = &self.state.lock().await.init_error {
                bail!("the function reported an init error: {error}");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("the function did not poll for an event within {timeout:?}");
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
    }

    /// Invokes the function with `payload` and waits for its answer.
    pub async fn invoke(&self, payload: Value, timeout: Duration) -> Result<Answer> {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let request_id = format!("00000000-0000-4000-8000-{n:012}");
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Invocation {
                request_id,
                payload,
                answer,
            })
            .map_err(|_| anyhow!("the emulator has stopped"))?;
        tokio::time::timeout(timeout, answered)
            .await
            .context("the function did not answer in time")?
            .context("the function went away without answering")
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(
    stream: TcpStream,
    events: Arc<Mutex<mpsc::UnboundedReceiver<Invocation>>>,
    state: Arc<Mutex<State>>,
    polled: Arc<Notify>,
) -> Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    loop {
        let Some((method, path, headers)) = read_head(&mut reader).await? else {
            return Ok(());
        };
        let body = read_body(&mut reader, &headers).await?;
        if method == "GET" && path == format!("{API}/invocation/next") {
            {
                let mut state = state.lock().await;
                state.first_poll.get_or_insert_with(Instant::now);
            }
            polled.notify_waiters();
            let Some(invocation) = events.lock().await.recv().await else {
                return Ok(());
            };
            let deadline = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
                + INVOCATION_TIMEOUT.as_millis();
            let body = serde_json::to_vec(&invocation.payload)?;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Lambda-Runtime-Aws-Request-Id: {}\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\n\
                 Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:local\r\n\
                 Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000;Sampled=0\r\n\r\n",
                body.len(),
                invocation.request_id
            );
            state
                .lock()
                .await
                .waiting
                .insert(invocation.request_id, invocation.answer);
            writer.write_all(head.as_bytes()).await?;
            writer.write_all(&body).await?;
            continue;
        }
        let answer = path
            .strip_prefix(&format!("{API}/invocation/"))
            .and_then(|rest| rest.split_once('/'))
            .map(|(id, kind)| (id.to_owned(), kind.to_owned()));
        match (method.as_str(), answer) {
            ("POST", Some((id, kind))) if kind == "response" || kind == "error" => {
                let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let answer = if kind == "response" {
                    Answer::Response(value)
                } else {
                    Answer::Error(value)
                };
                if let Some(waiter) = state.lock().await.waiting.remove(&id) {
                    let _ = waiter.send(answer);
                }
                writer
                    .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")
                    .await?;
            }
            ("POST", _) if path == format!("{API}/init/error") => {
                state.lock().await.init_error =
                    Some(serde_json::from_slice(&body).unwrap_or(Value::Null));
                polled.notify_waiters();
                writer
                    .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")
                    .await?;
            }
            _ => {
                writer
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await?;
            }
        }
    }
}

type Head = (String, String, HashMap<String, String>);

async fn read_head<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Result<Option<Head>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).await?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    Ok(Some((method, path, headers)))
}

async fn read_body<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    headers: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let mut body = Vec::new();
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).await?;
            let size =
                usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await?;
            if size == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let length: usize = headers
        .get("content-length")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok(body)
}

/// The path of a compiled function binary (`batcher`, `flusher`, `verify`):
/// in `S3_EXPORT_BIN_DIR` when set, else beside the running test's target
/// profile (`target/<profile>/deps/<test>` gives `target/<profile>`).
/// Panics with the command that builds it when it is missing.
pub fn function_binary(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("S3_EXPORT_BIN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("the running executable's path");
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("a target directory")
                .to_path_buf()
        });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --workspace --bins` (./scripts/test.sh does)",
        path.display()
    );
    path
}

/// A command that runs function `name` as Lambda does: a clean environment
/// with the Runtime API at `runtime`, the function's name, version, memory
/// and log names, every AWS call to `endpoint` (path-style S3, static test
/// credentials, no instance metadata), no stdin, killed when dropped. The
/// caller adds the function's own settings and where its output goes.
pub fn function_command(
    name: &str,
    runtime: &RuntimeApi,
    endpoint: &str,
) -> tokio::process::Command {
    lambda_command(&function_binary(name), runtime, endpoint)
}

/// [`function_command`] for the function binary at `binary` (the
/// benchmark's release binaries, wherever they are), named after its file.
pub fn lambda_command(
    binary: &std::path::Path,
    runtime: &RuntimeApi,
    endpoint: &str,
) -> tokio::process::Command {
    let name = binary.file_name().unwrap_or_default().to_string_lossy();
    let mut command = tokio::process::Command::new(binary);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", runtime.address())
        .env("AWS_LAMBDA_FUNCTION_NAME", format!("s3-export-{name}"))
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/s3-export-{name}"),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("S3_FORCE_PATH_STYLE", "true")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}
