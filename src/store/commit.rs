//! Group commit: every writer waiting for durability shares the next flush.
//!
//! A writer applies its change to sled first, then asks for a flush. The
//! committer task takes every request queued so far, runs one `flush` on the
//! blocking pool, and answers them all; requests that arrive during a flush
//! wait for the next one, which still covers their writes.

use tokio::sync::{mpsc, oneshot};

use crate::domain::{Error, Result};

type Waiter = oneshot::Sender<Result<(), String>>;

/// A handle to the committer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    requests: mpsc::UnboundedSender<Waiter>,
}

impl GroupCommit {
    /// Starts the committer for `db` on the current tokio runtime.
    pub fn start(db: sled::Db) -> Self {
        let (requests, mut queue) = mpsc::unbounded_channel::<Waiter>();
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut waiters = vec![first];
                while let Ok(next) = queue.try_recv() {
                    waiters.push(next);
                }
                let db = db.clone();
                let outcome = match tokio::task::spawn_blocking(move || db.flush()).await {
                    Ok(Ok(_bytes)) => Ok(()),
                    Ok(Err(error)) => Err(format!("flush failed: {error}")),
                    Err(join_error) => Err(format!("flush task failed: {join_error}")),
                };
                if let Err(error) = &outcome {
                    tracing::error!(%error, waiters = waiters.len(), "group commit failed");
                }
                for waiter in waiters {
                    // A writer that gave up waiting is not an error.
                    let _ = waiter.send(outcome.clone());
                }
            }
        });
        GroupCommit { requests }
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
