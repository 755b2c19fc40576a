//! Personas: the catalog in force, one customer's persona with its
//! explanation, and persona counts and exports over the whole index.
//!
//! - [`catalog`]: the catalog compiled.
//! - [`explain`]: one customer's persona, condition by condition.
//! - [`advice`]: the next steps towards a persona ranked higher.
//! - this module: the persona operations of the engine.

mod advice;
mod catalog;
mod explain;

use std::sync::Arc;

use rayon::prelude::*;

pub use advice::NextStep;
pub use catalog::CompiledCatalog;
pub(super) use explain::{holds, Explainer, Facts, Named};
pub use explain::{Assignment, ConditionResult, Rejected};

use super::bits::Bits;
use super::command::{expect_outcome, Command, Outcome};
use super::frame::Frame;
use super::segments::Tally;
use super::select::{consented, eval, select, split_objectors, Span};
use super::Engine;
use crate::domain::persona::{default_catalog, Catalog, Persona, MAX_PERSONAS};
use crate::domain::rules::{Channel, Predicate, Variable};
use crate::domain::{CustomerId, Error, Result, Timestamp};
use explain::assign;

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

/// Rows a block of the persona pass covers: the columns a block reads stay
/// in its core's cache from the catalog's first rule to its last.
const BLOCK_ROWS: usize = 16 * 1024;

// A persona's place in the catalog, plus one, fits a byte.
const _: () = assert!(MAX_PERSONAS < u8::MAX as usize);

/// Each row's persona among `members`: its place in the catalog plus one,
/// or 0 for a row that is not a member or that no rule holds for.
///
/// The rules are decided a block of rows at a time, each block on one core
/// and every rule in turn, so that a block's columns are read from memory
/// once rather than once per rule; a block stops at the rule that leaves
/// it no one. A rule that reads a trait, whose values are kept by row
/// number rather than in row order, is decided over every row first.
pub(super) fn assignments(
    frame: &Frame<'_>,
    compiled: &CompiledCatalog,
    members: &Bits,
) -> Vec<u8> {
    let whole = whole_rules(frame, compiled);
    let mut codes = vec![0u8; frame.rows()];
    codes
        .par_chunks_mut(BLOCK_ROWS)
        .enumerate()
        .for_each(|(block, codes)| {
            assign_block(frame, compiled, &whole, members, block * BLOCK_ROWS, codes);
        });
    codes
}

/// Per rule, its rows over the whole index if it reads a trait, decided
/// before the blocks; `None` for a rule the blocks decide, whose columns
/// a pass over an empty block makes meanwhile, so that the blocks, in
/// parallel, only read them.
fn whole_rules(frame: &Frame<'_>, compiled: &CompiledCatalog) -> Vec<Option<Bits>> {
    compiled
        .rules
        .iter()
        .map(|rule| {
            if rule.reads(&|variable| matches!(variable, Variable::Trait(_))) {
                Some(eval(frame, rule, &Span::whole(frame)))
            } else {
                eval(frame, rule, &Span::block(0..0));
                None
            }
        })
        .collect()
}

/// The personas of the block of rows from `start`, one per place of
/// `codes`, which come zeroed; see [`assignments`].
fn assign_block(
    frame: &Frame<'_>,
    compiled: &CompiledCatalog,
    whole: &[Option<Bits>],
    members: &Bits,
    start: usize,
    codes: &mut [u8],
) {
    let rows = start..start + codes.len();
    let mut remaining = members.span(rows.clone());
    // Made once for all the rules.
    let span = Span::block(rows.clone());
    for (place, (rule, whole)) in compiled.rules.iter().zip(whole).enumerate() {
        if remaining.is_empty() {
            break;
        }
        let mut bits = match whole {
            Some(whole) => whole.span(rows.clone()),
            None => eval(frame, rule, &span),
        };
        bits.and(&remaining);
        remaining.and_not(&bits);
        for row in bits.rows() {
            codes[row] = place as u8 + 1;
        }
    }
}

