//! Reads of segments: ListCustomerSegments for random customers of a
//! loaded data set, at a fixed rate or a fixed number in flight, and
//! BreakdownCustomers over everyone.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use segmentd::grpc::pb;
use segmentd::grpc::pb::membership_service_client::MembershipServiceClient;
use segmentd::grpc::pb::segmentation_service_client::SegmentationServiceClient;

use crate::data::customer_id;
use crate::drive::{channel, channels, closed_loop, open_loop, Connection};
use crate::report::{median_of, report};

/// What `load customer-segments` is asked for.
#[derive(Debug, clap::Args)]
pub struct CustomerSegmentsLoad {
    /// Calls in all (with --rate, after the warm-up).
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Connections to spread them over.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Customers of the data set: ids are drawn from the first this many.
    #[arg(long, default_value_t = 1_000_000)]
    customers: u64,
    /// Calls per second to hold, spread evenly; 0 sends as fast as
    /// answers come, `--concurrency` at a time.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Calls in flight at once, with `--rate 0`.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// With --rate: seconds of calls sent first, at the same rate, left
    /// out of the figures.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Ask only for the segments the customer is in, without the
    /// explanations.
    #[arg(long)]
    members_only: bool,
}

/// One call; with explanations, every saved segment must be listed.
async fn call(
    mut client: MembershipServiceClient<Connection>,
    request: pb::ListCustomerSegmentsRequest,
) -> Result<(), tonic::Status> {
    let explained = request.explain;
    let answer = client.list_customer_segments(request).await?.into_inner();
    if explained && answer.segments.is_empty() {
        return Err(tonic::Status::internal("no segment explained"));
    }
    Ok(())
}

/// ListCustomerSegments for random customers, at a fixed rate or a fixed
/// number in flight; prints calls/s and latency.
pub async fn customer_segments(addr: &str, load: CustomerSegmentsLoad) -> anyhow::Result<()> {
    let CustomerSegmentsLoad {
        requests,
        connections,
        customers,
        rate,
        concurrency,
        warmup,
        members_only,
    } = load;
    let channels = channels(addr, connections).await?;
    let what = if members_only {
        "members only"
    } else {
        "every segment explained"
    };
    let pick = move |rng: &mut StdRng| pb::ListCustomerSegmentsRequest {
        customer: format!("customers/{}", customer_id(rng.random_range(0..customers))),
        evaluation_time: None,
        explain: !members_only,
    };
    if rate > 0 {
        let mut rng = StdRng::seed_from_u64(1);
        return open_loop(
            format!(
                "ListCustomerSegments, {what}, at {rate} calls/s over {connections} connections"
            ),
            requests,
            rate,
            warmup,
            move |n| {
                let channel = channels[n as usize % connections].clone();
                call(MembershipServiceClient::new(channel), pick(&mut rng))
            },
        )
        .await;
    }
    let (latencies, elapsed) = closed_loop(requests, concurrency, |worker| {
        let client = MembershipServiceClient::new(channels[worker % connections].clone());
        let mut rng = StdRng::seed_from_u64(worker as u64 + 1);
        move |_| call(client.clone(), pick(&mut rng))
    })
    .await?;
    report(
        &format!(
            "ListCustomerSegments, {what}, {concurrency} in flight over {connections} connections"
        ),
        elapsed,
        &latencies,
    );
    Ok(())
}

/// The two questions of `bench/compare.sh`, as of now: the README's (external
/// customers with an income of at least 50,000, by country × gender × age
/// band) and everyone by frequency × relationship × stage.
const BREAKDOWNS: [(&str, &[&str], &str); 2] = [
    (
        "demographics",
        &["customer.country", "customer.gender", "customer.age_band"],
        r#"customer.relationship == "EXTERNAL" && customer.income >= 50000.0"#,
    ),
    (
        "frequency x relationship x stage",
        &[
            "features.frequency",
            "customer.relationship",
            "features.stage",
        ],
        "",
    ),
];

/// BreakdownCustomers over everyone for each of `BREAKDOWNS`, one call at
/// a time after one warm-up call; prints the median of each.
pub async fn breakdown(addr: &str, runs: usize) -> anyhow::Result<()> {
    let mut client =
        SegmentationServiceClient::new(channel(addr).await?).max_decoding_message_size(64 << 20);
    for (name, dimensions, filter) in BREAKDOWNS {
        let request = pb::BreakdownCustomersRequest {
            dimensions: dimensions.iter().map(|d| d.to_string()).collect(),
            filter: filter.to_owned(),
            ..Default::default()
        };
        let (median, customers) = median_of(runs, async || {
            let response = client
                .breakdown_customers(request.clone())
                .await?
                .into_inner();
            Ok(response.total_count + response.excluded_count)
        })
        .await?;
        println!(
            "| BreakdownCustomers, {name}, {customers} customers selected, median of {runs} calls | | {median:.2} ms |"
        );
    }
    Ok(())
}
