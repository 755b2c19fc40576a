//! Applying a [`Command`]: the one place where the store and the index
//! change.
//!
//! # What apply may read
//!
//! Only the command and the state before it: never the clock, a random
//! number or anything of the replica's own. A check that depends on state
//! (does the customer exist, does the etag match) is made here, at apply
//! time, the same way on every replica.

use super::activity::record_batch;
use super::command::{Command, ImportCounts, Outcome};
use super::customers::{check_etag as check_customer_etag, erase_customer};
use super::personas::CompiledCatalog;
use super::segments::{check_etag as check_segment_etag, compile_filter, read_segment};
use super::{watch, Shared};
use crate::domain::persona::Catalog;
use crate::domain::{Customer, CustomerId, Error, Profile, Result, Timestamp};
use crate::store::PageTokenKey;

/// Applies `command` to the store and the index; a write (see
/// `Engine::write`), so under the writer lock.
pub(super) fn apply(shared: &Shared, command: Command) -> Result<Outcome> {
    let pending = shared.watch.journal.before(&command, &shared.index());
    let outcome = apply_command(shared, command);
    shared.watch.journal.settled(pending, outcome.is_ok());
    outcome
}

fn apply_command(shared: &Shared, command: Command) -> Result<Outcome> {
    match command {
        Command::Bootstrap { page_token_key } => {
            shared
                .store
                .set_page_token_key(&PageTokenKey::from_bytes(page_token_key))?;
            Ok(Outcome::Bootstrapped)
        }
        Command::CreateCustomer {
            id,
            profile,
            request_id,
            at,
        } => create_customer(shared, id, profile, request_id, at).map(Outcome::Customer),
        Command::UpdateCustomer {
            id,
            profile,
            fields,
            etag,
            allow_missing,
            at,
        } => {
            let customer = write_customer(shared, |writes| {
                let mut customer = match writes.get(&id)? {
                    Some(existing) => {
                        check_customer_etag(&existing, etag.as_deref())?;
                        existing
                    }
                    None if allow_missing => Customer {
                        id: id.clone(),
                        profile: Profile::default(),
                        create_time: at,
                        update_time: at,
                        create_request_id: None,
                    },
                    None => return Err(Error::NotFound(id.name())),
                };
                for field in &fields {
                    field.copy(&profile, &mut customer.profile);
                }
                customer.profile.check()?;
                customer.update_time = at.after(customer.update_time);
                let number = writes.put(customer.clone())?;
                Ok((number, customer))
            })?;
            Ok(Outcome::Customer(customer))
        }
        Command::DeleteCustomer { id, etag } => {
            erase_customer(shared, &id, etag.as_deref())?;
            Ok(Outcome::Deleted)
        }
        Command::ImportCustomers { batch, at } => {
            import_customers(shared, batch, at).map(Outcome::Imported)
        }
        Command::RecordActivity { batch } => record_batch(shared, batch).map(Outcome::Recorded),
        Command::CreateSegment { mut segment, at } => {
            if shared.store.get_segment(&segment.id)?.is_some() {
                return Err(Error::AlreadyExists(segment.id.name()));
            }
            segment.revision = 1;
            segment.create_time = at;
            segment.update_time = at;
            shared.store.put_segment(&segment)?;
            Ok(Outcome::Segment(segment))
        }
        Command::UpdateSegment {
            id,
            etag,
            changes,
            at,
        } => {
            let mut segment = read_segment(shared, &id)?;
            check_segment_etag(&segment, etag.as_deref())?;
            changes.apply(&mut segment);
            compile_filter(&segment.filter)
                .map_err(|description| Error::invalid("filter", description))?;
            segment.revision += 1;
            segment.update_time = at.after(segment.update_time);
            shared.store.put_segment(&segment)?;
            Ok(Outcome::Segment(segment))
        }
        Command::DeleteSegment { id, etag } => {
            if let Some(etag) = etag.as_deref() {
                check_segment_etag(&read_segment(shared, &id)?, Some(etag))?;
            }
            if shared.store.delete_segment(&id)? {
                Ok(Outcome::SegmentDeleted)
            } else {
                Err(Error::NotFound(id.name()))
            }
        }
        Command::StoreCatalog { catalog, expected } => {
            store_catalog(shared, catalog, expected).map(Outcome::Catalog)
        }
        Command::StorePredictionModel { model, expected } => {
            if !expected.holds(shared.index().model().map(|model| &**model)) {
                return Err(super::predictions::overtaken());
            }
            shared.store.put_prediction_model(&model)?;
            let model = std::sync::Arc::new(model);
            shared.index_mut().set_model(std::sync::Arc::clone(&model));
            Ok(Outcome::PredictionModel(model))
        }
        Command::Tick { at } => {
            watch::apply_tick(shared, at)?;
            Ok(Outcome::Evaluated)
        }
        Command::Watch {
            segment,
            channel,
            at,
        } => {
            let subject = match segment {
                Some(id) => watch::Subject::Segment { id, channel },
                None => watch::Subject::Personas,
            };
            watch::apply_watch(shared, &subject, at)?;
            Ok(Outcome::Watching)
        }
    }
}

