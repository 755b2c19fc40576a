//! The table of rule variables: one row per variable, with its name, type,
//! optionality, whether it is a breakdown dimension, its description and an
//! example. Everything else about a variable is derived from its row: the
//! documentation [`variables`] serves, [`is_dimension`] and
//! [`dimension_names`], name resolution ([`parse_variable`],
//! [`display_name`]) and the types the compiler checks literals against.
//!
//! A new variable is one entry in the table below: the macro generates its
//! [`Variable`] variant, its row and its arm of the row lookup. The
//! engine's evaluators match on [`Variable`] without catch-all arms, so the
//! compiler then names every evaluator that lacks the new variable.

use std::sync::OnceLock;

use super::error::{clip, CompileError};
use super::{Channel, Literal};
use crate::domain::customer::{parse_trait_key, ConsentStatus, Gender, Party, Relationship};
use crate::domain::features::{
    AgeBand, EngagementStage, FrequencyClass, IncomeBand, PAliveBand, RfmSegment,
};

/// The type of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Type {
    /// A whole number.
    Int,
    /// A number.
    Double,
    /// A string.
    String,
    /// A bool.
    Bool,
    /// One of the names of a domain enum.
    Enum(EnumKind),
    /// A string, a number or a bool, known only per customer.
    Trait,
}

impl Type {
    /// The name clients see: "int", "double", "string", "bool", "enum" or
    /// "trait".
    pub(super) fn name(self) -> &'static str {
        match self {
            Type::Int => "int",
            Type::Double => "double",
            Type::String => "string",
            Type::Bool => "bool",
            Type::Enum(_) => "enum",
            Type::Trait => "trait",
        }
    }

    /// The name with its article, for messages: "an int".
    pub(super) fn with_article(self) -> &'static str {
        match self {
            Type::Int => "an int",
            Type::Double => "a double",
            Type::String => "a string",
            Type::Bool => "a bool",
            Type::Enum(_) => "an enum",
            Type::Trait => "a trait",
        }
    }

    /// The value names of an enum, in order; empty for the other types.
    pub(super) fn values(self) -> &'static [&'static str] {
        match self {
            Type::Enum(kind) => kind.names(),
            Type::Int | Type::Double | Type::String | Type::Bool | Type::Trait => &[],
        }
    }

    /// Whether values of this type are ordered numbers.
    pub(super) fn is_number(self) -> bool {
        matches!(self, Type::Int | Type::Double)
    }
}

/// The domain enum behind an enum variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EnumKind {
    /// [`Relationship`].
    Relationship,
    /// [`Party`].
    Party,
    /// [`AgeBand`].
    AgeBand,
    /// [`Gender`].
    Gender,
    /// [`IncomeBand`].
    IncomeBand,
    /// [`ConsentStatus`].
    Consent,
    /// [`FrequencyClass`].
    Frequency,
    /// [`EngagementStage`].
    Stage,
    /// [`RfmSegment`].
    RfmSegment,
    /// [`PAliveBand`].
    PAliveBand,
}

impl EnumKind {
    /// The value names, in order.
    pub(super) fn names(self) -> &'static [&'static str] {
        match self {
            EnumKind::Relationship => Relationship::NAMES,
            EnumKind::Party => Party::NAMES,
            EnumKind::AgeBand => AgeBand::NAMES,
            EnumKind::Gender => Gender::NAMES,
            EnumKind::IncomeBand => IncomeBand::NAMES,
            EnumKind::Consent => ConsentStatus::NAMES,
            EnumKind::Frequency => FrequencyClass::NAMES,
            EnumKind::Stage => EngagementStage::NAMES,
            EnumKind::RfmSegment => RfmSegment::NAMES,
            EnumKind::PAliveBand => PAliveBand::NAMES,
        }
    }

    /// The literal of a value name, matched exactly (upper case).
    pub(super) fn literal(self, name: &str) -> Option<Literal> {
        match self {
            EnumKind::Relationship => Relationship::from_name(name).map(Literal::Relationship),
            EnumKind::Party => Party::from_name(name).map(Literal::Party),
            EnumKind::AgeBand => AgeBand::from_name(name).map(Literal::AgeBand),
            EnumKind::Gender => Gender::from_name(name).map(Literal::Gender),
            EnumKind::IncomeBand => IncomeBand::from_name(name).map(Literal::IncomeBand),
            EnumKind::Consent => ConsentStatus::from_name(name).map(Literal::Consent),
            EnumKind::Frequency => FrequencyClass::from_name(name).map(Literal::Frequency),
            EnumKind::Stage => EngagementStage::from_name(name).map(Literal::Stage),
            EnumKind::RfmSegment => RfmSegment::from_name(name).map(Literal::RfmSegment),
            EnumKind::PAliveBand => PAliveBand::from_name(name).map(Literal::PAliveBand),
        }
    }
}

