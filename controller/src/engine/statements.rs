//! Stored statement scores and peer observations as the membership policy reads them.

use std::collections::{BTreeSet, HashMap};

use crate::membership::would_peer;
use crate::model::{Dimension, Issuer, Statement, Topology};
use crate::store::{ObservationScore, StatementScore};

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

/// Adds the peer observations the policy may count to `by_subject`: those of an observer
/// `allowed` in the current epoch (a denied node's word counts for nothing) about a node it
/// peers with under `topology`, or would were that node allowed (a spoke says nothing of
/// another spoke), never about itself. A peer dimension only: anything else is dropped.
pub(super) fn add_observations(
    by_subject: &mut HashMap<String, Vec<Statement>>,
    observed: Vec<ObservationScore>,
    allowed: &BTreeSet<&str>,
    topology: &Topology,
) {
    for o in observed {
        let Some(dimension) = Dimension::from_name(&o.dimension).filter(|d| d.is_peer()) else {
            continue;
        };
        let counts = allowed.contains(o.observer.as_str())
            && o.observer != o.subject
            && would_peer(&o.observer, &o.subject, topology);
        if !counts {
            continue;
        }
        by_subject
            .entry(o.subject.clone())
            .or_default()
            .push(Statement {
                id: o.statement_id,
                issuer: Issuer::Node { id: o.observer },
                subject: o.subject,
                dimension,
                score: o.score,
                evaluated_at_ms: o.evaluated_at_ms,
            });
    }
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

    fn observed(observer: &str, subject: &str, dimension: &str, id: u64) -> ObservationScore {
        ObservationScore {
            observer: observer.into(),
            subject: subject.into(),
            dimension: dimension.into(),
            score: 1.0,
            evaluated_at_ms: 1_000,
            statement_id: id,
        }
    }

    #[test]
    fn only_allowed_observers_peering_with_the_subject_count() {
        let allowed: BTreeSet<&str> = ["a", "b", "hub"].into_iter().collect();
        let all = || {
            vec![
                observed("a", "c", "reachable", 1),
                observed("b", "c", "latency", 2),
                observed("denied", "c", "reachable", 3),
                observed("a", "a", "reachable", 4),
                observed("hub", "c", "handshake", 5),
                observed("a", "c", "honesty", 6),
            ]
        };
        let mut mesh = HashMap::new();
        add_observations(&mut mesh, all(), &allowed, &Topology::FullMesh);
        let ids: Vec<u64> = mesh["c"].iter().map(|s| s.id).collect();
        assert_eq!(
            ids,
            [1, 2, 5],
            "denied observers, self and non-peer dimensions drop"
        );
        assert!(
            !mesh.contains_key("a"),
            "a node's word about itself never counts"
        );
        assert_eq!(mesh["c"][0].issuer, Issuer::Node { id: "a".into() });
        let hubs = Topology::HubAndSpoke {
            hubs: vec!["hub".into()],
        };
        let mut spokes = HashMap::new();
        add_observations(&mut spokes, all(), &allowed, &hubs);
        let ids: Vec<u64> = spokes["c"].iter().map(|s| s.id).collect();
        assert_eq!(ids, [5], "a spoke says nothing of another spoke");
    }
}
