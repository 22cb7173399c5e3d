//! What the demo has shown so far: fed with every epoch and every round of pings, it
//! records when each step of the scenario was first seen, for the summary and the exit
//! status.

use std::time::Duration;

use super::evaluators::EvaluatorsStory;
use super::nat::NatStory;
use super::ping::Probe;

/// How one node's membership changed from the previous epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Allowed for the first time.
    Admitted,
    /// Allowed again, after being denied.
    Readmitted,
    /// Allowed, as before.
    Stays,
    /// Denied, after being allowed.
    CutOff,
    /// Denied, as before (or from the start).
    StillDenied,
}

impl Change {
    /// The change from `before` (`None`: never decided) to `allowed`.
    pub fn between(before: Option<bool>, allowed: bool) -> Self {
        match (before, allowed) {
            (None, true) => Change::Admitted,
            (Some(false), true) => Change::Readmitted,
            (Some(true), true) => Change::Stays,
            (Some(true), false) => Change::CutOff,
            (_, false) => Change::StillDenied,
        }
    }
}

/// One node's decision in an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDecision {
    /// The node id.
    pub node: String,
    /// Whether it may be in the mesh.
    pub allowed: bool,
    /// The controller's reason.
    pub reason: String,
    /// The overall score decided on, if there was one.
    pub score: Option<f64>,
    /// Compared with the previous epoch.
    pub change: Change,
}

/// A newly decided epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochSummary {
    /// Its number.
    pub id: u64,
    /// Why it was published (`schedule`, `deny: node-x`, …).
    pub cause: String,
    /// When it takes effect, relative to when it was decided.
    pub activates_in: Duration,
    /// How long it lasts.
    pub length: Duration,
    /// When it was decided, Unix milliseconds.
    pub decided_ms: u64,
    /// Every node's decision, in node order.
    pub decisions: Vec<NodeDecision>,
}

/// The node whose story is told: cut off, recovering, readmitted.
const C: char = 'c';
/// Its id.
const C_ID: &str = "node-c";

/// When each step of the scenario was first seen (times since the demo started).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Story {
    /// The first epoch.
    pub first_epoch: Option<Duration>,
    /// a and b answered each other's pings.
    pub ab_connected: Option<Duration>,
    /// Rounds from then on in which a and b answered each other, and all rounds.
    pub ab_rounds: (u32, u32),
    /// Epochs (with new keys) that a and b went through together after connecting.
    pub ab_epochs: u32,
    /// The first epoch that denied node c, with the reason.
    pub c_denied: Option<(u64, String)>,
    /// Node c neither reached nor was reached by anyone, before its recovery.
    pub c_isolated: Option<Duration>,
    /// Node c's score was raised.
    pub recovered: Option<Duration>,
    /// The epoch that allowed node c again after the recovery, and when it was decided.
    pub readmitted: Option<(u64, Duration)>,
    /// Node c reached and was reached by both others after its readmission.
    pub c_reconnected: Option<Duration>,
    /// With `--ha`: the leader's death and its successor.
    pub ha: Option<HaStory>,
    /// With `--nat`: addresses, paths, and node-c's denial.
    pub nat: Option<NatStory>,
    /// With `--evaluators`: the statements, node-c's claim, its denial and cut-off.
    pub evaluators: Option<EvaluatorsStory>,
}

/// With `--ha`: what was shown of the leader's replacement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HaStory {
    /// The leader and its term, as `status` named it before the kill.
    pub leader: Option<(String, u64)>,
    /// When the leader was killed: since the start, and Unix milliseconds.
    pub killed: Option<(Duration, u64)>,
    /// The instance that took over, its term, and when it was seen leading.
    pub took_over: Option<(String, u64, Duration)>,
    /// The first epoch decided after the kill, when it was shown, and whether it denied
    /// node c.
    pub epoch_after: Option<(u64, Duration, bool)>,
    /// A round of pings after the takeover, before the recovery, in which node c was cut off.
    pub c_cut_after: Option<Duration>,
    /// Pings between node-a and node-b from the kill until the recovery: answered, sent.
    pub steady: Option<(u32, u32)>,
}

