//! Plain HTTP GETs on loopback: NATS's monitoring endpoints and the
//! replicas' `/metrics`, without an HTTP client crate.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The status code and body of `GET path` on `addr`; `None` when nothing
/// answers within two seconds. HTTP/1.0, so that the body is never chunked.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.ok()?;
        let (head, body) = answer.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// The value of the sample `series` in a Prometheus text exposition: a
/// name with its labels, or a bare name, which takes the first sample of
/// that name whatever its labels.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            let bare = name.split_once('{').map_or(name, |(bare, _)| bare);
            (name == series || bare == series)
                .then(|| value.parse().ok())
                .flatten()
        })
}
