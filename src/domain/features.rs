//! Derived features, as of an evaluation time T, with the exact arithmetic
//! of the product design: a day is 86,400 s, only events at or before T
//! count, and purchases count per event.

use super::time::{Date, Timestamp};

/// Nanoseconds in a day.
pub const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// The thresholds features are computed with. Configuration, with these defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// LAPSED when the recency exceeds this many mean gaps...
    pub lapsed_gap_multiplier: f64,
    /// ...and this many days.
    pub lapsed_min_days: f64,
    /// FREQUENT_CUSTOMER needs at least this many purchases in the last 365 days...
    pub frequent_min_purchases_365d: u32,
    /// ...and a recency of at most this many mean gaps.
    pub frequent_gap_multiplier: f64,
    /// Upper bounds of the LOW, MIDDLE and HIGH income bands, in major units.
    pub income_band_limits: [i64; 3],
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            lapsed_gap_multiplier: 3.0,
            lapsed_min_days: 180.0,
            frequent_min_purchases_365d: 4,
            frequent_gap_multiplier: 2.0,
            income_band_limits: [30_000, 75_000, 150_000],
        }
    }
}

/// Age band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgeBand {
    /// No birth date, or one after T.
    Unknown,
    /// Under 18.
    Under18,
    /// 18 to 24.
    From18To24,
    /// 25 to 34.
    From25To34,
    /// 35 to 44.
    From35To44,
    /// 45 to 54.
    From45To54,
    /// 55 to 64.
    From55To64,
    /// 65 and over.
    From65,
}

/// Income band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IncomeBand {
    /// No income given.
    Unknown,
    /// Below the first limit.
    Low,
    /// Below the second limit.
    Middle,
    /// Below the third limit.
    High,
    /// The rest.
    VeryHigh,
}

/// Band of the probability that a customer is still active, from the
/// prediction model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PAliveBand {
    /// Below 0.25.
    Under25,
    /// 0.25 up to 0.5.
    From25To50,
    /// 0.5 up to 0.75.
    From50To75,
    /// 0.75 and over.
    From75,
}

/// Buyer, customer or frequent customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrequencyClass {
    /// No purchase yet.
    None,
    /// Exactly one purchase.
    OneTimeBuyer,
    /// Two or more purchases, but none for long.
    Lapsed,
    /// Buys often and recently.
    FrequentCustomer,
    /// Every other case with two or more purchases.
    RepeatCustomer,
}

/// Level of the engagement pyramid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngagementStage {
    /// No interaction at all.
    TotalMarket,
    /// Visits, no purchase.
    JustLooking,
    /// Exactly one purchase.
    JustBuying,
    /// Two or more purchases.
    Rebuying,
    /// Gave feedback.
    GivingFeedback,
    /// Referred others.
    TellingOthers,
}

/// The RFM segment, from the R and F scores; see [`rfm_segment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RfmSegment {
    /// R 5, F 4–5.
    Champions,
    /// R 3–4, F 4–5.
    Loyal,
    /// R 4–5, F 2–3.
    PotentialLoyalist,
    /// R 5, F 1.
    NewCustomers,
    /// R 4, F 1.
    Promising,
    /// R 3, F 3.
    NeedAttention,
    /// R 3, F 1–2.
    AboutToSleep,
    /// R 1–2, F 5.
    CantLoseThem,
    /// R 1–2, F 3–4.
    AtRisk,
    /// R 1–2, F 2.
    Hibernating,
    /// R 1–2, F 1.
    Lost,
}

/// The RFM segment of R and F scores (1–5): the first row of the design's
/// table that holds.
pub fn rfm_segment(r: u8, f: u8) -> RfmSegment {
    match (r, f) {
        (5.., 4..) => RfmSegment::Champions,
        (3..=4, 4..) => RfmSegment::Loyal,
        (4.., 2..=3) => RfmSegment::PotentialLoyalist,
        (5.., ..=1) => RfmSegment::NewCustomers,
        (4, ..=1) => RfmSegment::Promising,
        (3, 3) => RfmSegment::NeedAttention,
        (3, ..=2) => RfmSegment::AboutToSleep,
        (..=2, 5..) => RfmSegment::CantLoseThem,
        (..=2, 3..=4) => RfmSegment::AtRisk,
        (..=2, 2) => RfmSegment::Hibernating,
        _ => RfmSegment::Lost,
    }
}

