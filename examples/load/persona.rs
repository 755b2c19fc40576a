//! Reads of personas: GetCustomerPersona for random customers of a loaded
//! data set (closed loop, closed loop while purchases arrive, or open
//! loop), and BreakdownPersonas over everyone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::drive::Connection;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use segmentd::grpc::pb;
use segmentd::grpc::pb::activity_service_client::ActivityServiceClient;
use segmentd::grpc::pb::persona_service_client::PersonaServiceClient;

use crate::counted::counted_persona_call;
use crate::data::customer_id;
use crate::drive::{channel, channels, closed_loop, open_loop};
use crate::report::{median_of, report};

/// What `load persona` is asked for.
#[derive(Debug, clap::Args)]
pub struct PersonaLoad {
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

/// Whether a GetCustomerPersona call was answered: objectors get
/// FAILED_PRECONDITION, which is an answer too.
fn answered<T>(outcome: Result<T, tonic::Status>) -> Result<(), tonic::Status> {
    match outcome {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(()),
        Err(status) => Err(status),
    }
}

/// GetCustomerPersona for random customers; prints calls/s and latency.
pub async fn persona(addr: &str, load: PersonaLoad) -> anyhow::Result<()> {
    let PersonaLoad {
        requests,
        connections,
        concurrency,
        customers,
        rate,
        warmup,
        purchases_per_second,
    } = load;
    anyhow::ensure!(
        rate == 0 || purchases_per_second == 0,
        "--purchases-per-second goes with a closed loop, not with --rate"
    );
    let recorded = Arc::new(AtomicU64::new(0));
    let purchases = if purchases_per_second > 0 {
        Some(tokio::spawn(record_purchases(
            channel(addr).await?,
            purchases_per_second,
            customers,
            Arc::clone(&recorded),
        )))
    } else {
        None
    };
    let channels = channels(addr, connections).await?;
    let pick = move |rng: &mut StdRng| pb::GetCustomerPersonaRequest {
        name: format!("customers/{}", customer_id(rng.random_range(0..customers))),
        evaluation_time: None,
    };
    if rate > 0 {
        let mut rng = StdRng::seed_from_u64(1);
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
                        outcome => answered(outcome),
                    }
                }
            },
        )
        .await;
    }
    let (latencies, elapsed) = closed_loop(requests, concurrency, |worker| {
        let client = PersonaServiceClient::new(channels[worker % connections].clone());
        let mut rng = StdRng::seed_from_u64(worker as u64 + 1);
        move |_| {
            let request = pick(&mut rng);
            let mut client = client.clone();
            async move { answered(client.get_customer_persona(request).await) }
        }
    })
    .await?;
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
    report(&run, elapsed, &latencies);
    Ok(())
}

/// Records one purchase per call, `rate` calls a second, for random
/// customers, until aborted; `recorded` counts the calls answered, and a
/// refused call ends it with the error.
async fn record_purchases(
    channel: Connection,
    rate: u64,
    customers: u64,
    recorded: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let client = ActivityServiceClient::new(channel);
    // Seeded by the process id: these purchases need not repeat from run
    // to run, only differ from those of another process.
    let mut rng = StdRng::seed_from_u64(std::process::id().into());
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
                customer: format!("customers/{}", customer_id(rng.random_range(0..customers))),
                occurred_at: Some(prost_types::Timestamp {
                    seconds: now.as_secs() as i64,
                    nanos: now.subsec_nanos() as i32,
                }),
                amount: Some(pb::Money {
                    currency_code: "USD".into(),
                    minor_units: rng.random_range(500..20_500),
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

/// BreakdownPersonas over everyone, one call at a time after one warm-up
/// call; prints the median.
pub async fn persona_breakdown(addr: &str, runs: usize) -> anyhow::Result<()> {
    let mut client = PersonaServiceClient::new(channel(addr).await?);
    let (median, customers) = median_of(runs, async || {
        let response = client
            .breakdown_personas(pb::BreakdownPersonasRequest::default())
            .await?
            .into_inner();
        Ok(response.total_count + response.excluded_count)
    })
    .await?;
    println!(
        "| BreakdownPersonas over {customers} customers, median of {runs} calls | | {median:.2} ms |"
    );
    Ok(())
}
