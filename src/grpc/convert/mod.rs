//! Conversions between the generated protobuf types and domain types, one
//! file per resource. Every value that enters the domain is checked here,
//! and each invalid field is reported with its path in the request.

mod activity;
mod customer;
mod features;
mod persona;
mod segment;

pub use activity::{batch_from_proto, engagement_to_proto, purchase_to_proto};
pub use customer::{
    customer_to_proto, import_batch_from_proto, new_profile_from_proto, profile_update_from_proto,
    ProfileRules,
};
pub use features::features_to_proto;
pub use persona::{
    assignment_batches_to_proto, assignment_to_proto, catalog_to_proto, condition_to_proto,
    persona_breakdown_to_proto, persona_from_proto,
};
pub use segment::{
    breakdown_to_proto, dimensions_from_proto, member_batches_to_proto, new_segment_from_proto,
    preview_to_proto, rule_language_to_proto, sample_size, segment_to_proto,
};

use crate::domain::rules::Channel;
use crate::domain::{CurrencyCode, Timestamp};
use crate::grpc::pb;

/// A domain instant as a protobuf timestamp.
pub fn timestamp_to_proto(timestamp: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = timestamp.to_parts();
    prost_types::Timestamp { seconds, nanos }
}

/// A protobuf timestamp as a domain instant.
pub fn timestamp_from_proto(timestamp: &prost_types::Timestamp) -> Result<Timestamp, String> {
    Timestamp::from_parts(timestamp.seconds, timestamp.nanos)
}

/// A customer id as a resource name.
pub fn customer_name(id: &str) -> String {
    format!("customers/{id}")
}

/// A marketing channel; `None` for CHANNEL_UNSPECIFIED.
pub fn channel_from_proto(channel: i32) -> Result<Option<Channel>, String> {
    match pb::Channel::try_from(channel) {
        Ok(pb::Channel::Unspecified) => Ok(None),
        Ok(pb::Channel::Email) => Ok(Some(Channel::Email)),
        Ok(pb::Channel::Sms) => Ok(Some(Channel::Sms)),
        Ok(pb::Channel::Push) => Ok(Some(Channel::Push)),
        Ok(pb::Channel::Ads) => Ok(Some(Channel::Ads)),
        Err(_) => Err(format!("{channel} is not a Channel value")),
    }
}

/// A sum of minor units as money, saturating at the bounds of an i64.
fn money(minor: i128, currency: CurrencyCode) -> pb::Money {
    pb::Money {
        currency_code: currency.to_string(),
        minor_units: minor.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
    }
}

/// `total` over `count`, to the nearest unit.
fn average(total: i128, count: u64) -> i128 {
    let count = i128::from(count.max(1));
    (2 * total + count).div_euclid(2 * count)
}
