//! The in-memory feature index: one row per customer with what features
//! need, and each customer's activity times and amounts in compact arrays.
//! It is rebuilt from the store at start-up and updated on every write;
//! features are computed from it, never by scanning the store.
//!
//! Per purchase it holds 32 bytes: the time, the amount, a 64-bit hash of
//! the purchase id (for idempotency) and where the event is stored.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use compact_str::CompactString;
use foldhash::fast::{FixedState, RandomState};

use crate::domain::features::FirstEngagements;
use crate::domain::{Customer, CustomerId, Date, EngagementKind, Error, Result};

/// Where an event is stored: its batch and its position in the batch,
/// packed into 64 bits (40 for the batch, 24 for the position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventRef(u64);

const POSITION_BITS: u32 = 24;

impl EventRef {
    /// The most events one batch may hold.
    pub const MAX_BATCH_EVENTS: usize = 1 << POSITION_BITS;

    /// Packs a batch sequence number and a position.
    pub fn new(batch: u64, position: usize) -> Self {
        debug_assert!(position < Self::MAX_BATCH_EVENTS && batch < 1 << (64 - POSITION_BITS));
        EventRef(batch << POSITION_BITS | position as u64)
    }

    /// The batch's sequence number.
    pub fn batch(self) -> u64 {
        self.0 >> POSITION_BITS
    }

    /// The position in the batch.
    pub fn position(self) -> usize {
        (self.0 & ((1 << POSITION_BITS) - 1)) as usize
    }
}

/// A 64-bit hash of an event id: equal ids have equal keys; equal keys are
/// checked against the stored ids.
pub fn event_key(id: &str) -> u64 {
    // A fixed seed: keys, and so page tokens, are the same in every run.
    FixedState::with_seed(0x5E6D_E47D).hash_one(id)
}

/// What the index keeps of one event.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// When it happened, nanoseconds since the epoch.
    pub time: i64,
    /// Its amount in minor units, for a purchase.
    pub amount: Option<i64>,
    /// The hash of its id.
    pub key: u64,
    /// Where it is stored.
    pub at: EventRef,
}

/// What the index keeps of a customer's profile.
#[derive(Debug)]
struct CustomerFields {
    /// The id.
    id: CustomerId,
    /// Date of birth.
    birth_date: Option<Date>,
    /// Yearly income in minor units.
    income_minor: Option<i64>,
}

impl From<&Customer> for CustomerFields {
    fn from(customer: &Customer) -> Self {
        CustomerFields {
            id: customer.id.clone(),
            birth_date: customer.profile.birth_date,
            income_minor: customer
                .profile
                .annual_income
                .map(|money| money.minor_units),
        }
    }
}

impl From<Customer> for CustomerFields {
    fn from(customer: Customer) -> Self {
        CustomerFields {
            birth_date: customer.profile.birth_date,
            income_minor: customer
                .profile
                .annual_income
                .map(|money| money.minor_units),
            id: customer.id,
        }
    }
}

/// One event of a bulk load.
#[derive(Debug, Clone, Copy)]
pub enum Loaded {
    /// A purchase.
    Purchase(Event),
    /// An engagement event of a kind.
    Engagement(EngagementKind, Event),
}

/// Events handed from the reading thread to the indexing thread at a time.
const LOAD_CHUNK: usize = 4096;

/// One customer's events of one kind, sorted by (time, key).
#[derive(Debug, Default)]
pub struct Series {
    /// Occurrence times, nanoseconds since the epoch.
    pub times: Vec<i64>,
    /// Amounts in minor units (purchases only; empty for engagements).
    pub amounts: Vec<i64>,
    /// Hashes of the event ids.
    pub keys: Vec<u64>,
    /// Where each event is stored.
    pub refs: Vec<EventRef>,
    /// The keys of a long series as a set, so that a duplicate check does
    /// not scan it; `None` for short series. Boxed, so that the many short
    /// series pay 8 bytes for it rather than a whole table header.
    #[allow(clippy::box_collection)]
    key_set: Option<Box<HashSet<u64, RandomState>>>,
}

/// The length from which a series keeps a key set. Shorter series are
/// scanned, which is as fast and costs no memory.
const KEY_SET_FROM: usize = 64;

impl Series {
    /// Adds an event at its place in (time, key) order.
    fn insert(&mut self, time: i64, amount: Option<i64>, key: u64, at: EventRef) {
        let position = self.position_after(time, key);
        self.times.insert(position, time);
        if let Some(amount) = amount {
            self.amounts.insert(position, amount);
        }
        self.keys.insert(position, key);
        self.refs.insert(position, at);
        self.note_key(key);
    }

