//! Compressed message bodies: a producer may send base64 of gzip (or zstd)
//! NDJSON and mark it with the message attribute `content-encoding`, so one
//! SQS request (billed per 64 KiB) carries several times more events.
//!
//! Guarantees: a body is decoded only up to a configured size, so a
//! decompression bomb costs at most that much memory and is refused with
//! its reason; a zstd frame may not make the decoder allocate a window
//! larger than [`zstd_window_log_max`] allows; every refusal names what was
//! wrong (the attribute's value, the base64, the compressed stream, the
//! window, the UTF-8) and affects only its own message.

use std::borrow::Cow;
use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::read::MultiGzDecoder;

use crate::rejection::{RejectReason, Rejection};

/// The message attribute (String) that says how the body is encoded.
/// Its name is matched without regard to case.
pub const CONTENT_ENCODING_ATTRIBUTE: &str = "content-encoding";

/// How a message body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    /// The body is the payload itself (no attribute, or `identity`).
    Identity,
    /// The body is base64 of a gzip stream (concatenated members allowed).
    Gzip,
    /// The body is base64 of a zstd frame.
    Zstd,
}

impl ContentEncoding {
    /// The encoding an attribute value names (`gzip`, `zstd`, `identity`;
    /// any case, surrounding spaces ignored), or a `bad_encoding` refusal.
    pub fn parse(value: &str) -> Result<Self, Rejection> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(Self::Identity),
            "gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            _ => Err(Rejection::new(
                RejectReason::BadEncoding,
                format!(
                    "message attribute `{CONTENT_ENCODING_ATTRIBUTE}` is `{value}`; accepted: gzip, zstd, identity"
                ),
            )),
        }
    }

    /// The attribute value that names this encoding.
    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

/// The smallest cap on a zstd frame's window, as a power of two: 8 MiB, the
/// largest window zstd's levels 1 to 19 choose when the content size is not
/// stated, so any producer that does not ask for long-distance matching or
/// the `--ultra` levels is accepted.
const ZSTD_WINDOW_LOG_FLOOR: u32 = 23;

/// zstd's own largest window (64-bit builds).
const ZSTD_WINDOW_LOG_CEILING: u32 = 31;

/// The largest window (as a power of two) a zstd body decoded to at most
/// `max_bytes` may ask for: [`ZSTD_WINDOW_LOG_FLOOR`], or enough to hold
/// `max_bytes` when that is more (a frame that states its content size has
/// a window of that size). The decoder allocates the window before it
/// writes a byte, so without a cap a few bytes declaring a 2 GiB window
/// would cost 2 GiB whatever the decompressed limit.
pub fn zstd_window_log_max(max_bytes: usize) -> u32 {
    let holds_max_bytes = usize::BITS - max_bytes.saturating_sub(1).leading_zeros();
    holds_max_bytes.clamp(ZSTD_WINDOW_LOG_FLOOR, ZSTD_WINDOW_LOG_CEILING)
}

/// The payload of a body sent with encoding `encoding` (an attribute value,
/// `None` when the message has none), decoded to at most `max_bytes`, a
/// zstd frame with a window of at most 2^[`zstd_window_log_max`] bytes.
/// An identity body is borrowed unchanged.
pub fn decode_body<'a>(
    encoding: Option<&str>,
    body: &'a str,
    max_bytes: usize,
) -> Result<Cow<'a, str>, Rejection> {
    let mut buffer = Vec::new();
    Ok(
        match decode_body_into(encoding, body, max_bytes, &mut buffer)? {
            Decoded::Identity(body) => Cow::Borrowed(body),
            Decoded::InBuffer => {
                Cow::Owned(String::from_utf8(buffer).expect("decode_body_into checked it is UTF-8"))
            }
        },
    )
}

/// Where [`decode_body_into`] left a body's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// The body itself (no content encoding).
    Identity(&'a str),
    /// In the caller's buffer, checked to be UTF-8.
    InBuffer,
}

