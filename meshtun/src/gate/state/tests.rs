use meshtun_proto::bundle::{Membership, SignedBundle};

use super::*;

const GRACE: u64 = 3_000;

fn bundle(epoch: EpochId, activation_ms: u64, not_after_ms: u64) -> VerifiedBundle {
    VerifiedBundle {
        forward: false,
        relay: None,
        epoch,
        activation_ms,
        not_after_ms,
        issued_ms: activation_ms.saturating_sub(1_000),
        decided_ms: activation_ms.saturating_sub(1_000),
        membership: Membership::Allowed,
        peers: Vec::new(),
        refused: Vec::new(),
        signed: SignedBundle {
            payload: String::new(),
            signature: String::new(),
        },
        signer: meshtun_proto::IdentityPublic::from_bytes([0; 32]),
    }
}

fn epoch_of(state: &GateState) -> Option<EpochId> {
    match state.enforced() {
        Enforced::Nothing => None,
        Enforced::Bundle(b) => Some(b.epoch),
        Enforced::Lost(_) => Some(0),
    }
}

#[test]
fn a_bundle_takes_effect_at_its_activation_time() {
    let mut s = GateState::new(LossPolicy::FailClosed, GRACE);
    s.offer(bundle(1, 10_000, 20_000), 5_000).unwrap();
    assert!(!s.advance(9_999));
    assert_eq!(s.enforced(), Enforced::Nothing);
    assert_eq!(s.next_epoch(), Some(1));
    assert_eq!(s.next_deadline(), Some(10_000));
    assert!(s.advance(10_000));
    assert_eq!(epoch_of(&s), Some(1));
    assert_eq!(s.next_epoch(), None);
    // Next wake-up: the loss rule, at not_after + grace.
    assert_eq!(s.next_deadline(), Some(23_000));
    assert!(!s.advance(10_500));
}

#[test]
fn older_or_equal_epochs_are_refused() {
    let mut s = GateState::new(LossPolicy::FailClosed, GRACE);
    s.offer(bundle(5, 0, 20_000), 1_000).unwrap();
    s.advance(1_000);
    let err = s.offer(bundle(5, 0, 20_000), 1_000).unwrap_err();
    assert!(matches!(
        err,
        BundleCheckError::StaleEpoch { got: 5, have: 5 }
    ));
    let err = s.offer(bundle(4, 0, 20_000), 1_000).unwrap_err();
    assert!(matches!(
        err,
        BundleCheckError::StaleEpoch { got: 4, have: 5 }
    ));
    // Also against a waiting (not yet active) bundle.
    s.offer(bundle(6, 20_000, 40_000), 1_000).unwrap();
    let err = s.offer(bundle(6, 20_000, 40_000), 1_000).unwrap_err();
    assert!(matches!(
        err,
        BundleCheckError::StaleEpoch { got: 6, have: 6 }
    ));
    assert_eq!(s.newest_epoch(), Some(6));
}

#[test]
fn expired_bundles_are_refused() {
    let mut s = GateState::new(LossPolicy::FailClosed, GRACE);
    let err = s.offer(bundle(1, 0, 20_000), 20_000).unwrap_err();
    assert!(matches!(err, BundleCheckError::Expired { epoch: 1, .. }));
    assert_eq!(s.newest_epoch(), None);
}

#[test]
fn the_newest_due_bundle_wins_and_older_waiting_ones_are_dropped() {
    let mut s = GateState::new(LossPolicy::FailClosed, GRACE);
    s.offer(bundle(1, 10_000, 20_000), 0).unwrap();
    // An immediate rotation (a denial) supersedes epoch 1 before it starts.
    s.offer(bundle(2, 5_000, 15_000), 1_000).unwrap();
    assert!(s.advance(12_000));
    assert_eq!(epoch_of(&s), Some(2));
    assert_eq!(s.next_epoch(), None);
}

#[test]
fn fail_closed_applies_after_not_after_plus_grace_and_a_new_bundle_recovers() {
    let mut s = GateState::new(LossPolicy::FailClosed, GRACE);
    s.offer(bundle(1, 0, 10_000), 0).unwrap();
    s.advance(0);
    assert!(!s.advance(12_999), "still within the grace");
    assert!(matches!(s.enforced(), Enforced::Bundle(_)));
    assert!(s.advance(13_000));
    assert!(matches!(s.enforced(), Enforced::Lost(b) if b.epoch == 1));
    assert!(!s.advance(20_000), "the loss is reported once");
    assert_eq!(s.next_deadline(), None);
    // The controller is back.
    s.offer(bundle(2, 19_000, 30_000), 20_000).unwrap();
    assert!(s.advance(20_000));
    assert_eq!(epoch_of(&s), Some(2));
}

#[test]
fn keep_last_never_drops_the_last_bundle() {
    let mut s = GateState::new(LossPolicy::KeepLast, GRACE);
    s.offer(bundle(1, 0, 10_000), 0).unwrap();
    s.advance(0);
    assert!(!s.advance(1_000_000));
    assert!(matches!(s.enforced(), Enforced::Bundle(b) if b.epoch == 1));
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn a_cached_bundle_is_used_within_the_grace_and_not_beyond() {
    let mut s = GateState::new(LossPolicy::FailClosed, GRACE);
    s.restore(bundle(7, 0, 10_000));
    assert!(s.advance(11_000));
    assert!(matches!(s.enforced(), Enforced::Bundle(b) if b.epoch == 7));

    let mut s = GateState::new(LossPolicy::FailClosed, GRACE);
    s.restore(bundle(7, 0, 10_000));
    assert!(s.advance(14_000));
    assert!(matches!(s.enforced(), Enforced::Lost(b) if b.epoch == 7));
    // Fetching resumes after the cached epoch.
    assert_eq!(s.newest_epoch(), Some(7));

    let mut s = GateState::new(LossPolicy::KeepLast, GRACE);
    s.restore(bundle(7, 0, 10_000));
    s.advance(1_000_000);
    assert!(matches!(s.enforced(), Enforced::Bundle(b) if b.epoch == 7));
}

#[test]
fn waiting_bundles_are_bounded() {
    let mut s = GateState::new(LossPolicy::FailClosed, GRACE);
    for epoch in 1..=10 {
        s.offer(bundle(epoch, 100_000 + epoch, 200_000), 0).unwrap();
    }
    assert_eq!(s.next_epoch(), Some(7));
    assert_eq!(s.newest_epoch(), Some(10));
    s.advance(100_010);
    assert_eq!(epoch_of(&s), Some(10));
}
