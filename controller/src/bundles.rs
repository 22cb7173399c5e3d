//! Building the signed bundle of one node for one epoch.
//!
//! Pair keys are derived when a bundle is built, never stored: a 1,000-node full mesh would
//! otherwise hold half a million keys per epoch. Bundles are built on first request (or
//! ahead of time, in parallel) and cached per epoch, so serving is a lookup.

use std::collections::HashMap;

use meshtun_proto::bundle::{Bundle, BundlePeer, Membership, Sealer, SignedBundle, BUNDLE_VERSION};
use meshtun_proto::relay::BundleRelay;
use meshtun_proto::{EpochId, IdentityKey, PairKeys};
use parking_lot::Mutex;

use crate::model::{Decision, EpochRecord, NodeRecord};
use crate::relay::RelayIssuer;

/// What the bundle of one node is built from.
pub struct BundleSource<'a> {
    /// The epoch.
    pub epoch: &'a EpochRecord,
    /// The recipient.
    pub node: &'a NodeRecord,
    /// The recipient's decision in this epoch (`None`: not evaluated, treated as denied).
    pub decision: Option<&'a Decision>,
    /// The recipient's peers this epoch, already chosen by the topology.
    pub peers: &'a [&'a NodeRecord],
    /// The relays whose credentials an allowed recipient gets.
    pub relay: Option<&'a RelayIssuer>,
}

/// Builds and signs one node's bundle.
pub fn build(source: &BundleSource<'_>, key: &IdentityKey, now_ms: u64) -> SignedBundle {
    let epoch = source.epoch;
    let node = source.node;
    let (membership, peers) = match source.decision {
        Some(d) if d.allowed => (Membership::Allowed, source.peers),
        Some(d) => (
            Membership::Denied {
                reason: d.reason.clone(),
            },
            &[][..],
        ),
        None => (
            Membership::Denied {
                reason: "not evaluated in this epoch".to_owned(),
            },
            &[][..],
        ),
    };
    // A node enrolled before keys of small order were refused gets no key at all.
    let (membership, peers, sealer) = match Sealer::new(&node.wg_public_key) {
        Ok(sealer) => (membership, peers, Some(sealer)),
        Err(error) => (
            Membership::Denied {
                reason: error.to_string(),
            },
            &[][..],
            None,
        ),
    };
    let keys = PairKeys::new(&epoch.secret, epoch.id);
    let peers = sealer.as_ref().map_or_else(Vec::new, |sealer| {
        peers
            .iter()
            .enumerate()
            .map(|(i, peer)| {
                let psk = keys.derive(&node.wg_public_key, &peer.wg_public_key);
                BundlePeer {
                    node_id: peer.id.clone(),
                    public_key: peer.wg_public_key,
                    endpoint: None,
                    candidates: peer.endpoint.iter().cloned().collect(),
                    allowed_ips: peer.addresses.iter().map(|a| a.trunc_host()).collect(),
                    // A bundle has far fewer than 2^32 peers.
                    sealed_psk: sealer.seal(
                        u32::try_from(i).unwrap_or(u32::MAX),
                        epoch.id,
                        &peer.wg_public_key,
                        &psk,
                    ),
                }
            })
            .collect()
    });
    let relay = match (&membership, sealer.as_ref(), source.relay) {
        (Membership::Allowed, Some(sealer), Some(issuer)) => {
            Some(relay_credentials(issuer, sealer, epoch, &node.id))
        }
        _ => None,
    };
    let bundle = Bundle {
        relay,
        version: BUNDLE_VERSION,
        node_id: node.id.clone(),
        recipient: node.wg_public_key,
        epoch: epoch.id,
        activation_ms: epoch.activation_ms,
        not_after_ms: epoch.not_after_ms,
        issued_ms: now_ms,
        decided_ms: epoch.created_ms,
        membership,
        seal_key: sealer.as_ref().map(Sealer::ephemeral),
        peers,
        forward: false,
    };
    SignedBundle::sign(&bundle, key)
}

