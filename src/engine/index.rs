//! The in-memory feature index: one row per customer with what features
//! need, and each customer's activity times and amounts in compact arrays.
//! It is rebuilt from the store at start-up and updated on every write;
//! features are computed from it, never by scanning the store.
//!
//! Per purchase it holds 32 bytes: the time, the amount, a 64-bit hash of
//! the purchase id (for idempotency) and where the event is stored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{RwLock, TryLockError};

use compact_str::CompactString;
use foldhash::fast::{FixedState, RandomState};
use hashbrown::HashTable;

use super::rfm::{Figures, RfmBounds, RfmTracker};
use crate::domain::features::{FirstEngagements, Thresholds, NANOS_PER_DAY};
use crate::domain::{
    Consent, Customer, CustomerId, Date, EngagementKind, Error, Gender, Party, Relationship,
    Result, TraitValue,
};

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
    /// Engagement events.
    pub engagements: usize,
    /// Bytes of the engagement arrays, with the per-customer record that
    /// holds them for the customers who have any.
    pub engagement_bytes: usize,
    /// Bytes of everything else: the id table, the rows, the columns.
    pub customer_bytes: usize,
}

/// One customer's activity.
#[derive(Debug, Default)]
pub struct Row {
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

/// Distinct strings of one column, numbered from 1; 0 means absent.
#[derive(Debug)]
pub struct Dictionary {
    /// The strings by number; `names[0]` is the empty string.
    names: Vec<CompactString>,
    /// Numbers by string.
    numbers: HashMap<CompactString, u32, RandomState>,
}

impl Default for Dictionary {
    fn default() -> Self {
        Dictionary {
            names: vec![CompactString::default()],
            numbers: HashMap::default(),
        }
    }
}

impl Dictionary {
    /// The number of a string, added if new; 0 for an empty or absent one.
    fn intern(&mut self, name: Option<&str>) -> u32 {
        let Some(name) = name.filter(|name| !name.is_empty()) else {
            return 0;
        };
        if let Some(&number) = self.numbers.get(name) {
            return number;
        }
        let number = self.names.len() as u32;
        self.names.push(CompactString::new(name));
        self.numbers.insert(CompactString::new(name), number);
        number
    }

    /// Every string, by number; index 0 is the empty string, for absent.
    pub fn names(&self) -> &[CompactString] {
        &self.names
    }

    fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<CompactString>();
        self.names.capacity() * slot
            + self.numbers.capacity() * (slot + 5)
            + self
                .names
                .iter()
                .filter(|name| name.is_heap_allocated())
                .map(|name| name.len() * 2)
                .sum::<usize>()
    }
}

/// Bit flags of [`Columns::engaged`]: which kinds of engagement a customer
/// ever had.
pub mod engaged {
    /// A visit.
    pub const VISIT: u8 = 1;
    /// A feedback.
    pub const FEEDBACK: u8 = 2;
    /// A referral.
    pub const REFERRAL: u8 = 4;
}

/// The profile fields and all-time purchase figures, one array per field,
/// one entry per row, so that a rule reads one field of every customer in
/// one pass. A deleted row keeps `alive` false and neutral values.
#[derive(Debug, Default)]
pub struct Columns {
    /// Whether the row holds a customer (false once deleted).
    pub alive: Vec<bool>,
    /// Person or business.
    pub party: Vec<Party>,
    /// Internal or external.
    pub relationship: Vec<Relationship>,
    /// Stated gender.
    pub gender: Vec<Gender>,
    /// Consent per channel.
    pub consent: Vec<Consent>,
    /// Objects to profiling.
    pub objects: Vec<bool>,
    /// Date of birth as `yyyymmdd`, 0 when absent; then the age at a date
    /// `d` (also `yyyymmdd`) is `(d - birth) / 10000` when `birth <= d`.
    pub birth: Vec<u32>,
    /// Yearly income in minor units; `i64::MIN` when absent.
    pub income: Vec<i64>,
    /// Country code number in [`Dictionaries::country`].
    pub country: Vec<u32>,
    /// Region number.
    pub region: Vec<u32>,
    /// City number.
    pub city: Vec<u32>,
    /// Language tag number.
    pub language: Vec<u32>,
    /// Purchases, all time.
    pub count: Vec<u32>,
    /// Total spend in minor units, all time.
    pub total: Vec<i64>,
    /// The first purchase, nanoseconds since the epoch; 0 without purchases.
    pub first: Vec<i64>,
    /// The last purchase; 0 without purchases.
    pub last: Vec<i64>,
    /// [`engaged`] flags of the kinds of engagement ever recorded.
    pub engaged: Vec<u8>,
    /// From this time on (nanoseconds), the customer is LAPSED while no
    /// purchase comes. `i64::MAX` with fewer than two purchases.
    pub lapsed_from: Vec<i64>,
    /// Until this time (exclusive), if not LAPSED, the customer is a
    /// FREQUENT_CUSTOMER while no purchase comes. `i64::MIN` when never.
    pub frequent_until: Vec<i64>,
}

