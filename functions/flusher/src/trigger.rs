//! What started a flush run, read leniently from the invocation payload. No
//! wall clock: "now" is the scheduled event's `time`, or the manual
//! payload's `until`, so the same payload always closes the same hours.

use serde::Deserialize;
use serde_json::Value;

use shared::partition::Hour;
use shared::time;

/// A flush run's scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// "Now" for this run, epoch milliseconds.
    pub now_millis: i64,
    /// Whether the grace period applies (scheduled runs) or the caller closes
    /// hours up to `now` on purpose (manual runs).
    pub apply_grace: bool,
    /// Only these streams, when set.
    pub streams: Option<Vec<String>>,
    /// Only these tenants (original ids), when set.
    pub tenants: Option<Vec<String>>,
}

/// Why a payload is not a flush trigger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error(
        "unrecognised payload: expected an EventBridge scheduled event (with `time`) or {{\"flush\": {{\"until\": \"<RFC 3339>\"}}}}"
    )]
    Unrecognised,
    #[error("`{field}`: {message}")]
    BadField { field: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManualFlush {
    until: String,
    streams: Option<Vec<String>>,
    tenants: Option<Vec<String>>,
}

impl Trigger {
    /// Reads a payload: `{"flush": {"until": …, "streams": […], "tenants": […]}}`,
    /// an EventBridge rule's scheduled event, or EventBridge Scheduler's
    /// payload carrying a `time`.
    pub fn from_payload(payload: &Value) -> Result<Self, TriggerError> {
        if let Some(flush) = payload.get("flush") {
            let manual: ManualFlush =
                serde_json::from_value(flush.clone()).map_err(|error| TriggerError::BadField {
                    field: "flush".into(),
                    message: error.to_string(),
                })?;
            let now_millis =
                time::parse_timestamp(&manual.until).map_err(|error| TriggerError::BadField {
                    field: "flush.until".into(),
                    message: error.to_string(),
                })?;
            return Ok(Self {
                now_millis,
                apply_grace: false,
                streams: manual.streams,
                tenants: manual.tenants,
            });
        }
        let Some(time_text) = payload.get("time").and_then(Value::as_str) else {
            return Err(TriggerError::Unrecognised);
        };
        let now_millis =
            time::parse_timestamp(time_text).map_err(|error| TriggerError::BadField {
                field: "time".into(),
                message: error.to_string(),
            })?;
        Ok(Self {
            now_millis,
            apply_grace: true,
            streams: None,
            tenants: None,
        })
    }

    /// Whether `hour` is closed for this run.
    pub fn closes(&self, hour: Hour, grace_minutes: usize) -> bool {
        let grace = if self.apply_grace {
            grace_minutes as i64 * 60_000
        } else {
            0
        };
        hour.end_millis() + grace <= self.now_millis
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scheduled_event_time_is_now() {
        let event: Value =
            serde_json::from_str(include_str!("../../../events/flusher-scheduled.json")).unwrap();
        let trigger = Trigger::from_payload(&event).unwrap();
        assert_eq!(
            trigger.now_millis,
            time::parse_timestamp("2026-11-22T10:15:00Z").unwrap()
        );
        assert!(trigger.apply_grace);
    }

    #[test]
    fn manual_flush_closes_hours_up_to_until_without_grace() {
        let trigger = Trigger::from_payload(
            &json!({"flush": {"until": "2026-11-22T10:00:00Z", "streams": ["airkit-audit-logs"]}}),
        )
        .unwrap();
        assert!(!trigger.apply_grace);
        assert_eq!(trigger.streams, Some(vec!["airkit-audit-logs".to_owned()]));
        let nine = Hour::containing(time::parse_timestamp("2026-11-22T09:30:00Z").unwrap());
        assert!(trigger.closes(nine, 10));
        assert!(!trigger.closes(nine.next(), 10));
    }

    #[test]
    fn grace_delays_closing() {
        let trigger = Trigger::from_payload(&json!({"time": "2026-11-22T10:09:59Z"})).unwrap();
        let nine = Hour::containing(time::parse_timestamp("2026-11-22T09:30:00Z").unwrap());
        assert!(!trigger.closes(nine, 10));
        assert!(trigger.closes(nine, 9));
    }

    #[test]
    fn bad_payloads_say_what_is_wrong() {
        assert_eq!(
            Trigger::from_payload(&json!({})),
            Err(TriggerError::Unrecognised)
        );
        assert!(matches!(
            Trigger::from_payload(&json!({"flush": {"until": "soon"}})),
            Err(TriggerError::BadField { field, .. }) if field == "flush.until"
        ));
        assert!(matches!(
            Trigger::from_payload(&json!({"flush": {"untill": "2026-11-22T10:00:00Z"}})),
            Err(TriggerError::BadField { field, .. }) if field == "flush"
        ));
    }
}
