//! The fitted prediction model of a customer base, and what it predicts
//! for one customer: the models' inputs from purchase times and amounts,
//! the two fits together, the per-customer predictions, the lifetime value
//! and the holdout validation.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::bgnbd::{ln_weeks, BgNbd, History};
use super::gamma_gamma::{GammaGamma, Spend};
use crate::domain::features::{PAliveBand, NANOS_PER_DAY};
use crate::domain::Timestamp;

/// Days in a week: the models' times are in weeks.
const DAYS_PER_WEEK: f64 = 7.0;

/// The UTC day of an instant, in days since the epoch.
pub fn day_of(nanos: i64) -> i64 {
    nanos.div_euclid(NANOS_PER_DAY)
}

/// A customer's purchases in whole UTC days, as the models read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurchaseDays {
    /// Distinct days with a purchase: at least one.
    pub days: u32,
    /// The first of them.
    pub first_day: i64,
    /// The last of them.
    pub last_day: i64,
    /// The total of the purchases on every day but the first, in minor
    /// units.
    pub repeat_total: i64,
}

impl PurchaseDays {
    /// The days of the purchases at or before `at`, from their times in
    /// ascending order and their amounts in the same order (empty for
    /// none); `None` without such a purchase.
    pub fn of(times: &[i64], amounts: &[i64], at: i64) -> Option<Self> {
        let counted = times.partition_point(|&time| time <= at);
        let times = &times[..counted];
        let first_day = day_of(*times.first()?);
        let mut days = 0u32;
        let mut previous = i64::MIN;
        let mut repeat_total = 0i64;
        for (i, &time) in times.iter().enumerate() {
            let day = day_of(time);
            if day != previous {
                days += 1;
                previous = day;
            }
            if day != first_day {
                let amount = amounts.get(i).copied().unwrap_or(0);
                repeat_total = repeat_total.saturating_add(amount);
            }
        }
        Some(PurchaseDays {
            days,
            first_day,
            last_day: previous,
            repeat_total,
        })
    }

    /// The history in the BG/NBD's terms as of the day `on`, which is not
    /// before the last purchase day: x, t_x and T in weeks.
    pub fn history(&self, on: i64) -> History {
        History {
            x: f64::from(self.days - 1),
            t_x: (self.last_day - self.first_day) as f64 / DAYS_PER_WEEK,
            t: (on.max(self.last_day) - self.first_day) as f64 / DAYS_PER_WEEK,
        }
    }

    /// The repeat days in the Gamma-Gamma's terms, in major units; `None`
    /// without a repeat day, or when their mean is not positive (the model
    /// needs positive values).
    pub fn spend(&self) -> Option<Spend> {
        let x = self.days.checked_sub(1).filter(|&x| x > 0)?;
        (self.repeat_total > 0).then(|| Spend {
            x: f64::from(x),
            mean: self.repeat_total as f64 / 100.0 / f64::from(x),
        })
    }
}

/// How lifetime value is counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClvSettings {
    /// The horizon, in days.
    pub horizon_days: u32,
    /// The discount rate per month of 30 days: 0.01 is 1%.
    pub monthly_discount_rate: f64,
}

impl Default for ClvSettings {
    fn default() -> Self {
        ClvSettings {
            horizon_days: 365,
            monthly_discount_rate: 0.01,
        }
    }
}

/// A model fitted on a customer base as of an evaluation time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionModel {
    /// The BG/NBD's parameters.
    pub bgnbd: BgNbd,
    /// Its log-likelihood at them.
    pub bgnbd_log_likelihood: f64,
    /// The customers it was fitted on: every purchaser as of the
    /// evaluation time who does not object to profiling.
    pub customers: u64,
    /// The Gamma-Gamma's parameters; `None` when no customer had a repeat
    /// day of positive value, or the fit failed.
    pub gamma_gamma: Option<GammaGamma>,
    /// Its log-likelihood at them.
    pub gamma_gamma_log_likelihood: f64,
    /// The customers it was fitted on: those with a repeat day and a
    /// positive mean repeat-day value.
    pub spenders: u64,
    /// The purchases the fitted customers had made by the evaluation time.
    pub purchases: u64,
    /// The evaluation time: the fit read the purchases at or before it.
    pub evaluation_time: Timestamp,
    /// When the fit ran.
    pub fitted_at: Timestamp,
    /// How long it took, in nanoseconds, reading the inputs included.
    pub fit_nanos: u64,
}

