//! Forwarding between gated peers (a hub of `hub_and_spoke`), in the device: a packet
//! decrypted from one forwarding peer and addressed to another is encrypted again to it,
//! without reaching the host; nothing else is forwarded, and a spoofed source is dropped.
//!
//! The hub (192.0.2.1; 100.64.0.1, fd00::1) has spokes A (.2) and B (.3) as forwarding
//! peers and a static peer S (.4) that does not forward. Each spoke routes the other
//! spoke's addresses (and, for the attacks, S's and an outside network) to the hub.

use std::net::SocketAddr;
use std::time::Duration;

use meshtun::device::channel::{Network, TunHandle};
use meshtun::wgcfg::PeerSettings;
use meshtun_proto::PrivateKey;
use tokio::time::timeout;

use crate::pair::{ip_packet, node, peer, ping, Node};
use crate::wait_for;

struct Star {
    hub: Node,
    a: Node,
    b: Node,
    s: Node,
}

fn at(host: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, host], 51820))
}

fn forwarding(mut settings: PeerSettings, forward: bool) -> PeerSettings {
    settings.forward = forward;
    settings
}

/// The hub, two spokes and a static peer; the hub forwards between the spokes if `forward`.
fn star(net: &Network, forward: bool) -> Star {
    let keys: Vec<PrivateKey> = (0..4).map(|_| PrivateKey::generate()).collect();
    let (kh, ka, kb, ks) = (&keys[0], &keys[1], &keys[2], &keys[3]);
    let hub_peers = vec![
        forwarding(
            peer(ka, &["100.64.0.2/32", "fd00::2/128"], Some(at(2)), None),
            forward,
        ),
        forwarding(
            peer(kb, &["100.64.0.3/32", "fd00::3/128"], Some(at(3)), None),
            forward,
        ),
        peer(ks, &["100.64.0.4/32"], Some(at(4)), None),
    ];
    let hub = node(net, "192.0.2.1", 51820, kh.clone(), hub_peers);
    let via_hub = |others: &[&str]| {
        let mut ips = vec!["100.64.0.1/32", "fd00::1/128"];
        ips.extend_from_slice(others);
        vec![peer(kh, &ips, Some(at(1)), None)]
    };
    let a_routes = via_hub(&[
        "100.64.0.3/32",
        "fd00::3/128",
        "100.64.0.4/32",
        "203.0.113.0/24",
    ]);
    let a = node(net, "192.0.2.2", 51820, ka.clone(), a_routes);
    let b = node(
        net,
        "192.0.2.3",
        51820,
        kb.clone(),
        via_hub(&["100.64.0.2/32", "fd00::2/128"]),
    );
    let s = node(
        net,
        "192.0.2.4",
        51820,
        ks.clone(),
        vec![peer(
            kh,
            &["100.64.0.1/32", "100.64.0.2/32"],
            Some(at(1)),
            None,
        )],
    );
    Star { hub, a, b, s }
}

/// True if `handle` receives a packet within `wait`.
async fn receives(handle: &mut TunHandle, wait: Duration) -> Option<Vec<u8>> {
    timeout(wait, handle.from_device.recv())
        .await
        .ok()
        .flatten()
}

/// Sends `packet` into `from`'s tun.
async fn send(from: &Node, packet: &[u8]) {
    from.tun.to_device.send(packet.to_vec()).await.unwrap();
}

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn a_hub_forwards_between_its_spokes_without_the_host() {
    let net = Network::new();
    let mut star = star(&net, true);
    for round in 0..3u8 {
        ping(
            &star.a,
            &mut star.b,
            "100.64.0.2",
            "100.64.0.3",
            &[b'>', round],
        )
        .await;
        ping(
            &star.b,
            &mut star.a,
            "100.64.0.3",
            "100.64.0.2",
            &[b'<', round],
        )
        .await;
        ping(&star.a, &mut star.b, "fd00::2", "fd00::3", &[b'6', round]).await;
    }
    let c = star.hub.dev.counters();
    assert_eq!(c.forwarded, 9, "{c:?}");
    assert_eq!(c.packets_in, 0, "nothing reached the hub's host: {c:?}");
    assert!(
        receives(&mut star.hub.tun, QUIET).await.is_none(),
        "a forwarded packet reached the hub's tun"
    );
    // Packets addressed to the hub itself still reach its host.
    ping(
        &star.a,
        &mut star.hub,
        "100.64.0.2",
        "100.64.0.1",
        b"to-hub",
    )
    .await;
}

#[tokio::test]
async fn a_hub_drops_a_spoofed_source_and_forwards_only_between_forwarding_peers() {
    let net = Network::new();
    let mut star = star(&net, true);
    ping(&star.a, &mut star.b, "100.64.0.2", "100.64.0.3", b"up").await;
    ping(&star.s, &mut star.hub, "100.64.0.4", "100.64.0.1", b"s-up").await;

    // Spoofing: A claims B's address (to B, and to the static peer).
    send(&star.a, &ip_packet("100.64.0.3", "100.64.0.3", b"spoof")).await;
    send(&star.a, &ip_packet("fd00::3", "fd00::3", b"spoof6")).await;
    // A static peer's address: never forwarded, nor handed to the host to route.
    send(
        &star.a,
        &ip_packet("100.64.0.2", "100.64.0.4", b"to-static"),
    )
    .await;
    let hub = &star.hub;
    wait_for(Duration::from_secs(5), "the hub dropped all three", || {
        let c = hub.dev.counters();
        c.dropped_source == 2 && c.dropped_forward == 1
    })
    .await;
    // The static peer cannot go through the hub either: S's packet for A is the host's.
    send(
        &star.s,
        &ip_packet("100.64.0.4", "100.64.0.2", b"from-static"),
    )
    .await;
    let got = receives(&mut star.hub.tun, Duration::from_secs(5)).await;
    assert_eq!(
        got,
        Some(ip_packet("100.64.0.4", "100.64.0.2", b"from-static"))
    );
    // Outside the overlay: not a peer's, so the host's (whose own forwarding is off).
    send(&star.a, &ip_packet("100.64.0.2", "203.0.113.9", b"outside")).await;
    let got = receives(&mut star.hub.tun, Duration::from_secs(5)).await;
    assert_eq!(
        got,
        Some(ip_packet("100.64.0.2", "203.0.113.9", b"outside"))
    );

    assert!(
        receives(&mut star.b.tun, QUIET).await.is_none(),
        "B got a forged packet"
    );
    assert!(
        receives(&mut star.s.tun, QUIET).await.is_none(),
        "S got a packet via the hub"
    );
    assert_eq!(star.hub.dev.counters().forwarded, 1);
}

#[tokio::test]
async fn a_hub_without_forward_forwards_nothing() {
    let net = Network::new();
    let mut star = star(&net, false);
    ping(&star.a, &mut star.hub, "100.64.0.2", "100.64.0.1", b"up").await;
    let packet = ip_packet("100.64.0.2", "100.64.0.3", b"a-to-b");
    send(&star.a, &packet).await;
    // It reaches the hub's host, like any packet from a peer, and stops there.
    let got = receives(&mut star.hub.tun, Duration::from_secs(5)).await;
    assert_eq!(got, Some(packet));
    assert!(receives(&mut star.b.tun, QUIET).await.is_none());
    let c = star.hub.dev.counters();
    assert_eq!((c.forwarded, c.dropped_forward), (0, 0), "{c:?}");
}
