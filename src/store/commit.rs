//! Group commit: every writer waiting for durability shares the next flush.
//!
//! A writer applies its change to sled first, then asks for a flush. The
//! committer task takes every request queued so far, runs one `flush` on the
//! blocking pool, and answers them all; requests that arrive during a flush
//! wait for the next one, which still covers their writes.
//!
//! The committer counts its flushes and how long they take, in
//! [`FlushStats`], for the metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::domain::{Error, Result};

type Waiter = oneshot::Sender<Result<(), String>>;

/// The upper bounds, in microseconds, of the buckets flush latencies are
/// counted in; a flush slower than the last is counted in none of them.
pub const FLUSH_BUCKETS_MICROS: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 10_000_000,
];

/// What the committer has done, counted as it goes.
#[derive(Debug, Default)]
struct FlushStats {
    /// Flushes run, failed ones included.
    flushes: AtomicU64,
    /// Flushes that failed.
    failures: AtomicU64,
    /// Writers answered, one per wait.
    waiters: AtomicU64,
    /// The time all flushes took, in microseconds.
    micros: AtomicU64,
    /// Flushes by latency: at `i`, those that took at most
    /// `FLUSH_BUCKETS_MICROS[i]` but more than the bound before.
    buckets: [AtomicU64; FLUSH_BUCKETS_MICROS.len()],
}

/// A copy of [`FlushStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushCounts {
    /// Flushes run, failed ones included.
    pub flushes: u64,
    /// Flushes that failed.
    pub failures: u64,
    /// Writers answered, one per wait: over `flushes`, how many writes
    /// share a flush.
    pub waiters: u64,
    /// The time all flushes took, in microseconds.
    pub micros: u64,
    /// Flushes by latency: at `i`, those that took at most
    /// `FLUSH_BUCKETS_MICROS[i]` but more than the bound before.
    pub buckets: [u64; FLUSH_BUCKETS_MICROS.len()],
}

impl FlushStats {
    /// Counts one flush that took `took` and answered `waiters` writers.
    fn record(&self, took: Duration, waiters: usize, failed: bool) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.failures
            .fetch_add(u64::from(failed), Ordering::Relaxed);
        self.waiters.fetch_add(waiters as u64, Ordering::Relaxed);
        self.micros.fetch_add(micros, Ordering::Relaxed);
        if let Some(bucket) = FLUSH_BUCKETS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
        {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts now.
    pub fn counts(&self) -> FlushCounts {
        FlushCounts {
            flushes: self.flushes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            waiters: self.waiters.load(Ordering::Relaxed),
            micros: self.micros.load(Ordering::Relaxed),
            buckets: self
                .buckets
                .each_ref()
                .map(|bucket| bucket.load(Ordering::Relaxed)),
        }
    }
}

/// A handle to the committer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    requests: mpsc::UnboundedSender<Waiter>,
    /// What the committer has done.
    stats: Arc<FlushStats>,
}

impl GroupCommit {
    /// Starts the committer for `db` on the current tokio runtime.
    pub fn start(db: sled::Db) -> Self {
        let (requests, mut queue) = mpsc::unbounded_channel::<Waiter>();
        let stats = Arc::new(FlushStats::default());
        let counted = Arc::clone(&stats);
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut waiters = vec![first];
                while let Ok(next) = queue.try_recv() {
                    waiters.push(next);
                }
                let db = db.clone();
                let started = Instant::now();
                let outcome = match tokio::task::spawn_blocking(move || db.flush()).await {
                    Ok(Ok(_bytes)) => Ok(()),
                    Ok(Err(error)) => Err(format!("flush failed: {error}")),
                    Err(join_error) => Err(format!("flush task failed: {join_error}")),
                };
                counted.record(started.elapsed(), waiters.len(), outcome.is_err());
                if let Err(error) = &outcome {
                    tracing::error!(%error, waiters = waiters.len(), "group commit failed");
                }
                for waiter in waiters {
                    // A writer that gave up waiting is not an error.
                    let _ = waiter.send(outcome.clone());
                }
            }
        });
        GroupCommit { requests, stats }
    }

    /// What the committer has done so far.
    pub fn stats(&self) -> FlushCounts {
        self.stats.counts()
    }

    /// Resolves once every write applied before this call is on disk.
    pub async fn wait(&self) -> Result<()> {
        let (waiter, done) = oneshot::channel();
        self.requests
            .send(waiter)
            .map_err(|_| Error::internal("group committer has stopped"))?;
        done.await
            .map_err(|_| Error::internal("group committer dropped a request"))?
            .map_err(Error::Internal)
    }
}
