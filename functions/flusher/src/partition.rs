//! Flushing one partition: compact its new staged chunks into archive parts,
//! commit the manifest, publish, then delete the consumed chunks.
//!
//! Each step is safe to redo if the run stops after it (docs/design.md,
//! invariants 2 to 4): before the commit, parts and the id digest are
//! rewritten with the same keys and bytes; after it, consumed chunks are
//! skipped and only deleted, and pending publishes are retried.

use std::collections::HashSet;

use shared::alert::InvocationAlerts;
use shared::dedup::IdHash;
use shared::layout;
use shared::manifest::{self, ArchivePart, MANIFEST_VERSION, Manifest, ProvenanceFile};
use shared::partition::PartitionKey;
use shared::provenance::Provenance;
use shared::time::format_rfc3339_millis;

use crate::archive::PartWriter;
use crate::compaction;
use crate::error::FlushError;
use crate::publish::{self, PublishOutcome};
use crate::store;
use crate::trigger::Trigger;
use crate::{Flusher, Step};

/// What flushing one partition did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    pub events: u64,
    pub duplicates: u64,
    pub parts: Vec<u32>,
    pub chunks_consumed: usize,
    pub publish: PublishOutcome,
}

/// Flushes `partition`, whose staged chunks (in key order) are `staged`.
pub async fn flush_partition(
    flusher: &Flusher,
    alerts: &InvocationAlerts<'_>,
    trigger: &Trigger,
    partition: &PartitionKey,
    staged: &[String],
) -> Result<PartitionReport, FlushError> {
    let s3 = &flusher.s3;
    let bucket = &flusher.config.export_bucket;
    let manifest_key = layout::manifest_key(partition);
    let (mut manifest, mut etag) = match store::read_manifest(s3, bucket, &manifest_key).await? {
        Some((manifest, etag)) => (manifest, Some(etag)),
        None => (new_manifest(partition), None),
    };
    let had_pending = manifest.has_pending();
    let consumed = manifest.consumed();
    let new_chunks: Vec<String> = staged
        .iter()
        .filter(|key| !consumed.contains(key.as_str()))
        .cloned()
        .collect();
    let mut report = PartitionReport::default();

    if !new_chunks.is_empty() {
        let ids = id_hash(&manifest).ok_or_else(|| FlushError::Corrupt {
            what: format!(
                "id digest s3://{bucket}/{}",
                manifest.id_digest.as_deref().unwrap_or_default()
            ),
            message: format!(
                "id digest version {} is not known to this flusher",
                manifest.id_digest_version
            ),
        })?;
        let mut seen = match &manifest.id_digest {
            Some(key) => {
                let (bytes, _) =
                    store::get(s3, bucket, key)
                        .await?
                        .ok_or_else(|| FlushError::Corrupt {
                            what: format!("id digest s3://{bucket}/{key}"),
                            message: "named by the manifest but missing".into(),
                        })?;
                manifest::decode_id_digest(&bytes).ok_or_else(|| FlushError::Corrupt {
                    what: format!("id digest s3://{bucket}/{key}"),
                    message: "its length is not a multiple of 16".into(),
                })?
            }
            None => HashSet::new(),
        };
        let parts = compact(
            flusher,
            partition,
            &manifest,
            &new_chunks,
            ids,
            &mut seen,
            &mut report,
        )
        .await?;
        if flusher.stop_after == Some(Step::PartsWritten) {
            return Err(FlushError::Injected("parts written"));
        }

        let generation = manifest.generation + 1;
        let digest_key = layout::id_digest_key(partition, generation);
        store::put(
            s3,
            bucket,
            &digest_key,
            manifest::encode_id_digest(&seen),
            "application/octet-stream",
        )
        .await?;
        let numbers: Vec<u32> = parts.iter().map(|p| p.number).collect();
        let previous_digest = manifest.id_digest.take();
        manifest.generation = generation;
        manifest.events += report.events;
        manifest.duplicates_dropped += report.duplicates;
        manifest.parts.extend(parts);
        manifest.consumed_chunks.extend(new_chunks.iter().cloned());
        manifest.id_digest = Some(digest_key);
        manifest.id_digest_version = ids.version();
        manifest.committed_at = format_rfc3339_millis(trigger.now_millis);
        publish::assign(flusher, partition, &mut manifest, &numbers);
        etag = Some(
            store::commit_manifest(s3, bucket, &manifest_key, &manifest, etag.as_deref()).await?,
        );
        // The digest the old manifest named is superseded by the new one.
        if let Some(previous) = previous_digest {
            store::delete_keys(s3, bucket, &[previous]).await?;
        }
        report.parts = numbers;
        report.chunks_consumed = new_chunks.len();
        if flusher.stop_after == Some(Step::ManifestCommitted) {
            return Err(FlushError::Injected("manifest committed"));
        }
    }

    if manifest.has_pending() {
        let stop_early = flusher.stop_after == Some(Step::SomePublished);
        let outcome =
            publish::publish_pending(flusher, alerts, partition, &mut manifest, stop_early).await;
        // Whatever was published is recorded, even when the run stops here.
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                store::commit_manifest(s3, bucket, &manifest_key, &manifest, etag.as_deref())
                    .await?;
                return Err(error);
            }
        };
        if outcome.published > 0 || outcome.dropped > 0 || !outcome.failed.is_empty() {
            manifest.committed_at = format_rfc3339_millis(trigger.now_millis);
            store::commit_manifest(s3, bucket, &manifest_key, &manifest, etag.as_deref()).await?;
        }
        report.publish = outcome;
    }
    let pending_key = layout::pending_publish_key(partition);
    if manifest.has_pending() {
        store::put(s3, bucket, &pending_key, b"{}".to_vec(), "application/json").await?;
    } else if had_pending {
        store::delete_keys(s3, bucket, &[pending_key]).await?;
    }

    if flusher.stop_after == Some(Step::BeforeDeletingChunks) {
        return Err(FlushError::Injected("before deleting chunks"));
    }
    // Every staged chunk this manifest has consumed: the new ones, and any
    // left by a run that stopped after its commit.
    let consumed = manifest.consumed();
    let done: Vec<String> = staged
        .iter()
        .filter(|key| consumed.contains(key.as_str()))
        .cloned()
        .collect();
    store::delete_keys(s3, bucket, &done).await?;
    Ok(report)
}

