//! One dimension's value from the sources a [`SourceRule`] names: `k` of the named
//! sources must each have a fresh statement, and their scores combine by median or minimum.
//! Pure: the caller passes the time.
//!
//! # Rules
//!
//! - A statement counts for a rule only when it is about the node, of the dimension, and
//!   its issuer is an evaluator the rule names (`evaluator:NAME`, or `group:NAME` and the
//!   evaluator is in that group), or a node other than the subject for `peers` (the engine
//!   passes only observations by nodes allowed in the current epoch that peer with the
//!   subject). `self` counts the node's own newest benchmark.
//! - Sources are distinct by evaluator name (two keys or two groups naming one evaluator
//!   are one source), and by node id for `peers`; `self` is one more source. Of each
//!   source, only the newest statement (by evaluation time, then by id) is judged.
//! - That statement is fresh when it is at most `max_age_ms` old (exactly the limit
//!   counts; one dated in the future is 0 ms old) and its score is a number in `[0, 1]`.
//! - With fewer than `k` fresh sources there is no value; otherwise every fresh source's
//!   score combines: the lowest, the median (the lower middle of an even count), or the
//!   mean.

use std::collections::BTreeMap;

use crate::model::{
    BenchmarkRecord, Combine, Dimension, Issuer, Source, SourceRule, Statement, UsedStatement,
};

/// The most sources a reason lists by name; the rest are counted.
const MAX_LISTED: usize = 10;

/// A sourced dimension's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sourced {
    /// The combined score.
    pub value: f64,
    /// The fresh statements combined: self first, then by evaluator name.
    pub used: Vec<UsedStatement>,
    /// How they were combined.
    pub combine: Combine,
    /// Whether the sources are the node's peers.
    pub from_peers: bool,
}

impl Sourced {
    /// "0.31 (median of 3 evaluators: e1 0.30, e2 0.31, e4 0.35)", without the value.
    pub fn how(&self) -> String {
        let n = self.used.len();
        let all_evaluators = self.used.iter().all(|u| u.id.is_some());
        let noun = match (self.from_peers, all_evaluators, n) {
            (true, _, 1) => "peer",
            (true, _, _) => "peers",
            (false, true, 1) => "evaluator",
            (false, true, _) => "evaluators",
            (false, false, 1) => "source",
            (false, false, _) => "sources",
        };
        let items = self
            .used
            .iter()
            .map(|u| format!("{} {:.2}", u.issuer, u.score));
        format!(
            "{} of {n} {noun}: {}",
            self.combine.name(),
            listed(items.collect(), ", ")
        )
    }
}

/// Why a sourced dimension has no value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unavailable {
    /// "1 fresh statement from its sources, needs 2 (e1 0.30; e2's is 3 h old, the limit
    /// is 1 h)".
    pub reason: String,
    /// The fresh statements there were (fewer than `k`).
    pub used: Vec<UsedStatement>,
}

/// Who a statement is from, as the rule counts sources: self first, then by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who<'a> {
    SelfReported,
    Evaluator(&'a str),
    Peer(&'a str),
}

impl Who<'_> {
    fn label(&self) -> &str {
        match self {
            Who::SelfReported => "self",
            Who::Evaluator(name) | Who::Peer(name) => name,
        }
    }
}

/// The newest statement of one source.
#[derive(Debug, Clone, Copy)]
struct Candidate<'a> {
    id: Option<u64>,
    score: f64,
    at_ms: u64,
    /// The issuer's group, as its newest statement gives it.
    group: Option<&'a str>,
}

/// Computes `dimension`'s value for node `node_id` under `rule`, at `now_ms`.
pub(crate) fn value(
    dimension: Dimension,
    rule: &SourceRule,
    node_id: &str,
    bench: Option<&BenchmarkRecord>,
    statements: &[Statement],
    now_ms: u64,
) -> Result<Sourced, Unavailable> {
    let newest = newest_per_source(dimension, rule, node_id, bench, statements);
    let mut used = Vec::new();
    let mut details = Vec::new();
    for (who, c) in &newest {
        let age_ms = now_ms.saturating_sub(c.at_ms);
        let label = who.label();
        if !(0.0..=1.0).contains(&c.score) {
            details.push(format!(
                "{label}'s score {} is not a number in [0, 1]",
                c.score
            ));
        } else if age_ms > rule.max_age_ms {
            details.push(format!(
                "{label}'s is {} old, the limit is {}",
                duration(age_ms),
                duration(rule.max_age_ms)
            ));
        } else {
            details.push(format!("{label} {:.2}", c.score));
            used.push(UsedStatement {
                id: c.id,
                issuer: label.to_owned(),
                score: c.score,
                age_ms,
            });
        }
    }
    details.extend(silent(rule, &newest, bench.is_some()));
    let k = usize::try_from(rule.k).unwrap_or(usize::MAX);
    if used.len() < k || used.is_empty() {
        let n = used.len();
        let s = if n == 1 { "" } else { "s" };
        let reason = format!(
            "{n} fresh statement{s} from its sources, needs {} ({})",
            rule.k.max(1),
            listed(details, "; ")
        );
        return Err(Unavailable { reason, used });
    }
    let value = combine(rule.combine, &used);
    Ok(Sourced {
        value,
        used,
        combine: rule.combine,
        from_peers: rule.from.contains(&Source::Peers),
    })
}

