//! Personas: an ordered catalog of named rules, each with what to do about
//! the customers it holds for. The first persona whose rule holds is the
//! customer's.

use serde::{Deserialize, Serialize};

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
