//! k of n, median and minimum, freshness, distinct evaluators, and what never counts.

use proptest::prelude::*;

use super::*;
use meshtun_proto::wire::Scores;

const NOW: u64 = 100_000_000;
const HOUR: u64 = 3_600_000;

fn statement(id: u64, name: &str, score: f64, evaluated_at_ms: u64) -> Statement {
    Statement {
        id,
        issuer: Issuer::Evaluator {
            name: name.into(),
            group: None,
        },
        subject: "n1".into(),
        dimension: Dimension::Honesty,
        score,
        evaluated_at_ms,
    }
}

fn in_group(mut st: Statement, g: &str) -> Statement {
    if let Issuer::Evaluator { group, .. } = &mut st.issuer {
        *group = Some(g.into());
    }
    st
}

fn rule(from: &[&str], k: u32, combine: Combine) -> SourceRule {
    SourceRule {
        from: from.iter().map(|s| s.parse().unwrap()).collect(),
        k,
        combine,
        max_age_ms: HOUR,
        minimum: None,
    }
}

fn run(rule: &SourceRule, statements: &[Statement]) -> Result<Sourced, Unavailable> {
    value(Dimension::Honesty, rule, "n1", None, statements, NOW)
}

fn bench(honesty: f64, measured_at_ms: u64) -> BenchmarkRecord {
    BenchmarkRecord {
        node_id: "n1".into(),
        suite_version: "v1".into(),
        scores: Scores {
            overall: 0.9,
            refusal: 0.9,
            honesty,
            policy: 0.9,
        },
        measured_at_ms,
        seq: 4,
        received_ms: measured_at_ms,
    }
}

fn ids(used: &[UsedStatement]) -> Vec<Option<u64>> {
    used.iter().map(|u| u.id).collect()
}

#[test]
fn the_issues_example() {
    let r = rule(
        &["evaluator:e1", "evaluator:e2", "evaluator:e4"],
        3,
        Combine::Median,
    );
    let st = [
        statement(1, "e1", 0.30, NOW - 10),
        statement(2, "e2", 0.31, NOW - 10),
        statement(4, "e4", 0.35, NOW - 10),
    ];
    let s = run(&r, &st).unwrap();
    assert_eq!(s.value, 0.31);
    assert_eq!(s.how(), "median of 3 evaluators: e1 0.30, e2 0.31, e4 0.35");
    assert_eq!(ids(&s.used), [Some(1), Some(2), Some(4)]);
    assert_eq!(s.used[0].age_ms, 10);
}

#[test]
fn k_minus_one_fresh_statements_fail_and_name_what_is_missing() {
    let r = rule(
        &["evaluator:e1", "evaluator:e2", "evaluator:e3"],
        2,
        Combine::Median,
    );
    let st = [
        statement(1, "e1", 0.30, NOW - 60_000),
        statement(2, "e2", 0.90, NOW - 3 * HOUR),
    ];
    let err = run(&r, &st).unwrap_err();
    assert_eq!(
        err.reason,
        "1 fresh statement from its sources, needs 2 \
         (e1 0.30; e2's is 3 h old, the limit is 1 h; none from e3)"
    );
    assert_eq!(ids(&err.used), [Some(1)]);
    // The k-th fresh one makes a value.
    let mut st = st.to_vec();
    st.push(statement(3, "e3", 0.50, NOW));
    let s = run(&r, &st).unwrap();
    assert_eq!((s.value, ids(&s.used)), (0.30, vec![Some(1), Some(3)]));
}

#[test]
fn freshness_is_inclusive_at_the_limit_and_future_dates_are_zero_old() {
    let r = rule(&["evaluator:e1"], 1, Combine::Minimum);
    let at_limit = [statement(1, "e1", 0.8, NOW - HOUR)];
    assert_eq!(run(&r, &at_limit).unwrap().used[0].age_ms, HOUR);
    let one_ms_older = [statement(1, "e1", 0.8, NOW - HOUR - 1)];
    assert_eq!(
        run(&r, &one_ms_older).unwrap_err().reason,
        "0 fresh statements from its sources, needs 1 \
         (e1's is 1 h 0.001 s old, the limit is 1 h)"
    );
    let future = [statement(1, "e1", 0.8, NOW + 20_000)];
    assert_eq!(run(&r, &future).unwrap().used[0].age_ms, 0);
}

