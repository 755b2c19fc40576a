//! `segmentd.v1.ActivityService`: check and convert events, call the
//! engine, map the result.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{timestamp_from_proto, timestamp_to_proto};
use super::customers::page_size;
use super::pb::activity_service_server::ActivityService;
use super::pb::{self};
use super::status::{from_stream_error, to_status};
use super::{finish_import, ready, ApiLimits, EngineSlot};
use crate::domain::customer::parse_short_text;
use crate::domain::{
    ActivityBatch, CurrencyCode, CustomerId, Engagement, EngagementKind, Error, EventId, Money,
    ProductDurability, Purchase, Timestamp, Violations,
};
use crate::engine::RecordCounts;

/// How far ahead of the server's clock an event may be.
const FUTURE_TOLERANCE_NANOS: i64 = 86_400 * 1_000_000_000;
/// Marks page tokens of this format.
const PAGE_TOKEN_VERSION: &str = "e1:";

/// The ActivityService handlers.
#[derive(Debug, Clone)]
pub struct ActivityApi {
    /// The engine, once ready.
    engine: EngineSlot,
    /// Input limits.
    limits: ApiLimits,
}

impl ActivityApi {
    /// Handlers over `engine`, enforcing `limits`.
    pub fn new(engine: EngineSlot, limits: ApiLimits) -> Self {
        ActivityApi { engine, limits }
    }
}

/// What incoming events are checked against.
struct EventRules {
    currency: CurrencyCode,
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

fn purchase_to_proto(purchase: &Purchase, currency: CurrencyCode) -> pb::Purchase {
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

fn engagement_to_proto(engagement: &Engagement) -> pb::EngagementEvent {
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
fn batch_from_proto(
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

fn encode_page_token((time, key): (i64, u64)) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PAGE_TOKEN_VERSION}{time}:{key}"))
}

fn decode_page_token(token: &str) -> Result<Option<(i64, u64)>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Error::invalid(
            "page_token",
            "not a page token from a previous response of this method",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (time, key) = text
        .strip_prefix(PAGE_TOKEN_VERSION)
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(invalid)?;
    Ok(Some((
        time.parse().map_err(|_| invalid())?,
        key.parse().map_err(|_| invalid())?,
    )))
}

fn parse_parent(parent: &str) -> Result<CustomerId, Status> {
    CustomerId::from_name(parent)
        .map_err(|description| to_status(Error::invalid("parent", description)))
}

#[tonic::async_trait]
impl ActivityService for ActivityApi {
    async fn record_activity(
        &self,
        request: Request<pb::RecordActivityRequest>,
    ) -> Result<Response<pb::RecordActivityResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let currency = engine.settings().reporting_currency;
        let batch = batch_from_proto(
            &request.purchases,
            &request.engagements,
            currency,
            self.limits,
        )
        .map_err(to_status)?;
        let counts = engine.record_activity(batch).await.map_err(to_status)?;
        Ok(Response::new(pb::RecordActivityResponse {
            accepted_count: counts.accepted as i64,
            duplicate_count: counts.duplicates as i64,
        }))
    }

    async fn import_activity(
        &self,
        request: Request<Streaming<pb::ImportActivityRequest>>,
    ) -> Result<Response<pb::ImportActivityResponse>, Status> {
        let engine = ready(&self.engine)?;
        let currency = engine.settings().reporting_currency;
        let mut stream = request.into_inner();
        let mut totals = RecordCounts::default();
        let mut batches: u64 = 0;
        let outcome: Result<(), Status> = async {
            while let Some(message) = stream.message().await.map_err(from_stream_error)? {
                let batch = batch_from_proto(
                    &message.purchases,
                    &message.engagements,
                    currency,
                    self.limits,
                )
                .map_err(to_status)?;
                let counts = engine.import_activity(batch).await.map_err(to_status)?;
                totals.accepted += counts.accepted;
                totals.duplicates += counts.duplicates;
                batches += 1;
            }
            Ok(())
        }
        .await;
        let response = pb::ImportActivityResponse {
            accepted_count: totals.accepted as i64,
            duplicate_count: totals.duplicates as i64,
            batch_count: batches as i64,
        };
        let applied = format!("{} new events", totals.accepted);
        finish_import(&engine, outcome.map(|()| response), batches, &applied).await
    }

    async fn list_purchases(
        &self,
        request: Request<pb::ListPurchasesRequest>,
    ) -> Result<Response<pb::ListPurchasesResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let id = parse_parent(&request.parent)?;
        let page_size = page_size(request.page_size, self.limits).map_err(to_status)?;
        let after = decode_page_token(&request.page_token).map_err(to_status)?;
        let page = engine
            .list_purchases(id, after, page_size)
            .await
            .map_err(to_status)?;
        let currency = engine.settings().reporting_currency;
        Ok(Response::new(pb::ListPurchasesResponse {
            purchases: page
                .events
                .iter()
                .map(|p| purchase_to_proto(p, currency))
                .collect(),
            next_page_token: page.next.map(encode_page_token).unwrap_or_default(),
        }))
    }

    async fn list_engagements(
        &self,
        request: Request<pb::ListEngagementsRequest>,
    ) -> Result<Response<pb::ListEngagementsResponse>, Status> {
        let engine = ready(&self.engine)?;
        let request = request.into_inner();
        let id = parse_parent(&request.parent)?;
        let page_size = page_size(request.page_size, self.limits).map_err(to_status)?;
        let after = decode_page_token(&request.page_token).map_err(to_status)?;
        let page = engine
            .list_engagements(id, after, page_size)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListEngagementsResponse {
            engagements: page.events.iter().map(engagement_to_proto).collect(),
            next_page_token: page.next.map(encode_page_token).unwrap_or_default(),
        }))
    }
}
