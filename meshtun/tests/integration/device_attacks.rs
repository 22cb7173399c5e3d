//! Attacks on a live pair of devices by someone who knows public keys (and, on-path, sees
//! datagrams) but holds no secret: forged handshake initiations, responses and cookie
//! replies, and initiations replayed after a preshared-key rotation. None of them may move
//! an endpoint, confirm a session or draw an answer that would reveal or redirect traffic.

use crate::pair;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshtun::device::channel::Network;
use meshtun::device::forge;
use meshtun::wgcfg::{AllowedIpChange, DeviceUpdate, PeerUpdate};
use meshtun_proto::{PresharedKey, PrivateKey};
use parking_lot::Mutex;

use crate::wait_for;
use pair::{pair, ping, Node};

/// The attacker's address: not Alice's, not Bob's.
fn attacker() -> SocketAddr {
    "203.0.113.66:6666".parse().unwrap()
}

/// Datagrams a test keeps from the wire.
type Recorded = Arc<Mutex<Vec<Vec<u8>>>>;

/// Counts what the network delivers to the attacker, by message type.
#[derive(Default)]
struct ToAttacker {
    by_type: [AtomicUsize; 5],
}

impl ToAttacker {
    fn watch(net: &Network) -> Arc<Self> {
        Self::watch_and_record(net, |_, _, _| false).0
    }

    /// Also records every datagram for which `keep(src, dst, datagram)` is true.
    fn watch_and_record(
        net: &Network,
        keep: impl Fn(SocketAddr, SocketAddr, &[u8]) -> bool + Send + Sync + 'static,
    ) -> (Arc<Self>, Recorded) {
        let seen = Arc::new(Self::default());
        let kept = Arc::new(Mutex::new(Vec::new()));
        let (s, k) = (seen.clone(), kept.clone());
        net.set_tap(move |src, dst, d| {
            if dst == attacker() {
                let kind = usize::from(d.first().copied().unwrap_or(0)).min(4);
                s.by_type[kind].fetch_add(1, Ordering::Relaxed);
            }
            if keep(src, dst, d) {
                k.lock().push(d.to_vec());
            }
            true
        });
        (seen, kept)
    }

    fn count(&self, kind: usize) -> usize {
        self.by_type[kind].load(Ordering::Relaxed)
    }

    fn total(&self) -> usize {
        (0..5).map(|k| self.count(k)).sum()
    }
}

fn endpoint(node: &Node) -> Option<SocketAddr> {
    node.dev.status().peers[0].endpoint
}

fn last_handshake(node: &Node) -> Option<SystemTime> {
    node.dev.status().peers[0].last_handshake
}

fn set_psk(peer: &PrivateKey, psk: &PresharedKey) -> DeviceUpdate {
    DeviceUpdate {
        peers: vec![PeerUpdate {
            preshared_key: Some(Some(psk.clone())),
            ..PeerUpdate::new(peer.public_key())
        }],
        ..DeviceUpdate::default()
    }
}

/// Pings both ways; panics if either is not delivered in time.
async fn ping_both_ways(alice: &mut Node, bob: &mut Node, tag: u8) {
    ping(alice, bob, "100.64.0.1", "100.64.0.2", &[b'>', tag]).await;
    ping(bob, alice, "100.64.0.2", "100.64.0.1", &[b'<', tag]).await;
}

/// Datagrams `node` has refused: dropped as invalid, or answered with a cookie under load.
/// Each forged or replayed handshake message counts exactly once here (unless it is
/// accepted, which is what the tests look for), so a test can wait until all of them have
/// been handled before it checks that none moved anything.
fn refused(node: &Node) -> u64 {
    let c = node.dev.counters();
    c.dropped_invalid + c.cookies_sent
}

/// Waits until `node` has refused `n` more datagrams than `before`.
async fn wait_refused(node: &Node, before: u64, n: u64) {
    wait_for(
        Duration::from_secs(5),
        "the forged datagrams to be handled",
        || refused(node) >= before + n,
    )
    .await;
}

