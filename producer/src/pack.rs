//! Packing events into SQS messages: NDJSON, optionally compressed and
//! base64-encoded, each message at most a byte limit as SQS counts it (the
//! body plus its message attributes' names, types and values).
//!
//! Guarantees: every event is in exactly one message, in order, with its
//! bytes unchanged once the batcher decodes the body; no message is over
//! the limit; an event that cannot fit alone is an error naming it.

use shared::content_encoding::{CONTENT_ENCODING_ATTRIBUTE, ContentEncoding, encode_body};

/// SQS's largest message (body and attributes), and a batch's total.
pub const SQS_MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Most entries in one `SendMessageBatch`.
pub const SQS_MAX_BATCH_ENTRIES: usize = 10;
/// The message attribute naming an event's stream (the batcher's).
pub const STREAM_ATTRIBUTE: &str = "stream";

/// How to pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackOptions {
    /// Body encoding: gzip (the default), zstd, or identity (plain NDJSON).
    pub encoding: ContentEncoding,
    /// Compression level (gzip 0-9, zstd 1-22).
    pub level: i32,
    /// Most bytes per message, attributes included (SQS: 256 KiB).
    pub max_message_bytes: usize,
    /// The `stream` attribute every message carries, when set.
    pub stream: Option<String>,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            encoding: ContentEncoding::Gzip,
            level: 6,
            max_message_bytes: SQS_MAX_MESSAGE_BYTES,
            stream: None,
        }
    }
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub body: String,
    /// String message attributes (name, value).
    pub attributes: Vec<(String, String)>,
    /// Events the body holds.
    pub events: usize,
}

impl Message {
    /// The message's size as SQS counts it against its limits.
    pub fn size(&self) -> usize {
        self.body.len() + attributes_size(&self.attributes)
    }
}

fn attributes_size(attributes: &[(String, String)]) -> usize {
    attributes
        .iter()
        .map(|(name, value)| name.len() + "String".len() + value.len())
        .sum()
}

/// Why events could not be packed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    #[error("event {index} is {bytes} bytes encoded, over the {limit}-byte message limit")]
    EventTooLarge {
        index: usize,
        bytes: usize,
        limit: usize,
    },
    #[error("event {index} spans several lines: NDJSON needs one event a line")]
    Multiline { index: usize },
    #[error("the message limit of {limit} bytes leaves no room after the attributes")]
    LimitTooSmall { limit: usize },
}

/// Packs `events` (each one line of JSON) into messages.
pub fn pack<S: AsRef<str>>(events: &[S], options: &PackOptions) -> Result<Vec<Message>, PackError> {
    if let Some(index) = events
        .iter()
        .position(|e| e.as_ref().contains(['\n', '\r']))
    {
        return Err(PackError::Multiline { index });
    }
    let mut attributes = Vec::new();
    if options.encoding != ContentEncoding::Identity {
        attributes.push((
            CONTENT_ENCODING_ATTRIBUTE.to_owned(),
            options.encoding.name().to_owned(),
        ));
    }
    if let Some(stream) = &options.stream {
        attributes.push((STREAM_ATTRIBUTE.to_owned(), stream.clone()));
    }
    let budget = options
        .max_message_bytes
        .checked_sub(attributes_size(&attributes))
        .filter(|budget| *budget > 0)
        .ok_or(PackError::LimitTooSmall {
            limit: options.max_message_bytes,
        })?;
    let line = |index: usize| events[index].as_ref().len() + 1;
    let encode = |range: std::ops::Range<usize>| {
        let mut ndjson = Vec::new();
        for event in &events[range] {
            ndjson.extend_from_slice(event.as_ref().as_bytes());
            ndjson.push(b'\n');
        }
        encode_body(options.encoding, &ndjson, options.level)
    };

    let mut messages = Vec::new();
    // Raw NDJSON bytes to try per message: plain bodies fill the budget;
    // compressed ones start from a guess and adapt to the ratio seen.
    let mut target = match options.encoding {
        ContentEncoding::Identity => budget,
        _ => budget * 3,
    };
    let mut start = 0;
    while start < events.len() {
        let mut end = start;
        let mut raw = 0;
        while end < events.len() && (end == start || raw + line(end) <= target) {
            raw += line(end);
            end += 1;
        }
        let mut grown = 0;
        loop {
            let body = encode(start..end);
            if body.len() <= budget {
                if options.encoding != ContentEncoding::Identity && end < events.len() {
                    // Aim a little under the ratio just seen: for the next
                    // message, and for this one when it came out well short.
                    target = (raw as f64 * budget as f64 / body.len() as f64 * 0.97) as usize;
                    if body.len() < budget * 9 / 10 && grown < 3 {
                        grown += 1;
                        while end < events.len() && raw + line(end) <= target {
                            raw += line(end);
                            end += 1;
                        }
                        continue;
                    }
                }
                messages.push(Message {
                    body,
                    attributes: attributes.clone(),
                    events: end - start,
                });
                break;
            }
            if end - start == 1 {
                return Err(PackError::EventTooLarge {
                    index: start,
                    bytes: body.len() + attributes_size(&attributes),
                    limit: options.max_message_bytes,
                });
            }
            let keep = ((end - start) as f64 * budget as f64 / body.len() as f64 * 0.95) as usize;
            end = start + keep.clamp(1, end - start - 1);
            raw = (start..end).map(line).sum();
        }
        start = end;
    }
    Ok(messages)
}

