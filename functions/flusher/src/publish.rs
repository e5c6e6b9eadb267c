//! Publishing archive parts to destinations. A destination needs only
//! `s3:PutObject` (and KMS where it uses a key): parts are read from the
//! export bucket and written, never listed or read back, in the
//! destination's bucket (docs/design.md, invariant 5). Every write carries the
//! destination's encryption and, when its account is known,
//! `ExpectedBucketOwner` (invariant 6). A part is published to the same key
//! with the same bytes however often it is retried.
//!
//! A destination whose content options are the archive's encoding (gzip at
//! the archive's level, every event and field, no `_export`) receives the
//! archive part's bytes unchanged; any other destination receives the part
//! rewritten by [`crate::export`], deterministically, so retries still write
//! the same bytes. A part none of whose events a destination selects (by
//! event type) is not written there and counts as published: the
//! destination's files skip that part number.
//!
//! A destination that refuses a write keeps its parts pending; the failure
//! is diagnosed (which permission, key or region is at fault) and alerted
//! once, when it starts, not on every retry.
//!
//! Tenants are isolated at the moment of writing (docs/design.md, invariant 9):
//! a pending part is published only while its destination still selects
//! the partition's stream and tenant. A destination removed, or edited to
//! select others, since the part was assigned has the part dropped from its
//! pending list (recorded in the manifest as `dropped`, shown by
//! `status`), never sent to the bucket the new selection is meant for. A
//! disabled destination keeps its parts pending.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;

use sha2::{Digest, Sha256};
use shared::alert::InvocationAlerts;
use shared::config::Destination;
use shared::destination_write;
use shared::diagnose;

use shared::manifest::{self, ArchivePart, DestinationState, Manifest, ProvenanceFile};
use shared::partition::PartitionKey;

use crate::Flusher;
use crate::destination_upload::{DestinationUpload, StepFailure};
use crate::error::FlushError;
use crate::export;

/// What publishing a partition did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    pub published: usize,
    /// Pending parts dropped because their destination no longer selects
    /// the partition.
    pub dropped: usize,
    /// Destinations that still have parts pending, with the diagnosis.
    pub failed: Vec<(String, String)>,
    /// Destinations whose `_SUCCESS` this publish wrote (they received
    /// the hour's last parts).
    pub completed: Vec<String>,
}

/// Marks `parts` pending for every destination that selects the partition.
///
/// An hourly destination of an hour committed while open (`hour_open`: for
/// destinations with files every few minutes) holds them instead, and
/// receives them once the hour closes, grouped into files of about an
/// archive part's size ([`Manifest::group_held`]), never a file per small
/// part; once it has, every later part of the hour reaches it grouped too.
pub fn assign(
    flusher: &Flusher,
    partition: &PartitionKey,
    manifest: &mut Manifest,
    parts: &[u32],
    hour_open: bool,
) {
    for destination in flusher
        .config
        .destinations_for(&partition.stream, &partition.tenant)
    {
        let state = manifest
            .destinations
            .entry(destination.name.clone())
            .or_default();
        let waits_for_close = !destination.interval.is_minutes() && hour_open;
        if waits_for_close || state.is_grouped() {
            state.held.extend(parts.iter().copied());
            continue;
        }
        state.pending.extend(parts.iter().copied());
        state.pending.sort_unstable();
        state.pending.dedup();
    }
    if !hour_open {
        manifest.group_held(flusher.config.archive_part_max_bytes as u64);
    }
    manifest.note_format();
}