/// Whole years from `birth` to `on`, or `None` if `birth` is later.
pub fn age_on(birth: Date, on: Date) -> Option<i32> {
    if birth > on {
        return None;
    }
    let mut years = on.year() - birth.year();
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    Some(years)
}

/// The band of an age.
pub fn age_band(age: Option<i32>) -> AgeBand {
    match age {
        None => AgeBand::Unknown,
        Some(..18) => AgeBand::Under18,
        Some(18..=24) => AgeBand::From18To24,
        Some(25..=34) => AgeBand::From25To34,
        Some(35..=44) => AgeBand::From35To44,
        Some(45..=54) => AgeBand::From45To54,
        Some(55..=64) => AgeBand::From55To64,
        Some(_) => AgeBand::From65,
    }
}

/// The band of a yearly income in minor units (a currency with two decimals).
pub fn income_band(income_minor: Option<i64>, thresholds: &Thresholds) -> IncomeBand {
    let Some(minor) = income_minor else {
        return IncomeBand::Unknown;
    };
    let [low, middle, high] = thresholds
        .income_band_limits
        .map(|major| major.saturating_mul(100));
    if minor < low {
        IncomeBand::Low
    } else if minor < middle {
        IncomeBand::Middle
    } else if minor < high {
        IncomeBand::High
    } else {
        IncomeBand::VeryHigh
    }
}

/// The purchase statistics of one customer as of T.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PurchaseStats {
    /// Purchases at or before T.
    pub count: u64,
    /// The first of them.
    pub first: Option<Timestamp>,
    /// The second of them, in time order: when REBUYING began.
    pub second: Option<Timestamp>,
    /// The last of them.
    pub last: Option<Timestamp>,
    /// Their total amount, in minor units.
    pub total_minor: i64,
    /// Purchases in (T − 90 days, T].
    pub in_90_days: u64,
    /// Purchases in (T − 365 days, T].
    pub in_365_days: u64,
}

impl PurchaseStats {
    /// Computes the statistics from purchase times sorted ascending, and
    /// their amounts in the same order.
    pub fn compute(times: &[i64], amounts: &[i64], at: Timestamp) -> Self {
        Self::compute_with_total(times, amounts, at, None)
    }

    /// As [`PurchaseStats::compute`], with the sum of all the amounts when
    /// it is known, so that it is not summed again when every purchase
    /// counts.
    pub fn compute_with_total(
        times: &[i64],
        amounts: &[i64],
        at: Timestamp,
        all_time_total: Option<i64>,
    ) -> Self {
        let t = at.as_nanos();
        let counted = times.partition_point(|&time| time <= t);
        let times = &times[..counted];
        let after = |days: i64| {
            let start = t.saturating_sub(days * NANOS_PER_DAY);
            (counted - times.partition_point(|&time| time <= start)) as u64
        };
        PurchaseStats {
            count: counted as u64,
            first: times.first().copied().map(Timestamp::from_nanos),
            second: times.get(1).copied().map(Timestamp::from_nanos),
            last: times.last().copied().map(Timestamp::from_nanos),
            total_minor: match all_time_total {
                Some(total) if counted == amounts.len() => total,
                _ => amounts[..counted]
                    .iter()
                    .fold(0i64, |sum, &a| sum.saturating_add(a)),
            },
            in_90_days: after(90),
            in_365_days: after(365),
        }
    }

    /// Total spend divided by the count, rounded to the nearest minor unit.
    pub fn average_order_minor(&self) -> Option<i64> {
        (self.count > 0).then(|| {
            let count = self.count as i128;
            let total = self.total_minor as i128;
            ((2 * total + count) / (2 * count)) as i64
        })
    }