/// [`decode_body`] into `buffer`, which is cleared first and keeps its
/// capacity: a caller decoding message after message (the batcher) reuses
/// one buffer, sized by the largest body, instead of allocating and freeing
/// one a message, which fragments the heap (a process's memory grows well
/// past what it holds). An identity body is borrowed and `buffer` left
/// empty; a decoded one is left in `buffer`, checked to be UTF-8.
pub fn decode_body_into<'a>(
    encoding: Option<&str>,
    body: &'a str,
    max_bytes: usize,
    buffer: &mut Vec<u8>,
) -> Result<Decoded<'a>, Rejection> {
    buffer.clear();
    let encoding = match encoding {
        None => ContentEncoding::Identity,
        Some(value) => ContentEncoding::parse(value)?,
    };
    if encoding == ContentEncoding::Identity {
        return Ok(Decoded::Identity(body));
    }
    let bad = |detail: String| Rejection::new(RejectReason::BadEncoding, detail);
    // Producers may wrap base64 at 76 columns (MIME style).
    let compact: Cow<'_, str> = if body.contains(char::is_whitespace) {
        Cow::Owned(body.split_whitespace().collect())
    } else {
        Cow::Borrowed(body)
    };
    let compressed = STANDARD
        .decode(compact.as_bytes())
        .map_err(|error| bad(format!("the body is not base64 ({error})")))?;
    let name = encoding.name();
    let window_log_max = zstd_window_log_max(max_bytes);
    let reserve = decoded_size_hint(encoding, &compressed).min(max_bytes);
    let within_limit = match encoding {
        ContentEncoding::Gzip => read_limited(
            MultiGzDecoder::new(&compressed[..]),
            max_bytes,
            reserve,
            buffer,
        ),
        ContentEncoding::Zstd => {
            zstd::stream::read::Decoder::new(&compressed[..]).and_then(|mut decoder| {
                decoder.window_log_max(window_log_max)?;
                read_limited(decoder, max_bytes, reserve, buffer)
            })
        }
        ContentEncoding::Identity => unreachable!("returned above"),
    }
    .map_err(|error| {
        // zstd's words for a frame whose window is over the cap
        // (ZSTD_error_frameParameter_windowTooLarge).
        if encoding == ContentEncoding::Zstd && error.to_string().contains("too much memory") {
            Rejection::new(
                RejectReason::TooLarge,
                format!(
                    "the zstd body's frame asks for a window of more than {} bytes \
                     (window log over {window_log_max}), more than the batcher allocates \
                     for one message; compress at level 19 or below without \
                     long-distance matching, or state the content size ({error})",
                    1u64 << window_log_max
                ),
            )
        } else {
            bad(format!("the body is not valid {name} data ({error})"))
        }
    })?;
    if !within_limit {
        return Err(Rejection::new(
            RejectReason::TooLarge,
            format!(
                "the {name} body decompresses to more than {max_bytes} bytes \
                 (MAX_DECOMPRESSED_BODY_BYTES); refused as a possible decompression bomb"
            ),
        ));
    };
    std::str::from_utf8(buffer)
        .map(|_| Decoded::InBuffer)
        .map_err(|error| {
            bad(format!(
                "the decompressed {name} body is not UTF-8 ({error})"
            ))
        })
}

/// The decoded size a compressed body states, 0 when it states none: a
/// zstd frame's content size, a gzip member's trailing size (modulo 4 GiB;
/// of the last member only). Only a hint for the buffer: a wrong one costs
/// a reallocation, never a byte, and the caller caps it at the limit.
fn decoded_size_hint(encoding: ContentEncoding, compressed: &[u8]) -> usize {
    match encoding {
        ContentEncoding::Zstd => zstd::zstd_safe::get_frame_content_size(compressed)
            .ok()
            .flatten()
            .map_or(0, |size| usize::try_from(size).unwrap_or(usize::MAX)),
        ContentEncoding::Gzip if compressed.len() >= 18 => {
            let trailer: [u8; 4] = compressed[compressed.len() - 4..]
                .try_into()
                .expect("four bytes");
            u32::from_le_bytes(trailer) as usize
        }
        _ => 0,
    }
}

/// All of `reader`, or `None` when it holds more than `max_bytes`. The
/// buffer starts at `reserve` bytes: when that is the decoded size, it is
/// allocated once, not grown by doubling to up to twice the body.
fn read_limited(
    reader: impl Read,
    max_bytes: usize,
    reserve: usize,
    buffer: &mut Vec<u8>,
) -> std::io::Result<bool> {
    buffer.reserve(reserve);
    reader
        .take((max_bytes as u64).saturating_add(1))
        .read_to_end(buffer)?;
    Ok(buffer.len() <= max_bytes)
}

