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

pub use advice::NextStep;
pub use catalog::CompiledCatalog;
pub(super) use explain::{holds, Explainer, Facts, Named};
pub use explain::{Assignment, ConditionResult, Rejected};

use super::bits::Bits;
use super::command::{expect_outcome, Command, Outcome};
use super::frame::Frame;
use super::select::{consented, select, select_within, split_objectors};
use super::Engine;
use crate::domain::persona::{default_catalog, Catalog, Persona};
use crate::domain::rules::{Channel, Predicate};
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

/// Each member's persona: the position in the catalog, or `None`.
pub(super) fn assignments(
    frame: &Frame<'_>,
    compiled: &CompiledCatalog,
    members: &Bits,
) -> Vec<Bits> {
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
