//! Loading the index from the store at start-up. Every customer's row is
//! at their number, and every stored event names its customer by number,
//! so the customers and the events are read at once, on two threads, and
//! no event is placed by looking up a string:
//!
//! - one thread reads the customers into the profile columns;
//! - the other counts each customer's events in the batches' customer
//!   columns, sizes their arrays exactly, then reads the batches again and
//!   fills them from the fixed columns;
//!
//! then every series is sorted and the derived columns are filled, in
//! parallel.

use rayon::prelude::*;

use super::columns::{CustomerFields, Derived};
use super::series::{Event, EventRef, Loaded, Row};
use super::FeatureIndex;
use crate::domain::features::Thresholds;
use crate::domain::{Customer, Error, Result};
use crate::store::{BatchColumns, Store, ERASED};

/// Customers handed from the reading thread to the indexing thread at a
/// time.
const LOAD_CHUNK: usize = 4096;

/// Rows finished at a time: their derived columns are held in between.
const FINISH_CHUNK: usize = 1 << 16;

/// What the events of the store hold, per customer number.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    purchases: u32,
    engagements: u32,
}

impl FeatureIndex {
    /// Builds the index from everything stored; blocking.
    pub fn rebuild(store: &Store, thresholds: Thresholds) -> Result<FeatureIndex> {
        let started = std::time::Instant::now();
        let mut index = FeatureIndex::new(thresholds);
        let numbers = store.customer_numbers() as usize;
        index.grow_to(numbers);
        index.reserve_ids(numbers);
        // The rows are filled on their own thread while the customers go
        // into the rest of the index.
        let mut rows = std::mem::take(&mut index.rows);
        let (customers, activity) = std::thread::scope(|scope| {
            let activity = scope.spawn(|| load_events(store, &mut rows));
            let customers = index
                .bulk_load_customers(numbers, |add| store.for_each_customer(add))
                .map(|()| started.elapsed());
            let activity = activity
                .join()
                .map_err(|_| Error::internal("the event loader panicked"));
            (customers, activity)
        });
        let customers_ms = customers?.as_millis() as u64;
        let (count_ms, fill_ms, beyond) = activity??;
        index.rows = rows;
        let read_ms = started.elapsed().as_millis() as u64;
        let orphans = index.drop_orphans() + beyond;
        if orphans > 0 {
            tracing::warn!(orphans, "stored events of unknown customers were skipped");
        }
        index.finish_load();
        let sort_ms = started.elapsed().as_millis() as u64 - read_ms;
        tracing::info!(
            customers_ms,
            count_ms,
            fill_ms,
            read_ms,
            sort_ms,
            "index rebuilt"
        );
        Ok(index)
    }

    /// Loads every stored customer, on two threads: `scan` reads and
    /// decodes them, with their numbers, on one and hands each to `add`;
    /// the rows are made on the other. Every number is below `numbers`,
    /// the rows the index already has.
    fn bulk_load_customers<S>(&mut self, numbers: usize, scan: S) -> Result<()>
    where
        S: FnOnce(&mut dyn FnMut(u32, Customer)) -> Result<()> + Send,
    {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<(u32, CustomerFields)>>(16);
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                let mut chunk = Vec::with_capacity(LOAD_CHUNK);
                let scanned = scan(&mut |number, customer| {
                    chunk.push((number, customer.into()));
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
            let mut refused = None;
            for (number, fields) in receiver.into_iter().flatten() {
                let at = number as usize;
                if at >= numbers {
                    refused.get_or_insert(format!(
                        "a stored customer has number {number}, beyond the {numbers} numbers given"
                    ));
                    continue;
                }
                if self.columns.alive[at] {
                    refused.get_or_insert(format!(
                        "the stored customers {} and {} have the same number {number}",
                        self.ids[at], fields.id
                    ));
                    continue;
                }
                self.upsert(number, fields);
            }
            reader
                .join()
                .map_err(|_| Error::internal("the customer loader panicked"))??;
            refused.map_or(Ok(()), |refused| Err(Error::internal(refused)))
        })
    }

