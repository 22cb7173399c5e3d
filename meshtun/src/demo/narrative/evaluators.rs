//! What `meshtun demo --evaluators` prints: the introduction, the evaluators registered,
//! their first pass, node-c's own claim, each statement of the second pass, and the
//! summary's lines, each saying what was seen.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::{check, event, secs, Style, CONTINUE};
use crate::demo::cutoff::{CutOff, CUTOFF_BOUND_MS};
use crate::demo::evaluators::{EvaluatorsStory, Stated, C_ID, DIMENSION, K, PANEL};
use crate::demo::plan::{DemoOptions, Names, CLAIMED_MEAN, CONTROLLERS, NODES, THRESHOLD};
use crate::demo::story::Story;

/// The panel's names: `e1, e2, e3`.
fn panel_names() -> String {
    PANEL.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
}

/// The introduction.
pub fn header(style: Style, names: &Names, opts: &DemoOptions, dir: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}\n",
        style.strong("meshtun demo --evaluators: a node's own claim against its evaluators, live")
    );
    let panel = panel_names();
    let _ = writeln!(
        out,
        "A controller (`meshtun-controller serve`) and three nodes, each in its own network \
         namespace,\njoined by a virtual switch. Every node measures itself and sends its signed \
         score, but the\ncontroller does not take a node's word for it: [policy.sources.{DIMENSION}] \
         takes each node's\n{DIMENSION} score from three registered evaluators, {panel} (the \
         median of at least {K} fresh\nstatements). An evaluator is an Ed25519 key registered \
         with `meshtun-controller evaluator add`;\nit runs `meshtun evaluate`: a harness against \
         the node, its scores signed and sent as a statement.\n"
    );
    let _ = writeln!(
        out,
        "  controller  {}   epochs of {} s; {DIMENSION}: median of {K}+ of {panel}, needs \
         {THRESHOLD:.2}",
        CONTROLLERS[0].url(),
        opts.epoch.as_secs()
    );
    for node in &NODES {
        let _ = writeln!(
            out,
            "  {}      outer {}   tunnel {}   its own claim: around {:.2}",
            node.id,
            node.outer,
            node.tunnel,
            CLAIMED_MEAN.max(node.mean)
        );
    }
    let end = match opts.end_at() {
        Some(end) => format!("The demo ends after {} s.", end.as_secs()),
        None => "The demo runs until Ctrl-C.".to_owned(),
    };
    let _ = writeln!(
        out,
        "\nExpect: the evaluators' first pass finds every node sound, and all three are \
         allowed.\n{} s after the first epoch node-c still claims {CLAIMED_MEAN:.2}, but the \
         evaluators' second pass scores it\n0.35 to 0.45: the controller denies it at once, \
         its reason naming the statements, and node-a\nand node-b drop it within a second of \
         the decision. {end}\n",
        opts.judge_at().unwrap_or_default().as_secs()
    );
    let kept = if opts.keep {
        "kept at the end (--keep)"
    } else {
        "removed at the end; --keep keeps them"
    };
    let _ = writeln!(
        out,
        "{}",
        style.dim(&format!(
            "Namespaces {}{{hub,ctl,a,b,c}}. Configurations, keys (the evaluators' too), logs, \
             the\nharness and the controller's database are in {} ({kept}).\n\
             Ctrl-C stops the demo at any time; everything it created is removed.",
            names.prefix(),
            dir.display()
        ))
    );
    out
}

/// The evaluators registered.
pub fn registered_line(style: Style, harness: &Path) -> String {
    format!(
        "{} registered, each a new Ed25519 key: `meshtun-controller evaluator add NAME PUBKEY \
         --dimensions {DIMENSION}`\n{CONTINUE}{}",
        panel_names(),
        style.dim(&format!(
            "their harness: {} (run as `/bin/sh harness.sh NAME PASS`)",
            harness.display()
        ))
    )
}

