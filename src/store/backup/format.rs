//! The backup file format, version 1: a header, records, and a trailer
//! with counts and a SHA-256 checksum. All integers are big-endian.
//!
//! | part    | bytes                                                                        |
//! |---------|------------------------------------------------------------------------------|
//! | header  | the magic `segmentd-backup\n` (16 bytes), the file format version (u32, `1`), the store format version (u8) |
//! | put     | `0x01`, tree name (u16 length + bytes), key (u32 length + bytes), value (u32 length + bytes) |
//! | delete  | `0x02`, tree name (u16 length + bytes), key (u32 length + bytes)             |
//! | trailer | `0xFF`, puts (u64), deletes (u64), SHA-256 of every byte before the checksum (32 bytes) |
//!
//! Records apply in file order onto empty trees: a put sets a key, a delete
//! removes it, a later record wins. Nothing may follow the trailer. A
//! reader checks the counts and the checksum before it trusts a file; one
//! that ends early, carries bytes past its trailer, or whose checksum does
//! not match is refused.

use std::io::{BufReader, Read};

use sha2::{Digest as _, Sha256};

use crate::domain::{Error, Result};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 16] = b"segmentd-backup\n";
/// The version of the file format this build writes and reads.
pub const FILE_VERSION: u32 = 1;

/// Record kind: a put of a key.
const PUT: u8 = 0x01;
/// Record kind: a delete of a key.
const DELETE: u8 = 0x02;
/// Record kind: the trailer.
const TRAILER: u8 = 0xFF;
/// The longest tree name a reader accepts.
const MAX_TREE_NAME_BYTES: usize = 1024;
/// The longest key or value a reader accepts: far above any record the
/// store writes, so a longer one means a corrupt length.
const MAX_FIELD_BYTES: u64 = 256 * 1024 * 1024;

/// One change of a tree, as a backup records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    /// The tree's name.
    pub tree: &'a [u8],
    /// The key.
    pub key: &'a [u8],
    /// The value a put sets; `None` for a delete.
    pub value: Option<&'a [u8]>,
}

/// What a backup file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupSummary {
    /// Put records.
    pub puts: u64,
    /// Delete records.
    pub deletes: u64,
    /// The file's length in bytes.
    pub bytes: u64,
}

/// The refusal of a file that is not a complete backup.
fn refused(detail: impl std::fmt::Display) -> Error {
    Error::FailedPrecondition(format!("not a complete segmentd backup: {detail}"))
}

/// Writes a backup file a chunk at a time: records go into a buffer that
/// the caller takes from as it fills.
#[derive(Debug)]
pub struct BackupEncoder {
    /// Encoded bytes not yet taken.
    buffer: Vec<u8>,
    /// The checksum of every byte taken so far.
    hasher: Sha256,
    /// The counts so far.
    summary: BackupSummary,
}

impl BackupEncoder {
    /// An encoder whose buffer holds the header of a file of store format
    /// `store_format`.
    pub fn new(store_format: u8) -> Self {
        let mut buffer = Vec::with_capacity(64 * 1024);
        buffer.extend_from_slice(MAGIC);
        buffer.extend_from_slice(&FILE_VERSION.to_be_bytes());
        buffer.push(store_format);
        BackupEncoder {
            buffer,
            hasher: Sha256::new(),
            summary: BackupSummary::default(),
        }
    }

    /// Appends a record of `change`.
    pub fn push(&mut self, change: Change<'_>) {
        let kind = if change.value.is_some() { PUT } else { DELETE };
        self.buffer.push(kind);
        // Tree names are short: sled's and ours.
        let tree_len = u16::try_from(change.tree.len()).unwrap_or(u16::MAX);
        self.buffer.extend_from_slice(&tree_len.to_be_bytes());
        self.buffer
            .extend_from_slice(&change.tree[..usize::from(tree_len)]);
        self.field(change.key);
        match change.value {
            Some(value) => {
                self.field(value);
                self.summary.puts += 1;
            }
            None => self.summary.deletes += 1,
        }
    }

    /// Appends a length-prefixed key or value.
    fn field(&mut self, bytes: &[u8]) {
        self.buffer
            .extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        self.buffer.extend_from_slice(bytes);
    }

    /// How many encoded bytes wait to be taken.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Takes the first `max` bytes encoded so far (all of them if fewer).
    pub fn take_front(&mut self, max: usize) -> Vec<u8> {
        if self.buffer.len() <= max {
            return self.take();
        }
        let rest = self.buffer.split_off(max);
        let front = std::mem::replace(&mut self.buffer, rest);
        self.hasher.update(&front);
        self.summary.bytes += front.len() as u64;
        front
    }

    /// Takes the bytes encoded so far.
    pub fn take(&mut self) -> Vec<u8> {
        self.hasher.update(&self.buffer);
        self.summary.bytes += self.buffer.len() as u64;
        std::mem::take(&mut self.buffer)
    }

