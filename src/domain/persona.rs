//! Personas: an ordered catalog of named rules, each with what to do about
//! the customers it holds for. The first persona whose rule holds is the
//! customer's.

use serde::{Deserialize, Serialize};

use super::rules::{compile, Predicate};
use super::{Result, Violations};

/// One persona.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persona {
    /// Upper case, such as `VIP_FREQUENT`.
    pub id: String,
    /// A name for people.
    pub display_name: String,
    /// Who these customers are.
    pub description: String,
    /// The rule (CEL); it compiles.
    pub rule: String,
    /// What to do about them.
    pub recommended_actions: Vec<String>,
    /// Where to reach them.
    pub channels: Vec<String>,
}

/// The catalog in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// The personas, in order.
    pub personas: Vec<Persona>,
    /// 1 for the built-in catalog as first stored, one more on each change.
    pub revision: u64,
    /// Whether these are the built-in personas.
    pub built_in: bool,
}

/// The most personas a catalog may hold.
pub const MAX_PERSONAS: usize = 100;

/// The most characters of a display name, a description, an action or a
/// channel.
pub const MAX_TEXT: usize = 2000;

/// The most recommended actions, or channels, of one persona.
pub const MAX_LIST: usize = 50;

impl Persona {
    /// Checks every field and compiles the rule; the violations name the
    /// fields relative to the persona (`persona_id`, `rule`).
    pub fn check(&self, violations: &mut Violations) -> Option<Predicate> {
        violations.check("persona_id", parse_persona_id(&self.id));
        for (name, text) in [
            ("display_name", &self.display_name),
            ("description", &self.description),
        ] {
            if text.chars().count() > MAX_TEXT {
                violations.add(name, format!("at most {MAX_TEXT} characters"));
            }
        }
        for (name, list) in [
            ("recommended_actions", &self.recommended_actions),
            ("channels", &self.channels),
        ] {
            if list.len() > MAX_LIST || list.iter().any(|item| item.chars().count() > MAX_TEXT) {
                violations.add(
                    name,
                    format!("at most {MAX_LIST} entries of at most {MAX_TEXT} characters"),
                );
            }
        }
        let rule = compile(&self.rule)
            .map_err(|error| format!("at character {}: {}", error.position, error.message));
        violations.check("rule", rule)
    }
}

/// Checks the personas of a catalog: how many there are, each persona, and
/// that no id appears twice. Returns the compiled rules, in order; the
/// violations name the fields relative to the catalog (`personas[2].rule`).
pub fn check_catalog(personas: &[Persona]) -> Result<Vec<Predicate>> {
    let mut violations = Violations::default();
    if personas.is_empty() || personas.len() > MAX_PERSONAS {
        violations.add(
            "personas",
            format!("1 to {MAX_PERSONAS} personas, got {}", personas.len()),
        );
    }
    let mut seen = std::collections::HashSet::new();
    let mut rules = Vec::with_capacity(personas.len());
    for (index, persona) in personas.iter().enumerate() {
        let mut found = Violations::default();
        let rule = persona.check(&mut found);
        let valid_id = parse_persona_id(&persona.id).is_ok();
        if valid_id && !seen.insert(persona.id.as_str()) {
            found.add("persona_id", format!("{} appears twice", persona.id));
        }
        violations.extend_under(&format!("personas[{index}]."), found);
        rules.extend(rule);
    }
    violations.into_result(rules)
}

