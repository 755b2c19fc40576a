//! Consistency tokens: a read that carries a write's token, on any replica,
//! sees that write; a token the replica cannot reach in time, or cannot
//! read, is refused.

use std::time::Duration;

use segmentd::grpc::pb;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::calls::{purchase, request_id, with_token, Client};
use crate::nats::NatsCluster;
use crate::replica::Replica;

/// Write-then-read rounds: enough that a replica which merely happened to
/// have caught up cannot pass them all by luck.
const ROUNDS: u64 = 60;

#[tokio::test]
async fn a_read_with_a_writes_token_sees_it_on_another_replica() {
    let Some(nats) = NatsCluster::start().await else {
        return;
    };
    let replicas = Replica::start_all(&nats.urls(), 3).await;
    let clients = Client::of_each(&replicas, Duration::from_secs(10));

    for n in 0..ROUNDS {
        let mut writer = clients[n as usize % 3].clone();
        let mut reader = clients[(n as usize + 1) % 3].clone();
        let id = format!("ryw{n:03}");
        let token = writer.create(&id, n, &request_id(n)).await.unwrap();
        let read = reader.get(&id, Some(&token)).await;
        assert!(
            read.is_ok(),
            "round {n}: created through {}, read with token {token} through {}: {read:?}",
            replicas[n as usize % 3].addr,
            replicas[(n as usize + 1) % 3].addr,
        );

        // A purchase through the reader, then features through the writer.
        let bought = purchase(&format!("ryw-p{n:03}"), &id, 10, 500);
        let (token, _) = reader.record(vec![bought]).await.unwrap();
        let count = writer.purchase_count(&id, Some(&token)).await;
        assert_eq!(
            count, 1,
            "round {n}: the purchase recorded with token {token}"
        );
    }
}

#[tokio::test]
async fn a_token_out_of_reach_or_malformed_is_refused() {
    let Some(nats) = NatsCluster::start().await else {
        return;
    };
    let replicas = Replica::start_all(&nats.urls(), 1).await;
    let mut client = Client::new(replicas[0].channel(Duration::from_secs(10)));
    let token = client.create("early", 0, &request_id(0)).await.unwrap();
    let applied: u64 = token
        .parse()
        .expect("tokens are positions, as the replicas write them");

    // A position far past the log's end, with a short deadline.
    let required = applied + 1_000_000;
    let mut request = with_token(
        pb::GetCustomerRequest {
            name: "customers/early".into(),
        },
        Some(&required.to_string()),
    );
    request.set_timeout(Duration::from_millis(300));
    let status = client.customers.get_customer(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo: {status:?}"));
    assert_eq!(info.reason, "REPLICA_BEHIND", "{info:?}");
    // The domain of every ErrorInfo segmentd sends.
    assert_eq!(
        info.domain,
        segmentd::grpc::status::ERROR_DOMAIN,
        "{info:?}"
    );
    assert_eq!(info.metadata["required"], required.to_string(), "{info:?}");
    let behind: u64 = info.metadata["applied"].parse().unwrap();
    assert!(behind >= applied && behind < required, "{info:?}");

    for malformed in ["not-a-position", "-1", "1.5"] {
        let request = with_token(
            pb::GetCustomerRequest {
                name: "customers/early".into(),
            },
            Some(malformed),
        );
        let status = client.customers.get_customer(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "token {malformed:?}: {status:?}"
        );
    }

    // The replica still answers a read with its own write's token.
    client.get("early", Some(&token)).await.unwrap();
}
