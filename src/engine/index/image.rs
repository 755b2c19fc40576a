//! The index's image: the whole index in one file, written at a clean
//! shutdown and read at the next start in place of a rebuild from the
//! store, which must read every customer and every batch of events.
//!
//! An image is only ever used for the store state it was written from:
//! the engine tags it with a random token that it stores in the store's
//! `meta` tree after the image is on disk, and takes that token out of the
//! store, durably, before it uses the image (see `Engine::open`). The
//! image is read while the store opens, but its index is taken only once
//! the token it carries has left the store ([`Image::accept`]). A start
//! that finds no token, or an image whose token, build or thresholds
//! differ, rebuilds from the store as before.
//!
//! # Layout
//!
//! All integers little-endian. A header (magic, version, the build's
//! source fingerprint, the token, the thresholds, the row count, the
//! customer count, the latest event time), the dictionaries and the trait
//! values, and a digest of all of these, which is checked before the
//! header's counts size anything; then the rows in chunks of [`CHUNK_ROWS`], each prefixed by its
//! length in bytes, so that chunks are encoded and decoded on every core:
//! their ids, every column, then each kind of event as per-row counts and
//! each row's times, amounts, id hashes and storage places, as its series
//! lays them out in memory. Variable-length items (the header's strings,
//! the dictionaries, the traits, the ids, the engagement firsts and the
//! event counts) are postcard, prefixed by their length. A column is its
//! values at a fixed width (an enum as its position in its list, a bool as
//! 0 or 1), so that reading one is a copy with a check, not a decoder per
//! value; the event arrays are 8-byte words. An XXH3-64 digest of
//! everything before it ends the file; a file whose digest differs is
//! refused, and so is one that ends early.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use compact_str::CompactString;
use hashbrown::hash_table::Entry;
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use xxhash_rust::xxh3::Xxh3;

use super::columns::{for_each_column, Columns, Dictionaries, Dictionary};
use super::series::{Row, Series};
use super::FeatureIndex;
use crate::domain::features::{FirstEngagements, Thresholds};
use crate::domain::{Consent, ConsentStatus, Error, Gender, Party, Relationship, Result};

/// The image's file name in the data directory.
pub const IMAGE_FILE: &str = "index.image";

const MAGIC: &[u8; 8] = b"SGDINDEX";
const VERSION: u64 = 4;

/// The sources this build was made from: an image is read only by the
/// build that wrote it, whatever its layout.
const BUILD: &str = env!("SEGMENTD_SOURCE_FINGERPRINT");

/// Rows per chunk: what a chunk's items take while being read or written.
/// The tests' images are small: a few rows a chunk, so that they span
/// several groups of chunks.
const CHUNK_ROWS: usize = if cfg!(test) { 16 } else { 1 << 13 };

/// Chunks encoded or decoded at a time, on every core. Reading holds up
/// to about twice as many of the file's chunks at once: these, those the
/// reader has read ahead, and the one it reads.
const CHUNKS_AT_ONCE: usize = 8;

/// The largest item or array the reader accepts; the largest a chunk
/// holds is far below.
const MAX_ITEM_BYTES: u64 = 1 << 32;

/// Where the image at `path` is written before it is renamed into place.
pub fn image_temporary(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.tmp", path.display()))
}

/// Where the image at `path` is moved while a start reads it.
pub fn image_reading(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.reading", path.display()))
}

/// Where the image at `path` is moved once read, to be removed.
pub fn image_discarded(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.read", path.display()))
}

fn io_error<'a>(path: &'a Path, doing: &'a str) -> impl Fn(std::io::Error) -> Error + 'a {
    move |error| Error::internal(format!("{doing} {}: {error}", path.display()))
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::internal(format!("the index image is not usable: {what}"))
}

impl FeatureIndex {
    /// Writes the index to `path`, tagged with `token`, through a
    /// temporary file renamed into place once synced; returns its size in
    /// bytes. Blocking.
    pub fn save_image(&self, path: &Path, token: u128) -> Result<u64> {
        let temporary = image_temporary(path);
        let saved = self.save_image_through(&temporary, path, token);
        if saved.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        saved
    }

    fn save_image_through(&self, temporary: &Path, path: &Path, token: u128) -> Result<u64> {
        let file = File::create(temporary).map_err(io_error(temporary, "cannot create"))?;
        let mut out = Out {
            file: BufWriter::with_capacity(1 << 20, file),
            digest: Xxh3::new(),
            bytes: 0,
        };
        self.write_image(&mut out, token)
            .map_err(io_error(temporary, "cannot write"))?;
        let digest = out.digest.digest();
        out.file
            .write_all(&digest.to_le_bytes())
            .and_then(|()| out.file.flush())
            .map_err(io_error(temporary, "cannot write"))?;
        let file = out
            .file
            .into_inner()
            .map_err(|error| io_error(temporary, "cannot write")(error.into_error()))?;
        file.sync_all()
            .map_err(io_error(temporary, "cannot sync"))?;
        std::fs::rename(temporary, path).map_err(io_error(path, "cannot rename into"))?;
        if let Some(directory) = path.parent() {
            File::open(directory)
                .and_then(|directory| directory.sync_all())
                .map_err(io_error(directory, "cannot sync"))?;
        }
        Ok(out.bytes + 8)
    }

