//! The log on a NATS JetStream stream: [`JetStreamLog`].
//!
//! Records are messages on the subject `<stream lowercased>.log.g0` of a
//! file-backed stream, their id in the `Nats-Msg-Id` header, so the
//! stream's duplicate window (two minutes) answers a retried append with
//! the first one's position. A record's position is its stream sequence.
//! Readers are ordered consumers, which the client recreates from the last
//! sequence they delivered when it sees a gap or misses heartbeats; a
//! reader also opens a new one itself when the client connects to a
//! server again or when it stalls behind the log, since the servers lose
//! an ordered consumer (it lives in memory on one server) when that server
//! goes away.
//! The published snapshot is the object `latest` of the object store
//! bucket `<stream>_SNAPSHOTS`, its position in the object's metadata.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig, OrderedErrorKind};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::object_store::{self, InfoErrorKind, ObjectMetadata, ObjectStore};
use async_nats::jetstream::stream::{self, DiscardPolicy, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{self, Message};
use async_nats::{ConnectErrorKind, ConnectOptions, Event};
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::Stream;

use super::{Appended, Bounds, Entries, Entry, Log, LogFuture, Position};
use crate::domain::{Error, Result};

/// How long [`JetStreamLog::connect`] tries to reach a server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between two tries to reach a server, or to append.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// The longest one try to append waits for the log's confirmation.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest one JetStream API request made while opening the log or
/// reading the snapshot waits for its answer. A request the servers drop
/// (as they may while a cluster elects its leaders, or while several
/// replicas create the stream at once) otherwise waits out the client's
/// 10 s request timeout; cut short, the caller tries again sooner.
const API_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a reader whose consumer was lost tries to open a new one
/// before it ends with an error.
const REOPEN_PATIENCE: Duration = Duration::from_secs(60);
/// How long a reader's pull request waits on the server; its idle
/// heartbeats come every half of it, and two missed ones make the client
/// recreate a consumer the servers lost (the default, 30 s, makes that 45 s).
const PULL_EXPIRY: Duration = Duration::from_secs(4);
/// How often a reader compares its position with the log's last record: a
/// reader that delivered nothing between two comparisons while the log
/// held a newer record opens a new consumer.
const STALL_CHECK: Duration = Duration::from_secs(1);
/// How long the stream remembers a record id (see the module docs of `log`).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The name of the published snapshot in the bucket.
const SNAPSHOT_OBJECT: &str = "latest";
/// The object metadata key that holds the snapshot's position.
const POSITION_KEY: &str = "position";

/// Where the log lives and how it is kept.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// The NATS servers to connect to, e.g. `nats://127.0.0.1:4222`; the
    /// client moves to another when one goes away.
    pub servers: Vec<String>,
    /// The stream's name, e.g. `SEGMENTD`. Its subjects are
    /// `<name lowercased>.log.>`, its snapshots in `<name>_SNAPSHOTS`.
    pub stream: String,
    /// How many servers keep each record, when this creates the stream
    /// and the snapshot bucket (an existing one is used as it is).
    pub replicas: usize,
    /// How long the stream keeps a record; `None` keeps it for ever.
    pub max_age: Option<Duration>,
    /// How many bytes of records the stream keeps before it drops the
    /// oldest; `None` for no bound.
    pub max_bytes: Option<u64>,
    /// A NATS credentials file to authenticate with.
    pub creds: Option<PathBuf>,
    /// A PEM file of the CA that signed the servers' certificates, for
    /// `tls://` URLs.
    pub tls_ca: Option<PathBuf>,
    /// The whole time one append may take, retries included, before it
    /// fails with `Error::Unavailable`.
    pub append_timeout: Duration,
}