/// One evaluator's first pass: `e1 (meshtun evaluate, first pass): node-a 0.90, …`.
pub fn first_pass_line(style: Style, stated: &[Stated]) -> String {
    let Some(first) = stated.first() else {
        return String::new();
    };
    let scores: Vec<String> = stated
        .iter()
        .map(|s| format!("{} {:.2}", s.node, s.score))
        .collect();
    let ids: Vec<&str> = stated.iter().map(|s| s.id.as_str()).collect();
    format!(
        "{} (`meshtun evaluate`, first pass): {} {}",
        first.evaluator,
        style.good(&scores.join(", ")),
        style.dim(&format!("(stored statements {})", ids.join(", ")))
    )
}

/// node-c's own claim, before the second pass.
pub fn claim_line(style: Style, at: Duration, claim: Option<f64>) -> String {
    let claim = match claim {
        Some(score) => format!("{C_ID} claims {DIMENSION} {score:.2} about itself"),
        None => format!("{C_ID} has sent no score about itself"),
    };
    format!(
        "{}\n{CONTINUE}{}",
        event(
            at,
            &style.notice(&format!(
                "{claim} (its latest signed benchmark); the evaluators look again"
            ))
        ),
        style.dim("(its own benchmark does not count for a dimension sourced from evaluators)")
    )
}

/// One statement of the second pass: `e1 says node-c: overall 0.40 (statement 11)`.
pub fn statement_line(style: Style, at: Duration, stated: &Stated) -> String {
    let score = format!("{DIMENSION} {:.2}", stated.score);
    let score = if stated.score < THRESHOLD {
        style.bad(&score)
    } else {
        style.good(&score)
    };
    event(
        at,
        &format!(
            "{} says {}: {score} {}",
            stated.evaluator,
            stated.node,
            style.dim(&format!(
                "(statement {}, signed by {}, stored by the controller)",
                stated.id, stated.evaluator
            ))
        ),
    )
}

/// node-c dropped by both others: the time from the decision each logged.
pub fn cut_off_line(style: Style, at: Duration, cut: &CutOff) -> String {
    let text = format!(
        "{C_ID} cut off: dropped from the controller's decision to its removal in {} (bound \
         {CUTOFF_BOUND_MS} ms)",
        cut.times_text()
    );
    let text = if cut.in_time() {
        style.notice(&text)
    } else {
        style.bad(&text)
    };
    event(at, &text)
}

