//! The in-memory feature index: one row per customer with what features
//! need, and each customer's activity times and amounts in compact arrays.
//! It is rebuilt from the store at start-up and updated on every write;
//! features are computed from it, never by scanning the store.
//!
//! - `series`: one customer's events of each kind, sorted.
//! - `columns`: the profile and purchase columns, their dictionaries, and
//!   the one function that derives a row's columns from its activity.
//! - `load`: the bulk load at start-up.
//! - `image`: the index in one file, written at a clean shutdown and read
//!   at the next start in place of the bulk load.
//! - this module: the rows by customer id, and the changes of one customer.

mod columns;
mod image;
mod load;
mod series;

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::mem::size_of;
use std::sync::{Arc, Mutex};

use compact_str::CompactString;
use foldhash::fast::RandomState;
use hashbrown::HashTable;

pub use crate::store::event_key;
pub use columns::{
    age_at, days_past, engaged, frequency_bounds, ymd, Columns, Derived, Dictionaries, Dictionary,
};
pub use image::{image_discarded, image_reading, image_temporary, Image, IMAGE_FILE};
pub use series::{Event, EventRef, Loaded, Row, Series};

use super::rfm::{Figures, RfmBounds, RfmState};
use crate::domain::features::Thresholds;
use crate::domain::predict::{day_of, ClvSettings, PredictionModel, PurchaseDays};
use crate::domain::{Customer, CustomerId, EngagementKind, TraitValue};
use columns::CustomerFields;

/// What the index holds, and the heap memory it takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexSize {
    /// Customers.
    pub customers: usize,
    /// Purchases.
    pub purchases: usize,
    /// Bytes of the purchase arrays.
    pub purchase_bytes: usize,
    /// Engagement events.
    pub engagements: usize,
    /// Bytes of the engagement arrays, with the per-customer record that
    /// holds them for the customers who have any.
    pub engagement_bytes: usize,
    /// Bytes of everything else: the id table, the rows, the columns.
    pub customer_bytes: usize,
}

/// The index.
#[derive(Debug, Default)]
pub struct FeatureIndex {
    /// Row numbers, found by the hash of their id.
    table: HashTable<u32>,
    /// Hashes ids for `table`.
    hasher: RandomState,
    /// Ids by row; empty where a customer was deleted. Ids of up to 24
    /// bytes are held inline.
    ids: Vec<CompactString>,
    /// Activity by row.
    rows: Vec<Row>,
    /// Profile and purchase columns by row.
    columns: Columns,
    /// The strings of the dictionary-encoded columns.
    dictionaries: Dictionaries,
    /// Trait values by key, then by row.
    traits: BTreeMap<String, HashMap<u32, TraitValue, RandomState>>,
    /// The latest time of any event added; events are never later than it.
    max_time: i64,
    /// Rows that hold a customer.
    live: usize,
    /// The thresholds the purchase columns are computed for.
    thresholds: Thresholds,
    /// The purchasers' RFM bounds, and what keeps them.
    rfm: RfmState,
    /// The prediction model in force, once one was fitted; the index
    /// holds it so that every frame over the index predicts with it.
    model: Option<Arc<PredictionModel>>,
    /// How lifetime value is counted.
    clv: ClvSettings,
    /// Every row's P(alive) on one day by the model in force, made by the
    /// first frame that reads it and kept in step by every write, so that
    /// a breakdown on it reads a column, as on the purchase figures.
    p_alive: Mutex<Option<KeptPAlive>>,
}

/// [`FeatureIndex::p_alive`]: the column and what it holds for.
#[derive(Debug)]
struct KeptPAlive {
    /// The model it was made with.
    model: Arc<PredictionModel>,
    /// The day, in days since the epoch.
    on: i64,
    /// By row; NaN where there is none.
    values: Arc<Vec<f64>>,
}

impl FeatureIndex {
    /// An empty index whose purchase columns follow `thresholds`.
    pub fn new(thresholds: Thresholds) -> Self {
        FeatureIndex {
            thresholds,
            ..FeatureIndex::default()
        }
    }

