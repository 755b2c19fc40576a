//! The prediction model of the customer base: its inputs read from the
//! index, the fit, the model put in force through a command (so that in
//! cluster mode every replica predicts with the same one), the fit in the
//! background when the data has changed enough, and the holdout
//! validation.
//!
//! A fit reads every purchaser as of its evaluation time who does not
//! object to profiling, under the index's read lock, then fits without
//! it, on the blocking pool: never on a request's critical path, except
//! for the calls that ask for one. One fit runs at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::command::{expect_outcome, Command, InForce, Outcome};
use super::index::FeatureIndex;
use super::{Engine, Shared};
use crate::domain::features::NANOS_PER_DAY;
use crate::domain::predict::{
    day_of, ClvSettings, FitInputs, PredictionModel, PurchaseDays, Validation,
};
use crate::domain::{Error, Result, Timestamp};

/// When the model is fitted again, and what lifetime value counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PredictionSettings {
    /// The horizon and discount rate of `features.clv_365d`.
    pub clv: ClvSettings,
    /// Fit again once the purchases to fit on differ from the model's by
    /// this share (0.05 is 5%).
    pub refit_change: f64,
    /// Fit again once the model was fitted this long ago, whatever
    /// changed.
    pub refit_after: Duration,
    /// How often the background looks at whether to fit again.
    pub check_every: Duration,
}

impl Default for PredictionSettings {
    fn default() -> Self {
        PredictionSettings {
            clv: ClvSettings::default(),
            refit_change: 0.05,
            refit_after: Duration::from_secs(86_400),
            check_every: Duration::from_secs(60),
        }
    }
}

/// The inputs of a fit as of `at`: every purchaser then who does not
/// object to profiling, in row order.
fn fit_inputs(index: &FeatureIndex, at: i64) -> FitInputs {
    let columns = index.columns();
    let customers: Vec<(PurchaseDays, u64)> = (0..index.row_count())
        .into_par_iter()
        .filter_map(|number| {
            if columns.objects[number] || columns.count[number] == 0 {
                return None;
            }
            let row = index.row_at(number as u32)?;
            let purchases = &row.purchases;
            let days = PurchaseDays::of(purchases.times(), purchases.amounts(), at)?;
            let counted = purchases.times().partition_point(|&time| time <= at);
            Some((days, counted as u64))
        })
        .collect();
    FitInputs {
        purchases: customers.iter().map(|(_, counted)| counted).sum(),
        customers: customers.into_iter().map(|(days, _)| days).collect(),
    }
}

/// Each fitted customer's purchase days as of `from` (their day `on`),
/// with the distinct purchase days they had after that day, up to `to`;
/// read under the index's lock, which the comparison does not need.
fn holdout_days(index: &FeatureIndex, from: i64, on: i64, to: i64) -> Vec<(PurchaseDays, u32)> {
    let columns = index.columns();
    (0..index.row_count())
        .into_par_iter()
        .filter_map(|number| {
            if columns.objects[number] || columns.count[number] == 0 {
                return None;
            }
            let series = &index.row_at(number as u32)?.purchases;
            let days = PurchaseDays::of(series.times(), series.amounts(), from)?;
            let times = series.times();
            let start = times.partition_point(|&time| day_of(time) <= on);
            let stop = times.partition_point(|&time| time <= to).max(start);
            let mut came = 0u32;
            let mut previous = None;
            for &time in &times[start..stop] {
                let day = day_of(time);
                if previous != Some(day) {
                    came += 1;
                    previous = Some(day);
                }
            }
            Some((days, came))
        })
        .collect()
}

/// Purchases the next fit would read now: those of the customers who do
/// not object to profiling. One pass over two columns.
fn purchases_to_fit(index: &FeatureIndex) -> u64 {
    let columns = index.columns();
    columns
        .count
        .par_iter()
        .zip(columns.objects.par_iter())
        .map(|(&count, &objects)| if objects { 0 } else { u64::from(count) })
        .sum()
}

/// Fits a model as of `at` over the index, noted as fitted now by the
/// engine's clock; the caller holds the turn (see `Engine::fitting`).
fn fit(shared: &Shared, at: Timestamp) -> Result<PredictionModel> {
    let started = Instant::now();
    let inputs = fit_inputs(&shared.long_index(), at.as_nanos());
    if inputs.customers.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "no customer bought anything by {at}, or every one who did objects to profiling: there is nothing to fit on"
        )));
    }
    let fitted_at = shared.watch.clock_now();
    PredictionModel::fit(&inputs, at, fitted_at, started).map_err(|error| {
        // What the purchases are, not a fault of ours.
        Error::FailedPrecondition(format!("the prediction model cannot be fitted: {error}"))
    })
}

/// Evaluation times a fit accepts: up to a day ahead of the clock, as
/// events are.
const MOST_AHEAD: i64 = NANOS_PER_DAY;

/// The refusal of a fit that another overtook.
pub(super) fn overtaken() -> Error {
    Error::RevisionMismatch {
        name: "predictionModel".to_owned(),
        description: "another prediction model came into force while this one waited or was fitted"
            .to_owned(),
    }
}

