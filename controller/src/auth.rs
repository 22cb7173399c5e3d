//! Authentication of node requests and of the admin.
//!
//! A node request must carry a valid Ed25519 signature by the node's enrolled identity key
//! over the method, path, body hash, node id, timestamp and nonce; the timestamp must be
//! within the clock-skew window; the nonce must not have been seen within that window; and
//! the node id in the signature must be the one the path is about. Anything else is refused
//! before the request can change anything.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use meshtun_proto::auth::{AuthError, RequestSignature, NONCE_LEN};
use meshtun_proto::{IdentityPublic, KeySet};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::quota::NodeQuota;

/// Most nonces remembered at once; beyond this, requests are refused until old ones expire
/// (so a flood of signed requests cannot grow memory without bound).
pub const MAX_NONCES: usize = 1 << 20;

/// Why a request was refused, and with which HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 401: missing, malformed, stale or invalid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// 503: the replay cache is full.
    #[error("too many requests in the replay window; retry shortly")]
    Busy,
    /// 503: the shared replay cache (the database) cannot be reached; the message says why.
    #[error("cannot check the request for replay: {0}; retry shortly")]
    Unavailable(String),
    /// 429: the node sent more requests than its quota allows.
    #[error("node {node} is over its request quota; retry in {} ms", retry_after.as_millis())]
    TooMany {
        /// The node.
        node: String,
        /// When its quota allows another request.
        retry_after: Duration,
    },
}

impl Refusal {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Unauthenticated(_) => 401,
            Refusal::Forbidden(_) => 403,
            Refusal::Busy | Refusal::Unavailable(_) => 503,
            Refusal::TooMany { .. } => 429,
        }
    }

    /// How long the client should wait before retrying, for a refusal that passes.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::Busy | Refusal::Unavailable(_) => Some(Duration::from_secs(1)),
            Refusal::TooMany { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        Refusal::Unauthenticated(e.to_string())
    }
}

/// Where the nonces of accepted requests are remembered, so that a request is accepted at
/// most once: in memory when one instance serves the nodes ([`NonceCache`]), in the database
/// every instance shares when several do ([`crate::ha::PgNonces`]).
pub trait NonceStore: Send + Sync {
    /// The replay window: a request is fresh within this many milliseconds of now, either
    /// side, and its nonce is remembered at least as long.
    fn window_ms(&self) -> u64;

    /// Records `node`'s `nonce`, of a request signed at `timestamp_ms` and checked at
    /// `now_ms`; false if it was already recorded (a replay). Blocking for a database.
    fn record(
        &self,
        node: &str,
        nonce: [u8; NONCE_LEN],
        timestamp_ms: u64,
        now_ms: u64,
    ) -> Result<bool, Refusal>;

    /// Whether [`NonceStore::record`] blocks on I/O (a database), so that async callers must
    /// call it off the runtime's workers.
    fn blocks(&self) -> bool {
        false
    }
}

/// Nonces seen within the replay window, in this process's memory.
pub struct NonceCache {
    window_ms: u64,
    inner: Mutex<Nonces>,
}

#[derive(Default)]
struct Nonces {
    seen: HashMap<[u8; NONCE_LEN], u64>,
    order: VecDeque<([u8; NONCE_LEN], u64)>,
}

