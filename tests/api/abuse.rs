//! Abuse with nothing but network access: request messages announced but
//! never sent, and more request bytes than the server will buffer. Memory
//! stays bounded, the half-sent calls end with DEADLINE_EXCEEDED after the
//! message timeout, and other callers are served meanwhile.
//!
//! The attacks speak raw HTTP/2, as an attacker would, to the real server;
//! the server runs in the test process, so its memory is this process's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use segmentd::grpc::pb;
use segmentd::server::ServerConfig;
use tokio::net::TcpStream;
use tonic::Code;

use crate::support::{self, TestServer};

/// The message size limit of these servers: large enough that the attack
/// is not simply refused by size.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// How long a begun message may take to arrive, on these servers.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Streams per connection, on these servers and in the attack.
const STREAMS: u32 = 100;

/// A test server's configuration, with room for the attack.
fn attack_config(data_dir: &std::path::Path) -> ServerConfig {
    let mut config = support::config(data_dir);
    config.max_message_bytes = MAX_MESSAGE_BYTES;
    config.max_concurrent_streams = STREAMS;
    config.concurrency_per_connection = STREAMS as usize;
    config.request_limits.message_timeout = MESSAGE_TIMEOUT;
    config
}

/// A server with `config` on a fresh directory, SERVING.
async fn start(
    config: impl FnOnce(&std::path::Path) -> ServerConfig,
) -> (TestServer, tempfile::TempDir) {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::spawn(config(temp.path())).await;
    server.wait_serving().await;
    (server, temp)
}

/// A raw HTTP/2 connection to `addr`.
async fn connect(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    client
}

/// The gRPC prefix of an uncompressed message of `len` bytes.
fn prefix(len: u32) -> Vec<u8> {
    let mut prefix = vec![0];
    prefix.extend_from_slice(&len.to_be_bytes());
    prefix
}

/// Opens a unary GetCustomer call and sends `data`, leaving the request open.
async fn open_call(
    client: &mut SendRequest<Bytes>,
    addr: SocketAddr,
    data: Vec<u8>,
) -> (h2::client::ResponseFuture, SendStream<Bytes>) {
    let ready = client.clone().ready().await.unwrap();
    *client = ready;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/segmentd.v1.CustomerService/GetCustomer"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(Bytes::from(data), false).unwrap();
    (response, send)
}

/// The gRPC status code of a response: from its headers when it has no
/// body, else from its trailers.
async fn grpc_status(response: h2::client::ResponseFuture) -> Option<i32> {
    let response = response.await.ok()?;
    let from = |headers: &http::HeaderMap| {
        headers
            .get("grpc-status")
            .and_then(|code| code.to_str().ok())
            .and_then(|code| code.parse().ok())
    };
    if let Some(code) = from(response.headers()) {
        return Some(code);
    }
    let mut body: RecvStream = response.into_body();
    while let Some(chunk) = body.data().await {
        let _ = chunk.ok()?;
    }
    from(&body.trailers().await.ok()??)
}

/// The gRPC status codes of `calls`, whose requests stay open meanwhile;
/// fails the test if they are not all answered soon after the message
/// timeout.
async fn codes_of(calls: Vec<(h2::client::ResponseFuture, SendStream<Bytes>)>) -> Vec<Option<i32>> {
    let (responses, _open_requests): (Vec<_>, Vec<_>) = calls.into_iter().unzip();
    tokio::time::timeout(
        MESSAGE_TIMEOUT + Duration::from_secs(10),
        futures::future::join_all(responses.into_iter().map(grpc_status)),
    )
    .await
    .expect("calls still open long after the message timeout")
}

