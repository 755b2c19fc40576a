//! A customer's derived features, computed from the index.

use super::frame::Frame;
use super::index::FeatureIndex;
use super::index::{age_at, ymd};
use crate::domain::features::{
    age_band, engagement_stage, income_band, rfm_segment, AgeBand, EngagementStage, FrequencyClass,
    IncomeBand, PurchaseStats, RfmSegment, Thresholds,
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
    /// R, F and M scores, with purchases.
    pub rfm: Option<(u8, u8, u8)>,
    /// The RFM segment, with purchases.
    pub rfm_segment: Option<RfmSegment>,
}

/// A customer's row number and features as of `at`, from the index.
pub(super) fn features_of(
    index: &FeatureIndex,
    id: &CustomerId,
    at: Timestamp,
    thresholds: Thresholds,
) -> Result<(u32, CustomerFeatures)> {
    let number = index
        .row_number(id.as_str())
        .ok_or_else(|| Error::NotFound(id.name()))?;
    let row = index
        .row_at(number)
        .ok_or_else(|| Error::NotFound(id.name()))?;
    let columns = index.columns();
    let at_row = number as usize;
    let rfm = Frame::new(index, at, thresholds).rfm_of(at_row);
    let purchases = PurchaseStats::compute_with_total(
        &row.purchases.times,
        &row.purchases.amounts,
        at,
        Some(columns.total[at_row]),
    );
    let age = age_at(columns.birth[at_row], ymd(at.date()));
    let (stage, stage_since) = engagement_stage(&purchases, &row.firsts(), at);
    let features = CustomerFeatures {
        id: id.clone(),
        evaluation_time: at,
        age,
        age_band: age_band(age),
        income_band: income_band(
            Some(columns.income[at_row]).filter(|&minor| minor != i64::MIN),
            &thresholds,
        ),
        mean_gap_days: purchases.mean_gap_days(),
        recency_days: purchases.recency_days(at),
        frequency: purchases.frequency_class(at, &thresholds),
        stage,
        stage_since,
        purchases,
        thresholds,
        rfm,
        rfm_segment: rfm.map(|(r, f, _)| rfm_segment(r, f)),
    };
    Ok((number, features))
}
