//! Decoding an SQS record body into the events it carries.
//!
//! A body is a JSON object, a JSON array of objects, or NDJSON (one object a
//! line); it may be wrapped in an SNS notification envelope and may start
//! with a UTF-8 byte order mark. Splitting never changes an event's bytes:
//! [`compact`] turns a pretty-printed event into one line only when it spans
//! several, so an event sent as one compact line is exported exactly as sent.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::rejection::{RejectReason, Rejection};

const BYTE_ORDER_MARK: char = '\u{feff}';

/// A record body with any SNS envelope and byte order mark removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwrapped<'a> {
    /// The payload: the body itself, or the SNS notification's `Message`.
    pub payload: Cow<'a, str>,
    /// The SNS message attribute `stream`, when the envelope carried one.
    pub sns_stream: Option<String>,
}

#[derive(Deserialize)]
struct SnsEnvelope {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "TopicArn")]
    topic_arn: String,
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "MessageAttributes", default)]
    attributes: HashMap<String, SnsAttribute>,
}

#[derive(Deserialize)]
struct SnsAttribute {
    #[serde(rename = "Value")]
    value: String,
}

/// Removes a leading byte order mark and unwraps an SNS `Notification`
/// envelope (SNS to SQS without raw message delivery).
pub fn unwrap_body(body: &str) -> Unwrapped<'_> {
    let body = body.strip_prefix(BYTE_ORDER_MARK).unwrap_or(body);
    // memmem, not `str::contains`: every body is searched whole, and
    // str's search stops at each quote (the needle's first and last
    // byte), which a body of JSON lines has every few bytes.
    let has = |needle: &str| memchr::memmem::find(body.as_bytes(), needle.as_bytes()).is_some();
    let looks_like_sns =
        body.trim_start().starts_with('{') && has("\"TopicArn\"") && has("\"Notification\"");
    if looks_like_sns
        && let Ok(envelope) = serde_json::from_str::<SnsEnvelope>(body)
        && envelope.kind == "Notification"
        && envelope.topic_arn.starts_with("arn:")
    {
        let message = envelope.message;
        let payload = match message.strip_prefix(BYTE_ORDER_MARK) {
            Some(rest) => rest.to_owned(),
            None => message,
        };
        return Unwrapped {
            payload: Cow::Owned(payload),
            sns_stream: envelope
                .attributes
                .get("stream")
                .map(|attribute| attribute.value.clone()),
        };
    }
    Unwrapped {
        payload: Cow::Borrowed(body),
        sns_stream: None,
    }
}

/// Splits a payload into the texts of its events, without checking them:
/// the stream's profile does that. The whole payload is refused only when it
/// cannot be split at all (empty, or an array that is not valid JSON).
pub fn split_events(payload: &str) -> Result<Vec<&str>, Rejection> {
    let trimmed = payload.trim();
    if trimmed.is_empty() {
        return Err(Rejection::new(RejectReason::NotJson, "the body is empty"));
    }
    if trimmed.starts_with('[') {
        let elements: Vec<&RawValue> = serde_json::from_str(trimmed).map_err(|error| {
            Rejection::new(RejectReason::NotJson, format!("not a JSON array: {error}"))
        })?;
        // Acknowledged with nothing stored, an empty array would vanish
        // without a trace (found by fuzzing): it is refused like a body
        // without events.
        if elements.is_empty() {
            return Err(Rejection::new(
                RejectReason::NotAnObject,
                "an empty JSON array holds no event",
            ));
        }
        return Ok(elements.into_iter().map(RawValue::get).collect());
    }
    let Some((first_line, rest)) = trimmed.split_once('\n') else {
        return Ok(vec![trimmed]);
    };
    // NDJSON when the first line is a whole JSON value by itself; also when
    // it is not but the body is not one JSON value either and another of
    // its lines is a whole JSON object by itself: NDJSON whose first line is
    // broken, which must cost that line alone, not every event after it (a
    // producer packing records it did not check sends such bodies).
    // Otherwise one pretty-printed value spanning several lines, refused
    // whole when it is not JSON. (The lines are looked at before the whole
    // body is parsed: a pretty-printed event rarely has a line that is an
    // object by itself, so it is not parsed one more time.)
    if is_json_value(first_line) || (has_object_line(rest) && !is_json_value(trimmed)) {
        // memchr_iter, not `str::split`: a body is hundreds of lines, and
        // memchr's vector search passes over a line's bytes several times
        // faster than str's search for one char.
        let mut events = Vec::new();
        let mut start = 0;
        let ends = memchr::memchr_iter(b'\n', trimmed.as_bytes()).chain([trimmed.len()]);
        for end in ends {
            // A newline is one byte: both ends are char boundaries.
            let line = trimmed[start..end].trim();
            if !line.is_empty() {
                events.push(line);
            }
            start = end + 1;
        }
        Ok(events)
    } else {
        Ok(vec![trimmed])
    }
}

/// Whether `text` is one whole JSON value (surrounding whitespace allowed).
fn is_json_value(text: &str) -> bool {
    serde_json::from_str::<IgnoredAny>(text).is_ok()
}

/// Whether one of the lines of `text` is, trimmed, a whole JSON object by
/// itself. Only bodies whose first line is not a whole value come here.
fn has_object_line(text: &str) -> bool {
    text.split('\n').any(|line| {
        let line = line.trim();
        line.starts_with('{') && is_json_value(line)
    })
}