    fn write_image(&self, out: &mut Out, token: u128) -> std::io::Result<()> {
        out.raw(MAGIC)?;
        out.u64(VERSION)?;
        out.item(BUILD)?;
        out.u64(token as u64)?;
        out.u64((token >> 64) as u64)?;
        out.item(&format!("{:?}", self.thresholds))?;
        out.u64(self.rows.len() as u64)?;
        out.u64(self.live as u64)?;
        out.u64(self.max_time as u64)?;
        let Dictionaries {
            country,
            region,
            city,
            language,
        } = &self.dictionaries;
        for dictionary in [country, region, city, language] {
            out.item(dictionary.names())?;
        }
        out.item(&self.traits)?;
        // The header's own digest: a reader sizes the index from the
        // header before the file's digest can be checked.
        out.u64(out.digest.digest())?;
        let starts: Vec<usize> = (0..self.rows.len()).step_by(CHUNK_ROWS).collect();
        for group in starts.chunks(CHUNKS_AT_ONCE) {
            let encoded: Vec<std::io::Result<Vec<u8>>> = group
                .par_iter()
                .map(|&start| self.encode_chunk(start..(start + CHUNK_ROWS).min(self.rows.len())))
                .collect();
            for chunk in encoded {
                let chunk = chunk?;
                out.u64(chunk.len() as u64)?;
                out.raw(&chunk)?;
            }
        }
        Ok(())
    }

    /// The bytes of the rows `range`: their ids, every column, then each
    /// kind of event.
    fn encode_chunk(&self, range: std::ops::Range<usize>) -> std::io::Result<Vec<u8>> {
        let mut out = Encoder::default();
        out.item(&self.ids[range.clone()])?;
        write_columns(&mut out, &self.columns, range.clone())?;
        let rows = &self.rows[range];
        write_series(&mut out, rows.iter().map(|row| &row.purchases), true)?;
        let engaged: Vec<Option<FirstEngagements>> = rows
            .iter()
            .map(|row| row.engaged().map(|(_, firsts)| firsts))
            .collect();
        out.item(&engaged)?;
        write_series(&mut out, rows.iter().map(Row::engagements), false)?;
        Ok(out.bytes)
    }

    /// Reads the image at `path`, which must have been written by this
    /// build with `thresholds`; whether it was written for the store's
    /// state is for [`Image::accept`] to say. Gives up, with an error, once
    /// `stop` is set. Blocking.
    pub fn read_image(path: &Path, thresholds: Thresholds, stop: &AtomicBool) -> Result<Image> {
        let file = File::open(path).map_err(io_error(path, "cannot open"))?;
        let length = file
            .metadata()
            .map_err(io_error(path, "cannot read"))?
            .len();
        let mut input = In {
            file: BufReader::with_capacity(1 << 20, file),
            digest: Xxh3::new(),
            left: length
                .checked_sub(8)
                .ok_or_else(|| corrupt("it is too short"))?,
            buffer: Vec::new(),
        };
        let image = read_image(&mut input, thresholds, stop)?;
        if input.left != 0 {
            return Err(corrupt("it goes on after the last row"));
        }
        let mut trailer = [0; 8];
        input
            .file
            .read_exact(&mut trailer)
            .map_err(io_error(path, "cannot read"))?;
        if u64::from_le_bytes(trailer) != input.digest.digest() {
            return Err(corrupt("its digest does not match"));
        }
        Ok(image)
    }
}

/// An index read from an image, not yet matched to the store.
pub struct Image {
    index: FeatureIndex,
    token: u128,
    /// How long the rows took to read and decode, and the id table to be
    /// made and checked after them.
    pub took: (std::time::Duration, std::time::Duration),
}

impl Image {
    /// The index, if the image was written for the store state that
    /// `token` names, of `rows` customer numbers.
    pub fn accept(self, token: u128, rows: usize) -> Result<FeatureIndex> {
        if self.token != token {
            return Err(corrupt("it was written for another state of the store"));
        }
        let image_rows = self.index.rows.len();
        if image_rows != rows {
            return Err(corrupt(format!(
                "it holds {image_rows} rows, and the store has given {rows} customer numbers"
            )));
        }
        Ok(self.index)
    }
}

/// Writes rows `range` of every column, each as its values' fixed-width
/// bytes, in the order of [`for_each_column`], which `read_columns` reads
/// them back in.
fn write_columns(
    out: &mut Encoder,
    columns: &Columns,
    range: std::ops::Range<usize>,
) -> std::io::Result<()> {
    for_each_column!(columns, |column| {
        out.fixed(&column[range.clone()]);
    });
    Ok(())
}

