//! Partitions: every accepted event belongs to exactly one
//! `(stream, tenant, hour)`, and a partition's key can never leave its prefix.
//!
//! A tenant id is untrusted input. [`TenantKey`] turns it into one safe path
//! segment, injectively, so two tenants never share a folder:
//! - kept as is when it uses only `A-Z a-z 0-9 - _ .`, does not start with
//!   `.`, and is at most [`TenantKey::MAX_LEN`] bytes;
//! - otherwise percent-encoded (every other byte as `%XX`, a leading `.` as
//!   `%2E`), when that fits in [`TenantKey::MAX_LEN`] bytes;
//! - otherwise `~` followed by the first 32 hex digits (128 bits) of the
//!   SHA-256 of the tenant id.
//!
//! The three forms cannot meet: only percent-encoded keys contain `%`, only
//! hashed keys start with `~`. The original id stays unchanged in the event.

use std::fmt;

use chrono::DateTime;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

const MILLIS_PER_HOUR: i64 = 3_600_000;

/// Bytes outside `A-Z a-z 0-9 - _ .` are percent-encoded.
const TENANT_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// An hour of UTC time, counted from the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hour(i64);

impl Hour {
    /// The hour that contains the epoch millisecond `millis`.
    pub fn containing(millis: i64) -> Self {
        Self(millis.div_euclid(MILLIS_PER_HOUR))
    }

    /// The first millisecond of the hour.
    pub fn start_millis(self) -> i64 {
        self.0 * MILLIS_PER_HOUR
    }

    /// Reads `yyyy-mm-dd/HH` back; `None` for anything else.
    pub fn parse_date_path(text: &str) -> Option<Self> {
        let (date, hour) = text.split_once('/')?;
        if hour.len() != 2 {
            return None;
        }
        let naive = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .ok()?
            .and_hms_opt(hour.parse().ok()?, 0, 0)?;
        Some(Self::containing(naive.and_utc().timestamp_millis()))
    }

    /// The hour after this one.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The first millisecond after the hour.
    pub fn end_millis(self) -> i64 {
        self.next().start_millis()
    }

    /// The hour as `yyyy-mm-dd/HH`, the folders used under `staging/` and
    /// `errors/`.
    pub fn date_path(self) -> String {
        DateTime::from_timestamp_millis(self.start_millis())
            .map(|start| start.format("%Y-%m-%d/%H").to_string())
            .unwrap_or_else(|| format!("hour-{}", self.0))
    }
}

impl fmt::Display for Hour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.date_path())
    }
}

/// A tenant id made safe to use as one S3 key segment (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantKey(String);

impl TenantKey {
    /// The longest key segment a tenant id becomes.
    pub const MAX_LEN: usize = 96;

    /// Encodes a tenant id; the id must not be empty (profiles refuse that).
    pub fn encode(tenant: &str) -> Self {
        let plain = !tenant.is_empty()
            && tenant.len() <= Self::MAX_LEN
            && !tenant.starts_with('.')
            && tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if plain {
            return Self(tenant.to_owned());
        }
        let (leading_dot, rest) = match tenant.strip_prefix('.') {
            Some(rest) => ("%2E", rest),
            None => ("", tenant),
        };
        let encoded = format!(
            "{leading_dot}{}",
            utf8_percent_encode(rest, TENANT_ENCODE_SET)
        );
        if !encoded.is_empty() && encoded.len() <= Self::MAX_LEN {
            return Self(encoded);
        }
        let digest = Sha256::digest(tenant.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("~{hex}"))
    }

    /// Whether `c` can appear in a key segment [`TenantKey::encode`] makes:
    /// `A-Z a-z 0-9 - _ .`, `%` of the escapes and `~` of the digest form.
    /// Key layouts rely on it: a character outside it ends a tenant.
    pub fn renders(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '%' | '~')
    }

    /// A key segment read back from a key this module produced.
    pub fn from_encoded(segment: &str) -> Self {
        Self(segment.to_owned())
    }

    /// The key segment.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `c` can appear in a stream name: `a-z 0-9 - _` (the
