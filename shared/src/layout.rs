//! Keys in the export bucket. Everything is hour first, so the flusher finds
//! pending work by listing `staging/<yyyy-mm-dd>/<HH>/`, at a cost that
//! follows pending work, not history.
//!
//! - staged chunk: `staging/<yyyy-mm-dd>/<HH>/<stream>/<tenant>/<ingest-ms>-<request-id>.ndjson.gz`
//! - rejected records: `errors/<yyyy-mm-dd>/<HH>/<ingest-ms>-<request-id>.ndjson.gz`
//!
//! `<ingest-ms>` is 13 digits (zero-padded), so keys sort in ingest order.
//! The stream is a validated name and the tenant a [`TenantKey`]; the request
//! id is reduced to `A-Z a-z 0-9 -`, so no segment can climb out of its
//! prefix.

use crate::partition::{Hour, PartitionKey};

/// The folder under the export bucket holding staged chunks.
pub const STAGING_PREFIX: &str = "staging/";
/// The folder under the export bucket holding rejected records.
pub const ERRORS_PREFIX: &str = "errors/";

/// The key of the chunk one invocation stages for one partition.
pub fn staging_chunk_key(partition: &PartitionKey, ingest_millis: i64, request_id: &str) -> String {
    format!(
        "{STAGING_PREFIX}{}/{}/{}/{:013}-{}.ndjson.gz",
        partition.hour.date_path(),
        partition.stream,
        partition.tenant,
        ingest_millis,
        safe_request_id(request_id)
    )
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

/// The prefix listing every staged chunk of one hour.
pub fn staging_hour_prefix(hour: Hour) -> String {
    format!("{STAGING_PREFIX}{}/", hour.date_path())
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
    use crate::partition::TenantKey;

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
    fn request_id_cannot_add_segments() {
        let key = errors_key(Hour::containing(0), 5, "../../x/y");
        assert_eq!(key, "errors/1970-01-01/00/0000000000005-xy.ndjson.gz");
    }
}