/// Publishes every pending part of the manifest (of `only`, when given),
/// destination by destination, and records the outcome in it. A
/// destination that fails keeps its parts pending, for the next run.
/// `_SUCCESS` is written only for an hour that has closed (`hour_open`
/// false). `stop_after_first` is the injected failure "some destinations
/// published".
pub async fn publish_pending(
    flusher: &Flusher,
    alerts: &InvocationAlerts<'_>,
    partition: &PartitionKey,
    manifest: &mut Manifest,
    only: Option<&[u32]>,
    hour_open: bool,
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
        let configured = flusher.config.destinations.iter().find(|d| d.name == name);
        let destination = match configured {
            // Paused: its parts wait until it is enabled again (and are then
            // checked against its selection as it is then).
            Some(destination) if !destination.enabled => continue,
            Some(destination) if destination.selects(&partition.stream, &partition.tenant) => {
                destination
            }
            // Removed, or edited to select other tenants or streams.
            _ => {
                let state = manifest.destinations.get_mut(&name).expect("listed above");
                outcome.dropped += drop_pending(state);
                tracing::warn!(destination = %name, stream = %partition.stream, tenant = %partition.tenant, hour = %partition.hour, dropped = state.dropped.len(), removed = configured.is_none(), "the destination no longer selects this stream and tenant: its pending parts are dropped, not sent to its new selection's bucket");
                continue;
            }
        };
        let files = files_to_publish(&manifest.destinations[&name], only);
        let mut published_here = false;
        for file in files {
            let parts: Vec<&ArchivePart> = file
                .iter()
                .filter_map(|number| manifest.parts.iter().find(|p| p.number == *number))
                .collect();
            if parts.is_empty() {
                continue;
            }
            let result = match publish_file(flusher, destination, partition, &parts).await {
                Ok(_) => Ok(()),
                Err(PartFailure::Flush(error)) => return Err(error),
                Err(PartFailure::Write { key, failure }) => Err((key, failure)),
            };
            let state = manifest.destinations.get_mut(&name).expect("listed above");
            match result {
                Ok(()) => {
                    for number in &file {
                        record_published(state, *number);
                    }
                    outcome.published += file.len();
                    published_here = true;
                }
                Err((key, failure)) => {
                    let diagnosis =
                        diagnose::diagnose(destination, &key, &failure, &flusher.principals);
                    tracing::warn!(destination = %name, key = %key, problem = diagnosis.problem.name(), summary = %diagnosis.summary, "publish failed; the part stays pending");
                    state.failures += 1;
                    state.last_error = Some(format!("{}: {}", diagnosis.code, diagnosis.summary));
                    if state.failures == 1
                        && let Err(error) = alerts.alert(&name, &diagnosis).await
                    {
                        tracing::error!(%error, "alert not sent");
                    }
                    outcome.failed.push((
                        name.clone(),
                        format!("{}: {}", diagnosis.code, diagnosis.summary),
                    ));
                    break;
                }
            }
        }
        if published_here && !hour_open && is_complete(manifest, &name) {
            write_success_marker(flusher, destination, partition).await;
            outcome.completed.push(name.clone());
        }
        if stop_after_first {
            return Err(FlushError::Injected("some destinations published"));
        }
    }
    Ok(outcome)
}

/// Where a part went in a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartPublished {
    /// Written at this key.
    Written(String),
    /// None of the part's events is selected: nothing written.
    NothingSelected,
}

/// Why a part was not published.
#[derive(Debug)]
pub enum PartFailure {
    /// The archive part could not be read or rewritten (not the
    /// destination's fault).
    Flush(FlushError),
    /// The destination refused the write of `key`.
    Write {
        key: String,
        failure: diagnose::WriteFailure,
    },
}

/// The files a destination's pending parts (those of `only`, when given)
/// are published as, in order: a part alone, or the group it is recorded
/// in, whole: a group with a part outside `only` waits for a run that
/// publishes them all.
fn files_to_publish(state: &DestinationState, only: Option<&[u32]>) -> Vec<Vec<u32>> {
    let wanted = |number: u32| only.is_none_or(|only| only.contains(&number));
    state.files_for(state.pending.iter().copied(), wanted)
}

