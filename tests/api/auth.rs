//! Who may call what, against the real server: anonymous calls, scoped
//! static tokens, an access file changed on disk, JWTs against a JWKS
//! file, certificate identities over mTLS, open health, reflection in each
//! mode, and the audit events of the audited handlers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use segmentd::grpc::auth::{AuthConfig, Caller, JwtConfig, ReflectionMode, Scopes};
use segmentd::grpc::pb;
use segmentd::grpc::pb::customer_service_client::CustomerServiceClient;
use segmentd::grpc::pb::customer_service_server::CustomerService as _;
use segmentd::grpc::pb::persona_service_client::PersonaServiceClient;
use segmentd::grpc::pb::persona_service_server::PersonaService as _;
use segmentd::grpc::pb::segmentation_service_client::SegmentationServiceClient;
use segmentd::grpc::pb::segmentation_service_server::SegmentationService as _;
use segmentd::grpc::{ApiLimits, EngineSlot};
use sha2::{Digest as _, Sha256};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_types::StatusExt as _;

use crate::customers::full_customer;
use crate::support::{config, TestServer};

/// A token that may read customers, segments and personas.
const READ: &str = "read-token-1f3a";
/// A token that may do everything.
const ADMIN: &str = "admin-token-9c2e";
const READ_SCOPES: &[&str] = &["customers.read", "segments.read", "personas.read"];
const ALL_SCOPES: &[&str] = &[
    "customers.read",
    "customers.write",
    "customers.erase",
    "activity.write",
    "segments.read",
    "segments.manage",
    "personas.read",
    "personas.manage",
    "export",
    "admin.backup",
];

/// A test signing key whose public half is in the JWKS, and that half.
const KEY_A: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIA+UV0H16LXgCe9SJ9eYGcdOXt4GEXmaL/kmSimFcdiz
-----END PRIVATE KEY-----
";
const KEY_A_X: &str = "u04If1AkNZ68IfT0aGgGlt9NFpj4UYKOYMJtYsykhGk";
/// A test signing key the server does not know.
const KEY_B: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAmik7HOhcPiPMBEMWg2ErixAeccIIVWnK78VbB7xGjv
-----END PRIVATE KEY-----
";
const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "segmentd";

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// An access file of `(principal, token, scopes)`.
fn access_file(tokens: &[(&str, &str, &[&str])]) -> String {
    let entries: Vec<_> = tokens
        .iter()
        .map(|(principal, token, scopes)| {
            serde_json::json!({"principal": principal, "sha256": sha256_hex(token), "scopes": scopes})
        })
        .collect();
    serde_json::json!({ "tokens": entries }).to_string()
}

/// A serving server whose data and access files live in `dir`.
async fn start(dir: &Path, auth: AuthConfig) -> TestServer {
    let mut config = config(&dir.join("data"));
    config.auth = auth;
    let server = TestServer::spawn(config).await;
    server.wait_serving().await;
    server
}

/// A server with the read and admin tokens in an access file in `dir`.
async fn start_with_tokens(dir: &Path, reflection: Option<ReflectionMode>) -> TestServer {
    let path = dir.join("access.json");
    let tokens = access_file(&[("reader", READ, READ_SCOPES), ("admin", ADMIN, ALL_SCOPES)]);
    std::fs::write(&path, tokens).unwrap();
    let auth = AuthConfig {
        access_file: Some(path),
        reflection,
        ..AuthConfig::default()
    };
    start(dir, auth).await
}

fn get(name: &str) -> pb::GetCustomerRequest {
    pb::GetCustomerRequest { name: name.into() }
}

/// Asserts `status` is a refusal with `code`, `reason` and, when the
/// method needs one, the scope in its ErrorInfo.
fn assert_refused(status: &Status, code: Code, reason: &str, method: &str, scope: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "segmentd");
    assert_eq!(
        info.metadata.get("method").map(String::as_str),
        Some(method)
    );
    assert_eq!(info.metadata.get("scope").map(String::as_str), Some(scope));
}