/// `yyyymmdd` of a date.
pub fn ymd(date: Date) -> u32 {
    (date.year() * 10_000 + date.month() * 100 + date.day()) as u32
}

/// Whole years from a birth date to a date, both `yyyymmdd`; `None` for no
/// birth date (0) or one after `on`.
pub fn age_at(birth: u32, on: u32) -> Option<i32> {
    (birth != 0 && birth <= on).then(|| ((on - birth) / 10_000) as i32)
}

/// The strings of the dictionary-encoded columns.
#[derive(Debug, Default)]
pub struct Dictionaries {
    /// Country codes.
    pub country: Dictionary,
    /// Regions.
    pub region: Dictionary,
    /// Cities.
    pub city: Dictionary,
    /// Language tags.
    pub language: Dictionary,
}

/// What the index keeps of a customer's profile, before its strings are
/// numbered.
#[derive(Debug)]
struct CustomerFields {
    id: CompactString,
    party: Party,
    relationship: Relationship,
    gender: Gender,
    consent: Consent,
    objects: bool,
    birth: u32,
    income: i64,
    country: Option<String>,
    region: String,
    city: String,
    language: Option<String>,
    traits: BTreeMap<String, TraitValue>,
}

impl From<Customer> for CustomerFields {
    fn from(customer: Customer) -> Self {
        let profile = customer.profile;
        CustomerFields {
            id: CompactString::new(customer.id.as_str()),
            party: profile.party,
            relationship: profile.relationship,
            gender: profile.gender,
            consent: profile.consent,
            objects: profile.objects_to_profiling,
            birth: profile.birth_date.map_or(0, ymd),
            income: profile
                .annual_income
                .map_or(i64::MIN, |money| money.minor_units),
            country: profile.location.country_code,
            region: profile.location.region,
            city: profile.location.city,
            language: profile.language,
            traits: profile.traits,
        }
    }
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
    rfm: RwLock<RfmState>,
}

/// The RFM bounds over the all-time figures, and the tracker that moves
/// them with each purchase. Writers change it through `&mut` (no lock is
/// taken); readers share the bounds, and the first to find them stale
/// brings them up to date under the write lock.
#[derive(Debug, Default)]
struct RfmState {
    /// The bounds as of the last change; `None` when they must be found.
    bounds: Option<Option<RfmBounds>>,
    /// The figures near the bounds' places, when they are kept.
    tracker: Option<RfmTracker>,
    /// Whether the tracker is made yet: with no purchasers there is none.
    tracked: bool,
    /// Changes since the bounds were last asked for.
    unread: usize,
}

/// Changes without anyone asking for the bounds after which the tracker is
/// dropped: a bulk import does not pay to keep it, and the next reader
/// finds the bounds from the columns.
const UNREAD_CHANGES: usize = 8192;

impl RfmState {
    /// The bounds, if they are known or the tracker can tell them; a
    /// tracker whose places have left their windows is dropped.
    fn tracked_bounds(&mut self) -> Option<Option<RfmBounds>> {
        if let Some(bounds) = self.bounds {
            return Some(bounds);
        }
        if !self.tracked {
            return None;
        }
        let bounds = match &self.tracker {
            // Made when there were no purchasers, and none has come since.
            None => Some(None),
            Some(tracker) => tracker.bounds(),
        };
        match bounds {
            Some(bounds) => {
                self.bounds = Some(bounds);
                self.unread = 0;
            }
            None => *self = RfmState::default(),
        }
        bounds
    }
}

/// `(floor(limit) + 1)` days in nanoseconds: for a whole number of days `r`
/// and an elapsed time `e` (r = floor(e / 1 day)), `r > limit` is
/// `e >= days_past(limit)` and `r <= limit` is `e < days_past(limit)`.
pub fn days_past(limit: f64) -> i64 {
    if limit >= (i64::MAX / NANOS_PER_DAY) as f64 {
        return i64::MAX;
    }
    if limit <= (i64::MIN / NANOS_PER_DAY) as f64 {
        return i64::MIN;
    }
    // floor without a call into libm: truncate, then step down below zero.
    let truncated = limit as i64;
    let days = if (truncated as f64) > limit {
        truncated - 1
    } else {
        truncated
    };
    (days + 1).saturating_mul(NANOS_PER_DAY)
}

