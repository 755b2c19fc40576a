//! The migration of a store of format 1 to format 2, run by
//! [`Store::open`](super::Store::open) on the first start of a build that
//! writes format 2: customers get their numbers, in id order, and every
//! activity batch is rewritten in columns naming them.
//!
//! It writes in sled batches and can be killed at any point: every record
//! says its own format, a new run converts only what is still in format 1,
//! and the store says format 2 only once all is converted and flushed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use foldhash::fast::RandomState;

use super::batch::{self, ERASED};
use super::{batch_seq, codec, storage_error, FORMAT_VERSION, NUMBERS_KEY};
use crate::domain::{Error, Result};

/// Records converted per sled batch.
const CHUNK: usize = 10_000;

/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Converts the store's trees from format 1 and marks it format 2.
pub(super) fn from_v1(
    db: &sled::Db,
    meta: &sled::Tree,
    customers: &sled::Tree,
    activity: &sled::Tree,
) -> Result<()> {
    let started = Instant::now();
    tracing::info!(
        customers = customers.len(),
        batches = activity.len(),
        "migrating the store from format 1 to format 2; it serves once done"
    );
    let (numbers, next) = number_customers(customers)?;
    let orphans = convert_activity(activity, &numbers)?;
    if orphans > 0 {
        tracing::warn!(
            orphans,
            "stored events of unknown customers were dropped by the migration"
        );
    }
    db.flush().map_err(storage_error)?;
    let mut done = sled::Batch::default();
    done.insert(NUMBERS_KEY, &next.to_be_bytes());
    done.insert("format", &[FORMAT_VERSION]);
    meta.apply_batch(done).map_err(storage_error)?;
    db.flush().map_err(storage_error)?;
    tracing::info!(
        customers = numbers.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "store migrated to format 2"
    );
    Ok(())
}

/// Every customer's number by id, and the next number to give.
type Numbered = (HashMap<CompactString, u32, RandomState>, u32);

/// Gives every customer of format 1 a number after those a killed run
/// already gave, and rewrites their records; returns every customer's
/// number by id, and the next number.
fn number_customers(customers: &sled::Tree) -> Result<Numbered> {
    let mut numbers: HashMap<CompactString, u32, RandomState> = HashMap::default();
    numbers.reserve(customers.len());
    // Those converted by a run that was killed keep their numbers.
    for entry in customers.iter() {
        let (key, value) = entry.map_err(storage_error)?;
        if !codec::is_customer_v1(&value) {
            numbers.insert(id_of(&key)?, codec::customer_number(&value)?);
        }
    }
    let mut next = numbers.values().max().map_or(0, |&max| max + 1);
    let mut writer = ChunkWriter::new(customers, CHUNK, "customers");
    for entry in customers.iter() {
        let (key, value) = entry.map_err(storage_error)?;
        if !codec::is_customer_v1(&value) {
            continue;
        }
        if next == ERASED {
            return Err(Error::internal("too many customers to number"));
        }
        let customer = codec::decode_customer_v1(&value)?;
        numbers.insert(id_of(&key)?, next);
        writer.put(key, codec::encode_customer(next, &customer)?)?;
        next += 1;
    }
    writer.finish()?;
    Ok((numbers, next))
}

fn id_of(key: &[u8]) -> Result<CompactString> {
    std::str::from_utf8(key)
        .map(CompactString::new)
        .map_err(|_| Error::internal("a customer key is not UTF-8"))
}