/// An update that removes `node`'s only peer and adds it again with the same allowed IPs and
/// `endpoint`.
fn remove_and_add(node: &Node, endpoint: Option<SocketAddr>) -> DeviceUpdate {
    let peer = node.dev.status().peers[0].clone();
    let remove = PeerUpdate {
        remove: true,
        ..PeerUpdate::new(peer.public_key)
    };
    let add = PeerUpdate {
        endpoint,
        allowed_ips: peer
            .allowed_ips
            .iter()
            .map(|n| AllowedIpChange::Add(*n))
            .collect(),
        ..PeerUpdate::new(peer.public_key)
    };
    DeviceUpdate {
        peers: vec![remove, add],
        ..DeviceUpdate::default()
    }
}

/// Finding #1: 1,000 initiations claiming Alice's key, from another address, at 100 a
/// second (ten times boringtun's per-`Tunn` limit, the device-wide limit itself). Before the
/// fix, each one over a `Tunn`'s own limit drew a cookie reply that the device took for an
/// answer, and moved Bob's endpoint for Alice to the attacker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_1_forged_initiations_claiming_a_peer_move_nothing() {
    const FORGED: u32 = 1_000;
    let net = Network::new();
    let (mut alice, mut bob) = pair(&net, None);
    ping_both_ways(&mut alice, &mut bob, 0).await;
    let seen = ToAttacker::watch(&net);
    let (victim, claimed) = (bob.key.public_key(), alice.key.public_key());
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    let started = tokio::time::Instant::now();
    let before = refused(&bob);
    for i in 0..FORGED {
        pace.tick().await;
        net.inject(
            attacker(),
            bob.addr,
            &forge::initiation(&victim, &claimed, i),
        );
        if i % 100 == 99 {
            wait_refused(&bob, before, u64::from(i + 1)).await;
            assert_eq!(
                endpoint(&bob),
                Some(alice.addr),
                "after {} forged initiations, Bob's endpoint for Alice moved",
                i + 1
            );
            ping_both_ways(&mut alice, &mut bob, (i / 100) as u8 + 1).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the flood took too long"
        );
    }
    // FORGED is a multiple of 100: the loop waited for the last one to be refused.
    assert_eq!(endpoint(&bob), Some(alice.addr));
    // Cookie replies to an address over the device-wide rate are WireGuard's answer to load;
    // a handshake response or a data packet would be an answer to the forgery.
    assert_eq!(
        seen.count(2),
        0,
        "a handshake response went to the attacker"
    );
    assert_eq!(seen.count(4), 0, "data went to the attacker");
    assert_eq!(seen.count(1) + seen.count(0), 0);
    eprintln!(
        "{FORGED} forged initiations in {:?}: {} cookie replies to the attacker, {} dropped",
        started.elapsed(),
        seen.count(3),
        bob.dev.counters().dropped_invalid
    );
    ping_both_ways(&mut alice, &mut bob, 255).await;
}

