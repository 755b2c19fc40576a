//! Calendar dates and instants, in UTC.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// An instant, as nanoseconds since the Unix epoch (good until 2262).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX))
    }

    /// From seconds and nanoseconds since the epoch, as in `google.protobuf.Timestamp`.
    pub fn from_parts(seconds: i64, nanos: i32) -> Result<Self, String> {
        if !(0..NANOS_PER_SECOND as i32).contains(&nanos) {
            return Err(format!("nanos must be in 0..1e9, got {nanos}"));
        }
        seconds
            .checked_mul(NANOS_PER_SECOND)
            .and_then(|n| n.checked_add(i64::from(nanos)))
            .map(Timestamp)
            .ok_or_else(|| format!("{seconds} seconds since the epoch is out of range"))
    }

    /// Seconds and nanoseconds since the epoch.
    pub fn to_parts(self) -> (i64, i32) {
        (
            self.0.div_euclid(NANOS_PER_SECOND),
            self.0.rem_euclid(NANOS_PER_SECOND) as i32,
        )
    }

    /// From nanoseconds since the epoch.
    pub fn from_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the epoch.
    pub fn as_nanos(self) -> i64 {
        self.0
    }

    /// The smallest instant after both `self` and `earlier`, so that a write
    /// always moves a customer's update time (and so its etag) forward.
    pub fn after(self, earlier: Timestamp) -> Timestamp {
        Timestamp(self.0.max(earlier.0.saturating_add(1)))
    }

    /// The UTC calendar date of this instant.
    pub fn date(self) -> Date {
        let (seconds, _) = self.to_parts();
        let days = seconds.div_euclid(86_400);
        Date::from_days_since_epoch(days as i32)
    }
}

/// RFC 3339 in UTC, with the fraction of a second only when there is one:
/// `1997-09-30T23:59:59Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (seconds, nanos) = self.to_parts();
        let of_day = seconds.rem_euclid(86_400);
        write!(
            f,
            "{}T{:02}:{:02}:{:02}",
            self.date(),
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        )?;
        if nanos != 0 {
            let fraction = format!("{nanos:09}");
            write!(f, ".{}", fraction.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

/// A calendar date in the proleptic Gregorian calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "i32", try_from = "i32")]
pub struct Date(time::Date);

const EPOCH_JULIAN_DAY: i32 = 2_440_588;

impl Date {
    /// A valid date from year, month and day.
    pub fn from_ymd(year: i32, month: i32, day: i32) -> Result<Self, String> {
        let invalid = || format!("{year:04}-{month:02}-{day:02} is not a valid date");
        if !(1..=9999).contains(&year) {
            return Err(invalid());
        }
        let month = u8::try_from(month)
            .ok()
            .and_then(|m| time::Month::try_from(m).ok())
            .ok_or_else(invalid)?;
        let day = u8::try_from(day).map_err(|_| invalid())?;
        time::Date::from_calendar_date(year, month, day)
            .map(Date)
            .map_err(|_| invalid())
    }

    fn from_days_since_epoch(days: i32) -> Self {
        let julian = days.saturating_add(EPOCH_JULIAN_DAY);
        Date(time::Date::from_julian_day(julian).unwrap_or(time::Date::MAX))
    }

    /// The year.
    pub fn year(self) -> i32 {
        self.0.year()
    }

    /// The month, 1 to 12.
    pub fn month(self) -> i32 {
        i32::from(u8::from(self.0.month()))
    }

    /// The day of the month.
    pub fn day(self) -> i32 {
        i32::from(self.0.day())
    }
}

impl From<Date> for i32 {
    fn from(date: Date) -> i32 {
        date.0.to_julian_day()
    }
}

impl TryFrom<i32> for Date {
    type Error = String;

    fn try_from(julian_day: i32) -> Result<Self, String> {
        time::Date::from_julian_day(julian_day)
            .map(Date)
            .map_err(|_| format!("julian day {julian_day} is out of range"))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}",
            self.year(),
            self.month(),
            self.day()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_checked() {
        assert!(Date::from_ymd(2024, 2, 29).is_ok());
        assert!(Date::from_ymd(2023, 2, 29).is_err());
        assert!(Date::from_ymd(2023, 13, 1).is_err());
        assert!(Date::from_ymd(0, 1, 1).is_err());
    }

    #[test]
    fn timestamps_show_as_rfc_3339() {
        let at = Timestamp::from_parts(875_663_999, 0).unwrap();
        assert_eq!(at.to_string(), "1997-09-30T23:59:59Z");
        let at = Timestamp::from_parts(-1, 250_000_000).unwrap();
        assert_eq!(at.to_string(), "1969-12-31T23:59:59.25Z");
    }

    #[test]
    fn timestamps_round_trip_and_give_dates() {
        let t = Timestamp::from_parts(1_700_000_000, 5).unwrap();
        assert_eq!(t.to_parts(), (1_700_000_000, 5));
        assert_eq!(t.date().to_string(), "2023-11-14");
        assert_eq!(
            Timestamp::from_parts(-1, 0).unwrap().date().to_string(),
            "1969-12-31"
        );
        assert!(Timestamp::from_parts(i64::MAX, 0).is_err());
    }
}
