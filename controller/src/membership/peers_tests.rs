//! Peer observations as a source: "reachable from at least 2/3 of its peers", a node's word
//! about itself never counting, a liar among the peers, too few observers, and stale ones.

use proptest::prelude::*;

use crate::membership::decide_one;
use crate::model::{
    BenchmarkRecord, Combine, Dimension, Issuer, NodeInput, Policy, SourceRule, Statement,
};
use meshtun_proto::wire::Scores;

const NOW: u64 = 100_000_000;
const MINUTE: u64 = 60_000;

fn seen(id: u64, observer: &str, dimension: Dimension, score: f64, age: u64) -> Statement {
    Statement {
        id,
        issuer: Issuer::Node {
            id: observer.into(),
        },
        subject: "n1".into(),
        dimension,
        score,
        evaluated_at_ms: NOW - age,
    }
}

fn reachable(id: u64, observer: &str, score: f64) -> Statement {
    seen(id, observer, Dimension::Reachable, score, 30_000)
}

fn input(statements: Vec<Statement>) -> NodeInput {
    NodeInput {
        node_id: "n1".into(),
        latest: Some(BenchmarkRecord {
            node_id: "n1".into(),
            suite_version: "v1".into(),
            scores: Scores {
                overall: 0.9,
                refusal: 0.9,
                honesty: 0.9,
                policy: 0.9,
            },
            measured_at_ms: NOW - 5_000,
            seq: 3,
            received_ms: NOW - 5_000,
        }),
        pin: None,
        history: None,
        statements,
    }
}

/// Reachable from at least two thirds of at least 2 observing peers, fresh within 3 min.
fn policy(combine: Combine) -> Policy {
    let mut p = Policy::default();
    let rule = SourceRule {
        from: vec!["peers".parse().unwrap()],
        k: 2,
        combine,
        max_age_ms: 3 * MINUTE,
        minimum: Some(0.66),
    };
    p.sources.set(Dimension::Reachable, Some(rule));
    p
}

#[test]
fn a_node_reachable_from_two_of_three_peers_passes_and_from_one_of_three_is_denied() {
    let two = vec![
        reachable(1, "a", 1.0),
        reachable(2, "b", 1.0),
        reachable(3, "c", 0.0),
    ];
    let d = decide_one(&input(two), &policy(Combine::Mean), NOW);
    assert!(d.allowed, "{}", d.reason);
    assert!(
        d.reason
            .contains("reachable 0.67 (mean of 3 peers: a 1.00, b 1.00, c 0.00) meets 0.66"),
        "{}",
        d.reason
    );
    let one = vec![
        reachable(1, "a", 1.0),
        reachable(2, "b", 0.0),
        reachable(3, "c", 0.0),
    ];
    let d = decide_one(&input(one), &policy(Combine::Mean), NOW);
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        "reachable 0.33 (mean of 3 peers: a 1.00, b 0.00, c 0.00); needs 0.66"
    );
    let used: Vec<Option<u64>> = d.evidence.sources[0].used.iter().map(|u| u.id).collect();
    assert_eq!(used, [Some(1), Some(2), Some(3)]);
}

#[test]
fn a_nodes_word_about_itself_never_counts() {
    // n1 says it is reachable, twice over; only the one real peer's word counts, and one
    // observer is fewer than k = 2, so reachability is not judged on n1's say-so either.
    let mut statements = vec![reachable(1, "a", 0.0)];
    statements.push(Statement {
        issuer: Issuer::Node { id: "n1".into() },
        ..reachable(2, "n1", 1.0)
    });
    statements.push(Statement {
        issuer: Issuer::Node { id: "n1".into() },
        ..reachable(3, "n1", 1.0)
    });
    let d = decide_one(&input(statements.clone()), &policy(Combine::Mean), NOW);
    assert!(
        d.reason
            .contains("reachable not judged: 1 fresh statement from its sources, needs 2"),
        "{}",
        d.reason
    );
    assert_eq!(d.evidence.sources[0].used.len(), 1);
    assert_eq!(d.evidence.sources[0].used[0].issuer, "a");
    // With a second real peer saying unreachable, n1 is denied whatever it says of itself.
    statements.push(reachable(4, "b", 0.0));
    let d = decide_one(&input(statements), &policy(Combine::Mean), NOW);
    assert!(!d.allowed, "{}", d.reason);
}

