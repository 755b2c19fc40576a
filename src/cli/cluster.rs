//! Flags of cluster mode: the NATS JetStream log the replicas share, and
//! how a replica follows it. Without `--cluster`, the embedded mode.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::parse_duration;
use crate::engine::replica::ReplicaSettings;
use crate::engine::BackupLimits;
use crate::log::JetStreamOptions;
use crate::server::ClusterConfig;

/// How long one append may take, retries included, before the write is
/// answered UNAVAILABLE.
const APPEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Cluster flags of `segmentd serve`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Cluster mode: the NATS servers of the replicated log, comma-separated
    /// (`nats://nats-0:4222,nats://nats-1:4222`). Every replica started with
    /// the same servers and stream serves the same data.
    #[arg(long, env = "SEGMENTD_CLUSTER", value_delimiter = ',')]
    cluster: Vec<String>,
    /// The JetStream stream that holds the log; its snapshots go to the
    /// object store bucket `<NAME>_SNAPSHOTS`.
    #[arg(long, env = "SEGMENTD_CLUSTER_STREAM", default_value = "SEGMENTD", value_parser = parse_stream)]
    cluster_stream: String,
    /// Copies of the log the NATS cluster keeps, when the stream is created.
    #[arg(long, env = "SEGMENTD_CLUSTER_LOG_REPLICAS", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5))]
    cluster_log_replicas: u8,
    /// Drop log records older than this (`7d`, `24h`), when the stream is
    /// created; a replica further behind rejoins from a snapshot. Kept
    /// forever when left out.
    #[arg(long, env = "SEGMENTD_CLUSTER_LOG_MAX_AGE", value_parser = parse_duration)]
    cluster_log_max_age: Option<Duration>,
    /// Drop the oldest log records beyond this many bytes, when the stream
    /// is created.
    #[arg(long, env = "SEGMENTD_CLUSTER_LOG_MAX_BYTES")]
    cluster_log_max_bytes: Option<u64>,
    /// Health is NOT_SERVING while this replica is more records than this
    /// behind the log, and until it has caught up once after starting.
    #[arg(long, env = "SEGMENTD_CLUSTER_MAX_LAG", default_value_t = 1000)]
    cluster_max_lag: u64,
    /// How often a replica publishes a snapshot for new replicas to start
    /// from, when the published one is behind it (`10m`).
    #[arg(long, env = "SEGMENTD_CLUSTER_SNAPSHOT_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    cluster_snapshot_interval: Duration,
    /// A NATS credentials file (user JWT and NKey seed).
    #[arg(long, env = "SEGMENTD_CLUSTER_CREDS")]
    cluster_creds: Option<PathBuf>,
    /// The CA certificate (PEM) that NATS servers at `tls://` URLs are
    /// checked against; the system's roots when left out.
    #[arg(long, env = "SEGMENTD_CLUSTER_TLS_CA")]
    cluster_tls_ca: Option<PathBuf>,
}

/// A stream name NATS accepts: letters, digits, `-` and `_`.
fn parse_stream(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "a stream name is 1 to 64 letters, digits, '-' or '_', got {text:?}"
        ))
    }
}

impl ClusterArgs {
    /// The cluster these flags describe; `None` in the embedded mode.
    pub fn config(&self, backup: BackupLimits) -> Option<ClusterConfig> {
        let servers: Vec<String> = self
            .cluster
            .iter()
            .map(|server| server.trim().to_owned())
            .filter(|server| !server.is_empty())
            .collect();
        if servers.is_empty() {
            return None;
        }
        Some(ClusterConfig {
            log: JetStreamOptions {
                servers,
                stream: self.cluster_stream.clone(),
                replicas: usize::from(self.cluster_log_replicas),
                max_age: self.cluster_log_max_age,
                max_bytes: self.cluster_log_max_bytes,
                creds: self.cluster_creds.clone(),
                tls_ca: self.cluster_tls_ca.clone(),
                append_timeout: APPEND_TIMEOUT,
            },
            replica: ReplicaSettings {
                max_lag: self.cluster_max_lag,
                snapshot_interval: self.cluster_snapshot_interval,
                backup,
            },
        })
    }
}