impl NonceCache {
    /// A cache for signatures accepted within `window_ms` of now (either side).
    pub fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            inner: Mutex::new(Nonces::default()),
        }
    }

    /// Records `nonce`; false if it was already seen. A nonce is kept until its request's
    /// timestamp falls out of the window, so a replay is refused either as stale or as seen.
    fn insert(
        &self,
        nonce: [u8; NONCE_LEN],
        timestamp_ms: u64,
        now_ms: u64,
    ) -> Result<bool, Refusal> {
        let mut n = self.inner.lock();
        // A request is fresh up to and including `timestamp + window` (`check_fresh`), so
        // its nonce is kept until then, inclusive.
        while let Some(&(old, expires)) = n.order.front() {
            if expires >= now_ms {
                break;
            }
            n.order.pop_front();
            if n.seen.get(&old) == Some(&expires) {
                n.seen.remove(&old);
            }
        }
        if n.seen.contains_key(&nonce) {
            return Ok(false);
        }
        if n.seen.len() >= MAX_NONCES {
            return Err(Refusal::Busy);
        }
        let expires = timestamp_ms.saturating_add(self.window_ms).max(now_ms);
        n.seen.insert(nonce, expires);
        n.order.push_back((nonce, expires));
        Ok(true)
    }

    /// Number of nonces held.
    pub fn len(&self) -> usize {
        self.inner.lock().seen.len()
    }

    /// True if no nonce is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl NonceStore for NonceCache {
    fn window_ms(&self) -> u64 {
        self.window_ms
    }

    fn record(
        &self,
        _node: &str,
        nonce: [u8; NONCE_LEN],
        timestamp_ms: u64,
        now_ms: u64,
    ) -> Result<bool, Refusal> {
        self.insert(nonce, timestamp_ms, now_ms)
    }
}

/// A request as the authenticator sees it.
pub struct SignedRequest<'a> {
    /// The controller keys the request may name (format v2): this controller's, then the
    /// ones it signed with before a key rotation.
    pub controller: &'a KeySet,
    /// HTTP method.
    pub method: &'a str,
    /// Path and query, exactly as sent.
    pub path_and_query: &'a str,
    /// The body.
    pub body: &'a [u8],
    /// The node the path is about (`/v1/config/{node_id}`).
    pub path_node: &'a str,
}

/// Authenticates a node request: `lookup` gives a node's identity key. Once the request is
/// known to come from its node, one request is spent from the node's `quota` (so that
/// forgeries cannot spend an honest node's quota), before its nonce is stored: a node over
/// its quota cannot fill the replay cache that every node shares. Returns the controller key
/// the request named.
pub fn authenticate(
    sig: &RequestSignature,
    request: &SignedRequest<'_>,
    lookup: impl FnOnce(&str) -> Option<IdentityPublic>,
    quota: &NodeQuota,
    nonces: &dyn NonceStore,
    now_ms: u64,
) -> Result<IdentityPublic, Refusal> {
    sig.check_fresh(now_ms, nonces.window_ms())?;
    let key = lookup(&sig.node)
        .ok_or_else(|| Refusal::Unauthenticated(format!("unknown node {}", sig.node)))?;
    let named = named_controller(sig, &key, request)?;
    if sig.node != request.path_node {
        return Err(Refusal::Forbidden(format!(
            "node {} may not act for node {}",
            sig.node, request.path_node
        )));
    }
    quota
        .spend(&sig.node)
        .map_err(|retry_after| Refusal::TooMany {
            node: sig.node.clone(),
            retry_after,
        })?;
    if !nonces.record(&sig.node, sig.nonce, sig.timestamp_ms, now_ms)? {
        return Err(Refusal::Unauthenticated(
            "replayed request (nonce already used)".into(),
        ));
    }
    Ok(named)
}

/// The controller key, among those `request` may name, that `sig` (by the node whose key is
/// `node_key`) verifies with. A forged request costs one signature check per key.
fn named_controller(
    sig: &RequestSignature,
    node_key: &IdentityPublic,
    request: &SignedRequest<'_>,
) -> Result<IdentityPublic, Refusal> {
    request
        .controller
        .keys()
        .iter()
        .find(|controller| {
            sig.verify(
                node_key,
                controller,
                request.method,
                request.path_and_query,
                request.body,
            )
            .is_ok()
        })
        .copied()
        .ok_or_else(|| AuthError::BadSignature.into())
}

