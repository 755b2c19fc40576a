//! Compiles CEL text into a [`Predicate`]. (Being written.)

use super::Predicate;

/// A refused rule: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Character offset in the rule, from 0.
    pub position: usize,
    /// What is wrong, and what is supported instead.
    pub message: String,
}

/// The documentation of one variable.
#[derive(Debug, Clone)]
pub struct VariableDoc {
    /// Its name in a rule.
    pub name: &'static str,
}

/// Compiles a rule.
pub fn compile(_source: &str) -> Result<Predicate, CompileError> {
    Err(CompileError {
        position: 0,
        message: "not yet".into(),
    })
}

/// Every variable.
pub fn variables() -> Vec<VariableDoc> {
    Vec::new()
}