#[cfg(test)]
impl PredictionModel {
    /// A model of `bgnbd` alone, as fitted at `fitted_at` for that time, for
    /// tests of what reads a model.
    pub fn of_bgnbd(bgnbd: BgNbd, fitted_at: Timestamp) -> Self {
        PredictionModel {
            bgnbd,
            bgnbd_log_likelihood: 0.0,
            customers: 1,
            gamma_gamma: None,
            gamma_gamma_log_likelihood: 0.0,
            spenders: 0,
            purchases: 1,
            evaluation_time: fitted_at,
            fitted_at,
            fit_nanos: 1,
        }
    }
}

/// What a fit reads: each fitted customer's purchase days, and how many
/// purchases they made.
#[derive(Debug, Default)]
pub struct FitInputs {
    /// One entry per customer.
    pub customers: Vec<PurchaseDays>,
    /// Their purchases, all counted.
    pub purchases: u64,
}

impl PredictionModel {
    /// Fits both models on `inputs` as of `at`, noting it as fitted at
    /// `fitted_at` by the engine's clock; `started` is when reading
    /// the inputs began, for the fit's duration. A customer base in which
    /// no one has a repeat day of positive value gets no Gamma-Gamma.
    pub fn fit(
        inputs: &FitInputs,
        at: Timestamp,
        fitted_at: Timestamp,
        started: std::time::Instant,
    ) -> Result<Self, String> {
        let on = day_of(at.as_nanos());
        let histories: Vec<History> = inputs.customers.iter().map(|c| c.history(on)).collect();
        let bgnbd = BgNbd::fit(&histories)?;
        let BgNbd { r, alpha, a, b } = bgnbd.model;
        if !(identified(&[r, alpha, a, b]) && bgnbd.log_likelihood.is_finite()) {
            return Err(format!(
                "the purchases do not identify the BG/NBD model (yet): the fit ran off to {:?}",
                bgnbd.model
            ));
        }
        let spends: Vec<Spend> = inputs
            .customers
            .iter()
            .filter_map(PurchaseDays::spend)
            .collect();
        let gamma_gamma = if spends.is_empty() {
            None
        } else {
            // A population whose mean cannot be finite (q ≤ 1) predicts
            // nothing useful: left without one, as without spenders.
            GammaGamma::fit(&spends).ok().filter(|fit| {
                let GammaGamma { p, q, v } = fit.model;
                identified(&[p, q, v]) && q > 1.0 && fit.model.population_mean().is_finite()
            })
        };
        Ok(PredictionModel {
            bgnbd: bgnbd.model,
            bgnbd_log_likelihood: bgnbd.log_likelihood,
            customers: histories.len() as u64,
            gamma_gamma: gamma_gamma.map(|fit| fit.model),
            gamma_gamma_log_likelihood: gamma_gamma.map_or(0.0, |fit| fit.log_likelihood),
            spenders: if gamma_gamma.is_some() {
                spends.len() as u64
            } else {
                0
            },
            purchases: inputs.purchases,
            evaluation_time: at,
            fitted_at,
            fit_nanos: u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        })
    }

    /// The probability that the customer is still active on the day `on`.
    pub fn p_alive(&self, days: &PurchaseDays, on: i64) -> f64 {
        self.bgnbd.p_alive(&days.history(on))
    }

    /// The purchases (distinct days) the customer is expected to make in
    /// the `horizon_days` after the day `on`.
    pub fn expected_purchases(
        &self,
        days: &PurchaseDays,
        on: i64,
        horizon_days: f64,
    ) -> Option<f64> {
        let expected = self
            .bgnbd
            .expected_purchases(&days.history(on), horizon_days / DAYS_PER_WEEK);
        expected.and_then(purchases)
    }