/// Members and spend by persona code (see [`assignments`]), each block
/// summed as soon as its personas are decided, while its columns are in
/// the core's cache. Every row is added: the rows of code 0 (not members,
/// or members no rule holds for) are summed apart, and their sums are
/// given as 0.
fn sums_by_persona(
    frame: &Frame<'_>,
    compiled: &CompiledCatalog,
    members: &Bits,
) -> (Vec<u64>, Vec<i128>) {
    let whole = whole_rules(frame, compiled);
    let places = compiled.rules.len() + 1;
    let (rows, total, count) = (frame.rows(), frame.total(), frame.count());
    let tally = (0..rows.div_ceil(BLOCK_ROWS))
        .into_par_iter()
        .fold(
            || (Tally::new(places as u64), vec![0u8; BLOCK_ROWS]),
            |(mut tally, mut codes), block| {
                let start = block * BLOCK_ROWS;
                let block_codes = &mut codes[..BLOCK_ROWS.min(rows - start)];
                block_codes.fill(0);
                assign_block(frame, compiled, &whole, members, start, block_codes);
                tally.add_places(0..block_codes.len(), block_codes, start, total, count);
                (tally, codes)
            },
        )
        .map(|(tally, _)| tally)
        .reduce(|| Tally::new(places as u64), Tally::merge);
    let mut counts = vec![0u64; places];
    let mut spends = vec![0i128; places];
    for (code, sums) in tally.groups() {
        counts[code as usize] = sums.count;
        spends[code as usize] = sums.spend;
    }
    // Not anyone's persona: not to be read.
    (counts[0], spends[0]) = (0, 0);
    (counts, spends)
}

impl Engine {
    /// The catalog in force.
    pub fn persona_catalog(&self) -> Arc<CompiledCatalog> {
        self.shared.catalog()
    }

    /// A customer's persona as of `at`, with the explanation: a read of one
    /// customer, inline unless it would have to scan (see
    /// `Engine::read_customer`); the blocking pool's thread hand-offs would
    /// cost more than the usual microseconds of work.
    pub async fn customer_persona(&self, id: CustomerId, at: Timestamp) -> Result<Assignment> {
        let compiled = self.shared.catalog();
        let thresholds = self.shared.settings.thresholds;
        self.read_customer(at, move |index| {
            assign(
                index,
                thresholds,
                &compiled.catalog,
                &compiled.rules,
                &compiled.explainers,
                &id,
                at,
            )
        })
        .await
    }

    /// Replaces the catalog, after checking every persona (the violations
    /// name fields relative to the catalog); `expected`, when given, must be
    /// the stored revision.
    pub async fn replace_catalog(
        &self,
        personas: Vec<Persona>,
        expected: Option<u64>,
    ) -> Result<Catalog> {
        let compiled = CompiledCatalog::new(Catalog {
            personas,
            revision: 0,
            built_in: false,
        })?;
        self.store_catalog(compiled, expected).await
    }

    /// Restores the built-in catalog.
    pub async fn reset_catalog(&self) -> Result<Catalog> {
        let compiled = CompiledCatalog::new(default_catalog(0))?;
        self.store_catalog(compiled, None).await
    }

    async fn store_catalog(
        &self,
        compiled: CompiledCatalog,
        expected: Option<u64>,
    ) -> Result<Catalog> {
        let outcome = self
            .execute(Command::StoreCatalog {
                catalog: compiled.catalog,
                expected,
            })
            .await?;
        expect_outcome!(outcome, Catalog)
    }

