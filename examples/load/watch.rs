//! Watching under load: saved segments with varied rules, many open
//! WatchSegmentMembership and WatchPersonaAssignments streams, and
//! purchases recorded at a fixed rate for fresh customers, each of whom
//! the purchase brings into at least one watched segment. Measures the time
//! from each write's acknowledgement to the first watch message that
//! reports its customer entering, and the server's CPU with the same
//! writes and no watches, with the watches open and no writes, and with
//! both.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use segmentd::grpc::pb;
use segmentd::grpc::pb::activity_service_client::ActivityServiceClient;
use segmentd::grpc::pb::customer_service_client::CustomerServiceClient;
use segmentd::grpc::pb::membership_service_client::MembershipServiceClient;
use segmentd::grpc::pb::persona_service_client::PersonaServiceClient;
use segmentd::grpc::pb::segmentation_service_client::SegmentationServiceClient;
use segmentd::grpc::pb::watch_persona_assignments_response::Event as PersonaEvent;
use segmentd::grpc::pb::watch_segment_membership_response::Event as SegmentEvent;
use tokio::task::JoinHandle;

use crate::data::{customer, customer_id, COUNTRIES};
use crate::drive::{channel, channels, Connection};
use crate::report::{ms, Latencies};

/// What `load watch` is asked for.
#[derive(Debug, clap::Args)]
pub struct WatchLoad {
    /// Customers of the loaded data set: the fresh customers the run
    /// creates are numbered after them.
    #[arg(long, default_value_t = 1_000_000)]
    customers: u64,
    /// Saved segments to create and watch (at least 8: the first eight
    /// take in a customer of each country at their first purchase).
    #[arg(long, default_value_t = 100)]
    segments: usize,
    /// Watch streams in all, persona streams included, spread evenly
    /// over the segments.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Of them, WatchPersonaAssignments streams, each for one persona of
    /// the catalog in turn.
    #[arg(long, default_value_t = 10)]
    persona_streams: usize,
    /// HTTP/2 connections the streams are spread over; the server takes
    /// 256 streams per connection by default.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Purchases per second, each for a customer with none before.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Purchases per RecordActivity call.
    #[arg(long, default_value_t = 10)]
    per_call: u64,
    /// Seconds of writes, once without the watches and once with them.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seconds with the watches open and no writes.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// Seconds after the last write that its change may take before it
    /// counts as missed.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// The server's process id, to read its CPU time and memory from
    /// /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server's Prometheus listener (`--metrics-listen`), to read how
    /// many evaluations it made and how long they took.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// With --server-pid: the run stops with an error when the server's
    /// resident memory goes above this many MiB.
    #[arg(long, default_value_t = 8192)]
    max_server_rss_mib: u64,
}

/// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`), 100 on
/// Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// The server's CPU time so far (user and system), from `/proc/PID/stat`;
/// `None` without a process id or when it cannot be read.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // The fields after the command name, which is in brackets: the state
    // first, then utime and stime as the 12th and 13th.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) as f64 / TICKS_PER_SECOND)
}

/// The server's resident memory in MiB, from `/proc/PID/status`.
fn rss_mib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The server's resident memory, as text.
fn rss_text(pid: Option<u32>) -> String {
    match rss_mib(pid) {
        Some(mib) => format!("server RSS {mib} MiB"),
        None => "server RSS not measured".into(),
    }
}

