//! What an invocation asks for, read leniently from whatever JSON arrives:
//! a manual `{}` or `{"destination": "<name>"}`, an EventBridge rule's
//! scheduled event, an EventBridge Scheduler payload, or a CloudFormation
//! custom resource request. Unknown fields are ignored; only a payload that
//! is not an object (or `null`), or a custom resource request without its
//! `ResponseURL` or `RequestType`, is refused.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Why the verify was invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// By hand (`{}`, `{"destination": ..}`, the CLI).
    Manual,
    /// By a schedule: alerts on failure.
    Schedule,
    /// By CloudFormation, on deploy.
    CustomResource,
}

impl Trigger {
    /// `manual`, `schedule` or `custom-resource`.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
            Trigger::CustomResource => "custom-resource",
        }
    }
}

/// A verify request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Verify one destination (`Some(name)`, enabled or not) or every enabled
    /// one; alert on failure when `alert` (scheduled runs, or `"alert": true`).
    /// `time` is the event's own time, when it carries one.
    Verify {
        destination: Option<String>,
        trigger: Trigger,
        alert: bool,
        time: Option<DateTime<Utc>>,
    },
    /// A CloudFormation custom resource request, answered at its
    /// `ResponseURL`.
    CustomResource(CustomResourceRequest),
}

/// CloudFormation's request type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    Create,
    Update,
    Delete,
}

/// The fields of a custom resource request that the response echoes, and the
/// destination to verify (`ResourceProperties.Destination`; every enabled
/// destination when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomResourceRequest {
    pub request_type: RequestType,
    /// The pre-signed URL to answer at. Never logged: it is a credential.
    pub response_url: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    pub physical_resource_id: Option<String>,
    pub destination: Option<String>,
}

/// A payload that cannot be read as a verify request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognised verify payload: {0}")]
pub struct PayloadError(pub String);

