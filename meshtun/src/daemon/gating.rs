//! Membership gating in the daemon: starting the gating tasks from the configuration and
//! enforcing their updates (device peers, preshared keys, routes), with the log lines and
//! status that go with every transition.

use std::path::Path;
use std::sync::Arc;

use meshtun_proto::EpochId;
use tokio::sync::mpsc;

use crate::config::{load_or_create_identity, Config, ControllerSettings};
use crate::gate::{
    unix_ms, BenchmarkSource, ControllerClient, Gate, GateError, GateOptions, GateStatus,
    GateUpdate, GatedPeerConfig, GatedPeerInfo, MembershipState, SharedGateStatus,
};

use super::observe::{self, ObserveTask};
use super::{DaemonError, HostDevice};

/// The gating side of a running daemon.
pub(super) struct Gating {
    running: Option<Running>,
    /// The status every reader shares; kept across restarts of the tasks.
    pub status: SharedGateStatus,
    /// The gated peers in force on the device.
    pub applied: Vec<GatedPeerConfig>,
    /// The last update enforced.
    last: Option<GateUpdate>,
    /// The refusals last logged, so that each epoch does not repeat them.
    last_refused: Vec<String>,
    /// The peer observer, when `[controller] observe` is on.
    observer: Option<ObserveTask>,
}

struct Running {
    gate: Gate,
    options: GateOptions,
    updates: mpsc::Receiver<GateUpdate>,
}

impl Gating {
    /// Starts gating if the configuration has a `[controller]` section.
    pub fn start(config: &Config, path: &Path) -> Result<Self, DaemonError> {
        let mut gating = Self {
            running: None,
            status: SharedGateStatus::default(),
            applied: Vec::new(),
            last: None,
            last_refused: Vec::new(),
            observer: None,
        };
        gating.running = start_tasks(config, path, &gating.status)?;
        Ok(gating)
    }

    /// The controller client in use, when gated.
    pub fn client(&self) -> Option<Arc<ControllerClient>> {
        self.running.as_ref().map(|r| r.gate.client())
    }

    /// Starts, restarts or stops the peer observer of `device` to match the gating in force
    /// (at start, and after every reload).
    pub fn observe(&mut self, device: &Arc<HostDevice>) {
        let settings = self.running.as_ref().map(|r| r.options.controller.observe);
        self.status.lock().observing = settings.filter(|s| s.enabled);
        let current = self.observer.take();
        self.observer = observe::supervise(current, device, self.client(), settings, &self.status);
    }

    /// The next update to enforce (never, when not gated). `Err` when the membership
    /// scheduler has stopped: the daemon must then stop too, dropping every gated peer,
    /// rather than keep the last membership forever.
    pub async fn next_update(&mut self) -> Result<GateUpdate, String> {
        match &mut self.running {
            Some(running) => running
                .updates
                .recv()
                .await
                .ok_or_else(|| "the membership scheduler stopped".to_owned()),
            None => std::future::pending().await,
        }
    }

    /// After a reload: restarts what changed in `[controller]` and `[benchmark]`. Returns
    /// an update removing every gated peer if gating was switched off.
    pub fn reload(
        &mut self,
        config: &Config,
        path: &Path,
    ) -> Result<Option<GateUpdate>, DaemonError> {
        let wanted = gate_options(config);
        let current = self.running.as_ref().map(|r| &r.options);
        match (current, &wanted) {
            (None, None) => Ok(None),
            (Some(old), Some(new))
                if same_gate(&old.controller, &new.controller)
                    && old.wg_private == new.wg_private =>
            {
                if old.benchmark != new.benchmark {
                    self.restart_benchmarks(new.clone(), path)?;
                }
                if let Some(running) = &mut self.running {
                    // The observer follows it ([`Self::observe`]); the gate runs on.
                    running.options.controller.observe = new.controller.observe;
                }
                Ok(None)
            }
            (_, Some(_)) => {
                // The new tasks start before the old ones stop: a failure keeps the old ones.
                let started = start_tasks(config, path, &self.status)?;
                self.running = started;
                tracing::info!(target: "meshtun::gate", "controller settings reloaded");
                Ok(None)
            }
            (Some(_), None) => {
                self.running = None;
                *self.status.lock() = GateStatus::default();
                tracing::info!(target: "meshtun::gate", "membership gating switched off: the gated peers are removed");
                Ok(Some(GateUpdate {
                    membership: MembershipState::Pending,
                    epoch: None,
                    activation_ms: None,
                    not_after_ms: None,
                    decided_ms: 0,
                    peers: Vec::new(),
                    forward: false,
                    relay: None,
                }))
            }
        }
    }

