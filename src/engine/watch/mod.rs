//! Real-time membership: watched segments and the persona assignments are
//! evaluated after writes and as the clock moves, over the customers that
//! may have moved (or, when they are many, as bit sets over the whole
//! index), and each evaluation's differences go into a change history that
//! watchers follow with resumable cursors.
//!
//! - `record`: subjects, records, checkpoints and cursors, and their
//!   encoding.
//! - `members`: a subject's members by row, and their differences.
//! - `journal`: what writes touched since the last evaluation, for the
//!   causes.
//! - `evaluate`: the state of every subject and one evaluation of them.
//! - `tracker`: which customers an evaluation must read again.
//! - `open`: a watch opened: a cursor checked, or a subject registered.
//! - `load`: the state loaded from the history at start-up.
//! - `recent`: the latest records in memory, for watchers who keep up.
//! - `feed`: one watcher's way through the history.
//! - `replicated`: cluster mode, where the log's ticks and registrations
//!   drive the history, the same on every replica.
//! - this module: the hub the engine holds, the evaluation loop, and the
//!   engine's watch operations.
//!
//! # Exactness
//!
//! An evaluation holds the index for reading, so it sees every write
//! applied before it and none after, at one evaluation time; a subject's
//! changes are its members then minus its members at the evaluation
//! before. A customer it does not read could not have moved (see
//! `tracker`). A watcher that applies every change it receives, in order,
//! holds exactly the members as of the last evaluation time it was told.
//! Records are on disk before any watcher hears of them, so a cursor handed
//! out stays good across a crash.
//!
//! # Erasure
//!
//! The history holds customer ids and nothing else of a customer. Erasing
//! a customer removes their id from every record and checkpoint written
//! before the evaluation that reports them leaving; that last record keeps
//! the id, so that watchers learn of the erasure, until retention drops it.

mod evaluate;
mod feed;
mod journal;
mod load;
mod members;
mod open;
mod recent;
pub mod record;
mod replicated;
mod tracker;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

pub use feed::{Feed, FeedItem, MAX_CHANGES_PER_MESSAGE};
pub use journal::Journal;
pub use record::{Cause, Change, Cursor, Subject};
pub(super) use replicated::{apply_tick, apply_watch, load_replicated};

use super::command::Command;
use super::{Engine, Shared};
use crate::domain::{Error, Result, Timestamp};
use evaluate::State;

/// How the watches are evaluated and their history kept.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// At most this long between evaluations without writes, so that
    /// changes the clock alone makes are seen within it. Under steady
    /// writes, once evaluations take over a third of it, the wait after
    /// a write is three times their usual length instead, up to ten
    /// periods.
    pub period: Duration,
    /// Records older than this are dropped.
    pub retention: Duration,
    /// Beyond this many bytes of records, the oldest are dropped.
    pub retention_bytes: u64,
    /// A watcher that does not read for this long is ended.
    pub slow_reader_timeout: Duration,
    /// The clock evaluations run by.
    pub clock: Clock,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            period: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 86_400),
            retention_bytes: 1 << 30,
            slow_reader_timeout: Duration::from_secs(30),
            clock: Clock::System,
        }
    }
}

/// The clock evaluations run by.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system's.
    System,
    /// A simulated clock, for backtests: `start` when the process started,
    /// moving `rate` times as fast as the system's.
    Simulated {
        /// The time at start.
        start: Timestamp,
        /// Simulated seconds per second.
        rate: f64,
        /// When the simulation started.
        since: Instant,
    },
}

impl Clock {
    /// The time now.
    pub fn now(&self) -> Timestamp {
        match *self {
            Clock::System => Timestamp::now(),
            Clock::Simulated { start, rate, since } => {
                let elapsed = since.elapsed().as_secs_f64() * rate * 1e9;
                Timestamp::from_nanos(start.as_nanos().saturating_add(elapsed as i64))
            }
        }
    }
}

