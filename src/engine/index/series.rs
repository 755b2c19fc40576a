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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bytemuck::Pod, bytemuck::Zeroable,
)]
#[repr(transparent)]
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

/// One customer's events of one kind, sorted by (time, key), in one
/// allocation: the arrays of times, amounts (purchases only), id hashes
/// and storage places side by side, each `capacity` words long. One
/// allocation rather than four is a quarter of the allocator's work when
/// an index of millions of customers is built or read, less rounding to
/// the allocator's sizes, and 32 bytes of series rather than 104.
#[derive(Debug, Default)]
pub struct Series {
    /// The arrays, each as many words as the series has room for events.
    words: Box<[u64]>,
    /// Events held. A customer's events take at least 24 bytes each, so
    /// four billion of them cannot be held in any memory.
    len: u32,
    /// Whether the series has amounts: purchases do, engagement events do
    /// not. Settled when the first events arrive.
    with_amounts: bool,
    /// The keys of a long series as a set, so that a duplicate check does
    /// not scan it; `None` for short series. Boxed, so that the many short
    /// series pay 8 bytes for it rather than a whole table header.
    #[allow(clippy::box_collection)]
    key_set: Option<Box<HashSet<u64, RandomState>>>,
}

/// The length from which a series keeps a key set. Shorter series are
/// scanned, which is as fast and costs no memory.
const KEY_SET_FROM: usize = 64;

/// The arrays of a series, in the order they lie in its allocation.
#[derive(Debug, Clone, Copy)]
enum Lane {
    Times,
    Amounts,
    Keys,
    Refs,
}

/// A count of events as a series' length.
fn length(events: usize) -> u32 {
    u32::try_from(events).expect("a customer's events fit in 32 bits")
}

impl Series {
    /// The arrays the series has: four with amounts, three without.
    fn lanes(&self) -> usize {
        if self.with_amounts {
            4
        } else {
            3
        }
    }

    /// The events the series has room for; by constant divisors, which
    /// compile to a multiplication.
    fn capacity(&self) -> usize {
        if self.with_amounts {
            self.words.len() / 4
        } else {
            self.words.len() / 3
        }
    }

    /// Where `lane` starts in the allocation.
    fn base(&self, lane: Lane) -> usize {
        let amounts = usize::from(self.with_amounts);
        self.capacity()
            * match lane {
                Lane::Times => 0,
                Lane::Amounts => 1,
                Lane::Keys => 1 + amounts,
                Lane::Refs => 2 + amounts,
            }
    }

    /// The lanes' starts, in their order.
    fn bases(&self) -> impl Iterator<Item = usize> {
        let capacity = self.capacity();
        (0..self.lanes()).map(move |lane| lane * capacity)
    }

    /// The held part of `lane`.
    fn lane(&self, lane: Lane) -> &[u64] {
        let base = self.base(lane);
        &self.words[base..base + self.len()]
    }

    /// Occurrence times, nanoseconds since the epoch.
    pub fn times(&self) -> &[i64] {
        bytemuck::cast_slice(self.lane(Lane::Times))
    }

    /// Amounts in minor units: one per event for purchases, none for
    /// engagement events.
    pub fn amounts(&self) -> &[i64] {
        if self.with_amounts {
            bytemuck::cast_slice(self.lane(Lane::Amounts))
        } else {
            &[]
        }
    }

    /// Hashes of the event ids.
    pub fn keys(&self) -> &[u64] {
        self.lane(Lane::Keys)
    }

    /// Where each event is stored.
    pub fn refs(&self) -> &[EventRef] {
        bytemuck::cast_slice(self.lane(Lane::Refs))
    }

    /// The times, to be spoilt by a test.
    #[cfg(test)]
    pub(super) fn times_mut(&mut self) -> &mut [i64] {
        let len = self.len();
        bytemuck::cast_slice_mut(&mut self.words[..len])
    }

