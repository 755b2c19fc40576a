//! Tests of the variable table: every variable compiles to itself, its
//! documentation holds, and names resolve.

use super::*;
use crate::domain::rules::testing::{compare, every_variable, ok, refused, trait_};
use crate::domain::rules::{compile, Comparison, Predicate};
use Comparison::Eq;

#[test]
fn every_variable_compiles_to_its_variable_and_type() {
    for (source, expected) in every_variable() {
        assert_eq!(ok(source), expected, "{source}");
    }
}

#[test]
fn the_documentation_covers_every_variable_and_its_examples_compile() {
    let docs = variables();
    assert_eq!(docs.len(), ROWS.len());
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
    assert_eq!(kinds("enum"), 13);
    assert_eq!(kinds("trait"), 1);
    assert_eq!(kinds("bool"), 1);
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
fn dimension_names_list_the_dimensions_with_traits_closing_the_customer_ones() {
    assert_eq!(
        dimension_names(),
        [
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
            "features.p_alive_band",
        ]
    );
    for name in dimension_names() {
        let variable = parse_variable(name).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(is_dimension(&variable), "{name}");
    }
}

#[test]
fn suggestions_are_the_names_within_two_edits() {
    refused(
        "features.stag == 1",
        0,
        "unknown variable `features.stag` (did you mean features.stage?)",
    );
    refused(
        "customer.cuntry == 1",
        0,
        "(did you mean customer.country?)",
    );
    // A swap of two letters is two edits (Levenshtein, not Damerau), so two
    // swaps are too far for a suggestion.
    refused("customer.ctiy == 1", 0, "(did you mean customer.city?)");
    let error = compile("customer.cuontyr == 1").unwrap_err();
    assert!(!error.message.contains("did you mean"), "{}", error.message);
    let error = compile("customer.xyzzy == 1").unwrap_err();
    assert!(!error.message.contains("did you mean"), "{}", error.message);
}
