//! The event source mapping emulation against moto: it must delete, keep and
//! redeliver exactly as Lambda's SQS event source mapping with
//! `ReportBatchItemFailures` does, and MotoServer must clean up after itself.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use s3_export::esm::{
    DrainReport, EsmError, EventSourceMapping, approximate_message_count, create_queue_with_dlq,
};
use s3_export::moto::{MotoServer, port_answers_http};

type HandlerResult = Result<SqsBatchResponse, lambda_runtime::Error>;

/// Long enough for a 1-second visibility timeout to expire in moto.
const AFTER_VISIBILITY_TIMEOUT: Duration = Duration::from_millis(1_500);

struct Fixture {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    dlq_url: String,
    // Last, so it is dropped after the client that talks to it.
    _moto: MotoServer,
}

/// A fresh moto with one queue (1 s visibility timeout) and its DLQ.
async fn fixture(max_receive_count: u32) -> Fixture {
    let moto = MotoServer::start().await.expect("moto_server starts");
    let sqs = moto.sqs_client().await;
    let queues = create_queue_with_dlq(&sqs, "events", max_receive_count, 1)
        .await
        .expect("queues are created");
    Fixture {
        sqs,
        queue_url: queues.url,
        queue_arn: queues.arn,
        dlq_url: queues.dlq_url,
        _moto: moto,
    }
}

impl Fixture {
    async fn send(&self, bodies: &[&str]) -> Vec<String> {
        let mut ids = Vec::new();
        for body in bodies {
            let sent = self
                .sqs
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(*body)
                .send()
                .await
                .expect("message is sent");
            ids.push(sent.message_id.expect("SendMessage returns an id"));
        }
        ids
    }

    async fn mapping(&self, batch_size: usize, window: Duration) -> EventSourceMapping {
        EventSourceMapping::for_queue(self.sqs.clone(), &self.queue_url, batch_size, window)
            .await
            .expect("mapping is valid")
    }

    async fn remaining(&self) -> u64 {
        approximate_message_count(&self.sqs, &self.queue_url)
            .await
            .expect("queue attributes are readable")
    }

    /// (message id, body) of what the DLQ holds.
    async fn dlq_messages(&self) -> Vec<(String, String)> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.dlq_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("DLQ is readable");
        received
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| (m.message_id.unwrap_or_default(), m.body.unwrap_or_default()))
            .collect()
    }
}

fn succeed(_event: SqsEvent) -> std::future::Ready<HandlerResult> {
    std::future::ready(Ok(SqsBatchResponse::default()))
}

fn fail_all(event: SqsEvent) -> std::future::Ready<HandlerResult> {
    let mut response = SqsBatchResponse::default();
    response.set_failures(event.records.into_iter().filter_map(|r| r.message_id));
    std::future::ready(Ok(response))
}

fn bodies(records: &[SqsMessage]) -> Vec<String> {
    let mut bodies: Vec<String> = records.iter().filter_map(|r| r.body.clone()).collect();
    bodies.sort();
    bodies
}

#[tokio::test]
async fn successful_batch_is_deleted() {
    let f = fixture(3).await;
    f.send(&["a", "b", "c"]).await;
    let esm = f.mapping(10, Duration::ZERO).await;

    let mut seen = Vec::new();
    let report = esm
        .poll_once(|event: SqsEvent| {
            seen.extend(event.records);
            succeed(SqsEvent::default())
        })
        .await
        .unwrap();

    assert_eq!(bodies(&seen), ["a", "b", "c"]);
    assert_eq!(report.received, 3);
    assert_eq!(report.deleted, 3);
    assert!(report.failed.is_empty());
    assert_eq!(report.handler_error, None);
    assert_eq!(f.remaining().await, 0);
}

#[tokio::test]
async fn reported_failure_alone_is_redelivered_after_visibility_timeout() {
    let f = fixture(5).await;
    let ids = f.send(&["a", "b", "c"]).await;
    let failing_id = ids[1].clone();
    let esm = f.mapping(10, Duration::ZERO).await;

    let report = esm
        .poll_once(|event: SqsEvent| {
            let mut response = SqsBatchResponse::default();
            for record in &event.records {
                if record.body.as_deref() == Some("b") {
                    response.add_failure(record.message_id.clone().unwrap());
                }
            }
            std::future::ready(Ok(response))
        })
        .await
        .unwrap();
    assert_eq!(report.received, 3);
    assert_eq!(report.deleted, 2);
    assert_eq!(report.failed, vec![failing_id.clone()]);
    assert_eq!(f.remaining().await, 1, "only the failed message is left");

    let hidden = esm.poll_once(succeed).await.unwrap();
    assert_eq!(
        hidden.received, 0,
        "it stays invisible during the visibility timeout"
    );

    tokio::time::sleep(AFTER_VISIBILITY_TIMEOUT).await;
    let mut redelivered = Vec::new();
    let report = esm
        .poll_once(|event: SqsEvent| {
            redelivered.extend(event.records);
            succeed(SqsEvent::default())
        })
        .await
        .unwrap();
    assert_eq!(report.received, 1);
    assert_eq!(report.deleted, 1);
    assert_eq!(
        redelivered[0].message_id.as_deref(),
        Some(failing_id.as_str())
    );
    assert_eq!(redelivered[0].attributes["ApproximateReceiveCount"], "2");
    assert_eq!(f.remaining().await, 0);
}

