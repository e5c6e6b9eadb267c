//! A private `moto_server` on a loopback port, for the local runner and the
//! integration tests.
//!
//! [`MotoServer`] owns one `moto_server` child process. It guarantees that:
//! - the server listens on `127.0.0.1` only, on a port that was free when it
//!   started, so tests running in parallel each get their own server and state;
//! - [`MotoServer::start`] returns only once the server answers HTTP, or fails
//!   within [`STARTUP_TIMEOUT`] with an error that quotes the tail of its log;
//! - dropping the value kills the process and reaps it (no orphan, no zombie),
//!   then removes its log directory.
//!
//! The child stays in the caller's process group, so a Ctrl-C in a terminal
//! (which signals the whole foreground group) stops it too even when the
//! caller exits without running destructors.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, SdkConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long [`MotoServer::start`] waits for the server to answer HTTP.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variable that names the `moto_server` executable to use; it
/// takes precedence over the project venv and `PATH`.
pub const MOTO_SERVER_ENV: &str = "MOTO_SERVER";

/// The region every client built from [`MotoServer::sdk_config`] uses.
pub const REGION: &str = "us-east-1";

/// How many fresh ports [`MotoServer::start`] tries when another process takes
/// the chosen port between probing it and moto binding it.
const PORT_ATTEMPTS: usize = 3;

/// Lines of the server log quoted in start-up errors.
const LOG_TAIL_LINES: usize = 20;

const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Why a [`MotoServer`] could not be started.
#[derive(Debug, thiserror::Error)]
pub enum MotoError {
    /// No `moto_server` executable was found in any of the three places.
    #[error(
        "moto_server not found: set {MOTO_SERVER_ENV} to its path, or run scripts/setup-python.sh \
         to create {}, or put moto_server on PATH",
        venv.display()
    )]
    NotFound {
        /// The project venv path that was checked.
        venv: PathBuf,
    },
    /// The chosen executable could not be spawned.
    #[error(
        "could not run {} ({source}); moto_server is looked up in ${MOTO_SERVER_ENV}, then {}, \
         then PATH (scripts/setup-python.sh creates the venv)",
        binary.display(),
        venv.display()
    )]
    Spawn {
        /// The executable that failed to start.
        binary: PathBuf,
        /// The project venv path, named so the reader knows the alternative.
        venv: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// Local I/O failed while preparing the port or the log directory.
    #[error("could not prepare moto_server: {0}")]
    Io(#[from] io::Error),
    /// The process ended before it answered HTTP.
    #[error(
        "moto_server ({}) exited with {status} before answering on {endpoint}; its log ends:\n{log_tail}",
        binary.display()
    )]
    Exited {
        /// The executable that ran.
        binary: PathBuf,
        /// The endpoint it was asked to serve.
        endpoint: String,
        /// How it ended.
        status: ExitStatus,
        /// The last lines of its output.
        log_tail: String,
    },
    /// The process did not answer HTTP within the timeout; it has been killed.
    #[error(
        "moto_server ({}) did not answer HTTP on {endpoint} within {timeout:?}; its log ends:\n{log_tail}",
        binary.display()
    )]
    Timeout {
        /// The executable that ran.
        binary: PathBuf,
        /// The endpoint it was asked to serve.
        endpoint: String,
        /// How long it was given.
        timeout: Duration,
        /// The last lines of its output.
        log_tail: String,
    },
}

/// A running `moto_server` bound to `127.0.0.1:<port>`, killed and reaped on
/// drop.
///
/// Each value is an independent server with empty state.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
    binary: PathBuf,
    log_dir: PathBuf,
}

impl MotoServer {
    /// Starts `moto_server` on a free loopback port and waits until it answers
    /// HTTP.
    ///
    /// The executable is `$MOTO_SERVER` if set, else the project venv's
    /// `.venv/bin/moto_server` if it exists, else `moto_server` on `PATH`.
    /// Its output goes to a log file in a private temporary directory, so
    /// tests stay quiet.
    pub async fn start() -> Result<Self, MotoError> {
        Self::start_with_env(std::iter::empty::<(&str, &str)>()).await
    }

