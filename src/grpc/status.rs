//! The one mapping from domain errors to gRPC statuses.
//!
//! Every status segmentd makes carries a `google.rpc.ErrorInfo` in the
//! domain [`ERROR_DOMAIN`], whose `reason` names the error in UPPER_SNAKE_CASE
//! (see [`reason`]), beside the detail of its kind: `BadRequest`,
//! `ResourceInfo`, `PreconditionFailure` or `QuotaFailure`. A status stays
//! small whatever the request held: the domain bounds each echoed value,
//! and here at most [`MAX_LISTED_VIOLATIONS`] field violations, and at most
//! [`MAX_VIOLATION_BYTES`] of them, are listed; the message counts the rest.

use std::collections::BTreeMap;

use http::Response;
use prost::Message as _;
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};
use tower::util::MapResponseLayer;

use crate::domain::error::{bounded, MAX_FIELD_CHARS};
use crate::domain::{Error, FieldViolation};

/// The `domain` of every `google.rpc.ErrorInfo` segmentd sends.
pub const ERROR_DOMAIN: &str = "segmentd";
/// The most field violations one status lists.
pub const MAX_LISTED_VIOLATIONS: usize = 20;
/// The most bytes of field paths and descriptions one status lists.
pub const MAX_VIOLATION_BYTES: usize = 4096;
/// The most characters of a status message.
const MAX_MESSAGE_CHARS: usize = 1024;

/// The `reason` of the `ErrorInfo` of each kind of error.
pub mod reason {
    /// One or more request fields are invalid (INVALID_ARGUMENT).
    pub const FIELD_VIOLATION: &str = "FIELD_VIOLATION";
    /// The request bytes are not a message of the method's type
    /// (INVALID_ARGUMENT).
    pub const MALFORMED_MESSAGE: &str = "MALFORMED_MESSAGE";
    /// A request message is over the server's size limit (RESOURCE_EXHAUSTED).
    pub const MESSAGE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";
    /// The named resource does not exist (NOT_FOUND).
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// The named resource exists already (ALREADY_EXISTS).
    pub const ALREADY_EXISTS: &str = "ALREADY_EXISTS";
    /// The etag sent is not the resource's current one (ABORTED).
    pub const ETAG_MISMATCH: &str = "ETAG_MISMATCH";
    /// The revision sent is not the resource's current one (ABORTED).
    pub const REVISION_MISMATCH: &str = "REVISION_MISMATCH";
    /// The resource is not in the state the request needs (FAILED_PRECONDITION).
    pub const FAILED_PRECONDITION: &str = "FAILED_PRECONDITION";
    /// An input is over a configured limit (RESOURCE_EXHAUSTED).
    pub const RESOURCE_EXHAUSTED: &str = "RESOURCE_EXHAUSTED";
    /// The service cannot answer yet (UNAVAILABLE).
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// This replica has not applied the log as far as the request's
    /// consistency token requires (UNAVAILABLE).
    pub const REPLICA_BEHIND: &str = "REPLICA_BEHIND";
    /// A watch cursor older than the change history kept
    /// (FAILED_PRECONDITION): start again with the initial members.
    pub const CURSOR_EXPIRED: &str = "CURSOR_EXPIRED";
    /// A watch cursor of another history, or past its end
    /// (FAILED_PRECONDITION): start again with the initial members.
    pub const CURSOR_UNKNOWN: &str = "CURSOR_UNKNOWN";
    /// A watcher that did not read for too long (RESOURCE_EXHAUSTED):
    /// resume with its last cursor.
    pub const SLOW_READER: &str = "SLOW_READER";
    /// A fault of ours (INTERNAL).
    pub const INTERNAL: &str = "INTERNAL";
}

/// The resource type of a resource name, for ResourceInfo details.
fn resource_type(name: &str) -> &'static str {
    if name.starts_with("segments/") {
        "segmentd.v1.Segment"
    } else if name == "predictionModel" {
        "segmentd.v1.PredictionModel"
    } else {
        "segmentd.v1.Customer"
    }
}

