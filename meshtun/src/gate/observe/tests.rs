use meshtun_proto::observation::HANDSHAKE_FRESH;
use meshtun_proto::{IdentityKey, PrivateKey};

use super::*;
use crate::wgcfg::PeerGate;

/// A peer of the device: gated as `node` if given, else a static one.
fn peer(node: Option<&str>) -> PeerStatus {
    PeerStatus {
        endpoint_since: None,
        public_key: PrivateKey::generate().public_key(),
        preshared_key: None,
        endpoint: None,
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
        persistent_keepalive: None,
        allowed_ips: Vec::new(),
        gate: node.map(|node_id| PeerGate {
            node_id: node_id.to_owned(),
            psk_since_ms: 0,
            psk_epoch: None,
            forwards_to: Vec::new(),
        }),
    }
}

fn nodes(peers: &[PeerStatus], chosen: &[usize]) -> Vec<String> {
    chosen
        .iter()
        .map(|&i| peers[i].gate.as_ref().unwrap().node_id.clone())
        .collect()
}

#[test]
fn rounds_are_bounded_round_robin_over_gated_peers_never_self() {
    let peers = vec![
        peer(Some("node-d")),
        peer(None),
        peer(Some("node-a")),
        peer(Some("me")),
        peer(Some("node-c")),
        peer(Some("node-b")),
        peer(Some("node-e")),
    ];
    let mut rounds = Rounds::default();
    let mut seen = Vec::new();
    for want in [
        ["node-a", "node-b"],
        ["node-c", "node-d"],
        ["node-e", "node-a"],
        ["node-b", "node-c"],
    ] {
        let chosen = rounds.next(&peers, "me", 2);
        assert_eq!(nodes(&peers, &chosen), want);
        seen.extend(chosen);
    }
    // Never the node itself nor a static peer; all five gated peers covered in three rounds.
    assert!(!seen.contains(&3) && !seen.contains(&1));
    for i in [0, 2, 4, 5, 6] {
        assert!(seen.contains(&i), "peer {i} never observed");
    }
    // A bound above the count takes each peer once.
    let all = Rounds::default().next(&peers, "me", 256);
    assert_eq!(
        nodes(&peers, &all),
        ["node-a", "node-b", "node-c", "node-d", "node-e"]
    );
    assert!(Rounds::default().next(&peers, "me", 0).is_empty());
    assert!(Rounds::default()
        .next(&[peer(Some("me")), peer(None)], "me", 16)
        .is_empty());
}

#[test]
fn rounds_go_on_after_peers_come_and_go() {
    let mut peers = vec![
        peer(Some("node-a")),
        peer(Some("node-b")),
        peer(Some("node-c")),
        // The same node twice (two keys during a change): observed once.
        peer(Some("node-b")),
    ];
    let mut rounds = Rounds::default();
    assert_eq!(
        nodes(&peers, &rounds.next(&peers, "me", 2)),
        ["node-a", "node-b"]
    );
    // node-b, observed last, leaves; the next round starts after where it was.
    peers.retain(|p| p.gate.as_ref().unwrap().node_id != "node-b");
    peers.push(peer(Some("node-ab")));
    assert_eq!(
        nodes(&peers, &rounds.next(&peers, "me", 2)),
        ["node-c", "node-a"]
    );
    assert_eq!(
        nodes(&peers, &rounds.next(&peers, "me", 2)),
        ["node-ab", "node-c"]
    );
}

fn reachable(ms: u64) -> Reachability {
    Reachability::Reachable {
        address: IpAddr::from([100, 64, 0, 2]),
        rtt: Duration::from_millis(ms),
    }
}

fn unreachable() -> Reachability {
    Reachability::Unreachable {
        address: IpAddr::from([100, 64, 0, 3]),
        timeout: Duration::from_secs(1),
    }
}

const NOW_MS: u64 = 1_800_000_000_000;

#[test]
fn an_answer_scores_reachable_latency_and_handshake() {
    let age = Some(Duration::from_secs(4));
    let statement = observation("node-a", "node-b", &reachable(250), age, NOW_MS).unwrap();
    assert_eq!(statement.issuer, Issuer::Node("node-a".into()));
    assert_eq!(statement.subject, "node-b");
    assert_eq!(statement.evaluated_at_ms, NOW_MS);
    assert_eq!(statement.scores[REACHABLE], 1.0);
    assert!((statement.scores[LATENCY] - 0.75).abs() < 1e-9);
    assert_eq!(statement.scores[HANDSHAKE], 1.0);
    assert_eq!(statement.scores.len(), 3);
    let evidence = br#"{"subject":"node-b","address":"100.64.0.2","reachable":true,"rtt_us":250000,"handshake_age_ms":4000}"#;
    assert_eq!(statement.evidence, EvidenceDigest::of(evidence));
    // Signed by the node, it verifies with the node's key only.
    let key = IdentityKey::from_bytes([3; 32]);
    let signed = statement.sign(&key).unwrap();
    signed.verify(&key.public()).unwrap();
    assert!(signed
        .verify(&IdentityKey::from_bytes([4; 32]).public())
        .is_err());
}