    /// Moves the events into an allocation with room for `capacity`, which
    /// holds them, with an amounts lane if `with_amounts` (which only an
    /// empty series may change).
    fn reallocate(&mut self, capacity: usize, with_amounts: bool) {
        let len = self.len();
        debug_assert!(capacity >= len && (len == 0 || with_amounts == self.with_amounts));
        let (old_lanes, old_capacity) = (self.lanes(), self.capacity());
        self.with_amounts = with_amounts;
        // Only the room beyond the events is zeroed.
        let mut words = Vec::with_capacity(capacity * self.lanes());
        for lane in 0..self.lanes() {
            if lane < old_lanes {
                let from = lane * old_capacity;
                words.extend_from_slice(&self.words[from..from + len]);
            }
            words.resize((lane + 1) * capacity, 0);
        }
        self.words = words.into_boxed_slice();
    }

    /// Makes room for `events` more events, growing as a vector does
    /// (at least doubling) unless `exact`.
    fn reserve(&mut self, events: usize, with_amounts: bool, exact: bool) {
        // Only an empty series takes a kind: a held one keeps its lanes.
        let with_amounts = if self.is_empty() {
            with_amounts
        } else {
            self.with_amounts
        };
        let needed = self.len() + events;
        let settled = self.words.is_empty() || self.with_amounts == with_amounts;
        if needed <= self.capacity() && settled {
            return;
        }
        let capacity = if exact {
            needed
        } else {
            needed.max(self.capacity() * 2).max(4)
        };
        self.reallocate(capacity, with_amounts);
    }

    /// Puts an event at position `at` of every lane.
    fn set(&mut self, at: usize, time: i64, amount: Option<i64>, key: u64, place: EventRef) {
        let times = self.base(Lane::Times);
        self.words[times + at] = time as u64;
        if let Some(amount) = amount {
            let amounts = self.base(Lane::Amounts);
            self.words[amounts + at] = amount as u64;
        }
        let keys = self.base(Lane::Keys);
        self.words[keys + at] = key;
        let refs = self.base(Lane::Refs);
        self.words[refs + at] = place.0;
    }

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
    /// Events that all follow the series are appended. Otherwise the
    /// arrays grow at most once and are merged from the back, so that an
    /// event held moves at most once, whatever the order of `events`.
    pub(super) fn insert_many(&mut self, events: &mut [Event]) {
        let Some(first) = events.first() else {
            return;
        };
        let with_amounts = first.amount.is_some();
        debug_assert!(events
            .iter()
            .all(|event| event.amount.is_some() == with_amounts));
        debug_assert!(self.is_empty() || self.with_amounts == with_amounts);
        // Stable: equal events keep their given order.
        events.sort_by_key(|event| (event.time, event.key));
        let held = self.len();
        let earliest = (events[0].time, events[0].key);
        let follows = held == 0 || (self.times()[held - 1], self.keys()[held - 1]) <= earliest;
        self.reserve(events.len(), with_amounts, false);
        if follows {
            for (at, event) in (held..).zip(events.iter()) {
                self.set(at, event.time, event.amount, event.key, event.at);
            }
            self.len = length(held + events.len());
        } else {
            self.merge(events);
        }
        let long = self.len() >= KEY_SET_FROM;
        match &mut self.key_set {
            Some(set) => set.extend(events.iter().map(|event| event.key)),
            None if long => {
                self.key_set = Some(Box::new(self.keys().iter().copied().collect()));
            }
            None => {}
        }
    }

    /// Merges events sorted by (time, key) into the series, which has room
    /// for them: from the last event back, moves the held events after it
    /// up by the number of events still to place, and puts it in the gap
    /// left below them.
    fn merge(&mut self, events: &[Event]) {
        let held = self.len();
        let bases: Vec<usize> = self.bases().collect();
        // Held events at `unmoved..` have their final places.
        let mut unmoved = held;
        for (before, event) in events.iter().enumerate().rev() {
            let place = position_after(
                &self.times()[..unmoved],
                &self.keys()[..unmoved],
                event.time,
                event.key,
            );
            let shift = before + 1;
            for &base in &bases {
                self.words
                    .copy_within(base + place..base + unmoved, base + place + shift);
            }
            self.set(
                place + before,
                event.time,
                event.amount,
                event.key,
                event.at,
            );
            unmoved = place;
        }
        self.len = length(held + events.len());
    }

    /// The index of the first event after (time, key).
    pub fn position_after(&self, time: i64, key: u64) -> usize {
        position_after(self.times(), self.keys(), time, key)
    }

