//! Who talks to whom among the allowed nodes.
//!
//! - Full mesh: every allowed node peers with every other allowed node.
//! - Hub and spoke: an allowed hub peers with every other allowed node (hubs and spokes);
//!   a spoke peers only with the allowed hubs. Hub ids that are not allowed (or not
//!   enrolled) are ignored.
//!
//! A node that is not allowed has no peers. The relation is symmetric: `a` is a peer of
//! `b` exactly when `b` is a peer of `a`.
//!
//! In hub and spoke, the allowed hubs forward between their peers ([`forwards`]), and a
//! spoke reaches every other allowed spoke through exactly one hub, that spoke's *home hub*
//! ([`routed_via`]): the allowed hub with the highest SipHash-1-3 (keys 0, 0) of
//! `hub id ‖ 0x00 ‖ key`, where the caller gives each spoke its key (rendezvous hashing).
//! The engine's key is the block of the spoke's first address (see
//! [`crate::bundles::address_block`]), so that neighbouring addresses share a hub and its
//! routes aggregate. Every node agrees on a spoke's home hub, the keys spread evenly over the
//! hubs, and when a hub is denied only the spokes it was home to move, each to its
//! next-ranked hub. WireGuard's cryptokey routing forbids one address on two peers, hence one
//! hub per spoke.
//!
//! The allowed set is a [`BTreeSet`], built once per epoch with [`allowed_ids`]; asking for
//! one node's peers then costs a lookup per hub for a spoke, and allocates nothing but the
//! returned list.

use std::collections::BTreeSet;

use crate::model::{Decision, Topology};

/// The ids of the allowed nodes among `decisions`.
pub fn allowed_ids(decisions: &[Decision]) -> BTreeSet<&str> {
    decisions
        .iter()
        .filter(|d| d.allowed)
        .map(|d| d.node_id.as_str())
        .collect()
}

/// The peers of `node` among the `allowed` nodes, sorted by id; empty when `node` is not
/// allowed.
pub fn peers_of<'a>(node: &str, allowed: &BTreeSet<&'a str>, topology: &Topology) -> Vec<&'a str> {
    if !allowed.contains(node) {
        return Vec::new();
    }
    match topology {
        Topology::HubAndSpoke { hubs } if !hubs.iter().any(|h| h == node) => {
            allowed_hubs(hubs, allowed)
        }
        Topology::FullMesh | Topology::HubAndSpoke { .. } => everyone_but(node, allowed),
    }
}

/// Whether `a` and `b` peer when both are allowed: always in a full mesh; in hub and spoke,
/// when one of them is a hub. (Whether they are allowed is the caller's to check.)
pub fn would_peer(a: &str, b: &str, topology: &Topology) -> bool {
    match topology {
        Topology::FullMesh => a != b,
        Topology::HubAndSpoke { hubs } => a != b && hubs.iter().any(|h| h == a || h == b),
    }
}

/// How many peer pairs (tunnels) the `allowed` nodes form, each pair counted once.
pub fn pair_count(allowed: &BTreeSet<&str>, topology: &Topology) -> u64 {
    let n = allowed.len() as u64;
    match topology {
        Topology::FullMesh => n * n.saturating_sub(1) / 2,
        Topology::HubAndSpoke { hubs } => {
            let h = allowed_hubs(hubs, allowed).len() as u64;
            h * h.saturating_sub(1) / 2 + h * (n - h)
        }
    }
}

/// True if `node` forwards packets between its peers: an allowed hub of hub and spoke.
pub fn forwards(node: &str, allowed: &BTreeSet<&str>, topology: &Topology) -> bool {
    match topology {
        Topology::HubAndSpoke { hubs } => allowed.contains(node) && hubs.iter().any(|h| h == node),
        Topology::FullMesh => false,
    }
}

