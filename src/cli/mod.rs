//! The command line: `segmentd serve` (the default) and `segmentd
//! healthcheck`. Every flag can also be set through the environment
//! variable named in its help.
//!
//! - `backup`: the online backup's flags, `segmentd backup` and `segmentd
//!   restore`.

mod auth;
mod backup;
mod cluster;
mod limits;
mod metrics;
mod predict;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod tls;

use crate::client::import::ImportOptions;
use crate::domain::features::Thresholds;
use crate::domain::CurrencyCode;
use crate::engine::EngineSettings;
use crate::grpc::ApiLimits;
use crate::server::{self, ServerConfig};
use crate::store::{Durability, StoreOptions};
use crate::telemetry::{self, LogFormat};

/// Real-time, explainable customer segmentation and personas over gRPC.
#[derive(Debug, Parser)]
#[command(name = "segmentd", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; `serve` when left out.
    #[command(subcommand)]
    command: Option<Command>,
    /// Flags of `serve`, accepted without the subcommand name.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the gRPC server (the default). Boxed: its flags outweigh the
    /// other commands' many times over.
    Serve(Box<ServeArgs>),
    /// Runs one gRPC health Check; exits 0 when SERVING, 1 otherwise.
    Healthcheck(HealthcheckArgs),
    /// Loads customers and activity from CSV or JSON Lines files into a
    /// running server.
    Import(ImportArgs),
    /// Prints a customer's persona and why, for people.
    Persona(PersonaArgs),
    /// Follows who enters and leaves a saved segment, or moves between
    /// personas, one line per change, for people.
    Watch(WatchCommandArgs),
    /// Takes a consistent backup of a running server into a file.
    Backup(backup::BackupArgs),
    /// Restores a backup file into an empty data directory, offline.
    Restore(backup::RestoreArgs),
}

/// Flags of `segmentd persona`.
#[derive(Debug, Args)]
struct PersonaArgs {
    /// Server address, e.g. `127.0.0.1:50051`.
    #[arg(long, env = "SEGMENTD_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// The customer: `customers/ID` or just the id.
    customer: String,
    /// The evaluation time, RFC 3339 such as `2026-06-30T00:00:00Z`; now when left out.
    #[arg(long)]
    at: Option<String>,
    /// How long to wait for an answer, e.g. `5s`.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    tls: tls::ClientTlsArgs,
    #[command(flatten)]
    auth: auth::ClientAuthArgs,
}

/// Flags of `segmentd watch`.
#[derive(Debug, Args)]
struct WatchCommandArgs {
    #[command(flatten)]
    watch: crate::client::watch::WatchArgs,
    #[command(flatten)]
    tls: tls::ClientTlsArgs,
    #[command(flatten)]
    auth: auth::ClientAuthArgs,
}

/// Flags of `segmentd import`.
#[derive(Debug, Args)]
struct ImportArgs {
    /// Server address, e.g. `127.0.0.1:50051`.
    #[arg(long, env = "SEGMENTD_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// Customers: a .csv file with a header row, or .jsonl with one flat
    /// object per line. Imported before the activity.
    #[arg(long)]
    customers: Option<PathBuf>,
    /// Purchases and engagement events, .csv or .jsonl.
    #[arg(long)]
    activity: Option<PathBuf>,
    /// Stop at the first bad row instead of reporting and skipping it.
    #[arg(long)]
    strict: bool,
    /// Rows per request.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    #[command(flatten)]
    tls: tls::ClientTlsArgs,
    #[command(flatten)]
    auth: auth::ClientAuthArgs,
}

