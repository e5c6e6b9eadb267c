//! Provenance: where each accepted event came from (its SQS message id) and
//! when the pipeline received it (the message's `SentTimestamp`), carried
//! from the batcher to destinations that ask for `_export` metadata.
//!
//! Staged chunks are internal, so the batcher appends the provenance to each
//! staged line after a tab: `<event JSON>\t<ingest millis>\t<message id>`.
//! A staged event never holds a raw tab ([`crate::decode::compact`] removes
//! the whitespace of any event that has one, and JSON strings cannot hold
//! one), so the first tab ends the event. The flusher writes the event to
//! its archive part and the provenance to a sidecar file beside the part,
//! one line per archive line in the same order (`<ingest millis>\t<message
//! id>`, or an empty line when unknown); archive parts stay plain NDJSON.
//!
//! A line without provenance (staged before a destination asked for it, or
//! by an older batcher) is read as an event with none.

use std::fmt::Write;

use crate::time::format_rfc3339_millis;

/// Where one event came from. Either part may be unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Provenance<'a> {
    /// The message's `SentTimestamp` (epoch milliseconds), when SQS gave one.
    pub ingest_millis: Option<i64>,
    /// The SQS message id, when it is one line of printable text.
    pub message_id: Option<&'a str>,
}

impl<'a> Provenance<'a> {
    /// The provenance of an event of message `message_id` sent at
    /// `ingest_millis`. An id with a control character (never one SQS
    /// assigns) is left out rather than allowed to break the line format.
    pub fn new(ingest_millis: Option<i64>, message_id: Option<&'a str>) -> Self {
        Self {
            ingest_millis,
            message_id: message_id.filter(|id| !id.is_empty() && !id.contains(char::is_control)),
        }
    }

    /// True when neither part is known.
    pub fn is_empty(&self) -> bool {
        self.ingest_millis.is_none() && self.message_id.is_none()
    }

    /// Appends `<ingest millis>\t<message id>` (either part may be empty),
    /// without a newline.
    pub fn write_fields(&self, out: &mut String) {
        if let Some(millis) = self.ingest_millis {
            write!(out, "{millis}").expect("writing to a String");
        }
        out.push('\t');
        if let Some(id) = self.message_id {
            out.push_str(id);
        }
    }

    /// Reads what [`Provenance::write_fields`] wrote; `None` when `fields`
    /// is not in that form.
    pub fn parse_fields(fields: &'a str) -> Option<Self> {
        let (millis, id) = fields.split_once('\t')?;
        let ingest_millis = if millis.is_empty() {
            None
        } else {
            Some(millis.parse().ok()?)
        };
        Some(Self::new(ingest_millis, Some(id)))
    }

    /// The `_export` members this provenance adds, in order, as JSON text
    /// starting with a comma (empty when nothing is known):
    /// `,"ingestTime":"<RFC 3339>","messageId":"<id>"`.
    pub fn json_members(&self) -> String {
        let mut members = String::new();
        if let Some(millis) = self.ingest_millis {
            members.push_str(",\"ingestTime\":");
            members.push_str(&json_string(&format_rfc3339_millis(millis)));
        }
        if let Some(id) = self.message_id {
            members.push_str(",\"messageId\":");
            members.push_str(&json_string(id));
        }
        members
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// Splits a staged line into its event and its provenance, if it has one.
/// A line whose text after the first tab is not provenance is all event.
pub fn split_staged_line(line: &str) -> (&str, Option<Provenance<'_>>) {
    // memchr: the tab is after the whole event, read on every staged line.
    match memchr::memchr(b'\t', line.as_bytes()) {
        Some(tab) => match Provenance::parse_fields(&line[tab + 1..]) {
            Some(provenance) => (&line[..tab], Some(provenance)),
            None => (line, None),
        },
        None => (line, None),
    }
}

/// Reads one sidecar line (without its newline): empty means unknown.
pub fn parse_sidecar_line(line: &str) -> Provenance<'_> {
    Provenance::parse_fields(line).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(event: &str, provenance: Provenance<'_>) -> String {
        let mut line = format!("{event}\t");
        provenance.write_fields(&mut line);
        line
    }

    #[test]
    fn staged_lines_round_trip() {
        let provenance = Provenance::new(Some(1_668_900_196_792), Some("5fea7756-0ea4"));
        let line = staged(r#"{"a":"x"}"#, provenance);
        assert_eq!(line, "{\"a\":\"x\"}\t1668900196792\t5fea7756-0ea4");
        assert_eq!(split_staged_line(&line), (r#"{"a":"x"}"#, Some(provenance)));
    }

    #[test]
    fn unknown_parts_round_trip_as_unknown() {
        for provenance in [
            Provenance::new(None, Some("id")),
            Provenance::new(Some(7), None),
            Provenance::default(),
        ] {
            let line = staged("{}", provenance);
            assert_eq!(split_staged_line(&line), ("{}", Some(provenance)));
        }
    }

    #[test]
    fn a_line_without_provenance_is_all_event() {
        assert_eq!(split_staged_line(r#"{"a":1}"#), (r#"{"a":1}"#, None));
        // Tab whitespace in an event staged by an older batcher: not provenance.
        let old = "{\"a\":\t1}";
        assert_eq!(split_staged_line(old), (old, None));
    }

    #[test]
    fn ids_that_would_break_the_format_are_left_out() {
        assert_eq!(Provenance::new(None, Some("a\tb")).message_id, None);
        assert_eq!(Provenance::new(None, Some("a\nb")).message_id, None);
        assert_eq!(Provenance::new(None, Some("")).message_id, None);
    }

    #[test]
    fn members_are_json() {
        let provenance = Provenance::new(Some(0), Some("m\"1"));
        let object = format!("{{\"stream\":\"s\"{}}}", provenance.json_members());
        let value: serde_json::Value = serde_json::from_str(&object).unwrap();
        assert_eq!(value["ingestTime"], "1970-01-01T00:00:00.000Z");
        assert_eq!(value["messageId"], "m\"1");
        assert_eq!(Provenance::default().json_members(), "");
    }

    #[test]
    fn sidecar_lines_parse_and_empty_is_unknown() {
        assert_eq!(
            parse_sidecar_line("12\tabc"),
            Provenance::new(Some(12), Some("abc"))
        );
        assert_eq!(parse_sidecar_line(""), Provenance::default());
        assert_eq!(parse_sidecar_line("\t"), Provenance::default());
    }
}
