//! Loading the index from the store at start-up: customers and events are
//! read and decoded on one thread and put into rows on another; then every
//! series is sorted and the derived columns are filled, in parallel.

use std::hash::BuildHasher;

use rayon::prelude::*;

use super::columns::{CustomerFields, Derived};
use super::series::{event_key, Event, EventRef, Loaded};
use super::FeatureIndex;
use crate::domain::features::Thresholds;
use crate::domain::{Customer, Error, Result};
use crate::store::Store;

/// Customers or events handed from the reading thread to the indexing
/// thread at a time.
const LOAD_CHUNK: usize = 4096;

/// Rows finished at a time: their derived columns are held in between.
const FINISH_CHUNK: usize = 1 << 16;

impl FeatureIndex {
    /// Builds the index from everything stored; blocking.
    pub fn rebuild(store: &Store, thresholds: Thresholds) -> Result<FeatureIndex> {
        let started = std::time::Instant::now();
        let mut index = FeatureIndex::new(thresholds);
        index.bulk_load_customers(|add| store.for_each_customer(add))?;
        let customers_ms = started.elapsed().as_millis() as u64;
        let orphans = index.bulk_load(|add| {
            store.for_each_activity(|seq, record| {
                for (position, purchase) in record.purchases.iter().enumerate() {
                    let Some(purchase) = purchase else { continue };
                    let event = Event {
                        time: purchase.occurred_at.as_nanos(),
                        amount: Some(purchase.amount_minor),
                        key: event_key(purchase.id),
                        at: EventRef::new(seq, position),
                    };
                    add(purchase.customer, Loaded::Purchase(event));
                }
                for (position, engagement) in record.engagements.iter().enumerate() {
                    let Some(engagement) = engagement else {
                        continue;
                    };
                    let event = Event {
                        time: engagement.occurred_at.as_nanos(),
                        amount: None,
                        key: event_key(engagement.id),
                        at: EventRef::new(seq, position),
                    };
                    add(
                        engagement.customer,
                        Loaded::Engagement(engagement.kind, event),
                    );
                }
            })
        })?;
        if orphans > 0 {
            tracing::warn!(orphans, "stored events of unknown customers were skipped");
        }
        let activity_ms = started.elapsed().as_millis() as u64 - customers_ms;
        index.finish_load();
        let sort_ms = started.elapsed().as_millis() as u64 - customers_ms - activity_ms;
        tracing::info!(customers_ms, activity_ms, sort_ms, "index rebuilt");
        Ok(index)
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

    /// Loads every stored event, on two threads: `scan` reads the store on
    /// one and hands each event, with its customer's id, to `add`; the
    /// events go into their rows on the other. Call
    /// [`FeatureIndex::finish_load`] after. Returns the events whose
    /// customer is unknown, which are skipped.
    pub fn bulk_load<S>(&mut self, scan: S) -> Result<u64>
    where
        S: FnOnce(&mut dyn FnMut(&str, Loaded)) -> Result<()> + Send,
    {
        let (table, hasher, ids) = (&self.table, &self.hasher, &self.ids);
        let rows = &mut self.rows;
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<(u32, Loaded)>>(16);
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                let mut orphans = 0u64;
                let mut chunk = Vec::with_capacity(LOAD_CHUNK);
                let scanned = scan(&mut |customer, loaded| {
                    let hash = hasher.hash_one(customer);
                    match table.find(hash, |&n| ids[n as usize] == customer) {
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
                    }
                });
                let _ = sender.send(chunk);
                scanned.map(|()| orphans)
            });
            for chunk in receiver {
                for (number, loaded) in chunk {
                    rows[number as usize].push(loaded);
                }
            }
            reader
                .join()
                .map_err(|_| Error::internal("the index loader panicked"))?
        })
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
                        .amounts
                        .iter()
                        .fold(0i64, |sum, &amount| sum.saturating_add(amount));
                    Derived::of(row, thresholds, total)
                })
                .collect();
            for (offset, (row, derived)) in rows.iter().zip(&derived).enumerate() {
                self.columns
                    .set_derived(chunk * FINISH_CHUNK + offset, derived);
                latest = latest.max(row.latest());
            }
        }
        self.max_time = self.max_time.max(latest);
    }
}
