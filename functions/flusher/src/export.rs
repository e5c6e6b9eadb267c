//! A destination's file from an archive part: the part's lines, selected by
//! event type, with `omitFields` removed and `_export` added when asked, in
//! the destination's format (gzip at its level, plain NDJSON, or zstd).
//!
//! Streaming: [`PartEncoder`] takes the part's compressed bytes in pieces
//! as they are read and rewrites them one line at a time into a buffer the
//! caller drains, so memory holds neither the part nor its rewritten copy
//! (publishing sends the buffer in upload parts as it fills).
//! [`encode_part`] is the same encoder fed a whole part at once.
//! Deterministic: the same part gives the same bytes however it is cut into
//! pieces (gzip without a timestamp, single-threaded zstd), so a retried
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

/// Rewrites an archive part (`archive`: its gzip bytes) for a destination,
/// whole: [`PartEncoder`] fed the part at once. `profile` reads event
/// types; `metadata` is what `_export` holds, with each line's provenance
/// from `provenance` (the part's sidecar, gzip, one line per archive line)
/// when given.
pub fn encode_part(
    archive: &[u8],
    options: &ContentOptions,
    archive_gzip_level: u32,
    profile: &Profile,
    metadata: &ExportMetadata,
    provenance: Option<&[u8]>,
) -> std::io::Result<Encoded> {
    let sidecar = provenance.map(gzip_lines);
    let mut encoder = PartEncoder::new(options, archive_gzip_level, profile, metadata, sidecar)?;
    encoder.write(archive)?;
    let mut bytes = std::mem::take(encoder.output());
    let rest = encoder.finish()?;
    bytes.extend_from_slice(&rest.bytes);
    Ok(Encoded {
        bytes,
        events: rest.events,
    })
}

/// The lines of gzip `source` (for example a provenance sidecar), read as
/// [`PartEncoder`] reads a sidecar.
pub fn gzip_lines<'a>(source: impl BufRead + Send + 'a) -> Sidecar<'a> {
    Box::new(BufReader::new(MultiGzDecoder::new(source)))
}

/// A provenance sidecar's decompressed lines.
pub type Sidecar<'a> = Box<dyn BufRead + Send + 'a>;

/// Rewrites an archive part for a destination as its compressed bytes
/// come, in pieces of any size: memory holds one line and what the caller
/// has not taken from [`PartEncoder::output`] yet, never the part or its
/// rewritten copy. The output does not depend on how the part was cut into
/// pieces (the tests feed it byte by byte).
pub struct PartEncoder<'a> {
    decoder: flate2::write::MultiGzDecoder<Lines<'a>>,
}

impl<'a> PartEncoder<'a> {
    /// An encoder for one part; see [`encode_part`] for the arguments.
    pub fn new(
        options: &'a ContentOptions,
        archive_gzip_level: u32,
        profile: &'a Profile,
        metadata: &'a ExportMetadata,
        sidecar: Option<Sidecar<'a>>,
    ) -> std::io::Result<Self> {
        let mut omit: Vec<&'a [String]> = options
            .omit_fields
            .iter()
            .map(|f: &OmitField| f.tokens.as_slice())
            .collect();
        if options.include_metadata {
            // An `_export` the event already had is replaced.
            omit.push(EXPORT_PATH.as_slice());
        }
        let rewriter = Rewriter {
            options,
            profile,
            metadata,
            omit,
            sidecar,
            sidecar_line: String::new(),
            sink: Sink::new(options, archive_gzip_level)?,
            events: 0,
        };
        Ok(Self {
            decoder: flate2::write::MultiGzDecoder::new(Lines {
                partial: Vec::new(),
                rewriter,
            }),
        })
    }

    /// Decodes and rewrites the part's next compressed bytes.
    pub fn write(&mut self, compressed: &[u8]) -> std::io::Result<()> {
        self.decoder.write_all(compressed)
    }

