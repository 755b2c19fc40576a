//! The floor under every latency figure: how late this machine wakes an
//! idle core, and how long a call that does no work takes.

use std::time::{Duration, Instant};

use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::drive::{channels, open_loop};
use crate::report::ms;

/// Sleeps 50 µs at a time for `period` and prints how many wake-ups came
/// more than 0.5 ms and more than 1 ms late, and the latest. Two counters
/// and a maximum answer that exactly, with no histogram's rounding at the
/// thresholds.
pub fn wakeups(period: Duration) {
    let nap = Duration::from_micros(50);
    let started = Instant::now();
    let (mut naps, mut over_half, mut over_one, mut worst) = (0u64, 0u64, 0u64, Duration::ZERO);
    while started.elapsed() < period {
        let before = Instant::now();
        std::thread::sleep(nap);
        let late = before.elapsed().saturating_sub(nap);
        naps += 1;
        over_half += u64::from(late > Duration::from_micros(500));
        over_one += u64::from(late > Duration::from_millis(1));
        worst = worst.max(late);
    }
    println!(
        "| wake-ups after a 50 µs sleep on an idle core, for {} s | {naps} wake-ups | {over_half} over 0.5 ms late, {over_one} over 1 ms, the latest {:.2} ms |",
        period.as_secs(),
        ms(worst),
    );
}

/// What `load health` is asked for.
#[derive(Debug, clap::Args)]
pub struct HealthLoad {
    /// Calls in all, after the warm-up.
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// Connections to spread them over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls per second to hold, spread evenly.
    #[arg(long)]
    rate: u64,
    /// Seconds of calls sent first, at the same rate, to warm both ends
    /// up, and left out of the figures.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

/// grpc.health.v1.Health/Check at a fixed rate.
pub async fn health(addr: &str, load: HealthLoad) -> anyhow::Result<()> {
    let connections = load.connections;
    let clients: Vec<_> = channels(addr, connections)
        .await?
        .into_iter()
        .map(HealthClient::new)
        .collect();
    open_loop(
        format!(
            "Health/Check, at {} calls/s over {connections} connections",
            load.rate
        ),
        load.requests,
        load.rate,
        load.warmup,
        move |n| {
            let mut client = clients[n as usize % connections].clone();
            async move { client.check(HealthCheckRequest::default()).await.map(drop) }
        },
    )
    .await
}
