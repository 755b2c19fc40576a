//! JWT bearer tokens, checked against the public keys of a JWKS file: the
//! signature by the key the header's `kid` names, `exp` and `nbf` with a
//! small leeway, and the configured issuer and audience, all required. The
//! principal is `sub`; the scopes are the space-separated `scope` claim
//! (RFC 8693) or the `scp` claim, a list or a space-separated string.
//!
//! A verified token is remembered by the SHA-256 of its text until it
//! expires, so a client that repeats its token pays one hash and one map
//! lookup. The memory is bounded, and forgotten when the key set changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::bail;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::reload::Watched;
use super::scopes::Scopes;
use super::{Caller, JwtConfig};

/// Seconds of clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;
/// The most verified tokens remembered.
const REMEMBERED: usize = 10_000;

/// A public key of the set, and the algorithms it may verify.
struct Key {
    /// The key.
    decoding: DecodingKey,
    /// The algorithms a token signed with it may name.
    algorithms: Vec<Algorithm>,
}

/// The JWKS file's keys by `kid`.
struct KeySet(HashMap<String, Key>);

impl KeySet {
    /// Parses a JWKS. Symmetric keys are refused: a file of public keys
    /// must not let anyone who reads it sign tokens.
    fn parse(bytes: &[u8]) -> anyhow::Result<KeySet> {
        let set: JwkSet = serde_json::from_slice(bytes)?;
        let mut keys = HashMap::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                continue;
            }
            let Some(kid) = jwk.common.key_id.clone() else {
                bail!("keys[{i}]: no kid; tokens name their key by kid");
            };
            let algorithms = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::OctetKey(_), _) => {
                    bail!("keys[{i}] ({kid}): a symmetric key; only public keys are accepted")
                }
                (_, Some(named)) => match signing_algorithm(named) {
                    Some(algorithm) => vec![algorithm],
                    None => bail!("keys[{i}] ({kid}): alg {named} cannot verify a JWT"),
                },
                (AlgorithmParameters::RSA(_), None) => vec![
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                (AlgorithmParameters::EllipticCurve(key), None) => match key.curve {
                    EllipticCurve::P256 => vec![Algorithm::ES256],
                    EllipticCurve::P384 => vec![Algorithm::ES384],
                    _ => bail!("keys[{i}] ({kid}): an unsupported curve"),
                },
                (AlgorithmParameters::OctetKeyPair(_), None) => vec![Algorithm::EdDSA],
            };
            let decoding = DecodingKey::from_jwk(jwk)
                .map_err(|error| anyhow::anyhow!("keys[{i}] ({kid}): {error}"))?;
            if keys
                .insert(
                    kid.clone(),
                    Key {
                        decoding,
                        algorithms,
                    },
                )
                .is_some()
            {
                bail!("keys[{i}]: kid {kid:?} is used twice");
            }
        }
        Ok(KeySet(keys))
    }
}

/// The JWT algorithm of a JWK `alg`, when it is one that signs.
fn signing_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    let algorithm = match named {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    };
    Some(algorithm)
}

/// The claims segmentd reads; the standard ones are checked by the library.
#[derive(Deserialize)]
struct Claims {
    /// Who the token is for; required (the check says so when it is absent).
    #[serde(default)]
    sub: String,
    /// When it expires, in seconds since the epoch; required likewise.
    #[serde(default)]
    exp: u64,
    /// Space-separated scopes (RFC 8693).
    #[serde(default)]
    scope: Option<String>,
    /// Scopes as some issuers write them: a list, or space-separated.
    #[serde(default)]
    scp: Option<ScopeList>,
}

/// The two shapes of `scp`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeList {
    /// `"a b c"`
    Words(String),
    /// `["a", "b", "c"]`
    List(Vec<String>),
}

impl Claims {
    fn scopes(&self) -> Scopes {
        let mut names: Vec<&str> = Vec::new();
        if let Some(scope) = &self.scope {
            names.extend(scope.split_whitespace());
        }
        match &self.scp {
            Some(ScopeList::Words(words)) => names.extend(words.split_whitespace()),
            Some(ScopeList::List(list)) => names.extend(list.iter().map(String::as_str)),
            None => {}
        }
        Scopes::known(names)
    }
}

/// A verified token, remembered until it expires.
struct Remembered {
    /// Who it is for.
    caller: Caller,
    /// Its `exp`.
    expires: u64,
}

