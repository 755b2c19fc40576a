//! Compiles CEL text into a [`Predicate`].
//!
//! Three steps, each of which may refuse the rule with a [`CompileError`]:
//!
//! 1. [`scan`] checks the size and the bracket nesting with a small lexer
//!    that knows CEL's strings and comments, so that nothing too deep
//!    reaches the parser.
//! 2. The `cel` crate parses the text on a thread of its own with a known
//!    stack: its ANTLR parser recurses deeply (in a debug build 64 nested
//!    brackets take about 12 MiB, more than a tokio worker has), and a
//!    stack overflow would abort the whole service.
//! 3. [`Compiler`] walks the AST: it resolves the variables, types the
//!    literals by the variable they are compared with, and refuses every
//!    other construct, naming what it found and what is supported.
//!
//! Positions are character offsets (not bytes) from the start of the rule.

use std::fmt;

use cel::common::ast::{operators, CallExpr, Expr, IdedExpr, LiteralValue, SelectExpr, SourceInfo};
use cel::parser::{ParseErrors, Parser};

use super::{Channel, Comparison, Literal, Predicate, StringTest, Variable};
use crate::domain::customer::{
    parse_country_code, parse_trait_key, ConsentStatus, Gender, Party, Relationship,
};
use crate::domain::features::{AgeBand, EngagementStage, FrequencyClass, IncomeBand, RfmSegment};

/// The longest rule, in bytes.
pub const MAX_SOURCE_BYTES: usize = 4096;
/// The deepest nesting of brackets, and of conditions.
pub const MAX_NESTING: usize = 64;
/// The stack of the parsing thread: four times what the worst rule within
/// the limits above was measured to need in a debug build.
const PARSER_STACK_BYTES: usize = 64 << 20;

/// The constructs a rule may use, as documented.
const OPERATORS: &[&str] = &[
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "&&",
    "||",
    "!",
    "in",
    "startsWith",
    "endsWith",
    "contains",
    "has()",
];

/// A refused rule: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Character offset in the rule, from 0.
    pub position: usize,
    /// What is wrong, and what is supported instead.
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.position, self.message)
    }
}

impl std::error::Error for CompileError {}

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
    /// Whether it can be absent (see [`Predicate::Has`]).
    pub optional: bool,
    /// Whether it can be a breakdown dimension (see [`super::is_dimension`]).
    pub dimension: bool,
}

/// Compiles a rule.
///
/// This blocks while a thread of its own, with a large stack, parses the
/// rule: about a millisecond for a typical rule in a debug build.
pub fn compile(source: &str) -> Result<Predicate, CompileError> {
    scan(source)?;
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("rule-compiler".to_owned())
            .stack_size(PARSER_STACK_BYTES)
            .spawn_scoped(scope, || parse_and_compile(source));
        match spawned {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(CompileError {
                    position: 0,
                    message: "the rule could not be parsed".to_owned(),
                })
            }),
            Err(error) => Err(CompileError {
                position: 0,
                message: format!("the rule compiler could not start: {error}"),
            }),
        }
    })
}

/// Every variable, in the order of the documentation.
pub fn variables() -> Vec<VariableDoc> {
    DOCUMENTED
        .iter()
        .map(|variable| {
            let spec = spec(variable);
            VariableDoc {
                name: spec.name,
                kind: spec.ty.name(),
                description: spec.description,
                example: spec.example,
                enum_values: spec.ty.values(),
                optional: spec.optional,
                dimension: spec.dimension,
            }
        })
        .collect()
}

/// The constructs a rule may use: comparisons, logic, `in`, the string
/// tests and `has()`.
pub fn operators() -> Vec<&'static str> {
    OPERATORS.to_vec()
}

/// Resolves one variable name as written in a rule: `customer.country`,
/// `customer.traits.tier`, `customer.traits["tier"]` or
/// `customer.traits['tier']`. Positions are offsets in `name`.
pub fn parse_variable(name: &str) -> Result<Variable, CompileError> {
    const INDEXED: &str = "customer.traits[";
    let Some(indexed) = name.strip_prefix(INDEXED) else {
        return resolve_dotted(name).map_err(|message| CompileError {
            position: 0,
            message,
        });
    };
    let key_position = INDEXED.len();
    let key = ['"', '\''].iter().find_map(|quote| {
        indexed
            .strip_prefix(*quote)?
            .strip_suffix(&format!("{quote}]"))
    });
    let Some(key) = key else {
        return Err(CompileError {
            position: key_position,
            message:
                r#"expected a trait key in quotes and a closing ], as in customer.traits["tier"]"#
                    .to_owned(),
        });
    };
    trait_key(key)
        .map(Variable::Trait)
        .map_err(|message| CompileError {
            position: key_position + 1,
            message,
        })
}

// ---------------------------------------------------------------------------
// Variables and their types.

/// The type of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Int,
    Double,
    String,
    Bool,
    Enum(EnumKind),
    /// A string, a number or a bool, known only per customer.
    Trait,
}

impl Type {
    fn name(self) -> &'static str {
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
    fn with_article(self) -> &'static str {
        match self {
            Type::Int => "an int",
            Type::Double => "a double",
            Type::String => "a string",
            Type::Bool => "a bool",
            Type::Enum(_) => "an enum",
            Type::Trait => "a trait",
        }
    }

    fn values(self) -> &'static [&'static str] {
        match self {
            Type::Enum(kind) => kind.names(),
            Type::Int | Type::Double | Type::String | Type::Bool | Type::Trait => &[],
        }
    }

    fn is_number(self) -> bool {
        matches!(self, Type::Int | Type::Double)
    }
}

/// The domain enum behind an enum variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnumKind {
    Relationship,
    Party,
    AgeBand,
    Gender,
    IncomeBand,
    Consent,
    Frequency,
    Stage,
    RfmSegment,
}

impl EnumKind {
    fn names(self) -> &'static [&'static str] {
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
        }
    }

    /// The literal of a value name, matched exactly (upper case).
    fn literal(self, name: &str) -> Option<Literal> {
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
        }
    }
}

/// Everything known about a variable.
struct Spec {
    name: &'static str,
    ty: Type,
    optional: bool,
    dimension: bool,
    description: &'static str,
    example: &'static str,
}

/// Every variable, in the order of the documentation; the trait stands for
/// all traits.
const DOCUMENTED: &[Variable] = &[
    Variable::Relationship,
    Variable::Party,
    Variable::Age,
    Variable::AgeBand,
    Variable::Gender,
    Variable::Country,
    Variable::Region,
    Variable::City,
    Variable::Language,
    Variable::Income,
    Variable::IncomeBand,
    Variable::Trait(String::new()),
    Variable::Consent(Channel::Email),
    Variable::Consent(Channel::Sms),
    Variable::Consent(Channel::Push),
    Variable::Consent(Channel::Ads),
    Variable::ObjectsToProfiling,
    Variable::Frequency,
    Variable::Stage,
    Variable::PurchaseCount,
    Variable::Purchases90d,
    Variable::Purchases365d,
    Variable::TotalSpend,
    Variable::AvgOrderValue,
    Variable::RecencyDays,
    Variable::MeanGapDays,
    Variable::RfmR,
    Variable::RfmF,
    Variable::RfmM,
    Variable::RfmSegment,
];

/// The specification of a variable.
fn spec(variable: &Variable) -> Spec {
    use Type::{Bool, Double, Enum, Int};
    let (name, ty, optional, description, example) = match variable {
        Variable::Relationship => (
            "customer.relationship",
            Enum(EnumKind::Relationship),
            false,
            "EXTERNAL for a customer who buys the products, INTERNAL for an employee or a group of the company",
            r#"customer.relationship == "EXTERNAL""#,
        ),
        Variable::Party => (
            "customer.party",
            Enum(EnumKind::Party),
            false,
            "INDIVIDUAL for a person, BUSINESS for a company or another organisation",
            r#"customer.party == "BUSINESS""#,
        ),
        Variable::Age => (
            "customer.age",
            Int,
            true,
            "age in whole years at the evaluation time; absent without a birth date",
            "customer.age >= 18",
        ),
        Variable::AgeBand => (
            "customer.age_band",
            Enum(EnumKind::AgeBand),
            false,
            "age band at the evaluation time; UNKNOWN without a birth date",
            r#"customer.age_band in ["25_34", "35_44"]"#,
        ),
        Variable::Gender => (
            "customer.gender",
            Enum(EnumKind::Gender),
            false,
            "gender as the customer stated it",
            r#"customer.gender == "FEMALE""#,
        ),
        Variable::Country => (
            "customer.country",
            Type::String,
            true,
            "ISO 3166-1 alpha-2 country code in upper case, such as TR",
            r#"customer.country in ["TR", "EG"]"#,
        ),
        Variable::Region => (
            "customer.region",
            Type::String,
            true,
            "region, state or province; absent when empty",
            r#"customer.region == "Istanbul""#,
        ),
        Variable::City => (
            "customer.city",
            Type::String,
            true,
            "city; absent when empty",
            r#"customer.city.startsWith("Is")"#,
        ),
        Variable::Language => (
            "customer.language",
            Type::String,
            true,
            "BCP 47 language tag, such as tr or ar-EG",
            r#"customer.language.startsWith("ar")"#,
        ),
        Variable::Income => (
            "customer.income",
            Double,
            true,
            "yearly income in major units of the reporting currency",
            "customer.income >= 50000",
        ),
        Variable::IncomeBand => (
            "customer.income_band",
            Enum(EnumKind::IncomeBand),
            false,
            "income band from the configured limits; UNKNOWN without an income",
            r#"customer.income_band in ["HIGH", "VERY_HIGH"]"#,
        ),
        Variable::Trait(_) => (
            r#"customer.traits["KEY"]"#,
            Type::Trait,
            true,
            "a custom trait (string, number or bool), compared as the literal's type; true on its own only when it is the bool true; also written customer.traits.KEY",
            r#"customer.traits["tier"] == "gold""#,
        ),
        Variable::Consent(Channel::Email) => (
            "customer.consent.email",
            Enum(EnumKind::Consent),
            false,
            "consent to email",
            r#"customer.consent.email == "GRANTED""#,
        ),
        Variable::Consent(Channel::Sms) => (
            "customer.consent.sms",
            Enum(EnumKind::Consent),
            false,
            "consent to text messages",
            r#"customer.consent.sms != "DENIED""#,
        ),
        Variable::Consent(Channel::Push) => (
            "customer.consent.push",
            Enum(EnumKind::Consent),
            false,
            "consent to push notifications",
            r#"customer.consent.push == "GRANTED""#,
        ),
        Variable::Consent(Channel::Ads) => (
            "customer.consent.ads",
            Enum(EnumKind::Consent),
            false,
            "consent to personalised advertising",
            r#"customer.consent.ads == "GRANTED""#,
        ),
        Variable::ObjectsToProfiling => (
            "customer.objects_to_profiling",
            Bool,
            false,
            "true when the customer objects to profiling (GDPR article 21)",
            "!customer.objects_to_profiling",
        ),
        Variable::Frequency => (
            "features.frequency",
            Enum(EnumKind::Frequency),
            false,
            "buyer class from the purchase count, the recency and the mean gap",
            r#"features.frequency == "FREQUENT_CUSTOMER""#,
        ),
        Variable::Stage => (
            "features.stage",
            Enum(EnumKind::Stage),
            false,
            "highest level of the engagement pyramid with evidence",
            r#"features.stage in ["REBUYING", "GIVING_FEEDBACK"]"#,
        ),
        Variable::PurchaseCount => (
            "features.purchase_count",
            Int,
            false,
            "purchases at or before the evaluation time",
            "features.purchase_count > 0",
        ),
        Variable::Purchases90d => (
            "features.purchases_90d",
            Int,
            false,
            "purchases in the last 90 days",
            "features.purchases_90d >= 2",
        ),
        Variable::Purchases365d => (
            "features.purchases_365d",
            Int,
            false,
            "purchases in the last 365 days",
            "features.purchases_365d >= 4",
        ),
        Variable::TotalSpend => (
            "features.total_spend",
            Double,
            false,
            "total spend in major units of the reporting currency",
            "features.total_spend >= 1000",
        ),
        Variable::AvgOrderValue => (
            "features.avg_order_value",
            Double,
            true,
            "average order value in major units; absent without purchases",
            "features.avg_order_value > 49.99",
        ),
        Variable::RecencyDays => (
            "features.recency_days",
            Int,
            true,
            "whole days since the last purchase; absent without purchases",
            "features.recency_days <= 30",
        ),
        Variable::MeanGapDays => (
            "features.mean_gap_days",
            Double,
            true,
            "mean days between purchases; absent with fewer than two purchases",
            "features.mean_gap_days < 45",
        ),
        Variable::RfmR => (
            "features.rfm.r",
            Int,
            true,
            "RFM recency score, 1 to 5, 5 the most recent; absent without purchases",
            "features.rfm.r >= 4",
        ),
        Variable::RfmF => (
            "features.rfm.f",
            Int,
            true,
            "RFM frequency score, 1 to 5, 5 the most purchases; absent without purchases",
            "features.rfm.f == 5",
        ),
        Variable::RfmM => (
            "features.rfm.m",
            Int,
            true,
            "RFM monetary score, 1 to 5, 5 the largest spend; absent without purchases",
            "features.rfm.m >= 4 && features.rfm.f >= 4",
        ),
        Variable::RfmSegment => (
            "features.rfm_segment",
            Enum(EnumKind::RfmSegment),
            true,
            "RFM segment from the R and F scores; absent without purchases",
            r#"features.rfm_segment in ["CHAMPIONS", "LOYAL"]"#,
        ),
    };
    let dimension = super::is_dimension(variable);
    Spec {
        name,
        ty,
        optional,
        dimension,
        description,
        example,
    }
}

