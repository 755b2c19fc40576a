//! What a run prints: one Markdown table row, from a latency histogram.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The latencies of one run, kept in microseconds to three significant
/// digits: a few kilobytes however many calls are recorded, merged from
/// the workers at the end.
pub struct Latencies(Histogram<u64>);

/// The longest latency an auto-resizing histogram takes, in microseconds.
const LONGEST_MICROS: u128 = (i64::MAX / 2) as u128;

impl Default for Latencies {
    fn default() -> Self {
        // Three significant digits are within the allowed 0 to 5, and a
        // histogram made by `new` grows to whatever it is given.
        Latencies(Histogram::new(3).expect("3 significant digits"))
    }
}

impl Latencies {
    /// Notes one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = latency.as_micros().min(LONGEST_MICROS) as u64;
        self.0
            .record(micros)
            .expect("an auto-resizing histogram takes up to i64::MAX / 2");
    }

    /// Takes in another run's latencies.
    pub fn add(&mut self, other: &Latencies) {
        self.0.add(&other.0).expect("auto-resizing histograms add");
    }

    /// How many latencies were noted.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (0.5 for the median).
    pub fn at(&self, q: f64) -> Duration {
        Duration::from_micros(self.0.value_at_quantile(q))
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

/// `call` made `runs` times one after another, after one untimed warm-up
/// call: the median time in milliseconds, and what the last call gave.
pub async fn median_of<T>(
    runs: usize,
    mut call: impl AsyncFnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(f64, T)> {
    let mut times = Latencies::default();
    let mut last = call().await?;
    for _ in 0..runs {
        let started = Instant::now();
        last = call().await?;
        times.record(started.elapsed());
    }
    Ok((ms(times.at(0.5)), last))
}