/// The hash a partition's event ids are kept with: its digest's, so that an
/// event has one identity across commits, or the current one when it has no
/// digest yet; `None` for a digest version this flusher does not know.
fn id_hash(manifest: &Manifest) -> Option<IdHash> {
    match manifest.id_digest {
        Some(_) => IdHash::from_version(manifest.id_digest_version),
        None => Some(IdHash::CURRENT),
    }
}

fn new_manifest(partition: &PartitionKey) -> Manifest {
    Manifest {
        version: MANIFEST_VERSION,
        stream: partition.stream.clone(),
        tenant: partition.tenant.as_str().to_owned(),
        hour: format_rfc3339_millis(partition.hour.start_millis()),
        id_digest_version: IdHash::CURRENT.version(),
        ..Manifest::default()
    }
}

/// The level of provenance sidecars: internal, read back only by exports
/// with `_export` metadata, and mostly random ids: compress them quickly.
const PROVENANCE_GZIP_LEVEL: u32 = 1;

/// An archive part being written, with its provenance sidecar once a line
/// of it has provenance and a destination asks for it (the lines before get
/// empty sidecar lines).
struct OpenPart {
    events: PartWriter,
    /// Where the sidecar goes, when provenance is kept; the S3 client and
    /// bucket to write it with.
    sidecar_key: Option<String>,
    s3: aws_sdk_s3::Client,
    bucket: String,
    provenance: Option<PartWriter>,
}

impl OpenPart {
    fn new(
        flusher: &Flusher,
        partition: &PartitionKey,
        number: u32,
        keep_provenance: bool,
    ) -> Self {
        let config = &flusher.config;
        Self {
            events: PartWriter::new(
                flusher.s3.clone(),
                &config.export_bucket,
                layout::archive_part_key(partition, number),
                number,
                config.archive_gzip_level,
            ),
            sidecar_key: keep_provenance.then(|| layout::archive_provenance_key(partition, number)),
            s3: flusher.s3.clone(),
            bucket: config.export_bucket.clone(),
            provenance: None,
        }
    }

