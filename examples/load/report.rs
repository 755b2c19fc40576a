//! What a run prints: one Markdown table row, from a latency histogram.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The latencies of one run, kept in nanoseconds to three significant
/// digits: a fixed few kilobytes however many calls are recorded, merged
/// from the workers at the end.
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        // Three significant digits are within the allowed 0 to 5, and a
        // histogram made by `new` grows to any value it is given.
        Latencies(Histogram::new(3).expect("3 significant digits"))
    }
}

impl Latencies {
    /// Notes one latency.
    pub fn record(&mut self, latency: Duration) {
        self.0
            .saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Takes in another run's latencies.
    pub fn add(&mut self, other: &Latencies) {
        // Both grow to any value, so adding cannot fail.
        self.0.add(&other.0).expect("auto-resizing histograms add");
    }

    /// How many latencies were noted.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (0.5 for the median).
    pub fn at(&self, q: f64) -> Duration {
        Duration::from_nanos(self.0.value_at_quantile(q))
    }
}

impl FromIterator<Duration> for Latencies {
    fn from_iter<I: IntoIterator<Item = Duration>>(latencies: I) -> Self {
        let mut all = Latencies::default();
        for latency in latencies {
            all.record(latency);
        }
        all
    }
}

/// Milliseconds, for printing.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Prints one table row: calls per second and latency percentiles.
pub fn report(run: &str, elapsed: Duration, latencies: &Latencies) {
    println!(
        "| {run} | {:.0} calls/s | p50 {:.2} ms, p99 {:.2} ms |",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(latencies.at(0.50)),
        ms(latencies.at(0.99)),
    );
}
