//! The durable store, on sled. Nothing outside this module knows sled.
//!
//! # Key layout
//!
//! | tree        | key                          | value                                  |
//! |-------------|------------------------------|----------------------------------------|
//! | `meta`      | `format`                     | the store format version, one byte     |
//! | `customers` | the customer id, as UTF-8    | version byte + the customer's number (u32 little-endian) + postcard `Customer` |
//! | `activity`  | batch sequence, u64 big-endian | a batch in columns, see [`batch`]     |
//! | `segments`  | the segment id, as UTF-8     | version byte + postcard `Segment`      |
//! | `meta`      | `persona_catalog`            | version byte + postcard `Catalog`      |
//! | `meta`      | `prediction_model`           | version byte + postcard `PredictionModel` |
//! | `meta`      | `page_token_key`             | 32 random bytes, made on first open ([`token_key`]) |
//! | `meta`      | `log_position`               | cluster mode: the last log record applied, u64 big-endian |
//! | `meta`      | `customer_numbers`           | the numbers given to customers are below it, u32 big-endian |
//! | `watch`     | see `history`                | the membership change history          |
//!
//! Customer ids sort byte-wise, which is the order `ListCustomers` pages in.
//!
//! # Customer numbers
//!
//! Every customer has a number, given when they are created and never
//! given again, kept in their record. Stored events name their customer by
//! it, and the index keeps a customer's row at it, so that a rebuild
//! places each event without looking up a string. Numbers are given from a
//! block reserved in the `meta` tree by the write that first needs it; a
//! clean shutdown stores the next number exactly, and a crash leaves at
//! most the rest of a block unused. Numbers are the store's own: replicas
//! of a cluster may number the same customer differently.
//!
//! Activity is stored as it arrives: one record per accepted batch of
//! events, however many customers it touches, so ingest costs one sled
//! insert per batch rather than one per event. Reads of one customer's
//! history go through the in-memory index, which knows the batch and
//! position of each event. Erasing a customer rewrites the batches that
//! hold their events, in the same transaction that removes the customer.
//!
//! # Writes
//!
//! The store does not serialise its writers: its one owner, the engine,
//! runs one write at a time under its writer lock, which also covers the
//! index update that goes with each write. So a read-check-write (an etag
//! check, an idempotent create) sees no other writer. A change of customers
//! goes through [`Store::write`], which applies it as one atomic sled batch.
//! A caller that acknowledges a write first awaits [`Store::durable`], which
//! joins the next group commit (or returns at once under
//! [`Durability::Relaxed`]).
//!
//! # Applying a replicated log
//!
//! In cluster mode every write applies one record of the log, between
//! [`Store::begin_apply`] and [`Store::end_apply`]. Then each write method
//! stores the record's position in the same sled transaction as its
//! change (or `end_apply` stores it alone when the record changed
//! nothing), so that after a crash the store holds exactly the records up
//! to the position it holds, and a restart resumes after it. An activity
//! batch is then keyed by its record's position, the same on every
//! replica.
//!
//! Every method that writes reports what it changed to the backup tap
//! ([`backup::TapSlot::record`]) once the change is applied, so that a
//! backup taken while writes go on can be brought to one moment's state.

pub mod backup;
mod batch;
mod codec;
mod commit;
mod history;
mod migrate;
pub mod token_key;

pub use batch::{event_key, Columns as BatchColumns, Fixed, ERASED};
pub use commit::{FlushCounts, FLUSH_BUCKETS_MICROS};
pub use history::HistoryWrite;
pub use token_key::PageTokenKey;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use sled::Transactional as _;

use crate::domain::persona::Catalog;
use crate::domain::predict::PredictionModel;
use crate::domain::segment::{Segment, SegmentId};
use crate::domain::{ActivityRecord, Customer, CustomerId, Error, Result};
use commit::GroupCommit;

/// The key of the persona catalog in the `meta` tree.
const CATALOG_KEY: &str = "persona_catalog";
/// The key of the fitted prediction model in the `meta` tree.
const PREDICTION_MODEL_KEY: &str = "prediction_model";
/// The key of the last log record applied, in the `meta` tree.
const POSITION_KEY: &str = "log_position";
/// The key of the customer numbers' reservation, in the `meta` tree.
const NUMBERS_KEY: &str = "customer_numbers";
/// The key of the token of the index image written at the last clean
/// shutdown, in the `meta` tree; present only from that shutdown to the
/// next start.
pub(crate) const INDEX_IMAGE_KEY: &str = "index_image";
/// How many customer numbers one reservation holds.
const NUMBER_BLOCK: u32 = 4096;
/// The store format this build writes; it migrates stores of format 1.
const FORMAT_VERSION: u8 = 2;
/// How often sled flushes on its own; the loss window under relaxed durability.
pub const PERIODIC_FLUSH_MS: u64 = 500;

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Only once it is flushed to disk; concurrent writers share one flush.
    Durable,
    /// As soon as it is applied in memory; sled flushes every
    /// [`PERIODIC_FLUSH_MS`] milliseconds, so a crash can lose that much.
    Relaxed,
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The sled directory.
    pub path: PathBuf,
    /// sled's page cache size, in bytes of on-disk data.
    pub cache_capacity_bytes: u64,
    /// When writes are acknowledged.
    pub durability: Durability,
    /// Whether a new store compresses its pages on disk (zstd): a quarter
    /// to two fifths fewer bytes, at half the rate of `ImportCustomers`
    /// (sled compresses every small write on its own). A store keeps how
    /// it was made.
    pub compress: bool,
}

