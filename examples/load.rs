//! Load generator for a running segmentd: unary CreateCustomer with many
//! calls in flight, and a seeded synthetic data set streamed in over
//! ImportCustomers and ImportActivity. Prints one Markdown table row per
//! run. `export` writes the very same data set as CSV files, without a
//! server, for other engines to compare with. See `bench/run.sh` and
//! `bench/compare.sh`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use segmentd::grpc::pb::activity_service_client::ActivityServiceClient;
use segmentd::grpc::pb::customer_service_client::CustomerServiceClient;
use segmentd::grpc::pb::{self, google::r#type::Date};
use tonic::transport::Channel;

/// The server's allocator, so that the load generator's own allocations
/// cost it no more than the server's cost the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// purchases over ImportActivity, then their engagement events over
    /// another ImportActivity stream.
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
        /// Events per ImportActivity message.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
    },
    /// The same synthetic data set as `dataset`, written as CSV files
    /// (customers.csv, purchases.csv, engagements.csv) without a server.
    Export {
        /// The directory to write to; made if missing.
        #[arg(long)]
        dir: PathBuf,
        /// Customers.
        #[arg(long, default_value_t = 1_000_000)]
        customers: u64,
        /// Purchases in all.
        #[arg(long, default_value_t = 10_000_000)]
        purchases: u64,
        /// Seed of the generator: the same seed, the same data.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Unary GetCustomerPersona calls for random customers of a loaded
    /// data set, for a fixed time or for a fixed rate.
    Persona(PersonaLoad),
    /// grpc.health.v1.Health/Check at a fixed rate: the same open-loop load
    /// as `persona --rate` on a call that does no work, which shows how
    /// much of the latency is the transport's and the machine's.
    Health {
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
    },
    /// No server: sleeps 50 µs at a time and counts the wake-ups that come
    /// late, which shows how quickly this machine wakes an idle core.
    Wakeups {
        /// How long to go on.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// BreakdownPersonas over everyone, one call at a time; prints the median.
    PersonaBreakdown {
        /// Timed calls, after one warm-up call.
        #[arg(long, default_value_t = 7)]
        runs: usize,
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
        objects_to_profiling: objects_to_profiling(n),
        ..Default::default()
    }
}

/// Whether customer `n` objects to profiling: about one in a hundred,
/// spread over the customers independently of their other fields.
fn objects_to_profiling(n: u64) -> bool {
    Generator(n).next() % 100 == 0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `count` connections to the server, each its own HTTP/2 connection.
async fn channels(addr: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        channels.push(channel);
    }
    Ok(channels)
}

async fn connect(addr: &str) -> anyhow::Result<CustomerServiceClient<Channel>> {
    let channel = channels(addr, 1).await?.remove(0);
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
    report(
        &format!("CreateCustomer, {concurrency} in flight over {connections} connections"),
        started.elapsed(),
        latencies,
    );
    Ok(())
}

/// Prints one table row: calls per second and latency percentiles.
fn report(run: &str, elapsed: Duration, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "| {run} | {:.0} calls/s | p50 {:.2} ms, p99 {:.2} ms |",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
}

/// Records one purchase per call, `rate` calls a second, for random
/// customers, until aborted; `recorded` counts the calls answered, and a
/// refused call ends it with the error.
async fn record_purchases(
    channel: Channel,
    rate: u64,
    customers: u64,
    recorded: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let client = ActivityServiceClient::new(channel);
    let mut rng = Generator(std::process::id().into());
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut sent = 0u64;
    loop {
        tick.tick().await;
        if let Ok(status) = failed_rx.try_recv() {
            return Err(anyhow::Error::from(status).context("RecordActivity"));
        }
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            sent += 1;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            let purchase = pb::Purchase {
                purchase_id: format!("live-{}-{sent}", now.as_nanos()),
                customer: format!("customers/{}", customer_id(rng.next() % customers)),
                occurred_at: Some(prost_types::Timestamp {
                    seconds: now.as_secs() as i64,
                    nanos: now.subsec_nanos() as i32,
                }),
                amount: Some(pb::Money {
                    currency_code: "USD".into(),
                    minor_units: 500 + (rng.next() % 20_000) as i64,
                }),
                quantity: 1,
                category: "live".into(),
                durability: pb::ProductDurability::Consumable as i32,
            };
            let request = pb::RecordActivityRequest {
                purchases: vec![purchase],
                engagements: vec![],
            };
            let (mut client, recorded, failed_tx) =
                (client.clone(), Arc::clone(&recorded), failed_tx.clone());
            tokio::spawn(async move {
                match client.record_activity(request).await {
                    Ok(_) => {
                        recorded.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => {
                        let _ = failed_tx.send(status);
                    }
                }
            });
        }
    }
}

/// The codec of an open-loop GetCustomerPersona call: the request encoded
/// as usual, the answer's bytes counted but not decoded, as h2load would,
/// so that the load generator's one core keeps pace with the server's.
#[derive(Debug, Clone, Copy, Default)]
struct CountAnswer;

/// Counts an answer's bytes and drops them.
#[derive(Debug, Clone, Copy, Default)]
struct ByteCounter;

impl tonic::codec::Decoder for ByteCounter {
    type Item = usize;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<usize>, tonic::Status> {
        use bytes::Buf;
        let length = src.remaining();
        src.advance(length);
        Ok(Some(length))
    }
}

impl tonic::codec::Codec for CountAnswer {
    type Encode = pb::GetCustomerPersonaRequest;
    type Decode = usize;
    type Encoder = tonic_prost::ProstEncoder<pb::GetCustomerPersonaRequest>;
    type Decoder = ByteCounter;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ByteCounter
    }
}

