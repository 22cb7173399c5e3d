//! The daemon's peer observer: the I/O around [`crate::gate::observe`]. With
//! `[controller] observe = true`, every `observe_interval` it takes up to `observe_peers`
//! of the device's gated peers (round-robin, never this node), probes them all at once
//! through the tunnel (one ICMP echo each, [`DEFAULT_TIMEOUT`]), reads their last handshake
//! again after the probe, and submits one signed statement per peer probed
//! (`POST /v1/statements`), counting each in `meshtun_gate_observations_total`.
//!
//! Submissions are paced, one per [`SUBMIT_GAP`] at most (half the controller's default
//! `node_rate`), so that they never take the node's request quota from its bundle polls and
//! benchmarks; a round longer than the interval delays the next. A round stops at the first
//! submission that failed or was throttled (the client has already tried every controller
//! instance; the next round brings fresh observations). The observer runs beside the gate:
//! restarted when the gate's client or the settings change, stopped with gating or when
//! the device is gone.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use meshtun_proto::report::Chain;
use meshtun_proto::statement::Statement;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::HostDevice;
use crate::config::ObserveSettings;
use crate::gate::observe::{handshake_age, observation, Outcome, Rounds, Warnings};
use crate::gate::{unix_ms, ControllerClient, SharedGateStatus};
use crate::probe::{self, local_addresses, probe_address, Reachability, DEFAULT_TIMEOUT};
use crate::wgcfg::PeerStatus;

/// The least time between two submissions.
pub(super) const SUBMIT_GAP: Duration = Duration::from_secs(1);

/// The running observer; stopped when dropped.
pub(super) struct ObserveTask {
    handle: JoinHandle<()>,
    client: Arc<ControllerClient>,
    settings: ObserveSettings,
}

impl Drop for ObserveTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The observer that should run for the gate's `client` and `settings` (`None` when not
/// gated): `current` if it already runs with them, a new one if they changed, none if
/// observations are off.
pub(super) fn supervise(
    current: Option<ObserveTask>,
    device: &Arc<HostDevice>,
    client: Option<Arc<ControllerClient>>,
    settings: Option<ObserveSettings>,
    status: &SharedGateStatus,
) -> Option<ObserveTask> {
    let Some((client, settings)) = client.zip(settings.filter(|s| s.enabled)) else {
        if current.is_some() {
            tracing::info!(target: "meshtun::gate", "peer observations off");
        }
        return None;
    };
    if let Some(task) = current {
        if Arc::ptr_eq(&task.client, &client) && task.settings == settings {
            return Some(task);
        }
    }
    tracing::info!(
        target: "meshtun::gate",
        peers = settings.peers,
        every = %humantime::format_duration(settings.interval),
        "observing gated peers"
    );
    let handle = tokio::spawn(run(
        Arc::downgrade(device),
        client.clone(),
        settings,
        status.clone(),
    ));
    Some(ObserveTask {
        handle,
        client,
        settings,
    })
}

async fn run(
    device: Weak<HostDevice>,
    client: Arc<ControllerClient>,
    settings: ObserveSettings,
    status: SharedGateStatus,
) {
    let mut rounds = Rounds::default();
    let mut warnings = Warnings::default();
    // The first round waits one interval: the first bundle's peers are in place by then.
    let mut tick = tokio::time::interval_at(Instant::now() + settings.interval, settings.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some((interface, peers)) = gated_status(&device, &status) else {
            return;
        };
        let chosen = rounds.next(&peers, client.node_id(), settings.peers);
        if chosen.is_empty() {
            continue;
        }
        let again = || gated_status(&device, &status).map(|(_, peers)| peers);
        let measured = measure(&interface, &peers, &chosen, &local_addresses(), again).await;
        let own = client.node_id();
        let statements = statements(own, &measured, SystemTime::now(), &mut warnings);
        submit_all(&client, statements, &status, &mut warnings, SUBMIT_GAP).await;
    }
}

/// The device's interface name and its peers, the gated ones with their node; `None` once
/// the device is gone.
fn gated_status(
    device: &Weak<HostDevice>,
    status: &SharedGateStatus,
) -> Option<(String, Vec<PeerStatus>)> {
    let mut device_status = device.upgrade()?.status();
    status.lock().attach_to(&mut device_status);
    Some((device_status.name, device_status.peers))
}

/// What one round measured of one peer.
#[derive(Debug, Clone)]
struct Measured {
    node_id: String,
    reach: Reachability,
    /// The peer's last handshake, read after the probe.
    last_handshake: Option<SystemTime>,
}

