//! The correctness bar of watching: writers (purchases, a few of them
//! dated seconds ahead, profile and consent changes, erasures) and a moving
//! clock, while watchers follow a
//! segment that uses a 90-day window and RFM scores, the same segment on a
//! consent channel, and the personas; at random points the members each
//! accumulated equal the members listed, exported or assigned at the
//! stream's evaluation time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use segmentd::grpc::pb;
use segmentd::grpc::pb::persona_service_client::PersonaServiceClient;
use segmentd::grpc::pb::segmentation_service_client::SegmentationServiceClient;
use tonic::Streaming;

use crate::customers::create;
use crate::support::TestServer;
use crate::watch::{
    buy, listed, membership, now_nanos, purchase_at, time_of, watch, watch_server, Watcher,
};

const DAY: i64 = 86_400;
/// A segment whose members move with the clock and with other customers'
/// purchases.
const RULE: &str = "(features.purchases_90d >= 2 || features.rfm.r >= 4) && features.rfm.m >= 3";

fn person(email: bool) -> pb::Customer {
    pb::Customer {
        party: pb::Party::Individual as i32,
        consent: Some(pb::Consent {
            email: if email {
                pb::ConsentStatus::Granted
            } else {
                pb::ConsentStatus::Denied
            } as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn update(server: &TestServer, id: &str, customer: pb::Customer, paths: &[&str]) {
    let mut customer = customer;
    customer.name = format!("customers/{id}");
    server
        .customers()
        .await
        .update_customer(pb::UpdateCustomerRequest {
            customer: Some(customer),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|path| (*path).to_owned()).collect(),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Members of `segment` with consent on email, exported at `at`.
async fn exported(server: &TestServer, segment: &str, at: i128) -> BTreeSet<String> {
    let mut stream = SegmentationServiceClient::new(server.channel().await)
        .export_segment_members(pb::ExportSegmentMembersRequest {
            segment: format!("segments/{segment}"),
            channel: pb::Channel::Email as i32,
            evaluation_time: Some(time_of(at)),
            batch_size: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    let mut members = BTreeSet::new();
    while let Some(batch) = stream.message().await.unwrap() {
        members.extend(batch.customers);
    }
    members
}

/// Every customer's persona at `at`.
async fn assigned(server: &TestServer, at: i128) -> BTreeMap<String, String> {
    let mut stream = PersonaServiceClient::new(server.channel().await)
        .export_persona_assignments(pb::ExportPersonaAssignmentsRequest {
            evaluation_time: Some(time_of(at)),
            batch_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut assignments = BTreeMap::new();
    while let Some(batch) = stream.message().await.unwrap() {
        for assignment in batch.assignments {
            assignments.insert(assignment.customer, assignment.persona_id);
        }
    }
    assignments
}

/// A watcher of personas: every customer's persona it accumulated.
#[derive(Debug, Default)]
struct PersonaWatcher {
    personas: BTreeMap<String, String>,
    at: i128,
    cursor: String,
}

impl PersonaWatcher {
    async fn catch_up(
        &mut self,
        stream: &mut Streaming<pb::WatchPersonaAssignmentsResponse>,
        at_least: i128,
    ) {
        use pb::watch_persona_assignments_response::Event;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), stream.message())
                .await
                .expect("a message within 20 s")
                .unwrap()
                .expect("the watch goes on");
            let time = message.evaluation_time.unwrap();
            let at = i128::from(time.seconds) * 1_000_000_000 + i128::from(time.nanos);
            assert!(at >= self.at);
            self.at = at;
            match message.event.unwrap() {
                Event::Initial(batch) => {
                    for assignment in batch.assignments {
                        self.personas
                            .insert(assignment.customer, assignment.persona_id);
                    }
                }
                Event::Moves(moves) => {
                    for step in moves.moves {
                        assert_eq!(
                            self.personas.get(&step.customer).map_or("", String::as_str),
                            step.from_persona_id,
                            "a move starts from the persona held: {step:?}"
                        );
                        if step.to_persona_id.is_empty() {
                            self.personas.remove(&step.customer);
                        } else {
                            self.personas.insert(step.customer, step.to_persona_id);
                        }
                    }
                }
                Event::Progress(_) => {}
            }
            if !message.cursor.is_empty() {
                self.cursor = message.cursor;
                if self.at >= at_least {
                    return;
                }
            }
        }
    }
}

#[tokio::test]
async fn accumulated_members_equal_the_listed_members_at_every_evaluation_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = watch_server(dir.path()).await;
    let mut random = StdRng::seed_from_u64(13);
    let start = (now_nanos() / 1_000_000_000) as i64;
    let ids: Vec<String> = (0..40).map(|n| format!("c{n:02}")).collect();
    for (n, id) in ids.iter().enumerate() {
        create(&server, id, person(n % 3 != 0)).await.unwrap();
    }
    // History: purchases over the last year, some of them just inside the
    // 90-day window, so that they leave it while the test runs.
    let mut purchases = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        for k in 0..(n % 5) {
            let seconds = start - random.random_range(91..360) * DAY;
            purchases.push(purchase_at(
                &format!("h{n}-{k}"),
                id,
                seconds,
                500 + 300 * k as i64,
            ));
        }
        if n % 4 == 1 {
            let edge = start - 90 * DAY + random.random_range(2..12);
            purchases.push(purchase_at(&format!("e{n}a"), id, edge, 4000));
            purchases.push(purchase_at(&format!("e{n}b"), id, edge - 5, 4000));
        }
    }
    buy(&server, purchases).await;
    SegmentationServiceClient::new(server.channel().await)
        .create_segment(pb::CreateSegmentRequest {
            segment_id: "active".into(),
            segment: Some(pb::Segment {
                display_name: "Active and valuable".into(),
                filter: RULE.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();

    let mut stream = watch(&server, "active", "", true).await.unwrap();
    let mut watcher = Watcher::default();
    let mut email_stream = membership(&server)
        .await
        .watch_segment_membership(pb::WatchSegmentMembershipRequest {
            segment: "segments/active".into(),
            channel: pb::Channel::Email as i32,
            include_initial_members: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut email_watcher = Watcher::default();
    let mut persona_stream = membership(&server)
        .await
        .watch_persona_assignments(pb::WatchPersonaAssignmentsRequest {
            include_initial_assignments: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut persona_watcher = PersonaWatcher::default();
    watcher.catch_up(&mut stream, 0).await;
    let (first_members, first_cursor) = (watcher.members.clone(), watcher.cursor.clone());

    let mut checks = 0;
    let mut causes = BTreeSet::new();
    let mut erased = BTreeSet::new();
    let mut next = 0u32;
    let deadline = std::time::Instant::now() + Duration::from_secs(14);
    while std::time::Instant::now() < deadline {
        // A burst of writes.
        for _ in 0..random.random_range(1..12) {
            let id = &ids[random.random_range(0..ids.len())];
            if erased.contains(id) {
                if random.random_bool(0.3) {
                    create(&server, id, person(true)).await.unwrap();
                    erased.remove(id);
                }
                continue;
            }
            next += 1;
            let now = (now_nanos() / 1_000_000_000) as i64;
            match random.random_range(0..10) {
                0..=5 => {
                    // Now and then a purchase a few seconds ahead of the
                    // clock, which counts only once the clock passes it.
                    let seconds = if random.random_bool(0.1) {
                        now + random.random_range(1..4)
                    } else {
                        now - random.random_range(0..100) * DAY
                    };
                    let cents = random.random_range(100..20_000);
                    buy(
                        &server,
                        vec![purchase_at(&format!("w{next}"), id, seconds, cents)],
                    )
                    .await;
                }
                6 => {
                    let objects = random.random_bool(0.5);
                    let customer = pb::Customer {
                        objects_to_profiling: objects,
                        ..Default::default()
                    };
                    update(&server, id, customer, &["objects_to_profiling"]).await;
                }
                7 => {
                    let customer = person(random.random_bool(0.5));
                    update(&server, id, customer, &["consent.email"]).await;
                }
                8 => {
                    let customer = pb::Customer {
                        language: "tr".into(),
                        ..Default::default()
                    };
                    update(&server, id, customer, &["language"]).await;
                }
                _ => {
                    server
                        .customers()
                        .await
                        .delete_customer(pb::DeleteCustomerRequest {
                            name: format!("customers/{id}"),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    erased.insert(id.clone());
                }
            }
        }
        // Writers pause; every watcher catches up with an evaluation after
        // the last write, and holds exactly the members at its time.
        let after = now_nanos();
        watcher.catch_up(&mut stream, after).await;
        assert_eq!(
            watcher.members,
            listed(&server, "active", watcher.at).await,
            "check {checks}: the watcher's members at {}",
            watcher.at
        );
        email_watcher.catch_up(&mut email_stream, after).await;
        assert_eq!(
            email_watcher.members,
            exported(&server, "active", email_watcher.at).await,
            "check {checks}: the email watcher's members at {}",
            email_watcher.at
        );
        persona_watcher.catch_up(&mut persona_stream, after).await;
        assert_eq!(
            persona_watcher.personas,
            assigned(&server, persona_watcher.at).await,
            "check {checks}: the personas at {}",
            persona_watcher.at
        );
        causes.extend(watcher.changes.iter().map(|(_, _, cause)| *cause));
        checks += 1;
        tokio::time::sleep(Duration::from_millis(random.random_range(0..700))).await;
    }
    assert!(checks >= 5, "only {checks} checks");
    // The writes moved members, and so did time passing: the clock, or,
    // for this rule of RFM scores, the clock while others wrote.
    assert!(causes.contains(&pb::ChangeCause::Activity), "{causes:?}");
    assert!(
        causes.contains(&pb::ChangeCause::Clock)
            || causes.contains(&pb::ChangeCause::OtherCustomers),
        "no change caused by time passing: {causes:?}"
    );

    // A watcher that starts now, from the initial members, holds the same.
    let mut late = Watcher::default();
    let mut late_stream = watch(&server, "active", "", true).await.unwrap();
    late.catch_up(&mut late_stream, 0).await;
    assert_eq!(late.members, listed(&server, "active", late.at).await);

    // A watcher that resumes from the very first cursor gets every change
    // since, erasures included, and holds the same.
    let mut replay = Watcher {
        members: first_members,
        ..Default::default()
    };
    let mut replay_stream = watch(&server, "active", &first_cursor, false)
        .await
        .unwrap();
    replay.catch_up(&mut replay_stream, now_nanos()).await;
    assert_eq!(replay.members, listed(&server, "active", replay.at).await);
    assert_eq!(
        replay.members,
        watcher_now(&server, &mut watcher, &mut stream).await
    );
}

/// The members `watcher` holds once it has caught up with now.
async fn watcher_now(
    server: &TestServer,
    watcher: &mut Watcher,
    stream: &mut Streaming<pb::WatchSegmentMembershipResponse>,
) -> BTreeSet<String> {
    watcher.catch_up(stream, now_nanos()).await;
    let members = watcher.members.clone();
    assert_eq!(members, listed(server, "active", watcher.at).await);
    members
}