/// GetCustomerPersona, its answer counted rather than decoded.
async fn counted_persona_call(
    channel: Channel,
    request: pb::GetCustomerPersonaRequest,
) -> Result<usize, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let path =
        http::uri::PathAndQuery::from_static("/segmentd.v1.PersonaService/GetCustomerPersona");
    let answer = grpc
        .unary(tonic::Request::new(request), path, CountAnswer)
        .await?;
    Ok(answer.into_inner())
}

/// What `load persona` is asked for.
#[derive(Debug, clap::Args)]
struct PersonaLoad {
    /// Calls in all (with --rate, after the warm-up).
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// Connections to spread them over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight at once, without --rate.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Customers of the data set: ids are drawn from the first this many.
    #[arg(long, default_value_t = 1_000_000)]
    customers: u64,
    /// Calls per second to hold, spread evenly; 0 sends as fast as
    /// answers come.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// With --rate: seconds of calls sent first, at the same rate, to
    /// warm both ends up, and left out of the figures.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Purchases per second recorded meanwhile, one per RecordActivity
    /// call, for random customers: personas while activity arrives.
    #[arg(long, default_value_t = 0)]
    purchases_per_second: u64,
}

/// GetCustomerPersona for random customers; prints calls/s and latency.
async fn persona(addr: &str, load: PersonaLoad) -> anyhow::Result<()> {
    let PersonaLoad {
        requests,
        connections,
        concurrency,
        customers,
        rate,
        warmup,
        purchases_per_second,
    } = load;
    use segmentd::grpc::pb::persona_service_client::PersonaServiceClient;
    anyhow::ensure!(
        rate == 0 || purchases_per_second == 0,
        "--purchases-per-second goes with a closed loop, not with --rate"
    );
    let recorded = Arc::new(AtomicU64::new(0));
    let purchases = if purchases_per_second > 0 {
        let channel = channels(addr, 1).await?.remove(0);
        Some(tokio::spawn(record_purchases(
            channel,
            purchases_per_second,
            customers,
            Arc::clone(&recorded),
        )))
    } else {
        None
    };
    let channels = channels(addr, connections).await?;
    let clients: Vec<_> = channels
        .iter()
        .cloned()
        .map(PersonaServiceClient::new)
        .collect();
    let pick = move |rng: &mut Generator| pb::GetCustomerPersonaRequest {
        name: format!("customers/load-{:09}", rng.next() % customers),
        evaluation_time: None,
    };
    // Objectors get FAILED_PRECONDITION, which is an answer too.
    let answered =
        |outcome: Result<tonic::Response<pb::PersonaAssignment>, tonic::Status>| match outcome {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(()),
            Err(status) => Err(status),
        };
    if rate > 0 {
        let mut rng = Generator(1);
        return open_loop(
            format!("GetCustomerPersona, at {rate} calls/s over {connections} connections"),
            requests,
            rate,
            warmup,
            move |n| {
                let channel = channels[n as usize % connections].clone();
                let request = pick(&mut rng);
                async move {
                    match counted_persona_call(channel, request).await {
                        Ok(0) => Err(tonic::Status::internal("an empty persona assignment")),
                        Ok(_) => Ok(()),
                        Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(()),
                        Err(status) => Err(status),
                    }
                }
            },
        )
        .await;
    }
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let mut client = clients[worker % connections].clone();
        let next = Arc::clone(&next);
        workers.push(tokio::spawn(async move {
            let mut rng = Generator(worker as u64 + 1);
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    return Ok::<_, tonic::Status>(latencies);
                }
                let request = pick(&mut rng);
                let sent = Instant::now();
                answered(client.get_customer_persona(request).await)?;
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    let mut run =
        format!("GetCustomerPersona, {concurrency} in flight over {connections} connections");
    if let Some(purchases) = purchases {
        purchases.abort();
        if let Ok(Err(error)) = purchases.await {
            return Err(error.context("recording purchases"));
        }
        let rate = recorded.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64();
        run.push_str(&format!(", {rate:.0} purchases/s recorded meanwhile"));
    }
    report(&run, elapsed, latencies);
    Ok(())
}

/// Sends `warmup` seconds of calls and then `requests` more at `rate` calls
/// per second, and prints one table row for those after the warm-up.
///
/// A task starts each call when it is due, evenly spaced, and between
/// calls it yields rather than sleeps: the load generator's core spins,
/// so that neither the async timer's 1 ms grain nor the generator's own
/// wake-ups move a call from its due time. Each call is timed from when
/// it was due, queueing included: a stall anywhere shows in every call it
/// delays.
async fn open_loop<F, C>(
    run: String,
    requests: u64,
    rate: u64,
    warmup: f64,
    mut call: F,
) -> anyhow::Result<()>
where
    F: FnMut(u64) -> C + Send + 'static,
    C: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    anyhow::ensure!(rate > 0, "--rate must be above 0");
    let warmup_calls = (warmup.max(0.0) * rate as f64) as u64;
    // Answers go to a channel nobody waits on until the end, so that a
    // finished call is freed at once and wakes nothing.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    let due = move |n: u64| started + Duration::from_secs_f64(n as f64 / rate as f64);
    let measured_from = due(warmup_calls);
    let ticker = tokio::spawn(async move {
        // How late each measured call left: the generator's own check that
        // it kept pace.
        let mut late = Vec::with_capacity(requests as usize);
        let mut n = 0;
        while n < warmup_calls + requests {
            let now = Instant::now();
            while n < warmup_calls + requests && due(n) <= now {
                let due = due(n);
                if n >= warmup_calls {
                    late.push(now - due);
                }
                let done_tx = (n >= warmup_calls).then(|| done_tx.clone());
                let call = call(n);
                tokio::spawn(async move {
                    let outcome = call.await;
                    if let Some(done_tx) = done_tx {
                        let _ = done_tx.send(outcome.map(|()| due.elapsed()));
                    }
                });
                n += 1;
            }
            tokio::task::yield_now().await;
        }
        late.sort();
        late
    });
    let late = ticker.await?;
    let latencies = tokio::task::spawn_blocking(move || {
        done_rx
            .iter()
            .collect::<Result<Vec<Duration>, tonic::Status>>()
    })
    .await??;
    report(
        &format!(
            "{run}, sent at most {:.2} ms late for 99%",
            percentile(&late, 0.99).as_secs_f64() * 1e3
        ),
        measured_from.elapsed(),
        latencies,
    );
    Ok(())
}

/// grpc.health.v1.Health/Check at a fixed rate.
async fn health(
    addr: &str,
    requests: u64,
    connections: usize,
    rate: u64,
    warmup: f64,
) -> anyhow::Result<()> {
    use tonic_health::pb::health_client::HealthClient;
    let clients: Vec<_> = channels(addr, connections)
        .await?
        .into_iter()
        .map(HealthClient::new)
        .collect();
    open_loop(
        format!("Health/Check, at {rate} calls/s over {connections} connections"),
        requests,
        rate,
        warmup,
        move |n| {
            let mut client = clients[n as usize % connections].clone();
            async move {
                let request = tonic_health::pb::HealthCheckRequest::default();
                client.check(request).await.map(|_| ())
            }
        },
    )
    .await
}

/// Sleeps 50 µs at a time for `period` and prints how many wake-ups came
/// more than 0.5 ms and more than 1 ms late, and the latest.
fn wakeups(period: Duration) {
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
        worst.as_secs_f64() * 1e3,
    );
}

