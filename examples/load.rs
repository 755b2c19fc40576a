//! Load generator for a running segmentd: unary CreateCustomer with many
//! calls in flight, and a streaming ImportCustomers. Prints one Markdown
//! table row per run. See `bench/run.sh`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use segmentd::grpc::pb::activity_service_client::ActivityServiceClient;
use segmentd::grpc::pb::customer_service_client::CustomerServiceClient;
use segmentd::grpc::pb::{self, google::r#type::Date};
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    #[command(subcommand)]
    run: Run,
}

#[derive(Debug, Subcommand)]
enum Run {
    /// Unary CreateCustomer calls.
    Create {
        /// Calls in all.
        #[arg(long, default_value_t = 50_000)]
        requests: u64,
        /// Connections to spread them over.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Calls in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Number of the first customer, so that runs on one server differ.
        #[arg(long, default_value_t = 0)]
        first: u64,
    },
    /// A synthetic data set: customers over ImportCustomers, then their
    /// purchases over ImportActivity.
    Dataset {
        /// Customers.
        #[arg(long, default_value_t = 1_000_000)]
        customers: u64,
        /// Purchases in all.
        #[arg(long, default_value_t = 10_000_000)]
        purchases: u64,
        /// Seed of the generator: the same seed, the same data.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Purchases per ImportActivity message.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
    },
}

const COUNTRIES: [&str; 8] = ["TR", "EG", "IR", "US", "DE", "SA", "AE", "GB"];

