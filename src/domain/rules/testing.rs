//! Helpers the rule language's tests share.

use super::{compile, Comparison, Literal, Predicate, Variable};

/// The predicate `source` compiles to; panics when it is refused.
pub(super) fn ok(source: &str) -> Predicate {
    compile(source).unwrap_or_else(|error| panic!("{source:?} was refused: {error}"))
}

/// Asserts that `source` is refused at `position` with a message that
/// holds `fragment`.
pub(super) fn refused(source: &str, position: usize, fragment: &str) {
    let error = match compile(source) {
        Ok(predicate) => panic!("{source:?} compiled to {predicate:?}"),
        Err(error) => error,
    };
    assert!(
        error.message.contains(fragment),
        "{source:?}: expected {fragment:?} in {:?}",
        error.message
    );
    assert_eq!(error.position, position, "{source:?}: {}", error.message);
    assert!(
        !error.message.contains('\n'),
        "{source:?}: {}",
        error.message
    );
}

/// The character offset of the first `needle` in `source`.
pub(super) fn at(source: &str, needle: &str) -> usize {
    let byte = source.find(needle).expect("needle in source");
    source[..byte].chars().count()
}

/// A string literal.
pub(super) fn text(value: &str) -> Literal {
    Literal::String(value.to_owned())
}

/// `variable op literal`.
pub(super) fn compare(variable: Variable, op: Comparison, literal: Literal) -> Predicate {
    Predicate::Compare(variable, op, literal)
}

/// The trait `key`.
pub(super) fn trait_(key: &str) -> Variable {
    Variable::Trait(key.to_owned())
}
