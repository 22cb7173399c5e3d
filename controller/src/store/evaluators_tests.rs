//! Evaluators and their statements on both backends: what is stored and read back, what is
//! refused (storing nothing), and what `audit verify` finds after tampering.

use std::time::Duration;

use meshtun_proto::statement::{EvidenceDigest, Issuer, SignedStatement, Statement};
use meshtun_proto::IdentityKey;

use super::*;
use crate::clock::Clock;
use crate::keys::ControllerKeys;
use crate::store::audit::{chain_hash, verify_chain, AuditError, AuditKind};
use crate::store::testutil::{drop_audit_triggers, execute, node, trusted};
use crate::store::{Retention, Store, StoreError};

/// What a refused statement's error must be.
type Expected = fn(&StoreError) -> bool;

const START_MS: u64 = 1_800_000_000_000;
const HOUR_MS: u64 = 3_600_000;

fn eval_key(seed: u8) -> IdentityKey {
    IdentityKey::from_bytes([0xe0 | seed; 32])
}

fn evaluator(name: &str, seed: u8, dimensions: &[&str], group: Option<&str>) -> EvaluatorRecord {
    EvaluatorRecord {
        name: name.to_owned(),
        key: eval_key(seed).public(),
        dimensions: dimensions.iter().map(|d| d.to_string()).collect(),
        group: group.map(str::to_owned),
        added_ms: 1_000,
        removed_ms: None,
    }
}

fn statement(
    name: &str,
    seed: u8,
    subject: &str,
    scores: &[(&str, f64)],
    at: u64,
) -> SignedStatement {
    Statement {
        issuer: Issuer::Evaluator(name.to_owned()),
        subject: subject.to_owned(),
        scores: scores.iter().map(|(d, s)| (d.to_string(), *s)).collect(),
        evaluated_at_ms: at,
        evidence: EvidenceDigest::of(format!("{name}/{subject}/{at}").as_bytes()),
    }
    .sign(&eval_key(seed))
    .unwrap()
}

/// node-a and node-b enrolled; eval-1 (honesty, refusal; group lab) and eval-2 (honesty).
fn populated(store: &Store) {
    for (id, seed) in [("node-a", 1), ("node-b", 2)] {
        store.add_node(&node(id, seed).0).unwrap();
    }
    store
        .add_evaluator(&evaluator(
            "eval-1",
            1,
            &["refusal", "honesty"],
            Some("lab"),
        ))
        .unwrap();
    store
        .add_evaluator(&evaluator("eval-2", 2, &["honesty"], None))
        .unwrap();
}

fn audit_len(store: &Store) -> usize {
    store.audit_entries(1, 10_000).unwrap().len()
}

fn evaluators_are_added_listed_and_removed_with_audit_entries(store: Store) {
    populated(&store);
    let listed = store.evaluators().unwrap();
    let names: Vec<_> = listed.iter().map(|l| l.evaluator.name.as_str()).collect();
    assert_eq!(names, ["eval-1", "eval-2"]);
    assert_eq!(listed[0].evaluator.dimensions, ["honesty", "refusal"]);
    assert_eq!(listed[0].evaluator.group.as_deref(), Some("lab"));
    assert_eq!(listed[0].last_statement_ms, None);
    let id = store
        .insert_statement(
            &statement("eval-1", 1, "node-a", &[("honesty", 0.5)], 5),
            77,
        )
        .unwrap();
    assert_eq!(store.evaluators().unwrap()[0].last_statement_ms, Some(77));
    assert!(store.remove_evaluator("eval-1").unwrap());
    assert!(!store.remove_evaluator("eval-1").unwrap());
    assert!(!store.remove_evaluator("ghost").unwrap());
    let removed = store.evaluator("eval-1").unwrap().unwrap();
    assert!(!removed.active());
    // The name is never given to another key, nor to the same one again.
    let err = store
        .add_evaluator(&evaluator("eval-1", 3, &["honesty"], None))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::EvaluatorExists { removed: true, .. }),
        "{err}"
    );
    let err = store
        .add_evaluator(&evaluator("eval-2", 3, &["honesty"], None))
        .unwrap_err();
    assert_eq!(err.to_string(), "evaluator eval-2 already exists");
    let kinds: Vec<String> = store
        .audit_entries(1, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "enroll",
            "enroll",
            "evaluator_add",
            "evaluator_add",
            "statement",
            "evaluator_remove"
        ]
    );
    let report = store.verify_audit(&trusted()).unwrap();
    assert_eq!(report.statement_signatures, 1);
    assert_eq!(report.statement_rows_verified, 1);
    assert_eq!(id, 1);
    assert_eq!(store.table_rows().unwrap().evaluators, 2);
}

