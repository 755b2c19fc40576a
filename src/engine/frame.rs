//! Features of every customer as of one evaluation time, one array per
//! feature, computed on first use and only for the features a question
//! needs.
//!
//! When the evaluation time is at or after every stored event (the usual
//! case: "now"), the purchase count, spend, first and last purchase are
//! the index's all-time columns, read in place. Otherwise they are computed
//! from each customer's series.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use super::bits::{Bits, WORDS_PER_TASK};
use super::index::{age_at, engaged, ymd, FeatureIndex};
#[cfg(test)]
use super::index::{days_past, frequency_bounds};
use super::rfm::RfmBounds;
use crate::domain::features::PAliveBand;
use crate::domain::features::{
    engagement_stage, frequency_of, income_band, rfm_segment, FirstEngagements, PurchaseStats,
    Thresholds, NANOS_PER_DAY,
};
use crate::domain::predict::{day_of, p_alive_band, PAliveOn, PurchaseDays};
use crate::domain::Timestamp;

/// One of the RFM scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Score {
    /// Recency.
    R,
    /// Frequency.
    F,
    /// Monetary value.
    M,
}

/// One of the per-customer predictions of the model in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Predicted {
    /// The probability that the customer still buys.
    PAlive,
    /// Expected purchase days in the next 90 days.
    Purchases90d,
    /// Expected purchase days in the next 365 days.
    Purchases365d,
    /// Expected value of a purchase day.
    OrderValue,
    /// Lifetime value over the configured horizon.
    Clv,
}

/// One evaluation time over one index.
pub struct Frame<'a> {
    /// The index.
    pub index: &'a FeatureIndex,
    /// T, nanoseconds since the epoch.
    pub at: i64,
    /// T's date as `yyyymmdd`.
    pub on: u32,
    /// The thresholds in force.
    pub thresholds: Thresholds,
    /// Whether T is at or after every event, so all-time figures hold.
    current: bool,
    /// Purchase figures as of T, when they are not the all-time ones.
    past: OnceLock<PastPurchases>,
    in_90_days: OnceLock<Vec<u32>>,
    in_365_days: OnceLock<Vec<u32>>,
    /// Frequency class codes: the class's ordinal plus one.
    frequency: OnceLock<Vec<u8>>,
    /// Engagement stage codes: the stage's ordinal plus one.
    stage: OnceLock<Vec<u8>>,
    /// R, F and M scores (1–5) of each row, each made when first asked
    /// for; 0 for rows without purchases.
    rfm: [OnceLock<Vec<u8>>; 3],
    rfm_bounds: OnceLock<Option<RfmBounds>>,
    alive: OnceLock<Bits>,
    /// Each prediction by row, made when first asked for: NaN where there
    /// is none.
    predicted: [OnceLock<Arc<Vec<f64>>>; 5],
}

/// Purchase count, spend, first and last purchase as of a past T.
#[derive(Debug, Default)]
struct PastPurchases {
    count: Vec<u32>,
    total: Vec<i64>,
    first: Vec<i64>,
    last: Vec<i64>,
}

impl<'a> Frame<'a> {
    /// A frame at `at`.
    pub fn new(index: &'a FeatureIndex, at: Timestamp, thresholds: Thresholds) -> Self {
        Frame {
            index,
            at: at.as_nanos(),
            on: ymd(at.date()),
            thresholds,
            current: at.as_nanos() >= index.max_time(),
            past: OnceLock::new(),
            in_90_days: OnceLock::new(),
            in_365_days: OnceLock::new(),
            frequency: OnceLock::new(),
            stage: OnceLock::new(),
            rfm: [OnceLock::new(), OnceLock::new(), OnceLock::new()],
            rfm_bounds: OnceLock::new(),
            alive: OnceLock::new(),
            predicted: Default::default(),
        }
    }

    /// Whether T is at or after every event: every all-time figure holds,
    /// and a customer's features move with time only at instants their own
    /// figures fix (see `watch::tracker`).
    pub fn is_current(&self) -> bool {
        self.current
    }

