//! `meshtun demo --ha`: the leader's death. Who leads is read from `meshtun-controller
//! status` (its `cluster` field); a third of the way the demo SIGKILLs that instance, then
//! asks the survivor until it says it leads, in a newer term. From the kill until node-c's
//! recovery, node-a and node-b ping each other ten times a second each way
//! ([`super::ping::Steady`]), and the demo prints how many were answered.

use std::time::{Duration, Instant};

use super::narrative;
use super::ping::Steady;
use super::plan::{NODES, PING_TIMEOUT, STEADY_PING_EVERY};
use super::scenario::{not_started, unix_ms, Watch};
use super::DemoError;

/// How long the demo waits for a leader to be named, at the start and after the kill.
const LEADER_WAIT: Duration = Duration::from_secs(20);

/// How often `status` is asked who leads while waiting.
const ASK_EVERY: Duration = Duration::from_millis(200);

/// The leader's replacement, from the kill on.
#[derive(Debug)]
pub(super) struct Takeover {
    /// The killed instance's index in the lab's controllers.
    killed: usize,
    /// Its term.
    old_term: u64,
    /// When it was killed.
    at: Instant,
    /// The last time the survivor was asked.
    asked: Option<Instant>,
    /// Whether the survivor was seen leading.
    done: bool,
    /// The pings between node-a and node-b, until node-c's recovery.
    steady: Option<Steady>,
}

impl Watch<'_> {
    /// Asks the running controllers who leads until one says (at most [`LEADER_WAIT`]);
    /// the leader's index in the lab's controllers and its term.
    fn ask_leader(&self) -> Result<Option<(usize, u64)>, DemoError> {
        let network = self.lab.network.as_ref().ok_or_else(not_started)?;
        let Some(asked) = self.lab.controllers.iter().find(|c| c.pid().is_some()) else {
            return Ok(None);
        };
        let ns = network.get(&self.names.namespace(asked.spec().role))?;
        let view = asked.cluster(ns)?;
        Ok(self
            .lab
            .controllers
            .iter()
            .position(|c| c.pid().is_some() && view.led_by(c.spec().instance))
            .map(|index| (index, view.term)))
    }

    /// Names the leader (waiting for one); its index in the lab's controllers.
    pub(super) fn name_leader(&mut self) -> Result<usize, DemoError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            if let Some((index, term)) = self.ask_leader()? {
                let name = self.lab.controllers[index].spec().instance;
                if let Some(ha) = self.story.ha.as_mut() {
                    ha.leader = Some((name.to_owned(), term));
                }
                self.narrator
                    .event(&narrative::leader_named(self.style, name, term));
                return Ok(index);
            }
            if Instant::now() >= deadline {
                return Err(DemoError::Controller(format!(
                    "no instance leads: `meshtun-controller status` named no leader within {} s",
                    LEADER_WAIT.as_secs()
                )));
            }
            std::thread::sleep(ASK_EVERY);
        }
    }

    /// Names the leader again, SIGKILLs it and starts the pings between node-a and node-b.
    pub(super) fn kill_leader(&mut self) -> Result<Takeover, DemoError> {
        let leader = self.name_leader()?;
        let old_term = self
            .story
            .ha
            .as_ref()
            .and_then(|ha| ha.leader.as_ref())
            .map_or(0, |(_, term)| *term);
        let from = self.ping_from();
        let pairs = vec![(from[0].clone(), &NODES[1]), (from[1].clone(), &NODES[0])];
        let steady = Steady::start(pairs, STEADY_PING_EVERY, PING_TIMEOUT);
        let controller = &mut self.lab.controllers[leader];
        let pid = controller.pid().unwrap_or_default();
        let name = controller.spec().instance;
        controller.kill();
        let at = self.narrator.at();
        if let Some(ha) = self.story.ha.as_mut() {
            ha.killed = Some((at, unix_ms()));
        }
        self.narrator
            .say(&narrative::leader_killed(self.style, at, name, pid));
        Ok(Takeover {
            killed: leader,
            old_term,
            at: Instant::now(),
            asked: None,
            done: false,
            steady: Some(steady),
        })
    }

    /// Until the survivor says it leads, asks it (every [`ASK_EVERY`]); prints the takeover.
    pub(super) fn watch_takeover(&mut self, takeover: &mut Takeover) -> Result<(), DemoError> {
        if takeover.done || takeover.asked.is_some_and(|at| at.elapsed() < ASK_EVERY) {
            return Ok(());
        }
        takeover.asked = Some(Instant::now());
        let Some((index, term)) = self.ask_leader()? else {
            if takeover.at.elapsed() > LEADER_WAIT {
                return Err(DemoError::Controller(format!(
                    "no instance took over within {} s of the kill",
                    LEADER_WAIT.as_secs()
                )));
            }
            return Ok(());
        };
        if index == takeover.killed || term <= takeover.old_term {
            return Ok(());
        }
        takeover.done = true;
        let name = self.lab.controllers[index].spec().instance;
        let at = self.narrator.at();
        if let Some(ha) = self.story.ha.as_mut() {
            ha.took_over = Some((name.to_owned(), term, at));
        }
        self.narrator.say(&narrative::took_over(
            self.style,
            at,
            name,
            term,
            takeover.at.elapsed(),
        ));
        Ok(())
    }

    /// Stops the pings between node-a and node-b and prints how many were answered.
    pub(super) fn end_takeover(&mut self, takeover: &mut Takeover) {
        let Some(steady) = takeover.steady.take() else {
            return;
        };
        let tally = steady.finish();
        if let Some(ha) = self.story.ha.as_mut() {
            ha.steady = Some((tally.answered, tally.sent));
        }
        self.narrator.say(&narrative::steady_line(
            self.style,
            self.narrator.at(),
            tally,
            takeover.at.elapsed(),
        ));
    }
}
