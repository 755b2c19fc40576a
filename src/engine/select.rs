//! Evaluates compiled rules over a [`Frame`], a column at a time: each
//! condition is one pass over one array that yields a bit per customer,
//! and `&&`, `||` and `!` combine those bit sets a word at a time. A
//! condition on a string or enum is decided once per distinct value (per
//! dictionary entry), then looked up per customer.
//!
//! `column` is the one place that says which column each variable reads;
//! a selection, a comparison with a number and a breakdown dimension are
//! each a pass over it, chosen once per condition, never per row.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::ops::Range;

use foldhash::fast::RandomState;
use rayon::prelude::*;

use super::bits::{Bits, FEW_CODES, WORDS_PER_TASK};
use super::frame::{Frame, Predicted, Score};
use crate::domain::features::{PAliveBand, RfmSegment};
use crate::domain::rules::{Channel, Comparison, Literal, Predicate, StringTest, Variable};
use crate::domain::{ConsentStatus, TraitValue};

/// The customers a rule selects: the rows that hold a customer and meet it.
pub fn select(frame: &Frame<'_>, rule: &Predicate) -> Bits {
    let mut bits = eval(frame, rule, &Span::whole(frame));
    bits.and(frame.alive());
    bits
}

/// Splits a selection into the members and the customers who object to
/// profiling, who are only ever counted.
pub fn split_objectors(frame: &Frame<'_>, selected: &Bits) -> (Bits, Bits) {
    let mut objectors = Bits::from_values(&frame.index.columns().objects, |&objects| objects);
    objectors.and(selected);
    let mut members = selected.clone();
    members.and_not(&objectors);
    (members, objectors)
}

/// The rows that granted consent on a channel.
pub fn consented(frame: &Frame<'_>, channel: Channel) -> Bits {
    Bits::from_values(&frame.index.columns().consent, |consent| {
        channel_status(consent, channel) == ConsentStatus::Granted
    })
}

pub(crate) fn channel_status(consent: &crate::domain::Consent, channel: Channel) -> ConsentStatus {
    match channel {
        Channel::Email => consent.email,
        Channel::Sms => consent.sms,
        Channel::Push => consent.push,
        Channel::Ads => consent.ads,
    }
}

/// Rows a pass covers: every row, or a block of rows that makes the
/// classes and scores it reads for its own rows, once for all the rules
/// decided over it, where the frame can (see `Frame::classes_by_block`).
pub(super) struct Span {
    rows: Range<usize>,
    /// What the block made, `None` for a span of every row.
    made: Option<Made>,
}

/// The classes and scores a block made for its rows.
#[derive(Default)]
struct Made {
    frequency: OnceCell<Vec<u8>>,
    stage: OnceCell<Vec<u8>>,
    rfm: [OnceCell<Vec<u8>>; 3],
}

impl Span {
    /// Every row of the frame.
    pub(super) fn whole(frame: &Frame<'_>) -> Self {
        Span {
            rows: 0..frame.rows(),
            made: None,
        }
    }

    /// A block of rows.
    pub(super) fn block(rows: Range<usize>) -> Self {
        Span {
            rows,
            made: Some(Made::default()),
        }
    }

    /// Rows covered.
    fn len(&self) -> usize {
        self.rows.len()
    }

    /// The frequency codes of the span's rows.
    fn frequency<'s>(&'s self, frame: &'s Frame<'_>) -> &'s [u8] {
        match &self.made {
            Some(made) if frame.classes_by_block() => made
                .frequency
                .get_or_init(|| frame.frequency_codes_of(self.rows.clone())),
            _ => &frame.frequency_codes()[self.rows.clone()],
        }
    }

    /// The stage codes of the span's rows.
    fn stage<'s>(&'s self, frame: &'s Frame<'_>) -> &'s [u8] {
        match &self.made {
            Some(made) if frame.is_current() => made
                .stage
                .get_or_init(|| frame.stage_codes_of(self.rows.clone())),
            _ => &frame.stage_codes()[self.rows.clone()],
        }
    }

    /// One RFM score of the span's rows, 0 for a row without a purchase.
    fn rfm<'s>(&'s self, frame: &'s Frame<'_>, score: Score) -> &'s [u8] {
        match &self.made {
            Some(made) => {
                // The bounds are made even for no rows, so that a pass
                // over no rows makes them before the blocks read them.
                let bounds = frame.rfm_bounds();
                made.rfm[score as usize]
                    .get_or_init(|| frame.rfm_of_rows(bounds, score, self.rows.clone()))
            }
            None => frame.rfm(score),
        }
    }
}