    /// The destination's bytes produced so far and not yet taken: the
    /// caller sends and clears them.
    pub fn output(&mut self) -> &mut Vec<u8> {
        self.decoder.get_mut().rewriter.sink.output()
    }

    /// Ends the part (its last line need not end with a line break): the
    /// destination's bytes not yet taken, and the events written in all.
    pub fn finish(mut self) -> std::io::Result<Encoded> {
        self.decoder.try_finish()?;
        let Lines {
            partial,
            mut rewriter,
        } = self.decoder.finish()?;
        rewriter.line(&partial)?;
        Ok(Encoded {
            events: rewriter.events,
            bytes: rewriter.sink.finish()?,
        })
    }
}

/// The key `_export` as an omitted field's path.
static EXPORT_PATH: std::sync::LazyLock<[String; 1]> =
    std::sync::LazyLock::new(|| ["_export".to_owned()]);

/// Cuts decompressed bytes into lines for the [`Rewriter`]; holds the line
/// that has not ended yet.
struct Lines<'a> {
    partial: Vec<u8>,
    rewriter: Rewriter<'a>,
}

impl Write for Lines<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut rest = bytes;
        if !self.partial.is_empty() {
            let Some(end) = memchr::memchr(b'\n', rest) else {
                self.partial.extend_from_slice(rest);
                return Ok(bytes.len());
            };
            self.partial.extend_from_slice(&rest[..end]);
            self.rewriter.line(&self.partial)?;
            self.partial.clear();
            rest = &rest[end + 1..];
        }
        while let Some(end) = memchr::memchr(b'\n', rest) {
            self.rewriter.line(&rest[..end])?;
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Rewrites one archive line at a time into the destination's format.
struct Rewriter<'a> {
    options: &'a ContentOptions,
    profile: &'a Profile,
    metadata: &'a ExportMetadata,
    omit: Vec<&'a [String]>,
    sidecar: Option<Sidecar<'a>>,
    sidecar_line: String,
    sink: Sink,
    events: u64,
}

impl Rewriter<'_> {
    /// Rewrites one archive line (without its line break); an empty line is
    /// skipped.
    fn line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let text = std::str::from_utf8(line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if text.is_empty() {
            return Ok(());
        }
        let options = self.options;
        // The sidecar keeps step with every line, selected or not.
        let line_provenance = match &mut self.sidecar {
            Some(sidecar) => {
                self.sidecar_line.clear();
                if sidecar.read_line(&mut self.sidecar_line)? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the provenance sidecar has fewer lines than its archive part",
                    ));
                }
                provenance::parse_sidecar_line(self.sidecar_line.trim_end_matches('\n'))
            }
            None => Provenance::default(),
        };
        if options.filters_events() {
            // Archive lines passed the profile when they were batched.
            let event_type = self
                .profile
                .read_stored(text)
                .ok()
                .and_then(|fields| fields.event_type);
            if !options.selects(event_type.as_deref()) {
                return Ok(());
            }
        }
        let mut out: Cow<str> = if self.omit.is_empty() {
            Cow::Borrowed(text)
        } else {
            omit_fields(text, &self.omit)
        };
        if options.include_metadata {
            out = Cow::Owned(append_member(
                &out,
                "_export",
                &self.metadata.json(line_provenance),
            ));
        }
        self.sink.write_all(out.as_bytes())?;
        self.sink.write_all(b"\n")?;
        self.events += 1;
        Ok(())
    }
}

