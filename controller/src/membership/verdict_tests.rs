//! Decisions under a policy with sources: reasons, evidence, bars, hysteresis, removal of
//! an evaluator, and re-deriving a decision from its recorded input and policy.

use crate::membership::{decide_one, newly_failing};
use crate::model::{
    BenchmarkRecord, Combine, Decision, Dimension, History, Issuer, NodeInput, Pin, Policy,
    SourceRule, Statement, UsedStatement,
};
use meshtun_proto::wire::Scores;

const NOW: u64 = 100_000_000;
const HOUR: u64 = 3_600_000;

fn statement(id: u64, name: &str, dimension: Dimension, score: f64, age: u64) -> Statement {
    Statement {
        id,
        issuer: Issuer::Evaluator {
            name: name.into(),
            group: Some("core".into()),
        },
        subject: "n1".into(),
        dimension,
        score,
        evaluated_at_ms: NOW - age,
    }
}

fn honesty(id: u64, name: &str, score: f64) -> Statement {
    statement(id, name, Dimension::Honesty, score, 60_000)
}

fn bench() -> BenchmarkRecord {
    BenchmarkRecord {
        node_id: "n1".into(),
        suite_version: "v1".into(),
        scores: Scores {
            overall: 0.9,
            refusal: 0.9,
            honesty: 0.95,
            policy: 0.9,
        },
        measured_at_ms: NOW - 5_000,
        seq: 9,
        received_ms: NOW - 5_000,
    }
}

fn input(statements: Vec<Statement>) -> NodeInput {
    NodeInput {
        node_id: "n1".into(),
        latest: Some(bench()),
        pin: None,
        history: None,
        statements,
    }
}

fn rule(from: &[&str], k: u32, minimum: Option<f64>) -> SourceRule {
    SourceRule {
        from: from.iter().map(|s| s.parse().unwrap()).collect(),
        k,
        combine: Combine::Median,
        max_age_ms: HOUR,
        minimum,
    }
}

/// Honesty from e1, e2 and e4, 3 of them, at least 0.70.
fn issue_policy() -> Policy {
    let mut p = Policy::default();
    let r = rule(
        &["evaluator:e1", "evaluator:e2", "evaluator:e4"],
        3,
        Some(0.70),
    );
    p.sources.set(Dimension::Honesty, Some(r));
    p
}

fn three(scores: [f64; 3]) -> Vec<Statement> {
    vec![
        honesty(11, "e1", scores[0]),
        honesty(12, "e2", scores[1]),
        honesty(14, "e4", scores[2]),
    ]
}

#[test]
fn the_reason_names_the_statements_it_rests_on() {
    let d = decide_one(&input(three([0.30, 0.31, 0.35])), &issue_policy(), NOW);
    assert!(!d.allowed && !d.passing);
    assert_eq!(
        d.reason,
        "honesty 0.31 (median of 3 evaluators: e1 0.30, e2 0.31, e4 0.35); needs 0.70"
    );
    let e = &d.evidence.sources;
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].dimension, e[0].value, e[0].k),
        (Dimension::Honesty, Some(0.31), 3)
    );
    assert_eq!(e[0].minimum, Some(0.70));
    let used: Vec<(Option<u64>, &str, f64)> = e[0]
        .used
        .iter()
        .map(|u| (u.id, u.issuer.as_str(), u.score))
        .collect();
    assert_eq!(
        used,
        [
            (Some(11), "e1", 0.30),
            (Some(12), "e2", 0.31),
            (Some(14), "e4", 0.35)
        ]
    );
    // The self-reported facts are still recorded.
    assert_eq!((d.evidence.score, d.evidence.seq), (Some(0.9), Some(9)));

    let d = decide_one(&input(three([0.80, 0.70, 0.95])), &issue_policy(), NOW);
    assert!(d.allowed);
    assert_eq!(
        d.reason,
        "overall score 0.90 meets the threshold 0.70; \
         honesty 0.80 (median of 3 evaluators: e1 0.80, e2 0.70, e4 0.95) meets 0.70"
    );
}

