//! The engine: the domain operations the RPCs call. It owns the store and
//! the in-memory feature index and keeps them in step; it knows neither
//! gRPC nor sled.
//!
//! # Layout
//!
//! - this module: the [`Engine`] handle, what its operations share, and
//!   the paths work runs by.
//! - `customers`, `listing`, `activity`, `segments`, `personas`: the
//!   operations.
//! - [`command`], `apply`: every change as a value that says all it needs,
//!   and the one place where applying it changes the store and the index.
//! - [`replica`]: cluster mode, where commands go through a replicated log
//!   and every replica applies them in order.
//! - `backup`: a consistent copy of the running store, streamed.
//! - [`index`]: the in-memory feature index, in step with the store.
//! - `features`, `frame`, `rfm`: one customer's features, and everyone's
//!   as of a time, over the index.
//! - `select`, `bits`: compiled rules evaluated a column at a time into
//!   bit sets.
//! - `stats`: numbers about the engine at work, for the metrics.
//!
//! # Where work runs
//!
//! Nothing on an async worker waits for a lock that long work holds.
//!
//! - Reads of one record (a customer, a segment, one customer's features,
//!   persona or saved segments) run inline on the async worker: they take
//!   microseconds.
//!   A read of one customer that would have to scan, because the RFM
//!   bounds must be found again from the columns or the evaluation time is
//!   in the past, is a scan (`Engine::read_customer`).
//! - A scan (anything whose cost grows with the data: selections,
//!   breakdowns, previews, member pages, exports, persona breakdowns,
//!   ranges of the store, a page of a customer's history) goes to the
//!   blocking pool through `Engine::scan`.
//! - Every write goes through `Engine::write`, which is told how many
//!   records it changes. A small one (at most `INLINE_WRITE_RECORDS`)
//!   runs inline when the writer lock and the index are free at once, as
//!   a read of one record does: it takes microseconds and waits for
//!   nothing (only a scan that takes the index in the microseconds between
//!   that look and the write's index update can still hold it up). Any
//!   other write (an import's batch, a flush, or a small one that finds
//!   the lock or the index taken) goes to the blocking pool, where it may
//!   wait.
//! - A scan of the index and a watch evaluation hold `Shared::long_reads`
//!   for reading while they hold the index (`Shared::long_index`), and a
//!   write holds it for writing around its index update. A write that
//!   must wait out a scan therefore waits there, not on the index's lock,
//!   which would make every new reader of the index, inline ones too, wait
//!   behind it. The order is always the writer lock, then `long_reads`,
//!   then the index.
//!
//! Every write is a [`command::Command`]: in the embedded mode
//! `Engine::submit` applies it through `Engine::write`; in cluster mode it
//! appends it to the log, and the replica's follower applies it, under the
//! same writer lock, as every other replica does.
//!
//! Writes are serialised once, by the engine's writer lock, which `write`
//! holds across the store write and the index update so that the two apply
//! in the same order; the store does not serialise its writers itself. A
//! write is acknowledged only once [`Engine::durable`] resolves (group
//! commit); bulk imports apply first and wait for it per request.

mod activity;
mod apply;
mod backup;
mod bits;
pub mod command;
mod customer_segments;
mod customers;
mod features;
mod frame;
pub mod index;
mod listing;
mod personas;
mod predictions;
pub mod replica;
mod rfm;
mod segments;
mod select;
mod stats;
#[cfg(test)]
mod testing;
pub mod watch;

use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

use crate::domain::features::Thresholds;
use crate::domain::{CurrencyCode, Error, Result, Timestamp};
use crate::store::{Store, StoreOptions};
use command::{Command, Outcome};
use index::{FeatureIndex, Image, IndexSize};

pub use activity::EventPage;
pub use backup::{BackupChunks, BackupLimits};
pub use command::{ImportCounts, RecordCounts};
pub use customer_segments::{CustomerSegment, CustomerSegments};
pub use customers::CustomerUpdate;
pub use features::CustomerFeatures;
pub use listing::CustomerPage;
pub use personas::{
    Assignment, CompiledCatalog, ConditionResult, NextStep, PersonaCounts, Rejected,
};
pub use predictions::PredictionSettings;
pub use segments::{
    compile_filter, segment_etag, Breakdown, Group, MemberPage, Preview, MAX_DIMENSIONS,
};
pub use stats::EngineStats;

/// The most records a write may change and still run inline: a write of a
/// few records takes microseconds.
const INLINE_WRITE_RECORDS: usize = 16;