/// Compares a presented admin token with the configured one in constant time (both are
/// hashed first, so their lengths leak nothing either).
pub fn admin_token_matches(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    bool::from(a.ct_eq(&b)) && !expected.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtun_proto::IdentityKey;

    const NOW: u64 = 1_000_000;

    fn quota() -> NodeQuota {
        NodeQuota::new(1_000, 1_000)
    }

    fn controller() -> &'static IdentityPublic {
        static KEY: std::sync::OnceLock<IdentityPublic> = std::sync::OnceLock::new();
        KEY.get_or_init(|| IdentityKey::from_bytes([0xc0; 32]).public())
    }

    fn answers_to() -> &'static KeySet {
        static KEYS: std::sync::OnceLock<KeySet> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| KeySet::one(*controller()))
    }

    fn request(body: &[u8]) -> SignedRequest<'_> {
        SignedRequest {
            controller: answers_to(),
            method: "POST",
            path_and_query: "/v1/benchmarks/node-a",
            body,
            path_node: "node-a",
        }
    }

    fn sign(key: &IdentityKey, node: &str, at: u64) -> RequestSignature {
        RequestSignature::sign(
            key,
            controller(),
            node,
            "POST",
            "/v1/benchmarks/node-a",
            b"{}",
            at,
        )
    }

    #[test]
    fn a_good_request_passes_once() {
        let key = IdentityKey::generate();
        let nonces = NonceCache::new(30_000);
        let sig = sign(&key, "node-a", NOW);
        let lookup = |_: &str| Some(key.public());
        assert_eq!(
            authenticate(&sig, &request(b"{}"), lookup, &quota(), &nonces, NOW),
            Ok(*controller())
        );
        let replay = authenticate(&sig, &request(b"{}"), lookup, &quota(), &nonces, NOW + 1);
        assert!(matches!(replay, Err(Refusal::Unauthenticated(m)) if m.contains("replayed")));
    }

    /// Key rotation: a controller that signs with a new key still answers a node naming its
    /// previous key (and says which was named), but a request naming any other key, such as
    /// a staging controller's, is refused.
    #[test]
    fn a_request_naming_a_previous_key_passes_and_one_naming_a_stranger_is_refused() {
        let node = IdentityKey::generate();
        let new = IdentityKey::generate().public();
        let rotated = KeySet::new(vec![new, *controller()]).unwrap();
        let nonces = NonceCache::new(30_000);
        let lookup = |_: &str| Some(node.public());
        let request = SignedRequest {
            controller: &rotated,
            ..request(b"{}")
        };
        let old = sign(&node, "node-a", NOW);
        assert_eq!(
            authenticate(&old, &request, lookup, &quota(), &nonces, NOW),
            Ok(*controller())
        );
        let staging = IdentityKey::generate().public();
        let foreign = RequestSignature::sign(
            &node,
            &staging,
            "node-a",
            "POST",
            "/v1/benchmarks/node-a",
            b"{}",
            NOW,
        );
        assert_eq!(
            authenticate(&foreign, &request, lookup, &quota(), &nonces, NOW),
            Err(Refusal::from(AuthError::BadSignature))
        );
    }

    #[test]
    fn forged_stale_unknown_and_foreign_requests_are_refused() {
        let key = IdentityKey::generate();
        let nonces = NonceCache::new(30_000);
        let good = |_: &str| Some(key.public());
        let other = IdentityKey::generate();
        let forged = sign(&other, "node-a", NOW);
        assert_eq!(
            authenticate(&forged, &request(b"{}"), good, &quota(), &nonces, NOW)
                .unwrap_err()
                .status(),
            401
        );
        let stale = sign(&key, "node-a", NOW - 31_000);
        assert_eq!(
            authenticate(&stale, &request(b"{}"), good, &quota(), &nonces, NOW)
                .unwrap_err()
                .status(),
            401
        );
        let unknown = sign(&key, "node-a", NOW);
        assert_eq!(
            authenticate(&unknown, &request(b"{}"), |_| None, &quota(), &nonces, NOW)
                .unwrap_err()
                .status(),
            401
        );
        let tampered = sign(&key, "node-a", NOW);
        assert_eq!(
            authenticate(
                &tampered,
                &request(b"{\"x\":1}"),
                good,
                &quota(),
                &nonces,
                NOW
            )
            .unwrap_err()
            .status(),
            401
        );
        // node-b signs correctly, but for node-a's path.
        let b = IdentityKey::generate();
        let foreign = sign(&b, "node-b", NOW);
        let lookup_b = |n: &str| (n == "node-b").then(|| b.public());
        assert_eq!(
            authenticate(&foreign, &request(b"{}"), lookup_b, &quota(), &nonces, NOW)
                .unwrap_err()
                .status(),
            403
        );
    }

    #[test]
    fn old_nonces_expire_and_memory_stays_bounded() {
        let nonces = NonceCache::new(1_000);
        for i in 0..100u8 {
            let mut n = [0u8; NONCE_LEN];
            n[0] = i;
            assert!(nonces.insert(n, NOW, NOW).unwrap());
        }
        assert_eq!(nonces.len(), 100);
        assert!(nonces
            .insert([200; NONCE_LEN], NOW + 5_000, NOW + 5_000)
            .unwrap());
        assert_eq!(nonces.len(), 1);
    }

    #[test]
    fn admin_tokens_compare_exactly() {
        assert!(admin_token_matches("s3cret-token", "s3cret-token"));
        assert!(!admin_token_matches("s3cret-tokeN", "s3cret-token"));
        assert!(!admin_token_matches("", ""));
    }

    #[test]
    fn a_node_over_its_quota_stores_no_nonce_15() {
        let key = IdentityKey::generate();
        let nonces = NonceCache::new(30_000);
        let quota = NodeQuota::new(1, 10);
        let lookup = |_: &str| Some(key.public());
        let mut refused = 0;
        for _ in 0..1_000 {
            let sig = sign(&key, "node-a", NOW);
            match authenticate(&sig, &request(b"{}"), lookup, &quota, &nonces, NOW) {
                Ok(_) => {}
                Err(r @ Refusal::TooMany { .. }) => {
                    assert_eq!(r.status(), 429);
                    assert!(r.retry_after().unwrap() <= std::time::Duration::from_secs(1));
                    refused += 1;
                }
                Err(other) => panic!("unexpected refusal {other:?}"),
            }
        }
        // The burst passes; everything after it is refused before its nonce is stored.
        assert!(refused >= 989, "{refused} refused");
        assert!(nonces.len() <= 11, "{} nonces stored", nonces.len());
        // Forgeries in node-a's name do not spend its quota (checked after the signature).
        let fresh = NodeQuota::new(1, 1);
        let forged = sign(&IdentityKey::generate(), "node-a", NOW);
        let err = authenticate(&forged, &request(b"{}"), lookup, &fresh, &nonces, NOW);
        assert_eq!(err.unwrap_err().status(), 401);
        let sig = sign(&key, "node-a", NOW);
        assert_eq!(
            authenticate(&sig, &request(b"{}"), lookup, &fresh, &nonces, NOW),
            Ok(*controller())
        );
    }

    /// #23: a request is fresh until exactly `timestamp + window`; its nonce must be
    /// remembered until then too, or a replay at that very millisecond passes.
    #[test]
    fn a_replay_at_the_edge_of_the_window_is_refused_23() {
        let key = IdentityKey::generate();
        let window = 30_000;
        let nonces = NonceCache::new(window);
        let lookup = |_: &str| Some(key.public());
        let sig = sign(&key, "node-a", NOW);
        assert_eq!(
            authenticate(&sig, &request(b"{}"), lookup, &quota(), &nonces, NOW),
            Ok(*controller())
        );
        // The replay's own insertion sweeps the expired nonces first.
        let edge = NOW + window;
        let replay = authenticate(&sig, &request(b"{}"), lookup, &quota(), &nonces, edge);
        assert!(
            matches!(&replay, Err(Refusal::Unauthenticated(m)) if m.contains("replayed")),
            "{replay:?}"
        );
        // One millisecond later it is stale.
        let stale = authenticate(&sig, &request(b"{}"), lookup, &quota(), &nonces, edge + 1);
        assert!(matches!(&stale, Err(Refusal::Unauthenticated(m)) if !m.contains("replayed")));
    }
}
