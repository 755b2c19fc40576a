//! One customer's persona and why: each condition of a rule with the
//! customer's value, the facts the conditions read, and the assignment with
//! the personas ranked above and what failed for them. The explainer and
//! the facts serve any rule about one customer: a saved segment's too.

use crate::engine::IndexRead;

use super::advice::{next_step, NextStep};
use crate::domain::features::Thresholds;
use crate::domain::persona::{Catalog, Persona};
use crate::domain::rules::{show_number, Predicate, StringTest, Variable};
use crate::domain::{CustomerId, Error, Result, Timestamp, TraitValue};
use crate::engine::features::{features_of, CustomerFeatures};
use crate::engine::index::FeatureIndex;
use crate::engine::select::{
    channel_status, compare, is_one_of, is_present, is_true, passes, Value,
};

/// A rule ready to be explained: the text of each of its conditions, and
/// what each asks for, are written out once, when the rule is compiled,
/// so that explaining one customer formats only the customer's values.
#[derive(Debug)]
pub(in crate::engine) enum Explainer {
    /// A condition on one value, or a constant.
    Leaf {
        /// The condition.
        rule: Predicate,
        /// Its text.
        condition: String,
        /// What it asks for.
        expected: String,
    },
    /// Every part must hold.
    And(Vec<Explainer>),
    /// One part must hold.
    Or(Vec<Explainer>),
    /// A negation, explained as one condition.
    Not {
        /// The whole negation.
        rule: Predicate,
        /// Its text.
        condition: String,
    },
}

impl Explainer {
    /// The explainer of a rule.
    pub(in crate::engine) fn new(rule: &Predicate) -> Self {
        match rule {
            Predicate::And(operands) => Explainer::And(operands.iter().map(Self::new).collect()),
            Predicate::Or(operands) => Explainer::Or(operands.iter().map(Self::new).collect()),
            Predicate::Not(_) => Explainer::Not {
                rule: rule.clone(),
                condition: rule.to_string(),
            },
            leaf => Explainer::Leaf {
                rule: leaf.clone(),
                condition: leaf.to_string(),
                expected: expected(leaf),
            },
        }
    }

    /// Whether the rule holds for one customer.
    pub(in crate::engine) fn holds(&self, facts: &Facts<'_>) -> bool {
        match self {
            Explainer::Leaf { rule, .. } | Explainer::Not { rule, .. } => holds(rule, facts),
            Explainer::And(parts) => parts.iter().all(|part| part.holds(facts)),
            Explainer::Or(parts) => parts.iter().any(|part| part.holds(facts)),
        }
    }

    /// Whether the rule holds for one customer; the conditions `named` go
    /// to `out`, in the order of the rule.
    pub(in crate::engine) fn explain(
        &self,
        facts: &Facts<'_>,
        named: Named,
        out: &mut Vec<ConditionResult>,
    ) -> bool {
        match self {
            Explainer::Leaf {
                rule,
                condition,
                expected,
            } => {
                let holds = holds(rule, facts);
                out.push(ConditionResult {
                    condition: condition.clone(),
                    actual: match rule {
                        Predicate::Const(_) => String::new(),
                        _ => leaf_variable(rule).map_or_else(String::new, |v| facts.shown(v)),
                    },
                    expected: expected.clone(),
                    holds,
                });
                holds
            }
            Explainer::Not { rule, condition } => {
                let holds = holds(rule, facts);
                out.push(ConditionResult {
                    condition: condition.clone(),
                    actual: if holds { "does not hold" } else { "holds" }.into(),
                    expected: "does not hold".into(),
                    holds,
                });
                holds
            }
            Explainer::And(parts) => {
                let all = self.holds(facts);
                for part in parts {
                    // When the whole fails, only the failed parts explain it.
                    if named == Named::Every || all || !part.holds(facts) {
                        part.explain(facts, named, out);
                    }
                }
                all
            }
            Explainer::Or(parts) => {
                let any = self.holds(facts);
                for part in parts {
                    // When the whole holds, the parts that hold explain it.
                    if named == Named::Every || !any || part.holds(facts) {
                        part.explain(facts, named, out);
                    }
                }
                any
            }
        }
    }
}

/// Which conditions of a rule an explanation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::engine) enum Named {
    /// The conditions that decided the answer: all of them when the rule
    /// holds, the failed ones when it does not (a persona's explanation).
    Deciding,
    /// Every condition, whether it decided the answer or not (a saved
    /// segment's explanation).
    Every,
}

/// The variable a condition reads.
fn leaf_variable(rule: &Predicate) -> Option<&Variable> {
    match rule {
        Predicate::Compare(variable, _, _)
        | Predicate::In(variable, _)
        | Predicate::Text(variable, _, _)
        | Predicate::IsTrue(variable)
        | Predicate::Has(variable) => Some(variable),
        _ => None,
    }
}

