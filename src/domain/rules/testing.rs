//! Helpers the rule language's tests share.

use super::{compile, Channel, Comparison, Literal, Predicate, Variable};
use crate::domain::customer::{ConsentStatus, Gender, Party, Relationship};
use crate::domain::features::{AgeBand, EngagementStage, FrequencyClass, IncomeBand, RfmSegment};
use Comparison::{Eq, Ge, Gt, Le, Lt, Ne};

/// The predicate `source` compiles to; panics when it is refused.
pub(super) fn ok(source: &str) -> Predicate {
    compile(source).unwrap_or_else(|error| panic!("{source:?} was refused: {error}"))
}

/// Asserts that `source` is refused at `position` with a message that
/// holds `fragment`.
pub(super) fn refused(source: &str, position: usize, fragment: &str) {
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
pub(super) fn at(source: &str, needle: &str) -> usize {
    let byte = source.find(needle).expect("needle in source");
    source[..byte].chars().count()
}

/// A string literal.
pub(super) fn text(value: &str) -> Literal {
    Literal::String(value.to_owned())
}

/// `variable op literal`.
pub(super) fn compare(variable: Variable, op: Comparison, literal: Literal) -> Predicate {
    Predicate::Compare(variable, op, literal)
}

/// The trait `key`.
pub(super) fn trait_(key: &str) -> Variable {
    Variable::Trait(key.to_owned())
}

/// A rule on each variable, as written and as compiled: what the compiler
/// must make of the text, and what the rule's text shows.
pub(super) fn every_variable() -> Vec<(&'static str, Predicate)> {
    use Variable as V;
    vec![
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
    ]
}
