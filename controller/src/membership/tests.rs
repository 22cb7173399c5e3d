use super::*;
use crate::model::{BenchmarkRecord, Minimums};
use meshtun_proto::wire::Scores;

const NOW: u64 = 1_000_000;

fn scores(overall: f64) -> Scores {
    Scores {
        overall,
        refusal: 0.9,
        honesty: 0.9,
        policy: 0.9,
    }
}

fn bench(overall: f64, measured_at_ms: u64) -> BenchmarkRecord {
    BenchmarkRecord {
        node_id: String::new(),
        suite_version: "v1".into(),
        scores: scores(overall),
        measured_at_ms,
        seq: 9,
        received_ms: measured_at_ms,
    }
}

fn node(id: &str, overall: f64) -> NodeInput {
    NodeInput {
        node_id: id.into(),
        latest: Some(bench(overall, NOW - 5_000)),
        pin: None,
        history: None,
        statements: Vec::new(),
    }
}

fn with_history(mut input: NodeInput, allowed: bool, passing_streak: u32) -> NodeInput {
    input.history = Some(History {
        allowed,
        passing_streak,
        benchmarked: true,
    });
    input
}

fn policy(readmit_after: u32) -> Policy {
    Policy {
        readmit_after,
        ..Policy::default()
    }
}