/// Everything known about a variable: one row of the table.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    /// Its name in a rule; `customer.traits["KEY"]` for traits.
    pub(super) name: &'static str,
    /// Its type.
    pub(super) ty: Type,
    /// Whether it can be absent (see [`super::Predicate::Has`]).
    pub(super) optional: bool,
    /// Whether it can group a breakdown.
    pub(super) dimension: bool,
    /// What it holds, in one line.
    pub(super) description: &'static str,
    /// A rule that uses it, and compiles.
    pub(super) example: &'static str,
}

/// The variable a row stands for. The trait row, written `(_)`, stands
/// for every trait and holds the empty key.
macro_rules! row_variable {
    ($variant:ident(_)) => {
        Variable::$variant(String::new())
    };
    ($variant:ident($($value:tt)+)) => {
        Variable::$variant($($value)+)
    };
    ($variant:ident) => {
        Variable::$variant
    };
}

/// Generates, from one list of variants and their rows, the [`Variable`]
/// enum, the table in the order of the documentation ([`ROWS`]) and the
/// lookup of a variable's row ([`row`]), an exhaustive match with no
/// catch-all arm. A variant with a payload has one row per value, the
/// value (or `_` for every value) in brackets before the row.
macro_rules! variables {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident $(($payload:ty))? => [$(
            $(($($value:tt)+))? { $($field:ident: $content:expr),+ $(,)? }
        ),+ $(,)?]
    ),+ $(,)?) => {
        /// A variable a rule can read. Its name, type, optionality and
        /// documentation are in its row of the table in this module.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum Variable {
            $($(#[doc = $doc])* $variant $(($payload))?,)+
        }

        /// Every variable and its row, in the order of the documentation;
        /// the trait row stands for all traits.
        pub(super) static ROWS: &[(Variable, Row)] = &[$($(
            (
                row_variable!($variant $(($($value)+))?),
                Row { $($field: $content),+ },
            ),
        )+)+];

        /// The row of a variable.
        pub(super) fn row(variable: &Variable) -> Row {
            match variable {
                $($(Variable::$variant $(($($value)+))? => Row { $($field: $content),+ },)+)+
            }
        }
    };
}

