//! The versioned value encoding: one version byte, then the record in
//! postcard (a compact, stable serde format).
//!
//! The domain types in `domain::customer` are the version 1 schema. A change
//! to them that alters the encoding must add a new version byte here and
//! keep decoding every older one; the golden test below catches an
//! accidental change.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::domain::persona::Catalog;
use crate::domain::predict::PredictionModel;
use crate::domain::segment::Segment;

use crate::domain::{ActivityRecord, Customer, Error, Result};

/// Version byte of customer records of store format 1: no number.
const CUSTOMER_V1: u8 = 1;
/// Version byte of customer records encoded from `domain::Customer` as it
/// is now, after the customer's number.
const CUSTOMER_V2: u8 = 2;
/// Version byte of activity batches of store format 1, postcard
/// `domain::ActivityRecord`; format 2's are in `batch`.
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

/// Encodes a customer for the `customers` tree: the version byte, the
/// customer's number (4 bytes, little-endian), then the record.
pub fn encode_customer(number: u32, customer: &Customer) -> Result<Vec<u8>> {
    let mut bytes = vec![CUSTOMER_V2];
    bytes.extend_from_slice(&number.to_le_bytes());
    postcard::to_io(customer, &mut bytes).map_err(Error::internal)?;
    Ok(bytes)
}

/// Decodes a value of the `customers` tree: the customer's number and record.
pub fn decode_customer(bytes: &[u8]) -> Result<(u32, Customer)> {
    let number = customer_number(bytes)?;
    let customer = postcard::from_bytes(&bytes[5..])
        .map_err(|error| Error::internal(format!("corrupt customer record: {error}")))?;
    Ok((number, customer))
}

/// The number in a value of the `customers` tree, read without the rest.
pub fn customer_number(bytes: &[u8]) -> Result<u32> {
    match bytes {
        [CUSTOMER_V2, number @ ..] if number.len() >= 4 => Ok(u32::from_le_bytes(
            number[..4].try_into().expect("four bytes"),
        )),
        [CUSTOMER_V2, ..] => Err(Error::internal("corrupt customer record: no number")),
        [found, ..] => Err(Error::internal(format!(
            "customer record has unknown codec version {found}"
        ))),
        [] => Err(Error::internal("empty customer record")),
    }
}

/// Decodes a customer record of store format 1.
pub fn decode_customer_v1(bytes: &[u8]) -> Result<Customer> {
    decode(CUSTOMER_V1, "customer record", bytes)
}

/// Whether a value of the `customers` tree is of store format 1.
pub fn is_customer_v1(bytes: &[u8]) -> bool {
    bytes.first() == Some(&CUSTOMER_V1)
}

/// Whether a value of the `activity` tree is of store format 1.
pub fn is_activity_v1(bytes: &[u8]) -> bool {
    bytes.first() == Some(&ACTIVITY_V1)
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

/// Encodes a batch of events as store format 1 did, for the tests of the
/// migration.
#[cfg(test)]
pub fn encode_activity_v1(record: &ActivityRecord) -> Result<Vec<u8>> {
    encode(ACTIVITY_V1, record)
}

/// Encodes a customer record as store format 1 did, for the tests of the
/// migration.
#[cfg(test)]
pub fn encode_customer_v1(customer: &Customer) -> Result<Vec<u8>> {
    encode(CUSTOMER_V1, customer)
}

/// Decodes a batch of events of store format 1.
pub fn decode_activity_v1(bytes: &[u8]) -> Result<ActivityRecord> {
    decode(ACTIVITY_V1, "activity batch", bytes)
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
    fn round_trips_with_the_number() {
        let customer = sample();
        let bytes = encode_customer(70_000, &customer).unwrap();
        assert_eq!(customer_number(&bytes).unwrap(), 70_000);
        assert_eq!(decode_customer(&bytes).unwrap(), (70_000, customer));
    }

    /// Fails when the version 1 encoding changes: stores of format 1 are
    /// migrated from it.
    #[test]
    fn version_1_encoding_is_stable() {
        let golden: &[u8] = &[
            1, 3, 99, 45, 49, 1, 1, 1, 3, 111, 112, 115, 1, 186, 234, 170, 2, 1, 1, 85, 83, 68,
            128, 173, 226, 4, 1, 2, 84, 82, 7, 77, 97, 114, 109, 97, 114, 97, 8, 73, 115, 116, 97,
            110, 98, 117, 108, 5, 51, 52, 48, 48, 48, 1, 2, 116, 114, 1, 4, 116, 105, 101, 114, 0,
            4, 103, 111, 108, 100, 1, 0, 0, 0, 1, 128, 128, 208, 226, 198, 191, 206, 151, 47, 128,
            168, 166, 156, 206, 191, 206, 151, 47, 0,
        ];
        assert_eq!(encode_customer_v1(&sample()).unwrap(), golden);
        assert_eq!(decode_customer_v1(golden).unwrap(), sample());
        assert!(is_customer_v1(golden));
        // Version 2 is the number, then the same record.
        let mut v2 = vec![2, 5, 0, 0, 0];
        v2.extend_from_slice(&golden[1..]);
        assert_eq!(encode_customer(5, &sample()).unwrap(), v2);
    }

    #[test]
    fn refuses_unknown_versions_and_garbage() {
        assert!(decode_customer(&[]).is_err());
        assert!(decode_customer(&[9, 1, 2]).is_err());
        assert!(decode_customer(&[2, 1, 2]).is_err());
        assert!(decode_customer(&[2, 0, 0, 0, 0, 255, 255]).is_err());
        assert!(decode_customer(golden_v1_prefix()).is_err());
    }

    fn golden_v1_prefix() -> &'static [u8] {
        &[1, 3, 99, 45, 49]
    }
}
