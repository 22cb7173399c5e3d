//! Peer observations on both backends: what is stored and read back, what is refused
//! (storing nothing), what retention keeps, and what `audit verify` finds after tampering.

use std::time::Duration;

use meshtun_proto::observation::{HANDSHAKE, LATENCY, REACHABLE};
use meshtun_proto::statement::{EvidenceDigest, Issuer, SignedStatement, Statement};
use meshtun_proto::IdentityKey;

use super::*;
use crate::clock::Clock;
use crate::keys::ControllerKeys;
use crate::store::audit::{chain_hash, verify_chain, AuditError, AuditKind};
use crate::store::testutil::{drop_audit_triggers, execute, node, trusted};
use crate::store::{EvaluatorRecord, Retention, Store, StoreError};

/// What a refused observation's error must be.
type Expected = fn(&StoreError) -> bool;

const START_MS: u64 = 1_800_000_000_000;
const HOUR_MS: u64 = 3_600_000;

/// The seed of each test node's keys (see [`node`]).
fn seed(id: &str) -> u8 {
    match id {
        "node-a" => 1,
        "node-b" => 2,
        "node-c" => 3,
        _ => 9,
    }
}

/// `observer`'s observation of `subject`, signed with the key of `signer`.
fn signed_by(
    signer: &str,
    observer: &str,
    subject: &str,
    scores: &[(&str, f64)],
    at: u64,
) -> SignedStatement {
    Statement {
        issuer: Issuer::Node(observer.to_owned()),
        subject: subject.to_owned(),
        scores: scores.iter().map(|(d, s)| (d.to_string(), *s)).collect(),
        evaluated_at_ms: at,
        evidence: EvidenceDigest::of(format!("{observer}/{subject}/{at}").as_bytes()),
    }
    .sign(&IdentityKey::from_bytes([seed(signer); 32]))
    .unwrap()
}

/// `observer`'s observation of `subject`, signed with its own key.
fn observation(observer: &str, subject: &str, scores: &[(&str, f64)], at: u64) -> SignedStatement {
    signed_by(observer, observer, subject, scores, at)
}

/// node-a, node-b and node-c enrolled.
fn populated(store: &Store) {
    for id in ["node-a", "node-b", "node-c"] {
        store.add_node(&node(id, seed(id)).0).unwrap();
    }
}

fn audit_len(store: &Store) -> usize {
    store.audit_entries(1, 10_000).unwrap().len()
}

fn observations_are_stored_audited_and_read_back(store: Store) {
    populated(&store);
    let signed = observation(
        "node-a",
        "node-b",
        &[(REACHABLE, 1.0), (LATENCY, 0.96), (HANDSHAKE, 1.0)],
        5,
    );
    let id = store.insert_observation(&signed, 77).unwrap();
    assert_eq!(id, 1);
    let scores = store.latest_observation_scores(0).unwrap();
    let expected =
        [(HANDSHAKE, 1.0), (LATENCY, 0.96), (REACHABLE, 1.0)].map(|(d, score)| ObservationScore {
            observer: "node-a".into(),
            subject: "node-b".into(),
            dimension: d.into(),
            score,
            evaluated_at_ms: 5,
            statement_id: 1,
        });
    assert_eq!(scores, expected);
    let entries = store.audit_entries(1, 100).unwrap();
    let last = entries.last().unwrap();
    assert_eq!(last.kind, "observation");
    let recorded: crate::store::audit::ObservationEntry =
        serde_json::from_str(&last.entry).unwrap();
    assert_eq!((recorded.id, recorded.received_ms), (1, 77));
    assert_eq!(recorded.signed, signed);
    let report = store.verify_audit(&trusted()).unwrap();
    assert_eq!(
        (
            report.observation_signatures,
            report.observation_rows_verified
        ),
        (1, 1)
    );
    assert_eq!(report.counts[&AuditKind::Observation], 1);
    assert_eq!(store.table_rows().unwrap().observations, 1);
}

