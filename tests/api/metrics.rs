//! The metrics listener: the calls made show in a scrape, by method and
//! status code, with their latency, and so do the index, the store and the
//! build; calls over a connection's limit are shed and counted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use segmentd::grpc::pb;
use segmentd::grpc::pb::persona_service_client::PersonaServiceClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;

use crate::activity::{engagement, purchase, record};
use crate::customers::{create, full_customer};
use crate::support::TestServer;

/// The answer to `GET path` on the metrics listener: the status code and
/// the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// One scrape: every sample by its name and labels, as written.
pub struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    pub async fn of(addr: SocketAddr) -> Scrape {
        let (status, body) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        let samples = body
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').unwrap();
                (series.to_owned(), value.parse().unwrap())
            })
            .collect();
        Scrape(samples)
    }

    /// The value of `series`; fails the test when it is absent.
    pub fn get(&self, series: &str) -> f64 {
        *self
            .0
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in {:#?}", self.0.keys().collect::<Vec<_>>()))
    }

    /// The value of `metric` for `method` (`Service/Method` of
    /// `segmentd.v1`) of `call_type`, with the labels in `more` after the
    /// method's.
    fn of_method(&self, metric: &str, method: &str, call_type: &str, more: &str) -> f64 {
        self.get(&method_series(metric, method, call_type, more))
    }
}

/// The series of `metric` for a method; see [`Scrape::of_method`].
fn method_series(metric: &str, method: &str, call_type: &str, more: &str) -> String {
    let (service, method) = method.split_once('/').unwrap();
    format!(
        r#"{metric}{{grpc_service="segmentd.v1.{service}",grpc_method="{method}",grpc_type="{call_type}"{more}}}"#
    )
}

