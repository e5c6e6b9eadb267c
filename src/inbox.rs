//! An SNS topic with an SQS queue subscribed to it, to read back the alerts
//! the functions publish, as a subscriber would receive them.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

/// A topic and the queue that receives its notifications.
pub struct AlertInbox {
    pub topic_arn: String,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl AlertInbox {
    /// Creates topic `name` and a queue `<name>-inbox` subscribed to it.
    pub async fn create(
        sns: &aws_sdk_sns::Client,
        sqs: &aws_sdk_sqs::Client,
        name: &str,
    ) -> Result<Self> {
        let topic_arn = sns
            .create_topic()
            .name(name)
            .send()
            .await?
            .topic_arn
            .context("no topic ARN")?;
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("{name}-inbox"))
            .send()
            .await?
            .queue_url
            .context("no queue URL")?;
        let queue_arn = crate::esm::queue_arn(sqs, &queue_url).await?;
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .send()
            .await?;
        Ok(Self {
            topic_arn,
            sqs: sqs.clone(),
            queue_url,
        })
    }

    /// The SNS notifications received so far (JSON envelopes with `Subject`,
    /// `Message` and `MessageAttributes`), removed from the queue. Waits up
    /// to about five seconds for more than `expected`, so a test also sees
    /// alerts that should not have been sent.
    pub async fn read(&self, expected: usize) -> Result<Vec<Value>> {
        let mut received = Vec::new();
        for _ in 0..5 {
            let messages = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await?
                .messages
                .unwrap_or_default();
            for message in messages {
                received.push(serde_json::from_str(message.body().unwrap_or_default())?);
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await?;
            }
            if received.len() > expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(received)
    }
}
