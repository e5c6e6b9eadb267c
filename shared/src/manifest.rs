//! The manifest: a partition's commit record (docs/design.md, invariant 4).
//!
//! Before a manifest names them, archive parts and id digests are scratch:
//! redoing the work rewrites them with the same keys and bytes. After it,
//! the chunks it lists as consumed are ignored, and destinations it lists as
//! pending are retried every run until they succeed.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

/// The manifest format written by this version.
pub const MANIFEST_VERSION: u32 = 1;

/// A partition's committed state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub version: u32,
    pub stream: String,
    /// The tenant's key segment (see `partition::TenantKey`).
    pub tenant: String,
    /// The hour's start, RFC 3339.
    pub hour: String,
    /// Counts commits, starting at 1; names the id digest written with it.
    pub generation: u64,
    pub parts: Vec<ArchivePart>,
    /// Every staged chunk whose events are in `parts`, and every staged
    /// object whose segments of this partition are.
    pub consumed_chunks: Vec<String>,
    /// Staged objects whose segments of this partition were refused as
    /// corrupt (copied to `quarantine/` and alerted): none of their events
    /// are in `parts`, and they are not read again. Absent in manifests
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined_chunks: Vec<String>,
    /// The key of the digest of every event id in `parts`.
    pub id_digest: Option<String>,
    /// How the digest's ids are hashed (`dedup::IdHash::version`); every
    /// commit of a partition keeps it. Manifests written before the field
    /// existed hold version 1 (SHA-256).
    #[serde(default = "first_id_digest_version")]
    pub id_digest_version: u32,
    pub events: u64,
    /// Events dropped as duplicates, over every commit.
    pub duplicates_dropped: u64,
    /// Publish state per destination name.
    pub destinations: BTreeMap<String, DestinationState>,
    /// The flusher's "now" when it committed, RFC 3339.
    pub committed_at: String,
}

fn first_id_digest_version() -> u32 {
    1
}

/// One canonical archive file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivePart {
    /// From 1; a later commit of the same hour continues the numbering.
    pub number: u32,
    pub key: String,
    pub events: u64,
    /// Compressed size.
    pub bytes: u64,
    pub uncompressed_bytes: u64,
    pub min_event_time: Option<String>,
    pub max_event_time: Option<String>,
    /// SHA-256 of the compressed bytes, hex.
    pub sha256: String,
    /// The part's provenance sidecar (SQS message id and ingest time of each
    /// line, see `provenance`), when its events were staged with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<ProvenanceFile>,
}

/// A provenance sidecar: gzip, one line per line of its archive part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvenanceFile {
    pub key: String,
    /// Compressed size.
    pub bytes: u64,
}

/// Which parts a destination has received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationState {
    /// Part numbers stored in the destination.
    pub published: Vec<u32>,
    /// Part numbers still to publish.
    pub pending: Vec<u32>,
    /// The last failure, while parts are pending.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// Part numbers that were pending when the destination stopped
    /// selecting the partition's stream or tenant: never sent, so an edited
    /// destination cannot carry one tenant's parts to another's bucket.
    /// Absent in manifests written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<u32>,
}

impl Manifest {
    /// The number the next archive part gets.
    pub fn next_part_number(&self) -> u32 {
        self.parts.iter().map(|p| p.number).max().unwrap_or(0) + 1
    }

    /// The chunks and staged objects this manifest is done with (consumed
    /// or quarantined), for quick lookup.
    pub fn consumed(&self) -> HashSet<&str> {
        self.consumed_chunks
            .iter()
            .chain(&self.quarantined_chunks)
            .map(String::as_str)
            .collect()
    }

    /// Whether any destination still waits for parts.
    pub fn has_pending(&self) -> bool {
        self.destinations.values().any(|d| !d.pending.is_empty())
    }
}

/// Serializes a set of 128-bit event id hashes, sorted, 16 bytes each
/// (little-endian), so the same set always gives the same bytes.
pub fn encode_id_digest(ids: &HashSet<u128>) -> Vec<u8> {
    let mut sorted: Vec<u128> = ids.iter().copied().collect();
    sorted.sort_unstable();
    sorted.iter().flat_map(|id| id.to_le_bytes()).collect()
}

/// Reads an id digest back; `None` when its length is not a multiple of 16.
pub fn decode_id_digest(bytes: &[u8]) -> Option<HashSet<u128>> {
    if !bytes.len().is_multiple_of(16) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(16)
            .map(|chunk| u128::from_le_bytes(chunk.try_into().expect("16 bytes")))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_digest_round_trips_and_is_canonical() {
        let ids: HashSet<u128> = [3u128, 1, u128::MAX, 0].into_iter().collect();
        let bytes = encode_id_digest(&ids);
        assert_eq!(bytes.len(), 64);
        assert_eq!(decode_id_digest(&bytes), Some(ids.clone()));
        let again: HashSet<u128> = [0u128, u128::MAX, 1, 3].into_iter().collect();
        assert_eq!(encode_id_digest(&again), bytes);
        assert_eq!(decode_id_digest(&bytes[..15]), None);
    }

    #[test]
    fn next_part_number_continues_after_the_last() {
        let mut manifest = Manifest::default();
        assert_eq!(manifest.next_part_number(), 1);
        manifest.parts.push(ArchivePart {
            number: 2,
            ..Default::default()
        });
        assert_eq!(manifest.next_part_number(), 3);
    }

    #[test]
    fn manifest_json_round_trips() {
        let mut manifest = Manifest {
            version: MANIFEST_VERSION,
            generation: 1,
            ..Default::default()
        };
        manifest.destinations.insert(
            "d".into(),
            DestinationState {
                pending: vec![1],
                ..Default::default()
            },
        );
        let text = serde_json::to_string(&manifest).unwrap();
        assert!(text.contains("\"consumedChunks\""));
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), manifest);
        assert!(manifest.has_pending());
    }

    #[test]
    fn quarantined_objects_count_as_consumed_and_are_absent_from_older_manifests() {
        let manifest = Manifest {
            consumed_chunks: vec!["staging/a".into()],
            quarantined_chunks: vec!["staging/b".into()],
            ..Default::default()
        };
        let consumed = manifest.consumed();
        assert!(consumed.contains("staging/a") && consumed.contains("staging/b"));
        let text = serde_json::to_string(&manifest).unwrap();
        assert!(
            text.contains("\"quarantinedChunks\":[\"staging/b\"]"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), manifest);
        // Written before the field existed, or with nothing quarantined.
        let none = Manifest::default();
        let text = serde_json::to_string(&none).unwrap();
        assert!(!text.contains("quarantined"), "{text}");
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), none);
    }

    #[test]
    fn a_manifest_without_a_digest_version_holds_sha256_ids() {
        let mut manifest = Manifest {
            version: MANIFEST_VERSION,
            id_digest: Some("ids/1".into()),
            id_digest_version: 2,
            ..Default::default()
        };
        let text = serde_json::to_string(&manifest).unwrap();
        assert!(text.contains("\"idDigestVersion\":2"), "{text}");
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), manifest);
        let old = text.replace(",\"idDigestVersion\":2", "");
        manifest.id_digest_version = 1;
        assert_eq!(serde_json::from_str::<Manifest>(&old).unwrap(), manifest);
    }
}
