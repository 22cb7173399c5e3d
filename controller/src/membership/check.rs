//! Whether one benchmark passes the policy on its own, and the facts it was judged on.

use crate::model::{BenchmarkRecord, Evidence, Policy};

/// Judges the newest benchmark against the policy, before pins and hysteresis.
///
/// `Ok` carries a short summary of why it passes, `Err` the first rule it breaks, in this
/// order: no benchmark, too old, a score that is not a number in `[0, 1]`, the overall
/// threshold, then the refusal, honesty and policy minimums.
pub(super) fn check(
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
pub(super) fn evidence(latest: Option<&BenchmarkRecord>, policy: &Policy, now_ms: u64) -> Evidence {
    Evidence {
        score: latest.map(|b| b.scores.overall),
        threshold: policy.threshold,
        age_ms: latest.map(|b| age_ms(b, now_ms)),
        max_age_ms: policy.max_age_ms,
        seq: latest.map(|b| b.seq),
        sources: Vec::new(),
    }
}

/// Age of a benchmark by its measurement time; one dated in the future is 0 ms old.
pub(super) fn age_ms(bench: &BenchmarkRecord, now_ms: u64) -> u64 {
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
pub(super) fn is_unit(value: f64) -> bool {
    (0.0..=1.0).contains(&value)
}

/// Two numbers with two decimals, or in full when two decimals would print them equal
/// (so a message never reads "0.70 is below 0.70").
pub(super) fn two_numbers(a: f64, b: f64) -> (String, String) {
    let (short_a, short_b) = (format!("{a:.2}"), format!("{b:.2}"));
    if short_a == short_b && a != b {
        (a.to_string(), b.to_string())
    } else {
        (short_a, short_b)
    }
}

/// Milliseconds as seconds: "130 s", "120.001 s", "0.5 s".
pub(super) fn seconds(ms: u64) -> String {
    let (whole, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        return format!("{whole} s");
    }
    let digits = format!("{frac:03}");
    format!("{whole}.{} s", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_print_without_needless_digits() {
        assert_eq!(seconds(130_000), "130 s");
        assert_eq!(seconds(120_001), "120.001 s");
        assert_eq!(seconds(500), "0.5 s");
        assert_eq!(seconds(0), "0 s");
    }

    #[test]
    fn close_numbers_are_printed_so_that_they_differ() {
        assert_eq!(two_numbers(0.4, 0.7), ("0.40".into(), "0.70".into()));
        assert_eq!(two_numbers(0.6999, 0.7), ("0.6999".into(), "0.7".into()));
        assert_eq!(two_numbers(0.7, 0.7), ("0.70".into(), "0.70".into()));
    }

    #[test]
    fn only_finite_numbers_in_the_unit_interval_count() {
        for ok in [0.0, 0.5, 1.0] {
            assert!(is_unit(ok));
        }
        for bad in [f64::NAN, f64::INFINITY, -0.01, 1.01] {
            assert!(!is_unit(bad), "{bad}");
        }
    }
}