impl Engine {
    /// The turn to fit: one fit runs at a time. Taken before the fit is
    /// handed to the blocking pool, and held there until it ends, so that
    /// a call given up on while it waits starts no fit, and one given up
    /// on while it fits keeps the turn until the fit is done.
    async fn fitting(&self) -> tokio::sync::OwnedMutexGuard<()> {
        Arc::clone(&self.shared.fitting).lock_owned().await
    }

    /// The prediction model in force, if one was fitted.
    pub fn prediction_model(&self) -> Option<Arc<PredictionModel>> {
        self.shared.index().model().cloned()
    }

    /// Fits the model as of `at` now, puts it in force whatever model is
    /// in force meanwhile, and returns it.
    pub async fn refit_prediction_model(&self, at: Timestamp) -> Result<Arc<PredictionModel>> {
        let now = self.shared.watch.clock_now();
        if at.as_nanos() > now.as_nanos().saturating_add(MOST_AHEAD) {
            return Err(Error::invalid(
                "evaluation_time",
                format!("at most a day ahead of the clock ({now}), got {at}"),
            ));
        }
        self.refit(at, InForce::Any).await
    }

    /// Fits the model as of `at` and puts it in force if the model in
    /// force is still `expected` by then.
    async fn refit(&self, at: Timestamp, expected: InForce) -> Result<Arc<PredictionModel>> {
        let turn = self.fitting().await;
        // A fit that waited for its turn behind another may be moot.
        if !expected.holds(self.prediction_model().as_deref()) {
            return Err(overtaken());
        }
        let model = self
            .scan(move |shared| {
                let _turn = turn;
                fit(shared, at)
            })
            .await?;
        let outcome = self
            .execute(Command::StorePredictionModel { model, expected })
            .await?;
        let model = expect_outcome!(outcome, PredictionModel)?;
        tracing::info!(
            customers = model.customers,
            evaluation_time = %model.evaluation_time,
            fit_ms = model.fit_nanos / 1_000_000,
            "prediction model fitted"
        );
        Ok(model)
    }

    /// Fits a model as of `calibration_end`, on the purchases up to it
    /// alone, and compares its predictions with the purchase days each
    /// fitted customer had after it, up to `holdout_end`. The model is
    /// not put in force.
    pub async fn validate_prediction_model(
        &self,
        calibration_end: Timestamp,
        holdout_end: Timestamp,
    ) -> Result<(PredictionModel, Validation)> {
        let turn = self.fitting().await;
        self.scan(move |shared| {
            let _turn = turn;
            let model = fit(shared, calibration_end)?;
            let (on, end) = (
                day_of(calibration_end.as_nanos()),
                day_of(holdout_end.as_nanos()),
            );
            let compared = holdout_days(
                &shared.long_index(),
                calibration_end.as_nanos(),
                on,
                holdout_end.as_nanos(),
            );
            let validation = Validation::compare(&model, &compared, on, end - on);
            Ok((model, validation))
        })
        .await
    }

    /// Whether the model should be fitted again at `now`, and the model in
    /// force it would replace: due when there is no model and someone
    /// bought something, when the purchases to fit on moved by the
    /// configured share, or when the model was fitted longer ago than the
    /// configured age. A pass over the index, so a scan.
    async fn refit_due(&self, now: Timestamp) -> Result<Option<InForce>> {
        self.scan(move |shared| {
            let settings = &shared.settings.predictions;
            let index = shared.long_index();
            let purchases = purchases_to_fit(&index);
            let Some(model) = index.model() else {
                return Ok((purchases > 0).then_some(InForce::None));
            };
            let age = now.as_nanos().saturating_sub(model.fitted_at.as_nanos());
            let moved = purchases.abs_diff(model.purchases) as f64;
            let due = age >= i64::try_from(settings.refit_after.as_nanos()).unwrap_or(i64::MAX)
                || moved > settings.refit_change * model.purchases as f64;
            Ok(due.then(|| InForce::of(model)))
        })
        .await
    }

    /// Fits the model in the background, at once and then whenever it is
    /// due, until the last other handle of the engine is dropped. The
    /// server calls it once. After a fit that fails, it waits twice as
    /// long each time, up to 64 times the period.
    pub fn start_predicting(self: &Arc<Self>) {
        let engine = Arc::downgrade(self);
        let every = self.shared.settings.predictions.check_every;
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                // Held only while it looks or fits, so that the server's
                // dropping the engine ends the loop.
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let now = engine.shared.watch.clock_now();
                // A replica behind the log would fit on stale purchases.
                let caught_up = *engine.ready().borrow();
                let due = match caught_up {
                    true => engine.refit_due(now).await.unwrap_or_else(|error| {
                        tracing::warn!(%error, "cannot tell whether a prediction fit is due");
                        None
                    }),
                    false => None,
                };
                if let Some(expected) = due {
                    match engine.refit(now, expected).await {
                        Ok(_) => failures = 0,
                        // Another fit came into force first (cluster mode).
                        Err(Error::RevisionMismatch { .. }) => failures = 0,
                        Err(error) => {
                            failures = failures.saturating_add(1);
                            tracing::warn!(%error, failures, "the background prediction fit failed");
                        }
                    }
                }
                drop(engine);
                tokio::time::sleep(every.saturating_mul(1 << failures.min(6))).await;
            }
        });
    }
}
