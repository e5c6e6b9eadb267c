//! Injected faults for tests: an SDK interceptor that fails chosen requests
//! before they are sent, as a broken network or an S3 outage would, so the
//! error paths run against the real handlers and the real SDK.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;

/// Fails every request whose URL contains `fragment` (for S3, a key or a
/// prefix) until [`FailRequestsTo::heal`] is called, and counts how many it
/// failed. Clones share their state.
#[derive(Debug, Clone)]
pub struct FailRequestsTo {
    fragment: String,
    failed: Arc<AtomicUsize>,
    healed: Arc<AtomicBool>,
}

impl FailRequestsTo {
    pub fn new(fragment: impl Into<String>) -> Self {
        Self {
            fragment: fragment.into(),
            failed: Arc::default(),
            healed: Arc::default(),
        }
    }

    /// Ends the fault: from now on every request goes through.
    pub fn heal(&self) {
        self.healed.store(true, Ordering::SeqCst);
    }

    /// Requests failed so far, retries included.
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// An S3 client like `s3` whose matching requests fail.
    pub fn wrap(&self, s3: &aws_sdk_s3::Client) -> aws_sdk_s3::Client {
        with_interceptor(s3, self.clone())
    }
}

impl Intercept for FailRequestsTo {
    fn name(&self) -> &'static str {
        "FailRequestsTo"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !self.healed.load(Ordering::SeqCst) && context.request().uri().contains(&self.fragment) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(format!("injected fault for a request to `{}`", self.fragment).into());
        }
        Ok(())
    }
}

/// Replaces S3's answer to every request whose URL contains `fragment` with
/// a given HTTP status, headers and body, so the real SDK parses a real S3
/// error response that moto cannot produce (a KMS key that refuses, a
/// redirect to the bucket's real region, an owner mismatch). The request
/// itself still reaches the server: aim it at a bucket that does not exist
/// there, so nothing is stored. Clones share their count.
#[derive(Debug, Clone)]
pub struct RespondWith {
    fragment: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    replaced: Arc<AtomicUsize>,
}

impl RespondWith {
    /// Answers matching requests with `status` and `body`.
    pub fn new(fragment: impl Into<String>, status: u16, body: impl Into<String>) -> Self {
        Self {
            fragment: fragment.into(),
            status,
            headers: Vec::new(),
            body: body.into(),
            replaced: Arc::default(),
        }
    }

    /// Answers matching requests with S3's error document for `code` and
    /// `message`, as S3 sends it (`application/xml`, a request id).
    pub fn s3_error(fragment: impl Into<String>, status: u16, code: &str, message: &str) -> Self {
        let escape = |text: &str| {
            text.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><RequestId>FAULT0REQUEST0ID</RequestId><HostId>ZmF1bHQtaW5qZWN0aW9u</HostId></Error>",
            escape(code),
            escape(message)
        );
        Self::new(fragment, status, body)
            .header("content-type", "application/xml")
            .header("x-amz-request-id", "FAULT0REQUEST0ID")
    }

    /// Adds a response header (for example `x-amz-bucket-region`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Responses replaced so far, retries included.
    pub fn replaced(&self) -> usize {
        self.replaced.load(Ordering::SeqCst)
    }

    /// An S3 client like `s3` whose matching requests get this answer.
    pub fn wrap(&self, s3: &aws_sdk_s3::Client) -> aws_sdk_s3::Client {
        with_interceptor(s3, self.clone())
    }
}

