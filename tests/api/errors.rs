//! The error model a client sees: statuses that stay small whatever the
//! request held, an ErrorInfo on every error, field violations from import
//! streams, and ABORTED on an etag mismatch.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use segmentd::grpc::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::activity::{activity, purchase};
use crate::customers::{create, full_customer, violated_fields};
use crate::segments::segmentation;
use crate::support::{config, TestServer};

/// The most bytes of `grpc-message` and `grpc-status-details-bin` a status
/// may take: half of grpc-core's default limit on all metadata (16 KiB),
/// which leaves room for the other headers.
const STATUS_BUDGET: usize = 8 * 1024;

/// The bytes a status takes in the trailers.
fn trailer_bytes(status: &tonic::Status) -> usize {
    status.message().len() + STANDARD_NO_PAD.encode(status.details()).len()
}

/// Asserts that `status` carries an ErrorInfo of segmentd with `reason`,
/// and returns its metadata.
fn error_info(status: &tonic::Status, reason: &str) -> std::collections::HashMap<String, String> {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "segmentd", "{status:?}");
    assert_eq!(info.reason, reason, "{status:?}");
    info.metadata
}

/// A server that takes messages of up to 8 MiB, for huge inputs.
async fn roomy_server() -> (TestServer, tempfile::TempDir) {
    let temp = tempfile::tempdir().unwrap();
    let mut settings = config(temp.path());
    settings.max_message_bytes = 8 << 20;
    let server = TestServer::spawn(settings).await;
    server.wait_serving().await;
    (server, temp)
}

