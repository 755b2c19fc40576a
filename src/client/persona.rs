//! `segmentd persona`: a customer's persona and why, printed for people in
//! support and marketing.

use std::fmt::Write as _;
use std::time::Duration;

use tonic::transport::Endpoint;

use crate::grpc::pb;
use crate::grpc::pb::persona_service_client::PersonaServiceClient;

/// Asks the server at `endpoint` for the persona of `name` (`customers/ID`, or
/// just the id) as of `at` (RFC 3339; now when `None`), and prints it.
pub async fn show(
    endpoint: Endpoint,
    token: Option<&super::channel::BearerToken>,
    name: &str,
    at: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let evaluation_time = match at {
        Some(text) => {
            let parsed =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|error| {
                    anyhow::anyhow!("--at {text:?} is not an RFC 3339 time: {error}")
                })?;
            Some(prost_types::Timestamp {
                seconds: parsed.unix_timestamp(),
                nanos: parsed.nanosecond() as i32,
            })
        }
        None => None,
    };
    let channel =
        super::channel::connect(endpoint.connect_timeout(timeout).timeout(timeout), token).await?;
    let name = if name.starts_with("customers/") {
        name.to_owned()
    } else {
        format!("customers/{name}")
    };
    let assignment = PersonaServiceClient::new(channel)
        .get_customer_persona(pb::GetCustomerPersonaRequest {
            name,
            evaluation_time,
        })
        .await
        .map_err(|status| anyhow::anyhow!("{}: {}", status.code(), status.message()))?
        .into_inner();
    print!("{}", render(&assignment));
    Ok(())
}

fn mark(holds: bool) -> &'static str {
    if holds {
        "yes"
    } else {
        "no "
    }
}

fn condition_line(out: &mut String, condition: &pb::ConditionResult) {
    let _ = writeln!(
        out,
        "    [{}] {}   (is {}, needs {})",
        mark(condition.holds),
        condition.condition,
        condition.actual,
        condition.expected
    );
}

/// The assignment as text.
pub fn render(assignment: &pb::PersonaAssignment) -> String {
    let mut out = String::new();
    let persona = assignment.persona.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "{}: {} ({})",
        assignment.name, persona.display_name, persona.persona_id
    );
    if !persona.description.is_empty() {
        let _ = writeln!(out, "  {}", persona.description);
    }
    if let Some(features) = &assignment.features {
        let frequency = pb::FrequencyClass::try_from(features.frequency_class)
            .map(|class| {
                class
                    .as_str_name()
                    .trim_start_matches("FREQUENCY_CLASS_")
                    .to_owned()
            })
            .unwrap_or_default();
        let stage = pb::EngagementStage::try_from(features.engagement_stage)
            .map(|stage| {
                stage
                    .as_str_name()
                    .trim_start_matches("ENGAGEMENT_STAGE_")
                    .to_owned()
            })
            .unwrap_or_default();
        let spend = features
            .total_spend
            .as_ref()
            .map_or(0, |money| money.minor_units);
        let _ = writeln!(
            out,
            "  {} {} ({} in 365 days), spend {}.{:02}, {frequency}, {stage}",
            features.purchase_count,
            if features.purchase_count == 1 {
                "purchase"
            } else {
                "purchases"
            },
            features.purchases_365d,
            spend / 100,
            (spend % 100).abs()
        );
    }
    let explanation = assignment.explanation.clone().unwrap_or_default();
    let _ = writeln!(out, "\nWhy {}:", persona.persona_id);
    for condition in &explanation.matched {
        condition_line(&mut out, condition);
    }
    if !explanation.rejected.is_empty() {
        let _ = writeln!(out, "\nPersonas ranked above, and why not:");
        for rejected in &explanation.rejected {
            let _ = writeln!(out, "  {}", rejected.persona_id);
            for condition in &rejected.failed {
                condition_line(&mut out, condition);
            }
        }
    }
    if !explanation.next_steps.is_empty() {
        let _ = writeln!(out, "\nNext steps:");
        for step in &explanation.next_steps {
            let _ = writeln!(out, "  {}", step.description);
        }
    }
    if !persona.recommended_actions.is_empty() {
        let _ = writeln!(out, "\nRecommended:");
        for action in &persona.recommended_actions {
            let _ = writeln!(out, "  - {action}");
        }
        if !persona.channels.is_empty() {
            let _ = writeln!(out, "  through {}", persona.channels.join(", "));
        }
    }
    let _ = writeln!(out, "\n(catalog revision {})", assignment.catalog_revision);
    out
}
