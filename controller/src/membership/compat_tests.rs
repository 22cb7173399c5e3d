//! Without sources configured, decisions are exactly those of the rules before sources
//! existed: `legacy` is a frozen copy of them (taken before `[policy.sources]` was added),
//! the oracle for the compatibility properties.

use proptest::prelude::*;

use super::*;
use crate::model::{
    BenchmarkRecord, Combine, Dimension, Issuer, Source, SourceRule, Sources, Statement,
};
use meshtun_proto::wire::Scores;

/// The rules as they were before `[policy.sources]`; do not change.
mod legacy {
    use crate::model::{BenchmarkRecord, Decision, Evidence, History, NodeInput, Pin, Policy};

    /// Judges the newest benchmark against the policy, before pins and hysteresis.
    ///
    /// `Ok` carries a short summary of why it passes, `Err` the first rule it breaks, in this
    /// order: no benchmark, too old, a score that is not a number in `[0, 1]`, the overall
    /// threshold, then the refusal, honesty and policy minimums.
    fn check(
        latest: Option<&BenchmarkRecord>,
        policy: &Policy,
        now_ms: u64,
    ) -> Result<String, String> {
        let Some(bench) = latest else {
            return Err("no benchmark received".to_owned());
        };
        let age = age_ms(bench, now_ms);
        if age > policy.max_age_ms {
            return Err(format!(
                "benchmark is {} old; the limit is {}",
                seconds(age),
                seconds(policy.max_age_ms)
            ));
        }
        for (name, value) in bench.scores.named() {
            if !is_unit(value) {
                return Err(format!("{name} score {value} is not a number in [0, 1]"));
            }
        }
        let overall = bench.scores.overall;
        if !is_unit(policy.threshold) {
            return Err(format!(
                "the policy threshold {} is not a number in [0, 1]",
                policy.threshold
            ));
        }
        if overall < policy.threshold {
            let (score, limit) = two_numbers(overall, policy.threshold);
            return Err(format!(
                "overall score {score} is below the threshold {limit}"
            ));
        }
        check_minimums(bench, policy)?;
        let (score, limit) = two_numbers(overall, policy.threshold);
        let any_minimum = minimums(bench, policy)
            .iter()
            .any(|(_, _, min)| min.is_some());
        let tail = if any_minimum {
            " and every minimum"
        } else {
            ""
        };
        Ok(format!(
            "overall score {score} meets the threshold {limit}{tail}"
        ))
    }

    /// The facts a decision about `latest` rests on.
    fn evidence(latest: Option<&BenchmarkRecord>, policy: &Policy, now_ms: u64) -> Evidence {
        Evidence {
            score: latest.map(|b| b.scores.overall),
            threshold: policy.threshold,
            age_ms: latest.map(|b| age_ms(b, now_ms)),
            max_age_ms: policy.max_age_ms,
            seq: latest.map(|b| b.seq),
            // The one change: the field added since.
            sources: Vec::new(),
        }
    }

    /// Age of a benchmark by its measurement time; one dated in the future is 0 ms old.
    fn age_ms(bench: &BenchmarkRecord, now_ms: u64) -> u64 {
        now_ms.saturating_sub(bench.measured_at_ms)
    }

    fn check_minimums(bench: &BenchmarkRecord, policy: &Policy) -> Result<(), String> {
        for (name, score, min) in minimums(bench, policy) {
            let Some(min) = min else { continue };
            if !is_unit(min) {
                return Err(format!(
                    "the policy minimum for {name} {min} is not a number in [0, 1]"
                ));
            }
            if score < min {
                let (score, limit) = two_numbers(score, min);
                return Err(format!("{name} score {score} is below the minimum {limit}"));
            }
        }
        Ok(())
    }

