//! The membership engine: which nodes may be in the mesh, and who talks to whom.
//!
//! Everything here is pure: no clock, no I/O. The caller passes the time and the stored
//! facts, and stores what comes back.
//!
//! # Rules
//!
//! [`decide_one`] applies, in this order:
//!
//! 1. An admin pin wins: [`Pin::Deny`] denies ("denied by admin pin"), [`Pin::Allow`]
//!    allows ("allowed by admin pin").
//! 2. Without a benchmark the node is denied ("no benchmark received"). (With
//!    [`Policy::sources`] set, steps 2 and 3 become the rules of the `verdict` module
//!    below, and a node judged on a statement a source rule names counts as benchmarked.)
//! 3. The newest benchmark fails when it is older than [`Policy::max_age_ms`] by its
//!    measurement time (exactly the limit still passes; a benchmark dated in the future is
//!    0 ms old), when any score is not a number in `[0, 1]` (NaN, infinite or out of range:
//!    values may come from a database), when the policy's threshold or a minimum is not a
//!    number in `[0, 1]`, when the overall score is below [`Policy::threshold`] (equal
//!    passes), or when the refusal, honesty or policy score is below its minimum.
//! 4. Hysteresis, for a passing benchmark: a node allowed at the previous evaluation stays
//!    allowed. A node whose evaluations have never had a benchmark is new and is admitted
//!    at once. Any other node (denied before) is readmitted only once its streak of
//!    consecutive passing evaluations, this one included, reaches
//!    [`Policy::readmit_after`]; until then it is denied with "passing, readmitted after 3
//!    consecutive passing evaluations (1 so far)". A failing benchmark denies at once.
//!
//! # Bookkeeping
//!
//! The returned [`History`] is what the next evaluation needs:
//! - `passing_streak` counts consecutive evaluations whose benchmark passed (step 3), pins
//!   or not: it is the previous streak plus one when passing, else 0. A pin therefore
//!   does not hide the node's behaviour: when a Deny pin is lifted from a node that kept
//!   passing, the evaluations under the pin count towards its readmission.
//! - `allowed` is the final decision, pins included. When an Allow pin is lifted, the node
//!   counts as allowed before, so it stays in while it passes and leaves at its first
//!   failure; when a Deny pin is lifted, it counts as denied before and waits out
//!   `readmit_after` (minus the passing evaluations under the pin).
//! - `benchmarked` becomes true at the first evaluation with a benchmark (or, with
//!   [`Policy::sources`] set, a statement one of its rules names, fresh or not) and stays
//!   true, so a node judged only by evaluators waits out `readmit_after` like any other.
//!
//! # Sources
//!
//! With [`Policy::sources`] set, a sourced dimension's value comes from `k` of the named
//! sources (the node itself, evaluators, evaluator groups), each fresh, combined by median
//! (the lower middle of an even count) or minimum, and replaces the self-reported score
//! for that dimension; its bar is the rule's `minimum`, else the threshold (overall) or
//! the dimension's minimum. The node's own benchmark is needed only while a dimension
//! without a rule has a bar. The reason names the statements used ("honesty 0.31 (median
//! of 3 evaluators: e1 0.30, e2 0.31, e4 0.35); needs 0.70") and [`Evidence::sources`]
//! records them (ids, scores, ages), so `audit verify` can decide again. Without sources
//! the statements are ignored and every decision is as before.

mod check;
mod sources;
pub mod topology;
mod verdict;

#[cfg(test)]
mod compat_tests;
#[cfg(test)]
mod peers_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashSet};

pub use topology::{allowed_ids, forwards, pair_count, peers_of, routed_via, would_peer};

use crate::model::{Decision, Evidence, History, NodeInput, Pin, Policy};

/// Decides every node: one decision per input, in the same order.
pub fn decide(inputs: &[NodeInput], policy: &Policy, now_ms: u64) -> Vec<Decision> {
    inputs
        .iter()
        .map(|input| decide_one(input, policy, now_ms))
        .collect()
}

/// Decides one node at `now_ms` (Unix milliseconds); see the [module rules](self).
pub fn decide_one(input: &NodeInput, policy: &Policy, now_ms: u64) -> Decision {
    let latest = input.latest.as_ref();
    let (verdict, sourced, judged_on_statements) = if policy.sources.is_empty() {
        (check::check(latest, policy, now_ms), Vec::new(), false)
    } else {
        let j = verdict::judge(input, policy, now_ms);
        (j.verdict, j.evidence, j.judged_on_statements)
    };
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
            benchmarked: previous.benchmarked || latest.is_some() || judged_on_statements,
        },
        evidence: Evidence {
            sources: sourced,
            ..check::evidence(latest, policy, now_ms)
        },
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

/// The nodes allowed in `previous` (the decisions in force) that [`decide_one`] would now
/// deny, in the order of `inputs`: their benchmark fails, or an admin pinned them Deny.
/// A node pinned Allow is never listed. Nodes allowed in `previous` but absent from `inputs`
/// (removed since) are listed after them, by id: a removal cuts a node off as a deny does.
///
/// The controller calls this between scheduled evaluations to rotate the epoch at once
/// (`rotate_on_deny`). It only looks: the streaks move on the next [`decide`].
pub fn newly_failing(
    previous: &[Decision],
    inputs: &[NodeInput],
    policy: &Policy,
    now_ms: u64,
) -> Vec<String> {
    let was_allowed: BTreeSet<&str> = previous
        .iter()
        .filter(|d| d.allowed)
        .map(|d| d.node_id.as_str())
        .collect();
    let present: HashSet<&str> = inputs.iter().map(|i| i.node_id.as_str()).collect();
    let failing = inputs
        .iter()
        .filter(|input| was_allowed.contains(input.node_id.as_str()))
        .filter(|input| !decide_one(input, policy, now_ms).allowed)
        .map(|input| input.node_id.clone());
    let removed = was_allowed
        .iter()
        .filter(|id| !present.contains(*id))
        .map(|id| (*id).to_owned());
    failing.chain(removed).collect()
}
