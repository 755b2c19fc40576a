//! Paging of the List calls (AIP-158): the page size, and the one page-token
//! format every List call uses.
//!
//! A page token is opaque to clients. It is URL-safe base64, without
//! padding, of these bytes:
//!
//! | bytes | content |
//! |---|---|
//! | 0 | the format version, [`TOKEN_VERSION`] |
//! | 1–8 | the request's fingerprint, a u64, big-endian |
//! | 9 | 1 when an evaluation time follows, else 0 |
//! | 10–17 | only with that flag: the first page's evaluation time, i64 nanoseconds since the epoch, big-endian |
//! | then | the position: the key of the last item returned, in the call's encoding ([`Position`]) |
//! | last 16 | the tag: HMAC-SHA-256 of every byte before it, under the store's page-token key, cut to 16 bytes |
//!
//! The tag makes a token unforgeable: one the server did not make, or
//! changed in any bit, is refused, and the key never leaves the server
//! (it is kept in the store, so tokens outlive a restart). The fingerprint
//! is FNV-1a (64 bits) over the method name and every request field the
//! pages depend on (filter, parent, segment) other than `page_size`,
//! `page_token` and `evaluation_time`. A token sent with other such
//! fields, or to another method, is refused. The evaluation time is kept
//! whole instead: later pages are answered as of the first page's time,
//! and may leave `evaluation_time` unset or repeat it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::ApiLimits;
use crate::domain::segment::SegmentId;
use crate::domain::{CustomerId, Error, Timestamp};
use crate::store::PageTokenKey;

/// The default page size of List calls.
const DEFAULT_PAGE_SIZE: usize = 50;
/// The version byte that opens every page token of this format. Version 3
/// came with store format 2, whose event id hashes, which event cursors
/// hold, differ from format 1's: a token of version 2 is refused rather
/// than misread.
pub const TOKEN_VERSION: u8 = 3;
/// Bytes before the evaluation time: version, fingerprint and flag.
const HEADER_LEN: usize = 10;
/// Bytes of the tag that ends a token.
const TAG_LEN: usize = 16;

/// The MAC of page tokens.
type TokenMac = Hmac<Sha256>;

/// The page size of a request: the default for 0, and at most the cap; a
/// larger one is reduced to the cap (AIP-158).
pub fn page_size(requested: i32, limits: ApiLimits) -> Result<usize, Error> {
    match usize::try_from(requested) {
        Err(_) => Err(Error::invalid(
            "page_size",
            format!("must not be negative, got {requested}"),
        )),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE.min(limits.max_page_size)),
        Ok(size) => Ok(size.min(limits.max_page_size)),
    }
}

