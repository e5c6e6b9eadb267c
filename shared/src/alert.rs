//! Alerts to an SNS topic when a destination cannot be written, for the
//! verify function's daily check and the flusher's publishing alike, so the
//! people who own the destination hear about revoked access with the same
//! diagnosis whoever noticed it (as Amplitude emails its admins).
//!
//! Guarantees: one SNS message per destination and [`Problem`] within an
//! [`InvocationAlerts`] (one per Lambda invocation), however many objects
//! failed for that reason; a subject that is the same for the same
//! deployment, destination and problem (so mail rules and subscribers can
//! group them); message attributes `deployment`, `source`, `destination`,
//! `problem` and `code` for SNS subscription filters; and nothing at all
//! (no client call) when no topic is configured.

use std::collections::HashSet;
use std::sync::Mutex;

use aws_sdk_sns::types::MessageAttributeValue;

use crate::diagnose::{Diagnosis, Problem};

/// SNS limits a subject to 100 printable ASCII characters.
pub const MAX_SUBJECT_CHARS: usize = 100;

/// Where alerts go: an SNS topic, or nowhere.
#[derive(Debug, Clone)]
pub struct Alerter {
    target: Option<(aws_sdk_sns::Client, String)>,
    deployment: String,
    source: String,
}

/// What [`InvocationAlerts::alert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertOutcome {
    /// Published; SNS's message id.
    Published { message_id: Option<String> },
    /// This destination's problem was already alerted in this invocation.
    AlreadySent,
    /// No topic is configured.
    Disabled,
}

/// An alert that could not be published.
#[derive(Debug, thiserror::Error)]
#[error("cannot publish the alert for destination `{destination}` to {topic_arn}: {message}")]
pub struct AlertError {
    pub destination: String,
    pub topic_arn: String,
    pub message: String,
}

impl Alerter {
    /// Alerts to `topic_arn` (none, or an empty string, turns alerts off).
    /// `deployment` names the deployment in every alert (for example the
    /// stack or function name); `source` says which function noticed
    /// (`verify`, `flusher`).
    pub fn new(
        sns: aws_sdk_sns::Client,
        topic_arn: Option<String>,
        deployment: impl Into<String>,
        source: impl Into<String>,
    ) -> Self {
        Self {
            target: topic_arn
                .filter(|arn| !arn.trim().is_empty())
                .map(|arn| (sns, arn.trim().to_owned())),
            deployment: deployment.into(),
            source: source.into(),
        }
    }

    /// The alerter the environment describes: `ALERT_TOPIC_ARN` (unset or
    /// empty: alerts off) and `DEPLOYMENT_NAME` (default:
    /// `AWS_LAMBDA_FUNCTION_NAME`, else `s3-export`).
    pub fn from_env(sns: aws_sdk_sns::Client, source: impl Into<String>) -> Self {
        Self::new(
            sns,
            env_var(crate::config::env::ALERT_TOPIC_ARN),
            deployment_from_env(),
            source,
        )
    }

    /// An alerter that never publishes.
    pub fn disabled(deployment: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            target: None,
            deployment: deployment.into(),
            source: source.into(),
        }
    }

    /// True when a topic is configured.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The topic alerts go to, if any.
    pub fn topic_arn(&self) -> Option<&str> {
        self.target.as_ref().map(|(_, arn)| arn.as_str())
    }

    /// The deployment named in alerts.
    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    /// A fresh de-duplication scope: create one per invocation.
    pub fn invocation(&self) -> InvocationAlerts<'_> {
        InvocationAlerts {
            alerter: self,
            sent: Mutex::default(),
        }
    }
}