/// A plausible customer, the same for the same `n`.
fn customer(n: u64) -> pb::Customer {
    let internal = n % 50 == 0;
    pb::Customer {
        name: format!("customers/load-{n:09}"),
        party: if n % 10 == 0 {
            pb::Party::Business
        } else {
            pb::Party::Individual
        } as i32,
        relationship: if internal {
            pb::Relationship::Internal
        } else {
            pb::Relationship::External
        } as i32,
        department: if internal {
            "Sales".into()
        } else {
            String::new()
        },
        birth_date: Some(Date {
            year: 1950 + (n % 55) as i32,
            month: 1 + (n % 12) as i32,
            day: 1 + (n % 28) as i32,
        }),
        gender: 1 + (n % 3) as i32,
        annual_income: Some(pb::Money {
            currency_code: "USD".into(),
            minor_units: 1_500_000 + (n * 7919 % 20_000_000) as i64,
        }),
        location: Some(pb::Location {
            country_code: COUNTRIES[(n % 8) as usize].into(),
            city: format!("city-{}", n % 97),
            ..Default::default()
        }),
        language: "en".into(),
        consent: Some(pb::Consent {
            email: 1 + (n % 3) as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn connect(addr: &str) -> anyhow::Result<CustomerServiceClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(CustomerServiceClient::new(channel))
}

async fn create(
    addr: &str,
    requests: u64,
    first: u64,
    connections: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(connect(addr).await?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let mut client = clients[worker % connections].clone();
        let next = Arc::clone(&next);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    return Ok::<_, tonic::Status>(latencies);
                }
                let mut customer = customer(first + n);
                let id = customer.name.trim_start_matches("customers/").to_owned();
                customer.name.clear();
                let request = pb::CreateCustomerRequest {
                    customer_id: id,
                    customer: Some(customer),
                    request_id: String::new(),
                };
                let sent = Instant::now();
                client.create_customer(request).await?;
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "| CreateCustomer, {concurrency} in flight over {connections} connections | {:.0} calls/s | p50 {:.2} ms, p99 {:.2} ms |",
        requests as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
    Ok(())
}

/// SplitMix64: a small, seeded, reproducible generator.
struct Generator(u64);

impl Generator {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The most purchases one generated customer makes.
const MOST_PURCHASES: f64 = 20_000.0;

/// How many purchases each customer makes: most make none to three, a few
/// heavy buyers (a Pareto tail, capped) make the rest; the total is `purchases`.
fn purchase_counts(customers: u64, purchases: u64, rng: &mut Generator) -> Vec<u32> {
    let mut counts = vec![0u32; customers as usize];
    let mut heavy = Vec::new();
    let mut light_total = 0u64;
    for (n, count) in counts.iter_mut().enumerate() {
        let draw = rng.unit();
        *count = match draw {
            d if d < 0.30 => 0,
            d if d < 0.55 => 1,
            d if d < 0.70 => 2,
            d if d < 0.80 => 3,
            _ => {
                // Pareto with shape 1.5: weights for the heavy buyers.
                heavy.push((n, (1.0 - rng.unit()).powf(-1.0 / 1.5)));
                0
            }
        };
        light_total += u64::from(*count);
    }
    let remaining = purchases.saturating_sub(light_total) as f64;
    let weight: f64 = heavy.iter().map(|(_, w)| w).sum();
    let mut assigned = light_total;
    for (n, w) in &heavy {
        let count = (remaining * w / weight).floor().min(MOST_PURCHASES) as u64;
        counts[*n] = count as u32;
        assigned += count;
    }
    // Hand out what rounding and the cap left over, one each, to the heavy buyers.
    let mut left = purchases.saturating_sub(assigned);
    for (n, _) in heavy.iter().cycle() {
        if left == 0 {
            break;
        }
        if f64::from(counts[*n]) < MOST_PURCHASES {
            counts[*n] += 1;
            left -= 1;
        }
    }
    counts
}

/// The purchases' customers in arrival order: each customer as often as
/// their count, shuffled, so that customers' purchases interleave.
fn arrival_order(counts: &[u32], rng: &mut Generator) -> Vec<u32> {
    let mut order: Vec<u32> = counts
        .iter()
        .enumerate()
        .flat_map(|(n, &count)| std::iter::repeat_n(n as u32, count as usize))
        .collect();
    for i in (1..order.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// 2023-11-23T00:00:00Z: the start of the three years purchases fall in.
const PURCHASES_FROM: i64 = 1_700_697_600;

/// Purchase `n` of `total`. Purchases arrive roughly in time order over
/// three years; one in a hundred arrives up to 30 days late.
fn purchase(n: usize, total: usize, customer: u32, rng: &mut Generator) -> pb::Purchase {
    const THREE_YEARS: f64 = 3.0 * 365.0 * 86_400.0;
    let on_time = PURCHASES_FROM + (n as f64 / total as f64 * THREE_YEARS) as i64;
    let late = if rng.unit() < 0.01 {
        (rng.unit() * 30.0 * 86_400.0) as i64
    } else {
        0
    };
    pb::Purchase {
        purchase_id: format!("p{n}"),
        customer: format!("customers/load-{customer:09}"),
        occurred_at: Some(prost_types::Timestamp {
            seconds: on_time - late,
            nanos: 0,
        }),
        amount: Some(pb::Money {
            currency_code: "USD".into(),
            // Exponential around $40, at least $2.
            minor_units: 200 + (-(1.0 - rng.unit()).ln() * 4_000.0) as i64,
        }),
        quantity: 1 + (rng.next() % 3) as i32,
        category: CATEGORIES[(rng.next() % CATEGORIES.len() as u64) as usize].into(),
        durability: 1 + (rng.next() % 3) as i32,
    }
}

const CATEGORIES: [&str; 6] = ["books", "music", "coffee", "garden", "toys", "electronics"];

async fn dataset(
    addr: &str,
    customers: u64,
    purchases: u64,
    seed: u64,
    batch: usize,
) -> anyhow::Result<()> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut customer_client = CustomerServiceClient::new(channel.clone());
    let messages = (0..customers.div_ceil(1000)).map(move |b| pb::ImportCustomersRequest {
        customers: (b * 1000..((b + 1) * 1000).min(customers))
            .map(customer)
            .collect(),
    });
    let started = Instant::now();
    let response = customer_client
        .import_customers(tokio_stream::iter(messages))
        .await?
        .into_inner();
    let elapsed = started.elapsed();
    anyhow::ensure!(
        response.created_count as u64 == customers,
        "imported {response:?} of {customers}"
    );
    println!(
        "| ImportCustomers, one stream, 1000 per message | {:.0} customers/s | {customers} customers in {:.1} s |",
        customers as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
    );

    let mut rng = Generator(seed);
    let counts = purchase_counts(customers, purchases, &mut rng);
    let order = arrival_order(&counts, &mut rng);
    drop(counts);
    let total = order.len();
    let mut activity_client = ActivityServiceClient::new(channel);
    let messages = order
        .chunks(batch)
        .enumerate()
        .map(move |(b, chunk)| pb::ImportActivityRequest {
            purchases: chunk
                .iter()
                .enumerate()
                .map(|(i, &customer)| purchase(b * batch + i, total, customer, &mut rng))
                .collect(),
            engagements: Vec::new(),
        })
        .collect::<Vec<_>>();
    let started = Instant::now();
    let response = activity_client
        .import_activity(tokio_stream::iter(messages))
        .await?
        .into_inner();
    let elapsed = started.elapsed();
    anyhow::ensure!(
        response.accepted_count as u64 == purchases,
        "recorded {response:?} of {purchases}"
    );
    println!(
        "| ImportActivity, one stream, {batch} per message | {:.0} purchases/s | {purchases} purchases in {:.1} s |",
        purchases as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.run {
        Run::Create {
            requests,
            connections,
            concurrency,
            first,
        } => create(&args.addr, requests, first, connections, concurrency).await,
        Run::Dataset {
            customers,
            purchases,
            seed,
            batch,
        } => dataset(&args.addr, customers, purchases, seed, batch).await,
    }
}