/// Reads the next `rows` rows of every column, in `write_columns`' order.
fn read_columns(input: &mut Slice<'_>, columns: &mut Columns, rows: usize) -> Result<()> {
    for_each_column!(columns, |column| {
        input.fixed(column, rows)?;
    });
    Ok(())
}

/// Writes one kind of event of a chunk's rows: the count of each row,
/// then each row's times, amounts (if `amounts`), id hashes and places,
/// one row after another, as a series lays them out.
fn write_series<'a>(
    out: &mut Encoder,
    series: impl Iterator<Item = &'a Series> + Clone,
    amounts: bool,
) -> std::io::Result<()> {
    let counts: Vec<u32> = series.clone().map(|series| series.len() as u32).collect();
    out.item(&counts)?;
    out.words(series.flat_map(|series| {
        debug_assert_eq!(
            series.amounts().len(),
            if amounts { series.len() } else { 0 }
        );
        series
            .times()
            .iter()
            .chain(series.amounts())
            .map(|&word| word as u64)
            .chain(series.keys().iter().copied())
            .chain(series.refs().iter().map(|at| at.packed()))
    }))
}

/// Reads what `write_series` wrote for `rows` rows, each row's series in
/// one allocation of its exact size.
fn read_series(input: &mut Slice<'_>, rows: usize, amounts: bool) -> Result<Vec<Series>> {
    let counts: Vec<u32> = input.item()?;
    if counts.len() != rows {
        return Err(corrupt("a chunk's event counts are not one per row"));
    }
    let lanes: usize = if amounts { 4 } else { 3 };
    let events = counts.iter().map(|&count| u64::from(count)).sum::<u64>();
    let mut rest = input.take(events.saturating_mul(lanes as u64 * 8))?;
    counts
        .iter()
        .map(|&count| {
            let (row, after) = rest.split_at(count as usize * lanes * 8);
            rest = after;
            // Filled as it is made: a zeroed allocation would be written twice.
            let mut words = Vec::with_capacity(row.len() / 8);
            words.extend(
                row.chunks_exact(8)
                    .map(|word| u64::from_le_bytes(word.try_into().expect("a chunk of 8 bytes"))),
            );
            let words = words.into_boxed_slice();
            Series::from_words(words, count as usize, amounts)
                .ok_or_else(|| corrupt("a row's events are out of order"))
        })
        .collect()
}

/// An error once the reading is told to stop.
fn stopped(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::Relaxed) {
        return Err(Error::internal("the index image's reading was stopped"));
    }
    Ok(())
}