/// A [`Log`] on a NATS JetStream stream (see the module docs).
pub struct JetStreamLog {
    /// The JetStream API of the connection.
    jetstream: jetstream::Context,
    /// The log's stream.
    stream: stream::Stream,
    /// The subject records are published to.
    subject: String,
    /// The bucket of the published snapshot.
    snapshots: ObjectStore,
    /// See [`JetStreamOptions::append_timeout`].
    append_timeout: Duration,
    /// How many times an append was sent again; see [`Log::append_retries`].
    append_retries: AtomicU64,
    /// Counts the connections made to a server, the first included.
    connections: Arc<watch::Sender<u64>>,
}

impl JetStreamLog {
    /// Connects to the servers, then gets the stream and the snapshot
    /// bucket, creating them when they are missing. Fails with
    /// `Error::Unavailable` when no server answers within 10 seconds;
    /// once connected, the client reconnects by itself for ever.
    pub async fn connect(options: JetStreamOptions) -> Result<Self> {
        let connections = Arc::new(watch::Sender::new(0));
        let client = connect_client(&options, connections.clone()).await?;
        let jetstream = jetstream::new(client);
        let stream = bounded(
            &format!("get or create the stream {}", options.stream),
            open_stream(&jetstream, &options),
        )
        .await?;
        let snapshots = bounded(
            &format!(
                "get or create the snapshot bucket {}_SNAPSHOTS",
                options.stream
            ),
            open_bucket(&jetstream, &options),
        )
        .await?;
        Ok(JetStreamLog {
            jetstream,
            stream,
            subject: format!("{}.log.g0", options.stream.to_lowercase()),
            snapshots,
            append_timeout: options.append_timeout,
            append_retries: AtomicU64::new(0),
            connections,
        })
    }

    /// Publishes `record` until the log confirms it or the append timeout
    /// is spent; `only_if_empty` expects the stream's last sequence to be
    /// 0, and answers `None` when it is not.
    async fn publish(
        &self,
        id: &str,
        record: Bytes,
        only_if_empty: bool,
    ) -> Result<Option<Appended>> {
        let deadline = Instant::now() + self.append_timeout;
        loop {
            let mut message = PublishMessage::build()
                .payload(record.clone())
                .message_id(id);
            if only_if_empty {
                message = message.expected_last_sequence(0);
            }
            let attempt = async {
                let ack = self
                    .jetstream
                    .send_publish(self.subject.clone(), message)
                    .await?;
                ack.await
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let failure = match tokio::time::timeout(remaining.min(ATTEMPT_TIMEOUT), attempt).await
            {
                Ok(Ok(ack)) => {
                    return Ok(Some(Appended {
                        position: ack.sequence,
                        duplicate: ack.duplicate,
                    }))
                }
                Ok(Err(error)) => match error.kind() {
                    PublishErrorKind::WrongLastSequence if only_if_empty => {
                        return self.first_record_is(id).await
                    }
                    PublishErrorKind::MaxPayloadExceeded => {
                        return Err(Error::ResourceExhausted {
                            subject: "log record".to_owned(),
                            description: format!(
                                "{} bytes is over the NATS servers' max_payload: {error}",
                                record.len()
                            ),
                        })
                    }
                    _ => error.to_string(),
                },
                Err(_) => "no confirmation in time".to_owned(),
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(Error::Unavailable(format!(
                    "the log did not confirm the write in {:?} (last answer: {failure}); \
                     it may or may not be stored: retry it",
                    self.append_timeout
                )));
            }
            self.append_retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(id, %failure, "append not confirmed, sending it again");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// What a refused `append_first` did: JetStream checks the expected
    /// last sequence before the duplicate window, so a retry of the append
    /// that won is refused too, and only the first record's id tells them
    /// apart.
    async fn first_record_is(&self, id: &str) -> Result<Option<Appended>> {
        let first = match self.stream.get_raw_message(1).await {
            Ok(first) => first,
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {
                return Ok(None)
            }
            Err(error) => return Err(unreachable_log("read the log's first record", error)),
        };
        let first_id = first
            .headers
            .get(NATS_MESSAGE_ID)
            .map(|first_id| first_id.as_str());
        Ok((first_id == Some(id)).then_some(Appended {
            position: 1,
            duplicate: true,
        }))
    }
}

impl Log for JetStreamLog {
    fn append(&self, id: String, record: Bytes) -> LogFuture<'_, Appended> {
        Box::pin(async move {
            let appended = self.publish(&id, record, false).await?;
            Ok(appended.expect("an append without expectations is never refused"))
        })
    }

    fn append_first(&self, id: String, record: Bytes) -> LogFuture<'_, Option<Appended>> {
        Box::pin(async move { self.publish(&id, record, true).await })
    }

    fn read_from(&self, from: Position) -> LogFuture<'_, Entries> {
        Box::pin(async move {
            let connections = self.connections.subscribe();
            let messages = open_consumer(&self.stream, from).await?;
            Ok(Box::pin(Reader {
                stream: self.stream.clone(),
                reconnected: Box::pin(next_connection(connections)),
                stall_check: Box::pin(log_last(self.stream.clone())),
                behind_at: None,
                messages: Some(messages),
                reopening: None,
                next: from,
                started: false,
                ended: false,
            }) as Entries)
        })
    }

