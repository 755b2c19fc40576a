//! Online backup: a copy of the whole store as it was at one moment,
//! taken while writes go on, streamed as the chunks of a backup file.
//!
//! # Why the copy is consistent
//!
//! sled has no snapshots, and holding the writer lock for a whole copy
//! would stall every write for seconds on a large store. So a backup
//! holds it twice, each time only for a moment:
//!
//! 1. Under the writer lock, the store's tap starts recording every change
//!    applied from then on (the last value of each key, or its removal).
//! 2. Without the lock, every tree is copied with a plain scan, into the
//!    file as puts. Writes go on; the scan may see some of them and miss
//!    others, so on its own it is no state the store ever had.
//! 3. Under the writer lock, the tap is taken (stopping it), and its
//!    changes are appended to the file as puts and deletes.
//!
//! Restoring applies the records in file order. A key no write touched
//! between 1 and 3 holds in the scan the value it had all along; a key
//! some write touched ends with the last value that write left, from the
//! tap. So the restored store is exactly the store at step 3, with no
//! write in progress (the lock was held): a state it really had. Every
//! write acknowledged before the backup began was applied before step 1,
//! and so is in it.
//!
//! # Bounds
//!
//! - The tap keeps one entry per changed key, up to `max_pending_bytes`;
//!   past that it drops what it holds and the backup fails with
//!   RESOURCE_EXHAUSTED, rather than the server running out of memory.
//! - Chunks go through a channel of [`CHANNEL_CHUNKS`] chunks of at most
//!   [`CHUNK_BYTES`]: a client that reads slowly slows the scan, and one
//!   that stops reading holds at most that much (and the tap, until it
//!   overflows or [`STALL_TIMEOUT`] passes). A client that goes away stops
//!   the backup and frees the tap.
//! - One backup runs at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::{Engine, Shared};
use crate::domain::{Error, Result};
use crate::store::backup::{BackupEncoder, Tap, STORE_FORMAT};

/// The largest chunk of the file sent at once.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// How many chunks wait for the client at most.
pub const CHANNEL_CHUNKS: usize = 4;
/// How long a chunk may wait for the client to take it before the backup
/// gives up.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Limits of a backup.
#[derive(Debug, Clone, Copy)]
pub struct BackupLimits {
    /// The most bytes of changes the tap may hold while a backup runs.
    pub max_pending_bytes: usize,
}

impl Default for BackupLimits {
    fn default() -> Self {
        BackupLimits {
            max_pending_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The chunks of a backup file, in order; an error ends the backup.
pub type BackupChunks = mpsc::Receiver<Result<Vec<u8>>>;

/// Why a backup stopped before its end.
enum Stop {
    /// The client went away: nobody to tell.
    Gone,
    /// The backup failed: tell the client.
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        Stop::Failed(error)
    }
}

/// Where the chunks go: the channel to the client, watched over by the tap
/// while it records.
struct Sink<'a> {
    /// The runtime, to wait on the channel from the blocking pool.
    runtime: Handle,
    /// The chunks' channel.
    chunks: &'a mpsc::Sender<Result<Vec<u8>>>,
}

impl Sink<'_> {
    /// Sends the full chunks `encoder` holds; waits while the client is
    /// behind, and fails when the tap overflows, the client goes away or
    /// stalls.
    fn ship(&self, encoder: &mut BackupEncoder, tap: Option<&Tap>) -> Result<(), Stop> {
        if let Some(tap) = tap {
            tap.check()?;
        }
        while encoder.buffered() >= CHUNK_BYTES {
            self.send(encoder.take_front(CHUNK_BYTES), tap)?;
        }
        Ok(())
    }

