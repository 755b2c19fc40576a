//! The index's image: a clean shutdown writes it, the next start reads it
//! in place of a rebuild from the store and answers exactly as before; a
//! start after a crash, or with the image turned off, rebuilds; an image
//! put back by hand after later writes is never read.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use segmentd::grpc::pb;
use segmentd::grpc::pb::activity_service_client::ActivityServiceClient;
use segmentd::grpc::pb::customer_service_client::CustomerServiceClient;

use crate::activity::{features, purchase, purchase_ids, record, BASE, DAY};
use crate::metrics::Scrape;
use crate::segments::{breakdown, counts, population, segmentation};
use crate::support::{config, Process, TestServer};

const IMAGE: &str = "index.image";

const DIMENSIONS: &[&str] = &[
    "customer.relationship",
    "customer.party",
    "customer.gender",
    "customer.age_band",
    "customer.income_band",
    "customer.country",
    "customer.region",
    "customer.consent.email",
    "customer.traits.tier",
    "features.frequency",
    "features.stage",
    "features.rfm_segment",
];

/// What the server answers about everyone: every breakdown, and each
/// customer's features and purchases.
async fn answers(server: &TestServer) -> Vec<String> {
    let mut client = segmentation(server).await;
    let mut answers = Vec::new();
    for dimension in DIMENSIONS {
        let groups: BTreeMap<String, i64> = counts(&breakdown(&mut client, &[dimension], "").await);
        answers.push(format!("{dimension} {groups:?}"));
    }
    for customer in server.all_customers().await {
        let id = customer.name.trim_start_matches("customers/").to_owned();
        let features = features(server, &id, Some(BASE + 400 * DAY)).await;
        let purchases = purchase_ids(server, &id, 100).await;
        answers.push(format!("{id} {features:?} {purchases:?}"));
    }
    answers
}

/// Starts a server on `dir` with a metrics listener; whether it read the
/// index from the image, and the server.
async fn restart(dir: &Path, image: bool) -> (TestServer, bool) {
    let mut config = config(dir);
    config.engine.index_image = image;
    let (server, metrics) = TestServer::spawn_with_metrics(config).await;
    let from_image = Scrape::of(metrics).await.get("segmentd_index_from_image");
    (server, from_image == 1.0)
}

/// A server's data directory after it held the test population and
/// stopped cleanly (kept while the first value lives), and its answers.
async fn stopped_with_population() -> (Option<tempfile::TempDir>, PathBuf, Vec<String>) {
    let (server, _metrics) = TestServer::start_with_metrics(|_| {}).await;
    population(&server).await;
    let before = answers(&server).await;
    let dir = server.data_dir.clone();
    (server.stop_keeping_data().await, dir, before)
}

/// Waits, at most 20 s, until none of `paths` exists.
async fn until_gone(paths: &[PathBuf], what: &str) {
    let gone = async {
        while paths.iter().any(|path| path.exists()) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), gone)
        .await
        .expect(what);
}

#[tokio::test]
async fn a_clean_restart_reads_the_image_and_answers_as_before() {
    let (_keep, dir, before) = stopped_with_population().await;
    assert!(
        dir.join(IMAGE).exists(),
        "a clean shutdown writes the image"
    );

    // What a crash while an image read was being removed would leave.
    std::fs::write(dir.join(format!("{IMAGE}.read")), b"an old image").unwrap();
    let (server, from_image) = restart(&dir, true).await;
    assert!(from_image, "the start read the image");
    assert!(!dir.join(IMAGE).exists(), "the image read is moved aside");
    // It is removed in the background, and so is what a crash left.
    until_gone(
        &[dir.join(format!("{IMAGE}.read"))],
        "the image read is removed",
    )
    .await;
    assert_eq!(answers(&server).await, before);

    // A write after the restart is in the next image.
    record(
        &server,
        vec![purchase("late", "a-ayse", 399, 4_200)],
        vec![],
    )
    .await
    .unwrap();
    let after = answers(&server).await;
    assert_ne!(after, before);
    server.stop().await.unwrap();
    let (server, from_image) = restart(&dir, true).await;
    assert!(from_image);
    assert_eq!(answers(&server).await, after);
    server.stop().await.unwrap();

    // Turned off, the start rebuilds from the store, and the stop writes
    // no image.
    let (server, from_image) = restart(&dir, false).await;
    assert!(!from_image, "the image is not read when turned off");
    assert_eq!(answers(&server).await, after);
    server.stop().await.unwrap();
    assert!(!dir.join(IMAGE).exists());
    let (server, from_image) = restart(&dir, true).await;
    assert!(!from_image, "no image, so a rebuild");
    assert_eq!(answers(&server).await, after);
    server.stop().await.unwrap();
}

