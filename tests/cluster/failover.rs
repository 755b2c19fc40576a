//! Writes go on while a NATS node, then a replica, is killed and restarted;
//! afterwards every replica holds every acknowledged write, no write twice,
//! and all answer alike.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::calls::{assert_all_equal, purchase, request_id, retryable, with_retries, Client};
use crate::nats::NatsCluster;
use crate::replica::Replica;

/// The stream the replicas use when not told otherwise.
const STREAM: &str = "SEGMENTD";
/// Attempts at each write before it counts as unacknowledged.
const ATTEMPTS: usize = 8;

/// What the writer did: which writes were acknowledged, which never were.
#[derive(Debug, Default)]
struct Ledger {
    /// Customers whose create was acknowledged.
    customers: BTreeSet<String>,
    /// Customers whose create never was: they may or may not exist.
    unacknowledged_customers: BTreeSet<String>,
    /// Per customer, the purchase ids whose recording was acknowledged.
    purchases: BTreeMap<String, BTreeSet<String>>,
    /// Per customer, the purchase ids whose recording never was.
    unacknowledged_purchases: BTreeMap<String, BTreeSet<String>>,
    /// The token of the last acknowledged write.
    last_token: Option<String>,
    /// Writes acknowledged only after a retry.
    retried: usize,
}

/// Writes until `stop`: customer `c<n>` with a request id through replica
/// `n mod 3`, then two purchases for an earlier acknowledged customer
/// through the next; a failed write is retried through the replicas after.
async fn write(clients: Vec<Client>, stop: Arc<AtomicBool>) -> Ledger {
    let mut ledger = Ledger::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        create(&clients, n, &mut ledger).await;
        buy(&clients, n, &mut ledger).await;
        n += 1;
    }
    ledger
}

/// Creates customer `c<n>` through replica `n mod 3` (or the ones after),
/// and notes in `ledger` whether it was acknowledged.
async fn create(clients: &[Client], n: u64, ledger: &mut Ledger) {
    let id = format!("c{n:05}");
    let request_id = request_id(n);
    let created = with_retries(ATTEMPTS, |attempt| {
        let mut client = clients[(n as usize + attempt) % clients.len()].clone();
        let (id, request_id) = (id.clone(), request_id.clone());
        async move {
            let token = client.create(&id, n, &request_id).await?;
            Ok((token, attempt))
        }
    })
    .await;
    match created {
        Ok((token, attempt)) => {
            ledger.customers.insert(id);
            ledger.last_token = Some(token);
            ledger.retried += usize::from(attempt > 0);
        }
        Err(status) if retryable(&status) => {
            ledger.unacknowledged_customers.insert(id);
        }
        Err(status) => panic!("creating {id}: {status:?}"),
    }
}

/// Records purchases `p<n>a` and `p<n>b` for an acknowledged customer
/// through the replica after `n mod 3` (or the ones after that), and notes
/// in `ledger` whether that was acknowledged.
async fn buy(clients: &[Client], n: u64, ledger: &mut Ledger) {
    let count = ledger.customers.len();
    let Some(buyer) = ledger.customers.iter().nth(n as usize * 7 % count.max(1)) else {
        return;
    };
    let buyer = buyer.clone();
    let ids = [format!("p{n:05}a"), format!("p{n:05}b")];
    let batch = vec![
        purchase(&ids[0], &buyer, n as i64 % 390, 1000 + n as i64),
        purchase(&ids[1], &buyer, (n as i64 * 3) % 390, 2500),
    ];
    let recorded = with_retries(ATTEMPTS, |attempt| {
        let mut client = clients[(n as usize + 1 + attempt) % clients.len()].clone();
        let batch = batch.clone();
        async move {
            let recorded = client.record(batch).await?;
            Ok((recorded, attempt))
        }
    })
    .await;
    match recorded {
        Ok(((token, response), attempt)) => {
            // A retry finds what an attempt before it stored.
            assert_eq!(
                response.accepted_count + response.duplicate_count,
                2,
                "recording {ids:?} for {buyer}: {response:?}"
            );
            assert!(
                attempt > 0 || response.duplicate_count == 0,
                "a first attempt at {ids:?} found duplicates: {response:?}"
            );
            ledger.purchases.entry(buyer).or_default().extend(ids);
            ledger.last_token = Some(token);
            ledger.retried += usize::from(attempt > 0);
        }
        Err(status) if retryable(&status) => {
            let unacknowledged = ledger.unacknowledged_purchases.entry(buyer);
            unacknowledged.or_default().extend(ids);
        }
        Err(status) => panic!("recording {ids:?} for {buyer}: {status:?}"),
    }
}