/// The deployment named in verify objects and alerts: `DEPLOYMENT_NAME`,
/// else the Lambda function's name, else `s3-export`.
pub fn deployment_from_env() -> String {
    env_var(crate::config::env::DEPLOYMENT_NAME)
        .or_else(|| env_var("AWS_LAMBDA_FUNCTION_NAME"))
        .unwrap_or_else(|| "s3-export".to_owned())
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// The alerts of one invocation: each (destination, problem) is published at
/// most once. Safe to share between concurrent tasks.
#[derive(Debug)]
pub struct InvocationAlerts<'a> {
    alerter: &'a Alerter,
    sent: Mutex<HashSet<(String, &'static str)>>,
}

impl InvocationAlerts<'_> {
    /// Publishes `diagnosis` for `destination`, unless this invocation already
    /// did for the same problem or no topic is configured. A failed publish
    /// is forgotten, so a later call for the same problem tries again.
    pub async fn alert(
        &self,
        destination: &str,
        diagnosis: &Diagnosis,
    ) -> Result<AlertOutcome, AlertError> {
        let Some((sns, topic_arn)) = &self.alerter.target else {
            return Ok(AlertOutcome::Disabled);
        };
        let key = (destination.to_owned(), diagnosis.problem.name());
        if !self.lock().insert(key.clone()) {
            return Ok(AlertOutcome::AlreadySent);
        }
        let attribute = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(if value.is_empty() { "-" } else { value })
                .build()
                .expect("data type is set")
        };
        let deployment = &self.alerter.deployment;
        let source = &self.alerter.source;
        let published = sns
            .publish()
            .topic_arn(topic_arn)
            .subject(subject(deployment, destination, &diagnosis.problem))
            .message(message(deployment, source, destination, diagnosis))
            .message_attributes("deployment", attribute(deployment))
            .message_attributes("source", attribute(source))
            .message_attributes("destination", attribute(destination))
            .message_attributes("problem", attribute(diagnosis.problem.name()))
            .message_attributes("code", attribute(&diagnosis.code))
            .send()
            .await;
        match published {
            Ok(output) => Ok(AlertOutcome::Published {
                message_id: output.message_id,
            }),
            Err(error) => {
                self.lock().remove(&key);
                Err(AlertError {
                    destination: destination.to_owned(),
                    topic_arn: topic_arn.clone(),
                    message: aws_sdk_sns::error::DisplayErrorContext(error).to_string(),
                })
            }
        }
    }

    /// How many distinct (destination, problem) alerts were sent or are
    /// being sent.
    pub fn sent(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(String, &'static str)>> {
        // The set stays consistent whatever panicked while holding it.
        self.sent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The alert's subject: `s3-export <deployment>: <destination>: <problem>`,
/// in printable ASCII and at most [`MAX_SUBJECT_CHARS`] characters, as SNS
/// requires.
pub fn subject(deployment: &str, destination: &str, problem: &Problem) -> String {
    let text = format!("s3-export {deployment}: {destination}: {}", problem.name());
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(MAX_SUBJECT_CHARS)
        .collect()
}

/// The alert's text: who noticed what, then the whole diagnosis with the
/// policies to paste.
pub fn message(deployment: &str, source: &str, destination: &str, diagnosis: &Diagnosis) -> String {
    format!(
        "s3-export deployment `{deployment}` ({source}) cannot write to destination `{destination}`: {}.\n\n{}",
        diagnosis.problem.name().replace('_', " "),
        diagnosis.to_text()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diagnosis(problem: Problem) -> Diagnosis {
        Diagnosis {
            code: "AccessDenied".into(),
            problem,
            summary: "`arn:aws:iam::1:role/w` may not `s3:PutObject`".into(),
            remedy: "Paste the policy.".into(),
            bucket_policy: Some("{\"Version\":\"2012-10-17\"}".into()),
            kms_key_policy_statement: None,
        }
    }

    fn sns() -> aws_sdk_sns::Client {
        let config = aws_sdk_sns::Config::builder()
            .behavior_version(aws_sdk_sns::config::BehaviorVersion::latest())
            .region(aws_sdk_sns::config::Region::new("us-east-1"))
            .build();
        aws_sdk_sns::Client::from_conf(config)
    }

    #[test]
    fn subject_is_stable_ascii_and_short() {
        let subject = subject("prod", "acme", &Problem::AccessDenied);
        assert_eq!(subject, "s3-export prod: acme: access_denied");
        let long = super::subject(&"é".repeat(200), "x", &Problem::Timeout);
        assert_eq!(long.chars().count(), MAX_SUBJECT_CHARS);
        assert!(long.is_ascii());
    }

    #[test]
    fn message_carries_the_whole_diagnosis() {
        let text = message("prod", "verify", "acme", &diagnosis(Problem::AccessDenied));
        assert!(text.starts_with(
            "s3-export deployment `prod` (verify) cannot write to destination `acme`: access denied."
        ));
        assert!(text.contains("Paste the policy."));
        assert!(text.contains("Bucket policy to paste:"));
    }

    #[tokio::test]
    async fn no_topic_means_no_alert() {
        for alerter in [
            Alerter::new(sns(), None, "prod", "verify"),
            Alerter::new(sns(), Some(" ".into()), "prod", "verify"),
            Alerter::disabled("prod", "verify"),
        ] {
            assert!(!alerter.is_enabled());
            let alerts = alerter.invocation();
            let outcome = alerts
                .alert("acme", &diagnosis(Problem::AccessDenied))
                .await
                .unwrap();
            assert_eq!(outcome, AlertOutcome::Disabled);
            assert_eq!(alerts.sent(), 0);
        }
    }
}
