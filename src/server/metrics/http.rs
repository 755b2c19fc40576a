//! The metrics listener: HTTP/1.1, `GET /metrics` answered with
//! [`Metrics::render`], 404 for any other path.

use std::convert::Infallible;
use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Metrics, CONTENT_TYPE};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The metrics listener at work; it stops when stopped or dropped.
#[derive(Debug)]
pub struct MetricsListener {
    /// Stops the listener and its connections when dropped.
    stop: DropGuard,
    /// The accept loop.
    task: JoinHandle<()>,
}

impl MetricsListener {
    /// Serves `metrics` on `listener`, in a task of its own.
    pub fn start(listener: TcpListener, metrics: Metrics) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, metrics, stop.clone()));
        MetricsListener {
            stop: stop.drop_guard(),
            task,
        }
    }

    /// Stops serving, and returns once the listener is closed.
    pub async fn stop(self) {
        let MetricsListener { stop, task } = self;
        drop(stop);
        let _ = task.await;
    }
}

/// Serves `/metrics` on `listener` until `stop` is cancelled; then closes
/// the listener and every connection.
async fn serve(listener: TcpListener, metrics: Metrics, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, _peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(%error, "cannot accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(answer(&metrics, &request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::select! {
                () = stop.cancelled() => {}
                served = connection => {
                    if let Err(error) = served {
                        tracing::debug!(%error, "metrics connection failed");
                    }
                }
            }
        });
    }
}

/// The answer to one request.
async fn answer(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let status_only = |status: StatusCode| {
        let mut response = Response::new(Full::default());
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return status_only(StatusCode::NOT_FOUND);
    }
    if request.method() != Method::GET {
        return status_only(StatusCode::METHOD_NOT_ALLOWED);
    }
    let mut response = Response::new(Full::new(Bytes::from(metrics.render().await)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}
