//! Personas: the catalog in force, one customer's persona with its
//! explanation, and persona counts and exports over the whole index.

use std::sync::{Arc, RwLockReadGuard};

use super::bits::Bits;
use super::features::{features_of, CustomerFeatures};
use super::frame::Frame;
use super::index::FeatureIndex;
use super::select::{
    channel_status, compare, consented, is_one_of, is_present, is_true, passes, select,
    select_within, split_objectors, Value,
};
use super::Engine;
use crate::domain::features::{FrequencyClass, Thresholds};
use crate::domain::persona::{default_catalog, parse_persona_id, Catalog, Persona, MAX_PERSONAS};
use crate::domain::rules::{
    compile, variable_name, Channel, Comparison, Literal, Predicate, StringTest, Variable,
};
use crate::domain::{CustomerId, Error, Result, Timestamp, TraitValue, Violations};

/// The catalog in force with its rules compiled.
#[derive(Debug)]
pub struct CompiledCatalog {
    /// The catalog.
    pub catalog: Catalog,
    /// The rule of each persona, in order.
    pub rules: Vec<Predicate>,
    /// The same rules with the text of every condition written out.
    explainers: Vec<Explainer>,
}

impl CompiledCatalog {
    /// Compiles every rule; each failure is a violation of `personas[i].rule`.
    pub fn new(catalog: Catalog) -> Result<Self> {
        let mut violations = Violations::default();
        let mut rules = Vec::with_capacity(catalog.personas.len());
        for (index, persona) in catalog.personas.iter().enumerate() {
            match compile(&persona.rule) {
                Ok(rule) => rules.push(rule),
                Err(error) => violations.add(
                    format!("personas[{index}].rule"),
                    format!("at character {}: {}", error.position, error.message),
                ),
            }
        }
        let explainers = rules.iter().map(Explainer::new).collect();
        violations.into_result(CompiledCatalog {
            catalog,
            rules,
            explainers,
        })
    }
}

/// A rule ready to be explained: the text of each of its conditions, and
/// what each asks for, are written out once, when the catalog is compiled,
/// so that explaining one customer formats only the customer's values.
#[derive(Debug)]
enum Explainer {
    /// A condition on one value, or a constant.
    Leaf {
        rule: Predicate,
        condition: String,
        expected: String,
    },
    And(Vec<Explainer>),
    Or(Vec<Explainer>),
    /// A negation, explained as one condition.
    Not {
        rule: Predicate,
        condition: String,
    },
}

impl Explainer {
    fn new(rule: &Predicate) -> Self {
        match rule {
            Predicate::And(operands) => Explainer::And(operands.iter().map(Self::new).collect()),
            Predicate::Or(operands) => Explainer::Or(operands.iter().map(Self::new).collect()),
            Predicate::Not(_) => Explainer::Not {
                rule: rule.clone(),
                condition: render(rule),
            },
            leaf => Explainer::Leaf {
                rule: leaf.clone(),
                condition: render(leaf),
                expected: expected(leaf),
            },
        }
    }

    fn holds(&self, facts: &Facts<'_>) -> bool {
        match self {
            Explainer::Leaf { rule, .. } | Explainer::Not { rule, .. } => holds(rule, facts),
            Explainer::And(parts) => parts.iter().all(|part| part.holds(facts)),
            Explainer::Or(parts) => parts.iter().any(|part| part.holds(facts)),
        }
    }

