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
        self.push_line_parts(&[line])
    }

    /// Appends one line made of `parts` in order, and a newline: the same
    /// bytes as [`LineGzEncoder::push_line`] of the parts joined, without
    /// joining them first. No part may contain a newline.
    pub fn push_line_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        debug_assert!(parts.iter().all(|part| !part.contains(&b'\n')));
        let length: usize = parts.iter().map(|part| part.len()).sum();
        if self.block.len() + length + 1 > LINE_BLOCK_BYTES {
            self.compress_block()?;
        }
        for part in parts {
            self.block.extend_from_slice(part);
        }
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

/// Builds one gzip NDJSON file in memory (an `errors/` file, a test's
/// staged chunk). The compressor is started at the first line, so a writer
/// that never gets one costs nothing.
pub struct NdjsonGzWriter {
    level: u32,
    encoder: Option<LineGzEncoder<Vec<u8>>>,
    lines: usize,
    uncompressed_bytes: usize,
}

impl NdjsonGzWriter {
    /// A writer at a zlib level from 0 (none) to 9 (smallest).
    pub fn new(level: u32) -> Self {
        Self {
            level,
            encoder: None,
            lines: 0,
            uncompressed_bytes: 0,
        }
    }

    /// Appends one line; `line` must not contain a newline.
    pub fn push_line(&mut self, line: &str) {
        self.push_line_parts(&[line.as_bytes()]);
    }

    /// Appends one line made of `parts` in order (for example an event, a
    /// tab and its provenance): the same bytes as [`NdjsonGzWriter::push_line`]
    /// of the parts joined, without a copy to join them. No part may
    /// contain a newline.
    pub fn push_line_parts(&mut self, parts: &[&[u8]]) {
        let length: usize = parts.iter().map(|part| part.len()).sum();
        self.lines += 1;
        self.uncompressed_bytes += length + 1;
        let level = self.level;
        let encoder = self
            .encoder
            .get_or_insert_with(|| LineGzEncoder::new(Vec::new(), level));
        // Writing into a Vec cannot fail.
        encoder.push_line_parts(parts).expect("writing to memory");
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
        match self.encoder {
            Some(encoder) => encoder.finish().expect("writing to memory"),
            None => LineGzEncoder::new(Vec::new(), self.level)
                .finish()
                .expect("writing to memory"),
        }
    }
}

/// `data` as a gzip member whose deflate stream is stored blocks (RFC 1951
/// section 3.2.4, RFC 1952): every gzip reader reads it, no compressor is
/// started, and the same data always gives the same bytes (no time, no name).
pub fn stored_gzip(data: &[u8]) -> Vec<u8> {
    const MAX_STORED_BLOCK: usize = 65_535;
    let blocks = data.len().div_ceil(MAX_STORED_BLOCK).max(1);
    let mut out = Vec::with_capacity(10 + blocks * 5 + data.len() + 8);
    // Magic, deflate, no flags, no time, no extra flags, unknown OS (as flate2 writes it).
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    let mut chunks = data.chunks(MAX_STORED_BLOCK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = block.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
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

    #[test]
    fn a_line_pushed_in_parts_gives_the_bytes_of_the_joined_line() {
        let event = "x".repeat(700);
        let build = |in_parts: bool| {
            let mut writer = NdjsonGzWriter::new(1);
            for n in 0..300 {
                let provenance = format!("{n}\tm-{n}");
                if in_parts {
                    writer.push_line_parts(&[event.as_bytes(), b"\t", provenance.as_bytes()]);
                } else {
                    writer.push_line(&format!("{event}\t{provenance}"));
                }
            }
            (writer.lines(), writer.uncompressed_bytes(), writer.finish())
        };
        assert_eq!(build(true), build(false));
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn stored_gzip_is_read_by_a_gzip_reader_at_every_size() {
        for size in [0, 1, 600, 65_535, 65_536, 200_000] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let bytes = stored_gzip(&data);
            assert_eq!(gunzip(&bytes), data, "{size} bytes");
            assert_eq!(bytes, stored_gzip(&data));
        }
    }

    #[test]
    fn a_writer_without_lines_gives_an_empty_gzip_file() {
        let writer = NdjsonGzWriter::new(6);
        assert_eq!((writer.lines(), writer.uncompressed_bytes()), (0, 0));
        assert_eq!(gunzip(&writer.finish()), b"");
    }
}
