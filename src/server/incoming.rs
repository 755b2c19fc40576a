//! The connections the server serves. Each accepted socket gets its own
//! task for the handshake: the TLS handshake when TLS is on, then the
//! opening of HTTP/2 (the client's preface and its first SETTINGS frame).
//! Only a connection that finishes both within the handshake timeout is
//! handed to tonic; one that stalls is closed, and a slow client never
//! holds up the accept loop or anyone else's handshake.
//!
//! Everything a connection costs beyond plain TCP is paid here, once: the
//! bytes of the opening are read ahead and replayed to HTTP/2, and the
//! client's certificate identity is read once into the connection's
//! [`Peer`], which tonic puts into the extensions of every request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpIncoming};

use super::kill_switch::KillableConnection;
use super::tls::{certificate_identity, TlsFiles};
use crate::grpc::peer::Peer;

/// How connections are secured and how long they may take to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// TLS on the API listener; plaintext when `None`.
    pub tls: Option<TlsFiles>,
    /// How long a new connection may take to finish its TLS handshake and
    /// send the HTTP/2 preface and SETTINGS before it is closed.
    pub handshake_timeout: Duration,
}

impl Default for TransportConfig {
    /// Plaintext, with a 10 s handshake timeout.
    fn default() -> Self {
        TransportConfig {
            tls: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// What every HTTP/2 connection opens with (RFC 9113, section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The length of an HTTP/2 frame header.
const FRAME_HEADER_LEN: usize = 9;
/// The type of a SETTINGS frame.
const SETTINGS_FRAME: u8 = 0x4;
/// The largest frame a client may send before it learns the server's
/// settings (the protocol's initial SETTINGS_MAX_FRAME_SIZE).
const INITIAL_MAX_FRAME_LEN: usize = 16_384;
/// Connections that finished their handshake and wait for tonic.
const READY_QUEUE: usize = 64;
/// TCP keepalive on accepted sockets, as tonic's own listener sets it.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A stream of the connections accepted on `listener` that finished their
/// handshake in time; TLS ones when `tls` is set. Every connection fails
/// once `kill_switch` is cancelled. Accepting stops, and the listening
/// socket closes, when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    kill_switch: &CancellationToken,
) -> impl Stream<Item = io::Result<Connection>> + Send + 'static {
    let (ready, ready_connections) = mpsc::channel(READY_QUEUE);
    tokio::spawn(accept(
        listener,
        Handshake {
            tls,
            timeout: handshake_timeout,
            kill_switch: kill_switch.clone(),
        },
        ready,
    ));
    ReceiverStream::new(ready_connections).map(Ok)
}

/// How a new connection is opened.
#[derive(Clone)]
struct Handshake {
    /// Makes it TLS, when set.
    tls: Option<TlsAcceptor>,
    /// How long it may take.
    timeout: Duration,
    /// Cuts it at the end of the shutdown grace.
    kill_switch: CancellationToken,
}

/// Accepts connections and starts a handshake task for each, until the
/// receiver of `ready` is gone.
async fn accept(listener: TcpListener, handshake: Handshake, ready: mpsc::Sender<Connection>) {
    // TCP_NODELAY is only applied by tonic's `serve()`, so set it here, or
    // small calls stall for about 40 ms.
    let mut accepted = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));
    loop {
        let socket = tokio::select! {
            () = ready.closed() => return,
            next = accepted.next() => match next {
                Some(Ok(socket)) => socket,
                Some(Err(error)) => {
                    // Out of file descriptors, for example: wait rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                None => return,
            },
        };
        let connection = KillableConnection::new(socket, &handshake.kill_switch);
        let (handshake, ready) = (handshake.clone(), ready.clone());
        tokio::spawn(async move {
            let remote_addr = connection.remote_addr();
            match tokio::time::timeout(handshake.timeout, open(connection, handshake.tls)).await {
                Ok(Ok(opened)) => {
                    // Fails only when the server no longer accepts: the
                    // connection is dropped, which closes it.
                    let _ = ready.send(opened).await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, ?remote_addr, "connection closed during its handshake");
                }
                Err(_elapsed) => {
                    tracing::debug!(
                        ?remote_addr,
                        timeout_ms = handshake.timeout.as_millis() as u64,
                        "connection closed, its handshake took too long"
                    );
                }
            }
        });
    }
}

/// Runs the TLS handshake when `tls` is set, then reads the opening of
/// HTTP/2.
async fn open(socket: KillableConnection, tls: Option<TlsAcceptor>) -> io::Result<Connection> {
    let remote_addr = socket.remote_addr();
    let (mut stream, certificate_identity) = match tls {
        None => (Transport::Plain(socket), None),
        Some(acceptor) => {
            let stream = acceptor.accept(socket).await?;
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(certificate_identity);
            (Transport::Tls(Box::new(stream)), identity)
        }
    };
    let opening = read_opening(&mut stream).await?;
    Ok(Connection {
        stream,
        opening,
        replayed: 0,
        peer: Peer {
            remote_addr,
            certificate_identity,
        },
    })
}

/// How far the bytes received so far go in the opening of HTTP/2.
#[derive(Debug, PartialEq, Eq)]
enum Opening {
    /// The preface and the SETTINGS frame are not all in yet.
    Incomplete,
    /// The preface and a whole SETTINGS frame are in.
    Complete,
    /// Not HTTP/2: left to the HTTP/2 server to refuse.
    Other,
}

