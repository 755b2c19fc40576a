//! The seeded synthetic data set: customers, their purchases and their
//! engagement events, the same for the same arguments whether they are
//! streamed to a server, written to CSV files or loaded by the
//! micro-benchmarks (which include this file).
//!
//! Random draws come from `rand`'s `StdRng`, seeded: its algorithm is
//! fixed for a given `rand` version (pinned by Cargo.lock) and the same on
//! every platform, so a seed names one data set.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use segmentd::grpc::pb::{self, google::r#type::Date};

/// The countries customers live in, in turn.
pub const COUNTRIES: [&str; 8] = ["TR", "EG", "IR", "US", "DE", "SA", "AE", "GB"];

/// 2023-11-23T00:00:00Z: the start of the three years purchases fall in.
const PURCHASES_FROM: i64 = 1_700_697_600;

/// Three years of 365 days, in seconds: the span of the generated activity.
const THREE_YEARS: f64 = 3.0 * 365.0 * 86_400.0;

/// Product categories, drawn uniformly.
const CATEGORIES: [&str; 6] = ["books", "music", "coffee", "garden", "toys", "electronics"];

/// Engagement channels, drawn uniformly.
const CHANNELS: [&str; 3] = ["web", "store", "email"];

/// The most purchases one generated customer makes.
const MOST_PURCHASES: f64 = 20_000.0;

/// Mixed into the seed of the engagement events' generator, so that they
/// draw from a stream of their own.
const ENGAGEMENT_SEED: u64 = 0x656E_6761_6765_6D65;

/// The id of customer `n`, as in its resource name.
pub fn customer_id(n: u64) -> String {
    format!("load-{n:09}")
}

/// The resource name of customer `n`.
fn customer_name(n: u32) -> String {
    format!("customers/{}", customer_id(u64::from(n)))
}

