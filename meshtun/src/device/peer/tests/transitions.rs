//! Every transition of a preshared-key change: `next` created and initiated, confirmed,
//! promoted, retired; abandoned; ended by the handover deadline; removed mid-handshake;
//! replaced by a newer key before confirmation.

use super::*;

fn keys() -> (PresharedKey, PresharedKey, PresharedKey) {
    (
        PresharedKey::generate(),
        PresharedKey::generate(),
        PresharedKey::generate(),
    )
}

/// Both sides move to `psk` at `now` and their handshakes complete.
fn switch(pair: &mut Pair, psk: &PresharedKey, now: Instant) {
    let from_alice = pair.alice.set_psk(psk, now);
    let from_bob = pair.bob.set_psk(psk, now);
    pair.exchange(from_alice, from_bob, now);
}

#[test]
fn a_key_change_handshakes_beside_the_active_session_and_initiates_once() {
    let (p0, p1, _) = keys();
    let mut pair = Pair::new(Some(&p0));
    let now = pair.at(1);
    assert!(pair.alice_to_bob(now));

    let sent = pair.alice.set_psk(&p1, now);
    // `next` holds the new key; the active session keeps the old one.
    assert_eq!(pair.alice.key(SlotKind::Active), Some(p0.clone()));
    assert_eq!(pair.alice.key(SlotKind::Next), Some(p1.clone()));
    // Exactly one initiation, from `next`, to Bob.
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, pair.bob.addr);
    assert_eq!(sent[0].1[0], INITIATION);
    assert_eq!(
        Some(index_at(&sent[0].1, 4)),
        pair.alice.index(SlotKind::Next)
    );
    // It is not sent again by the timers.
    assert!(only(&pair.alice.tick(pair.at(2)), INITIATION).is_empty());
    // Traffic goes on, both ways, under the old key.
    assert_eq!(pair.key_alice_sends_with(now), Some(p0.clone()));
    assert_eq!(pair.key_bob_sends_with(now), Some(p0));
    assert!(pair.alice_to_bob(now));
    assert!(pair.bob_to_alice(now));
}

#[test]
fn an_initiation_without_an_endpoint_goes_out_at_the_first_tick_after_one_is_known() {
    let (p0, p1, _) = keys();
    let mut pair = Pair::new(Some(&p0));
    // Alice does not know where Bob is (as after a restart, before he writes).
    pair.alice.peer().state.lock().endpoint = None;
    assert!(pair.alice.set_psk(&p1, pair.at(1)).is_empty());
    assert_eq!(pair.alice.key(SlotKind::Next), Some(p1));
    assert!(pair.alice.tick(pair.at(2)).is_empty());

    // Bob's next packet tells her; the following tick sends the initiation, from `next`.
    assert!(pair.bob_to_alice(pair.at(3)));
    let sent = pair.alice.tick(pair.at(4));
    let inits = only(&sent, INITIATION);
    assert_eq!(inits.len(), 1);
    assert_eq!(
        Some(index_at(&inits[0], 4)),
        pair.alice.index(SlotKind::Next)
    );
    assert!(only(&pair.alice.tick(pair.at(5)), INITIATION).is_empty());
}

#[test]
fn a_key_change_before_any_session_replaces_the_active_tunn() {
    let (p1, _, _) = keys();
    let mut pair = Pair::new(None);
    let old = pair.alice.index(SlotKind::Active);
    let now = pair.at(1);
    let from_alice = pair.alice.set_psk(&p1, now);
    // Nothing to keep: the new key becomes the active `Tunn` at once, with a new index.
    assert_eq!(pair.alice.key(SlotKind::Active), Some(p1.clone()));
    assert_eq!(pair.alice.index(SlotKind::Next), None);
    assert_ne!(pair.alice.index(SlotKind::Active), old);
    assert!(!pair.alice.snap.by_index.contains_key(&old.unwrap()));
    assert_eq!(only(&from_alice, INITIATION).len(), 1);

    let from_bob = pair.bob.set_psk(&p1, now);
    pair.exchange(from_alice, from_bob, now);
    assert_eq!(pair.key_alice_sends_with(now), Some(p1));
    assert!(pair.alice_to_bob(now));
    assert!(pair.bob_to_alice(now));
}