/// The bits of the rows in `span` that meet a rule: bit `i` is row
/// `span.start + i`. Every column of the whole index the rule reads is
/// made before any row is read, so a pass over an empty block makes them
/// for later blocks to read in parallel.
pub(super) fn eval(frame: &Frame<'_>, rule: &Predicate, span: &Span) -> Bits {
    let rows = span.len();
    match rule {
        Predicate::Const(value) => Bits::filled(rows, *value),
        Predicate::And(operands) => {
            let mut bits = Bits::filled(rows, true);
            for operand in operands {
                bits.and(&eval(frame, operand, span));
            }
            bits
        }
        Predicate::Or(operands) => {
            let mut bits = Bits::filled(rows, false);
            for operand in operands {
                bits.or(&eval(frame, operand, span));
            }
            bits
        }
        Predicate::Not(operand) => {
            let mut bits = eval(frame, operand, span);
            bits.not();
            bits
        }
        Predicate::Compare(variable, comparison, literal) => {
            let holds: &(dyn Fn(Value<'_>) -> bool + Sync) =
                &|value| compare(value, *comparison, literal);
            let Some(x) = literal_number(literal) else {
                return condition(frame, variable, span, holds);
            };
            let pass = CompareTo {
                comparison: *comparison,
                x,
                otherwise: Condition(holds),
            };
            column(frame, variable, span, pass)
        }
        Predicate::In(variable, literals) => {
            condition(frame, variable, span, &|value| is_one_of(value, literals))
        }
        Predicate::Text(variable, test, needle) => {
            condition(frame, variable, span, &|value| passes(value, *test, needle))
        }
        Predicate::IsTrue(variable) => condition(frame, variable, span, &is_true),
        Predicate::Has(variable) => condition(frame, variable, span, &is_present),
    }
}

/// One customer's value of a variable, as a condition sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value<'v> {
    /// No value.
    Absent,
    /// A number (ints are exact in a double up to 2^53).
    Number(f64),
    /// A string, or an enum's name.
    Text(&'v str),
    /// A bool.
    Bool(bool),
}

/// Whether a value equals one of `literals`: the test of `in`.
pub(crate) fn is_one_of(value: Value<'_>, literals: &[Literal]) -> bool {
    literals
        .iter()
        .any(|literal| compare(value, Comparison::Eq, literal))
}

/// Whether a value is a string that passes a string test.
pub(crate) fn passes(value: Value<'_>, test: StringTest, needle: &str) -> bool {
    match value {
        Value::Text(text) => match test {
            StringTest::StartsWith => text.starts_with(needle),
            StringTest::EndsWith => text.ends_with(needle),
            StringTest::Contains => text.contains(needle),
        },
        _ => false,
    }
}

/// The test of a bool variable used as a condition.
pub(crate) fn is_true(value: Value<'_>) -> bool {
    matches!(value, Value::Bool(true))
}

/// The test of `has()`.
pub(crate) fn is_present(value: Value<'_>) -> bool {
    value != Value::Absent
}

pub(crate) fn compare(value: Value<'_>, comparison: Comparison, literal: &Literal) -> bool {
    use std::cmp::Ordering;
    let ordering = match (value, literal) {
        (Value::Number(x), Literal::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Value::Number(x), Literal::Double(y)) => x.partial_cmp(y),
        (Value::Text(x), Literal::String(y)) => Some(x.cmp(y.as_str())),
        (Value::Bool(x), Literal::Bool(y)) => Some(x.cmp(y)),
        (Value::Text(x), enum_literal) => enum_name(enum_literal).map(|name| x.cmp(name)),
        _ => None,
    };
    let Some(ordering) = ordering else {
        // Absent values and values of another type meet no comparison.
        return false;
    };
    match comparison {
        Comparison::Eq => ordering == Ordering::Equal,
        Comparison::Ne => ordering != Ordering::Equal,
        Comparison::Lt => ordering == Ordering::Less,
        Comparison::Le => ordering != Ordering::Greater,
        Comparison::Gt => ordering == Ordering::Greater,
        Comparison::Ge => ordering != Ordering::Less,
    }
}

fn enum_name(literal: &Literal) -> Option<&'static str> {
    Some(match literal {
        Literal::Relationship(value) => value.name(),
        Literal::Party(value) => value.name(),
        Literal::Gender(value) => value.name(),
        Literal::AgeBand(value) => value.name(),
        Literal::IncomeBand(value) => value.name(),
        Literal::Consent(value) => value.name(),
        Literal::Frequency(value) => value.name(),
        Literal::Stage(value) => value.name(),
        Literal::RfmSegment(value) => value.name(),
        Literal::PAliveBand(value) => value.name(),
        Literal::Int(_) | Literal::Double(_) | Literal::String(_) | Literal::Bool(_) => {
            return None
        }
    })
}

/// The rows of `span` whose value of `variable` meets `holds`, in one pass
/// over the variable's column.
fn condition(
    frame: &Frame<'_>,
    variable: &Variable,
    span: &Span,
    holds: &(dyn Fn(Value<'_>) -> bool + Sync),
) -> Bits {
    column(frame, variable, span, Condition(holds))
}

/// A number literal as a double.
fn literal_number(literal: &Literal) -> Option<f64> {
    match literal {
        Literal::Int(value) => Some(*value as f64),
        Literal::Double(value) => Some(*value),
        _ => None,
    }
}

/// The codes of a breakdown dimension, one per row of `span`: a string, an
/// enum or a trait (see `Dimension` for the other variables).
pub fn dimension_codes<'f>(
    frame: &'f Frame<'_>,
    span: &'f Span,
    dimension: &Variable,
) -> Coded<'f> {
    column(frame, dimension, span, Dimension)
}

/// Whether a breakdown reads a dimension's codes over the whole index
/// rather than a block at a time: a dictionary's codes are the index's own
/// column, read in place at no cost, and a trait's are numbered in the
/// order its values are met, which a block alone could not keep. Every
/// other dimension's values are named the same whatever the span.
pub fn dimension_is_whole(dimension: &Variable) -> bool {
    matches!(
        dimension,
        Variable::Trait(_)
            | Variable::Country
            | Variable::Region
            | Variable::City
            | Variable::Language
    )
}

/// The values of one trait: the rows that hold it, and what they hold.
type TraitValues = HashMap<u32, TraitValue, RandomState>;

/// What to make of a variable's column over a span of rows. [`column()`]
/// calls the one method that fits the variable, once per condition, with
/// `rows` the span's length and each row numbered from the span's start. A
/// number column comes as a reader of each row whose type is the
/// variable's own, so each number loop is compiled for its variable, with
/// nothing materialised and no call per row.
trait ColumnPass<'f> {
    /// What the pass makes of the column.
    type Output;

    /// A string or an enum: one code per row.
    fn coded(self, rows: usize, coded: Coded<'f>) -> Self::Output;

    /// A trait: the values of the rows that hold it (`None` when no row
    /// does), by row number in the whole index, of which only those in
    /// `span` count; absent in the other rows.
    fn traits(self, span: Range<usize>, values: Option<&'f TraitValues>) -> Self::Output;

    /// A number, each row read by `value`: NaN where absent. Ints are
    /// exact in a double up to 2^53.
    fn numbers<G: Fn(usize) -> f64 + Sync>(self, rows: usize, value: G) -> Self::Output;

    /// An amount in minor units, one per row of the span: a number, each
    /// row's value `minor as f64 / 100.0` ([`major`]), absent where the row
    /// holds `absent`.
    fn minor_units(self, rows: usize, values: &'f [i64], absent: Option<i64>) -> Self::Output
    where
        Self: Sized,
    {
        self.numbers(rows, |place| {
            let minor = values[place];
            if Some(minor) == absent {
                f64::NAN
            } else {
                major(minor)
            }
        })
    }

    /// A count, one per row of the span: a number, each row's value the
    /// count itself; never absent.
    fn counts(self, rows: usize, values: &'f [u32]) -> Self::Output
    where
        Self: Sized,
    {
        self.numbers(rows, |place| f64::from(values[place]))
    }

    /// A score from 1 up, one per row of the span: a number, each row's
    /// value the score itself, absent where it is 0.
    fn scores(self, rows: usize, values: &'f [u8]) -> Self::Output
    where
        Self: Sized,
    {
        self.numbers(rows, |place| match values[place] {
            0 => f64::NAN,
            score => f64::from(score),
        })
    }

    /// An RFM score, one per row of the span: `grade(figure)`, from 1 up
    /// and never falling as the figure grows, for the rows `buyers`
    /// holds, absent for the others; `domain` holds every figure. `made`
    /// gives the scores themselves, which is all a pass reads unless it
    /// has a better way.
    fn graded<V: Copy + Into<i64> + Sync>(
        self,
        figures: &'f [V],
        domain: Range<i128>,
        buyers: Buyers<'f>,
        grade: impl Fn(i64) -> u8,
        made: impl FnOnce() -> &'f [u8],
    ) -> Self::Output
    where
        Self: Sized,
    {
        let _ = (domain, buyers, grade);
        self.scores(figures.len(), made())
    }

    /// A bool, one per row.
    fn bools(self, rows: usize, values: &'f [bool]) -> Self::Output;
}

/// The rows of a span with a purchase: alive, and a count above 0.
struct Buyers<'f> {
    alive: &'f [bool],
    count: &'f [u32],
}

impl Buyers<'_> {
    fn bits(&self) -> Bits {
        let (alive, count) = (self.alive, self.count);
        Bits::from_fn(alive.len(), |place| alive[place] & (count[place] > 0))
    }
}

/// An amount in minor units as a rule reads it, in major units (a currency
/// with two decimals). It never falls as the amount grows: a conversion to
/// the nearest double and a division by a positive number both keep order.
fn major(minor: i64) -> f64 {
    minor as f64 / 100.0
}

/// The least amount in minor units whose [`major`] value meets `holds`,
/// which is false up to some value and true from it on; `i64::MAX + 1`
/// when no amount's does. A binary search over every `i64`, so at most 64
/// tries of `holds`.
fn least_minor(holds: impl Fn(f64) -> bool) -> i128 {
    least_in(
        i128::from(i64::MIN)..i128::from(i64::MAX) + 1,
        |minor| major(minor as i64),
        holds,
    )
}

/// The least integer of `range` whose `number` meets `holds`, where
/// `number` never falls as the integer grows and `holds` is false up to
/// some number and true from it on; `range.end` when none does. A binary
/// search.
fn least_in(range: Range<i128>, number: impl Fn(i128) -> f64, holds: impl Fn(f64) -> bool) -> i128 {
    let (mut low, mut high) = (range.start, range.end);
    // Every integer below `low` fails; `high` holds, or is past the last.
    while low < high {
        let middle = low + (high - low) / 2;
        if holds(number(middle)) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    low
}

/// Runs `pass` over the rows of `span` in the column of `variable`: the
/// one place that says which column each variable reads, and as what.
/// Every variable is matched by name, with no catch-all arm, so that a
/// variable added to the table does not compile until it is given its
/// column here. Every column of the whole index that the pass reads (a
/// class, a score, a prediction, or what a block makes its own from) is
/// made before any row is read, even over no rows.
fn column<'f, P: ColumnPass<'f>>(
    frame: &'f Frame<'_>,
    variable: &Variable,
    span: &'f Span,
    pass: P,
) -> P::Output {
    use crate::domain::features::{AgeBand, EngagementStage, FrequencyClass, IncomeBand};
    use crate::domain::{Gender, Party, Relationship};
    let rows = span.len();
    let start = span.rows.start;
    let columns = frame.index.columns();
    let dictionaries = frame.index.dictionaries();
    let dictionary = |codes: &'f [u32], names: &[compact_str::CompactString]| Coded {
        codes: Codes::Wide(Cow::Borrowed(&codes[span.rows.clone()])),
        names: names.iter().map(|name| name.to_string()).collect(),
    };
    let narrow = |codes: &'f [u8], names: &[&str]| Coded {
        codes: Codes::Narrow(Cow::Borrowed(codes)),
        names: enum_names(names),
    };
    let rfm = |pass: P, score: Score| {
        // What a block reads is made before it, even for no rows.
        let (bounds, count) = (frame.rfm_bounds(), frame.count());
        let (last, total) = (frame.last(), frame.total());
        let made = || span.rfm(frame, score);
        let Some(bounds) = bounds else {
            return pass.scores(rows, made());
        };
        let buyers = Buyers {
            alive: &columns.alive[span.rows.clone()],
            count: &count[span.rows.clone()],
        };
        let at = frame.at;
        let every_i64 = i128::from(i64::MIN)..i128::from(i64::MAX) + 1;
        match score {
            Score::R => pass.graded(
                &last[span.rows.clone()],
                every_i64,
                buyers,
                |last| bounds.r(at, last),
                made,
            ),
            Score::F => pass.graded(
                &count[span.rows.clone()],
                0..i128::from(u32::MAX) + 1,
                buyers,
                // Within the `u32`s, by the range above.
                |count| bounds.f(count as u32),
                made,
            ),
            Score::M => pass.graded(
                &total[span.rows.clone()],
                every_i64,
                buyers,
                |total| bounds.m(total),
                made,
            ),
        }
    };
    let predicted = |pass: P, what: Predicted| {
        let values = frame.predicted(what);
        pass.numbers(rows, shifted(start, |row| values[row]))
    };
    match variable {
        Variable::Relationship => pass.coded(
            rows,
            enum_column(
                &columns.relationship[span.rows.clone()],
                Relationship::NAMES,
                |&value| value.ordinal(),
            ),
        ),
        Variable::Party => pass.coded(
            rows,
            enum_column(&columns.party[span.rows.clone()], Party::NAMES, |&value| {
                value.ordinal()
            }),
        ),
        Variable::Age => pass.numbers(
            rows,
            shifted(start, |row| frame.age(row).map_or(f64::NAN, f64::from)),
        ),
        Variable::AgeBand => pass.coded(
            rows,
            Coded {
                codes: Codes::Narrow(Cow::Owned(frame.age_band_codes_of(span.rows.clone()))),
                names: enum_names(AgeBand::NAMES),
            },
        ),
        Variable::Gender => pass.coded(
            rows,
            enum_column(
                &columns.gender[span.rows.clone()],
                Gender::NAMES,
                |&value| value.ordinal(),
            ),
        ),
        Variable::Country => pass.coded(
            rows,
            dictionary(&columns.country, dictionaries.country.names()),
        ),
        Variable::Region => pass.coded(
            rows,
            dictionary(&columns.region, dictionaries.region.names()),
        ),
        Variable::City => pass.coded(rows, dictionary(&columns.city, dictionaries.city.names())),
        Variable::Language => pass.coded(
            rows,
            dictionary(&columns.language, dictionaries.language.names()),
        ),
        Variable::Income => {
            pass.minor_units(rows, &columns.income[span.rows.clone()], Some(i64::MIN))
        }
        Variable::IncomeBand => pass.coded(
            rows,
            enum_codes(
                span.rows.clone(),
                IncomeBand::NAMES,
                IncomeBand::ordinal,
                |row| Some(frame.income_band(row)),
            ),
        ),
        Variable::Trait(key) => pass.traits(span.rows.clone(), frame.index.trait_values(key)),
        Variable::Consent(channel) => pass.coded(
            rows,
            enum_column(
                &columns.consent[span.rows.clone()],
                ConsentStatus::NAMES,
                |consent| channel_status(consent, *channel).ordinal(),
            ),
        ),
        Variable::ObjectsToProfiling => pass.bools(rows, &columns.objects[span.rows.clone()]),
        Variable::Frequency => {
            pass.coded(rows, narrow(span.frequency(frame), FrequencyClass::NAMES))
        }
        Variable::Stage => pass.coded(rows, narrow(span.stage(frame), EngagementStage::NAMES)),
        Variable::PurchaseCount => pass.counts(rows, &frame.count()[span.rows.clone()]),
        Variable::Purchases90d => pass.counts(rows, &frame.in_90_days()[span.rows.clone()]),
        Variable::Purchases365d => pass.counts(rows, &frame.in_365_days()[span.rows.clone()]),
        Variable::TotalSpend => pass.minor_units(rows, &frame.total()[span.rows.clone()], None),
        Variable::AvgOrderValue => {
            let (count, total) = (frame.count(), frame.total());
            pass.numbers(
                rows,
                shifted(start, |row| {
                    if count[row] == 0 {
                        return f64::NAN;
                    }
                    let n = i128::from(count[row]);
                    let average = (2 * i128::from(total[row]) + n) / (2 * n);
                    average as f64 / 100.0
                }),
            )
        }
        Variable::RecencyDays => {
            let count = frame.count();
            pass.numbers(
                rows,
                shifted(start, |row| {
                    if count[row] == 0 {
                        f64::NAN
                    } else {
                        frame.recency_days(row) as f64
                    }
                }),
            )
        }
        Variable::MeanGapDays => {
            let (count, first, last) = (frame.count(), frame.first(), frame.last());
            pass.numbers(
                rows,
                shifted(start, |row| {
                    if count[row] < 2 {
                        return f64::NAN;
                    }
                    last[row].abs_diff(first[row]) as f64
                        / crate::domain::features::NANOS_PER_DAY as f64
                        / f64::from(count[row] - 1)
                }),
            )
        }
        Variable::RfmR => rfm(pass, Score::R),
        Variable::RfmF => rfm(pass, Score::F),
        Variable::RfmM => rfm(pass, Score::M),
        Variable::RfmSegment => {
            // The scores made before the pass that reads them row by row:
            // a column made inside a parallel pass over rows could be
            // asked for again, by a task the thread making it took on.
            frame.rfm(Score::R);
            frame.rfm(Score::F);
            pass.coded(
                rows,
                enum_codes(
                    span.rows.clone(),
                    RfmSegment::NAMES,
                    RfmSegment::ordinal,
                    |row| frame.rfm_segment(row),
                ),
            )
        }
        Variable::PAlive => predicted(pass, Predicted::PAlive),
        Variable::PAliveBand => {
            // Made before the pass, as the scores above.
            frame.predicted(Predicted::PAlive);
            pass.coded(
                rows,
                enum_codes(
                    span.rows.clone(),
                    PAliveBand::NAMES,
                    PAliveBand::ordinal,
                    |row| frame.p_alive_band(row),
                ),
            )
        }
        Variable::ExpectedPurchases90d => predicted(pass, Predicted::Purchases90d),
        Variable::ExpectedPurchases365d => predicted(pass, Predicted::Purchases365d),
        Variable::ExpectedOrderValue => predicted(pass, Predicted::OrderValue),
        Variable::Clv365d => predicted(pass, Predicted::Clv),
    }
}

/// The rows whose value meets a condition.
struct Condition<'h>(&'h (dyn Fn(Value<'_>) -> bool + Sync));

impl<'f> ColumnPass<'f> for Condition<'_> {
    type Output = Bits;

    fn coded(self, rows: usize, coded: Coded<'f>) -> Bits {
        let holds = self.0;
        // Decide once per distinct value, then look each row up.
        let decided: Vec<bool> = coded
            .names
            .iter()
            .enumerate()
            .map(|(code, name)| {
                if code == 0 {
                    holds(Value::Absent)
                } else {
                    holds(Value::Text(name))
                }
            })
            .collect();
        match &coded.codes {
            Codes::Narrow(codes) => {
                // A few codes that hold, or a few that do not, are compared
                // with each row's code many rows at a time.
                let (holding, failing): (Vec<u8>, Vec<u8>) = (0..=u8::MAX)
                    .take(decided.len())
                    .partition(|&code| decided[usize::from(code)]);
                if holding.len() <= FEW_CODES {
                    Bits::of_codes(&codes[..rows], &holding, false)
                } else if failing.len() <= FEW_CODES {
                    Bits::of_codes(&codes[..rows], &failing, true)
                } else {
                    Bits::from_values(&codes[..rows], |&code| decided[usize::from(code)])
                }
            }
            Codes::Wide(codes) => Bits::from_values(&codes[..rows], |&code| decided[code as usize]),
        }
    }

    fn traits(self, span: Range<usize>, values: Option<&'f TraitValues>) -> Bits {
        let holds = self.0;
        // Every row as absent, then the rows that hold the trait.
        let absent = holds(Value::Absent);
        let mut bits = Bits::filled(span.len(), absent);
        for (row, value) in in_span(values, &span) {
            let value = match value {
                TraitValue::String(text) => Value::Text(text),
                TraitValue::Number(number) => Value::Number(*number),
                TraitValue::Bool(flag) => Value::Bool(*flag),
            };
            match (holds(value), absent) {
                (true, false) => bits.set(row),
                (false, true) => bits.clear(row),
                _ => {}
            }
        }
        bits
    }

    fn numbers<G: Fn(usize) -> f64 + Sync>(self, rows: usize, value: G) -> Bits {
        let holds = self.0;
        Bits::from_fn(rows, |row| {
            let value = value(row);
            holds(if value.is_nan() {
                Value::Absent
            } else {
                Value::Number(value)
            })
        })
    }

    fn bools(self, rows: usize, values: &'f [bool]) -> Bits {
        let holds = self.0;
        debug_assert_eq!(values.len(), rows);
        Bits::from_values(values, |&value| holds(Value::Bool(value)))
    }
}

/// `value op x`, compared in the loop made for a number column; NaN
/// (absent) meets no comparison, `!=` included. On any other column the
/// same comparison is `otherwise`: a trait, whose values may be numbers;
/// a string, an enum or a bool only if the compiler had let a number
/// literal through for one, which it refuses, and then no row meets it.
struct CompareTo<'h> {
    /// The operator.
    comparison: Comparison,
    /// The number compared with.
    x: f64,
    /// The comparison as a condition on any value.
    otherwise: Condition<'h>,
}

impl<'f> ColumnPass<'f> for CompareTo<'_> {
    type Output = Bits;

    fn coded(self, rows: usize, coded: Coded<'f>) -> Bits {
        self.otherwise.coded(rows, coded)
    }

    fn traits(self, span: Range<usize>, values: Option<&'f TraitValues>) -> Bits {
        self.otherwise.traits(span, values)
    }

    fn numbers<G: Fn(usize) -> f64 + Sync>(self, rows: usize, value: G) -> Bits {
        let x = self.x;
        match self.comparison {
            Comparison::Eq => Bits::from_fn(rows, |row| value(row) == x),
            Comparison::Ne => Bits::from_fn(rows, |row| {
                let value = value(row);
                !value.is_nan() && value != x
            }),
            Comparison::Lt => Bits::from_fn(rows, |row| value(row) < x),
            Comparison::Le => Bits::from_fn(rows, |row| value(row) <= x),
            Comparison::Gt => Bits::from_fn(rows, |row| value(row) > x),
            Comparison::Ge => Bits::from_fn(rows, |row| value(row) >= x),
        }
    }

    /// The comparison of each row's [`major`] value with x made a
    /// comparison of its amount with the least amounts whose value is at
    /// least x, and more than x ([`least_minor`]): the same answer, with no
    /// division per row.
    fn minor_units(self, rows: usize, values: &'f [i64], absent: Option<i64>) -> Bits {
        let (low, high, inside) =
            self.interval(|holds| least_minor(holds), i128::from(i64::MAX) + 1);
        let meets = |minor: i64| {
            let minor = i128::from(minor);
            (low <= minor && minor < high) == inside
        };
        debug_assert_eq!(values.len(), rows);
        match absent {
            Some(absent) => Bits::from_values(values, |&minor| minor != absent && meets(minor)),
            None => Bits::from_values(values, |&minor| meets(minor)),
        }
    }

    /// The comparison of each count with x made a comparison with the
    /// least counts whose value is at least x, and more than x, as for
    /// amounts: no conversion per row.
    fn counts(self, rows: usize, values: &'f [u32]) -> Bits {
        let past = i128::from(u32::MAX) + 1;
        let (low, high, inside) =
            self.interval(|holds| least_in(0..past, |count| count as f64, holds), past);
        debug_assert_eq!(values.len(), rows);
        // Both within 0..=2^32: `low..high` is empty, every count, or a
        // range of counts that a wrapping subtraction and one comparison
        // of 32 bits tell apart, many rows to an instruction.
        if low >= high {
            return Bits::filled(rows, !inside);
        }
        if high - low == past {
            return Bits::filled(rows, inside);
        }
        let (low, width) = (low as u32, (high - low) as u32);
        Bits::from_values(values, |&count| (count.wrapping_sub(low) < width) == inside)
    }

    /// The comparison of each score with x made a comparison with the
    /// least scores whose value is at least x, and more than x, as for
    /// counts; a score of 0, absent, meets none.
    fn scores(self, rows: usize, values: &'f [u8]) -> Bits {
        let past = i128::from(u8::MAX) + 1;
        let (low, high, inside) =
            self.interval(|holds| least_in(1..past, |score| score as f64, holds), past);
        // Both within 1..=256.
        let (low, high) = (low as u16, high as u16);
        debug_assert_eq!(values.len(), rows);
        Bits::from_values(values, |&score| {
            let score = u16::from(score);
            score != 0 && (low <= score && score < high) == inside
        })
    }

    /// The comparison of each score with x made a comparison of the
    /// figure it grades with the least figures whose score is at least
    /// x, and more than x: no score is worked out.
    fn graded<V: Copy + Into<i64> + Sync>(
        self,
        figures: &'f [V],
        domain: Range<i128>,
        buyers: Buyers<'f>,
        grade: impl Fn(i64) -> u8,
        _made: impl FnOnce() -> &'f [u8],
    ) -> Bits {
        let rows = figures.len();
        let (first, past) = (domain.start, domain.end);
        let (low, high, inside) = self.interval(
            |holds| {
                least_in(
                    domain.clone(),
                    |figure| f64::from(grade(figure as i64)),
                    holds,
                )
            },
            past,
        );
        let meets = if low >= high {
            Bits::filled(rows, !inside)
        } else if low == first && high == past {
            Bits::filled(rows, inside)
        } else {
            // `low..high` lies within the `i64`s and is not all of them: a
            // wrapping subtraction and one comparison tell it apart.
            let (low, width) = (low as i64, (high - low) as u64);
            Bits::from_values(figures, |&figure| {
                ((figure.into().wrapping_sub(low) as u64) < width) == inside
            })
        };
        let mut bits = buyers.bits();
        bits.and(&meets);
        bits
    }

    fn bools(self, rows: usize, values: &'f [bool]) -> Bits {
        self.otherwise.bools(rows, values)
    }
}

impl CompareTo<'_> {
    /// Where the integers whose value meets the comparison lie, for
    /// integers whose value never falls as they grow: those in
    /// `low..high` meet it when `inside`, the others when not. `least`
    /// finds the least integer whose value meets a test that is false up
    /// to some value and true from it on, or `past`, the end of the
    /// integers, when none does.
    fn interval(
        &self,
        least: impl Fn(&dyn Fn(f64) -> bool) -> i128,
        past: i128,
    ) -> (i128, i128, bool) {
        let x = self.x;
        let at_least = least(&|value| value >= x);
        let more = least(&|value| value > x);
        match self.comparison {
            // Nothing is less than NaN, though nothing is at least NaN.
            Comparison::Lt | Comparison::Le if x.is_nan() => (past, past, true),
            Comparison::Ge => (at_least, past, true),
            Comparison::Gt => (more, past, true),
            Comparison::Lt => (at_least, past, false),
            Comparison::Le => (more, past, false),
            Comparison::Eq => (at_least, more, true),
            Comparison::Ne => (at_least, more, false),
        }
    }
}

/// The codes of a breakdown dimension. Only strings, enums and traits are
/// dimensions: `is_dimension` keeps numbers and bools out of a breakdown
/// before it runs. Were one given, every customer would fall in its one
/// group, absent.
struct Dimension;

impl<'f> ColumnPass<'f> for Dimension {
    type Output = Coded<'f>;

    fn coded(self, _rows: usize, coded: Coded<'f>) -> Coded<'f> {
        coded
    }

    fn traits(self, span: Range<usize>, values: Option<&'f TraitValues>) -> Coded<'f> {
        // A code per distinct value, as text, in the order first met.
        let mut codes = vec![0u32; span.len()];
        let mut names = vec![String::new()];
        let mut numbers = HashMap::new();
        for (row, value) in in_span(values, &span) {
            let name = match value {
                TraitValue::String(text) => text.clone(),
                TraitValue::Number(number) => number.to_string(),
                TraitValue::Bool(flag) => flag.to_string(),
            };
            let next = names.len() as u32;
            let code = *numbers.entry(name.clone()).or_insert_with(|| {
                names.push(name);
                next
            });
            codes[row] = code;
        }
        Coded {
            codes: Codes::Wide(Cow::Owned(codes)),
            names,
        }
    }

    fn numbers<G: Fn(usize) -> f64 + Sync>(self, rows: usize, _value: G) -> Coded<'f> {
        everyone_absent(rows)
    }

    fn bools(self, rows: usize, _values: &'f [bool]) -> Coded<'f> {
        everyone_absent(rows)
    }
}

/// A coded column in which every row is absent.
fn everyone_absent<'f>(rows: usize) -> Coded<'f> {
    Coded {
        codes: Codes::Narrow(vec![0; rows].into()),
        names: vec![String::new()],
    }
}
/// One small number per row that names its value; 0 stands for absent.
#[derive(Debug)]
pub enum Codes<'a> {
    /// Up to 255 values, such as an enum's.
    Narrow(Cow<'a, [u8]>),
    /// Dictionary numbers.
    Wide(Cow<'a, [u32]>),
}

/// A coded column and the value of each code: `names[0]` is the empty
/// string and stands for absent.
#[derive(Debug)]
pub struct Coded<'a> {
    /// The code of each row.
    pub codes: Codes<'a>,
    /// The value of each code.
    pub names: Vec<String>,
}

fn enum_names(names: &[&str]) -> Vec<String> {
    std::iter::once("")
        .chain(names.iter().copied())
        .map(str::to_owned)
        .collect()
}

/// The codes of an enum over the rows of `span`, each row's value given
/// by its number in the whole index.
fn enum_codes<'a, T: Copy>(
    span: Range<usize>,
    names: &[&str],
    ordinal: impl Fn(T) -> u8 + Sync,
    value: impl Fn(usize) -> Option<T> + Sync,
) -> Coded<'a> {
    let code = |row| value(row).map_or(0, |v| ordinal(v) + 1);
    // A span of one task's rows, such as a block of the persona pass, is
    // coded where it is asked for.
    let codes = if span.len() <= WORDS_PER_TASK * 64 {
        span.map(code).collect()
    } else {
        span.into_par_iter().map(code).collect()
    };
    Coded {
        codes: Codes::Narrow(Cow::Owned(codes)),
        names: enum_names(names),
    }
}

/// The codes of an enum kept in a column, from the values of a span's rows:
/// `ordinal` of each, plus one. The values are read from a slice, with no
/// bounds check per row.
fn enum_column<'a, T: Sync>(
    values: &[T],
    names: &[&str],
    ordinal: impl Fn(&T) -> u8 + Sync,
) -> Coded<'a> {
    let code = |value: &T| ordinal(value) + 1;
    // A span of one task's rows, such as a block's, is coded where it is
    // asked for.
    let codes = if values.len() <= WORDS_PER_TASK * 64 {
        values.iter().map(code).collect()
    } else {
        values.par_iter().map(code).collect()
    };
    Coded {
        codes: Codes::Narrow(Cow::Owned(codes)),
        names: enum_names(names),
    }
}

