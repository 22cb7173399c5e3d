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
