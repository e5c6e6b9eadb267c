//! Keys in the export bucket. Staging is hour first, so the flusher finds
//! pending work by listing `staging/<yyyy-mm-dd>/<HH>/`, at a cost that
//! follows pending work, not history.
//!
//! - staged object (one per invocation, sub-batch and hour, every stream and
//!   tenant in it, see `staged`):
//!   `staging/<yyyy-mm-dd>/<HH>/<ingest-ms>-<request-id>[.<sub-batch>].staged`
//! - staged chunk (the format before staged objects, still read so that an
//!   upgrade flushes what was staged before it):
//!   `staging/<yyyy-mm-dd>/<HH>/<stream>/<tenant>/<ingest-ms>-<request-id>.ndjson.gz`,
//!   or `…/<ingest-ms>-<request-id>.<sub-batch>.ndjson.gz` for the second and
//!   later sub-batches of an invocation (`<sub-batch>` four digits or more, from 0001)
//! - rejected records: `errors/<yyyy-mm-dd>/<HH>/<ingest-ms>-<request-id>.ndjson.gz`
//! - archive part: `archive/<stream>/<tenant>/<yyyy-mm-dd>/<HH>/part-NNNNN.<attempt>.ndjson.gz`
//!   (before attempts: `…/part-NNNNN.ndjson.gz`), or a range of a bundle
//! - manifest (the commit record): `manifests/<stream>/<tenant>/<yyyy-mm-dd>/<HH>.json`
//! - a bundle (the small parts, sidecars and id digests of a run's group of
//!   partitions): `archive/_bundles/<yyyy-mm-dd>/<HH>/<now-ms>-<attempt>.bundle`
//! - the hour's id digest, before bundles held it:
//!   `manifests/<stream>/<tenant>/<yyyy-mm-dd>/<HH>.ids-<generation>`, and
//!   as a checkpoint commit writes it:
//!   `manifests/<stream>/<tenant>/<yyyy-mm-dd>/<HH>.ids-<generation>.<attempt>`
//! - a partition with parts to publish: `pending/<stream>/<tenant>/<yyyy-mm-dd>/<HH>.json`
//! - a backfill's progress: `backfills/<id>.json`
//! - a coordinator run's work items and records: `work/<now-ms>-<attempt>/…`
//!
//! `<ingest-ms>` is 13 digits (zero-padded), so keys sort in ingest order.
//! The stream is a validated name and the tenant a [`TenantKey`]; the request
//! id is reduced to `A-Z a-z 0-9 -`, so no segment can climb out of its
//! prefix.

use crate::partition::{Hour, PartitionKey, TenantKey};

/// The folder under the export bucket holding staged chunks.
pub const STAGING_PREFIX: &str = "staging/";
/// The folder under the export bucket holding rejected records.
pub const ERRORS_PREFIX: &str = "errors/";
/// The folder under the export bucket holding the canonical archive.
pub const ARCHIVE_PREFIX: &str = "archive/";
/// The folder under the export bucket holding manifests and id digests.
pub const MANIFESTS_PREFIX: &str = "manifests/";
/// The folder under the export bucket marking partitions with pending
/// publishes.
pub const PENDING_PREFIX: &str = "pending/";
/// The folder under the export bucket holding backfills' progress records.
pub const BACKFILLS_PREFIX: &str = "backfills/";
/// The folder under the export bucket holding the configuration document
/// (`EXPORT_CONFIG=s3://<export bucket>/config/…`).
pub const CONFIG_PREFIX: &str = "config/";
/// The folder under the export bucket holding copies of staged objects the
/// flusher refused as corrupt or truncated, each at
/// `quarantine/<its staging key>`, for inspection.
pub const QUARANTINE_PREFIX: &str = "quarantine/";
/// The folder of the coordinator's runs: each run's work items, the
/// record of which staged objects it may delete, and its workers' done
/// records (`work/<run>/…`, see [`work_item_key`]).
pub const WORK_PREFIX: &str = "work/";
/// Every folder of the export bucket the pipeline reads back: no
/// destination may write into one (see `Config`'s destination checks).
pub const PIPELINE_PREFIXES: [&str; 9] = [
    STAGING_PREFIX,
    ERRORS_PREFIX,
    ARCHIVE_PREFIX,
    MANIFESTS_PREFIX,
    PENDING_PREFIX,
    BACKFILLS_PREFIX,
    CONFIG_PREFIX,
    QUARANTINE_PREFIX,
    WORK_PREFIX,
];

