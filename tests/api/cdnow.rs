//! The CDNOW sample (tests/data/cdnow, see its README): 2,357 real customers
//! and 6,919 purchases, loaded through the API and checked customer by
//! customer against figures computed here from the raw file.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost_types::Timestamp;
use segmentd::grpc::pb;
use time::macros::format_description;

use crate::activity::activity;
use crate::support::TestServer;

const SAMPLE: &str = include_str!("../data/cdnow/CDNOW_sample.txt");
const SUMMARY: &str = include_str!("../data/cdnow/cdnow_customers_summary.csv");
pub(crate) const DAY: i64 = 86_400;
/// 1997-09-30T23:59:59Z, the end of the calibration period.
pub(crate) const CALIBRATION_END: i64 = 875_663_999;
/// 1998-06-30T23:59:59Z, the end of the data.
pub(crate) const DATA_END: i64 = 899_251_199;

pub(crate) struct Transaction {
    line: usize,
    pub(crate) master_id: String,
    pub(crate) sample_id: u32,
    pub(crate) day: i64,
    pub(crate) cents: i64,
}

pub(crate) fn transactions() -> Vec<Transaction> {
    let format = format_description!("[year][month][day]");
    SAMPLE
        .lines()
        .enumerate()
        .map(|(line, text)| {
            let fields: Vec<&str> = text.split_whitespace().collect();
            let date = time::Date::parse(fields[2], &format).unwrap();
            let seconds = date.midnight().assume_utc().unix_timestamp();
            let dollars: f64 = fields[4].parse().unwrap();
            Transaction {
                line: line + 1,
                master_id: fields[0].to_owned(),
                sample_id: fields[1].parse().unwrap(),
                day: seconds / DAY,
                cents: (dollars * 100.0).round() as i64,
            }
        })
        .collect()
}

/// The frequency class of purchase days (one per purchase) as of `t`,
/// computed independently of the server from the design's rules.
fn expected_class(days: &[i64], t: i64) -> pb::FrequencyClass {
    let times: Vec<i64> = days.iter().map(|d| d * DAY).filter(|&s| s <= t).collect();
    let count = times.len();
    if count == 0 {
        return pb::FrequencyClass::None;
    }
    if count == 1 {
        return pb::FrequencyClass::OneTimeBuyer;
    }
    let (first, last) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
    let gap = (last - first) as f64 / DAY as f64 / (count - 1) as f64;
    let recency = ((t - last) / DAY) as f64;
    let in_365 = times.iter().filter(|&&s| s > t - 365 * DAY).count();
    if recency > (3.0 * gap).max(180.0) {
        pb::FrequencyClass::Lapsed
    } else if in_365 >= 4 && recency <= 2.0 * gap {
        pb::FrequencyClass::FrequentCustomer
    } else {
        pb::FrequencyClass::RepeatCustomer
    }
}

/// Transactions by master id.
pub(crate) fn by_customer(transactions: &[Transaction]) -> BTreeMap<String, Vec<&Transaction>> {
    let mut by_customer: BTreeMap<String, Vec<&Transaction>> = BTreeMap::new();
    for transaction in transactions {
        by_customer
            .entry(transaction.master_id.clone())
            .or_default()
            .push(transaction);
    }
    by_customer
}

/// Loads the sample over the API: customers, then purchases, each over
/// one stream.
pub(crate) async fn load(
    server: &TestServer,
    transactions: &[Transaction],
    by_customer: &BTreeMap<String, Vec<&Transaction>>,
) {
    let names: Vec<String> = by_customer
        .keys()
        .map(|id| format!("customers/{id}"))
        .collect();
    let messages: Vec<_> = names
        .chunks(1000)
        .map(|chunk| pb::ImportCustomersRequest {
            customers: chunk
                .iter()
                .map(|name| pb::Customer {
                    name: name.clone(),
                    ..Default::default()
                })
                .collect(),
        })
        .collect();
    let imported = server
        .customers()
        .await
        .import_customers(tokio_stream::iter(messages))
        .await
        .unwrap();
    assert_eq!(imported.into_inner().created_count, 2_357);
    let purchases: Vec<pb::Purchase> = transactions
        .iter()
        .map(|t| pb::Purchase {
            purchase_id: format!("line-{}", t.line),
            customer: format!("customers/{}", t.master_id),
            occurred_at: Some(Timestamp {
                seconds: t.day * DAY,
                nanos: 0,
            }),
            amount: Some(pb::Money {
                currency_code: "USD".into(),
                minor_units: t.cents,
            }),
            ..Default::default()
        })
        .collect();
    let messages: Vec<_> = purchases
        .chunks(2000)
        .map(|chunk| pb::ImportActivityRequest {
            purchases: chunk.to_vec(),
            engagements: vec![],
        })
        .collect();
    let recorded = activity(server)
        .await
        .import_activity(tokio_stream::iter(messages))
        .await
        .unwrap();
    assert_eq!(recorded.into_inner().accepted_count, 6_919);
}