    /// The index of the first event at or after (time, key).
    pub fn position_before(&self, time: i64, key: u64) -> usize {
        let times = self.times();
        let start = times.partition_point(|&t| t < time);
        let end = times.partition_point(|&t| t <= time);
        start + self.keys()[start..end].partition_point(|&k| k < key)
    }

    /// Where the events with this key are stored.
    pub fn refs_with_key(&self, key: u64) -> Vec<EventRef> {
        if self.key_set.as_ref().is_some_and(|set| !set.contains(&key)) {
            return Vec::new();
        }
        self.keys()
            .iter()
            .zip(self.refs())
            .filter(|(k, _)| **k == key)
            .map(|(_, at)| *at)
            .collect()
    }

    /// Events in the series.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the series is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes of the arrays.
    pub(super) fn heap_bytes(&self) -> usize {
        // A set slot is the key and one control byte.
        self.words.len() * 8 + self.key_set.as_ref().map_or(0, |set| set.capacity() * 9)
    }

    /// Makes room for exactly `events` more events, with their amounts if
    /// `with_amounts`.
    fn reserve_exact(&mut self, events: usize, with_amounts: bool) {
        self.reserve(events, with_amounts, true);
    }

    /// A series of `len` events from the words of its arrays, each exactly
    /// `len` long and in the order of the lanes, as the index's image holds
    /// them; with the key set of a long one. `None` unless the words are
    /// as many as the lanes need and the events are in (time, key) order.
    pub(super) fn from_words(words: Box<[u64]>, len: usize, with_amounts: bool) -> Option<Self> {
        let len32 = u32::try_from(len).ok()?;
        let series = Series {
            words,
            len: len32,
            with_amounts,
            key_set: None,
        };
        if series.words.len() != len * series.lanes() {
            return None;
        }
        series.in_order().then(|| series.with_key_set())
    }

    /// Whether the events are in (time, key) order.
    fn in_order(&self) -> bool {
        self.times()
            .windows(2)
            .zip(self.keys().windows(2))
            .all(|(t, k)| (t[0], k[0]) <= (t[1], k[1]))
    }

    /// The series with the key set a long series keeps.
    fn with_key_set(mut self) -> Self {
        if self.len() >= KEY_SET_FROM {
            self.key_set = Some(Box::new(self.keys().iter().copied().collect()));
        }
        self
    }

    /// Appends an event out of order, during a bulk load; see [`Series::finish_load`].
    pub(super) fn push(&mut self, time: i64, amount: Option<i64>, key: u64, at: EventRef) {
        self.reserve(1, amount.is_some(), false);
        let held = self.len();
        self.set(held, time, amount, key, at);
        self.len = length(held + 1);
    }