/// The folder of coordinator run `run` (its "now" and attempt,
/// `<now-ms>-<attempt>`): everything the run and its workers write.
pub fn work_run_prefix(run: &str) -> String {
    format!("{WORK_PREFIX}{run}/")
}

/// The record of coordinator run `run`: how many items it sent, and which
/// staged objects its workers may delete once every item touching them is
/// done.
pub fn work_run_key(run: &str) -> String {
    format!("{WORK_PREFIX}{run}/run.json")
}

/// Work item `item` (from 0) of coordinator run `run`.
pub fn work_item_key(run: &str, item: u32) -> String {
    format!("{WORK_PREFIX}{run}/item-{item:05}.json")
}

/// The record a worker writes once it has flushed every partition of
/// work item `item` of run `run`.
pub fn work_done_key(run: &str, item: u32) -> String {
    format!("{WORK_PREFIX}{run}/done-{item:05}.json")
}

/// The key of the chunk one invocation stages for one partition (its first
/// sub-batch: the key every batcher wrote before sub-batches).
pub fn staging_chunk_key(partition: &PartitionKey, ingest_millis: i64, request_id: &str) -> String {
    staging_sub_batch_chunk_key(partition, ingest_millis, request_id, 0)
}

/// The key of the chunk sub-batch `sub_batch` (from 0) of one invocation
/// stages for one partition. Sub-batch 0 has the key of
/// [`staging_chunk_key`]; later ones add `.<sub-batch>` before the suffix.
/// A request id holds only `A-Z a-z 0-9 -`, so the `.` cannot be part of
/// it: two (request, sub-batch) pairs never share a key, and the same
/// batch always gives the same keys. Every reader that took the old keys
/// takes these (same folders, same `.ndjson.gz` suffix).
pub fn staging_sub_batch_chunk_key(
    partition: &PartitionKey,
    ingest_millis: i64,
    request_id: &str,
    sub_batch: u32,
) -> String {
    format!(
        "{STAGING_PREFIX}{}/{}/{}/{}.ndjson.gz",
        partition.hour.date_path(),
        partition.stream,
        partition.tenant,
        staged_file_stem(ingest_millis, request_id, sub_batch)
    )
}

/// `<ingest-ms>-<request-id>[.<sub-batch>]`, the file name of staged data
/// before its suffix: 13 digits, so names sort by ingest time; sub-batch 0
/// without a sequence number, the others with four digits or more.
fn staged_file_stem(ingest_millis: i64, request_id: &str, sub_batch: u32) -> String {
    let sequence = match sub_batch {
        0 => String::new(),
        n => format!(".{n:04}"),
    };
    format!(
        "{ingest_millis:013}-{}{sequence}",
        safe_request_id(request_id)
    )
}

/// The suffix of staged objects (see `staged`).
pub const STAGED_OBJECT_SUFFIX: &str = ".staged";

/// The key of the staged object holding sub-batch `sub_batch` (from 0) of
/// invocation `request_id` for `hour`: directly in the hour's folder, so
/// it sorts by hour first and never parses as a staged chunk (those are
/// two folders deeper). Sub-batch 0 has no sequence number.
pub fn staged_object_key(
    hour: Hour,
    ingest_millis: i64,
    request_id: &str,
    sub_batch: u32,
) -> String {
    format!(
        "{STAGING_PREFIX}{}/{}{STAGED_OBJECT_SUFFIX}",
        hour.date_path(),
        staged_file_stem(ingest_millis, request_id, sub_batch)
    )
}

