//! Compaction, the pure part of a flush: staged data in (segments of staged
//! objects, zstd, or staged chunks of the format before them, gzip NDJSON),
//! the events not seen before out, in order. The flusher feeds these events
//! to its S3 part writer; [`compact_chunks`] writes them to any `Write` as
//! one archive part's gzip stream, for the benchmark and for tests.
//!
//! Guarantees (docs/design.md, invariants 2 and 3): an event whose identity
//! (its profile id, else its exact line) is already in `seen` is dropped and
//! counted; the rest keep their order and bytes, so the same chunks give the
//! same events and, at the same level, the same part bytes.

use std::collections::HashSet;
use std::io::{self, BufRead, Read, Write};
use std::ops::Range;

use flate2::bufread::MultiGzDecoder;

use shared::dedup::IdHash;
use shared::encode::LineGzEncoder;
use shared::profile::Profile;
use shared::provenance::{self, Provenance};

/// One event of a staged chunk, kept for the archive, borrowed from the
/// reader's buffer until the next event is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEvent<'a> {
    /// The staged line, without its newline: the event, then its
    /// provenance when the batcher staged one (see `shared::provenance`).
    pub line: &'a str,
    /// Where the event ends in `line`.
    pub event_end: usize,
    /// The event's time when its stream's profile reads it.
    pub time_millis: Option<i64>,
}

impl<'a> NewEvent<'a> {
    /// The event's JSON text, as the archive keeps it.
    pub fn event(&self) -> &'a str {
        &self.line[..self.event_end]
    }

    /// Where the event came from, when the batcher staged it: the fields
    /// after the event (the line is not scanned again).
    pub fn provenance(&self) -> Option<Provenance<'a>> {
        let fields = self.line.get(self.event_end + 1..)?;
        Provenance::parse_fields(fields)
    }
}

/// How much decompressed text one read asks for.
const READ_BYTES: usize = 64 * 1024;

/// The events of staged lines that are not in `seen` (each is added to
/// it), in order, read with [`NewEvents::next_event`], from `decoder`, the
/// decompressed text of one staged chunk or segment; an item is an error
/// when its bytes cannot be decoded or are not UTF-8. Blank lines are
/// skipped. Memory holds the caller's buffer: one read, or the longest line.
pub struct NewEvents<'a, D: Read> {
    decoder: D,
    buffer: &'a mut Vec<u8>,
    /// The next line starts here in `buffer`.
    start: usize,
    /// `buffer[start..scanned]` holds no newline.
    scanned: usize,
    /// `buffer[..end]` holds decompressed text.
    end: usize,
    done: bool,
    profile: Option<&'a Profile>,
    ids: IdHash,
    seen: &'a mut HashSet<u128>,
    duplicates: u64,
    /// Staged lines read so far (blank ones apart), skipped ones included.
    lines: u64,
    /// The first lines not to read for events (see [`NewEvents::skip_lines`]).
    skip: u64,
    /// Set when only some shards are read (see [`NewEvents::only_shards`]):
    /// the shard count and whether each shard is read.
    shards: Option<(u32, Vec<bool>)>,
}

/// Reads the staged chunk `chunk` (gzip NDJSON, buffered: a chunk in memory
/// is read in place) for its new events, their
/// identities hashed with `ids` (the hash `seen` was built with), through
/// `buffer` (kept by the caller so that one allocation serves every chunk
/// of a partition; its contents are overwritten).
pub fn new_events<'a, R: BufRead>(
    chunk: R,
    profile: Option<&'a Profile>,
    ids: IdHash,
    seen: &'a mut HashSet<u128>,
    buffer: &'a mut Vec<u8>,
) -> NewEvents<'a, MultiGzDecoder<R>> {
    new_events_from(MultiGzDecoder::new(chunk), profile, ids, seen, buffer)
}

/// The new events of the decompressed staged lines `decoder` reads (for a
/// segment of a staged object, `shared::staged::segment_reader` of its
/// bytes); otherwise as [`new_events`].
pub fn new_events_from<'a, D: Read>(
    decoder: D,
    profile: Option<&'a Profile>,
    ids: IdHash,
    seen: &'a mut HashSet<u128>,
    buffer: &'a mut Vec<u8>,
) -> NewEvents<'a, D> {
    NewEvents {
        decoder,
        buffer,
        start: 0,
        scanned: 0,
        end: 0,
        done: false,
        profile,
        ids,
        seen,
        duplicates: 0,
        lines: 0,
        skip: 0,
        shards: None,
    }
}