    async fn push(
        &mut self,
        event: &str,
        event_millis: Option<i64>,
        provenance: Option<Provenance<'_>>,
        fields: &mut String,
    ) -> Result<(), FlushError> {
        if provenance.is_some()
            && self.provenance.is_none()
            && let Some(key) = self.sidecar_key.take()
        {
            let mut sidecar = PartWriter::new(
                self.s3.clone(),
                &self.bucket,
                key,
                self.events.number(),
                PROVENANCE_GZIP_LEVEL,
            );
            for _ in 0..self.events.events() {
                sidecar.push("\t", None).await?;
            }
            self.provenance = Some(sidecar);
        }
        self.events.push(event, event_millis).await?;
        if let Some(sidecar) = &mut self.provenance {
            fields.clear();
            provenance.unwrap_or_default().write_fields(fields);
            sidecar.push(fields, None).await?;
        }
        Ok(())
    }

    async fn finish(self) -> Result<ArchivePart, FlushError> {
        let mut part = self.events.finish().await?;
        if let Some(sidecar) = self.provenance {
            let written = sidecar.finish().await?;
            part.provenance = Some(ProvenanceFile {
                key: written.key,
                bytes: written.bytes,
            });
        }
        Ok(part)
    }
}

/// Streams the new chunks in key order into archive parts numbered after
/// the manifest's, dropping every event already in `seen` (identities
/// hashed with `ids`, the partition's id digest hash). A staged line's
/// provenance goes to the part's sidecar (when a destination asks for
/// `_export` metadata), never into the part.
async fn compact(
    flusher: &Flusher,
    partition: &PartitionKey,
    manifest: &Manifest,
    chunks: &[String],
    ids: IdHash,
    seen: &mut HashSet<u128>,
    report: &mut PartitionReport,
) -> Result<Vec<ArchivePart>, FlushError> {
    let config = &flusher.config;
    let profile = config.streams.get(&partition.stream);
    let mut parts = Vec::new();
    let mut number = manifest.next_part_number();
    let mut writer: Option<OpenPart> = None;
    let mut fields = String::new();
    let mut buffer = Vec::new();
    let keep_provenance = config.records_provenance();
    for chunk in chunks {
        let Some((bytes, _)) = store::get(&flusher.s3, &config.export_bucket, chunk).await? else {
            // Listed a moment ago, gone now: another flusher consumed it.
            return Err(FlushError::LostRace { key: chunk.clone() });
        };
        let corrupt = |message: String| FlushError::Corrupt {
            what: format!("staged chunk s3://{}/{chunk}", config.export_bucket),
            message,
        };
        let mut events = compaction::new_events(&bytes[..], profile, ids, seen, &mut buffer);
        while let Some(event) = events.next_event() {
            let event = event.map_err(|error| corrupt(error.to_string()))?;
            let current = writer
                .get_or_insert_with(|| OpenPart::new(flusher, partition, number, keep_provenance));
            current
                .push(
                    event.event(),
                    event.time_millis,
                    // Parsed only when a destination asks for it.
                    if keep_provenance {
                        event.provenance()
                    } else {
                        None
                    },
                    &mut fields,
                )
                .await?;
            report.events += 1;
            if current.events.compressed_len() >= config.archive_part_max_bytes as u64 {
                parts.push(writer.take().expect("just used").finish().await?);
                number += 1;
            }
        }
        report.duplicates += events.duplicates();
    }
    if let Some(writer) = writer {
        parts.push(writer.finish().await?);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_digest(version: u32) -> Manifest {
        let text = format!(
            r#"{{"version":1,"stream":"s","tenant":"t","hour":"h","generation":1,"parts":[],
            "consumedChunks":[],"idDigest":"ids/1","events":0,"duplicatesDropped":0,
            "destinations":{{}},"committedAt":"h"{}}}"#,
            if version == 1 {
                String::new()
            } else {
                format!(r#","idDigestVersion":{version}"#)
            }
        );
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn a_partition_with_a_sha256_digest_keeps_sha256_ids() {
        // Written before digest versions: no idDigestVersion field.
        assert_eq!(id_hash(&with_digest(1)), Some(IdHash::Sha256));
    }

    #[test]
    fn a_partition_keeps_its_digests_hash_and_a_new_one_takes_the_current() {
        assert_eq!(id_hash(&with_digest(2)), Some(IdHash::Blake3));
        let partition = Manifest::default();
        assert_eq!(id_hash(&partition), Some(IdHash::CURRENT));
    }

    #[test]
    fn an_unknown_digest_version_is_refused() {
        assert_eq!(id_hash(&with_digest(99)), None);
    }
}