    /// (last − first) / (count − 1) in days, unrounded; for two or more purchases.
    pub fn mean_gap_days(&self) -> Option<f64> {
        match (self.first, self.last) {
            (Some(first), Some(last)) if self.count >= 2 => {
                let span = last.as_nanos().abs_diff(first.as_nanos()) as f64 / NANOS_PER_DAY as f64;
                Some(span / (self.count - 1) as f64)
            }
            _ => None,
        }
    }

    /// floor((T − last) / 1 day).
    pub fn recency_days(&self, at: Timestamp) -> Option<i64> {
        self.last.map(|last| {
            at.as_nanos()
                .saturating_sub(last.as_nanos())
                .div_euclid(NANOS_PER_DAY)
        })
    }

    /// The frequency class, checked in the design's order.
    pub fn frequency_class(&self, at: Timestamp, thresholds: &Thresholds) -> FrequencyClass {
        let (first, last) = match (self.first, self.last) {
            (Some(first), Some(last)) => (first.as_nanos(), last.as_nanos()),
            _ => (0, 0),
        };
        frequency_of(
            self.count,
            first,
            last,
            at.as_nanos(),
            || self.in_365_days,
            thresholds,
        )
    }
}

/// The frequency class of `count` purchases from `first` to `last`
/// (nanoseconds) as of `at`, checked in the design's order. The purchases
/// in the last 365 days are asked for only when they decide the class.
pub fn frequency_of(
    count: u64,
    first: i64,
    last: i64,
    at: i64,
    in_365_days: impl FnOnce() -> u64,
    thresholds: &Thresholds,
) -> FrequencyClass {
    match count {
        0 => return FrequencyClass::None,
        1 => return FrequencyClass::OneTimeBuyer,
        _ => {}
    }
    let gap = last.abs_diff(first) as f64 / NANOS_PER_DAY as f64 / (count - 1) as f64;
    let recency = at.saturating_sub(last).div_euclid(NANOS_PER_DAY) as f64;
    let frequent_min = u64::from(thresholds.frequent_min_purchases_365d);
    if recency > (thresholds.lapsed_gap_multiplier * gap).max(thresholds.lapsed_min_days) {
        FrequencyClass::Lapsed
    } else if count >= frequent_min
        && recency <= thresholds.frequent_gap_multiplier * gap
        && in_365_days() >= frequent_min
    {
        FrequencyClass::FrequentCustomer
    } else {
        FrequencyClass::RepeatCustomer
    }
}

/// The first time of each kind of engagement, as far as known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FirstEngagements {
    /// The first visit.
    pub visit: Option<i64>,
    /// The first feedback.
    pub feedback: Option<i64>,
    /// The first referral.
    pub referral: Option<i64>,
}

impl FirstEngagements {
    /// Takes an engagement of `kind` at `time` into account.
    pub fn note(&mut self, kind: super::EngagementKind, time: i64) {
        let first = match kind {
            super::EngagementKind::Visit => &mut self.visit,
            super::EngagementKind::Feedback => &mut self.feedback,
            super::EngagementKind::Referral => &mut self.referral,
        };
        *first = Some(first.map_or(time, |known| known.min(time)));
    }
}