    /// The expected value of the customer's purchase days, in major
    /// units: the population's mean for a customer outside the
    /// Gamma-Gamma's fit; `None` without a Gamma-Gamma.
    pub fn expected_order_value(&self, days: &PurchaseDays) -> Option<f64> {
        let model = self.gamma_gamma?;
        Some(model.expected_value(days.spend().as_ref()))
    }

    /// The customer's lifetime value over the horizon, in major units:
    /// the expected purchases of each month of 30 days (the last one
    /// shorter) times the expected order value, discounted by the month.
    pub fn clv(&self, days: &PurchaseDays, on: i64, settings: &ClvSettings) -> Option<f64> {
        let value = self.expected_order_value(days)?;
        let ends = month_ends(settings.horizon_days);
        let expected = self.expected_each(days, on, &ends);
        discounted(&ends, &expected, value, settings)
    }

    /// The expected purchases over each of `horizons`, in days, from one
    /// pass over the hypergeometric series.
    fn expected_each(&self, days: &PurchaseDays, on: i64, horizons: &[f64]) -> Vec<Option<f64>> {
        let weeks: Vec<f64> = horizons.iter().map(|days| days / DAYS_PER_WEEK).collect();
        self.bgnbd
            .expected_purchases_each(&days.history(on), &weeks)
            .into_iter()
            .map(|expected| expected.and_then(purchases))
            .collect()
    }

    /// Every prediction for the customer on the day `on`: the expected
    /// purchases of every horizon, the lifetime value's months included,
    /// from one pass over the hypergeometric series.
    pub fn predict(&self, days: &PurchaseDays, on: i64, clv: &ClvSettings) -> Predictions {
        let p_alive = self.p_alive(days, on);
        let ends = month_ends(clv.horizon_days);
        let mut horizons = vec![90.0, 365.0];
        horizons.extend(&ends);
        let expected = self.expected_each(days, on, &horizons);
        let expected_order_value = self.expected_order_value(days);
        Predictions {
            p_alive,
            p_alive_band: p_alive_band(p_alive),
            expected_purchases_90d: expected[0],
            expected_purchases_365d: expected[1],
            expected_order_value,
            clv: expected_order_value
                .and_then(|value| discounted(&ends, &expected[2..], value, clv)),
        }
    }
}

/// An expectation of purchases as a forecast: finite, and not below zero
/// (rounding can take a tiny one there).
fn purchases(expected: f64) -> Option<f64> {
    expected.is_finite().then(|| expected.max(0.0))
}

/// The ends of the months of 30 days of a horizon, in days: the last one
/// is the horizon's, however short its month.
fn month_ends(horizon_days: u32) -> Vec<f64> {
    let horizon = f64::from(horizon_days);
    let months = horizon_days.div_ceil(30);
    (1..=months)
        .map(|month| (f64::from(month) * 30.0).min(horizon))
        .collect()
}

/// The lifetime value from the expected purchases by each month's end:
/// each month's purchases times `value`, discounted by the month.
fn discounted(
    ends: &[f64],
    expected: &[Option<f64>],
    value: f64,
    settings: &ClvSettings,
) -> Option<f64> {
    let (mut clv, mut before) = (0.0, 0.0);
    for (&end, &by_then) in ends.iter().zip(expected) {
        let by_then = by_then?;
        let discount = (1.0 + settings.monthly_discount_rate).powf(end / 30.0);
        clv += (by_then - before) * value / discount;
        before = by_then;
    }
    Some(clv)
}

/// The widest range of fitted parameters taken as found: a fit that runs
/// further is one the data do not pin down (a likelihood that keeps
/// rising along a ridge, as with very few customers or no repeat
/// purchases), whose forecasts mean nothing.
const IDENTIFIED: std::ops::RangeInclusive<f64> = 1e-6..=1e6;

/// Whether every fitted parameter is within [`IDENTIFIED`].
fn identified(params: &[f64]) -> bool {
    params.iter().all(|param| IDENTIFIED.contains(param))
}

/// The most days [`PAliveOn`] tabulates: a century.
const MOST_TABULATED_DAYS: i64 = 36_525;

