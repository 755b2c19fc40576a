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
    /// ImportActivity: purchases spread over the customers made by a
    /// previous `import` run of the same size.
    Activity {
        /// Customers the purchases are spread over.
        #[arg(long, default_value_t = 200_000)]
        customers: u64,
        /// Purchases in all.
        #[arg(long, default_value_t = 2_000_000)]
        purchases: u64,
        /// Purchases per message.
        #[arg(long, default_value_t = 10_000)]
        batch: u64,
    },
    /// One ImportCustomers stream.
    Import {
        /// Customers in all.
        #[arg(long, default_value_t = 200_000)]
        customers: u64,
        /// Customers per message.
        #[arg(long, default_value_t = 1000)]
        batch: u64,
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

async fn import(addr: &str, customers: u64, batch: u64) -> anyhow::Result<()> {
    let mut client = connect(addr).await?;
    let offset = 1_000_000_000 - customers; // distinct from the create run's ids
    let messages = (0..customers.div_ceil(batch)).map(move |b| pb::ImportCustomersRequest {
        customers: (b * batch..((b + 1) * batch).min(customers))
            .map(|n| customer(offset + n))
            .collect(),
    });
    let started = Instant::now();
    let response = client
        .import_customers(tokio_stream::iter(messages))
        .await?
        .into_inner();
    let elapsed = started.elapsed();
    let imported = response.created_count + response.updated_count;
    anyhow::ensure!(
        imported as u64 == customers,
        "imported {imported} of {customers}"
    );
    println!(
        "| ImportCustomers, one stream, {batch} per message | {:.0} customers/s | {customers} customers in {:.2} s |",
        customers as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
    );
    Ok(())
}

/// Purchase `n` of a run over `customers` customers: a few heavy buyers,
/// most customers with one to three purchases.
fn purchase(n: u64, customers: u64) -> pb::Purchase {
    let offset = 1_000_000_000 - customers;
    // Skewed: squaring a uniform draw favours low customer numbers.
    let draw = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    let customer = offset + ((draw * draw) * customers as f64) as u64;
    pb::Purchase {
        purchase_id: format!("p{n}"),
        customer: format!("customers/load-{customer:09}"),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_600_000_000 + (n as i64 * 37) % 100_000_000,
            nanos: 0,
        }),
        amount: Some(pb::Money {
            currency_code: "USD".into(),
            minor_units: 500 + (n * 7919 % 20_000) as i64,
        }),
        quantity: 1,
        category: "books".into(),
        durability: 0,
    }
}

async fn activity(addr: &str, customers: u64, purchases: u64, batch: u64) -> anyhow::Result<()> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = ActivityServiceClient::new(channel);
    let messages = (0..purchases.div_ceil(batch)).map(move |b| pb::ImportActivityRequest {
        purchases: (b * batch..((b + 1) * batch).min(purchases))
            .map(|n| purchase(n, customers))
            .collect(),
        engagements: Vec::new(),
    });
    let started = Instant::now();
    let response = client
        .import_activity(tokio_stream::iter(messages))
        .await?
        .into_inner();
    let elapsed = started.elapsed();
    anyhow::ensure!(
        response.accepted_count as u64 + response.duplicate_count as u64 == purchases,
        "recorded {response:?} of {purchases}"
    );
    println!(
        "| ImportActivity, one stream, {batch} per message | {:.0} purchases/s | {purchases} purchases in {:.2} s |",
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
        Run::Import { customers, batch } => import(&args.addr, customers, batch).await,
        Run::Activity {
            customers,
            purchases,
            batch,
        } => activity(&args.addr, customers, purchases, batch).await,
    }
}