// The variables, in the order of the documentation: each entry is a variant
// of `Variable` and its rows (one, or one per payload value). Each row has
// the name written in rules, the type, whether it can be absent, whether it
// can group a breakdown, a one-line description and an example that
// compiles (a test checks it).
variables! {
    /// `customer.relationship`.
    Relationship => [
        {
            name: "customer.relationship",
            ty: Type::Enum(EnumKind::Relationship),
            optional: false,
            dimension: true,
            description: "EXTERNAL for a customer who buys the products, INTERNAL for an employee or a group of the company",
            example: r#"customer.relationship == "EXTERNAL""#,
        },
    ],
    /// `customer.party`.
    Party => [
        {
            name: "customer.party",
            ty: Type::Enum(EnumKind::Party),
            optional: false,
            dimension: true,
            description: "INDIVIDUAL for a person, BUSINESS for a company or another organisation",
            example: r#"customer.party == "BUSINESS""#,
        },
    ],
    /// `customer.age`.
    Age => [
        {
            name: "customer.age",
            ty: Type::Int,
            optional: true,
            dimension: false,
            description: "age in whole years at the evaluation time; absent without a birth date",
            example: "customer.age >= 18",
        },
    ],
    /// `customer.age_band`.
    AgeBand => [
        {
            name: "customer.age_band",
            ty: Type::Enum(EnumKind::AgeBand),
            optional: false,
            dimension: true,
            description: "age band at the evaluation time; UNKNOWN without a birth date",
            example: r#"customer.age_band in ["25_34", "35_44"]"#,
        },
    ],
    /// `customer.gender`.
    Gender => [
        {
            name: "customer.gender",
            ty: Type::Enum(EnumKind::Gender),
            optional: false,
            dimension: true,
            description: "gender as the customer stated it",
            example: r#"customer.gender == "FEMALE""#,
        },
    ],
    /// `customer.country`.
    Country => [
        {
            name: "customer.country",
            ty: Type::String,
            optional: true,
            dimension: true,
            description: "ISO 3166-1 alpha-2 country code in upper case, such as TR",
            example: r#"customer.country in ["TR", "EG"]"#,
        },
    ],
    /// `customer.region`.
    Region => [
        {
            name: "customer.region",
            ty: Type::String,
            optional: true,
            dimension: true,
            description: "region, state or province; absent when empty",
            example: r#"customer.region == "Istanbul""#,
        },
    ],
    /// `customer.city`.
    City => [
        {
            name: "customer.city",
            ty: Type::String,
            optional: true,
            dimension: true,
            description: "city; absent when empty",
            example: r#"customer.city.startsWith("Is")"#,
        },
    ],
    /// `customer.language`.
    Language => [
        {
            name: "customer.language",
            ty: Type::String,
            optional: true,
            dimension: true,
            description: "BCP 47 language tag, such as tr or ar-EG",
            example: r#"customer.language.startsWith("ar")"#,
        },
    ],
    /// `customer.income`.
    Income => [
        {
            name: "customer.income",
            ty: Type::Double,
            optional: true,
            dimension: false,
            description: "yearly income in major units of the reporting currency",
            example: "customer.income >= 50000",
        },
    ],
    /// `customer.income_band`.
    IncomeBand => [
        {
            name: "customer.income_band",
            ty: Type::Enum(EnumKind::IncomeBand),
            optional: false,
            dimension: true,
            description: "income band from the configured limits; UNKNOWN without an income",
            example: r#"customer.income_band in ["HIGH", "VERY_HIGH"]"#,
        },
    ],
    /// `customer.traits["key"]`; its row stands for every trait.
    Trait(String) => [
        (_) {
            name: r#"customer.traits["KEY"]"#,
            ty: Type::Trait,
            optional: true,
            dimension: true,
            description: "a custom trait (string, number or bool), compared as the literal's type; true on its own only when it is the bool true; also written customer.traits.KEY",
            example: r#"customer.traits["tier"] == "gold""#,
        },
    ],
    /// `customer.consent.email` and the other channels.
    Consent(Channel) => [
        (Channel::Email) {
            name: "customer.consent.email",
            ty: Type::Enum(EnumKind::Consent),
            optional: false,
            dimension: true,
            description: "consent to email",
            example: r#"customer.consent.email == "GRANTED""#,
        },
        (Channel::Sms) {
            name: "customer.consent.sms",
            ty: Type::Enum(EnumKind::Consent),
            optional: false,
            dimension: true,
            description: "consent to text messages",
            example: r#"customer.consent.sms != "DENIED""#,
        },
        (Channel::Push) {
            name: "customer.consent.push",
            ty: Type::Enum(EnumKind::Consent),
            optional: false,
            dimension: true,
            description: "consent to push notifications",
            example: r#"customer.consent.push == "GRANTED""#,
        },
        (Channel::Ads) {
            name: "customer.consent.ads",
            ty: Type::Enum(EnumKind::Consent),
            optional: false,
            dimension: true,
            description: "consent to personalised advertising",
            example: r#"customer.consent.ads == "GRANTED""#,
        },
    ],
    /// `customer.objects_to_profiling`.
    ObjectsToProfiling => [
        {
            name: "customer.objects_to_profiling",
            ty: Type::Bool,
            optional: false,
            dimension: false,
            description: "true when the customer objects to profiling (GDPR article 21)",
            example: "!customer.objects_to_profiling",
        },
    ],
    /// `features.frequency`.
    Frequency => [
        {
            name: "features.frequency",
            ty: Type::Enum(EnumKind::Frequency),
            optional: false,
            dimension: true,
            description: "buyer class from the purchase count, the recency and the mean gap",
            example: r#"features.frequency == "FREQUENT_CUSTOMER""#,
        },
    ],
    /// `features.stage`.
    Stage => [
        {
            name: "features.stage",
            ty: Type::Enum(EnumKind::Stage),
            optional: false,
            dimension: true,
            description: "highest level of the engagement pyramid with evidence",
            example: r#"features.stage in ["REBUYING", "GIVING_FEEDBACK"]"#,
        },
    ],
    /// `features.purchase_count`.
    PurchaseCount => [
        {
            name: "features.purchase_count",
            ty: Type::Int,
            optional: false,
            dimension: false,
            description: "purchases at or before the evaluation time",
            example: "features.purchase_count > 0",
        },
    ],
    /// `features.purchases_90d`.
    Purchases90d => [
        {
            name: "features.purchases_90d",
            ty: Type::Int,
            optional: false,
            dimension: false,
            description: "purchases in the last 90 days",
            example: "features.purchases_90d >= 2",
        },
    ],
    /// `features.purchases_365d`.
    Purchases365d => [
        {
            name: "features.purchases_365d",
            ty: Type::Int,
            optional: false,
            dimension: false,
            description: "purchases in the last 365 days",
            example: "features.purchases_365d >= 4",
        },
    ],
    /// `features.total_spend`.
    TotalSpend => [
        {
            name: "features.total_spend",
            ty: Type::Double,
            optional: false,
            dimension: false,
            description: "total spend in major units of the reporting currency",
            example: "features.total_spend >= 1000",
        },
    ],
    /// `features.avg_order_value`.
    AvgOrderValue => [
        {
            name: "features.avg_order_value",
            ty: Type::Double,
            optional: true,
            dimension: false,
            description: "average order value in major units; absent without purchases",
            example: "features.avg_order_value > 49.99",
        },
    ],
    /// `features.recency_days`.
    RecencyDays => [
        {
            name: "features.recency_days",
            ty: Type::Int,
            optional: true,
            dimension: false,
            description: "whole days since the last purchase; absent without purchases",
            example: "features.recency_days <= 30",
        },
    ],
    /// `features.mean_gap_days`.
    MeanGapDays => [
        {
            name: "features.mean_gap_days",
            ty: Type::Double,
            optional: true,
            dimension: false,
            description: "mean days between purchases; absent with fewer than two purchases",
            example: "features.mean_gap_days < 45",
        },
    ],
    /// `features.rfm.r`.
    RfmR => [
        {
            name: "features.rfm.r",
            ty: Type::Int,
            optional: true,
            dimension: false,
            description: "RFM recency score, 1 to 5, 5 the most recent; absent without purchases",
            example: "features.rfm.r >= 4",
        },
    ],
    /// `features.rfm.f`.
    RfmF => [
        {
            name: "features.rfm.f",
            ty: Type::Int,
            optional: true,
            dimension: false,
            description: "RFM frequency score, 1 to 5, 5 the most purchases; absent without purchases",
            example: "features.rfm.f == 5",
        },
    ],
    /// `features.rfm.m`.
    RfmM => [
        {
            name: "features.rfm.m",
            ty: Type::Int,
            optional: true,
            dimension: false,
            description: "RFM monetary score, 1 to 5, 5 the largest spend; absent without purchases",
            example: "features.rfm.m >= 4 && features.rfm.f >= 4",
        },
    ],
    /// `features.rfm_segment`.
    RfmSegment => [
        {
            name: "features.rfm_segment",
            ty: Type::Enum(EnumKind::RfmSegment),
            optional: true,
            dimension: true,
            description: "RFM segment from the R and F scores; absent without purchases",
            example: r#"features.rfm_segment in ["CHAMPIONS", "LOYAL"]"#,
        },
    ],
    /// `features.p_alive`.
    PAlive => [
        {
            name: "features.p_alive",
            ty: Type::Double,
            optional: true,
            dimension: false,
            description: "probability, 0 to 1, that the customer still buys (BG/NBD), 1 with a single purchase day; absent without a purchase, without a fitted model, or for a customer who objects to profiling",
            example: "features.p_alive < 0.3",
        },
    ],
    /// `features.p_alive_band`.
    PAliveBand => [
        {
            name: "features.p_alive_band",
            ty: Type::Enum(EnumKind::PAliveBand),
            optional: true,
            dimension: true,
            description: "band of features.p_alive in percent: 0_25, 25_50, 50_75 or 75_100; absent with it",
            example: r#"features.p_alive_band == "0_25""#,
        },
    ],
    /// `features.expected_purchases_90d`.
    ExpectedPurchases90d => [
        {
            name: "features.expected_purchases_90d",
            ty: Type::Double,
            optional: true,
            dimension: false,
            description: "purchase days the customer is expected to have in the next 90 days (BG/NBD); absent with features.p_alive",
            example: "features.expected_purchases_90d >= 1",
        },
    ],
    /// `features.expected_purchases_365d`.
    ExpectedPurchases365d => [
        {
            name: "features.expected_purchases_365d",
            ty: Type::Double,
            optional: true,
            dimension: false,
            description: "purchase days the customer is expected to have in the next 365 days (BG/NBD); absent with features.p_alive",
            example: "features.expected_purchases_365d >= 4",
        },
    ],
    /// `features.expected_order_value`.
    ExpectedOrderValue => [
        {
            name: "features.expected_order_value",
            ty: Type::Double,
            optional: true,
            dimension: false,
            description: "expected value of a purchase day in major units (Gamma-Gamma): the population's mean for a customer without a repeat day of positive value; absent with features.p_alive, or when the model has no Gamma-Gamma part",
            example: "features.expected_order_value > 50",
        },
    ],
    /// `features.clv_365d`.
    Clv365d => [
        {
            name: "features.clv_365d",
            ty: Type::Double,
            optional: true,
            dimension: false,
            description: "lifetime value over the configured horizon (365 days by default) in major units, discounted monthly; absent with features.expected_order_value",
            example: "features.p_alive < 0.3 && features.clv_365d > 200",
        },
    ],
}

