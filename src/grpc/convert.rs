//! Conversions between the generated protobuf types and domain types. Every
//! value that enters the domain is checked here, and each invalid field is
//! reported with its path in the request.

use crate::domain::customer::{
    parse_birth_date, parse_country_code, parse_language, parse_postal_code, parse_short_text,
    parse_trait_key,
};
use crate::domain::features::{AgeBand, EngagementStage, FrequencyClass, IncomeBand, RfmSegment};
use crate::domain::{
    Consent, ConsentStatus, CurrencyCode, Customer, Date, Gender, Location, Money, Party, Profile,
    ProfileField, Relationship, Timestamp, TraitValue, Violations,
};
use crate::engine::CustomerFeatures;
use crate::grpc::pb;

/// What incoming values are checked against.
#[derive(Debug, Clone, Copy)]
pub struct ProfileRules {
    /// The only currency amounts may be in.
    pub currency: CurrencyCode,
    /// Today, which no birth date may follow.
    pub today: Date,
}

fn enum_value<E: TryFrom<i32>>(
    value: i32,
    field: String,
    enum_name: &str,
    violations: &mut Violations,
) -> Option<E> {
    let parsed = E::try_from(value).ok();
    if parsed.is_none() {
        violations.add(field, format!("{value} is not a value of {enum_name}"));
    }
    parsed
}

fn consent_status(value: i32, field: String, violations: &mut Violations) -> ConsentStatus {
    match enum_value(value, field, "ConsentStatus", violations) {
        Some(pb::ConsentStatus::Granted) => ConsentStatus::Granted,
        Some(pb::ConsentStatus::Denied) => ConsentStatus::Denied,
        _ => ConsentStatus::Unknown,
    }
}