/// P(alive) of many customers on one day, quickly: ln(α + t) tabulated by
/// whole day, so that a customer costs an exponential rather than a
/// power; the same bits as [`PredictionModel::p_alive`].
#[derive(Debug)]
pub struct PAliveOn {
    /// The model's BG/NBD.
    model: BgNbd,
    /// The day.
    on: i64,
    /// ln(α + d / 7) by d, in days.
    ln: Vec<f64>,
}

impl PAliveOn {
    /// For the model's BG/NBD on the day `on`, with spans of up to `longest`
    /// days tabulated (longer ones computed).
    pub fn new(model: &PredictionModel, on: i64, longest: i64) -> Self {
        let alpha = model.bgnbd.alpha;
        let days = longest.clamp(0, MOST_TABULATED_DAYS) + 1;
        PAliveOn {
            model: model.bgnbd,
            on,
            ln: (0..days)
                .map(|d| ln_weeks(alpha, d as f64 / DAYS_PER_WEEK))
                .collect(),
        }
    }

    fn ln(&self, days: i64) -> f64 {
        match usize::try_from(days).ok().and_then(|d| self.ln.get(d)) {
            Some(&ln) => ln,
            None => ln_weeks(self.model.alpha, days as f64 / DAYS_PER_WEEK),
        }
    }

    /// P(alive) of a customer with these purchase days.
    pub fn of(&self, days: &PurchaseDays) -> f64 {
        if days.days <= 1 {
            return 1.0;
        }
        let BgNbd { r, a, b, .. } = self.model;
        let x = f64::from(days.days - 1);
        let t = self.on.max(days.last_day) - days.first_day;
        let t_x = days.last_day - days.first_day;
        let odds = a / (b + x - 1.0) * ((r + x) * (self.ln(t) - self.ln(t_x))).exp();
        1.0 / (1.0 + odds)
    }
}

/// The band of a probability of being active.
pub fn p_alive_band(p_alive: f64) -> PAliveBand {
    if p_alive < 0.25 {
        PAliveBand::Under25
    } else if p_alive < 0.5 {
        PAliveBand::From25To50
    } else if p_alive < 0.75 {
        PAliveBand::From50To75
    } else {
        PAliveBand::From75
    }
}

/// One customer's predictions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Predictions {
    /// The probability that they are still active.
    pub p_alive: f64,
    /// Its band.
    pub p_alive_band: PAliveBand,
    /// Expected purchase days in the next 90 days.
    pub expected_purchases_90d: Option<f64>,
    /// Expected purchase days in the next 365 days.
    pub expected_purchases_365d: Option<f64>,
    /// Expected value of a purchase day, in major units.
    pub expected_order_value: Option<f64>,
    /// Lifetime value over the configured horizon, in major units.
    pub clv: Option<f64>,
}

/// How well a model fitted as of a calibration end predicted the purchase
/// days of the holdout period after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Validation {
    /// The customers compared: the fitted ones.
    pub customers: u64,
    /// The holdout period's length, in days.
    pub holdout_days: i64,
    /// The predicted purchase days, summed.
    pub predicted: f64,
    /// The purchase days that came, summed.
    pub actual: u64,
    /// The naive baseline's prediction, summed: each customer's past rate
    /// of repeat days (x / T) over the holdout.
    pub naive: f64,
    /// The model's mean absolute error per customer.
    pub model_mae: f64,
    /// The naive baseline's.
    pub naive_mae: f64,
}