    /// The index of the first event after (time, key).
    pub fn position_after(&self, time: i64, key: u64) -> usize {
        let start = self.times.partition_point(|&t| t < time);
        let end = self.times.partition_point(|&t| t <= time);
        start + self.keys[start..end].partition_point(|&k| k <= key)
    }

    /// The index of the first event at or after (time, key).
    pub fn position_before(&self, time: i64, key: u64) -> usize {
        let start = self.times.partition_point(|&t| t < time);
        let end = self.times.partition_point(|&t| t <= time);
        start + self.keys[start..end].partition_point(|&k| k < key)
    }

    /// Where the events with this key are stored.
    pub fn refs_with_key(&self, key: u64) -> Vec<EventRef> {
        if self.key_set.as_ref().is_some_and(|set| !set.contains(&key)) {
            return Vec::new();
        }
        self.keys
            .iter()
            .zip(&self.refs)
            .filter(|(k, _)| **k == key)
            .map(|(_, at)| *at)
            .collect()
    }

    /// Keeps the key set of a long series in step, building it once the
    /// series passes [`KEY_SET_FROM`] events.
    fn note_key(&mut self, key: u64) {
        match &mut self.key_set {
            Some(set) => {
                set.insert(key);
            }
            None if self.keys.len() >= KEY_SET_FROM => {
                self.key_set = Some(Box::new(self.keys.iter().copied().collect()));
            }
            None => {}
        }
    }

    /// Events in the series.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether the series is empty.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Heap bytes of the arrays.
    fn heap_bytes(&self) -> usize {
        let arrays = (self.times.capacity()
            + self.amounts.capacity()
            + self.keys.capacity()
            + self.refs.capacity())
            * 8;
        // A set slot is the key and one control byte.
        arrays + self.key_set.as_ref().map_or(0, |set| set.capacity() * 9)
    }

    /// Appends an event out of order, during a bulk load; see [`Series::finish_load`].
    fn push(&mut self, time: i64, amount: Option<i64>, key: u64, at: EventRef) {
        self.times.push(time);
        if let Some(amount) = amount {
            self.amounts.push(amount);
        }
        self.keys.push(key);
        self.refs.push(at);
    }

    /// Puts a bulk-loaded series in (time, key) order and gives back its
    /// spare capacity.
    fn finish_load(&mut self) {
        let sorted = self
            .times
            .windows(2)
            .zip(self.keys.windows(2))
            .all(|(t, k)| (t[0], k[0]) <= (t[1], k[1]));
        if !sorted {
            let mut order: Vec<usize> = (0..self.times.len()).collect();
            order.sort_unstable_by_key(|&i| (self.times[i], self.keys[i]));
            let permute =
                |values: &mut Vec<i64>| *values = order.iter().map(|&i| values[i]).collect();
            permute(&mut self.times);
            if !self.amounts.is_empty() {
                permute(&mut self.amounts);
            }
            self.keys = order.iter().map(|&i| self.keys[i]).collect();
            self.refs = order.iter().map(|&i| self.refs[i]).collect();
        }
        self.times.shrink_to_fit();
        self.amounts.shrink_to_fit();
        self.keys.shrink_to_fit();
        self.refs.shrink_to_fit();
        if self.keys.len() >= KEY_SET_FROM {
            self.key_set = Some(Box::new(self.keys.iter().copied().collect()));
        }
    }
}

/// What the index holds, and the heap memory it takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexSize {
    /// Customers.
    pub customers: usize,
    /// Purchases.
    pub purchases: usize,
    /// Bytes of the purchase arrays.
    pub purchase_bytes: usize,
    /// Bytes of everything else: the id table, the rows, the engagement arrays.
    pub customer_bytes: usize,
}

/// One customer.
#[derive(Debug)]
pub struct Row {
    /// The customer's id.
    pub id: CustomerId,
    /// Date of birth.
    pub birth_date: Option<Date>,
    /// Yearly income in minor units.
    pub income_minor: Option<i64>,
    /// Purchases.
    pub purchases: Series,
    /// Engagement events and firsts, for the customers who have any: most
    /// have none, and pay 8 bytes for it.
    engaged: Option<Box<Engaged>>,
}

/// A customer's engagement events.
#[derive(Debug, Default)]
struct Engaged {
    /// The events.
    series: Series,
    /// The first engagement of each kind.
    firsts: FirstEngagements,
}