/// A GetCustomer on a connection of its own answers NOT_FOUND.
async fn served(server: &TestServer) {
    let mut customers = server.customers().await;
    let request = pb::GetCustomerRequest {
        name: "customers/nobody".into(),
    };
    let status = tokio::time::timeout(Duration::from_secs(5), customers.get_customer(request))
        .await
        .expect("a normal call was not answered within 5 s during the attack")
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

/// Finding 1: on each stream of five connections, the prefix of a 4 MiB
/// message and one byte of it. tonic alone reserved the announced 4 MiB for
/// each; the gate holds what arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_announced_but_not_sent_hold_no_memory_and_time_out() {
    let (server, _temp) = start(attack_config).await;
    served(&server).await;
    let before = support::resident_bytes();

    let started = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..5 {
        let mut client = connect(server.addr).await;
        for _ in 0..STREAMS {
            let mut data = prefix(MAX_MESSAGE_BYTES as u32);
            data.push(0x0a);
            calls.push(open_call(&mut client, server.addr, data).await);
        }
    }
    // Let the server take in every stream, and serve others meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..10 {
        served(&server).await;
    }
    let during = support::resident_bytes();
    let grown = during.saturating_sub(before);
    eprintln!(
        "resident before {} MiB, during the attack {} MiB ({} streams announcing {} MiB each)",
        before >> 20,
        during >> 20,
        calls.len(),
        MAX_MESSAGE_BYTES >> 20
    );
    // Without the gate it grew by about 850 MiB; other tests of this
    // process may allocate meanwhile, hence the margin.
    assert!(
        grown < 256 << 20,
        "resident memory grew by {} MiB under the attack",
        grown >> 20
    );

    // Each half-sent call ends with DEADLINE_EXCEEDED once its message is
    // overdue, and not before.
    let codes = codes_of(calls).await;
    assert!(started.elapsed() >= MESSAGE_TIMEOUT);
    for code in codes {
        assert_eq!(code, Some(Code::DeadlineExceeded as i32));
    }
    served(&server).await;
    server.stop().await.unwrap();
}

/// Messages that arrive in full but slowly, on many streams: what is
/// buffered is bounded by the budget, and a message that cannot get more
/// of it is RESOURCE_EXHAUSTED, while small calls pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_over_the_budget_are_resource_exhausted() {
    const BUDGET: usize = 2 * 1024 * 1024;
    let (server, _temp) = start(|dir| {
        let mut config = attack_config(dir);
        config.request_limits.max_buffered_request_bytes = BUDGET;
        config
    })
    .await;

    // Four messages of 1 MiB, each sent but for its last byte: together
    // more than the budget.
    let mut client = connect(server.addr).await;
    let mut calls = Vec::new();
    for _ in 0..4 {
        let len = 1024 * 1024;
        let mut data = prefix(len);
        data.extend(std::iter::repeat_n(0, len as usize - 1));
        calls.push(open_call(&mut client, server.addr, data).await);
    }
    let codes = codes_of(calls).await;
    let exhausted = codes
        .iter()
        .filter(|code| **code == Some(Code::ResourceExhausted as i32))
        .count();
    assert!(exhausted >= 2, "{codes:?}");
    // The others held their share until their message timed out.
    for code in codes {
        assert!(
            code == Some(Code::ResourceExhausted as i32)
                || code == Some(Code::DeadlineExceeded as i32),
            "{code:?}"
        );
    }
    served(&server).await;
    server.stop().await.unwrap();
}

/// A message split over many DATA frames and sent slowly, but within the
/// timeout, is answered as if it had come at once.
#[tokio::test]
async fn a_message_sent_in_pieces_is_served() {
    let (server, _temp) = start(attack_config).await;
    let request = b"\x0a\x0fcustomers/piece";
    let mut message = prefix(request.len() as u32);
    message.extend_from_slice(request);

    let mut client = connect(server.addr).await;
    let (response, mut send) = open_call(&mut client, server.addr, message[..3].to_vec()).await;
    for piece in message[3..].chunks(4) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        send.send_data(Bytes::copy_from_slice(piece), false)
            .unwrap();
    }
    send.send_data(Bytes::new(), true).unwrap();
    assert_eq!(grpc_status(response).await, Some(Code::NotFound as i32));
    server.stop().await.unwrap();
}

/// A request that ends in the middle of its message is the client's fault:
/// INVALID_ARGUMENT, not INTERNAL.
#[tokio::test]
async fn a_request_cut_in_the_middle_of_its_message_is_invalid_argument() {
    let (server, _temp) = start(attack_config).await;
    let mut client = connect(server.addr).await;
    let mut data = prefix(100);
    data.extend_from_slice(b"\x0a\x05custo");
    let (response, mut send) = open_call(&mut client, server.addr, data).await;
    send.send_data(Bytes::new(), true).unwrap();
    assert_eq!(
        grpc_status(response).await,
        Some(Code::InvalidArgument as i32)
    );
    served(&server).await;
    server.stop().await.unwrap();
}