/// The files a backfill publishes to destination `name` of the partition
/// `manifest` describes, as its flushes published them (the same keys and
/// bytes, so a backfill overwrites): its recorded groups, and every other
/// part alone; parts it holds for the hour's close are left to the close.
pub fn backfill_files(manifest: &Manifest, name: &str) -> Vec<Vec<u32>> {
    let numbers = manifest.parts.iter().map(|part| part.number);
    match manifest.destinations.get(name) {
        Some(state) => state.files_for(numbers, |_| true),
        None => numbers.map(|number| vec![number]).collect(),
    }
}

/// Publishes one archive part of `partition` to `destination`: the key its
/// layout gives, the bytes its content options give (the archive's bytes
/// unchanged for the archive's encoding). The same part always gives the
/// same key and bytes, so publishing it again (a retry, a backfill) is an
/// overwrite.
///
/// The part streams from the export bucket to the destination (read with
/// one GET, a ranged one in a bundle; rewritten as it comes; written through
/// [`DestinationUpload`]), so memory does not grow with its size; a
/// provenance sidecar the rewrite needs is spooled to the spool directory
/// first. Nothing is stored when the part turns out unreadable or damaged:
/// a multipart upload started is aborted, never completed.
pub async fn publish_part(
    flusher: &Flusher,
    destination: &Destination,
    partition: &PartitionKey,
    part: &ArchivePart,
) -> Result<PartPublished, PartFailure> {
    publish_file(flusher, destination, partition, &[part]).await
}

/// Publishes `parts` (ascending, at least one) of `partition` to
/// `destination` as one file, numbered as the first: each part as
/// [`publish_part`] writes it, one after the other in one object (gzip
/// members, zstd frames and NDJSON lines concatenate into a valid file of
/// the same format). The same parts always give the same key and bytes.
pub async fn publish_file(
    flusher: &Flusher,
    destination: &Destination,
    partition: &PartitionKey,
    parts: &[&ArchivePart],
) -> Result<PartPublished, PartFailure> {
    let number = parts.first().map_or(0, |part| part.number);
    let key = destination
        .layout
        .render(&destination.prefix, partition, number);
    let mut upload = DestinationUpload::new(
        flusher.client_for(destination),
        destination,
        &key,
        destination.content.format.content_type(),
    );
    let mut selected = false;
    for part in parts {
        match stream_part(flusher, destination, partition, part, &key, &mut upload).await {
            Ok(any) => selected |= any,
            Err(failure) => {
                upload.abort().await;
                return Err(failure);
            }
        }
    }
    if !selected {
        upload.abort().await;
        tracing::info!(destination = %destination.name, part = number, "no event of the file is selected; nothing written");
        return Ok(PartPublished::NothingSelected);
    }
    upload
        .finish()
        .await
        .map_err(|step| write_failed(&key, step))?;
    Ok(PartPublished::Written(key))
}

