//! A [`Predicate`] written back as rule text: `features.purchase_count > 3
//! && (customer.country == "TR" || !(has(customer.age)))`.
//!
//! The text is for people, in explanations and logs. It uses the names a
//! rule is written with, brackets an `||` inside an `&&` (and the reverse),
//! always brackets the operand of `!`, and writes whole doubles without a
//! fraction.

use std::fmt;

use super::variables::{display_name, Variable};
use super::{Comparison, Literal, Predicate, StringTest};

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Predicate::Const(value) => write!(f, "{value}"),
            Predicate::Compare(variable, comparison, literal) => {
                write!(f, "{variable} {comparison} {literal}")
            }
            Predicate::In(variable, literals) => {
                write!(f, "{variable} in [")?;
                for (index, literal) in literals.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{literal}")?;
                }
                f.write_str("]")
            }
            Predicate::Text(variable, test, needle) => write!(f, "{variable}.{test}({needle:?})"),
            Predicate::IsTrue(variable) => write!(f, "{variable}"),
            Predicate::Has(variable) => write!(f, "has({variable})"),
            Predicate::And(operands) => junction(f, operands, " && ", |operand| {
                matches!(operand, Predicate::Or(_))
            }),
            Predicate::Or(operands) => junction(f, operands, " || ", |operand| {
                matches!(operand, Predicate::And(_))
            }),
            Predicate::Not(operand) => write!(f, "!({operand})"),
        }
    }
}

/// The operands joined by `separator`, those that `needs_brackets` in
/// brackets.
fn junction(
    f: &mut fmt::Formatter<'_>,
    operands: &[Predicate],
    separator: &str,
    needs_brackets: impl Fn(&Predicate) -> bool,
) -> fmt::Result {
    for (index, operand) in operands.iter().enumerate() {
        if index > 0 {
            f.write_str(separator)?;
        }
        if needs_brackets(operand) {
            write!(f, "({operand})")?;
        } else {
            write!(f, "{operand}")?;
        }
    }
    Ok(())
}

/// The name as written in a rule; `customer.traits["KEY"]` for a trait.
impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display_name(self))
    }
}

/// The operator: `==`, `!=`, `<`, `<=`, `>`, `>=`.
impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Comparison::Eq => "==",
            Comparison::Ne => "!=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
        })
    }
}

/// The method: `startsWith`, `endsWith`, `contains`.
impl fmt::Display for StringTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StringTest::StartsWith => "startsWith",
            StringTest::EndsWith => "endsWith",
            StringTest::Contains => "contains",
        })
    }
}

/// The literal as written in a rule: strings and enum values in quotes,
/// whole doubles without a fraction.
impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Int(value) => write!(f, "{value}"),
            Literal::Double(value) => f.write_str(&show_number(*value)),
            Literal::String(value) => write!(f, "{value:?}"),
            Literal::Bool(value) => write!(f, "{value}"),
            Literal::Relationship(value) => write!(f, "{:?}", value.name()),
            Literal::Party(value) => write!(f, "{:?}", value.name()),
            Literal::Gender(value) => write!(f, "{:?}", value.name()),
            Literal::AgeBand(value) => write!(f, "{:?}", value.name()),
            Literal::IncomeBand(value) => write!(f, "{:?}", value.name()),
            Literal::Consent(value) => write!(f, "{:?}", value.name()),
            Literal::Frequency(value) => write!(f, "{:?}", value.name()),
            Literal::Stage(value) => write!(f, "{:?}", value.name()),
            Literal::RfmSegment(value) => write!(f, "{:?}", value.name()),
            Literal::PAliveBand(value) => write!(f, "{:?}", value.name()),
        }
    }
}