impl Validation {
    /// Compares the model's predictions over the `holdout_days` after the
    /// day `on` with what came, customer by customer: `customers` pairs
    /// each fitted customer's days as of `on` with the purchase days they
    /// had in the holdout.
    pub fn compare(
        model: &PredictionModel,
        customers: &[(PurchaseDays, u32)],
        on: i64,
        holdout_days: i64,
    ) -> Self {
        let horizon = holdout_days as f64;
        let mut validation = Validation {
            customers: customers.len() as u64,
            holdout_days,
            predicted: 0.0,
            actual: 0,
            naive: 0.0,
            model_mae: 0.0,
            naive_mae: 0.0,
        };
        // Each customer's forecasts on every core; summed in order below,
        // for the same figures on every run.
        let forecasts: Vec<(f64, f64)> = customers
            .par_iter()
            .map(|(days, _)| {
                let history = days.history(on);
                let predicted = model.expected_purchases(days, on, horizon).unwrap_or(0.0);
                let rate = if history.t > 0.0 {
                    history.x / history.t
                } else {
                    0.0
                };
                (predicted, rate * horizon / DAYS_PER_WEEK)
            })
            .collect();
        for ((predicted, naive), (_, came)) in forecasts.into_iter().zip(customers) {
            let came = f64::from(*came);
            validation.predicted += predicted;
            validation.actual += u64::from(came as u32);
            validation.naive += naive;
            validation.model_mae += (predicted - came).abs();
            validation.naive_mae += (naive - came).abs();
        }
        if !customers.is_empty() {
            let n = customers.len() as f64;
            validation.model_mae /= n;
            validation.naive_mae /= n;
        }
        validation
    }

