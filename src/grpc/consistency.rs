//! Consistency tokens, for reading your own writes through any replica
//! in cluster mode.
//!
//! - A write answers with the header [`TOKEN_HEADER`]: the log position
//!   of its record (the highest, for an import of several).
//! - A request that carries the header is served once this replica has
//!   applied the log that far: the layer waits, within the request's
//!   deadline (at most [`MAX_WAIT`] without one), and otherwise answers
//!   UNAVAILABLE with reason `REPLICA_BEHIND`, saying how far behind the
//!   replica is; at once for a position past the log's end, or from a
//!   replica that cannot apply the log now.
//!
//! The token applies to the API's calls; health and reflection ignore it
//! (grpcurl's `-H` sends a header with its reflection calls too). Clients
//! treat the token as opaque. In the embedded mode every
//! acknowledged write is already visible: a token is checked for form and
//! then needs no wait, and writes carry none.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use tonic::Status;

use super::{ready, EngineSlot};
use crate::domain::Error;
use crate::engine::replica::track_writes;

/// The header that carries a consistency token, both ways.
pub const TOKEN_HEADER: &str = "segmentd-consistency-token";
/// The path prefix of the API's methods, which a token applies to.
const API_PREFIX: &str = "/segmentd.";
/// The longest wait for a request without a deadline.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// The layer; see the module docs.
#[derive(Debug, Clone)]
pub struct ConsistencyLayer {
    /// The engine, once open.
    engine: EngineSlot,
}

impl ConsistencyLayer {
    /// The layer over the engine in `engine`.
    pub fn new(engine: EngineSlot) -> Self {
        ConsistencyLayer { engine }
    }
}

impl<S> tower::Layer<S> for ConsistencyLayer {
    type Service = Consistency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Consistency {
            inner,
            engine: self.engine.clone(),
        }
    }
}

/// The service of [`ConsistencyLayer`].
#[derive(Debug, Clone)]
pub struct Consistency<S> {
    /// The services behind.
    inner: S,
    /// The engine, once open.
    engine: EngineSlot,
}

/// What the position in a token header is, or why it is none.
fn token(value: &HeaderValue) -> Result<u64, Status> {
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            Error::invalid(
                TOKEN_HEADER,
                "not a consistency token: send back the value a write answered with",
            )
            .into()
        })
}

/// The request's deadline from its `grpc-timeout` header, if it has one.
fn deadline(request_timeout: Option<&HeaderValue>) -> Option<Duration> {
    timeout_of(request_timeout?.to_str().ok()?)
}

/// The time a `grpc-timeout` value gives, such as `10S` or `250m`.
pub(crate) fn timeout_of(text: &str) -> Option<Duration> {
    let (amount, unit) = text.split_at(text.len().checked_sub(1)?);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// How long to wait for the replica: most of the deadline, so that the
/// answer reaches the client before it gives up, and never over
/// [`MAX_WAIT`].
fn wait_within(deadline: Option<Duration>) -> Duration {
    deadline.map_or(MAX_WAIT, |deadline| (deadline * 9 / 10).min(MAX_WAIT))
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Consistency<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    ReqBody: Send + 'static,
    ResBody: Default + Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone takes the place of the service that was polled ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Health and reflection read no data: a token is for the API's calls.
        let reads_data = request.uri().path().starts_with(API_PREFIX);
        let required = reads_data
            .then(|| request.headers().get(TOKEN_HEADER).map(token))
            .flatten();
        let wait = wait_within(deadline(request.headers().get("grpc-timeout")));
        let engine = self.engine.clone();
        Box::pin(async move {
            if let Some(required) = required {
                let caught_up = async {
                    let position = required?;
                    ready(&engine)?
                        .wait_for(position, wait)
                        .await
                        .map_err(Status::from)
                };
                if let Err(status) = caught_up.await {
                    return Ok(status.into_http());
                }
            }
            let (response, written) = track_writes(inner.call(request)).await;
            let mut response = response?;
            if let Some(position) = written {
                response
                    .headers_mut()
                    .insert(TOKEN_HEADER, HeaderValue::from(position));
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_most_of_the_deadline_and_never_over_the_bound() {
        let header = |text: &str| HeaderValue::from_str(text).unwrap();
        assert_eq!(deadline(Some(&header("2S"))), Some(Duration::from_secs(2)));
        assert_eq!(
            deadline(Some(&header("500m"))),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            deadline(Some(&header("1H"))),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(deadline(Some(&header("5x"))), None);
        assert_eq!(deadline(Some(&header(""))), None);
        assert_eq!(deadline(None), None);
        assert_eq!(
            wait_within(Some(Duration::from_secs(1))),
            Duration::from_millis(900)
        );
        assert_eq!(wait_within(Some(Duration::from_secs(3600))), MAX_WAIT);
        assert_eq!(wait_within(None), MAX_WAIT);
    }

    #[test]
    fn a_token_is_a_position_and_anything_else_is_refused() {
        assert_eq!(token(&HeaderValue::from_static("42")).unwrap(), 42);
        let refused = token(&HeaderValue::from_static("x42")).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(token(&HeaderValue::from_static("-1")).is_err());
    }
}