#[test]
fn the_initiator_promotes_on_the_response_and_the_responder_on_the_first_packet() {
    let (p0, p1, _) = keys();
    let mut pair = Pair::new(Some(&p0));
    let now = pair.at(1);
    // Bob moves first; his initiation is lost.
    let _lost = pair.bob.set_psk(&p1, now);
    let init = pair.alice.set_psk(&p1, now);

    let responses = pair
        .bob
        .receive(pair.alice.addr, &addressed(&init, pair.bob.addr), now);
    // Both of Bob's `Tunn`s answer; the one with Alice's key will be taken.
    assert_eq!(only(&responses, RESPONSE).len(), 2);
    // Bob's new session is not confirmed yet: he still sends under the old key.
    assert_eq!(pair.bob.key(SlotKind::Active), Some(p0.clone()));
    assert_eq!(pair.bob.key(SlotKind::Next), Some(p1.clone()));
    assert_eq!(pair.key_bob_sends_with(now), Some(p0.clone()));

    let keepalive = pair
        .alice
        .receive(pair.bob.addr, &addressed(&responses, pair.alice.addr), now);
    // The response that authenticates confirms Alice's session (the other one is dropped):
    // `next` is promoted and the old session retires.
    assert_eq!(pair.alice.counters().dropped_invalid, 1);
    assert_eq!(pair.alice.key(SlotKind::Active), Some(p1.clone()));
    assert_eq!(pair.alice.key(SlotKind::Retiring), Some(p0.clone()));
    assert_eq!(pair.alice.index(SlotKind::Next), None);
    assert_eq!(pair.key_alice_sends_with(now), Some(p1.clone()));
    // She confirms it to Bob with a keepalive under the new session.
    assert_eq!(only(&keepalive, DATA).len(), 1);
    assert_eq!(pair.bob.key(SlotKind::Next), Some(p1.clone()));

    pair.bob
        .receive(pair.alice.addr, &addressed(&keepalive, pair.bob.addr), now);
    assert_eq!(pair.bob.key(SlotKind::Active), Some(p1.clone()));
    assert_eq!(pair.bob.key(SlotKind::Retiring), Some(p0));
    assert_eq!(pair.key_bob_sends_with(now), Some(p1));
    assert!(pair.alice_to_bob(now));
    assert!(pair.bob_to_alice(now));
}

#[test]
fn packets_in_flight_under_the_old_key_arrive_until_the_retiring_session_ends() {
    let (p0, p1, _) = keys();
    let mut pair = Pair::new(Some(&p0));
    let now = pair.at(1);
    let (early, early_datagram) = pair.alice_data(now);
    let (late, late_datagram) = pair.alice_data(now);
    switch(&mut pair, &p1, now);
    assert_eq!(pair.bob.key(SlotKind::Retiring), Some(p0.clone()));
    let retiring = pair.bob.index(SlotKind::Retiring).unwrap();

    // An old-key packet still in flight is delivered: the retired session decrypts it.
    pair.bob.receive(pair.alice.addr, &[early_datagram], now);
    assert_eq!(pair.bob.delivered, [early]);
    pair.bob.delivered.clear();

    // The retired session lives RETIRE_AFTER from the switch, not a tick longer.
    pair.bob.tick(now + RETIRE_AFTER - Duration::from_millis(1));
    assert_eq!(pair.bob.key(SlotKind::Retiring), Some(p0));
    pair.bob.tick(now + RETIRE_AFTER);
    assert_eq!(pair.bob.index(SlotKind::Retiring), None);
    assert!(!pair.bob.snap.by_index.contains_key(&retiring));
    let invalid = pair.bob.counters().dropped_invalid;
    pair.bob
        .receive(pair.alice.addr, &[late_datagram], now + RETIRE_AFTER);
    assert!(
        !pair.bob.delivered.contains(&late),
        "old key accepted after retirement"
    );
    assert_eq!(pair.bob.counters().dropped_invalid, invalid + 1);
    // The new session is untouched.
    assert!(pair.alice_to_bob(now + RETIRE_AFTER));
}