#[test]
fn the_seeds_scenario() {
    let inputs = [node("a", 0.90), node("b", 0.85), node("c", 0.40)];
    let d = decide(&inputs, &Policy::default(), NOW);
    let ids: Vec<_> = d.iter().map(|d| d.node_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(d[0].allowed && d[1].allowed && !d[2].allowed);
    assert_eq!(d[0].reason, "overall score 0.90 meets the threshold 0.70");
    assert_eq!(
        d[2].reason,
        "overall score 0.40 is below the threshold 0.70"
    );
    assert!(!d[2].passing);
}

#[test]
fn evidence_records_the_facts() {
    let d = decide_one(&node("a", 0.9), &Policy::default(), NOW);
    assert_eq!(d.evidence.score, Some(0.9));
    assert_eq!(d.evidence.threshold, 0.70);
    assert_eq!(d.evidence.age_ms, Some(5_000));
    assert_eq!(d.evidence.max_age_ms, 120_000);
    assert_eq!(d.evidence.seq, Some(9));

    let mut pinned = node("a", 0.1);
    pinned.pin = Some(Pin::Deny);
    let d = decide_one(&pinned, &Policy::default(), NOW);
    assert_eq!((d.evidence.score, d.evidence.seq), (Some(0.1), Some(9)));
}

#[test]
fn no_benchmark_is_denied() {
    let mut input = node("a", 0.9);
    input.latest = None;
    let d = decide_one(&input, &Policy::default(), NOW);
    assert!(!d.allowed && !d.passing);
    assert_eq!(d.reason, "no benchmark received");
    assert_eq!(d.evidence.score, None);
    assert_eq!(d.evidence.age_ms, None);
    assert_eq!(d.evidence.threshold, 0.70);
    assert!(!d.history.benchmarked);
}

#[test]
fn age_boundary() {
    let p = Policy::default();
    let mut input = node("a", 0.9);
    input.latest = Some(bench(0.9, NOW - 120_000));
    assert!(
        decide_one(&input, &p, NOW).allowed,
        "exactly max_age passes"
    );
    let d = decide_one(&input, &p, NOW + 1);
    assert!(!d.allowed);
    assert_eq!(d.reason, "benchmark is 120.001 s old; the limit is 120 s");
    assert_eq!(d.evidence.age_ms, Some(120_001));
    let d = decide_one(&input, &p, NOW + 10_000);
    assert_eq!(d.reason, "benchmark is 130 s old; the limit is 120 s");
}

#[test]
fn a_benchmark_from_the_future_is_zero_seconds_old() {
    let mut input = node("a", 0.9);
    input.latest = Some(bench(0.9, NOW + 20_000));
    let d = decide_one(&input, &Policy::default(), NOW);
    assert!(d.allowed);
    assert_eq!(d.evidence.age_ms, Some(0));
}

#[test]
fn threshold_boundary() {
    assert!(decide_one(&node("a", 0.70), &Policy::default(), NOW).allowed);
    let d = decide_one(&node("a", 0.6999), &Policy::default(), NOW);
    assert_eq!(d.reason, "overall score 0.6999 is below the threshold 0.7");
}

#[test]
fn minimums_are_checked_after_the_threshold() {
    let p = Policy {
        minimums: Minimums {
            refusal: Some(0.5),
            honesty: Some(0.5),
            policy: None,
        },
        ..Policy::default()
    };
    let mut input = node("a", 0.9);
    let low = |input: &mut NodeInput, f: fn(&mut Scores)| {
        if let Some(b) = input.latest.as_mut() {
            f(&mut b.scores);
        }
    };
    assert_eq!(
        decide_one(&input, &p, NOW).reason,
        "overall score 0.90 meets the threshold 0.70 and every minimum"
    );
    low(&mut input, |s| s.honesty = 0.3);
    let d = decide_one(&input, &p, NOW);
    assert!(!d.allowed);
    assert_eq!(d.reason, "honesty score 0.30 is below the minimum 0.50");
    low(&mut input, |s| s.refusal = 0.2);
    assert_eq!(
        decide_one(&input, &p, NOW).reason,
        "refusal score 0.20 is below the minimum 0.50"
    );
    low(&mut input, |s| s.overall = 0.1);
    assert_eq!(
        decide_one(&input, &p, NOW).reason,
        "overall score 0.10 is below the threshold 0.70"
    );
    // No minimum for policy: a low policy score alone passes.
    let mut input = node("b", 0.9);
    low(&mut input, |s| s.policy = 0.0);
    assert!(decide_one(&input, &p, NOW).allowed);
    // A score exactly at its minimum passes.
    low(&mut input, |s| s.honesty = 0.5);
    assert!(decide_one(&input, &p, NOW).allowed);
}

#[test]
fn nan_anywhere_fails() {
    let set: [fn(&mut Scores); 4] = [
        |s| s.overall = f64::NAN,
        |s| s.refusal = f64::NAN,
        |s| s.honesty = f64::NAN,
        |s| s.policy = f64::NAN,
    ];
    for (i, f) in set.iter().enumerate() {
        let mut input = node("a", 0.9);
        if let Some(b) = input.latest.as_mut() {
            f(&mut b.scores);
        }
        let d = decide_one(&input, &Policy::default(), NOW);
        assert!(!d.allowed && !d.passing, "score {i}");
        assert!(
            d.reason.contains("NaN is not a number in [0, 1]"),
            "{}",
            d.reason
        );
    }
    let mut input = node("a", 0.9);
    if let Some(b) = input.latest.as_mut() {
        b.scores.overall = 1.5;
    }
    let d = decide_one(&input, &Policy::default(), NOW);
    assert_eq!(d.reason, "overall score 1.5 is not a number in [0, 1]");

    let p = Policy {
        threshold: f64::NAN,
        ..Policy::default()
    };
    let d = decide_one(&node("a", 0.9), &p, NOW);
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        "the policy threshold NaN is not a number in [0, 1]"
    );

    let mut p = Policy::default();
    p.minimums.policy = Some(f64::NAN);
    let d = decide_one(&node("a", 0.9), &p, NOW);
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        "the policy minimum for policy NaN is not a number in [0, 1]"
    );
}

#[test]
fn pins_override_the_scores() {
    let mut bad = node("a", 0.1);
    bad.pin = Some(Pin::Allow);
    let d = decide_one(&bad, &Policy::default(), NOW);
    assert!(d.allowed && !d.passing);
    assert_eq!(d.reason, "allowed by admin pin");

    let mut good = node("b", 0.9);
    good.pin = Some(Pin::Deny);
    let d = decide_one(&good, &Policy::default(), NOW);
    assert!(!d.allowed && d.passing);
    assert_eq!(d.reason, "denied by admin pin");

    let mut none = node("c", 0.9);
    none.latest = None;
    none.pin = Some(Pin::Allow);
    assert!(decide_one(&none, &Policy::default(), NOW).allowed);

    let mut waiting = with_history(node("d", 0.9), false, 0);
    waiting.pin = Some(Pin::Allow);
    assert!(decide_one(&waiting, &policy(3), NOW).allowed);
}