    /// Rows in the index.
    pub fn rows(&self) -> usize {
        self.index.row_count()
    }

    /// The rows that hold a customer.
    pub fn alive(&self) -> &Bits {
        self.alive.get_or_init(|| {
            let alive = &self.index.columns().alive;
            Bits::from_values(&alive[..self.rows()], |&alive| alive)
        })
    }

    fn past(&self) -> &PastPurchases {
        self.past.get_or_init(|| {
            let rows = self.rows();
            let mut past = PastPurchases {
                count: vec![0; rows],
                total: vec![0; rows],
                first: vec![0; rows],
                last: vec![0; rows],
            };
            for number in 0..rows {
                let Some(row) = self.index.row_at(number as u32) else {
                    continue;
                };
                let series = &row.purchases;
                let counted = series.times().partition_point(|&time| time <= self.at);
                if counted == 0 {
                    continue;
                }
                past.count[number] = counted as u32;
                past.total[number] = series.amounts()[..counted]
                    .iter()
                    .fold(0i64, |sum, &amount| sum.saturating_add(amount));
                past.first[number] = series.times()[0];
                past.last[number] = series.times()[counted - 1];
            }
            past
        })
    }

    /// Purchases at or before T, by row.
    pub fn count(&self) -> &[u32] {
        if self.current {
            &self.index.columns().count
        } else {
            &self.past().count
        }
    }

    /// Total spend at T in minor units, by row.
    pub fn total(&self) -> &[i64] {
        if self.current {
            &self.index.columns().total
        } else {
            &self.past().total
        }
    }

    /// The first purchase, by row; meaningful where the count is not 0.
    pub fn first(&self) -> &[i64] {
        if self.current {
            &self.index.columns().first
        } else {
            &self.past().first
        }
    }

    /// The last purchase at or before T, by row; meaningful where the
    /// count is not 0.
    pub fn last(&self) -> &[i64] {
        if self.current {
            &self.index.columns().last
        } else {
            &self.past().last
        }
    }

    /// Purchases in (T − days, T] of one row.
    fn in_window(&self, number: usize, days: i64) -> u32 {
        let Some(row) = self.index.row_at(number as u32) else {
            return 0;
        };
        let times = row.purchases.times();
        let end = times.partition_point(|&time| time <= self.at);
        let start = self.at.saturating_sub(days * NANOS_PER_DAY);
        (end - times[..end].partition_point(|&time| time <= start)) as u32
    }

    /// Purchases in (T − 90 days, T], by row.
    pub fn in_90_days(&self) -> &[u32] {
        self.in_90_days.get_or_init(|| self.window_column(90))
    }

    /// Purchases in (T − 365 days, T], by row.
    pub fn in_365_days(&self) -> &[u32] {
        self.in_365_days.get_or_init(|| self.window_column(365))
    }

    fn window_column(&self, days: i64) -> Vec<u32> {
        let count = self.count();
        let last = self.last();
        let start = self.at.saturating_sub(days * NANOS_PER_DAY);
        (0..self.rows())
            .into_par_iter()
            .map(|number| {
                // Without a purchase in the window, the series is not read.
                if count[number] == 0 || last[number] <= start {
                    0
                } else {
                    self.in_window(number, days)
                }
            })
            .collect()
    }

    /// Whole days since the last purchase, by row; meaningful where the
    /// count is not 0.
    pub fn recency_days(&self, number: usize) -> i64 {
        self.at
            .saturating_sub(self.last()[number])
            .div_euclid(NANOS_PER_DAY)
    }

