//! Segmentation: breakdowns, previews, saved segments, member lists and
//! exports, all answered from the feature index as of an evaluation time.

use std::collections::HashMap;

use super::frame::Frame;
use rayon::prelude::*;

use super::bits::Bits;
use super::command::{expect_outcome, Command, Outcome};
use super::select::{
    consented, dimension_codes, dimension_is_whole, eval, select, split_objectors, Coded, Codes,
    Span,
};
use super::{Engine, Shared};
use crate::domain::rules::{compile, Channel, Predicate, Variable};
use crate::domain::segment::{Segment, SegmentChanges, SegmentId};
use crate::domain::{Error, Result, Timestamp};

/// Up to this many combinations of dimension values, a breakdown sums into
/// dense counters; beyond, into a map.
const DENSE_GROUPS: u64 = 1 << 16;

/// The most dimensions one breakdown may group by.
pub const MAX_DIMENSIONS: usize = 4;

/// The customers who share one value of each dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// One value per dimension; empty where absent.
    pub values: Vec<String>,
    /// Customers.
    pub count: u64,
    /// Their total spend, in minor units.
    pub spend_minor: i128,
    /// Their purchases.
    pub purchases: u64,
}

/// A breakdown.
#[derive(Debug, Clone)]
pub struct Breakdown {
    /// The groups, largest first, then by values.
    pub groups: Vec<Group>,
    /// Customers selected, objectors left out.
    pub total: u64,
    /// Customers selected who object to profiling.
    pub excluded: u64,
    /// The evaluation time.
    pub at: Timestamp,
}

/// A preview of a filter.
#[derive(Debug, Clone)]
pub struct Preview {
    /// Members, objectors left out.
    pub members: u64,
    /// Selected customers who object to profiling.
    pub excluded: u64,
    /// The first members in id order.
    pub sample: Vec<String>,
    /// With a saved segment: members under the filter who are not now.
    pub entering: u64,
    /// With a saved segment: members now who would not be under the filter.
    pub leaving: u64,
    /// The evaluation time.
    pub at: Timestamp,
}

/// One page of members.
#[derive(Debug, Clone)]
pub struct MemberPage {
    /// Customer ids in id order.
    pub ids: Vec<String>,
    /// Whether more follow.
    pub more: bool,
    /// Members in all.
    pub total: u64,
}

/// Compiles a filter; an empty one selects everyone. The error says where
/// and what is wrong.
pub fn compile_filter(source: &str) -> std::result::Result<Predicate, String> {
    if source.trim().is_empty() {
        return Ok(Predicate::Const(true));
    }
    compile(source).map_err(|error| format!("at character {}: {}", error.position, error.message))
}

/// The etag of a segment: changes on every write of it, as a customer's
/// does.
pub fn segment_etag(segment: &Segment) -> String {
    format!("{:x}", segment.update_time.as_nanos())
}

/// An etag mismatch unless `expected` is unset or the segment's etag.
pub(super) fn check_etag(segment: &Segment, expected: Option<&str>) -> Result<()> {
    match expected {
        Some(etag) if etag != segment_etag(segment) => {
            Err(Error::etag_mismatch(segment.id.name(), etag))
        }
        _ => Ok(()),
    }
}

/// A stored segment's rule, compiled: everyone for an empty filter, as
/// `compile_filter` reads it; a filter that no longer compiles is an
/// internal error.
pub(super) fn stored_rule(segment: &Segment) -> Result<Predicate> {
    if segment.filter.trim().is_empty() {
        return Ok(Predicate::Const(true));
    }
    compile(&segment.filter).map_err(|error| {
        Error::internal(format!(
            "stored filter of {} no longer compiles: {}",
            segment.id.name(),
            error.message
        ))
    })
}

/// The ids of the rows set in `bits` that come after `after`, the
/// `limit` smallest, in order; and how many such rows there are.
pub(super) fn smallest_ids(
    frame: &Frame<'_>,
    bits: &Bits,
    after: Option<&str>,
    limit: usize,
) -> (Vec<String>, usize) {
    let mut ids: Vec<&str> = bits
        .rows()
        .map(|row| frame.index.id_at(row as u32))
        .filter(|id| after.is_none_or(|after| *id > after))
        .collect();
    let found = ids.len();
    if ids.len() > limit {
        ids.select_nth_unstable(limit);
        ids.truncate(limit);
    }
    ids.sort_unstable();
    (ids.into_iter().map(str::to_owned).collect(), found)
}

