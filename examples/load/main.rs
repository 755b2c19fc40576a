//! Load generator for a running segmentd: unary CreateCustomer with many
//! calls in flight, a seeded synthetic data set streamed in over
//! ImportCustomers and ImportActivity, and GetCustomerPersona and
//! BreakdownPersonas on it. Prints one Markdown table row per run.
//! `export` writes the very same data set as CSV files, without a server,
//! for other engines to compare with; `watch` follows saved segments and
//! personas while purchases arrive. See `bench/run.sh`, `bench/compare.sh`
//! and `bench/watch.sh`.
//!
//! # Layout
//!
//! - `data`: the seeded data set (also loaded by the micro-benchmarks).
//! - `drive`: connections, and the closed and open loops that send calls.
//! - `ingest`: CreateCustomer, and the data set streamed in.
//! - `persona`: GetCustomerPersona and BreakdownPersonas;
//!   `counted`: the persona call whose answer is counted, not decoded.
//! - `probes`: the machine's wake-up latency and the health check's.
//! - `export`: the data set as CSV files.
//! - `watch`: watch streams while purchases arrive, and the time from a
//!   write to its change.
//! - `report`: latency histograms and the table rows.

mod counted;
mod data;
mod drive;
mod export;
mod ingest;
mod persona;
mod probes;
mod report;
mod segments;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use data::DataSet;

/// The server's allocator, so that the load generator's own allocations
/// cost it no more than the server's cost the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for segmentd: prints one Markdown table row per run.
#[derive(Debug, Parser)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// TLS and credentials.
    #[command(flatten)]
    connect: drive::ConnectOptions,
    /// What to run.
    #[command(subcommand)]
    run: Run,
}

/// The runs.
#[derive(Debug, Subcommand)]
enum Run {
    /// Unary CreateCustomer calls.
    Create(ingest::CreateLoad),
    /// A synthetic data set: customers over ImportCustomers, then their
    /// purchases over ImportActivity, then their engagement events over
    /// another ImportActivity stream.
    Dataset {
        /// The data set.
        #[command(flatten)]
        data: DataSet,
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
        /// The data set.
        #[command(flatten)]
        data: DataSet,
    },
    /// Unary GetCustomerPersona calls for random customers of a loaded
    /// data set, for a fixed time or for a fixed rate.
    Persona(persona::PersonaLoad),
    /// grpc.health.v1.Health/Check at a fixed rate: the same open-loop load
    /// as `persona --rate` on a call that does no work, which shows how
    /// much of the latency is the transport's and the machine's.
    Health(probes::HealthLoad),
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
    /// BreakdownCustomers over everyone, the README's question and
    /// frequency × relationship × stage, one call at a time; prints the
    /// median of each.
    Breakdown {
        /// Timed calls of each, after one warm-up call.
        #[arg(long, default_value_t = 7)]
        runs: usize,
    },
    /// ListCustomerSegments for random customers at a fixed rate.
    CustomerSegments(segments::CustomerSegmentsLoad),
    /// Saved segments and personas watched over many streams while
    /// purchases arrive at a fixed rate: the time from each write to its
    /// change reaching a watcher, and the server's CPU with and without
    /// the watches.
    Watch(watch::WatchLoad),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    drive::configure(args.connect);
    let addr = &args.addr;
    match args.run {
        Run::Create(load) => ingest::create(addr, load).await,
        Run::Dataset { data, batch } => ingest::dataset(addr, &data, batch).await,
        Run::Export { dir, data } => export::export(&dir, &data),
        Run::Persona(load) => persona::persona(addr, load).await,
        Run::Health(load) => probes::health(addr, load).await,
        Run::Wakeups { seconds } => {
            probes::wakeups(Duration::from_secs(seconds));
            Ok(())
        }
        Run::PersonaBreakdown { runs } => persona::persona_breakdown(addr, runs).await,
        Run::Breakdown { runs } => segments::breakdown(addr, runs).await,
        Run::Watch(load) => watch::watch(addr, load).await,
        Run::CustomerSegments(load) => segments::customer_segments(addr, load).await,
    }
}