#[test]
fn the_sourced_value_replaces_the_self_reported_one() {
    // The node says 0.95 for honesty; the evaluators say 0.50: they decide.
    let mut p = Policy::default();
    p.minimums.honesty = Some(0.6);
    p.sources
        .set(Dimension::Honesty, Some(rule(&["group:core"], 1, None)));
    let d = decide_one(&input(vec![honesty(1, "e1", 0.5)]), &p, NOW);
    assert_eq!(
        d.reason,
        "honesty 0.50 (median of 1 evaluator: e1 0.50); needs 0.60"
    );
    // And the other way: a low self-reported honesty no longer matters.
    let mut low = input(vec![honesty(1, "e1", 0.7)]);
    if let Some(b) = low.latest.as_mut() {
        b.scores.honesty = 0.1;
    }
    assert!(decide_one(&low, &p, NOW).allowed);
}

#[test]
fn a_missing_quorum_names_what_is_missing() {
    let mut st = three([0.8, 0.8, 0.8]);
    st[1].evaluated_at_ms = NOW - 3 * HOUR;
    st.pop();
    let d = decide_one(&input(st), &issue_policy(), NOW);
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        "honesty: 1 fresh statement from its sources, needs 3 \
         (e1 0.80; e2's is 3 h old, the limit is 1 h; none from e4)"
    );
    assert_eq!(d.evidence.sources[0].value, None);
    assert_eq!(d.evidence.sources[0].used.len(), 1);
}

#[test]
fn a_removed_evaluator_stops_counting_at_the_next_decision() {
    let mut p = Policy::default();
    p.sources.set(
        Dimension::Honesty,
        Some(rule(&["evaluator:e1", "evaluator:e2"], 2, Some(0.7))),
    );
    let both = vec![honesty(1, "e1", 0.9), honesty(2, "e2", 0.9)];
    let first = decide_one(&input(both), &p, NOW);
    assert!(first.allowed, "{}", first.reason);
    // e2 is removed from the registry: the engine no longer passes its statements.
    let mut next = input(vec![honesty(1, "e1", 0.9)]);
    next.history = Some(first.history);
    let d = decide_one(&next, &p, NOW + 1_000);
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        "honesty: 1 fresh statement from its sources, needs 2 (e1 0.90; none from e2)"
    );
    // It is a deny between evaluations too (rotate_on_deny).
    let failing = newly_failing(&[first], &[next], &p, NOW + 1_000);
    assert_eq!(failing, ["n1"]);
}

#[test]
fn an_evaluators_only_policy_needs_no_benchmark_but_keeps_hysteresis() {
    let mut p = Policy {
        readmit_after: 2,
        ..Policy::default()
    };
    p.sources
        .set(Dimension::Overall, Some(rule(&["group:core"], 2, None)));
    let overall = |id, name: &str, score| statement(id, name, Dimension::Overall, score, 1_000);
    let mut node = input(vec![overall(1, "e1", 0.8), overall(2, "e2", 0.9)]);
    node.latest = None;
    let d = decide_one(&node, &p, NOW);
    assert!(d.allowed, "{}", d.reason);
    assert_eq!(
        d.reason,
        "overall 0.80 (median of 2 evaluators: e1 0.80, e2 0.90) meets 0.70"
    );
    assert!(d.history.benchmarked, "judged on statements");

    // A node that failed on statements alone waits out readmit_after like any other.
    let mut failing = input(vec![overall(1, "e1", 0.2), overall(2, "e2", 0.9)]);
    failing.latest = None;
    let first = decide_one(&failing, &p, NOW);
    assert!(!first.allowed && first.history.benchmarked);
    node.history = Some(first.history);
    let second = decide_one(&node, &p, NOW);
    assert!(!second.allowed);
    assert_eq!(
        second.reason,
        "passing, readmitted after 2 consecutive passing evaluations (1 so far)"
    );
    node.history = Some(second.history);
    assert!(decide_one(&node, &p, NOW).allowed);
}