    /// Sends one chunk, as [`Sink::ship`] does.
    fn send(&self, chunk: Vec<u8>, tap: Option<&Tap>) -> Result<(), Stop> {
        self.runtime.block_on(async {
            let overflow = async {
                match tap {
                    Some(tap) => tap.overflowed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                sent = self.chunks.send(Ok(chunk)) => sent.map_err(|_| Stop::Gone),
                error = overflow => Err(Stop::Failed(error)),
                () = tokio::time::sleep(STALL_TIMEOUT) => Err(Stop::Failed(Error::Unavailable(format!(
                    "the backup stopped: the client took no data for {} s",
                    STALL_TIMEOUT.as_secs()
                )))),
            }
        })
    }
}

/// What a finished backup held, for the log.
struct Written {
    /// Records copied by the scan.
    scanned: u64,
    /// Keys changed while the scan ran, appended from the tap.
    tapped: usize,
    /// The file's length in bytes.
    bytes: u64,
}

impl Engine {
    /// Starts a backup of the whole store and returns its chunks, which
    /// the caller must take as they come (see the module docs). Fails at
    /// once if another backup is running.
    pub async fn backup(&self, limits: BackupLimits) -> Result<BackupChunks> {
        self.copy_store(limits, false).await
    }

    /// A backup with the change history, for a cluster snapshot: the
    /// history is a function of the log, and a replica that joins from the
    /// snapshot goes on with it.
    pub(super) async fn snapshot(&self, limits: BackupLimits) -> Result<BackupChunks> {
        self.copy_store(limits, true).await
    }

    /// A backup, with the change history when `with_history`.
    async fn copy_store(&self, limits: BackupLimits, with_history: bool) -> Result<BackupChunks> {
        let tap = self
            .write(usize::MAX, move |shared| {
                if with_history {
                    shared
                        .store
                        .start_tap_with_history(limits.max_pending_bytes)
                } else {
                    shared.store.start_tap(limits.max_pending_bytes)
                }
            })
            .await?;
        let (sender, chunks) = mpsc::channel(CHANNEL_CHUNKS);
        let shared = Arc::clone(&self.shared);
        let runtime = Handle::current();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            tracing::info!("backup started");
            let sink = Sink {
                runtime: runtime.clone(),
                chunks: &sender,
            };
            match copy(&shared, tap, &sink, with_history) {
                Ok(written) => tracing::info!(
                    scanned = written.scanned,
                    tapped = written.tapped,
                    bytes = written.bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "backup finished"
                ),
                Err(Stop::Gone) => tracing::warn!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "backup stopped: the client went away"
                ),
                Err(Stop::Failed(error)) => {
                    tracing::warn!(%error, elapsed_ms = started.elapsed().as_millis() as u64, "backup failed");
                    // A client that reads nothing is not waited for
                    // forever; one that went away is not told.
                    let _ = runtime
                        .block_on(tokio::time::timeout(STALL_TIMEOUT, sender.send(Err(error))));
                }
            }
        });
        Ok(chunks)
    }
}

/// Copies the store through `sink`: the scan, then the tap's changes,
/// then the trailer (see the module docs); the change history only when
/// `with_history`.
fn copy(shared: &Shared, tap: Tap, sink: &Sink<'_>, with_history: bool) -> Result<Written, Stop> {
    let mut encoder = BackupEncoder::new(STORE_FORMAT);
    let mut scanned = 0;
    let mut stopped = None;
    let scan = shared.store.scan_trees(with_history, |change| {
        encoder.push(change);
        scanned += 1;
        sink.ship(&mut encoder, Some(&tap)).map_err(|stop| {
            stopped = Some(stop);
            Error::internal("backup stopped")
        })
    });
    if let Err(error) = scan {
        return Err(stopped.unwrap_or(Stop::Failed(error)));
    }
    let changes = {
        let _writer = shared.writer();
        tap.take()?
    };
    for change in changes.iter() {
        encoder.push(change);
        sink.ship(&mut encoder, None)?;
    }
    let (last, summary) = encoder.finish();
    for chunk in last.chunks(CHUNK_BYTES) {
        sink.send(chunk.to_vec(), None)?;
    }
    Ok(Written {
        scanned,
        tapped: changes.len(),
        bytes: summary.bytes,
    })
}