/// Checks JWTs; see the module docs.
pub(super) struct JwtVerifier {
    /// The JWKS file.
    keys: Watched<KeySet>,
    /// The `iss` every token must carry.
    issuer: String,
    /// The `aud` every token must carry.
    audience: String,
    /// Verified tokens by the SHA-256 of their text.
    remembered: Mutex<HashMap<[u8; 32], Remembered>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl JwtVerifier {
    /// Reads the JWKS file of `config`.
    pub(super) fn load(config: &JwtConfig) -> anyhow::Result<JwtVerifier> {
        Ok(JwtVerifier {
            keys: Watched::load(&config.jwks, "JWKS", KeySet::parse)?,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            remembered: Mutex::new(HashMap::new()),
        })
    }

    /// Reads the key set again if its file changed; a new key set forgets
    /// every remembered token, so that a removed key stops working at once.
    pub(super) fn reload_if_changed(&self) {
        if self.keys.reload_if_changed() {
            self.remembered().clear();
        }
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Remembered>> {
        self.remembered
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The caller of `token`, whose SHA-256 is `hash`, or why it is refused.
    pub(super) fn verify(&self, token: &str, hash: &[u8; 32]) -> Result<Caller, &'static str> {
        let now = now();
        if let Some(known) = self.remembered().get(hash) {
            if now <= known.expires.saturating_add(LEEWAY_SECONDS) {
                return Ok(known.caller.clone());
            }
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| "it is not a JWT")?;
        let kid = header.kid.ok_or("the JWT header names no key (kid)")?;
        let keys = self.keys.current();
        let key = keys
            .0
            .get(&kid)
            .ok_or("the JWT's key (kid) is not in the key set")?;
        if !key.algorithms.contains(&header.alg) {
            return Err("the JWT's algorithm is not its key's");
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|error| refusal(error.kind()))?
            .claims;
        let caller = Caller {
            scopes: claims.scopes(),
            principal: claims.sub,
        };
        let mut remembered = self.remembered();
        // A key set swapped in while this token was checked may have
        // dropped its key; the reload clears what is remembered only after
        // the swap, under this lock, so remember nothing checked with an
        // older key set.
        if !Arc::ptr_eq(&keys, &self.keys.current()) {
            return Ok(caller);
        }
        if remembered.len() >= REMEMBERED {
            remembered.retain(|_, known| now <= known.expires.saturating_add(LEEWAY_SECONDS));
            if remembered.len() >= REMEMBERED {
                remembered.clear();
            }
        }
        remembered.insert(
            *hash,
            Remembered {
                caller: caller.clone(),
                expires: claims.exp,
            },
        );
        Ok(caller)
    }
}

/// Why a JWT was refused, for the caller.
fn refusal(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the JWT has expired",
        ErrorKind::ImmatureSignature => "the JWT is not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "the JWT's issuer (iss) is not the one configured",
        ErrorKind::InvalidAudience => "the JWT's audience (aud) is not the one configured",
        ErrorKind::InvalidSignature => "the JWT's signature does not verify",
        ErrorKind::MissingRequiredClaim(_) => "the JWT lacks one of exp, iss, aud and sub",
        _ => "the JWT is malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::auth::Scope;

    fn refused(json: &str) -> String {
        match KeySet::parse(json.as_bytes()) {
            Ok(_) => panic!("accepted: {json}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn only_named_public_signing_keys_are_accepted() {
        let ed25519 = r#"{"kty": "OKP", "crv": "Ed25519", "x": "u04If1AkNZ68IfT0aGgGlt9NFpj4UYKOYMJtYsykhGk""#;
        let set =
            KeySet::parse(format!(r#"{{"keys": [{ed25519}, "kid": "a"}}]}}"#).as_bytes()).unwrap();
        assert_eq!(set.0["a"].algorithms, [Algorithm::EdDSA]);
        let encryption = format!(r#"{{"keys": [{ed25519}, "kid": "e", "use": "enc"}}]}}"#);
        assert!(KeySet::parse(encryption.as_bytes()).unwrap().0.is_empty());

        assert!(refused(&format!(r#"{{"keys": [{ed25519}}}]}}"#)).contains("no kid"));
        let secret = r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s", "alg": "HS256"}]}"#;
        assert!(refused(secret).contains("symmetric"));
        let twice = format!(r#"{{"keys": [{ed25519}, "kid": "a"}}, {ed25519}, "kid": "a"}}]}}"#);
        assert!(refused(&twice).contains("used twice"));
    }

    #[test]
    fn scopes_come_from_scope_and_scp() {
        let claims: Claims = serde_json::from_str(
            r#"{"sub": "s", "exp": 1, "scope": "openid export", "scp": ["customers.read"]}"#,
        )
        .unwrap();
        let scopes = claims.scopes();
        assert!(scopes.contains(Scope::Export));
        assert!(scopes.contains(Scope::CustomersRead));
        let claims: Claims =
            serde_json::from_str(r#"{"scp": "segments.read personas.read"}"#).unwrap();
        assert_eq!(claims.scopes().iter().count(), 2);
    }
}