    /// The frequency class of each row, as its ordinal plus one (so that 0
    /// stays free for "absent", as in every coded column).
    pub fn frequency_codes(&self) -> &[u8] {
        self.frequency.get_or_init(|| {
            // With every event counted and the index built for these
            // thresholds, precomputed bounds decide the class by comparing
            // times only.
            if self.classes_by_block() {
                return filled(0..self.rows(), |first, codes| {
                    self.fill_frequency_codes(first, codes)
                });
            }
            let (count, first, last) = (self.count(), self.first(), self.last());
            (0..self.rows())
                .into_par_iter()
                .map(|number| {
                    let class = {
                        frequency_of(
                            u64::from(count[number]),
                            first[number],
                            last[number],
                            self.at,
                            || u64::from(self.in_window(number, 365)),
                            &self.thresholds,
                        )
                    };
                    class.ordinal() + 1
                })
                .collect()
        })
    }

    /// Whether a block of rows can make its own frequency classes: every
    /// event counts and the index was built for these thresholds, so that
    /// a class is a few comparisons of times (see `frequency_codes`).
    pub fn classes_by_block(&self) -> bool {
        self.current && *self.index.thresholds() == self.thresholds
    }

    /// The frequency codes of `rows` alone, where `classes_by_block`.
    pub fn frequency_codes_of(&self, rows: Range<usize>) -> Vec<u8> {
        filled(rows, |first, codes| self.fill_frequency_codes(first, codes))
    }

    /// The frequency codes of the rows from `first` on, one per place of
    /// `codes`, where `classes_by_block`: three columns read straight.
    fn fill_frequency_codes(&self, first: usize, codes: &mut [u8]) {
        debug_assert!(self.classes_by_block());
        let columns = self.index.columns();
        let rows = first..first + codes.len();
        for (code, ((&count, &lapsed_from), &frequent_until)) in codes.iter_mut().zip(
            columns.count[rows.clone()]
                .iter()
                .zip(&columns.lapsed_from[rows.clone()])
                .zip(&columns.frequent_until[rows]),
        ) {
            *code = current_frequency_code(count, lapsed_from, frequent_until, self.at);
        }
    }

    /// The stage codes of `rows` alone, where every event counts.
    pub fn stage_codes_of(&self, rows: Range<usize>) -> Vec<u8> {
        filled(rows, |first, codes| self.fill_stage_codes(first, codes))
    }

    /// The stage codes of the rows from `first` on, where every event
    /// counts: the flags say which kinds there are.
    fn fill_stage_codes(&self, first: usize, codes: &mut [u8]) {
        debug_assert!(self.current);
        let columns = self.index.columns();
        let rows = first..first + codes.len();
        for (code, (&count, &flags)) in codes.iter_mut().zip(
            columns.count[rows.clone()]
                .iter()
                .zip(&columns.engaged[rows]),
        ) {
            *code = current_stage_code(count, flags);
        }
    }

    /// The engagement stage of each row, as its ordinal plus one.
    pub fn stage_codes(&self) -> &[u8] {
        self.stage.get_or_init(|| {
            let count = self.count();
            let flags = &self.index.columns().engaged;
            if self.current {
                return filled(0..self.rows(), |first, codes| {
                    self.fill_stage_codes(first, codes)
                });
            }
            (0..self.rows())
                .into_par_iter()
                .map(|number| {
                    let firsts = if flags[number] == 0 {
                        FirstEngagements::default()
                    } else {
                        self.index
                            .row_at(number as u32)
                            .map(|row| row.firsts())
                            .unwrap_or_default()
                    };
                    let purchases = PurchaseStats {
                        count: u64::from(count[number]),
                        first: None,
                        second: None,
                        last: None,
                        total_minor: 0,
                        in_90_days: 0,
                        in_365_days: 0,
                    };
                    engagement_stage(&purchases, &firsts, Timestamp::from_nanos(self.at))
                        .0
                        .ordinal()
                        + 1
                })
                .collect()
        })
    }