    fn bounds(&self) -> LogFuture<'_, Bounds> {
        Box::pin(async move {
            let info = self
                .stream
                .get_info()
                .await
                .map_err(|error| unreachable_log("read the log's bounds", error))?;
            let state = info.state;
            let first = if state.messages == 0 {
                state.last_sequence + 1
            } else {
                state.first_sequence
            };
            Ok(Bounds {
                first,
                last: state.last_sequence,
            })
        })
    }

    fn put_snapshot<'a>(&'a self, position: Position, file: &'a Path) -> LogFuture<'a, ()> {
        Box::pin(async move {
            let mut reader = tokio::fs::File::open(file).await.map_err(|error| {
                Error::Internal(format!(
                    "opening the snapshot file {}: {error}",
                    file.display()
                ))
            })?;
            let metadata = ObjectMetadata {
                name: SNAPSHOT_OBJECT.to_owned(),
                metadata: HashMap::from([(POSITION_KEY.to_owned(), position.to_string())]),
                ..Default::default()
            };
            self.snapshots
                .put(metadata, &mut reader)
                .await
                .map_err(|error| unreachable_log("publish the snapshot", error))?;
            Ok(())
        })
    }

    fn snapshot_position(&self) -> LogFuture<'_, Option<Position>> {
        Box::pin(async move {
            let info = bounded("read the snapshot's position", async {
                Ok(self.snapshots.info(SNAPSHOT_OBJECT).await)
            })
            .await?;
            let info = match info {
                Ok(info) if !info.deleted => info,
                Ok(_) => return Ok(None),
                Err(error) if error.kind() == InfoErrorKind::NotFound => return Ok(None),
                Err(error) => return Err(unreachable_log("read the snapshot's position", error)),
            };
            snapshot_position(&info.metadata).map(Some)
        })
    }

    fn fetch_snapshot<'a>(&'a self, into: &'a Path) -> LogFuture<'a, Option<Position>> {
        Box::pin(async move {
            // Only opening the object is bounded: its bytes take as long as
            // they take.
            let object = bounded("fetch the snapshot", async {
                Ok(self.snapshots.get(SNAPSHOT_OBJECT).await)
            })
            .await?;
            let mut object = match object {
                Ok(object) => object,
                Err(error) if error.kind() == object_store::GetErrorKind::NotFound => {
                    return Ok(None)
                }
                Err(error) => return Err(unreachable_log("fetch the snapshot", error)),
            };
            let position = snapshot_position(&object.info().metadata)?;
            let staging = staging_path(into);
            let written = async {
                let mut file = tokio::fs::File::create(&staging).await?;
                tokio::io::copy(&mut object, &mut file).await?;
                file.sync_all().await?;
                file.shutdown().await?;
                tokio::fs::rename(&staging, into).await
            };
            if let Err(error) = written.await {
                let _ = tokio::fs::remove_file(&staging).await;
                return Err(Error::Unavailable(format!(
                    "could not fetch the snapshot into {}: {error}; retry",
                    into.display()
                )));
            }
            Ok(Some(position))
        })
    }

    /// How many times an append was sent again since the log was opened,
    /// because the log did not confirm it in time (a leader election, a
    /// server restarting).
    fn append_retries(&self) -> u64 {
        self.append_retries.load(Ordering::Relaxed)
    }
}

