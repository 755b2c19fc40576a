//! The index's columns: the profile fields and all-time purchase figures
//! of every customer, one array per field and one entry per row, with the
//! dictionaries of the string columns; and [`Derived`], the figures a row's
//! activity gives its columns, found by one function for every path that
//! changes a row (bulk load, upsert, recorded activity, removal).

use std::collections::{BTreeMap, HashMap};
use std::mem::size_of;

use compact_str::CompactString;
use foldhash::fast::RandomState;

use super::series::Row;
use crate::domain::features::{Thresholds, NANOS_PER_DAY};
use crate::domain::{Consent, Customer, Date, Gender, Party, Relationship, TraitValue};

/// The profile fields and all-time purchase figures, one array per field,
/// one entry per row, so that a rule reads one field of every customer in
/// one pass. A deleted row keeps `alive` false and neutral values.
#[derive(Debug, Default)]
pub struct Columns {
    /// Whether the row holds a customer (false once deleted).
    pub alive: Vec<bool>,
    /// Person or business.
    pub party: Vec<Party>,
    /// Internal or external.
    pub relationship: Vec<Relationship>,
    /// Stated gender.
    pub gender: Vec<Gender>,
    /// Consent per channel.
    pub consent: Vec<Consent>,
    /// Objects to profiling.
    pub objects: Vec<bool>,
    /// Date of birth as `yyyymmdd`, 0 when absent; then the age at a date
    /// `d` (also `yyyymmdd`) is `(d - birth) / 10000` when `birth <= d`.
    pub birth: Vec<u32>,
    /// Yearly income in minor units; `i64::MIN` when absent.
    pub income: Vec<i64>,
    /// Country code number in [`Dictionaries::country`].
    pub country: Vec<u32>,
    /// Region number.
    pub region: Vec<u32>,
    /// City number.
    pub city: Vec<u32>,
    /// Language tag number.
    pub language: Vec<u32>,
    /// Purchases, all time.
    pub count: Vec<u32>,
    /// Total spend in minor units, all time.
    pub total: Vec<i64>,
    /// The first purchase, nanoseconds since the epoch; 0 without purchases.
    pub first: Vec<i64>,
    /// The last purchase; 0 without purchases.
    pub last: Vec<i64>,
    /// Distinct UTC days with a purchase, all time: the prediction
    /// models count purchases by day.
    pub days: Vec<u32>,
    /// [`engaged`] flags of the kinds of engagement ever recorded.
    pub engaged: Vec<u8>,
    /// From this time on (nanoseconds), the customer is LAPSED while no
    /// purchase comes. `i64::MAX` with fewer than two purchases.
    pub lapsed_from: Vec<i64>,
    /// Until this time (exclusive), if not LAPSED, the customer is a
    /// FREQUENT_CUSTOMER while no purchase comes. `i64::MIN` when never.
    pub frequent_until: Vec<i64>,
}

/// The columns a row's activity gives it. Every path that changes a row's
/// activity writes them through `Columns::set_derived` with
/// [`Derived::of`], so that a derived column is computed in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Derived {
    /// [`Columns::count`].
    pub count: u32,
    /// [`Columns::total`].
    pub total: i64,
    /// [`Columns::first`].
    pub first: i64,
    /// [`Columns::last`].
    pub last: i64,
    /// [`Columns::days`].
    pub days: u32,
    /// [`Columns::engaged`].
    pub engaged: u8,
    /// [`Columns::lapsed_from`].
    pub lapsed_from: i64,
    /// [`Columns::frequent_until`].
    pub frequent_until: i64,
}

impl Derived {
    /// The columns of a row without activity: a new or deleted one.
    pub const NONE: Derived = Derived {
        count: 0,
        total: 0,
        first: 0,
        last: 0,
        days: 0,
        engaged: 0,
        lapsed_from: i64::MAX,
        frequent_until: i64::MIN,
    };

