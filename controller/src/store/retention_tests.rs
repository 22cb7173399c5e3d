//! Attacks on retention: a database that grows without bound (#5), epoch secrets kept
//! forever (#20), and pruning used to hide tampering with the audit log.

use std::time::Duration;

use meshtun_proto::{EpochSecret, IdentityKey};

use super::audit::{AuditError, AuditKind, SignedCheckpoint};
use super::testutil::{bench_path, benchmark, controller, node};
use super::testutil::{execute, query_i64, query_strings};
use super::{Retention, Store, StoreError, LIVE_EPOCHS};
use crate::clock::Clock;
use crate::model::{Decision, EpochRecord, Evidence, History, NodeInput, Policy};

const HOUR_MS: u64 = 3_600_000;
const START_MS: u64 = 1_800_000_000_000;

/// The key [`controller`] is the public half of.
fn controller_key() -> IdentityKey {
    IdentityKey::from_bytes([0xc0; 32])
}

/// Windows half an hour past whole hours, so that no hourly row sits on a boundary.
fn retention() -> Retention {
    Retention {
        benchmarks: Duration::from_secs(6 * 3600 + 1800),
        decisions: Duration::from_secs(12 * 3600 + 1800),
        audit: Duration::from_secs(24 * 3600 + 1800),
    }
}

fn secret(id: u64) -> EpochSecret {
    let mut bytes = [0x5a; 32];
    bytes[..8].copy_from_slice(&id.to_be_bytes());
    EpochSecret::from_bytes(bytes)
}

fn epoch_at(id: u64, now_ms: u64) -> EpochRecord {
    EpochRecord {
        id,
        secret: secret(id),
        activation_ms: now_ms,
        not_after_ms: now_ms + HOUR_MS,
        created_ms: now_ms,
        cause: "schedule".into(),
    }
}

fn decision(node_id: &str) -> (Decision, NodeInput) {
    let decision = Decision {
        node_id: node_id.into(),
        allowed: true,
        reason: "overall score 0.90 meets the threshold 0.70".into(),
        passing: true,
        history: History {
            allowed: true,
            passing_streak: 1,
            benchmarked: true,
        },
        evidence: Evidence {
            score: Some(0.9),
            threshold: 0.7,
            age_ms: Some(5),
            max_age_ms: 120_000,
            seq: Some(1),
            sources: Vec::new(),
        },
    };
    let input = NodeInput {
        node_id: node_id.into(),
        latest: None,
        pin: None,
        history: None,
        statements: Vec::new(),
    };
    (decision, input)
}

/// Two nodes benchmarking every hour for `hours`, an epoch per hour, pruning after each:
/// the store, its clock, and the last benchmark seq.
fn simulate(store: Store, hours: u64) -> (Store, Clock, u64) {
    let clock = Clock::starting_at(START_MS);
    let store = store.with_clock(clock.clone());
    let (a, key_a) = node("node-a", 1);
    let (b, key_b) = node("node-b", 2);
    store.add_node(&a).unwrap();
    store.add_node(&b).unwrap();
    for hour in 1..=hours {
        clock.step(HOUR_MS as i64);
        for (id, key) in [("node-a", &key_a), ("node-b", &key_b)] {
            let (mut rec, body, sig) = benchmark(key, id, hour, 0.9);
            rec.received_ms = clock.now_ms();
            store
                .insert_benchmark(&controller(), &rec, &body, &sig, &bench_path(id))
                .unwrap();
        }
        let (da, ia) = decision("node-a");
        let (db, ib) = decision("node-b");
        let now = clock.now_ms();
        store
            .insert_epoch(
                &epoch_at(hour, now),
                &[da, db],
                &[ia, ib],
                &Policy::default(),
                now,
            )
            .unwrap();
        store.prune(&retention(), &controller_key().into()).unwrap();
    }
    (store, clock, hours)
}

fn count(store: &Store, sql: &str) -> i64 {
    query_i64(store, sql)
}

fn attack_5_history_is_pruned_to_its_windows_and_the_chain_still_verifies(store: Store) {
    let (store, _, hours) = simulate(store, 72);
    // Benchmarks received in the last 6.5 hours (the newest always among them); epochs
    // (an hour long) that ended in the last 12.5 hours, with their decisions; audit entries
    // of the last 24.5 hours; one checkpoint.
    assert_eq!(count(&store, "SELECT COUNT(*) FROM benchmarks"), 2 * 7);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM epochs"), 14);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM decisions"), 2 * 14);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM audit_checkpoints"), 1);
    let audit = count(&store, "SELECT COUNT(*) FROM audit");
    // Per hour: two benchmarks, a rotation, two decisions and the checkpoint entry of
    // that hour's pruning.
    assert_eq!(audit, 6 * 25);

    let report = store
        .verify_audit(&crate::store::testutil::trusted())
        .unwrap();
    assert!(report.pruned_through.is_some());
    // The counts run over the whole history, pruned entries included.
    assert_eq!(report.counts[&AuditKind::Benchmark], 2 * hours);
    assert_eq!(report.counts[&AuditKind::Rotation], hours);
    assert_eq!(report.counts[&AuditKind::Enroll], 2);
    assert_eq!(report.signatures_verified, 2 * hours);
    assert!(report.counts[&AuditKind::Checkpoint] >= 2);
}

