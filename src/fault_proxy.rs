//! A fault-injecting HTTP proxy on loopback, in front of moto: whatever talks
//! to it (the in-process handlers, the ESM emulation's SQS client, or the
//! compiled function binaries through `AWS_ENDPOINT_URL`) meets the failures
//! S3 and SQS really produce.
//!
//! [`FaultProxy`] guarantees that:
//! - each request is forwarded to the upstream unchanged (method, path,
//!   query, headers, body) unless a fault is drawn for it;
//! - faults are drawn at [`FaultPlan::rate`] from a generator seeded with
//!   [`FaultPlan::seed`], in the order requests arrive, so a failing run can
//!   be replayed (exactly, when its requests arrive in the same order);
//! - every injected fault is counted by kind ([`FaultProxy::injected`]), so a
//!   test can prove that faults happened and were not all hidden;
//! - a [`KillRule`] sends `SIGKILL` to a process when it sees the Nth request
//!   of a kind (before or after the upstream has applied it), so crash tests
//!   need no hook in production code. Each rule fires once.
//! - a [`Hold`] keeps the requests it accepts waiting, unforwarded, until
//!   the test opens its [`Gate`], so a test can force an interleaving of
//!   two runs (one run's writes held while another commits) instead of
//!   hoping for it.
//!
//! The faults, in the shapes the SDK classifies as transient:
//! - [`Fault::InternalError`]: HTTP 500 `InternalError` (S3 XML) or
//!   `InternalFailure` (SQS JSON), the request not applied;
//! - [`Fault::SlowDown`]: HTTP 503 `SlowDown` (S3 XML) or `ServiceUnavailable`
//!   (SQS JSON), not applied;
//! - [`Fault::Throttling`]: HTTP 400 `ThrottlingException` in SQS's JSON
//!   error shape (S3 requests get S3's throttling answer, 503 `SlowDown`);
//! - [`Fault::Delay`]: the request is forwarded after [`FaultPlan::delay`];
//! - [`Fault::Reset`]: the connection is closed without an answer, the
//!   request not forwarded;
//! - [`Fault::Truncate`]: the request is applied upstream, then the answer is
//!   cut: half its body and the connection closed (or, for an answer without
//!   a body, no answer at all), so the caller does not know its write landed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// One kind of injected failure (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    InternalError,
    SlowDown,
    Throttling,
    Delay,
    Reset,
    Truncate,
}

impl Fault {
    /// Every kind, drawn with equal weight by default.
    pub const ALL: [Fault; 6] = [
        Fault::InternalError,
        Fault::SlowDown,
        Fault::Throttling,
        Fault::Delay,
        Fault::Reset,
        Fault::Truncate,
    ];

    /// True when the caller sees an error (everything but a delay).
    pub fn fails(self) -> bool {
        self != Fault::Delay
    }
}

/// What the proxy injects.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Probability in `[0, 1]` that a request gets a fault.
    pub rate: f64,
    /// Seed of the generator that draws faults.
    pub seed: u64,
    /// The kinds drawn from, with equal weight.
    pub kinds: Vec<Fault>,
    /// How long [`Fault::Delay`] holds a request.
    pub delay: Duration,
    /// When set, only the requests it accepts can get a fault (the draws
    /// are made for every request all the same, so the seed still decides).
    pub only: Option<RequestFilter>,
    /// When set, the requests it accepts always fail (an internal error),
    /// whatever was drawn for them (the draws are made all the same): a
    /// failure a test needs, not left to chance and the requests' order.
    pub always: Option<RequestFilter>,
    /// When set, the requests it accepts wait until its gate opens.
    pub hold: Option<Hold>,
}

/// Requests to hold back (those `filter` accepts) until `gate` opens.
#[derive(Debug, Clone)]
pub struct Hold {
    pub filter: RequestFilter,
    pub gate: Gate,
}

