//! Next steps: what it would take for a customer to reach a persona ranked
//! above theirs, when that is something they can do (more purchases, a
//! feedback, a referral).

use crate::domain::features::FrequencyClass;
use crate::domain::rules::{Comparison, Literal, Predicate, Variable};
use crate::engine::features::CustomerFeatures;

/// What it would take to reach a persona ranked higher.
#[derive(Debug, Clone)]
pub struct NextStep {
    /// The persona's id.
    pub persona: String,
    /// What it takes, such as `1 more purchase in 365 days → VIP_FREQUENT`.
    pub description: String,
}

/// What it would take for one failed condition to hold, if it is a step a
/// customer can take: more purchases, a feedback, a referral.
fn step_for(rule: &Predicate, features: &CustomerFeatures) -> Option<String> {
    let stats = &features.purchases;
    let purchases = |more: u64, what: &str| {
        let noun = if more == 1 { "purchase" } else { "purchases" };
        format!("{more} more {noun}{what}")
    };
    let at_least = |comparison: Comparison, x: f64, actual: f64| -> Option<f64> {
        let needed = match comparison {
            Comparison::Ge => x.ceil(),
            Comparison::Gt => x.floor() + 1.0,
            _ => return None,
        };
        (needed > actual).then_some(needed - actual)
    };
    let number = |literal: &Literal| match literal {
        Literal::Int(value) => Some(*value as f64),
        Literal::Double(value) => Some(*value),
        _ => None,
    };
    match rule {
        Predicate::Compare(Variable::PurchaseCount, comparison, literal) => {
            let more = at_least(*comparison, number(literal)?, stats.count as f64)?;
            Some(purchases(more as u64, ""))
        }
        Predicate::Compare(Variable::Purchases365d, comparison, literal) => {
            let more = at_least(*comparison, number(literal)?, stats.in_365_days as f64)?;
            Some(purchases(more as u64, " in 365 days"))
        }
        Predicate::Compare(Variable::Purchases90d, comparison, literal) => {
            let more = at_least(*comparison, number(literal)?, stats.in_90_days as f64)?;
            Some(purchases(more as u64, " in 90 days"))
        }
        Predicate::Compare(Variable::Frequency, Comparison::Eq, Literal::Frequency(target)) => {
            match (target, features.frequency) {
                (FrequencyClass::FrequentCustomer, FrequencyClass::Lapsed) => None,
                (FrequencyClass::FrequentCustomer, _) => {
                    let needed = u64::from(features.thresholds.frequent_min_purchases_365d);
                    let more = needed.saturating_sub(stats.in_365_days).max(1);
                    Some(purchases(more, " in 365 days"))
                }
                (FrequencyClass::OneTimeBuyer, FrequencyClass::None) => {
                    Some("a first purchase".to_owned())
                }
                _ => None,
            }
        }
        Predicate::In(Variable::Frequency, targets)
            if targets.contains(&Literal::Frequency(FrequencyClass::RepeatCustomer))
                && stats.count < 2 =>
        {
            Some(purchases(2 - stats.count, ""))
        }
        Predicate::Compare(Variable::Stage, Comparison::Eq, Literal::Stage(stage)) => {
            use crate::domain::features::EngagementStage as S;
            match stage {
                S::TellingOthers => Some("a referral".to_owned()),
                S::GivingFeedback => Some("a feedback".to_owned()),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The step to a persona whose rule failed, when every failed condition
/// has one; several are joined with "and".
pub(super) fn next_step(
    failed_rules: &[&Predicate],
    features: &CustomerFeatures,
) -> Option<String> {
    let steps: Option<Vec<String>> = failed_rules
        .iter()
        .map(|failed| step_for(failed, features))
        .collect();
    steps
        .filter(|steps| !steps.is_empty())
        .map(|steps| steps.join(" and "))
}
