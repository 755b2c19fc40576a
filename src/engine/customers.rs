//! Customer operations: create, read, update, delete and import,
//! and one customer's features.

use super::features::{features_of, CustomerFeatures};
use super::{Engine, Shared};
use crate::domain::{Customer, CustomerId, Error, Profile, ProfileField, Result, Timestamp};
use crate::store::CustomerWrites;

/// A partial update of one customer.
#[derive(Debug, Clone)]
pub struct CustomerUpdate {
    /// The customer to change.
    pub id: CustomerId,
    /// The new values; only the fields in `fields` are read.
    pub profile: Profile,
    /// The fields to change.
    pub fields: Vec<ProfileField>,
    /// When set, the stored etag must equal it.
    pub etag: Option<String>,
    /// Create the customer if it does not exist.
    pub allow_missing: bool,
}

/// What an import batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// Customers that did not exist before.
    pub created: u64,
    /// Customers that existed and were replaced.
    pub updated: u64,
}

fn check_etag(customer: &Customer, expected: Option<&str>) -> Result<()> {
    match expected {
        Some(etag) if etag != customer.etag() => {
            Err(Error::etag_mismatch(customer.id.name(), etag))
        }
        _ => Ok(()),
    }
}

impl Engine {
    /// Creates a customer. A repeat of an earlier create with the same
    /// `request_id` returns the stored customer instead of ALREADY_EXISTS.
    /// Violations name fields relative to the profile.
    pub async fn create_customer(
        &self,
        id: CustomerId,
        profile: Profile,
        request_id: Option<String>,
    ) -> Result<Customer> {
        profile.check()?;
        self.write_customer(move |writes| {
            if let Some(existing) = writes.get(&id)? {
                let is_retry = request_id.is_some() && existing.create_request_id == request_id;
                return if is_retry {
                    Ok(existing)
                } else {
                    Err(Error::AlreadyExists(id.name()))
                };
            }
            let now = Timestamp::now();
            let customer = Customer {
                id: id.clone(),
                profile,
                create_time: now,
                update_time: now,
                create_request_id: request_id,
            };
            writes.put(customer.clone());
            Ok(customer)
        })
        .await
    }

    /// Reads one customer.
    pub fn get_customer(&self, id: &CustomerId) -> Result<Customer> {
        self.shared
            .store
            .get_customer(id)?
            .ok_or_else(|| Error::NotFound(id.name()))
    }

    /// A customer's features as of `at`: a read of one customer, inline
    /// unless it would have to scan (see `Engine::read_customer`).
    pub async fn customer_features(
        &self,
        id: CustomerId,
        at: Timestamp,
    ) -> Result<CustomerFeatures> {
        let thresholds = self.settings().thresholds;
        self.read_customer(at, move |index| {
            features_of(&index, &id, at, thresholds).map(|(_, features)| features)
        })
        .await
    }

    /// Changes the named fields of a customer. Violations name fields
    /// relative to the profile.
    pub async fn update_customer(&self, update: CustomerUpdate) -> Result<Customer> {
        let CustomerUpdate {
            id,
            profile,
            fields,
            etag,
            allow_missing,
        } = update;
        self.write_customer(move |writes| {
            let now = Timestamp::now();
            let mut customer = match writes.get(&id)? {
                Some(existing) => {
                    check_etag(&existing, etag.as_deref())?;
                    existing
                }
                None if allow_missing => Customer {
                    id: id.clone(),
                    profile: Profile::default(),
                    create_time: now,
                    update_time: now,
                    create_request_id: None,
                },
                None => return Err(Error::NotFound(id.name())),
            };
            for field in &fields {
                field.copy(&profile, &mut customer.profile);
            }
            customer.profile.check()?;
            customer.update_time = now.after(customer.update_time);
            writes.put(customer.clone());
            Ok(customer)
        })
        .await
    }

    /// Writes one customer with `change`, which reads through the store's
    /// staged writes and returns the customer to keep, and waits until it
    /// is durable.
    async fn write_customer(
        &self,
        change: impl FnOnce(&mut CustomerWrites<'_>) -> Result<Customer> + Send + 'static,
    ) -> Result<Customer> {
        let customer = self
            .write(1, move |shared| {
                let customer = shared.store.write(change)?;
                shared.index_mut().upsert_customer(&customer);
                Ok(customer)
            })
            .await?;
        self.durable().await?;
        Ok(customer)
    }

    /// Deletes a customer and erases their activity.
    pub async fn delete_customer(&self, id: &CustomerId, etag: Option<&str>) -> Result<()> {
        let id = id.clone();
        let etag = etag.map(str::to_owned);
        // Erasing rewrites every stored batch that holds one of their
        // events, as many as they have: never a small write.
        self.write(usize::MAX, move |shared| {
            erase_customer(shared, &id, etag.as_deref())
        })
        .await?;
        self.durable().await
    }

    /// Creates or replaces a batch of customers, all or nothing. The batch
    /// is applied but not yet durable: call [`Engine::durable`] before
    /// acknowledging it. Violations name fields relative to the batch
    /// (`[3].department`).
    pub async fn import_customers(
        &self,
        batch: Vec<(CustomerId, Profile)>,
    ) -> Result<ImportCounts> {
        for (index, (_, profile)) in batch.iter().enumerate() {
            profile
                .check()
                .map_err(|error| error.under(&format!("[{index}].")))?;
        }
        self.write(batch.len(), move |shared| {
            let mut stored = Vec::with_capacity(batch.len());
            let counts = shared.store.write(|writes| {
                let now = Timestamp::now();
                let mut counts = ImportCounts::default();
                for (id, profile) in batch {
                    let customer = match writes.get(&id)? {
                        Some(existing) => {
                            counts.updated += 1;
                            Customer {
                                profile,
                                update_time: now.after(existing.update_time),
                                ..existing
                            }
                        }
                        None => {
                            counts.created += 1;
                            Customer {
                                id,
                                profile,
                                create_time: now,
                                update_time: now,
                                create_request_id: None,
                            }
                        }
                    };
                    stored.push(customer.clone());
                    writes.put(customer);
                }
                Ok(counts)
            })?;
            let mut index = shared.index_mut();
            for customer in &stored {
                index.upsert_customer(customer);
            }
            Ok(counts)
        })
        .await
    }
}

/// Removes a customer, after an etag check, and their activity with it;
/// a write (see `Engine::write`).
fn erase_customer(shared: &Shared, id: &CustomerId, etag: Option<&str>) -> Result<()> {
    let existing = shared
        .store
        .get_customer(id)?
        .ok_or_else(|| Error::NotFound(id.name()))?;
    check_etag(&existing, etag)?;
    let batches = shared
        .index()
        .row(id.as_str())
        .map(super::activity::batches_of)
        .unwrap_or_default();
    let mut rewritten = Vec::with_capacity(batches.len());
    for seq in batches {
        let Some(mut record) = shared.store.read_activity(seq)? else {
            continue;
        };
        for slot in &mut record.purchases {
            if slot
                .as_ref()
                .is_some_and(|purchase| &purchase.customer == id)
            {
                *slot = None;
            }
        }
        for slot in &mut record.engagements {
            if slot
                .as_ref()
                .is_some_and(|engagement| &engagement.customer == id)
            {
                *slot = None;
            }
        }
        rewritten.push((seq, (!record.is_erased()).then_some(record)));
    }
    shared.store.erase_customer(id, &rewritten)?;
    shared.index_mut().remove_customer(id);
    Ok(())
}
