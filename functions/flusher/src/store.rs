//! The flusher's S3 calls on the export bucket: listing, reading, the
//! manifest's conditional commit, and batch deletes.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use shared::manifest::Manifest;

use crate::error::FlushError;

/// DeleteObjects takes at most this many keys a call.
const DELETE_BATCH: usize = 1000;

/// The common prefixes one level below `prefix` (for example the hour
/// folders of a date), in order.
pub async fn list_folders(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, FlushError> {
    shared::listing::folders(s3, bucket, prefix)
        .await
        .map_err(|e| FlushError::s3("ListObjectsV2", bucket, prefix, e))
}

/// Every key under `prefix`, in order.
pub async fn list_keys(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, FlushError> {
    shared::listing::keys(s3, bucket, prefix)
        .await
        .map_err(|e| FlushError::s3("ListObjectsV2", bucket, prefix, e))
}

/// An object's bytes and ETag; `None` when it does not exist.
pub async fn get(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<(Vec<u8>, String)>, FlushError> {
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(object) => {
            let etag = object.e_tag().unwrap_or_default().to_owned();
            let bytes = object
                .body
                .collect()
                .await
                .map_err(|error| FlushError::Corrupt {
                    what: format!("s3://{bucket}/{key}"),
                    message: error.to_string(),
                })?
                .into_bytes();
            Ok(Some((bytes.to_vec(), etag)))
        }
        Err(error) if error.code() == Some("NoSuchKey") => Ok(None),
        Err(error) => Err(FlushError::s3("GetObject", bucket, key, error)),
    }
}

/// Stores `bytes` at `key` unconditionally.
pub async fn put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    bytes: Vec<u8>,
    content_type: &str,
) -> Result<(), FlushError> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .map_err(|e| FlushError::s3("PutObject", bucket, key, e))?;
    Ok(())
}

/// A partition's manifest and its ETag, when one was committed.
pub async fn read_manifest(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<(Manifest, String)>, FlushError> {
    let Some((bytes, etag)) = get(s3, bucket, key).await? else {
        return Ok(None);
    };
    let manifest = serde_json::from_slice(&bytes).map_err(|error| FlushError::Corrupt {
        what: format!("manifest s3://{bucket}/{key}"),
        message: error.to_string(),
    })?;
    Ok(Some((manifest, etag)))
}

/// Commits a manifest: created only if none exists (`If-None-Match: *`), or
/// replaced only if it is still the one read (`If-Match`), so two flushers
/// can never both commit. Returns the new ETag.
///
/// A refused condition is a lost race unless the stored manifest is
/// byte for byte the one being committed: then this commit landed and only
/// its answer was lost (the SDK retried a write S3 had applied), or another
/// flusher committed exactly the same state; either way it is committed,
/// and the run goes on to publish it.
pub async fn commit_manifest(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    manifest: &Manifest,
    read_etag: Option<&str>,
) -> Result<String, FlushError> {
    let body = serde_json::to_vec_pretty(manifest).expect("manifests serialize");
    let request = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .body(ByteStream::from(body.clone()));
    let request = match read_etag {
        Some(etag) => request.if_match(etag),
        None => request.if_none_match("*"),
    };
    match request.send().await {
        Ok(output) => Ok(output.e_tag().unwrap_or_default().to_owned()),
        Err(error)
            if matches!(
                error.code(),
                Some("PreconditionFailed" | "ConditionalRequestConflict")
            ) =>
        {
            match get(s3, bucket, key).await? {
                Some((stored, etag)) if stored == body => {
                    tracing::info!(%key, "the manifest was committed although the answer was lost");
                    Ok(etag)
                }
                _ => Err(FlushError::LostRace {
                    key: key.to_owned(),
                }),
            }
        }
        Err(error) => Err(FlushError::s3("PutObject", bucket, key, error)),
    }
}

/// Deletes `keys` with DeleteObjects, 1000 a call; a key that is already
/// gone counts as deleted.
pub async fn delete_keys(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    keys: &[String],
) -> Result<(), FlushError> {
    for batch in keys.chunks(DELETE_BATCH) {
        let objects = batch
            .iter()
            .map(|key| {
                ObjectIdentifier::builder()
                    .key(key)
                    .build()
                    .expect("key is set")
            })
            .collect();
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .expect("objects are set");
        let output = s3
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| FlushError::s3("DeleteObjects", bucket, &batch[0], e))?;
        if let Some(failed) = output.errors().first() {
            return Err(FlushError::S3 {
                operation: "DeleteObjects",
                bucket: bucket.to_owned(),
                key: failed.key().unwrap_or_default().to_owned(),
                code: failed.code().map(str::to_owned),
                message: failed.message().unwrap_or_default().to_owned(),
            });
        }
    }
    Ok(())
}
