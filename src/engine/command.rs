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
//! The magic bytes [`RECORD_MAGIC`], one version byte, [`RECORD_VERSION`],
//! then the command in postcard, with nothing after it. Postcard does not
//! describe its fields, so any change to what a command holds (its domain
//! types included) is a new version; a later build adds variants at the end
//! of [`Command`] and keeps reading the old versions. A record that is not
//! one, or does not decode, is skipped by every replica alike; one of a
//! later version stops a replica until it is upgraded.
//!
//! A variant added at the end leaves the records of the others as they
//! were, and so keeps the version when a build that does not know it may
//! skip it: `Tick` and `Watch` were added so, and a replica of an earlier
//! build, which serves no watches, skips them.

use serde::{Deserialize, Serialize};

use crate::domain::persona::Catalog;
use crate::domain::predict::PredictionModel;
use crate::domain::rules::Channel;
use crate::domain::segment::{Segment, SegmentChanges, SegmentId};
use crate::domain::{
    ActivityBatch, Customer, CustomerId, Error, Profile, ProfileField, Result, Timestamp,
};

/// The bytes every record starts with, so that anything else published
/// to the log's subjects is told apart.
pub const RECORD_MAGIC: &[u8; 3] = b"sgd";
/// The version byte of the record format this build writes, after the
/// magic bytes.
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
    /// Cluster mode: the clock, entered into the log. Every replica
    /// evaluates the watched subjects at `at` (or at the last evaluation
    /// time, if later), so that every replica's change history is the
    /// same.
    Tick {
        /// The evaluation time.
        at: Timestamp,
    },
    /// Cluster mode: follow a subject from here on, registered at the same
    /// place of the log, and so of the change history, on every replica.
    Watch {
        /// The segment to follow; `None` for the persona assignments.
        segment: Option<String>,
        /// The consent channel members must have granted, for a segment.
        channel: Option<Channel>,
        /// When it was asked for; the change history starts at it if this
        /// is its first record.
        at: Timestamp,
    },
    /// Put a fitted prediction model in force, replacing the one before
    /// if that is still the one `expected`.
    StorePredictionModel {
        /// The model.
        model: PredictionModel,
        /// The model it may replace: in cluster mode several replicas fit
        /// in the background, and a fit that another overtook is refused
        /// rather than put an older model back in force.
        expected: InForce,
    },
}

/// The prediction model a new one may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InForce {
    /// Whichever is in force: a fit asked for.
    Any,
    /// None: the first fit.
    None,
    /// The one evaluated and fitted at these times.
    Model {
        /// Its evaluation time.
        evaluation_time: Timestamp,
        /// When it was fitted.
        fitted_at: Timestamp,
    },
}

impl InForce {
    /// `model`, as the one a new model replaces.
    pub fn of(model: &PredictionModel) -> Self {
        InForce::Model {
            evaluation_time: model.evaluation_time,
            fitted_at: model.fitted_at,
        }
    }

    /// Whether `current`, the model in force, is the one expected.
    pub fn holds(self, current: Option<&PredictionModel>) -> bool {
        match (self, current) {
            (InForce::Any, _) | (InForce::None, None) => true,
            (InForce::Model { .. }, Some(model)) => self == InForce::of(model),
            (InForce::None, Some(_)) | (InForce::Model { .. }, None) => false,
        }
    }
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
    /// The watched subjects were evaluated.
    Evaluated,
    /// The subject is followed.
    Watching,
    /// The prediction model in force.
    PredictionModel(std::sync::Arc<PredictionModel>),
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
            // An evaluation reads every subject: never inline.
            Command::Tick { .. } | Command::Watch { .. } => usize::MAX,
            _ => 1,
        }
    }

    /// The command as a log record.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut record = RECORD_MAGIC.to_vec();
        record.push(RECORD_VERSION);
        postcard::to_extend(self, record)
            .map_err(|error| Error::internal(format!("cannot encode a command: {error}")))
    }

    /// The command a log record holds.
    pub fn decode(record: &[u8]) -> Result<Self, Unreadable> {
        let Some(rest) = record.strip_prefix(RECORD_MAGIC) else {
            return Err(Unreadable::Foreign);
        };
        match rest.split_first() {
            Some((&RECORD_VERSION, body)) => match postcard::take_from_bytes(body) {
                Ok((command, [])) => Ok(command),
                Ok((_, left)) => Err(Unreadable::Damaged(format!(
                    "{} bytes are left over after the command",
                    left.len()
                ))),
                Err(error) => Err(Unreadable::Damaged(error.to_string())),
            },
            Some((&version, _)) if version > RECORD_VERSION => Err(Unreadable::Newer(version)),
            Some((&version, _)) => Err(Unreadable::Damaged(format!(
                "format version {version} was never written"
            ))),
            None => Err(Unreadable::Damaged("it ends after its magic bytes".into())),
        }
    }
}