/// configuration refuses other names, so a stream is one plain key segment
/// and a character outside this set ends it in a key layout).
pub fn is_stream_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')
}

/// Where an accepted event is staged: its stream, tenant and hour.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    pub hour: Hour,
    pub stream: String,
    pub tenant: TenantKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_of_the_seed_event() {
        let hour = Hour::containing(1_668_900_196_792);
        assert_eq!(hour.date_path(), "2022-11-19/23");
        assert_eq!(hour.start_millis(), 1_668_898_800_000);
    }

    #[test]
    fn date_paths_parse_back() {
        let hour = Hour::containing(1_668_900_196_792);
        assert_eq!(Hour::parse_date_path(&hour.date_path()), Some(hour));
        assert_eq!(Hour::parse_date_path("2022-11-19/24"), None);
        assert_eq!(Hour::parse_date_path("2022-11-19/7"), None);
        assert_eq!(hour.end_millis(), hour.start_millis() + 3_600_000);
    }

    #[test]
    fn ordinary_tenant_ids_are_kept() {
        for id in [
            "482f2a38-8e9d-4329-b2a0-e97d5bc05d36",
            "acme_corp",
            "v1.2",
            "187520",
        ] {
            assert_eq!(TenantKey::encode(id).as_str(), id);
        }
    }

    #[test]
    fn path_characters_are_encoded() {
        assert_eq!(TenantKey::encode("../x").as_str(), "%2E.%2Fx");
        assert_eq!(TenantKey::encode("a/b").as_str(), "a%2Fb");
        assert_eq!(TenantKey::encode("..").as_str(), "%2E.");
        assert_eq!(TenantKey::encode(".").as_str(), "%2E");
        assert_eq!(TenantKey::encode("a\nb\u{0}").as_str(), "a%0Ab%00");
        assert_eq!(TenantKey::encode("~x").as_str(), "%7Ex");
    }

    #[test]
    fn no_encoded_tenant_contains_a_slash_or_is_a_dot_segment() {
        for id in [
            "/",
            "//",
            "../../etc",
            ".",
            "..",
            "a/../b",
            "\\",
            "%2F",
            "é/ü",
        ] {
            let key = TenantKey::encode(id);
            assert!(!key.as_str().contains('/'), "{id} -> {key}");
            assert!(key.as_str() != "." && key.as_str() != "..", "{id} -> {key}");
            assert!(!key.as_str().starts_with('.'), "{id} -> {key}");
        }
    }

    #[test]
    fn long_tenant_ids_are_hashed_to_a_fixed_length() {
        let long = "t".repeat(2048);
        let key = TenantKey::encode(&long);
        assert!(key.as_str().starts_with('~'));
        assert_eq!(key.as_str().len(), 33);
        assert_ne!(key, TenantKey::encode(&"t".repeat(2047)));
    }

    #[test]
    fn every_encoded_tenant_uses_only_the_characters_renders_admits() {
        let long = "é".repeat(200);
        for id in [
            "acme",
            "a b#c?d&e=f+g",
            "~x",
            "%41",
            ".hidden",
            "tab\tnew\nline",
            "ünï©ødé",
            long.as_str(),
            "/../\\",
        ] {
            let key = TenantKey::encode(id);
            assert!(
                key.as_str().chars().all(TenantKey::renders),
                "{id} -> {key}"
            );
        }
        for outside in ['/', '#', '=', '+', ' ', '@', 'é'] {
            assert!(!TenantKey::renders(outside), "{outside}");
        }
    }

    #[test]
    fn encoding_is_injective_across_forms() {
        let ids = ["a%2Fb", "a/b", "~abc", "%7Eabc", ".x", "%2Ex"];
        let keys: std::collections::HashSet<_> =
            ids.iter().map(|id| TenantKey::encode(id)).collect();
        assert_eq!(keys.len(), ids.len());
    }
}
