//! Who may call what. A tower layer in front of every service reads the
//! caller's credentials, finds the scope the method needs in the one table
//! of [`scopes`], and either refuses the call or passes it on with the
//! [`Caller`] in the request's extensions.
//!
//! Credentials, in this order:
//! - `authorization: Bearer <token>` with a static token of the access
//!   file ([`access_file`], kept as SHA-256 hashes);
//! - the same header with a JWT signed by a key of the JWKS file ([`jwt`]);
//! - without the header, the identity of the client's verified TLS
//!   certificate (the connection's [`Peer`]) as the access file maps it.
//!
//! A bad token is refused, never passed over for the certificate. With no
//! access file and no JWKS configured, authentication is off: every call
//! passes, and start-up says so loudly. docs/access.md is the operator's
//! guide.

mod access_file;
mod jwt;
mod layer;
mod refusal;
mod reload;
pub mod scopes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::HeaderMap;
use sha2::{Digest as _, Sha256};

pub use layer::{AuthLayer, AuthService};
pub use scopes::{Access, Scope, Scopes};

use self::access_file::AccessFile;
use self::jwt::JwtVerifier;
use self::refusal::Refusal;
use self::reload::Watched;
use super::peer::Peer;

/// Who made a call, as authentication established it; in the extensions of
/// every request that needed and passed a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's principal, the JWT's `sub`, or the certificate identity.
    pub principal: String,
    /// What the caller may do.
    pub scopes: Scopes,
}

/// Whether server reflection is served, and to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReflectionMode {
    /// To anyone.
    Open,
    /// To callers with any valid credential.
    Authenticated,
    /// Not at all.
    Off,
}

/// Where JWTs are checked against.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The JWKS file of the issuer's public keys.
    pub jwks: PathBuf,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry.
    pub audience: String,
}

/// How callers are authenticated; the default is off.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The access file: hashed static tokens and certificate identities.
    pub access_file: Option<PathBuf>,
    /// JWT checking.
    pub jwt: Option<JwtConfig>,
    /// Reflection; when `None`, open without authentication and
    /// authenticated with it.
    pub reflection: Option<ReflectionMode>,
    /// How often the access and JWKS files are looked at for changes.
    pub reload_interval: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_file: None,
            jwt: None,
            reflection: None,
            reload_interval: Duration::from_secs(1),
        }
    }
}

impl AuthConfig {
    /// Whether callers must authenticate: an access file or a JWKS is set.
    pub fn enabled(&self) -> bool {
        self.access_file.is_some() || self.jwt.is_some()
    }

    /// The reflection mode in force.
    pub fn reflection(&self) -> ReflectionMode {
        match self.reflection {
            Some(mode) => mode,
            None if self.enabled() => ReflectionMode::Authenticated,
            None => ReflectionMode::Open,
        }
    }
}

/// The credentials in force, and the checks.
struct Authenticator {
    /// The access file, when configured.
    access: Option<Watched<AccessFile>>,
    /// JWT checking, when configured.
    jwt: Option<JwtVerifier>,
    /// Whether reflection needs credentials.
    reflection: ReflectionMode,
}

impl Authenticator {
    /// Reads the configured files; `None` when authentication is off.
    fn load(config: &AuthConfig) -> anyhow::Result<Option<Authenticator>> {
        if !config.enabled() {
            return Ok(None);
        }
        let access = config
            .access_file
            .as_deref()
            .map(|path| Watched::load(path, "access file", AccessFile::parse))
            .transpose()?;
        let jwt = config.jwt.as_ref().map(JwtVerifier::load).transpose()?;
        Ok(Some(Authenticator {
            access,
            jwt,
            reflection: config.reflection(),
        }))
    }

    /// Reads both files again when they change, until the authenticator
    /// is dropped.
    fn watch(self: &Arc<Self>, interval: Duration) {
        let authenticator: Weak<Authenticator> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(authenticator) = authenticator.upgrade() else {
                    return;
                };
                let reloaded = tokio::task::spawn_blocking(move || {
                    if let Some(access) = &authenticator.access {
                        access.reload_if_changed();
                    }
                    if let Some(jwt) = &authenticator.jwt {
                        jwt.reload_if_changed();
                    }
                });
                if reloaded.await.is_err() {
                    return;
                }
            }
        });
    }

    /// Whether a call to `method` may go on: `Ok(Some(caller))` when it
    /// needed and passed a check, `Ok(None)` when it needs none.
    fn admit(
        &self,
        method: &str,
        headers: &HeaderMap,
        peer: Option<&Peer>,
    ) -> Result<Option<Caller>, Refusal> {
        let access = scopes::access(method);
        match access {
            Some(Access::Open) => return Ok(None),
            Some(Access::Reflection) if self.reflection != ReflectionMode::Authenticated => {
                return Ok(None)
            }
            _ => {}
        }
        let caller = self.identify(headers, peer)?;
        match access {
            Some(Access::Scope(scope)) if !caller.scopes.contains(scope) => {
                Err(Refusal::MissingScope {
                    principal: caller.principal,
                    scope,
                })
            }
            None => Err(Refusal::UnlistedMethod {
                principal: caller.principal,
            }),
            _ => Ok(Some(caller)),
        }
    }

    /// The caller the credentials name.
    fn identify(&self, headers: &HeaderMap, peer: Option<&Peer>) -> Result<Caller, Refusal> {
        let Some(authorization) = headers.get(http::header::AUTHORIZATION) else {
            let identity = peer.and_then(|peer| peer.certificate_identity.as_deref());
            return match identity {
                Some(identity) => Ok(self.certificate_caller(identity)),
                None => Err(Refusal::MissingCredentials),
            };
        };
        let token = bearer_token(authorization.as_bytes()).ok_or(Refusal::InvalidCredentials(
            "the authorization metadata is not \"Bearer <token>\"",
        ))?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(caller) = self
            .access
            .as_ref()
            .and_then(|access| access.current().token(&hash).cloned())
        {
            return Ok(caller);
        }
        match &self.jwt {
            Some(jwt) if token.matches('.').count() == 2 => jwt
                .verify(token, &hash)
                .map_err(Refusal::InvalidCredentials),
            _ => Err(Refusal::InvalidCredentials("the token is not known")),
        }
    }

    /// The caller of a verified certificate: as the access file maps it,
    /// else known but with no scope.
    fn certificate_caller(&self, identity: &str) -> Caller {
        let mapped = self
            .access
            .as_ref()
            .and_then(|access| access.current().certificate(identity).cloned());
        mapped.unwrap_or_else(|| Caller {
            principal: identity.to_owned(),
            scopes: Scopes::default(),
        })
    }
}

/// The token of `Bearer <token>`; the scheme is case-insensitive.
fn bearer_token(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Logs how callers are authenticated; loudly when they are not.
fn announce(config: &AuthConfig, addr: Option<SocketAddr>) {
    let addr = addr.map_or_else(|| "the server".to_owned(), |addr| addr.to_string());
    if !config.enabled() {
        tracing::warn!(
            %addr,
            "authentication is off: anyone who can reach this address can read, change, export and erase every customer; set --auth-tokens or --jwt-jwks"
        );
        return;
    }
    tracing::info!(
        access_file = config.access_file.as_ref().map(|path| path.display().to_string()),
        jwks = config.jwt.as_ref().map(|jwt| jwt.jwks.display().to_string()),
        reflection = ?config.reflection(),
        "authentication is on"
    );
}

#[cfg(test)]
mod tests;
