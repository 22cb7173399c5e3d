//! The daemon's STUN task: the I/O around [`StunClient`]. It resolves the STUN servers'
//! names, sends the client's Binding requests from the device's own WireGuard socket (so
//! that the NAT mapping they learn is the one peers see), feeds it the responses the
//! device's receive path hands over, asks again at once when the host's addresses change,
//! and publishes what it learned in the gate's status,
//! which `meshtun show` and the metrics read.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::HostDevice;
use crate::config::Endpoint;
use crate::device::stun::StunDatagram;
use crate::gate::keepalive::NatDecision;
use crate::gate::{unix_ms, SharedGateStatus};
use crate::probe::target::local_addresses;
use crate::stun::{StunClient, REFRESH};

/// How long one name lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the host's addresses are compared with the last ones: a change (a new network,
/// a new DHCP lease) asks every server again at once.
const ADDRESS_CHECK: Duration = Duration::from_secs(2);

/// The running STUN task; stopped when dropped.
pub(super) struct StunTask(JoinHandle<()>);

impl Drop for StunTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts asking `servers` from `device`'s socket, with the STUN responses `responses` (the
/// device's, less the relay's), publishing into `status`, and into `behind_nat` whether the
/// answers show a NAT ([`NatDecision`]); `None` if there is no server.
pub(super) fn start(
    device: &Arc<HostDevice>,
    responses: mpsc::Receiver<StunDatagram>,
    servers: Vec<Endpoint>,
    status: SharedGateStatus,
    behind_nat: watch::Sender<bool>,
) -> Option<StunTask> {
    if servers.is_empty() {
        return None;
    }
    let device = Arc::downgrade(device);
    let outputs = Outputs {
        status,
        behind_nat,
        decision: NatDecision::default(),
    };
    Some(StunTask(tokio::spawn(run(
        device, responses, servers, outputs,
    ))))
}

/// Where the task publishes what it learns.
struct Outputs {
    status: SharedGateStatus,
    behind_nat: watch::Sender<bool>,
    decision: NatDecision,
}

impl Outputs {
    /// Publishes the client's findings; `local` are the host's addresses, `port` the
    /// WireGuard socket's.
    fn publish(&mut self, client: &StunClient, local: &HashSet<IpAddr>, port: u16) {
        publish(client, &self.status);
        if self.decision.update(&client.status(), local, port) {
            let behind = self.decision.behind();
            tracing::info!(
                behind_nat = behind,
                "STUN: this node is {}behind a NAT",
                if behind { "" } else { "not " }
            );
            let _ = self.behind_nat.send(behind);
        }
    }
}

async fn run(
    device: Weak<HostDevice>,
    mut responses: mpsc::Receiver<StunDatagram>,
    servers: Vec<Endpoint>,
    mut outputs: Outputs,
) {
    let names: Vec<String> = servers.iter().map(ToString::to_string).collect();
    let mut client = StunClient::new(&names, Instant::now());
    let mut resolve_at = Instant::now();
    let mut local = local_addresses();
    let mut check_at = Instant::now() + ADDRESS_CHECK;
    loop {
        if Instant::now() >= check_at {
            let now_local = local_addresses();
            if now_local != local {
                tracing::debug!("the host's addresses changed: asking the STUN servers again");
                local = now_local;
                client.refresh_now(Instant::now());
                resolve_at = Instant::now();
            }
            check_at = Instant::now() + ADDRESS_CHECK;
        }
        if Instant::now() >= resolve_at {
            for (index, server) in servers.iter().enumerate() {
                let addr = resolve(server).await;
                client.set_address(index, addr, Instant::now());
            }
            resolve_at = Instant::now() + REFRESH;
        }
        let now = Instant::now();
        while let Some(transmit) = client.poll_transmit(now) {
            let Some(device) = device.upgrade() else {
                return;
            };
            if let Err(error) = device.send_datagram(transmit.to, &transmit.datagram).await {
                tracing::debug!(to = %transmit.to, %error, "STUN request not sent");
            }
        }
        let Some(port) = device.upgrade().map(|d| d.listen_port()) else {
            return;
        };
        outputs.publish(&client, &local, port);
        let wake = client
            .poll_timeout()
            .map_or(resolve_at, |t| t.min(resolve_at))
            .min(check_at);
        tokio::select! {
            received = responses.recv() => {
                let Some(d) = received else { return };
                let handled = client.handle(d.src, &d.bytes, Instant::now(), unix_ms());
                tracing::debug!(from = %d.src, ?handled, "STUN response");
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// The first address of `server`, IPv4 first (the usual family behind a NAT); `None` if it
/// does not resolve in time.
async fn resolve(server: &Endpoint) -> Option<SocketAddr> {
    if let Ok(ip) = server.host.parse() {
        return Some(SocketAddr::new(ip, server.port));
    }
    let lookup = tokio::net::lookup_host((server.host.as_str(), server.port));
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .copied()
        }
        Ok(Err(error)) => {
            tracing::debug!(%server, %error, "STUN server does not resolve");
            None
        }
        Err(_) => {
            tracing::debug!(%server, "STUN server name lookup timed out");
            None
        }
    }
}

/// Writes the client's findings into the shared status, logging a change of the NAT's kind
/// or of the reflexive addresses.
fn publish(client: &StunClient, status: &SharedGateStatus) {
    let nat = client.status();
    let mut shared = status.lock();
    shared.stun_rejected = client.rejected();
    let addresses = |n: &crate::wgcfg::NatStatus| -> Vec<SocketAddr> {
        n.reflexive.iter().map(|r| r.address).collect()
    };
    if addresses(&shared.nat) != addresses(&nat) || shared.nat.kind != nat.kind {
        tracing::info!(
            reflexive = ?addresses(&nat),
            nat = nat.kind.as_str(),
            "STUN: reflexive address"
        );
    }
    shared.nat = nat;
}