/// What a condition asks for, as the explanation shows it.
fn expected(rule: &Predicate) -> String {
    match rule {
        Predicate::Const(_) => "always".into(),
        Predicate::Compare(_, comparison, literal) => format!("{comparison} {literal}"),
        Predicate::In(_, literals) => {
            let literals: Vec<String> = literals.iter().map(ToString::to_string).collect();
            format!("in [{}]", literals.join(", "))
        }
        Predicate::Text(_, test, needle) => format!(
            "{} {needle:?}",
            match test {
                StringTest::StartsWith => "starts with",
                StringTest::EndsWith => "ends with",
                StringTest::Contains => "contains",
            }
        ),
        Predicate::IsTrue(_) => "true".into(),
        Predicate::Has(_) => "present".into(),
        // Never leaves: explained through their parts, or as a whole.
        Predicate::And(_) => "all of its parts hold".into(),
        Predicate::Or(_) => "one of its parts holds".into(),
        Predicate::Not(_) => "does not hold".into(),
    }
}

/// Whether a rule holds for one customer.
pub(in crate::engine) fn holds(rule: &Predicate, facts: &Facts<'_>) -> bool {
    match rule {
        Predicate::Const(value) => *value,
        Predicate::Compare(variable, comparison, literal) => {
            facts.with_value(variable, |value| compare(value, *comparison, literal))
        }
        Predicate::In(variable, literals) => {
            facts.with_value(variable, |value| is_one_of(value, literals))
        }
        Predicate::Text(variable, test, needle) => {
            facts.with_value(variable, |value| passes(value, *test, needle))
        }
        Predicate::IsTrue(variable) => facts.with_value(variable, is_true),
        Predicate::Has(variable) => facts.with_value(variable, is_present),
        Predicate::And(operands) => operands.iter().all(|operand| holds(operand, facts)),
        Predicate::Or(operands) => operands.iter().any(|operand| holds(operand, facts)),
        Predicate::Not(operand) => !holds(operand, facts),
    }
}

/// One condition of a rule, as it turned out for one customer.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionResult {
    /// The condition as it reads in a rule.
    pub condition: String,
    /// The customer's value.
    pub actual: String,
    /// What the condition asks for.
    pub expected: String,
    /// Whether it holds.
    pub holds: bool,
}

/// A persona ranked above the assigned one, and the conditions that failed.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The persona's id.
    pub persona: String,
    /// What failed.
    pub failed: Vec<ConditionResult>,
}

/// A customer's persona and why.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The persona.
    pub persona: Persona,
    /// The features it was decided on.
    pub features: CustomerFeatures,
    /// Every condition of the persona's rule.
    pub matched: Vec<ConditionResult>,
    /// The personas ranked above, and why not.
    pub rejected: Vec<Rejected>,
    /// What would move the customer up.
    pub next_steps: Vec<NextStep>,
    /// The catalog revision.
    pub revision: u64,
}

/// One customer's values, read as rules read them.
pub(in crate::engine) struct Facts<'a> {
    /// The index the customer is in.
    index: &'a FeatureIndex,
    /// The customer's row.
    row: usize,
    /// The customer's features as of the evaluation time.
    features: &'a CustomerFeatures,
}

/// A customer's value as an explanation shows it: a number as a person
/// writes it, a string or an enum bare, `absent` when there is none.
fn show(value: &Value<'_>) -> String {
    match value {
        Value::Absent => "absent".to_owned(),
        Value::Number(number) => show_number(*number),
        Value::Text(text) => (*text).to_owned(),
        Value::Bool(flag) => flag.to_string(),
    }
}

fn text(value: &str) -> Value<'_> {
    Value::Text(value)
}

impl<'a> Facts<'a> {
    /// The values of the customer in `row` of `index`, whose features as of
    /// the evaluation time are `features`.
    pub(in crate::engine) fn new(
        index: &'a FeatureIndex,
        row: usize,
        features: &'a CustomerFeatures,
    ) -> Self {
        Facts {
            index,
            row,
            features,
        }
    }

