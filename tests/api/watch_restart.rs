//! Watches across restarts: a watcher that resumes with its last cursor
//! after the server stopped, or was killed with SIGKILL while it watched
//! and writers wrote, receives exactly the changes after that cursor, and
//! holds the members listed at the stream's evaluation time.

use std::net::TcpListener;
use std::time::Duration;

use segmentd::grpc::pb;
use segmentd::grpc::pb::activity_service_client::ActivityServiceClient;
use segmentd::grpc::pb::customer_service_client::CustomerServiceClient;
use segmentd::grpc::pb::membership_service_client::MembershipServiceClient;
use segmentd::grpc::pb::segmentation_service_client::SegmentationServiceClient;
use tonic::transport::Channel;

use crate::customers::create;
use crate::support::Process;
use crate::watch::{buy, listed, now_nanos, purchase_at, time_of, watch, watch_server, Watcher};

/// A purchase of a minute ago.
fn purchase(id: String, customer: &str, cents: i64) -> pb::Purchase {
    let seconds = (now_nanos() / 1_000_000_000) as i64 - 60;
    purchase_at(&id, customer, seconds, cents)
}

const RULE: &str = "features.purchase_count >= 2";

async fn create_segment(channel: Channel) {
    SegmentationServiceClient::new(channel)
        .create_segment(pb::CreateSegmentRequest {
            segment_id: "repeat".into(),
            segment: Some(pb::Segment {
                display_name: "Repeat buyers".into(),
                filter: RULE.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_watcher_resumes_after_a_restart_with_exactly_the_changes_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let server = watch_server(dir.path()).await;
    for n in 0..20 {
        create(&server, &format!("c{n:02}"), Default::default())
            .await
            .unwrap();
    }
    create_segment(server.channel().await).await;
    let mut watcher = Watcher::default();
    {
        let mut stream = watch(&server, "repeat", "", true).await.unwrap();
        buy(
            &server,
            (0..5)
                .map(|n| purchase(format!("a{n}"), "c01", 100))
                .collect(),
        )
        .await;
        watcher.catch_up(&mut stream, now_nanos()).await;
    }
    assert_eq!(watcher.members.len(), 1);
    // Changes while nobody watches, then a restart, then more changes.
    for n in 2..8 {
        let customer = format!("c{n:02}");
        buy(
            &server,
            (0..2)
                .map(|k| purchase(format!("b{n}-{k}"), &customer, 100))
                .collect(),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.stop().await.unwrap();
    let server = watch_server(dir.path()).await;
    server
        .customers()
        .await
        .delete_customer(pb::DeleteCustomerRequest {
            name: "customers/c03".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for n in 8..10 {
        let customer = format!("c{n:02}");
        buy(
            &server,
            (0..2)
                .map(|k| purchase(format!("c{n}-{k}"), &customer, 100))
                .collect(),
        )
        .await;
    }
    // Another watcher, started now, sees an evaluation after the erasure.
    let mut now_stream = watch(&server, "repeat", "", false).await.unwrap();
    Watcher::default()
        .catch_up(&mut now_stream, now_nanos())
        .await;
    let mut stream = watch(&server, "repeat", &watcher.cursor, false)
        .await
        .unwrap();
    watcher.catch_up(&mut stream, now_nanos()).await;
    assert_eq!(watcher.members, listed(&server, "repeat", watcher.at).await);
    assert_eq!(watcher.members.len(), 8, "{:?}", watcher.members);
    // Each customer entered once; c03, erased since, is named only by the
    // notice of the erasure.
    let entries = watcher
        .changes
        .iter()
        .filter(|(_, entered, _)| *entered)
        .count();
    assert_eq!(entries, 8, "{:?}", watcher.changes);
    let c03: Vec<_> = watcher
        .changes
        .iter()
        .filter(|(customer, _, _)| customer == "customers/c03")
        .collect();
    assert_eq!(
        c03,
        [&("customers/c03".to_owned(), false, pb::ChangeCause::Erasure)]
    );
}

async fn watch_at(
    channel: Channel,
    cursor: &str,
) -> Result<tonic::Streaming<pb::WatchSegmentMembershipResponse>, tonic::Status> {
    MembershipServiceClient::new(channel)
        .watch_segment_membership(pb::WatchSegmentMembershipRequest {
            segment: "segments/repeat".into(),
            cursor: cursor.into(),
            include_initial_members: cursor.is_empty(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Members listed through `channel` at `at`.
async fn listed_at(channel: Channel, at: i128) -> std::collections::BTreeSet<String> {
    let mut client = SegmentationServiceClient::new(channel);
    let page = client
        .list_segment_members(pb::ListSegmentMembersRequest {
            segment: "segments/repeat".into(),
            evaluation_time: Some(time_of(at)),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(page.next_page_token.is_empty());
    page.customers.into_iter().collect()
}

#[tokio::test]
async fn a_watcher_resumes_exactly_after_the_server_is_killed_while_it_watches() {
    let dir = tempfile::tempdir().unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut process = Process::start(dir.path(), addr, &["--watch-period", "100ms"]);
    process.wait_ready().await;
    let customers = CustomerServiceClient::new(process.channel());
    for n in 0..60 {
        let mut customers = customers.clone();
        customers
            .create_customer(pb::CreateCustomerRequest {
                customer_id: format!("k{n:02}"),
                customer: Some(Default::default()),
                request_id: String::new(),
            })
            .await
            .unwrap();
    }
    create_segment(process.channel()).await;
    let mut watcher = Watcher::default();
    let mut stream = watch_at(process.channel(), "").await.unwrap();
    watcher.catch_up(&mut stream, 0).await;

    // A writer that goes on through the kill; its refused writes are not
    // acknowledged, and whatever it got acknowledged counts.
    let writer = {
        let activity = ActivityServiceClient::new(process.channel());
        tokio::spawn(async move {
            for n in 0..400u32 {
                let mut activity = activity.clone();
                let customer = format!("k{:02}", n % 60);
                let request = pb::RecordActivityRequest {
                    purchases: vec![purchase(format!("w{n}"), &customer, 100)],
                    engagements: vec![],
                };
                let _ = activity.record_activity(request).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Read for a while, then kill the server mid-stream.
    let kill_at = std::time::Instant::now() + Duration::from_millis(700);
    while std::time::Instant::now() < kill_at {
        match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
            Ok(Ok(Some(message))) => watcher.apply(message),
            Ok(other) => panic!("the watch ended before the kill: {other:?}"),
            Err(_) => {}
        }
    }
    process.kill();
    // The stream breaks; the watcher keeps the cursor of the last message
    // it applied.
    while let Ok(Some(message)) = stream.message().await {
        watcher.apply(message);
    }
    let mut process = Process::start(dir.path(), addr, &["--watch-period", "100ms"]);
    process.wait_ready().await;
    let mut stream = watch_at(process.channel(), &watcher.cursor).await.unwrap();
    writer.await.unwrap();
    watcher.catch_up(&mut stream, now_nanos()).await;
    assert_eq!(
        watcher.members,
        listed_at(process.channel(), watcher.at).await
    );
    assert!(!watcher.members.is_empty());
    // Once more, with the writes over: a kill between evaluations.
    process.kill();
    let process = Process::start(dir.path(), addr, &["--watch-period", "100ms"]);
    process.wait_ready().await;
    let mut stream = watch_at(process.channel(), &watcher.cursor).await.unwrap();
    watcher.catch_up(&mut stream, now_nanos()).await;
    assert_eq!(
        watcher.members,
        listed_at(process.channel(), watcher.at).await
    );
}