/// BreakdownPersonas, timed call by call.
async fn persona_breakdown(addr: &str, runs: usize) -> anyhow::Result<()> {
    use segmentd::grpc::pb::persona_service_client::PersonaServiceClient;
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = PersonaServiceClient::new(channel);
    let mut times = Vec::new();
    let mut customers = 0;
    for run in 0..=runs {
        let started = Instant::now();
        let response = client
            .breakdown_personas(pb::BreakdownPersonasRequest::default())
            .await?
            .into_inner();
        if run > 0 {
            times.push(started.elapsed());
        }
        customers = response.total_count + response.excluded_count;
    }
    times.sort();
    println!(
        "| BreakdownPersonas over {customers} customers, median of {runs} calls | | {:.2} ms |",
        percentile(&times, 0.5).as_secs_f64() * 1e3
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

/// Three years of 365 days, in seconds: the span of the generated activity.
const THREE_YEARS: f64 = 3.0 * 365.0 * 86_400.0;

const CATEGORIES: [&str; 6] = ["books", "music", "coffee", "garden", "toys", "electronics"];

const CHANNELS: [&str; 3] = ["web", "store", "email"];

/// The id of customer `n`, as in its resource name.
fn customer_id(n: u64) -> String {
    format!("load-{n:09}")
}

/// One generated purchase.
struct Purchase {
    /// Its place in arrival order; the id is `p{n}`.
    n: usize,
    customer: u32,
    /// Seconds since the epoch.
    occurred_at: i64,
    amount_minor: i64,
    quantity: i32,
    category: &'static str,
    durability: pb::ProductDurability,
}

impl Purchase {
    fn to_pb(&self) -> pb::Purchase {
        pb::Purchase {
            purchase_id: format!("p{}", self.n),
            customer: format!("customers/{}", customer_id(u64::from(self.customer))),
            occurred_at: Some(prost_types::Timestamp {
                seconds: self.occurred_at,
                nanos: 0,
            }),
            amount: Some(pb::Money {
                currency_code: "USD".into(),
                minor_units: self.amount_minor,
            }),
            quantity: self.quantity,
            category: self.category.into(),
            durability: self.durability as i32,
        }
    }
}

/// The purchases of a data set in arrival order. Purchases arrive roughly
/// in time order over three years; one in a hundred arrives up to 30 days
/// late.
struct Purchases {
    order: Vec<u32>,
    next: usize,
    rng: Generator,
}

impl Iterator for Purchases {
    type Item = Purchase;

    fn next(&mut self) -> Option<Purchase> {
        let n = self.next;
        let &customer = self.order.get(n)?;
        self.next += 1;
        let rng = &mut self.rng;
        let total = self.order.len();
        let on_time = PURCHASES_FROM + (n as f64 / total as f64 * THREE_YEARS) as i64;
        let late = if rng.unit() < 0.01 {
            (rng.unit() * 30.0 * 86_400.0) as i64
        } else {
            0
        };
        Some(Purchase {
            n,
            customer,
            occurred_at: on_time - late,
            // Exponential around $40, at least $2.
            amount_minor: 200 + (-(1.0 - rng.unit()).ln() * 4_000.0) as i64,
            quantity: 1 + (rng.next() % 3) as i32,
            category: CATEGORIES[(rng.next() % CATEGORIES.len() as u64) as usize],
            durability: pb::ProductDurability::try_from(1 + (rng.next() % 3) as i32)
                .expect("1 to 3 are durabilities"),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.order.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Purchases {}

/// One generated engagement event.
struct Engagement {
    /// Its number; the id is `e{n}`.
    n: usize,
    customer: u32,
    /// Seconds since the epoch.
    occurred_at: i64,
    kind: pb::EngagementType,
    /// For FEEDBACK only.
    nps_score: Option<i32>,
    channel: &'static str,
}

impl Engagement {
    fn to_pb(&self) -> pb::EngagementEvent {
        pb::EngagementEvent {
            event_id: format!("e{}", self.n),
            customer: format!("customers/{}", customer_id(u64::from(self.customer))),
            occurred_at: Some(prost_types::Timestamp {
                seconds: self.occurred_at,
                nanos: 0,
            }),
            r#type: self.kind as i32,
            nps_score: self.nps_score,
            channel: self.channel.into(),
        }
    }
}

/// A seeded synthetic data set: the same arguments, the same data, whether
/// it is streamed to a server or written to files.
struct DataSet {
    customers: u64,
    purchases: u64,
    seed: u64,
}

impl DataSet {
    /// The customers, in order of their number.
    fn customers(&self) -> impl Iterator<Item = pb::Customer> {
        (0..self.customers).map(customer)
    }

    /// The purchases in arrival order: `purchases` in all, drawn from the
    /// generator seeded with `seed`.
    fn purchases(&self) -> Purchases {
        let mut rng = Generator(self.seed);
        let counts = purchase_counts(self.customers, self.purchases, &mut rng);
        let order = arrival_order(&counts, &mut rng);
        Purchases {
            order,
            next: 0,
            rng,
        }
    }

    /// The engagement events, customer by customer, at times spread over
    /// the same three years as the purchases: about 40% of customers visit
    /// one to five times, 8% give feedback once or twice (with an NPS score
    /// of 0 to 10) and 3% refer someone once. They are drawn from a
    /// generator of their own, so that the purchases do not depend on them.
    fn engagements(&self) -> Vec<Engagement> {
        let mut rng = Generator(self.seed ^ 0x656E_6761_6765_6D65);
        let mut events = Vec::new();
        for customer in 0..self.customers as u32 {
            let visits = if rng.unit() < 0.40 {
                1 + rng.next() % 5
            } else {
                0
            };
            let feedback = if rng.unit() < 0.08 {
                1 + rng.next() % 2
            } else {
                0
            };
            let referrals = u64::from(rng.unit() < 0.03);
            let kinds = std::iter::repeat_n(pb::EngagementType::Visit, visits as usize)
                .chain(std::iter::repeat_n(
                    pb::EngagementType::Feedback,
                    feedback as usize,
                ))
                .chain(std::iter::repeat_n(
                    pb::EngagementType::Referral,
                    referrals as usize,
                ));
            for kind in kinds {
                let occurred_at = PURCHASES_FROM + (rng.unit() * THREE_YEARS) as i64;
                let nps_score =
                    (kind == pb::EngagementType::Feedback).then(|| (rng.next() % 11) as i32);
                let channel = CHANNELS[(rng.next() % CHANNELS.len() as u64) as usize];
                events.push(Engagement {
                    n: events.len(),
                    customer,
                    occurred_at,
                    kind,
                    nps_score,
                    channel,
                });
            }
        }
        events
    }
}

async fn dataset(addr: &str, data: &DataSet, batch: usize) -> anyhow::Result<()> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut customer_client = CustomerServiceClient::new(channel.clone());
    let customers = data.customers;
    let mut all = data.customers();
    let messages = std::iter::from_fn(move || {
        let customers: Vec<_> = all.by_ref().take(1000).collect();
        (!customers.is_empty()).then_some(pb::ImportCustomersRequest { customers })
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

    let mut activity_client = ActivityServiceClient::new(channel);
    let mut purchases = data.purchases();
    let total = purchases.len() as u64;
    let messages = std::iter::from_fn(|| {
        let chunk: Vec<_> = purchases.by_ref().take(batch).map(|p| p.to_pb()).collect();
        (!chunk.is_empty()).then_some(pb::ImportActivityRequest {
            purchases: chunk,
            engagements: Vec::new(),
        })
    })
    .collect::<Vec<_>>();
    let (response, elapsed) = import_activity(&mut activity_client, messages).await?;
    anyhow::ensure!(
        response.accepted_count as u64 == total,
        "recorded {response:?} of {total}"
    );
    println!(
        "| ImportActivity, one stream, {batch} per message | {:.0} purchases/s | {total} purchases in {:.1} s |",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
    );

    let engagements = data.engagements();
    let total = engagements.len() as u64;
    let messages = engagements
        .chunks(batch)
        .map(|chunk| pb::ImportActivityRequest {
            purchases: Vec::new(),
            engagements: chunk.iter().map(Engagement::to_pb).collect(),
        })
        .collect::<Vec<_>>();
    drop(engagements);
    let (response, elapsed) = import_activity(&mut activity_client, messages).await?;
    anyhow::ensure!(
        response.accepted_count as u64 == total,
        "recorded {response:?} of {total} engagement events"
    );
    println!(
        "| ImportActivity (engagement events), one stream, {batch} per message | {:.0} events/s | {total} visits, feedback and referrals in {:.1} s |",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
    );
    Ok(())
}

/// Streams `messages` over one ImportActivity call; the answer and how
/// long it took.
async fn import_activity(
    client: &mut ActivityServiceClient<Channel>,
    messages: Vec<pb::ImportActivityRequest>,
) -> anyhow::Result<(pb::ImportActivityResponse, Duration)> {
    let started = Instant::now();
    let response = client
        .import_activity(tokio_stream::iter(messages))
        .await?
        .into_inner();
    Ok((response, started.elapsed()))
}

/// An enum's name without its prefix: `GENDER_FEMALE` → `FEMALE`.
fn short_name<'a>(name: &'a str, prefix: &str) -> &'a str {
    name.strip_prefix(prefix).unwrap_or(name)
}

fn create_csv(dir: &Path, name: &str, header: &str) -> anyhow::Result<BufWriter<File>> {
    let mut file = BufWriter::with_capacity(1 << 20, File::create(dir.join(name))?);
    writeln!(file, "{header}")?;
    Ok(file)
}

/// Writes the data set as CSV files: customers.csv, purchases.csv and
/// engagements.csv. Times are seconds since the epoch, money is in minor
/// units, enums are their names without the prefix (`FEMALE`, `EXTERNAL`),
/// and a birth date is YYYY-MM-DD.
fn export(dir: &Path, data: &DataSet) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(dir)?;

    let mut file = create_csv(
        dir,
        "customers.csv",
        "customer_id,party,relationship,department,birth_date,gender,annual_income_minor,\
         currency_code,country,city,language,consent_email,objects_to_profiling",
    )?;
    for c in data.customers() {
        let id = c.name.strip_prefix("customers/").unwrap_or(&c.name);
        let party = pb::Party::try_from(c.party).unwrap_or_default();
        let relationship = pb::Relationship::try_from(c.relationship).unwrap_or_default();
        let gender = pb::Gender::try_from(c.gender).unwrap_or_default();
        let email =
            pb::ConsentStatus::try_from(c.consent.unwrap_or_default().email).unwrap_or_default();
        let birth = c
            .birth_date
            .map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
            .unwrap_or_default();
        let (income, currency) = c
            .annual_income
            .map(|m| (m.minor_units.to_string(), m.currency_code))
            .unwrap_or_default();
        let location = c.location.unwrap_or_default();
        writeln!(
            file,
            "{id},{},{},{},{birth},{},{income},{currency},{},{},{},{},{}",
            short_name(party.as_str_name(), "PARTY_"),
            short_name(relationship.as_str_name(), "RELATIONSHIP_"),
            c.department,
            short_name(gender.as_str_name(), "GENDER_"),
            location.country_code,
            location.city,
            c.language,
            short_name(email.as_str_name(), "CONSENT_STATUS_"),
            c.objects_to_profiling,
        )?;
    }
    file.flush()?;

    let mut file = create_csv(
        dir,
        "purchases.csv",
        "purchase_id,customer_id,occurred_at,amount_minor,currency_code,quantity,category,durability",
    )?;
    let mut purchases = 0u64;
    for p in data.purchases() {
        writeln!(
            file,
            "p{},{},{},{},USD,{},{},{}",
            p.n,
            customer_id(u64::from(p.customer)),
            p.occurred_at,
            p.amount_minor,
            p.quantity,
            p.category,
            short_name(p.durability.as_str_name(), "PRODUCT_DURABILITY_"),
        )?;
        purchases += 1;
    }
    file.flush()?;

    let mut file = create_csv(
        dir,
        "engagements.csv",
        "event_id,customer_id,occurred_at,type,nps_score,channel",
    )?;
    let engagements = data.engagements();
    for e in &engagements {
        writeln!(
            file,
            "e{},{},{},{},{},{}",
            e.n,
            customer_id(u64::from(e.customer)),
            e.occurred_at,
            short_name(e.kind.as_str_name(), "ENGAGEMENT_TYPE_"),
            e.nps_score.map(|s| s.to_string()).unwrap_or_default(),
            e.channel,
        )?;
    }
    file.flush()?;
    println!(
        "| export to CSV | | {} customers, {purchases} purchases, {} engagement events in {:.1} s |",
        data.customers,
        engagements.len(),
        started.elapsed().as_secs_f64(),
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
        } => {
            let data = DataSet {
                customers,
                purchases,
                seed,
            };
            dataset(&args.addr, &data, batch).await
        }
        Run::Persona(load) => persona(&args.addr, load).await,
        Run::Health {
            requests,
            connections,
            rate,
            warmup,
        } => health(&args.addr, requests, connections, rate, warmup).await,
        Run::Wakeups { seconds } => {
            wakeups(Duration::from_secs(seconds));
            Ok(())
        }
        Run::PersonaBreakdown { runs } => persona_breakdown(&args.addr, runs).await,
        Run::Export {
            dir,
            customers,
            purchases,
            seed,
        } => export(
            &dir,
            &DataSet {
                customers,
                purchases,
                seed,
            },
        ),
    }
}