    /// A row's purchases in whole days as of T, as the prediction models
    /// read them; `None` without a purchase, or for a customer who objects
    /// to profiling and so gets no prediction. The repeat days' total is
    /// only read from the series when `valued`.
    pub fn purchase_days(&self, number: usize, valued: bool) -> Option<PurchaseDays> {
        let columns = self.index.columns();
        if !columns.alive[number] || columns.objects[number] || self.count()[number] == 0 {
            return None;
        }
        if !self.current {
            let series = &self.index.row_at(number as u32)?.purchases;
            return PurchaseDays::of(series.times(), series.amounts(), self.at);
        }
        let first_day = day_of(columns.first[number]);
        let repeat_total = if valued {
            // The total less the first day's purchases, which lead the
            // series.
            let series = &self.index.row_at(number as u32)?.purchases;
            let first_day_end = (first_day + 1).saturating_mul(NANOS_PER_DAY);
            let on_first_day = series.times().partition_point(|&time| time < first_day_end);
            let first_total = series.amounts()[..on_first_day]
                .iter()
                .fold(0i64, |sum, &amount| sum.saturating_add(amount));
            columns.total[number].saturating_sub(first_total)
        } else {
            0
        };
        Some(PurchaseDays {
            days: columns.days[number],
            first_day,
            last_day: day_of(columns.last[number]),
            repeat_total,
        })
    }

    /// One prediction of each row by the model in force: NaN without a
    /// model, or where [`Frame::purchase_days`] is `None`.
    pub fn predicted(&self, what: Predicted) -> &[f64] {
        self.predicted[what as usize].get_or_init(|| {
            let on = day_of(self.at);
            if what == Predicted::PAlive && self.current {
                // The index keeps it for the day, in step with writes.
                return self.index.p_alive_on(on, || self.predict(what));
            }
            Arc::new(self.predict(what))
        })
    }

    /// One prediction of each row, computed.
    fn predict(&self, what: Predicted) -> Vec<f64> {
        let rows = self.rows();
        let Some(model) = self.index.model() else {
            return vec![f64::NAN; rows];
        };
        let on = day_of(self.at);
        let clv = self.index.clv_settings();
        // Made before the parallel passes that read them row by row.
        let (count, first) = (self.count(), self.first());
        if what == Predicted::PAlive {
            // The most read, and the cheapest: by a table of the
            // logarithms it takes, by day since the first purchase.
            let earliest = (0..rows)
                .into_par_iter()
                .filter(|&number| count[number] > 0)
                .map(|number| first[number])
                .min()
                .unwrap_or(self.at);
            let p_alive = PAliveOn::new(model, on, on - day_of(earliest));
            return (0..rows)
                .into_par_iter()
                .map(|number| match self.purchase_days(number, false) {
                    Some(days) => p_alive.of(&days),
                    None => f64::NAN,
                })
                .collect();
        }
        let valued = matches!(what, Predicted::OrderValue | Predicted::Clv);
        (0..rows)
            .into_par_iter()
            .map(|number| {
                let Some(days) = self.purchase_days(number, valued) else {
                    return f64::NAN;
                };
                // The forecasts of the series as one customer's
                // features have them, to the same bits: from the one
                // pass over every horizon.
                let value = match what {
                    Predicted::OrderValue => model.expected_order_value(&days),
                    Predicted::PAlive => Some(model.p_alive(&days, on)),
                    Predicted::Purchases90d => {
                        model.predict(&days, on, &clv).expected_purchases_90d
                    }
                    Predicted::Purchases365d => {
                        model.predict(&days, on, &clv).expected_purchases_365d
                    }
                    Predicted::Clv => model.predict(&days, on, &clv).clv,
                };
                value.unwrap_or(f64::NAN)
            })
            .collect()
    }

    /// The band of a row's `p_alive`, if it has one.
    pub fn p_alive_band(&self, number: usize) -> Option<PAliveBand> {
        let p_alive = self.predicted(Predicted::PAlive)[number];
        (!p_alive.is_nan()).then(|| p_alive_band(p_alive))
    }

    /// Whole years at T, by row.
    pub fn age(&self, number: usize) -> Option<i32> {
        age_at(self.index.columns().birth[number], self.on)
    }

