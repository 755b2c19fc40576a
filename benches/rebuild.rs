//! Micro-benchmark of the index rebuild at start-up: `Engine::open` on a
//! store that holds the load generator's data set (100k customers and 1M
//! purchases by default), which reads every customer and activity batch
//! back and builds the in-memory index and its RFM bounds.
//!
//! Run with `cargo bench --bench rebuild`.

mod support;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use segmentd::engine::Engine;
use support::size;
use tokio::runtime::Runtime;

/// The benchmark, on a store loaded first.
fn rebuild(c: &mut Criterion) {
    let runtime = support::runtime();
    let data = support::data_set(100_000, 10);
    let support::Loaded { engine, dir } = support::load(&runtime, &data, false);
    // The store is reopened on every iteration: the loading engine closes first.
    drop(engine);
    let mut group = c.benchmark_group("open");
    // Each open takes most of a second: ten samples, with time for them.
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function(
        format!(
            "rebuild_index/{}_customers_{}_purchases",
            size(data.customers),
            size(data.purchases)
        ),
        |b| {
            // Timed by hand, so that each engine is closed, untimed, before
            // the next opens the same store.
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    let (engine, took) = timed_open(&runtime, dir.path());
                    spent += took;
                    drop(black_box(engine));
                }
                spent
            })
        },
    );
    group.finish();
}

/// Opens the engine on the store in `path`; the engine and how long the
/// open that succeeded took. An engine just dropped holds its store's lock
/// a moment longer (sled's flusher thread lets go of the database last),
/// so a refused open is tried again, untimed, for up to five seconds.
fn timed_open(runtime: &Runtime, path: &Path) -> (Engine, Duration) {
    let mut refused = 0;
    loop {
        let started = Instant::now();
        match runtime.block_on(Engine::open(
            support::store_options(path),
            support::settings(),
        )) {
            Ok(engine) => return (engine, started.elapsed()),
            Err(_) if refused < 500 => {
                refused += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("the engine does not open: {error}"),
        }
    }
}

criterion_group!(benches, rebuild);
criterion_main!(benches);