    /// Appends the trailer and returns the last bytes of the file, with
    /// what the file holds.
    pub fn finish(mut self) -> (Vec<u8>, BackupSummary) {
        self.buffer.push(TRAILER);
        self.buffer
            .extend_from_slice(&self.summary.puts.to_be_bytes());
        self.buffer
            .extend_from_slice(&self.summary.deletes.to_be_bytes());
        let mut last = self.take();
        let checksum = self.hasher.finalize();
        last.extend_from_slice(&checksum);
        self.summary.bytes += checksum.len() as u64;
        (last, self.summary)
    }
}

/// A reader that hashes what it reads and knows where it is.
struct HashingReader<R> {
    /// The file.
    inner: BufReader<R>,
    /// The checksum of every byte read so far.
    hasher: Sha256,
    /// Bytes read so far.
    position: u64,
}

impl<R: Read> HashingReader<R> {
    /// Fills `buf`, or fails naming what the file ended inside of.
    fn exact(&mut self, buf: &mut [u8], inside: &str) -> Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(refused(format!(
                        "the file is truncated: it ends at byte {} inside {inside}",
                        self.position + filled as u64
                    )))
                }
                Ok(read) => filled += read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(Error::internal(format!("cannot read the file: {error}")))
                }
            }
        }
        self.hasher.update(&buf[..]);
        self.position += buf.len() as u64;
        Ok(())
    }

    fn byte(&mut self, inside: &str) -> Result<u8> {
        let mut buf = [0; 1];
        self.exact(&mut buf, inside)?;
        Ok(buf[0])
    }

    fn u16(&mut self, inside: &str) -> Result<u16> {
        let mut buf = [0; 2];
        self.exact(&mut buf, inside)?;
        Ok(u16::from_be_bytes(buf))
    }

    fn u32(&mut self, inside: &str) -> Result<u32> {
        let mut buf = [0; 4];
        self.exact(&mut buf, inside)?;
        Ok(u32::from_be_bytes(buf))
    }

    fn u64(&mut self, inside: &str) -> Result<u64> {
        let mut buf = [0; 8];
        self.exact(&mut buf, inside)?;
        Ok(u64::from_be_bytes(buf))
    }

    /// Reads `len` bytes into `into`, which it clears first.
    fn bytes(&mut self, len: u64, into: &mut Vec<u8>, inside: &str) -> Result<()> {
        if len > MAX_FIELD_BYTES {
            return Err(refused(format!(
                "{inside} at byte {} claims {len} bytes: the file is corrupt",
                self.position
            )));
        }
        // Read as the bytes come, so that a corrupt length costs no more
        // memory than the file holds.
        into.clear();
        let read = (&mut self.inner)
            .take(len)
            .read_to_end(into)
            .map_err(|error| Error::internal(format!("cannot read the file: {error}")))?
            as u64;
        if read < len {
            return Err(refused(format!(
                "the file is truncated: it ends at byte {} inside {inside}",
                self.position + read
            )));
        }
        self.hasher.update(&into[..]);
        self.position += len;
        Ok(())
    }

    /// Whether the file ends here.
    fn at_end(&mut self) -> Result<bool> {
        let mut buf = [0; 1];
        loop {
            match self.inner.read(&mut buf) {
                Ok(read) => return Ok(read == 0),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(Error::internal(format!("cannot read the file: {error}")))
                }
            }
        }
    }
}

