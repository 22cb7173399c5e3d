//! Candidates beyond the endpoint: an initiation also goes to them while the peer is
//! silent, the candidate that answers becomes the endpoint, and a listed address that is
//! not the peer's receives at most one initiation per [`PROBE_INTERVAL`].

use super::*;
use std::net::IpAddr;

use crate::device::{PROBE_INTERVAL, SILENT_AFTER};

#[test]
fn an_initiation_also_goes_to_the_candidates_and_the_one_that_answers_becomes_the_endpoint() {
    let t0 = Instant::now();
    let mut alice = Side::new("192.0.2.1:51820");
    let mut bob = Side::new("192.0.2.2:51820");
    let dead: SocketAddr = "198.51.100.99:51820".parse().unwrap();
    let victim: SocketAddr = "203.0.113.9:51820".parse().unwrap();
    let psk = PresharedKey::generate();
    // Bob knows no endpoint for Alice: he can only answer.
    let mut for_bob = settings_of(&bob, &alice, 1, Some(&psk));
    for_bob.peers[0].endpoint = None;
    assert!(bob.configure(&for_bob, t0).is_empty());
    let mut for_alice = settings_of(&alice, &bob, 2, Some(&psk));
    for_alice.peers[0].endpoint = Some(dead);
    for_alice.peers[0].probes = vec![bob.addr, victim];
    let sent = alice.configure(&for_alice, t0);
    let (to_dead, to_bob, to_victim) = (
        addressed(&sent, dead),
        addressed(&sent, bob.addr),
        addressed(&sent, victim),
    );
    assert_eq!(
        (to_dead.len(), to_bob.len(), to_victim.len()),
        (1, 1, 1),
        "{sent:?}"
    );
    assert_eq!(to_dead[0][0], INITIATION);
    assert_eq!(to_bob, to_dead, "the same initiation");

    let reply = bob.receive(alice.addr, &to_bob, t0);
    assert_eq!(only(&reply, RESPONSE).len(), 1);
    alice.receive(bob.addr, &only(&reply, RESPONSE), t0);
    assert_eq!(
        alice.peer().state.lock().endpoint,
        Some(bob.addr),
        "the answering candidate"
    );
    let moved = alice.peer().state.lock().endpoint_since;
    assert!(
        moved.is_some_and(|t| t.elapsed().is_ok_and(|d| d.as_secs() < 5)),
        "the move is dated: {moved:?}"
    );
    let data = alice.send(&ip_packet(1, 2, b"hello"), t0 + Duration::from_millis(10));
    assert_eq!(data.len(), 1);
    assert_eq!((data[0].0, data[0].1[0]), (bob.addr, DATA));
}

/// A member lists an address of its choice among its candidates: however often the peer
/// initiates while the member stays silent, that address gets one initiation per
/// PROBE_INTERVAL, and none while the member answers.
#[test]
fn attack_a_listed_victim_receives_at_most_one_initiation_per_probe_interval() {
    let t0 = Instant::now();
    let mut alice = Side::new("192.0.2.1:51820");
    let bob = Side::new("192.0.2.2:51820");
    let victim: SocketAddr = "203.0.113.9:51820".parse().unwrap();
    let mut settings = settings_of(&alice, &bob, 2, None);
    settings.peers[0].probes = vec![victim, victim, victim];
    alice.configure(&settings, t0);
    assert_eq!(
        alice.peer().state.lock().probes,
        [victim],
        "each address once"
    );
    let peer = alice.peer();
    let initiation = [INITIATION; 148];
    let mut copies = 0;
    let span = Duration::from_secs(60);
    let mut t = Duration::ZERO;
    while t <= span {
        let mut out = batch();
        out.push(bob.addr, &initiation);
        peer.state.lock().probe(&mut out, t0 + t);
        copies += addressed(&wire(&out), victim).len();
        t += Duration::from_millis(100);
    }
    let bound = (span.as_secs() / PROBE_INTERVAL.as_secs() + 1) as usize;
    assert!(
        copies <= bound,
        "{copies} initiations to the victim in {span:?}, bound {bound}"
    );
    assert!(copies >= bound - 1, "probing stopped: {copies}");

    // While the peer answers, nothing is probed.
    let heard = t0 + span + PROBE_INTERVAL;
    peer.state.lock().last_received = Some(heard);
    let mut out = batch();
    out.push(bob.addr, &initiation);
    peer.state.lock().probe(&mut out, heard + SILENT_AFTER / 2);
    assert_eq!(out.len(), 1, "no probe while the peer is heard from");
}

/// The relay drops the first copy of an initiation to the peer's relayed address (its
/// permission for us is not in place yet). Once our relay confirms the permission for the
/// peer's address, a fresh initiation goes out at once, within PROBE_INTERVAL of the last,
/// and the handshake completes through the copy; then nothing more is retried.
#[test]
fn a_confirmed_relay_permission_retries_a_silent_peer_at_once_and_only_it() {
    let t0 = Instant::now();
    let mut alice = Side::new("192.0.2.1:51820");
    let mut bob = Side::new("192.0.2.2:51820");
    let dead: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let bob_relayed: SocketAddr = "203.0.113.20:49152".parse().unwrap();
    let psk = PresharedKey::generate();
    let mut for_bob = settings_of(&bob, &alice, 1, Some(&psk));
    for_bob.peers[0].endpoint = None;
    bob.configure(&for_bob, t0);
    let mut for_alice = settings_of(&alice, &bob, 2, Some(&psk));
    for_alice.peers[0].endpoint = Some(dead);
    for_alice.peers[0].probes = vec![bob_relayed];
    let first = alice.configure(&for_alice, t0);
    assert_eq!(addressed(&first, bob_relayed).len(), 1, "{first:?}");
    // The relay dropped that copy. A permission for an address the peer does not list
    // changes nothing.
    let retry = |alice: &Side, ips: &[IpAddr], at: Instant| {
        let mut out = batch();
        let wrote = alice
            .peer()
            .state
            .lock()
            .retry_through_relay(ips, &mut out, at);
        (wrote, wire(&out))
    };
    let t1 = t0 + Duration::from_millis(300);
    let other: IpAddr = "192.0.2.77".parse().unwrap();
    assert_eq!(retry(&alice, &[other], t1), (false, Vec::new()));
    // The peer's relay address is confirmed: a fresh initiation to the endpoint and the
    // candidate, well within PROBE_INTERVAL of the first.
    let (wrote, sent) = retry(&alice, &[bob_relayed.ip()], t1);
    assert!(wrote);
    let (to_dead, to_relay) = (addressed(&sent, dead), addressed(&sent, bob_relayed));
    assert_eq!((to_dead.len(), to_relay.len()), (1, 1), "{sent:?}");
    assert_eq!(to_relay[0][0], INITIATION);
    assert_ne!(
        to_relay,
        addressed(&first, bob_relayed),
        "a fresh initiation, not the dropped one again"
    );
    let reply = bob.receive(alice.addr, &to_relay, t1);
    assert_eq!(only(&reply, RESPONSE).len(), 1, "Bob answers the retry");
    alice.receive(bob_relayed, &only(&reply, RESPONSE), t1);
    // Answered: a later confirmation retries nothing.
    let t2 = t1 + Duration::from_millis(300);
    assert_eq!(retry(&alice, &[bob_relayed.ip()], t2), (false, Vec::new()));
}