#[tokio::test]
async fn handler_error_deletes_nothing() {
    let f = fixture(5).await;
    let mut ids = f.send(&["a", "b", "c"]).await;
    let esm = f.mapping(10, Duration::ZERO).await;

    let report = esm
        .poll_once(|_event: SqsEvent| async {
            Err::<SqsBatchResponse, lambda_runtime::Error>("downstream is down".into())
        })
        .await
        .unwrap();

    assert_eq!(report.received, 3);
    assert_eq!(report.deleted, 0);
    let mut failed = report.failed.clone();
    failed.sort();
    ids.sort();
    assert_eq!(failed, ids);
    assert_eq!(report.handler_error.as_deref(), Some("downstream is down"));
    assert_eq!(f.remaining().await, 3);

    tokio::time::sleep(AFTER_VISIBILITY_TIMEOUT).await;
    let retried = esm.poll_once(succeed).await.unwrap();
    assert_eq!((retried.received, retried.deleted), (3, 3));
}

#[tokio::test]
async fn unknown_item_identifier_fails_the_whole_batch() {
    let f = fixture(5).await;
    f.send(&["a", "b"]).await;
    let esm = f.mapping(10, Duration::ZERO).await;

    let report = esm
        .poll_once(|_event: SqsEvent| {
            let mut response = SqsBatchResponse::default();
            response.add_failure("not-a-message-of-this-batch");
            std::future::ready(Ok(response))
        })
        .await
        .unwrap();

    assert_eq!(report.received, 2);
    assert_eq!(report.deleted, 0);
    assert_eq!(report.failed.len(), 2);
    assert!(
        report
            .handler_error
            .unwrap()
            .contains("not-a-message-of-this-batch")
    );
    assert_eq!(f.remaining().await, 2);
}

#[tokio::test]
async fn message_failing_past_max_receive_count_ends_in_dlq() {
    let f = fixture(2).await;
    let ids = f.send(&["poison"]).await;
    let esm = f.mapping(10, Duration::ZERO).await;

    let report: DrainReport = esm.drain(fail_all, Duration::from_secs(20)).await.unwrap();

    // moto counts receives itself; on a loaded machine a delivery can be
    // lost to a receive that ran out of time, so allow one or two.
    assert!(
        (1..=2).contains(&report.received),
        "delivered at most maxReceiveCount times: {}",
        report.received
    );
    assert!(report.failed.iter().all(|id| *id == ids[0]));
    assert_eq!(report.deleted, 0);
    assert_eq!(f.remaining().await, 0);
    assert_eq!(
        f.dlq_messages().await,
        [(ids[0].clone(), "poison".to_owned())],
        "moved by moto on the receive after the last delivery, id kept"
    );
}

#[tokio::test]
async fn drain_gives_up_at_its_deadline_when_no_dlq_takes_the_message() {
    let f = fixture(1_000).await;
    f.send(&["poison"]).await;
    let esm = f.mapping(10, Duration::ZERO).await;

    let err = esm
        .drain(fail_all, Duration::from_secs(2))
        .await
        .unwrap_err();

    match err {
        EsmError::NotDrained {
            remaining, report, ..
        } => {
            assert_eq!(remaining, 1);
            assert!(report.received >= 2, "redelivered while time remained");
            assert_eq!(report.deleted, 0);
        }
        other => panic!("expected NotDrained, got {other}"),
    }
}