/// The series of a customer without engagement events.
static NO_EVENTS: Series = Series {
    times: Vec::new(),
    amounts: Vec::new(),
    keys: Vec::new(),
    refs: Vec::new(),
    key_set: None,
};

impl Row {
    /// Engagement events.
    pub fn engagements(&self) -> &Series {
        self.engaged
            .as_ref()
            .map_or(&NO_EVENTS, |engaged| &engaged.series)
    }

    /// The first engagement of each kind.
    pub fn firsts(&self) -> FirstEngagements {
        self.engaged
            .as_ref()
            .map(|engaged| engaged.firsts)
            .unwrap_or_default()
    }

    fn engaged_mut(&mut self) -> &mut Engaged {
        self.engaged.get_or_insert_with(Box::default)
    }
}

/// The index.
#[derive(Debug, Default)]
pub struct FeatureIndex {
    /// Row number by customer id.
    /// Ids of up to 24 bytes live in the table itself, so a lookup touches
    /// no other memory.
    rows: HashMap<CompactString, u32, RandomState>,
    /// Rows; `None` where a customer was deleted.
    customers: Vec<Option<Row>>,
}

impl FeatureIndex {
    /// Adds a customer, or refreshes the profile fields of a known one.
    pub fn upsert_customer(&mut self, customer: &Customer) {
        self.upsert(customer.into());
    }

    fn upsert(&mut self, fields: CustomerFields) {
        let CustomerFields {
            id,
            birth_date,
            income_minor,
        } = fields;
        if let Some(row) = self.row_mut(id.as_str()) {
            row.birth_date = birth_date;
            row.income_minor = income_minor;
            return;
        }
        let number = self.customers.len() as u32;
        self.rows.insert(CompactString::new(id.as_str()), number);
        self.customers.push(Some(Row {
            id,
            birth_date,
            income_minor,
            purchases: Series::default(),
            engaged: None,
        }));
    }

