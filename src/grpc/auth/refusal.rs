//! A refused call as the client sees it: UNAUTHENTICATED or
//! PERMISSION_DENIED with a `google.rpc.ErrorInfo` (domain `segmentd`, the
//! method and the scope it needs as metadata), a message that says what to
//! do, and a `www-authenticate` challenge as in RFC 6750.

use std::collections::HashMap;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use super::scopes::{self, Access, Scope};

/// The `domain` of every ErrorInfo segmentd sends.
use crate::grpc::status::ERROR_DOMAIN as DOMAIN;

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No bearer token and no client certificate.
    MissingCredentials,
    /// A token that is unknown, malformed, expired or for someone else; why.
    InvalidCredentials(&'static str),
    /// A known caller without the scope the method needs.
    MissingScope {
        /// Who called.
        principal: String,
        /// What the method needs.
        scope: Scope,
    },
    /// A method the scope table does not list.
    UnlistedMethod {
        /// Who called.
        principal: String,
    },
}

impl Refusal {
    /// Who was refused, when the credentials named someone.
    pub(super) fn principal(&self) -> Option<&str> {
        match self {
            Refusal::MissingScope { principal, .. } | Refusal::UnlistedMethod { principal } => {
                Some(principal)
            }
            Refusal::MissingCredentials | Refusal::InvalidCredentials(_) => None,
        }
    }

    /// The status the caller of `method` gets.
    pub(super) fn into_status(self, method: &str) -> Status {
        let needed = match scopes::access(method) {
            Some(Access::Scope(scope)) => Some(scope),
            _ => None,
        };
        let needs = needed.map_or_else(String::new, |scope| format!(" (scope {})", scope.name()));
        let (code, reason, message, challenge) = match self {
            Refusal::MissingCredentials => (
                Code::Unauthenticated,
                "MISSING_CREDENTIALS",
                format!("missing credentials: {method} needs credentials{needs}; send the metadata \"authorization: Bearer <token>\" with a token of the access file or a JWT, or a client certificate"),
                r#"Bearer realm="segmentd""#.to_owned(),
            ),
            Refusal::InvalidCredentials(why) => (
                Code::Unauthenticated,
                "INVALID_CREDENTIALS",
                format!("invalid credentials: {why}; send a current token as \"authorization: Bearer <token>\""),
                format!(
                    r#"Bearer realm="segmentd", error="invalid_token", error_description="{}""#,
                    why.replace('"', "'")
                ),
            ),
            Refusal::MissingScope { principal, scope } => (
                Code::PermissionDenied,
                "MISSING_SCOPE",
                format!(
                    "permission denied: {principal:?} lacks the scope {:?} that {method} needs; ask for a token, JWT or certificate entry that carries it",
                    scope.name()
                ),
                format!(r#"Bearer realm="segmentd", error="insufficient_scope", scope="{}""#, scope.name()),
            ),
            Refusal::UnlistedMethod { principal } => (
                Code::PermissionDenied,
                "UNLISTED_METHOD",
                format!("permission denied: {method} is open to no scope, so {principal:?} may not call it"),
                r#"Bearer realm="segmentd", error="insufficient_scope""#.to_owned(),
            ),
        };
        let mut metadata = HashMap::from([("method".to_owned(), method.to_owned())]);
        if let Some(scope) = needed {
            metadata.insert("scope".to_owned(), scope.name().to_owned());
        }
        let details = ErrorDetails::with_error_info(reason, DOMAIN, metadata);
        let mut status = Status::with_error_details(code, message, details);
        if let Ok(challenge) = MetadataValue::try_from(challenge) {
            status.metadata_mut().insert("www-authenticate", challenge);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELETE: &str = "/segmentd.v1.CustomerService/DeleteCustomer";

    #[test]
    fn a_missing_scope_is_named_in_the_error_info_and_the_challenge() {
        let refusal = Refusal::MissingScope {
            principal: "reporting".into(),
            scope: Scope::CustomersErase,
        };
        let status = refusal.into_status(DELETE);
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(
            status.message().contains("customers.erase"),
            "{}",
            status.message()
        );
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "MISSING_SCOPE");
        assert_eq!(info.domain, "segmentd");
        assert_eq!(info.metadata["scope"], "customers.erase");
        assert_eq!(info.metadata["method"], DELETE);
        let challenge = status.metadata().get("www-authenticate").unwrap();
        assert!(challenge
            .to_str()
            .unwrap()
            .contains(r#"scope="customers.erase""#));
    }

    #[test]
    fn missing_and_invalid_credentials_are_unauthenticated() {
        let status = Refusal::MissingCredentials.into_status(DELETE);
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "MISSING_CREDENTIALS"
        );
        assert!(status.message().contains("authorization: Bearer"));
        let status = Refusal::InvalidCredentials("the JWT has expired").into_status(DELETE);
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "INVALID_CREDENTIALS"
        );
        assert!(status.message().contains("expired"));
    }
}
