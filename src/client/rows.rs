//! Rows of the import files, as protobuf messages. A row is a set of named
//! text fields: a CSV record under its header, or one flat JSON object per
//! line (JSON Lines) with the same names.

use std::collections::HashMap;

use crate::grpc::pb::{self, google::r#type::Date, trait_value::Kind};

/// One row's fields by column name; empty values are absent.
pub type Fields = HashMap<String, String>;

fn text<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .get(name)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
}

fn owned(fields: &Fields, name: &str) -> String {
    text(fields, name).unwrap_or_default().to_owned()
}

/// Looks up an enum value by its short name, e.g. `BUSINESS` for `PARTY_BUSINESS`.
fn enum_value(fields: &Fields, name: &str, values: &[(&str, i32)]) -> Result<i32, String> {
    let Some(given) = text(fields, name) else {
        return Ok(0);
    };
    values
        .iter()
        .find(|(short, _)| short.eq_ignore_ascii_case(given))
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<&str> = values.iter().map(|(short, _)| *short).collect();
            format!(
                "{name}: expected one of {}, got {given:?}",
                names.join(", ")
            )
        })
}

/// A decimal amount in major units, such as `29.33`, in minor units.
fn minor_units(fields: &Fields, name: &str) -> Result<Option<i64>, String> {
    let Some(given) = text(fields, name) else {
        return Ok(None);
    };
    let invalid = || format!("{name}: expected an amount such as 29.33, got {given:?}");
    let (negative, digits) = match given.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, given),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || fraction.len() > 2
        || !(whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit()))
    {
        return Err(invalid());
    }
    let whole: i64 = whole.parse().map_err(|_| invalid())?;
    let cents: i64 = format!("{fraction:0<2}").parse().map_err(|_| invalid())?;
    let value = whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(cents))
        .ok_or_else(invalid)?;
    Ok(Some(if negative { -value } else { value }))
}

fn integer(fields: &Fields, name: &str) -> Result<Option<i32>, String> {
    text(fields, name)
        .map(|given| {
            given
                .parse()
                .map_err(|_| format!("{name}: expected a whole number, got {given:?}"))
        })
        .transpose()
}

fn date(fields: &Fields, name: &str) -> Result<Option<time::Date>, String> {
    let Some(given) = text(fields, name) else {
        return Ok(None);
    };
    let iso = time::macros::format_description!("[year]-[month]-[day]");
    let compact = time::macros::format_description!("[year][month][day]");
    time::Date::parse(given, &iso)
        .or_else(|_| time::Date::parse(given, &compact))
        .map(Some)
        .map_err(|_| format!("{name}: expected a date such as 1990-04-23, got {given:?}"))
}

/// An instant: RFC 3339, or a date (midnight UTC).
fn instant(fields: &Fields, name: &str) -> Result<Option<prost_types::Timestamp>, String> {
    let Some(given) = text(fields, name) else {
        return Ok(None);
    };
    let parsed = time::OffsetDateTime::parse(given, &time::format_description::well_known::Rfc3339)
        .or_else(|_| {
            date(fields, name)?
                .map(|d| d.midnight().assume_utc())
                .ok_or_else(String::new)
        })
        .map_err(|_| {
            format!("{name}: expected a time such as 2026-03-02T10:00:00Z or a date, got {given:?}")
        })?;
    Ok(Some(prost_types::Timestamp {
        seconds: parsed.unix_timestamp(),
        nanos: parsed.nanosecond() as i32,
    }))
}

fn money(fields: &Fields, amount: &str) -> Result<Option<pb::Money>, String> {
    Ok(minor_units(fields, amount)?.map(|minor_units| pb::Money {
        currency_code: owned(fields, "currency"),
        minor_units,
    }))
}

const CONSENT: [(&str, i32); 3] = [("UNKNOWN", 1), ("GRANTED", 2), ("DENIED", 3)];

/// A customer row. Columns: `customer_id` (required), `party`,
/// `relationship`, `department`, `birth_date`, `gender`, `annual_income`
/// (major units), `currency`, `country_code`, `region`, `city`,
/// `postal_code`, `language`, `consent_email`, `consent_sms`,
/// `consent_push`, `consent_ads`, `objects_to_profiling`, and any
/// `trait.KEY` as a string trait.
pub fn customer(fields: &Fields) -> Result<pb::Customer, String> {
    let id = text(fields, "customer_id").ok_or("customer_id: required")?;
    let birth_date = date(fields, "birth_date")?.map(|d| Date {
        year: d.year(),
        month: i32::from(u8::from(d.month())),
        day: i32::from(d.day()),
    });
    let objects_to_profiling = match text(fields, "objects_to_profiling")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("false" | "0" | "no") => false,
        Some("true" | "1" | "yes") => true,
        Some(other) => {
            return Err(format!(
                "objects_to_profiling: expected true or false, got {other:?}"
            ))
        }
    };
    let traits = fields
        .iter()
        .filter_map(|(name, value)| Some((name.strip_prefix("trait.")?, value.trim())))
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| {
            let value = pb::TraitValue {
                kind: Some(Kind::StringValue(value.to_owned())),
            };
            (key.to_owned(), value)
        })
        .collect();
    Ok(pb::Customer {
        name: format!("customers/{id}"),
        party: enum_value(fields, "party", &[("INDIVIDUAL", 1), ("BUSINESS", 2)])?,
        relationship: enum_value(fields, "relationship", &[("EXTERNAL", 1), ("INTERNAL", 2)])?,
        department: owned(fields, "department"),
        birth_date,
        gender: enum_value(
            fields,
            "gender",
            &[("FEMALE", 1), ("MALE", 2), ("OTHER", 3)],
        )?,
        annual_income: money(fields, "annual_income")?,
        location: Some(pb::Location {
            country_code: owned(fields, "country_code"),
            region: owned(fields, "region"),
            city: owned(fields, "city"),
            postal_code: owned(fields, "postal_code"),
        }),
        language: owned(fields, "language"),
        traits,
        consent: Some(pb::Consent {
            email: enum_value(fields, "consent_email", &CONSENT)?,
            sms: enum_value(fields, "consent_sms", &CONSENT)?,
            push: enum_value(fields, "consent_push", &CONSENT)?,
            ads: enum_value(fields, "consent_ads", &CONSENT)?,
        }),
        objects_to_profiling,
        ..Default::default()
    })
}

