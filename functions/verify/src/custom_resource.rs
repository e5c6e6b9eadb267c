//! The answer to a CloudFormation custom resource request: the response
//! document, and its HTTP PUT to the request's pre-signed `ResponseURL`.
//!
//! Guarantees: the document has every field CloudFormation requires
//! (`Status`, `Reason`, `PhysicalResourceId`, `StackId`, `RequestId`,
//! `LogicalResourceId`, `Data`) and is under CloudFormation's 4096-byte
//! limit (the `Reason` is shortened, never the ids); it is sent only to the
//! URL CloudFormation gave, with the empty `Content-Type` the pre-signed URL
//! was signed for; the URL is never logged (it is a credential), only its
//! host. The PUT uses the SDK's own HTTP client (hyper and rustls, already
//! in the binary), with connect and read timeouts and a few retries, so a
//! stack is not left waiting for an answer that was lost on the way.

use std::time::Duration;

use aws_smithy_async::rt::sleep::TokioSleep;
use aws_smithy_http_client::Connector;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorSettings};
use aws_smithy_runtime_api::http::Request as HttpRequest;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use serde_json::{Value, json};

use crate::payload::CustomResourceRequest;

/// CloudFormation refuses a response body over 4096 bytes.
pub const MAX_RESPONSE_BYTES: usize = 4096;

/// How many times the response is sent before giving up.
pub const ATTEMPTS: u32 = 3;

/// `SUCCESS` or `FAILED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Failed,
}

impl Status {
    /// CloudFormation's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "SUCCESS",
            Status::Failed => "FAILED",
        }
    }
}

/// The response document for `request`, serialized, at most
/// [`MAX_RESPONSE_BYTES`] long: `reason` is cut (with `…`) to fit, and
/// `data` is dropped if it alone would not fit.
pub fn response_body(
    request: &CustomResourceRequest,
    status: Status,
    reason: &str,
    physical_resource_id: &str,
    data: Value,
) -> String {
    let render = |reason: &str, data: &Value| {
        json!({
            "Status": status.as_str(),
            "Reason": reason,
            "PhysicalResourceId": physical_resource_id,
            "StackId": request.stack_id,
            "RequestId": request.request_id,
            "LogicalResourceId": request.logical_resource_id,
            "NoEcho": false,
            "Data": data,
        })
        .to_string()
    };
    let mut data = data;
    if render("", &data).len() >= MAX_RESPONSE_BYTES {
        data = json!({});
    }
    let mut reason = reason.to_owned();
    loop {
        let body = render(&reason, &data);
        if body.len() < MAX_RESPONSE_BYTES {
            return body;
        }
        // Cut by the overshoot (escaping makes the JSON longer than the
        // text, so this may take a second round).
        let keep = reason
            .len()
            .saturating_sub(body.len() - MAX_RESPONSE_BYTES + 16);
        let mut cut = keep;
        while cut > 0 && !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push('…');
    }
}

/// The host of a URL, the only part of a pre-signed URL that may be logged.
pub fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.rsplit('@').next().unwrap_or("")
}

/// The response could not be delivered.
#[derive(Debug, thiserror::Error)]
#[error("cannot deliver the custom resource response to {host}: {message}")]
pub struct RespondError {
    /// The host of the response URL (never the whole URL).
    pub host: String,
    pub message: String,
}

/// Sends custom resource responses: HTTPS (or, for local tests, HTTP) PUTs
/// with the SDK's HTTP client. Build once, reuse across invocations.
#[derive(Debug)]
pub struct Responder {
    connector: Connector,
}

impl Default for Responder {
    fn default() -> Self {
        Self::new()
    }
}

