//! `segmentd.v1.SegmentationService`: check and convert the request, call
//! the engine, convert the result back.

use tonic::{Request, Response, Status};

use super::audit::{self, Audit};
use super::check::{evaluation_time, export_batch, field, optional, optional_evaluation_time, All};
use super::convert::{
    breakdown_to_proto, channel_from_proto, customer_name, dimensions_from_proto,
    member_batches_to_proto, new_segment_from_proto, preview_to_proto, rule_language_to_proto,
    sample_size, segment_to_proto, timestamp_to_proto,
};
use super::paging::{page_size, page_time, PagedRequest};
use super::pb::segmentation_service_server::SegmentationService;
use super::pb::{self};
use super::{ready, stream_of, ApiLimits, EngineSlot, ReadyStream};
use crate::domain::segment::{SegmentChanges, SegmentId};
use crate::domain::Error;
use crate::engine::compile_filter;

/// The SegmentationService handlers.
#[derive(Debug, Clone)]
pub struct SegmentationApi {
    /// The engine, once ready.
    engine: EngineSlot,
    /// Input limits.
    limits: ApiLimits,
}

impl SegmentationApi {
    /// Handlers over `engine`, enforcing `limits`.
    pub fn new(engine: EngineSlot, limits: ApiLimits) -> Self {
        SegmentationApi { engine, limits }
    }
}

