//! segmentd replicas in cluster mode, as child processes of the binary
//! under test: started, waited for, killed and restarted on the same ports
//! and data directory, scraped for metrics. Each one's output goes to a
//! file, printed when the test fails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::http;
use crate::nats::{free_ports, tail};

/// How often a replica publishes a snapshot, unless a test says otherwise:
/// often enough that a test sees one.
pub const SNAPSHOT_INTERVAL: &str = "1s";

/// A segmentd replica of the cluster at `urls`; killed on drop.
pub struct Replica {
    /// Where it serves gRPC.
    pub addr: SocketAddr,
    /// Where it serves `/metrics`.
    pub metrics_addr: SocketAddr,
    /// Its data directory, inside `temp`.
    data_dir: PathBuf,
    /// Its output, every run's, inside `temp`.
    output: PathBuf,
    /// The NATS URLs, comma-separated.
    urls: String,
    /// Flags added to every start.
    extra: Vec<String>,
    /// The process, while it runs.
    process: Option<Child>,
    /// Holds the data directory and the output.
    temp: tempfile::TempDir,
    /// Whether it has not yet served on its ports, so that nothing holds
    /// them yet and it may move to others.
    fresh: bool,
}

impl Replica {
    /// A replica of the cluster at `urls` on an empty data directory,
    /// started with `extra` flags as well; not yet necessarily SERVING.
    pub fn spawn(urls: &str, extra: &[&str]) -> Replica {
        let ports = free_ports(2);
        let temp = tempfile::tempdir().unwrap();
        let mut replica = Replica {
            addr: SocketAddr::from(([127, 0, 0, 1], ports[0])),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], ports[1])),
            data_dir: temp.path().join("db"),
            output: temp.path().join("output.log"),
            urls: urls.to_owned(),
            extra: extra.iter().map(|flag| (*flag).to_owned()).collect(),
            process: None,
            temp,
            fresh: true,
        };
        replica.launch();
        replica
    }

    /// `count` replicas of the cluster at `urls`, once all are SERVING.
    pub async fn start_all(urls: &str, count: usize) -> Vec<Replica> {
        let mut replicas: Vec<Replica> = (0..count).map(|_| Replica::spawn(urls, &[])).collect();
        for replica in &mut replicas {
            replica.wait_serving().await;
        }
        replicas
    }

    /// SIGKILLs the replica.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts the replica again, on its ports and data directory; not yet
    /// necessarily SERVING.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Kills the replica, deletes its data directory and starts it again
    /// on an empty one; not yet necessarily SERVING.
    pub fn restart_empty(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.data_dir).unwrap();
        self.launch();
    }

    /// A connection made on first use and remade after a failure, whose
    /// calls give up after `timeout`.
    pub fn channel(&self, timeout: Duration) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .timeout(timeout)
            .connect_lazy()
    }

    /// The replica's health for `""`; `None` when it does not answer.
    pub async fn health(&self) -> Option<ServingStatus> {
        let mut client = HealthClient::new(self.channel(Duration::from_secs(2)));
        let request = HealthCheckRequest {
            service: String::new(),
        };
        let response = client.check(request).await.ok()?;
        Some(response.into_inner().status())
    }

    /// Waits (at most 60 s, as the tests share two cores with three NATS
    /// servers and three replicas each) until the replica reports SERVING;
    /// fails the test if it exits first.
    pub async fn wait_serving(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            if self.health().await == Some(ServingStatus::Serving) {
                self.fresh = false;
                return;
            }
            if self.fresh && self.lost_its_port() {
                // Another process took a port between `free_ports` and
                // the bind: the first start moves to two others.
                let ports = free_ports(2);
                self.addr.set_port(ports[0]);
                self.metrics_addr.set_port(ports[1]);
                self.launch();
            }
            self.assert_running();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("replica {} never reported SERVING in 60 s", self.addr);
    }

    /// The value of the sample `series` on the replica's `/metrics`; `None`
    /// when it does not answer or has no such sample.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (status, body) = http::get(self.metrics_addr, "/metrics").await?;
        (status == 200)
            .then(|| http::sample(&body, series))
            .flatten()
    }

    /// Whether the process has exited because a port was taken.
    fn lost_its_port(&mut self) -> bool {
        let exited = self
            .process
            .as_mut()
            .is_some_and(|process| process.try_wait().unwrap().is_some());
        exited && tail(&self.output, 3).contains("Address already in use")
    }

    /// Fails the test if the replica's process has exited.
    pub fn assert_running(&mut self) {
        let Some(process) = &mut self.process else {
            panic!("replica {} is not running", self.addr);
        };
        if let Some(exit) = process.try_wait().unwrap() {
            panic!(
                "replica {} exited ({exit}); its output:\n{}",
                self.addr,
                tail(&self.output, 60)
            );
        }
    }

    /// Starts the process, its output appended to the output file.
    fn launch(&mut self) {
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.output)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_segmentd"));
        command
            .arg("serve")
            .args(["--listen", &self.addr.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--cluster", &self.urls])
            .args(["--metrics-listen", &self.metrics_addr.to_string()])
            .args(&self.extra);
        if !self
            .extra
            .iter()
            .any(|flag| flag == "--cluster-snapshot-interval")
        {
            command.args(["--cluster-snapshot-interval", SNAPSHOT_INTERVAL]);
        }
        command
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output);
        // Only the flags above configure it, whatever this shell exports.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SEGMENTD_") {
                command.env_remove(name);
            }
        }
        self.process = Some(command.spawn().unwrap());
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // Kept for a look at what the replica did.
            self.temp.disable_cleanup(true);
            eprintln!(
                "--- replica {}, the end of its output (kept in {}):\n{}",
                self.addr,
                self.temp.path().display(),
                tail(&self.output, 60)
            );
        }
    }
}