/// The open store.
#[derive(Debug)]
pub struct Store {
    /// The database, for flushes.
    db: sled::Db,
    /// Customer records by id.
    customers: sled::Tree,
    /// Activity batches by sequence number.
    activity: sled::Tree,
    /// Saved segments by id.
    segments: sled::Tree,
    /// Moves on after every change of a saved segment: a reader that saw
    /// the same value before and after listing them holds them all.
    segments_generation: AtomicU64,
    /// The format version and the persona catalog.
    meta: sled::Tree,
    /// The sequence number of the next activity batch.
    next_batch: AtomicU64,
    /// The numbers of new customers.
    numbers: Numbers,
    /// The key that authenticates page tokens; replaced only by a cluster's
    /// first record, which gives every replica the same.
    page_token_key: std::sync::RwLock<PageTokenKey>,
    /// The position of the log record being applied, 0 when none is.
    applying: AtomicU64,
    /// Whether a write stored `applying` with its change.
    position_stored: std::sync::atomic::AtomicBool,
    /// The group committer.
    commit: GroupCommit,
    /// When writes are acknowledged.
    durability: Durability,
    /// Where writes report their changes while a backup runs.
    tap: backup::TapSlot,
    /// Set by [`Store::seal`]: customers and events are no longer
    /// written, so that an index image written then stays true.
    closed: std::sync::atomic::AtomicBool,
    /// Whether sled compresses the pages on disk.
    compressed: bool,
}

/// The numbers new customers get (see the module docs).
#[derive(Debug)]
struct Numbers {
    /// The next number to give.
    next: AtomicU32,
    /// The numbers below it are reserved in the `meta` tree; one at or
    /// above it is given only with a write that reserves more.
    reserved: AtomicU32,
}

impl Numbers {
    /// Numbers from `next` on, of which those below `next` are reserved.
    fn from(next: u32) -> Self {
        Numbers {
            next: AtomicU32::new(next),
            reserved: AtomicU32::new(next),
        }
    }

    /// A new number, and the reservation to store with the write that
    /// gives it, if it needs one. Under the writer lock.
    fn give(&self) -> Result<(u32, Option<u32>)> {
        let number = self.next.load(Ordering::Relaxed);
        if number == ERASED {
            return Err(Error::ResourceExhausted {
                subject: "customer numbers".to_owned(),
                description: format!(
                    "the store has given all {ERASED} customer numbers; export and re-import \
                     its customers into a new store"
                ),
            });
        }
        self.next.store(number + 1, Ordering::Relaxed);
        let reserve = (number >= self.reserved.load(Ordering::Relaxed))
            .then(|| number.saturating_add(NUMBER_BLOCK));
        Ok((number, reserve))
    }
}

/// The zstd level at which sled compresses a compressed store's pages:
/// the lowest, which costs the activity ingest about a tenth at most;
/// higher levels shrink the store a little more and slow it.
const COMPRESSION_LEVEL: i32 = 1;

/// Opens sled with the configuration `config` makes, compressing its
/// pages on disk if `compress`. sled records in its `conf` file whether a
/// database is compressed and refuses to open it the other way, so
/// `compress` chooses for a new store only: a store made the other way is
/// opened as it was made, and the log says so. Returns the database and
/// whether it is compressed. Each attempt gets a configuration of its
/// own: sled complains of one changed after it was used to open.
fn open_db(config: impl Fn() -> sled::Config, compress: bool) -> Result<(sled::Db, bool)> {
    let open = |compressed: bool| {
        config()
            .use_compression(compressed)
            .compression_factor(COMPRESSION_LEVEL)
            .open()
    };
    match open(compress) {
        Err(sled::Error::Unsupported(why)) if why.contains("use_compression") => {
            tracing::warn!(
                compressed = !compress,
                "the store was made {}compressed, which sled cannot change: it stays so \
                 (to change it, back it up and restore the backup into an empty directory \
                 with the setting wanted)",
                if compress { "un" } else { "" }
            );
            open(!compress).map(|db| (db, !compress))
        }
        opened => opened.map(|db| (db, compress)),
    }
    .map_err(storage_error)
}

fn storage_error(error: sled::Error) -> Error {
    Error::internal(format!("storage: {error}"))
}

fn batch_seq(key: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::internal("activity key is not 8 bytes"))
}

fn read_customer(tree: &sled::Tree, id: &CustomerId) -> Result<Option<Customer>> {
    tree.get(id.as_str())
        .map_err(storage_error)?
        .map(|bytes| codec::decode_customer(&bytes).map(|(_, customer)| customer))
        .transpose()
}