/// The records an ordered consumer delivers, as [`Entry`]s from the
/// reader's position on, each once and without a gap.
///
/// The client recreates an ordered consumer that missed a message, but
/// one that the servers lost (it lives in memory on one server, which
/// restarted or went away) only after two missed heartbeats: the reader
/// opens a new one from its next position at once whenever the client
/// connects again or pulls fail, and when it delivered nothing for a
/// [`STALL_CHECK`] while the log held newer records.
struct Reader {
    /// The stream read.
    stream: stream::Stream,
    /// Resolves when the client has connected to a server again.
    reconnected: Pin<Box<dyn Future<Output = watch::Receiver<u64>> + Send>>,
    /// Resolves, every [`STALL_CHECK`], with the log's last position.
    stall_check: Pin<Box<dyn Future<Output = Option<Position>> + Send>>,
    /// `next` when the last check found the log holding it already.
    behind_at: Option<Position>,
    /// The ordered consumer's messages; `None` while `reopening`.
    messages: Option<Ordered>,
    /// A new consumer being opened from `next`.
    reopening: Option<Pin<Box<dyn Future<Output = Result<Ordered>> + Send>>>,
    /// The position the next entry must have; earlier ones are skipped.
    next: Position,
    /// An entry was given already, so a later one must be at `next`.
    started: bool,
    /// An error was given; nothing follows it.
    ended: bool,
}

impl Stream for Reader {
    type Item = Result<Entry>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            if let Poll::Ready(reconnected) = self.reconnected.as_mut().poll(context) {
                self.reconnected = Box::pin(next_connection(reconnected));
                self.reopen("the client connected to a server again");
            }
            if let Poll::Ready(last) = self.stall_check.as_mut().poll(context) {
                self.stall_check = Box::pin(log_last(self.stream.clone()));
                let behind = last.is_some_and(|last| last >= self.next);
                let stalled = behind && self.behind_at == Some(self.next);
                self.behind_at = behind.then_some(self.next);
                if stalled {
                    self.reopen("the consumer delivered nothing while the log held newer records");
                }
            }
            if let Some(reopening) = self.reopening.as_mut() {
                let reopened = ready!(reopening.as_mut().poll(context));
                self.reopening = None;
                match reopened {
                    Ok(messages) => self.messages = Some(messages),
                    Err(error) => return self.end(error),
                }
            }
            let Some(messages) = self.messages.as_mut() else {
                return self.end(Error::Internal(
                    "a log reader without a consumer".to_owned(),
                ));
            };
            let message = match ready!(Pin::new(messages).poll_next(context)) {
                Some(Ok(message)) => message,
                // The consumer's pulls fail, e.g. the servers lost it.
                Some(Err(error)) if error.kind() == OrderedErrorKind::Pull => {
                    self.reopen(&error.to_string());
                    continue;
                }
                Some(Err(error)) => return self.end(unreachable_log("read the log", error)),
                None => {
                    return self.end(Error::Unavailable(
                        "the connection to the log was closed".to_owned(),
                    ))
                }
            };
            let entry = match entry_of(&message) {
                Ok(entry) => entry,
                Err(error) => return self.end(error),
            };
            // A consumer recreated before its first delivery starts over
            // at the stream's first record.
            if entry.position < self.next {
                continue;
            }
            if self.started && entry.position > self.next {
                let error = Error::Unavailable(format!(
                    "the log no longer holds records {} to {} that this reader had not read \
                     (its retention dropped them); read again from a snapshot",
                    self.next,
                    entry.position - 1
                ));
                return self.end(error);
            }
            self.started = true;
            self.next = entry.position + 1;
            return Poll::Ready(Some(Ok(entry)));
        }
    }
}

