//! What the audit chain verifier knows of evaluators: every key the chain added (removed
//! ones too, for the statements they left), checked against each recorded statement.

use std::collections::BTreeMap;

use meshtun_proto::statement::Issuer;
use meshtun_proto::IdentityPublic;
use serde::{Deserialize, Serialize};

use super::{AuditError, Checkpoint, EvaluatorAddEntry, EvaluatorRemoveEntry, StatementEntry};

/// An evaluator as the chain knows it at some entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluatorKey {
    /// Its Ed25519 key.
    pub key: IdentityPublic,
    /// The dimensions it may score.
    pub dimensions: Vec<String>,
    /// The audit seq of its `evaluator_add` entry.
    pub added_at: u64,
    /// Whether a later `evaluator_remove` entry removed it.
    pub removed: bool,
}

/// The evaluators of a chain, and the highest statement id seen.
#[derive(Debug, Default)]
pub(super) struct Evaluators {
    pub(super) keys: BTreeMap<String, EvaluatorKey>,
    pub(super) last_statement_id: u64,
}

impl Evaluators {
    /// The state a checkpoint recorded.
    pub(super) fn resume(checkpoint: &Checkpoint) -> Self {
        Self {
            keys: checkpoint.evaluators.clone(),
            last_statement_id: checkpoint.last_statement_id,
        }
    }

    pub(super) fn add(&mut self, seq: u64, entry: EvaluatorAddEntry) {
        let e = entry.evaluator;
        self.keys.insert(
            e.name,
            EvaluatorKey {
                key: e.key,
                dimensions: e.dimensions,
                added_at: seq,
                removed: false,
            },
        );
    }

    pub(super) fn remove(&mut self, entry: &EvaluatorRemoveEntry) {
        if let Some(e) = self.keys.get_mut(&entry.name) {
            e.removed = true;
        }
    }

    /// Checks a recorded statement: from an evaluator active at this point, scoring only its
    /// dimensions, about a node `enrolled` at this point, with a signature that verifies.
    pub(super) fn check(
        &mut self,
        seq: u64,
        entry: &StatementEntry,
        enrolled: impl Fn(&str) -> bool,
    ) -> Result<(), AuditError> {
        let s = &entry.signed.statement;
        let fail = |reason: String| AuditError::StatementSignature {
            seq,
            id: entry.id,
            evaluator: s.issuer.name().to_owned(),
            reason,
        };
        let Issuer::Evaluator(name) = &s.issuer else {
            return Err(fail(format!("issued by {}, not an evaluator", s.issuer)));
        };
        let evaluator = self
            .keys
            .get(name)
            .ok_or_else(|| fail("the evaluator was never added".to_owned()))?;
        if evaluator.removed {
            return Err(fail("the evaluator was removed before it".to_owned()));
        }
        entry.signed.verify(&evaluator.key).map_err(|e| {
            fail(format!(
                "{e} (key {} added at audit entry {})",
                evaluator.key, evaluator.added_at
            ))
        })?;
        if let Some(d) = s.scores.keys().find(|d| !evaluator.dimensions.contains(d)) {
            return Err(fail(format!("it may not score dimension {d}")));
        }
        if !enrolled(&s.subject) {
            return Err(fail(format!(
                "its subject {} is not enrolled at this point",
                s.subject
            )));
        }
        self.last_statement_id = self.last_statement_id.max(entry.id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use meshtun_proto::statement::{EvidenceDigest, Statement};
    use meshtun_proto::IdentityKey;

    use super::super::{
        chain_hash, verify_chain, AuditEntry, AuditKind, EnrollEntry, GENESIS_HASH,
    };
    use super::*;
    use crate::store::testutil::node;
    use crate::store::EvaluatorRecord;

    /// Links `bodies` into a chain, as the store would have written them.
    fn chain(bodies: &[(AuditKind, String)]) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for (i, (kind, json)) in bodies.iter().enumerate() {
            let prev = out
                .last()
                .map_or(GENESIS_HASH.to_owned(), |e| e.hash.clone());
            let seq = i as u64 + 1;
            out.push(AuditEntry {
                seq,
                at_ms: 1_000,
                kind: kind.as_str().to_owned(),
                entry: json.clone(),
                hash: chain_hash(&prev, seq, 1_000, kind.as_str(), json),
                prev_hash: prev,
            });
        }
        out
    }

    fn added(key: &IdentityKey) -> (AuditKind, String) {
        let entry = EvaluatorAddEntry {
            evaluator: EvaluatorRecord {
                name: "eval-1".into(),
                key: key.public(),
                dimensions: vec!["honesty".into()],
                group: None,
                added_ms: 1,
                removed_ms: None,
            },
        };
        (
            AuditKind::EvaluatorAdd,
            serde_json::to_string(&entry).unwrap(),
        )
    }

    fn enrolled(id: &str) -> (AuditKind, String) {
        let entry = EnrollEntry {
            node: node(id, 1).0,
            invite_token_hash: None,
        };
        (AuditKind::Enroll, serde_json::to_string(&entry).unwrap())
    }

    fn stated(key: &IdentityKey, id: u64, subject: &str, dimension: &str) -> (AuditKind, String) {
        let signed = Statement {
            issuer: Issuer::Evaluator("eval-1".into()),
            subject: subject.into(),
            scores: [(dimension.to_owned(), 0.5)].into(),
            evaluated_at_ms: 1,
            evidence: EvidenceDigest::of(b"e"),
        }
        .sign(key)
        .unwrap();
        let entry = StatementEntry {
            id,
            received_ms: 1,
            signed,
        };
        (AuditKind::Statement, serde_json::to_string(&entry).unwrap())
    }

    fn removed() -> (AuditKind, String) {
        let entry = EvaluatorRemoveEntry {
            name: "eval-1".into(),
            removed_ms: 2,
        };
        (
            AuditKind::EvaluatorRemove,
            serde_json::to_string(&entry).unwrap(),
        )
    }

    /// Whoever holds the evaluator's key (stolen after its removal, say) and can write the
    /// database still cannot slip a statement into the log that the evaluator could not
    /// have made: after its removal, outside its dimensions, about a node not enrolled, or
    /// under another key.
    #[test]
    fn statements_the_evaluator_could_not_have_made_fail_the_chain() {
        let key = IdentityKey::from_bytes([4; 32]);
        let good = [
            enrolled("node-a"),
            added(&key),
            stated(&key, 1, "node-a", "honesty"),
        ];
        let report = verify_chain(&chain(&good)).unwrap();
        assert_eq!(report.statement_signatures, 1);
        let cases = [
            (
                "after its removal",
                vec![removed(), stated(&key, 2, "node-a", "honesty")],
            ),
            (
                "outside its dimensions",
                vec![stated(&key, 2, "node-a", "refusal")],
            ),
            (
                "about a stranger",
                vec![stated(&key, 2, "node-x", "honesty")],
            ),
            (
                "under another key",
                vec![stated(
                    &IdentityKey::from_bytes([5; 32]),
                    2,
                    "node-a",
                    "honesty",
                )],
            ),
        ];
        for (what, tail) in cases {
            let mut bodies = good.to_vec();
            bodies.extend(tail);
            let err = verify_chain(&chain(&bodies)).unwrap_err();
            assert!(
                matches!(err, AuditError::StatementSignature { id: 2, .. }),
                "{what}: {err}"
            );
        }
        // A statement from an evaluator the chain never added.
        let err = verify_chain(&chain(&[
            enrolled("node-a"),
            stated(&key, 1, "node-a", "honesty"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("never added"), "{err}");
    }
}
