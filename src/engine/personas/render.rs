//! Conditions and values written as the explanations show them: a rule
//! back as text, a literal, a customer's value.

use crate::domain::rules::{variable_name, Comparison, Literal, Predicate, StringTest};
use crate::engine::select::Value;

pub(super) fn show(value: &Value<'_>) -> String {
    match value {
        Value::Absent => "absent".to_owned(),
        Value::Number(number) => show_number(*number),
        Value::Text(text) => (*text).to_owned(),
        Value::Bool(flag) => flag.to_string(),
    }
}

pub(super) fn show_number(number: f64) -> String {
    if number.fract() == 0.0 && number.abs() < 1e15 {
        format!("{}", number as i64)
    } else {
        format!("{number}")
    }
}

pub(super) fn show_literal(literal: &Literal) -> String {
    match literal {
        Literal::Int(value) => value.to_string(),
        Literal::Double(value) => show_number(*value),
        Literal::String(value) => format!("{value:?}"),
        Literal::Bool(value) => value.to_string(),
        Literal::Relationship(value) => format!("{:?}", value.name()),
        Literal::Party(value) => format!("{:?}", value.name()),
        Literal::Gender(value) => format!("{:?}", value.name()),
        Literal::AgeBand(value) => format!("{:?}", value.name()),
        Literal::IncomeBand(value) => format!("{:?}", value.name()),
        Literal::Consent(value) => format!("{:?}", value.name()),
        Literal::Frequency(value) => format!("{:?}", value.name()),
        Literal::Stage(value) => format!("{:?}", value.name()),
        Literal::RfmSegment(value) => format!("{:?}", value.name()),
    }
}

pub(super) fn show_literals(literals: &[Literal]) -> String {
    literals
        .iter()
        .map(show_literal)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn operator(comparison: Comparison) -> &'static str {
    match comparison {
        Comparison::Eq => "==",
        Comparison::Ne => "!=",
        Comparison::Lt => "<",
        Comparison::Le => "<=",
        Comparison::Gt => ">",
        Comparison::Ge => ">=",
    }
}

/// A rule written back as text.
pub(super) fn render(rule: &Predicate) -> String {
    match rule {
        Predicate::Const(value) => value.to_string(),
        Predicate::Compare(variable, comparison, literal) => format!(
            "{} {} {}",
            variable_name(variable),
            operator(*comparison),
            show_literal(literal)
        ),
        Predicate::In(variable, literals) => format!(
            "{} in [{}]",
            variable_name(variable),
            show_literals(literals)
        ),
        Predicate::Text(variable, test, needle) => format!(
            "{}.{}({needle:?})",
            variable_name(variable),
            match test {
                StringTest::StartsWith => "startsWith",
                StringTest::EndsWith => "endsWith",
                StringTest::Contains => "contains",
            }
        ),
        Predicate::IsTrue(variable) => variable_name(variable),
        Predicate::Has(variable) => format!("has({})", variable_name(variable)),
        Predicate::And(operands) => operands
            .iter()
            .map(|operand| bracketed(operand, matches!(operand, Predicate::Or(_))))
            .collect::<Vec<_>>()
            .join(" && "),
        Predicate::Or(operands) => operands
            .iter()
            .map(|operand| bracketed(operand, matches!(operand, Predicate::And(_))))
            .collect::<Vec<_>>()
            .join(" || "),
        Predicate::Not(operand) => format!("!({})", render(operand)),
    }
}

pub(super) fn bracketed(rule: &Predicate, needed: bool) -> String {
    if needed {
        format!("({})", render(rule))
    } else {
        render(rule)
    }
}
