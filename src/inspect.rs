//! Reading back what the pipeline stored: every gzip NDJSON object under a
//! prefix, decompressed line by line, independently of the code that wrote
//! it; and `staging/` in both of its formats (staged objects and the older
//! chunks), per object and per partition, an unreadable object reported
//! with its error beside the others.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use anyhow::{Context, Result};
use flate2::read::MultiGzDecoder;
use serde::Serialize;
use shared::layout;
use shared::partition::{Hour, PartitionKey};
use shared::staged;

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

/// Every committed archive part under `manifests/<under>` (`under` is
/// `""`, `<stream>/` or `<stream>/<tenant>/`), read where its manifest says
/// it is (its own object, or a range of a bundle), each named by its
/// partition and number (`layout::archive_part_key`) wherever it is
/// stored. Objects no manifest names (a bundle of a run that stopped
/// before its commits) are not read: they are not the archive.
pub async fn read_archive(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    under: &str,
) -> Result<Vec<StoredFile>> {
    let mut files = Vec::new();
    for (name, bytes) in archive_parts(s3, bucket, under).await? {
        let text = gunzip(&bytes).with_context(|| format!("s3://{bucket}/{name}"))?;
        files.push(StoredFile {
            key: name,
            size: bytes.len(),
            lines: text.lines().map(str::to_owned).collect(),
        });
    }
    Ok(files)
}

/// The compressed bytes of every committed archive part under
/// `manifests/<under>`, by the part's name (see [`read_archive`]).
pub async fn archive_parts(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    under: &str,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut parts = BTreeMap::new();
    let prefix = format!("{}{under}", layout::MANIFESTS_PREFIX);
    for key in list_keys(s3, bucket, &prefix).await? {
        let Some(partition) = layout::parse_manifest_key(&key) else {
            continue;
        };
        let manifest: shared::manifest::Manifest =
            serde_json::from_slice(&read_object(s3, bucket, &key).await?)
                .with_context(|| format!("s3://{bucket}/{key} is not a manifest"))?;
        for part in &manifest.parts {
            let range = part.offset.map(|offset| offset..offset + part.bytes);
            let bytes = flusher::store::get_bytes(s3, bucket, &part.key, range)
                .await?
                .with_context(|| format!("s3://{bucket}/{} is missing", part.key))?;
            anyhow::ensure!(
                part.holds(&bytes),
                "archive part {} at s3://{bucket}/{}{} is not what s3://{bucket}/{key} committed (its length or SHA-256 differs)",
                part.number,
                part.key,
                part.offset
                    .map(|offset| format!(" (bytes {offset}..{})", offset + part.bytes))
                    .unwrap_or_default(),
            );
            parts.insert(layout::archive_part_key(&partition, part.number), bytes);
        }
    }
    Ok(parts)
}

/// Which staging format an object under `staging/` is in, from its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StagingFormat {
    /// A staged object (`.staged`, see `shared::staged`): every partition
    /// one invocation staged for one hour, one segment per partition and
    /// shard.
    Staged,
    /// A staged chunk of the format before staged objects (gzip NDJSON, one
    /// partition, `staging/<date>/<HH>/<stream>/<tenant>/….ndjson.gz`).
    Chunk,
    /// A key of neither layout: the flusher does not read it.
    Other,
}

/// One partition's staged lines from one object under `staging/`: a whole
/// chunk, or one segment of a staged object.
#[derive(Debug, Clone)]
pub struct StagedSource {
    /// The key of the object the lines are in.
    pub key: String,
    /// The partition: the hour from a staged object's index (or a chunk's
    /// key), the stream and tenant from the segment (or the chunk's key).
    pub partition: PartitionKey,
    /// The segment's shard and its partition's shard count; `None` for a
    /// chunk (chunks predate shards).
    pub shard: Option<(u32, u32)>,
    /// Compressed bytes: the segment's length, or the chunk's size.
    pub compressed_bytes: u64,
    /// The staged lines as stored: `<event>\t<provenance>` (see
    /// `shared::provenance`).
    pub lines: Vec<String>,
}

/// One object under `staging/`, read back whole.
#[derive(Debug, Clone)]
pub struct StagingObject {
    pub key: String,
    /// The object's size in bytes.
    pub size: u64,
    pub format: StagingFormat,
    /// What it holds: one source for a chunk, one per segment (in index
    /// order) for a staged object; empty when `error` is set.
    pub sources: Vec<StagedSource>,
    /// Why it cannot be read (not prefixed with its key): nothing of it is
    /// in `sources`.
    pub error: Option<String>,
}

