//! Requests whose bytes are not a message of their type: the client's
//! fault, so INVALID_ARGUMENT, never INTERNAL; and the server lives on.

use http::uri::PathAndQuery;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::support::{RawCodec, TestServer};

/// `bytes` sent as the request of `method`.
async fn call(server: &TestServer, method: &'static str, bytes: Vec<u8>) -> Status {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(bytes),
        PathAndQuery::from_static(method),
        RawCodec,
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn bytes_that_are_no_message_are_invalid_argument() {
    let server = TestServer::start().await;
    const GET: &str = "/segmentd.v1.CustomerService/GetCustomer";
    for (what, bytes) in [
        // Field 1 (name), a string of two bytes that are not UTF-8.
        ("a string that is not UTF-8", vec![0x0a, 0x02, 0xff, 0xfe]),
        // Field 1 with a length whose varint never ends.
        ("a broken varint", vec![0x0a, 0xff, 0xff, 0xff]),
        // Field 1 longer than the message.
        ("a length past the end", vec![0x0a, 0x7f, b'x']),
    ] {
        let status = call(&server, GET, bytes).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().contains("decode"),
            "{what}: {}",
            status.message()
        );
        let info = status.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(
            (info.domain.as_str(), info.reason.as_str()),
            ("segmentd", "MALFORMED_MESSAGE")
        );
    }
    // A client stream with such a message is refused the same way.
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let garbage = vec![0x0a, 0x02, 0xff, 0xfe];
    let status = grpc
        .client_streaming(
            tonic::Request::new(tokio_stream::iter(vec![garbage])),
            PathAndQuery::from_static("/segmentd.v1.CustomerService/ImportCustomers"),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "MALFORMED_MESSAGE");

    // The server lives on.
    let found = call(&server, GET, b"\x0a\x0ecustomers/none".to_vec()).await;
    assert_eq!(found.code(), Code::NotFound, "{found:?}");
    server.stop().await.unwrap();
}
