//! Whether a node passes a policy that sources some dimensions from evaluators
//! ([`Policy::sources`] not empty), and the facts it was judged on.
//!
//! # Rules
//!
//! Each dimension has a value and a bar:
//! - A dimension without a source rule keeps the self-reported rule: its value is the
//!   node's benchmark score, its bar the threshold (overall) or its minimum, if any.
//! - A sourced dimension's value comes from [`sources::value`], which replaces the
//!   self-reported score for that dimension. A peer dimension (reachable, latency,
//!   handshake) has no self-reported score: it is judged only from peer observations, and
//!   only once `k` peers have fresh ones; with fewer it is not judged and passes (a node
//!   nobody peers with yet, a mesh starting, or one denied long enough that its peers'
//!   observations have aged out: it is then readmitted, observed again, and judged). Its bar is the rule's `minimum`, or else the
//!   policy's own bar for that dimension (the threshold for overall, the dimension's
//!   minimum otherwise), or none: then any value passes once `k` sources are fresh.
//!
//! The node's own benchmark is needed only when a dimension without a rule has a bar (the
//! overall threshold, as long as overall is not sourced): then, as before, a missing, too
//! old or malformed benchmark fails first (only the scores of dimensions without a rule are
//! checked for being numbers in `[0, 1]`). Then the dimensions are judged in
//! [`Dimension::ALL`] order, and the first that fails gives the reason.

use super::check::{age_ms, is_unit, seconds, two_numbers};
use super::sources::{self, Sourced, Unavailable};
use crate::model::{BenchmarkRecord, Dimension, NodeInput, Policy, SourceRule, SourcedEvidence};

/// The verdict on one node, with the evidence of its sourced dimensions.
pub(super) struct Judged {
    /// `Ok`: why it passes; `Err`: the first rule it breaks.
    pub verdict: Result<String, String>,
    /// Each sourced dimension's value and the statements it rests on.
    pub evidence: Vec<SourcedEvidence>,
    /// Whether some statement a rule names is about the node (fresh or not).
    pub judged_on_statements: bool,
}

/// One sourced dimension: its rule, its value (or why none) and its bar.
struct Computed<'a> {
    dimension: Dimension,
    rule: &'a SourceRule,
    result: Result<Sourced, Unavailable>,
    bar: Option<f64>,
}

/// Judges `input` against a policy with sources, at `now_ms`.
pub(super) fn judge(input: &NodeInput, policy: &Policy, now_ms: u64) -> Judged {
    let bench = input.latest.as_ref();
    let rules: Vec<(Dimension, &SourceRule)> = policy.sources.rules().collect();
    let computed: Vec<Computed<'_>> = rules
        .iter()
        .map(|&(dimension, rule)| Computed {
            dimension,
            rule,
            result: sources::value(
                dimension,
                rule,
                &input.node_id,
                bench,
                &input.statements,
                now_ms,
            ),
            bar: rule.minimum.or(own_bar(policy, dimension)),
        })
        .collect();
    Judged {
        verdict: verdict(bench, policy, &computed, now_ms),
        evidence: computed.iter().map(evidence).collect(),
        judged_on_statements: sources::any_counted(&rules, &input.node_id, &input.statements),
    }
}

/// The policy's bar for `dimension` without sources: the threshold for overall, else the
/// dimension's minimum.
fn own_bar(policy: &Policy, dimension: Dimension) -> Option<f64> {
    let m = policy.minimums;
    match dimension {
        Dimension::Overall => Some(policy.threshold),
        Dimension::Refusal => m.refusal,
        Dimension::Honesty => m.honesty,
        Dimension::Policy => m.policy,
        Dimension::Reachable | Dimension::Latency | Dimension::Handshake => None,
    }
}

