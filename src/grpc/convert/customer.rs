//! Customers: the client-settable profile in, the stored customer out.
//! Every invalid field is reported with its path in the request.

use crate::domain::customer::{
    parse_birth_date, parse_country_code, parse_language, parse_postal_code, parse_short_text,
    parse_trait_key,
};
use crate::domain::{
    update, Consent, ConsentStatus, CurrencyCode, Customer, CustomerId, Date, Error, Gender,
    Location, Money, Party, Profile, ProfileField, Relationship, TraitValue, Violations,
};
use crate::grpc::check::{collected, Checked};
use crate::grpc::pb;

use super::timestamp_to_proto;

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
/// invalid one as a violation named relative to the customer
/// (`birth_date`).
fn profile_from_proto(
    customer: &pb::Customer,
    rules: &ProfileRules,
    violations: &mut Violations,
) -> Profile {
    let field = |name: &str| name.to_owned();
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
        // The key whole: an update keeps the violations of the fields it
        // changes by their paths. The status cuts a long path.
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
fn implied_fields(customer: &pb::Customer) -> Vec<ProfileField> {
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

fn consent_status_to_proto(status: ConsentStatus) -> i32 {
    match status {
        ConsentStatus::Unknown => pb::ConsentStatus::Unknown as i32,
        ConsentStatus::Granted => pb::ConsentStatus::Granted as i32,
        ConsentStatus::Denied => pb::ConsentStatus::Denied as i32,
    }
}

/// The profile of a new customer; `customer` is required.
pub fn new_profile_from_proto(
    customer: Option<&pb::Customer>,
    rules: &ProfileRules,
) -> Checked<Profile> {
    let Some(customer) = customer else {
        return Err(Error::invalid("customer", "required"));
    };
    let mut violations = Violations::default();
    let profile = profile_from_proto(customer, rules, &mut violations);
    collected(profile, violations).map_err(|error| error.under("customer."))
}

/// The fields an update changes, named by the update mask's `paths`
/// (AIP-134) or else those set, and their new values. Only the fields being
/// changed have to be valid.
pub fn profile_update_from_proto(
    customer: &pb::Customer,
    paths: &[String],
    rules: &ProfileRules,
) -> Checked<(Vec<ProfileField>, Profile)> {
    let mut violations = Violations::default();
    let fields: Vec<ProfileField> = match paths {
        [] => implied_fields(customer),
        [star] if star == "*" => update::ALL.to_vec(),
        paths => paths
            .iter()
            .enumerate()
            .filter_map(|(index, path)| {
                violations
                    .check(
                        format!("update_mask.paths[{index}]"),
                        ProfileField::parse(path),
                    )
                    .flatten()
            })
            .collect(),
    };
    let mut profile_violations = Violations::default();
    let profile = profile_from_proto(customer, rules, &mut profile_violations);
    profile_violations
        .retain(|violation| fields.iter().any(|field| field.covers(&violation.field)));
    violations.extend_under("customer.", profile_violations);
    collected((fields, profile), violations)
}

/// The customers of one import message, each named by its `name`.
pub fn import_batch_from_proto(
    customers: &[pb::Customer],
    rules: &ProfileRules,
) -> Checked<Vec<(CustomerId, Profile)>> {
    let mut violations = Violations::default();
    let mut batch = Vec::with_capacity(customers.len());
    for (index, customer) in customers.iter().enumerate() {
        let prefix = format!("customers[{index}].");
        let id = violations.check(
            format!("{prefix}name"),
            CustomerId::from_name(&customer.name),
        );
        let mut profile_violations = Violations::default();
        let profile = profile_from_proto(customer, rules, &mut profile_violations);
        violations.extend_under(&prefix, profile_violations);
        if let Some(id) = id {
            batch.push((id, profile));
        }
    }
    collected(batch, violations)
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
