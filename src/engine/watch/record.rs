//! What the change history holds: subjects, records of changes, their
//! checkpoints, and the cursors that point into it; and their encoding
//! (a version byte, then postcard).

use serde::{Deserialize, Serialize};

use crate::domain::rules::Channel;
use crate::domain::{Error, Result};

/// The version byte of every encoded record and checkpoint.
const VERSION: u8 = 1;

/// What a watch follows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Subject {
    /// The members of a saved segment, with consent on a channel when one
    /// is given.
    Segment {
        /// The segment id.
        id: String,
        /// The channel.
        channel: Option<Channel>,
    },
    /// Every customer's persona.
    Personas,
}

impl Subject {
    /// The key of the subject's checkpoint.
    pub fn key(&self) -> Vec<u8> {
        match self {
            Subject::Personas => b"p".to_vec(),
            Subject::Segment { id, channel } => {
                let mut key = vec![b's', channel.map_or(0, |channel| channel as u8 + 1)];
                key.extend_from_slice(id.as_bytes());
                key
            }
        }
    }
}

/// Why a customer's membership changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Cause {
    /// The customer's activity.
    Activity,
    /// The customer was created, or their profile changed.
    Profile,
    /// The customer's consent changed.
    Consent,
    /// The customer was erased.
    Erasure,
    /// Time passed.
    Clock,
    /// Other customers moved a relative measure: the RFM scores, or the
    /// predictions through a new fit.
    OtherCustomers,
    /// The segment's rule changed, or the segment was deleted.
    SegmentChanged,
    /// The persona catalog changed.
    CatalogChanged,
}

impl Cause {
    /// Of two causes of one customer's change, the one to report: an
    /// erasure over a consent change, over activity, over a profile change.
    pub fn stronger(self, other: Cause) -> Cause {
        let rank = |cause: Cause| match cause {
            Cause::Erasure => 3,
            Cause::Consent => 2,
            Cause::Activity => 1,
            _ => 0,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// One customer's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The customer id.
    pub customer: String,
    /// For a segment: whether they entered (else they left). For personas:
    /// unused.
    pub entered: bool,
    /// For personas: the persona before and after, empty for none.
    pub from: String,
    /// See `from`.
    pub to: String,
    /// Why.
    pub cause: Cause,
}

/// The changes of one subject in one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The subject.
    pub subject: Subject,
    /// The evaluation time, nanoseconds since the epoch.
    pub at: i64,
    /// The changes, in order of the customer id; for a segment, entries
    /// first, then departures.
    pub changes: Vec<Change>,
    /// The segment's rule (or, for personas, the catalog revision as
    /// text) when it differs from the record before.
    pub rule: Option<String>,
    /// The subject ends here: its segment was deleted.
    pub ended: bool,
}

/// A subject's members as of a record: where a restart starts replaying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The subject.
    pub subject: Subject,
    /// The last record it includes.
    pub seq: u64,
    /// The segment's rule, or the catalog revision as text.
    pub rule: String,
    /// The members, with their persona for the personas subject (else
    /// empty), in order of the customer id.
    pub members: Vec<(String, String)>,
}

/// Encodes a record or checkpoint.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let bytes = vec![VERSION];
    postcard::to_extend(value, bytes)
        .map_err(|error| Error::internal(format!("encoding the change history: {error}")))
}

/// Decodes a record or checkpoint.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => postcard::from_bytes(rest)
            .map_err(|error| Error::internal(format!("a damaged change history entry: {error}"))),
        _ => Err(Error::internal(
            "a change history entry of an unknown version",
        )),
    }
}

/// The subject of an encoded record, read without the rest of it.
pub fn subject_of(bytes: &[u8]) -> Result<Subject> {
    match bytes.split_first() {
        // The subject is a record's first field.
        Some((&VERSION, rest)) => postcard::take_from_bytes::<Subject>(rest)
            .map(|(subject, _)| subject)
            .map_err(|error| Error::internal(format!("a damaged change history entry: {error}"))),
        _ => Err(Error::internal(
            "a change history entry of an unknown version",
        )),
    }
}

/// A place in the history: after `offset` changes of record `seq` (all of
/// them when `offset` is their number, or more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// The history the cursor belongs to.
    pub history: u64,
    /// The record.
    pub seq: u64,
    /// Changes of the record already delivered; `u32::MAX` for all.
    pub offset: u32,
}

/// What a cursor says as text starts with this.
const CURSOR_PREFIX: &str = "c1.";

impl Cursor {
    /// After every change of record `seq`.
    pub fn after(history: u64, seq: u64) -> Self {
        Cursor {
            history,
            seq,
            offset: u32::MAX,
        }
    }

    /// The cursor as clients see it.
    pub fn to_text(self) -> String {
        if self.offset == u32::MAX {
            format!("{CURSOR_PREFIX}{:x}.{}", self.history, self.seq)
        } else {
            format!(
                "{CURSOR_PREFIX}{:x}.{}.{}",
                self.history, self.seq, self.offset
            )
        }
    }

    /// Reads a cursor; `None` when `text` is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(CURSOR_PREFIX)?;
        let mut parts = rest.split('.');
        let history = u64::from_str_radix(parts.next()?, 16).ok()?;
        let seq = parts.next()?.parse().ok()?;
        let offset = match parts.next() {
            Some(offset) => offset.parse().ok().filter(|&offset| offset < u32::MAX)?,
            None => u32::MAX,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Cursor {
            history,
            seq,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_as_written_and_nothing_else_reads() {
        for cursor in [
            Cursor::after(0xdead_beef, 0),
            Cursor::after(1, 42),
            Cursor {
                history: u64::MAX,
                seq: 7,
                offset: 1000,
            },
        ] {
            assert_eq!(Cursor::parse(&cursor.to_text()), Some(cursor));
        }
        for text in [
            "",
            "c1.",
            "c1.zz.1",
            "c1.1",
            "c1.1.2.3.4",
            "c2.1.2",
            "c1.1.-2",
            "c1.1.2.4294967295",
        ] {
            assert_eq!(Cursor::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn records_decode_as_encoded_and_refuse_other_versions() {
        let record = Record {
            subject: Subject::Segment {
                id: "vip".into(),
                channel: Some(Channel::Email),
            },
            at: 5,
            changes: vec![Change {
                customer: "c1".into(),
                entered: true,
                from: String::new(),
                to: String::new(),
                cause: Cause::Clock,
            }],
            rule: Some("features.purchase_count > 1".into()),
            ended: false,
        };
        let bytes = encode(&record).unwrap();
        assert_eq!(decode::<Record>(&bytes).unwrap(), record);
        assert_eq!(subject_of(&bytes).unwrap(), record.subject);
        let mut newer = bytes.clone();
        newer[0] = VERSION + 1;
        assert!(decode::<Record>(&newer).is_err());
        assert!(decode::<Record>(&bytes[..bytes.len() - 1]).is_err());
    }
}
