//! Two devices in one process, over in-memory tun and UDP transports: handshakes, traffic in
//! both directions and both IP versions, cryptokey routing, make-before-break key changes,
//! garbage input and handshake floods.

use crate::pair;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshtun::device::channel::Network;
use meshtun::wgcfg::{DeviceUpdate, PeerUpdate};
use meshtun_proto::{PresharedKey, PrivateKey};
use tokio::time::timeout;

use crate::wait_for;
use pair::{ip_packet, node_with_lanes, pair, peer, ping, WAIT};

#[tokio::test]
async fn handshake_and_traffic_both_ways_over_v4_and_v6() {
    let net = Network::new();
    let (alice, mut bob) = pair(&net, None);
    ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"hello bob").await;
    let mut alice = alice;
    // Bob learned Alice's endpoint from her authenticated packets.
    ping(&bob, &mut alice, "100.64.0.2", "100.64.0.1", b"hello alice").await;
    ping(&alice, &mut bob, "fd00::1", "fd00::2", b"v6 to bob").await;
    ping(&bob, &mut alice, "fd00::2", "fd00::1", b"v6 to alice").await;

    let status = alice.dev.status();
    let p = &status.peers[0];
    assert!(p.last_handshake.is_some(), "handshake time recorded");
    assert!(p.tx_bytes > 0 && p.rx_bytes > 0);
    assert_eq!(p.endpoint, Some(bob.addr));
    let bob_status = bob.dev.status();
    assert_eq!(
        bob_status.peers[0].endpoint,
        Some(alice.addr),
        "endpoint learned by roaming"
    );
}

#[tokio::test]
async fn packets_outside_allowed_ips_are_not_delivered() {
    let net = Network::new();
    let (alice, mut bob) = pair(&net, None);
    ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"warm up").await;
    // Alice's host sends from an address Bob does not accept from her, then a packet he
    // does accept. One lane keeps them in order, so the next packet Bob's host gets must be
    // the second one.
    let spoofed = ip_packet("100.64.0.99", "100.64.0.2", b"spoofed");
    let after = ip_packet("100.64.0.1", "100.64.0.2", b"after");
    alice.tun.to_device.send(spoofed).await.unwrap();
    alice.tun.to_device.send(after.clone()).await.unwrap();
    let next = timeout(WAIT, bob.tun.from_device.recv())
        .await
        .expect("nothing delivered in time")
        .expect("tun closed");
    assert_eq!(next, after, "spoofed packet was delivered");
    assert_eq!(bob.dev.counters().dropped_source, 1);
    // No peer owns this destination: dropped at Alice.
    alice
        .tun
        .to_device
        .send(ip_packet("100.64.0.1", "198.51.100.7", b"nowhere"))
        .await
        .unwrap();
    wait_for(WAIT, "the packet with no route to be dropped", || {
        alice.dev.counters().dropped_no_route >= 1
    })
    .await;
}

#[tokio::test]
async fn garbage_datagrams_change_nothing() {
    let net = Network::new();
    let (alice, mut bob) = pair(&net, None);
    ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"before").await;
    let attacker: SocketAddr = "203.0.113.9:4444".parse().unwrap();
    // Every datagram but an empty one (which the receive path skips) is refused once.
    let mut refusals = bob.dev.counters().dropped_invalid;
    let mut seed = 0x2545_f491_u32;
    for i in 0..5_000usize {
        let len = [0, 1, 3, 4, 31, 32, 33, 64, 92, 148, 200, 1500][i % 12];
        let mut d: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        if len >= 4 {
            // Valid-looking headers reach deeper into the parser.
            d[0] = (i % 5) as u8;
            d[1..4].fill(0);
        }
        net.inject(attacker, bob.addr, &d);
        refusals += u64::from(len > 0);
        if i % 200 == 199 {
            // Waiting until Bob has refused them all keeps his socket's queue from
            // overflowing, so that every datagram reaches the parser.
            wait_for(WAIT, "Bob to refuse the garbage", || {
                bob.dev.counters().dropped_invalid >= refusals
            })
            .await;
        }
    }
    ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"after").await;
    assert_eq!(bob.dev.counters().dropped_invalid, refusals);
    let status = bob.dev.status();
    assert_eq!(
        status.peers[0].endpoint,
        Some(alice.addr),
        "garbage must not move the endpoint"
    );
}