/// The engagement stage as of T, and when its evidence first appeared.
pub fn engagement_stage(
    purchases: &PurchaseStats,
    firsts: &FirstEngagements,
    at: Timestamp,
) -> (EngagementStage, Option<Timestamp>) {
    let by = |time: Option<i64>| {
        time.filter(|&t| t <= at.as_nanos())
            .map(Timestamp::from_nanos)
    };
    if let Some(since) = by(firsts.referral) {
        (EngagementStage::TellingOthers, Some(since))
    } else if let Some(since) = by(firsts.feedback) {
        (EngagementStage::GivingFeedback, Some(since))
    } else if purchases.count >= 2 {
        (EngagementStage::Rebuying, purchases.second)
    } else if purchases.count == 1 {
        (EngagementStage::JustBuying, purchases.first)
    } else if let Some(since) = by(firsts.visit) {
        (EngagementStage::JustLooking, Some(since))
    } else {
        (EngagementStage::TotalMarket, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = NANOS_PER_DAY;

    fn at(days: i64) -> Timestamp {
        Timestamp::from_nanos(days * DAY)
    }

    #[test]
    fn ages_and_bands() {
        let birth = Date::from_ymd(2000, 2, 29).unwrap();
        assert_eq!(
            age_on(birth, Date::from_ymd(2018, 2, 28).unwrap()),
            Some(17)
        );
        assert_eq!(age_on(birth, Date::from_ymd(2018, 3, 1).unwrap()), Some(18));
        assert_eq!(age_on(birth, Date::from_ymd(1999, 1, 1).unwrap()), None);
        assert_eq!(age_band(Some(17)), AgeBand::Under18);
        assert_eq!(age_band(Some(18)), AgeBand::From18To24);
        assert_eq!(age_band(Some(65)), AgeBand::From65);
        let thresholds = Thresholds::default();
        assert_eq!(income_band(Some(2_999_999), &thresholds), IncomeBand::Low);
        assert_eq!(
            income_band(Some(3_000_000), &thresholds),
            IncomeBand::Middle
        );
        assert_eq!(
            income_band(Some(15_000_000), &thresholds),
            IncomeBand::VeryHigh
        );
        assert_eq!(income_band(None, &thresholds), IncomeBand::Unknown);
    }

    #[test]
    fn statistics_count_only_up_to_t_and_windows_are_half_open() {
        let times = [0, 10 * DAY, 100 * DAY, 200 * DAY];
        let amounts = [100, 200, 300, 400];
        let stats = PurchaseStats::compute(&times, &amounts, at(100));
        assert_eq!(stats.count, 3);
        assert_eq!(stats.total_minor, 600);
        assert_eq!(stats.average_order_minor(), Some(200));
        assert_eq!(
            stats.in_90_days, 1,
            "day 10 is exactly 90 days before T: excluded"
        );
        assert_eq!(stats.in_365_days, 3);
        assert_eq!(stats.mean_gap_days(), Some(50.0));
        assert_eq!(stats.recency_days(at(100)), Some(0));
        assert_eq!(stats.second, Some(at(10)));
    }

    #[test]
    fn frequency_classes_in_order() {
        let thresholds = Thresholds::default();
        let class = |times: &[i64], t: i64| {
            let amounts = vec![1; times.len()];
            PurchaseStats::compute(times, &amounts, at(t)).frequency_class(at(t), &thresholds)
        };
        assert_eq!(class(&[], 10), FrequencyClass::None);
        assert_eq!(class(&[0], 10), FrequencyClass::OneTimeBuyer);
        // Gap 10 days: lapsed past max(30, 180) = 180 days.
        assert_eq!(class(&[0, 10 * DAY], 190), FrequencyClass::RepeatCustomer);
        assert_eq!(class(&[0, 10 * DAY], 191), FrequencyClass::Lapsed);
        // Four in a year, recency within two gaps.
        let four = [0, 10 * DAY, 20 * DAY, 30 * DAY];
        assert_eq!(class(&four, 50), FrequencyClass::FrequentCustomer);
        assert_eq!(class(&four, 51), FrequencyClass::RepeatCustomer);
    }

    #[test]
    fn stages_take_the_highest_evidence() {
        let none = PurchaseStats::compute(&[], &[], at(10));
        let two = PurchaseStats::compute(&[DAY, 2 * DAY], &[1, 1], at(10));
        let visit = FirstEngagements {
            visit: Some(0),
            ..Default::default()
        };
        assert_eq!(
            engagement_stage(&none, &FirstEngagements::default(), at(10)),
            (EngagementStage::TotalMarket, None)
        );
        assert_eq!(
            engagement_stage(&none, &visit, at(10)),
            (EngagementStage::JustLooking, Some(at(0)))
        );
        assert_eq!(
            engagement_stage(&two, &visit, at(10)),
            (EngagementStage::Rebuying, Some(at(2)))
        );
        let referral_later = FirstEngagements {
            referral: Some(20 * DAY),
            ..visit
        };
        assert_eq!(
            engagement_stage(&two, &referral_later, at(10)).0,
            EngagementStage::Rebuying
        );
        assert_eq!(
            engagement_stage(&two, &referral_later, at(20)),
            (EngagementStage::TellingOthers, Some(at(20)))
        );
    }
}
