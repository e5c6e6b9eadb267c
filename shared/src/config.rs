//! Configuration: the export bucket, the streams and their profiles, which
//! queue feeds which stream, which senders may send for which tenants, and
//! the destinations.
//!
//! Read once at cold start from environment variables and, optionally, a JSON
//! document given inline (`EXPORT_CONFIG='{...}'`) or as an `s3://bucket/key`
//! URI. Environment variables override the document's top-level settings; an
//! empty variable counts as unset (CloudFormation passes `""` for an unset
//! parameter). Everything is validated before the first event, and an error
//! names the bad field: the document's JSON path, or the variable's name.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use crate::export_options::{ContentDocument, ContentOptions};
use crate::interval::Interval;
use crate::key_layout::KeyLayout;
use crate::layout;
use crate::partition::TenantKey;
use crate::profile::{self, FieldPath, Profile};
use crate::senders::SenderTenants;

/// Environment variables, in one place (the README's reference lists them).
pub mod env {
    pub const EXPORT_BUCKET: &str = "EXPORT_BUCKET";
    pub const EXPORT_CONFIG: &str = "EXPORT_CONFIG";
    pub const DEFAULT_STREAM: &str = "DEFAULT_STREAM";
    pub const PARTITION_BY: &str = "PARTITION_BY";
    pub const MAX_EVENT_BYTES: &str = "MAX_EVENT_BYTES";
    /// Read for compatibility only: staging is zstd now.
    pub const STAGING_GZIP_LEVEL: &str = "STAGING_GZIP_LEVEL";
    pub const STAGING_ZSTD_LEVEL: &str = "STAGING_ZSTD_LEVEL";
    /// The most a compressed message body may decompress to.
    pub const MAX_DECOMPRESSED_BODY_BYTES: &str = "MAX_DECOMPRESSED_BODY_BYTES";
    /// Accepted event bytes the batcher gathers before it stores them.
    pub const SUB_BATCH_BYTES: &str = "SUB_BATCH_BYTES";
    pub const PUT_CONCURRENCY: &str = "PUT_CONCURRENCY";
    pub const QUEUE_STREAMS: &str = "QUEUE_STREAMS";
    /// The document's `senders` as comma-separated `sender=tenant` pairs
    /// (see [`crate::senders::SenderTenants::parse_pairs`]); set it or the
    /// document's `senders`, not both.
    pub const SENDER_TENANTS: &str = "SENDER_TENANTS";
    pub const FLUSH_GRACE_MINUTES: &str = "FLUSH_GRACE_MINUTES";
    /// The coordinator's schedule expression (the template's
    /// `FlushSchedule`): no destination may want files more often.
    pub const FLUSH_SCHEDULE: &str = "FLUSH_SCHEDULE";
    /// The batcher's event source mapping's batching window, in seconds
    /// (the template's `MaximumBatchingWindowInSeconds`): the flush grace
    /// must exceed it, or an hour closes while its last batch still waits.
    pub const BATCHING_WINDOW_SECONDS: &str = "BATCHING_WINDOW_SECONDS";
    pub const ARCHIVE_GZIP_LEVEL: &str = "ARCHIVE_GZIP_LEVEL";
    pub const ARCHIVE_PART_MAX_BYTES: &str = "ARCHIVE_PART_MAX_BYTES";
    pub const FLUSH_CONCURRENCY: &str = "FLUSH_CONCURRENCY";
    /// Ranged GETs of staged objects a flush spools at once.
    pub const READ_CONCURRENCY: &str = "READ_CONCURRENCY";
    /// The most compressed staged bytes the flusher spools to disk at once
    /// (one window of partitions, see the flusher's `staged_read`).
    pub const SPOOL_BYTES: &str = "SPOOL_BYTES";
    /// The most compressed staged bytes in one work item the coordinator
    /// sends a flush worker (see the flusher's `work_item`).
    pub const WORK_ITEM_BYTES: &str = "WORK_ITEM_BYTES";
    /// The flush queue's URL: when set, scheduled runs coordinate (send
    /// work items to it) instead of flushing in their own invocation.
    pub const FLUSH_QUEUE_URL: &str = "FLUSH_QUEUE_URL";
    /// Where the flusher spools staged bytes (default: the system's
    /// temporary directory, Lambda's ephemeral storage `/tmp`).
    pub const SPOOL_DIR: &str = "SPOOL_DIR";
    /// Days the archive and its manifests are kept (the export bucket's
    /// lifecycle, the template's `ArchiveRetentionDays`); 0: forever.
    pub const ARCHIVE_RETENTION_DAYS: &str = "ARCHIVE_RETENTION_DAYS";
    /// The single-destination case (template parameters): a destination
    /// named `DESTINATION_NAME` (default `default`) from these variables,
    /// added to the document's destinations when `DESTINATION_BUCKET` is set.
    pub const DESTINATION_BUCKET: &str = "DESTINATION_BUCKET";
    pub const DESTINATION_NAME: &str = "DESTINATION_NAME";
    pub const DESTINATION_PREFIX: &str = "DESTINATION_PREFIX";
    pub const DESTINATION_REGION: &str = "DESTINATION_REGION";
    pub const DESTINATION_LAYOUT: &str = "DESTINATION_LAYOUT";
    pub const DESTINATION_ACCOUNT_ID: &str = "DESTINATION_ACCOUNT_ID";
    pub const DESTINATION_ENCRYPTION: &str = "DESTINATION_ENCRYPTION";
    pub const DESTINATION_KMS_KEY_ID: &str = "DESTINATION_KMS_KEY_ID";
    /// The single destination's cross-account role and its external id.
    pub const DESTINATION_ROLE_ARN: &str = "DESTINATION_ROLE_ARN";
    pub const DESTINATION_EXTERNAL_ID: &str = "DESTINATION_EXTERNAL_ID";
    /// The single destination's `format` (`gzip`, `ndjson`, `zstd`).
    pub const DESTINATION_FORMAT: &str = "DESTINATION_FORMAT";
    /// The single destination's `storageClass` (an S3 storage class).
    pub const DESTINATION_STORAGE_CLASS: &str = "DESTINATION_STORAGE_CLASS";
    /// The single destination's `compressionLevel` (a whole number).
    pub const DESTINATION_COMPRESSION_LEVEL: &str = "DESTINATION_COMPRESSION_LEVEL";
    /// The single destination's `includeMetadata` and `successMarker`
    /// (`true` or `false`).
    pub const DESTINATION_INCLUDE_METADATA: &str = "DESTINATION_INCLUDE_METADATA";
    pub const DESTINATION_SUCCESS_MARKER: &str = "DESTINATION_SUCCESS_MARKER";
    pub const DESTINATION_INTERVAL: &str = "DESTINATION_INTERVAL";
    /// The single destination's `includeEventTypes`, `excludeEventTypes` and
    /// `omitFields`, comma-separated.
    pub const DESTINATION_INCLUDE_EVENT_TYPES: &str = "DESTINATION_INCLUDE_EVENT_TYPES";
    pub const DESTINATION_EXCLUDE_EVENT_TYPES: &str = "DESTINATION_EXCLUDE_EVENT_TYPES";
    pub const DESTINATION_OMIT_FIELDS: &str = "DESTINATION_OMIT_FIELDS";
    /// The single destination's `tags`, as `key=value,key=value`.
    pub const DESTINATION_TAGS: &str = "DESTINATION_TAGS";
    /// SNS topic for destination alerts (verify and flusher); unset: none.
    pub const ALERT_TOPIC_ARN: &str = "ALERT_TOPIC_ARN";
    /// The deployment named in verify objects and alerts; default: the
    /// Lambda function name.
    pub const DEPLOYMENT_NAME: &str = "DEPLOYMENT_NAME";
    /// The role that writes to destinations, the principal of generated
    /// bucket policies; default: discovered with STS GetCallerIdentity.
    pub const FUNCTION_ROLE_ARN: &str = "FUNCTION_ROLE_ARN";
}

/// Defaults, in one place.
pub mod defaults {
    pub const DEFAULT_STREAM: &str = crate::profile::AIRKIT_APP_EVENTS;
    /// SQS's own message size limit.
    pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
    /// What `stagingGzipLevel` was (old documents and stacks still set it;
    /// nothing stages gzip any more).
    pub const STAGING_GZIP_LEVEL: u32 = 1;
    /// Staged objects live an hour: spend compression effort in the flusher.
    pub const STAGING_ZSTD_LEVEL: i32 = crate::staged::DEFAULT_STAGING_ZSTD_LEVEL;
    /// A partition's shards unless its stream or tenant says otherwise: one
    /// de-duplication domain, and no hashing while planning.
    pub const SHARDS: u32 = 1;
    /// A 256 KiB gzip body of JSON events decompresses to about 1.3 MB; 16
    /// MiB leaves room for very repetitive events while bounding what a
    /// decompression bomb can make the batcher hold.
    pub const MAX_DECOMPRESSED_BODY_BYTES: usize = 16 * 1024 * 1024;
    /// What the batcher holds of accepted events before it stores them: well
    /// under its 512 MB, beside one decoded body (at most
    /// MAX_DECOMPRESSED_BODY_BYTES) and the compressed chunks in flight, and
    /// more than most batches hold, so most invocations store once.
    pub const SUB_BATCH_BYTES: usize = 64 * 1024 * 1024;
    pub const PUT_CONCURRENCY: usize = 16;
    /// Hour H closes at H+1h plus this: more than the batching window and
    /// the usual queue delay (docs/design.md, Timing).
    pub const FLUSH_GRACE_MINUTES: usize = 10;
    /// Archive parts are what users keep: compress them well.
    pub const ARCHIVE_GZIP_LEVEL: u32 = 6;
    pub const ARCHIVE_PART_MAX_BYTES: usize = 128 * 1024 * 1024;
    pub const FLUSH_CONCURRENCY: usize = 4;
    /// A work item reads a range of every staged object of its hour: with
    /// S3's first-byte latency (about 100 ms) a GET at a time is what
    /// limits a worker, not its bytes (docs/benchmarks.md, the scale-out
    /// simulation). Each GET streams to the spool file, so memory does not
    /// grow with it.
    pub const READ_CONCURRENCY: usize = 32;
    /// Under the flusher's 2048 MB of ephemeral storage (the template's
    /// `EphemeralStorage`), with room for the range around a window's
    /// segments; a typical hour's staged objects fit, so each is read with
    /// one GET of its tail and one of its data.
    pub const SPOOL_BYTES: usize = 1536 * 1024 * 1024;
    /// A work item's staged bytes: one to two minutes of one worker's
    /// compaction at the benchmark's rates, within the template's spool.
    /// An item reads a range of every staged object its partitions are in,
    /// so fewer, larger items make fewer GETs: what bounds a flush at
    /// scale (docs/benchmarks.md, the scale-out simulation).
    pub const WORK_ITEM_BYTES: usize = 1024 * 1024 * 1024;
    /// The archive is kept forever unless the lifecycle says otherwise.
    pub const ARCHIVE_RETENTION_DAYS: usize = 0;
    /// The Amplitude-style key layout.
    pub const LAYOUT: &str = "amplitude";
}

/// The largest event size that can be configured: Lambda's payload limit.
pub const MAX_EVENT_BYTES_LIMIT: usize = 6 * 1024 * 1024;

/// The largest decompressed body size that can be configured.
pub const MAX_DECOMPRESSED_BODY_BYTES_LIMIT: usize = 256 * 1024 * 1024;

/// The largest sub-batch that can be configured: it is held in memory.
pub const SUB_BATCH_BYTES_LIMIT: usize = 256 * 1024 * 1024;

/// The staging zstd levels that can be configured: 1 (fast, the default)
/// to 19 (small and slow); negative and 20+ levels are not offered.
pub const STAGING_ZSTD_LEVELS: std::ops::RangeInclusive<usize> = 1..=19;

/// A configuration error naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{field}`: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Which time decides an event's hour partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionBy {
    /// When SQS received the message (`SentTimestamp`): late events never
    /// reopen a closed hour. The default.
    Ingest,
    /// The event's own time field.
    Event,
}

/// A destination bucket that receives exports (published by the flusher).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub name: String,
    pub bucket: String,
    pub region: Option<String>,
    pub prefix: String,
    /// `None` selects every tenant.
    pub tenants: Option<Vec<String>>,
    /// `None` selects every stream.
    pub streams: Option<Vec<String>>,
    /// Whether several tenants may share this bucket and prefix on purpose.
    pub shared: bool,
    pub enabled: bool,
    /// Server-side encryption requested on every object written.
    pub encryption: Encryption,
    /// Where each export file goes under `prefix`.
    pub layout: KeyLayout,
    /// Write `_SUCCESS` in an hour's folder once all its parts are there.
    pub success_marker: bool,
    /// How often it receives files (`hourly`, or every few minutes).
    pub interval: Interval,
    /// The bucket owner's account id: when set, every write carries
    /// `ExpectedBucketOwner`, so a bucket that changed hands is refused.
    pub account_id: Option<String>,
    /// The role to write with (cross-account), assumed through STS; `None`:
    /// the function's own role writes.
    pub role_arn: Option<String>,
    /// The external id given when assuming `role_arn`.
    pub external_id: Option<String>,
    /// Format, compression, event and field selection, metadata, storage
    /// class and tags of the export files.
    pub content: ContentOptions,
}

