//! The device at scale: a hub with 1,000 peers whose preshared keys all change at once (as a
//! new epoch's bundle changes them), the deadline on an old preshared key, and the cost of
//! applying a change to 1,000 peers.

use crate::pair;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshtun::device::benching::{hub_settings, ApplyBench};
use meshtun::device::channel::{ChannelTun, Network};
use meshtun::device::Device;
use meshtun::wgcfg::{DeviceSettings, DeviceUpdate, PeerUpdate};
use meshtun_proto::{PresharedKey, PrivateKey};
use tokio::sync::mpsc;
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

/// Packets the busy peer's stream sends at most (one every `BUSY_EVERY`).
const BUSY_MAX: u32 = 20_000;
const BUSY_EVERY: Duration = Duration::from_millis(2);
/// The longest the hub may go without sending the busy peer a packet while the others
/// rotate: well under
/// the 5 s a handshake retry takes, so a stream that waited for its new key would fail.
const BUSY_GAP: Duration = Duration::from_millis(1_000);

/// Sends numbered packets from the hub's host to `dst` until `stop` is set (or `BUSY_MAX`
/// were sent); returns how many it sent.
async fn busy_stream(tun: mpsc::Sender<Vec<u8>>, dst: String, stop: Arc<AtomicBool>) -> u32 {
    let mut sent = 0;
    while sent < BUSY_MAX && !stop.load(Ordering::Relaxed) {
        let packet = ip_packet("100.64.0.1", &dst, format!("busy {sent:08}").as_bytes());
        tun.send(packet).await.unwrap();
        sent += 1;
        tokio::time::sleep(BUSY_EVERY).await;
    }
    sent
}

