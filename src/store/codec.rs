//! The versioned value encoding: one version byte, then the record in
//! postcard (a compact, stable serde format).
//!
//! The domain types in `domain::customer` are the version 1 schema. A change
//! to them that alters the encoding must add a new version byte here and
//! keep decoding every older one; the golden test below catches an
//! accidental change.

use serde::de::DeserializeOwned;
use serde::Serialize;

use serde::Deserialize;

use crate::domain::persona::Catalog;
use crate::domain::predict::PredictionModel;
use crate::domain::segment::Segment;

use crate::domain::{
    ActivityRecord, Customer, EngagementKind, Error, ProductDurability, Result, Timestamp,
};

/// Version byte of customer records encoded from `domain::Customer` as it is now.
const CUSTOMER_V1: u8 = 1;
/// Version byte of activity batches encoded from `domain::ActivityRecord` as it is now.
const ACTIVITY_V1: u8 = 1;

fn encode<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>> {
    let mut bytes = vec![version];
    bytes.extend_from_slice(&postcard::to_stdvec(value).map_err(Error::internal)?);
    Ok(bytes)
}

fn decode<T: DeserializeOwned>(version: u8, what: &str, bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&found, body)) if found == version => postcard::from_bytes(body)
            .map_err(|error| Error::internal(format!("corrupt {what}: {error}"))),
        Some((found, _)) => Err(Error::internal(format!(
            "{what} has unknown codec version {found}"
        ))),
        None => Err(Error::internal(format!("empty {what}"))),
    }
}

/// Encodes a customer for the `customers` tree.
pub fn encode_customer(customer: &Customer) -> Result<Vec<u8>> {
    encode(CUSTOMER_V1, customer)
}

/// Decodes a value of the `customers` tree.
pub fn decode_customer(bytes: &[u8]) -> Result<Customer> {
    decode(CUSTOMER_V1, "customer record", bytes)
}

/// Version byte of segments encoded from `domain::segment::Segment` as it is now.
const SEGMENT_V1: u8 = 1;

/// Encodes a segment for the `segments` tree.
pub fn encode_segment(segment: &Segment) -> Result<Vec<u8>> {
    encode(SEGMENT_V1, segment)
}

/// Decodes a value of the `segments` tree.
pub fn decode_segment(bytes: &[u8]) -> Result<Segment> {
    decode(SEGMENT_V1, "segment", bytes)
}

/// Version byte of catalogs encoded from `domain::persona::Catalog` as it is now.
const CATALOG_V1: u8 = 1;

/// Encodes the persona catalog.
pub fn encode_catalog(catalog: &Catalog) -> Result<Vec<u8>> {
    encode(CATALOG_V1, catalog)
}

/// Decodes the persona catalog.
pub fn decode_catalog(bytes: &[u8]) -> Result<Catalog> {
    decode(CATALOG_V1, "persona catalog", bytes)
}

/// Version byte of prediction models encoded from
/// `domain::predict::PredictionModel` as it is now.
const PREDICTION_MODEL_V1: u8 = 1;

/// Encodes the fitted prediction model.
pub fn encode_prediction_model(model: &PredictionModel) -> Result<Vec<u8>> {
    encode(PREDICTION_MODEL_V1, model)
}

/// Decodes the fitted prediction model.
pub fn decode_prediction_model(bytes: &[u8]) -> Result<PredictionModel> {
    decode(PREDICTION_MODEL_V1, "prediction model", bytes)
}

/// Encodes a batch of events for the `activity` tree.
pub fn encode_activity(record: &ActivityRecord) -> Result<Vec<u8>> {
    encode(ACTIVITY_V1, record)
}

/// Decodes a value of the `activity` tree.
pub fn decode_activity(bytes: &[u8]) -> Result<ActivityRecord> {
    decode(ACTIVITY_V1, "activity batch", bytes)
}

/// A stored purchase read in place: the strings borrow from the stored
/// bytes. Its fields mirror `domain::Purchase`, in the same order.
#[derive(Debug, Deserialize)]
pub struct PurchaseView<'a> {
    /// The purchase id.
    pub id: &'a str,
    /// The customer id.
    pub customer: &'a str,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// The amount in minor units.
    pub amount_minor: i64,
    /// Items bought.
    pub quantity: u32,
    /// Product category.
    pub category: &'a str,
    /// How long the product lasts.
    pub durability: ProductDurability,
}

/// A stored engagement event read in place; mirrors `domain::Engagement`.
#[derive(Debug, Deserialize)]
pub struct EngagementView<'a> {
    /// The event id.
    pub id: &'a str,
    /// The customer id.
    pub customer: &'a str,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// What happened.
    pub kind: EngagementKind,
    /// Net Promoter Score.
    pub nps_score: Option<u8>,
    /// Where it happened.
    pub channel: &'a str,
}

/// A stored batch read in place; mirrors `domain::ActivityRecord`.
#[derive(Debug, Deserialize)]
pub struct ActivityView<'a> {
    /// Purchases; `None` where erased.
    #[serde(borrow)]
    pub purchases: Vec<Option<PurchaseView<'a>>>,
    /// Engagement events; `None` where erased.
    #[serde(borrow)]
    pub engagements: Vec<Option<EngagementView<'a>>>,
}

