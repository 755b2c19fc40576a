//! RFM scores by quintile bounds: a score is 1 plus the number of four
//! bounds a value passes, so scoring one customer is four comparisons and
//! scoring everyone is one pass. The bounds are found by selection, and
//! then kept, purchase by purchase, by [`RfmTracker`]; [`RfmState`] holds
//! the bounds and the tracker for the index, and says when they are at hand.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};

use crate::domain::features::NANOS_PER_DAY;

/// The place of quintile bound `k` (0..4) among `p` purchasers in
/// ascending order: ceil((k + 1) × P / 5) − 1.
fn place(k: usize, p: usize) -> usize {
    ((k + 1) * p).div_ceil(5) - 1
}

/// The values at `ranks` (ascending) of the ascending order of `values`,
/// found by selection, each in what the one before left to its right.
fn values_at<T: Ord + Copy>(values: &mut [T], ranks: &[usize]) -> Vec<T> {
    let mut found = Vec::with_capacity(ranks.len());
    let mut from = 0;
    for &rank in ranks {
        let (_, value, _) = values[from..].select_nth_unstable(rank - from);
        found.push(*value);
        from = rank;
    }
    found
}

/// The values at the four places of the ascending order of `values` (P of
/// them, at least one).
fn places<T: Ord + Copy>(mut values: Vec<T>) -> [T; 4] {
    let p = values.len();
    let found = values_at(&mut values, &[0, 1, 2, 3].map(|k| place(k, p)));
    [found[0], found[1], found[2], found[3]]
}

/// Where the RFM scores step up. A score is 1 + floor(5 × S / P), S being
/// the purchasers strictly worse; it is at least k + 1 exactly when S is at
/// least ceil(k × P / 5), that is when the value is better than the
/// purchaser at that place in sorted order. So a score is 1 plus the number
/// of these four bounds a value passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RfmBounds {
    /// Last purchase times at the four places (ascending order): a
    /// recency in whole days smaller than theirs passes.
    lasts: [i64; 4],
    /// Purchase counts at the four places: a count above passes.
    counts: [u32; 4],
    /// Spend at the four places: a spend above passes.
    totals: [i64; 4],
}

impl RfmBounds {
    /// The bounds of the figures of the same purchasers, in any order;
    /// `None` when there are none. Four selections per figure, no sort.
    pub fn from_figures(lasts: Vec<i64>, counts: Vec<u32>, totals: Vec<i64>) -> Option<Self> {
        if counts.is_empty() {
            return None;
        }
        let ((lasts, counts), totals) = rayon::join(
            || rayon::join(|| places(lasts), || places(counts)),
            || places(totals),
        );
        Some(RfmBounds {
            lasts,
            counts,
            totals,
        })
    }

    /// R of a purchaser whose last purchase was at `last`: worse is a
    /// larger recency, so S counts purchasers whose last purchase is at or
    /// before T − (recency + 1) days; it reaches a place when the recency
    /// is smaller than that purchaser's.
    pub fn r(&self, at: i64, last: i64) -> u8 {
        let recency = |last: i64| at.saturating_sub(last).div_euclid(NANOS_PER_DAY);
        let mine = recency(last);
        score(self.lasts.map(|bound| mine < recency(bound)))
    }

    /// The bounds as bytes, little-endian, in a fixed order: R's, F's,
    /// then M's.
    pub fn to_bytes(self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(4 * (8 + 4 + 8));
        for last in self.lasts {
            bytes.extend_from_slice(&last.to_le_bytes());
        }
        for count in self.counts {
            bytes.extend_from_slice(&count.to_le_bytes());
        }
        for total in self.totals {
            bytes.extend_from_slice(&total.to_le_bytes());
        }
        bytes
    }

    /// The recency in whole days at `at` of each R bound: R scores move
    /// with time alone only when one of these, or the customer's own, does.
    pub fn recency_days(&self, at: i64) -> [i64; 4] {
        self.lasts
            .map(|last| at.saturating_sub(last).div_euclid(NANOS_PER_DAY))
    }

