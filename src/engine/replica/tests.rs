//! Replicas over one log in memory: the same writes reach every replica
//! with the same outcome, a restart resumes where it stopped, a new
//! replica joins from a snapshot, and what cannot be followed is refused.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::domain::features::Thresholds;
use crate::domain::{CurrencyCode, CustomerId, Profile};
use crate::log::MemoryLog;
use crate::store::Durability;

fn options(dir: &Path) -> StoreOptions {
    StoreOptions {
        path: dir.to_path_buf(),
        cache_capacity_bytes: 1 << 20,
        durability: Durability::Durable,
        compress: false,
    }
}

pub(super) fn settings() -> EngineSettings {
    EngineSettings {
        reporting_currency: CurrencyCode::parse("USD").unwrap(),
        thresholds: Thresholds::default(),
        watch: Default::default(),
        predictions: Default::default(),
        index_image: true,
    }
}

fn following(snapshot_interval: Duration) -> ReplicaSettings {
    ReplicaSettings {
        max_lag: 0,
        snapshot_interval,
        backup: BackupLimits::default(),
    }
}

/// A replica of `log` on `dir`; retries while a replica just dropped still
/// holds the store's lock.
async fn replica_with(log: &Arc<MemoryLog>, dir: &Path, snapshots: Duration) -> Result<Engine> {
    replica_of(log, dir, settings(), snapshots).await
}

/// A replica of `log` on `dir` with `settings`, as [`replica_with`].
pub(super) async fn replica_of(
    log: &Arc<MemoryLog>,
    dir: &Path,
    settings: EngineSettings,
    snapshots: Duration,
) -> Result<Engine> {
    let mut tries = 0;
    loop {
        let log: Arc<dyn Log> = log.clone();
        let opened =
            Engine::open_replica(options(dir), settings.clone(), log, following(snapshots)).await;
        match opened {
            Err(error) if tries < 100 && error.to_string().contains("lock") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            opened => return opened,
        }
    }
}

async fn replica(log: &Arc<MemoryLog>, dir: &Path) -> Engine {
    replica_with(log, dir, Duration::from_secs(3600))
        .await
        .unwrap()
}

fn id(text: &str) -> CustomerId {
    CustomerId::parse(text).unwrap()
}

/// Every customer the engine holds, in id order.
fn customers(engine: &Engine) -> Vec<crate::domain::Customer> {
    let mut all = Vec::new();
    engine
        .shared
        .store
        .for_each_customer(|_, customer| all.push(customer))
        .unwrap();
    all
}