/// The documentation of one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableDoc {
    /// Its name in a rule; `customer.traits["KEY"]` for traits.
    pub name: &'static str,
    /// Its type: "int", "double", "string", "bool", "enum" or "trait".
    pub kind: &'static str,
    /// What it holds, in one line.
    pub description: &'static str,
    /// A rule that uses it, and compiles.
    pub example: &'static str,
    /// The value names of an enum, in order; empty for the other types.
    pub enum_values: &'static [&'static str],
    /// Whether it can be absent (see [`super::Predicate::Has`]).
    pub optional: bool,
    /// Whether it can be a breakdown dimension (see [`is_dimension`]).
    pub dimension: bool,
}

/// Every variable, in the order of the documentation.
pub fn variables() -> Vec<VariableDoc> {
    ROWS.iter()
        .map(|(_, row)| VariableDoc {
            name: row.name,
            kind: row.ty.name(),
            description: row.description,
            example: row.example,
            enum_values: row.ty.values(),
            optional: row.optional,
            dimension: row.dimension,
        })
        .collect()
}

/// Whether a variable can group a breakdown: the enums, the location and
/// language strings, and traits. Numbers and bools cannot.
pub fn is_dimension(variable: &Variable) -> bool {
    row(variable).dimension
}

/// The names of the variables that can group a breakdown, in the order of
/// the documentation, except that traits (written `customer.traits.KEY`
/// here) close the customer variables.
pub fn dimension_names() -> &'static [&'static str] {
    const TRAITS: &str = "customer.traits.KEY";
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let named = ROWS
            .iter()
            .filter(|(variable, row)| row.dimension && !matches!(variable, Variable::Trait(_)))
            .map(|(_, row)| row.name);
        let (customer, features): (Vec<&str>, Vec<&str>) =
            named.partition(|name| name.starts_with("customer."));
        customer
            .into_iter()
            .chain([TRAITS])
            .chain(features)
            .collect()
    })
}

