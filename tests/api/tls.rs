//! TLS and mTLS on the API listener, certificate rotation, the plaintext
//! health listener, and the handshake timeout, as clients see them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use segmentd::client::channel::{self, ClientTls};
use segmentd::client::healthcheck;
use segmentd::grpc::pb;
use segmentd::grpc::pb::customer_service_client::CustomerServiceClient;
use segmentd::server::{Listeners, TlsFiles};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::{config, TestServer};

/// The name in the test servers' certificates.
const SERVER_NAME: &str = "localhost";

/// A certificate authority, and a directory for the files it issues.
struct Pki {
    /// The authority.
    ca: CertifiedIssuer<'static, KeyPair>,
    /// Where the PEM files go.
    dir: tempfile::TempDir,
}

/// A certificate and its key, PEM.
struct Issued {
    /// The certificate.
    certificate: String,
    /// Its private key.
    key: String,
}

impl Issued {
    /// The certificate, DER.
    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.certificate.as_bytes()).unwrap()
    }
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki {
            ca,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The authority's certificate, PEM.
    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    fn issue(&self, mut params: CertificateParams, usage: ExtendedKeyUsagePurpose) -> Issued {
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.ca).unwrap();
        Issued {
            certificate: certificate.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for localhost and 127.0.0.1.
    fn server(&self) -> Issued {
        let params = CertificateParams::new(vec![SERVER_NAME.into(), "127.0.0.1".into()]);
        self.issue(params.unwrap(), ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose identity is `spiffe_id`.
    fn client(&self, spiffe_id: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let uri = spiffe_id.try_into().unwrap();
        params.subject_alt_names.push(SanType::URI(uri));
        self.issue(params, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Writes `issued` as the server's certificate files.
    fn install(&self, issued: &Issued) {
        // The key first: a certificate never waits for its key.
        std::fs::write(self.path("server.key"), &issued.key).unwrap();
        std::fs::write(self.path("server.pem"), &issued.certificate).unwrap();
    }

    /// The server's TLS files, with `issued` written as its certificate;
    /// with this authority's certificate as the client CA when `mtls`.
    fn server_files(&self, issued: &Issued, mtls: bool) -> TlsFiles {
        self.install(issued);
        std::fs::write(self.path("ca.pem"), self.ca_pem()).unwrap();
        TlsFiles {
            certificate: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: mtls.then(|| self.path("ca.pem")),
        }
    }
}

/// A server with TLS `files` (and a handshake timeout of `handshake`), on
/// an API listener and a health listener; not yet necessarily SERVING.
/// Returns the server, its health address and its data directory.
async fn spawn_tls(
    files: Option<TlsFiles>,
    handshake: Duration,
) -> (TestServer, SocketAddr, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut config = config(data.path());
    config.transport.tls = files;
    config.transport.handshake_timeout = handshake;
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health_addr = health.local_addr().unwrap();
    let listeners = Listeners {
        api,
        health: Some(health),
        metrics: None,
    };
    (TestServer::spawn_on(listeners, config), health_addr, data)
}

/// A TLS connection to `addr` that trusts `ca_pem`, presenting `identity`.
async fn tls_channel(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<&Issued>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(SERVER_NAME);
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(&identity.certificate, &identity.key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

/// A plaintext connection to `addr`.
async fn plaintext_channel(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// The health of the whole server over `channel`.
async fn health(channel: Channel) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await?;
    Ok(response.into_inner().status())
}

/// Waits (for at most 30 s) until the server says SERVING on new
/// connections that `connect` makes.
async fn wait_serving<F, Fut>(connect: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Channel, tonic::transport::Error>>,
{
    for _ in 0..600 {
        if let Ok(channel) = connect().await {
            if health(channel).await.ok() == Some(ServingStatus::Serving) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server never reported SERVING");
}

/// A call that needs an answer from the API.
async fn list_customers(channel: Channel) -> Result<pb::ListCustomersResponse, tonic::Status> {
    let response = CustomerServiceClient::new(channel)
        .list_customers(pb::ListCustomersRequest::default())
        .await?;
    Ok(response.into_inner())
}

/// Whether a connection that `connected` made (or failed to make) is
/// refused: either it could not be made or its first call fails.
async fn refused(connected: Result<Channel, tonic::transport::Error>) -> bool {
    match connected {
        Err(_) => true,
        Ok(channel) => list_customers(channel).await.is_err(),
    }
}

/// The certificate a TLS handshake with `addr` shows, over a bare rustls
/// client that trusts `ca_pem`; and the connection, left open.
async fn served_certificate(
    addr: SocketAddr,
    ca_pem: &str,
) -> (
    CertificateDer<'static>,
    tokio_rustls::client::TlsStream<TcpStream>,
) {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let socket = TcpStream::connect(addr).await.unwrap();
    let stream = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), socket)
        .await
        .unwrap();
    let certificate = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    (certificate, stream)
}

#[tokio::test]
async fn clients_with_the_ca_get_answers_over_tls_and_plaintext_clients_none() {
    let pki = Pki::new("test CA");
    let files = pki.server_files(&pki.server(), false);
    let (server, _, _data) = spawn_tls(Some(files), Duration::from_secs(10)).await;
    let ca = pki.ca_pem();
    wait_serving(|| tls_channel(server.addr, &ca, None)).await;

    let channel = tls_channel(server.addr, &ca, None).await.unwrap();
    let listed = list_customers(channel).await.unwrap();
    assert!(listed.customers.is_empty());

    assert!(refused(plaintext_channel(server.addr).await).await);
    let other = Pki::new("another CA");
    assert!(refused(tls_channel(server.addr, &other.ca_pem(), None).await).await);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_of_its_ca() {
    let pki = Pki::new("test CA");
    let files = pki.server_files(&pki.server(), true);
    let (server, _, _data) = spawn_tls(Some(files), Duration::from_secs(10)).await;
    let ca = pki.ca_pem();
    let worker = pki.client("spiffe://example.org/ns/shop/sa/worker");
    wait_serving(|| tls_channel(server.addr, &ca, Some(&worker))).await;

    let channel = tls_channel(server.addr, &ca, Some(&worker)).await.unwrap();
    list_customers(channel).await.unwrap();

    assert!(refused(tls_channel(server.addr, &ca, None).await).await);
    let stranger = Pki::new("another CA").client("spiffe://example.org/ns/shop/sa/worker");
    assert!(refused(tls_channel(server.addr, &ca, Some(&stranger)).await).await);

    // The client commands' connection: the CA file, and the worker's
    // certificate as their identity.
    std::fs::write(pki.path("worker.pem"), &worker.certificate).unwrap();
    std::fs::write(pki.path("worker.key"), &worker.key).unwrap();
    let mut client_tls = ClientTls {
        ca: pki.path("ca.pem"),
        identity: None,
        server_name: Some(SERVER_NAME.into()),
    };
    let addr = server.addr.to_string();
    let check = |tls: &ClientTls| {
        let endpoint = channel::endpoint(&addr, Some(tls)).unwrap();
        healthcheck::check_at(endpoint, "", Duration::from_secs(5))
    };
    assert!(check(&client_tls).await.is_err());
    client_tls.identity = Some((pki.path("worker.pem"), pki.path("worker.key")));
    assert!(check(&client_tls).await.unwrap());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_certificate_rewritten_on_disk_is_served_to_the_next_connection() {
    let pki = Pki::new("test CA");
    let first = pki.server();
    let files = pki.server_files(&first, false);
    let (server, _, _data) = spawn_tls(Some(files), Duration::from_secs(10)).await;
    let ca = pki.ca_pem();
    wait_serving(|| tls_channel(server.addr, &ca, None)).await;
    assert_eq!(served_certificate(server.addr, &ca).await.0, first.der());

    // A half-written file is refused, and the certificate in use stays.
    std::fs::write(pki.path("server.pem"), "-----BEGIN CERTIFICATE-----\nMII").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(served_certificate(server.addr, &ca).await.0, first.der());

    let second = pki.server();
    pki.install(&second);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(served_certificate(server.addr, &ca).await.0, second.der());
    let channel = tls_channel(server.addr, &ca, None).await.unwrap();
    list_customers(channel).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_health_listener_serves_health_alone_in_plaintext() {
    let pki = Pki::new("test CA");
    let files = pki.server_files(&pki.server(), true);
    let (server, health_addr, _data) = spawn_tls(Some(files), Duration::from_secs(10)).await;
    wait_serving(|| plaintext_channel(health_addr)).await;

    let channel = plaintext_channel(health_addr).await.unwrap();
    let refused = list_customers(channel).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented);

    server.stop().await.unwrap();
    assert!(TcpStream::connect(health_addr).await.is_err());
}

/// Whether the server closes `socket` within `within`: a read ends or fails.
async fn closed_within(socket: &mut (impl tokio::io::AsyncRead + Unpin), within: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(within, socket.read(&mut buf)).await {
            Err(_elapsed) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // The server's own HTTP/2 settings, had the handshake passed.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn connections_that_never_open_http2_are_closed_after_the_handshake_timeout() {
    let timeout = Duration::from_millis(500);
    let (server, _, _data) = spawn_tls(None, timeout).await;
    server.wait_serving().await;
    let established = server.channel().await;

    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut half_preface = TcpStream::connect(server.addr).await.unwrap();
    half_preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\n")
        .await
        .unwrap();
    for socket in silent.iter_mut().chain([&mut half_preface]) {
        assert!(closed_within(socket, timeout * 4).await);
    }
    assert!(started.elapsed() >= timeout);

    // Connections that opened properly stay, idle or not.
    assert!(list_customers(established.clone()).await.is_ok());
    assert!(list_customers(server.channel().await).await.is_ok());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn tls_connections_that_never_open_http2_are_closed_after_the_handshake_timeout() {
    let timeout = Duration::from_millis(500);
    let pki = Pki::new("test CA");
    let files = pki.server_files(&pki.server(), false);
    let (server, _, _data) = spawn_tls(Some(files), timeout).await;
    let ca = pki.ca_pem();
    wait_serving(|| tls_channel(server.addr, &ca, None)).await;

    let mut no_client_hello = TcpStream::connect(server.addr).await.unwrap();
    let (_, mut no_preface) = served_certificate(server.addr, &ca).await;
    assert!(closed_within(&mut no_client_hello, timeout * 4).await);
    assert!(closed_within(&mut no_preface, timeout * 4).await);

    let channel = tls_channel(server.addr, &ca, None).await.unwrap();
    assert!(list_customers(channel).await.is_ok());
    server.stop().await.unwrap();
}