#[tokio::test]
async fn psk_change_is_make_before_break() {
    let net = Network::new();
    let old = PresharedKey::generate();
    let (alice, mut bob) = pair(&net, Some(&old));
    ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"old key").await;
    let first = alice.dev.status().peers[0].last_handshake;

    // Count handshake responses on the wire.
    let responses = Arc::new(AtomicUsize::new(0));
    let r = responses.clone();
    net.set_tap(move |_, _, d| {
        if d.first() == Some(&2) {
            r.fetch_add(1, Ordering::Relaxed);
        }
        true
    });

    let new = PresharedKey::generate();
    let set = |key: &PrivateKey, psk: &PresharedKey| DeviceUpdate {
        peers: vec![PeerUpdate {
            preshared_key: Some(Some(psk.clone())),
            ..PeerUpdate::new(key.public_key())
        }],
        ..DeviceUpdate::default()
    };
    // Alice moves first; traffic must keep flowing while Bob still has the old key.
    alice.dev.update(set(&bob.key, &new)).await.unwrap();
    for i in 0..5u8 {
        ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", &[b'a', i]).await;
    }
    bob.dev.update(set(&alice.key, &new)).await.unwrap();
    for i in 0..5u8 {
        ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", &[b'b', i]).await;
        // Not a wait for a condition: the pings are spread over a quarter of a second, so
        // that they span Bob's handshake with the new key.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Wait for Alice's next initiation (retried every 5 s) to complete with the new key.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    loop {
        ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"probe").await;
        if alice.dev.status().peers[0].last_handshake != first {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no handshake with the new key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(responses.load(Ordering::Relaxed) >= 1);
    ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"new key").await;
    let mut alice = alice;
    ping(&bob, &mut alice, "100.64.0.2", "100.64.0.1", b"and back").await;
}

#[tokio::test]
async fn a_removed_peer_is_cut_off_at_once() {
    let net = Network::new();
    let (alice, mut bob) = pair(&net, None);
    ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"before").await;
    bob.dev
        .update(DeviceUpdate {
            peers: vec![PeerUpdate {
                remove: true,
                ..PeerUpdate::new(alice.key.public_key())
            }],
            ..DeviceUpdate::default()
        })
        .await
        .unwrap();
    let p = ip_packet("100.64.0.1", "100.64.0.2", b"after removal");
    let before = bob.dev.counters().dropped_invalid;
    alice.tun.to_device.send(p).await.unwrap();
    // Bob no longer knows the session the packet is for: he refuses it.
    wait_for(WAIT, "Bob to refuse the packet", || {
        bob.dev.counters().dropped_invalid > before
    })
    .await;
    assert!(
        bob.tun.from_device.try_recv().is_err(),
        "removed peer still delivered"
    );
    assert!(bob.dev.status().peers.is_empty());
}

#[tokio::test]
async fn a_handshake_flood_gets_cookies_and_service_continues() {
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519;

    let net = Network::new();
    let (alice, mut bob) = pair(&net, None);
    ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"before").await;
    let cookies = Arc::new(AtomicUsize::new(0));
    let c = cookies.clone();
    net.set_tap(move |_, dst, d| {
        if d.first() == Some(&3) && dst.port() == 4444 {
            c.fetch_add(1, Ordering::Relaxed);
        }
        true
    });
    // Initiations from unknown keys carry a valid mac1, so they cost Bob an X25519 each
    // until the rate limiter asks for cookies.
    let bob_public = x25519::PublicKey::from(*bob.key.public_key().as_bytes());
    let mut buf = [0u8; 256];
    for i in 0..400u32 {
        let rogue = x25519::StaticSecret::from(PrivateKey::generate().as_bytes().to_owned());
        let mut t = Tunn::new(rogue, bob_public, None, None, i, None);
        if let TunnResult::WriteToNetwork(p) = t.format_handshake_initiation(&mut buf, false) {
            let src = SocketAddr::from(([203, 0, 113, (i % 200) as u8 + 1], 4444));
            net.inject(src, bob.addr, p);
        }
    }
    wait_for(WAIT, "cookie replies under load", || {
        cookies.load(Ordering::Relaxed) > 0 && bob.dev.counters().cookies_sent > 0
    })
    .await;
    // The established session is unaffected.
    ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"after flood").await;
}

