//! Health and availability: a replica cut off from every NATS server keeps
//! serving reads and refuses writes until the servers return; a replica far
//! behind the log is NOT_SERVING until it has caught up.

use std::time::Duration;

use futures::future::join_all;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::calls::{assert_all_equal, populate, request_id, with_retries, Client};
use crate::nats::NatsCluster;
use crate::replica::Replica;

#[tokio::test]
async fn reads_go_on_while_every_nats_server_is_down() {
    let Some(mut nats) = NatsCluster::start().await else {
        return;
    };
    let replicas = Replica::start_all(&nats.urls(), 2).await;
    let clients = Client::of_each(&replicas, Duration::from_secs(15));
    let token = populate(&clients, 0, 20).await;
    let mut before = Vec::new();
    for client in &clients {
        before.push(client.clone().state(Some(&token)).await);
    }

    for node in 0..3 {
        nats.kill(node);
    }
    let names: Vec<String> = replicas
        .iter()
        .map(|replica| format!("replica {}", replica.addr))
        .collect();
    let mut during = Vec::new();
    for client in &clients {
        during.push(client.clone().state(Some(&token)).await);
    }
    assert_eq!(during, before, "reads without the log answer as before");
    assert_all_equal(&during, &names);

    // A write cannot be stored, and says so.
    let status = clients[0]
        .clone()
        .create("cut-off", 100, &request_id(100))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("retry"), "{status:?}");

    // Once the servers are back, writes are stored again (the one that
    // failed, retried, too) and read on the other replica.
    for node in 0..3 {
        nats.restart(node).await;
    }
    let token = with_retries(40, |_| {
        let mut client = clients[0].clone();
        async move { client.create("cut-off", 100, &request_id(100)).await }
    })
    .await
    .unwrap();
    clients[1]
        .clone()
        .get("cut-off", Some(&token))
        .await
        .unwrap();
}

/// Records the log holds before the late replica starts.
const BACKLOG: u64 = 1500;
/// The late replica's bound on its lag.
const MAX_LAG: u64 = 10;

#[tokio::test]
async fn a_replica_far_behind_is_not_serving_until_it_catches_up() {
    let Some(nats) = NatsCluster::start().await else {
        return;
    };
    // No snapshot, so that the late replica reads the whole log.
    let no_snapshots = ["--cluster-snapshot-interval", "1h"];
    let mut first = Replica::spawn(&nats.urls(), &no_snapshots);
    first.wait_serving().await;
    let client = Client::new(first.channel(Duration::from_secs(10)));
    let writers = (0..16).map(|worker| {
        let mut client = client.clone();
        async move {
            let mut token = String::new();
            for n in (worker..BACKLOG).step_by(16) {
                token = client
                    .create(&format!("c{n:05}"), n, &request_id(n))
                    .await
                    .unwrap();
            }
            token.parse::<u64>().unwrap()
        }
    });
    let last = join_all(writers).await.into_iter().max().unwrap();

    let max_lag = MAX_LAG.to_string();
    let mut late = Replica::spawn(
        &nats.urls(),
        &[
            no_snapshots[0],
            no_snapshots[1],
            "--cluster-max-lag",
            &max_lag,
        ],
    );
    // Until SERVING: each health check, and the applied position read
    // just after it.
    let mut seen = Vec::new();
    for _ in 0..3000 {
        let status = late.health().await;
        let applied = late.metric("segmentd_cluster_applied_position").await;
        seen.push((status, applied));
        if status == Some(ServingStatus::Serving) {
            break;
        }
        late.assert_running();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, applied) = *seen.last().unwrap();
    assert_eq!(status, Some(ServingStatus::Serving), "{seen:?}");
    assert!(
        applied.unwrap_or_default() as u64 + MAX_LAG >= last,
        "SERVING at position {applied:?} of {last}, more than {MAX_LAG} behind: {seen:?}"
    );
    // Seen NOT_SERVING after it had begun applying, and while it was still
    // more than the bound behind: not merely while its store opened.
    let behind = seen.iter().any(|(status, applied)| {
        *status == Some(ServingStatus::NotServing)
            && applied.is_some_and(|at| at > 0.0 && (at as u64) + MAX_LAG < last)
    });
    assert!(
        behind,
        "never NOT_SERVING while applying the backlog: {seen:?}"
    );
    let token = last.to_string();
    Client::new(late.channel(Duration::from_secs(10)))
        .get(&format!("c{:05}", BACKLOG - 1), Some(&token))
        .await
        .unwrap();
}
