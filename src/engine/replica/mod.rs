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
//! restart resumes where the last one stopped.
//!
//! - A record that is not a segmentd command, or does not decode, is
//!   skipped with its position stored: every replica holds the same bytes
//!   and skips it alike.
//! - A record of a later format, a gap (the log dropped records this
//!   replica needs) or a failure that stored nothing leaves the replica
//!   *in trouble*: not ready, refusing writes, and reading the log again
//!   with backoff, until the record applies (after an upgrade, say).
//! - A failure after the change was stored, or a log that holds fewer
//!   records than this replica applied (a stream deleted and made again),
//!   *stops* the replica: it applies nothing more until restarted, and the
//!   latter must be wiped to rejoin.
//!
//! # Joining and snapshots
//!
//! A replica started on an empty data directory restores the snapshot
//! another replica published, with the position it holds, then follows the
//! log from there. Every ready replica publishes one now and then
//! ([`ReplicaSettings::snapshot_interval`]) if the published one is behind
//! it, so the log may drop old records; `snapshot` holds both parts.
//!
//! # Health
//!
//! A replica is ready once it has caught up to within
//! [`ReplicaSettings::max_lag`] records of the log's last one, and stays
//! ready while it is within that bound, neither in trouble nor stopped,
//! and has heard from the log within [`OUT_OF_TOUCH`].

mod snapshot;
mod watching;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio_stream::StreamExt as _;

use super::apply::apply;
use super::command::{Command, Outcome, Unreadable};
use super::watch::load_replicated;
use super::{BackupLimits, Engine, EngineSettings, Shared};
use crate::domain::{Error, Result, Timestamp};
use crate::log::{Entry, Log, Position};
use crate::store::{self, StoreOptions};
use snapshot::{beside, join_from_snapshot, publish_snapshots};
use watching::{append_ticks, read_back_journal};