    /// F of a purchase count.
    pub fn f(&self, count: u32) -> u8 {
        score(self.counts.map(|bound| count > bound))
    }

    /// M of a spend.
    pub fn m(&self, total: i64) -> u8 {
        score(self.totals.map(|bound| total > bound))
    }

    /// What the scores depend on at `at`.
    pub fn at(&self, at: i64) -> ScoreBounds {
        ScoreBounds {
            recency: self.recency_days(at),
            counts: self.counts,
            totals: self.totals,
        }
    }
}

/// What every purchaser's RFM scores at one time depend on: the recency
/// in whole days of each R bound then, and the F and M bounds. Bounds
/// that moved without moving these moved no one's scores: a purchase
/// moves the R bounds by nanoseconds, and seldom their recency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreBounds {
    recency: [i64; 4],
    counts: [u32; 4],
    totals: [i64; 4],
}

impl ScoreBounds {
    /// R, F and M of a purchaser whose last purchase was `recency` whole
    /// days before, with `count` purchases and `total` spend: those of
    /// [`RfmBounds::r`], [`RfmBounds::f`] and [`RfmBounds::m`].
    pub fn scores(&self, recency: i64, count: u32, total: i64) -> [u8; 3] {
        [
            score(self.recency.map(|bound| recency < bound)),
            score(self.counts.map(|bound| count > bound)),
            score(self.totals.map(|bound| total > bound)),
        ]
    }
}

/// A score: 1 plus the number of the four bounds a value passes.
fn score(passes: [bool; 4]) -> u8 {
    1 + passes.iter().filter(|&&pass| pass).count() as u8
}

/// How many purchasers on each side of a place its window reaches when it
/// is made; a place leaves its window after at least this many changes
/// that pass it, and the bounds are then found again from the columns.
const SPREAD: usize = 2048;

/// One figure of every purchaser, kept exact near the four places: per
/// place, how many values lie below a range of values, and the values in
/// that range with their multiplicities. A change of one value costs a few
/// comparisons, and a place is read by walking its window.
#[derive(Debug, Clone)]
struct Windows<T: Ord + Copy> {
    /// Per place, the lowest and the highest value of its window.
    range: [(T, T); 4],
    /// Per place, the values below `range.0`.
    below: [usize; 4],
    /// Per place, the values within `range`, by value.
    window: [BTreeMap<T, u32>; 4],
}

impl<T: Ord + Copy> Windows<T> {
    /// The windows of `values` (at least one), `spread` places either side.
    fn new(mut values: Vec<T>, spread: usize) -> Self {
        let p = values.len();
        let ends = [0, 1, 2, 3].map(|k| {
            let at = place(k, p);
            (at.saturating_sub(spread), (at + spread).min(p - 1))
        });
        let mut ranks: Vec<usize> = ends.iter().flat_map(|&(lo, hi)| [lo, hi]).collect();
        ranks.sort_unstable();
        ranks.dedup();
        let found = values_at(&mut values, &ranks);
        let value_at = |rank: usize| found[ranks.binary_search(&rank).unwrap_or_default()];
        let range = ends.map(|(lo, hi)| (value_at(lo), value_at(hi)));
        let mut below = [0; 4];
        let mut window: [BTreeMap<T, u32>; 4] = Default::default();
        for &value in &values {
            for k in 0..4 {
                let (lo, hi) = range[k];
                if value < lo {
                    below[k] += 1;
                } else if value <= hi {
                    *window[k].entry(value).or_default() += 1;
                }
            }
        }
        Windows {
            range,
            below,
            window,
        }
    }

    fn add(&mut self, value: T) {
        for k in 0..4 {
            let (lo, hi) = self.range[k];
            if value < lo {
                self.below[k] += 1;
            } else if value <= hi {
                *self.window[k].entry(value).or_default() += 1;
            }
        }
    }

