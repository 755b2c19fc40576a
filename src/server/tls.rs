//! TLS on the API listener: the rustls configuration, a server certificate
//! that is read again when its files change on disk, and the identity in a
//! verified client certificate (mTLS).
//!
//! Rotation: cert-manager and its kind renew a certificate by rewriting the
//! files in place. At most once a second, a new handshake looks at the
//! files' modification times and lengths; when they changed, the pair is
//! read and checked again, and the next connections get the new
//! certificate. A pair that does not load (half written, or a key that does
//! not match its certificate) is reported once and the previous certificate
//! stays in use. Connections already open keep the certificate they
//! started with.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// How often, at most, the certificate files are looked at.
const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The files TLS is configured with, all PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub certificate: PathBuf,
    /// The private key of the certificate.
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of the
    /// certificate authorities in this file (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// The crypto the server uses: rustls on ring.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS acceptor for `files`: the certificate (reloaded as it changes),
/// client certificates required when a client CA is given, and HTTP/2
/// offered through ALPN, which gRPC clients insist on.
pub fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let provider = provider();
    let certificate = RotatingCertificate::load(files, provider.clone())?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("cannot configure TLS")?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in read_certificates(path)? {
                roots
                    .add(certificate)
                    .with_context(|| format!("{}: not a usable CA certificate", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("{}: cannot verify clients with it", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(certificate));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The certificates of a PEM file, in order; an error when there are none.
fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate file", path.display()))?;
    if certificates.is_empty() {
        anyhow::bail!("{}: holds no certificate", path.display());
    }
    Ok(certificates)
}

/// The certificate and key in `files`, checked to belong together.
fn read_certified_key(files: &TlsFiles, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = read_certificates(&files.certificate)?;
    let pem =
        fs::read(&files.key).with_context(|| format!("cannot read {}", files.key.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .with_context(|| format!("{}: not a PEM private key", files.key.display()))?;
    CertifiedKey::from_der(chain, key, provider).with_context(|| {
        format!(
            "{} and {} are not a certificate and its key",
            files.certificate.display(),
            files.key.display()
        )
    })
}

/// What a file looked like when it was last read: a change of either
/// means it was rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    /// Its modification time.
    modified: Option<SystemTime>,
    /// Its length in bytes.
    len: u64,
}

impl FileStamp {
    fn of(path: &Path) -> io::Result<FileStamp> {
        // Follows symbolic links, so a Kubernetes secret volume, which swaps
        // a link to a new directory, counts as changed.
        let metadata = fs::metadata(path)?;
        Ok(FileStamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
        })
    }
}

/// The server certificate, read again when its files change.
#[derive(Debug)]
struct RotatingCertificate {
    /// The files.
    files: TlsFiles,
    /// Parses keys.
    provider: Arc<CryptoProvider>,
    /// The certificate in use and when the files were last looked at.
    state: Mutex<RotationState>,
}

/// The mutable part of a [`RotatingCertificate`].
#[derive(Debug)]
struct RotationState {
    /// The certificate handed to new connections.
    current: Arc<CertifiedKey>,
    /// The certificate's and the key's stamps when last read, successfully
    /// or not.
    stamps: Option<(FileStamp, FileStamp)>,
    /// When the stamps were last compared.
    checked_at: Instant,
}

impl RotatingCertificate {
    /// Reads the certificate for the first time; an error when it does not
    /// load, so that a misconfigured server does not start.
    fn load(files: &TlsFiles, provider: Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let stamps = Self::stamps(files).ok();
        let current = Arc::new(read_certified_key(files, &provider)?);
        Ok(RotatingCertificate {
            files: files.clone(),
            provider,
            state: Mutex::new(RotationState {
                current,
                stamps,
                checked_at: Instant::now(),
            }),
        })
    }

    fn stamps(files: &TlsFiles) -> io::Result<(FileStamp, FileStamp)> {
        Ok((
            FileStamp::of(&files.certificate)?,
            FileStamp::of(&files.key)?,
        ))
    }

    /// The certificate for a new connection, read again first when the files
    /// changed since they were last looked at, and that was long enough ago.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.checked_at.elapsed() < RECHECK_INTERVAL {
            return state.current.clone();
        }
        state.checked_at = Instant::now();
        let stamps = match Self::stamps(&self.files) {
            Ok(stamps) => Some(stamps),
            Err(error) => {
                // Mid-rename, for example: try again at the next check.
                tracing::warn!(%error, certificate = %self.files.certificate.display(), "cannot look at the certificate files, serving the previous certificate");
                return state.current.clone();
            }
        };
        if stamps == state.stamps {
            return state.current.clone();
        }
        state.stamps = stamps;
        match read_certified_key(&self.files, &self.provider) {
            Ok(reloaded) => {
                state.current = Arc::new(reloaded);
                tracing::info!(certificate = %self.files.certificate.display(), "certificate reloaded");
            }
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "cannot reload the certificate, serving the previous one"
                );
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for RotatingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The identity a client certificate names: its SPIFFE URI SAN, else its
/// first DNS SAN, else its common name. `None` when the certificate does
/// not parse or names none of these.
pub fn certificate_identity(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = X509Certificate::from_der(certificate.as_ref()).ok()?;
    let names = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|extension| extension.value.general_names.as_slice())
        .unwrap_or_default();
    let spiffe = names.iter().find_map(|name| match name {
        GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
        _ => None,
    });
    let dns = || {
        names.iter().find_map(|name| match name {
            GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        })
    };
    let common_name = || {
        parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|name| name.as_str().ok())
    };
    spiffe.or_else(dns).or_else(common_name).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_of(params: rcgen::CertificateParams) -> Option<String> {
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        certificate_identity(certificate.der())
    }

    fn params(names: &[&str], common_name: Option<&str>) -> rcgen::CertificateParams {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(common_name) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, common_name);
        }
        params
    }

    #[test]
    fn identity_is_the_spiffe_id_then_the_dns_name_then_the_common_name() {
        let mut spiffe = params(&["worker.example"], Some("worker"));
        spiffe.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.org/ns/shop/sa/worker".try_into().unwrap(),
        ));
        assert_eq!(
            identity_of(spiffe).as_deref(),
            Some("spiffe://example.org/ns/shop/sa/worker")
        );

        let mut other_uri = params(&["first.example", "second.example"], Some("worker"));
        other_uri.subject_alt_names.insert(
            0,
            rcgen::SanType::URI("https://example.org/worker".try_into().unwrap()),
        );
        assert_eq!(identity_of(other_uri).as_deref(), Some("first.example"));

        assert_eq!(
            identity_of(params(&[], Some("billing"))).as_deref(),
            Some("billing")
        );
        assert_eq!(identity_of(params(&[], None)), None);
    }
}
