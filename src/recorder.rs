//! An SDK interceptor that records every request a client sends (method,
//! URL, the access key id it was signed with, and the body when it is in
//! memory), for tests that check who signed what, and how often.

use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;

/// One request as it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The HTTP method.
    pub method: String,
    /// The URL, with the path and query.
    pub uri: String,
    /// The access key id in the SigV4 `Authorization` header's `Credential=`.
    pub access_key_id: Option<String>,
    /// The body, when it was in memory (STS's form-encoded parameters).
    pub body: String,
    /// Every header but `authorization`, by lower-case name.
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Records the requests of every client it is added to. Clones share the
/// record.
#[derive(Debug, Clone, Default)]
pub struct RequestRecorder {
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl RequestRecorder {
    /// A new, empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// An S3 client like `s3` whose requests are recorded.
    pub fn wrap(&self, s3: &aws_sdk_s3::Client) -> aws_sdk_s3::Client {
        crate::faults::with_interceptor(s3, self.clone())
    }

    /// The requests recorded so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The recorded requests whose URL contains `fragment`.
    pub fn to(&self, fragment: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|request| request.uri.contains(fragment))
            .collect()
    }
}

/// The access key id of a SigV4 `Authorization` header.
pub fn access_key_id(authorization: &str) -> Option<String> {
    let credential = authorization.split("Credential=").nth(1)?;
    Some(credential.split('/').next()?.to_owned())
}

impl Intercept for RequestRecorder {
    fn name(&self) -> &'static str {
        "RequestRecorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let recorded = Recorded {
            method: request.method().to_owned(),
            uri: request.uri().to_owned(),
            access_key_id: request
                .headers()
                .get("authorization")
                .and_then(access_key_id),
            body: request
                .body()
                .bytes()
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                .unwrap_or_default(),
            headers: request
                .headers()
                .iter()
                .filter(|(name, _)| !name.eq_ignore_ascii_case("authorization"))
                .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
                .collect(),
        };
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(recorded);
        Ok(())
    }
}
