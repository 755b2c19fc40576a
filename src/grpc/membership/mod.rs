//! `segmentd.v1.MembershipService`: watches of segment members and persona
//! assignments, and the segments of one customer.
//!
//! - this module: the service, and the two watches.
//! - `list`: `ListCustomerSegments`.
//!
//! A watch runs as a task that follows the engine's [`Feed`] and sends
//! into a small buffer that the response stream drains. A watcher that
//! reads nothing for the engine's slow-reader timeout while a message
//! waits is ended with SLOW_READER; one that goes away ends the task at
//! its next message or evaluation.

mod list;

use std::collections::BTreeSet;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::audit::{self, Audit};
use super::check::{field, All};
use super::convert::{channel_from_proto, timestamp_to_proto};
use super::pb::membership_service_server::MembershipService;
use super::pb::{self};
use super::{ready, EngineSlot};
use crate::domain::segment::SegmentId;
use crate::domain::{Error, Timestamp};
use crate::engine::watch::{Cause, Change, Cursor, Feed, FeedItem, Start, Subject};

/// A server stream of watch messages.
type WatchStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Messages a watch buffers for a watcher who has not read them yet.
const WATCH_BUFFER: usize = 8;
/// Initial members per message when none is asked for.
const DEFAULT_INITIAL_BATCH: usize = 1000;
/// The most initial members per message.
const MAX_INITIAL_BATCH: usize = 10_000;

/// The MembershipService handlers.
#[derive(Debug, Clone)]
pub struct MembershipApi {
    /// The engine, once ready.
    engine: EngineSlot,
}

impl MembershipApi {
    /// Handlers over `engine`.
    pub fn new(engine: EngineSlot) -> Self {
        MembershipApi { engine }
    }
}

fn initial_batch(requested: i32) -> Result<usize, String> {
    match usize::try_from(requested) {
        Ok(0) => Ok(DEFAULT_INITIAL_BATCH),
        Ok(size) if size <= MAX_INITIAL_BATCH => Ok(size),
        _ => Err(format!("0 to {MAX_INITIAL_BATCH}, got {requested}")),
    }
}

/// How a watch starts, from its cursor and whether it asks for the
/// initial members.
fn start_of(cursor: String, initial: bool, initial_field: &str) -> Result<Start, Error> {
    match (cursor.is_empty(), initial) {
        (true, false) => Ok(Start::Now),
        (true, true) => Ok(Start::Initial),
        (false, false) => Ok(Start::After(cursor)),
        (false, true) => Err(Error::invalid(
            initial_field,
            "a watch resumes from a cursor or starts with the initial members, not both",
        )),
    }
}

fn cause_to_proto(cause: Cause) -> i32 {
    let cause = match cause {
        Cause::Activity => pb::ChangeCause::Activity,
        Cause::Profile => pb::ChangeCause::Profile,
        Cause::Consent => pb::ChangeCause::Consent,
        Cause::Erasure => pb::ChangeCause::Erasure,
        Cause::Clock => pb::ChangeCause::Clock,
        Cause::OtherCustomers => pb::ChangeCause::OtherCustomers,
        Cause::SegmentChanged => pb::ChangeCause::SegmentChanged,
        Cause::CatalogChanged => pb::ChangeCause::CatalogChanged,
    };
    cause as i32
}

fn customer_name(id: &str) -> String {
    format!("customers/{id}")
}

/// One kind of watch: how its messages are made.
trait WatchKind: Send + 'static {
    /// The message type.
    type Message: Send + 'static;
    /// A batch of the initial members.
    fn initial(members: &[(String, String)], last: bool) -> Self::Message;
    /// The changes of one evaluation.
    fn changes(changes: Vec<Change>) -> Self::Message;
    /// Progress.
    fn progress() -> Self::Message;
    /// Sets the time and cursor of a message.
    fn stamp(message: &mut Self::Message, at: Timestamp, cursor: Option<Cursor>);
}

/// Segment membership.
struct Members;

impl WatchKind for Members {
    type Message = pb::WatchSegmentMembershipResponse;

