//! The durable store, on sled. Nothing outside this module knows sled.
//!
//! # Key layout
//!
//! | tree        | key                          | value                                  |
//! |-------------|------------------------------|----------------------------------------|
//! | `meta`      | `format`                     | the store format version, one byte     |
//! | `customers` | the customer id, as UTF-8    | version byte + postcard `Customer`     |
//! | `activity`  | batch sequence, u64 big-endian | version byte + postcard `ActivityRecord` |
//! | `segments`  | the segment id, as UTF-8     | version byte + postcard `Segment`      |
//! | `meta`      | `persona_catalog`            | version byte + postcard `Catalog`      |
//! | `meta`      | `page_token_key`             | 32 random bytes, made on first open ([`token_key`]) |
//!
//! Customer ids sort byte-wise, which is the order `ListCustomers` pages in.
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
//! Every method that writes reports what it changed to the backup tap
//! ([`backup::TapSlot::record`]) once the change is applied, so that a
//! backup taken while writes go on can be brought to one moment's state.

pub mod backup;
mod codec;
mod commit;
pub mod token_key;

pub use codec::{ActivityView, EngagementView, PurchaseView};
pub use commit::{FlushCounts, FLUSH_BUCKETS_MICROS};
pub use token_key::PageTokenKey;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use sled::Transactional as _;

use crate::domain::persona::Catalog;
use crate::domain::segment::{Segment, SegmentId};
use crate::domain::{ActivityRecord, Customer, CustomerId, Error, Result};
use commit::GroupCommit;

