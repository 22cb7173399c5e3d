//! Cut-off notices in the scheduler: a notice removes the peers it names at once, or every
//! gated peer when it names this node; it never adds one; a notice naming nobody enforced
//! changes nothing; a replayed or expired notice is ignored, so a readmitted peer stays.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use meshtun_proto::bundle::Membership;
use meshtun_proto::{EpochId, IdentityPublic, PresharedKey, PrivateKey, PublicKey};
use tokio::sync::mpsc;

use super::*;
use crate::config::LossPolicy;
use crate::gate::unix_ms;

fn peer(id: &str) -> GatedPeer {
    GatedPeer {
        forwards_to: Vec::new(),
        node_id: id.to_owned(),
        public_key: PrivateKey::generate().public_key(),
        candidates: vec!["192.0.2.9:51820".to_owned()],
        allowed_ips: Vec::new(),
        psk: PresharedKey::from_bytes([7; 32]),
    }
}

fn bundle(epoch: EpochId, peers: Vec<GatedPeer>) -> Fetched {
    Fetched::Bundle(super::tests::bundle(
        epoch,
        unix_ms(),
        Membership::Allowed,
        peers,
    ))
}

fn notice(epoch: EpochId, denied: &[PublicKey], names_me: bool) -> Fetched {
    let now = unix_ms();
    Fetched::CutOff(VerifiedCutOff {
        epoch,
        decided_ms: now - 40,
        not_after_ms: now + 60_000,
        issued_ms: now,
        denied: denied.iter().copied().collect::<BTreeSet<_>>(),
        names_me,
        signer: IdentityPublic::from_bytes([0; 32]),
    })
}

fn names(update: &GateUpdate) -> Vec<&str> {
    update.peers.iter().map(|p| p.node_id.as_str()).collect()
}

struct Running {
    fetched: mpsc::Sender<Fetched>,
    updates: mpsc::Receiver<GateUpdate>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (tx, updates) = mpsc::channel(16);
        let lookup: super::Lookup = Arc::new(|_| Box::pin(std::future::pending()));
        let scheduler = Scheduler::new(
            GateState::new(LossPolicy::FailClosed, 3_000),
            dir.path().join("bundle.json"),
            SharedGateStatus::default(),
            tx,
            lookup,
            Arc::new(unix_ms),
        );
        let (fetched, received) = mpsc::channel(4);
        let task = tokio::spawn(scheduler.run(received));
        Self {
            fetched,
            updates,
            task,
            _dir: dir,
        }
    }

    /// Sends `fetched`; the last update it brought within 200 ms, if any (numeric
    /// endpoints "resolve" at once and may bring a second, identical one).
    async fn send(&mut self, fetched: Fetched) -> Option<GateUpdate> {
        while self.updates.try_recv().is_ok() {}
        self.fetched.send(fetched).await.unwrap();
        let mut last = None;
        let until = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(Some(update)) = tokio::time::timeout_at(until, self.updates.recv()).await {
            last = Some(update);
        }
        last
    }
}

#[tokio::test]
async fn a_notice_removes_the_named_peer_at_once_and_nothing_else() {
    let mut s = Running::start();
    let (p, q) = (peer("p"), peer("q"));
    let first = s.send(bundle(1, vec![p.clone(), q.clone()])).await.unwrap();
    assert_eq!(names(&first), ["p", "q"]);
    let cut = s
        .send(notice(2, &[q.public_key], false))
        .await
        .expect("no update");
    assert_eq!(names(&cut), ["p"]);
    assert_eq!(cut.membership, MembershipState::Allowed);
    assert_eq!(cut.epoch, Some(2), "the update names the notice's epoch");
    assert!(cut.decided_ms > 0 && cut.decided_ms <= unix_ms());
    // The same notice again, or one naming only keys not enforced here: nothing happens.
    assert_eq!(s.send(notice(2, &[q.public_key], false)).await, None);
    let stranger = PrivateKey::generate().public_key();
    assert_eq!(s.send(notice(3, &[stranger], false)).await, None);
    // The epoch's bundle comes: the peer stays out, and the other keeps its settings.
    let after = s.send(bundle(3, vec![p.clone()])).await.unwrap();
    assert_eq!(names(&after), ["p"]);
    assert_eq!(after.peers[0].settings, cut.peers[0].settings);
    s.task.abort();
}

#[tokio::test]
async fn a_notice_naming_this_node_drops_every_gated_peer() {
    let mut s = Running::start();
    s.send(bundle(1, vec![peer("p"), peer("q")])).await.unwrap();
    let cut = s.send(notice(2, &[], true)).await.expect("no update");
    assert!(cut.peers.is_empty(), "{cut:?}");
    assert!(matches!(cut.membership, MembershipState::Denied { .. }));
    assert!(!cut.forward && cut.relay.is_none());
    s.task.abort();
}

/// A notice captured before a readmission and replayed after it cannot cut the peer off
/// again, nor can an expired one.
#[tokio::test]
async fn a_replayed_or_expired_notice_does_not_cut_off_a_readmitted_peer() {
    let mut s = Running::start();
    let (p, q) = (peer("p"), peer("q"));
    s.send(bundle(1, vec![p.clone(), q.clone()])).await.unwrap();
    let old = notice(2, &[q.public_key], false);
    s.send(old.clone()).await.expect("no update");
    s.send(bundle(2, vec![p.clone()])).await;
    let readmitted = s.send(bundle(3, vec![p.clone(), q.clone()])).await.unwrap();
    assert_eq!(names(&readmitted), ["p", "q"]);
    assert_eq!(s.send(old).await, None, "the replayed notice was applied");
    let Fetched::CutOff(mut expired) = notice(4, &[q.public_key], false) else {
        unreachable!()
    };
    expired.not_after_ms = unix_ms() - 1;
    assert_eq!(s.send(Fetched::CutOff(expired)).await, None);
    s.task.abort();
}