    /// The columns of a row's activity, its series being in order.
    /// A row's derived columns; `total` is the sum of its purchase amounts,
    /// which a change of one event keeps up without adding them all again.
    pub fn of(row: &Row, thresholds: &Thresholds, total: i64) -> Self {
        let times = row.purchases.times();
        let (lapsed_from, frequent_until) = frequency_bounds(times, thresholds);
        let firsts = row.firsts();
        let engaged = [
            (firsts.visit, engaged::VISIT),
            (firsts.feedback, engaged::FEEDBACK),
            (firsts.referral, engaged::REFERRAL),
        ]
        .into_iter()
        .filter(|(first, _)| first.is_some())
        .fold(0, |flags, (_, flag)| flags | flag);
        Derived {
            count: times.len() as u32,
            total,
            first: times.first().copied().unwrap_or(0),
            last: times.last().copied().unwrap_or(0),
            days: distinct_days(times),
            engaged,
            lapsed_from,
            frequent_until,
        }
    }
}

/// Runs `$body` with `$column` bound to each column of `$columns` (a
/// `Columns`, by value or reference), always in the same order. The
/// columns are taken apart whole, so that a column added to [`Columns`]
/// and not here fails to compile: every pass over all of them (their
/// heap bytes, the index image) goes through this one list.
macro_rules! for_each_column {
    ($columns:expr, |$column:ident| $body:block) => {
        for_each_column!(@with $columns, $column, $body;
            alive party relationship gender consent objects birth income country region city
            language count total first last days engaged lapsed_from frequent_until)
    };
    (@with $columns:expr, $column:ident, $body:block; $($name:ident)*) => {{
        let Columns { $($name),* } = $columns;
        $({
            let $column = $name;
            $body
        })*
    }};
    // The same column of two sets of columns at once.
    ($columns:expr, $other:expr, |$column:ident, $twin:ident| $body:block) => {
        for_each_column!(@pairs $columns, $other, $column, $twin, $body;
            alive party relationship gender consent objects birth income country region city
            language count total first last days engaged lapsed_from frequent_until)
    };
    (@pairs $columns:expr, $other:expr, $column:ident, $twin:ident, $body:block; $($name:ident)*) => {{
        let Columns { $($name),* } = $columns;
        let other = $other;
        $({
            let $column = $name;
            let $twin = &mut other.$name;
            $body
        })*
    }};
}
pub(super) use for_each_column;

/// Distinct UTC days among sorted times.
fn distinct_days(times: &[i64]) -> u32 {
    let mut days = 0;
    let mut previous = None;
    for &time in times {
        let day = time.div_euclid(NANOS_PER_DAY);
        if previous != Some(day) {
            days += 1;
            previous = Some(day);
        }
    }
    days
}

/// Sets `column[at]`, or appends it when `at` is the next row.
fn put<T>(column: &mut Vec<T>, at: usize, value: T) {
    if at == column.len() {
        column.push(value);
    } else {
        column[at] = value;
    }
}

/// Heap bytes of a column.
fn bytes<T>(column: &Vec<T>) -> usize {
    column.capacity() * size_of::<T>()
}

impl Columns {
    /// Writes a row's profile columns, numbering its strings; `at` is an
    /// existing row or the next one.
    pub(super) fn set_profile(&mut self, at: usize, fields: &CustomerFields, d: &mut Dictionaries) {
        put(&mut self.alive, at, true);
        put(&mut self.party, at, fields.party);
        put(&mut self.relationship, at, fields.relationship);
        put(&mut self.gender, at, fields.gender);
        put(&mut self.consent, at, fields.consent);
        put(&mut self.objects, at, fields.objects);
        put(&mut self.birth, at, fields.birth);
        put(&mut self.income, at, fields.income);
        put(
            &mut self.country,
            at,
            d.country.intern(fields.country.as_deref()),
        );
        put(&mut self.region, at, d.region.intern(Some(&fields.region)));
        put(&mut self.city, at, d.city.intern(Some(&fields.city)));
        put(
            &mut self.language,
            at,
            d.language.intern(fields.language.as_deref()),
        );
    }

    /// Appends a row that holds no customer.
    pub(super) fn push_empty(&mut self, d: &mut Dictionaries) {
        let at = self.alive.len();
        self.set_profile(at, &CustomerFields::default(), d);
        self.alive[at] = false;
        self.set_derived(at, &Derived::NONE);
    }

