//! Evaluates compiled rules over a [`Frame`], a column at a time: each
//! condition is one pass over one array that yields a bit per customer,
//! and `&&`, `||` and `!` combine those bit sets a word at a time. A
//! condition on a string or enum is decided once per distinct value (per
//! dictionary entry), then looked up per customer.

use std::borrow::Cow;

use rayon::prelude::*;

use super::bits::Bits;
use super::frame::{Frame, Score};
use crate::domain::features::RfmSegment;
use crate::domain::rules::{Channel, Comparison, Literal, Predicate, StringTest, Variable};
use crate::domain::{ConsentStatus, TraitValue};

/// The customers a rule selects: the rows that hold a customer and meet it.
pub fn select(frame: &Frame<'_>, rule: &Predicate) -> Bits {
    let mut bits = eval(frame, rule);
    bits.and(frame.alive());
    bits
}

/// The rows among `within` that meet a rule; `within` holds only rows with
/// a customer.
pub fn select_within(frame: &Frame<'_>, rule: &Predicate, within: &Bits) -> Bits {
    if *rule == Predicate::Const(true) {
        return within.clone();
    }
    let mut bits = eval(frame, rule);
    bits.and(within);
    bits
}

/// Splits a selection into the members and the customers who object to
/// profiling, who are only ever counted.
pub fn split_objectors(frame: &Frame<'_>, selected: &Bits) -> (Bits, Bits) {
    let objects = &frame.index.columns().objects;
    let mut objectors = Bits::from_fn(frame.rows(), |row| objects[row]);
    objectors.and(selected);
    let mut members = selected.clone();
    members.and_not(&objectors);
    (members, objectors)
}

