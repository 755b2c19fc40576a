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
        self.tap.start(max_bytes, false)
    }

    /// [`Store::start_tap`], recording the change history's changes too,
    /// for a cluster snapshot (see [`Store::scan_trees`]).
    pub fn start_tap_with_history(&self, max_bytes: usize) -> Result<Tap> {
        self.tap.start(max_bytes, true)
    }

    /// Calls `visit` with every key of every tree, tree by tree in name
    /// order; blocking. The scan is not a snapshot: a key changed while it
    /// runs may be seen before or after its change.
    pub fn scan_all(&self, visit: impl FnMut(Change<'_>) -> Result<()>) -> Result<()> {
        self.scan_trees(false, visit)
    }

    /// [`Store::scan_all`], with the change history when `with_history`
    /// (a cluster snapshot: see `history`).
    pub fn scan_trees(
        &self,
        with_history: bool,
        mut visit: impl FnMut(Change<'_>) -> Result<()>,
    ) -> Result<()> {
        let default_tree = self.db.name();
        let mut names = self.db.tree_names();
        names.sort();
        // The change history stays behind, but in a cluster snapshot: a
        // restored store starts its own.
        for name in names
            .into_iter()
            .filter(|name| *name != default_tree && (with_history || !is_history_tree(name)))
        {
            let tree = self.db.open_tree(&name).map_err(storage_error)?;
            for entry in tree.iter() {
                let (key, value) = entry.map_err(storage_error)?;
                // The index image's token holds for this data directory
                // only, and only from a clean shutdown to the next start.
                if name == "meta" && key == super::INDEX_IMAGE_KEY.as_bytes() {
                    continue;
                }
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

/// Whether `tree` names the tree of the change history, which only a
/// cluster snapshot holds.
pub fn is_history_tree(tree: &[u8]) -> bool {
    tree == super::history::TREE.as_bytes()
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

/// The log position a backup file holds (cluster mode), after checking
/// the whole file; `None` for a backup of a store that applied no log.
pub fn log_position_of(path: &Path) -> Result<Option<u64>> {
    let mut position = None;
    read_backup(open(path)?, STORE_FORMAT, |change| {
        if change.tree == b"meta" && change.key == super::POSITION_KEY.as_bytes() {
            position = change.value.map(super::batch_seq).transpose()?;
        }
        Ok(())
    })?;
    Ok(position)
}

/// Whether `dir` is missing or holds nothing.
pub fn is_empty_dir(dir: &Path) -> Result<bool> {
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
/// a complete backup, then writes every tree into a staging directory
/// beside `data_dir`, flushes, renames it into place, and says what the
/// trees hold. So `data_dir` holds a whole store or none: a restore that
/// fails or is killed while writing leaves only the staging directory,
/// which the next restore removes. The new store compresses its pages if
/// `compress` (see [`super::StoreOptions::compress`]). Blocking; the server
/// must not be running on `data_dir`.
pub fn restore(file: &Path, data_dir: &Path, compress: bool) -> Result<RestoreSummary> {
    if !is_empty_dir(data_dir)? {
        return Err(Error::FailedPrecondition(format!(
            "{} is not empty: restore only into a new or empty data directory",
            data_dir.display()
        )));
    }
    verify_file(file)?;
    let (parent, staging) = staging_dir(data_dir)?;
    let io_error = |what: &str, path: &Path, error: std::io::Error| {
        Error::internal(format!("cannot {what} {}: {error}", path.display()))
    };
    // What a killed restore left behind.
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|error| io_error("remove the old staging directory", &staging, error))?;
    }
    // The directory holds personal data: for the service's user only.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&staging)
        .map_err(|error| io_error("create the staging directory", &staging, error))?;
    let summary = match write_trees(file, &staging, compress) {
        Ok(summary) => summary,
        Err(error) => {
            if let Err(removed) = std::fs::remove_dir_all(&staging) {
                tracing::warn!(path = %staging.display(), error = %removed, "cannot remove the staging directory of the failed restore");
            }
            return Err(error);
        }
    };
    // An empty directory is replaced whole; a missing one is made.
    std::fs::rename(&staging, data_dir)
        .map_err(|error| io_error("move the restored store to", data_dir, error))?;
    File::open(&parent)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| io_error("sync the directory", &parent, error))?;
    Ok(summary)
}

/// The parent of `data_dir` and the staging directory of a restore into
/// it, beside it so that a rename moves it into place.
fn staging_dir(data_dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let name = data_dir.file_name().ok_or_else(|| {
        Error::invalid(
            "data_dir",
            format!("{} names no directory to restore into", data_dir.display()),
        )
    })?;
    let parent = match data_dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut staging = std::ffi::OsString::from(".");
    staging.push(name);
    staging.push(".restoring");
    Ok((parent.clone(), parent.join(staging)))
}

/// Applies the records of `file` to a new database in `data_dir`.
fn write_trees(file: &Path, data_dir: &Path, compress: bool) -> Result<RestoreSummary> {
    let (db, _) = super::open_db(|| sled::Config::new().path(data_dir), compress)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::persona::default_catalog;
    use crate::domain::{ActivityRecord, Customer, CustomerId, Location, Profile, Timestamp};
    use crate::store::tests::options;

    fn customer(id: &str, city: &str) -> Customer {
        let at = Timestamp::from_parts(1_700_000_000, 0).unwrap();
        Customer {
            id: CustomerId::parse(id).unwrap(),
            profile: Profile {
                location: Location {
                    city: city.into(),
                    ..Location::default()
                },
                ..Profile::default()
            },
            create_time: at,
            update_time: at,
            create_request_id: None,
        }
    }

    fn put(store: &Store, customers: &[(&str, &str)]) {
        store
            .write(|writes| {
                for (id, city) in customers {
                    writes.put(customer(id, city)).unwrap();
                }
                Ok(())
            })
            .unwrap();
    }

    /// Every key of every tree, with its value.
    fn contents(store: &Store) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let mut found = Vec::new();
        store
            .scan_all(|change| {
                found.push((
                    change.tree.to_vec(),
                    change.key.to_vec(),
                    change.value.unwrap().to_vec(),
                ));
                Ok(())
            })
            .unwrap();
        found
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_restore_killed_midway_leaves_no_store_and_the_next_one_clears_its_leftovers() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&options(&dir.path().join("live"))).unwrap();
        put(&store, &[("c-1", "Ankara"), ("c-2", "Izmir")]);
        let tap = store.start_tap(1024 * 1024).unwrap();
        let mut encoder = BackupEncoder::new(STORE_FORMAT);
        let mut file = Vec::new();
        store
            .scan_all(|change| {
                encoder.push(change);
                file.extend(encoder.take());
                Ok(())
            })
            .unwrap();
        for change in tap.take().unwrap().iter() {
            encoder.push(change);
        }
        file.extend(encoder.finish().0);
        let path = dir.path().join("backup");
        std::fs::write(&path, &file).unwrap();

        // What a restore killed while writing leaves: its staging directory
        // only, never a half-written data directory.
        let target = dir.path().join("restored");
        let leftover = dir.path().join(".restored.restoring");
        std::fs::create_dir(&leftover).unwrap();
        std::fs::write(leftover.join("db"), b"half written").unwrap();
        assert!(!target.exists());

        // Restored compressed, and opened by a server that would make a
        // new store uncompressed: the store keeps how it was made.
        restore(&path, &target, true).unwrap();
        assert!(!leftover.exists());
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let restored = Store::open(&options(&target)).unwrap();
        assert!(restored.compressed());
        assert_eq!(contents(&restored), contents(&store));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_backup_restores_the_store_as_it_was_when_the_tap_was_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&options(&dir.path().join("live"))).unwrap();
        let ids: Vec<String> = (0..200).map(|i| format!("c-{i:03}")).collect();
        for chunk in ids.chunks(50) {
            let batch: Vec<(&str, &str)> = chunk.iter().map(|id| (id.as_str(), "Ankara")).collect();
            put(&store, &batch);
        }
        for _ in 0..3 {
            store
                .append_activity(&ActivityRecord::default(), &[], &[])
                .unwrap();
        }

        let tap = store.start_tap(1024 * 1024).unwrap();
        let mut encoder = BackupEncoder::new(STORE_FORMAT);
        let mut file = Vec::new();
        let mut scanned = 0;
        store
            .scan_all(|change| {
                encoder.push(change);
                scanned += 1;
                // Midway through the customers, change keys behind the
                // scan, ahead of it, and new ones, with every kind of write.
                if change.tree == b"customers" && change.key == b"c-100" {
                    put(&store, &[("c-010", "Izmir"), ("c-150", "Izmir")]);
                    put(&store, &[("c-199", "Bursa")]);
                    put(&store, &[("a-new", "Van"), ("z-new", "Van")]);
                    store
                        .write(|writes| {
                            writes.delete(&CustomerId::parse("c-020").unwrap());
                            Ok(())
                        })
                        .unwrap();
                    store
                        .erase_customer(&CustomerId::parse("c-160").unwrap(), 160, &[1])
                        .unwrap();
                    store
                        .append_activity(&ActivityRecord::default(), &[], &[])
                        .unwrap();
                    store.put_catalog(&default_catalog(7)).unwrap();
                }
                file.extend(encoder.take());
                Ok(())
            })
            .unwrap();
        assert!(scanned > 200);
        // After the scan, before the tap is taken: in the backup.
        put(&store, &[("c-000", "Adana")]);
        let changes = tap.take().unwrap();
        assert!(!changes.is_empty());
        for change in changes.iter() {
            encoder.push(change);
        }
        let (last, summary) = encoder.finish();
        file.extend(last);
        let expected = contents(&store);
        // After the tap is taken: not in the backup.
        put(&store, &[("c-001", "Mersin")]);

        let path = dir.path().join("backup");
        std::fs::write(&path, &file).unwrap();
        let restored_dir = dir.path().join("restored");
        let restored = restore(&path, &restored_dir, false).unwrap();
        assert_eq!(restored.file, summary);
        let restored = Store::open(&options(&restored_dir)).unwrap();
        assert_eq!(contents(&restored), expected);
        assert_eq!(
            restored
                .get_customer(&CustomerId::parse("c-001").unwrap())
                .unwrap()
                .unwrap()
                .profile
                .location
                .city,
            "Ankara"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_tap_over_its_bound_fails_the_backup_and_one_runs_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&options(dir.path())).unwrap();
        let tap = store.start_tap(4096).unwrap();
        assert!(matches!(
            store.start_tap(4096),
            Err(Error::FailedPrecondition(_))
        ));
        // The same key again and again takes the room of one.
        for _ in 0..100 {
            put(&store, &[("c-1", "Ankara")]);
        }
        tap.check().unwrap();
        let ids: Vec<String> = (0..100).map(|i| format!("c-{i:03}")).collect();
        let batch: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "Ankara")).collect();
        put(&store, &batch);
        assert!(matches!(tap.check(), Err(Error::ResourceExhausted { .. })));
        assert!(matches!(tap.take(), Err(Error::ResourceExhausted { .. })));
        // Dropped with the backup: the next one may start.
        drop(store.start_tap(4096).unwrap());
        store.start_tap(4096).unwrap();
    }
}
