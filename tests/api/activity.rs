//! ActivityService and GetCustomerFeatures on hand-built customers.

use std::collections::BTreeMap;

use prost_types::Timestamp;
use segmentd::grpc::pb;
use segmentd::grpc::pb::activity_service_client::ActivityServiceClient;
use tonic::transport::Channel;
use tonic::Code;

use crate::customers::{create, violated_fields};
use crate::support::{config, TestServer};

pub const DAY: i64 = 86_400;
/// 2024-01-01T00:00:00Z.
pub const BASE: i64 = 1_704_067_200;

pub fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

pub fn purchase(id: &str, customer: &str, day: i64, cents: i64) -> pb::Purchase {
    pb::Purchase {
        purchase_id: id.into(),
        customer: format!("customers/{customer}"),
        occurred_at: at(BASE + day * DAY),
        amount: Some(pb::Money {
            currency_code: "USD".into(),
            minor_units: cents,
        }),
        quantity: 1,
        category: "music".into(),
        durability: pb::ProductDurability::Consumable as i32,
    }
}

pub fn engagement(
    id: &str,
    customer: &str,
    day: i64,
    kind: pb::EngagementType,
) -> pb::EngagementEvent {
    pb::EngagementEvent {
        event_id: id.into(),
        customer: format!("customers/{customer}"),
        occurred_at: at(BASE + day * DAY),
        r#type: kind as i32,
        nps_score: (kind == pb::EngagementType::Feedback).then_some(9),
        channel: "web".into(),
    }
}

pub async fn activity(server: &TestServer) -> ActivityServiceClient<Channel> {
    ActivityServiceClient::new(server.channel().await)
}

pub async fn record(
    server: &TestServer,
    purchases: Vec<pb::Purchase>,
    engagements: Vec<pb::EngagementEvent>,
) -> Result<pb::RecordActivityResponse, tonic::Status> {
    let request = pb::RecordActivityRequest {
        purchases,
        engagements,
    };
    activity(server)
        .await
        .record_activity(request)
        .await
        .map(|r| r.into_inner())
}

pub async fn features(
    server: &TestServer,
    customer: &str,
    seconds: Option<i64>,
) -> pb::CustomerFeatures {
    let request = pb::GetCustomerFeaturesRequest {
        name: format!("customers/{customer}"),
        evaluation_time: seconds.and_then(at),
    };
    server
        .customers()
        .await
        .get_customer_features(request)
        .await
        .unwrap()
        .into_inner()
}

async fn delete(server: &TestServer, customer: &str) {
    let request = pb::DeleteCustomerRequest {
        name: format!("customers/{customer}"),
        etag: String::new(),
    };
    server
        .customers()
        .await
        .delete_customer(request)
        .await
        .unwrap();
}