impl Reader {
    /// Drops the consumer and opens a new one from `next`, unless one is
    /// being opened already.
    fn reopen(&mut self, reason: &str) {
        if self.reopening.is_some() {
            return;
        }
        tracing::info!(reason, next = self.next, "log reader opens a new consumer");
        self.messages = None;
        self.reopening = Some(Box::pin(reopen_consumer(self.stream.clone(), self.next)));
    }

    fn end(&mut self, error: Error) -> Poll<Option<Result<Entry>>> {
        self.ended = true;
        Poll::Ready(Some(Err(error)))
    }
}

/// Waits for the next connection to a server, for ever once the log is
/// gone.
async fn next_connection(mut connections: watch::Receiver<u64>) -> watch::Receiver<u64> {
    if connections.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
    connections
}

/// The stream's last position after [`STALL_CHECK`]; `None` when the
/// servers do not answer.
async fn log_last(stream: stream::Stream) -> Option<Position> {
    tokio::time::sleep(STALL_CHECK).await;
    let info = stream.get_info().await.ok()?;
    Some(info.state.last_sequence)
}

/// An ordered consumer of `stream` from `from` on.
async fn open_consumer(stream: &stream::Stream, from: Position) -> Result<Ordered> {
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            max_expires: PULL_EXPIRY,
            ..Default::default()
        })
        .await
        .map_err(|error| unreachable_log("create a reader of the log", error))?;
    consumer
        .messages()
        .await
        .map_err(|error| unreachable_log("start reading the log", error))
}

/// [`open_consumer`], tried again for [`REOPEN_PATIENCE`] while the
/// servers do not answer.
async fn reopen_consumer(stream: stream::Stream, from: Position) -> Result<Ordered> {
    let deadline = Instant::now() + REOPEN_PATIENCE;
    loop {
        let error = match open_consumer(&stream, from).await {
            Ok(messages) => return Ok(messages),
            Err(error) => error,
        };
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(error);
        }
        tracing::debug!(%error, "log reader waits for the servers");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// The entry a stream message holds.
fn entry_of(message: &Message) -> Result<Entry> {
    let info = message.info().map_err(|error| {
        Error::Internal(format!("a log message without its stream info: {error}"))
    })?;
    let id = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(NATS_MESSAGE_ID))
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    let stored_at_nanos = i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(i64::MAX);
    Ok(Entry {
        position: info.stream_sequence,
        id,
        record: message.payload.clone(),
        stored_at_nanos,
    })
}