/// How often the follower looks at the log's last position.
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// How long a write waits for this replica to apply what the log stored.
const APPLY_WAIT: Duration = Duration::from_secs(30);
/// The longest pause before the follower reads the log again after an error.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A replica that has not heard from the log for this long cannot tell
/// how far behind it is, and is not ready.
pub const OUT_OF_TOUCH: Duration = Duration::from_secs(10);

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
    /// Why the follower cannot go on for now, if it cannot (see the
    /// module docs).
    trouble: Mutex<Option<String>>,
    /// Why the follower stopped for good, if it did.
    stopped: Mutex<Option<String>>,
    /// When the log last answered, as milliseconds since `started`.
    heard_at: AtomicU64,
    /// When the replica started, for `heard_at`.
    started: Instant,
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
    /// Ends the replica's tasks when the engine goes.
    shutdown: tokio_util::sync::CancellationToken,
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
        if let Some(why) = self.failing() {
            return Err(Error::Unavailable(format!(
                "this replica cannot apply the log now ({why}); send the write to another replica"
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
    /// A position the log does not hold yet, or a replica that cannot
    /// apply the log now, is answered at once.
    pub(super) async fn wait_for(&self, position: Position, wait: Duration) -> Result<()> {
        let behind = || Error::ReplicaBehind {
            applied: *self.applied.borrow(),
            required: position,
        };
        if *self.applied.borrow() >= position {
            return Ok(());
        }
        if self.failing().is_some() {
            return Err(behind());
        }
        if position > self.log_last.load(Ordering::Relaxed) {
            // The token may be from a write a moment old: look once more.
            if let Ok(Ok(bounds)) = tokio::time::timeout(wait, self.log.bounds()).await {
                self.heard();
                self.log_last.fetch_max(bounds.last, Ordering::Relaxed);
            }
            if position > self.log_last.load(Ordering::Relaxed) {
                return Err(behind());
            }
        }
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout(wait, applied.wait_for(|&at| at >= position)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(behind()),
        }
    }

    /// Why this replica cannot apply the log now, if it cannot.
    fn failing(&self) -> Option<String> {
        lock(&self.stopped)
            .clone()
            .or_else(|| lock(&self.trouble).clone())
    }

    /// Notes that the log answered.
    fn heard(&self) {
        let millis = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heard_at.fetch_max(millis, Ordering::Relaxed);
    }

    /// Applies one record: under the writer lock, with its position stored
    /// with its change; hands the outcome to the request that appended it.
    async fn apply(&self, shared: &Arc<Shared>, entry: Entry) -> Result<(), Failure> {
        let position = entry.position;
        let command = match Command::decode(&entry.record) {
            Ok(command) => Some(command),
            Err(Unreadable::Newer(version)) => {
                return Err(Failure::Retry(format!(
                    "the log record at {position} {}",
                    Unreadable::Newer(version)
                )))
            }
            Err(unreadable) => {
                tracing::warn!(position, reason = %unreadable, "skipped a log record");
                None
            }
        };
        let shared = Arc::clone(shared);
        let applied = tokio::task::spawn_blocking(move || {
            let _writer = shared.writer();
            shared.store.begin_apply(position);
            let outcome = match command {
                Some(command) => apply(&shared, command),
                None => Err(Error::Unavailable(format!(
                    "the log record at {position} could not be read, and was skipped"
                ))),
            };
            if let Err(Error::Internal(why)) = &outcome {
                let why = format!("applying the log record at {position} failed: {why}");
                return Err(if shared.store.abort_apply() {
                    Failure::Stop(format!("{why}; restart the replica"))
                } else {
                    Failure::Retry(why)
                });
            }
            match shared.store.end_apply() {
                Ok(()) => Ok(outcome),
                Err(error) => Err(Failure::Retry(format!(
                    "storing the position {position} failed: {error}"
                ))),
            }
        })
        .await
        .map_err(|error| {
            Failure::Stop(format!(
                "applying the log record at {position} failed: {error}; restart the replica"
            ))
        })??;
        self.applied.send_replace(position);
        self.log_last.fetch_max(position, Ordering::Relaxed);
        self.note_delay(entry.stored_at_nanos);
        if let Some(waiter) = lock(&self.waiters).remove(&entry.id) {
            let _ = waiter.send(applied);
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

    /// Marks the replica in trouble, or stopped for good, and tells the
    /// writes waiting on it.
    fn fail(&self, failure: Failure) {
        let (slot, why) = match failure {
            Failure::Retry(why) => (&self.trouble, why),
            Failure::Stop(why) => (&self.stopped, why),
        };
        let mut slot = lock(slot);
        if slot.as_deref() != Some(why.as_str()) {
            tracing::error!(reason = %why, "this replica cannot apply the log");
        }
        *slot = Some(why.clone());
        drop(slot);
        for (_, waiter) in lock(&self.waiters).drain() {
            let _ = waiter.send(Err(Error::Unavailable(format!(
                "this replica cannot apply the log now ({why}); the write may be in the log: \
                 read it through another replica"
            ))));
        }
        self.refresh_ready();
    }

    /// Ends a spell of trouble, once a record applies again.
    fn recover(&self) {
        if lock(&self.trouble).take().is_some() {
            tracing::info!("this replica applies the log again");
        }
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
        let heard_at = Duration::from_millis(self.heard_at.load(Ordering::Relaxed));
        let in_touch = self.started.elapsed().saturating_sub(heard_at) <= OUT_OF_TOUCH;
        let ready = within
            && in_touch
            && self.caught_up.load(Ordering::Relaxed)
            && self.failing().is_none();
        self.ready
            .send_if_modified(|was| std::mem::replace(was, ready) != ready);
    }

    /// Stops the follower, the watch on the log and the snapshots.
    pub(super) fn stop(&self) {
        self.shutdown.cancel();
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

/// Why a record could not be applied.
#[derive(Debug)]
enum Failure {
    /// Nothing was stored: read the log again and retry.
    Retry(String),
    /// A change was stored but the replica's memory may not follow it, or
    /// the log is not the one the store was built from: stop.
    Stop(String),
}

/// Reads the log and applies it, for as long as the replica runs.
async fn follow(replica: Arc<Replica>, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if lock(&replica.stopped).is_some() {
            return;
        }
        let from = *replica.applied.borrow() + 1;
        if let Err(error) = recover_journal(&replica, &shared, from - 1).await {
            // Applying on without it would give other causes than the
            // other replicas give: try again first.
            shared.watch.journal_still_lost();
            tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "cannot read back the journal of the watches from the log");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
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
            if lock(&replica.stopped).is_some() {
                return;
            }
            let expected = *replica.applied.borrow() + 1;
            if entry.position < expected {
                continue;
            }
            if entry.position > expected {
                replica.fail(Failure::Retry(format!(
                    "the log no longer holds the records from {expected} to {}, which this \
                     replica has not applied (its retention dropped them); wipe the data \
                     directory so that it rejoins from the published snapshot",
                    entry.position - 1
                )));
                break;
            }
            match replica.apply(&shared, entry).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    replica.recover();
                    replica.refresh_ready();
                }
                Err(failure) => {
                    let stop = matches!(failure, Failure::Stop(_));
                    replica.fail(failure);
                    if stop {
                        return;
                    }
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Reads back from the log the journal a failed evaluation lost (see
/// `watching`), before the tick is applied again.
async fn recover_journal(replica: &Replica, shared: &Arc<Shared>, applied: Position) -> Result<()> {
    if !shared.watch.take_journal_lost() {
        return Ok(());
    }
    let Some(evaluated) = shared.store.history_evaluated_position()? else {
        return Ok(());
    };
    read_back_journal(replica.log.as_ref(), shared, evaluated, applied).await
}

/// Keeps the log's last position, and so the lag and readiness, current;
/// stops the replica if the log holds fewer records than it applied.
async fn watch_log(replica: Arc<Replica>) {
    // Seen twice in a row before the replica stops: one answer is no proof.
    let mut shorter_once = false;
    loop {
        // Read first: every record applied before the question was stored
        // before it, so a log that answers with less has lost them.
        let applied = *replica.applied.borrow();
        match replica.log.bounds().await {
            Ok(bounds) => {
                replica.heard();
                replica.log_last.fetch_max(bounds.last, Ordering::Relaxed);
                let shorter = bounds.last < applied;
                if shorter && shorter_once {
                    replica.fail(Failure::Stop(not_this_log(applied, bounds.last)));
                }
                shorter_once = shorter;
            }
            Err(error) => tracing::debug!(%error, "cannot read the log's bounds"),
        }
        replica.refresh_ready();
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// Why a log that holds fewer records than a replica applied is not the
/// one its store was built from.
fn not_this_log(applied: Position, last: Position) -> String {
    format!(
        "this replica applied the log up to {applied}, but the log holds records only up to \
         {last}: it is not the log this store was built from (was the stream deleted and made \
         again?); wipe the data directory to join this log, or point the replica at its own"
    )
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
            joined_from = join_from_snapshot(log.as_ref(), &options.path, options.compress).await?;
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
                "the log starts at position {} (its retention dropped the records before), so \
                 this replica must start from a snapshot: if none is published yet, wait until a \
                 running replica publishes one (--cluster-snapshot-interval); then empty the \
                 data directory {} and start this replica again",
                bounds.first,
                data_dir.display()
            )));
        }
        if applied > bounds.last {
            return Err(Error::FailedPrecondition(not_this_log(
                applied,
                bounds.last,
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
        // The change history as of the position applied, before the
        // follower applies more.
        let loading = Arc::clone(&engine.shared);
        let evaluated = tokio::task::spawn_blocking(move || load_replicated(&loading))
            .await
            .map_err(|error| Error::internal(format!("history load task failed: {error}")))??;
        if let Some(evaluated) = evaluated {
            read_back_journal(log.as_ref(), &engine.shared, evaluated, applied).await?;
        }
        let replica = Arc::new(Replica {
            log,
            applied: watch::Sender::new(applied),
            log_last: AtomicU64::new(bounds.last),
            ready: watch::Sender::new(false),
            caught_up: AtomicBool::new(false),
            trouble: Mutex::new(None),
            stopped: Mutex::new(None),
            heard_at: AtomicU64::new(0),
            started: Instant::now(),
            waiters: Mutex::new(HashMap::new()),
            joined_from,
            snapshots_published: AtomicU64::new(0),
            apply_delays: Default::default(),
            apply_delay_sum: AtomicU64::new(0),
            settings: replica_settings,
            shutdown: tokio_util::sync::CancellationToken::new(),
        });
        let until_stopped = |task| {
            let shutdown = replica.shutdown.clone();
            tokio::spawn(async move {
                // The stop first: once asked for, no task goes on a step,
                // even when it could.
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => {}
                    () = task => {}
                }
            })
        };
        until_stopped(
            Box::pin(follow(Arc::clone(&replica), Arc::clone(&engine.shared)))
                as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
        );
        until_stopped(Box::pin(watch_log(Arc::clone(&replica))));
        until_stopped(Box::pin(append_ticks(
            Arc::clone(&replica),
            Arc::clone(&engine.shared),
        )));
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
#[cfg(test)]
mod watch_tests;