/// How often a small write finds the writer lock taken, and yields, before
/// it goes to the blocking pool.
const INLINE_WRITE_TRIES: usize = 3;

/// An image read at start-up, and how long the reading took.
type ReadImage = (Result<Image>, std::time::Duration);

/// Opens the store and, meanwhile, reads the index image at `path` on a
/// thread of its own, if there is one and `settings` allow it: an opening
/// replays what was written since the store was last opened, which takes
/// seconds after a large import, and reading an image of millions of
/// customers takes seconds too. Blocking.
///
/// The image is read under another name (`image_reading`), so that a
/// start that dies while reading it, killed for its memory say, leaves no
/// image behind, and the next start rebuilds rather than die the same way.
/// A store that cannot be opened gets its image back.
fn open_store(
    options: &StoreOptions,
    path: &std::path::Path,
    settings: &EngineSettings,
) -> Result<(Store, Option<ReadImage>)> {
    let reading = index::image_reading(path);
    let wanted = settings.index_image && std::fs::rename(path, &reading).is_ok();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let read = &|| -> ReadImage {
        let started = std::time::Instant::now();
        let read = FeatureIndex::read_image(&reading, settings.thresholds, &stop);
        (read, started.elapsed())
    };
    std::thread::scope(|scope| {
        let thread = wanted.then(|| {
            std::thread::Builder::new()
                .name("index image".into())
                .spawn_scoped(scope, read)
        });
        let store = Store::open(options);
        // A store without a token has no use for the image: the reading
        // stops rather than take the cores for nothing.
        let wasted = store
            .as_ref()
            .map_or(true, |store| !store.has_index_image().unwrap_or(true));
        if wasted {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let read = match thread {
            None => None,
            Some(Ok(handle)) => Some(handle.join().unwrap_or_else(|_| {
                (
                    Err(Error::internal("the index image's reader panicked")),
                    std::time::Duration::ZERO,
                )
            })),
            // No thread to spare: the image is read once the store is open.
            Some(Err(_)) => (!wasted).then(read),
        };
        if store.is_err() && wanted {
            give_back_image(path);
        }
        Ok((store?, read))
    })
}

/// Gives the index image back to the next start, when this one was asked
/// to stop while it read the image, before the engine opened: the store
/// still holds its token unless this start had taken it, and then the
/// next start refuses the image and rebuilds. A start that died while
/// reading leaves the image under its reading name, and the next start
/// removes it. Blocking (a rename).
pub fn give_back_unread_image(data_dir: &std::path::Path) {
    give_back_image(&data_dir.join(index::IMAGE_FILE));
}

/// Moves the image at `path` back from its reading name, if it is there.
fn give_back_image(path: &std::path::Path) {
    match std::fs::rename(index::image_reading(path), path) {
        Ok(()) => tracing::info!("the index image, not read, is kept for the next start"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(%error, "cannot keep the index image; the next start rebuilds the index");
        }
    }
}

/// The index from the image the last clean shutdown wrote, read while the
/// store opened, if it was written for the store as it is and `settings`
/// allow it; otherwise `None`, and the caller rebuilds it. The image's
/// token leaves the store first, durably, and the file after, and the
/// index is taken only if the image carries that token: an image is used
/// at most once, for the state it was written of. Blocking.
fn take_image(
    store: &Store,
    path: &std::path::Path,
    read: Option<ReadImage>,
) -> Result<Option<(FeatureIndex, std::time::Duration)>> {
    let token = store.take_index_image()?;
    let loaded = match (token, read) {
        (Some(token), Some((Ok(image), took))) => {
            let (rows, table) = image.took;
            match image.accept(token, store.customer_numbers() as usize) {
                Ok(index) => {
                    tracing::info!(
                        ms = took.as_millis() as u64,
                        rows_ms = rows.as_millis() as u64,
                        table_ms = table.as_millis() as u64,
                        "index read from the image of the last shutdown"
                    );
                    Some((index, took))
                }
                Err(error) => {
                    tracing::warn!(%error, "the index image is not used; rebuilding the index from the store");
                    None
                }
            }
        }
        (Some(_), Some((Err(error), _))) => {
            tracing::warn!(%error, "the index image is not read; rebuilding the index from the store");
            None
        }
        _ => None,
    };
    // The image, and what a shutdown cut short while writing it left. The
    // image is moved aside at once and removed on a thread of its own:
    // removing a file of gigabytes takes seconds, which a start need not
    // wait for. The next start removes what a crash left of it.
    let remove = |path: &std::path::Path| match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "cannot remove the index image");
        }
    };
    // The image read, one left unread when turned off, or what a start
    // that died while reading left.
    let discarded = index::image_discarded(path);
    for image in [path.to_path_buf(), index::image_reading(path)] {
        match std::fs::rename(&image, &discarded) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => remove(&image),
        }
    }
    remove(&index::image_temporary(path));
    let removing = std::thread::Builder::new()
        .name("image remover".into())
        .spawn({
            let discarded = discarded.clone();
            move || remove(&discarded)
        });
    if removing.is_err() {
        remove(&discarded);
    }
    Ok(loaded)
}