impl StagingObject {
    /// Reads an object of `staging/` from its key and bytes: a staged
    /// object through its index (every segment decoded and checked against
    /// it, so a damaged one is an error here, as it is for the flusher), a
    /// chunk by gunzipping it.
    pub fn read(key: &str, bytes: &[u8]) -> Self {
        if let Some((hour, ..)) = layout::parse_staged_object_key(key) {
            let read = staged_sources(key, bytes, Some(hour));
            return Self::with(key, bytes, StagingFormat::Staged, read);
        }
        let (format, read) = match layout::parse_staging_chunk_key(key) {
            Some(partition) => (StagingFormat::Chunk, chunk_source(key, partition, bytes)),
            None => (
                StagingFormat::Other,
                Err(
                    "neither a staged object (`<ms>-<request>.staged`) nor a staged chunk \
                     (`<stream>/<tenant>/….ndjson.gz`): the flusher does not read it"
                        .to_owned(),
                ),
            ),
        };
        Self::with(key, bytes, format, read)
    }

    /// Reads `bytes` as a staged object whatever `key` is (a downloaded
    /// object's file name, say): every segment decoded and checked against
    /// the index, the hour taken from the index.
    pub fn read_staged(key: &str, bytes: &[u8]) -> Self {
        let read = staged_sources(key, bytes, None);
        Self::with(key, bytes, StagingFormat::Staged, read)
    }

    fn with(
        key: &str,
        bytes: &[u8],
        format: StagingFormat,
        read: Result<Vec<StagedSource>, String>,
    ) -> Self {
        let (sources, error) = match read {
            Ok(sources) => (sources, None),
            Err(error) => (Vec::new(), Some(error)),
        };
        Self {
            key: key.to_owned(),
            size: bytes.len() as u64,
            format,
            sources,
            error,
        }
    }

    /// Staged lines (events) in the object.
    pub fn events(&self) -> usize {
        self.sources.iter().map(|source| source.lines.len()).sum()
    }
}

/// The sources of a staged object, its hour from its index, which must be
/// `key_hour` when its key names one (the flusher refuses it otherwise).
fn staged_sources(
    key: &str,
    bytes: &[u8],
    key_hour: Option<Hour>,
) -> Result<Vec<StagedSource>, String> {
    let index = staged::read_index(bytes).map_err(|error| error.to_string())?;
    let hour = index
        .hour()
        .ok_or_else(|| format!("its index's hour `{}` is not an hour", index.hour))?;
    if key_hour.is_some() {
        staged::check_key(&index, key_hour).map_err(|error| error.to_string())?;
    }
    let segments = staged::read_object(bytes).map_err(|error| error.to_string())?;
    Ok(segments
        .into_iter()
        .map(|(segment, lines)| StagedSource {
            key: key.to_owned(),
            partition: PartitionKey {
                hour,
                stream: segment.stream.clone(),
                tenant: segment.tenant_key(),
            },
            shard: Some((segment.shard, segment.shards)),
            compressed_bytes: segment.length,
            lines,
        })
        .collect())
}

/// The one source of an old-format chunk.
fn chunk_source(
    key: &str,
    partition: PartitionKey,
    bytes: &[u8],
) -> Result<Vec<StagedSource>, String> {
    let text = gunzip(bytes).map_err(|error| format!("{error:#}"))?;
    if !(text.is_empty() || text.ends_with('\n')) {
        return Err("the last line has no final newline".to_owned());
    }
    Ok(vec![StagedSource {
        key: key.to_owned(),
        partition,
        shard: None,
        compressed_bytes: bytes.len() as u64,
        lines: text.lines().map(str::to_owned).collect(),
    }])
}