impl Destination {
    /// Whether the destination's `tenants` and `streams` select events of
    /// `stream` and `tenant` (the tenant's key segment, as in partition
    /// keys). Says nothing of `enabled`. Every write to a destination is
    /// checked against this at the moment of writing (docs/design.md, invariant 9).
    pub fn selects(&self, stream: &str, tenant: &TenantKey) -> bool {
        self.selects_tenant(tenant) && self.selects_stream(stream)
    }

    fn selects_tenant(&self, tenant: &TenantKey) -> bool {
        self.tenants
            .as_ref()
            .is_none_or(|tenants| tenants.iter().any(|t| TenantKey::encode(t) == *tenant))
    }

    fn selects_stream(&self, stream: &str) -> bool {
        self.streams
            .as_ref()
            .is_none_or(|streams| streams.iter().any(|s| s == stream))
    }
}

/// Server-side encryption for objects written to a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// No header: the bucket's default encryption applies.
    BucketDefault,
    /// `x-amz-server-side-encryption: AES256` (SSE-S3).
    Aes256,
    /// `aws:kms` with a key id or ARN (the account's default key when
    /// `None`), and S3 Bucket Keys on or off.
    Kms {
        key_id: Option<String>,
        bucket_key: bool,
    },
}

/// The validated configuration every function runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub export_bucket: String,
    pub default_stream: String,
    pub partition_by: PartitionBy,
    pub max_event_bytes: usize,
    /// The zstd level of staged objects' segments (`stagingZstdLevel` /
    /// `STAGING_ZSTD_LEVEL`, 1..=19, default 1).
    pub staging_zstd_level: i32,
    /// A compressed message body (`content-encoding` attribute) that
    /// decompresses to more than this is refused `too_large`.
    pub max_decompressed_body_bytes: usize,
    /// The batcher stores what it has accepted (one sub-batch of chunks)
    /// each time the accepted events it holds reach this many bytes, so its
    /// memory does not grow with the batch.
    pub sub_batch_bytes: usize,
    pub put_concurrency: usize,
    /// Minutes after an hour's end before the flusher closes it.
    pub flush_grace_minutes: usize,
    pub archive_gzip_level: u32,
    /// An archive part rolls over to the next at this compressed size.
    pub archive_part_max_bytes: usize,
    /// Partitions flushed at once.
    pub flush_concurrency: usize,
    /// Ranged GETs of staged objects a flush spools at once.
    pub read_concurrency: usize,
    /// The compressed staged bytes one window of partitions spools to disk
    /// (a single larger partition is a window of its own).
    pub spool_bytes: usize,
    /// The compressed staged bytes of one work item, at most (a single
    /// larger partition is an item of its own).
    pub work_item_bytes: usize,
    /// Where spool files go.
    pub spool_dir: std::path::PathBuf,
    /// Days the archive is kept (0: forever): a backfill cannot reach
    /// hours older than this.
    pub archive_retention_days: usize,
    /// Queue name → stream, for records without a `stream` attribute.
    pub queues: HashMap<String, String>,
    /// Stream name → profile; always holds the built-in streams.
    pub streams: HashMap<String, Profile>,
    /// Stream name → how its partitions are sharded, for the streams whose
    /// document sets `shards` or `tenantShards`; read through
    /// [`Config::shards_for`], which alone decides a partition's count.
    shards: HashMap<String, StreamShards>,
    /// Which senders may send events for which tenants; `None` (the
    /// default): any sender, any tenant.
    pub senders: Option<SenderTenants>,
    pub destinations: Vec<Destination>,
    /// Which destinations select which tenant, built at validation so that
    /// [`Config::destinations_for`] does not scan every destination.
    destination_index: DestinationIndex,
}

/// How many shards (independent de-duplication domains, see
/// `staged::shard_of`) the partitions of one stream are cut into.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StreamShards {
    /// Every tenant's shard count, unless `tenants` overrides it.
    shards: u32,
    /// Tenant key segment (`TenantKey::encode` of the tenant id) → its own
    /// shard count.
    tenants: HashMap<String, u32>,
}

/// The enabled destinations by tenant key (in configuration order), and
/// those that select every tenant.
#[derive(Debug, Clone, Default)]
struct DestinationIndex {
    /// `destinations.len()` when built: a changed list is scanned instead.
    count: usize,
    all_tenants: Vec<usize>,
    by_tenant: HashMap<String, Vec<usize>>,
}

impl DestinationIndex {
    fn build(destinations: &[Destination]) -> Self {
        let mut index = Self {
            count: destinations.len(),
            ..Self::default()
        };
        for (position, destination) in destinations.iter().enumerate() {
            if !destination.enabled {
                continue;
            }
            match &destination.tenants {
                None => index.all_tenants.push(position),
                Some(tenants) => {
                    for tenant in tenants {
                        let entry = index
                            .by_tenant
                            .entry(TenantKey::encode(tenant).as_str().to_owned())
                            .or_default();
                        if entry.last() != Some(&position) {
                            entry.push(position);
                        }
                    }
                }
            }
        }
        index
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document {
    export_bucket: Option<String>,
    default_stream: Option<String>,
    partition_by: Option<PartitionBy>,
    max_event_bytes: Option<usize>,
    staging_gzip_level: Option<u32>,
    staging_zstd_level: Option<u32>,
    max_decompressed_body_bytes: Option<usize>,
    sub_batch_bytes: Option<usize>,
    put_concurrency: Option<usize>,
    flush_grace_minutes: Option<usize>,
    archive_gzip_level: Option<u32>,
    archive_part_max_bytes: Option<usize>,
    flush_concurrency: Option<usize>,
    read_concurrency: Option<usize>,
    spool_bytes: Option<usize>,
    work_item_bytes: Option<usize>,
    archive_retention_days: Option<usize>,
    #[serde(default)]
    queues: BTreeMap<String, String>,
    #[serde(default)]
    streams: BTreeMap<String, StreamDocument>,
    /// Sender key → the tenants it may send for (see [`crate::senders`]).
    senders: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    destinations: Vec<DestinationDocument>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StreamDocument {
    profile: String,
    tenant: Option<String>,
    time: Option<String>,
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// The stream's shard count (a power of two, 1..=`staged::MAX_SHARDS`).
    shards: Option<u32>,
    /// Tenant id → its own shard count, overriding `shards`.
    tenant_shards: Option<BTreeMap<String, u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DestinationDocument {
    name: String,
    bucket: String,
    region: Option<String>,
    #[serde(default)]
    prefix: String,
    tenants: Option<Vec<String>>,
    streams: Option<Vec<String>>,
    #[serde(default)]
    shared: bool,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    encryption: Option<String>,
    kms_key_id: Option<String>,
    bucket_key_enabled: Option<bool>,
    layout: Option<String>,
    #[serde(default)]
    success_marker: bool,
    interval: Option<serde_json::Value>,
    account_id: Option<String>,
    role_arn: Option<String>,
    external_id: Option<String>,
    format: Option<String>,
    compression_level: Option<u32>,
    include_event_types: Option<Vec<String>>,
    exclude_event_types: Option<Vec<String>>,
    omit_fields: Option<Vec<String>>,
    #[serde(default)]
    include_metadata: bool,
    storage_class: Option<String>,
    tags: Option<BTreeMap<String, String>>,
}

/// The destination the `DESTINATION_*` variables describe, if any. A
/// variable that does not parse is an error naming it; the values are
/// validated with the document's destinations.
fn destination_from_env(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Option<DestinationDocument>, ConfigError> {
    let Some(bucket) = lookup(env::DESTINATION_BUCKET) else {
        return Ok(None);
    };
    let flag = |variable: &str| -> Result<bool, ConfigError> {
        match lookup(variable).as_deref().map(str::trim) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ConfigError::new(
                variable,
                format!("`{other}` is neither `true` nor `false`"),
            )),
        }
    };
    let list = |variable: &str| -> Option<Vec<String>> {
        lookup(variable).map(|text| {
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()
        })
    };
    let compression_level = match lookup(env::DESTINATION_COMPRESSION_LEVEL) {
        None => None,
        Some(text) => Some(text.trim().parse::<u32>().map_err(|_| {
            ConfigError::new(
                env::DESTINATION_COMPRESSION_LEVEL,
                format!("`{text}` is not a whole number"),
            )
        })?),
    };
    let tags = match lookup(env::DESTINATION_TAGS) {
        None => None,
        Some(text) => {
            let mut tags = BTreeMap::new();
            for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let Some((key, value)) = pair.split_once('=') else {
                    return Err(ConfigError::new(
                        env::DESTINATION_TAGS,
                        format!("`{pair}` is not `key=value`"),
                    ));
                };
                tags.insert(key.trim().to_owned(), value.trim().to_owned());
            }
            Some(tags)
        }
    };
    Ok(Some(DestinationDocument {
        name: lookup(env::DESTINATION_NAME).unwrap_or_else(|| "default".to_owned()),
        bucket,
        region: lookup(env::DESTINATION_REGION),
        prefix: lookup(env::DESTINATION_PREFIX).unwrap_or_default(),
        tenants: None,
        streams: None,
        shared: false,
        enabled: true,
        encryption: lookup(env::DESTINATION_ENCRYPTION),
        kms_key_id: lookup(env::DESTINATION_KMS_KEY_ID),
        bucket_key_enabled: None,
        layout: lookup(env::DESTINATION_LAYOUT),
        success_marker: flag(env::DESTINATION_SUCCESS_MARKER)?,
        interval: lookup(env::DESTINATION_INTERVAL).map(serde_json::Value::String),
        account_id: lookup(env::DESTINATION_ACCOUNT_ID),
        role_arn: lookup(env::DESTINATION_ROLE_ARN),
        external_id: lookup(env::DESTINATION_EXTERNAL_ID),
        format: lookup(env::DESTINATION_FORMAT),
        compression_level,
        include_event_types: list(env::DESTINATION_INCLUDE_EVENT_TYPES),
        exclude_event_types: list(env::DESTINATION_EXCLUDE_EVENT_TYPES),
        omit_fields: list(env::DESTINATION_OMIT_FIELDS),
        include_metadata: flag(env::DESTINATION_INCLUDE_METADATA)?,
        storage_class: lookup(env::DESTINATION_STORAGE_CLASS),
        tags,
    }))
}

/// The variable behind a field of the environment's destination.
fn destination_variable(field: &str) -> &'static str {
    match field {
        "name" => env::DESTINATION_NAME,
        "region" => env::DESTINATION_REGION,
        "prefix" => env::DESTINATION_PREFIX,
        "encryption" => env::DESTINATION_ENCRYPTION,
        "kmsKeyId" => env::DESTINATION_KMS_KEY_ID,
        "layout" => env::DESTINATION_LAYOUT,
        "accountId" => env::DESTINATION_ACCOUNT_ID,
        "roleArn" => env::DESTINATION_ROLE_ARN,
        "externalId" => env::DESTINATION_EXTERNAL_ID,
        "format" => env::DESTINATION_FORMAT,
        "storageClass" => env::DESTINATION_STORAGE_CLASS,
        "compressionLevel" => env::DESTINATION_COMPRESSION_LEVEL,
        "includeEventTypes" => env::DESTINATION_INCLUDE_EVENT_TYPES,
        "excludeEventTypes" => env::DESTINATION_EXCLUDE_EVENT_TYPES,
        "omitFields" => env::DESTINATION_OMIT_FIELDS,
        "successMarker" => env::DESTINATION_SUCCESS_MARKER,
        "interval" => env::DESTINATION_INTERVAL,
        "tags" => env::DESTINATION_TAGS,
        _ => env::DESTINATION_BUCKET,
    }
}

fn enabled_by_default() -> bool {
    true
}

impl Config {
    /// Builds and validates the configuration from environment variables
    /// (looked up through `lookup`) and an optional JSON document's text.
    pub fn from_sources(
        lookup: impl Fn(&str) -> Option<String>,
        document: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let lookup = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let document: Document = match document {
            Some(text) => parse_document(text)?,
            None => Document::default(),
        };

        let export_bucket = lookup(env::EXPORT_BUCKET)
            .map(|bucket| (env::EXPORT_BUCKET, bucket))
            .or(document.export_bucket.map(|bucket| ("exportBucket", bucket)))
            .ok_or_else(|| {
                ConfigError::new(
                    env::EXPORT_BUCKET,
                    "the export bucket is required (set EXPORT_BUCKET or `exportBucket` in EXPORT_CONFIG)",
                )
            })?;
        check_bucket_name(export_bucket.0, &export_bucket.1)?;

        let mut streams = HashMap::from([
            (
                profile::AIRKIT_APP_EVENTS.to_owned(),
                Profile::airkit_app_events(),
            ),
            (
                profile::AIRKIT_AUDIT_LOGS.to_owned(),
                Profile::airkit_audit_logs(),
            ),
        ]);
        let mut shards = HashMap::new();
        for (name, stream) in &document.streams {
            let field = format!("streams.{name}");
            check_stream_name(&field, name)?;
            streams.insert(name.clone(), build_profile(&field, stream)?);
            if let Some(stream_shards) = build_shards(&field, name, stream)? {
                shards.insert(name.clone(), stream_shards);
            }
        }

        let default_stream = match lookup(env::DEFAULT_STREAM) {
            Some(stream) => (env::DEFAULT_STREAM.to_owned(), stream),
            None => (
                "defaultStream".to_owned(),
                document
                    .default_stream
                    .unwrap_or_else(|| defaults::DEFAULT_STREAM.to_owned()),
            ),
        };
        check_known_stream(&streams, &default_stream.0, &default_stream.1)?;

        let partition_by = match lookup(env::PARTITION_BY) {
            Some(value) => match value.as_str() {
                "ingest" => PartitionBy::Ingest,
                "event" => PartitionBy::Event,
                other => {
                    return Err(ConfigError::new(
                        env::PARTITION_BY,
                        format!("`{other}` is not `ingest` or `event`"),
                    ));
                }
            },
            None => document.partition_by.unwrap_or(PartitionBy::Ingest),
        };

        let max_event_bytes = number_setting(
            &lookup,
            env::MAX_EVENT_BYTES,
            "maxEventBytes",
            document.max_event_bytes,
            defaults::MAX_EVENT_BYTES,
            1..=MAX_EVENT_BYTES_LIMIT,
        )?;
        // `stagingGzipLevel` / `STAGING_GZIP_LEVEL` are still checked (0..=9)
        // so that old documents and stacks load as before, and otherwise
        // ignored: staged objects are zstd at `staging_zstd_level`.
        number_setting(
            &lookup,
            env::STAGING_GZIP_LEVEL,
            "stagingGzipLevel",
            document.staging_gzip_level.map(|level| level as usize),
            defaults::STAGING_GZIP_LEVEL as usize,
            0..=9,
        )?;
        let staging_zstd_level = number_setting(
            &lookup,
            env::STAGING_ZSTD_LEVEL,
            "stagingZstdLevel",
            document.staging_zstd_level.map(|level| level as usize),
            defaults::STAGING_ZSTD_LEVEL as usize,
            STAGING_ZSTD_LEVELS,
        )? as i32;
        let max_decompressed_body_bytes = number_setting(
            &lookup,
            env::MAX_DECOMPRESSED_BODY_BYTES,
            "maxDecompressedBodyBytes",
            document.max_decompressed_body_bytes,
            defaults::MAX_DECOMPRESSED_BODY_BYTES,
            1024..=MAX_DECOMPRESSED_BODY_BYTES_LIMIT,
        )?;
        let sub_batch_bytes = number_setting(
            &lookup,
            env::SUB_BATCH_BYTES,
            "subBatchBytes",
            document.sub_batch_bytes,
            defaults::SUB_BATCH_BYTES,
            1024..=SUB_BATCH_BYTES_LIMIT,
        )?;
        let put_concurrency = number_setting(
            &lookup,
            env::PUT_CONCURRENCY,
            "putConcurrency",
            document.put_concurrency,
            defaults::PUT_CONCURRENCY,
            1..=256,
        )?;

        let flush_grace_minutes = number_setting(
            &lookup,
            env::FLUSH_GRACE_MINUTES,
            "flushGraceMinutes",
            document.flush_grace_minutes,
            defaults::FLUSH_GRACE_MINUTES,
            0..=24 * 60,
        )?;
        check_grace_exceeds_batching_window(&lookup, flush_grace_minutes)?;
        let archive_gzip_level = number_setting(
            &lookup,
            env::ARCHIVE_GZIP_LEVEL,
            "archiveGzipLevel",
            document.archive_gzip_level.map(|level| level as usize),
            defaults::ARCHIVE_GZIP_LEVEL as usize,
            1..=9,
        )? as u32;
        // S3 multipart parts are at least 5 MiB; a part of the archive may be
        // smaller, but rolling below 1 MiB would only make small files.
        let archive_part_max_bytes = number_setting(
            &lookup,
            env::ARCHIVE_PART_MAX_BYTES,
            "archivePartMaxBytes",
            document.archive_part_max_bytes,
            defaults::ARCHIVE_PART_MAX_BYTES,
            1024 * 1024..=5 * 1024 * 1024 * 1024,
        )?;
        let flush_concurrency = number_setting(
            &lookup,
            env::FLUSH_CONCURRENCY,
            "flushConcurrency",
            document.flush_concurrency,
            defaults::FLUSH_CONCURRENCY,
            1..=64,
        )?;
        let read_concurrency = number_setting(
            &lookup,
            env::READ_CONCURRENCY,
            "readConcurrency",
            document.read_concurrency,
            defaults::READ_CONCURRENCY,
            1..=256,
        )?;
        // Lambda's ephemeral storage is at most 10,240 MB.
        let spool_bytes = number_setting(
            &lookup,
            env::SPOOL_BYTES,
            "spoolBytes",
            document.spool_bytes,
            defaults::SPOOL_BYTES,
            1024..=10 * 1024 * 1024 * 1024,
        )?;
        let work_item_bytes = number_setting(
            &lookup,
            env::WORK_ITEM_BYTES,
            "workItemBytes",
            document.work_item_bytes,
            defaults::WORK_ITEM_BYTES,
            1024..=10 * 1024 * 1024 * 1024,
        )?;
        let spool_dir = lookup(env::SPOOL_DIR)
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let archive_retention_days = number_setting(
            &lookup,
            env::ARCHIVE_RETENTION_DAYS,
            "archiveRetentionDays",
            document.archive_retention_days,
            defaults::ARCHIVE_RETENTION_DAYS,
            0..=36_500,
        )?;

        let mut queues = HashMap::new();
        for (queue, stream) in &document.queues {
            check_known_stream(&streams, &format!("queues.{queue}"), stream)?;
            queues.insert(queue.clone(), stream.clone());
        }
        if let Some(pairs) = lookup(env::QUEUE_STREAMS) {
            for pair in pairs.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let Some((queue, stream)) = pair.split_once('=') else {
                    return Err(ConfigError::new(
                        env::QUEUE_STREAMS,
                        format!("`{pair}` is not `queue-name=stream`"),
                    ));
                };
                check_known_stream(&streams, env::QUEUE_STREAMS, stream.trim())?;
                queues.insert(queue.trim().to_owned(), stream.trim().to_owned());
            }
        }

