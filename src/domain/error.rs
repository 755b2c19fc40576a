//! The one error type of the domain, mapped to a gRPC status in `grpc/`.

use std::fmt;

/// One invalid field of a request, named by its path, e.g. `customer.birth_date`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field path, in the request's own field names.
    pub field: String,
    /// What is wrong with the value, and what would be right.
    pub description: String,
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
    /// The resource is not in the state the request requires, e.g. an etag mismatch.
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
    /// A fault of ours; the text is logged and never sent to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

fn summarize(violations: &[FieldViolation]) -> String {
    match violations {
        [] => "invalid argument".to_owned(),
        [one] => format!("invalid {}: {}", one.field, one.description),
        [first, rest @ ..] => format!(
            "invalid {}: {} (and {} more field violations)",
            first.field,
            first.description,
            rest.len()
        ),
    }
}

impl Error {
    /// An INVALID_ARGUMENT for a single field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
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
                    .map(|violation| FieldViolation {
                        field: format!("{prefix}{}", violation.field),
                        description: violation.description,
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
        self.found.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
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
        self.found
            .extend(other.found.into_iter().map(|violation| FieldViolation {
                field: format!("{prefix}{}", violation.field),
                description: violation.description,
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