fn import(args: ImportArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let options = ImportOptions {
        addr: args.addr,
        customers: args.customers,
        activity: args.activity,
        strict: args.strict,
        batch_size: args.batch_size.clamp(1, 1000),
        token: args.auth.token(),
    };
    let endpoint = args.tls.endpoint(&options.addr)?;
    let (customers, activity) =
        runtime.block_on(crate::client::import::run_at(endpoint, &options))?;
    if let (Some(summary), Some(path)) = (customers, &options.customers) {
        println!(
            "{}: {} rows: {} customers created, {} replaced, {} rows skipped",
            path.display(),
            summary.read,
            summary.created,
            summary.repeated,
            summary.skipped
        );
    }
    if let (Some(summary), Some(path)) = (activity, &options.activity) {
        println!(
            "{}: {} rows: {} events recorded, {} already recorded, {} rows skipped",
            path.display(),
            summary.read,
            summary.created,
            summary.repeated,
            summary.skipped
        );
    }
    Ok(())
}

/// Flags of `segmentd serve`.
#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SEGMENTD_LISTEN", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    /// Directory of the embedded sled database.
    #[arg(long, env = "SEGMENTD_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Log line format.
    #[arg(long, env = "SEGMENTD_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// When writes are acknowledged: `durable` once flushed to disk (shared
    /// by concurrent writers), `relaxed` once applied in memory, with up to
    /// 500 ms of acknowledged writes lost on a crash.
    #[arg(
        long,
        env = "SEGMENTD_DURABILITY",
        value_enum,
        default_value = "durable"
    )]
    durability: DurabilityFlag,
    /// Whether a clean shutdown writes the index to `index.image` in the
    /// data directory, for the next start to read in place of rebuilding
    /// it from the store (any other start rebuilds it).
    #[arg(long, env = "SEGMENTD_INDEX_IMAGE", default_value_t = true, action = clap::ArgAction::Set)]
    index_image: bool,
    /// sled page cache, in MiB of on-disk data.
    #[arg(long, env = "SEGMENTD_CACHE_CAPACITY_MB", default_value_t = 64)]
    cache_capacity_mb: u64,
    /// Whether a new store compresses its pages on disk (zstd): a quarter
    /// to two fifths fewer bytes, and `ImportCustomers` at about half its
    /// rate. A store keeps how it was made; to change it, back it up and
    /// restore the backup with the setting wanted.
    #[arg(long, env = "SEGMENTD_COMPRESS_STORE", default_value_t = false, action = clap::ArgAction::Set)]
    compress_store: bool,
    /// The reporting currency (ISO 4217) that every amount must be in.
    #[arg(long, env = "SEGMENTD_CURRENCY", default_value = "USD", value_parser = parse_currency)]
    currency: CurrencyCode,
    /// Largest message received or sent, in bytes.
    #[arg(long, env = "SEGMENTD_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    max_message_bytes: usize,
    /// Largest `page_size` of a List call.
    #[arg(long, env = "SEGMENTD_MAX_PAGE_SIZE", default_value_t = 1000)]
    max_page_size: usize,
    /// Most items in one batch message of an import.
    #[arg(long, env = "SEGMENTD_MAX_BATCH_SIZE", default_value_t = 1000)]
    max_batch_size: usize,
    /// Most events in one RecordActivity request or ImportActivity message.
    #[arg(long, env = "SEGMENTD_MAX_EVENTS_PER_BATCH", default_value_t = 10_000)]
    max_events_per_batch: usize,
    /// LAPSED: a recency over this many mean gaps (and over --lapsed-min-days).
    #[arg(long, env = "SEGMENTD_LAPSED_GAP_MULTIPLIER", default_value_t = 3.0)]
    lapsed_gap_multiplier: f64,
    /// LAPSED: a recency over this many days (and over the gap multiple).
    #[arg(long, env = "SEGMENTD_LAPSED_MIN_DAYS", default_value_t = 180.0)]
    lapsed_min_days: f64,
    /// FREQUENT_CUSTOMER: at least this many purchases in the last 365 days.
    #[arg(
        long,
        env = "SEGMENTD_FREQUENT_MIN_PURCHASES_365D",
        default_value_t = 4
    )]
    frequent_min_purchases_365d: u32,
    /// FREQUENT_CUSTOMER: a recency of at most this many mean gaps.
    #[arg(long, env = "SEGMENTD_FREQUENT_GAP_MULTIPLIER", default_value_t = 2.0)]
    frequent_gap_multiplier: f64,
    /// Upper bounds of the LOW, MIDDLE and HIGH income bands, in major units.
    #[arg(long, env = "SEGMENTD_INCOME_BAND_LIMITS", default_value = "30000,75000,150000", value_parser = parse_income_limits)]
    income_band_limits: IncomeLimits,
    /// Requests served at once per connection; more are shed with RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "SEGMENTD_CONCURRENCY_PER_CONNECTION",
        default_value_t = 256
    )]
    concurrency_per_connection: usize,
    /// HTTP/2 streams a client may open at once per connection.
    #[arg(long, env = "SEGMENTD_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    max_concurrent_streams: u32,
    /// Interval of HTTP/2 keepalive pings, e.g. `30s`.
    #[arg(long, env = "SEGMENTD_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered, e.g. `10s`.
    #[arg(long, env = "SEGMENTD_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    keepalive_timeout: Duration,
    /// How long in-flight calls may run on after SIGTERM or SIGINT, e.g. `20s`.
    #[arg(long, env = "SEGMENTD_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// Who may call what; boxed to keep `Command` small.
    #[command(flatten)]
    auth: Box<auth::AuthArgs>,
    /// The online backup's bound.
    #[command(flatten)]
    backup: backup::BackupServeArgs,
    /// Prometheus metrics.
    #[command(flatten)]
    metrics: metrics::MetricsArgs,
    #[command(flatten)]
    tls: tls::TlsArgs,
    /// Bounds on the request bytes held in memory.
    #[command(flatten)]
    limits: limits::LimitsArgs,
    /// Cluster mode.
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
    /// Watches of segments and personas.
    #[command(flatten)]
    watch: watch::WatchArgs,
    /// Predictions.
    #[command(flatten)]
    predict: predict::PredictArgs,
}

