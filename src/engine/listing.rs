//! Listing customers: every customer in id order from the store, or those a
//! rule selects, whose ids come from the feature index and whose records
//! come from the store.

use super::frame::Frame;
use super::segments::smallest_ids;
use super::select::select;
use super::{Engine, Shared};
use crate::domain::rules::Predicate;
use crate::domain::{Customer, CustomerId, Error, Result, Timestamp};

/// One page of a customer listing.
#[derive(Debug, Clone)]
pub struct CustomerPage {
    /// The customers, in id order; one deleted since the index was read is
    /// left out.
    pub customers: Vec<Customer>,
    /// When more follow: the id the next page starts after.
    pub next: Option<CustomerId>,
}

impl Engine {
    /// The first `limit` customers in id order after `after`: of every
    /// customer, or with `selection` of those its rule selects as of its
    /// time. Objectors are included: listing customers is not marketing.
    /// A scan: a page of the store, or a selection over the index.
    pub async fn customer_page(
        &self,
        selection: Option<(Predicate, Timestamp)>,
        after: Option<CustomerId>,
        limit: usize,
    ) -> Result<CustomerPage> {
        self.scan(move |shared| match selection {
            None => list_customers(shared, after.as_ref(), limit),
            Some((rule, at)) => filter_customers(shared, &rule, at, after.as_ref(), limit),
        })
        .await
    }
}

/// The first `limit` customers after `after` in id order, read from the
/// store.
fn list_customers(
    shared: &Shared,
    after: Option<&CustomerId>,
    limit: usize,
) -> Result<CustomerPage> {
    let mut customers = shared.store.list_customers(after, limit + 1)?;
    let more = customers.len() > limit;
    customers.truncate(limit);
    let last = customers.last().filter(|_| more);
    let next = last.map(|customer| customer.id.clone());
    Ok(CustomerPage { customers, next })
}

/// The first `limit` customers after `after` in id order among those
/// `rule` selects as of `at`: their ids from the index, then their records
/// from the store, the index no longer held.
fn filter_customers(
    shared: &Shared,
    rule: &Predicate,
    at: Timestamp,
    after: Option<&CustomerId>,
    limit: usize,
) -> Result<CustomerPage> {
    let (ids, more) = {
        let index = shared.long_index();
        let frame = Frame::new(&index, at, shared.settings.thresholds);
        let selected = select(&frame, rule);
        let after = after.map(CustomerId::as_str);
        let (ids, following) = smallest_ids(&frame, &selected, after, limit);
        let more = following > ids.len();
        (ids, more)
    };
    let ids = ids
        .iter()
        .map(|id| CustomerId::parse(id).map_err(Error::internal))
        .collect::<Result<Vec<_>>>()?;
    let mut customers = Vec::with_capacity(ids.len());
    for id in &ids {
        customers.extend(shared.store.get_customer(id)?);
    }
    // The index's last id, even if that customer is gone by now.
    let next = ids.into_iter().last().filter(|_| more);
    Ok(CustomerPage { customers, next })
}