impl Store {
    /// Opens (or creates) the store; blocking, so call it off the async
    /// workers. Must run inside a tokio runtime, which hosts the committer.
    pub fn open(options: &StoreOptions) -> Result<Self> {
        // A new data directory is for the service's user only: it holds
        // personal data.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&options.path)
            .map_err(|error| {
                Error::internal(format!(
                    "cannot create the data directory {}: {error}",
                    options.path.display()
                ))
            })?;
        let (db, compressed) = open_db(
            || {
                sled::Config::new()
                    .path(&options.path)
                    .cache_capacity(options.cache_capacity_bytes)
                    .flush_every_ms(Some(PERIODIC_FLUSH_MS))
            },
            options.compress,
        )?;
        tracing::info!(path = %options.path.display(), compressed, "store opened");
        let meta = db.open_tree("meta").map_err(storage_error)?;
        let customers = db.open_tree("customers").map_err(storage_error)?;
        let activity = db.open_tree("activity").map_err(storage_error)?;
        let segments = db.open_tree("segments").map_err(storage_error)?;
        match meta.get("format").map_err(storage_error)?.as_deref() {
            None => {
                meta.insert("format", &[FORMAT_VERSION])
                    .map_err(storage_error)?;
            }
            Some([FORMAT_VERSION]) => {}
            Some([1]) => migrate::from_v1(&db, &meta, &customers, &activity)?,
            Some(version) => {
                return Err(Error::FailedPrecondition(format!(
                    "the store in {} is in format {version:?}, which this build does not know \
                     (it writes format {FORMAT_VERSION} and migrates format 1): run the build \
                     that wrote it, or restore a backup into an empty directory",
                    options.path.display()
                )));
            }
        }
        let numbers = match meta.get(NUMBERS_KEY).map_err(storage_error)? {
            Some(bytes) => Numbers::from(u32::from_be_bytes(bytes.as_ref().try_into().map_err(
                |_| Error::internal("the customer numbers' reservation is not 4 bytes"),
            )?)),
            None => Numbers::from(0),
        };
        let next_batch = match activity.last().map_err(storage_error)? {
            Some((key, _)) => batch_seq(&key)? + 1,
            None => 0,
        };
        let page_token_key = token_key::load_or_create(&meta)?;
        let commit = GroupCommit::start(db.clone());
        Ok(Store {
            db,
            customers,
            activity,
            segments,
            segments_generation: AtomicU64::new(0),
            meta,
            next_batch: AtomicU64::new(next_batch),
            numbers,
            page_token_key: std::sync::RwLock::new(page_token_key),
            applying: AtomicU64::new(0),
            position_stored: std::sync::atomic::AtomicBool::new(false),
            commit,
            durability: options.durability,
            tap: backup::TapSlot::default(),
            closed: std::sync::atomic::AtomicBool::new(false),
            compressed,
        })
    }

    /// Whether sled compresses the store's pages on disk: how the store
    /// was made, whatever [`StoreOptions::compress`] said when it was
    /// opened again.
    pub fn compressed(&self) -> bool {
        self.compressed
    }

