//! The one mapping from domain errors to gRPC statuses.

use http::{HeaderValue, Response};
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::util::MapResponseLayer;

use crate::domain::Error;

/// The resource type of a resource name, for ResourceInfo details.
fn resource_type(name: &str) -> &'static str {
    if name.starts_with("segments/") {
        "segmentd.v1.Segment"
    } else {
        "segmentd.v1.Customer"
    }
}

/// Maps a domain error to a status with rich error details. Internal errors
/// are logged here and reach the client only as a generic INTERNAL.
impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for violation in violations {
                    details.add_bad_request_violation(violation.field, violation.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound(name) => Status::with_error_details(
                Code::NotFound,
                message,
                ErrorDetails::with_resource_info(
                    resource_type(&name),
                    name,
                    "",
                    "no such resource",
                ),
            ),
            Error::AlreadyExists(name) => Status::with_error_details(
                Code::AlreadyExists,
                message,
                ErrorDetails::with_resource_info(resource_type(&name), name, "", "the id is taken"),
            ),
            Error::FailedPrecondition(description) => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_precondition_failure_violation("ETAG", "etag", description),
            ),
            Error::ResourceExhausted {
                subject,
                description,
            } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_quota_failure_violation(subject, description),
            ),
            Error::Unavailable(_) => Status::unavailable(message),
            Error::Internal(context) => {
                tracing::error!(error = %context, "internal error");
                Status::internal("internal error")
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

/// The code a client gets for a request message tonic refused with `code`
/// and `message`, when it is not `code`.
fn client_fault(code: Code, message: &str) -> Option<Code> {
    match code {
        Code::OutOfRange if message.starts_with(OVERSIZED_MESSAGE_PREFIX) => {
            Some(Code::ResourceExhausted)
        }
        Code::Internal if message.starts_with(UNDECODABLE_MESSAGE_PREFIX) => {
            Some(Code::InvalidArgument)
        }
        _ => None,
    }
}

/// Rewrites the status of a request message that was too large or not a
/// message; others pass through.
pub fn from_stream_error(status: Status) -> Status {
    match client_fault(status.code(), status.message()) {
        Some(code) => Status::new(code, status.message().to_owned()),
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

/// Answers with the code of [`client_fault`] for a request message tonic
/// refused.
fn remap_refused_request(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers();
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let code = text("grpc-status")
        .and_then(|code| code.parse::<i32>().ok())
        .map(Code::from_i32);
    let message = text("grpc-message").map(|message| message.replace("%20", " "));
    if let (Some(code), Some(message)) = (code, message) {
        if let Some(fault) = client_fault(code, &message) {
            let code = HeaderValue::from(fault as i32);
            response.headers_mut().insert("grpc-status", code);
        }
    }
    response
}