fn read_image(input: &mut In, thresholds: Thresholds, stop: &AtomicBool) -> Result<Image> {
    let mut magic = [0; 8];
    input.raw(&mut magic)?;
    if &magic != MAGIC || input.u64()? != VERSION {
        return Err(corrupt("it is not an index image of this version"));
    }
    if input.item::<String>()? != BUILD {
        return Err(corrupt("another build wrote it"));
    }
    let token = u128::from(input.u64()?) | u128::from(input.u64()?) << 64;
    if input.item::<String>()? != format!("{thresholds:?}") {
        return Err(corrupt("it was written with other thresholds"));
    }
    let rows = input.u64()?;
    let live = input.u64()? as usize;
    let max_time = input.u64()? as i64;
    let mut index = FeatureIndex::new(thresholds);
    index.max_time = max_time;
    let mut dictionary = || -> Result<Dictionary> {
        Dictionary::from_names(input.item()?).ok_or_else(|| corrupt("a dictionary is malformed"))
    };
    index.dictionaries = Dictionaries {
        country: dictionary()?,
        region: dictionary()?,
        city: dictionary()?,
        language: dictionary()?,
    };
    index.traits = input.item()?;
    let header = input.digest.digest();
    if input.u64()? != header {
        return Err(corrupt("its header's digest does not match"));
    }
    let rows = usize::try_from(rows)
        .ok()
        .filter(|&rows| rows <= u32::MAX as usize + 1)
        .ok_or_else(|| corrupt("it holds more rows than customer numbers exist"))?;
    if index
        .traits
        .values()
        .flat_map(|values| values.keys())
        .any(|&number| number as usize >= rows)
    {
        return Err(corrupt("a trait value belongs to no row"));
    }
    index.ids.reserve_exact(rows);
    index.rows.reserve_exact(rows);
    for_each_column!(&mut index.columns, |column| {
        column.reserve_exact(rows);
    });
    // The chunks are read in order on a thread of their own, decoded a few
    // at a time on every core, and appended in order; the reading of the
    // next few overlaps the decoding of these.
    let started = std::time::Instant::now();
    let starts: Vec<usize> = (0..rows).step_by(CHUNK_ROWS).collect();
    std::thread::scope(|scope| -> Result<()> {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<Vec<u8>>>(CHUNKS_AT_ONCE);
        let (give_back, given_back) = std::sync::mpsc::channel::<Vec<u8>>();
        let chunks = starts.len();
        let reader = std::thread::Builder::new()
            .name("image reader".into())
            .spawn_scoped(scope, move || {
                for _ in 0..chunks {
                    let mut buffer = given_back.try_recv().unwrap_or_default();
                    let read = input.chunk(&mut buffer).map(|()| buffer);
                    let failed = read.is_err();
                    // The receiver leaves early only after an error of its own.
                    if sender.send(read).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(|error| Error::internal(format!("cannot start the image reader: {error}")))?;
        for group in starts.chunks(CHUNKS_AT_ONCE) {
            stopped(stop)?;
            let read: Vec<Vec<u8>> = group
                .iter()
                .map(|_| {
                    receiver
                        .recv()
                        .unwrap_or_else(|_| Err(corrupt("it ends early")))
                })
                .collect::<Result<_>>()?;
            let decoded: Vec<Result<Chunk>> = read
                .par_iter()
                .zip(group)
                .map(|(bytes, &start)| Chunk::decode(bytes, (rows - start).min(CHUNK_ROWS)))
                .collect();
            for buffer in read {
                // The reader may be done already.
                let _ = give_back.send(buffer);
            }
            for chunk in decoded {
                let mut chunk = chunk?;
                index.ids.append(&mut chunk.ids);
                for_each_column!(&mut index.columns, &mut chunk.columns, |column, twin| {
                    column.append(twin);
                });
                index.rows.append(&mut chunk.rows);
            }
        }
        drop(receiver);
        reader
            .join()
            .map_err(|_| Error::internal("the index image reader panicked"))
    })?;
    // Every dictionary code names a string.
    let Dictionaries {
        country,
        region,
        city,
        language,
    } = &index.dictionaries;
    let columns = &index.columns;
    for (codes, dictionary) in [
        (&columns.country, country),
        (&columns.region, region),
        (&columns.city, city),
        (&columns.language, language),
    ] {
        let names = dictionary.names().len();
        if codes.iter().any(|&code| code as usize >= names) {
            return Err(corrupt("a column names a string its dictionary lacks"));
        }
    }
    stopped(stop)?;
    let decoded = started.elapsed();
    // The id table, sized once and with the ids hashed on every core, and
    // the checks that every row agrees with it.
    let hashes: Vec<u64> = {
        let hasher = &index.hasher;
        index
            .ids
            .par_iter()
            .map(|id| std::hash::BuildHasher::hash_one(hasher, id.as_str()))
            .collect()
    };
    let (ids, hasher, table) = (&index.ids, &index.hasher, &mut index.table);
    let rehash = |&n: &u32| std::hash::BuildHasher::hash_one(hasher, ids[n as usize].as_str());
    table.reserve(live.min(rows), rehash);
    let mut found = 0;
    for (at, (id, &hash)) in ids.iter().zip(&hashes).enumerate() {
        let alive = index.columns.alive[at];
        if alive == id.is_empty() {
            return Err(corrupt(format!(
                "row {at} has an id if and only if it holds no customer"
            )));
        }
        if !alive {
            continue;
        }
        match table.entry(hash, |&n| ids[n as usize] == *id, rehash) {
            Entry::Occupied(_) => {
                return Err(corrupt(format!("the id {id} is held by two rows")));
            }
            Entry::Vacant(slot) => {
                slot.insert(at as u32);
            }
        }
        found += 1;
    }
    if found != live {
        return Err(corrupt("its customer count does not match its rows"));
    }
    index.live = live;
    Ok(Image {
        index,
        token,
        took: (decoded, started.elapsed() - decoded),
    })
}

/// The image being written, with the digest of what it holds so far.
struct Out {
    file: BufWriter<File>,
    digest: Xxh3,
    bytes: u64,
}

impl Out {
    fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.digest.update(bytes);
        self.bytes += bytes.len() as u64;
        self.file.write_all(bytes)
    }

    fn u64(&mut self, value: u64) -> std::io::Result<()> {
        self.raw(&value.to_le_bytes())
    }

    /// One postcard item, prefixed by its length.
    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> std::io::Result<()> {
        let bytes = postcard::to_stdvec(value).map_err(std::io::Error::other)?;
        self.u64(bytes.len() as u64)?;
        self.raw(&bytes)
    }
}

/// The image being read: the bytes left before its digest, and the digest
/// of what was read so far.
struct In {
    file: BufReader<File>,
    digest: Xxh3,
    left: u64,
    buffer: Vec<u8>,
}

impl In {
    fn raw(&mut self, into: &mut [u8]) -> Result<()> {
        if into.len() as u64 > self.left {
            return Err(corrupt("it ends early"));
        }
        self.file
            .read_exact(into)
            .map_err(|error| corrupt(format!("cannot read it: {error}")))?;
        self.left -= into.len() as u64;
        self.digest.update(into);
        Ok(())
    }

    fn u64(&mut self) -> Result<u64> {
        let mut bytes = [0; 8];
        self.raw(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// `length` bytes into the reader's buffer.
    fn fill(&mut self, length: u64) -> Result<Vec<u8>> {
        if length > MAX_ITEM_BYTES || length > self.left {
            return Err(corrupt("an item runs beyond the file"));
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.resize(length as usize, 0);
        self.raw(&mut buffer)?;
        Ok(buffer)
    }

    fn item<T: DeserializeOwned>(&mut self) -> Result<T> {
        let length = self.u64()?;
        let buffer = self.fill(length)?;
        let value = postcard::from_bytes(&buffer);
        self.buffer = buffer;
        value.map_err(|error| corrupt(format!("an item does not decode: {error}")))
    }

    /// The next chunk's bytes, which its length precedes, into `buffer`.
    fn chunk(&mut self, buffer: &mut Vec<u8>) -> Result<()> {
        let length = self.u64()?;
        if length > MAX_ITEM_BYTES || length > self.left {
            return Err(corrupt("a chunk runs beyond the file"));
        }
        buffer.resize(length as usize, 0);
        self.raw(buffer)
    }
}

/// A chunk being encoded.
#[derive(Default)]
struct Encoder {
    bytes: Vec<u8>,
}

impl Encoder {
    fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// One postcard item, prefixed by its length.
    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> std::io::Result<()> {
        let bytes = postcard::to_stdvec(value).map_err(std::io::Error::other)?;
        self.u64(bytes.len() as u64);
        self.bytes.extend_from_slice(&bytes);
        Ok(())
    }

    /// Values at their fixed width; their count is known to the reader.
    fn fixed<T: Fixed>(&mut self, values: &[T]) {
        self.bytes.reserve(values.len() * T::WIDTH);
        for &value in values {
            value.put(&mut self.bytes);
        }
    }

    /// Words as 8 bytes each; their count is known to the reader.
    fn words(&mut self, words: impl Iterator<Item = u64>) -> std::io::Result<()> {
        for word in words {
            self.bytes.extend_from_slice(&word.to_le_bytes());
        }
        Ok(())
    }
}

/// The rows of one chunk, decoded.
struct Chunk {
    ids: Vec<CompactString>,
    columns: Columns,
    rows: Vec<Row>,
}

impl Chunk {
    /// Decodes a chunk of `rows` rows from all of `bytes`.
    fn decode(bytes: &[u8], rows: usize) -> Result<Chunk> {
        let mut input = Slice { bytes };
        let mut ids = Vec::with_capacity(rows);
        input.extend(&mut ids, rows)?;
        let mut columns = Columns::default();
        read_columns(&mut input, &mut columns, rows)?;
        let purchases = read_series(&mut input, rows, true)?;
        let engaged: Vec<Option<FirstEngagements>> = input.item()?;
        if engaged.len() != rows {
            return Err(corrupt("a chunk's engagement firsts are not one per row"));
        }
        let engagements = read_series(&mut input, rows, false)?;
        if !input.bytes.is_empty() {
            return Err(corrupt("a chunk goes on after its rows"));
        }
        let rows = purchases
            .into_iter()
            .zip(engagements)
            .zip(engaged)
            .map(|((purchases, engagements), firsts)| {
                let engaged = match firsts {
                    Some(firsts) => Some((engagements, firsts)),
                    None if engagements.is_empty() => None,
                    None => return Err(corrupt("a row has engagement events and no firsts")),
                };
                Ok(Row::from_parts(purchases, engaged))
            })
            .collect::<Result<Vec<Row>>>()?;
        Ok(Chunk { ids, columns, rows })
    }
}

/// The bytes of a chunk not yet decoded.
struct Slice<'a> {
    bytes: &'a [u8],
}

impl<'a> Slice<'a> {
    /// The next `length` bytes.
    fn take(&mut self, length: u64) -> Result<&'a [u8]> {
        if length > self.bytes.len() as u64 {
            return Err(corrupt("an item runs beyond its chunk"));
        }
        let (taken, rest) = self.bytes.split_at(length as usize);
        self.bytes = rest;
        Ok(taken)
    }

    fn u64(&mut self) -> Result<u64> {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(bytes))
    }

    fn item<T: DeserializeOwned>(&mut self) -> Result<T> {
        let length = self.u64()?;
        postcard::from_bytes(self.take(length)?)
            .map_err(|error| corrupt(format!("an item does not decode: {error}")))
    }

    /// Appends the next `rows` values at their fixed width to `column`.
    fn fixed<T: Fixed>(&mut self, column: &mut Vec<T>, rows: usize) -> Result<()> {
        let bytes = self.take((rows * T::WIDTH) as u64)?;
        column.reserve_exact(rows);
        for value in bytes.chunks_exact(T::WIDTH) {
            column.push(T::get(value).ok_or_else(|| corrupt("a column holds a value no row has"))?);
        }
        Ok(())
    }

    /// Appends the next item, which must hold `rows` values, to `values`
    /// (the chunk's ids).
    fn extend<T: DeserializeOwned>(&mut self, values: &mut Vec<T>, rows: usize) -> Result<()> {
        let read: Vec<T> = self.item()?;
        if read.len() != rows {
            return Err(corrupt("a chunk's item does not hold one value per row"));
        }
        values.extend(read);
        Ok(())
    }
}

/// A column's value as the image holds it: a fixed number of
/// little-endian bytes, read back without a decoder per value.
trait Fixed: Copy {
    const WIDTH: usize;
    fn put(self, out: &mut Vec<u8>);
    /// The value of `WIDTH` bytes; `None` for bytes no value is written as.
    fn get(bytes: &[u8]) -> Option<Self>;
}

macro_rules! fixed_number {
    ($($ty:ty),*) => {$(
        impl Fixed for $ty {
            const WIDTH: usize = std::mem::size_of::<$ty>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Option<Self> {
                bytes.try_into().ok().map(<$ty>::from_le_bytes)
            }
        }
    )*};
}
fixed_number!(u8, u32, i64);

impl Fixed for bool {
    const WIDTH: usize = 1;
    fn put(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
    fn get(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
}

/// An enum as its position in its `ALL`.
macro_rules! fixed_enum {
    ($($ty:ty),*) => {$(
        impl Fixed for $ty {
            const WIDTH: usize = 1;
            fn put(self, out: &mut Vec<u8>) {
                out.push(self.ordinal());
            }
            fn get(bytes: &[u8]) -> Option<Self> {
                match bytes {
                    [ordinal] => <$ty>::ALL.get(usize::from(*ordinal)).copied(),
                    _ => None,
                }
            }
        }
    )*};
}
fixed_enum!(Party, Relationship, Gender, ConsentStatus);

impl Fixed for Consent {
    const WIDTH: usize = 4;
    fn put(self, out: &mut Vec<u8>) {
        for status in [self.email, self.sms, self.push, self.ads] {
            status.put(out);
        }
    }
    fn get(bytes: &[u8]) -> Option<Self> {
        let status = |at: usize| ConsentStatus::get(bytes.get(at..at + 1)?);
        (bytes.len() == 4).then_some(())?;
        Some(Consent {
            email: status(0)?,
            sms: status(1)?,
            push: status(2)?,
            ads: status(3)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use compact_str::CompactString;

    use super::*;
    use crate::domain::{
        Customer, CustomerId, EngagementKind, Location, Party, Profile, Timestamp, TraitValue,
    };
    use crate::engine::index::{event_key, Event, EventRef};

    /// The image at `path` read and accepted for `token` and `rows`.
    fn load_image(
        path: &Path,
        token: u128,
        thresholds: Thresholds,
        rows: usize,
    ) -> Result<FeatureIndex> {
        FeatureIndex::read_image(path, thresholds, &AtomicBool::new(false))?.accept(token, rows)
    }

    const DAY: i64 = 86_400 * 1_000_000_000;

    fn customer(n: u32) -> Customer {
        let mut traits = BTreeMap::new();
        if n.is_multiple_of(3) {
            traits.insert("tier".to_owned(), TraitValue::String(format!("t{}", n % 5)));
        }
        if n.is_multiple_of(7) {
            traits.insert("score".to_owned(), TraitValue::Number(f64::from(n) / 3.0));
        }
        Customer {
            id: CustomerId::parse(&format!("customer-with-a-long-id-{n}")).unwrap(),
            profile: Profile {
                party: if n.is_multiple_of(2) {
                    Party::Business
                } else {
                    Party::Individual
                },
                location: Location {
                    country_code: (!n.is_multiple_of(4))
                        .then(|| ["DE", "TR", "IR"][n as usize % 3].to_owned()),
                    city: format!("city {}", n % 11),
                    ..Location::default()
                },
                language: (n.is_multiple_of(5)).then(|| "fa".to_owned()),
                traits,
                objects_to_profiling: n.is_multiple_of(13),
                ..Profile::default()
            },
            create_time: Timestamp::from_nanos(0),
            update_time: Timestamp::from_nanos(0),
            create_request_id: None,
        }
    }

    /// An index over `customers` customers, with purchases (one customer
    /// with enough for a key set), engagements of each kind, traits,
    /// dictionaries and two erased customers.
    fn sample(customers: u32) -> FeatureIndex {
        let mut index = FeatureIndex::new(Thresholds::default());
        for n in 0..customers {
            index.add_customer(&customer(n));
        }
        let mut key = 0;
        let mut event = |time: i64, amount: Option<i64>| {
            key += 1;
            Event {
                time,
                amount,
                key: event_key(&format!("e{key}")),
                at: EventRef::new(key / 100, (key % 100) as usize),
            }
        };
        for n in (0..customers).step_by(3) {
            let mut purchases: Vec<Event> = (0..n % 5)
                .map(|k| {
                    event(
                        20_000 * DAY + i64::from(n % 1000 * 7 + k * 40) * DAY,
                        Some(i64::from(n) * 100),
                    )
                })
                .collect();
            assert!(index.add_purchases(n, &mut purchases));
        }
        let mut heavy: Vec<Event> = (0..200)
            .map(|k| event(19_000 * DAY + k * DAY, Some(k)))
            .collect();
        assert!(index.add_purchases(1, &mut heavy));
        for n in (0..customers).step_by(5) {
            let kinds = [
                EngagementKind::Visit,
                EngagementKind::Feedback,
                EngagementKind::Referral,
            ];
            let events: Vec<(EngagementKind, Event)> = (0..1 + n % 3)
                .map(|k| {
                    (
                        kinds[k as usize],
                        event(20_100 * DAY + i64::from(k) * DAY, None),
                    )
                })
                .collect();
            assert!(index.add_engagements(n, &events));
        }
        for n in [2, customers - 1] {
            index.remove_customer(&customer(n).id);
        }
        index
    }

    /// What a reader of the index can see of it: everything but the hash
    /// tables' order.
    fn seen(index: &FeatureIndex) -> String {
        let mut seen = format!(
            "{:?} {:?} {} {} {:?}",
            index.ids,
            index.columns,
            index.live,
            index.max_time,
            index.traits.keys().collect::<Vec<_>>()
        );
        for (key, values) in &index.traits {
            let mut values: Vec<_> = values.iter().collect();
            values.sort_by_key(|(number, _)| **number);
            seen += &format!("{key} {values:?}");
        }
        let Dictionaries {
            country,
            region,
            city,
            language,
        } = &index.dictionaries;
        for dictionary in [country, region, city, language] {
            seen += &format!("{:?}", dictionary.names());
        }
        for row in &index.rows {
            let series = |s: &Series| {
                format!(
                    "{:?}{:?}{:?}{:?}|",
                    s.times(),
                    s.amounts(),
                    s.keys(),
                    s.refs()
                )
            };
            seen += &series(&row.purchases);
            if let Some((engagements, firsts)) = row.engaged() {
                seen += &format!("{}{firsts:?}", series(engagements));
            }
        }
        seen
    }

    #[test]
    fn an_image_reads_back_as_the_index_it_was_written_of() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IMAGE_FILE);
        // More rows than a chunk holds.
        let index = sample(CHUNK_ROWS as u32 + 1000);
        let bytes = index.save_image(&path, 42).unwrap();
        assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
        let read = load_image(&path, 42, Thresholds::default(), index.rows.len()).unwrap();
        assert_eq!(seen(&read), seen(&index));
        // Its id table and key sets work.
        let id = customer(1).id;
        assert_eq!(read.row_number(id.as_str()), Some(1));
        assert_eq!(read.row_number(customer(2).id.as_str()), None);
        let heavy = read.row(id.as_str()).unwrap();
        assert_eq!(heavy.purchases.len(), 200);
        let held = index.row(id.as_str()).unwrap();
        for &key in held.purchases.keys() {
            let refs = heavy.purchases.refs_with_key(key);
            assert_eq!(refs.len(), 1);
            assert_eq!(refs, held.purchases.refs_with_key(key));
        }
        assert_eq!(read.size().purchases, index.size().purchases);
    }

    #[test]
    fn an_image_of_another_state_or_setting_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IMAGE_FILE);
        let index = sample(300);
        index.save_image(&path, 7).unwrap();
        let rows = index.rows.len();
        let refused = |token, thresholds, rows| {
            load_image(&path, token, thresholds, rows)
                .unwrap_err()
                .to_string()
        };
        assert!(refused(8, Thresholds::default(), rows).contains("another state"));
        let other = Thresholds {
            lapsed_min_days: 90.0,
            ..Thresholds::default()
        };
        assert!(refused(7, other, rows).contains("other thresholds"));
        assert!(refused(7, Thresholds::default(), rows + 1).contains("customer numbers"));
        assert!(load_image(&dir.path().join("none"), 7, Thresholds::default(), rows).is_err());
    }

    /// An image whose digest holds, but whose content no index could
    /// have, is refused rather than served.
    #[test]
    fn an_image_no_index_could_have_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IMAGE_FILE);
        let refused = |index: &FeatureIndex| {
            index.save_image(&path, 3).unwrap();
            load_image(&path, 3, Thresholds::default(), index.rows.len())
                .unwrap_err()
                .to_string()
        };
        let mut index = sample(100);
        index.columns.city[4] = 1_000;
        assert!(refused(&index).contains("dictionary lacks"));
        let mut index = sample(100);
        index.rows[1].purchases.times_mut().swap(0, 5);
        assert!(refused(&index).contains("out of order"));
        let mut index = sample(100);
        index.ids[3] = CompactString::default();
        assert!(refused(&index).contains("row 3"));
    }

    /// A damaged image is refused with an error, wherever the damage is,
    /// and never read as an index.
    #[test]
    fn a_damaged_or_cut_image_is_refused_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IMAGE_FILE);
        let index = sample(500);
        index.save_image(&path, 1).unwrap();
        let good = std::fs::read(&path).unwrap();
        let rows = index.rows.len();
        let load = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            load_image(&path, 1, Thresholds::default(), rows)
        };
        assert!(load(&good).is_ok());
        let step = (good.len() / 400).max(1);
        for at in (0..good.len()).step_by(step) {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            assert!(
                load(&bad).is_err(),
                "a flipped byte at {at} was not noticed"
            );
            assert!(load(&good[..at]).is_err(), "an image cut at {at} was read");
        }
        let mut longer = good.clone();
        longer.extend_from_slice(&[0; 9]);
        assert!(load(&longer).is_err());
    }

    /// A header whose row count is damaged is refused before the count
    /// sizes anything: the image is read before the store can say how many
    /// rows it should hold.
    #[test]
    fn a_damaged_row_count_is_refused_before_it_sizes_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IMAGE_FILE);
        let index = sample(100);
        index.save_image(&path, 5).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        // Magic, version, the build, the token, the thresholds.
        let item = |text: &str| 8 + postcard::to_stdvec(text).unwrap().len();
        let thresholds = format!("{:?}", Thresholds::default());
        let rows_at = 8 + 8 + item(BUILD) + 16 + item(&thresholds);
        assert_eq!(
            u64::from_le_bytes(bytes[rows_at..rows_at + 8].try_into().unwrap()),
            index.rows.len() as u64
        );
        bytes[rows_at + 5] = 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let error = load_image(&path, 5, Thresholds::default(), index.rows.len())
            .unwrap_err()
            .to_string();
        assert!(error.contains("header's digest"), "{error}");
    }

    /// A reading told to stop gives up with an error instead of an index.
    #[test]
    fn a_stopped_reading_gives_no_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IMAGE_FILE);
        sample(100).save_image(&path, 6).unwrap();
        let stop = AtomicBool::new(true);
        assert!(FeatureIndex::read_image(&path, Thresholds::default(), &stop).is_err());
        stop.store(false, Ordering::Relaxed);
        assert!(FeatureIndex::read_image(&path, Thresholds::default(), &stop).is_ok());
    }

    /// Every value of a fixed-width column reads back as itself, and a
    /// byte that no value is written as is refused rather than taken for
    /// one.
    #[test]
    fn fixed_width_values_read_back_and_strays_are_refused() {
        fn round_trip<T: Fixed + PartialEq + std::fmt::Debug>(values: &[T]) {
            let mut out = Encoder::default();
            out.fixed(values);
            assert_eq!(out.bytes.len(), values.len() * T::WIDTH);
            let mut column = Vec::<T>::new();
            Slice { bytes: &out.bytes }
                .fixed(&mut column, values.len())
                .unwrap();
            assert_eq!(column, values);
        }
        round_trip(&[false, true]);
        round_trip(&[0u8, 7, u8::MAX]);
        round_trip(&[0u32, 20_260_229, u32::MAX]);
        round_trip(&[i64::MIN, -1, 0, 1_700_000_000_000_000_000, i64::MAX]);
        round_trip(Party::ALL);
        round_trip(Relationship::ALL);
        round_trip(Gender::ALL);
        let statuses = ConsentStatus::ALL;
        let consents: Vec<Consent> = (0..81)
            .map(|n: usize| Consent {
                email: statuses[n % 3],
                sms: statuses[n / 3 % 3],
                push: statuses[n / 9 % 3],
                ads: statuses[n / 27 % 3],
            })
            .collect();
        round_trip(&consents);

        let refused = |bytes: &[u8], read: &dyn Fn(&mut Slice<'_>) -> Result<()>| {
            let error = read(&mut Slice { bytes }).unwrap_err().to_string();
            assert!(error.contains("a value no row has"), "{bytes:?}: {error}");
        };
        refused(&[0, 2], &|input| input.fixed(&mut Vec::<bool>::new(), 2));
        refused(&[2], &|input| input.fixed(&mut Vec::<Party>::new(), 1));
        refused(&[4], &|input| input.fixed(&mut Vec::<Gender>::new(), 1));
        refused(&[0, 1, 2, 3], &|input| {
            input.fixed(&mut Vec::<Consent>::new(), 1)
        });
        // Fewer bytes than the rows need: the chunk is cut.
        let error = Slice { bytes: &[0; 7] }
            .fixed(&mut Vec::<i64>::new(), 1)
            .unwrap_err()
            .to_string();
        assert!(error.contains("beyond its chunk"), "{error}");
    }
}
