//! The scenario, step by step: set up, wait for the first scores, start the epochs, then
//! watch epochs, logs and pings, recover node-c half-way (with `--ha`: kill the leader a
//! third of the way, see [`super::takeover`], and recover node-c at two thirds; with
//! `--nat` and `--evaluators` see [`super::natscene`] and [`super::evalscene`]), and stop at
//! the end.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshtun_proto::IdentityPublic;
use meshtun_testbed::process::{log_tail, LogFollower};
use tokio::task::JoinHandle;

use super::controller::{Controller, ControllerHome, Extra, NodeToEnroll, STATUS_LISTEN};
use super::dashboard::Dashboard;
use super::evaluators::EvaluatorFiles;
use super::narrative::{self, Style};
use super::netns::Network;
use super::nodeconf::{self, NodeFiles, NodeSettings};
use super::nodelog::{self, AppliedEpochs};
use super::ping::{PingFrom, Pinger, Probe};
use super::plan::{
    controllers, DemoOptions, Names, NodeSpec, CLAIMED_MEAN, LISTEN_PORT, NAT_MEAN, NODES,
    PING_EVERY, PING_TIMEOUT, PREFIX_LEN, RECOVERED_MEAN, RECOVERING, THRESHOLD,
};
use super::story::{Change, EpochSummary, NodeDecision, Story};
use super::takeover::Takeover;
use super::{DemoError, Lab, Narrator};

/// How long the nodes have to deliver their first scores.
const FIRST_SCORES_WAIT: Duration = Duration::from_secs(30);

/// How often the loop looks at epochs, logs and processes.
const TICK: Duration = Duration::from_millis(200);

/// Lines of each log shown when a node sends no score.
const TAIL_LINES: usize = 8;

/// The running scenario's state.
pub(super) struct Watch<'a> {
    pub(super) lab: &'a mut Lab,
    pub(super) story: &'a mut Story,
    pub(super) narrator: &'a Narrator,
    pub(super) style: Style,
    pub(super) names: Names,
    pub(super) ha: bool,
    /// With `--nat`: the relay's shared secret (the controller's and coturn's).
    pub(super) nat: bool,
    pub(super) relay_secret: Option<zeroize::Zeroizing<String>>,
    /// With `--evaluators`: their keys and harness, once registered.
    pub(super) evaluator_files: Option<EvaluatorFiles>,
    /// The controller's key, base64, once it is initialised.
    pub(super) controller_key: Option<String>,
    followers: Vec<(&'static str, LogFollower)>,
    /// With `--dashboard`: the forwarded page and what it shows.
    dashboard: Option<Dashboard>,
    applied: AppliedEpochs,
    first_epoch: u64,
    decided: HashMap<String, bool>,
}

/// Plays the whole scenario; returns at its end (never, with `--keep-going`).
pub(super) async fn play(
    lab: &mut Lab,
    story: &mut Story,
    opts: &DemoOptions,
    narrator: &Narrator,
) -> Result<(), DemoError> {
    let names = Names::new(std::process::id());
    let style = narrator.style();
    let dir = lab.dir();
    narrator.say(&narrative::header(style, &names, opts, &dir));
    let mut watch = Watch {
        lab,
        story,
        narrator,
        style,
        names,
        ha: opts.ha,
        nat: opts.nat,
        relay_secret: opts.nat.then(super::nat::relay_secret),
        evaluator_files: None,
        controller_key: None,
        followers: Vec::new(),
        dashboard: None,
        applied: AppliedEpochs::default(),
        first_epoch: u64::MAX,
        decided: HashMap::new(),
    };
    let controller_key = watch.set_up(&dir, opts)?;
    if let Some(listen) = opts.dashboard {
        watch.open_dashboard(listen).await?;
    }
    if opts.evaluators {
        watch.first_pass()?;
    }
    watch.wait_for_scores().await?;
    if opts.nat {
        watch.wait_for_reflexive().await?;
    }
    watch.begin_epochs()?;
    if opts.nat {
        return watch.run_nat(&dir, opts, &controller_key).await;
    }
    if opts.evaluators {
        return watch.run_evaluators(opts).await;
    }
    watch.run_epochs(&dir, opts, &controller_key).await
}

