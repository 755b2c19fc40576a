//! Calls to the replicas: writes that hand back their consistency token,
//! reads that carry one, and everything a replica holds, read for
//! comparison with the others.

use std::collections::BTreeMap;
use std::time::Duration;

use prost_types::Timestamp;
use segmentd::grpc::pb;
use segmentd::grpc::pb::activity_service_client::ActivityServiceClient;
use segmentd::grpc::pb::customer_service_client::CustomerServiceClient;
use segmentd::grpc::pb::persona_service_client::PersonaServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::replica::Replica;

/// The metadata key of a consistency token, on a write's response and on
/// any request.
pub const TOKEN: &str = "segmentd-consistency-token";

/// One day, in seconds.
const DAY: i64 = 86_400;
/// 2024-01-01T00:00:00Z: purchases happen on the days after it.
const BASE: i64 = 1_704_067_200;
/// The fixed time personas are evaluated at: after every purchase.
const EVALUATION_DAY: i64 = 400;

/// `message` as a request, carrying `token` if there is one.
pub fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert(TOKEN, token.parse().expect("a token is ASCII"));
    }
    request
}

/// The consistency token on a write's response; fails the test when there
/// is none.
pub fn token_of<T>(response: &Response<T>) -> String {
    let token = response
        .metadata()
        .get(TOKEN)
        .unwrap_or_else(|| panic!("a write's response without {TOKEN}"));
    token.to_str().unwrap().to_owned()
}

/// Whether a write that failed with `status` may be retried: the replica
/// or the log could not be reached, or did not answer in time, and the
/// write may or may not have been stored; or the replica shed it.
pub fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::ResourceExhausted
    )
}

/// A request id (a UUID) of its own for each `n`, differing from run to run.
pub fn request_id(n: u64) -> String {
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let run = *RUN.get_or_init(rand::random::<u64>);
    uuid::Uuid::from_u128((u128::from(run) << 64) | u128::from(n)).to_string()
}