fn refused_observations_store_nothing(store: Store) {
    populated(&store);
    store.add_node(&node("node-x", 9).0).unwrap();
    store.remove_node("node-x").unwrap();
    let before = (audit_len(&store), store.table_rows().unwrap().observations);
    let good = observation("node-a", "node-b", &[(REACHABLE, 1.0)], 5);
    let mut forged = good.clone();
    forged.statement.scores.insert(REACHABLE.into(), 0.0);
    let mut by_evaluator = good.clone();
    by_evaluator.statement.issuer = Issuer::Evaluator("node-a".into());
    let mut out_of_bounds = good.clone();
    out_of_bounds.statement.scores.insert(LATENCY.into(), 1.5);
    let cases: Vec<(&str, SignedStatement, Expected)> = vec![
        (
            "issued by an evaluator",
            by_evaluator,
            |e| matches!(e, StoreError::ObservationIssuer(Issuer::Evaluator(n)) if n == "node-a"),
        ),
        (
            "a score out of bounds",
            out_of_bounds,
            |e| matches!(e, StoreError::InvalidObservation { node, .. } if node == "node-a"),
        ),
        (
            "by a stranger",
            observation("node-z", "node-b", &[(REACHABLE, 1.0)], 5),
            |e| matches!(e, StoreError::UnknownObserver(n) if n == "node-z"),
        ),
        (
            "by a removed node",
            observation("node-x", "node-b", &[(REACHABLE, 1.0)], 5),
            |e| matches!(e, StoreError::UnknownObserver(n) if n == "node-x"),
        ),
        (
            "with a score changed after signing",
            forged,
            |e| matches!(e, StoreError::ObservationSignature { node, .. } if node == "node-a"),
        ),
        (
            "signed by another node's key",
            signed_by("node-c", "node-a", "node-b", &[(REACHABLE, 0.0)], 5),
            |e| matches!(e, StoreError::ObservationSignature { node, .. } if node == "node-a"),
        ),
        (
            "about itself",
            observation("node-a", "node-a", &[(REACHABLE, 1.0)], 5),
            |e| matches!(e, StoreError::SelfObservation(n) if n == "node-a"),
        ),
        (
            "scoring an evaluator's dimension",
            observation("node-a", "node-b", &[(REACHABLE, 1.0), ("honesty", 1.0)], 5),
            |e| {
                matches!(e, StoreError::NotPeerDimension { dimension, allowed, .. }
                    if dimension == "honesty" && allowed == "reachable,latency,handshake")
            },
        ),
        (
            "about a node not enrolled",
            observation("node-a", "node-x", &[(REACHABLE, 0.0)], 5),
            |e| matches!(e, StoreError::NoSuchNode(n) if n == "node-x"),
        ),
    ];
    for (what, signed, expected) in cases {
        let err = store.insert_observation(&signed, 9).unwrap_err();
        assert!(expected(&err), "{what}: {err}");
    }
    assert_eq!(
        (audit_len(&store), store.table_rows().unwrap().observations),
        before
    );
    // An evaluator's statement is not taken as an observation, nor the other way round.
    assert!(matches!(
        store.insert_statement(&good, 9).unwrap_err(),
        StoreError::NodeStatement(_)
    ));
    store.insert_observation(&good, 9).unwrap();
}

fn refusals_name_the_node_and_what_was_wrong(store: Store) {
    populated(&store);
    let err = |signed: &SignedStatement| store.insert_observation(signed, 9).unwrap_err();
    let text = err(&observation("node-a", "node-a", &[(REACHABLE, 1.0)], 5)).to_string();
    assert!(text.contains("node node-a"), "{text}");
    assert!(text.contains("not a peer observation"), "{text}");
    let text = err(&observation("node-a", "node-b", &[("overall", 1.0)], 5)).to_string();
    assert!(
        text.contains("node node-a") && text.contains("overall"),
        "{text}"
    );
    let text = err(&signed_by(
        "node-c",
        "node-a",
        "node-b",
        &[(REACHABLE, 1.0)],
        5,
    ))
    .to_string();
    assert!(text.contains("node node-a about node-b"), "{text}");
    assert!(text.contains("enrolled identity key"), "{text}");
}