/// Watches the server's memory every 200 ms and ends the run with an
/// error once it is above `limit` MiB, so that the run cannot take the
/// machine's memory from everything else on it.
async fn guard_memory(pid: Option<u32>, limit: u64) -> anyhow::Result<()> {
    loop {
        if let Some(mib) = rss_mib(pid) {
            anyhow::ensure!(
                mib <= limit,
                "the server's RSS reached {mib} MiB, above --max-server-rss-mib {limit}: \
                 stopping the run"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The server's watch evaluations so far and the seconds they took, from
/// its `segmentd_watch_evaluations` and `segmentd_watch_evaluation_seconds`
/// metrics; `None` without a metrics address or when they cannot be read.
async fn evaluation_metrics(addr: Option<&str>) -> Option<(f64, f64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr?).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: segmentd\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
    };
    Some((
        value("segmentd_watch_evaluations_total")
            .or_else(|| value("segmentd_watch_evaluations"))?,
        value("segmentd_watch_evaluation_seconds_total")
            .or_else(|| value("segmentd_watch_evaluation_seconds"))?,
    ))
}

/// The evaluations over a stretch of the run, from the server's metrics.
struct EvaluationMeter {
    /// The metrics listener's address.
    addr: Option<String>,
    /// Evaluations and their seconds at the start.
    start: Option<(f64, f64)>,
}

impl EvaluationMeter {
    /// Starts counting.
    async fn start(addr: Option<&str>) -> Self {
        EvaluationMeter {
            addr: addr.map(str::to_owned),
            start: evaluation_metrics(addr).await,
        }
    }

    /// The evaluations since the start and their mean length, as text.
    async fn text(&self) -> String {
        let (Some((count, seconds)), Some((count_before, seconds_before))) =
            (evaluation_metrics(self.addr.as_deref()).await, self.start)
        else {
            return "evaluations not read (no --metrics-addr)".into();
        };
        let count = count - count_before;
        let seconds = seconds - seconds_before;
        if count <= 0.0 {
            return "no evaluation by the server's metrics".into();
        }
        format!(
            "{count:.0} evaluation(s) of {:.1} ms on average",
            seconds / count * 1e3
        )
    }
}

/// The server's CPU use over a stretch of the run, as a share of a core.
struct CpuMeter {
    /// The server's process id.
    pid: Option<u32>,
    /// Its CPU seconds at the start.
    cpu: Option<f64>,
    /// When the stretch started.
    started: Instant,
}

impl CpuMeter {
    /// Starts measuring.
    fn start(pid: Option<u32>) -> Self {
        CpuMeter {
            pid,
            cpu: cpu_seconds(pid),
            started: Instant::now(),
        }
    }

    /// The server's CPU since the start, in percent of one core.
    fn percent(&self) -> Option<f64> {
        let used = cpu_seconds(self.pid)? - self.cpu?;
        Some(used / self.started.elapsed().as_secs_f64() * 100.0)
    }
}

/// A share of a core as text, or that it was not measured.
fn cpu_text(percent: Option<f64>) -> String {
    match percent {
        Some(percent) => format!("server CPU {percent:.1}% of a core"),
        None => "server CPU not measured (no --server-pid)".into(),
    }
}

/// The rule of saved segment `i`. The first eight take in every fresh
/// customer of one country at their first purchase, so each write makes
/// a known customer enter; the rest vary the README's examples over
/// thresholds, countries, ages and incomes.
fn rule(i: usize) -> String {
    if i < COUNTRIES.len() {
        return format!(
            "features.purchase_count >= 1 && customer.country == \"{}\"",
            COUNTRIES[i]
        );
    }
    let k = i - COUNTRIES.len();
    let v = k / 12;
    let country = COUNTRIES[k % COUNTRIES.len()];
    let other = COUNTRIES[(k + 3) % COUNTRIES.len()];
    match k % 12 {
        0 => format!("features.purchase_count >= {} && customer.country == \"{country}\"", 2 + v),
        1 => format!(
            "features.total_spend >= {} && customer.country in [\"{country}\", \"{other}\"]",
            100 * (v + 1)
        ),
        2 => format!(
            "features.recency_days <= {} && features.purchases_90d >= 1",
            7 * (v + 1)
        ),
        3 => format!(
            "features.frequency == \"FREQUENT_CUSTOMER\" && customer.age >= {}",
            20 + 5 * v
        ),
        4 => format!(
            "features.avg_order_value > {} && customer.income_band in [\"HIGH\", \"VERY_HIGH\"]",
            20 + 10 * v
        ),
        5 => format!(
            "features.rfm_segment in [\"CHAMPIONS\", \"LOYAL\"] && customer.country == \"{country}\""
        ),
        6 => format!(
            "features.purchases_365d >= {} && customer.gender == \"FEMALE\"",
            1 + v
        ),
        7 => format!(
            "features.stage in [\"REBUYING\", \"GIVING_FEEDBACK\"] && customer.consent.email == \
             \"GRANTED\" && customer.age >= {}",
            18 + 5 * v
        ),
        8 => format!(
            "customer.party == \"BUSINESS\" && features.total_spend >= {}",
            50 * (v + 1)
        ),
        9 => format!(
            "features.rfm.m >= 4 && features.rfm.f >= {}",
            1 + v % 5
        ),
        10 => format!(
            "features.mean_gap_days < {} && features.purchase_count >= 2",
            30 + 15 * v
        ),
        _ => format!(
            "features.purchase_count > 0 && customer.age_band in [\"25_34\", \"35_44\"] && \
             customer.income >= {}",
            30_000 + 10_000 * v
        ),
    }
}

/// When each fresh customer's write was acknowledged and when a watcher
/// first heard of them entering, in nanoseconds after `started` plus one
/// (0 for not yet); and what the watchers received.
struct Board {
    /// What the stamps count from.
    started: Instant,
    /// The number of the first fresh customer written while watched.
    first: u64,
    /// When each customer's write was acknowledged, by slot.
    acked: Vec<AtomicU64>,
    /// When a watcher first heard of each customer entering, by slot.
    arrived: Vec<AtomicU64>,
    /// Watch streams open.
    opened: AtomicUsize,
    /// Watch messages received, of any kind.
    messages: AtomicU64,
    /// Customers entering, leaving or moving, over all streams.
    changes: AtomicU64,
    /// From one stream: evaluations seen (distinct evaluation times).
    evaluations: AtomicU64,
    /// From the same stream: how long after each evaluation time its
    /// message arrived.
    lags: Mutex<Latencies>,
}

impl Board {
    /// A board for `count` fresh customers from number `first`.
    fn new(first: u64, count: u64) -> Self {
        let slots = || (0..count).map(|_| AtomicU64::new(0)).collect();
        Board {
            started: Instant::now(),
            first,
            acked: slots(),
            arrived: slots(),
            opened: AtomicUsize::new(0),
            messages: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            evaluations: AtomicU64::new(0),
            lags: Mutex::new(Latencies::default()),
        }
    }

    /// Now, as stored: nanoseconds after `started`, plus one.
    fn stamp(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64 + 1
    }

    /// The slot of a watched fresh customer, from their resource name.
    fn slot(&self, name: &str) -> Option<usize> {
        let n: u64 = name.strip_prefix("customers/load-")?.parse().ok()?;
        let slot = n.checked_sub(self.first)? as usize;
        (slot < self.arrived.len()).then_some(slot)
    }

    /// Notes a customer entering, the first time only.
    fn entered(&self, name: &str) {
        if let Some(slot) = self.slot(name) {
            let _ = self.arrived[slot].compare_exchange(
                0,
                self.stamp(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Notes an evaluation time seen on the stream that measures them.
    fn evaluation(&self, at: Option<&prost_types::Timestamp>, last: &mut i64) {
        let Some(at) = at else {
            return;
        };
        let nanos = at.seconds * 1_000_000_000 + i64::from(at.nanos);
        if nanos == *last {
            return;
        }
        *last = nanos;
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i64;
        let lag = Duration::from_nanos(now.saturating_sub(nanos).max(0) as u64);
        self.lags
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record(lag);
    }
}

/// Follows one segment until aborted.
async fn follow_segment(
    mut client: MembershipServiceClient<Connection>,
    segment: String,
    board: Arc<Board>,
    measures_evaluations: bool,
) -> anyhow::Result<()> {
    let request = pb::WatchSegmentMembershipRequest {
        segment,
        ..Default::default()
    };
    let mut stream = client.watch_segment_membership(request).await?.into_inner();
    board.opened.fetch_add(1, Ordering::Relaxed);
    let mut last = 0;
    while let Some(message) = stream.message().await? {
        board.messages.fetch_add(1, Ordering::Relaxed);
        if measures_evaluations {
            board.evaluation(message.evaluation_time.as_ref(), &mut last);
        }
        if let Some(SegmentEvent::Changes(changes)) = message.event {
            let count = changes.entered.len() + changes.left.len();
            board.changes.fetch_add(count as u64, Ordering::Relaxed);
            for change in &changes.entered {
                board.entered(&change.customer);
            }
        }
    }
    anyhow::bail!("a segment watch ended")
}

/// Follows moves into or out of one persona until aborted.
async fn follow_persona(
    mut client: MembershipServiceClient<Connection>,
    persona: String,
    board: Arc<Board>,
) -> anyhow::Result<()> {
    let request = pb::WatchPersonaAssignmentsRequest {
        persona_ids: vec![persona],
        ..Default::default()
    };
    let mut stream = client
        .watch_persona_assignments(request)
        .await?
        .into_inner();
    board.opened.fetch_add(1, Ordering::Relaxed);
    while let Some(message) = stream.message().await? {
        board.messages.fetch_add(1, Ordering::Relaxed);
        if let Some(PersonaEvent::Moves(moves)) = message.event {
            board
                .changes
                .fetch_add(moves.moves.len() as u64, Ordering::Relaxed);
        }
    }
    anyhow::bail!("a persona watch ended")
}

/// A fresh customer: as the data set's customer `n`, but never objecting
/// to profiling, so that their purchases count.
fn fresh_customer(n: u64) -> pb::Customer {
    pb::Customer {
        objects_to_profiling: false,
        ..customer(n)
    }
}

/// The first purchase of fresh customer `n`, made now.
fn fresh_purchase(n: u64) -> pb::Purchase {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    pb::Purchase {
        purchase_id: format!("watch-p{n}"),
        customer: format!("customers/{}", customer_id(n)),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now,
            nanos: 0,
        }),
        amount: Some(pb::Money {
            currency_code: "USD".into(),
            minor_units: 200 + (n * 7919 % 20_000) as i64,
        }),
        quantity: 1,
        category: "books".into(),
        durability: pb::ProductDurability::Consumable as i32,
    }
}

/// Records one purchase for each of the run's `--rate` × `--seconds`
/// fresh customers from `first`, `--per-call` to a RecordActivity call,
/// at `--rate` purchases a second; notes each acknowledgement on `board`
/// when given. The calls' latencies.
async fn write(
    client: &ActivityServiceClient<Connection>,
    load: &WatchLoad,
    first: u64,
    board: Option<Arc<Board>>,
) -> anyhow::Result<Latencies> {
    let (rate, per_call) = (load.rate, load.per_call);
    let count = rate * load.seconds;
    anyhow::ensure!(
        rate > 0 && per_call > 0,
        "--rate and --per-call must be above 0"
    );
    let calls = count.div_ceil(per_call);
    let every = Duration::from_secs_f64(per_call as f64 / rate as f64);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = Vec::with_capacity(calls as usize);
    for call in 0..calls {
        ticker.tick().await;
        let from = first + call * per_call;
        let to = (from + per_call).min(first + count);
        let request = pb::RecordActivityRequest {
            purchases: (from..to).map(fresh_purchase).collect(),
            engagements: Vec::new(),
        };
        let mut client = client.clone();
        let board = board.clone();
        pending.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = client.record_activity(request).await?.into_inner();
            let latency = sent.elapsed();
            anyhow::ensure!(
                response.accepted_count as u64 == to - from,
                "recorded {response:?} of {} purchases",
                to - from
            );
            if let Some(board) = board {
                let stamp = board.stamp();
                for n in from..to {
                    board.acked[(n - board.first) as usize].store(stamp, Ordering::Relaxed);
                }
            }
            Ok::<_, anyhow::Error>(latency)
        }));
    }
    let mut latencies = Latencies::default();
    for call in pending {
        latencies.record(call.await??);
    }
    Ok(latencies)
}

/// Creates the fresh customers, `count` from `first`, over one
/// ImportCustomers stream.
async fn create_customers(channel: &Connection, first: u64, count: u64) -> anyhow::Result<()> {
    let mut client = CustomerServiceClient::new(channel.clone());
    let mut numbers = first..first + count;
    let messages = std::iter::from_fn(move || {
        let customers: Vec<_> = numbers.by_ref().take(1000).map(fresh_customer).collect();
        (!customers.is_empty()).then_some(pb::ImportCustomersRequest { customers })
    });
    let response = client
        .import_customers(tokio_stream::iter(messages))
        .await?
        .into_inner();
    anyhow::ensure!(
        response.created_count as u64 == count,
        "imported {response:?} of {count} customers"
    );
    Ok(())
}

/// Saves `count` segments with the rules of [`rule`]; their names.
async fn create_segments(channel: &Connection, count: usize) -> anyhow::Result<Vec<String>> {
    let mut segmentation = SegmentationServiceClient::new(channel.clone());
    let mut segments = Vec::with_capacity(count);
    for i in 0..count {
        let segment = segmentation
            .create_segment(pb::CreateSegmentRequest {
                segment_id: format!("watch-{i:03}"),
                segment: Some(pb::Segment {
                    display_name: format!("Watched {i}"),
                    filter: rule(i),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner();
        segments.push(segment.name);
    }
    Ok(segments)
}

/// Starts following every segment, one at a time: opens a stream, which
/// registers the segment with an evaluation of all its members, and
/// closes it. Watches opened afterwards start at the head of the history
/// rather than behind the other segments' first records.
async fn register(channel: &Connection, segments: &[String]) -> anyhow::Result<()> {
    let mut client = MembershipServiceClient::new(channel.clone());
    for segment in segments {
        let request = pb::WatchSegmentMembershipRequest {
            segment: segment.clone(),
            ..Default::default()
        };
        drop(client.watch_segment_membership(request).await?);
    }
    Ok(())
}

/// Opens the watch streams, spread over `connections` connections:
/// persona streams first, then segment streams over the segments in turn.
async fn open_streams(
    addr: &str,
    load: &WatchLoad,
    segments: &[String],
    personas: &[String],
    board: &Arc<Board>,
) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<()>>>> {
    let clients: Vec<_> = channels(addr, load.connections.max(1))
        .await?
        .into_iter()
        .map(MembershipServiceClient::new)
        .collect();
    let mut tasks = Vec::with_capacity(load.streams);
    for j in 0..load.streams {
        let client = clients[j % clients.len()].clone();
        let board = Arc::clone(board);
        let task = if j < load.persona_streams && !personas.is_empty() {
            let persona = personas[j % personas.len()].clone();
            tokio::spawn(follow_persona(client, persona, board))
        } else {
            let k = j - load.persona_streams.min(j);
            let segment = segments[k % segments.len()].clone();
            tokio::spawn(follow_segment(client, segment, board, k == 0))
        };
        tasks.push(task);
    }
    Ok(tasks)
}

/// Fails if a stream task ended (they end only with an error).
async fn check_streams(tasks: &mut [JoinHandle<anyhow::Result<()>>]) -> anyhow::Result<()> {
    for task in tasks.iter_mut() {
        if task.is_finished() {
            task.await??;
        }
    }
    Ok(())
}

/// Waits for the changes not yet seen, up to `--timeout`, then prints the
/// time from each write's acknowledgement to its change, and how many
/// never came.
async fn report_arrivals(
    board: &Board,
    load: &WatchLoad,
    tasks: &mut [JoinHandle<anyhow::Result<()>>],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(load.timeout);
    let missing = || {
        board
            .arrived
            .iter()
            .filter(|arrived| arrived.load(Ordering::Relaxed) == 0)
            .count()
    };
    while missing() > 0 && Instant::now() < deadline {
        check_streams(tasks).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies = Latencies::default();
    let mut longest = Duration::ZERO;
    let mut lost = 0;
    for (acked, arrived) in board.acked.iter().zip(&board.arrived) {
        let (acked, arrived) = (
            acked.load(Ordering::Relaxed),
            arrived.load(Ordering::Relaxed),
        );
        if arrived == 0 {
            lost += 1;
            continue;
        }
        // A change that came before its acknowledgement took no time.
        let latency = Duration::from_nanos(arrived.saturating_sub(acked));
        longest = longest.max(latency);
        latencies.record(latency);
    }
    println!(
        "| acknowledgement to the first watch message with the customer entering | {} of {} writes seen, {lost} missed after {} s | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms |",
        latencies.len(),
        board.arrived.len(),
        load.timeout,
        ms(latencies.at(0.5)),
        ms(latencies.at(0.99)),
        ms(longest),
    );
    Ok(())
}

/// The watch run: prints one table row per stretch; stops early when the
/// server's memory goes above the limit.
pub async fn watch(addr: &str, load: WatchLoad) -> anyhow::Result<()> {
    let guard = guard_memory(load.server_pid, load.max_server_rss_mib);
    tokio::select! {
        outcome = guard => outcome,
        outcome = run(addr, &load) => outcome,
    }
}

/// The stretches of the watch run, one table row each.
async fn run(addr: &str, load: &WatchLoad) -> anyhow::Result<()> {
    anyhow::ensure!(
        load.segments >= COUNTRIES.len(),
        "--segments must be at least {}",
        COUNTRIES.len()
    );
    anyhow::ensure!(
        load.streams > load.persona_streams,
        "--streams must be above --persona-streams"
    );
    let channel = channel(addr).await?;
    let per_phase = load.rate * load.seconds;
    let baseline_first = load.customers;
    let watched_first = load.customers + per_phase;

    let started = Instant::now();
    create_customers(&channel, baseline_first, 2 * per_phase).await?;
    let segments = create_segments(&channel, load.segments).await?;
    let personas: Vec<String> = PersonaServiceClient::new(channel.clone())
        .list_personas(pb::ListPersonasRequest {})
        .await?
        .into_inner()
        .personas
        .into_iter()
        .map(|persona| persona.persona_id)
        .collect();
    println!(
        "| {} fresh customers and {} saved segments created | | {:.1} s; {} |",
        2 * per_phase,
        load.segments,
        started.elapsed().as_secs_f64(),
        rss_text(load.server_pid)
    );

    let activity = ActivityServiceClient::new(channel.clone());
    let what = format!(
        "{} purchases/s in calls of {}, each a fresh customer's first, for {} s",
        load.rate, load.per_call, load.seconds
    );
    let cpu = CpuMeter::start(load.server_pid);
    let calls = write(&activity, load, baseline_first, None).await?;
    let baseline = cpu.percent();
    println!(
        "| no watches: {what} | {:.0} purchases/s | {}; RecordActivity p50 {:.2} ms, p99 {:.2} ms |",
        per_phase as f64 / cpu.started.elapsed().as_secs_f64(),
        cpu_text(baseline),
        ms(calls.at(0.5)),
        ms(calls.at(0.99)),
    );

    let registering = Instant::now();
    register(&channel, &segments).await?;
    println!(
        "| {} segments registered, one watch opened and closed at a time | | {:.1} s; {} |",
        load.segments,
        registering.elapsed().as_secs_f64(),
        rss_text(load.server_pid)
    );
    // Let the history settle before the watches start from its head.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let board = Arc::new(Board::new(watched_first, per_phase));
    let opening = Instant::now();
    let mut tasks = open_streams(addr, load, &segments, &personas, &board).await?;
    while board.opened.load(Ordering::Relaxed) < load.streams {
        check_streams(&mut tasks).await?;
        anyhow::ensure!(
            opening.elapsed() < Duration::from_secs(300),
            "only {} of {} watch streams opened in 300 s",
            board.opened.load(Ordering::Relaxed),
            load.streams
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "| {} watch streams opened ({} of personas {}, the rest over {} segments), {} connections | | {:.1} s; {} |",
        load.streams,
        load.persona_streams,
        personas.join(", "),
        load.segments,
        load.connections,
        opening.elapsed().as_secs_f64(),
        rss_text(load.server_pid)
    );

    // Let the registrations' evaluations pass, then the watches alone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    *board
        .lags
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Latencies::default();
    let metered = EvaluationMeter::start(load.metrics_addr.as_deref()).await;
    let cpu = CpuMeter::start(load.server_pid);
    let evaluations = board.evaluations.load(Ordering::Relaxed);
    let messages = board.messages.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(load.idle_seconds)).await;
    let idle = cpu.percent();
    let elapsed = cpu.started.elapsed().as_secs_f64();
    let lags = std::mem::take(
        &mut *board
            .lags
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    println!(
        "| {} watches open, no writes, for {} s | {:.0} messages/s | {}; {:.1} evaluations/s, each message p50 {:.1} ms, p99 {:.1} ms after its evaluation time |",
        load.streams,
        load.idle_seconds,
        (board.messages.load(Ordering::Relaxed) - messages) as f64 / elapsed,
        cpu_text(idle),
        (board.evaluations.load(Ordering::Relaxed) - evaluations) as f64 / elapsed,
        ms(lags.at(0.5)),
        ms(lags.at(0.99)),
    );
    println!(
        "| the same {} s, by the server's metrics | | {} |",
        load.idle_seconds,
        metered.text().await
    );
    check_streams(&mut tasks).await?;

    let evaluations = board.evaluations.load(Ordering::Relaxed);
    let messages = board.messages.load(Ordering::Relaxed);
    let changes = board.changes.load(Ordering::Relaxed);
    let metered = EvaluationMeter::start(load.metrics_addr.as_deref()).await;
    let cpu = CpuMeter::start(load.server_pid);
    let calls = write(&activity, load, watched_first, Some(Arc::clone(&board))).await?;
    let evaluated_text = metered.text().await;
    let watched = cpu.percent();
    let elapsed = cpu.started.elapsed().as_secs_f64();
    let received = board.messages.load(Ordering::Relaxed) - messages;
    let changed = board.changes.load(Ordering::Relaxed) - changes;
    let evaluated = board.evaluations.load(Ordering::Relaxed) - evaluations;
    println!(
        "| {} watches open: {what} | {:.0} purchases/s | {}; RecordActivity p50 {:.2} ms, p99 {:.2} ms |",
        load.streams,
        per_phase as f64 / elapsed,
        cpu_text(watched),
        ms(calls.at(0.5)),
        ms(calls.at(0.99)),
    );
    if let (Some(watched), Some(baseline)) = (watched, baseline) {
        println!(
            "| server CPU for watching: with the watches minus without, same writes | | {:.1}% of a core |",
            watched - baseline
        );
    }
    println!("| the same writes, by the server's metrics | | {evaluated_text} |");
    println!(
        "| watch messages received meanwhile, over all streams | {:.0} messages/s | {:.0} customers entering, leaving or moving a second; {:.1} evaluations/s |",
        received as f64 / elapsed,
        changed as f64 / elapsed,
        evaluated as f64 / elapsed,
    );

    report_arrivals(&board, load, &mut tasks).await?;
    let lags = board
        .lags
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    println!(
        "| evaluation time to its message, on one segment stream, while writing | {} evaluations | p50 {:.1} ms, p99 {:.1} ms; {} |",
        lags.len(),
        ms(lags.at(0.5)),
        ms(lags.at(0.99)),
        rss_text(load.server_pid)
    );
    drop(lags);
    for task in &tasks {
        task.abort();
    }
    Ok(())
}