/// The recipient's relay credentials for `epoch`: they expire with the bundle
/// (`not_after`, rounded up to the second), so a node denied in a later epoch, which gets
/// none, loses the relay by the end of the last epoch it was allowed in.
fn relay_credentials(
    issuer: &RelayIssuer,
    sealer: &Sealer,
    epoch: &EpochRecord,
    node_id: &str,
) -> BundleRelay {
    let expires_s = epoch.not_after_ms.div_ceil(1000);
    let (username, password) = issuer.secret.mint(node_id, expires_s);
    BundleRelay {
        urls: issuer.urls.clone(),
        sealed_password: sealer.seal_relay(epoch.id, &username, &password),
        username,
        expires_s,
    }
}

/// Host-route form of an overlay address: a node's address `100.64.0.1/24` is announced to
/// its peers as `100.64.0.1/32`, the only source it may use.
trait HostRoute {
    fn trunc_host(&self) -> ipnet::IpNet;
}

impl HostRoute for ipnet::IpNet {
    fn trunc_host(&self) -> ipnet::IpNet {
        ipnet::IpNet::from(self.addr())
    }
}

/// A serialized signed bundle, shared between requests without copying.
pub type BundleJson = axum::body::Bytes;

/// Serialized signed bundles of recent epochs, by node.
#[derive(Default)]
pub struct BundleCache {
    inner: Mutex<HashMap<(EpochId, String), BundleJson>>,
}

impl BundleCache {
    /// The cached bundle, if built.
    pub fn get(&self, epoch: EpochId, node: &str) -> Option<BundleJson> {
        self.inner.lock().get(&(epoch, node.to_owned())).cloned()
    }

    /// True if the bundle is built.
    pub fn contains(&self, epoch: EpochId, node: &str) -> bool {
        self.inner.lock().contains_key(&(epoch, node.to_owned()))
    }

    /// Stores a built bundle, unless one was stored meanwhile; returns the stored one, so
    /// that concurrent builders of one bundle all serve the same bytes.
    pub fn put(&self, epoch: EpochId, node: &str, json: BundleJson) -> BundleJson {
        self.inner
            .lock()
            .entry((epoch, node.to_owned()))
            .or_insert(json)
            .clone()
    }

