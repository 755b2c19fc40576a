//! A prediction model fitted through one replica is the model of every
//! replica, at the same place of the log, and so are the forecasts; a
//! replica that joins on an empty data directory gets it too.

use std::collections::BTreeSet;
use std::time::Duration;

use prost_types::Timestamp;
use segmentd::grpc::pb;
use segmentd::grpc::pb::prediction_service_client::PredictionServiceClient;

use crate::calls::{token_of, with_token, Client};
use crate::nats::NatsCluster;
use crate::replica::Replica;

/// The CDNOW sample: real purchases, which the models fit.
const SAMPLE: &str = include_str!("../data/cdnow/CDNOW_sample.txt");
/// 1997-09-30T23:59:59Z, the end of the sample's calibration period.
const EVALUATION_TIME: i64 = 875_663_999;

/// Customer `id`'s features through `client`, once `token` is applied.
async fn features(client: &mut Client, id: &str, token: &str) -> pb::CustomerFeatures {
    client
        .customers
        .get_customer_features(with_token(
            pb::GetCustomerFeaturesRequest {
                name: format!("customers/{id}"),
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

/// Loads the sample through `client`; the last write's token.
async fn load(client: &mut Client) -> String {
    let format = time::macros::format_description!("[year][month][day]");
    let mut ids = BTreeSet::new();
    let mut purchases = Vec::new();
    for (line, text) in SAMPLE.lines().enumerate() {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let day = time::Date::parse(fields[2], &format).unwrap();
        let dollars: f64 = fields[4].parse().unwrap();
        ids.insert(fields[1].to_owned());
        purchases.push(pb::Purchase {
            purchase_id: format!("line-{line}"),
            customer: format!("customers/cdnow-{}", fields[1]),
            occurred_at: Some(Timestamp {
                seconds: day.midnight().assume_utc().unix_timestamp(),
                nanos: 0,
            }),
            amount: Some(pb::Money {
                currency_code: "USD".into(),
                minor_units: (dollars * 100.0).round() as i64,
            }),
            ..Default::default()
        });
    }
    let customers: Vec<pb::Customer> = ids
        .iter()
        .map(|id| pb::Customer {
            name: format!("customers/cdnow-{id}"),
            ..Default::default()
        })
        .collect();
    let messages: Vec<pb::ImportCustomersRequest> = customers
        .chunks(1000)
        .map(|chunk| pb::ImportCustomersRequest {
            customers: chunk.to_vec(),
        })
        .collect();
    client
        .customers
        .import_customers(tokio_stream::iter(messages))
        .await
        .unwrap();
    let (token, recorded) = client.record(purchases).await.unwrap();
    assert_eq!(recorded.accepted_count, 6_919);
    token
}

#[tokio::test]
async fn every_replica_predicts_with_the_model_fitted_through_one() {
    let Some(nats) = NatsCluster::start().await else {
        return;
    };
    // No background fit within the test, not even at a start: the model
    // fitted as of 1997 reads fewer purchases than there are, which would
    // make one due.
    let flags = [
        "--prediction-check-every",
        "1h",
        "--prediction-refit-change",
        "10",
        "--prediction-refit-after",
        "1000000h",
    ];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::spawn(&nats.urls(), &flags));
    }
    for replica in &mut replicas {
        replica.wait_serving().await;
    }
    let mut clients = Client::of_each(&replicas, Duration::from_secs(30));
    // Recorded through one replica, fitted through another once it has
    // applied the purchases.
    let recorded = load(&mut clients[1]).await;
    let response = PredictionServiceClient::new(replicas[0].channel(Duration::from_secs(30)))
        .refit_prediction_model(with_token(
            pb::RefitPredictionModelRequest {
                evaluation_time: Some(Timestamp {
                    seconds: EVALUATION_TIME,
                    nanos: 0,
                }),
            },
            Some(&recorded),
        ))
        .await
        .unwrap();
    let token = token_of(&response);
    let fitted = response.into_inner();
    assert_eq!(fitted.customers, 2_357);
    let r = fitted.bgnbd.unwrap().r;
    assert!((r / 0.2426 - 1.0).abs() < 0.005, "r = {r}");
    let forecasts = features(&mut clients[0], "cdnow-0001", &token)
        .await
        .predictions;
    assert!(forecasts.is_some());
    for (replica, client) in replicas.iter().zip(&mut clients).skip(1) {
        let stored = PredictionServiceClient::new(replica.channel(Duration::from_secs(10)))
            .get_prediction_model(with_token(pb::GetPredictionModelRequest {}, Some(&token)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stored, fitted, "{}", replica.addr);
        assert_eq!(
            features(client, "cdnow-0001", &token).await.predictions,
            forecasts
        );
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
        features(&mut joined, "cdnow-0001", &token)
            .await
            .predictions,
        forecasts
    );
}
