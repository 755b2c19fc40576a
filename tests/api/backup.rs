//! Online backup and offline restore: a backup taken while writers run is
//! restored into a fresh directory and served again, holding everything
//! acknowledged before it began and a state the store really had; a
//! damaged file or a used directory is refused; a client that stops
//! reading holds up no writer.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use segmentd::grpc::pb;
use segmentd::grpc::pb::admin_service_client::AdminServiceClient;
use segmentd::grpc::pb::persona_service_client::PersonaServiceClient;
use segmentd::store::backup::restore;
use tokio::sync::watch;
use tonic::{Code, Streaming};

use crate::activity::{activity, purchase};
use crate::customers::create;
use crate::support::{config, TestServer};

/// Customers loaded before the writers start.
const SEEDED: usize = 2000;
/// Writers running while the backup is taken.
const WRITERS: usize = 3;

fn seeded_id(n: usize) -> String {
    format!("s-{n:05}")
}

/// A customer whose persona depends on `n`: incomes, internal staff and
/// objectors vary, so that the breakdown has several groups.
fn customer(n: usize, note: &str) -> pb::Customer {
    let internal = n.is_multiple_of(11);
    pb::Customer {
        relationship: if internal {
            pb::Relationship::Internal as i32
        } else {
            pb::Relationship::External as i32
        },
        department: if internal {
            "Sales".into()
        } else {
            String::new()
        },
        annual_income: Some(pb::Money {
            currency_code: "USD".into(),
            minor_units: (n as i64 % 20) * 1_000_000,
        }),
        location: Some(pb::Location {
            country_code: "DE".into(),
            city: format!("City {}", n % 7),
            ..Default::default()
        }),
        objects_to_profiling: n.is_multiple_of(13),
        traits: if note.is_empty() {
            BTreeMap::new()
        } else {
            BTreeMap::from([(
                "note".into(),
                pb::TraitValue {
                    kind: Some(pb::trait_value::Kind::StringValue(note.into())),
                },
            )])
        },
        ..Default::default()
    }
}

/// Imports `count` customers `s-00000`… with a `note` trait of `note_bytes`,
/// and two purchases each.
async fn seed(server: &TestServer, count: usize, note_bytes: usize) {
    let note = "n".repeat(note_bytes);
    let batch = (200 * 1024 / (note_bytes + 200)).clamp(1, 500);
    let messages: Vec<pb::ImportCustomersRequest> = (0..count)
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(|chunk| pb::ImportCustomersRequest {
            customers: chunk
                .iter()
                .map(|&n| pb::Customer {
                    name: format!("customers/{}", seeded_id(n)),
                    ..customer(n, &note)
                })
                .collect(),
        })
        .collect();
    server
        .customers()
        .await
        .import_customers(tokio_stream::iter(messages))
        .await
        .unwrap();
    let purchases: Vec<pb::Purchase> = (0..count)
        .flat_map(|n| {
            (0..2).map(move |k| {
                purchase(
                    &format!("seed-{n}-{k}"),
                    &seeded_id(n),
                    (n % 300) as i64 + k,
                    1000 + n as i64,
                )
            })
        })
        .collect();
    let mut client = activity(server).await;
    for chunk in purchases.chunks(1000) {
        client
            .record_activity(pb::RecordActivityRequest {
                purchases: chunk.to_vec(),
                engagements: Vec::new(),
            })
            .await
            .unwrap();
    }
}

/// What the writers were told was done, in the order they were told.
#[derive(Debug, Default, Clone)]
struct Acknowledged {
    /// Customers created, as the server returned them.
    customers: BTreeMap<String, pb::Customer>,
    /// Purchases recorded per customer id.
    purchases: BTreeMap<String, i64>,
    /// Writes acknowledged in all.
    writes: usize,
}

