//! `audit verify` matches every statement a decision records to a signed statement earlier
//! in the log, on both backends: a decision rewritten (and the chain rehashed after it, so
//! the links and hashes verify) fails, naming the decision's epoch and node and the
//! statement.

use meshtun_proto::statement::{EvidenceDigest, Issuer, Statement};
use meshtun_proto::{EpochSecret, IdentityKey};

use crate::model::{self, Decision, Dimension, EpochRecord, Evidence, History, NodeInput, Policy};
use crate::store::audit::{chain_hash, AuditEntry, AuditError, AuditKind, DecisionEntry};
use crate::store::testutil::{drop_audit_triggers, execute, node, trusted};
use crate::store::{EvaluatorRecord, Store};

const EPOCH: u64 = 7;

/// A way to rewrite a recorded statement.
type Tamper = fn(&mut model::Statement);

fn eval_key() -> IdentityKey {
    IdentityKey::from_bytes([0xe1; 32])
}

/// node-a and node-b enrolled, eval-1 and eval-2 (honesty) registered, and statement 1 of
/// eval-1 about node-a (honesty 0.25, evaluated at 5).
fn populated(store: &Store) {
    for (id, seed) in [("node-a", 1), ("node-b", 2)] {
        store.add_node(&node(id, seed).0).unwrap();
    }
    for (name, seed) in [("eval-1", 0xe1), ("eval-2", 0xe2)] {
        store
            .add_evaluator(&EvaluatorRecord {
                name: name.into(),
                key: IdentityKey::from_bytes([seed; 32]).public(),
                dimensions: vec!["honesty".into()],
                group: None,
                added_ms: 1,
                removed_ms: None,
            })
            .unwrap();
    }
    let signed = Statement {
        issuer: Issuer::Evaluator("eval-1".into()),
        subject: "node-a".into(),
        scores: [("honesty".to_owned(), 0.25)].into(),
        evaluated_at_ms: 5,
        evidence: EvidenceDigest::of(b"transcript"),
    }
    .sign(&eval_key())
    .unwrap();
    assert_eq!(store.insert_statement(&signed, 9).unwrap(), 1);
    // And node-b's observation of node-a, statement 2.
    let observed = Statement {
        issuer: Issuer::Node("node-b".into()),
        subject: "node-a".into(),
        scores: [("reachable".to_owned(), 1.0)].into(),
        evaluated_at_ms: 6,
        evidence: EvidenceDigest::of(b"probes"),
    }
    .sign(&node("node-b", 2).1)
    .unwrap();
    assert_eq!(store.insert_observation(&observed, 9).unwrap(), 2);
}

/// The observation as the engine would have passed it to the policy.
fn observed() -> model::Statement {
    model::Statement {
        id: 2,
        issuer: model::Issuer::Node {
            id: "node-b".into(),
        },
        subject: "node-a".into(),
        dimension: Dimension::Reachable,
        score: 1.0,
        evaluated_at_ms: 6,
    }
}

/// The statement as the engine would have passed it to the policy.
fn cited() -> model::Statement {
    model::Statement {
        id: 1,
        issuer: model::Issuer::Evaluator {
            name: "eval-1".into(),
            group: None,
        },
        subject: "node-a".into(),
        dimension: Dimension::Honesty,
        score: 0.25,
        evaluated_at_ms: 5,
    }
}

/// Epoch [`EPOCH`] with a decision about node-a whose input records [`cited`] and
/// [`observed`].
fn decide(store: &Store) {
    let decision = Decision {
        node_id: "node-a".into(),
        allowed: false,
        reason: "no benchmark received".into(),
        passing: false,
        history: History {
            allowed: false,
            passing_streak: 0,
            benchmarked: false,
        },
        evidence: Evidence {
            score: None,
            threshold: 0.7,
            age_ms: None,
            max_age_ms: 120_000,
            seq: None,
            sources: Vec::new(),
        },
    };
    let input = NodeInput {
        node_id: "node-a".into(),
        latest: None,
        pin: None,
        history: None,
        statements: vec![cited(), observed()],
    };
    let epoch = EpochRecord {
        id: EPOCH,
        secret: EpochSecret::from_bytes([7; 32]),
        activation_ms: 7_000,
        not_after_ms: 8_000,
        created_ms: 6_990,
        cause: "schedule".into(),
    };
    store
        .insert_epoch(&epoch, &[decision], &[input], &Policy::default(), 6_990)
        .unwrap();
}