    /// The key that authenticates page tokens; never to be sent.
    pub fn page_token_key(&self) -> PageTokenKey {
        self.page_token_key
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the page-token key, for a cluster whose replicas must
    /// share one; blocking, and a write like any other (see the module
    /// docs on applying a log).
    pub fn set_page_token_key(&self, key: &PageTokenKey) -> Result<()> {
        let value = sled::IVec::from(key.bytes());
        self.commit(vec![(&self.meta, token_key::META_KEY.into(), Some(value))])?;
        *self
            .page_token_key
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = key.clone();
        Ok(())
    }

    /// The position of the last log record applied; `None` for a store
    /// that never applied one (a new store, or one of the embedded mode).
    pub fn log_position(&self) -> Result<Option<u64>> {
        self.meta
            .get(POSITION_KEY)
            .map_err(storage_error)?
            .map(|bytes| batch_seq(&bytes))
            .transpose()
    }

    /// Whether the store holds no customer, activity, segment or catalog.
    pub fn is_blank(&self) -> Result<bool> {
        Ok(self.customers.is_empty()
            && self.activity.is_empty()
            && self.segments.is_empty()
            && self.get_catalog()?.is_none())
    }

    /// Starts applying the log record at `position`: the writes until
    /// [`Store::end_apply`] store it with their changes. Under the
    /// engine's writer lock.
    pub fn begin_apply(&self, position: u64) {
        self.position_stored.store(false, Ordering::Relaxed);
        self.applying.store(position, Ordering::Relaxed);
    }

    /// Ends applying a log record: stores its position if no write did.
    pub fn end_apply(&self) -> Result<()> {
        let position = self.applying.swap(0, Ordering::Relaxed);
        self.open_for_writes()?;
        if position == 0 || self.position_stored.load(Ordering::Relaxed) {
            return Ok(());
        }
        let value = sled::IVec::from(&position.to_be_bytes()[..]);
        self.meta
            .insert(POSITION_KEY, value.clone())
            .map_err(storage_error)?;
        self.tap
            .record(&self.meta, POSITION_KEY.as_bytes(), Some(&value));
        Ok(())
    }

    /// Ends applying a log record that failed, storing nothing more; says
    /// whether a write already stored its position with a change (which
    /// cannot be taken back: the in-memory state must then be rebuilt
    /// from the store).
    pub fn abort_apply(&self) -> bool {
        self.applying.store(0, Ordering::Relaxed);
        self.position_stored.load(Ordering::Relaxed)
    }

    /// The position of the log record being applied, if one is.
    fn applying(&self) -> Option<u64> {
        match self.applying.load(Ordering::Relaxed) {
            0 => None,
            position => Some(position),
        }
    }

    /// Applies `changes` atomically, each a tree, a key and the new value
    /// (`None` removes the key), with the position of the log record being
    /// applied if one is, and reports them to the tap. The write methods'
    /// own paths are cheaper where no position is stored.
    fn commit(&self, changes: Vec<(&sled::Tree, sled::IVec, Option<sled::IVec>)>) -> Result<()> {
        let position = self.applying();
        let mut trees: Vec<sled::Tree> = vec![self.meta.clone()];
        let mut slots = Vec::with_capacity(changes.len());
        for (tree, ..) in &changes {
            let slot = match trees.iter().position(|known| known.name() == tree.name()) {
                Some(slot) => slot,
                None => {
                    trees.push((*tree).clone());
                    trees.len() - 1
                }
            };
            slots.push(slot);
        }
        let position_value = position.map(|position| sled::IVec::from(&position.to_be_bytes()[..]));
        trees
            .as_slice()
            .transaction(|trees| {
                for ((_, key, value), &slot) in changes.iter().zip(&slots) {
                    match value {
                        Some(value) => trees[slot].insert(key.clone(), value.clone())?,
                        None => trees[slot].remove(key.clone())?,
                    };
                }
                if let Some(value) = &position_value {
                    trees[0].insert(POSITION_KEY, value.clone())?;
                }
                Ok(())
            })
            .map_err(|error: sled::transaction::TransactionError| {
                Error::internal(format!("storage: {error}"))
            })?;
        for (tree, key, value) in &changes {
            self.tap.record(tree, key, value.as_ref());
        }
        if let Some(value) = &position_value {
            self.tap
                .record(&self.meta, POSITION_KEY.as_bytes(), Some(value));
            self.position_stored.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Reads one customer.
    pub fn get_customer(&self, id: &CustomerId) -> Result<Option<Customer>> {
        read_customer(&self.customers, id)
    }

    /// Reads one customer with their number.
    pub fn get_numbered_customer(&self, id: &CustomerId) -> Result<Option<(u32, Customer)>> {
        self.customers
            .get(id.as_str())
            .map_err(storage_error)?
            .map(|bytes| codec::decode_customer(&bytes))
            .transpose()
    }

    /// Reads up to `limit` customers with ids after `after`, in id order.
    pub fn list_customers(
        &self,
        after: Option<&CustomerId>,
        limit: usize,
    ) -> Result<Vec<Customer>> {
        let start = match after {
            Some(id) => Bound::Excluded(id.as_str().as_bytes()),
            None => Bound::Unbounded,
        };
        self.customers
            .range::<&[u8], _>((start, Bound::Unbounded))
            .take(limit)
            .map(|entry| {
                let (_key, value) = entry.map_err(storage_error)?;
                codec::decode_customer(&value).map(|(_, customer)| customer)
            })
            .collect()
    }

    /// Runs `change` as one atomic write: it reads through `writes`, stages
    /// puts and deletes there, and they are applied together if it returns
    /// `Ok`. Blocking; the caller runs one write at a time (see the module
    /// docs).
    pub fn write<T>(&self, change: impl FnOnce(&mut CustomerWrites<'_>) -> Result<T>) -> Result<T> {
        self.open_for_writes()?;
        let mut writes = CustomerWrites {
            tree: &self.customers,
            numbers: &self.numbers,
            staged: BTreeMap::new(),
            reserve: None,
            read: Default::default(),
        };
        let outcome = change(&mut writes)?;
        let CustomerWrites {
            staged, reserve, ..
        } = writes;
        let encoded = staged
            .into_iter()
            .map(|(id, record)| {
                let value = record
                    .map(|(number, customer)| {
                        codec::encode_customer(number, &customer).map(sled::IVec::from)
                    })
                    .transpose()?;
                Ok((id, value))
            })
            .collect::<Result<Vec<_>>>()?;
        // Applying a log record, a change is stored with the record's
        // position; a new block of numbers is reserved with the first
        // record that uses it.
        if (self.applying().is_some() && !encoded.is_empty()) || reserve.is_some() {
            let mut changes: Vec<_> = encoded
                .into_iter()
                .map(|(id, value)| (&self.customers, sled::IVec::from(id.as_str()), value))
                .collect();
            if let Some(reserve) = reserve {
                let value = sled::IVec::from(&reserve.to_be_bytes()[..]);
                changes.push((&self.meta, sled::IVec::from(NUMBERS_KEY), Some(value)));
            }
            self.commit(changes)?;
            if let Some(reserve) = reserve {
                self.numbers.reserved.fetch_max(reserve, Ordering::Relaxed);
            }
            return Ok(outcome);
        }
        match encoded.as_slice() {
            [] => {}
            // A single key is atomic on its own, and a plain insert avoids
            // the cost of a batch, which seals sled's log buffer.
            [(id, value)] => {
                match value {
                    Some(bytes) => self.customers.insert(id.as_str(), bytes.clone()).map(drop),
                    None => self.customers.remove(id.as_str()).map(drop),
                }
                .map_err(storage_error)?;
                self.tap
                    .record(&self.customers, id.as_str().as_bytes(), value.as_ref());
            }
            several => {
                let mut batch = sled::Batch::default();
                for (id, value) in several {
                    match value {
                        Some(bytes) => batch.insert(id.as_str(), bytes.clone()),
                        None => batch.remove(id.as_str()),
                    }
                }
                self.customers.apply_batch(batch).map_err(storage_error)?;
                self.tap.record_all(
                    &self.customers,
                    several
                        .iter()
                        .map(|(id, value)| (id.as_str().as_bytes(), value.as_ref())),
                );
            }
        }
        Ok(outcome)
    }

    /// Calls `visit` with every stored customer and their number, in id
    /// order; blocking.
    pub fn for_each_customer(&self, mut visit: impl FnMut(u32, Customer)) -> Result<()> {
        for entry in self.customers.iter() {
            let (_key, value) = entry.map_err(storage_error)?;
            let (number, customer) = codec::decode_customer(&value)?;
            visit(number, customer);
        }
        Ok(())
    }

    /// The numbers given to customers so far are below this.
    pub fn customer_numbers(&self) -> u32 {
        self.numbers.next.load(Ordering::Relaxed)
    }

    /// Stores a batch of events and returns its sequence number; blocking.
    /// The events' customers have the numbers in `purchase_customers` and
    /// `engagement_customers`, by position.
    pub fn append_activity(
        &self,
        batch: &ActivityRecord,
        purchase_customers: &[u32],
        engagement_customers: &[u32],
    ) -> Result<u64> {
        self.open_for_writes()?;
        let value = sled::IVec::from(batch::encode(
            batch,
            purchase_customers,
            engagement_customers,
        )?);
        if let Some(position) = self.applying() {
            self.next_batch.fetch_max(position + 1, Ordering::Relaxed);
            let key = sled::IVec::from(&position.to_be_bytes()[..]);
            self.commit(vec![(&self.activity, key, Some(value))])?;
            return Ok(position);
        }
        let seq = self.next_batch.fetch_add(1, Ordering::Relaxed);
        self.activity
            .insert(seq.to_be_bytes(), value.clone())
            .map_err(storage_error)?;
        self.tap
            .record(&self.activity, &seq.to_be_bytes(), Some(&value));
        Ok(seq)
    }

    /// Reads one batch of events, naming each event's customer by
    /// `id_of` from their number; the events of customers it does not
    /// name, and erased ones, are `None`.
    pub fn read_activity(
        &self,
        seq: u64,
        id_of: impl Fn(u32) -> Option<CustomerId>,
    ) -> Result<Option<ActivityRecord>> {
        self.activity
            .get(seq.to_be_bytes())
            .map_err(storage_error)?
            .map(|bytes| BatchColumns::parse(&bytes)?.decode(id_of))
            .transpose()
    }

    /// Calls `visit` with the columns of every batch of events, read in
    /// place, in sequence order; blocking.
    pub fn for_each_activity(&self, mut visit: impl FnMut(u64, BatchColumns<'_>)) -> Result<()> {
        for entry in self.activity.iter() {
            let (key, value) = entry.map_err(storage_error)?;
            visit(batch_seq(&key)?, BatchColumns::parse(&value)?);
        }
        Ok(())
    }

    /// Removes a customer, who has `number`, and, in the same transaction,
    /// their events from the batches `batches` (a batch left with none is
    /// removed).
    pub fn erase_customer(&self, id: &CustomerId, number: u32, batches: &[u64]) -> Result<()> {
        self.open_for_writes()?;
        let mut encoded = Vec::with_capacity(batches.len());
        for &seq in batches {
            let key = seq.to_be_bytes();
            let Some(bytes) = self.activity.get(key).map_err(storage_error)? else {
                continue;
            };
            let rewritten = BatchColumns::parse(&bytes)?.erase(number)?;
            encoded.push((key, rewritten.map(sled::IVec::from)));
        }
        if self.applying().is_some() {
            let mut changes = vec![(&self.customers, sled::IVec::from(id.as_str()), None)];
            changes.extend(
                encoded
                    .into_iter()
                    .map(|(key, value)| (&self.activity, sled::IVec::from(&key[..]), value)),
            );
            return self.commit(changes);
        }
        (&self.customers, &self.activity)
            .transaction(|(customers, activity)| {
                customers.remove(id.as_str())?;
                for (key, value) in &encoded {
                    match value {
                        Some(bytes) => activity.insert(&key[..], bytes.clone())?,
                        None => activity.remove(&key[..])?,
                    };
                }
                Ok(())
            })
            .map_err(|error: sled::transaction::TransactionError| {
                Error::internal(format!("storage: {error}"))
            })?;
        self.tap
            .record(&self.customers, id.as_str().as_bytes(), None);
        self.tap.record_all(
            &self.activity,
            encoded
                .iter()
                .map(|(key, value)| (&key[..], value.as_ref())),
        );
        Ok(())
    }

    /// Reads one segment.
    pub fn get_segment(&self, id: &SegmentId) -> Result<Option<Segment>> {
        self.segments
            .get(id.as_str())
            .map_err(storage_error)?
            .map(|bytes| codec::decode_segment(&bytes))
            .transpose()
    }

    /// Reads up to `limit` segments with ids after `after`, in id order.
    pub fn list_segments(&self, after: Option<&SegmentId>, limit: usize) -> Result<Vec<Segment>> {
        let start = match after {
            Some(id) => Bound::Excluded(id.as_str().as_bytes()),
            None => Bound::Unbounded,
        };
        self.segments
            .range::<&[u8], _>((start, Bound::Unbounded))
            .take(limit)
            .map(|entry| {
                let (_key, value) = entry.map_err(storage_error)?;
                codec::decode_segment(&value)
            })
            .collect()
    }

    /// Stores a segment, replacing one with its id; blocking. The caller
    /// serialises read-check-writes of segments.
    pub fn put_segment(&self, segment: &Segment) -> Result<()> {
        let value = sled::IVec::from(codec::encode_segment(segment)?);
        if self.applying().is_some() {
            let key = sled::IVec::from(segment.id.as_str());
            self.commit(vec![(&self.segments, key, Some(value))])?;
            self.segments_generation.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        self.segments
            .insert(segment.id.as_str(), value.clone())
            .map_err(storage_error)?;
        self.tap
            .record(&self.segments, segment.id.as_str().as_bytes(), Some(&value));
        self.segments_generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// The generation of the saved segments: it moves on once a change of
    /// one has been stored, so that a list read after it holds the change.
    pub fn segments_generation(&self) -> u64 {
        self.segments_generation.load(Ordering::SeqCst)
    }

    /// Removes a segment; returns whether it existed.
    pub fn delete_segment(&self, id: &SegmentId) -> Result<bool> {
        if self.applying().is_some() {
            let existed = self
                .segments
                .contains_key(id.as_str())
                .map_err(storage_error)?;
            if existed {
                self.commit(vec![(&self.segments, sled::IVec::from(id.as_str()), None)])?;
                self.segments_generation.fetch_add(1, Ordering::SeqCst);
            }
            return Ok(existed);
        }
        let existed = self
            .segments
            .remove(id.as_str())
            .map(|old| old.is_some())
            .map_err(storage_error)?;
        self.tap
            .record(&self.segments, id.as_str().as_bytes(), None);
        self.segments_generation.fetch_add(1, Ordering::SeqCst);
        Ok(existed)
    }

    /// The stored persona catalog, if one was ever stored.
    pub fn get_catalog(&self) -> Result<Option<Catalog>> {
        self.meta
            .get(CATALOG_KEY)
            .map_err(storage_error)?
            .map(|bytes| codec::decode_catalog(&bytes))
            .transpose()
    }

    /// The stored prediction model, if one was ever fitted.
    pub fn get_prediction_model(&self) -> Result<Option<PredictionModel>> {
        self.meta
            .get(PREDICTION_MODEL_KEY)
            .map_err(storage_error)?
            .map(|bytes| codec::decode_prediction_model(&bytes))
            .transpose()
    }

    /// Stores the prediction model, replacing the one before; blocking.
    pub fn put_prediction_model(&self, model: &PredictionModel) -> Result<()> {
        let value = sled::IVec::from(codec::encode_prediction_model(model)?);
        if self.applying().is_some() {
            return self.commit(vec![(
                &self.meta,
                sled::IVec::from(PREDICTION_MODEL_KEY),
                Some(value),
            )]);
        }
        self.meta
            .insert(PREDICTION_MODEL_KEY, value.clone())
            .map_err(storage_error)?;
        self.tap
            .record(&self.meta, PREDICTION_MODEL_KEY.as_bytes(), Some(&value));
        Ok(())
    }

    /// Stores the persona catalog, replacing the one before; blocking.
    pub fn put_catalog(&self, catalog: &Catalog) -> Result<()> {
        let value = sled::IVec::from(codec::encode_catalog(catalog)?);
        if self.applying().is_some() {
            return self.commit(vec![(
                &self.meta,
                sled::IVec::from(CATALOG_KEY),
                Some(value),
            )]);
        }
        self.meta
            .insert(CATALOG_KEY, value.clone())
            .map_err(storage_error)?;
        self.tap
            .record(&self.meta, CATALOG_KEY.as_bytes(), Some(&value));
        Ok(())
    }

    /// Resolves once every write applied so far is durable, as the
    /// configured durability defines it.
    pub async fn durable(&self) -> Result<()> {
        match self.durability {
            Durability::Durable => self.commit.wait().await,
            Durability::Relaxed => Ok(()),
        }
    }

    /// Flushes everything to disk; blocking.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(storage_error)
    }

    /// Refuses a write of customers or events once the store is sealed.
    fn open_for_writes(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Unavailable(
                "the server is shutting down and writes no more".to_owned(),
            ));
        }
        Ok(())
    }

    /// Stops writes of customers and events for good, for an index image
    /// to be taken of the store as it is: [`Store::close`] then stores
    /// all. Only where nothing else applies writes meanwhile (not in
    /// cluster mode, whose follower applies the log until it stops).
    pub fn seal(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Stores the next customer number exactly, so that a restart gives
    /// the numbers the reservation held and this process did not, then
    /// flushes; blocking. At shutdown, under the writer lock.
    pub fn close(&self) -> Result<()> {
        let next = self.numbers.next.load(Ordering::Relaxed);
        if next < self.numbers.reserved.load(Ordering::Relaxed) {
            self.meta
                .insert(NUMBERS_KEY, &next.to_be_bytes())
                .map_err(storage_error)?;
            self.numbers.reserved.store(next, Ordering::Relaxed);
        }
        self.flush()
    }

    /// Stores the token of an index image written of the store as it is,
    /// once sealed and closed, and flushes; blocking.
    pub fn set_index_image(&self, token: u128) -> Result<()> {
        if !self.closed.load(Ordering::Acquire) {
            return Err(Error::internal(
                "an index image is only taken of a sealed store",
            ));
        }
        self.meta
            .insert(INDEX_IMAGE_KEY, &token.to_le_bytes())
            .map_err(storage_error)?;
        self.flush()
    }

    /// Whether the last clean shutdown left the token of an index image
    /// that no start has taken out yet; blocking.
    pub fn has_index_image(&self) -> Result<bool> {
        self.meta
            .contains_key(INDEX_IMAGE_KEY)
            .map_err(storage_error)
    }

    /// Takes out the token of the index image written at the last clean
    /// shutdown, if there was one, and flushes before returning it, so that
    /// the image is never read again once anything was written; blocking,
    /// at start-up, before any write. Every build that writes store format
    /// 2 does this: the image came with that format, and a build of format
    /// 1 cannot open the store.
    pub fn take_index_image(&self) -> Result<Option<u128>> {
        let Some(token) = self.meta.remove(INDEX_IMAGE_KEY).map_err(storage_error)? else {
            return Ok(None);
        };
        self.flush()?;
        Ok(<[u8; 16]>::try_from(token.as_ref())
            .ok()
            .map(u128::from_le_bytes))
    }

    /// The group commits so far: how many, and how long they took.
    pub fn flush_counts(&self) -> FlushCounts {
        self.commit.stats()
    }

    /// The bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(storage_error)
    }
}

/// The staged changes of one [`Store::write`].
#[derive(Debug)]
pub struct CustomerWrites<'a> {
    /// The tree read through for what is not staged.
    tree: &'a sled::Tree,
    /// Gives new customers their numbers.
    numbers: &'a Numbers,
    /// Staged puts (`Some`, with the customer's number) and deletes (`None`).
    staged: BTreeMap<CustomerId, Option<(u32, Customer)>>,
    /// The reservation of numbers to store with the write, if a number
    /// given was not yet reserved.
    reserve: Option<u32>,
    /// The numbers of the customers read from the tree so far (`None` for
    /// one not stored), so that a put after a get reads nothing again.
    read: std::cell::RefCell<BTreeMap<CustomerId, Option<u32>>>,
}

impl CustomerWrites<'_> {
    /// Reads a customer, seeing the changes staged so far.
    pub fn get(&self, id: &CustomerId) -> Result<Option<Customer>> {
        if let Some(staged) = self.staged.get(id) {
            return Ok(staged.as_ref().map(|(_, customer)| customer.clone()));
        }
        let stored = self
            .tree
            .get(id.as_str())
            .map_err(storage_error)?
            .map(|bytes| codec::decode_customer(&bytes))
            .transpose()?;
        self.read
            .borrow_mut()
            .insert(id.clone(), stored.as_ref().map(|(number, _)| *number));
        Ok(stored.map(|(_, customer)| customer))
    }

    /// The number of a customer, staged or stored.
    pub fn number(&self, id: &CustomerId) -> Result<Option<u32>> {
        if let Some(Some((number, _))) = self.staged.get(id) {
            return Ok(Some(*number));
        }
        if let Some(&number) = self.read.borrow().get(id) {
            return Ok(number);
        }
        self.tree
            .get(id.as_str())
            .map_err(storage_error)?
            .map(|bytes| codec::customer_number(&bytes))
            .transpose()
    }

    /// Stages a create or replace; returns the customer's number, given
    /// now to a new customer.
    pub fn put(&mut self, customer: Customer) -> Result<u32> {
        let number = match self.number(&customer.id)? {
            Some(number) => number,
            None => {
                let (number, reserve) = self.numbers.give()?;
                self.reserve = self.reserve.max(reserve);
                number
            }
        };
        self.staged
            .insert(customer.id.clone(), Some((number, customer)));
        Ok(number)
    }

    /// Stages a delete.
    pub fn delete(&mut self, id: &CustomerId) {
        self.staged.insert(id.clone(), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Profile, Timestamp};

    /// Options for a test store in `path`, with a small cache; the tests
    /// of the store's modules share them.
    pub(super) fn options(path: &std::path::Path) -> StoreOptions {
        StoreOptions {
            path: path.to_path_buf(),
            cache_capacity_bytes: 1024 * 1024,
            durability: Durability::Relaxed,
            compress: false,
        }
    }

    /// Opens the store in `path` once the one dropped has let go of it
    /// (sled's flusher holds its lock a moment longer).
    pub(super) fn open(path: &std::path::Path) -> Store {
        open_with(&options(path))
    }

    /// [`open`], with `options`.
    fn open_with(options: &StoreOptions) -> Store {
        for _ in 0..500 {
            if let Ok(store) = Store::open(options) {
                return store;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Store::open(options).unwrap()
    }

    fn create(store: &Store, id: &str) -> u32 {
        let at = Timestamp::from_parts(1_700_000_000, 0).unwrap();
        store
            .write(|writes| {
                writes.put(Customer {
                    id: CustomerId::parse(id).unwrap(),
                    profile: Profile::default(),
                    create_time: at,
                    update_time: at,
                    create_request_id: None,
                })
            })
            .unwrap()
    }

    /// Whether the pages are compressed is chosen when the store is made,
    /// and kept: a start that asks for the other keeps the data, as made.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_store_stays_compressed_or_not_as_it_was_made() {
        let dir = tempfile::tempdir().unwrap();
        for made in [false, true] {
            let path = dir.path().join(format!("compressed-{made}"));
            let opened = |compress: bool| {
                open_with(&StoreOptions {
                    compress,
                    ..options(&path)
                })
            };
            let store = opened(made);
            assert_eq!(store.compressed(), made);
            assert_eq!(create(&store, "a"), 0);
            store.close().unwrap();
            drop(store);
            let store = opened(!made);
            assert_eq!(store.compressed(), made);
            let id = CustomerId::parse("a").unwrap();
            assert_eq!(store.get_customer(&id).unwrap().unwrap().id, id);
            assert_eq!(create(&store, "b"), 1);
        }
    }

    /// A sealed store takes no customer or event; the image token is
    /// taken out once, and never goes into a backup.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_sealed_store_writes_no_customer_and_its_token_stays_home() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        create(&store, "a");
        assert!(store.set_index_image(9).is_err(), "only of a sealed store");
        store.seal();
        store.close().unwrap();
        let refused = store
            .write(|writes| writes.number(&CustomerId::parse("a").unwrap()))
            .unwrap_err();
        assert!(matches!(refused, Error::Unavailable(_)), "{refused}");
        let batch = ActivityRecord::default();
        assert!(store.append_activity(&batch, &[], &[]).is_err());
        store.set_index_image(9).unwrap();
        let mut keys = Vec::new();
        store
            .scan_all(|change| {
                keys.push((change.tree.to_vec(), change.key.to_vec()));
                Ok(())
            })
            .unwrap();
        assert!(keys.contains(&(b"customers".to_vec(), b"a".to_vec())));
        assert!(!keys
            .iter()
            .any(|(_, key)| key == INDEX_IMAGE_KEY.as_bytes()));
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.take_index_image().unwrap(), Some(9));
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.take_index_image().unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn numbers_are_never_given_twice_across_clean_and_unclean_stops() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!([create(&store, "a"), create(&store, "b")], [0, 1]);
        // A customer written again keeps their number.
        assert_eq!(create(&store, "a"), 0);
        // A clean stop stores the next number exactly.
        store.close().unwrap();
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.customer_numbers(), 2);
        assert_eq!(create(&store, "c"), 2);
        // A stop without `close`, as a crash: the next start gives numbers
        // after the whole block the last one came from.
        store.flush().unwrap();
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.customer_numbers(), 2 + NUMBER_BLOCK);
        assert_eq!(create(&store, "d"), 2 + NUMBER_BLOCK);
        let mut numbers = Vec::new();
        store
            .for_each_customer(|number, customer| numbers.push((customer.id.to_string(), number)))
            .unwrap();
        assert_eq!(
            numbers,
            [
                ("a".to_owned(), 0),
                ("b".to_owned(), 1),
                ("c".to_owned(), 2),
                ("d".to_owned(), 2 + NUMBER_BLOCK)
            ]
        );
    }
}
