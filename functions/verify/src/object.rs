//! The verify object: its name and its body.
//!
//! The key is `<destination prefix>airkit-verify-test-<UTC timestamp>`, the
//! timestamp in ISO 8601 basic format to the second (`20261122T093000Z`), so
//! the name says when it was written, sorts by time, and needs no escaping in
//! a URL or a shell. Two verifies of one destination in the same second write
//! the same key (an overwrite, not a second object). The body is a short JSON
//! document saying what the object is and which deployment wrote it.

use chrono::{DateTime, Utc};
use serde_json::json;
use shared::config::Destination;

use crate::payload::Trigger;

/// The object name before its timestamp, as the Airkit seed names its test
/// file (`airkit-verify-test-{{timestamp}}`).
pub const NAME_PREFIX: &str = "airkit-verify-test-";

/// The object's content type.
pub const CONTENT_TYPE: &str = "application/json";

/// `20261122T093000Z`: UTC, ISO 8601 basic format, to the second.
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The key written into `destination` at `time`.
pub fn key(destination: &Destination, time: DateTime<Utc>) -> String {
    format!("{}{NAME_PREFIX}{}", destination.prefix, timestamp(time))
}

/// The object's body: one line of JSON naming the object's purpose, the
/// deployment and destination, when and why it was written.
pub fn body(
    destination: &Destination,
    deployment: &str,
    trigger: Trigger,
    time: DateTime<Utc>,
) -> Vec<u8> {
    let document = json!({
        "object": "airkit-verify-test",
        "purpose": "s3-export wrote this object to verify that it can write to this bucket and prefix; it is safe to delete",
        "deployment": deployment,
        "destination": destination.name,
        "writtenAt": time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "trigger": trigger.name(),
    });
    let mut body = document.to_string().into_bytes();
    body.push(b'\n');
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn destination(prefix: &str) -> Destination {
        let document = format!(
            r#"{{"destinations":[{{"name":"acme","bucket":"acme-exports","prefix":"{prefix}"}}]}}"#
        );
        shared::Config::from_sources(
            |name| (name == "EXPORT_BUCKET").then(|| "exports".to_owned()),
            Some(&document),
        )
        .unwrap()
        .destinations
        .remove(0)
    }

    #[test]
    fn key_is_prefix_name_and_basic_utc_timestamp() {
        let time = Utc.with_ymd_and_hms(2026, 11, 22, 9, 30, 0).unwrap();
        assert_eq!(
            key(&destination("events/"), time),
            "events/airkit-verify-test-20261122T093000Z"
        );
        assert_eq!(
            key(&destination(""), time),
            "airkit-verify-test-20261122T093000Z"
        );
    }

    #[test]
    fn body_says_what_it_is_and_who_wrote_it() {
        let time = Utc.with_ymd_and_hms(2026, 11, 22, 9, 30, 0).unwrap();
        let body = body(&destination(""), "prod-verify", Trigger::Schedule, time);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["object"], "airkit-verify-test");
        assert_eq!(json["deployment"], "prod-verify");
        assert_eq!(json["destination"], "acme");
        assert_eq!(json["writtenAt"], "2026-11-22T09:30:00Z");
        assert_eq!(json["trigger"], "schedule");
        assert!(body.len() < 400);
    }
}