/// The last record on disk, and the time of the last evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Head {
    /// The last record's sequence number.
    pub seq: u64,
    /// The last evaluation time, nanoseconds since the epoch.
    pub at: i64,
    /// Watching stopped after a fault.
    pub off: bool,
    /// The server is shutting down: every watch ends.
    pub closing: bool,
}

/// What the engine holds for watching.
#[derive(Debug)]
pub struct Hub {
    /// The settings.
    settings: WatchSettings,
    /// What writes touched since the last evaluation.
    pub journal: Journal,
    /// Wakes the evaluation loop after a write.
    pub wake: Notify,
    /// Every subject's members; the history's one writer holds it.
    state: Mutex<Option<State>>,
    /// The head, for watchers to wait on.
    head: watch::Sender<Head>,
    /// The latest records, for watchers who keep up.
    recent: recent::Recent,
    /// Evaluations so far, for the metrics.
    evaluations: AtomicU64,
    /// Microseconds spent evaluating.
    evaluation_micros: AtomicU64,
    /// Watches open now.
    streams: AtomicU64,
    /// Subjects followed.
    subjects: AtomicU64,
    /// Cluster mode, while a tick applies: its evaluation time, which
    /// retention counts from instead of the clock (0 otherwise).
    ticking: AtomicI64,
    /// Cluster mode, after a load: the fingerprint of the score bounds of
    /// the last evaluation, for the next one (0 when none is waiting).
    scores_loaded: AtomicU64,
    /// Cluster mode, after a load: the fingerprint of the prediction model
    /// of the last evaluation, for the next one (0 when none is waiting).
    model_loaded: AtomicU64,
    /// Cluster mode: an evaluation failed after it drained the journal,
    /// which must be read back from the log before the tick applies again.
    journal_lost: AtomicBool,
}

/// Numbers about watching, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Watches open now.
    pub streams: u64,
    /// Segments (with a channel or without) and the personas followed.
    pub subjects: u64,
    /// Evaluations since start-up.
    pub evaluations: u64,
    /// Microseconds they took in all.
    pub evaluation_micros: u64,
    /// The last record of the change history.
    pub last_record: u64,
}

/// How a watch starts.
#[derive(Debug, Clone)]
pub enum Start {
    /// With the changes after now.
    Now,
    /// With the current members, then the changes.
    Initial,
    /// With the changes after a cursor.
    After(String),
}

/// A watch, started.
#[derive(Debug)]
pub struct Started {
    /// The members it starts with, with their persona for personas, in
    /// order of the customer id, when asked for.
    pub initial: Option<Vec<(String, String)>>,
    /// The evaluation time they hold at.
    pub at: Timestamp,
    /// The cursor after them.
    pub cursor: Cursor,
    /// The watch resumes from a cursor: the changes after it come first,
    /// and `at` is not yet the time the watcher's members hold at.
    pub resumed: bool,
    /// The changes that follow.
    pub feed: Feed,
}

/// How long a watch that resumes through a replica waits for it to apply
/// the history as far as its cursor.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

/// A cursor too old for the history kept.
fn expired(cursor: Cursor, when: &str) -> Error {
    Error::Cursor {
        reason: "CURSOR_EXPIRED",
        message: format!(
            "the change history no longer holds the changes after cursor {} (retention dropped \
             them {when}): watch again with the initial members, and follow the new cursor",
            cursor.to_text()
        ),
        cursor: cursor.to_text(),
    }
}