/// Reads `part` and writes what `destination` receives of it into
/// `upload`, all but finishing it; `false` when none of its events is
/// selected (then what it wrote is at most a compressor's empty frame,
/// which a file of several parts may hold and one of a single part is
/// aborted for).
async fn stream_part(
    flusher: &Flusher,
    destination: &Destination,
    partition: &PartitionKey,
    part: &ArchivePart,
    key: &str,
    upload: &mut DestinationUpload<'_>,
) -> Result<bool, PartFailure> {
    let mut archive = PartBody::open(
        flusher,
        &part.key,
        part.offset,
        part.bytes,
        Some(&part.sha256),
    )
    .await
    .map_err(PartFailure::Flush)?;
    let level = flusher.config.archive_gzip_level;
    let content = &destination.content;
    let written = |step| write_failed(key, step);
    if content.is_archive_encoding(level) {
        while let Some(chunk) = archive.next().await.map_err(PartFailure::Flush)? {
            upload.write(&chunk).await.map_err(written)?;
        }
        return Ok(true);
    }
    let corrupt = |message: String| {
        PartFailure::Flush(FlushError::Corrupt {
            what: format!("s3://{}/{}", flusher.config.export_bucket, part.key),
            message,
        })
    };
    let profile = flusher
        .config
        .streams
        .get(&partition.stream)
        .ok_or_else(|| corrupt(format!("stream `{}` is not configured", partition.stream)))?;
    let metadata = export::ExportMetadata::new(partition, part.number);
    let sidecar = match (&part.provenance, content.include_metadata) {
        (Some(sidecar), true) => Some(export::gzip_lines(std::io::BufReader::new(
            spool(flusher, sidecar).await.map_err(PartFailure::Flush)?,
        ))),
        _ => None,
    };
    let mut encoder = export::PartEncoder::new(content, level, profile, &metadata, sidecar)
        .map_err(|error| corrupt(error.to_string()))?;
    while let Some(chunk) = archive.next().await.map_err(PartFailure::Flush)? {
        encoder
            .write(&chunk)
            .map_err(|error| corrupt(error.to_string()))?;
        let output = encoder.output();
        if !output.is_empty() {
            upload.write(output).await.map_err(written)?;
            output.clear();
        }
    }
    let rest = encoder
        .finish()
        .map_err(|error| corrupt(error.to_string()))?;
    // Written even without events: a file of several parts needs each
    // part's frame closed.
    upload.write(&rest.bytes).await.map_err(written)?;
    Ok(rest.events > 0)
}

/// Moves every pending part of a destination that no longer selects the
/// partition to its `dropped` list, clears its failure, and returns how
/// many parts were dropped.
fn drop_pending(state: &mut DestinationState) -> usize {
    let pending = std::mem::take(&mut state.pending);
    let count = pending.len();
    state.dropped.extend(pending);
    state.dropped.sort_unstable();
    state.dropped.dedup();
    state.last_error = None;
    state.failures = 0;
    count
}

/// Records part `number` as stored in a destination: no longer pending,
/// published (once), and the last failure cleared.
pub fn record_published(state: &mut DestinationState, number: u32) {
    state.pending.retain(|n| *n != number);
    if !state.published.contains(&number) {
        state.published.push(number);
        state.published.sort_unstable();
    }
    state.last_error = None;
    state.failures = 0;
}

/// Whether destination `name` has every part of the hour `manifest`
/// describes: none pending, and no more to come (a partition stopped at a
/// checkpoint has more, as has a sharded one some of whose ranges have not
/// committed).
pub fn is_complete(manifest: &Manifest, name: &str) -> bool {
    manifest
        .destinations
        .get(name)
        .is_some_and(|state| state.pending.is_empty() && state.held.is_empty())
        && !manifest.in_progress()
}

/// Writes `_SUCCESS` for each destination that `stored` (a sharded
/// partition's manifest as this run's record of its publishes stored it,
/// merged with other ranges' commits and publishes) shows complete while
/// `seen` (the manifest as this run published from) did not: the other
/// ranges' runs each saw this run's parts still pending, so the marker
/// falls to the last run to record.
pub async fn mark_completed_by_merge(
    flusher: &Flusher,
    partition: &PartitionKey,
    seen: &Manifest,
    stored: &Manifest,
) {
    for name in stored.destinations.keys() {
        if !is_complete(stored, name) || is_complete(seen, name) {
            continue;
        }
        let configured = flusher.config.destinations.iter().find(|d| &d.name == name);
        if let Some(destination) = configured.filter(|d| d.enabled) {
            write_success_marker(flusher, destination, partition).await;
        }
    }
}

