//! The batcher's plan on arbitrary batches: no panic; every message ends in
//! a staged chunk, in the errors file, or both (a multi-event message); every
//! key stays under its prefix; every object's line count is what it holds.
#![no_main]

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::OnceLock;

use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};
use libfuzzer_sys::fuzz_target;
use shared::Config;

const STREAMS: [&str; 4] = [
    "airkit-app-events",
    "airkit-audit-logs",
    "custom",
    "nope/../x",
];

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let document =
            r#"{"streams": {"custom": {"profile": "generic", "tenant": "/t", "time": "/ts", "id": "/id"}}}"#;
        Config::from_sources(
            |name| (name == shared::config::env::EXPORT_BUCKET).then(|| "fuzz-export".to_owned()),
            Some(document),
        )
        .expect("a valid configuration")
    })
}

fn lines_of(gzip: &[u8]) -> usize {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(gzip)
        .read_to_string(&mut text)
        .expect("planned objects are gzip UTF-8");
    text.lines().filter(|line| !line.is_empty()).count()
}

fuzz_target!(|data: &[u8]| {
    let config = config();
    // Messages are separated by 0xFF (never in UTF-8); a message's first
    // byte picks its stream attribute (or none).
    let records: Vec<SqsMessage> = data
        .split(|byte| *byte == 0xFF)
        .take(10)
        .enumerate()
        .map(|(n, raw)| {
            let mut message = SqsMessage::default();
            message.message_id = Some(format!("m{n}"));
            message.event_source_arn = Some("arn:aws:sqs:us-east-1:123456789012:events".into());
            let (selector, body) = raw.split_first().map_or((0, raw), |(s, b)| (*s, b));
            message.body = Some(String::from_utf8_lossy(body).into_owned());
            if let Some(stream) = STREAMS.get(usize::from(selector % 8)) {
                let mut attribute = SqsMessageAttribute::default();
                attribute.data_type = Some("String".into());
                attribute.string_value = Some((*stream).to_owned());
                message
                    .message_attributes
                    .insert("stream".into(), attribute);
            }
            message
        })
        .collect();
    let plan = batcher::plan::plan_batch(config, &records, 1_795_000_000_000, "fuzz-request");
    let mut covered = BTreeSet::new();
    for chunk in &plan.chunks {
        assert!(chunk.key.starts_with("staging/"), "{}", chunk.key);
        assert!(
            !chunk
                .key
                .split('/')
                .any(|s| s == ".." || s == "." || s.is_empty()),
            "{}",
            chunk.key
        );
        assert_eq!(lines_of(&chunk.body), chunk.lines, "{}", chunk.key);
        covered.extend(chunk.messages.iter().copied());
    }
    if let Some(errors) = &plan.errors {
        assert!(errors.key.starts_with("errors/"), "{}", errors.key);
        assert_eq!(lines_of(&errors.body), errors.lines);
        assert_eq!(errors.lines, plan.stats.rejected);
        covered.extend(errors.messages.iter().copied());
    }
    assert_eq!(
        plan.chunks.iter().map(|c| c.lines).sum::<usize>(),
        plan.stats.accepted
    );
    assert_eq!(
        covered,
        (0..records.len()).collect(),
        "a message went nowhere"
    );
});
