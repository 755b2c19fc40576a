//! Watching through replicas over one log in memory: every replica writes
//! the same change history, so a watch resumes on any replica with a
//! cursor of another, and sees the same changes in the same order.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::domain::segment::{Segment, SegmentId};
use crate::domain::{CustomerId, Location, Profile, ProfileField, Timestamp};
use crate::engine::watch::{FeedItem, Start, Started, Subject, WatchSettings};
use crate::engine::CustomerUpdate;
use crate::log::MemoryLog;

/// The watch period of these tests.
const PERIOD: Duration = Duration::from_millis(50);

/// A replica whose watches run with `watch`.
async fn replica_watching(
    log: &Arc<MemoryLog>,
    dir: &Path,
    snapshots: Duration,
    watch: WatchSettings,
) -> Engine {
    let mut settings = super::tests::settings();
    settings.watch = watch;
    super::tests::replica_of(log, dir, settings, snapshots)
        .await
        .unwrap()
}

/// A replica that ticks every [`PERIOD`].
async fn replica(log: &Arc<MemoryLog>, dir: &Path, snapshots: Duration) -> Engine {
    let watch = WatchSettings {
        period: PERIOD,
        ..WatchSettings::default()
    };
    replica_watching(log, dir, snapshots, watch).await
}

/// A replica that leaves the ticks to the test, which appends them.
async fn replica_ticked_by_test(log: &Arc<MemoryLog>, dir: &Path) -> Engine {
    let watch = WatchSettings {
        period: Duration::from_secs(86_400),
        ..WatchSettings::default()
    };
    replica_watching(log, dir, Duration::from_secs(3600), watch).await
}

fn in_city(city: &str) -> Profile {
    Profile {
        location: Location {
            city: city.into(),
            ..Location::default()
        },
        ..Profile::default()
    }
}

async fn create_segment(engine: &Engine) {
    create_segment_of(engine, "paris", "customer.city == \"Paris\"").await;
}

async fn create_segment_of(engine: &Engine, id: &str, filter: &str) {
    engine
        .create_segment(Segment {
            id: SegmentId::parse(id).unwrap(),
            display_name: id.into(),
            description: String::new(),
            filter: filter.into(),
            revision: 0,
            create_time: Timestamp::from_nanos(0),
            update_time: Timestamp::from_nanos(0),
        })
        .await
        .unwrap();
}

async fn create(engine: &Engine, customer: &str, city: &str) {
    engine
        .create_customer(CustomerId::parse(customer).unwrap(), in_city(city), None)
        .await
        .unwrap();
}

async fn move_to(engine: &Engine, customer: &str, city: &str) {
    engine
        .update_customer(CustomerUpdate {
            id: CustomerId::parse(customer).unwrap(),
            profile: in_city(city),
            fields: vec![ProfileField::City],
            etag: None,
            allow_missing: false,
        })
        .await
        .unwrap();
}

fn parisians() -> Subject {
    Subject::Segment {
        id: "paris".into(),
        channel: None,
    }
}

async fn watch(engine: &Engine, start: Start) -> Started {
    engine
        .watch(parisians(), start, BTreeSet::new())
        .await
        .unwrap()
}

/// One change as a watcher sees it: the customer, entered or left, the
/// cause, and the cursor of its message.
type Seen = (String, bool, String, String);

/// The next `count` changes of a watch.
async fn changes(started: &mut Started, count: usize) -> Vec<Seen> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let item = tokio::time::timeout(Duration::from_secs(10), started.feed.next())
            .await
            .expect("the changes come within a few periods")
            .unwrap();
        if let FeedItem::Changes {
            changes, cursor, ..
        } = item
        {
            for change in changes {
                let cause = format!("{:?}", change.cause);
                seen.push((change.customer, change.entered, cause, cursor.to_text()));
            }
        }
    }
    seen
}

