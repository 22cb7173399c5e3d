//! node-c's cut-off once something denies it (`--nat`: its score drops; `--evaluators`:
//! their second pass), as the demo sees it: each other node's `CUTOFF peer=node-c` log line
//! with the time from the controller's decision that it gives, and a round of pings in
//! which nobody reached node-c and it reached nobody.

use std::collections::BTreeMap;
use std::time::Duration;

use meshtun_testbed::gatelog::{self, GateEvent};

use super::ping::Probe;

/// The node that is cut off.
pub const C_ID: &str = "node-c";

/// The others, which must drop it.
const OTHERS: [&str; 2] = ["node-a", "node-b"];

/// The bound the story checks: the others drop node-c within this of the decision.
pub const CUTOFF_BOUND_MS: u64 = 1000;

/// What was seen of node-c's cut-off (times since the demo started).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CutOff {
    /// When the change that denies node-c was made; log lines before it do not count.
    pub since: Option<Duration>,
    /// Per node, the `decision_to_cutoff_ms` its `CUTOFF peer=node-c` line gave.
    pub times: BTreeMap<String, Option<u64>>,
    /// A round of pings sent after both others dropped node-c, in which nobody reached it.
    pub silent: Option<Duration>,
}

impl CutOff {
    /// Records that the change denying node-c was made at `at` (the first time counts).
    pub fn arm(&mut self, at: Duration) {
        self.since.get_or_insert(at);
    }

    /// Records `node`'s notable log line `text`: its first `CUTOFF peer=node-c` once armed.
    pub fn on_log(&mut self, node: &str, text: &str) {
        if self.since.is_none() {
            return;
        }
        if let Some(GateEvent::Cutoff {
            peer,
            decision_to_cutoff_ms,
            ..
        }) = gatelog::parse_line(text)
        {
            if peer == C_ID {
                self.times
                    .entry(node.to_owned())
                    .or_insert(decision_to_cutoff_ms);
            }
        }
    }

    /// Records a round of pings, sent once both others had dropped node-c (`sent_after`)
    /// or not: the first such round in which nobody reached node-c and it reached nobody.
    pub fn on_pings(&mut self, at: Duration, sent_after: bool, probes: &[Probe]) {
        let involving_c: Vec<&Probe> = probes
            .iter()
            .filter(|p| p.from == 'c' || p.to == 'c')
            .collect();
        if sent_after && !involving_c.is_empty() && involving_c.iter().all(|p| !p.answered()) {
            self.silent.get_or_insert(at);
        }
    }

    /// Whether both others logged dropping node-c.
    pub fn both(&self) -> bool {
        OTHERS.iter().all(|n| self.times.contains_key(*n))
    }

    /// Whether both others dropped node-c within [`CUTOFF_BOUND_MS`] of the decision.
    pub fn in_time(&self) -> bool {
        OTHERS.iter().all(|n| {
            self.times
                .get(*n)
                .copied()
                .flatten()
                .is_some_and(|ms| ms <= CUTOFF_BOUND_MS)
        })
    }

    /// The times in words: `node-a 5 ms, node-b 7 ms`, or `nobody removed it`.
    pub fn times_text(&self) -> String {
        if self.times.is_empty() {
            return "nobody removed it".to_owned();
        }
        let times: Vec<String> = self
            .times
            .iter()
            .map(|(node, ms)| match ms {
                Some(ms) => format!("{node} {ms} ms"),
                None => format!("{node} (time not logged)"),
            })
            .collect();
        times.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::ping::Outcome;

    #[test]
    fn a_cut_off_counts_only_within_the_bound_from_both_others() {
        let mut cut = CutOff::default();
        assert_eq!(cut.times_text(), "nobody removed it");
        cut.times.insert("node-a".into(), Some(140));
        assert!(!cut.in_time() && !cut.both());
        cut.times.insert("node-b".into(), Some(1400));
        assert!(cut.both() && !cut.in_time());
        cut.times.insert("node-b".into(), Some(90));
        assert!(cut.in_time());
        assert_eq!(cut.times_text(), "node-a 140 ms, node-b 90 ms");
        cut.times.insert("node-b".into(), None);
        assert!(!cut.in_time(), "an unmeasured cut-off is not shown in time");
        assert_eq!(cut.times_text(), "node-a 140 ms, node-b (time not logged)");
    }

    #[test]
    fn cut_offs_count_once_armed_and_silence_after_both() {
        let line = "CUTOFF peer=node-c epoch=5 decision_to_cutoff_ms=137";
        let mut cut = CutOff::default();
        cut.on_log("node-a", line);
        assert!(cut.times.is_empty(), "before the change");
        cut.arm(Duration::from_secs(10));
        cut.arm(Duration::from_secs(11));
        assert_eq!(cut.since, Some(Duration::from_secs(10)));
        cut.on_log("node-a", line);
        cut.on_log(
            "node-a",
            "CUTOFF peer=node-b epoch=5 decision_to_cutoff_ms=1",
        );
        cut.on_log(
            "node-a",
            "CUTOFF peer=node-c epoch=6 decision_to_cutoff_ms=9",
        );
        assert_eq!(cut.times.get("node-a"), Some(&Some(137)), "the first");
        let silent = [Probe {
            from: 'a',
            to: 'c',
            outcome: Outcome::NoReply,
        }];
        cut.on_pings(Duration::from_secs(11), false, &silent);
        assert_eq!(cut.silent, None, "sent before both dropped it");
        let answered = [Probe {
            from: 'c',
            to: 'b',
            outcome: Outcome::Reply(Duration::from_millis(1)),
        }];
        cut.on_pings(Duration::from_secs(12), true, &answered);
        assert_eq!(cut.silent, None);
        cut.on_pings(Duration::from_secs(13), true, &[]);
        assert_eq!(cut.silent, None, "a round without node-c shows nothing");
        cut.on_pings(Duration::from_secs(14), true, &silent);
        assert_eq!(cut.silent, Some(Duration::from_secs(14)));
    }
}
