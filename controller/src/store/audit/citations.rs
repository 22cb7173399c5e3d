//! What the audit chain verifier remembers of signed statements, so that every statement a
//! decision records can be matched to one the log holds before it, field by field.
//!
//! Names (issuers, subjects, dimensions) are interned: the chain may hold millions of
//! statements about a few thousand nodes. What is kept is still proportional to the
//! statements and observations in the verified part of the chain (about 100 bytes each),
//! which `[retention]` and the evaluators' and nodes' quotas bound.

use std::collections::HashMap;

use meshtun_proto::statement::{Issuer, Statement};

use super::{AuditError, DecisionEntry};
use crate::model;

/// A statement as the log recorded it, with its names interned.
#[derive(Debug)]
struct Seen {
    /// Interned `(issuer kind, issuer name)`.
    issuer: u32,
    subject: u32,
    evaluated_at_ms: u64,
    /// Interned dimension → score.
    scores: Box<[(u32, f64)]>,
}

/// The signed statements of a chain, by id.
#[derive(Debug, Default)]
pub(super) struct Citations {
    names: HashMap<String, u32>,
    seen: HashMap<u64, Seen>,
    /// Statements with an id up to this one were pruned behind the checkpoint the chain
    /// resumed from: a decision may cite them, and they cannot be checked here.
    pruned_through: u64,
}

/// How the statements cited by decisions were matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Matched {
    /// Cited statements found earlier in the chain with the same values.
    pub(super) matched: u64,
    /// Cited statements pruned behind the checkpoint, not checked.
    pub(super) pruned: u64,
}

impl Citations {
    /// Citations after a checkpoint covering the statements up to id `pruned_through`.
    pub(super) fn resume(pruned_through: u64) -> Self {
        Self {
            pruned_through,
            ..Self::default()
        }
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(i) = self.names.get(name) {
            return *i;
        }
        // Ids are u32: more distinct names than that cannot fit in memory anyway.
        let i = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.insert(name.to_owned(), i);
        i
    }

    fn lookup(&self, name: &str) -> Option<u32> {
        self.names.get(name).copied()
    }

    /// Remembers statement `id` the chain recorded (an evaluator's statement or a node's
    /// observation, after its signature was checked).
    pub(super) fn record(&mut self, id: u64, s: &Statement) {
        let issuer = self.intern(&issuer_key(&s.issuer));
        let subject = self.intern(&s.subject);
        let scores = s
            .scores
            .iter()
            .map(|(d, score)| (self.intern(d), *score))
            .collect();
        self.seen.insert(
            id,
            Seen {
                issuer,
                subject,
                evaluated_at_ms: s.evaluated_at_ms,
                scores,
            },
        );
    }

    /// Checks that every statement decision `d` (at audit entry `seq`) records is one the
    /// chain recorded before, with the same issuer, subject, dimension, score and time.
    pub(super) fn check(
        &self,
        seq: u64,
        d: &DecisionEntry,
        counts: &mut Matched,
    ) -> Result<(), AuditError> {
        for cited in &d.input.statements {
            let fail = |reason: String| AuditError::DecisionStatement {
                seq,
                epoch: d.epoch,
                node: d.decision.node_id.clone(),
                id: cited.id,
                reason,
            };
            let Some(seen) = self.seen.get(&cited.id) else {
                if cited.id <= self.pruned_through {
                    counts.pruned += 1;
                    continue;
                }
                return Err(fail(
                    "no signed statement of this id is earlier in the log".into(),
                ));
            };
            self.compare(cited, seen).map_err(fail)?;
            counts.matched += 1;
        }
        Ok(())
    }

    /// What differs between a decision's record of a statement and the signed one.
    fn compare(&self, cited: &model::Statement, seen: &Seen) -> Result<(), String> {
        let (issuer, name) = match &cited.issuer {
            model::Issuer::Evaluator { name, .. } => ("evaluator", name),
            model::Issuer::Node { id } => ("node", id),
        };
        if self.lookup(&format!("{issuer}:{name}")) != Some(seen.issuer) {
            return Err(format!(
                "the decision records issuer {issuer} {name}, not the signed statement's"
            ));
        }
        if self.lookup(&cited.subject) != Some(seen.subject) {
            return Err(format!(
                "the decision records subject {}, not the signed statement's",
                cited.subject
            ));
        }
        if cited.evaluated_at_ms != seen.evaluated_at_ms {
            return Err(format!(
                "the decision records evaluation time {} ms, the signed statement {} ms",
                cited.evaluated_at_ms, seen.evaluated_at_ms
            ));
        }
        let dimension = cited.dimension.name();
        let signed = self
            .lookup(dimension)
            .and_then(|d| seen.scores.iter().find(|(s, _)| *s == d))
            .map(|(_, score)| *score);
        match signed {
            None => Err(format!(
                "the decision records dimension {dimension}, which the signed statement does \
                 not score"
            )),
            Some(score) if score != cited.score => Err(format!(
                "the decision records {dimension} score {}, the signed statement {score}",
                cited.score
            )),
            Some(_) => Ok(()),
        }
    }
}

/// An issuer as one interned name: its kind and its name.
fn issuer_key(issuer: &Issuer) -> String {
    match issuer {
        Issuer::Evaluator(name) => format!("evaluator:{name}"),
        Issuer::Node(id) => format!("node:{id}"),
    }
}