    fn remove(&mut self, value: T) {
        for k in 0..4 {
            let (lo, hi) = self.range[k];
            if value < lo {
                self.below[k] = self.below[k].saturating_sub(1);
            } else if value <= hi {
                if let Some(count) = self.window[k].get_mut(&value) {
                    *count -= 1;
                    if *count == 0 {
                        self.window[k].remove(&value);
                    }
                }
            }
        }
    }

    /// The values at the four places among `p` purchasers, or `None` when
    /// a place has left its window.
    fn places(&self, p: usize) -> Option<[T; 4]> {
        let mut found = [self.range[0].0; 4];
        for (k, slot) in found.iter_mut().enumerate() {
            let rank = place(k, p).checked_sub(self.below[k])?;
            let mut passed = 0;
            *slot = self.window[k]
                .iter()
                .find(|(_, &count)| {
                    passed += count as usize;
                    passed > rank
                })
                .map(|(&value, _)| value)?;
        }
        Some(found)
    }
}

/// The purchasers' figures kept near the places of the RFM bounds, so that
/// a purchase moves the bounds without a new selection over everyone.
#[derive(Debug, Clone)]
pub struct RfmTracker {
    purchasers: usize,
    lasts: Windows<i64>,
    counts: Windows<u32>,
    totals: Windows<i64>,
}

/// One purchaser's figures: last purchase time, purchases, spend.
pub type Figures = (i64, u32, i64);

impl RfmTracker {
    /// The tracker of these purchasers' figures (the same purchasers in
    /// the same order in each); `None` when there are none.
    pub fn new(lasts: Vec<i64>, counts: Vec<u32>, totals: Vec<i64>) -> Option<Self> {
        Self::with_spread(lasts, counts, totals, SPREAD)
    }

    fn with_spread(
        lasts: Vec<i64>,
        counts: Vec<u32>,
        totals: Vec<i64>,
        spread: usize,
    ) -> Option<Self> {
        if counts.is_empty() {
            return None;
        }
        let purchasers = counts.len();
        let ((lasts, counts), totals) = rayon::join(
            || {
                rayon::join(
                    || Windows::new(lasts, spread),
                    || Windows::new(counts, spread),
                )
            },
            || Windows::new(totals, spread),
        );
        Some(RfmTracker {
            purchasers,
            lasts,
            counts,
            totals,
        })
    }

    /// A purchaser's figures change from `old` to `new`; `None` is not a
    /// purchaser (yet, or any more).
    pub fn change(&mut self, old: Option<Figures>, new: Option<Figures>) {
        if let Some((last, count, total)) = old {
            self.purchasers = self.purchasers.saturating_sub(1);
            self.lasts.remove(last);
            self.counts.remove(count);
            self.totals.remove(total);
        }
        if let Some((last, count, total)) = new {
            self.purchasers += 1;
            self.lasts.add(last);
            self.counts.add(count);
            self.totals.add(total);
        }
    }

    /// The bounds now: `Some(None)` with no purchasers, `None` when a place
    /// has left its window and the bounds must be found from the columns.
    pub fn bounds(&self) -> Option<Option<RfmBounds>> {
        if self.purchasers == 0 {
            return Some(None);
        }
        let p = self.purchasers;
        Some(Some(RfmBounds {
            lasts: self.lasts.places(p)?,
            counts: self.counts.places(p)?,
            totals: self.totals.places(p)?,
        }))
    }
}

/// Every purchaser's figures, the same purchasers in the same order in
/// each: last purchase times, purchase counts, spend.
pub type AllFigures = (Vec<i64>, Vec<u32>, Vec<i64>);

/// Changes without anyone asking for the bounds after which the tracker is
/// dropped: a bulk import does not pay to keep it, and the next reader
/// finds the bounds from the columns.
const UNREAD_CHANGES: usize = 8192;

