//! Personas: the catalog in and out, assignments with their explanation,
//! and persona breakdowns.

use crate::domain::persona::{Catalog, Persona};
use crate::domain::{CurrencyCode, Timestamp};
use crate::engine::{Assignment, ConditionResult, PersonaCounts};
use crate::grpc::pb;

use super::{average, customer_name, features_to_proto, money, timestamp_to_proto};

/// The longest display name, description, action or channel of a persona.
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

/// A persona catalog as the API shows it.
pub fn catalog_to_proto(catalog: &Catalog) -> pb::PersonaCatalog {
    pb::PersonaCatalog {
        personas: catalog.personas.iter().map(persona_to_proto).collect(),
        revision: catalog.revision as i64,
        built_in: catalog.built_in,
    }
}

/// One condition of a rule, as it turned out for a customer.
pub fn condition_to_proto(condition: ConditionResult) -> pb::ConditionResult {
    pb::ConditionResult {
        condition: condition.condition,
        actual: condition.actual,
        expected: condition.expected,
        holds: condition.holds,
    }
}

/// A persona assignment, with its explanation, as the API shows it.
pub fn assignment_to_proto(
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

/// A persona of a new catalog; the domain checks it with the catalog.
pub fn persona_from_proto(persona: pb::Persona) -> Persona {
    Persona {
        id: persona.persona_id,
        display_name: persona.display_name,
        description: persona.description,
        rule: persona.rule,
        recommended_actions: persona.recommended_actions,
        channels: persona.channels,
    }
}

/// Persona counts as the API shows them.
pub fn persona_breakdown_to_proto(
    counts: PersonaCounts,
    at: Timestamp,
    currency: CurrencyCode,
) -> pb::BreakdownPersonasResponse {
    let total = counts.total;
    pb::BreakdownPersonasResponse {
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
    }
}

/// Exported (customer id, persona id) rows, `batch` to a message.
pub fn assignment_batches_to_proto(
    rows: &[(String, String)],
    batch: usize,
    revision: u64,
    at: Timestamp,
) -> Vec<pb::ExportPersonaAssignmentsResponse> {
    rows.chunks(batch)
        .map(|chunk| pb::ExportPersonaAssignmentsResponse {
            assignments: chunk
                .iter()
                .map(|(customer, persona)| pb::ExportedAssignment {
                    customer: customer_name(customer),
                    persona_id: persona.clone(),
                })
                .collect(),
            catalog_revision: revision as i64,
            evaluation_time: Some(timestamp_to_proto(at)),
        })
        .collect()
}