/// The type URL of `google.rpc.ErrorInfo` in a status's details.
const ERROR_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// `google.rpc.ErrorInfo`, its metadata kept in key order, so that a
/// status encodes to the same bytes every time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorInfo {
    /// What went wrong, in UPPER_SNAKE_CASE: one of [`reason`].
    #[prost(string, tag = "1")]
    pub reason: String,
    /// Always [`ERROR_DOMAIN`].
    #[prost(string, tag = "2")]
    pub domain: String,
    /// Facts about the error, such as the resource name.
    #[prost(btree_map = "string, string", tag = "3")]
    pub metadata: BTreeMap<String, String>,
}

impl ErrorInfo {
    /// An ErrorInfo of segmentd with `reason` and `metadata`.
    pub fn new<const N: usize>(reason: &str, metadata: [(&str, String); N]) -> Self {
        ErrorInfo {
            reason: reason.to_owned(),
            domain: ERROR_DOMAIN.to_owned(),
            metadata: metadata
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
        }
    }
}

/// `google.rpc.Status` with `info` first among its details, then `details`.
fn rpc_status(code: Code, message: &str, info: &ErrorInfo, details: ErrorDetails) -> Vec<u8> {
    // tonic_types encodes the standard details; the ErrorInfo goes in
    // front of them, encoded here in a fixed order.
    let standard = Status::with_error_details(code, message, details);
    let mut status = tonic_types::pb::Status::decode(standard.details()).unwrap_or_default();
    status.details.insert(
        0,
        prost_types::Any {
            type_url: ERROR_INFO_TYPE_URL.to_owned(),
            value: info.encode_to_vec(),
        },
    );
    status.encode_to_vec()
}

/// A status of `code` and `message` whose details are `info` and `details`.
pub fn status_with(
    code: Code,
    message: impl Into<String>,
    info: ErrorInfo,
    details: ErrorDetails,
) -> Status {
    let message = message.into();
    let encoded = rpc_status(code, &message, &info, details);
    Status::with_details(code, message, encoded.into())
}

/// `status` with `message` instead of its own, in the status and in its
/// details alike (clients such as grpcio's rpc_status refuse details whose
/// message differs), and `key` set to `value` in its ErrorInfo.
pub fn restated(status: &Status, message: String, (key, value): (&str, String)) -> Status {
    let mut rpc = tonic_types::pb::Status::decode(status.details()).unwrap_or_default();
    rpc.code = status.code() as i32;
    rpc.message.clone_from(&message);
    for detail in &mut rpc.details {
        if detail.type_url != ERROR_INFO_TYPE_URL {
            continue;
        }
        if let Ok(mut info) = ErrorInfo::decode(detail.value.as_slice()) {
            info.metadata.insert(key.to_owned(), value.clone());
            detail.value = info.encode_to_vec();
        }
    }
    Status::with_details(status.code(), message, rpc.encode_to_vec().into())
}

/// The details of a resource that is, or is not, there: an `ErrorInfo`
/// with `reason` naming it, and its `ResourceInfo`.
fn resource_status(
    code: Code,
    message: String,
    reason: &str,
    name: String,
    description: &str,
) -> Status {
    let kind = resource_type(&name);
    let info = ErrorInfo::new(
        reason,
        [("resource", name.clone()), ("type", kind.to_owned())],
    );
    let details = ErrorDetails::with_resource_info(kind, name, "", description);
    status_with(code, message, info, details)
}

/// The status of field violations: an `ErrorInfo` with the first field
/// and the number of violations, and a `BadRequest` listing the first of
/// them within [`MAX_LISTED_VIOLATIONS`] and [`MAX_VIOLATION_BYTES`].
fn violation_status(message: String, violations: Vec<FieldViolation>) -> Status {
    let first = violations
        .first()
        .map(|violation| bounded(violation.field.clone(), MAX_FIELD_CHARS))
        .unwrap_or_default();
    let info = ErrorInfo::new(
        reason::FIELD_VIOLATION,
        [
            ("field", first),
            ("field_violations", violations.len().to_string()),
        ],
    );
    let mut details = ErrorDetails::new();
    let mut bytes = 0;
    for violation in violations.into_iter().take(MAX_LISTED_VIOLATIONS) {
        let field = bounded(violation.field, MAX_FIELD_CHARS);
        bytes += field.len() + violation.description.len();
        if bytes > MAX_VIOLATION_BYTES {
            break;
        }
        details.add_bad_request_violation(field, violation.description);
    }
    status_with(Code::InvalidArgument, message, info, details)
}