    /// Writes a row's derived columns; `at` is an existing row or the next
    /// one.
    pub(super) fn set_derived(&mut self, at: usize, derived: &Derived) {
        put(&mut self.count, at, derived.count);
        put(&mut self.total, at, derived.total);
        put(&mut self.first, at, derived.first);
        put(&mut self.last, at, derived.last);
        put(&mut self.days, at, derived.days);
        put(&mut self.engaged, at, derived.engaged);
        put(&mut self.lapsed_from, at, derived.lapsed_from);
        put(&mut self.frequent_until, at, derived.frequent_until);
    }

    /// Heap bytes of every column.
    pub(super) fn heap_bytes(&self) -> usize {
        let mut sum = 0;
        for_each_column!(self, |column| {
            sum += bytes(column);
        });
        sum
    }
}

/// Bit flags of [`Columns::engaged`]: which kinds of engagement a customer
/// ever had.
pub mod engaged {
    /// A visit.
    pub const VISIT: u8 = 1;
    /// A feedback.
    pub const FEEDBACK: u8 = 2;
    /// A referral.
    pub const REFERRAL: u8 = 4;
}

/// Distinct strings of one column, numbered from 1; 0 means absent.
#[derive(Debug)]
pub struct Dictionary {
    /// The strings by number; `names[0]` is the empty string.
    names: Vec<CompactString>,
    /// Numbers by string.
    numbers: HashMap<CompactString, u32, RandomState>,
}

impl Default for Dictionary {
    fn default() -> Self {
        Dictionary {
            names: vec![CompactString::default()],
            numbers: HashMap::default(),
        }
    }
}

impl Dictionary {
    /// The number of a string, added if new; 0 for an empty or absent one.
    pub(super) fn intern(&mut self, name: Option<&str>) -> u32 {
        let Some(name) = name.filter(|name| !name.is_empty()) else {
            return 0;
        };
        if let Some(&number) = self.numbers.get(name) {
            return number;
        }
        let number = self.names.len() as u32;
        self.names.push(CompactString::new(name));
        self.numbers.insert(CompactString::new(name), number);
        number
    }

    /// Every string, by number; index 0 is the empty string, for absent.
    pub fn names(&self) -> &[CompactString] {
        &self.names
    }

    /// A dictionary of `names`, by number, as [`Dictionary::names`] gives
    /// them; `None` unless the first is empty and the others are distinct
    /// and not empty.
    pub(super) fn from_names(names: Vec<CompactString>) -> Option<Self> {
        if names.first().is_none_or(|first| !first.is_empty()) {
            return None;
        }
        let mut numbers = HashMap::with_capacity_and_hasher(names.len(), RandomState::default());
        for (number, name) in names.iter().enumerate().skip(1) {
            if name.is_empty() || numbers.insert(name.clone(), number as u32).is_some() {
                return None;
            }
        }
        Some(Dictionary { names, numbers })
    }

    fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<CompactString>();
        self.names.capacity() * slot
            + self.numbers.capacity() * (slot + 5)
            + self
                .names
                .iter()
                .filter(|name| name.is_heap_allocated())
                .map(|name| name.len() * 2)
                .sum::<usize>()
    }
}

/// The strings of the dictionary-encoded columns.
#[derive(Debug, Default)]
pub struct Dictionaries {
    /// Country codes.
    pub country: Dictionary,
    /// Regions.
    pub region: Dictionary,
    /// Cities.
    pub city: Dictionary,
    /// Language tags.
    pub language: Dictionary,
}

impl Dictionaries {
    /// Heap bytes of every dictionary.
    pub(super) fn heap_bytes(&self) -> usize {
        self.country.heap_bytes()
            + self.region.heap_bytes()
            + self.city.heap_bytes()
            + self.language.heap_bytes()
    }
}