    /// The thresholds the purchase columns follow.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// The prediction model in force, if one was fitted.
    pub fn model(&self) -> Option<&Arc<PredictionModel>> {
        self.model.as_ref()
    }

    /// How lifetime value is counted.
    pub fn clv_settings(&self) -> ClvSettings {
        self.clv
    }

    /// Sets how lifetime value is counted.
    pub fn set_clv_settings(&mut self, clv: ClvSettings) {
        self.clv = clv;
    }

    /// Puts a prediction model in force.
    pub fn set_model(&mut self, model: Arc<PredictionModel>) {
        self.model = Some(model);
        *self.kept_p_alive() = None;
    }

    fn kept_p_alive(&self) -> std::sync::MutexGuard<'_, Option<KeptPAlive>> {
        self.p_alive
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every row's P(alive) on the day `on` (days since the epoch) by the
    /// model in force, when every event is at or before that day's
    /// frames: kept from the last time it was asked for that day and
    /// model, or made by `make` and kept.
    pub fn p_alive_on(&self, on: i64, make: impl FnOnce() -> Vec<f64>) -> Arc<Vec<f64>> {
        if let Some(kept) = &*self.kept_p_alive() {
            let same_model = self
                .model
                .as_ref()
                .is_some_and(|model| Arc::ptr_eq(model, &kept.model));
            if same_model && kept.on == on && kept.values.len() == self.row_count() {
                return Arc::clone(&kept.values);
            }
        }
        let values = Arc::new(make());
        if let Some(model) = &self.model {
            *self.kept_p_alive() = Some(KeptPAlive {
                model: Arc::clone(model),
                on,
                values: Arc::clone(&values),
            });
        }
        values
    }

    /// Brings a row's kept P(alive) in step after a change of the row.
    fn keep_p_alive(&mut self, at: usize) {
        let FeatureIndex {
            p_alive, columns, ..
        } = self;
        let kept = p_alive
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(kept) = kept else {
            return;
        };
        let c = &*columns;
        let value = if c.alive[at] && !c.objects[at] && c.count[at] > 0 {
            let days = PurchaseDays {
                days: c.days[at],
                first_day: day_of(c.first[at]),
                last_day: day_of(c.last[at]),
                repeat_total: 0,
            };
            kept.model.p_alive(&days, kept.on)
        } else {
            f64::NAN
        };
        // No frame holds the column while a write holds the index, so
        // this changes it in place.
        let values = Arc::make_mut(&mut kept.values);
        match at.cmp(&values.len()) {
            std::cmp::Ordering::Less => values[at] = value,
            std::cmp::Ordering::Equal => values.push(value),
            // Not in step (it cannot be): made again when next read.
            std::cmp::Ordering::Greater => {
                *p_alive
                    .get_mut()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = None
            }
        }
    }

    /// Whether the RFM bounds are at hand, so that asking for them costs
    /// microseconds: after a purchase they are moved by the tracker; only
    /// after a bulk load, or once a place has left its window, must they be
    /// found from the columns, which takes milliseconds.
    pub fn rfm_ready(&self) -> bool {
        self.rfm.ready()
    }

    /// The purchasers' RFM bounds over the all-time figures.
    pub fn rfm_bounds(&self) -> Option<RfmBounds> {
        self.rfm.bounds(|| {
            let c = &self.columns;
            let buyers: Vec<usize> = (0..self.rows.len())
                .filter(|&row| c.alive[row] && c.count[row] > 0)
                .collect();
            (
                buyers.iter().map(|&row| c.last[row]).collect(),
                buyers.iter().map(|&row| c.count[row]).collect(),
                buyers.iter().map(|&row| c.total[row]).collect(),
            )
        })
    }

    /// A purchaser's all-time figures, or `None` for a customer who has
    /// bought nothing.
    fn figures(&self, at: usize) -> Option<Figures> {
        let c = &self.columns;
        (c.alive[at] && c.count[at] > 0).then(|| (c.last[at], c.count[at], c.total[at]))
    }

    /// Adds a customer in row `number`, their number in the store, or
    /// refreshes the profile fields of a known one.
    pub fn upsert_customer(&mut self, number: u32, customer: &Customer) {
        self.upsert(number, customer.clone().into());
    }