#[test]
fn an_evaluators_statement_about_reachability_is_not_a_peers() {
    let mut statements = vec![reachable(1, "a", 0.0), reachable(2, "b", 0.0)];
    for (id, name) in [(3, "e1"), (4, "e2"), (5, "e3")] {
        statements.push(Statement {
            issuer: Issuer::Evaluator {
                name: name.into(),
                group: None,
            },
            ..reachable(id, name, 1.0)
        });
    }
    let d = decide_one(&input(statements), &policy(Combine::Mean), NOW);
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        "reachable 0.00 (mean of 2 peers: a 0.00, b 0.00); needs 0.66"
    );
}

#[test]
fn with_the_median_one_lying_peer_of_three_cannot_deny() {
    let statements = vec![
        reachable(1, "a", 1.0),
        reachable(2, "b", 1.0),
        reachable(3, "liar", 0.0),
    ];
    let d = decide_one(&input(statements), &policy(Combine::Median), NOW);
    assert!(d.allowed, "{}", d.reason);
}

#[test]
fn too_few_fresh_observers_leave_it_unjudged_and_only_the_newest_of_each_counts() {
    // a's old "unreachable" is superseded by its newer "reachable"; b's is stale.
    let statements = vec![
        seen(1, "a", Dimension::Reachable, 0.0, 2 * MINUTE),
        seen(2, "a", Dimension::Reachable, 1.0, MINUTE),
        seen(3, "b", Dimension::Reachable, 0.0, 4 * MINUTE),
    ];
    let d = decide_one(&input(statements), &policy(Combine::Mean), NOW);
    assert!(d.allowed, "{}", d.reason);
    assert!(
        d.reason.contains("reachable not judged: 1 fresh statement")
            && d.reason.contains("b's is 4 min old, the limit is 3 min"),
        "{}",
        d.reason
    );
    assert_eq!(d.evidence.sources[0].value, None);
    assert_eq!(d.evidence.sources[0].used[0].id, Some(2));
}

#[test]
fn a_self_reported_dimension_still_fails_first() {
    let mut i = input(vec![reachable(1, "a", 1.0), reachable(2, "b", 1.0)]);
    if let Some(b) = i.latest.as_mut() {
        b.scores.overall = 0.2;
    }
    let d = decide_one(&i, &policy(Combine::Mean), NOW);
    assert!(!d.allowed);
    assert!(d.reason.starts_with("overall score 0.20"), "{}", d.reason);
}

#[test]
fn latency_reads_as_a_score_and_an_observation_of_another_dimension_does_not_count() {
    let mut p = Policy::default();
    p.sources.set(
        Dimension::Latency,
        Some(SourceRule {
            from: vec!["peers".parse().unwrap()],
            k: 2,
            combine: Combine::Median,
            max_age_ms: 3 * MINUTE,
            minimum: Some(0.8),
        }),
    );
    let statements = vec![
        seen(1, "a", Dimension::Latency, 0.95, 1_000),
        seen(2, "b", Dimension::Latency, 0.50, 1_000),
        seen(3, "c", Dimension::Handshake, 1.0, 1_000),
    ];
    let d = decide_one(&input(statements), &p, NOW);
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        "latency 0.50 (median of 2 peers: a 0.95, b 0.50); needs 0.80"
    );
}

proptest! {
    /// The mean of 0/1 observations is the fraction of peers that reached the node, and a
    /// node passes exactly when that fraction meets the bar.
    #[test]
    fn the_mean_of_reachability_is_the_fraction_reached(
        reached in proptest::collection::vec(any::<bool>(), 2..40),
    ) {
        let statements: Vec<Statement> = reached
            .iter()
            .enumerate()
            .map(|(i, r)| reachable(i as u64, &format!("p{i}"), if *r { 1.0 } else { 0.0 }))
            .collect();
        let d = decide_one(&input(statements), &policy(Combine::Mean), NOW);
        let fraction = reached.iter().filter(|r| **r).count() as f64 / reached.len() as f64;
        let value = d.evidence.sources[0].value.unwrap();
        prop_assert!((value - fraction).abs() < 1e-9);
        prop_assert_eq!(d.allowed, fraction >= 0.66);
    }
}