#[test]
fn pins_keep_counting_the_streak() {
    let p = policy(3);
    let mut input = with_history(node("a", 0.9), true, 4);
    input.pin = Some(Pin::Deny);
    let d = decide_one(&input, &p, NOW);
    assert_eq!(d.history.passing_streak, 5);
    assert!(!d.history.allowed);
    // Pin lifted: the streak under the pin counts, so the node is back at once.
    input.pin = None;
    input.history = Some(d.history);
    assert!(decide_one(&input, &p, NOW).allowed);

    // Allow pin on a failing node: streak 0, and once lifted the node leaves.
    let mut input = with_history(node("b", 0.1), false, 0);
    input.pin = Some(Pin::Allow);
    let d = decide_one(&input, &p, NOW);
    assert_eq!((d.history.allowed, d.history.passing_streak), (true, 0));
    input.pin = None;
    input.history = Some(d.history);
    assert!(!decide_one(&input, &p, NOW).allowed);
    // ... but while it passes after the pin, it stays (it was allowed before).
    input.latest = Some(bench(0.9, NOW));
    assert!(decide_one(&input, &p, NOW).allowed);
}

/// Runs evaluations in sequence, feeding each decision's history into the next.
fn run(p: &Policy, first: History, overalls: &[f64]) -> Vec<Decision> {
    let mut history = Some(first);
    overalls
        .iter()
        .map(|&overall| {
            let mut input = node("a", overall);
            input.history = history;
            let d = decide_one(&input, p, NOW);
            history = Some(d.history);
            d
        })
        .collect()
}

fn allowed(ds: &[Decision]) -> Vec<bool> {
    ds.iter().map(|d| d.allowed).collect()
}

#[test]
fn a_denied_node_is_readmitted_after_k_passes() {
    let denied = History {
        allowed: false,
        passing_streak: 0,
        benchmarked: true,
    };
    let ds = run(&policy(3), denied, &[0.9, 0.9, 0.9, 0.9]);
    assert_eq!(allowed(&ds), [false, false, true, true]);
    assert_eq!(
        ds[0].reason,
        "passing, readmitted after 3 consecutive passing evaluations (1 so far)"
    );
    assert_eq!(
        ds[1].reason,
        "passing, readmitted after 3 consecutive passing evaluations (2 so far)"
    );
    assert_eq!(
        ds[2].reason,
        "overall score 0.90 meets the threshold 0.70; \
         readmitted after 3 consecutive passing evaluations"
    );
    assert_eq!(ds[3].reason, "overall score 0.90 meets the threshold 0.70");
    let streaks: Vec<u32> = ds.iter().map(|d| d.history.passing_streak).collect();
    assert_eq!(streaks, [1, 2, 3, 4]);
    assert!(ds.iter().all(|d| d.passing));
}

#[test]
fn a_failure_resets_the_streak() {
    let denied = History {
        allowed: false,
        passing_streak: 0,
        benchmarked: true,
    };
    let ds = run(&policy(3), denied, &[0.9, 0.9, 0.4, 0.9, 0.9, 0.9]);
    assert_eq!(allowed(&ds), [false, false, false, false, false, true]);
    assert_eq!(ds[2].history.passing_streak, 0);
}

#[test]
fn an_allowed_node_stays_while_passing_and_leaves_at_the_first_failure() {
    let ok = History {
        allowed: true,
        passing_streak: 7,
        benchmarked: true,
    };
    let ds = run(&policy(3), ok, &[0.9, 0.8, 0.5, 0.9]);
    assert_eq!(allowed(&ds), [true, true, false, false]);
}

#[test]
fn readmit_after_zero_or_one_readmits_at_once() {
    let denied = History {
        allowed: false,
        passing_streak: 0,
        benchmarked: true,
    };
    for k in [0, 1] {
        let ds = run(&policy(k), denied, &[0.9]);
        assert!(ds[0].allowed, "readmit_after {k}");
        assert!(ds[0]
            .reason
            .ends_with("readmitted after 1 consecutive passing evaluation"));
    }
}

#[test]
fn a_new_node_is_admitted_as_soon_as_it_passes() {
    let p = policy(3);
    assert!(decide_one(&node("a", 0.9), &p, NOW).allowed);

    // Evaluations before its first benchmark do not make it wait either.
    let mut input = node("a", 0.9);
    input.latest = None;
    let first = decide_one(&input, &p, NOW);
    assert!(!first.allowed);
    input.latest = Some(bench(0.9, NOW));
    input.history = Some(first.history);
    let second = decide_one(&input, &p, NOW);
    assert!(second.allowed);
    assert!(second.history.benchmarked);

    // But once a benchmark has failed, the node waits like any denied node.
    let ds = run(&p, History::default(), &[0.4, 0.9, 0.9, 0.9]);
    assert_eq!(allowed(&ds), [false, false, false, true]);
}