        let senders = match (lookup(env::SENDER_TENANTS), document.senders) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    env::SENDER_TENANTS,
                    "the configuration document sets `senders` too; map senders in one place",
                ));
            }
            (Some(pairs), None) => Some(SenderTenants::parse_pairs(env::SENDER_TENANTS, &pairs)?),
            (None, Some(lists)) => Some(SenderTenants::new("senders", lists)?),
            (None, None) => None,
        };

        let mut destination_documents = document.destinations;
        let from_environment = destination_from_env(&lookup)?;
        let environment_index = destination_documents.len();
        let has_environment_destination = from_environment.is_some();
        destination_documents.extend(from_environment);
        let schedule = match lookup(env::FLUSH_SCHEDULE) {
            Some(expression) => match crate::interval::schedule_minutes(&expression) {
                Some(minutes) => Some((expression, minutes)),
                None => {
                    return Err(ConfigError::new(
                        env::FLUSH_SCHEDULE,
                        format!(
                            "`{expression}` is not a `rate(…)` or `cron(…)` schedule expression"
                        ),
                    ));
                }
            },
            None => None,
        };
        let schedule_ref = schedule.as_ref().map(|(e, m)| (e.as_str(), *m));
        let destinations = build_destinations(
            &streams,
            &export_bucket.1,
            destination_documents,
            schedule_ref,
        )
        .map_err(|error| {
            match error
                .field
                .strip_prefix(&format!("destinations[{environment_index}]."))
            {
                Some(field) if has_environment_destination => {
                    ConfigError::new(destination_variable(field), error.message)
                }
                _ => error,
            }
        })?;

        Ok(Self {
            export_bucket: export_bucket.1,
            default_stream: default_stream.1,
            partition_by,
            max_event_bytes,
            staging_zstd_level,
            max_decompressed_body_bytes,
            sub_batch_bytes,
            put_concurrency,
            flush_grace_minutes,
            archive_gzip_level,
            archive_part_max_bytes,
            flush_concurrency,
            read_concurrency,
            spool_bytes,
            work_item_bytes,
            spool_dir,
            archive_retention_days,
            queues,
            streams,
            shards,
            senders,
            destination_index: DestinationIndex::build(&destinations),
            destinations,
        })
    }

    /// Rebuilds the tenant index behind [`Config::destinations_for`]: call it
    /// after changing `destinations` in place (until then a list of another
    /// length is scanned whole, and changes within it are not seen).
    pub fn reindex(&mut self) {
        self.destination_index = DestinationIndex::build(&self.destinations);
    }

    /// The enabled destinations that select events of `stream` and `tenant`
    /// (the tenant's key segment, as in partition keys), in configuration
    /// order. O(1) in the number of destinations: one hash lookup of the
    /// tenant in an index built at validation, merged with the destinations
    /// that select every tenant (1,000 tenants with a bucket each cost the
    /// same per partition as one).
    pub fn destinations_for<'a>(
        &'a self,
        stream: &'a str,
        tenant: &'a TenantKey,
    ) -> impl Iterator<Item = &'a Destination> + 'a {
        let index = &self.destination_index;
        let positions: Vec<usize> = if index.count == self.destinations.len() {
            let for_tenant = index
                .by_tenant
                .get(tenant.as_str())
                .map_or(&[][..], Vec::as_slice);
            merge_sorted(&index.all_tenants, for_tenant)
        } else {
            // The list changed after validation: scan it.
            (0..self.destinations.len())
                .filter(|&position| self.destinations[position].selects_tenant(tenant))
                .collect()
        };
        positions
            .into_iter()
            .filter_map(|position| self.destinations.get(position))
            .filter(move |destination| destination.enabled && destination.selects_stream(stream))
    }

    /// Whether an enabled destination of `stream` and `tenant` receives
    /// files every few minutes: then the partition's open hours are
    /// flushed as the schedule fires, not only once the hour closes.
    pub fn flushes_open_hours(&self, stream: &str, tenant: &TenantKey) -> bool {
        self.destinations_for(stream, tenant)
            .any(|destination| destination.interval.is_minutes())
    }

    /// Whether any enabled destination receives files every few minutes.
    pub fn has_frequent_destinations(&self) -> bool {
        self.destinations
            .iter()
            .any(|destination| destination.enabled && destination.interval.is_minutes())
    }

    /// True when an enabled destination adds `_export` metadata to its
    /// lines: then the flusher keeps each event's provenance (SQS message
    /// id, ingest time), which the batcher stages, beside the archive.
    pub fn records_provenance(&self) -> bool {
        self.destinations
            .iter()
            .any(|destination| destination.enabled && destination.content.include_metadata)
    }

    /// The shard count of the partition of `stream` and `tenant` (its key
    /// segment, as in partition keys): the tenant's `tenantShards` entry,
    /// else the stream's `shards`, else 1. A power of two within
    /// `1..=staged::MAX_SHARDS` (checked at validation).
    pub fn shards_for(&self, stream: &str, tenant: &TenantKey) -> u32 {
        self.shards.get(stream).map_or(defaults::SHARDS, |stream| {
            stream
                .tenants
                .get(tenant.as_str())
                .copied()
                .unwrap_or(stream.shards)
        })
    }

    /// The stream a record belongs to: its `stream` attribute, else its
    /// queue's stream, else the default. An attribute naming an unknown
    /// stream is returned as is; the caller refuses the record.
    pub fn stream_for<'a>(&'a self, attribute: Option<&'a str>, queue: Option<&str>) -> &'a str {
        attribute
            .or_else(|| queue.and_then(|queue| self.queues.get(queue).map(String::as_str)))
            .unwrap_or(&self.default_stream)
    }
}