    /// The age band codes (ordinal plus one) of `rows`. Each birth date
    /// is compared with the last birth date of each band's lowest age as
    /// of T, worked out once, so that no age is worked out per row: one is
    /// at least `years` old when `on - birth >= years × 10,000`, as dates
    /// are written yyyymmdd (see `age_at`).
    pub fn age_band_codes_of(&self, rows: Range<usize>) -> Vec<u8> {
        let latest = latest_births(self.on);
        let birth = &self.index.columns().birth;
        filled(rows, |first, codes| {
            for (code, &birth) in codes.iter_mut().zip(&birth[first..]) {
                *code = age_band_code(birth, self.on, &latest);
            }
        })
    }

    /// The income band of a row.
    pub fn income_band(&self, number: usize) -> crate::domain::features::IncomeBand {
        let income = self.index.columns().income[number];
        income_band((income != i64::MIN).then_some(income), &self.thresholds)
    }

    /// One RFM score of each row: among the customers with a purchase
    /// at or before T, 1 + floor(5 × S / P), where S counts those strictly
    /// worse.
    pub fn rfm(&self, score: Score) -> &[u8] {
        self.rfm[score as usize].get_or_init(|| {
            let bounds = self.rfm_bounds();
            filled(0..self.rows(), |first, scores| {
                self.fill_rfm(bounds, score, first, scores)
            })
        })
    }

    /// One RFM score of `rows` alone, 0 for a row without a purchase at T,
    /// from the frame's `bounds` (every score 0 without them).
    pub fn rfm_of_rows(
        &self,
        bounds: Option<&RfmBounds>,
        score: Score,
        rows: Range<usize>,
    ) -> Vec<u8> {
        filled(rows, |first, scores| {
            self.fill_rfm(bounds, score, first, scores)
        })
    }

    /// One RFM score of the rows from `first` on, one per place of
    /// `scores`, which come zeroed: a row without a purchase at T gets 0,
    /// and without `bounds` every row keeps its 0.
    fn fill_rfm(&self, bounds: Option<&RfmBounds>, score: Score, first: usize, scores: &mut [u8]) {
        let Some(bounds) = bounds else {
            return;
        };
        let (count, total, last) = (self.count(), self.total(), self.last());
        let alive = &self.index.columns().alive;
        // A loop made for each score, with nothing called per row.
        fn scored(
            first: usize,
            scores: &mut [u8],
            alive: &[bool],
            count: &[u32],
            score: impl Fn(usize) -> u8,
        ) {
            let rows = first..first + scores.len();
            for (((scored, &alive), &count), row) in scores
                .iter_mut()
                .zip(&alive[rows.clone()])
                .zip(&count[rows.clone()])
                .zip(rows)
            {
                // Both sides worked out, with no branch on who buys.
                let score = score(row);
                *scored = if alive & (count > 0) { score } else { 0 };
            }
        }
        match score {
            Score::R => scored(first, scores, alive, count, |row| {
                bounds.r(self.at, last[row])
            }),
            Score::F => scored(first, scores, alive, count, |row| bounds.f(count[row])),
            Score::M => scored(first, scores, alive, count, |row| bounds.m(total[row])),
        }
    }

    /// The quintile bounds of the purchasers as of T; `None` without any.
    /// When every event counts they are the index's, made once per change
    /// of it; otherwise they are found in the frame's figures.
    pub fn rfm_bounds(&self) -> Option<&RfmBounds> {
        self.rfm_bounds
            .get_or_init(|| {
                if self.current {
                    return self.index.rfm_bounds();
                }
                let (count, total, last) = (self.count(), self.total(), self.last());
                let alive = &self.index.columns().alive;
                let buyers: Vec<usize> = (0..self.rows())
                    .filter(|&row| alive[row] && count[row] > 0)
                    .collect();
                RfmBounds::from_figures(
                    buyers.iter().map(|&row| last[row]).collect(),
                    buyers.iter().map(|&row| count[row]).collect(),
                    buyers.iter().map(|&row| total[row]).collect(),
                )
            })
            .as_ref()
    }