/// Reads a value of the `activity` tree in place, without copying its strings.
pub fn view_activity(bytes: &[u8]) -> Result<ActivityView<'_>> {
    decode_borrowed(ACTIVITY_V1, "activity batch", bytes)
}

fn decode_borrowed<'a, T: Deserialize<'a>>(version: u8, what: &str, bytes: &'a [u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&found, body)) if found == version => postcard::from_bytes(body)
            .map_err(|error| Error::internal(format!("corrupt {what}: {error}"))),
        Some((found, _)) => Err(Error::internal(format!(
            "{what} has unknown codec version {found}"
        ))),
        None => Err(Error::internal(format!("empty {what}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::*;

    fn sample() -> Customer {
        Customer {
            id: CustomerId::parse("c-1").unwrap(),
            profile: Profile {
                party: Party::Business,
                relationship: Relationship::Internal,
                department: Some("ops".into()),
                birth_date: Some(Date::from_ymd(1990, 5, 17).unwrap()),
                gender: Gender::Female,
                annual_income: Some(Money {
                    currency: CurrencyCode::parse("USD").unwrap(),
                    minor_units: 5_000_000,
                }),
                location: Location {
                    country_code: Some("TR".into()),
                    region: "Marmara".into(),
                    city: "Istanbul".into(),
                    postal_code: "34000".into(),
                },
                language: Some("tr".into()),
                traits: BTreeMap::from([("tier".into(), TraitValue::String("gold".into()))]),
                consent: Consent {
                    email: ConsentStatus::Granted,
                    ..Consent::default()
                },
                objects_to_profiling: true,
            },
            create_time: Timestamp::from_parts(1_700_000_000, 0).unwrap(),
            update_time: Timestamp::from_parts(1_700_000_001, 0).unwrap(),
            create_request_id: None,
        }
    }

    #[test]
    fn round_trips() {
        let customer = sample();
        assert_eq!(
            decode_customer(&encode_customer(&customer).unwrap()).unwrap(),
            customer
        );
    }

    /// Fails when the version 1 encoding changes: add a version instead.
    #[test]
    fn version_1_encoding_is_stable() {
        let golden: &[u8] = &[
            1, 3, 99, 45, 49, 1, 1, 1, 3, 111, 112, 115, 1, 186, 234, 170, 2, 1, 1, 85, 83, 68,
            128, 173, 226, 4, 1, 2, 84, 82, 7, 77, 97, 114, 109, 97, 114, 97, 8, 73, 115, 116, 97,
            110, 98, 117, 108, 5, 51, 52, 48, 48, 48, 1, 2, 116, 114, 1, 4, 116, 105, 101, 114, 0,
            4, 103, 111, 108, 100, 1, 0, 0, 0, 1, 128, 128, 208, 226, 198, 191, 206, 151, 47, 128,
            168, 166, 156, 206, 191, 206, 151, 47, 0,
        ];
        assert_eq!(encode_customer(&sample()).unwrap(), golden);
        assert_eq!(decode_customer(golden).unwrap(), sample());
    }

    #[test]
    fn views_read_what_records_hold() {
        let purchase = Purchase {
            id: EventId::parse("p-1").unwrap(),
            customer: CustomerId::parse("c-1").unwrap(),
            occurred_at: Timestamp::from_parts(1_700_000_000, 0).unwrap(),
            amount_minor: 1234,
            quantity: 2,
            category: "books".into(),
            durability: ProductDurability::Durable,
        };
        let engagement = Engagement {
            id: EventId::parse("e-1").unwrap(),
            customer: CustomerId::parse("c-2").unwrap(),
            occurred_at: Timestamp::from_parts(1_700_000_001, 0).unwrap(),
            kind: EngagementKind::Feedback,
            nps_score: Some(9),
            channel: "web".into(),
        };
        let record = ActivityRecord {
            purchases: vec![None, Some(purchase.clone())],
            engagements: vec![Some(engagement.clone())],
        };
        let bytes = encode_activity(&record).unwrap();
        assert_eq!(decode_activity(&bytes).unwrap(), record);
        let view = view_activity(&bytes).unwrap();
        assert!(view.purchases[0].is_none());
        let seen = view.purchases[1].as_ref().unwrap();
        assert_eq!(
            (seen.id, seen.customer, seen.amount_minor),
            ("p-1", "c-1", 1234)
        );
        assert_eq!(
            (seen.occurred_at, seen.quantity, seen.category),
            (purchase.occurred_at, 2, "books")
        );
        let seen = view.engagements[0].as_ref().unwrap();
        assert_eq!(
            (
                seen.id,
                seen.customer,
                seen.kind,
                seen.nps_score,
                seen.channel
            ),
            ("e-1", "c-2", EngagementKind::Feedback, Some(9), "web")
        );
    }

    #[test]
    fn refuses_unknown_versions_and_garbage() {
        assert!(decode_customer(&[]).is_err());
        assert!(decode_customer(&[9, 1, 2]).is_err());
        assert!(decode_customer(&[1, 255, 255]).is_err());
    }
}