fn the_newest_score_per_observer_subject_and_dimension_is_read(store: Store) {
    populated(&store);
    let o = |observer, subject, scores: &[(&str, f64)], at| {
        store
            .insert_observation(&observation(observer, subject, scores, at), at)
            .unwrap()
    };
    o("node-a", "node-b", &[(REACHABLE, 0.0), (LATENCY, 0.5)], 100);
    let newer = o("node-a", "node-b", &[(REACHABLE, 1.0)], 200);
    // Received later but observed earlier: it does not replace the newer observation.
    o("node-a", "node-b", &[(REACHABLE, 0.0)], 150);
    o("node-c", "node-b", &[(REACHABLE, 0.0)], 120);
    o("node-b", "node-a", &[(REACHABLE, 1.0)], 90);
    let scores = store.latest_observation_scores(0).unwrap();
    let seen: Vec<(&str, &str, &str, f64)> = scores
        .iter()
        .map(|s| {
            (
                s.subject.as_str(),
                s.dimension.as_str(),
                s.observer.as_str(),
                s.score,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("node-a", REACHABLE, "node-b", 1.0),
            ("node-b", LATENCY, "node-a", 0.5),
            ("node-b", REACHABLE, "node-a", 1.0),
            ("node-b", REACHABLE, "node-c", 0.0),
        ]
    );
    assert_eq!(scores[2].statement_id, newer);
    assert_eq!(scores[2].evaluated_at_ms, 200);
    // Two observations of one instant: the later stored wins.
    let tie = o("node-c", "node-b", &[(REACHABLE, 1.0)], 120);
    let scores = store.latest_observation_scores(0).unwrap();
    assert_eq!((scores[3].score, scores[3].statement_id), (1.0, tie));
    // The freshness window leaves older observations out, the boundary included.
    let fresh = store.latest_observation_scores(120).unwrap();
    let kept: Vec<(&str, u64)> = fresh
        .iter()
        .map(|s| (s.observer.as_str(), s.evaluated_at_ms))
        .collect();
    assert_eq!(kept, [("node-a", 200), ("node-c", 120)]);
    assert!(store.latest_observation_scores(201).unwrap().is_empty());
}

fn a_removed_nodes_observations_go_with_it(store: Store) {
    populated(&store);
    let o = |observer, subject| {
        let signed = observation(observer, subject, &[(REACHABLE, 1.0)], 10);
        store.insert_observation(&signed, 10).unwrap();
    };
    o("node-a", "node-b");
    o("node-b", "node-a");
    o("node-c", "node-a");
    o("node-b", "node-c");
    store.remove_node("node-b").unwrap();
    // Whatever node-b said and whatever was said of it is gone.
    assert_eq!(store.table_rows().unwrap().observations, 1);
    let scores = store.latest_observation_scores(0).unwrap();
    assert_eq!(scores.len(), 1);
    assert_eq!(
        (scores[0].observer.as_str(), scores[0].subject.as_str()),
        ("node-c", "node-a")
    );
    // Its later observations are refused; the log, which keeps the removed ones, verifies.
    let err = store
        .insert_observation(
            &observation("node-b", "node-a", &[(REACHABLE, 1.0)], 11),
            11,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownObserver(_)), "{err}");
    let report = store.verify_audit(&trusted()).unwrap();
    assert_eq!(
        (
            report.observation_signatures,
            report.observation_rows_verified
        ),
        (4, 1)
    );
    // Enrolled again under a new key, its old key no longer speaks for it.
    store.add_node(&node("node-b", 7).0).unwrap();
    let old_key = observation("node-b", "node-a", &[(REACHABLE, 1.0)], 12);
    assert!(matches!(
        store.insert_observation(&old_key, 12).unwrap_err(),
        StoreError::ObservationSignature { .. }
    ));
}

