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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tonic::Status;

use crate::calls::{request_id, retryable, Client};

/// How long one write is retried before it counts as failed.
const GIVE_UP: Duration = Duration::from_secs(30);
/// Connections to each replica: room for every write that waits out a
/// failover under the server's limit of calls per connection.
const CONNECTIONS: usize = 4;

/// A setting from the environment, or `default`.
fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Writes customer `id` through the replicas of `clients` (one list of
/// connections per replica), starting at replica `n` and moving on after
/// each failure, until it is acknowledged or `GIVE_UP` has passed; when it
/// was acknowledged, or the last failure.
async fn write_one(clients: &[Vec<Client>], id: String, n: u64) -> Result<Instant, Status> {
    let started = Instant::now();
    let request_id = request_id(n);
    let mut attempt = 0;
    loop {
        let replica = &clients[(n as usize + attempt) % clients.len()];
        let mut client = replica[n as usize % replica.len()].clone();
        match client.create(&id, n, &request_id).await {
            Ok(_) => return Ok(Instant::now()),
            Err(status) if retryable(&status) && started.elapsed() < GIVE_UP => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => return Err(status),
        }
    }
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
    let endpoint = |addr: &str| {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
    };
    let clients: Vec<Vec<Client>> = addrs
        .split(',')
        .map(|addr| {
            (0..CONNECTIONS)
                .map(|_| Client::new(endpoint(addr).connect_lazy()))
                .collect()
        })
        .collect();

    let started = Instant::now();
    let mut writes = Vec::new();
    for n in 0..rate * seconds {
        let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let clients = clients.clone();
        let id = format!("{prefix}-{n:07}");
        writes.push(tokio::spawn(
            async move { write_one(&clients, id, n).await },
        ));
    }
    let mut acknowledged = Vec::new();
    let mut failures: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for write in join_all(writes).await {
        match write.unwrap() {
            Ok(at) => acknowledged.push(at),
            Err(status) => {
                let seen = failures
                    .entry(format!("{:?}", status.code()))
                    .or_insert_with(|| (0, status.message().to_owned()));
                seen.0 += 1;
            }
        }
    }
    for (code, (count, message)) in &failures {
        eprintln!("{count} writes failed with {code}, the first: {message}");
    }
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