/// Flags of `segmentd healthcheck`.
#[derive(Debug, Args)]
struct HealthcheckArgs {
    /// Server address, e.g. `127.0.0.1:50051`.
    #[arg(long, env = "SEGMENTD_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// Service to ask about; empty for the whole server.
    #[arg(long, default_value = "")]
    service: String,
    /// How long to wait for an answer, e.g. `3s`.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    tls: tls::ClientTlsArgs,
}

/// The values of `--durability`: the store's [`Durability`], named for
/// the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DurabilityFlag {
    /// Only once it is flushed to disk; concurrent writers share one flush.
    Durable,
    /// As soon as it is applied in memory; sled flushes every
    /// [`PERIODIC_FLUSH_MS`] milliseconds, so a crash can lose that much.
    Relaxed,
}

impl From<DurabilityFlag> for Durability {
    fn from(flag: DurabilityFlag) -> Self {
        match flag {
            DurabilityFlag::Durable => Durability::Durable,
            DurabilityFlag::Relaxed => Durability::Relaxed,
        }
    }
}

/// Three increasing income limits.
#[derive(Debug, Clone, Copy)]
struct IncomeLimits([i64; 3]);

fn parse_income_limits(text: &str) -> Result<IncomeLimits, String> {
    let invalid =
        || format!("expected three increasing amounts such as 30000,75000,150000, got {text:?}");
    let limits: Vec<i64> = text
        .split(',')
        .map(|part| part.trim().parse().map_err(|_| invalid()))
        .collect::<Result<_, _>>()?;
    match <[i64; 3]>::try_from(limits) {
        Ok(limits) if limits[0] < limits[1] && limits[1] < limits[2] => Ok(IncomeLimits(limits)),
        _ => Err(invalid()),
    }
}

fn parse_currency(text: &str) -> Result<CurrencyCode, String> {
    CurrencyCode::parse(text)
}