    /// Number of bundles held.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// True if no bundle is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every bundle of epochs older than `oldest`.
    pub fn retain_from(&self, oldest: EpochId) {
        self.inner.lock().retain(|(e, _), _| *e >= oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Evidence, History};
    use meshtun_proto::bundle::Opener;
    use meshtun_proto::{EpochSecret, PrivateKey};

    fn node(id: &str, key: &PrivateKey, addr: &str) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            wg_public_key: key.public_key(),
            identity_key: IdentityKey::generate().public(),
            addresses: vec![addr.parse().unwrap()],
            endpoint: Some(format!("{id}.example:51820")),
            pin: None,
            enrolled_ms: 0,
        }
    }

    fn decision(id: &str, allowed: bool) -> Decision {
        Decision {
            node_id: id.into(),
            allowed,
            reason: if allowed {
                "ok".into()
            } else {
                "overall score 0.40 is below the threshold 0.70".into()
            },
            passing: allowed,
            history: History::default(),
            evidence: Evidence {
                score: Some(0.4),
                threshold: 0.7,
                age_ms: Some(1),
                max_age_ms: 120_000,
                seq: Some(1),
            },
        }
    }

    fn epoch() -> EpochRecord {
        EpochRecord {
            id: 3,
            secret: EpochSecret::generate(),
            activation_ms: 1_000,
            not_after_ms: 61_000,
            created_ms: 900,
            cause: "schedule".into(),
        }
    }

    #[test]
    fn both_ends_of_a_pair_open_the_same_key() {
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        let (a, b) = (
            node("a", &ka, "100.64.0.1/24"),
            node("b", &kb, "100.64.0.2/24"),
        );
        let ep = epoch();
        let controller = IdentityKey::generate();
        let (da, db) = (decision("a", true), decision("b", true));
        let ba = build(
            &BundleSource {
                epoch: &ep,
                node: &a,
                decision: Some(&da),
                peers: &[&b],
                relay: None,
            },
            &controller,
            5,
        )
        .verify(&controller.public())
        .unwrap();
        let bb = build(
            &BundleSource {
                epoch: &ep,
                node: &b,
                decision: Some(&db),
                peers: &[&a],
                relay: None,
            },
            &controller,
            5,
        )
        .verify(&controller.public())
        .unwrap();
        let psk_a = Opener::new(&ka, &ba.seal_key.unwrap())
            .open(0, 3, &ba.peers[0])
            .unwrap();
        let psk_b = Opener::new(&kb, &bb.seal_key.unwrap())
            .open(0, 3, &bb.peers[0])
            .unwrap();
        assert_eq!(psk_a, psk_b);
        assert_eq!(
            ba.peers[0].allowed_ips,
            vec!["100.64.0.2/32".parse().unwrap()]
        );
        assert_eq!(ba.activation_ms, 1_000);
    }

    #[test]
    fn a_denied_node_gets_the_reason_and_no_keys() {
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        let (a, b) = (
            node("a", &ka, "100.64.0.1/24"),
            node("b", &kb, "100.64.0.2/24"),
        );
        let ep = epoch();
        let controller = IdentityKey::generate();
        let d = decision("a", false);
        let bundle = build(
            &BundleSource {
                epoch: &ep,
                node: &a,
                decision: Some(&d),
                peers: &[&b],
                relay: None,
            },
            &controller,
            5,
        )
        .verify(&controller.public())
        .unwrap();
        assert!(bundle.peers.is_empty());
        assert_eq!(
            bundle.membership,
            Membership::Denied {
                reason: "overall score 0.40 is below the threshold 0.70".into()
            }
        );
    }

    #[test]
    fn the_cache_keeps_recent_epochs() {
        let cache = BundleCache::default();
        cache.put(1, "a", BundleJson::from(vec![1]));
        cache.put(2, "a", BundleJson::from(vec![2]));
        cache.retain_from(2);
        assert!(cache.get(1, "a").is_none());
        assert!(!cache.contains(1, "a"));
        assert_eq!(cache.get(2, "a").as_deref(), Some(&[2][..]));
    }

    #[test]
    fn the_first_bundle_stored_wins() {
        let cache = BundleCache::default();
        assert_eq!(cache.put(1, "a", BundleJson::from(vec![1])), vec![1]);
        assert_eq!(cache.put(1, "a", BundleJson::from(vec![2])), vec![1]);
        assert_eq!(cache.get(1, "a").as_deref(), Some(&[1][..]));
    }

    #[test]
    fn allowed_nodes_get_sealed_relay_credentials_until_not_after_and_denied_ones_none() {
        use meshtun_proto::relay::RelaySecret;
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        let (a, b) = (
            node("a", &ka, "100.64.0.1/24"),
            node("b", &kb, "100.64.0.2/24"),
        );
        let ep = epoch();
        let controller = IdentityKey::generate();
        let issuer = RelayIssuer {
            urls: vec!["turn:198.51.100.1:3478".into()],
            secret: RelaySecret::new("north-wind-secret"),
        };
        let bundle_of = |d: &Decision| {
            build(
                &BundleSource {
                    epoch: &ep,
                    node: &a,
                    decision: Some(d),
                    peers: &[&b],
                    relay: Some(&issuer),
                },
                &controller,
                5,
            )
            .verify(&controller.public())
            .unwrap()
        };
        let allowed = bundle_of(&decision("a", true));
        let relay = allowed
            .relay
            .as_ref()
            .expect("an allowed node gets credentials");
        assert_eq!(relay.username, "61:a", "expiry = not_after (61,000 ms)");
        assert_eq!(relay.expires_s, 61);
        assert_eq!(relay.urls, issuer.urls);
        let password = Opener::new(&ka, &allowed.seal_key.unwrap())
            .open_relay(ep.id, relay)
            .unwrap();
        assert_eq!(password, issuer.secret.password("61:a"));
        let payload = serde_json::to_string(&allowed).unwrap();
        assert!(!payload.contains(password.expose()), "never in the clear");
        let denied = bundle_of(&decision("a", false));
        assert_eq!(
            denied.relay, None,
            "a denied node gets no relay credentials"
        );
    }
}
