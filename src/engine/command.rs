//! Every change as a command: a value that says all a write needs,
//! including the time it happens at, so that applying it is deterministic.
//! The embedded mode applies a command as soon as it is made (`apply`);
//! cluster mode appends it to the replicated log as a record, and every
//! replica applies the records in order (`replica`), reaching the same
//! state and the same outcome (created, ALREADY_EXISTS, an etag conflict,
//! duplicates) as every other.
//!
//! # The record format
//!
//! One version byte, [`RECORD_VERSION`], then the command in postcard. A
//! later version adds variants at the end of [`Command`] (postcard numbers
//! them in order) and keeps reading the old ones.

use serde::{Deserialize, Serialize};

use crate::domain::persona::Catalog;
use crate::domain::segment::{Segment, SegmentChanges, SegmentId};
use crate::domain::{
    ActivityBatch, Customer, CustomerId, Error, Profile, ProfileField, Result, Timestamp,
};

/// The version byte of the record format this build writes.
pub const RECORD_VERSION: u8 = 1;

/// A change, with everything applying it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A cluster's first record: the page-token key every replica shares,
    /// so that a page token made by one is good at every other.
    Bootstrap {
        /// The key's bytes.
        page_token_key: [u8; 32],
    },
    /// Create a customer.
    CreateCustomer {
        /// The new customer's id.
        id: CustomerId,
        /// Their profile; checked.
        profile: Profile,
        /// A retry with the same id returns the stored customer.
        request_id: Option<String>,
        /// When it happens.
        at: Timestamp,
    },
    /// Change some fields of a customer.
    UpdateCustomer {
        /// The customer.
        id: CustomerId,
        /// The new values; only `fields` are read.
        profile: Profile,
        /// The fields to change.
        fields: Vec<ProfileField>,
        /// When set, the stored etag must equal it.
        etag: Option<String>,
        /// Create the customer if missing.
        allow_missing: bool,
        /// When it happens.
        at: Timestamp,
    },
    /// Delete a customer and erase their activity.
    DeleteCustomer {
        /// The customer.
        id: CustomerId,
        /// When set, the stored etag must equal it.
        etag: Option<String>,
    },
    /// Create or replace customers, all or nothing.
    ImportCustomers {
        /// The customers; every profile checked.
        batch: Vec<(CustomerId, Profile)>,
        /// When it happens.
        at: Timestamp,
    },
    /// Record a batch of events, all or nothing; repeats are dropped.
    RecordActivity {
        /// The events.
        batch: ActivityBatch,
    },
    /// Save a new segment.
    CreateSegment {
        /// The segment; its filter compiles.
        segment: Segment,
        /// When it happens.
        at: Timestamp,
    },
    /// Change a saved segment.
    UpdateSegment {
        /// The segment.
        id: SegmentId,
        /// When set, the stored etag must equal it.
        etag: Option<String>,
        /// What changes.
        changes: SegmentChanges,
        /// When it happens.
        at: Timestamp,
    },
    /// Delete a saved segment.
    DeleteSegment {
        /// The segment.
        id: SegmentId,
        /// When set, the stored etag must equal it.
        etag: Option<String>,
    },
    /// Replace the persona catalog.
    StoreCatalog {
        /// The new catalog; it compiles. Its revision is set on apply.
        catalog: Catalog,
        /// When set, the stored revision must equal it.
        expected: Option<u64>,
    },
}

/// What recording did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordCounts {
    /// Events recorded for the first time.
    pub accepted: u64,
    /// Events whose id was already recorded.
    pub duplicates: u64,
}

/// What an import batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// Customers that did not exist before.
    pub created: u64,
    /// Customers that existed and were replaced.
    pub updated: u64,
}

/// What applying a command gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The key is in force.
    Bootstrapped,
    /// The customer as stored.
    Customer(Customer),
    /// The customer is gone.
    Deleted,
    /// What an import did.
    Imported(ImportCounts),
    /// What recording a batch did.
    Recorded(RecordCounts),
    /// The segment as stored.
    Segment(Segment),
    /// The segment is gone.
    SegmentDeleted,
    /// The catalog as stored.
    Catalog(Catalog),
}

impl Command {
    /// How many records applying it may change, which decides where it runs
    /// (see `Engine::write`).
    pub fn records(&self) -> usize {
        match self {
            Command::ImportCustomers { batch, .. } => batch.len(),
            Command::RecordActivity { batch } => batch.len(),
            // Erasing rewrites every batch that holds one of the customer's
            // events: never a small write.
            Command::DeleteCustomer { .. } => usize::MAX,
            _ => 1,
        }
    }

    /// The command as a log record.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let record = vec![RECORD_VERSION];
        postcard::to_extend(self, record)
            .map_err(|error| Error::internal(format!("cannot encode a command: {error}")))
    }

    /// The command a log record holds.
    pub fn decode(record: &[u8]) -> Result<Self> {
        match record.split_first() {
            Some((&RECORD_VERSION, body)) => postcard::from_bytes(body)
                .map_err(|error| Error::internal(format!("a log record does not decode: {error}"))),
            Some((version, _)) => Err(Error::internal(format!(
                "a log record has format version {version}, which this build does not know \
                 (it writes {RECORD_VERSION}): run a newer segmentd"
            ))),
            None => Err(Error::internal("a log record is empty")),
        }
    }
}

/// The outcome a method expected, or an internal error naming the method.
macro_rules! expect_outcome {
    ($outcome:expr, $variant:ident) => {
        match $outcome {
            Outcome::$variant(value) => Ok(value),
            other => Err(Error::internal(format!(
                "expected {} from applying a command, got {other:?}",
                stringify!($variant)
            ))),
        }
    };
}
pub(super) use expect_outcome;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_to_the_command_it_was_made_from() {
        let command = Command::DeleteSegment {
            id: SegmentId::from_name("segments/vip").unwrap(),
            etag: Some("\"3\"".into()),
        };
        let record = command.encode().unwrap();
        assert_eq!(record[0], RECORD_VERSION);
        assert_eq!(Command::decode(&record).unwrap(), command);
    }

    #[test]
    fn a_record_of_an_unknown_version_or_garbage_is_refused_in_words() {
        let error = Command::decode(&[9, 1, 2]).unwrap_err().to_string();
        assert!(error.contains("format version 9"), "{error}");
        assert!(Command::decode(&[]).is_err());
        assert!(Command::decode(&[RECORD_VERSION, 200, 200, 200]).is_err());
    }
}
