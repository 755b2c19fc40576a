//! Which customers an evaluation must look at again.
//!
//! A customer's membership of a subject is a function of their own stored
//! data, of the evaluation time and, through the RFM scores, of the score
//! bounds. Between two evaluations it can change only for:
//!
//! - a customer a write touched (the journal names them);
//! - a customer whose features move with time: when every event is at or
//!   before T, that happens only at instants the customer's own figures fix
//!   (the next whole day since the last purchase, a purchase leaving the 90-
//!   or 365-day window, the instants of the frequency class), which the
//!   tracker keeps per row, and on the birthday of a customer with a birth
//!   date, once the date moves;
//! - a customer whose R, F or M score moved with the bounds, or with the
//!   recency in whole days of a bound, which is found by scoring everyone
//!   again, only when the bounds or their recencies moved.
//!
//! An evaluation reads those rows alone, a customer at a time, when they are
//! few, and else evaluates every rule over the whole index. When some event
//! lies after T (a backtest on a simulated clock, or an event dated in the
//! future), features move with events becoming past too: evaluations then
//! read the whole index until T passes every event.

use rayon::prelude::*;

use crate::domain::features::NANOS_PER_DAY;
use crate::domain::rules::{Predicate, Variable};
use crate::engine::frame::Frame;
use crate::engine::index::{age_at, FeatureIndex};
use crate::engine::rfm::ScoreBounds;

/// Past this share of the rows (one in this many), reading every row a
/// rule at a time is cheaper than reading the candidates a customer at a
/// time.
const WHOLE_INDEX_PAST: usize = 16;

/// Below this many candidates, they are read a customer at a time however
/// few the rows: it takes at most milliseconds.
const WHOLE_INDEX_FROM: usize = 4096;

/// The windows whose purchase counts rules read, in days.
const WINDOWS: [i64; 2] = [90, 365];

/// What the last evaluation left to know about each row.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    /// Whether the rows' instants hold for the last evaluation: false
    /// until an evaluation over the whole index at a time after every
    /// event.
    valid: bool,
    /// The last evaluation's date, `yyyymmdd`.
    on: u32,
    /// By row, the first instant after the last evaluation's time at which
    /// a feature of the customer moves with time alone; `i64::MAX` for
    /// none.
    next: Vec<i64>,
    /// What placed the R, F and M scores at the last evaluation, kept
    /// while some subject reads a score: every row's scores follow from it
    /// and the row's own figures.
    scores: Option<ScoreKey>,
    /// The prediction model at the last evaluation.
    model: ModelKey,
}

/// What placed the scores: `None` without a purchaser.
type ScoreKey = Option<ScoreBounds>;

/// What to evaluate.
#[derive(Debug)]
pub(super) enum Plan {
    /// Every rule over the whole index.
    Whole,
    /// These rows alone, in order, without duplicates, for every subject;
    /// and for the subjects that read a score, those rows with the ones
    /// whose scores alone moved.
    Rows(Vec<u32>, Scored),
}

/// The rows whose scores alone moved, for the subjects that read one.
#[derive(Debug)]
pub(super) enum Scored {
    /// These, in order, without duplicates, none of them among the rows
    /// for every subject.
    Rows(Vec<u32>),
    /// Too many: those subjects read the whole index.
    Whole,
}

/// Whether a rule reads an RFM score.
pub(super) fn reads_scores(rule: &Predicate) -> bool {
    rule.reads(&|variable| {
        matches!(
            variable,
            Variable::RfmR | Variable::RfmF | Variable::RfmM | Variable::RfmSegment
        )
    })
}

/// Whether a rule reads a prediction of the model in force, which moves
/// for every purchaser with the date and with each fit.
pub(super) fn reads_predictions(rule: &Predicate) -> bool {
    rule.reads(&|variable| {
        matches!(
            variable,
            Variable::PAlive
                | Variable::PAliveBand
                | Variable::ExpectedPurchases90d
                | Variable::ExpectedPurchases365d
                | Variable::ExpectedOrderValue
                | Variable::Clv365d
        )
    })
}

/// What tells one prediction model from another: its evaluation time and
/// when it was fitted; `None` without one.
type ModelKey = Option<(i64, i64)>;

fn model_key(frame: &Frame<'_>) -> ModelKey {
    key_of(frame.index)
}

fn key_of(index: &FeatureIndex) -> ModelKey {
    index
        .model()
        .map(|model| (model.evaluation_time.as_nanos(), model.fitted_at.as_nanos()))
}