/// The variable's name as written in a rule, for messages.
pub fn display_name(variable: &Variable) -> String {
    match variable {
        Variable::Trait(key) => format!("customer.traits[{key:?}]"),
        other => row(other).name.to_owned(),
    }
}

/// The names of the variables that can be absent, for messages.
pub(super) fn optional_names() -> Vec<&'static str> {
    ROWS.iter()
        .filter(|(_, row)| row.optional)
        .map(|(_, row)| row.name)
        .collect()
}

/// Resolves one variable name as written in a rule: `customer.country`,
/// `customer.traits.tier`, `customer.traits["tier"]` or
/// `customer.traits['tier']`. Positions are offsets in `name`.
pub fn parse_variable(name: &str) -> Result<Variable, CompileError> {
    const INDEXED: &str = "customer.traits[";
    let Some(indexed) = name.strip_prefix(INDEXED) else {
        return resolve_dotted(name).map_err(|message| CompileError::at(0, message));
    };
    let key_position = INDEXED.len();
    let key = ['"', '\''].iter().find_map(|quote| {
        indexed
            .strip_prefix(*quote)?
            .strip_suffix(&format!("{quote}]"))
    });
    let Some(key) = key else {
        return Err(CompileError::at(
            key_position,
            r#"expected a trait key in quotes and a closing ], as in customer.traits["tier"]"#,
        ));
    };
    trait_key(key)
        .map(Variable::Trait)
        .map_err(|message| CompileError::at(key_position + 1, message))
}

