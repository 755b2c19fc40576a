//! Flow control and retention of watches: a watcher that stops reading is
//! ended with SLOW_READER while writers and other watchers go on, and
//! resumes from the cursor the status names; a cursor older than the
//! history kept is refused with CURSOR_EXPIRED.

use std::time::Duration;

use segmentd::grpc::pb;
use segmentd::grpc::pb::membership_service_client::MembershipServiceClient;
use tonic::transport::Endpoint;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::segments::segmentation;
use crate::support::{config, TestServer};
use crate::watch::{buy, listed, now_nanos, purchase_at, watch, Watcher};

async fn import(server: &TestServer, count: usize) {
    let names: Vec<String> = (0..count).map(|n| format!("customers/m{n:05}")).collect();
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
    server
        .customers()
        .await
        .import_customers(tokio_stream::iter(messages))
        .await
        .unwrap();
}

async fn set_rule(server: &TestServer, create: bool, filter: &str) {
    let segment = pb::Segment {
        name: "segments/s".into(),
        display_name: "s".into(),
        filter: filter.into(),
        ..Default::default()
    };
    let mut client = segmentation(server).await;
    if create {
        client
            .create_segment(pb::CreateSegmentRequest {
                segment_id: "s".into(),
                segment: Some(segment),
            })
            .await
            .unwrap();
    } else {
        client
            .update_segment(pb::UpdateSegmentRequest {
                segment: Some(segment),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["filter".into()],
                }),
            })
            .await
            .unwrap();
    }
}

/// A purchase of ten seconds ago.
fn purchase(id: String, customer: &str) -> pb::Purchase {
    let seconds = (now_nanos() / 1_000_000_000) as i64 - 10;
    purchase_at(&id, customer, seconds, 100)
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_ended_and_resumes_while_nobody_waited_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.engine.watch.period = Duration::from_millis(100);
    config.engine.watch.slow_reader_timeout = Duration::from_secs(1);
    let server = TestServer::spawn(config).await;
    server.wait_serving().await;
    import(&server, 40_000).await;
    set_rule(&server, true, "customer.language == \"tr\"").await;

    // A watcher on a connection with small flow-control windows, which
    // reads one message and then nothing.
    let channel = Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(16 * 1024)
        .connect()
        .await
        .unwrap();
    let mut slow_stream = MembershipServiceClient::new(channel)
        .watch_segment_membership(pb::WatchSegmentMembershipRequest {
            segment: "segments/s".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut slow = Watcher::default();
    slow.apply(slow_stream.message().await.unwrap().unwrap());
    let mut fast_stream = watch(&server, "s", &slow.cursor, false).await.unwrap();
    let mut fast = Watcher::default();

    // Everyone enters at once: far more than the slow watcher's windows
    // and buffers hold.
    set_rule(&server, false, "true").await;
    fast.catch_up(&mut fast_stream, now_nanos()).await;
    assert_eq!(fast.members.len(), 40_000);
    // Writes and the other watcher go on while the slow one reads
    // nothing.
    for n in 0..20 {
        buy(&server, vec![purchase(format!("p{n}"), "m00001")]).await;
    }
    set_rule(&server, false, "features.purchase_count == 0").await;
    fast.catch_up(&mut fast_stream, now_nanos()).await;
    assert_eq!(fast.members.len(), 39_999);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The slow watcher gets what was sent before it was ended, then the
    // status, with the cursor to resume from.
    let status = loop {
        match slow_stream.message().await {
            Ok(Some(message)) => slow.apply(message),
            Ok(None) => panic!("the slow watcher's stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.reason, "SLOW_READER");
    assert_eq!(info.metadata["cursor"], slow.cursor);
    assert!(slow.members.len() < 40_000, "{}", slow.members.len());
    let mut resumed = watch(&server, "s", &slow.cursor, false).await.unwrap();
    slow.catch_up(&mut resumed, now_nanos()).await;
    assert_eq!(slow.members.len(), 39_999);
    assert_eq!(slow.members, listed(&server, "s", slow.at).await);
}

#[tokio::test]
async fn a_cursor_older_than_the_history_kept_is_refused_as_expired() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.engine.watch.period = Duration::from_millis(100);
    config.engine.watch.retention = Duration::from_secs(1);
    let server = TestServer::spawn(config).await;
    server.wait_serving().await;
    import(&server, 10).await;
    set_rule(&server, true, "features.purchase_count >= 1").await;
    let mut stream = watch(&server, "s", "", true).await.unwrap();
    let mut watcher = Watcher::default();
    watcher.catch_up(&mut stream, 0).await;
    let old = watcher.cursor.clone();
    drop(stream);
    buy(&server, vec![purchase("p1".into(), "m00001")]).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    buy(&server, vec![purchase("p2".into(), "m00002")]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let status = watch(&server, "s", &old, false).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.reason, "CURSOR_EXPIRED");
    assert!(status.message().contains("initial members"), "{status:?}");

    // Starting again with the initial members works.
    let mut stream = watch(&server, "s", "", true).await.unwrap();
    let mut again = Watcher::default();
    again.catch_up(&mut stream, now_nanos()).await;
    assert_eq!(again.members.len(), 2);
    assert_eq!(again.members, listed(&server, "s", again.at).await);
}

#[tokio::test]
async fn a_watch_ends_at_the_deadline_of_its_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.engine.watch.period = Duration::from_millis(100);
    let server = TestServer::spawn(config).await;
    server.wait_serving().await;
    import(&server, 3).await;
    set_rule(&server, true, "true").await;
    let mut request = tonic::Request::new(pb::WatchSegmentMembershipRequest {
        segment: "segments/s".into(),
        include_initial_members: true,
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(800));
    let mut stream = MembershipServiceClient::new(server.channel().await)
        .watch_segment_membership(request)
        .await
        .unwrap()
        .into_inner();
    let mut watcher = Watcher::default();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the watch ends at its deadline, not later")
        {
            Ok(Some(message)) => watcher.apply(message),
            Ok(None) => panic!("the watch ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(watcher.members.len(), 3);
}

#[tokio::test]
async fn a_shutdown_ends_every_watch_at_once_to_be_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.engine.watch.period = Duration::from_millis(100);
    config.shutdown_grace = Duration::from_secs(30);
    let mut server = TestServer::spawn(config).await;
    server.wait_serving().await;
    import(&server, 3).await;
    set_rule(&server, true, "true").await;
    let mut stream = watch(&server, "s", "", true).await.unwrap();
    let mut watcher = Watcher::default();
    watcher.catch_up(&mut stream, 0).await;
    server.begin_shutdown();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the watch ends well within the shutdown grace")
        {
            Ok(Some(message)) => watcher.apply(message),
            Ok(None) => panic!("the watch ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("resume"), "{status:?}");
    server.stop().await.unwrap();
}