/// Rewrites every activity batch of format 1 in columns; returns the
/// events whose customer is unknown, which are stored as erased.
fn convert_activity(
    activity: &sled::Tree,
    numbers: &HashMap<CompactString, u32, RandomState>,
) -> Result<u64> {
    let mut orphans = 0;
    // Batches hold up to thousands of events each: a smaller chunk.
    let mut writer = ChunkWriter::new(activity, CHUNK / 100, "activity batches");
    let mut number_of = |id: &str| {
        numbers.get(id).copied().unwrap_or_else(|| {
            orphans += 1;
            ERASED
        })
    };
    for entry in activity.iter() {
        let (key, value) = entry.map_err(storage_error)?;
        if !codec::is_activity_v1(&value) {
            continue;
        }
        batch_seq(&key)?;
        let mut record = codec::decode_activity_v1(&value)?;
        let purchase_customers: Vec<u32> = record
            .purchases
            .iter()
            .map(|p| {
                p.as_ref()
                    .map_or(ERASED, |p| number_of(p.customer.as_str()))
            })
            .collect();
        let engagement_customers: Vec<u32> = record
            .engagements
            .iter()
            .map(|e| {
                e.as_ref()
                    .map_or(ERASED, |e| number_of(e.customer.as_str()))
            })
            .collect();
        // An event of an unknown customer is stored as erased.
        for (slot, &number) in record.purchases.iter_mut().zip(&purchase_customers) {
            if number == ERASED {
                *slot = None;
            }
        }
        for (slot, &number) in record.engagements.iter_mut().zip(&engagement_customers) {
            if number == ERASED {
                *slot = None;
            }
        }
        let value = batch::encode(&record, &purchase_customers, &engagement_customers)?;
        writer.put(key, value)?;
    }
    writer.finish()?;
    Ok(orphans)
}

/// Writes converted records into a tree in sled batches of `chunk`, and
/// logs how far it is every [`PROGRESS_EVERY`].
struct ChunkWriter<'a> {
    tree: &'a sled::Tree,
    chunk: usize,
    batch: sled::Batch,
    in_batch: usize,
    what: &'static str,
    total: usize,
    done: usize,
    logged: Instant,
}

impl<'a> ChunkWriter<'a> {
    fn new(tree: &'a sled::Tree, chunk: usize, what: &'static str) -> Self {
        ChunkWriter {
            tree,
            chunk,
            batch: sled::Batch::default(),
            in_batch: 0,
            what,
            total: tree.len(),
            done: 0,
            logged: Instant::now(),
        }
    }

    /// Stages a converted record, writing the batch once it is full.
    fn put(&mut self, key: sled::IVec, value: Vec<u8>) -> Result<()> {
        self.batch.insert(key, value);
        self.in_batch += 1;
        if self.in_batch == self.chunk {
            self.write()?;
        }
        Ok(())
    }

    /// Writes what is staged.
    fn finish(mut self) -> Result<()> {
        self.write()
    }