impl Watch<'_> {
    /// The first controller (present from [`Watch::set_up`] on), whose home reads the audit
    /// log: with `--ha` from the shared database, also after it was killed.
    pub(super) fn controller(&mut self) -> Result<&mut Controller, DemoError> {
        self.lab.controllers.first_mut().ok_or_else(not_started)
    }

    /// The controllers' homes, `init` run: one on SQLite, or with `--ha` two on the demo's
    /// own PostgreSQL cluster, which this starts.
    fn controller_homes(
        &mut self,
        dir: &Path,
        opts: &DemoOptions,
    ) -> Result<Vec<ControllerHome>, DemoError> {
        let specs = controllers(self.ha);
        if !self.ha {
            let extra = match &self.relay_secret {
                Some(secret) => super::nat::controller_extra(secret),
                None if opts.evaluators => super::evaluators::controller_extra(),
                None => Extra::default(),
            };
            return Ok(vec![ControllerHome::init(
                dir, opts.epoch, &specs[0], None, &extra,
            )?]);
        }
        let (cluster, database) = super::ha::start_cluster()?;
        self.narrator.event(&format!(
            "PostgreSQL (initdb and postgres as nobody) listening on its Unix socket in {} \
             (pid {}); database {}",
            cluster.socket_dir().display(),
            cluster.pid(),
            super::ha::DATABASE
        ));
        self.lab.cluster = Some(cluster);
        let first = ControllerHome::init(
            dir,
            opts.epoch,
            &specs[0],
            Some(&database),
            &Extra::default(),
        )?;
        let mut homes = Vec::new();
        for spec in &specs[1..] {
            homes.push(first.another(dir, opts.epoch, spec, &database)?);
        }
        homes.insert(0, first);
        Ok(homes)
    }

    /// Starts `serve` for each home in its namespace.
    fn serve(&mut self, homes: Vec<ControllerHome>) -> Result<(), DemoError> {
        let network = self.lab.network.as_ref().ok_or_else(not_started)?;
        for home in homes {
            let spec = *home.spec();
            let bin = home.bin().display().to_string();
            let ns = network.get(&self.names.namespace(spec.role))?;
            let controller = home.serve(ns)?;
            let instance = if self.ha {
                format!(" as {}", spec.instance)
            } else {
                String::new()
            };
            self.narrator.event(&format!(
                "{bin} serving {} in {} (pid {}){instance}",
                spec.url(),
                ns.name(),
                controller.pid().unwrap_or_default()
            ));
            self.lab.controllers.push(controller);
        }
        Ok(())
    }

    /// Builds the network, writes the controllers' and the nodes' files, enrolls the nodes,
    /// starts the controllers and the daemons. Returns the controllers' key.
    fn set_up(&mut self, dir: &Path, opts: &DemoOptions) -> Result<IdentityPublic, DemoError> {
        let homes = self.controller_homes(dir, opts)?;
        let key = IdentityPublic::from_base64(homes[0].key()).map_err(|e| {
            DemoError::Controller(format!("`init` printed a key that does not parse: {e}"))
        })?;
        self.controller_key = Some(homes[0].key().to_owned());
        self.lab.network = Some(Network::create(&self.names, self.ha, self.nat)?);
        self.narrator.event(&format!(
            "network namespaces and the virtual switch are up (outer network 192.0.2.0/{PREFIX_LEN})"
        ));
        if self.nat {
            self.start_relay(dir)?;
        }
        let settings = NodeSettings {
            controller_key: &key,
            ha: self.ha,
        };
        for node in &NODES {
            let mean = match (self.nat, opts.evaluators) {
                (true, _) => NAT_MEAN,
                (false, true) => CLAIMED_MEAN.max(node.mean),
                (false, false) => node.mean,
            };
            let ifname = self.names.ifname(node);
            let keys = nodeconf::write_node(dir, node, &ifname, settings, mean)?;
            homes[0].enroll(&NodeToEnroll {
                id: node.id,
                wg_key: keys.wg_public_key.to_base64(),
                identity_key: keys.identity_key.to_base64(),
                address: format!("{}/32", node.tunnel),
                endpoint: (!self.nat).then(|| format!("{}:{LISTEN_PORT}", node.outer)),
            })?;
        }
        self.narrator.event(if self.nat {
            "node-a, node-b and node-c enrolled with `meshtun-controller node add`, with no \
             endpoint: nobody knows where they are"
        } else {
            "node-a, node-b and node-c enrolled with `meshtun-controller node add`"
        });
        if opts.evaluators {
            self.register_evaluators(&homes[0])?;
        }
        self.serve(homes)?;
        let network = self.lab.network.as_ref().ok_or_else(not_started)?;
        for node in &NODES {
            let files = NodeFiles::new(dir, node);
            let ns = network.get(&self.names.node_namespace(node))?;
            let pid = self
                .lab
                .daemons
                .start(node, ns, &self.names.ifname(node), &files)?;
            self.narrator.event(&format!(
                "{}: meshtun up {} in {} (pid {pid}; log {})",
                node.id,
                files.config.display(),
                ns.name(),
                files.log.display()
            ));
            self.followers.push((node.id, LogFollower::new(files.log)));
        }
        Ok(key)
    }

    /// Fails if a daemon or a controller has stopped (other than by the demo's kill).
    pub(super) fn check_alive(&mut self) -> Result<(), DemoError> {
        self.lab.daemons.check_alive()?;
        for controller in &mut self.lab.controllers {
            controller.check_alive()?;
        }
        Ok(())
    }

    /// Prints the nodes' new notable log lines, and what they applied of each epoch once
    /// they have all logged it.
    pub(super) fn echo_logs(&mut self) {
        for (node, follower) in &mut self.followers {
            for line in follower.new_lines() {
                let Some(text) = nodelog::notable_log(&line) else {
                    continue;
                };
                if let Some(nat) = self.story.nat.as_mut() {
                    nat.cut.on_log(node, text);
                }
                if let Some(judged) = self.story.evaluators.as_mut() {
                    judged.cut.on_log(node, text);
                }
                if let Some(other) = self.applied.record(node, text) {
                    self.narrator.say(&narrative::node_line(
                        self.style,
                        self.narrator.at(),
                        node,
                        &other,
                    ));
                }
            }
        }
        for (epoch, nodes) in self.applied.settled() {
            self.narrator.say(&narrative::applied_line(
                self.style,
                self.narrator.at(),
                epoch,
                &nodes,
            ));
        }
        if let Some(dashboard) = self.dashboard.as_mut() {
            for line in dashboard.new_lines() {
                self.narrator.event(&line);
            }
        }
    }

    /// Forwards the controllers' dashboard (the first that answers) to `listen` and says
    /// where to open it.
    async fn open_dashboard(&mut self, listen: std::net::SocketAddr) -> Result<(), DemoError> {
        self.controller()?;
        let namespaces = self
            .lab
            .controllers
            .iter()
            .map(|c| c.namespace().to_owned())
            .collect();
        let target = std::net::SocketAddr::from(STATUS_LISTEN);
        let dashboard = Dashboard::start(listen, namespaces, target).await?;
        self.narrator.event(&format!(
            "dashboard: open {} in a browser on this machine (the controller's /ui, \
             forwarded from its namespace; read-only, no token on loopback)",
            dashboard.url()
        ));
        self.dashboard = Some(dashboard);
        Ok(())
    }

    /// Waits until the controller's audit log holds every node's first score.
    async fn wait_for_scores(&mut self) -> Result<(), DemoError> {
        let deadline = tokio::time::Instant::now() + FIRST_SCORES_WAIT;
        loop {
            self.check_alive()?;
            self.echo_logs();
            let controller = self.controller()?;
            controller.refresh()?;
            let latest = &controller.audit().benchmarks;
            let missing: Vec<&NodeSpec> = NODES
                .iter()
                .filter(|n| !latest.contains_key(n.id))
                .collect();
            if missing.is_empty() {
                let scores: Vec<String> = NODES
                    .iter()
                    .filter_map(|n| Some(format!("{} {:.2}", n.id, latest.get(n.id)?.overall)))
                    .collect();
                let line = if self.story.evaluators.is_some() {
                    format!(
                        "first signed scores received, each node's claim about itself: {} \
                         (not counted: the evaluators' statements are)",
                        scores.join(", ")
                    )
                } else {
                    format!(
                        "first signed scores received: {} (the threshold is {THRESHOLD:.2})",
                        scores.join(", ")
                    )
                };
                self.narrator.event(&line);
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let dir = self.lab.dir();
                let tails: Vec<String> = missing
                    .iter()
                    .map(|n| {
                        let log = NodeFiles::new(&dir, n).log;
                        format!("{}:\n{}", log.display(), log_tail(&log, TAIL_LINES))
                    })
                    .collect();
                return Err(DemoError::NoScores {
                    nodes: missing.iter().map(|n| n.id).collect::<Vec<_>>().join(", "),
                    seconds: FIRST_SCORES_WAIT.as_secs(),
                    tails: tails.join("\n"),
                });
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// Asks the controller (with `--ha`, the leader) for a new epoch
    /// (`meshtun-controller rotate`), decided on every node's score: the first epoch shown.
    /// Earlier epochs are not shown.
    fn begin_epochs(&mut self) -> Result<(), DemoError> {
        let leader = if self.ha { self.name_leader()? } else { 0 };
        let network = self.lab.network.as_ref().ok_or_else(not_started)?;
        let controller = self.lab.controllers.get(leader).ok_or_else(not_started)?;
        let ns = network.get(&self.names.namespace(controller.spec().role))?;
        let epoch = controller.rotate(ns)?;
        self.first_epoch = epoch;
        self.applied.start_at(epoch);
        Ok(())
    }

    /// Prints every epoch decided since the last call.
    pub(super) fn show_new_epochs(&mut self) -> Result<(), DemoError> {
        let first = self.first_epoch;
        let controller = self.controller()?;
        controller.refresh()?;
        let ids: Vec<&str> = NODES.iter().map(|n| n.id).collect();
        let epochs = controller.audit().take_epochs(first, &ids);
        let now_ms = unix_ms();
        // With evaluators, a decision's score is the node's own claim, which did not decide.
        let claims_decide = self.story.evaluators.is_none();
        for (rotation, decisions) in epochs {
            let mut ordered = Vec::new();
            for node in &NODES {
                if let Some(d) = decisions.iter().find(|d| d.node_id == node.id) {
                    let before = self.decided.insert(node.id.to_owned(), d.allowed);
                    ordered.push(NodeDecision {
                        node: node.id.to_owned(),
                        allowed: d.allowed,
                        reason: d.reason.clone(),
                        score: d.score.filter(|_| claims_decide),
                        change: Change::between(before, d.allowed),
                    });
                }
            }
            let summary = EpochSummary {
                id: rotation.epoch,
                decided_ms: rotation.created_ms,
                cause: rotation.cause.clone(),
                activates_in: Duration::from_millis(rotation.activation_ms.saturating_sub(now_ms)),
                length: Duration::from_millis(
                    rotation.not_after_ms.saturating_sub(rotation.activation_ms),
                ),
                decisions: ordered,
            };
            let at = self.narrator.at();
            let after_kill = self.story.on_epoch(at, &summary);
            self.narrator
                .say(&narrative::epoch_block(self.style, at, &summary));
            if after_kill {
                self.narrator
                    .say(&narrative::new_leader_epoch(self.style, self.story));
            }
        }
        Ok(())
    }

    /// Raises node-c's score: rewrites its configuration and sends its daemon SIGHUP.
    fn recover(&mut self, dir: &Path, controller_key: &IdentityPublic) -> Result<(), DemoError> {
        let node = &NODES[RECOVERING];
        let settings = NodeSettings {
            controller_key,
            ha: self.ha,
        };
        nodeconf::write_config(
            dir,
            node,
            &self.names.ifname(node),
            settings,
            RECOVERED_MEAN,
        )?;
        let pid = self.lab.daemons.reload(node)?;
        let at = self.narrator.at();
        self.story.on_recovery(at);
        self.narrator
            .say(&narrative::recovery(self.style, at, node.id, pid));
        Ok(())
    }

    /// After the recovery: whether the controller has received a passing score from node-c
    /// measured after `since_ms`; prints it once.
    fn passing_score_seen(&mut self, since_ms: u64) -> Result<bool, DemoError> {
        let node = &NODES[RECOVERING];
        let controller = self.controller()?;
        let Some(score) = controller
            .audit()
            .benchmarks
            .get(node.id)
            .filter(|b| b.measured_at_ms >= since_ms && b.overall >= THRESHOLD)
            .map(|b| b.overall)
        else {
            return Ok(false);
        };
        self.narrator.event(&format!(
            "the controller received {}'s score {score:.2}: passing; the next epoch decides",
            node.id
        ));
        Ok(true)
    }

    /// The nodes, to ping from.
    pub(super) fn ping_from(&self) -> Vec<PingFrom> {
        NODES
            .iter()
            .map(|node| PingFrom {
                node,
                namespace: self.names.node_namespace(node),
                ifname: self.names.ifname(node),
            })
            .collect()
    }

    /// Watches epochs, logs and pings until the end.
    async fn run_epochs(
        &mut self,
        dir: &Path,
        opts: &DemoOptions,
        controller_key: &IdentityPublic,
    ) -> Result<(), DemoError> {
        let pinger = Arc::new(Pinger::new(self.ping_from()));
        let started = tokio::time::Instant::now();
        let recover_at = started + opts.recover_at();
        let kill_at = opts.kill_at().map(|kill| started + kill);
        let mut takeover: Option<Takeover> = None;
        let end_at = opts.end_at().map(|end| started + end);
        let mut next_ping = started + Duration::from_secs(1);
        let mut in_flight: Option<(Duration, JoinHandle<Vec<Probe>>)> = None;
        let mut recovered_ms: Option<u64> = None;
        let mut passing_seen = false;
        loop {
            let now = tokio::time::Instant::now();
            if end_at.is_some_and(|end| now >= end) {
                if let Some(takeover) = takeover.as_mut() {
                    self.end_takeover(takeover);
                }
                return Ok(());
            }
            self.check_alive()?;
            self.show_new_epochs()?;
            self.echo_logs();
            if takeover.is_none() && kill_at.is_some_and(|kill| now >= kill) {
                takeover = Some(self.kill_leader()?);
            }
            if let Some(takeover) = takeover.as_mut() {
                self.watch_takeover(takeover)?;
            }
            if recovered_ms.is_none() && now >= recover_at {
                if let Some(takeover) = takeover.as_mut() {
                    self.end_takeover(takeover);
                }
                recovered_ms = Some(unix_ms());
                self.recover(dir, controller_key)?;
            }
            if let (Some(since), false) = (recovered_ms, passing_seen) {
                passing_seen = self.passing_score_seen(since)?;
            }
            if in_flight.as_ref().is_some_and(|(_, h)| h.is_finished()) {
                if let Some((at, handle)) = in_flight.take() {
                    let probes = handle.await.unwrap_or_default();
                    self.story.on_pings(at, &probes);
                    self.narrator
                        .release(Some(&narrative::ping_line(self.style, at, &probes)));
                }
            }
            if in_flight.is_none() && now >= next_ping {
                next_ping = now + PING_EVERY;
                let pinger = pinger.clone();
                let handle = tokio::task::spawn_blocking(move || pinger.round(PING_TIMEOUT));
                in_flight = Some((self.narrator.at(), handle));
                self.narrator.hold();
            }
            tokio::time::sleep(TICK).await;
        }
    }
}

/// The error for a part of the lab used before it was set up.
pub(super) fn not_started() -> DemoError {
    DemoError::Controller("not started".into())
}

/// The time, Unix milliseconds (the controller's clock, on this machine).
pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