/// Finding #1: while Bob's handshake with a new preshared key is in flight, an on-path
/// attacker sends Bob a cookie reply sealed with the mac1 it saw (so it authenticates), then
/// 30 forged responses to the session index it saw. Before the fix, the cookie moved Bob's
/// endpoint, and responses over a `Tunn`'s limit drew cookies that confirmed the new key's
/// session, which has none, and retired the working one.
#[tokio::test]
async fn finding_1_forged_cookie_replies_and_responses_are_dropped() {
    let net = Network::new();
    let old = PresharedKey::generate();
    let (mut alice, mut bob) = pair(&net, Some(&old));
    ping_both_ways(&mut alice, &mut bob, 0).await;
    let bob_addr = bob.addr;
    let (seen, initiations) =
        ToAttacker::watch_and_record(&net, move |src, _, d| src == bob_addr && d[0] == 1);
    // Bob moves to a new key; Alice still has the old one, so the handshake stays open.
    let new = PresharedKey::generate();
    bob.dev.update(set_psk(&alice.key, &new)).await.unwrap();
    wait_for(Duration::from_secs(2), "Bob's new initiation", || {
        !initiations.lock().is_empty()
    })
    .await;
    let observed = initiations.lock()[0].clone();
    let before = (endpoint(&bob), last_handshake(&bob));
    assert_eq!(before.0, Some(alice.addr));

    let cookie = forge::cookie_reply(&alice.key.public_key(), &observed).unwrap();
    let refused_before = refused(&bob);
    net.inject(attacker(), bob.addr, &cookie);
    let index = u32::from_le_bytes(observed[4..8].try_into().unwrap());
    for sender in 0..30 {
        let response = forge::response(&bob.key.public_key(), index, sender);
        net.inject(attacker(), bob.addr, &response);
    }
    // The cookie reply authenticates, so the `Tunn` takes its cookie without a count; the
    // responses behind it on Bob's socket are each refused once. Once all 30 are, the
    // cookie has been handled too.
    wait_refused(&bob, refused_before, 30).await;
    assert_eq!(
        endpoint(&bob),
        Some(alice.addr),
        "a cookie reply moved the endpoint"
    );
    assert_eq!(
        (endpoint(&bob), last_handshake(&bob)),
        before,
        "forged responses moved the endpoint or confirmed a session"
    );
    assert_eq!(seen.total(), 0, "the attacker got an answer");
    ping_both_ways(&mut alice, &mut bob, 1).await;
}
/// Finding #16: an initiation Alice sent under the old preshared key, replayed after a
/// rotation in which Bob was the initiator (so Bob's new `Tunn` has never seen a timestamp).
/// Before the fix, the new `Tunn` accepted it, answered the replayer and moved the endpoint.
#[tokio::test]
async fn finding_16_an_initiation_replayed_after_a_rotation_is_refused() {
    let net = Network::new();
    let old = PresharedKey::generate();
    let (mut alice, mut bob) = pair(&net, Some(&old));
    let alice_addr = alice.addr;
    let (seen, recorded) =
        ToAttacker::watch_and_record(&net, move |src, _, d| src == alice_addr && d[0] == 1);
    ping_both_ways(&mut alice, &mut bob, 0).await;
    assert!(!recorded.lock().is_empty(), "Alice's first initiation");

    // Alice moves first (Bob answers with the old key only), then Bob, whose initiation
    // completes with Alice's new `Tunn`: Bob's new session is one he initiated.
    let new = PresharedKey::generate();
    alice.dev.update(set_psk(&bob.key, &new)).await.unwrap();
    ping_both_ways(&mut alice, &mut bob, 1).await;
    let before = last_handshake(&bob);
    bob.dev.update(set_psk(&alice.key, &new)).await.unwrap();
    wait_for(Duration::from_secs(3), "Bob's rotation", || {
        last_handshake(&bob) != before
    })
    .await;
    ping_both_ways(&mut alice, &mut bob, 2).await;

    let replays = recorded.lock().clone();
    let before = refused(&bob);
    for init in &replays {
        net.inject(attacker(), bob.addr, init);
    }
    wait_refused(&bob, before, replays.len() as u64).await;
    assert_eq!(
        endpoint(&bob),
        Some(alice.addr),
        "a replayed initiation moved the endpoint"
    );
    assert_eq!(seen.total(), 0, "the replayer got an answer");
    eprintln!("{} recorded initiations replayed", replays.len());
    ping_both_ways(&mut alice, &mut bob, 3).await;
}

/// Finding #16: the same for a peer removed and added again, as a gated peer is when it is
/// denied and later allowed: its new `Tunn` starts from zero, the device's memory does not.
#[tokio::test]
async fn finding_16_a_peer_removed_and_added_again_keeps_its_replay_protection() {
    let net = Network::new();
    let (mut alice, mut bob) = pair(&net, None);
    let alice_addr = alice.addr;
    let (seen, recorded) =
        ToAttacker::watch_and_record(&net, move |src, _, d| src == alice_addr && d[0] == 1);
    ping_both_ways(&mut alice, &mut bob, 0).await;
    let replays = recorded.lock().clone();
    assert!(!replays.is_empty(), "Alice's first initiation");

    bob.dev.update(remove_and_add(&bob, None)).await.unwrap();
    let before = refused(&bob);
    for init in &replays {
        net.inject(attacker(), bob.addr, init);
    }
    wait_refused(&bob, before, replays.len() as u64).await;
    assert_eq!(
        endpoint(&bob),
        None,
        "a replayed initiation set the endpoint"
    );
    assert_eq!(seen.total(), 0, "the replayer got an answer");
    // Alice herself gets through once she starts afresh: her initiation is newer.
    let update = remove_and_add(&alice, Some(bob.addr));
    alice.dev.update(update).await.unwrap();
    ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"after").await;
    assert_eq!(endpoint(&bob), Some(alice.addr));
}