/// An event row: a purchase or an engagement event.
#[derive(Debug, Clone)]
pub enum Event {
    /// A purchase.
    Purchase(pb::Purchase),
    /// A visit, feedback or referral.
    Engagement(pb::EngagementEvent),
}

/// An activity row. Columns: `kind` (`purchase`, the default, `visit`,
/// `feedback` or `referral`), `event_id`, `customer_id`, `occurred_at`
/// (RFC 3339, or a date), and for purchases `amount` (major units),
/// `currency`, `quantity`, `category`, `durability`; for engagements
/// `nps_score` and `channel`.
pub fn event(fields: &Fields) -> Result<Event, String> {
    let id = owned(fields, "event_id");
    let customer = format!(
        "customers/{}",
        text(fields, "customer_id").ok_or("customer_id: required")?
    );
    let occurred_at = instant(fields, "occurred_at")?;
    let kind = text(fields, "kind")
        .unwrap_or("purchase")
        .to_ascii_lowercase();
    let engagement_type = match kind.as_str() {
        "purchase" => {
            return Ok(Event::Purchase(pb::Purchase {
                purchase_id: id,
                customer,
                occurred_at,
                amount: money(fields, "amount")?,
                quantity: integer(fields, "quantity")?.unwrap_or(0),
                category: owned(fields, "category"),
                durability: enum_value(
                    fields,
                    "durability",
                    &[("DURABLE", 1), ("CONSUMABLE", 2), ("SUBSCRIPTION", 3)],
                )?,
            }));
        }
        "visit" => pb::EngagementType::Visit,
        "feedback" => pb::EngagementType::Feedback,
        "referral" => pb::EngagementType::Referral,
        other => {
            return Err(format!(
                "kind: expected purchase, visit, feedback or referral, got {other:?}"
            ))
        }
    };
    Ok(Event::Engagement(pb::EngagementEvent {
        event_id: id,
        customer,
        occurred_at,
        r#type: engagement_type as i32,
        nps_score: integer(fields, "nps_score")?,
        channel: owned(fields, "channel"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn amounts_are_exact() {
        let parse = |v: &str| minor_units(&fields(&[("amount", v)]), "amount");
        assert_eq!(parse("29.33"), Ok(Some(2933)));
        assert_eq!(parse("29.3"), Ok(Some(2930)));
        assert_eq!(parse("29"), Ok(Some(2900)));
        assert_eq!(parse("-1.05"), Ok(Some(-105)));
        assert!(parse("1.234").is_err() && parse("abc").is_err() && parse(".5").is_err());
    }

    #[test]
    fn customers_and_events() {
        let row = fields(&[
            ("customer_id", "c1"),
            ("party", "business"),
            ("trait.tier", "gold"),
            ("birth_date", "19900423"),
        ]);
        let customer = customer(&row).unwrap();
        assert_eq!(customer.name, "customers/c1");
        assert_eq!(customer.party, 2);
        assert_eq!(customer.birth_date.unwrap().month, 4);
        assert!(customer.traits.contains_key("tier"));
        assert!(super::customer(&fields(&[("party", "x")])).is_err());

        let row = fields(&[
            ("customer_id", "c1"),
            ("event_id", "e1"),
            ("occurred_at", "1997-01-01"),
            ("amount", "29.33"),
        ]);
        match event(&row).unwrap() {
            Event::Purchase(p) => assert_eq!(
                (
                    p.occurred_at.unwrap().seconds,
                    p.amount.unwrap().minor_units
                ),
                (852_076_800, 2933)
            ),
            Event::Engagement(_) => panic!("expected a purchase"),
        }
        let row = fields(&[
            ("customer_id", "c1"),
            ("kind", "feedback"),
            ("nps_score", "9"),
            ("occurred_at", "2026-03-02T10:00:00Z"),
        ]);
        assert!(matches!(event(&row), Ok(Event::Engagement(e)) if e.nps_score == Some(9)));
        assert!(event(&fields(&[("customer_id", "c1"), ("kind", "hug")])).is_err());
    }
}
