//! Activity: purchases and engagement events.
//!
//! These types are also the stored form of activity (see `store::codec`).

use serde::{Deserialize, Serialize};

use super::customer::CustomerId;
use super::time::Timestamp;

/// A client-given event id: 1 to 128 characters from `[A-Za-z0-9._:@-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId(String);

impl EventId {
    /// Checks `id` and wraps it.
    pub fn parse(id: &str) -> Result<Self, String> {
        // The rules are those of customer ids.
        CustomerId::parse(id)
            .map(|_| EventId(id.to_owned()))
            .map_err(|error| error.replace("customer id", "event id"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How long a product lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ProductDurability {
    /// Not known.
    #[default]
    Unspecified,
    /// Bought again only at long intervals.
    Durable,
    /// Used up and bought again soon.
    Consumable,
    /// Renewed on a schedule.
    Subscription,
}

/// One purchase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Purchase {
    /// The client's id, unique among purchases.
    pub id: EventId,
    /// The buyer.
    pub customer: CustomerId,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// The amount in minor units of the reporting currency.
    pub amount_minor: i64,
    /// Items bought, at least 1.
    pub quantity: u32,
    /// Product category.
    pub category: String,
    /// How long the product lasts.
    pub durability: ProductDurability,
}

/// The kind of an engagement event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EngagementKind {
    /// A visit or a product view.
    Visit,
    /// A review, survey answer, complaint or suggestion.
    Feedback,
    /// The customer told others.
    Referral,
}

/// One engagement event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engagement {
    /// The client's id, unique among engagement events.
    pub id: EventId,
    /// The customer.
    pub customer: CustomerId,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// What happened.
    pub kind: EngagementKind,
    /// Net Promoter Score, 0 to 10, for feedback.
    pub nps_score: Option<u8>,
    /// Where it happened.
    pub channel: String,
}

/// Events recorded together: the unit of storage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivityBatch {
    /// Purchases.
    pub purchases: Vec<Purchase>,
    /// Engagement events.
    pub engagements: Vec<Engagement>,
}

impl ActivityBatch {
    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.purchases.len() + self.engagements.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stored batch of events. An erased event leaves a `None` behind, so
/// that the positions of the others, which the index refers to, stay put.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivityRecord {
    /// Purchases.
    pub purchases: Vec<Option<Purchase>>,
    /// Engagement events.
    pub engagements: Vec<Option<Engagement>>,
}

impl ActivityRecord {
    /// Whether every event of the record was erased.
    pub fn is_erased(&self) -> bool {
        self.purchases.iter().all(Option::is_none) && self.engagements.iter().all(Option::is_none)
    }
}
