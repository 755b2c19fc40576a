//! The persona catalog in force, compiled: each persona's rule as a
//! predicate over the index, and as an explainer with the text of its
//! conditions written out once.

use super::explain::Explainer;
use crate::domain::persona::{check_catalog, Catalog};
use crate::domain::rules::Predicate;
use crate::domain::Result;

/// The catalog in force with its rules compiled.
#[derive(Debug)]
pub struct CompiledCatalog {
    /// The catalog.
    pub catalog: Catalog,
    /// The rule of each persona, in order.
    pub rules: Vec<Predicate>,
    /// The same rules with the text of every condition written out.
    pub(super) explainers: Vec<Explainer>,
}

impl CompiledCatalog {
    /// Checks the catalog and compiles every rule; the violations name
    /// fields relative to the catalog (`personas[2].rule`).
    pub fn new(catalog: Catalog) -> Result<Self> {
        let rules = check_catalog(&catalog.personas)?;
        let explainers = rules.iter().map(Explainer::new).collect();
        Ok(CompiledCatalog {
            catalog,
            rules,
            explainers,
        })
    }
}
