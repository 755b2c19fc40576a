//! Cluster mode: the engine as one replica of a state machine over a
//! replicated log.
//!
//! # Writes
//!
//! A write becomes a [`Command`], appended to the log as a record with a
//! fresh id. Once the log has stored it (on a quorum of its nodes), this
//! replica waits until its own follower has applied that record, and
//! answers with the outcome its apply reached: the same one every replica
//! reaches, because apply is deterministic (see `command`). The record's
//! position goes back to the caller as a consistency token
//! ([`track_writes`]).
//!
//! # The follower
//!
//! One task reads the log from the position after the one the store holds,
//! and applies each record in order under the writer lock; the store keeps
//! the record's position in the same transaction as its change, so a
//! restart resumes where the last one stopped. A record whose position is
//! not the next one (the log dropped records this replica needed), one
//! this build cannot read, or a storage fault stops the follower for good:
//! the replica reports itself broken and must be wiped to rejoin.
//!
//! # Joining and snapshots
//!
//! A replica started on an empty data directory restores the snapshot
//! another replica published, with the position it holds, then follows the
//! log from there. Every replica publishes one now and then
//! ([`ReplicaSettings::snapshot_interval`]) if the published one is behind
//! it, so the log may drop old records.
//!
//! # Health
//!
//! A replica is ready once it has caught up to within
//! [`ReplicaSettings::max_lag`] records of the log's last one, and stays
//! ready while it is within that bound and not broken.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio_stream::StreamExt as _;

use super::apply::apply;
use super::command::{Command, Outcome};
use super::{BackupLimits, Engine, EngineSettings, Shared};
use crate::domain::{Error, Result, Timestamp};
use crate::log::{Entry, Log, Position};
use crate::store::{self, StoreOptions};

/// How often the follower looks at the log's last position.
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// How long a write waits for this replica to apply what the log stored.
const APPLY_WAIT: Duration = Duration::from_secs(30);
/// The longest pause before the follower reads the log again after an error.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The upper bounds of the apply-delay histogram, in microseconds: from
/// the log storing a record to this replica applying it.
pub const APPLY_DELAY_BUCKETS_MICROS: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// How a replica behaves.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// Ready only within this many records of the log's last one.
    pub max_lag: u64,
    /// How often to publish a snapshot, if the published one is behind.
    pub snapshot_interval: Duration,
    /// The limits of the backup a snapshot is taken with.
    pub backup: BackupLimits,
}

/// What a replica reports at one moment, for the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// The last record applied.
    pub applied: Position,
    /// The log's last record, as last seen.
    pub log_last: Position,
    /// The position of the snapshot the store was started from; 0 if none.
    pub joined_from: Position,
    /// Snapshots this replica published.
    pub snapshots_published: u64,
    /// Appends this replica had to retry.
    pub append_retries: u64,
    /// Records applied, by apply delay: the count at or under each bound
    /// of [`APPLY_DELAY_BUCKETS_MICROS`] and then all of them.
    pub apply_delay_counts: Vec<u64>,
    /// The sum of the apply delays, in microseconds.
    pub apply_delay_sum_micros: u64,
}

