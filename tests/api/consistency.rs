//! Consistency tokens in the embedded mode: every acknowledged write is
//! already visible, so writes carry no token and a read that sends one is
//! served at once; a token that is not one is refused.

use segmentd::grpc::consistency::TOKEN_HEADER;
use segmentd::grpc::pb;
use tonic::Code;

use crate::support::TestServer;

fn get(name: &str, token: &'static str) -> tonic::Request<pb::GetCustomerRequest> {
    let mut request = tonic::Request::new(pb::GetCustomerRequest { name: name.into() });
    request
        .metadata_mut()
        .insert(TOKEN_HEADER, token.parse().unwrap());
    request
}

#[tokio::test]
async fn the_embedded_mode_needs_no_token_and_refuses_a_malformed_one() {
    let server = TestServer::start().await;
    let mut client = server.customers().await;
    let created = client
        .create_customer(pb::CreateCustomerRequest {
            customer_id: "ada".into(),
            customer: Some(pb::Customer::default()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        created.metadata().get(TOKEN_HEADER).is_none(),
        "the embedded mode has no log to give a position in"
    );

    // A token from a cluster, far ahead of anything here, needs no wait.
    let read = client
        .get_customer(get("customers/ada", "999999"))
        .await
        .unwrap();
    assert_eq!(read.into_inner().name, "customers/ada");

    let refused = client
        .get_customer(get("customers/ada", "yesterday"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains(TOKEN_HEADER),
        "{}",
        refused.message()
    );
    server.stop().await.unwrap();
}