/// The destination's format, writing into a buffer the caller drains.
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

    /// The encoded bytes so far (the compressors only ever append to it).
    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Self::Plain(out) => out,
            Self::Gzip(out) => out.get_mut(),
            Self::Zstd(out) => out.get_mut(),
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

    /// A gzip file of several members, as archive parts may be.
    fn multi_member(texts: &[&str]) -> Vec<u8> {
        texts.iter().flat_map(|text| gzip(text)).collect()
    }

    #[test]
    fn a_part_fed_in_pieces_of_any_size_gives_the_bytes_fed_whole() {
        let lines: Vec<String> = (0..300)
            .map(|n| {
                format!(
                    r#"{{"organizationId":"t","eventTime":"2026-11-22T10:00:00Z","type":"{}","n":{n},"user":{{"id":"u{n}","secret":"s"}}}}"#,
                    if n % 3 == 0 { "a" } else { "b" }
                )
            })
            .collect();
        let text = lines.join("\n");
        // Three members; the last line has no line break.
        let (first, rest) = text.split_at(text.len() / 3);
        let (second, third) = rest.split_at(rest.len() / 2);
        let archive = multi_member(&[first, second, third]);
        let sidecar_text: String = (0..300).map(|n| format!("{n}\tm-{n}\n")).collect();
        let sidecar = gzip(&sidecar_text);
        let profile = Profile::airkit_app_events();
        let metadata = ExportMetadata::new(&partition(), 2);
        let omitted = vec![OmitField {
            pointer: "/user/secret".to_owned(),
            tokens: vec!["user".to_owned(), "secret".to_owned()],
        }];
        let options = [
            ContentOptions {
                format: ExportFormat::Ndjson,
                ..ContentOptions::default()
            },
            ContentOptions {
                omit_fields: omitted.clone(),
                ..metadata_options(Some(&["a"]))
            },
            ContentOptions {
                format: ExportFormat::Gzip,
                omit_fields: omitted,
                ..ContentOptions::default()
            },
            ContentOptions {
                format: ExportFormat::Zstd,
                include_metadata: true,
                ..ContentOptions::default()
            },
        ];
        for options in &options {
            let whole =
                encode_part(&archive, options, 6, &profile, &metadata, Some(&sidecar)).unwrap();
            for piece in [1, 7, 4096] {
                let mut encoder = PartEncoder::new(
                    options,
                    6,
                    &profile,
                    &metadata,
                    Some(gzip_lines(sidecar.as_slice())),
                )
                .unwrap();
                let mut bytes = Vec::new();
                for chunk in archive.chunks(piece) {
                    encoder.write(chunk).unwrap();
                    bytes.append(encoder.output());
                }
                let rest = encoder.finish().unwrap();
                bytes.extend_from_slice(&rest.bytes);
                assert_eq!(
                    rest.events, whole.events,
                    "{options:?} in pieces of {piece}"
                );
                assert!(bytes == whole.bytes, "{options:?} in pieces of {piece}");
            }
        }
        // Unchanged lines, plain: the part's text, each line ended.
        let plain = encode_part(&archive, &options[0], 6, &profile, &metadata, None).unwrap();
        assert_eq!(plain.bytes, format!("{text}\n").into_bytes());
        assert_eq!(plain.events, 300);
    }

    #[test]
    fn a_damaged_part_is_an_error_whenever_it_shows() {
        let archive = gzip("{\"type\":\"a\"}\n");
        let options = ContentOptions {
            format: ExportFormat::Ndjson,
            ..ContentOptions::default()
        };
        let profile = Profile::airkit_app_events();
        let metadata = ExportMetadata::new(&partition(), 1);
        // Cut short: the gzip trailer is missing when the part ends.
        let cut = &archive[..archive.len() - 4];
        let error = encode_part(cut, &options, 6, &profile, &metadata, None).unwrap_err();
        assert!(error.to_string().contains("corrupt gzip"), "{error:?}");
        // Not gzip at all.
        assert!(
            encode_part(
                b"{\"type\":\"a\"}\n",
                &options,
                6,
                &profile,
                &metadata,
                None
            )
            .is_err()
        );
        // Not UTF-8.
        let error = encode_part(
            &gzip_bytes(b"\xff\xfe\n"),
            &options,
            6,
            &profile,
            &metadata,
            None,
        )
        .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    }

    fn gzip_bytes(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::new(1));
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
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