/// Two ascending lists of positions merged into one, ascending.
fn merge_sorted(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            merged.push(a[i]);
            i += 1;
        } else {
            merged.push(b[j]);
            j += 1;
        }
    }
    merged.extend_from_slice(&a[i..]);
    merged.extend_from_slice(&b[j..]);
    merged
}

/// Splits an `s3://bucket/key` URI.
pub fn parse_s3_uri(uri: &str) -> Option<(&str, &str)> {
    let (bucket, key) = uri.strip_prefix("s3://")?.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}

fn parse_document(text: &str) -> Result<Document, ConfigError> {
    let deserializer = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." {
            env::EXPORT_CONFIG.to_owned()
        } else {
            path
        };
        ConfigError::new(field, error.into_inner().to_string())
    })
}

/// Refuses a flush grace of `grace_minutes` that does not exceed the
/// batcher's batching window (`BATCHING_WINDOW_SECONDS`, when set): a
/// record received just before an hour's end may wait that long before
/// the batcher stages it, so an hour closed sooner would publish its
/// `_SUCCESS` (and its hourly files) without it.
fn check_grace_exceeds_batching_window(
    lookup: &impl Fn(&str) -> Option<String>,
    grace_minutes: usize,
) -> Result<(), ConfigError> {
    let Some(text) = lookup(env::BATCHING_WINDOW_SECONDS) else {
        return Ok(());
    };
    let window: usize = text.trim().parse().map_err(|_| {
        ConfigError::new(
            env::BATCHING_WINDOW_SECONDS,
            format!("`{text}` is not a whole number of seconds"),
        )
    })?;
    if grace_minutes * 60 > window {
        return Ok(());
    }
    Err(ConfigError::new(
        env::FLUSH_GRACE_MINUTES,
        format!(
            "{grace_minutes} minute(s) do not exceed the batcher's batching window of {window} s ({}): an hour would close while its last batch still waits; raise the grace to at least {} minute(s)",
            env::BATCHING_WINDOW_SECONDS,
            window / 60 + 1
        ),
    ))
}

fn number_setting(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &str,
    field: &str,
    from_document: Option<usize>,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    let (name, value) = match lookup(variable) {
        Some(text) => (
            variable,
            text.trim().parse::<usize>().map_err(|_| {
                ConfigError::new(variable, format!("`{text}` is not a whole number"))
            })?,
        ),
        None => (field, from_document.unwrap_or(default)),
    };
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            name,
            format!("{value} is outside {}..={}", range.start(), range.end()),
        ))
    }
}

fn build_profile(field: &str, stream: &StreamDocument) -> Result<Profile, ConfigError> {
    let pointer = |name: &str, value: &Option<String>| -> Result<Option<FieldPath>, ConfigError> {
        value
            .as_deref()
            .map(|text| {
                FieldPath::parse(text).map_err(|m| ConfigError::new(format!("{field}.{name}"), m))
            })
            .transpose()
    };
    let tenant = pointer("tenant", &stream.tenant)?;
    let time = pointer("time", &stream.time)?;
    let id = pointer("id", &stream.id)?;
    let event_type = pointer("type", &stream.event_type)?;
    match stream.profile.as_str() {
        profile::GENERIC => {
            let tenant = tenant.ok_or_else(|| {
                ConfigError::new(
                    format!("{field}.tenant"),
                    "a generic stream needs a tenant pointer",
                )
            })?;
            let time = time.ok_or_else(|| {
                ConfigError::new(
                    format!("{field}.time"),
                    "a generic stream needs a time pointer",
                )
            })?;
            Ok(Profile::generic(tenant, time, id, event_type))
        }
        built_in @ (profile::AIRKIT_APP_EVENTS | profile::AIRKIT_AUDIT_LOGS) => {
            if tenant.is_some() || time.is_some() || id.is_some() || event_type.is_some() {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "the built-in profile `{built_in}` fixes its fields; use `generic` to set pointers"
                    ),
                ));
            }
            Ok(if built_in == profile::AIRKIT_APP_EVENTS {
                Profile::airkit_app_events()
            } else {
                Profile::airkit_audit_logs()
            })
        }
        other => Err(ConfigError::new(
            format!("{field}.profile"),
            format!(
                "`{other}` is not a profile (expected `{}`, `{}` or `{}`)",
                profile::AIRKIT_APP_EVENTS,
                profile::AIRKIT_AUDIT_LOGS,
                profile::GENERIC
            ),
        )),
    }
}

/// The stream's shard counts from its document (`field` is its path),
/// `None` when it sets neither `shards` nor `tenantShards`. A count that is
/// not a power of two within `1..=staged::MAX_SHARDS` is refused naming the
/// stream, and the tenant when it is an override.
fn build_shards(
    field: &str,
    name: &str,
    stream: &StreamDocument,
) -> Result<Option<StreamShards>, ConfigError> {
    if stream.shards.is_none() && stream.tenant_shards.is_none() {
        return Ok(None);
    }
    let check = |field: String, whose: String, shards: u32| {
        if crate::staged::valid_shard_count(shards) {
            Ok(shards)
        } else {
            Err(ConfigError::new(
                field,
                format!(
                    "{whose}: {shards} shards is not a power of two from 1 to {}",
                    crate::staged::MAX_SHARDS
                ),
            ))
        }
    };
    let shards = match stream.shards {
        Some(shards) => check(
            format!("{field}.shards"),
            format!("stream `{name}`"),
            shards,
        )?,
        None => defaults::SHARDS,
    };
    let mut tenants = HashMap::new();
    for (tenant, &count) in stream.tenant_shards.iter().flatten() {
        let tenant_field = format!("{field}.tenantShards.{tenant}");
        if tenant.is_empty() {
            return Err(ConfigError::new(
                tenant_field,
                format!("stream `{name}`: the tenant id is empty"),
            ));
        }
        let count = check(
            tenant_field,
            format!("tenant `{tenant}` of stream `{name}`"),
            count,
        )?;
        tenants.insert(TenantKey::encode(tenant).as_str().to_owned(), count);
    }
    Ok(Some(StreamShards { shards, tenants }))
}

fn build_destinations(
    streams: &HashMap<String, Profile>,
    export_bucket: &str,
    documents: Vec<DestinationDocument>,
    schedule: Option<(&str, u32)>,
) -> Result<Vec<Destination>, ConfigError> {
    let mut destinations: Vec<Destination> = Vec::with_capacity(documents.len());
    for (index, document) in documents.into_iter().enumerate() {
        let field = |name: &str| format!("destinations[{index}].{name}");
        let name_ok = !document.name.is_empty()
            && document
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(ConfigError::new(
                field("name"),
                format!(
                    "`{}` must be non-empty and use only A-Z a-z 0-9 - _ .",
                    document.name
                ),
            ));
        }
        if destinations.iter().any(|other| other.name == document.name) {
            return Err(ConfigError::new(
                field("name"),
                format!("`{}` names two destinations", document.name),
            ));
        }
        check_bucket_name(&field("bucket"), &document.bucket)?;
        if document.prefix.starts_with('/') || document.prefix.split('/').any(|s| s == "..") {
            return Err(ConfigError::new(
                field("prefix"),
                "must not start with `/` or contain a `..` segment",
            ));
        }
        for stream in document.streams.iter().flatten() {
            check_known_stream(streams, &field("streams"), stream)?;
        }
        if let Some(tenants) = &document.tenants {
            if tenants.is_empty() || tenants.iter().any(String::is_empty) {
                return Err(ConfigError::new(
                    field("tenants"),
                    "list at least one non-empty tenant id, or leave it out to select all",
                ));
            }
            if tenants.len() > 1 && !document.shared {
                return Err(ConfigError::new(
                    field("tenants"),
                    "a bucket serves one tenant: set `shared: true` to send several tenants to it on purpose",
                ));
            }
        }
        if document.enabled
            && let Some(other) = destinations.iter().find(|other| {
                other.enabled
                    && other.bucket == document.bucket
                    && prefixes_overlap(&other.prefix, &document.prefix)
            })
            && !(other.shared && document.shared)
        {
            return Err(ConfigError::new(
                field("bucket"),
                format!(
                    "destination `{}`'s `s3://{}/{}` overlaps destination `{}`'s `s3://{}/{}` \
                     (one prefix starts with the other, so their keys can meet): a bucket serves \
                     one tenant unless both set `shared: true`",
                    document.name,
                    document.bucket,
                    document.prefix,
                    other.name,
                    other.bucket,
                    other.prefix
                ),
            ));
        }
        // Keys rendered there could pose as staged data, manifests or the
        // configuration (a stream named `staging` under prefix `""`).
        if document.bucket == export_bucket
            && let Some(folder) = layout::PIPELINE_PREFIXES
                .iter()
                .find(|folder| prefixes_overlap(folder, &document.prefix))
        {
            return Err(ConfigError::new(
                field("prefix"),
                format!(
                    "destination `{}` writes into the export bucket under `{}`, which overlaps the \
                     pipeline's own `{folder}` (one starts with the other): give it a prefix none \
                     of {} starts with, and that starts with none of them",
                    document.name,
                    document.prefix,
                    layout::PIPELINE_PREFIXES.join(", ")
                ),
            ));
        }
        let encryption = match (document.encryption.as_deref(), &document.kms_key_id) {
            (None | Some("none"), None) => Encryption::BucketDefault,
            (Some("AES256"), None) => Encryption::Aes256,
            (Some("aws:kms"), key_id) => Encryption::Kms {
                key_id: key_id.clone(),
                bucket_key: document.bucket_key_enabled.unwrap_or(true),
            },
            (None | Some("none") | Some("AES256"), Some(_)) => {
                return Err(ConfigError::new(
                    field("kmsKeyId"),
                    "a KMS key needs `encryption: \"aws:kms\"`",
                ));
            }
            (Some(other), _) => {
                return Err(ConfigError::new(
                    field("encryption"),
                    format!("`{other}` is not `none`, `AES256` or `aws:kms`"),
                ));
            }
        };
        if document.bucket_key_enabled.is_some() && !matches!(encryption, Encryption::Kms { .. }) {
            return Err(ConfigError::new(
                field("bucketKeyEnabled"),
                "S3 Bucket Keys apply to `encryption: \"aws:kms\"` only",
            ));
        }
        if let Some(account) = &document.account_id
            && !(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(ConfigError::new(
                field("accountId"),
                format!("`{account}` is not a 12-digit AWS account id"),
            ));
        }
        if let Some(role_arn) = &document.role_arn {
            crate::cross_account::check_role_arn(role_arn)
                .map_err(|message| ConfigError::new(field("roleArn"), message))?;
        }
        if let Some(external_id) = &document.external_id {
            if document.role_arn.is_none() {
                return Err(ConfigError::new(
                    field("externalId"),
                    "an external id is given when assuming `roleArn`: set `roleArn` too",
                ));
            }
            crate::cross_account::check_external_id(external_id)
                .map_err(|message| ConfigError::new(field("externalId"), message))?;
        }
        if let Some(region) = &document.region {
            let ok = !region.is_empty()
                && region.split('-').count() >= 3
                && region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                return Err(ConfigError::new(
                    field("region"),
                    format!("`{region}` is not an AWS region such as `us-west-2`"),
                ));
            }
        }
        let single_stream = document.streams.as_ref().is_some_and(|s| s.len() == 1);
        let single_tenant = document.tenants.as_ref().is_some_and(|t| t.len() == 1);
        let layout = KeyLayout::parse(
            document.layout.as_deref().unwrap_or(defaults::LAYOUT),
            single_stream,
            single_tenant,
        )
        .map_err(|error| ConfigError::new(field("layout"), error.0))?;
        let content = ContentOptions::build(
            &ContentDocument {
                format: document.format.as_deref(),
                compression_level: document.compression_level,
                include_event_types: document.include_event_types.as_deref(),
                exclude_event_types: document.exclude_event_types.as_deref(),
                omit_fields: document.omit_fields.as_deref(),
                include_metadata: document.include_metadata,
                storage_class: document.storage_class.as_deref(),
                tags: document.tags.as_ref(),
            },
            field,
        )?;
        if content.filters_events()
            && let Some(untyped) = document.streams.iter().flatten().find(|stream| {
                streams
                    .get(stream.as_str())
                    .is_some_and(|profile| profile.event_type.is_none())
            })
        {
            return Err(ConfigError::new(
                field(if content.include_event_types.is_some() {
                    "includeEventTypes"
                } else {
                    "excludeEventTypes"
                }),
                format!("stream `{untyped}` has no event type field (`type` in its profile)"),
            ));
        }
        let layout = layout
            .with_extension(content.format.extension())
            .map_err(|error| ConfigError::new(field("layout"), error.0))?;
        let probe = crate::partition::PartitionKey {
            hour: crate::partition::Hour::containing(0),
            stream: "s".into(),
            tenant: TenantKey::encode("t"),
        };
        if document.success_marker && layout.partition_folder("", &probe).is_none() {
            return Err(ConfigError::new(
                field("successMarker"),
                format!(
                    "`{}` gives an hour no folder of its own (use `hive` or `date-folders`)",
                    layout.template()
                ),
            ));
        }
        let interval = match &document.interval {
            Some(value) => Interval::parse(value)
                .map_err(|message| ConfigError::new(field("interval"), message))?,
            None => Interval::Hourly,
        };
        if let (Interval::Minutes(minutes), Some(schedule)) = (interval, schedule)
            && minutes < schedule.1
        {
            return Err(ConfigError::new(
                field("interval"),
                format!(
                    "{interval}, but the flush schedule `{}` ({}) runs only every {} minutes: set FlushSchedule to run at least every {minutes} minutes, e.g. `cron(0/{minutes} * * * ? *)`",
                    schedule.0,
                    env::FLUSH_SCHEDULE,
                    schedule.1
                ),
            ));
        }
        destinations.push(Destination {
            name: document.name,
            bucket: document.bucket,
            region: document.region,
            prefix: document.prefix,
            tenants: document.tenants,
            streams: document.streams,
            shared: document.shared,
            enabled: document.enabled,
            encryption,
            layout,
            success_marker: document.success_marker,
            interval,
            account_id: document.account_id,
            role_arn: document.role_arn,
            external_id: document.external_id,
            content,
        });
    }
    Ok(destinations)
}

