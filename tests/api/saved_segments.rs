//! Saved segments on the hand-built population of `segments.rs`: their
//! life cycle, member pages and their tokens, exports, and filtered
//! customer lists.

use segmentd::grpc::pb;
use segmentd::grpc::pb::segmentation_service_client::SegmentationServiceClient;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

use crate::activity::{at, purchase, record, DAY};
use crate::customers::create;
use crate::segments::{place, population, segmentation, T};
use crate::support::TestServer;

fn segment(filter: &str) -> pb::Segment {
    pb::Segment {
        display_name: "Buyers".into(),
        description: "Everyone who bought".into(),
        filter: filter.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn segments_are_created_changed_listed_and_deleted() {
    let server = TestServer::start().await;
    population(&server).await;
    let mut client = segmentation(&server).await;
    let created = client
        .create_segment(pb::CreateSegmentRequest {
            segment_id: "buyers".into(),
            segment: Some(segment("features.purchase_count >= 1")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (created.name.as_str(), created.revision),
        ("segments/buyers", 1)
    );
    let again = client
        .create_segment(pb::CreateSegmentRequest {
            segment_id: "buyers".into(),
            segment: Some(segment("true")),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    for (id, filter, field) in [
        ("Bad_Id", "true", "segment_id"),
        ("fine", "customer.colour == 1", "segment.filter"),
        ("fine", "", "segment.filter"),
    ] {
        let status = client
            .create_segment(pb::CreateSegmentRequest {
                segment_id: id.into(),
                segment: Some(segment(filter)),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, field);
    }
    client
        .create_segment(pb::CreateSegmentRequest {
            segment_id: "lapsed".into(),
            segment: Some(segment("features.frequency == \"LAPSED\"")),
        })
        .await
        .unwrap();

    // A preview against the saved segment says who would enter and leave.
    let preview = client
        .preview_segment(pb::PreviewSegmentRequest {
            filter: "features.purchase_count >= 2 || features.stage == \"JUST_LOOKING\"".into(),
            evaluation_time: at(T),
            sample_size: 10,
            segment: "segments/buyers".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // Buyers now: ayse, omar, reza; then: ayse, reza, lena.
    assert_eq!(
        (
            preview.member_count,
            preview.entering_count,
            preview.leaving_count
        ),
        (3, 1, 1)
    );

    let renamed = client
        .update_segment(pb::UpdateSegmentRequest {
            segment: Some(pb::Segment {
                name: "segments/buyers".into(),
                display_name: "All buyers".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (renamed.display_name.as_str(), renamed.revision),
        ("All buyers", 2)
    );
    assert_eq!(renamed.filter, "features.purchase_count >= 1");
    let refused = client
        .update_segment(pb::UpdateSegmentRequest {
            segment: Some(pb::Segment {
                name: "segments/buyers".into(),
                filter: "features.purchase_count >=".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let refiltered = client
        .update_segment(pb::UpdateSegmentRequest {
            segment: Some(pb::Segment {
                name: "segments/buyers".into(),
                filter: "features.purchase_count >= 2".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refiltered.revision, 3);
    assert_eq!(refiltered.display_name, "All buyers");
    let got = client
        .get_segment(pb::GetSegmentRequest {
            name: "segments/buyers".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, refiltered);

    let first = client
        .list_segments(pb::ListSegmentsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.segments[0].name, "segments/buyers");
    let second = client
        .list_segments(pb::ListSegmentsRequest {
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.segments[0].name, "segments/lapsed");
    assert!(second.next_page_token.is_empty());

    client
        .delete_segment(pb::DeleteSegmentRequest {
            name: "segments/buyers".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for status in [
        client
            .get_segment(pb::GetSegmentRequest {
                name: "segments/buyers".into(),
            })
            .await
            .unwrap_err(),
        client
            .delete_segment(pb::DeleteSegmentRequest {
                name: "segments/buyers".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound);
    }

    // Segments survive a restart.
    let temp = server.stop_keeping_data().await;
    let restarted = TestServer::spawn(crate::support::config(temp.as_ref().unwrap().path())).await;
    restarted.wait_serving().await;
    let kept = segmentation(&restarted)
        .await
        .get_segment(pb::GetSegmentRequest {
            name: "segments/lapsed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.revision, 1);
    restarted.stop().await.unwrap();
}

#[tokio::test]
async fn member_pages_keep_their_evaluation_time() {
    let server = TestServer::start().await;
    for n in 0..25 {
        create(
            &server,
            &format!("p-{n:02}"),
            pb::Customer {
                location: place("NL", "", ""),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let mut client = segmentation(&server).await;
    client
        .create_segment(pb::CreateSegmentRequest {
            segment_id: "dutch-non-buyers".into(),
            segment: Some(segment(
                "customer.country == \"NL\" && features.purchase_count == 0",
            )),
        })
        .await
        .unwrap();
    let page = |token: String| pb::ListSegmentMembersRequest {
        segment: "segments/dutch-non-buyers".into(),
        evaluation_time: None,
        page_size: 10,
        page_token: token,
    };
    let first = client
        .list_segment_members(page(String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.total_size, 25);
    // A purchase after the first page's evaluation time does not move
    // anyone between the pages.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut bought = purchase("late", "p-15", 0, 100);
    bought.occurred_at = at(now + 60);
    record(&server, vec![bought], vec![]).await.unwrap();
    let mut names = first.customers.clone();
    let mut token = first.next_page_token.clone();
    while !token.is_empty() {
        let next = client
            .list_segment_members(page(token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(next.evaluation_time, first.evaluation_time);
        assert_eq!(next.total_size, 25);
        names.extend(next.customers);
        token = next.next_page_token;
    }
    let expected: Vec<String> = (0..25).map(|n| format!("customers/p-{n:02}")).collect();
    assert_eq!(names, expected);
    // Evaluated after the purchase, p-15 has left.
    let later = client
        .list_segment_members(pb::ListSegmentMembersRequest {
            segment: "segments/dutch-non-buyers".into(),
            evaluation_time: at(now + 120),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(later.total_size, 24);
    assert!(!later.customers.contains(&"customers/p-15".to_owned()));
    // A token from elsewhere is refused.
    let status = client
        .list_segment_members(page("bm90IGEgdG9rZW4".into()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    server.stop().await.unwrap();
}

async fn export(
    client: &mut SegmentationServiceClient<Channel>,
    channel: pb::Channel,
    batch_size: i32,
) -> Vec<Vec<String>> {
    let mut stream = client
        .export_segment_members(pb::ExportSegmentMembersRequest {
            segment: "segments/everyone".into(),
            channel: channel as i32,
            evaluation_time: at(T),
            batch_size,
        })
        .await
        .unwrap()
        .into_inner();
    let mut batches = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        assert_eq!(message.segment_revision, 1);
        batches.push(message.customers);
    }
    batches
}

#[tokio::test]
async fn exports_honour_consent_and_objection() {
    let server = TestServer::start().await;
    population(&server).await;
    let mut client = segmentation(&server).await;
    client
        .create_segment(pb::CreateSegmentRequest {
            segment_id: "everyone".into(),
            segment: Some(segment("true")),
        })
        .await
        .unwrap();
    let names =
        |ids: &[&str]| -> Vec<String> { ids.iter().map(|id| format!("customers/{id}")).collect() };
    // e-nour granted every channel but objects to profiling: never exported.
    assert_eq!(
        export(&mut client, pb::Channel::Unspecified, 2).await,
        vec![
            names(&["a-ayse", "b-omar"]),
            names(&["c-reza", "d-lena"]),
            names(&["f-sam"])
        ]
    );
    assert_eq!(
        export(&mut client, pb::Channel::Email, 0).await,
        vec![names(&["a-ayse", "d-lena"])]
    );
    assert_eq!(
        export(&mut client, pb::Channel::Sms, 0).await,
        vec![names(&["b-omar"])]
    );
    assert_eq!(
        export(&mut client, pb::Channel::Ads, 0).await,
        vec![names(&["c-reza"])]
    );
    assert!(export(&mut client, pb::Channel::Push, 0).await.is_empty());
    let status = client
        .export_segment_members(pb::ExportSegmentMembersRequest {
            segment: "segments/nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn list_customers_takes_a_filter() {
    let server = TestServer::start().await;
    population(&server).await;
    let mut customers = server.customers().await;
    let list = |filter: &str, token: String| pb::ListCustomersRequest {
        page_size: 2,
        page_token: token,
        filter: filter.into(),
        evaluation_time: at(T),
    };
    let tr = customers
        .list_customers(list("customer.country == \"TR\"", String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tr.customers.len(), 1);
    assert_eq!(tr.customers[0].name, "customers/a-ayse");
    assert!(tr.next_page_token.is_empty());
    // Listing is not marketing: the objector is listed.
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = customers
            .list_customers(list("features.purchase_count >= 1", token))
            .await
            .unwrap()
            .into_inner();
        names.extend(page.customers.into_iter().map(|c| c.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        names,
        [
            "customers/a-ayse",
            "customers/b-omar",
            "customers/c-reza",
            "customers/e-nour"
        ]
    );
    let status = customers
        .list_customers(list("customer.age >", String::new()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn times_centuries_apart_do_not_overflow() {
    let server = TestServer::start().await;
    create(&server, "old-timer", pb::Customer::default())
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // 1680-01-01 and yesterday: their span does not fit nanoseconds in an i64.
    let mut first = purchase("first", "old-timer", 0, 100);
    first.occurred_at = at(-9_124_560_000);
    let mut second = purchase("second", "old-timer", 0, 100);
    second.occurred_at = at(now - 86_400);
    record(&server, vec![first, second], vec![]).await.unwrap();
    // 2262-01-01, near the end of what a timestamp can hold.
    let late = at(9_183_110_400);
    let features = server
        .customers()
        .await
        .get_customer_features(pb::GetCustomerFeaturesRequest {
            name: "customers/old-timer".into(),
            evaluation_time: late,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(features.purchase_count, 2);
    assert!(features.mean_gap_days.unwrap() > 200.0 * 365.0);
    // 236 years since the last purchase, but the mean gap is 346 years.
    assert_eq!(
        features.frequency_class,
        pb::FrequencyClass::RepeatCustomer as i32
    );
    let mut client = segmentation(&server).await;
    for evaluation_time in [late, at(-9_000_000_000), None] {
        let response = client
            .breakdown_customers(pb::BreakdownCustomersRequest {
                dimensions: vec!["features.frequency".into(), "features.rfm_segment".into()],
                filter: "features.mean_gap_days >= 0 || features.recency_days >= 0".into(),
                evaluation_time,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(response.total_count <= 1);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_member_page_token_holds_only_for_its_segment() {
    let server = TestServer::start().await;
    population(&server).await;
    let mut client = segmentation(&server).await;
    for (id, filter) in [
        ("everyone", "true"),
        ("buyers", "features.purchase_count >= 1"),
    ] {
        client
            .create_segment(pb::CreateSegmentRequest {
                segment_id: id.into(),
                segment: Some(segment(filter)),
            })
            .await
            .unwrap();
    }
    let members = |segment: &str, page_token: String| pb::ListSegmentMembersRequest {
        segment: format!("segments/{segment}"),
        evaluation_time: at(T),
        page_size: 2,
        page_token,
    };
    let first = client
        .list_segment_members(members("everyone", String::new()))
        .await
        .unwrap()
        .into_inner();
    let second = client
        .list_segment_members(members("everyone", first.next_page_token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.customers, ["customers/c-reza", "customers/d-lena"]);

    let status = client
        .list_segment_members(members("buyers", first.next_page_token.clone()))
        .await
        .unwrap_err();
    crate::customers::assert_token_of_another_request(&status);

    // A token of ListSegments is not one of ListSegmentMembers.
    let segments = client
        .list_segments(pb::ListSegmentsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = client
        .list_segment_members(members("everyone", segments.next_page_token.clone()))
        .await
        .unwrap_err();
    crate::customers::assert_token_of_another_request(&status);
    let status = client
        .list_segments(pb::ListSegmentsRequest {
            page_size: 1,
            page_token: first.next_page_token.clone(),
        })
        .await
        .unwrap_err();
    crate::customers::assert_token_of_another_request(&status);

    // Later pages are evaluated as of the first page's time.
    let mut later = members("everyone", first.next_page_token);
    later.evaluation_time = at(T + DAY);
    let status = client.list_segment_members(later).await.unwrap_err();
    assert_eq!(
        crate::customers::violated_fields(&status),
        ["evaluation_time"]
    );
    server.stop().await.unwrap();
}
