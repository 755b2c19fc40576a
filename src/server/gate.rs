//! The request gate: what a client can make the server hold before a
//! handler sees its request.
//!
//! tonic's decoder reserves a message's announced length as soon as it has
//! read the 5-byte gRPC prefix, so a client that announces large messages on
//! many streams, and then sends nothing more, makes the server reserve that
//! much for each. The gate stands in front of the decoder and wraps every
//! request body so that tonic only ever sees whole messages:
//!
//! - A DATA frame that holds whole messages is handed on as it is, uncopied.
//! - The frames of a message split over several are copied into one buffer
//!   that grows with the bytes received, never with the bytes announced, and
//!   handed on as one chunk once the message is whole.
//! - Those buffers draw on one server-wide budget
//!   ([`RequestLimits::max_buffered_request_bytes`]); a message that cannot
//!   get its next bytes from it ends its call with RESOURCE_EXHAUSTED. A
//!   message handed on keeps its share until tonic asks for more, which it
//!   does once it has decoded the message.
//! - A message that has begun must be whole within
//!   [`RequestLimits::message_timeout`] of the server waiting for it (the
//!   time a handler spends on the message before is not counted);
//!   otherwise its call ends with
//!   DEADLINE_EXCEEDED. (Not CANCELLED: tonic takes a CANCELLED request
//!   body for the end of the stream, not for an error.)
//! - A message announced over the largest message size is handed on at
//!   once, so that tonic refuses it as it always has.
//!
//! What HTTP/2 holds before the gate reads it is bounded by the
//! flow-control windows the server announces
//! ([`RequestLimits::stream_window_bytes`],
//! [`RequestLimits::connection_window_bytes`]).

use std::collections::VecDeque;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::ErrorDetails;
use tower::util::MapRequestLayer;

use crate::grpc::status::{reason, status_with, ErrorInfo};

/// The `reason` of the `ErrorInfo` of a call whose request message did not
/// arrive within the message timeout (DEADLINE_EXCEEDED).
pub const MESSAGE_TIMEOUT_REASON: &str = "REQUEST_MESSAGE_TIMEOUT";

/// The length of the gRPC prefix of a message: a compression flag and a
/// big-endian `u32` length.
const PREFIX_BYTES: usize = 5;

/// Bounds on the request bytes the server holds for its clients.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Bytes of request messages still arriving that the server buffers
    /// at once, over all calls and connections.
    pub max_buffered_request_bytes: usize,
    /// How long a request message may take to arrive in full, from its
    /// first byte.
    pub message_timeout: Duration,
    /// The HTTP/2 flow-control window of one stream: the bytes a client may
    /// send on it before the server has read them.
    pub stream_window_bytes: u32,
    /// The HTTP/2 flow-control window of one connection, over all its
    /// streams.
    pub connection_window_bytes: u32,
}

/// What every gated body of one server shares.
#[derive(Debug)]
struct Gate {
    /// The budget of buffered request bytes, one permit a byte.
    budget: Arc<Semaphore>,
    /// The size of the budget, for messages.
    budget_bytes: usize,
    /// How long a message may take to arrive.
    message_timeout: Duration,
    /// Announced lengths over this are handed on for tonic to refuse.
    max_message_bytes: usize,
}

impl Gate {
    /// The status of a call whose message cannot get budget.
    fn exhausted(&self) -> Status {
        tracing::warn!(
            budget_bytes = self.budget_bytes,
            "request buffer budget exhausted, call refused"
        );
        status_with(
            Code::ResourceExhausted,
            format!(
                "the server is already buffering the most request bytes it may ({} bytes); retry later",
                self.budget_bytes
            ),
            ErrorInfo::new(
                reason::RESOURCE_EXHAUSTED,
                [
                    ("subject", "buffered_request_bytes".to_owned()),
                    ("limit_bytes", self.budget_bytes.to_string()),
                ],
            ),
            ErrorDetails::new(),
        )
    }

    /// The status of a call whose message did not arrive in time.
    fn timed_out(&self) -> Status {
        let timeout_ms = self.message_timeout.as_millis();
        tracing::debug!(timeout_ms, "request message timed out");
        status_with(
            Code::DeadlineExceeded,
            format!(
                "a request message did not arrive in full within {timeout_ms} ms of its first byte"
            ),
            ErrorInfo::new(
                MESSAGE_TIMEOUT_REASON,
                [("timeout_ms", timeout_ms.to_string())],
            ),
            ErrorDetails::new(),
        )
    }
}