/// Writes the index's image to `path` and stores its token; at shutdown,
/// under the writer lock, with the store closed. Blocking.
fn save_image(shared: &Shared, path: &std::path::Path) -> Result<()> {
    let started = std::time::Instant::now();
    let mut token = [0u8; 16];
    getrandom::fill(&mut token)
        .map_err(|error| Error::internal(format!("no randomness for the image token: {error}")))?;
    let token = u128::from_le_bytes(token);
    let bytes = shared.index().save_image(path, token)?;
    shared.store.set_index_image(token)?;
    tracing::info!(
        bytes,
        ms = started.elapsed().as_millis() as u64,
        "index image written"
    );
    Ok(())
}

/// Settings the engine applies to every request.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The one currency that amounts are kept in.
    pub reporting_currency: CurrencyCode,
    /// The thresholds of the derived features.
    pub thresholds: Thresholds,
    /// How watches are evaluated and their history kept.
    pub watch: watch::WatchSettings,
    /// When the prediction model is fitted, and what lifetime value counts.
    pub predictions: PredictionSettings,
    /// Whether a clean shutdown writes the index's image, for the next
    /// start to read in place of a rebuild from the store.
    pub index_image: bool,
}

/// What the engine's operations share.
#[derive(Debug)]
struct Shared {
    /// The durable store.
    store: Store,
    /// The feature index, always in step with the store.
    index: RwLock<FeatureIndex>,
    /// The one writer lock: held by `Engine::write` across the store
    /// write and the index update, so that writes run one at a time and
    /// apply to both in the same order.
    writer: Mutex<()>,
    /// Held for reading by the reads that hold the index for long (scans,
    /// the watches' evaluations), and for writing by a write around its
    /// index update. A write waits here, not on the index: the index's
    /// lock makes new readers wait behind a waiting writer, and a
    /// customer's read would wait out the scan with it. Taken after the
    /// writer lock, before the index.
    long_reads: RwLock<()>,
    /// Settings for every request.
    settings: EngineSettings,
    /// The persona catalog in force, compiled.
    catalog: RwLock<Arc<CompiledCatalog>>,
    /// What the engine counts as it works, for the metrics.
    counters: stats::Counters,
    /// Watches: what writes touched, and the evaluations' state.
    watch: watch::Hub,
    /// The saved segments compiled, for ListCustomerSegments.
    saved_rules: customer_segments::SavedRules,
    /// Taken by a prediction fit, so that one runs at a time.
    fitting: Arc<tokio::sync::Mutex<()>>,
    /// Where a clean shutdown writes the index's image; `None` when it
    /// writes none.
    image: Option<std::path::PathBuf>,
}

impl Shared {
    /// Takes the writer lock; only `Engine::write` does.
    fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The writer lock if no write holds it and no scan holds the index;
    /// never waits.
    fn free_writer(&self) -> Option<MutexGuard<'_, ()>> {
        let writer = match self.writer.try_lock() {
            Ok(writer) => writer,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        (free(self.long_reads.try_write()) && free(self.index.try_write())).then_some(writer)
    }

    /// The index, for reading.
    fn index(&self) -> RwLockReadGuard<'_, FeatureIndex> {
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The catalog in force.
    fn catalog(&self) -> Arc<CompiledCatalog> {
        Arc::clone(
            &self
                .catalog
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Puts a catalog in force; under the writer lock.
    fn set_catalog(&self, compiled: CompiledCatalog) {
        *self
            .catalog
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(compiled);
    }

    /// The index, for a write; under the writer lock. Waits for the long
    /// reads first (see `long_reads`).
    fn index_mut(&self) -> IndexMut<'_> {
        let long_reads = self
            .long_reads
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = self
            .index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        IndexMut {
            index,
            _long_reads: long_reads,
        }
    }

    /// The index, for a read that holds it for long: a scan over it, or a
    /// watch evaluation (see `long_reads`). Never under `index_mut`, nor
    /// while holding another such read.
    fn long_index(&self) -> IndexRead<'_> {
        let long_reads = self
            .long_reads
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        IndexRead {
            index: self.index(),
            _long_reads: Some(long_reads),
        }
    }
}