impl Intercept for RespondWith {
    fn name(&self) -> &'static str {
        "RespondWith"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The request is gone by the time the response arrives: remember here
        // whether this one is to be answered.
        if context.request().uri().contains(&self.fragment) {
            cfg.interceptor_state().store_put(Answered);
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextMut<
            '_,
        >,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<Answered>().is_none() {
            return Ok(());
        }
        let status = aws_smithy_runtime_api::http::StatusCode::try_from(self.status)?;
        let mut response = aws_smithy_runtime_api::http::Response::new(
            status,
            aws_smithy_types::body::SdkBody::from(self.body.clone()),
        );
        for (name, value) in &self.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        *context.response_mut() = response;
        self.replaced.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Marks a request [`RespondWith`] answers, in the request's config bag.
#[derive(Debug, Clone, Copy)]
struct Answered;

impl aws_smithy_types::config_bag::Storable for Answered {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

/// A client like `s3` with `interceptor` added to its request pipeline.
pub fn with_interceptor(
    s3: &aws_sdk_s3::Client,
    interceptor: impl Intercept + 'static,
) -> aws_sdk_s3::Client {
    let config = s3.config().to_builder().interceptor(interceptor).build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Makes SQS fail chosen entries of `SendMessageBatch` requests, as SQS
/// itself may (an internal error on some entries, or an entry refused as
/// the sender's fault): a failing entry is taken out of the request before
/// it is sent, so the queue never receives it, and put back into the
/// response's `Failed` list. An entry whose id `fails` matches fails on its
/// first `attempts` sends. Clones share their counts.
#[derive(Clone)]
pub struct FailSqsBatchEntries {
    fails: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    attempts: usize,
    sender_fault: bool,
    sends: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    failed: Arc<AtomicUsize>,
}

impl std::fmt::Debug for FailSqsBatchEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailSqsBatchEntries")
            .field("attempts", &self.attempts)
            .field("sender_fault", &self.sender_fault)
            .finish_non_exhaustive()
    }
}

/// The entries [`FailSqsBatchEntries`] took out of one request.
#[derive(Debug, Clone)]
struct FailedEntries(Vec<String>);

impl aws_smithy_types::config_bag::Storable for FailedEntries {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

impl FailSqsBatchEntries {
    /// Fails the entries whose id `fails` matches on their first `attempts`
    /// sends, with `InternalError` (retryable) or, when `sender_fault`,
    /// `InvalidParameterValue` (the sender's fault).
    pub fn new(
        fails: impl Fn(&str) -> bool + Send + Sync + 'static,
        attempts: usize,
        sender_fault: bool,
    ) -> Self {
        Self {
            fails: Arc::new(fails),
            attempts,
            sender_fault,
            sends: Arc::default(),
            failed: Arc::default(),
        }
    }

    /// Entries failed so far.
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// An SQS client like `sqs` whose batch entries fail as configured.
    pub fn wrap(&self, sqs: &aws_sdk_sqs::Client) -> aws_sdk_sqs::Client {
        let config = sqs.config().to_builder().interceptor(self.clone()).build();
        aws_sdk_sqs::Client::from_conf(config)
    }
}

impl Intercept for FailSqsBatchEntries {
    fn name(&self) -> &'static str {
        "FailSqsBatchEntries"
    }

    fn modify_before_signing(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let is_batch = request
            .headers()
            .get("x-amz-target")
            .is_some_and(|target| target.ends_with("SendMessageBatch"));
        let Some(bytes) = request.body().bytes().filter(|_| is_batch) else {
            return Ok(());
        };
        let mut document: serde_json::Value = serde_json::from_slice(bytes)?;
        let Some(entries) = document["Entries"].as_array_mut() else {
            return Ok(());
        };
        let mut taken = Vec::new();
        {
            let mut sends = self.sends.lock().expect("not poisoned");
            entries.retain(|entry| {
                let id = entry["Id"].as_str().unwrap_or_default().to_owned();
                if !(self.fails)(&id) {
                    return true;
                }
                let count = sends.entry(id.clone()).or_default();
                *count += 1;
                if *count > self.attempts {
                    return true;
                }
                taken.push(id);
                false
            });
        }
        if taken.is_empty() {
            return Ok(());
        }
        if entries.is_empty() {
            return Err("FailSqsBatchEntries would fail every entry of a request".into());
        }
        self.failed.fetch_add(taken.len(), Ordering::SeqCst);
        let body = serde_json::to_vec(&document)?;
        request
            .headers_mut()
            .insert("content-length", body.len().to_string());
        *request.body_mut() = aws_smithy_types::body::SdkBody::from(body);
        cfg.interceptor_state().store_put(FailedEntries(taken));
        Ok(())
    }

    fn modify_before_completion(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(FailedEntries(taken)) = cfg.load::<FailedEntries>().cloned() else {
            return Ok(());
        };
        let Some(Ok(output)) = context.output_or_error_mut() else {
            return Ok(());
        };
        use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
        use aws_sdk_sqs::types::BatchResultErrorEntry;
        let Some(batch) = output.downcast_mut::<SendMessageBatchOutput>() else {
            return Ok(());
        };
        let (code, message) = if self.sender_fault {
            (
                "InvalidParameterValue",
                "injected fault: refused as the sender's fault",
            )
        } else {
            ("InternalError", "injected fault: internal error")
        };
        let mut failed = batch.failed().to_vec();
        for id in taken {
            failed.push(
                BatchResultErrorEntry::builder()
                    .id(id)
                    .sender_fault(self.sender_fault)
                    .code(code)
                    .message(message)
                    .build()?,
            );
        }
        *batch = SendMessageBatchOutput::builder()
            .set_successful(Some(batch.successful().to_vec()))
            .set_failed(Some(failed))
            .build()?;
        Ok(())
    }
}
