//! The gRPC layer: generated types, conversions, handlers and the status
//! mapping. Only this module knows prost and tonic types.
//!
//! - One handler file per service (`customers`, `activity`, `segmentation`,
//!   `personas`, `predictions`, `admin`, `membership`). A handler checks and converts the request, calls the
//!   engine and converts the result back; handler files share nothing
//!   with each other.
//! - [`auth`]: who may call what: credentials, scopes per method, the
//!   layer that checks every request.
//! - [`audit`]: the audit log of changes, erasures and exports.
//! - [`check`]: request checks that return the parsed values.
//! - [`consistency`]: consistency tokens, to read your own writes through
//!   any replica in cluster mode.
//! - [`convert`]: protobuf to domain and back, one file per resource.
//! - [`paging`]: page sizes and the one page-token format.
//! - [`peer`]: who is at the other end of a connection.
//! - [`status`]: domain errors as statuses, through `?`.
//! - [`trace`]: a span per RPC.

pub mod activity;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod check;
pub mod consistency;
pub mod convert;
pub mod customers;
pub mod membership;
pub mod paging;
pub mod peer;
pub mod personas;
pub mod predictions;
pub mod segmentation;
pub mod status;
pub mod trace;

/// Code generated from `proto/`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    /// Google's common types.
    pub mod google {
        /// `google.type`
        pub mod r#type {
            include!(concat!(env!("OUT_DIR"), "/google.r#type.rs"));
        }
    }

    /// segmentd's API.
    pub mod segmentd {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("segmentd.v1");
        }
    }

    /// The encoded file descriptor set of `proto/`, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("segmentd_descriptor");

    pub use segmentd::v1::*;
}

use std::sync::{Arc, OnceLock};

use crate::domain::Error;
use crate::engine::Engine;

/// The engine once it is ready; empty while the store opens.
pub type EngineSlot = Arc<OnceLock<Arc<Engine>>>;

/// Limits the handlers enforce on inputs.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// The largest `page_size` a List call accepts.
    pub max_page_size: usize,
    /// The most customers one import message may carry.
    pub max_batch_size: usize,
    /// The most events one activity batch may carry.
    pub max_events_per_batch: usize,
}

/// The engine, or UNAVAILABLE while it is starting.
fn ready(slot: &EngineSlot) -> Result<Arc<Engine>, tonic::Status> {
    slot.get().cloned().ok_or_else(|| {
        Error::Unavailable("segmentd is starting: the store is not open yet".into()).into()
    })
}

/// The next message of a client stream; an oversized one is refused as
/// RESOURCE_EXHAUSTED (see [`status::from_stream_error`]).
async fn next_message<T>(stream: &mut tonic::Streaming<T>) -> Result<Option<T>, tonic::Status> {
    stream.message().await.map_err(status::from_stream_error)
}

/// A server stream that sends `messages`, all ready.
type ReadyStream<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, tonic::Status>>>;

/// The server stream of `messages`.
fn stream_of<T>(messages: Vec<T>) -> ReadyStream<T> {
    let messages: Vec<_> = messages.into_iter().map(Ok).collect();
    tokio_stream::iter(messages)
}

/// Applies the messages of a client-streaming import in order: each is
/// read and converted by `convert`, then applied by `apply`, and the next
/// is read and converted while the one before is applied, so that the
/// decoding and the writing of a long import share the cores. Stops at the
/// first error, which is the earliest message's: a message read ahead of
/// a refused one is dropped unapplied. Returns how many messages were
/// applied, and the error, if any.
async fn import_each<M, B, C, F>(
    stream: &mut tonic::Streaming<M>,
    mut convert: impl FnMut(M) -> Result<B, tonic::Status>,
    mut apply: impl FnMut(B) -> F,
    mut applied: impl FnMut(C),
) -> (u64, Result<(), tonic::Status>)
where
    F: std::future::Future<Output = Result<C, tonic::Status>>,
{
    let mut batches = 0;
    let mut pending: Option<B> = None;
    loop {
        let next = async {
            match next_message(stream).await? {
                Some(message) => convert(message).map(Some),
                None => Ok(None),
            }
        };
        let next = match pending.take() {
            Some(batch) => {
                let applying = apply(batch);
                tokio::pin!(applying, next);
                // A refusal is answered at once, without waiting for the
                // message read ahead, which a paused client may never send.
                let mut read = None;
                let done = loop {
                    tokio::select! {
                        biased;
                        done = &mut applying => break done,
                        got = &mut next, if read.is_none() => read = Some(got),
                    }
                };
                match done {
                    Ok(counts) => {
                        applied(counts);
                        batches += 1;
                    }
                    Err(refusal) => return (batches, Err(refusal)),
                }
                match read {
                    Some(read) => read,
                    None => next.await,
                }
            }
            None => next.await,
        };
        match next {
            Ok(Some(batch)) => pending = Some(batch),
            Ok(None) => return (batches, Ok(())),
            Err(refusal) => return (batches, Err(refusal)),
        }
    }
}

/// Ends a client-streaming import: makes everything applied durable, then
/// answers with `outcome`. An error says which message stopped the stream
/// and that the `batches` before it (`applied`) are durable, and keeps the
/// refusal's details (its field violations, with paths such as
/// `customers[5].location.country_code`).
async fn finish_import<T>(
    engine: &Engine,
    outcome: Result<T, tonic::Status>,
    batches: u64,
    applied: &str,
) -> Result<tonic::Response<T>, tonic::Status> {
    engine.durable().await?;
    let refusal = match outcome {
        Ok(response) => return Ok(tonic::Response::new(response)),
        Err(refusal) => refusal,
    };
    let message = match batches {
        0 => format!(
            "message 0 was refused, and the stream stopped there; nothing was applied: {}",
            refusal.message()
        ),
        _ => format!(
            "message {batches} was refused, and the stream stopped there; the {batches} messages before it ({applied}) were applied and are durable: {}",
            refusal.message()
        ),
    };
    Err(status::restated(
        &refusal,
        message,
        ("message_index", batches.to_string()),
    ))
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    #[test]
    fn file_descriptor_set_decodes_and_names_the_service() {
        let set = prost_types::FileDescriptorSet::decode(super::pb::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<_> = set
            .file
            .iter()
            .flat_map(|file| file.service.iter().map(|s| s.name().to_owned()))
            .collect();
        assert!(services.contains(&"CustomerService".to_owned()));
    }
}
