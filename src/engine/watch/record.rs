//! What the change history holds: subjects, records of changes, their
//! checkpoints, and the cursors that point into it; and their encoding:
//! a version byte, then postcard, compressed with LZ4 when it is large
//! (an import's record, a checkpoint of every customer's persona).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::domain::rules::Channel;
use crate::domain::{Error, Result};

/// The version byte of an encoded record or checkpoint: postcard.
const VERSION: u8 = 1;

/// The version byte of a compressed one: postcard compressed with LZ4
/// (block format, its length first).
const VERSION_LZ4: u8 = 2;

/// Entries of at least this many bytes are compressed: the ids and persona
/// names of a long list of changes repeat much from one to the next.
const COMPRESS_FROM: usize = 4096;

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

/// A checkpoint read in place, its members borrowed from the entry's
/// bytes: a start reads a checkpoint of every customer's persona without
/// a string per id. The fields are [`Checkpoint`]'s, in its order.
#[derive(Debug, Deserialize)]
pub struct CheckpointView<'a> {
    /// See [`Checkpoint::subject`].
    pub subject: Subject,
    /// See [`Checkpoint::seq`].
    pub seq: u64,
    /// See [`Checkpoint::rule`].
    pub rule: String,
    /// See [`Checkpoint::members`].
    #[serde(borrow)]
    pub members: Vec<(&'a str, &'a str)>,
}

/// A checkpoint's view of a [`payload`].
pub fn view(payload: &[u8]) -> Result<CheckpointView<'_>> {
    postcard::from_bytes(payload).map_err(damaged)
}

/// Encodes a record or checkpoint.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let plain = postcard::to_allocvec(value)
        .map_err(|error| Error::internal(format!("encoding the change history: {error}")))?;
    if plain.len() >= COMPRESS_FROM {
        let compressed = lz4_flex::block::compress_prepend_size(&plain);
        if compressed.len() < plain.len() {
            let mut bytes = Vec::with_capacity(1 + compressed.len());
            bytes.push(VERSION_LZ4);
            bytes.extend_from_slice(&compressed);
            return Ok(bytes);
        }
    }
    let mut bytes = Vec::with_capacity(1 + plain.len());
    bytes.push(VERSION);
    bytes.extend_from_slice(&plain);
    Ok(bytes)
}

fn damaged(error: impl std::fmt::Display) -> Error {
    Error::internal(format!("a damaged change history entry: {error}"))
}

/// The postcard bytes of an encoded record or checkpoint: in place, or
/// decompressed.
pub fn payload(bytes: &[u8]) -> Result<Cow<'_, [u8]>> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => Ok(Cow::Borrowed(rest)),
        Some((&VERSION_LZ4, rest)) => {
            let claimed = rest
                .get(..4)
                .map(|size| u32::from_le_bytes(size.try_into().expect("four bytes")) as usize)
                .ok_or_else(|| damaged("no length"))?;
            // LZ4 expands a byte to at most 255: a damaged length is
            // refused before it is allocated.
            let most = (rest.len() - 4).saturating_mul(255).saturating_add(16);
            if claimed > most {
                return Err(damaged(format!("{claimed} bytes claimed")));
            }
            lz4_flex::block::decompress_size_prepended(rest)
                .map(Cow::Owned)
                .map_err(damaged)
        }
        _ => Err(Error::internal(
            "a change history entry of an unknown version",
        )),
    }
}

/// Decodes a record or checkpoint.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    decode_payload(&payload(bytes)?)
}

/// Decodes a record or checkpoint from its [`payload`].
pub fn decode_payload<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T> {
    postcard::from_bytes(payload).map_err(damaged)
}

/// The subject of a record, from its [`payload`], read without the rest.
pub fn subject_in(payload: &[u8]) -> Result<Subject> {
    // The subject is a record's first field.
    postcard::take_from_bytes::<Subject>(payload)
        .map(|(subject, _)| subject)
        .map_err(damaged)
}