fn attack_5_a_replayed_benchmark_is_still_refused_after_pruning(store: Store) {
    let (store, _, hours) = simulate(store, 12);
    let (_, key_a) = node("node-a", 1);
    for seq in [1, hours] {
        let (rec, body, sig) = benchmark(&key_a, "node-a", seq, 0.9);
        let err = store
            .insert_benchmark(&controller(), &rec, &body, &sig, &bench_path("node-a"))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Replay { latest, .. } if latest == hours),
            "{err}"
        );
    }
}

#[test]
fn attack_20_past_epoch_secrets_are_gone_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controller.db");
    let (store, _, hours) = simulate(Store::open(&path).unwrap(), 10);
    let err = store.epoch(1).unwrap_err();
    assert!(matches!(err, StoreError::SecretErased(1)), "{err}");
    assert_eq!(
        store.latest_epochs(LIVE_EPOCHS).unwrap()[0].secret.to_hex(),
        secret(hours).to_hex()
    );
    drop(store);
    let mut bytes = std::fs::read(&path).unwrap();
    if let Ok(wal) = std::fs::read(dir.path().join("controller.db-wal")) {
        bytes.extend(wal);
    }
    let text = String::from_utf8_lossy(&bytes);
    let live = hours - LIVE_EPOCHS as u64;
    for id in 1..=hours {
        let found = text.contains(&secret(id).to_hex());
        assert_eq!(found, id > live, "epoch {id}'s secret present: {found}");
    }
}

fn attack_20_only_the_live_epochs_keep_their_secrets(store: Store) {
    let (store, _, hours) = simulate(store, 10);
    let live = hours - LIVE_EPOCHS as u64;
    for id in 1..=hours {
        match store.epoch(id) {
            Ok(Some(epoch)) => {
                assert!(id > live, "epoch {id} kept its secret");
                assert_eq!(epoch.secret.to_hex(), secret(id).to_hex());
            }
            Err(StoreError::SecretErased(erased)) => {
                assert_eq!(erased, id);
                assert!(id <= live, "live epoch {id} lost its secret");
            }
            other => panic!("epoch {id}: {other:?}"),
        }
    }
    let kept = count(&store, "SELECT COUNT(*) FROM epochs WHERE secret != ''");
    assert_eq!(kept, LIVE_EPOCHS as i64);
}

fn a_tampered_chain_is_never_pruned(store: Store) {
    let (store, clock, _) = simulate(store, 3);
    let before = count(&store, "SELECT COUNT(*) FROM audit");
    let sql = if store.is_postgres() {
        "ALTER TABLE audit DISABLE TRIGGER audit_no_update; \
         UPDATE audit SET entry = replace(entry, 'node-b', 'node-x') WHERE seq = 2; \
         ALTER TABLE audit ENABLE TRIGGER audit_no_update;"
    } else {
        "DROP TRIGGER audit_no_update; \
         UPDATE audit SET entry = replace(entry, 'node-b', 'node-x') WHERE seq = 2; \
         CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit \
         BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
    };
    execute(&store, sql).unwrap();
    clock.step(30 * HOUR_MS as i64);
    let err = store
        .prune(&retention(), &controller_key().into())
        .unwrap_err();
    assert!(matches!(err, AuditError::Hash { seq: 2, .. }), "{err}");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM audit"), before);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM audit_checkpoints"), 0);
}

fn the_database_refuses_deleting_entries_after_the_checkpoint_or_the_checkpoint(store: Store) {
    let (store, _, _) = simulate(store, 30);
    let first = count(&store, "SELECT MIN(seq) FROM audit");
    let err = execute(&store, &format!("DELETE FROM audit WHERE seq = {first}")).unwrap_err();
    assert!(err.contains("append-only"), "{err}");
    let err = execute(&store, "DELETE FROM audit_checkpoints").unwrap_err();
    assert!(err.contains("cannot be deleted"), "{err}");
    let err = execute(&store, "UPDATE audit_checkpoints SET body = '{}'").unwrap_err();
    assert!(err.contains("append-only"), "{err}");
    // TRUNCATE (PostgreSQL) and DELETE without a checkpoint behind it are refused too.
    if store.is_postgres() {
        let err = execute(&store, "TRUNCATE audit").unwrap_err();
        assert!(err.contains("append-only"), "{err}");
        let err = execute(&store, "TRUNCATE audit_checkpoints").unwrap_err();
        assert!(err.contains("append-only"), "{err}");
    }
    store
        .verify_audit(&crate::store::testutil::trusted())
        .unwrap();
}

