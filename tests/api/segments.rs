//! SegmentationService and the rule language on a hand-built population
//! whose every feature is worked out below.

use std::collections::BTreeMap;

use segmentd::grpc::pb;
use segmentd::grpc::pb::segmentation_service_client::SegmentationServiceClient;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

use crate::activity::{at, engagement, purchase, record, BASE, DAY};
use crate::customers::create;
use crate::support::TestServer;

/// T: 2025-02-04T00:00:00Z, day 400 after BASE.
pub const T: i64 = BASE + 400 * DAY;

pub async fn segmentation(server: &TestServer) -> SegmentationServiceClient<Channel> {
    SegmentationServiceClient::new(server.channel().await)
}

fn date(year: i32, month: i32, day: i32) -> Option<pb::google::r#type::Date> {
    Some(pb::google::r#type::Date { year, month, day })
}

fn usd(major: i64) -> Option<pb::Money> {
    Some(pb::Money {
        currency_code: "USD".into(),
        minor_units: major * 100,
    })
}

pub fn place(country: &str, region: &str, city: &str) -> Option<pb::Location> {
    Some(pb::Location {
        country_code: country.into(),
        region: region.into(),
        city: city.into(),
        postal_code: String::new(),
    })
}

fn text(value: &str) -> pb::TraitValue {
    pb::TraitValue {
        kind: Some(pb::trait_value::Kind::StringValue(value.into())),
    }
}

/// Six customers, as of T:
///
/// | id | who | age band | income | frequency | stage | R F M | RFM segment |
/// |---|---|---|---|---|---|---|---|
/// | a-ayse | TR, female, gold, vip | 25_34 | MIDDLE | FREQUENT (5 buys, 20 days apart) | TELLING_OTHERS | 2 4 4 | AT_RISK |
/// | b-omar | EG, internal, male | 45_54 | HIGH | ONE_TIME_BUYER | JUST_BUYING | 3 1 2 | ABOUT_TO_SLEEP |
/// | c-reza | IR, business, silver | UNKNOWN | UNKNOWN | LAPSED (2 buys, 390 days ago) | REBUYING | 1 2 1 | HIBERNATING |
/// | d-lena | DE, female | UNDER_18 | UNKNOWN | NONE | JUST_LOOKING | | |
/// | e-nour | SA, objects to profiling | 65_PLUS | LOW | REPEAT (3 buys) | GIVING_FEEDBACK | 3 3 3 | NEED_ATTENTION |
/// | f-sam | US, male | 18_24 | VERY_HIGH | NONE | TOTAL_MARKET | | |
pub async fn population(server: &TestServer) {
    use pb::ConsentStatus::{Denied, Granted};
    let consent = |email: pb::ConsentStatus, sms, ads| {
        Some(pb::Consent {
            email: email as i32,
            sms: sms as i32,
            push: 0,
            ads: ads as i32,
        })
    };
    let unknown = pb::ConsentStatus::Unknown;
    let customers = [
        (
            "a-ayse",
            pb::Customer {
                gender: pb::Gender::Female as i32,
                birth_date: date(1991, 4, 23),
                annual_income: usd(54_000),
                location: place("TR", "Marmara", "Istanbul"),
                language: "tr".into(),
                traits: BTreeMap::from([
                    ("tier".to_owned(), text("gold")),
                    (
                        "vip".to_owned(),
                        pb::TraitValue {
                            kind: Some(pb::trait_value::Kind::BoolValue(true)),
                        },
                    ),
                    (
                        "score".to_owned(),
                        pb::TraitValue {
                            kind: Some(pb::trait_value::Kind::NumberValue(7.0)),
                        },
                    ),
                ]),
                consent: consent(Granted, unknown, unknown),
                ..Default::default()
            },
        ),
        (
            "b-omar",
            pb::Customer {
                relationship: pb::Relationship::Internal as i32,
                gender: pb::Gender::Male as i32,
                birth_date: date(1980, 1, 1),
                annual_income: usd(120_000),
                location: place("EG", "", "Cairo"),
                language: "ar-EG".into(),
                consent: consent(Denied, Granted, unknown),
                ..Default::default()
            },
        ),
        (
            "c-reza",
            pb::Customer {
                party: pb::Party::Business as i32,
                location: place("IR", "", "Tehran"),
                language: "fa".into(),
                traits: BTreeMap::from([("tier".to_owned(), text("silver"))]),
                consent: consent(unknown, unknown, Granted),
                ..Default::default()
            },
        ),
        (
            "d-lena",
            pb::Customer {
                gender: pb::Gender::Female as i32,
                birth_date: date(2010, 6, 1),
                location: place("DE", "", "Berlin"),
                consent: consent(Granted, unknown, unknown),
                ..Default::default()
            },
        ),
        (
            "e-nour",
            pb::Customer {
                gender: pb::Gender::Other as i32,
                birth_date: date(1950, 3, 3),
                annual_income: usd(20_000),
                location: place("SA", "", "Riyadh"),
                consent: consent(Granted, Granted, Granted),
                objects_to_profiling: true,
                ..Default::default()
            },
        ),
        (
            "f-sam",
            pb::Customer {
                gender: pb::Gender::Male as i32,
                birth_date: date(2000, 12, 31),
                annual_income: usd(200_000),
                location: place("US", "", "Boston"),
                ..Default::default()
            },
        ),
    ];
    for (id, customer) in customers {
        create(server, id, customer).await.unwrap();
    }
    let mut purchases = Vec::new();
    for (n, day) in [300, 320, 340, 360, 380].into_iter().enumerate() {
        purchases.push(purchase(&format!("a{n}"), "a-ayse", day, 10_000));
    }
    purchases.push(purchase("b0", "b-omar", 390, 5_000));
    purchases.push(purchase("c0", "c-reza", 0, 2_000));
    purchases.push(purchase("c1", "c-reza", 10, 2_000));
    for (n, day) in [370, 380, 390].into_iter().enumerate() {
        purchases.push(purchase(&format!("e{n}"), "e-nour", day, 3_000));
    }
    let engagements = vec![
        engagement("a-ref", "a-ayse", 200, pb::EngagementType::Referral),
        engagement("d-visit", "d-lena", 100, pb::EngagementType::Visit),
        engagement("e-feedback", "e-nour", 385, pb::EngagementType::Feedback),
    ];
    record(server, purchases, engagements).await.unwrap();
}