#[tokio::test]
async fn record_carries_message_attributes_and_system_attributes() {
    let f = fixture(3).await;
    let sent = f
        .sqs
        .send_message()
        .queue_url(&f.queue_url)
        .message_body(r#"{"EVENT_ID":"1"}"#)
        .message_attributes(
            "stream",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("airkit-audit-logs")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let sent_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let esm = f.mapping(10, Duration::ZERO).await;

    let mut seen = Vec::new();
    esm.poll_once(|event: SqsEvent| {
        seen.extend(event.records);
        succeed(SqsEvent::default())
    })
    .await
    .unwrap();

    let [record] = seen.as_slice() else {
        panic!("expected one record, got {seen:?}");
    };
    let stream = &record.message_attributes["stream"];
    assert_eq!(stream.string_value.as_deref(), Some("airkit-audit-logs"));
    assert_eq!(stream.data_type.as_deref(), Some("String"));
    assert!(stream.binary_value.is_none());
    assert!(stream.string_list_values.is_empty() && stream.binary_list_values.is_empty());

    let sent_timestamp: i64 = record.attributes["SentTimestamp"].parse().unwrap();
    assert!(
        (sent_timestamp - sent_at_ms).abs() < 60_000,
        "SentTimestamp is epoch ms"
    );
    assert_eq!(record.attributes["ApproximateReceiveCount"], "1");
    assert!(record.attributes.contains_key("SenderId"));
    assert!(
        record
            .attributes
            .contains_key("ApproximateFirstReceiveTimestamp")
    );
    assert!(
        !record
            .attributes
            .contains_key(MessageSystemAttributeName::All.as_str())
    );

    assert_eq!(record.message_id, sent.message_id);
    assert_eq!(record.md5_of_body, sent.md5_of_message_body);
    assert_eq!(
        record.md5_of_message_attributes,
        sent.md5_of_message_attributes
    );
    assert!(record.receipt_handle.is_some());
    assert_eq!(record.event_source.as_deref(), Some("aws:sqs"));
    assert_eq!(
        record.event_source_arn.as_deref(),
        Some(f.queue_arn.as_str())
    );
    assert_eq!(record.aws_region.as_deref(), Some("us-east-1"));

    // The JSON a handler deserializes uses Lambda's field names.
    let json = serde_json::to_value(record).unwrap();
    let keys: HashMap<&str, ()> = json
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (k.as_str(), ()))
        .collect();
    for key in [
        "messageId",
        "receiptHandle",
        "md5OfBody",
        "eventSourceARN",
        "awsRegion",
    ] {
        assert!(keys.contains_key(key), "{key} missing from {json}");
    }
    assert_eq!(
        json["messageAttributes"]["stream"]["stringValue"],
        "airkit-audit-logs"
    );
}

#[tokio::test]
async fn batch_holds_at_most_batch_size_messages() {
    let f = fixture(3).await;
    let bodies: Vec<String> = (0..25).map(|i| format!("m{i:02}")).collect();
    let bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
    f.send(&bodies).await;

    let small = f.mapping(4, Duration::ZERO).await;
    let first = small.poll_once(succeed).await.unwrap();
    assert_eq!((first.received, first.deleted), (4, 4));

    let windowed = f.mapping(15, Duration::from_secs(1)).await;
    let mut sizes = Vec::new();
    let report = windowed
        .drain(
            |event: SqsEvent| {
                sizes.push(event.records.len());
                succeed(event)
            },
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(sizes, [15, 6], "one batch fills up over several receives");
    assert_eq!(report.deleted, 21);
}

/// Releasing makes a received message visible again at once (its queue's
/// visibility timeout is 30 s, so it could not come back otherwise); a
/// release SQS refuses, here of a message deleted meanwhile, is named with
/// SQS's code, not ignored.
#[tokio::test]
async fn release_makes_messages_visible_again_and_names_those_sqs_refuses() {
    let f = fixture(3).await;
    let queue = create_queue_with_dlq(&f.sqs, "long-visibility", 3, 30)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for body in ["kept", "gone"] {
        let sent = f
            .sqs
            .send_message()
            .queue_url(&queue.url)
            .message_body(body)
            .send()
            .await
            .unwrap();
        ids.push(sent.message_id.unwrap());
    }
    let received = f
        .sqs
        .receive_message()
        .queue_url(&queue.url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(received.len(), 2);
    let handle = |id: &str| {
        received
            .iter()
            .find(|m| m.message_id() == Some(id))
            .and_then(|m| m.receipt_handle())
            .unwrap()
            .to_owned()
    };
    f.sqs
        .delete_message()
        .queue_url(&queue.url)
        .receipt_handle(handle(&ids[1]))
        .send()
        .await
        .unwrap();
    let esm =
        EventSourceMapping::new(f.sqs.clone(), &queue.url, &queue.arn, 10, Duration::ZERO).unwrap();

    let failures = esm
        .release(&[
            (ids[0].clone(), handle(&ids[0])),
            (ids[1].clone(), handle(&ids[1])),
        ])
        .await
        .unwrap();

    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].starts_with(&format!("{}: ReceiptHandleIsInvalid", ids[1])),
        "{failures:?}"
    );
    let mut seen = Vec::new();
    let report = esm
        .poll_once(|event: SqsEvent| {
            seen.extend(event.records);
            succeed(SqsEvent::default())
        })
        .await
        .unwrap();
    assert_eq!((report.received, report.deleted), (1, 1));
    assert_eq!(bodies(&seen), ["kept"]);
    assert!(report.release_failures.is_empty() && report.duplicates.is_empty());
}

#[tokio::test]
async fn dropped_moto_server_stops_answering() {
    let moto = MotoServer::start().await.unwrap();
    let port = moto.port();
    let pid = moto.pid();
    assert!(port_answers_http(port).await);
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));

    drop(moto);

    assert!(!port_answers_http(port).await, "port {port} still answers");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "moto_server process {pid} is still around"
    );
}
