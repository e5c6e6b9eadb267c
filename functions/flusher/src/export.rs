//! A destination's file from an archive part: the part's lines, selected by
//! event type, with `omitFields` removed and `_export` added when asked, in
//! the destination's format (gzip at its level, plain NDJSON, or zstd).
//!
//! Streaming: the part is decompressed and rewritten one line at a time, so
//! memory holds the archive part's compressed bytes and the destination's
//! file, never the decompressed part. Deterministic: the same part gives the
//! same bytes (gzip without a timestamp, single-threaded zstd), so a retried
//! publish overwrites with identical content.
//!
//! Fields are removed by a small rewriter over the line's text: every kept
//! member keeps its original bytes and order (no re-serializing), and an
//! omitted member is cut out with its separating comma. `_export` is
//! appended as the last member of the top-level object; an `_export` the
//! event already had is replaced.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Write};

use flate2::Compression;
use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;

use shared::export_options::{ContentOptions, ExportFormat, OmitField};
use shared::partition::PartitionKey;
use shared::profile::Profile;
use shared::provenance::{self, Provenance};

/// What `_export` says about the lines of one part: the stream, the hour
/// partition (its start, RFC 3339) and the archive part number, then each
/// line's ingest time and SQS message id when the part has a provenance
/// sidecar.
#[derive(Debug, Clone)]
pub struct ExportMetadata {
    /// The `_export` object's text up to its per-line members (no `}`).
    head: String,
}

impl ExportMetadata {
    /// `{"stream":…,"hour":…,"part":…}` for part `number` of `partition`.
    pub fn new(partition: &PartitionKey, number: u32) -> Self {
        let hour = shared::time::format_rfc3339_millis(partition.hour.start_millis());
        // serde_json's map is sorted without `preserve_order`: write the
        // members in the documented order by hand.
        let string = |text: &str| serde_json::to_string(text).expect("strings serialize");
        let head = format!(
            r#"{{"stream":{},"hour":{},"part":{number}"#,
            string(&partition.stream),
            string(&hour)
        );
        Self { head }
    }

    /// The `_export` object of a line with `provenance`.
    fn json(&self, provenance: Provenance<'_>) -> String {
        format!("{}{}}}", self.head, provenance.json_members())
    }
}

/// A destination's file, and how many events it holds.
#[derive(Debug)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub events: u64,
}

/// Rewrites an archive part (`archive`: its gzip bytes) for a destination.
/// `profile` reads event types; `metadata` is what `_export` holds, with
/// each line's provenance from `provenance` (the part's sidecar, gzip, one
/// line per archive line) when given.
pub fn encode_part(
    archive: &[u8],
    options: &ContentOptions,
    archive_gzip_level: u32,
    profile: &Profile,
    metadata: &ExportMetadata,
    provenance: Option<&[u8]>,
) -> std::io::Result<Encoded> {
    let mut sink = Sink::new(options, archive_gzip_level)?;
    let mut reader = BufReader::new(MultiGzDecoder::new(archive));
    let mut sidecar = provenance.map(|bytes| BufReader::new(MultiGzDecoder::new(bytes)));
    let mut sidecar_line = String::new();
    let mut line = Vec::new();
    let mut events = 0;
    let mut omit: Vec<&[String]> = options
        .omit_fields
        .iter()
        .map(|f: &OmitField| f.tokens.as_slice())
        .collect();
    let export_key = ["_export".to_owned()];
    if options.include_metadata {
        omit.push(&export_key);
    }
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let text = std::str::from_utf8(&line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
            .trim_end_matches('\n');
        if text.is_empty() {
            continue;
        }
        // The sidecar keeps step with every line, selected or not.
        let line_provenance = match &mut sidecar {
            Some(sidecar) => {
                sidecar_line.clear();
                if sidecar.read_line(&mut sidecar_line)? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the provenance sidecar has fewer lines than its archive part",
                    ));
                }
                provenance::parse_sidecar_line(sidecar_line.trim_end_matches('\n'))
            }
            None => Provenance::default(),
        };
        if options.filters_events() {
            // Archive lines passed the profile when they were batched.
            let event_type = profile
                .read_stored(text)
                .ok()
                .and_then(|fields| fields.event_type);
            if !options.selects(event_type.as_deref()) {
                continue;
            }
        }
        let mut out: Cow<str> = if omit.is_empty() {
            Cow::Borrowed(text)
        } else {
            omit_fields(text, &omit)
        };
        if options.include_metadata {
            out = Cow::Owned(append_member(
                &out,
                "_export",
                &metadata.json(line_provenance),
            ));
        }
        sink.write_all(out.as_bytes())?;
        sink.write_all(b"\n")?;
        events += 1;
    }
    Ok(Encoded {
        bytes: sink.finish()?,
        events,
    })
}

