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

    /// The packed value, for the index's image.
    pub(super) fn packed(self) -> u64 {
        self.0
    }

    /// A packed value from the index's image.
    pub(super) fn unpack(packed: u64) -> Self {
        EventRef(packed)
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
    /// Adds an event at its place in (time, key) order, after any equal one.
    pub(super) fn insert(&mut self, time: i64, amount: Option<i64>, key: u64, at: EventRef) {
        self.insert_many(&mut [Event {
            time,
            amount,
            key,
            at,
        }]);
    }

    /// Adds events at their places in (time, key) order, with at most one
    /// pass over the series, as inserting them one by one in the given
    /// order would: an event goes after the equal ones already held and
    /// after the equal ones before it in `events`. Sorts `events`.
    ///
    /// Events that all follow the series are appended. Otherwise each
    /// array grows once and is merged from the back, so that an event
    /// held moves at most once, whatever the order of `events`.
    pub(super) fn insert_many(&mut self, events: &mut [Event]) {
        let Some(first) = events.first() else {
            return;
        };
        let with_amounts = first.amount.is_some();
        debug_assert!(events
            .iter()
            .all(|event| event.amount.is_some() == with_amounts));
        debug_assert_eq!(
            self.amounts.len(),
            if with_amounts { self.len() } else { 0 }
        );
        // Stable: equal events keep their given order.
        events.sort_by_key(|event| (event.time, event.key));
        let held = self.len();
        let earliest = (events[0].time, events[0].key);
        let follows = held == 0 || (self.times[held - 1], self.keys[held - 1]) <= earliest;
        if follows {
            self.append(events);
        } else {
            self.merge(events, with_amounts);
        }
        match &mut self.key_set {
            Some(set) => set.extend(events.iter().map(|event| event.key)),
            None if self.keys.len() >= KEY_SET_FROM => {
                self.key_set = Some(Box::new(self.keys.iter().copied().collect()));
            }
            None => {}
        }
    }

    /// Appends events that follow the series, in order.
    fn append(&mut self, events: &[Event]) {
        self.times.extend(events.iter().map(|event| event.time));
        self.amounts
            .extend(events.iter().filter_map(|event| event.amount));
        self.keys.extend(events.iter().map(|event| event.key));
        self.refs.extend(events.iter().map(|event| event.at));
    }

    /// Merges events sorted by (time, key) into the series: grows each
    /// array once, then, from the last event back, moves the held events
    /// after it up by the number of events still to place, and puts it in
    /// the gap left below them.
    fn merge(&mut self, events: &[Event], with_amounts: bool) {
        let held = self.len();
        let total = held + events.len();
        self.times.resize(total, 0);
        if with_amounts {
            self.amounts.resize(total, 0);
        }
        self.keys.resize(total, 0);
        self.refs.resize(total, EventRef(0));
        // Held events at `unmoved..` have their final places.
        let mut unmoved = held;
        for (before, event) in events.iter().enumerate().rev() {
            let place = position_after(
                &self.times[..unmoved],
                &self.keys[..unmoved],
                event.time,
                event.key,
            );
            let shift = before + 1;
            self.times.copy_within(place..unmoved, place + shift);
            self.keys.copy_within(place..unmoved, place + shift);
            self.refs.copy_within(place..unmoved, place + shift);
            self.times[place + before] = event.time;
            self.keys[place + before] = event.key;
            self.refs[place + before] = event.at;
            if let Some(amount) = event.amount {
                self.amounts.copy_within(place..unmoved, place + shift);
                self.amounts[place + before] = amount;
            }
            unmoved = place;
        }
    }

    /// The index of the first event after (time, key).
    pub fn position_after(&self, time: i64, key: u64) -> usize {
        position_after(&self.times, &self.keys, time, key)
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

    /// A series from its arrays, in (time, key) order, as the index's
    /// image holds them: sized exactly, with the key set of a long one.
    pub(super) fn from_arrays(
        times: Vec<i64>,
        amounts: Vec<i64>,
        keys: Vec<u64>,
        refs: Vec<EventRef>,
    ) -> Self {
        let key_set = (keys.len() >= KEY_SET_FROM)
            .then(|| Box::new(keys.iter().copied().collect::<HashSet<u64, RandomState>>()));
        Series {
            times,
            amounts,
            keys,
            refs,
            key_set,
        }
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

/// The index of the first event after (time, key) in parallel arrays
/// sorted by (time, key).
fn position_after(times: &[i64], keys: &[u64], time: i64, key: u64) -> usize {
    let start = times.partition_point(|&t| t < time);
    let end = times.partition_point(|&t| t <= time);
    start + keys[start..end].partition_point(|&k| k <= key)
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

    /// Adds purchases at their places, with at most one pass over the
    /// purchases held; see [`Series::insert_many`]. Sorts `events`.
    pub(super) fn insert_purchases(&mut self, events: &mut [Event]) {
        self.purchases.insert_many(events);
    }

    /// Adds engagement events of any kinds at their places, with at most
    /// one pass over the engagement events held; see
    /// [`Series::insert_many`].
    pub(super) fn insert_engagements(&mut self, events: &[(EngagementKind, Event)]) {
        if events.is_empty() {
            return;
        }
        let engaged = self.engaged.get_or_insert_with(Box::default);
        for &(kind, event) in events {
            engaged.firsts.note(kind, event.time);
        }
        let mut events: Vec<Event> = events.iter().map(|&(_, event)| event).collect();
        engaged.series.insert_many(&mut events);
    }

    /// The engagement series, made if need be, with an engagement of
    /// `kind` at `time` noted among the firsts.
    fn engagements_noting(&mut self, kind: EngagementKind, time: i64) -> &mut Series {
        let engaged = self.engaged.get_or_insert_with(Box::default);
        engaged.firsts.note(kind, time);
        &mut engaged.series
    }

    /// A row from its purchases and, for a customer with engagement
    /// events noted, those events and the first of each kind.
    pub(super) fn from_parts(
        purchases: Series,
        engaged: Option<(Series, FirstEngagements)>,
    ) -> Self {
        Row {
            purchases,
            engaged: engaged.map(|(series, firsts)| Box::new(Engaged { series, firsts })),
        }
    }

    /// The engagement events and the first of each kind, for a customer
    /// with any noted.
    pub(super) fn engaged(&self) -> Option<(&Series, FirstEngagements)> {
        self.engaged
            .as_ref()
            .map(|engaged| (&engaged.series, engaged.firsts))
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

    /// A small seeded generator (splitmix64), so that a failure repeats.
    struct Random(u64);

    impl Random {
        /// A value below `bound`.
        fn below(&mut self, bound: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % bound
        }
    }

    /// `count` events of batch `batch` with times below `times` and keys
    /// below `keys`, each with its own place; with amounts if `purchases`.
    fn events(
        random: &mut Random,
        batch: u64,
        count: usize,
        times: u64,
        keys: u64,
        purchases: bool,
    ) -> Vec<Event> {
        (0..count)
            .map(|position| {
                let at = EventRef::new(batch, position);
                Event {
                    time: random.below(times) as i64,
                    // Distinct, so that amounts out of step would show.
                    amount: purchases.then_some(at.0 as i64),
                    key: random.below(keys),
                    at,
                }
            })
            .collect()
    }

    /// A series of `events` added one by one.
    fn series_of(events: &[Event]) -> Series {
        let mut series = Series::default();
        add_one_by_one(&mut series, events);
        series
    }

    /// Adds `events` one by one, each moving the events after it, as the
    /// series did before it took batches.
    fn add_one_by_one(series: &mut Series, events: &[Event]) {
        for event in events {
            let place = series.position_after(event.time, event.key);
            series.times.insert(place, event.time);
            if let Some(amount) = event.amount {
                series.amounts.insert(place, amount);
            }
            series.keys.insert(place, event.key);
            series.refs.insert(place, event.at);
            match &mut series.key_set {
                Some(set) => {
                    set.insert(event.key);
                }
                None if series.keys.len() >= KEY_SET_FROM => {
                    series.key_set = Some(Box::new(series.keys.iter().copied().collect()));
                }
                None => {}
            }
        }
    }

    /// Checks that adding `added` at once to a series of `held` gives
    /// what adding them one by one gives.
    fn assert_batch_matches_one_by_one(held: &[Event], added: &[Event]) {
        let one_by_one = series_of(&[held, added].concat());
        let mut batched = series_of(held);
        batched.insert_many(&mut added.to_vec());
        assert_eq!(batched.times, one_by_one.times);
        assert_eq!(batched.amounts, one_by_one.amounts);
        assert_eq!(batched.keys, one_by_one.keys);
        assert_eq!(batched.refs, one_by_one.refs);
        assert_eq!(batched.key_set, one_by_one.key_set);
    }

    #[test]
    fn a_batch_lands_where_single_inserts_would() {
        let mut random = Random(0x5EED);
        for round in 0..400 {
            let purchases = round % 2 == 0;
            let held = random.below(150) as usize;
            let added = random.below(120) as usize;
            // Few times and keys, so that ties of both are common.
            let times = 1 + random.below(60);
            let keys = 1 + random.below(4);
            let held = events(&mut random, 1, held, times, keys, purchases);
            let added = events(&mut random, 2, added, times, keys, purchases);
            assert_batch_matches_one_by_one(&held, &added);
        }
    }

    #[test]
    fn a_batch_goes_before_after_or_among_the_events_held() {
        let event = |time: i64, key: u64, position: usize| Event {
            time,
            amount: Some(time),
            key,
            at: EventRef::new(7, position),
        };
        let held: Vec<Event> = (0..10).map(|i| event(100 + i, 5, i as usize)).collect();
        let before: Vec<Event> = (0..5).rev().map(|i| event(i, 5, 20 + i as usize)).collect();
        let after: Vec<Event> = (0..5).map(|i| event(200 + i, 5, 30 + i as usize)).collect();
        let among: Vec<Event> = (0..10)
            .rev()
            .map(|i| event(100 + i, 5, 40 + i as usize))
            .collect();
        let ties = [
            event(103, 4, 50),
            event(103, 5, 51),
            event(103, 5, 52),
            event(103, 6, 53),
        ];
        for added in [&before[..], &after, &among, &ties, &[]] {
            assert_batch_matches_one_by_one(&held, added);
            assert_batch_matches_one_by_one(&[], added);
        }

        let mut series = series_of(&held);
        series.insert_many(&mut among.clone());
        let in_order = [held.clone(), among].concat();
        let refs = |times: std::ops::Range<i64>| -> Vec<EventRef> {
            times
                .flat_map(|time| in_order.iter().filter(move |event| event.time == time))
                .map(|event| event.at)
                .collect()
        };
        // Equal events: the ones held first, then the ones added.
        assert_eq!(series.refs, refs(100..110));
        assert_eq!(
            series.refs[..2],
            [EventRef::new(7, 0), EventRef::new(7, 40)]
        );
    }

    #[test]
    fn a_batch_of_engagements_keeps_no_amounts() {
        let mut random = Random(0xE46A);
        let held = events(&mut random, 1, 30, 50, 1000, false);
        let added = events(&mut random, 2, 30, 50, 1000, false);
        assert_batch_matches_one_by_one(&held, &added);
        let mut series = series_of(&held);
        series.insert_many(&mut added.clone());
        assert_eq!(series.len(), 60);
        assert!(series.amounts.is_empty());
    }

    #[test]
    fn a_long_series_finds_the_keys_of_a_batch() {
        let mut random = Random(0x10C6);
        let held = events(&mut random, 1, 40, 1000, 1 << 40, true);
        let added = events(&mut random, 2, 40, 1000, 1 << 40, true);
        let mut series = series_of(&held);
        assert!(series.key_set.is_none());
        series.insert_many(&mut added.clone());
        assert!(series.key_set.is_some());
        for event in held.iter().chain(&added) {
            assert_eq!(series.refs_with_key(event.key), [event.at]);
        }
        assert!(series.refs_with_key(1 << 41).is_empty());

        let more = events(&mut random, 3, 40, 1000, 1 << 40, true);
        series.insert_many(&mut more.clone());
        for event in &more {
            assert_eq!(series.refs_with_key(event.key), [event.at]);
        }
        assert_batch_matches_one_by_one(&[held, added].concat(), &more);
    }

    #[test]
    fn a_row_notes_the_firsts_of_a_batch_of_engagements() {
        let event = |time: i64, position: usize| Event {
            time,
            amount: None,
            key: position as u64,
            at: EventRef::new(3, position),
        };
        let mut row = Row::default();
        row.insert_engagements(&[]);
        assert_eq!(row.engagement_bytes(), 0);
        row.insert_engagements(&[
            (EngagementKind::Visit, event(50, 0)),
            (EngagementKind::Feedback, event(40, 1)),
            (EngagementKind::Visit, event(20, 2)),
        ]);
        row.insert_engagements(&[(EngagementKind::Visit, event(30, 3))]);
        assert_eq!(row.engagements().times, [20, 30, 40, 50]);
        let firsts = row.firsts();
        assert_eq!(
            (firsts.visit, firsts.feedback, firsts.referral),
            (Some(20), Some(40), None)
        );

        row.insert_purchases(&mut [event(9, 4), event(1, 5)].map(|event| Event {
            amount: Some(event.time),
            ..event
        }));
        assert_eq!(row.purchases.times, [1, 9]);
        assert_eq!(row.purchases.amounts, [1, 9]);
        assert_eq!(row.latest(), 50);
    }
}
