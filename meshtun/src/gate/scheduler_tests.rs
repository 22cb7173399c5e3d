//! The scheduler never waits for DNS: a peer whose host name never resolves delays no
//! cut-off, its failed lookup is not repeated for every bundle, and a name that does resolve
//! reaches the device in a second update.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use meshtun_proto::{PresharedKey, PrivateKey};

use super::*;
use crate::config::LossPolicy;
use crate::gate::unix_ms;

/// A name that never answers: its lookup never completes.
const BLACKHOLE: &str = "never.resolves.example:51820";

/// A name that resolves after 200 ms.
const SLOW: &str = "slow.example:51820";

fn peer(id: &str, endpoint: &str) -> GatedPeer {
    GatedPeer {
        forwards_to: Vec::new(),
        node_id: id.to_owned(),
        public_key: PrivateKey::generate().public_key(),
        candidates: vec![endpoint.to_owned()],
        allowed_ips: Vec::new(),
        psk: PresharedKey::from_bytes([7; 32]),
    }
}

pub(super) fn bundle(
    epoch: u64,
    now: u64,
    membership: Membership,
    peers: Vec<GatedPeer>,
) -> VerifiedBundle {
    VerifiedBundle {
        forward: false,
        relay: None,
        epoch,
        activation_ms: now,
        not_after_ms: now + 60_000,
        issued_ms: now,
        decided_ms: now,
        membership,
        peers,
        refused: Vec::new(),
        signed: SignedBundle {
            payload: String::new(),
            signature: String::new(),
        },
        signer: meshtun_proto::IdentityPublic::from_bytes([0; 32]),
    }
}

/// A lookup that never answers for [`BLACKHOLE`], answers [`SLOW`] after 200 ms, and counts
/// its calls.
fn lookup(calls: Arc<AtomicUsize>) -> Lookup {
    Arc::new(move |text: String| {
        calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if text == SLOW {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Some("198.51.100.20:51820".parse().unwrap())
            } else {
                std::future::pending().await
            }
        })
    })
}

/// The next update, within `limit`.
async fn next(updates: &mut mpsc::Receiver<GateUpdate>, limit: Duration) -> GateUpdate {
    tokio::time::timeout(limit, updates.recv())
        .await
        .unwrap_or_else(|_| panic!("no update within {limit:?}"))
        .expect("the scheduler stopped")
}

#[tokio::test]
async fn a_name_that_never_resolves_delays_no_cut_off_and_is_looked_up_once() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, mut updates) = mpsc::channel(16);
    let scheduler = Scheduler::new(
        GateState::new(LossPolicy::FailClosed, 3_000),
        dir.path().join("bundle.json"),
        SharedGateStatus::default(),
        tx,
        lookup(calls.clone()),
        Arc::new(unix_ms),
    );
    let (bundles, received) = mpsc::channel(4);
    let task = tokio::spawn(scheduler.run(received));
    let fast = Duration::from_millis(500);

    // Allowed, with a peer whose name never answers and one at a numeric address.
    let now = unix_ms();
    let peers = vec![peer("h", BLACKHOLE), peer("p", "192.0.2.9:51820")];
    bundles
        .send(bundle(1, now, Membership::Allowed, peers.clone()).into())
        .await
        .unwrap();
    let update = next(&mut updates, fast).await;
    assert_eq!(update.membership, MembershipState::Allowed);
    let endpoints: Vec<_> = update.peers.iter().map(|p| p.settings.endpoint).collect();
    assert_eq!(
        endpoints,
        vec![None, Some("192.0.2.9:51820".parse().unwrap())]
    );

    // Denied: enforced at once, not after a lookup.
    let now = unix_ms();
    let denied = Membership::Denied {
        reason: "honesty 0.1".into(),
    };
    bundles
        .send(bundle(2, now, denied, Vec::new()).into())
        .await
        .unwrap();
    let update = next(&mut updates, fast).await;
    assert!(
        matches!(update.membership, MembershipState::Denied { .. }),
        "{update:?}"
    );
    assert!(update.peers.is_empty());

    // Readmitted with the same peer: its failed name is not looked up again.
    let now = unix_ms();
    bundles
        .send(bundle(3, now, Membership::Allowed, peers).into())
        .await
        .unwrap();
    let update = next(&mut updates, fast).await;
    assert_eq!(update.membership, MembershipState::Allowed);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the name was looked up more than once"
    );
    task.abort();
}

