//! Configuration: the export bucket, the streams and their profiles, which
//! queue feeds which stream, and the destinations.
//!
//! Read once at cold start from environment variables and, optionally, a JSON
//! document given inline (`EXPORT_CONFIG='{...}'`) or as an `s3://bucket/key`
//! URI. Environment variables override the document's top-level settings; an
//! empty variable counts as unset (CloudFormation passes `""` for an unset
//! parameter). Everything is validated before the first event, and an error
//! names the bad field: the document's JSON path, or the variable's name.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use crate::key_layout::KeyLayout;
use crate::partition::TenantKey;
use crate::profile::{self, FieldPath, Profile};

/// Environment variables, in one place (the README's reference lists them).
pub mod env {
    pub const EXPORT_BUCKET: &str = "EXPORT_BUCKET";
    pub const EXPORT_CONFIG: &str = "EXPORT_CONFIG";
    pub const DEFAULT_STREAM: &str = "DEFAULT_STREAM";
    pub const PARTITION_BY: &str = "PARTITION_BY";
    pub const MAX_EVENT_BYTES: &str = "MAX_EVENT_BYTES";
    pub const STAGING_GZIP_LEVEL: &str = "STAGING_GZIP_LEVEL";
    pub const PUT_CONCURRENCY: &str = "PUT_CONCURRENCY";
    pub const QUEUE_STREAMS: &str = "QUEUE_STREAMS";
    pub const FLUSH_GRACE_MINUTES: &str = "FLUSH_GRACE_MINUTES";
    pub const ARCHIVE_GZIP_LEVEL: &str = "ARCHIVE_GZIP_LEVEL";
    pub const ARCHIVE_PART_MAX_BYTES: &str = "ARCHIVE_PART_MAX_BYTES";
    pub const FLUSH_CONCURRENCY: &str = "FLUSH_CONCURRENCY";
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
    /// Staged chunks live an hour: spend compression effort in the flusher.
    pub const STAGING_GZIP_LEVEL: u32 = 1;
    pub const PUT_CONCURRENCY: usize = 16;
    /// Hour H closes at H+1h plus this: more than the batching window and
    /// the usual queue delay (DESIGN.md, Timing).
    pub const FLUSH_GRACE_MINUTES: usize = 10;
    /// Archive parts are what users keep: compress them well.
    pub const ARCHIVE_GZIP_LEVEL: u32 = 6;
    pub const ARCHIVE_PART_MAX_BYTES: usize = 128 * 1024 * 1024;
    pub const FLUSH_CONCURRENCY: usize = 4;
    /// The Amplitude-style key layout.
    pub const LAYOUT: &str = "amplitude";
}

/// The largest event size that can be configured: Lambda's payload limit.
pub const MAX_EVENT_BYTES_LIMIT: usize = 6 * 1024 * 1024;

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
    /// The bucket owner's account id: when set, every write carries
    /// `ExpectedBucketOwner`, so a bucket that changed hands is refused.
    pub account_id: Option<String>,
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
    pub staging_gzip_level: u32,
    pub put_concurrency: usize,
    /// Minutes after an hour's end before the flusher closes it.
    pub flush_grace_minutes: usize,
    pub archive_gzip_level: u32,
    /// An archive part rolls over to the next at this compressed size.
    pub archive_part_max_bytes: usize,
    /// Partitions flushed at once.
    pub flush_concurrency: usize,
    /// Queue name → stream, for records without a `stream` attribute.
    pub queues: HashMap<String, String>,
    /// Stream name → profile; always holds the built-in streams.
    pub streams: HashMap<String, Profile>,
    pub destinations: Vec<Destination>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document {
    export_bucket: Option<String>,
    default_stream: Option<String>,
    partition_by: Option<PartitionBy>,
    max_event_bytes: Option<usize>,
    staging_gzip_level: Option<u32>,
    put_concurrency: Option<usize>,
    flush_grace_minutes: Option<usize>,
    archive_gzip_level: Option<u32>,
    archive_part_max_bytes: Option<usize>,
    flush_concurrency: Option<usize>,
    #[serde(default)]
    queues: BTreeMap<String, String>,
    #[serde(default)]
    streams: BTreeMap<String, StreamDocument>,
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
    account_id: Option<String>,
}

