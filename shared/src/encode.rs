//! Encoding: events as gzip NDJSON, one event a line, each line ending in
//! `\n`. The gzip header carries no time or name, so the same lines at the
//! same level give the same bytes.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

/// Builds one gzip NDJSON file in memory.
pub struct NdjsonGzWriter {
    encoder: GzEncoder<Vec<u8>>,
    lines: usize,
    uncompressed_bytes: usize,
}

impl NdjsonGzWriter {
    /// A writer at a zlib level from 0 (none) to 9 (smallest).
    pub fn new(level: u32) -> Self {
        Self {
            encoder: GzEncoder::new(Vec::new(), Compression::new(level.min(9))),
            lines: 0,
            uncompressed_bytes: 0,
        }
    }

    /// Appends one line; `line` must not contain a newline.
    pub fn push_line(&mut self, line: &str) {
        debug_assert!(!line.contains('\n'));
        // Writing into a Vec cannot fail.
        self.encoder
            .write_all(line.as_bytes())
            .and_then(|()| self.encoder.write_all(b"\n"))
            .expect("writing to memory");
        self.lines += 1;
        self.uncompressed_bytes += line.len() + 1;
    }

    /// Lines written so far.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Uncompressed bytes written so far, newlines included.
    pub fn uncompressed_bytes(&self) -> usize {
        self.uncompressed_bytes
    }

    /// Finishes the gzip stream and returns its bytes.
    pub fn finish(self) -> Vec<u8> {
        self.encoder.finish().expect("writing to memory")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    #[test]
    fn lines_round_trip_with_a_final_newline() {
        let mut writer = NdjsonGzWriter::new(1);
        writer.push_line(r#"{"a":1}"#);
        writer.push_line(r#"{"b":"é"}"#);
        assert_eq!(writer.lines(), 2);
        let bytes = writer.finish();
        let mut text = String::new();
        GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\":\"é\"}\n");
    }

    #[test]
    fn same_lines_give_same_bytes() {
        let build = || {
            let mut writer = NdjsonGzWriter::new(6);
            writer.push_line(r#"{"a":1}"#);
            writer.finish()
        };
        assert_eq!(build(), build());
    }
}