/// The event as one line without tabs: unchanged when it already is one,
/// otherwise with the whitespace between tokens removed (strings, numbers
/// and key order are kept byte for byte). Call it only on text that parsed
/// as JSON (whose strings cannot hold a raw tab or newline), so the result
/// never holds a tab: staged lines use one to start their provenance.
pub fn compact(event: &str) -> Cow<'_, str> {
    // memchr3, not `str::contains` of three chars: this runs on every
    // event, and a char-set search reads one char at a time.
    if memchr::memchr3(b'\n', b'\r', b'\t', event.as_bytes()).is_none() {
        return Cow::Borrowed(event);
    }
    let mut line = String::with_capacity(event.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in event.chars() {
        if in_string {
            line.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            line.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            line.push(c);
        }
    }
    Cow::Owned(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_object_is_one_event_as_sent() {
        assert_eq!(split_events(r#"{"a": 1}"#).unwrap(), vec![r#"{"a": 1}"#]);
    }

    #[test]
    fn array_elements_are_events() {
        assert_eq!(
            split_events(r#"[{"a":1}, {"b":[2]}]"#).unwrap(),
            vec![r#"{"a":1}"#, r#"{"b":[2]}"#]
        );
    }

    #[test]
    fn empty_array_is_refused_as_holding_no_event() {
        for body in ["[]", " [ ] ", "[\n]"] {
            let rejection = split_events(body).unwrap_err();
            assert_eq!(rejection.reason, RejectReason::NotAnObject, "{body:?}");
            assert!(rejection.detail.contains("empty JSON array"));
        }
    }

    #[test]
    fn broken_array_is_refused_whole() {
        let rejection = split_events(r#"[{"a":1},"#).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::NotJson);
    }

    #[test]
    fn ndjson_lines_are_events_and_blank_lines_are_skipped() {
        let body = "{\"a\":1}\r\n\n{\"b\":2}\n  {not json\n";
        assert_eq!(
            split_events(body).unwrap(),
            vec![r#"{"a":1}"#, r#"{"b":2}"#, "{not json"]
        );
    }

    /// A packed NDJSON body whose first record is not JSON (a producer
    /// that packs what it is given): that record alone is an event to
    /// refuse, the ones after it are events. The local run once saw a
    /// message of 1,131 valid events refused whole this way.
    #[test]
    fn ndjson_with_a_broken_first_line_is_still_split_at_every_line() {
        let body = "{\"organizationId\": \"t\", \"eventTime\": \n{\"a\":1}\n\"s\"\n{\"b\":2}\n";
        assert_eq!(
            split_events(body).unwrap(),
            vec![
                r#"{"organizationId": "t", "eventTime":"#,
                r#"{"a":1}"#,
                r#""s""#,
                r#"{"b":2}"#
            ]
        );
    }

    /// Bodies whose first line is not a whole value stay one event when they
    /// are one JSON value, or when no other line is an object by itself (a
    /// pretty-printed event, cut short or with an array's elements on lines
    /// of their own): refused whole, with their original text.
    #[test]
    fn a_multiline_value_or_a_broken_pretty_printed_event_stays_one_event() {
        for body in [
            "{\"a\":\n  {\"b\": 1}\n}",
            "{\n  \"a\": [\n    \"x\",\n    1\n  ],\n  \"b\": ",
            "{\n  \"a\": \"x\"\n",
        ] {
            assert_eq!(split_events(body).unwrap(), vec![body.trim()], "{body:?}");
        }
    }

    #[test]
    fn pretty_printed_object_is_one_event_compacted() {
        let body = "{\n  \"a\": \"x y\",\n  \"b\": [1, 2.50]\n}\n";
        let events = split_events(body).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(compact(events[0]), r#"{"a":"x y","b":[1,2.50]}"#);
    }

    #[test]
    fn compact_keeps_escaped_quotes_and_spaces_in_strings() {
        let pretty = "{\n \"a\" : \"say \\\"hi\\\" \\\\ \",\n \"b\": 1e5\n}";
        assert_eq!(compact(pretty), r#"{"a":"say \"hi\" \\ ","b":1e5}"#);
    }

    #[test]
    fn compact_removes_tab_whitespace_from_one_line_events() {
        assert_eq!(
            compact("{\"a\":\t1,\t\"b\":\"x\\ty\"}"),
            r#"{"a":1,"b":"x\ty"}"#
        );
    }

    #[test]
    fn compact_one_line_is_borrowed_unchanged() {
        assert!(matches!(
            compact(r#"{"a": 1}"#),
            Cow::Borrowed(r#"{"a": 1}"#)
        ));
    }

    #[test]
    fn empty_body_is_refused() {
        assert_eq!(
            split_events(" \n ").unwrap_err().reason,
            RejectReason::NotJson
        );
    }

    #[test]
    fn byte_order_mark_is_removed() {
        let unwrapped = unwrap_body("\u{feff}{\"a\":1}");
        assert_eq!(unwrapped.payload, "{\"a\":1}");
    }

    #[test]
    fn sns_notification_is_unwrapped_with_its_stream_attribute() {
        let body = r#"{"Type":"Notification","MessageId":"m","TopicArn":"arn:aws:sns:us-east-1:123456789012:events","Message":"{\"a\":1}\n{\"b\":2}","MessageAttributes":{"stream":{"Type":"String","Value":"airkit-audit-logs"}}}"#;
        let unwrapped = unwrap_body(body);
        assert_eq!(unwrapped.payload, "{\"a\":1}\n{\"b\":2}");
        assert_eq!(unwrapped.sns_stream.as_deref(), Some("airkit-audit-logs"));
    }

    #[test]
    fn an_event_that_only_mentions_sns_words_is_not_unwrapped() {
        let body = r#"{"Type":"Notification","TopicArn":"x","Message":"hello"}"#;
        assert_eq!(unwrap_body(body).payload, body);
    }
}