/// Whether keys written under `prefix` and under `other` (in one bucket)
/// can be the same: when one starts with the other. `a/` and `ab/` do not
/// overlap, but `a` and `ab` do (`ab/x` is under both), and `""` overlaps
/// every prefix.
fn prefixes_overlap(prefix: &str, other: &str) -> bool {
    prefix.starts_with(other) || other.starts_with(prefix)
}

fn check_known_stream(
    streams: &HashMap<String, Profile>,
    field: &str,
    stream: &str,
) -> Result<(), ConfigError> {
    if streams.contains_key(stream) {
        return Ok(());
    }
    let mut known: Vec<&str> = streams.keys().map(String::as_str).collect();
    known.sort_unstable();
    Err(ConfigError::new(
        field,
        format!("`{stream}` is not a stream (known: {})", known.join(", ")),
    ))
}

/// Stream names become key segments: lower-case letters, digits, `-`, `_`.
fn check_stream_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(crate::partition::is_stream_name_char);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            "a stream name is 1 to 64 of a-z 0-9 - _, starting with a letter or digit",
        ))
    }
}

/// S3's bucket naming rules (general purpose buckets).
fn check_bucket_name(field: &str, bucket: &str) -> Result<(), ConfigError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("`{bucket}` is not a valid S3 bucket name (3-63 of a-z 0-9 . -)"),
        ))
    }
}