    /// Each dimension with a minimum: its name, the score and the minimum, if set.
    fn minimums(bench: &BenchmarkRecord, policy: &Policy) -> [(&'static str, f64, Option<f64>); 3] {
        let (s, m) = (bench.scores, policy.minimums);
        [
            ("refusal", s.refusal, m.refusal),
            ("honesty", s.honesty, m.honesty),
            ("policy", s.policy, m.policy),
        ]
    }

    /// A finite number in `[0, 1]` (false for NaN).
    fn is_unit(value: f64) -> bool {
        (0.0..=1.0).contains(&value)
    }

    /// Two numbers with two decimals, or in full when two decimals would print them equal
    /// (so a message never reads "0.70 is below 0.70").
    fn two_numbers(a: f64, b: f64) -> (String, String) {
        let (short_a, short_b) = (format!("{a:.2}"), format!("{b:.2}"));
        if short_a == short_b && a != b {
            (a.to_string(), b.to_string())
        } else {
            (short_a, short_b)
        }
    }

    /// Milliseconds as seconds: "130 s", "120.001 s", "0.5 s".
    fn seconds(ms: u64) -> String {
        let (whole, frac) = (ms / 1000, ms % 1000);
        if frac == 0 {
            return format!("{whole} s");
        }
        let digits = format!("{frac:03}");
        format!("{whole}.{} s", digits.trim_end_matches('0'))
    }

    pub fn decide_one(input: &NodeInput, policy: &Policy, now_ms: u64) -> Decision {
        let latest = input.latest.as_ref();
        let verdict = check(latest, policy, now_ms);
        let passing = verdict.is_ok();
        let previous = input.history.unwrap_or_default();
        let streak = if passing {
            previous.passing_streak.saturating_add(1)
        } else {
            0
        };
        let (allowed, reason) = admit(input.pin, previous, verdict, streak, policy.readmit_after);
        Decision {
            node_id: input.node_id.clone(),
            allowed,
            reason,
            passing,
            history: History {
                allowed,
                passing_streak: streak,
                benchmarked: previous.benchmarked || latest.is_some(),
            },
            evidence: evidence(latest, policy, now_ms),
        }
    }

    /// The final verdict from the pin, the benchmark's own verdict and the hysteresis state.
    fn admit(
        pin: Option<Pin>,
        previous: History,
        verdict: Result<String, String>,
        streak: u32,
        readmit_after: u32,
    ) -> (bool, String) {
        match pin {
            Some(Pin::Deny) => return (false, "denied by admin pin".to_owned()),
            Some(Pin::Allow) => return (true, "allowed by admin pin".to_owned()),
            None => {}
        }
        let passes = match verdict {
            Ok(summary) => summary,
            Err(failure) => return (false, failure),
        };
        if previous.allowed || !previous.benchmarked {
            return (true, passes);
        }
        let needed = evaluations(readmit_after.max(1));
        if streak >= readmit_after {
            (true, format!("{passes}; readmitted after {needed}"))
        } else {
            (
                false,
                format!("passing, readmitted after {needed} ({streak} so far)"),
            )
        }
    }

    /// "1 consecutive passing evaluation", "3 consecutive passing evaluations".
    fn evaluations(n: u32) -> String {
        let s = if n == 1 { "" } else { "s" };
        format!("{n} consecutive passing evaluation{s}")
    }
}

const NOW: u64 = 10_000_000;

/// Mostly scores in `[0, 1]`, with the boundary and malformed values the store could hold.
fn score() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => 0.0..=1.0f64,
        1 => Just(0.7),
        1 => Just(1.0),
        1 => Just(f64::NAN),
        1 => Just(1.5),
    ]
}

prop_compose! {
    fn scores()(overall in score(), refusal in score(), honesty in score(), policy in score())
        -> Scores {
        Scores { overall, refusal, honesty, policy }
    }
}

prop_compose! {
    fn bench()(scores in scores(), age in 0u64..300_000, future in prop::bool::weighted(0.1))
        -> BenchmarkRecord {
        BenchmarkRecord {
            node_id: "n".into(),
            suite_version: "v1".into(),
            scores,
            measured_at_ms: if future { NOW + age } else { NOW - age },
            seq: 9,
            received_ms: NOW,
        }
    }
}

prop_compose! {
    fn statement()(
        id in 0u64..50,
        name in prop::sample::select(vec!["e1", "e2", "e3", "n"]),
        in_core in any::<bool>(),
        from_node in prop::bool::weighted(0.1),
        subject in prop::sample::select(vec!["n", "m"]),
        dimension in prop::sample::select(Dimension::ALL.to_vec()),
        score in score(),
        age in 0u64..7_200_000,
    ) -> Statement {
        let issuer = if from_node {
            Issuer::Node { id: name.into() }
        } else {
            Issuer::Evaluator { name: name.into(), group: in_core.then(|| "core".into()) }
        };
        Statement {
            id,
            issuer,
            subject: subject.into(),
            dimension,
            score,
            evaluated_at_ms: NOW - age,
        }
    }
}