/// For a spoke `node`: the other allowed spokes that each of its hubs forwards to, as
/// `(hub, spokes)` pairs sorted by hub, spokes sorted by id, each spoke under its home hub
/// only, chosen by the spoke's `key` (see the [module notes](self)). Empty for a hub, a node
/// that is not allowed, a full mesh, or when no hub is allowed.
pub fn routed_via<'a, K: AsRef<[u8]>>(
    node: &str,
    allowed: &BTreeSet<&'a str>,
    topology: &Topology,
    key: impl Fn(&'a str) -> K,
) -> Vec<(&'a str, Vec<&'a str>)> {
    let Topology::HubAndSpoke { hubs } = topology else {
        return Vec::new();
    };
    if !allowed.contains(node) || hubs.iter().any(|h| h == node) {
        return Vec::new();
    }
    let hubs = allowed_hubs(hubs, allowed);
    let mut routes: Vec<(&'a str, Vec<&'a str>)> = hubs.iter().map(|h| (*h, Vec::new())).collect();
    for &spoke in allowed {
        if spoke == node || hubs.binary_search(&spoke).is_ok() {
            continue;
        }
        let key = key(spoke);
        let home =
            (0..hubs.len()).max_by_key(|&i| (rank(hubs[i], key.as_ref()), std::cmp::Reverse(i)));
        if let Some(i) = home {
            routes[i].1.push(spoke);
        }
    }
    routes
}

/// The rendezvous weight of `hub` for a spoke's `key`: stable across runs, builds and
/// platforms.
fn rank(hub: &str, key: &[u8]) -> u64 {
    use std::hash::Hasher as _;
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
    h.write(hub.as_bytes());
    h.write(&[0]);
    h.write(key);
    h.finish()
}

/// Every allowed node except `node`, which is allowed.
fn everyone_but<'a>(node: &str, allowed: &BTreeSet<&'a str>) -> Vec<&'a str> {
    let mut peers = Vec::with_capacity(allowed.len().saturating_sub(1));
    peers.extend(allowed.iter().copied().filter(|&n| n != node));
    peers
}