impl Responder {
    /// A responder with 5 s connect and 20 s read timeouts.
    pub fn new() -> Self {
        let settings = HttpConnectorSettings::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(20))
            .build();
        let connector = Connector::builder()
            .connector_settings(settings)
            .sleep_impl(TokioSleep::new())
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .build();
        Self { connector }
    }

    /// PUTs `body` to `url` (with an empty `Content-Type`), retrying a
    /// failed attempt up to [`ATTEMPTS`] times in all; returns the HTTP
    /// status of the accepted attempt.
    pub async fn send(&self, url: &str, body: &str) -> Result<u16, RespondError> {
        let host = url_host(url).to_owned();
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
            match self.put(url, body).await {
                Ok(status) => return Ok(status),
                Err(Attempt::Final(message)) => return Err(RespondError { host, message }),
                Err(Attempt::Retry(message)) => {
                    tracing::warn!(%host, attempt, error = %message, "custom resource response not delivered");
                    last = message;
                }
            }
        }
        Err(RespondError {
            host,
            message: last,
        })
    }

    async fn put(&self, url: &str, body: &str) -> Result<u16, Attempt> {
        let mut request = HttpRequest::new(SdkBody::from(body.to_owned()));
        request
            .set_method("PUT")
            .map_err(|e| Attempt::Final(e.to_string()))?;
        request
            .set_uri(url)
            .map_err(|_| Attempt::Final("the response URL is not a valid URL".to_owned()))?;
        // The pre-signed URL is signed for an empty content type.
        request.headers_mut().insert("content-type", "");
        request
            .headers_mut()
            .insert("content-length", body.len().to_string());
        let response = self.connector.call(request).await.map_err(|e| {
            Attempt::Retry(aws_smithy_types::error::display::DisplayErrorContext(e).to_string())
        })?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(status);
        }
        let text = ByteStream::new(response.into_body())
            .collect()
            .await
            .map(|b| {
                String::from_utf8_lossy(&b.into_bytes())
                    .chars()
                    .take(300)
                    .collect::<String>()
            })
            .unwrap_or_default();
        let message = format!("HTTP {status}: {text}");
        // 4xx: the URL expired or was refused; sending it again will not help.
        if (400..500).contains(&status) {
            Err(Attempt::Final(message))
        } else {
            Err(Attempt::Retry(message))
        }
    }
}

enum Attempt {
    Retry(String),
    Final(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::RequestType;

    fn request() -> CustomResourceRequest {
        CustomResourceRequest {
            request_type: RequestType::Create,
            response_url: "https://cfn.example/x?sig=secret".into(),
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1".into(),
            request_id: "req-1".into(),
            logical_resource_id: "VerifyAcme".into(),
            physical_resource_id: None,
            destination: Some("acme".into()),
        }
    }

    #[test]
    fn response_has_every_field_cloudformation_needs() {
        let body = response_body(
            &request(),
            Status::Failed,
            "AccessDenied",
            "VerifyAcme-verify-acme",
            json!({"Key": "k"}),
        );
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["Status"], "FAILED");
        assert_eq!(json["Reason"], "AccessDenied");
        assert_eq!(json["PhysicalResourceId"], "VerifyAcme-verify-acme");
        assert_eq!(json["StackId"], request().stack_id);
        assert_eq!(json["RequestId"], "req-1");
        assert_eq!(json["LogicalResourceId"], "VerifyAcme");
        assert_eq!(json["Data"]["Key"], "k");
    }

    #[test]
    fn long_reason_is_cut_to_fit_under_4_kb() {
        let reason = "\"quoted\" ü ".repeat(2000);
        let body = response_body(&request(), Status::Failed, &reason, "id", json!({}));
        assert!(body.len() < MAX_RESPONSE_BYTES, "{}", body.len());
        let json: Value = serde_json::from_str(&body).unwrap();
        assert!(json["Reason"].as_str().unwrap().ends_with('…'));
        assert_eq!(json["RequestId"], "req-1");
    }

    #[test]
    fn only_the_host_of_a_presigned_url_is_shown() {
        assert_eq!(
            url_host("https://cfn-response.s3.amazonaws.com/arn%3A...?X-Amz-Signature=abc"),
            "cfn-response.s3.amazonaws.com"
        );
        assert_eq!(url_host("http://127.0.0.1:8080/r"), "127.0.0.1:8080");
        assert_eq!(url_host("https://user:pw@h.example?q"), "h.example");
    }
}
