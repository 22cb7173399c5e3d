//! What the demo prints: the scenario's introduction, each epoch with its decisions, the
//! ping matrix, the nodes' notable log lines, and the summary. Pure formatting; colours only
//! when asked (the caller asks when standard output is a terminal).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::nodelog::NodeApplied;
use super::ping::{Outcome, Probe};
use super::plan::{
    controllers, DemoOptions, Names, BENCHMARK_INTERVAL_SECS, NODES, RECOVERED_MEAN, RECOVERING,
    THRESHOLD,
};
use super::story::{Change, EpochSummary, Story};

pub mod evaluators;
mod ha;
pub mod nat;
pub use ha::{leader_killed, leader_named, new_leader_epoch, steady_line, took_over};

/// Whether to colour the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    color: bool,
}

impl Style {
    /// A style with or without ANSI colours.
    pub fn new(color: bool) -> Self {
        Self { color }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Something that works.
    pub fn good(self, text: &str) -> String {
        self.paint("32", text)
    }

    /// Something cut off or failing.
    pub fn bad(self, text: &str) -> String {
        self.paint("31", text)
    }

    /// A change worth noticing.
    pub fn notice(self, text: &str) -> String {
        self.paint("1;33", text)
    }

    /// A heading.
    pub fn strong(self, text: &str) -> String {
        self.paint("1", text)
    }

    /// Background detail.
    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// The time stamp at the start of a line: seconds since the demo started.
pub fn stamp(at: Duration) -> String {
    format!("[{:>6.1}s]", at.as_secs_f64())
}

/// Indentation of the lines that continue a stamped line.
const CONTINUE: &str = "          ";

/// A stamped line.
pub fn event(at: Duration, text: &str) -> String {
    format!("{} {text}", stamp(at))
}

/// The introduction: the scenario, what to expect, where the files are.
pub fn header(style: Style, names: &Names, opts: &DemoOptions, dir: &Path) -> String {
    if opts.nat {
        return nat::header(style, names, opts, dir);
    }
    if opts.evaluators {
        return evaluators::header(style, names, opts, dir);
    }
    let mut out = String::new();
    let epoch = opts.epoch.as_secs();
    let _ = writeln!(
        out,
        "{}\n",
        style.strong("meshtun demo: membership gating, live, on this machine")
    );
    let who = if opts.ha {
        ha::WHO
    } else {
        "A controller (`meshtun-controller serve`)"
    };
    let _ = writeln!(
        out,
        "{who} and three nodes, each in its own network\n\
         namespace, joined by a virtual switch. Each node runs `meshtun up` with a [controller]\n\
         section; nothing else tells it who its peers are.\n"
    );
    for spec in controllers(opts.ha) {
        let name = if opts.ha { spec.instance } else { "controller" };
        let _ = writeln!(
            out,
            "  {name:<10}  {}   epochs of {epoch} s; a node needs an overall score of {THRESHOLD:.2}",
            spec.url()
        );
    }
    for node in &NODES {
        let _ = writeln!(
            out,
            "  {}      outer {}   tunnel {}   scores around {:.2}",
            node.id, node.outer, node.tunnel, node.mean
        );
    }
    let recovering = &NODES[RECOVERING];
    let _ = writeln!(
        out,
        "\nEvery {BENCHMARK_INTERVAL_SECS} s each node measures itself and sends its signed score to the \
         controller.\nEach epoch the controller decides who is in the mesh and gives every allowed \
         pair of\nnodes a fresh WireGuard preshared key. A node that is not allowed gets no key and \
         no peers,\nand the others drop it: nobody can reach it through the tunnel, and it reaches \
         nobody.\n"
    );
    let recover = match opts.end_at() {
        Some(end) => format!(
            "{} s after the first epoch, {}'s score recovers to {RECOVERED_MEAN:.2}, and it is \
             readmitted\nat the next epoch. The demo ends after {} s.",
            opts.recover_at().as_secs(),
            recovering.id,
            end.as_secs()
        ),
        None => format!(
            "{} s after the first epoch, {}'s score recovers to {RECOVERED_MEAN:.2}, and it is \
             readmitted\nat the next epoch. The demo runs until Ctrl-C.",
            opts.recover_at().as_secs(),
            recovering.id
        ),
    };
    let _ = writeln!(
        out,
        "Expect: node-a and node-b reach each other; {} is cut off.\n{recover}\n",
        recovering.id
    );
    if let Some(kill) = opts.kill_at() {
        let _ = writeln!(out, "{}", ha::expect_takeover(kill));
    }
    let kept = if opts.keep {
        "kept at the end (--keep)"
    } else {
        "removed at the end; --keep keeps them"
    };
    let (namespaces, database) = if opts.ha {
        (
            "hub,ctl,ctl2,a,b,c",
            "controllers' homes\n(their database is PostgreSQL's, in its own temporary directory)",
        )
    } else {
        ("hub,ctl,a,b,c", "controller's\ndatabase")
    };
    let _ = writeln!(
        out,
        "{}",
        style.dim(&format!(
            "Namespaces {}{{{namespaces}}}. Configurations, keys, logs and the {database} \
             are in {} ({kept}).\n\
             Ctrl-C stops the demo at any time; everything it created is removed.",
            names.prefix(),
            dir.display()
        ))
    );
    out
}

/// How an epoch came to be, in words.
fn cause_text(id: u64, cause: &str) -> String {
    match cause.strip_prefix("deny: ") {
        Some(nodes) => format!("immediate: {nodes} no longer passes"),
        None if cause == "schedule" && id == 1 => "the first epoch".to_owned(),
        // The demo's `meshtun-controller rotate` once every node has sent its first score.
        None if cause == "admin" => "the first epoch with every node's score".to_owned(),
        None if cause == "schedule" => "scheduled: new keys for every allowed pair".to_owned(),
        None => cause.to_owned(),
    }
}

/// A newly decided epoch: every node's decision and reason when membership changes (and
/// for the first epoch), one line with the scores otherwise.
pub fn epoch_block(style: Style, at: Duration, epoch: &EpochSummary) -> String {
    let when = if epoch.activates_in < Duration::from_millis(100) {
        "in force now".to_owned()
    } else {
        format!("takes effect in {:.1} s", epoch.activates_in.as_secs_f64())
    };
    let title = format!(
        "epoch {}: {}; {when}, lasts {} s",
        epoch.id,
        cause_text(epoch.id, &epoch.cause),
        epoch.length.as_secs()
    );
    let unchanged = epoch
        .decisions
        .iter()
        .all(|d| matches!(d.change, Change::Stays | Change::StillDenied));
    if epoch.id > 1 && unchanged {
        let scores: Vec<String> = epoch
            .decisions
            .iter()
            .map(|d| {
                let score = d.score.map(|s| format!(" {s:.2}")).unwrap_or_default();
                let verdict = if d.allowed {
                    style.good("ALLOW")
                } else {
                    style.bad("DENY")
                };
                format!("{}{score} {verdict}", d.node)
            })
            .collect();
        return event(
            at,
            &format!(
                "{}\n{CONTINUE}no change in membership: {}",
                style.strong(&title),
                scores.join(", ")
            ),
        );
    }
    let mut out = event(at, &style.strong(&title));
    for d in &epoch.decisions {
        let verdict = if d.allowed {
            style.good("ALLOW")
        } else {
            style.bad("DENY ")
        };
        let change = match d.change {
            Change::Admitted => style.notice("admitted   "),
            Change::Readmitted => style.notice("READMITTED "),
            Change::CutOff => style.notice("CUT OFF    "),
            Change::Stays | Change::StillDenied => " ".repeat(11),
        };
        let _ = write!(
            out,
            "\n{CONTINUE}{}  {verdict}  {change}{}",
            d.node,
            style.dim(&d.reason)
        );
    }
    out
}

/// What the nodes applied of an epoch, e.g. `epoch 8 in force on the nodes: node-a keys for
/// node-b, node-c · node-c denied, no keys`.
pub fn applied_line(
    style: Style,
    at: Duration,
    epoch: u64,
    nodes: &BTreeMap<String, NodeApplied>,
) -> String {
    let parts: Vec<String> = nodes
        .iter()
        .map(
            |(node, applied)| match (applied.allowed, applied.peers.as_slice()) {
                (Some(false), _) => style.bad(&format!("{node} denied, no keys")),
                (_, []) => format!("{node} allowed, no peers"),
                (_, peers) => format!("{node} keys for {}", peers.join(", ")),
            },
        )
        .collect();
    event(
        at,
        &format!("epoch {epoch} in force on the nodes: {}", parts.join(" · ")),
    )
}

fn rtt_text(rtt: Duration) -> String {
    let ms = rtt.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// One direction: `a→b ok 0.4 ms`, `a→b cut off` (`silent`), `a→b unreachable (why)`.
fn direction_text(style: Style, probe: &Probe, silent: &str) -> String {
    let arrow = format!("{}→{}", probe.from, probe.to);
    match &probe.outcome {
        Outcome::Reply(rtt) => style.good(&format!("{arrow} ok {}", rtt_text(*rtt))),
        Outcome::NoReply => style.bad(&format!("{arrow} {silent}")),
        Outcome::SendFailed(why) => style.bad(&format!("{arrow} unreachable ({why})")),
    }
}

/// One pair: `a↔b ok 0.4 ms` or `a↔c cut off` (`silent`) when both directions agree, each
/// direction otherwise.
fn pair_text(style: Style, there: &Probe, back: &Probe, silent: &str) -> String {
    match (&there.outcome, &back.outcome) {
        (Outcome::Reply(x), Outcome::Reply(y)) => style.good(&format!(
            "{}↔{} ok {}",
            there.from,
            there.to,
            rtt_text((*x).max(*y))
        )),
        (Outcome::NoReply, Outcome::NoReply) => {
            style.bad(&format!("{}↔{} {silent}", there.from, there.to))
        }
        _ => format!(
            "{}, {}",
            direction_text(style, there, silent),
            direction_text(style, back, silent)
        ),
    }
}

/// A round of pings: every pair of nodes, e.g. `ping  a↔b ok 0.4 ms   a↔c cut off   …`.
pub fn ping_line(style: Style, at: Duration, probes: &[Probe]) -> String {
    ping_line_as(style, at, probes, "cut off")
}

/// A round of pings, an unanswered pair called `silent` (`cut off` once a node is denied;
/// `no reply` when no path may be open yet).
pub fn ping_line_as(style: Style, at: Duration, probes: &[Probe], silent: &str) -> String {
    let find = |from: char, to: char| probes.iter().find(|p| p.from == from && p.to == to);
    let mut pairs = Vec::new();
    for (i, x) in NODES.iter().enumerate() {
        for y in &NODES[i + 1..] {
            if let (Some(there), Some(back)) = (find(x.letter, y.letter), find(y.letter, x.letter))
            {
                pairs.push(pair_text(style, there, back, silent));
            }
        }
    }
    event(at, &format!("ping  {}", pairs.join("   ")))
}

/// A node's log line, e.g. `node-a  MEMBERSHIP=ALLOWED epoch=2 peers=1`.
pub fn node_line(style: Style, at: Duration, node: &str, text: &str) -> String {
    let text = if text.starts_with("WARN") || text.starts_with("ERROR") {
        style.bad(text)
    } else {
        style.dim(text)
    };
    event(at, &format!("{node}  {text}"))
}

/// The announcement of node c's recovery.
pub fn recovery(style: Style, at: Duration, node: &str, pid: u32) -> String {
    format!(
        "{}\n{CONTINUE}{}",
        event(
            at,
            &style.notice(&format!(
                "{node}'s score recovers: its benchmark now averages {RECOVERED_MEAN:.2}"
            ))
        ),
        style.dim(&format!(
            "(its configuration was rewritten and its daemon, pid {pid}, rereads it on SIGHUP;\n\
             {CONTINUE} the controller readmits it at the next epoch)"
        ))
    )
}

fn secs(at: Duration) -> String {
    format!("{:.1} s", at.as_secs_f64())
}

/// "1 epoch", "2 epochs".
fn plural(count: u32, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

fn check(style: Style, seen: bool) -> String {
    if seen {
        style.good("✓")
    } else {
        style.bad("✗")
    }
}

/// What the demo showed, and what it did not.
pub fn summary(style: Style, story: &Story) -> String {
    let mut out = format!("\n{}\n", style.strong("What happened"));
    if let Some(nat) = &story.nat {
        out.push_str(&nat::summary(style, story, nat));
        return out;
    }
    if let Some(judged) = &story.evaluators {
        out.push_str(&evaluators::summary(style, story, judged));
        return out;
    }
    let ab = match story.ab_connected {
        Some(at) => format!(
            "node-a and node-b were allowed and reached each other through the tunnel from {};\n    \
             they answered each other in {} of {} ping rounds, through {} with new keys.",
            secs(at),
            story.ab_rounds.0,
            story.ab_rounds.1,
            plural(story.ab_epochs, "epoch")
        ),
        None => "node-a and node-b never reached each other through the tunnel.".to_owned(),
    };
    let _ = writeln!(out, "  {} {ab}", check(style, story.ab_connected.is_some()));
    let reason = story
        .c_denied
        .as_ref()
        .map(|(epoch, reason)| format!(" in epoch {epoch} ({reason})"))
        .unwrap_or_default();
    let c = match story.c_isolated {
        Some(at) => format!(
            "node-c was denied{reason}\n    \
             and cut off: from {} nobody reached it through the tunnel and it reached nobody.",
            secs(at)
        ),
        None => format!("node-c was denied{reason}, but was not seen cut off."),
    };
    let _ = writeln!(out, "  {} {c}", check(style, story.c_isolated.is_some()));
    let back = match (story.recovered, story.readmitted, story.c_reconnected) {
        (None, _, _) => "node-c's score did not recover before the end.".to_owned(),
        (Some(r), None, _) => format!(
            "node-c's score recovered at {}, but no epoch readmitted it before the end.",
            secs(r)
        ),
        (Some(r), Some((epoch, at)), None) => format!(
            "node-c's score recovered at {}; epoch {epoch} readmitted it at {},\n    \
             but it was not seen reaching both others.",
            secs(r),
            secs(at)
        ),
        (Some(r), Some((epoch, at)), Some(ok)) => format!(
            "node-c's score recovered at {}; epoch {epoch} readmitted it at {},\n    \
             and from {} it reached node-a and node-b and they reached it.",
            secs(r),
            secs(at),
            secs(ok)
        ),
    };
    let _ = writeln!(
        out,
        "  {} {back}",
        check(style, story.c_reconnected.is_some())
    );
    if let Some(takeover) = &story.ha {
        out.push_str(&ha::summary(style, takeover));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::story::NodeDecision;

    const PLAIN: Style = Style { color: false };

    fn probe(from: char, to: char, outcome: Outcome) -> Probe {
        Probe { from, to, outcome }
    }

    fn ok(micros: u64) -> Outcome {
        Outcome::Reply(Duration::from_micros(micros))
    }

    #[test]
    fn the_ping_line_names_each_pair_once_when_both_directions_agree() {
        let probes = [
            probe('a', 'b', ok(400)),
            probe('a', 'c', Outcome::NoReply),
            probe('b', 'a', ok(350)),
            probe('b', 'c', ok(900)),
            probe('c', 'a', Outcome::NoReply),
            probe(
                'c',
                'b',
                Outcome::SendFailed("Network is unreachable".into()),
            ),
        ];
        assert_eq!(
            ping_line(PLAIN, Duration::from_millis(12_340), &probes),
            "[  12.3s] ping  a↔b ok 0.4 ms   a↔c cut off   \
             b→c ok 0.9 ms, c→b unreachable (Network is unreachable)"
        );
    }

    #[test]
    fn slow_answers_are_whole_milliseconds() {
        assert_eq!(rtt_text(Duration::from_micros(15_600)), "16 ms");
        assert_eq!(rtt_text(Duration::from_micros(9_940)), "9.9 ms");
    }

    #[test]
    fn colours_only_when_asked() {
        assert_eq!(Style::new(false).good("ok"), "ok");
        assert_eq!(Style::new(true).good("ok"), "\x1b[32mok\x1b[0m");
        let line = ping_line(Style::new(true), Duration::ZERO, &[]);
        assert_eq!(line, "[   0.0s] ping  ");
    }

    #[test]
    fn an_epoch_shows_its_cause_timing_and_every_decision() {
        let epoch = EpochSummary {
            id: 7,
            cause: "schedule".into(),
            activates_in: Duration::from_millis(1_960),
            length: Duration::from_secs(10),
            decided_ms: 0,
            decisions: vec![
                NodeDecision {
                    node: "node-a".into(),
                    allowed: true,
                    reason: "overall score 0.91 meets the threshold 0.70".into(),
                    score: Some(0.91),
                    change: Change::Stays,
                },
                NodeDecision {
                    node: "node-c".into(),
                    allowed: true,
                    reason: "overall score 0.89 meets the threshold 0.70".into(),
                    score: Some(0.89),
                    change: Change::Readmitted,
                },
            ],
        };
        let text = epoch_block(PLAIN, Duration::from_secs(70), &epoch);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "[  70.0s] epoch 7: scheduled: new keys for every allowed pair; takes effect in 2.0 s, lasts 10 s",
                "          node-a  ALLOW             overall score 0.91 meets the threshold 0.70",
                "          node-c  ALLOW  READMITTED overall score 0.89 meets the threshold 0.70",
            ]
        );
    }

    #[test]
    fn an_epoch_without_change_takes_two_lines_and_the_first_is_shown_in_full() {
        let decision = |node: &str, allowed: bool, score: Option<f64>| NodeDecision {
            node: node.into(),
            allowed,
            reason: "some reason".into(),
            score,
            change: if allowed {
                Change::Stays
            } else {
                Change::StillDenied
            },
        };
        let mut epoch = EpochSummary {
            id: 3,
            cause: "schedule".into(),
            activates_in: Duration::ZERO,
            length: Duration::from_secs(5),
            decided_ms: 0,
            decisions: vec![
                decision("node-a", true, Some(0.884)),
                decision("node-c", false, None),
            ],
        };
        assert_eq!(
            epoch_block(PLAIN, Duration::from_secs(8), &epoch),
            "[   8.0s] epoch 3: scheduled: new keys for every allowed pair; in force now, lasts 5 s\n\
             \x20         no change in membership: node-a 0.88 ALLOW, node-c DENY"
        );
        epoch.id = 1;
        let text = epoch_block(PLAIN, Duration::from_secs(8), &epoch);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.contains("node-c  DENY              some reason"),
            "{text}"
        );
    }

    #[test]
    fn what_the_nodes_applied_is_one_line_per_epoch() {
        let mut nodes = BTreeMap::new();
        let applied = |allowed: Option<bool>, peers: &[&str]| NodeApplied {
            allowed,
            peers: peers.iter().map(|p| p.to_string()).collect(),
        };
        nodes.insert(
            "node-a".to_owned(),
            applied(Some(true), &["node-b", "node-c"]),
        );
        nodes.insert("node-b".to_owned(), applied(Some(true), &[]));
        nodes.insert("node-c".to_owned(), applied(Some(false), &[]));
        assert_eq!(
            applied_line(PLAIN, Duration::from_secs(35), 8, &nodes),
            "[  35.0s] epoch 8 in force on the nodes: node-a keys for node-b, node-c · \
             node-b allowed, no peers · node-c denied, no keys"
        );
    }

    #[test]
    fn causes_are_explained() {
        assert_eq!(cause_text(1, "schedule"), "the first epoch");
        assert_eq!(
            cause_text(4, "deny: node-b"),
            "immediate: node-b no longer passes"
        );
        assert_eq!(
            cause_text(2, "admin"),
            "the first epoch with every node's score"
        );
        assert_eq!(cause_text(4, "restore"), "restore");
    }

    #[test]
    fn the_summary_says_what_was_and_was_not_seen() {
        let s = |secs: u64| Some(Duration::from_secs(secs));
        let story = Story {
            first_epoch: s(3),
            ab_connected: s(6),
            ab_rounds: (20, 20),
            ab_epochs: 6,
            c_denied: Some((1, "overall score 0.41 is below the threshold 0.70".into())),
            c_isolated: s(6),
            recovered: s(33),
            readmitted: Some((4, Duration::from_secs(38))),
            c_reconnected: None,
            ha: None,
            nat: None,
            evaluators: None,
        };
        let text = summary(PLAIN, &story);
        assert!(text.contains("✓ node-a and node-b were allowed"), "{text}");
        assert!(
            text.contains("in 20 of 20 ping rounds, through 6 epochs"),
            "{text}"
        );
        assert!(
            text.contains("✓ node-c was denied in epoch 1 (overall score 0.41 is below the threshold 0.70)\n    and cut off"),
            "{text}"
        );
        assert!(
            text.contains("✗ node-c's score recovered at 33.0 s; epoch 4 readmitted it at 38.0 s"),
            "{text}"
        );
        assert!(text.contains("not seen reaching both others"), "{text}");
    }

    #[test]
    fn the_header_explains_the_scenario_and_where_things_are() {
        let opts = DemoOptions {
            epoch: Duration::from_secs(10),
            duration: Duration::from_secs(120),
            keep_going: false,
            keep: false,
            ha: false,
            nat: false,
            evaluators: false,
            dashboard: None,
        };
        let text = header(
            PLAIN,
            &Names::new(77),
            &opts,
            Path::new("/tmp/meshtun-demo-x"),
        );
        for expected in [
            "node-a      outer 192.0.2.1   tunnel 100.64.0.1   scores around 0.90",
            "node-c      outer 192.0.2.3   tunnel 100.64.0.3   scores around 0.40",
            "epochs of 10 s; a node needs an overall score of 0.70",
            "60 s after the first epoch, node-c's score recovers to 0.90",
            "The demo ends after 120 s.",
            "mtdemo-77-{hub,ctl,a,b,c}",
            "/tmp/meshtun-demo-x (removed at the end; --keep keeps them)",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
