//! The verify function: writes `airkit-verify-test-<timestamp>` into each
//! destination, with the destination's prefix, encryption and expected bucket
//! owner (the same request the flusher publishes with), and reports per
//! destination either the key written or a diagnosis a person can act on.
//!
//! It answers four kinds of invocation ([`payload`]): by hand (`{}`, every
//! enabled destination; `{"destination": "<name>"}`, one), on a schedule
//! (every enabled destination, alerting to SNS on failure), and as a
//! CloudFormation custom resource (Create and Update verify, Delete always
//! succeeds), answered at its `ResponseURL` so `sam deploy` fails fast with
//! the diagnosis. Guarantees: it writes only `PutObject` into destinations
//! (never lists, reads or deletes there); every custom resource request gets
//! an answer, even when the configuration is invalid; each write has a time
//! budget that leaves room to answer before the function's own deadline.

pub mod custom_resource;
pub mod object;
pub mod payload;

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use lambda_runtime::{Context, LambdaEvent};
use serde::Serialize;
use serde_json::{Value, json};
use shared::alert::{AlertOutcome, Alerter, InvocationAlerts};
use shared::config::{self, Destination};
use shared::config_source::ConfigSource;
use shared::diagnose::{self, Diagnosis};
use shared::{Config, ConfigError, destination_write, policy};

use crate::custom_resource::{RespondError, Responder, Status};
use crate::payload::{CustomResourceRequest, PayloadError, Request, RequestType, Trigger};

/// The longest one destination's write may take (all retries included).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// Time kept back from the function's deadline to answer CloudFormation.
pub const RESPONSE_RESERVE: Duration = Duration::from_secs(5);

/// The name alerts give as the function that noticed.
pub const SOURCE: &str = "verify";

/// Everything an invocation needs, built once at cold start.
#[derive(Debug)]
pub struct Verifier {
    /// The configuration, or why it is invalid: kept rather than refused at
    /// start, so a custom resource request still gets a FAILED answer that
    /// names the bad field instead of leaving the stack waiting.
    pub config: Result<Config, ConfigError>,
    /// Where the configuration is reloaded from when its document changes
    /// (`EXPORT_CONFIG=s3://…`, checked at the start of each invocation, at
    /// most once a minute); `None`: `config` is used as it is.
    pub source: Option<Arc<ConfigSource>>,
    pub s3: aws_sdk_s3::Client,
    /// Assumes destinations' cross-account roles (`roleArn`); `None`: a
    /// destination with a role fails verification saying so.
    pub sts: Option<aws_sdk_sts::Client>,
    pub alerter: Alerter,
    /// Named in verify objects and alerts.
    pub deployment: String,
    /// The roles that write to destinations: the principals of suggested
    /// policies (empty when unknown).
    pub principals: Vec<String>,
    pub responder: Responder,
    /// The budget of one destination's write, shortened to fit the deadline.
    pub write_timeout: Duration,
}

/// The outcome for one destination.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationResult {
    pub destination: String,
    pub bucket: String,
    pub prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub enabled: bool,
    pub ok: bool,
    /// The key written (or attempted).
    pub key: String,
    /// `bucket default`, `AES256` or `aws:kms`.
    pub encryption: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_bucket_owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
    /// `published`, `already_sent`, `disabled` or `failed: …`, when an alert
    /// was due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
}

/// The outcome of one verify run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// True when every verified destination was written.
    pub ok: bool,
    pub deployment: String,
    pub trigger: &'static str,
    /// The time in the verify objects' names.
    pub time: String,
    pub results: Vec<DestinationResult>,
}

/// Why an invocation failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no destination named `{name}` (configured: {known})")]
    UnknownDestination { name: String, known: String },
    #[error(transparent)]
    Respond(#[from] RespondError),
}

