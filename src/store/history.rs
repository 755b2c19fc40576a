//! The membership change history: the tree `watch`, which the engine's
//! watch evaluator alone writes. The store keeps bytes; the engine encodes
//! them.
//!
//! | key                      | value                                    |
//! |--------------------------|------------------------------------------|
//! | `i`                      | the history's id, u64 big-endian, made on first use |
//! | `p`                      | the last sequence number pruned, u64 big-endian |
//! | `e`                      | cluster mode: the last evaluation time, i64 big-endian |
//! | `t`                      | cluster mode: the log position of the record that evaluated last, u64 big-endian |
//! | `s`                      | cluster mode: a fingerprint of the score bounds of the last evaluation, u64 big-endian |
//! | `m`                      | cluster mode: a fingerprint of the prediction model of the last evaluation, u64 big-endian |
//! | `r` + sequence, u64 big-endian | one record of changes             |
//! | `c` + subject key        | one subject's checkpoint                 |
//!
//! The tree is not part of a backup (see `backup::scan_all`): a restored
//! store starts a new history with a new id, so a cursor of the old one is
//! refused rather than misread. A cluster snapshot carries it: in cluster
//! mode the history is a function of the log, the same on every replica,
//! and a replica that joins from a snapshot goes on with it. Every write
//! reports its changes to the backup tap, for those snapshots.

use super::{storage_error, Store};
use crate::domain::{Error, Result};

/// The name of the tree.
pub(super) const TREE: &str = "watch";
const ID_KEY: &[u8] = b"i";
const PRUNED_KEY: &[u8] = b"p";
const EVALUATED_KEY: &[u8] = b"e";
const EVALUATED_POSITION_KEY: &[u8] = b"t";
const SCORES_KEY: &[u8] = b"s";
const MODEL_KEY: &[u8] = b"m";
const RECORD: u8 = b'r';
const CHECKPOINT: u8 = b'c';

/// One write to the history, applied atomically with the others of a call
/// to [`Store::write_history`].
#[derive(Debug, Clone)]
pub enum HistoryWrite {
    /// Adds the record with this sequence number.
    Record(u64, Vec<u8>),
    /// Replaces a record (an erasure rewrote it).
    Rewrite(u64, Vec<u8>),
    /// Stores a subject's checkpoint.
    Checkpoint(Vec<u8>, Vec<u8>),
    /// Removes a subject's checkpoint.
    DropCheckpoint(Vec<u8>),
    /// Removes the records up to and including this sequence number.
    PruneThrough(u64),
    /// Stores the last evaluation, which one that changed nothing leaves
    /// in no record, with the position of the log record being applied
    /// (cluster mode, where every replica must go on from the same
    /// evaluation, and a restart must know which records came after).
    Evaluated {
        /// The evaluation time.
        at: i64,
        /// A fingerprint of the score bounds it read.
        scores: u64,
        /// A fingerprint of the prediction model it read.
        model: u64,
    },
}

fn u64_of(bytes: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::internal("history: a number that is not 8 bytes"))
}

