//! ImportCustomers: client-streaming bulk upsert.

use segmentd::grpc::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::customers::{full_customer, nanos, violated_fields};
use crate::support::TestServer;

fn batch(ids: impl Iterator<Item = usize>) -> pb::ImportCustomersRequest {
    pb::ImportCustomersRequest {
        customers: ids
            .map(|n| pb::Customer {
                name: format!("customers/imp-{n:05}"),
                ..full_customer()
            })
            .collect(),
    }
}

async fn count_all(server: &TestServer) -> usize {
    server.all_customers().await.len()
}

#[tokio::test]
async fn imports_ten_thousand_customers_over_one_stream() {
    let server = TestServer::start().await;
    let mut client = server.customers().await;
    let messages: Vec<_> = (0..10).map(|b| batch(b * 1000..(b + 1) * 1000)).collect();
    let response = client
        .import_customers(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.created_count, 10_000);
    assert_eq!(response.updated_count, 0);
    assert_eq!(response.batch_count, 10);
    assert_eq!(count_all(&server).await, 10_000);

    // Importing again replaces: created stays, the language is the new one.
    let mut again = batch(9_990..10_010);
    for customer in &mut again.customers {
        customer.language = "tr".into();
    }
    let response = client
        .import_customers(tokio_stream::iter(vec![again]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((response.created_count, response.updated_count), (10, 10));
    let replaced = client
        .get_customer(pb::GetCustomerRequest {
            name: "customers/imp-09995".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replaced.language, "tr");
    assert!(nanos(&replaced.update_time) > nanos(&replaced.create_time));
    assert_eq!(count_all(&server).await, 10_010);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_invalid_batch_stops_the_stream_and_keeps_the_batches_before_it() {
    let server = TestServer::start().await;
    let mut client = server.customers().await;
    let mut bad = batch(200..300);
    bad.customers[5].location.as_mut().unwrap().country_code = "ZZ".into();
    bad.customers[7].name = "imp-without-collection".into();
    let messages = vec![batch(0..100), batch(100..200), bad, batch(300..400)];
    let status = client
        .import_customers(tokio_stream::iter(messages))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        ["customers[5].location.country_code", "customers[7].name"]
    );
    assert!(
        status.message().contains("message 2"),
        "{}",
        status.message()
    );
    // The two batches before it are stored; nothing of the bad one or after it.
    assert_eq!(count_all(&server).await, 200);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_rule_across_fields_names_the_customer_of_the_batch() {
    let server = TestServer::start().await;
    let mut client = server.customers().await;
    let mut bad = batch(0..10);
    // A department is for INTERNAL customers only.
    bad.customers[3].relationship = pb::Relationship::External as i32;
    let status = client
        .import_customers(tokio_stream::iter(vec![batch(10..20), bad]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["customers[3].department"]);
    assert!(
        status.message().contains("message 1"),
        "{}",
        status.message()
    );
    assert_eq!(count_all(&server).await, 10);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_over_the_limit_is_resource_exhausted() {
    let server = TestServer::start().await;
    let mut client = server.customers().await;
    let status = client
        .import_customers(tokio_stream::iter(vec![batch(0..1001)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.get_details_quota_failure().is_some());
    assert_eq!(count_all(&server).await, 0);

    // An empty stream imports nothing and succeeds.
    let response = client
        .import_customers(tokio_stream::iter(Vec::<pb::ImportCustomersRequest>::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((response.created_count, response.batch_count), (0, 0));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_import_cut_by_a_shutdown_is_safe_to_send_again() {
    use crate::activity::{activity, purchase};
    use tokio_stream::wrappers::ReceiverStream;

    let server = TestServer::start().await;
    crate::customers::create(&server, "r", full_customer())
        .await
        .unwrap();
    let events = |range: std::ops::Range<usize>| pb::ImportActivityRequest {
        purchases: range
            .map(|n| purchase(&format!("p-{n}"), "r", n as i64, 100))
            .collect(),
        engagements: Vec::new(),
    };
    async fn stored(server: &TestServer) -> usize {
        let request = pb::ListPurchasesRequest {
            parent: "customers/r".into(),
            page_size: 100,
            page_token: String::new(),
        };
        activity(server)
            .await
            .list_purchases(request)
            .await
            .unwrap()
            .into_inner()
            .purchases
            .len()
    }

    // A stream the client has not finished when the server shuts down.
    let (messages, stream) = tokio::sync::mpsc::channel(4);
    let mut client = activity(&server).await;
    let import =
        tokio::spawn(async move { client.import_activity(ReceiverStream::new(stream)).await });
    messages.send(events(0..5)).await.unwrap();
    let applied = async {
        while stored(&server).await < 5 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), applied)
        .await
        .unwrap();
    let temp = server.stop_keeping_data().await.unwrap();
    assert!(import.await.unwrap().is_err(), "the import was cut off");
    drop(messages);

    // Sent again whole: what was saved counts as duplicates, once.
    let restarted = TestServer::spawn(crate::support::config(temp.path())).await;
    restarted.wait_serving().await;
    let response = activity(&restarted)
        .await
        .import_activity(tokio_stream::iter([events(0..5), events(5..10)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((response.accepted_count, response.duplicate_count), (5, 5));
    assert_eq!(stored(&restarted).await, 10);
    restarted.stop().await.unwrap();
}

/// The next message is read while the one before is applied: a message
/// refused when applied (its customer is unknown) still stops the stream
/// there, and one read ahead of it, even one that is itself malformed, is
/// neither applied nor reported.
#[tokio::test]
async fn a_message_refused_when_applied_stops_the_stream_before_the_one_read_ahead() {
    use crate::activity::{activity, purchase};

    let server = TestServer::start().await;
    crate::customers::create(&server, "r", full_customer())
        .await
        .unwrap();
    let events = |customer: &str, range: std::ops::Range<usize>| pb::ImportActivityRequest {
        purchases: range
            .map(|n| purchase(&format!("p-{n}"), customer, n as i64, 100))
            .collect(),
        engagements: Vec::new(),
    };
    let mut malformed = events("r", 20..30);
    malformed.purchases[3]
        .amount
        .as_mut()
        .unwrap()
        .currency_code = "EUR".into();
    let messages = [
        events("r", 0..10),
        events("nobody", 10..20),
        malformed,
        events("r", 30..40),
    ];
    let status = activity(&server)
        .await
        .import_activity(tokio_stream::iter(messages))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(violated_fields(&status)[0], "purchases[0].customer");
    assert!(
        status.message().contains("message 1"),
        "{}",
        status.message()
    );
    let mut ids = crate::activity::purchase_ids(&server, "r", 100).await;
    ids.sort();
    let mut expected: Vec<String> = (0..10).map(|n| format!("p-{n}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
    server.stop().await.unwrap();
}

/// A refusal is answered while the client still holds the stream open
/// and sends nothing more: the message read ahead is not waited for.
#[tokio::test]
async fn a_refusal_is_answered_while_the_client_pauses() {
    use crate::activity::{activity, purchase};
    use tokio_stream::wrappers::ReceiverStream;

    let server = TestServer::start().await;
    crate::customers::create(&server, "r", full_customer())
        .await
        .unwrap();
    let (messages, stream) = tokio::sync::mpsc::channel(4);
    for (customer, id) in [("r", "p-0"), ("nobody", "p-1")] {
        messages
            .send(pb::ImportActivityRequest {
                purchases: vec![purchase(id, customer, 1, 100)],
                engagements: Vec::new(),
            })
            .await
            .unwrap();
    }
    let mut client = activity(&server).await;
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        client.import_activity(ReceiverStream::new(stream)),
    )
    .await
    .expect("the refusal came while the stream was still open");
    let status = answer.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("message 1"),
        "{}",
        status.message()
    );
    drop(messages);
    server.stop().await.unwrap();
}