/// A number as a person writes it: `3` for a whole double below 10^15,
/// Rust's own form (`2.5`) otherwise.
pub fn show_number(number: f64) -> String {
    if number.fract() == 0.0 && number.abs() < 1e15 {
        format!("{}", number as i64)
    } else {
        format!("{number}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customer::{ConsentStatus, Gender, Party};
    use crate::domain::features::{AgeBand, EngagementStage, IncomeBand};
    use crate::domain::rules::testing::{compare, every_variable, ok, text, trait_};
    use crate::domain::rules::Channel;
    use Comparison::{Eq, Ge, Gt, Le, Lt, Ne};

    fn age_over(years: i64) -> Predicate {
        compare(Variable::Age, Gt, Literal::Int(years))
    }

    fn shown(rule: &Predicate) -> String {
        rule.to_string()
    }

    #[test]
    fn comparisons_show_numbers_strings_enums_and_bools() {
        // Beside the rule on each variable of `every_variable`: numbers,
        // escapes and the other names of the enums.
        use Variable as V;
        for (rule, expected) in [
            (Predicate::Const(true), "true"),
            (Predicate::Const(false), "false"),
            (compare(V::Age, Lt, Literal::Int(-3)), "customer.age < -3"),
            (
                compare(V::Income, Gt, Literal::Double(50000.0)),
                "customer.income > 50000",
            ),
            (
                compare(V::AvgOrderValue, Le, Literal::Double(49.99)),
                "features.avg_order_value <= 49.99",
            ),
            (
                compare(V::MeanGapDays, Ne, Literal::Double(-2.5)),
                "features.mean_gap_days != -2.5",
            ),
            (
                compare(V::TotalSpend, Eq, Literal::Double(1e15)),
                "features.total_spend == 1000000000000000",
            ),
            (
                compare(V::Country, Eq, text("TR")),
                r#"customer.country == "TR""#,
            ),
            (
                compare(V::City, Ne, text("say \"hi\"\n")),
                r#"customer.city != "say \"hi\"\n""#,
            ),
            (
                compare(V::ObjectsToProfiling, Eq, Literal::Bool(false)),
                "customer.objects_to_profiling == false",
            ),
            (
                compare(V::Party, Ne, Literal::Party(Party::Business)),
                r#"customer.party != "BUSINESS""#,
            ),
            (
                compare(V::Gender, Eq, Literal::Gender(Gender::Female)),
                r#"customer.gender == "FEMALE""#,
            ),
            (
                compare(V::AgeBand, Eq, Literal::AgeBand(AgeBand::From65)),
                r#"customer.age_band == "65_PLUS""#,
            ),
            (
                compare(V::IncomeBand, Eq, Literal::IncomeBand(IncomeBand::VeryHigh)),
                r#"customer.income_band == "VERY_HIGH""#,
            ),
            (
                compare(
                    V::Consent(Channel::Sms),
                    Ne,
                    Literal::Consent(ConsentStatus::Denied),
                ),
                r#"customer.consent.sms != "DENIED""#,
            ),
            (
                compare(trait_("score"), Ge, Literal::Double(3.0)),
                r#"customer.traits["score"] >= 3"#,
            ),
            (
                compare(trait_("my-key"), Eq, text("gold")),
                r#"customer.traits["my-key"] == "gold""#,
            ),
        ] {
            assert_eq!(shown(&rule), expected);
        }
    }

    #[test]
    fn in_lists_string_tests_has_and_bare_variables() {
        for (rule, expected) in [
            (
                Predicate::In(
                    Variable::Stage,
                    vec![
                        Literal::Stage(EngagementStage::Rebuying),
                        Literal::Stage(EngagementStage::JustBuying),
                    ],
                ),
                r#"features.stage in ["REBUYING", "JUST_BUYING"]"#,
            ),
            (
                Predicate::In(Variable::Age, vec![Literal::Int(18)]),
                "customer.age in [18]",
            ),
            (
                Predicate::In(
                    trait_("tier"),
                    vec![text("gold"), Literal::Double(2.5), Literal::Bool(true)],
                ),
                r#"customer.traits["tier"] in ["gold", 2.5, true]"#,
            ),
            (
                Predicate::Text(Variable::City, StringTest::StartsWith, "Is".to_owned()),
                r#"customer.city.startsWith("Is")"#,
            ),
            (
                Predicate::Text(Variable::Language, StringTest::EndsWith, "EG".to_owned()),
                r#"customer.language.endsWith("EG")"#,
            ),
            (
                Predicate::Text(trait_("note"), StringTest::Contains, "a\"b".to_owned()),
                r#"customer.traits["note"].contains("a\"b")"#,
            ),
            (Predicate::Has(Variable::Age), "has(customer.age)"),
            (
                Predicate::Has(trait_("tier")),
                r#"has(customer.traits["tier"])"#,
            ),
            (
                Predicate::IsTrue(Variable::ObjectsToProfiling),
                "customer.objects_to_profiling",
            ),
            (
                Predicate::IsTrue(trait_("vip")),
                r#"customer.traits["vip"]"#,
            ),
        ] {
            assert_eq!(shown(&rule), expected);
        }
    }

    #[test]
    fn logic_brackets_only_where_needed_and_always_after_not() {
        let has_country = || Predicate::Has(Variable::Country);
        let objects = || Predicate::IsTrue(Variable::ObjectsToProfiling);
        for (rule, expected) in [
            (
                Predicate::And(vec![age_over(1), has_country(), objects()]),
                "customer.age > 1 && has(customer.country) && customer.objects_to_profiling",
            ),
            (
                Predicate::Or(vec![age_over(1), has_country()]),
                "customer.age > 1 || has(customer.country)",
            ),
            (
                Predicate::And(vec![
                    age_over(1),
                    Predicate::Or(vec![has_country(), objects()]),
                ]),
                "customer.age > 1 && (has(customer.country) || customer.objects_to_profiling)",
            ),
            (
                Predicate::Or(vec![
                    Predicate::And(vec![age_over(1), has_country()]),
                    objects(),
                ]),
                "(customer.age > 1 && has(customer.country)) || customer.objects_to_profiling",
            ),
            (
                Predicate::And(vec![
                    age_over(1),
                    Predicate::And(vec![has_country(), objects()]),
                ]),
                "customer.age > 1 && has(customer.country) && customer.objects_to_profiling",
            ),
            (Predicate::Not(Box::new(objects())), "!(customer.objects_to_profiling)"),
            (
                Predicate::Not(Box::new(Predicate::Not(Box::new(has_country())))),
                "!(!(has(customer.country)))",
            ),
            (
                Predicate::Not(Box::new(Predicate::And(vec![age_over(1), objects()]))),
                "!(customer.age > 1 && customer.objects_to_profiling)",
            ),
            (
                Predicate::Or(vec![
                    Predicate::Not(Box::new(Predicate::Or(vec![age_over(1), objects()]))),
                    Predicate::And(vec![
                        has_country(),
                        Predicate::Or(vec![age_over(2), Predicate::Const(false)]),
                    ]),
                ]),
                "!(customer.age > 1 || customer.objects_to_profiling) || (has(customer.country) && (customer.age > 2 || false))",
            ),
        ] {
            assert_eq!(shown(&rule), expected);
        }
    }

    #[test]
    fn every_variable_shows_as_it_is_written() {
        for (source, rule) in every_variable() {
            // A trait may be written with a dot; it shows with brackets.
            let written = source.replace("customer.traits.tier", r#"customer.traits["tier"]"#);
            assert_eq!(shown(&rule), written, "{source}");
        }
    }

    #[test]
    fn the_text_compiles_back_to_the_same_rule() {
        for source in [
            r#"features.purchase_count >= 2 && (customer.country in ["TR", "EG"] || !(has(customer.age)))"#,
            r#"customer.traits["tier"] == "gold" || customer.traits["vip"]"#,
            r#"customer.city.contains("\"") && features.total_spend > 99.5"#,
            r#"features.rfm_segment in ["CHAMPIONS", "LOYAL"] && customer.consent.email == "GRANTED""#,
        ] {
            let rule = ok(source);
            assert_eq!(ok(&rule.to_string()), rule, "{source}");
        }
    }
}
