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
        let config = s3.config().to_builder().interceptor(self.clone()).build();
        aws_sdk_s3::Client::from_conf(config)
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