#[tonic::async_trait]
impl SegmentationService for SegmentationApi {
    async fn breakdown_customers(
        &self,
        request: Request<pb::BreakdownCustomersRequest>,
    ) -> Result<Response<pb::BreakdownCustomersResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let (dimensions, rule, at) = (
            dimensions_from_proto(&request.dimensions),
            field("filter", compile_filter(&request.filter)),
            evaluation_time(request.evaluation_time.as_ref()),
        )
            .all()?;
        let breakdown = engine.breakdown(dimensions, rule, at).await?;
        let currency = engine.settings().reporting_currency;
        Ok(Response::new(breakdown_to_proto(breakdown, currency)))
    }

    async fn describe_rule_language(
        &self,
        _request: Request<pb::DescribeRuleLanguageRequest>,
    ) -> Result<Response<pb::DescribeRuleLanguageResponse>, Status> {
        Ok(Response::new(rule_language_to_proto()))
    }

    async fn create_segment(
        &self,
        request: Request<pb::CreateSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let audit = Audit::new(
            &request,
            "CreateSegment",
            audit::named(&format!("segments/{}", request.get_ref().segment_id)),
        );
        audit.outcome(
            async {
                let engine = ready(&self.engine)?;
                let request = request.into_inner();
                let id = field("segment_id", SegmentId::parse(&request.segment_id));
                let segment = new_segment_from_proto(id, request.segment)?;
                let saved = engine
                    .create_segment(segment)
                    .await
                    .map_err(|error| error.under("segment."))?;
                Ok(Response::new(segment_to_proto(&saved)))
            }
            .await,
        )
    }

    async fn get_segment(
        &self,
        request: Request<pb::GetSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let engine = ready(&self.engine)?;
        let id = field("name", SegmentId::from_name(&request.into_inner().name))?;
        let segment = engine.get_segment(id).await?;
        Ok(Response::new(segment_to_proto(&segment)))
    }

    async fn list_segments(
        &self,
        request: Request<pb::ListSegmentsRequest>,
    ) -> Result<Response<pb::ListSegmentsResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let page_size = page_size(request.page_size, self.limits)?;
        let page_token_key = engine.page_token_key();
        let paged = PagedRequest::new(&page_token_key, "ListSegments");
        let after = paged
            .resume(&request.page_token)?
            .map(|resume| resume.after);
        let (segments, more) = engine.list_segments(after, page_size).await?;
        let next = segments.last().filter(|_| more);
        Ok(Response::new(pb::ListSegmentsResponse {
            segments: segments.iter().map(segment_to_proto).collect(),
            next_page_token: next
                .map(|last| paged.next_token(None, &last.id))
                .unwrap_or_default(),
        }))
    }

    async fn update_segment(
        &self,
        request: Request<pb::UpdateSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let name = request
            .get_ref()
            .segment
            .as_ref()
            .map_or("", |segment| &segment.name);
        let audit = Audit::new(&request, "UpdateSegment", audit::named(name));
        audit.outcome(
            async {
                let engine = ready(&self.engine)?;
                let request = request.into_inner();
                let segment = request
                    .segment
                    .ok_or_else(|| Error::invalid("segment", "required"))?;
                let id = field("segment.name", SegmentId::from_name(&segment.name))?;
                let paths = request.update_mask.map(|mask| mask.paths);
                let etag = optional(segment.etag.clone());
                let changes = SegmentChanges::from_proto(segment, paths.as_deref().unwrap_or(&[]))?;
                let updated = engine
                    .update_segment(id, etag, changes)
                    .await
                    .map_err(|error| error.under("segment."))?;
                Ok(Response::new(segment_to_proto(&updated)))
            }
            .await,
        )
    }

    async fn delete_segment(
        &self,
        request: Request<pb::DeleteSegmentRequest>,
    ) -> Result<Response<()>, Status> {
        let audit = Audit::new(
            &request,
            "DeleteSegment",
            audit::named(&request.get_ref().name),
        );
        audit.outcome(
            async {
                let engine = ready(&self.engine)?;
                let request = request.into_inner();
                let id = field("name", SegmentId::from_name(&request.name))?;
                engine.delete_segment(id, optional(request.etag)).await?;
                Ok(Response::new(()))
            }
            .await,
        )
    }

    async fn preview_segment(
        &self,
        request: Request<pb::PreviewSegmentRequest>,
    ) -> Result<Response<pb::PreviewSegmentResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let compare = match request.segment.as_str() {
            "" => Ok(None),
            name => field("segment", SegmentId::from_name(name).map(Some)),
        };
        let (rule, at, sample, compare) = (
            field("filter", compile_filter(&request.filter)),
            evaluation_time(request.evaluation_time.as_ref()),
            sample_size(request.sample_size),
            compare,
        )
            .all()?;
        let preview = engine.preview(rule, at, sample, compare).await?;
        Ok(Response::new(preview_to_proto(preview)))
    }

    async fn list_segment_members(
        &self,
        request: Request<pb::ListSegmentMembersRequest>,
    ) -> Result<Response<pb::ListSegmentMembersResponse>, Status> {
        let audit = Audit::new(
            &request,
            "ListSegmentMembers",
            audit::named(&request.get_ref().segment),
        );
        audit.outcome(
            async {
                let engine = ready(&self.engine)?;
                let request = request.into_inner();
                let id = field("segment", SegmentId::from_name(&request.segment))?;
                let page_size = page_size(request.page_size, self.limits)?;
                let requested = optional_evaluation_time(request.evaluation_time.as_ref())?;
                let page_token_key = engine.page_token_key();
                let paged = PagedRequest::new(&page_token_key, "ListSegmentMembers")
                    .field(&request.segment);
                let resume = paged.resume::<String>(&request.page_token)?;
                let at = page_time(requested, resume.as_ref().and_then(|resume| resume.at))?;
                let after = resume.map(|resume| resume.after);
                let page = engine.segment_members(id, at, after, page_size).await?;
                let next = page.ids.last().filter(|_| page.more);
                Ok(Response::new(pb::ListSegmentMembersResponse {
                    customers: page.ids.iter().map(|id| customer_name(id)).collect(),
                    next_page_token: next
                        .map(|last| paged.next_token(Some(at), last))
                        .unwrap_or_default(),
                    total_size: page.total as i64,
                    evaluation_time: Some(timestamp_to_proto(at)),
                }))
            }
            .await,
        )
    }

    type ExportSegmentMembersStream = ReadyStream<pb::ExportSegmentMembersResponse>;

    async fn export_segment_members(
        &self,
        request: Request<pb::ExportSegmentMembersRequest>,
    ) -> Result<Response<Self::ExportSegmentMembersStream>, Status> {
        let audit = Audit::new(
            &request,
            "ExportSegmentMembers",
            audit::named(&request.get_ref().segment),
        );
        audit.outcome(
            async {
                let engine = ready(&self.engine)?;
                let request = request.into_inner();
                let id = field("segment", SegmentId::from_name(&request.segment))?;
                let (channel, at, batch) = (
                    field("channel", channel_from_proto(request.channel)),
                    evaluation_time(request.evaluation_time.as_ref()),
                    export_batch(request.batch_size),
                )
                    .all()?;
                let (segment, ids) = engine.export_members(id, channel, at).await?;
                let messages = member_batches_to_proto(&ids, batch, &segment, at);
                Ok(Response::new(stream_of(messages)))
            }
            .await,
        )
    }
}