fn score_key(frame: &Frame<'_>) -> ScoreKey {
    frame.rfm_bounds().map(|bounds| bounds.at(frame.at))
}

impl Tracker {
    /// After a load in the embedded mode, takes the model in force as the
    /// one of the last evaluation: the one process that fits puts a model
    /// in force only while it runs, and evaluates soon after.
    pub(super) fn assume_model_of(&mut self, index: &FeatureIndex) {
        self.model = key_of(index);
    }

    /// After a load, takes the model the evaluation at `frame` reads as the
    /// one of the last evaluation when `same`, and as another otherwise,
    /// so that the evaluation finds a new fit exactly when the others did.
    pub(super) fn assume_model(&mut self, frame: &Frame<'_>, same: bool) {
        self.model = match same {
            true => model_key(frame),
            // No model's key: one is in force now, for a model cannot be
            // taken away.
            false => None,
        };
    }

    /// Whether the prediction model changed since the last evaluation.
    pub(super) fn refitted(&self, frame: &Frame<'_>) -> bool {
        self.model != model_key(frame)
    }

    /// What an evaluation at `frame`'s time must read, given the rows
    /// writes touched; `scored` says whether a subject reads a score, and
    /// `predicted` whether one reads a prediction: every purchaser's
    /// predictions move when the date does (T counts whole days) and with
    /// each fit, so then those evaluations read the whole index.
    pub(super) fn plan(
        &mut self,
        frame: &Frame<'_>,
        touched: Vec<u32>,
        scored: bool,
        predicted: bool,
    ) -> Plan {
        let rows = frame.rows();
        if !self.valid || !frame.is_current() || *frame.index.thresholds() != frame.thresholds {
            return Plan::Whole;
        }
        if predicted && (frame.on != self.on || self.refitted(frame)) {
            return Plan::Whole;
        }
        let mut candidates = touched;
        let at = frame.at;
        candidates.extend(
            self.next
                .par_iter()
                .enumerate()
                .filter(|(_, &next)| next <= at)
                .map(|(row, _)| row as u32)
                .collect::<Vec<u32>>(),
        );
        // Rows added since the last evaluation were written.
        candidates.extend((self.next.len()..rows).map(|row| row as u32));
        if frame.on != self.on {
            let (before, now) = (self.on, frame.on);
            let birth = &frame.index.columns().birth;
            candidates.extend(
                birth
                    .par_iter()
                    .enumerate()
                    .filter(|(_, &birth)| age_at(birth, before) != age_at(birth, now))
                    .map(|(row, _)| row as u32)
                    .collect::<Vec<u32>>(),
            );
        }
        candidates.par_sort_unstable();
        candidates.dedup();
        let most = (rows / WHOLE_INDEX_PAST).max(WHOLE_INDEX_FROM);
        if candidates.len() > most {
            return Plan::Whole;
        }
        let mut moved = Vec::new();
        if scored {
            let key = score_key(frame);
            match self.scores {
                Some(before) if before == key => {}
                Some(before) => {
                    moved.extend(moved_scores(frame, before, key));
                    self.scores = Some(key);
                }
                // No subject read a score before: the one that does now
                // may have been evaluated before the bounds moved.
                None => return Plan::Whole,
            }
        } else {
            self.scores = None;
        }
        // Sorted already, as found.
        moved.retain(|row| candidates.binary_search(row).is_err());
        let scored = if candidates.len() + moved.len() > most {
            Scored::Whole
        } else {
            Scored::Rows(moved)
        };
        Plan::Rows(candidates, scored)
    }

    /// Notes an evaluation at `frame`'s time of `plan`'s rows; a subject
    /// that reads a score is followed when `scored`.
    pub(super) fn evaluated(&mut self, frame: &Frame<'_>, plan: &Plan, scored: bool) {
        self.on = frame.on;
        self.model = model_key(frame);
        if !frame.is_current() {
            self.valid = false;
            self.scores = None;
            return;
        }
        match plan {
            Plan::Whole => {
                self.next = (0..frame.rows() as u32)
                    .into_par_iter()
                    .map(|row| next_change(frame, row))
                    .collect();
                self.scores = scored.then(|| score_key(frame));
                self.valid = true;
            }
            Plan::Rows(rows, _) => {
                self.next.resize(frame.rows(), i64::MAX);
                for &row in rows {
                    self.next[row as usize] = next_change(frame, row);
                }
            }
        }
    }

