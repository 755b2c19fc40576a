//! `ListCustomerSegments`: check and convert the request, call the engine,
//! convert the result back.

use tonic::Status;

use crate::engine::Engine;
use crate::grpc::pb;

/// The saved segments a customer is in, with explanations on request.
pub(super) async fn list_customer_segments(
    _engine: &Engine,
    _request: pb::ListCustomerSegmentsRequest,
) -> Result<pb::ListCustomerSegmentsResponse, Status> {
    Err(Status::unimplemented("not yet"))
}