#[tokio::test]
async fn anonymous_calls_are_refused_and_health_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path(), None).await;
    assert_eq!(server.health("").await, ServingStatus::Serving);

    let status = server
        .customers()
        .await
        .get_customer(get("customers/a"))
        .await
        .unwrap_err();
    let method = "/segmentd.v1.CustomerService/GetCustomer";
    assert_refused(
        &status,
        Code::Unauthenticated,
        "MISSING_CREDENTIALS",
        method,
        "customers.read",
    );
    assert!(
        status.message().contains("authorization: Bearer"),
        "{}",
        status.message()
    );

    let mut client = CustomerServiceClient::new(server.with_token("not-a-token").await);
    let status = client.get_customer(get("customers/a")).await.unwrap_err();
    assert_refused(
        &status,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
        method,
        "customers.read",
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_read_only_token_reads_but_cannot_erase_export_or_change_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path(), None).await;
    let request = pb::CreateCustomerRequest {
        customer_id: "c1".into(),
        customer: Some(full_customer()),
        request_id: String::new(),
    };
    let admin = server.with_token(ADMIN).await;
    CustomerServiceClient::new(admin.clone())
        .create_customer(request)
        .await
        .unwrap();
    let segment = pb::CreateSegmentRequest {
        segment_id: "everyone".into(),
        segment: Some(pb::Segment {
            display_name: "Everyone".into(),
            filter: "true".into(),
            ..Default::default()
        }),
    };
    SegmentationServiceClient::new(admin)
        .create_segment(segment)
        .await
        .unwrap();

    let reader = server.with_token(READ).await;
    let mut customers = CustomerServiceClient::new(reader.clone());
    let mut segments = SegmentationServiceClient::new(reader.clone());
    let mut personas = PersonaServiceClient::new(reader);
    let read = customers
        .get_customer(get("customers/c1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.name, "customers/c1");
    segments
        .get_segment(pb::GetSegmentRequest {
            name: "segments/everyone".into(),
        })
        .await
        .unwrap();
    personas
        .list_personas(pb::ListPersonasRequest::default())
        .await
        .unwrap();

    let denied = |method: &str, scope: &str, status: Status| {
        let path = format!("/segmentd.v1.{method}");
        assert_refused(
            &status,
            Code::PermissionDenied,
            "MISSING_SCOPE",
            &path,
            scope,
        );
        assert!(status.message().contains(scope), "{}", status.message());
    };
    let erase = pb::DeleteCustomerRequest {
        name: "customers/c1".into(),
        ..Default::default()
    };
    denied(
        "CustomerService/DeleteCustomer",
        "customers.erase",
        customers.delete_customer(erase).await.unwrap_err(),
    );
    let export = pb::ExportSegmentMembersRequest {
        segment: "segments/everyone".into(),
        ..Default::default()
    };
    let status = segments.export_segment_members(export).await.err().unwrap();
    denied("SegmentationService/ExportSegmentMembers", "export", status);
    let members = pb::ListSegmentMembersRequest {
        segment: "segments/everyone".into(),
        ..Default::default()
    };
    denied(
        "SegmentationService/ListSegmentMembers",
        "export",
        segments.list_segment_members(members).await.unwrap_err(),
    );
    let status = personas
        .export_persona_assignments(pb::ExportPersonaAssignmentsRequest::default())
        .await
        .err()
        .unwrap();
    denied("PersonaService/ExportPersonaAssignments", "export", status);
    let replace = pb::ReplacePersonaCatalogRequest::default();
    denied(
        "PersonaService/ReplacePersonaCatalog",
        "personas.manage",
        personas.replace_persona_catalog(replace).await.unwrap_err(),
    );
    let reset = pb::ResetPersonaCatalogRequest::default();
    denied(
        "PersonaService/ResetPersonaCatalog",
        "personas.manage",
        personas.reset_persona_catalog(reset).await.unwrap_err(),
    );
    let delete = pb::DeleteSegmentRequest {
        name: "segments/everyone".into(),
        ..Default::default()
    };
    denied(
        "SegmentationService/DeleteSegment",
        "segments.manage",
        segments.delete_segment(delete).await.unwrap_err(),
    );

    // Still there.
    customers.get_customer(get("customers/c1")).await.unwrap();
    server.stop().await.unwrap();
}

/// The code a GetCustomer of a customer that does not exist gets with
/// `token`: NOT_FOUND once the token is admitted.
async fn get_code(server: &TestServer, token: &str) -> Code {
    let mut client = CustomerServiceClient::new(server.with_token(token).await);
    client
        .get_customer(get("customers/nobody"))
        .await
        .unwrap_err()
        .code()
}

/// Waits (at most 10 s) until a GetCustomer with `token` gets `code`.
async fn eventually(server: &TestServer, token: &str, code: Code) {
    for _ in 0..100 {
        if get_code(server, token).await == code {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("a call with the token never got {code:?}");
}

#[tokio::test]
async fn an_access_file_changed_on_disk_takes_effect_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path(), None).await;
    let path = dir.path().join("access.json");
    assert_eq!(get_code(&server, READ).await, Code::NotFound);
    assert_eq!(get_code(&server, "new-token").await, Code::Unauthenticated);

    std::fs::write(
        &path,
        access_file(&[("newcomer", "new-token", &["customers.read"])]),
    )
    .unwrap();
    eventually(&server, "new-token", Code::NotFound).await;
    assert_eq!(get_code(&server, READ).await, Code::Unauthenticated);

    // A broken file is refused; the last good one stays in force.
    std::fs::write(&path, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(get_code(&server, "new-token").await, Code::NotFound);
    server.stop().await.unwrap();
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT with `claims`, signed by the PEM `key` and naming key `kid`.
fn jwt(key: &str, kid: &str, claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_ed_pem(key.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// Claims that the server accepts, with `scope`.
fn claims(scope: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "svc-reporting",
        "exp": now() + 600, "nbf": now() - 10, "scope": scope,
    })
}

#[tokio::test]
async fn jwts_signed_by_a_key_of_the_jwks_are_accepted_and_others_refused() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let set = serde_json::json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": KEY_A_X, "kid": "a", "alg": "EdDSA", "use": "sig"}
    ]});
    std::fs::write(&jwks, set.to_string()).unwrap();
    let auth = AuthConfig {
        jwt: Some(JwtConfig {
            jwks,
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
        }),
        ..AuthConfig::default()
    };
    let server = start(dir.path(), auth).await;

    let good = jwt(KEY_A, "a", claims("openid customers.read"));
    assert_eq!(get_code(&server, &good).await, Code::NotFound);
    // Twice: the second time from the verified tokens remembered.
    assert_eq!(get_code(&server, &good).await, Code::NotFound);
    let mut listed = claims("");
    listed["scp"] = serde_json::json!(["customers.read"]);
    assert_eq!(
        get_code(&server, &jwt(KEY_A, "a", listed)).await,
        Code::NotFound
    );
    let too_few = jwt(KEY_A, "a", claims("personas.read"));
    assert_eq!(get_code(&server, &too_few).await, Code::PermissionDenied);

    let mut wrong_audience = claims("customers.read");
    wrong_audience["aud"] = "someone-else".into();
    let mut wrong_issuer = claims("customers.read");
    wrong_issuer["iss"] = "https://elsewhere.example".into();
    let mut expired = claims("customers.read");
    expired["exp"] = (now() - 600).into();
    let refused = [
        (jwt(KEY_A, "a", wrong_audience), "audience"),
        (jwt(KEY_A, "a", wrong_issuer), "issuer"),
        (jwt(KEY_A, "a", expired), "expired"),
        (jwt(KEY_B, "a", claims("customers.read")), "signature"),
        (jwt(KEY_B, "b", claims("customers.read")), "kid"),
    ];
    for (token, why) in refused {
        let mut client = CustomerServiceClient::new(server.with_token(&token).await);
        let status = client
            .get_customer(get("customers/nobody"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{why}: {status:?}");
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "INVALID_CREDENTIALS"
        );
        assert!(
            status.message().contains(why),
            "{why}: {}",
            status.message()
        );
    }
    server.stop().await.unwrap();
}

