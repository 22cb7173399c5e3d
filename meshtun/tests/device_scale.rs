//! The device at scale: a hub with 1,000 peers whose preshared keys all change at once (as a
//! new epoch's bundle changes them), and the deadline on an old preshared key.

mod pair;

use std::time::Duration;

use meshtun::device::channel::Network;
use meshtun::wgcfg::{DeviceUpdate, PeerUpdate};
use meshtun_proto::{PresharedKey, PrivateKey};
use tokio::time::{timeout, Instant};

use pair::spokes::Hub;
use pair::{ip_packet, pair, ping, WAIT};

/// Peers of the hub.
const PEERS: usize = 1_000;
/// The epoch the rotation must complete within. Its handshakes exceed the device-wide
/// handshake rate (100 a second), so most spokes answer once with a cookie reply and
/// complete at the hub's retry, 5 s later.
const EPOCH: Duration = Duration::from_secs(20);

/// Waits until all `PEERS` spokes heard from the hub on their current `Tunn`; panics with the
/// count after `limit`. Returns how long it took.
async fn all_heard(hub: &Hub, limit: Duration, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let heard = hub.heard();
        if heard == PEERS {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what}: only {heard} of {PEERS} peers within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Finding #7: one configuration change gives 1,000 peers a new preshared key. Before the
/// fix, only the first 128 initiations (one datagram batch) were sent and the others never:
/// those pairs kept their old key for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_7_every_one_of_1000_peers_rotates_within_the_epoch() {
    let net = Network::new();
    let hub = Hub::new(&net, PEERS);
    hub.send_to_all(b"first").await;
    let took = all_heard(&hub, EPOCH, "first handshakes").await;
    eprintln!("{PEERS} peers handshaken in {took:?}");

    let rotated = hub.rotate_spokes();
    let start = Instant::now();
    hub.dev.reconfigure(&rotated).await.unwrap();
    let applied = start.elapsed();
    let took = all_heard(&hub, EPOCH, "rotation to the new keys").await;
    eprintln!("{PEERS} peers: change applied in {applied:?}, all on the new keys after {took:?}");
    // And traffic goes to every spoke over the new sessions.
    for spoke in hub.spokes.lock().values_mut() {
        spoke.heard = false;
    }
    hub.send_to_all(b"after").await;
    all_heard(&hub, WAIT, "traffic after the rotation").await;
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

/// Finding #7, the hard deadline: once a new preshared key is configured, the old one may
/// carry traffic for at most the handover limit (the gate sets one epoch), even if the peer
/// never moves to the new key. Before the fix, the old key's session lived on (and rekeyed
/// with the old key) for as long as the peer kept it.
#[tokio::test]
async fn finding_7_an_old_preshared_key_ends_at_its_deadline() {
    const HANDOVER: Duration = Duration::from_secs(1);
    let net = Network::new();
    let old = PresharedKey::generate();
    let (alice, mut bob) = pair(&net, Some(&old));
    ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"old").await;
    alice.dev.set_key_handover(Some(HANDOVER));
    let new = PresharedKey::generate();
    alice.dev.update(set_psk(&bob.key, &new)).await.unwrap();
    // Make-before-break: the old key still works while Bob has not moved.
    ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"still old").await;
    tokio::time::sleep(HANDOVER + Duration::from_millis(300)).await;
    let late = ip_packet("100.64.0.1", "100.64.0.2", b"past the deadline");
    alice.tun.to_device.send(late.clone()).await.unwrap();
    let delivered = timeout(Duration::from_secs(1), async {
        loop {
            if bob.tun.from_device.recv().await.as_ref() == Some(&late) {
                return;
            }
        }
    })
    .await;
    assert!(
        delivered.is_err(),
        "the old key still carried traffic past its deadline"
    );
    // Bob moves to the new key: the pair works again at once.
    bob.dev.update(set_psk(&alice.key, &new)).await.unwrap();
    ping(&alice, &mut bob, "100.64.0.1", "100.64.0.2", b"new").await;
}