/// Rows decided and grouped together: 16 Ki, 128 KiB of group keys.
const BLOCK_ROWS: usize = 1 << 14;

/// Adds `code × stride` to each row's group key.
fn add_codes<C: Copy + Into<u64>>(keys: &mut [u64], codes: &[C], stride: u64) {
    for (key, &code) in keys.iter_mut().zip(codes) {
        *key += code.into() * stride;
    }
}

/// What one group's members add up to.
#[derive(Default, Clone, Copy)]
pub(super) struct Sums {
    pub(super) count: u64,
    pub(super) spend: i128,
    pub(super) purchases: u64,
}

impl Sums {
    fn merge(&mut self, other: &Sums) {
        self.count += other.count;
        self.spend += other.spend;
        self.purchases += other.purchases;
    }
}

/// Up to this many combinations of codes, a tally keeps its counters in
/// [`LANES`] lanes.
const LANED_GROUPS: u64 = 1 << 12;

/// The lanes of laned counters: consecutive members go to consecutive
/// lanes, so that members of one group in a row do not each wait for the
/// sums of the one before.
const LANES: usize = 4;

// Laned counters are settled into the dense ones.
const _: () = assert!(LANED_GROUPS <= DENSE_GROUPS);

/// One lane of a group's counters: its spend in an `i64`, moved to the
/// group's `i128` when one more would overflow it.
#[derive(Default, Clone, Copy)]
struct Lane {
    count: u64,
    spend: i64,
    purchases: u64,
}

/// The sums of a breakdown's groups by group key, and how many members and
/// objectors it met: counters in lanes when the combinations of codes are
/// few, dense counters when they are more, a map when they are many.
pub(super) struct Tally {
    members: u64,
    objectors: u64,
    lanes: Vec<Lane>,
    dense: Vec<Sums>,
    sparse: HashMap<u64, Sums>,
}

impl Tally {
    pub(super) fn new(combinations: u64) -> Self {
        let dense = if combinations <= DENSE_GROUPS {
            vec![Sums::default(); combinations as usize]
        } else {
            Vec::new()
        };
        let lanes = if combinations <= LANED_GROUPS {
            vec![Lane::default(); combinations as usize * LANES]
        } else {
            Vec::new()
        };
        Tally {
            members: 0,
            objectors: 0,
            lanes,
            dense,
            sparse: HashMap::new(),
        }
    }

    /// Adds each member of a block, whose rows start at `start`, to the
    /// group of its key, `keys` holding one per row of the block: a loop
    /// for each kind of counter.
    pub(super) fn add<K: Copy + Into<u64>>(
        &mut self,
        members: &Bits,
        keys: &[K],
        start: usize,
        total: &[i64],
        count: &[u32],
    ) {
        self.add_places(members.rows(), keys, start, total, count);
    }

    /// Adds the rows at `places` of a block, whose rows start at `start`,
    /// to the group of each one's key, `keys` holding one per row of the
    /// block: [`Tally::add`] for its members, or every row of the block,
    /// with no bits to walk, when the rows a caller leaves out have a key
    /// of their own whose sums it ignores.
    pub(super) fn add_places<K: Copy + Into<u64>>(
        &mut self,
        places: impl Iterator<Item = usize>,
        keys: &[K],
        start: usize,
        total: &[i64],
        count: &[u32],
    ) {
        fn add_to(sums: &mut Sums, total: i64, count: u32) {
            sums.count += 1;
            sums.spend += i128::from(total);
            sums.purchases += u64::from(count);
        }
        let (total, count) = (&total[start..], &count[start..]);
        if !self.lanes.is_empty() {
            for (nth, place) in places.enumerate() {
                let key = keys[place].into() as usize;
                let lane = &mut self.lanes[key * LANES + nth % LANES];
                lane.count += 1;
                lane.purchases += u64::from(count[place]);
                match lane.spend.checked_add(total[place]) {
                    Some(spend) => lane.spend = spend,
                    None => {
                        self.dense[key].spend += i128::from(lane.spend) + i128::from(total[place]);
                        lane.spend = 0;
                    }
                }
            }
        } else if !self.dense.is_empty() {
            for place in places {
                add_to(
                    &mut self.dense[keys[place].into() as usize],
                    total[place],
                    count[place],
                );
            }
        } else {
            for place in places {
                let sums = self.sparse.entry(keys[place].into()).or_default();
                add_to(sums, total[place], count[place]);
            }
        }
    }