    /// Customers per persona among those `rule` selects, as of `at`.
    pub async fn breakdown_personas(
        &self,
        rule: Predicate,
        at: Timestamp,
    ) -> Result<PersonaCounts> {
        let compiled = self.shared.catalog();
        self.scan(move |shared| {
            let index = shared.long_index();
            let frame = Frame::new(&index, at, shared.settings.thresholds);
            let (members, objectors) = split_objectors(&frame, &select(&frame, &rule));
            let (counts, spends) = sums_by_persona(&frame, &compiled, &members);
            let assigned: u64 = counts[1..].iter().sum();
            let unassigned = members.count() as u64 - assigned;
            let groups = compiled
                .catalog
                .personas
                .iter()
                .enumerate()
                .map(|(place, persona)| (persona.id.clone(), counts[place + 1], spends[place + 1]))
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
    /// order, with consent on `channel` when given; never an objector. An
    /// unknown persona is a violation of its place in the list (`[2]`).
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
                    format!("[{index}]"),
                    format!(
                        "{id} is not in the catalog (revision {})",
                        compiled.catalog.revision
                    ),
                ));
            }
        }
        self.scan(move |shared| {
            let index = shared.long_index();
            let frame = Frame::new(&index, at, shared.settings.thresholds);
            let (mut members, _) =
                split_objectors(&frame, &select(&frame, &Predicate::Const(true)));
            if let Some(channel) = channel {
                members.and(&consented(&frame, channel));
            }
            let codes = assignments(&frame, &compiled, &members);
            // The persona of each code, `None` for one not asked for.
            let wanted: Vec<Option<&str>> = std::iter::once(None)
                .chain(compiled.catalog.personas.iter().map(|persona| {
                    (persona_ids.is_empty() || persona_ids.contains(&persona.id))
                        .then_some(persona.id.as_str())
                }))
                .collect();
            let mut rows: Vec<(&str, &str)> = codes
                .iter()
                .enumerate()
                .filter_map(|(row, &code)| {
                    wanted[usize::from(code)].map(|persona| (index.id_at(row as u32), persona))
                })
                .collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::features::{Thresholds, NANOS_PER_DAY};
    use crate::engine::features::features_at;
    use crate::engine::testing::mixed_index;

    /// Decided a block at a time, each member's persona is the first whose
    /// rule their own facts meet, in every block and in the last, part
    /// block; a rule on a trait is decided over every row first; a row that
    /// is not a member has none.
    #[test]
    fn the_block_pass_places_each_customer_as_their_own_facts_do() {
        let day = NANOS_PER_DAY;
        let now = 20_000 * day;
        let rows = 2 * BLOCK_ROWS + 1_000;
        let index = mixed_index(rows, now);
        let mut catalog = default_catalog(0);
        let mut gold = catalog.personas[0].clone();
        gold.id = "GOLD".into();
        gold.rule = r#"customer.traits.tier == "gold" && features.purchase_count >= 3"#.into();
        catalog.personas.insert(1, gold);
        // Columns a block reads whole: the scores' segment, a window.
        let mut champion = catalog.personas[0].clone();
        champion.id = "CHAMPION".into();
        champion.rule =
            r#"features.rfm_segment in ["CHAMPIONS", "LOYAL"] && features.purchase_count >= 5"#
                .into();
        catalog.personas.insert(2, champion);
        let mut busy = catalog.personas[0].clone();
        busy.id = "BUSY".into();
        busy.rule = r#"features.purchases_90d >= 3 && customer.party == "BUSINESS""#.into();
        catalog.personas.insert(3, busy);
        let compiled = CompiledCatalog::new(catalog).unwrap();
        let other = Thresholds {
            lapsed_min_days: 100.0,
            ..Thresholds::default()
        };
        // Now, when a block makes its own classes and scores; now with
        // other thresholds than the index's, when the classes are made for
        // the whole index first; and 200 days before, when the classes
        // and stages are.
        for (at, current, thresholds) in [
            (now + day, true, Thresholds::default()),
            (now + day, true, other),
            (now - 200 * day, false, Thresholds::default()),
        ] {
            let frame = Frame::new(&index, Timestamp::from_nanos(at), thresholds);
            assert_eq!(frame.is_current(), current);
            let (mut members, _) =
                split_objectors(&frame, &select(&frame, &Predicate::Const(true)));
            for row in (0..rows).step_by(1_001) {
                members.clear(row);
            }
            let codes = assignments(&frame, &compiled, &members);
            assert_eq!(codes.len(), rows);
            // The breakdown's sums, a block at a time, are those of the
            // codes, row by row.
            let (counts, spends) = sums_by_persona(&frame, &compiled, &members);
            let mut expected = (vec![0u64; counts.len()], vec![0i128; counts.len()]);
            for (row, &code) in codes.iter().enumerate() {
                expected.0[usize::from(code)] += 1;
                expected.1[usize::from(code)] += i128::from(frame.total()[row]);
            }
            assert_eq!(counts[1..], expected.0[1..], "at {at}, {thresholds:?}");
            assert_eq!(spends[1..], expected.1[1..], "at {at}, {thresholds:?}");
            let mut seen = vec![0usize; compiled.rules.len() + 1];
            for (row, &code) in codes.iter().enumerate() {
                let expected = if members.contains(row) {
                    let features = features_at(&frame, row as u32, false).unwrap();
                    let facts = Facts::new(&index, row, &features);
                    compiled
                        .rules
                        .iter()
                        .position(|rule| holds(rule, &facts))
                        .map_or(0, |place| place as u8 + 1)
                } else {
                    0
                };
                assert_eq!(code, expected, "row {row}, at {at}, {thresholds:?}");
                seen[usize::from(code)] += 1;
            }
            if current {
                // Every persona is someone's, so each rule was put to the
                // test.
                assert!(seen[1..].iter().all(|&count| count > 0), "{seen:?}");
            } else {
                assert!(
                    seen[1..].iter().filter(|&&count| count > 0).count() >= 6,
                    "{seen:?}"
                );
            }
            assert!(seen[0] > 0);
        }
    }
}