impl Verifier {
    /// A verifier with the default write timeout and a new responder.
    pub fn new(
        config: Result<Config, ConfigError>,
        s3: aws_sdk_s3::Client,
        alerter: Alerter,
        deployment: impl Into<String>,
        principals: Vec<String>,
    ) -> Self {
        Self {
            config,
            source: None,
            s3,
            sts: None,
            alerter,
            deployment: deployment.into(),
            principals,
            responder: Responder::new(),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }

    /// Builds the verifier from the process environment: the SDK's standard
    /// variables, the shared configuration (`EXPORT_BUCKET`,
    /// `EXPORT_CONFIG`, …), `ALERT_TOPIC_ARN`, `DEPLOYMENT_NAME` (default:
    /// `AWS_LAMBDA_FUNCTION_NAME`) and `FUNCTION_ROLE_ARN` (comma-separated;
    /// default: the caller's role from STS GetCallerIdentity).
    pub async fn from_env(sdk: &SdkConfig) -> Self {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let s3 = shared::load::s3_client(sdk);
        let alerter = Alerter::from_env(aws_sdk_sns::Client::new(sdk), SOURCE);
        let (config, source) = match ConfigSource::from_env(s3.clone(), alerter.clone()).await {
            Ok(source) => (
                Ok(Config::clone(&source.config())),
                source.reloads().then(|| Arc::new(source)),
            ),
            Err(error) => (Err(error), None),
        };
        let deployment = shared::alert::deployment_from_env();
        let principals = match var(config::env::FUNCTION_ROLE_ARN) {
            Some(list) => split_list(&list),
            None => discover_role(sdk).await.into_iter().collect(),
        };
        let mut verifier = Self::new(config, s3, alerter, deployment, principals);
        verifier.sts = Some(aws_sdk_sts::Client::new(sdk));
        verifier.source = source;
        verifier
    }

    /// Verifies `destinations` at `time` (concurrently, results in order),
    /// publishing an alert for each failure when `alert`.
    pub async fn verify(
        &self,
        destinations: Vec<&Destination>,
        time: DateTime<Utc>,
        trigger: Trigger,
        alert: bool,
        budget: Duration,
    ) -> Report {
        let s3 = with_budget(&self.s3, budget);
        let alerts = self.alerter.invocation();
        let concurrency = self.config.as_ref().map_or(4, |c| c.put_concurrency).max(1);
        let results: Vec<DestinationResult> = futures::stream::iter(destinations)
            .map(|destination| {
                self.verify_destination(&s3, destination, time, trigger, alert, &alerts)
            })
            .buffered(concurrency)
            .collect()
            .await;
        Report {
            ok: results.iter().all(|r| r.ok),
            deployment: self.deployment.clone(),
            trigger: trigger.name(),
            time: object::timestamp(time),
            results,
        }
    }

    async fn verify_destination(
        &self,
        s3: &aws_sdk_s3::Client,
        destination: &Destination,
        time: DateTime<Utc>,
        trigger: Trigger,
        alert: bool,
        alerts: &InvocationAlerts<'_>,
    ) -> DestinationResult {
        let key = object::key(destination, time);
        let body = object::body(destination, &self.deployment, trigger, time);
        let written = destination_write::write_object(
            s3,
            self.sts.as_ref(),
            destination,
            &key,
            body,
            object::CONTENT_TYPE,
        )
        .await;
        let mut result = DestinationResult {
            destination: destination.name.clone(),
            bucket: destination.bucket.clone(),
            prefix: destination.prefix.clone(),
            region: destination.region.clone(),
            enabled: destination.enabled,
            ok: written.is_ok(),
            key: key.clone(),
            encryption: diagnose::encryption_name(&destination.encryption),
            kms_key_id: policy::kms_key(destination).map(str::to_owned),
            expected_bucket_owner: destination_write::expected_bucket_owner(destination),
            diagnosis: None,
            alert: None,
        };
        match written {
            Ok(_) => {
                tracing::info!(destination = %destination.name, bucket = %destination.bucket, %key, "verified: the destination is writable");
            }
            Err(failure) => {
                let diagnosis = diagnose::diagnose(destination, &key, &failure, &self.principals);
                tracing::error!(
                    destination = %destination.name,
                    bucket = %destination.bucket,
                    %key,
                    code = %diagnosis.code,
                    problem = diagnosis.problem.name(),
                    status = failure.status,
                    request_id = failure.request_id.as_deref().unwrap_or(""),
                    summary = %diagnosis.summary,
                    remedy = %diagnosis.remedy,
                    "verify failed"
                );
                if alert {
                    result.alert = Some(match alerts.alert(&destination.name, &diagnosis).await {
                        Ok(AlertOutcome::Published { .. }) => "published".to_owned(),
                        Ok(AlertOutcome::AlreadySent) => "already_sent".to_owned(),
                        Ok(AlertOutcome::Disabled) => "disabled".to_owned(),
                        Err(error) => {
                            tracing::error!(%error, "alert not published");
                            format!("failed: {error}")
                        }
                    });
                }
                result.diagnosis = Some(diagnosis);
            }
        }
        result
    }

    /// Answers a custom resource request at its `ResponseURL`: Delete always
    /// succeeds; Create and Update succeed when the destination (or every
    /// enabled one) is writable, and fail with a reason naming the problem
    /// otherwise, or when the configuration is invalid.
    async fn answer(
        &self,
        request: &CustomResourceRequest,
        context: &Context,
        budget: Duration,
        config: Result<&Config, &ConfigError>,
    ) -> Result<Value, VerifyError> {
        let physical_resource_id = request.physical_resource_id.clone().unwrap_or_else(|| {
            format!(
                "{}-verify-{}",
                request.logical_resource_id,
                request.destination.as_deref().unwrap_or("all")
            )
        });
        let mut report = None;
        let (status, reason, data) = match request.request_type {
            RequestType::Delete => (
                Status::Success,
                "nothing to delete: verify objects stay in the destinations".to_owned(),
                json!({}),
            ),
            RequestType::Create | RequestType::Update => {
                let selected = config
                    .map_err(|error| VerifyError::Config(error.clone()))
                    .and_then(|config| select(config, request.destination.as_deref()));
                match selected {
                    Err(error) => (
                        Status::Failed,
                        format!("s3-export verify: {error}"),
                        json!({}),
                    ),
                    Ok(destinations) => {
                        let verified = self
                            .verify(
                                destinations,
                                Utc::now(),
                                Trigger::CustomResource,
                                false,
                                budget,
                            )
                            .await;
                        let keys: Vec<&str> =
                            verified.results.iter().map(|r| r.key.as_str()).collect();
                        let outcome = if verified.ok {
                            let mut data = json!({ "Keys": keys.join(",") });
                            if let [one] = verified.results.as_slice() {
                                data["Key"] = json!(one.key);
                                data["Bucket"] = json!(one.bucket);
                            }
                            (
                                Status::Success,
                                format!("verified: wrote {}", keys.join(", ")),
                                data,
                            )
                        } else {
                            (
                                Status::Failed,
                                failure_reason(&verified, context),
                                json!({}),
                            )
                        };
                        report = Some(verified);
                        outcome
                    }
                }
            }
        };
        let body =
            custom_resource::response_body(request, status, &reason, &physical_resource_id, data);
        let host = custom_resource::url_host(&request.response_url);
        let http_status = self
            .responder
            .send(&request.response_url, &body)
            .await
            .inspect_err(|error| tracing::error!(%error, "custom resource left unanswered"))?;
        tracing::info!(
            %host,
            http_status,
            status = status.as_str(),
            request_type = ?request.request_type,
            logical_resource_id = %request.logical_resource_id,
            "custom resource answered"
        );
        Ok(json!({
            "customResource": {
                "status": status.as_str(),
                "reason": reason,
                "physicalResourceId": physical_resource_id,
            },
            "report": report,
        }))
    }
}

/// Serves one invocation (see the crate documentation for the payloads).
/// Returns the [`Report`] as JSON (with a `customResource` part for a custom
/// resource request); a failed destination is a result, not an error, so a
/// scheduled run is not retried into duplicate alerts.
pub async fn handle(verifier: &Verifier, event: LambdaEvent<Value>) -> Result<Value, VerifyError> {
    let (payload, context) = event.into_parts();
    let request = payload::parse(&payload)?;
    let budget = budget(&context, verifier.write_timeout);
    // The configuration document may have changed (checked once a minute).
    let reloaded = match &verifier.source {
        Some(source) => Some(source.current().await),
        None => None,
    };
    let config: Result<&Config, &ConfigError> = match &reloaded {
        Some(config) => Ok(config),
        None => verifier.config.as_ref(),
    };
    match request {
        Request::CustomResource(request) => {
            verifier.answer(&request, &context, budget, config).await
        }
        Request::Verify {
            destination,
            trigger,
            alert,
            time,
        } => {
            let config = config.map_err(Clone::clone)?;
            let destinations = select(config, destination.as_deref())?;
            let report = verifier
                .verify(
                    destinations,
                    time.unwrap_or_else(Utc::now),
                    trigger,
                    alert,
                    budget,
                )
                .await;
            tracing::info!(
                ok = report.ok,
                trigger = report.trigger,
                destinations = report.results.len(),
                failed = report.results.iter().filter(|r| !r.ok).count(),
                "verify finished"
            );
            Ok(serde_json::to_value(&report).expect("a report always serializes"))
        }
    }
}

/// The destination named `name` (enabled or not), or every enabled one.
pub fn select<'a>(
    config: &'a Config,
    name: Option<&str>,
) -> Result<Vec<&'a Destination>, VerifyError> {
    match name {
        None => Ok(config.destinations.iter().filter(|d| d.enabled).collect()),
        Some(name) => config
            .destinations
            .iter()
            .find(|d| d.name == name)
            .map(|d| vec![d])
            .ok_or_else(|| VerifyError::UnknownDestination {
                name: name.to_owned(),
                known: if config.destinations.is_empty() {
                    "none".to_owned()
                } else {
                    config
                        .destinations
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            }),
    }
}

