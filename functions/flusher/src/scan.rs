//! Finding work: partitions with staged chunks in closed hours, found by
//! listing `staging/` date and hour folders (hour first, so a run costs in
//! proportion to pending work, not history), and partitions with pending
//! publishes, found by listing `pending/`.

use std::collections::{BTreeMap, BTreeSet};

use shared::layout::{self, PENDING_PREFIX, STAGING_PREFIX};
use shared::partition::{Hour, PartitionKey, TenantKey};

use crate::Flusher;
use crate::error::FlushError;
use crate::store;
use crate::trigger::Trigger;

/// What a run has to do.
#[derive(Debug, Default)]
pub struct Work {
    /// Staged chunk keys of closed hours, per partition, in key order.
    pub chunks: BTreeMap<PartitionKey, Vec<String>>,
    /// Partitions whose manifests list parts still to publish.
    pub publishes: BTreeSet<PartitionKey>,
}

impl Work {
    /// Every partition to visit, in order.
    pub fn partitions(&self) -> BTreeSet<PartitionKey> {
        self.chunks
            .keys()
            .cloned()
            .chain(self.publishes.iter().cloned())
            .collect()
    }
}

/// Lists the work of a run.
pub async fn find_work(flusher: &Flusher, trigger: &Trigger) -> Result<Work, FlushError> {
    let bucket = &flusher.config.export_bucket;
    let grace = flusher.config.flush_grace_minutes;
    let selected = |partition: &PartitionKey| selects(trigger, partition);
    let mut work = Work::default();
    for date_folder in store::list_folders(&flusher.s3, bucket, STAGING_PREFIX).await? {
        let date = date_folder
            .trim_start_matches(STAGING_PREFIX)
            .trim_end_matches('/');
        // The date's first hour still open: so are all after it.
        match Hour::parse_date_path(&format!("{date}/00")) {
            Some(first) if trigger.closes(first, grace) => {}
            Some(_) => break,
            None => continue,
        }
        for hour_folder in store::list_folders(&flusher.s3, bucket, &date_folder).await? {
            let hour_path = hour_folder
                .trim_start_matches(STAGING_PREFIX)
                .trim_end_matches('/');
            let Some(hour) = Hour::parse_date_path(hour_path) else {
                continue;
            };
            if !trigger.closes(hour, grace) {
                break;
            }
            for key in store::list_keys(&flusher.s3, bucket, &hour_folder).await? {
                if let Some(partition) = layout::parse_staging_chunk_key(&key)
                    && selected(&partition)
                {
                    work.chunks.entry(partition).or_default().push(key);
                }
            }
        }
    }
    for key in store::list_keys(&flusher.s3, bucket, PENDING_PREFIX).await? {
        if let Some(partition) = layout::parse_pending_publish_key(&key)
            && selected(&partition)
        {
            work.publishes.insert(partition);
        }
    }
    Ok(work)
}

fn selects(trigger: &Trigger, partition: &PartitionKey) -> bool {
    trigger
        .streams
        .as_ref()
        .is_none_or(|streams| streams.contains(&partition.stream))
        && trigger.tenants.as_ref().is_none_or(|tenants| {
            tenants
                .iter()
                .any(|t| TenantKey::encode(t) == partition.tenant)
        })
}
