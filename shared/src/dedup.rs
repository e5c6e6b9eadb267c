//! Duplicate detection: each event's identity as a 128-bit hash.
//!
//! An event with a profile id is identified by its stream and id, so a
//! producer that re-sends it with other bytes is still one event; an event
//! without one is identified by its exact line. The hash is the first 128
//! bits of SHA-256: collision-resistant, so no crafted event can make
//! another tenant's or stream's event look like a duplicate.

use sha2::{Digest, Sha256};

/// The identity of an event with profile id `id`.
pub fn id_key(id: &str) -> u128 {
    hash128(b"id\0", id.as_bytes())
}

/// The identity of an event without an id: its line.
pub fn line_key(line: &str) -> u128 {
    hash128(b"line\0", line.as_bytes())
}

fn hash128(domain: &[u8], bytes: &[u8]) -> u128 {
    let digest = Sha256::new()
        .chain_update(domain)
        .chain_update(bytes)
        .finalize();
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_lines_never_share_a_key() {
        assert_ne!(id_key("x"), line_key("x"));
        assert_eq!(id_key("x"), id_key("x"));
        assert_ne!(line_key("{\"a\":1}"), line_key("{\"a\": 1}"));
    }
}
