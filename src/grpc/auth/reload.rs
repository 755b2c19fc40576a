//! A configuration file that is read again when it changes on disk (a
//! Kubernetes Secret updated in place, a key set rotated). The request
//! path only reads the parsed value; a background task looks at the file's
//! modification time and size once a period and swaps in a new value. A
//! changed file that does not parse keeps the old value and logs an error.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use anyhow::Context as _;

/// What tells one version of a file from the next.
type Fingerprint = (SystemTime, u64);

/// A file's parsed contents, replaced when the file changes.
pub(super) struct Watched<T> {
    /// The file.
    path: PathBuf,
    /// What the file holds, for the log: "access file", "JWKS".
    what: &'static str,
    /// Parses the file's bytes.
    parse: fn(&[u8]) -> anyhow::Result<T>,
    /// The value in force.
    current: RwLock<Arc<T>>,
    /// The version of the file last read, good or bad.
    seen: Mutex<Option<Fingerprint>>,
}

fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let metadata = fs::metadata(path)?;
    Ok((metadata.modified()?, metadata.len()))
}

impl<T> Watched<T> {
    /// Reads and parses `path`; an error here stops the server from starting.
    pub(super) fn load(
        path: &Path,
        what: &'static str,
        parse: fn(&[u8]) -> anyhow::Result<T>,
    ) -> anyhow::Result<Self> {
        let seen = fingerprint(path).ok();
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let value = parse(&bytes).with_context(|| format!("{what} {}", path.display()))?;
        Ok(Watched {
            path: path.to_path_buf(),
            what,
            parse,
            current: RwLock::new(Arc::new(value)),
            seen: Mutex::new(seen),
        })
    }

    /// The value in force.
    pub(super) fn current(&self) -> Arc<T> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        Arc::clone(&current)
    }

    /// Reads the file again if it changed since it was last read; true when
    /// a new value took effect. Blocks on file I/O.
    pub(super) fn reload_if_changed(&self) -> bool {
        let now = match fingerprint(&self.path) {
            Ok(now) => now,
            Err(error) => {
                let mut seen = self
                    .seen
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                if seen.take().is_some() {
                    tracing::error!(file = %self.path.display(), what = self.what, %error, "cannot read a changed file, keeping the last one read");
                }
                return false;
            }
        };
        {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if *seen == Some(now) {
                return false;
            }
            *seen = Some(now);
        }
        let parsed = fs::read(&self.path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| (self.parse)(&bytes));
        match parsed {
            Ok(value) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(value);
                tracing::info!(file = %self.path.display(), what = self.what, "file changed, reloaded");
                true
            }
            Err(error) => {
                tracing::error!(file = %self.path.display(), what = self.what, error = format!("{error:#}"), "changed file refused, keeping the last good one");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(bytes: &[u8]) -> anyhow::Result<u32> {
        Ok(std::str::from_utf8(bytes)?.trim().parse()?)
    }

    #[test]
    fn a_changed_file_takes_effect_and_a_bad_one_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        fs::write(&path, "1").unwrap();
        let watched = Watched::load(&path, "number", number).unwrap();
        assert_eq!(*watched.current(), 1);
        assert!(!watched.reload_if_changed());

        fs::write(&path, "22").unwrap();
        assert!(watched.reload_if_changed());
        assert_eq!(*watched.current(), 22);

        fs::write(&path, "not a number").unwrap();
        assert!(!watched.reload_if_changed());
        assert_eq!(*watched.current(), 22);

        fs::remove_file(&path).unwrap();
        assert!(!watched.reload_if_changed());
        fs::write(&path, "333").unwrap();
        assert!(watched.reload_if_changed());
        assert_eq!(*watched.current(), 333);
    }

    #[test]
    fn a_bad_file_at_start_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        fs::write(&path, "x").unwrap();
        assert!(Watched::load(&path, "number", number).is_err());
        assert!(Watched::load(&dir.path().join("missing"), "number", number).is_err());
    }
}
