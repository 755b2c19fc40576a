//! The customer profile and the parse constructors that keep invalid values
//! out of the domain.
//!
//! These types are also the stored form of a customer (see `store::codec`):
//! changing one changes the encoding, and needs a new codec version.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::country;
use super::time::{Date, Timestamp};
use super::{Result, Violations};

/// The collection part of a customer's resource name.
pub const COLLECTION: &str = "customers/";
const MAX_ID_LEN: usize = 128;
const MAX_TEXT_LEN: usize = 128;
const MAX_POSTAL_CODE_LEN: usize = 32;
const MAX_LANGUAGE_LEN: usize = 35;
/// The most traits one customer may carry.
pub const MAX_TRAITS: usize = 64;
const MAX_TRAIT_KEY_LEN: usize = 64;
const MAX_TRAIT_STRING_BYTES: usize = 1024;

/// A client-chosen customer id: 1 to 128 characters from `[A-Za-z0-9._:@-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CustomerId(String);

impl CustomerId {
    /// Checks `id` and wraps it.
    pub fn parse(id: &str) -> Result<Self, String> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(format!(
                "a customer id has 1 to {MAX_ID_LEN} characters, got {}",
                id.chars().count()
            ));
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-')))
        {
            return Err(format!(
                "a customer id may hold only A-Z, a-z, 0-9 and . _ : @ -, found {bad:?}"
            ));
        }
        Ok(CustomerId(id.to_owned()))
    }

    /// Parses a resource name, `customers/{customer_id}`.
    pub fn from_name(name: &str) -> Result<Self, String> {
        match name.strip_prefix(COLLECTION) {
            Some(id) => Self::parse(id),
            None if name.is_empty() => {
                Err("required: a name of the form customers/{customer_id}".to_owned())
            }
            None => Err(format!(
                "expected a name of the form customers/{{customer_id}}, got {name:?}"
            )),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The resource name, `customers/{customer_id}`.
    pub fn name(&self) -> String {
        format!("{COLLECTION}{}", self.0)
    }
}

/// Lets maps keyed by id be searched with a plain `&str`.
impl std::borrow::Borrow<str> for CustomerId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person or a business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Party {
    /// A natural person.
    #[default]
    Individual,
    /// A company or another organisation.
    Business,
}

/// Internal (our own employees and groups) or external (buys our products).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Relationship {
    /// Buys the company's final products.
    #[default]
    External,
    /// An employee or a functional group of the company.
    Internal,
}

/// Gender as the customer stated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Gender {
    /// Not stated.
    #[default]
    Unspecified,
    /// Female.
    Female,
    /// Male.
    Male,
    /// Any other answer.
    Other,
}

/// The state of consent on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ConsentStatus {
    /// Never asked, or no answer.
    #[default]
    Unknown,
    /// Agreed to be contacted.
    Granted,
    /// Refused contact.
    Denied,
}

/// Consent per marketing channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Consent {
    /// Email.
    pub email: ConsentStatus,
    /// Text messages.
    pub sms: ConsentStatus,
    /// Mobile push notifications.
    pub push: ConsentStatus,
    /// Personalised advertising.
    pub ads: ConsentStatus,
}

/// An ISO 4217 currency code: three upper-case letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyCode([u8; 3]);

