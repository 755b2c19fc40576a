//! Micro-benchmarks of the engine's hot paths over one index: a rule's
//! preview and a saved segment's first page, one customer's features and
//! persona with its explanation, one customer's saved segments each
//! explained, breakdowns by persona and by dimensions, the same customer
//! calls with a prediction model in force and breakdowns on its
//! predictions, and one purchase recorded into the index. The data set is
//! the load generator's (1M customers by default, with 3M purchases and
//! their engagement events), loaded once through the engine's public API.
//!
//! Each call goes through the engine's async method as a handler makes it,
//! on a tokio runtime: the scans, a customer's segments and the recorded
//! purchase include the hand-off to the blocking pool; a persona is
//! answered where it is asked.
//!
//! Run with `cargo bench --bench queries`.

mod support;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use segmentd::domain::rules::{parse_variable, Variable};
use segmentd::domain::segment::{Segment, SegmentId};
use segmentd::domain::{ActivityBatch, EventId, ProductDurability, Purchase, Timestamp};
use segmentd::engine::{compile_filter, Engine};
use support::{at, size, DataSet};
use tokio::runtime::Runtime;

/// The rule of the preview and of the saved segment: a country list, a
/// purchase count and a recency, so that profile and activity columns are
/// both read.
const RULE: &str = r#"customer.country in ["TR", "DE", "GB"] && features.purchase_count >= 2 && features.recency_days <= 365"#;

/// The filter and dimensions of the customer breakdown: `bench/compare.py`'s Q1.
const BREAKDOWN_FILTER: &str =
    r#"customer.relationship == "EXTERNAL" && customer.income >= 50000.0"#;

/// The dimensions of the customer breakdown.
const BREAKDOWN_DIMENSIONS: [&str; 3] =
    ["customer.country", "customer.gender", "customer.age_band"];

/// The filter of the breakdown on a prediction: the customers the model
/// thinks more likely gone than not.
const P_ALIVE_FILTER: &str = "features.p_alive < 0.5";

/// A filter of the same shape on a figure the index keeps, for the
/// breakdown to compare with.
const RECENCY_FILTER: &str = "features.recency_days > 365";

/// The dimension of the breakdowns filtered on a prediction and on
/// recency.
const P_ALIVE_FILTER_DIMENSIONS: [&str; 1] = ["features.frequency"];

/// The dimensions of the breakdown by a prediction, over everyone.
const P_ALIVE_BAND_DIMENSIONS: [&str; 2] = ["features.p_alive_band", "customer.country"];

/// The dimensions of a breakdown of the same shape over everyone, by a
/// class the index keeps.
const FREQUENCY_DIMENSIONS: [&str; 2] = ["features.frequency", "customer.country"];

/// Customers whose personas are asked for, in turn.
const PERSONA_CUSTOMERS: usize = 1024;

/// Saved segments whose every rule a customer's segments explain.
const SAVED_SEGMENTS: usize = 100;

/// The rules of the saved segments, in the style of the documentation's:
/// recency, frequency, RFM, profile and consent conditions joined by `&&`,
/// `||` and `!`. Each is saved with ten thresholds, `{n}` from 1 to 10.
const SEGMENT_RULES: [&str; 10] = [
    "features.recency_days <= {n}0 && features.purchases_365d >= 2",
    r#"features.rfm_segment in ["CHAMPIONS", "LOYAL", "AT_RISK"] && features.total_spend >= {n}5.0"#,
    r#"features.frequency == "LAPSED" && features.rfm.m >= {n}"#,
    r#"customer.country in ["TR", "DE", "GB"] && features.purchase_count >= {n}"#,
    r#"features.stage == "TELLING_OTHERS" || features.purchases_90d >= {n}"#,
    r#"customer.relationship == "EXTERNAL" && customer.income >= {n}0000.0"#,
    r#"customer.age_band in ["25_34", "35_44"] && features.avg_order_value >= {n}0.0"#,
    r#"!(customer.consent.email == "DENIED") && features.recency_days <= {n}00"#,
    r#"features.frequency in ["REPEAT_CUSTOMER", "FREQUENT_CUSTOMER"] && features.mean_gap_days <= {n}0.0"#,
    r#"customer.party == "BUSINESS" || features.rfm.r >= {n} && features.rfm.f >= 3"#,
];