/// The real binary: SIGTERM writes the image; a start reads it; a write,
/// then SIGKILL; the image of the first shutdown put back by hand is not
/// read, and the next start holds the write. The store is made compressed
/// and the later starts do not ask for it: it stays as it was made.
#[tokio::test]
async fn an_image_older_than_the_store_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let image = dir.path().join(IMAGE);
    let mut process = Process::start(
        dir.path(),
        addr,
        &["--shutdown-grace", "1s", "--compress-store", "true"],
    );
    process.wait_ready().await;
    let channel = process.channel();
    let mut customers = CustomerServiceClient::new(channel.clone());
    let mut activity = ActivityServiceClient::new(channel);
    customers
        .create_customer(pb::CreateCustomerRequest {
            customer_id: "ann".into(),
            customer: Some(pb::Customer::default()),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let buy = |id: &str, day: i64| pb::RecordActivityRequest {
        purchases: vec![purchase(id, "ann", day, 1_000)],
        engagements: vec![],
    };
    activity.record_activity(buy("p1", 1)).await.unwrap();
    process.terminate();
    let stale = std::fs::read(&image).expect("SIGTERM writes the image");

    let mut process = Process::start(dir.path(), addr, &["--shutdown-grace", "1s"]);
    process.wait_ready().await;
    let mut activity = ActivityServiceClient::new(process.channel());
    activity.record_activity(buy("p2", 2)).await.unwrap();
    process.kill();
    assert!(!image.exists(), "the image read was removed");
    std::fs::write(&image, stale).unwrap();

    let mut process = Process::start(dir.path(), addr, &["--shutdown-grace", "1s"]);
    process.wait_ready().await;
    let f = CustomerServiceClient::new(process.channel())
        .get_customer_features(pb::GetCustomerFeaturesRequest {
            name: "customers/ann".into(),
            evaluation_time: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(f.purchase_count, 2, "the purchase after the image counts");
    process.terminate();
}

/// A start that cannot open the store (here, another holds it) leaves the
/// image where it was, for the start that can; a start that died while
/// reading the image (what it leaves is the image under its reading name)
/// does not read it again: the next start rebuilds, and removes it.
#[tokio::test]
async fn an_image_survives_a_failed_start_but_not_a_start_that_died_reading_it() {
    let (_keep, dir, before) = stopped_with_population().await;
    assert!(dir.join(IMAGE).exists());

    let config = config(&dir);
    // The stopped server's store lets go of its lock a moment after.
    let mut holder = None;
    for _ in 0..500 {
        if let Ok(store) = segmentd::store::Store::open(&config.store) {
            holder = Some(store);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let holder = holder.expect("the store opens once the server lets go");
    let refused = segmentd::engine::Engine::open(config.store.clone(), config.engine.clone()).await;
    assert!(refused.is_err(), "the store is held");
    assert!(dir.join(IMAGE).exists(), "the image is put back");
    drop(holder);
    let (server, from_image) = restart(&dir, true).await;
    assert!(from_image, "the image is read once the store opens");
    assert_eq!(answers(&server).await, before);
    server.stop().await.unwrap();

    let reading = dir.join(format!("{IMAGE}.reading"));
    std::fs::rename(dir.join(IMAGE), &reading).unwrap();
    let (server, from_image) = restart(&dir, true).await;
    assert!(
        !from_image,
        "an image a start died reading is not read again"
    );
    assert_eq!(answers(&server).await, before);
    until_gone(
        &[reading, dir.join(format!("{IMAGE}.read"))],
        "what the start left is removed",
    )
    .await;
    server.stop().await.unwrap();
}
