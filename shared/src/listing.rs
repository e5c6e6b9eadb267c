//! Listing the export bucket, every page, in key order: the one listing the
//! flusher and the tools share.

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
use aws_smithy_runtime_api::http::Response as HttpResponse;

/// A failed ListObjectsV2 call.
pub type ListError = SdkError<ListObjectsV2Error, HttpResponse>;

/// Every key under `prefix`, sorted.
pub async fn keys(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, ListError> {
    Ok(objects(s3, bucket, prefix)
        .await?
        .into_iter()
        .map(|object| object.key)
        .collect())
}

/// An object a listing found: its key and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
}

/// Every object under `prefix` with its size (ListObjectsV2's `Size`, so a
/// reader can ask for an object's tail without asking its length first),
/// sorted by key.
pub async fn objects(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<ListedObject>, ListError> {
    let mut objects = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        objects.extend(page?.contents().iter().filter_map(|o| {
            Some(ListedObject {
                key: o.key()?.to_owned(),
                size: o.size().unwrap_or(0).max(0) as u64,
            })
        }));
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(objects)
}

/// The folders one level below `prefix` (common prefixes ending in `/`),
/// sorted.
pub async fn folders(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, ListError> {
    let mut folders = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .delimiter("/")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        folders.extend(
            page?
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_owned)),
        );
    }
    folders.sort();
    Ok(folders)
}
