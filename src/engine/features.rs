//! A customer's derived features, computed from the index.

use super::Engine;
use crate::domain::features::{
    age_band, age_on, engagement_stage, income_band, AgeBand, EngagementStage, FrequencyClass,
    IncomeBand, PurchaseStats, Thresholds,
};
use crate::domain::{CustomerId, Error, Result, Timestamp};

/// Everything GetCustomerFeatures reports.
#[derive(Debug, Clone)]
pub struct CustomerFeatures {
    /// The customer.
    pub id: CustomerId,
    /// T.
    pub evaluation_time: Timestamp,
    /// Whole years at T.
    pub age: Option<i32>,
    /// The band of the age.
    pub age_band: AgeBand,
    /// The band of the income.
    pub income_band: IncomeBand,
    /// Purchase statistics as of T.
    pub purchases: PurchaseStats,
    /// Mean gap between purchases, in days.
    pub mean_gap_days: Option<f64>,
    /// Whole days since the last purchase.
    pub recency_days: Option<i64>,
    /// The frequency class.
    pub frequency: FrequencyClass,
    /// The engagement stage.
    pub stage: EngagementStage,
    /// When the stage's evidence first appeared.
    pub stage_since: Option<Timestamp>,
    /// The thresholds in force.
    pub thresholds: Thresholds,
}

impl Engine {
    /// A customer's features as of `at`.
    pub fn customer_features(&self, id: &CustomerId, at: Timestamp) -> Result<CustomerFeatures> {
        let thresholds = self.settings().thresholds;
        let index = self.shared.index();
        let row = index
            .row(id.as_str())
            .ok_or_else(|| Error::NotFound(id.name()))?;
        let purchases = PurchaseStats::compute(&row.purchases.times, &row.purchases.amounts, at);
        let age = row.birth_date.and_then(|birth| age_on(birth, at.date()));
        let (stage, stage_since) = engagement_stage(&purchases, &row.firsts(), at);
        Ok(CustomerFeatures {
            id: id.clone(),
            evaluation_time: at,
            age,
            age_band: age_band(age),
            income_band: income_band(row.income_minor, &thresholds),
            mean_gap_days: purchases.mean_gap_days(),
            recency_days: purchases.recency_days(at),
            frequency: purchases.frequency_class(at, &thresholds),
            stage,
            stage_since,
            purchases,
            thresholds,
        })
    }
}
