//! The `segmentd_cluster_*` families: how far this replica has applied
//! the log, how far behind it is, and how long records take to reach it.

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{buckets, seconds, single};
use crate::engine::replica::{ReplicaStats, APPLY_DELAY_BUCKETS_MICROS};

/// Writes the replica's families.
pub(super) fn encode(
    encoder: &mut DescriptorEncoder,
    stats: &ReplicaStats,
) -> Result<(), std::fmt::Error> {
    for (name, help, value) in [
        (
            "segmentd_cluster_applied_position",
            "The position of the last log record this replica applied",
            stats.applied,
        ),
        (
            "segmentd_cluster_log_last_position",
            "The position of the log's last record, as this replica last saw it",
            stats.log_last,
        ),
        (
            "segmentd_cluster_lag_records",
            "Records in the log that this replica has not applied yet",
            stats.log_last.saturating_sub(stats.applied),
        ),
        (
            "segmentd_cluster_joined_from_snapshot_position",
            "The position of the snapshot this replica's store started from; 0 if none",
            stats.joined_from,
        ),
    ] {
        single(
            encoder,
            name,
            help,
            ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)),
        )?;
    }
    for (name, help, value) in [
        (
            "segmentd_cluster_snapshots_published",
            "Snapshots this replica published for new replicas to start from",
            stats.snapshots_published,
        ),
        (
            "segmentd_cluster_append_retries",
            "Appends to the log that had to be retried (a leader change, a node restart)",
            stats.append_retries,
        ),
    ] {
        single(encoder, name, help, ConstCounter::new(value))?;
    }
    let (counts, all) = stats
        .apply_delay_counts
        .split_at(stats.apply_delay_counts.len().saturating_sub(1));
    let total = all.first().copied().unwrap_or(0);
    let mut histogram = encoder.encode_descriptor(
        "segmentd_cluster_apply_delay_seconds",
        "From the log storing a record to this replica applying it",
        None,
        MetricType::Histogram,
    )?;
    histogram.encode_histogram::<NoLabelSet>(
        seconds(stats.apply_delay_sum_micros),
        total,
        &buckets(&APPLY_DELAY_BUCKETS_MICROS, counts),
        None,
    )?;
    Ok(())
}
