//! How the client commands reach a server: its address as a URI, over TLS
//! when a CA file is given, with a client certificate for mTLS, and with a
//! bearer token on every call when one is given.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use http::header::AUTHORIZATION;
use http::HeaderValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tower_http::set_header::SetRequestHeader;

/// A bearer token; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(pub String);

impl fmt::Debug for BearerToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("BearerToken(<redacted>)")
    }
}

/// A connection that sends its bearer token, if any, with every call.
pub type Connection = SetRequestHeader<Channel, Option<HeaderValue>>;

/// Connects to `endpoint`; every call then carries `token`.
pub async fn connect(
    endpoint: Endpoint,
    token: Option<&BearerToken>,
) -> anyhow::Result<Connection> {
    let header = match token {
        Some(BearerToken(token)) => {
            let mut value = HeaderValue::try_from(format!("Bearer {token}"))
                .context("the token is not a valid header value")?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    let uri = endpoint.uri().clone();
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {uri}"))?;
    Ok(SetRequestHeader::overriding(channel, AUTHORIZATION, header))
}

/// TLS settings of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// Certificate authorities (PEM) the server's certificate must be signed by.
    pub ca: PathBuf,
    /// A client certificate and its key (PEM), for a server that requires one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name the server's certificate must carry; the address's host when `None`.
    pub server_name: Option<String>,
}

/// The endpoint of the server at `addr` (`host:port`, or a URI): plaintext
/// HTTP/2, or TLS when `tls` is given.
pub fn endpoint(addr: &str, tls: Option<&ClientTls>) -> anyhow::Result<Endpoint> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("{scheme}://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri)?;
    let Some(tls) = tls else {
        return Ok(endpoint);
    };
    if endpoint.uri().scheme_str() != Some("https") {
        anyhow::bail!("{addr}: TLS needs an https:// address, or host:port");
    }
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
    if let Some((certificate, key)) = &tls.identity {
        config = config.identity(Identity::from_pem(read(certificate)?, read(key)?));
    }
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name);
    }
    Ok(endpoint.tls_config(config)?)
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
