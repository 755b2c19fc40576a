//! The key that authenticates page tokens: 32 random bytes, made when the
//! store is first opened and kept in the `meta` tree, so that tokens stay
//! valid across restarts. It never leaves the server.

use std::fmt;

use crate::domain::{Error, Result};

/// The key of the page-token key in the `meta` tree.
pub(super) const META_KEY: &str = "page_token_key";
/// The length of the key, in bytes.
const KEY_BYTES: usize = 32;

/// The page-token key. Its `Debug` does not show it, so that no log can.
#[derive(Clone, PartialEq, Eq)]
pub struct PageTokenKey([u8; KEY_BYTES]);

impl PageTokenKey {
    /// The key's bytes, for the MAC.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key made of these bytes, as a cluster's first record carries it.
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        PageTokenKey(bytes)
    }

    /// The key's bytes, to be carried in a cluster's first record.
    pub fn to_bytes(&self) -> [u8; KEY_BYTES] {
        self.0
    }

    /// A key of `byte` repeated, for tests.
    #[cfg(test)]
    pub(crate) fn repeated(byte: u8) -> Self {
        PageTokenKey([byte; KEY_BYTES])
    }
}

impl fmt::Debug for PageTokenKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("PageTokenKey(..)")
    }
}

/// The stored key, or a new random one, stored first.
pub(super) fn load_or_create(meta: &sled::Tree) -> Result<PageTokenKey> {
    if let Some(stored) = meta.get(META_KEY).map_err(super::storage_error)? {
        let key = <[u8; KEY_BYTES]>::try_from(stored.as_ref()).map_err(|_| {
            Error::internal(format!(
                "the stored page-token key has {} bytes, not {KEY_BYTES}",
                stored.len()
            ))
        })?;
        return Ok(PageTokenKey(key));
    }
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key).map_err(|error| {
        Error::internal(format!("no randomness for the page-token key: {error}"))
    })?;
    meta.insert(META_KEY, &key[..])
        .map_err(super::storage_error)?;
    Ok(PageTokenKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_kept() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let meta = db.open_tree("meta").unwrap();
        let made = load_or_create(&meta).unwrap();
        assert_ne!(made.bytes(), [0; KEY_BYTES]);
        assert_eq!(format!("{made:?}"), "PageTokenKey(..)");
        assert_eq!(load_or_create(&meta).unwrap(), made);
        let other = sled::Config::new().temporary(true).open().unwrap();
        let other = load_or_create(&other.open_tree("meta").unwrap()).unwrap();
        assert_ne!(other, made, "each store has a key of its own");
    }
}
