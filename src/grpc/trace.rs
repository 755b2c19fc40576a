//! A span per RPC, with the method, the gRPC status code and the latency:
//! tower-http's trace layer for gRPC, told what to record. Only the method
//! path is recorded, never a request's contents.
//!
//! The latency is the time to the response headers. The status code of an
//! error answered at once is in the headers; otherwise it comes in the
//! trailers, so a stream that fails half-way is logged with its own code.

use std::time::Duration;

use http::{HeaderMap, Request, Response};
use tonic::body::Body;
use tower_http::classify::{GrpcErrorsAsFailures, GrpcFailureClass, SharedClassifier};
use tower_http::trace::TraceLayer;
use tracing::Span;

/// The layer [`rpc_spans`] makes.
pub type RpcTraceLayer = TraceLayer<
    SharedClassifier<GrpcErrorsAsFailures>,
    fn(&Request<Body>) -> Span,
    (),
    fn(&Response<Body>, Duration, &Span),
    (),
    fn(Option<&HeaderMap>, Duration, &Span),
    fn(GrpcFailureClass, Duration, &Span),
>;

/// Wraps every RPC in a span; see the module docs.
pub fn rpc_spans() -> RpcTraceLayer {
    TraceLayer::new_for_grpc()
        .make_span_with(span as fn(&Request<Body>) -> Span)
        .on_request(())
        .on_response(answered as fn(&Response<Body>, Duration, &Span))
        .on_body_chunk(())
        .on_eos(ended as fn(Option<&HeaderMap>, Duration, &Span))
        .on_failure(failed as fn(GrpcFailureClass, Duration, &Span))
}

/// The span of one RPC; the code and the latency are recorded later.
fn span(request: &Request<Body>) -> Span {
    tracing::info_span!(
        "rpc",
        method = %request.uri().path(),
        code = tracing::field::Empty,
        latency_us = tracing::field::Empty,
    )
}

/// The response headers are out: records the latency.
fn answered(_response: &Response<Body>, latency: Duration, span: &Span) {
    span.record("latency_us", latency.as_micros() as u64);
}

/// The end of the response: a success is logged here, a failure in [`failed`].
fn ended(trailers: Option<&HeaderMap>, _stream: Duration, span: &Span) {
    let code = trailers.and_then(|trailers| trailers.get("grpc-status"));
    if code.is_some_and(|code| code == "0") {
        span.record("code", "Ok");
        tracing::debug!("rpc answered");
    }
}

/// A failure, from the headers or the trailers: records and logs its code.
fn failed(failure: GrpcFailureClass, _latency: Duration, span: &Span) {
    // A transport error, rather than a status, counts as UNKNOWN.
    let code = match failure {
        GrpcFailureClass::Status(status) => tonic::Code::from_i32(status.code_raw()),
        _ => tonic::Code::Unknown,
    };
    span.record("code", tracing::field::debug(code));
    tracing::info!(?code, "rpc failed");
}
