//! `meshtun demo --evaluators`, step by step: the evaluators registered before the
//! controller serves, their first pass over every node once it does, then the epochs and
//! the pings; half-way node-c's own claim is shown and the evaluators' second pass judges
//! it, and its cut-off is read from the controller's decision, the others' `CUTOFF` log
//! lines and the pings.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::controller::ControllerHome;
use super::evaluators::{Call, EvaluatorFiles, Stated, C_ID, PANEL, TARGETS};
use super::narrative;
use super::ping::{Pinger, Probe};
use super::plan::{DemoOptions, CONTROLLER, CONTROLLERS, PING_EVERY, PING_TIMEOUT};
use super::scenario::{not_started, Watch};
use super::DemoError;

/// How often the loop looks at epochs, logs and processes.
const TICK: Duration = Duration::from_millis(200);

impl Watch<'_> {
    /// Creates the evaluators' keys and harness, and registers each evaluator with `home`
    /// (`evaluator add NAME PUBKEY --dimensions overall`).
    pub(super) fn register_evaluators(&mut self, home: &ControllerHome) -> Result<(), DemoError> {
        let files = EvaluatorFiles::create(&self.lab.dir())?;
        for evaluator in &PANEL {
            let public = files.create_key(evaluator.name)?;
            home.register_evaluator(evaluator.name, &public)?;
        }
        self.narrator.event(&narrative::evaluators::registered_line(
            self.style,
            &files.harness(),
        ));
        self.evaluator_files = Some(files);
        Ok(())
    }

    /// `meshtun evaluate` by `evaluator` about `target` in `pass`, in the controller's
    /// namespace.
    fn evaluate(&self, evaluator: &str, target: &str, pass: u8) -> Result<Stated, DemoError> {
        let files = self.evaluator_files.as_ref().ok_or_else(not_started)?;
        let key = self.controller_key.as_deref().ok_or_else(not_started)?;
        let url = CONTROLLERS[0].url();
        let ns = self.names.namespace(CONTROLLER);
        files.evaluate(&Call {
            bin: self.lab.daemons.bin(),
            ns: &ns,
            url: &url,
            controller_key: key,
            evaluator,
            target,
            pass,
        })
    }

    /// The first pass: every evaluator scores every node; a line per evaluator.
    pub(super) fn first_pass(&mut self) -> Result<(), DemoError> {
        for evaluator in &PANEL {
            let mut stated = Vec::new();
            for target in TARGETS {
                stated.push(self.evaluate(evaluator.name, target, 1)?);
            }
            self.narrator
                .event(&narrative::evaluators::first_pass_line(self.style, &stated));
            if let Some(story) = self.story.evaluators.as_mut() {
                story.first.extend(stated);
            }
        }
        Ok(())
    }

    /// node-c's own claim, then the second pass: every evaluator scores node-c again.
    fn judge_c(&mut self) -> Result<(), DemoError> {
        let controller = self.controller()?;
        controller.refresh()?;
        let claim = controller.audit().benchmarks.get(C_ID).map(|b| b.overall);
        let at = self.narrator.at();
        if let Some(story) = self.story.evaluators.as_mut() {
            story.claim = claim;
            story.cut.arm(at);
        }
        self.narrator
            .say(&narrative::evaluators::claim_line(self.style, at, claim));
        for evaluator in &PANEL {
            let stated = self.evaluate(evaluator.name, C_ID, 2)?;
            self.narrator.say(&narrative::evaluators::statement_line(
                self.style,
                self.narrator.at(),
                &stated,
            ));
            if let Some(story) = self.story.evaluators.as_mut() {
                story.second.push(stated);
            }
        }
        Ok(())
    }

    /// Watches epochs, logs and pings until the end; the second pass judges node-c
    /// half-way.
    pub(super) async fn run_evaluators(&mut self, opts: &DemoOptions) -> Result<(), DemoError> {
        let pinger = Arc::new(Pinger::new(self.ping_from()));
        let started = tokio::time::Instant::now();
        let judge_at = started + opts.judge_at().unwrap_or(opts.duration / 2);
        let end_at = opts.end_at().map(|end| started + end);
        let mut next_ping = started + Duration::from_secs(1);
        let mut in_flight: Option<(Duration, bool, JoinHandle<Vec<Probe>>)> = None;
        let mut judged = false;
        let mut cut_told = false;
        loop {
            let now = tokio::time::Instant::now();
            if end_at.is_some_and(|end| now >= end) {
                return Ok(());
            }
            self.check_alive()?;
            self.show_new_epochs()?;
            self.echo_logs();
            if !judged && now >= judge_at {
                judged = true;
                self.judge_c()?;
            }
            // Told after the decision it counts from.
            if let Some(story) = self
                .story
                .evaluators
                .as_ref()
                .filter(|s| s.cut.both() && s.c_denied.is_some())
            {
                if !cut_told {
                    cut_told = true;
                    self.narrator.say(&narrative::evaluators::cut_off_line(
                        self.style,
                        self.narrator.at(),
                        &story.cut,
                    ));
                }
            }
            if in_flight.as_ref().is_some_and(|(_, _, h)| h.is_finished()) {
                if let Some((at, after_cut, handle)) = in_flight.take() {
                    let probes = handle.await.unwrap_or_default();
                    self.story.on_pings(at, &probes);
                    if let Some(story) = self.story.evaluators.as_mut() {
                        story.cut.on_pings(at, after_cut, &probes);
                    }
                    let silent = if after_cut { "cut off" } else { "no reply" };
                    self.narrator.release(Some(&narrative::ping_line_as(
                        self.style, at, &probes, silent,
                    )));
                }
            }
            if in_flight.is_none() && now >= next_ping {
                next_ping = now + PING_EVERY;
                let pinger = pinger.clone();
                let after_cut = self.story.evaluators.as_ref().is_some_and(|s| s.cut.both());
                let handle = tokio::task::spawn_blocking(move || pinger.round(PING_TIMEOUT));
                in_flight = Some((self.narrator.at(), after_cut, handle));
                self.narrator.hold();
            }
            tokio::time::sleep(TICK).await;
        }
    }
}