fn ids_are_unique_across_statements_and_observations(store: Store) {
    populated(&store);
    let eval = IdentityKey::from_bytes([0xe1; 32]);
    store
        .add_evaluator(&EvaluatorRecord {
            name: "eval-1".into(),
            key: eval.public(),
            dimensions: vec!["honesty".into()],
            group: None,
            added_ms: 1,
            removed_ms: None,
        })
        .unwrap();
    let mut ids = Vec::new();
    for at in 1..=3 {
        let statement = Statement {
            issuer: Issuer::Evaluator("eval-1".into()),
            subject: "node-a".into(),
            scores: [("honesty".to_owned(), 0.5)].into(),
            evaluated_at_ms: at,
            evidence: EvidenceDigest::of(b"run"),
        };
        ids.push(
            store
                .insert_statement(&statement.sign(&eval).unwrap(), at)
                .unwrap(),
        );
        let signed = observation("node-b", "node-a", &[(REACHABLE, 1.0)], at);
        ids.push(store.insert_observation(&signed, at).unwrap());
    }
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
    let statements: Vec<u64> = store
        .latest_statement_scores(0)
        .unwrap()
        .iter()
        .map(|s| s.statement_id)
        .collect();
    let observations: Vec<u64> = store
        .latest_observation_scores(0)
        .unwrap()
        .iter()
        .map(|s| s.statement_id)
        .collect();
    assert_eq!((statements, observations), (vec![5], vec![6]));
    let report = store.verify_audit(&trusted()).unwrap();
    assert_eq!(
        (
            report.statement_rows_verified,
            report.observation_rows_verified
        ),
        (3, 3)
    );
}

fn audit_verify_finds_a_stored_observation_altered_behind_the_stores_back(store: Store) {
    populated(&store);
    let signed = observation("node-a", "node-b", &[(REACHABLE, 0.0)], 5);
    store.insert_observation(&signed, 9).unwrap();
    store.verify_audit(&trusted()).unwrap();
    execute(
        &store,
        "UPDATE observations SET scores = '{\"reachable\":1.0}'",
    )
    .unwrap();
    let err = store.verify_audit(&trusted()).unwrap_err();
    assert!(
        matches!(err, AuditError::StoredObservation { id: 1, ref node, .. } if node == "node-a"),
        "{err}"
    );
    assert!(
        err.to_string().contains("changed after it was stored"),
        "{err}"
    );
    // Whoever can write the database swaps the node's key in its row and signs the row
    // again: the chain still has the key the node enrolled with.
    let forger = IdentityKey::from_bytes([9; 32]);
    let forged = signed_by("node-z", "node-a", "node-b", &[(REACHABLE, 1.0)], 5);
    execute(
        &store,
        &format!(
            "UPDATE nodes SET identity_key = '{}' WHERE id = 'node-a'; \
             UPDATE observations SET signature = '{}'",
            forger.public().to_base64(),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, forged.signature),
        ),
    )
    .unwrap();
    assert!(matches!(
        store.verify_audit(&trusted()).unwrap_err(),
        AuditError::StoredObservation { .. }
    ));
}

fn a_rehashed_forged_observation_entry_fails_its_signature(store: Store) {
    populated(&store);
    let signed = observation("node-a", "node-b", &[(REACHABLE, 0.25)], 5);
    store.insert_observation(&signed, 9).unwrap();
    let mut entries = store.audit_entries(1, 100).unwrap();
    let last = entries.len() - 1;
    entries[last].entry = entries[last].entry.replace("0.25", "0.95");
    let e = &entries[last];
    entries[last].hash = chain_hash(&e.prev_hash, e.seq, e.at_ms, &e.kind, &e.entry);
    let err = verify_chain(&entries).unwrap_err();
    assert!(
        matches!(err, AuditError::ObservationSignature { id: 1, ref node, .. } if node == "node-a"),
        "{err}"
    );
    // Written into the database (past the triggers), `audit verify` finds it the same way.
    drop_audit_triggers(&store);
    let sql = format!(
        "UPDATE audit SET entry = '{}', hash = '{}' WHERE seq = {}",
        entries[last].entry, entries[last].hash, entries[last].seq
    );
    execute(&store, &sql).unwrap();
    assert!(matches!(
        store.verify_audit(&trusted()).unwrap_err(),
        AuditError::ObservationSignature { .. }
    ));
}

