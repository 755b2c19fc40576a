//! The two ways calls are sent: a closed loop, where a fixed number of
//! calls are in flight and each answer sends the next, and an open loop,
//! where calls leave at a fixed rate whatever the answers do.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::header::AUTHORIZATION;
use http::HeaderValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tower_http::set_header::SetRequestHeader;

use crate::report::{ms, report, Latencies};

/// How every connection of a run reaches the server.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectOptions {
    /// Speak TLS, trusting the server certificates this CA (PEM) signed.
    #[arg(long, global = true)]
    tls_ca: Option<PathBuf>,
    /// With --tls-ca: the name the server certificate must carry, when it
    /// is not the address's host.
    #[arg(long, global = true)]
    tls_server_name: Option<String>,
    /// With --tls-ca: a client certificate (PEM) to present, for mTLS.
    #[arg(long, global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A bearer token sent with every call.
    #[arg(long, env = "SEGMENTD_TOKEN", global = true)]
    token: Option<String>,
}

/// The options of this run, set once by `main`.
static CONNECT: OnceLock<ConnectOptions> = OnceLock::new();

/// Sets how every connection of this run is made.
pub fn configure(options: ConnectOptions) {
    let _ = CONNECT.set(options);
}

/// A connection to the server that sends the run's bearer token, if any.
pub type Connection = SetRequestHeader<Channel, Option<HeaderValue>>;

/// `count` connections to the server, each its own HTTP/2 connection.
pub async fn channels(addr: &str, count: usize) -> anyhow::Result<Vec<Connection>> {
    let options = CONNECT.get().cloned().unwrap_or_default();
    let token = match &options.token {
        Some(token) => Some(HeaderValue::try_from(format!("Bearer {token}"))?),
        None => None,
    };
    let scheme = if options.tls_ca.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{addr}"))?;
    if let Some(ca) = &options.tls_ca {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca)?));
        if let (Some(certificate), Some(key)) = (&options.tls_cert, &options.tls_key) {
            tls = tls.identity(Identity::from_pem(
                std::fs::read(certificate)?,
                std::fs::read(key)?,
            ));
        }
        if let Some(name) = &options.tls_server_name {
            tls = tls.domain_name(name);
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        let channel = endpoint.connect().await?;
        channels.push(SetRequestHeader::if_not_present(
            channel,
            AUTHORIZATION,
            token.clone(),
        ));
    }
    Ok(channels)
}

/// One connection to the server.
pub async fn channel(addr: &str) -> anyhow::Result<Connection> {
    Ok(channels(addr, 1).await?.remove(0))
}

/// Makes `requests` calls, `concurrency` at a time: `worker(w)` gives the
/// w-th worker its call, and `call(n)` makes the n-th call. Returns each
/// call's latency and how long all of them took.
pub async fn closed_loop<W, F, C>(
    requests: u64,
    concurrency: usize,
    worker: W,
) -> anyhow::Result<(Latencies, Duration)>
where
    W: Fn(usize) -> F,
    F: FnMut(u64) -> C + Send + 'static,
    C: Future<Output = Result<(), tonic::Status>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let mut call = worker(w);
        let next = Arc::clone(&next);
        workers.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    return Ok::<_, tonic::Status>(latencies);
                }
                let call = call(n);
                let sent = Instant::now();
                call.await?;
                latencies.record(sent.elapsed());
            }
        }));
    }
    let mut latencies = Latencies::default();
    for worker in workers {
        latencies.add(&worker.await??);
    }
    Ok((latencies, started.elapsed()))
}

/// Sends `warmup` seconds of calls and then `requests` more at `rate` calls
/// per second, and prints one table row for those after the warm-up.
///
/// A task starts each call when it is due, evenly spaced, and between
/// calls it yields rather than sleeps: the load generator's core spins,
/// so that neither the async timer's 1 ms grain nor the generator's own
/// wake-ups move a call from its due time. Each call is timed from when
/// it was due, queueing included: a stall anywhere shows in every call it
/// delays.
pub async fn open_loop<F, C>(
    run: String,
    requests: u64,
    rate: u64,
    warmup: f64,
    mut call: F,
) -> anyhow::Result<()>
where
    F: FnMut(u64) -> C + Send + 'static,
    C: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    anyhow::ensure!(rate > 0, "--rate must be above 0");
    let warmup_calls = (warmup.max(0.0) * rate as f64) as u64;
    // Answers go to a channel nobody waits on until the end, so that a
    // finished call is freed at once and wakes nothing.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    let due = move |n: u64| started + Duration::from_secs_f64(n as f64 / rate as f64);
    let measured_from = due(warmup_calls);
    let ticker = tokio::spawn(async move {
        // How late each measured call left: the generator's own check that
        // it kept pace.
        let mut late = Latencies::default();
        let mut n = 0;
        while n < warmup_calls + requests {
            let now = Instant::now();
            while n < warmup_calls + requests && due(n) <= now {
                let due = due(n);
                if n >= warmup_calls {
                    late.record(now - due);
                }
                let done_tx = (n >= warmup_calls).then(|| done_tx.clone());
                let call = call(n);
                tokio::spawn(async move {
                    let outcome = call.await;
                    if let Some(done_tx) = done_tx {
                        let _ = done_tx.send(outcome.map(|()| due.elapsed()));
                    }
                });
                n += 1;
            }
            tokio::task::yield_now().await;
        }
        late
    });
    let late = ticker.await?;
    let latencies = tokio::task::spawn_blocking(move || {
        done_rx.iter().collect::<Result<Latencies, tonic::Status>>()
    })
    .await??;
    report(
        &format!(
            "{run}, sent at most {:.2} ms late for 99%",
            ms(late.at(0.99))
        ),
        measured_from.elapsed(),
        &latencies,
    );
    Ok(())
}