    /// Moves the lanes' counts into the dense counters.
    fn settle(&mut self) {
        for (sums, lanes) in self.dense.iter_mut().zip(self.lanes.chunks_exact(LANES)) {
            for lane in lanes {
                sums.count += lane.count;
                sums.spend += i128::from(lane.spend);
                sums.purchases += lane.purchases;
            }
        }
        self.lanes.fill(Lane::default());
    }

    pub(super) fn merge(mut self, mut other: Tally) -> Tally {
        self.settle();
        other.settle();
        self.members += other.members;
        self.objectors += other.objectors;
        for (mine, theirs) in self.dense.iter_mut().zip(&other.dense) {
            mine.merge(theirs);
        }
        for (key, theirs) in &other.sparse {
            self.sparse.entry(*key).or_default().merge(theirs);
        }
        self
    }

    /// The groups with members, by key.
    pub(super) fn groups(mut self) -> impl Iterator<Item = (u64, Sums)> {
        self.settle();
        let dense = self.dense.into_iter().enumerate();
        dense
            .map(|(key, sums)| (key as u64, sums))
            .chain(self.sparse)
            .filter(|(_, sums)| sums.count > 0)
    }
}

fn breakdown(
    shared: &Shared,
    dimensions: &[Variable],
    rule: &Predicate,
    at: Timestamp,
) -> Breakdown {
    let index = shared.long_index();
    grouped(
        &Frame::new(&index, at, shared.settings.thresholds),
        dimensions,
        rule,
        at,
    )
}

/// The breakdown of `frame`'s rows that meet `rule` by `dimensions`.
///
/// A breakdown is decided and summed a block of rows at a time, each block
/// on one core: the rule, the members, their group keys and their sums, so
/// that a block's columns are read from memory once; the classes, stages
/// and codes a block can make for itself are not made for the whole index
/// (those it cannot, such as the classes of a past frame, are, before the
/// blocks run). A rule that reads a trait is decided over every row first,
/// as are a dimension's codes when they are the index's own column or a
/// trait's (see `dimension_is_whole`).
fn grouped(
    frame: &Frame<'_>,
    dimensions: &[Variable],
    rule: &Predicate,
    at: Timestamp,
) -> Breakdown {
    let started = std::time::Instant::now();
    let whole = Span::whole(frame);
    let empty = Span::block(0..0);
    // A pass over an empty block makes the columns of the whole index that
    // a rule or a dimension reads, so that the blocks, in parallel, only
    // read them.
    let whole_rule = if rule.reads(&|variable| matches!(variable, Variable::Trait(_))) {
        Some(eval(frame, rule, &whole))
    } else {
        eval(frame, rule, &empty);
        None
    };
    let coded: Vec<(Coded<'_>, bool)> = dimensions
        .iter()
        .map(|dimension| {
            let is_whole = dimension_is_whole(dimension);
            let span = if is_whole { &whole } else { &empty };
            (dimension_codes(frame, span, dimension), is_whole)
        })
        .collect();
    let (alive, objects) = (frame.alive(), &frame.index.columns().objects);
    let (count, total) = (frame.count(), frame.total());
    // Each combination of codes is one number.
    let strides: Vec<u64> = coded
        .iter()
        .scan(1u64, |stride, (dimension, _)| {
            let mine = *stride;
            *stride = stride.saturating_mul(dimension.names.len() as u64);
            Some(mine)
        })
        .collect();
    let combinations = coded.iter().fold(1u64, |product, (dimension, _)| {
        product.saturating_mul(dimension.names.len() as u64)
    });
    let block = |(mut tally, mut keys): (Tally, Vec<u64>), block: usize| {
        let start = block * BLOCK_ROWS;
        let rows = start..(start + BLOCK_ROWS).min(frame.rows());
        let span = Span::block(rows.clone());
        let mut members = match &whole_rule {
            Some(bits) => bits.span(rows.clone()),
            None => eval(frame, rule, &span),
        };
        members.and(&alive.span(rows.clone()));
        let mut objectors = Bits::from_values(&objects[rows.clone()], |&objects| objects);
        objectors.and(&members);
        members.and_not(&objectors);
        tally.members += members.count() as u64;
        tally.objectors += objectors.count() as u64;
        if members.is_empty() {
            return (tally, keys);
        }
        keys.clear();
        keys.resize(rows.len(), 0);
        for ((dimension, (whole, is_whole)), &stride) in dimensions.iter().zip(&coded).zip(&strides)
        {
            if *is_whole {
                add_span(&mut keys, &whole.codes, rows.clone(), stride);
            } else {
                let mine = dimension_codes(frame, &span, dimension);
                debug_assert_eq!(mine.names.len(), whole.names.len());
                add_span(&mut keys, &mine.codes, 0..rows.len(), stride);
            }
        }
        tally.add(&members, &keys, start, total, count);
        (tally, keys)
    };
    let tally = (0..frame.rows().div_ceil(BLOCK_ROWS))
        .into_par_iter()
        .fold(|| (Tally::new(combinations), Vec::new()), block)
        .map(|(tally, _)| tally)
        .reduce(|| Tally::new(combinations), Tally::merge);
    tracing::debug!(total_us = started.elapsed().as_micros() as u64, "breakdown");
    let (members, objectors) = (tally.members, tally.objectors);
    let mut groups: Vec<Group> = tally
        .groups()
        .map(|(key, sums)| Group {
            values: coded
                .iter()
                .zip(&strides)
                .map(|((dimension, _), stride)| {
                    let code = (key / stride) % dimension.names.len() as u64;
                    dimension.names[code as usize].clone()
                })
                .collect(),
            count: sums.count,
            spend_minor: sums.spend,
            purchases: sums.purchases,
        })
        .collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.values.cmp(&b.values)));
    Breakdown {
        groups,
        total: members,
        excluded: objectors,
        at,
    }
}

