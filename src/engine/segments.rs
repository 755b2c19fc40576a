//! Segmentation: breakdowns, previews, saved segments, member lists and
//! exports, all answered from the feature index as of an evaluation time.

use std::collections::HashMap;

use super::frame::Frame;
use rayon::prelude::*;

use super::bits::Bits;
use super::command::{expect_outcome, Command, Outcome};
use super::select::{consented, dimension_codes, select, split_objectors, Codes, Span};
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

/// Rows whose group keys are worked out together: 16 Ki, 128 KiB of keys.
const BLOCK_ROWS: usize = 1 << 14;

/// Adds `code × stride` to each row's group key.
fn add_codes<C: Copy + Into<u64>>(keys: &mut [u64], codes: &[C], stride: u64) {
    for (key, &code) in keys.iter_mut().zip(codes) {
        *key += code.into() * stride;
    }
}

fn breakdown(
    shared: &Shared,
    dimensions: &[Variable],
    rule: &Predicate,
    at: Timestamp,
) -> Breakdown {
    let index = shared.long_index();
    let frame = Frame::new(&index, at, shared.settings.thresholds);
    let started = std::time::Instant::now();
    let selected = select(&frame, rule);
    let select_us = started.elapsed().as_micros() as u64;
    let (members, objectors) = split_objectors(&frame, &selected);
    let whole = Span::whole(&frame);
    let coded: Vec<_> = dimensions
        .iter()
        .map(|dimension| dimension_codes(&frame, &whole, dimension))
        .collect();
    let dimensions_us = started.elapsed().as_micros() as u64 - select_us;
    let (count, total) = (frame.count(), frame.total());
    // Each combination of codes is one number: dense counters when the
    // combinations are few, a map when they are many.
    let strides: Vec<u64> = coded
        .iter()
        .scan(1u64, |stride, dimension| {
            let mine = *stride;
            *stride = stride.saturating_mul(dimension.names.len() as u64);
            Some(mine)
        })
        .collect();
    let combinations = coded.iter().fold(1u64, |product, dimension| {
        product.saturating_mul(dimension.names.len() as u64)
    });
    #[derive(Default, Clone, Copy)]
    struct Sums {
        count: u64,
        spend: i128,
        purchases: u64,
    }
    let add = |slot: &mut Sums, row: usize| {
        slot.count += 1;
        slot.spend += i128::from(total[row]);
        slot.purchases += u64::from(count[row]);
    };
    // The group keys of one block of rows, a dimension at a time, kept in
    // cache while the block's members are summed.
    let block_keys = |block: usize, keys: &mut Vec<u64>| {
        let start = block * BLOCK_ROWS;
        let end = (start + BLOCK_ROWS).min(frame.rows());
        keys.clear();
        keys.resize(end - start, 0);
        for (dimension, &stride) in coded.iter().zip(&strides) {
            match &dimension.codes {
                Codes::Narrow(codes) => add_codes(keys, &codes[start..end], stride),
                Codes::Wide(codes) => add_codes(keys, &codes[start..end], stride),
            }
        }
    };
    let members_of = |block: usize| {
        let words = members.words();
        let first = block * BLOCK_ROWS / 64;
        let last = ((block + 1) * BLOCK_ROWS / 64).min(words.len());
        words[first..last]
            .iter()
            .enumerate()
            .flat_map(move |(w, &word)| {
                let base = (first + w) * 64;
                let mut rest = word;
                std::iter::from_fn(move || {
                    (rest != 0).then(|| {
                        let row = base + rest.trailing_zeros() as usize;
                        rest &= rest - 1;
                        row
                    })
                })
            })
    };
    let blocks = frame.rows().div_ceil(BLOCK_ROWS);
    let mut sums: HashMap<u64, Sums> = HashMap::new();
    if combinations <= DENSE_GROUPS {
        // Each task sums its blocks into its own counters.
        let dense = (0..blocks)
            .into_par_iter()
            .fold(
                || (vec![Sums::default(); combinations as usize], Vec::new()),
                |(mut dense, mut keys), block| {
                    block_keys(block, &mut keys);
                    let start = block * BLOCK_ROWS;
                    for row in members_of(block) {
                        add(&mut dense[keys[row - start] as usize], row);
                    }
                    (dense, keys)
                },
            )
            .map(|(dense, _)| dense)
            .reduce(
                || vec![Sums::default(); combinations as usize],
                |mut left, right| {
                    for (mine, theirs) in left.iter_mut().zip(right) {
                        mine.count += theirs.count;
                        mine.spend += theirs.spend;
                        mine.purchases += theirs.purchases;
                    }
                    left
                },
            );
        sums.extend(
            dense
                .into_iter()
                .enumerate()
                .filter(|(_, sums)| sums.count > 0)
                .map(|(key, sums)| (key as u64, sums)),
        );
    } else {
        let mut keys = Vec::new();
        for block in 0..blocks {
            block_keys(block, &mut keys);
            let start = block * BLOCK_ROWS;
            for row in members_of(block) {
                add(sums.entry(keys[row - start]).or_default(), row);
            }
        }
    }
    tracing::debug!(
        select_us,
        dimensions_us,
        total_us = started.elapsed().as_micros() as u64,
        "breakdown phases"
    );
    let mut groups: Vec<Group> = sums
        .into_iter()
        .map(|(key, sums)| Group {
            values: coded
                .iter()
                .zip(&strides)
                .map(|(dimension, stride)| {
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
        total: members.count() as u64,
        excluded: objectors.count() as u64,
        at,
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