    /// The R, F and M scores of one row, without scoring everyone: a few
    /// comparisons with the quintile bounds. `None` without a purchase at T.
    pub fn rfm_of(&self, number: usize) -> Option<(u8, u8, u8)> {
        let count = self.count()[number];
        if !self.index.columns().alive[number] || count == 0 {
            return None;
        }
        let bounds = self.rfm_bounds()?;
        Some((
            bounds.r(self.at, self.last()[number]),
            bounds.f(count),
            bounds.m(self.total()[number]),
        ))
    }

    /// The RFM segment of a row with purchases.
    pub fn rfm_segment(&self, number: usize) -> Option<crate::domain::features::RfmSegment> {
        let (r, f) = (self.rfm(Score::R)[number], self.rfm(Score::F)[number]);
        (r > 0).then(|| rfm_segment(r, f))
    }
}

/// The last birth date (yyyymmdd) of someone aged at least 18, 25, 35,
/// 45, 55 and 65 on `on`: the lowest age of each band after the first; 0
/// when no one born after year 0 is, which no birth date is at or before.
fn latest_births(on: u32) -> [i32; 6] {
    [18, 25, 35, 45, 55, 65].map(|years| on.saturating_sub(years * 10_000) as i32)
}

/// The age band code (ordinal plus one) of a birth date on `on`, by
/// comparisons with `latest_births(on)`, with no branch to mispredict. The
/// dates fit an `i32` (yyyymmdd up to 99,991,231), and the comparisons of
/// `i32`s are the ones a vector unit has.
#[inline]
fn age_band_code(birth: u32, on: u32, latest: &[i32; 6]) -> u8 {
    use crate::domain::features::AgeBand;
    let (birth, on) = (birth as i32, on as i32);
    let older: u8 = latest.iter().map(|&last| u8::from(birth <= last)).sum();
    if birth != 0 && birth <= on {
        AgeBand::Under18.ordinal() + 1 + older
    } else {
        AgeBand::Unknown.ordinal() + 1
    }
}

/// A byte for each of `rows`, made on both cores when they are more than
/// one task's: `fill` is given a task's first row and its places, which
/// come zeroed.
fn filled(rows: Range<usize>, fill: impl Fn(usize, &mut [u8]) + Sync) -> Vec<u8> {
    const TASK: usize = WORDS_PER_TASK * 64;
    let mut column = vec![0u8; rows.len()];
    if column.len() <= TASK {
        fill(rows.start, &mut column);
    } else {
        column
            .par_chunks_mut(TASK)
            .enumerate()
            .for_each(|(task, places)| fill(rows.start + task * TASK, places));
    }
    column
}

/// The frequency class when every purchase is at or before `at`, from the
/// index's precomputed bounds (see `frequency_bounds`), in the design's
/// order, comparing times only: the plain form of
/// [`current_frequency_code`], which the tests hold it to.
#[cfg(test)]
fn current_frequency(
    count: u32,
    lapsed_from: i64,
    frequent_until: i64,
    at: i64,
) -> crate::domain::features::FrequencyClass {
    use crate::domain::features::FrequencyClass;
    match count {
        0 => FrequencyClass::None,
        1 => FrequencyClass::OneTimeBuyer,
        _ if at >= lapsed_from => FrequencyClass::Lapsed,
        _ if at < frequent_until => FrequencyClass::FrequentCustomer,
        _ => FrequencyClass::RepeatCustomer,
    }
}

/// `current_frequency` as its code (ordinal plus one), without branches:
/// the classes of neighbouring customers follow no pattern a branch
/// predictor could learn.
#[inline]
fn current_frequency_code(count: u32, lapsed_from: i64, frequent_until: i64, at: i64) -> u8 {
    let lapsed = u8::from(at >= lapsed_from);
    let frequent = u8::from(at < frequent_until) & (1 - lapsed);
    // LAPSED 3, FREQUENT_CUSTOMER 4, REPEAT_CUSTOMER 5.
    let repeat_buyer = 5 - 2 * lapsed - frequent;
    let several = u8::from(count >= 2);
    // NONE 1, ONE_TIME_BUYER 2.
    let few = count.min(1) as u8 + 1;
    several * repeat_buyer + (1 - several) * few
}