/// The RFM bounds over the all-time figures, and the tracker that moves
/// them with each purchase. Writers change it through `&mut` (no lock is
/// taken); readers share the bounds, and the first to find them stale
/// brings them up to date, holding the lock for microseconds only.
#[derive(Debug, Default)]
pub struct RfmState {
    /// The bounds and the tracker.
    kept: RwLock<Kept>,
    /// Held by the reader that finds the bounds from every purchaser's
    /// figures, so that one does.
    finding: Mutex<()>,
}

/// What [`RfmState`] keeps behind its lock.
#[derive(Debug, Default)]
struct Kept {
    /// The bounds as of the last change; `None` when they must be found.
    bounds: Option<Option<RfmBounds>>,
    /// The figures near the bounds' places, when they are kept.
    tracker: Option<RfmTracker>,
    /// Whether the tracker is made yet: with no purchasers there is none.
    tracked: bool,
    /// Changes since the bounds were last asked for.
    unread: usize,
}

impl Kept {
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
            None => *self = Kept::default(),
        }
        bounds
    }
}

impl RfmState {
    fn kept(&self) -> std::sync::RwLockReadGuard<'_, Kept> {
        self.kept
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn kept_mut(&self) -> std::sync::RwLockWriteGuard<'_, Kept> {
        self.kept
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the bounds are at hand, so that asking for them costs
    /// microseconds. Waits only for microseconds: no one holds the lock
    /// while finding the bounds from every purchaser's figures.
    pub fn ready(&self) -> bool {
        if self.kept().bounds.is_some() {
            return true;
        }
        self.kept_mut().tracked_bounds().is_some()
    }

    /// The bounds, found from `figures` (every purchaser's) when neither
    /// they nor the tracker are at hand.
    pub fn bounds(&self, figures: impl FnOnce() -> AllFigures) -> Option<RfmBounds> {
        if let Some(bounds) = self.kept().bounds {
            return bounds;
        }
        if let Some(bounds) = self.kept_mut().tracked_bounds() {
            return bounds;
        }
        // Found without the lock: the figures cannot change meanwhile, for
        // the caller holds the index and `change` needs it for writing. One
        // reader finds them; another that comes meanwhile waits for it.
        let _finding = self
            .finding
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(bounds) = self.kept().bounds {
            return bounds;
        }
        let (lasts, counts, totals) = figures();
        let tracker = RfmTracker::new(lasts, counts, totals);
        let bounds = tracker.as_ref().and_then(RfmTracker::bounds).flatten();
        *self.kept_mut() = Kept {
            bounds: Some(bounds),
            tracker,
            tracked: true,
            unread: 0,
        };
        bounds
    }

    /// Moves the bounds for a change of one customer's figures.
    pub fn change(&mut self, old: Option<Figures>, new: Option<Figures>) {
        if old == new {
            return;
        }
        let kept = self
            .kept
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.bounds = None;
        kept.unread += 1;
        match &mut kept.tracker {
            Some(_) if kept.unread > UNREAD_CHANGES => *kept = Kept::default(),
            Some(tracker) => tracker.change(old, new),
            // With no purchasers before, the first one makes the tracker.
            None => kept.tracked = false,
        }
    }