/// Probes `chosen` of `peers` (gated ones) through `interface` at once, never at one of
/// this host's `local` addresses, then reads their last handshake again with `again` (the
/// echo starts a handshake if there was none; a peer gone meanwhile keeps what it had).
async fn measure(
    interface: &str,
    peers: &[PeerStatus],
    chosen: &[usize],
    local: &HashSet<IpAddr>,
    again: impl FnOnce() -> Option<Vec<PeerStatus>>,
) -> Vec<Measured> {
    let targets: Vec<(usize, Option<IpAddr>, String)> = chosen
        .iter()
        .filter_map(|&index| {
            peers.get(index)?.gate.as_ref()?;
            let address = probe_address(peers, index, local);
            let why = address.err().map(|e| format!("no address to probe: {e}"));
            Some((index, address.ok(), why.unwrap_or_default()))
        })
        .collect();
    let addresses: Vec<Option<IpAddr>> = targets.iter().map(|t| t.1).collect();
    let results = probe::probe(interface, &addresses, DEFAULT_TIMEOUT).await;
    let after = again().unwrap_or_default();
    targets
        .into_iter()
        .zip(results)
        .filter_map(|((index, address, why), reach)| {
            let peer = peers.get(index)?;
            let now = after.iter().find(|p| p.public_key == peer.public_key);
            let reach = match (address, reach) {
                (None, _) => Reachability::Unknown {
                    address,
                    reason: why,
                },
                (_, reach) => reach,
            };
            Some(Measured {
                node_id: peer.gate.as_ref()?.node_id.clone(),
                reach,
                last_handshake: now.unwrap_or(peer).last_handshake,
            })
        })
        .collect()
}

/// The statements `own_id` makes of `measured` at `now`; peers not probed are logged
/// (once per reason) and left out.
fn statements(
    own_id: &str,
    measured: &[Measured],
    now: SystemTime,
    warnings: &mut Warnings,
) -> Vec<Statement> {
    let now_ms = unix_ms();
    let mut out = Vec::with_capacity(measured.len());
    for m in measured {
        if let Reachability::Unknown { reason, .. } = &m.reach {
            if warnings.should_log_once(reason) {
                tracing::warn!(target: "meshtun::gate", peer = %m.node_id, %reason, "cannot observe a gated peer: not probed");
            }
        }
        let age = handshake_age(m.last_handshake, now);
        out.extend(observation(own_id, &m.node_id, &m.reach, age, now_ms));
    }
    out
}

/// Signs and submits `statements` in turn, `gap` apart, counting each outcome in `status`.
async fn submit_all(
    client: &ControllerClient,
    statements: Vec<Statement>,
    status: &SharedGateStatus,
    warnings: &mut Warnings,
    gap: Duration,
) {
    for (n, statement) in statements.into_iter().enumerate() {
        if n > 0 {
            tokio::time::sleep(gap).await;
        }
        let subject = statement.subject.clone();
        let result = match client.sign_statement(statement) {
            Ok(signed) => client.submit_statement(&signed).await,
            Err(error) => {
                // This statement only (a name out of bounds, say): the others go on.
                if warnings.should_log_once(&error.to_string()) {
                    tracing::warn!(target: "meshtun::gate", peer = %subject, error = %Chain(&error), "cannot sign an observation");
                }
                count(status, Outcome::Failed);
                continue;
            }
        };
        let error = match result {
            Ok(id) => {
                tracing::debug!(target: "meshtun::gate", peer = %subject, id, "observation stored");
                warnings.succeeded();
                count(status, Outcome::Sent);
                continue;
            }
            Err(error) => error,
        };
        let outcome = Outcome::of(&error);
        count(status, outcome);
        if warnings.should_log(&error) {
            let what = match outcome {
                Outcome::Refused => "the controller refused an observation",
                _ => "cannot submit observations; retrying next round",
            };
            tracing::warn!(target: "meshtun::gate", peer = %subject, error = %Chain(&error), "{what}");
        }
        if outcome == Outcome::Failed || error.retry_after().is_some() {
            return;
        }
    }
}

fn count(status: &SharedGateStatus, outcome: Outcome) {
    let mut status = status.lock();
    let counter = match outcome {
        Outcome::Sent => &mut status.observations_sent,
        Outcome::Refused => &mut status.observations_refused,
        Outcome::Failed => &mut status.observations_failed,
    };
    *counter += 1;
}

#[cfg(test)]
mod tests;
