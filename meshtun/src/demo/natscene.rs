//! `meshtun demo --nat`, step by step once the nodes run: the relay started, each node's
//! reflexive address read as it is learnt, then the epochs, the pings and the paths the
//! nodes show, node-c's score dropped half-way, and its cut-off read from the others'
//! `CUTOFF` log lines and from the pings.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use meshtun_proto::IdentityPublic;
use tokio::task::JoinHandle;

use super::narrative;
use super::nat::{self, NatStory, PeerPath, Reflexive, C_REACH_GRACE};
use super::nodeconf::{self, NodeSettings};
use super::ping::{Pinger, Probe};
use super::plan::{
    DemoOptions, NodeSpec, NAT_DENIED_MEAN, NODES, PING_EVERY, PING_TIMEOUT, RELAY, RELAY_ADDR,
};
use super::scenario::{not_started, Watch};
use super::DemoError;

/// How long the nodes have to learn their reflexive addresses.
const REFLEXIVE_WAIT: Duration = Duration::from_secs(20);

/// How often the paths are read with `meshtun show`, before node-c's denial.
const PATHS_EVERY: Duration = Duration::from_secs(1);

/// How often the loop looks at epochs, logs and processes.
const TICK: Duration = Duration::from_millis(200);

/// The node denied half-way.
const C: usize = 2;

