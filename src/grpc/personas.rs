//! `segmentd.v1.PersonaService`: check and convert the request, call the
//! engine, convert the result back.

use tonic::{Request, Response, Status};

use super::audit::{self, Audit};
use super::check::{customer_at, evaluation_time, export_batch, field, All};
use super::convert::{
    assignment_batches_to_proto, assignment_to_proto, catalog_to_proto, channel_from_proto,
    persona_breakdown_to_proto, persona_from_proto,
};
use super::pb::persona_service_server::PersonaService;
use super::pb::{self};
use super::{ready, stream_of, EngineSlot, ReadyStream};
use crate::engine::compile_filter;

/// The PersonaService handlers.
#[derive(Debug, Clone)]
pub struct PersonaApi {
    /// The engine, once ready.
    engine: EngineSlot,
}

impl PersonaApi {
    /// Handlers over `engine`.
    pub fn new(engine: EngineSlot) -> Self {
        PersonaApi { engine }
    }
}

#[tonic::async_trait]
impl PersonaService for PersonaApi {
    async fn get_customer_persona(
        &self,
        request: Request<pb::GetCustomerPersonaRequest>,
    ) -> Result<Response<pb::PersonaAssignment>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let (id, at) = customer_at(&request.name, request.evaluation_time.as_ref())?;
        let assignment = engine.customer_persona(id, at).await?;
        let currency = engine.settings().reporting_currency;
        Ok(Response::new(assignment_to_proto(assignment, at, currency)))
    }

    async fn list_personas(
        &self,
        _request: Request<pb::ListPersonasRequest>,
    ) -> Result<Response<pb::PersonaCatalog>, Status> {
        let engine = ready(&self.engine)?;
        let catalog = engine.persona_catalog();
        Ok(Response::new(catalog_to_proto(&catalog.catalog)))
    }

    async fn replace_persona_catalog(
        &self,
        request: Request<pb::ReplacePersonaCatalogRequest>,
    ) -> Result<Response<pb::PersonaCatalog>, Status> {
        let audit = Audit::new(&request, "ReplacePersonaCatalog", audit::CATALOG.to_owned());
        audit.catalog_outcome(
            async {
                let engine = ready(&self.engine)?;
                let request = request.into_inner();
                let personas = request
                    .personas
                    .into_iter()
                    .map(persona_from_proto)
                    .collect();
                let expected = u64::try_from(request.expected_revision)
                    .ok()
                    .filter(|&revision| revision > 0);
                let catalog = engine.replace_catalog(personas, expected).await?;
                Ok(Response::new(catalog_to_proto(&catalog)))
            }
            .await,
        )
    }

    async fn reset_persona_catalog(
        &self,
        request: Request<pb::ResetPersonaCatalogRequest>,
    ) -> Result<Response<pb::PersonaCatalog>, Status> {
        let audit = Audit::new(&request, "ResetPersonaCatalog", audit::CATALOG.to_owned());
        audit.catalog_outcome(
            async {
                let engine = ready(&self.engine)?;
                let catalog = engine.reset_catalog().await?;
                Ok(Response::new(catalog_to_proto(&catalog)))
            }
            .await,
        )
    }

    async fn breakdown_personas(
        &self,
        request: Request<pb::BreakdownPersonasRequest>,
    ) -> Result<Response<pb::BreakdownPersonasResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let (rule, at) = (
            field("filter", compile_filter(&request.filter)),
            evaluation_time(request.evaluation_time.as_ref()),
        )
            .all()?;
        let counts = engine.breakdown_personas(rule, at).await?;
        let currency = engine.settings().reporting_currency;
        Ok(Response::new(persona_breakdown_to_proto(
            counts, at, currency,
        )))
    }

    type ExportPersonaAssignmentsStream = ReadyStream<pb::ExportPersonaAssignmentsResponse>;

    async fn export_persona_assignments(
        &self,
        request: Request<pb::ExportPersonaAssignmentsRequest>,
    ) -> Result<Response<Self::ExportPersonaAssignmentsStream>, Status> {
        let audit = Audit::new(
            &request,
            "ExportPersonaAssignments",
            audit::personas(&request.get_ref().persona_ids),
        );
        audit.outcome(
            async {
                let engine = ready(&self.engine)?;
                let request = request.into_inner();
                let (channel, at, batch) = (
                    field("channel", channel_from_proto(request.channel)),
                    evaluation_time(request.evaluation_time.as_ref()),
                    export_batch(request.batch_size),
                )
                    .all()?;
                let (revision, rows) = engine
                    .export_personas(request.persona_ids, channel, at)
                    .await
                    .map_err(|error| error.under("persona_ids"))?;
                let messages = assignment_batches_to_proto(&rows, batch, revision, at);
                Ok(Response::new(stream_of(messages)))
            }
            .await,
        )
    }
}
