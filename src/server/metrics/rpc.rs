//! The per-method numbers of the gRPC server, and the tower layer that
//! counts them.
//!
//! Every method the server serves has its numbers made at start-up, found
//! by the request's path, so that counting a call takes a hash lookup and
//! a few atomic additions, and allocates nothing. A call is counted as
//! started when it reaches the layer and as handled, with its status code
//! and latency, when it ends: at the response headers for an error answered
//! at once (the code is in the headers), else when the body ends with its
//! trailers, so a stream is counted when it finishes. A body dropped before
//! its end (the client went away) is counted as CANCELLED.
//!
//! The layer also keeps the per-connection concurrency limit: a call over
//! the limit is shed with RESOURCE_EXHAUSTED, as tonic's own limit would,
//! and counted, which tonic's limit, running outside every layer, could
//! not be.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use foldhash::fast::RandomState;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use prost::Message as _;
use tonic::Code;
use tower::{Layer, Service};

/// The upper bounds, in microseconds, of the latency buckets: from 50 µs,
/// so that calls answered from memory are told apart, to 10 s.
pub const LATENCY_BUCKETS_MICROS: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// The gRPC status codes, by number, named as gRPC's Go implementation
/// names them (the names Prometheus dashboards for gRPC expect).
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The message tonic sheds a call over the connection's limit with.
const SHED_MESSAGE: &str = "Too many active requests for the connection";

/// Which side of a method streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallType {
    /// One request, one response.
    Unary,
    /// A stream of requests, one response.
    ClientStream,
    /// One request, a stream of responses.
    ServerStream,
    /// Streams both ways.
    BidiStream,
}

impl CallType {
    fn of(client_streaming: bool, server_streaming: bool) -> Self {
        match (client_streaming, server_streaming) {
            (false, false) => CallType::Unary,
            (true, false) => CallType::ClientStream,
            (false, true) => CallType::ServerStream,
            (true, true) => CallType::BidiStream,
        }
    }

    /// The `grpc_type` label.
    pub fn label(self) -> &'static str {
        match self {
            CallType::Unary => "unary",
            CallType::ClientStream => "client_stream",
            CallType::ServerStream => "server_stream",
            CallType::BidiStream => "bidi_stream",
        }
    }
}

/// A latency histogram of fixed buckets, in atomics.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations by bucket: at `i`, those of at most
    /// `LATENCY_BUCKETS_MICROS[i]` but more than the bound before; the
    /// last holds those over every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    /// The sum of the observations, in microseconds.
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, micros: u64) {
        let bucket = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The observations by bucket of `LATENCY_BUCKETS_MICROS` (not
    /// cumulative), the count of every observation, and their sum in
    /// microseconds.
    pub fn read(&self) -> ([u64; LATENCY_BUCKETS_MICROS.len()], u64, u64) {
        let mut buckets = [0; LATENCY_BUCKETS_MICROS.len()];
        for (read, bucket) in buckets.iter_mut().zip(&self.buckets) {
            *read = bucket.load(Ordering::Relaxed);
        }
        let over = self.buckets[LATENCY_BUCKETS_MICROS.len()].load(Ordering::Relaxed);
        let count = buckets.iter().sum::<u64>() + over;
        (buckets, count, self.sum_micros.load(Ordering::Relaxed))
    }
}

/// The numbers of one method.
#[derive(Debug)]
pub struct MethodStats {
    /// The `grpc_service` label: the package and service name.
    pub service: String,
    /// The `grpc_method` label.
    pub method: String,
    /// The `grpc_type` label.
    pub call_type: CallType,
    /// Calls started.
    pub started: AtomicU64,
    /// Calls handled, by status code.
    pub handled: [AtomicU64; CODE_NAMES.len()],
    /// Calls shed over the connection's concurrency limit.
    pub shed: AtomicU64,
    /// From the start of a call to its end.
    pub latency: LatencyHistogram,
}

impl MethodStats {
    /// Calls started and not yet handled.
    pub fn in_flight(&self) -> u64 {
        // Read before the starts, which a call counts first, so that the
        // difference is never negative.
        let handled: u64 = self
            .handled
            .iter()
            .map(|handled| handled.load(Ordering::Relaxed))
            .sum();
        self.started.load(Ordering::Relaxed).saturating_sub(handled)
    }

    fn new(service: &str, method: &str, call_type: CallType) -> Self {
        MethodStats {
            service: service.to_owned(),
            method: method.to_owned(),
            call_type,
            started: AtomicU64::new(0),
            handled: Default::default(),
            shed: AtomicU64::new(0),
            latency: LatencyHistogram::default(),
        }
    }
}

/// Every method's numbers, found by path.
#[derive(Debug)]
pub struct RpcTable {
    /// By path, `/package.Service/Method`.
    by_path: HashMap<String, Arc<MethodStats>, RandomState>,
    /// Calls of a path that names no method, counted together (a path
    /// of its own each would let a client grow the table).
    unknown: Arc<MethodStats>,
}

impl RpcTable {
    /// The methods of the services in the encoded file descriptor `sets`.
    pub fn new(sets: &[&[u8]]) -> Self {
        let mut by_path = HashMap::default();
        for set in sets {
            // The sets are compiled in; one that does not decode has no
            // methods to count.
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    let service_name = match file.package() {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    for method in &service.method {
                        let call_type =
                            CallType::of(method.client_streaming(), method.server_streaming());
                        let stats = MethodStats::new(&service_name, method.name(), call_type);
                        let path = format!("/{service_name}/{}", method.name());
                        by_path.insert(path, Arc::new(stats));
                    }
                }
            }
        }
        RpcTable {
            by_path,
            unknown: Arc::new(MethodStats::new("unknown", "unknown", CallType::Unary)),
        }
    }

    /// The numbers of the method at `path`.
    fn method(&self, path: &str) -> &Arc<MethodStats> {
        self.by_path.get(path).unwrap_or(&self.unknown)
    }

    /// Every method's numbers, the unknown ones last.
    pub fn methods(&self) -> impl Iterator<Item = &MethodStats> {
        let mut methods: Vec<&MethodStats> = self.by_path.values().map(Arc::as_ref).collect();
        methods.sort_by(|a, b| (&a.service, &a.method).cmp(&(&b.service, &b.method)));
        methods.push(&self.unknown);
        methods.into_iter()
    }
}

