//! A three-node NATS JetStream cluster on loopback, as child processes: the
//! same configuration as `.ci/nats/cluster.sh`, on free ports. A node can be
//! killed and restarted on the same ports and store.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};

use crate::http;

/// How to install the server the tests need.
const INSTALL: &str = "pip install --require-hashes -r .ci/nats/requirements.txt";

/// One test at a time runs a cluster: each is three NATS nodes and several
/// replicas, enough to fill a small machine.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Free ports on 127.0.0.1, distinct from each other: each is bound until
/// all are found.
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap().port())
        .collect()
}

/// The nats-server binary: `$SEGMENTD_NATS_SERVER`, else `nats-server` on
/// `PATH`. When there is none: a panic under `SEGMENTD_REQUIRE_NATS=1` (as
/// in CI), else `None`, and the test says it is skipped.
fn binary() -> Option<PathBuf> {
    let found = match std::env::var_os("SEGMENTD_NATS_SERVER") {
        Some(path) => Some(PathBuf::from(path)).filter(|path| path.is_file()),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("nats-server"))
                .find(|path| path.is_file())
        }),
    };
    if found.is_none() {
        assert!(
            std::env::var("SEGMENTD_REQUIRE_NATS").as_deref() != Ok("1"),
            "nats-server not found, and SEGMENTD_REQUIRE_NATS=1: {INSTALL}, \
             or point SEGMENTD_NATS_SERVER at a nats-server binary"
        );
        println!("skipped: nats-server not found ({INSTALL})");
    }
    found
}

/// One node: its ports, its files and, while it runs, its process.
struct Node {
    /// The node's name in the cluster, `n0`, `n1` or `n2`.
    name: String,
    /// Where clients connect.
    client_port: u16,
    /// Where it serves `/healthz` and `/jsz`.
    monitoring_port: u16,
    /// Its configuration file.
    config: PathBuf,
    /// Its output.
    log: PathBuf,
    /// The process, while it runs.
    process: Option<Child>,
}

/// Three NATS nodes forming one JetStream cluster; killed on drop.
pub struct NatsCluster {
    /// The server binary.
    binary: PathBuf,
    /// The nodes, `n0` to `n2`.
    nodes: Vec<Node>,
    /// Holds every node's files.
    dir: tempfile::TempDir,
    /// Keeps other tests' clusters from starting meanwhile.
    _turn: MutexGuard<'static, ()>,
}

impl NatsCluster {
    /// Three nodes, once each answers its JetStream health check and they
    /// have a JetStream leader. `None` when nats-server is not installed
    /// (see [`binary`]): the test returns.
    pub async fn start() -> Option<NatsCluster> {
        let binary = binary()?;
        let turn = ONE_CLUSTER_AT_A_TIME.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(9);
        let routes: Vec<String> = ports[3..6]
            .iter()
            .map(|port| format!("nats-route://127.0.0.1:{port}"))
            .collect();
        let nodes = (0..3)
            .map(|i| {
                let name = format!("n{i}");
                let config = dir.path().join(format!("{name}.conf"));
                let text = config_text(
                    &name,
                    ports[i],
                    ports[3 + i],
                    ports[6 + i],
                    &dir.path().join(&name),
                    &routes,
                );
                std::fs::write(&config, text).unwrap();
                Node {
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: ports[i],
                    monitoring_port: ports[6 + i],
                    config,
                    process: None,
                }
            })
            .collect();
        let mut cluster = NatsCluster {
            binary,
            nodes,
            dir,
            _turn: turn,
        };
        for node in 0..3 {
            cluster.spawn(node);
        }
        for node in 0..3 {
            cluster.wait_healthy(node).await;
        }
        cluster.wait_for_leader().await;
        Some(cluster)
    }

    /// The client URLs of all nodes, comma-separated, as `--cluster` takes
    /// them.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.client_port))
            .collect();
        urls.join(",")
    }

    /// SIGKILLs node `node`.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut process) = self.nodes[node].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts node `node` again, on its ports and store, and waits until
    /// it is healthy.
    pub async fn restart(&mut self, node: usize) {
        self.kill(node);
        self.spawn(node);
        self.wait_healthy(node).await;
    }

    /// The node that leads the replicas of the stream `stream`, as a node
    /// number, when one of the running nodes knows it.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        for node in self.running() {
            let Some((200, body)) = http::get(self.monitoring(node), "/jsz?streams=true").await
            else {
                continue;
            };
            let Ok(jsz) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            let streams = jsz["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten());
            for detail in streams {
                if detail["name"] != stream {
                    continue;
                }
                let leader = detail["cluster"]["leader"].as_str().unwrap_or_default();
                if let Some(found) = self.nodes.iter().position(|n| n.name == leader) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The nodes that run now.
    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&node| self.nodes[node].process.is_some())
            .collect()
    }

    /// The monitoring address of node `node`.
    fn monitoring(&self, node: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.nodes[node].monitoring_port))
    }

    /// Starts node `node`'s process, its output appended to its log.
    fn spawn(&mut self, node: usize) {
        let node = &mut self.nodes[node];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let process = Command::new(&self.binary)
            .arg("--config")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.binary.display()));
        node.process = Some(process);
    }

    /// Waits (at most 30 s) until node `node` answers its JetStream health
    /// check.
    async fn wait_healthy(&mut self, node: usize) {
        let addr = self.monitoring(node);
        for _ in 0..300 {
            let answer = http::get(addr, "/healthz?js-enabled-only=true").await;
            if answer.is_some_and(|(status, body)| status == 200 && body.contains("ok")) {
                return;
            }
            if let Some(exit) = self.nodes[node]
                .process
                .as_mut()
                .unwrap()
                .try_wait()
                .unwrap()
            {
                panic!(
                    "nats node {} exited ({exit}):\n{}",
                    self.nodes[node].name,
                    tail(&self.nodes[node].log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("nats node {} not healthy after 30 s", self.nodes[node].name);
    }

    /// Waits (at most 30 s) until the nodes have elected a JetStream meta
    /// leader, without which no stream can be made.
    async fn wait_for_leader(&self) {
        for _ in 0..300 {
            if let Some((200, body)) = http::get(self.monitoring(0), "/jsz").await {
                let jsz: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if jsz["meta_cluster"]["leader"].is_string() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the nats nodes elected no JetStream leader in 30 s");
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.kill(node);
        }
        if std::thread::panicking() {
            // Kept for a look at what the nodes did.
            self.dir.disable_cleanup(true);
            for node in &self.nodes {
                eprintln!(
                    "--- nats node {}, the end of its output (kept in {}):\n{}",
                    node.name,
                    self.dir.path().display(),
                    tail(&node.log, 10)
                );
            }
        }
    }
}

/// A node's configuration, as `.ci/nats/cluster.sh` writes it.
fn config_text(
    name: &str,
    client_port: u16,
    route_port: u16,
    monitoring_port: u16,
    store: &Path,
    routes: &[String],
) -> String {
    format!(
        "server_name: {name}\n\
         listen: 127.0.0.1:{client_port}\n\
         http: 127.0.0.1:{monitoring_port}\n\
         jetstream {{\n  store_dir: \"{store}\"\n  \
         # Jepsen's 2025 analysis of NATS 2.12 lost acknowledged writes under\n  \
         # the default, lazy fsync.\n  \
         sync_interval: always\n}}\n\
         cluster {{\n  name: segmentd\n  listen: 127.0.0.1:{route_port}\n  routes: [{routes}]\n}}\n",
        store = store.display(),
        routes = routes.join(", "),
    )
}

/// The last `lines` lines of the file at `path`.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
