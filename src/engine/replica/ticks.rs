//! The clock, entered into the log: once the log has started a change
//! history, every replica appends a `Tick` each watch period, so that
//! every replica evaluates the watches at the same instants and writes the
//! same changes (see `watch::replicated`).
//!
//! The tick of a period has the period's start as its time and an id made
//! from it, so the log keeps one tick a period however many replicas
//! append it (its deduplication window): a replica that has gone leaves
//! the others ticking. A tick late by a period or more (a replica's clock
//! behind) is a record of its own, and evaluates at the last evaluation
//! time, which never goes back.

use std::sync::Arc;
use std::time::Duration;

use super::Replica;
use crate::domain::Timestamp;
use crate::engine::command::Command;
use crate::engine::Shared;

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
        let into = Timestamp::now().as_nanos().rem_euclid(period.as_nanos() as i64);
        let wait = period.saturating_sub(Duration::from_nanos(into as u64));
        tokio::time::sleep(wait + Duration::from_millis(1)).await;
        if !hub.history_open() || replica.failing().is_some() {
            continue;
        }
        let (id, at) = tick_of(hub.now(), period);
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