fn a_forged_or_removed_checkpoint_is_found(store: Store) {
    let (store, _, _) = simulate(store, 30);
    // Someone who can write the file but lacks the controller key re-signs the checkpoint
    // with a node's identity key swapped for theirs, so their forged benchmarks would verify.
    let seq = count(&store, "SELECT seq FROM audit_checkpoints") as u64;
    let body = query_strings(&store, "SELECT body FROM audit_checkpoints").remove(0);
    let mut forged: super::audit::Checkpoint = serde_json::from_str(&body).unwrap();
    let theirs = IdentityKey::from_bytes([0x66; 32]);
    forged.keys.get_mut("node-a").unwrap().0 = theirs.public();
    let signed = SignedCheckpoint::sign(&forged, &theirs);
    let disable = if store.is_postgres() {
        "ALTER TABLE audit_checkpoints DISABLE TRIGGER USER"
    } else {
        "DROP TRIGGER audit_checkpoints_no_update; DROP TRIGGER audit_checkpoints_keep_newest;"
    };
    execute(&store, disable).unwrap();
    execute(
        &store,
        &format!(
            "UPDATE audit_checkpoints SET body = '{}', signature = '{}'",
            signed.body.replace('\'', "''"),
            signed.signature
        ),
    )
    .unwrap();
    let err = store
        .verify_audit(&crate::store::testutil::trusted())
        .unwrap_err();
    assert!(
        matches!(err, AuditError::Checkpoint { seq: s, .. } if s == seq),
        "{err}"
    );
    assert!(err.to_string().contains("does not verify"), "{err}");

    // Removing the checkpoint altogether leaves a chain that starts in the middle.
    execute(&store, "DELETE FROM audit_checkpoints").unwrap();
    let err = store
        .verify_audit(&crate::store::testutil::trusted())
        .unwrap_err();
    assert!(
        matches!(err, AuditError::Sequence { expected: 1, .. }),
        "{err}"
    );
}

fn a_chain_is_verified_only_with_its_own_controllers_key(store: Store) {
    let (store, _, _) = simulate(store, 30);
    let other = IdentityKey::from_bytes([0x77; 32]).public();
    let err = store
        .verify_audit(&meshtun_proto::KeySet::one(other))
        .unwrap_err();
    assert!(matches!(err, AuditError::Checkpoint { .. }), "{err}");
}

/// Key rotation: a checkpoint signed with the old key verifies, and pruning goes on, for a
/// controller that lists the old key among its previous keys; without it, both refuse.
fn a_checkpoint_of_the_previous_key_holds_across_a_key_rotation(store: Store) {
    let (store, _, _) = simulate(store, 30);
    let old = controller_key().public();
    let new = IdentityKey::from_bytes([0x77; 32]);
    let rotated = crate::keys::ControllerKeys::new(new.clone(), &[old]).unwrap();
    store.verify_audit(rotated.answers_to()).unwrap();
    let alone = crate::keys::ControllerKeys::sole(new);
    let err = store.verify_audit(alone.answers_to()).unwrap_err();
    assert!(matches!(err, AuditError::Checkpoint { .. }), "{err}");
    let err = store.prune(&retention(), &alone).unwrap_err();
    assert!(matches!(err, AuditError::Checkpoint { .. }), "{err}");
    store.prune(&retention(), &rotated).unwrap();
}

/// A controller down for longer than the audit window prunes every entry at its start:
/// the chain goes on from the checkpoint, not from a second genesis, and still verifies.
fn a_chain_pruned_to_its_last_entry_goes_on_from_the_checkpoint(store: Store) {
    let (store, clock, hours) = simulate(store, 3);
    clock.step(48 * HOUR_MS as i64);
    let report = store.prune(&retention(), &controller_key().into()).unwrap();
    assert!(report.checkpoint.is_some(), "{report:?}");
    let entries = store.audit_entries(0, 10).unwrap();
    assert_eq!(entries.len(), 1, "only the pruning's own entry is left");
    assert!(entries[0].seq > 5 * hours, "seq {}", entries[0].seq);
    let now = clock.now_ms();
    let (d, i) = decision("node-a");
    store
        .insert_epoch(
            &epoch_at(hours + 1, now),
            &[d],
            &[i],
            &Policy::default(),
            now,
        )
        .unwrap();
    let report = store
        .verify_audit(&crate::store::testutil::trusted())
        .unwrap();
    assert_eq!(report.counts[&AuditKind::Rotation], hours + 1);
}

super::testutil::on_both_backends!(
    a_chain_pruned_to_its_last_entry_goes_on_from_the_checkpoint,
    a_checkpoint_of_the_previous_key_holds_across_a_key_rotation,
    attack_20_only_the_live_epochs_keep_their_secrets,
    attack_5_history_is_pruned_to_its_windows_and_the_chain_still_verifies,
    attack_5_a_replayed_benchmark_is_still_refused_after_pruning,
    a_tampered_chain_is_never_pruned,
    the_database_refuses_deleting_entries_after_the_checkpoint_or_the_checkpoint,
    a_forged_or_removed_checkpoint_is_found,
    a_chain_is_verified_only_with_its_own_controllers_key,
);
