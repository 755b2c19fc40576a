//! A span per RPC, with the method, the gRPC status code and the latency.
//! Only the method path is recorded: never a request's contents.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::HeaderValue;
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::status::OVERSIZED_MESSAGE_PREFIX;

/// Wraps every RPC in a span; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcTraceLayer;

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace { inner }
    }
}

/// The service [`RpcTraceLayer`] makes.
#[derive(Debug, Clone)]
pub struct RpcTrace<S> {
    /// The wrapped service.
    inner: S,
}

/// The status code of a response whose status is in its headers (a unary
/// error, or a trailers-only response). Successful calls carry their status
/// in the trailers, which come after the body.
fn header_code(response: &http::Response<tonic::body::Body>) -> Option<i32> {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse().ok())
}

/// See [`super::status::from_stream_error`]: the same rewrite for a unary
/// request, whose decode error tonic answers before our handler runs.
fn remap_oversized_request(response: &mut http::Response<tonic::body::Body>) {
    let oversized = header_code(response) == Some(tonic::Code::OutOfRange as i32)
        && response
            .headers()
            .get("grpc-message")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|message| {
                message
                    .replace("%20", " ")
                    .starts_with(OVERSIZED_MESSAGE_PREFIX)
            });
    if oversized {
        let code = HeaderValue::from(tonic::Code::ResourceExhausted as i32);
        response.headers_mut().insert("grpc-status", code);
    }
}

impl<S, B> Service<http::Request<B>> for RpcTrace<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = tracing::info_span!(
            "rpc",
            method = %request.uri().path(),
            code = tracing::field::Empty,
            latency_us = tracing::field::Empty,
        );
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(
            async move {
                let mut response = response.await?;
                remap_oversized_request(&mut response);
                let latency_us = started.elapsed().as_micros() as u64;
                let span = tracing::Span::current();
                span.record("latency_us", latency_us);
                match header_code(&response) {
                    Some(code) if code != 0 => {
                        let code = tonic::Code::from_i32(code);
                        span.record("code", tracing::field::debug(code));
                        tracing::info!(?code, latency_us, "rpc failed");
                    }
                    _ => {
                        span.record("code", "Ok");
                        tracing::debug!(latency_us, "rpc answered");
                    }
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}