/// The destination the `DESTINATION_*` variables describe, if any.
fn destination_from_env(lookup: &impl Fn(&str) -> Option<String>) -> Option<DestinationDocument> {
    let bucket = lookup(env::DESTINATION_BUCKET)?;
    Some(DestinationDocument {
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
        success_marker: false,
        account_id: lookup(env::DESTINATION_ACCOUNT_ID),
    })
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
        for (name, stream) in &document.streams {
            let field = format!("streams.{name}");
            check_stream_name(&field, name)?;
            streams.insert(name.clone(), build_profile(&field, stream)?);
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
        let staging_gzip_level = number_setting(
            &lookup,
            env::STAGING_GZIP_LEVEL,
            "stagingGzipLevel",
            document.staging_gzip_level.map(|level| level as usize),
            defaults::STAGING_GZIP_LEVEL as usize,
            0..=9,
        )? as u32;
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

        let mut destination_documents = document.destinations;
        let from_environment = destination_from_env(&lookup);
        let environment_index = destination_documents.len();
        let has_environment_destination = from_environment.is_some();
        destination_documents.extend(from_environment);
        let destinations =
            build_destinations(&streams, destination_documents).map_err(|error| {
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
            staging_gzip_level,
            put_concurrency,
            flush_grace_minutes,
            archive_gzip_level,
            archive_part_max_bytes,
            flush_concurrency,
            queues,
            streams,
            destinations,
        })
    }

    /// The enabled destinations that select events of `stream` and `tenant`
    /// (the tenant's key segment, as in partition keys).
    pub fn destinations_for<'a>(
        &'a self,
        stream: &'a str,
        tenant: &'a TenantKey,
    ) -> impl Iterator<Item = &'a Destination> + 'a {
        self.destinations.iter().filter(move |destination| {
            destination.enabled
                && destination
                    .streams
                    .as_ref()
                    .is_none_or(|streams| streams.iter().any(|s| s == stream))
                && destination
                    .tenants
                    .as_ref()
                    .is_none_or(|tenants| tenants.iter().any(|t| TenantKey::encode(t) == *tenant))
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

fn build_destinations(
    streams: &HashMap<String, Profile>,
    documents: Vec<DestinationDocument>,
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
                other.enabled && other.bucket == document.bucket && other.prefix == document.prefix
            })
            && !(other.shared && document.shared)
        {
            return Err(ConfigError::new(
                field("bucket"),
                format!(
                    "`s3://{}/{}` is also destination `{}`'s: a bucket serves one tenant unless both set `shared: true`",
                    document.bucket, document.prefix, other.name
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
            account_id: document.account_id,
        });
    }
    Ok(destinations)
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
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
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
        assert_eq!(config.staging_gzip_level, 1);
        assert!(config.streams.contains_key("airkit-audit-logs"));
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
    fn layout_that_could_collide_is_refused_naming_the_token() {
        let doc = r#"{"destinations":[{"name":"a","bucket":"dest","layout":"{stream}/{date}/{HH}/{part}.gz"}]}"#;
        let error = config(&[("EXPORT_BUCKET", "exports")], Some(doc)).unwrap_err();
        assert_eq!(error.field, "destinations[0].layout");
        assert!(error.message.contains("{tenant}"), "{error}");
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
    fn s3_uris_split_into_bucket_and_key() {
        assert_eq!(parse_s3_uri("s3://b/k/c.json"), Some(("b", "k/c.json")));
        assert_eq!(parse_s3_uri("s3://b/"), None);
        assert_eq!(parse_s3_uri("https://b/k"), None);
    }
}
