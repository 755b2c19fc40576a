//! Customer operations: create, read, update, delete and import,
//! and one customer's features.

use super::command::{expect_outcome, Command, ImportCounts, Outcome};
use super::features::{features_of, CustomerFeatures};
use super::{Engine, Shared};
use crate::domain::{Customer, CustomerId, Error, Profile, ProfileField, Result, Timestamp};

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

pub(super) fn check_etag(customer: &Customer, expected: Option<&str>) -> Result<()> {
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
        let outcome = self
            .execute(Command::CreateCustomer {
                id,
                profile,
                request_id,
                at: Timestamp::now(),
            })
            .await?;
        expect_outcome!(outcome, Customer)
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
        let outcome = self
            .execute(Command::UpdateCustomer {
                id,
                profile,
                fields,
                etag,
                allow_missing,
                at: Timestamp::now(),
            })
            .await?;
        expect_outcome!(outcome, Customer)
    }

    /// Deletes a customer and erases their activity.
    pub async fn delete_customer(&self, id: &CustomerId, etag: Option<&str>) -> Result<()> {
        self.execute(Command::DeleteCustomer {
            id: id.clone(),
            etag: etag.map(str::to_owned),
        })
        .await?;
        Ok(())
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
        let outcome = self
            .submit(Command::ImportCustomers {
                batch,
                at: Timestamp::now(),
            })
            .await?;
        expect_outcome!(outcome, Imported)
    }
}

/// Removes a customer, after an etag check, and their activity with it;
/// a write (see `Engine::write`).
pub(super) fn erase_customer(shared: &Shared, id: &CustomerId, etag: Option<&str>) -> Result<()> {
    let (number, existing) = shared
        .store
        .get_numbered_customer(id)?
        .ok_or_else(|| Error::NotFound(id.name()))?;
    check_etag(&existing, etag)?;
    let batches = {
        let index = shared.index();
        // The events are erased by number: one the index holds at another
        // row would take another customer's with them.
        if index.row_number(id.as_str()) != Some(number) {
            return Err(Error::internal(format!(
                "{} is stored with number {number}, which the index does not hold for them",
                id.name()
            )));
        }
        index
            .row_at(number)
            .map(super::activity::batches_of)
            .unwrap_or_default()
    };
    shared.store.erase_customer(id, number, &batches)?;
    shared.index_mut().remove_customer(id);
    Ok(())
}