/// A destination as the configuration builds it from its JSON, so tests
/// follow the struct whatever fields it grows.
#[cfg(test)]
pub(crate) fn test_destination(destination_json: &str) -> Destination {
    let document = format!(r#"{{"destinations":[{destination_json}]}}"#);
    Config::from_sources(
        |name| (name == "EXPORT_BUCKET").then(|| "exports".to_owned()),
        Some(&document),
    )
    .expect("valid destination")
    .destinations
    .remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)], document: Option<&str>) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_sources(|name| vars.get(name).cloned(), document)
    }

    #[test]
    fn minimal_environment_gives_defaults() {
        let config = config(&[("EXPORT_BUCKET", "exports")], None).unwrap();
        assert_eq!(config.export_bucket, "exports");
        assert_eq!(config.default_stream, "airkit-app-events");
        assert_eq!(config.partition_by, PartitionBy::Ingest);
        assert_eq!(config.max_event_bytes, 1024 * 1024);
        assert_eq!(config.max_decompressed_body_bytes, 16 * 1024 * 1024);
        assert!(config.streams.contains_key("airkit-audit-logs"));
    }

    #[test]
    fn staging_is_zstd_at_its_level_and_the_gzip_level_is_still_accepted() {
        let defaults = config(&[("EXPORT_BUCKET", "exports")], None).unwrap();
        assert_eq!(defaults.staging_zstd_level, 1);
        let from_document = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"stagingZstdLevel": 19, "stagingGzipLevel": 6}"#),
        )
        .unwrap();
        assert_eq!(from_document.staging_zstd_level, 19);
        let from_env = config(
            &[
                ("EXPORT_BUCKET", "exports"),
                ("STAGING_ZSTD_LEVEL", "3"),
                ("STAGING_GZIP_LEVEL", "9"),
            ],
            Some(r#"{"stagingZstdLevel": 19}"#),
        )
        .unwrap();
        assert_eq!(from_env.staging_zstd_level, 3, "the variable overrides");
        for (level, field) in [("0", "STAGING_ZSTD_LEVEL"), ("20", "STAGING_ZSTD_LEVEL")] {
            let error = config(
                &[("EXPORT_BUCKET", "exports"), ("STAGING_ZSTD_LEVEL", level)],
                None,
            )
            .unwrap_err();
            assert_eq!(error.field, field);
            assert!(error.message.contains("1..=19"), "{error}");
        }
        let error = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"stagingZstdLevel": 22}"#),
        )
        .unwrap_err();
        assert_eq!(error.field, "stagingZstdLevel");
        let error = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"stagingZstdLevel": -1}"#),
        )
        .unwrap_err();
        assert_eq!(error.field, "stagingZstdLevel");
    }

    #[test]
    fn shards_come_from_the_stream_and_a_tenant_overrides_them() {
        let config = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(
                r#"{"streams": {
                    "orders": {"profile": "generic", "tenant": "/t", "time": "/ts", "shards": 4,
                               "tenantShards": {"big/one": 64, "small": 1}},
                    "airkit-audit-logs": {"profile": "airkit-audit-logs", "tenantShards": {"acme": 8}}
                }}"#,
            ),
        )
        .unwrap();
        let tenant = TenantKey::encode;
        assert_eq!(config.shards_for("orders", &tenant("anyone")), 4);
        assert_eq!(config.shards_for("orders", &tenant("big/one")), 64);
        assert_eq!(config.shards_for("orders", &tenant("small")), 1);
        assert_eq!(config.shards_for("airkit-audit-logs", &tenant("acme")), 8);
        assert_eq!(config.shards_for("airkit-audit-logs", &tenant("other")), 1);
        assert_eq!(config.shards_for("airkit-app-events", &tenant("acme")), 1);
        assert_eq!(config.shards_for("unknown", &tenant("acme")), 1);
    }

    #[test]
    fn a_shard_count_that_is_not_a_power_of_two_up_to_the_maximum_is_refused() {
        let stream = |setting: &str| {
            format!(
                r#"{{"streams": {{"orders": {{"profile": "generic", "tenant": "/t", "time": "/ts", {setting}}}}}}}"#
            )
        };
        for shards in [0, 3, 12, 2048] {
            let error = config(
                &[("EXPORT_BUCKET", "exports")],
                Some(&stream(&format!(r#""shards": {shards}"#))),
            )
            .unwrap_err();
            assert_eq!(error.field, "streams.orders.shards");
            assert_eq!(
                error.message,
                format!("stream `orders`: {shards} shards is not a power of two from 1 to 1024")
            );
        }
        let error = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(&stream(r#""tenantShards": {"acme": 1024, "globex": 6}"#)),
        )
        .unwrap_err();
        assert_eq!(error.field, "streams.orders.tenantShards.globex");
        assert_eq!(
            error.message,
            "tenant `globex` of stream `orders`: 6 shards is not a power of two from 1 to 1024"
        );
        let error = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(&stream(r#""tenantShards": {"": 2}"#)),
        )
        .unwrap_err();
        assert_eq!(error.field, "streams.orders.tenantShards.");
        assert!(error.message.contains("the tenant id is empty"), "{error}");
        let error = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(&stream(r#""shards": -2"#)),
        )
        .unwrap_err();
        assert_eq!(error.field, "streams.orders.shards");
    }

    #[test]
    fn missing_export_bucket_names_the_variable() {
        let error = config(&[], None).unwrap_err();
        assert_eq!(error.field, "EXPORT_BUCKET");
    }

    #[test]
    fn empty_variable_counts_as_unset() {
        let error = config(&[("EXPORT_BUCKET", "")], None).unwrap_err();
        assert_eq!(error.field, "EXPORT_BUCKET");
        let config = config(
            &[("EXPORT_BUCKET", "exports"), ("DEFAULT_STREAM", "")],
            None,
        )
        .unwrap();
        assert_eq!(config.default_stream, "airkit-app-events");
    }

    #[test]
    fn bad_bucket_name_is_refused() {
        let error = config(&[("EXPORT_BUCKET", "Bad_Bucket")], None).unwrap_err();
        assert_eq!(error.field, "EXPORT_BUCKET");
    }

    #[test]
    fn unknown_document_field_is_named() {
        let error = config(&[], Some(r#"{"exportBuckt": "x"}"#)).unwrap_err();
        assert!(error.message.contains("exportBuckt"), "{error}");
    }

    #[test]
    fn wrong_type_in_nested_field_names_its_path() {
        let error = config(
            &[],
            Some(r#"{"exportBucket":"exports","destinations":[{"name":"a","bucket":7}]}"#),
        )
        .unwrap_err();
        assert_eq!(error.field, "destinations[0].bucket");
    }

    #[test]
    fn environment_overrides_document() {
        let config = config(
            &[("EXPORT_BUCKET", "from-env"), ("PARTITION_BY", "event")],
            Some(r#"{"exportBucket":"from-doc","partitionBy":"ingest"}"#),
        )
        .unwrap();
        assert_eq!(config.export_bucket, "from-env");
        assert_eq!(config.partition_by, PartitionBy::Event);
    }

    #[test]
    fn generic_stream_with_pointers() {
        let config = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"streams":{"orders":{"profile":"generic","tenant":"/account/id","time":"/ts","id":"/order_id"}},"defaultStream":"orders"}"#),
        )
        .unwrap();
        let orders = &config.streams["orders"];
        assert_eq!(orders.tenant.pointer(), "/account/id");
        assert_eq!(config.default_stream, "orders");
    }

    #[test]
    fn generic_stream_without_time_is_refused() {
        let error = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"streams":{"orders":{"profile":"generic","tenant":"/a"}}}"#),
        )
        .unwrap_err();
        assert_eq!(error.field, "streams.orders.time");
    }

    #[test]
    fn bad_pointer_is_named() {
        let error = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"streams":{"orders":{"profile":"generic","tenant":"account","time":"/ts"}}}"#),
        )
        .unwrap_err();
        assert_eq!(error.field, "streams.orders.tenant");
    }

    #[test]
    fn unknown_profile_is_named() {
        let error = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"streams":{"orders":{"profile":"nope"}}}"#),
        )
        .unwrap_err();
        assert_eq!(error.field, "streams.orders.profile");
    }

    #[test]
    fn stream_name_that_could_break_a_key_is_refused() {
        let error = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"streams":{"../x":{"profile":"airkit-app-events"}}}"#),
        )
        .unwrap_err();
        assert_eq!(error.field, "streams.../x");
    }

    #[test]
    fn unknown_default_stream_is_refused() {
        let error = config(
            &[("EXPORT_BUCKET", "exports"), ("DEFAULT_STREAM", "nope")],
            None,
        )
        .unwrap_err();
        assert_eq!(error.field, "DEFAULT_STREAM");
    }

    #[test]
    fn queue_streams_variable_maps_queues() {
        let config = config(
            &[
                ("EXPORT_BUCKET", "exports"),
                (
                    "QUEUE_STREAMS",
                    "audit-q=airkit-audit-logs, app-q=airkit-app-events",
                ),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            config.stream_for(None, Some("audit-q")),
            "airkit-audit-logs"
        );
        assert_eq!(config.stream_for(Some("x"), Some("audit-q")), "x");
        assert_eq!(config.stream_for(None, Some("other")), "airkit-app-events");
    }

    #[test]
    fn senders_are_unset_by_default_and_read_from_the_document_or_the_variable() {
        let bucket = ("EXPORT_BUCKET", "exports");
        assert_eq!(config(&[bucket], None).unwrap().senders, None);

        let document =
            r#"{"senders": {"AROAEXAMPLEROLEID": ["acme", "acme-eu"], "123456789012": ["*"]}}"#;
        let from_document = config(&[bucket], Some(document)).unwrap().senders.unwrap();
        assert!(
            from_document
                .check(Some("AROAEXAMPLEROLEID:s"), "acme-eu")
                .is_ok()
        );
        assert!(
            from_document
                .check(Some("AROAEXAMPLEROLEID:s"), "evil")
                .is_err()
        );
        assert!(from_document.check(Some("123456789012"), "evil").is_ok());

        let variable = (
            "SENDER_TENANTS",
            "AROAEXAMPLEROLEID=acme,AROAEXAMPLEROLEID=acme-eu,123456789012=*",
        );
        let from_variable = config(&[bucket, variable], None).unwrap().senders.unwrap();
        assert_eq!(from_variable, from_document);
    }

    #[test]
    fn bad_senders_name_their_entry_or_variable() {
        let bucket = ("EXPORT_BUCKET", "exports");
        for (document, field) in [
            (
                r#"{"senders": {"AROAEXAMPLEROLEID:session": ["acme"]}}"#,
                "senders.AROAEXAMPLEROLEID:session",
            ),
            (r#"{"senders": {"": ["acme"]}}"#, "senders."),
            (
                r#"{"senders": {"AROAEXAMPLEROLEID": []}}"#,
                "senders.AROAEXAMPLEROLEID",
            ),
            (
                r#"{"senders": {"AROAEXAMPLEROLEID": [""]}}"#,
                "senders.AROAEXAMPLEROLEID[0]",
            ),
            (
                r#"{"senders": {"AROAEXAMPLEROLEID": [42]}}"#,
                "senders.AROAEXAMPLEROLEID[0]",
            ),
            (
                r#"{"senders": {"AROAEXAMPLEROLEID": "acme"}}"#,
                "senders.AROAEXAMPLEROLEID",
            ),
            (r#"{"senders": ["AROAEXAMPLEROLEID"]}"#, "senders"),
        ] {
            let error = config(&[bucket], Some(document)).expect_err(document);
            assert_eq!(error.field, field, "{document}: {error}");
        }

        let error = config(&[bucket, ("SENDER_TENANTS", "AROAEXAMPLEROLEID")], None).unwrap_err();
        assert_eq!(error.field, "SENDER_TENANTS", "{error}");
        let error = config(
            &[bucket, ("SENDER_TENANTS", "AROAEXAMPLEROLEID:session=acme")],
            None,
        )
        .unwrap_err();
        assert_eq!(error.field, "SENDER_TENANTS", "{error}");
        assert!(
            error.message.contains("`AROAEXAMPLEROLEID:session`"),
            "{error}"
        );

        // One mapping, in one place: both set is refused, not merged.
        let error = config(
            &[bucket, ("SENDER_TENANTS", "AROAEXAMPLEROLEID=acme")],
            Some(r#"{"senders": {"AIDAEXAMPLEUSER": ["acme"]}}"#),
        )
        .unwrap_err();
        assert_eq!(error.field, "SENDER_TENANTS", "{error}");
    }

    #[test]
    fn malformed_queue_streams_is_refused() {
        let error = config(
            &[("EXPORT_BUCKET", "exports"), ("QUEUE_STREAMS", "audit-q")],
            None,
        )
        .unwrap_err();
        assert_eq!(error.field, "QUEUE_STREAMS");
    }

    #[test]
    fn out_of_range_numbers_are_refused() {
        let error = config(
            &[("EXPORT_BUCKET", "exports"), ("STAGING_GZIP_LEVEL", "12")],
            None,
        )
        .unwrap_err();
        assert_eq!(error.field, "STAGING_GZIP_LEVEL");
        let error = config(
            &[("EXPORT_BUCKET", "exports"), ("MAX_EVENT_BYTES", "lots")],
            None,
        )
        .unwrap_err();
        assert_eq!(error.field, "MAX_EVENT_BYTES");
        let error = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"putConcurrency":0}"#),
        )
        .unwrap_err();
        assert_eq!(error.field, "putConcurrency");
    }

    #[test]
    fn decompressed_body_limit_is_validated_and_named() {
        let set = config(
            &[
                ("EXPORT_BUCKET", "exports"),
                ("MAX_DECOMPRESSED_BODY_BYTES", "4194304"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(set.max_decompressed_body_bytes, 4 * 1024 * 1024);
        let error = config(
            &[
                ("EXPORT_BUCKET", "exports"),
                ("MAX_DECOMPRESSED_BODY_BYTES", "100"),
            ],
            None,
        )
        .unwrap_err();
        assert_eq!(error.field, "MAX_DECOMPRESSED_BODY_BYTES");
        assert!(error.message.contains("outside"), "{}", error.message);
        let error = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"maxDecompressedBodyBytes":"big"}"#),
        )
        .unwrap_err();
        assert!(error.field.contains("maxDecompressedBodyBytes"), "{error}");
    }

    #[test]
    fn sub_batch_size_has_a_default_and_is_validated_and_named() {
        let unset = config(&[("EXPORT_BUCKET", "exports")], None).unwrap();
        assert_eq!(unset.sub_batch_bytes, 64 * 1024 * 1024);
        let set = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"subBatchBytes":65536}"#),
        )
        .unwrap();
        assert_eq!(set.sub_batch_bytes, 65_536);
        let error = config(
            &[("EXPORT_BUCKET", "exports"), ("SUB_BATCH_BYTES", "10")],
            None,
        )
        .unwrap_err();
        assert_eq!(error.field, "SUB_BATCH_BYTES");
        let error = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"subBatchBytes":1073741824}"#),
        )
        .unwrap_err();
        assert!(error.field.contains("subBatchBytes"), "{error}");
    }

    #[test]
    fn two_tenants_on_one_bucket_are_refused_unless_shared() {
        let two = r#"{"destinations":[{"name":"a","bucket":"dest","tenants":["t1"]},{"name":"b","bucket":"dest","tenants":["t2"]}]}"#;
        let error = config(&[("EXPORT_BUCKET", "exports")], Some(two)).unwrap_err();
        assert_eq!(error.field, "destinations[1].bucket");
        let listed = r#"{"destinations":[{"name":"a","bucket":"dest","tenants":["t1","t2"]}]}"#;
        let error = config(&[("EXPORT_BUCKET", "exports")], Some(listed)).unwrap_err();
        assert_eq!(error.field, "destinations[0].tenants");
        let shared = r#"{"destinations":[{"name":"a","bucket":"dest","tenants":["t1","t2"],"shared":true}]}"#;
        assert!(config(&[("EXPORT_BUCKET", "exports")], Some(shared)).is_ok());
    }

    #[test]
    fn a_destination_in_the_export_bucket_cannot_write_into_the_pipelines_folders() {
        let at = |prefix: &str| {
            let doc = serde_json::json!({"destinations": [
                {"name": "inside", "bucket": "exports", "prefix": prefix, "shared": true}
            ]})
            .to_string();
            config(&[("EXPORT_BUCKET", "exports")], Some(&doc))
        };
        for prefix in [
            "",
            "s",
            "staging/",
            "staging/acme/",
            "archive/x/",
            "manifests/",
            "config/",
            "c",
        ] {
            let error = at(prefix).unwrap_err();
            assert_eq!(error.field, "destinations[0].prefix", "{prefix}");
            assert!(
                error.message.contains("overlaps the pipeline's own"),
                "{error}"
            );
        }
        for prefix in ["exports/", "kms/", "stagingx/"] {
            assert!(at(prefix).is_ok(), "{prefix}");
        }
        // Another bucket may use any prefix.
        let elsewhere = r#"{"destinations":[{"name":"d","bucket":"dest","prefix":"staging/"}]}"#;
        assert!(config(&[("EXPORT_BUCKET", "exports")], Some(elsewhere)).is_ok());
    }

    #[test]
    fn overlapping_prefixes_on_one_bucket_are_refused_unless_both_are_shared() {
        let pair = |first: serde_json::Value, second: serde_json::Value| {
            let doc = serde_json::json!({"destinations": [first, second]}).to_string();
            config(&[("EXPORT_BUCKET", "exports")], Some(&doc))
        };
        let at = |name: &str, bucket: &str, prefix: &str| serde_json::json!({"name": name, "bucket": bucket, "prefix": prefix});
        for (first, second) in [
            ("exports/", "exports/"),
            ("exports/", "exports/acme/"),
            ("exports/acme/", "exports/"),
            ("", "anything/"),
            ("a", "ab"),
            ("a", "a/"),
        ] {
            let error = pair(at("one", "dest", first), at("two", "dest", second)).unwrap_err();
            assert_eq!(error.field, "destinations[1].bucket", "{first} {second}");
            for named in [
                "`two`".to_owned(),
                "`one`".to_owned(),
                format!("`s3://dest/{first}`"),
                format!("`s3://dest/{second}`"),
            ] {
                assert!(error.message.contains(&named), "{named}: {error}");
            }
            let mut one_shared = at("two", "dest", second);
            one_shared["shared"] = true.into();
            assert!(pair(at("one", "dest", first), one_shared.clone()).is_err());
            let mut both_shared = at("one", "dest", first);
            both_shared["shared"] = true.into();
            assert!(pair(both_shared, one_shared).is_ok(), "{first} {second}");
            let mut disabled = at("two", "dest", second);
            disabled["enabled"] = false.into();
            assert!(pair(at("one", "dest", first), disabled).is_ok());
        }
        for (first, second) in [("a/", "ab/"), ("exports/acme/", "exports/acme-eu/")] {
            assert!(pair(at("one", "dest", first), at("two", "dest", second)).is_ok());
        }
        assert!(pair(at("one", "dest-1", "x/"), at("two", "dest-2", "x/")).is_ok());
        let doc = r#"{"destinations":[{"name":"doc","bucket":"dest","prefix":"exports/"}]}"#;
        let vars = [
            ("EXPORT_BUCKET", "exports"),
            ("DESTINATION_BUCKET", "dest"),
            ("DESTINATION_PREFIX", "exports/eu/"),
        ];
        let error = config(&vars, Some(doc)).unwrap_err();
        assert_eq!(error.field, "DESTINATION_BUCKET");
        assert!(error.message.contains("`doc`"), "{error}");
    }

    #[test]
    fn destination_encryption_and_owner() {
        let doc = r#"{"destinations":[
            {"name":"a","bucket":"dest-a","encryption":"aws:kms","kmsKeyId":"arn:aws:kms:us-east-1:111122223333:key/k","accountId":"111122223333","region":"us-west-2"},
            {"name":"b","bucket":"dest-b","encryption":"AES256"},
            {"name":"c","bucket":"dest-c"}]}"#;
        let config = config(&[("EXPORT_BUCKET", "exports")], Some(doc)).unwrap();
        assert_eq!(
            config.destinations[0].encryption,
            Encryption::Kms {
                key_id: Some("arn:aws:kms:us-east-1:111122223333:key/k".into()),
                bucket_key: true
            }
        );
        assert_eq!(
            config.destinations[0].account_id.as_deref(),
            Some("111122223333")
        );
        assert_eq!(config.destinations[1].encryption, Encryption::Aes256);
        assert_eq!(config.destinations[2].encryption, Encryption::BucketDefault);
    }

    #[test]
    fn bad_destination_settings_name_their_field() {
        let cases = [
            (
                r#"{"name":"a","bucket":"dest","encryption":"rot13"}"#,
                "destinations[0].encryption",
            ),
            (
                r#"{"name":"a","bucket":"dest","kmsKeyId":"k"}"#,
                "destinations[0].kmsKeyId",
            ),
            (
                r#"{"name":"a","bucket":"dest","bucketKeyEnabled":false}"#,
                "destinations[0].bucketKeyEnabled",
            ),
            (
                r#"{"name":"a","bucket":"dest","accountId":"1234"}"#,
                "destinations[0].accountId",
            ),
            (
                r#"{"name":"a","bucket":"dest","region":"Mars"}"#,
                "destinations[0].region",
            ),
            (r#"{"name":"a b","bucket":"dest"}"#, "destinations[0].name"),
            (
                r#"{"name":"a","bucket":"dest","prefix":"../up"}"#,
                "destinations[0].prefix",
            ),
        ];
        for (destination, field) in cases {
            let doc = format!(r#"{{"destinations":[{destination}]}}"#);
            let error = config(&[("EXPORT_BUCKET", "exports")], Some(&doc)).unwrap_err();
            assert_eq!(error.field, field, "{destination}");
        }
    }

    #[test]
    fn destinations_select_by_stream_and_tenant() {
        let doc = r#"{"destinations":[
            {"name":"all","bucket":"dest-all","layout":"hive"},
            {"name":"acme-app","bucket":"dest-acme","tenants":["acme/eu"],"streams":["airkit-app-events"],"layout":"{date}/{HH}/{part}.json.gz"},
            {"name":"off","bucket":"dest-off","enabled":false}]}"#;
        let config = config(&[("EXPORT_BUCKET", "exports")], Some(doc)).unwrap();
        let names = |stream: &str, tenant: &str| -> Vec<String> {
            let tenant = TenantKey::encode(tenant);
            config
                .destinations_for(stream, &tenant)
                .map(|d| d.name.clone())
                .collect()
        };
        assert_eq!(
            names("airkit-app-events", "acme/eu"),
            vec!["all", "acme-app"]
        );
        assert_eq!(names("airkit-audit-logs", "acme/eu"), vec!["all"]);
        assert_eq!(names("airkit-app-events", "other"), vec!["all"]);
    }

    #[test]
    fn a_thousand_tenants_each_find_their_own_bucket() {
        let mut destinations: Vec<String> = (0..1000)
            .map(|n| {
                format!(
                    r#"{{"name":"t{n}","bucket":"tenant-{n}","tenants":["tenant/{n}"],"layout":"hive"}}"#
                )
            })
            .collect();
        destinations.insert(
            500,
            r#"{"name":"all","bucket":"dest-all","layout":"hive"}"#.to_owned(),
        );
        destinations.push(
            r#"{"name":"audit","bucket":"dest-audit","streams":["airkit-audit-logs"],"layout":"hive"}"#.to_owned(),
        );
        destinations.push(
            r#"{"name":"off","bucket":"dest-off","tenants":["tenant/7"],"enabled":false}"#
                .to_owned(),
        );
        destinations.push(
            r#"{"name":"pair","bucket":"dest-pair","tenants":["tenant/7","tenant/999"],"shared":true,"layout":"hive"}"#.to_owned(),
        );
        let doc = format!(r#"{{"destinations":[{}]}}"#, destinations.join(","));
        let config = config(&[("EXPORT_BUCKET", "exports")], Some(&doc)).unwrap();
        let names = |stream: &str, tenant: &str| -> Vec<String> {
            config
                .destinations_for(stream, &TenantKey::encode(tenant))
                .map(|d| d.name.clone())
                .collect()
        };
        let app = "airkit-app-events";
        for n in 0..1000 {
            let expected = match n {
                7 => vec!["t7".to_owned(), "all".into(), "pair".into()],
                999 => vec!["all".to_owned(), "t999".into(), "pair".into()],
                n if n < 500 => vec![format!("t{n}"), "all".into()],
                n => vec!["all".to_owned(), format!("t{n}")],
            };
            assert_eq!(names(app, &format!("tenant/{n}")), expected, "tenant {n}");
        }
        assert_eq!(names(app, "nobody"), vec!["all"]);
        assert_eq!(
            names("airkit-audit-logs", "tenant/3"),
            vec!["t3", "all", "audit"]
        );
        // The same answers as a scan of every destination.
        let scan = |stream: &str, tenant: &str| -> Vec<String> {
            let key = TenantKey::encode(tenant);
            config
                .destinations
                .iter()
                .filter(|d| {
                    d.enabled
                        && d.streams
                            .as_ref()
                            .is_none_or(|s| s.iter().any(|s| s == stream))
                        && d.tenants
                            .as_ref()
                            .is_none_or(|t| t.iter().any(|t| TenantKey::encode(t) == key))
                })
                .map(|d| d.name.clone())
                .collect()
        };
        for tenant in ["tenant/0", "tenant/7", "tenant/500", "tenant/999", "x"] {
            for stream in [app, "airkit-audit-logs"] {
                assert_eq!(names(stream, tenant), scan(stream, tenant));
            }
        }
    }

    #[test]
    fn a_changed_destination_list_is_scanned_until_reindexed() {
        let doc = r#"{"destinations":[{"name":"a","bucket":"dest-a","tenants":["t1"]},{"name":"b","bucket":"dest-b"}]}"#;
        let mut config = config(&[("EXPORT_BUCKET", "exports")], Some(doc)).unwrap();
        let t1 = TenantKey::encode("t1");
        config.destinations.remove(1);
        let names: Vec<&str> = config
            .destinations_for("airkit-app-events", &t1)
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, vec!["a"]);
        config.destinations.clear();
        assert_eq!(config.destinations_for("airkit-app-events", &t1).count(), 0);
        config.reindex();
        assert_eq!(config.destinations_for("airkit-app-events", &t1).count(), 0);
    }

    #[test]
    fn cross_account_role_and_external_id() {
        let doc = r#"{"destinations":[{"name":"a","bucket":"dest-a","roleArn":"arn:aws:iam::111122223333:role/s3-export-writer","externalId":"acme-7f3k"}]}"#;
        let parsed = config(&[("EXPORT_BUCKET", "exports")], Some(doc)).unwrap();
        let destination = &parsed.destinations[0];
        assert_eq!(
            destination.role_arn.as_deref(),
            Some("arn:aws:iam::111122223333:role/s3-export-writer")
        );
        assert_eq!(destination.external_id.as_deref(), Some("acme-7f3k"));
        let cases = [
            (
                r#"{"name":"a","bucket":"dest","roleArn":"arn:aws:iam::1:role/w"}"#,
                "destinations[0].roleArn",
            ),
            (
                r#"{"name":"a","bucket":"dest","roleArn":"arn:aws:iam::111122223333:role/w","externalId":"x"}"#,
                "destinations[0].externalId",
            ),
            (
                r#"{"name":"a","bucket":"dest","externalId":"abc"}"#,
                "destinations[0].externalId",
            ),
        ];
        for (destination, field) in cases {
            let doc = format!(r#"{{"destinations":[{destination}]}}"#);
            let error = config(&[("EXPORT_BUCKET", "exports")], Some(&doc)).unwrap_err();
            assert_eq!(error.field, field, "{destination}");
        }
        let vars = [
            ("EXPORT_BUCKET", "exports"),
            ("DESTINATION_BUCKET", "b-1"),
            ("DESTINATION_ROLE_ARN", "role"),
        ];
        assert_eq!(
            config(&vars, None).unwrap_err().field,
            "DESTINATION_ROLE_ARN"
        );
        let vars = [
            ("EXPORT_BUCKET", "exports"),
            ("DESTINATION_BUCKET", "b-1"),
            ("DESTINATION_ROLE_ARN", "arn:aws:iam::111122223333:role/w"),
            ("DESTINATION_EXTERNAL_ID", "ext-1"),
        ];
        let parsed = config(&vars, None).unwrap();
        assert_eq!(parsed.destinations[0].external_id.as_deref(), Some("ext-1"));
    }

    #[test]
    fn layout_that_could_collide_is_refused_naming_the_token() {
        let doc = r#"{"destinations":[{"name":"a","bucket":"dest","layout":"{stream}/{date}/{HH}/{part}.gz"}]}"#;
        let error = config(&[("EXPORT_BUCKET", "exports")], Some(doc)).unwrap_err();
        assert_eq!(error.field, "destinations[0].layout");
        assert!(error.message.contains("{tenant}"), "{error}");
    }

    #[test]
    fn layout_whose_keys_could_meet_is_refused_naming_the_field_and_the_template() {
        for (template, format) in [
            ("{stream}/{date}/{HH}/{tenant}{part}{ext}", "gzip"),
            ("{stream}/{tenant}/{date}_{H}{part}{ext}", "gzip"),
            ("{tenant}-{stream}/{date}/{HH}/{part}{ext}", "gzip"),
            ("{stream}/{tenant}/{date}/{HH}/{part}{ext}{H}", "ndjson"),
        ] {
            let doc = serde_json::json!({"destinations": [
                {"name": "fine", "bucket": "dest-fine", "layout": "hive"},
                {"name": "a", "bucket": "dest", "layout": template, "format": format},
            ]})
            .to_string();
            let error = config(&[("EXPORT_BUCKET", "exports")], Some(&doc)).unwrap_err();
            assert_eq!(error.field, "destinations[1].layout", "{template}");
            assert!(
                error.message.contains(&format!("key layout `{template}`")),
                "{error}"
            );
        }
        let vars = [
            ("EXPORT_BUCKET", "exports"),
            ("DESTINATION_BUCKET", "b-1"),
            (
                "DESTINATION_LAYOUT",
                "{stream}/{date}/{HH}/{tenant}{part}{ext}",
            ),
        ];
        assert_eq!(config(&vars, None).unwrap_err().field, "DESTINATION_LAYOUT");
    }

    #[test]
    fn single_destination_from_variables() {
        let vars = [
            ("EXPORT_BUCKET", "exports"),
            ("DESTINATION_BUCKET", "customer-bucket"),
            ("DESTINATION_PREFIX", "airkit/"),
            ("DESTINATION_ENCRYPTION", "aws:kms"),
            ("DESTINATION_KMS_KEY_ID", "alias/exports"),
            ("DESTINATION_ACCOUNT_ID", "111122223333"),
            ("DESTINATION_LAYOUT", "hive"),
        ];
        let config = config(&vars, None).unwrap();
        let destination = &config.destinations[0];
        assert_eq!(
            (destination.name.as_str(), destination.bucket.as_str()),
            ("default", "customer-bucket")
        );
        assert_eq!(destination.prefix, "airkit/");
        assert_eq!(destination.account_id.as_deref(), Some("111122223333"));
        assert_eq!(destination.layout.template(), crate::key_layout::HIVE);
        assert!(
            matches!(&destination.encryption, Encryption::Kms { key_id: Some(k), .. } if k == "alias/exports")
        );
        assert!(destination.tenants.is_none());
    }

    #[test]
    fn bad_single_destination_variable_is_named() {
        let vars = [
            ("EXPORT_BUCKET", "exports"),
            ("DESTINATION_BUCKET", "customer-bucket"),
            ("DESTINATION_ACCOUNT_ID", "12"),
        ];
        assert_eq!(
            config(&vars, None).unwrap_err().field,
            "DESTINATION_ACCOUNT_ID"
        );
        let vars = [
            ("EXPORT_BUCKET", "exports"),
            ("DESTINATION_BUCKET", "Customer_Bucket"),
        ];
        assert_eq!(config(&vars, None).unwrap_err().field, "DESTINATION_BUCKET");
        let vars = [
            ("EXPORT_BUCKET", "exports"),
            ("DESTINATION_BUCKET", "b-1"),
            ("DESTINATION_LAYOUT", "{date}/{part}"),
        ];
        assert_eq!(config(&vars, None).unwrap_err().field, "DESTINATION_LAYOUT");
    }

    #[test]
    fn a_destination_interval_is_hourly_or_minutes_the_schedule_keeps_up_with() {
        let bucket = ("EXPORT_BUCKET", "exports");
        let doc = |interval: &str| {
            format!(
                r#"{{"destinations":[{{"name":"a","bucket":"dest","tenants":["t1"],"interval":{interval}}},
                    {{"name":"b","bucket":"other","tenants":["t2"]}}]}}"#
            )
        };
        let parsed = config(&[bucket], Some(&doc("5"))).unwrap();
        assert_eq!(parsed.destinations[0].interval, Interval::Minutes(5));
        assert_eq!(parsed.destinations[1].interval, Interval::Hourly);
        assert!(parsed.has_frequent_destinations());
        assert!(parsed.flushes_open_hours("airkit-app-events", &TenantKey::encode("t1")));
        assert!(!parsed.flushes_open_hours("airkit-app-events", &TenantKey::encode("t2")));
        let error = config(&[bucket], Some(&doc("7"))).unwrap_err();
        assert_eq!(error.field, "destinations[0].interval");
        assert!(error.message.contains("divides an hour"), "{error}");
        // The schedule must fire at least as often.
        let hourly = ("FLUSH_SCHEDULE", "cron(15 * * * ? *)");
        let error = config(&[bucket, hourly], Some(&doc("5"))).unwrap_err();
        assert_eq!(error.field, "destinations[0].interval");
        assert!(
            error
                .message
                .contains("every 5 minutes, but the flush schedule `cron(15 * * * ? *)`")
                && error.message.contains("runs only every 60 minutes"),
            "{error}"
        );
        let every_five = ("FLUSH_SCHEDULE", "cron(0/5 * * * ? *)");
        assert!(config(&[bucket, every_five], Some(&doc("5"))).is_ok());
        assert!(config(&[bucket, every_five], Some(&doc("\"hourly\""))).is_ok());
        let error = config(&[bucket, ("FLUSH_SCHEDULE", "hourly")], None).unwrap_err();
        assert_eq!(error.field, "FLUSH_SCHEDULE");
        // The environment's destination names its variable.
        let error = config(
            &[
                bucket,
                ("DESTINATION_BUCKET", "dest"),
                ("DESTINATION_INTERVAL", "9"),
            ],
            None,
        )
        .unwrap_err();
        assert_eq!(error.field, "DESTINATION_INTERVAL");
    }

    #[test]
    fn the_grace_must_exceed_the_batching_window() {
        let bucket = ("EXPORT_BUCKET", "exports");
        let window = ("BATCHING_WINDOW_SECONDS", "300");
        let error = config(&[bucket, window, ("FLUSH_GRACE_MINUTES", "5")], None).unwrap_err();
        assert_eq!(error.field, "FLUSH_GRACE_MINUTES");
        assert!(
            error.message.contains("batching window of 300 s")
                && error.message.contains("at least 6 minute(s)"),
            "{error}"
        );
        assert!(config(&[bucket, window, ("FLUSH_GRACE_MINUTES", "6")], None).is_ok());
        // The default grace (10 minutes) exceeds the longest window.
        assert!(config(&[bucket, window], None).is_ok());
        // Without the window (outside the template): not checked.
        assert!(config(&[bucket, ("FLUSH_GRACE_MINUTES", "1")], None).is_ok());
        let error = config(&[bucket, ("BATCHING_WINDOW_SECONDS", "soon")], None).unwrap_err();
        assert_eq!(error.field, "BATCHING_WINDOW_SECONDS");
    }

    #[test]
    fn files_every_few_minutes_and_hourly_files_of_one_partition_go_together() {
        let doc = r#"{"destinations":[{"name":"a","bucket":"dest","interval":5},
            {"name":"b","bucket":"other","tenants":["t2"]}]}"#;
        let every_five = ("FLUSH_SCHEDULE", "cron(0/5 * * * ? *)");
        let config = config(&[("EXPORT_BUCKET", "exports"), every_five], Some(doc)).unwrap();
        let t2 = crate::partition::TenantKey::encode("t2");
        let names: Vec<&str> = config
            .destinations_for("airkit-app-events", &t2)
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(config.has_frequent_destinations());
    }

    #[test]
    fn success_marker_needs_a_folder_per_hour() {
        let doc = r#"{"destinations":[{"name":"a","bucket":"dest","successMarker":true}]}"#;
        let error = config(&[("EXPORT_BUCKET", "exports")], Some(doc)).unwrap_err();
        assert_eq!(error.field, "destinations[0].successMarker");
        let doc = r#"{"destinations":[{"name":"a","bucket":"dest","successMarker":true,"layout":"hive"}]}"#;
        assert!(
            config(&[("EXPORT_BUCKET", "exports")], Some(doc))
                .unwrap()
                .destinations[0]
                .success_marker
        );
    }

    #[test]
    fn flusher_settings_have_defaults_and_limits() {
        let config = config(&[("EXPORT_BUCKET", "exports")], None).unwrap();
        assert_eq!(config.flush_grace_minutes, 10);
        assert_eq!(config.archive_gzip_level, 6);
        assert_eq!(config.archive_part_max_bytes, 128 * 1024 * 1024);
        let error = config_error(&[
            ("EXPORT_BUCKET", "exports"),
            ("ARCHIVE_PART_MAX_BYTES", "1000"),
        ]);
        assert_eq!(error.field, "ARCHIVE_PART_MAX_BYTES");
        assert_eq!(config.spool_bytes, 1536 * 1024 * 1024);
        assert_eq!(config.spool_dir, std::env::temp_dir());
        let error = config_error(&[("EXPORT_BUCKET", "exports"), ("SPOOL_BYTES", "10")]);
        assert_eq!(error.field, "SPOOL_BYTES");
        assert!(error.message.contains("outside"), "{}", error.message);
        let error = self::config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"spoolBytes": 99999999999}"#),
        )
        .unwrap_err();
        assert_eq!(error.field, "spoolBytes");
        let set = self::config(
            &[
                ("EXPORT_BUCKET", "exports"),
                ("SPOOL_BYTES", "4096"),
                ("SPOOL_DIR", "spool"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(set.spool_bytes, 4096);
        assert_eq!(config.work_item_bytes, 1024 * 1024 * 1024);
        let error = config_error(&[("EXPORT_BUCKET", "exports"), ("WORK_ITEM_BYTES", "1")]);
        assert_eq!(error.field, "WORK_ITEM_BYTES");
        let error = self::config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"workItemBytes": "many"}"#),
        )
        .unwrap_err();
        assert_eq!(error.field, "workItemBytes");
        assert_eq!(set.spool_dir, std::path::PathBuf::from("spool"));
        assert_eq!(config.read_concurrency, 32);
        let error = config_error(&[("EXPORT_BUCKET", "exports"), ("READ_CONCURRENCY", "0")]);
        assert_eq!(error.field, "READ_CONCURRENCY");
        let read = self::config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"readConcurrency": 64}"#),
        )
        .unwrap();
        assert_eq!(read.read_concurrency, 64);
    }

    #[test]
    fn archive_retention_defaults_to_forever_and_is_bounded() {
        let default = config(&[("EXPORT_BUCKET", "exports")], None).unwrap();
        assert_eq!(default.archive_retention_days, 0);
        let kept = config(
            &[
                ("EXPORT_BUCKET", "exports"),
                ("ARCHIVE_RETENTION_DAYS", "30"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(kept.archive_retention_days, 30);
        let error = config_error(&[
            ("EXPORT_BUCKET", "exports"),
            ("ARCHIVE_RETENTION_DAYS", "forever"),
        ]);
        assert_eq!(error.field, "ARCHIVE_RETENTION_DAYS");
        let error = config(
            &[("EXPORT_BUCKET", "exports")],
            Some(r#"{"archiveRetentionDays": 40000}"#),
        )
        .unwrap_err();
        assert_eq!(error.field, "archiveRetentionDays");
    }

    fn config_error(vars: &[(&str, &str)]) -> ConfigError {
        config(vars, None).unwrap_err()
    }

    #[test]
    fn destination_with_unknown_stream_is_refused() {
        let doc = r#"{"destinations":[{"name":"a","bucket":"dest","streams":["nope"]}]}"#;
        let error = config(&[("EXPORT_BUCKET", "exports")], Some(doc)).unwrap_err();
        assert_eq!(error.field, "destinations[0].streams");
    }

    #[test]
    fn bad_content_options_name_their_field() {
        let cases = [
            (r#""format":"bzip2""#, "destinations[0].format"),
            (
                r#""compressionLevel":12"#,
                "destinations[0].compressionLevel",
            ),
            (
                r#""format":"zstd","compressionLevel":0"#,
                "destinations[0].compressionLevel",
            ),
            (
                r#""format":"ndjson","compressionLevel":3"#,
                "destinations[0].compressionLevel",
            ),
            (
                r#""includeEventTypes":[]"#,
                "destinations[0].includeEventTypes",
            ),
            (
                r#""excludeEventTypes":[""]"#,
                "destinations[0].excludeEventTypes",
            ),
            (r#""omitFields":["user"]"#, "destinations[0].omitFields"),
            (r#""omitFields":["/a//b"]"#, "destinations[0].omitFields"),
            (r#""storageClass":"COLD""#, "destinations[0].storageClass"),
            (r#""tags":{"aws:x":"1"}"#, "destinations[0].tags"),
            (r#""tags":{"":"1"}"#, "destinations[0].tags"),
            (r#""tags":{"k":"a#b"}"#, "destinations[0].tags"),
            (
                r#""tags":{"a":"","b":"","c":"","d":"","e":"","f":"","g":"","h":"","i":"","j":"","k":""}"#,
                "destinations[0].tags",
            ),
            (
                r#""includeMetadata":"yes""#,
                "destinations[0].includeMetadata",
            ),
            (
                r#""format":"zstd","layout":"{stream}/{tenant}/{date}/{HH}/{part}.json.gz""#,
                "destinations[0].layout",
            ),
        ];
        for (options, field) in cases {
            let doc = format!(r#"{{"destinations":[{{"name":"a","bucket":"dest",{options}}}]}}"#);
            let error = config(&[("EXPORT_BUCKET", "exports")], Some(&doc)).unwrap_err();
            assert_eq!(error.field, field, "{options}: {error}");
        }
        let untyped = r#"{"streams":{"orders":{"profile":"generic","tenant":"/t","time":"/ts"}},
            "destinations":[{"name":"a","bucket":"dest","streams":["orders"],"excludeEventTypes":["x"]}]}"#;
        let error = config(&[("EXPORT_BUCKET", "exports")], Some(untyped)).unwrap_err();
        assert_eq!(error.field, "destinations[0].excludeEventTypes");
    }

    #[test]
    fn content_options_and_their_defaults() {
        let doc = r#"{"destinations":[
            {"name":"a","bucket":"dest-a"},
            {"name":"b","bucket":"dest-b","format":"zstd","layout":"hive","includeEventTypes":["user_login"],
             "omitFields":["/user/location"],"includeMetadata":true,"storageClass":"STANDARD_IA","tags":{"team":"data"}}]}"#;
        let config = config(&[("EXPORT_BUCKET", "exports")], Some(doc)).unwrap();
        let plain = &config.destinations[0].content;
        assert_eq!(plain.format, crate::export_options::ExportFormat::Gzip);
        assert_eq!(plain.level(6), Some(6));
        assert!(plain.is_archive_encoding(6));
        assert!(plain.storage_class.is_none() && plain.tags.is_empty());
        let b = &config.destinations[1];
        assert_eq!(b.content.level(6), Some(3));
        assert_eq!(b.content.omit_fields[0].tokens, vec!["user", "location"]);
        assert_eq!(b.content.storage_class.as_deref(), Some("STANDARD_IA"));
        let partition = crate::partition::PartitionKey {
            hour: crate::partition::Hour::containing(0),
            stream: "s".into(),
            tenant: TenantKey::encode("t"),
        };
        assert!(b.layout.render("", &partition, 1).ends_with(".ndjson.zst"));
    }

    #[test]
    fn single_destination_format_and_storage_class_variables() {
        let vars = [
            ("EXPORT_BUCKET", "exports"),
            ("DESTINATION_BUCKET", "customer-bucket"),
            ("DESTINATION_FORMAT", "ndjson"),
            ("DESTINATION_STORAGE_CLASS", "GLACIER_IR"),
        ];
        let config = config(&vars, None).unwrap();
        let content = &config.destinations[0].content;
        assert_eq!(content.format, crate::export_options::ExportFormat::Ndjson);
        assert_eq!(content.storage_class.as_deref(), Some("GLACIER_IR"));
        for (variable, value) in [
            ("DESTINATION_FORMAT", "gz"),
            ("DESTINATION_STORAGE_CLASS", "glacier"),
        ] {
            let vars = [
                ("EXPORT_BUCKET", "exports"),
                ("DESTINATION_BUCKET", "customer-bucket"),
                (variable, value),
            ];
            assert_eq!(config_error(&vars).field, variable);
        }
    }

    #[test]
    fn single_destination_content_variables() {
        let vars = [
            ("EXPORT_BUCKET", "exports"),
            ("DESTINATION_BUCKET", "customer-bucket"),
            ("DESTINATION_LAYOUT", "hive"),
            ("DESTINATION_COMPRESSION_LEVEL", "9"),
            ("DESTINATION_INCLUDE_METADATA", "true"),
            ("DESTINATION_SUCCESS_MARKER", "true"),
            (
                "DESTINATION_INCLUDE_EVENT_TYPES",
                "step_enter, session_start",
            ),
            ("DESTINATION_EXCLUDE_EVENT_TYPES", ""),
            ("DESTINATION_OMIT_FIELDS", "/user/location,/ip"),
            ("DESTINATION_TAGS", "team=data, env=prod"),
        ];
        let config = config(&vars, None).unwrap();
        let destination = &config.destinations[0];
        let content = &destination.content;
        assert_eq!(content.compression_level, Some(9));
        assert!(content.include_metadata && destination.success_marker);
        assert_eq!(
            content.include_event_types.as_deref(),
            Some(&["step_enter".to_owned(), "session_start".to_owned()][..])
        );
        assert!(content.exclude_event_types.is_empty());
        assert_eq!(content.omit_fields.len(), 2);
        assert_eq!(content.tags.get("team").map(String::as_str), Some("data"));
        assert_eq!(content.tags.get("env").map(String::as_str), Some("prod"));
        assert!(config.records_provenance());

        for (variable, value) in [
            ("DESTINATION_COMPRESSION_LEVEL", "high"),
            ("DESTINATION_COMPRESSION_LEVEL", "12"),
            ("DESTINATION_INCLUDE_METADATA", "yes"),
            ("DESTINATION_SUCCESS_MARKER", "1"),
            ("DESTINATION_TAGS", "team"),
            ("DESTINATION_TAGS", "aws:x=1"),
            ("DESTINATION_OMIT_FIELDS", "user"),
        ] {
            let vars = [
                ("EXPORT_BUCKET", "exports"),
                ("DESTINATION_BUCKET", "customer-bucket"),
                ("DESTINATION_LAYOUT", "hive"),
                (variable, value),
            ];
            assert_eq!(config_error(&vars).field, variable, "{variable}={value}");
        }
    }

    #[test]
    fn s3_uris_split_into_bucket_and_key() {
        assert_eq!(parse_s3_uri("s3://b/k/c.json"), Some(("b", "k/c.json")));
        assert_eq!(parse_s3_uri("s3://b/"), None);
        assert_eq!(parse_s3_uri("https://b/k"), None);
    }
}
