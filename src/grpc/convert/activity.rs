//! Activity: purchases and engagement events in, as one checked batch, and
//! out again.

use crate::domain::customer::parse_short_text;
use crate::domain::{
    ActivityBatch, CurrencyCode, CustomerId, Engagement, EngagementKind, Error, EventId, Money,
    ProductDurability, Purchase, Timestamp, Violations,
};
use crate::grpc::{pb, ApiLimits};

use super::{timestamp_from_proto, timestamp_to_proto};

/// How far ahead of the server's clock an event may be.
const FUTURE_TOLERANCE_NANOS: i64 = 86_400 * 1_000_000_000;

/// What incoming events are checked against.
struct EventRules {
    /// The only currency amounts may be in.
    currency: CurrencyCode,
    /// The latest time an event may have occurred at.
    latest: Timestamp,
}

fn occurred_at(
    time: Option<&prost_types::Timestamp>,
    field: impl Fn() -> String,
    rules: &EventRules,
    v: &mut Violations,
) -> Option<Timestamp> {
    let Some(time) = time else {
        v.add(field(), "required");
        return None;
    };
    let time = v.check_with(&field, timestamp_from_proto(time))?;
    if time > rules.latest {
        v.add(field(), "more than a day in the future");
        return None;
    }
    Some(time)
}

fn purchase_from_proto(
    p: &pb::Purchase,
    (list, index): (&str, usize),
    rules: &EventRules,
    v: &mut Violations,
) -> Option<Purchase> {
    // Field paths are built only for a violation: this runs per event.
    let field = |name: &str| format!("{list}[{index}].{name}");
    let id = v.check_with(|| field("purchase_id"), EventId::parse(&p.purchase_id));
    let customer = v.check_with(|| field("customer"), CustomerId::from_name(&p.customer));
    let time = occurred_at(p.occurred_at.as_ref(), || field("occurred_at"), rules, v);
    let amount = match &p.amount {
        Some(money) => v.check(
            field("amount"),
            Money::parse_non_negative(&money.currency_code, money.minor_units, rules.currency),
        ),
        None => {
            v.add(field("amount"), "required");
            None
        }
    };
    let quantity = match u32::try_from(p.quantity) {
        Ok(0) => Some(1),
        Ok(quantity) => Some(quantity),
        Err(_) => {
            v.add(
                field("quantity"),
                format!("must not be negative, got {}", p.quantity),
            );
            None
        }
    };
    let category = v.check_with(|| field("category"), parse_short_text(&p.category));
    let durability = match pb::ProductDurability::try_from(p.durability) {
        Ok(pb::ProductDurability::Durable) => Some(ProductDurability::Durable),
        Ok(pb::ProductDurability::Consumable) => Some(ProductDurability::Consumable),
        Ok(pb::ProductDurability::Subscription) => Some(ProductDurability::Subscription),
        Ok(pb::ProductDurability::Unspecified) => Some(ProductDurability::Unspecified),
        Err(_) => {
            v.add(
                field("durability"),
                format!("{} is not a value of ProductDurability", p.durability),
            );
            None
        }
    };
    Some(Purchase {
        id: id?,
        customer: customer?,
        occurred_at: time?,
        amount_minor: amount?.minor_units,
        quantity: quantity?,
        category: category?,
        durability: durability?,
    })
}