#[tokio::test]
async fn cdnow_sample_matches_independent_figures() {
    let server = TestServer::start().await;
    let transactions = transactions();
    assert_eq!(transactions.len(), 6_919);
    let by_customer = by_customer(&transactions);
    assert_eq!(by_customer.len(), 2_357);
    load(&server, &transactions, &by_customer).await;

    let summary: HashMap<u32, i64> = SUMMARY
        .lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields[0].parse().unwrap(), fields[1].parse().unwrap())
        })
        .collect();

    let mut customers = server.customers().await;
    let mut history = activity(&server).await;
    let mut expected_classes: BTreeMap<i32, usize> = BTreeMap::new();
    let mut served_classes: BTreeMap<i32, usize> = BTreeMap::new();
    for (id, own) in &by_customer {
        let name = format!("customers/{id}");
        let features = customers
            .get_customer_features(pb::GetCustomerFeaturesRequest {
                name: name.clone(),
                evaluation_time: Some(Timestamp {
                    seconds: DATA_END,
                    nanos: 0,
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let days: Vec<i64> = own.iter().map(|t| t.day).collect();
        assert_eq!(features.purchase_count, own.len() as i64, "{name}");
        assert_eq!(
            features.total_spend.unwrap().minor_units,
            own.iter().map(|t| t.cents).sum::<i64>(),
            "{name}"
        );
        let first = days.iter().min().unwrap() * DAY;
        let last = days.iter().max().unwrap() * DAY;
        assert_eq!(
            features.first_purchase_time.unwrap().seconds,
            first,
            "{name}"
        );
        assert_eq!(features.last_purchase_time.unwrap().seconds, last, "{name}");

        // Repeat purchase days by the end of the calibration period, from
        // the history the server returns, against the published summary.
        let listed = history
            .list_purchases(pb::ListPurchasesRequest {
                parent: name.clone(),
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.purchases.len(), own.len(), "{name}");
        let distinct_days: BTreeSet<i64> = listed
            .purchases
            .iter()
            .map(|p| p.occurred_at.unwrap().seconds)
            .filter(|&s| s <= CALIBRATION_END)
            .map(|s| s / DAY)
            .collect();
        assert_eq!(
            distinct_days.len() as i64 - 1,
            summary[&own[0].sample_id],
            "{name}"
        );

        let at_calibration_end = customers
            .get_customer_features(pb::GetCustomerFeaturesRequest {
                name: name.clone(),
                evaluation_time: Some(Timestamp {
                    seconds: CALIBRATION_END,
                    nanos: 0,
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let expected = expected_class(&days, CALIBRATION_END) as i32;
        assert_eq!(at_calibration_end.frequency_class, expected, "{name}");
        *expected_classes.entry(expected).or_default() += 1;
        *served_classes
            .entry(at_calibration_end.frequency_class)
            .or_default() += 1;
    }
    assert_eq!(served_classes, expected_classes);
    // Everyone bought in the first quarter of 1997, so nobody is NONE, and
    // every class of buyer occurs.
    assert!(!served_classes.contains_key(&(pb::FrequencyClass::None as i32)));
    assert_eq!(served_classes.len(), 4, "{served_classes:?}");
    server.stop().await.unwrap();
}

/// The RFM segment of R and F scores, from the design's table, row by row.
fn expected_segment(r: i32, f: i32) -> pb::RfmSegment {
    use pb::RfmSegment as S;
    let table = [
        (S::Champions, 5..=5, 4..=5),
        (S::Loyal, 3..=4, 4..=5),
        (S::PotentialLoyalist, 4..=5, 2..=3),
        (S::NewCustomers, 5..=5, 1..=1),
        (S::Promising, 4..=4, 1..=1),
        (S::NeedAttention, 3..=3, 3..=3),
        (S::AboutToSleep, 3..=3, 1..=2),
        (S::CantLoseThem, 1..=2, 5..=5),
        (S::AtRisk, 1..=2, 3..=4),
        (S::Hibernating, 1..=2, 2..=2),
        (S::Lost, 1..=2, 1..=1),
    ];
    table
        .into_iter()
        .find(|(_, rs, fs)| rs.contains(&r) && fs.contains(&f))
        .map(|(segment, ..)| segment)
        .unwrap()
}

#[tokio::test]
async fn cdnow_rfm_matches_independent_quintiles() {
    let server = TestServer::start().await;
    let transactions = transactions();
    let by_customer = by_customer(&transactions);
    load(&server, &transactions, &by_customer).await;

    for t in [DATA_END, CALIBRATION_END] {
        // Everyone bought in the first quarter of 1997: P is every customer.
        // At the end of the calibration period later purchases do not count,
        // and the server takes its figures from the purchase series.
        let own_by = |own: &[&Transaction], t: i64| -> Vec<(i64, i64)> {
            own.iter()
                .filter(|tx| tx.day * DAY <= t)
                .map(|tx| (tx.day * DAY, tx.cents))
                .collect()
        };
        let figures: BTreeMap<&String, (i64, usize, i64)> = by_customer
            .iter()
            .map(|(id, own)| {
                let counted = own_by(own, t);
                let last = counted.iter().map(|(time, _)| *time).max().unwrap();
                let recency = (t - last).div_euclid(DAY);
                (
                    id,
                    (
                        recency,
                        counted.len(),
                        counted.iter().map(|(_, cents)| cents).sum(),
                    ),
                )
            })
            .collect();
        let p = figures.len();
        let score = |worse: usize| (1 + 5 * worse / p) as i32;
        let mut expected_segments: BTreeMap<String, i64> = BTreeMap::new();
        let mut customers = server.customers().await;
        for (id, &(recency, count, spend)) in &figures {
            let r = score(figures.values().filter(|f| f.0 > recency).count());
            let f = score(figures.values().filter(|f| f.1 < count).count());
            let m = score(figures.values().filter(|f| f.2 < spend).count());
            let segment = expected_segment(r, f);
            *expected_segments
                .entry(
                    segment
                        .as_str_name()
                        .trim_start_matches("RFM_SEGMENT_")
                        .to_owned(),
                )
                .or_default() += 1;
            let features = customers
                .get_customer_features(pb::GetCustomerFeaturesRequest {
                    name: format!("customers/{id}"),
                    evaluation_time: Some(Timestamp {
                        seconds: t,
                        nanos: 0,
                    }),
                })
                .await
                .unwrap()
                .into_inner();
            let served = features.rfm.unwrap();
            assert_eq!((served.r, served.f, served.m), (r, f, m), "customers/{id}");
            assert_eq!(features.rfm_segment, segment as i32, "customers/{id}");
        }
        // Half the customers bought once: they all share F = 1.
        let breakdown = crate::segments::segmentation(&server)
            .await
            .breakdown_customers(pb::BreakdownCustomersRequest {
                dimensions: vec!["features.rfm_segment".into()],
                filter: String::new(),
                evaluation_time: Some(Timestamp {
                    seconds: t,
                    nanos: 0,
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let served: BTreeMap<String, i64> = breakdown
            .groups
            .into_iter()
            .map(|group| (group.values[0].clone(), group.customer_count))
            .collect();
        assert_eq!(served, expected_segments);
        assert!(served.len() >= 8, "{served:?}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn cdnow_personas_match_an_independent_computation() {
    let server = TestServer::start().await;
    let transactions = transactions();
    let by_customer = by_customer(&transactions);
    load(&server, &transactions, &by_customer).await;

    // Everyone is an external individual who bought and never engaged
    // otherwise, so the built-in catalog comes down to the frequency class
    // and, for the lapsed, the monetary score.
    let totals: Vec<i64> = by_customer
        .values()
        .map(|own| own.iter().map(|t| t.cents).sum())
        .collect();
    let p = totals.len();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let mut each: BTreeMap<&String, &str> = BTreeMap::new();
    for (id, own) in &by_customer {
        let days: Vec<i64> = own.iter().map(|t| t.day).collect();
        let spend: i64 = own.iter().map(|t| t.cents).sum();
        let m = 1 + 5 * totals.iter().filter(|&&other| other < spend).count() / p;
        let persona = match expected_class(&days, DATA_END) {
            pb::FrequencyClass::Lapsed if m >= 4 => "LAPSING_LOYAL",
            pb::FrequencyClass::FrequentCustomer => "VIP_FREQUENT",
            pb::FrequencyClass::RepeatCustomer | pb::FrequencyClass::Lapsed => "RETURNING_CUSTOMER",
            pb::FrequencyClass::OneTimeBuyer => "ONE_TIME_BUYER",
            _ => "PROSPECT",
        };
        *expected.entry(persona.to_owned()).or_default() += 1;
        each.insert(id, persona);
    }
    let mut client = crate::personas::personas(&server).await;
    let breakdown = client
        .breakdown_personas(pb::BreakdownPersonasRequest {
            filter: String::new(),
            evaluation_time: Some(Timestamp {
                seconds: DATA_END,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let served: BTreeMap<String, i64> = breakdown
        .groups
        .into_iter()
        .filter(|group| group.customer_count > 0)
        .map(|group| (group.persona_id, group.customer_count))
        .collect();
    assert_eq!(served, expected);
    assert_eq!(served.len(), 4, "{served:?}");
    for (id, persona) in each {
        let assignment = client
            .get_customer_persona(pb::GetCustomerPersonaRequest {
                name: format!("customers/{id}"),
                evaluation_time: Some(Timestamp {
                    seconds: DATA_END,
                    nanos: 0,
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(assignment.persona.unwrap().persona_id, persona, "{id}");
    }
    server.stop().await.unwrap();
}

/// 1997-01-01T00:00:00Z.
const YEAR_START: i64 = 852_076_800;

/// Persona counts as BreakdownPersonas gives them at `at` (nanoseconds).
async fn persona_counts(server: &TestServer, at: i128) -> BTreeMap<String, i64> {
    let response = segmentd::grpc::pb::persona_service_client::PersonaServiceClient::new(
        server.channel().await,
    )
    .breakdown_personas(pb::BreakdownPersonasRequest {
        filter: String::new(),
        evaluation_time: Some(Timestamp {
            seconds: (at / 1_000_000_000) as i64,
            nanos: (at % 1_000_000_000) as i32,
        }),
    })
    .await
    .unwrap()
    .into_inner();
    response
        .groups
        .into_iter()
        .filter(|group| group.customer_count > 0)
        .map(|group| (group.persona_id, group.customer_count))
        .collect()
}

#[tokio::test]
async fn cdnow_persona_moves_streamed_day_by_day_equal_the_breakdowns_between() {
    use pb::watch_persona_assignments_response::Event;
    use std::time::Duration;

    // A simulated clock, 30 days a second from two weeks before the data,
    // evaluated every 30 ms: about a day per evaluation.
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(dir.path());
    config.engine.watch.period = Duration::from_millis(30);
    config.engine.watch.clock = segmentd::engine::watch::Clock::Simulated {
        start: segmentd::domain::Timestamp::from_nanos((YEAR_START - 14 * DAY) * 1_000_000_000),
        rate: 30.0 * DAY as f64,
        since: std::time::Instant::now(),
    };
    let server = TestServer::spawn(config).await;
    server.wait_serving().await;
    let transactions = transactions();
    let by_customer = by_customer(&transactions);
    load(&server, &transactions, &by_customer).await;
    // Evaluations after the load: the moves from here on are the clock's.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut stream = crate::watch::membership(&server)
        .await
        .watch_persona_assignments(pb::WatchPersonaAssignmentsRequest {
            include_initial_assignments: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut assigned: BTreeMap<String, String> = BTreeMap::new();
    let mut counts = BTreeMap::new();
    let mut previous: Option<(i128, BTreeMap<String, i64>)> = None;
    let (mut evaluations, mut moves_seen) = (0, 0);
    let end = i128::from(DATA_END) * 1_000_000_000;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("a message within 20 s")
            .unwrap()
            .expect("the watch goes on");
        let time = message.evaluation_time.unwrap();
        let at = i128::from(time.seconds) * 1_000_000_000 + i128::from(time.nanos);
        let changed = match message.event.unwrap() {
            Event::Initial(batch) => {
                for assignment in batch.assignments {
                    assigned.insert(assignment.customer, assignment.persona_id);
                }
                batch.last
            }
            Event::Moves(moves) => {
                for step in moves.moves {
                    assert_eq!(
                        assigned.get(&step.customer).map_or("", String::as_str),
                        step.from_persona_id
                    );
                    assert_eq!(step.cause(), pb::ChangeCause::Clock, "{step:?}");
                    moves_seen += 1;
                    assigned.insert(step.customer, step.to_persona_id);
                }
                true
            }
            Event::Progress(_) => false,
        };
        if !changed {
            if at > end {
                break;
            }
            continue;
        }
        // The moves of this evaluation are the difference between the
        // breakdowns at the evaluation before and at this one.
        counts.clear();
        for persona in assigned.values().filter(|persona| !persona.is_empty()) {
            *counts.entry(persona.clone()).or_insert(0i64) += 1;
        }
        let expected = persona_counts(&server, at).await;
        assert_eq!(counts, expected, "at {at}");
        if let Some((before, counted)) = &previous {
            assert_eq!(
                counted,
                &persona_counts(&server, *before).await,
                "the breakdown at the evaluation before"
            );
        }
        previous = Some((at, counts.clone()));
        evaluations += 1;
    }
    assert!(evaluations > 100, "{evaluations} evaluations with moves");
    assert!(moves_seen > 2_357, "{moves_seen} moves");
}
