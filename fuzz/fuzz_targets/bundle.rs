//! Signed bundles as a node reads them: arbitrary JSON for the signed envelope, arbitrary
//! payloads under a valid controller signature, a genuine bundle of the real bundle builder
//! with its signed payload mutated, and arbitrary sealed preshared keys. The first input
//! byte picks which.
//!
//! Beyond "never panics": nothing verifies without the controller's signature, and a sealed
//! key opens only where the genuine bundle put it (same text, position, epoch and peer).

#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use meshtun_controller::bundles::{build, BundleSource};
use meshtun_controller::model::{Decision, EpochRecord, Evidence, History, NodeRecord};
use meshtun_proto::bundle::{Bundle, BundlePeer, Opener, SignedBundle, SIGNATURE_LABEL};
use meshtun_proto::{EpochSecret, IdentityKey, PrivateKey};

/// A controller, a recipient and the recipient's genuine bundle with three peers.
struct Fixture {
    controller: IdentityKey,
    recipient: PrivateKey,
    /// The genuine bundle and its signed JSON payload.
    bundle: Bundle,
    payload: Vec<u8>,
}

fn node(id: &str, seed: u8) -> NodeRecord {
    NodeRecord {
        id: id.to_owned(),
        wg_public_key: PrivateKey::from_bytes([seed; 32]).public_key(),
        identity_key: IdentityKey::from_bytes([seed; 32]).public(),
        addresses: vec![format!("100.64.0.{seed}/24").parse().expect("an address")],
        endpoint: Some(format!("192.0.2.{seed}:51820")),
        pin: None,
        enrolled_ms: 0,
        membership_sig: None,
    }
}

fn fixture() -> Fixture {
    let controller = IdentityKey::from_bytes([1; 32]);
    let recipient = PrivateKey::from_bytes([2; 32]);
    let epoch = EpochRecord {
        id: 7,
        secret: EpochSecret::from_bytes([3; 32]),
        activation_ms: 1_800_000_000_000,
        not_after_ms: 1_800_000_060_000,
        created_ms: 1_799_999_990_000,
        cause: "schedule".to_owned(),
    };
    let me = node("node-a", 2);
    let peers = [node("node-b", 4), node("node-c", 5), node("node-d", 6)];
    let decision = Decision {
        node_id: me.id.clone(),
        allowed: true,
        reason: "overall score 0.90 meets the threshold 0.70".to_owned(),
        passing: true,
        history: History::default(),
        evidence: Evidence {
            score: Some(0.9),
            threshold: 0.7,
            age_ms: Some(1_000),
            max_age_ms: 120_000,
            seq: Some(1),
            sources: Vec::new(),
        },
    };
    let peer_refs: Vec<&NodeRecord> = peers.iter().collect();
    let source = BundleSource {
        epoch: &epoch,
        node: &me,
        decision: Some(&decision),
        peers: &peer_refs,
        routed: &[],
        forward: false,
        candidates: &std::collections::HashMap::new(),
        relay: None,
    };
    let signed = build(&source, &controller, 1_799_999_990_000);
    let bundle = signed
        .verify(&controller.public())
        .expect("the genuine bundle verifies");
    let payload = STANDARD.decode(&signed.payload).expect("base64 payload");
    Fixture {
        controller,
        recipient,
        bundle,
        payload,
    }
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// Signs `payload` as the controller would, verifies it as a node would, and opens every key.
fn verify_and_open(f: &Fixture, payload: &[u8]) {
    let signed = SignedBundle {
        payload: STANDARD.encode(payload),
        signature: STANDARD.encode(f.controller.sign(&[SIGNATURE_LABEL, payload].concat())),
    };
    let Ok(bundle) = signed.verify(&f.controller.public()) else {
        return;
    };
    let Some(seal_key) = bundle.seal_key else {
        return;
    };
    let opener = Opener::new(&f.recipient, &seal_key);
    for (i, peer) in bundle.peers.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        if opener.open(index, bundle.epoch, peer).is_ok() {
            assert_genuine(f, index, bundle.epoch, peer);
        }
    }
}

/// Panics unless `peer` at `index` in `epoch` is exactly an entry of the genuine bundle.
fn assert_genuine(f: &Fixture, index: u32, epoch: u64, peer: &BundlePeer) {
    let genuine = usize::try_from(index)
        .ok()
        .and_then(|i| f.bundle.peers.get(i))
        .is_some_and(|g| {
            g.sealed_psk == peer.sealed_psk
                && g.public_key == peer.public_key
                && epoch == f.bundle.epoch
        });
    assert!(
        genuine,
        "a sealed key opened outside its genuine place: {peer:?} at {index}"
    );
}

/// Applies edits read from `edits` (position, operation, byte) to a copy of `payload`.
fn mutate(payload: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut out = payload.to_vec();
    for edit in edits.chunks_exact(4) {
        let (pos, op, byte) = (u16::from_le_bytes([edit[0], edit[1]]), edit[2], edit[3]);
        let at = usize::from(pos) % (out.len() + 1);
        match op % 3 {
            0 if at < out.len() => out[at] = byte,
            1 => out.insert(at, byte),
            2 if at < out.len() => {
                out.remove(at);
            }
            _ => {}
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let f = FIXTURE.get_or_init(fixture);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        // Any JSON as the signed envelope: it never verifies.
        0 => {
            if let Ok(signed) = serde_json::from_slice::<SignedBundle>(rest) {
                if let Ok(bundle) = signed.verify(&f.controller.public()) {
                    let payload = STANDARD.decode(&signed.payload).expect("verified base64");
                    assert_eq!(
                        payload, f.payload,
                        "an unsigned bundle verified: {bundle:?}"
                    );
                }
            }
        }
        // Any payload, validly signed: parsing and opening must hold up.
        1 => verify_and_open(f, rest),
        // The genuine payload with edits.
        2 => verify_and_open(f, &mutate(&f.payload, rest)),
        // Any sealed text at any position and epoch, against the genuine opener.
        _ => {
            let Some(seal_key) = f.bundle.seal_key else {
                return;
            };
            let (head, text) = rest.split_at(rest.len().min(3));
            let index = u32::from(head.first().copied().unwrap_or(0) % 4);
            let epoch = f.bundle.epoch + u64::from(head.get(1).copied().unwrap_or(0) % 2);
            let target = f
                .bundle
                .peers
                .get(usize::from(head.get(2).copied().unwrap_or(0)) % f.bundle.peers.len())
                .expect("the genuine bundle has peers");
            let mut peer = target.clone();
            peer.sealed_psk = String::from_utf8_lossy(text).into_owned();
            if Opener::new(&f.recipient, &seal_key)
                .open(index, epoch, &peer)
                .is_ok()
            {
                assert_genuine(f, index, epoch, &peer);
            }
        }
    }
});