    /// Puts a bulk-loaded series in (time, key) order and gives back its
    /// spare room.
    pub(super) fn finish_load(&mut self) {
        let (times, keys) = (self.times(), self.keys());
        let len = self.len();
        if !self.in_order() {
            let mut order: Vec<usize> = (0..len).collect();
            order.sort_unstable_by_key(|&i| (times[i], keys[i]));
            let mut words = Vec::with_capacity(len * self.lanes());
            for base in self.bases() {
                words.extend(order.iter().map(|&i| self.words[base + i]));
            }
            self.words = words.into_boxed_slice();
        } else if self.capacity() != len {
            self.reallocate(len, self.with_amounts);
        }
        let series = std::mem::take(self);
        *self = series.with_key_set();
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
static NO_EVENTS: std::sync::LazyLock<Series> = std::sync::LazyLock::new(Series::default);

impl Row {
    /// Engagement events.
    pub fn engagements(&self) -> &Series {
        self.engaged
            .as_ref()
            .map_or_else(|| &*NO_EVENTS, |engaged| &engaged.series)
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
        let last = |series: &Series| series.times().last().copied().unwrap_or(i64::MIN);
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

    /// Ten million rows pay for every byte of these.
    #[test]
    fn a_series_and_a_row_stay_small() {
        assert_eq!(std::mem::size_of::<Series>(), 32);
        assert_eq!(std::mem::size_of::<Row>(), 40);
    }

    #[test]
    fn an_empty_series_takes_the_kind_of_its_first_events() {
        let mut series = Series::default();
        series.reserve_exact(5, false);
        series.insert(1, Some(10), 7, EventRef::new(0, 1));
        series.insert(2, Some(20), 8, EventRef::new(0, 2));
        assert_eq!(series.times(), [1, 2]);
        assert_eq!(series.amounts(), [10, 20]);
        assert_eq!(series.keys(), [7, 8]);
        assert_eq!(series.refs(), [EventRef::new(0, 1), EventRef::new(0, 2)]);
    }

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
        assert_eq!(series.times(), [1, 3, 5, 5]);
        assert_eq!(series.keys(), [9, 3, 0, 1]);
        assert_eq!(series.amounts(), [10, 30, 50, 50]);
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

    /// What a series holds, as plain vectors, and the key set it keeps.
    #[derive(Debug, Default, PartialEq)]
    struct Plain {
        times: Vec<i64>,
        amounts: Vec<i64>,
        keys: Vec<u64>,
        refs: Vec<EventRef>,
        key_set: Option<HashSet<u64, RandomState>>,
    }

    fn plain(series: &Series) -> Plain {
        Plain {
            times: series.times().to_vec(),
            amounts: series.amounts().to_vec(),
            keys: series.keys().to_vec(),
            refs: series.refs().to_vec(),
            key_set: series.key_set.as_deref().cloned(),
        }
    }

    /// `events` added one by one to plain vectors, each moving the events
    /// after it, as the series did before it took batches.
    fn one_by_one(events: &[Event]) -> Plain {
        let mut plain = Plain::default();
        for event in events {
            let place = position_after(&plain.times, &plain.keys, event.time, event.key);
            plain.times.insert(place, event.time);
            if let Some(amount) = event.amount {
                plain.amounts.insert(place, amount);
            }
            plain.keys.insert(place, event.key);
            plain.refs.insert(place, event.at);
        }
        if plain.keys.len() >= KEY_SET_FROM {
            plain.key_set = Some(plain.keys.iter().copied().collect());
        }
        plain
    }

    /// A series of `events`, inserted one at a time.
    fn series_of(events: &[Event]) -> Series {
        let mut series = Series::default();
        for event in events {
            series.insert(event.time, event.amount, event.key, event.at);
        }
        series
    }

    /// Checks that adding `added` at once to a series of `held` gives
    /// what adding them one by one gives.
    fn assert_batch_matches_one_by_one(held: &[Event], added: &[Event]) {
        let expected = one_by_one(&[held, added].concat());
        assert_eq!(plain(&series_of(held)), one_by_one(held));
        let mut batched = series_of(held);
        batched.insert_many(&mut added.to_vec());
        assert_eq!(plain(&batched), expected);
        // So does a bulk load of the same events, in any order.
        let mut loaded = Series::default();
        for event in added.iter().rev().chain(held) {
            loaded.push(event.time, event.amount, event.key, event.at);
        }
        loaded.finish_load();
        let loaded = plain(&loaded);
        assert_eq!(
            (&loaded.times, &loaded.keys, &loaded.key_set),
            (&expected.times, &expected.keys, &expected.key_set)
        );
        // The image's form of the series reads back as the series.
        let words: Box<[u64]> = expected
            .times
            .iter()
            .chain(&expected.amounts)
            .map(|&word| word as u64)
            .chain(expected.keys.iter().copied())
            .chain(expected.refs.iter().map(|at| at.0))
            .collect();
        let with_amounts = !expected.amounts.is_empty();
        let read = Series::from_words(words, expected.times.len(), with_amounts).unwrap();
        assert_eq!(plain(&read), expected);
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
        assert_eq!(series.refs(), refs(100..110));
        assert_eq!(
            series.refs()[..2],
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
        assert!(series.amounts().is_empty());
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
        assert_eq!(row.engagements().times(), [20, 30, 40, 50]);
        let firsts = row.firsts();
        assert_eq!(
            (firsts.visit, firsts.feedback, firsts.referral),
            (Some(20), Some(40), None)
        );

        row.insert_purchases(&mut [event(9, 4), event(1, 5)].map(|event| Event {
            amount: Some(event.time),
            ..event
        }));
        assert_eq!(row.purchases.times(), [1, 9]);
        assert_eq!(row.purchases.amounts(), [1, 9]);
        assert_eq!(row.latest(), 50);
    }
}