    /// Whether the rule holds for one customer; the conditions that decided
    /// it go to `out`: all of them when it holds, the failed ones when it
    /// does not.
    fn explain(&self, facts: &Facts<'_>, out: &mut Vec<ConditionResult>) -> bool {
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
                    if all || !part.holds(facts) {
                        part.explain(facts, out);
                    }
                }
                all
            }
            Explainer::Or(parts) => {
                let any = self.holds(facts);
                for part in parts {
                    // When the whole holds, the parts that hold explain it.
                    if !any || part.holds(facts) {
                        part.explain(facts, out);
                    }
                }
                any
            }
        }
    }
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
        Predicate::Compare(_, comparison, literal) => {
            format!("{} {}", operator(*comparison), show_literal(literal))
        }
        Predicate::In(_, literals) => format!("in [{}]", show_literals(literals)),
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
fn holds(rule: &Predicate, facts: &Facts<'_>) -> bool {
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

/// What it would take to reach a persona ranked higher.
#[derive(Debug, Clone)]
pub struct NextStep {
    /// The persona's id.
    pub persona: String,
    /// What it takes, such as `1 more purchase in 365 days → VIP_FREQUENT`.
    pub description: String,
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

/// Customers per persona.
#[derive(Debug, Clone)]
pub struct PersonaCounts {
    /// Per persona, in catalog order: (id, customers, spend in minor units).
    pub groups: Vec<(String, u64, i128)>,
    /// Customers selected, objectors left out.
    pub total: u64,
    /// Selected customers who object to profiling.
    pub excluded: u64,
    /// Selected customers no rule holds for.
    pub unassigned: u64,
    /// The catalog revision.
    pub revision: u64,
}

/// One customer's values, read as rules read them.
struct Facts<'a> {
    index: &'a FeatureIndex,
    row: usize,
    features: &'a CustomerFeatures,
}

fn text(value: &str) -> Value<'_> {
    Value::Text(value)
}

impl Facts<'_> {
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
        }
    }

    fn shown(&self, variable: &Variable) -> String {
        self.with_value(variable, |value| show(&value))
    }
}

fn show(value: &Value<'_>) -> String {
    match value {
        Value::Absent => "absent".to_owned(),
        Value::Number(number) => show_number(*number),
        Value::Text(text) => (*text).to_owned(),
        Value::Bool(flag) => flag.to_string(),
    }
}

fn show_number(number: f64) -> String {
    if number.fract() == 0.0 && number.abs() < 1e15 {
        format!("{}", number as i64)
    } else {
        format!("{number}")
    }
}

fn show_literal(literal: &Literal) -> String {
    match literal {
        Literal::Int(value) => value.to_string(),
        Literal::Double(value) => show_number(*value),
        Literal::String(value) => format!("{value:?}"),
        Literal::Bool(value) => value.to_string(),
        Literal::Relationship(value) => format!("{:?}", value.name()),
        Literal::Party(value) => format!("{:?}", value.name()),
        Literal::Gender(value) => format!("{:?}", value.name()),
        Literal::AgeBand(value) => format!("{:?}", value.name()),
        Literal::IncomeBand(value) => format!("{:?}", value.name()),
        Literal::Consent(value) => format!("{:?}", value.name()),
        Literal::Frequency(value) => format!("{:?}", value.name()),
        Literal::Stage(value) => format!("{:?}", value.name()),
        Literal::RfmSegment(value) => format!("{:?}", value.name()),
    }
}

fn show_literals(literals: &[Literal]) -> String {
    literals
        .iter()
        .map(show_literal)
        .collect::<Vec<_>>()
        .join(", ")
}

fn operator(comparison: Comparison) -> &'static str {
    match comparison {
        Comparison::Eq => "==",
        Comparison::Ne => "!=",
        Comparison::Lt => "<",
        Comparison::Le => "<=",
        Comparison::Gt => ">",
        Comparison::Ge => ">=",
    }
}

/// A rule written back as text.
fn render(rule: &Predicate) -> String {
    match rule {
        Predicate::Const(value) => value.to_string(),
        Predicate::Compare(variable, comparison, literal) => format!(
            "{} {} {}",
            variable_name(variable),
            operator(*comparison),
            show_literal(literal)
        ),
        Predicate::In(variable, literals) => format!(
            "{} in [{}]",
            variable_name(variable),
            show_literals(literals)
        ),
        Predicate::Text(variable, test, needle) => format!(
            "{}.{}({needle:?})",
            variable_name(variable),
            match test {
                StringTest::StartsWith => "startsWith",
                StringTest::EndsWith => "endsWith",
                StringTest::Contains => "contains",
            }
        ),
        Predicate::IsTrue(variable) => variable_name(variable),
        Predicate::Has(variable) => format!("has({})", variable_name(variable)),
        Predicate::And(operands) => operands
            .iter()
            .map(|operand| bracketed(operand, matches!(operand, Predicate::Or(_))))
            .collect::<Vec<_>>()
            .join(" && "),
        Predicate::Or(operands) => operands
            .iter()
            .map(|operand| bracketed(operand, matches!(operand, Predicate::And(_))))
            .collect::<Vec<_>>()
            .join(" || "),
        Predicate::Not(operand) => format!("!({})", render(operand)),
    }
}