fn lock(state: &Mutex<Option<State>>) -> MutexGuard<'_, Option<State>> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    /// A hub that has loaded nothing yet.
    pub fn new(settings: WatchSettings) -> Self {
        Hub {
            settings,
            journal: Journal::default(),
            wake: Notify::new(),
            state: Mutex::new(None),
            head: watch::Sender::new(Head::default()),
            recent: recent::Recent::default(),
            evaluations: AtomicU64::new(0),
            evaluation_micros: AtomicU64::new(0),
            streams: AtomicU64::new(0),
            subjects: AtomicU64::new(0),
            ticking: AtomicI64::new(0),
            scores_loaded: AtomicU64::new(0),
            model_loaded: AtomicU64::new(0),
            journal_lost: AtomicBool::new(false),
        }
    }

    /// The numbers now.
    pub fn stats(&self) -> WatchStats {
        WatchStats {
            streams: self.streams.load(Ordering::Relaxed),
            subjects: self.subjects.load(Ordering::Relaxed),
            evaluations: self.evaluations.load(Ordering::Relaxed),
            evaluation_micros: self.evaluation_micros.load(Ordering::Relaxed),
            last_record: self.head.borrow().seq,
        }
    }

    /// Counts a watch opened; the feed counts it closed when dropped.
    fn opened(&self) {
        self.streams.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a watch closed.
    pub(super) fn closed(&self) {
        self.streams.fetch_sub(1, Ordering::Relaxed);
    }

    /// The time now, by the configured clock; in cluster mode, while a
    /// tick applies, the tick's time, so that retention drops the same
    /// records on every replica.
    pub fn now(&self) -> Timestamp {
        match self.ticking.load(Ordering::Relaxed) {
            0 => self.clock_now(),
            at => Timestamp::from_nanos(at),
        }
    }

    /// Whether a failed evaluation lost the journal (cluster mode), which
    /// the caller then reads back; clears it.
    pub fn take_journal_lost(&self) -> bool {
        self.journal_lost.swap(false, Ordering::Relaxed)
    }

    /// Notes that the journal is still to be read back, after a try that
    /// failed.
    pub fn journal_still_lost(&self) {
        self.journal_lost.store(true, Ordering::Relaxed);
    }

    /// The time now, by the configured clock, whatever applies.
    pub fn clock_now(&self) -> Timestamp {
        self.settings.clock.now()
    }

    /// At most this long between evaluations without writes.
    pub fn period(&self) -> Duration {
        self.settings.period
    }

    /// Whether a change history is loaded: in cluster mode, once the log
    /// started one, from when on the personas are followed, so for good.
    pub fn history_open(&self) -> bool {
        self.subjects.load(Ordering::Relaxed) > 0
    }

    /// Tells the watchers of an evaluation (or a registration) that `state`
    /// holds, and counts it if it took from `started`.
    fn told(&self, state: &State, started: Option<Instant>) {
        let closing = self.head.borrow().closing;
        self.head.send_replace(Head {
            closing,
            ..state.head()
        });
        self.subjects
            .store(state.subject_count() as u64, Ordering::Relaxed);
        if let Some(started) = started {
            self.evaluations.fetch_add(1, Ordering::Relaxed);
            self.evaluation_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// Stops watching after a fault: every watch ends, and none opens.
    fn stop(&self) {
        self.journal.stop();
        self.head.send_modify(|head| head.off = true);
    }
}

/// The longest wait after writes, in periods, however long evaluations
/// take: changes are reported at most this late under steady writes.
const LONGEST_GAP_IN_PERIODS: u32 = 10;

/// Loads the history, then evaluates after writes and every period until
/// the engine is gone.
pub(super) async fn run(shared: Weak<Shared>) {
    let Some(strong) = shared.upgrade() else {
        return;
    };
    let hub = &strong.watch;
    let loaded = {
        let loading = Arc::clone(&strong);
        tokio::task::spawn_blocking(move || load::load(&loading))
            .await
            .map_err(|error| Error::internal(format!("history load task failed: {error}")))
            .and_then(|loaded| loaded)
    };
    match loaded {
        Ok(state) => {
            hub.head.send_replace(state.head());
            *lock(&hub.state) = Some(state);
        }
        Err(error) => {
            tracing::error!(%error, "cannot load the change history: watching stopped");
            hub.stop();
            return;
        }
    }
    let period = hub.settings.period;
    drop(strong);
    // The evaluations' usual length: a moving average, so that one long
    // evaluation (a rule changed, or scores moved for many customers)
    // moves the next waits by an eighth of its length, within ten periods.
    let mut usual_cost = Duration::ZERO;
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let hub = &strong.watch;
        // After a write, wait a little for the writes that come with it,
        // and long enough that evaluating usually takes at most a quarter
        // of the time, even when that is longer than the period: writes
        // wait while an evaluation holds the index, so a large index under
        // steady writes is evaluated less often rather than starving them.
        // Without writes, every period.
        let woken = tokio::select! {
            () = hub.wake.notified() => true,
            () = tokio::time::sleep(period) => false,
        };
        if woken {
            let gap = (usual_cost * 3)
                .min(period * LONGEST_GAP_IN_PERIODS)
                .max(Duration::from_millis(20).min(period));
            tokio::time::sleep(gap).await;
        }
        let started = Instant::now();
        let evaluating = Arc::clone(&strong);
        let outcome = tokio::task::spawn_blocking(move || evaluate_now(&evaluating))
            .await
            .map_err(|error| Error::internal(format!("evaluation task failed: {error}")))
            .and_then(|outcome| outcome);
        usual_cost = match usual_cost.is_zero() {
            true => started.elapsed(),
            false => (usual_cost * 7 + started.elapsed()) / 8,
        };
        if let Err(error) = outcome {
            tracing::error!(%error, "evaluating the watches failed; trying again");
        }
        drop(strong);
    }
}

/// One evaluation of every subject, written and flushed, then told.
fn evaluate_now(shared: &Shared) -> Result<()> {
    let mut guard = lock(&shared.watch.state);
    evaluate_held_state(shared, &mut guard)
}

/// `evaluate_now`, with the state held already.
fn evaluate_held_state(shared: &Shared, guard: &mut Option<State>) -> Result<()> {
    let hub = &shared.watch;
    let Some(state) = guard.as_mut() else {
        return Ok(());
    };
    let started = Instant::now();
    let at = hub.now();
    let evaluated = state.evaluate(shared, at);
    if evaluated.is_err() {
        // The members in memory may be ahead of the history: read them
        // back from the history, once it is on disk, so that the next
        // evaluation reports what this one could not. Without a disk to
        // write to, watching stops rather than tell of changes it may lose.
        hub.recent.clear();
        *guard = match shared.store.flush().and_then(|()| load::load(shared)) {
            Ok(state) => Some(state),
            Err(error) => {
                tracing::error!(%error, "cannot recover the change history: watching stopped");
                hub.stop();
                None
            }
        };
    }
    let Some(state) = guard.as_ref() else {
        return evaluated;
    };
    hub.told(state, Some(started));
    evaluated
}

impl Engine {
    /// Embedded mode, at a clean shutdown once no write comes any more: a
    /// last evaluation, which checkpoints every subject with records since
    /// its checkpoint, so that the next start reads each subject's members
    /// from its checkpoint alone instead of replaying an import's records.
    pub(super) async fn checkpoint_watches(&self) -> Result<()> {
        if self.replica.is_some() {
            // Cluster mode checkpoints at the log's ticks, the same on
            // every replica.
            return Ok(());
        }
        self.blocking(|shared| {
            // One hold of the state: the background loop cannot take the
            // forced maintenance in between.
            let mut guard = lock(&shared.watch.state);
            let Some(state) = guard.as_mut() else {
                return Ok(());
            };
            if !state.subjects.values().any(|subject| subject.dirty) {
                return Ok(());
            }
            state.maintenance_due = Some(true);
            evaluate_held_state(shared, &mut guard)
        })
        .await
    }

    /// Starts a watch of `subject` (see [`Start`]); for personas, of moves
    /// into or out of `personas` (every one when empty).
    pub async fn watch(
        &self,
        subject: Subject,
        start: Start,
        personas: BTreeSet<String>,
    ) -> Result<Started> {
        let cursor = match &start {
            Start::After(text) => Some(Cursor::parse(text).ok_or_else(|| {
                Error::invalid(
                    "cursor",
                    "not a cursor of this service: send the `cursor` of a message received, \
                     unchanged",
                )
            })?),
            _ => None,
        };
        let initial = matches!(start, Start::Initial);
        let cluster = self.replica.is_some();
        if cluster {
            self.follow_through_log(&subject, cursor).await?;
        }
        let blocking_subject = subject.clone();
        let opened = self
            .blocking(move |shared| {
                let mut guard = lock(&shared.watch.state);
                let Some(state) = guard.as_mut() else {
                    let message = if shared.watch.head.borrow().off {
                        "watching stopped after a fault of the server (see its log); it resumes \
                         when the server restarts"
                    } else if cluster {
                        "this replica has not applied the change history this far yet; retry \
                         in a moment, or watch through another replica"
                    } else {
                        "the change history is still loading; retry in a moment"
                    };
                    return Err(Error::Unavailable(message.into()));
                };
                state.open(shared, &blocking_subject, cursor, initial, !cluster)
            })
            .await?;
        // A registration moved the head: tell the other watchers, never
        // taking the head back.
        self.shared.watch.head.send_if_modified(|head| {
            let newer = opened.head.seq > head.seq;
            if newer {
                head.seq = opened.head.seq;
                head.at = head.at.max(opened.head.at);
            }
            newer
        });
        self.shared.watch.opened();
        let feed = Feed::new(
            Arc::clone(&self.shared),
            &self.shared.watch,
            subject,
            personas,
            opened.cursor,
            opened.at.as_nanos(),
            opened.orphan,
        );
        Ok(Started {
            initial: opened.initial,
            at: opened.at,
            cursor: opened.cursor,
            resumed: matches!(start, Start::After(_)),
            feed,
        })
    }

    /// Cluster mode, before a watch opens: a new subject registered
    /// through the log (applied here before this returns), or, for a
    /// cursor, a wait until this replica has applied the history as far as
    /// the cursor, which another replica may have handed out.
    async fn follow_through_log(&self, subject: &Subject, cursor: Option<Cursor>) -> Result<()> {
        let Some(replica) = &self.replica else {
            return Ok(());
        };
        let hub = &self.shared.watch;
        if let Some(cursor) = cursor {
            let known = self
                .blocking(|shared| {
                    Ok(lock(&shared.watch.state)
                        .as_ref()
                        .map(|state| state.history))
                })
                .await?;
            if known.is_some_and(|history| history != cursor.history) {
                return Ok(());
            }
            let mut head = hub.head.subscribe();
            let reached = head.wait_for(|head| head.seq >= cursor.seq || head.off);
            // Past the wait, opening says what is wrong with the cursor.
            let _ = tokio::time::timeout(CATCH_UP_WAIT, reached).await;
            return Ok(());
        }
        let followed_subject = subject.clone();
        let followed = self
            .blocking(move |shared| {
                Ok(lock(&shared.watch.state)
                    .as_ref()
                    .is_some_and(|state| state.follows(&followed_subject)))
            })
            .await?;
        if followed {
            return Ok(());
        }
        let (segment, channel) = match subject {
            Subject::Segment { id, channel } => (Some(id.clone()), *channel),
            Subject::Personas => (None, None),
        };
        let command = Command::Watch {
            segment,
            channel,
            at: hub.clock_now(),
        };
        replica.propose(command).await.map(drop)
    }

    /// Ends every watch, for a shutdown: each gets UNAVAILABLE and resumes
    /// with its last cursor once the server is back.
    pub fn end_watches(&self) {
        self.shared
            .watch
            .head
            .send_modify(|head| head.closing = true);
    }

    /// Starts evaluating the watches, in the background, until the engine
    /// is dropped; the embedded mode's server calls it once.
    pub fn start_watching(&self) {
        self.shared.watch.journal.start();
        tokio::spawn(run(Arc::downgrade(&self.shared)));
    }

    /// The time now, by the clock the watches run on.
    pub fn watch_now(&self) -> Timestamp {
        self.shared.watch.now()
    }

    /// How long a watcher may go without reading.
    pub fn slow_reader_timeout(&self) -> Duration {
        self.shared.watch.settings.slow_reader_timeout
    }
}