/// Every key under `prefix`, which must be within `staging/`, in key order.
pub async fn staging_keys(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>> {
    anyhow::ensure!(
        prefix.starts_with(layout::STAGING_PREFIX),
        "the prefix `{prefix}` is not under `{}`",
        layout::STAGING_PREFIX
    );
    list_keys(s3, bucket, prefix).await
}

/// Reads every object under `prefix` (within `staging/`) in key order,
/// staged objects and chunks alike, all in memory. An object that cannot
/// be read is returned with its error, and the others are still read;
/// listing or reading failures of S3 itself fail the call.
pub async fn read_staging(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<StagingObject>> {
    let mut objects = Vec::new();
    for key in staging_keys(s3, bucket, prefix).await? {
        let bytes = read_object(s3, bucket, &key).await?;
        objects.push(StagingObject::read(&key, &bytes));
    }
    Ok(objects)
}

/// What `staging/` holds for one partition: its events, and in how many
/// staged objects and chunks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StagedPartition {
    pub events: usize,
    pub objects: usize,
    pub chunks: usize,
}

/// The staged events per partition (by hour, stream, tenant) of `objects`;
/// unreadable objects count nowhere.
pub fn staged_partitions(objects: &[StagingObject]) -> BTreeMap<PartitionKey, StagedPartition> {
    let mut partitions = BTreeMap::new();
    for object in objects {
        add_partitions(&mut partitions, object);
    }
    partitions
}

/// Adds what `object` holds to `partitions`, so that a reader can count
/// one object at a time.
pub fn add_partitions(
    partitions: &mut BTreeMap<PartitionKey, StagedPartition>,
    object: &StagingObject,
) {
    let mut seen: BTreeSet<&PartitionKey> = BTreeSet::new();
    for source in &object.sources {
        let partition = partitions.entry(source.partition.clone()).or_default();
        partition.events += source.lines.len();
        // Shards of one partition are several segments of one object.
        if seen.insert(&source.partition) {
            match object.format {
                StagingFormat::Chunk => partition.chunks += 1,
                _ => partition.objects += 1,
            }
        }
    }
}

/// Reads every staged event in `bucket`, staged objects and chunks alike,
/// per source (chunk, or segment of a staged object), each line reduced to
/// its event (the provenance the batcher appends, see `shared::provenance`,
/// is cut). Fails naming the first object that cannot be read; keys of
/// neither staging layout are skipped, as the flusher skips them.
pub async fn read_staged_events(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> Result<Vec<StagedSource>> {
    let mut sources = Vec::new();
    for object in read_staging(s3, bucket, layout::STAGING_PREFIX).await? {
        match (&object.error, object.format) {
            (_, StagingFormat::Other) => continue,
            (Some(error), _) => anyhow::bail!("s3://{bucket}/{}: {error}", object.key),
            (None, _) => sources.extend(object.sources),
        }
    }
    for source in &mut sources {
        for line in &mut source.lines {
            let (event, _) = shared::provenance::split_staged_line(line);
            *line = event.to_owned();
        }
    }
    Ok(sources)
}

/// The index of the staged object `s3://bucket/key` of `size` bytes (from
/// its listing), read as the flusher reads it (`staged::fetch_index`): one
/// ranged GET of its tail, and a second of the index when it is longer.
/// The outer error is S3's; the inner one says why the object is not a
/// readable staged object (one gone since it was listed is one).
pub async fn read_staged_index(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    size: u64,
) -> Result<Result<staged::StagedIndex, staged::StagedError>> {
    let index = staged::fetch_index(size, |range| async move {
        anyhow::Ok(flusher::store::get_bytes(s3, bucket, key, Some(range)).await?)
    })
    .await?;
    Ok(index.unwrap_or_else(|| {
        Err(staged::StagedError::IndexUnreadable(
            "the object is gone since it was listed".to_owned(),
        ))
    }))
}

/// Reads every export file under `prefix` in any destination format: gzip
/// (`.gz`), zstd (`.zst`) and plain NDJSON (`.json`, `.ndjson`); other
/// objects (`_SUCCESS`, verify objects) are skipped.
pub async fn read_export_files(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<StoredFile>> {
    read_files(s3, bucket, prefix, &EXPORT_EXTENSIONS).await
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

/// The extensions of export files in every destination format.
const EXPORT_EXTENSIONS: [&str; 4] = [".gz", ".zst", ".json", ".ndjson"];

/// Reads one export file (gzip, zstd or plain NDJSON, as
/// [`read_export_files`] does); `None` for another object (`_SUCCESS`, a
/// verify object).
pub async fn read_export_file(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<StoredFile>> {
    if !EXPORT_EXTENSIONS.iter().any(|ext| key.ends_with(ext)) {
        return Ok(None);
    }
    read_file(s3, bucket, key).await.map(Some)
}

async fn read_files(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    extensions: &[&str],
) -> Result<Vec<StoredFile>> {
    let mut files = Vec::new();
    for key in list_keys(s3, bucket, prefix).await? {
        if extensions.iter().any(|extension| key.ends_with(extension)) {
            files.push(read_file(s3, bucket, &key).await?);
        }
    }
    Ok(files)
}

/// Reads `key` and decompresses it by its extension (`.gz`, `.zst`, else
/// plain text); fails unless its last line ends with `\n`.
async fn read_file(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<StoredFile> {
    let bytes = read_object(s3, bucket, key).await?;
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
    Ok(StoredFile {
        key: key.to_owned(),
        size: bytes.len(),
        lines: text.lines().map(str::to_owned).collect(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use shared::partition::TenantKey;
    use shared::staged::StagedWriter;

    /// 2026-11-22T10:00:00Z
    const TEN: i64 = 1_795_341_600_000;

    fn staged_object(segments: &[(&str, &str, u32, u32, &[&str])]) -> Vec<u8> {
        let mut writer = StagedWriter::new(1);
        for (stream, tenant, shard, shards, lines) in segments {
            writer.begin_segment(stream, &TenantKey::encode(tenant), *shard, *shards);
            for line in *lines {
                writer.push_line_parts(&[line.as_bytes(), b"\t1795341600001\tm-1"]);
            }
        }
        writer.finish(Hour::containing(TEN))
    }

    fn partition(stream: &str, tenant: &str) -> PartitionKey {
        PartitionKey {
            hour: Hour::containing(TEN),
            stream: stream.to_owned(),
            tenant: TenantKey::encode(tenant),
        }
    }

    const OBJECT_KEY: &str = "staging/2026-11-22/10/1795341600001-req-1.staged";

    #[test]
    fn a_staged_object_is_read_segment_by_segment_with_its_partitions() {
        let bytes = staged_object(&[
            ("app", "t1", 0, 2, &[r#"{"a":1}"#, r#"{"a":2}"#]),
            ("app", "t1", 1, 2, &[r#"{"a":3}"#]),
            ("audit", "acme/eu", 0, 1, &[r#"{"b":1}"#]),
        ]);
        let object = StagingObject::read(OBJECT_KEY, &bytes);
        assert_eq!(object.error, None);
        assert_eq!(object.format, StagingFormat::Staged);
        assert_eq!(object.size, bytes.len() as u64);
        assert_eq!(object.events(), 4);
        let shards: Vec<_> = object.sources.iter().map(|s| s.shard).collect();
        assert_eq!(shards, [Some((0, 2)), Some((1, 2)), Some((0, 1))]);
        assert_eq!(object.sources[2].partition, partition("audit", "acme/eu"));
        assert_eq!(
            object.sources[0].lines,
            [
                "{\"a\":1}\t1795341600001\tm-1",
                "{\"a\":2}\t1795341600001\tm-1"
            ]
        );
        let partitions = staged_partitions(&[object]);
        assert_eq!(
            partitions[&partition("app", "t1")],
            StagedPartition {
                events: 3,
                objects: 1,
                chunks: 0
            },
            "two shards of one partition are one object"
        );
    }

    #[test]
    fn an_old_chunk_is_read_as_one_source_of_its_keys_partition() {
        let key = "staging/2026-11-22/10/app/t1/1795341600000-req-0.ndjson.gz";
        let bytes = shared::encode::stored_gzip(b"{\"a\":0}\t1795341600000\tm-0\n");
        let chunk = StagingObject::read(key, &bytes);
        assert_eq!(
            (chunk.format, chunk.error.as_deref()),
            (StagingFormat::Chunk, None)
        );
        assert_eq!(chunk.sources.len(), 1);
        assert_eq!(chunk.sources[0].shard, None);
        assert_eq!(chunk.sources[0].partition, partition("app", "t1"));
        let object = StagingObject::read(
            OBJECT_KEY,
            &staged_object(&[("app", "t1", 0, 1, &[r#"{"a":1}"#])]),
        );
        let partitions = staged_partitions(&[chunk, object]);
        assert_eq!(
            partitions[&partition("app", "t1")],
            StagedPartition {
                events: 2,
                objects: 1,
                chunks: 1
            }
        );
    }

    #[test]
    fn damaged_objects_and_foreign_keys_carry_their_error_and_no_events() {
        let bytes = staged_object(&[("app", "t1", 0, 1, &[r#"{"a":1}"#; 50])]);
        let truncated = StagingObject::read(OBJECT_KEY, &bytes[..bytes.len() - 5]);
        assert!(truncated.sources.is_empty());
        assert!(
            truncated.error.as_deref().unwrap().contains("magic"),
            "{truncated:?}"
        );
        let mut flipped = bytes.clone();
        flipped[10] ^= 0x20;
        let damaged = StagingObject::read(OBJECT_KEY, &flipped);
        assert!(damaged.sources.is_empty());
        assert!(
            damaged
                .error
                .as_deref()
                .unwrap()
                .starts_with("segment app/t1 shard 0 cannot be decoded"),
            "{damaged:?}"
        );
        let not_gzip = StagingObject::read(
            "staging/2026-11-22/10/app/t1/1795341600000-req-0.ndjson.gz",
            b"plain",
        );
        assert!(not_gzip.error.as_deref().unwrap().contains("gzip"));
        let elsewhere =
            StagingObject::read("staging/2026-11-22/11/1795341600001-req-1.staged", &bytes);
        assert_eq!(
            elsewhere.error.as_deref(),
            Some("its index is of hour `2026-11-22/10`, its key of another")
        );
        assert_eq!(
            StagingObject::read_staged("download.staged", &bytes).events(),
            50,
            "a file's hour is its index's"
        );
        let foreign = StagingObject::read("staging/notes.txt", b"hello");
        assert_eq!(foreign.format, StagingFormat::Other);
        assert!(
            foreign
                .error
                .as_deref()
                .unwrap()
                .contains("the flusher does not read it")
        );
        assert!(staged_partitions(&[truncated, damaged, elsewhere, not_gzip, foreign]).is_empty());
    }
}
