//! Watching in cluster mode, the replica's side (see `watch::replicated`
//! for the history's):
//!
//! - The clock, entered into the log: once the log has started a change
//!   history, every replica appends a `Tick` each watch period, so that
//!   every replica evaluates the watches at the same instants and writes
//!   the same changes. The tick of a period has the period's start as its
//!   time and an id made from it, so the log keeps one tick a period
//!   however many replicas append it (its deduplication window): a
//!   replica that has gone leaves the others ticking. A tick late by a
//!   period or more (a replica's clock behind) is a record of its own, and
//!   evaluates at the last evaluation time, which never goes back.
//! - The journal, read back: what the records applied since the last tick
//!   touched is in memory only, so a replica that starts (after a restart,
//!   or from a snapshot) reads those records from the log again, and the
//!   next tick gives the causes every other replica gives.

use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt as _;

use super::Replica;
use crate::domain::{Error, Result, Timestamp};
use crate::engine::command::Command;
use crate::engine::Shared;
use crate::log::{Log, Position};

/// The shortest period ticks are appended at, whatever the settings.
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// The id and the time of the tick of the period that holds `now`.
pub(super) fn tick_of(now: Timestamp, period: Duration) -> (String, Timestamp) {
    let period_nanos = i64::try_from(period.max(MIN_PERIOD).as_nanos()).unwrap_or(i64::MAX);
    let bucket = now.as_nanos().div_euclid(period_nanos);
    (
        format!("tick-{bucket}"),
        Timestamp::from_nanos(bucket.saturating_mul(period_nanos)),
    )
}

/// Appends a tick every period while a change history is open and this
/// replica can apply the log, for as long as the replica runs.
pub(super) async fn append_ticks(replica: Arc<Replica>, shared: Arc<Shared>) {
    let hub = &shared.watch;
    let period = hub.period().max(MIN_PERIOD);
    loop {
        // At the start of the next period, so that the replicas append
        // the same tick.
        let into = Timestamp::now()
            .as_nanos()
            .rem_euclid(period.as_nanos() as i64);
        let wait = period.saturating_sub(Duration::from_nanos(into as u64));
        tokio::time::sleep(wait + Duration::from_millis(1)).await;
        if !hub.history_open() || replica.failing().is_some() {
            continue;
        }
        let (id, at) = tick_of(hub.clock_now(), period);
        let record = match (Command::Tick { at }).encode() {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(%error, "cannot encode a tick");
                continue;
            }
        };
        if let Err(error) = replica.log.append(id, record.into()).await {
            tracing::debug!(%error, "cannot append a tick");
        }
    }
}

/// Notes in the journal what the records after `after`, up to `applied`,
/// touched: the records applied since the last tick, which a replica that
/// starts no longer holds in memory. A log that no longer holds them
/// leaves their causes out, and says so.
pub(super) async fn read_back_journal(
    log: &dyn Log,
    shared: &Arc<Shared>,
    after: Position,
    applied: Position,
) -> Result<()> {
    if after >= applied {
        return Ok(());
    }
    let lost = |to: Position| {
        tracing::warn!(
            from = after + 1,
            to,
            "the log no longer holds the records since the last tick: the next changes may name \
             the clock as their cause where other replicas name a write"
        );
    };
    // The stream waits for records to come: none is read past `applied`.
    if log.bounds().await?.first > applied {
        lost(applied);
        return Ok(());
    }
    let mut commands = Vec::new();
    let mut next = after + 1;
    let mut entries = log.read_from(next).await?;
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        if entry.position < next {
            continue;
        }
        if entry.position > next {
            lost(entry.position - 1);
        }
        if entry.position > applied {
            break;
        }
        next = entry.position + 1;
        if let Ok(command) = Command::decode(&entry.record) {
            commands.push(command);
        }
        if entry.position == applied {
            break;
        }
    }
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || {
        let index = shared.index();
        for command in &commands {
            shared.watch.journal.replay(command, &index);
        }
    })
    .await
    .map_err(|error| Error::internal(format!("journal task failed: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replicas_of_one_period_append_one_tick_at_its_start() {
        let period = Duration::from_secs(1);
        let early = tick_of(Timestamp::from_nanos(5_000_000_001), period);
        let late = tick_of(Timestamp::from_nanos(5_999_999_999), period);
        assert_eq!(early, late);
        assert_eq!(early.0, "tick-5");
        assert_eq!(early.1, Timestamp::from_nanos(5_000_000_000));
        let next = tick_of(Timestamp::from_nanos(6_000_000_000), period);
        assert_eq!(next.0, "tick-6");
    }
}