/// Fails the test unless one replica's `customers` and `purchases` (per
/// customer, as ListPurchases lists them) hold every acknowledged write of
/// `ledger`, nothing that was never written, and nothing twice.
fn assert_holds(
    name: &str,
    ledger: &Ledger,
    customers: &[String],
    purchases: &BTreeMap<String, Vec<String>>,
) {
    let held: BTreeSet<&String> = customers.iter().collect();
    for id in &ledger.customers {
        assert!(held.contains(id), "{name} lacks acknowledged customer {id}");
    }
    for id in &held {
        assert!(
            ledger.customers.contains(*id) || ledger.unacknowledged_customers.contains(*id),
            "{name} holds {id}, which was never written"
        );
    }
    let none = BTreeSet::new();
    for (customer, listed) in purchases {
        let distinct: BTreeSet<&String> = listed.iter().collect();
        assert_eq!(
            distinct.len(),
            listed.len(),
            "{name} lists a purchase of {customer} twice: {listed:?}"
        );
        let acknowledged = ledger.purchases.get(customer).unwrap_or(&none);
        let unacknowledged = ledger
            .unacknowledged_purchases
            .get(customer)
            .unwrap_or(&none);
        for id in acknowledged {
            assert!(
                distinct.contains(id),
                "{name} lacks acknowledged purchase {id} of {customer}"
            );
        }
        for id in &distinct {
            assert!(
                acknowledged.contains(*id) || unacknowledged.contains(*id),
                "{name} holds purchase {id} of {customer}, which was never recorded for them"
            );
        }
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_a_nats_node_and_a_replica_failing() {
    let Some(mut nats) = NatsCluster::start().await else {
        return;
    };
    let mut replicas = Replica::start_all(&nats.urls(), 3).await;
    let clients = Client::of_each(&replicas, Duration::from_secs(5));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write(clients.clone(), stop.clone()));
    let pause = || tokio::time::sleep(Duration::from_secs(3));

    pause().await;
    // The node that leads the stream, so that a new leader is elected.
    let leader = nats.stream_leader(STREAM).await;
    let node = leader.unwrap_or(0);
    println!("killing NATS node n{node} (the stream's leader: {leader:?})");
    nats.kill(node);
    pause().await;
    nats.restart(node).await;
    pause().await;
    replicas[1].kill();
    pause().await;
    replicas[1].restart();
    replicas[1].wait_serving().await;
    pause().await;
    stop.store(true, Ordering::Relaxed);
    let ledger = writer.await.unwrap();
    println!(
        "{} customers and {} purchases acknowledged ({} after a retry); \
         {} customers and {} purchases not",
        ledger.customers.len(),
        ledger.purchases.values().map(BTreeSet::len).sum::<usize>(),
        ledger.retried,
        ledger.unacknowledged_customers.len(),
        ledger
            .unacknowledged_purchases
            .values()
            .map(BTreeSet::len)
            .sum::<usize>(),
    );
    assert!(
        ledger.customers.len() > 20,
        "too few writes to test anything: {ledger:?}"
    );

    let token = ledger.last_token.clone().unwrap();
    let mut states = Vec::new();
    let mut names = Vec::new();
    // A replica answers once it has applied the token, within 10 s.
    let readers = Client::of_each(&replicas, Duration::from_secs(15));
    for (replica, mut client) in replicas.iter().zip(readers) {
        let name = format!("replica {}", replica.addr);
        let state = client.state(Some(&token)).await;
        assert_holds(&name, &ledger, &state.customer_ids(), &state.purchases);
        for (customer, ids) in &state.purchases {
            assert_eq!(
                state.purchase_counts[customer],
                ids.len() as i64,
                "{name} counts the purchases of {customer} differently from listing them"
            );
        }
        states.push(state);
        names.push(name);
    }
    assert_all_equal(&states, &names);
}
