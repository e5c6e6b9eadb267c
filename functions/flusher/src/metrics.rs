//! The run's metrics as one CloudWatch Embedded Metric Format line, which
//! Lambda's log stream turns into metrics without an API call: the
//! template's backlog alarms watch `PendingChunks` and `PendingPublishes`.

use serde_json::json;

use crate::FlushReport;

/// The metrics' namespace.
pub const NAMESPACE: &str = "s3-export";

/// The EMF document for `report`, with the dimension `Deployment`.
pub fn embedded_metrics(deployment: &str, report: &FlushReport, timestamp_millis: i64) -> String {
    let metrics = [
        ("PendingChunks", report.pending_chunks as u64),
        ("PendingPublishes", report.pending_publishes as u64),
        ("DroppedPublishes", report.dropped_publishes as u64),
        ("DeferredPartitions", report.deferred as u64),
        ("CheckpointedPartitions", report.checkpointed as u64),
        ("FailedPartitions", report.failed as u64),
        ("EventsFlushed", report.events),
        ("DuplicatesDropped", report.duplicates),
        ("QuarantinedObjects", report.quarantined as u64),
    ];
    let mut document = json!({
        "_aws": {
            "Timestamp": timestamp_millis,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Deployment"]],
                "Metrics": metrics.iter().map(|(name, _)| json!({"Name": name, "Unit": "Count"})).collect::<Vec<_>>(),
            }],
        },
        "Deployment": deployment,
    });
    for (name, value) in metrics {
        document[name] = json!(value);
    }
    document.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn every_declared_metric_has_a_value() {
        let report = FlushReport {
            pending_chunks: 3,
            pending_publishes: 1,
            events: 10,
            quarantined: 2,
            ..FlushReport::default()
        };
        let line: Value =
            serde_json::from_str(&embedded_metrics("prod", &report, 1_700_000_000_000)).unwrap();
        assert_eq!(line["Deployment"], "prod");
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        for metric in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
        {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_u64(), "{name}");
        }
        assert_eq!(line["PendingChunks"], 3);
        assert_eq!(line["PendingPublishes"], 1);
        assert_eq!(line["QuarantinedObjects"], 2);
    }
}