/// The reason a FAILED custom resource gives: each failed destination's
/// code, summary, remedy and compact bucket policy or KMS statement, and
/// where the full log is.
pub fn failure_reason(report: &Report, context: &Context) -> String {
    let mut parts = Vec::new();
    for result in report.results.iter().filter(|r| !r.ok) {
        let Some(diagnosis) = &result.diagnosis else {
            continue;
        };
        let mut part = format!(
            "destination `{}` (s3://{}/{}): {}: {} {}",
            result.destination,
            result.bucket,
            result.prefix,
            diagnosis.code,
            diagnosis.summary,
            diagnosis.remedy
        );
        for (label, json) in [
            ("Bucket policy", &diagnosis.bucket_policy),
            (
                "KMS key policy statement",
                &diagnosis.kms_key_policy_statement,
            ),
        ] {
            if let Some(json) = json {
                let compact = serde_json::from_str::<Value>(json)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|_| json.clone());
                part.push_str(&format!(" {label}: {compact}"));
            }
        }
        parts.push(part);
    }
    let mut reason = format!("s3-export verify failed: {}", parts.join(" | "));
    if !context.env_config.log_stream.is_empty() {
        reason.push_str(&format!(" (log stream: {})", context.env_config.log_stream));
    }
    reason
}

/// The write budget: `limit`, shortened so the answer still fits before the
/// invocation's deadline (when the context has one).
pub fn budget(context: &Context, limit: Duration) -> Duration {
    if context.deadline == 0 {
        return limit;
    }
    let now = Utc::now().timestamp_millis().max(0) as u64;
    let left = Duration::from_millis(context.deadline.saturating_sub(now));
    left.saturating_sub(RESPONSE_RESERVE)
        .min(limit)
        .max(Duration::from_secs(1))
}

