//! What `meshtun demo --ha` prints beyond the default demo: the two controllers in the
//! introduction, who leads, the kill, the takeover, the first epoch of the new leader, the
//! pings counted across the takeover, and the summary's lines about them.

use std::fmt::Write as _;
use std::time::Duration;

use super::{check, event, secs, Style, CONTINUE};
use crate::demo::ping::Tally;
use crate::demo::plan::{HA_LEASE, STEADY_PING_EVERY};
use crate::demo::story::{HaStory, Story};

/// Who runs, in the introduction.
pub(super) const WHO: &str =
    "Two controllers (`meshtun-controller serve`, ctl-1 and ctl-2, on one PostgreSQL\n\
     database the demo starts),";

/// What to expect of the kill, in the introduction.
pub(super) fn expect_takeover(kill: Duration) -> String {
    let per_second = 1000 / STEADY_PING_EVERY.as_millis().max(1);
    format!(
        "Every node lists both controllers. One leads: it alone decides and publishes epochs; \
         the other\nserves bundles from the same database. {} s after the first epoch, the demo \
         kills the leader\n(SIGKILL); the other takes over within its lease ({} s and a third), \
         and the epochs go on.\nFrom the kill until node-c's recovery, node-a and node-b ping \
         each other {per_second} times a second\neach way: not one may be lost.\n",
        kill.as_secs(),
        HA_LEASE.as_secs()
    )
}

/// The leader, as `status` names it.
pub fn leader_named(style: Style, instance: &str, term: u64) -> String {
    format!(
        "{} {}",
        style.strong(&format!("{instance} leads (term {term})")),
        style.dim("as `meshtun-controller status` says (its `cluster` field)")
    )
}

/// The kill.
pub fn leader_killed(style: Style, at: Duration, instance: &str, pid: u32) -> String {
    format!(
        "{}\n{CONTINUE}{}",
        event(
            at,
            &style.notice(&format!(
                "killed the leader {instance} (SIGKILL to pid {pid}): it publishes nothing more"
            ))
        ),
        style.dim("(node-a and node-b now ping each other 10 times a second each way)")
    )
}

/// The takeover, once `status` says the other instance leads.
pub fn took_over(style: Style, at: Duration, instance: &str, term: u64, after: Duration) -> String {
    event(
        at,
        &style.notice(&format!(
            "{instance} took over: it leads in term {term}, {:.1} s after the kill",
            after.as_secs_f64()
        )),
    )
}

/// After the first epoch decided since the kill.
pub fn new_leader_epoch(style: Style, story: &Story) -> String {
    let leader = story
        .ha
        .as_ref()
        .and_then(|ha| ha.took_over.as_ref())
        .map_or("the new leader".to_owned(), |(name, term, _)| {
            format!("{name} (term {term})")
        });
    format!(
        "{CONTINUE}{}",
        style.notice(&format!(
            "decided and published by {leader}: the epochs go on, and node-c stays denied \
             unless its score passes"
        ))
    )
}

/// The pings counted across the takeover.
pub fn steady_line(style: Style, at: Duration, tally: Tally, over: Duration) -> String {
    let text = format!(
        "ping  a↔b across the takeover: {} of {} answered in {:.1} s ({} lost)",
        tally.answered,
        tally.sent,
        over.as_secs_f64(),
        tally.sent - tally.answered.min(tally.sent)
    );
    let text = if tally.sent > 0 && tally.answered == tally.sent {
        style.good(&text)
    } else {
        style.bad(&text)
    };
    event(at, &text)
}

/// The summary's lines about the takeover.
pub(super) fn summary(style: Style, ha: &HaStory) -> String {
    let mut out = String::new();
    let killed = match (&ha.leader, ha.killed) {
        (Some((name, term)), Some((at, _))) => {
            format!("{name} led (term {term}) and was killed at {}", secs(at))
        }
        (Some((name, term)), None) => format!("{name} led (term {term}) but was not killed"),
        (None, _) => "no leader was named".to_owned(),
    };
    let took = match &ha.took_over {
        Some((name, term, at)) => {
            format!(";\n    {name} took over in term {term} at {}", secs(*at))
        }
        None => ";\n    no other instance was seen taking over".to_owned(),
    };
    let _ = writeln!(
        out,
        "  {} {killed}{took}.",
        check(style, ha.took_over.is_some())
    );
    let (epoch_ok, epoch) = match (ha.epoch_after, ha.c_cut_after) {
        (Some((id, _, true)), Some(cut)) => (
            true,
            format!(
                "the new leader's epoch {id} still denied node-c, and from {} it was still \
                 cut off.",
                secs(cut)
            ),
        ),
        (Some((id, _, denied)), cut) => (
            false,
            format!(
                "the new leader decided epoch {id}{}{}.",
                if denied {
                    ""
                } else {
                    ", which did not deny node-c"
                },
                if cut.is_some() {
                    ""
                } else {
                    "; node-c was not seen cut off after the takeover"
                }
            ),
        ),
        (None, _) => (false, "no epoch was decided after the kill.".to_owned()),
    };
    let _ = writeln!(out, "  {} {epoch}", check(style, epoch_ok));
    let (pings_ok, pings) = match ha.steady {
        Some((answered, sent)) => (
            sent > 0 && answered == sent,
            format!("node-a and node-b answered {answered} of {sent} pings across the takeover."),
        ),
        None => (
            false,
            "the pings across the takeover were not counted.".to_owned(),
        ),
    };
    let _ = writeln!(out, "  {} {pings}", check(style, pings_ok));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Style = Style { color: false };

    #[test]
    fn the_takeover_is_told_and_summed_up() {
        assert_eq!(
            took_over(
                PLAIN,
                Duration::from_secs(30),
                "ctl-2",
                2,
                Duration::from_millis(1_740)
            ),
            "[  30.0s] ctl-2 took over: it leads in term 2, 1.7 s after the kill"
        );
        let lost = Tally {
            answered: 398,
            sent: 400,
        };
        assert!(
            steady_line(PLAIN, Duration::ZERO, lost, Duration::from_secs(20))
                .ends_with("398 of 400 answered in 20.0 s (2 lost)")
        );
        let s = |secs: u64| Duration::from_secs(secs);
        let mut ha = HaStory {
            leader: Some(("ctl-1".into(), 1)),
            killed: Some((s(20), 0)),
            took_over: Some(("ctl-2".into(), 2, s(22))),
            epoch_after: Some((9, s(24), true)),
            c_cut_after: Some(s(25)),
            steady: Some((400, 400)),
        };
        let text = summary(PLAIN, &ha);
        assert_eq!(text.matches('✓').count(), 3, "{text}");
        assert!(
            text.contains("ctl-1 led (term 1) and was killed at 20.0 s"),
            "{text}"
        );
        assert!(
            text.contains("ctl-2 took over in term 2 at 22.0 s"),
            "{text}"
        );
        assert!(text.contains("epoch 9 still denied node-c"), "{text}");
        assert!(text.contains("answered 400 of 400 pings"), "{text}");
        ha.steady = Some((399, 400));
        ha.took_over = None;
        let text = summary(PLAIN, &ha);
        assert_eq!(text.matches('✗').count(), 2, "{text}");
    }
}