    /// The aggregate error of the model: predicted over actual, minus one;
    /// `None` when no purchase day came.
    pub fn aggregate_error(&self) -> Option<f64> {
        (self.actual > 0).then(|| self.predicted / self.actual as f64 - 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = NANOS_PER_DAY;

    #[test]
    fn purchase_days_merge_a_day_and_keep_the_first_days_value_out() {
        // Two purchases on day 10, one on day 12, two on day 20, one
        // after the evaluation time.
        let times = [
            10 * DAY + 5,
            10 * DAY + 9,
            12 * DAY,
            20 * DAY,
            20 * DAY + 1,
            30 * DAY,
        ];
        let amounts = [100, 250, 1_000, 0, 500, 9_999];
        let days = PurchaseDays::of(&times, &amounts, 25 * DAY).unwrap();
        assert_eq!(
            days,
            PurchaseDays {
                days: 3,
                first_day: 10,
                last_day: 20,
                repeat_total: 1_500,
            }
        );
        let history = days.history(24);
        assert_eq!(
            (history.x, history.t_x, history.t),
            (2.0, 10.0 / 7.0, 14.0 / 7.0)
        );
        let spend = days.spend().unwrap();
        assert_eq!((spend.x, spend.mean), (2.0, 7.5));
        assert_eq!(PurchaseDays::of(&times, &amounts, 9 * DAY), None);
        // One day only: no repeat day, no spend.
        let once = PurchaseDays::of(&times[..2], &amounts[..2], 25 * DAY).unwrap();
        assert_eq!((once.days, once.spend()), (1, None));
    }

    /// A customer base too small or too uniform to say much still gives a
    /// model whose forecasts are numbers, or no model.
    #[test]
    fn small_and_uniform_customer_bases_give_finite_forecasts_or_none() {
        let one = |days: u32, first_day: i64, last_day: i64, repeat_total: i64| PurchaseDays {
            days,
            first_day,
            last_day,
            repeat_total,
        };
        let bases = [
            vec![one(1, 100, 100, 0)],
            vec![one(1, 100, 100, 0), one(1, 120, 120, 0)],
            vec![one(2, 100, 101, 500)],
            vec![one(1, 130, 130, 0)],
            vec![one(3, 0, 130, 0), one(5, 10, 20, 100)],
            (0..50)
                .map(|n| one(1 + n % 4, n as i64, n as i64 + 3 * (n % 4) as i64, 100))
                .collect(),
        ];
        let mut fitted = 0;
        for customers in bases {
            let inputs = FitInputs {
                purchases: customers.len() as u64,
                customers: customers.clone(),
            };
            let at = Timestamp::from_nanos(130 * NANOS_PER_DAY);
            let model = PredictionModel::fit(&inputs, at, at, std::time::Instant::now());
            let Ok(model) = model else {
                continue;
            };
            fitted += 1;
            for days in &customers {
                let p = model.predict(days, 130, &ClvSettings::default());
                assert!((0.0..=1.0).contains(&p.p_alive), "{customers:?}: {p:?}");
                for value in [
                    p.expected_purchases_90d,
                    p.expected_purchases_365d,
                    p.expected_order_value,
                    p.clv,
                ]
                .into_iter()
                .flatten()
                {
                    assert!(value.is_finite() && value >= 0.0, "{customers:?}: {p:?}");
                }
            }
        }
        assert!(fitted > 0);
    }

    /// The table's P(alive) is the model's, to the last bit, within the
    /// table and past it.
    #[test]
    fn p_alive_by_table_is_the_models() {
        let mut model = cdnow_like();
        model.bgnbd.alpha = 4.4135;
        let on = 20_000;
        let table = PAliveOn::new(&model, on, 400);
        for (days, first_day, last_day) in [
            (1, 19_990, 19_990),
            (2, 19_700, 19_800),
            (7, 19_601, 19_999),
            (3, 19_000, 19_300),
            (40, 15_000, 19_999),
            (2, 20_000, 20_001),
        ] {
            let customer = PurchaseDays {
                days,
                first_day,
                last_day,
                repeat_total: 0,
            };
            assert_eq!(
                table.of(&customer).to_bits(),
                model.p_alive(&customer, on).to_bits(),
                "{customer:?}"
            );
        }
    }

    #[test]
    fn zero_value_repeat_days_leave_the_spend_out() {
        let days = PurchaseDays::of(&[0, DAY, 2 * DAY], &[500, 0, 0], 3 * DAY).unwrap();
        assert_eq!(days.days, 3);
        assert_eq!(days.spend(), None);
    }

    /// A model with the parameters published for the CDNOW sample.
    fn cdnow_like() -> PredictionModel {
        PredictionModel {
            bgnbd: BgNbd {
                r: 0.2426,
                alpha: 4.4135,
                a: 0.7929,
                b: 2.4258,
            },
            bgnbd_log_likelihood: 0.0,
            customers: 1,
            gamma_gamma: Some(GammaGamma {
                p: 6.2496,
                q: 3.7442,
                v: 15.4435,
            }),
            gamma_gamma_log_likelihood: 0.0,
            spenders: 1,
            purchases: 3,
            evaluation_time: Timestamp::from_nanos(0),
            fitted_at: Timestamp::from_nanos(0),
            fit_nanos: 0,
        }
    }

    #[test]
    fn clv_is_the_discounted_value_of_the_expected_purchases() {
        let model = cdnow_like();
        let days = PurchaseDays {
            days: 3,
            first_day: 0,
            last_day: 213,
            repeat_total: 4_469,
        };
        let on = 272;
        let value = model.expected_order_value(&days).unwrap();
        let year = model.expected_purchases(&days, on, 365.0).unwrap();
        let undiscounted = ClvSettings {
            horizon_days: 365,
            monthly_discount_rate: 0.0,
        };
        let flat = model.clv(&days, on, &undiscounted).unwrap();
        assert!(
            (flat - year * value).abs() < 1e-9,
            "{flat} vs {}",
            year * value
        );
        let discounted = model.clv(&days, on, &ClvSettings::default()).unwrap();
        assert!(discounted < flat && discounted > flat / 1.01f64.powf(365.0 / 30.0));
        let predictions = model.predict(&days, on, &ClvSettings::default());
        assert_eq!(predictions.clv, Some(discounted));
        // One pass over the series gives what one series per month gives.
        let (mut by_months, mut before) = (0.0, 0.0);
        for month in 1..=13u32 {
            let end = f64::from((month * 30).min(365));
            let by_then = model.expected_purchases(&days, on, end).unwrap();
            by_months += (by_then - before) * value / 1.01f64.powf(end / 30.0);
            before = by_then;
        }
        assert!(
            (discounted / by_months - 1.0).abs() < 1e-12,
            "{discounted} vs {by_months}"
        );
        let one_pass = predictions.expected_purchases_365d.unwrap();
        assert!(
            (one_pass / year - 1.0).abs() < 1e-12,
            "{one_pass} vs {year}"
        );
        assert_eq!(month_ends(365).len(), 13);
        assert_eq!(month_ends(30), [30.0]);
        assert_eq!(month_ends(1), [1.0]);
        assert_eq!(predictions.p_alive_band, p_alive_band(predictions.p_alive));
    }
}