/// The replica's side of the engine.
pub(super) struct Replica {
    /// The log.
    log: Arc<dyn Log>,
    /// The last record applied.
    applied: watch::Sender<Position>,
    /// The log's last record, as last seen.
    log_last: AtomicU64,
    /// Ready to serve (see the module docs).
    ready: watch::Sender<bool>,
    /// Has been within the lag bound once since start.
    caught_up: AtomicBool,
    /// Why the follower stopped for good, if it did.
    broken: Mutex<Option<String>>,
    /// The requests waiting for the outcome of their records, by record id.
    waiters: Mutex<HashMap<String, oneshot::Sender<Result<Outcome>>>>,
    /// The snapshot the store started from.
    joined_from: Position,
    /// Snapshots published.
    snapshots_published: AtomicU64,
    /// Apply delays: one count per bucket, then the overflow.
    apply_delays: [AtomicU64; APPLY_DELAY_BUCKETS_MICROS.len() + 1],
    /// The sum of the apply delays, in microseconds.
    apply_delay_sum: AtomicU64,
    /// How the replica behaves.
    settings: ReplicaSettings,
    /// Stops the replica's tasks when the engine goes.
    stopped: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Replica")
            .field("applied", &*self.applied.borrow())
            .field("log_last", &self.log_last.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

tokio::task_local! {
    /// The highest log position the writes of the current request reached.
    static WRITTEN: Arc<AtomicU64>;
}

/// Runs `request`, and returns with its output the highest log position
/// its writes reached: the consistency token to answer with (none in the
/// embedded mode, or when it wrote nothing).
pub async fn track_writes<F: Future>(request: F) -> (F::Output, Option<Position>) {
    let written = Arc::new(AtomicU64::new(0));
    let output = WRITTEN.scope(Arc::clone(&written), request).await;
    let position = written.load(Ordering::Relaxed);
    (output, (position > 0).then_some(position))
}

fn note_written(position: Position) {
    let _ = WRITTEN.try_with(|written| written.fetch_max(position, Ordering::Relaxed));
}

/// Removes a waiter when the request that registered it goes, answered or not.
struct Waiting<'a> {
    /// The replica.
    replica: &'a Replica,
    /// The record id.
    id: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.replica.waiters).remove(&self.id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh record id: 128 random bits, in hex.
fn record_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|error| Error::internal(format!("no randomness for a record id: {error}")))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

impl Replica {
    /// Appends `command` and returns the outcome of applying it here.
    pub(super) async fn propose(&self, command: Command) -> Result<Outcome> {
        if let Some(why) = lock(&self.broken).clone() {
            return Err(Error::Unavailable(format!(
                "this replica stopped applying the log ({why}); send the write to another replica"
            )));
        }
        let record = command.encode()?;
        let id = record_id()?;
        let (sender, outcome) = oneshot::channel();
        lock(&self.waiters).insert(id.clone(), sender);
        let _waiting = Waiting {
            replica: self,
            id: id.clone(),
        };
        let appended = self.log.append(id, record.into()).await?;
        note_written(appended.position);
        match tokio::time::timeout(APPLY_WAIT, outcome).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) | Err(_) => Err(Error::Unavailable(format!(
                "the write is stored in the log at position {}, but this replica has not \
                 applied it yet (it is at {}): read it through another replica with the \
                 consistency token {}",
                appended.position,
                *self.applied.borrow(),
                appended.position
            ))),
        }
    }

    /// Waits until this replica has applied `position`, for at most `wait`.
    pub(super) async fn wait_for(&self, position: Position, wait: Duration) -> Result<()> {
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout(wait, applied.wait_for(|&at| at >= position)).await;
        if let Ok(Ok(_)) = reached {
            return Ok(());
        }
        let at = *self.applied.borrow();
        Err(Error::ReplicaBehind {
            applied: at,
            required: position,
        })
    }

    /// Applies one record: under the writer lock, with its position stored
    /// with its change; hands the outcome to the request that appended it.
    async fn apply(&self, shared: &Arc<Shared>, entry: Entry) -> Result<()> {
        let command = Command::decode(&entry.record)?;
        let position = entry.position;
        let shared = Arc::clone(shared);
        let (outcome, stored) = tokio::task::spawn_blocking(move || {
            let _writer = shared.writer();
            shared.store.begin_apply(position);
            let outcome = apply(&shared, command);
            let stored = shared.store.end_apply();
            (outcome, stored)
        })
        .await
        .map_err(|error| Error::internal(format!("apply task failed: {error}")))?;
        stored?;
        if let Err(Error::Internal(why)) = &outcome {
            return Err(Error::internal(format!(
                "applying the record at {position} failed: {why}"
            )));
        }
        self.applied.send_replace(position);
        self.log_last.fetch_max(position, Ordering::Relaxed);
        self.note_delay(entry.stored_at_nanos);
        if let Some(waiter) = lock(&self.waiters).remove(&entry.id) {
            let _ = waiter.send(outcome);
        }
        Ok(())
    }

    fn note_delay(&self, stored_at_nanos: i64) {
        let delay = Timestamp::now()
            .as_nanos()
            .saturating_sub(stored_at_nanos)
            .max(0)
            / 1_000;
        let delay = u64::try_from(delay).unwrap_or(0);
        let bucket = APPLY_DELAY_BUCKETS_MICROS
            .iter()
            .position(|&bound| delay <= bound)
            .unwrap_or(APPLY_DELAY_BUCKETS_MICROS.len());
        self.apply_delays[bucket].fetch_add(1, Ordering::Relaxed);
        self.apply_delay_sum.fetch_add(delay, Ordering::Relaxed);
    }

    /// Stops the follower for good, and says why.
    fn break_down(&self, why: String) {
        tracing::error!(reason = %why, "this replica stopped applying the log");
        *lock(&self.broken) = Some(why);
        self.refresh_ready();
    }

    /// Recomputes readiness from the lag.
    fn refresh_ready(&self) {
        let applied = *self.applied.borrow();
        let lag = self
            .log_last
            .load(Ordering::Relaxed)
            .saturating_sub(applied);
        let within = lag <= self.settings.max_lag;
        if within && !self.caught_up.swap(true, Ordering::Relaxed) {
            tracing::info!(applied, "caught up with the log");
        }
        let ready =
            within && self.caught_up.load(Ordering::Relaxed) && lock(&self.broken).is_none();
        self.ready
            .send_if_modified(|was| std::mem::replace(was, ready) != ready);
    }

    /// Stops the follower, the watch on the log and the snapshots.
    pub(super) fn stop(&self) {
        self.stopped.cancel();
    }

    fn stats(&self) -> ReplicaStats {
        let mut counts = Vec::with_capacity(self.apply_delays.len());
        let mut total = 0;
        for bucket in &self.apply_delays {
            total += bucket.load(Ordering::Relaxed);
            counts.push(total);
        }
        ReplicaStats {
            applied: *self.applied.borrow(),
            log_last: self.log_last.load(Ordering::Relaxed),
            joined_from: self.joined_from,
            snapshots_published: self.snapshots_published.load(Ordering::Relaxed),
            append_retries: self.log.append_retries(),
            apply_delay_counts: counts,
            apply_delay_sum_micros: self.apply_delay_sum.load(Ordering::Relaxed),
        }
    }
}

