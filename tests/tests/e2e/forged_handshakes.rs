//! Finding #1 end to end: an attacker in a third namespace, who knows only the two daemons'
//! public keys, sends A handshake initiations that claim to come from B (built as anyone
//! could: B's public key encrypted to A's, a valid mac1, a timestamp it cannot seal) while A
//! and B talk. A must not move its endpoint for B, and the attacker must get nothing back: no
//! handshake response, no cookie reply (it stays under the device-wide handshake rate), no
//! tunnel traffic.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use meshtun::device::forge;
use meshtun_e2e::config::Node;
use meshtun_e2e::traffic::{assert_ping, ping_replies};
use meshtun_e2e::wg::dump;
use meshtun_e2e::{require_root, Daemon, Netns, Veth};
use meshtun_proto::PublicKey;

/// Forged initiations sent.
const FORGED: u32 = 250;
/// Between two forged initiations: 50 a second, over five times boringtun's per-`Tunn`
/// limit and half the device-wide one.
const PACE: Duration = Duration::from_millis(20);
/// Pings from each side through the tunnel during the attack, 0.2 s apart.
const PINGS: u32 = 20;

fn key(base64: &str) -> PublicKey {
    PublicKey::from_base64(base64).expect("a valid public key")
}

/// Receives on `socket` until `done` is set and a read has timed out; counts what arrived
/// by its first byte (the WireGuard message type: 2 response, 3 cookie reply, 4 data).
fn listen(socket: &UdpSocket, done: &AtomicBool) -> [usize; 256] {
    let mut got = [0usize; 256];
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        match socket.recv(&mut buf) {
            Ok(_) => got[usize::from(buf[0])] += 1,
            Err(_) if done.load(Ordering::Acquire) => break,
            Err(_) => {}
        }
    }
    got
}

#[test]
fn finding_1_forged_initiations_from_another_namespace_move_nothing() {
    if !require_root("finding_1_forged_initiations_from_another_namespace_move_nothing") {
        return;
    }
    let test = "forged_init";
    let (ns_a, ns_b, ns_x) = (Netns::new(test), Netns::new(test), Netns::new(test));
    let ab = Veth::connect(&ns_a, &ns_b, 0);
    let ax = Veth::connect(&ns_a, &ns_x, 1);
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let b_endpoint = SocketAddr::new(ab.b_v4.into(), b.port);
    let mut ca = a.config();
    ca.peers.push(b.as_peer().endpoint(ab.b_v4.into(), b.port));
    let mut cb = b.config();
    cb.peers.push(a.as_peer().endpoint(ab.a_v4.into(), a.port));
    let mut da = Daemon::start(&ns_a, &ca);
    let _db = Daemon::start(&ns_b, &cb);
    assert_ping(&ns_b, a.v4.into());
    assert_ping(&ns_a, b.v4.into());
    assert_eq!(
        dump(&ns_a, &a.name).peer(&b.keys.public).endpoint,
        Some(b_endpoint)
    );

    let socket = ns_x
        .enter(|| UdpSocket::bind("0.0.0.0:0"))
        .expect("cannot open a UDP socket in the attacker namespace");
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("cannot set a read timeout");
    let reader = socket.try_clone().expect("cannot clone the socket");
    let target = SocketAddr::new(ax.a_v4.into(), a.port);
    let (victim, claimed) = (key(&a.keys.public), key(&b.keys.public));
    let done = AtomicBool::new(false);
    let (sent, replies_ab, replies_ba, received) = std::thread::scope(|s| {
        let listening = s.spawn(|| listen(&reader, &done));
        let pinging_ab =
            s.spawn(|| ping_replies(&ns_a, b.v4.into(), PINGS, Duration::from_millis(200)));
        let pinging_ba =
            s.spawn(|| ping_replies(&ns_b, a.v4.into(), PINGS, Duration::from_millis(200)));
        let start = Instant::now();
        let mut sent = 0;
        for i in 0..FORGED {
            if start.elapsed() > Duration::from_secs(20) {
                break;
            }
            let init = forge::initiation(&victim, &claimed, i);
            if socket.send_to(&init, target).is_ok() {
                sent += 1;
            }
            // Pacing, not a wait: the forged initiations' rate.
            std::thread::sleep(PACE);
        }
        let replies_ab = pinging_ab
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let replies_ba = pinging_ba
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        done.store(true, Ordering::Release);
        let received = listening
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (sent, replies_ab, replies_ba, received)
    });
    da.assert_running();
    let peer = dump(&ns_a, &a.name).peer(&b.keys.public).clone();
    let received: Vec<(usize, usize)> = (0..256)
        .filter(|&t| received[t] > 0)
        .map(|t| (t, received[t]))
        .collect();
    eprintln!(
        "{sent} forged initiations; pings A→B {replies_ab}/{PINGS}, B→A {replies_ba}/{PINGS}; \
         to the attacker, (type, count): {received:?}; A's endpoint for B: {:?}",
        peer.endpoint
    );
    assert!(sent >= FORGED / 2, "the attack itself failed: {sent} sent");
    assert_eq!(peer.endpoint, Some(b_endpoint), "A's endpoint for B moved");
    assert!(
        received.is_empty(),
        "datagrams reached the attacker, (type, count): {received:?}"
    );
    assert!(replies_ab >= PINGS - 2, "A→B: {replies_ab}/{PINGS} replies");
    assert!(replies_ba >= PINGS - 2, "B→A: {replies_ba}/{PINGS} replies");
}