/// Whether a lock was free when tried (a poisoned one counts as free).
fn free<G>(tried: std::result::Result<G, TryLockError<G>>) -> bool {
    !matches!(tried, Err(TryLockError::WouldBlock))
}

/// The index held for a write (see `Shared::index_mut`).
struct IndexMut<'a> {
    index: RwLockWriteGuard<'a, FeatureIndex>,
    _long_reads: RwLockWriteGuard<'a, ()>,
}

impl std::ops::Deref for IndexMut<'_> {
    type Target = FeatureIndex;

    fn deref(&self) -> &FeatureIndex {
        &self.index
    }
}

impl std::ops::DerefMut for IndexMut<'_> {
    fn deref_mut(&mut self) -> &mut FeatureIndex {
        &mut self.index
    }
}

/// The index held for reading; by a long read (see `Shared::long_index`)
/// with the long-reads gate.
struct IndexRead<'a> {
    index: RwLockReadGuard<'a, FeatureIndex>,
    _long_reads: Option<RwLockReadGuard<'a, ()>>,
}

impl std::ops::Deref for IndexRead<'_> {
    type Target = FeatureIndex;

    fn deref(&self) -> &FeatureIndex {
        &self.index
    }
}

/// The engine; shared by every RPC handler.
#[derive(Debug)]
pub struct Engine {
    /// Everything, behind one pointer so blocking work can hold it.
    shared: Arc<Shared>,
    /// In cluster mode, the replica that applies the log; writes go
    /// through it.
    replica: Option<Arc<replica::Replica>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(replica) = &self.replica {
            replica.stop();
        }
    }
}