impl<'a, D: Read> NewEvents<'a, D> {
    /// Events dropped so far because they were already in `seen`.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Passes over the first `lines` staged lines (blank ones not counted)
    /// without reading them for events: a checkpoint's cursor
    /// (`shared::manifest::Cursor`) says they are archived already. Their
    /// identities are not added to `seen`: the id digest holds them.
    pub fn skip_lines(mut self, lines: u64) -> Self {
        self.skip = lines;
        self
    }

    /// Reads only the events of the shards (of `count`, by the top bits of
    /// their id keys, see `shared::manifest::shard_of_key`) that `read`
    /// marks; the others are passed over: not events, not duplicates, and
    /// not added to `seen` (another range of shards reads them).
    pub fn only_shards(mut self, count: u32, read: Vec<bool>) -> Self {
        self.shards = Some((count, read));
        self
    }

    /// Staged lines read so far, blank ones apart: the skipped ones, the
    /// events returned and the duplicates dropped. A cursor after the last
    /// event returned holds this many lines.
    pub fn lines_read(&self) -> u64 {
        self.lines
    }

    /// The next line's place in the buffer, without its newline (or
    /// `\r\n`), reading more of the chunk as needed.
    fn next_line(&mut self) -> Option<io::Result<Range<usize>>> {
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.buffer[self.scanned..self.end]) {
                let newline = self.scanned + at;
                let line = self.start..newline;
                self.start = newline + 1;
                self.scanned = self.start;
                return Some(Ok(trim_cr(&self.buffer[..], line)));
            }
            self.scanned = self.end;
            if self.done {
                if self.start == self.end {
                    return None;
                }
                let line = self.start..self.end;
                self.start = self.end;
                return Some(Ok(trim_cr(&self.buffer[..], line)));
            }
            // Keep the unfinished line, at the front, and read after it.
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned = self.end;
            self.start = 0;
            if self.buffer.len() < self.end + READ_BYTES {
                self.buffer.resize(self.end + READ_BYTES, 0);
            }
            match self.decoder.read(&mut self.buffer[self.end..]) {
                Ok(0) => self.done = true,
                Ok(read) => self.end += read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.done = true;
                    self.start = self.end;
                    return Some(Err(error));
                }
            }
        }
    }

    /// The next event not seen before, or `None` at the chunk's end.
    pub fn next_event(&mut self) -> Option<io::Result<NewEvent<'_>>> {
        let (line, event_end, time_millis) = loop {
            let line = match self.next_line()? {
                Ok(line) => line,
                Err(error) => return Some(Err(error)),
            };
            if line.is_empty() {
                continue;
            }
            self.lines += 1;
            if self.lines <= self.skip {
                continue;
            }
            let Ok(text) = std::str::from_utf8(&self.buffer[line.clone()]) else {
                return Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "stream did not contain valid UTF-8",
                )));
            };
            let event = provenance::split_staged_line(text).0;
            let fields = self
                .profile
                .and_then(|profile| profile.read_stored(event).ok());
            let key = match fields.as_ref().and_then(|f| f.id.as_deref()) {
                Some(id) => self.ids.id_key(id),
                None => self.ids.line_key(event),
            };
            if let Some((count, read)) = &self.shards
                && !read[shared::manifest::shard_of_key(key, *count) as usize]
            {
                continue;
            }
            if !self.seen.insert(key) {
                self.duplicates += 1;
                continue;
            }
            break (line, event.len(), fields.map(|f| f.time_millis));
        };
        // Checked above; the buffer has not changed since.
        let line = std::str::from_utf8(&self.buffer[line]).expect("valid UTF-8");
        Some(Ok(NewEvent {
            line,
            event_end,
            time_millis,
        }))
    }
}

fn trim_cr(buffer: &[u8], line: Range<usize>) -> Range<usize> {
    match buffer[line.clone()].last() {
        Some(b'\r') => line.start..line.end - 1,
        _ => line,
    }
}