impl CurrencyCode {
    /// Checks the shape of `code` (three letters) and upper-cases it.
    pub fn parse(code: &str) -> Result<Self, String> {
        match code.as_bytes() {
            [a, b, c] if code.bytes().all(|byte| byte.is_ascii_alphabetic()) => Ok(CurrencyCode([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
                c.to_ascii_uppercase(),
            ])),
            _ => Err(format!(
                "expected an ISO 4217 currency code such as USD, got {code:?}"
            )),
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters get in through `parse`.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount in minor units of a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// The currency.
    pub currency: CurrencyCode,
    /// The amount in minor units (cents for USD).
    pub minor_units: i64,
}

impl Money {
    /// A non-negative amount in the reporting currency; an empty `currency`
    /// means the reporting one.
    pub fn parse_non_negative(
        currency: &str,
        minor_units: i64,
        reporting: CurrencyCode,
    ) -> Result<Self, String> {
        let currency = if currency.is_empty() {
            reporting
        } else {
            CurrencyCode::parse(currency)?
        };
        if currency != reporting {
            return Err(format!(
                "amounts must be in the reporting currency {reporting}, got {currency}"
            ));
        }
        if minor_units < 0 {
            return Err(format!("must not be negative, got {minor_units}"));
        }
        Ok(Money {
            currency,
            minor_units,
        })
    }
}

/// A postal location.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Location {
    /// ISO 3166-1 alpha-2 country code, upper case.
    pub country_code: Option<String>,
    /// Region, state or province.
    pub region: String,
    /// City.
    pub city: String,
    /// Postal code.
    pub postal_code: String,
}

/// Checks an ISO 3166-1 alpha-2 code, case-insensitively, and upper-cases it.
pub fn parse_country_code(code: &str) -> Result<String, String> {
    let upper = code.to_ascii_uppercase();
    if country::is_assigned(&upper) {
        Ok(upper)
    } else {
        Err(format!(
            "{code:?} is not an ISO 3166-1 alpha-2 country code, such as TR, EG or IR"
        ))
    }
}

/// Checks a free-text field against a length limit.
pub fn parse_text(value: &str, max_chars: usize) -> Result<String, String> {
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(format!("at most {max_chars} characters, got {chars}"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(value.to_owned())
}

/// Checks a short free-text field (region, city, department).
pub fn parse_short_text(value: &str) -> Result<String, String> {
    parse_text(value, MAX_TEXT_LEN)
}

/// Checks a postal code.
pub fn parse_postal_code(value: &str) -> Result<String, String> {
    parse_text(value, MAX_POSTAL_CODE_LEN)
}

/// Checks the shape of a BCP 47 language tag: a 2–3 letter primary language
/// followed by subtags of 1–8 letters or digits, separated by hyphens.
pub fn parse_language(tag: &str) -> Result<String, String> {
    let shaped = tag.len() <= MAX_LANGUAGE_LEN && {
        let mut subtags = tag.split('-');
        let primary_ok = subtags.next().is_some_and(|p| {
            (2..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic())
        });
        primary_ok
            && subtags
                .all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()))
    };
    if shaped {
        Ok(tag.to_owned())
    } else {
        Err(format!(
            "expected a BCP 47 language tag such as tr, ar-EG or fa-IR, got {tag:?}"
        ))
    }
}

/// The value of a custom trait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TraitValue {
    /// Text.
    String(String),
    /// A finite number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

/// Checks a trait key: 1 to 64 characters from `[A-Za-z0-9_.-]`, starting
/// with a letter or underscore.
pub fn parse_trait_key(key: &str) -> Result<String, String> {
    let first_ok = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && key.len() <= MAX_TRAIT_KEY_LEN {
        Ok(key.to_owned())
    } else {
        Err(format!(
            "a trait key has 1 to {MAX_TRAIT_KEY_LEN} characters from A-Z a-z 0-9 _ . - and starts with a letter or _, got {key:?}"
        ))
    }
}

impl TraitValue {
    /// Checks a trait value's limits.
    pub fn validate(self) -> Result<Self, String> {
        match &self {
            TraitValue::String(text) if text.len() > MAX_TRAIT_STRING_BYTES => Err(format!(
                "a string trait holds at most {MAX_TRAIT_STRING_BYTES} bytes, got {}",
                text.len()
            )),
            TraitValue::Number(number) if !number.is_finite() => {
                Err(format!("a number trait must be finite, got {number}"))
            }
            _ => Ok(self),
        }
    }
}

/// Checks a birth date: not in the future, and not before 1900.
pub fn parse_birth_date(year: i32, month: i32, day: i32, today: Date) -> Result<Date, String> {
    let date = Date::from_ymd(year, month, day)?;
    if date > today {
        return Err(format!("{date} is in the future"));
    }
    if date.year() < 1900 {
        return Err(format!("{date} is before 1900-01-01"));
    }
    Ok(date)
}

/// Everything about a customer that a client may change.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Profile {
    /// Person or business.
    pub party: Party,
    /// Internal or external.
    pub relationship: Relationship,
    /// The department of an internal customer.
    pub department: Option<String>,
    /// Date of birth.
    pub birth_date: Option<Date>,
    /// Stated gender.
    pub gender: Gender,
    /// Yearly income in the reporting currency.
    pub annual_income: Option<Money>,
    /// Where the customer lives.
    pub location: Location,
    /// BCP 47 language tag.
    pub language: Option<String>,
    /// Custom attributes.
    pub traits: BTreeMap<String, TraitValue>,
    /// Marketing consent per channel.
    pub consent: Consent,
    /// Objects to profiling (GDPR article 21).
    pub objects_to_profiling: bool,
}

impl Profile {
    /// Checks the rules that span fields; the violations name fields
    /// relative to the profile (`department`).
    pub fn check(&self) -> Result<()> {
        let mut violations = Violations::default();
        if self.department.is_some() && self.relationship != Relationship::Internal {
            violations.add("department", "only an INTERNAL customer has a department");
        }
        if self.traits.len() > MAX_TRAITS {
            violations.add(
                "traits",
                format!("at most {MAX_TRAITS} traits, got {}", self.traits.len()),
            );
        }
        violations.into_result(())
    }
}

/// A stored customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// The client-chosen id.
    pub id: CustomerId,
    /// The client-changeable fields.
    pub profile: Profile,
    /// When the customer was created.
    pub create_time: Timestamp,
    /// When the customer last changed; also the source of the etag.
    pub update_time: Timestamp,
    /// The `request_id` of the create, which makes a retried create idempotent.
    pub create_request_id: Option<String>,
}

impl Customer {
    /// The etag: changes on every write of this customer.
    pub fn etag(&self) -> String {
        format!("{:x}", self.update_time.as_nanos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_ids() {
        assert!(CustomerId::parse("a.b_c:d@e-f9").is_ok());
        assert!(CustomerId::parse("").is_err());
        assert!(CustomerId::parse("has space").is_err());
        assert!(CustomerId::parse(&"x".repeat(129)).is_err());
        assert_eq!(
            CustomerId::from_name("customers/42").unwrap().as_str(),
            "42"
        );
        assert!(CustomerId::from_name("users/42").is_err());
    }

    #[test]
    fn languages() {
        for ok in ["tr", "ar-EG", "fa-IR", "zh-Hant-TW", "en-US-x-private"] {
            assert!(parse_language(ok).is_ok(), "{ok}");
        }
        for bad in ["", "e", "english", "tr_TR", "tr-", "ar--EG"] {
            assert!(parse_language(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn money_in_reporting_currency_only() {
        let usd = CurrencyCode::parse("USD").unwrap();
        assert_eq!(Money::parse_non_negative("", 5, usd).unwrap().currency, usd);
        assert!(Money::parse_non_negative("usd", 5, usd).is_ok());
        assert!(Money::parse_non_negative("EUR", 5, usd).is_err());
        assert!(Money::parse_non_negative("USD", -1, usd).is_err());
    }
}