/// A gate held requests wait at: closed when made, opened once by the
/// test, never closed again. Clones share one gate.
#[derive(Debug, Clone)]
pub struct Gate {
    open: Arc<tokio::sync::watch::Sender<bool>>,
    held: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            open: Arc::new(tokio::sync::watch::Sender::new(false)),
            held: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until `count` requests have arrived at the gate (held, or let
    /// through when it is open).
    pub async fn wait_for(&self, count: usize) {
        let mut held = self.held.subscribe();
        held.wait_for(|held| *held >= count)
            .await
            .expect("the gate's sender lives as long as the gate");
    }

    /// Requests that have arrived at the gate so far.
    pub fn arrived(&self) -> usize {
        *self.held.borrow()
    }

    /// Lets every held request (and every later one) through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Counts a request in, then waits until the gate is open.
    async fn pass(&self) {
        self.held.send_modify(|held| *held += 1);
        let mut open = self.open.subscribe();
        open.wait_for(|open| *open)
            .await
            .expect("the gate's sender lives as long as the gate");
    }
}

/// Which requests a [`FaultPlan`] may fault; it may keep state (for
/// example, to accept only the first matching request).
#[derive(Clone)]
pub struct RequestFilter(Matcher);

impl RequestFilter {
    /// A filter accepting the requests for which `accepts` is true.
    pub fn new(accepts: impl Fn(&RequestInfo) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(accepts))
    }
}

impl std::fmt::Debug for RequestFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestFilter(..)")
    }
}

impl FaultPlan {
    /// Every kind of fault at `rate`, seeded with `seed`.
    pub fn new(rate: f64, seed: u64) -> Self {
        Self {
            rate,
            seed,
            kinds: Fault::ALL.to_vec(),
            delay: Duration::from_millis(150),
            only: None,
            always: None,
            hold: None,
        }
    }

    /// No faults: a transparent proxy (for kill rules alone).
    pub fn none() -> Self {
        Self::new(0.0, 0)
    }
}

/// What the proxy knows about a request when it decides.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// `GET`, `PUT`, `POST`, `DELETE`, `HEAD`.
    pub method: String,
    /// The path, percent-encoded as sent (for S3, `/<bucket>/<key>`).
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// SQS's operation (`X-Amz-Target` without `AmazonSQS.`), if any.
    pub sqs_operation: Option<String>,
    /// The `Range` header, for a ranged GET.
    pub range: Option<String>,
}

impl RequestInfo {
    /// True for a request to SQS (JSON protocol).
    pub fn is_sqs(&self) -> bool {
        self.sqs_operation.is_some()
    }

    /// The S3 bucket of a path-style request.
    pub fn bucket(&self) -> &str {
        self.path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
    }

    /// The S3 key of a path-style request (percent-decoded), empty for a
    /// bucket-level request.
    pub fn key(&self) -> String {
        let path = self.path.trim_start_matches('/');
        let raw = path.split_once('/').map(|(_, key)| key).unwrap_or_default();
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned()
    }

    /// True for a PutObject, UploadPart or CompleteMultipartUpload of a key
    /// under `prefix` in `bucket`.
    pub fn writes(&self, bucket: &str, prefix: &str) -> bool {
        !self.is_sqs()
            && (self.method == "PUT" || (self.method == "POST" && self.query.contains("uploadId")))
            && self.bucket() == bucket
            && self.key().starts_with(prefix)
    }

    /// True for a GetObject of a key (ranged or whole) in `bucket`.
    pub fn reads_object(&self, bucket: &str) -> bool {
        !self.is_sqs() && self.method == "GET" && self.bucket() == bucket && !self.key().is_empty()
    }

    /// True for a PutObject (not a multipart part) of a key in `bucket`:
    /// what S3 bills as one PUT, as do the multipart calls [`writes`]
    /// also counts.
    ///
    /// [`writes`]: RequestInfo::writes
    pub fn puts_object(&self, bucket: &str) -> bool {
        !self.is_sqs()
            && self.method == "PUT"
            && !self.query.contains("uploadId")
            && self.bucket() == bucket
            && !self.key().is_empty()
    }

    /// True for a DeleteObjects (`POST ?delete`) or DeleteObject in `bucket`.
    pub fn deletes(&self, bucket: &str) -> bool {
        !self.is_sqs()
            && self.bucket() == bucket
            && (self.method == "DELETE"
                || (self.method == "POST" && self.query.split('&').any(|p| p == "delete")))
    }
}

/// When a kill happens relative to the request that triggers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMoment {
    /// The request is never forwarded: the process dies before it.
    BeforeForwarding,
    /// The upstream applies the request, then the process dies before it
    /// hears the answer.
    AfterForwarding,
}

type Matcher = Arc<dyn Fn(&RequestInfo) -> bool + Send + Sync>;

/// Kill the process whose id is in [`KillRule::pid`] at the `nth` (from 1)
/// request that `matches`.
#[derive(Clone)]
pub struct KillRule {
    /// Which requests count.
    pub matches: Matcher,
    /// The matching request that triggers the kill, counted from 1.
    pub nth: usize,
    /// Before or after the upstream applies it.
    pub moment: KillMoment,
    /// The process to kill (0: nobody yet); set it after spawning.
    pub pid: Arc<AtomicU32>,
}

