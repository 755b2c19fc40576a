//! Field masks for partial updates (AIP-134, AIP-161).

use serde::{Deserialize, Serialize};

use super::customer::Profile;

/// A mutable field, or part of one, that an update mask can name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProfileField {
    /// `party`
    Party,
    /// `relationship`
    Relationship,
    /// `department`
    Department,
    /// `birth_date`
    BirthDate,
    /// `gender`
    Gender,
    /// `annual_income`
    AnnualIncome,
    /// `location`, whole
    Location,
    /// `location.country_code`
    CountryCode,
    /// `location.region`
    Region,
    /// `location.city`
    City,
    /// `location.postal_code`
    PostalCode,
    /// `language`
    Language,
    /// `traits`, the whole map
    Traits,
    /// `traits.{key}`, one entry
    Trait(String),
    /// `consent`, every channel
    Consent,
    /// `consent.email`
    ConsentEmail,
    /// `consent.sms`
    ConsentSms,
    /// `consent.push`
    ConsentPush,
    /// `consent.ads`
    ConsentAds,
    /// `objects_to_profiling`
    ObjectsToProfiling,
}

/// Fields that are output only, which a mask may name but which change nothing.
const OUTPUT_ONLY: [&str; 4] = ["name", "create_time", "update_time", "etag"];

/// Every whole mutable field: what the mask `*` means.
pub const ALL: [ProfileField; 11] = [
    ProfileField::Party,
    ProfileField::Relationship,
    ProfileField::Department,
    ProfileField::BirthDate,
    ProfileField::Gender,
    ProfileField::AnnualIncome,
    ProfileField::Location,
    ProfileField::Language,
    ProfileField::Traits,
    ProfileField::Consent,
    ProfileField::ObjectsToProfiling,
];

impl ProfileField {
    /// Parses one mask path; `Ok(None)` for an output-only field.
    pub fn parse(path: &str) -> Result<Option<Self>, String> {
        if OUTPUT_ONLY.contains(&path) {
            return Ok(None);
        }
        let field = match path {
            "party" => Self::Party,
            "relationship" => Self::Relationship,
            "department" => Self::Department,
            "birth_date" => Self::BirthDate,
            "gender" => Self::Gender,
            "annual_income" => Self::AnnualIncome,
            "location" => Self::Location,
            "location.country_code" => Self::CountryCode,
            "location.region" => Self::Region,
            "location.city" => Self::City,
            "location.postal_code" => Self::PostalCode,
            "language" => Self::Language,
            "traits" => Self::Traits,
            "consent" => Self::Consent,
            "consent.email" => Self::ConsentEmail,
            "consent.sms" => Self::ConsentSms,
            "consent.push" => Self::ConsentPush,
            "consent.ads" => Self::ConsentAds,
            "objects_to_profiling" => Self::ObjectsToProfiling,
            other => match other.strip_prefix("traits.") {
                Some(key) if !key.is_empty() => Self::Trait(key.to_owned()),
                _ => {
                    return Err(format!(
                        "{other:?} is not a mutable field of Customer; use a field name such as location.city, consent.email or traits.tier"
                    ));
                }
            },
        };
        Ok(Some(field))
    }

    /// The field's path in a request, as violations name it.
    pub fn path(&self) -> String {
        let path = match self {
            Self::Party => "party",
            Self::Relationship => "relationship",
            Self::Department => "department",
            Self::BirthDate => "birth_date",
            Self::Gender => "gender",
            Self::AnnualIncome => "annual_income",
            Self::Location => "location",
            Self::CountryCode => "location.country_code",
            Self::Region => "location.region",
            Self::City => "location.city",
            Self::PostalCode => "location.postal_code",
            Self::Language => "language",
            Self::Traits => "traits",
            Self::Trait(key) => return format!("traits.{key}"),
            Self::Consent => "consent",
            Self::ConsentEmail => "consent.email",
            Self::ConsentSms => "consent.sms",
            Self::ConsentPush => "consent.push",
            Self::ConsentAds => "consent.ads",
            Self::ObjectsToProfiling => "objects_to_profiling",
        };
        path.to_owned()
    }

    /// Whether a value at `path` (e.g. `location.country_code`, or
    /// `traits["tier"]`) is part of this field.
    pub fn covers(&self, path: &str) -> bool {
        if let Self::Trait(key) = self {
            return path == format!("traits[{key:?}]") || path == format!("traits.{key}");
        }
        let own = self.path();
        path == own
            || path
                .strip_prefix(own.as_str())
                .is_some_and(|rest| rest.starts_with(['.', '[']))
    }

    /// Copies this field from `source` into `target`.
    pub fn copy(&self, source: &Profile, target: &mut Profile) {
        match self {
            Self::Party => target.party = source.party,
            Self::Relationship => target.relationship = source.relationship,
            Self::Department => target.department.clone_from(&source.department),
            Self::BirthDate => target.birth_date = source.birth_date,
            Self::Gender => target.gender = source.gender,
            Self::AnnualIncome => target.annual_income = source.annual_income,
            Self::Location => target.location.clone_from(&source.location),
            Self::CountryCode => target
                .location
                .country_code
                .clone_from(&source.location.country_code),
            Self::Region => target.location.region.clone_from(&source.location.region),
            Self::City => target.location.city.clone_from(&source.location.city),
            Self::PostalCode => target
                .location
                .postal_code
                .clone_from(&source.location.postal_code),
            Self::Language => target.language.clone_from(&source.language),
            Self::Traits => target.traits.clone_from(&source.traits),
            Self::Trait(key) => match source.traits.get(key) {
                Some(value) => {
                    target.traits.insert(key.clone(), value.clone());
                }
                None => {
                    target.traits.remove(key);
                }
            },
            Self::Consent => target.consent = source.consent,
            Self::ConsentEmail => target.consent.email = source.consent.email,
            Self::ConsentSms => target.consent.sms = source.consent.sms,
            Self::ConsentPush => target.consent.push = source.consent.push,
            Self::ConsentAds => target.consent.ads = source.consent.ads,
            Self::ObjectsToProfiling => target.objects_to_profiling = source.objects_to_profiling,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_covers_paths() {
        assert_eq!(
            ProfileField::parse("location.city").unwrap(),
            Some(ProfileField::City)
        );
        assert_eq!(ProfileField::parse("etag").unwrap(), None);
        assert!(ProfileField::parse("locations").is_err());
        assert!(ProfileField::parse("traits.").is_err());
        assert!(ProfileField::Location.covers("location.country_code"));
        assert!(!ProfileField::Language.covers("languages"));
        assert!(ProfileField::Trait("tier".into()).covers("traits[\"tier\"]"));
        assert!(ProfileField::Traits.covers("traits[\"tier\"]"));
    }
}