    fn initial(members: &[(String, String)], last: bool) -> Self::Message {
        use pb::watch_segment_membership_response::Event;
        pb::WatchSegmentMembershipResponse {
            event: Some(Event::Initial(pb::InitialMembers {
                customers: members.iter().map(|(id, _)| customer_name(id)).collect(),
                last,
            })),
            ..Default::default()
        }
    }

    fn changes(changes: Vec<Change>) -> Self::Message {
        use pb::watch_segment_membership_response::Event;
        let mut message = pb::MembershipChanges::default();
        for change in changes {
            let item = pb::MembershipChange {
                customer: customer_name(&change.customer),
                cause: cause_to_proto(change.cause),
            };
            if change.entered {
                message.entered.push(item);
            } else {
                message.left.push(item);
            }
        }
        pb::WatchSegmentMembershipResponse {
            event: Some(Event::Changes(message)),
            ..Default::default()
        }
    }

    fn progress() -> Self::Message {
        use pb::watch_segment_membership_response::Event;
        pb::WatchSegmentMembershipResponse {
            event: Some(Event::Progress(pb::Progress {})),
            ..Default::default()
        }
    }

    fn stamp(message: &mut Self::Message, at: Timestamp, cursor: Option<Cursor>) {
        message.evaluation_time = Some(timestamp_to_proto(at));
        message.cursor = cursor.map(Cursor::to_text).unwrap_or_default();
    }
}

/// Persona assignments.
struct Personas;

impl WatchKind for Personas {
    type Message = pb::WatchPersonaAssignmentsResponse;

    fn initial(members: &[(String, String)], last: bool) -> Self::Message {
        use pb::watch_persona_assignments_response::Event;
        pb::WatchPersonaAssignmentsResponse {
            event: Some(Event::Initial(pb::InitialAssignments {
                assignments: members
                    .iter()
                    .map(|(id, persona)| pb::ExportedAssignment {
                        customer: customer_name(id),
                        persona_id: persona.clone(),
                    })
                    .collect(),
                last,
            })),
            ..Default::default()
        }
    }

    fn changes(changes: Vec<Change>) -> Self::Message {
        use pb::watch_persona_assignments_response::Event;
        let moves = changes
            .into_iter()
            .map(|change| pb::PersonaMove {
                customer: customer_name(&change.customer),
                from_persona_id: change.from,
                to_persona_id: change.to,
                cause: cause_to_proto(change.cause),
            })
            .collect();
        pb::WatchPersonaAssignmentsResponse {
            event: Some(Event::Moves(pb::PersonaMoves { moves })),
            ..Default::default()
        }
    }

    fn progress() -> Self::Message {
        use pb::watch_persona_assignments_response::Event;
        pb::WatchPersonaAssignmentsResponse {
            event: Some(Event::Progress(pb::Progress {})),
            ..Default::default()
        }
    }

    fn stamp(message: &mut Self::Message, at: Timestamp, cursor: Option<Cursor>) {
        message.evaluation_time = Some(timestamp_to_proto(at));
        message.cursor = cursor.map(Cursor::to_text).unwrap_or_default();
    }
}

/// Sends `message`, waiting at most `patience` for room; `Err` with the
/// reason to stop. `resume` is the cursor of the last message sent, or
/// `None` while the initial members are sent.
async fn send<T>(
    sender: &mpsc::Sender<Result<T, Status>>,
    message: T,
    patience: Duration,
    resume: Option<Cursor>,
) -> Result<(), Option<Status>> {
    match sender.send_timeout(Ok(message), patience).await {
        Ok(()) => Ok(()),
        Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(None),
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
            let waited = patience.as_secs_f64();
            let (message, cursor) = match resume {
                Some(cursor) => (
                    format!(
                        "this watcher read nothing for {waited} s while changes waited for it, \
                         and was ended: resume with cursor {}",
                        cursor.to_text()
                    ),
                    cursor.to_text(),
                ),
                None => (
                    format!(
                        "this watcher read nothing for {waited} s while its initial members \
                         waited for it, and was ended: watch again with the initial members"
                    ),
                    String::new(),
                ),
            };
            Err(Some(Error::SlowReader { message, cursor }.into()))
        }
    }
}

