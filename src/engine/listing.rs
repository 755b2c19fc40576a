//! Listing the customers a rule selects: the ids come from the feature
//! index, the customers themselves from the store.

use super::Engine;
use crate::domain::rules::Predicate;
use crate::domain::{Customer, CustomerId, Error, Result, Timestamp};

/// One page of the customers a rule selects.
#[derive(Debug, Clone)]
pub struct SelectedPage {
    /// The customers, in id order; one deleted since the index was read is
    /// left out.
    pub customers: Vec<Customer>,
    /// When more follow: the id the next page starts after.
    pub next: Option<CustomerId>,
}

impl Engine {
    /// The customers `rule` selects as of `at` after `after`: the `limit`
    /// first in id order. Objectors are included: listing customers is not
    /// marketing.
    pub async fn select_customers(
        &self,
        rule: Predicate,
        at: Timestamp,
        after: Option<CustomerId>,
        limit: usize,
    ) -> Result<SelectedPage> {
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
            Ok(SelectedPage { customers, next })
        })
        .await
    }
}
