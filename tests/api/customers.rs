//! The standard methods of CustomerService, their errors and their limits.

use std::collections::{BTreeMap as HashMap, BTreeSet};

use prost_types::FieldMask;
use segmentd::grpc::pb::google::r#type::Date;
use segmentd::grpc::pb::{self, trait_value::Kind};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{TestServer, TEST_MAX_MESSAGE_BYTES};

/// The field paths of a status's BadRequest violations, sorted.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    let mut fields: Vec<String> = status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    fields.sort();
    fields
}

/// A customer with every field set.
pub fn full_customer() -> pb::Customer {
    pb::Customer {
        party: pb::Party::Business as i32,
        relationship: pb::Relationship::Internal as i32,
        department: "Procurement".into(),
        birth_date: Some(Date {
            year: 1984,
            month: 2,
            day: 29,
        }),
        gender: pb::Gender::Female as i32,
        annual_income: Some(pb::Money {
            currency_code: "USD".into(),
            minor_units: 8_250_000,
        }),
        location: Some(pb::Location {
            country_code: "eg".into(),
            region: "Cairo Governorate".into(),
            city: "Cairo".into(),
            postal_code: "11511".into(),
        }),
        language: "ar-EG".into(),
        traits: HashMap::from([
            (
                "tier".into(),
                pb::TraitValue {
                    kind: Some(Kind::StringValue("gold".into())),
                },
            ),
            (
                "score".into(),
                pb::TraitValue {
                    kind: Some(Kind::NumberValue(7.5)),
                },
            ),
            (
                "vip".into(),
                pb::TraitValue {
                    kind: Some(Kind::BoolValue(true)),
                },
            ),
        ]),
        consent: Some(pb::Consent {
            email: pb::ConsentStatus::Granted as i32,
            sms: pb::ConsentStatus::Denied as i32,
            push: pb::ConsentStatus::Unspecified as i32,
            ads: pb::ConsentStatus::Unknown as i32,
        }),
        objects_to_profiling: true,
        ..Default::default()
    }
}

/// Creates `id` with `customer`'s fields.
pub async fn create(
    server: &TestServer,
    id: &str,
    customer: pb::Customer,
) -> Result<pb::Customer, tonic::Status> {
    let request = pb::CreateCustomerRequest {
        customer_id: id.into(),
        customer: Some(customer),
        request_id: String::new(),
    };
    server
        .customers()
        .await
        .create_customer(request)
        .await
        .map(|r| r.into_inner())
}

async fn get(server: &TestServer, name: &str) -> Result<pb::Customer, tonic::Status> {
    let request = pb::GetCustomerRequest { name: name.into() };
    server
        .customers()
        .await
        .get_customer(request)
        .await
        .map(|r| r.into_inner())
}

