//! Tests of the compiler: comparisons, logic, `in`, string tests, `has()`
//! and the refusal of everything else.

use super::*;
use crate::domain::features::EngagementStage;
use crate::domain::rules::testing::{compare, ok, refused, text, trait_};
use crate::domain::rules::Channel;
use crate::domain::ConsentStatus;
use Comparison::{Eq, Ge, Gt, Le, Lt, Ne};

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