/// [`Columns::lapsed_from`] and [`Columns::frequent_until`] of a
/// customer's sorted purchase times: the design's frequency rules with the
/// evaluation time T left out, for a T at or after every purchase, so that
/// a query only compares times. With `n` purchases from `first` to `last`
/// and the mean gap `g` in days, the recency `r = floor((T − last) / 1 day)`
/// is over a limit `x` exactly when `T >= last + days_past(x)`; and "at
/// least K purchases in (T − 365 days, T]" is "T is before the K-th latest
/// purchase plus 365 days".
pub fn frequency_bounds(times: &[i64], thresholds: &Thresholds) -> (i64, i64) {
    let count = times.len();
    let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
        return (i64::MAX, i64::MIN);
    };
    if count < 2 {
        return (i64::MAX, i64::MIN);
    }
    let gap = last.abs_diff(first) as f64 / NANOS_PER_DAY as f64 / (count - 1) as f64;
    let lapsed_after = (thresholds.lapsed_gap_multiplier * gap).max(thresholds.lapsed_min_days);
    let lapsed_from = last.saturating_add(days_past(lapsed_after));
    let recent_until = last.saturating_add(days_past(thresholds.frequent_gap_multiplier * gap));
    let k = thresholds.frequent_min_purchases_365d as usize;
    let window_until = match k {
        0 => i64::MAX,
        k if k <= count => times[count - k].saturating_add(365 * NANOS_PER_DAY),
        _ => i64::MIN,
    };
    (lapsed_from, recent_until.min(window_until))
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

    /// Whether the RFM bounds are at hand, so that asking for them costs
    /// microseconds: after a purchase they are moved by the tracker; only
    /// after a bulk load, or once a place has left its window, must they be
    /// found from the columns, which takes milliseconds.
    pub fn rfm_ready(&self) -> bool {
        let fresh = match self.rfm.try_read() {
            Ok(state) => state.bounds.is_some(),
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().bounds.is_some(),
            Err(TryLockError::WouldBlock) => false,
        };
        if fresh {
            return true;
        }
        // A reader finding the bounds afresh holds the lock for
        // milliseconds: the caller had better wait on the blocking pool.
        let mut state = match self.rfm.try_write() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        state.tracked_bounds().is_some()
    }

    /// The purchasers' RFM bounds over the all-time figures.
    pub fn rfm_bounds(&self) -> Option<RfmBounds> {
        let fresh = self
            .rfm
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .bounds;
        if let Some(bounds) = fresh {
            return bounds;
        }
        let mut state = self
            .rfm
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(bounds) = state.tracked_bounds() {
            return bounds;
        }
        let c = &self.columns;
        let buyers: Vec<usize> = (0..self.rows.len())
            .filter(|&row| c.alive[row] && c.count[row] > 0)
            .collect();
        let tracker = RfmTracker::new(
            buyers.iter().map(|&row| c.last[row]).collect(),
            buyers.iter().map(|&row| c.count[row]).collect(),
            buyers.iter().map(|&row| c.total[row]).collect(),
        );
        let bounds = tracker.as_ref().and_then(RfmTracker::bounds).flatten();
        *state = RfmState {
            bounds: Some(bounds),
            tracker,
            tracked: true,
            unread: 0,
        };
        bounds
    }

    /// A purchaser's all-time figures, or `None` for a customer who has
    /// bought nothing.
    fn figures(&self, at: usize) -> Option<Figures> {
        let c = &self.columns;
        (c.alive[at] && c.count[at] > 0).then(|| (c.last[at], c.count[at], c.total[at]))
    }

    /// Moves the RFM bounds for a change of one customer's figures.
    fn rfm_change(&mut self, old: Option<Figures>, new: Option<Figures>) {
        if old == new {
            return;
        }
        let state = self
            .rfm
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.bounds = None;
        state.unread += 1;
        match &mut state.tracker {
            Some(_) if state.unread > UNREAD_CHANGES => *state = RfmState::default(),
            Some(tracker) => tracker.change(old, new),
            // With no purchasers before, the first one makes the tracker.
            None => state.tracked = false,
        }
    }

    /// Forgets the RFM bounds: they are found again from the columns.
    fn rfm_forget(&mut self) {
        *self
            .rfm
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = RfmState::default();
    }

    /// Adds a customer, or refreshes the profile fields of a known one.
    pub fn upsert_customer(&mut self, customer: &Customer) {
        self.upsert(customer.clone().into());
    }

    fn upsert(&mut self, fields: CustomerFields) {
        let number = match self.row_number(&fields.id) {
            Some(number) => number,
            None => {
                let number = self.ids.len() as u32;
                let hash = self.hasher.hash_one(fields.id.as_str());
                let (ids, hasher) = (&self.ids, &self.hasher);
                self.table
                    .insert_unique(hash, number, |&n| hasher.hash_one(ids[n as usize].as_str()));
                self.ids.push(fields.id.clone());
                self.rows.push(Row::default());
                let c = &mut self.columns;
                c.alive.push(true);
                c.party.push(Party::default());
                c.relationship.push(Relationship::default());
                c.gender.push(Gender::default());
                c.consent.push(Consent::default());
                c.objects.push(false);
                c.birth.push(0);
                c.income.push(i64::MIN);
                c.country.push(0);
                c.region.push(0);
                c.city.push(0);
                c.language.push(0);
                c.count.push(0);
                c.total.push(0);
                c.first.push(0);
                c.last.push(0);
                c.engaged.push(0);
                c.lapsed_from.push(i64::MAX);
                c.frequent_until.push(i64::MIN);
                self.live += 1;
                number
            }
        };
        let at = number as usize;
        let d = &mut self.dictionaries;
        let c = &mut self.columns;
        c.party[at] = fields.party;
        c.relationship[at] = fields.relationship;
        c.gender[at] = fields.gender;
        c.consent[at] = fields.consent;
        c.objects[at] = fields.objects;
        c.birth[at] = fields.birth;
        c.income[at] = fields.income;
        c.country[at] = d.country.intern(fields.country.as_deref());
        c.region[at] = d.region.intern(Some(&fields.region));
        c.city[at] = d.city.intern(Some(&fields.city));
        c.language[at] = d.language.intern(fields.language.as_deref());
        self.set_traits(number, fields.traits);
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
        self.rfm_change(figures, None);
        self.ids[at] = CompactString::default();
        self.set_traits(number, BTreeMap::new());
        let c = &mut self.columns;
        c.alive[at] = false;
        c.count[at] = 0;
        c.total[at] = 0;
        c.first[at] = 0;
        c.last[at] = 0;
        c.engaged[at] = 0;
        c.lapsed_from[at] = i64::MAX;
        c.frequent_until[at] = i64::MIN;
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

    fn note_purchase(&mut self, at: usize, time: i64, amount: i64) {
        let c = &mut self.columns;
        if c.count[at] == 0 {
            c.first[at] = time;
            c.last[at] = time;
        } else {
            c.first[at] = c.first[at].min(time);
            c.last[at] = c.last[at].max(time);
        }
        c.count[at] += 1;
        c.total[at] = c.total[at].saturating_add(amount);
        self.max_time = self.max_time.max(time);
    }

    /// Records a purchase of the customer in row `number`, in its place;
    /// returns false if there is none.
    pub fn add_purchase(&mut self, number: u32, event: Event) -> bool {
        let at = number as usize;
        if !self.columns.alive.get(at).copied().unwrap_or(false) {
            return false;
        }
        let purchases = &mut self.rows[at].purchases;
        purchases.insert(event.time, event.amount, event.key, event.at);
        (
            self.columns.lapsed_from[at],
            self.columns.frequent_until[at],
        ) = frequency_bounds(&purchases.times, &self.thresholds);
        let before = self.figures(at);
        self.note_purchase(at, event.time, event.amount.unwrap_or(0));
        let after = self.figures(at);
        self.rfm_change(before, after);
        true
    }

    /// Records an engagement event of the customer in row `number`, in its
    /// place; returns false if there is none.
    pub fn add_engagement(&mut self, number: u32, kind: EngagementKind, event: Event) -> bool {
        let at = number as usize;
        if !self.columns.alive.get(at).copied().unwrap_or(false) {
            return false;
        }
        let engaged = self.rows[at].engaged_mut();
        engaged.firsts.note(kind, event.time);
        engaged
            .series
            .insert(event.time, event.amount, event.key, event.at);
        self.columns.engaged[at] |= engaged_flag(kind);
        self.max_time = self.max_time.max(event.time);
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
                    let row = &mut rows[number as usize];
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
        self.live
    }

    /// Whether the index holds no customer.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// What the index holds and the heap memory it takes, from the
    /// capacities of its arrays and tables.
    pub fn size(&self) -> IndexSize {
        use std::mem::size_of;
        let c = &self.columns;
        let columns = c.alive.capacity()
            + c.party.capacity()
            + c.relationship.capacity()
            + c.gender.capacity()
            + c.consent.capacity() * size_of::<Consent>()
            + c.objects.capacity()
            + c.birth.capacity() * 4
            + c.income.capacity() * 8
            + (c.country.capacity()
                + c.region.capacity()
                + c.city.capacity()
                + c.language.capacity()
                + c.count.capacity())
                * 4
            + (c.total.capacity() + c.first.capacity() + c.last.capacity()) * 8
            + c.engaged.capacity()
            + (c.lapsed_from.capacity() + c.frequent_until.capacity()) * 8;
        let d = &self.dictionaries;
        let dictionaries = d.country.heap_bytes()
            + d.region.heap_bytes()
            + d.city.heap_bytes()
            + d.language.heap_bytes();
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
                + columns
                + dictionaries
                + traits,
            ..IndexSize::default()
        };
        for (id, row) in self.ids.iter().zip(&self.rows) {
            size.purchases += row.purchases.len();
            size.purchase_bytes += row.purchases.heap_bytes();
            size.customer_bytes += if id.is_heap_allocated() { id.len() } else { 0 };
            if let Some(engaged) = &row.engaged {
                size.engagements += engaged.series.len();
                size.engagement_bytes += size_of::<Engaged>() + engaged.series.heap_bytes();
            }
        }
        size
    }

    /// Ends a bulk load: sorts every series, gives back spare capacity and
    /// fills the all-time purchase columns, on two threads.
    pub fn finish_load(&mut self) {
        self.rfm_forget();
        let half = self.rows.len() / 2;
        let c = &mut self.columns;
        let (rows_a, rows_b) = self.rows.split_at_mut(half);
        let (count_a, count_b) = c.count.split_at_mut(half);
        let (total_a, total_b) = c.total.split_at_mut(half);
        let (first_a, first_b) = c.first.split_at_mut(half);
        let (last_a, last_b) = c.last.split_at_mut(half);
        let (engaged_a, engaged_b) = c.engaged.split_at_mut(half);
        let (lapsed_a, lapsed_b) = c.lapsed_from.split_at_mut(half);
        let (frequent_a, frequent_b) = c.frequent_until.split_at_mut(half);
        let thresholds = &self.thresholds;
        let finish = |rows: &mut [Row],
                      count: &mut [u32],
                      total: &mut [i64],
                      first: &mut [i64],
                      last: &mut [i64],
                      flags: &mut [u8],
                      lapsed: &mut [i64],
                      frequent: &mut [i64]|
         -> i64 {
            let mut latest = i64::MIN;
            for (at, row) in rows.iter_mut().enumerate() {
                let purchases = &mut row.purchases;
                purchases.finish_load();
                count[at] = purchases.len() as u32;
                total[at] = purchases
                    .amounts
                    .iter()
                    .fold(0i64, |sum, &amount| sum.saturating_add(amount));
                first[at] = purchases.times.first().copied().unwrap_or(0);
                last[at] = purchases.times.last().copied().unwrap_or(0);
                (lapsed[at], frequent[at]) = frequency_bounds(&purchases.times, thresholds);
                latest = latest.max(purchases.times.last().copied().unwrap_or(i64::MIN));
                if let Some(engaged) = &mut row.engaged {
                    engaged.series.finish_load();
                    let firsts = engaged.firsts;
                    flags[at] = [
                        (firsts.visit, engaged::VISIT),
                        (firsts.feedback, engaged::FEEDBACK),
                        (firsts.referral, engaged::REFERRAL),
                    ]
                    .into_iter()
                    .filter(|(first, _)| first.is_some())
                    .fold(0, |flags, (_, flag)| flags | flag);
                    latest = latest.max(engaged.series.times.last().copied().unwrap_or(i64::MIN));
                }
            }
            latest
        };
        let latest = std::thread::scope(|scope| {
            let other = scope.spawn(|| {
                finish(
                    rows_a, count_a, total_a, first_a, last_a, engaged_a, lapsed_a, frequent_a,
                )
            });
            let mine = finish(
                rows_b, count_b, total_b, first_b, last_b, engaged_b, lapsed_b, frequent_b,
            );
            let theirs = other
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            mine.max(theirs)
        });
        self.max_time = self.max_time.max(latest);
    }
}

/// The [`engaged`] flag of a kind of engagement.
fn engaged_flag(kind: EngagementKind) -> u8 {
    match kind {
        EngagementKind::Visit => engaged::VISIT,
        EngagementKind::Feedback => engaged::FEEDBACK,
        EngagementKind::Referral => engaged::REFERRAL,
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