/// Rewrites the decision entry's recorded statement with `tamper`, rehashes it and every
/// entry after it, and writes them back past the triggers.
fn rewrite_decision(store: &Store, tamper: impl Fn(&mut model::Statement)) {
    let mut entries: Vec<AuditEntry> = store.audit_entries(1, 1_000).unwrap();
    let at = entries
        .iter()
        .position(|e| e.kind == AuditKind::Decision.as_str())
        .unwrap();
    let mut d: DecisionEntry = serde_json::from_str(&entries[at].entry).unwrap();
    tamper(&mut d.input.statements[0]);
    entries[at].entry = serde_json::to_string(&d).unwrap();
    for i in at..entries.len() {
        let prev = entries[i - 1].hash.clone();
        let e = &mut entries[i];
        e.prev_hash = prev;
        e.hash = chain_hash(&e.prev_hash, e.seq, e.at_ms, &e.kind, &e.entry);
    }
    for e in &entries[at..] {
        let sql = format!(
            "UPDATE audit SET entry = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {}",
            e.entry.replace('\'', "''"),
            e.prev_hash,
            e.hash,
            e.seq
        );
        execute(store, &sql).unwrap();
    }
}

fn a_decision_citing_its_signed_statement_verifies(store: Store) {
    populated(&store);
    decide(&store);
    let report = store.verify_audit(&trusted()).unwrap();
    assert_eq!(report.decision_statements_matched, 2);
    assert_eq!(report.decision_statements_pruned, 0);
}

fn a_rewritten_or_invented_citation_fails_audit_verify(store: Store) {
    populated(&store);
    decide(&store);
    let original = store.audit_entries(1, 1_000).unwrap();
    drop_audit_triggers(&store);
    let cases: [(&str, Tamper, &str); 6] = [
        ("score", |s| s.score = 0.95, "honesty score 0.95"),
        ("unknown id", |s| s.id = 99, "no signed statement"),
        ("time", |s| s.evaluated_at_ms = 6, "evaluation time 6"),
        ("subject", |s| s.subject = "node-b".into(), "subject node-b"),
        (
            "issuer",
            |s| {
                s.issuer = model::Issuer::Evaluator {
                    name: "eval-2".into(),
                    group: None,
                }
            },
            "issuer evaluator eval-2",
        ),
        (
            "issuer kind",
            |s| {
                s.issuer = model::Issuer::Node {
                    id: "eval-1".into(),
                }
            },
            "issuer node eval-1",
        ),
    ];
    for (what, tamper, reason) in cases {
        rewrite_decision(&store, tamper);
        let err = store.verify_audit(&trusted()).unwrap_err();
        let id = if what == "unknown id" { 99 } else { 1 };
        assert!(
            matches!(
                &err,
                AuditError::DecisionStatement { epoch: EPOCH, node, id: i, .. }
                    if node == "node-a" && *i == id
            ),
            "{what}: {err}"
        );
        let message = err.to_string();
        for part in [
            "node node-a",
            &format!("epoch {EPOCH}"),
            &format!("statement {id}"),
            reason,
        ] {
            assert!(message.contains(part), "{what}: {message}");
        }
        // Back to the original rows: the chain verifies again.
        rewrite_decision(&store, |s| *s = cited());
        assert_eq!(store.audit_entries(1, 1_000).unwrap(), original, "{what}");
        store.verify_audit(&trusted()).unwrap();
    }
}

crate::store::testutil::on_both_backends!(
    a_decision_citing_its_signed_statement_verifies,
    a_rewritten_or_invented_citation_fails_audit_verify,
);