/// Reads a verify request from an invocation's payload.
pub fn parse(payload: &Value) -> Result<Request, PayloadError> {
    let object = match payload {
        Value::Null => {
            return Ok(Request::Verify {
                destination: None,
                trigger: Trigger::Manual,
                alert: false,
                time: None,
            });
        }
        Value::Object(object) => object,
        other => {
            return Err(PayloadError(format!(
                "expected a JSON object such as {{}} or {{\"destination\": \"<name>\"}}, got {}",
                kind(other)
            )));
        }
    };
    let text = |name: &str| {
        object
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };

    if object.contains_key("RequestType") || object.contains_key("ResponseURL") {
        let request_type = match text("RequestType").as_deref() {
            Some("Create") => RequestType::Create,
            Some("Update") => RequestType::Update,
            Some("Delete") => RequestType::Delete,
            other => {
                return Err(PayloadError(format!(
                    "custom resource `RequestType` is {other:?}, not Create, Update or Delete"
                )));
            }
        };
        let response_url = text("ResponseURL")
            .ok_or_else(|| PayloadError("custom resource request without `ResponseURL`".into()))?;
        let properties = object.get("ResourceProperties");
        let destination = ["Destination", "destination", "DestinationName"]
            .iter()
            .find_map(|name| properties?.get(*name)?.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        return Ok(Request::CustomResource(CustomResourceRequest {
            request_type,
            response_url,
            stack_id: text("StackId").unwrap_or_default(),
            request_id: text("RequestId").unwrap_or_default(),
            logical_resource_id: text("LogicalResourceId").unwrap_or_default(),
            physical_resource_id: text("PhysicalResourceId"),
            destination,
        }));
    }

    let source = text("source");
    let scheduled = matches!(source.as_deref(), Some("aws.events" | "aws.scheduler"))
        || text("detail-type").is_some_and(|t| t.contains("Scheduled Event"))
        || [
            "scheduleArn",
            "schedule-arn",
            "ScheduleArn",
            "scheduledTime",
        ]
        .iter()
        .any(|name| object.contains_key(*name))
        || text("trigger").as_deref() == Some("schedule");
    let destination = text("destination").or_else(|| {
        object
            .get("detail")?
            .get("destination")?
            .as_str()
            .map(str::to_owned)
    });
    let alert = object
        .get("alert")
        .and_then(Value::as_bool)
        .unwrap_or(scheduled);
    let time = ["time", "scheduledTime", "scheduled-time"]
        .iter()
        .find_map(|name| text(name))
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    Ok(Request::Verify {
        destination,
        trigger: if scheduled {
            Trigger::Schedule
        } else {
            Trigger::Manual
        },
        alert,
        time,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn events(name: &str) -> Value {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).unwrap()
    }

    #[test]
    fn empty_object_and_null_verify_everything_without_alerts() {
        for payload in [json!({}), Value::Null, events("verify-all.json")] {
            assert_eq!(
                parse(&payload).unwrap(),
                Request::Verify {
                    destination: None,
                    trigger: Trigger::Manual,
                    alert: false,
                    time: None
                }
            );
        }
    }

    #[test]
    fn named_destination() {
        let Request::Verify {
            destination, alert, ..
        } = parse(&events("verify-one.json")).unwrap()
        else {
            panic!()
        };
        assert_eq!(destination.as_deref(), Some("acme"));
        assert!(!alert);
        let Request::Verify { alert, .. } =
            parse(&json!({"destination": "acme", "alert": true})).unwrap()
        else {
            panic!()
        };
        assert!(alert);
    }

    #[test]
    fn eventbridge_rule_schedule_alerts_and_carries_its_time() {
        let Request::Verify {
            destination,
            trigger,
            alert,
            time,
        } = parse(&events("verify-scheduled.json")).unwrap()
        else {
            panic!()
        };
        assert_eq!(destination, None);
        assert_eq!(trigger, Trigger::Schedule);
        assert!(alert);
        assert_eq!(time.unwrap().to_rfc3339(), "2026-11-22T09:30:00+00:00");
    }

    #[test]
    fn eventbridge_scheduler_shapes_are_schedules() {
        for payload in [
            json!({"source": "aws.scheduler", "scheduledTime": "2026-11-22T09:30:00Z"}),
            json!({"scheduleArn": "arn:aws:scheduler:us-east-1:123456789012:schedule/default/verify"}),
            json!({"trigger": "schedule"}),
        ] {
            let Request::Verify { trigger, alert, .. } = parse(&payload).unwrap() else {
                panic!()
            };
            assert_eq!(trigger, Trigger::Schedule, "{payload}");
            assert!(alert);
        }
    }

    #[test]
    fn custom_resource_create_and_delete() {
        let Request::CustomResource(create) =
            parse(&events("verify-custom-resource-create.json")).unwrap()
        else {
            panic!()
        };
        assert_eq!(create.request_type, RequestType::Create);
        assert_eq!(create.destination.as_deref(), Some("acme"));
        assert_eq!(create.logical_resource_id, "VerifyAcme");
        assert!(create.response_url.starts_with("https://"));
        assert_eq!(create.physical_resource_id, None);
        let Request::CustomResource(delete) =
            parse(&events("verify-custom-resource-delete.json")).unwrap()
        else {
            panic!()
        };
        assert_eq!(delete.request_type, RequestType::Delete);
        assert!(delete.physical_resource_id.is_some());
    }

    #[test]
    fn broken_payloads_are_refused_with_a_reason() {
        assert!(parse(&json!("acme")).unwrap_err().0.contains("a string"));
        assert!(
            parse(&json!({"RequestType": "Create"}))
                .unwrap_err()
                .0
                .contains("ResponseURL")
        );
        assert!(
            parse(&json!({"RequestType": "Explode", "ResponseURL": "https://x"}))
                .unwrap_err()
                .0
                .contains("Explode")
        );
    }
}
