//! Duplicate detection: each event's identity as a 128-bit hash.
//!
//! An event with a profile id is identified by its stream and id, so a
//! producer that re-sends it with other bytes is still one event; an event
//! without one is identified by its exact line. The hash is the first 128
//! bits of a cryptographic hash: collision-resistant, so no crafted event
//! can make another event look like a duplicate.
//!
//! Which hash is recorded with each id digest ([`IdHash::version`] in the
//! manifest): a partition hashes every commit's events with the hash its
//! digest was written with, so an event keeps its identity across runs.
//! Digests written before BLAKE3 (version 1, SHA-256) stay readable and
//! keep their hash; new partitions use [`IdHash::CURRENT`].

use sha2::{Digest, Sha256};

/// A hash of event identities, named by the id digest version it is
/// recorded under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdHash {
    /// Version 1: SHA-256, for digests written before version 2.
    Sha256,
    /// Version 2: BLAKE3, several times faster than SHA-256 on lines of a
    /// few hundred bytes where the CPU has no SHA instructions.
    Blake3,
}

impl IdHash {
    /// The hash a partition without an id digest starts with.
    pub const CURRENT: IdHash = IdHash::Blake3;

    /// The id digest version this hash is recorded under.
    pub fn version(self) -> u32 {
        match self {
            IdHash::Sha256 => 1,
            IdHash::Blake3 => 2,
        }
    }

    /// The hash recorded as `version`; `None` for a version this code does
    /// not know (written by a newer flusher).
    pub fn from_version(version: u32) -> Option<Self> {
        match version {
            1 => Some(IdHash::Sha256),
            2 => Some(IdHash::Blake3),
            _ => None,
        }
    }

    /// The identity of an event with profile id `id`.
    pub fn id_key(self, id: &str) -> u128 {
        self.hash128(b"id\0", id.as_bytes())
    }

    /// The identity of an event without an id: its line.
    pub fn line_key(self, line: &str) -> u128 {
        self.hash128(b"line\0", line.as_bytes())
    }

    fn hash128(self, domain: &[u8], bytes: &[u8]) -> u128 {
        let mut first = [0u8; 16];
        match self {
            IdHash::Sha256 => {
                let digest = Sha256::new()
                    .chain_update(domain)
                    .chain_update(bytes)
                    .finalize();
                first.copy_from_slice(&digest[..16]);
            }
            IdHash::Blake3 => {
                let digest = blake3::Hasher::new()
                    .update(domain)
                    .update(bytes)
                    .finalize();
                first.copy_from_slice(&digest.as_bytes()[..16]);
            }
        }
        u128::from_le_bytes(first)
    }
}

/// The identity of an event with profile id `id`, with the current hash.
pub fn id_key(id: &str) -> u128 {
    IdHash::CURRENT.id_key(id)
}

/// The identity of an event without an id, its line, with the current hash.
pub fn line_key(line: &str) -> u128 {
    IdHash::CURRENT.line_key(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_lines_never_share_a_key() {
        for hash in [IdHash::Sha256, IdHash::Blake3] {
            assert_ne!(hash.id_key("x"), hash.line_key("x"));
            assert_eq!(hash.id_key("x"), hash.id_key("x"));
            assert_ne!(hash.line_key("{\"a\":1}"), hash.line_key("{\"a\": 1}"));
        }
    }

    #[test]
    fn version_1_keys_are_the_sha256_keys_digests_already_hold() {
        // The first 16 bytes of SHA-256("id\0e-1"), little-endian: what
        // flushers before version 2 wrote, so their digests still match.
        let digest = Sha256::digest(b"id\0e-1");
        let expected = u128::from_le_bytes(digest[..16].try_into().unwrap());
        assert_eq!(IdHash::Sha256.id_key("e-1"), expected);
        assert_eq!(IdHash::from_version(1), Some(IdHash::Sha256));
    }

    #[test]
    fn version_2_is_blake3_and_current() {
        let digest = blake3::hash(b"line\0{\"a\":1}");
        let expected = u128::from_le_bytes(digest.as_bytes()[..16].try_into().unwrap());
        assert_eq!(IdHash::Blake3.line_key("{\"a\":1}"), expected);
        assert_eq!(IdHash::CURRENT, IdHash::Blake3);
        assert_eq!(
            IdHash::from_version(IdHash::CURRENT.version()),
            Some(IdHash::CURRENT)
        );
        assert_eq!(IdHash::from_version(3), None);
        assert_ne!(IdHash::Sha256.id_key("e-1"), IdHash::Blake3.id_key("e-1"));
    }
}