#[test]
fn a_next_never_confirmed_is_abandoned_and_tried_afresh_while_the_old_key_carries_traffic() {
    let (p0, p1, _) = keys();
    let mut pair = Pair::new(Some(&p0));
    let now = pair.at(1);
    // Alice moves; Bob keeps the old key, so her handshake can never complete.
    let init = pair.alice.set_psk(&p1, now);
    pair.exchange(init, Vec::new(), now);
    let first = pair.alice.index(SlotKind::Next).unwrap();
    assert_eq!(pair.alice.key(SlotKind::Active), Some(p0.clone()));

    let before = now + GIVE_UP_AFTER - Duration::from_millis(1);
    assert!(only(&pair.alice.tick(before), INITIATION).is_empty());
    assert_eq!(pair.alice.index(SlotKind::Next), Some(first));
    assert!(pair.alice_to_bob(before));

    // Given up: a fresh `next` with the same key and a new index initiates again; the
    // abandoned index routes nowhere.
    let sent = pair.alice.tick(now + GIVE_UP_AFTER);
    let second = pair.alice.index(SlotKind::Next).unwrap();
    assert_ne!(second, first);
    assert_eq!(pair.alice.key(SlotKind::Next), Some(p1));
    assert!(!pair.alice.snap.by_index.contains_key(&first));
    let inits = only(&sent, INITIATION);
    assert_eq!(inits.len(), 1);
    assert_eq!(index_at(&inits[0], 4), second);
    // The old key never stopped carrying traffic.
    assert_eq!(pair.key_alice_sends_with(now + GIVE_UP_AFTER), Some(p0));
    assert!(pair.alice_to_bob(now + GIVE_UP_AFTER));
    assert!(pair.bob_to_alice(now + GIVE_UP_AFTER));
}

#[test]
fn at_the_handover_deadline_the_old_key_stops_carrying_traffic() {
    let (p0, p1, _) = keys();
    let mut pair = Pair::new(Some(&p0));
    pair.alice.control.key_handover = Some(Duration::from_secs(10));
    let init = pair.alice.set_psk(&p1, pair.at(1));
    pair.exchange(init, Vec::new(), pair.at(1));

    // Up to the deadline the old key works.
    pair.alice.tick(pair.at(11) - Duration::from_millis(1));
    assert_eq!(pair.alice.key(SlotKind::Active), Some(p0.clone()));
    assert!(pair.alice_to_bob(pair.at(10)));
    let old = pair.alice.index(SlotKind::Active).unwrap();

    // At the deadline its session ends: the new key is the only one, still handshaking,
    // and nothing passes either way while Bob holds the old key.
    pair.alice.tick(pair.at(11));
    assert_eq!(pair.alice.key(SlotKind::Active), Some(p1.clone()));
    assert_eq!(pair.alice.index(SlotKind::Next), None);
    assert_eq!(pair.alice.index(SlotKind::Retiring), None);
    assert!(!pair.alice.snap.by_index.contains_key(&old));
    assert!(!pair.alice_to_bob(pair.at(11)));
    assert!(!pair.bob_to_alice(pair.at(11)));

    // Once Bob has the new key too, traffic flows under it.
    let from_bob = pair.bob.set_psk(&p1, pair.at(12));
    pair.exchange(Vec::new(), from_bob, pair.at(12));
    assert_eq!(pair.key_alice_sends_with(pair.at(12)), Some(p1));
    assert!(pair.alice_to_bob(pair.at(12)));
    assert!(pair.bob_to_alice(pair.at(12)));
}

#[test]
fn a_second_key_change_keeps_the_deadline_of_the_first() {
    let (p0, p1, p2) = keys();
    let mut pair = Pair::new(Some(&p0));
    pair.alice.control.key_handover = Some(Duration::from_secs(30));
    pair.alice.set_psk(&p1, pair.at(1));
    pair.alice.set_psk(&p2, pair.at(20));
    pair.alice.tick(pair.at(31) - Duration::from_millis(1));
    assert_eq!(pair.alice.key(SlotKind::Active), Some(p0));
    // 30 s after the first change, not after the second.
    pair.alice.tick(pair.at(31));
    assert_eq!(pair.alice.key(SlotKind::Active), Some(p2));
    assert_eq!(pair.alice.index(SlotKind::Next), None);
}

