//! Flags that bound what clients can make the server hold: the budget of
//! request bytes buffered, the time a message may take to arrive, and the
//! HTTP/2 flow-control windows.

use std::time::Duration;

use clap::Args;

use super::parse_duration;
use crate::server::RequestLimits;

/// Flags of `segmentd serve` that bound request bytes held in memory.
#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// Request bytes buffered at once for messages still arriving, over all
    /// calls; a message that would go over is refused with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "SEGMENTD_MAX_BUFFERED_REQUEST_BYTES",
        default_value_t = 256 * 1024 * 1024
    )]
    max_buffered_request_bytes: usize,
    /// How long a request message may take to arrive in full once it has
    /// begun, e.g. `10s`; then the call ends with DEADLINE_EXCEEDED.
    #[arg(long, env = "SEGMENTD_MESSAGE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    message_timeout: Duration,
    /// HTTP/2 flow-control window of one stream, in bytes: what a client may
    /// send on it before the server reads it.
    #[arg(
        long,
        env = "SEGMENTD_HTTP2_STREAM_WINDOW_BYTES",
        default_value_t = 1024 * 1024
    )]
    http2_stream_window_bytes: u32,
    /// HTTP/2 flow-control window of one connection, over all its streams, in bytes.
    #[arg(
        long,
        env = "SEGMENTD_HTTP2_CONNECTION_WINDOW_BYTES",
        default_value_t = 1024 * 1024
    )]
    http2_connection_window_bytes: u32,
}

impl LimitsArgs {
    /// The limits these flags set.
    pub fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            max_buffered_request_bytes: self.max_buffered_request_bytes,
            message_timeout: self.message_timeout,
            stream_window_bytes: self.http2_stream_window_bytes,
            connection_window_bytes: self.http2_connection_window_bytes,
        }
    }
}
