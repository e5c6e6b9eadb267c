//! What started a flush run, read leniently from the invocation payload. No
//! wall clock: "now" is the scheduled event's `time`, or the manual
//! payload's `until`, so the same payload always closes the same hours.
//! A `{"backfill": …}` payload is a [`BackfillRequest`] instead.

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

/// What an invocation asks for: a flush run, or a backfill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Flush(Trigger),
    Backfill(BackfillRequest),
}

impl Invocation {
    /// Reads a payload: `{"backfill": …}` (see [`BackfillRequest`]), else a
    /// flush trigger (see [`Trigger::from_payload`]).
    pub fn from_payload(payload: &Value) -> Result<Self, TriggerError> {
        match payload.get("backfill") {
            Some(backfill) => BackfillRequest::from_value(backfill).map(Self::Backfill),
            None => Trigger::from_payload(payload).map(Self::Flush),
        }
    }
}

/// A backfill as asked: publish the archived hours that overlap
/// `[from, to)` to one destination, optionally only some streams and
/// tenants. Checked here for its form only; [`crate::backfill::plan`]
/// checks it against the configuration and the archive's retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRequest {
    /// The destination's name.
    pub destination: String,
    /// The first hour's start, epoch milliseconds (`from` rounded down to
    /// its hour).
    pub from_millis: i64,
    /// The end of the range, exclusive, epoch milliseconds.
    pub to_millis: i64,
    /// Only these streams, when set (never empty).
    pub streams: Option<Vec<String>>,
    /// Only these tenants (original ids), when set (never empty).
    pub tenants: Option<Vec<String>>,
    /// Start over even if the same backfill was done before.
    pub restart: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillDocument {
    destination: String,
    from: String,
    to: String,
    streams: Option<Vec<String>>,
    tenants: Option<Vec<String>>,
    #[serde(default)]
    restart: bool,
}

impl BackfillRequest {
    /// Reads the object under `backfill`: `destination`, `from` and `to`
    /// (RFC 3339) are required, `to` after `from`; `streams` and `tenants`
    /// are optional but not empty; `restart` is optional. Errors name the
    /// field.
    pub fn from_value(value: &Value) -> Result<Self, TriggerError> {
        let bad = |field: &str, message: String| TriggerError::BadField {
            field: format!("backfill.{field}"),
            message,
        };
        let document: BackfillDocument =
            serde_json::from_value(value.clone()).map_err(|error| TriggerError::BadField {
                field: "backfill".into(),
                message: error.to_string(),
            })?;
        if document.destination.trim().is_empty() {
            return Err(bad("destination", "is empty".into()));
        }
        let from_millis = time::parse_timestamp(&document.from)
            .map_err(|error| bad("from", format!("`{}`: {error}", document.from)))?;
        let to_millis = time::parse_timestamp(&document.to)
            .map_err(|error| bad("to", format!("`{}`: {error}", document.to)))?;
        if to_millis <= from_millis {
            return Err(bad(
                "to",
                format!(
                    "`{}` is not after `backfill.from` (`{}`)",
                    document.to, document.from
                ),
            ));
        }
        for (field, list) in [
            ("streams", &document.streams),
            ("tenants", &document.tenants),
        ] {
            if list.as_ref().is_some_and(Vec::is_empty) {
                return Err(bad(
                    field,
                    "is empty: leave it out to take every one".into(),
                ));
            }
        }
        Ok(Self {
            destination: document.destination,
            from_millis: Hour::containing(from_millis).start_millis(),
            to_millis,
            streams: document.streams,
            tenants: document.tenants,
            restart: document.restart,
        })
    }

    /// The first hour of the range.
    pub fn first_hour(&self) -> Hour {
        Hour::containing(self.from_millis)
    }

    /// The last hour of the range (the one holding `to`'s last millisecond).
    pub fn last_hour(&self) -> Hour {
        Hour::containing(self.to_millis - 1)
    }
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
    fn backfill_payload_covers_the_hours_overlapping_the_range() {
        let invocation = Invocation::from_payload(&json!({"backfill": {
            "destination": "lake", "from": "2026-11-22T09:30:00Z", "to": "2026-11-22T12:00:00Z",
            "streams": ["airkit-app-events"]}}))
        .unwrap();
        let Invocation::Backfill(request) = invocation else {
            panic!("a backfill")
        };
        assert_eq!(request.destination, "lake");
        assert_eq!(
            request.first_hour(),
            Hour::containing(time::parse_timestamp("2026-11-22T09:00:00Z").unwrap())
        );
        assert_eq!(
            request.last_hour(),
            Hour::containing(time::parse_timestamp("2026-11-22T11:59:59Z").unwrap())
        );
        assert_eq!(request.streams, Some(vec!["airkit-app-events".to_owned()]));
        assert_eq!(request.tenants, None);
        assert!(!request.restart);
        assert!(matches!(
            Invocation::from_payload(&json!({"time": "2026-11-22T10:15:00Z"})),
            Ok(Invocation::Flush(_))
        ));
    }

    #[test]
    fn the_sample_backfill_event_is_a_backfill() {
        let event: Value =
            serde_json::from_str(include_str!("../../../events/flusher-backfill.json")).unwrap();
        let Ok(Invocation::Backfill(request)) = Invocation::from_payload(&event) else {
            panic!("a backfill")
        };
        assert_eq!(request.destination, "default");
        assert_eq!(request.last_hour().date_path(), "2026-11-21/23");
    }

    fn backfill_error(backfill: Value) -> String {
        match Invocation::from_payload(&json!({ "backfill": backfill })) {
            Err(TriggerError::BadField { field, message }) => format!("{field}: {message}"),
            other => panic!("expected a bad field, got {other:?}"),
        }
    }

    #[test]
    fn bad_backfill_payloads_name_the_field() {
        let ok = json!({"destination": "d", "from": "2026-11-22T09:00:00Z", "to": "2026-11-22T10:00:00Z"});
        let with = |field: &str, value: Value| {
            let mut payload = ok.clone();
            payload[field] = value;
            payload
        };
        let error = backfill_error(with("from", json!("yesterday")));
        assert!(error.starts_with("backfill.from: `yesterday`"), "{error}");
        let error = backfill_error(with("to", json!("2026-13-01T00:00:00Z")));
        assert!(error.starts_with("backfill.to: "), "{error}");
        let error = backfill_error(with("to", json!("2026-11-22T08:00:00Z")));
        assert!(
            error.starts_with("backfill.to: `2026-11-22T08:00:00Z` is not after `backfill.from`"),
            "{error}"
        );
        let error = backfill_error(with("to", json!("2026-11-22T09:00:00Z")));
        assert!(error.contains("is not after"), "{error}");
        let error = backfill_error(with("destination", json!(" ")));
        assert_eq!(error, "backfill.destination: is empty");
        let error = backfill_error(with("streams", json!([])));
        assert!(error.starts_with("backfill.streams: is empty"), "{error}");
        let error = backfill_error(with("tenants", json!([])));
        assert!(error.starts_with("backfill.tenants: is empty"), "{error}");
        let error =
            backfill_error(json!({"from": "2026-11-22T09:00:00Z", "to": "2026-11-22T10:00:00Z"}));
        assert!(error.contains("missing field `destination`"), "{error}");
        let error = backfill_error(with("form", json!("x")));
        assert!(error.contains("unknown field `form`"), "{error}");
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
