//! Reading back what the pipeline stored: every gzip NDJSON object under a
//! prefix, decompressed line by line, independently of the code that wrote it.

use std::io::Read;

use anyhow::{Context, Result};
use flate2::read::MultiGzDecoder;

/// One stored object and its decompressed lines.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub key: String,
    /// Compressed size in bytes.
    pub size: usize,
    pub lines: Vec<String>,
}

/// Every key under `prefix`, in key order (all pages).
pub async fn list_keys(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<Vec<String>> {
    shared::listing::keys(s3, bucket, prefix)
        .await
        .with_context(|| format!("listing s3://{bucket}/{prefix}"))
}

/// Reads and decompresses every `.gz` object under `prefix` (markers such as
/// `_SUCCESS` are skipped). Fails if an object is not valid gzip, not UTF-8,
/// or does not end its last line with `\n`.
pub async fn read_gzip_ndjson(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<StoredFile>> {
    read_files(s3, bucket, prefix, &[".gz"]).await
}

/// Reads every staged chunk in `bucket`, each line reduced to its event
/// (the provenance the batcher appends, see `shared::provenance`, is cut).
pub async fn read_staged_events(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<Vec<StoredFile>> {
    let mut files = read_gzip_ndjson(s3, bucket, shared::layout::STAGING_PREFIX).await?;
    for file in &mut files {
        for line in &mut file.lines {
            let (event, _) = shared::provenance::split_staged_line(line);
            *line = event.to_owned();
        }
    }
    Ok(files)
}

/// Reads every export file under `prefix` in any destination format: gzip
/// (`.gz`), zstd (`.zst`) and plain NDJSON (`.json`, `.ndjson`); other
/// objects (`_SUCCESS`, verify objects) are skipped.
pub async fn read_export_files(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<StoredFile>> {
    read_files(s3, bucket, prefix, &[".gz", ".zst", ".json", ".ndjson"]).await
}

/// The bytes of `s3://bucket/key`; an error names the object.
pub async fn read_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Vec<u8>> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("reading s3://{bucket}/{key}"))?;
    let bytes = object
        .body
        .collect()
        .await
        .with_context(|| format!("reading s3://{bucket}/{key}"))?;
    Ok(bytes.into_bytes().to_vec())
}

async fn read_files(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    extensions: &[&str],
) -> Result<Vec<StoredFile>> {
    let mut files = Vec::new();
    for key in list_keys(s3, bucket, prefix).await? {
        if !extensions.iter().any(|extension| key.ends_with(extension)) {
            continue;
        }
        let bytes = read_object(s3, bucket, &key).await?;
        let text = if key.ends_with(".gz") {
            gunzip(&bytes)
        } else if key.ends_with(".zst") {
            unzstd(&bytes)
        } else {
            String::from_utf8(bytes.to_vec()).context("not UTF-8 text")
        }
        .with_context(|| format!("s3://{bucket}/{key}"))?;
        anyhow::ensure!(
            text.is_empty() || text.ends_with('\n'),
            "s3://{bucket}/{key}: the last line has no final newline"
        );
        files.push(StoredFile {
            key,
            size: bytes.len(),
            lines: text.lines().map(str::to_owned).collect(),
        });
    }
    Ok(files)
}

/// Decompresses gzip bytes (all members) into UTF-8 text.
pub fn gunzip(bytes: &[u8]) -> Result<String> {
    let mut text = String::new();
    MultiGzDecoder::new(bytes)
        .read_to_string(&mut text)
        .context("not valid gzip of UTF-8 text")?;
    Ok(text)
}

/// Decompresses zstd bytes (all frames) into UTF-8 text.
pub fn unzstd(bytes: &[u8]) -> Result<String> {
    let mut text = String::new();
    zstd::Decoder::new(bytes)
        .context("not valid zstd")?
        .read_to_string(&mut text)
        .context("not valid zstd of UTF-8 text")?;
    Ok(text)
}