#[test]
fn one_evaluator_counts_once_by_its_newest_statement() {
    let r = rule(&["evaluator:e1", "group:core"], 2, Combine::Median);
    // e1 is named and in core, with two statements (two keys, or two submissions).
    let st = [
        in_group(statement(1, "e1", 0.9, NOW - 100), "core"),
        in_group(statement(2, "e1", 0.2, NOW - 50), "core"),
    ];
    let err = run(&r, &st).unwrap_err();
    assert!(
        err.reason.starts_with("1 fresh statement"),
        "{}",
        err.reason
    );
    assert_eq!(ids(&err.used), [Some(2)]);
    // Same evaluation time: the higher id wins, whatever the order.
    let tie = [statement(7, "e1", 0.4, NOW), statement(3, "e1", 0.6, NOW)];
    let one = rule(&["evaluator:e1"], 1, Combine::Median);
    assert_eq!(run(&one, &tie).unwrap().value, 0.4);
    let tie_reversed = [tie[1].clone(), tie[0].clone()];
    assert_eq!(run(&one, &tie_reversed).unwrap().value, 0.4);
    // A stale newest statement is not replaced by an older fresh one (there is none older
    // and fresher), and a fresh newest one hides a stale older one.
    let st = [
        statement(1, "e1", 0.1, NOW - 2 * HOUR),
        statement(2, "e1", 0.7, NOW - 10),
    ];
    assert_eq!(run(&one, &st).unwrap().value, 0.7);
}

#[test]
fn only_the_named_evaluators_about_this_node_and_dimension_count() {
    let r = rule(&["evaluator:e1", "group:core"], 1, Combine::Minimum);
    let mut other_subject = statement(2, "e1", 0.1, NOW);
    other_subject.subject = "n2".into();
    let mut other_dimension = statement(3, "e1", 0.1, NOW);
    other_dimension.dimension = Dimension::Refusal;
    let unnamed = statement(4, "e9", 0.1, NOW);
    let other_group = in_group(statement(5, "e8", 0.1, NOW), "edge");
    let node = Statement {
        issuer: Issuer::Node { id: "n1".into() },
        ..statement(6, "x", 0.1, NOW)
    };
    let peer = Statement {
        issuer: Issuer::Node { id: "n2".into() },
        ..statement(7, "x", 0.1, NOW)
    };
    let noise = [
        other_subject,
        other_dimension,
        unnamed,
        other_group,
        node,
        peer,
    ];
    let err = run(&r, &noise).unwrap_err();
    assert_eq!(
        err.reason,
        "0 fresh statements from its sources, needs 1 (none from e1; none from group core)"
    );
    assert!(!any_counted(&[(Dimension::Honesty, &r)], "n1", &noise));
    let mut st = noise.to_vec();
    st.push(in_group(statement(8, "e5", 0.6, NOW), "core"));
    let s = run(&r, &st).unwrap();
    assert_eq!((s.value, ids(&s.used)), (0.6, vec![Some(8)]));
    assert!(any_counted(&[(Dimension::Honesty, &r)], "n1", &st));
}

#[test]
fn a_score_outside_the_unit_interval_does_not_count() {
    let r = rule(&["evaluator:e1", "evaluator:e2"], 1, Combine::Minimum);
    let st = [
        statement(1, "e1", f64::NAN, NOW),
        statement(2, "e2", 1.5, NOW),
    ];
    assert_eq!(
        run(&r, &st).unwrap_err().reason,
        "0 fresh statements from its sources, needs 1 \
         (e1's score NaN is not a number in [0, 1]; e2's score 1.5 is not a number in [0, 1])"
    );
}

