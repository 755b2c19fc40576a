//! The tap: while a backup copies the trees, it records every change the
//! store applies, so that the copy can be brought to one moment's state.
//!
//! Only the last value of each key is kept (a key written a thousand
//! times takes the room of one), and the room it takes is bounded: past
//! the bound the tap drops what it holds, stops recording and says so,
//! and the backup fails rather than the server running out of memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sled::IVec;

use super::format::Change;
use crate::domain::{Error, Result};

/// The bytes an entry takes beyond its tree name, key and value: the map
/// node and the handles.
const ENTRY_OVERHEAD_BYTES: usize = 96;

/// The store's side of the tap: where its writes report, whether or not a
/// backup is recording them.
#[derive(Debug, Default)]
pub struct TapSlot {
    /// The recording under way, if a backup is running.
    current: Arc<Mutex<Option<Arc<Recording>>>>,
}

/// What one backup's tap has recorded.
#[derive(Debug)]
struct Recording {
    /// The changes and their size.
    changes: Mutex<Changes>,
    /// The most bytes the changes may take.
    max_bytes: usize,
    /// Records the changes of the change history too (a cluster
    /// snapshot); else they are left out, as the backup leaves the tree.
    history: bool,
    /// Set once the changes outgrew `max_bytes`.
    overflowed: AtomicBool,
    /// Wakes the backup when the tap overflows.
    overflow: tokio::sync::Notify,
}

/// The last value of every key changed, by tree and key; `None` for a
/// delete.
#[derive(Debug, Default)]
struct Changes {
    /// The changes.
    latest: BTreeMap<(IVec, IVec), Option<IVec>>,
    /// The bytes they take: each entry's tree name, key and value, and
    /// [`ENTRY_OVERHEAD_BYTES`].
    bytes: usize,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TapSlot {
    /// Starts recording, for a backup; the caller holds off writes
    /// meanwhile (the engine's writer lock), so that every change applied
    /// after this call is recorded. One backup records at a time.
    pub fn start(&self, max_bytes: usize, history: bool) -> Result<Tap> {
        let mut current = locked(&self.current);
        if current.is_some() {
            return Err(Error::FailedPrecondition(
                "a backup is already running: wait for it to finish".into(),
            ));
        }
        let recording = Arc::new(Recording {
            changes: Mutex::new(Changes::default()),
            max_bytes,
            history,
            overflowed: AtomicBool::new(false),
            overflow: tokio::sync::Notify::new(),
        });
        *current = Some(Arc::clone(&recording));
        Ok(Tap {
            slot: Arc::clone(&self.current),
            recording,
        })
    }

    /// The recording under way, if one is and it records `tree`.
    fn recording_of(&self, tree: &sled::Tree) -> Option<Arc<Recording>> {
        let recording = locked(&self.current).clone()?;
        if !recording.history && super::is_history_tree(&tree.name()) {
            return None;
        }
        Some(recording)
    }

    /// Records that `key` of `tree` now holds `value` (`None`: it was
    /// removed), if a backup is recording; the store calls it after each
    /// change it applies.
    pub fn record(&self, tree: &sled::Tree, key: &[u8], value: Option<&IVec>) {
        let Some(recording) = self.recording_of(tree) else {
            return;
        };
        recording.record(tree.name(), IVec::from(key), value.cloned());
    }

    /// Records several changes of one tree, as [`TapSlot::record`] does.
    pub fn record_all<'a>(
        &self,
        tree: &sled::Tree,
        changes: impl IntoIterator<Item = (&'a [u8], Option<&'a IVec>)>,
    ) {
        let Some(recording) = self.recording_of(tree) else {
            return;
        };
        let name = tree.name();
        for (key, value) in changes {
            recording.record(name.clone(), IVec::from(key), value.cloned());
        }
    }
}

impl Recording {
    fn record(&self, tree: IVec, key: IVec, value: Option<IVec>) {
        if self.overflowed.load(Ordering::Acquire) {
            return;
        }
        let mut changes = locked(&self.changes);
        let key_bytes = ENTRY_OVERHEAD_BYTES + tree.len() + key.len();
        let value_bytes = value.as_ref().map_or(0, |value| value.len());
        match changes.latest.insert((tree, key), value) {
            // The key was recorded before: only its value's size changes.
            Some(old) => {
                changes.bytes = changes.bytes + value_bytes - old.map_or(0, |old| old.len());
            }
            None => changes.bytes += key_bytes + value_bytes,
        }
        if changes.bytes > self.max_bytes {
            *changes = Changes::default();
            self.overflowed.store(true, Ordering::Release);
            self.overflow.notify_one();
        }
    }
}

/// A backup's hold on the tap: recording lasts until it is taken or
/// dropped, so a backup that stops for any reason stops the recording.
#[derive(Debug)]
pub struct Tap {
    /// The store's slot, to clear when the recording ends.
    slot: Arc<Mutex<Option<Arc<Recording>>>>,
    /// This backup's recording.
    recording: Arc<Recording>,
}

/// The changes a tap recorded, in tree and key order.
#[derive(Debug)]
pub struct TappedChanges {
    /// The last value of every key changed; `None` for a delete.
    latest: BTreeMap<(IVec, IVec), Option<IVec>>,
}

impl Tap {
    /// The error of a backup whose tap overflowed.
    fn overflow_error(&self) -> Error {
        Error::ResourceExhausted {
            subject: "backup".into(),
            description: format!(
                "the server took more than {} MiB of writes while the backup ran (--backup-max-pending-mb): retry it when writes are fewer, or raise the limit",
                self.recording.max_bytes / (1024 * 1024)
            ),
        }
    }

    /// Fails once the tap has overflowed.
    pub fn check(&self) -> Result<()> {
        if self.recording.overflowed.load(Ordering::Acquire) {
            return Err(self.overflow_error());
        }
        Ok(())
    }

    /// Resolves with the overflow error once the tap overflows.
    pub async fn overflowed(&self) -> Error {
        while !self.recording.overflowed.load(Ordering::Acquire) {
            self.recording.overflow.notified().await;
        }
        self.overflow_error()
    }

    /// Stops recording and returns what was recorded; the caller holds
    /// off writes meanwhile, so that the changes are exactly those applied
    /// since [`TapSlot::start`].
    pub fn take(self) -> Result<TappedChanges> {
        self.check()?;
        let changes = std::mem::take(&mut *locked(&self.recording.changes));
        Ok(TappedChanges {
            latest: changes.latest,
        })
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let mut current = locked(&self.slot);
        if current
            .as_ref()
            .is_some_and(|recording| Arc::ptr_eq(recording, &self.recording))
        {
            *current = None;
        }
    }
}

impl TappedChanges {
    /// How many keys changed.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Whether no key changed.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// The changes, in tree and key order.
    pub fn iter(&self) -> impl Iterator<Item = Change<'_>> {
        self.latest.iter().map(|((tree, key), value)| Change {
            tree,
            key,
            value: value.as_deref(),
        })
    }
}