enum Sink {
    Plain(Vec<u8>),
    Gzip(GzEncoder<Vec<u8>>),
    Zstd(zstd::Encoder<'static, Vec<u8>>),
}

impl Sink {
    fn new(options: &ContentOptions, archive_gzip_level: u32) -> std::io::Result<Self> {
        let level = options.level(archive_gzip_level);
        Ok(match options.format {
            ExportFormat::Ndjson => Self::Plain(Vec::new()),
            ExportFormat::Gzip => Self::Gzip(GzEncoder::new(
                Vec::new(),
                Compression::new(level.unwrap_or(archive_gzip_level)),
            )),
            ExportFormat::Zstd => {
                let mut encoder = zstd::Encoder::new(Vec::new(), level.unwrap_or(3) as i32)?;
                encoder.include_checksum(true)?;
                Self::Zstd(encoder)
            }
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Plain(out) => out.write_all(bytes),
            Self::Gzip(out) => out.write_all(bytes),
            Self::Zstd(out) => out.write_all(bytes),
        }
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Plain(out) => Ok(out),
            Self::Gzip(out) => out.finish(),
            Self::Zstd(out) => out.finish(),
        }
    }
}

/// `object` (a JSON object's text) with `name: value` added as its last
/// member; other text is returned unchanged.
fn append_member(object: &str, name: &str, value: &str) -> String {
    let trimmed = object.trim_end();
    let Some(body) = trimmed.strip_suffix('}') else {
        return object.to_owned();
    };
    let empty = body.trim_end().ends_with('{');
    let name = serde_json::to_string(name).expect("strings serialize");
    format!("{body}{}{name}:{value}}}", if empty { "" } else { "," })
}

/// `text` (a JSON value) without the members at `paths` (each a list of
/// object keys from the top). Kept members keep their bytes and order;
/// arrays are not descended into. Text that is not valid JSON is returned
/// unchanged (archive lines are valid).
pub fn omit_fields<'a>(text: &'a str, paths: &[&[String]]) -> Cow<'a, str> {
    match rewrite_object(text, paths) {
        Some(Some(rewritten)) => Cow::Owned(rewritten),
        _ => Cow::Borrowed(text),
    }
}

/// `None`: not an object (or malformed); `Some(None)`: nothing to omit.
fn rewrite_object(text: &str, paths: &[&[String]]) -> Option<Option<String>> {
    let bytes = text.as_bytes();
    let start = skip_ws(bytes, 0);
    if bytes.get(start) != Some(&b'{') {
        return None;
    }
    let mut changed = false;
    let mut kept: Vec<Cow<str>> = Vec::new();
    let mut at = start + 1;
    if bytes.get(skip_ws(bytes, at)) == Some(&b'}') {
        return Some(None);
    }
    loop {
        let member_start = at;
        let key_start = skip_ws(bytes, at);
        let key_end = skip_string(bytes, key_start)?;
        let colon = skip_ws(bytes, key_end);
        if bytes.get(colon) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(bytes, colon + 1);
        let value_end = skip_value(bytes, value_start)?;
        let key: Cow<str> = if text[key_start + 1..key_end - 1].contains('\\') {
            Cow::Owned(serde_json::from_str(&text[key_start..key_end]).ok()?)
        } else {
            Cow::Borrowed(&text[key_start + 1..key_end - 1])
        };
        let matching: Vec<&[String]> = paths
            .iter()
            .filter(|path| path.first().is_some_and(|first| *first == key))
            .map(|path| &path[1..])
            .collect();
        if matching.iter().any(|rest| rest.is_empty()) {
            changed = true;
        } else if matching.is_empty() {
            kept.push(Cow::Borrowed(&text[member_start..value_end]));
        } else {
            match rewrite_object(&text[value_start..value_end], &matching) {
                Some(Some(inner)) => {
                    changed = true;
                    kept.push(Cow::Owned(format!(
                        "{}{inner}",
                        &text[member_start..value_start]
                    )));
                }
                _ => kept.push(Cow::Borrowed(&text[member_start..value_end])),
            }
        }
        let next = skip_ws(bytes, value_end);
        match bytes.get(next) {
            Some(b',') => at = next + 1,
            Some(b'}') => {
                if !changed {
                    return Some(None);
                }
                let mut out = String::with_capacity(text.len());
                out.push_str(&text[..=start]);
                for (index, member) in kept.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    out.push_str(member);
                }
                out.push_str(&text[value_end..]);
                return Some(Some(out));
            }
            _ => return None,
        }
    }
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(|b| b" \t\r\n".contains(b)) {
        at += 1;
    }
    at
}