fn optional_text(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

/// Converts the client-settable fields of `customer`, recording every
/// invalid one as a violation of `{prefix}{field}`.
pub fn profile_from_proto(
    customer: &pb::Customer,
    prefix: &str,
    rules: &ProfileRules,
    violations: &mut Violations,
) -> Profile {
    let field = |name: &str| format!("{prefix}{name}");
    let party = match enum_value(customer.party, field("party"), "Party", violations) {
        Some(pb::Party::Business) => Party::Business,
        _ => Party::Individual,
    };
    let relationship = match enum_value(
        customer.relationship,
        field("relationship"),
        "Relationship",
        violations,
    ) {
        Some(pb::Relationship::Internal) => Relationship::Internal,
        _ => Relationship::External,
    };
    let gender = match enum_value(customer.gender, field("gender"), "Gender", violations) {
        Some(pb::Gender::Female) => Gender::Female,
        Some(pb::Gender::Male) => Gender::Male,
        Some(pb::Gender::Other) => Gender::Other,
        _ => Gender::Unspecified,
    };
    let department = optional_text(&customer.department)
        .and_then(|text| violations.check(field("department"), parse_short_text(text)));
    let birth_date = customer.birth_date.as_ref().and_then(|date| {
        violations.check(
            field("birth_date"),
            parse_birth_date(date.year, date.month, date.day, rules.today),
        )
    });
    let annual_income = customer.annual_income.as_ref().and_then(|money| {
        violations.check(
            field("annual_income"),
            Money::parse_non_negative(&money.currency_code, money.minor_units, rules.currency),
        )
    });
    let location = customer
        .location
        .as_ref()
        .map(|location| Location {
            country_code: optional_text(&location.country_code).and_then(|code| {
                violations.check(field("location.country_code"), parse_country_code(code))
            }),
            region: violations
                .check(field("location.region"), parse_short_text(&location.region))
                .unwrap_or_default(),
            city: violations
                .check(field("location.city"), parse_short_text(&location.city))
                .unwrap_or_default(),
            postal_code: violations
                .check(
                    field("location.postal_code"),
                    parse_postal_code(&location.postal_code),
                )
                .unwrap_or_default(),
        })
        .unwrap_or_default();
    let language = optional_text(&customer.language)
        .and_then(|tag| violations.check(field("language"), parse_language(tag)));
    let mut traits = std::collections::BTreeMap::new();
    for (key, value) in &customer.traits {
        let path = field(&format!("traits[{key:?}]"));
        let Some(key) = violations.check(path.clone(), parse_trait_key(key)) else {
            continue;
        };
        let value = match &value.kind {
            Some(pb::trait_value::Kind::StringValue(text)) => TraitValue::String(text.clone()),
            Some(pb::trait_value::Kind::NumberValue(number)) => TraitValue::Number(*number),
            Some(pb::trait_value::Kind::BoolValue(flag)) => TraitValue::Bool(*flag),
            None => {
                violations.add(
                    path,
                    "a trait value needs one of string_value, number_value or bool_value",
                );
                continue;
            }
        };
        if let Some(value) = violations.check(path, value.validate()) {
            traits.insert(key, value);
        }
    }
    let consent = customer
        .consent
        .as_ref()
        .map(|consent| Consent {
            email: consent_status(consent.email, field("consent.email"), violations),
            sms: consent_status(consent.sms, field("consent.sms"), violations),
            push: consent_status(consent.push, field("consent.push"), violations),
            ads: consent_status(consent.ads, field("consent.ads"), violations),
        })
        .unwrap_or_default();
    Profile {
        party,
        relationship,
        department,
        birth_date,
        gender,
        annual_income,
        location,
        language,
        traits,
        consent,
        objects_to_profiling: customer.objects_to_profiling,
    }
}

/// The fields an update without a mask changes: those set in the request.
pub fn implied_fields(customer: &pb::Customer) -> Vec<ProfileField> {
    let mut fields = Vec::new();
    let mut add = |set: bool, field: ProfileField| {
        if set {
            fields.push(field);
        }
    };
    add(customer.party != 0, ProfileField::Party);
    add(customer.relationship != 0, ProfileField::Relationship);
    add(!customer.department.is_empty(), ProfileField::Department);
    add(customer.birth_date.is_some(), ProfileField::BirthDate);
    add(customer.gender != 0, ProfileField::Gender);
    add(customer.annual_income.is_some(), ProfileField::AnnualIncome);
    if let Some(location) = &customer.location {
        add(!location.country_code.is_empty(), ProfileField::CountryCode);
        add(!location.region.is_empty(), ProfileField::Region);
        add(!location.city.is_empty(), ProfileField::City);
        add(!location.postal_code.is_empty(), ProfileField::PostalCode);
    }
    add(!customer.language.is_empty(), ProfileField::Language);
    if let Some(consent) = &customer.consent {
        add(consent.email != 0, ProfileField::ConsentEmail);
        add(consent.sms != 0, ProfileField::ConsentSms);
        add(consent.push != 0, ProfileField::ConsentPush);
        add(consent.ads != 0, ProfileField::ConsentAds);
    }
    add(
        customer.objects_to_profiling,
        ProfileField::ObjectsToProfiling,
    );
    for key in customer.traits.keys() {
        fields.push(ProfileField::Trait(key.clone()));
    }
    fields
}

/// A domain instant as a protobuf timestamp.
pub fn timestamp_to_proto(timestamp: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = timestamp.to_parts();
    prost_types::Timestamp { seconds, nanos }
}

fn consent_status_to_proto(status: ConsentStatus) -> i32 {
    match status {
        ConsentStatus::Unknown => pb::ConsentStatus::Unknown as i32,
        ConsentStatus::Granted => pb::ConsentStatus::Granted as i32,
        ConsentStatus::Denied => pb::ConsentStatus::Denied as i32,
    }
}

/// A stored customer as the API shows it.
pub fn customer_to_proto(customer: &Customer) -> pb::Customer {
    let profile = &customer.profile;
    pb::Customer {
        name: customer.id.name(),
        party: match profile.party {
            Party::Individual => pb::Party::Individual,
            Party::Business => pb::Party::Business,
        } as i32,
        relationship: match profile.relationship {
            Relationship::External => pb::Relationship::External,
            Relationship::Internal => pb::Relationship::Internal,
        } as i32,
        department: profile.department.clone().unwrap_or_default(),
        birth_date: profile.birth_date.map(|date| pb::google::r#type::Date {
            year: date.year(),
            month: date.month(),
            day: date.day(),
        }),
        gender: match profile.gender {
            Gender::Unspecified => pb::Gender::Unspecified,
            Gender::Female => pb::Gender::Female,
            Gender::Male => pb::Gender::Male,
            Gender::Other => pb::Gender::Other,
        } as i32,
        annual_income: profile.annual_income.map(|money| pb::Money {
            currency_code: money.currency.to_string(),
            minor_units: money.minor_units,
        }),
        location: Some(pb::Location {
            country_code: profile.location.country_code.clone().unwrap_or_default(),
            region: profile.location.region.clone(),
            city: profile.location.city.clone(),
            postal_code: profile.location.postal_code.clone(),
        }),
        language: profile.language.clone().unwrap_or_default(),
        traits: profile
            .traits
            .iter()
            .map(|(key, value)| {
                let kind = match value {
                    TraitValue::String(text) => pb::trait_value::Kind::StringValue(text.clone()),
                    TraitValue::Number(number) => pb::trait_value::Kind::NumberValue(*number),
                    TraitValue::Bool(flag) => pb::trait_value::Kind::BoolValue(*flag),
                };
                (key.clone(), pb::TraitValue { kind: Some(kind) })
            })
            .collect(),
        consent: Some(pb::Consent {
            email: consent_status_to_proto(profile.consent.email),
            sms: consent_status_to_proto(profile.consent.sms),
            push: consent_status_to_proto(profile.consent.push),
            ads: consent_status_to_proto(profile.consent.ads),
        }),
        objects_to_profiling: profile.objects_to_profiling,
        create_time: Some(timestamp_to_proto(customer.create_time)),
        update_time: Some(timestamp_to_proto(customer.update_time)),
        etag: customer.etag(),
    }
}

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
    }
}

/// A protobuf timestamp as a domain instant.
pub fn timestamp_from_proto(timestamp: &prost_types::Timestamp) -> Result<Timestamp, String> {
    Timestamp::from_parts(timestamp.seconds, timestamp.nanos)
}
