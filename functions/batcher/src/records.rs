//! Building SQS records as Lambda delivers them, for tests and tools that
//! feed the batcher without a queue.

use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};

use crate::plan::STREAM_ATTRIBUTE;

/// A record of `queue_arn` with the given id, body and `SentTimestamp`, and
/// the system attributes and event source fields Lambda sets.
pub fn sqs_record(id: &str, body: &str, sent_millis: i64, queue_arn: &str) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = Some(id.to_owned());
    record.receipt_handle = Some(format!("receipt-{id}"));
    record.body = Some(body.to_owned());
    record
        .attributes
        .insert("SentTimestamp".into(), sent_millis.to_string());
    record
        .attributes
        .insert("ApproximateReceiveCount".into(), "1".into());
    record.event_source_arn = Some(queue_arn.to_owned());
    record.event_source = Some("aws:sqs".into());
    record.aws_region = queue_arn.split(':').nth(3).map(str::to_owned);
    record
}

/// The record with a String message attribute `stream` naming its stream.
pub fn with_stream(mut record: SqsMessage, stream: &str) -> SqsMessage {
    let mut attribute = SqsMessageAttribute::default();
    attribute.string_value = Some(stream.to_owned());
    attribute.data_type = Some("String".to_owned());
    record
        .message_attributes
        .insert(STREAM_ATTRIBUTE.into(), attribute);
    record
}

/// The record with a String message attribute `content-encoding` (for
/// example `gzip`): its body is base64 of the compressed payload.
pub fn with_content_encoding(mut record: SqsMessage, encoding: &str) -> SqsMessage {
    let mut attribute = SqsMessageAttribute::default();
    attribute.string_value = Some(encoding.to_owned());
    attribute.data_type = Some("String".to_owned());
    record.message_attributes.insert(
        shared::content_encoding::CONTENT_ENCODING_ATTRIBUTE.into(),
        attribute,
    );
    record
}
