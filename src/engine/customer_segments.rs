//! The saved segments of one customer: which segments they are in as of an
//! evaluation time and, on request, why or why not. Each segment's stored
//! rule is answered for the one customer as a persona is
//! (`personas::explain`): from the customer's features, read from the index
//! without reading anyone else's, so that the members agree with
//! `Engine::segment_members` at the same time.
//!
//! Compiling a rule takes far longer than answering it, so the compiled
//! rules are kept by the text of their filter. A rule's compiled form
//! depends on that text alone: an entry never goes stale, and a segment
//! whose filter changes, by any write path or a restore, is simply looked up
//! by its new text. The segments themselves are read from the store on each
//! call, a short range of small records, so that the answer always holds
//! the segments saved.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use super::features::features_of;
use super::personas::{ConditionResult, Explainer, Facts, Named};
use super::segments::stored_rule;
use super::Engine;
use crate::domain::segment::{Segment, SegmentId};
use crate::domain::{CustomerId, Result, Timestamp};

/// The most compiled rules kept; past it, the rules of filters that the
/// saved segments no longer have are dropped.
const KEPT_RULES: usize = 4096;

/// A saved segment and whether one customer is in it.
#[derive(Debug, Clone)]
pub struct CustomerSegment {
    /// The segment.
    pub id: SegmentId,
    /// The segment's display name.
    pub display_name: String,
    /// Whether the customer is a member.
    pub member: bool,
    /// With an explanation: every condition of the segment's rule, as it
    /// turned out for the customer; none for an empty filter.
    pub conditions: Vec<ConditionResult>,
}

/// The saved segments of one customer as of an evaluation time.
#[derive(Debug, Clone)]
pub struct CustomerSegments {
    /// In id order: the segments the customer is in or, with an
    /// explanation, every saved segment.
    pub segments: Vec<CustomerSegment>,
    /// Whether the customer objects to profiling, and so is in none.
    pub objects_to_profiling: bool,
}

/// A saved segment's rule, compiled to be answered for one customer.
#[derive(Debug)]
struct SegmentRule {
    /// The rule, with the text of every condition written out.
    explainer: Explainer,
    /// Whether the filter is empty: it selects everyone, and has no
    /// condition to explain.
    everyone: bool,
}

impl SegmentRule {
    /// A segment's stored rule, compiled to be answered and explained.
    fn compile(segment: &Segment) -> Result<Self> {
        Ok(SegmentRule {
            explainer: Explainer::new(&stored_rule(segment)?),
            everyone: segment.filter.trim().is_empty(),
        })
    }

    /// Whether the rule holds for one customer; with `explained`, every
    /// condition goes to it.
    fn answer(&self, facts: &Facts<'_>, explained: Option<&mut Vec<ConditionResult>>) -> bool {
        match explained {
            Some(_) if self.everyone => true,
            Some(conditions) => self.explainer.explain(facts, Named::Every, conditions),
            None => self.explainer.holds(facts),
        }
    }
}

/// Compiled rules by the text of their filter, for every engine in the
/// process: what a text compiles to never changes.
static COMPILED: LazyLock<Mutex<HashMap<String, Arc<SegmentRule>>>> = LazyLock::new(Mutex::default);

/// The rule of each of `segments`, in order: compiled as
/// `Engine::segment_members` compiles it, once per filter text.
fn rules_of(segments: &[Segment]) -> Result<Vec<Arc<SegmentRule>>> {
    let mut compiled = COMPILED.lock().unwrap_or_else(PoisonError::into_inner);
    let mut rules = Vec::with_capacity(segments.len());
    for segment in segments {
        let rule = match compiled.get(&segment.filter) {
            Some(rule) => Arc::clone(rule),
            None => {
                let rule = Arc::new(SegmentRule::compile(segment)?);
                compiled.insert(segment.filter.clone(), Arc::clone(&rule));
                rule
            }
        };
        rules.push(rule);
    }
    if compiled.len() > KEPT_RULES.max(segments.len()) {
        let current: HashSet<&str> = segments.iter().map(|s| s.filter.as_str()).collect();
        compiled.retain(|filter, _| current.contains(filter.as_str()));
    }
    Ok(rules)
}

impl Engine {
    /// The saved segments customer `id` is in as of `at`, in id order; with
    /// `explain`, every saved segment, each with every condition of its
    /// rule. A customer who objects to profiling is in none. The members
    /// are those of `Engine::segment_members` at the same time: the same
    /// stored rules over the same features, read for this one customer as
    /// `Engine::customer_persona` reads them. A scan, for its cost grows
    /// with the saved segments (see the module docs of the engine).
    pub async fn customer_segments(
        &self,
        id: CustomerId,
        at: Timestamp,
        explain: bool,
    ) -> Result<CustomerSegments> {
        self.scan(move |shared| {
            let segments = shared.store.list_segments(None, usize::MAX)?;
            let rules = rules_of(&segments)?;
            let index = shared.index();
            let (number, features) = features_of(&index, &id, at, shared.settings.thresholds)?;
            let row = number as usize;
            let objects_to_profiling = index.columns().objects[row];
            if objects_to_profiling && !explain {
                return Ok(CustomerSegments {
                    segments: Vec::new(),
                    objects_to_profiling,
                });
            }
            let facts = Facts::new(&index, row, &features);
            let mut answers = Vec::new();
            for (segment, rule) in segments.into_iter().zip(&rules) {
                let mut conditions = Vec::new();
                let holds = rule.answer(&facts, explain.then_some(&mut conditions));
                let member = holds && !objects_to_profiling;
                if member || explain {
                    answers.push(CustomerSegment {
                        id: segment.id,
                        display_name: segment.display_name,
                        member,
                        conditions,
                    });
                }
            }
            Ok(CustomerSegments {
                segments: answers,
                objects_to_profiling,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::Predicate;

    fn segment(id: &str, filter: &str) -> Segment {
        Segment {
            id: SegmentId::parse(id).unwrap(),
            display_name: id.to_owned(),
            description: String::new(),
            filter: filter.to_owned(),
            revision: 1,
            create_time: Timestamp::from_nanos(0),
            update_time: Timestamp::from_nanos(0),
        }
    }

    #[test]
    fn an_empty_filter_selects_everyone_with_no_condition_to_explain() {
        let rules = rules_of(&[segment("blank", " "), segment("constant", "true")]).unwrap();
        assert!(rules[0].everyone);
        assert!(matches!(
            rules[0].explainer,
            Explainer::Leaf {
                rule: Predicate::Const(true),
                ..
            }
        ));
        // A rule that is written out is explained, even a constant.
        assert!(!rules[1].everyone);
    }

    #[test]
    fn a_filter_is_compiled_once_for_every_segment_that_has_it() {
        let filter = "features.purchase_count >= 17 && features.recency_days <= 3";
        let first = rules_of(&[segment("first", filter)]).unwrap();
        let again = rules_of(&[segment("again", filter), segment("other", "true")]).unwrap();
        assert!(Arc::ptr_eq(&first[0], &again[0]));
        assert!(!Arc::ptr_eq(&again[0], &again[1]));
        let broken = rules_of(&[segment("broken", "features.purchase_count >=")]);
        assert!(broken.is_err());
    }
}
