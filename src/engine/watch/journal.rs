//! What writes did since the last evaluation: which customers they touched
//! and how, so that an evaluation can say why a customer's membership
//! changed. Applying a command notes it here; the evaluator drains it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::record::Cause;
use crate::domain::update::ProfileField;
use crate::engine::command::Command;
use crate::engine::index::FeatureIndex;

/// The customers touched since the last evaluation.
#[derive(Debug, Default)]
pub struct Touched {
    /// The strongest cause per customer id.
    pub causes: HashMap<String, Cause>,
    /// Erased customers by the row they had, whose id the index forgot.
    pub erased: HashMap<u32, String>,
    /// Writes noted.
    pub writes: u64,
}

impl Touched {
    fn note(&mut self, customer: &str, cause: Cause) {
        self.causes
            .entry(customer.to_owned())
            .and_modify(|known| *known = known.stronger(cause))
            .or_insert(cause);
    }
}

/// The journal; cheap to note into, and off until watching starts.
#[derive(Debug, Default)]
pub struct Journal {
    touched: Mutex<Touched>,
    on: AtomicBool,
    /// Cluster mode: what a command touched is noted whether it applied
    /// or was refused (an erasure only once it applied), so that a replica
    /// reading the commands back from the log, which cannot tell, notes the
    /// same.
    replicated: AtomicBool,
}

/// What a command will touch, read before it applies: an erasure must
/// know the row before the index forgets it.
#[derive(Debug)]
pub struct Pending {
    /// The customers, their cause, and an erased customer's row.
    touched: Vec<(String, Cause, Option<u32>)>,
    /// The command is a write; an evaluation (a tick) or a registration
    /// (a watch) is not.
    write: bool,
}

impl Journal {
    /// Starts noting.
    pub fn start(&self) {
        self.on.store(true, Ordering::Relaxed);
    }

    /// Starts noting, for cluster mode.
    pub fn start_replicated(&self) {
        self.replicated.store(true, Ordering::Relaxed);
        self.start();
    }

    /// Stops noting, and forgets what was noted.
    pub fn stop(&self) {
        self.on.store(false, Ordering::Relaxed);
        self.drain();
    }

    /// Reads what `command` touches, before it applies; nothing while the
    /// journal is off.
    pub fn before(&self, command: &Command, index: &FeatureIndex) -> Pending {
        let mut touched = Vec::new();
        let write = !matches!(command, Command::Tick { .. } | Command::Watch { .. });
        if !self.on.load(Ordering::Relaxed) {
            return Pending { touched, write };
        }
        match command {
            Command::CreateCustomer { id, .. } => {
                touched.push((id.as_str().to_owned(), Cause::Profile, None));
            }
            Command::UpdateCustomer { id, fields, .. } => {
                let consent = fields.iter().any(|field| {
                    matches!(
                        field,
                        ProfileField::Consent
                            | ProfileField::ConsentEmail
                            | ProfileField::ConsentSms
                            | ProfileField::ConsentPush
                            | ProfileField::ConsentAds
                            | ProfileField::ObjectsToProfiling
                    )
                });
                let cause = if consent {
                    Cause::Consent
                } else {
                    Cause::Profile
                };
                touched.push((id.as_str().to_owned(), cause, None));
            }
            Command::DeleteCustomer { id, .. } => {
                let row = index.row_number(id.as_str());
                touched.push((id.as_str().to_owned(), Cause::Erasure, row));
            }
            Command::ImportCustomers { batch, .. } => {
                touched.extend(
                    batch
                        .iter()
                        .map(|(id, _)| (id.as_str().to_owned(), Cause::Profile, None)),
                );
            }
            Command::RecordActivity { batch } => {
                let customers = batch
                    .purchases
                    .iter()
                    .map(|purchase| &purchase.customer)
                    .chain(batch.engagements.iter().map(|event| &event.customer));
                touched.extend(
                    customers.map(|customer| (customer.as_str().to_owned(), Cause::Activity, None)),
                );
            }
            Command::Bootstrap { .. }
            | Command::CreateSegment { .. }
            | Command::UpdateSegment { .. }
            | Command::DeleteSegment { .. }
            | Command::StoreCatalog { .. }
            | Command::StorePredictionModel { .. }
            | Command::Tick { .. }
            | Command::Watch { .. } => {}
        }
        Pending { touched, write }
    }

    /// Notes what a command touched, once it applied or was refused (see
    /// `replicated`).
    pub fn settled(&self, mut pending: Pending, applied: bool) {
        if !applied {
            if !self.replicated.load(Ordering::Relaxed) {
                return;
            }
            pending
                .touched
                .retain(|(_, cause, _)| *cause != Cause::Erasure);
        }
        self.applied(pending);
    }

    /// Notes what a command that applied touched.
    fn applied(&self, pending: Pending) {
        if !pending.write || !self.on.load(Ordering::Relaxed) {
            return;
        }
        let mut touched = self
            .touched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        touched.writes += 1;
        for (customer, cause, row) in pending.touched {
            if let Some(row) = row {
                touched.erased.insert(row, customer.clone());
            }
            touched.note(&customer, cause);
        }
    }

    /// Notes what `command`, applied or refused before this replica
    /// started, touched (cluster mode: see `replica`), as `settled` noted
    /// it; `index` is the index now, so an erased customer is known by
    /// their id alone, and a deletion of a customer the index still holds
    /// is taken as refused.
    pub fn replay(&self, command: &Command, index: &FeatureIndex) {
        let mut pending = self.before(command, index);
        pending
            .touched
            .retain(|(_, cause, row)| *cause != Cause::Erasure || row.is_none());
        self.applied(pending);
    }

    /// Takes what was noted since the last call.
    pub fn drain(&self) -> Touched {
        std::mem::take(
            &mut *self
                .touched
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}
