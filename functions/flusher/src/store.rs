//! The flusher's S3 calls on the export bucket: listing, reading (whole,
//! or a byte range into memory or a spool file), copying, the manifest's
//! conditional commit, and batch deletes.

use std::io::Write;
use std::ops::Range;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use shared::manifest::{Manifest, READ_MANIFEST_VERSION};

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

/// Every object under `prefix` with its size, in key order.
pub async fn list_objects(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<shared::listing::ListedObject>, FlushError> {
    shared::listing::objects(s3, bucket, prefix)
        .await
        .map_err(|e| FlushError::s3("ListObjectsV2", bucket, prefix, e))
}

/// Streams bytes `range` of an object (one ranged GET) into `out`,
/// returning how many were written; `None` when the object does not exist.
/// Fewer bytes than asked for is an error (the transfer was cut short),
/// never a short read.
pub async fn get_range_into(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    range: Range<u64>,
    out: &mut impl Write,
) -> Result<Option<u64>, FlushError> {
    if range.is_empty() {
        return Ok(Some(0));
    }
    let object = match s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(format!("bytes={}-{}", range.start, range.end - 1))
        .send()
        .await
    {
        Ok(object) => object,
        Err(error) if error.code() == Some("NoSuchKey") => return Ok(None),
        Err(error) => return Err(FlushError::s3("GetObject", bucket, key, error)),
    };
    let failed = |message: String| FlushError::S3 {
        operation: "GetObject",
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        code: None,
        message,
    };
    let mut body = object.body;
    let mut written = 0u64;
    while let Some(bytes) = body
        .try_next()
        .await
        .map_err(|error| failed(format!("reading bytes {range:?}: {error}")))?
    {
        out.write_all(&bytes)
            .map_err(|error| failed(format!("spooling bytes {range:?}: {error}")))?;
        written += bytes.len() as u64;
    }
    if written != range.end - range.start {
        return Err(failed(format!(
            "asked for bytes {range:?} ({} bytes), received {written}",
            range.end - range.start
        )));
    }
    Ok(Some(written))
}

/// An object's bytes, or the bytes `range` of it (a file in a bundle);
/// `None` when it does not exist.
pub async fn get_bytes(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    range: Option<Range<u64>>,
) -> Result<Option<Vec<u8>>, FlushError> {
    match range {
        Some(range) => {
            let mut bytes = Vec::with_capacity((range.end - range.start) as usize);
            let found = get_range_into(s3, bucket, key, range, &mut bytes).await?;
            Ok(found.map(|_| bytes))
        }
        None => Ok(get(s3, bucket, key).await?.map(|(bytes, _)| bytes)),
    }
}

/// Whether an object exists (HeadObject).
pub async fn exists(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<bool, FlushError> {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => Ok(true),
        Err(error) if matches!(error.code(), Some("NotFound" | "NoSuchKey")) => Ok(false),
        Err(error)
            if error
                .raw_response()
                .is_some_and(|r| r.status().as_u16() == 404) =>
        {
            Ok(false)
        }
        Err(error) => Err(FlushError::s3("HeadObject", bucket, key, error)),
    }
}

/// Copies `from` to `to` within `bucket` (CopyObject: the bytes never pass
/// through the flusher); `false` when `from` no longer exists.
pub async fn copy(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    from: &str,
    to: &str,
) -> Result<bool, FlushError> {
    match s3
        .copy_object()
        .bucket(bucket)
        .key(to)
        .copy_source(format!("{bucket}/{from}"))
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(error) if error.code() == Some("NoSuchKey") => Ok(false),
        Err(error) => Err(FlushError::s3("CopyObject", bucket, from, error)),
    }
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
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|error| FlushError::Corrupt {
            what: format!("manifest s3://{bucket}/{key}"),
            message: error.to_string(),
        })?;
    // A newer release may record what this one cannot read (as bundles
    // were to the release before them): refuse it rather than guess.
    if manifest.version > READ_MANIFEST_VERSION {
        return Err(FlushError::Corrupt {
            what: format!("manifest s3://{bucket}/{key}"),
            message: format!(
                "version {} is newer than this flusher reads ({READ_MANIFEST_VERSION}): deploy the release that wrote it",
                manifest.version
            ),
        });
    }
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