/// When a watch whose request sets a `grpc-timeout` ends.
fn deadline_of<T>(request: &Request<T>) -> Option<Instant> {
    let text = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let timeout = super::consistency::timeout_of(text)?;
    // Ended a little before, so that the status reaches the client in time.
    let margin = (timeout / 10).min(Duration::from_secs(1));
    Instant::now().checked_add(timeout - margin)
}

/// How a watch runs: its initial batch size, how long it waits for a slow
/// reader, the name it reports when its segment ends, and the client's
/// deadline.
struct Terms {
    /// Initial members per message.
    batch: usize,
    /// How long a message may wait for room before the watcher is ended.
    patience: Duration,
    /// The segment's name, for the NOT_FOUND that ends its watch.
    ended: Option<String>,
    /// When the watch ends, from the call's deadline.
    deadline: Option<Instant>,
}

/// Runs one watch until the client's deadline, if it set one.
async fn follow_until<K: WatchKind>(
    sender: mpsc::Sender<Result<K::Message, Status>>,
    started: crate::engine::watch::Started,
    terms: Terms,
) -> Option<Status> {
    let Some(deadline) = terms.deadline else {
        return follow::<K>(sender, started, terms.batch, terms.patience, terms.ended).await;
    };
    let watched = follow::<K>(sender, started, terms.batch, terms.patience, terms.ended);
    tokio::select! {
        stop = watched => stop,
        () = tokio::time::sleep_until(deadline.into()) => {
            Some(Status::deadline_exceeded(
                "the call's deadline passed: the watch ended; resume with the cursor of the \
                 last message received",
            ))
        }
    }
}

/// Runs one watch: the initial members, then the feed, into `sender`;
/// returns the status that ends the stream, if one does.
async fn follow<K: WatchKind>(
    sender: mpsc::Sender<Result<K::Message, Status>>,
    started: crate::engine::watch::Started,
    batch: usize,
    patience: Duration,
    ended: Option<String>,
) -> Option<Status> {
    let mut feed: Feed = started.feed;
    let mut cursor = started.cursor;
    match &started.initial {
        Some(members) => {
            let batches = members.chunks(batch.max(1)).count().max(1);
            for (number, chunk) in members
                .chunks(batch.max(1))
                .chain(members.is_empty().then_some(&members[..0]))
                .enumerate()
            {
                let last = number + 1 == batches;
                let mut message = K::initial(chunk, last);
                K::stamp(&mut message, started.at, last.then_some(cursor));
                if let Err(stop) = send(&sender, message, patience, None).await {
                    return stop;
                }
            }
        }
        // A resumed watch hears first of the changes after its cursor.
        None if started.resumed => {}
        None => {
            let mut message = K::progress();
            K::stamp(&mut message, started.at, Some(cursor));
            if let Err(stop) = send(&sender, message, patience, Some(cursor)).await {
                return stop;
            }
        }
    }
    loop {
        let item = tokio::select! {
            item = feed.next() => item,
            () = sender.closed() => return None,
        };
        let (message, after) = match item {
            Ok(FeedItem::Changes {
                changes,
                at,
                cursor: after,
            }) => {
                let mut message = K::changes(changes);
                K::stamp(&mut message, at, Some(after));
                (message, after)
            }
            Ok(FeedItem::Progress { at, cursor: after }) => {
                let mut message = K::progress();
                K::stamp(&mut message, at, Some(after));
                (message, after)
            }
            Ok(FeedItem::Ended) => {
                let name = ended.unwrap_or_default();
                return Some(Error::NotFound(name).into());
            }
            Err(error) => return Some(error.into()),
        };
        // The status that ends a slow watcher names the last cursor it
        // was sent.
        if let Err(stop) = send(&sender, message, patience, Some(cursor)).await {
            return stop;
        }
        cursor = after;
    }
}

