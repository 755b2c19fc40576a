//! Flags of transport security: TLS and mTLS for `segmentd serve`, the
//! plaintext health listener and the handshake timeout; and the TLS flags
//! of the client commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;

use tonic::transport::Endpoint;

use crate::client::channel::{self, ClientTls};
use crate::server::{TlsFiles, TransportConfig};

/// TLS flags of `segmentd serve`.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// The server's certificate chain (PEM); turns TLS on. Read again for
    /// new connections when the file changes.
    #[arg(long, env = "SEGMENTD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "SEGMENTD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Certificate authorities (PEM) that client certificates must be signed
    /// by; a client without one is refused (mTLS).
    #[arg(long, env = "SEGMENTD_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Address of a plaintext listener that serves gRPC health alone, for
    /// probes that cannot speak TLS.
    #[arg(long, env = "SEGMENTD_HEALTH_LISTEN")]
    health_listen: Option<SocketAddr>,
    /// How long a new connection may take to finish its TLS handshake and
    /// send the HTTP/2 preface before it is closed, e.g. `10s`.
    #[arg(long, env = "SEGMENTD_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = super::parse_duration)]
    handshake_timeout: Duration,
}

impl TlsArgs {
    /// The server's transport settings.
    pub fn transport(&self) -> TransportConfig {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(certificate), Some(key)) => Some(TlsFiles {
                certificate: certificate.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        };
        TransportConfig {
            tls,
            handshake_timeout: self.handshake_timeout,
        }
    }

    /// Binds the health listener, when one is asked for.
    pub async fn bind_health(&self) -> std::io::Result<Option<TcpListener>> {
        let Some(addr) = self.health_listen else {
            return Ok(None);
        };
        let listener = TcpListener::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "health listening");
        Ok(Some(listener))
    }
}

/// TLS flags of the client commands.
#[derive(Debug, Args)]
pub struct ClientTlsArgs {
    /// Certificate authorities (PEM) to verify the server with; turns TLS on.
    #[arg(long, env = "SEGMENTD_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) to present, for a server that requires
    /// one (mTLS).
    #[arg(long, env = "SEGMENTD_CLIENT_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "SEGMENTD_CLIENT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The name to expect in the server's certificate; the host of the
    /// address when left out.
    #[arg(long, env = "SEGMENTD_TLS_SERVER_NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,
}

impl ClientTlsArgs {
    /// The endpoint of the server at `addr`, over TLS when asked for.
    pub fn endpoint(&self, addr: &str) -> anyhow::Result<Endpoint> {
        channel::endpoint(addr, self.client_tls().as_ref())
    }

    /// The client's TLS settings; `None` for plaintext.
    fn client_tls(&self) -> Option<ClientTls> {
        let ca = self.tls_ca.clone()?;
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(certificate), Some(key)) => Some((certificate.clone(), key.clone())),
            _ => None,
        };
        Some(ClientTls {
            ca,
            identity,
            server_name: self.tls_server_name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The serve flags alone.
    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        tls: TlsArgs,
    }

    fn parse(args: &[&str]) -> Result<TransportConfig, clap::Error> {
        let args = std::iter::once("serve").chain(args.iter().copied());
        Serve::try_parse_from(args).map(|serve| serve.tls.transport())
    }

    #[test]
    fn plaintext_with_a_ten_second_handshake_by_default() {
        let transport = parse(&[]).unwrap();
        assert_eq!(transport, TransportConfig::default());
        assert_eq!(transport.handshake_timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_certificate_needs_its_key_and_mtls_needs_both() {
        assert!(parse(&["--tls-cert", "server.pem"]).is_err());
        assert!(parse(&["--tls-key", "server.key"]).is_err());
        assert!(parse(&["--tls-client-ca", "ca.pem"]).is_err());
        let transport = parse(&[
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
            "--tls-client-ca",
            "ca.pem",
            "--handshake-timeout",
            "3s",
        ])
        .unwrap();
        let files = transport.tls.unwrap();
        assert_eq!(files.certificate, PathBuf::from("server.pem"));
        assert_eq!(files.key, PathBuf::from("server.key"));
        assert_eq!(files.client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(transport.handshake_timeout, Duration::from_secs(3));
    }
}
