//! Derived features, as the API shows them.

use crate::domain::features::{
    AgeBand, EngagementStage, FrequencyClass, IncomeBand, PAliveBand, RfmSegment,
};
use crate::domain::CurrencyCode;
use crate::engine::CustomerFeatures;
use crate::grpc::pb;

use super::timestamp_to_proto;

/// Derived features as the API shows them.
pub fn features_to_proto(
    features: &CustomerFeatures,
    currency: CurrencyCode,
) -> pb::CustomerFeatures {
    let money = |minor_units: i64| pb::Money {
        currency_code: currency.to_string(),
        minor_units,
    };
    let stats = &features.purchases;
    let thresholds = &features.thresholds;
    pb::CustomerFeatures {
        name: features.id.name(),
        evaluation_time: Some(timestamp_to_proto(features.evaluation_time)),
        age: features.age,
        age_band: match features.age_band {
            AgeBand::Unknown => pb::AgeBand::Unknown,
            AgeBand::Under18 => pb::AgeBand::Under18,
            AgeBand::From18To24 => pb::AgeBand::AgeBand1824,
            AgeBand::From25To34 => pb::AgeBand::AgeBand2534,
            AgeBand::From35To44 => pb::AgeBand::AgeBand3544,
            AgeBand::From45To54 => pb::AgeBand::AgeBand4554,
            AgeBand::From55To64 => pb::AgeBand::AgeBand5564,
            AgeBand::From65 => pb::AgeBand::AgeBand65Plus,
        } as i32,
        income_band: match features.income_band {
            IncomeBand::Unknown => pb::IncomeBand::Unknown,
            IncomeBand::Low => pb::IncomeBand::Low,
            IncomeBand::Middle => pb::IncomeBand::Middle,
            IncomeBand::High => pb::IncomeBand::High,
            IncomeBand::VeryHigh => pb::IncomeBand::VeryHigh,
        } as i32,
        purchase_count: stats.count as i64,
        first_purchase_time: stats.first.map(timestamp_to_proto),
        last_purchase_time: stats.last.map(timestamp_to_proto),
        total_spend: Some(money(stats.total_minor)),
        average_order_value: stats.average_order_minor().map(money),
        mean_gap_days: features.mean_gap_days,
        purchases_90d: stats.in_90_days as i64,
        purchases_365d: stats.in_365_days as i64,
        recency_days: features.recency_days,
        frequency_class: match features.frequency {
            FrequencyClass::None => pb::FrequencyClass::None,
            FrequencyClass::OneTimeBuyer => pb::FrequencyClass::OneTimeBuyer,
            FrequencyClass::Lapsed => pb::FrequencyClass::Lapsed,
            FrequencyClass::FrequentCustomer => pb::FrequencyClass::FrequentCustomer,
            FrequencyClass::RepeatCustomer => pb::FrequencyClass::RepeatCustomer,
        } as i32,
        engagement_stage: match features.stage {
            EngagementStage::TotalMarket => pb::EngagementStage::TotalMarket,
            EngagementStage::JustLooking => pb::EngagementStage::JustLooking,
            EngagementStage::JustBuying => pb::EngagementStage::JustBuying,
            EngagementStage::Rebuying => pb::EngagementStage::Rebuying,
            EngagementStage::GivingFeedback => pb::EngagementStage::GivingFeedback,
            EngagementStage::TellingOthers => pb::EngagementStage::TellingOthers,
        } as i32,
        stage_since: features.stage_since.map(timestamp_to_proto),
        thresholds: Some(pb::FeatureThresholds {
            lapsed_gap_multiplier: thresholds.lapsed_gap_multiplier,
            lapsed_min_days: thresholds.lapsed_min_days,
            frequent_min_purchases_365d: thresholds.frequent_min_purchases_365d as i32,
            frequent_gap_multiplier: thresholds.frequent_gap_multiplier,
            income_band_limits: thresholds.income_band_limits.to_vec(),
        }),
        rfm: features.rfm.map(|(r, f, m)| pb::RfmScores {
            r: r.into(),
            f: f.into(),
            m: m.into(),
        }),
        rfm_segment: features
            .rfm_segment
            .map_or(pb::RfmSegment::Unspecified, |segment| match segment {
                RfmSegment::Champions => pb::RfmSegment::Champions,
                RfmSegment::Loyal => pb::RfmSegment::Loyal,
                RfmSegment::PotentialLoyalist => pb::RfmSegment::PotentialLoyalist,
                RfmSegment::NewCustomers => pb::RfmSegment::NewCustomers,
                RfmSegment::Promising => pb::RfmSegment::Promising,
                RfmSegment::NeedAttention => pb::RfmSegment::NeedAttention,
                RfmSegment::AboutToSleep => pb::RfmSegment::AboutToSleep,
                RfmSegment::CantLoseThem => pb::RfmSegment::CantLoseThem,
                RfmSegment::AtRisk => pb::RfmSegment::AtRisk,
                RfmSegment::Hibernating => pb::RfmSegment::Hibernating,
                RfmSegment::Lost => pb::RfmSegment::Lost,
            }) as i32,
        predictions: features.predictions.map(|p| pb::Predictions {
            p_alive: p.p_alive,
            p_alive_band: match p.p_alive_band {
                PAliveBand::Under25 => pb::PAliveBand::PAliveBand025,
                PAliveBand::From25To50 => pb::PAliveBand::PAliveBand2550,
                PAliveBand::From50To75 => pb::PAliveBand::PAliveBand5075,
                PAliveBand::From75 => pb::PAliveBand::PAliveBand75100,
            } as i32,
            expected_purchases_90d: p.expected_purchases_90d,
            expected_purchases_365d: p.expected_purchases_365d,
            expected_order_value: p.expected_order_value.and_then(major).map(money),
            clv: p.clv.and_then(major).map(money),
            clv_horizon_days: i32::try_from(features.clv_horizon_days).unwrap_or(i32::MAX),
        }),
    }
}

/// An amount in major units as minor units, to the nearest; `None` when it
/// is not finite.
fn major(value: f64) -> Option<i64> {
    // `as` saturates at the ends of i64.
    value.is_finite().then(|| (value * 100.0).round() as i64)
}
