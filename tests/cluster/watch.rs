//! Watching in cluster mode: a watch of one replica resumes on another,
//! after the first is killed, with the cursor the first handed out, and
//! hears the same changes in the same order (customer, entered or left,
//! cause, cursor); the members it accumulates are the segment's members
//! listed at the stream's evaluation time.

use std::collections::BTreeSet;
use std::time::Duration;

use prost_types::Timestamp;
use segmentd::grpc::pb;
use segmentd::grpc::pb::membership_service_client::MembershipServiceClient;
use segmentd::grpc::pb::segmentation_service_client::SegmentationServiceClient;
use segmentd::grpc::pb::watch_segment_membership_response::Event;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::calls::{purchase, request_id, with_token, Client};
use crate::nats::NatsCluster;
use crate::replica::Replica;

/// How often the replicas evaluate the watches: a tick in the log each.
const PERIOD: &str = "200ms";

/// One change as a watcher hears it: the customer, entered or left, the
/// cause, and the cursor of its message.
type Heard = (String, bool, pb::ChangeCause, String);

/// What a watcher holds: the members it accumulated, the evaluation time
/// they hold at, the cursor to resume with, and every change it heard.
#[derive(Debug, Default, Clone)]
struct Watcher {
    members: BTreeSet<String>,
    at: Option<Timestamp>,
    cursor: String,
    heard: Vec<Heard>,
}

impl Watcher {
    /// Applies one message.
    fn apply(&mut self, message: pb::WatchSegmentMembershipResponse) {
        self.at = message.evaluation_time;
        match message.event.expect("every message has an event") {
            Event::Initial(batch) => self.members.extend(batch.customers),
            Event::Changes(changes) => {
                for (entered, list) in [(true, changes.entered), (false, changes.left)] {
                    for change in list {
                        let cause = change.cause();
                        self.heard.push((
                            change.customer.clone(),
                            entered,
                            cause,
                            message.cursor.clone(),
                        ));
                        if entered {
                            self.members.insert(change.customer);
                        } else {
                            self.members.remove(&change.customer);
                        }
                    }
                }
            }
            Event::Progress(_) => {}
        }
        self.cursor = message.cursor;
    }

    /// Reads messages until the watcher has heard `count` changes in all
    /// and holds a cursor after a whole evaluation.
    async fn hear(
        &mut self,
        stream: &mut Streaming<pb::WatchSegmentMembershipResponse>,
        count: usize,
    ) {
        loop {
            // A cursor inside an evaluation's changes has a third part.
            let complete = self.cursor.matches('.').count() == 2;
            if self.heard.len() >= count && complete {
                return;
            }
            let message = tokio::time::timeout(Duration::from_secs(20), stream.message())
                .await
                .expect("a watch message within 20 s")
                .unwrap_or_else(|status| panic!("the watch failed: {status:?}"))
                .expect("the watch does not end");
            self.apply(message);
        }
    }
}