fn old_observations_are_pruned_but_each_pairs_newest_stays(store: Store) {
    let clock = Clock::starting_at(START_MS);
    let store = store.with_clock(clock.clone());
    populated(&store);
    for hour in 0..10 {
        let at = START_MS + hour * HOUR_MS;
        clock.step(if hour == 0 { 0 } else { HOUR_MS as i64 });
        for (observer, subject) in [("node-a", "node-b"), ("node-b", "node-a")] {
            let signed = observation(observer, subject, &[(REACHABLE, 1.0)], at);
            store.insert_observation(&signed, at).unwrap();
        }
    }
    let retention = Retention {
        benchmarks: Duration::from_secs(3 * 3600 + 1800),
        ..Retention::default()
    };
    let keys = ControllerKeys::from(IdentityKey::from_bytes([0xc0; 32]));
    let report = store.prune(&retention, &keys).unwrap();
    // Hours 6 to 9 are kept for both pairs: 12 of 20 rows go.
    assert_eq!(report.observations, 12);
    assert_eq!(store.table_rows().unwrap().observations, 8);
    // Far later, only each pair's newest is left, and the policy engine still reads it.
    clock.step(100 * HOUR_MS as i64);
    let report = store.prune(&retention, &keys).unwrap();
    assert_eq!(report.observations, 6);
    assert_eq!(store.table_rows().unwrap().observations, 2);
    let ids: Vec<u64> = store
        .latest_observation_scores(0)
        .unwrap()
        .iter()
        .map(|s| s.statement_id)
        .collect();
    assert_eq!(ids, [20, 19]);
    store.verify_audit(&trusted()).unwrap();
}

fn a_checkpoint_keeps_the_observers_keys_and_counts(store: Store) {
    let clock = Clock::starting_at(START_MS);
    let store = store.with_clock(clock.clone());
    populated(&store);
    let signed = observation("node-a", "node-b", &[(REACHABLE, 1.0)], START_MS);
    store.insert_observation(&signed, START_MS).unwrap();
    clock.step(72 * HOUR_MS as i64);
    let keys = ControllerKeys::from(IdentityKey::from_bytes([0xc0; 32]));
    let report = store.prune(&Retention::default(), &keys).unwrap();
    assert!(report.checkpoint.is_some(), "{report:?}");
    assert_eq!(report.observations, 0, "a pair's newest is kept");
    let kinds: Vec<String> = store
        .audit_entries(1, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        !kinds.iter().any(|k| k == "enroll" || k == "observation"),
        "{kinds:?}"
    );
    let now = clock.now_ms();
    let signed = observation("node-c", "node-a", &[(LATENCY, 0.9)], now);
    assert_eq!(store.insert_observation(&signed, now).unwrap(), 2);
    // Both rows check with the keys the checkpoint carried; the pruned entry's count stays.
    let report = store.verify_audit(&trusted()).unwrap();
    assert_eq!(
        (
            report.observation_signatures,
            report.observation_rows_verified
        ),
        (2, 2)
    );
    assert_eq!(report.counts[&AuditKind::Observation], 2);
}

/// A database of schema version 6 (before observations) gets the table when opened, and
/// observation ids go on from the statements' counter.
#[test]
fn a_version_6_database_gets_the_observations_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controller.db");
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &crate::store::schema::MIGRATIONS[..6] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 6).unwrap();
        tx.execute(
            "INSERT INTO counters (name, value) VALUES ('statement', 41)",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    populated(&store);
    let signed = observation("node-a", "node-b", &[(REACHABLE, 1.0)], 5);
    assert_eq!(store.insert_observation(&signed, 5).unwrap(), 42);
    assert_eq!(store.latest_observation_scores(0).unwrap().len(), 1);
}

crate::store::testutil::on_both_backends!(
    observations_are_stored_audited_and_read_back,
    refused_observations_store_nothing,
    refusals_name_the_node_and_what_was_wrong,
    the_newest_score_per_observer_subject_and_dimension_is_read,
    a_removed_nodes_observations_go_with_it,
    ids_are_unique_across_statements_and_observations,
    audit_verify_finds_a_stored_observation_altered_behind_the_stores_back,
    a_rehashed_forged_observation_entry_fails_its_signature,
    old_observations_are_pruned_but_each_pairs_newest_stays,
    a_checkpoint_keeps_the_observers_keys_and_counts,
);
