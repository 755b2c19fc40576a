//! The tower layer that applies [`Authenticator::admit`] to every request.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::Code;

use super::scopes::{self, Access};
use super::{announce, AuthConfig, Authenticator};
use crate::grpc::peer::Peer;
use crate::grpc::status::code_name;

/// Checks every request; see the module docs of [`super`].
#[derive(Clone)]
pub struct AuthLayer {
    /// The checks; `None` when authentication is off.
    authenticator: Option<Arc<Authenticator>>,
}

impl AuthLayer {
    /// Reads the configured files (an error stops the start-up), watches
    /// them for changes, and logs how callers are authenticated (loudly
    /// when they are not) for the server listening on `addr`. Needs a
    /// tokio runtime.
    pub fn start(config: &AuthConfig, addr: Option<SocketAddr>) -> anyhow::Result<AuthLayer> {
        let authenticator = Authenticator::load(config)?.map(Arc::new);
        if let Some(authenticator) = &authenticator {
            authenticator.watch(config.reload_interval);
        }
        announce(config, addr);
        Ok(AuthLayer { authenticator })
    }

    /// A layer that checks with `authenticator`, without watching files.
    #[cfg(test)]
    pub(super) fn with(authenticator: Option<Authenticator>) -> AuthLayer {
        AuthLayer {
            authenticator: authenticator.map(Arc::new),
        }
    }
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer")
            .field("enabled", &self.authenticator.is_some())
            .finish()
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    /// The services behind.
    inner: S,
    /// The checks; `None` when authentication is off.
    authenticator: Option<Arc<Authenticator>>,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for AuthService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Answer<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let Some(authenticator) = &self.authenticator else {
            return Answer::Served {
                inner: self.inner.call(request),
            };
        };
        let method = request.uri().path();
        let peer = request.extensions().get::<Peer>();
        match authenticator.admit(method, request.headers(), peer) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Answer::Served {
                    inner: self.inner.call(request),
                }
            }
            Err(refusal) => {
                tracing::debug!(method, ?refusal, "call refused");
                let principal = refusal.principal().map(str::to_owned);
                let status = refusal.into_status(method);
                if let Some(Access::Scope(scope)) = scopes::access(method) {
                    if scope.audited() {
                        audit_refusal(principal.as_deref(), method, status.code());
                    }
                }
                Answer::Refused {
                    response: Some(status.into_http()),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`AuthService`]: the services' answer, or a refusal.
    #[project = AnswerProjection]
    pub enum Answer<F, B> {
        /// Passed on: `inner` is the services' answer. (The macro takes
        /// no docs on variant fields.)
        Served {
            #[pin]
            inner: F,
        },
        /// Refused: `response` is the status as a response, until it is
        /// handed out.
        Refused {
            response: Option<Response<B>>,
        },
    }
}

impl<F, B, E> Future for Answer<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProjection::Served { inner } => inner.poll(cx),
            AnswerProjection::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("an answer is polled once it is ready"))),
        }
    }
}

/// The principal of refused calls whose credentials named nobody.
const UNAUTHENTICATED: &str = "unauthenticated";

/// Logs, as the audit log's events are logged, a call to the audited
/// `method` (its gRPC path) that authentication refused with `code` before
/// its request was read: the resource is unknown, so it shows as `-`.
fn audit_refusal(principal: Option<&str>, method: &str, code: Code) {
    let method = method.rsplit('/').next().unwrap_or(method);
    tracing::info!(
        target: "audit",
        principal = principal.unwrap_or(UNAUTHENTICATED),
        method,
        resource = "-",
        outcome = code_name(code),
        "audited call"
    );
}