#[test]
fn the_self_reported_rules_still_apply_to_unsourced_dimensions() {
    let p = issue_policy();
    let good = three([0.9, 0.9, 0.9]);
    let mut no_bench = input(good.clone());
    no_bench.latest = None;
    assert_eq!(
        decide_one(&no_bench, &p, NOW).reason,
        "no benchmark received"
    );
    let mut stale = input(good.clone());
    if let Some(b) = stale.latest.as_mut() {
        b.measured_at_ms = NOW - 120_001;
    }
    assert_eq!(
        decide_one(&stale, &p, NOW).reason,
        "benchmark is 120.001 s old; the limit is 120 s"
    );
    let mut low = input(good.clone());
    if let Some(b) = low.latest.as_mut() {
        b.scores.overall = 0.4;
    }
    assert_eq!(
        decide_one(&low, &p, NOW).reason,
        "overall score 0.40 is below the threshold 0.70"
    );
    // A malformed self-reported honesty does not matter: honesty is sourced.
    let mut nan = input(good);
    if let Some(b) = nan.latest.as_mut() {
        b.scores.honesty = f64::NAN;
    }
    assert!(decide_one(&nan, &p, NOW).allowed);
    if let Some(b) = nan.latest.as_mut() {
        b.scores.refusal = f64::NAN;
    }
    assert_eq!(
        decide_one(&nan, &p, NOW).reason,
        "refusal score NaN is not a number in [0, 1]"
    );
}

#[test]
fn a_malformed_bar_fails_and_pins_still_win() {
    let mut p = issue_policy();
    if let Some(r) = p.sources.honesty.as_mut() {
        r.minimum = Some(f64::NAN);
    }
    let d = decide_one(&input(three([0.9, 0.9, 0.9])), &p, NOW);
    assert_eq!(
        d.reason,
        "the policy minimum for honesty NaN is not a number in [0, 1]"
    );
    let mut pinned = input(Vec::new());
    pinned.pin = Some(Pin::Allow);
    let d = decide_one(&pinned, &issue_policy(), NOW);
    assert!(d.allowed && !d.passing);
}

/// What `audit verify` does: decide again from the recorded input, policy and time, after a
/// round trip through JSON.
#[test]
fn a_decision_is_re_derived_from_its_recorded_input_and_policy() {
    let mut p = issue_policy();
    p.sources.set(
        Dimension::Refusal,
        Some(SourceRule {
            combine: Combine::Minimum,
            ..rule(&["self", "group:core"], 2, Some(0.5))
        }),
    );
    let mut st = three([0.8, 0.6, 0.9]);
    st.push(statement(20, "e7", Dimension::Refusal, 0.7, 10));
    st.push(Statement {
        issuer: Issuer::Node { id: "n2".into() },
        ..statement(21, "n2", Dimension::Refusal, 0.0, 10)
    });
    let mut node = input(st);
    node.history = Some(History {
        allowed: true,
        passing_streak: 3,
        benchmarked: true,
    });
    let d = decide_one(&node, &p, NOW);
    let (input_json, policy_json) = (recorded(&node), recorded(&p));
    let node_again: NodeInput = serde_json::from_str(&input_json).unwrap();
    let policy_again: Policy = serde_json::from_str(&policy_json).unwrap();
    assert_eq!((&node_again, &policy_again), (&node, &p));
    let again = decide_one(&node_again, &policy_again, NOW);
    assert_eq!(again, d);
    assert!(d.allowed, "{}", d.reason);
    assert_eq!(
        d.evidence.sources[0].used,
        [
            UsedStatement {
                id: None,
                issuer: "self".into(),
                score: 0.9,
                age_ms: 5_000
            },
            UsedStatement {
                id: Some(20),
                issuer: "e7".into(),
                score: 0.7,
                age_ms: 10
            },
        ]
    );
    let decision: Decision = serde_json::from_str(&recorded(&d)).unwrap();
    assert_eq!(decision, d);
    // A recorded statement altered afterwards no longer gives the recorded reason, so
    // `audit verify` (which compares the verdict and the reason) notices.
    let mut altered = node_again;
    altered.statements[1].score = 0.95;
    assert_ne!(decide_one(&altered, &policy_again, NOW).reason, d.reason);
}

/// What the audit log records of a value.
fn recorded<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}
