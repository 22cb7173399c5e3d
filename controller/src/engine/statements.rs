//! Stored statement scores as the membership policy reads them.

use std::collections::HashMap;

use crate::model::{Dimension, Issuer, Statement};
use crate::store::StatementScore;

/// The policy's view of stored statement scores, by subject: a registered evaluator's
/// newest score per dimension (the store leaves out removed evaluators and nodes). A
/// dimension the policy does not know is dropped. Statements older than twice the longest
/// `max_age` are not read at all: they could only be named as too old.
pub(super) fn by_subject(scores: Vec<StatementScore>) -> HashMap<String, Vec<Statement>> {
    let mut by_subject: HashMap<String, Vec<Statement>> = HashMap::new();
    for s in scores {
        let Some(dimension) = Dimension::from_name(&s.dimension) else {
            continue;
        };
        by_subject
            .entry(s.subject.clone())
            .or_default()
            .push(Statement {
                id: s.statement_id,
                issuer: Issuer::Evaluator {
                    name: s.evaluator,
                    group: s.group,
                },
                subject: s.subject,
                dimension,
                score: s.score,
                evaluated_at_ms: s.evaluated_at_ms,
            });
    }
    by_subject
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(evaluator: &str, subject: &str, dimension: &str, id: u64) -> StatementScore {
        StatementScore {
            evaluator: evaluator.into(),
            group: Some("core".into()),
            subject: subject.into(),
            dimension: dimension.into(),
            score: 0.3,
            evaluated_at_ms: 1_000,
            statement_id: id,
        }
    }

    #[test]
    fn scores_are_grouped_by_subject_and_unknown_dimensions_dropped() {
        let grouped = by_subject(vec![
            score("e1", "node-a", "honesty", 1),
            score("e2", "node-a", "honesty", 2),
            score("e1", "node-b", "refusal", 3),
            score("e1", "node-b", "jitter", 4),
        ]);
        let a = &grouped["node-a"];
        assert_eq!(a.len(), 2);
        assert!(a
            .iter()
            .all(|s| s.subject == "node-a" && s.dimension == Dimension::Honesty));
        assert_eq!(
            a[1].issuer,
            Issuer::Evaluator {
                name: "e2".into(),
                group: Some("core".into())
            }
        );
        let b = &grouped["node-b"];
        assert_eq!(b.len(), 1, "an unknown dimension is dropped: {b:?}");
        assert_eq!((b[0].id, b[0].dimension), (3, Dimension::Refusal));
    }
}
