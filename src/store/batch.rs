//! Activity batches in store format 2: the fields the index needs as
//! fixed-width columns, so that a rebuild reads them in place and places
//! every event by its customer's number; then the rest, which only a read
//! of the events themselves needs, in a tail.
//!
//! | bytes | what |
//! |-------|------|
//! | 1     | the version byte, 2 |
//! | 4     | `p`, the purchases |
//! | 4     | `e`, the engagement events |
//! | 4·p   | each purchase's customer number, [`ERASED`] where erased |
//! | 8·p   | each purchase's time, nanoseconds since the epoch |
//! | 8·p   | each purchase's amount in minor units |
//! | 8·p   | each purchase's id key ([`event_key`]) |
//! | 4·e   | each engagement event's customer number |
//! | 8·e   | each engagement event's time |
//! | 8·e   | each engagement event's id key |
//! | e     | each engagement event's kind: 0 visit, 1 feedback, 2 referral |
//! | rest  | the tail: postcard [`Tail`], compressed with LZ4 (block format, its length first) |
//!
//! Integers are little-endian. The tail is compressed, as its ids and
//! names repeat much from one event to the next; the columns are not, so
//! that a rebuild reads them in place. An erased event keeps its place, so that
//! the positions of the others, which the index refers to, stay put; its
//! number is [`ERASED`], its other columns are zero and its tail is empty.

use serde::{Deserialize, Serialize};

use crate::domain::{
    ActivityRecord, CustomerId, Engagement, EngagementKind, Error, EventId, ProductDurability,
    Purchase, Result, Timestamp,
};

/// The version byte of an activity batch in this layout.
pub const ACTIVITY_V2: u8 = 2;

/// The customer number of an erased event.
pub const ERASED: u32 = u32::MAX;

/// The bytes before the columns: the version, then the two counts.
const HEADER: usize = 1 + 4 + 4;

/// The most bytes a tail may claim to expand to: far more than any batch
/// the service writes holds, and a bound on what a corrupt one allocates.
const MAX_TAIL_BYTES: usize = 1 << 30;

/// A 64-bit hash of an event id, kept with each stored event: equal ids
/// have equal keys, and equal keys are checked against the stored ids.
/// XXH3 is a specified hash, so keys stored by one build hold for the next.
pub fn event_key(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// The varying fields of a batch's events, by position.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Tail<'a> {
    /// The categories the purchases name.
    #[serde(borrow)]
    categories: Vec<&'a str>,
    /// The channels the engagement events name.
    #[serde(borrow)]
    channels: Vec<&'a str>,
    /// By purchase.
    #[serde(borrow)]
    purchases: Vec<PurchaseTail<'a>>,
    /// By engagement event.
    #[serde(borrow)]
    engagements: Vec<EngagementTail<'a>>,
}

/// A purchase's varying fields.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct PurchaseTail<'a> {
    /// The purchase id.
    id: &'a str,
    /// Items bought.
    quantity: u32,
    /// Its category, as a place in [`Tail::categories`].
    category: u32,
    /// How long the product lasts.
    durability: ProductDurability,
}

/// An engagement event's varying fields.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct EngagementTail<'a> {
    /// The event id.
    id: &'a str,
    /// Net Promoter Score.
    nps_score: Option<u8>,
    /// Its channel, as a place in [`Tail::channels`].
    channel: u32,
}

/// Numbers strings in order of first use.
#[derive(Default)]
struct Interner<'a> {
    strings: Vec<&'a str>,
    places: std::collections::HashMap<&'a str, u32>,
}

impl<'a> Interner<'a> {
    fn place(&mut self, string: &'a str) -> u32 {
        *self.places.entry(string).or_insert_with(|| {
            self.strings.push(string);
            (self.strings.len() - 1) as u32
        })
    }
}

/// One event's fixed columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    /// The customer's number; [`ERASED`] for an erased event.
    pub customer: u32,
    /// Nanoseconds since the epoch.
    pub time: i64,
    /// The amount in minor units; 0 for an engagement event.
    pub amount: i64,
    /// The id's key.
    pub key: u64,
}

fn kind_byte(kind: EngagementKind) -> u8 {
    match kind {
        EngagementKind::Visit => 0,
        EngagementKind::Feedback => 1,
        EngagementKind::Referral => 2,
    }
}

