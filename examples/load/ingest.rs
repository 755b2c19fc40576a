//! Writes: unary CreateCustomer calls, and the synthetic data set streamed
//! in over ImportCustomers and ImportActivity.

use std::time::{Duration, Instant};

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;

use crate::drive::Connection;
use segmentd::grpc::pb;
use segmentd::grpc::pb::activity_service_client::ActivityServiceClient;
use segmentd::grpc::pb::customer_service_client::CustomerServiceClient;

use crate::data::{customer, DataSet, Engagement};
use crate::drive::{channel, channels, closed_loop};
use crate::report::report;

/// What `load create` is asked for.
#[derive(Debug, clap::Args)]
pub struct CreateLoad {
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
}

/// Unary CreateCustomer calls, closed loop; prints calls/s and latency.
pub async fn create(addr: &str, load: CreateLoad) -> anyhow::Result<()> {
    let CreateLoad {
        requests,
        connections,
        concurrency,
        first,
    } = load;
    let clients: Vec<_> = channels(addr, connections)
        .await?
        .into_iter()
        .map(CustomerServiceClient::new)
        .collect();
    let (latencies, elapsed) = closed_loop(requests, concurrency, |worker| {
        let client = clients[worker % connections].clone();
        move |n| {
            let mut customer = customer(first + n);
            let id = customer.name.trim_start_matches("customers/").to_owned();
            customer.name.clear();
            let request = pb::CreateCustomerRequest {
                customer_id: id,
                customer: Some(customer),
                request_id: String::new(),
            };
            let mut client = client.clone();
            async move { client.create_customer(request).await.map(drop) }
        }
    })
    .await?;
    report(
        &format!("CreateCustomer, {concurrency} in flight over {connections} connections"),
        elapsed,
        &latencies,
    );
    Ok(())
}

/// Streams the data set in: customers, then purchases, then engagement
/// events, each over one call, and prints one row for each.
pub async fn dataset(addr: &str, data: &DataSet, batch: usize) -> anyhow::Result<()> {
    let channel = channel(addr).await?;
    let mut customer_client = CustomerServiceClient::new(channel.clone());
    let customers = data.customers;
    let mut all = data.customers();
    let messages = std::iter::from_fn(move || {
        let customers: Vec<_> = all.by_ref().take(1000).collect();
        (!customers.is_empty()).then_some(pb::ImportCustomersRequest { customers })
    });
    let (response, elapsed) =
        timed(customer_client.import_customers(tokio_stream::iter(messages))).await;
    let response = response?.into_inner();
    anyhow::ensure!(
        response.created_count as u64 == customers,
        "imported {response:?} of {customers}"
    );
    report_import(
        "ImportCustomers, one stream, 1000 per message",
        "customers",
        customers,
        "customers",
        elapsed,
    );

    let mut activity_client = ActivityServiceClient::new(channel);
    let mut purchases = data.purchases();
    let total = purchases.len() as u64;
    let messages = made(total, move |send| loop {
        let chunk: Vec<_> = purchases.by_ref().take(batch).map(|p| p.to_pb()).collect();
        if chunk.is_empty()
            || !send(pb::ImportActivityRequest {
                purchases: chunk,
                engagements: Vec::new(),
            })
        {
            return;
        }
    });
    let elapsed = import_activity(&mut activity_client, messages, total, "purchases").await?;
    report_import(
        &format!("ImportActivity, one stream, {batch} per message"),
        "purchases",
        total,
        "purchases",
        elapsed,
    );

    let engagements = data.engagements();
    let total = engagements.len() as u64;
    let messages = made(total, move |send| {
        for chunk in engagements.chunks(batch) {
            let message = pb::ImportActivityRequest {
                purchases: Vec::new(),
                engagements: chunk.iter().map(Engagement::to_pb).collect(),
            };
            if !send(message) {
                return;
            }
        }
    });
    let elapsed =
        import_activity(&mut activity_client, messages, total, "engagement events").await?;
    report_import(
        &format!("ImportActivity (engagement events), one stream, {batch} per message"),
        "events",
        total,
        "visits, feedback and referrals",
        elapsed,
    );
    Ok(())
}

/// The most events whose messages are all made before the call starts, so
/// that making them is not timed; a larger data set's messages are made
/// on a thread of their own while the call runs, at most
/// [`MESSAGES_AHEAD`] ahead, for all of them would not fit in memory
/// (100 million purchases take about 20 GiB as messages).
const MADE_BEFORE_UP_TO: u64 = 20_000_000;

/// Messages made ahead of the call, for a large data set.
const MESSAGES_AHEAD: usize = 32;

type Messages = std::pin::Pin<Box<dyn Stream<Item = pb::ImportActivityRequest> + Send>>;

/// The messages that `produce` hands to its argument (which says whether
/// to go on), for `total` events: see [`MADE_BEFORE_UP_TO`].
fn made(
    total: u64,
    produce: impl FnOnce(&mut dyn FnMut(pb::ImportActivityRequest) -> bool) + Send + 'static,
) -> Messages {
    if total <= MADE_BEFORE_UP_TO {
        let mut all = Vec::new();
        produce(&mut |message| {
            all.push(message);
            true
        });
        return Box::pin(tokio_stream::iter(all));
    }
    let (sender, receiver) = tokio::sync::mpsc::channel(MESSAGES_AHEAD);
    std::thread::spawn(move || produce(&mut |message| sender.blocking_send(message).is_ok()));
    Box::pin(ReceiverStream::new(receiver))
}

/// Streams `messages` over one ImportActivity call and checks that all
/// `total` events, `what` they are, were accepted; how long it took.
async fn import_activity(
    client: &mut ActivityServiceClient<Connection>,
    messages: Messages,
    total: u64,
    what: &str,
) -> anyhow::Result<Duration> {
    let (response, elapsed) = timed(client.import_activity(messages)).await;
    let response = response?.into_inner();
    anyhow::ensure!(
        response.accepted_count as u64 == total,
        "recorded {response:?} of {total} {what}"
    );
    Ok(elapsed)
}

/// Prints one table row: `total` of `what` imported in `elapsed`, so
/// many `unit` a second.
fn report_import(run: &str, unit: &str, total: u64, what: &str, elapsed: Duration) {
    println!(
        "| {run} | {:.0} {unit}/s | {total} {what} in {:.1} s |",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
    );
}

/// Awaits `call`; its outcome and how long it took.
async fn timed<T>(call: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let outcome = call.await;
    (outcome, started.elapsed())
}