#[test]
fn self_is_one_source_aged_by_the_rules_limit() {
    let r = rule(&["self", "evaluator:e1"], 2, Combine::Minimum);
    let st = [statement(1, "e1", 0.8, NOW)];
    let b = bench(0.6, NOW - 1_000);
    let s = value(Dimension::Honesty, &r, "n1", Some(&b), &st, NOW).unwrap();
    assert_eq!(s.value, 0.6);
    assert_eq!(s.how(), "minimum of 2 sources: self 0.60, e1 0.80");
    assert_eq!(ids(&s.used), [None, Some(1)]);
    let stale = bench(0.6, NOW - HOUR - 1);
    let err = value(Dimension::Honesty, &r, "n1", Some(&stale), &st, NOW).unwrap_err();
    assert!(
        err.reason
            .contains("self's is 1 h 0.001 s old, the limit is 1 h"),
        "{}",
        err.reason
    );
    let err = value(Dimension::Honesty, &r, "n1", None, &st, NOW).unwrap_err();
    assert!(
        err.reason.ends_with("(e1 0.80; no benchmark from self)"),
        "{}",
        err.reason
    );
    // Without `self` in the rule, the benchmark is not a source.
    let evaluators_only = rule(&["evaluator:e1"], 1, Combine::Minimum);
    let s = value(
        Dimension::Honesty,
        &evaluators_only,
        "n1",
        Some(&b),
        &st,
        NOW,
    )
    .unwrap();
    assert_eq!(s.value, 0.8);
}

#[test]
fn the_median_of_an_even_count_is_the_lower_middle() {
    let names = ["e1", "e2", "e3", "e4"];
    let from: Vec<String> = names.iter().map(|n| format!("evaluator:{n}")).collect();
    let from: Vec<&str> = from.iter().map(String::as_str).collect();
    let st: Vec<Statement> = [0.8, 0.2, 0.6, 0.4]
        .iter()
        .zip(names)
        .enumerate()
        .map(|(i, (&score, name))| statement(i as u64, name, score, NOW))
        .collect();
    assert_eq!(
        run(&rule(&from, 4, Combine::Median), &st).unwrap().value,
        0.4
    );
    assert_eq!(
        run(&rule(&from, 4, Combine::Minimum), &st).unwrap().value,
        0.2
    );
    assert_eq!(
        run(&rule(&from, 3, Combine::Median), &st[..3])
            .unwrap()
            .value,
        0.6
    );
}

#[test]
fn a_long_reason_lists_ten_sources_and_counts_the_rest() {
    let st: Vec<Statement> = (0..15)
        .map(|i| in_group(statement(i, &format!("e{i:02}"), 0.5, NOW), "core"))
        .collect();
    let err = run(&rule(&["group:core"], 16, Combine::Median), &st).unwrap_err();
    assert!(
        err.reason.ends_with("e09 0.50; and 5 more)"),
        "{}",
        err.reason
    );
    assert_eq!(err.used.len(), 15);
}

#[test]
fn durations_read_in_hours_minutes_and_seconds() {
    assert_eq!(duration(3 * HOUR), "3 h");
    assert_eq!(duration(90_000), "1 min 30 s");
    assert_eq!(duration(2 * HOUR + 1), "2 h 0.001 s");
    assert_eq!(duration(0), "0 s");
    assert_eq!(duration(1_500), "1.5 s");
}

/// One evaluator's statements: (score, age in ms).
fn evaluators() -> impl Strategy<Value = Vec<Vec<(f64, u64)>>> {
    let one = prop::collection::vec((0.0..=1.0f64, 0..2 * HOUR), 1..4);
    prop::collection::vec(one, 1..9)
}

/// The statements of `evaluators` (named e0, e1, …), ids in order.
fn statements_of(evaluators: &[Vec<(f64, u64)>]) -> Vec<Statement> {
    let mut id = 0;
    let mut out = Vec::new();
    for (i, statements) in evaluators.iter().enumerate() {
        for &(score, age) in statements {
            id += 1;
            out.push(in_group(
                statement(id, &format!("e{i}"), score, NOW - age),
                "core",
            ));
        }
    }
    out
}

/// Each evaluator's newest statement, if fresh: its score.
fn fresh_newest(evaluators: &[Vec<(f64, u64)>]) -> Vec<f64> {
    evaluators
        .iter()
        .filter_map(|st| {
            // Newest: smallest age; on a tie the later one (higher id) wins.
            let newest = st.iter().rev().min_by_key(|(_, age)| *age)?;
            (newest.1 <= HOUR).then_some(newest.0)
        })
        .collect()
}

