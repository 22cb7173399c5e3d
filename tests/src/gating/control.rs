//! `meshtun-controller serve` running in the mesh's controller namespace.

use std::process::Command;
use std::time::{Duration, Instant};

use meshtun_proto::wire::{EpochInfo, EpochTimes};

use nix::sys::signal::Signal;

use super::mesh::Mesh;
use super::now_ms;
use crate::process::Supervised;
use crate::run::{try_run, Output};

/// How long one controller command (`status`, `rotate`, `audit show`) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// Audit entries read per `audit show` call.
const AUDIT_PAGE: usize = 500;

/// The controller of a [`Mesh`], running in its namespace; stopped on drop (continued first
/// if it was stopped). If the test fails, its status, its rotations and its log are printed.
pub struct ControllerProc<'m> {
    mesh: &'m Mesh,
    index: usize,
    process: Supervised<'m>,
    starts: u32,
    stopped: bool,
}

pub use meshtun_testbed::controller::Rotation;
use meshtun_testbed::controller::{parse_audit, AuditEvent};

impl<'m> ControllerProc<'m> {
    /// Starts instance `index`'s `serve` for `mesh` and waits until `status` answers.
    pub(super) fn start(mesh: &'m Mesh, index: usize) -> Self {
        Self {
            mesh,
            index,
            process: spawn(mesh, index, 1),
            starts: 1,
            stopped: false,
        }
    }

    /// Which instance of the mesh this is.
    pub fn index(&self) -> usize {
        self.index
    }

    /// This instance's `[ha] instance` name.
    pub fn name(&self) -> &str {
        &self.mesh.instance(self.index).name
    }

    /// Whether it is stopped (SIGSTOP).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The process id of the running `serve`.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The log of the current `serve` process.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Freezes the controller (SIGSTOP): its sockets stay open, it answers nothing.
    pub fn stop(&mut self) {
        self.process.signal(Signal::SIGSTOP);
        self.stopped = true;
    }

    /// Lets a stopped controller run again (SIGCONT).
    pub fn cont(&mut self) {
        self.process.signal(Signal::SIGCONT);
        self.stopped = false;
    }