/// Maps a domain error to a status with rich error details. Internal errors
/// are logged here and reach the client only as a generic INTERNAL.
impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let message = bounded(error.to_string(), MAX_MESSAGE_CHARS);
        match error {
            Error::InvalidArgument(violations) => violation_status(message, violations),
            Error::NotFound(name) => resource_status(
                Code::NotFound,
                message,
                reason::NOT_FOUND,
                name,
                "no such resource",
            ),
            Error::AlreadyExists(name) => resource_status(
                Code::AlreadyExists,
                message,
                reason::ALREADY_EXISTS,
                name,
                "the id is taken",
            ),
            Error::EtagMismatch { name, etag: _ } => {
                let info = ErrorInfo::new(reason::ETAG_MISMATCH, [("resource", name)]);
                let details =
                    ErrorDetails::with_precondition_failure_violation("ETAG", "etag", &message);
                status_with(Code::Aborted, message, info, details)
            }
            Error::RevisionMismatch { name, description } => {
                let info = ErrorInfo::new(reason::REVISION_MISMATCH, [("resource", name)]);
                let details = ErrorDetails::with_precondition_failure_violation(
                    "REVISION",
                    "expected_revision",
                    description,
                );
                status_with(Code::Aborted, message, info, details)
            }
            Error::FailedPrecondition(description) => {
                let info = ErrorInfo::new(reason::FAILED_PRECONDITION, []);
                let details =
                    ErrorDetails::with_precondition_failure_violation("STATE", "", description);
                status_with(Code::FailedPrecondition, message, info, details)
            }
            Error::ResourceExhausted {
                subject,
                description,
            } => {
                let info =
                    ErrorInfo::new(reason::RESOURCE_EXHAUSTED, [("subject", subject.clone())]);
                let details = ErrorDetails::with_quota_failure_violation(subject, description);
                status_with(Code::ResourceExhausted, message, info, details)
            }
            Error::Unavailable(_) => status_with(
                Code::Unavailable,
                message,
                ErrorInfo::new(reason::UNAVAILABLE, []),
                ErrorDetails::new(),
            ),
            Error::ReplicaBehind { applied, required } => status_with(
                Code::Unavailable,
                message,
                ErrorInfo::new(
                    reason::REPLICA_BEHIND,
                    [
                        ("applied", applied.to_string()),
                        ("required", required.to_string()),
                    ],
                ),
                ErrorDetails::new(),
            ),
            Error::Cursor { reason, cursor, .. } => {
                let info = ErrorInfo::new(reason, [("cursor", cursor)]);
                let details =
                    ErrorDetails::with_precondition_failure_violation("CURSOR", "cursor", &message);
                status_with(Code::FailedPrecondition, message, info, details)
            }
            Error::SlowReader { cursor, .. } => status_with(
                Code::ResourceExhausted,
                message,
                ErrorInfo::new(reason::SLOW_READER, [("cursor", cursor)]),
                ErrorDetails::new(),
            ),
            Error::Internal(context) => {
                tracing::error!(error = %context, "internal error");
                status_with(
                    Code::Internal,
                    "internal error",
                    ErrorInfo::new(reason::INTERNAL, []),
                    ErrorDetails::new(),
                )
            }
        }
    }
}

/// tonic reports a request message over the size limit as OUT_OF_RANGE;
/// gRPC's status code guide names RESOURCE_EXHAUSTED for it, so that is
/// what clients get.
pub const OVERSIZED_MESSAGE_PREFIX: &str = "Error, decoded message length too large";
/// tonic reports a request that is not a valid message of its type (a
/// broken varint, a string that is not UTF-8) as INTERNAL; it is the
/// client's fault, so clients get INVALID_ARGUMENT, and INTERNAL stays for
/// faults of ours.
pub const UNDECODABLE_MESSAGE_PREFIX: &str = "failed to decode Protobuf message";
/// tonic reports a request stream that ends in the middle of a message as
/// INTERNAL; that too is the client's fault.
pub const TRUNCATED_MESSAGE_PREFIX: &str = "Unexpected EOF decoding stream";