/// The benchmarks, on one data set loaded first.
fn queries(c: &mut Criterion) {
    let runtime = support::runtime();
    let data = support::data_set(1_000_000, 3);
    let loaded = support::load(&runtime, &data, true);
    let engine = &loaded.engine;
    let over = format!("{}_customers", size(data.customers));

    let mut scans = c.benchmark_group("scan");
    // A scan takes milliseconds: ten samples are enough to see a change.
    scans.sample_size(10);
    scans.bench_function(format!("preview_rule/{over}"), |b| {
        b.iter(|| runtime.block_on(preview(engine)))
    });
    let segment = save_segment(&runtime, engine);
    scans.bench_function(format!("saved_segment_first_page/{over}"), |b| {
        b.iter(|| {
            runtime.block_on(async {
                let page = engine
                    .segment_members(segment.clone(), at(), None, 100)
                    .await
                    .expect("the segment's members");
                black_box(page)
            })
        })
    });
    scans.bench_function(format!("breakdown_personas/{over}"), |b| {
        b.iter(|| {
            runtime.block_on(async {
                let counts = engine
                    .breakdown_personas(compile_filter("").expect("everyone"), at())
                    .await
                    .expect("the persona breakdown");
                black_box(counts)
            })
        })
    });
    scans.bench_function(format!("breakdown_customers/{over}"), |b| {
        b.iter(|| runtime.block_on(breakdown(engine, BREAKDOWN_FILTER, &BREAKDOWN_DIMENSIONS)))
    });
    scans.finish();

    let chosen = persona_customers(&data);
    let purchasers = purchasers(&runtime, engine, &chosen);
    customer_calls(c, &runtime, engine, &chosen, &over);
    customer_calls(
        c,
        &runtime,
        engine,
        &purchasers,
        &format!("purchasers/{over}"),
    );

    save_segments(&runtime, engine);
    let mut turn = 0;
    c.bench_function(
        &format!("customer_segments_explained/{SAVED_SEGMENTS}_segments/{over}"),
        |b| {
            b.iter(|| {
                turn = (turn + 1) % chosen.len();
                let id = support::id(chosen[turn]);
                runtime.block_on(async {
                    let segments = engine
                        .customer_segments(id, at(), true)
                        .await
                        .expect("the customer's segments, explained");
                    black_box(segments)
                })
            })
        },
    );

    predicted(c, &runtime, engine, &chosen, &purchasers, &over);

    // Last, as it changes the index the others read.
    record_purchase(c, &runtime, engine, &data, &over);
}

/// One customer's features, and their persona with its explanation, in
/// turn over `chosen`; the names of the benchmarks end in `over`, which
/// says whether a prediction model is in force and which customers are
/// asked for.
fn customer_calls(
    c: &mut Criterion,
    runtime: &Runtime,
    engine: &Engine,
    chosen: &[u64],
    over: &str,
) {
    let mut turn = 0;
    c.bench_function(&format!("customer_features/{over}"), |b| {
        b.iter(|| {
            turn = (turn + 1) % chosen.len();
            let id = support::id(chosen[turn]);
            runtime.block_on(async {
                let features = engine
                    .customer_features(id, at())
                    .await
                    .expect("the customer's features");
                black_box(features)
            })
        })
    });
    let mut turn = 0;
    c.bench_function(&format!("customer_persona/{over}"), |b| {
        b.iter(|| {
            turn = (turn + 1) % chosen.len();
            let id = support::id(chosen[turn]);
            runtime.block_on(async {
                let assignment = engine
                    .customer_persona(id, at())
                    .await
                    .expect("a persona with its explanation");
                black_box(assignment)
            })
        })
    });
}

/// The prediction model fitted as of the evaluation time and put in
/// force (not measured: `benches/predict.rs` times the fit), then
/// breakdowns filtered on `features.p_alive` and by
/// `features.p_alive_band`, each beside one of the same shape on figures
/// the index keeps, and the customer calls again, now with predictions.
fn predicted(
    c: &mut Criterion,
    runtime: &Runtime,
    engine: &Engine,
    chosen: &[u64],
    purchasers: &[u64],
    over: &str,
) {
    let Some(model) = support::fitted(runtime, engine) else {
        return;
    };
    eprintln!(
        "prediction model fitted on {} customers in {:.2} s",
        model.customers,
        model.fit_nanos as f64 / 1e9
    );
    let mut scans = c.benchmark_group("scan");
    scans.sample_size(10);
    scans.bench_function(format!("breakdown_recency_over_a_year/{over}"), |b| {
        b.iter(|| {
            runtime.block_on(breakdown(
                engine,
                RECENCY_FILTER,
                &P_ALIVE_FILTER_DIMENSIONS,
            ))
        })
    });
    scans.bench_function(format!("breakdown_p_alive_below_half/{over}"), |b| {
        b.iter(|| {
            runtime.block_on(breakdown(
                engine,
                P_ALIVE_FILTER,
                &P_ALIVE_FILTER_DIMENSIONS,
            ))
        })
    });
    scans.bench_function(format!("breakdown_frequency_by_country/{over}"), |b| {
        b.iter(|| runtime.block_on(breakdown(engine, "", &FREQUENCY_DIMENSIONS)))
    });
    scans.bench_function(format!("breakdown_p_alive_band/{over}"), |b| {
        b.iter(|| runtime.block_on(breakdown(engine, "", &P_ALIVE_BAND_DIMENSIONS)))
    });
    scans.finish();
    customer_calls(
        c,
        runtime,
        engine,
        chosen,
        &format!("with_predictions/{over}"),
    );
    customer_calls(
        c,
        runtime,
        engine,
        purchasers,
        &format!("with_predictions/purchasers/{over}"),
    );
}