    /// Forgets the bounds: they are found again from the figures.
    pub fn forget(&mut self) {
        *self
            .kept
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Kept::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_those_of_the_sorted_order() {
        let mut state = 7u64;
        for p in 1..200usize {
            let values: Vec<i64> = (0..p)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    (state >> 40) as i64 % 50
                })
                .collect();
            let mut sorted = values.clone();
            sorted.sort_unstable();
            let expected = [1, 2, 3, 4].map(|k: usize| sorted[(k * p).div_ceil(5) - 1]);
            assert_eq!(places(values), expected, "{p}");
        }
    }

    /// A small generator, the same every run.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    fn figures_of(all: &[Figures]) -> (Vec<i64>, Vec<u32>, Vec<i64>) {
        (
            all.iter().map(|f| f.0).collect(),
            all.iter().map(|f| f.1).collect(),
            all.iter().map(|f| f.2).collect(),
        )
    }

    #[test]
    fn score_bounds_place_as_the_bounds_do() {
        let mut rng = Lcg(5);
        let day = NANOS_PER_DAY;
        for _ in 0..200 {
            let n = 1 + rng.below(300) as usize;
            let all: Vec<Figures> = (0..n)
                .map(|_| {
                    (
                        rng.below(400 * day as u64) as i64,
                        1 + rng.below(12) as u32,
                        rng.below(50_000) as i64,
                    )
                })
                .collect();
            let (lasts, counts, totals) = figures_of(&all);
            let bounds = RfmBounds::from_figures(lasts, counts, totals).unwrap();
            // Any time of day, so that whole days fall anywhere.
            let at = 400 * day + rng.below(day as u64) as i64;
            let placed = bounds.at(at);
            for &(last, count, total) in &all {
                let recency = at.saturating_sub(last).div_euclid(day);
                assert_eq!(
                    placed.scores(recency, count, total),
                    [bounds.r(at, last), bounds.f(count), bounds.m(total)]
                );
            }
        }
    }

    #[test]
    fn tracked_bounds_are_those_found_afresh() {
        let mut rng = Lcg(11);
        // A narrow spread, so that places leave their windows often.
        for (start, spread) in [(0usize, 2), (1, 4), (7, 8), (300, 16), (2_000, 64)] {
            let mut all: Vec<Figures> = (0..start)
                .map(|_| {
                    (
                        rng.below(4_000) as i64,
                        1 + rng.below(6) as u32,
                        rng.below(90_000) as i64,
                    )
                })
                .collect();
            let made = |all: &[Figures]| {
                let (l, c, t) = figures_of(all);
                RfmTracker::with_spread(l, c, t, spread)
            };
            let mut tracker = made(&all);
            let (mut kept, mut rebuilt) = (0, 0);
            for step in 0..2_000 {
                let change = rng.below(10);
                let (old, new) = if change < 2 && !all.is_empty() {
                    // A purchaser leaves.
                    let at = rng.below(all.len() as u64) as usize;
                    (Some(all.swap_remove(at)), None)
                } else if change < 5 || all.is_empty() {
                    // A first purchase.
                    let new = (4_000 + step as i64, 1, rng.below(90_000) as i64);
                    all.push(new);
                    (None, Some(new))
                } else {
                    // Another purchase, late or new.
                    let at = rng.below(all.len() as u64) as usize;
                    let old = all[at];
                    let time = rng.below(4_000 + step as u64) as i64;
                    all[at] = (old.0.max(time), old.1 + 1, old.2 + rng.below(20_000) as i64);
                    (Some(old), Some(all[at]))
                };
                let afresh = {
                    let (l, c, t) = figures_of(&all);
                    RfmBounds::from_figures(l, c, t)
                };
                match tracker.as_mut() {
                    Some(t) => t.change(old, new),
                    None => tracker = made(&all),
                }
                match tracker.as_ref().and_then(RfmTracker::bounds) {
                    Some(bounds) => {
                        kept += 1;
                        assert_eq!(bounds, afresh, "start {start}, step {step}");
                    }
                    None if tracker.is_none() => assert_eq!(afresh, None),
                    None => {
                        rebuilt += 1;
                        tracker = made(&all);
                        let bounds = tracker.as_ref().and_then(RfmTracker::bounds);
                        assert_eq!(bounds, Some(afresh), "rebuilt at step {step}");
                    }
                }
            }
            assert!(
                kept > rebuilt && rebuilt > 0,
                "start {start}: kept {kept}, rebuilt {rebuilt}"
            );
        }
    }
}
