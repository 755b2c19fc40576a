//! The log in memory: [`MemoryLog`], for tests of what is built on a
//! [`Log`]. It keeps every record and the published snapshot in the
//! process, and has controls a test uses to play the failures of a real
//! log: bounded retention ([`MemoryLog::drop_before`]) and an outage
//! ([`MemoryLog::set_unavailable`]).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::{Appended, Bounds, Entries, Entry, Log, LogFuture, Position};
use crate::domain::{Error, Result};

/// How many records a reader's channel holds before its feeder waits.
const READER_BUFFER: usize = 64;

/// A [`Log`] in memory.
///
/// Record ids are remembered for the log's whole life, records dropped by
/// [`MemoryLog::drop_before`] included: a retried append with the same id
/// is a duplicate however late it comes (a real log forgets ids after its
/// deduplication window).
#[derive(Clone, Default)]
pub struct MemoryLog {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// Bumped on every change a reader may wait for: an append, dropped
    /// records, an outage.
    changes: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// The records held, in order, the first at `first`.
    entries: VecDeque<Entry>,
    /// The position of the first record held, or of the next one when none is.
    first: Position,
    /// The position of the last record appended; 0 when none ever was.
    last: Position,
    /// The position of every id ever appended.
    ids: HashMap<String, Position>,
    /// The published snapshot: its position and the file's bytes.
    snapshot: Option<(Position, Vec<u8>)>,
    /// Every method fails while this is set.
    unavailable: bool,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every record before `position`, as a log with bounded
    /// retention does, so that `bounds().first` moves to `position` (at
    /// most `last + 1`). Readers already past them see nothing of it.
    pub fn drop_before(&self, position: Position) {
        let mut state = self.inner.lock();
        let first = position.min(state.last + 1);
        while state.first < first {
            state.entries.pop_front();
            state.first += 1;
        }
        drop(state);
        self.inner.changed();
    }

    /// Makes the log unreachable (`true`) or reachable again (`false`).
    /// While it is unreachable every method fails with
    /// `Error::Unavailable`, and every open reader ends with that error.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.inner.lock().unavailable = unavailable;
        self.inner.changed();
    }

    /// Appends unless the id is known; `only_if_empty` refuses (`None`)
    /// when a record was ever appended.
    fn append_record(
        &self,
        id: String,
        record: Bytes,
        only_if_empty: bool,
    ) -> Result<Option<Appended>> {
        let mut state = self.inner.available()?;
        if let Some(&position) = state.ids.get(&id) {
            return Ok(Some(Appended {
                position,
                duplicate: true,
            }));
        }
        if only_if_empty && state.last > 0 {
            return Ok(None);
        }
        state.last += 1;
        let position = state.last;
        if state.entries.is_empty() {
            state.first = position;
        }
        state.ids.insert(id.clone(), position);
        state.entries.push_back(Entry {
            position,
            id,
            record,
            stored_at_nanos: now_nanos(),
        });
        drop(state);
        self.inner.changed();
        Ok(Some(Appended {
            position,
            duplicate: false,
        }))
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state, or `Error::Unavailable` while the log is unreachable.
    fn available(&self) -> Result<MutexGuard<'_, State>> {
        let state = self.lock();
        if state.unavailable {
            return Err(unavailable());
        }
        Ok(state)
    }

    fn changed(&self) {
        self.changes.send_modify(|version| *version += 1);
    }

    /// The records held from `next` on.
    fn entries_from(&self, next: Position) -> Result<Vec<Entry>> {
        let state = self.available()?;
        let skip = usize::try_from(next.saturating_sub(state.first)).unwrap_or(usize::MAX);
        Ok(state.entries.iter().skip(skip).cloned().collect())
    }

    /// Sends every record from `next` on into `entries`, waiting for new
    /// ones, until the reader goes away or the log becomes unreachable.
    async fn feed(self: Arc<Self>, mut next: Position, entries: mpsc::Sender<Result<Entry>>) {
        let mut changes = self.changes.subscribe();
        loop {
            changes.borrow_and_update();
            let batch = match self.entries_from(next) {
                Ok(batch) => batch,
                Err(error) => {
                    let _ = entries.send(Err(error)).await;
                    return;
                }
            };
            for entry in batch {
                next = entry.position + 1;
                if entries.send(Ok(entry)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = entries.closed() => return,
            }
        }
    }
}