/// Writes `_SUCCESS` for each destination with files every few minutes
/// that has every part of the hour `manifest` describes, now closed: its
/// last file may have come in an interval before the close, with nothing
/// published since. Those of `completed` (whose marker this run's publish
/// wrote) are left alone.
pub async fn mark_closed_hour(
    flusher: &Flusher,
    partition: &PartitionKey,
    manifest: &Manifest,
    completed: &[String],
) {
    let destinations = flusher
        .config
        .destinations_for(&partition.stream, &partition.tenant)
        .filter(|destination| destination.interval.is_minutes())
        .filter(|destination| !completed.contains(&destination.name));
    for destination in destinations {
        if is_complete(manifest, &destination.name) {
            write_success_marker(flusher, destination, partition).await;
        }
    }
}

/// Writes the empty `_SUCCESS` marker in the partition's folder, when the
/// destination asks for one and its layout gives the hour a folder. A
/// marker that cannot be written is logged, not a failure: the data is there.
pub async fn write_success_marker(
    flusher: &Flusher,
    destination: &Destination,
    partition: &PartitionKey,
) {
    if !destination.success_marker {
        return;
    }
    let Some(folder) = destination
        .layout
        .partition_folder(&destination.prefix, partition)
    else {
        return;
    };
    let key = format!("{folder}_SUCCESS");
    if let Err(failure) = write(flusher, destination, &key, Vec::new(), "text/plain").await {
        tracing::warn!(destination = %destination.name, key = %key, ?failure, "the _SUCCESS marker was not written");
    }
}

/// A destination's refusal of one step of writing `key`, for the
/// diagnosis (which does not depend on the step: S3 authorizes every step
/// of a multipart upload as `s3:PutObject`).
fn write_failed(key: &str, step: StepFailure) -> PartFailure {
    tracing::debug!(key = %key, operation = step.operation, failure = ?step.failure, "destination write failed");
    PartFailure::Write {
        key: key.to_owned(),
        failure: step.failure,
    }
}

/// One archive part (or its provenance sidecar) as it is read: the whole
/// object, or `size` bytes from `offset` of a bundle (one GET either way),
/// checked against the size (and, for a part, the SHA-256) its manifest
/// recorded when it ends, so that bytes other than those committed are
/// never completed into a destination file (docs/design.md, invariant 7).
struct PartBody {
    body: ByteStream,
    /// `s3://bucket/key`, for errors.
    location: String,
    size: u64,
    read: u64,
    /// The SHA-256 the manifest recorded, lowercase hex, and the bytes'.
    sha256: Option<(String, Sha256)>,
}

impl PartBody {
    async fn open(
        flusher: &Flusher,
        archive_key: &str,
        offset: Option<u64>,
        size: u64,
        sha256: Option<&str>,
    ) -> Result<Self, FlushError> {
        let bucket = &flusher.config.export_bucket;
        let mut request = flusher.s3.get_object().bucket(bucket).key(archive_key);
        if let Some(offset) = offset.filter(|_| size > 0) {
            request = request.range(format!("bytes={offset}-{}", offset + size - 1));
        }
        let location = format!("s3://{bucket}/{archive_key}");
        let body = match request.send().await {
            Ok(object) => object.body,
            Err(error) if error.code() == Some("NoSuchKey") => {
                return Err(FlushError::Corrupt {
                    what: location,
                    message: "named by the manifest but missing".into(),
                });
            }
            // An empty range of a bundle is no range at all: nothing to read.
            Err(error) if offset.is_some() && size == 0 && error.code() == Some("InvalidRange") => {
                ByteStream::from_static(b"")
            }
            Err(error) => return Err(FlushError::s3("GetObject", bucket, archive_key, error)),
        };
        Ok(Self {
            body,
            location,
            size,
            read: 0,
            sha256: sha256
                .filter(|hex| !hex.is_empty())
                .map(|hex| (hex.to_owned(), Sha256::new())),
        })
    }

