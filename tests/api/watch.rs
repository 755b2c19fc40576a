//! Watches of segment membership and persona assignments: the members a
//! watcher accumulates from the stream equal the members listed at the
//! stream's evaluation time, changes come with their causes, cursors
//! resume exactly, and a slow or abandoned watcher holds nobody up.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;
use segmentd::grpc::pb;
use segmentd::grpc::pb::membership_service_client::MembershipServiceClient;
use segmentd::grpc::pb::watch_segment_membership_response::Event;
use tonic::transport::Channel;
use tonic::{Code, Streaming};
use tonic_types::StatusExt as _;

use crate::customers::create;
use crate::segments::segmentation;
use crate::support::{config, TestServer};

/// Seconds since the epoch now.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Nanoseconds since the epoch now: an evaluation at or after it saw
/// every write acknowledged before.
pub fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// A test server that evaluates its watches every 100 ms.
pub async fn watch_server(dir: &std::path::Path) -> TestServer {
    let mut config = config(dir);
    config.engine.watch.period = Duration::from_millis(100);
    let server = TestServer::spawn(config).await;
    server.wait_serving().await;
    server
}

pub async fn membership(server: &TestServer) -> MembershipServiceClient<Channel> {
    MembershipServiceClient::new(server.channel().await)
}

pub fn customer() -> pb::Customer {
    pb::Customer {
        party: pb::Party::Individual as i32,
        ..Default::default()
    }
}

pub fn purchase_at(id: &str, customer: &str, seconds: i64, cents: i64) -> pb::Purchase {
    pb::Purchase {
        purchase_id: id.into(),
        customer: format!("customers/{customer}"),
        occurred_at: Some(Timestamp { seconds, nanos: 0 }),
        amount: Some(pb::Money {
            currency_code: "USD".into(),
            minor_units: cents,
        }),
        quantity: 1,
        category: "music".into(),
        durability: pb::ProductDurability::Consumable as i32,
    }
}

pub async fn buy(server: &TestServer, purchases: Vec<pb::Purchase>) {
    crate::activity::record(server, purchases, vec![])
        .await
        .unwrap();
}

