//! Starts the real server on 127.0.0.1:0 for a test, and stops it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::{Buf as _, BufMut as _};
use segmentd::domain::CurrencyCode;
use segmentd::engine::EngineSettings;
use segmentd::grpc::pb;
use segmentd::grpc::pb::customer_service_client::CustomerServiceClient;
use segmentd::grpc::ApiLimits;
use segmentd::server::{self, RequestLimits, ServerConfig};
use segmentd::store::{Durability, StoreOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The message size limit of test servers: small, so that the limit is cheap to hit.
pub const TEST_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A configuration for a test server on `data_dir`.
pub fn config(data_dir: &Path) -> ServerConfig {
    ServerConfig {
        store: StoreOptions {
            path: data_dir.to_path_buf(),
            cache_capacity_bytes: 16 * 1024 * 1024,
            durability: Durability::Durable,
            compress: false,
        },
        engine: EngineSettings {
            reporting_currency: CurrencyCode::parse("USD").unwrap(),
            thresholds: Default::default(),
            watch: Default::default(),
            predictions: Default::default(),
            index_image: true,
        },
        limits: ApiLimits {
            max_page_size: 1000,
            max_batch_size: 1000,
            max_events_per_batch: 10_000,
        },
        max_message_bytes: TEST_MAX_MESSAGE_BYTES,
        concurrency_per_connection: 64,
        max_concurrent_streams: 64,
        keepalive_interval: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(2),
        auth: Default::default(),
        backup: Default::default(),
        transport: Default::default(),
        request_limits: RequestLimits {
            max_buffered_request_bytes: 64 * 1024 * 1024,
            message_timeout: Duration::from_secs(10),
            stream_window_bytes: 1024 * 1024,
            connection_window_bytes: 1024 * 1024,
        },
        cluster: None,
    }
}

/// A running server and the data directory it owns.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Keeps a temporary data directory alive.
    _temp: Option<tempfile::TempDir>,
    /// Starts the shutdown.
    stop: Option<oneshot::Sender<()>>,
    /// The server's `run`.
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// A server on a fresh data directory, once it is SERVING.
    pub async fn start() -> TestServer {
        let temp = tempfile::tempdir().unwrap();
        let mut server = Self::spawn(config(temp.path())).await;
        server._temp = Some(temp);
        server.wait_serving().await;
        server
    }

    /// Keeps `temp`, its data directory, until the server is stopped.
    pub fn keep(&mut self, temp: tempfile::TempDir) {
        self._temp = Some(temp);
    }

    /// A server with `config`, not yet necessarily SERVING.
    pub async fn spawn(config: ServerConfig) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::spawn_on(server::Listeners::api(listener), config)
    }

    /// A server on a fresh data directory, with a metrics listener and
    /// `configure`d, once it is SERVING; and the metrics listener's address.
    pub async fn start_with_metrics(
        configure: impl FnOnce(&mut ServerConfig),
    ) -> (TestServer, SocketAddr) {
        let temp = tempfile::tempdir().unwrap();
        let mut config = config(temp.path());
        configure(&mut config);
        let (mut server, metrics_addr) = Self::spawn_with_metrics(config).await;
        server._temp = Some(temp);
        (server, metrics_addr)
    }

    /// A server with `config` and a metrics listener, once it is SERVING;
    /// and the metrics listener's address.
    pub async fn spawn_with_metrics(config: ServerConfig) -> (TestServer, SocketAddr) {
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        let mut listeners = server::Listeners::api(api);
        listeners.metrics = Some(metrics);
        let server = Self::spawn_on(listeners, config);
        server.wait_serving().await;
        (server, metrics_addr)
    }

    /// A server on `listeners` with `config`, not yet necessarily SERVING.
    pub fn spawn_on(listeners: server::Listeners, config: ServerConfig) -> TestServer {
        let addr = listeners.api.local_addr().unwrap();
        let data_dir = config.store.path.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(listeners, config, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            data_dir,
            _temp: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A new connection.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A CustomerService client on a new connection.
    pub async fn customers(&self) -> CustomerServiceClient<Channel> {
        CustomerServiceClient::new(self.channel().await)
    }

    /// Every customer the server holds, in name order: ListCustomers,
    /// page after page.
    pub async fn all_customers(&self) -> Vec<segmentd::grpc::pb::Customer> {
        let mut client = self.customers().await;
        let mut customers = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_customers(segmentd::grpc::pb::ListCustomersRequest {
                    // Pages of full profiles stay under the test servers'
                    // message size limit.
                    page_size: 100,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            customers.extend(page.customers);
            if page.next_page_token.is_empty() {
                return customers;
            }
            page_token = page.next_page_token;
        }
    }

    /// The health status of `service`.
    pub async fn health(&self, service: &str) -> ServingStatus {
        let mut client = HealthClient::new(self.channel().await);
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        client.check(request).await.unwrap().into_inner().status()
    }

    /// Waits (for at most 30 s) until the server reports SERVING.
    pub async fn wait_serving(&self) {
        for _ in 0..600 {
            if self.health("").await == ServingStatus::Serving {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server at {} never reported SERVING", self.addr);
    }

    /// Starts the shutdown, as SIGTERM would.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and returns what `run` returned; fails the test if that
    /// takes more than 30 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("server did not stop within 30 s")
            .unwrap()
    }

    /// Stops the server but keeps its data directory, for a restart.
    pub async fn stop_keeping_data(mut self) -> Option<tempfile::TempDir> {
        let temp = self._temp.take();
        self.stop().await.unwrap();
        temp
    }
}

/// Sends `authorization: Bearer <token>` with every call.
#[derive(Debug, Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A connection whose calls carry a bearer token.
pub type BearerChannel = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

impl TestServer {
    /// A new connection whose calls carry `token`, for any generated
    /// client: `CustomerServiceClient::new(server.with_token("…").await)`.
    pub async fn with_token(&self, token: &str) -> BearerChannel {
        let value = format!("Bearer {token}").parse().unwrap();
        tonic::service::interceptor::InterceptedService::new(self.channel().await, Bearer(value))
    }
}
/// A codec that sends and receives message bytes as they are, to call any
/// method by its path with any bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// This process's resident memory, in bytes; the test servers run in it.
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// A segmentd process on a data directory, for SIGTERM and SIGKILL.
pub struct Process {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Process {
    /// Starts `segmentd serve` on `dir` and `addr`, with `args` more.
    pub fn start(dir: &Path, addr: SocketAddr, args: &[&str]) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_segmentd"));
        command
            .arg("serve")
            .args(["--listen", &addr.to_string()])
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SEGMENTD_") {
                command.env_remove(name);
            }
        }
        Process {
            addr,
            child: Some(command.spawn().unwrap()),
        }
    }

    pub fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(10))
            .connect_lazy()
    }

    /// Waits until the server answers a call.
    pub async fn wait_ready(&self) {
        for _ in 0..300 {
            let mut client = CustomerServiceClient::new(self.channel());
            let request = pb::ListCustomersRequest {
                page_size: 1,
                ..Default::default()
            };
            if client.list_customers(request).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("segmentd at {} never answered", self.addr);
    }

    /// Stops it with SIGTERM, as Kubernetes does, and waits for it to end.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_child(&child);
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
            assert!(child.wait().unwrap().success());
        }
    }

    /// Kills it with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