    /// Clears the rows that hold events but no customer, which no stored
    /// batch should have; returns the events cleared.
    fn drop_orphans(&mut self) -> u64 {
        let mut orphans = 0;
        for (row, &alive) in self.rows.iter_mut().zip(&self.columns.alive) {
            if !alive {
                let events = row.purchases.len() + row.engagements().len();
                if events > 0 {
                    orphans += events as u64;
                    *row = Row::default();
                }
            }
        }
        orphans
    }

    /// Ends a bulk load: sorts every series, gives back spare capacity and
    /// fills the derived columns, over the cores.
    pub fn finish_load(&mut self) {
        self.rfm.forget();
        let thresholds = &self.thresholds;
        let mut latest = i64::MIN;
        for (chunk, rows) in self.rows.chunks_mut(FINISH_CHUNK).enumerate() {
            let derived: Vec<Derived> = rows
                .par_iter_mut()
                .map(|row| {
                    row.finish_load();
                    let total = row
                        .purchases
                        .amounts()
                        .iter()
                        .fold(0i64, |sum, &amount| sum.saturating_add(amount));
                    Derived::of(row, thresholds, total)
                })
                .collect();
            for (offset, (row, derived)) in rows.iter().zip(&derived).enumerate() {
                let at = chunk * FINISH_CHUNK + offset;
                if self.columns.alive[at] {
                    self.columns.set_derived(at, derived);
                }
                latest = latest.max(row.latest());
            }
        }
        self.max_time = self.max_time.max(latest);
    }
}

/// Places every stored event in `rows`, by its customer's number: a pass
/// that counts each row's events and sizes its arrays, then one that
/// fills them; returns how long each took, in milliseconds, and the
/// events beyond the rows, which are left out.
fn load_events(store: &Store, rows: &mut [Row]) -> Result<(u64, u64, u64)> {
    let started = std::time::Instant::now();
    let mut counts = vec![Counts::default(); rows.len()];
    store.for_each_activity(|_, batch| {
        for i in 0..batch.purchases() {
            if let Some(count) = counts.get_mut(batch.purchase_customer(i) as usize) {
                count.purchases += 1;
            }
        }
        for i in 0..batch.engagements() {
            if let Some(count) = counts.get_mut(batch.engagement_customer(i) as usize) {
                count.engagements += 1;
            }
        }
    })?;
    for (row, count) in rows.iter_mut().zip(&counts) {
        row.reserve_exact(count.purchases as usize, count.engagements as usize);
    }
    drop(counts);
    let count_ms = started.elapsed().as_millis() as u64;
    let mut failure = None;
    let mut beyond = 0;
    store.for_each_activity(|seq, batch| match place(seq, &batch, rows) {
        Ok(left_out) => beyond += left_out,
        Err(error) => {
            failure.get_or_insert(error);
        }
    })?;
    let fill_ms = started.elapsed().as_millis() as u64 - count_ms;
    failure.map_or(Ok((count_ms, fill_ms, beyond)), Err)
}

/// Places the events of batch `seq` in `rows`; returns those whose
/// number is beyond the rows, which it leaves out.
fn place(seq: u64, batch: &BatchColumns<'_>, rows: &mut [Row]) -> Result<u64> {
    let mut beyond = 0;
    for i in 0..batch.purchases() {
        let fixed = batch.purchase(i);
        if fixed.customer == ERASED {
            continue;
        }
        let Some(row) = rows.get_mut(fixed.customer as usize) else {
            beyond += 1;
            continue;
        };
        row.push(Loaded::Purchase(Event {
            time: fixed.time,
            amount: Some(fixed.amount),
            key: fixed.key,
            at: EventRef::new(seq, i),
        }));
    }
    for i in 0..batch.engagements() {
        let (fixed, kind) = batch.engagement(i)?;
        if fixed.customer == ERASED {
            continue;
        }
        let Some(row) = rows.get_mut(fixed.customer as usize) else {
            beyond += 1;
            continue;
        };
        row.push(Loaded::Engagement(
            kind,
            Event {
                time: fixed.time,
                amount: None,
                key: fixed.key,
                at: EventRef::new(seq, i),
            },
        ));
    }
    Ok(beyond)
}