/// Reads the log and applies it, for as long as the replica runs.
async fn follow(replica: Arc<Replica>, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let from = *replica.applied.borrow() + 1;
        let mut entries = match replica.log.read_from(from).await {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "cannot read the log");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        while let Some(entry) = entries.next().await {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(%error, "reading the log stopped; reading again");
                    break;
                }
            };
            backoff = Duration::from_millis(100);
            let expected = *replica.applied.borrow() + 1;
            if entry.position < expected {
                continue;
            }
            if entry.position > expected {
                replica.break_down(format!(
                    "the log no longer holds the records from {expected} to {}, which this \
                     replica has not applied (its retention dropped them); wipe the data \
                     directory so that it rejoins from the published snapshot",
                    entry.position - 1
                ));
                return;
            }
            if let Err(error) = replica.apply(&shared, entry).await {
                replica.break_down(error.to_string());
                return;
            }
            replica.refresh_ready();
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Keeps the log's last position, and so the lag and readiness, current.
async fn watch_log(replica: Arc<Replica>) {
    loop {
        match replica.log.bounds().await {
            Ok(bounds) => {
                replica.log_last.fetch_max(bounds.last, Ordering::Relaxed);
            }
            Err(error) => tracing::debug!(%error, "cannot read the log's bounds"),
        }
        replica.refresh_ready();
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// Publishes a snapshot now and then, when the published one is behind.
async fn publish_snapshots(replica: Arc<Replica>, engine: Engine, scratch: PathBuf) {
    loop {
        // Replicas started together should not all publish at once.
        let jitter = Duration::from_millis(u64::from(rand_byte()) * 4);
        tokio::time::sleep(replica.settings.snapshot_interval + jitter).await;
        if lock(&replica.broken).is_some() {
            return;
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
    let mut chunks = engine.backup(replica.settings.backup).await?;
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
    replica.log.put_snapshot(position, scratch).await?;
    Ok(position)
}

/// A file beside `data_dir`, named after it.
fn beside(data_dir: &Path, suffix: &str) -> PathBuf {
    let name = data_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    data_dir.with_file_name(format!(".{name}.{suffix}"))
}

/// Restores the published snapshot into the new data directory, if there
/// is one; returns its position, 0 if none was published.
async fn join_from_snapshot(log: &dyn Log, data_dir: &Path) -> Result<Position> {
    let file = beside(data_dir, "snapshot");
    let Some(position) = log.fetch_snapshot(&file).await? else {
        return Ok(0);
    };
    let data_dir = data_dir.to_path_buf();
    let restored = file.clone();
    let summary = tokio::task::spawn_blocking(move || store::backup::restore(&restored, &data_dir))
        .await
        .map_err(|error| Error::internal(format!("restore task failed: {error}")))?;
    let _ = tokio::fs::remove_file(&file).await;
    summary?;
    tracing::info!(position, "joined from a snapshot");
    Ok(position)
}

impl Engine {
    /// Opens the engine as a replica of `log`: joins from the published
    /// snapshot if the data directory is new, checks that the store and
    /// the log belong together, and starts following the log. The engine
    /// serves reads at once; [`Engine::ready`] says when it has caught up.
    pub async fn open_replica(
        options: StoreOptions,
        settings: EngineSettings,
        log: Arc<dyn Log>,
        replica_settings: ReplicaSettings,
    ) -> Result<Self> {
        let mut joined_from = 0;
        if store::backup::is_empty_dir(&options.path)? {
            joined_from = join_from_snapshot(log.as_ref(), &options.path).await?;
        }
        let data_dir = options.path.clone();
        let mut engine = Engine::open(options, settings).await?;
        let store = &engine.shared.store;
        let applied = match store.log_position()? {
            Some(position) => position,
            None if store.is_blank()? => 0,
            None => {
                return Err(Error::FailedPrecondition(format!(
                    "{} holds a store written in the embedded mode, which no log built: a \
                     cluster replica starts on an empty data directory; move the data into \
                     the cluster through its API (segmentd import)",
                    data_dir.display()
                )))
            }
        };
        let mut bounds = log.bounds().await?;
        if bounds.last == 0 {
            // The first replica of a new cluster gives every other its
            // page-token key; the others find the log taken and use it.
            let first = Command::Bootstrap {
                page_token_key: store.page_token_key().to_bytes(),
            };
            log.append_first(record_id()?, first.encode()?.into())
                .await?;
            bounds = log.bounds().await?;
        }
        if applied == 0 && bounds.first > 1 {
            return Err(Error::FailedPrecondition(format!(
                "the log starts at position {} (its retention dropped the records before) and no \
                 snapshot is published to start from: wait until a running replica publishes \
                 one (--cluster-snapshot-interval), then start this replica again",
                bounds.first
            )));
        }
        if applied + 1 < bounds.first {
            return Err(Error::FailedPrecondition(format!(
                "this replica has applied the log up to {applied}, but the log now starts at {}: \
                 wipe the data directory {} so that it rejoins from the published snapshot",
                bounds.first,
                data_dir.display()
            )));
        }
        let replica = Arc::new(Replica {
            log,
            applied: watch::Sender::new(applied),
            log_last: AtomicU64::new(bounds.last),
            ready: watch::Sender::new(false),
            caught_up: AtomicBool::new(false),
            broken: Mutex::new(None),
            waiters: Mutex::new(HashMap::new()),
            joined_from,
            snapshots_published: AtomicU64::new(0),
            apply_delays: Default::default(),
            apply_delay_sum: AtomicU64::new(0),
            settings: replica_settings,
            stopped: tokio_util::sync::CancellationToken::new(),
        });
        let until_stopped = |task| {
            let stopped = replica.stopped.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stopped.cancelled() => {}
                    () = task => {}
                }
            })
        };
        until_stopped(
            Box::pin(follow(Arc::clone(&replica), Arc::clone(&engine.shared)))
                as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
        );
        until_stopped(Box::pin(watch_log(Arc::clone(&replica))));
        let snapshots = Engine {
            shared: Arc::clone(&engine.shared),
            replica: None,
        };
        until_stopped(Box::pin(publish_snapshots(
            Arc::clone(&replica),
            snapshots,
            beside(&data_dir, "publishing"),
        )));
        tracing::info!(
            applied,
            log_last = bounds.last,
            joined_from,
            "following the log"
        );
        engine.replica = Some(replica);
        Ok(engine)
    }

    /// Whether the engine is ready to serve: always in the embedded mode; in
    /// cluster mode, once caught up with the log (see the module docs).
    pub fn ready(&self) -> watch::Receiver<bool> {
        match &self.replica {
            Some(replica) => replica.ready.subscribe(),
            None => watch::Sender::new(true).subscribe(),
        }
    }

    /// Waits until the engine has applied the log up to `position`, for at
    /// most `wait`; at once in the embedded mode, where every acknowledged
    /// write is applied.
    pub async fn wait_for(&self, position: Position, wait: Duration) -> Result<()> {
        match &self.replica {
            Some(replica) => replica.wait_for(position, wait).await,
            None => Ok(()),
        }
    }

    /// The replica's numbers; `None` in the embedded mode.
    pub fn replica_stats(&self) -> Option<ReplicaStats> {
        self.replica.as_ref().map(|replica| replica.stats())
    }
}

#[cfg(test)]
mod tests;