/// Counts every call and sheds those over the per-connection limit; see
/// the module docs.
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer {
    /// Where calls are counted.
    table: Arc<RpcTable>,
    /// The calls one connection may have in flight.
    concurrency_per_connection: usize,
}

impl RpcMetricsLayer {
    /// Counts into `table` and sheds calls over `concurrency_per_connection`.
    pub fn new(table: Arc<RpcTable>, concurrency_per_connection: usize) -> Self {
        RpcMetricsLayer {
            table,
            concurrency_per_connection,
        }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            table: Arc::clone(&self.table),
            concurrency_per_connection: self.concurrency_per_connection,
            connection: None,
        }
    }
}

/// The service of [`RpcMetricsLayer`].
///
/// tonic makes the service of each connection by cloning the layered
/// service once, and clones that copy again for each request. So the
/// service the layer makes is a template without a connection; its clones
/// each get a connection of their own, and the clones of those share it.
#[derive(Debug)]
pub struct RpcMetrics<S> {
    /// The service counted.
    inner: S,
    /// Where calls are counted.
    table: Arc<RpcTable>,
    /// The calls one connection may have in flight.
    concurrency_per_connection: usize,
    /// The calls in flight on this service's connection; `None` in the
    /// template.
    connection: Option<Arc<AtomicUsize>>,
}