#[tokio::test]
async fn a_name_that_resolves_later_reaches_the_device_in_a_second_update() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut updates) = mpsc::channel(16);
    let scheduler = Scheduler::new(
        GateState::new(LossPolicy::FailClosed, 3_000),
        dir.path().join("bundle.json"),
        SharedGateStatus::default(),
        tx,
        lookup(Arc::new(AtomicUsize::new(0))),
        Arc::new(unix_ms),
    );
    let (bundles, received) = mpsc::channel(4);
    let task = tokio::spawn(scheduler.run(received));
    let now = unix_ms();
    bundles
        .send(bundle(1, now, Membership::Allowed, vec![peer("s", SLOW)]).into())
        .await
        .unwrap();
    let first = next(&mut updates, Duration::from_millis(150)).await;
    assert_eq!(first.peers[0].settings.endpoint, None);
    let second = next(&mut updates, Duration::from_secs(2)).await;
    assert_eq!(
        second.peers[0].settings.endpoint,
        Some("198.51.100.20:51820".parse().unwrap())
    );
    // The daemon learns the name, to look it up again if the peer goes silent.
    assert_eq!(second.peers[0].endpoint_name.as_deref(), Some(SLOW));
    task.abort();
}

/// A node whose clock is `skew_ms` off the controller's (positive: ahead) still switches to a
/// bundle at its activation time, as the controller counts it, within 150 ms: neither early
/// (nor refusing it as expired on arrival) nor late.
async fn activation_is_on_time_with_a_skewed_clock(skew_ms: i64) {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut updates) = mpsc::channel(16);
    let local: LocalClock = Arc::new(move || {
        let now = unix_ms();
        if skew_ms >= 0 {
            now + skew_ms.unsigned_abs()
        } else {
            now - skew_ms.unsigned_abs()
        }
    });
    let scheduler = Scheduler::new(
        GateState::new(LossPolicy::FailClosed, 3_000),
        dir.path().join("bundle.json"),
        SharedGateStatus::default(),
        tx,
        lookup(Arc::new(AtomicUsize::new(0))),
        local,
    );
    let (bundles, received) = mpsc::channel(4);
    let task = tokio::spawn(scheduler.run(received));
    // Epochs of 5 s, each published 1 s ahead (the controller's times are the true ones).
    for epoch in 1..=3 {
        let issued = unix_ms();
        let activation = issued + 1_000;
        let mut b = bundle(epoch, activation, Membership::Allowed, Vec::new());
        b.issued_ms = issued;
        b.not_after_ms = activation + 5_000;
        let sent = std::time::Instant::now();
        bundles.send(b.into()).await.unwrap();
        let update = next(&mut updates, Duration::from_secs(3)).await;
        let waited = sent.elapsed();
        assert_eq!(update.epoch, Some(epoch), "skew {skew_ms} ms");
        // The decision time comes on this node's clock, so the cut-off latency the daemon
        // measures against it is not off by the skew.
        let local_now = unix_ms().saturating_add_signed(skew_ms);
        let gap = local_now.abs_diff(update.decided_ms);
        assert!(
            gap < 500,
            "skew {skew_ms} ms: decided_ms {} is {gap} ms from this node's clock",
            update.decided_ms
        );
        assert!(
            waited >= Duration::from_millis(900) && waited <= Duration::from_millis(1_150),
            "skew {skew_ms} ms: epoch {epoch} switched {waited:?} after publication, not 1 s"
        );
    }
    task.abort();
}

#[tokio::test]
async fn a_node_twenty_seconds_ahead_switches_on_time() {
    activation_is_on_time_with_a_skewed_clock(20_000).await;
}

#[tokio::test]
async fn a_node_twenty_seconds_behind_switches_on_time() {
    activation_is_on_time_with_a_skewed_clock(-20_000).await;
}

#[tokio::test]
async fn a_forwarding_bundle_marks_every_gated_peer_and_a_denial_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut updates) = mpsc::channel(16);
    let scheduler = Scheduler::new(
        GateState::new(LossPolicy::FailClosed, 3_000),
        dir.path().join("bundle.json"),
        SharedGateStatus::default(),
        tx,
        lookup(Arc::new(AtomicUsize::new(0))),
        Arc::new(unix_ms),
    );
    let (bundles, received) = mpsc::channel(4);
    let task = tokio::spawn(scheduler.run(received));
    let fast = Duration::from_millis(500);

    let mut hub = bundle(
        1,
        unix_ms(),
        Membership::Allowed,
        vec![peer("s1", "192.0.2.2:51820"), peer("s2", "192.0.2.3:51820")],
    );
    hub.forward = true;
    bundles.send(hub.into()).await.unwrap();
    let update = next(&mut updates, fast).await;
    assert!(update.forward);
    assert!(
        update.peers.iter().all(|p| p.settings.forward),
        "{update:?}"
    );

    let denied = Membership::Denied {
        reason: "overall 0.1".into(),
    };
    let mut denial = bundle(2, unix_ms(), denied, Vec::new());
    denial.forward = true;
    bundles.send(denial.into()).await.unwrap();
    let update = next(&mut updates, fast).await;
    assert!(!update.forward && update.peers.is_empty(), "{update:?}");
    task.abort();
}
