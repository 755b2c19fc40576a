//! Micro-benchmarks of the prediction models' fits: BG/NBD and
//! Gamma-Gamma by maximum likelihood over a synthetic customer base (1M
//! customers by default, `SEGMENTD_BENCH_CUSTOMERS` to change), shaped
//! like the CDNOW sample: most customers never come back, the others a
//! few times; and the engine's whole refit, its inputs read from the
//! index, over the load generator's data set (1M customers and 10M
//! purchases by default).
//!
//! Run with `cargo bench --bench predict`.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use segmentd::domain::predict::bgnbd::{BgNbd, History};
use segmentd::domain::predict::gamma_gamma::{GammaGamma, Spend};
use support::{at, size};

/// A seeded xorshift: the same customers on every run.
struct Random(u64);

impl Random {
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Exponential with mean `mean`.
    fn exponential(&mut self, mean: f64) -> f64 {
        -self.unit().ln() * mean
    }
}

/// Histories in weeks and spends of `customers` synthetic customers.
fn customers(customers: usize) -> (Vec<History>, Vec<Spend>) {
    let mut random = Random(0x9E37_79B9_7F4A_7C15);
    let mut histories = Vec::with_capacity(customers);
    let mut spends = Vec::new();
    for _ in 0..customers {
        // First purchases over a year and a half, in whole days.
        let t = (random.unit() * 546.0).ceil() / 7.0;
        let x = if random.unit() < 0.6 {
            0.0
        } else {
            1.0 + random.exponential(2.0).floor()
        };
        let t_x = if x > 0.0 {
            (random.unit() * t * 7.0).floor() / 7.0
        } else {
            0.0
        };
        histories.push(History { x, t_x, t });
        if x > 0.0 {
            spends.push(Spend {
                x,
                mean: 5.0 + random.exponential(30.0),
            });
        }
    }
    (histories, spends)
}

fn fits(c: &mut Criterion) {
    let count = std::env::var("SEGMENTD_BENCH_CUSTOMERS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(1_000_000);
    let (histories, spends) = customers(count);
    let size = if count.is_multiple_of(1_000_000) {
        format!("{}M_customers", count / 1_000_000)
    } else {
        format!("{count}_customers")
    };
    let mut group = c.benchmark_group("predict");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function(format!("fit_bgnbd/{size}"), |b| {
        b.iter(|| black_box(BgNbd::fit(&histories).expect("a fit")))
    });
    group.bench_function(format!("fit_gamma_gamma/{size}"), |b| {
        b.iter(|| black_box(GammaGamma::fit(&spends).expect("a fit")))
    });
    group.finish();
}

/// The model fitted as the service fits it, through the engine: every
/// purchaser's history read from the index under its read lock, both fits,
/// and the model stored and put in force.
fn refit(c: &mut Criterion) {
    let runtime = support::runtime();
    let data = support::data_set(1_000_000, 10);
    let loaded = support::load(&runtime, &data, false);
    let engine = &loaded.engine;
    let over = format!(
        "{}_customers_{}_purchases",
        size(data.customers),
        size(data.purchases)
    );
    if support::fitted(&runtime, engine).is_none() {
        return;
    }
    let mut group = c.benchmark_group("predict");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    let mut last = None;
    group.bench_function(format!("refit_engine/{over}"), |b| {
        b.iter(|| {
            let model = runtime
                .block_on(engine.refit_prediction_model(at()))
                .expect("the prediction model is fitted");
            last = Some(black_box(model));
        })
    });
    group.finish();
    if let Some(model) = last {
        eprintln!(
            "the last fit: {} customers, {} of them spenders, {} purchases, {:.3} s by the model's own clock",
            model.customers,
            model.spenders,
            model.purchases,
            model.fit_nanos as f64 / 1e9
        );
    }
}

criterion_group!(benches, fits, refit);
criterion_main!(benches);
