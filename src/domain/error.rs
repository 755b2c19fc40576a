//! The one error type of the domain, mapped to a gRPC status in `grpc/`.
//!
//! An error never repeats a client's value at length: a value it echoes is
//! cut to [`MAX_ECHO_CHARS`] characters ([`echo`]), and every description
//! to a bound of its own, whatever built it; field paths are kept whole,
//! since updates match violations to fields by them, and the status
//! mapping cuts them. A client whose library limits the size of a status
//! (grpc-core allows 16 KiB of metadata) still hears what was wrong.

use std::fmt;

/// The most characters of a client's value that an error repeats.
pub const MAX_ECHO_CHARS: usize = 64;
/// The most characters of a field path in a message or a status.
pub const MAX_FIELD_CHARS: usize = 128;
/// The most characters of a violation's description.
const MAX_DESCRIPTION_CHARS: usize = 256;

/// `value` as an error repeats it: quoted, and past [`MAX_ECHO_CHARS`]
/// characters cut with `…` and followed by its length, e.g.
/// `"xxxx…" (1048576 characters)`.
pub fn echo(value: &str) -> String {
    match value.char_indices().nth(MAX_ECHO_CHARS) {
        None => format!("{value:?}"),
        Some((end, _)) => format!(
            "{:?} ({} characters)",
            format!("{}…", &value[..end]),
            value.chars().count()
        ),
    }
}

/// `text` cut to `max` characters, with `…` and the length it had.
pub fn bounded(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text,
        Some((end, _)) => format!(
            "{}… (cut from {} characters)",
            &text[..end],
            text.chars().count()
        ),
    }
}

/// One invalid field of a request, named by its path, e.g. `customer.birth_date`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field path, in the request's own field names.
    pub field: String,
    /// What is wrong with the value, and what would be right.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`, its description cut to its bound.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            description: bounded(description.into(), MAX_DESCRIPTION_CHARS),
        }
    }
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more fields are invalid.
    #[error("{}", summarize(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The named resource does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The named resource exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The request was made against another version of the resource than
    /// the stored one: its etag is not the current one. Read the resource
    /// again and retry (AIP-154).
    #[error("etag {} is not the current etag of {name}: it changed since it was read; read it again", echo(.etag))]
    EtagMismatch {
        /// The resource name, e.g. `customers/42`.
        name: String,
        /// The etag the request sent.
        etag: String,
    },
    /// The request was made against another revision of the resource than
    /// the stored one, such as the persona catalog's: read it again and
    /// retry.
    #[error("{description}")]
    RevisionMismatch {
        /// The resource name, e.g. `personaCatalog`.
        name: String,
        /// What was expected and what was found.
        description: String,
    },
    /// The resource is not in the state the request requires, e.g. a
    /// persona for a customer who objects to profiling.
    #[error("{0}")]
    FailedPrecondition(String),
    /// An input is over one of the configured limits.
    #[error("{subject}: {description}")]
    ResourceExhausted {
        /// What is over its limit, e.g. `customers`.
        subject: String,
        /// The limit and the value that broke it.
        description: String,
    },
    /// The service cannot answer yet, e.g. while the store opens.
    #[error("{0}")]
    Unavailable(String),
    /// In cluster mode: this replica has not yet applied the log as far as
    /// the request's consistency token requires. Retry, or ask another
    /// replica.
    #[error(
        "this replica has applied the log up to position {applied}, {} short of the consistency \
         token's {required}: retry, or read through another replica",
        required.saturating_sub(*applied)
    )]
    ReplicaBehind {
        /// The last position this replica applied.
        applied: u64,
        /// The position the token requires.
        required: u64,
    },
    /// A watch cursor the change history cannot resume from: too old, of
    /// another history, or past its end. The message says how to start
    /// again.
    #[error("{message}")]
    Cursor {
        /// Why, as the ErrorInfo reason: `CURSOR_EXPIRED` or `CURSOR_UNKNOWN`.
        reason: &'static str,
        /// What happened and what to do.
        message: String,
        /// The cursor sent.
        cursor: String,
    },
    /// A watcher read nothing for too long, or fell too far behind; it
    /// resumes with the last cursor it received.
    #[error("{message}")]
    SlowReader {
        /// What happened and what to do.
        message: String,
        /// The last cursor delivered.
        cursor: String,
    },
    /// A fault of ours; the text is logged and never sent to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

