//! What the micro-benchmarks share: the load generator's seeded data set,
//! loaded into an engine in a temporary directory through the engine's
//! public API, and a runtime to call the engine's async methods from
//! Criterion's synchronous loops.

// Each benchmark file uses a part of this module, and of the data set.
#![allow(dead_code)]

/// The load generator's data set, so that the micro-benchmarks and the
/// end-to-end runs measure the same customers. Parts of it (the protobuf
/// events) serve only the load generator.
#[path = "../../examples/load/data.rs"]
mod data;

use std::path::Path;
use std::time::Instant;

use segmentd::domain::{
    ActivityBatch, Consent, ConsentStatus, CurrencyCode, CustomerId, Date, Engagement,
    EngagementKind, EventId, Gender, Location, Money, Party, ProductDurability, Profile, Purchase,
    Relationship, Timestamp,
};
use segmentd::engine::{Engine, EngineSettings};
use segmentd::grpc::pb;
use segmentd::store::{Durability, StoreOptions};
use tempfile::TempDir;
use tokio::runtime::Runtime;

pub use data::{customer_id, DataSet};

/// The evaluation time of every benchmark: 2026-11-23T00:00:00Z, just after
/// the data set's three years of activity (as in `bench/compare.sh`), so
/// that every event counts and the figures never depend on the clock.
pub fn at() -> Timestamp {
    seconds(1_795_392_000)
}