fn opening(received: &[u8]) -> Opening {
    let preface_received = &received[..received.len().min(PREFACE.len())];
    if !PREFACE.starts_with(preface_received) {
        return Opening::Other;
    }
    let frame = &received[preface_received.len()..];
    if frame.len() < FRAME_HEADER_LEN {
        return Opening::Incomplete;
    }
    let payload_len = u32::from_be_bytes([0, frame[0], frame[1], frame[2]]) as usize;
    if frame[3] != SETTINGS_FRAME || payload_len > INITIAL_MAX_FRAME_LEN {
        return Opening::Other;
    }
    if frame.len() < FRAME_HEADER_LEN + payload_len {
        return Opening::Incomplete;
    }
    Opening::Complete
}

/// Reads until the opening of HTTP/2 is in (or is found not to be one);
/// returns every byte read, to be replayed.
async fn read_opening(stream: &mut Transport) -> io::Result<Vec<u8>> {
    let mut received = Vec::with_capacity(PREFACE.len() + FRAME_HEADER_LEN + 64);
    while opening(&received) == Opening::Incomplete {
        if stream.read_buf(&mut received).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the HTTP/2 preface and SETTINGS",
            ));
        }
    }
    Ok(received)
}

/// The byte stream under a connection.
enum Transport {
    /// Plain TCP.
    Plain(KillableConnection),
    /// TLS over TCP.
    Tls(Box<TlsStream<KillableConnection>>),
}

/// A connection that finished its handshake: what tonic serves.
pub struct Connection {
    /// The byte stream.
    stream: Transport,
    /// The bytes read during the handshake, replayed before the stream's.
    opening: Vec<u8>,
    /// How many of them were replayed.
    replayed: usize,
    /// Who is at the other end.
    peer: Peer,
}

impl Connected for Connection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.replayed < this.opening.len() {
            let rest = &this.opening[this.replayed..];
            let len = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..len]);
            this.replayed += len;
            if this.replayed == this.opening.len() {
                this.opening = Vec::new();
                this.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(stream) => stream.is_write_vectored(),
            Transport::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use rcgen::{CertificateParams, CertifiedIssuer, KeyPair};
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server};
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    use super::*;
    use crate::server::tls;

    /// The PEM of a certificate `issuer` signs for `names`, and of its key.
    fn signed(issuer: &CertifiedIssuer<'_, KeyPair>, names: &[&str]) -> (String, String) {
        let names = names
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>();
        let key = KeyPair::generate().unwrap();
        let certificate = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        (certificate.pem(), key.serialize_pem())
    }

    /// The transport's promise to authentication: a request's extensions
    /// hold the connection's peer, with the identity of its verified client
    /// certificate, where a layer in front of the handlers finds it.
    #[tokio::test]
    async fn requests_carry_the_peer_and_its_certificate_identity() {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let (server_cert, server_key) = signed(&ca, &["localhost"]);
        let (client_cert, client_key) = signed(&ca, &["spiffe://example.org/worker"]);
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            certificate: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            client_ca: Some(dir.path().join("ca.pem")),
        };
        std::fs::write(&files.certificate, &server_cert).unwrap();
        std::fs::write(&files.key, &server_key).unwrap();
        std::fs::write(files.client_ca.as_ref().unwrap(), ca.pem()).unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tls::acceptor(&files).unwrap();
        let connections = incoming(
            listener,
            Some(acceptor),
            Duration::from_secs(5),
            &CancellationToken::new(),
        );
        let seen = Arc::new(Mutex::new(Vec::<Peer>::new()));
        let recorder = seen.clone();
        let (_, health) = tonic_health::server::health_reporter();
        let server = Server::builder()
            .layer(tonic::service::InterceptorLayer::new(
                move |request: tonic::Request<()>| {
                    let peer = request.extensions().get::<Peer>().cloned();
                    recorder.lock().unwrap().extend(peer);
                    Ok(request)
                },
            ))
            .add_service(health)
            .serve_with_incoming(connections);
        let server = tokio::spawn(server);

        let client_tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca.pem()))
            .identity(Identity::from_pem(client_cert, client_key));
        let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .tls_config(client_tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .unwrap();
        server.abort();

        let peers = seen.lock().unwrap().clone();
        assert_eq!(peers.len(), 1, "one request, one peer: {peers:?}");
        let peer = &peers[0];
        assert_eq!(
            peer.certificate_identity.as_deref(),
            Some("spiffe://example.org/worker")
        );
        let remote = peer.remote_addr.expect("the client's address");
        assert!(remote.ip().is_loopback() && remote.port() != port);
    }

    /// A client's opening: the preface and a SETTINGS frame of one setting.
    fn client_opening() -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        bytes.extend_from_slice(&[0, 0, 6, SETTINGS_FRAME, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
        bytes
    }

    #[test]
    fn the_opening_is_the_preface_and_a_whole_settings_frame() {
        let whole = client_opening();
        assert_eq!(opening(&[]), Opening::Incomplete);
        assert_eq!(opening(&whole[..10]), Opening::Incomplete);
        assert_eq!(opening(&whole[..PREFACE.len()]), Opening::Incomplete);
        assert_eq!(opening(&whole[..whole.len() - 1]), Opening::Incomplete);
        assert_eq!(opening(&whole), Opening::Complete);
        let mut more = whole.clone();
        more.extend_from_slice(b"next frame");
        assert_eq!(opening(&more), Opening::Complete);
    }

    #[test]
    fn anything_else_is_left_to_http2_to_refuse() {
        assert_eq!(opening(b"GET / HTTP/1.1\r\n"), Opening::Other);
        assert_eq!(opening(b"\x16\x03\x01"), Opening::Other);
        let mut headers_first = PREFACE.to_vec();
        headers_first.extend_from_slice(&[0, 0, 0, 0x1, 0, 0, 0, 0, 1]);
        assert_eq!(opening(&headers_first), Opening::Other);
    }
}