pub async fn create_segment(server: &TestServer, id: &str, filter: &str) {
    segmentation(server)
        .await
        .create_segment(pb::CreateSegmentRequest {
            segment_id: id.into(),
            segment: Some(pb::Segment {
                display_name: id.into(),
                filter: filter.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

/// What a watcher holds: the members it accumulated, the time they hold
/// at, and the cursor to resume with.
#[derive(Debug, Default)]
pub struct Watcher {
    pub members: BTreeSet<String>,
    pub at: i128,
    pub cursor: String,
    /// Every change received: (customer, entered, cause).
    pub changes: Vec<(String, bool, pb::ChangeCause)>,
    pub initial_done: bool,
}

fn nanos(timestamp: &Option<Timestamp>) -> i128 {
    let timestamp = timestamp.as_ref().expect("every message has a time");
    i128::from(timestamp.seconds) * 1_000_000_000 + i128::from(timestamp.nanos)
}

impl Watcher {
    /// Applies one message.
    pub fn apply(&mut self, message: pb::WatchSegmentMembershipResponse) {
        let at = nanos(&message.evaluation_time);
        assert!(
            at >= self.at,
            "evaluation times never go back: {at} after {} ({message:?})",
            self.at
        );
        self.at = at;
        match message.event.expect("every message has an event") {
            Event::Initial(batch) => {
                assert!(!self.initial_done, "initial members after the last batch");
                self.members.extend(batch.customers);
                self.initial_done = batch.last;
                if !batch.last {
                    return;
                }
            }
            Event::Changes(changes) => {
                for change in changes.entered {
                    let cause = change.cause();
                    self.changes.push((change.customer.clone(), true, cause));
                    self.members.insert(change.customer);
                }
                for change in changes.left {
                    let cause = change.cause();
                    self.changes.push((change.customer.clone(), false, cause));
                    self.members.remove(&change.customer);
                }
            }
            Event::Progress(_) => {}
        }
        assert!(!message.cursor.is_empty(), "a cursor after every message");
        self.cursor = message.cursor;
    }

    /// Reads messages until one holds at or after `at_least` (seconds
    /// since the epoch, or any time when `None`) and none is waiting.
    pub async fn catch_up(
        &mut self,
        stream: &mut Streaming<pb::WatchSegmentMembershipResponse>,
        at_least: i128,
    ) {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), stream.message())
                .await
                .expect("a watch message within 20 s")
                .unwrap_or_else(|status| panic!("the watch failed: {status:?}"))
                .expect("the watch does not end");
            self.apply(message);
            // A cursor inside an evaluation's changes has a third part.
            let complete = self.cursor.matches('.').count() == 2;
            if self.at >= at_least && complete {
                return;
            }
        }
    }
}

pub async fn watch(
    server: &TestServer,
    segment: &str,
    cursor: &str,
    initial: bool,
) -> Result<Streaming<pb::WatchSegmentMembershipResponse>, tonic::Status> {
    membership(server)
        .await
        .watch_segment_membership(pb::WatchSegmentMembershipRequest {
            segment: format!("segments/{segment}"),
            cursor: cursor.into(),
            include_initial_members: initial,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A time given in nanoseconds since the epoch.
pub fn time_of(nanos: i128) -> Timestamp {
    Timestamp {
        seconds: (nanos / 1_000_000_000) as i64,
        nanos: (nanos % 1_000_000_000) as i32,
    }
}

/// Every member of `segment` at `at` (nanoseconds), listed page by page.
pub async fn listed(server: &TestServer, segment: &str, at: i128) -> BTreeSet<String> {
    let mut client = segmentation(server).await;
    let mut members = BTreeSet::new();
    let mut page_token = String::new();
    let time = time_of(at);
    loop {
        let page = client
            .list_segment_members(pb::ListSegmentMembersRequest {
                segment: format!("segments/{segment}"),
                evaluation_time: Some(time),
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

#[tokio::test]
async fn a_watch_starts_with_the_members_and_reports_who_enters_and_leaves_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let server = watch_server(dir.path()).await;
    let t = now();
    for id in ["ann", "bob", "cem", "dia"] {
        create(&server, id, customer()).await.unwrap();
    }
    buy(&server, vec![purchase_at("p1", "ann", t - 86_400, 1000)]).await;
    create_segment(&server, "buyers", "features.purchase_count >= 1").await;

    let mut stream = watch(&server, "buyers", "", true).await.unwrap();
    let mut watcher = Watcher::default();
    watcher.catch_up(&mut stream, 0).await;
    assert_eq!(
        watcher.members,
        BTreeSet::from(["customers/ann".to_owned()])
    );
    let first_cursor = watcher.cursor.clone();

    // A purchase: bob enters because of his activity.
    buy(&server, vec![purchase_at("p2", "bob", t - 60, 500)]).await;
    // A customer who starts objecting to profiling leaves on consent.
    server
        .customers()
        .await
        .update_customer(pb::UpdateCustomerRequest {
            customer: Some(pb::Customer {
                name: "customers/ann".into(),
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
    watcher.catch_up(&mut stream, now_nanos()).await;
    assert_eq!(
        watcher.members,
        BTreeSet::from(["customers/bob".to_owned()])
    );
    let causes: BTreeMap<(String, bool), pb::ChangeCause> = watcher
        .changes
        .iter()
        .map(|(customer, entered, cause)| ((customer.clone(), *entered), *cause))
        .collect();
    assert_eq!(
        causes[&("customers/bob".to_owned(), true)],
        pb::ChangeCause::Activity
    );
    assert_eq!(
        causes[&("customers/ann".to_owned(), false)],
        pb::ChangeCause::Consent
    );

    // An erasure: bob leaves, and the cause says so.
    server
        .customers()
        .await
        .delete_customer(pb::DeleteCustomerRequest {
            name: "customers/bob".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    watcher.catch_up(&mut stream, now_nanos()).await;
    assert!(watcher.members.is_empty(), "{:?}", watcher.members);
    assert_eq!(
        watcher.changes.last().unwrap(),
        &("customers/bob".to_owned(), false, pb::ChangeCause::Erasure)
    );
    // The history keeps nothing of bob but the notice of his erasure: a
    // watcher that resumes from before hears of him once, leaving.
    let mut replay = Watcher {
        members: BTreeSet::from(["customers/ann".to_owned()]),
        ..Default::default()
    };
    let mut replay_stream = watch(&server, "buyers", &first_cursor, false)
        .await
        .unwrap();
    replay.catch_up(&mut replay_stream, watcher.at).await;
    let mentions: Vec<_> = replay
        .changes
        .iter()
        .filter(|(customer, _, _)| customer == "customers/bob")
        .collect();
    assert_eq!(
        mentions,
        [&("customers/bob".to_owned(), false, pb::ChangeCause::Erasure)]
    );
    assert_eq!(replay.members, watcher.members);

    // A change of the rule: everyone it now selects enters, for that
    // reason.
    segmentation(&server)
        .await
        .update_segment(pb::UpdateSegmentRequest {
            segment: Some(pb::Segment {
                name: "segments/buyers".into(),
                filter: "features.purchase_count == 0".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["filter".into()],
            }),
        })
        .await
        .unwrap();
    watcher.catch_up(&mut stream, now_nanos()).await;
    assert_eq!(
        watcher.members,
        BTreeSet::from(["customers/cem".to_owned(), "customers/dia".to_owned()])
    );
    assert!(watcher
        .changes
        .iter()
        .rev()
        .take(2)
        .all(|(_, entered, cause)| *entered && *cause == pb::ChangeCause::SegmentChanged));
    assert_eq!(watcher.members, listed(&server, "buyers", watcher.at).await);

    // Deleting the segment: everyone leaves, then the stream ends.
    segmentation(&server)
        .await
        .delete_segment(pb::DeleteSegmentRequest {
            name: "segments/buyers".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .unwrap()
        {
            Ok(Some(message)) => watcher.apply(message),
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(watcher.members.is_empty());
}

#[tokio::test]
async fn cursors_that_cannot_resume_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let server = watch_server(dir.path()).await;
    create(&server, "ann", customer()).await.unwrap();
    create_segment(&server, "all", "true").await;
    let mut stream = watch(&server, "all", "", false).await.unwrap();
    let mut watcher = Watcher::default();
    watcher.catch_up(&mut stream, 0).await;

    for (cursor, code, reason) in [
        ("not-a-cursor", Code::InvalidArgument, None),
        ("c1.1.5", Code::FailedPrecondition, Some("CURSOR_UNKNOWN")),
    ] {
        let status = watch(&server, "all", cursor, false).await.unwrap_err();
        assert_eq!(status.code(), code, "{cursor}: {status:?}");
        if let Some(reason) = reason {
            let info = status.get_details_error_info().unwrap();
            assert_eq!(info.reason, reason);
            assert!(status.message().contains("initial members"), "{status:?}");
        }
    }
    // A cursor past the end of this history.
    let (prefix, _) = watcher.cursor.rsplit_once('.').unwrap();
    let status = watch(&server, "all", &format!("{prefix}.999999"), false)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    // A cursor and the initial members together.
    let status = watch(&server, "all", &watcher.cursor, true)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // An unknown segment.
    let status = watch(&server, "nope", "", false).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn a_catalog_replacement_moves_everyone_in_one_evaluation_and_says_so() {
    use pb::watch_persona_assignments_response::Event;
    use segmentd::grpc::pb::persona_service_client::PersonaServiceClient;

    let dir = tempfile::tempdir().unwrap();
    let server = watch_server(dir.path()).await;
    for id in ["ann", "bob", "cem"] {
        create(&server, id, customer()).await.unwrap();
    }
    buy(
        &server,
        vec![purchase_at("p1", "ann", now() - 86_400, 1000)],
    )
    .await;
    // Watchers of every persona and of one.
    let mut all = membership(&server)
        .await
        .watch_persona_assignments(pb::WatchPersonaAssignmentsRequest {
            include_initial_assignments: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut buyers = membership(&server)
        .await
        .watch_persona_assignments(pb::WatchPersonaAssignmentsRequest {
            persona_ids: vec!["ONE_TIME_BUYER".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The initial assignments, and any move after, until an evaluation
    // after the writes: everyone has a persona.
    let after = now_nanos();
    let mut held: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let message = all.message().await.unwrap().unwrap();
        match message.event.unwrap() {
            Event::Initial(batch) => held.extend(
                batch
                    .assignments
                    .into_iter()
                    .map(|a| (a.customer, a.persona_id)),
            ),
            Event::Moves(moves) => held.extend(
                moves
                    .moves
                    .into_iter()
                    .map(|m| (m.customer, m.to_persona_id)),
            ),
            Event::Progress(_) => {}
        }
        let time = message.evaluation_time.unwrap();
        let at = i128::from(time.seconds) * 1_000_000_000 + i128::from(time.nanos);
        if at >= after && !message.cursor.is_empty() {
            break;
        }
    }
    assert_eq!(held.len(), 3, "{held:?}");
    assert_eq!(held["customers/ann"], "ONE_TIME_BUYER");
    // An unknown persona is refused.
    let status = membership(&server)
        .await
        .watch_persona_assignments(pb::WatchPersonaAssignmentsRequest {
            persona_ids: vec!["NOBODY".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    PersonaServiceClient::new(server.channel().await)
        .replace_persona_catalog(pb::ReplacePersonaCatalogRequest {
            personas: vec![
                crate::personas::persona("BUYER", "features.purchase_count >= 1"),
                crate::personas::persona("EVERYONE", "true"),
            ],
            expected_revision: 0,
        })
        .await
        .unwrap();
    // One message holds every move, each caused by the catalog.
    let moves = loop {
        let message = tokio::time::timeout(Duration::from_secs(20), all.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(Event::Moves(moves)) = message.event {
            break moves.moves;
        }
    };
    let moved: BTreeMap<String, (String, String)> = moves
        .iter()
        .map(|step| {
            assert_eq!(step.cause(), pb::ChangeCause::CatalogChanged, "{step:?}");
            (
                step.customer.clone(),
                (step.from_persona_id.clone(), step.to_persona_id.clone()),
            )
        })
        .collect();
    assert_eq!(moved.len(), 3, "{moved:?}");
    assert_eq!(moved["customers/ann"].1, "BUYER");
    assert_eq!(moved["customers/bob"].1, "EVERYONE");
    // The watcher of one persona hears only of moves into or out of it:
    // perhaps ann's into it, after the watch began, then hers out of it.
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), buyers.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Some(Event::Moves(moves)) = message.event else {
            continue;
        };
        assert_eq!(moves.moves.len(), 1, "{moves:?}");
        let step = &moves.moves[0];
        assert_eq!(step.customer, "customers/ann");
        if step.to_persona_id == "ONE_TIME_BUYER" {
            continue;
        }
        assert_eq!(
            (step.from_persona_id.as_str(), step.to_persona_id.as_str()),
            ("ONE_TIME_BUYER", "BUYER")
        );
        break;
    }
}