/// Connects to one of the servers, trying again for [`CONNECT_TIMEOUT`]
/// while none answers.
async fn connect_client(
    options: &JetStreamOptions,
    connections: Arc<watch::Sender<u64>>,
) -> Result<async_nats::Client> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let servers = options.servers.join(",");
    loop {
        let mut connect = ConnectOptions::new()
            .name("segmentd")
            .connection_timeout(deadline.saturating_duration_since(Instant::now()))
            .event_callback({
                let connections = connections.clone();
                move |event| {
                    let connections = connections.clone();
                    async move {
                        let Event::Connected = event else {
                            tracing::warn!(%event, "nats connection");
                            return;
                        };
                        tracing::info!(%event, "nats connection");
                        connections.send_modify(|count| *count += 1);
                    }
                }
            });
        if let Some(creds) = &options.creds {
            connect = connect.credentials_file(creds).await.map_err(|error| {
                Error::Unavailable(format!(
                    "cannot read the NATS credentials file {}: {error}",
                    creds.display()
                ))
            })?;
        }
        if let Some(ca) = &options.tls_ca {
            connect = connect.add_root_certificates(ca.clone());
        }
        let error = match connect.connect(options.servers.as_slice()).await {
            Ok(client) => return Ok(client),
            Err(error) => error,
        };
        let refused = matches!(
            error.kind(),
            ConnectErrorKind::ServerParse
                | ConnectErrorKind::Authentication
                | ConnectErrorKind::AuthorizationViolation
                | ConnectErrorKind::Tls
        );
        if refused {
            return Err(Error::Unavailable(format!(
                "cannot connect to the NATS servers {servers}: {error}; check the URLs, \
                 the credentials and the TLS CA"
            )));
        }
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(Error::Unavailable(format!(
                "no NATS server answered at {servers} within {CONNECT_TIMEOUT:?}: {error}"
            )));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// The log's stream, created when missing; an existing one must be
/// file-backed.
async fn open_stream(
    jetstream: &jetstream::Context,
    options: &JetStreamOptions,
) -> Result<stream::Stream> {
    let config = stream::Config {
        name: options.stream.clone(),
        subjects: vec![format!("{}.log.>", options.stream.to_lowercase())],
        storage: StorageType::File,
        num_replicas: options.replicas,
        max_age: options.max_age.unwrap_or_default(),
        max_bytes: options
            .max_bytes
            .map_or(-1, |bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
        duplicate_window: DUPLICATE_WINDOW,
        discard: DiscardPolicy::Old,
        ..Default::default()
    };
    let stream = jetstream
        .get_or_create_stream(config)
        .await
        .map_err(|error| {
            unreachable_log(
                &format!("get or create the stream {}", options.stream),
                error,
            )
        })?;
    let storage = &stream.cached_info().config.storage;
    if *storage != StorageType::File {
        return Err(Error::FailedPrecondition(format!(
            "the stream {} keeps its records in {storage:?} storage, which a restart of its \
             servers loses: recreate it with file storage, or name another stream",
            options.stream
        )));
    }
    Ok(stream)
}

/// The snapshot bucket, created when missing.
async fn open_bucket(
    jetstream: &jetstream::Context,
    options: &JetStreamOptions,
) -> Result<ObjectStore> {
    let bucket = format!("{}_SNAPSHOTS", options.stream);
    if let Ok(store) = jetstream.get_object_store(&bucket).await {
        return Ok(store);
    }
    jetstream
        .create_object_store(object_store::Config {
            bucket: bucket.clone(),
            storage: StorageType::File,
            num_replicas: options.replicas,
            ..Default::default()
        })
        .await
        .map_err(|error| {
            unreachable_log(
                &format!("get or create the snapshot bucket {bucket}"),
                error,
            )
        })
}

/// The position a snapshot's metadata holds.
fn snapshot_position(metadata: &HashMap<String, String>) -> Result<Position> {
    let value = metadata
        .get(POSITION_KEY)
        .map(String::as_str)
        .unwrap_or_default();
    value.parse().map_err(|_| {
        Error::FailedPrecondition(format!(
            "the published snapshot has no valid {POSITION_KEY:?} in its metadata ({value:?}): \
             it was not published by segmentd; delete it or publish a new one"
        ))
    })
}

/// `request`, given up with `Error::Unavailable` after [`API_TIMEOUT`].
async fn bounded<T>(action: &str, request: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(API_TIMEOUT, request)
        .await
        .unwrap_or_else(|_| {
            Err(unreachable_log(
                action,
                format!("no answer in {} s", API_TIMEOUT.as_secs()),
            ))
        })
}

/// A file beside `into`, to write into and rename into place.
fn staging_path(into: &Path) -> PathBuf {
    let mut name = into.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    into.with_file_name(name)
}

/// `Error::Unavailable` for a NATS failure to `action`.
fn unreachable_log(action: &str, error: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!(
        "could not {action}: {error}; check that the NATS servers are up and JetStream is \
         enabled, then retry"
    ))
}

#[cfg(test)]
mod tests;