async fn update(
    server: &TestServer,
    customer: pb::Customer,
    paths: &[&str],
    allow_missing: bool,
) -> Result<pb::Customer, tonic::Status> {
    let request = pb::UpdateCustomerRequest {
        customer: Some(customer),
        update_mask: (!paths.is_empty()).then(|| FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
        allow_missing,
    };
    server
        .customers()
        .await
        .update_customer(request)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn create_then_get_returns_every_field_normalised() {
    let server = TestServer::start().await;
    let created = create(&server, "acme:42", full_customer()).await.unwrap();

    assert_eq!(created.name, "customers/acme:42");
    assert_eq!(
        created.location.as_ref().unwrap().country_code,
        "EG",
        "country is upper-cased"
    );
    let consent = created.consent.unwrap();
    assert_eq!(
        consent.push,
        pb::ConsentStatus::Unknown as i32,
        "unspecified is stored as unknown"
    );
    assert_eq!(consent.sms, pb::ConsentStatus::Denied as i32);
    assert_eq!(created.traits.len(), 3);
    assert!(created.objects_to_profiling);
    assert!(!created.etag.is_empty());
    assert_eq!(created.create_time, created.update_time);

    let fetched = get(&server, "customers/acme:42").await.unwrap();
    assert_eq!(fetched, created);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn create_reports_every_invalid_field() {
    let server = TestServer::start().await;
    let mut customer = full_customer();
    customer.relationship = pb::Relationship::External as i32; // department now invalid
    customer.birth_date = Some(Date {
        year: 2999,
        month: 1,
        day: 1,
    });
    customer.annual_income = Some(pb::Money {
        currency_code: String::new(),
        minor_units: -1,
    });
    customer.location.as_mut().unwrap().country_code = "XX".into();
    customer.language = "english".into();
    customer.gender = 42;
    customer
        .traits
        .insert("9lives".into(), pb::TraitValue { kind: None });
    let status = create(&server, "bad id", customer).await.unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        [
            "customer.annual_income",
            "customer.birth_date",
            "customer.gender",
            "customer.language",
            "customer.location.country_code",
            "customer.traits[\"9lives\"]",
            "customer_id",
        ]
    );

    let mut customer = full_customer();
    customer.annual_income.as_mut().unwrap().currency_code = "EUR".into();
    customer.birth_date = Some(Date {
        year: 2023,
        month: 2,
        day: 29,
    });
    let status = create(&server, "ok-id", customer).await.unwrap_err();
    assert_eq!(
        violated_fields(&status),
        ["customer.annual_income", "customer.birth_date"]
    );

    let mut customer = full_customer();
    customer.relationship = pb::Relationship::External as i32;
    let status = create(&server, "ok-id", customer).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["customer.department"]);

    let request = pb::CreateCustomerRequest {
        customer_id: "ok-id".into(),
        customer: None,
        request_id: "not-a-uuid".into(),
    };
    let status = server
        .customers()
        .await
        .create_customer(request)
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["customer", "request_id"]);

    // Nothing invalid was stored.
    assert_eq!(
        get(&server, "customers/ok-id").await.unwrap_err().code(),
        Code::NotFound
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn create_twice_is_already_exists_unless_it_is_a_retry() {
    let server = TestServer::start().await;
    let mut client = server.customers().await;
    let request_id = "3fa85f64-5717-4562-b3fc-2c963f66afa6".to_string();
    let request = pb::CreateCustomerRequest {
        customer_id: "retry-me".into(),
        customer: Some(full_customer()),
        request_id: request_id.clone(),
    };
    let first = client
        .create_customer(request.clone())
        .await
        .unwrap()
        .into_inner();
    let retried = client
        .create_customer(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first, retried,
        "a retry with the same request_id returns the stored customer"
    );

    let other_request = pb::CreateCustomerRequest {
        request_id: "9b2f1d7e-8c1a-4e3b-9f00-0a1b2c3d4e5f".into(),
        ..request.clone()
    };
    let status = client.create_customer(other_request).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(
        status.get_details_resource_info().unwrap().resource_name,
        "customers/retry-me"
    );

    let status = create(&server, "retry-me", full_customer())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn get_unknown_or_malformed_names() {
    let server = TestServer::start().await;
    let status = get(&server, "customers/nobody").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.get_details_resource_info().unwrap().resource_name,
        "customers/nobody"
    );

    for name in ["", "nobody", "users/x", "customers/", "customers/a b"] {
        let status = get(&server, name).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name:?}");
        assert_eq!(violated_fields(&status), ["name"], "{name:?}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn update_changes_only_the_masked_fields() {
    let server = TestServer::start().await;
    let created = create(&server, "u1", full_customer()).await.unwrap();

    // An explicit mask: only the city changes, though the request carries more.
    let change = pb::Customer {
        name: "customers/u1".into(),
        location: Some(pb::Location {
            city: "Alexandria".into(),
            country_code: "XX".into(), // invalid, but not in the mask
            ..Default::default()
        }),
        language: "fa-IR".into(),
        ..Default::default()
    };
    let updated = update(&server, change, &["location.city", "etag"], false)
        .await
        .unwrap();
    let location = updated.location.as_ref().unwrap();
    assert_eq!(location.city, "Alexandria");
    assert_eq!(location.country_code, "EG");
    assert_eq!(updated.language, "ar-EG");
    assert_eq!(updated.create_time, created.create_time);
    assert!(nanos(&updated.update_time) > nanos(&created.update_time));
    assert_ne!(updated.etag, created.etag);

    // No mask: every field set in the request, and trait entries one by one.
    let change = pb::Customer {
        name: "customers/u1".into(),
        consent: Some(pb::Consent {
            ads: pb::ConsentStatus::Granted as i32,
            ..Default::default()
        }),
        traits: HashMap::from([(
            "tier".into(),
            pb::TraitValue {
                kind: Some(Kind::StringValue("platinum".into())),
            },
        )]),
        ..Default::default()
    };
    let updated = update(&server, change, &[], false).await.unwrap();
    let consent = updated.consent.unwrap();
    assert_eq!(consent.ads, pb::ConsentStatus::Granted as i32);
    assert_eq!(
        consent.email,
        pb::ConsentStatus::Granted as i32,
        "untouched channel kept"
    );
    assert_eq!(updated.traits.len(), 3);
    assert_eq!(
        updated.traits["tier"].kind,
        Some(Kind::StringValue("platinum".into()))
    );
    assert_eq!(updated.location.unwrap().city, "Alexandria");

    // `*` replaces every mutable field: what is unset is cleared.
    let change = pb::Customer {
        name: "customers/u1".into(),
        language: "tr".into(),
        ..Default::default()
    };
    let replaced = update(&server, change, &["*"], false).await.unwrap();
    assert_eq!(replaced.language, "tr");
    assert!(replaced.traits.is_empty());
    assert!(replaced.birth_date.is_none());
    assert_eq!(replaced.relationship, pb::Relationship::External as i32);
    assert!(!replaced.objects_to_profiling);

    assert_eq!(get(&server, "customers/u1").await.unwrap(), replaced);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn update_errors() {
    let server = TestServer::start().await;
    let created = create(&server, "u2", full_customer()).await.unwrap();

    // A stale etag.
    let stale = pb::Customer {
        name: "customers/u2".into(),
        language: "tr".into(),
        etag: "12345".into(),
        ..Default::default()
    };
    let status = update(&server, stale, &["language"], false)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert!(status.get_details_precondition_failure().is_some());
    let info = status.get_details_error_info().unwrap();
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("ETAG_MISMATCH", "segmentd")
    );
    assert_eq!(info.metadata["resource"], "customers/u2");

    // The current etag succeeds.
    let fresh = pb::Customer {
        name: "customers/u2".into(),
        language: "tr".into(),
        etag: created.etag.clone(),
        ..Default::default()
    };
    update(&server, fresh.clone(), &["language"], false)
        .await
        .unwrap();
    // ...once: the etag moved on.
    let status = update(&server, fresh, &["language"], false)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);

    // Unknown mask paths and invalid masked values.
    let change = pb::Customer {
        name: "customers/u2".into(),
        birth_date: Some(Date {
            year: 2999,
            month: 1,
            day: 1,
        }),
        ..Default::default()
    };
    let status = update(&server, change, &["birth_date", "shoe_size"], false)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        ["customer.birth_date", "update_mask.paths[1]"]
    );

    // A department on an external customer, after the merge.
    let change = pb::Customer {
        name: "customers/u2".into(),
        ..Default::default()
    };
    let status = update(&server, change, &["relationship"], false)
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["customer.department"]);

    // A missing customer, with and without allow_missing.
    let change = pb::Customer {
        name: "customers/new-one".into(),
        language: "fa".into(),
        ..Default::default()
    };
    let status = update(&server, change.clone(), &[], false)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let upserted = update(&server, change, &[], true).await.unwrap();
    assert_eq!(upserted.language, "fa");
    assert_eq!(get(&server, "customers/new-one").await.unwrap(), upserted);

    let status = server
        .customers()
        .await
        .update_customer(pb::UpdateCustomerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["customer"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn delete_removes_and_honours_the_etag() {
    let server = TestServer::start().await;
    let created = create(&server, "d1", full_customer()).await.unwrap();
    let mut client = server.customers().await;

    let stale = pb::DeleteCustomerRequest {
        name: "customers/d1".into(),
        etag: "0".into(),
    };
    assert_eq!(
        client.delete_customer(stale).await.unwrap_err().code(),
        Code::Aborted
    );
    assert!(get(&server, "customers/d1").await.is_ok());

    let current = pb::DeleteCustomerRequest {
        name: "customers/d1".into(),
        etag: created.etag,
    };
    client.delete_customer(current.clone()).await.unwrap();
    assert_eq!(
        get(&server, "customers/d1").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        client.delete_customer(current).await.unwrap_err().code(),
        Code::NotFound
    );

    // The id is free again.
    create(&server, "d1", full_customer()).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn list_pages_through_every_customer_once_in_id_order() {
    let server = TestServer::start().await;
    let mut ids = BTreeSet::new();
    for n in 0..25 {
        let id = format!("c{n:03}");
        create(&server, &id, pb::Customer::default()).await.unwrap();
        ids.insert(format!("customers/{id}"));
    }
    let mut client = server.customers().await;
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_customers(pb::ListCustomersRequest {
                page_size: 10,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.customers.len() <= 10);
        seen.extend(page.customers.into_iter().map(|c| c.name));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids.into_iter().collect::<Vec<_>>());

    // A page token stays valid when the customer it points after is deleted.
    let first = client
        .list_customers(pb::ListCustomersRequest {
            page_size: 5,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let request = pb::DeleteCustomerRequest {
        name: "customers/c004".into(),
        etag: String::new(),
    };
    client.delete_customer(request).await.unwrap();
    let second = client
        .list_customers(pb::ListCustomersRequest {
            page_size: 5,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.customers[0].name, "customers/c005");

    // The default page size is 50, so one page holds all 24.
    let all = client
        .list_customers(pb::ListCustomersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.customers.len(), 24);
    assert!(all.next_page_token.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn list_limits_and_bad_tokens() {
    let server = TestServer::start().await;
    let mut client = server.customers().await;
    // A page size over the cap is reduced to it (AIP-158).
    let customers = |range: std::ops::Range<usize>| pb::ImportCustomersRequest {
        customers: range
            .map(|n| pb::Customer {
                name: format!("customers/c{n:04}"),
                ..full_customer()
            })
            .collect(),
    };
    client
        .import_customers(tokio_stream::iter([
            customers(0..1000),
            customers(1000..1001),
        ]))
        .await
        .unwrap();
    let page = client
        .list_customers(pb::ListCustomersRequest {
            page_size: 1001,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.customers.len(), 1000);
    assert!(!page.next_page_token.is_empty());
    let rest = client
        .list_customers(pb::ListCustomersRequest {
            page_size: i32::MAX,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.customers.len(), 1);
    assert_eq!(rest.customers[0].name, "customers/c1000");

    let status = client
        .list_customers(pb::ListCustomersRequest {
            page_size: -1,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["page_size"]);

    let status = client
        .list_customers(pb::ListCustomersRequest {
            page_size: 10,
            page_token: "garbage!".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["page_token"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_message_is_resource_exhausted_and_the_server_lives_on() {
    let server = TestServer::start().await;
    let mut customer = full_customer();
    customer.traits.insert(
        "blob".into(),
        pb::TraitValue {
            kind: Some(Kind::StringValue("x".repeat(TEST_MAX_MESSAGE_BYTES + 1))),
        },
    );
    let status = create(&server, "big", customer).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(
        (info.domain.as_str(), info.reason.as_str()),
        ("segmentd", "MESSAGE_TOO_LARGE")
    );
    assert_eq!(
        get(&server, "customers/big").await.unwrap_err().code(),
        Code::NotFound
    );

    // A trait value over its own limit, inside the message limit.
    let mut customer = full_customer();
    customer.traits.insert(
        "blob".into(),
        pb::TraitValue {
            kind: Some(Kind::StringValue("x".repeat(1025))),
        },
    );
    let status = create(&server, "big", customer).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["customer.traits[\"blob\"]"]);

    create(&server, "small", full_customer()).await.unwrap();
    server.stop().await.unwrap();
}

/// A timestamp as nanoseconds since the epoch, for comparisons.
pub fn nanos(timestamp: &Option<prost_types::Timestamp>) -> i128 {
    let timestamp = timestamp.as_ref().expect("timestamp set");
    i128::from(timestamp.seconds) * 1_000_000_000 + i128::from(timestamp.nanos)
}

/// Asserts that `status` refuses a page token as another request's.
pub fn assert_token_of_another_request(status: &tonic::Status) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(violated_fields(status), ["page_token"]);
    let bad = status.get_details_bad_request().unwrap();
    assert!(
        bad.field_violations[0]
            .description
            .starts_with("belongs to a different request"),
        "{bad:?}"
    );
}

#[tokio::test]
async fn a_page_token_holds_only_for_the_filter_it_came_with() {
    let server = TestServer::start().await;
    for n in 0..4 {
        create(&server, &format!("t{n}"), pb::Customer::default())
            .await
            .unwrap();
    }
    let mut client = server.customers().await;
    let list = |filter: &str, page_token: String| pb::ListCustomersRequest {
        page_size: 1,
        page_token,
        filter: filter.into(),
        evaluation_time: None,
    };
    let unfiltered = client
        .list_customers(list("", String::new()))
        .await
        .unwrap()
        .into_inner();
    let filtered = client
        .list_customers(list("features.purchase_count == 0", String::new()))
        .await
        .unwrap()
        .into_inner();
    assert!(!unfiltered.next_page_token.is_empty());
    assert!(!filtered.next_page_token.is_empty());

    // The same request goes on where the first page ended.
    let second = client
        .list_customers(list(
            "features.purchase_count == 0",
            filtered.next_page_token.clone(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.customers[0].name, "customers/t1");

    for (filter, token) in [
        ("customer.age > 30", filtered.next_page_token.clone()),
        ("", filtered.next_page_token),
        ("features.purchase_count == 0", unfiltered.next_page_token),
    ] {
        let status = client
            .list_customers(list(filter, token))
            .await
            .unwrap_err();
        assert_token_of_another_request(&status);
    }
    server.stop().await.unwrap();
}
