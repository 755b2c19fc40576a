//! The steady writer of `bench/cluster.sh`'s failover runs: CreateCustomer
//! at a fixed rate through running replicas, each write retried through the
//! next replica until it is acknowledged, while the script kills a NATS node
//! or a replica. Prints the longest time without an acknowledgement as a
//! Markdown table row. Not a test: ignored unless asked for by name.
//!
//! Configured from the environment: `SEGMENTD_BENCH_ADDRS` (the replicas'
//! gRPC addresses, comma-separated), `SEGMENTD_BENCH_RATE` (writes a
//! second, default 100), `SEGMENTD_BENCH_SECONDS` (default 20),
//! `SEGMENTD_BENCH_RUN` (the row's name, which also keeps the customer ids
//! of runs apart).

use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::calls::{request_id, retryable, Client};

/// How long one write is retried before it counts as failed.
const GIVE_UP: Duration = Duration::from_secs(30);

/// A setting from the environment, or `default`.
fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Writes customer `id` through `clients`, starting at `first` and moving
/// on after each failure, until it is acknowledged or `GIVE_UP` has passed;
/// when it was acknowledged.
async fn write_one(clients: &[Client], first: usize, id: String, n: u64) -> Option<Instant> {
    let started = Instant::now();
    let request_id = request_id(n);
    for attempt in 0.. {
        let mut client = clients[(first + attempt) % clients.len()].clone();
        match client.create(&id, n, &request_id).await {
            Ok(_) => return Some(Instant::now()),
            Err(status) if retryable(&status) && started.elapsed() < GIVE_UP => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => {
                eprintln!("{id}: {status:?}");
                return None;
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the failover benchmark's writer: bench/cluster.sh runs it"]
async fn steady_writer() {
    let Ok(addrs) = std::env::var("SEGMENTD_BENCH_ADDRS") else {
        println!("SEGMENTD_BENCH_ADDRS is not set: nothing to write to");
        return;
    };
    let rate: u64 = setting("SEGMENTD_BENCH_RATE", 100);
    let seconds: u64 = setting("SEGMENTD_BENCH_SECONDS", 20);
    let run: String = setting("SEGMENTD_BENCH_RUN", "steady writes".to_owned());
    let prefix: String = run
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(20)
        .collect();
    let clients: Vec<Client> = addrs
        .split(',')
        .map(|addr| {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(5))
                .connect_lazy();
            Client::new(channel)
        })
        .collect();

    let started = Instant::now();
    let mut writes = Vec::new();
    for n in 0..rate * seconds {
        let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let clients = clients.clone();
        let id = format!("{prefix}-{n:07}");
        writes.push(tokio::spawn(async move {
            write_one(&clients, n as usize, id, n).await
        }));
    }
    let mut acknowledged: Vec<Instant> = join_all(writes)
        .await
        .into_iter()
        .filter_map(|write| write.unwrap())
        .collect();
    let failed = rate * seconds - acknowledged.len() as u64;
    acknowledged.sort();
    let (gap, at) = acknowledged
        .windows(2)
        .map(|pair| (pair[1] - pair[0], pair[0] - started))
        .max()
        .unwrap_or_default();
    println!(
        "| {run}: CreateCustomer at {rate}/s over {} replicas for {seconds} s | {} acknowledged, {failed} not | longest gap between acknowledgements {:.0} ms, from {:.1} s |",
        clients.len(),
        acknowledged.len(),
        gap.as_secs_f64() * 1e3,
        at.as_secs_f64(),
    );
}