/// Every record of a replica's change history, once it has applied the
/// whole log.
async fn history(engine: &Engine, log: &MemoryLog) -> Vec<(u64, Vec<u8>)> {
    let last = log.bounds().await.unwrap().last;
    engine.wait_for(last, Duration::from_secs(5)).await.unwrap();
    engine.shared.store.history_after(0, usize::MAX).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_replica_with_the_same_changes_in_the_same_order() {
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let hour = Duration::from_secs(3600);
    let a = replica(&log, &dirs.path().join("a"), hour).await;
    let b_dir = dirs.path().join("b");
    let b = replica(&log, &b_dir, hour).await;
    create_segment(&a).await;

    // Registered through the log by the first watch, on replica A.
    let mut on_a = watch(&a, Start::Initial).await;
    assert_eq!(on_a.initial.as_deref(), Some(&[][..]));
    let start = on_a.cursor.to_text();
    create(&b, "ada", "Paris").await;
    create(&a, "bob", "Rome").await;
    let first = changes(&mut on_a, 1).await;
    move_to(&b, "bob", "Paris").await;
    move_to(&a, "ada", "Lyon").await;
    let later = changes(&mut on_a, 2).await;
    let seen_on_a: Vec<Seen> = first.iter().chain(&later).cloned().collect();
    let customers: Vec<(&str, bool)> = seen_on_a
        .iter()
        .map(|(customer, entered, ..)| (customer.as_str(), *entered))
        .collect();
    assert_eq!(
        customers,
        [("ada", true), ("bob", true), ("ada", false)],
        "{seen_on_a:?}"
    );
    assert!(seen_on_a.iter().all(|(_, _, cause, _)| cause == "Profile"));

    // The same cursor, the same changes, through B.
    let mut on_b = watch(&b, Start::After(start.clone())).await;
    assert_eq!(changes(&mut on_b, 3).await, seen_on_a);
    let mut from_middle = watch(&b, Start::After(first[0].3.clone())).await;
    assert_eq!(changes(&mut from_middle, 2).await, later);
    assert_eq!(history(&a, &log).await, history(&b, &log).await);

    // B restarts while A goes on: it goes on with the same history.
    drop((on_b, from_middle));
    drop(b);
    create(&a, "cy", "Paris").await;
    let after_restart = changes(&mut on_a, 1).await;
    let b = replica(&log, &b_dir, hour).await;
    let mut on_b = watch(&b, Start::After(later[1].3.clone())).await;
    assert_eq!(changes(&mut on_b, 1).await, after_restart);
    assert_eq!(history(&a, &log).await, history(&b, &log).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_joins_from_a_snapshot_goes_on_with_the_change_history() {
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let a = replica(&log, &dirs.path().join("a"), Duration::from_millis(100)).await;
    let mut personas = a
        .watch(Subject::Personas, Start::Now, BTreeSet::new())
        .await
        .unwrap();
    let start = personas.cursor.to_text();
    create(&a, "ada", "Paris").await;
    let seen = changes(&mut personas, 1).await;
    let applied = a.replica_stats().unwrap().applied;
    let published = async {
        loop {
            if let Some(position) = log.snapshot_position().await.unwrap() {
                if position >= applied {
                    return position;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let published = tokio::time::timeout(Duration::from_secs(10), published)
        .await
        .expect("a snapshot is published");
    log.drop_before(published + 1);

    let c = replica(&log, &dirs.path().join("c"), Duration::from_secs(3600)).await;
    assert_eq!(c.replica_stats().unwrap().joined_from, published);
    let mut on_c = c
        .watch(Subject::Personas, Start::After(start), BTreeSet::new())
        .await
        .unwrap();
    assert_eq!(changes(&mut on_c, 1).await, seen);
    assert_eq!(history(&a, &log).await, history(&c, &log).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_between_a_write_and_the_next_tick_gives_the_same_cause() {
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let a = replica_ticked_by_test(&log, &dirs.path().join("a")).await;
    let b_dir = dirs.path().join("b");
    let b = replica_ticked_by_test(&log, &b_dir).await;
    create_segment(&a).await;
    let mut on_a = watch(&a, Start::Initial).await;
    create(&a, "ada", "Paris").await;
    history(&b, &log).await;
    // B goes before the tick that reports ada: what her creation touched
    // was in its memory only.
    drop(b);
    let b = replica_ticked_by_test(&log, &b_dir).await;
    let tick = Command::Tick {
        at: Timestamp::now(),
    };
    log.append("tick".into(), tick.encode().unwrap().into())
        .await
        .unwrap();
    let seen = changes(&mut on_a, 1).await;
    assert_eq!(seen[0].2, "Profile", "{seen:?}");
    assert_eq!(history(&a, &log).await, history(&b, &log).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_drops_the_same_records_for_retention() {
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let settings = WatchSettings {
        // Ticks only when the test appends them, a few seconds apart in
        // their time, however fast they apply.
        period: Duration::from_secs(86_400),
        retention: Duration::from_secs(10),
        ..WatchSettings::default()
    };
    let hour = Duration::from_secs(3600);
    let a = replica_watching(&log, &dirs.path().join("a"), hour, settings.clone()).await;
    let b = replica_watching(&log, &dirs.path().join("b"), hour, settings).await;
    create_segment(&a).await;
    let _watching = watch(&a, Start::Initial).await;
    let start = Timestamp::now().as_nanos();
    for n in 0..12i64 {
        let through = if n % 2 == 0 { &a } else { &b };
        create(through, &format!("c{n:02}"), "Paris").await;
        let tick = Command::Tick {
            at: Timestamp::from_nanos(start + n * 3_000_000_000),
        };
        log.append(format!("tick-{n}"), tick.encode().unwrap().into())
            .await
            .unwrap();
    }
    let kept = history(&a, &log).await;
    assert_eq!(kept, history(&b, &log).await);
    let (pruned, last) = a.shared.store.history_bounds().unwrap();
    assert!(pruned > 0 && pruned < last, "pruned {pruned} of {last}");
    assert_eq!(b.shared.store.history_bounds().unwrap(), (pruned, last));
}

/// Appends a tick at `at` to the log.
async fn tick(log: &MemoryLog, at: i64) {
    let tick = Command::Tick {
        at: Timestamp::from_nanos(at),
    };
    log.append(format!("tick-at-{at}"), tick.encode().unwrap().into())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_between_ticks_tells_the_clock_from_other_customers_alike() {
    const DAY: i64 = 86_400_000_000_000;
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let a = replica_ticked_by_test(&log, &dirs.path().join("a")).await;
    let b_dir = dirs.path().join("b");
    let b = replica_ticked_by_test(&log, &b_dir).await;
    // A rule of scores, which the clock moves too.
    create_segment_of(
        &a,
        "recent",
        "features.rfm.f >= 1 && features.purchases_90d >= 1",
    )
    .await;
    let subject = Subject::Segment {
        id: "recent".into(),
        channel: None,
    };
    let mut on_a = a
        .watch(subject, Start::Initial, BTreeSet::new())
        .await
        .unwrap();
    let now = Timestamp::now().as_nanos();
    for (customer, days_ago) in [("ada", 80), ("bob", 10)] {
        create(&a, customer, "Paris").await;
        let purchase = crate::domain::Purchase {
            id: crate::domain::EventId::parse(&format!("p-{customer}")).unwrap(),
            customer: CustomerId::parse(customer).unwrap(),
            occurred_at: Timestamp::from_nanos(now - days_ago * DAY),
            amount_minor: 1000,
            quantity: 1,
            category: "books".into(),
            durability: crate::domain::ProductDurability::Durable,
        };
        let batch = crate::domain::ActivityBatch {
            purchases: vec![purchase],
            engagements: Vec::new(),
        };
        a.record_activity(batch).await.unwrap();
    }
    tick(&log, now).await;
    assert_eq!(changes(&mut on_a, 2).await.len(), 2);
    // A write that moves no score, then B restarts before the next tick.
    create(&a, "cy", "Rome").await;
    history(&b, &log).await;
    drop(b);
    let b = replica_ticked_by_test(&log, &b_dir).await;
    // Twenty days on, ada's purchase leaves the 90 days: the clock's doing.
    tick(&log, now + 20 * DAY).await;
    let left = changes(&mut on_a, 1).await;
    assert_eq!((left[0].0.as_str(), left[0].1), ("ada", false));
    assert_eq!(left[0].2, "Clock");
    assert_eq!(history(&a, &log).await, history(&b, &log).await);
}