/// The rule compiled and previewed as PreviewSegment does: members,
/// objectors and a sample of ten.
async fn preview(engine: &Engine) {
    let rule = compile_filter(RULE).expect("the rule compiles");
    let preview = engine
        .preview(rule, at(), 10, None)
        .await
        .expect("the preview");
    black_box(preview);
}

/// A customer breakdown as BreakdownCustomers does it: the customers
/// `filter` selects, counted by `dimensions`.
async fn breakdown(engine: &Engine, filter: &str, dimensions: &[&str]) {
    let rule = compile_filter(filter).expect("the filter compiles");
    let dimensions: Vec<Variable> = dimensions
        .iter()
        .map(|name| parse_variable(name).expect("a dimension"))
        .collect();
    let breakdown = engine
        .breakdown(dimensions, rule, at())
        .await
        .expect("the breakdown");
    black_box(breakdown);
}

/// Saves [`RULE`] as a segment; its id.
fn save_segment(runtime: &Runtime, engine: &Engine) -> SegmentId {
    save(runtime, engine, "benchmark", "Benchmark", RULE.into())
}

/// Saves `filter` as segment `id`; its id.
fn save(
    runtime: &Runtime,
    engine: &Engine,
    id: &str,
    display_name: &str,
    filter: String,
) -> SegmentId {
    let id = SegmentId::parse(id).expect("a segment id");
    let segment = Segment {
        id: id.clone(),
        display_name: display_name.into(),
        description: String::new(),
        filter,
        revision: 0,
        create_time: at(),
        update_time: at(),
    };
    runtime
        .block_on(engine.create_segment(segment))
        .expect("the segment is saved");
    id
}

/// Saves segments of [`SEGMENT_RULES`] until [`SAVED_SEGMENTS`] are saved.
fn save_segments(runtime: &Runtime, engine: &Engine) {
    let (saved, _) = runtime
        .block_on(engine.list_segments(None, SAVED_SEGMENTS))
        .expect("the saved segments");
    let rules = (1..=10).flat_map(|n| {
        SEGMENT_RULES
            .iter()
            .map(move |rule| rule.replace("{n}", &n.to_string()))
    });
    for (number, filter) in rules.enumerate().take(SAVED_SEGMENTS - saved.len()) {
        let id = format!("rule-{number:03}");
        save(runtime, engine, &id, &format!("Rule {number}"), filter);
    }
}

/// Customers drawn at random, leaving out those who object to profiling
/// (who get no persona).
fn persona_customers(data: &DataSet) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(support::SEED);
    std::iter::repeat_with(|| rng.random_range(0..data.customers))
        .filter(|&n| !support::objects_to_profiling(n))
        .take(PERSONA_CUSTOMERS)
        .collect()
}

/// Those of `chosen` who had bought something by the evaluation time:
/// the customers who get predictions once a model is in force.
fn purchasers(runtime: &Runtime, engine: &Engine, chosen: &[u64]) -> Vec<u64> {
    chosen
        .iter()
        .copied()
        .filter(|&n| {
            let features = runtime
                .block_on(engine.customer_features(support::id(n), at()))
                .expect("the customer's features");
            features.purchases.count > 0
        })
        .collect()
}

/// One purchase for a random customer, an hour before the evaluation time,
/// recorded as RecordActivity does before its durability wait: the store
/// write, the customer's series, and the RFM bounds moved.
fn record_purchase(
    c: &mut Criterion,
    runtime: &Runtime,
    engine: &Engine,
    data: &DataSet,
    over: &str,
) {
    let mut rng = StdRng::seed_from_u64(support::SEED);
    let occurred_at = Timestamp::from_nanos(at().as_nanos() - 3_600 * 1_000_000_000);
    let mut recorded = 0u64;
    c.bench_function(&format!("record_purchase/{over}"), |b| {
        b.iter(|| {
            recorded += 1;
            let purchase = Purchase {
                id: EventId::parse(&format!("bench-{recorded}")).expect("an event id"),
                customer: support::id(rng.random_range(0..data.customers)),
                occurred_at,
                amount_minor: rng.random_range(500..20_500),
                quantity: 1,
                category: "bench".into(),
                durability: ProductDurability::Consumable,
            };
            let batch = ActivityBatch {
                purchases: vec![purchase],
                engagements: Vec::new(),
            };
            let counts = runtime
                .block_on(engine.import_activity(batch))
                .expect("the purchase is recorded");
            black_box(counts)
        })
    });
}

criterion_group!(benches, queries);
criterion_main!(benches);
