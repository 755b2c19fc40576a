//! PersonaService on a population that reaches every built-in persona.

use std::collections::BTreeMap;

use segmentd::grpc::pb;
use segmentd::grpc::pb::persona_service_client::PersonaServiceClient;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

use crate::activity::{at, engagement, purchase, record};
use crate::customers::create;
use crate::segments::T;
use crate::support::{config, TestServer};

pub async fn personas(server: &TestServer) -> PersonaServiceClient<Channel> {
    PersonaServiceClient::new(server.channel().await)
}

/// One customer per built-in persona, as of T (day 400), a second
/// returning customer who lapsed with a small spend, and an objector.
async fn population(server: &TestServer) {
    let email = Some(pb::Consent {
        email: pb::ConsentStatus::Granted as i32,
        ..Default::default()
    });
    let customers = [
        (
            "internal",
            pb::Customer {
                relationship: pb::Relationship::Internal as i32,
                ..Default::default()
            },
        ),
        ("advocate", pb::Customer::default()),
        ("lapsing", pb::Customer::default()),
        ("cocreator", pb::Customer::default()),
        (
            "vip",
            pb::Customer {
                consent: email,
                ..Default::default()
            },
        ),
        (
            "business",
            pb::Customer {
                party: pb::Party::Business as i32,
                ..Default::default()
            },
        ),
        ("returning", pb::Customer::default()),
        ("returning-lapsed", pb::Customer::default()),
        (
            "onetime",
            pb::Customer {
                consent: email,
                ..Default::default()
            },
        ),
        ("window", pb::Customer::default()),
        ("prospect", pb::Customer::default()),
        (
            "objector",
            pb::Customer {
                objects_to_profiling: true,
                consent: email,
                ..Default::default()
            },
        ),
    ];
    for (id, customer) in customers {
        create(server, id, customer).await.unwrap();
    }
    let mut purchases = vec![
        // The biggest spender, lapsed: M = 5.
        purchase("l0", "lapsing", 0, 100_000),
        purchase("l1", "lapsing", 10, 100_000),
        purchase("b0", "business", 380, 1_000),
        purchase("b1", "business", 390, 1_000),
        purchase("r0", "returning", 370, 1_500),
        purchase("r1", "returning", 390, 1_500),
        purchase("rl0", "returning-lapsed", 0, 100),
        purchase("rl1", "returning-lapsed", 10, 100),
        purchase("o0", "onetime", 390, 500),
        purchase("x0", "objector", 390, 500),
    ];
    for (n, day) in [300, 320, 340, 360, 380].into_iter().enumerate() {
        purchases.push(purchase(&format!("v{n}"), "vip", day, 1_000));
    }
    let engagements = vec![
        engagement("e-ref", "advocate", 100, pb::EngagementType::Referral),
        engagement("e-fb", "cocreator", 100, pb::EngagementType::Feedback),
        engagement("e-visit", "window", 100, pb::EngagementType::Visit),
    ];
    record(server, purchases, engagements).await.unwrap();
}