/// The data set of a benchmark: `customers` customers, or the number in
/// `SEGMENTD_BENCH_CUSTOMERS` to try the benchmarks quickly at a smaller
/// size, with `purchases_each` purchases per customer on average. The size
/// is in every benchmark's name.
pub fn data_set(customers: u64, purchases_each: u64) -> DataSet {
    let customers = std::env::var("SEGMENTD_BENCH_CUSTOMERS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(customers);
    DataSet {
        customers,
        purchases: purchases_each * customers,
        seed: SEED,
    }
}

/// Whether the data set is shrunk by `SEGMENTD_BENCH_CUSTOMERS`, for a
/// quick try of the benchmarks: a few thousand customers of the load
/// generator may not pin the prediction model down, which a million do.
pub fn quick_run() -> bool {
    std::env::var_os("SEGMENTD_BENCH_CUSTOMERS").is_some()
}

/// The prediction model fitted as of [`at`] and put in force; `None`, said
/// on stderr, when a quick run's customers do not pin it down.
pub fn fitted(
    runtime: &Runtime,
    engine: &Engine,
) -> Option<std::sync::Arc<segmentd::domain::predict::PredictionModel>> {
    match runtime.block_on(engine.refit_prediction_model(at())) {
        Ok(model) => Some(model),
        Err(error) if quick_run() => {
            eprintln!(
                "no prediction model on this small data set ({error}): its benchmarks are skipped"
            );
            None
        }
        Err(error) => panic!("the prediction model is fitted: {error}"),
    }
}

/// Customers or events per import call while loading (`load dataset`
/// sends as many events per message).
const BATCH: usize = 10_000;

/// The seed of every benchmark's data set, as `load dataset`'s default.
pub const SEED: u64 = 42;

/// A runtime for the engine's async methods: its blocking pool runs the
/// index scans, as in the server.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// An engine over a store of its own, in a directory removed on drop.
pub struct Loaded {
    /// The engine.
    pub engine: Engine,
    /// The store's directory; the engine must be dropped first.
    pub dir: TempDir,
}

/// How the benchmarks open a store: relaxed acknowledgements, as a bulk
/// load would use, and the server's default 64 MiB page cache.
pub fn store_options(path: &Path) -> StoreOptions {
    StoreOptions {
        path: path.to_path_buf(),
        cache_capacity_bytes: 64 * 1024 * 1024,
        durability: Durability::Relaxed,
        compress: false,
    }
}

/// The server's defaults: US dollars and the default thresholds.
pub fn settings() -> EngineSettings {
    EngineSettings {
        reporting_currency: CurrencyCode::parse("USD").expect("USD is a currency"),
        thresholds: Default::default(),
        watch: Default::default(),
        predictions: Default::default(),
        // The benchmarks flush and go on writing: no image, so no sealed store.
        index_image: false,
    }
}

/// Opens the engine on the store in `path`, rebuilding its index.
pub async fn open(path: &Path) -> Engine {
    Engine::open(store_options(path), settings())
        .await
        .expect("the engine opens")
}

/// Loads `data` into a new engine: its customers, purchases and, with
/// `engagements`, its engagement events, in batches of [`BATCH`]; prints
/// how long that took, which is not measured.
pub fn load(runtime: &Runtime, data: &DataSet, engagements: bool) -> Loaded {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let engine = runtime.block_on(async {
        let engine = open(dir.path()).await;
        let mut customers = data.customers().map(|customer| profile(&customer));
        loop {
            let batch: Vec<_> = customers.by_ref().take(BATCH).collect();
            if batch.is_empty() {
                break;
            }
            engine
                .import_customers(batch)
                .await
                .expect("customers import");
        }
        let mut purchases = data.purchases().map(|p| purchase(&p));
        loop {
            let purchases: Vec<_> = purchases.by_ref().take(BATCH).collect();
            if purchases.is_empty() {
                break;
            }
            let batch = ActivityBatch {
                purchases,
                engagements: Vec::new(),
            };
            engine
                .import_activity(batch)
                .await
                .expect("purchases import");
        }
        if engagements {
            for chunk in data.engagements().chunks(BATCH) {
                let batch = ActivityBatch {
                    purchases: Vec::new(),
                    engagements: chunk.iter().map(engagement).collect(),
                };
                engine
                    .import_activity(batch)
                    .await
                    .expect("engagements import");
            }
        }
        engine.flush().await.expect("the store flushes");
        engine
    });
    eprintln!(
        "loaded {} customers and {} purchases in {:.1} s",
        data.customers,
        data.purchases,
        started.elapsed().as_secs_f64()
    );
    Loaded { engine, dir }
}

/// A size for a benchmark's name: `1M`, `100k`, `2500`.
pub fn size(count: u64) -> String {
    match count {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// A customer id of the data set.
pub fn id(n: u64) -> CustomerId {
    CustomerId::parse(&customer_id(n)).expect("generated ids are valid")
}

/// Whether customer `n` of the data set objects to profiling, and so has
/// no persona.
pub fn objects_to_profiling(n: u64) -> bool {
    data::customer(n).objects_to_profiling
}

/// A generated customer as the engine takes it. The generator speaks
/// protobuf, as the load generator sends it; this is the part of the API's
/// conversion that its values need, without the checks they always pass.
fn profile(customer: &pb::Customer) -> (CustomerId, Profile) {
    let id = CustomerId::from_name(&customer.name).expect("generated names are valid");
    let usd = CurrencyCode::parse("USD").expect("USD is a currency");
    let consent = |status: i32| match pb::ConsentStatus::try_from(status) {
        Ok(pb::ConsentStatus::Granted) => ConsentStatus::Granted,
        Ok(pb::ConsentStatus::Denied) => ConsentStatus::Denied,
        _ => ConsentStatus::Unknown,
    };
    let location = customer.location.clone().unwrap_or_default();
    let profile = Profile {
        party: match pb::Party::try_from(customer.party) {
            Ok(pb::Party::Business) => Party::Business,
            _ => Party::Individual,
        },
        relationship: match pb::Relationship::try_from(customer.relationship) {
            Ok(pb::Relationship::Internal) => Relationship::Internal,
            _ => Relationship::External,
        },
        department: Some(customer.department.clone()).filter(|d| !d.is_empty()),
        birth_date: customer
            .birth_date
            .and_then(|d| Date::from_ymd(d.year, d.month, d.day).ok()),
        gender: match pb::Gender::try_from(customer.gender) {
            Ok(pb::Gender::Female) => Gender::Female,
            Ok(pb::Gender::Male) => Gender::Male,
            Ok(pb::Gender::Other) => Gender::Other,
            _ => Gender::Unspecified,
        },
        annual_income: customer.annual_income.as_ref().map(|m| Money {
            currency: usd,
            minor_units: m.minor_units,
        }),
        location: Location {
            country_code: Some(location.country_code).filter(|c| !c.is_empty()),
            city: location.city,
            ..Default::default()
        },
        language: Some(customer.language.clone()).filter(|l| !l.is_empty()),
        consent: Consent {
            email: consent(customer.consent.unwrap_or_default().email),
            ..Default::default()
        },
        objects_to_profiling: customer.objects_to_profiling,
        ..Default::default()
    };
    (id, profile)
}

/// Seconds since the epoch as a timestamp.
fn seconds(seconds: i64) -> Timestamp {
    Timestamp::from_parts(seconds, 0).expect("generated times are valid")
}

/// A generated purchase as the engine takes it.
fn purchase(p: &data::Purchase) -> Purchase {
    Purchase {
        id: EventId::parse(&format!("p{}", p.n)).expect("generated ids are valid"),
        customer: id(u64::from(p.customer)),
        occurred_at: seconds(p.occurred_at),
        amount_minor: p.amount_minor,
        quantity: p.quantity as u32,
        category: p.category.to_owned(),
        durability: match p.durability {
            pb::ProductDurability::Durable => ProductDurability::Durable,
            pb::ProductDurability::Consumable => ProductDurability::Consumable,
            pb::ProductDurability::Subscription => ProductDurability::Subscription,
            pb::ProductDurability::Unspecified => ProductDurability::Unspecified,
        },
    }
}

/// A generated engagement event as the engine takes it.
fn engagement(e: &data::Engagement) -> Engagement {
    Engagement {
        id: EventId::parse(&format!("e{}", e.n)).expect("generated ids are valid"),
        customer: id(u64::from(e.customer)),
        occurred_at: seconds(e.occurred_at),
        kind: match e.kind {
            pb::EngagementType::Feedback => EngagementKind::Feedback,
            pb::EngagementType::Referral => EngagementKind::Referral,
            _ => EngagementKind::Visit,
        },
        nps_score: e.nps_score.map(|score| score as u8),
        channel: e.channel.to_owned(),
    }
}