async fn caught_up(engine: &Engine, log: &MemoryLog) {
    let last = log.bounds().await.unwrap().last;
    engine.wait_for(last, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_replica_is_read_through_another_with_its_token() {
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let a = replica(&log, &dirs.path().join("a")).await;
    let b = replica(&log, &dirs.path().join("b")).await;

    let (created, token) =
        track_writes(a.create_customer(id("ada"), Profile::default(), None)).await;
    let created = created.unwrap();
    let token = token.expect("a write answers with a token");
    b.wait_for(token, Duration::from_secs(5)).await.unwrap();
    assert_eq!(b.get_customer(&id("ada")).unwrap(), created);

    // The same outcome on every replica: the id is taken, whoever asks.
    let (again, token) = track_writes(b.create_customer(id("ada"), Profile::default(), None)).await;
    assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");
    assert!(
        token.is_some(),
        "a refused write was still a record of the log"
    );

    // Stale etags lose the same way everywhere.
    let stale = Some("\"0\"".to_owned());
    let update = crate::engine::CustomerUpdate {
        id: id("ada"),
        profile: Profile::default(),
        fields: vec![],
        etag: stale,
        allow_missing: false,
    };
    let refused = b.update_customer(update).await;
    assert!(
        matches!(refused, Err(Error::EtagMismatch { .. })),
        "{refused:?}"
    );

    caught_up(&a, &log).await;
    caught_up(&b, &log).await;
    assert_eq!(customers(&a), customers(&b));
    assert_eq!(
        a.page_token_key(),
        b.page_token_key(),
        "a page token made by one replica is good at the other"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_resumes_after_the_last_record_it_applied() {
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let a = replica(&log, &dirs.path().join("a")).await;
    let b_dir = dirs.path().join("b");
    let b = replica(&log, &b_dir).await;
    for name in ["ada", "bob"] {
        a.create_customer(id(name), Profile::default(), None)
            .await
            .unwrap();
    }
    caught_up(&b, &log).await;
    drop(b);
    for name in ["cy", "dee"] {
        a.create_customer(id(name), Profile::default(), None)
            .await
            .unwrap();
    }
    let b = replica(&log, &b_dir).await;
    caught_up(&b, &log).await;
    assert_eq!(customers(&b), customers(&a));
    let last = log.bounds().await.unwrap().last;
    assert_eq!(b.shared.store.log_position().unwrap(), Some(last));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_on_an_empty_directory_joins_from_the_published_snapshot() {
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let a = replica_with(&log, &dirs.path().join("a"), Duration::from_millis(50))
        .await
        .unwrap();
    a.create_customer(id("ada"), Profile::default(), None)
        .await
        .unwrap();
    let published = async {
        loop {
            if let Some(position) = log.snapshot_position().await.unwrap() {
                return position;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let published = tokio::time::timeout(Duration::from_secs(10), published)
        .await
        .expect("a snapshot is published");
    a.create_customer(id("bob"), Profile::default(), None)
        .await
        .unwrap();
    // The records before the snapshot are gone: only the snapshot has them.
    log.drop_before(published + 1);

    let c = replica(&log, &dirs.path().join("c")).await;
    caught_up(&c, &log).await;
    assert_eq!(c.replica_stats().unwrap().joined_from, published);
    assert_eq!(customers(&c), customers(&a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_retained_log_is_told_to_rejoin_from_a_snapshot() {
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let a = replica(&log, &dirs.path().join("a")).await;
    let b_dir = dirs.path().join("b");
    let b = replica(&log, &b_dir).await;
    caught_up(&b, &log).await;
    drop(b);
    for name in ["ada", "bob", "cy"] {
        a.create_customer(id(name), Profile::default(), None)
            .await
            .unwrap();
    }
    let last = log.bounds().await.unwrap().last;
    log.drop_before(last);
    let refused = replica_with(&log, &b_dir, Duration::from_secs(3600))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("wipe the data directory"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_without_a_snapshot_waits_for_one_when_the_log_lost_its_start() {
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let a = replica(&log, &dirs.path().join("a")).await;
    a.create_customer(id("ada"), Profile::default(), None)
        .await
        .unwrap();
    log.drop_before(2);
    let refused = replica_with(&log, &dirs.path().join("b"), Duration::from_secs(3600))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("must start from a snapshot"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_embedded_mode_is_not_taken_for_a_replica() {
    let dirs = tempfile::tempdir().unwrap();
    let dir = dirs.path().join("embedded");
    {
        let embedded = Engine::open(options(&dir), settings()).await.unwrap();
        embedded
            .create_customer(id("ada"), Profile::default(), None)
            .await
            .unwrap();
    }
    let log = Arc::new(MemoryLog::new());
    let refused = replica_with(&log, &dir, Duration::from_secs(3600))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("embedded mode"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_ahead_of_the_replica_or_a_log_out_of_reach_is_unavailable() {
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let a = replica(&log, &dirs.path().join("a")).await;
    let behind = a.wait_for(1_000, Duration::from_millis(50)).await;
    assert!(
        matches!(
            behind,
            Err(Error::ReplicaBehind {
                required: 1_000,
                ..
            })
        ),
        "{behind:?}"
    );
    log.set_unavailable(true);
    let refused = a.create_customer(id("ada"), Profile::default(), None).await;
    assert!(matches!(refused, Err(Error::Unavailable(_))), "{refused:?}");
    log.set_unavailable(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_is_not_a_command_is_skipped_by_every_replica_alike() {
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let a = replica(&log, &dirs.path().join("a")).await;
    let b = replica(&log, &dirs.path().join("b")).await;
    log.append("stray".into(), bytes::Bytes::from_static(b"hi"))
        .await
        .unwrap();
    let mut damaged = b"sgd\x01".to_vec();
    damaged.extend([200, 200, 200]);
    log.append("damaged".into(), damaged.into()).await.unwrap();
    a.create_customer(id("ada"), Profile::default(), None)
        .await
        .unwrap();
    caught_up(&b, &log).await;
    assert_eq!(customers(&b), customers(&a));
    let last = log.bounds().await.unwrap().last;
    assert_eq!(b.shared.store.log_position().unwrap(), Some(last));
    // Readiness follows the apply that caught up, a moment later.
    let mut ready = b.ready();
    tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|ready| *ready))
        .await
        .expect("a replica that skipped what it cannot read is ready")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_a_later_format_holds_the_replica_until_it_is_upgraded() {
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let a = replica(&log, &dirs.path().join("a")).await;
    caught_up(&a, &log).await;
    log.append("later".into(), bytes::Bytes::from_static(b"sgd\x07..."))
        .await
        .unwrap();
    let mut ready = a.ready();
    tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|ready| !ready))
        .await
        .expect("a replica that cannot apply the log is not ready")
        .unwrap();
    let refused = a
        .create_customer(id("ada"), Profile::default(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("upgrade segmentd"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_not_joined_to_a_log_that_holds_fewer_records_than_it_applied() {
    let dirs = tempfile::tempdir().unwrap();
    let dir = dirs.path().join("a");
    let log = Arc::new(MemoryLog::new());
    let a = replica(&log, &dir).await;
    for name in ["ada", "bob"] {
        a.create_customer(id(name), Profile::default(), None)
            .await
            .unwrap();
    }
    drop(a);
    // The stream deleted and made again: a new, shorter log.
    let made_again = Arc::new(MemoryLog::new());
    let refused = replica_with(&made_again, &dir, Duration::from_secs(3600))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("not the log this store was built from"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_past_the_end_of_the_log_is_answered_without_waiting_out_the_deadline() {
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let a = replica(&log, &dirs.path().join("a")).await;
    let answered = tokio::time::timeout(
        Duration::from_secs(10),
        a.wait_for(u64::MAX, Duration::from_secs(600)),
    )
    .await
    .expect("no wait for a position the log does not hold");
    assert!(
        matches!(answered, Err(Error::ReplicaBehind { .. })),
        "{answered:?}"
    );
}

/// A replica's shutdown flush takes no index image and leaves the store
/// open to the follower, which applies the log until the replica stops:
/// a write that arrives after the flush is applied, not skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_flushed_for_shutdown_goes_on_applying_the_log() {
    let dirs = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryLog::new());
    let a = replica(&log, &dirs.path().join("a")).await;
    let b = replica(&log, &dirs.path().join("b")).await;
    a.create_customer(id("ada"), Profile::default(), None)
        .await
        .unwrap();
    caught_up(&b, &log).await;
    b.flush().await.unwrap();
    assert!(!dirs
        .path()
        .join("b")
        .join(crate::engine::index::IMAGE_FILE)
        .exists());
    a.create_customer(id("bob"), Profile::default(), None)
        .await
        .unwrap();
    caught_up(&b, &log).await;
    assert_eq!(b.get_customer(&id("bob")).unwrap().id, id("bob"));
}