/// Groups messages (by index) into `SendMessageBatch` requests: at most ten
/// entries and `max_batch_bytes` in all, in order.
pub fn batches<'a>(
    messages: impl IntoIterator<Item = &'a Message>,
    max_batch_bytes: usize,
) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for (index, message) in messages.into_iter().enumerate() {
        let size = message.size();
        match groups.last_mut() {
            Some(group)
                if group.len() < SQS_MAX_BATCH_ENTRIES && bytes + size <= max_batch_bytes =>
            {
                group.push(index);
                bytes += size;
            }
            _ => {
                groups.push(vec![index]);
                bytes = size;
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::content_encoding::decode_body;

    fn events(count: usize) -> Vec<String> {
        // Pseudo-random digits, so the events do not compress to nothing.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..count)
            .map(|n| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                format!(r#"{{"organizationId":"t{}","eventTime":"2022-11-19T23:23:16Z","type":"step_enter","n":{n},"r":"{state:x}{:x}"}}"#, n % 7, state.rotate_left(17))
            })
            .collect()
    }

    fn unpack(messages: &[Message]) -> Vec<String> {
        messages
            .iter()
            .flat_map(|message| {
                let encoding = message
                    .attributes
                    .iter()
                    .find(|(name, _)| name == CONTENT_ENCODING_ATTRIBUTE)
                    .map(|(_, value)| value.as_str());
                let payload = decode_body(encoding, &message.body, 64 << 20).unwrap();
                assert_eq!(payload.lines().count(), message.events);
                payload.lines().map(str::to_owned).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn every_event_is_in_one_message_in_order_under_the_limit() {
        let events = events(20_000);
        for encoding in [
            ContentEncoding::Gzip,
            ContentEncoding::Zstd,
            ContentEncoding::Identity,
        ] {
            let options = PackOptions {
                encoding,
                level: 3,
                stream: Some("airkit-app-events".into()),
                ..PackOptions::default()
            };
            let messages = pack(&events, &options).unwrap();
            assert!(messages.iter().all(|m| m.size() <= SQS_MAX_MESSAGE_BYTES));
            assert_eq!(unpack(&messages), events, "{encoding:?}");
            // Full messages: all but the last are at least 80% of the limit.
            let (last, full) = messages.split_last().unwrap();
            assert!(last.size() <= SQS_MAX_MESSAGE_BYTES);
            for message in full {
                assert!(
                    message.size() > SQS_MAX_MESSAGE_BYTES * 8 / 10,
                    "{encoding:?}: {}",
                    message.size()
                );
            }
        }
    }

    #[test]
    fn compression_needs_several_times_fewer_messages() {
        let events = events(20_000);
        let plain = pack(
            &events,
            &PackOptions {
                encoding: ContentEncoding::Identity,
                ..PackOptions::default()
            },
        )
        .unwrap();
        let gzip = pack(&events, &PackOptions::default()).unwrap();
        assert!(
            gzip.len() * 2 <= plain.len(),
            "{} gzip vs {} plain",
            gzip.len(),
            plain.len()
        );
    }

    #[test]
    fn attributes_count_against_the_limit() {
        let options = PackOptions {
            encoding: ContentEncoding::Identity,
            max_message_bytes: 1000,
            stream: Some("airkit-audit-logs".into()),
            ..PackOptions::default()
        };
        let messages = pack(&events(100), &options).unwrap();
        assert!(messages.iter().all(|m| m.size() <= 1000));
        assert!(
            messages
                .iter()
                .all(|m| m.body.len() <= 1000 - "streamStringairkit-audit-logs".len())
        );
    }

    #[test]
    fn an_event_too_large_alone_is_named() {
        let mut events = events(3);
        events[1] = format!(r#"{{"big":"{}"}}"#, "x".repeat(2000));
        let options = PackOptions {
            encoding: ContentEncoding::Identity,
            max_message_bytes: 1000,
            ..PackOptions::default()
        };
        assert!(matches!(
            pack(&events, &options),
            Err(PackError::EventTooLarge { index: 1, .. })
        ));
    }

    #[test]
    fn a_multiline_event_is_refused() {
        let error = pack(&["{}", "{\n}"], &PackOptions::default()).unwrap_err();
        assert_eq!(error, PackError::Multiline { index: 1 });
    }

    #[test]
    fn batches_hold_ten_entries_and_the_byte_limit_at_most() {
        let message = |bytes: usize| Message {
            body: "x".repeat(bytes),
            attributes: vec![],
            events: 1,
        };
        let small: Vec<Message> = (0..25).map(|_| message(10)).collect();
        assert_eq!(
            batches(&small, SQS_MAX_MESSAGE_BYTES)
                .iter()
                .map(Vec::len)
                .collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        let big: Vec<Message> = (0..3).map(|_| message(100_000)).collect();
        assert_eq!(
            batches(&big, SQS_MAX_MESSAGE_BYTES),
            vec![vec![0, 1], vec![2]]
        );
    }
}