/// Checks a persona id: 1 to 63 characters from `[A-Z0-9_]`, starting with
/// a letter.
pub fn parse_persona_id(id: &str) -> Result<String, String> {
    if id.is_empty() || id.len() > 63 {
        return Err(format!(
            "a persona id has 1 to 63 characters, got {}",
            id.len()
        ));
    }
    if !id.starts_with(|c: char| c.is_ascii_uppercase()) {
        return Err("a persona id starts with an upper-case letter".into());
    }
    match id
        .chars()
        .find(|&c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
    {
        Some(bad) => Err(format!(
            "a persona id may hold only A-Z, 0-9 and _, found {bad:?}"
        )),
        None => Ok(id.to_owned()),
    }
}

fn persona(
    id: &str,
    display_name: &str,
    description: &str,
    rule: &str,
    recommended_actions: &[&str],
    channels: &[&str],
) -> Persona {
    Persona {
        id: id.into(),
        display_name: display_name.into(),
        description: description.into(),
        rule: rule.into(),
        recommended_actions: recommended_actions.iter().map(|a| (*a).into()).collect(),
        channels: channels.iter().map(|c| (*c).into()).collect(),
    }
}

/// The built-in catalog, from the product design's sources, in order.
pub fn default_personas() -> Vec<Persona> {
    vec![
        persona(
            "INTERNAL_CUSTOMER",
            "Internal customer",
            "An employee or a functional group of the company: satisfied internal customers make satisfied external ones.",
            r#"customer.relationship == "INTERNAL""#,
            &[
                "Run employee satisfaction surveys",
                "Keep them informed through internal communication",
                "Never include them in external campaigns",
            ],
            &["email"],
        ),
        persona(
            "BRAND_ADVOCATE",
            "Brand advocate",
            "Tells others about the brand: the top of the engagement pyramid.",
            r#"features.stage == "TELLING_OTHERS""#,
            &[
                "Invite them to the referral program",
                "Offer ambassador perks",
                "Give early access to new products",
            ],
            &["email", "push"],
        ),
        persona(
            "LAPSING_LOYAL",
            "Lapsing loyal customer",
            "Spent among the most, but has not bought for much longer than usual: a customer we cannot afford to lose.",
            r#"features.frequency == "LAPSED" && features.rfm.m >= 4"#,
            &[
                "Reach out personally to win them back",
                "Ask what changed and listen",
            ],
            &["email", "sms"],
        ),
        persona(
            "CO_CREATOR",
            "Co-creator",
            "Gives feedback: suggestions, reviews, survey answers.",
            r#"features.stage == "GIVING_FEEDBACK""#,
            &[
                "Ask for their suggestions",
                "Invite them to beta programs",
                "Close the feedback loop: tell them what changed",
            ],
            &["email"],
        ),
        persona(
            "VIP_FREQUENT",
            "VIP frequent customer",
            "Buys regularly and recently: the steadiest source of revenue.",
            r#"features.frequency == "FREQUENT_CUSTOMER""#,
            &[
                "Enrol them in the VIP club",
                "Send exclusive offers and gifts",
                "Personalise their experience",
            ],
            &["email", "push"],
        ),
        persona(
            "BUSINESS_ACCOUNT",
            "Business account",
            "A business that buys repeatedly.",
            r#"customer.party == "BUSINESS" && features.purchase_count >= 2"#,
            &[
                "Assign an account manager",
                "Offer contracts and volume pricing",
            ],
            &["email"],
        ),
        persona(
            "RETURNING_CUSTOMER",
            "Returning customer",
            "Has bought more than once: a customer, not just a buyer.",
            r#"features.frequency in ["REPEAT_CUSTOMER", "LAPSED"]"#,
            &[
                "Enrol them in the loyalty program",
                "Cross-sell related products",
            ],
            &["email", "push"],
        ),
        persona(
            "ONE_TIME_BUYER",
            "One-time buyer",
            "Bought exactly once and may never return.",
            r#"features.frequency == "ONE_TIME_BUYER""#,
            &[
                "Follow up after the purchase",
                "Offer an incentive for a second purchase",
                "Reach them with flash deals",
            ],
            &["email", "ads"],
        ),
        persona(
            "WINDOW_SHOPPER",
            "Window shopper",
            "Visits and looks, but has not bought.",
            r#"features.stage == "JUST_LOOKING""#,
            &[
                "Send nurture emails triggered by what they do on the site",
                "Offer a first-purchase incentive",
            ],
            &["email", "ads"],
        ),
        persona(
            "PROSPECT",
            "Prospect",
            "Part of the total market: no interaction yet.",
            "true",
            &[
                "Research the target market",
                "Build awareness with advertising",
            ],
            &["ads"],
        ),
    ]
}

/// The built-in catalog at a revision.
pub fn default_catalog(revision: u64) -> Catalog {
    Catalog {
        personas: default_personas(),
        revision,
        built_in: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Error;

    fn fields(error: Error) -> Vec<String> {
        let Error::InvalidArgument(violations) = error else {
            panic!("not a field violation: {error}");
        };
        let mut fields: Vec<String> = violations.into_iter().map(|v| v.field).collect();
        fields.sort();
        fields
    }

    #[test]
    fn the_built_in_catalog_checks() {
        let rules = check_catalog(&default_personas()).unwrap();
        assert_eq!(rules.len(), default_personas().len());
    }

    #[test]
    fn violations_are_named_relative_to_the_catalog() {
        let mut long = persona("LONG", "", "", "true", &[], &[]);
        long.description = "x".repeat(MAX_TEXT + 1);
        long.channels = vec!["email".into(); MAX_LIST + 1];
        let error = check_catalog(&[
            persona("BIG", "", "", "features.total_spend >= 100", &[], &[]),
            persona("BROKEN", "", "", "features.total_spend >=", &[], &[]),
            persona("big-2", "", "", "true", &[], &[]),
            persona("BIG", "", "", "nonsense", &[], &[]),
            long,
        ])
        .unwrap_err();
        assert_eq!(
            fields(error),
            [
                "personas[1].rule",
                "personas[2].persona_id",
                "personas[3].persona_id",
                "personas[3].rule",
                "personas[4].channels",
                "personas[4].description",
            ]
        );
        assert_eq!(fields(check_catalog(&[]).unwrap_err()), ["personas"]);
    }

    #[test]
    fn the_api_layer_puts_its_prefix_before_relative_paths() {
        let error = Error::invalid("department", "only an INTERNAL customer has a department");
        assert_eq!(fields(error.under("customer.")), ["customer.department"]);
    }
}