    /// Kills the controller with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        assert!(
            self.process.kill().is_some(),
            "the controller had already exited; its log:\n{}",
            self.log()
        );
        self.stopped = false;
    }

    /// Sends SIGTERM and waits for the exit; its status, or `None` if it had to be killed
    /// (after the stop timeout of `crate::process`).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if self.stopped {
            self.cont();
        }
        self.process.terminate()
    }

    /// Starts `serve` again on the same state (after [`ControllerProc::kill`]) and waits
    /// until it answers.
    pub fn restart(&mut self) {
        self.starts += 1;
        self.process = spawn(self.mesh, self.index, self.starts);
    }

    /// `meshtun-controller ARGS` with the mesh's configuration, inside the controller's
    /// namespace (for the commands that talk to the running controller).
    pub fn command(&self, args: &[&str]) -> Command {
        self.mesh.controller_command(self.index, args)
    }

    /// `status`, parsed; fails the test if the controller does not answer.
    pub fn status(&self) -> serde_json::Value {
        let out = self.run_ok(&["status"]);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("`meshtun-controller status` is not JSON ({e}):\n{out}"))
    }

    /// `status` as printed, or why it could not be had; never fails the test.
    pub fn status_text(&self) -> String {
        match try_run(&mut self.command(&["status"]), COMMAND_TIMEOUT) {
            Ok(out) if out.success() => out.stdout,
            Ok(out) => format!("(`status` failed: {}{})", out.stdout, out.stderr),
            Err(why) => format!("({why})"),
        }
    }

    /// The epoch in force and the next one if published, as `status` reports them.
    pub fn epoch_info(&self) -> EpochInfo {
        let status = self.status();
        serde_json::from_value(status["epoch"].clone())
            .unwrap_or_else(|e| panic!("`status` reports no epoch in force ({e}): {status}"))
    }

    /// Waits until `margin` before the next epoch is due to be published (`lead` before the
    /// epoch in force ends), at a moment when it is not published yet; returns the epoch in
    /// force. Fails the test if no such moment comes within two epochs.
    pub fn wait_before_publish(&self, lead: Duration, margin: Duration) -> EpochTimes {
        let lead_ms = u64::try_from(lead.as_millis()).unwrap_or(u64::MAX);
        let margin_ms = u64::try_from(margin.as_millis()).unwrap_or(u64::MAX);
        let deadline = Instant::now() + self.mesh.timing().epoch_len() * 2 + Duration::from_secs(5);
        while Instant::now() < deadline {
            let info = self.epoch_info();
            let publish_ms = info.current.not_after_ms.saturating_sub(lead_ms);
            let now = now_ms();
            if info.next.is_none() && now + margin_ms + 200 < publish_ms {
                std::thread::sleep(Duration::from_millis(publish_ms - margin_ms - now));
                return info.current;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the controller never showed an epoch whose successor was still unpublished");
    }

    /// Node `id`'s membership in the epoch in force, as `status` reports it.
    pub fn membership(&self, id: &str) -> String {
        let status = self.status();
        status["nodes"][id]["membership"]
            .as_str()
            .unwrap_or_else(|| panic!("`status` reports no membership for {id}: {status}"))
            .to_owned()
    }

    /// `rotate`: a new epoch now; returns its id.
    pub fn rotate(&self) -> u64 {
        let out = self.run_ok(&["rotate"]);
        out.trim()
            .strip_prefix("epoch ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("`meshtun-controller rotate` printed {out:?}"))
    }

    /// Waits until the controller's database holds a benchmark from each of `ids`.
    pub fn wait_benchmarks(&self, ids: &[&str], timeout: Duration) {
        let ok = crate::wait_until(timeout, || {
            let stored = self.mesh.benchmarked_nodes();
            ids.iter().all(|id| stored.iter().any(|node| node == id))
        });
        assert!(
            ok,
            "the controller did not receive a benchmark from each of {ids:?} within {timeout:?}"
        );
    }

    /// Every `rotation` entry of the audit log (`meshtun-controller audit show`), in order.
    pub fn rotations(&self) -> Vec<Rotation> {
        let mut rotations = Vec::new();
        let mut from = 1;
        loop {
            let out = self.run_ok(&[
                "audit",
                "show",
                "--from",
                &from.to_string(),
                "--limit",
                &AUDIT_PAGE.to_string(),
            ]);
            let lines = parse_audit(&out).unwrap_or_else(|e| panic!("{e}"));
            let Some(last) = lines.last() else {
                return rotations;
            };
            from = last.seq + 1;
            rotations.extend(lines.iter().filter_map(rotation_of));
            if lines.len() < AUDIT_PAGE {
                return rotations;
            }
        }
    }

    /// The first epoch that denies `id` and was decided at or after `since_ms`.
    pub fn denial(&self, id: &str, since_ms: u64) -> Option<Rotation> {
        self.rotations()
            .into_iter()
            .find(|r| r.created_ms >= since_ms && r.denied.iter().any(|d| d == id))
    }

    /// The first epoch that allows `id` and was decided at or after `since_ms`.
    pub fn admission(&self, id: &str, since_ms: u64) -> Option<Rotation> {
        self.rotations()
            .into_iter()
            .find(|r| r.created_ms >= since_ms && r.allowed.iter().any(|d| d == id))
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let out = try_run(&mut self.command(args), COMMAND_TIMEOUT)
            .unwrap_or_else(|why| panic!("{why}; controller log:\n{}", self.log()));
        assert!(
            out.success(),
            "`{}` failed ({}): {}{}",
            out.command,
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
    }
}

impl Drop for ControllerProc<'_> {
    fn drop(&mut self) {
        if self.stopped {
            self.process.signal(Signal::SIGCONT);
        }
        if std::thread::panicking() {
            eprintln!("----- controller status -----\n{}", self.status_text());
            let audit = try_run(
                &mut self.command(&["audit", "show", "--limit", "1000"]),
                COMMAND_TIMEOUT,
            );
            if let Ok(out) = audit {
                eprintln!("----- controller rotations (audit log) -----");
                for line in out
                    .stdout
                    .lines()
                    .filter(|l| l.contains("\"kind\":\"rotation\""))
                {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Starts instance `index`'s `serve` (start number `n`, which names its log) and waits
/// until `status` answers.
fn spawn(mesh: &Mesh, index: usize, n: u32) -> Supervised<'_> {
    let instance = mesh.instance(index);
    let cmd = mesh.controller_command(index, &["--log", "info", "serve"]);
    let log = mesh
        .dir()
        .join(format!("controller-{}-{n}.log", instance.name));
    let label = format!("meshtun-controller serve ({}, start {n})", instance.name);
    let mut process = Supervised::spawn(&instance.ns, label, cmd, log);
    process.wait_ready(|| {
        let out: Output = try_run(
            &mut mesh.controller_command(index, &["status"]),
            COMMAND_TIMEOUT,
        )?;
        if out.success() {
            Ok(())
        } else {
            Err(format!("`status` failed: {}", out.stderr.trim()))
        }
    });
    process
}

fn rotation_of(line: &meshtun_testbed::controller::AuditLine) -> Option<Rotation> {
    match line.event().unwrap_or_else(|e| panic!("{e}")) {
        AuditEvent::Rotation(rotation) => Some(rotation),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_are_read_from_audit_show() {
        let rotation = r#"{"epoch":7,"activation_ms":1000,"not_after_ms":6000,"created_ms":990,"cause":"deny: d","allowed":["a","b"],"denied":["d"]}"#;
        let text = format!(
            "{}\n{}\n",
            serde_json::json!({"seq": 1, "at_ms": 1, "kind": "enroll", "entry": "{}",
                "prev_hash": "0", "hash": "1"}),
            serde_json::json!({"seq": 2, "at_ms": 990, "kind": "rotation", "entry": rotation,
                "prev_hash": "1", "hash": "2"}),
        );
        let lines = parse_audit(&text).unwrap();
        let rotations: Vec<Rotation> = lines.iter().filter_map(rotation_of).collect();
        assert_eq!(rotations.len(), 1);
        assert_eq!(rotations[0].epoch, 7);
        assert_eq!(rotations[0].created_ms, 990);
        assert_eq!(rotations[0].denied, ["d"]);
        assert_eq!(rotations[0].cause, "deny: d");
    }
}
