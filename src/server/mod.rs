//! Runs the gRPC server: health, reflection and the API on one listener
//! (TLS when configured), health alone on an optional plaintext listener,
//! with the store opened in the background and a bounded graceful drain;
//! and, on a listener of their own, its Prometheus metrics ([`metrics`]).

mod gate;
mod incoming;
mod kill_switch;
pub mod metrics;
mod tls;

pub use gate::RequestLimits;
pub use incoming::TransportConfig;
pub use tls::TlsFiles;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::engine::replica::ReplicaSettings;
use crate::engine::{BackupLimits, Engine, EngineSettings};
use crate::grpc::activity::ActivityApi;
use crate::grpc::admin::AdminApi;
use crate::grpc::auth::{AuthConfig, AuthLayer, ReflectionMode};
use crate::grpc::consistency::ConsistencyLayer;
use crate::grpc::customers::CustomerApi;
use crate::grpc::membership::MembershipApi;
use crate::grpc::pb::activity_service_server::ActivityServiceServer;
use crate::grpc::pb::admin_service_server::AdminServiceServer;
use crate::grpc::pb::customer_service_server::CustomerServiceServer;
use crate::grpc::pb::membership_service_server::MembershipServiceServer;
use crate::grpc::pb::persona_service_server::PersonaServiceServer;
use crate::grpc::pb::prediction_service_server::PredictionServiceServer;
use crate::grpc::pb::segmentation_service_server::SegmentationServiceServer;
use crate::grpc::personas::PersonaApi;
use crate::grpc::predictions::PredictionApi;
use crate::grpc::segmentation::SegmentationApi;
use crate::grpc::{pb, status, trace, ApiLimits, EngineSlot};
use crate::log::{JetStreamLog, JetStreamOptions, Log};
use crate::store::StoreOptions;

/// Everything the server is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where and how the store is opened.
    pub store: StoreOptions,
    /// Settings every request is handled under.
    pub engine: EngineSettings,
    /// Page and batch limits.
    pub limits: ApiLimits,
    /// The largest message, in bytes, received or sent.
    pub max_message_bytes: usize,
    /// Requests served at once on one connection; more are shed with
    /// RESOURCE_EXHAUSTED.
    pub concurrency_per_connection: usize,
    /// HTTP/2 streams a client may open at once on one connection.
    pub max_concurrent_streams: u32,
    /// How often an idle connection is pinged.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// How long in-flight calls may run on after shutdown begins.
    pub shutdown_grace: Duration,
    /// Who may call what; off by default.
    pub auth: AuthConfig,
    /// The limits of an online backup.
    pub backup: BackupLimits,
    /// TLS, and how long a connection may take to open.
    pub transport: TransportConfig,
    /// Bounds on the request bytes held before handlers see them.
    pub request_limits: RequestLimits,
    /// Cluster mode: the log and how this replica follows it; `None` for
    /// the embedded mode.
    pub cluster: Option<ClusterConfig>,
}

/// Cluster mode's settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The NATS JetStream log.
    pub log: JetStreamOptions,
    /// How this replica follows it.
    pub replica: ReplicaSettings,
}

/// The services that health reports on: "" for the whole server, and each API service.
const HEALTH_SERVICES: [&str; 8] = [
    "",
    <CustomerServiceServer<CustomerApi> as NamedService>::NAME,
    <ActivityServiceServer<ActivityApi> as NamedService>::NAME,
    <SegmentationServiceServer<SegmentationApi> as NamedService>::NAME,
    <PersonaServiceServer<PersonaApi> as NamedService>::NAME,
    <MembershipServiceServer<MembershipApi> as NamedService>::NAME,
    <PredictionServiceServer<PredictionApi> as NamedService>::NAME,
    <AdminServiceServer<AdminApi> as NamedService>::NAME,
];

