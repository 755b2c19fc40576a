//! Listing customers: every customer in id order from the store, or those a
//! rule selects, whose ids come from the feature index and whose records
//! come from the store.

use super::Engine;
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
    pub async fn customer_page(
        &self,
        selection: Option<(Predicate, Timestamp)>,
        after: Option<CustomerId>,
        limit: usize,
    ) -> Result<CustomerPage> {
        let Some((rule, at)) = selection else {
            let page = self.list_customers(after, limit).await?;
            let last = page.customers.last().filter(|_| page.more);
            let next = last.map(|customer| customer.id.clone());
            return Ok(CustomerPage {
                customers: page.customers,
                next,
            });
        };
        let after = after.map(|id| id.as_str().to_owned());
        let (ids, more) = self.filter_customers(rule, at, after, limit).await?;
        self.blocking(move |shared| {
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
        })
        .await
    }
}