/// Reads a backup file of a store format from 1 to `store_format` from
/// `input`, calling `visit` with each record in order, and checks its
/// trailer. A store restored from an older format is migrated when it is
/// first opened. Records reach `visit` before the
/// checksum is checked: to trust a file before acting on it, read it once
/// with a `visit` that does nothing, then again.
pub fn read_backup<R: Read>(
    input: R,
    store_format: u8,
    mut visit: impl FnMut(Change<'_>) -> Result<()>,
) -> Result<BackupSummary> {
    let mut reader = HashingReader {
        inner: BufReader::with_capacity(256 * 1024, input),
        hasher: Sha256::new(),
        position: 0,
    };
    let mut magic = [0; 16];
    reader.exact(&mut magic, "the header")?;
    if &magic != MAGIC {
        return Err(refused("it does not begin with the segmentd backup magic"));
    }
    let version = reader.u32("the header")?;
    if version != FILE_VERSION {
        return Err(refused(format!(
            "file format version {version} is not supported by this build (it reads version {FILE_VERSION})"
        )));
    }
    let found_store_format = reader.byte("the header")?;
    if !(1..=store_format).contains(&found_store_format) {
        return Err(refused(format!(
            "it holds store format {found_store_format}, and this build reads store formats 1 to \
             {store_format}"
        )));
    }
    let mut summary = BackupSummary::default();
    let (mut tree, mut key, mut value) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let at = reader.position;
        match reader.byte("a record")? {
            TRAILER => break,
            kind @ (PUT | DELETE) => {
                let tree_len = reader.u16("a record")?;
                if usize::from(tree_len) > MAX_TREE_NAME_BYTES {
                    return Err(refused(format!(
                        "the record at byte {at} names a tree of {tree_len} bytes: the file is corrupt"
                    )));
                }
                reader.bytes(u64::from(tree_len), &mut tree, "a record")?;
                let key_len = reader.u32("a record")?;
                reader.bytes(u64::from(key_len), &mut key, "a record")?;
                let change = if kind == PUT {
                    let value_len = reader.u32("a record")?;
                    reader.bytes(u64::from(value_len), &mut value, "a record")?;
                    summary.puts += 1;
                    Change {
                        tree: &tree,
                        key: &key,
                        value: Some(&value),
                    }
                } else {
                    summary.deletes += 1;
                    Change {
                        tree: &tree,
                        key: &key,
                        value: None,
                    }
                };
                visit(change)?;
            }
            other => {
                return Err(refused(format!(
                    "unknown record kind {other:#04x} at byte {at}: the file is corrupt"
                )))
            }
        }
    }
    let puts = reader.u64("the trailer")?;
    let deletes = reader.u64("the trailer")?;
    let computed = reader.hasher.clone().finalize();
    let mut stored = [0; 32];
    reader.exact(&mut stored, "the trailer")?;
    if computed[..] != stored[..] {
        return Err(refused("the checksum does not match: the file is corrupt"));
    }
    if (puts, deletes) != (summary.puts, summary.deletes) {
        return Err(refused(format!(
            "the trailer counts {puts} puts and {deletes} deletes, the file holds {} and {}",
            summary.puts, summary.deletes
        )));
    }
    if !reader.at_end()? {
        return Err(refused(format!(
            "bytes follow the trailer, which ends at byte {}",
            reader.position
        )));
    }
    summary.bytes = reader.position;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of a few puts and a delete, encoded in chunks.
    fn sample() -> (Vec<u8>, BackupSummary) {
        let mut encoder = BackupEncoder::new(1);
        let mut file = Vec::new();
        encoder.push(Change {
            tree: b"customers",
            key: b"c1",
            value: Some(b"one"),
        });
        file.extend(encoder.take_front(5));
        file.extend(encoder.take());
        encoder.push(Change {
            tree: b"customers",
            key: b"c2",
            value: Some(b""),
        });
        encoder.push(Change {
            tree: b"activity",
            key: &7u64.to_be_bytes(),
            value: None,
        });
        let (last, summary) = encoder.finish();
        file.extend(last);
        (file, summary)
    }

    /// A record as owned bytes: tree, key, and the value of a put.
    type Owned = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

    fn read_all(file: &[u8]) -> Result<Vec<Owned>> {
        let mut changes = Vec::new();
        read_backup(file, 1, |change| {
            changes.push((
                change.tree.to_vec(),
                change.key.to_vec(),
                change.value.map(<[u8]>::to_vec),
            ));
            Ok(())
        })?;
        Ok(changes)
    }

    #[test]
    fn a_file_reads_back_as_written() {
        let (file, summary) = sample();
        assert_eq!(summary.bytes, file.len() as u64);
        assert_eq!((summary.puts, summary.deletes), (2, 1));
        assert_eq!(read_backup(&file[..], 1, |_| Ok(())).unwrap(), summary);
        let changes = read_all(&file).unwrap();
        assert_eq!(
            changes,
            vec![
                (b"customers".to_vec(), b"c1".to_vec(), Some(b"one".to_vec())),
                (b"customers".to_vec(), b"c2".to_vec(), Some(Vec::new())),
                (b"activity".to_vec(), 7u64.to_be_bytes().to_vec(), None),
            ]
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        let (file, _) = sample();
        for len in 0..file.len() {
            let error = read_backup(&file[..len], 1, |_| Ok(())).unwrap_err();
            assert!(
                error.to_string().contains("not a complete segmentd backup"),
                "{len}: {error}"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let (file, _) = sample();
        for byte in 0..file.len() {
            for bit in 0..8 {
                let mut corrupt = file.clone();
                corrupt[byte] ^= 1 << bit;
                assert!(
                    read_backup(&corrupt[..], 1, |_| Ok(())).is_err(),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_and_other_store_formats_are_refused() {
        let (mut file, _) = sample();
        // An older store format is read; a newer one refused.
        assert!(read_backup(&file[..], 2, |_| Ok(())).is_ok());
        file[20] = 3;
        assert!(read_backup(&file[..], 2, |_| Ok(()))
            .unwrap_err()
            .to_string()
            .contains("store format 3"));
        file[20] = 1;
        file.push(0);
        assert!(read_backup(&file[..], 1, |_| Ok(()))
            .unwrap_err()
            .to_string()
            .contains("bytes follow the trailer"));
    }
}
