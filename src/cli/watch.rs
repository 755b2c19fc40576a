//! Flags of watching: how often watched segments and personas are
//! evaluated, how long their change history is kept, and the clock they
//! run on.

use std::time::{Duration, Instant};

use clap::Args;

use super::parse_duration;
use crate::domain::Timestamp;
use crate::engine::watch::{Clock, WatchSettings};

/// Watch flags of `segmentd serve`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// At most this long between two evaluations of the watches without
    /// writes (`1s`): changes the clock alone makes are reported within
    /// it. Writes start an evaluation sooner, unless evaluations take over
    /// a third of the period: then the wait after a write is three times
    /// their usual length, up to ten periods.
    #[arg(long, env = "SEGMENTD_WATCH_PERIOD", default_value = "1s", value_parser = parse_period)]
    watch_period: Duration,
    /// Changes older than this are dropped from the history (`7d`); a
    /// cursor older than what is kept gets CURSOR_EXPIRED.
    #[arg(long, env = "SEGMENTD_WATCH_RETENTION", default_value = "7d", value_parser = parse_duration)]
    watch_retention: Duration,
    /// Beyond this many bytes of changes, the oldest are dropped from the
    /// history.
    #[arg(long, env = "SEGMENTD_WATCH_RETENTION_BYTES", default_value_t = 1 << 30)]
    watch_retention_bytes: u64,
    /// A watcher that reads nothing for this long while changes wait for
    /// it is ended with RESOURCE_EXHAUSTED (SLOW_READER), and resumes from
    /// its cursor.
    #[arg(long, env = "SEGMENTD_WATCH_SLOW_READER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    watch_slow_reader_timeout: Duration,
    /// For backtests and demonstrations only: watches run on a simulated
    /// clock that starts at this time (`1997-01-01` or
    /// `1997-01-01T00:00:00Z`) instead of the system's.
    #[arg(long, env = "SEGMENTD_CLOCK_START", value_parser = parse_time)]
    clock_start: Option<Timestamp>,
    /// With `--clock-start`: simulated seconds per second (`86400` is a
    /// day a second).
    #[arg(long, env = "SEGMENTD_CLOCK_RATE", default_value_t = 1.0, requires = "clock_start", value_parser = parse_rate)]
    clock_rate: f64,
}

impl WatchArgs {
    /// The settings the flags give.
    pub fn settings(&self) -> WatchSettings {
        let clock = match self.clock_start {
            None => Clock::System,
            Some(start) => Clock::Simulated {
                start,
                rate: self.clock_rate,
                since: Instant::now(),
            },
        };
        WatchSettings {
            period: self.watch_period,
            retention: self.watch_retention,
            retention_bytes: self.watch_retention_bytes,
            slow_reader_timeout: self.watch_slow_reader_timeout,
            clock,
        }
    }
}

fn parse_period(text: &str) -> Result<Duration, String> {
    let period = parse_duration(text)?;
    if period < Duration::from_millis(10) || period > Duration::from_secs(3600) {
        return Err(format!("{text}: the period is 10ms to 1h"));
    }
    Ok(period)
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 1e9 => Ok(rate),
        _ => Err(format!("{text}: a rate is a number above 0, at most 1e9")),
    }
}

/// A date (midnight UTC) or an RFC 3339 time.
fn parse_time(text: &str) -> Result<Timestamp, String> {
    use time::format_description::well_known::Rfc3339;
    let invalid = || {
        format!("{text}: expected a date such as 1997-01-01 or a time such as 1997-01-01T00:00:00Z")
    };
    let parsed = if text.len() == 10 {
        time::OffsetDateTime::parse(&format!("{text}T00:00:00Z"), &Rfc3339)
    } else {
        time::OffsetDateTime::parse(text, &Rfc3339)
    }
    .map_err(|_| invalid())?;
    let nanos = i64::try_from(parsed.unix_timestamp_nanos()).map_err(|_| invalid())?;
    Ok(Timestamp::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_dates_or_rfc_3339() {
        assert_eq!(
            parse_time("1970-01-02").unwrap().as_nanos(),
            86_400 * 1_000_000_000
        );
        assert_eq!(
            parse_time("1970-01-01T00:00:01Z").unwrap().as_nanos(),
            1_000_000_000
        );
        for bad in ["", "1997", "1997-13-01", "yesterday", "1997-01-01T00:00:00"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("nan").is_err());
        assert!(parse_period("1ms").is_err());
        assert_eq!(parse_period("50ms").unwrap(), Duration::from_millis(50));
    }
}