async fn report(health: &HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// Opens the engine, retrying while the store (or, in cluster mode, the
/// log) cannot be opened, for example while a previous process still holds
/// the store's lock; then reports SERVING, in cluster mode whenever the
/// replica is caught up with the log.
async fn open_engine(
    slot: EngineSlot,
    store: StoreOptions,
    settings: EngineSettings,
    cluster: Option<ClusterConfig>,
    health: HealthReporter,
) {
    let mut backoff = Duration::from_millis(100);
    let mut log: Option<Arc<dyn Log>> = None;
    let engine = loop {
        let started = std::time::Instant::now();
        let opened = match &cluster {
            None => Engine::open(store.clone(), settings.clone()).await,
            Some(cluster) => open_replica(&mut log, cluster, &store, &settings).await,
        };
        match opened {
            Ok(engine) => {
                if cluster.is_none() {
                    engine.start_watching();
                }
                let size = engine.index_size();
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    customers = size.customers,
                    purchases = size.purchases,
                    index_bytes_per_purchase =
                        size.purchase_bytes.checked_div(size.purchases).unwrap_or(0),
                    index_bytes_per_customer =
                        size.customer_bytes.checked_div(size.customers).unwrap_or(0),
                    engagements = size.engagements,
                    index_bytes_per_engagement = size
                        .engagement_bytes
                        .checked_div(size.engagements)
                        .unwrap_or(0),
                    "store open and index built"
                );
                let engine = Arc::new(engine);
                engine.start_predicting();
                break engine;
            }
            Err(error) => {
                tracing::error!(%error, retry_in_ms = backoff.as_millis() as u64, "cannot open the store");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let mut ready = engine.ready();
    // The slot is only ever set here, once.
    let _ = slot.set(engine);
    loop {
        let serving = *ready.borrow_and_update();
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        report(&health, status).await;
        tracing::info!(serving, "health");
        if ready.changed().await.is_err() {
            return;
        }
    }
}

/// Opens the engine as a replica of the cluster's log, connecting to the
/// log first unless an earlier attempt did; the connection is kept in
/// `log` across attempts.
async fn open_replica(
    log: &mut Option<Arc<dyn Log>>,
    cluster: &ClusterConfig,
    store: &StoreOptions,
    settings: &EngineSettings,
) -> crate::domain::Result<Engine> {
    let log = match log {
        Some(log) => Arc::clone(log),
        None => {
            let connected: Arc<dyn Log> =
                Arc::new(JetStreamLog::connect(cluster.log.clone()).await?);
            tracing::info!(stream = %cluster.log.stream, servers = ?cluster.log.servers, "connected to the log");
            Arc::clone(log.insert(connected))
        }
    };
    Engine::open_replica(
        store.clone(),
        settings.clone(),
        log,
        cluster.replica.clone(),
    )
    .await
}

/// The sockets the server listens on, bound by the caller (so that a test
/// can bind port 0 and know the port).
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC API, with health and reflection.
    pub api: TcpListener,
    /// Prometheus metrics over HTTP (`GET /metrics`); none when `None`.
    pub metrics: Option<TcpListener>,
    /// gRPC health alone, in plaintext, for probes that cannot speak TLS.
    pub health: Option<TcpListener>,
}

impl Listeners {
    /// The API listener alone.
    pub fn api(api: TcpListener) -> Self {
        Listeners {
            api,
            health: None,
            metrics: None,
        }
    }
}

/// Serves on `listeners` until `shutdown` resolves, then reports NOT_SERVING,
/// drains in-flight calls for at most the configured grace, flushes the
/// store and returns.
pub async fn run(
    listeners: Listeners,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // Every service refuses what the request gate lets through as too
    // large, so that no announced size reaches tonic's reservation.
    let health_service = health_service.max_decoding_message_size(config.max_message_bytes);
    report(&health, ServingStatus::NotServing).await;
    let auth = AuthLayer::start(&config.auth, listeners.api.local_addr().ok())?;
    let reflection = config.auth.reflection() != ReflectionMode::Off;

    // The error details types are described too, so that grpcurl and buf
    // curl can print field violations.
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?
        .max_decoding_message_size(config.max_message_bytes);
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?
        .max_decoding_message_size(config.max_message_bytes);

    // Read before anything starts, so that bad certificate files stop the
    // server at once.
    let tls = config
        .transport
        .tls
        .as_ref()
        .map(tls::acceptor)
        .transpose()?;

    let slot = EngineSlot::default();
    let metrics = metrics::Metrics::new(slot.clone());
    metrics.set_authentication_enabled(config.auth.enabled());
    // Dropped, as on an early return, the metrics listener stops too.
    let mut metrics_listener = None;
    if let Some(listener) = listeners.metrics {
        tracing::info!(addr = %listener.local_addr()?, "serving metrics on /metrics");
        metrics_listener = Some(metrics::MetricsListener::start(listener, metrics.clone()));
    }
    let customers = CustomerServiceServer::new(CustomerApi::new(slot.clone(), config.limits))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);

    let activity = ActivityServiceServer::new(ActivityApi::new(slot.clone(), config.limits))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);

    let segmentation =
        SegmentationServiceServer::new(SegmentationApi::new(slot.clone(), config.limits))
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);

    let personas = PersonaServiceServer::new(PersonaApi::new(slot.clone()))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);

    let membership = MembershipServiceServer::new(MembershipApi::new(slot.clone()))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);

    let predictions = PredictionServiceServer::new(PredictionApi::new(slot.clone()))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);

    let admin = AdminServiceServer::new(AdminApi::new(slot.clone(), config.backup))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);

    let opener = tokio::spawn(open_engine(
        slot.clone(),
        config.store.clone(),
        config.engine.clone(),
        config.cluster.clone(),
        health.clone(),
    ));

    // Cuts every connection still open when the shutdown grace runs out.
    let cut_connections = CancellationToken::new();
    // Stops accepting and starts the drain, on every listener.
    let stop = CancellationToken::new();
    let handshake_timeout = config.transport.handshake_timeout;
    // One budget of buffered request bytes for both listeners: the health
    // listener is as open to a half-sent message as the API.
    let gate = gate::whole_messages(&config.request_limits, config.max_message_bytes);
    let mut servers = JoinSet::new();
    if let Some(listener) = listeners.health {
        let incoming = incoming::incoming(listener, None, handshake_timeout, &cut_connections);
        servers.spawn(
            Server::builder()
                .max_concurrent_streams(config.max_concurrent_streams)
                .http2_keepalive_interval(Some(config.keepalive_interval))
                .http2_keepalive_timeout(Some(config.keepalive_timeout))
                .initial_stream_window_size(config.request_limits.stream_window_bytes)
                .initial_connection_window_size(config.request_limits.connection_window_bytes)
                .layer(gate.clone())
                .add_service(health_service.clone())
                .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()),
        );
    }
    let incoming = incoming::incoming(listeners.api, tls, handshake_timeout, &cut_connections);
    // The per-connection concurrency limit is kept by the metrics layer,
    // which counts what it sheds; tonic's own would shed outside every layer.
    let server = Server::builder()
        .load_shed(true)
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .initial_stream_window_size(config.request_limits.stream_window_bytes)
        .initial_connection_window_size(config.request_limits.connection_window_bytes)
        .layer(metrics.layer(config.concurrency_per_connection))
        .layer(trace::rpc_spans())
        .layer(status::refused_requests())
        .layer(auth)
        .layer(gate)
        .layer(ConsistencyLayer::new(slot.clone()))
        .add_service(health_service)
        .add_optional_service(reflection.then_some(reflection_v1))
        .add_optional_service(reflection.then_some(reflection_v1alpha))
        .add_service(customers)
        .add_service(activity)
        .add_service(segmentation)
        .add_service(personas)
        .add_service(membership)
        .add_service(predictions)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
    servers.spawn(server);

    let served_to_the_end = tokio::select! {
        () = shutdown => None,
        joined = servers.join_next() => joined,
    };
    opener.abort();
    if slot.get().is_none() {
        // Stopped while the engine opened: an image being read is kept.
        crate::engine::give_back_unread_image(&config.store.path);
    }
    if let Some(joined) = served_to_the_end {
        // A server stopped without being asked: report why, after a flush.
        flush(&slot).await?;
        return Ok(joined??);
    }

    tracing::info!(
        grace_ms = config.shutdown_grace.as_millis() as u64,
        "shutting down, draining calls"
    );
    report(&health, ServingStatus::NotServing).await;
    stop.cancel();
    // Watches never end by themselves: they end now, to be resumed.
    if let Some(engine) = slot.get() {
        engine.end_watches();
    }
    let drained = async {
        while let Some(joined) = servers.join_next().await {
            joined??;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(config.shutdown_grace, drained).await {
        Ok(drained) => drained?,
        Err(_elapsed) => {
            tracing::warn!("calls still open after the shutdown grace, closing them");
            cut_connections.cancel();
            servers.abort_all();
        }
    }
    flush(&slot).await?;
    if let Some(listener) = metrics_listener {
        listener.stop().await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn flush(slot: &EngineSlot) -> anyhow::Result<()> {
    if let Some(engine) = slot.get() {
        engine.flush().await?;
        tracing::info!("store flushed");
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