/// Writes one customer with `change`, which reads through the store's
/// staged writes and returns the customer to keep with their number, and
/// indexes them.
fn write_customer(
    shared: &Shared,
    change: impl FnOnce(&mut crate::store::CustomerWrites<'_>) -> Result<(u32, Customer)>,
) -> Result<Customer> {
    let (number, customer) = shared.store.write(change)?;
    shared.index_mut().upsert_customer(number, &customer);
    Ok(customer)
}

fn create_customer(
    shared: &Shared,
    id: CustomerId,
    profile: Profile,
    request_id: Option<String>,
    at: Timestamp,
) -> Result<Customer> {
    profile.check()?;
    write_customer(shared, |writes| {
        if let Some(existing) = writes.get(&id)? {
            let is_retry = request_id.is_some() && existing.create_request_id == request_id;
            if !is_retry {
                return Err(Error::AlreadyExists(id.name()));
            }
            let number = writes
                .number(&id)?
                .ok_or_else(|| Error::internal("a stored customer without a number"))?;
            return Ok((number, existing));
        }
        let customer = Customer {
            id: id.clone(),
            profile,
            create_time: at,
            update_time: at,
            create_request_id: request_id,
        };
        let number = writes.put(customer.clone())?;
        Ok((number, customer))
    })
}

fn import_customers(
    shared: &Shared,
    batch: Vec<(CustomerId, Profile)>,
    at: Timestamp,
) -> Result<ImportCounts> {
    let mut stored = Vec::with_capacity(batch.len());
    let counts = shared.store.write(|writes| {
        let mut counts = ImportCounts::default();
        for (id, profile) in batch {
            let customer = match writes.get(&id)? {
                Some(existing) => {
                    counts.updated += 1;
                    Customer {
                        profile,
                        update_time: at.after(existing.update_time),
                        ..existing
                    }
                }
                None => {
                    counts.created += 1;
                    Customer {
                        id,
                        profile,
                        create_time: at,
                        update_time: at,
                        create_request_id: None,
                    }
                }
            };
            let number = writes.put(customer.clone())?;
            stored.push((number, customer));
        }
        Ok(counts)
    })?;
    let mut index = shared.index_mut();
    for (number, customer) in &stored {
        index.upsert_customer(*number, customer);
    }
    Ok(counts)
}

fn store_catalog(shared: &Shared, catalog: Catalog, expected: Option<u64>) -> Result<Catalog> {
    let current = shared.catalog().catalog.revision;
    if let Some(expected) = expected {
        if expected != current {
            return Err(Error::RevisionMismatch {
                name: "personaCatalog".to_owned(),
                description: format!(
                    "the catalog is at revision {current}, not {expected}: read it again"
                ),
            });
        }
    }
    let mut compiled = CompiledCatalog::new(catalog)?;
    compiled.catalog.revision = current + 1;
    shared.store.put_catalog(&compiled.catalog)?;
    let catalog = compiled.catalog.clone();
    shared.set_catalog(compiled);
    Ok(catalog)
}