/// How many bytes an encoded entry's postcard takes once decompressed,
/// as its length says (for an entry too short to say, its own length):
/// what a decoded record is budgeted by in memory.
pub fn decoded_len(bytes: &[u8]) -> usize {
    match bytes.split_first() {
        Some((&VERSION_LZ4, rest)) if rest.len() >= 4 => {
            u32::from_le_bytes(rest[..4].try_into().expect("four bytes")) as usize
        }
        _ => bytes.len(),
    }
}

/// The subject and the evaluation time of an encoded record, read
/// without its changes.
pub fn head_of(bytes: &[u8]) -> Result<(Subject, i64)> {
    // They are a record's first two fields.
    postcard::take_from_bytes::<(Subject, i64)>(&payload(bytes)?)
        .map(|(head, _)| head)
        .map_err(damaged)
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
        assert_eq!(
            subject_in(&payload(&bytes).unwrap()).unwrap(),
            record.subject
        );
        assert_eq!(bytes[0], VERSION, "a short record is not compressed");
        let mut newer = bytes.clone();
        newer[0] = VERSION_LZ4 + 1;
        assert!(decode::<Record>(&newer).is_err());
        assert!(decode::<Record>(&bytes[..bytes.len() - 1]).is_err());
    }

    /// An import's record: a persona change for each of many customers.
    fn long_record() -> Record {
        Record {
            subject: Subject::Personas,
            at: 1_700_000_000_000_000_000,
            changes: (0..5000)
                .map(|n| Change {
                    customer: format!("c{n:07}"),
                    entered: true,
                    from: ["", "new_customer"][n % 2].into(),
                    to: ["loyal_regular", "one_time_buyer"][n % 2].into(),
                    cause: Cause::Activity,
                })
                .collect(),
            rule: None,
            ended: false,
        }
    }

    #[test]
    fn long_records_are_compressed_and_read_back_whole() {
        let record = long_record();
        let plain = postcard::to_allocvec(&record).unwrap();
        let bytes = encode(&record).unwrap();
        assert_eq!(bytes[0], VERSION_LZ4);
        assert!(
            bytes.len() * 3 < plain.len(),
            "{} bytes from {}",
            bytes.len(),
            plain.len()
        );
        assert_eq!(decode::<Record>(&bytes).unwrap(), record);
        assert_eq!(head_of(&bytes).unwrap(), (Subject::Personas, record.at));
        assert_eq!(decoded_len(&bytes), plain.len());
        // An entry written uncompressed, as earlier builds did, still reads.
        let mut earlier = vec![VERSION];
        earlier.extend_from_slice(&plain);
        assert_eq!(decode::<Record>(&earlier).unwrap(), record);
        assert_eq!(head_of(&earlier).unwrap(), (Subject::Personas, record.at));
    }

    #[test]
    fn a_checkpoint_reads_in_place_as_written() {
        let checkpoint = Checkpoint {
            subject: Subject::Personas,
            seq: 41,
            rule: "3".into(),
            members: (0..2000)
                .map(|n| (format!("c{n:07}"), "loyal_regular".to_owned()))
                .collect(),
        };
        let bytes = encode(&checkpoint).unwrap();
        assert_eq!(bytes[0], VERSION_LZ4);
        let payload = payload(&bytes).unwrap();
        let view = view(&payload).unwrap();
        assert_eq!(
            (view.subject, view.seq, view.rule),
            (checkpoint.subject, checkpoint.seq, checkpoint.rule)
        );
        let members: Vec<(String, String)> = view
            .members
            .iter()
            .map(|&(id, persona)| (id.to_owned(), persona.to_owned()))
            .collect();
        assert_eq!(members, checkpoint.members);
    }

    #[test]
    fn damaged_compressed_entries_are_refused_without_a_panic() {
        let bytes = encode(&long_record()).unwrap();
        // Cut short, anywhere.
        for end in [0, 1, 3, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode::<Record>(&bytes[..end]).is_err(), "cut at {end}");
        }
        // A length no such entry could expand to is refused before it is
        // allocated.
        let mut huge = bytes.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(payload(&huge).is_err());
        // Flipped bytes give an error or another record, never a panic.
        for at in (1..bytes.len()).step_by(97) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x5a;
            let _ = decode::<Record>(&flipped);
        }
    }
}