/// The index after the string starting at `at` (a `"`).
fn skip_string(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    loop {
        match bytes.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The index after the JSON value starting at `at`.
fn skip_value(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => skip_string(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = skip_string(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = at;
            while bytes.get(i).is_some_and(|b| !b",}] \t\r\n".contains(b)) {
                i += 1;
            }
            (i > at).then_some(i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[&str]) -> Vec<Vec<String>> {
        list.iter()
            .map(|p| p[1..].split('/').map(str::to_owned).collect())
            .collect()
    }

    fn omit(text: &str, list: &[&str]) -> String {
        let owned = paths(list);
        let refs: Vec<&[String]> = owned.iter().map(Vec::as_slice).collect();
        omit_fields(text, &refs).into_owned()
    }

    #[test]
    fn omitting_keeps_the_other_members_bytes_and_order() {
        let line = r#"{"z":1,"user":{"id":"u","location":{"lat":1.50},"name":"N"},"a":[1,{"b":2}],"s":"x,}\"y"}"#;
        assert_eq!(
            omit(line, &["/user/location", "/a"]),
            r#"{"z":1,"user":{"id":"u","name":"N"},"s":"x,}\"y"}"#
        );
        assert_eq!(omit(line, &["/z"]), line.replacen(r#""z":1,"#, "", 1));
        assert_eq!(
            omit(line, &["/s"]),
            r#"{"z":1,"user":{"id":"u","location":{"lat":1.50},"name":"N"},"a":[1,{"b":2}]}"#
        );
        assert_eq!(omit(line, &["/missing", "/user/missing"]), line);
        assert_eq!(omit(r#"{"only":1}"#, &["/only"]), "{}");
        assert_eq!(omit("not json", &["/x"]), "not json");
    }

    fn gzip(text: &str) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::new(1));
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    }

    fn metadata_options(types: Option<&[&str]>) -> ContentOptions {
        ContentOptions {
            format: ExportFormat::Ndjson,
            include_metadata: true,
            include_event_types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
            ..ContentOptions::default()
        }
    }

    fn partition() -> PartitionKey {
        PartitionKey {
            hour: shared::partition::Hour::containing(0),
            stream: "s".into(),
            tenant: shared::partition::TenantKey::encode("t"),
        }
    }

    #[test]
    fn provenance_keeps_step_with_lines_that_a_filter_skips() {
        let archive = gzip(concat!(
            r#"{"organizationId":"t","eventTime":"2026-11-22T10:00:00Z","type":"a"}"#,
            "\n",
            r#"{"organizationId":"t","eventTime":"2026-11-22T10:00:00Z","type":"b"}"#,
            "\n",
            r#"{"organizationId":"t","eventTime":"2026-11-22T10:00:00Z","type":"a"}"#,
            "\n",
        ));
        // The second line's provenance is unknown.
        let sidecar = gzip("1000\tm-1\n\t\n3000\tm-3\n");
        let encoded = encode_part(
            &archive,
            &metadata_options(Some(&["a"])),
            6,
            &Profile::airkit_app_events(),
            &ExportMetadata::new(&partition(), 4),
            Some(&sidecar),
        )
        .unwrap();
        let text = String::from_utf8(encoded.bytes).unwrap();
        let exports: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["_export"].clone())
            .collect();
        assert_eq!(
            exports,
            vec![
                serde_json::json!({"stream":"s","hour":"1970-01-01T00:00:00.000Z","part":4,
                    "ingestTime":"1970-01-01T00:00:01.000Z","messageId":"m-1"}),
                serde_json::json!({"stream":"s","hour":"1970-01-01T00:00:00.000Z","part":4,
                    "ingestTime":"1970-01-01T00:00:03.000Z","messageId":"m-3"}),
            ]
        );
    }

    #[test]
    fn an_archived_line_with_a_repeated_type_is_selected_by_its_first_type() {
        // Archived before such events were refused: filtered as it was then.
        let legacy =
            r#"{"organizationId":"t","eventTime":"2026-11-22T10:00:00Z","type":"a","type":"b"}"#;
        let encoded = encode_part(
            &gzip(&format!("{legacy}\n")),
            &ContentOptions {
                format: ExportFormat::Ndjson,
                include_event_types: Some(vec!["a".to_owned()]),
                ..ContentOptions::default()
            },
            6,
            &Profile::airkit_app_events(),
            &ExportMetadata::new(&partition(), 1),
            None,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(encoded.bytes).unwrap(),
            format!("{legacy}\n")
        );
    }

    #[test]
    fn a_sidecar_shorter_than_its_part_is_an_error() {
        let archive = gzip("{\"type\":\"a\"}\n{\"type\":\"a\"}\n");
        let error = encode_part(
            &archive,
            &metadata_options(None),
            6,
            &Profile::airkit_app_events(),
            &ExportMetadata::new(&partition(), 1),
            Some(&gzip("1\tm\n")),
        )
        .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("fewer lines"), "{error}");
    }

    #[test]
    fn appending_export_keeps_the_line() {
        assert_eq!(
            append_member(r#"{"a":1}"#, "_export", "{}"),
            r#"{"a":1,"_export":{}}"#
        );
        assert_eq!(append_member("{}", "_export", "{}"), r#"{"_export":{}}"#);
    }
}