pub async fn breakdown(
    client: &mut SegmentationServiceClient<Channel>,
    dimensions: &[&str],
    filter: &str,
) -> pb::BreakdownCustomersResponse {
    client
        .breakdown_customers(pb::BreakdownCustomersRequest {
            dimensions: dimensions.iter().map(|d| (*d).to_owned()).collect(),
            filter: filter.into(),
            evaluation_time: at(T),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Group values joined with `/`, and their counts.
pub fn counts(response: &pb::BreakdownCustomersResponse) -> BTreeMap<String, i64> {
    response
        .groups
        .iter()
        .map(|group| (group.values.join("/"), group.customer_count))
        .collect()
}

fn expect(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[tokio::test]
async fn breakdowns_group_by_every_dimension() {
    let server = TestServer::start().await;
    population(&server).await;
    let mut client = segmentation(&server).await;
    let cases: Vec<(&str, BTreeMap<String, i64>)> = vec![
        (
            "customer.relationship",
            expect(&[("EXTERNAL", 4), ("INTERNAL", 1)]),
        ),
        (
            "customer.party",
            expect(&[("INDIVIDUAL", 4), ("BUSINESS", 1)]),
        ),
        (
            "customer.gender",
            expect(&[("FEMALE", 2), ("MALE", 2), ("UNSPECIFIED", 1)]),
        ),
        (
            "customer.age_band",
            expect(&[
                ("25_34", 1),
                ("45_54", 1),
                ("UNKNOWN", 1),
                ("UNDER_18", 1),
                ("18_24", 1),
            ]),
        ),
        (
            "customer.income_band",
            expect(&[("MIDDLE", 1), ("HIGH", 1), ("UNKNOWN", 2), ("VERY_HIGH", 1)]),
        ),
        (
            "customer.country",
            expect(&[("TR", 1), ("EG", 1), ("IR", 1), ("DE", 1), ("US", 1)]),
        ),
        ("customer.region", expect(&[("Marmara", 1), ("", 4)])),
        (
            "customer.consent.email",
            expect(&[("GRANTED", 2), ("DENIED", 1), ("UNKNOWN", 2)]),
        ),
        (
            "customer.consent.sms",
            expect(&[("GRANTED", 1), ("UNKNOWN", 4)]),
        ),
        (
            "customer.traits.tier",
            expect(&[("gold", 1), ("silver", 1), ("", 3)]),
        ),
        (
            "features.frequency",
            expect(&[
                ("FREQUENT_CUSTOMER", 1),
                ("ONE_TIME_BUYER", 1),
                ("LAPSED", 1),
                ("NONE", 2),
            ]),
        ),
        (
            "features.stage",
            expect(&[
                ("TELLING_OTHERS", 1),
                ("JUST_BUYING", 1),
                ("REBUYING", 1),
                ("JUST_LOOKING", 1),
                ("TOTAL_MARKET", 1),
            ]),
        ),
        (
            "features.rfm_segment",
            expect(&[
                ("AT_RISK", 1),
                ("ABOUT_TO_SLEEP", 1),
                ("HIBERNATING", 1),
                ("", 2),
            ]),
        ),
    ];
    for (dimension, expected) in cases {
        let response = breakdown(&mut client, &[dimension], "").await;
        assert_eq!(counts(&response), expected, "{dimension}");
        // The objector is counted apart, never in a group.
        assert_eq!(response.total_count, 5, "{dimension}");
        assert_eq!(response.excluded_count, 1, "{dimension}");
    }

    // Three dimensions with a filter, and the money figures.
    let response = breakdown(
        &mut client,
        &[
            "customer.relationship",
            "features.frequency",
            "customer.gender",
        ],
        "features.purchase_count >= 1",
    )
    .await;
    assert_eq!(
        counts(&response),
        expect(&[
            ("EXTERNAL/FREQUENT_CUSTOMER/FEMALE", 1),
            ("INTERNAL/ONE_TIME_BUYER/MALE", 1),
            ("EXTERNAL/LAPSED/UNSPECIFIED", 1),
        ])
    );
    assert_eq!((response.total_count, response.excluded_count), (3, 1));
    let ayse = &response.groups[0];
    assert_eq!(ayse.values, ["EXTERNAL", "FREQUENT_CUSTOMER", "FEMALE"]);
    assert_eq!(ayse.total_spend.as_ref().unwrap().minor_units, 50_000);
    assert_eq!(ayse.average_spend.as_ref().unwrap().minor_units, 50_000);
    assert_eq!(ayse.average_purchase_count, 5.0);
    assert!((ayse.share - 1.0 / 3.0).abs() < 1e-12);

    // Dimensions that are not dimensions, or not variables.
    for (dimensions, field) in [
        (vec!["features.purchase_count"], "dimensions[0]"),
        (vec!["customer.colour"], "dimensions[0]"),
        (vec![], "dimensions"),
        (
            vec![
                "customer.party",
                "customer.gender",
                "customer.country",
                "customer.region",
                "features.stage",
            ],
            "dimensions",
        ),
    ] {
        let status = client
            .breakdown_customers(pb::BreakdownCustomersRequest {
                dimensions: dimensions.iter().map(|d| (*d).to_owned()).collect(),
                filter: String::new(),
                evaluation_time: at(T),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{dimensions:?}");
        let fields: Vec<String> = status
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert!(fields.contains(&field.to_owned()), "{fields:?}");
    }
    server.stop().await.unwrap();
}

async fn members(client: &mut SegmentationServiceClient<Channel>, filter: &str) -> Vec<String> {
    let response = client
        .preview_segment(pb::PreviewSegmentRequest {
            filter: filter.into(),
            evaluation_time: at(T),
            sample_size: 100,
            segment: String::new(),
        })
        .await
        .unwrap_or_else(|status| panic!("{filter}: {status:?}"))
        .into_inner();
    assert_eq!(response.member_count as usize, response.sample.len());
    response
        .sample
        .into_iter()
        .map(|name| name.trim_start_matches("customers/")[2..].to_owned())
        .collect()
}

#[tokio::test]
async fn filters_use_every_operator_and_variable() {
    let server = TestServer::start().await;
    population(&server).await;
    let mut client = segmentation(&server).await;
    let cases: &[(&str, &[&str])] = &[
        ("", &["ayse", "omar", "reza", "lena", "sam"]),
        ("customer.age >= 25", &["ayse", "omar"]),
        ("customer.age < 18", &["lena"]),
        ("18 <= customer.age && customer.age <= 24", &["sam"]),
        ("customer.country in [\"TR\", \"IR\"]", &["ayse", "reza"]),
        (
            "customer.country != \"TR\"",
            &["omar", "reza", "lena", "sam"],
        ),
        ("customer.region == \"Marmara\"", &["ayse"]),
        ("customer.city.startsWith(\"Is\")", &["ayse"]),
        ("customer.language.endsWith(\"EG\")", &["omar"]),
        ("customer.city.contains(\"hr\")", &["reza"]),
        ("has(customer.age)", &["ayse", "omar", "lena", "sam"]),
        ("!has(customer.income)", &["reza", "lena"]),
        ("customer.income >= 100000", &["omar", "sam"]),
        ("customer.traits[\"tier\"] == \"gold\"", &["ayse"]),
        ("has(customer.traits.tier)", &["ayse", "reza"]),
        ("customer.traits.vip", &["ayse"]),
        ("customer.traits.score > 5", &["ayse"]),
        ("customer.relationship == \"INTERNAL\"", &["omar"]),
        ("customer.party == \"BUSINESS\"", &["reza"]),
        ("customer.gender == \"FEMALE\"", &["ayse", "lena"]),
        ("customer.consent.sms == \"GRANTED\"", &["omar"]),
        ("customer.consent.ads == \"GRANTED\"", &["reza"]),
        ("customer.income_band == \"VERY_HIGH\"", &["sam"]),
        ("customer.age_band == \"18_24\"", &["sam"]),
        ("customer.objects_to_profiling", &[]),
        (
            "features.frequency == \"FREQUENT_CUSTOMER\" || features.stage == \"JUST_LOOKING\"",
            &["ayse", "lena"],
        ),
        (
            "features.purchase_count >= 2 && !(features.frequency == \"LAPSED\")",
            &["ayse"],
        ),
        ("features.purchases_90d == 1", &["omar"]),
        ("features.purchases_365d >= 5", &["ayse"]),
        ("features.total_spend > 100.0", &["ayse"]),
        ("features.avg_order_value == 100", &["ayse"]),
        ("features.recency_days <= 10", &["omar"]),
        ("features.mean_gap_days == 20.0", &["ayse"]),
        ("features.rfm.r == 3", &["omar"]),
        ("features.rfm.f >= 4", &["ayse"]),
        ("features.rfm.m == 1", &["reza"]),
        ("features.rfm_segment == \"HIBERNATING\"", &["reza"]),
        (
            "features.stage in [\"REBUYING\", \"JUST_BUYING\"]",
            &["omar", "reza"],
        ),
        ("true", &["ayse", "omar", "reza", "lena", "sam"]),
        ("false", &[]),
    ];
    for (filter, expected) in cases {
        let mut found = members(&mut client, filter).await;
        found.sort();
        let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        expected.sort();
        assert_eq!(found, expected, "{filter}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn refused_rules_name_the_position() {
    let server = TestServer::start().await;
    let mut client = segmentation(&server).await;
    let cases = [
        ("customer.colour == \"red\"", "at character 0"),
        ("features.purchase_count + 1 > 2", "+"),
        ("customer.age > ", "at character"),
        ("features.frequency == \"OFTEN\"", "FREQUENT_CUSTOMER"),
        ("customer.country < \"TR\"", "at character"),
        (
            "features.purchase_count == features.purchases_90d",
            "at character",
        ),
        ("customer.age", "at character"),
    ];
    for (filter, fragment) in cases {
        let status = client
            .preview_segment(pb::PreviewSegmentRequest {
                filter: filter.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{filter}");
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "filter", "{filter}");
        assert!(
            violations[0].description.contains(fragment),
            "{filter}: {}",
            violations[0].description
        );
    }
    // The language describes itself, with an example per variable.
    let described = client
        .describe_rule_language(pb::DescribeRuleLanguageRequest {})
        .await
        .unwrap()
        .into_inner();
    let frequency = described
        .variables
        .iter()
        .find(|v| v.name == "features.frequency")
        .unwrap();
    assert!(frequency
        .enum_values
        .contains(&"FREQUENT_CUSTOMER".to_owned()));
    for variable in &described.variables {
        assert!(!variable.example.is_empty(), "{}", variable.name);
        let preview = client
            .preview_segment(pb::PreviewSegmentRequest {
                filter: variable.example.clone(),
                ..Default::default()
            })
            .await;
        assert!(preview.is_ok(), "{}: {preview:?}", variable.example);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn rfm_scores_and_segments_of_a_small_population() {
    let server = TestServer::start().await;
    population(&server).await;
    let mut customers = server.customers().await;
    for (id, rfm, segment) in [
        ("a-ayse", Some((2, 4, 4)), pb::RfmSegment::AtRisk),
        ("b-omar", Some((3, 1, 2)), pb::RfmSegment::AboutToSleep),
        ("c-reza", Some((1, 2, 1)), pb::RfmSegment::Hibernating),
        ("d-lena", None, pb::RfmSegment::Unspecified),
        ("e-nour", Some((3, 3, 3)), pb::RfmSegment::NeedAttention),
    ] {
        let features = customers
            .get_customer_features(pb::GetCustomerFeaturesRequest {
                name: format!("customers/{id}"),
                evaluation_time: at(T),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(features.rfm.map(|s| (s.r, s.f, s.m)), rfm, "{id}");
        assert_eq!(features.rfm_segment, segment as i32, "{id}");
    }
    server.stop().await.unwrap();
}
