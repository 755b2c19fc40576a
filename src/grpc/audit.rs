//! The audit log: every catalog and segment change, every erasure and every
//! export, as one event on the `audit` tracing target with the fields
//! `principal` (the authenticated [`Caller`], "anonymous" when
//! authentication is off), `method`, `resource` and `outcome` (the gRPC
//! code name, `OK` on success).
//!
//! No personal data: a customer is logged as `customers/sha256:` and the
//! first 16 hex digits of the SHA-256 of the resource name the caller sent,
//! so an auditor who has an id can find its events
//! (`printf %s customers/ID | sha256sum | cut -c1-16`) but the log names
//! nobody. Segments are logged by name, the persona catalog by the
//! revision a change made.
//!
//! A handler makes an [`Audit`] from its request before it reads it, and
//! passes its result through [`Audit::outcome`]:
//!
//! ```ignore
//! let audit = Audit::new(&request, "DeleteSegment", audit::named(&request.get_ref().name));
//! audit.outcome(async { /* the handler */ }.await)
//! ```

use sha2::{Digest as _, Sha256};
use tonic::{Code, Request, Response, Status};

use super::auth::Caller;
use super::pb;
use super::status::code_name;

/// The principal of calls made while authentication is off.
pub const ANONYMOUS: &str = "anonymous";
/// The resource name of the persona catalog.
pub const CATALOG: &str = "personaCatalog";
/// The longest resource name logged, in bytes; longer ones are cut.
const MAX_RESOURCE_BYTES: usize = 200;

/// An audited call in progress: who called what, on what.
#[derive(Debug)]
pub struct Audit {
    /// The caller's principal.
    principal: String,
    /// The RPC's name, such as `DeleteCustomer`.
    method: &'static str,
    /// What the call acts on, free of personal data.
    resource: String,
}

impl Audit {
    /// The audit of `request` to `method` on `resource`; see [`customer`]
    /// and [`named`] for the resource.
    pub fn new<T>(request: &Request<T>, method: &'static str, resource: String) -> Audit {
        let principal = request
            .extensions()
            .get::<Caller>()
            .map_or_else(|| ANONYMOUS.to_owned(), |caller| caller.principal.clone());
        Audit {
            principal,
            method,
            resource,
        }
    }

    /// Logs the call with its outcome, and returns the outcome.
    pub fn outcome<T>(self, outcome: Result<T, Status>) -> Result<T, Status> {
        let code = outcome.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.log(code);
        outcome
    }

    /// [`Audit::outcome`] for a change of the persona catalog, logged with
    /// the revision the change made.
    pub fn catalog_outcome(
        mut self,
        outcome: Result<Response<pb::PersonaCatalog>, Status>,
    ) -> Result<Response<pb::PersonaCatalog>, Status> {
        if let Ok(catalog) = &outcome {
            self.resource = format!("{CATALOG}/revisions/{}", catalog.get_ref().revision);
        }
        self.outcome(outcome)
    }

    fn log(&self, code: Code) {
        tracing::info!(
            target: "audit",
            principal = %self.principal,
            method = self.method,
            resource = %self.resource,
            outcome = code_name(code),
            "audited call"
        );
    }
}

/// A customer's resource name as the audit log shows it: a SHA-256 prefix.
pub fn customer(name: &str) -> String {
    let hash = Sha256::digest(name.as_bytes());
    let hex: String = hash[..8].iter().map(|byte| format!("{byte:02x}")).collect();
    format!("customers/sha256:{hex}")
}

/// A resource name that holds no personal data (a segment, personas), cut
/// to a bounded length.
pub fn named(name: &str) -> String {
    if name.len() <= MAX_RESOURCE_BYTES {
        return name.to_owned();
    }
    let mut end = MAX_RESOURCE_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &name[..end])
}

/// The personas an export asks for: `personas/ID,ID`, or `personas/-` for
/// every persona.
pub fn personas(ids: &[String]) -> String {
    if ids.is_empty() {
        return "personas/-".to_owned();
    }
    named(&format!("personas/{}", ids.join(",")))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::grpc::auth::Scopes;

    /// Log lines written by the subscriber under test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The JSON events `work` logs on the `audit` target.
    fn audited(work: impl FnOnce()) -> Vec<serde_json::Value> {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("audit=info")
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, work);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn a_call_is_logged_with_its_principal_resource_and_outcome() {
        let mut request = Request::new(());
        request.extensions_mut().insert(Caller {
            principal: "crm-sync".into(),
            scopes: Scopes::default(),
        });
        let events = audited(|| {
            let audit = Audit::new(
                &request,
                "DeleteCustomer",
                customer("customers/alice@example.org"),
            );
            let _ = audit.outcome(Err::<(), _>(Status::not_found("no such customer")));
            let audit = Audit::new(&Request::new(()), "DeleteSegment", named("segments/vip"));
            let _ = audit.outcome(Ok::<_, Status>(()));
        });
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0]["target"], "audit");
        assert_eq!(events[0]["principal"], "crm-sync");
        assert_eq!(events[0]["method"], "DeleteCustomer");
        assert_eq!(events[0]["outcome"], "NOT_FOUND");
        let resource = events[0]["resource"].as_str().unwrap();
        assert!(!resource.contains("alice"), "{resource}");
        assert_eq!(events[1]["principal"], ANONYMOUS);
        assert_eq!(events[1]["resource"], "segments/vip");
        assert_eq!(events[1]["outcome"], "OK");
    }

    #[test]
    fn a_customer_is_a_hash_prefix_an_auditor_can_recompute() {
        // printf %s customers/alice | sha256sum | cut -c1-16
        assert_eq!(
            customer("customers/alice"),
            "customers/sha256:3902d815c85959ab"
        );
        assert_eq!(
            named(&"x".repeat(500)).len(),
            MAX_RESOURCE_BYTES + '…'.len_utf8()
        );
    }

    #[test]
    fn a_catalog_change_is_logged_at_the_revision_it_made() {
        let events = audited(|| {
            let audit = Audit::new(&Request::new(()), "ResetPersonaCatalog", CATALOG.to_owned());
            let catalog = pb::PersonaCatalog {
                revision: 7,
                ..Default::default()
            };
            let _ = audit.catalog_outcome(Ok(Response::new(catalog)));
        });
        assert_eq!(events[0]["resource"], "personaCatalog/revisions/7");
    }
}