impl<S: Clone> Clone for RpcMetrics<S> {
    fn clone(&self) -> Self {
        let connection = match &self.connection {
            Some(connection) => Arc::clone(connection),
            None => Arc::new(AtomicUsize::new(0)),
        };
        RpcMetrics {
            inner: self.inner.clone(),
            table: Arc::clone(&self.table),
            concurrency_per_connection: self.concurrency_per_connection,
            connection: Some(connection),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RpcMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let method = Arc::clone(self.table.method(request.uri().path()));
        let call = Call::start(method);
        let connection = self
            .connection
            .get_or_insert_with(|| Arc::new(AtomicUsize::new(0)));
        let Some(slot) = ConnectionSlot::take(connection, self.concurrency_per_connection) else {
            call.method.shed.fetch_add(1, Ordering::Relaxed);
            call.end(Code::ResourceExhausted);
            return CountedFuture::Shed;
        };
        CountedFuture::Running {
            inner: self.inner.call(request),
            call: Some(call),
            _slot: slot,
        }
    }
}

/// One of the calls in flight on a connection; gives its place back when
/// dropped.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    /// A place among at most `limit` calls in flight on `connection`.
    fn take(connection: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        if connection.fetch_add(1, Ordering::AcqRel) >= limit {
            connection.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectionSlot(Arc::clone(connection)))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A call being counted: started, in flight until it ends; dropped before
/// it ends, it is counted as CANCELLED.
#[derive(Debug)]
pub struct Call {
    /// Its method's numbers.
    method: Arc<MethodStats>,
    /// When it started.
    started: Instant,
    /// Whether it has been counted as handled.
    ended: bool,
}

impl Call {
    fn start(method: Arc<MethodStats>) -> Self {
        method.started.fetch_add(1, Ordering::Relaxed);
        Call {
            method,
            started: Instant::now(),
            ended: false,
        }
    }

    /// Counts the call as handled with `code`.
    fn end(mut self, code: Code) {
        self.count(code);
    }

    fn count(&mut self, code: Code) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let method = &self.method;
        let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        method.latency.observe(micros);
        let index = (code as usize).min(CODE_NAMES.len() - 1);
        method.handled[index].fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.count(Code::Cancelled);
    }
}

/// The status code in `headers`, if they carry one.
fn status_code(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?;
    let code = std::str::from_utf8(value.as_bytes())
        .ok()
        .and_then(|text| text.parse::<i32>().ok())
        .map_or(Code::Unknown, Code::from_i32);
    Some(code)
}

/// The response future of [`RpcMetrics`].
#[pin_project(project = CountedFutureProjection)]
#[derive(Debug)]
pub enum CountedFuture<F> {
    /// The call runs.
    Running {
        /// The inner service's answer.
        #[pin]
        inner: F,
        /// The call, until the response is out.
        call: Option<Call>,
        /// The call's place on its connection, until the response is out.
        _slot: ConnectionSlot,
    },
    /// The call was shed.
    Shed,
}

impl<F, ResBody, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<CountedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (inner, call) = match self.project() {
            CountedFutureProjection::Shed => {
                let status = tonic::Status::resource_exhausted(SHED_MESSAGE);
                let response = status.into_http::<()>().map(|()| CountedBody::empty());
                return Poll::Ready(Ok(response));
            }
            CountedFutureProjection::Running { inner, call, .. } => (inner, call),
        };
        let outcome = std::task::ready!(inner.poll(cx));
        let Some(call) = call.take() else {
            // Polled again after it was ready; tower forbids it.
            return Poll::Pending;
        };
        let response = match outcome {
            Ok(response) => response,
            Err(error) => {
                call.end(Code::Unknown);
                return Poll::Ready(Err(error));
            }
        };
        // An error answered at once has its code in the headers, and the
        // body ends at once; otherwise the code comes in the trailers.
        let call = match status_code(response.headers()) {
            Some(code) => {
                call.end(code);
                None
            }
            None => Some(call),
        };
        Poll::Ready(Ok(response.map(|body| CountedBody {
            inner: Some(body),
            call,
        })))
    }
}

/// A response body that counts its call when it ends.
#[pin_project]
#[derive(Debug)]
pub struct CountedBody<B> {
    /// The body; `None` for the empty body of a shed call.
    #[pin]
    inner: Option<B>,
    /// The call, until the body ends.
    call: Option<Call>,
}