/// The body of a message encoded for sending: base64 of `payload`
/// compressed with `encoding` at `level` (identity: `payload` as is).
pub fn encode_body(encoding: ContentEncoding, payload: &[u8], level: i32) -> String {
    use std::io::Write;
    match encoding {
        ContentEncoding::Identity => String::from_utf8_lossy(payload).into_owned(),
        ContentEncoding::Gzip => {
            let level = flate2::Compression::new(level.clamp(0, 9) as u32);
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
            encoder.write_all(payload).expect("writing to memory");
            STANDARD.encode(encoder.finish().expect("writing to memory"))
        }
        // One frame that states its content size, so its window is no larger
        // than the payload and any level is within the batcher's window cap
        // (see `zstd_window_log_max`).
        ContentEncoding::Zstd => {
            STANDARD.encode(zstd::bulk::compress(payload, level).expect("compressing in memory"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NDJSON: &str = "{\"a\":1}\n{\"b\":\"é\"}\n";

    #[test]
    fn no_attribute_borrows_the_body_unchanged() {
        assert!(matches!(
            decode_body(None, NDJSON, 10),
            Ok(Cow::Borrowed(NDJSON))
        ));
    }

    #[test]
    fn gzip_and_zstd_bodies_round_trip() {
        for encoding in [ContentEncoding::Gzip, ContentEncoding::Zstd] {
            let body = encode_body(encoding, NDJSON.as_bytes(), 6);
            let decoded = decode_body(Some(encoding.name()), &body, 1024).unwrap();
            assert_eq!(decoded, NDJSON, "{encoding:?}");
        }
    }

    #[test]
    fn attribute_value_is_read_without_regard_to_case() {
        assert_eq!(
            ContentEncoding::parse(" GZip ").unwrap(),
            ContentEncoding::Gzip
        );
        assert_eq!(
            ContentEncoding::parse("identity").unwrap(),
            ContentEncoding::Identity
        );
    }

    #[test]
    fn base64_wrapped_over_lines_is_accepted() {
        let body = encode_body(ContentEncoding::Gzip, NDJSON.as_bytes(), 6);
        let wrapped = format!("{}\n{}", &body[..10], &body[10..]);
        assert_eq!(decode_body(Some("gzip"), &wrapped, 1024).unwrap(), NDJSON);
    }

    #[test]
    fn unknown_encoding_is_refused_naming_it() {
        let rejection = decode_body(Some("br"), "abc", 1024).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::BadEncoding);
        assert!(rejection.detail.contains("`br`"), "{}", rejection.detail);
    }

    #[test]
    fn bad_base64_is_refused() {
        let rejection = decode_body(Some("gzip"), "not base64!", 1024).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::BadEncoding);
        assert!(
            rejection.detail.contains("not base64"),
            "{}",
            rejection.detail
        );
    }

    #[test]
    fn base64_of_something_else_is_refused_as_not_gzip() {
        let body = STANDARD.encode(NDJSON);
        let rejection = decode_body(Some("gzip"), &body, 1024).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::BadEncoding);
        assert!(
            rejection.detail.contains("not valid gzip"),
            "{}",
            rejection.detail
        );
        let rejection = decode_body(Some("zstd"), &body, 1024).unwrap_err();
        assert!(
            rejection.detail.contains("not valid zstd"),
            "{}",
            rejection.detail
        );
    }

    #[test]
    fn truncated_gzip_is_refused() {
        let full = STANDARD
            .decode(encode_body(ContentEncoding::Gzip, NDJSON.as_bytes(), 6))
            .unwrap();
        let body = STANDARD.encode(&full[..full.len() - 6]);
        let rejection = decode_body(Some("gzip"), &body, 1024).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::BadEncoding);
    }

    #[test]
    fn decompression_bomb_is_refused_at_the_limit() {
        let zeros = vec![b'0'; 10 * 1024 * 1024];
        for encoding in [ContentEncoding::Gzip, ContentEncoding::Zstd] {
            let body = encode_body(encoding, &zeros, 9);
            assert!(body.len() < 40 * 1024, "{} bytes", body.len());
            let rejection = decode_body(Some(encoding.name()), &body, 1024 * 1024).unwrap_err();
            assert_eq!(rejection.reason, RejectReason::TooLarge);
            assert!(rejection.detail.contains("1048576"), "{}", rejection.detail);
        }
        let exact = encode_body(ContentEncoding::Gzip, &zeros[..1024], 9);
        assert_eq!(decode_body(Some("gzip"), &exact, 1024).unwrap().len(), 1024);
        // The largest limit a setting can give means no limit, not an overflow.
        assert_eq!(
            decode_body(Some("gzip"), &exact, usize::MAX).unwrap().len(),
            1024
        );
    }

    #[test]
    fn a_body_that_states_its_size_is_decoded_into_one_allocation_of_that_size() {
        let payload = "{\"n\":12345}\n".repeat(100_003);
        for encoding in [ContentEncoding::Gzip, ContentEncoding::Zstd] {
            let body = encode_body(encoding, payload.as_bytes(), 3);
            let Cow::Owned(decoded) = decode_body(Some(encoding.name()), &body, 4 << 20).unwrap()
            else {
                panic!("a decoded body is owned");
            };
            assert_eq!(decoded, payload, "{encoding:?}");
            assert_eq!(decoded.capacity(), payload.len(), "{encoding:?}");
        }
        // A size stated over the limit reserves no more than the limit.
        let body = encode_body(ContentEncoding::Zstd, payload.as_bytes(), 3);
        let rejection = decode_body(Some("zstd"), &body, 1 << 20).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::TooLarge);
    }

    /// A zstd frame of `payload` whose header asks for a 2^`window_log`
    /// window (long-distance matching, content size not stated).
    fn zstd_frame_with_window(payload: &[u8], window_log: u32) -> String {
        use std::io::Write;
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.long_distance_matching(true).unwrap();
        encoder.window_log(window_log).unwrap();
        encoder.write_all(payload).unwrap();
        STANDARD.encode(encoder.finish().unwrap())
    }

    #[test]
    fn zstd_window_cap_follows_the_limit_above_eight_mebibytes() {
        assert_eq!(zstd_window_log_max(1024), 23);
        assert_eq!(zstd_window_log_max(8 * 1024 * 1024), 23);
        assert_eq!(zstd_window_log_max(8 * 1024 * 1024 + 1), 24);
        assert_eq!(zstd_window_log_max(16 * 1024 * 1024), 24);
        assert_eq!(zstd_window_log_max(256 * 1024 * 1024), 28);
        assert_eq!(zstd_window_log_max(usize::MAX), 31);
    }

    #[test]
    fn zstd_frame_with_a_window_over_the_cap_is_refused_naming_it() {
        let limit = 16 * 1024 * 1024;
        let body = zstd_frame_with_window(NDJSON.as_bytes(), 27);
        let rejection = decode_body(Some("zstd"), &body, limit).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::TooLarge);
        assert!(rejection.detail.contains("window"), "{}", rejection.detail);
        assert!(
            rejection.detail.contains(&(1u64 << 24).to_string()),
            "{}",
            rejection.detail
        );
        // The same payload at the largest window the cap allows is decoded.
        let body = zstd_frame_with_window(NDJSON.as_bytes(), 24);
        assert_eq!(decode_body(Some("zstd"), &body, limit).unwrap(), NDJSON);
        // So is a frame that states its content size, up to the limit.
        let payload = "{\"n\":1}\n".repeat(limit / 8);
        let body = encode_body(ContentEncoding::Zstd, payload.as_bytes(), 3);
        assert_eq!(
            decode_body(Some("zstd"), &body, limit).unwrap().len(),
            payload.len()
        );
    }

    #[test]
    fn decompressed_bytes_that_are_not_utf8_are_refused() {
        let body = encode_body(ContentEncoding::Gzip, &[0xff, 0xfe, b'{'], 6);
        let rejection = decode_body(Some("gzip"), &body, 1024).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::BadEncoding);
        assert!(rejection.detail.contains("UTF-8"), "{}", rejection.detail);
    }
}