    /// Adds a customer in the next row, or refreshes a known one: for
    /// tests that build an index without a store.
    #[cfg(test)]
    pub fn add_customer(&mut self, customer: &Customer) {
        let number = self
            .row_number(customer.id.as_str())
            .unwrap_or(self.row_count() as u32);
        self.upsert_customer(number, customer);
    }

    fn upsert(&mut self, number: u32, fields: CustomerFields) {
        let at = number as usize;
        self.grow_to(at + 1);
        if !self.columns.alive[at] {
            debug_assert!(self.row_number(&fields.id).is_none());
            let hash = self.hasher.hash_one(fields.id.as_str());
            let (ids, hasher) = (&self.ids, &self.hasher);
            self.table
                .insert_unique(hash, number, |&n| hasher.hash_one(ids[n as usize].as_str()));
            self.ids[at] = fields.id.clone();
            self.live += 1;
        }
        debug_assert_eq!(self.ids[at], fields.id);
        self.columns
            .set_profile(at, &fields, &mut self.dictionaries);
        self.set_traits(number, fields.traits);
        self.keep_p_alive(at);
    }

    /// Makes room in the id table for `customers` customers in all, so
    /// that a bulk load does not grow it step by step.
    fn reserve_ids(&mut self, customers: usize) {
        let (ids, hasher) = (&self.ids, &self.hasher);
        let more = customers.saturating_sub(self.table.len());
        self.table
            .reserve(more, |&n| hasher.hash_one(ids[n as usize].as_str()));
    }

    /// Adds empty rows, holding no customer, up to `rows` rows.
    fn grow_to(&mut self, rows: usize) {
        while self.ids.len() < rows {
            let at = self.ids.len();
            self.ids.push(CompactString::default());
            self.rows.push(Row::default());
            self.columns.push_empty(&mut self.dictionaries);
            self.keep_p_alive(at);
        }
    }

    fn set_traits(&mut self, number: u32, traits: BTreeMap<String, TraitValue>) {
        for (key, values) in &mut self.traits {
            if !traits.contains_key(key) {
                values.remove(&number);
            }
        }
        for (key, value) in traits {
            self.traits.entry(key).or_default().insert(number, value);
        }
        self.traits.retain(|_, values| !values.is_empty());
    }

    /// Removes a customer and returns their activity.
    pub fn remove_customer(&mut self, id: &CustomerId) -> Option<Row> {
        let hash = self.hasher.hash_one(id.as_str());
        let ids = &self.ids;
        let entry = self
            .table
            .find_entry(hash, |&n| ids[n as usize] == id.as_str())
            .ok()?;
        let (number, _) = entry.remove();
        let at = number as usize;
        let figures = self.figures(at);
        self.rfm.change(figures, None);
        self.ids[at] = CompactString::default();
        self.set_traits(number, BTreeMap::new());
        self.columns.alive[at] = false;
        self.columns.set_derived(at, &Derived::NONE);
        self.keep_p_alive(at);
        self.live -= 1;
        Some(std::mem::take(&mut self.rows[at]))
    }

    /// The row number of a customer.
    pub fn row_number(&self, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.table
            .find(hash, |&n| self.ids[n as usize] == id)
            .copied()
    }

    /// A customer's activity.
    pub fn row(&self, id: &str) -> Option<&Row> {
        self.row_at(self.row_number(id)?)
    }

    /// A row's activity, if it holds a customer.
    pub fn row_at(&self, number: u32) -> Option<&Row> {
        let at = number as usize;
        (*self.columns.alive.get(at)?).then(|| &self.rows[at])
    }

    /// The id of a row; empty for a deleted row.
    pub fn id_at(&self, number: u32) -> &str {
        self.ids.get(number as usize).map_or("", |id| id.as_str())
    }

    /// The profile and purchase columns.
    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// The strings of the dictionary-encoded columns.
    pub fn dictionaries(&self) -> &Dictionaries {
        &self.dictionaries
    }

    /// The values of one trait, by row.
    pub fn trait_values(&self, key: &str) -> Option<&HashMap<u32, TraitValue, RandomState>> {
        self.traits.get(key)
    }

