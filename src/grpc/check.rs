//! Checks of request fields. A check returns the parsed value or the
//! field's violations, never a flag: a handler cannot hold a value that was
//! not checked. [`All::all`] joins the checks of one request, so that the
//! client hears of every invalid field at once.

use crate::domain::{CustomerId, Error, Timestamp, Violations};

/// A checked field: its value, or INVALID_ARGUMENT naming it.
pub type Checked<T> = Result<T, Error>;

/// Members per export message when none is asked for.
const DEFAULT_EXPORT_BATCH: usize = 1000;
/// The most members per export message.
const MAX_EXPORT_BATCH: usize = 10_000;

/// `result`, its error reported as a violation of `field`.
pub fn field<T>(field: impl Into<String>, result: Result<T, String>) -> Checked<T> {
    result.map_err(|description| Error::invalid(field, description))
}

/// `value` when `violations` is empty, else every violation.
pub fn collected<T>(value: T, violations: Violations) -> Checked<T> {
    violations.into_result(value)
}

/// The checks of one request, joined.
pub trait All {
    /// The values of every check.
    type Values;

    /// Every value, or every violation of every check, in order.
    fn all(self) -> Checked<Self::Values>;
}

/// Implements [`All`] for a tuple of checks.
macro_rules! all_of_tuple {
    ($($value:ident: $type:ident),+) => {
        impl<$($type),+> All for ($(Checked<$type>,)+) {
            type Values = ($($type,)+);

            fn all(self) -> Checked<Self::Values> {
                match self {
                    ($(Ok($value),)+) => Ok(($($value,)+)),
                    ($($value,)+) => Err(join([$($value.err()),+])),
                }
            }
        }
    };
}

all_of_tuple!(a: A, b: B);
all_of_tuple!(a: A, b: B, c: C);
all_of_tuple!(a: A, b: B, c: C, d: D);

/// One error out of those of several checks: every field violation, in
/// order; an error of another kind wins over them.
fn join<const N: usize>(errors: [Option<Error>; N]) -> Error {
    let mut violations = Vec::new();
    for error in errors.into_iter().flatten() {
        match error {
            Error::InvalidArgument(found) => violations.extend(found),
            other => return other,
        }
    }
    Error::InvalidArgument(violations)
}

/// A protobuf timestamp as a domain instant, reported against `field`.
fn timestamp(field_name: &str, time: &prost_types::Timestamp) -> Checked<Timestamp> {
    field(field_name, Timestamp::from_parts(time.seconds, time.nanos))
}

/// The request's `evaluation_time`, or now when it is unset.
pub fn evaluation_time(time: Option<&prost_types::Timestamp>) -> Checked<Timestamp> {
    time.map_or_else(
        || Ok(Timestamp::now()),
        |time| timestamp("evaluation_time", time),
    )
}

/// The customer `name` and the `evaluation_time` of a request about one
/// customer as of a time.
pub fn customer_at(
    name: &str,
    time: Option<&prost_types::Timestamp>,
) -> Checked<(CustomerId, Timestamp)> {
    (
        field("name", CustomerId::from_name(name)),
        evaluation_time(time),
    )
        .all()
}

/// The request's `evaluation_time`, if it is set.
pub fn optional_evaluation_time(
    time: Option<&prost_types::Timestamp>,
) -> Checked<Option<Timestamp>> {
    time.map(|time| timestamp("evaluation_time", time))
        .transpose()
}

/// Items per export message: `requested`, or the default for 0.
pub fn export_batch(requested: i32) -> Checked<usize> {
    match usize::try_from(requested) {
        Ok(0) => Ok(DEFAULT_EXPORT_BATCH),
        Ok(size) if size <= MAX_EXPORT_BATCH => Ok(size),
        _ => Err(Error::invalid(
            "batch_size",
            format!("0 to {MAX_EXPORT_BATCH}, got {requested}"),
        )),
    }
}

/// `text` unless it is empty.
pub fn optional(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_reports_every_violation_in_order() {
        let checks: (Checked<u8>, Checked<u8>, Checked<u8>) = (
            Err(Error::invalid("a", "bad")),
            Ok(1),
            Err(Error::invalid("c", "bad")),
        );
        let Err(Error::InvalidArgument(found)) = checks.all() else {
            panic!("expected INVALID_ARGUMENT");
        };
        let fields: Vec<_> = found.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["a", "c"]);
        assert_eq!((Checked::Ok(1), Checked::Ok("x")).all().unwrap(), (1, "x"));
    }
}