/// A reader of the rows of a span by their place in it, from a reader by
/// row number.
fn shifted(start: usize, value: impl Fn(usize) -> f64 + Sync) -> impl Fn(usize) -> f64 + Sync {
    move |place| value(start + place)
}

/// The values of a trait held by rows of `span`, each with its place in
/// the span.
fn in_span<'v>(
    values: Option<&'v TraitValues>,
    span: &Range<usize>,
) -> impl Iterator<Item = (usize, &'v TraitValue)> + 'v {
    let span = span.clone();
    values
        .into_iter()
        .flatten()
        .filter_map(move |(&row, value)| {
            let row = row as usize;
            span.contains(&row).then(|| (row - span.start, value))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every comparison operator.
    const EVERY_COMPARISON: [Comparison; 6] = [
        Comparison::Eq,
        Comparison::Ne,
        Comparison::Lt,
        Comparison::Le,
        Comparison::Gt,
        Comparison::Ge,
    ];

    /// A comparison of amounts in minor units by their least amounts gives
    /// the rows that dividing each amount gives, for every operator, with
    /// and without an absent amount, at fractions of a cent, at the ends of
    /// the `i64`s, past the doubles' exact integers, and with infinite and
    /// NaN limits.
    #[test]
    fn amounts_compare_as_their_division_does() {
        let mut amounts: Vec<i64> = vec![i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1, -1, 0, 1];
        for base in [
            5_000_000i64,
            -5_000_000,
            1 << 53,
            (1 << 53) + 1,
            1 << 60,
            -(1 << 60),
            3,
        ] {
            amounts.extend((-40..=40).map(|step| base.saturating_add(step)));
        }
        let limits = [
            50_000.0,
            50_000.005,
            49_999.995,
            -0.01,
            0.0,
            -0.0,
            0.1 + 0.2,
            (1u64 << 53) as f64 / 100.0,
            9.2e16,
            -9.2e16,
            1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        let nothing = |_: Value<'_>| false;
        for x in limits {
            for comparison in EVERY_COMPARISON {
                let pass = || CompareTo {
                    comparison,
                    x,
                    otherwise: Condition(&nothing),
                };
                for absent in [None, Some(i64::MIN)] {
                    let divided = pass().numbers(amounts.len(), |place| {
                        let minor = amounts[place];
                        if Some(minor) == absent {
                            f64::NAN
                        } else {
                            minor as f64 / 100.0
                        }
                    });
                    let compared = pass().minor_units(amounts.len(), &amounts, absent);
                    for (place, minor) in amounts.iter().enumerate() {
                        assert_eq!(
                            compared.contains(place),
                            divided.contains(place),
                            "{minor} {comparison:?} {x}, absent {absent:?}"
                        );
                    }
                }
            }
        }
    }

    /// A count or a score compared as an integer meets a comparison
    /// exactly when its double does (a score of 0 being absent), for every
    /// operator, at and between whole numbers, at both ends of the
    /// integers and past them, and at the infinities and NaN.
    #[test]
    fn counts_and_scores_compare_as_their_doubles_do() {
        let mut counts: Vec<u32> = (0..=12).collect();
        counts.extend([u32::MAX, u32::MAX - 1, 1 << 31, (1 << 31) - 1]);
        let scores: Vec<u8> = (0..=7).chain([254, 255]).collect();
        let limits = [
            2.0,
            1.5,
            0.0,
            -0.0,
            -1.0,
            0.5,
            12.0,
            5.0,
            4.5,
            255.0,
            256.0,
            u32::MAX as f64,
            u32::MAX as f64 - 0.5,
            u32::MAX as f64 + 1.0,
            1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        let nothing = |_: Value<'_>| false;
        for x in limits {
            for comparison in EVERY_COMPARISON {
                let pass = || CompareTo {
                    comparison,
                    x,
                    otherwise: Condition(&nothing),
                };
                let doubles = pass().numbers(counts.len(), |place| f64::from(counts[place]));
                let compared = pass().counts(counts.len(), &counts);
                for (place, count) in counts.iter().enumerate() {
                    assert_eq!(
                        compared.contains(place),
                        doubles.contains(place),
                        "{count} {comparison:?} {x}"
                    );
                }
                // Scores: 0 is absent.
                let doubles = pass().numbers(scores.len(), |place| match scores[place] {
                    0 => f64::NAN,
                    score => f64::from(score),
                });
                let compared = pass().scores(scores.len(), &scores);
                for (place, score) in scores.iter().enumerate() {
                    assert_eq!(
                        compared.contains(place),
                        doubles.contains(place),
                        "score {score} {comparison:?} {x}"
                    );
                }
            }
        }
    }

    /// A comparison of an RFM score made a comparison of the figure it
    /// grades (last purchase, count, spend) meets it for the rows the
    /// scores themselves do, for every operator and limit, with rows
    /// without a purchase or deleted, and figures at the ends of their
    /// types.
    #[test]
    fn scores_compare_as_the_figures_they_grade() {
        use super::super::rfm::RfmBounds;
        use crate::domain::features::NANOS_PER_DAY;
        let day = NANOS_PER_DAY;
        let at = 20_000 * day;
        let buyers = 300;
        let mut last: Vec<i64> = (0..buyers).map(|n| at - (n * 37 % 400) * day - n).collect();
        let mut count: Vec<u32> = (0..buyers).map(|n| (n * 7 % 23) as u32 + 1).collect();
        let mut total: Vec<i64> = (0..buyers).map(|n| n * 7_919 % 100_000 - 500).collect();
        let bounds = RfmBounds::from_figures(last.clone(), count.clone(), total.clone()).unwrap();
        last.extend([i64::MIN, i64::MAX, 0, at, at + day, at - 399 * day]);
        count.extend([0, u32::MAX, 1, 0, 3, 2]);
        total.extend([i64::MIN, i64::MAX, 0, -1, 5, 99_499]);
        let rows = last.len();
        let alive: Vec<bool> = (0..rows).map(|row| row % 11 != 5).collect();
        let every_i64 = i128::from(i64::MIN)..i128::from(i64::MAX) + 1;
        let every_u32 = 0..i128::from(u32::MAX) + 1;
        let nothing = |_: Value<'_>| false;
        let made = |grade: &dyn Fn(usize) -> u8| -> Vec<u8> {
            (0..rows)
                .map(|row| {
                    if alive[row] && count[row] > 0 {
                        grade(row)
                    } else {
                        0
                    }
                })
                .collect()
        };
        let r = made(&|row| bounds.r(at, last[row]));
        let f = made(&|row| bounds.f(count[row]));
        let m = made(&|row| bounds.m(total[row]));
        // Every score is someone's.
        for scores in [&r, &f, &m] {
            assert!((1..=5).all(|score| scores.contains(&score)), "{scores:?}");
        }
        let limits = [
            0.0,
            1.0,
            1.5,
            2.0,
            3.0,
            4.0,
            4.5,
            5.0,
            6.0,
            -1.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        for x in limits {
            for comparison in EVERY_COMPARISON {
                let pass = || CompareTo {
                    comparison,
                    x,
                    otherwise: Condition(&nothing),
                };
                let buyers = || Buyers {
                    alive: &alive,
                    count: &count,
                };
                let graded = [
                    pass().graded(
                        &last,
                        every_i64.clone(),
                        buyers(),
                        |last| bounds.r(at, last),
                        || &r,
                    ),
                    pass().graded(
                        &count,
                        every_u32.clone(),
                        buyers(),
                        |count| bounds.f(count as u32),
                        || &f,
                    ),
                    pass().graded(
                        &total,
                        every_i64.clone(),
                        buyers(),
                        |total| bounds.m(total),
                        || &m,
                    ),
                ];
                for (graded, (name, scores)) in graded.iter().zip([("R", &r), ("F", &f), ("M", &m)])
                {
                    let expected = pass().scores(rows, scores);
                    for (row, score) in scores.iter().enumerate() {
                        assert_eq!(
                            graded.contains(row),
                            expected.contains(row),
                            "{name} of row {row}, score {score}, {comparison:?} {x}"
                        );
                    }
                }
            }
        }
    }

    /// A rule on an RFM score, decided a block at a time and over every
    /// row, holds for the rows whose score, as the frame makes it, meets
    /// it: now, when the index's figures count, and 60 days back, when
    /// the frame's own do.
    #[test]
    fn rules_on_scores_hold_where_the_frames_scores_do() {
        use crate::domain::features::{Thresholds, NANOS_PER_DAY};
        use crate::domain::rules::compile;
        use crate::domain::Timestamp;
        use crate::engine::testing::mixed_index;
        let day = NANOS_PER_DAY;
        let now = 20_000 * day;
        let rows = 40_000;
        let index = mixed_index(rows, now);
        for (at, current) in [(now + day, true), (now - 60 * day, false)] {
            let frame = Frame::new(&index, Timestamp::from_nanos(at), Thresholds::default());
            assert_eq!(frame.is_current(), current);
            for (name, score) in [("r", Score::R), ("f", Score::F), ("m", Score::M)] {
                let scores = frame.rfm(score).to_vec();
                // Several scores, so that each comparison splits the rows.
                assert!(
                    (1..=5).filter(|score| scores.contains(score)).count() >= 3,
                    "{name} at {at}"
                );
                for (operator, x) in [(">=", 4.0), ("<", 3.0), ("==", 3.0), ("!=", 5.0)] {
                    let rule =
                        compile(&format!("features.rfm.{name} {operator} {}", x as i64)).unwrap();
                    let holds = |score: u8| {
                        let score = f64::from(score);
                        score > 0.0
                            && match operator {
                                ">=" => score >= x,
                                "<" => score < x,
                                "==" => score == x,
                                _ => score != x,
                            }
                    };
                    let whole = eval(&frame, &rule, &Span::whole(&frame));
                    let blocks: Vec<Bits> = (0..rows)
                        .step_by(16_384)
                        .map(|start| {
                            eval(
                                &frame,
                                &rule,
                                &Span::block(start..(start + 16_384).min(rows)),
                            )
                        })
                        .collect();
                    for (row, &score) in scores.iter().enumerate() {
                        let expected = holds(score);
                        let context =
                            format!("{name} {operator} {x} at {at}, row {row}, score {score}");
                        assert_eq!(whole.contains(row), expected, "{context}");
                        assert_eq!(
                            blocks[row / 16_384].contains(row % 16_384),
                            expected,
                            "{context}"
                        );
                    }
                }
            }
        }
    }
}
