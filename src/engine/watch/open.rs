//! Opening a watch: a cursor checked, or a subject followed from now on
//! (registered), and the members it starts with.

use std::sync::Arc;

use super::evaluate::{State, SubjectState};
use super::journal::Touched;
use super::members::Members;
use super::record::{encode, Checkpoint, Cursor, Subject};
use super::{expired, Head};
use crate::domain::segment::SegmentId;
use crate::domain::{Error, Result, Timestamp};
use crate::engine::frame::Frame;
use crate::engine::Shared;
use crate::store::HistoryWrite;

/// What opening a watch gives.
#[derive(Debug)]
pub struct Opened {
    /// The members to start with, when asked for.
    pub initial: Option<Vec<(String, String)>>,
    /// Their evaluation time.
    pub at: Timestamp,
    /// The cursor after them, or the one to resume from.
    pub cursor: Cursor,
    /// The head after opening (a registration moves it).
    pub head: Head,
    /// The subject is followed no more: its segment was deleted after the
    /// cursor; the records left end with its members leaving.
    pub orphan: bool,
}

impl State {
    /// Registers `subject` if it is new (only when `register`: in cluster
    /// mode a registration goes through the log), checks `cursor`, and
    /// returns the members to start with (when `initial`), their time and
    /// the cursor after them.
    pub fn open(
        &mut self,
        shared: &Shared,
        subject: &Subject,
        cursor: Option<Cursor>,
        initial: bool,
        register: bool,
    ) -> Result<Opened> {
        if let Some(cursor) = cursor {
            if cursor.history != self.history {
                return Err(Error::Cursor {
                    reason: "CURSOR_UNKNOWN",
                    message: format!(
                        "cursor {} belongs to another change history (of another server, or \
                         of this one before its store was restored): watch again with the \
                         initial members, and follow the new cursor",
                        cursor.to_text()
                    ),
                    cursor: cursor.to_text(),
                });
            }
            if cursor.seq > self.seq {
                return Err(Error::Cursor {
                    reason: "CURSOR_UNKNOWN",
                    message: format!(
                        "cursor {} is past the end of this server's change history ({}): in \
                         cluster mode this replica may be behind, so retry or watch through \
                         another replica; else watch again with the initial members, and \
                         follow the new cursor",
                        cursor.to_text(),
                        self.seq
                    ),
                    cursor: cursor.to_text(),
                });
            }
            let complete = cursor.offset == u32::MAX;
            if cursor.seq < self.pruned || (!complete && cursor.seq <= self.pruned) {
                return Err(expired(cursor, "before the watch resumed"));
            }
            let orphan = !self.subjects.contains_key(subject);
            if orphan {
                // A deleted segment's watcher still gets the departures
                // after its cursor, then NOT_FOUND.
                if let Some(error) = self.unknown_subject(shared, subject, cursor)? {
                    return Err(error);
                }
            }
            return Ok(Opened {
                initial: None,
                at: Timestamp::from_nanos(self.at),
                cursor,
                head: self.head(),
                orphan,
            });
        }
        if !self.subjects.contains_key(subject) {
            if !register {
                return Err(Error::Unavailable(
                    "the segment was deleted, or its watch not yet registered: watch again".into(),
                ));
            }
            self.register(shared, subject)?;
        }
        let initial = initial.then(|| self.members_of(&shared.long_index(), subject));
        Ok(Opened {
            initial,
            at: Timestamp::from_nanos(self.at),
            cursor: Cursor::after(self.history, self.seq),
            head: self.head(),
            orphan: false,
        })
    }

    /// For a cursor of a subject not followed: `None` when its segment is
    /// gone (the records after the cursor end with its members leaving),
    /// else the error: the cursor is not of a watch of this segment and
    /// channel.
    fn unknown_subject(
        &self,
        shared: &Shared,
        subject: &Subject,
        cursor: Cursor,
    ) -> Result<Option<Error>> {
        if let Subject::Segment { id, .. } = subject {
            let exists = SegmentId::parse(id)
                .ok()
                .map(|id| shared.store.get_segment(&id))
                .transpose()?
                .flatten()
                .is_some();
            if !exists {
                return Ok(None);
            }
        }
        Ok(Some(Error::Cursor {
            reason: "CURSOR_UNKNOWN",
            message: format!(
                "cursor {} is not of a watch of this segment and channel: watch again with the \
                 initial members, and follow the new cursor",
                cursor.to_text()
            ),
            cursor: cursor.to_text(),
        }))
    }

    /// Whether `subject` is followed.
    pub(super) fn follows(&self, subject: &Subject) -> bool {
        self.subjects.contains_key(subject)
    }

    /// Starts following `subject`: its members now enter, in one record.
    pub(super) fn register(&mut self, shared: &Shared, subject: &Subject) -> Result<()> {
        let (seq, kept) = (self.seq, self.sizes.len());
        let registered = self.register_new(shared, subject);
        if registered.is_err() {
            // Nobody heard of it: as if it had not been tried. A record
            // written is overwritten by the next; the checkpoint must go.
            self.subjects.remove(subject);
            self.seq = seq;
            self.sizes.truncate(kept);
            let _ = shared
                .store
                .write_history(vec![HistoryWrite::DropCheckpoint(subject.key())]);
        }
        registered
    }

    fn register_new(&mut self, shared: &Shared, subject: &Subject) -> Result<()> {
        let Subject::Segment { id, .. } = subject else {
            return Err(Error::internal("the personas are always followed"));
        };
        let segment_id = SegmentId::parse(id).map_err(|error| Error::invalid("segment", error))?;
        let segment = shared
            .store
            .get_segment(&segment_id)?
            .ok_or_else(|| Error::NotFound(segment_id.name()))?;
        // Read over the whole index with the score bounds as they are now,
        // not as the last evaluation left them: the next evaluation cannot
        // tell which of its rows moved since, so it reads every row.
        self.tracker.reset();
        self.subjects.insert(
            subject.clone(),
            SubjectState {
                rule: String::new(),
                compiled: None,
                codes: Members::empty(false),
                ghosts: Vec::new(),
                dirty: true,
            },
        );
        // The first evaluation of a subject is all entries, with the rule.
        let catalog = shared.catalog();
        let (record, members) = {
            let index = shared.long_index();
            // At the last evaluation's time, as every other subject is.
            if self.at == 0 {
                self.at = shared.watch.now().as_nanos();
            }
            let at = self.at;
            let frame = Frame::new(
                &index,
                Timestamp::from_nanos(at),
                shared.settings.thresholds,
            );
            let touched = Touched::default();
            let state = self.subjects.get_mut(subject).expect("just inserted");
            state.rule = format!("\u{0}{}", segment.filter);
            let record =
                self.evaluate_subject(shared, &frame, subject, &catalog, &touched, false, at)?;
            (record, self.members_of(&index, subject))
        };
        let Some(record) = record else {
            return Err(Error::internal("a new watch wrote no record"));
        };
        self.seq += 1;
        let bytes = encode(&record)?;
        self.sizes
            .push_back((self.seq, bytes.len() as u64 + 9, record.at));
        let checkpoint = Checkpoint {
            subject: subject.clone(),
            seq: self.seq,
            rule: segment.filter.clone(),
            members,
        };
        self.subjects.get_mut(subject).expect("registered").dirty = false;
        let size = bytes.len();
        shared.store.write_history(vec![
            HistoryWrite::Record(self.seq, bytes),
            HistoryWrite::Checkpoint(subject.key(), encode(&checkpoint)?),
        ])?;
        shared.store.flush()?;
        shared.watch.recent.push(self.seq, Arc::new(record), size);
        Ok(())
    }
}