/// Starts the task of a watch, and returns its response stream.
fn spawn_watch<K: WatchKind>(
    started: crate::engine::watch::Started,
    terms: Terms,
) -> WatchStream<K::Message> {
    let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
    let (last_sender, last_receiver) = mpsc::channel(1);
    tokio::spawn(async move {
        if let Some(status) = follow_until::<K>(sender, started, terms).await {
            let _ = last_sender.send(Err(status)).await;
        }
    });
    Box::pin(ReceiverStream::new(receiver).chain(ReceiverStream::new(last_receiver)))
}

#[tonic::async_trait]
impl MembershipService for MembershipApi {
    type WatchSegmentMembershipStream = WatchStream<pb::WatchSegmentMembershipResponse>;
    type WatchPersonaAssignmentsStream = WatchStream<pb::WatchPersonaAssignmentsResponse>;

    async fn watch_segment_membership(
        &self,
        request: Request<pb::WatchSegmentMembershipRequest>,
    ) -> Result<Response<Self::WatchSegmentMembershipStream>, Status> {
        let audit = Audit::new(
            &request,
            "WatchSegmentMembership",
            audit::named(&request.get_ref().segment),
        );
        audit.outcome(
            async {
                let engine = ready(&self.engine)?;
                let deadline = deadline_of(&request);
                let request = request.into_inner();
                let (id, channel, start, batch) = (
                    field("segment", SegmentId::from_name(&request.segment)),
                    field("channel", channel_from_proto(request.channel)),
                    start_of(
                        request.cursor,
                        request.include_initial_members,
                        "include_initial_members",
                    ),
                    field(
                        "initial_batch_size",
                        initial_batch(request.initial_batch_size),
                    ),
                )
                    .all()?;
                let name = id.name();
                let subject = Subject::Segment {
                    id: id.as_str().to_owned(),
                    channel,
                };
                let started = engine.watch(subject, start, BTreeSet::new()).await?;
                let patience = engine.slow_reader_timeout();
                let terms = Terms {
                    batch,
                    patience,
                    ended: Some(name),
                    deadline,
                };
                Ok(Response::new(spawn_watch::<Members>(started, terms)))
            }
            .await,
        )
    }

    async fn watch_persona_assignments(
        &self,
        request: Request<pb::WatchPersonaAssignmentsRequest>,
    ) -> Result<Response<Self::WatchPersonaAssignmentsStream>, Status> {
        let audit = Audit::new(
            &request,
            "WatchPersonaAssignments",
            audit::CATALOG.to_owned(),
        );
        audit.outcome(
            async {
                let engine = ready(&self.engine)?;
                let deadline = deadline_of(&request);
                let request = request.into_inner();
                let (start, batch) = (
                    start_of(
                        request.cursor,
                        request.include_initial_assignments,
                        "include_initial_assignments",
                    ),
                    field(
                        "initial_batch_size",
                        initial_batch(request.initial_batch_size),
                    ),
                )
                    .all()?;
                let catalog = engine.persona_catalog();
                for (index, id) in request.persona_ids.iter().enumerate() {
                    if !catalog.catalog.personas.iter().any(|p| &p.id == id) {
                        return Err(Error::invalid(
                            format!("persona_ids[{index}]"),
                            format!(
                                "{id} is not in the catalog (revision {})",
                                catalog.catalog.revision
                            ),
                        )
                        .into());
                    }
                }
                let personas: BTreeSet<String> = request.persona_ids.into_iter().collect();
                let mut started = engine
                    .watch(Subject::Personas, start, personas.clone())
                    .await?;
                if let Some(initial) = &mut started.initial {
                    initial
                        .retain(|(_, persona)| personas.is_empty() || personas.contains(persona));
                }
                let patience = engine.slow_reader_timeout();
                let terms = Terms {
                    batch,
                    patience,
                    ended: None,
                    deadline,
                };
                Ok(Response::new(spawn_watch::<Personas>(started, terms)))
            }
            .await,
        )
    }

    async fn list_customer_segments(
        &self,
        request: Request<pb::ListCustomerSegmentsRequest>,
    ) -> Result<Response<pb::ListCustomerSegmentsResponse>, Status> {
        let engine = ready(&self.engine)?;
        list::list_customer_segments(&engine, request.into_inner())
            .await
            .map(Response::new)
    }
}