/// The variable's name as written in a rule, for messages.
pub fn display_name(variable: &Variable) -> String {
    match variable {
        Variable::Trait(key) => format!("customer.traits[{key:?}]"),
        other => spec(other).name.to_owned(),
    }
}

/// Checks a trait key as the profile does (see [`parse_trait_key`]).
fn trait_key(key: &str) -> Result<String, String> {
    parse_trait_key(key).map_err(|_| {
        format!(
            "a trait key has 1 to 64 characters from A-Z a-z 0-9 _ . - and starts with a letter or _, got {:?}",
            clip(key)
        )
    })
}

/// Text quoted in a message, cut to a readable length.
fn clip(text: &str) -> String {
    const MAX_CHARS: usize = 60;
    if text.chars().count() <= MAX_CHARS {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(MAX_CHARS).collect();
    clipped.push_str("...");
    clipped
}

/// Resolves a dotted name: a documented variable or `customer.traits.KEY`.
fn resolve_dotted(name: &str) -> Result<Variable, String> {
    if name == "customer.traits" {
        return Err(
            r#"`customer.traits` holds every trait; name one, as in customer.traits["tier"] or customer.traits.tier"#
                .to_owned(),
        );
    }
    if let Some(key) = name.strip_prefix("customer.traits.") {
        return trait_key(key).map(Variable::Trait);
    }
    if let Some(found) = DOCUMENTED
        .iter()
        .find(|variable| !matches!(variable, Variable::Trait(_)) && spec(variable).name == name)
    {
        return Ok(found.clone());
    }
    Err(unknown_variable(name))
}

/// The message for a name that is no variable: the group it opens, or the
/// variables it may have meant.
fn unknown_variable(name: &str) -> String {
    let shown = clip(name);
    let names: Vec<&str> = DOCUMENTED.iter().map(|v| spec(v).name).collect();
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
    let suggestion = names
        .iter()
        .filter(|candidate| !candidate.contains('['))
        .map(|candidate| (edit_distance(name, candidate), *candidate))
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

/// The Levenshtein distance between two short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// "==, !=, ... contains and has()".
fn supported_list() -> String {
    let operators = operators();
    match operators.split_last() {
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------
// Step 1: size and nesting, before the parser sees the text.

/// Refuses a rule that is too long, nests brackets too deeply, or has a
/// string the parser's lexer would not read as one. The last check keeps
/// this scanner's idea of what is inside a string the same as the
/// parser's, so that no bracket escapes the count.
fn scan(source: &str) -> Result<(), CompileError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(CompileError {
            position: char_position(source, MAX_SOURCE_BYTES),
            message: format!(
                "the rule is {} bytes long; a rule has at most {MAX_SOURCE_BYTES} bytes",
                source.len()
            ),
        });
    }
    if source.trim().is_empty() {
        return Err(CompileError {
            position: 0,
            message: "the rule is empty; write a condition such as features.purchase_count > 0"
                .to_owned(),
        });
    }
    let chars: Vec<char> = source.chars().collect();
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '"' | '\'' => {
                i = skip_string(&chars, i, i, false)?;
                continue;
            }
            'a'..='z' | 'A'..='Z' | '_' => {
                // b"...", r"...", br"...": a prefixed string, else an identifier.
                let mut quote = i;
                if matches!(chars[quote], 'b' | 'B') {
                    quote += 1;
                }
                let raw = matches!(chars.get(quote), Some('r' | 'R'));
                if raw {
                    quote += 1;
                }
                if quote > i && matches!(chars.get(quote), Some('"' | '\'')) {
                    i = skip_string(&chars, i, quote, raw)?;
                    continue;
                }
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                continue;
            }
            '0'..='9' => {
                i = skip_number(&chars, i);
                continue;
            }
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(CompileError {
                        position: i,
                        message: format!(
                            "the rule nests brackets more than {MAX_NESTING} levels deep"
                        ),
                    });
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Skips the string whose prefix starts at `start` and whose first quote is
/// at `quote`, following the CEL lexer; returns the index after it.
fn skip_string(
    chars: &[char],
    start: usize,
    quote: usize,
    raw: bool,
) -> Result<usize, CompileError> {
    let delimiter = chars[quote];
    let triple =
        chars.get(quote + 1) == Some(&delimiter) && chars.get(quote + 2) == Some(&delimiter);
    let mut i = if triple { quote + 3 } else { quote + 1 };
    let unterminated = || CompileError {
        position: start,
        message: if triple {
            format!("this string has no closing {0}{0}{0}", delimiter)
        } else {
            format!("this string has no closing {delimiter} on its line")
        },
    };
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(unterminated());
        };
        if c == delimiter {
            if !triple {
                return Ok(i + 1);
            }
            if chars.get(i + 1) == Some(&delimiter) && chars.get(i + 2) == Some(&delimiter) {
                return Ok(i + 3);
            }
        } else if !triple && (c == '\n' || c == '\r') {
            return Err(unterminated());
        } else if c == '\\' && !raw {
            i += escape_length(&chars[i..]).ok_or_else(|| CompileError {
                position: i,
                message: r#"invalid escape in a string; the escapes are \n \t \r \" \' \\ \xHH \uHHHH \UHHHHHHHH and octal \NNN"#
                    .to_owned(),
            })?;
            continue;
        }
        i += 1;
    }
}

/// The length of the escape sequence at the start of `chars` (which starts
/// with a backslash), if CEL knows it.
fn escape_length(chars: &[char]) -> Option<usize> {
    let hex = |from: usize, count: usize| {
        chars.len() >= from + count
            && chars[from..from + count]
                .iter()
                .all(char::is_ascii_hexdigit)
    };
    match chars.get(1)? {
        'a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '"' | '\'' | '\\' | '?' | '`' => Some(2),
        'x' | 'X' if hex(2, 2) => Some(4),
        'u' if hex(2, 4) => Some(6),
        'U' if hex(2, 8) => Some(10),
        '0'..='3'
            if matches!(chars.get(2), Some('0'..='7'))
                && matches!(chars.get(3), Some('0'..='7')) =>
        {
            Some(4)
        }
        _ => None,
    }
}

/// Skips a number literal (`12`, `0x1F`, `1.5e3`, `5u`); returns the index
/// after it.
fn skip_number(chars: &[char], start: usize) -> usize {
    let digits = |mut i: usize, hex: bool| {
        while i < chars.len()
            && (chars[i].is_ascii_digit() || (hex && chars[i].is_ascii_hexdigit()))
        {
            i += 1;
        }
        i
    };
    let mut i;
    if chars[start] == '0' && chars.get(start + 1) == Some(&'x') {
        i = digits(start + 2, true);
    } else {
        i = digits(start, false);
        if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
            i = digits(i + 1, false);
        }
        if matches!(chars.get(i), Some('e' | 'E')) {
            let sign = usize::from(matches!(chars.get(i + 1), Some('+' | '-')));
            if chars.get(i + 1 + sign).is_some_and(char::is_ascii_digit) {
                i = digits(i + 1 + sign, false);
            }
        }
    }
    if matches!(chars.get(i), Some('u' | 'U')) {
        i += 1;
    }
    i
}

/// The character offset of a byte offset (rounded down to a character).
fn char_position(source: &str, byte: usize) -> usize {
    source
        .char_indices()
        .take_while(|(offset, _)| *offset < byte)
        .count()
}

// ---------------------------------------------------------------------------
// Step 2: parsing, on the compiler's thread.

fn parse_and_compile(source: &str) -> Result<Predicate, CompileError> {
    let (expr, info) = Parser::new()
        .parse_with_source_info(source)
        .map_err(|errors| parse_error(source, &errors))?;
    Compiler {
        source,
        info: &info,
    }
    .condition(&expr, 0)
}