/// `s3` with `budget` as its total time per operation (retries included)
/// and a share of it per attempt.
fn with_budget(s3: &aws_sdk_s3::Client, budget: Duration) -> aws_sdk_s3::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(budget.min(Duration::from_secs(3)))
        .operation_attempt_timeout(budget.mul_f64(0.6))
        .operation_timeout(budget)
        .build();
    aws_sdk_s3::Client::from_conf(s3.config().to_builder().timeout_config(timeouts).build())
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The function's own role, from STS GetCallerIdentity (a few seconds at
/// most; `None` when STS cannot be reached or the caller is not a role).
pub async fn discover_role(sdk: &SdkConfig) -> Option<String> {
    let sts = aws_sdk_sts::Client::new(sdk);
    let identity =
        tokio::time::timeout(Duration::from_secs(5), sts.get_caller_identity().send()).await;
    match identity {
        Ok(Ok(identity)) => {
            let role = identity.arn().and_then(policy::role_arn_from_caller);
            if role.is_none() {
                tracing::warn!(
                    arn = identity.arn().unwrap_or(""),
                    "the caller is not a role: suggested policies carry a placeholder principal (set FUNCTION_ROLE_ARN)"
                );
            }
            role
        }
        Ok(Err(error)) => {
            tracing::warn!(error = %aws_sdk_sts::error::DisplayErrorContext(error), "cannot discover the function's role: set FUNCTION_ROLE_ARN");
            None
        }
        Err(_) => {
            tracing::warn!("STS did not answer in time: set FUNCTION_ROLE_ARN");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_list_is_comma_separated() {
        assert_eq!(
            split_list(" arn:a , ,arn:b"),
            vec!["arn:a".to_owned(), "arn:b".to_owned()]
        );
    }

    #[test]
    fn budget_keeps_time_to_answer_before_the_deadline() {
        let mut context = Context::default();
        assert_eq!(
            budget(&context, Duration::from_secs(20)),
            Duration::from_secs(20)
        );
        context.deadline = (Utc::now().timestamp_millis() + 12_000) as u64;
        let budget = budget(&context, Duration::from_secs(20));
        assert!(budget <= Duration::from_secs(7), "{budget:?}");
        assert!(budget >= Duration::from_secs(1));
    }
}
