//! A prediction model fitted through one replica is the model of every
//! replica, at the same place of the log, and so are the forecasts; a
//! replica that joins on an empty data directory gets it too.

use std::time::Duration;

use prost_types::Timestamp;
use segmentd::grpc::pb;
use segmentd::grpc::pb::prediction_service_client::PredictionServiceClient;

use crate::calls::{purchase, request_id, token_of, with_token, Client};
use crate::nats::NatsCluster;
use crate::replica::Replica;

/// 2025-02-04T00:00:00Z: after every purchase of the test.
const EVALUATION_TIME: i64 = 1_704_067_200 + 400 * 86_400;

/// Customer `n`'s features through `client`, once `token` is applied.
async fn features(client: &mut Client, n: u64, token: &str) -> pb::CustomerFeatures {
    client
        .customers
        .get_customer_features(with_token(
            pb::GetCustomerFeaturesRequest {
                name: format!("customers/p{n:02}"),
                evaluation_time: Some(Timestamp {
                    seconds: EVALUATION_TIME,
                    nanos: 0,
                }),
            },
            Some(token),
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn every_replica_predicts_with_the_model_fitted_through_one() {
    let Some(nats) = NatsCluster::start().await else {
        return;
    };
    // No background fit within the test: the fit is asked for.
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::spawn(
            &nats.urls(),
            &["--prediction-check-every", "1h"],
        ));
    }
    for replica in &mut replicas {
        replica.wait_serving().await;
    }
    let mut clients = Client::of_each(&replicas, Duration::from_secs(10));
    // Forty customers: some buy once, some steadily, some stop.
    let mut purchases = Vec::new();
    for n in 0..40u64 {
        clients[0]
            .create(&format!("p{n:02}"), n, &request_id(n))
            .await
            .unwrap();
        let (count, gap) = (n % 6 + 1, 5 + n as i64 % 7 * 9);
        let start = n as i64 % 50;
        let stop = if n % 3 == 0 { 150 } else { 390 };
        for k in 0..count as i64 {
            let day = (start + k * gap).min(stop);
            purchases.push(purchase(
                &format!("p{n:02}-{k}"),
                &format!("p{n:02}"),
                day,
                1_000 + 150 * k,
            ));
        }
    }
    clients[1].record(purchases).await.unwrap();
    let response = PredictionServiceClient::new(replicas[0].channel(Duration::from_secs(30)))
        .refit_prediction_model(pb::RefitPredictionModelRequest {
            evaluation_time: Some(Timestamp {
                seconds: EVALUATION_TIME,
                nanos: 0,
            }),
        })
        .await
        .unwrap();
    let token = token_of(&response);
    let fitted = response.into_inner();
    assert_eq!(fitted.customers, 40);
    let forecasts = features(&mut clients[0], 7, &token).await.predictions;
    assert!(forecasts.is_some());
    for (replica, client) in replicas.iter().zip(&mut clients).skip(1) {
        let stored = PredictionServiceClient::new(replica.channel(Duration::from_secs(10)))
            .get_prediction_model(with_token(pb::GetPredictionModelRequest {}, Some(&token)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stored, fitted, "{}", replica.addr);
        assert_eq!(features(client, 7, &token).await.predictions, forecasts);
    }

    // A replica that lost its data joins with the model.
    replicas[2].restart_empty();
    replicas[2].wait_serving().await;
    let stored = PredictionServiceClient::new(replicas[2].channel(Duration::from_secs(10)))
        .get_prediction_model(with_token(pb::GetPredictionModelRequest {}, Some(&token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored, fitted);
    let mut joined = Client::new(replicas[2].channel(Duration::from_secs(10)));
    assert_eq!(
        features(&mut joined, 7, &token).await.predictions,
        forecasts
    );
}