/// The allowed hubs, sorted, each once.
fn allowed_hubs<'a>(hubs: &[String], allowed: &BTreeSet<&'a str>) -> Vec<&'a str> {
    let mut found: Vec<&'a str> = hubs
        .iter()
        .filter_map(|h| allowed.get(h.as_str()).copied())
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each spoke its own key.
    fn id(spoke: &str) -> &str {
        spoke
    }

    fn set<'a>(ids: &[&'a str]) -> BTreeSet<&'a str> {
        ids.iter().copied().collect()
    }

    fn hub_and_spoke(hubs: &[&str]) -> Topology {
        Topology::HubAndSpoke {
            hubs: hubs.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn full_mesh_peers_are_every_other_allowed_node() {
        let allowed = set(&["a", "b", "c"]);
        assert_eq!(peers_of("a", &allowed, &Topology::FullMesh), ["b", "c"]);
        assert_eq!(peers_of("c", &allowed, &Topology::FullMesh), ["a", "b"]);
        assert!(peers_of("d", &allowed, &Topology::FullMesh).is_empty());
        assert_eq!(pair_count(&allowed, &Topology::FullMesh), 3);
    }

    #[test]
    fn full_mesh_pair_counts() {
        let ids: Vec<String> = (0..1000).map(|i| format!("n{i}")).collect();
        for n in [0usize, 1, 2, 5, 1000] {
            let allowed: BTreeSet<&str> = ids.iter().take(n).map(String::as_str).collect();
            let expected = (n * n.saturating_sub(1) / 2) as u64;
            assert_eq!(
                pair_count(&allowed, &Topology::FullMesh),
                expected,
                "{n} nodes"
            );
            if let Some(first) = allowed.first() {
                assert_eq!(peers_of(first, &allowed, &Topology::FullMesh).len(), n - 1);
            }
        }
    }

    #[test]
    fn spokes_see_only_hubs_and_hubs_see_everyone() {
        let allowed = set(&["h1", "h2", "s1", "s2"]);
        let topo = hub_and_spoke(&["h1", "h2"]);
        assert_eq!(peers_of("s1", &allowed, &topo), ["h1", "h2"]);
        assert_eq!(peers_of("h1", &allowed, &topo), ["h2", "s1", "s2"]);
        assert_eq!(peers_of("h2", &allowed, &topo), ["h1", "s1", "s2"]);
        // h1-h2, and each hub with each spoke.
        assert_eq!(pair_count(&allowed, &topo), 1 + 2 * 2);
    }

    #[test]
    fn a_denied_hub_disappears_from_the_spokes() {
        let allowed = set(&["h2", "s1", "s2"]);
        let topo = hub_and_spoke(&["h1", "h2"]);
        assert_eq!(peers_of("s1", &allowed, &topo), ["h2"]);
        assert!(peers_of("h1", &allowed, &topo).is_empty());
        assert_eq!(peers_of("h2", &allowed, &topo), ["s1", "s2"]);
        assert_eq!(pair_count(&allowed, &topo), 2);
    }

    #[test]
    fn spokes_without_an_allowed_hub_are_isolated() {
        let allowed = set(&["s1", "s2"]);
        let topo = hub_and_spoke(&["h1"]);
        assert!(peers_of("s1", &allowed, &topo).is_empty());
        assert_eq!(pair_count(&allowed, &topo), 0);
    }

    #[test]
    fn a_hub_listed_twice_is_one_peer() {
        let allowed = set(&["h1", "s1"]);
        let topo = hub_and_spoke(&["h1", "h1"]);
        assert_eq!(peers_of("s1", &allowed, &topo), ["h1"]);
        assert_eq!(pair_count(&allowed, &topo), 1);
    }

    #[test]
    fn ten_thousand_spokes() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("s{i}")).collect();
        let mut allowed: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        allowed.extend(["h1", "h2", "h3"]);
        let topo = hub_and_spoke(&["h1", "h2", "h3", "h4"]);
        assert_eq!(peers_of("s42", &allowed, &topo), ["h1", "h2", "h3"]);
        assert_eq!(peers_of("h1", &allowed, &topo).len(), 10_002);
        assert_eq!(pair_count(&allowed, &topo), 3 + 3 * 10_000);
    }

    #[test]
    fn only_allowed_hubs_forward() {
        let allowed = set(&["h1", "s1"]);
        let topo = hub_and_spoke(&["h1", "h2"]);
        assert!(forwards("h1", &allowed, &topo));
        assert!(!forwards("h2", &allowed, &topo), "a denied hub");
        assert!(!forwards("s1", &allowed, &topo), "a spoke");
        assert!(!forwards("h1", &allowed, &Topology::FullMesh));
    }

    #[test]
    fn each_other_spoke_is_routed_through_exactly_one_hub() {
        let ids: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
        let mut allowed: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        allowed.extend(["h1", "h2", "h3"]);
        let topo = hub_and_spoke(&["h3", "h1", "h2"]);
        let via = routed_via("s0", &allowed, &topo, id);
        let hubs: Vec<&str> = via.iter().map(|(h, _)| *h).collect();
        assert_eq!(hubs, ["h1", "h2", "h3"]);
        let mut all: Vec<&str> = via.iter().flat_map(|(_, s)| s.iter().copied()).collect();
        assert_eq!(all.len(), 299, "every other spoke once, not s0, no hub");
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 299);
        assert!(!all.contains(&"s0"));
        for (hub, spokes) in &via {
            assert!(spokes.len() > 50, "{hub} carries {} spokes", spokes.len());
            assert!(spokes.windows(2).all(|w| w[0] < w[1]), "sorted");
        }
        // Every spoke agrees on another spoke's home hub.
        let home = |from: &str, to: &str| {
            routed_via(from, &allowed, &topo, id)
                .into_iter()
                .find(|(_, s)| s.contains(&to))
                .map(|(h, _)| h)
        };
        assert_eq!(home("s0", "s7"), home("s1", "s7"));
        assert!(home("s0", "s7").is_some());
        // Hubs, denied nodes and full meshes route nothing through anyone.
        assert!(routed_via("h1", &allowed, &topo, id).is_empty());
        assert!(routed_via("s999", &allowed, &topo, id).is_empty());
        assert!(routed_via("s0", &allowed, &Topology::FullMesh, id).is_empty());
    }

    #[test]
    fn a_denied_spoke_leaves_every_route_and_a_denied_hub_moves_only_its_spokes() {
        let ids: Vec<String> = (0..60).map(|i| format!("s{i}")).collect();
        let mut allowed: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        allowed.extend(["h1", "h2"]);
        let topo = hub_and_spoke(&["h1", "h2"]);
        let before = routed_via("s0", &allowed, &topo, id);
        allowed.remove("s5");
        let without_s5 = routed_via("s0", &allowed, &topo, id);
        assert!(without_s5.iter().all(|(_, s)| !s.contains(&"s5")));
        for ((h, a), (_, b)) in before.iter().zip(&without_s5) {
            let expected: Vec<&str> = a.iter().copied().filter(|s| *s != "s5").collect();
            assert_eq!(&expected, b, "the other spokes stay on {h}");
        }
        allowed.remove("h2");
        let only_h1 = routed_via("s0", &allowed, &topo, id);
        assert_eq!(only_h1.len(), 1);
        assert_eq!(only_h1[0].0, "h1");
        assert_eq!(only_h1[0].1.len(), 58, "60 spokes minus s0 and s5");
    }

    #[test]
    fn spokes_with_one_key_share_a_hub() {
        let ids: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
        let mut allowed: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        allowed.extend(["h1", "h2", "h3"]);
        let topo = hub_and_spoke(&["h1", "h2", "h3"]);
        // Ten blocks of twenty spokes.
        let block = |s: &str| [s[1..].parse::<u8>().unwrap_or(0) / 20];
        let via = routed_via("s0", &allowed, &topo, block);
        for (_, spokes) in &via {
            for s in spokes {
                let mates = spokes.iter().filter(|o| block(o) == block(s)).count();
                let expected = if block(s) == block("s0") { 19 } else { 20 };
                assert_eq!(mates, expected, "{s}'s block is split");
            }
        }
        assert!(
            via.iter().filter(|(_, s)| !s.is_empty()).count() >= 2,
            "no spread"
        );
    }

    #[test]
    fn a_single_hub_routes_every_other_spoke() {
        let allowed = set(&["h1", "s1", "s2", "s3"]);
        let topo = hub_and_spoke(&["h1"]);
        assert_eq!(
            routed_via("s2", &allowed, &topo, id),
            [("h1", vec!["s1", "s3"])]
        );
    }

    #[test]
    fn allowed_ids_keeps_only_allowed_decisions() {
        let decision = |id: &str, allowed: bool| Decision {
            node_id: id.into(),
            allowed,
            reason: String::new(),
            passing: allowed,
            history: Default::default(),
            evidence: crate::model::Evidence {
                score: None,
                threshold: 0.7,
                age_ms: None,
                max_age_ms: 120_000,
                seq: None,
                sources: Vec::new(),
            },
        };
        let decisions = [
            decision("a", true),
            decision("b", false),
            decision("c", true),
        ];
        assert_eq!(allowed_ids(&decisions), set(&["a", "c"]));
    }

    #[test]
    fn random_topologies_are_symmetric_and_counted_right() {
        let mut rng = fastrand::Rng::with_seed(7);
        let ids: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
        for round in 0..200 {
            let allowed: BTreeSet<&str> = ids
                .iter()
                .filter(|_| rng.bool())
                .map(String::as_str)
                .collect();
            let topo = if round % 2 == 0 {
                Topology::FullMesh
            } else {
                let hubs = ids.iter().filter(|_| rng.u8(..10) == 0).cloned().collect();
                Topology::HubAndSpoke { hubs }
            };
            let mut directed = 0u64;
            for a in &ids {
                let peers = peers_of(a, &allowed, &topo);
                for b in &ids {
                    let both = allowed.contains(a.as_str()) && allowed.contains(b.as_str());
                    assert_eq!(
                        both && would_peer(a, b, &topo),
                        peers.contains(&b.as_str()),
                        "would_peer({a}, {b}) disagrees with peers_of"
                    );
                }
                assert!(!peers.contains(&a.as_str()), "{a} is its own peer");
                assert!(peers.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
                for b in &peers {
                    assert!(allowed.contains(b), "{b} is not allowed");
                    assert!(
                        peers_of(b, &allowed, &topo).contains(&a.as_str()),
                        "{a}-{b}"
                    );
                }
                directed += peers.len() as u64;
            }
            assert_eq!(pair_count(&allowed, &topo) * 2, directed, "{topo:?}");
        }
    }
}
