//! Backups of the store: what the engine needs to copy a running store
//! (a tap on its writes and a scan of its trees), the backup file format,
//! and the offline restore into an empty data directory.
//!
//! - `format`: the file format, its encoder and its checking reader.
//! - `tap`: the record of the changes applied while a backup runs.
//!
//! A backup is every tree of the database, whatever their names, so a tree
//! added later is backed up without a change here; every store method that
//! writes reports its change to the tap after applying it.

mod format;
mod tap;

use std::fs::File;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::Path;

pub use format::{read_backup, BackupEncoder, BackupSummary, Change, FILE_VERSION, MAGIC};
pub use tap::{Tap, TapSlot, TappedChanges};

use super::{storage_error, Store, FORMAT_VERSION};
use crate::domain::{Error, Result};

/// The store format backups of this build hold.
pub const STORE_FORMAT: u8 = FORMAT_VERSION;

impl Store {
    /// Starts recording every change applied from now on, for a backup; the
    /// caller holds off writes meanwhile (the engine's writer lock). Past
    /// `max_bytes` of recorded changes the tap overflows and the backup
    /// fails. One backup at a time: a second is FAILED_PRECONDITION.
    pub fn start_tap(&self, max_bytes: usize) -> Result<Tap> {
        self.tap.start(max_bytes)
    }

    /// Calls `visit` with every key of every tree, tree by tree in name
    /// order; blocking. The scan is not a snapshot: a key changed while it
    /// runs may be seen before or after its change.
    pub fn scan_all(&self, mut visit: impl FnMut(Change<'_>) -> Result<()>) -> Result<()> {
        let default_tree = self.db.name();
        let mut names = self.db.tree_names();
        names.sort();
        for name in names.into_iter().filter(|name| *name != default_tree) {
            let tree = self.db.open_tree(&name).map_err(storage_error)?;
            for entry in tree.iter() {
                let (key, value) = entry.map_err(storage_error)?;
                visit(Change {
                    tree: &name,
                    key: &key,
                    value: Some(&value),
                })?;
            }
        }
        Ok(())
    }
}

/// The keys of each tree after a restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// What the file held.
    pub file: BackupSummary,
    /// Each tree's name and its number of keys, in name order.
    pub trees: Vec<(String, usize)>,
}

/// Checks that the backup file at `path` is complete and intact, and says
/// what it holds; reads it whole.
pub fn verify_file(path: &Path) -> Result<BackupSummary> {
    read_backup(open(path)?, STORE_FORMAT, |_| Ok(()))
}

fn open(path: &Path) -> Result<File> {
    File::open(path)
        .map_err(|error| Error::internal(format!("cannot open {}: {error}", path.display())))
}

/// Whether `dir` is missing or holds nothing.
fn is_empty_dir(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(error) => Err(Error::internal(format!(
            "cannot read {}: {error}",
            dir.display()
        ))),
    }
}

/// Restores the backup file `file` into `data_dir`, which must be missing
/// or empty: checks the whole file first and writes nothing if it is not
/// a complete backup, then writes every tree, flushes, and says what the
/// trees hold. A restore that fails while writing leaves `data_dir` empty
/// again. Blocking; the server must not be running on `data_dir`.
pub fn restore(file: &Path, data_dir: &Path) -> Result<RestoreSummary> {
    if !is_empty_dir(data_dir)? {
        return Err(Error::FailedPrecondition(format!(
            "{} is not empty: restore only into a new or empty data directory",
            data_dir.display()
        )));
    }
    verify_file(file)?;
    // The directory holds personal data: for the service's user only.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|error| {
            Error::internal(format!(
                "cannot create the data directory {}: {error}",
                data_dir.display()
            ))
        })?;
    let written = write_trees(file, data_dir);
    if written.is_err() {
        empty_dir(data_dir);
    }
    written
}

/// Applies the records of `file` to a new database in `data_dir`.
fn write_trees(file: &Path, data_dir: &Path) -> Result<RestoreSummary> {
    let db = sled::Config::new()
        .path(data_dir)
        .open()
        .map_err(storage_error)?;
    let mut open_tree: Option<(Vec<u8>, sled::Tree)> = None;
    let summary = read_backup(open(file)?, STORE_FORMAT, |change| {
        let tree = match &open_tree {
            Some((name, tree)) if name.as_slice() == change.tree => tree,
            _ => {
                let tree = db.open_tree(change.tree).map_err(storage_error)?;
                &open_tree.insert((change.tree.to_vec(), tree)).1
            }
        };
        match change.value {
            Some(value) => tree.insert(change.key, value).map(drop),
            None => tree.remove(change.key).map(drop),
        }
        .map_err(storage_error)
    })?;
    db.flush().map_err(storage_error)?;
    let default_tree = db.name();
    let mut trees = Vec::new();
    let mut names = db.tree_names();
    names.sort();
    for name in names.into_iter().filter(|name| *name != default_tree) {
        let tree = db.open_tree(&name).map_err(storage_error)?;
        trees.push((String::from_utf8_lossy(&name).into_owned(), tree.len()));
    }
    Ok(RestoreSummary {
        file: summary,
        trees,
    })
}

/// Removes everything in `dir`, after a failed restore into it (it was
/// empty before); what cannot be removed is logged.
fn empty_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(error) = removed {
            tracing::warn!(path = %path.display(), %error, "cannot remove a file of the failed restore");
        }
    }
}
