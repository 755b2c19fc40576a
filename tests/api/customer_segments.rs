//! ListCustomerSegments on the hand-built population of `segments.rs`: the
//! segments of each customer agree with the members of each segment, the
//! explanations name every condition of a rule, objectors are in nothing,
//! and bad requests are refused.

use std::collections::BTreeSet;

use segmentd::grpc::pb;
use segmentd::grpc::pb::membership_service_client::MembershipServiceClient;
use tonic::transport::Channel;
use tonic::Code;

use crate::activity::{at, purchase, record, BASE, DAY};
use crate::customers::violated_fields;
use crate::segments::{population, segmentation, T};
use crate::support::TestServer;

/// How the conditions of a rule decide it.
#[derive(Debug, Clone, Copy)]
enum Joined {
    /// One condition.
    One,
    /// Every condition must hold.
    All,
    /// One condition must hold.
    Any,
}

/// The saved segments, in the order they are created (not their ids'):
/// id, filter, how its conditions join, and how many there are.
const SEGMENTS: [(&str, &str, Joined, usize); 9] = [
    (
        "recent-regulars",
        "features.recency_days <= 30 && features.purchases_365d >= 3",
        Joined::All,
        2,
    ),
    (
        "at-risk-or-sleepy",
        r#"features.rfm_segment in ["AT_RISK", "ABOUT_TO_SLEEP"]"#,
        Joined::One,
        1,
    ),
    ("everyone", "true", Joined::One, 1),
    (
        "big-or-recent",
        "features.rfm.m >= 4 || features.rfm.r >= 3",
        Joined::Any,
        2,
    ),
    (
        "lookers-or-turks",
        r#"customer.country in ["TR", "DE"] || features.stage == "JUST_LOOKING""#,
        Joined::Any,
        2,
    ),
    (
        "external-buyers",
        r#"!(customer.relationship == "INTERNAL") && features.purchase_count >= 1"#,
        Joined::All,
        2,
    ),
    (
        "lapsed",
        r#"features.frequency == "LAPSED""#,
        Joined::One,
        1,
    ),
    (
        "gold",
        r#"customer.traits["tier"] == "gold""#,
        Joined::One,
        1,
    ),
    ("quarterly", "features.purchases_90d >= 2", Joined::One, 1),
];

/// The customers of the population.
const CUSTOMERS: [&str; 6] = ["a-ayse", "b-omar", "c-reza", "d-lena", "e-nour", "f-sam"];

/// A MembershipService client of `server`.
async fn membership(server: &TestServer) -> MembershipServiceClient<Channel> {
    MembershipServiceClient::new(server.channel().await)
}