/// Parses `250ms`, `20s`, `2m`, `24h` or `7d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("expected a duration such as 250ms, 20s, 2m, 24h or 7d, got {text:?}");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(number.saturating_mul(3600))),
        "d" => Ok(Duration::from_secs(number.saturating_mul(86_400))),
        _ => Err(invalid()),
    }
}

impl ServeArgs {
    fn config(&self) -> ServerConfig {
        ServerConfig {
            store: StoreOptions {
                path: self.data_dir.clone(),
                cache_capacity_bytes: self.cache_capacity_mb * 1024 * 1024,
                compress: self.compress_store,
                durability: self.durability.into(),
            },
            engine: EngineSettings {
                reporting_currency: self.currency,
                thresholds: Thresholds {
                    lapsed_gap_multiplier: self.lapsed_gap_multiplier,
                    lapsed_min_days: self.lapsed_min_days,
                    frequent_min_purchases_365d: self.frequent_min_purchases_365d,
                    frequent_gap_multiplier: self.frequent_gap_multiplier,
                    income_band_limits: self.income_band_limits.0,
                },
                watch: self.watch.settings(),
                predictions: self.predict.settings(),
                index_image: self.index_image,
            },
            limits: ApiLimits {
                max_page_size: self.max_page_size,
                max_batch_size: self.max_batch_size,
                max_events_per_batch: self.max_events_per_batch,
            },
            max_message_bytes: self.max_message_bytes,
            concurrency_per_connection: self.concurrency_per_connection,
            max_concurrent_streams: self.max_concurrent_streams,
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            shutdown_grace: self.shutdown_grace,
            auth: self.auth.config(),
            transport: self.tls.transport(),
            backup: self.backup.limits(),
            request_limits: self.limits.request_limits(),
            cluster: self.cluster.config(self.backup.limits()),
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // The store holds personal data: every file the server makes is for
    // its own user only (0600, directories 0700), whatever umask it got.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    telemetry::init(args.log_format);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, data_dir = %args.data_dir.display(), durability = ?args.durability, "listening");
    let listeners = server::Listeners {
        api: listener,
        health: args.tls.bind_health().await?,
        metrics: args.metrics.bind().await?,
    };
    server::run(listeners, args.config(), server::shutdown_signal()).await
}

/// How long the end of the process waits for work still on the runtime.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(2);

/// Runs the command line; what `main` calls.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("segmentd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        None => runtime.block_on(serve(cli.serve)),
        Some(Command::Serve(args)) => runtime.block_on(serve(*args)),
        Some(Command::Import(args)) => import(args, &runtime),
        Some(Command::Backup(args)) => runtime.block_on(backup::backup(args)),
        Some(Command::Restore(args)) => backup::restore(args),
        Some(Command::Persona(args)) => runtime.block_on(async {
            let endpoint = args.tls.endpoint(&args.addr)?;
            crate::client::persona::show(
                endpoint,
                args.auth.token().as_ref(),
                &args.customer,
                args.at.as_deref(),
                args.timeout,
            )
            .await
        }),
        Some(Command::Watch(args)) => runtime.block_on(async {
            let endpoint = args.tls.endpoint(&args.watch.addr)?;
            crate::client::watch::run(endpoint, args.auth.token().as_ref(), &args.watch).await
        }),
        Some(Command::Healthcheck(args)) => {
            match runtime.block_on(async {
                let endpoint = args.tls.endpoint(&args.addr)?;
                crate::client::healthcheck::check_at(endpoint, &args.service, args.timeout).await
            }) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(error) => Err(error),
            }
        }
    };
    // Whatever work is left on the blocking pool (a background prediction
    // fit, say) is not waited for: the server has flushed by now.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("segmentd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("20").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(parse_duration("5w").is_err());
    }

    #[test]
    fn serve_is_the_default() {
        let cli = Cli::try_parse_from(["segmentd", "--listen", "127.0.0.1:1"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.listen.port(), 1);
        let cli = Cli::try_parse_from(["segmentd", "healthcheck", "--addr", "x:1"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Healthcheck(_))));
    }
}
