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
/// OUT_OF_RANGE as a `grpc-status` header value.
const OUT_OF_RANGE: &str = "11";

/// Rewrites the status of an oversized request message; others pass through.
pub fn from_stream_error(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().starts_with(OVERSIZED_MESSAGE_PREFIX) {
        Status::resource_exhausted(status.message().to_owned())
    } else {
        status
    }
}

/// The layer of [`oversized_requests`].
pub type OversizedRequestLayer = MapResponseLayer<fn(Response<Body>) -> Response<Body>>;

/// The rewrite of [`from_stream_error`] for unary requests, whose decode
/// error tonic answers before a handler runs.
pub fn oversized_requests() -> OversizedRequestLayer {
    MapResponseLayer::new(remap_oversized_request as fn(Response<Body>) -> Response<Body>)
}

/// Answers RESOURCE_EXHAUSTED for OUT_OF_RANGE about an oversized message.
fn remap_oversized_request(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers();
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let oversized = text("grpc-status") == Some(OUT_OF_RANGE)
        && text("grpc-message").is_some_and(|message| {
            message
                .replace("%20", " ")
                .starts_with(OVERSIZED_MESSAGE_PREFIX)
        });
    if oversized {
        let code = HeaderValue::from(Code::ResourceExhausted as i32);
        response.headers_mut().insert("grpc-status", code);
    }
    response
}