#[test]
fn a_key_changed_again_before_confirmation_replaces_next_and_its_late_replies_go_nowhere() {
    let (p0, p1, p2) = keys();
    let mut pair = Pair::new(Some(&p0));
    let now = pair.at(1);
    let first_init = pair.alice.set_psk(&p1, now);
    let first = pair.alice.index(SlotKind::Next).unwrap();

    let second_init = pair.alice.set_psk(&p2, pair.at(2));
    let second = pair.alice.index(SlotKind::Next).unwrap();
    assert_ne!(second, first);
    assert_eq!(pair.alice.key(SlotKind::Next), Some(p2.clone()));
    assert_eq!(pair.alice.key(SlotKind::Active), Some(p0.clone()));
    assert!(!pair.alice.snap.by_index.contains_key(&first));
    assert_eq!(only(&second_init, INITIATION).len(), 1);

    // Bob is at the newest key (his own initiation is lost). The replies to the first
    // initiation arrive late, for an index that is gone: dropped, nothing changes.
    let _lost = pair.bob.set_psk(&p2, pair.at(2));
    let late = pair.bob.receive(
        pair.alice.addr,
        &addressed(&first_init, pair.bob.addr),
        pair.at(2),
    );
    assert_eq!(only(&late, RESPONSE).len(), 2);
    let invalid = pair.alice.counters().dropped_invalid;
    let answer = pair.alice.receive(
        pair.bob.addr,
        &addressed(&late, pair.alice.addr),
        pair.at(2),
    );
    assert!(answer.is_empty());
    assert_eq!(pair.alice.counters().dropped_invalid, invalid + 2);
    assert_eq!(pair.alice.key(SlotKind::Active), Some(p0));

    // The second initiation completes with the newest key.
    pair.exchange(second_init, Vec::new(), pair.at(2));
    assert_eq!(pair.alice.key(SlotKind::Active), Some(p2.clone()));
    assert_eq!(pair.bob.key(SlotKind::Active), Some(p2.clone()));
    assert_eq!(pair.key_alice_sends_with(pair.at(2)), Some(p2.clone()));
    assert_eq!(pair.key_bob_sends_with(pair.at(2)), Some(p2));
    assert!(pair.alice_to_bob(pair.at(2)));
}

#[test]
fn a_peer_removed_mid_handshake_is_gone_and_its_replies_go_nowhere() {
    let (p0, p1, _) = keys();
    let mut pair = Pair::new(Some(&p0));
    let now = pair.at(1);
    let _lost = pair.bob.set_psk(&p1, now);
    let init = pair.alice.set_psk(&p1, now);
    let indices: Vec<u32> = pair.alice.peer().state.lock().indices().collect();
    assert_eq!(indices.len(), 2, "active and next");
    let responses = pair
        .bob
        .receive(pair.alice.addr, &addressed(&init, pair.bob.addr), now);

    let remove = DeviceUpdate {
        peers: vec![PeerUpdate {
            remove: true,
            ..PeerUpdate::new(pair.bob.key.public_key())
        }],
        ..DeviceUpdate::default()
    };
    assert!(pair.alice.update(&remove, now).is_empty());
    assert!(pair.alice.snap.peers.is_empty());
    assert!(indices
        .iter()
        .all(|i| !pair.alice.snap.by_index.contains_key(i)));
    // The responses complete nothing and draw no answer.
    let answer = pair
        .alice
        .receive(pair.bob.addr, &addressed(&responses, pair.alice.addr), now);
    assert!(answer.is_empty());
    assert_eq!(pair.alice.counters().dropped_invalid, 2);
    // Nothing is sent to the removed peer, and nothing from it is accepted.
    assert!(pair.alice.send(&ip_packet(1, 2, b"gone"), now).is_empty());
    assert_eq!(pair.alice.counters().dropped_no_route, 1);
    assert!(!pair.bob_to_alice(now));
}

#[test]
fn a_peer_removed_before_its_initiation_went_out_sends_nothing() {
    let (p0, p1, _) = keys();
    let mut pair = Pair::new(Some(&p0));
    let key = pair.bob.key.public_key();
    // One `set`: the new key, then the removal, before the initiation is sent.
    let update = DeviceUpdate {
        peers: vec![
            PeerUpdate {
                preshared_key: Some(Some(p1)),
                ..PeerUpdate::new(key)
            },
            PeerUpdate {
                remove: true,
                ..PeerUpdate::new(key)
            },
        ],
        ..DeviceUpdate::default()
    };
    assert!(pair.alice.update(&update, pair.at(1)).is_empty());
    assert!(pair.alice.snap.by_index.is_empty());
    assert!(pair.alice.tick(pair.at(2)).is_empty());
}