    /// Like [`MotoServer::start`], with extra environment variables for the
    /// server process (for example `INITIAL_NO_AUTH_ACTION_COUNT`, which
    /// turns on moto's IAM enforcement after that many requests). The
    /// readiness probe uses moto's own `/moto-api/` path, which does not count
    /// as one of those requests.
    pub async fn start_with_env<I, K, V>(vars: I) -> Result<Self, MotoError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let vars: Vec<(OsString, OsString)> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let binary = locate_binary()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(&binary, &vars).await {
                // A port taken by someone else between our probe and moto's
                // bind shows up as an early exit; a fresh port fixes it.
                Err(MotoError::Exited { log_tail, .. })
                    if attempt < PORT_ATTEMPTS && log_tail.contains("in use") =>
                {
                    continue;
                }
                other => return other,
            }
        }
    }

    async fn start_once(binary: &Path, vars: &[(OsString, OsString)]) -> Result<Self, MotoError> {
        let port = free_loopback_port()?;
        let log_dir = private_log_dir(port)?;
        let log_path = log_dir.join("moto_server.log");
        let log = std::fs::File::create(&log_path)?;
        let spawned = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(source) => {
                let _ = std::fs::remove_dir_all(&log_dir);
                return Err(MotoError::Spawn {
                    binary: binary.to_path_buf(),
                    venv: venv_binary(),
                    source,
                });
            }
        };
        // From here on, Drop cleans up whatever happens.
        let mut server = MotoServer {
            child,
            port,
            binary: binary.to_path_buf(),
            log_dir,
        };
        server.wait_until_ready(STARTUP_TIMEOUT).await?;
        Ok(server)
    }

    async fn wait_until_ready(&mut self, timeout: Duration) -> Result<(), MotoError> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(MotoError::Exited {
                    binary: self.binary.clone(),
                    endpoint: self.endpoint(),
                    status,
                    log_tail: self.log_tail(LOG_TAIL_LINES),
                });
            }
            if answers_http(self.port).await {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(MotoError::Timeout {
                    binary: self.binary.clone(),
                    endpoint: self.endpoint(),
                    timeout,
                    log_tail: self.log_tail(LOG_TAIL_LINES),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The base URL of the server, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The operating-system process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's combined stdout/stderr log; it exists until the value is
    /// dropped.
    pub fn log_path(&self) -> PathBuf {
        self.log_dir.join("moto_server.log")
    }

    /// The last `lines` lines of the server log (empty if it cannot be read).
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(file) = std::fs::File::open(self.log_path()) else {
            return String::new();
        };
        let mut tail = VecDeque::with_capacity(lines);
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            if tail.len() == lines {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        Vec::from(tail).join("\n")
    }

    /// An SDK configuration that talks to this server only: its endpoint,
    /// region `us-east-1` and the static credentials `testing`/`testing`,
    /// whatever the environment says about endpoints, regions or credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .load()
            .await
    }

    /// An S3 client for this server, with path-style addressing so bucket
    /// names never have to resolve as host names.
    pub async fn s3_client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk_config().await)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// An SQS client for this server.
    pub async fn sqs_client(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config().await)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // kill() fails only if the process has already been reaped; wait()
        // reaps it either way, and SIGKILL makes that immediate.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

/// `$MOTO_SERVER`, else the project venv's binary if it exists, else
/// `moto_server` found on `PATH`.
fn locate_binary() -> Result<PathBuf, MotoError> {
    if let Some(explicit) = std::env::var_os(MOTO_SERVER_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(explicit));
    }
    let venv = venv_binary();
    if venv.is_file() {
        return Ok(venv);
    }
    find_on_path("moto_server").ok_or(MotoError::NotFound { venv })
}

/// Where `scripts/setup-python.sh` installs `moto_server`.
fn venv_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server")
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A port that was free on 127.0.0.1 a moment ago: the OS picks it for a
/// listener that is closed again before moto binds it.
fn free_loopback_port() -> io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

fn private_log_dir(port: u16) -> io::Result<PathBuf> {
    static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "s3-export-moto-{}-{}-{}",
        std::process::id(),
        port,
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// True when something on `127.0.0.1:<port>` answers an HTTP request to
/// moto's management path with any HTTP status line.
async fn answers_http(port: u16) -> bool {
    let probe = async {
        let mut stream =
            tokio::net::TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
        let request = format!(
            "GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await?;
        Ok::<bool, io::Error>(head.starts_with(b"HTTP/1."))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(true))
    )
}

/// True when something accepts TCP connections on `127.0.0.1:<port>` and
/// answers HTTP; used to check that a dropped server is really gone.
pub async fn port_answers_http(port: u16) -> bool {
    answers_http(port).await
}
