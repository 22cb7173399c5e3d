//! Building the signed bundle of one node for one epoch.
//!
//! Pair keys are derived when a bundle is built, never stored: a 1,000-node full mesh would
//! otherwise hold half a million keys per epoch. Bundles are built on first request (or
//! ahead of time, in parallel) and cached per epoch, so serving is a lookup.

use std::collections::HashMap;

use meshtun_proto::bundle::{
    Bundle, BundlePeer, Membership, Sealer, SignedBundle, BUNDLE_VERSION, MAX_CANDIDATES,
    MAX_FORWARDS_NAMED,
};
use meshtun_proto::membership::PeerEnrollment;
use meshtun_proto::relay::BundleRelay;
use meshtun_proto::{EpochId, IdentityKey, PairKeys};
use parking_lot::Mutex;

use crate::model::{Decision, EpochRecord, NodeRecord};
use crate::relay::RelayIssuer;
use crate::store::Candidates;

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
    /// For each peer (same order; missing entries are empty), the nodes the recipient
    /// reaches through it: a hub's other spokes. Their host routes join the peer's allowed
    /// IPs.
    pub routed: &'a [Vec<&'a NodeRecord>],
    /// Whether the recipient forwards between its peers (an allowed hub).
    pub forward: bool,
    /// Every node's latest candidate report, by node id.
    pub candidates: &'a HashMap<String, Candidates>,
    /// The relays whose credentials an allowed recipient gets.
    pub relay: Option<&'a RelayIssuer>,
}

/// Where `peer` may be reached, best first, at most [`MAX_CANDIDATES`]: the endpoint an
/// admin pinned, then what it reported, then where its report came from; each once.
pub fn peer_candidates(peer: &NodeRecord, report: Option<&Candidates>) -> Vec<String> {
    let reported = report.into_iter().flat_map(|r| {
        r.reported
            .iter()
            .chain(std::iter::once(&r.observed).filter(|o| !o.is_empty()))
            .cloned()
    });
    let mut list: Vec<String> = Vec::with_capacity(MAX_CANDIDATES);
    for candidate in peer.endpoint.iter().cloned().chain(reported) {
        if list.len() == MAX_CANDIDATES {
            break;
        }
        if !list.contains(&candidate) {
            list.push(candidate);
        }
    }
    list
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
                let routed = source.routed.get(i).map_or(&[][..], Vec::as_slice);
                let mut allowed_ips: Vec<ipnet::IpNet> =
                    peer.addresses.iter().map(HostRoute::trunc_host).collect();
                allowed_ips.extend(forwarded_routes(routed));
                BundlePeer {
                    forwards_to: routed
                        .iter()
                        .take(MAX_FORWARDS_NAMED)
                        .map(|n| n.id.clone())
                        .collect(),
                    node_id: peer.id.clone(),
                    public_key: peer.wg_public_key,
                    endpoint: None,
                    candidates: peer_candidates(peer, source.candidates.get(&peer.id)),
                    allowed_ips,
                    // A bundle has far fewer than 2^32 peers.
                    sealed_psk: sealer.seal(
                        u32::try_from(i).unwrap_or(u32::MAX),
                        epoch.id,
                        &peer.wg_public_key,
                        &psk,
                    ),
                    enrollment: peer.membership_sig.map(|signature| PeerEnrollment {
                        identity: peer.identity_key,
                        signature,
                    }),
                }
            })
            .collect()
    });
    let allowed = membership == Membership::Allowed;
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
        forward: source.forward && allowed,
        peers,
    };
    SignedBundle::sign(&bundle, key)
}

/// The routes of the nodes a hub forwards to: their host routes, aggregated into the fewest
/// networks that cover exactly those addresses (`100.64.0.4/32` and `100.64.0.5/32` become
/// `100.64.0.4/31`), so that neighbouring spokes cost one route, not one each.
fn forwarded_routes(nodes: &[&NodeRecord]) -> Vec<ipnet::IpNet> {
    let hosts: Vec<ipnet::IpNet> = nodes
        .iter()
        .flat_map(|n| n.addresses.iter().map(HostRoute::trunc_host))
        .collect();
    ipnet::IpNet::aggregate(&hosts)
}

