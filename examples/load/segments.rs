//! Reads of one customer's saved segments: ListCustomerSegments for random
//! customers of a loaded data set, at a fixed rate.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use segmentd::grpc::pb;
use segmentd::grpc::pb::membership_service_client::MembershipServiceClient;

use crate::data::customer_id;
use crate::drive::{channels, open_loop};

/// What `load customer-segments` is asked for.
#[derive(Debug, clap::Args)]
pub struct CustomerSegmentsLoad {
    /// Calls in all, after the warm-up.
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Connections to spread them over.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Customers of the data set: ids are drawn from the first this many.
    #[arg(long, default_value_t = 1_000_000)]
    customers: u64,
    /// Calls per second to hold, spread evenly.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Seconds of calls sent first, at the same rate, left out of the
    /// figures.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Ask only for the segments the customer is in, without the
    /// explanations.
    #[arg(long)]
    members_only: bool,
}

/// ListCustomerSegments for random customers at a fixed rate; prints
/// calls/s and latency.
pub async fn customer_segments(addr: &str, load: CustomerSegmentsLoad) -> anyhow::Result<()> {
    let CustomerSegmentsLoad {
        requests,
        connections,
        customers,
        rate,
        warmup,
        members_only,
    } = load;
    let channels = channels(addr, connections).await?;
    let mut rng = StdRng::seed_from_u64(1);
    let what = if members_only {
        "members only"
    } else {
        "every segment explained"
    };
    open_loop(
        format!("ListCustomerSegments, {what}, at {rate} calls/s over {connections} connections"),
        requests,
        rate,
        warmup,
        move |n| {
            let mut client =
                MembershipServiceClient::new(channels[n as usize % connections].clone());
            let request = pb::ListCustomerSegmentsRequest {
                customer: format!("customers/{}", customer_id(rng.random_range(0..customers))),
                evaluation_time: None,
                explain: !members_only,
            };
            async move {
                let answer = client.list_customer_segments(request).await?.into_inner();
                // With explanations, every saved segment is listed.
                if !members_only && answer.segments.is_empty() {
                    return Err(tonic::Status::internal("no segment explained"));
                }
                Ok(())
            }
        },
    )
    .await
}