/// Watches segment `buyers` through `replica`, from `cursor` (from now
/// with the members when empty).
async fn watch(replica: &Replica, cursor: &str) -> Streaming<pb::WatchSegmentMembershipResponse> {
    MembershipServiceClient::new(replica.channel(Duration::from_secs(30)))
        .watch_segment_membership(pb::WatchSegmentMembershipRequest {
            segment: "segments/buyers".into(),
            cursor: cursor.into(),
            include_initial_members: cursor.is_empty(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("watching through {}: {status:?}", replica.addr))
        .into_inner()
}

fn segmentation(replica: &Replica) -> SegmentationServiceClient<Channel> {
    SegmentationServiceClient::new(replica.channel(Duration::from_secs(10)))
}

/// Every member of segment `buyers` at `at`, listed through `replica`.
async fn listed(replica: &Replica, at: Timestamp) -> BTreeSet<String> {
    let mut members = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = segmentation(replica)
            .list_segment_members(pb::ListSegmentMembersRequest {
                segment: "segments/buyers".into(),
                evaluation_time: Some(at),
                page_size: 1000,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        members.extend(page.customers);
        if page.next_page_token.is_empty() {
            return members;
        }
        page_token = page.next_page_token;
    }
}

/// Records one purchase `id` by `customer` through `client`.
async fn buy(client: &mut Client, id: &str, customer: &str) {
    client
        .record(vec![purchase(id, customer, 10, 1500)])
        .await
        .unwrap();
}

/// Makes `customer` object to profiling, through `client`: they leave
/// every segment, for consent.
async fn object(client: &mut Client, customer: &str) {
    client
        .customers
        .update_customer(pb::UpdateCustomerRequest {
            customer: Some(pb::Customer {
                name: format!("customers/{customer}"),
                objects_to_profiling: true,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["objects_to_profiling".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn customer(id: &str) -> String {
    format!("customers/{id}")
}

#[tokio::test]
async fn a_watch_resumes_on_another_replica_after_a_failover_with_the_same_changes() {
    let Some(nats) = NatsCluster::start().await else {
        return;
    };
    let mut replicas: Vec<Replica> = (0..2)
        .map(|_| Replica::spawn(&nats.urls(), &["--watch-period", PERIOD]))
        .collect();
    for replica in &mut replicas {
        replica.wait_serving().await;
    }
    let clients = Client::of_each(&replicas, Duration::from_secs(10));
    let (mut through_a, mut through_b) = (clients[0].clone(), clients[1].clone());
    let created = segmentation(&replicas[0])
        .create_segment(pb::CreateSegmentRequest {
            segment_id: "buyers".into(),
            segment: Some(pb::Segment {
                display_name: "Buyers".into(),
                filter: "features.purchase_count >= 1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let token = crate::calls::token_of(&created);
    for n in 0..4 {
        let client = if n % 2 == 0 {
            &mut through_a
        } else {
            &mut through_b
        };
        client
            .create(&format!("c{n}"), n, &request_id(n))
            .await
            .unwrap();
    }

    // A watch of replica A, registered through the log.
    let mut on_a = watch(&replicas[0], "").await;
    let mut a_watcher = Watcher::default();
    a_watcher.hear(&mut on_a, 0).await;
    assert!(a_watcher.members.is_empty(), "{:?}", a_watcher.members);
    let start = a_watcher.cursor.clone();
    // The segment exists on B too, once it applied the segment's record.
    segmentation(&replicas[1])
        .get_segment(with_token(
            pb::GetSegmentRequest {
                name: "segments/buyers".into(),
            },
            Some(&token),
        ))
        .await
        .unwrap();

    buy(&mut through_b, "p0", "c0").await;
    buy(&mut through_a, "p1", "c1").await;
    a_watcher.hear(&mut on_a, 2).await;
    // Second watches from the first cursor, on both replicas.
    let mut again_on_a = watch(&replicas[0], &start).await;
    let mut again_on_b = watch(&replicas[1], &start).await;
    object(&mut through_a, "c0").await;
    buy(&mut through_b, "p2", "c2").await;
    a_watcher.hear(&mut on_a, 4).await;
    let mut again_a = Watcher::default();
    again_a.hear(&mut again_on_a, 4).await;
    let failover_cursor = a_watcher.cursor.clone();
    let members_at_failover = a_watcher.members.clone();

    replicas[0].kill();
    buy(&mut through_b, "p3", "c3").await;

    // The watch resumes on B with A's cursor.
    let mut resumed = Watcher {
        members: members_at_failover,
        ..Default::default()
    };
    let mut on_b = watch(&replicas[1], &failover_cursor).await;
    resumed.hear(&mut on_b, 1).await;
    let mut again_b = Watcher::default();
    again_b.hear(&mut again_on_b, 5).await;

    // What A told before it went, B tells alike, in the same order, with
    // the same cursors; and B goes on after A's last cursor.
    let heard_on_a = a_watcher.heard.clone();
    assert_eq!(again_a.heard, heard_on_a[..again_a.heard.len()]);
    assert_eq!(again_b.heard[..heard_on_a.len()], heard_on_a[..]);
    assert_eq!(again_b.heard[heard_on_a.len()..], resumed.heard[..]);
    let moves: Vec<(&str, bool, pb::ChangeCause)> = again_b
        .heard
        .iter()
        .map(|(customer, entered, cause, _)| (customer.as_str(), *entered, *cause))
        .collect();
    let (c0, c1, c2, c3) = (
        customer("c0"),
        customer("c1"),
        customer("c2"),
        customer("c3"),
    );
    let activity = pb::ChangeCause::Activity;
    let mut expected = vec![
        (c0.as_str(), true, activity),
        (c1.as_str(), true, activity),
        (c0.as_str(), false, pb::ChangeCause::Consent),
        (c2.as_str(), true, activity),
        (c3.as_str(), true, activity),
    ];
    // Changes of one evaluation come entries first: two writes that one
    // tick saw together may swap.
    let mut sorted_moves = moves.clone();
    sorted_moves.sort();
    expected.sort();
    assert_eq!(sorted_moves, expected, "{moves:?}");

    // The members the resumed watcher holds are the segment's at the
    // stream's evaluation time.
    let at = resumed.at.expect("a message has a time");
    assert_eq!(
        resumed.members,
        listed(&replicas[1], at).await,
        "the members accumulated through both replicas"
    );
    assert_eq!(
        resumed.members,
        BTreeSet::from([c1.clone(), c2.clone(), c3.clone()])
    );
}
