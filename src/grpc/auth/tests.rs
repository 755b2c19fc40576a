//! The layer in front of a stand-in service that answers with the caller
//! it was given: tokens, certificate identities (a [`Peer`] inserted as
//! TLS would), open methods and refusals.

use std::convert::Infallible;

use http::{HeaderValue, Request, Response};
use sha2::{Digest as _, Sha256};
use tonic::Code;
use tower::{Layer as _, ServiceExt as _};

use super::*;

const GET: &str = "/segmentd.v1.CustomerService/GetCustomer";
const DELETE: &str = "/segmentd.v1.CustomerService/DeleteCustomer";
const REFLECTION: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";

fn hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// An authenticator over an access file with a read-only token and a
/// mapped certificate, and the directory that holds the file.
fn authenticator(reflection: Option<ReflectionMode>) -> (Authenticator, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.json");
    let json = format!(
        r#"{{
            "tokens": [{{"principal": "reader", "sha256": "{}", "scopes": ["customers.read"]}}],
            "certificates": [{{"identity": "spiffe://example.org/eraser", "scopes": ["customers.erase"]}}]
        }}"#,
        hex("read-token")
    );
    std::fs::write(&path, json).unwrap();
    let config = AuthConfig {
        access_file: Some(path),
        reflection,
        ..AuthConfig::default()
    };
    (Authenticator::load(&config).unwrap().unwrap(), dir)
}

/// What a call to `method` gets: the code (from the headers) and the
/// principal the service behind saw.
async fn call(
    authenticator: Option<Authenticator>,
    method: &str,
    token: Option<&str>,
    peer: Option<Peer>,
) -> (Code, Option<String>) {
    let behind = tower::service_fn(|request: Request<()>| async move {
        let principal = request
            .extensions()
            .get::<Caller>()
            .map(|caller| caller.principal.clone());
        Ok::<_, Infallible>(Response::new(principal))
    });
    let service = AuthLayer::with(authenticator).layer(behind);
    let mut request = Request::builder().uri(method).body(()).unwrap();
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        request.headers_mut().insert("authorization", value);
    }
    if let Some(peer) = peer {
        request.extensions_mut().insert(peer);
    }
    let response = service.oneshot(request).await.unwrap();
    let code = response
        .headers()
        .get("grpc-status")
        .map_or(Code::Ok, |code| Code::from_bytes(code.as_bytes()));
    (code, response.into_body())
}

fn certificate(identity: &str) -> Peer {
    Peer {
        remote_addr: None,
        certificate_identity: Some(identity.to_owned()),
    }
}

