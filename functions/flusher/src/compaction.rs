//! Compaction, the pure part of a flush: staged chunks (gzip NDJSON) in,
//! the events not seen before out, in order. The flusher feeds these events
//! to its S3 part writer; [`compact_chunks`] writes them to any `Write` as
//! one archive part's gzip stream, for the benchmark and for tests.
//!
//! Guarantees (DESIGN.md, invariants 2 and 3): an event whose identity
//! (its profile id, else its exact line) is already in `seen` is dropped and
//! counted; the rest keep their order and bytes, so the same chunks give the
//! same events and, at the same level, the same part bytes.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read, Write};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use shared::dedup;
use shared::profile::Profile;
use shared::provenance::{self, Provenance};

/// One event of a staged chunk, kept for the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The staged line, without its newline: the event, then its
    /// provenance when the batcher staged one (see `shared::provenance`).
    pub line: String,
    /// Where the event ends in `line`.
    pub event_end: usize,
    /// The event's time when its stream's profile reads it.
    pub time_millis: Option<i64>,
}

impl NewEvent {
    /// The event's JSON text, as the archive keeps it.
    pub fn event(&self) -> &str {
        &self.line[..self.event_end]
    }

    /// Where the event came from, when the batcher staged it: the fields
    /// after the event (the line is not scanned again).
    pub fn provenance(&self) -> Option<Provenance<'_>> {
        let fields = self.line.get(self.event_end + 1..)?;
        Provenance::parse_fields(fields)
    }
}

/// The events of one staged chunk that are not in `seen` (each is added to
/// it), in order; an item is an error when the chunk is not valid gzip or
/// UTF-8. Blank lines are skipped.
pub struct NewEvents<'a, R: Read> {
    lines: io::Lines<BufReader<MultiGzDecoder<R>>>,
    profile: Option<&'a Profile>,
    seen: &'a mut HashSet<u128>,
    duplicates: u64,
}

/// Reads the staged chunk `chunk` (gzip NDJSON) for its new events.
pub fn new_events<'a, R: Read>(
    chunk: R,
    profile: Option<&'a Profile>,
    seen: &'a mut HashSet<u128>,
) -> NewEvents<'a, R> {
    NewEvents {
        lines: BufReader::new(MultiGzDecoder::new(chunk)).lines(),
        profile,
        seen,
        duplicates: 0,
    }
}

impl<R: Read> NewEvents<'_, R> {
    /// Events dropped so far because they were already in `seen`.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

impl<R: Read> Iterator for NewEvents<'_, R> {
    type Item = io::Result<NewEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.lines.next()? {
                Ok(line) => line,
                Err(error) => return Some(Err(error)),
            };
            if line.is_empty() {
                continue;
            }
            let event = provenance::split_staged_line(&line).0;
            let fields = self.profile.and_then(|profile| profile.read(event).ok());
            let key = match fields.as_ref().and_then(|f| f.id.as_deref()) {
                Some(id) => dedup::id_key(id),
                None => dedup::line_key(event),
            };
            if !self.seen.insert(key) {
                self.duplicates += 1;
                continue;
            }
            let time_millis = fields.map(|f| f.time_millis);
            let event_end = event.len();
            return Some(Ok(NewEvent {
                line,
                event_end,
                time_millis,
            }));
        }
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
/// at the same level give the same bytes), dropping events in `seen`.
/// Memory holds one line and the compressor, whatever the chunks' size.
pub fn compact_chunks<R: Read, W: Write>(
    chunks: impl IntoIterator<Item = R>,
    profile: Option<&Profile>,
    seen: &mut HashSet<u128>,
    level: u32,
    part: W,
) -> io::Result<(Compacted, W)> {
    let mut encoder = GzEncoder::new(part, Compression::new(level));
    let mut compacted = Compacted::default();
    for chunk in chunks {
        let mut events = new_events(chunk, profile, seen);
        for event in &mut events {
            let event = event?;
            encoder.write_all(event.event().as_bytes())?;
            encoder.write_all(b"\n")?;
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
    fn events_already_seen_in_earlier_parts_are_dropped() {
        let mut seen = HashSet::from([dedup::line_key("{\"x\":1}")]);
        let staged = chunk(&["{\"x\":1}", "", "{\"x\":2}"]);
        let events: Vec<NewEvent> = new_events(&staged[..], None, &mut seen)
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(
            events,
            vec![NewEvent {
                line: "{\"x\":2}".into(),
                event_end: 7,
                time_millis: None
            }]
        );
    }

    #[test]
    fn provenance_is_cut_from_the_event_and_kept_beside_it() {
        let mut seen = HashSet::new();
        let staged = chunk(&[&format!("{A}\t1000\tm-1"), &format!("{A_AGAIN}\t2000\tm-2")]);
        let profile = Profile::airkit_audit_logs();
        let events: Vec<NewEvent> = new_events(&staged[..], Some(&profile), &mut seen)
            .collect::<io::Result<_>>()
            .unwrap();
        // The same EVENT_ID: the second is a duplicate whatever its provenance.
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event(), A);
        assert_eq!(
            events[0].provenance(),
            Some(Provenance::new(Some(1000), Some("m-1")))
        );
        let (_, part) =
            compact_chunks([&staged[..]], None, &mut HashSet::new(), 6, Vec::new()).unwrap();
        assert_eq!(gunzip(&part), format!("{A}\n{A_AGAIN}\n"));
    }

    #[test]
    fn event_times_are_read_through_the_profile() {
        let profile = Profile::airkit_audit_logs();
        let mut seen = HashSet::new();
        let staged = chunk(&[A]);
        let event = new_events(&staged[..], Some(&profile), &mut seen)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(event.time_millis, Some(1_668_901_202_000));
    }

    #[test]
    fn same_chunks_give_the_same_part_bytes() {
        let staged = chunk(&[A, B]);
        let part = || {
            compact_chunks([&staged[..]], None, &mut HashSet::new(), 6, Vec::new())
                .unwrap()
                .1
        };
        assert_eq!(part(), part());
    }

    #[test]
    fn a_chunk_that_is_not_gzip_is_an_error() {
        let mut seen = HashSet::new();
        let error =
            compact_chunks([&b"plain text"[..]], None, &mut seen, 6, Vec::new()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
    }
}
