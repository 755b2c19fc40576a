//! The saved segments of one customer: which segments they are in as of an
//! evaluation time and, on request, why or why not. Each segment's stored
//! rule is answered for the one customer as a persona is
//! (`personas::explain`): from the customer's features, read from the index
//! without reading anyone else's, so that the members agree with
//! `Engine::segment_members` at the same time.
//!
//! Reading and compiling the saved segments takes far longer than answering
//! them, so the engine keeps them compiled, with the store's generation of
//! the segments they were read at; a call that finds the generation moved
//! on reads them again, and compiles only the filters it has not seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, TryLockError};

use super::features::features_of;
use super::personas::{ConditionResult, Explainer, Facts, Named};
use super::segments::stored_rule;
use super::Engine;
use crate::domain::segment::{Segment, SegmentId};
use crate::domain::{CustomerId, Result, Timestamp};
use crate::store::Store;

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

/// The saved segments, each with its rule compiled.
type Compiled = Arc<[(Segment, Arc<SegmentRule>)]>;

/// The saved segments compiled, as of a generation of the store's.
#[derive(Debug, Default)]
pub(super) struct SavedRules(Mutex<Option<(u64, Compiled)>>);

impl SavedRules {
    /// The saved segments kept, if no segment changed since they were
    /// read; never reads the store, nor waits for a call that does.
    fn kept(&self, store: &Store) -> Option<Compiled> {
        let kept = match self.0.try_lock() {
            Ok(kept) => kept,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let (known, compiled) = kept.as_ref()?;
        (*known == store.segments_generation()).then(|| Arc::clone(compiled))
    }

    /// The saved segments in id order, each with its rule compiled as
    /// `Engine::segment_members` compiles it: those kept, if no segment
    /// changed since, else read from the store again.
    fn get(&self, store: &Store) -> Result<Compiled> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Read before the list: a change stored meanwhile moves it on, and
        // the next call reads again.
        let generation = store.segments_generation();
        if let Some((known, compiled)) = kept.as_ref() {
            if *known == generation {
                return Ok(Arc::clone(compiled));
            }
        }
        let before: HashMap<&str, &Arc<SegmentRule>> = kept
            .as_ref()
            .map(|(_, compiled)| {
                compiled
                    .iter()
                    .map(|(segment, rule)| (segment.filter.as_str(), rule))
                    .collect()
            })
            .unwrap_or_default();
        let mut compiled = Vec::new();
        for segment in store.list_segments(None, usize::MAX)? {
            let rule = match before.get(segment.filter.as_str()) {
                Some(rule) => Arc::clone(rule),
                None => Arc::new(SegmentRule::compile(&segment)?),
            };
            compiled.push((segment, rule));
        }
        let compiled: Compiled = compiled.into();
        *kept = Some((generation, Arc::clone(&compiled)));
        Ok(compiled)
    }
}

impl Engine {
    /// The saved segments customer `id` is in as of `at`, in id order; with
    /// `explain`, every saved segment, each with every condition of its
    /// rule. A customer who objects to profiling is in none. The members
    /// are those of `Engine::segment_members` at the same time: the same
    /// stored rules over the same features, read for this one customer as
    /// `Engine::customer_persona` reads them, and, as it is, inline when
    /// the customer's figures are at hand; the saved segments are read and
    /// compiled on the blocking pool when one changed.
    pub async fn customer_segments(
        &self,
        id: CustomerId,
        at: Timestamp,
        explain: bool,
    ) -> Result<CustomerSegments> {
        let segments = match self.shared.saved_rules.kept(&self.shared.store) {
            Some(segments) => segments,
            None => {
                self.scan(|shared| shared.saved_rules.get(&shared.store))
                    .await?
            }
        };
        let thresholds = self.shared.settings.thresholds;
        self.read_customer(at, move |index| {
            let (number, features) = features_of(&index, &id, at, thresholds)?;
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
            for (segment, rule) in segments.iter() {
                let mut conditions = Vec::new();
                let holds = rule.answer(&facts, explain.then_some(&mut conditions));
                let member = holds && !objects_to_profiling;
                if member || explain {
                    answers.push(CustomerSegment {
                        id: segment.id.clone(),
                        display_name: segment.display_name.clone(),
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
    use crate::store::{Durability, StoreOptions};

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

    fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(&StoreOptions {
            path: dir.path().join("db"),
            cache_capacity_bytes: 1024 * 1024,
            durability: Durability::Relaxed,
            compress: true,
        })
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_empty_filter_selects_everyone_with_no_condition_to_explain() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        store.put_segment(&segment("blank", " ")).unwrap();
        store.put_segment(&segment("constant", "true")).unwrap();
        let rules = SavedRules::default().get(&store).unwrap();
        assert!(rules[0].1.everyone);
        assert!(matches!(
            rules[0].1.explainer,
            Explainer::Leaf {
                rule: Predicate::Const(true),
                ..
            }
        ));
        // A rule that is written out is explained, even a constant.
        assert!(!rules[1].1.everyone);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_segments_are_read_again_after_a_change_and_a_filter_is_compiled_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let saved = SavedRules::default();
        let filter = "features.purchase_count >= 17 && features.recency_days <= 3";
        store.put_segment(&segment("first", filter)).unwrap();
        let first = saved.get(&store).unwrap();
        assert!(Arc::ptr_eq(&first, &saved.get(&store).unwrap()));
        store.put_segment(&segment("other", "true")).unwrap();
        let again = saved.get(&store).unwrap();
        let ids: Vec<&str> = again
            .iter()
            .map(|(segment, _)| segment.id.as_str())
            .collect();
        assert_eq!(ids, ["first", "other"]);
        assert!(Arc::ptr_eq(&first[0].1, &again[0].1));
        assert!(store
            .delete_segment(&SegmentId::parse("first").unwrap())
            .unwrap());
        let after = saved.get(&store).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].0.id.as_str(), "other");
    }
}