/// The population with every segment of [`SEGMENTS`] saved, and a client.
async fn start() -> (TestServer, MembershipServiceClient<Channel>) {
    let server = TestServer::start().await;
    population(&server).await;
    let mut client = segmentation(&server).await;
    for (id, filter, _, _) in SEGMENTS {
        client
            .create_segment(pb::CreateSegmentRequest {
                segment_id: id.into(),
                segment: Some(pb::Segment {
                    display_name: format!("The {id}"),
                    filter: filter.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    let client = membership(&server).await;
    (server, client)
}

/// ListCustomerSegments of `customer` at `seconds`, or now.
async fn segments_of(
    client: &mut MembershipServiceClient<Channel>,
    customer: &str,
    seconds: Option<i64>,
    explain: bool,
) -> Result<pb::ListCustomerSegmentsResponse, tonic::Status> {
    client
        .list_customer_segments(pb::ListCustomerSegmentsRequest {
            customer: format!("customers/{customer}"),
            evaluation_time: seconds.and_then(at),
            explain,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The segments of `customer` at T.
async fn at_t(
    client: &mut MembershipServiceClient<Channel>,
    customer: &str,
    explain: bool,
) -> pb::ListCustomerSegmentsResponse {
    segments_of(client, customer, Some(T), explain)
        .await
        .unwrap()
}

/// The names of the segments `customer` is in at T.
async fn member_of_at_t(
    client: &mut MembershipServiceClient<Channel>,
    customer: &str,
) -> Vec<String> {
    let found = at_t(client, customer, false).await;
    found.segments.into_iter().map(|s| s.segment).collect()
}

/// The members of every saved segment as ListSegmentMembers lists them.
async fn members_of_each(server: &TestServer, seconds: i64) -> BTreeSet<(String, String)> {
    let mut client = segmentation(server).await;
    let mut pairs = BTreeSet::new();
    for (id, _, _, _) in SEGMENTS {
        let members = client
            .list_segment_members(pb::ListSegmentMembersRequest {
                segment: format!("segments/{id}"),
                evaluation_time: at(seconds),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(members.next_page_token.is_empty());
        pairs.extend(
            members
                .customers
                .into_iter()
                .map(|customer| (format!("segments/{id}"), customer)),
        );
    }
    pairs
}

/// The ids of the saved segments in id order, as resource names.
fn names_in_order() -> Vec<String> {
    let mut ids: Vec<String> = SEGMENTS
        .iter()
        .map(|(id, _, _, _)| format!("segments/{id}"))
        .collect();
    ids.sort();
    ids
}

/// Whether `conditions` decide a rule joined by `joined` to `holds`.
fn decided(joined: Joined, conditions: &[pb::ConditionResult]) -> bool {
    match joined {
        Joined::One => conditions[0].holds,
        Joined::All => conditions.iter().all(|c| c.holds),
        Joined::Any => conditions.iter().any(|c| c.holds),
    }
}

/// The conditions of a segment's explanation, as [`Shown`].
fn conditions(segment: &pb::CustomerSegment) -> Vec<(&str, &str, bool)> {
    segment
        .conditions
        .iter()
        .map(|c| (c.condition.as_str(), c.actual.as_str(), c.holds))
        .collect()
}

#[tokio::test]
async fn a_customers_segments_agree_with_each_segments_members() {
    let (server, mut client) = start().await;
    // Every event counts at T; on day 375 some do not yet (the figures as
    // of a past time); on day 800 everyone has gone quiet.
    for seconds in [T, BASE + 375 * DAY, BASE + 800 * DAY] {
        let mut listed = BTreeSet::new();
        for customer in CUSTOMERS {
            let plain = segments_of(&mut client, customer, Some(seconds), false)
                .await
                .unwrap();
            assert_eq!(plain.evaluation_time, at(seconds));
            assert_eq!(plain.objects_to_profiling, customer == "e-nour");
            let names: Vec<&str> = plain.segments.iter().map(|s| s.segment.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted, "{customer}");
            for segment in &plain.segments {
                assert!(segment.member, "{customer}: {segment:?}");
                assert!(segment.conditions.is_empty(), "{customer}: {segment:?}");
                listed.insert((segment.segment.clone(), format!("customers/{customer}")));
            }

            // Explained: every segment, members the same, each answer
            // decided by the conditions shown.
            let explained = segments_of(&mut client, customer, Some(seconds), true)
                .await
                .unwrap();
            let names: Vec<String> = explained
                .segments
                .iter()
                .map(|s| s.segment.clone())
                .collect();
            assert_eq!(names, names_in_order(), "{customer}");
            let members: Vec<&str> = explained
                .segments
                .iter()
                .filter(|s| s.member)
                .map(|s| s.segment.as_str())
                .collect();
            let plain_members: Vec<&str> =
                plain.segments.iter().map(|s| s.segment.as_str()).collect();
            assert_eq!(members, plain_members, "{customer}");
            for segment in &explained.segments {
                let (id, _, joined, count) = SEGMENTS
                    .iter()
                    .find(|(id, _, _, _)| format!("segments/{id}") == segment.segment)
                    .unwrap();
                assert_eq!(segment.display_name, format!("The {id}"));
                assert_eq!(segment.conditions.len(), *count, "{customer}: {segment:?}");
                let holds = decided(*joined, &segment.conditions);
                assert_eq!(
                    segment.member,
                    holds && customer != "e-nour",
                    "{customer}: {segment:?}"
                );
                // Only a constant has no value of the customer's.
                for condition in &segment.conditions {
                    assert!(!condition.expected.is_empty());
                    assert_eq!(
                        condition.actual.is_empty(),
                        condition.condition == "true",
                        "{customer}: {condition:?}"
                    );
                }
            }
        }
        assert!(!listed.is_empty(), "{seconds}");
        assert_eq!(listed, members_of_each(&server, seconds).await, "{seconds}");
    }
    server.stop().await.unwrap();
}

/// A condition as an explanation shows it: as written, the customer's
/// value, and whether it holds.
type Shown = (&'static str, &'static str, bool);

/// The first condition of `recent-regulars`.
const RECENT: &str = "features.recency_days <= 30";
/// The second condition of `recent-regulars`.
const REGULAR: &str = "features.purchases_365d >= 3";

/// The explanations expected at T: customer, segment, whether a member,
/// and the conditions (as written, the customer's value, whether it holds).
const EXPLAINED: [(&str, &str, bool, &[Shown]); 8] = [
    // Omar bought once, ten days before T: recent, but not regular. The
    // condition that holds is named beside the one that fails.
    (
        "b-omar",
        "recent-regulars",
        false,
        &[(RECENT, "10", true), (REGULAR, "1", false)],
    ),
    (
        "b-omar",
        "at-risk-or-sleepy",
        true,
        &[(
            r#"features.rfm_segment in ["AT_RISK", "ABOUT_TO_SLEEP"]"#,
            "ABOUT_TO_SLEEP",
            true,
        )],
    ),
    (
        "b-omar",
        "external-buyers",
        false,
        &[
            (r#"!(customer.relationship == "INTERNAL")"#, "holds", false),
            ("features.purchase_count >= 1", "1", true),
        ],
    ),
    (
        "a-ayse",
        "recent-regulars",
        true,
        &[(RECENT, "20", true), (REGULAR, "5", true)],
    ),
    (
        "a-ayse",
        "gold",
        true,
        &[(r#"customer.traits["tier"] == "gold""#, "gold", true)],
    ),
    // Lena has never bought: her purchase figures are absent.
    (
        "d-lena",
        "recent-regulars",
        false,
        &[(RECENT, "absent", false), (REGULAR, "0", false)],
    ),
    // A constant has no value of the customer's to show.
    ("d-lena", "everyone", true, &[("true", "", true)]),
    // Nour objects to profiling: in no segment, though her rule holds.
    (
        "e-nour",
        "recent-regulars",
        false,
        &[(RECENT, "10", true), (REGULAR, "3", true)],
    ),
];

#[tokio::test]
async fn explanations_name_every_condition_with_the_customers_values() {
    let (server, mut client) = start().await;
    for (customer, segment, member, expected) in EXPLAINED {
        let explained = at_t(&mut client, customer, true).await;
        let found = explained
            .segments
            .iter()
            .find(|s| s.segment == format!("segments/{segment}"))
            .unwrap();
        assert_eq!(found.member, member, "{customer} {segment}");
        assert_eq!(conditions(found), expected, "{customer} {segment}");
        // What each condition asks for: its operator and value, that a
        // negation does not hold, or always for a constant.
        for condition in &found.conditions {
            let asked = match condition.condition.split_once(' ') {
                _ if condition.condition.starts_with('!') => "does not hold",
                Some((_, asked)) => asked,
                None => "always",
            };
            assert_eq!(condition.expected, asked, "{customer} {segment}");
        }
    }

    // Without a time, now is used and said; it agrees with the members
    // listed as of the time it says.
    let now = segments_of(&mut client, "a-ayse", None, false)
        .await
        .unwrap();
    let said = now.evaluation_time.unwrap();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((wall - said.seconds).abs() < 60, "{said:?}");
    let again = segments_of(&mut client, "a-ayse", Some(said.seconds), false)
        .await
        .unwrap();
    let names = |response: &pb::ListCustomerSegmentsResponse| -> Vec<String> {
        response
            .segments
            .iter()
            .map(|s| s.segment.clone())
            .collect()
    };
    assert_eq!(names(&now), names(&again));
    let members_now: Vec<String> = members_of_each(&server, said.seconds)
        .await
        .into_iter()
        .filter(|(_, customer)| customer == "customers/a-ayse")
        .map(|(segment, _)| segment)
        .collect();
    assert_eq!(names(&now), members_now);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_objector_is_in_no_segment_yet_is_explained() {
    let (server, mut client) = start().await;
    let plain = at_t(&mut client, "e-nour", false).await;
    assert!(plain.objects_to_profiling);
    assert!(plain.segments.is_empty());

    let explained = at_t(&mut client, "e-nour", true).await;
    assert!(explained.objects_to_profiling);
    let names: Vec<String> = explained
        .segments
        .iter()
        .map(|s| s.segment.clone())
        .collect();
    assert_eq!(names, names_in_order());
    assert!(explained.segments.iter().all(|s| !s.member));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn answers_follow_segments_as_they_change() {
    let (server, mut client) = start().await;
    let mut segments = segmentation(&server).await;
    let before = member_of_at_t(&mut client, "c-reza").await;
    assert!(before.contains(&"segments/lapsed".to_owned()));
    assert!(!before.contains(&"segments/gold".to_owned()));
    assert!(!before.contains(&"segments/big-or-recent".to_owned()));

    // Gold becomes silver: Reza is in, Ayse is out.
    segments
        .update_segment(pb::UpdateSegmentRequest {
            segment: Some(pb::Segment {
                name: "segments/gold".into(),
                filter: r#"customer.traits["tier"] == "silver""#.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["filter".into()],
            }),
        })
        .await
        .unwrap();
    segments
        .delete_segment(pb::DeleteSegmentRequest {
            name: "segments/lapsed".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    let after = member_of_at_t(&mut client, "c-reza").await;
    assert!(after.contains(&"segments/gold".to_owned()));
    assert!(!after.contains(&"segments/lapsed".to_owned()));
    let ayse = member_of_at_t(&mut client, "a-ayse").await;
    assert!(!ayse.contains(&"segments/gold".to_owned()));

    // A purchase five days before T makes Reza recent: his R score rises.
    record(
        &server,
        vec![purchase("c2", "c-reza", 395, 2_000)],
        Vec::new(),
    )
    .await
    .unwrap();
    let bought = member_of_at_t(&mut client, "c-reza").await;
    assert!(bought.contains(&"segments/big-or-recent".to_owned()));
    let explained = at_t(&mut client, "c-reza", true).await;
    assert_eq!(explained.segments.len(), SEGMENTS.len() - 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_customers_and_bad_requests_are_refused() {
    let (server, mut client) = start().await;
    let status = segments_of(&mut client, "nobody", Some(T), true)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("customers/nobody"), "{status:?}");

    for customer in ["", "people/a-ayse", "customers/", "customers/a b"] {
        let status = client
            .list_customer_segments(pb::ListCustomerSegmentsRequest {
                customer: customer.into(),
                evaluation_time: None,
                explain: false,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{customer:?}");
        assert_eq!(violated_fields(&status), ["customer"], "{customer:?}");
    }
    // Every invalid field is named at once.
    let status = client
        .list_customer_segments(pb::ListCustomerSegmentsRequest {
            customer: "people/a-ayse".into(),
            evaluation_time: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            explain: true,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["customer", "evaluation_time"]);
    server.stop().await.unwrap();
}