/// The key that picks a spoke's home hub (`membership::topology`): the block of its first
/// address, a /24 for IPv4 or a /120 for IPv6, so that the spokes of one block share a hub
/// and their routes aggregate; all zeros for a node without an address.
pub fn address_block(node: Option<&NodeRecord>) -> [u8; 17] {
    let mut key = [0u8; 17];
    match node
        .and_then(|n| n.addresses.first())
        .map(ipnet::IpNet::addr)
    {
        Some(std::net::IpAddr::V4(a)) => {
            key[0] = 4;
            key[1..4].copy_from_slice(&a.octets()[..3]);
        }
        Some(std::net::IpAddr::V6(a)) => {
            key[0] = 6;
            key[1..16].copy_from_slice(&a.octets()[..15]);
        }
        None => {}
    }
    key
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
            membership_sig: None,
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
                sources: Vec::new(),
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
                routed: &[],
                forward: false,
                candidates: &HashMap::new(),
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
                routed: &[],
                forward: false,
                candidates: &HashMap::new(),
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

    /// A peer enrolled with a membership signature is listed with it and its identity key,
    /// which a node with the membership key verifies; one enrolled without has none.
    #[test]
    fn a_peers_membership_signature_travels_with_its_identity_key() {
        let key = meshtun_proto::membership::MembershipKey::generate();
        let a = node("a", &PrivateKey::generate(), "100.64.0.1/24");
        let mut b = node("b", &PrivateKey::generate(), "100.64.0.2/24");
        b.membership_sig = key.sign("b", &b.wg_public_key, &b.identity_key).ok();
        let c = node("c", &PrivateKey::generate(), "100.64.0.3/24");
        let (ep, controller, da) = (epoch(), IdentityKey::generate(), decision("a", true));
        let bundle = build(
            &BundleSource {
                epoch: &ep,
                node: &a,
                decision: Some(&da),
                peers: &[&b, &c],
                routed: &[],
                forward: false,
                candidates: &HashMap::new(),
                relay: None,
            },
            &controller,
            5,
        )
        .verify(&controller.public())
        .unwrap();
        let listed = bundle.peers[0].enrollment.expect("b's enrollment");
        assert_eq!(listed.identity, b.identity_key);
        assert_eq!(Some(listed.signature), b.membership_sig);
        let verified = key.public().verify(
            "b",
            &bundle.peers[0].public_key,
            &listed.identity,
            &listed.signature,
        );
        assert_eq!(verified, Ok(()));
        assert_eq!(bundle.peers[1].enrollment, None);
    }

    /// The pinned endpoint comes first, then the report in its order, then where it came
    /// from; duplicates once; never more than a bundle may hold.
    #[test]
    fn a_peers_candidates_are_pinned_then_reported_then_observed() {
        let mut peer = node("b", &PrivateKey::generate(), "100.64.0.2/24");
        peer.endpoint = Some("192.0.2.2:51820".into());
        assert_eq!(peer_candidates(&peer, None), ["192.0.2.2:51820"]);
        let report = Candidates {
            reported: vec![
                "198.51.100.2:40002".into(),
                "192.0.2.2:51820".into(),
                "10.0.0.2:51820".into(),
            ],
            observed: "198.51.100.2:51820".into(),
            reported_ms: 1,
        };
        assert_eq!(
            peer_candidates(&peer, Some(&report)),
            [
                "192.0.2.2:51820",
                "198.51.100.2:40002",
                "10.0.0.2:51820",
                "198.51.100.2:51820"
            ]
        );
        let many = Candidates {
            reported: (1..=20).map(|i| format!("198.51.100.{i}:1")).collect(),
            ..report
        };
        assert_eq!(peer_candidates(&peer, Some(&many)).len(), MAX_CANDIDATES);
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
                routed: &[],
                forward: false,
                candidates: &HashMap::new(),
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
    fn a_spoke_routes_the_other_spokes_through_its_hub_and_the_hub_forwards() {
        let keys: Vec<PrivateKey> = (0..3).map(|_| PrivateKey::generate()).collect();
        let hub = node("hub", &keys[0], "100.64.0.1/24");
        let mut s2 = node("s2", &keys[1], "100.64.0.2/24");
        s2.addresses.push("fd00::2/64".parse().unwrap());
        let s3 = node("s3", &keys[2], "100.64.0.3/24");
        let (ep, controller) = (epoch(), IdentityKey::generate());
        let build_for = |n: &NodeRecord,
                         allowed: bool,
                         peers: &[&NodeRecord],
                         routed: &[Vec<&NodeRecord>],
                         forward: bool| {
            let d = decision(&n.id, allowed);
            build(
                &BundleSource {
                    relay: None,
                    candidates: &HashMap::new(),
                    epoch: &ep,
                    node: n,
                    decision: Some(&d),
                    peers,
                    routed,
                    forward,
                },
                &controller,
                5,
            )
            .verify(&controller.public())
            .unwrap()
        };
        let via_hub = [vec![&s2]];
        let spoke = build_for(&s3, true, &[&hub], &via_hub, false);
        assert!(!spoke.forward);
        assert_eq!(spoke.peers[0].forwards_to, ["s2"]);
        let ips: Vec<String> = spoke.peers[0]
            .allowed_ips
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ips, ["100.64.0.1/32", "100.64.0.2/32", "fd00::2/128"]);
        let hub_bundle = build_for(&hub, true, &[&s2, &s3], &[], true);
        assert!(hub_bundle.forward);
        assert!(hub_bundle.peers.iter().all(|p| p.forwards_to.is_empty()));
        // A denied hub forwards nothing, whatever the caller says.
        let denied = build_for(&hub, false, &[&s2, &s3], &[], true);
        assert!(!denied.forward);
        assert!(denied.peers.is_empty());
    }

    #[test]
    fn forwarded_routes_aggregate_exactly_and_at_most_64_nodes_are_named() {
        let keys: Vec<PrivateKey> = (0..100).map(|_| PrivateKey::generate()).collect();
        let spokes: Vec<NodeRecord> = (0..100)
            .map(|i| {
                node(
                    &format!("s{i:03}"),
                    &keys[i],
                    &format!("100.64.1.{}/16", i + 4),
                )
            })
            .collect();
        // .4 to .103 except .50: the hole must stay out of every route.
        let routed: Vec<&NodeRecord> = spokes.iter().filter(|n| n.id != "s046").collect();
        let hub = node("hub", &keys[0], "100.64.0.1/16");
        let (ep, controller) = (epoch(), IdentityKey::generate());
        let recipient = node("s046", &keys[46], "100.64.1.50/16");
        let d = decision("s046", true);
        let routed = [routed];
        let bundle = build(
            &BundleSource {
                relay: None,
                candidates: &HashMap::new(),
                epoch: &ep,
                node: &recipient,
                decision: Some(&d),
                peers: &[&hub],
                routed: &routed,
                forward: false,
            },
            &controller,
            5,
        )
        .verify(&controller.public())
        .unwrap();
        let ips = &bundle.peers[0].allowed_ips;
        assert!(ips.len() < 16, "{} routes: {ips:?}", ips.len());
        let covered = |a: &str| {
            ips.iter()
                .any(|n| n.contains(&a.parse::<std::net::IpAddr>().unwrap()))
        };
        for host in (4..104).filter(|h| *h != 50) {
            assert!(
                covered(&format!("100.64.1.{host}")),
                ".{host} is not routed"
            );
        }
        for outside in ["100.64.1.50", "100.64.1.3", "100.64.1.104", "100.64.0.2"] {
            assert!(!covered(outside), "{outside} is routed: {ips:?}");
        }
        assert!(covered("100.64.0.1"), "the hub's own address");
        assert_eq!(bundle.peers[0].forwards_to.len(), MAX_FORWARDS_NAMED);
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
                    candidates: &HashMap::new(),
                    forward: false,
                    routed: &[],
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
