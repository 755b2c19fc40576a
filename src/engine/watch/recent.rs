//! The latest records of the change history, decoded and shared, so that
//! watchers who keep up read them from memory: no store read, no decode,
//! no blocking thread per watcher. A watcher further behind reads the
//! store.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use super::record::Record;

/// Bytes of encoded records kept, at most.
const KEPT_BYTES: usize = 64 << 20;

/// The latest records, in order, without a gap.
#[derive(Debug, Default)]
pub struct Recent {
    inner: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    /// (sequence number, record, encoded bytes), oldest first.
    records: VecDeque<(u64, Arc<Record>, usize)>,
    /// Their encoded bytes.
    bytes: usize,
}

impl Recent {
    fn kept(&self) -> MutexGuard<'_, Kept> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds the record after the last one kept (starting over if it does
    /// not follow it), dropping the oldest beyond the budget.
    pub fn push(&self, seq: u64, record: Arc<Record>, bytes: usize) {
        let mut kept = self.kept();
        if kept
            .records
            .back()
            .is_some_and(|(last, ..)| *last + 1 != seq)
        {
            kept.records.clear();
            kept.bytes = 0;
        }
        kept.records.push_back((seq, record, bytes));
        kept.bytes += bytes;
        while kept.bytes > KEPT_BYTES && kept.records.len() > 1 {
            if let Some((_, _, dropped)) = kept.records.pop_front() {
                kept.bytes -= dropped;
            }
        }
    }

    /// Forgets every record: the store's copies changed (an erasure).
    pub fn clear(&self) {
        let mut kept = self.kept();
        kept.records.clear();
        kept.bytes = 0;
    }

    /// Up to `limit` records after `after`, up to `last`; `None` when the
    /// records right after `after` are not kept.
    pub fn after(&self, after: u64, last: u64, limit: usize) -> Option<Vec<(u64, Arc<Record>)>> {
        let kept = self.kept();
        let (first, ..) = kept.records.front()?;
        if *first > after + 1 {
            return None;
        }
        let skip = usize::try_from(after + 1 - first).ok()?;
        Some(
            kept.records
                .iter()
                .skip(skip)
                .take_while(|(seq, ..)| *seq <= last)
                .take(limit)
                .map(|(seq, record, _)| (*seq, Arc::clone(record)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::watch::record::Subject;

    fn record() -> Arc<Record> {
        Arc::new(Record {
            subject: Subject::Personas,
            at: 0,
            changes: Vec::new(),
            rule: None,
            ended: false,
        })
    }

    #[test]
    fn kept_records_are_served_without_a_gap_or_not_at_all() {
        let recent = Recent::default();
        assert!(recent.after(0, 10, 5).is_none());
        for seq in 3..=6 {
            recent.push(seq, record(), 10);
        }
        let seqs = |served: Option<Vec<(u64, Arc<Record>)>>| {
            served.map(|records| records.into_iter().map(|(seq, _)| seq).collect::<Vec<_>>())
        };
        assert_eq!(seqs(recent.after(2, 6, 10)), Some(vec![3, 4, 5, 6]));
        assert_eq!(seqs(recent.after(4, 5, 10)), Some(vec![5]));
        assert_eq!(seqs(recent.after(6, 6, 10)), Some(vec![]));
        assert_eq!(seqs(recent.after(1, 6, 10)), None);
        // A record that does not follow starts over.
        recent.push(9, record(), 10);
        assert_eq!(seqs(recent.after(2, 9, 10)), None);
        assert_eq!(seqs(recent.after(8, 9, 10)), Some(vec![9]));
        recent.clear();
        assert!(recent.after(8, 9, 10).is_none());
    }
}