/// The first of the parser's errors, at its character position.
fn parse_error(source: &str, errors: &ParseErrors) -> CompileError {
    let Some(first) = errors.errors.first() else {
        return CompileError {
            position: 0,
            message: "the rule could not be parsed".to_owned(),
        };
    };
    let (line, column) = first.pos;
    let mut position = 0usize;
    if line >= 1 && column >= 1 {
        let line = usize::try_from(line - 1).unwrap_or(0);
        let column = usize::try_from(column - 1).unwrap_or(0);
        position = source
            .split('\n')
            .take(line)
            .map(|text| text.chars().count() + 1)
            .sum::<usize>()
            + column;
    }
    CompileError {
        position: position.min(source.chars().count()),
        message: describe_parse_error(&first.msg),
    }
}

/// The parser's message, made readable for a person typing a rule.
fn describe_parse_error(raw: &str) -> String {
    let message = raw.strip_prefix("Syntax error: ").unwrap_or(raw);
    if message.contains("Recursion limit") {
        return format!("the rule nests more than {MAX_NESTING} levels deep");
    }
    if message.contains("error recovery attempt limit") {
        return "too many syntax errors; check the brackets and the quotes".to_owned();
    }
    if message.contains("invalid argument to has() macro") {
        return r#"has() takes a variable, as in has(customer.age) or has(customer.traits.tier); for a trait key with - write "my-key" in customer.traits"#.to_owned();
    }
    if let Some(word) = message.strip_prefix("reserved identifier: ") {
        return format!("`{word}` is a reserved word in CEL, not a variable");
    }
    if let Some(text) = message.strip_prefix("token recognition error at: ") {
        return format!("syntax error: unexpected character {text}");
    }
    let mut message = message
        .replace("'<EOF>'", "the end of the rule")
        .replace("<EOF>", "the end of the rule");
    if let Some(at) = message.find(" expecting {") {
        if message[at..].contains("IDENTIFIER") {
            message.truncate(at);
            message.push_str(" where a value, a variable, (, [, ! or - should be");
        }
    }
    let message: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    format!("syntax error: {message}")
}

// ---------------------------------------------------------------------------
// Step 3: from the AST to a predicate.

/// A literal as written, before it takes the type of its variable.
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Int(i64),
    Double(f64),
    String(String),
    Bool(bool),
    Null,
    Bytes,
}

impl Raw {
    /// "the int 5", for messages.
    fn describe(&self) -> String {
        match self {
            Raw::Int(value) => format!("the int {value}"),
            Raw::Double(value) => format!("the double {value:?}"),
            Raw::String(value) => format!("the string {:?}", clip(value)),
            Raw::Bool(value) => format!("the bool {value}"),
            Raw::Null => "null".to_owned(),
            Raw::Bytes => "a bytes literal".to_owned(),
        }
    }
}

/// One side of a comparison.
enum Operand {
    /// A variable, and where its name starts.
    Variable(Variable, usize),
    /// A literal, and where it is.
    Literal(Raw, usize),
    /// Anything else.
    Other,
}

/// Walks one parsed rule.
struct Compiler<'a> {
    source: &'a str,
    info: &'a SourceInfo,
}

