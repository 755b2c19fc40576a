//! `segmentd watch`, the binary, against a real server: a line per change
//! with its cause, the initial members first on request, the command to
//! resume printed when it stops, resuming exactly there, and what to do
//! when a cursor cannot resume.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use segmentd::grpc::pb;
use tokio::sync::mpsc;

use crate::activity::{purchase, record};
use crate::customers::create;
use crate::support::TestServer;
use crate::watch::{create_segment, customer, watch_server};

/// A running `segmentd watch`, its stdout read line by line.
struct Watching {
    /// The process.
    child: Child,
    /// Its stdout lines, as they come.
    lines: mpsc::UnboundedReceiver<String>,
}

impl Watching {
    /// Starts `segmentd watch ARGS --addr ADDR` against `server`.
    fn start(server: &TestServer, args: &[&str]) -> Watching {
        let mut child = Command::new(env!("CARGO_BIN_EXE_segmentd"))
            .arg("watch")
            .args(args)
            .args(["--addr", &server.addr.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Watching { child, lines }
    }

    /// The next line printed, without its time; checks that the line
    /// starts with one.
    async fn line(&mut self) -> String {
        let line = tokio::time::timeout(Duration::from_secs(20), self.lines.recv())
            .await
            .expect("a line within 20 s")
            .expect("the watch prints on");
        let (time, rest) = line.split_once("  ").expect("a time, then the change");
        assert!(
            time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "{line:?} starts with an RFC 3339 time"
        );
        rest.to_owned()
    }

    /// The next line that is not progress.
    async fn change(&mut self) -> String {
        loop {
            let line = self.line().await;
            if line != "(no change)" {
                return line;
            }
        }
    }

    /// Sends SIGINT, as Ctrl-C does.
    fn interrupt(&self) {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits for the process to end; its status, and what it printed to
    /// stderr.
    async fn finish(mut self) -> (ExitStatus, String) {
        tokio::task::spawn_blocking(move || {
            let status = self.child.wait().unwrap();
            let mut stderr = String::new();
            self.child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            (status, stderr)
        })
        .await
        .unwrap()
    }
}

/// The cursor of the resume command in `stderr`.
fn resume_cursor(stderr: &str, command: &str) -> String {
    let line = stderr
        .lines()
        .find_map(|line| line.strip_prefix("to resume: "))
        .unwrap_or_else(|| panic!("no resume command in {stderr:?}"));
    let cursor = line
        .strip_prefix(command)
        .and_then(|rest| rest.strip_prefix(" --cursor "))
        .unwrap_or_else(|| panic!("{line:?} does not resume {command:?}"));
    cursor.to_owned()
}

/// `segmentd watch ARGS --addr ADDR` run to its end: its status and
/// stderr.
async fn run_to_end(server: &TestServer, args: &[&str]) -> (ExitStatus, String) {
    let watching = Watching::start(server, args);
    tokio::time::timeout(Duration::from_secs(20), watching.finish())
        .await
        .expect("the command ends within 20 s")
}

async fn erase(server: &TestServer, id: &str) {
    server
        .customers()
        .await
        .delete_customer(pb::DeleteCustomerRequest {
            name: format!("customers/{id}"),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_watch_command_prints_each_change_and_resumes_from_the_cursor_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let server = watch_server(dir.path()).await;
    for id in ["ann", "bob", "cem"] {
        create(&server, id, customer()).await.unwrap();
    }
    record(&server, vec![purchase("p1", "ann", 0, 1000)], vec![])
        .await
        .unwrap();
    create_segment(&server, "buyers", "features.purchase_count >= 1").await;

    let mut watching = Watching::start(&server, &["buyers", "--initial", "--exit-after", "2"]);
    assert_eq!(watching.line().await, "= customers/ann");
    record(&server, vec![purchase("p2", "bob", 1, 500)], vec![])
        .await
        .unwrap();
    assert_eq!(watching.line().await, "+ customers/bob  (activity)");
    erase(&server, "bob").await;
    assert_eq!(watching.line().await, "- customers/bob  (erasure)");
    let (status, stderr) = watching.finish().await;
    assert!(status.success(), "{stderr}");
    let cursor = resume_cursor(&stderr, "segmentd watch segments/buyers");

    // A change while nobody watches is the first the resumed watch prints.
    record(&server, vec![purchase("p3", "cem", 2, 700)], vec![])
        .await
        .unwrap();
    let mut watching = Watching::start(
        &server,
        &["segments/buyers", "--cursor", &cursor, "--exit-after", "1"],
    );
    assert_eq!(watching.line().await, "+ customers/cem  (activity)");
    let (status, stderr) = watching.finish().await;
    assert!(status.success(), "{stderr}");
    assert_ne!(
        resume_cursor(&stderr, "segmentd watch segments/buyers"),
        cursor
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_watch_command_follows_persona_moves_until_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let server = watch_server(dir.path()).await;
    create(&server, "ann", customer()).await.unwrap();

    let mut watching = Watching::start(&server, &["personas", "--progress"]);
    // The first message says where the watch starts.
    assert_eq!(watching.line().await, "(no change)");
    record(&server, vec![purchase("p1", "ann", 0, 1000)], vec![])
        .await
        .unwrap();
    // Ann's creation may be evaluated after the watch began: her move
    // into a first persona may come before the purchase's.
    let mut change = watching.change().await;
    if change.ends_with("  (profile)") {
        change = watching.change().await;
    }
    assert!(
        change.starts_with("customers/ann  ")
            && change.contains(" → ")
            && change.ends_with("  (activity)"),
        "{change:?}"
    );
    watching.interrupt();
    let (status, stderr) = watching.finish().await;
    assert!(status.success(), "{stderr}");
    resume_cursor(&stderr, "segmentd watch personas");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_watch_command_says_what_to_do_when_it_cannot_watch() {
    let dir = tempfile::tempdir().unwrap();
    let server = watch_server(dir.path()).await;
    create_segment(&server, "all", "true").await;

    // A cursor of another history: start again with the members.
    let (status, stderr) = run_to_end(&server, &["all", "--cursor", "c1.1.5"]).await;
    assert!(!status.success());
    assert!(stderr.contains("FAILED_PRECONDITION"), "{stderr}");
    assert!(stderr.contains("(CURSOR_UNKNOWN)"), "{stderr}");
    assert!(
        stderr.contains(
            "start again with the current members: segmentd watch segments/all --initial"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("to resume"), "{stderr}");

    // Not a cursor at all.
    let (status, stderr) = run_to_end(&server, &["all", "--cursor", "nope"]).await;
    assert!(!status.success());
    assert!(stderr.contains("INVALID_ARGUMENT"), "{stderr}");

    // A segment that does not exist.
    let (status, stderr) = run_to_end(&server, &["segments/nope"]).await;
    assert!(!status.success());
    assert!(stderr.contains("NOT_FOUND: segments/nope"), "{stderr}");

    // Flags that do not fit what is watched.
    for args in [
        &["personas", "--channel", "email"][..],
        &["all", "VIP_FREQUENT"],
        &["all", "--initial", "--cursor", "c1.1.5"],
    ] {
        let (status, stderr) = run_to_end(&server, args).await;
        assert!(!status.success(), "{args:?}: {stderr}");
    }

    // Asked to stop at once, it stops after the initial members and
    // prints where to resume.
    let (status, stderr) = run_to_end(&server, &["all", "--initial", "--exit-after", "0"]).await;
    assert!(status.success(), "{stderr}");
    resume_cursor(&stderr, "segmentd watch segments/all");
    server.stop().await.unwrap();
}