impl HaStory {
    /// Records an epoch; true if it is the first one decided after the kill.
    fn on_epoch(&mut self, at: Duration, epoch: &EpochSummary) -> bool {
        let after_kill = self
            .killed
            .is_some_and(|(_, killed_ms)| epoch.decided_ms >= killed_ms);
        if !after_kill || self.epoch_after.is_some() {
            return false;
        }
        let c_denied = epoch.decisions.iter().any(|d| d.node == C_ID && !d.allowed);
        self.epoch_after = Some((epoch.id, at, c_denied));
        true
    }

    /// The steps not seen.
    fn missing(&self) -> Vec<&'static str> {
        let all_answered = self
            .steady
            .is_some_and(|(answered, sent)| sent > 0 && answered == sent);
        [
            (self.leader.is_some(), "the leader named by `status`"),
            (self.killed.is_some(), "the leader killed"),
            (
                self.took_over.is_some(),
                "the other controller taking over after the kill",
            ),
            (
                self.epoch_after.is_some_and(|(_, _, c_denied)| c_denied),
                "an epoch decided by the new leader, still denying node-c",
            ),
            (
                self.c_cut_after.is_some(),
                "node-c still cut off after the takeover",
            ),
            (
                all_answered,
                "every ping between node-a and node-b answered across the takeover",
            ),
        ]
        .into_iter()
        .filter(|(seen, _)| !seen)
        .map(|(_, what)| what)
        .collect()
    }
}

impl Story {
    /// Records a newly decided epoch; true if it is the first one decided after the
    /// leader was killed (with `--ha`).
    pub fn on_epoch(&mut self, at: Duration, epoch: &EpochSummary) -> bool {
        self.first_epoch.get_or_insert(at);
        let first_after_kill = self.ha.as_mut().is_some_and(|ha| ha.on_epoch(at, epoch));
        let decision = |id: &str| epoch.decisions.iter().find(|d| d.node == id);
        if self.ab_connected.is_some()
            && decision("node-a").is_some_and(|d| d.allowed)
            && decision("node-b").is_some_and(|d| d.allowed)
        {
            self.ab_epochs += 1;
        }
        if let Some(c) = decision(C_ID) {
            if let Some(nat) = self.nat.as_mut().filter(|n| n.c_denied.is_none()) {
                if c.change == Change::CutOff {
                    nat.c_denied = Some((epoch.id, epoch.decided_ms));
                }
            }
            if let Some(judged) = self.evaluators.as_mut() {
                let cut_off = c.change == Change::CutOff;
                judged.on_decision(epoch.id, epoch.decided_ms, cut_off, &c.reason);
            }
            if !c.allowed && self.c_denied.is_none() {
                self.c_denied = Some((epoch.id, c.reason.clone()));
            }
            if c.allowed && self.recovered.is_some() && self.readmitted.is_none() {
                self.readmitted = Some((epoch.id, at));
            }
        }
        first_after_kill
    }

    /// Records node c's recovery.
    pub fn on_recovery(&mut self, at: Duration) {
        self.recovered.get_or_insert(at);
    }

    /// Records a round of pings.
    pub fn on_pings(&mut self, at: Duration, probes: &[Probe]) {
        let answered = |from: char, to: char| {
            probes
                .iter()
                .any(|p| p.from == from && p.to == to && p.answered())
        };
        let ab = answered('a', 'b') && answered('b', 'a');
        if ab {
            self.ab_connected.get_or_insert(at);
        }
        if self.ab_connected.is_some() {
            self.ab_rounds.1 += 1;
            self.ab_rounds.0 += u32::from(ab);
        }
        let involving_c: Vec<&Probe> = probes.iter().filter(|p| p.from == C || p.to == C).collect();
        if involving_c.is_empty() {
            return;
        }
        if self.first_epoch.is_some()
            && self.recovered.is_none()
            && involving_c.iter().all(|p| !p.answered())
        {
            self.c_isolated.get_or_insert(at);
            if let Some(ha) = self.ha.as_mut().filter(|ha| ha.took_over.is_some()) {
                ha.c_cut_after.get_or_insert(at);
            }
        }
        if self.readmitted.is_some() && involving_c.iter().all(|p| p.answered()) {
            self.c_reconnected.get_or_insert(at);
        }
    }

