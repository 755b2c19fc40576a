//! `segmentd.v1.MembershipService`: watches of segment members and persona
//! assignments, and the segments of one customer.
//!
//! - this module: the service, and the two watches.
//! - `list`: `ListCustomerSegments`.

mod list;

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::pb::membership_service_server::MembershipService;
use super::pb::{self};
use super::{ready, EngineSlot};

/// A server stream of watch messages.
type WatchStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

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

#[tonic::async_trait]
impl MembershipService for MembershipApi {
    type WatchSegmentMembershipStream = WatchStream<pb::WatchSegmentMembershipResponse>;
    type WatchPersonaAssignmentsStream = WatchStream<pb::WatchPersonaAssignmentsResponse>;

    async fn watch_segment_membership(
        &self,
        _request: Request<pb::WatchSegmentMembershipRequest>,
    ) -> Result<Response<Self::WatchSegmentMembershipStream>, Status> {
        let _engine = ready(&self.engine)?;
        Err(Status::unimplemented("not yet"))
    }

    async fn watch_persona_assignments(
        &self,
        _request: Request<pb::WatchPersonaAssignmentsRequest>,
    ) -> Result<Response<Self::WatchPersonaAssignmentsStream>, Status> {
        let _engine = ready(&self.engine)?;
        Err(Status::unimplemented("not yet"))
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