pub async fn purchase_ids(server: &TestServer, customer: &str, page_size: i32) -> Vec<String> {
    let mut client = activity(server).await;
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListPurchasesRequest {
            parent: format!("customers/{customer}"),
            page_size,
            page_token,
        };
        let page = client.list_purchases(request).await.unwrap().into_inner();
        ids.extend(page.purchases.into_iter().map(|p| p.purchase_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn recording_is_idempotent_and_lists_newest_first() {
    let server = TestServer::start().await;
    create(&server, "ali", pb::Customer::default())
        .await
        .unwrap();
    // Out of order, with a duplicate inside the batch.
    let batch = vec![
        purchase("p2", "ali", 20, 500),
        purchase("p1", "ali", 10, 1000),
        purchase("p3", "ali", 30, 250),
        purchase("p1", "ali", 10, 1000),
    ];
    let visits = vec![engagement("v1", "ali", 1, pb::EngagementType::Visit)];
    let response = record(&server, batch.clone(), visits.clone())
        .await
        .unwrap();
    assert_eq!((response.accepted_count, response.duplicate_count), (4, 1));

    let again = record(&server, batch, visits).await.unwrap();
    assert_eq!(
        (again.accepted_count, again.duplicate_count),
        (0, 5),
        "a resent batch changes nothing"
    );

    // A late event lands in its place.
    record(&server, vec![purchase("p0", "ali", 5, 100)], vec![])
        .await
        .unwrap();
    assert_eq!(
        purchase_ids(&server, "ali", 2).await,
        ["p3", "p2", "p1", "p0"]
    );
    assert_eq!(
        purchase_ids(&server, "ali", 0).await,
        ["p3", "p2", "p1", "p0"]
    );

    let listed = activity(&server)
        .await
        .list_engagements(pb::ListEngagementsRequest {
            parent: "customers/ali".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.engagements.len(), 1);
    assert_eq!(
        listed.engagements[0].r#type,
        pb::EngagementType::Visit as i32
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_batch_is_refused_whole_with_the_event_index_in_each_violation() {
    let server = TestServer::start().await;
    create(&server, "ali", pb::Customer::default())
        .await
        .unwrap();
    let mut euro = purchase("p2", "ali", 2, 100);
    euro.amount.as_mut().unwrap().currency_code = "EUR".into();
    let mut far_future = purchase("p4", "ali", 0, 100);
    far_future.occurred_at = at(4_000_000_000);
    let mut bad_score = engagement("f1", "ali", 3, pb::EngagementType::Feedback);
    bad_score.nps_score = Some(11);
    let status = record(
        &server,
        vec![
            purchase("p1", "ali", 1, 100),
            euro,
            purchase("p3", "ali", 3, -5),
            far_future,
            purchase("p5", "nobody", 1, 100),
        ],
        vec![bad_score],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        [
            "engagements[0].nps_score",
            "purchases[1].amount",
            "purchases[2].amount",
            "purchases[3].occurred_at",
        ]
    );
    // The unknown customer is reported once the events themselves are valid.
    let status = record(&server, vec![purchase("p5", "nobody", 1, 100)], vec![])
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["purchases[0].customer"]);
    assert!(
        purchase_ids(&server, "ali", 10).await.is_empty(),
        "nothing of a refused batch is stored"
    );

    let status = activity(&server)
        .await
        .list_purchases(pb::ListPurchasesRequest {
            parent: "customers/nobody".into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn features_follow_the_evaluation_time() {
    let server = TestServer::start().await;
    let customer = pb::Customer {
        birth_date: Some(pb::google::r#type::Date {
            year: 1990,
            month: 6,
            day: 15,
        }),
        annual_income: Some(pb::Money {
            currency_code: "USD".into(),
            minor_units: 8_000_000,
        }),
        ..Default::default()
    };
    create(&server, "zeynep", customer).await.unwrap();
    create(&server, "quiet", pb::Customer::default())
        .await
        .unwrap();
    record(
        &server,
        vec![
            purchase("a", "zeynep", 0, 1000),
            purchase("b", "zeynep", 10, 2000),
            purchase("c", "zeynep", 20, 3001),
            purchase("d", "zeynep", 30, 4000),
        ],
        vec![
            engagement("v", "zeynep", -5, pb::EngagementType::Visit),
            engagement("f", "zeynep", 100, pb::EngagementType::Feedback),
        ],
    )
    .await
    .unwrap();

    // Day 35: four purchases, gap 10 days, recency 5: frequent, rebuying.
    let f = features(&server, "zeynep", Some(BASE + 35 * DAY)).await;
    assert_eq!(f.age, Some(33));
    assert_eq!(f.age_band, pb::AgeBand::AgeBand2534 as i32);
    assert_eq!(f.income_band, pb::IncomeBand::High as i32);
    assert_eq!(f.purchase_count, 4);
    assert_eq!(f.total_spend.unwrap().minor_units, 10_001);
    assert_eq!(f.average_order_value.unwrap().minor_units, 2500);
    assert_eq!(f.mean_gap_days, Some(10.0));
    assert_eq!(f.recency_days, Some(5));
    assert_eq!((f.purchases_90d, f.purchases_365d), (4, 4));
    assert_eq!(
        f.frequency_class,
        pb::FrequencyClass::FrequentCustomer as i32
    );
    assert_eq!(f.engagement_stage, pb::EngagementStage::Rebuying as i32);
    assert_eq!(f.stage_since, at(BASE + 10 * DAY));
    assert_eq!(
        f.thresholds.unwrap().income_band_limits,
        [30_000, 75_000, 150_000]
    );

    // Day 15: only the first two count.
    let f = features(&server, "zeynep", Some(BASE + 15 * DAY)).await;
    assert_eq!(f.purchase_count, 2);
    assert_eq!(f.frequency_class, pb::FrequencyClass::RepeatCustomer as i32);
    assert_eq!(f.last_purchase_time, at(BASE + 10 * DAY));

    // Day -1: no purchase yet, but a visit.
    let f = features(&server, "zeynep", Some(BASE - DAY)).await;
    assert_eq!(f.frequency_class, pb::FrequencyClass::None as i32);
    assert_eq!(f.engagement_stage, pb::EngagementStage::JustLooking as i32);
    assert!(f.average_order_value.is_none() && f.recency_days.is_none());

    // Day 300: feedback given, and lapsed (recency 270 > max(30, 180)).
    let f = features(&server, "zeynep", Some(BASE + 300 * DAY)).await;
    assert_eq!(f.frequency_class, pb::FrequencyClass::Lapsed as i32);
    assert_eq!(
        f.engagement_stage,
        pb::EngagementStage::GivingFeedback as i32
    );
    assert_eq!(f.purchases_90d, 0);

    let f = features(&server, "quiet", None).await;
    assert_eq!(f.engagement_stage, pb::EngagementStage::TotalMarket as i32);
    assert_eq!(f.age_band, pb::AgeBand::Unknown as i32);
    assert_eq!(f.income_band, pb::IncomeBand::Unknown as i32);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn deleting_a_customer_erases_their_activity_and_survives_a_restart() {
    let server = TestServer::start().await;
    create(&server, "stays", pb::Customer::default())
        .await
        .unwrap();
    create(&server, "leaves", pb::Customer::default())
        .await
        .unwrap();
    record(
        &server,
        vec![
            purchase("s1", "stays", 1, 100),
            purchase("l1", "leaves", 1, 100),
            purchase("s2", "stays", 2, 100),
        ],
        vec![engagement("r1", "leaves", 3, pb::EngagementType::Referral)],
    )
    .await
    .unwrap();
    record(&server, vec![purchase("l2", "leaves", 4, 100)], vec![])
        .await
        .unwrap();
    delete(&server, "leaves").await;
    assert_eq!(purchase_ids(&server, "stays", 10).await, ["s2", "s1"]);

    // A new customer of the same id starts with no history.
    create(&server, "leaves", pb::Customer::default())
        .await
        .unwrap();
    assert!(purchase_ids(&server, "leaves", 10).await.is_empty());
    record(&server, vec![purchase("l1", "leaves", 9, 700)], vec![])
        .await
        .unwrap();

    let data_dir = server.data_dir.clone();
    let _keep = server.stop_keeping_data().await;
    let restarted = TestServer::spawn(config(&data_dir)).await;
    restarted.wait_serving().await;
    assert_eq!(purchase_ids(&restarted, "stays", 10).await, ["s2", "s1"]);
    assert_eq!(purchase_ids(&restarted, "leaves", 10).await, ["l1"]);
    let f = features(&restarted, "leaves", None).await;
    assert_eq!(
        f.engagement_stage,
        pb::EngagementStage::JustBuying as i32,
        "the referral was erased"
    );
    assert_eq!(f.total_spend.unwrap().minor_units, 700);
    restarted.stop().await.unwrap();
}

/// A customer, their R, F and M scores if they have bought, and their RFM
/// segment.
type Rfm = (String, Option<(i32, i32, i32)>, i32);

/// Every customer's RFM scores and segment as of `seconds`.
async fn rfm_of_everyone(server: &TestServer, customers: &[String], seconds: i64) -> Vec<Rfm> {
    let mut all = Vec::new();
    for customer in customers {
        let f = features(server, customer, Some(seconds)).await;
        let scores = f.rfm.map(|s| (s.r, s.f, s.m));
        all.push((customer.clone(), scores, f.rfm_segment));
    }
    all
}

/// RFM scores computed here from the purchases sent: each score is
/// 1 + floor(5 × S / P), S being the purchasers strictly worse (a longer
/// recency in whole days, fewer purchases, less spend) and P all of them.
fn expected_scores(
    figures: &BTreeMap<String, (i64, i64, i64)>,
    evaluation: i64,
) -> BTreeMap<String, (i32, i32, i32)> {
    let p = figures.len() as i64;
    let score = |worse: usize| 1 + (5 * worse as i64 / p) as i32;
    let recency = |last: i64| (evaluation - last).div_euclid(DAY);
    figures
        .iter()
        .map(|(customer, &(last, count, total))| {
            let others = figures.values();
            let r = others
                .clone()
                .filter(|o| recency(o.0) > recency(last))
                .count();
            let f = others.clone().filter(|o| o.1 < count).count();
            let m = others.filter(|o| o.2 < total).count();
            (customer.clone(), (score(r), score(f), score(m)))
        })
        .collect()
}

#[tokio::test]
async fn rfm_scores_follow_each_purchase_and_each_departure() {
    let server = TestServer::start().await;
    let customers: Vec<String> = (0..40).map(|n| format!("c{n:02}")).collect();
    for customer in &customers {
        create(&server, customer, pb::Customer::default())
            .await
            .unwrap();
    }
    let evaluation = BASE + 400 * DAY;
    let live_scores = |all: Vec<Rfm>| {
        all.into_iter()
            .filter_map(|(customer, scores, _)| Some((customer, scores?)))
            .collect::<BTreeMap<_, _>>()
    };
    // Purchases arrive in small batches, late ones among them, and every
    // customer's scores are checked after each batch against scores
    // computed here; then some purchasers leave.
    let mut state = 5u64;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    let mut figures: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    let mut staying = customers.clone();
    for batch in 0..25 {
        let mut purchases = Vec::new();
        for i in 0..6 {
            let customer = staying[next(staying.len() as u64) as usize].clone();
            let day = (batch * 12 + next(60) as i64).min(390);
            let cents = 100 + next(50_000) as i64;
            purchases.push(purchase(&format!("p{batch}-{i}"), &customer, day, cents));
            let entry = figures.entry(customer).or_insert((i64::MIN, 0, 0));
            *entry = (entry.0.max(BASE + day * DAY), entry.1 + 1, entry.2 + cents);
        }
        record(&server, purchases, vec![]).await.unwrap();
        let live = live_scores(rfm_of_everyone(&server, &staying, evaluation).await);
        assert_eq!(
            live,
            expected_scores(&figures, evaluation),
            "after batch {batch}"
        );
    }
    for customer in staying.drain(7..12).collect::<Vec<_>>() {
        delete(&server, &customer).await;
        figures.remove(&customer);
    }
    let live = rfm_of_everyone(&server, &staying, evaluation).await;
    assert_eq!(
        live_scores(live.clone()),
        expected_scores(&figures, evaluation),
        "after the departures"
    );

    // A restart finds the same scores and segments from the store.
    let data_dir = server.data_dir.clone();
    let _keep = server.stop_keeping_data().await;
    let restarted = TestServer::spawn(config(&data_dir)).await;
    restarted.wait_serving().await;
    assert_eq!(
        rfm_of_everyone(&restarted, &staying, evaluation).await,
        live
    );
    restarted.stop().await.unwrap();
}

#[tokio::test]
async fn a_page_token_holds_only_for_its_customer_and_method() {
    let server = TestServer::start().await;
    for id in ["ann", "bob"] {
        create(&server, id, pb::Customer::default()).await.unwrap();
    }
    let purchases = (0..3)
        .map(|n| purchase(&format!("p{n}"), "ann", n, 100))
        .chain((0..3).map(|n| purchase(&format!("q{n}"), "bob", n, 100)))
        .collect();
    let engagements = (0..3)
        .map(|n| engagement(&format!("e{n}"), "ann", n, pb::EngagementType::Visit))
        .collect();
    record(&server, purchases, engagements).await.unwrap();
    assert_eq!(purchase_ids(&server, "ann", 1).await, ["p2", "p1", "p0"]);

    let mut client = activity(&server).await;
    let purchases = |parent: &str, page_token: String| pb::ListPurchasesRequest {
        parent: format!("customers/{parent}"),
        page_size: 1,
        page_token,
    };
    let first = client
        .list_purchases(purchases("ann", String::new()))
        .await
        .unwrap()
        .into_inner();
    let status = client
        .list_purchases(purchases("bob", first.next_page_token.clone()))
        .await
        .unwrap_err();
    crate::customers::assert_token_of_another_request(&status);
    let status = client
        .list_engagements(pb::ListEngagementsRequest {
            parent: "customers/ann".into(),
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .unwrap_err();
    crate::customers::assert_token_of_another_request(&status);
    server.stop().await.unwrap();
}