/// Writer `k`: creates `w{k}-00000`, `w{k}-00001`… in turn, each followed
/// by a purchase of its own and one of a seeded customer, until `stop`.
async fn writer(
    server: Arc<TestServer>,
    k: usize,
    acknowledged: Arc<Mutex<Acknowledged>>,
    stop: watch::Receiver<bool>,
) {
    let mut client = activity(&server).await;
    for i in 0.. {
        if *stop.borrow() {
            return;
        }
        let id = format!("w{k}-{i:05}");
        let created = create(&server, &id, customer(i + k, "")).await.unwrap();
        {
            let mut acknowledged = acknowledged.lock().unwrap();
            acknowledged.customers.insert(id.clone(), created);
            acknowledged.writes += 1;
        }
        let seeded = seeded_id((k * 7919 + i * 31) % SEEDED);
        let request = pb::RecordActivityRequest {
            purchases: vec![
                purchase(&format!("p-{id}"), &id, 400, 2500),
                purchase(&format!("p-{id}-s"), &seeded, 401, 900),
            ],
            engagements: Vec::new(),
        };
        client.record_activity(request).await.unwrap();
        let mut acknowledged = acknowledged.lock().unwrap();
        *acknowledged.purchases.entry(id).or_default() += 1;
        *acknowledged.purchases.entry(seeded).or_default() += 1;
        acknowledged.writes += 1;
    }
}

/// Starts a backup on a new connection.
async fn start_backup(
    server: &TestServer,
) -> Result<Streaming<pb::BackupStoreChunk>, tonic::Status> {
    AdminServiceClient::new(server.channel().await)
        .backup_store(pb::BackupStoreRequest {})
        .await
        .map(|response| response.into_inner())
}

/// An AdminService client whose connection buffers little, so that a
/// slow reader holds the server's scan back.
async fn narrow_admin(server: &TestServer) -> AdminServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(64 * 1024)
        .connect()
        .await
        .unwrap();
    AdminServiceClient::new(channel)
}

/// Reads a backup stream to its end into `path`, waiting `pause` between
/// chunks, as a slow client would.
async fn receive(mut chunks: Streaming<pb::BackupStoreChunk>, path: &Path, pause: Duration) {
    let mut file = Vec::new();
    while let Some(chunk) = chunks.message().await.unwrap() {
        file.extend_from_slice(&chunk.data);
        tokio::time::sleep(pause).await;
    }
    std::fs::write(path, file).unwrap();
}

/// Every customer the server holds.
async fn all_customers(server: &TestServer) -> BTreeMap<String, pb::Customer> {
    server
        .all_customers()
        .await
        .into_iter()
        .map(|customer| {
            let id = customer.name.trim_start_matches("customers/").to_owned();
            (id, customer)
        })
        .collect()
}

