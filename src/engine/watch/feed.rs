//! One watcher's way through the change history: the records of its
//! subject after its cursor, a message at a time, then progress as the
//! evaluations go on.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use tokio::sync::watch;

use super::record::{self, Change, Cursor, Record, Subject};
use super::{expired, Head, Hub};
use crate::domain::{Result, Timestamp};
use crate::engine::Shared;

/// The most changes one message carries.
pub const MAX_CHANGES_PER_MESSAGE: usize = 1000;
/// Records read from the store at a time, at most.
const READ_AHEAD: usize = 32;
/// Bytes of records read from the store at a time, at most (one record at
/// least).
const READ_AHEAD_BYTES: usize = 4 << 20;

/// What a watcher gets next.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    /// Changes of one evaluation (or a part of them).
    Changes {
        /// The changes, in order.
        changes: Vec<Change>,
        /// The evaluation time.
        at: Timestamp,
        /// Resume after this message with it.
        cursor: Cursor,
    },
    /// Nothing more for this watcher up to `at`.
    Progress {
        /// The time of the latest evaluation.
        at: Timestamp,
        /// Resume with it.
        cursor: Cursor,
    },
    /// The subject ended: its segment was deleted; the changes before
    /// reported its members leaving.
    Ended,
}

/// A watcher's place in the history.
#[derive(Debug)]
pub struct Feed {
    shared: Arc<Shared>,
    subject: Subject,
    /// For personas: only moves into or out of these; all when empty.
    personas: BTreeSet<String>,
    cursor: Cursor,
    head: watch::Receiver<Head>,
    /// Records read ahead; `None` for another subject's.
    buffered: VecDeque<(u64, Option<Arc<Record>>)>,
    /// The subject is followed no more (its segment was deleted): the feed
    /// ends once it has given the records left.
    orphan: bool,
    /// The evaluation time of the last message sent.
    sent_at: i64,
    ended: bool,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.shared.watch.closed();
    }
}

impl Feed {
    /// A feed of `subject` from `cursor`; counted open by the caller.
    pub(super) fn new(
        shared: Arc<Shared>,
        hub: &Hub,
        subject: Subject,
        personas: BTreeSet<String>,
        cursor: Cursor,
        at: i64,
        orphan: bool,
    ) -> Self {
        Feed {
            shared,
            subject,
            personas,
            cursor,
            head: hub.head.subscribe(),
            buffered: VecDeque::new(),
            orphan,
            sent_at: at,
            ended: false,
        }
    }

    /// The cursor of the last item given.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    fn wanted(&self, change: &Change) -> bool {
        // An erased customer's id is blanked in the records before the
        // one that reports the erasure, keeping every other in its place.
        !change.customer.is_empty()
            && (self.personas.is_empty()
                || self.personas.contains(&change.from)
                || self.personas.contains(&change.to))
    }

    /// The next item; waits for the next evaluation when there is none.
    pub async fn next(&mut self) -> Result<FeedItem> {
        loop {
            if self.ended {
                return Ok(FeedItem::Ended);
            }
            if let Some((seq, record)) = self.buffered.front() {
                let seq = *seq;
                let Some(record) = record else {
                    self.buffered.pop_front();
                    self.cursor = Cursor::after(self.cursor.history, seq);
                    continue;
                };
                let start = if self.cursor.seq == seq {
                    (self.cursor.offset as usize).min(record.changes.len())
                } else {
                    0
                };
                let mut end = start;
                let mut changes = Vec::new();
                while end < record.changes.len() && changes.len() < MAX_CHANGES_PER_MESSAGE {
                    if self.wanted(&record.changes[end]) {
                        changes.push(record.changes[end].clone());
                    }
                    end += 1;
                }
                let at = record.at;
                let ended = record.ended;
                self.cursor = if end == record.changes.len() {
                    self.buffered.pop_front();
                    self.ended = ended;
                    Cursor::after(self.cursor.history, seq)
                } else {
                    Cursor {
                        history: self.cursor.history,
                        seq,
                        offset: end as u32,
                    }
                };
                if changes.is_empty() {
                    continue;
                }
                self.sent_at = self.sent_at.max(at);
                return Ok(FeedItem::Changes {
                    changes,
                    at: Timestamp::from_nanos(at),
                    cursor: self.cursor,
                });
            }
            let head = *self.head.borrow_and_update();
            if head.closing {
                return Err(crate::domain::Error::Unavailable(
                    "segmentd is shutting down: resume with the last cursor once it is back".into(),
                ));
            }
            if head.off {
                return Err(crate::domain::Error::Unavailable(
                    "watching stopped after a fault of the server (see its log); resume with the \
                     last cursor once it restarts"
                        .into(),
                ));
            }
            let done = self.cursor.offset == u32::MAX;
            if self.cursor.seq < head.seq || !done {
                self.read(head.seq).await?;
                continue;
            }
            if self.orphan {
                return Ok(FeedItem::Ended);
            }
            if head.at > self.sent_at {
                self.sent_at = head.at;
                self.cursor = Cursor::after(self.cursor.history, head.seq);
                return Ok(FeedItem::Progress {
                    at: Timestamp::from_nanos(head.at),
                    cursor: self.cursor,
                });
            }
            if self.head.changed().await.is_err() {
                return Err(crate::domain::Error::Unavailable(
                    "segmentd is shutting down; resume with the last cursor".into(),
                ));
            }
        }
    }

    /// Reads the records after the cursor, up to `last`.
    async fn read(&mut self, last: u64) -> Result<()> {
        // A record delivered in part is read again.
        let after = if self.cursor.offset == u32::MAX {
            self.cursor.seq
        } else {
            self.cursor.seq.saturating_sub(1)
        };
        let records = match self.shared.watch.recent.after(after, last, READ_AHEAD) {
            Some(kept) => kept
                .into_iter()
                .map(|(seq, record)| (seq, (record.subject == self.subject).then_some(record)))
                .collect(),
            None => self.read_stored(after, last).await?,
        };
        for (expected, (seq, record)) in (after + 1..).zip(records) {
            if seq != expected {
                return Err(expired(self.cursor, "while it was being read"));
            }
            self.buffered.push_back((seq, record));
        }
        if self.buffered.is_empty() {
            // The records up to `last` are gone: pruned under the reader.
            return Err(expired(self.cursor, "while it was being read"));
        }
        Ok(())
    }

    /// Reads the records after `after`, up to `last`, from the store, off
    /// the async workers; another subject's record is not decoded beyond
    /// its subject.
    async fn read_stored(&self, after: u64, last: u64) -> Result<Vec<(u64, Option<Arc<Record>>)>> {
        let shared = Arc::clone(&self.shared);
        let subject = self.subject.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<_>> {
            let records = shared
                .store
                .history_after_within(after, READ_AHEAD, READ_AHEAD_BYTES)?;
            // The read-ahead is bounded by the records' decoded size too:
            // an import's compressed record expands several times.
            let mut decoded = 0;
            records
                .into_iter()
                .take_while(|(seq, bytes)| {
                    let first = decoded == 0;
                    decoded += record::decoded_len(bytes);
                    *seq <= last && (first || decoded <= READ_AHEAD_BYTES)
                })
                .map(|(seq, bytes)| {
                    let payload = record::payload(&bytes)?;
                    let record = if record::subject_in(&payload)? == subject {
                        Some(Arc::new(record::decode_payload::<Record>(&payload)?))
                    } else {
                        None
                    };
                    Ok((seq, record))
                })
                .collect()
        })
        .await
        .map_err(|error| crate::domain::Error::internal(format!("history read failed: {error}")))?
    }
}