impl Engine {
    /// Opens the store, rebuilds the feature index from it, and makes the
    /// engine ready to serve.
    pub async fn open(options: StoreOptions, settings: EngineSettings) -> Result<Self> {
        let shared = tokio::task::spawn_blocking(move || -> Result<Shared> {
            let image = options.path.join(index::IMAGE_FILE);
            let (store, read) = open_store(&options, &image, &settings)?;
            let (mut index, took, from_image) = match take_image(&store, &image, read)? {
                Some((index, took)) => (index, took, true),
                None => {
                    let started = std::time::Instant::now();
                    let index = FeatureIndex::rebuild(&store, settings.thresholds)?;
                    (index, started.elapsed(), false)
                }
            };
            index.set_clv_settings(settings.predictions.clv);
            // A model that cannot be read stops the opening, as the
            // catalog does: in cluster mode a replica without the model
            // the others hold would answer, and apply fits, unlike them.
            if let Some(model) = store.get_prediction_model()? {
                index.set_model(Arc::new(model));
            }
            let counters = stats::Counters::default();
            counters.rebuilt(took, from_image);
            // The first RFM score would otherwise find the bounds while
            // other calls wait for it.
            index.rfm_bounds();
            let catalog = store
                .get_catalog()?
                .unwrap_or_else(|| crate::domain::persona::default_catalog(1));
            let catalog = CompiledCatalog::new(catalog).map_err(|error| {
                Error::internal(format!(
                    "the stored persona catalog does not compile: {error}"
                ))
            })?;
            Ok(Shared {
                catalog: RwLock::new(Arc::new(catalog)),
                store,
                index: RwLock::new(index),
                writer: Mutex::new(()),
                long_reads: RwLock::new(()),
                watch: watch::Hub::new(settings.watch.clone()),
                saved_rules: customer_segments::SavedRules::default(),
                fitting: Arc::new(tokio::sync::Mutex::new(())),
                image: settings.index_image.then_some(image),
                settings,
                counters,
            })
        })
        .await
        .map_err(|error| Error::internal(format!("store open task failed: {error}")))??;
        let shared = Arc::new(shared);
        Ok(Engine {
            shared,
            replica: None,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &EngineSettings {
        &self.shared.settings
    }

    /// The key that authenticates page tokens, kept in the store; never
    /// to be sent.
    pub fn page_token_key(&self) -> crate::store::PageTokenKey {
        self.shared.store.page_token_key()
    }

    /// What the index holds, and the memory it takes.
    pub fn index_size(&self) -> IndexSize {
        self.shared.index().size()
    }

    /// Flushes everything to disk, for shutdown; a write of every record,
    /// so none other runs meanwhile. In the embedded mode it first
    /// checkpoints the change history (see `checkpoint_watches`), then writes
    /// the index's image, unless told not to, with the store sealed so that
    /// no customer or event is written after it; an image that cannot be
    /// written is only logged, for the next start rebuilds. In cluster mode
    /// the follower applies the log until the replica stops, so no image is
    /// taken.
    pub async fn flush(&self) -> Result<()> {
        let embedded = self.replica.is_none();
        if embedded {
            if let Err(error) = self.checkpoint_watches().await {
                tracing::warn!(%error, "the change history was not checkpointed; the next start replays its records");
            }
        }
        self.write(usize::MAX, move |shared| {
            let image = shared.image.as_ref().filter(|_| embedded);
            // A write that panicked may have changed the store and not the
            // index: then only a rebuild from the store is to be trusted.
            let whole = !shared.writer.is_poisoned() && !shared.index.is_poisoned();
            if image.is_some() && !whole {
                tracing::warn!("a write failed half-way in this process: no index image is written, and the next start rebuilds the index from the store");
            }
            let image = image.filter(|_| whole);
            if image.is_some() {
                shared.store.seal();
            }
            shared.store.close()?;
            if let Some(path) = image {
                if let Err(error) = save_image(shared, path) {
                    tracing::warn!(%error, "the index image was not written; the next start rebuilds the index from the store");
                    let _ = std::fs::remove_file(path);
                }
            }
            Ok(())
        })
        .await
    }

    /// Resolves once every write applied so far is durable: in cluster
    /// mode at once, for the log holds every acknowledged write.
    pub async fn durable(&self) -> Result<()> {
        if self.replica.is_some() {
            return Ok(());
        }
        self.shared.store.durable().await
    }

    /// Applies `command`, without waiting for durability: call
    /// [`Engine::durable`] before acknowledging it. In cluster mode the
    /// command goes through the log (see `replica`).
    async fn submit(&self, command: Command) -> Result<Outcome> {
        if let Some(replica) = &self.replica {
            return replica.propose(command).await;
        }
        let records = command.records();
        let outcome = self
            .write(records, move |shared| apply::apply(shared, command))
            .await;
        if outcome.is_ok() {
            self.shared.watch.wake.notify_one();
        }
        outcome
    }

    /// Applies `command` and waits until it is durable.
    async fn execute(&self, command: Command) -> Result<Outcome> {
        let outcome = self.submit(command).await?;
        self.durable().await?;
        Ok(outcome)
    }

    /// Runs a write of `records` records under the one writer lock: it
    /// reads and checks what it needs, writes the store and updates the
    /// index, and no other write runs meanwhile. A small write runs inline
    /// if the lock and the index are free, else on the blocking pool (see
    /// the module docs). The change is applied but not yet durable: await
    /// [`Engine::durable`] before acknowledging it.
    async fn write<T: Send + 'static>(
        &self,
        records: usize,
        change: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if records <= INLINE_WRITE_RECORDS {
            // Another small write holds the lock for microseconds: let it
            // finish before giving up on running inline.
            for _ in 0..INLINE_WRITE_TRIES {
                if let Some(_writer) = self.shared.free_writer() {
                    return change(&self.shared);
                }
                tokio::task::yield_now().await;
            }
        }
        self.blocking(move |shared| {
            let _writer = shared.writer();
            change(shared)
        })
        .await
    }

    /// Runs a read whose cost grows with the data on the blocking pool.
    async fn scan<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.blocking(read).await
    }

    /// Reads one customer's figures as of `at` from the index: inline when
    /// the RFM bounds are at hand and every event counts, which takes
    /// microseconds; otherwise as a scan, for the bounds must be found from
    /// the columns, or the figures computed as of a past time, first. One
    /// look at the index decides and, inline, answers.
    async fn read_customer<T: Send + 'static>(
        &self,
        at: Timestamp,
        read: impl FnOnce(IndexRead<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        {
            let index = self.shared.index();
            if at.as_nanos() >= index.max_time() && index.rfm_ready() {
                return read(IndexRead {
                    index,
                    _long_reads: None,
                });
            }
        }
        self.scan(move |shared| read(shared.long_index())).await
    }

    /// Runs blocking work on the blocking pool: the one hand-off under
    /// `Engine::write` and `Engine::scan`; an operation calls one of
    /// those, which say what it is.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || work(&shared))
            .await
            .map_err(|error| Error::internal(format!("engine task failed: {error}")))?
    }
}