/// The code and the `ErrorInfo` reason a client gets for a request
/// message tonic refused with `code` and `message`, when it is not `code`.
fn client_fault(code: Code, message: &str) -> Option<(Code, &'static str)> {
    match code {
        Code::OutOfRange if message.starts_with(OVERSIZED_MESSAGE_PREFIX) => {
            Some((Code::ResourceExhausted, reason::MESSAGE_TOO_LARGE))
        }
        Code::Internal
            if message.starts_with(UNDECODABLE_MESSAGE_PREFIX)
                || message.starts_with(TRUNCATED_MESSAGE_PREFIX) =>
        {
            Some((Code::InvalidArgument, reason::MALFORMED_MESSAGE))
        }
        _ => None,
    }
}

/// Rewrites the status of a request message that was too large or not a
/// message; others pass through.
pub fn from_stream_error(status: Status) -> Status {
    match client_fault(status.code(), status.message()) {
        Some((code, reason)) => status_with(
            code,
            status.message(),
            ErrorInfo::new(reason, []),
            ErrorDetails::new(),
        ),
        None => status,
    }
}

/// The layer of [`refused_requests`].
pub type RefusedRequestLayer = MapResponseLayer<fn(Response<Body>) -> Response<Body>>;

/// The rewrite of [`from_stream_error`] for unary requests, whose decode
/// error tonic answers before a handler runs.
pub fn refused_requests() -> RefusedRequestLayer {
    MapResponseLayer::new(remap_refused_request as fn(Response<Body>) -> Response<Body>)
}

/// Answers with the code and the details of [`client_fault`] for a request
/// message tonic refused.
fn remap_refused_request(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers();
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let code = text("grpc-status")
        .and_then(|code| code.parse::<i32>().ok())
        .map(Code::from_i32);
    let message = text("grpc-message").map(|message| message.replace("%20", " "));
    let (Some(code), Some(message)) = (code, message) else {
        return response;
    };
    let Some((fault, reason)) = client_fault(code, &message) else {
        return response;
    };
    // The message as sent, percent-decoded whole.
    let message = Status::from_header_map(headers)
        .map(|status| status.message().to_owned())
        .unwrap_or(message);
    let status = status_with(
        fault,
        message,
        ErrorInfo::new(reason, []),
        ErrorDetails::new(),
    );
    let headers = response.headers_mut();
    if let Err(error) = status.add_header(headers) {
        tracing::warn!(%error, "refused request status not rewritten");
    }
    response
}

/// The canonical name of a gRPC code, as in `google.rpc.Code`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_stays_small_whatever_the_violations() {
        let violations: Vec<_> = (0..10_000)
            .map(|n| FieldViolation::new(format!("{n}{}", "f".repeat(1000)), "d".repeat(1000)))
            .collect();
        let status = Status::from(Error::InvalidArgument(violations));
        let details = status.get_error_details();
        let listed = details.bad_request().unwrap().field_violations.len();
        assert!((1..=MAX_LISTED_VIOLATIONS).contains(&listed), "{listed}");
        assert!(
            status.details().len() < 8 * 1024,
            "{}",
            status.details().len()
        );
        assert!(status
            .message()
            .ends_with("(and 9999 more field violations)"));
        let info = details.error_info().unwrap();
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata["field_violations"], "10000");
    }

    #[test]
    fn an_internal_error_tells_nothing_of_its_cause() {
        let status = Status::from(Error::internal("disk on fire at /var/lib"));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            reason::INTERNAL
        );
    }

    #[test]
    fn a_status_encodes_the_same_every_time() {
        let not_found = || Status::from(Error::NotFound("customers/a".into()));
        let first = not_found();
        for _ in 0..20 {
            assert_eq!(not_found().details(), first.details());
        }
        let info = first.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, reason::NOT_FOUND);
        assert_eq!(info.metadata["resource"], "customers/a");
        assert!(first.get_error_details().resource_info().is_some());
    }

    #[test]
    fn a_restated_status_keeps_its_details_under_the_new_message() {
        let refused = Status::from(Error::invalid("customers[5].name", "bad"));
        let restated = restated(
            &refused,
            "message 3: bad".into(),
            ("message_index", "3".into()),
        );
        assert_eq!(restated.message(), "message 3: bad");
        let decoded = tonic_types::pb::Status::decode(restated.details()).unwrap();
        assert_eq!(decoded.message, "message 3: bad");
        let details = restated.get_error_details();
        assert_eq!(details.error_info().unwrap().metadata["message_index"], "3");
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "customers[5].name"
        );
    }
}
