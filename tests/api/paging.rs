//! Page tokens are the server's own: a token changed in any bit is refused,
//! and a token outlives a restart of the server.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use segmentd::grpc::pb;
use tonic::Code;

use crate::customers::{create, violated_fields};
use crate::support::{config, TestServer};

/// The first page of one customer, and the token of the next.
fn first_page(page_token: String) -> pb::ListCustomersRequest {
    pb::ListCustomersRequest {
        page_size: 1,
        page_token,
        ..Default::default()
    }
}

#[tokio::test]
async fn every_bit_flip_of_a_token_is_refused() {
    let server = TestServer::start().await;
    for id in ["a", "b"] {
        create(&server, id, pb::Customer::default()).await.unwrap();
    }
    let mut client = server.customers().await;
    let token = client
        .list_customers(first_page(String::new()))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let status = client
            .list_customers(first_page(URL_SAFE_NO_PAD.encode(flipped)))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "bit {bit}: {status:?}"
        );
        assert_eq!(violated_fields(&status), ["page_token"], "bit {bit}");
    }
    // The token as it came is accepted, and pages on.
    let next = client
        .list_customers(first_page(token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.customers[0].name, "customers/b");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_token_outlives_a_restart_but_not_another_store() {
    let server = TestServer::start().await;
    for id in ["a", "b"] {
        create(&server, id, pb::Customer::default()).await.unwrap();
    }
    let token = server
        .customers()
        .await
        .list_customers(first_page(String::new()))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let temp = server.stop_keeping_data().await.unwrap();

    let restarted = TestServer::spawn(config(temp.path())).await;
    restarted.wait_serving().await;
    let next = restarted
        .customers()
        .await
        .list_customers(first_page(token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.customers[0].name, "customers/b");
    restarted.stop().await.unwrap();

    // Another store has a key of its own.
    let other = TestServer::start().await;
    for id in ["a", "b"] {
        create(&other, id, pb::Customer::default()).await.unwrap();
    }
    let status = other
        .customers()
        .await
        .list_customers(first_page(token))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["page_token"]);
    other.stop().await.unwrap();
}