    /// The customer's value of a variable; strings are returned through `with`.
    fn with_value<R>(&self, variable: &Variable, with: impl FnOnce(Value<'_>) -> R) -> R {
        let c = self.index.columns();
        let d = self.index.dictionaries();
        let f = self.features;
        let stats = &f.purchases;
        let number = |value: Option<f64>| value.map_or(Value::Absent, Value::Number);
        fn coded(names: &[compact_str::CompactString], code: u32) -> Value<'_> {
            match code {
                0 => Value::Absent,
                code => names
                    .get(code as usize)
                    .map_or(Value::Absent, |name| Value::Text(name.as_str())),
            }
        }
        let row = self.row;
        match variable {
            Variable::Relationship => with(text(c.relationship[row].name())),
            Variable::Party => with(text(c.party[row].name())),
            Variable::Gender => with(text(c.gender[row].name())),
            Variable::Age => with(number(f.age.map(f64::from))),
            Variable::AgeBand => with(text(f.age_band.name())),
            Variable::IncomeBand => with(text(f.income_band.name())),
            Variable::Country => with(coded(d.country.names(), c.country[row])),
            Variable::Region => with(coded(d.region.names(), c.region[row])),
            Variable::City => with(coded(d.city.names(), c.city[row])),
            Variable::Language => with(coded(d.language.names(), c.language[row])),
            Variable::Income => with(number(
                (c.income[row] != i64::MIN).then(|| c.income[row] as f64 / 100.0),
            )),
            Variable::Trait(key) => match self
                .index
                .trait_values(key)
                .and_then(|values| values.get(&(row as u32)))
            {
                Some(TraitValue::String(value)) => with(Value::Text(value)),
                Some(TraitValue::Number(value)) => with(Value::Number(*value)),
                Some(TraitValue::Bool(value)) => with(Value::Bool(*value)),
                None => with(Value::Absent),
            },
            Variable::Consent(channel) => {
                with(text(channel_status(&c.consent[row], *channel).name()))
            }
            Variable::ObjectsToProfiling => with(Value::Bool(c.objects[row])),
            Variable::Frequency => with(text(f.frequency.name())),
            Variable::Stage => with(text(f.stage.name())),
            Variable::PurchaseCount => with(Value::Number(stats.count as f64)),
            Variable::Purchases90d => with(Value::Number(stats.in_90_days as f64)),
            Variable::Purchases365d => with(Value::Number(stats.in_365_days as f64)),
            Variable::TotalSpend => with(Value::Number(stats.total_minor as f64 / 100.0)),
            Variable::AvgOrderValue => with(number(
                stats
                    .average_order_minor()
                    .map(|minor| minor as f64 / 100.0),
            )),
            Variable::RecencyDays => with(number(f.recency_days.map(|days| days as f64))),
            Variable::MeanGapDays => with(number(f.mean_gap_days)),
            Variable::RfmR => with(number(f.rfm.map(|(r, _, _)| f64::from(r)))),
            Variable::RfmF => with(number(f.rfm.map(|(_, f, _)| f64::from(f)))),
            Variable::RfmM => with(number(f.rfm.map(|(_, _, m)| f64::from(m)))),
            Variable::RfmSegment => match f.rfm_segment {
                Some(segment) => with(text(segment.name())),
                None => with(Value::Absent),
            },
            Variable::PAlive => with(number(f.predictions.map(|p| p.p_alive))),
            Variable::PAliveBand => match f.predictions {
                Some(p) => with(text(p.p_alive_band.name())),
                None => with(Value::Absent),
            },
            Variable::ExpectedPurchases90d => {
                with(number(f.predictions.and_then(|p| p.expected_purchases_90d)))
            }
            Variable::ExpectedPurchases365d => with(number(
                f.predictions.and_then(|p| p.expected_purchases_365d),
            )),
            Variable::ExpectedOrderValue => {
                with(number(f.predictions.and_then(|p| p.expected_order_value)))
            }
            Variable::Clv365d => with(number(f.predictions.and_then(|p| p.clv))),
        }
    }

    fn shown(&self, variable: &Variable) -> String {
        self.with_value(variable, |value| show(&value))
    }
}

/// The leaves of a conjunction that fail, or the rule itself.
fn failed_leaves<'r>(rule: &'r Predicate, facts: &Facts<'_>) -> Vec<&'r Predicate> {
    match rule {
        Predicate::And(operands) => operands
            .iter()
            .filter(|operand| !holds(operand, facts))
            .collect(),
        other => vec![other],
    }
}

/// A customer's persona as of `at` with the explanation: the first
/// persona of `catalog` whose rule (of `rules`, explained by `explainers`,
/// in the same order) holds.
pub(super) fn assign(
    index: IndexRead<'_>,
    thresholds: Thresholds,
    catalog: &Catalog,
    rules: &[Predicate],
    explainers: &[Explainer],
    id: &CustomerId,
    at: Timestamp,
) -> Result<Assignment> {
    let (number, features) = features_of(&index, id, at, thresholds)?;
    let row = number as usize;
    if index.columns().objects[row] {
        return Err(Error::FailedPrecondition(format!(
            "{} objects to profiling (GDPR article 21): no persona is assigned",
            id.name()
        )));
    }
    let facts = Facts::new(&index, row, &features);
    let mut rejected = Vec::new();
    let mut next_steps = Vec::new();
    let mut matched = None;
    let personas = catalog.personas.iter();
    for ((persona, rule), explainer) in personas.zip(rules).zip(explainers) {
        let mut conditions = Vec::new();
        if explainer.explain(&facts, Named::Deciding, &mut conditions) {
            matched = Some((persona, conditions));
            break;
        }
        if let Some(step) = next_step(&failed_leaves(rule, &facts), &features) {
            next_steps.push(NextStep {
                persona: persona.id.clone(),
                description: format!("{step} → {}", persona.id),
            });
        }
        rejected.push(Rejected {
            persona: persona.id.clone(),
            failed: conditions,
        });
    }
    // The index lock is not needed to build the answer.
    drop(index);
    let Some((persona, conditions)) = matched else {
        return Err(Error::FailedPrecondition(format!(
            "no persona of catalog revision {} holds for {}: end the catalog with a persona whose rule is true",
            catalog.revision,
            id.name()
        )));
    };
    Ok(Assignment {
        persona: persona.clone(),
        matched: conditions,
        rejected,
        next_steps,
        revision: catalog.revision,
        features,
    })
}
