//! `segmentd.v1.PersonaService`: check and convert the request, call the
//! engine, map the result.

use tonic::{Request, Response, Status};

use super::convert::{features_to_proto, timestamp_to_proto};
use super::pb::persona_service_server::PersonaService;
use super::pb::{self};
use super::segmentation::{average, channel_from_proto, evaluation_time, export_batch, money};
use super::status::to_status;
use super::{ready, EngineSlot};
use crate::domain::persona::{Catalog, Persona};
use crate::domain::{CurrencyCode, CustomerId, Error, Timestamp, Violations};
use crate::engine::{compile_filter, Assignment, ConditionResult};

/// The longest display name, description, action or channel of a persona.
const MAX_TEXT: usize = 2000;

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

fn persona_to_proto(persona: &Persona) -> pb::Persona {
    pb::Persona {
        persona_id: persona.id.clone(),
        display_name: persona.display_name.clone(),
        description: persona.description.clone(),
        rule: persona.rule.clone(),
        recommended_actions: persona.recommended_actions.clone(),
        channels: persona.channels.clone(),
    }
}

fn catalog_to_proto(catalog: &Catalog) -> pb::PersonaCatalog {
    pb::PersonaCatalog {
        personas: catalog.personas.iter().map(persona_to_proto).collect(),
        revision: catalog.revision as i64,
        built_in: catalog.built_in,
    }
}

fn condition_to_proto(condition: ConditionResult) -> pb::ConditionResult {
    pb::ConditionResult {
        condition: condition.condition,
        actual: condition.actual,
        expected: condition.expected,
        holds: condition.holds,
    }
}

fn assignment_to_proto(
    assignment: Assignment,
    at: Timestamp,
    currency: CurrencyCode,
) -> pb::PersonaAssignment {
    pb::PersonaAssignment {
        name: assignment.features.id.name(),
        persona: Some(persona_to_proto(&assignment.persona)),
        features: Some(features_to_proto(&assignment.features, currency)),
        explanation: Some(pb::PersonaExplanation {
            matched: assignment
                .matched
                .into_iter()
                .map(condition_to_proto)
                .collect(),
            rejected: assignment
                .rejected
                .into_iter()
                .map(|rejected| pb::RejectedPersona {
                    persona_id: rejected.persona,
                    failed: rejected
                        .failed
                        .into_iter()
                        .map(condition_to_proto)
                        .collect(),
                })
                .collect(),
            next_steps: assignment
                .next_steps
                .into_iter()
                .map(|step| pb::NextStep {
                    persona_id: step.persona,
                    description: step.description,
                })
                .collect(),
        }),
        catalog_revision: assignment.revision as i64,
        evaluation_time: Some(timestamp_to_proto(at)),
    }
}

fn persona_from_proto(persona: pb::Persona, index: usize, v: &mut Violations) -> Persona {
    let field = |name: &str| format!("personas[{index}].{name}");
    for (name, text) in [
        ("display_name", &persona.display_name),
        ("description", &persona.description),
    ] {
        if text.chars().count() > MAX_TEXT {
            v.add(field(name), format!("at most {MAX_TEXT} characters"));
        }
    }
    for (name, list) in [
        ("recommended_actions", &persona.recommended_actions),
        ("channels", &persona.channels),
    ] {
        if list.len() > 50 || list.iter().any(|item| item.chars().count() > MAX_TEXT) {
            v.add(
                field(name),
                format!("at most 50 entries of at most {MAX_TEXT} characters"),
            );
        }
    }
    Persona {
        id: persona.persona_id,
        display_name: persona.display_name,
        description: persona.description,
        rule: persona.rule,
        recommended_actions: persona.recommended_actions,
        channels: persona.channels,
    }
}

type ExportStream =
    tokio_stream::Iter<std::vec::IntoIter<Result<pb::ExportPersonaAssignmentsResponse, Status>>>;