/// Adds `code × stride` to each row's group key, for the codes of `rows`.
fn add_span(keys: &mut [u64], codes: &Codes<'_>, rows: std::ops::Range<usize>, stride: u64) {
    match codes {
        Codes::Narrow(codes) => add_codes(keys, &codes[rows], stride),
        Codes::Wide(codes) => add_codes(keys, &codes[rows], stride),
    }
}

pub(super) fn read_segment(shared: &Shared, id: &SegmentId) -> Result<Segment> {
    shared
        .store
        .get_segment(id)?
        .ok_or_else(|| Error::NotFound(id.name()))
}

impl Engine {
    /// Groups the customers `rule` selects by `dimensions`, as of `at`.
    pub async fn breakdown(
        &self,
        dimensions: Vec<Variable>,
        rule: Predicate,
        at: Timestamp,
    ) -> Result<Breakdown> {
        self.scan(move |shared| Ok(breakdown(shared, &dimensions, &rule, at)))
            .await
    }

    /// Counts and samples what `rule` selects; with `compare`, how many
    /// would enter and leave that segment.
    pub async fn preview(
        &self,
        rule: Predicate,
        at: Timestamp,
        sample: usize,
        compare: Option<SegmentId>,
    ) -> Result<Preview> {
        self.scan(move |shared| {
            let current = compare
                .map(|id| read_segment(shared, &id).and_then(|segment| stored_rule(&segment)))
                .transpose()?;
            let index = shared.long_index();
            let frame = Frame::new(&index, at, shared.settings.thresholds);
            let (members, objectors) = split_objectors(&frame, &select(&frame, &rule));
            let (mut entering, mut leaving) = (0, 0);
            if let Some(current) = current {
                let (now, _) = split_objectors(&frame, &select(&frame, &current));
                let mut entered = members.clone();
                entered.and_not(&now);
                let mut left = now;
                left.and_not(&members);
                (entering, leaving) = (entered.count() as u64, left.count() as u64);
            }
            let (sample, _) = smallest_ids(&frame, &members, None, sample);
            Ok(Preview {
                members: members.count() as u64,
                excluded: objectors.count() as u64,
                sample,
                entering,
                leaving,
                at,
            })
        })
        .await
    }