/// What the index keeps of a customer's profile, before its strings are
/// numbered.
#[derive(Debug, Default)]
pub(super) struct CustomerFields {
    /// The customer's id.
    pub(super) id: CompactString,
    /// Person or business.
    party: Party,
    /// Internal or external.
    relationship: Relationship,
    /// Stated gender.
    gender: Gender,
    /// Consent per channel.
    consent: Consent,
    /// Objects to profiling.
    objects: bool,
    /// Date of birth as `yyyymmdd`, 0 when absent.
    birth: u32,
    /// Yearly income in minor units; `i64::MIN` when absent.
    income: i64,
    /// Country code.
    country: Option<String>,
    /// Region.
    region: String,
    /// City.
    city: String,
    /// Language tag.
    language: Option<String>,
    /// Custom attributes, kept by the index beside the columns.
    pub(super) traits: BTreeMap<String, TraitValue>,
}

impl From<Customer> for CustomerFields {
    fn from(customer: Customer) -> Self {
        let profile = customer.profile;
        CustomerFields {
            id: CompactString::new(customer.id.as_str()),
            party: profile.party,
            relationship: profile.relationship,
            gender: profile.gender,
            consent: profile.consent,
            objects: profile.objects_to_profiling,
            birth: profile.birth_date.map_or(0, ymd),
            income: profile
                .annual_income
                .map_or(i64::MIN, |money| money.minor_units),
            country: profile.location.country_code,
            region: profile.location.region,
            city: profile.location.city,
            language: profile.language,
            traits: profile.traits,
        }
    }
}

/// `yyyymmdd` of a date.
pub fn ymd(date: Date) -> u32 {
    (date.year() * 10_000 + date.month() * 100 + date.day()) as u32
}

/// Whole years from a birth date to a date, both `yyyymmdd`; `None` for no
/// birth date (0) or one after `on`.
pub fn age_at(birth: u32, on: u32) -> Option<i32> {
    (birth != 0 && birth <= on).then(|| ((on - birth) / 10_000) as i32)
}

/// `(floor(limit) + 1)` days in nanoseconds: for a whole number of days `r`
/// and an elapsed time `e` (r = floor(e / 1 day)), `r > limit` is
/// `e >= days_past(limit)` and `r <= limit` is `e < days_past(limit)`.
pub fn days_past(limit: f64) -> i64 {
    if limit >= (i64::MAX / NANOS_PER_DAY) as f64 {
        return i64::MAX;
    }
    if limit <= (i64::MIN / NANOS_PER_DAY) as f64 {
        return i64::MIN;
    }
    // floor without a call into libm: truncate, then step down below zero.
    let truncated = limit as i64;
    let days = if (truncated as f64) > limit {
        truncated - 1
    } else {
        truncated
    };
    (days + 1).saturating_mul(NANOS_PER_DAY)
}

/// [`Columns::lapsed_from`] and [`Columns::frequent_until`] of a
/// customer's sorted purchase times: the design's frequency rules with the
/// evaluation time T left out, for a T at or after every purchase, so that
/// a query only compares times. With `n` purchases from `first` to `last`
/// and the mean gap `g` in days, the recency `r = floor((T − last) / 1 day)`
/// is over a limit `x` exactly when `T >= last + days_past(x)`; and "at
/// least K purchases in (T − 365 days, T]" is "T is before the K-th latest
/// purchase plus 365 days".
pub fn frequency_bounds(times: &[i64], thresholds: &Thresholds) -> (i64, i64) {
    let count = times.len();
    let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
        return (i64::MAX, i64::MIN);
    };
    if count < 2 {
        return (i64::MAX, i64::MIN);
    }
    let gap = last.abs_diff(first) as f64 / NANOS_PER_DAY as f64 / (count - 1) as f64;
    let lapsed_after = (thresholds.lapsed_gap_multiplier * gap).max(thresholds.lapsed_min_days);
    let lapsed_from = last.saturating_add(days_past(lapsed_after));
    let recent_until = last.saturating_add(days_past(thresholds.frequent_gap_multiplier * gap));
    let k = thresholds.frequent_min_purchases_365d as usize;
    let window_until = match k {
        0 => i64::MAX,
        k if k <= count => times[count - k].saturating_add(365 * NANOS_PER_DAY),
        _ => i64::MIN,
    };
    (lapsed_from, recent_until.min(window_until))
}