fn summarize(violations: &[FieldViolation]) -> String {
    let Some(first) = violations.first() else {
        return "invalid argument".to_owned();
    };
    let field = bounded(first.field.clone(), MAX_FIELD_CHARS);
    match violations.len() - 1 {
        0 => format!("invalid {field}: {}", first.description),
        more => format!(
            "invalid {field}: {} (and {more} more field violations)",
            first.description
        ),
    }
}

impl Error {
    /// An INVALID_ARGUMENT for a single field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// An etag mismatch of the resource `name`: the request sent `etag`.
    pub fn etag_mismatch(name: String, etag: &str) -> Self {
        Error::EtagMismatch {
            name,
            etag: etag.to_owned(),
        }
    }

    /// An internal error carrying context for the log.
    pub fn internal(context: impl fmt::Display) -> Self {
        Error::Internal(context.to_string())
    }

    /// The same error with `prefix` put before every field path. The domain
    /// and the engine name fields relative to the value they check (a
    /// profile's `department`); the API layer adds where that value sits in
    /// its request (`customer.`).
    pub fn under(self, prefix: &str) -> Self {
        match self {
            Error::InvalidArgument(violations) => Error::InvalidArgument(
                violations
                    .into_iter()
                    .map(|violation| {
                        FieldViolation::new(
                            format!("{prefix}{}", violation.field),
                            violation.description,
                        )
                    })
                    .collect(),
            ),
            other => other,
        }
    }
}

/// Collects field violations while a request is checked, so that the client
/// hears about every invalid field at once.
#[derive(Debug, Default)]
pub struct Violations {
    found: Vec<FieldViolation>,
}

impl Violations {
    /// Records a violation of `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.found.push(FieldViolation::new(field, description));
    }

    /// Records the error of `result`, if any, against `field`, and returns its value.
    pub fn check<T>(&mut self, field: impl Into<String>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.add(field, description);
                None
            }
        }
    }

    /// Like [`Violations::check`], naming the field only if the value is invalid.
    pub fn check_with<T>(
        &mut self,
        field: impl FnOnce() -> String,
        result: Result<T, String>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.add(field(), description);
                None
            }
        }
    }

    /// Keeps only the violations for which `keep` holds.
    pub fn retain(&mut self, keep: impl FnMut(&FieldViolation) -> bool) {
        self.found.retain(keep);
    }

    /// Whether no violation was recorded.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Moves the violations of `other`, whose paths are relative to a part
    /// of the value checked here, into this collector under `prefix`.
    pub fn extend_under(&mut self, prefix: &str, other: Violations) {
        self.found.extend(other.found.into_iter().map(|violation| {
            FieldViolation::new(
                format!("{prefix}{}", violation.field),
                violation.description,
            )
        }));
    }

    /// `Ok(value)` when nothing was recorded, else INVALID_ARGUMENT with every violation.
    pub fn into_result<T>(self, value: T) -> Result<T, Error> {
        if self.found.is_empty() {
            Ok(value)
        } else {
            Err(Error::InvalidArgument(self.found))
        }
    }
}

/// The result type of the domain.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_cut_and_say_how_long_the_value_was() {
        assert_eq!(echo("ZZ"), "\"ZZ\"");
        let long = "é".repeat(1_000_000);
        let echoed = echo(&long);
        assert!(echoed.starts_with(&format!("\"{}…\"", "é".repeat(MAX_ECHO_CHARS))));
        assert!(echoed.ends_with("(1000000 characters)"), "{echoed}");
        assert_eq!(echo(&"x".repeat(MAX_ECHO_CHARS)).len(), MAX_ECHO_CHARS + 2);
    }

    #[test]
    fn violations_are_bounded_whoever_built_them() {
        let huge = "x".repeat(1 << 20);
        let mut violations = Violations::default();
        violations.add("name", format!("expected a name, got {huge:?}"));
        let Err(Error::InvalidArgument(found)) = violations.into_result(()) else {
            panic!("expected INVALID_ARGUMENT");
        };
        assert!(found[0].description.chars().count() < MAX_DESCRIPTION_CHARS + 40);
        assert!(found[0]
            .description
            .ends_with(&format!("(cut from {} characters)", huge.len() + 23)));
        let Error::InvalidArgument(found) = Error::invalid("f", huge).under("customer.") else {
            panic!("expected INVALID_ARGUMENT");
        };
        assert_eq!(found[0].field, "customer.f");
        assert!(found[0].description.len() < 400);
    }

    #[test]
    fn an_etag_mismatch_echoes_a_bounded_etag() {
        let error = Error::etag_mismatch("customers/a".into(), &"e".repeat(10_000));
        let message = error.to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("(10000 characters)"));
    }
}
