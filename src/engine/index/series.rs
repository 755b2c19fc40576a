//! One customer's activity in the index: the events of each kind as
//! sorted arrays of times, amounts, id hashes and storage places.
//!
//! Per purchase it holds 32 bytes: the time, the amount, a 64-bit hash of
//! the purchase id (for idempotency) and where the event is stored.

use std::collections::HashSet;

use foldhash::fast::RandomState;

use crate::domain::features::FirstEngagements;
use crate::domain::EngagementKind;

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
    pub(super) fn insert(&mut self, time: i64, amount: Option<i64>, key: u64, at: EventRef) {
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
    pub(super) fn heap_bytes(&self) -> usize {
        let arrays = (self.times.capacity()
            + self.amounts.capacity()
            + self.keys.capacity()
            + self.refs.capacity())
            * 8;
        // A set slot is the key and one control byte.
        arrays + self.key_set.as_ref().map_or(0, |set| set.capacity() * 9)
    }

    /// Makes room for `events` more events, with their amounts if
    /// `amounts`.
    fn reserve_exact(&mut self, events: usize, amounts: bool) {
        self.times.reserve_exact(events);
        if amounts {
            self.amounts.reserve_exact(events);
        }
        self.keys.reserve_exact(events);
        self.refs.reserve_exact(events);
    }

    /// Appends an event out of order, during a bulk load; see [`Series::finish_load`].
    pub(super) fn push(&mut self, time: i64, amount: Option<i64>, key: u64, at: EventRef) {
        self.times.push(time);
        if let Some(amount) = amount {
            self.amounts.push(amount);
        }
        self.keys.push(key);
        self.refs.push(at);
    }

    /// Puts a bulk-loaded series in (time, key) order and gives back its
    /// spare capacity.
    pub(super) fn finish_load(&mut self) {
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

    /// The latest time of any event of the row; `i64::MIN` without any.
    pub fn latest(&self) -> i64 {
        let last = |series: &Series| series.times.last().copied().unwrap_or(i64::MIN);
        last(&self.purchases).max(last(self.engagements()))
    }

    /// Adds a purchase at its place.
    pub(super) fn insert_purchase(&mut self, event: Event) {
        self.purchases
            .insert(event.time, event.amount, event.key, event.at);
    }

    /// Adds an engagement event at its place.
    pub(super) fn insert_engagement(&mut self, kind: EngagementKind, event: Event) {
        self.engagements_noting(kind, event.time).insert(
            event.time,
            event.amount,
            event.key,
            event.at,
        );
    }

    /// The engagement series, made if need be, with an engagement of
    /// `kind` at `time` noted among the firsts.
    fn engagements_noting(&mut self, kind: EngagementKind, time: i64) -> &mut Series {
        let engaged = self.engaged.get_or_insert_with(Box::default);
        engaged.firsts.note(kind, time);
        &mut engaged.series
    }

    /// Makes room for a bulk load's events, so that the arrays are sized
    /// exactly: `purchases` purchases and `engagements` engagement events.
    pub(super) fn reserve_exact(&mut self, purchases: usize, engagements: usize) {
        self.purchases.reserve_exact(purchases, true);
        if engagements > 0 {
            self.engaged
                .get_or_insert_with(Box::default)
                .series
                .reserve_exact(engagements, false);
        }
    }

    /// Appends a loaded event out of order, during a bulk load; see
    /// [`Row::finish_load`].
    pub(super) fn push(&mut self, loaded: Loaded) {
        match loaded {
            Loaded::Purchase(event) => {
                self.purchases
                    .push(event.time, event.amount, event.key, event.at)
            }
            Loaded::Engagement(kind, event) => self.engagements_noting(kind, event.time).push(
                event.time,
                event.amount,
                event.key,
                event.at,
            ),
        }
    }

    /// Ends a bulk load: puts both series in order.
    pub(super) fn finish_load(&mut self) {
        self.purchases.finish_load();
        if let Some(engaged) = &mut self.engaged {
            engaged.series.finish_load();
        }
    }

    /// Heap bytes of the engagement events, with the record that holds
    /// them for a customer who has any.
    pub(super) fn engagement_bytes(&self) -> usize {
        self.engaged.as_ref().map_or(0, |engaged| {
            std::mem::size_of::<Engaged>() + engaged.series.heap_bytes()
        })
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