fn kind_of(byte: u8) -> Result<EngagementKind> {
    match byte {
        0 => Ok(EngagementKind::Visit),
        1 => Ok(EngagementKind::Feedback),
        2 => Ok(EngagementKind::Referral),
        other => Err(corrupt(format!("engagement kind {other}"))),
    }
}

/// The string at `at` of a tail's table.
fn string_at<'s>(strings: &[&'s str], at: u32) -> Result<&'s str> {
    strings
        .get(at as usize)
        .copied()
        .ok_or_else(|| corrupt("a string out of range"))
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::internal(format!("corrupt activity batch: {what}"))
}

/// Encodes `record`, whose events' customers have the numbers in
/// `purchase_customers` and `engagement_customers` (by position; an erased
/// event's number is ignored).
pub fn encode(
    record: &ActivityRecord,
    purchase_customers: &[u32],
    engagement_customers: &[u32],
) -> Result<Vec<u8>> {
    if purchase_customers.len() != record.purchases.len()
        || engagement_customers.len() != record.engagements.len()
    {
        return Err(Error::internal(
            "an activity batch needs one customer number per event",
        ));
    }
    let (p, e) = (record.purchases.len(), record.engagements.len());
    let mut bytes = Vec::with_capacity(HEADER + 28 * p + 29 * e + 24 * (p + e));
    bytes.push(ACTIVITY_V2);
    bytes.extend_from_slice(&(p as u32).to_le_bytes());
    bytes.extend_from_slice(&(e as u32).to_le_bytes());
    let purchases: Vec<Option<Fixed>> = record
        .purchases
        .iter()
        .zip(purchase_customers)
        .map(|(purchase, &customer)| {
            purchase.as_ref().map(|purchase| Fixed {
                customer,
                time: purchase.occurred_at.as_nanos(),
                amount: purchase.amount_minor,
                key: event_key(purchase.id.as_str()),
            })
        })
        .collect();
    let engagements: Vec<Option<Fixed>> = record
        .engagements
        .iter()
        .zip(engagement_customers)
        .map(|(engagement, &customer)| {
            engagement.as_ref().map(|engagement| Fixed {
                customer,
                time: engagement.occurred_at.as_nanos(),
                amount: 0,
                key: event_key(engagement.id.as_str()),
            })
        })
        .collect();
    put_fixed(&mut bytes, &purchases, true);
    put_fixed(&mut bytes, &engagements, false);
    bytes.extend(record.engagements.iter().map(|engagement| {
        engagement
            .as_ref()
            .map_or(0, |engagement| kind_byte(engagement.kind))
    }));
    let mut categories = Interner::default();
    let mut channels = Interner::default();
    let tail = Tail {
        purchases: record
            .purchases
            .iter()
            .map(|purchase| {
                purchase
                    .as_ref()
                    .map_or_else(PurchaseTail::default, |p| PurchaseTail {
                        id: p.id.as_str(),
                        quantity: p.quantity,
                        category: categories.place(&p.category),
                        durability: p.durability,
                    })
            })
            .collect(),
        engagements: record
            .engagements
            .iter()
            .map(|engagement| {
                engagement
                    .as_ref()
                    .map_or_else(EngagementTail::default, |e| EngagementTail {
                        id: e.id.as_str(),
                        nps_score: e.nps_score,
                        channel: channels.place(&e.channel),
                    })
            })
            .collect(),
        categories: categories.strings,
        channels: channels.strings,
    };
    put_tail(&mut bytes, &tail)?;
    Ok(bytes)
}

/// Appends `tail`, compressed.
fn put_tail(bytes: &mut Vec<u8>, tail: &Tail<'_>) -> Result<()> {
    let plain = postcard::to_stdvec(tail).map_err(Error::internal)?;
    bytes.extend_from_slice(&lz4_flex::block::compress_prepend_size(&plain));
    Ok(())
}

/// Appends the fixed columns of `events` (the amounts only for
/// purchases); an absent event is erased.
fn put_fixed(bytes: &mut Vec<u8>, events: &[Option<Fixed>], amounts: bool) {
    let erased = Fixed {
        customer: ERASED,
        time: 0,
        amount: 0,
        key: 0,
    };
    let each = || events.iter().map(|event| event.unwrap_or(erased));
    bytes.extend(each().flat_map(|event| event.customer.to_le_bytes()));
    bytes.extend(each().flat_map(|event| event.time.to_le_bytes()));
    if amounts {
        bytes.extend(each().flat_map(|event| event.amount.to_le_bytes()));
    }
    bytes.extend(each().flat_map(|event| event.key.to_le_bytes()));
}