/// The key of the persona catalog in the `meta` tree.
const CATALOG_KEY: &str = "persona_catalog";
/// The store format this build writes and understands.
const FORMAT_VERSION: u8 = 1;
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
    /// The format version and the persona catalog.
    meta: sled::Tree,
    /// The sequence number of the next activity batch.
    next_batch: AtomicU64,
    /// The key that authenticates page tokens.
    page_token_key: PageTokenKey,
    /// The group committer.
    commit: GroupCommit,
    /// When writes are acknowledged.
    durability: Durability,
    /// Where writes report their changes while a backup runs.
    tap: backup::TapSlot,
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
        .map(|bytes| codec::decode_customer(&bytes))
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
        let db = sled::Config::new()
            .path(&options.path)
            .cache_capacity(options.cache_capacity_bytes)
            .flush_every_ms(Some(PERIODIC_FLUSH_MS))
            .open()
            .map_err(storage_error)?;
        let meta = db.open_tree("meta").map_err(storage_error)?;
        match meta.get("format").map_err(storage_error)? {
            None => {
                meta.insert("format", &[FORMAT_VERSION])
                    .map_err(storage_error)?;
            }
            Some(version) if version.as_ref() == [FORMAT_VERSION] => {}
            Some(version) => {
                return Err(Error::internal(format!(
                    "store format {version:?} is not supported by this build (expects {FORMAT_VERSION})"
                )));
            }
        }
        let customers = db.open_tree("customers").map_err(storage_error)?;
        let activity = db.open_tree("activity").map_err(storage_error)?;
        let segments = db.open_tree("segments").map_err(storage_error)?;
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
            meta,
            next_batch: AtomicU64::new(next_batch),
            page_token_key,
            commit,
            durability: options.durability,
            tap: backup::TapSlot::default(),
        })
    }

    /// The key that authenticates page tokens; never to be sent.
    pub fn page_token_key(&self) -> &PageTokenKey {
        &self.page_token_key
    }

    /// Reads one customer.
    pub fn get_customer(&self, id: &CustomerId) -> Result<Option<Customer>> {
        read_customer(&self.customers, id)
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
                codec::decode_customer(&value)
            })
            .collect()
    }

    /// Runs `change` as one atomic write: it reads through `writes`, stages
    /// puts and deletes there, and they are applied together if it returns
    /// `Ok`. Blocking; the caller runs one write at a time (see the module
    /// docs).
    pub fn write<T>(&self, change: impl FnOnce(&mut CustomerWrites<'_>) -> Result<T>) -> Result<T> {
        let mut writes = CustomerWrites {
            tree: &self.customers,
            staged: BTreeMap::new(),
        };
        let outcome = change(&mut writes)?;
        let mut staged = writes.staged.into_iter();
        match (staged.next(), staged.next()) {
            (None, _) => {}
            // A single key is atomic on its own, and a plain insert avoids
            // the cost of a batch, which seals sled's log buffer.
            (Some((id, record)), None) => {
                let value = record
                    .map(|customer| codec::encode_customer(&customer).map(sled::IVec::from))
                    .transpose()?;
                match &value {
                    Some(bytes) => self.customers.insert(id.as_str(), bytes.clone()).map(drop),
                    None => self.customers.remove(id.as_str()).map(drop),
                }
                .map_err(storage_error)?;
                self.tap
                    .record(&self.customers, id.as_str().as_bytes(), value.as_ref());
            }
            (Some(first), Some(second)) => {
                let mut batch = sled::Batch::default();
                let mut applied = Vec::new();
                for (id, record) in [first, second].into_iter().chain(staged) {
                    let value = record
                        .map(|customer| codec::encode_customer(&customer).map(sled::IVec::from))
                        .transpose()?;
                    match &value {
                        Some(bytes) => batch.insert(id.as_str(), bytes.clone()),
                        None => batch.remove(id.as_str()),
                    }
                    applied.push((id, value));
                }
                self.customers.apply_batch(batch).map_err(storage_error)?;
                self.tap.record_all(
                    &self.customers,
                    applied
                        .iter()
                        .map(|(id, value)| (id.as_str().as_bytes(), value.as_ref())),
                );
            }
        }
        Ok(outcome)
    }

    /// Calls `visit` with every stored customer, in id order; blocking.
    pub fn for_each_customer(&self, mut visit: impl FnMut(Customer)) -> Result<()> {
        for entry in self.customers.iter() {
            let (_key, value) = entry.map_err(storage_error)?;
            visit(codec::decode_customer(&value)?);
        }
        Ok(())
    }

    /// Stores a batch of events and returns its sequence number; blocking.
    pub fn append_activity(&self, batch: &ActivityRecord) -> Result<u64> {
        let seq = self.next_batch.fetch_add(1, Ordering::Relaxed);
        let value = sled::IVec::from(codec::encode_activity(batch)?);
        self.activity
            .insert(seq.to_be_bytes(), value.clone())
            .map_err(storage_error)?;
        self.tap
            .record(&self.activity, &seq.to_be_bytes(), Some(&value));
        Ok(seq)
    }

    /// Reads one batch of events.
    pub fn read_activity(&self, seq: u64) -> Result<Option<ActivityRecord>> {
        self.activity
            .get(seq.to_be_bytes())
            .map_err(storage_error)?
            .map(|bytes| codec::decode_activity(&bytes))
            .transpose()
    }

    /// Calls `visit` with every batch of events, read in place, in
    /// sequence order; blocking.
    pub fn for_each_activity(&self, mut visit: impl FnMut(u64, ActivityView<'_>)) -> Result<()> {
        for entry in self.activity.iter() {
            let (key, value) = entry.map_err(storage_error)?;
            visit(batch_seq(&key)?, codec::view_activity(&value)?);
        }
        Ok(())
    }

    /// Removes a customer and, in the same transaction, replaces the given
    /// activity batches with their rewritten forms (`None` removes one).
    pub fn erase_customer(
        &self,
        id: &CustomerId,
        rewritten: &[(u64, Option<ActivityRecord>)],
    ) -> Result<()> {
        let encoded = rewritten
            .iter()
            .map(|(seq, batch)| {
                Ok((
                    seq.to_be_bytes(),
                    batch
                        .as_ref()
                        .map(|batch| codec::encode_activity(batch).map(sled::IVec::from))
                        .transpose()?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
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
        self.segments
            .insert(segment.id.as_str(), value.clone())
            .map_err(storage_error)?;
        self.tap
            .record(&self.segments, segment.id.as_str().as_bytes(), Some(&value));
        Ok(())
    }

    /// Removes a segment; returns whether it existed.
    pub fn delete_segment(&self, id: &SegmentId) -> Result<bool> {
        let existed = self
            .segments
            .remove(id.as_str())
            .map(|old| old.is_some())
            .map_err(storage_error)?;
        self.tap
            .record(&self.segments, id.as_str().as_bytes(), None);
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

    /// Stores the persona catalog, replacing the one before; blocking.
    pub fn put_catalog(&self, catalog: &Catalog) -> Result<()> {
        let value = sled::IVec::from(codec::encode_catalog(catalog)?);
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

    /// Flushes everything to disk; blocking. Used at shutdown.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(storage_error)
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
    /// Staged puts (`Some`) and deletes (`None`).
    staged: BTreeMap<CustomerId, Option<Customer>>,
}

impl CustomerWrites<'_> {
    /// Reads a customer, seeing the changes staged so far.
    pub fn get(&self, id: &CustomerId) -> Result<Option<Customer>> {
        if let Some(staged) = self.staged.get(id) {
            return Ok(staged.clone());
        }
        read_customer(self.tree, id)
    }

    /// Stages a create or replace.
    pub fn put(&mut self, customer: Customer) {
        self.staged.insert(customer.id.clone(), Some(customer));
    }

    /// Stages a delete.
    pub fn delete(&mut self, id: &CustomerId) {
        self.staged.insert(id.clone(), None);
    }
}
