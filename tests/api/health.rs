//! Health transitions, restarts and the shutdown drain.

use std::time::Duration;

use segmentd::grpc::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::customers::{create, full_customer};
use crate::support::{config, TestServer};

const CUSTOMER_SERVICE: &str = "segmentd.v1.CustomerService";

#[tokio::test]
async fn not_serving_until_the_store_opens() {
    let data = tempfile::tempdir().unwrap();
    // Another holder of the store's lock keeps the server from opening it.
    let holder = sled::open(data.path()).unwrap();
    let server = TestServer::spawn(config(data.path())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.health("").await, ServingStatus::NotServing);
    assert_eq!(
        server.health(CUSTOMER_SERVICE).await,
        ServingStatus::NotServing
    );
    let status = create(&server, "early", full_customer()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(segmentd::client::healthcheck::check(
        &server.addr.to_string(),
        "",
        Duration::from_secs(3)
    )
    .await
    .map(|serving| !serving)
    .unwrap());

    drop(holder);
    server.wait_serving().await;
    assert_eq!(
        server.health(CUSTOMER_SERVICE).await,
        ServingStatus::Serving
    );
    assert!(segmentd::client::healthcheck::check(
        &server.addr.to_string(),
        "",
        Duration::from_secs(3)
    )
    .await
    .unwrap());
    create(&server, "early", full_customer()).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn data_survives_a_restart() {
    let server = TestServer::start().await;
    let created = create(&server, "durable-1", full_customer()).await.unwrap();
    let data_dir = server.data_dir.clone();
    let _keep = server.stop_keeping_data().await;

    let restarted = TestServer::spawn(config(&data_dir)).await;
    restarted.wait_serving().await;
    let fetched = restarted
        .customers()
        .await
        .get_customer(pb::GetCustomerRequest {
            name: "customers/durable-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        fetched, created,
        "same fields, times and etag after a restart"
    );
    restarted.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_reports_not_serving_then_drains_an_open_stream() {
    let mut server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut watch = health.watch(request).await.unwrap().into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    // An import whose stream the client never closes.
    let (messages, stream) = mpsc::channel(4);
    let mut client = server.customers().await;
    let import =
        tokio::spawn(async move { client.import_customers(ReceiverStream::new(stream)).await });
    let first = pb::ImportCustomersRequest {
        customers: vec![pb::Customer {
            name: "customers/in-flight".into(),
            ..full_customer()
        }],
    };
    messages.send(first).await.unwrap();
    let mut reader = server.customers().await;
    let applied = async {
        loop {
            let request = pb::GetCustomerRequest {
                name: "customers/in-flight".into(),
            };
            if reader.get_customer(request).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), applied)
        .await
        .unwrap();

    server.begin_shutdown();
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(
        next.status(),
        ServingStatus::NotServing,
        "NOT_SERVING is reported before the drain"
    );

    // The open stream does not hold the exit past the grace period, and the
    // exit is clean.
    let data_dir = server.data_dir.clone();
    let _keep = server.stop_keeping_data().await;
    assert!(
        import.await.unwrap().is_err(),
        "the unfinished import was cut off"
    );
    drop(messages);

    // What was applied before the shutdown was flushed.
    let restarted = TestServer::spawn(config(&data_dir)).await;
    restarted.wait_serving().await;
    let request = pb::GetCustomerRequest {
        name: "customers/in-flight".into(),
    };
    restarted
        .customers()
        .await
        .get_customer(request)
        .await
        .unwrap();
    restarted.stop().await.unwrap();
}

/// Every file under `dir`, directories included, with its permission bits.
fn modes(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::metadata(&path).unwrap();
        found.push((path.clone(), metadata.permissions().mode() & 0o777));
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
    }
    found
}

#[tokio::test]
async fn the_served_data_is_readable_by_the_service_user_only() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("db");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_segmentd"))
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(&data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let channel = async {
        for _ in 0..200 {
            if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
            {
                return channel;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not listen on {addr}");
    }
    .await;
    let mut health = HealthClient::new(channel.clone());
    for _ in 0..200 {
        let status = health
            .check(HealthCheckRequest {
                service: CUSTOMER_SERVICE.into(),
            })
            .await
            .map(|response| response.into_inner().status());
        if status.is_ok_and(|status| status == ServingStatus::Serving) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut customers = pb::customer_service_client::CustomerServiceClient::new(channel);
    customers
        .create_customer(pb::CreateCustomerRequest {
            customer_id: "private".into(),
            customer: Some(full_customer()),
            ..Default::default()
        })
        .await
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();

    let found = modes(&data_dir);
    assert!(found.len() > 2, "{found:?}");
    let open: Vec<_> = found.iter().filter(|(_, mode)| mode & 0o077 != 0).collect();
    assert!(open.is_empty(), "readable by others: {open:?}");
}
