//! Watching in cluster mode: the change history as a function of the log.
//!
//! A replica writes its change history only while it applies the log,
//! under the writer lock: a `Tick` evaluates every subject at the time it
//! holds (the clock, entered into the log), and a `Watch` registers a
//! subject. Every replica applies the same records in the same order to
//! the same state, so every replica writes the same records, with the
//! same sequence numbers, evaluation times and causes, and a cursor of
//! one replica is good at every other.
//!
//! - The history starts with the first `Tick` or `Watch` applied. Its id
//!   comes from the cluster's page-token key (which the log's first record
//!   gives every replica) and that record's time, so it is the same on
//!   every replica of one log and differs between logs.
//! - The journal starts with it, and apply feeds it as in the embedded
//!   mode.
//! - The last evaluation time is stored with the history, so that a
//!   replica that restarts goes on from the time the others go on from;
//!   and a fingerprint of the score bounds it read, so that the next
//!   evaluation tells, as the others do, whether the bounds moved (which
//!   makes a change of a rule of scores the doing of other customers).
//! - A snapshot carries the history (see `store::history`): a replica that
//!   joins from it goes on with it.
//! - An evaluation that fails leaves the record to be applied again, once
//!   the history is read back from disk and the journal from the log,
//!   rather than let this replica's history part from the others'.
//!
//! Checkpoints and retention change no record, only how far back a cursor
//! may resume, but an erasure notifies the watchers of the records still
//! kept: so they run at the same ticks on every replica (whenever the
//! evaluation time enters a new maintenance interval), and retention counts
//! from the tick's time. Only retention by bytes may still part, after a
//! restart, for the sizes of records an erasure rewrote.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::evaluate::{State, MAINTENANCE_EVERY};
use super::record::Subject;
use super::{load, lock, Hub};
use crate::domain::predict::PredictionModel;
use crate::domain::{Error, Result, Timestamp};
use crate::engine::frame::Frame;
use crate::engine::rfm::RfmBounds;
use crate::engine::Shared;
use crate::store::HistoryWrite;

/// The id of the history started at a record made at `at`: from the
/// cluster's page-token key, which is never shown, through a hash.
fn history_id(shared: &Shared, at: Timestamp) -> u64 {
    let mut hash = Sha256::new();
    hash.update(b"segmentd change history\0");
    hash.update(shared.store.page_token_key().bytes());
    hash.update(at.as_nanos().to_be_bytes());
    let digest = hash.finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    // Never 0, as in the embedded mode.
    u64::from_be_bytes(id).max(1)
}

/// A fingerprint of score bounds (`None`: no purchaser), never 0.
pub(super) fn scores_fingerprint(bounds: Option<&RfmBounds>) -> u64 {
    let bytes = bounds.map(|bounds| bounds.to_bytes()).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    let mut fingerprint = [0u8; 8];
    fingerprint.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(fingerprint).max(1)
}

/// A fingerprint of the prediction model in force (`None`: none yet),
/// never 0.
pub(super) fn model_fingerprint(model: Option<&PredictionModel>) -> u64 {
    let mut hash = Sha256::new();
    if let Some(model) = model {
        hash.update(model.evaluation_time.as_nanos().to_be_bytes());
        hash.update(model.fitted_at.as_nanos().to_be_bytes());
    }
    let digest = hash.finalize();
    let mut fingerprint = [0u8; 8];
    fingerprint.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(fingerprint).max(1)
}

/// After a load, the score bounds and the prediction model of the last
/// evaluation, which only their fingerprints kept: those the evaluation at
/// `at` reads, if they are the same, so that it finds they did not move,
/// as the other replicas do; else it finds they moved.
fn restore_scores(shared: &Shared, state: &mut State, at: i64) {
    let loaded = shared.watch.scores_loaded.swap(0, Ordering::Relaxed);
    let model_loaded = shared.watch.model_loaded.swap(0, Ordering::Relaxed);
    if loaded == 0 {
        return;
    }
    let index = shared.long_index();
    let frame = Frame::new(
        &index,
        Timestamp::from_nanos(at),
        shared.settings.thresholds,
    );
    let bounds = frame.rfm_bounds().copied();
    if state.rfm.is_none() && scores_fingerprint(bounds.as_ref()) == loaded {
        state.rfm = bounds;
    }
    let model = index.model().map(|model| &**model);
    state
        .tracker
        .assume_model(&frame, model_fingerprint(model) == model_loaded);
}

/// Puts a loaded history in force: the journal noting, the watchers told,
/// and the score bounds' fingerprint kept for the next evaluation.
fn install(shared: &Shared, slot: &mut Option<State>, state: State) -> Result<()> {
    let hub = &shared.watch;
    let scores = shared.store.history_evaluated_scores()?.unwrap_or(0);
    hub.scores_loaded.store(scores, Ordering::Relaxed);
    let model = shared.store.history_evaluated_model()?.unwrap_or(0);
    hub.model_loaded.store(model, Ordering::Relaxed);
    hub.journal.start_replicated();
    hub.told(&state, None);
    *slot = Some(state);
    Ok(())
}