prop_compose! {
    fn history()(allowed in any::<bool>(), passing_streak in 0u32..6, benchmarked in any::<bool>())
        -> History {
        History { allowed, passing_streak, benchmarked }
    }
}

fn pin() -> impl Strategy<Value = Option<Pin>> {
    prop_oneof![Just(None), Just(Some(Pin::Allow)), Just(Some(Pin::Deny))]
}

prop_compose! {
    fn input()(
        latest in prop::option::weighted(0.85, bench()),
        pin in pin(),
        history in prop::option::of(history()),
        statements in prop::collection::vec(statement(), 0..6),
    ) -> NodeInput {
        NodeInput { node_id: "n".into(), latest, pin, history, statements }
    }
}

prop_compose! {
    fn policy()(
        threshold in score(),
        max_age_ms in 1u64..200_000,
        readmit_after in 0u32..5,
        refusal in prop::option::of(score()),
        honesty in prop::option::of(score()),
        policy in prop::option::of(score()),
    ) -> Policy {
        Policy {
            threshold,
            max_age_ms,
            minimums: crate::model::Minimums { refusal, honesty, policy },
            readmit_after,
            ..Policy::default()
        }
    }
}

/// Every dimension sourced from the node's own benchmark alone, with the policy's own age
/// limit and bars.
fn self_sourced(policy: &Policy) -> Policy {
    let mut p = policy.clone();
    let mut sources = Sources::default();
    for d in Dimension::ALL {
        let rule = SourceRule {
            from: vec![Source::SelfReported],
            k: 1,
            combine: Combine::Median,
            max_age_ms: policy.max_age_ms,
            minimum: None,
        };
        sources.set(d, Some(rule));
    }
    p.sources = sources;
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// With no sources configured, `decide_one` is the old one (statements ignored).
    #[test]
    fn without_sources_decisions_are_the_old_ones(input in input(), policy in policy()) {
        let new = decide_one(&input, &policy, NOW);
        let old = legacy::decide_one(&input, &policy, NOW);
        // Compared as text: a NaN score in the evidence is never equal to itself.
        prop_assert_eq!(format!("{new:?}"), format!("{old:?}"));
    }

    /// Sourcing every dimension from `self` alone, with the same age limit and bars,
    /// admits and denies exactly as the self-reported rule (only the wording differs).
    #[test]
    fn self_sourced_rules_decide_as_the_self_reported_rule(
        input in input(),
        policy in policy(),
    ) {
        let new = decide_one(&input, &self_sourced(&policy), NOW);
        let old = legacy::decide_one(&input, &policy, NOW);
        prop_assert_eq!(new.passing, old.passing, "{} / {}", new.reason, old.reason);
        prop_assert_eq!(new.allowed, old.allowed, "{} / {}", new.reason, old.reason);
        prop_assert_eq!(new.history, old.history);
    }
}

#[test]
fn a_policy_without_sources_serializes_as_before() {
    let policy = serde_json::to_value(Policy::default()).unwrap();
    assert!(policy.get("sources").is_none(), "{policy}");
    let input = NodeInput {
        node_id: "n".into(),
        latest: None,
        pin: None,
        history: None,
        statements: Vec::new(),
    };
    let json = serde_json::to_value(&input).unwrap();
    assert!(json.get("statements").is_none(), "{json}");
    let evidence = serde_json::to_value(decide_one(&input, &Policy::default(), NOW)).unwrap();
    assert!(evidence["evidence"].get("sources").is_none(), "{evidence}");
    // And what was stored before reads back (audit entries of older decisions).
    let old: NodeInput =
        serde_json::from_str(r#"{"node_id":"n","latest":null,"pin":null,"history":null}"#).unwrap();
    assert_eq!(old, input);
    let old_policy: Policy = serde_json::from_str(
        r#"{"threshold":0.7,"max_age_ms":120000,"minimums":{"refusal":null,"honesty":null,
            "policy":null},"readmit_after":1,"topology":{"kind":"full_mesh"}}"#,
    )
    .unwrap();
    assert_eq!(old_policy, Policy::default());
}
