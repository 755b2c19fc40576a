//! The replicated log that cluster mode is built on: the system of record
//! every replica applies in order. Nothing outside this module knows which
//! engine keeps it.
//!
//! - [`Log`]: what the replicas need of a log, small enough that another
//!   engine (Kafka, say) can stand behind it.
//! - `jetstream`: the log on a NATS JetStream stream, and snapshots in its
//!   object store.
//! - `memory`: the log in memory, for tests of what is built on it.
//!
//! # Positions
//!
//! A record's position is its place in the log: 1 for the first record,
//! then one more for each. Positions never repeat and never go back; a
//! log may drop its oldest records (bounded retention), and then starts at
//! a later position, but it never leaves a gap after its first record.
//!
//! # Record ids
//!
//! Each appended record carries an id chosen by whoever appends it. A
//! retried append with the same id, within the log's deduplication window,
//! is not appended again: the log answers with the position of the first
//! (`Appended::duplicate`). Readers see the id with the record, so a
//! replica can hand the outcome of applying it back to the request that
//! appended it.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use tokio_stream::Stream;

use crate::domain::Result;

mod jetstream;
mod memory;

pub use jetstream::{JetStreamLog, JetStreamOptions};
pub use memory::MemoryLog;

/// A record's place in the log; the first record is at 1.
pub type Position = u64;

/// A future that a [`Log`] method returns.
pub type LogFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// The records of the log from a position on, in order, without end: the
/// stream waits for new records once it has given every stored one. An
/// error ends it.
pub type Entries = Pin<Box<dyn Stream<Item = Result<Entry>> + Send>>;

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it is in the log.
    pub position: Position,
    /// The id its appender gave it.
    pub id: String,
    /// The record, as appended.
    pub record: Bytes,
    /// When the log stored it, in nanoseconds since the Unix epoch.
    pub stored_at_nanos: i64,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record's position.
    pub position: Position,
    /// The log held a record with the same id already, at `position`, and
    /// appended nothing.
    pub duplicate: bool,
}

/// The positions the log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    /// The first record still held; `last + 1` when the log holds none.
    pub first: Position,
    /// The last record appended; 0 when none ever was.
    pub last: Position,
}

/// A replicated log of records, and a place for snapshots of the state
/// they build.
///
/// Every method fails with `Error::Unavailable` when the log cannot be
/// reached, or cannot confirm in time, and says so in words a client can
/// act on.
pub trait Log: Send + Sync + 'static {
    /// Appends `record` with `id`, and resolves once the log has stored it
    /// durably (on a quorum of its nodes, for a replicated log). A retry
    /// with the same `id` appends nothing (see the module docs).
    fn append(&self, id: String, record: Bytes) -> LogFuture<'_, Appended>;

    /// Appends `record` only if the log has never held a record: the first
    /// of many replicas to call it wins. `None` when the log was not empty.
    fn append_first(&self, id: String, record: Bytes) -> LogFuture<'_, Option<Appended>>;

    /// Every record from `from` on, then new ones as they are appended. A
    /// `from` before the log's first record starts at its first record: the
    /// reader checks the first position it gets.
    fn read_from(&self, from: Position) -> LogFuture<'_, Entries>;

    /// The positions the log holds now.
    fn bounds(&self) -> LogFuture<'_, Bounds>;

    /// Publishes the snapshot file at `file`, which holds the state after
    /// applying every record up to `position`, in place of the one before.
    fn put_snapshot<'a>(&'a self, position: Position, file: &'a Path) -> LogFuture<'a, ()>;

    /// The position of the published snapshot, without reading it; `None`
    /// when there is none.
    fn snapshot_position(&self) -> LogFuture<'_, Option<Position>>;

    /// Writes the published snapshot into the file `into` (created or
    /// replaced), and returns its position; `None`, writing nothing, when
    /// there is none.
    fn fetch_snapshot<'a>(&'a self, into: &'a Path) -> LogFuture<'a, Option<Position>>;

    /// How many appends had to be retried so far, for the metrics.
    fn append_retries(&self) -> u64 {
        0
    }
}