    fn write(&mut self) -> Result<()> {
        self.tree
            .apply_batch(std::mem::take(&mut self.batch))
            .map_err(storage_error)?;
        self.done += std::mem::take(&mut self.in_batch);
        if self.logged.elapsed() >= PROGRESS_EVERY {
            self.logged = Instant::now();
            tracing::info!(
                what = self.what,
                converted = self.done,
                of = self.total,
                "migrating the store to format 2"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;
    use crate::store::tests::{open, options};
    use crate::store::Store;

    fn customer(id: &str) -> Customer {
        Customer {
            id: CustomerId::parse(id).unwrap(),
            profile: Profile::default(),
            create_time: Timestamp::from_parts(1_700_000_000, 0).unwrap(),
            update_time: Timestamp::from_parts(1_700_000_000, 0).unwrap(),
            create_request_id: None,
        }
    }

    fn purchase(id: &str, customer: &str, seconds: i64) -> Purchase {
        Purchase {
            id: EventId::parse(id).unwrap(),
            customer: CustomerId::parse(customer).unwrap(),
            occurred_at: Timestamp::from_parts(seconds, 0).unwrap(),
            amount_minor: 500,
            quantity: 1,
            category: "books".into(),
            durability: ProductDurability::Durable,
        }
    }

    fn engagement(id: &str, customer: &str) -> Engagement {
        Engagement {
            id: EventId::parse(id).unwrap(),
            customer: CustomerId::parse(customer).unwrap(),
            occurred_at: Timestamp::from_parts(1_700_000_500, 0).unwrap(),
            kind: EngagementKind::Visit,
            nps_score: None,
            channel: "app".into(),
        }
    }

    /// Writes a store of format 1 into `path`, as that format's build did.
    fn write_v1(path: &std::path::Path, batches: &[ActivityRecord]) {
        let db = sled::open(path).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert("format", &[1]).unwrap();
        let customers = db.open_tree("customers").unwrap();
        for id in ["c-b", "c-a", "c-c"] {
            customers
                .insert(id, codec::encode_customer_v1(&customer(id)).unwrap())
                .unwrap();
        }
        let activity = db.open_tree("activity").unwrap();
        for (seq, record) in batches.iter().enumerate() {
            activity
                .insert(
                    (seq as u64).to_be_bytes(),
                    codec::encode_activity_v1(record).unwrap(),
                )
                .unwrap();
        }
        db.flush().unwrap();
    }

    /// Every stored customer's id and number, in id order.
    fn numbers_of(store: &Store) -> Vec<(String, u32)> {
        let mut numbered = Vec::new();
        store
            .for_each_customer(|number, customer| numbered.push((customer.id.to_string(), number)))
            .unwrap();
        numbered
    }

    fn batches() -> Vec<ActivityRecord> {
        vec![
            ActivityRecord {
                purchases: vec![
                    Some(purchase("p-1", "c-a", 1_700_000_100)),
                    None,
                    Some(purchase("p-2", "c-c", 1_700_000_200)),
                    Some(purchase("p-3", "c-gone", 1_700_000_300)),
                ],
                engagements: vec![Some(engagement("e-1", "c-b"))],
            },
            ActivityRecord {
                purchases: vec![Some(purchase("p-4", "c-a", 1_700_000_400))],
                engagements: vec![],
            },
        ]
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_store_of_format_1_is_numbered_and_put_in_columns() {
        let dir = tempfile::tempdir().unwrap();
        write_v1(dir.path(), &batches());
        let store = open(dir.path());
        let numbered = numbers_of(&store);
        assert_eq!(
            numbered,
            [("c-a".into(), 0), ("c-b".into(), 1), ("c-c".into(), 2)]
        );
        let id_of = |number: u32| {
            numbered
                .iter()
                .find(|(_, n)| *n == number)
                .map(|(id, _)| CustomerId::parse(id).unwrap())
        };
        let mut expected = batches();
        // The event of a customer who is not stored is dropped.
        expected[0].purchases[3] = None;
        for (seq, record) in expected.iter().enumerate() {
            assert_eq!(
                store.read_activity(seq as u64, id_of).unwrap().as_ref(),
                Some(record)
            );
        }
        let mut places = Vec::new();
        store
            .for_each_activity(|seq, columns| {
                for i in 0..columns.purchases() {
                    places.push((seq, columns.purchase(i).customer));
                }
            })
            .unwrap();
        assert_eq!(places, [(0, 0), (0, ERASED), (0, 2), (0, ERASED), (1, 0)]);
        // New customers get the numbers after them.
        let number = store.write(|writes| writes.put(customer("c-new"))).unwrap();
        assert_eq!(number, 3);
        store.close().unwrap();
        drop(store);
        // Opened again, it is format 2 and unchanged.
        let store = open(dir.path());
        let again = numbers_of(&store);
        assert_eq!(again.len(), 4);
        assert_eq!(again[..3], numbered[..]);
    }

    #[tokio::test]
    async fn a_migration_killed_half_way_is_finished_by_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        write_v1(dir.path(), &batches());
        {
            // The customers converted, the activity not: as if killed.
            let db = sled::open(dir.path()).unwrap();
            let customers = db.open_tree("customers").unwrap();
            number_customers(&customers).unwrap();
            db.flush().unwrap();
        }
        let store = open(dir.path());
        let numbered = numbers_of(&store);
        assert_eq!(
            numbered,
            [("c-a".into(), 0), ("c-b".into(), 1), ("c-c".into(), 2)]
        );
        let mut customers_of_events = Vec::new();
        store
            .for_each_activity(|_, columns| {
                for i in 0..columns.purchases() {
                    customers_of_events.push(columns.purchase(i).customer);
                }
            })
            .unwrap();
        assert_eq!(customers_of_events, [0, ERASED, 2, ERASED, 0]);
    }

    #[tokio::test]
    async fn a_store_of_an_unknown_format_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert("format", &[9])
                .unwrap();
            db.flush().unwrap();
        }
        // The database just dropped may hold its lock a moment longer.
        let error = (0..500)
            .map(|_| {
                let error = Store::open(&options(dir.path())).unwrap_err().to_string();
                if error.contains("could not acquire lock") {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                error
            })
            .find(|error| !error.contains("could not acquire lock"))
            .unwrap();
        assert!(error.contains("format [9]"), "{error}");
        assert!(error.contains("restore a backup"), "{error}");
    }
}
