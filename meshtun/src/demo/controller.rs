//! The demo's controller: the real `meshtun-controller` binary, set up and run exactly as an
//! operator would: a `controller.toml` and a state directory in the demo's directory,
//! `init`, `node add` for each node, then `serve` inside the controller's namespace,
//! stopped by its pid. What it decided is read back from its audit log (`audit show`):
//! the nodes' scores as they arrive and every epoch with each node's decision and reason.
//!
//! The controller publishes a first epoch when it starts, before any node has a score; once
//! every node's first score is in, the demo asks for a new epoch (`rotate`), the first one it
//! shows.
//!
//! With `--ha` there are two, `ctl-1` and `ctl-2`, on one PostgreSQL database, each with its
//! own home (`ctl-1/`, `ctl-2/`) holding the same key and admin token, as an operator copies
//! them (see [`super::ha`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshtun_proto::private_file::{write as write_private_file, Replace};
use meshtun_testbed::controller::{
    config_text, find_program, AuditEvent, Benchmark, Decision, Enrollment, Home, Rotation, PROGRAM,
};
use meshtun_testbed::process::{Ended, Process};
use meshtun_testbed::Netns;

use super::ha::{self, ClusterView};
use super::plan::{ControllerSpec, CONTROLLER_PORT, HA_LEASE, LEAD, READMIT_AFTER, THRESHOLD};
use super::DemoError;

/// How long a node's bundle request waits for a newer epoch.
const LONG_POLL_SECS: u64 = 30;

/// How long `serve` may take to answer `status`.
const START_WAIT: Duration = Duration::from_secs(15);

/// How long stopping waits after SIGTERM before SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Audit entries read per `audit show`.
const AUDIT_PAGE: usize = 500;

/// The audit log is read at most this often (each read runs `audit show`).
const AUDIT_EVERY: Duration = Duration::from_millis(500);

/// The status listener, on the controller namespace's own loopback.
pub const STATUS_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9700);

/// What a scenario adds to the controller's configuration: TOML tables, and private files
/// (mode 0600) beside the configuration, written before `init`. Its `Debug` leaves the
/// files' contents out: they are secrets.
#[derive(Default)]
pub struct Extra {
    /// TOML tables appended to the configuration (e.g. `[stun]`, `[relay]`).
    pub tables: String,
    /// Files named relative to the configuration's directory, and their contents.
    pub private_files: Vec<(&'static str, zeroize::Zeroizing<String>)>,
}

impl std::fmt::Debug for Extra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.private_files.iter().map(|(n, _)| *n).collect();
        f.debug_struct("Extra")
            .field("tables", &self.tables)
            .field("private_files", &names)
            .finish()
    }
}

/// The controller's configuration for the demo: the default policy (threshold 0.70,
/// readmission after one passing evaluation), `epoch` long epochs published `LEAD` ahead,
/// and an immediate epoch when an allowed node fails. With a PostgreSQL `database`, the
/// instance `spec` among several, with a short lease. `tables` (TOML) are appended.
pub fn settings(
    epoch: Duration,
    spec: &ControllerSpec,
    database: Option<&str>,
    tables: &str,
) -> String {
    let listen = SocketAddr::from((spec.addr, CONTROLLER_PORT));
    let status = SocketAddr::from(STATUS_LISTEN);
    let mut rest = String::new();
    if let Some(url) = database {
        rest.push_str(&format!("database = \"{url}\"\n"));
    }
    rest.push_str(&format!(
        "\n[epoch]\nlength = {}\nlead = {}\nrotate_on_deny = true\n\n\
         [policy]\nthreshold = {THRESHOLD:.2}\nreadmit_after = {READMIT_AFTER}\n\n\
         [api]\nlong_poll = {LONG_POLL_SECS}\n",
        epoch.as_secs(),
        LEAD.as_secs()
    ));
    if database.is_some() {
        rest.push_str(&format!(
            "\n[ha]\nlease = {}\ninstance = \"{}\"\n",
            HA_LEASE.as_secs(),
            spec.instance
        ));
    }
    rest.push_str(tables);
    config_text(listen, status, &spec.url(), &rest)
}

/// A node to enroll: its id, keys (base64) and addresses.
#[derive(Debug, Clone)]
pub struct NodeToEnroll {
    /// Its id.
    pub id: &'static str,
    /// Its WireGuard public key, base64.
    pub wg_key: String,
    /// Its identity key, base64.
    pub identity_key: String,
    /// Its tunnel address, CIDR.
    pub address: String,
    /// `host:port` on the outer network; none behind a NAT (the controller learns it from
    /// the node's candidates).
    pub endpoint: Option<String>,
}

