//! Prometheus metrics: the gRPC server's calls by method and status code,
//! the engine's and the store's numbers, and build information, served as
//! Prometheus text on `GET /metrics` of a listener of their own.
//!
//! - `rpc`: the per-method numbers, and the tower layer that counts them.
//! - `http`: the HTTP listener.
//! - this module: [`Metrics`], and the scrape, which reads the engine's
//!   numbers (the engine knows no metrics library) and writes everything
//!   through `prometheus-client`'s encoder.

mod cluster;
mod http;
mod rpc;

pub use http::MetricsListener;
pub use rpc::{RpcMetrics, RpcMetricsLayer, CODE_NAMES, LATENCY_BUCKETS_MICROS};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::engine::EngineStats;
use crate::grpc::{pb, EngineSlot};
use crate::store::FLUSH_BUCKETS_MICROS;
use rpc::{MethodStats, RpcTable};

/// The server's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// What is shared by the clones.
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Every method's numbers.
    rpc: Arc<RpcTable>,
    /// The engine, once it is open.
    engine: EngineSlot,
    /// Whether callers must authenticate.
    authentication_enabled: AtomicBool,
}

impl Metrics {
    /// Metrics for the services the server serves, reading the engine in
    /// `engine` once it is open.
    pub fn new(engine: EngineSlot) -> Self {
        let rpc = RpcTable::new(&[
            pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]);
        Metrics {
            shared: Arc::new(Shared {
                rpc: Arc::new(rpc),
                engine,
                authentication_enabled: AtomicBool::new(false),
            }),
        }
    }

    /// The layer that counts every call, and sheds calls over
    /// `concurrency_per_connection` on one connection with
    /// RESOURCE_EXHAUSTED.
    pub fn layer(&self, concurrency_per_connection: usize) -> RpcMetricsLayer {
        RpcMetricsLayer::new(Arc::clone(&self.shared.rpc), concurrency_per_connection)
    }

    /// Says whether callers must authenticate, for
    /// `segmentd_authentication_enabled`; off until set.
    pub fn set_authentication_enabled(&self, enabled: bool) {
        self.shared
            .authentication_enabled
            .store(enabled, Ordering::Relaxed);
    }

    /// Everything, as Prometheus text (format 0.0.4).
    pub async fn render(&self) -> String {
        let opened = self.shared.engine.get();
        let ready = opened.is_some_and(|engine| *engine.ready().borrow());
        let replica = opened.and_then(|engine| engine.replica_stats());
        let engine = match opened {
            Some(engine) => match engine.stats().await {
                Ok(stats) => Some(stats),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the engine's numbers for a scrape");
                    None
                }
            },
            None => None,
        };
        let scrape = Scrape {
            rpc: Arc::clone(&self.shared.rpc),
            ready,
            engine,
            replica,
            authentication_enabled: self.shared.authentication_enabled.load(Ordering::Relaxed),
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(scrape));
        let mut text = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
        text
    }
}

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Everything one scrape reports.
#[derive(Debug)]
struct Scrape {
    /// Every method's numbers.
    rpc: Arc<RpcTable>,
    /// Whether the store is open and the index built.
    ready: bool,
    /// The engine's numbers; `None` while the store opens.
    engine: Option<EngineStats>,
    /// The replica's numbers, in cluster mode.
    replica: Option<crate::engine::replica::ReplicaStats>,
    /// Whether callers must authenticate.
    authentication_enabled: bool,
}

/// The labels of one method.
type MethodLabels<'a> = [(&'static str, &'a str); 3];

fn method_labels(method: &MethodStats) -> MethodLabels<'_> {
    [
        ("grpc_service", method.service.as_str()),
        ("grpc_method", method.method.as_str()),
        ("grpc_type", method.call_type.label()),
    ]
}