    fn restart_benchmarks(&mut self, options: GateOptions, path: &Path) -> Result<(), DaemonError> {
        let Some(running) = &mut self.running else {
            return Ok(());
        };
        match &options.benchmark {
            Some(settings) => {
                let source =
                    BenchmarkSource::from_settings(settings).map_err(|e| gate_error(path, e))?;
                running.gate.restart_benchmarks(source, settings.interval);
                tracing::info!(target: "meshtun::gate", "benchmark settings reloaded");
            }
            None => {
                running.gate.stop_benchmarks();
                tracing::warn!(target: "meshtun::gate", "the [benchmark] section was removed: no more benchmarks are submitted, so the controller will deny this node once its last one is too old");
            }
        }
        running.options = options;
        Ok(())
    }

    /// Records an enforced update: logs every transition and updates the status. `refused`
    /// lists what the merge left out of the gated peers.
    pub fn record(&mut self, update: GateUpdate, refused: Vec<String>) {
        let now = unix_ms();
        if refused != self.last_refused {
            for why in &refused {
                tracing::warn!(target: "meshtun::gate", "{why}");
            }
            self.last_refused = refused;
        }
        log_membership(self.last.as_ref(), &update);
        let previous = std::mem::take(&mut self.applied);
        let mut status = self.status.lock();
        let mut peers = Vec::with_capacity(update.peers.len());
        for peer in &update.peers {
            let before = previous
                .iter()
                .find(|p| p.settings.public_key == peer.settings.public_key);
            let unchanged =
                before.is_some_and(|b| b.settings.preshared_key == peer.settings.preshared_key);
            let (since, psk_epoch) = match status.peer(&peer.settings.public_key) {
                Some(info) if unchanged => (info.psk_since_ms, info.psk_epoch),
                _ => (now, update.epoch),
            };
            if !unchanged {
                tracing::info!(
                    target: "meshtun::gate",
                    "APPLIED epoch={} peer={} psk=****",
                    epoch_text(update.epoch),
                    peer.node_id
                );
            }
            peers.push(GatedPeerInfo {
                node_id: peer.node_id.clone(),
                public_key: peer.settings.public_key,
                psk_since_ms: since,
                psk_epoch,
                forwards_to: peer.forwards_to.clone(),
            });
        }
        for gone in previous.iter().filter(|p| {
            !update
                .peers
                .iter()
                .any(|u| u.settings.public_key == p.settings.public_key)
        }) {
            status.cutoffs += 1;
            if update.membership == MembershipState::Lost || update.decided_ms == 0 {
                tracing::info!(
                    target: "meshtun::gate",
                    "CUTOFF peer={} epoch={} reason={}",
                    gone.node_id,
                    epoch_text(update.epoch),
                    if update.membership == MembershipState::Lost { "controller-lost" } else { "gating-off" }
                );
                continue;
            }
            let latency_ms = now.saturating_sub(update.decided_ms);
            status.count_cutoff(&gone.node_id, update.epoch, latency_ms);
            tracing::info!(
                target: "meshtun::gate",
                "CUTOFF peer={} epoch={} decision_to_cutoff_ms={latency_ms}",
                gone.node_id,
                epoch_text(update.epoch)
            );
        }
        if update.epoch.is_some() && update.epoch != self.last.as_ref().and_then(|l| l.epoch) {
            status.bundles_applied += 1;
        }
        status.forward = update.forward;
        status.membership = update.membership.clone();
        status.epoch = update.epoch;
        status.activation_ms = update.activation_ms;
        status.not_after_ms = update.not_after_ms;
        status.peers = peers;
        drop(status);
        self.applied = update.peers.clone();
        self.last = Some(update);
    }
}

fn epoch_text(epoch: Option<EpochId>) -> String {
    epoch.map_or_else(|| "-".to_owned(), |e| e.to_string())
}