/// Whether any statement in `statements` is one a rule of `sources` counts (fresh or not):
/// the node has been judged on something.
pub(crate) fn any_counted(
    rules: &[(Dimension, &SourceRule)],
    node_id: &str,
    statements: &[Statement],
) -> bool {
    statements.iter().any(|st| {
        rules.iter().any(|(d, rule)| {
            st.dimension == *d && st.subject == node_id && names(rule, st, node_id)
        })
    })
}

/// The newest statement of every source `rule` names, by source.
fn newest_per_source<'a>(
    dimension: Dimension,
    rule: &SourceRule,
    node_id: &str,
    bench: Option<&BenchmarkRecord>,
    statements: &'a [Statement],
) -> BTreeMap<Who<'a>, Candidate<'a>> {
    let mut newest: BTreeMap<Who<'a>, Candidate<'a>> = BTreeMap::new();
    if let Some(b) = bench.filter(|_| rule.from.contains(&Source::SelfReported)) {
        let c = Candidate {
            id: None,
            score: dimension.score(&b.scores),
            at_ms: b.measured_at_ms,
            group: None,
        };
        newest.insert(Who::SelfReported, c);
    }
    let counted = statements.iter().filter(|st| {
        st.dimension == dimension && st.subject == node_id && names(rule, st, node_id)
    });
    for st in counted {
        let (who, group) = match &st.issuer {
            Issuer::Evaluator { name, group } => (Who::Evaluator(name), group.as_deref()),
            Issuer::Node { id } => (Who::Peer(id), None),
        };
        let c = Candidate {
            id: Some(st.id),
            score: st.score,
            at_ms: st.evaluated_at_ms,
            group,
        };
        let slot = newest.entry(who).or_insert(c);
        if (c.at_ms, c.id) > (slot.at_ms, slot.id) {
            *slot = c;
        }
    }
    newest
}

/// Whether `rule` names the issuer of `st`, a statement about `node_id`: an evaluator it
/// names, or any other node for `peers` (a node's word about itself is never a peer's).
fn names(rule: &SourceRule, st: &Statement, node_id: &str) -> bool {
    match &st.issuer {
        Issuer::Evaluator { name, group } => rule.from.iter().any(|source| match source {
            Source::SelfReported | Source::Peers => false,
            Source::Evaluator(n) => n == name,
            Source::Group(g) => group.as_ref() == Some(g),
        }),
        Issuer::Node { id } => id != node_id && rule.from.contains(&Source::Peers),
    }
}

/// The sources named in `rule` that said nothing: "no benchmark from self", "none from
/// e5", "none from group core".
fn silent(
    rule: &SourceRule,
    newest: &BTreeMap<Who<'_>, Candidate<'_>>,
    has_bench: bool,
) -> Vec<String> {
    let spoke = |name: &str| newest.contains_key(&Who::Evaluator(name));
    let group_spoke = |g: &str| newest.values().any(|c| c.group == Some(g));
    let peers_spoke = newest.keys().any(|w| matches!(w, Who::Peer(_)));
    rule.from
        .iter()
        .filter_map(|source| match source {
            Source::SelfReported if !has_bench => Some("no benchmark from self".to_owned()),
            Source::Evaluator(n) if !spoke(n) => Some(format!("none from {n}")),
            Source::Group(g) if !group_spoke(g) => Some(format!("none from group {g}")),
            Source::Peers if !peers_spoke => Some("no peer has observed it".to_owned()),
            _ => None,
        })
        .collect()
}

/// Combines scores in `[0, 1]` (at least one).
fn combine(how: Combine, used: &[UsedStatement]) -> f64 {
    let mut scores: Vec<f64> = used.iter().map(|u| u.score).collect();
    if how == Combine::Mean {
        // Scores in [0, 1]: the sum cannot overflow, and the mean stays in [0, 1].
        let n = scores.len() as f64;
        return if scores.is_empty() {
            f64::NAN
        } else {
            (scores.iter().sum::<f64>() / n).clamp(0.0, 1.0)
        };
    }
    scores.sort_by(f64::total_cmp);
    let index = match how {
        Combine::Minimum => 0,
        Combine::Median | Combine::Mean => scores.len().saturating_sub(1) / 2,
    };
    scores.get(index).copied().unwrap_or(f64::NAN)
}

/// At most [`MAX_LISTED`] items joined by `sep`, then "and N more".
fn listed(mut items: Vec<String>, sep: &str) -> String {
    let more = items.len().saturating_sub(MAX_LISTED);
    items.truncate(MAX_LISTED);
    let mut text = items.join(sep);
    if more > 0 {
        text.push_str(&format!("{sep}and {more} more"));
    }
    text
}

/// Milliseconds in hours, minutes and seconds, zero parts left out: "3 h", "1 min 30 s",
/// "2 h 0.001 s", "0 s".
pub(crate) fn duration(ms: u64) -> String {
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (min, rest) = (rest / 60_000, rest % 60_000);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h} h"));
    }
    if min > 0 {
        parts.push(format!("{min} min"));
    }
    if rest > 0 || parts.is_empty() {
        let (s, frac) = (rest / 1000, rest % 1000);
        let digits = format!("{frac:03}");
        let frac = digits.trim_end_matches('0');
        parts.push(if frac.is_empty() {
            format!("{s} s")
        } else {
            format!("{s}.{frac} s")
        });
    }
    parts.join(" ")
}

#[cfg(test)]
#[path = "sources_tests.rs"]
mod tests;