fn the_latest_score_per_evaluator_subject_and_dimension_is_read(store: Store) {
    populated(&store);
    let s = |name, seed, subject, scores: &[(&str, f64)], at| {
        store
            .insert_statement(&statement(name, seed, subject, scores, at), at)
            .unwrap()
    };
    s(
        "eval-1",
        1,
        "node-a",
        &[("honesty", 0.2), ("refusal", 0.3)],
        100,
    );
    let newer = s("eval-1", 1, "node-a", &[("honesty", 0.9)], 200);
    // Received later but evaluated earlier: it does not replace the newer evaluation.
    s("eval-1", 1, "node-a", &[("honesty", 0.1)], 150);
    s("eval-2", 2, "node-a", &[("honesty", 0.4)], 120);
    s("eval-2", 2, "node-b", &[("honesty", 0.6)], 90);
    let scores = store.latest_statement_scores(0).unwrap();
    let seen: Vec<(&str, &str, &str, f64)> = scores
        .iter()
        .map(|s| {
            (
                s.subject.as_str(),
                s.dimension.as_str(),
                s.evaluator.as_str(),
                s.score,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("node-a", "honesty", "eval-1", 0.9),
            ("node-a", "honesty", "eval-2", 0.4),
            ("node-a", "refusal", "eval-1", 0.3),
            ("node-b", "honesty", "eval-2", 0.6),
        ]
    );
    assert_eq!(scores[0].statement_id, newer);
    assert_eq!(scores[0].evaluated_at_ms, 200);
    assert_eq!(scores[0].group.as_deref(), Some("lab"));
    assert_eq!(scores[1].group, None);
    // The freshness window leaves older evaluations out.
    let fresh = store.latest_statement_scores(110).unwrap();
    assert_eq!(fresh.len(), 2, "{fresh:?}");
    // A removed evaluator's statements no longer count; a removed node's go with it.
    store.remove_evaluator("eval-2").unwrap();
    store.remove_node("node-a").unwrap();
    assert!(store.latest_statement_scores(0).unwrap().is_empty());
    assert_eq!(store.table_rows().unwrap().statements, 1);
    store.verify_audit(&trusted()).unwrap();
}

fn refused_statements_store_nothing(store: Store) {
    populated(&store);
    store
        .add_evaluator(&evaluator("eval-3", 3, &["honesty"], None))
        .unwrap();
    store.remove_evaluator("eval-3").unwrap();
    let before = (audit_len(&store), store.table_rows().unwrap().statements);
    let good = statement("eval-1", 1, "node-a", &[("honesty", 0.5)], 5);
    let mut forged = good.clone();
    forged.statement.scores.insert("honesty".into(), 1.0);
    let by_other_key = statement("eval-1", 2, "node-a", &[("honesty", 0.5)], 5);
    let mut from_node = good.clone();
    from_node.statement.issuer = Issuer::Node("node-b".into());
    let cases: Vec<(SignedStatement, Expected)> = vec![
        (forged, |e| matches!(e, StoreError::InvalidStatement { .. })),
        (by_other_key, |e| {
            matches!(e, StoreError::InvalidStatement { .. })
        }),
        (
            statement("ghost", 1, "node-a", &[("honesty", 0.5)], 5),
            |e| matches!(e, StoreError::UnknownEvaluator(_)),
        ),
        (
            statement("eval-3", 3, "node-a", &[("honesty", 0.5)], 5),
            |e| matches!(e, StoreError::EvaluatorRemoved(_)),
        ),
        (
            statement(
                "eval-2",
                2,
                "node-a",
                &[("honesty", 0.5), ("refusal", 0.5)],
                5,
            ),
            |e| matches!(e, StoreError::DimensionNotAllowed { dimension, .. } if dimension == "refusal"),
        ),
        (
            statement("eval-1", 1, "node-x", &[("honesty", 0.5)], 5),
            |e| matches!(e, StoreError::NoSuchNode(n) if n == "node-x"),
        ),
        (from_node, |e| matches!(e, StoreError::NodeStatement(_))),
    ];
    for (signed, expected) in cases {
        let err = store.insert_statement(&signed, 9).unwrap_err();
        assert!(expected(&err), "{err}");
    }
    assert_eq!(
        (audit_len(&store), store.table_rows().unwrap().statements),
        before
    );
    store.insert_statement(&good, 9).unwrap();
}

fn audit_verify_finds_a_stored_statement_altered_behind_the_stores_back(store: Store) {
    populated(&store);
    store
        .insert_statement(
            &statement("eval-1", 1, "node-a", &[("honesty", 0.25)], 5),
            9,
        )
        .unwrap();
    let report = store.verify_audit(&trusted()).unwrap();
    assert_eq!(
        (report.statement_signatures, report.statement_rows_verified),
        (1, 1)
    );
    execute(&store, "UPDATE statements SET scores = '{\"honesty\":1.0}'").unwrap();
    let err = store.verify_audit(&trusted()).unwrap_err();
    assert!(
        matches!(err, AuditError::StoredStatement { id: 1, ref evaluator, .. } if evaluator == "eval-1"),
        "{err}"
    );
    assert!(
        err.to_string().contains("changed after it was stored"),
        "{err}"
    );
    // Whoever can write the file swaps the evaluator's key in its row: the chain still has
    // the key the admin added.
    execute(
        &store,
        "UPDATE statements SET scores = '{\"honesty\":0.25}'",
    )
    .unwrap();
    store.verify_audit(&trusted()).unwrap();
    let forger = eval_key(9);
    let forged = statement("eval-1", 9, "node-a", &[("honesty", 1.0)], 5);
    execute(
        &store,
        &format!(
            "UPDATE evaluators SET public_key = '{}' WHERE name = 'eval-1'; \
             UPDATE statements SET scores = '{{\"honesty\":1.0}}', signature = '{}'",
            forger.public().to_base64(),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, forged.signature),
        ),
    )
    .unwrap();
    assert!(matches!(
        store.verify_audit(&trusted()).unwrap_err(),
        AuditError::StoredStatement { .. }
    ));
}

