//! An upgrade keeps every customer and event: a backup taken by a build
//! that wrote store format 1 (`tests/data/format1/`, made from the CSV
//! files beside it) restores, is migrated to format 2 on the first start,
//! and then answers as the CSV files say, takes new writes, finds repeats
//! of stored ids, erases, and restarts.

use std::collections::BTreeMap;
use std::path::Path;

use segmentd::grpc::pb;
use segmentd::store::backup::restore;

use crate::activity::{activity, purchase, record};
use crate::backup::purchase_counts;
use crate::customers::{create, full_customer};
use crate::support::{config, TestServer};

/// The customer deleted before the backup was taken.
const DELETED: &str = "v1-011";

/// What one stored event is, as the API shows it.
type Event = (String, i64, i64, String);

/// What the CSV files hold for each customer: purchases as (id, seconds,
/// minor units, category) and engagement events as (id, seconds, type,
/// channel), each sorted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Expected {
    purchases: Vec<Event>,
    engagements: Vec<Event>,
}

impl Expected {
    fn sorted(mut self) -> Self {
        self.purchases.sort();
        self.engagements.sort();
        self
    }
}

fn data(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/format1")
        .join(file)
}

fn seconds(text: &str) -> i64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

/// Every customer of the CSV files but the deleted one, with their events.
fn expected() -> BTreeMap<String, Expected> {
    let mut customers: BTreeMap<String, Expected> = BTreeMap::new();
    let mut reader = csv::Reader::from_path(data("customers.csv")).unwrap();
    for row in reader.records() {
        customers.insert(row.unwrap()[0].to_owned(), Expected::default());
    }
    let mut reader = csv::Reader::from_path(data("activity.csv")).unwrap();
    for row in reader.records() {
        let row = row.unwrap();
        let Some(customer) = customers.get_mut(&row[1]) else {
            continue;
        };
        let at = seconds(&row[3]);
        if &row[2] == "purchase" {
            let cents = (row[4].parse::<f64>().unwrap() * 100.0).round() as i64;
            customer
                .purchases
                .push((row[0].to_owned(), at, cents, row[6].to_owned()));
        } else {
            let kind = match &row[2] {
                "visit" => pb::EngagementType::Visit,
                "feedback" => pb::EngagementType::Feedback,
                _ => pb::EngagementType::Referral,
            };
            customer
                .engagements
                .push((row[0].to_owned(), at, kind as i64, row[9].to_owned()));
        }
    }
    customers.remove(DELETED);
    customers
        .into_iter()
        .map(|(id, events)| (id, events.sorted()))
        .collect()
}

/// A customer's events as the server lists them, every page.
async fn listed(server: &TestServer, customer: &str) -> Expected {
    let mut client = activity(server).await;
    let mut found = Expected::default();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_purchases(pb::ListPurchasesRequest {
                parent: format!("customers/{customer}"),
                page_size: 2,
                page_token: page_token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        for p in page.purchases {
            found.purchases.push((
                p.purchase_id,
                p.occurred_at.unwrap().seconds,
                p.amount.unwrap().minor_units,
                p.category,
            ));
        }
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    let page = client
        .list_engagements(pb::ListEngagementsRequest {
            parent: format!("customers/{customer}"),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    for e in page.engagements {
        found.engagements.push((
            e.event_id,
            e.occurred_at.unwrap().seconds,
            i64::from(e.r#type),
            e.channel,
        ));
    }
    found.sorted()
}

/// Fails unless the server holds exactly `expected`: the customers, each
/// one's events, and their purchase counts.
async fn assert_holds(server: &TestServer, expected: &BTreeMap<String, Expected>) {
    let ids: Vec<String> = server
        .all_customers()
        .await
        .into_iter()
        .map(|c| c.name.trim_start_matches("customers/").to_owned())
        .collect();
    assert_eq!(ids, expected.keys().cloned().collect::<Vec<_>>());
    let counts = purchase_counts(server, expected.keys()).await;
    for (id, events) in expected {
        assert_eq!(&listed(server, id).await, events, "the events of {id}");
        assert_eq!(
            counts[id] as usize,
            events.purchases.len(),
            "the purchase count of {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_store_format_1_restores_migrates_and_serves_as_before() {
    let mut expected = expected();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("db");
    restore(&data("store.backup"), &dir, false).unwrap();
    let server = TestServer::spawn(config(&dir)).await;
    server.wait_serving().await;
    assert_holds(&server, &expected).await;

    // A profile reads as it was imported.
    let customer = server
        .customers()
        .await
        .get_customer(pb::GetCustomerRequest {
            name: "customers/v1-003".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let location = customer.location.unwrap();
    assert_eq!(
        (location.country_code.as_str(), location.city.as_str()),
        ("IR", "Tehran")
    );

    // A stored purchase sent again is a repeat; a new one is taken, for
    // an old customer and for a new one, who gets a new number.
    let (id, at, cents, _) = expected["v1-005"].purchases.first().unwrap().clone();
    let mut again = purchase(&id, "v1-005", 0, cents);
    again.occurred_at = Some(prost_types::Timestamp {
        seconds: at,
        nanos: 0,
    });
    let counts = record(&server, vec![again], vec![]).await.unwrap();
    assert_eq!((counts.accepted_count, counts.duplicate_count), (0, 1));
    create(&server, "v2-new", full_customer()).await.unwrap();
    let added = [
        purchase("p-new-1", "v1-005", 3, 700),
        purchase("p-new-2", "v2-new", 4, 800),
    ];
    let counts = record(&server, added.to_vec(), vec![]).await.unwrap();
    assert_eq!(counts.accepted_count, 2);
    for p in added {
        let customer = p.customer.trim_start_matches("customers/").to_owned();
        let events = expected.entry(customer).or_default();
        events.purchases.push((
            p.purchase_id,
            p.occurred_at.unwrap().seconds,
            p.amount.unwrap().minor_units,
            p.category,
        ));
        events.purchases.sort();
    }

    // An old customer is erased with their events; the others', stored
    // in the same batches, stay.
    server
        .customers()
        .await
        .delete_customer(pb::DeleteCustomerRequest {
            name: "customers/v1-004".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    expected.remove("v1-004");
    assert_holds(&server, &expected).await;

    // And all of it again after a restart.
    let temp_of_server = server.stop_keeping_data().await;
    let server = TestServer::spawn(config(&dir)).await;
    server.wait_serving().await;
    assert_holds(&server, &expected).await;
    server.stop().await.unwrap();
    drop(temp_of_server);
}
