//! The persona catalog in force, compiled: each persona's rule as a
//! predicate over the index, and as an explainer with the text of its
//! conditions written out once.

use super::explain::Explainer;
use crate::domain::persona::Catalog;
use crate::domain::rules::{compile, Predicate};
use crate::domain::{Result, Violations};

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