impl Log for MemoryLog {
    fn append(&self, id: String, record: Bytes) -> LogFuture<'_, Appended> {
        Box::pin(async move {
            let appended = self.append_record(id, record, false)?;
            Ok(appended.expect("an append that may go to a non-empty log always appends"))
        })
    }

    fn append_first(&self, id: String, record: Bytes) -> LogFuture<'_, Option<Appended>> {
        Box::pin(async move { self.append_record(id, record, true) })
    }

    fn read_from(&self, from: Position) -> LogFuture<'_, Entries> {
        Box::pin(async move {
            drop(self.inner.available()?);
            let (sender, receiver) = mpsc::channel(READER_BUFFER);
            tokio::spawn(self.inner.clone().feed(from, sender));
            Ok(Box::pin(ReceiverStream::new(receiver)) as Entries)
        })
    }

    fn bounds(&self) -> LogFuture<'_, Bounds> {
        Box::pin(async move {
            let state = self.inner.available()?;
            Ok(Bounds {
                first: state.first.max(1).min(state.last + 1),
                last: state.last,
            })
        })
    }

    fn put_snapshot<'a>(&'a self, position: Position, file: &'a Path) -> LogFuture<'a, ()> {
        Box::pin(async move {
            drop(self.inner.available()?);
            let bytes = tokio::fs::read(file).await.map_err(|error| {
                Error::Internal(format!(
                    "reading the snapshot file {}: {error}",
                    file.display()
                ))
            })?;
            self.inner.available()?.snapshot = Some((position, bytes));
            Ok(())
        })
    }

    fn snapshot_position(&self) -> LogFuture<'_, Option<Position>> {
        Box::pin(async move {
            let state = self.inner.available()?;
            Ok(state.snapshot.as_ref().map(|(position, _)| *position))
        })
    }

    fn fetch_snapshot<'a>(&'a self, into: &'a Path) -> LogFuture<'a, Option<Position>> {
        Box::pin(async move {
            let Some((position, bytes)) = self.inner.available()?.snapshot.clone() else {
                return Ok(None);
            };
            tokio::fs::write(into, bytes).await.map_err(|error| {
                Error::Internal(format!(
                    "writing the snapshot into {}: {error}",
                    into.display()
                ))
            })?;
            Ok(Some(position))
        })
    }
}

fn unavailable() -> Error {
    Error::Unavailable("the log cannot be reached; retry later".to_owned())
}

fn now_nanos() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
}

/// The checks of the [`Log`] contract that every log passes, run here on
/// a [`MemoryLog`] and in `jetstream` on a JetStream stream.
#[cfg(test)]
pub(super) mod conformance {
    use std::time::Duration;

    use tokio_stream::StreamExt;

    use super::*;