    /// Forgets what it knew, after a subject could not be evaluated: the
    /// next evaluation reads the whole index.
    pub(super) fn reset(&mut self) {
        self.valid = false;
    }
}

/// The rows whose scores placed by `now` differ from those placed by
/// `before`, their figures being the frame's: one pass over three columns.
/// A row whose own figures moved since is a candidate on its own account.
fn moved_scores(frame: &Frame<'_>, before: ScoreKey, now: ScoreKey) -> Vec<u32> {
    let (count, total) = (frame.count(), frame.total());
    let alive = &frame.index.columns().alive;
    let scores = |key: &ScoreKey, row: usize| match key {
        Some(bounds) if alive[row] && count[row] > 0 => {
            bounds.scores(frame.recency_days(row), count[row], total[row])
        }
        _ => [0; 3],
    };
    (0..frame.rows())
        .into_par_iter()
        .filter(|&row| scores(&before, row) != scores(&now, row))
        .map(|row| row as u32)
        .collect()
}

/// The first instant after the frame's time at which a feature of `row`
/// moves with time alone, when every event is at or before it: the next
/// whole day since the last purchase, the next purchase to leave a window,
/// and the frequency class's instants. A birthday moves the age, which the
/// tracker finds from the date.
fn next_change(frame: &Frame<'_>, row: u32) -> i64 {
    let index = frame.index;
    let columns = index.columns();
    let number = row as usize;
    let Some(series) = index.row_at(row) else {
        return i64::MAX;
    };
    if columns.count[number] == 0 {
        return i64::MAX;
    }
    let at = frame.at;
    let last = columns.last[number];
    let days = at.saturating_sub(last).div_euclid(NANOS_PER_DAY);
    let mut next = last.saturating_add((days + 1).saturating_mul(NANOS_PER_DAY));
    let times = series.purchases.times();
    for window in WINDOWS {
        let span = window * NANOS_PER_DAY;
        // The oldest purchase still in (T − span, T] leaves it first.
        let inside = times.partition_point(|&time| time <= at.saturating_sub(span));
        if let Some(&oldest) = times.get(inside) {
            next = next.min(oldest.saturating_add(span));
        }
    }
    for instant in [columns.lapsed_from[number], columns.frequent_until[number]] {
        if instant > at {
            next = next.min(instant);
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::features::Thresholds;
    use crate::domain::rules::compile;
    use crate::domain::{Customer, CustomerId, Profile, Timestamp};
    use crate::engine::index::{event_key, Event, EventRef, FeatureIndex};

    /// What of a row moves with time alone.
    fn moving(index: &FeatureIndex, at: i64, row: u32) -> (i64, u32, u32, u8) {
        let frame = Frame::new(index, Timestamp::from_nanos(at), Thresholds::default());
        let number = row as usize;
        let recency = if frame.count()[number] > 0 {
            frame.recency_days(number)
        } else {
            -1
        };
        (
            recency,
            frame.in_90_days()[number],
            frame.in_365_days()[number],
            frame.frequency_codes()[number],
        )
    }

    /// A row's next instant is the first at which anything that moves with
    /// time alone moves: nothing moves before it, something moves at it.
    #[test]
    fn nothing_moves_before_a_rows_next_instant_and_something_moves_at_it() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        let day = NANOS_PER_DAY;
        let now = 1_800_000_000 * 1_000_000_000i64;
        let mut index = FeatureIndex::new(Thresholds::default());
        for n in 0..300u32 {
            let id = CustomerId::parse(&format!("c{n}")).unwrap();
            index.add_customer(&Customer {
                id,
                profile: Profile::default(),
                create_time: Timestamp::from_nanos(0),
                update_time: Timestamp::from_nanos(0),
                create_request_id: None,
            });
            // A third buy often, within a few months: frequent customers.
            let (count, span) = if n % 3 == 0 {
                (6 + next(15), 120)
            } else {
                (next(8), 500)
            };
            for k in 0..count {
                // Whole days, whole seconds or any nanosecond back.
                let unit = [day, 1_000_000_000, 1][next(3) as usize] as u64;
                let back = next(span * day as u64) / unit * unit;
                let time = now - back as i64;
                let key = event_key(&format!("p{n}-{k}"));
                let event = Event {
                    time,
                    amount: Some(100),
                    key,
                    at: EventRef::new(1, 0),
                };
                assert!(index.add_purchase(n, event));
            }
        }
        for row in 0..300u32 {
            let at = now + next(3 * day as u64) as i64;
            let frame = Frame::new(&index, Timestamp::from_nanos(at), Thresholds::default());
            let instant = next_change(&frame, row);
            let before = moving(&index, at, row);
            if instant == i64::MAX {
                assert_eq!(before, moving(&index, at + 400 * day, row), "row {row}");
                continue;
            }
            assert!(instant > at);
            for probe in [at + 1, (at + instant) / 2, instant - 1] {
                assert_eq!(before, moving(&index, probe, row), "row {row} at {probe}");
            }
            assert_ne!(
                before,
                moving(&index, instant, row),
                "row {row} at {instant}"
            );
        }
    }

    /// Predictions move for every purchaser with the date and with a new
    /// fit: a rule that reads one is then evaluated over the whole index,
    /// and only then.
    #[test]
    fn predictions_are_read_again_whole_on_a_new_date_or_a_new_fit() {
        use crate::domain::predict::bgnbd::BgNbd;
        use crate::domain::predict::PredictionModel;
        use std::sync::Arc;
        let day = NANOS_PER_DAY;
        // Noon of a day.
        let noon = 20_000 * day + day / 2;
        let mut index = FeatureIndex::new(Thresholds::default());
        for n in 0..10u32 {
            index.add_customer(&Customer {
                id: CustomerId::parse(&format!("c{n}")).unwrap(),
                profile: Profile::default(),
                create_time: Timestamp::from_nanos(0),
                update_time: Timestamp::from_nanos(0),
                create_request_id: None,
            });
            let event = Event {
                time: noon - i64::from(n) * 40 * day,
                amount: Some(100),
                key: event_key(&format!("p{n}")),
                at: EventRef::new(1, 0),
            };
            assert!(index.add_purchase(n, event));
        }
        let bgnbd = BgNbd {
            r: 0.24,
            alpha: 4.4,
            a: 0.79,
            b: 2.4,
        };
        let model = |fitted: i64| PredictionModel::of_bgnbd(bgnbd, Timestamp::from_nanos(fitted));
        index.set_model(Arc::new(model(1)));
        let mut tracker = Tracker::default();
        let mut step = |index: &FeatureIndex, at: i64, predicted: bool| {
            let frame = Frame::new(index, Timestamp::from_nanos(at), Thresholds::default());
            let plan = tracker.plan(&frame, Vec::new(), false, predicted);
            tracker.evaluated(&frame, &plan, false);
            matches!(plan, Plan::Whole)
        };
        assert!(step(&index, noon, true), "the first evaluation");
        assert!(
            !step(&index, noon + 1, true),
            "the same date, the same model"
        );
        index.set_model(Arc::new(model(2)));
        assert!(step(&index, noon + 2, true), "a new fit");
        assert!(!step(&index, noon + 3, true));
        assert!(step(&index, noon + day, true), "the next date");
        // Without a rule on predictions, neither moves everyone.
        index.set_model(Arc::new(model(3)));
        assert!(!step(&index, noon + 2 * day, false));
        // After a load: the model of the last evaluation, as the stored
        // fingerprint says, or another.
        let frame = Frame::new(&index, Timestamp::from_nanos(noon), Thresholds::default());
        let mut loaded = Tracker::default();
        loaded.assume_model_of(&index);
        assert!(!loaded.refitted(&frame));
        loaded.assume_model(&frame, false);
        assert!(loaded.refitted(&frame));
        loaded.assume_model(&frame, true);
        assert!(!loaded.refitted(&frame));
    }

    #[test]
    fn a_rule_reads_predictions_through_any_operand() {
        for (rule, predicted) in [
            ("features.p_alive < 0.3", true),
            ("customer.age > 30 || !has(features.clv_365d)", true),
            (r#"features.p_alive_band == "0_25""#, true),
            ("features.rfm.r >= 4", false),
        ] {
            assert_eq!(
                reads_predictions(&compile(rule).unwrap()),
                predicted,
                "{rule}"
            );
        }
    }

    #[test]
    fn a_rule_reads_scores_through_any_operand() {
        for (rule, scored) in [
            ("features.rfm.r >= 4", true),
            (
                "customer.age > 30 && !(features.rfm_segment == \"CHAMPIONS\")",
                true,
            ),
            ("customer.age > 30 || features.recency_days < 3", false),
            ("true", false),
        ] {
            assert_eq!(reads_scores(&compile(rule).unwrap()), scored, "{rule}");
        }
    }
}