/// The labels of a status code, after a method's.
fn code(name: &str) -> String {
    format!(r#",grpc_code="{name}""#)
}

#[tokio::test]
async fn a_scrape_shows_the_calls_made_the_index_and_the_build() {
    let (server, metrics) = TestServer::start_with_metrics(|_| {}).await;
    create(&server, "ada", full_customer()).await.unwrap();
    // Customers who object to profiling are never exported: bob does not.
    create(&server, "bob", pb::Customer::default())
        .await
        .unwrap();
    record(
        &server,
        vec![
            purchase("p1", "ada", 10, 1_000),
            purchase("p2", "ada", 20, 2_000),
            purchase("p3", "bob", 30, 3_000),
        ],
        vec![engagement("v1", "bob", 5, pb::EngagementType::Visit)],
    )
    .await
    .unwrap();
    let mut customers = server.customers().await;
    for _ in 0..3 {
        let request = pb::GetCustomerRequest {
            name: "customers/ada".into(),
        };
        customers.get_customer(request).await.unwrap();
    }
    let missing = pb::GetCustomerRequest {
        name: "customers/nobody".into(),
    };
    let status = customers.get_customer(missing).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // A server stream, read to its end.
    let mut personas = PersonaServiceClient::new(server.channel().await);
    let mut stream = personas
        .export_persona_assignments(pb::ExportPersonaAssignmentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut exported = 0;
    while let Some(batch) = stream.message().await.unwrap() {
        exported += batch.assignments.len();
    }
    assert!(exported > 0);

    let scrape = Scrape::of(metrics).await;
    let get = |metric: &str, more: &str| {
        scrape.of_method(metric, "CustomerService/GetCustomer", "unary", more)
    };
    assert_eq!(get("grpc_server_started_total", ""), 4.0);
    assert_eq!(get("grpc_server_handled_total", &code("OK")), 3.0);
    assert_eq!(get("grpc_server_handled_total", &code("NotFound")), 1.0);
    assert_eq!(get("grpc_server_in_flight", ""), 0.0);
    assert_eq!(get("grpc_server_shed_total", ""), 0.0);
    let created = scrape.of_method(
        "grpc_server_handled_total",
        "CustomerService/CreateCustomer",
        "unary",
        &code("OK"),
    );
    assert_eq!(created, 2.0);
    let exported = scrape.of_method(
        "grpc_server_handled_total",
        "PersonaService/ExportPersonaAssignments",
        "server_stream",
        &code("OK"),
    );
    assert_eq!(exported, 1.0);

    // The histogram: sub-millisecond buckets, cumulative, ending in +Inf
    // with every call.
    let bucket = |le: &str| {
        get(
            "grpc_server_handling_seconds_bucket",
            &format!(r#",le="{le}""#),
        )
    };
    let bounds = [
        "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.01", "1", "10", "+Inf",
    ];
    let counts: Vec<f64> = bounds.iter().map(|le| bucket(le)).collect();
    assert!(
        counts.windows(2).all(|pair| pair[0] <= pair[1]),
        "{counts:?}"
    );
    assert_eq!(bucket("+Inf"), 4.0);
    assert_eq!(get("grpc_server_handling_seconds_count", ""), 4.0);
    assert!(get("grpc_server_handling_seconds_sum", "") > 0.0);

    // The index and the store.
    assert_eq!(scrape.get("segmentd_index_customers"), 2.0);
    assert_eq!(scrape.get("segmentd_index_purchases"), 3.0);
    assert_eq!(scrape.get("segmentd_index_engagements"), 1.0);
    assert!(scrape.get(r#"segmentd_index_bytes{part="purchases"}"#) > 0.0);
    assert_eq!(
        scrape.get(r#"segmentd_events_recorded_total{kind="purchase"}"#),
        3.0
    );
    assert_eq!(
        scrape.get(r#"segmentd_events_recorded_total{kind="engagement"}"#),
        1.0
    );
    assert!(scrape.get("segmentd_store_disk_bytes") > 0.0);
    assert!(scrape.get("segmentd_index_rebuild_seconds") >= 0.0);
    // Two creates and one RecordActivity waited for durability.
    let flushes = scrape.get("segmentd_group_commit_flushes_total");
    assert!(flushes >= 1.0);
    assert!(scrape.get("segmentd_group_commit_waits_total") >= 3.0);
    assert_eq!(
        scrape.get(r#"segmentd_group_commit_seconds_bucket{le="+Inf"}"#),
        flushes
    );

    // The build, and whether callers authenticate.
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        scrape.get(&format!(r#"segmentd_build_info{{version="{version}"}}"#)),
        1.0
    );
    assert_eq!(scrape.get("segmentd_authentication_enabled"), 0.0);
    assert_eq!(scrape.get("segmentd_ready"), 1.0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn only_metrics_is_served() {
    let (server, metrics) = TestServer::start_with_metrics(|_| {}).await;
    let (status, body) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE grpc_server_handled_total counter"),
        "{body}"
    );
    assert_eq!(http_get(metrics, "/").await.0, 404);
    assert_eq!(http_get(metrics, "/metrics/more").await.0, 404);
    server.stop().await.unwrap();
    // The listener stops with the server.
    let refused = tokio::net::TcpStream::connect(metrics).await;
    assert!(refused.is_err(), "the metrics listener outlived the server");
}

#[tokio::test]
async fn calls_over_a_connections_limit_are_shed_and_counted() {
    let (server, metrics) =
        TestServer::start_with_metrics(|config| config.concurrency_per_connection = 1).await;
    let busy_channel = server.channel().await;
    // An import holds its connection's one place until its stream ends.
    let (messages, stream) = tokio::sync::mpsc::channel::<pb::ImportCustomersRequest>(1);
    let mut importer =
        pb::customer_service_client::CustomerServiceClient::new(busy_channel.clone());
    let importing = tokio::spawn(async move {
        importer
            .import_customers(tokio_stream::wrappers::ReceiverStream::new(stream))
            .await
    });
    let import = |metric: &str, more: &str| {
        method_series(
            metric,
            "CustomerService/ImportCustomers",
            "client_stream",
            more,
        )
    };
    let in_flight = import("grpc_server_in_flight", "");
    for _ in 0..200 {
        if Scrape::of(metrics).await.0.get(&in_flight) == Some(&1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(Scrape::of(metrics).await.get(&in_flight), 1.0);

    let missing = || pb::GetCustomerRequest {
        name: "customers/nobody".into(),
    };
    let mut busy = pb::customer_service_client::CustomerServiceClient::new(busy_channel);
    let shed = busy.get_customer(missing()).await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    // Another connection has a place of its own.
    let mut other = server.customers().await;
    let status = other.get_customer(missing()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let scrape = Scrape::of(metrics).await;
    let get = |metric: &str, more: &str| {
        scrape.of_method(metric, "CustomerService/GetCustomer", "unary", more)
    };
    assert_eq!(get("grpc_server_shed_total", ""), 1.0);
    assert_eq!(
        get("grpc_server_handled_total", &code("ResourceExhausted")),
        1.0
    );

    // Once the import ends, its connection serves again.
    drop(messages);
    importing.await.unwrap().unwrap();
    let status = busy.get_customer(missing()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let scrape = Scrape::of(metrics).await;
    assert_eq!(scrape.get(&in_flight), 0.0);
    assert_eq!(
        scrape.get(&import("grpc_server_handled_total", &code("OK"))),
        1.0
    );
    server.stop().await.unwrap();
}