#[tokio::test]
async fn a_token_is_admitted_for_its_scopes_only() {
    let (auth, _dir) = authenticator(None);
    assert_eq!(
        call(Some(auth), GET, Some("read-token"), None).await,
        (Code::Ok, Some("reader".into()))
    );
    let (auth, _dir) = authenticator(None);
    assert_eq!(
        call(Some(auth), DELETE, Some("read-token"), None).await.0,
        Code::PermissionDenied
    );
    let (auth, _dir) = authenticator(None);
    assert_eq!(
        call(Some(auth), GET, Some("guess"), None).await.0,
        Code::Unauthenticated
    );
    let (auth, _dir) = authenticator(None);
    assert_eq!(
        call(Some(auth), GET, None, None).await.0,
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn a_certificate_identity_is_mapped_to_its_scopes() {
    let (auth, _dir) = authenticator(None);
    let eraser = certificate("spiffe://example.org/eraser");
    assert_eq!(
        call(Some(auth), DELETE, None, Some(eraser.clone())).await,
        (Code::Ok, Some("spiffe://example.org/eraser".into()))
    );
    let (auth, _dir) = authenticator(None);
    assert_eq!(
        call(Some(auth), GET, None, Some(eraser.clone())).await.0,
        Code::PermissionDenied
    );
    // A certificate the file does not list is known but may do nothing.
    let (auth, _dir) = authenticator(None);
    let stranger = certificate("spiffe://example.org/stranger");
    assert_eq!(
        call(Some(auth), GET, None, Some(stranger)).await.0,
        Code::PermissionDenied
    );
    // A bad token is refused even with a good certificate.
    let (auth, _dir) = authenticator(None);
    assert_eq!(
        call(Some(auth), DELETE, Some("guess"), Some(eraser))
            .await
            .0,
        Code::Unauthenticated
    );
    // Without TLS there is a peer but no identity.
    let (auth, _dir) = authenticator(None);
    let plain = Peer::default();
    assert_eq!(
        call(Some(auth), DELETE, None, Some(plain)).await.0,
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn health_is_open_and_reflection_follows_its_mode() {
    let (auth, _dir) = authenticator(None);
    assert_eq!(
        call(Some(auth), "/grpc.health.v1.Health/Check", None, None).await,
        (Code::Ok, None)
    );
    let (auth, _dir) = authenticator(None);
    assert_eq!(
        call(Some(auth), REFLECTION, None, None).await.0,
        Code::Unauthenticated
    );
    let (auth, _dir) = authenticator(None);
    assert_eq!(
        call(Some(auth), REFLECTION, Some("read-token"), None)
            .await
            .0,
        Code::Ok
    );
    let (auth, _dir) = authenticator(Some(ReflectionMode::Open));
    assert_eq!(call(Some(auth), REFLECTION, None, None).await.0, Code::Ok);
}

#[tokio::test]
async fn an_unlisted_method_is_denied_and_everything_passes_when_off() {
    let (auth, _dir) = authenticator(None);
    let unlisted = "/segmentd.v1.AdminService/Anything";
    assert_eq!(
        call(Some(auth), unlisted, Some("read-token"), None).await.0,
        Code::PermissionDenied
    );
    assert_eq!(call(None, DELETE, None, None).await, (Code::Ok, None));
}

#[test]
fn bearer_tokens_are_read_from_the_header() {
    assert_eq!(bearer_token(b"Bearer abc"), Some("abc"));
    assert_eq!(bearer_token(b"bearer  abc "), Some("abc"));
    assert_eq!(bearer_token(b"Basic abc"), None);
    assert_eq!(bearer_token(b"Bearer "), None);
    assert_eq!(bearer_token(b"abc"), None);
}

#[test]
fn reflection_defaults_to_open_without_authentication_and_closed_with_it() {
    let off = AuthConfig::default();
    assert!(!off.enabled());
    assert_eq!(off.reflection(), ReflectionMode::Open);
    let on = AuthConfig {
        access_file: Some("access.json".into()),
        ..AuthConfig::default()
    };
    assert!(on.enabled());
    assert_eq!(on.reflection(), ReflectionMode::Authenticated);
}

/// Log lines written while a test runs, for a thread-local subscriber.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_refused_erasure_is_audited_and_a_refused_read_is_not() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let (authenticator, _dir) = authenticator(None);
    let layer = AuthLayer::with(Some(authenticator));
    for (method, token) in [(DELETE, None), (DELETE, Some("read-token")), (GET, None)] {
        let behind =
            tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
        let mut request = Request::builder().uri(method).body(()).unwrap();
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
            request.headers_mut().insert("authorization", value);
        }
        let response = layer.layer(behind).oneshot(request).await.unwrap();
        assert!(response.headers().contains_key("grpc-status"));
    }

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let audited: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["target"] == "audit")
        .map(|event| event["fields"].clone())
        .collect();
    let fields: Vec<[&str; 4]> = audited
        .iter()
        .map(|event| {
            ["principal", "method", "resource", "outcome"]
                .map(|field| event[field].as_str().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        fields,
        [
            ["unauthenticated", "DeleteCustomer", "-", "UNAUTHENTICATED"],
            ["reader", "DeleteCustomer", "-", "PERMISSION_DENIED"],
        ]
    );
}