/// The `n`th customer's profile: a mix of parties, countries and incomes,
/// so that personas differ.
pub fn profile(n: u64) -> pb::Customer {
    let countries = ["us", "de", "eg", "jp", "br"];
    pb::Customer {
        party: if n.is_multiple_of(7) {
            pb::Party::Business as i32
        } else {
            pb::Party::Individual as i32
        },
        annual_income: Some(pb::Money {
            currency_code: "USD".into(),
            minor_units: 2_000_000 + (n as i64 % 13) * 1_500_000,
        }),
        location: Some(pb::Location {
            country_code: countries[n as usize % countries.len()].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A purchase `id` by `customer` (an id) on day `day` after the base date.
pub fn purchase(id: &str, customer: &str, day: i64, cents: i64) -> pb::Purchase {
    pb::Purchase {
        purchase_id: id.into(),
        customer: format!("customers/{customer}"),
        occurred_at: Some(Timestamp {
            seconds: BASE + day.min(EVALUATION_DAY - 1) * DAY,
            nanos: 0,
        }),
        amount: Some(pb::Money {
            currency_code: "USD".into(),
            minor_units: cents,
        }),
        quantity: 1,
        category: "music".into(),
        durability: pb::ProductDurability::Consumable as i32,
    }
}

/// The clients of one replica, on one connection.
#[derive(Clone)]
pub struct Client {
    /// CustomerService.
    pub customers: CustomerServiceClient<Channel>,
    /// ActivityService.
    pub activity: ActivityServiceClient<Channel>,
    /// PersonaService.
    pub personas: PersonaServiceClient<Channel>,
}

impl Client {
    /// A client of each of `replicas`, whose calls give up after `timeout`.
    pub fn of_each(replicas: &[Replica], timeout: Duration) -> Vec<Client> {
        replicas
            .iter()
            .map(|replica| Client::new(replica.channel(timeout)))
            .collect()
    }

    /// The clients on `channel`.
    pub fn new(channel: Channel) -> Client {
        Client {
            customers: CustomerServiceClient::new(channel.clone()),
            activity: ActivityServiceClient::new(channel.clone()),
            personas: PersonaServiceClient::new(channel),
        }
    }

    /// Creates customer `id` with the `n`th profile and `request_id`; the
    /// write's token.
    pub async fn create(&mut self, id: &str, n: u64, request_id: &str) -> Result<String, Status> {
        let request = pb::CreateCustomerRequest {
            customer_id: id.into(),
            customer: Some(profile(n)),
            request_id: request_id.into(),
        };
        let response = self.customers.create_customer(request).await?;
        Ok(token_of(&response))
    }

    /// Records `purchases`; the write's token and what it did.
    pub async fn record(
        &mut self,
        purchases: Vec<pb::Purchase>,
    ) -> Result<(String, pb::RecordActivityResponse), Status> {
        let request = pb::RecordActivityRequest {
            purchases,
            engagements: Vec::new(),
        };
        let response = self.activity.record_activity(request).await?;
        Ok((token_of(&response), response.into_inner()))
    }

    /// Customer `id`, read once the replica has applied `token`.
    pub async fn get(&mut self, id: &str, token: Option<&str>) -> Result<pb::Customer, Status> {
        let request = pb::GetCustomerRequest {
            name: format!("customers/{id}"),
        };
        let response = self
            .customers
            .get_customer(with_token(request, token))
            .await?;
        Ok(response.into_inner())
    }

    /// Customer `id`'s purchase count at the evaluation time, read once the
    /// replica has applied `token`.
    pub async fn purchase_count(&mut self, id: &str, token: Option<&str>) -> i64 {
        let request = pb::GetCustomerFeaturesRequest {
            name: format!("customers/{id}"),
            evaluation_time: evaluation_time(),
        };
        self.customers
            .get_customer_features(with_token(request, token))
            .await
            .unwrap()
            .into_inner()
            .purchase_count
    }

    /// Every customer, in id order, read once the replica has applied
    /// `token`.
    pub async fn all_customers(&mut self, token: Option<&str>) -> Vec<pb::Customer> {
        let mut customers = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListCustomersRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            };
            let page = self
                .customers
                .list_customers(with_token(request, token))
                .await
                .unwrap()
                .into_inner();
            customers.extend(page.customers);
            if page.next_page_token.is_empty() {
                return customers;
            }
            page_token = page.next_page_token;
        }
    }

    /// The ids of customer `id`'s purchases as ListPurchases gives them,
    /// read once the replica has applied `token`.
    pub async fn purchase_ids(&mut self, id: &str, token: Option<&str>) -> Vec<String> {
        let mut ids = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListPurchasesRequest {
                parent: format!("customers/{id}"),
                page_size: 1000,
                page_token,
            };
            let page = self
                .activity
                .list_purchases(with_token(request, token))
                .await
                .unwrap()
                .into_inner();
            ids.extend(page.purchases.into_iter().map(|p| p.purchase_id));
            if page.next_page_token.is_empty() {
                return ids;
            }
            page_token = page.next_page_token;
        }
    }

    /// BreakdownPersonas over everyone at the fixed evaluation time, read
    /// once the replica has applied `token`.
    pub async fn breakdown(&mut self, token: Option<&str>) -> pb::BreakdownPersonasResponse {
        let request = pb::BreakdownPersonasRequest {
            filter: String::new(),
            evaluation_time: evaluation_time(),
        };
        self.personas
            .breakdown_personas(with_token(request, token))
            .await
            .unwrap()
            .into_inner()
    }

    /// Everything the replica holds, read once it has applied `token`.
    pub async fn state(&mut self, token: Option<&str>) -> State {
        let customers = self.all_customers(token).await;
        let mut purchases = BTreeMap::new();
        let mut purchase_counts = BTreeMap::new();
        for customer in &customers {
            let id = customer.name.trim_start_matches("customers/").to_owned();
            purchases.insert(id.clone(), self.purchase_ids(&id, token).await);
            purchase_counts.insert(id.clone(), self.purchase_count(&id, token).await);
        }
        State {
            breakdown: self.breakdown(token).await,
            customers,
            purchases,
            purchase_counts,
        }
    }
}

/// The fixed evaluation time of the persona and feature reads.
fn evaluation_time() -> Option<Timestamp> {
    Some(Timestamp {
        seconds: BASE + EVALUATION_DAY * DAY,
        nanos: 0,
    })
}

/// Everything one replica holds, for comparison with another.
#[derive(Debug, PartialEq)]
pub struct State {
    /// Every customer, in id order, as GetCustomer would give them.
    pub customers: Vec<pb::Customer>,
    /// Each customer's purchase ids, as ListPurchases lists them.
    pub purchases: BTreeMap<String, Vec<String>>,
    /// Each customer's purchase count, as GetCustomerFeatures counts them.
    pub purchase_counts: BTreeMap<String, i64>,
    /// BreakdownPersonas over everyone at the fixed evaluation time.
    pub breakdown: pb::BreakdownPersonasResponse,
}

impl State {
    /// The ids of the customers.
    pub fn customer_ids(&self) -> Vec<String> {
        self.purchases.keys().cloned().collect()
    }
}

/// Fails the test unless `states` (one per replica, named by `names`) are
/// all the same, naming the first difference.
pub fn assert_all_equal(states: &[State], names: &[String]) {
    let first = &states[0];
    for (state, name) in states.iter().zip(names).skip(1) {
        let differ = |what: &str| format!("{name} and {} {what}", names[0]);
        assert_eq!(
            state.customer_ids(),
            first.customer_ids(),
            "{}",
            differ("hold different customers")
        );
        assert_eq!(
            state.customers,
            first.customers,
            "{}",
            differ("hold different profiles")
        );
        assert_eq!(
            state.purchases,
            first.purchases,
            "{}",
            differ("hold different purchases")
        );
        assert_eq!(
            state.purchase_counts,
            first.purchase_counts,
            "{}",
            differ("count purchases differently")
        );
        assert_eq!(
            state.breakdown,
            first.breakdown,
            "{}",
            differ("break personas down differently")
        );
    }
}

/// Retries `write` (at most `attempts` times, a moment apart) while it
/// fails in a way that may be retried; its last outcome. `write` gets the
/// attempt number, to pick a replica by.
pub async fn with_retries<T, F, Fut>(attempts: usize, mut write: F) -> Result<T, Status>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let mut attempt = 0;
    loop {
        match write(attempt).await {
            Err(status) if retryable(&status) && attempt + 1 < attempts => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            outcome => return outcome,
        }
    }
}

/// Writes customers `c<first>` to `c<first + count - 1>`, each with two
/// purchases, through `clients` in turn; the last write's token.
pub async fn populate(clients: &[Client], first: u64, count: u64) -> String {
    let mut token = String::new();
    for n in first..first + count {
        let mut client = clients[n as usize % clients.len()].clone();
        let id = format!("c{n:05}");
        client.create(&id, n, &request_id(n)).await.unwrap();
        let bought = vec![
            purchase(&format!("p{n:05}a"), &id, n as i64 % 390, 1000 + n as i64),
            purchase(&format!("p{n:05}b"), &id, (n as i64 * 3) % 390, 2500),
        ];
        (token, _) = client.record(bought).await.unwrap();
    }
    token
}