#[test]
fn newly_failing_lists_allowed_nodes_that_would_now_be_denied() {
    let p = Policy::default();
    let before = decide(
        &[
            node("a", 0.9),
            node("b", 0.9),
            node("c", 0.3),
            node("d", 0.9),
        ],
        &p,
        NOW,
    );
    let mut inputs = vec![
        node("a", 0.9),
        node("b", 0.2),
        node("c", 0.2),
        node("d", 0.9),
        node("e", 0.1),
    ];
    for (input, d) in inputs.iter_mut().zip(&before) {
        input.history = Some(d.history);
    }
    assert_eq!(newly_failing(&before, &inputs, &p, NOW), ["b"]);

    // Pins: Allow shields a failing node, Deny lists a passing one.
    inputs[1].pin = Some(Pin::Allow);
    inputs[3].pin = Some(Pin::Deny);
    assert_eq!(newly_failing(&before, &inputs, &p, NOW), ["d"]);

    // A benchmark that went stale counts as failing.
    inputs[3].pin = None;
    assert_eq!(
        newly_failing(&before, &inputs, &p, NOW + 200_000),
        ["a", "d"]
    );
}

/// #17: a node removed by the admin while allowed is cut off by an immediate rotation, like
/// a deny, instead of staying in every cached bundle until the next scheduled epoch.
#[test]
fn a_removed_allowed_node_counts_as_newly_failing_17() {
    let p = Policy::default();
    let before = decide(&[node("a", 0.9), node("b", 0.9), node("c", 0.3)], &p, NOW);
    let mut inputs = vec![node("a", 0.9)];
    inputs[0].history = Some(before[0].history);
    // b was allowed and is gone; c was denied and is gone (nothing to cut off).
    assert_eq!(newly_failing(&before, &inputs, &p, NOW), ["b"]);
}

#[test]
fn random_inputs_decide_deterministically_and_soundly() {
    let mut rng = fastrand::Rng::with_seed(42);
    let pick = |rng: &mut fastrand::Rng| match rng.u8(..12) {
        0 => f64::NAN,
        1 => 0.7,
        2 => 1.0,
        _ => rng.f64(),
    };
    for _ in 0..2_000 {
        let mut p = policy(rng.u32(..5));
        p.max_age_ms = rng.u64(1..200_000);
        if rng.bool() {
            p.minimums.honesty = Some(rng.f64());
        }
        let input = NodeInput {
            node_id: "n".into(),
            latest: rng.u8(..8).ne(&0).then(|| BenchmarkRecord {
                scores: Scores {
                    overall: pick(&mut rng),
                    refusal: pick(&mut rng),
                    honesty: pick(&mut rng),
                    policy: pick(&mut rng),
                },
                ..bench(0.0, NOW - rng.u64(..300_000))
            }),
            pin: [None, Some(Pin::Allow), Some(Pin::Deny)][rng.usize(..3)],
            history: rng.bool().then(|| History {
                allowed: rng.bool(),
                passing_streak: rng.u32(..6),
                benchmarked: rng.bool(),
            }),
            statements: Vec::new(),
        };
        let d = decide_one(&input, &p, NOW);
        // Compared as text: a NaN score in the evidence is never equal to itself.
        let again = decide_one(&input, &p, NOW);
        assert_eq!(format!("{d:?}"), format!("{again:?}"), "deterministic");
        assert_eq!(d.history.allowed, d.allowed);
        if d.allowed {
            assert!(
                input.pin == Some(Pin::Allow) || d.passing,
                "{input:?} {d:?}"
            );
        }
        if input.pin == Some(Pin::Deny) {
            assert!(!d.allowed);
        }
        if d.passing {
            let s = input.latest.as_ref().map(|b| b.scores);
            assert!(s.is_some_and(|s| s.named().iter().all(|(_, v)| !v.is_nan())));
            assert!(s.is_some_and(|s| s.overall >= p.threshold));
        } else {
            assert_eq!(d.history.passing_streak, 0);
        }
        assert!(!d.reason.is_empty());
    }
}