/// The controller's home in the demo's directory, before it serves.
#[derive(Debug)]
pub struct ControllerHome {
    home: Home,
    key: String,
    spec: ControllerSpec,
    ha: bool,
}

impl ControllerHome {
    /// Finds the binary, writes the configuration of `spec` (with `extra`'s tables and
    /// files) and runs `init`: in `dir/controller/` on SQLite, or in `dir/INSTANCE/` on the
    /// PostgreSQL `database`.
    pub fn init(
        dir: &Path,
        epoch: Duration,
        spec: &ControllerSpec,
        database: Option<&str>,
        extra: &Extra,
    ) -> Result<Self, DemoError> {
        let bin = find_program(PROGRAM)?;
        let root = dir.join(if database.is_some() {
            spec.instance
        } else {
            "controller"
        });
        std::fs::create_dir(&root)
            .map_err(|e| DemoError::io(format!("cannot create {}", root.display()), e))?;
        for (name, text) in &extra.private_files {
            let path = root.join(name);
            write_private_file(&path, text.as_bytes(), Replace::Never)
                .map_err(|e| DemoError::io(format!("cannot write {}", path.display()), e))?;
        }
        let config = root.join("controller.toml");
        let text = settings(epoch, spec, database, &extra.tables);
        let home = Home::write(bin, config, &text)?;
        let key = home.init()?;
        Ok(Self {
            home,
            key,
            spec: *spec,
            ha: database.is_some(),
        })
    }

    /// Another instance, `spec`, on the same PostgreSQL `database` as `self`: its home
    /// gets `self`'s key and admin token before its `init`, which must then print the same
    /// key.
    pub fn another(
        &self,
        dir: &Path,
        epoch: Duration,
        spec: &ControllerSpec,
        database: &str,
    ) -> Result<Self, DemoError> {
        let root = dir.join(spec.instance);
        std::fs::create_dir(&root)
            .map_err(|e| DemoError::io(format!("cannot create {}", root.display()), e))?;
        let config = root.join("controller.toml");
        let home = Home::write(
            self.bin().to_owned(),
            config,
            &settings(epoch, spec, Some(database), ""),
        )?;
        ha::share_secrets(&self.home.state_dir(), &home.state_dir())?;
        let key = home.init()?;
        if key != self.key {
            return Err(DemoError::Controller(format!(
                "{} has key {key}, not {}'s {}",
                spec.instance, self.spec.instance, self.key
            )));
        }
        Ok(Self {
            home,
            key,
            spec: *spec,
            ha: true,
        })
    }

    /// The controller's public key, base64, which the nodes pin.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Which controller of the scenario it is.
    pub fn spec(&self) -> &ControllerSpec {
        &self.spec
    }

    /// The binary that runs.
    pub fn bin(&self) -> &Path {
        self.home.bin()
    }

    /// `node add` for `node`.
    pub fn enroll(&self, node: &NodeToEnroll) -> Result<(), DemoError> {
        self.home.enroll(&Enrollment {
            id: node.id,
            wg_key: &node.wg_key,
            identity_key: &node.identity_key,
            address: &node.address,
            endpoint: node.endpoint.as_deref(),
        })?;
        Ok(())
    }

    /// `evaluator add NAME PUBKEY --dimensions overall`: registers an evaluator.
    pub fn register_evaluator(&self, name: &str, public_key: &str) -> Result<(), DemoError> {
        let dimensions = super::evaluators::DIMENSION;
        self.home.run(&[
            "evaluator",
            "add",
            name,
            public_key,
            "--dimensions",
            dimensions,
        ])?;
        Ok(())
    }

    /// Starts `serve` in `ns`, logging to `controller.log` in its home, and waits until it
    /// answers `status`.
    pub fn serve(self, ns: &Netns) -> Result<Controller, DemoError> {
        let log = self.log_path();
        let cmd = self.home.serve_command(Some(ns), "info");
        let process = Process::spawn(format!("{PROGRAM} serve"), cmd, &log)?;
        let mut controller = Controller {
            home: self.home,
            ns: ns.name().to_owned(),
            process,
            audit: AuditView::default(),
            read_at: None,
            spec: self.spec,
            ha: self.ha,
        };
        controller.wait_ready(ns)?;
        Ok(controller)
    }

    fn log_path(&self) -> PathBuf {
        self.home.config_file().with_file_name("controller.log")
    }
}