#[tonic::async_trait]
impl PersonaService for PersonaApi {
    async fn get_customer_persona(
        &self,
        request: Request<pb::GetCustomerPersonaRequest>,
    ) -> Result<Response<pb::PersonaAssignment>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check("name", CustomerId::from_name(&request.name));
        let at = evaluation_time(request.evaluation_time.as_ref(), &mut violations);
        let id = violations.into_result(id).map_err(to_status)?;
        let Some(id) = id else {
            return Err(to_status(Error::internal("checked name missing")));
        };
        let assignment = engine.customer_persona(id, at).await.map_err(to_status)?;
        Ok(Response::new(assignment_to_proto(
            assignment,
            at,
            engine.settings().reporting_currency,
        )))
    }

    async fn list_personas(
        &self,
        _request: Request<pb::ListPersonasRequest>,
    ) -> Result<Response<pb::PersonaCatalog>, Status> {
        let engine = ready(&self.engine)?;
        Ok(Response::new(catalog_to_proto(
            &engine.persona_catalog().catalog,
        )))
    }

    async fn replace_persona_catalog(
        &self,
        request: Request<pb::ReplacePersonaCatalogRequest>,
    ) -> Result<Response<pb::PersonaCatalog>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let personas: Vec<Persona> = request
            .personas
            .into_iter()
            .enumerate()
            .map(|(index, persona)| persona_from_proto(persona, index, &mut violations))
            .collect();
        violations.into_result(()).map_err(to_status)?;
        let expected = u64::try_from(request.expected_revision)
            .ok()
            .filter(|&revision| revision > 0);
        let catalog = engine
            .replace_catalog(personas, expected)
            .await
            .map_err(to_status)?;
        Ok(Response::new(catalog_to_proto(&catalog)))
    }

    async fn reset_persona_catalog(
        &self,
        _request: Request<pb::ResetPersonaCatalogRequest>,
    ) -> Result<Response<pb::PersonaCatalog>, Status> {
        let engine = ready(&self.engine)?;
        let catalog = engine.reset_catalog().await.map_err(to_status)?;
        Ok(Response::new(catalog_to_proto(&catalog)))
    }

    async fn breakdown_personas(
        &self,
        request: Request<pb::BreakdownPersonasRequest>,
    ) -> Result<Response<pb::BreakdownPersonasResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let rule = violations.check("filter", compile_filter(&request.filter));
        let at = evaluation_time(request.evaluation_time.as_ref(), &mut violations);
        let rule = violations.into_result(rule).map_err(to_status)?;
        let Some(rule) = rule else {
            return Err(to_status(Error::internal("checked filter missing")));
        };
        let counts = engine
            .breakdown_personas(rule, at)
            .await
            .map_err(to_status)?;
        let currency = engine.settings().reporting_currency;
        let total = counts.total;
        Ok(Response::new(pb::BreakdownPersonasResponse {
            groups: counts
                .groups
                .into_iter()
                .map(|(persona_id, count, spend)| pb::PersonaGroup {
                    persona_id,
                    customer_count: count as i64,
                    share: count as f64 / total.max(1) as f64,
                    total_spend: Some(money(spend, currency)),
                    average_spend: Some(money(average(spend, count), currency)),
                })
                .collect(),
            total_count: total as i64,
            excluded_count: counts.excluded as i64,
            unassigned_count: counts.unassigned as i64,
            catalog_revision: counts.revision as i64,
            evaluation_time: Some(timestamp_to_proto(at)),
        }))
    }

    type ExportPersonaAssignmentsStream = ExportStream;

    async fn export_persona_assignments(
        &self,
        request: Request<pb::ExportPersonaAssignmentsRequest>,
    ) -> Result<Response<Self::ExportPersonaAssignmentsStream>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let channel = violations.check("channel", channel_from_proto(request.channel));
        let at = evaluation_time(request.evaluation_time.as_ref(), &mut violations);
        let batch = export_batch(request.batch_size, &mut violations);
        let channel = violations
            .into_result(channel)
            .map_err(to_status)?
            .flatten();
        let (revision, rows) = engine
            .export_personas(request.persona_ids, channel, at)
            .await
            .map_err(to_status)?;
        let messages: Vec<_> = rows
            .chunks(batch)
            .map(|chunk| {
                Ok(pb::ExportPersonaAssignmentsResponse {
                    assignments: chunk
                        .iter()
                        .map(|(customer, persona)| pb::ExportedAssignment {
                            customer: format!("customers/{customer}"),
                            persona_id: persona.clone(),
                        })
                        .collect(),
                    catalog_revision: revision as i64,
                    evaluation_time: Some(timestamp_to_proto(at)),
                })
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(messages)))
    }
}