    /// The steps of the scenario not seen (empty: everything was shown).
    pub fn missing(&self) -> Vec<&'static str> {
        let short = self
            .nat
            .as_ref()
            .map(NatStory::missing)
            .or_else(|| self.evaluators.as_ref().map(EvaluatorsStory::missing));
        if let Some(mut missing) = short {
            if self.ab_connected.is_none() {
                missing.insert(
                    0,
                    "node-a and node-b reaching each other through the tunnel",
                );
            }
            return missing;
        }
        let mut missing = self.missing_gating();
        missing.extend(self.ha.iter().flat_map(HaStory::missing));
        missing
    }

    /// The steps of the gating story not seen.
    fn missing_gating(&self) -> Vec<&'static str> {
        [
            (
                self.ab_connected.is_some(),
                "node-a and node-b reaching each other through the tunnel",
            ),
            (
                self.c_isolated.is_some(),
                "node-c cut off while its score was low",
            ),
            (
                self.readmitted.is_some(),
                "node-c readmitted after its score recovered",
            ),
            (
                self.c_reconnected.is_some(),
                "node-c reaching and reached by node-a and node-b after its readmission",
            ),
        ]
        .into_iter()
        .filter(|(seen, _)| !seen)
        .map(|(_, what)| what)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::ping::Outcome;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn epoch(id: u64, c_allowed: bool) -> EpochSummary {
        let d = |node: &str, allowed: bool| NodeDecision {
            node: node.into(),
            allowed,
            reason: if allowed {
                "overall score 0.90 meets the threshold 0.70".into()
            } else {
                "overall score 0.40 is below the threshold 0.70".into()
            },
            score: Some(if allowed { 0.9 } else { 0.4 }),
            change: Change::Stays,
        };
        EpochSummary {
            id,
            cause: "schedule".into(),
            activates_in: Duration::ZERO,
            length: secs(10),
            decided_ms: id * 10_000,
            decisions: vec![d("node-a", true), d("node-b", true), d("node-c", c_allowed)],
        }
    }

    /// A round in which the pairs in `ok` answer (both directions) and no other.
    fn round(ok: &[(char, char)]) -> Vec<Probe> {
        let mut probes = Vec::new();
        for from in ['a', 'b', 'c'] {
            for to in ['a', 'b', 'c'].into_iter().filter(|&t| t != from) {
                let answered = ok
                    .iter()
                    .any(|&(x, y)| (x, y) == (from, to) || (y, x) == (from, to));
                let outcome = if answered {
                    Outcome::Reply(Duration::from_micros(400))
                } else {
                    Outcome::NoReply
                };
                probes.push(Probe { from, to, outcome });
            }
        }
        probes
    }

    #[test]
    fn changes_follow_the_previous_decision() {
        assert_eq!(Change::between(None, true), Change::Admitted);
        assert_eq!(Change::between(None, false), Change::StillDenied);
        assert_eq!(Change::between(Some(false), true), Change::Readmitted);
        assert_eq!(Change::between(Some(true), false), Change::CutOff);
        assert_eq!(Change::between(Some(true), true), Change::Stays);
    }

    #[test]
    fn the_whole_scenario_is_recognised() {
        let mut story = Story::default();
        assert_eq!(story.missing().len(), 4);
        story.on_epoch(secs(3), &epoch(1, false));
        story.on_pings(secs(6), &round(&[('a', 'b')]));
        story.on_epoch(secs(13), &epoch(2, false));
        story.on_pings(secs(16), &round(&[('a', 'b')]));
        story.on_recovery(secs(30));
        // Still the old epoch: c is not readmitted by the recovery alone.
        story.on_pings(secs(33), &round(&[('a', 'b')]));
        assert_eq!(story.readmitted, None);
        story.on_epoch(secs(36), &epoch(3, true));
        story.on_pings(secs(39), &round(&[('a', 'b'), ('a', 'c'), ('b', 'c')]));
        assert!(story.missing().is_empty(), "{:?}", story.missing());
        assert_eq!(story.ab_connected, Some(secs(6)));
        assert_eq!(story.c_isolated, Some(secs(6)));
        assert_eq!(story.c_denied.as_ref().map(|d| d.0), Some(1));
        assert_eq!(story.readmitted, Some((3, secs(36))));
        assert_eq!(story.c_reconnected, Some(secs(39)));
        assert_eq!(story.ab_rounds, (4, 4));
        assert_eq!(story.ab_epochs, 2);
    }

    #[test]
    fn the_takeover_needs_a_new_epoch_denying_c_c_cut_off_and_no_ping_lost() {
        let mut story = Story {
            ha: Some(HaStory::default()),
            ..Story::default()
        };
        assert_eq!(story.missing().len(), 10);
        story.on_epoch(secs(3), &epoch(1, false));
        story.on_pings(secs(6), &round(&[('a', 'b')]));
        let ha = story.ha.as_mut().unwrap();
        ha.leader = Some(("ctl-1".into(), 1));
        ha.killed = Some((secs(20), 25_000));
        // Decided before the kill, read after it: not the new leader's.
        assert!(!story.on_epoch(secs(21), &epoch(2, false)));
        // Before the takeover is seen, a cut-off round does not count as after it.
        story.on_pings(secs(21), &round(&[('a', 'b')]));
        assert_eq!(story.ha.as_ref().unwrap().c_cut_after, None);
        story.ha.as_mut().unwrap().took_over = Some(("ctl-2".into(), 2, secs(22)));
        assert!(story.on_epoch(secs(24), &epoch(3, false)));
        assert!(
            !story.on_epoch(secs(29), &epoch(4, false)),
            "only the first"
        );
        story.on_pings(secs(25), &round(&[('a', 'b')]));
        story.ha.as_mut().unwrap().steady = Some((199, 200));
        assert_eq!(
            story.missing(),
            [
                "node-c readmitted after its score recovered",
                "node-c reaching and reached by node-a and node-b after its readmission",
                "every ping between node-a and node-b answered across the takeover",
            ]
        );
        story.ha.as_mut().unwrap().steady = Some((200, 200));
        assert_eq!(story.missing().len(), 2);
        let ha = story.ha.as_ref().unwrap();
        assert_eq!(ha.epoch_after, Some((3, secs(24), true)));
        assert_eq!(ha.c_cut_after, Some(secs(25)));
    }

    #[test]
    fn with_evaluators_the_story_is_theirs_and_a_cut_off_counts_after_their_second_pass() {
        let mut story = Story {
            evaluators: Some(EvaluatorsStory::default()),
            ..Story::default()
        };
        let missing = story.missing();
        assert_eq!(missing.len(), 7, "{missing:?}");
        assert_eq!(
            missing[0],
            "node-a and node-b reaching each other through the tunnel"
        );
        assert!(!missing.contains(&"node-c readmitted after its score recovered"));
        let mut cut = epoch(4, false);
        cut.decisions[2].change = Change::CutOff;
        story.on_epoch(secs(5), &cut);
        assert_eq!(story.evaluators.as_ref().unwrap().c_denied, None);
        story.evaluators.as_mut().unwrap().cut.arm(secs(6));
        (cut.id, cut.decided_ms) = (5, 50_000);
        story.on_epoch(secs(7), &cut);
        let denied = story.evaluators.as_ref().unwrap().c_denied.clone();
        assert_eq!(denied.map(|(id, _, ms)| (id, ms)), Some((5, 50_000)));
    }

    #[test]
    fn pings_before_the_first_epoch_or_after_recovery_do_not_count_as_a_cut_off() {
        let mut story = Story::default();
        story.on_pings(secs(1), &round(&[]));
        assert_eq!(story.c_isolated, None);
        story.on_epoch(secs(2), &epoch(1, false));
        story.on_recovery(secs(3));
        story.on_pings(secs(4), &round(&[('a', 'b')]));
        assert_eq!(story.c_isolated, None);
        assert!(story
            .missing()
            .contains(&"node-c cut off while its score was low"));
    }

    #[test]
    fn half_a_connection_is_not_a_reconnection_and_lost_rounds_are_counted() {
        let mut story = Story::default();
        story.on_epoch(secs(1), &epoch(1, false));
        story.on_pings(secs(2), &round(&[('a', 'b')]));
        story.on_pings(secs(5), &round(&[]));
        story.on_recovery(secs(6));
        story.on_epoch(secs(7), &epoch(2, true));
        story.on_pings(secs(8), &round(&[('a', 'b'), ('a', 'c')]));
        assert_eq!(story.c_reconnected, None);
        assert_eq!(story.ab_rounds, (2, 3));
        assert_eq!(
            story.missing(),
            ["node-c reaching and reached by node-a and node-b after its readmission"]
        );
    }
}