fn bracketed(rule: &Predicate, needed: bool) -> String {
    if needed {
        format!("({})", render(rule))
    } else {
        render(rule)
    }
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
fn next_step(failed_rules: &[&Predicate], features: &CustomerFeatures) -> Option<String> {
    let steps: Option<Vec<String>> = failed_rules
        .iter()
        .map(|failed| step_for(failed, features))
        .collect();
    steps
        .filter(|steps| !steps.is_empty())
        .map(|steps| steps.join(" and "))
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

fn assign(
    index: RwLockReadGuard<'_, FeatureIndex>,
    thresholds: Thresholds,
    compiled: &CompiledCatalog,
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
    let facts = Facts {
        index: &index,
        row,
        features: &features,
    };
    let mut rejected = Vec::new();
    let mut next_steps = Vec::new();
    let mut matched = None;
    let personas = compiled.catalog.personas.iter();
    for ((persona, rule), explainer) in personas.zip(&compiled.rules).zip(&compiled.explainers) {
        let mut conditions = Vec::new();
        if explainer.explain(&facts, &mut conditions) {
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
            compiled.catalog.revision,
            id.name()
        )));
    };
    Ok(Assignment {
        persona: persona.clone(),
        matched: conditions,
        rejected,
        next_steps,
        revision: compiled.catalog.revision,
        features,
    })
}

/// Each member's persona: the position in the catalog, or `None`.
fn assignments(frame: &Frame<'_>, compiled: &CompiledCatalog, members: &Bits) -> Vec<Bits> {
    let mut remaining = members.clone();
    let mut assigned = Vec::with_capacity(compiled.rules.len());
    for rule in &compiled.rules {
        let bits = select_within(frame, rule, &remaining);
        remaining.and_not(&bits);
        assigned.push(bits);
    }
    assigned
}

impl Engine {
    /// The catalog in force.
    pub fn persona_catalog(&self) -> Arc<CompiledCatalog> {
        self.shared.catalog()
    }

    /// A customer's persona as of `at`, with the explanation: a read of one
    /// customer, inline unless it would have to scan (see
    /// [`Engine::read_customer`]); the blocking pool's thread hand-offs would
    /// cost more than the usual microseconds of work.
    pub async fn customer_persona(&self, id: CustomerId, at: Timestamp) -> Result<Assignment> {
        let compiled = self.shared.catalog();
        let thresholds = self.shared.settings.thresholds;
        self.read_customer(at, move |index| {
            assign(index, thresholds, &compiled, &id, at)
        })
        .await
    }

