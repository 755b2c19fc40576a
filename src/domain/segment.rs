//! Saved segments: a named rule that selects customers.

use serde::{Deserialize, Serialize};

use super::time::Timestamp;

/// A segment id: 1 to 63 characters from `[a-z0-9-]`, starting with a
/// letter (AIP-122).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentId(String);

/// The collection of segments, as in their resource names.
const COLLECTION: &str = "segments/";

impl SegmentId {
    /// Checks `id` and wraps it.
    pub fn parse(id: &str) -> Result<Self, String> {
        if id.is_empty() || id.len() > 63 {
            return Err(format!(
                "a segment id has 1 to 63 characters, got {}",
                id.len()
            ));
        }
        if !id.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err("a segment id starts with a lower-case letter".into());
        }
        if let Some(bad) = id
            .chars()
            .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            return Err(format!(
                "a segment id may hold only a-z, 0-9 and -, found {bad:?}"
            ));
        }
        Ok(SegmentId(id.to_owned()))
    }

    /// Parses a resource name, `segments/{segment_id}`.
    pub fn from_name(name: &str) -> Result<Self, String> {
        let id = name
            .strip_prefix(COLLECTION)
            .ok_or_else(|| format!("expected segments/{{segment_id}}, got {name:?}"))?;
        Self::parse(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The resource name.
    pub fn name(&self) -> String {
        format!("{COLLECTION}{}", self.0)
    }
}

/// A saved segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// The id.
    pub id: SegmentId,
    /// A name for people.
    pub display_name: String,
    /// What it is for.
    pub description: String,
    /// The rule (CEL) that selects members; it compiles.
    pub filter: String,
    /// 1 when created, one more on each change.
    pub revision: u64,
    /// When it was created.
    pub create_time: Timestamp,
    /// When it last changed.
    pub update_time: Timestamp,
}

/// The fields an UpdateSegment call changes, with their new values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentChanges {
    /// The new display name, if it changes.
    pub display_name: Option<String>,
    /// The new description, if it changes.
    pub description: Option<String>,
    /// The new filter, if it changes; it compiles.
    pub filter: Option<String>,
}

impl SegmentChanges {
    /// Applies the changes to the stored segment.
    pub fn apply(self, stored: &mut Segment) {
        if let Some(display_name) = self.display_name {
            stored.display_name = display_name;
        }
        if let Some(description) = self.description {
            stored.description = description;
        }
        if let Some(filter) = self.filter {
            stored.filter = filter;
        }
    }
}