#[test]
fn no_answer_scores_unreachable_without_latency() {
    let stale = Some(HANDSHAKE_FRESH + Duration::from_secs(1));
    let statement = observation("node-a", "node-c", &unreachable(), stale, NOW_MS).unwrap();
    assert_eq!(statement.scores[REACHABLE], 0.0);
    assert_eq!(statement.scores[HANDSHAKE], 0.0);
    assert!(!statement.scores.contains_key(LATENCY));
    let never = observation("node-a", "node-c", &unreachable(), None, NOW_MS).unwrap();
    assert_eq!(never.scores[HANDSHAKE], 0.0);
    // What was measured differs, and so does the evidence.
    assert_ne!(statement.evidence, never.evidence);
    let slow = observation("node-a", "node-b", &reachable(2000), None, NOW_MS).unwrap();
    assert_eq!(slow.scores[LATENCY], 0.0);
    assert_eq!(slow.scores[REACHABLE], 1.0);
}

#[test]
fn an_unprobed_peer_or_this_node_makes_no_statement() {
    let unknown = Reachability::Unknown {
        address: Some(IpAddr::from([100, 64, 0, 4])),
        reason: "cannot open an ICMP socket".into(),
    };
    let fresh = Some(Duration::from_secs(1));
    assert_eq!(
        observation("node-a", "node-d", &unknown, fresh, NOW_MS),
        None
    );
    assert_eq!(
        observation("node-a", "node-a", &reachable(5), fresh, NOW_MS),
        None
    );
}

#[test]
fn handshake_ages_never_go_negative() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    assert_eq!(handshake_age(None, now), None);
    let before = now - Duration::from_secs(7);
    assert_eq!(
        handshake_age(Some(before), now),
        Some(Duration::from_secs(7))
    );
    let after = now + Duration::from_secs(7);
    assert_eq!(handshake_age(Some(after), now), Some(Duration::ZERO));
}

fn rejected(reason: &str) -> ClientError {
    ClientError::Rejected {
        what: "submitting a statement",
        reason: reason.into(),
    }
}

fn server_error() -> ClientError {
    ClientError::Server {
        what: "submitting a statement",
        status: 503,
        reason: "down".into(),
    }
}

#[test]
fn refusals_and_failures_are_told_apart_and_logged_once() {
    assert_eq!(Outcome::of(&rejected("x")), Outcome::Refused);
    let throttled = ClientError::Throttled {
        what: "w",
        retry_after: Duration::from_secs(1),
        reason: "r".into(),
    };
    assert_eq!(Outcome::of(&throttled), Outcome::Refused);
    let teapot = ClientError::Status {
        what: "w",
        status: 418,
        reason: "r".into(),
    };
    assert_eq!(Outcome::of(&teapot), Outcome::Refused);
    assert_eq!(Outcome::of(&server_error()), Outcome::Failed);
    assert_eq!(Outcome::of(&ClientError::Url("u".into())), Outcome::Failed);

    let mut warnings = Warnings::default();
    assert!(warnings.should_log(&server_error()));
    assert!(!warnings.should_log(&server_error()));
    assert!(warnings.should_log(&rejected("not enrolled")));
    assert!(!warnings.should_log(&rejected("not enrolled")));
    assert!(warnings.should_log(&rejected("about itself")));
    warnings.succeeded();
    assert!(warnings.should_log(&server_error()));
    assert!(warnings.should_log(&rejected("not enrolled")));
    // Reasons remembered are bounded: the oldest is forgotten, and logged again.
    for i in 0..MAX_REASONS {
        warnings.should_log(&rejected(&format!("reason {i}")));
    }
    assert!(warnings.should_log(&rejected("not enrolled")));
    // A peer that could not be probed: once per reason, whatever the submissions did.
    assert!(warnings.should_log_once("no ICMP socket"));
    assert!(!warnings.should_log_once("no ICMP socket"));
    warnings.succeeded();
    assert!(!warnings.should_log_once("no ICMP socket"));
    assert!(warnings.should_log_once("no address to probe"));
}