/// The services reflection lists on `channel`, or the status it refuses with.
async fn reflected_services<T>(channel: T) -> Result<Vec<String>, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: tonic::transport::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::transport::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(channel);
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let answer = answers.message().await?.expect("an answer");
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect()),
        other => panic!("not a service list: {other:?}"),
    }
}

#[tokio::test]
async fn reflection_is_open_authenticated_or_off_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path(), None).await;
    let status = reflected_services(server.channel().await)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let services = reflected_services(server.with_token(READ).await)
        .await
        .unwrap();
    assert!(
        services.contains(&"segmentd.v1.CustomerService".to_owned()),
        "{services:?}"
    );
    server.stop().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path(), Some(ReflectionMode::Open)).await;
    assert!(reflected_services(server.channel().await).await.is_ok());
    server.stop().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let off = AuthConfig {
        reflection: Some(ReflectionMode::Off),
        ..AuthConfig::default()
    };
    let server = start(dir.path(), off).await;
    let status = reflected_services(server.channel().await)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    server.stop().await.unwrap();

    // Without authentication, reflection is open by default.
    let server = TestServer::start().await;
    assert!(reflected_services(server.channel().await).await.is_ok());
    server.stop().await.unwrap();
}

/// The fields of the events logged on the `audit` target.
#[derive(Clone, Default)]
struct AuditEvents(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AuditEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(BTreeMap<String, String>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.insert(field.name().to_owned(), format!("{value:?}"));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.insert(field.name().to_owned(), value.to_owned());
            }
        }
        if event.metadata().target() != "audit" {
            return;
        }
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
}