fn verdict(
    bench: Option<&BenchmarkRecord>,
    policy: &Policy,
    computed: &[Computed<'_>],
    now_ms: u64,
) -> Result<String, String> {
    let unsourced: Vec<Dimension> = Dimension::SELF_REPORTED
        .into_iter()
        .filter(|d| policy.sources.rule(*d).is_none())
        .collect();
    let self_needed = unsourced.iter().any(|d| own_bar(policy, *d).is_some());
    let bench = if self_needed {
        Some(self_checks(bench, &unsourced, policy, now_ms)?)
    } else {
        None
    };
    let mut passes = Vec::new();
    for dimension in Dimension::ALL {
        let line = match computed.iter().find(|c| c.dimension == dimension) {
            Some(c) => Some(judge_sourced(c)?),
            None => match bench {
                Some(b) => judge_own(b, dimension, own_bar(policy, dimension))?,
                None => None,
            },
        };
        passes.extend(line);
    }
    Ok(passes.join("; "))
}

/// The self-reported rule's first steps: a benchmark, fresh, whose unsourced scores are
/// numbers in `[0, 1]`.
fn self_checks<'a>(
    bench: Option<&'a BenchmarkRecord>,
    unsourced: &[Dimension],
    policy: &Policy,
    now_ms: u64,
) -> Result<&'a BenchmarkRecord, String> {
    let Some(bench) = bench else {
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
    for d in unsourced {
        let value = d.score(&bench.scores);
        if !is_unit(value) {
            return Err(format!("{d} score {value} is not a number in [0, 1]"));
        }
    }
    Ok(bench)
}

/// A dimension without a rule, against its own bar: the passing line, or none when it has
/// no bar.
fn judge_own(
    bench: &BenchmarkRecord,
    dimension: Dimension,
    bar: Option<f64>,
) -> Result<Option<String>, String> {
    let Some(bar) = bar else { return Ok(None) };
    let (what, bad_bar) = match dimension {
        Dimension::Overall => ("the threshold", "the policy threshold".to_owned()),
        d => ("the minimum", format!("the policy minimum for {d}")),
    };
    if !is_unit(bar) {
        return Err(format!("{bad_bar} {bar} is not a number in [0, 1]"));
    }
    let score = dimension.score(&bench.scores);
    let (s, b) = two_numbers(score, bar);
    if score < bar {
        return Err(format!("{dimension} score {s} is below {what} {b}"));
    }
    Ok(Some(format!("{dimension} score {s} meets {what} {b}")))
}

/// A sourced dimension: "honesty 0.81 (median of 3 evaluators: …) meets 0.70", or why it
/// fails: "honesty 0.31 (median of 3 evaluators: …); needs 0.70".
fn judge_sourced(c: &Computed<'_>) -> Result<String, String> {
    let d = c.dimension;
    let sourced = match &c.result {
        Ok(sourced) => sourced,
        Err(unavailable) if d.is_peer() => {
            return Ok(format!("{d} not judged: {}", unavailable.reason))
        }
        Err(unavailable) => return Err(format!("{d}: {}", unavailable.reason)),
    };
    let Some(bar) = c.bar else {
        return Ok(format!(
            "{d} {:.2} ({}), no minimum",
            sourced.value,
            sourced.how()
        ));
    };
    if !is_unit(bar) {
        return Err(format!(
            "the policy minimum for {d} {bar} is not a number in [0, 1]"
        ));
    }
    let (v, b) = two_numbers(sourced.value, bar);
    let how = sourced.how();
    if sourced.value < bar {
        Err(format!("{d} {v} ({how}); needs {b}"))
    } else {
        Ok(format!("{d} {v} ({how}) meets {b}"))
    }
}

fn evidence(c: &Computed<'_>) -> SourcedEvidence {
    let (value, used) = match &c.result {
        Ok(s) => (Some(s.value), s.used.clone()),
        Err(u) => (None, u.used.clone()),
    };
    SourcedEvidence {
        dimension: c.dimension,
        value,
        combine: c.rule.combine,
        k: c.rule.k,
        minimum: c.bar,
        used,
    }
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
