//! Paths through the TURN relay: a relayed packet never takes a working direct path away,
//! a relayed peer's direct candidates get a keepalive every [`RELAYED_PROBE_INTERVAL`] and
//! the first that gets through moves both sides back to direct, and ChannelData is
//! unwrapped on the packet path only when it comes from the relay server on a bound
//! channel.

use super::*;
use crate::device::peer::paths::RELAYED_PROBE_INTERVAL;
use crate::device::relayed::{frame_run, relayed_endpoint, RelayRoutes};
use crate::device::SILENT_AFTER;

const SERVER: &str = "192.0.2.9:3478";

/// Bob's data packet for Alice, not delivered yet.
fn bob_data(pair: &mut Pair, now: Instant) -> (Vec<u8>, Vec<u8>) {
    let packet = pair.next_packet(2, 1);
    let out = pair.bob.send(&packet, now);
    assert_eq!(out.len(), 1, "one datagram");
    assert_eq!(out[0].1[0], DATA, "a data message");
    (packet, out[0].1.clone())
}

/// A pair whose sessions both sides have confirmed (each has sent data).
fn confirmed_pair() -> Pair {
    let mut pair = Pair::new(None);
    let t = pair.at(0);
    assert!(pair.alice_to_bob(t) && pair.bob_to_alice(t));
    pair
}

fn endpoint(side: &Side) -> Option<SocketAddr> {
    side.peer().state.lock().endpoint
}

#[test]
fn a_relayed_packet_leaves_a_working_direct_path_alone_and_takes_over_a_silent_one() {
    let mut pair = confirmed_pair();
    let relayed = relayed_endpoint(3);
    let t = pair.at(1);
    let (packet, datagram) = bob_data(&mut pair, t);
    pair.alice.receive(relayed, &[datagram], t);
    assert!(
        pair.alice.delivered.contains(&packet),
        "relayed data is delivered"
    );
    assert_eq!(
        endpoint(&pair.alice),
        Some(pair.bob.addr),
        "the direct path stays"
    );

    // Nothing direct for longer than SILENT_AFTER: the relay takes over.
    let later = t + SILENT_AFTER + Duration::from_secs(1);
    let (packet, datagram) = bob_data(&mut pair, later);
    pair.alice.receive(relayed, &[datagram], later);
    assert!(pair.alice.delivered.contains(&packet));
    assert_eq!(endpoint(&pair.alice), Some(relayed));
    let out = pair.alice.send(&ip_packet(1, 2, b"back"), later);
    assert_eq!(out[0].0, relayed, "replies go back through the relay");

    // A datagram through the relay that does not authenticate moves nothing.
    let mut forged = out[0].1.clone();
    forged[20] ^= 1;
    pair.bob.receive(relayed_endpoint(9), &[forged], later);
    assert_eq!(endpoint(&pair.bob), Some(pair.alice.addr));
}

/// An address on the relay server (the peer's own allocation) is a relayed path too.
#[test]
fn an_endpoint_on_the_relay_server_counts_as_relayed() {
    let pair = confirmed_pair();
    let peer = pair.alice.peer();
    let mut state = peer.state.lock();
    assert!(!state.is_relayed());
    state.relay_ip = Some(SERVER.parse::<SocketAddr>().unwrap().ip());
    state.move_endpoint("192.0.2.9:49200".parse().unwrap());
    assert!(state.is_relayed());
    state.move_endpoint(relayed_endpoint(0));
    assert!(state.is_relayed());
}

#[test]
fn while_relayed_the_direct_candidates_get_a_keepalive_every_interval_and_the_path_moves_back() {
    let mut pair = confirmed_pair();
    let relayed = relayed_endpoint(0);
    let t = pair.at(1) + SILENT_AFTER;
    for side in [&pair.alice, &pair.bob] {
        let peer = side.peer();
        let mut state = peer.state.lock();
        state.move_endpoint(relayed);
        state.set_probes(&[]);
    }
    pair.alice.peer().state.lock().set_probes(&[pair.bob.addr]);
    let sent = pair.alice.tick(t);
    let probes = addressed(&sent, pair.bob.addr);
    assert_eq!(probes.len(), 1, "{sent:?}");
    assert_eq!((probes[0][0], probes[0].len()), (DATA, 32), "a keepalive");
    // Not again before the interval, however often the timers run.
    for k in 1..30 {
        let again = pair.alice.tick(t + Duration::from_secs(k));
        assert!(
            addressed(&again, pair.bob.addr).is_empty(),
            "{k} s: {again:?}"
        );
    }
    let next = pair.alice.tick(t + RELAYED_PROBE_INTERVAL);
    assert_eq!(addressed(&next, pair.bob.addr).len(), 1);

    // It got through: Bob authenticates it and answers directly; so does Alice's side.
    let reply = pair.bob.receive(pair.alice.addr, &probes, t);
    assert!(reply.is_empty(), "a keepalive needs no answer");
    assert_eq!(
        endpoint(&pair.bob),
        Some(pair.alice.addr),
        "Bob is direct again"
    );
    let now = t + RELAYED_PROBE_INTERVAL;
    assert!(
        pair.bob_to_alice(now),
        "Bob's traffic reaches Alice directly"
    );
    assert_eq!(
        endpoint(&pair.alice),
        Some(pair.bob.addr),
        "and Alice follows"
    );
    assert!(!pair.alice.peer().state.lock().is_relayed());
}

#[test]
fn channel_data_is_unwrapped_only_from_the_server_on_a_bound_channel() {
    let mut pair = confirmed_pair();
    let server: SocketAddr = SERVER.parse().unwrap();
    let mut routes = RelayRoutes::new(server, "192.0.2.9:49200".parse().unwrap());
    let slot = routes.add("203.0.113.5:40000".parse().unwrap()).unwrap();
    routes.set_channel(slot, Some(0x4001));
    let t = pair.at(1) + SILENT_AFTER;
    let (packet, datagram) = bob_data(&mut pair, t);
    let mut framed = Vec::new();
    frame_run(0x4001, &datagram, datagram.len(), &mut framed);

    let deliver = |pair: &mut Pair, from: SocketAddr, framed: &[u8]| {
        let mut tun = PacketBatch::new(4, MTU + 64, TUN_HEADROOM);
        let mut big = PacketBatch::new(1, MAX_PACKET, TUN_HEADROOM);
        let mut out = batch();
        let mut inbound =
            Inbound::new(&pair.alice.snap, t, &pair.alice.counters).with_relay(Some(&routes));
        let slot_buf = big.next_slot().unwrap();
        inbound.datagram(from, framed, &mut tun, &mut out, slot_buf);
        drop(inbound);
        (0..tun.len())
            .map(|i| tun.packet(i).to_vec())
            .collect::<Vec<_>>()
    };
    // From someone else than the server: not unwrapped, dropped.
    assert!(deliver(&mut pair, "192.0.2.10:3478".parse().unwrap(), &framed).is_empty());
    // On a channel not bound: not unwrapped here.
    let mut other = framed.clone();
    other[1] = 0x02;
    assert!(deliver(&mut pair, server, &other).is_empty());
    // From the server on the bound channel: delivered, from the slot's relayed endpoint.
    assert_eq!(deliver(&mut pair, server, &framed), vec![packet]);
    assert_eq!(endpoint(&pair.alice), Some(relayed_endpoint(slot)));
}
