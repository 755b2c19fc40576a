//! RFM scores by quintile bounds: a score is 1 plus the number of four
//! bounds a value passes, so scoring one customer is four comparisons and
//! scoring everyone is one pass.

use crate::domain::features::NANOS_PER_DAY;

/// The values at the four places ceil(k × P / 5) − 1, k = 1..4, of the
/// ascending order of `values` (P of them, at least one), found by
/// selection, each in what the one before left to its right.
fn places<T: Ord + Copy>(mut values: Vec<T>) -> [T; 4] {
    let p = values.len();
    let mut found = [values[0]; 4];
    let mut from = 0;
    for (k, slot) in found.iter_mut().enumerate() {
        let place = ((k + 1) * p).div_ceil(5) - 1;
        let (_, value, _) = values[from..].select_nth_unstable(place - from);
        *slot = *value;
        from = place;
    }
    found
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
        1 + self
            .lasts
            .iter()
            .filter(|&&bound| mine < recency(bound))
            .count() as u8
    }

    /// F of a purchase count.
    pub fn f(&self, count: u32) -> u8 {
        1 + self.counts.iter().filter(|&&bound| count > bound).count() as u8
    }

    /// M of a spend.
    pub fn m(&self, total: i64) -> u8 {
        1 + self.totals.iter().filter(|&&bound| total > bound).count() as u8
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
}