/// Checks the busy spoke's log: exactly the `sent` packets, in order, none lost; first on
/// the `Tunn` with index `before`, then on the one with `after`, never back; no gap longer
/// than `BUSY_GAP`. Returns the longest gap.
fn check_busy_log(
    log: &[(std::time::Instant, u32, Vec<u8>)],
    sent: u32,
    before: u32,
    after: u32,
) -> Duration {
    let numbers: Vec<u32> = log
        .iter()
        .map(|(_, _, p)| {
            let text = std::str::from_utf8(&p[p.len() - 13..]).unwrap();
            text.strip_prefix("busy ").unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(
        numbers,
        (0..sent).collect::<Vec<_>>(),
        "busy stream: packets lost"
    );
    let tunns: Vec<u32> = log.iter().map(|(_, index, _)| *index).collect();
    let switched = tunns
        .iter()
        .position(|i| *i != before)
        .expect("never on the new key");
    assert!(
        switched > 0,
        "the new key carried the busy stream from the start"
    );
    assert!(
        tunns[switched..].iter().all(|i| *i == after),
        "the busy stream went back to the previous key: {tunns:?}"
    );
    let gap = log.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap();
    assert!(gap < BUSY_GAP, "the busy stream stalled for {gap:?}");
    gap
}

/// Issue 16: 1,000 peers whose preshared keys all change (one of them busy, receiving a
/// packet every 2 ms throughout): every pair handshakes again with the new key within the
/// epoch (each spoke's new `Tunn` decrypts data from the hub), while the busy peer's stream
/// loses nothing and never stalls, moving from the previous key to the new one exactly once
/// (make-before-break on both sides, the packet path never waiting for the change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_of_1000_peers_leaves_the_busy_peers_stream_uninterrupted() {
    let net = Network::new();
    let hub = Hub::new(&net, PEERS);
    hub.send_to_all(b"first").await;
    all_heard(&hub, EPOCH, "first handshakes").await;
    let (busy_addr, busy_ip, busy_index) = {
        let mut spokes = hub.spokes.lock();
        let busy = spokes.values_mut().min_by_key(|s| s.addr).unwrap();
        busy.logging = true;
        (busy.addr, busy.ip, busy.index())
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stream = busy_stream(hub.tun.to_device.clone(), busy_ip.to_string(), stop.clone());
    let stream = tokio::spawn(stream);
    // The stream runs on the current keys first.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let rotated = hub.rotate_spokes();
    let start = Instant::now();
    hub.dev.reconfigure(&rotated).await.unwrap();
    let applied = start.elapsed();
    let took = all_heard(&hub, EPOCH, "rotation to the new keys").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = stream.await.unwrap();
    // Give the workers time to deliver the last packets; the log check names what is lost.
    let deadline = Instant::now() + WAIT;
    while hub.spokes.lock()[&busy_addr].log.len() < sent as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (before, after) = (busy_index, busy_index + 10_000);
    let gap = check_busy_log(&hub.spokes.lock()[&busy_addr].log, sent, before, after);
    eprintln!(
        "{PEERS} peers: change applied in {applied:?}, all on the new keys after {took:?}; \
         busy stream: {sent} packets, none lost, longest gap {gap:?}"
    );
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
    // Not a wait for a condition: the deadline passes, plus three runs of the timer task.
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

/// CPU time of this thread: what a computation costs, whatever else the machine runs.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The three changes of the apply test, each from the previous: new preshared keys for all
/// (an epoch's bundle), then moved endpoints and networks, then the same again (no change).
fn changes(first: &DeviceSettings) -> [(&'static str, DeviceSettings); 3] {
    let mut rekeyed = first.clone();
    for peer in &mut rekeyed.peers {
        peer.preshared_key = Some(PresharedKey::generate());
    }
    let mut moved = rekeyed.clone();
    for (i, peer) in moved.peers.iter_mut().enumerate() {
        peer.endpoint = Some(SocketAddr::from(([203, 0, 113, 1], 30_000 + i as u16)));
        peer.allowed_ips.reverse();
        peer.allowed_ips[0] = format!("100.66.{}.{}/32", i / 256, i % 256)
            .parse()
            .unwrap();
    }
    [
        ("new preshared keys", rekeyed),
        ("moved endpoints and networks", moved.clone()),
        ("no change", moved),
    ]
}

/// Finding #18: applying a configuration change to 1,000 peers holds the control lock (which
/// stalls the timers and any other change) well under 50 ms, for each kind of change. Before
/// the fix, finding a peer, claiming its networks and keeping the configuration order each
/// cost O(n) per peer. The whole `reconfigure`, with the 1,000 handshake initiations sent
/// after the lock is released, is reported too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_18_applying_a_change_to_1000_peers_takes_under_50_ms() {
    const LIMIT: Duration = Duration::from_millis(50);
    let hub = PrivateKey::generate();
    let keys: Vec<PrivateKey> = (0..PEERS).map(|_| PrivateKey::generate()).collect();
    let first = hub_settings(&hub, &keys);
    let mut bench = ApplyBench::new(&first);
    let mut worst = Duration::ZERO;
    for (what, settings) in changes(&first) {
        let start = thread_cpu_time();
        bench.prepare(&settings);
        let prepared = thread_cpu_time() - start;
        let start = thread_cpu_time();
        assert_eq!(bench.apply(&settings), PEERS);
        let took = thread_cpu_time() - start;
        eprintln!(
            "{PEERS} peers, {what}: {took:?} of CPU under the control lock \
             ({prepared:?} before it to build Tunns)"
        );
        worst = worst.max(took);
        let status = bench.status();
        assert!(status.peers.iter().zip(&settings.peers).all(|(s, p)| {
            s.public_key == p.public_key
                && s.allowed_ips == p.allowed_ips
                && s.endpoint == p.endpoint
                && s.preshared_key == p.preshared_key
        }));
    }

    let net = Network::new();
    let (tun, _handle) = ChannelTun::pair();
    let factory = net.host("192.0.2.1".parse().unwrap());
    let dev = Device::start("mt-apply", tun, factory, 1420, &first).unwrap();
    for (what, settings) in changes(&first) {
        let start = Instant::now();
        dev.reconfigure(&settings).await.unwrap();
        eprintln!(
            "{PEERS} peers, {what}: reconfigure returned after {:?}",
            start.elapsed()
        );
    }
    assert!(
        worst < LIMIT,
        "applying a change to {PEERS} peers held the control lock for {worst:?}"
    );
}