/// What a staged object's key says: its hour, ingest time, request id and
/// sub-batch; `None` for any other key.
pub fn parse_staged_object_key(key: &str) -> Option<(Hour, i64, String, u32)> {
    let rest = key.strip_prefix(STAGING_PREFIX)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let [date, hour, file] = segments.as_slice() else {
        return None;
    };
    let hour = Hour::parse_date_path(&format!("{date}/{hour}"))?;
    let name = file.strip_suffix(STAGED_OBJECT_SUFFIX)?;
    let (millis, rest) = name.split_once('-')?;
    if millis.len() != 13 || !millis.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (request_id, sub_batch) = match rest.split_once('.') {
        Some((request_id, sequence))
            if sequence.len() >= 4 && sequence.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (request_id, sequence.parse().ok()?)
        }
        Some(_) => return None,
        None => (rest, 0),
    };
    if request_id.is_empty() {
        return None;
    }
    Some((hour, millis.parse().ok()?, request_id.to_owned(), sub_batch))
}

/// The order staged data is compacted in, for staged objects and staged
/// chunks alike: by ingest time, then request id, then sub-batch, so an
/// hour holding both formats (across an upgrade) compacts in the order its
/// events were staged, and the same staged data always in the same order.
/// `None` for a key of neither kind.
pub fn staged_order(key: &str) -> Option<(i64, String, u32)> {
    if let Some((_, millis, request_id, sub_batch)) = parse_staged_object_key(key) {
        return Some((millis, request_id, sub_batch));
    }
    parse_staging_chunk_key(key)?;
    let file = key.rsplit('/').next()?.strip_suffix(".ndjson.gz")?;
    let (millis, rest) = file.split_once('-')?;
    let (request_id, sub_batch) = match rest.split_once('.') {
        Some((request_id, sequence)) => (request_id, sequence.parse().ok()?),
        None => (rest, 0),
    };
    Some((millis.parse().ok()?, request_id.to_owned(), sub_batch))
}

/// Where the quarantine copy of the staged object `staged_key` goes: the
/// same key under [`QUARANTINE_PREFIX`], so it names the object it copies.
pub fn quarantine_key(staged_key: &str) -> String {
    format!("{QUARANTINE_PREFIX}{staged_key}")
}

/// The key of the file holding one invocation's rejected records.
pub fn errors_key(hour: Hour, ingest_millis: i64, request_id: &str) -> String {
    format!(
        "{ERRORS_PREFIX}{}/{:013}-{}.ndjson.gz",
        hour.date_path(),
        ingest_millis,
        safe_request_id(request_id)
    )
}

/// Reads an errors file key back into the hour, ingest time and request id
/// it was written with; `None` for any key not of the errors layout.
pub fn parse_errors_key(key: &str) -> Option<(Hour, i64, String)> {
    let rest = key.strip_prefix(ERRORS_PREFIX)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let [date, hour, file] = segments.as_slice() else {
        return None;
    };
    let hour = Hour::parse_date_path(&format!("{date}/{hour}"))?;
    let (millis, request_id) = file.strip_suffix(".ndjson.gz")?.split_once('-')?;
    if millis.len() != 13 || !millis.bytes().all(|b| b.is_ascii_digit()) || request_id.is_empty() {
        return None;
    }
    Some((hour, millis.parse().ok()?, request_id.to_owned()))
}

/// The prefix listing every staged chunk of one hour.
pub fn staging_hour_prefix(hour: Hour) -> String {
    format!("{STAGING_PREFIX}{}/", hour.date_path())
}

/// The folder of a partition's files under `archive/` or `manifests/`.
fn partition_path(partition: &PartitionKey) -> String {
    format!(
        "{}/{}/{}",
        partition.stream,
        partition.tenant,
        partition.hour.date_path()
    )
}

/// The name of archive part `number` (from 1) of a partition: how readers
/// (`inspect`, the tests) call it wherever it is stored, and the key the
/// flusher stored parts at before their keys carried the attempt (such
/// parts stay where their manifests say they are).
pub fn archive_part_key(partition: &PartitionKey, number: u32) -> String {
    format!(
        "{ARCHIVE_PREFIX}{}/part-{number:05}.ndjson.gz",
        partition_path(partition)
    )
}

/// The key at which the run `attempt` (see `bundle_key`) stores archive
/// part `number` of a partition when the part is an object of its own:
/// written before the commit that names it, so unique to the attempt
/// (docs/design.md, invariant 7). Two runs flushing the same partition at
/// once each write their own; the one whose commit wins is the archive,
/// the other's is never named by a manifest.
pub fn archive_part_object_key(partition: &PartitionKey, number: u32, attempt: &str) -> String {
    format!(
        "{ARCHIVE_PREFIX}{}/part-{number:05}.{attempt}.ndjson.gz",
        partition_path(partition)
    )
}