/// Each customer's purchase count, now.
pub async fn purchase_counts(
    server: &TestServer,
    ids: impl Iterator<Item = &String>,
) -> BTreeMap<String, i64> {
    let mut client = server.customers().await;
    let mut counts = BTreeMap::new();
    for id in ids {
        let features = client
            .get_customer_features(pb::GetCustomerFeaturesRequest {
                name: format!("customers/{id}"),
                evaluation_time: None,
            })
            .await
            .unwrap()
            .into_inner();
        counts.insert(id.clone(), features.purchase_count);
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_writes_restores_everything_acknowledged_before_it() {
    let live = Arc::new(TestServer::start().await);
    // Notes make the file far larger than what the channel and the
    // connection buffer, so the scan runs at the reader's pace.
    seed(&live, SEEDED, 1000).await;

    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let (stop, stopped) = watch::channel(false);
    let writers: Vec<_> = (0..WRITERS)
        .map(|k| {
            tokio::spawn(writer(
                Arc::clone(&live),
                k,
                Arc::clone(&acknowledged),
                stopped.clone(),
            ))
        })
        .collect();
    while acknowledged.lock().unwrap().writes < 60 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Everything acknowledged so far must be in the backup.
    let before = acknowledged.lock().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.backup");
    let started = Instant::now();
    let chunks = narrow_admin(&live)
        .await
        .backup_store(pb::BackupStoreRequest {})
        .await
        .unwrap()
        .into_inner();
    // A slow reader, so that the writers go on while the scan runs.
    receive(chunks, &file, Duration::from_millis(20)).await;
    let elapsed = started.elapsed();
    let during = acknowledged.lock().unwrap().writes - before.writes;
    stop.send(true).unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let after = acknowledged.lock().unwrap().clone();
    assert!(during > 0, "no write was acknowledged while the backup ran");
    println!(
        "backup of {} customers: {} bytes in {} ms, {during} writes acknowledged meanwhile",
        SEEDED + before.customers.len(),
        std::fs::metadata(&file).unwrap().len(),
        elapsed.as_millis()
    );

    let restored_dir = dir.path().join("restored");
    let summary = restore(&file, &restored_dir, true).unwrap();
    assert!(summary
        .trees
        .iter()
        .any(|(tree, keys)| tree == "customers" && *keys >= SEEDED));
    let restored = TestServer::spawn(config(&restored_dir)).await;
    restored.wait_serving().await;

    // Every customer acknowledged before the backup, as acknowledged.
    let customers = all_customers(&restored).await;
    for (id, created) in &before.customers {
        assert_eq!(customers.get(id), Some(created), "customer {id}");
    }
    assert_eq!(
        customers.keys().filter(|id| id.starts_with("s-")).count(),
        SEEDED
    );
    // Every purchase acknowledged before, and none never acknowledged.
    let counts = purchase_counts(&restored, customers.keys()).await;
    for (id, count) in &counts {
        let seeded = i64::from(id.starts_with("s-")) * 2;
        let least = seeded + before.purchases.get(id).copied().unwrap_or(0);
        let most = seeded + after.purchases.get(id).copied().unwrap_or(0);
        assert!(
            (least..=most).contains(count),
            "customer {id}: {count} purchases, acknowledged {least} before and {most} in all"
        );
    }
    // A state the store had: each writer's customers are a prefix of its
    // sequence, and all but its last have their purchase, which it
    // recorded before creating the next.
    for k in 0..WRITERS {
        let prefix = format!("w{k}-");
        let mine: Vec<&String> = customers
            .keys()
            .filter(|id| id.starts_with(&prefix))
            .collect();
        for (i, id) in mine.iter().enumerate() {
            assert_eq!(**id, format!("w{k}-{i:05}"));
            if i + 1 < mine.len() {
                assert_eq!(
                    counts[*id], 1,
                    "customer {id} lacks the purchase recorded before the next was created"
                );
            }
        }
    }

    // The persona breakdown agrees with the assignments and the customers.
    let mut personas = PersonaServiceClient::new(restored.channel().await);
    let at = Some(prost_types::Timestamp {
        seconds: crate::activity::BASE + 500 * crate::activity::DAY,
        nanos: 0,
    });
    let breakdown = personas
        .breakdown_personas(pb::BreakdownPersonasRequest {
            filter: String::new(),
            evaluation_time: at,
        })
        .await
        .unwrap()
        .into_inner();
    let mut exported = personas
        .export_persona_assignments(pb::ExportPersonaAssignmentsRequest {
            evaluation_time: at,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut tally: BTreeMap<String, i64> = BTreeMap::new();
    while let Some(batch) = exported.message().await.unwrap() {
        for assignment in batch.assignments {
            *tally.entry(assignment.persona_id).or_default() += 1;
        }
    }
    let grouped: BTreeMap<String, i64> = breakdown
        .groups
        .iter()
        .filter(|group| group.customer_count > 0)
        .map(|group| (group.persona_id.clone(), group.customer_count))
        .collect();
    assert!(grouped.len() > 2, "{grouped:?}");
    assert_eq!(grouped, tally);
    let objectors = customers
        .values()
        .filter(|c| c.objects_to_profiling)
        .count() as i64;
    assert_eq!(breakdown.excluded_count, objectors);
    assert_eq!(
        breakdown.total_count + breakdown.excluded_count,
        customers.len() as i64
    );
    restored.stop().await.unwrap();
    Arc::into_inner(live).unwrap().stop().await.unwrap();
}

#[tokio::test]
async fn a_damaged_file_or_a_used_directory_is_refused_and_nothing_is_written() {
    let live = TestServer::start().await;
    seed(&live, 50, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.backup");
    let report =
        segmentd::client::backup::run(&live.addr.to_string(), &file, Duration::from_secs(5))
            .await
            .unwrap();
    assert_eq!(
        report.summary.bytes,
        std::fs::metadata(&file).unwrap().len()
    );
    let bytes = std::fs::read(&file).unwrap();

    let target = dir.path().join("empty");
    std::fs::create_dir(&target).unwrap();
    let damaged = dir.path().join("damaged.backup");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    for (damage, content) in [
        ("truncated", &bytes[..bytes.len() - 1]),
        ("cut in half", &bytes[..bytes.len() / 2]),
        ("flipped", &flipped[..]),
    ] {
        std::fs::write(&damaged, content).unwrap();
        let error = restore(&damaged, &target, false).unwrap_err().to_string();
        assert!(
            error.contains("not a complete segmentd backup"),
            "{damage}: {error}"
        );
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "{damage}");
    }
    // A missing directory stays missing.
    let missing = dir.path().join("missing");
    std::fs::write(&damaged, &flipped).unwrap();
    restore(&damaged, &missing, false).unwrap_err();
    assert!(!missing.exists());

    // A directory with anything in it is refused, and kept as it was.
    let used = dir.path().join("used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join("keep"), b"x").unwrap();
    let error = restore(&file, &used, false).unwrap_err().to_string();
    assert!(error.contains("is not empty"), "{error}");
    assert_eq!(std::fs::read_dir(&used).unwrap().count(), 1);
    // The live server's own directory too.
    restore(&file, &live.data_dir, false).unwrap_err();

    // The intact file restores.
    let summary = restore(&file, &target, false).unwrap();
    assert_eq!(summary.file, report.summary);
    live.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_up_no_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = config(dir.path());
    settings.backup.max_pending_bytes = 256 * 1024;
    let live = TestServer::spawn(settings).await;
    live.wait_serving().await;
    // Far more than the channel and the connection's windows hold.
    seed(&live, 3000, 1000).await;

    let mut stalled = start_backup(&live).await.unwrap();
    stalled.message().await.unwrap().unwrap();
    // A second backup meanwhile is refused.
    let status = start_backup(&live).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    // Writes go on while the backup waits for its reader, until the tap
    // is over its bound.
    let started = Instant::now();
    for i in 0..400 {
        let id = format!("late-{i:04}");
        tokio::time::timeout(
            Duration::from_secs(5),
            create(&live, &id, customer(i, &"x".repeat(900))),
        )
        .await
        .expect("a write waited for the stalled backup")
        .unwrap();
    }
    println!(
        "400 writes beside a stalled backup in {} ms",
        started.elapsed().as_millis()
    );

    // The reader comes back to find the backup failed.
    let status = loop {
        match stalled.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the backup finished although its tap overflowed"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    drop(stalled);

    // A backup whose client goes away frees the tap for the next one.
    let mut gone = start_backup(&live).await.unwrap();
    gone.message().await.unwrap().unwrap();
    drop(gone);
    let file = dir.path().join("after.backup");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match segmentd::client::backup::run(&live.addr.to_string(), &file, Duration::from_secs(5))
            .await
        {
            Ok(report) => {
                assert!(report.summary.puts > 3400);
                break;
            }
            Err(error)
                if Instant::now() < deadline && error.to_string().contains("already running") =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("{error:#}"),
        }
    }
    live.stop().await.unwrap();
}
