//! Numbers about the engine at work, for the metrics: events recorded,
//! the last index rebuild, and what the index and the store hold. Plain
//! numbers and atomics: the engine knows no metrics library; the server
//! reads [`EngineStats`] when it is scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::index::IndexSize;
use super::{Engine, Shared};
use crate::domain::Result;
use crate::store::FlushCounts;

/// What the engine counts as it works; shared by every write.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Purchases recorded for the first time.
    purchases_recorded: AtomicU64,
    /// Engagement events recorded for the first time.
    engagements_recorded: AtomicU64,
    /// How long the last rebuild of the index took, in microseconds.
    rebuild_micros: AtomicU64,
    /// Whether the index was read from the image of the last shutdown.
    from_image: std::sync::atomic::AtomicBool,
}

impl Counters {
    /// Counts the new events of one recorded batch.
    pub(super) fn recorded(&self, purchases: usize, engagements: usize) {
        self.purchases_recorded
            .fetch_add(purchases as u64, Ordering::Relaxed);
        self.engagements_recorded
            .fetch_add(engagements as u64, Ordering::Relaxed);
    }

    /// Notes how long the index took to load at start-up, and whether it
    /// was read from the image of the last shutdown.
    pub(super) fn rebuilt(&self, took: Duration, from_image: bool) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.rebuild_micros.store(micros, Ordering::Relaxed);
        self.from_image.store(from_image, Ordering::Relaxed);
    }
}

/// What the engine reports at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// What the index holds, and the memory it takes.
    pub index: IndexSize,
    /// Purchases recorded since start-up (repeats of a recorded id not
    /// counted).
    pub purchases_recorded: u64,
    /// Engagement events recorded since start-up (repeats not counted).
    pub engagements_recorded: u64,
    /// How long the index took to load at start-up, from the store or
    /// from the image of the last shutdown.
    pub last_rebuild: Duration,
    /// Whether the index was read from the image of the last shutdown
    /// rather than rebuilt from the store.
    pub index_from_image: bool,
    /// The bytes the store takes on disk.
    pub store_bytes: u64,
    /// The store's group commits.
    pub flushes: FlushCounts,
    /// Watching.
    pub watch: super::watch::WatchStats,
}

/// Reads the numbers; walks the index and the store's files, so a scan.
fn read(shared: &Shared) -> Result<EngineStats> {
    let counters = &shared.counters;
    Ok(EngineStats {
        index: shared.index().size(),
        purchases_recorded: counters.purchases_recorded.load(Ordering::Relaxed),
        engagements_recorded: counters.engagements_recorded.load(Ordering::Relaxed),
        last_rebuild: Duration::from_micros(counters.rebuild_micros.load(Ordering::Relaxed)),
        index_from_image: counters.from_image.load(Ordering::Relaxed),
        store_bytes: shared.store.size_on_disk()?,
        flushes: shared.store.flush_counts(),
        watch: shared.watch.stats(),
    })
}

impl Engine {
    /// The engine's numbers now. It walks the index (milliseconds for a
    /// million customers), so it runs on the blocking pool, and is meant
    /// for a scrape every few seconds, not for every request.
    pub async fn stats(&self) -> Result<EngineStats> {
        self.scan(read).await
    }
}