impl KillRule {
    /// A rule for the `nth` request that `matches`; its pid is set later.
    pub fn new(
        nth: usize,
        moment: KillMoment,
        matches: impl Fn(&RequestInfo) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            matches: Arc::new(matches),
            nth,
            moment,
            pid: Arc::new(AtomicU32::new(0)),
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicUsize,
    injected: Mutex<BTreeMap<Fault, usize>>,
    matched: AtomicUsize,
    killed: Mutex<Option<RequestInfo>>,
    /// Every request, in the order it arrived.
    log: Mutex<Vec<RequestInfo>>,
}

struct Shared {
    plan: Mutex<FaultPlan>,
    rng: Mutex<fastrand::Rng>,
    kill: Option<KillRule>,
    counters: Counters,
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A running proxy; dropped, it stops accepting connections.
pub struct FaultProxy {
    endpoint: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

type ProxyBody = BoxBody<Bytes, std::io::Error>;

impl FaultProxy {
    /// Starts a proxy on a free `127.0.0.1` port in front of `upstream`
    /// (`http://127.0.0.1:<port>`), injecting faults by `plan`.
    pub async fn start(upstream: &str, plan: FaultPlan) -> Result<Self> {
        Self::start_with_kill(upstream, plan, None).await
    }

    /// Like [`FaultProxy::start`], also applying `kill`.
    pub async fn start_with_kill(
        upstream: &str,
        plan: FaultPlan,
        kill: Option<KillRule>,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fault proxy")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            rng: Mutex::new(fastrand::Rng::with_seed(plan.seed)),
            plan: Mutex::new(plan),
            kill,
            counters: Counters::default(),
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let server = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let shared = shared.clone();
                            async move { serve(&shared, request).await }
                        });
                        // A connection ends with an error whenever a fault
                        // cuts it: that is the point.
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Ok(Self {
            endpoint,
            shared,
            server,
        })
    }