    pub fn record(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    fn appended(position: Position, duplicate: bool) -> Appended {
        Appended {
            position,
            duplicate,
        }
    }

    /// The next entry of `entries`, failing the test after `within`.
    pub async fn next(entries: &mut Entries, within: Duration) -> Result<Entry> {
        tokio::time::timeout(within, entries.next())
            .await
            .expect("an entry in time")
            .expect("the reader goes on")
    }

    /// Appends go in order; a known id is answered with its position.
    pub async fn appends_answer_a_known_id_as_a_duplicate(log: &dyn Log) {
        assert_eq!(log.bounds().await.unwrap(), Bounds { first: 1, last: 0 });
        let first = log.append("a".into(), record("one")).await.unwrap();
        let second = log.append("b".into(), record("two")).await.unwrap();
        let again = log.append("a".into(), record("one")).await.unwrap();
        assert_eq!(first, appended(1, false));
        assert_eq!(second, appended(2, false));
        assert_eq!(again, appended(1, true));
        assert_eq!(log.bounds().await.unwrap(), Bounds { first: 1, last: 2 });
    }

    /// `append_first` wins on an empty log only, and its retry is a
    /// duplicate.
    pub async fn append_first_wins_only_on_an_empty_log(log: &dyn Log) {
        let won = log.append_first("boot".into(), record("x")).await.unwrap();
        assert_eq!(won, Some(appended(1, false)));
        let retried = log.append_first("boot".into(), record("x")).await.unwrap();
        assert_eq!(retried, Some(appended(1, true)));
        let lost = log.append_first("other".into(), record("y")).await.unwrap();
        assert_eq!(lost, None);
        assert_eq!(log.bounds().await.unwrap(), Bounds { first: 1, last: 1 });
    }

    /// A reader gets the stored records from its position, then new ones.
    pub async fn a_reader_gets_the_records_from_its_position_then_new_ones(log: &dyn Log) {
        for id in ["a", "b", "c"] {
            log.append(id.into(), record("r")).await.unwrap();
        }
        let mut entries = log.read_from(2).await.unwrap();
        let second = next(&mut entries, Duration::from_secs(5)).await.unwrap();
        assert_eq!((second.position, second.id.as_str()), (2, "b"));
        assert!(second.stored_at_nanos > 0);
        let third = next(&mut entries, Duration::from_secs(5)).await.unwrap();
        assert_eq!(third.position, 3);

        log.append("d".into(), record("new")).await.unwrap();
        let tailed = next(&mut entries, Duration::from_secs(5)).await.unwrap();
        assert_eq!((tailed.position, tailed.id.as_str()), (4, "d"));
        assert_eq!(tailed.record, record("new"));
    }

    /// No snapshot at first; then the last one published, whole.
    pub async fn a_snapshot_round_trips_and_none_is_published_at_first(log: &dyn Log) {
        let directory = tempfile::tempdir().unwrap();
        let into = directory.path().join("fetched");
        assert_eq!(log.snapshot_position().await.unwrap(), None);
        assert_eq!(log.fetch_snapshot(&into).await.unwrap(), None);
        assert!(
            !into.exists(),
            "nothing is written when there is no snapshot"
        );

        // Over one JetStream object chunk (128 KiB), so it takes several.
        let state: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let file = directory.path().join("snapshot");
        std::fs::write(&file, &state).unwrap();
        log.put_snapshot(7, &file).await.unwrap();
        assert_eq!(log.snapshot_position().await.unwrap(), Some(7));
        assert_eq!(log.fetch_snapshot(&into).await.unwrap(), Some(7));
        assert_eq!(std::fs::read(&into).unwrap(), state);

        std::fs::write(&file, b"state at 9").unwrap();
        log.put_snapshot(9, &file).await.unwrap();
        assert_eq!(log.snapshot_position().await.unwrap(), Some(9));
        assert_eq!(log.fetch_snapshot(&into).await.unwrap(), Some(9));
        assert_eq!(std::fs::read(&into).unwrap(), b"state at 9");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt;

    use super::conformance::{self, record};
    use super::*;

    async fn next(entries: &mut Entries) -> Result<Entry> {
        conformance::next(entries, Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn appends_answer_a_known_id_as_a_duplicate() {
        conformance::appends_answer_a_known_id_as_a_duplicate(&MemoryLog::new()).await;
    }

    #[tokio::test]
    async fn append_first_wins_only_on_a_log_that_never_held_a_record() {
        let log = MemoryLog::new();
        conformance::append_first_wins_only_on_an_empty_log(&log).await;
        log.drop_before(2);
        let after_retention = log.append_first("late".into(), record("z")).await.unwrap();
        assert_eq!(after_retention, None, "the log held a record once");
    }

    #[tokio::test]
    async fn bounds_after_retention() {
        let log = MemoryLog::new();
        for id in ["a", "b", "c"] {
            log.append(id.into(), record("r")).await.unwrap();
        }
        log.drop_before(3);
        assert_eq!(log.bounds().await.unwrap(), Bounds { first: 3, last: 3 });
        log.drop_before(10);
        assert_eq!(log.bounds().await.unwrap(), Bounds { first: 4, last: 3 });
        let appended = log.append("d".into(), record("r")).await.unwrap();
        assert_eq!(appended.position, 4);
        assert_eq!(log.bounds().await.unwrap(), Bounds { first: 4, last: 4 });
    }

    #[tokio::test]
    async fn a_reader_gets_the_records_from_its_position_then_new_ones() {
        conformance::a_reader_gets_the_records_from_its_position_then_new_ones(&MemoryLog::new())
            .await;
    }

    #[tokio::test]
    async fn a_reader_from_before_the_first_record_starts_at_the_first() {
        let log = MemoryLog::new();
        for id in ["a", "b", "c"] {
            log.append(id.into(), record("r")).await.unwrap();
        }
        log.drop_before(3);
        let mut entries = log.read_from(1).await.unwrap();
        assert_eq!(next(&mut entries).await.unwrap().position, 3);
    }

    #[tokio::test]
    async fn an_unavailable_log_fails_every_method_and_ends_its_readers() {
        let log = MemoryLog::new();
        log.append("a".into(), record("r")).await.unwrap();
        let mut entries = log.read_from(1).await.unwrap();
        assert_eq!(next(&mut entries).await.unwrap().position, 1);

        log.set_unavailable(true);
        assert!(matches!(
            next(&mut entries).await,
            Err(Error::Unavailable(_))
        ));
        assert!(entries.next().await.is_none(), "the reader ended");
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            log.append("b".into(), record("r")).await,
            Err(Error::Unavailable(_))
        ));
        assert!(matches!(
            log.append_first("b".into(), record("r")).await,
            Err(Error::Unavailable(_))
        ));
        assert!(matches!(log.read_from(1).await, Err(Error::Unavailable(_))));
        assert!(matches!(log.bounds().await, Err(Error::Unavailable(_))));
        assert!(matches!(
            log.put_snapshot(1, file.path()).await,
            Err(Error::Unavailable(_))
        ));
        assert!(matches!(
            log.snapshot_position().await,
            Err(Error::Unavailable(_))
        ));
        assert!(matches!(
            log.fetch_snapshot(file.path()).await,
            Err(Error::Unavailable(_))
        ));

        log.set_unavailable(false);
        assert_eq!(log.bounds().await.unwrap(), Bounds { first: 1, last: 1 });
    }

    #[tokio::test]
    async fn a_snapshot_round_trips_and_none_is_published_at_first() {
        conformance::a_snapshot_round_trips_and_none_is_published_at_first(&MemoryLog::new()).await;
    }
}