/// Logs `MEMBERSHIP=…` when the membership or the epoch changes.
fn log_membership(last: Option<&GateUpdate>, update: &GateUpdate) {
    let same = last.is_some_and(|l| l.membership == update.membership && l.epoch == update.epoch);
    if same {
        return;
    }
    let epoch = epoch_text(update.epoch);
    match &update.membership {
        MembershipState::Pending => {}
        MembershipState::Allowed => tracing::info!(
            target: "meshtun::gate",
            "MEMBERSHIP=ALLOWED epoch={epoch} peers={}",
            update.peers.len()
        ),
        MembershipState::Denied { reason } => tracing::warn!(
            target: "meshtun::gate",
            "MEMBERSHIP=DENIED epoch={epoch} reason={reason:?}"
        ),
        MembershipState::Lost => tracing::warn!(
            target: "meshtun::gate",
            "MEMBERSHIP=LOST epoch={epoch}: no bundle from the controller since the end of epoch {epoch} plus the grace; gated peers removed (on_controller_loss = \"fail_closed\")"
        ),
    }
}

/// Whether two `[controller]` sections run the same gate: equal but for the observation
/// keys, which only the observer reads.
fn same_gate(old: &ControllerSettings, new: &ControllerSettings) -> bool {
    let new_but_old_observe = ControllerSettings {
        observe: old.observe,
        ..new.clone()
    };
    *old == new_but_old_observe
}

/// The gating options a configuration asks for.
fn gate_options(config: &Config) -> Option<GateOptions> {
    let controller = config.controller.clone()?;
    Some(GateOptions {
        controller,
        benchmark: config.benchmark.clone(),
        wg_private: config.interface.private_key.clone(),
    })
}

fn gate_error(path: &Path, error: impl Into<GateError>) -> DaemonError {
    DaemonError::Gate {
        path: path.to_owned(),
        source: error.into(),
    }
}

/// Starts the gating tasks for `config`, if it has a `[controller]` section.
fn start_tasks(
    config: &Config,
    path: &Path,
    status: &SharedGateStatus,
) -> Result<Option<Running>, DaemonError> {
    let Some(options) = gate_options(config) else {
        if config.benchmark.is_some() {
            return Err(gate_error(path, GateError::BenchmarkWithoutController));
        }
        return Ok(None);
    };
    let settings = &options.controller;
    let identity =
        load_or_create_identity(&settings.identity_key_file).map_err(|e| gate_error(path, e))?;
    if let Some(warning) = &identity.warning {
        tracing::warn!("{warning}");
    }
    if identity.created {
        tracing::warn!(
            target: "meshtun::gate",
            "created the identity key file {}; enroll its public key {} at the controller (or use `meshtun join`)",
            settings.identity_key_file.display(),
            identity.key.public()
        );
    }
    let client =
        ControllerClient::from_settings(settings, identity.key, options.wg_private.clone())
            .map_err(|e| gate_error(path, e))?;
    let source = match &options.benchmark {
        Some(b) => Some(BenchmarkSource::from_settings(b).map_err(|e| gate_error(path, e))?),
        None => {
            tracing::warn!(target: "meshtun::gate", "no [benchmark] section: this node submits no benchmarks, so the controller admits it only if pinned");
            None
        }
    };
    let (tx, updates) = mpsc::channel(8);
    tracing::info!(
        target: "meshtun::gate",
        controller = %settings.urls.join(", "),
        node = %settings.node_id,
        "membership gating on"
    );
    let gate = Gate::start(&options, client, source, status.clone(), tx);
    Ok(Some(Running {
        gate,
        options,
        updates,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(extra: &str) -> ControllerSettings {
        let key = meshtun_proto::IdentityKey::from_bytes([7; 32]).public();
        let wg = meshtun_proto::PrivateKey::from_bytes([9; 32]).to_base64();
        let text = format!(
            "[interface]\nprivate_key = \"{wg}\"\n[controller]\nurl = \"http://192.0.2.10:8700\"\n\
             public_key = \"{key}\"\nnode_id = \"node-a\"\n{extra}"
        );
        let config = Config::parse(&text, Path::new("/etc/meshtun/wg0.toml")).unwrap();
        config.controller.unwrap()
    }

    /// Switching observations on, or changing their interval, leaves the gate running (only
    /// the observer restarts); any other change of `[controller]` restarts it.
    #[test]
    fn observation_keys_do_not_restart_the_gate() {
        let plain = controller("");
        let observing =
            controller("observe = true\nobserve_interval = \"10s\"\nobserve_peers = 3\n");
        assert!(same_gate(&plain, &observing));
        assert!(same_gate(&observing, &plain));
        assert!(!same_gate(&plain, &controller("grace = 45\n")));
        assert!(!same_gate(
            &observing,
            &controller("observe = true\ngrace = 45\n")
        ));
    }
}