/// The key of the provenance sidecar (one line per line of the part, see
/// `provenance`) of archive part `number` written by the run `attempt`,
/// when the sidecar is an object of its own (see
/// [`archive_part_object_key`]).
pub fn archive_provenance_key(partition: &PartitionKey, number: u32, attempt: &str) -> String {
    format!(
        "{ARCHIVE_PREFIX}{}/part-{number:05}.{attempt}.provenance.gz",
        partition_path(partition)
    )
}

/// The folder of bundles under `archive/`: `_` starts no stream name, so
/// it is never a partition's folder.
pub const BUNDLES_PREFIX: &str = "archive/_bundles/";

/// The key of a bundle: one object holding the archive parts, provenance
/// sidecars and id digests smaller than an upload part of every partition
/// a run flushed together, each at a range its manifest records, so that
/// a small partition costs no PUT of its own for them. `attempt` makes the
/// key unique to the run that wrote it (nothing else ever writes there).
pub fn bundle_key(now_millis: i64, attempt: &str) -> String {
    let hour = Hour::containing(now_millis);
    format!(
        "{BUNDLES_PREFIX}{}/{now_millis:013}-{attempt}.bundle",
        hour.date_path()
    )
}

/// The key of a partition's manifest.
pub fn manifest_key(partition: &PartitionKey) -> String {
    format!("{MANIFESTS_PREFIX}{}.json", partition_path(partition))
}

/// The key of the id digest written with manifest generation `generation`.
pub fn id_digest_key(partition: &PartitionKey, generation: u64) -> String {
    format!(
        "{MANIFESTS_PREFIX}{}.ids-{generation:06}",
        partition_path(partition)
    )
}

/// The key of the id digest a checkpoint commit (generation `generation`)
/// of the run `attempt` writes as an object of its own: unique to the
/// attempt, so two runs checkpointing the same partition at once never
/// write the same object (docs/design.md, invariant 7).
pub fn checkpoint_id_digest_key(
    partition: &PartitionKey,
    generation: u64,
    attempt: &str,
) -> String {
    format!(
        "{MANIFESTS_PREFIX}{}.ids-{generation:06}.{attempt}",
        partition_path(partition)
    )
}

/// The key of the id digest of a range of a sharded partition's shards
/// (from `first`) written by the run `attempt` (see `manifest::ShardState`).
pub fn shard_id_digest_key(partition: &PartitionKey, first: u32, attempt: &str) -> String {
    format!(
        "{MANIFESTS_PREFIX}{}.ids-shards-{first:04}.{attempt}",
        partition_path(partition)
    )
}

/// The marker of a partition with parts still to publish: the flusher lists
/// `pending/` each run, so retries cost in proportion to pending work.
pub fn pending_publish_key(partition: &PartitionKey) -> String {
    format!("{PENDING_PREFIX}{}.json", partition_path(partition))
}

/// The key of the progress record of backfill `id` (hex digits, derived
/// from the request, so the same request finds its progress again).
pub fn backfill_progress_key(id: &str) -> String {
    format!("{BACKFILLS_PREFIX}{id}.json")
}

/// The key of a partition's manifest folder for one stream and tenant:
/// `manifests/<stream>/<tenant>/`, whose folders are the dates.
pub fn manifest_tenant_prefix(stream: &str, tenant: &TenantKey) -> String {
    format!("{MANIFESTS_PREFIX}{stream}/{tenant}/")
}

/// Reads a manifest key back into its partition; `None` for id digests and
/// any other key.
pub fn parse_manifest_key(key: &str) -> Option<PartitionKey> {
    parse_partition_path(key.strip_prefix(MANIFESTS_PREFIX)?.strip_suffix(".json")?)
}

/// Reads a pending-publish marker key back into its partition.
pub fn parse_pending_publish_key(key: &str) -> Option<PartitionKey> {
    parse_partition_path(key.strip_prefix(PENDING_PREFIX)?.strip_suffix(".json")?)
}

