//! A customer's derived features, computed from the index.

use super::frame::Frame;
use super::index::FeatureIndex;
use super::index::{age_at, ymd};
use crate::domain::features::{
    age_band, engagement_stage, income_band, rfm_segment, AgeBand, EngagementStage, FrequencyClass,
    IncomeBand, PurchaseStats, RfmSegment, Thresholds,
};
use crate::domain::predict::{day_of, Predictions};
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
    /// The prediction model's predictions: with a fitted model, for a
    /// customer with a purchase who does not object to profiling.
    pub predictions: Option<Predictions>,
    /// The horizon of the lifetime value, in days.
    pub clv_horizon_days: u32,
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
    let frame = Frame::new(index, at, thresholds);
    let features = features_at(&frame, number, true).ok_or_else(|| Error::NotFound(id.name()))?;
    Ok((number, features))
}

/// The features of the customer in row `number` as of the frame's time,
/// read for that row alone; `None` for a row without a customer. The RFM
/// scores are placed by the frame's bounds. The predictions, the costliest
/// part, are made only when `predict` asks for them.
pub(super) fn features_at(
    frame: &Frame<'_>,
    number: u32,
    predict: bool,
) -> Option<CustomerFeatures> {
    let index = frame.index;
    let row = index.row_at(number)?;
    let id = CustomerId::parse(index.id_at(number)).ok()?;
    let at = Timestamp::from_nanos(frame.at);
    let thresholds = frame.thresholds;
    let columns = index.columns();
    let at_row = number as usize;
    let rfm = frame.rfm_of(at_row);
    let purchases = PurchaseStats::compute_with_total(
        row.purchases.times(),
        row.purchases.amounts(),
        at,
        Some(columns.total[at_row]),
    );
    let age = age_at(columns.birth[at_row], ymd(at.date()));
    let (stage, stage_since) = engagement_stage(&purchases, &row.firsts(), at);
    Some(CustomerFeatures {
        id,
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
        predictions: index.model().filter(|_| predict).and_then(|model| {
            let days = frame.purchase_days(at_row, true)?;
            Some(model.predict(&days, day_of(frame.at), &index.clv_settings()))
        }),
        clv_horizon_days: index.clv_settings().horizon_days,
    })
}