#[tokio::test]
async fn a_megabyte_name_gets_a_small_invalid_argument() {
    let (server, _temp) = roomy_server().await;
    let huge = "x".repeat(1 << 20);
    for name in [huge.clone(), format!("customers/{huge}")] {
        let status = server
            .customers()
            .await
            .get_customer(pb::GetCustomerRequest { name: name.clone() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        assert_eq!(violated_fields(&status), ["name"]);
        assert!(trailer_bytes(&status) < 2048, "{status:?}");
        let metadata = error_info(&status, "FIELD_VIOLATION");
        assert_eq!(metadata["field"], "name");
    }
    // A name without its collection is echoed, cut, with the length of the
    // text it was cut from.
    let status = server
        .customers()
        .await
        .get_customer(pb::GetCustomerRequest { name: huge.clone() })
        .await
        .unwrap_err();
    let violation = &status.get_details_bad_request().unwrap().field_violations[0];
    assert!(violation.description.contains("xxx…"), "{violation:?}");
    assert!(
        violation
            .description
            .ends_with(&format!("(cut from {} characters)", huge.len() + 59)),
        "the length of the value is told: {violation:?}"
    );

    // A huge trait key names the field in full inside the server, so that
    // an update still finds the violation of the field it changes, and the
    // status cuts it.
    let mut customer = full_customer();
    customer.traits.insert(
        "k".repeat(100_000),
        pb::TraitValue {
            kind: Some(pb::trait_value::Kind::BoolValue(true)),
        },
    );
    let status = create(&server, "t1", customer.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(trailer_bytes(&status) < 4096, "{status:?}");
    create(&server, "t1", full_customer()).await.unwrap();
    customer.name = "customers/t1".into();
    let status = server
        .customers()
        .await
        .update_customer(pb::UpdateCustomerRequest {
            customer: Some(customer),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violated_fields(&status);
    assert!(fields[0].starts_with("customer.traits[\"kkk"), "{fields:?}");
    assert!(trailer_bytes(&status) < 4096, "{status:?}");

    // A huge etag, echoed by the mismatch, is cut too.
    create(&server, "e1", full_customer()).await.unwrap();
    let status = server
        .customers()
        .await
        .delete_customer(pb::DeleteCustomerRequest {
            name: "customers/e1".into(),
            etag: "e".repeat(1 << 20),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert!(trailer_bytes(&status) < 1024, "{status:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn ten_thousand_bad_events_get_a_small_invalid_argument() {
    let (server, _temp) = roomy_server().await;
    // Each event has two bad fields: an unknown customer name and a
    // negative quantity.
    let purchases: Vec<_> = (0..10_000)
        .map(|n| pb::Purchase {
            customer: format!("nobody-{n}-{}", "y".repeat(100)),
            quantity: -1,
            ..purchase(&format!("p-{n}"), "a", 1, 100)
        })
        .collect();
    let status = activity(&server)
        .await
        .record_activity(pb::RecordActivityRequest {
            purchases,
            engagements: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        trailer_bytes(&status) < STATUS_BUDGET,
        "{} bytes",
        trailer_bytes(&status)
    );
    let listed = status.get_details_bad_request().unwrap().field_violations;
    assert_eq!(listed.len(), 20);
    assert_eq!(listed[0].field, "purchases[0].customer");
    assert_eq!(listed[1].field, "purchases[0].quantity");
    assert!(
        status
            .message()
            .contains("(and 19999 more field violations)"),
        "{}",
        status.message()
    );
    let metadata = error_info(&status, "FIELD_VIOLATION");
    assert_eq!(metadata["field_violations"], "20000");
    assert_eq!(metadata["field"], "purchases[0].customer");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn every_error_carries_an_error_info() {
    let server = TestServer::start().await;
    let mut customers = server.customers().await;
    let get = |name: &str| pb::GetCustomerRequest { name: name.into() };

    let status = customers
        .get_customer(get("customers/nobody"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let metadata = error_info(&status, "NOT_FOUND");
    assert_eq!(metadata["resource"], "customers/nobody");
    assert_eq!(metadata["type"], "segmentd.v1.Customer");
    assert!(status.get_details_resource_info().is_some());

    create(&server, "taken", full_customer()).await.unwrap();
    let status = create(&server, "taken", full_customer()).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(
        error_info(&status, "ALREADY_EXISTS")["resource"],
        "customers/taken"
    );

    let status = customers.get_customer(get("nobody")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(error_info(&status, "FIELD_VIOLATION")["field"], "name");

    let status = customers
        .import_customers(tokio_stream::iter([pb::ImportCustomersRequest {
            customers: (0..1001)
                .map(|n| pb::Customer {
                    name: format!("customers/c{n}"),
                    ..Default::default()
                })
                .collect(),
        }]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        error_info(&status, "RESOURCE_EXHAUSTED")["subject"],
        "customers"
    );
    assert!(status.get_details_quota_failure().is_some());

    // A customer who objects to profiling gets no persona.
    create(
        &server,
        "objector",
        pb::Customer {
            objects_to_profiling: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let status = crate::personas::personas(&server)
        .await
        .get_customer_persona(pb::GetCustomerPersonaRequest {
            name: "customers/objector".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    error_info(&status, "FAILED_PRECONDITION");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_import_refusal_names_the_fields_and_the_message() {
    let server = TestServer::start().await;
    let good = pb::ImportCustomersRequest {
        customers: vec![pb::Customer {
            name: "customers/first".into(),
            ..full_customer()
        }],
    };
    let mut bad = pb::ImportCustomersRequest {
        customers: (0..6)
            .map(|n| pb::Customer {
                name: format!("customers/imp-{n}"),
                ..full_customer()
            })
            .collect(),
    };
    bad.customers[5].location.as_mut().unwrap().country_code = "ZZ".into();
    let status = server
        .customers()
        .await
        .import_customers(tokio_stream::iter([good, bad]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        ["customers[5].location.country_code"]
    );
    assert!(
        status.message().starts_with("message 1 was refused"),
        "{}",
        status.message()
    );
    let metadata = error_info(&status, "FIELD_VIOLATION");
    assert_eq!(metadata["message_index"], "1");
    assert_eq!(metadata["field"], "customers[5].location.country_code");
    // The details repeat the status's own message, as clients that check
    // the two agree (grpcio's rpc_status) require.
    let details = <tonic_types::pb::Status as prost::Message>::decode(status.details()).unwrap();
    assert_eq!(details.message, status.message());
    assert_eq!(details.code, Code::InvalidArgument as i32);

    // The same for activity: the first message of the stream.
    let mut event = purchase("p-1", "first", 1, 100);
    event.amount.as_mut().unwrap().currency_code = "EUR".into();
    let status = activity(&server)
        .await
        .import_activity(tokio_stream::iter([pb::ImportActivityRequest {
            purchases: vec![purchase("p-0", "first", 1, 100), event],
            engagements: Vec::new(),
        }]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["purchases[1].amount"]);
    assert_eq!(error_info(&status, "FIELD_VIOLATION")["message_index"], "0");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn segments_have_an_etag_and_a_stale_one_is_aborted() {
    let server = TestServer::start().await;
    let mut client = segmentation(&server).await;
    let created = client
        .create_segment(pb::CreateSegmentRequest {
            segment_id: "buyers".into(),
            segment: Some(pb::Segment {
                filter: "features.purchase_count >= 1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!created.etag.is_empty());
    let read = pb::GetSegmentRequest {
        name: "segments/buyers".into(),
    };
    let got = client.get_segment(read.clone()).await.unwrap().into_inner();
    assert_eq!(got.etag, created.etag);

    let rename = |etag: &str| pb::UpdateSegmentRequest {
        segment: Some(pb::Segment {
            name: "segments/buyers".into(),
            display_name: "Buyers".into(),
            etag: etag.into(),
            ..Default::default()
        }),
        update_mask: None,
    };
    let renamed = client
        .update_segment(rename(&created.etag))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(renamed.etag, created.etag, "the etag moves on every write");
    // The etag read before the change is stale now.
    let status = client
        .update_segment(rename(&created.etag))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(
        error_info(&status, "ETAG_MISMATCH")["resource"],
        "segments/buyers"
    );
    let delete = |etag: &str| pb::DeleteSegmentRequest {
        name: "segments/buyers".into(),
        etag: etag.into(),
    };
    let status = client
        .delete_segment(delete(&created.etag))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    // Nothing changed: the segment is as renamed.
    let kept = client.get_segment(read).await.unwrap().into_inner();
    assert_eq!(kept, renamed);
    client.delete_segment(delete(&renamed.etag)).await.unwrap();
    server.stop().await.unwrap();
}