impl Compiler<'_> {
    /// The character position of a node.
    fn at(&self, id: u64) -> usize {
        self.info
            .offset_for(id)
            .map(|(start, _)| char_position(self.source, start as usize))
            .unwrap_or(0)
    }

    /// The character position of the name of a call, whose node sits at
    /// its opening parenthesis: `startsWith` in `x.startsWith("a")`.
    fn name_at(&self, id: u64) -> (usize, &str) {
        let Some((paren, _)) = self.info.offset_for(id) else {
            return (0, "");
        };
        let bytes = self.source.as_bytes();
        let mut end = (paren as usize).min(bytes.len());
        while end > 0 && bytes[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        let mut start = end;
        while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            start -= 1;
        }
        let name = self.source.get(start..end).unwrap_or("");
        (char_position(self.source, start), name)
    }

    fn error(&self, position: usize, message: impl Into<String>) -> CompileError {
        CompileError {
            position,
            message: message.into(),
        }
    }

    /// A rule, or an operand of `&&`, `||` or `!`.
    fn condition(&self, expr: &IdedExpr, depth: usize) -> Result<Predicate, CompileError> {
        if depth > MAX_NESTING {
            return Err(self.error(
                self.at(expr.id),
                format!("the rule nests conditions more than {MAX_NESTING} levels deep"),
            ));
        }
        match &expr.expr {
            Expr::Literal(LiteralValue::Boolean(value)) => Ok(Predicate::Const(*value.inner())),
            Expr::Literal(_) => {
                let found = match self.operand(expr)? {
                    Operand::Literal(raw, _) => raw.describe(),
                    Operand::Variable(..) | Operand::Other => "a literal".to_owned(),
                };
                Err(self.error(
                    self.at(expr.id),
                    format!(
                        "a rule is a condition that is true or false, but this is {found} on its own; compare a variable with it, as in features.purchase_count > 0"
                    ),
                ))
            }
            Expr::Select(select) if select.test => self.has(expr, select),
            Expr::Ident(_) | Expr::Select(_) => self.bare(expr),
            Expr::Call(call) => {
                let unary = call.target.is_none() && call.args.len() == 1;
                let binary = call.target.is_none() && call.args.len() == 2;
                match call.func_name.as_str() {
                    operators::LOGICAL_AND if binary => Ok(Predicate::And(self.junction(
                        expr,
                        operators::LOGICAL_AND,
                        depth,
                    )?)),
                    operators::LOGICAL_OR if binary => Ok(Predicate::Or(self.junction(
                        expr,
                        operators::LOGICAL_OR,
                        depth,
                    )?)),
                    operators::LOGICAL_NOT if unary => Ok(Predicate::Not(Box::new(
                        self.condition(&call.args[0], depth + 1)?,
                    ))),
                    operators::IN if binary => self.membership(expr, call),
                    operators::INDEX if binary => self.bare(expr),
                    name if binary => match comparison(name) {
                        Some(op) => self.compare(expr, call, op),
                        None => Err(self.unsupported(expr)),
                    },
                    name => match (string_test(name), &call.target) {
                        (Some(test), Some(target)) => self.text(expr, call, target, test),
                        _ => Err(self.unsupported(expr)),
                    },
                }
            }
            Expr::Comprehension(_)
            | Expr::List(_)
            | Expr::Map(_)
            | Expr::Struct(_)
            | Expr::Unspecified => Err(self.unsupported(expr)),
        }
    }

    /// The operands of a chain of `&&` (or of `||`), flattened, in order.
    fn junction(
        &self,
        expr: &IdedExpr,
        function: &str,
        depth: usize,
    ) -> Result<Vec<Predicate>, CompileError> {
        let mut operands = Vec::new();
        let mut pending = vec![expr];
        while let Some(node) = pending.pop() {
            match &node.expr {
                Expr::Call(call) if call.func_name == function && call.target.is_none() => {
                    pending.extend(call.args.iter().rev());
                }
                _ => operands.push(self.condition(node, depth + 1)?),
            }
        }
        Ok(operands)
    }

    /// A variable on its own: a bool, or a trait that must be `true`.
    fn bare(&self, expr: &IdedExpr) -> Result<Predicate, CompileError> {
        let (variable, position) = self.variable(expr)?;
        let spec = spec(&variable);
        match spec.ty {
            Type::Bool | Type::Trait => Ok(Predicate::IsTrue(variable)),
            ty => Err(self.error(
                position,
                format!(
                    "`{}` is {}, not a condition; use it in a comparison, as in {}",
                    spec.name,
                    ty.with_article(),
                    spec.example
                ),
            )),
        }
    }

    /// `has(customer.age)`.
    fn has(&self, expr: &IdedExpr, select: &SelectExpr) -> Result<Predicate, CompileError> {
        let Some((operand, root)) = dotted_name(&select.operand) else {
            return Err(self.error(
                self.name_at(expr.id).0,
                "has() takes a variable, as in has(customer.age) or has(customer.traits.tier)",
            ));
        };
        let position = self.at(root);
        let name = format!("{operand}.{}", select.field);
        let variable = resolve_dotted(&name).map_err(|message| self.error(position, message))?;
        if !spec(&variable).optional {
            let optional: Vec<&str> = DOCUMENTED
                .iter()
                .map(spec)
                .filter(|spec| spec.optional)
                .map(|spec| spec.name)
                .collect();
            return Err(self.error(
                position,
                format!(
                    "`{name}` is never absent, so has() would always be true; has() applies to {}",
                    optional.join(", ")
                ),
            ));
        }
        Ok(Predicate::Has(variable))
    }

    /// `variable op literal`, or `literal op variable` turned around.
    fn compare(
        &self,
        expr: &IdedExpr,
        call: &CallExpr,
        op: Comparison,
    ) -> Result<Predicate, CompileError> {
        let [left, right] = call.args.as_slice() else {
            return Err(self.unsupported(expr));
        };
        let op_position = self.at(expr.id);
        let (variable, raw, raw_position, op) = match (self.operand(left)?, self.operand(right)?) {
            (Operand::Variable(variable, _), Operand::Literal(raw, at)) => (variable, raw, at, op),
            (Operand::Literal(raw, at), Operand::Variable(variable, _)) => {
                (variable, raw, at, flipped(op))
            }
            (Operand::Variable(..), Operand::Variable(_, at)) => {
                return Err(self.error(
                    at,
                    "comparing two variables is not supported; compare a variable with a literal, as in features.purchases_90d > 2",
                ));
            }
            (Operand::Literal(..), Operand::Literal(..)) => {
                return Err(self.error(
                    op_position,
                    "both sides of this comparison are literals; one side must be a variable, as in features.purchases_90d > 2",
                ));
            }
            (Operand::Other, _) => return Err(self.unsupported_operand(left)),
            (_, Operand::Other) => return Err(self.unsupported_operand(right)),
        };
        let spec = spec(&variable);
        let ordering = !matches!(op, Comparison::Eq | Comparison::Ne);
        if ordering {
            let orderable = spec.ty.is_number()
                || (spec.ty == Type::Trait && matches!(raw, Raw::Int(_) | Raw::Double(_)));
            if !orderable {
                let name = display_name(&variable);
                let advice = match spec.ty {
                    Type::String => {
                        "compare it with == or != or test it with startsWith, endsWith or contains"
                            .to_owned()
                    }
                    Type::Enum(_) => {
                        format!("list the values you want with in, as in {}", spec.example)
                    }
                    Type::Trait => {
                        format!("compare it with a number to order it, as in {name} > 3")
                    }
                    Type::Bool | Type::Int | Type::Double => "compare it with == or !=".to_owned(),
                };
                let what = if spec.ty == Type::Trait {
                    format!("{name} is compared with {}", raw.describe())
                } else {
                    format!("`{name}` is {}", spec.ty.with_article())
                };
                return Err(self.error(
                    op_position,
                    format!("<, <=, > and >= order numbers, but {what}; {advice}"),
                ));
            }
        }
        let literal = self.typed(&variable, raw, raw_position)?;
        Ok(Predicate::Compare(variable, op, literal))
    }

    /// `variable in [literals]`, or `"key" in customer.traits`.
    fn membership(&self, expr: &IdedExpr, call: &CallExpr) -> Result<Predicate, CompileError> {
        let [left, right] = call.args.as_slice() else {
            return Err(self.unsupported(expr));
        };
        if let Some((name, _)) = dotted_name(right).filter(|(name, _)| name == "customer.traits") {
            let Expr::Literal(LiteralValue::String(key)) = &left.expr else {
                return Err(self.error(
                    self.name_position(left),
                    format!(r#"the left of `in {name}` is a trait key in quotes, as in "tier" in customer.traits"#),
                ));
            };
            let key =
                trait_key(key.inner()).map_err(|message| self.error(self.at(left.id), message))?;
            return Ok(Predicate::Has(Variable::Trait(key)));
        }
        let variable = match self.operand(left)? {
            Operand::Variable(variable, _) => variable,
            Operand::Literal(..) => {
                return Err(self.error(
                    self.at(left.id),
                    r#"`in` takes a variable on its left and a list on its right, as in features.stage in ["REBUYING", "JUST_BUYING"]; to test for a trait write "tier" in customer.traits"#,
                ));
            }
            Operand::Other => return Err(self.unsupported_operand(left)),
        };
        let Expr::List(list) = &right.expr else {
            return Err(self.error(
                self.name_position(right),
                format!(
                    r#"the right of `in` must be a list of values in [ ], as in {} in [...]; found {}"#,
                    display_name(&variable),
                    self.describe(right)
                ),
            ));
        };
        if list.elements.is_empty() {
            return Err(self.error(
                self.at(right.id),
                "the list after `in` is empty, so the condition could never hold; list at least one value",
            ));
        }
        let mut literals = Vec::with_capacity(list.elements.len());
        for element in &list.elements {
            match self.operand(element)? {
                Operand::Literal(raw, at) => literals.push(self.typed(&variable, raw, at)?),
                Operand::Variable(_, at) => {
                    return Err(self.error(
                        at,
                        r#"the list after `in` holds only literal values, such as "TR" or 3, not variables"#,
                    ));
                }
                Operand::Other => return Err(self.unsupported_operand(element)),
            }
        }
        Ok(Predicate::In(variable, literals))
    }

    /// `variable.startsWith("text")` and the other string tests.
    fn text(
        &self,
        expr: &IdedExpr,
        call: &CallExpr,
        target: &IdedExpr,
        test: StringTest,
    ) -> Result<Predicate, CompileError> {
        let (method_position, method) = self.name_at(expr.id);
        let variable = match self.operand(target)? {
            Operand::Variable(variable, _) => variable,
            Operand::Literal(..) => {
                return Err(self.error(
                    self.at(target.id),
                    format!(r#"`{method}` applies to a string variable, as in customer.city.{method}("Is")"#),
                ));
            }
            Operand::Other => return Err(self.unsupported_operand(target)),
        };
        let spec = spec(&variable);
        if !matches!(spec.ty, Type::String | Type::Trait) {
            return Err(self.error(
                method_position,
                format!(
                    "`{method}` applies to strings, but `{}` is {}; use it as in {}",
                    spec.name,
                    spec.ty.with_article(),
                    spec.example
                ),
            ));
        }
        let argument = match call.args.as_slice() {
            [argument] => argument,
            _ => {
                return Err(self.error(
                    method_position,
                    format!(r#"`{method}` takes one string, as in customer.city.{method}("Is")"#),
                ));
            }
        };
        let Expr::Literal(LiteralValue::String(text)) = &argument.expr else {
            return Err(self.error(
                self.name_position(argument),
                format!(r#"the argument of `{method}` must be a string in quotes, as in customer.city.{method}("Is")"#),
            ));
        };
        Ok(Predicate::Text(variable, test, text.inner().to_owned()))
    }

    /// Classifies one side of a comparison or an element of a list.
    fn operand(&self, expr: &IdedExpr) -> Result<Operand, CompileError> {
        let at = self.at(expr.id);
        let raw = match &expr.expr {
            Expr::Ident(_) | Expr::Select(SelectExpr { test: false, .. }) => {
                if dotted_name(expr).is_none() {
                    return Ok(Operand::Other);
                }
                let (variable, position) = self.variable(expr)?;
                return Ok(Operand::Variable(variable, position));
            }
            Expr::Call(call) if call.func_name == operators::INDEX && call.args.len() == 2 => {
                let (variable, position) = self.variable(expr)?;
                return Ok(Operand::Variable(variable, position));
            }
            Expr::Call(call)
                if call.func_name == operators::NEGATE
                    && call.target.is_none()
                    && call.args.len() == 1 =>
            {
                return match self.operand(&call.args[0])? {
                    Operand::Literal(Raw::Int(value), _) => match value.checked_neg() {
                        Some(negated) => Ok(Operand::Literal(Raw::Int(negated), at)),
                        None => Err(self.error(at, format!("-({value}) is out of the int range"))),
                    },
                    Operand::Literal(Raw::Double(value), _) => {
                        Ok(Operand::Literal(Raw::Double(-value), at))
                    }
                    Operand::Literal(..) | Operand::Variable(..) | Operand::Other => {
                        Ok(Operand::Other)
                    }
                };
            }
            Expr::Literal(literal) => match literal {
                LiteralValue::Boolean(value) => Raw::Bool(*value.inner()),
                LiteralValue::Int(value) => Raw::Int(*value.inner()),
                LiteralValue::UInt(value) => match i64::try_from(*value.inner()) {
                    Ok(value) => Raw::Int(value),
                    Err(_) => {
                        return Err(
                            self.error(at, format!("{}u is out of the int range", value.inner()))
                        );
                    }
                },
                LiteralValue::Double(value) => Raw::Double(*value.inner()),
                LiteralValue::String(value) => Raw::String(value.inner().to_owned()),
                LiteralValue::Null => Raw::Null,
                LiteralValue::Bytes(_) => Raw::Bytes,
            },
            _ => return Ok(Operand::Other),
        };
        Ok(Operand::Literal(raw, at))
    }

    /// Resolves a variable reference: a dotted name or `customer.traits[...]`.
    fn variable(&self, expr: &IdedExpr) -> Result<(Variable, usize), CompileError> {
        if let Some((name, root)) = dotted_name(expr) {
            let position = self.at(root);
            return resolve_dotted(&name)
                .map(|variable| (variable, position))
                .map_err(|message| self.error(position, message));
        }
        let Expr::Call(call) = &expr.expr else {
            return Err(self.unsupported(expr));
        };
        let [target, key] = call.args.as_slice() else {
            return Err(self.unsupported(expr));
        };
        match dotted_name(target) {
            Some((name, root)) if name == "customer.traits" => {
                let position = self.at(root);
                let Expr::Literal(LiteralValue::String(key_text)) = &key.expr else {
                    return Err(self.error(
                        self.name_position(key),
                        format!(r#"a trait key is a string in quotes, as in customer.traits["tier"]; found {}"#, self.describe(key)),
                    ));
                };
                let key = trait_key(key_text.inner())
                    .map_err(|message| self.error(self.at(key.id), message))?;
                Ok((Variable::Trait(key), position))
            }
            _ => Err(self.unsupported(expr)),
        }
    }

    /// Types a literal by the variable it is compared with.
    fn typed(&self, variable: &Variable, raw: Raw, at: usize) -> Result<Literal, CompileError> {
        let spec = spec(variable);
        let name = display_name(variable);
        match (spec.ty, raw) {
            (Type::Int, Raw::Int(value)) => Ok(Literal::Int(value)),
            (Type::Int, Raw::Double(value)) => {
                // 2^63 is exact as a double; every whole double below it fits.
                const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;
                if value.fract() == 0.0 && (-TWO_TO_63..TWO_TO_63).contains(&value) {
                    Ok(Literal::Int(value as i64))
                } else {
                    Err(self.error(
                        at,
                        format!("`{name}` is an int, so it cannot be compared with {value:?}; use a whole number"),
                    ))
                }
            }
            (Type::Double, Raw::Int(value)) => Ok(Literal::Double(value as f64)),
            (Type::Double, Raw::Double(value)) => Ok(Literal::Double(value)),
            (Type::String, Raw::String(value)) => {
                if *variable == Variable::Country {
                    self.check_country(&value, at)?;
                }
                Ok(Literal::String(value))
            }
            (Type::Bool, Raw::Bool(value)) => Ok(Literal::Bool(value)),
            (Type::Enum(kind), Raw::String(value)) => kind.literal(&value).ok_or_else(|| {
                let case = if kind.literal(&value.to_uppercase()).is_some() {
                    " (values are upper case)"
                } else {
                    ""
                };
                self.error(
                    at,
                    format!(
                        "{:?} is not a value of {name}{case}; the values are {}",
                        clip(&value),
                        kind.names().join(", ")
                    ),
                )
            }),
            (Type::Trait, Raw::String(value)) => Ok(Literal::String(value)),
            (Type::Trait, Raw::Int(value)) => Ok(Literal::Double(value as f64)),
            (Type::Trait, Raw::Double(value)) => Ok(Literal::Double(value)),
            (Type::Trait, Raw::Bool(value)) => Ok(Literal::Bool(value)),
            (_, Raw::Null) => Err(self.error(
                at,
                if spec.optional {
                    format!("null is not supported; test presence with has(), as in has({name})")
                } else {
                    format!("null is not supported, and `{name}` is never absent")
                },
            )),
            (ty, raw) => Err(self.error(
                at,
                format!(
                    "`{name}` is {}, so it cannot be compared with {}; write it as in {}",
                    ty.with_article(),
                    raw.describe(),
                    spec.example
                ),
            )),
        }
    }

    /// Country codes are compared as stored: an assigned ISO code in upper
    /// case; anything else would never match.
    fn check_country(&self, value: &str, at: usize) -> Result<(), CompileError> {
        match parse_country_code(value) {
            Ok(code) if code == value => Ok(()),
            Ok(code) => {
                Err(self.error(at, format!("country codes are upper case: write {code:?}")))
            }
            Err(_) => Err(self.error(
                at,
                format!(
                    r#"{:?} is not an ISO 3166-1 alpha-2 country code, such as "TR", "EG" or "IR""#,
                    clip(value)
                ),
            )),
        }
    }

    /// The start of the name a node spells, or the node's own position.
    fn name_position(&self, expr: &IdedExpr) -> usize {
        match dotted_name(expr) {
            Some((_, root)) => self.at(root),
            None => self.at(expr.id),
        }
    }

    /// A short description of a node, for messages.
    fn describe(&self, expr: &IdedExpr) -> String {
        match &expr.expr {
            Expr::Literal(_) => match self.operand(expr) {
                Ok(Operand::Literal(raw, _)) => raw.describe(),
                _ => "a literal".to_owned(),
            },
            Expr::Ident(_) | Expr::Select(_) => match dotted_name(expr) {
                Some((name, _)) => format!("`{}`", clip(&name)),
                None => "a field selection".to_owned(),
            },
            Expr::List(_) => "a list".to_owned(),
            Expr::Map(_) => "a map".to_owned(),
            Expr::Struct(_) => "a message".to_owned(),
            Expr::Call(_) | Expr::Comprehension(_) | Expr::Unspecified => {
                "an expression".to_owned()
            }
        }
    }

    /// An operand that is neither a variable nor a literal.
    fn unsupported_operand(&self, expr: &IdedExpr) -> CompileError {
        let is_condition = match &expr.expr {
            Expr::Select(select) => select.test,
            Expr::Call(call) => {
                comparison(&call.func_name).is_some()
                    || string_test(&call.func_name).is_some()
                    || matches!(
                        call.func_name.as_str(),
                        operators::LOGICAL_AND
                            | operators::LOGICAL_OR
                            | operators::LOGICAL_NOT
                            | operators::IN
                    )
            }
            _ => false,
        };
        if is_condition {
            let position = match &expr.expr {
                Expr::Select(_) => self.name_at(expr.id).0,
                _ => self.at(expr.id),
            };
            return self.error(
                position,
                "a condition cannot be compared or listed; compare a variable with a literal, as in features.purchases_90d > 2, and combine conditions with &&, || and !",
            );
        }
        self.unsupported(expr)
    }

    /// The refusal of a construct the rule language does not have.
    fn unsupported(&self, expr: &IdedExpr) -> CompileError {
        let supported = supported_list();
        match &expr.expr {
            Expr::Call(call) => {
                let symbol = match call.func_name.as_str() {
                    operators::ADD => Some("+"),
                    operators::SUBSTRACT => Some("-"),
                    operators::MULTIPLY => Some("*"),
                    operators::DIVIDE => Some("/"),
                    operators::MODULO => Some("%"),
                    _ => None,
                };
                if let Some(symbol) = symbol {
                    return self.error(
                        self.at(expr.id),
                        format!("`{symbol}` is not supported; rules use {supported}"),
                    );
                }
                match call.func_name.as_str() {
                    operators::CONDITIONAL => self.error(
                        self.at(expr.id),
                        format!("the conditional `? :` is not supported; rules use {supported}"),
                    ),
                    operators::NEGATE => self.error(
                        self.at(expr.id),
                        "`-` applies only to a number literal, as in customer.income > -5",
                    ),
                    operators::INDEX => self.error(
                        self.at(expr.id),
                        r#"indexing with [ ] applies only to customer.traits, as in customer.traits["tier"]"#,
                    ),
                    _ => {
                        let (position, name) = self.name_at(expr.id);
                        let name = clip(if name.is_empty() { &call.func_name } else { name });
                        if call.target.is_some() {
                            self.error(
                                position,
                                format!("the method `{name}()` is not supported; strings have startsWith, endsWith and contains, and rules use {supported}"),
                            )
                        } else {
                            self.error(
                                position,
                                format!("the function `{name}()` is not supported; rules use {supported}"),
                            )
                        }
                    }
                }
            }
            Expr::Comprehension(_) => {
                let (position, name) = self.name_at(expr.id);
                self.error(
                    position,
                    format!("the macro `{}()` is not supported (nor are all, exists, exists_one, map and filter); rules use {supported}", clip(name)),
                )
            }
            Expr::List(_) => self.error(
                self.at(expr.id),
                r#"a list is allowed only on the right of `in`, as in features.stage in ["REBUYING", "JUST_BUYING"]"#,
            ),
            Expr::Map(_) => self.error(
                self.at(expr.id),
                format!("maps {{...}} are not supported; rules use {supported}"),
            ),
            Expr::Struct(_) => self.error(
                self.at(expr.id),
                format!("messages Name{{...}} are not supported; rules use {supported}"),
            ),
            Expr::Select(select) if select.test => self.error(
                self.name_at(expr.id).0,
                "has() is a condition on its own, as in has(customer.age) or !has(customer.age)",
            ),
            Expr::Select(_) => self.error(
                self.at(expr.id),
                "a field can be selected only from customer or features, as in customer.country",
            ),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => self.error(
                self.at(expr.id),
                format!("{} is not supported here; rules use {supported}", self.describe(expr)),
            ),
        }
    }
}

/// The name an identifier or a chain of field selections spells, and the
/// id of its first identifier: `customer.traits.tier`.
fn dotted_name(expr: &IdedExpr) -> Option<(String, u64)> {
    let mut segments = Vec::new();
    let mut node = expr;
    loop {
        match &node.expr {
            Expr::Ident(name) => {
                segments.push(name.as_str());
                segments.reverse();
                return Some((segments.join("."), node.id));
            }
            Expr::Select(select) if !select.test => {
                segments.push(select.field.as_str());
                node = &select.operand;
            }
            _ => return None,
        }
    }
}

fn comparison(function: &str) -> Option<Comparison> {
    match function {
        operators::EQUALS => Some(Comparison::Eq),
        operators::NOT_EQUALS => Some(Comparison::Ne),
        operators::LESS => Some(Comparison::Lt),
        operators::LESS_EQUALS => Some(Comparison::Le),
        operators::GREATER => Some(Comparison::Gt),
        operators::GREATER_EQUALS => Some(Comparison::Ge),
        _ => None,
    }
}

fn string_test(function: &str) -> Option<StringTest> {
    match function {
        "startsWith" => Some(StringTest::StartsWith),
        "endsWith" => Some(StringTest::EndsWith),
        "contains" => Some(StringTest::Contains),
        _ => None,
    }
}

/// The comparison with its sides swapped: `3 < x` is `x > 3`.
fn flipped(op: Comparison) -> Comparison {
    match op {
        Comparison::Eq => Comparison::Eq,
        Comparison::Ne => Comparison::Ne,
        Comparison::Lt => Comparison::Gt,
        Comparison::Le => Comparison::Ge,
        Comparison::Gt => Comparison::Lt,
        Comparison::Ge => Comparison::Le,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::is_dimension;
    use Comparison::{Eq, Ge, Gt, Le, Lt, Ne};

    fn ok(source: &str) -> Predicate {
        compile(source).unwrap_or_else(|error| panic!("{source:?} was refused: {error}"))
    }

    /// Asserts that `source` is refused at `position` with a message that
    /// holds `fragment`.
    fn refused(source: &str, position: usize, fragment: &str) {
        let error = match compile(source) {
            Ok(predicate) => panic!("{source:?} compiled to {predicate:?}"),
            Err(error) => error,
        };
        assert!(
            error.message.contains(fragment),
            "{source:?}: expected {fragment:?} in {:?}",
            error.message
        );
        assert_eq!(error.position, position, "{source:?}: {}", error.message);
        assert!(
            !error.message.contains('\n'),
            "{source:?}: {}",
            error.message
        );
    }

    /// The character offset of the first `needle` in `source`.
    fn at(source: &str, needle: &str) -> usize {
        let byte = source.find(needle).expect("needle in source");
        source[..byte].chars().count()
    }

    fn compare(variable: Variable, op: Comparison, literal: Literal) -> Predicate {
        Predicate::Compare(variable, op, literal)
    }

    fn trait_(key: &str) -> Variable {
        Variable::Trait(key.to_owned())
    }

    fn text(value: &str) -> Literal {
        Literal::String(value.to_owned())
    }

    #[test]
    fn every_variable_compiles_to_its_variable_and_type() {
        use Variable as V;
        let cases = [
            (
                r#"customer.relationship == "INTERNAL""#,
                compare(
                    V::Relationship,
                    Eq,
                    Literal::Relationship(Relationship::Internal),
                ),
            ),
            (
                r#"customer.party == "BUSINESS""#,
                compare(V::Party, Eq, Literal::Party(Party::Business)),
            ),
            ("customer.age >= 18", compare(V::Age, Ge, Literal::Int(18))),
            (
                r#"customer.age_band == "18_24""#,
                compare(V::AgeBand, Eq, Literal::AgeBand(AgeBand::From18To24)),
            ),
            (
                r#"customer.gender != "MALE""#,
                compare(V::Gender, Ne, Literal::Gender(Gender::Male)),
            ),
            (
                r#"customer.country == "TR""#,
                compare(V::Country, Eq, text("TR")),
            ),
            (
                r#"customer.region == "Marmara""#,
                compare(V::Region, Eq, text("Marmara")),
            ),
            (
                r#"customer.city == "Izmir""#,
                compare(V::City, Eq, text("Izmir")),
            ),
            (
                r#"customer.language == "tr""#,
                compare(V::Language, Eq, text("tr")),
            ),
            (
                "customer.income > 30000",
                compare(V::Income, Gt, Literal::Double(30000.0)),
            ),
            (
                r#"customer.income_band == "VERY_HIGH""#,
                compare(V::IncomeBand, Eq, Literal::IncomeBand(IncomeBand::VeryHigh)),
            ),
            (
                r#"customer.traits["tier"] == "gold""#,
                compare(trait_("tier"), Eq, text("gold")),
            ),
            (
                r#"customer.traits.tier == "gold""#,
                compare(trait_("tier"), Eq, text("gold")),
            ),
            (
                r#"customer.consent.email == "GRANTED""#,
                compare(
                    V::Consent(Channel::Email),
                    Eq,
                    Literal::Consent(ConsentStatus::Granted),
                ),
            ),
            (
                r#"customer.consent.sms == "DENIED""#,
                compare(
                    V::Consent(Channel::Sms),
                    Eq,
                    Literal::Consent(ConsentStatus::Denied),
                ),
            ),
            (
                r#"customer.consent.push == "UNKNOWN""#,
                compare(
                    V::Consent(Channel::Push),
                    Eq,
                    Literal::Consent(ConsentStatus::Unknown),
                ),
            ),
            (
                r#"customer.consent.ads != "GRANTED""#,
                compare(
                    V::Consent(Channel::Ads),
                    Ne,
                    Literal::Consent(ConsentStatus::Granted),
                ),
            ),
            (
                "customer.objects_to_profiling",
                Predicate::IsTrue(V::ObjectsToProfiling),
            ),
            (
                r#"features.frequency == "FREQUENT_CUSTOMER""#,
                compare(
                    V::Frequency,
                    Eq,
                    Literal::Frequency(FrequencyClass::FrequentCustomer),
                ),
            ),
            (
                r#"features.stage == "TELLING_OTHERS""#,
                compare(V::Stage, Eq, Literal::Stage(EngagementStage::TellingOthers)),
            ),
            (
                "features.purchase_count > 1",
                compare(V::PurchaseCount, Gt, Literal::Int(1)),
            ),
            (
                "features.purchases_90d >= 2",
                compare(V::Purchases90d, Ge, Literal::Int(2)),
            ),
            (
                "features.purchases_365d < 4",
                compare(V::Purchases365d, Lt, Literal::Int(4)),
            ),
            (
                "features.total_spend > 100",
                compare(V::TotalSpend, Gt, Literal::Double(100.0)),
            ),
            (
                "features.avg_order_value > 49.5",
                compare(V::AvgOrderValue, Gt, Literal::Double(49.5)),
            ),
            (
                "features.recency_days <= 30",
                compare(V::RecencyDays, Le, Literal::Int(30)),
            ),
            (
                "features.mean_gap_days < 7",
                compare(V::MeanGapDays, Lt, Literal::Double(7.0)),
            ),
            ("features.rfm.r == 5", compare(V::RfmR, Eq, Literal::Int(5))),
            ("features.rfm.f == 4", compare(V::RfmF, Eq, Literal::Int(4))),
            ("features.rfm.m == 3", compare(V::RfmM, Eq, Literal::Int(3))),
            (
                r#"features.rfm_segment == "CANT_LOSE_THEM""#,
                compare(
                    V::RfmSegment,
                    Eq,
                    Literal::RfmSegment(RfmSegment::CantLoseThem),
                ),
            ),
        ];
        for (source, expected) in cases {
            assert_eq!(ok(source), expected, "{source}");
        }
    }

    #[test]
    fn the_documentation_covers_every_variable_and_its_examples_compile() {
        let docs = variables();
        assert_eq!(docs.len(), DOCUMENTED.len());
        let mut names: Vec<&str> = docs.iter().map(|doc| doc.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), docs.len(), "names are unique");
        for doc in &docs {
            let variable =
                parse_variable(doc.name).unwrap_or_else(|error| panic!("{}: {error}", doc.name));
            assert_eq!(doc.dimension, is_dimension(&variable), "{}", doc.name);
            assert!(!doc.description.is_empty() && !doc.description.contains('\n'));
            assert!(
                ["int", "double", "string", "bool", "enum", "trait"].contains(&doc.kind),
                "{}",
                doc.name
            );
            // The example compiles and uses the variable (the trait's example
            // uses the key "tier").
            let example = ok(doc.example);
            let used = match &variable {
                Variable::Trait(_) => trait_("tier"),
                other => other.clone(),
            };
            assert!(
                format!("{example:?}").contains(&format!("{used:?}")),
                "{}: {example:?}",
                doc.example
            );
            // Enums list their values, and every value compiles.
            assert_eq!(
                doc.kind == "enum",
                !doc.enum_values.is_empty(),
                "{}",
                doc.name
            );
            for value in doc.enum_values {
                ok(&format!("{} == {value:?}", doc.name));
            }
            // has() compiles exactly on the optional variables.
            let presence = match &variable {
                Variable::Trait(_) => "has(customer.traits.KEY)".to_owned(),
                _ => format!("has({})", doc.name),
            };
            assert_eq!(compile(&presence).is_ok(), doc.optional, "{presence}");
        }
        let kinds = |kind: &str| docs.iter().filter(|doc| doc.kind == kind).count();
        assert_eq!(kinds("enum"), 12);
        assert_eq!(kinds("trait"), 1);
        assert_eq!(kinds("bool"), 1);
    }

    #[test]
    fn every_comparison_operator_and_its_reverse() {
        let age = |op| compare(Variable::Age, op, Literal::Int(30));
        for (source, op) in [
            ("customer.age == 30", Eq),
            ("customer.age != 30", Ne),
            ("customer.age < 30", Lt),
            ("customer.age <= 30", Le),
            ("customer.age > 30", Gt),
            ("customer.age >= 30", Ge),
            ("30 == customer.age", Eq),
            ("30 != customer.age", Ne),
            ("30 < customer.age", Gt),
            ("30 <= customer.age", Ge),
            ("30 > customer.age", Lt),
            ("30 >= customer.age", Le),
        ] {
            assert_eq!(ok(source), age(op), "{source}");
        }
        assert_eq!(
            ok(r#""GRANTED" == customer.consent.email"#),
            compare(
                Variable::Consent(Channel::Email),
                Eq,
                Literal::Consent(ConsentStatus::Granted)
            )
        );
        assert_eq!(
            ok("3 < features.purchase_count"),
            compare(Variable::PurchaseCount, Gt, Literal::Int(3))
        );
    }

    #[test]
    fn and_or_chains_are_flattened_in_order() {
        let a = || compare(Variable::Age, Gt, Literal::Int(1));
        let b = || compare(Variable::PurchaseCount, Gt, Literal::Int(2));
        let c = || Predicate::IsTrue(Variable::ObjectsToProfiling);
        let d = || Predicate::Has(Variable::Country);
        let (sa, sb, sc, sd) = (
            "customer.age > 1",
            "features.purchase_count > 2",
            "customer.objects_to_profiling",
            "has(customer.country)",
        );
        assert_eq!(ok(&format!("{sa} && {sb}")), Predicate::And(vec![a(), b()]));
        assert_eq!(
            ok(&format!("{sa} && {sb} && {sc} && {sd}")),
            Predicate::And(vec![a(), b(), c(), d()])
        );
        assert_eq!(
            ok(&format!("{sa} && ({sb} && ({sc} && {sd}))")),
            Predicate::And(vec![a(), b(), c(), d()])
        );
        assert_eq!(
            ok(&format!("({sa} || {sb}) || ({sc} || {sd})")),
            Predicate::Or(vec![a(), b(), c(), d()])
        );
        assert_eq!(
            ok(&format!("{sa} && {sb} || {sc} && {sd}")),
            Predicate::Or(vec![
                Predicate::And(vec![a(), b()]),
                Predicate::And(vec![c(), d()])
            ])
        );
        assert_eq!(
            ok(&format!("{sa} && ({sb} || {sc})")),
            Predicate::And(vec![a(), Predicate::Or(vec![b(), c()])])
        );
        let long: Vec<String> = (0..100).map(|i| format!("customer.age != {i}")).collect();
        let Predicate::Or(operands) = ok(&long.join(" || ")) else {
            panic!("not an Or");
        };
        assert_eq!(operands.len(), 100);
        assert_eq!(operands[99], compare(Variable::Age, Ne, Literal::Int(99)));
    }

    #[test]
    fn not_parentheses_and_constants() {
        let a = || compare(Variable::Age, Gt, Literal::Int(1));
        assert_eq!(ok("!(customer.age > 1)"), Predicate::Not(Box::new(a())));
        assert_eq!(ok("((customer.age > 1))"), a());
        assert_eq!(
            ok("!(customer.age > 1 && customer.objects_to_profiling)"),
            Predicate::Not(Box::new(Predicate::And(vec![
                a(),
                Predicate::IsTrue(Variable::ObjectsToProfiling)
            ])))
        );
        assert_eq!(
            ok("!(!customer.objects_to_profiling)"),
            Predicate::Not(Box::new(Predicate::Not(Box::new(Predicate::IsTrue(
                Variable::ObjectsToProfiling
            )))))
        );
        assert_eq!(ok("true"), Predicate::Const(true));
        assert_eq!(ok("false"), Predicate::Const(false));
        assert_eq!(ok("  true // everyone\n"), Predicate::Const(true));
        assert_eq!(
            ok("true && customer.objects_to_profiling"),
            Predicate::And(vec![
                Predicate::Const(true),
                Predicate::IsTrue(Variable::ObjectsToProfiling)
            ])
        );
        assert_eq!(
            ok("customer.objects_to_profiling == true"),
            compare(Variable::ObjectsToProfiling, Eq, Literal::Bool(true))
        );
        assert_eq!(
            ok("false != customer.objects_to_profiling"),
            compare(Variable::ObjectsToProfiling, Ne, Literal::Bool(false))
        );
    }

    #[test]
    fn negative_unsigned_and_converted_numbers() {
        use Variable as V;
        for (source, expected) in [
            (
                "customer.income > -5",
                compare(V::Income, Gt, Literal::Double(-5.0)),
            ),
            (
                "customer.income > - 5",
                compare(V::Income, Gt, Literal::Double(-5.0)),
            ),
            (
                "features.mean_gap_days >= -2.5",
                compare(V::MeanGapDays, Ge, Literal::Double(-2.5)),
            ),
            ("customer.age > -(5)", compare(V::Age, Gt, Literal::Int(-5))),
            ("-3 < customer.age", compare(V::Age, Gt, Literal::Int(-3))),
            ("--3 < customer.age", compare(V::Age, Gt, Literal::Int(3))),
            (
                "customer.age == -9223372036854775808",
                compare(V::Age, Eq, Literal::Int(i64::MIN)),
            ),
            ("customer.age == 5u", compare(V::Age, Eq, Literal::Int(5))),
            (
                "customer.income > 5u",
                compare(V::Income, Gt, Literal::Double(5.0)),
            ),
            (
                "customer.age == 0x10",
                compare(V::Age, Eq, Literal::Int(16)),
            ),
            (
                "features.purchase_count >= 2.0",
                compare(V::PurchaseCount, Ge, Literal::Int(2)),
            ),
            (
                "features.purchase_count >= -2.0",
                compare(V::PurchaseCount, Ge, Literal::Int(-2)),
            ),
            (
                "features.total_spend >= 1e3",
                compare(V::TotalSpend, Ge, Literal::Double(1000.0)),
            ),
            (
                "customer.traits.score > -1",
                compare(trait_("score"), Gt, Literal::Double(-1.0)),
            ),
        ] {
            assert_eq!(ok(source), expected, "{source}");
        }
        refused("features.purchase_count > 2.5", 26, "use a whole number");
        refused("customer.age < 1e300", 15, "use a whole number");
        refused(
            "customer.age == 18446744073709551615u",
            16,
            "out of the int range",
        );
    }

    #[test]
    fn enum_values_are_checked_by_name_in_upper_case() {
        for (name, kind) in [
            ("customer.relationship", EnumKind::Relationship),
            ("customer.party", EnumKind::Party),
            ("customer.age_band", EnumKind::AgeBand),
            ("customer.gender", EnumKind::Gender),
            ("customer.income_band", EnumKind::IncomeBand),
            ("customer.consent.email", EnumKind::Consent),
            ("features.frequency", EnumKind::Frequency),
            ("features.stage", EnumKind::Stage),
            ("features.rfm_segment", EnumKind::RfmSegment),
        ] {
            for value in kind.names() {
                let Predicate::Compare(_, Eq, literal) = ok(&format!("{name} == {value:?}")) else {
                    panic!("{name} == {value:?}");
                };
                assert_eq!(Some(literal), kind.literal(value));
            }
        }
        assert_eq!(AgeBand::NAMES.len(), 8);
        assert_eq!(
            ok(r#"customer.age_band == "65_PLUS""#),
            compare(Variable::AgeBand, Eq, Literal::AgeBand(AgeBand::From65))
        );
        refused(
            r#"customer.gender == "female""#,
            19,
            "\"female\" is not a value of customer.gender (values are upper case); the values are UNSPECIFIED, FEMALE, MALE, OTHER",
        );
        refused(
            r#"features.frequency == "FREQUENT""#,
            22,
            "the values are NONE, ONE_TIME_BUYER, LAPSED, FREQUENT_CUSTOMER, REPEAT_CUSTOMER",
        );
        refused(
            r#"features.stage in ["REBUYING", "BUYING"]"#,
            31,
            "\"BUYING\" is not a value of features.stage",
        );
        refused("customer.gender == 1", 19, "`customer.gender` is an enum");
    }

    #[test]
    fn traits_take_the_type_of_the_literal() {
        assert_eq!(
            ok(r#"customer.traits.tier == "gold""#),
            compare(trait_("tier"), Eq, text("gold"))
        );
        assert_eq!(
            ok(r#"customer.traits["score"] >= 3"#),
            compare(trait_("score"), Ge, Literal::Double(3.0))
        );
        assert_eq!(
            ok("customer.traits['score'] < 2.5"),
            compare(trait_("score"), Lt, Literal::Double(2.5))
        );
        assert_eq!(
            ok("customer.traits.vip == true"),
            compare(trait_("vip"), Eq, Literal::Bool(true))
        );
        assert_eq!(ok("customer.traits.vip"), Predicate::IsTrue(trait_("vip")));
        assert_eq!(
            ok(r#"customer.traits["vip"]"#),
            Predicate::IsTrue(trait_("vip"))
        );
        assert_eq!(
            ok("!customer.traits.vip"),
            Predicate::Not(Box::new(Predicate::IsTrue(trait_("vip"))))
        );
        assert_eq!(
            ok(r#"customer.traits["a-b.c_1"] == 1"#),
            compare(trait_("a-b.c_1"), Eq, Literal::Double(1.0))
        );
        assert_eq!(
            ok("customer.traits.plan.level == 2"),
            compare(trait_("plan.level"), Eq, Literal::Double(2.0))
        );
        assert_eq!(
            ok(r#"customer.traits.tier in ["gold", 2, true]"#),
            Predicate::In(
                trait_("tier"),
                vec![text("gold"), Literal::Double(2.0), Literal::Bool(true)]
            )
        );
        let max_key = format!("k{}", "x".repeat(63));
        assert_eq!(
            ok(&format!("customer.traits.{max_key} == 1")),
            compare(trait_(&max_key), Eq, Literal::Double(1.0))
        );
        refused(
            &format!("customer.traits.{max_key}x == 1"),
            0,
            "a trait key has 1 to 64",
        );
        refused(r#"customer.traits["1x"] == 1"#, 16, "a trait key");
        refused(r#"customer.traits.tier < "b""#, 21, "order numbers");
        refused(
            "customer.traits == 1",
            0,
            "`customer.traits` holds every trait",
        );
        refused(
            "customer.traits[1] == 1",
            16,
            "a trait key is a string in quotes",
        );
        refused(
            "customer.traits[customer.city] == 1",
            16,
            "found `customer.city`",
        );
        refused(
            "customer.traits.x in customer.traits",
            0,
            "a trait key in quotes",
        );
    }

    #[test]
    fn in_lists_are_typed_by_the_variable() {
        assert_eq!(
            ok(r#"features.stage in ["REBUYING", "JUST_BUYING"]"#),
            Predicate::In(
                Variable::Stage,
                vec![
                    Literal::Stage(EngagementStage::Rebuying),
                    Literal::Stage(EngagementStage::JustBuying)
                ]
            )
        );
        assert_eq!(
            ok("customer.age in [18, 19]"),
            Predicate::In(Variable::Age, vec![Literal::Int(18), Literal::Int(19)])
        );
        assert_eq!(
            ok("customer.income in [1, -2.5]"),
            Predicate::In(
                Variable::Income,
                vec![Literal::Double(1.0), Literal::Double(-2.5)]
            )
        );
        assert_eq!(
            ok("features.purchase_count in [1, 2.0]"),
            Predicate::In(
                Variable::PurchaseCount,
                vec![Literal::Int(1), Literal::Int(2)]
            )
        );
        assert_eq!(
            ok(r#"customer.country in ["TR", "EG"]"#),
            Predicate::In(Variable::Country, vec![text("TR"), text("EG")])
        );
        assert_eq!(
            ok(r#""tier" in customer.traits"#),
            Predicate::Has(trait_("tier"))
        );
        assert_eq!(
            ok("'my-key' in customer.traits"),
            Predicate::Has(trait_("my-key"))
        );
        refused("customer.age in []", 16, "the list after `in` is empty");
        refused(
            "customer.age in [1, features.purchase_count]",
            20,
            "only literal values",
        );
        refused(
            r#""REBUYING" in features.stage"#,
            0,
            "`in` takes a variable on its left",
        );
        refused(
            "customer.age in customer.age",
            16,
            "the right of `in` must be a list",
        );
        refused(r#"1 in customer.traits"#, 0, "a trait key in quotes");
        refused(r#"customer.age in ["18"]"#, 17, "`customer.age` is an int");
    }

    #[test]
    fn has_tests_presence_of_optional_variables_only() {
        assert_eq!(ok("has(customer.age)"), Predicate::Has(Variable::Age));
        assert_eq!(
            ok("has(customer.traits.tier)"),
            Predicate::Has(trait_("tier"))
        );
        assert_eq!(ok("has(features.rfm.r)"), Predicate::Has(Variable::RfmR));
        assert_eq!(
            ok("has(features.rfm_segment)"),
            Predicate::Has(Variable::RfmSegment)
        );
        assert_eq!(
            ok("!has(customer.country)"),
            Predicate::Not(Box::new(Predicate::Has(Variable::Country)))
        );
        refused("has(customer.party)", 4, "`customer.party` is never absent");
        refused(
            "has(features.purchase_count)",
            4,
            "has() applies to customer.age",
        );
        refused(
            "has(customer.colour)",
            4,
            "unknown variable `customer.colour`",
        );
        refused("has(customer.traits)", 4, "holds every trait");
        refused(r#"has(customer.traits["x"])"#, 19, "has() takes a variable");
        refused(
            "has(customer.age) == true",
            0,
            "a condition cannot be compared",
        );
    }

    #[test]
    fn string_tests_on_string_variables() {
        for (method, test) in [
            ("startsWith", StringTest::StartsWith),
            ("endsWith", StringTest::EndsWith),
            ("contains", StringTest::Contains),
        ] {
            for (name, variable) in [
                ("customer.country", Variable::Country),
                ("customer.region", Variable::Region),
                ("customer.city", Variable::City),
                ("customer.language", Variable::Language),
                ("customer.traits.note", trait_("note")),
            ] {
                assert_eq!(
                    ok(&format!(r#"{name}.{method}("ab")"#)),
                    Predicate::Text(variable, test, "ab".to_owned())
                );
            }
        }
        refused(
            r#"customer.age_band.startsWith("1")"#,
            18,
            "`startsWith` applies to strings",
        );
        refused(r#"customer.age.contains("1")"#, 13, "is an int");
        refused(
            r#"customer.city.startsWith(customer.region)"#,
            25,
            "must be a string in quotes",
        );
        refused(
            r#"customer.city.endsWith("a", "b")"#,
            14,
            "takes one string",
        );
        refused(
            r#""Istanbul".startsWith("I")"#,
            0,
            "applies to a string variable",
        );
    }

    #[test]
    fn refusals_name_the_construct_and_its_position() {
        refused(r#"customer.colour == "red""#, 0, "unknown variable `customer.colour`; the customer variables are customer.relationship, customer.party");
        refused("customer.gendr == 1", 0, "did you mean customer.gender?");
        refused("x > 1", 0, "variables start with customer. or features.");
        refused(
            r#"customer.consent == "GRANTED""#,
            0,
            "`customer.consent` is a group",
        );
        refused("features.purchase_count + 1 > 3", 24, "`+` is not supported; rules use ==, !=, <, <=, >, >=, &&, ||, !, in, startsWith, endsWith, contains and has()");
        refused("features.total_spend / 2 > 3", 21, "`/` is not supported");
        refused(
            "customer.age > 3 ? true : false",
            17,
            "the conditional `? :` is not supported",
        );
        refused(
            "[1, 2].exists(x, x > 1)",
            7,
            "the macro `exists()` is not supported",
        );
        refused(
            "customer.traits.all(k, k == 1)",
            16,
            "the macro `all()` is not supported",
        );
        refused("features.purchase_count", 0, "`features.purchase_count` is an int, not a condition; use it in a comparison, as in features.purchase_count > 0");
        refused(r#"customer.country"#, 0, "is a string, not a condition");
        refused("5", 0, "this is the int 5 on its own");
        refused(r#""yes""#, 0, "the string \"yes\" on its own");
        refused(
            "customer.age == features.purchase_count",
            16,
            "comparing two variables is not supported",
        );
        refused("1 == 1", 2, "both sides of this comparison are literals");
        refused(
            r#"customer.country < "TR""#,
            17,
            "<, <=, > and >= order numbers, but `customer.country` is a string",
        );
        refused(
            r#"features.stage > "REBUYING""#,
            15,
            "is an enum; list the values you want with in",
        );
        refused("customer.objects_to_profiling > false", 30, "is a bool");
        refused(
            r#"customer.age == "18""#,
            16,
            "`customer.age` is an int, so it cannot be compared with the string \"18\"",
        );
        refused(
            "size(customer.city) > 3",
            0,
            "the function `size()` is not supported",
        );
        refused(
            r#"customer.city.matches("^I")"#,
            14,
            "the method `matches()` is not supported",
        );
        refused(
            r#"{"a": 1} == customer.age"#,
            0,
            "maps {...} are not supported",
        );
        refused(
            "customer.age == [1]",
            16,
            "a list is allowed only on the right of `in`",
        );
        refused(
            "customer.age == null",
            16,
            "test presence with has(), as in has(customer.age)",
        );
        refused("features.purchase_count == null", 27, "is never absent");
        refused(
            r#"customer.country == "tr""#,
            20,
            "country codes are upper case: write \"TR\"",
        );
        refused(
            r#"customer.country == "XX""#,
            20,
            "not an ISO 3166-1 alpha-2 country code",
        );
        refused(
            "customer.age > 3 == true",
            13,
            "a condition cannot be compared",
        );
        refused("!customer.age > 3", 0, "a condition cannot be compared");
        refused("!customer.age", 1, "is an int, not a condition");
        refused(
            r#"b"abc" == customer.city"#,
            0,
            "cannot be compared with a bytes literal",
        );
        refused(
            "customer.age.years > 1",
            0,
            "unknown variable `customer.age.years`",
        );
        refused(
            "customer.traits.tier[0] == 1",
            20,
            "indexing with [ ] applies only to customer.traits",
        );
        refused(
            "-customer.age < 1",
            0,
            "`-` applies only to a number literal",
        );
        refused(
            "google.protobuf.Duration{seconds: 1}",
            24,
            "messages Name{...} are not supported",
        );
        refused("if", 0, "`if` is a reserved word");
        refused(
            "(customer.age > 1).x",
            18,
            "a field can be selected only from customer or features",
        );
    }

    #[test]
    fn positions_count_characters_and_lines() {
        let source = r#""é" == customer.colour"#;
        assert_eq!(at(source, "customer"), 7);
        refused(source, 7, "unknown variable `customer.colour`");
        let source = "customer.city == \"İzmir\" && customer.age + 1 > 2";
        refused(source, at(source, "+"), "`+` is not supported");
        let source = "customer.age > 3 &&\n  features.colour == 1";
        refused(source, 22, "unknown variable `features.colour`");
        let source = "customer.age > 3 &&\n\tfeatures.purchase_count * 2 > 1";
        refused(source, at(source, "*"), "`*` is not supported");
    }

    #[test]
    fn syntax_errors_have_positions() {
        refused("customer.age > 3 &&", 19, "syntax error");
        refused("(customer.age > 3", 17, "syntax error");
        refused("customer.age > 3)", 16, "syntax error");
        refused("customer.age > 3 &&\n  )", 22, "syntax error");
        refused("customer.city == 'é' && é", 24, "unexpected character 'é'");
        refused("", 0, "the rule is empty");
        refused("  \n\t", 0, "the rule is empty");
        refused(r#"customer.city == "Izmir"#, 17, "has no closing \"");
        refused("customer.city == '''Izmir", 17, "has no closing '''");
        refused(
            "customer.city == \"a\nb\"",
            17,
            "has no closing \" on its line",
        );
        refused(r#"customer.city == "a\qb""#, 19, "invalid escape");
    }

    #[test]
    fn strings_and_comments_do_not_count_as_nesting() {
        let parens = "(".repeat(100);
        assert_eq!(
            ok(&format!("customer.city == \"{parens}\"")),
            compare(Variable::City, Eq, text(&parens))
        );
        ok(&format!("customer.city == '''{parens}\n'''"));
        ok(&format!("customer.city == r\"{parens}\\\""));
        ok(&format!(
            "customer.city == \"\\\"{parens}\\u00e9\\x41\\101\""
        ));
        ok(&format!("customer.age > 1 // {parens}\n&& true"));
    }

    #[test]
    fn size_and_nesting_limits() {
        let padded = format!("true{}", " ".repeat(MAX_SOURCE_BYTES - 4));
        assert_eq!(ok(&padded), Predicate::Const(true));
        refused(
            &format!("{padded} "),
            MAX_SOURCE_BYTES,
            "at most 4096 bytes",
        );
        // 2 bytes per character: the limit falls at character 2048.
        refused(&"é".repeat(2049), 2048, "the rule is 4098 bytes long");
        let nested =
            |depth: usize| format!("{}customer.age > 1{}", "(".repeat(depth), ")".repeat(depth));
        assert_eq!(
            ok(&nested(MAX_NESTING)),
            compare(Variable::Age, Gt, Literal::Int(1))
        );
        refused(
            &nested(MAX_NESTING + 1),
            MAX_NESTING,
            "more than 64 levels deep",
        );
        let nots = format!(
            "{}customer.objects_to_profiling{}",
            "!(".repeat(64),
            ")".repeat(64)
        );
        let mut expected = Predicate::IsTrue(Variable::ObjectsToProfiling);
        for _ in 0..64 {
            expected = Predicate::Not(Box::new(expected));
        }
        assert_eq!(ok(&nots), expected);
        refused(&format!("!({nots})"), 129, "more than 64 levels deep");
        let long_and = vec!["customer.age > 1"; 200].join(" && ");
        let Predicate::And(operands) = ok(&long_and) else {
            panic!("not an And");
        };
        assert_eq!(operands.len(), 200);
    }

    #[test]
    fn every_documented_operator_is_accepted() {
        let samples = [
            ("==", "customer.age == 1"),
            ("!=", "customer.age != 1"),
            ("<", "customer.age < 1"),
            ("<=", "customer.age <= 1"),
            (">", "customer.age > 1"),
            (">=", "customer.age >= 1"),
            ("&&", "customer.age > 1 && customer.age < 9"),
            ("||", "customer.age < 1 || customer.age > 9"),
            ("!", "!customer.objects_to_profiling"),
            ("in", "customer.age in [1, 2]"),
            ("startsWith", r#"customer.city.startsWith("A")"#),
            ("endsWith", r#"customer.city.endsWith("A")"#),
            ("contains", r#"customer.city.contains("A")"#),
            ("has()", "has(customer.city)"),
        ];
        assert_eq!(
            operators(),
            samples
                .iter()
                .map(|(operator, _)| *operator)
                .collect::<Vec<_>>()
        );
        for (_, source) in samples {
            ok(source);
        }
    }

    #[test]
    fn parse_variable_resolves_single_names() {
        assert_eq!(parse_variable("customer.country"), Ok(Variable::Country));
        assert_eq!(parse_variable("features.rfm.m"), Ok(Variable::RfmM));
        assert_eq!(
            parse_variable("customer.consent.push"),
            Ok(Variable::Consent(Channel::Push))
        );
        assert_eq!(parse_variable("customer.traits.tier"), Ok(trait_("tier")));
        assert_eq!(
            parse_variable(r#"customer.traits["my-key"]"#),
            Ok(trait_("my-key"))
        );
        assert_eq!(
            parse_variable("customer.traits['tier']"),
            Ok(trait_("tier"))
        );
        let error = parse_variable("customer.colour").unwrap_err();
        assert_eq!(error.position, 0);
        assert!(error.message.contains("unknown variable `customer.colour`"));
        let error = parse_variable(r#"customer.traits["tier""#).unwrap_err();
        assert_eq!(error.position, 16);
        let error = parse_variable(r#"customer.traits["bad key"]"#).unwrap_err();
        assert_eq!(error.position, 17);
        assert!(error.message.contains("a trait key"));
        let error = parse_variable("features.rfm").unwrap_err();
        assert!(error
            .message
            .contains("features.rfm.r, features.rfm.f, features.rfm.m"));
        assert!(parse_variable("").is_err());
        assert!(parse_variable("customer.traits").is_err());
    }

    #[test]
    fn long_text_is_clipped_in_messages() {
        let long = "A".repeat(3000);
        for source in [
            format!("customer.gender == {long:?}"),
            format!("customer.country == {long:?}"),
            format!("customer.traits[{long:?}] == 1"),
            format!("customer.{} == 1", "a".repeat(3000)),
            format!("{}() == 1", "f".repeat(3000)),
        ] {
            let error = compile(&source).unwrap_err();
            assert!(error.message.len() < 1000, "{}", error.message);
            assert!(
                error.message.contains("AAA...")
                    || error.message.contains("aaa...")
                    || error.message.contains("fff..."),
                "{}",
                error.message
            );
        }
    }

    #[test]
    fn errors_display_their_position() {
        let error = compile("x").unwrap_err();
        assert!(error
            .to_string()
            .starts_with("at character 0: unknown variable `x`"));
    }

    /// Every result is a predicate or a one-line error inside the text.
    fn survives(source: &str) {
        let length = source.chars().count();
        match compile(source) {
            Ok(_) => {}
            Err(error) => {
                assert!(error.position <= length, "{source:?}: {error:?}");
                assert!(!error.message.is_empty());
                assert!(error.message.len() < 2000, "{source:?}: {error:?}");
                assert!(!error.message.contains('\n'), "{source:?}: {error:?}");
            }
        }
    }

    #[test]
    fn no_input_panics_or_overflows_the_stack() {
        let fixed = [
            "",
            " ",
            "(",
            ")",
            "(((",
            ")))",
            "((customer.age > 1)",
            "customer.age > 1))",
            "&&",
            "||",
            "!",
            "!!!!",
            "-",
            "--1",
            "customer.",
            ".customer.age",
            "customer..age",
            "customer.age >",
            "> 3",
            "é",
            "日本語 == 1",
            "customer.city == \"日本\"",
            "\u{0}",
            "\u{feff}customer.age > 3",
            "customer.age > 3 // comment",
            "/* c */",
            "customer.traits[]",
            "customer.traits[\"\"] == 1",
            "has()",
            "has(customer.age, 1)",
            "customer.age in",
            "in [1]",
            "[",
            "{",
            "{}",
            "[]",
            "customer.age > 99999999999999999999",
            "1e999",
            "customer.income > 1e999",
            "0x",
            "0xFFFFFFFFFFFFFFFFFu",
            "\"\\u12\"",
            "'''",
            "r'",
            "b'\\xZZ'",
            "\\",
            "`customer`.age",
            "customer.`age` > 1",
            "customer.age >= -",
            "a ? b ((?))",
            "customer.city == \"\\uD800\"",
            "customer.city == '\u{1F600}'",
            "!!(!!!!!!(!!!!(((((!!(!!(!!!!((!!(!!!!!!(!!!!(((((!!(!!(!!!!((1",
            "customer.traits.x.y.z.w.v == [[[[1]]]]",
            "customer.age in [[1], {}]",
            "customer.age.exists(x, x)",
            "customer.city.size() > 1",
            "customer.city.startsWith()",
            "has(customer.traits.a-b)",
            "customer.age > 1 ? customer.age > 2 : customer.age > 3",
        ];
        for source in fixed {
            survives(source);
        }
        let generated = [
            "(".repeat(10_000),
            "(".repeat(4000),
            "[".repeat(4096),
            "{".repeat(65),
            "f(".repeat(2000),
            "!(".repeat(2000),
            "-(".repeat(2000),
            format!("1{}", "+1".repeat(2047)),
            format!("customer.age{}", " < 1".repeat(1000)),
            format!("a{}", ".a".repeat(2000)),
            format!("customer.traits{}", "[0]".repeat(1300)),
            format!("a{}", "?a:a".repeat(1000)),
            format!("{}1{}", "(".repeat(64), "+1".repeat(1980)),
            format!("{}a{}", "f(".repeat(64), ".a".repeat(1900)),
            format!("customer.age in [{}1]", "1,".repeat(2000)),
            "!".repeat(4096),
            "-".repeat(4095) + "1",
            "\"".repeat(4096),
            "é".repeat(5000),
        ];
        for source in &generated {
            survives(source);
        }
        // A token soup from a fixed seed.
        let tokens = [
            "customer.age",
            "features.stage",
            "customer.traits",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            "&&",
            "||",
            "!",
            "==",
            "<",
            ">=",
            "in",
            "\"A\"",
            "'b'",
            "3",
            "-",
            "2.5",
            "has(",
            ".startsWith(",
            "[\"k\"]",
            "\"",
            "'",
            ",",
            "é",
            " ",
            "?",
            ":",
            "+",
            ".",
            "true",
            "null",
            "\\",
            "//",
            "\n",
            "u",
            "r\"",
            "b'",
            "size(",
            ".exists(x,",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for _ in 0..400 {
            let length = 1 + next() % 24;
            let source: String = (0..length).map(|_| tokens[next() % tokens.len()]).collect();
            survives(&source);
        }
    }
}