fn record_key(seq: u64) -> [u8; 9] {
    let mut key = [RECORD; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn checkpoint_key(subject: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(subject.len() + 1);
    key.push(CHECKPOINT);
    key.extend_from_slice(subject);
    key
}

impl Store {
    fn history_tree(&self) -> Result<sled::Tree> {
        self.db.open_tree(TREE).map_err(storage_error)
    }

    /// The history's id, made at random on first use; blocking.
    pub fn history_id(&self) -> Result<u64> {
        let tree = self.history_tree()?;
        if let Some(bytes) = tree.get(ID_KEY).map_err(storage_error)? {
            return u64_of(&bytes);
        }
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|error| {
            Error::internal(format!("no randomness for the history id: {error}"))
        })?;
        // Never 0, so that no cursor of an empty history matches by chance.
        let id = u64::from_be_bytes(bytes).max(1);
        tree.insert(ID_KEY, &id.to_be_bytes())
            .map_err(storage_error)?;
        Ok(id)
    }

    /// The history's id if one was made; blocking.
    pub fn stored_history_id(&self) -> Result<Option<u64>> {
        let tree = self.history_tree()?;
        tree.get(ID_KEY)
            .map_err(storage_error)?
            .map(|bytes| u64_of(&bytes))
            .transpose()
    }

    /// Gives a history that has no id yet the id `id` (cluster mode, where
    /// it comes from the log); blocking.
    pub fn set_history_id(&self, id: u64) -> Result<()> {
        let tree = self.history_tree()?;
        let value = sled::IVec::from(&id.to_be_bytes()[..]);
        tree.insert(ID_KEY, value.clone()).map_err(storage_error)?;
        self.tap.record(&tree, ID_KEY, Some(&value));
        Ok(())
    }

    /// The evaluation time stored with [`HistoryWrite::Evaluated`],
    /// 0 if none was; blocking.
    pub fn history_evaluated_at(&self) -> Result<i64> {
        let tree = self.history_tree()?;
        let Some(bytes) = tree.get(EVALUATED_KEY).map_err(storage_error)? else {
            return Ok(0);
        };
        Ok(u64_of(&bytes)? as i64)
    }

    /// The fingerprint of the prediction model stored with
    /// [`HistoryWrite::Evaluated`], if one was; blocking.
    pub fn history_evaluated_model(&self) -> Result<Option<u64>> {
        let tree = self.history_tree()?;
        tree.get(MODEL_KEY)
            .map_err(storage_error)?
            .map(|bytes| u64_of(&bytes))
            .transpose()
    }

    /// The fingerprint of the score bounds stored with
    /// [`HistoryWrite::Evaluated`], if one was; blocking.
    pub fn history_evaluated_scores(&self) -> Result<Option<u64>> {
        let tree = self.history_tree()?;
        tree.get(SCORES_KEY)
            .map_err(storage_error)?
            .map(|bytes| u64_of(&bytes))
            .transpose()
    }

    /// The log position stored with [`HistoryWrite::Evaluated`], if one
    /// was; blocking.
    pub fn history_evaluated_position(&self) -> Result<Option<u64>> {
        let tree = self.history_tree()?;
        tree.get(EVALUATED_POSITION_KEY)
            .map_err(storage_error)?
            .map(|bytes| u64_of(&bytes))
            .transpose()
    }

    /// The last sequence number pruned (0 when none was), and the last one
    /// stored (the pruned one when none is left); blocking.
    pub fn history_bounds(&self) -> Result<(u64, u64)> {
        let tree = self.history_tree()?;
        let pruned = tree
            .get(PRUNED_KEY)
            .map_err(storage_error)?
            .map(|bytes| u64_of(&bytes))
            .transpose()?
            .unwrap_or(0);
        let last = tree
            .scan_prefix([RECORD])
            .next_back()
            .transpose()
            .map_err(storage_error)?
            .map(|(key, _)| u64_of(&key[1..]))
            .transpose()?
            .unwrap_or(pruned);
        Ok((pruned, last.max(pruned)))
    }

    /// Up to `limit` records after `after`, in order, with their sequence
    /// numbers; blocking.
    pub fn history_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let tree = self.history_tree()?;
        let start = record_key(after.saturating_add(1));
        let end = record_key(u64::MAX);
        tree.range(start..=end)
            .take(limit)
            .map(|entry| {
                let (key, value) = entry.map_err(storage_error)?;
                Ok((u64_of(&key[1..])?, value.to_vec()))
            })
            .collect()
    }

    /// Up to `limit` records after `after`, in order, stopping once they
    /// hold `max_bytes` (one at least); blocking.
    pub fn history_after_within(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let tree = self.history_tree()?;
        let start = record_key(after.saturating_add(1));
        let end = record_key(u64::MAX);
        let mut records = Vec::new();
        let mut bytes = 0;
        for entry in tree.range(start..=end).take(limit) {
            let (key, value) = entry.map_err(storage_error)?;
            bytes += value.len();
            records.push((u64_of(&key[1..])?, value.to_vec()));
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(records)
    }

    /// Every subject's checkpoint, by subject key; blocking.
    pub fn history_checkpoints(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let tree = self.history_tree()?;
        tree.scan_prefix([CHECKPOINT])
            .map(|entry| {
                let (key, value) = entry.map_err(storage_error)?;
                Ok((key[1..].to_vec(), value.to_vec()))
            })
            .collect()
    }

    /// The bytes of the records, keys included; blocking: a scan.
    pub fn history_bytes(&self) -> Result<u64> {
        let tree = self.history_tree()?;
        let mut bytes = 0u64;
        for entry in tree.scan_prefix([RECORD]) {
            let (key, value) = entry.map_err(storage_error)?;
            bytes += (key.len() + value.len()) as u64;
        }
        Ok(bytes)
    }

    /// Applies `writes` atomically, and reports them to the backup tap;
    /// blocking. Not yet on disk: await [`Store::flushed`] before telling
    /// anyone.
    pub fn write_history(&self, writes: Vec<HistoryWrite>) -> Result<()> {
        let tree = self.history_tree()?;
        let mut pruned_through = None;
        let mut changes: Vec<(sled::IVec, Option<sled::IVec>)> = Vec::new();
        for write in writes {
            match write {
                HistoryWrite::Record(seq, bytes) | HistoryWrite::Rewrite(seq, bytes) => {
                    changes.push((record_key(seq)[..].into(), Some(bytes.into())));
                }
                HistoryWrite::Checkpoint(subject, bytes) => {
                    changes.push((checkpoint_key(&subject).into(), Some(bytes.into())));
                }
                HistoryWrite::DropCheckpoint(subject) => {
                    changes.push((checkpoint_key(&subject).into(), None));
                }
                HistoryWrite::PruneThrough(seq) => pruned_through = Some(seq),
                HistoryWrite::Evaluated { at, scores, model } => {
                    changes.push((EVALUATED_KEY.into(), Some(at.to_be_bytes()[..].into())));
                    changes.push((SCORES_KEY.into(), Some(scores.to_be_bytes()[..].into())));
                    changes.push((MODEL_KEY.into(), Some(model.to_be_bytes()[..].into())));
                    if let Some(position) = self.applying() {
                        let position = position.to_be_bytes();
                        changes.push((EVALUATED_POSITION_KEY.into(), Some(position[..].into())));
                    }
                }
            }
        }
        if let Some(seq) = pruned_through {
            for entry in tree.range(record_key(0)..=record_key(seq)) {
                let (key, _) = entry.map_err(storage_error)?;
                changes.push((key, None));
            }
            changes.push((PRUNED_KEY.into(), Some(seq.to_be_bytes()[..].into())));
        }
        let mut batch = sled::Batch::default();
        for (key, value) in &changes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        // A batch applies atomically.
        tree.apply_batch(batch).map_err(storage_error)?;
        self.tap.record_all(
            &tree,
            changes
                .iter()
                .map(|(key, value)| (key.as_ref(), value.as_ref())),
        );
        Ok(())
    }

    /// Resolves once everything written so far is on disk, whatever the
    /// configured durability: a cursor handed out must survive a crash.
    pub async fn flushed(&self) -> Result<()> {
        self.commit.wait().await
    }
}