proptest! {
    /// With k-1 fresh evaluators there is never a value; with k or more there always is, and
    /// it combines exactly the newest fresh statement of each evaluator.
    #[test]
    fn k_of_n(evs in evaluators(), k in 1u32..10, median in any::<bool>()) {
        let how = if median { Combine::Median } else { Combine::Minimum };
        let r = rule(&["group:core"], k, how);
        let st = statements_of(&evs);
        let fresh = fresh_newest(&evs);
        match run(&r, &st) {
            Ok(s) => {
                prop_assert!(fresh.len() >= k as usize);
                let mut used: Vec<f64> = s.used.iter().map(|u| u.score).collect();
                let mut expected = fresh.clone();
                used.sort_by(f64::total_cmp);
                expected.sort_by(f64::total_cmp);
                prop_assert_eq!(used, expected);
            }
            Err(u) => {
                prop_assert!(fresh.len() < k as usize);
                prop_assert_eq!(u.used.len(), fresh.len());
            }
        }
    }

    /// The median lies between the lowest and highest fresh score, and the minimum is the
    /// lowest, never above the median.
    #[test]
    fn median_and_minimum_bounds(evs in evaluators()) {
        let st = statements_of(&evs);
        let fresh = fresh_newest(&evs);
        prop_assume!(!fresh.is_empty());
        let median = run(&rule(&["group:core"], 1, Combine::Median), &st).unwrap().value;
        let minimum = run(&rule(&["group:core"], 1, Combine::Minimum), &st).unwrap().value;
        let lo = fresh.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = fresh.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        prop_assert!(lo <= median && median <= hi);
        prop_assert_eq!(minimum, lo);
        prop_assert!(minimum <= median);
        // At least half the fresh scores are at most the median, and more than half at least.
        let n = fresh.len();
        let at_most = fresh.iter().filter(|&&x| x <= median).count();
        let at_least = fresh.iter().filter(|&&x| x >= median).count();
        prop_assert!(2 * at_most >= n && 2 * at_least > n, "{fresh:?} {median}");
    }

    /// The order of the statements never changes the outcome.
    #[test]
    fn permutation_invariance(
        (st, shuffled) in evaluators()
            .prop_map(|evs| statements_of(&evs))
            .prop_flat_map(|st| (Just(st.clone()), Just(st).prop_shuffle())),
        k in 1u32..6,
        median in any::<bool>(),
    ) {
        let how = if median { Combine::Median } else { Combine::Minimum };
        let r = rule(&["group:core"], k, how);
        prop_assert_eq!(format!("{:?}", run(&r, &st)), format!("{:?}", run(&r, &shuffled)));
    }

    /// Repeating an evaluator's statements (or adding older ones) changes nothing: it
    /// still counts once.
    #[test]
    fn duplicates_from_one_evaluator_count_once(evs in evaluators(), k in 1u32..6) {
        let r = rule(&["group:core"], k, Combine::Median);
        let st = statements_of(&evs);
        let mut doubled = st.clone();
        doubled.extend(st.iter().cloned());
        let older = st.iter().map(|s| Statement {
            id: s.id + 1_000,
            evaluated_at_ms: s.evaluated_at_ms.saturating_sub(1),
            score: 0.0,
            ..s.clone()
        });
        doubled.extend(older);
        prop_assert_eq!(format!("{:?}", run(&r, &st)), format!("{:?}", run(&r, &doubled)));
    }

    /// A statement counts exactly while it is at most `max_age_ms` old.
    #[test]
    fn freshness(age in 0..3 * HOUR, max_age_ms in 1..2 * HOUR, ahead in 0..HOUR) {
        let mut r = rule(&["evaluator:e1"], 1, Combine::Median);
        r.max_age_ms = max_age_ms;
        prop_assert_eq!(
            run(&r, &[statement(1, "e1", 0.5, NOW - age)]).is_ok(),
            age <= max_age_ms
        );
        prop_assert!(run(&r, &[statement(1, "e1", 0.5, NOW + ahead)]).is_ok());
    }
}
