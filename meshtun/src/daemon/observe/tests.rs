use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use meshtun_proto::observation::{HANDSHAKE, LATENCY, REACHABLE};
use meshtun_proto::statement::SignedStatement;
use meshtun_proto::{IdentityKey, KeySet, PrivateKey};

use super::*;
use crate::wgcfg::PeerGate;

fn peer(node: Option<&str>, nets: &[&str]) -> PeerStatus {
    PeerStatus {
        endpoint_since: None,
        public_key: PrivateKey::generate().public_key(),
        preshared_key: None,
        endpoint: None,
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
        persistent_keepalive: None,
        allowed_ips: nets.iter().map(|n| n.parse().unwrap()).collect(),
        gate: node.map(|node_id| PeerGate {
            node_id: node_id.to_owned(),
            psk_since_ms: 0,
            psk_epoch: None,
            forwards_to: Vec::new(),
        }),
    }
}

/// One round with the real prober over the loopback interface (root, as in CI; otherwise
/// the ICMP socket is refused and nothing is observed): a peer that answers scores
/// reachable with its latency and the handshake read after the probe; a peer with no
/// address to probe makes no statement; this node and a static peer are never chosen.
#[tokio::test]
async fn a_round_probes_the_chosen_gated_peers_and_states_what_it_saw() {
    let peers = vec![
        peer(Some("node-a"), &["127.0.0.3/32"]),
        peer(Some("node-b"), &["127.0.0.1/32"]),
        peer(None, &["127.0.0.2/32"]),
        peer(Some("node-c"), &[]),
    ];
    let chosen = Rounds::default().next(&peers, "node-a", 16);
    assert_eq!(chosen, [1, 3]);
    let shaken = SystemTime::now() - Duration::from_secs(3);
    let again = || {
        let mut after = peers.clone();
        after[1].last_handshake = Some(shaken);
        Some(after)
    };
    let measured = measure("lo", &peers, &chosen, &HashSet::new(), again).await;
    assert_eq!(measured.len(), 2);
    assert_eq!(
        measured[0].last_handshake,
        Some(shaken),
        "read after the probe"
    );
    let unprobed = |m: &Measured| match &m.reach {
        Reachability::Unknown { reason, .. } => reason.clone(),
        other => panic!("{other:?}"),
    };
    assert!(unprobed(&measured[1]).contains("no allowed IPs"));
    let mut warnings = Warnings::default();
    let made = statements("node-a", &measured, SystemTime::now(), &mut warnings);
    if !nix::unistd::geteuid().is_root() {
        assert!(unprobed(&measured[0]).contains("ICMP socket"));
        assert!(made.is_empty());
        return;
    }
    assert_eq!(made.len(), 1, "{measured:?}");
    let statement = &made[0];
    assert_eq!(statement.subject, "node-b");
    assert_eq!(statement.scores[REACHABLE], 1.0);
    assert!(statement.scores[LATENCY] > 0.9, "{statement:?}");
    assert_eq!(statement.scores[HANDSHAKE], 1.0);
}

/// A controller stub: 201 for every statement but those about `refused_subject` (422); or
/// 503 for all when `down`.
async fn stub(refused_subject: &'static str, down: bool) -> String {
    let handler = move |body: Bytes| async move {
        let signed = SignedStatement::decode(&body).unwrap();
        if down {
            (StatusCode::SERVICE_UNAVAILABLE, "down".to_owned())
        } else if signed.statement.subject == refused_subject {
            let why = r#"{"error":"node-b is not enrolled"}"#;
            (StatusCode::UNPROCESSABLE_ENTITY, why.to_owned())
        } else {
            (StatusCode::CREATED, r#"{"id":1}"#.to_owned())
        }
    };
    let app = Router::new().route("/v1/statements", post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn client(url: &str) -> ControllerClient {
    let key = IdentityKey::from_bytes([5; 32]);
    let controller = KeySet::one(IdentityKey::from_bytes([6; 32]).public());
    ControllerClient::new(url, controller, "node-a", key, PrivateKey::generate()).unwrap()
}

fn made(subjects: &[&str]) -> Vec<Statement> {
    let reach = Reachability::Reachable {
        address: IpAddr::from([100, 64, 0, 2]),
        rtt: Duration::from_millis(3),
    };
    subjects
        .iter()
        .map(|s| observation("node-a", s, &reach, None, unix_ms()).unwrap())
        .collect()
}

fn counts(status: &SharedGateStatus) -> (u64, u64, u64) {
    let s = status.lock();
    (
        s.observations_sent,
        s.observations_refused,
        s.observations_failed,
    )
}

/// Each outcome is counted; submissions are paced `gap` apart; a refusal goes on to the
/// next statement, a failure (every instance lost) ends the round at once.
#[tokio::test]
async fn submissions_are_counted_paced_and_a_failure_ends_the_round() {
    let status = SharedGateStatus::default();
    let mut warnings = Warnings::default();
    let working = client(&stub("node-b", false).await);
    let round = made(&["node-b", "node-c", "node-d"]);
    let gap = Duration::from_millis(150);
    let started = std::time::Instant::now();
    submit_all(&working, round, &status, &mut warnings, gap).await;
    assert_eq!(
        counts(&status),
        (2, 1, 0),
        "a refusal does not end the round"
    );
    assert!(
        started.elapsed() >= gap * 2,
        "paced: {:?}",
        started.elapsed()
    );

    let down = client(&stub("", true).await);
    let round = made(&["node-b", "node-c", "node-d"]);
    let started = std::time::Instant::now();
    submit_all(&down, round, &status, &mut warnings, gap).await;
    assert_eq!(
        counts(&status),
        (2, 1, 1),
        "the first failure ends the round"
    );
    assert!(started.elapsed() < gap, "no wait after the last");

    // A statement that cannot be signed (a subject out of bounds) fails alone.
    let round = made(&["Not A Node", "node-c"]);
    submit_all(&working, round, &status, &mut warnings, Duration::ZERO).await;
    assert_eq!(counts(&status), (3, 1, 2));
}