impl<B> CountedBody<B> {
    fn empty() -> Self {
        CountedBody {
            inner: None,
            call: None,
        }
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(None);
        };
        let frame = std::task::ready!(inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|trailers| status_code(trailers).unwrap_or(Code::Unknown)),
            // A transport error, rather than a status, counts as UNKNOWN.
            Some(Err(_)) => Some(Code::Unknown),
            // The end without trailers: no status was sent.
            None => Some(Code::Unknown),
        };
        if let Some(code) = code {
            if let Some(call) = this.call.take() {
                call.end(code);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::HeaderValue;
    use http_body_util::{BodyExt as _, StreamBody};
    use hyper::body::Bytes;
    use tower::ServiceExt as _;

    use super::*;

    type TestBody =
        StreamBody<tokio_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

    const PATH: &str = "/segmentd.v1.CustomerService/GetCustomer";

    fn table() -> Arc<RpcTable> {
        Arc::new(RpcTable::new(&[crate::grpc::pb::FILE_DESCRIPTOR_SET]))
    }

    fn method<'a>(table: &'a RpcTable, path: &str) -> &'a MethodStats {
        table.method(path)
    }

    fn handled(method: &MethodStats, code: Code) -> u64 {
        method.handled[code as usize].load(Ordering::Relaxed)
    }

    /// A body of one message and trailers with `code`.
    fn streamed(code: Code) -> TestBody {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from(code as i32));
        StreamBody::new(tokio_stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(Frame::trailers(trailers)),
        ]))
    }

    /// A layered service answering every call with `answer`, as the
    /// connection copy tonic would make.
    fn service(
        table: &Arc<RpcTable>,
        limit: usize,
        answer: fn() -> Response<TestBody>,
    ) -> impl Service<Request<()>, Response = Response<CountedBody<TestBody>>, Error = Infallible> + Clone
    {
        let inner = tower::service_fn(move |_request: Request<()>| {
            std::future::ready(Ok::<_, Infallible>(answer()))
        });
        RpcMetricsLayer::new(Arc::clone(table), limit)
            .layer(inner)
            .clone()
    }

    fn request(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).unwrap()
    }

    #[test]
    fn the_table_holds_every_method_with_its_type() {
        let table = table();
        let get = method(&table, PATH);
        assert_eq!(
            (get.service.as_str(), get.method.as_str(), get.call_type),
            (
                "segmentd.v1.CustomerService",
                "GetCustomer",
                CallType::Unary
            )
        );
        let export = method(
            &table,
            "/segmentd.v1.SegmentationService/ExportSegmentMembers",
        );
        assert_eq!(export.call_type, CallType::ServerStream);
        let import = method(&table, "/segmentd.v1.CustomerService/ImportCustomers");
        assert_eq!(import.call_type, CallType::ClientStream);
        assert_eq!(method(&table, "/no.Such/Method").service, "unknown");
        assert_eq!(
            method(&table, "/segmentd.v1.CustomerService/").service,
            "unknown"
        );
    }

    #[test]
    fn latencies_fall_in_their_buckets() {
        let histogram = LatencyHistogram::default();
        for micros in [10, 50, 51, 999, 1_000, 20_000_000] {
            histogram.observe(micros);
        }
        let (buckets, count, sum) = histogram.read();
        assert_eq!(&buckets[..5], &[2, 1, 0, 0, 2]);
        assert_eq!(buckets.iter().sum::<u64>(), 5, "over 10 s is in no bucket");
        assert_eq!(count, 6);
        assert_eq!(sum, 10 + 50 + 51 + 999 + 1_000 + 20_000_000);
    }

    #[tokio::test]
    async fn a_streamed_answer_is_counted_at_its_trailers() {
        let table = table();
        let service = service(&table, 8, || Response::new(streamed(Code::Ok)));
        let response = service.oneshot(request(PATH)).await.unwrap();
        let get = method(&table, PATH);
        assert_eq!(get.started.load(Ordering::Relaxed), 1);
        assert_eq!(get.in_flight(), 1, "the body is not over");
        let mut body = response.into_body();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        assert_eq!(handled(get, Code::Ok), 0);
        assert!(body.frame().await.unwrap().unwrap().is_trailers());
        assert_eq!(handled(get, Code::Ok), 1);
        assert_eq!(get.in_flight(), 0);
        assert_eq!(get.latency.read().1, 1);
        drop(body);
        assert_eq!(handled(get, Code::Cancelled), 0, "counted once");
    }

    #[tokio::test]
    async fn an_error_in_the_headers_is_counted_at_once() {
        let table = table();
        let service = service(&table, 8, || {
            let status = tonic::Status::not_found("no such customer");
            status
                .into_http::<()>()
                .map(|()| StreamBody::new(tokio_stream::iter(Vec::new())))
        });
        let response = service.oneshot(request(PATH)).await.unwrap();
        assert_eq!(handled(method(&table, PATH), Code::NotFound), 1);
        drop(response);
        assert_eq!(handled(method(&table, PATH), Code::Cancelled), 0);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_is_cancelled() {
        let table = table();
        let service = service(&table, 8, || Response::new(streamed(Code::Ok)));
        let response = service.oneshot(request(PATH)).await.unwrap();
        drop(response);
        let get = method(&table, PATH);
        assert_eq!(handled(get, Code::Cancelled), 1);
        assert_eq!(handled(get, Code::Ok), 0);
        assert_eq!(get.in_flight(), 0);
    }

    #[tokio::test]
    async fn calls_over_the_connection_limit_are_shed_and_counted() {
        let table = table();
        let connection = service(&table, 1, || Response::new(streamed(Code::Ok)));
        // The first call holds the connection's one place until it answers.
        let first = connection.clone().call(request(PATH));
        let shed = connection.clone().oneshot(request(PATH)).await.unwrap();
        assert_eq!(
            shed.headers().get("grpc-status").unwrap(),
            &HeaderValue::from(Code::ResourceExhausted as i32)
        );
        assert!(shed.body().is_end_stream());
        let get = method(&table, PATH);
        assert_eq!(get.shed.load(Ordering::Relaxed), 1);
        assert_eq!(handled(get, Code::ResourceExhausted), 1);

        // Another connection has places of its own.
        let other = service(&table, 1, || Response::new(streamed(Code::Ok)));
        let response = other.oneshot(request(PATH)).await.unwrap();
        assert!(response.headers().get("grpc-status").is_none());

        // Once the first call answers, its place is free again.
        drop(first.await.unwrap());
        let response = connection.oneshot(request(PATH)).await.unwrap();
        assert!(response.headers().get("grpc-status").is_none());
        assert_eq!(get.shed.load(Ordering::Relaxed), 1);
    }
}