    /// Rows, deleted ones included: row numbers run below this.
    pub fn row_count(&self) -> usize {
        self.ids.len()
    }

    /// The latest time of any event added, nanoseconds since the epoch.
    /// At or after it, the all-time columns are the figures as of then.
    pub fn max_time(&self) -> i64 {
        self.max_time
    }

    /// Records a purchase of the customer in row `number`, in its place;
    /// returns false if there is none.
    pub fn add_purchase(&mut self, number: u32, event: Event) -> bool {
        self.change_activity(number, event.time, event.amount.unwrap_or(0), |row| {
            row.insert_purchase(event)
        })
    }

    /// Records an engagement event of the customer in row `number`, in its
    /// place; returns false if there is none.
    pub fn add_engagement(&mut self, number: u32, kind: EngagementKind, event: Event) -> bool {
        self.change_activity(number, event.time, 0, |row| {
            row.insert_engagement(kind, event)
        })
    }

    /// Records purchases of the customer in row `number`, each in its
    /// place, with one pass over the purchases held however late they
    /// come; returns false if there is none. Sorts `events`.
    pub fn add_purchases(&mut self, number: u32, events: &mut [Event]) -> bool {
        let latest = events.iter().map(|event| event.time).max();
        let spent = events.iter().fold(0i64, |sum, event| {
            sum.saturating_add(event.amount.unwrap_or(0))
        });
        self.change_activity(number, latest.unwrap_or(i64::MIN), spent, |row| {
            row.insert_purchases(events)
        })
    }

    /// Records engagement events of the customer in row `number`, each in
    /// its place, with one pass over the events held; returns false if
    /// there is none.
    pub fn add_engagements(&mut self, number: u32, events: &[(EngagementKind, Event)]) -> bool {
        let latest = events.iter().map(|(_, event)| event.time).max();
        self.change_activity(number, latest.unwrap_or(i64::MIN), 0, |row| {
            row.insert_engagements(events)
        })
    }

    /// Changes the activity of the customer in row `number` with an event
    /// at `time` that adds `spent` to its purchase total, and brings the
    /// row's derived columns and the RFM bounds in step; returns false if
    /// there is no customer.
    fn change_activity(
        &mut self,
        number: u32,
        time: i64,
        spent: i64,
        change: impl FnOnce(&mut Row),
    ) -> bool {
        let at = number as usize;
        if !self.columns.alive.get(at).copied().unwrap_or(false) {
            return false;
        }
        let before = self.figures(at);
        let row = &mut self.rows[at];
        change(row);
        let total = self.columns.total[at].saturating_add(spent);
        self.columns
            .set_derived(at, &Derived::of(row, &self.thresholds, total));
        self.keep_p_alive(at);
        let after = self.figures(at);
        self.rfm.change(before, after);
        self.max_time = self.max_time.max(time);
        true
    }

    /// Customers in the index.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the index holds no customer.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// What the index holds and the heap memory it takes, from the
    /// capacities of its arrays and tables.
    pub fn size(&self) -> IndexSize {
        let traits: usize = self
            .traits
            .iter()
            .map(|(key, values)| key.len() + values.capacity() * (4 + size_of::<TraitValue>() + 1))
            .sum();
        let mut size = IndexSize {
            customers: self.live,
            // The id table holds a row number and one control byte per slot.
            customer_bytes: self.table.capacity() * (size_of::<u32>() + 1)
                + self.ids.capacity() * size_of::<CompactString>()
                + self.rows.capacity() * size_of::<Row>()
                + self.columns.heap_bytes()
                + self.dictionaries.heap_bytes()
                + traits
                + self
                    .kept_p_alive()
                    .as_ref()
                    .map_or(0, |kept| kept.values.capacity() * size_of::<f64>()),
            ..IndexSize::default()
        };
        for (id, row) in self.ids.iter().zip(&self.rows) {
            size.purchases += row.purchases.len();
            size.purchase_bytes += row.purchases.heap_bytes();
            size.customer_bytes += if id.is_heap_allocated() { id.len() } else { 0 };
            size.engagements += row.engagements().len();
            size.engagement_bytes += row.engagement_bytes();
        }
        size
    }
}
