//! `segmentd import`: CSV and JSON Lines files into a running server.

use segmentd::client::import::{run, FileSummary, ImportOptions};
use segmentd::grpc::pb;

use crate::activity::activity;
use crate::support::TestServer;

const CUSTOMERS_CSV: &str = "\
customer_id,party,relationship,department,birth_date,gender,annual_income,country_code,city,language,consent_email,trait.tier
ayse,individual,external,,1991-04-23,female,54000,TR,Istanbul,tr,granted,gold
omar,,internal,Support,,male,,EG,Cairo,ar-EG,,
bad id,,,,,,,TR,,,,
late,,,,2999-01-01,,,TR,,,,
acme,business,,,,,,DE,Berlin,de,denied,
";

const ACTIVITY_JSONL: &str = r#"{"event_id": "o-1", "customer_id": "ayse", "occurred_at": "2026-03-02T10:00:00Z", "amount": 45.99, "category": "books"}
{"event_id": "o-2", "customer_id": "ayse", "occurred_at": "2026-04-11", "amount": "12.50", "quantity": 2}
{"event_id": "o-3", "customer_id": "nobody", "occurred_at": "2026-04-11", "amount": 1}

not json
{"event_id": "f-1", "customer_id": "omar", "kind": "feedback", "nps_score": 9, "occurred_at": "2026-04-12T09:00:00Z", "channel": "email"}
{"event_id": "o-4", "customer_id": "acme", "occurred_at": "2026-05-01", "amount": -3}
{"event_id": "o-5", "customer_id": "acme", "occurred_at": "2026-05-02", "amount": 300}
"#;

fn options(server: &TestServer, dir: &std::path::Path, strict: bool) -> ImportOptions {
    let customers = dir.join("customers.csv");
    let activity = dir.join("activity.jsonl");
    std::fs::write(&customers, CUSTOMERS_CSV).unwrap();
    std::fs::write(&activity, ACTIVITY_JSONL).unwrap();
    ImportOptions {
        addr: server.addr.to_string(),
        customers: Some(customers),
        activity: Some(activity),
        strict,
        batch_size: 1000,
        token: None,
    }
}

#[tokio::test]
async fn imports_good_rows_and_skips_bad_ones_by_line() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (customers, events) = run(&options(&server, dir.path(), false)).await.unwrap();
    // Lines 4 (bad id) and 5 (birth date in the future) are skipped.
    assert_eq!(
        customers,
        Some(FileSummary {
            read: 5,
            created: 3,
            repeated: 0,
            skipped: 2
        })
    );
    // Lines 3 (unknown customer), 5 (not JSON) and 7 (negative amount) are skipped.
    assert_eq!(
        events,
        Some(FileSummary {
            read: 7,
            created: 4,
            repeated: 0,
            skipped: 3
        })
    );

    let ayse = server
        .customers()
        .await
        .get_customer(pb::GetCustomerRequest {
            name: "customers/ayse".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ayse.annual_income.unwrap().minor_units, 5_400_000);
    assert_eq!(ayse.location.unwrap().city, "Istanbul");
    assert!(ayse.traits.contains_key("tier"));
    let purchases = activity(&server)
        .await
        .list_purchases(pb::ListPurchasesRequest {
            parent: "customers/ayse".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .purchases;
    let amounts: Vec<i64> = purchases
        .iter()
        .map(|p| p.amount.as_ref().unwrap().minor_units)
        .collect();
    assert_eq!(amounts, [1250, 4599]);

    // Importing again changes nothing: customers are replaced, events are duplicates.
    let (customers, events) = run(&options(&server, dir.path(), false)).await.unwrap();
    assert_eq!(customers.unwrap().repeated, 3);
    assert_eq!(events.unwrap().repeated, 4);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn strict_stops_at_the_first_bad_row() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let error = run(&options(&server, dir.path(), true)).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("customers.csv:4"), "{message}");
    server.stop().await.unwrap();
}