/// A stored batch read in place: its fixed columns, and its tail on demand.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    bytes: &'a [u8],
    purchases: usize,
    engagements: usize,
}

impl<'a> Columns<'a> {
    /// Reads the layout of a stored batch, checking that its columns are
    /// all there.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        match bytes.first() {
            Some(&ACTIVITY_V2) => {}
            Some(other) => {
                return Err(Error::internal(format!(
                    "activity batch has unknown codec version {other}"
                )))
            }
            None => return Err(Error::internal("empty activity batch")),
        }
        if bytes.len() < HEADER {
            return Err(corrupt("short header"));
        }
        let count = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let columns = Columns {
            bytes,
            purchases: count(1),
            engagements: count(5),
        };
        if columns.tail_start() > bytes.len() {
            return Err(corrupt("short columns"));
        }
        Ok(columns)
    }

    /// Purchases in the batch, erased ones included.
    pub fn purchases(&self) -> usize {
        self.purchases
    }

    /// Engagement events in the batch, erased ones included.
    pub fn engagements(&self) -> usize {
        self.engagements
    }

    fn u32_at(&self, column: usize, i: usize) -> u32 {
        let at = column + 4 * i;
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap())
    }

    fn u64_at(&self, column: usize, i: usize) -> u64 {
        let at = column + 8 * i;
        u64::from_le_bytes(self.bytes[at..at + 8].try_into().unwrap())
    }

    /// Where the engagement columns start.
    fn engagement_start(&self) -> usize {
        HEADER + 28 * self.purchases
    }

    fn tail_start(&self) -> usize {
        self.engagement_start() + 21 * self.engagements
    }

    /// Purchase `i`'s customer number, read alone; `i` is below
    /// [`Columns::purchases`].
    pub fn purchase_customer(&self, i: usize) -> u32 {
        self.u32_at(HEADER, i)
    }

    /// Engagement event `i`'s customer number, read alone; `i` is below
    /// [`Columns::engagements`].
    pub fn engagement_customer(&self, i: usize) -> u32 {
        self.u32_at(self.engagement_start(), i)
    }

    /// Purchase `i`'s fixed columns; `i` is below [`Columns::purchases`].
    pub fn purchase(&self, i: usize) -> Fixed {
        let p = self.purchases;
        Fixed {
            customer: self.u32_at(HEADER, i),
            time: self.u64_at(HEADER + 4 * p, i) as i64,
            amount: self.u64_at(HEADER + 12 * p, i) as i64,
            key: self.u64_at(HEADER + 20 * p, i),
        }
    }

    /// Engagement event `i`'s fixed columns and kind; `i` is below
    /// [`Columns::engagements`]. The kind of an erased event is a visit.
    pub fn engagement(&self, i: usize) -> Result<(Fixed, EngagementKind)> {
        let (start, e) = (self.engagement_start(), self.engagements);
        let fixed = Fixed {
            customer: self.u32_at(start, i),
            time: self.u64_at(start + 4 * e, i) as i64,
            amount: 0,
            key: self.u64_at(start + 12 * e, i),
        };
        Ok((fixed, kind_of(self.bytes[start + 20 * e + i])?))
    }

    /// The tail's bytes, decompressed; [`Columns::tail`] reads them.
    fn tail_bytes(&self) -> Result<Vec<u8>> {
        let compressed = &self.bytes[self.tail_start()..];
        let claimed = compressed
            .get(..4)
            .map(|size| u32::from_le_bytes(size.try_into().expect("four bytes")) as usize)
            .ok_or_else(|| corrupt("no tail"))?;
        // LZ4 expands a byte to at most 255.
        let most = (compressed.len() - 4)
            .saturating_mul(255)
            .saturating_add(16);
        if claimed > MAX_TAIL_BYTES.min(most) {
            return Err(corrupt(format!("a tail of {claimed} bytes")));
        }
        lz4_flex::block::decompress_size_prepended(compressed).map_err(corrupt)
    }

    /// The tail, read from `bytes`, the batch's [`Columns::tail_bytes`].
    fn tail<'t>(&self, bytes: &'t [u8]) -> Result<Tail<'t>> {
        let tail: Tail<'t> = postcard::from_bytes(bytes).map_err(corrupt)?;
        if tail.purchases.len() != self.purchases || tail.engagements.len() != self.engagements {
            return Err(corrupt("the tail does not match the columns"));
        }
        Ok(tail)
    }

    /// The batch's events whose customer `id_of` names from their
    /// number; the others, and the erased ones, are `None`.
    pub fn decode(&self, id_of: impl Fn(u32) -> Option<CustomerId>) -> Result<ActivityRecord> {
        let bytes = self.tail_bytes()?;
        let tail = self.tail(&bytes)?;
        let string = |strings: &[&str], at: u32| string_at(strings, at).map(str::to_owned);
        let mut record = ActivityRecord::default();
        for (i, rest) in tail.purchases.iter().enumerate() {
            let fixed = self.purchase(i);
            let Some(customer) = (fixed.customer != ERASED)
                .then(|| id_of(fixed.customer))
                .flatten()
            else {
                record.purchases.push(None);
                continue;
            };
            record.purchases.push(Some(Purchase {
                id: EventId::parse(rest.id).map_err(|_| corrupt("a purchase id"))?,
                customer,
                occurred_at: Timestamp::from_nanos(fixed.time),
                amount_minor: fixed.amount,
                quantity: rest.quantity,
                category: string(&tail.categories, rest.category)?,
                durability: rest.durability,
            }));
        }
        for (i, rest) in tail.engagements.iter().enumerate() {
            let (fixed, kind) = self.engagement(i)?;
            let Some(customer) = (fixed.customer != ERASED)
                .then(|| id_of(fixed.customer))
                .flatten()
            else {
                record.engagements.push(None);
                continue;
            };
            record.engagements.push(Some(Engagement {
                id: EventId::parse(rest.id).map_err(|_| corrupt("an engagement id"))?,
                customer,
                occurred_at: Timestamp::from_nanos(fixed.time),
                kind,
                nps_score: rest.nps_score,
                channel: string(&tail.channels, rest.channel)?,
            }));
        }
        Ok(record)
    }

    /// The batch without the events of customer `number`, or `None` when
    /// no other event is left; every field of an erased event is cleared.
    pub fn erase(&self, number: u32) -> Result<Option<Vec<u8>>> {
        let bytes = self.tail_bytes()?;
        let mut tail = self.tail(&bytes)?;
        let mut left = 0;
        let mut purchases = Vec::with_capacity(self.purchases);
        for (i, rest) in tail.purchases.iter_mut().enumerate() {
            let fixed = self.purchase(i);
            if fixed.customer == number || fixed.customer == ERASED {
                *rest = PurchaseTail::default();
                purchases.push(None);
            } else {
                left += 1;
                purchases.push(Some(fixed));
            }
        }
        let mut engagements = Vec::with_capacity(self.engagements);
        let mut kinds = Vec::with_capacity(self.engagements);
        for (i, rest) in tail.engagements.iter_mut().enumerate() {
            let (fixed, kind) = self.engagement(i)?;
            if fixed.customer == number || fixed.customer == ERASED {
                *rest = EngagementTail::default();
                engagements.push(None);
                kinds.push(0);
            } else {
                left += 1;
                engagements.push(Some(fixed));
                kinds.push(kind_byte(kind));
            }
        }
        if left == 0 {
            return Ok(None);
        }
        // The strings only the erased events used go with them.
        let mut categories = Interner::default();
        for rest in tail.purchases.iter_mut().filter(|rest| !rest.id.is_empty()) {
            rest.category = categories.place(string_at(&tail.categories, rest.category)?);
        }
        let mut channels = Interner::default();
        for rest in tail
            .engagements
            .iter_mut()
            .filter(|rest| !rest.id.is_empty())
        {
            rest.channel = channels.place(string_at(&tail.channels, rest.channel)?);
        }
        tail.categories = categories.strings;
        tail.channels = channels.strings;
        let mut bytes = Vec::with_capacity(self.bytes.len());
        bytes.extend_from_slice(&self.bytes[..HEADER]);
        put_fixed(&mut bytes, &purchases, true);
        put_fixed(&mut bytes, &engagements, false);
        bytes.extend_from_slice(&kinds);
        put_tail(&mut bytes, &tail)?;
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purchase(id: &str, customer: &str, at: i64, amount: i64, category: &str) -> Purchase {
        Purchase {
            id: EventId::parse(id).unwrap(),
            customer: CustomerId::parse(customer).unwrap(),
            occurred_at: Timestamp::from_nanos(at),
            amount_minor: amount,
            quantity: 2,
            category: category.into(),
            durability: ProductDurability::Consumable,
        }
    }

    fn engagement(id: &str, customer: &str, at: i64, kind: EngagementKind) -> Engagement {
        Engagement {
            id: EventId::parse(id).unwrap(),
            customer: CustomerId::parse(customer).unwrap(),
            occurred_at: Timestamp::from_nanos(at),
            kind,
            nps_score: (kind == EngagementKind::Feedback).then_some(9),
            channel: "web".into(),
        }
    }

    fn sample() -> ActivityRecord {
        ActivityRecord {
            purchases: vec![
                Some(purchase("p-1", "c-1", 10, 1234, "books")),
                None,
                Some(purchase("p-2", "c-2", -5, -70, "toys")),
                Some(purchase("p-3", "c-1", 30, 0, "books")),
            ],
            engagements: vec![
                Some(engagement("e-1", "c-2", 11, EngagementKind::Feedback)),
                Some(engagement("e-2", "c-1", 12, EngagementKind::Referral)),
            ],
        }
    }

    fn number_of(id: &CustomerId) -> u32 {
        match id.as_str() {
            "c-1" => 7,
            "c-2" => 3,
            other => panic!("no number for {other}"),
        }
    }

    fn id_of(number: u32) -> Option<CustomerId> {
        match number {
            7 => CustomerId::parse("c-1").ok(),
            3 => CustomerId::parse("c-2").ok(),
            _ => None,
        }
    }

    fn encoded(record: &ActivityRecord) -> Vec<u8> {
        let numbers = |events: Vec<Option<&CustomerId>>| -> Vec<u32> {
            events
                .into_iter()
                .map(|id| id.map_or(ERASED, number_of))
                .collect()
        };
        let purchases = numbers(
            record
                .purchases
                .iter()
                .map(|p| p.as_ref().map(|p| &p.customer))
                .collect(),
        );
        let engagements = numbers(
            record
                .engagements
                .iter()
                .map(|e| e.as_ref().map(|e| &e.customer))
                .collect(),
        );
        encode(record, &purchases, &engagements).unwrap()
    }

    #[test]
    fn round_trips_and_reads_columns_in_place() {
        let record = sample();
        let bytes = encoded(&record);
        let columns = Columns::parse(&bytes).unwrap();
        assert_eq!((columns.purchases(), columns.engagements()), (4, 2));
        assert_eq!(
            columns.purchase(2),
            Fixed {
                customer: 3,
                time: -5,
                amount: -70,
                key: event_key("p-2")
            }
        );
        assert_eq!(columns.purchase(1).customer, ERASED);
        assert_eq!(
            (0..4)
                .map(|i| columns.purchase_customer(i))
                .collect::<Vec<_>>(),
            [7, ERASED, 3, 7]
        );
        assert_eq!(
            (0..2)
                .map(|i| columns.engagement_customer(i))
                .collect::<Vec<_>>(),
            [3, 7]
        );
        let (fixed, kind) = columns.engagement(1).unwrap();
        assert_eq!(
            (fixed.customer, fixed.time, kind),
            (7, 12, EngagementKind::Referral)
        );
        assert_eq!(columns.decode(id_of).unwrap(), record);
    }

    #[test]
    fn erasing_clears_the_customers_events_and_keeps_the_places() {
        let bytes = encoded(&sample());
        let erased = Columns::parse(&bytes).unwrap().erase(7).unwrap().unwrap();
        let columns = Columns::parse(&erased).unwrap();
        let record = columns.decode(id_of).unwrap();
        let mut expected = sample();
        expected.purchases[0] = None;
        expected.purchases[3] = None;
        expected.engagements[1] = None;
        assert_eq!(record, expected);
        // Nothing of the erased customer's is left in the bytes.
        let plain = columns.tail_bytes().unwrap();
        for gone in ["p-1", "p-3", "e-2", "books"] {
            for bytes in [&erased, &plain] {
                assert!(
                    !bytes.windows(gone.len()).any(|w| w == gone.as_bytes()),
                    "{gone} is still stored"
                );
            }
        }
        assert_eq!(columns.purchase(0).time, 0);
        assert!(Columns::parse(&erased).unwrap().erase(3).unwrap().is_none());
    }

    #[test]
    fn a_tail_that_claims_too_many_bytes_is_refused_before_it_is_made() {
        let mut bytes = encoded(&sample());
        let at = Columns::parse(&bytes).unwrap().tail_start();
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = Columns::parse(&bytes).unwrap().decode(id_of).unwrap_err();
        assert!(error.to_string().contains("a tail of"), "{error}");
    }

    #[test]
    fn a_string_out_of_range_is_an_error_when_read_or_erased() {
        let record = ActivityRecord {
            purchases: vec![Some(purchase("p-1", "c-1", 10, 5, "books"))],
            engagements: vec![],
        };
        let bytes = encoded(&record);
        let columns = Columns::parse(&bytes).unwrap();
        // The same tail, naming a category the table does not have.
        let plain = columns.tail_bytes().unwrap();
        let mut tail = columns.tail(&plain).unwrap();
        tail.purchases[0].category = 5;
        let mut corrupt = bytes[..columns.tail_start()].to_vec();
        put_tail(&mut corrupt, &tail).unwrap();
        let columns = Columns::parse(&corrupt).unwrap();
        for error in [
            columns.decode(id_of).unwrap_err(),
            columns.erase(3).unwrap_err(),
        ] {
            assert!(error.to_string().contains("out of range"), "{error}");
        }
    }

    #[test]
    fn refuses_garbage() {
        assert!(Columns::parse(&[]).is_err());
        assert!(Columns::parse(&[1, 0, 0]).is_err());
        assert!(Columns::parse(&[ACTIVITY_V2, 5, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut bytes = encoded(&sample());
        bytes.truncate(bytes.len() - 3);
        assert!(Columns::parse(&bytes).unwrap().decode(id_of).is_err());
        let bytes = encoded(&sample());
        let none = Columns::parse(&bytes).unwrap().decode(|_| None).unwrap();
        assert!(none.is_erased());
        let only_7 = Columns::parse(&bytes)
            .unwrap()
            .decode(|n| (n == 7).then(|| id_of(n)).flatten())
            .unwrap();
        assert_eq!(only_7.purchases.iter().flatten().count(), 2);
        assert_eq!(only_7.engagements.iter().flatten().count(), 1);
    }

    /// Fails when the layout changes: add a version instead.
    #[test]
    fn version_2_layout_is_stable() {
        let record = ActivityRecord {
            purchases: vec![Some(purchase("p", "c-1", 1, 2, "b"))],
            engagements: vec![Some(engagement("e", "c-2", 3, EngagementKind::Visit))],
        };
        let key_p = event_key("p").to_le_bytes();
        let key_e = event_key("e").to_le_bytes();
        let mut golden = vec![2, 1, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0];
        golden.extend_from_slice(&1i64.to_le_bytes());
        golden.extend_from_slice(&2i64.to_le_bytes());
        golden.extend_from_slice(&key_p);
        golden.extend_from_slice(&[3, 0, 0, 0]);
        golden.extend_from_slice(&3i64.to_le_bytes());
        golden.extend_from_slice(&key_e);
        golden.push(0);
        // The tail: categories ["b"], channels ["web"], the purchase
        // ("p", 2, 0, consumable), the event ("e", none, 0); compressed
        // as an LZ4 block after its length.
        let plain = [
            1, 1, b'b', 1, 3, b'w', b'e', b'b', 1, 1, b'p', 2, 0, 2, 1, 1, b'e', 0, 0,
        ];
        golden.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        // One sequence of literals only: a token of 19 literals (15, then
        // 4 more), the literals.
        golden.extend_from_slice(&[0xF0, 4]);
        golden.extend_from_slice(&plain);
        assert_eq!(encoded(&record), golden);
        // The key is XXH3-64, which stored keys depend on.
        assert_eq!(event_key(""), 0x2d06_8005_38d3_94c2);
    }
}
