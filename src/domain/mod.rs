//! Domain types: what a customer is and which values are valid. Nothing here
//! knows gRPC or sled.

pub mod activity;
pub mod country;
pub mod customer;
pub mod error;
pub mod features;
pub mod names;
pub mod persona;
pub mod predict;
pub mod rules;
pub mod segment;
pub mod time;
pub mod update;

pub use activity::{
    ActivityBatch, ActivityRecord, Engagement, EngagementKind, EventId, ProductDurability, Purchase,
};
pub use customer::{
    Consent, ConsentStatus, CurrencyCode, Customer, CustomerId, Gender, Location, Money, Party,
    Profile, Relationship, TraitValue,
};
pub use error::{Error, FieldViolation, Result, Violations};
pub use time::{Date, Timestamp};
pub use update::ProfileField;