    /// Replaces the catalog, after checking every persona; `expected`, when
    /// given, must be the stored revision.
    pub async fn replace_catalog(
        &self,
        personas: Vec<Persona>,
        expected: Option<u64>,
    ) -> Result<Catalog> {
        let mut violations = Violations::default();
        if personas.is_empty() || personas.len() > MAX_PERSONAS {
            violations.add(
                "personas",
                format!("1 to {MAX_PERSONAS} personas, got {}", personas.len()),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (index, persona) in personas.iter().enumerate() {
            if let Err(description) = parse_persona_id(&persona.id) {
                violations.add(format!("personas[{index}].persona_id"), description);
            } else if !seen.insert(persona.id.clone()) {
                violations.add(
                    format!("personas[{index}].persona_id"),
                    format!("{} appears twice", persona.id),
                );
            }
        }
        let checked = CompiledCatalog::new(Catalog {
            personas,
            revision: 0,
            built_in: false,
        });
        if let Err(Error::InvalidArgument(found)) = &checked {
            for violation in found {
                violations.add(violation.field.clone(), violation.description.clone());
            }
        }
        violations.into_result(())?;
        let compiled = checked?;
        self.store_catalog(compiled, expected).await
    }

    /// Restores the built-in catalog.
    pub async fn reset_catalog(&self) -> Result<Catalog> {
        let compiled = CompiledCatalog::new(default_catalog(0))?;
        self.store_catalog(compiled, None).await
    }

    async fn store_catalog(
        &self,
        mut compiled: CompiledCatalog,
        expected: Option<u64>,
    ) -> Result<Catalog> {
        let stored = self
            .write(move |shared| {
                let current = shared.catalog().catalog.revision;
                if let Some(expected) = expected {
                    if expected != current {
                        return Err(Error::FailedPrecondition(format!(
                            "the catalog is at revision {current}, not {expected}: read it again"
                        )));
                    }
                }
                compiled.catalog.revision = current + 1;
                shared.store.put_catalog(&compiled.catalog)?;
                let catalog = compiled.catalog.clone();
                shared.set_catalog(compiled);
                Ok(catalog)
            })
            .await?;
        self.durable().await?;
        Ok(stored)
    }

    /// Customers per persona among those `rule` selects, as of `at`.
    pub async fn breakdown_personas(
        &self,
        rule: Predicate,
        at: Timestamp,
    ) -> Result<PersonaCounts> {
        let compiled = self.shared.catalog();
        self.scan(move |shared| {
            let index = shared.index();
            let frame = Frame::new(&index, at, shared.settings.thresholds);
            let (members, objectors) = split_objectors(&frame, &select(&frame, &rule));
            let total = frame.total();
            let assigned = assignments(&frame, &compiled, &members);
            let mut unassigned = members.count() as u64;
            let groups = compiled
                .catalog
                .personas
                .iter()
                .zip(&assigned)
                .map(|(persona, bits)| {
                    let count = bits.count() as u64;
                    unassigned -= count;
                    let spend: i128 = bits.rows().map(|row| i128::from(total[row])).sum();
                    (persona.id.clone(), count, spend)
                })
                .collect();
            Ok(PersonaCounts {
                groups,
                total: members.count() as u64,
                excluded: objectors.count() as u64,
                unassigned,
                revision: compiled.catalog.revision,
            })
        })
        .await
    }

    /// Every customer's persona among `persona_ids` (all when empty), in id
    /// order, with consent on `channel` when given; never an objector.
    pub async fn export_personas(
        &self,
        persona_ids: Vec<String>,
        channel: Option<Channel>,
        at: Timestamp,
    ) -> Result<(u64, Vec<(String, String)>)> {
        let compiled = self.shared.catalog();
        for (index, id) in persona_ids.iter().enumerate() {
            if !compiled.catalog.personas.iter().any(|p| &p.id == id) {
                return Err(Error::invalid(
                    format!("persona_ids[{index}]"),
                    format!(
                        "{id} is not in the catalog (revision {})",
                        compiled.catalog.revision
                    ),
                ));
            }
        }
        self.scan(move |shared| {
            let index = shared.index();
            let frame = Frame::new(&index, at, shared.settings.thresholds);
            let (mut members, _) =
                split_objectors(&frame, &select(&frame, &Predicate::Const(true)));
            if let Some(channel) = channel {
                members.and(&consented(&frame, channel));
            }
            let assigned = assignments(&frame, &compiled, &members);
            let mut rows: Vec<(&str, &str)> = Vec::new();
            for (persona, bits) in compiled.catalog.personas.iter().zip(&assigned) {
                if !persona_ids.is_empty() && !persona_ids.contains(&persona.id) {
                    continue;
                }
                rows.extend(
                    bits.rows()
                        .map(|row| (index.id_at(row as u32), persona.id.as_str())),
                );
            }
            rows.sort_unstable();
            Ok((
                compiled.catalog.revision,
                rows.into_iter()
                    .map(|(customer, persona)| (customer.to_owned(), persona.to_owned()))
                    .collect(),
            ))
        })
        .await
    }
}