/// Why a log record is not a command this build can apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// Not a segmentd record: something else published to the log's
    /// subjects. Every replica skips it alike.
    Foreign,
    /// A segmentd record that does not decode. Every replica holds the same
    /// bytes, so every replica skips it alike.
    Damaged(String),
    /// A record of a later format: this build must be upgraded to go on.
    Newer(u8),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Foreign => formatter.write_str("it is not a segmentd record"),
            Unreadable::Damaged(why) => write!(formatter, "it does not decode: {why}"),
            Unreadable::Newer(version) => write!(
                formatter,
                "it has format version {version}, newer than this build's {RECORD_VERSION}: \
                 upgrade segmentd"
            ),
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
    fn a_model_replaces_only_the_one_it_expects() {
        use crate::domain::predict::bgnbd::BgNbd;
        let bgnbd = BgNbd {
            r: 1.0,
            alpha: 1.0,
            a: 1.0,
            b: 1.0,
        };
        let model = |fitted: i64| PredictionModel::of_bgnbd(bgnbd, Timestamp::from_nanos(fitted));
        let (first, second) = (model(1), model(2));
        assert!(InForce::Any.holds(None) && InForce::Any.holds(Some(&first)));
        assert!(InForce::None.holds(None) && !InForce::None.holds(Some(&first)));
        assert!(InForce::of(&first).holds(Some(&first)));
        assert!(!InForce::of(&first).holds(Some(&second)));
        assert!(!InForce::of(&first).holds(None));
    }

    #[test]
    fn a_record_decodes_to_the_command_it_was_made_from() {
        let command = Command::DeleteSegment {
            id: SegmentId::from_name("segments/vip").unwrap(),
            etag: Some("\"3\"".into()),
        };
        let record = command.encode().unwrap();
        assert_eq!(&record[..4], b"sgd\x01");
        assert_eq!(Command::decode(&record).unwrap(), command);
    }

    #[test]
    fn the_commands_of_watching_decode_after_the_older_ones() {
        let tick = Command::Tick {
            at: Timestamp::from_nanos(1_700_000_000_000_000_000),
        };
        assert_eq!(Command::decode(&tick.encode().unwrap()).unwrap(), tick);
        let watch = Command::Watch {
            segment: Some("vip".into()),
            channel: Some(Channel::Email),
            at: Timestamp::from_nanos(1),
        };
        assert_eq!(Command::decode(&watch.encode().unwrap()).unwrap(), watch);
        // Added at the end: the records of the earlier commands keep their
        // bytes, so the format keeps its version.
        let bootstrap = Command::Bootstrap {
            page_token_key: [7; 32],
        };
        assert_eq!(bootstrap.encode().unwrap()[4], 0);
    }

    #[test]
    fn a_record_that_is_not_one_of_ours_damaged_or_newer_says_which() {
        assert_eq!(Command::decode(b"hi"), Err(Unreadable::Foreign));
        assert_eq!(Command::decode(b""), Err(Unreadable::Foreign));
        assert_eq!(Command::decode(b"sgd\x09\x01"), Err(Unreadable::Newer(9)));
        assert!(matches!(
            Command::decode(b"sgd\x01\xc8\xc8\xc8"),
            Err(Unreadable::Damaged(_))
        ));
        assert!(matches!(
            Command::decode(b"sgd"),
            Err(Unreadable::Damaged(_))
        ));
        let mut longer = Command::DeleteSegment {
            id: SegmentId::from_name("segments/vip").unwrap(),
            etag: None,
        }
        .encode()
        .unwrap();
        longer.push(0);
        assert!(matches!(
            Command::decode(&longer),
            Err(Unreadable::Damaged(_))
        ));
    }
}
