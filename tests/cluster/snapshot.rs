//! A replica on an empty data directory joins from the published snapshot
//! and then holds what the others hold: a new replica, and an old one whose
//! data was lost.

use std::time::Duration;

use crate::calls::{assert_all_equal, populate, Client};
use crate::nats::NatsCluster;
use crate::replica::Replica;

/// Waits (at most 30 s) until one of `replicas` has published a snapshot.
async fn wait_for_a_snapshot(replicas: &[Replica]) {
    for _ in 0..300 {
        for replica in replicas {
            let published = replica
                .metric("segmentd_cluster_snapshots_published_total")
                .await;
            if published.is_some_and(|count| count > 0.0) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no replica published a snapshot in 30 s");
}

/// Fails the test unless `joined` started from a snapshot and now holds,
/// once it has applied `token`, what `other` holds.
async fn assert_joined_and_agrees(joined: &Replica, other: &Replica, token: &str) {
    let position = joined
        .metric("segmentd_cluster_joined_from_snapshot_position")
        .await
        .unwrap_or_default();
    assert!(
        position > 0.0,
        "replica {} did not join from a snapshot (position {position})",
        joined.addr
    );
    let timeout = Duration::from_secs(10);
    let states = [
        Client::new(other.channel(timeout)).state(Some(token)).await,
        Client::new(joined.channel(timeout))
            .state(Some(token))
            .await,
    ];
    assert_all_equal(
        &states,
        &[
            format!("replica {}", other.addr),
            format!("joined replica {}", joined.addr),
        ],
    );
}

#[tokio::test]
async fn a_replica_on_an_empty_data_directory_joins_from_the_snapshot() {
    let Some(nats) = NatsCluster::start().await else {
        return;
    };
    let mut replicas = Replica::start_all(&nats.urls(), 3).await;
    let clients = Client::of_each(&replicas, Duration::from_secs(10));
    populate(&clients, 0, 40).await;
    wait_for_a_snapshot(&replicas).await;
    // Records after the snapshot, which the joining replica reads from the
    // log.
    let token = populate(&clients, 40, 20).await;

    let mut fourth = Replica::spawn(&nats.urls(), &[]);
    fourth.wait_serving().await;
    assert_joined_and_agrees(&fourth, &replicas[0], &token).await;

    // A replica whose data directory was lost joins the same way.
    let token = populate(&clients, 60, 10).await;
    replicas[2].restart_empty();
    replicas[2].wait_serving().await;
    assert_joined_and_agrees(&replicas[2], &replicas[0], &token).await;
}