/// The summary's lines, one per claim.
pub fn summary(style: Style, story: &Story, judged: &EvaluatorsStory) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {} the evaluators' first pass: {} statements about the three nodes; node-a and node-b \
         answered\n    each other in {} of {} ping rounds.",
        check(
            style,
            judged.first.len() == PANEL.len() * NODES.len() && story.ab_connected.is_some()
        ),
        judged.first.len(),
        story.ab_rounds.0,
        story.ab_rounds.1
    );
    let statements: Vec<String> = judged
        .second
        .iter()
        .map(|s| format!("{} {:.2}", s.evaluator, s.score))
        .collect();
    let claim = judged.claim.map_or_else(
        || format!("{C_ID}'s own claim was not seen"),
        |c| format!("{C_ID} claimed {c:.2} about itself"),
    );
    let said = if statements.is_empty() {
        "the evaluators' second pass was not seen".to_owned()
    } else {
        format!("the evaluators said {}", statements.join(", "))
    };
    let _ = writeln!(
        out,
        "  {} {claim}; {said}.",
        check(
            style,
            judged.claim.is_some() && judged.second.len() == PANEL.len()
        )
    );
    let denied = match &judged.c_denied {
        Some((epoch, reason, _)) => format!("epoch {epoch} cut {C_ID} off: {reason}"),
        None => format!("{C_ID} was not seen cut off after the second pass."),
    };
    let _ = writeln!(
        out,
        "  {} {denied}",
        check(style, judged.reason_names_statements())
    );
    let _ = writeln!(
        out,
        "  {} from the decision to {C_ID}'s removal, as each node logged it: {} (bound \
         {CUTOFF_BOUND_MS} ms).",
        check(style, judged.cut.in_time()),
        judged.cut.times_text()
    );
    let silent = match judged.cut.silent {
        Some(at) => format!(
            "{C_ID} cut off everywhere: from {} nobody reached it and it reached nobody.",
            secs(at)
        ),
        None => format!("{C_ID} was not seen cut off from everyone after its denial."),
    };
    let _ = writeln!(
        out,
        "  {} {silent}",
        check(style, judged.cut.silent.is_some())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Style = Style { color: false };

    fn stated(evaluator: &str, node: &str, score: f64, id: &str) -> Stated {
        Stated {
            evaluator: evaluator.into(),
            node: node.into(),
            id: id.into(),
            score,
        }
    }

    #[test]
    fn the_claim_and_each_statement_are_shown() {
        assert_eq!(
            statement_line(
                PLAIN,
                Duration::from_secs(20),
                &stated("e2", C_ID, 0.35, "11")
            ),
            "[  20.0s] e2 says node-c: overall 0.35 (statement 11, signed by e2, stored by the \
             controller)"
        );
        let claim = claim_line(PLAIN, Duration::from_secs(19), Some(0.904));
        assert!(
            claim.starts_with("[  19.0s] node-c claims overall 0.90 about itself"),
            "{claim}"
        );
        let first = first_pass_line(
            PLAIN,
            &[
                stated("e1", "node-a", 0.9, "1"),
                stated("e1", C_ID, 0.85, "3"),
            ],
        );
        assert_eq!(
            first,
            "e1 (`meshtun evaluate`, first pass): node-a 0.90, node-c 0.85 (stored statements 1, 3)"
        );
        assert_eq!(first_pass_line(PLAIN, &[]), "");
        let mut cut = CutOff::default();
        cut.times.insert("node-a".into(), Some(5));
        cut.times.insert("node-b".into(), Some(7));
        assert_eq!(
            cut_off_line(PLAIN, Duration::from_secs(21), &cut),
            "[  21.0s] node-c cut off: dropped from the controller's decision to its removal in \
             node-a 5 ms, node-b 7 ms (bound 1000 ms)"
        );
    }

    #[test]
    fn the_summary_says_what_each_claim_saw() {
        let mut story = Story {
            ab_connected: Some(Duration::from_secs(5)),
            ab_rounds: (6, 6),
            evaluators: Some(EvaluatorsStory::default()),
            ..Story::default()
        };
        let text = summary(PLAIN, &story, story.evaluators.as_ref().unwrap());
        assert_eq!(text.matches('✗').count(), 5, "{text}");
        assert!(
            text.contains(
                "node-c's own claim was not seen; the evaluators' second pass was not seen."
            ),
            "{text}"
        );
        let judged = story.evaluators.as_mut().unwrap();
        for e in &PANEL {
            for node in &NODES {
                judged.first.push(stated(e.name, node.id, 0.9, "1"));
            }
            judged.second.push(stated(e.name, C_ID, e.second, "2"));
        }
        judged.claim = Some(0.91);
        judged.cut.arm(Duration::from_secs(15));
        let reason = "overall 0.40 (median of 3 evaluators: e1 0.40, e2 0.35, e3 0.86); needs 0.70";
        judged.c_denied = Some((6, reason.into(), 0));
        judged.cut.times.insert("node-a".into(), Some(90));
        judged.cut.times.insert("node-b".into(), Some(140));
        judged.cut.silent = Some(Duration::from_secs(18));
        let text = summary(PLAIN, &story, story.evaluators.as_ref().unwrap());
        assert_eq!(text.matches('✓').count(), 5, "{text}");
        for part in [
            "node-c claimed 0.91 about itself; the evaluators said e1 0.40, e2 0.35, e3 0.45",
            &format!("epoch 6 cut node-c off: {reason}"),
            "node-a 90 ms, node-b 140 ms (bound 1000 ms)",
            "from 18.0 s nobody reached it",
        ] {
            assert!(text.contains(part), "missing {part:?} in\n{text}");
        }
    }
}