/// The running controller; stopped on drop.
#[derive(Debug)]
pub struct Controller {
    home: Home,
    ns: String,
    process: Process,
    audit: AuditView,
    read_at: Option<std::time::Instant>,
    spec: ControllerSpec,
    ha: bool,
}

impl Controller {
    fn wait_ready(&mut self, ns: &Netns) -> Result<(), DemoError> {
        let deadline = std::time::Instant::now() + START_WAIT;
        loop {
            self.check_alive()?;
            let status = self.home.command(Some(ns), &["status"]);
            let answered = meshtun_testbed::run::try_run(&mut { status }, START_WAIT)
                .is_ok_and(|out| out.success());
            if answered {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(DemoError::Controller(format!(
                    "it did not answer `status` within {} s; the end of its log, {}:\n{}",
                    START_WAIT.as_secs(),
                    self.process.log_path().display(),
                    self.process.log_tail(15)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The process id of `serve`.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The namespace it serves in.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Which controller of the scenario it is.
    pub fn spec(&self) -> &ControllerSpec {
        &self.spec
    }

    /// What it is called in the narrative: "the controller", or its instance name.
    fn label(&self) -> String {
        if self.ha {
            self.spec.instance.to_owned()
        } else {
            "the controller".to_owned()
        }
    }

    /// Kills `serve` with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Who leads the cluster, as `meshtun-controller status` run in `ns` (its namespace)
    /// says.
    pub fn cluster(&self, ns: &Netns) -> Result<ClusterView, DemoError> {
        let mut status = self.home.command(Some(ns), &["status"]);
        let out = meshtun_testbed::run::run_ok(&mut status, START_WAIT)?;
        ClusterView::parse(&out).map_err(|detail| {
            DemoError::Controller(format!("`status` of {}: {detail}", self.spec.instance))
        })
    }

    /// An error with the end of its log if `serve` has exited.
    pub fn check_alive(&mut self) -> Result<(), DemoError> {
        match self.process.exited() {
            None => Ok(()),
            Some(status) => Err(DemoError::Controller(format!(
                "`meshtun-controller serve` ({}) exited ({status}); the end of its log, {}:\n{}",
                self.spec.instance,
                self.process.log_path().display(),
                self.process.log_tail(15)
            ))),
        }
    }

    /// `rotate` inside the controller's namespace: a new epoch now; its number.
    pub fn rotate(&self, ns: &Netns) -> Result<u64, DemoError> {
        Ok(self.home.rotate(Some(ns))?)
    }

    /// Reads the audit entries written since the last read, unless that was less than
    /// half a second ago.
    pub fn refresh(&mut self) -> Result<(), DemoError> {
        if self.read_at.is_some_and(|at| at.elapsed() < AUDIT_EVERY) {
            return Ok(());
        }
        self.read_at = Some(std::time::Instant::now());
        loop {
            let lines = self.home.audit(self.audit.next_seq, AUDIT_PAGE)?;
            for line in &lines {
                self.audit.record(line.event()?);
                self.audit.next_seq = line.seq + 1;
            }
            if lines.len() < AUDIT_PAGE {
                return Ok(());
            }
        }
    }

    /// What the audit log said so far.
    pub fn audit(&mut self) -> &mut AuditView {
        &mut self.audit
    }

    /// Stops `serve` by its pid: SIGTERM, up to 5 s, then SIGKILL. A line saying what
    /// happened.
    pub fn stop(&mut self) -> Result<String, DemoError> {
        let label = self.label();
        match self.process.terminate(STOP_WAIT) {
            Ended::Exited(status) if status.success() => Ok(format!("stopped {label}")),
            Ended::Exited(status) => Err(DemoError::Controller(format!(
                "{label} exited with {status} when stopped"
            ))),
            Ended::Killed => Ok(format!("killed {label}, which ignored SIGTERM for 5 s")),
            Ended::AlreadyReaped => Ok(format!("{label} had already stopped")),
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if self.process.pid().is_some() {
            if let Err(error) = self.stop() {
                eprintln!("meshtun demo: the controller: {error}");
            }
        }
    }
}

/// What the controller's audit log has said: the latest score of each node, and the epochs
/// with their decisions.
#[derive(Debug, Default)]
pub struct AuditView {
    next_seq: u64,
    /// The latest benchmark of each node.
    pub benchmarks: HashMap<String, Benchmark>,
    rotations: BTreeMap<u64, Rotation>,
    decisions: BTreeMap<u64, Vec<Decision>>,
}

impl AuditView {
    /// Records one entry.
    pub fn record(&mut self, event: AuditEvent) {
        match event {
            AuditEvent::Benchmark(b) => {
                self.benchmarks.insert(b.node_id.clone(), b);
            }
            AuditEvent::Rotation(r) => {
                self.rotations.insert(r.epoch, r);
            }
            AuditEvent::Decision(d) => self.decisions.entry(d.epoch).or_default().push(d),
            AuditEvent::Other => {}
        }
    }

    /// The epochs from `first` on whose rotation and every decision (one per node of
    /// `nodes`) have been read, in order; they are forgotten.
    pub fn take_epochs(&mut self, first: u64, nodes: &[&str]) -> Vec<(Rotation, Vec<Decision>)> {
        let complete: Vec<u64> = self
            .rotations
            .keys()
            .copied()
            .filter(|e| *e >= first)
            .filter(|e| {
                let decided = self.decisions.get(e).map_or(&[][..], Vec::as_slice);
                nodes
                    .iter()
                    .all(|n| decided.iter().any(|d| d.node_id == *n))
            })
            .collect();
        let mut out = Vec::new();
        for epoch in complete {
            if let (Some(r), Some(d)) =
                (self.rotations.remove(&epoch), self.decisions.remove(&epoch))
            {
                out.push((r, d));
            }
        }
        self.rotations.retain(|e, _| *e >= first);
        self.decisions.retain(|e, _| *e >= first);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(epoch: u64, node: &str) -> AuditEvent {
        AuditEvent::Decision(Decision {
            epoch,
            node_id: node.into(),
            allowed: true,
            reason: "ok".into(),
            score: Some(0.9),
        })
    }

    fn rotation(epoch: u64) -> AuditEvent {
        AuditEvent::Rotation(Rotation {
            epoch,
            activation_ms: 0,
            not_after_ms: 1,
            created_ms: 0,
            cause: "schedule".into(),
            allowed: vec![],
            denied: vec![],
        })
    }

    #[test]
    fn an_epoch_is_shown_once_every_node_is_decided_and_earlier_ones_never() {
        let mut view = AuditView::default();
        for e in [
            rotation(1),
            decision(1, "a"),
            decision(1, "b"),
            rotation(2),
            decision(2, "a"),
        ] {
            view.record(e);
        }
        assert!(
            view.take_epochs(2, &["a", "b"]).is_empty(),
            "b is not decided in 2"
        );
        view.record(decision(2, "b"));
        let shown = view.take_epochs(2, &["a", "b"]);
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].0.epoch, 2);
        assert_eq!(shown[0].1.len(), 2);
        assert!(view.take_epochs(2, &["a", "b"]).is_empty(), "shown once");
        assert!(view.rotations.is_empty(), "epoch 1 is forgotten");
    }

    #[test]
    fn with_ha_each_instance_names_itself_and_the_shared_database() {
        let spec = &crate::demo::plan::CONTROLLERS[1];
        let url = "postgres://meshtun@%2Ftmp%2Fpg/meshtun";
        let table: toml::Table = settings(Duration::from_secs(5), spec, Some(url), "")
            .parse()
            .unwrap();
        assert_eq!(table["database"].as_str(), Some(url));
        assert_eq!(table["listen"].as_str(), Some("192.0.2.11:8700"));
        assert_eq!(table["url"].as_str(), Some("http://192.0.2.11:8700"));
        assert_eq!(table["ha"]["instance"].as_str(), Some("ctl-2"));
        assert_eq!(table["ha"]["lease"].as_integer(), Some(2));
        let single = settings(Duration::from_secs(5), spec, None, "");
        let table: toml::Table = single.parse().unwrap();
        assert!(!table.contains_key("database") && !table.contains_key("ha"));
    }

    #[test]
    fn the_configuration_is_the_scenario() {
        let text = settings(
            Duration::from_secs(10),
            &crate::demo::plan::CONTROLLERS[0],
            None,
            "",
        );
        let table: toml::Table = text.parse().unwrap();
        assert_eq!(table["listen"].as_str(), Some("192.0.2.10:8700"));
        assert_eq!(table["url"].as_str(), Some("http://192.0.2.10:8700"));
        assert_eq!(table["epoch"]["length"].as_integer(), Some(10));
        assert_eq!(table["epoch"]["lead"].as_integer(), Some(2));
        assert_eq!(table["epoch"]["rotate_on_deny"].as_bool(), Some(true));
        assert_eq!(table["policy"]["threshold"].as_float(), Some(0.70));
        assert_eq!(table["policy"]["readmit_after"].as_integer(), Some(1));
    }
}