/// An error of the history's own, as one that leaves the log record to be
/// applied again (see `replica`) rather than skipped.
fn to_retry(error: Error) -> Error {
    match error {
        Error::Internal(_) => error,
        other => Error::internal(format!("the change history: {other}")),
    }
}

/// Loads the history this replica holds, if the log started one, before
/// the replica follows the log; returns the position of the record that
/// evaluated last, after which the journal must be read back from the log.
pub(in crate::engine) fn load_replicated(shared: &Shared) -> Result<Option<u64>> {
    let Some(state) = load::load_kept(shared)? else {
        return Ok(None);
    };
    install(shared, &mut lock(&shared.watch.state), state)?;
    shared.store.history_evaluated_position()
}

/// The history, loaded, or started by the record at `at` if the log
/// started none yet.
fn opened<'a>(
    shared: &Shared,
    slot: &'a mut Option<State>,
    at: Timestamp,
) -> Result<&'a mut State> {
    if slot.is_none() {
        let state = match load::load_kept(shared)? {
            Some(state) => state,
            None => {
                let state = load::create(shared, history_id(shared, at), at)?;
                tracing::info!(
                    history = format!("{:016x}", state.history),
                    "change history started"
                );
                state
            }
        };
        install(shared, slot, state)?;
    }
    Ok(slot.as_mut().expect("just loaded"))
}

/// Applies a `Tick`: every subject evaluated at `at`, or at the last
/// evaluation time if later, the changes written and flushed, then told.
/// Under the writer lock, which apply holds.
pub(in crate::engine) fn apply_tick(shared: &Shared, at: Timestamp) -> Result<()> {
    let hub = &shared.watch;
    let mut guard = lock(&hub.state);
    let state = opened(shared, &mut guard, at).map_err(to_retry)?;
    let started = Instant::now();
    // Writes applied before the tick may be stamped a little after its
    // time, the start of its period: evaluated at the latest of them, if
    // it falls within the period, the evaluation finds every event past
    // and reads only the customers that may have moved (see `tracker`).
    // The index before the tick is the same on every replica.
    let latest = shared.index().max_time();
    let period = i64::try_from(hub.settings.period.as_nanos()).unwrap_or(i64::MAX);
    let at = if latest > at.as_nanos() && latest < at.as_nanos().saturating_add(period) {
        Timestamp::from_nanos(latest)
    } else {
        at
    };
    let evaluation_at = at.as_nanos().max(state.at);
    schedule_maintenance(hub, state, evaluation_at);
    restore_scores(shared, state, evaluation_at);
    hub.ticking.store(evaluation_at.max(1), Ordering::Relaxed);
    let evaluated = state.evaluate_held(shared, at, None).and_then(|()| {
        let model = model_fingerprint(shared.index().model().map(|model| &**model));
        shared.store.write_history(vec![HistoryWrite::Evaluated {
            at: state.at,
            scores: scores_fingerprint(state.rfm.as_ref()),
            model,
        }])
    });
    hub.ticking.store(0, Ordering::Relaxed);
    if let Err(error) = evaluated {
        // The members in memory may be ahead of the history: read them
        // back once it is on disk; the tick is applied again, once the
        // journal it drained is read back from the log.
        tracing::error!(%error, at = at.as_nanos(), "evaluating the watches at a tick failed; applying it again");
        hub.recent.clear();
        hub.journal_lost.store(true, Ordering::Relaxed);
        *guard = None;
        return Err(to_retry(error));
    }
    hub.told(state, Some(started));
    Ok(())
}

/// Makes the evaluation at `at` maintain the history (checkpoints and
/// retention) if and only if it enters a new maintenance interval since
/// the last evaluation: the same evaluations on every replica, whatever
/// each one's clock and restarts.
fn schedule_maintenance(hub: &Hub, state: &mut State, at: i64) {
    let settings = &hub.settings;
    let every = MAINTENANCE_EVERY
        .min(settings.retention / 4)
        .max(Duration::from_millis(1));
    let every = i64::try_from(every.as_nanos()).unwrap_or(i64::MAX);
    state.maintenance_due = Some(state.at.div_euclid(every) != at.div_euclid(every));
}

/// Applies a `Watch`: `subject` followed from here on, if it is not yet.
/// Under the writer lock, which apply holds.
pub(in crate::engine) fn apply_watch(
    shared: &Shared,
    subject: &Subject,
    at: Timestamp,
) -> Result<()> {
    let hub = &shared.watch;
    let mut guard = lock(&hub.state);
    let state = opened(shared, &mut guard, at).map_err(to_retry)?;
    if state.follows(subject) {
        return Ok(());
    }
    // A registration evaluates at the last evaluation time, and only
    // without one at the clock's: here, the record's.
    if state.at == 0 {
        state.at = at.as_nanos();
    }
    let registered = state.register(shared, subject);
    match registered {
        Ok(()) => {
            hub.told(state, None);
            Ok(())
        }
        // A segment that is gone or a bad id: the same outcome everywhere.
        Err(error @ (Error::NotFound(_) | Error::InvalidArgument(_))) => Err(error),
        Err(error) => {
            tracing::error!(%error, ?subject, "registering a watch failed; applying it again");
            hub.recent.clear();
            *guard = None;
            Err(to_retry(error))
        }
    }
}