/// `current_stage` as its code, without branches: the stages are tested
/// from the top of the pyramid down and their codes fall in that order, so
/// the first that holds is the largest code among those that hold.
#[inline]
fn current_stage_code(count: u32, flags: u8) -> u8 {
    let has = |flag: u8| u8::from(flags & flag != 0);
    (6 * has(engaged::REFERRAL))
        .max(5 * has(engaged::FEEDBACK))
        .max(4 * u8::from(count >= 2))
        .max(3 * u8::from(count == 1))
        .max(2 * has(engaged::VISIT))
        .max(1)
}

/// The engagement stage when every event is at or before T.
#[cfg(test)]
fn current_stage(count: u32, flags: u8) -> crate::domain::features::EngagementStage {
    use crate::domain::features::EngagementStage;
    if flags & engaged::REFERRAL != 0 {
        EngagementStage::TellingOthers
    } else if flags & engaged::FEEDBACK != 0 {
        EngagementStage::GivingFeedback
    } else if count >= 2 {
        EngagementStage::Rebuying
    } else if count == 1 {
        EngagementStage::JustBuying
    } else if flags & engaged::VISIT != 0 {
        EngagementStage::JustLooking
    } else {
        EngagementStage::TotalMarket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The P(alive) column the index keeps for a day, moved by each write,
    /// is the one made afresh after the writes.
    #[test]
    fn the_kept_p_alive_column_follows_every_write() {
        use crate::domain::predict::bgnbd::BgNbd;
        use crate::domain::predict::PredictionModel;
        use crate::domain::{Customer, CustomerId, Profile};
        use crate::engine::index::{event_key, Event, EventRef};
        let day = NANOS_PER_DAY;
        let now = 20_000 * day + day / 2;
        let mut index = FeatureIndex::new(Thresholds::default());
        let customer = |id: &str, objects: bool| Customer {
            id: CustomerId::parse(id).unwrap(),
            profile: Profile {
                objects_to_profiling: objects,
                ..Profile::default()
            },
            create_time: Timestamp::from_nanos(0),
            update_time: Timestamp::from_nanos(0),
            create_request_id: None,
        };
        let mut bought = 0u64;
        let mut buy = |index: &mut FeatureIndex, row: u32, days_ago: i64| {
            bought += 1;
            let event = Event {
                time: now - days_ago * day,
                amount: Some(100),
                key: event_key(&format!("p{bought}")),
                at: EventRef::new(1, 0),
            };
            assert!(index.add_purchase(row, event));
        };
        for n in 0..20u32 {
            index.add_customer(&customer(&format!("c{n}"), false));
            for k in 0..n % 4 {
                buy(&mut index, n, i64::from(n * 17 + k * 30));
            }
        }
        let bgnbd = BgNbd {
            r: 0.24,
            alpha: 4.4,
            a: 0.79,
            b: 2.4,
        };
        let fitted = Timestamp::from_nanos(now);
        index.set_model(std::sync::Arc::new(PredictionModel::of_bgnbd(
            bgnbd, fitted,
        )));
        let at = Timestamp::from_nanos(now + 1);
        let column = |index: &FeatureIndex| {
            let frame = Frame::new(index, at, Thresholds::default());
            assert!(frame.is_current());
            frame.predicted(Predicted::PAlive).to_vec()
        };
        let fresh = |index: &FeatureIndex| {
            Frame::new(index, at, Thresholds::default()).predict(Predicted::PAlive)
        };
        let same = |a: &[f64], b: &[f64]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        };
        assert!(same(&column(&index), &fresh(&index)));
        // A purchase, a new customer, an objector, an erasure.
        buy(&mut index, 3, 2);
        buy(&mut index, 0, 1);
        index.add_customer(&customer("late", false));
        index.add_customer(&customer("c5", true));
        index.remove_customer(&CustomerId::parse("c7").unwrap());
        let kept = column(&index);
        assert!(same(&kept, &fresh(&index)));
        assert!(kept[5].is_nan() && kept[7].is_nan() && kept[20].is_nan());
        assert!(!kept[0].is_nan());
    }

    /// The fast path agrees with the design's arithmetic on many random
    /// purchase histories, around every boundary.
    #[test]
    fn current_frequency_agrees_with_the_definition() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let day = NANOS_PER_DAY;
        let at = 1_800_000_000 * 1_000_000_000i64;
        let variants = [
            Thresholds::default(),
            Thresholds {
                lapsed_gap_multiplier: 1.5,
                lapsed_min_days: 30.0,
                frequent_min_purchases_365d: 0,
                frequent_gap_multiplier: 3.0,
                ..Thresholds::default()
            },
            Thresholds {
                frequent_min_purchases_365d: 2,
                frequent_gap_multiplier: 0.5,
                ..Thresholds::default()
            },
            Thresholds {
                frequent_min_purchases_365d: 9,
                ..Thresholds::default()
            },
        ];
        for n in 0..200_000 {
            let thresholds = variants[n % variants.len()];
            let count = (next() % 12) as usize;
            // Whole days, whole seconds, or any nanosecond.
            let unit = [day, 1_000_000_000, 1][(next() % 3) as usize];
            let span = (next() % 1500) as i64 * day / unit.max(1) * unit.min(day);
            let mut times: Vec<i64> = (0..count)
                .map(|_| at - (next() as i64).rem_euclid(span.max(1)) / unit * unit)
                .collect();
            times.sort_unstable();
            let (first, last) = (
                times.first().copied().unwrap_or(0),
                times.last().copied().unwrap_or(0),
            );
            let in_365 = times.iter().filter(|&&t| t > at - 365 * day).count() as u64;
            let expected = frequency_of(count as u64, first, last, at, || in_365, &thresholds);
            let (lapsed_from, frequent_until) = frequency_bounds(&times, &thresholds);
            let fast = current_frequency(count as u32, lapsed_from, frequent_until, at);
            assert_eq!(
                current_frequency_code(count as u32, lapsed_from, frequent_until, at),
                fast.ordinal() + 1
            );
            assert_eq!(fast, expected, "{times:?}");
        }
    }

    #[test]
    fn age_band_codes_agree_with_the_age() {
        // Every day of every year from before the oldest band's start to
        // after T, as of days around year ends and the 29th of February.
        let days = |year: u32| {
            (1..=12)
                .flat_map(move |month| (1..=31).map(move |day| year * 10_000 + month * 100 + day))
        };
        for on in [20240228, 20240229, 20240301, 20251231, 20260101, 20261202] {
            let latest = latest_births(on);
            let births = std::iter::once(0).chain((1950..=on / 10_000 + 1).flat_map(days));
            for birth in births {
                assert_eq!(
                    age_band_code(birth, on, &latest),
                    crate::domain::features::age_band(age_at(birth, on)).ordinal() + 1,
                    "born {birth}, on {on}"
                );
            }
        }
    }

    #[test]
    fn stage_codes_follow_the_pyramid() {
        for count in 0..4 {
            for flags in 0..8 {
                assert_eq!(
                    current_stage_code(count, flags),
                    current_stage(count, flags).ordinal() + 1,
                    "{count} {flags}"
                );
            }
        }
    }

    #[test]
    fn days_past_brackets_whole_days() {
        assert_eq!(days_past(180.0), 181 * NANOS_PER_DAY);
        assert_eq!(days_past(180.5), 181 * NANOS_PER_DAY);
        assert_eq!(days_past(0.0), NANOS_PER_DAY);
        assert_eq!(days_past(1e300), i64::MAX);
        assert_eq!(days_past(-0.5), 0);
        assert_eq!(days_past(-1.0), 0);
        assert_eq!(days_past(f64::NAN), NANOS_PER_DAY);
    }
}