impl Watch<'_> {
    /// Starts coturn in the relay's namespace.
    pub(super) fn start_relay(&mut self, dir: &Path) -> Result<(), DemoError> {
        let network = self.lab.network.as_ref().ok_or_else(not_started)?;
        let ns = network.get(&self.names.namespace(RELAY))?;
        let secret = self.relay_secret.as_ref().ok_or_else(not_started)?;
        let relay_dir = dir.join("relay");
        let process = nat::start_relay(ns, &relay_dir, secret)?;
        self.narrator.event(&format!(
            "relay: coturn (turnserver) serving TURN on {RELAY_ADDR}:{} in {} (pid {}); the \
             controller hands out time-limited credentials for it in each bundle",
            meshtun_testbed::coturn::TURN_PORT,
            ns.name(),
            process.pid().unwrap_or_default()
        ));
        for (node, router) in NODES.iter().zip(network.routers()) {
            self.narrator.say(&narrative::nat::router_line(
                self.style,
                self.narrator.at(),
                node,
                router.ns().name(),
            ));
        }
        self.lab.relay = Some(process);
        Ok(())
    }

    /// `meshtun show --json` of `node`.
    fn show(&self, node: &NodeSpec) -> Result<serde_json::Value, DemoError> {
        nat::show(
            self.lab.daemons.bin(),
            &self.names.node_namespace(node),
            &self.names.ifname(node),
        )
    }

    /// Waits until every node shows its reflexive address, printing each as it comes.
    pub(super) async fn wait_for_reflexive(&mut self) -> Result<(), DemoError> {
        let deadline = tokio::time::Instant::now() + REFLEXIVE_WAIT;
        let mut last_error: Option<String> = None;
        loop {
            self.check_alive()?;
            self.echo_logs();
            for node in &NODES {
                let known = self
                    .story
                    .nat
                    .as_ref()
                    .is_some_and(|n| n.reflexive.contains_key(node.id));
                if known {
                    continue;
                }
                // A daemon that has sent its score may not serve `show` yet: try again.
                let view = match self.show(node) {
                    Ok(view) => view,
                    Err(error) => {
                        last_error = Some(meshtun_proto::report::describe(&error));
                        continue;
                    }
                };
                if let Some(seen) = Reflexive::from_view(&view) {
                    self.narrator.say(&narrative::nat::reflexive_line(
                        self.style,
                        self.narrator.at(),
                        node,
                        &seen,
                    ));
                    if let Some(nat) = self.story.nat.as_mut() {
                        nat.reflexive.insert(node.id.to_owned(), seen);
                    }
                }
            }
            let learnt = self.story.nat.as_ref().map_or(0, |n| n.reflexive.len());
            if learnt == NODES.len() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let error = last_error
                    .map(|e| format!("; the last `meshtun show` failed: {e}"))
                    .unwrap_or_default();
                return Err(DemoError::Controller(format!(
                    "only {learnt} of {} nodes learnt their reflexive address from the \
                     controller's STUN server within {} s{error}",
                    NODES.len(),
                    REFLEXIVE_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Reads the paths: node-a's and node-b's to each other (shown once both are direct,
    /// each at the other's router), and every node's to or from node-c (shown when they
    /// change, until node-c's score drops: `with_c`). A `meshtun show` that fails is tried
    /// again at the next look (the summary says what was never seen).
    fn look_at_paths(&mut self, with_c: bool) {
        let mut views = Vec::new();
        for node in &NODES {
            match self.show(node) {
                Ok(view) => views.push(view),
                Err(_) => return,
            }
        }
        let paths: Vec<Vec<PeerPath>> = views.iter().map(PeerPath::all_from_view).collect();
        let find =
            |from: usize, to: usize| paths[from].iter().find(|p| p.peer == NODES[to].id).cloned();
        let at = self.narrator.at();
        let Some(story) = self.story.nat.as_mut() else {
            return;
        };
        if story.ab_direct.is_none() {
            if let (Some(ab), Some(ba)) = (find(0, 1), find(1, 0)) {
                let at_router = |p: &PeerPath, to: &NodeSpec| {
                    p.path == "direct" && p.endpoint.is_some_and(|e| e.ip() == to.outer)
                };
                if at_router(&ab, &NODES[1]) && at_router(&ba, &NODES[0]) {
                    self.narrator
                        .say(&narrative::nat::direct_line(self.style, at, &ab, &ba));
                    story.ab_direct = Some((at, ab, ba));
                }
            }
        }
        if !with_c {
            return;
        }
        let mut c_paths = Vec::new();
        for (from, to) in [(0, C), (1, C), (C, 0), (C, 1)] {
            if let Some(path) = find(from, to) {
                c_paths.push((NODES[from].id.to_owned(), path));
            }
        }
        if !c_paths.is_empty() && c_paths != story.c_paths {
            let relay = views[C]
                .get("gate")
                .and_then(|g| g.get("relay"))
                .cloned()
                .unwrap_or_default();
            self.narrator.say(&narrative::nat::c_paths_line(
                self.style, at, &c_paths, &relay,
            ));
            story.c_paths = c_paths;
        }
    }

    /// Lowers node-c's score: rewrites its configuration and sends its daemon SIGHUP.
    fn drop_c_score(
        &mut self,
        dir: &Path,
        controller_key: &IdentityPublic,
    ) -> Result<(), DemoError> {
        let node = &NODES[C];
        let settings = NodeSettings {
            controller_key,
            ha: false,
        };
        let ifname = self.names.ifname(node);
        nodeconf::write_config(dir, node, &ifname, settings, NAT_DENIED_MEAN)?;
        let pid = self.lab.daemons.reload(node)?;
        let at = self.narrator.at();
        if let Some(nat) = self.story.nat.as_mut() {
            nat.cut.arm(at);
        }
        self.narrator
            .say(&narrative::nat::score_drops(self.style, at, node.id, pid));
        Ok(())
    }

    /// Watches epochs, logs, pings and paths until the end; drops node-c's score half-way,
    /// once its paths are seen working (or [`C_REACH_GRACE`] later), and moves the end
    /// by as long as the drop waited.
    pub(super) async fn run_nat(
        &mut self,
        dir: &Path,
        opts: &DemoOptions,
        controller_key: &IdentityPublic,
    ) -> Result<(), DemoError> {
        let pinger = Arc::new(Pinger::new(self.ping_from()));
        let started = tokio::time::Instant::now();
        let deny_at = started + opts.deny_at().unwrap_or(opts.duration / 2);
        let mut end_at = opts.end_at().map(|end| started + end);
        let mut next_ping = started + Duration::from_secs(1);
        let mut next_paths = started + Duration::from_secs(1);
        let mut in_flight: Option<(Duration, bool, JoinHandle<Vec<Probe>>)> = None;
        let mut dropped = false;
        loop {
            let now = tokio::time::Instant::now();
            if end_at.is_some_and(|end| now >= end) {
                return Ok(());
            }
            self.check_alive()?;
            self.show_new_epochs()?;
            self.echo_logs();
            let ab_seen = self
                .story
                .nat
                .as_ref()
                .is_some_and(|n| n.ab_direct.is_some());
            if (!dropped || !ab_seen) && now >= next_paths {
                next_paths = now + PATHS_EVERY;
                self.look_at_paths(!dropped);
            }
            let reached = self.story.nat.as_ref().is_some_and(NatStory::c_reached);
            if !dropped && now >= deny_at && (reached || now >= deny_at + C_REACH_GRACE) {
                dropped = true;
                // The end moves with a drop that waited for node-c's paths.
                end_at = end_at.map(|end| end + now.saturating_duration_since(deny_at));
                self.drop_c_score(dir, controller_key)?;
            }
            if in_flight.as_ref().is_some_and(|(_, _, h)| h.is_finished()) {
                if let Some((at, after_cut, handle)) = in_flight.take() {
                    let probes = handle.await.unwrap_or_default();
                    self.story.on_pings(at, &probes);
                    if let Some(nat) = self.story.nat.as_mut() {
                        nat.cut.on_pings(at, after_cut, &probes);
                    }
                    let silent = if dropped { "cut off" } else { "no reply" };
                    self.narrator.release(Some(&narrative::ping_line_as(
                        self.style, at, &probes, silent,
                    )));
                }
            }
            if in_flight.is_none() && now >= next_ping {
                next_ping = now + PING_EVERY;
                let pinger = pinger.clone();
                let after_cut = self.story.nat.as_ref().is_some_and(|n| n.cut.both());
                let handle = tokio::task::spawn_blocking(move || pinger.round(PING_TIMEOUT));
                in_flight = Some((self.narrator.at(), after_cut, handle));
                self.narrator.hold();
            }
            tokio::time::sleep(TICK).await;
        }
    }
}