/// The layer that puts every request body behind the gate; see the module
/// docs. `max_message_bytes` is the services' largest message.
pub fn whole_messages(
    limits: &RequestLimits,
    max_message_bytes: usize,
) -> MapRequestLayer<impl Fn(Request<Body>) -> Request<Body> + Clone> {
    let budget_bytes = limits
        .max_buffered_request_bytes
        .min(Semaphore::MAX_PERMITS);
    let gate = Arc::new(Gate {
        budget: Arc::new(Semaphore::new(budget_bytes)),
        budget_bytes,
        message_timeout: limits.message_timeout,
        max_message_bytes,
    });
    MapRequestLayer::new(move |request: Request<Body>| {
        let gate = gate.clone();
        request.map(|body| Body::new(WholeMessages::new(body, gate)))
    })
}

/// A request body that yields whole gRPC messages only.
struct WholeMessages {
    /// The body as received.
    inner: Body,
    /// The budget and the limits.
    gate: Arc<Gate>,
    /// Chunks ready to hand on, in order.
    ready: VecDeque<Bytes>,
    /// Request trailers, handed on after `ready`.
    trailers: Option<HeaderMap>,
    /// The start of the message being assembled.
    partial: Vec<u8>,
    /// The length of the message being assembled, prefix included, once
    /// its prefix is in.
    expected: Option<usize>,
    /// The budget drawn for `partial`.
    drawn: Option<OwnedSemaphorePermit>,
    /// The budget of the last message handed on, given back when tonic
    /// asks for more.
    handed_on: Option<OwnedSemaphorePermit>,
    /// When the message being assembled must be whole.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The last poll handed tonic a chunk: until it polls again the server
    /// is not reading, and that time does not count against the deadline.
    gave: bool,
    /// A message was announced over the size limit: everything from it on
    /// is handed on as it comes, for tonic to refuse.
    passing: bool,
    /// The body has ended, or failed.
    ended: bool,
}

impl WholeMessages {
    fn new(inner: Body, gate: Arc<Gate>) -> Self {
        WholeMessages {
            inner,
            gate,
            ready: VecDeque::new(),
            trailers: None,
            partial: Vec::new(),
            expected: None,
            drawn: None,
            handed_on: None,
            deadline: None,
            gave: false,
            passing: false,
            ended: false,
        }
    }

    /// Takes in one DATA frame: queues what is whole, keeps the rest.
    fn take(&mut self, mut data: Bytes) -> Result<(), Status> {
        if self.passing {
            self.ready.push_back(data);
            return Ok(());
        }
        while !data.is_empty() {
            if self.partial.is_empty() {
                let whole = whole_messages_len(&data);
                if whole == data.len() {
                    self.ready.push_back(data);
                    return Ok(());
                }
                if whole > 0 {
                    self.ready.push_back(data.split_to(whole));
                }
                self.deadline = Some(Box::pin(tokio::time::sleep(self.gate.message_timeout)));
            }
            let wanted = self.expected.unwrap_or(PREFIX_BYTES) - self.partial.len();
            let piece = data.split_to(wanted.min(data.len()));
            self.append(&piece)?;
            if self.expected.is_none() && self.partial.len() == PREFIX_BYTES {
                let announced = announced_len(&self.partial);
                if announced > self.gate.max_message_bytes {
                    self.pass_from_here(data);
                    return Ok(());
                }
                self.expected = Some(PREFIX_BYTES + announced);
            }
            if self.expected == Some(self.partial.len()) {
                self.hand_on();
            }
        }
        match &self.deadline {
            Some(deadline) if deadline.deadline() <= Instant::now() => Err(self.gate.timed_out()),
            _ => Ok(()),
        }
    }

    /// Copies `piece` to the message being assembled, drawing budget for
    /// it: the buffer at most doubles at a time, and never past the
    /// announced length.
    fn append(&mut self, piece: &[u8]) -> Result<(), Status> {
        let needed = self.partial.len() + piece.len();
        let drawn = self.drawn.as_ref().map_or(0, |drawn| drawn.num_permits());
        if needed > drawn {
            let goal = self.expected.unwrap_or(PREFIX_BYTES);
            let target = needed.max((drawn * 2).min(goal));
            let more = u32::try_from(target - drawn).map_err(|_| self.gate.exhausted())?;
            let Ok(permit) = self.gate.budget.clone().try_acquire_many_owned(more) else {
                return Err(self.gate.exhausted());
            };
            match &mut self.drawn {
                Some(drawn) => drawn.merge(permit),
                None => self.drawn = Some(permit),
            }
            self.partial.reserve_exact(target - self.partial.len());
        }
        self.partial.extend_from_slice(piece);
        Ok(())
    }

