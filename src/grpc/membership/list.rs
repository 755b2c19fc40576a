//! `ListCustomerSegments`: check and convert the request, call the engine,
//! convert the result back.

use tonic::Status;

use crate::domain::{CustomerId, Timestamp};
use crate::engine::{CustomerSegment, CustomerSegments, Engine};
use crate::grpc::check::{evaluation_time, field, All};
use crate::grpc::convert::{condition_to_proto, timestamp_to_proto};
use crate::grpc::pb;

/// The saved segments a customer is in, with explanations on request.
pub(super) async fn list_customer_segments(
    engine: &Engine,
    request: pb::ListCustomerSegmentsRequest,
) -> Result<pb::ListCustomerSegmentsResponse, Status> {
    let (id, at) = (
        field("customer", CustomerId::from_name(&request.customer)),
        evaluation_time(request.evaluation_time.as_ref()),
    )
        .all()?;
    let found = engine.customer_segments(id, at, request.explain).await?;
    Ok(customer_segments_to_proto(found, at))
}

/// A customer's segments as the API shows them.
fn customer_segments_to_proto(
    found: CustomerSegments,
    at: Timestamp,
) -> pb::ListCustomerSegmentsResponse {
    pb::ListCustomerSegmentsResponse {
        segments: found
            .segments
            .into_iter()
            .map(customer_segment_to_proto)
            .collect(),
        objects_to_profiling: found.objects_to_profiling,
        evaluation_time: Some(timestamp_to_proto(at)),
    }
}

/// One segment of a customer as the API shows it.
fn customer_segment_to_proto(segment: CustomerSegment) -> pb::CustomerSegment {
    pb::CustomerSegment {
        segment: segment.id.name(),
        display_name: segment.display_name,
        member: segment.member,
        conditions: segment
            .conditions
            .into_iter()
            .map(condition_to_proto)
            .collect(),
    }
}