/// What [`compact_chunks`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    pub events: u64,
    pub duplicates: u64,
    /// The part's NDJSON bytes before compression, newlines included.
    pub uncompressed_bytes: u64,
}

/// Compacts `chunks` in order into one gzip NDJSON stream at `level`
/// written to `part`, as the flusher writes an archive part (the same lines
/// at the same level give the same bytes), dropping events in `seen` (whose
/// identities are hashed with `ids`).
/// Memory holds one read of a chunk (or its longest line) and the
/// compressor, whatever the chunks' size.
pub fn compact_chunks<R: BufRead, W: Write>(
    chunks: impl IntoIterator<Item = R>,
    profile: Option<&Profile>,
    ids: IdHash,
    seen: &mut HashSet<u128>,
    level: u32,
    part: W,
) -> io::Result<(Compacted, W)> {
    compact_staged(
        chunks.into_iter().map(MultiGzDecoder::new),
        profile,
        ids,
        seen,
        level,
        part,
    )
}

/// [`compact_chunks`] from decompressed staged lines: each item reads one
/// staged chunk or segment (for segments, `shared::staged::segment_reader`).
pub fn compact_staged<D: Read, W: Write>(
    staged: impl IntoIterator<Item = D>,
    profile: Option<&Profile>,
    ids: IdHash,
    seen: &mut HashSet<u128>,
    level: u32,
    part: W,
) -> io::Result<(Compacted, W)> {
    let mut encoder = LineGzEncoder::new(part, level);
    let mut compacted = Compacted::default();
    let mut buffer = Vec::new();
    for decoder in staged {
        let mut events = new_events_from(decoder, profile, ids, seen, &mut buffer);
        while let Some(event) = events.next_event() {
            let event = event?;
            encoder.push_line(event.event().as_bytes())?;
            compacted.events += 1;
            compacted.uncompressed_bytes += event.event_end as u64 + 1;
        }
        compacted.duplicates += events.duplicates();
    }
    Ok((compacted, encoder.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::dedup;
    use shared::encode::NdjsonGzWriter;

    fn chunk(lines: &[&str]) -> Vec<u8> {
        let mut writer = NdjsonGzWriter::new(1);
        for line in lines {
            writer.push_line(line);
        }
        writer.finish()
    }

    fn gunzip(bytes: &[u8]) -> String {
        let mut text = String::new();
        MultiGzDecoder::new(bytes)
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    const A: &str = r#"{"ORGANIZATION_ID":"t","EVENT_ID":"1","EVENT_TIME":"2022-11-19 23:40:02","EVENT_TYPE":"user_login"}"#;
    const A_AGAIN: &str = r#"{"ORGANIZATION_ID":"t","EVENT_ID":"1","EVENT_TIME":"2022-11-19 23:40:03","EVENT_TYPE":"user_login"}"#;
    const B: &str = r#"{"ORGANIZATION_ID":"t","EVENT_ID":"2","EVENT_TIME":"2022-11-19 23:40:04","EVENT_TYPE":"user_login"}"#;

    #[test]
    fn duplicates_by_id_across_chunks_are_dropped_in_order() {
        let profile = Profile::airkit_audit_logs();
        let mut seen = HashSet::new();
        let chunks = [chunk(&[A, B]), chunk(&[A_AGAIN, B])];
        let (compacted, part) = compact_chunks(
            chunks.iter().map(|c| &c[..]),
            Some(&profile),
            IdHash::CURRENT,
            &mut seen,
            6,
            Vec::new(),
        )
        .unwrap();
        assert_eq!(gunzip(&part), format!("{A}\n{B}\n"));
        assert_eq!(compacted.events, 2);
        assert_eq!(compacted.duplicates, 2);
        assert_eq!(compacted.uncompressed_bytes, (A.len() + B.len() + 2) as u64);
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn skipped_lines_are_counted_and_not_read_for_events() {
        let profile = Profile::airkit_audit_logs();
        let c = r#"{"ORGANIZATION_ID":"t","EVENT_ID":"3","EVENT_TIME":"2022-11-19 23:40:05","EVENT_TYPE":"user_login"}"#;
        // As a checkpoint leaves it: A and its duplicate archived, their
        // ids in the digest.
        let staged = chunk(&[A, "", A_AGAIN, B, A, c]);
        let mut seen = HashSet::from([IdHash::CURRENT.id_key("1")]);
        let mut buffer = Vec::new();
        let mut events = new_events(
            &staged[..],
            Some(&profile),
            IdHash::CURRENT,
            &mut seen,
            &mut buffer,
        )
        .skip_lines(2);
        let mut read = Vec::new();
        while let Some(event) = events.next_event() {
            read.push(event.unwrap().event().to_owned());
        }
        // The blank line is not a line; A after the cursor is a duplicate.
        assert_eq!(read, [B, c]);
        assert_eq!((events.lines_read(), events.duplicates()), (5, 1));
    }

    #[test]
    fn segments_of_staged_objects_compact_like_chunks_of_the_same_lines() {
        use shared::partition::{Hour, TenantKey};
        use shared::staged::{self, StagedWriter};
        let profile = Profile::airkit_audit_logs();
        let object = |lines: &[&str]| {
            let mut writer = StagedWriter::new(1);
            writer.begin_segment("s", &TenantKey::encode("t"), 0, 1);
            for line in lines {
                writer.push_line_parts(&[line.as_bytes()]);
            }
            writer.finish(Hour::containing(0))
        };
        let objects = [object(&[A, B]), object(&[A_AGAIN, B])];
        let segments: Vec<&[u8]> = objects
            .iter()
            .map(|bytes| {
                let index = staged::read_index(bytes).unwrap();
                &bytes[..index.data_end() as usize]
            })
            .collect();
        let mut seen = HashSet::new();
        let (compacted, part) = compact_staged(
            segments
                .iter()
                .map(|segment| staged::segment_reader(segment).unwrap()),
            Some(&profile),
            IdHash::CURRENT,
            &mut seen,
            6,
            Vec::new(),
        )
        .unwrap();
        let chunks = [chunk(&[A, B]), chunk(&[A_AGAIN, B])];
        let (from_chunks, chunk_part) = compact_chunks(
            chunks.iter().map(|c| &c[..]),
            Some(&profile),
            IdHash::CURRENT,
            &mut HashSet::new(),
            6,
            Vec::new(),
        )
        .unwrap();
        assert_eq!(part, chunk_part, "the same lines give the same part");
        assert_eq!(compacted, from_chunks);
        assert_eq!(compacted.duplicates, 2);
    }

    #[test]
    fn events_already_seen_in_earlier_parts_are_dropped() {
        let mut seen = HashSet::from([dedup::line_key("{\"x\":1}")]);
        let staged = chunk(&["{\"x\":1}", "", "{\"x\":2}"]);
        let mut buffer = Vec::new();
        let mut events = new_events(&staged[..], None, IdHash::CURRENT, &mut seen, &mut buffer);
        assert_eq!(
            events.next_event().unwrap().unwrap(),
            NewEvent {
                line: "{\"x\":2}",
                event_end: 7,
                time_millis: None
            }
        );
        assert!(events.next_event().is_none());
        assert_eq!(events.duplicates(), 1);
    }

    #[test]
    fn provenance_is_cut_from_the_event_and_kept_beside_it() {
        let mut seen = HashSet::new();
        let staged = chunk(&[&format!("{A}\t1000\tm-1"), &format!("{A_AGAIN}\t2000\tm-2")]);
        let profile = Profile::airkit_audit_logs();
        let mut buffer = Vec::new();
        let mut events = new_events(
            &staged[..],
            Some(&profile),
            IdHash::CURRENT,
            &mut seen,
            &mut buffer,
        );
        let event = events.next_event().unwrap().unwrap();
        assert_eq!(event.event(), A);
        assert_eq!(
            event.provenance(),
            Some(Provenance::new(Some(1000), Some("m-1")))
        );
        // The same EVENT_ID: the second is a duplicate whatever its provenance.
        assert!(events.next_event().is_none());
        let (_, part) = compact_chunks(
            [&staged[..]],
            None,
            IdHash::CURRENT,
            &mut HashSet::new(),
            6,
            Vec::new(),
        )
        .unwrap();
        assert_eq!(gunzip(&part), format!("{A}\n{A_AGAIN}\n"));
    }

    #[test]
    fn event_times_are_read_through_the_profile() {
        let profile = Profile::airkit_audit_logs();
        let mut seen = HashSet::new();
        let staged = chunk(&[A]);
        let mut buffer = Vec::new();
        let mut events = new_events(
            &staged[..],
            Some(&profile),
            IdHash::CURRENT,
            &mut seen,
            &mut buffer,
        );
        let event = events.next_event().unwrap().unwrap();
        assert_eq!(event.time_millis, Some(1_668_901_202_000));
    }

    #[test]
    fn a_line_staged_with_a_repeated_routing_field_keeps_its_id_and_time() {
        // Staged before such events were refused: read as it was then.
        let legacy = r#"{"ORGANIZATION_ID":"t","EVENT_ID":"1","EVENT_ID":"9","EVENT_TIME":"2022-11-19 23:40:02","EVENT_TYPE":"user_login"}"#;
        let profile = Profile::airkit_audit_logs();
        let mut seen = HashSet::new();
        let staged = chunk(&[legacy, A]);
        let mut buffer = Vec::new();
        let mut events = new_events(
            &staged[..],
            Some(&profile),
            IdHash::CURRENT,
            &mut seen,
            &mut buffer,
        );
        let event = events.next_event().unwrap().unwrap();
        assert_eq!(event.time_millis, Some(1_668_901_202_000));
        // EVENT_ID 1, as when it was staged: A is its duplicate.
        assert!(events.next_event().is_none());
        assert_eq!(events.duplicates(), 1);
    }

    #[test]
    fn same_chunks_give_the_same_part_bytes() {
        let staged = chunk(&[A, B]);
        let part = || {
            compact_chunks(
                [&staged[..]],
                None,
                IdHash::CURRENT,
                &mut HashSet::new(),
                6,
                Vec::new(),
            )
            .unwrap()
            .1
        };
        assert_eq!(part(), part());
    }

    #[test]
    fn a_chunk_that_is_not_gzip_is_an_error() {
        let mut seen = HashSet::new();
        let error = compact_chunks(
            [&b"plain text"[..]],
            None,
            IdHash::CURRENT,
            &mut seen,
            6,
            Vec::new(),
        )
        .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
    }

    #[test]
    fn lines_longer_than_a_read_and_across_reads_are_whole() {
        let long = format!("{{\"x\":\"{}\"}}", "a".repeat(3 * READ_BYTES));
        let lines: Vec<String> = (0..2000)
            .map(|n| format!("{{\"n\":{n}}}"))
            .chain([long.clone(), "{\"last\":true}".to_owned()])
            .collect();
        let staged = chunk(&lines.iter().map(String::as_str).collect::<Vec<_>>());
        let mut seen = HashSet::new();
        let mut buffer = Vec::new();
        let mut events = new_events(&staged[..], None, IdHash::CURRENT, &mut seen, &mut buffer);
        let mut read = Vec::new();
        while let Some(event) = events.next_event() {
            read.push(event.unwrap().line.to_owned());
        }
        assert_eq!(read, lines);
    }

    #[test]
    fn a_last_line_without_newline_and_crlf_endings_are_read_as_lines() {
        let mut text = Vec::new();
        {
            let mut encoder = flate2::write::GzEncoder::new(&mut text, flate2::Compression::fast());
            encoder.write_all(b"{\"a\":1}\r\n{\"b\":2}").unwrap();
        }
        let mut seen = HashSet::new();
        let mut buffer = Vec::new();
        let mut events = new_events(&text[..], None, IdHash::CURRENT, &mut seen, &mut buffer);
        assert_eq!(events.next_event().unwrap().unwrap().line, "{\"a\":1}");
        assert_eq!(events.next_event().unwrap().unwrap().line, "{\"b\":2}");
        assert!(events.next_event().is_none());
    }

    #[test]
    fn a_chunk_that_is_not_utf8_is_an_error() {
        let mut text = Vec::new();
        {
            let mut encoder = flate2::write::GzEncoder::new(&mut text, flate2::Compression::fast());
            encoder.write_all(b"{\"a\":\"\xff\"}\n").unwrap();
        }
        let error = compact_chunks(
            [&text[..]],
            None,
            IdHash::CURRENT,
            &mut HashSet::new(),
            6,
            Vec::new(),
        )
        .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    }
}
