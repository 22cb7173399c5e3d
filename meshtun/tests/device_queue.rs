//! Finding #26: packets queued before a handshake are bounded for the whole device, not only
//! per peer. The host floods 2,000 peers that never answer; the device's heap must stay
//! within its queue budget, and a peer that does answer must still be reachable.

mod measuring;
use measuring::live_mib;

#[path = "integration/pair/mod.rs"]
mod pair;

use std::net::SocketAddr;
use std::time::Duration;

use meshtun::device::channel::Network;
use meshtun::wgcfg::PeerSettings;
use meshtun_proto::PrivateKey;
use tokio::time::Instant;

use pair::{ip_packet, node, peer, ping};

/// Unreachable peers.
const PEERS: usize = 2_000;
/// Packets sent to each, of `PACKET` bytes: 40 per peer stays under boringtun's per-peer
/// queue (256), so only a device-wide budget bounds them; 80,000 packets, 110 MiB.
const PER_PEER: usize = 40;
const PACKET: usize = 1_400;
/// How much the heap may grow over the flood: the device's queue budget (8 MiB) and
/// allocator and channel slack.
const GROWTH_LIMIT_MIB: f64 = 16.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_26_packets_queued_for_unreachable_peers_are_bounded_device_wide() {
    let net = Network::new();
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let bob_addr: SocketAddr = "192.0.2.2:51820".parse().unwrap();
    let mut peers: Vec<PeerSettings> = (0..PEERS)
        .map(|i| {
            let mut p = peer(
                &PrivateKey::generate(),
                &[&format!("100.65.{}.{}/32", i / 256, i % 256)],
                // Nobody listens there: no handshake ever completes.
                Some(SocketAddr::from(([198, 51, 100, 1], 20_000 + i as u16))),
                None,
            );
            p.persistent_keepalive = None;
            p
        })
        .collect();
    peers.push(peer(&kb, &["100.64.0.2/32"], Some(bob_addr), None));
    let alice = node(&net, "192.0.2.1", 51820, ka.clone(), peers);
    let mut bob = node(
        &net,
        "192.0.2.2",
        51820,
        kb,
        vec![peer(&ka, &["100.64.0.1/32"], None, None)],
    );
    // Not a wait for a condition: the devices' tasks allocate their buffers as they start,
    // and the baseline is taken after that. Too short a pause only makes the limit
    // stricter. (A handshake to prove them up would defeat the last check below.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = live_mib();

    let payload = vec![0x5a; PACKET - 20];
    let started = Instant::now();
    let mut sent: u64 = 0;
    'flood: for round in 0..PER_PEER {
        for i in 0..PEERS {
            if started.elapsed() > Duration::from_secs(60) {
                break 'flood;
            }
            let dst = format!("100.65.{}.{}", i / 256, i % 256);
            let packet = ip_packet("100.64.0.1", &dst, &payload);
            alice.tun.to_device.send(packet).await.unwrap();
            sent += 1;
        }
        if round % 10 == 9 {
            tokio::task::yield_now().await;
        }
    }
    // Let the send worker take the last ones from its queue.
    let counted = |a: &pair::Node| {
        let c = a.dev.counters();
        c.packets_out + c.dropped_queue_full + c.dropped_no_endpoint + c.dropped_no_route
    };
    while counted(&alice) < sent && started.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = live_mib();
    let counters = alice.dev.counters();
    eprintln!(
        "{sent} packets to {PEERS} unreachable peers in {:?}: heap {before:.1} MiB before, \
         {after:.1} MiB after; {} queued or sent, {} refused by the queue budget",
        started.elapsed(),
        counters.packets_out,
        counters.dropped_queue_full
    );
    assert_eq!(
        sent,
        (PEERS * PER_PEER) as u64,
        "the flood did not finish in time"
    );
    assert!(
        after - before < GROWTH_LIMIT_MIB,
        "the heap grew by {:.1} MiB",
        after - before
    );
    // With the budget spent, a peer that answers is still reached: its first packet may be
    // refused, but its handshake starts.
    ping(
        &alice,
        &mut bob,
        "100.64.0.1",
        "100.64.0.2",
        b"still reachable",
    )
    .await;
}
