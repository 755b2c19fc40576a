//! Who is at the other end of a connection, as the transport established
//! it. The server's connections carry a [`Peer`] as their connect info, so
//! tonic puts it into the extensions of every request on the connection,
//! where authentication reads it.

use std::net::SocketAddr;

/// The other end of one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The client's address, when known.
    pub remote_addr: Option<SocketAddr>,
    /// The identity in the client's verified certificate (mTLS): its SPIFFE
    /// URI SAN, else its first DNS SAN, else its common name; `None`
    /// without TLS or without a client certificate.
    pub certificate_identity: Option<String>,
}