#[tokio::test]
async fn a_new_preshared_key_handshakes_at_once_without_traffic() {
    let net = Network::new();
    let (alice, bob) = pair(&net, None);
    assert!(alice.dev.status().peers[0].last_handshake.is_none());
    let psk = PresharedKey::generate();
    let set = |key: &PrivateKey| DeviceUpdate {
        peers: vec![PeerUpdate {
            preshared_key: Some(Some(psk.clone())),
            ..PeerUpdate::new(key.public_key())
        }],
        ..DeviceUpdate::default()
    };
    // A restarted gated node gets its keys and must reach its peers before anyone sends:
    // its peers' old sessions are useless to it.
    bob.dev.update(set(&alice.key)).await.unwrap();
    alice.dev.update(set(&bob.key)).await.unwrap();
    wait_for(
        Duration::from_secs(2),
        "a handshake within 2 s of setting the key",
        || {
            alice.dev.status().peers[0].last_handshake.is_some()
                && bob.dev.status().peers[0].last_handshake.is_some()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn several_lanes_deliver_every_packet_exactly_once() {
    let net = Network::new();
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let bob_addr: SocketAddr = "192.0.2.2:51820".parse().unwrap();
    let alice_ips = ["100.64.0.1/32", "fd00::1/128"];
    let bob_ips = ["100.64.0.2/32", "fd00::2/128"];
    let alice = node_with_lanes(
        &net,
        "192.0.2.1",
        51820,
        ka.clone(),
        vec![peer(&kb, &bob_ips, Some(bob_addr), None)],
        3,
    );
    let mut bob = node_with_lanes(
        &net,
        "192.0.2.2",
        51820,
        kb,
        vec![peer(&ka, &alice_ips, None, None)],
        3,
    );
    ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"hello").await;
    // Three send workers pull from one host queue at once; mixed v4 and v6 packets.
    const N: u32 = 600;
    let sender = alice.tun.to_device.clone();
    let received = Arc::new(AtomicU32::new(0));
    let drained = received.clone();
    let feed = tokio::spawn(async move {
        for i in 0..N {
            let (src, dst) = if i % 2 == 0 {
                ("100.64.0.1", "100.64.0.2")
            } else {
                ("fd00::1", "fd00::2")
            };
            sender
                .send(ip_packet(src, dst, &i.to_be_bytes()))
                .await
                .unwrap();
            if i % 64 == 63 {
                // At most 128 packets in flight, as a host's congestion control would keep
                // them: the network's queues then never overflow.
                wait_for(WAIT, "Bob's host to drain", || {
                    drained.load(Ordering::Relaxed) + 64 > i
                })
                .await;
            }
        }
    });
    let mut seen = std::collections::HashSet::new();
    while seen.len() < N as usize {
        let got = timeout(WAIT, bob.tun.from_device.recv())
            .await
            .expect("a packet was lost")
            .expect("tun closed");
        // A v4 packet is 24 bytes, a v6 one 44; the greeting is neither.
        if got.len() == 24 || got.len() == 44 {
            let tail: [u8; 4] = got[got.len() - 4..].try_into().unwrap();
            let i = u32::from_be_bytes(tail);
            assert!(seen.insert(i), "packet {i} delivered twice");
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
    feed.await.unwrap();
    assert!(alice.dev.counters().packets_out > u64::from(N));
    // Packets of one peer from several lanes may arrive slightly out of order; the replay
    // window takes them all.
    assert_eq!(bob.dev.counters().dropped_invalid, 0);
}