/// Whole seconds since the epoch as a protobuf timestamp.
fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// A plausible customer, the same for the same `n`.
pub fn customer(n: u64) -> pb::Customer {
    let internal = n.is_multiple_of(50);
    pb::Customer {
        name: format!("customers/{}", customer_id(n)),
        party: if n.is_multiple_of(10) {
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
    StdRng::seed_from_u64(n).random_ratio(1, 100)
}

/// Exponential with the given mean. `rand` itself has no exponential
/// distribution (that is `rand_distr`, not a dependency); inverting the
/// distribution function is one line.
fn exponential(rng: &mut StdRng, mean: f64) -> f64 {
    -(1.0 - rng.random::<f64>()).ln() * mean
}

/// How many purchases each customer makes: most make none to three, a few
/// heavy buyers (a Pareto tail, capped) make the rest; the total is `purchases`.
fn purchase_counts(customers: u64, purchases: u64, rng: &mut StdRng) -> Vec<u32> {
    let mut counts = vec![0u32; customers as usize];
    let mut heavy = Vec::new();
    let mut light_total = 0u64;
    for (n, count) in counts.iter_mut().enumerate() {
        *count = match rng.random::<f64>() {
            d if d < 0.30 => 0,
            d if d < 0.55 => 1,
            d if d < 0.70 => 2,
            d if d < 0.80 => 3,
            _ => {
                // Pareto with shape 1.5, by inversion as for `exponential`:
                // weights for the heavy buyers.
                heavy.push((n, (1.0 - rng.random::<f64>()).powf(-1.0 / 1.5)));
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
fn arrival_order(counts: &[u32], rng: &mut StdRng) -> Vec<u32> {
    let mut order: Vec<u32> = counts
        .iter()
        .enumerate()
        .flat_map(|(n, &count)| std::iter::repeat_n(n as u32, count as usize))
        .collect();
    order.shuffle(rng);
    order
}

/// One generated purchase.
pub struct Purchase {
    /// Its place in arrival order; the id is `p{n}`.
    pub n: usize,
    /// The buyer's number.
    pub customer: u32,
    /// Seconds since the epoch.
    pub occurred_at: i64,
    /// The amount in US cents.
    pub amount_minor: i64,
    /// Items bought, 1 to 3.
    pub quantity: i32,
    /// Product category.
    pub category: &'static str,
    /// How long the product lasts.
    pub durability: pb::ProductDurability,
}

impl Purchase {
    /// The purchase as the API takes it.
    pub fn to_pb(&self) -> pb::Purchase {
        pb::Purchase {
            purchase_id: format!("p{}", self.n),
            customer: customer_name(self.customer),
            occurred_at: Some(timestamp(self.occurred_at)),
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
pub struct Purchases {
    /// The buyer of each purchase, in arrival order.
    order: Vec<u32>,
    /// The place of the next purchase.
    next: usize,
    /// Draws the rest of each purchase.
    rng: StdRng,
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
        let late = if rng.random_bool(0.01) {
            rng.random_range(0..30 * 86_400)
        } else {
            0
        };
        Some(Purchase {
            n,
            customer,
            occurred_at: on_time - late,
            // Exponential around $40, at least $2.
            amount_minor: 200 + exponential(rng, 4_000.0) as i64,
            quantity: rng.random_range(1..=3),
            category: CATEGORIES[rng.random_range(0..CATEGORIES.len())],
            durability: pb::ProductDurability::try_from(rng.random_range(1..=3))
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
pub struct Engagement {
    /// Its number; the id is `e{n}`.
    pub n: usize,
    /// The customer's number.
    pub customer: u32,
    /// Seconds since the epoch.
    pub occurred_at: i64,
    /// Visit, feedback or referral.
    pub kind: pb::EngagementType,
    /// For FEEDBACK only.
    pub nps_score: Option<i32>,
    /// Where it happened.
    pub channel: &'static str,
}

impl Engagement {
    /// The event as the API takes it.
    pub fn to_pb(&self) -> pb::EngagementEvent {
        pb::EngagementEvent {
            event_id: format!("e{}", self.n),
            r#type: self.kind as i32,
            customer: customer_name(self.customer),
            occurred_at: Some(timestamp(self.occurred_at)),
            nps_score: self.nps_score,
            channel: self.channel.into(),
        }
    }
}

/// A seeded synthetic data set: the same arguments, the same data, whether
/// it is streamed to a server or written to files.
#[derive(Debug, clap::Args)]
pub struct DataSet {
    /// Customers.
    #[arg(long, default_value_t = 1_000_000)]
    pub customers: u64,
    /// Purchases in all.
    #[arg(long, default_value_t = 10_000_000)]
    pub purchases: u64,
    /// Seed of the generator: the same seed, the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl DataSet {
    /// The customers, in order of their number.
    pub fn customers(&self) -> impl Iterator<Item = pb::Customer> {
        (0..self.customers).map(customer)
    }

    /// The purchases in arrival order: `purchases` in all, drawn from the
    /// generator seeded with `seed`.
    pub fn purchases(&self) -> Purchases {
        let mut rng = StdRng::seed_from_u64(self.seed);
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
    pub fn engagements(&self) -> Vec<Engagement> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ ENGAGEMENT_SEED);
        let mut events = Vec::new();
        for customer in 0..self.customers as u32 {
            let visits = if rng.random_bool(0.40) {
                rng.random_range(1..=5)
            } else {
                0
            };
            let feedback = if rng.random_bool(0.08) {
                rng.random_range(1..=2)
            } else {
                0
            };
            let referrals = usize::from(rng.random_bool(0.03));
            let kinds = std::iter::repeat_n(pb::EngagementType::Visit, visits)
                .chain(std::iter::repeat_n(pb::EngagementType::Feedback, feedback))
                .chain(std::iter::repeat_n(pb::EngagementType::Referral, referrals));
            for kind in kinds {
                let occurred_at = PURCHASES_FROM + (rng.random::<f64>() * THREE_YEARS) as i64;
                let nps_score =
                    (kind == pb::EngagementType::Feedback).then(|| rng.random_range(0..=10));
                let channel = CHANNELS[rng.random_range(0..CHANNELS.len())];
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