/// Checks a trait key as the profile does (see [`parse_trait_key`]).
pub(super) fn trait_key(key: &str) -> Result<String, String> {
    parse_trait_key(key).map_err(|_| {
        format!(
            "a trait key has 1 to 64 characters from A-Z a-z 0-9 _ . - and starts with a letter or _, got {:?}",
            clip(key)
        )
    })
}

/// Resolves a dotted name: a documented variable or `customer.traits.KEY`.
pub(super) fn resolve_dotted(name: &str) -> Result<Variable, String> {
    if name == "customer.traits" {
        return Err(
            r#"`customer.traits` holds every trait; name one, as in customer.traits["tier"] or customer.traits.tier"#
                .to_owned(),
        );
    }
    if let Some(key) = name.strip_prefix("customer.traits.") {
        return trait_key(key).map(Variable::Trait);
    }
    if let Some((found, _)) = ROWS
        .iter()
        .find(|(variable, row)| !matches!(variable, Variable::Trait(_)) && row.name == name)
    {
        return Ok(found.clone());
    }
    Err(unknown_variable(name))
}

/// The message for a name that is no variable: the group it opens, or the
/// variables it may have meant.
fn unknown_variable(name: &str) -> String {
    let shown = clip(name);
    let names: Vec<&str> = ROWS.iter().map(|(_, row)| row.name).collect();
    let group_prefix = format!("{name}.");
    let members: Vec<&str> = names
        .iter()
        .copied()
        .filter(|candidate| candidate.starts_with(&group_prefix))
        .collect();
    if !members.is_empty() {
        return format!(
            "`{shown}` is a group, not a variable; use one of {}",
            members.join(", ")
        );
    }
    // The edit distance is at least the difference in length, so only
    // names of about the same length are compared: the cost stays small
    // however long the unknown name is.
    let length = name.chars().count();
    let suggestion = names
        .iter()
        .filter(|candidate| !candidate.contains('[') && candidate.len().abs_diff(length) <= 2)
        .map(|candidate| (strsim::levenshtein(name, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, candidate)| format!(" (did you mean {candidate}?)"))
        .unwrap_or_default();
    let (scope, listed): (&str, Vec<&str>) = match name.split('.').next() {
        Some(root @ ("customer" | "features")) => (
            root,
            names
                .iter()
                .copied()
                .filter(|candidate| candidate.starts_with(root))
                .collect(),
        ),
        _ => ("", names),
    };
    let scope = if scope.is_empty() {
        "variables start with customer. or features.; they are".to_owned()
    } else {
        format!("the {scope} variables are")
    };
    format!(
        "unknown variable `{shown}`{suggestion}; {scope} {}",
        listed.join(", ")
    )
}

#[cfg(test)]
mod tests;
