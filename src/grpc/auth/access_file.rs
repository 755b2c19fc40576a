//! The access file (`--auth-tokens`): static bearer tokens, kept only as
//! SHA-256 hashes, and client-certificate identities, each with its
//! scopes. docs/access.md shows the format:
//!
//! ```json
//! {
//!   "tokens": [
//!     { "principal": "reporting", "sha256": "<64 hex digits>", "scopes": ["customers.read"] }
//!   ],
//!   "certificates": [
//!     { "identity": "spiffe://example.org/ns/crm/sa/exporter", "scopes": ["export"] }
//!   ]
//! }
//! ```
//!
//! A token is looked up by the first 8 bytes of its hash and then compared
//! whole in constant time, so the time a lookup takes says nothing about
//! how close a guess came.

use std::collections::HashMap;

use anyhow::{anyhow, bail};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::scopes::{Scope, Scopes};
use super::Caller;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    /// Static bearer tokens.
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    /// Client-certificate identities.
    #[serde(default)]
    certificates: Vec<CertificateEntry>,
}

/// One static token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    /// Who holds the token, for the audit log and errors.
    principal: String,
    /// The SHA-256 of the token, in hex.
    sha256: String,
    /// What the token may do.
    scopes: Vec<String>,
}

/// One client-certificate identity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateEntry {
    /// The identity TLS takes from the verified certificate: its SPIFFE
    /// URI, DNS name or common name. It is also the principal.
    identity: String,
    /// What the certificate may do.
    scopes: Vec<String>,
}

/// The access file, parsed for lookups.
#[derive(Debug, Default)]
pub(super) struct AccessFile {
    /// Token hashes and their callers, by the first 8 bytes of the hash.
    tokens: HashMap<[u8; 8], Vec<([u8; 32], Caller)>>,
    /// Callers by certificate identity.
    certificates: HashMap<String, Caller>,
}

impl AccessFile {
    /// Parses the JSON of an access file; an error names the entry.
    pub(super) fn parse(bytes: &[u8]) -> anyhow::Result<AccessFile> {
        let file: FileFormat = serde_json::from_slice(bytes)?;
        let mut access = AccessFile::default();
        for (i, entry) in file.tokens.into_iter().enumerate() {
            let at = format!("tokens[{i}]");
            let hash =
                parse_hash(&entry.sha256).map_err(|error| anyhow!("{at}.sha256: {error}"))?;
            let caller = Caller {
                scopes: parse_scopes(&entry.scopes)
                    .map_err(|error| anyhow!("{at}.scopes: {error}"))?,
                principal: nonempty(entry.principal)
                    .ok_or_else(|| anyhow!("{at}.principal: required"))?,
            };
            if access.token(&hash).is_some() {
                bail!("{at}.sha256: the same token is listed twice");
            }
            let prefix: [u8; 8] = hash[..8].try_into().expect("32 bytes");
            access
                .tokens
                .entry(prefix)
                .or_default()
                .push((hash, caller));
        }
        for (i, entry) in file.certificates.into_iter().enumerate() {
            let at = format!("certificates[{i}]");
            let identity =
                nonempty(entry.identity).ok_or_else(|| anyhow!("{at}.identity: required"))?;
            let caller = Caller {
                scopes: parse_scopes(&entry.scopes)
                    .map_err(|error| anyhow!("{at}.scopes: {error}"))?,
                principal: identity.clone(),
            };
            if access.certificates.insert(identity, caller).is_some() {
                bail!("{at}.identity: the same identity is listed twice");
            }
        }
        Ok(access)
    }

    /// The caller whose token has the SHA-256 `hash`.
    pub(super) fn token(&self, hash: &[u8; 32]) -> Option<&Caller> {
        let prefix: &[u8; 8] = hash[..8].try_into().expect("32 bytes");
        let mut found = None;
        for (listed, caller) in self.tokens.get(prefix).into_iter().flatten() {
            if bool::from(listed.ct_eq(hash)) {
                found = Some(caller);
            }
        }
        found
    }

    /// The caller of the client-certificate `identity`.
    pub(super) fn certificate(&self, identity: &str) -> Option<&Caller> {
        self.certificates.get(identity)
    }
}

fn nonempty(text: String) -> Option<String> {
    (!text.trim().is_empty()).then_some(text)
}

/// 64 hex digits.
fn parse_hash(hex: &str) -> anyhow::Result<[u8; 32]> {
    let invalid = || {
        anyhow!(
            "expected the 64 hex digits of a SHA-256, as `printf %s \"$TOKEN\" | sha256sum` prints"
        )
    };
    if hex.len() != 64 {
        return Err(invalid());
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
    }
    Ok(hash)
}

/// Scope names, every one known.
fn parse_scopes(names: &[String]) -> anyhow::Result<Scopes> {
    names
        .iter()
        .map(|name| {
            Scope::parse(name).ok_or_else(|| {
                let known: Vec<_> = Scope::ALL.iter().map(|scope| scope.name()).collect();
                anyhow!(
                    "unknown scope {name:?}; the scopes are {}",
                    known.join(", ")
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    use super::*;

    fn hex(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    #[test]
    fn tokens_and_certificates_are_found_with_their_scopes() {
        let json = format!(
            r#"{{
                "tokens": [{{"principal": "reporting", "sha256": "{}", "scopes": ["customers.read", "export"]}}],
                "certificates": [{{"identity": "spiffe://example.org/crm", "scopes": ["segments.read"]}}]
            }}"#,
            hex("s3cret")
        );
        let access = AccessFile::parse(json.as_bytes()).unwrap();
        let hash: [u8; 32] = Sha256::digest(b"s3cret").into();
        let caller = access.token(&hash).unwrap();
        assert_eq!(caller.principal, "reporting");
        assert!(caller.scopes.contains(Scope::Export));
        assert!(!caller.scopes.contains(Scope::CustomersErase));
        let other: [u8; 32] = Sha256::digest(b"guess").into();
        assert!(access.token(&other).is_none());

        let caller = access.certificate("spiffe://example.org/crm").unwrap();
        assert_eq!(caller.principal, "spiffe://example.org/crm");
        assert!(caller.scopes.contains(Scope::SegmentsRead));
    }

    #[test]
    fn mistakes_are_refused_naming_the_entry() {
        let refused = |json: &str| AccessFile::parse(json.as_bytes()).unwrap_err().to_string();
        let scope = format!(
            r#"{{"tokens": [{{"principal": "a", "sha256": "{}", "scopes": ["customer.read"]}}]}}"#,
            hex("x")
        );
        assert!(refused(&scope).starts_with("tokens[0].scopes: unknown scope \"customer.read\""));
        let short = r#"{"tokens": [{"principal": "a", "sha256": "abc", "scopes": []}]}"#;
        assert!(refused(short).starts_with("tokens[0].sha256: expected the 64 hex digits"));
        let twice = format!(
            r#"{{"tokens": [{{"principal": "a", "sha256": "{0}", "scopes": []}}, {{"principal": "b", "sha256": "{0}", "scopes": []}}]}}"#,
            hex("x")
        );
        assert!(refused(&twice).starts_with("tokens[1].sha256: the same token"));
        assert!(refused(r#"{"token": []}"#).contains("unknown field"));
        assert!(AccessFile::parse(b"{}").is_ok());
    }
}