    /// The proxy's base URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// `s3` with its requests sent through this proxy instead (same
    /// credentials, region and path style): what tests hand the code they
    /// count or fault.
    pub fn s3_client(&self, s3: &aws_sdk_s3::Client) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            s3.config()
                .to_builder()
                .endpoint_url(self.endpoint())
                .build(),
        )
    }

    /// Requests seen so far.
    pub fn requests(&self) -> usize {
        self.shared.counters.requests.load(Ordering::SeqCst)
    }

    /// Every request seen so far, in the order it arrived: what tests count
    /// requests by (PUTs per invocation, GETs per staged object) rather
    /// than estimate them.
    pub fn request_log(&self) -> Vec<RequestInfo> {
        self.shared.counters.log.lock().expect("lock").clone()
    }

    /// Forgets the requests logged so far (to count one phase of a test).
    pub fn clear_request_log(&self) {
        self.shared.counters.log.lock().expect("lock").clear();
    }

    /// Faults injected so far, by kind.
    pub fn injected(&self) -> BTreeMap<Fault, usize> {
        self.shared.counters.injected.lock().expect("lock").clone()
    }

    /// Faults injected so far that the caller saw as errors.
    pub fn failures_injected(&self) -> usize {
        self.injected()
            .iter()
            .filter(|(fault, _)| fault.fails())
            .map(|(_, count)| count)
            .sum()
    }

    /// Sets the fault rate from now on (0 heals the proxy).
    pub fn set_rate(&self, rate: f64) {
        self.shared.plan.lock().expect("lock").rate = rate;
    }

    /// The request at which the kill rule fired, if it has.
    pub fn killed_at(&self) -> Option<RequestInfo> {
        self.shared.counters.killed.lock().expect("lock").clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What to do with one request.
enum Decision {
    Forward,
    Inject(Fault),
}

fn decide(shared: &Shared, info: &RequestInfo) -> Decision {
    let plan = shared.plan.lock().expect("lock");
    let mut rng = shared.rng.lock().expect("lock");
    let drawn = draw(&mut rng, &plan);
    if plan.always.as_ref().is_some_and(|always| (always.0)(info)) {
        return Decision::Inject(Fault::InternalError);
    }
    let eligible = plan.only.as_ref().is_none_or(|only| (only.0)(info));
    match drawn {
        Some(fault) if eligible => Decision::Inject(fault),
        _ => Decision::Forward,
    }
}

/// The fault (if any) for the next request. Two draws for every request,
/// whatever the rate, so that the sequence of decisions depends on the seed
/// and the order of requests only.
fn draw(rng: &mut fastrand::Rng, plan: &FaultPlan) -> Option<Fault> {
    let roll = rng.f64();
    let pick = rng.usize(..plan.kinds.len().max(1));
    (roll < plan.rate && !plan.kinds.is_empty()).then(|| plan.kinds[pick])
}

fn count(shared: &Shared, fault: Fault) {
    *shared
        .counters
        .injected
        .lock()
        .expect("lock")
        .entry(fault)
        .or_default() += 1;
}

fn request_info(request: &Request<Incoming>) -> RequestInfo {
    RequestInfo {
        method: request.method().as_str().to_owned(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().unwrap_or_default().to_owned(),
        sqs_operation: request
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .map(|target| target.trim_start_matches("AmazonSQS.").to_owned()),
        range: request
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

/// True when this request triggers the kill rule (counted once each).
fn kill_due(shared: &Shared, info: &RequestInfo, moment: KillMoment) -> bool {
    let Some(rule) = &shared.kill else {
        return false;
    };
    if rule.moment != moment || !(rule.matches)(info) {
        return false;
    }
    let n = shared.counters.matched.fetch_add(1, Ordering::SeqCst) + 1;
    n == rule.nth
}

fn kill(shared: &Shared, info: &RequestInfo) {
    let Some(rule) = &shared.kill else { return };
    let pid = rule.pid.load(Ordering::SeqCst);
    *shared.counters.killed.lock().expect("lock") = Some(info.clone());
    if pid != 0 {
        // SAFETY: kill(2) with a pid the test spawned and a valid signal.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

async fn serve(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::io::Error> {
    shared.counters.requests.fetch_add(1, Ordering::SeqCst);
    let info = request_info(&request);
    shared.counters.log.lock().expect("lock").push(info.clone());
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return Err(std::io::Error::other(error)),
    };
    let hold = shared.plan.lock().expect("lock").hold.clone();
    if let Some(hold) = hold.filter(|hold| (hold.filter.0)(&info)) {
        hold.gate.pass().await;
    }
    if kill_due(shared, &info, KillMoment::BeforeForwarding) {
        kill(shared, &info);
        return Err(std::io::Error::other("killed before forwarding"));
    }
    let decision = decide(shared, &info);
    match decision {
        Decision::Inject(fault @ (Fault::InternalError | Fault::SlowDown | Fault::Throttling)) => {
            count(shared, fault);
            return Ok(error_response(fault, &info));
        }
        Decision::Inject(Fault::Reset) => {
            count(shared, Fault::Reset);
            return Err(std::io::Error::other("injected connection reset"));
        }
        Decision::Inject(Fault::Delay) => {
            count(shared, Fault::Delay);
            let delay = shared.plan.lock().expect("lock").delay;
            tokio::time::sleep(delay).await;
        }
        Decision::Inject(Fault::Truncate) | Decision::Forward => {}
    }

    let mut upstream = Request::builder().method(parts.method).uri(format!(
        "{}{}",
        shared.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    ));
    for (name, value) in &parts.headers {
        // The body is already read, so there is nothing to continue.
        if !is_hop_by_hop(name.as_str()) && name != "expect" {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream
        .body(Full::new(body))
        .map_err(std::io::Error::other)?;
    let answer = shared
        .client
        .request(upstream)
        .await
        .map_err(std::io::Error::other)?;
    let (mut head, body) = answer.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    if kill_due(shared, &info, KillMoment::AfterForwarding) {
        kill(shared, &info);
        return Err(std::io::Error::other("killed after forwarding"));
    }
    for name in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
    ] {
        head.headers.remove(name);
    }
    head.headers.insert(
        hyper::header::CONTENT_LENGTH,
        hyper::header::HeaderValue::from(body.len()),
    );
    if matches!(decision, Decision::Inject(Fault::Truncate)) {
        count(shared, Fault::Truncate);
        if body.len() < 2 {
            return Err(std::io::Error::other("injected truncation"));
        }
        let half = body.slice(..body.len() / 2);
        let frames = futures::stream::iter(vec![
            Ok(Frame::data(half)),
            Err(std::io::Error::other("injected truncation")),
        ]);
        return Ok(Response::from_parts(head, StreamBody::new(frames).boxed()));
    }
    Ok(Response::from_parts(head, full(body)))
}

fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade"
    )
}

/// The error answer S3 or SQS gives for `fault`.
fn error_response(fault: Fault, info: &RequestInfo) -> Response<ProxyBody> {
    let (status, code, message) = match (fault, info.is_sqs()) {
        (Fault::InternalError, false) => (
            500,
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        (Fault::InternalError, true) => (
            500,
            "InternalFailure",
            "The request processing has failed because of an unknown error.",
        ),
        (Fault::Throttling, true) => (400, "ThrottlingException", "Rate exceeded"),
        (Fault::SlowDown, true) => (
            503,
            "ServiceUnavailable",
            "Service is unable to handle request.",
        ),
        (_, false) => (503, "SlowDown", "Please reduce your request rate."),
        (_, true) => (400, "ThrottlingException", "Rate exceeded"),
    };
    let builder = Response::builder().status(StatusCode::from_u16(status).expect("valid status"));
    let response = if info.is_sqs() {
        builder
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amzn-query-error", format!("{code};Sender"))
            .body(full(format!(
                r#"{{"__type":"com.amazonaws.sqs#{code}","message":"{message}"}}"#
            )))
    } else {
        builder.header("content-type", "application/xml").body(full(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
        )))
    };
    response.expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, query: &str) -> RequestInfo {
        RequestInfo {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            sqs_operation: None,
            range: None,
        }
    }

    #[test]
    fn object_reads_and_puts_are_told_from_listings_and_multipart_calls() {
        let get = request("GET", "/exports/staging/2026-11-22/09/1-r.staged", "");
        assert!(get.reads_object("exports") && !get.reads_object("other"));
        let list = request("GET", "/exports", "list-type=2&prefix=staging%2F");
        assert!(!list.reads_object("exports"));
        let put = request("PUT", "/exports/archive/p.ndjson.gz", "");
        assert!(put.puts_object("exports"));
        let part = request(
            "PUT",
            "/exports/archive/p.ndjson.gz",
            "partNumber=1&uploadId=u",
        );
        assert!(!part.puts_object("exports") && part.writes("exports", "archive/"));
        let bucket = request("PUT", "/exports", "");
        assert!(!bucket.puts_object("exports"));
    }

    #[test]
    fn path_style_requests_name_their_bucket_and_decoded_key() {
        let put = request("PUT", "/exports/staging/2026-11-22/09/a%20b.ndjson.gz", "");
        assert_eq!(put.bucket(), "exports");
        assert_eq!(put.key(), "staging/2026-11-22/09/a b.ndjson.gz");
        assert!(put.writes("exports", "staging/"));
        assert!(!put.writes("exports", "archive/"));
        assert!(!put.writes("other", "staging/"));
        assert_eq!(request("GET", "/exports", "list-type=2").key(), "");
    }

    #[test]
    fn multipart_completion_is_a_write_and_delete_objects_a_delete() {
        let complete = request(
            "POST",
            "/exports/archive/part-00001.ndjson.gz",
            "uploadId=abc",
        );
        assert!(complete.writes("exports", "archive/"));
        let create = request("POST", "/exports/archive/part-00001.ndjson.gz", "uploads");
        assert!(!create.writes("exports", "archive/"));
        assert!(request("POST", "/exports", "delete").deletes("exports"));
        assert!(request("DELETE", "/exports/pending/x.json", "").deletes("exports"));
        assert!(!request("POST", "/exports", "delete").deletes("other"));
    }

    #[test]
    fn sqs_requests_are_never_s3_writes() {
        let mut receive = request("POST", "/", "");
        receive.sqs_operation = Some("ReceiveMessage".into());
        assert!(receive.is_sqs());
        assert!(!receive.writes("", ""));
        assert!(!receive.deletes(""));
    }

    #[test]
    fn decisions_depend_on_the_seed_and_the_order_only() {
        let draws = |seed: u64, rate: f64| -> Vec<Option<Fault>> {
            let plan = FaultPlan::new(rate, seed);
            let mut rng = fastrand::Rng::with_seed(plan.seed);
            (0..200).map(|_| draw(&mut rng, &plan)).collect()
        };
        assert_eq!(draws(7, 0.1), draws(7, 0.1));
        assert_ne!(draws(7, 0.1), draws(8, 0.1));
        let injected = draws(7, 0.1).iter().flatten().count();
        assert!((5..=40).contains(&injected), "{injected} of 200 at 10%");
        assert!(draws(7, 0.0).iter().all(Option::is_none));
        let kinds: std::collections::BTreeSet<Fault> =
            draws(7, 1.0).into_iter().flatten().collect();
        assert_eq!(kinds.len(), Fault::ALL.len(), "every kind is drawn");
    }
}
