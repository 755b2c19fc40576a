//! The rule language: CEL expressions over documented customer and feature
//! variables, compiled into a [`Predicate`] tree that the engine evaluates
//! column by column over the whole index. Nothing here evaluates a rule for
//! one customer; this module only checks and types expressions.
//!
//! `compile` parses with the `cel` crate and accepts a subset of CEL:
//! comparisons, `&&`, `||`, `!`, `in` lists, `startsWith`, `endsWith`,
//! `contains`, `has()`, and enum values named by strings. Anything else is
//! refused with its position and what is supported.

mod compile;

pub use compile::{
    compile, display_name as variable_name, operators, parse_variable, variables, CompileError,
    VariableDoc,
};

use super::customer::{ConsentStatus, Gender, Party, Relationship};
use super::features::{AgeBand, EngagementStage, FrequencyClass, IncomeBand, RfmSegment};

/// A consent channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// A variable a rule can read. Each has one type; see [`Variable::kind`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Variable {
    /// `customer.relationship`: enum, EXTERNAL or INTERNAL.
    Relationship,
    /// `customer.party`: enum, INDIVIDUAL or BUSINESS.
    Party,
    /// `customer.age`: int, whole years at T; optional.
    Age,
    /// `customer.age_band`: enum of [`AgeBand`].
    AgeBand,
    /// `customer.gender`: enum of [`Gender`].
    Gender,
    /// `customer.country`: string, ISO 3166-1 alpha-2; optional.
    Country,
    /// `customer.region`: string; optional (absent when empty).
    Region,
    /// `customer.city`: string; optional (absent when empty).
    City,
    /// `customer.language`: string, BCP 47; optional.
    Language,
    /// `customer.income`: double, yearly income in major units; optional.
    Income,
    /// `customer.income_band`: enum of [`IncomeBand`].
    IncomeBand,
    /// `customer.traits["key"]`: string, double or bool; optional.
    Trait(String),
    /// `customer.consent.email` and the others: enum of [`ConsentStatus`].
    Consent(Channel),
    /// `customer.objects_to_profiling`: bool.
    ObjectsToProfiling,
    /// `features.frequency`: enum of [`FrequencyClass`].
    Frequency,
    /// `features.stage`: enum of [`EngagementStage`].
    Stage,
    /// `features.purchase_count`: int.
    PurchaseCount,
    /// `features.purchases_90d`: int.
    Purchases90d,
    /// `features.purchases_365d`: int.
    Purchases365d,
    /// `features.total_spend`: double, major units.
    TotalSpend,
    /// `features.avg_order_value`: double, major units; optional.
    AvgOrderValue,
    /// `features.recency_days`: int; optional.
    RecencyDays,
    /// `features.mean_gap_days`: double; optional.
    MeanGapDays,
    /// `features.rfm.r`: int 1–5; optional (absent without purchases).
    RfmR,
    /// `features.rfm.f`: int 1–5; optional.
    RfmF,
    /// `features.rfm.m`: int 1–5; optional.
    RfmM,
    /// `features.rfm_segment`: enum of [`RfmSegment`]; optional.
    RfmSegment,
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

/// Whether a variable can group a breakdown: the enums, the location and
/// language strings, and traits. Numbers and bools cannot.
pub fn is_dimension(variable: &Variable) -> bool {
    use Variable as V;
    match variable {
        V::Relationship
        | V::Party
        | V::AgeBand
        | V::Gender
        | V::Country
        | V::Region
        | V::City
        | V::Language
        | V::IncomeBand
        | V::Trait(_)
        | V::Consent(_)
        | V::Frequency
        | V::Stage
        | V::RfmSegment => true,
        V::Age
        | V::Income
        | V::ObjectsToProfiling
        | V::PurchaseCount
        | V::Purchases90d
        | V::Purchases365d
        | V::TotalSpend
        | V::AvgOrderValue
        | V::RecencyDays
        | V::MeanGapDays
        | V::RfmR
        | V::RfmF
        | V::RfmM => false,
    }
}

/// The names of the variables that can group a breakdown.
pub fn dimension_names() -> &'static [&'static str] {
    &[
        "customer.relationship",
        "customer.party",
        "customer.age_band",
        "customer.gender",
        "customer.country",
        "customer.region",
        "customer.city",
        "customer.language",
        "customer.income_band",
        "customer.consent.email",
        "customer.consent.sms",
        "customer.consent.push",
        "customer.consent.ads",
        "customer.traits.KEY",
        "features.frequency",
        "features.stage",
        "features.rfm_segment",
    ]
}