/// The rows that granted consent on a channel.
pub fn consented(frame: &Frame<'_>, channel: Channel) -> Bits {
    let consent = &frame.index.columns().consent;
    Bits::from_fn(frame.rows(), |row| {
        channel_status(&consent[row], channel) == ConsentStatus::Granted
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

fn eval(frame: &Frame<'_>, rule: &Predicate) -> Bits {
    let rows = frame.rows();
    match rule {
        Predicate::Const(value) => Bits::filled(rows, *value),
        Predicate::And(operands) => {
            let mut bits = Bits::filled(rows, true);
            for operand in operands {
                bits.and(&eval(frame, operand));
            }
            bits
        }
        Predicate::Or(operands) => {
            let mut bits = Bits::filled(rows, false);
            for operand in operands {
                bits.or(&eval(frame, operand));
            }
            bits
        }
        Predicate::Not(operand) => {
            let mut bits = eval(frame, operand);
            bits.not();
            bits
        }
        Predicate::Compare(variable, comparison, literal) => {
            if let Some(x) = literal_number(literal) {
                if let Some(bits) = numbers(frame, variable, &CompareTo(*comparison, x)) {
                    return bits;
                }
            }
            condition(frame, variable, &|value| {
                compare(value, *comparison, literal)
            })
        }
        Predicate::In(variable, literals) => {
            condition(frame, variable, &|value| is_one_of(value, literals))
        }
        Predicate::Text(variable, test, needle) => {
            condition(frame, variable, &|value| passes(value, *test, needle))
        }
        Predicate::IsTrue(variable) => condition(frame, variable, &is_true),
        Predicate::Has(variable) => condition(frame, variable, &is_present),
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
        Literal::Int(_) | Literal::Double(_) | Literal::String(_) | Literal::Bool(_) => {
            return None
        }
    })
}

/// The rows whose value of `variable` meets `holds`, in one pass over the
/// variable's column.
fn condition(
    frame: &Frame<'_>,
    variable: &Variable,
    holds: &(dyn Fn(Value<'_>) -> bool + Sync),
) -> Bits {
    let rows = frame.rows();
    if let Variable::Trait(key) = variable {
        let mut bits = Bits::filled(rows, false);
        let absent = holds(Value::Absent);
        if absent {
            bits.not();
        }
        if let Some(values) = frame.index.trait_values(key) {
            for (&row, value) in values {
                let value = match value {
                    TraitValue::String(text) => Value::Text(text),
                    TraitValue::Number(number) => Value::Number(*number),
                    TraitValue::Bool(flag) => Value::Bool(*flag),
                };
                match (holds(value), absent) {
                    (true, false) => bits.set(row as usize),
                    (false, true) => bits.clear(row as usize),
                    _ => {}
                }
            }
        }
        return bits;
    }
    if let Some(coded) = codes(frame, variable) {
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
        return match &coded.codes {
            Codes::Narrow(codes) => Bits::from_fn(rows, |row| decided[codes[row] as usize]),
            Codes::Wide(codes) => Bits::from_fn(rows, |row| decided[codes[row] as usize]),
        };
    }
    if let Some(bits) = numbers(frame, variable, &Holds(holds)) {
        return bits;
    }
    let columns = frame.index.columns();
    match variable {
        Variable::ObjectsToProfiling => {
            Bits::from_fn(rows, |row| holds(Value::Bool(columns.objects[row])))
        }
        // Coded or numbers above.
        _ => Bits::filled(rows, false),
    }
}

/// A number literal as a double.
fn literal_number(literal: &Literal) -> Option<f64> {
    match literal {
        Literal::Int(value) => Some(*value as f64),
        Literal::Double(value) => Some(*value),
        _ => None,
    }
}

/// What to do with a number column: given a way to read each row (NaN
/// where absent), make the bit set. Each variable's reader is its own
/// type, so every loop below is compiled for it, with nothing
/// materialised and no call per row.
trait NumberPass {
    fn pass<G: Fn(usize) -> f64 + Sync>(&self, rows: usize, value: G) -> Bits;
}

/// `value op x`; NaN (absent) meets no comparison, `!=` included.
struct CompareTo(Comparison, f64);

impl NumberPass for CompareTo {
    fn pass<G: Fn(usize) -> f64 + Sync>(&self, rows: usize, value: G) -> Bits {
        let x = self.1;
        match self.0 {
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
}

/// Any other condition on the value.
struct Holds<'h>(&'h (dyn Fn(Value<'_>) -> bool + Sync));

impl NumberPass for Holds<'_> {
    fn pass<G: Fn(usize) -> f64 + Sync>(&self, rows: usize, value: G) -> Bits {
        Bits::from_fn(rows, |row| {
            let value = value(row);
            (self.0)(if value.is_nan() {
                Value::Absent
            } else {
                Value::Number(value)
            })
        })
    }
}

/// Runs `pass` over the column of a number variable; `None` for other
/// variables. Ints are exact in a double up to 2^53.
fn numbers(frame: &Frame<'_>, variable: &Variable, pass: &impl NumberPass) -> Option<Bits> {
    let rows = frame.rows();
    let columns = frame.index.columns();
    let count = frame.count();
    Some(match variable {
        Variable::Age => pass.pass(rows, |row| frame.age(row).map_or(f64::NAN, f64::from)),
        Variable::Income => {
            let income = &columns.income;
            pass.pass(rows, |row| {
                let income = income[row];
                if income == i64::MIN {
                    f64::NAN
                } else {
                    income as f64 / 100.0
                }
            })
        }
        Variable::PurchaseCount => pass.pass(rows, |row| f64::from(count[row])),
        Variable::Purchases90d => {
            let window = frame.in_90_days();
            pass.pass(rows, |row| f64::from(window[row]))
        }
        Variable::Purchases365d => {
            let window = frame.in_365_days();
            pass.pass(rows, |row| f64::from(window[row]))
        }
        Variable::TotalSpend => {
            let total = frame.total();
            pass.pass(rows, |row| total[row] as f64 / 100.0)
        }
        Variable::AvgOrderValue => {
            let total = frame.total();
            pass.pass(rows, |row| {
                if count[row] == 0 {
                    return f64::NAN;
                }
                let n = i128::from(count[row]);
                let average = (2 * i128::from(total[row]) + n) / (2 * n);
                average as f64 / 100.0
            })
        }
        Variable::RecencyDays => pass.pass(rows, |row| {
            if count[row] == 0 {
                f64::NAN
            } else {
                frame.recency_days(row) as f64
            }
        }),
        Variable::MeanGapDays => {
            let (first, last) = (frame.first(), frame.last());
            pass.pass(rows, |row| {
                if count[row] < 2 {
                    return f64::NAN;
                }
                last[row].abs_diff(first[row]) as f64
                    / crate::domain::features::NANOS_PER_DAY as f64
                    / f64::from(count[row] - 1)
            })
        }
        Variable::RfmR | Variable::RfmF | Variable::RfmM => {
            let column = frame.rfm(match variable {
                Variable::RfmR => Score::R,
                Variable::RfmF => Score::F,
                _ => Score::M,
            });
            pass.pass(rows, |row| match column[row] {
                0 => f64::NAN,
                score => f64::from(score),
            })
        }
        _ => return None,
    })
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

fn enum_codes<'a, T: Copy>(
    rows: usize,
    names: &[&str],
    ordinal: impl Fn(T) -> u8 + Sync,
    value: impl Fn(usize) -> Option<T> + Sync,
) -> Coded<'a> {
    Coded {
        codes: Codes::Narrow(Cow::Owned(
            (0..rows)
                .into_par_iter()
                .map(|row| value(row).map_or(0, |v| ordinal(v) + 1))
                .collect(),
        )),
        names: enum_names(names),
    }
}

/// The coded column of a string, enum or trait variable; `None` for
/// numbers and bools.
pub fn codes<'f>(frame: &'f Frame<'_>, variable: &Variable) -> Option<Coded<'f>> {
    use crate::domain::features::{AgeBand, EngagementStage, FrequencyClass, IncomeBand};
    use crate::domain::{Gender, Party, Relationship};
    let rows = frame.rows();
    let columns = frame.index.columns();
    let dictionaries = frame.index.dictionaries();
    let dictionary = |codes: &'f [u32], names: &[compact_str::CompactString]| Coded {
        codes: Codes::Wide(Cow::Borrowed(codes)),
        names: names.iter().map(|name| name.to_string()).collect(),
    };
    Some(match variable {
        Variable::Country => dictionary(&columns.country, dictionaries.country.names()),
        Variable::Region => dictionary(&columns.region, dictionaries.region.names()),
        Variable::City => dictionary(&columns.city, dictionaries.city.names()),
        Variable::Language => dictionary(&columns.language, dictionaries.language.names()),
        Variable::Relationship => {
            enum_codes(rows, Relationship::NAMES, Relationship::ordinal, |row| {
                Some(columns.relationship[row])
            })
        }
        Variable::Party => enum_codes(rows, Party::NAMES, Party::ordinal, |row| {
            Some(columns.party[row])
        }),
        Variable::Gender => enum_codes(rows, Gender::NAMES, Gender::ordinal, |row| {
            Some(columns.gender[row])
        }),
        Variable::Consent(channel) => {
            enum_codes(rows, ConsentStatus::NAMES, ConsentStatus::ordinal, |row| {
                Some(channel_status(&columns.consent[row], *channel))
            })
        }
        Variable::AgeBand => enum_codes(rows, AgeBand::NAMES, AgeBand::ordinal, |row| {
            Some(frame.age_band(row))
        }),
        Variable::IncomeBand => enum_codes(rows, IncomeBand::NAMES, IncomeBand::ordinal, |row| {
            Some(frame.income_band(row))
        }),
        Variable::Frequency => Coded {
            codes: Codes::Narrow(Cow::Borrowed(frame.frequency_codes())),
            names: enum_names(FrequencyClass::NAMES),
        },
        Variable::Stage => Coded {
            codes: Codes::Narrow(Cow::Borrowed(frame.stage_codes())),
            names: enum_names(EngagementStage::NAMES),
        },
        Variable::RfmSegment => enum_codes(rows, RfmSegment::NAMES, RfmSegment::ordinal, |row| {
            frame.rfm_segment(row)
        }),
        Variable::Trait(key) => {
            let mut codes = vec![0u32; rows];
            let mut names = vec![String::new()];
            let mut numbers = std::collections::HashMap::new();
            if let Some(values) = frame.index.trait_values(key) {
                for (&row, value) in values {
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
                    codes[row as usize] = code;
                }
            }
            Coded {
                codes: Codes::Wide(Cow::Owned(codes)),
                names,
            }
        }
        _ => return None,
    })
}