async fn persona_of(
    client: &mut PersonaServiceClient<Channel>,
    id: &str,
) -> Result<pb::PersonaAssignment, tonic::Status> {
    client
        .get_customer_persona(pb::GetCustomerPersonaRequest {
            name: format!("customers/{id}"),
            evaluation_time: at(T),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn conditions(list: &[pb::ConditionResult]) -> Vec<(String, String, bool)> {
    list.iter()
        .map(|c| (c.condition.clone(), c.actual.clone(), c.holds))
        .collect()
}

fn owned(items: &[(&str, &str, bool)]) -> Vec<(String, String, bool)> {
    items
        .iter()
        .map(|(c, a, h)| ((*c).to_owned(), (*a).to_owned(), *h))
        .collect()
}

#[tokio::test]
async fn every_built_in_persona_is_reached_and_explained() {
    let server = TestServer::start().await;
    population(&server).await;
    let mut client = personas(&server).await;
    let expected = [
        ("internal", "INTERNAL_CUSTOMER"),
        ("advocate", "BRAND_ADVOCATE"),
        ("lapsing", "LAPSING_LOYAL"),
        ("cocreator", "CO_CREATOR"),
        ("vip", "VIP_FREQUENT"),
        ("business", "BUSINESS_ACCOUNT"),
        ("returning", "RETURNING_CUSTOMER"),
        ("returning-lapsed", "RETURNING_CUSTOMER"),
        ("onetime", "ONE_TIME_BUYER"),
        ("window", "WINDOW_SHOPPER"),
        ("prospect", "PROSPECT"),
    ];
    for (id, persona) in expected {
        let assignment = persona_of(&mut client, id).await.unwrap();
        let got = assignment.persona.as_ref().unwrap();
        assert_eq!(got.persona_id, persona, "{id}");
        assert!(!got.recommended_actions.is_empty(), "{id}");
        assert_eq!(assignment.catalog_revision, 1);
        let explanation = assignment.explanation.unwrap();
        // Every persona above the assigned one is named, with a failed condition.
        let rank = expected_rank(persona);
        assert_eq!(explanation.rejected.len(), rank, "{id}");
        for rejected in &explanation.rejected {
            assert!(!rejected.failed.is_empty(), "{id}: {rejected:?}");
            assert!(
                rejected.failed.iter().all(|c| !c.holds),
                "{id}: {rejected:?}"
            );
        }
        assert!(explanation.matched.iter().all(|c| c.holds), "{id}");
        assert_eq!(assignment.features.unwrap().name, format!("customers/{id}"));
    }

    // The explanations in detail.
    let lapsing = persona_of(&mut client, "lapsing").await.unwrap();
    let explanation = lapsing.explanation.unwrap();
    assert_eq!(
        conditions(&explanation.matched),
        owned(&[
            ("features.frequency == \"LAPSED\"", "LAPSED", true),
            ("features.rfm.m >= 4", "5", true),
        ])
    );
    assert_eq!(explanation.matched[1].expected, ">= 4");
    assert_eq!(
        conditions(&explanation.rejected[0].failed),
        owned(&[("customer.relationship == \"INTERNAL\"", "EXTERNAL", false)])
    );

    let lapsed_small = persona_of(&mut client, "returning-lapsed").await.unwrap();
    let explanation = lapsed_small.explanation.unwrap();
    let lapsing_loyal = explanation
        .rejected
        .iter()
        .find(|r| r.persona_id == "LAPSING_LOYAL")
        .unwrap();
    // Only the condition that failed is named.
    assert_eq!(
        conditions(&lapsing_loyal.failed),
        owned(&[("features.rfm.m >= 4", "1", false)])
    );

    let onetime = persona_of(&mut client, "onetime").await.unwrap();
    let steps: BTreeMap<String, String> = onetime
        .explanation
        .unwrap()
        .next_steps
        .into_iter()
        .map(|step| (step.persona_id, step.description))
        .collect();
    assert_eq!(
        steps,
        BTreeMap::from([
            (
                "BRAND_ADVOCATE".to_owned(),
                "a referral → BRAND_ADVOCATE".to_owned()
            ),
            (
                "CO_CREATOR".to_owned(),
                "a feedback → CO_CREATOR".to_owned()
            ),
            (
                "VIP_FREQUENT".to_owned(),
                "3 more purchases in 365 days → VIP_FREQUENT".to_owned()
            ),
            (
                "RETURNING_CUSTOMER".to_owned(),
                "1 more purchase → RETURNING_CUSTOMER".to_owned()
            ),
        ])
    );

    // No persona for a customer who objects to profiling.
    let status = persona_of(&mut client, "objector").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("objects to profiling"));
    let status = persona_of(&mut client, "nobody").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // The same population, counted per persona.
    let breakdown = client
        .breakdown_personas(pb::BreakdownPersonasRequest {
            filter: String::new(),
            evaluation_time: at(T),
        })
        .await
        .unwrap()
        .into_inner();
    let counts: Vec<(String, i64)> = breakdown
        .groups
        .iter()
        .map(|g| (g.persona_id.clone(), g.customer_count))
        .collect();
    let mut expected_counts: Vec<(String, i64)> =
        BUILT_IN.iter().map(|id| ((*id).to_owned(), 1)).collect();
    expected_counts[6].1 = 2;
    assert_eq!(counts, expected_counts);
    assert_eq!(
        (
            breakdown.total_count,
            breakdown.excluded_count,
            breakdown.unassigned_count
        ),
        (11, 1, 0)
    );
    assert_eq!(
        breakdown.groups[2]
            .total_spend
            .as_ref()
            .unwrap()
            .minor_units,
        200_000
    );
    // A filter narrows the population first.
    let buyers = client
        .breakdown_personas(pb::BreakdownPersonasRequest {
            filter: "features.purchase_count >= 2".into(),
            evaluation_time: at(T),
        })
        .await
        .unwrap()
        .into_inner();
    let counts: BTreeMap<String, i64> = buyers
        .groups
        .iter()
        .filter(|g| g.customer_count > 0)
        .map(|g| (g.persona_id.clone(), g.customer_count))
        .collect();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("LAPSING_LOYAL".to_owned(), 1),
            ("VIP_FREQUENT".to_owned(), 1),
            ("BUSINESS_ACCOUNT".to_owned(), 1),
            ("RETURNING_CUSTOMER".to_owned(), 2),
        ])
    );
    assert_eq!((buyers.total_count, buyers.excluded_count), (5, 0));
    let status = client
        .breakdown_personas(pb::BreakdownPersonasRequest {
            filter: "features.purchase_count >=".into(),
            evaluation_time: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    server.stop().await.unwrap();
}

const BUILT_IN: [&str; 10] = [
    "INTERNAL_CUSTOMER",
    "BRAND_ADVOCATE",
    "LAPSING_LOYAL",
    "CO_CREATOR",
    "VIP_FREQUENT",
    "BUSINESS_ACCOUNT",
    "RETURNING_CUSTOMER",
    "ONE_TIME_BUYER",
    "WINDOW_SHOPPER",
    "PROSPECT",
];

fn expected_rank(persona: &str) -> usize {
    BUILT_IN.iter().position(|id| *id == persona).unwrap()
}

pub fn persona(id: &str, rule: &str) -> pb::Persona {
    pb::Persona {
        persona_id: id.into(),
        display_name: id.to_lowercase(),
        description: String::new(),
        rule: rule.into(),
        recommended_actions: vec!["say hello".into()],
        channels: vec!["email".into()],
    }
}

#[tokio::test]
async fn the_catalog_is_replaced_checked_and_reset() {
    let server = TestServer::start().await;
    population(&server).await;
    let mut client = personas(&server).await;
    let listed = client
        .list_personas(pb::ListPersonasRequest {})
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed
        .personas
        .iter()
        .map(|p| p.persona_id.as_str())
        .collect();
    assert_eq!(ids, BUILT_IN);
    assert_eq!((listed.revision, listed.built_in), (1, true));

    // Every invalid persona is named.
    let status = client
        .replace_persona_catalog(pb::ReplacePersonaCatalogRequest {
            personas: vec![
                persona("BIG", "features.total_spend >= 100"),
                persona("BROKEN", "features.total_spend >="),
                persona("big-2", "true"),
                persona("BIG", "true"),
            ],
            expected_revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut fields: Vec<String> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "personas[1].rule",
            "personas[2].persona_id",
            "personas[3].persona_id"
        ]
    );
    // Nothing changed.
    assert_eq!(
        persona_of(&mut client, "vip")
            .await
            .unwrap()
            .persona
            .unwrap()
            .persona_id,
        "VIP_FREQUENT"
    );

    let replaced = client
        .replace_persona_catalog(pb::ReplacePersonaCatalogRequest {
            personas: vec![
                persona(
                    "STAFF_OR_HEAVY",
                    "!(customer.relationship == \"EXTERNAL\") || features.purchase_count >= 100",
                ),
                persona("BIG_SPENDER", "features.total_spend >= 100"),
                persona("EVERYONE", "true"),
            ],
            expected_revision: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((replaced.revision, replaced.built_in), (2, false));
    let lapsing = persona_of(&mut client, "lapsing").await.unwrap();
    assert_eq!(lapsing.persona.unwrap().persona_id, "BIG_SPENDER");
    assert_eq!(lapsing.catalog_revision, 2);
    // A failed "or" names every part; a negation is one condition.
    let failed = &lapsing.explanation.unwrap().rejected[0];
    assert_eq!(failed.persona_id, "STAFF_OR_HEAVY");
    assert_eq!(
        conditions(&failed.failed),
        owned(&[
            ("!(customer.relationship == \"EXTERNAL\")", "holds", false),
            ("features.purchase_count >= 100", "2", false),
        ])
    );
    assert_eq!(failed.failed[0].expected, "does not hold");
    // An "or" that holds names the parts that hold.
    let staff = persona_of(&mut client, "internal").await.unwrap();
    assert_eq!(staff.persona.unwrap().persona_id, "STAFF_OR_HEAVY");
    assert_eq!(
        conditions(&staff.explanation.unwrap().matched),
        owned(&[(
            "!(customer.relationship == \"EXTERNAL\")",
            "does not hold",
            true
        )])
    );
    assert_eq!(
        persona_of(&mut client, "vip")
            .await
            .unwrap()
            .persona
            .unwrap()
            .persona_id,
        "EVERYONE"
    );
    // A stale revision is refused.
    let status = client
        .replace_persona_catalog(pb::ReplacePersonaCatalogRequest {
            personas: vec![persona("EVERYONE", "true")],
            expected_revision: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "REVISION_MISMATCH");
    assert!(status.message().contains("revision 2, not 1"), "{status:?}");

    // The catalog survives a restart, and a reset restores the built-in one.
    let temp = server.stop_keeping_data().await;
    let restarted = TestServer::spawn(config(temp.as_ref().unwrap().path())).await;
    restarted.wait_serving().await;
    let mut client = personas(&restarted).await;
    let kept = client
        .list_personas(pb::ListPersonasRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.revision, 2);
    assert_eq!(kept.personas.len(), 3);
    let reset = client
        .reset_persona_catalog(pb::ResetPersonaCatalogRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reset.revision, reset.built_in), (3, true));
    assert_eq!(reset.personas.len(), 10);
    restarted.stop().await.unwrap();
}

async fn export(
    client: &mut PersonaServiceClient<Channel>,
    persona_ids: &[&str],
    channel: pb::Channel,
) -> Vec<(String, String)> {
    let mut stream = client
        .export_persona_assignments(pb::ExportPersonaAssignmentsRequest {
            persona_ids: persona_ids.iter().map(|id| (*id).to_owned()).collect(),
            channel: channel as i32,
            evaluation_time: at(T),
            batch_size: 4,
        })
        .await
        .unwrap()
        .into_inner();
    let mut found = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        assert!(message.assignments.len() <= 4);
        assert_eq!(message.catalog_revision, 1);
        found.extend(
            message
                .assignments
                .into_iter()
                .map(|a| (a.customer, a.persona_id)),
        );
    }
    found
}

#[tokio::test]
async fn exports_honour_consent_and_objection() {
    let server = TestServer::start().await;
    population(&server).await;
    let mut client = personas(&server).await;
    let everyone = export(&mut client, &[], pb::Channel::Unspecified).await;
    assert_eq!(everyone.len(), 11);
    assert!(everyone.iter().all(|(c, _)| c != "customers/objector"));
    let mut sorted = everyone.clone();
    sorted.sort();
    assert_eq!(everyone, sorted);
    // The objector granted email too, and is still left out.
    assert_eq!(
        export(&mut client, &[], pb::Channel::Email).await,
        [
            ("customers/onetime".to_owned(), "ONE_TIME_BUYER".to_owned()),
            ("customers/vip".to_owned(), "VIP_FREQUENT".to_owned()),
        ]
    );
    assert_eq!(
        export(&mut client, &["VIP_FREQUENT"], pb::Channel::Unspecified).await,
        [("customers/vip".to_owned(), "VIP_FREQUENT".to_owned())]
    );
    let status = client
        .export_persona_assignments(pb::ExportPersonaAssignmentsRequest {
            persona_ids: vec!["LAPSING_LOYAL".into(), "NO_SUCH".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        crate::customers::violated_fields(&status),
        ["persona_ids[1]"]
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_persona_command_explains_a_customer() {
    let server = TestServer::start().await;
    population(&server).await;
    let addr = server.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_segmentd"))
            .args([
                "persona",
                "--addr",
                &addr,
                "onetime",
                "--at",
                "2025-02-04T00:00:00Z",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{text}");
    for line in [
        "customers/onetime: One-time buyer (ONE_TIME_BUYER)",
        "[yes] features.frequency == \"ONE_TIME_BUYER\"   (is ONE_TIME_BUYER, needs == \"ONE_TIME_BUYER\")",
        "  VIP_FREQUENT",
        "[no ] features.frequency == \"FREQUENT_CUSTOMER\"   (is ONE_TIME_BUYER",
        "3 more purchases in 365 days → VIP_FREQUENT",
        "  - Follow up after the purchase",
        "(catalog revision 1)",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    // A customer who objects gets the reason and a failing exit status.
    let addr = server.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_segmentd"))
            .args(["persona", "--addr", &addr, "customers/objector"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("objects to profiling"));
    server.stop().await.unwrap();
}