/// `request` as `principal` made it.
fn by<T>(principal: &str, request: T) -> Request<T> {
    let mut request = Request::new(request);
    request.extensions_mut().insert(Caller {
        principal: principal.into(),
        scopes: Scopes::default(),
    });
    request
}

#[tokio::test]
async fn every_change_erasure_and_export_is_audited_without_personal_data() {
    use tracing_subscriber::layer::SubscriberExt as _;

    let events = AuditEvents::default();
    let subscriber = tracing_subscriber::registry().with(events.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    // The engine is not open: every call ends UNAVAILABLE, and is audited.
    let limits = ApiLimits {
        max_page_size: 10,
        max_batch_size: 10,
        max_events_per_batch: 10,
    };
    let slot = EngineSlot::default();
    let customers = segmentd::grpc::customers::CustomerApi::new(slot.clone(), limits);
    let segments = segmentd::grpc::segmentation::SegmentationApi::new(slot.clone(), limits);
    let personas = segmentd::grpc::personas::PersonaApi::new(slot);
    let erase = pb::DeleteCustomerRequest {
        name: "customers/alice@example.org".into(),
        ..Default::default()
    };
    let _ = customers.delete_customer(by("dpo", erase)).await;
    let create = pb::CreateSegmentRequest {
        segment_id: "vip".into(),
        ..Default::default()
    };
    let _ = segments.create_segment(by("marketing", create)).await;
    let update = pb::UpdateSegmentRequest {
        segment: Some(pb::Segment {
            name: "segments/vip".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let _ = segments.update_segment(Request::new(update)).await;
    let delete = pb::DeleteSegmentRequest {
        name: "segments/vip".into(),
        ..Default::default()
    };
    let _ = segments.delete_segment(Request::new(delete)).await;
    let members = pb::ListSegmentMembersRequest {
        segment: "segments/vip".into(),
        ..Default::default()
    };
    let _ = segments.list_segment_members(Request::new(members)).await;
    let export = pb::ExportSegmentMembersRequest {
        segment: "segments/vip".into(),
        ..Default::default()
    };
    let _ = segments
        .export_segment_members(Request::new(export))
        .await
        .is_ok();
    let _ = personas
        .replace_persona_catalog(Request::new(Default::default()))
        .await;
    let _ = personas
        .reset_persona_catalog(Request::new(Default::default()))
        .await;
    let assignments = pb::ExportPersonaAssignmentsRequest {
        persona_ids: vec!["VIP_FREQUENT".into()],
        ..Default::default()
    };
    let _ = personas
        .export_persona_assignments(Request::new(assignments))
        .await
        .is_ok();

    let events = events.0.lock().unwrap().clone();
    let logged: Vec<[&str; 4]> = events
        .iter()
        .map(|event| {
            ["principal", "method", "resource", "outcome"].map(|field| event[field].as_str())
        })
        .collect();
    let erased = audit_customer("customers/alice@example.org");
    assert_eq!(
        logged,
        [
            ["dpo", "DeleteCustomer", erased.as_str(), "UNAVAILABLE"],
            ["marketing", "CreateSegment", "segments/vip", "UNAVAILABLE"],
            ["anonymous", "UpdateSegment", "segments/vip", "UNAVAILABLE"],
            ["anonymous", "DeleteSegment", "segments/vip", "UNAVAILABLE"],
            [
                "anonymous",
                "ListSegmentMembers",
                "segments/vip",
                "UNAVAILABLE"
            ],
            [
                "anonymous",
                "ExportSegmentMembers",
                "segments/vip",
                "UNAVAILABLE"
            ],
            [
                "anonymous",
                "ReplacePersonaCatalog",
                "personaCatalog",
                "UNAVAILABLE"
            ],
            [
                "anonymous",
                "ResetPersonaCatalog",
                "personaCatalog",
                "UNAVAILABLE"
            ],
            [
                "anonymous",
                "ExportPersonaAssignments",
                "personas/VIP_FREQUENT",
                "UNAVAILABLE"
            ],
        ]
    );
    assert!(!erased.contains("alice"));
}

/// What an auditor computes for a customer name:
/// `printf %s customers/ID | sha256sum | cut -c1-16`.
fn audit_customer(name: &str) -> String {
    format!("customers/sha256:{}", &sha256_hex(name)[..16])
}

/// A CA, a server certificate for 127.0.0.1 and client certificates, PEM.
struct TestCa {
    /// The authority.
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A certificate for `sans` (a URI SAN when one starts with spiffe://),
    /// and its key.
    fn issue(&self, sans: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        for san in sans {
            params
                .subject_alt_names
                .push(match san.strip_prefix("spiffe://") {
                    Some(_) => rcgen::SanType::URI((*san).try_into().unwrap()),
                    None => rcgen::SanType::IpAddress(san.parse().unwrap()),
                });
        }
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        (
            params.signed_by(&key, &self.ca).unwrap().pem(),
            key.serialize_pem(),
        )
    }
}

#[tokio::test]
async fn over_mtls_the_certificate_identity_is_the_caller_with_the_scopes_the_file_maps() {
    let dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = TestCa {
        ca: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
    };
    let (certificate, key) = ca.issue(&["127.0.0.1"], rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("server.pem"), certificate).unwrap();
    std::fs::write(path("server.key"), key).unwrap();
    std::fs::write(path("ca.pem"), ca.ca.pem()).unwrap();
    let eraser = "spiffe://example.org/ns/crm/sa/eraser";
    let access = serde_json::json!({
        "tokens": [{"principal": "reader", "sha256": sha256_hex(READ), "scopes": READ_SCOPES}],
        "certificates": [{"identity": eraser, "scopes": ["customers.erase"]}],
    });
    std::fs::write(path("access.json"), access.to_string()).unwrap();

    let mut config = config(&path("data"));
    config.auth.access_file = Some(path("access.json"));
    config.transport.tls = Some(segmentd::server::TlsFiles {
        certificate: path("server.pem"),
        key: path("server.key"),
        client_ca: Some(path("ca.pem")),
    });
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = TestServer::spawn_on(
        segmentd::server::Listeners {
            api,
            health: None,
            metrics: None,
        },
        config,
    );
    let connect = |client: &str| {
        let (certificate, key) = ca.issue(&[client], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca.ca.pem()))
            .domain_name("127.0.0.1")
            .identity(tonic::transport::Identity::from_pem(certificate, key));
        let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", server.addr));
        endpoint.unwrap().tls_config(tls).unwrap()
    };
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(connect(eraser).connect_lazy());
    for _ in 0..600 {
        let request = tonic_health::pb::HealthCheckRequest::default();
        if let Ok(answer) = health.check(request).await {
            if answer.into_inner().status() == ServingStatus::Serving {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut as_eraser = CustomerServiceClient::new(connect(eraser).connect().await.unwrap());
    let erase = pb::DeleteCustomerRequest {
        name: "customers/nobody".into(),
        ..Default::default()
    };
    assert_eq!(
        as_eraser.delete_customer(erase).await.unwrap_err().code(),
        Code::NotFound
    );
    let status = as_eraser
        .get_customer(get("customers/nobody"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains(eraser), "{}", status.message());

    // A certificate of the CA that the file does not map may do nothing;
    // a token over TLS is checked as over plaintext.
    let stranger = connect("spiffe://example.org/ns/crm/sa/stranger")
        .connect()
        .await
        .unwrap();
    let mut as_stranger = CustomerServiceClient::new(stranger.clone());
    let status = as_stranger
        .get_customer(get("customers/nobody"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let bearer = format!("Bearer {READ}")
        .parse::<tonic::metadata::MetadataValue<_>>()
        .unwrap();
    let mut request = Request::new(get("customers/nobody"));
    request.metadata_mut().insert("authorization", bearer);
    assert_eq!(
        as_stranger.get_customer(request).await.unwrap_err().code(),
        Code::NotFound
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_client_commands_send_their_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path(), None).await;
    let endpoint = || segmentd::client::channel::endpoint(&server.addr.to_string(), None).unwrap();
    let token = |token: &str| segmentd::client::channel::BearerToken(token.to_owned());
    let out = dir.path().join("store.backup");
    let backup = |token: Option<segmentd::client::channel::BearerToken>| {
        let out = out.clone();
        async move {
            segmentd::client::backup::run_at(
                endpoint(),
                token.as_ref(),
                &out,
                std::time::Duration::from_secs(5),
            )
            .await
        }
    };

    let anonymous = backup(None).await.unwrap_err().to_string();
    assert!(
        anonymous.contains("Unauthenticated")
            || anonymous.contains("UNAUTHENTICATED")
            || anonymous.contains("credentials"),
        "{anonymous}"
    );
    let reader = backup(Some(token(READ))).await.unwrap_err().to_string();
    assert!(reader.contains("admin.backup"), "{reader}");
    assert!(!out.exists(), "a refused backup leaves no file");
    backup(Some(token(ADMIN))).await.unwrap();
    assert!(out.exists());

    let customers = dir.path().join("customers.csv");
    std::fs::write(&customers, "customer_id,birth_date\nc-1,1990-01-02\n").unwrap();
    let import = |token: Option<segmentd::client::channel::BearerToken>| {
        segmentd::client::import::ImportOptions {
            addr: server.addr.to_string(),
            customers: Some(customers.clone()),
            activity: None,
            strict: true,
            batch_size: 10,
            token,
        }
    };
    let refused = segmentd::client::import::run_at(endpoint(), &import(Some(token(READ))))
        .await
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("customers.write"),
        "{refused:#}"
    );
    let (summary, _) = segmentd::client::import::run_at(endpoint(), &import(Some(token(ADMIN))))
        .await
        .unwrap();
    assert_eq!(summary.unwrap().created, 1);
}