fn engagement_from_proto(
    e: &pb::EngagementEvent,
    (list, index): (&str, usize),
    rules: &EventRules,
    v: &mut Violations,
) -> Option<Engagement> {
    // Field paths are built only for a violation: this runs per event.
    let field = |name: &str| format!("{list}[{index}].{name}");
    let id = v.check_with(|| field("event_id"), EventId::parse(&e.event_id));
    let customer = v.check_with(|| field("customer"), CustomerId::from_name(&e.customer));
    let time = occurred_at(e.occurred_at.as_ref(), || field("occurred_at"), rules, v);
    let kind = match pb::EngagementType::try_from(e.r#type) {
        Ok(pb::EngagementType::Visit) => Some(EngagementKind::Visit),
        Ok(pb::EngagementType::Feedback) => Some(EngagementKind::Feedback),
        Ok(pb::EngagementType::Referral) => Some(EngagementKind::Referral),
        _ => {
            v.add(
                field("type"),
                "one of VISIT, FEEDBACK or REFERRAL is required",
            );
            None
        }
    };
    let nps_score = match e.nps_score {
        None => Some(None),
        Some(score @ 0..=10) if kind == Some(EngagementKind::Feedback) => Some(Some(score as u8)),
        Some(0..=10) => {
            v.add(field("nps_score"), "only FEEDBACK carries an NPS score");
            None
        }
        Some(score) => {
            v.add(
                field("nps_score"),
                format!("an NPS score is 0 to 10, got {score}"),
            );
            None
        }
    };
    let channel = v.check_with(|| field("channel"), parse_short_text(&e.channel));
    Some(Engagement {
        id: id?,
        customer: customer?,
        occurred_at: time?,
        kind: kind?,
        nps_score: nps_score?,
        channel: channel?,
    })
}

/// A stored purchase as the API shows it.
pub fn purchase_to_proto(purchase: &Purchase, currency: CurrencyCode) -> pb::Purchase {
    pb::Purchase {
        purchase_id: purchase.id.as_str().to_owned(),
        customer: purchase.customer.name(),
        occurred_at: Some(timestamp_to_proto(purchase.occurred_at)),
        amount: Some(pb::Money {
            currency_code: currency.to_string(),
            minor_units: purchase.amount_minor,
        }),
        quantity: purchase.quantity.min(i32::MAX as u32) as i32,
        category: purchase.category.clone(),
        durability: match purchase.durability {
            ProductDurability::Unspecified => pb::ProductDurability::Unspecified,
            ProductDurability::Durable => pb::ProductDurability::Durable,
            ProductDurability::Consumable => pb::ProductDurability::Consumable,
            ProductDurability::Subscription => pb::ProductDurability::Subscription,
        } as i32,
    }
}

/// A stored engagement event as the API shows it.
pub fn engagement_to_proto(engagement: &Engagement) -> pb::EngagementEvent {
    pb::EngagementEvent {
        event_id: engagement.id.as_str().to_owned(),
        customer: engagement.customer.name(),
        occurred_at: Some(timestamp_to_proto(engagement.occurred_at)),
        r#type: match engagement.kind {
            EngagementKind::Visit => pb::EngagementType::Visit,
            EngagementKind::Feedback => pb::EngagementType::Feedback,
            EngagementKind::Referral => pb::EngagementType::Referral,
        } as i32,
        nps_score: engagement.nps_score.map(i32::from),
        channel: engagement.channel.clone(),
    }
}

/// Checks and converts one batch; every invalid event is reported, with
/// its index in the batch in the field path.
pub fn batch_from_proto(
    purchases: &[pb::Purchase],
    engagements: &[pb::EngagementEvent],
    currency: CurrencyCode,
    limits: ApiLimits,
) -> Result<ActivityBatch, Error> {
    let count = purchases.len() + engagements.len();
    if count > limits.max_events_per_batch {
        return Err(Error::ResourceExhausted {
            subject: "events".into(),
            description: format!(
                "at most {} events per batch, got {count}",
                limits.max_events_per_batch
            ),
        });
    }
    let rules = EventRules {
        currency,
        latest: Timestamp::from_nanos(
            Timestamp::now()
                .as_nanos()
                .saturating_add(FUTURE_TOLERANCE_NANOS),
        ),
    };
    let mut violations = Violations::default();
    let mut batch = ActivityBatch::default();
    for (index, purchase) in purchases.iter().enumerate() {
        batch.purchases.extend(purchase_from_proto(
            purchase,
            ("purchases", index),
            &rules,
            &mut violations,
        ));
    }
    for (index, engagement) in engagements.iter().enumerate() {
        batch.engagements.extend(engagement_from_proto(
            engagement,
            ("engagements", index),
            &rules,
            &mut violations,
        ));
    }
    violations.into_result(batch)
}