    /// One page of a segment's members in id order, after `after`.
    pub async fn segment_members(
        &self,
        id: SegmentId,
        at: Timestamp,
        after: Option<String>,
        limit: usize,
    ) -> Result<MemberPage> {
        self.scan(move |shared| {
            let rule = stored_rule(&read_segment(shared, &id)?)?;
            let index = shared.long_index();
            let frame = Frame::new(&index, at, shared.settings.thresholds);
            let (members, _) = split_objectors(&frame, &select(&frame, &rule));
            let (ids, following) = smallest_ids(&frame, &members, after.as_deref(), limit);
            Ok(MemberPage {
                more: following > ids.len(),
                ids,
                total: members.count() as u64,
            })
        })
        .await
    }

    /// Every member of a segment in id order, with consent on `channel`
    /// when one is given; and the segment they were selected by.
    pub async fn export_members(
        &self,
        id: SegmentId,
        channel: Option<Channel>,
        at: Timestamp,
    ) -> Result<(Segment, Vec<String>)> {
        self.scan(move |shared| {
            let segment = read_segment(shared, &id)?;
            let rule = stored_rule(&segment)?;
            let index = shared.long_index();
            let frame = Frame::new(&index, at, shared.settings.thresholds);
            let (mut members, _) = split_objectors(&frame, &select(&frame, &rule));
            if let Some(channel) = channel {
                members.and(&consented(&frame, channel));
            }
            let (ids, _) = smallest_ids(&frame, &members, None, usize::MAX);
            Ok((segment, ids))
        })
        .await
    }

    /// Saves a new segment; its filter must compile. Violations name
    /// fields relative to the segment.
    pub async fn create_segment(&self, segment: Segment) -> Result<Segment> {
        compile_filter(&segment.filter)
            .map_err(|description| Error::invalid("filter", description))?;
        let outcome = self
            .execute(Command::CreateSegment {
                segment,
                at: Timestamp::now(),
            })
            .await?;
        expect_outcome!(outcome, Segment)
    }

    /// One segment.
    pub async fn get_segment(&self, id: SegmentId) -> Result<Segment> {
        read_segment(&self.shared, &id)
    }

    /// Up to `limit` segments after `after`, and whether more follow.
    pub async fn list_segments(
        &self,
        after: Option<SegmentId>,
        limit: usize,
    ) -> Result<(Vec<Segment>, bool)> {
        self.scan(move |shared| {
            let mut segments = shared.store.list_segments(after.as_ref(), limit + 1)?;
            let more = segments.len() > limit;
            segments.truncate(limit);
            Ok((segments, more))
        })
        .await
    }

    /// Changes a segment with `change`, which gets the stored one; the
    /// revision goes up by one. With an `etag`, the stored segment's must
    /// equal it. Violations name fields relative to the segment.
    pub async fn update_segment(
        &self,
        id: SegmentId,
        etag: Option<String>,
        changes: SegmentChanges,
    ) -> Result<Segment> {
        let outcome = self
            .execute(Command::UpdateSegment {
                id,
                etag,
                changes,
                at: Timestamp::now(),
            })
            .await?;
        expect_outcome!(outcome, Segment)
    }

