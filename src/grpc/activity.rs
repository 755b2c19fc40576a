//! `segmentd.v1.ActivityService`: check and convert events, call the
//! engine, convert the result back.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use super::check::field;
use super::convert::{batch_from_proto, engagement_to_proto, purchase_to_proto};
use super::paging::{page_size, PagedRequest};
use super::pb::activity_service_server::ActivityService;
use super::pb::{self};
use super::{finish_import, import_each, ready, ApiLimits, EngineSlot};
use crate::domain::CustomerId;
use crate::engine::RecordCounts;

/// The ActivityService handlers.
#[derive(Debug, Clone)]
pub struct ActivityApi {
    /// The engine, once ready.
    engine: EngineSlot,
    /// Input limits.
    limits: ApiLimits,
}

impl ActivityApi {
    /// Handlers over `engine`, enforcing `limits`.
    pub fn new(engine: EngineSlot, limits: ApiLimits) -> Self {
        ActivityApi { engine, limits }
    }
}

#[tonic::async_trait]
impl ActivityService for ActivityApi {
    async fn record_activity(
        &self,
        request: Request<pb::RecordActivityRequest>,
    ) -> Result<Response<pb::RecordActivityResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let currency = engine.settings().reporting_currency;
        let batch = batch_from_proto(
            &request.purchases,
            &request.engagements,
            currency,
            self.limits,
        )?;
        let counts = engine.record_activity(batch).await?;
        Ok(Response::new(pb::RecordActivityResponse {
            accepted_count: counts.accepted as i64,
            duplicate_count: counts.duplicates as i64,
        }))
    }

    async fn import_activity(
        &self,
        request: Request<Streaming<pb::ImportActivityRequest>>,
    ) -> Result<Response<pb::ImportActivityResponse>, Status> {
        let engine = ready(&self.engine)?;
        let currency = engine.settings().reporting_currency;
        let mut stream = request.into_inner();
        let mut totals = RecordCounts::default();
        let (batches, outcome) = import_each(
            &mut stream,
            |message: pb::ImportActivityRequest| {
                Ok(batch_from_proto(
                    &message.purchases,
                    &message.engagements,
                    currency,
                    self.limits,
                )?)
            },
            |batch| {
                let engine = Arc::clone(&engine);
                async move { Ok(engine.import_activity(batch).await?) }
            },
            |counts: RecordCounts| {
                totals.accepted += counts.accepted;
                totals.duplicates += counts.duplicates;
            },
        )
        .await;
        let response = pb::ImportActivityResponse {
            accepted_count: totals.accepted as i64,
            duplicate_count: totals.duplicates as i64,
            batch_count: batches as i64,
        };
        let applied = format!("{} new events", totals.accepted);
        finish_import(&engine, outcome.map(|()| response), batches, &applied).await
    }

    async fn list_purchases(
        &self,
        request: Request<pb::ListPurchasesRequest>,
    ) -> Result<Response<pb::ListPurchasesResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let id = field("parent", CustomerId::from_name(&request.parent))?;
        let page_size = page_size(request.page_size, self.limits)?;
        let page_token_key = engine.page_token_key();
        let paged = PagedRequest::new(&page_token_key, "ListPurchases").field(&request.parent);
        let after = paged
            .resume(&request.page_token)?
            .map(|resume| resume.after);
        let page = engine.list_purchases(id, after, page_size).await?;
        let currency = engine.settings().reporting_currency;
        Ok(Response::new(pb::ListPurchasesResponse {
            purchases: page
                .events
                .iter()
                .map(|p| purchase_to_proto(p, currency))
                .collect(),
            next_page_token: page
                .next
                .map(|next| paged.next_token(None, &next))
                .unwrap_or_default(),
        }))
    }

    async fn list_engagements(
        &self,
        request: Request<pb::ListEngagementsRequest>,
    ) -> Result<Response<pb::ListEngagementsResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let id = field("parent", CustomerId::from_name(&request.parent))?;
        let page_size = page_size(request.page_size, self.limits)?;
        let page_token_key = engine.page_token_key();
        let paged = PagedRequest::new(&page_token_key, "ListEngagements").field(&request.parent);
        let after = paged
            .resume(&request.page_token)?
            .map(|resume| resume.after);
        let page = engine.list_engagements(id, after, page_size).await?;
        Ok(Response::new(pb::ListEngagementsResponse {
            engagements: page.events.iter().map(engagement_to_proto).collect(),
            next_page_token: page
                .next
                .map(|next| paged.next_token(None, &next))
                .unwrap_or_default(),
        }))
    }
}