/// `<stream>/<tenant>/<date>/<HH>` (what [`partition_path`] writes) back
/// into its partition.
fn parse_partition_path(path: &str) -> Option<PartitionKey> {
    let segments: Vec<&str> = path.split('/').collect();
    let [stream, tenant, date, hour] = segments.as_slice() else {
        return None;
    };
    Some(PartitionKey {
        hour: Hour::parse_date_path(&format!("{date}/{hour}"))?,
        stream: (*stream).to_owned(),
        tenant: TenantKey::from_encoded(tenant),
    })
}

/// Reads a staged chunk key back into its partition; `None` for any key not
/// of the staging layout.
pub fn parse_staging_chunk_key(key: &str) -> Option<PartitionKey> {
    let rest = key.strip_prefix(STAGING_PREFIX)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let [date, hour, stream, tenant, file] = segments.as_slice() else {
        return None;
    };
    if !file.ends_with(".ndjson.gz") || stream.is_empty() || tenant.is_empty() {
        return None;
    }
    let hour = Hour::parse_date_path(&format!("{date}/{hour}"))?;
    Some(PartitionKey {
        hour,
        stream: (*stream).to_owned(),
        tenant: TenantKey::from_encoded(tenant),
    })
}

fn safe_request_id(request_id: &str) -> String {
    let safe: String = request_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    if safe.is_empty() {
        "local".to_owned()
    } else {
        safe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_object_keys_are_hour_first_and_parse_back() {
        let hour = Hour::containing(1_668_900_196_792);
        let first = staged_object_key(hour, 1_668_900_200_000, "c0ffee-01", 0);
        assert_eq!(
            first,
            "staging/2022-11-19/23/1668900200000-c0ffee-01.staged"
        );
        let later = staged_object_key(hour, 1_668_900_200_000, "c0ffee-01", 12);
        assert_eq!(
            later,
            "staging/2022-11-19/23/1668900200000-c0ffee-01.0012.staged"
        );
        assert_eq!(
            parse_staged_object_key(&later),
            Some((hour, 1_668_900_200_000, "c0ffee-01".into(), 12))
        );
        assert_eq!(
            parse_staged_object_key(&first),
            Some((hour, 1_668_900_200_000, "c0ffee-01".into(), 0))
        );
        // Never a chunk, and chunks are never staged objects.
        assert_eq!(parse_staging_chunk_key(&first), None);
        let partition = PartitionKey {
            hour,
            stream: "s".into(),
            tenant: TenantKey::encode("t"),
        };
        let chunk = staging_chunk_key(&partition, 1_668_900_200_000, "r");
        assert_eq!(parse_staged_object_key(&chunk), None);
        for bad in [
            "staging/2022-11-19/23/1668900200000-.staged",
            "staging/2022-11-19/23/166890020000-r.staged",
            "staging/2022-11-19/23/1668900200000-r.1.staged",
            "staging/2022-11-19/23/1668900200000-r.ndjson.gz",
            "errors/2022-11-19/23/1668900200000-r.staged",
        ] {
            assert_eq!(parse_staged_object_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn both_formats_order_by_ingest_time_then_request() {
        let hour = Hour::containing(1_668_900_196_792);
        let partition = PartitionKey {
            hour,
            stream: "s".into(),
            tenant: TenantKey::encode("t"),
        };
        let mut keys = vec![
            staged_object_key(hour, 3, "a", 0),
            staging_sub_batch_chunk_key(&partition, 2, "b", 1),
            staging_chunk_key(&partition, 2, "b"),
            staged_object_key(hour, 1, "z", 0),
        ];
        keys.sort_by_key(|key| staged_order(key).expect("staged keys"));
        assert_eq!(
            keys,
            vec![
                staged_object_key(hour, 1, "z", 0),
                staging_chunk_key(&partition, 2, "b"),
                staging_sub_batch_chunk_key(&partition, 2, "b", 1),
                staged_object_key(hour, 3, "a", 0),
            ]
        );
        assert_eq!(staged_order("staging/x"), None);
    }

    #[test]
    fn chunk_key_is_hour_first() {
        let partition = PartitionKey {
            hour: Hour::containing(1_668_900_196_792),
            stream: "airkit-app-events".into(),
            tenant: TenantKey::encode("org-1"),
        };
        assert_eq!(
            staging_chunk_key(&partition, 1_668_900_200_000, "c0ffee-01"),
            "staging/2022-11-19/23/airkit-app-events/org-1/1668900200000-c0ffee-01.ndjson.gz"
        );
    }

    #[test]
    fn chunk_keys_parse_back_into_their_partition() {
        let partition = PartitionKey {
            hour: Hour::containing(1_668_900_196_792),
            stream: "airkit-audit-logs".into(),
            tenant: TenantKey::encode("a/b"),
        };
        let key = staging_chunk_key(&partition, 1_668_900_200_000, "r");
        assert_eq!(parse_staging_chunk_key(&key), Some(partition.clone()));
        assert_eq!(
            parse_staging_chunk_key("staging/2022-11-19/23/x.ndjson.gz"),
            None
        );
        assert_eq!(
            parse_staging_chunk_key("staging/2022-13-19/23/s/t/x.ndjson.gz"),
            None
        );
        assert_eq!(
            archive_part_key(&partition, 3),
            "archive/airkit-audit-logs/a%2Fb/2022-11-19/23/part-00003.ndjson.gz"
        );
        assert_eq!(
            parse_pending_publish_key(&pending_publish_key(&partition)),
            Some(partition.clone())
        );
        assert_eq!(
            manifest_key(&partition),
            "manifests/airkit-audit-logs/a%2Fb/2022-11-19/23.json"
        );
        assert_eq!(
            parse_manifest_key(&manifest_key(&partition)),
            Some(partition.clone())
        );
        assert_eq!(
            parse_manifest_key(&id_digest_key(&partition, 1)),
            None,
            "an id digest is not a manifest"
        );
        assert!(
            manifest_key(&partition).starts_with(&manifest_tenant_prefix(
                &partition.stream,
                &partition.tenant
            ))
        );
    }

    #[test]
    fn sub_batch_chunk_keys_are_distinct_and_parse_like_the_first() {
        let partition = PartitionKey {
            hour: Hour::containing(1_668_900_196_792),
            stream: "airkit-app-events".into(),
            tenant: TenantKey::encode("org-1"),
        };
        let first = staging_sub_batch_chunk_key(&partition, 1_668_900_200_000, "c0ffee-01", 0);
        assert_eq!(
            first,
            staging_chunk_key(&partition, 1_668_900_200_000, "c0ffee-01")
        );
        assert_eq!(
            staging_sub_batch_chunk_key(&partition, 1_668_900_200_000, "c0ffee-01", 2),
            "staging/2022-11-19/23/airkit-app-events/org-1/1668900200000-c0ffee-01.0002.ndjson.gz"
        );
        // A request id that looks like a sequence number cannot reach the
        // key of another request's sub-batch: its `.` is dropped.
        assert_ne!(
            staging_sub_batch_chunk_key(&partition, 1_668_900_200_000, "c0ffee-01.0002", 0),
            staging_sub_batch_chunk_key(&partition, 1_668_900_200_000, "c0ffee-01", 2),
        );
        let keys: std::collections::BTreeSet<String> = (0..20_000)
            .map(|n| staging_sub_batch_chunk_key(&partition, 1_668_900_200_000, "r", n))
            .collect();
        assert_eq!(keys.len(), 20_000);
        for key in &keys {
            assert_eq!(
                parse_staging_chunk_key(key),
                Some(partition.clone()),
                "{key}"
            );
        }
    }

    #[test]
    fn errors_keys_parse_back() {
        let hour = Hour::containing(1_668_900_196_792);
        let key = errors_key(hour, 1_668_900_200_000, "c0ffee-01");
        assert_eq!(
            parse_errors_key(&key),
            Some((hour, 1_668_900_200_000, "c0ffee-01".to_owned()))
        );
        assert_eq!(
            parse_errors_key("errors/2022-11-19/23/12-x.ndjson.gz"),
            None
        );
        assert_eq!(parse_errors_key("errors/2022-11-19/23/notes.txt"), None);
        assert_eq!(
            parse_errors_key("staging/2022-11-19/23/1668900200000-x.ndjson.gz"),
            None
        );
    }

    #[test]
    fn request_id_cannot_add_segments() {
        let key = errors_key(Hour::containing(0), 5, "../../x/y");
        assert_eq!(key, "errors/1970-01-01/00/0000000000005-xy.ndjson.gz");
    }
}