/// The key of the last item of a page, which the next page starts after.
pub trait Position: Sized {
    /// Appends the key to a token.
    fn encode(&self, token: &mut Vec<u8>);
    /// Reads the key back; `None` if the bytes are not one.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl Position for String {
    fn encode(&self, token: &mut Vec<u8>) {
        token.extend_from_slice(self.as_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl Position for CustomerId {
    fn encode(&self, token: &mut Vec<u8>) {
        token.extend_from_slice(self.as_str().as_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        CustomerId::parse(std::str::from_utf8(bytes).ok()?).ok()
    }
}

impl Position for SegmentId {
    fn encode(&self, token: &mut Vec<u8>) {
        token.extend_from_slice(self.as_str().as_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        SegmentId::parse(std::str::from_utf8(bytes).ok()?).ok()
    }
}

/// An event's place in a customer's series: its time and its key.
impl Position for (i64, u64) {
    fn encode(&self, token: &mut Vec<u8>) {
        token.extend_from_slice(&self.0.to_be_bytes());
        token.extend_from_slice(&self.1.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (time, key) = bytes.split_first_chunk::<8>()?;
        let key: [u8; 8] = key.try_into().ok()?;
        Some((i64::from_be_bytes(*time), u64::from_be_bytes(key)))
    }
}

/// Where a page token says the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume<P> {
    /// The first page's evaluation time, for calls that evaluate features.
    pub at: Option<Timestamp>,
    /// The key the next page starts after.
    pub after: P,
}

/// The request of one List call, as far as its pages depend on it.
#[derive(Debug, Clone, Copy)]
pub struct PagedRequest<'k> {
    /// The method name, e.g. `ListCustomers`, for messages.
    method: &'static str,
    /// FNV-1a over the method and the request fields.
    fingerprint: u64,
    /// The key of the tags.
    key: &'k PageTokenKey,
}

/// FNV-1a, 64 bits: stable across builds and platforms.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl<'k> PagedRequest<'k> {
    /// A call of `method`, its tokens tagged under `key`; add the fields
    /// its pages depend on with [`PagedRequest::field`].
    pub fn new(key: &'k PageTokenKey, method: &'static str) -> Self {
        PagedRequest {
            method,
            fingerprint: fnv1a(0xcbf2_9ce4_8422_2325, method.as_bytes()),
            key,
        }
    }

    /// Adds a request field to the fingerprint. Each field is preceded by
    /// its length, so that fields cannot run into each other.
    pub fn field(self, value: &str) -> Self {
        let length = fnv1a(self.fingerprint, &(value.len() as u64).to_be_bytes());
        PagedRequest {
            fingerprint: fnv1a(length, value.as_bytes()),
            ..self
        }
    }

    /// The MAC of a token's bytes before its tag.
    fn mac(&self, body: &[u8]) -> TokenMac {
        let mut mac =
            TokenMac::new_from_slice(self.key.bytes()).expect("HMAC takes a key of any length");
        mac.update(body);
        mac
    }

    /// The token of the page after the one ending at `last`.
    pub fn next_token(&self, at: Option<Timestamp>, last: &impl Position) -> String {
        let mut token = Vec::with_capacity(64);
        token.push(TOKEN_VERSION);
        token.extend_from_slice(&self.fingerprint.to_be_bytes());
        match at {
            Some(at) => {
                token.push(1);
                token.extend_from_slice(&at.as_nanos().to_be_bytes());
            }
            None => token.push(0),
        }
        last.encode(&mut token);
        let tag = self.mac(&token).finalize().into_bytes();
        token.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// Where the page of `token` starts: `None` for the first page.
    pub fn resume<P: Position>(&self, token: &str) -> Result<Option<Resume<P>>, Error> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || {
            Error::invalid(
                "page_token",
                format!("not a page token from a previous {} response", self.method),
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let Some(body_len) = bytes.len().checked_sub(TAG_LEN) else {
            return Err(invalid());
        };
        let (body, tag) = bytes.split_at(body_len);
        self.mac(body)
            .verify_truncated_left(tag)
            .map_err(|_| invalid())?;
        let Some((header, rest)) = body.split_first_chunk::<HEADER_LEN>() else {
            return Err(invalid());
        };
        let [version, fingerprint @ .., flag] = *header;
        if version != TOKEN_VERSION {
            return Err(invalid());
        }
        if u64::from_be_bytes(fingerprint) != self.fingerprint {
            return Err(Error::invalid(
                "page_token",
                format!(
                    "belongs to a different request: a page token holds only for a {} request with the same fields, other than page_size, as the one that returned it",
                    self.method
                ),
            ));
        }
        let (at, position) = match flag {
            0 => (None, rest),
            1 => {
                let (nanos, position) = rest.split_first_chunk::<8>().ok_or_else(invalid)?;
                let at = Timestamp::from_nanos(i64::from_be_bytes(*nanos));
                (Some(at), position)
            }
            _ => return Err(invalid()),
        };
        let after = P::decode(position).ok_or_else(invalid)?;
        Ok(Some(Resume { at, after }))
    }
}

/// The evaluation time of a page: the first page's, kept in the token, or
/// else the requested one, or now. A later page asking for another time
/// than the first page's is refused.
pub fn page_time(
    requested: Option<Timestamp>,
    first_page: Option<Timestamp>,
) -> Result<Timestamp, Error> {
    match (requested, first_page) {
        (Some(requested), Some(first)) if requested != first => Err(Error::invalid(
            "evaluation_time",
            "differs from the evaluation time of the page token; leave it unset or send the first page's",
        )),
        (_, Some(first)) => Ok(first),
        (requested, None) => Ok(requested.unwrap_or_else(Timestamp::now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static KEY: std::sync::LazyLock<PageTokenKey> =
        std::sync::LazyLock::new(|| PageTokenKey::repeated(7));

    fn limits() -> ApiLimits {
        ApiLimits {
            max_page_size: 1000,
            max_batch_size: 1000,
            max_events_per_batch: 10_000,
        }
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0, limits()).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(1000, limits()).unwrap(), 1000);
        assert_eq!(page_size(1001, limits()).unwrap(), 1000);
        assert_eq!(page_size(i32::MAX, limits()).unwrap(), 1000);
        assert!(matches!(
            page_size(-1, limits()),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn tokens_round_trip() {
        let request = PagedRequest::new(&KEY, "ListCustomers").field("customer.age > 30");
        let id = CustomerId::parse("a:b@c").unwrap();
        let token = request.next_token(None, &id);
        let resumed: Resume<CustomerId> = request.resume(&token).unwrap().unwrap();
        assert_eq!(
            resumed,
            Resume {
                at: None,
                after: id
            }
        );
        let at = Timestamp::from_nanos(-1_234);
        let token = request.next_token(Some(at), &(-5_i64, u64::MAX));
        let resumed: Resume<(i64, u64)> = request.resume(&token).unwrap().unwrap();
        assert_eq!(resumed.at, Some(at));
        assert_eq!(resumed.after, (-5, u64::MAX));
        assert_eq!(request.resume::<String>("").unwrap(), None);
    }

    #[test]
    fn tokens_of_other_requests_are_refused() {
        let request = PagedRequest::new(&KEY, "ListPurchases").field("customers/a");
        let token = request.next_token(None, &(1_i64, 2_u64));
        for other in [
            PagedRequest::new(&KEY, "ListPurchases").field("customers/b"),
            PagedRequest::new(&KEY, "ListEngagements").field("customers/a"),
            // The length prefix keeps ("ab", "") apart from ("a", "b").
            PagedRequest::new(&KEY, "ListPurchases")
                .field("customers/")
                .field("a"),
        ] {
            let Err(Error::InvalidArgument(found)) = other.resume::<(i64, u64)>(&token) else {
                panic!("a token of another request was accepted");
            };
            assert!(found[0]
                .description
                .starts_with("belongs to a different request"));
        }
    }

    #[test]
    fn garbage_is_refused() {
        let request = PagedRequest::new(&KEY, "ListSegments");
        for token in [
            "!!!".to_owned(),
            URL_SAFE_NO_PAD.encode("s1:abc"),
            URL_SAFE_NO_PAD.encode([TOKEN_VERSION]),
            URL_SAFE_NO_PAD.encode([0; TAG_LEN]),
        ] {
            let Err(Error::InvalidArgument(found)) = request.resume::<SegmentId>(&token) else {
                panic!("garbage was accepted: {token}");
            };
            assert!(found[0].description.starts_with("not a page token"));
        }
        // A token whose position is not a segment id.
        let token = request.next_token(None, &"not an id!".to_owned());
        assert!(request.resume::<SegmentId>(&token).is_err());
    }

    #[test]
    fn later_pages_keep_the_first_pages_time() {
        let first = Timestamp::from_nanos(10);
        assert_eq!(page_time(None, Some(first)).unwrap(), first);
        assert_eq!(page_time(Some(first), Some(first)).unwrap(), first);
        assert!(page_time(Some(Timestamp::from_nanos(11)), Some(first)).is_err());
        assert_eq!(page_time(Some(first), None).unwrap(), first);
    }

    #[test]
    fn every_changed_bit_and_every_other_key_is_refused() {
        let request = PagedRequest::new(&KEY, "ListCustomers").field("f");
        let id = CustomerId::parse("a").unwrap();
        let token = request.next_token(Some(Timestamp::from_nanos(5)), &id);
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let flipped = URL_SAFE_NO_PAD.encode(flipped);
            assert!(
                request.resume::<CustomerId>(&flipped).is_err(),
                "bit {bit} flipped was accepted"
            );
        }
        let other_key = PageTokenKey::repeated(8);
        let other_server = PagedRequest::new(&other_key, "ListCustomers").field("f");
        assert!(other_server.resume::<CustomerId>(&token).is_err());
        assert!(request.resume::<CustomerId>(&token).is_ok());
    }
}