    /// The next bytes; `None` at the end, once they add up to the size the
    /// manifest recorded.
    async fn next(&mut self) -> Result<Option<bytes::Bytes>, FlushError> {
        match self.body.try_next().await {
            Ok(Some(bytes)) => {
                self.read += bytes.len() as u64;
                if let Some((_, hasher)) = &mut self.sha256 {
                    hasher.update(&bytes);
                }
                Ok(Some(bytes))
            }
            Ok(None) if self.read != self.size => Err(FlushError::Corrupt {
                what: std::mem::take(&mut self.location),
                message: format!("{} bytes, the manifest says {}", self.read, self.size),
            }),
            Ok(None) => {
                let Some((expected, hasher)) = self.sha256.take() else {
                    return Ok(None);
                };
                if manifest::hex_of(&hasher.finalize()) == expected {
                    return Ok(None);
                }
                Err(FlushError::Corrupt {
                    what: std::mem::take(&mut self.location),
                    message: format!("its SHA-256 is not the {expected} its manifest committed"),
                })
            }
            Err(error) => Err(FlushError::S3 {
                operation: "GetObject",
                bucket: String::new(),
                key: std::mem::take(&mut self.location),
                code: None,
                message: format!("reading byte {} on: {error}", self.read),
            }),
        }
    }
}

/// Copies a part's provenance sidecar into a spool file (unlinked, so it is
/// freed when dropped or the process ends), read back from its start: the
/// rewrite reads it a line at a time beside the part, whatever its size.
async fn spool(flusher: &Flusher, sidecar: &ProvenanceFile) -> Result<File, FlushError> {
    let dir = &flusher.config.spool_dir;
    let failed = |error: std::io::Error| FlushError::Spool {
        dir: dir.display().to_string(),
        message: format!("spooling the provenance sidecar {}: {error}", sidecar.key),
    };
    let mut body =
        PartBody::open(flusher, &sidecar.key, sidecar.offset, sidecar.bytes, None).await?;
    let mut file = crate::staged_read::unlinked_file(dir, "sidecar").map_err(failed)?;
    while let Some(bytes) = body.next().await? {
        file.write_all(&bytes).map_err(failed)?;
    }
    file.seek(SeekFrom::Start(0)).map_err(failed)?;
    Ok(file)
}

/// Writes one object to a destination with its encryption and owner check.
async fn write(
    flusher: &Flusher,
    destination: &Destination,
    key: &str,
    bytes: Vec<u8>,
    content_type: &str,
) -> Result<(), diagnose::WriteFailure> {
    let client = flusher.client_for(destination);
    destination_write::put_object(&client, destination, key)
        .content_type(content_type)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .map(|_| ())
        .map_err(|error| destination_write::write_failure(&error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_parts_are_published_alone_or_with_their_whole_file() {
        let state = DestinationState {
            pending: vec![1, 4, 5, 6, 9],
            files: vec![vec![4, 5, 6], vec![7, 8, 9]],
            published: vec![7, 8],
            ..DestinationState::default()
        };
        assert_eq!(
            files_to_publish(&state, None),
            [vec![1], vec![4, 5, 6], vec![7, 8, 9]]
        );
        // A range publishes a file only when it holds all of its parts.
        assert_eq!(files_to_publish(&state, Some(&[1, 4, 5, 9])), [vec![1]]);
        assert_eq!(files_to_publish(&state, Some(&[4, 5, 6])), [vec![4, 5, 6]]);
    }

    #[test]
    fn a_backfill_writes_the_recorded_files_and_leaves_held_parts_to_the_close() {
        let mut manifest = Manifest {
            parts: (1..=6)
                .map(|number| ArchivePart {
                    number,
                    ..ArchivePart::default()
                })
                .collect(),
            ..Manifest::default()
        };
        let state = manifest.destinations.entry("hourly".into()).or_default();
        state.files = vec![vec![2, 3]];
        state.held = vec![5, 6];
        assert_eq!(
            backfill_files(&manifest, "hourly"),
            [vec![1], vec![2, 3], vec![4]]
        );
        // A destination the manifest does not know: a file a part.
        assert_eq!(backfill_files(&manifest, "new").len(), 6);
    }
}