    /// Deletes a segment; with an `etag`, only if it is the stored one's.
    pub async fn delete_segment(&self, id: SegmentId, etag: Option<String>) -> Result<()> {
        self.execute(Command::DeleteSegment { id, etag }).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::features::{Thresholds, NANOS_PER_DAY};
    use crate::engine::testing::mixed_index;

    /// What each group adds up to: members, spend and purchases.
    type Totals = BTreeMap<Vec<String>, (u64, i128, u64)>;

    /// A breakdown read row by row from columns of the whole index: the
    /// members, the objectors, and each member's values summed into their
    /// group.
    fn row_by_row(
        frame: &Frame<'_>,
        dimensions: &[Variable],
        rule: &Predicate,
    ) -> (Totals, u64, u64) {
        let (members, objectors) = split_objectors(frame, &select(frame, rule));
        let whole = Span::whole(frame);
        let coded: Vec<_> = dimensions
            .iter()
            .map(|dimension| dimension_codes(frame, &whole, dimension))
            .collect();
        let mut groups = Totals::new();
        for row in members.rows() {
            let values = coded
                .iter()
                .map(|coded| {
                    let code = match &coded.codes {
                        Codes::Narrow(codes) => usize::from(codes[row]),
                        Codes::Wide(codes) => codes[row] as usize,
                    };
                    coded.names[code].clone()
                })
                .collect();
            let group = groups.entry(values).or_default();
            group.0 += 1;
            group.1 += i128::from(frame.total()[row]);
            group.2 += u64::from(frame.count()[row]);
        }
        (groups, members.count() as u64, objectors.count() as u64)
    }

    /// Decided and summed a block at a time, over two full blocks and a
    /// part block, a breakdown has the groups, sums, members and objectors
    /// that reading every row gives: for rules on a trait and on columns,
    /// by dimensions read whole (a dictionary, a trait) and made a block
    /// at a time (enums, classes, stages, scores), now and in the past.
    #[test]
    fn a_breakdown_by_blocks_sums_what_its_rows_hold() {
        let day = NANOS_PER_DAY;
        let now = 20_000 * day;
        let rows = 2 * BLOCK_ROWS + 1_000;
        let index = mixed_index(rows, now);
        let rules = [
            "true",
            r#"customer.traits.tier == "gold" || features.purchase_count == 1"#,
            r#"features.purchase_count >= 2 && customer.party == "INDIVIDUAL""#,
            r#"features.frequency == "LAPSED" || customer.age_band in ["25_34", "35_44"]"#,
        ];
        let dimensions = [
            vec![Variable::Country, Variable::Gender, Variable::AgeBand],
            vec![Variable::Frequency, Variable::Stage, Variable::Relationship],
            vec![Variable::Trait("tier".into()), Variable::RfmSegment],
            vec![
                Variable::City,
                Variable::Party,
                Variable::AgeBand,
                Variable::Stage,
            ],
            vec![],
        ];
        for at in [now + day, now - 200 * day] {
            let at = Timestamp::from_nanos(at);
            let frame = Frame::new(&index, at, Thresholds::default());
            for rule in rules {
                let rule = compile_filter(rule).unwrap();
                for dimensions in &dimensions {
                    let breakdown = grouped(&frame, dimensions, &rule, at);
                    let (expected, members, objectors) = row_by_row(&frame, dimensions, &rule);
                    let groups: Totals = breakdown
                        .groups
                        .iter()
                        .map(|group| {
                            let sums = (group.count, group.spend_minor, group.purchases);
                            (group.values.clone(), sums)
                        })
                        .collect();
                    assert_eq!(groups.len(), breakdown.groups.len(), "a group twice");
                    assert_eq!(groups, expected, "{rule:?} by {dimensions:?} at {at:?}");
                    assert_eq!((breakdown.total, breakdown.excluded), (members, objectors));
                    assert!(members > 1_000 && objectors > 0, "{rule:?}: {members}");
                }
            }
        }
    }

    /// Spend that would overflow a lane's `i64` is kept whole, in each
    /// kind of counter, and the counts and purchases add up.
    #[test]
    fn a_tally_keeps_spend_past_an_i64() {
        let rows = 1_000;
        let total = vec![i64::MAX - 7; rows];
        let count = vec![3u32; rows];
        let keys: Vec<u64> = (0..rows as u64).map(|row| row % 2).collect();
        let mut members = Bits::filled(rows, true);
        members.clear(10);
        for combinations in [2, LANED_GROUPS + 1, DENSE_GROUPS + 1] {
            let mut tally = Tally::new(combinations);
            tally.add(&members, &keys, 0, &total, &count);
            let groups: BTreeMap<u64, (u64, i128, u64)> = tally
                .groups()
                .map(|(key, sums)| (key, (sums.count, sums.spend, sums.purchases)))
                .collect();
            let spend = |members: i128| members * i128::from(i64::MAX - 7);
            assert_eq!(
                groups,
                BTreeMap::from([(0, (499, spend(499), 1_497)), (1, (500, spend(500), 1_500))]),
                "{combinations} combinations"
            );
        }
    }
}