fn a_rehashed_forged_statement_entry_fails_its_signature(store: Store) {
    populated(&store);
    store
        .insert_statement(
            &statement("eval-1", 1, "node-a", &[("honesty", 0.25)], 5),
            9,
        )
        .unwrap();
    let mut entries = store.audit_entries(1, 100).unwrap();
    let last = entries.len() - 1;
    entries[last].entry = entries[last].entry.replace("0.25", "0.95");
    let e = &entries[last];
    entries[last].hash = chain_hash(&e.prev_hash, e.seq, e.at_ms, &e.kind, &e.entry);
    let err = verify_chain(&entries).unwrap_err();
    assert!(
        matches!(err, AuditError::StatementSignature { id: 1, .. }),
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
        AuditError::StatementSignature { .. }
    ));
}

fn old_statements_are_pruned_but_each_pairs_newest_stays_and_ids_are_not_reused(store: Store) {
    let clock = Clock::starting_at(START_MS);
    let store = store.with_clock(clock.clone());
    populated(&store);
    for hour in 0..10 {
        let at = START_MS + hour * HOUR_MS;
        clock.step(if hour == 0 { 0 } else { HOUR_MS as i64 });
        for subject in ["node-a", "node-b"] {
            let s = statement("eval-1", 1, subject, &[("honesty", 0.5)], at);
            store.insert_statement(&s, at).unwrap();
        }
    }
    let retention = Retention {
        benchmarks: Duration::from_secs(3 * 3600 + 1800),
        ..Retention::default()
    };
    let keys = ControllerKeys::from(IdentityKey::from_bytes([0xc0; 32]));
    let report = store.prune(&retention, &keys).unwrap();
    // Hours 6 to 9 are kept for both nodes: 12 of 20 rows go.
    assert_eq!(report.statements, 12);
    assert_eq!(store.table_rows().unwrap().statements, 8);
    // Far later, only each pair's newest is left.
    clock.step(100 * HOUR_MS as i64);
    store.prune(&retention, &keys).unwrap();
    assert_eq!(store.table_rows().unwrap().statements, 2);
    // node-b's newest held the highest id; it goes with node-b, and no id comes back.
    store.remove_node("node-b").unwrap();
    let id = store
        .insert_statement(
            &statement("eval-1", 1, "node-a", &[("honesty", 0.5)], clock.now_ms()),
            clock.now_ms(),
        )
        .unwrap();
    assert_eq!(id, 21);
    store.verify_audit(&trusted()).unwrap();
}

fn a_checkpoint_keeps_the_evaluators_keys_for_later_statements(store: Store) {
    let clock = Clock::starting_at(START_MS);
    let store = store.with_clock(clock.clone());
    populated(&store);
    store
        .insert_statement(
            &statement("eval-1", 1, "node-a", &[("honesty", 0.5)], START_MS),
            START_MS,
        )
        .unwrap();
    clock.step(72 * HOUR_MS as i64);
    let keys = ControllerKeys::from(IdentityKey::from_bytes([0xc0; 32]));
    let report = store.prune(&Retention::default(), &keys).unwrap();
    assert!(report.checkpoint.is_some(), "{report:?}");
    // The evaluator_add entries are gone; the checkpoint carries the keys.
    let kinds: Vec<String> = store
        .audit_entries(1, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(!kinds.iter().any(|k| k == "evaluator_add"), "{kinds:?}");
    let now = clock.now_ms();
    store
        .insert_statement(
            &statement("eval-2", 2, "node-b", &[("honesty", 0.7)], now),
            now,
        )
        .unwrap();
    let report = store.verify_audit(&trusted()).unwrap();
    assert_eq!(report.statement_signatures, 2);
    assert_eq!(report.statement_rows_verified, 2);
    assert_eq!(report.counts[&AuditKind::EvaluatorAdd], 2);
}

crate::store::testutil::on_both_backends!(
    evaluators_are_added_listed_and_removed_with_audit_entries,
    the_latest_score_per_evaluator_subject_and_dimension_is_read,
    refused_statements_store_nothing,
    audit_verify_finds_a_stored_statement_altered_behind_the_stores_back,
    a_rehashed_forged_statement_entry_fails_its_signature,
    old_statements_are_pruned_but_each_pairs_newest_stays_and_ids_are_not_reused,
    a_checkpoint_keeps_the_evaluators_keys_for_later_statements,
);
