//! A span per RPC, with the method, the gRPC status code and the latency:
//! tower-http's trace layer for gRPC, told what to record. Only the method
//! path is recorded, never a request's contents.
//!
//! The latency is the time to the response headers. The status code of an
//! error answered at once is in the headers; otherwise it comes in the
//! trailers, so a stream that fails half-way is logged with its own code.
//!
//! A caller that sends a W3C `traceparent` header has its trace id and
//! parent span id recorded on the span (`trace_id`, `parent_span_id`), so
//! that the server's log lines join the caller's trace. An invalid header
//! is ignored, as the W3C Trace Context recommendation asks.

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

/// The span of one RPC, with the caller's trace if it sent one; the code
/// and the latency are recorded later.
fn span(request: &Request<Body>) -> Span {
    let span = tracing::info_span!(
        "rpc",
        method = %request.uri().path(),
        code = tracing::field::Empty,
        latency_us = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
    );
    let parent = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse);
    if let Some(parent) = parent {
        span.record("trace_id", parent.trace_id);
        span.record("parent_span_id", parent.parent_id);
    }
    span
}

/// The W3C Trace Context header that carries the caller's trace.
pub const TRACEPARENT: &str = "traceparent";

/// A valid W3C `traceparent` header, taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent<'a> {
    /// The trace: 32 lowercase hex digits, not all zero.
    pub trace_id: &'a str,
    /// The caller's span: 16 lowercase hex digits, not all zero.
    pub parent_id: &'a str,
    /// The trace flags; bit 0 is "sampled".
    pub flags: u8,
}

/// The length of a version 00 header: `00-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_LEN: usize = 55;

impl<'a> TraceParent<'a> {
    /// Parses a `traceparent` header; `None` when it is not valid. A
    /// version after 00 is read as 00 is, and what follows the flags is
    /// left alone, as the recommendation asks; version ff is invalid.
    pub fn parse(header: &'a str) -> Option<Self> {
        let header = header.trim_matches([' ', '\t']);
        let version = header.get(0..2).filter(|version| is_hex(version, 2))?;
        let valid_length = match version {
            "ff" => false,
            "00" => header.len() == TRACEPARENT_LEN,
            _ => {
                header.len() == TRACEPARENT_LEN
                    || (header.len() > TRACEPARENT_LEN
                        && header.as_bytes()[TRACEPARENT_LEN] == b'-')
            }
        };
        if !valid_length {
            return None;
        }
        let fields = header.get(..TRACEPARENT_LEN)?;
        let mut parts = fields.split('-');
        let (_version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || !is_hex(trace_id, 32)
            || !is_hex(parent_id, 16)
            || !is_hex(flags, 2)
            || is_zero(trace_id)
            || is_zero(parent_id)
        {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }
}

/// Whether `text` is `len` lowercase hex digits.
fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `hex` is all zero digits.
fn is_zero(hex: &str) -> bool {
    hex.bytes().all(|byte| byte == b'0')
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

#[cfg(test)]
mod tests {
    use super::TraceParent;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_is_taken_apart() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(parent.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.parent_id, "00f067aa0ba902b7");
        assert_eq!(parent.flags, 1);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(TraceParent::parse(unsampled).unwrap().flags, 0);
        // Surrounding whitespace is allowed around a header value.
        assert!(TraceParent::parse(&format!(" {VALID}\t")).is_some());
    }

    #[test]
    fn a_later_version_is_read_as_00_and_may_carry_more() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(TraceParent::parse(later).is_some());
        let more = format!("{}-whatever", later);
        assert_eq!(
            TraceParent::parse(&more).unwrap().trace_id,
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // Only after a dash.
        assert!(TraceParent::parse(&format!("{later}x")).is_none());
        // Version 00 has exactly four fields.
        assert!(TraceParent::parse(&format!("{VALID}-more")).is_none());
    }

    #[test]
    fn invalid_headers_are_ignored() {
        for header in [
            "",
            "00",
            "garbage",
            // Version ff is forbidden.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // An all-zero trace id or parent id.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Upper case, which the recommendation forbids.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // Not hex.
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            // Fields of the wrong length, though the total is right.
            "00-4bf92f3577b34da6a3ce929d0e0e47360-0f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b701-",
            // Too short or too long.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
            // Separators other than a dash.
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            // A multi-byte character where a digit should be.
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b-01",
        ] {
            assert_eq!(TraceParent::parse(header), None, "{header:?}");
        }
    }
}