    /// Loads every stored customer, on two threads: `scan` reads and
    /// decodes them on one and hands each to `add`; the rows are made on
    /// the other.
    pub fn bulk_load_customers<S>(&mut self, scan: S) -> Result<()>
    where
        S: FnOnce(&mut dyn FnMut(Customer)) -> Result<()> + Send,
    {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<CustomerFields>>(16);
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                let mut chunk = Vec::with_capacity(LOAD_CHUNK);
                let scanned = scan(&mut |customer| {
                    chunk.push(customer.into());
                    if chunk.len() == LOAD_CHUNK {
                        // The receiver only stops early on a panic, which the join reports.
                        let _ = sender.send(std::mem::replace(
                            &mut chunk,
                            Vec::with_capacity(LOAD_CHUNK),
                        ));
                    }
                });
                let _ = sender.send(chunk);
                scanned
            });
            for fields in receiver.into_iter().flatten() {
                self.upsert(fields);
            }
            reader
                .join()
                .map_err(|_| Error::internal("the customer loader panicked"))?
        })
    }

    /// Removes a customer and returns their row.
    pub fn remove_customer(&mut self, id: &CustomerId) -> Option<Row> {
        let number = self.rows.remove(id.as_str())?;
        self.customers.get_mut(number as usize)?.take()
    }

    /// The row number of a customer.
    pub fn row_number(&self, id: &str) -> Option<u32> {
        self.rows.get(id).copied()
    }

    /// A customer's row.
    pub fn row(&self, id: &str) -> Option<&Row> {
        self.row_at(self.row_number(id)?)
    }

    /// A row by number.
    pub fn row_at(&self, number: u32) -> Option<&Row> {
        self.customers.get(number as usize)?.as_ref()
    }

    fn row_mut(&mut self, id: &str) -> Option<&mut Row> {
        let number = self.row_number(id)?;
        self.customers.get_mut(number as usize)?.as_mut()
    }

    /// Records a purchase of the customer in row `number`, in its place;
    /// returns false if there is none.
    pub fn add_purchase(&mut self, number: u32, event: Event) -> bool {
        let Some(Some(row)) = self.customers.get_mut(number as usize) else {
            return false;
        };
        row.purchases
            .insert(event.time, event.amount, event.key, event.at);
        true
    }

    /// Records an engagement event of the customer in row `number`, in its
    /// place; returns false if there is none.
    pub fn add_engagement(&mut self, number: u32, kind: EngagementKind, event: Event) -> bool {
        let Some(Some(row)) = self.customers.get_mut(number as usize) else {
            return false;
        };
        let engaged = row.engaged_mut();
        engaged.firsts.note(kind, event.time);
        engaged
            .series
            .insert(event.time, event.amount, event.key, event.at);
        true
    }

    /// Loads every stored event, on two threads: `scan` reads the store on
    /// one and hands each event, with its customer's id, to `add`; the
    /// events go into their rows on the other. Call
    /// [`FeatureIndex::finish_load`] after. Returns the events whose
    /// customer is unknown, which are skipped.
    pub fn bulk_load<S>(&mut self, scan: S) -> Result<u64>
    where
        S: FnOnce(&mut dyn FnMut(&str, Loaded)) -> Result<()> + Send,
    {
        let rows = &self.rows;
        let customers = &mut self.customers;
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<(u32, Loaded)>>(16);
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                let mut orphans = 0u64;
                let mut chunk = Vec::with_capacity(LOAD_CHUNK);
                let scanned = scan(&mut |customer, loaded| match rows.get(customer) {
                    Some(&number) => {
                        chunk.push((number, loaded));
                        if chunk.len() == LOAD_CHUNK {
                            let full =
                                std::mem::replace(&mut chunk, Vec::with_capacity(LOAD_CHUNK));
                            // The receiver only stops early on a panic, which the join reports.
                            let _ = sender.send(full);
                        }
                    }
                    None => orphans += 1,
                });
                let _ = sender.send(chunk);
                scanned.map(|()| orphans)
            });
            for chunk in receiver {
                for (number, loaded) in chunk {
                    let Some(Some(row)) = customers.get_mut(number as usize) else {
                        continue;
                    };
                    match loaded {
                        Loaded::Purchase(event) => {
                            row.purchases
                                .push(event.time, event.amount, event.key, event.at)
                        }
                        Loaded::Engagement(kind, event) => {
                            let engaged = row.engaged_mut();
                            engaged.firsts.note(kind, event.time);
                            engaged
                                .series
                                .push(event.time, event.amount, event.key, event.at);
                        }
                    }
                }
            }
            reader
                .join()
                .map_err(|_| Error::internal("the index loader panicked"))?
        })
    }

    /// Customers in the index.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the index holds no customer.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// What the index holds and the heap memory it takes, from the
    /// capacities of its arrays and tables.
    pub fn size(&self) -> IndexSize {
        use std::mem::size_of;
        let mut size = IndexSize {
            customers: self.rows.len(),
            // The id table: key, value and one control byte per slot.
            customer_bytes: self.rows.capacity()
                * (size_of::<CompactString>() + size_of::<u32>() + 1)
                + self.customers.capacity() * size_of::<Option<Row>>(),
            ..IndexSize::default()
        };
        for row in self.customers.iter().flatten() {
            size.purchases += row.purchases.len();
            size.purchase_bytes += row.purchases.heap_bytes();
            size.customer_bytes += row.id.as_str().len()
                + row.engaged.as_ref().map_or(0, |engaged| {
                    size_of::<Engaged>() + engaged.series.heap_bytes()
                });
        }
        size
    }

    /// Ends a bulk load: sorts every series and gives back spare capacity,
    /// on two threads.
    pub fn finish_load(&mut self) {
        let half = self.customers.len() / 2;
        let (first, second) = self.customers.split_at_mut(half);
        let finish = |rows: &mut [Option<Row>]| {
            for row in rows.iter_mut().flatten() {
                row.purchases.finish_load();
                if let Some(engaged) = &mut row.engaged {
                    engaged.series.finish_load();
                }
            }
        };
        std::thread::scope(|scope| {
            scope.spawn(|| finish(first));
            finish(second);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_pack_and_unpack() {
        let at = EventRef::new(123_456_789, 65_535);
        assert_eq!((at.batch(), at.position()), (123_456_789, 65_535));
    }

    #[test]
    fn series_stay_in_time_then_key_order() {
        let mut series = Series::default();
        for (time, key) in [(5, 1), (1, 9), (5, 0), (3, 3)] {
            series.insert(time, Some(time * 10), key, EventRef::new(0, 0));
        }
        assert_eq!(series.times, [1, 3, 5, 5]);
        assert_eq!(series.keys, [9, 3, 0, 1]);
        assert_eq!(series.amounts, [10, 30, 50, 50]);
        assert_eq!(series.position_after(5, 0), 3);
        assert_eq!(series.position_after(2, 0), 1);
    }
}