    /// The message being assembled is whole: queues it as one chunk.
    fn hand_on(&mut self) {
        let message = Bytes::from(std::mem::take(&mut self.partial));
        self.ready.push_back(message);
        self.expected = None;
        self.deadline = None;
        self.handed_on = self.drawn.take();
    }

    /// Queues what was assembled and `rest` as they are, and everything
    /// after them too.
    fn pass_from_here(&mut self, rest: Bytes) {
        self.passing = true;
        self.flush();
        if !rest.is_empty() {
            self.ready.push_back(rest);
        }
    }

    /// Queues what was assembled as it is: the body ends before the message.
    fn flush(&mut self) {
        if !self.partial.is_empty() {
            self.ready
                .push_back(Bytes::from(std::mem::take(&mut self.partial)));
        }
        self.expected = None;
        self.deadline = None;
        self.drawn = None;
    }

    /// Ends the body after an error, releasing what it holds.
    fn fail(&mut self, status: Status) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.partial = Vec::new();
        self.ready.clear();
        self.expected = None;
        self.deadline = None;
        self.drawn = None;
        self.handed_on = None;
        self.ended = true;
        Poll::Ready(Some(Err(status)))
    }
}

impl http_body::Body for WholeMessages {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        // tonic asks for more once it has decoded what it was given.
        this.handed_on = None;
        // Only time spent waiting for the client counts: a handler that
        // took its time with the last message (an import batch, say) made
        // the client wait, not the other way round.
        if std::mem::take(&mut this.gave) {
            if let Some(deadline) = &mut this.deadline {
                deadline
                    .as_mut()
                    .reset(Instant::now() + this.gate.message_timeout);
            }
        }
        loop {
            if let Some(chunk) = this.ready.pop_front() {
                this.gave = true;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if let Some(trailers) = this.trailers.take() {
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(status))) => return this.fail(status),
                Poll::Ready(None) => {
                    this.flush();
                    this.ended = true;
                    continue;
                }
                Poll::Pending => {
                    let Some(deadline) = &mut this.deadline else {
                        return Poll::Pending;
                    };
                    if deadline.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let status = this.gate.timed_out();
                    return this.fail(status);
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    if let Err(status) = this.take(data) {
                        return this.fail(status);
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        this.flush();
                        this.trailers = Some(trailers);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty()
            && self.trailers.is_none()
            && self.partial.is_empty()
            && (self.ended || self.inner.is_end_stream())
    }
}

/// The length a message prefix announces.
fn announced_len(prefix: &[u8]) -> usize {
    u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize
}

/// How many bytes at the start of `data` are whole messages.
fn whole_messages_len(data: &[u8]) -> usize {
    let mut whole = 0;
    while let Some(prefix) = data.get(whole..whole + PREFIX_BYTES) {
        let end = whole + PREFIX_BYTES + announced_len(prefix);
        if end > data.len() {
            break;
        }
        whole = end;
    }
    whole
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use http_body::Body as _;
    use tonic_types::StatusExt as _;

    use super::*;

    fn message(len: usize) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, len));
        bytes
    }

    /// A request body of the given DATA frames, then the end or, with
    /// `then_wait`, nothing more ever.
    struct Frames {
        frames: VecDeque<Bytes>,
        then_wait: bool,
    }

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            match self.frames.pop_front() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None if self.then_wait => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn gate(budget_bytes: usize) -> Gate {
        Gate {
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            message_timeout: Duration::from_secs(10),
            max_message_bytes: 1024,
        }
    }

    fn gated(frames: Vec<Bytes>, then_wait: bool, budget_bytes: usize) -> WholeMessages {
        let body = Body::new(Frames {
            frames: frames.into(),
            then_wait,
        });
        WholeMessages::new(body, Arc::new(gate(budget_bytes)))
    }

    /// The chunks the body yields until it ends, or its error.
    async fn chunks(body: &mut WholeMessages) -> Result<Vec<Bytes>, Status> {
        let mut chunks = Vec::new();
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
            chunks.push(frame?.into_data().unwrap());
        }
        Ok(chunks)
    }

    #[test]
    fn whole_messages_are_counted_up_to_the_first_partial_one() {
        let mut data = message(3);
        data.extend(message(0));
        assert_eq!(whole_messages_len(&data), 13);
        data.extend(&message(10)[..7]);
        assert_eq!(whole_messages_len(&data), 13);
        assert_eq!(whole_messages_len(&[0, 0, 0]), 0);
    }

    #[tokio::test]
    async fn a_frame_of_whole_messages_passes_uncopied() {
        let mut data = message(3);
        data.extend(message(5));
        let frame = Bytes::from(data);
        let mut body = gated(vec![frame.clone()], false, 1024);
        let chunks = chunks(&mut body).await.unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].as_ptr(), frame.as_ptr());
    }

    #[tokio::test]
    async fn messages_split_over_frames_are_handed_on_whole() {
        let (first, second, third) = (message(10), message(4), message(20));
        let stream: Vec<u8> = [first.clone(), second.clone(), third.clone()].concat();
        // Cuts inside the first prefix, inside the first body, and inside
        // the third message.
        let cuts = [0, 3, 9, first.len() + second.len() + 8, stream.len()];
        let frames = cuts
            .windows(2)
            .map(|cut| Bytes::copy_from_slice(&stream[cut[0]..cut[1]]))
            .collect();
        let mut body = gated(frames, false, 1024);
        let chunks = chunks(&mut body).await.unwrap();
        let chunks: Vec<&[u8]> = chunks.iter().map(|chunk| &chunk[..]).collect();
        assert_eq!(chunks, [&first[..], &second[..], &third[..]]);
        assert_eq!(body.gate.budget.available_permits(), 1024);
    }

    #[tokio::test]
    async fn a_message_over_the_size_limit_is_passed_on_for_tonic_to_refuse() {
        let big = message(2000);
        let frames = vec![
            Bytes::copy_from_slice(&big[..7]),
            Bytes::copy_from_slice(&big[7..]),
        ];
        let mut body = gated(frames, false, 1024);
        let chunks = chunks(&mut body).await.unwrap();
        assert_eq!(chunks.concat(), big);
        assert_eq!(body.gate.budget.available_permits(), 1024);
    }

    #[tokio::test]
    async fn a_message_without_budget_is_resource_exhausted() {
        let wanted = message(1000);
        let frames = wanted.chunks(100).map(Bytes::copy_from_slice).collect();
        let mut body = gated(frames, false, 500);
        let status = chunks(&mut body).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, reason::RESOURCE_EXHAUSTED);
        assert_eq!(info.metadata["subject"], "buffered_request_bytes");
        assert_eq!(body.gate.budget.available_permits(), 500);
    }

    #[tokio::test]
    async fn a_message_that_stops_arriving_times_out() {
        let frames = vec![Bytes::copy_from_slice(&message(100)[..50])];
        let mut body = gated(frames, true, 1024);
        body.gate = Arc::new(Gate {
            message_timeout: Duration::from_millis(50),
            ..gate(1024)
        });
        let status = chunks(&mut body).await.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, MESSAGE_TIMEOUT_REASON);
        assert_eq!(info.metadata["timeout_ms"], "50");
        assert_eq!(body.gate.budget.available_permits(), 1024);
    }

    #[tokio::test]
    async fn time_the_server_spends_on_a_message_does_not_count_against_the_next() {
        // A frame with a whole message and the start of the next, then the
        // rest of the next: the handler takes longer with the first than
        // the timeout allows, and the second must still be served.
        let first = message(10);
        let second = message(100);
        let mut opening = first.clone();
        opening.extend_from_slice(&second[..40]);
        let frames = vec![
            Bytes::from(opening),
            Bytes::copy_from_slice(&second[40..70]),
            Bytes::copy_from_slice(&second[70..]),
        ];
        let mut body = gated(frames, false, 1024);
        body.gate = Arc::new(Gate {
            message_timeout: Duration::from_millis(50),
            ..gate(1024)
        });
        let handed = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(handed.into_data().unwrap(), Bytes::from(first));
        // The handler works on it for twice the timeout.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rest = chunks(&mut body).await.unwrap();
        assert_eq!(rest, [Bytes::from(second)]);
    }
}
