//! Snapshots: a replica publishes one now and then for new replicas to
//! start from, and a replica on an empty data directory joins from it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{lock, Replica};
use crate::domain::{Error, Result};
use crate::engine::Engine;
use crate::log::{Log, Position};
use crate::store;

/// Publishes a snapshot now and then, when the published one is behind.
pub(super) async fn publish_snapshots(replica: Arc<Replica>, engine: Engine, scratch: PathBuf) {
    loop {
        // Replicas started together should not all publish at once.
        let jitter = Duration::from_millis(u64::from(rand_byte()) * 4);
        tokio::time::sleep(replica.settings.snapshot_interval + jitter).await;
        if lock(&replica.stopped).is_some() {
            return;
        }
        // A replica behind the others would publish an older state.
        if !*replica.ready.borrow() {
            continue;
        }
        let applied = *replica.applied.borrow();
        match replica.log.snapshot_position().await {
            Ok(Some(published)) if published >= applied => continue,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot read the published snapshot's position");
                continue;
            }
        }
        let started = Instant::now();
        match publish(&replica, &engine, &scratch).await {
            Ok(position) => {
                replica.snapshots_published.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    position,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "snapshot published"
                );
            }
            Err(error) => tracing::warn!(%error, "cannot publish a snapshot"),
        }
        let _ = tokio::fs::remove_file(&scratch).await;
    }
}

fn rand_byte() -> u8 {
    let mut byte = [0u8];
    let _ = getrandom::fill(&mut byte);
    byte[0]
}

/// Takes a backup into `scratch` and publishes it with the position it holds.
async fn publish(replica: &Replica, engine: &Engine, scratch: &Path) -> Result<Position> {
    let io = |error: std::io::Error| {
        Error::internal(format!(
            "cannot write the snapshot {}: {error}",
            scratch.display()
        ))
    };
    let mut chunks = engine.snapshot(replica.settings.backup).await?;
    {
        use tokio::io::AsyncWriteExt as _;
        let mut file = tokio::fs::File::create(scratch).await.map_err(io)?;
        while let Some(chunk) = chunks.recv().await {
            file.write_all(&chunk?).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
    }
    let file = scratch.to_path_buf();
    let position = tokio::task::spawn_blocking(move || store::backup::log_position_of(&file))
        .await
        .map_err(|error| Error::internal(format!("snapshot check failed: {error}")))??
        .ok_or_else(|| Error::internal("the snapshot holds no log position"))?;
    // Another replica may have published a later one while this was taken.
    if let Some(published) = replica.log.snapshot_position().await? {
        if published >= position {
            return Ok(published);
        }
    }
    replica.log.put_snapshot(position, scratch).await?;
    Ok(position)
}

/// A file beside `data_dir`, named after it.
pub(super) fn beside(data_dir: &Path, suffix: &str) -> PathBuf {
    let name = data_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    data_dir.with_file_name(format!(".{name}.{suffix}"))
}

/// Restores the published snapshot into the new data directory, if there
/// is one, compressed if `compress`; returns its position, 0 if none was
/// published.
pub(super) async fn join_from_snapshot(
    log: &dyn Log,
    data_dir: &Path,
    compress: bool,
) -> Result<Position> {
    let file = beside(data_dir, "snapshot");
    let Some(position) = log.fetch_snapshot(&file).await? else {
        return Ok(0);
    };
    let data_dir = data_dir.to_path_buf();
    let restored = file.clone();
    let summary =
        tokio::task::spawn_blocking(move || store::backup::restore(&restored, &data_dir, compress))
            .await
            .map_err(|error| Error::internal(format!("restore task failed: {error}")))?;
    let _ = tokio::fs::remove_file(&file).await;
    summary?;
    tracing::info!(position, "joined from a snapshot");
    Ok(position)
}
