//! The rule language: CEL expressions over documented customer and feature
//! variables, compiled into a [`Predicate`] tree that the engine evaluates
//! column by column over the whole index. Nothing here evaluates a rule for
//! one customer; this module only checks and types expressions.
//!
//! `compile` parses with the `cel` crate and accepts a subset of CEL:
//! comparisons, `&&`, `||`, `!`, `in` lists, `startsWith`, `endsWith`,
//! `contains`, `has()`, and enum values named by strings. Anything else is
//! refused with its position and what is supported.
//!
//! # Layout
//!
//! - `variables`: the table of variables, one row each, and everything
//!   derived from it: the documentation, dimensions, name resolution, types.
//! - `scan`: from text to CEL's syntax tree; size and nesting limits, and
//!   the parser's errors at character positions.
//! - `compile`: from the syntax tree to a [`Predicate`], and the refusal of
//!   everything else.
//! - `display`: a [`Predicate`] written back as rule text.
//! - `error`: [`CompileError`].

mod compile;
mod display;
mod error;
mod scan;
#[cfg(test)]
mod testing;
mod variables;

pub use compile::{compile, operators};
pub use display::show_number;
pub use error::CompileError;
pub use variables::{
    dimension_names, display_name as variable_name, is_dimension, parse_variable, variables,
    Variable, VariableDoc,
};

use super::customer::{ConsentStatus, Gender, Party, Relationship};
use super::features::{
    AgeBand, EngagementStage, FrequencyClass, IncomeBand, PAliveBand, RfmSegment,
};

/// A consent channel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Channel {
    /// Email.
    Email,
    /// Text messages.
    Sms,
    /// Push notifications.
    Push,
    /// Advertising audiences.
    Ads,
}

/// A literal a variable is compared with, already of the variable's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// An int (CEL int or uint).
    Int(i64),
    /// A double; an int literal compared with a double variable becomes one.
    Double(f64),
    /// A string.
    String(String),
    /// A bool.
    Bool(bool),
    /// `customer.relationship`.
    Relationship(Relationship),
    /// `customer.party`.
    Party(Party),
    /// `customer.gender`.
    Gender(Gender),
    /// `customer.age_band`.
    AgeBand(AgeBand),
    /// `customer.income_band`.
    IncomeBand(IncomeBand),
    /// `customer.consent.*`.
    Consent(ConsentStatus),
    /// `features.frequency`.
    Frequency(FrequencyClass),
    /// `features.stage`.
    Stage(EngagementStage),
    /// `features.rfm_segment`.
    RfmSegment(RfmSegment),
    /// A band of `features.p_alive`.
    PAliveBand(PAliveBand),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A string test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringTest {
    /// `startsWith`
    StartsWith,
    /// `endsWith`
    EndsWith,
    /// `contains`
    Contains,
}

/// A compiled rule. A comparison on an optional variable that is absent is
/// false (and so `!=` on an absent value is false too); test presence with
/// [`Predicate::Has`].
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// A constant.
    Const(bool),
    /// `variable op literal`; the variable always on the left (the
    /// compiler turns `3 < x` into `x > 3`).
    Compare(Variable, Comparison, Literal),
    /// `variable in [literals]`.
    In(Variable, Vec<Literal>),
    /// A string test on a string variable.
    Text(Variable, StringTest, String),
    /// A bool variable used on its own (`customer.objects_to_profiling`,
    /// or a trait used as a condition, which holds only when it is `true`).
    IsTrue(Variable),
    /// `has(customer.age)`, `has(customer.traits.tier)`,
    /// `"tier" in customer.traits`.
    Has(Variable),
    /// Every operand holds.
    And(Vec<Predicate>),
    /// Some operand holds.
    Or(Vec<Predicate>),
    /// The operand does not hold.
    Not(Box<Predicate>),
}

impl Predicate {
    /// Whether a condition of the rule reads a variable that passes `test`.
    pub fn reads(&self, test: &dyn Fn(&Variable) -> bool) -> bool {
        match self {
            Predicate::Const(_) => false,
            Predicate::Compare(variable, _, _)
            | Predicate::In(variable, _)
            | Predicate::Text(variable, _, _)
            | Predicate::IsTrue(variable)
            | Predicate::Has(variable) => test(variable),
            Predicate::And(operands) | Predicate::Or(operands) => {
                operands.iter().any(|operand| operand.reads(test))
            }
            Predicate::Not(operand) => operand.reads(test),
        }
    }
}