/// Writes one metric without labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// Writes a family with one label, `label`, and a metric per value of it.
fn by_label<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    (name, help, metric_type): (&str, &str, MetricType),
    label: &str,
    metrics: impl IntoIterator<Item = (&'static str, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (value, metric) in metrics {
        metric.encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// Writes a family with a metric per method in `methods`.
fn by_method<'a, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    (name, help, metric_type): (&str, &str, MetricType),
    methods: &[&'a MethodStats],
    metric: impl Fn(&'a MethodStats) -> M,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for method in methods {
        metric(method).encode(family.encode_family(&method_labels(method))?)?;
    }
    Ok(())
}

/// Latency buckets for the encoder: each upper bound, in seconds, with
/// the observations in it.
fn buckets(bounds_micros: &[u64], counts: &[u64]) -> Vec<(f64, u64)> {
    bounds_micros
        .iter()
        .map(|&bound| seconds(bound))
        .zip(counts.iter().copied())
        .collect()
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

impl Scrape {
    /// The `grpc_server_*` families; a method appears once it is called.
    fn encode_rpc(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let called: Vec<&MethodStats> = self
            .rpc
            .methods()
            .filter(|method| method.started.load(Ordering::Relaxed) > 0)
            .collect();
        by_method(
            encoder,
            (
                "grpc_server_started",
                "RPCs started on the server",
                MetricType::Counter,
            ),
            &called,
            |method| ConstCounter::new(method.started.load(Ordering::Relaxed)),
        )?;

        let mut family = encoder.encode_descriptor(
            "grpc_server_handled",
            "RPCs completed on the server, by status code",
            None,
            MetricType::Counter,
        )?;
        for method in &called {
            for (code, handled) in CODE_NAMES.iter().zip(&method.handled) {
                let handled = handled.load(Ordering::Relaxed);
                if handled == 0 {
                    continue;
                }
                let [service, name, call_type] = method_labels(method);
                let labels = [service, name, call_type, ("grpc_code", *code)];
                ConstCounter::new(handled).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its end (the last message and status of a stream)",
            None,
            MetricType::Histogram,
        )?;
        for method in &called {
            let (counts, count, sum_micros) = method.latency.read();
            family
                .encode_family(&method_labels(method))?
                .encode_histogram::<NoLabelSet>(
                    seconds(sum_micros),
                    count,
                    &buckets(&LATENCY_BUCKETS_MICROS, &counts),
                    None,
                )?;
        }

        by_method(
            encoder,
            (
                "grpc_server_in_flight",
                "RPCs started and not yet completed",
                MetricType::Gauge,
            ),
            &called,
            |method| ConstGauge::new(method.in_flight() as i64),
        )?;
        by_method(
            encoder,
            (
                "grpc_server_shed",
                "RPCs refused with RESOURCE_EXHAUSTED because their connection had --concurrency-per-connection calls in flight (also counted as handled)",
                MetricType::Counter,
            ),
            &called,
            |method| ConstCounter::new(method.shed.load(Ordering::Relaxed)),
        )
    }

    /// The `segmentd_*` families of the engine and the store.
    fn encode_engine(
        &self,
        encoder: &mut DescriptorEncoder,
        stats: &EngineStats,
    ) -> Result<(), std::fmt::Error> {
        let index = &stats.index;
        for (name, help, value) in [
            (
                "segmentd_index_customers",
                "Customers in the in-memory index",
                index.customers as u64,
            ),
            (
                "segmentd_index_purchases",
                "Purchases in the in-memory index",
                index.purchases as u64,
            ),
            (
                "segmentd_index_engagements",
                "Engagement events in the in-memory index",
                index.engagements as u64,
            ),
            (
                "segmentd_store_disk_bytes",
                "Bytes the store takes on disk",
                stats.store_bytes,
            ),
        ] {
            single(encoder, name, help, ConstGauge::new(value as i64))?;
        }
        let watch = &stats.watch;
        for (name, help, value) in [
            (
                "segmentd_watch_streams",
                "Watches of segments and personas open now",
                watch.streams,
            ),
            (
                "segmentd_watch_subjects",
                "Segments (per consent channel) and persona assignments followed by the watch evaluations",
                watch.subjects,
            ),
            (
                "segmentd_watch_history_last_record",
                "The sequence number of the last record of the change history",
                watch.last_record,
            ),
        ] {
            single(encoder, name, help, ConstGauge::new(value as i64))?;
        }
        single(
            encoder,
            "segmentd_watch_evaluations",
            "Evaluations of the watched segments and personas since start-up",
            ConstCounter::new(watch.evaluations),
        )?;
        single(
            encoder,
            "segmentd_watch_evaluation_seconds",
            "Time spent evaluating the watched segments and personas since start-up",
            ConstCounter::new(watch.evaluation_micros as f64 / 1e6),
        )?;
        single(
            encoder,
            "segmentd_index_rebuild_seconds",
            "How long the index took to load at start-up, from the store or from the image of the last shutdown",
            ConstGauge::new(stats.last_rebuild.as_secs_f64()),
        )?;
        single(
            encoder,
            "segmentd_index_from_image",
            "1 if the index was read at start-up from the image of the last clean shutdown, 0 if rebuilt from the store",
            ConstGauge::new(i64::from(stats.index_from_image)),
        )?;
        by_label(
            encoder,
            (
                "segmentd_index_bytes",
                "Heap bytes of the in-memory index, by part",
                MetricType::Gauge,
            ),
            "part",
            [
                ("customers", index.customer_bytes),
                ("purchases", index.purchase_bytes),
                ("engagements", index.engagement_bytes),
            ]
            .map(|(part, bytes)| (part, ConstGauge::new(bytes as i64))),
        )?;
        by_label(
            encoder,
            (
                "segmentd_events_recorded",
                "Events recorded since start-up, repeats of a recorded id not counted, by kind",
                MetricType::Counter,
            ),
            "kind",
            [
                ("purchase", ConstCounter::new(stats.purchases_recorded)),
                ("engagement", ConstCounter::new(stats.engagements_recorded)),
            ],
        )?;

        let flushes = &stats.flushes;
        for (name, help, value) in [
            (
                "segmentd_group_commit_flushes",
                "Group-commit flushes of the store to disk",
                flushes.flushes,
            ),
            (
                "segmentd_group_commit_failures",
                "Group-commit flushes that failed",
                flushes.failures,
            ),
            (
                "segmentd_group_commit_waits",
                "Writes that waited for a group commit; over the flushes, the writes that share one",
                flushes.waiters,
            ),
        ] {
            single(encoder, name, help, ConstCounter::new(value))?;
        }
        let mut histogram = encoder.encode_descriptor(
            "segmentd_group_commit_seconds",
            "How long a group-commit flush took",
            None,
            MetricType::Histogram,
        )?;
        histogram.encode_histogram::<NoLabelSet>(
            seconds(flushes.micros),
            flushes.flushes.max(flushes.buckets.iter().sum()),
            &buckets(&FLUSH_BUCKETS_MICROS, &flushes.buckets),
            None,
        )
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut build = encoder.encode_descriptor(
            "segmentd_build_info",
            "The running build; always 1",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1)
            .encode(build.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        single(
            &mut encoder,
            "segmentd_authentication_enabled",
            "1 when callers must authenticate, 0 when anyone who reaches the port is served",
            ConstGauge::new(i64::from(self.authentication_enabled)),
        )?;
        single(
            &mut encoder,
            "segmentd_ready",
            "1 once the store is open and the index built (and, in cluster mode, while the replica is caught up with the log)",
            ConstGauge::new(i64::from(self.ready)),
        )?;
        self.encode_rpc(&mut encoder)?;
        if let Some(stats) = &self.engine {
            self.encode_engine(&mut encoder, stats)?;
        }
        if let Some(stats) = &self.replica {
            cluster::encode(&mut encoder, stats)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn before_the_store_opens_only_the_server_reports() {
        let metrics = Metrics::new(EngineSlot::default());
        let text = metrics.render().await;
        assert!(text.contains("\nsegmentd_ready 0\n"), "{text}");
        assert!(
            text.contains("\nsegmentd_authentication_enabled 0\n"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "\nsegmentd_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(!text.contains("segmentd_index_customers"), "{text}");
        assert!(!text.contains("grpc_server_started_total{"), "{text}");
    }

    #[tokio::test]
    async fn the_server_says_whether_callers_authenticate() {
        let metrics = Metrics::new(EngineSlot::default());
        metrics.set_authentication_enabled(true);
        let text = metrics.render().await;
        assert!(
            text.contains("\nsegmentd_authentication_enabled 1\n"),
            "{text}"
        );
    }
}
