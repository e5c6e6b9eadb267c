//! Encoding: events as gzip NDJSON, one event a line, each line ending in
//! `\n`. The gzip header carries no time or name, and lines reach the
//! compressor in blocks cut at fixed sizes, so the same lines at the same
//! level give the same bytes.

use std::io::{self, Write};

use flate2::Compression;
use flate2::write::GzEncoder;

/// How many bytes of lines [`LineGzEncoder`] gathers before it hands them
/// to the compressor: one call per block instead of two a line, which
/// costs the compressor far less on lines of a few hundred bytes.
pub const LINE_BLOCK_BYTES: usize = 64 * 1024;

/// A gzip stream of lines written to `W`, the lines gathered in blocks of
/// [`LINE_BLOCK_BYTES`] before compression. The compressed bytes depend
/// only on the lines and the level, never on how they were pushed.
pub struct LineGzEncoder<W: Write> {
    encoder: GzEncoder<W>,
    block: Vec<u8>,
}

impl<W: Write> LineGzEncoder<W> {
    /// A stream at a zlib level from 0 (none) to 9 (smallest) into `out`.
    pub fn new(out: W, level: u32) -> Self {
        Self {
            encoder: GzEncoder::new(out, Compression::new(level.min(9))),
            block: Vec::with_capacity(LINE_BLOCK_BYTES),
        }
    }

    /// Appends `line` and a newline; `line` must not contain a newline.
    pub fn push_line(&mut self, line: &[u8]) -> io::Result<()> {
        debug_assert!(!line.contains(&b'\n'));
        if self.block.len() + line.len() + 1 > LINE_BLOCK_BYTES {
            self.compress_block()?;
        }
        self.block.extend_from_slice(line);
        self.block.push(b'\n');
        Ok(())
    }

    fn compress_block(&mut self) -> io::Result<()> {
        if !self.block.is_empty() {
            self.encoder.write_all(&self.block)?;
            self.block.clear();
        }
        Ok(())
    }

    /// The compressed bytes' destination. Lines still gathered in the
    /// current block have not reached it yet.
    pub fn get_ref(&self) -> &W {
        self.encoder.get_ref()
    }

    /// The destination, to take the compressed bytes written so far.
    pub fn get_mut(&mut self) -> &mut W {
        self.encoder.get_mut()
    }

    /// Compresses the last block, ends the gzip stream and returns the
    /// destination.
    pub fn finish(mut self) -> io::Result<W> {
        self.compress_block()?;
        self.encoder.finish()
    }
}

/// Builds one gzip NDJSON file in memory.
pub struct NdjsonGzWriter {
    encoder: LineGzEncoder<Vec<u8>>,
    lines: usize,
    uncompressed_bytes: usize,
}

impl NdjsonGzWriter {
    /// A writer at a zlib level from 0 (none) to 9 (smallest).
    pub fn new(level: u32) -> Self {
        Self {
            encoder: LineGzEncoder::new(Vec::new(), level),
            lines: 0,
            uncompressed_bytes: 0,
        }
    }

    /// Appends one line; `line` must not contain a newline.
    pub fn push_line(&mut self, line: &str) {
        // Writing into a Vec cannot fail.
        self.encoder
            .push_line(line.as_bytes())
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

    #[test]
    fn lines_over_many_blocks_round_trip_with_the_same_bytes() {
        let line = "x".repeat(1000);
        let encode = |lines: usize| {
            let mut encoder = LineGzEncoder::new(Vec::new(), 6);
            for _ in 0..lines {
                encoder.push_line(line.as_bytes()).unwrap();
            }
            encoder.finish().unwrap()
        };
        let bytes = encode(200);
        assert_eq!(bytes, encode(200));
        let mut text = String::new();
        GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text.len(), 200 * 1001);
        assert!(text.lines().all(|l| l == line));
    }
}
