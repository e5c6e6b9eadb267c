//! Publishing archive parts to destinations. A destination needs only
//! `s3:PutObject` (and KMS where it uses a key): parts are read from the
//! export bucket and written, never listed or read back, in the
//! destination's bucket (DESIGN.md, invariant 5). Every write carries the
//! destination's encryption and, when its account is known,
//! `ExpectedBucketOwner` (invariant 6). A part is published to the same key
//! with the same bytes however often it is retried.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;

use shared::config::{Destination, Encryption};
use shared::manifest::Manifest;
use shared::partition::PartitionKey;

use crate::Flusher;
use crate::error::FlushError;

/// What publishing a partition did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    pub published: usize,
    /// Destinations that still have parts pending, with the error.
    pub failed: Vec<(String, String)>,
}

/// Marks `parts` pending for every destination that selects the partition.
pub fn assign(flusher: &Flusher, partition: &PartitionKey, manifest: &mut Manifest, parts: &[u32]) {
    for destination in flusher
        .config
        .destinations_for(&partition.stream, &partition.tenant)
    {
        let state = manifest
            .destinations
            .entry(destination.name.clone())
            .or_default();
        state.pending.extend(parts.iter().copied());
        state.pending.sort_unstable();
        state.pending.dedup();
    }
}

/// Publishes every pending part of the manifest, destination by
/// destination, and records the outcome in it. A destination that fails
/// keeps its parts pending, for the next run. `stop_after_first` is the
/// injected failure "some destinations published".
pub async fn publish_pending(
    flusher: &Flusher,
    partition: &PartitionKey,
    manifest: &mut Manifest,
    stop_after_first: bool,
) -> Result<PublishOutcome, FlushError> {
    let mut outcome = PublishOutcome::default();
    let names: Vec<String> = manifest
        .destinations
        .iter()
        .filter(|(_, state)| !state.pending.is_empty())
        .map(|(name, _)| name.clone())
        .collect();
    for name in names {
        let Some(destination) = flusher
            .config
            .destinations
            .iter()
            .find(|d| d.name == name && d.enabled)
        else {
            continue;
        };
        let pending = manifest.destinations[&name].pending.clone();
        let mut published_here = false;
        for number in pending {
            let Some(part) = manifest.parts.iter().find(|p| p.number == number) else {
                continue;
            };
            let key = destination
                .layout
                .render(&destination.prefix, partition, number);
            let result = copy_part(flusher, &part.key, part.bytes, destination, &key).await;
            let state = manifest.destinations.get_mut(&name).expect("listed above");
            match result {
                Ok(()) => {
                    state.pending.retain(|n| *n != number);
                    state.published.push(number);
                    state.published.sort_unstable();
                    state.last_error = None;
                    state.failures = 0;
                    outcome.published += 1;
                    published_here = true;
                }
                Err(error) => {
                    tracing::warn!(destination = %name, key = %key, %error, "publish failed; the part stays pending");
                    state.last_error = Some(error.to_string());
                    state.failures += 1;
                    outcome.failed.push((name.clone(), error.to_string()));
                    break;
                }
            }
        }
        let complete = manifest.destinations[&name].pending.is_empty();
        if destination.success_marker
            && published_here
            && complete
            && let Some(folder) = destination
                .layout
                .partition_folder(&destination.prefix, partition)
        {
            let key = format!("{folder}_SUCCESS");
            if let Err(error) = write(flusher, destination, &key, Vec::new(), "text/plain").await {
                tracing::warn!(destination = %name, key = %key, %error, "the _SUCCESS marker was not written");
            }
        }
        if stop_after_first {
            return Err(FlushError::Injected("some destinations published"));
        }
    }
    Ok(outcome)
}

/// Streams one archive part from the export bucket to a destination key.
async fn copy_part(
    flusher: &Flusher,
    archive_key: &str,
    size: u64,
    destination: &Destination,
    key: &str,
) -> Result<(), FlushError> {
    let bucket = &flusher.config.export_bucket;
    let source = flusher
        .s3
        .get_object()
        .bucket(bucket)
        .key(archive_key)
        .send()
        .await
        .map_err(|e| FlushError::s3("GetObject", bucket, archive_key, e))?;
    // One part in memory at a time (at most ARCHIVE_PART_MAX_BYTES): a
    // buffered body lets the SDK retry and checksum the write.
    let bytes = source
        .body
        .collect()
        .await
        .map_err(|error| FlushError::Corrupt {
            what: format!("s3://{bucket}/{archive_key}"),
            message: error.to_string(),
        })?
        .into_bytes();
    if bytes.len() as u64 != size {
        return Err(FlushError::Corrupt {
            what: format!("s3://{bucket}/{archive_key}"),
            message: format!("{} bytes, the manifest says {size}", bytes.len()),
        });
    }
    write(
        flusher,
        destination,
        key,
        bytes.to_vec(),
        "application/gzip",
    )
    .await
}

/// Writes one object to a destination with its encryption and owner check.
async fn write(
    flusher: &Flusher,
    destination: &Destination,
    key: &str,
    bytes: Vec<u8>,
    content_type: &str,
) -> Result<(), FlushError> {
    let client = flusher.client_for(destination.region.as_deref());
    let mut request = client
        .put_object()
        .bucket(&destination.bucket)
        .key(key)
        .content_type(content_type)
        .body(ByteStream::from(bytes));
    request = match &destination.encryption {
        Encryption::BucketDefault => request,
        Encryption::Aes256 => request.server_side_encryption(ServerSideEncryption::Aes256),
        Encryption::Kms { key_id, bucket_key } => request
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .set_ssekms_key_id(key_id.clone())
            .bucket_key_enabled(*bucket_key),
    };
    if let Some(account) = &destination.account_id {
        request = request.expected_bucket_owner(account);
    }
    request
        .send()
        .await
        .map_err(|e| FlushError::s3("PutObject", &destination.bucket, key, e))?;
    Ok(())
}
