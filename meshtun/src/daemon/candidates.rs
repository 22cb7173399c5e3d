//! The daemon's candidate reporter: the I/O around [`Reporter`]. Every few seconds it
//! gathers where this node can be reached (the reflexive addresses the STUN task
//! published, the host's addresses with the WireGuard port) and reports them to the
//! controller when they changed ([`crate::gate::candidates`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use meshtun_proto::candidates::CandidateReport;
use meshtun_proto::report::Chain;
use tokio::task::JoinHandle;

use super::HostDevice;
use crate::gate::candidates::{gather, Reporter};
use crate::gate::{ControllerClient, SharedGateStatus};
use crate::probe::target::local_addresses;

/// How often the candidates are gathered again.
const CHECK: Duration = Duration::from_secs(1);

/// How long the first report waits for a reflexive address (STUN answers in milliseconds):
/// a report without it would leave peers behind other NATs without a way in until it is
/// reported, and the next epoch carries it.
const FIRST_WAIT: Duration = Duration::from_secs(3);

/// The running reporter; stopped when dropped.
pub(super) struct ReportTask(JoinHandle<()>);

impl Drop for ReportTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts reporting `device`'s candidates through `client`, with the reflexive addresses
/// of `status`, leaving out the interface's `overlay` networks.
pub(super) fn start(
    device: &Arc<HostDevice>,
    client: Arc<ControllerClient>,
    status: SharedGateStatus,
    overlay: Vec<IpNet>,
) -> ReportTask {
    let device = Arc::downgrade(device);
    ReportTask(tokio::spawn(run(device, client, status, overlay)))
}

async fn run(
    device: Weak<HostDevice>,
    client: Arc<ControllerClient>,
    status: SharedGateStatus,
    overlay: Vec<IpNet>,
) {
    let mut reporter = Reporter::default();
    let mut failing = false;
    let mut tick = tokio::time::interval(CHECK);
    let started = Instant::now();
    loop {
        tick.tick().await;
        let Some(port) = device.upgrade().map(|d| d.listen_port()) else {
            return;
        };
        let (reflexive, relayed): (Vec<SocketAddr>, _) = {
            let status = status.lock();
            let reflexive = status.nat.reflexive.iter().map(|r| r.address).collect();
            (reflexive, status.relay.as_ref().and_then(|r| r.relayed))
        };
        if reflexive.is_empty() && started.elapsed() < FIRST_WAIT {
            continue;
        }
        let host: Vec<IpAddr> = local_addresses().into_iter().collect();
        let report = CandidateReport {
            candidates: gather(&reflexive, &host, port, &overlay, relayed),
            listen_port: port,
        };
        let now = Instant::now();
        if !reporter.due(&report, now) {
            continue;
        }
        match client.report_candidates(&report).await {
            Ok(()) => {
                tracing::debug!(target: "meshtun::gate", candidates = ?report.candidates, "candidate endpoints reported");
                reporter.sent(report, now);
                failing = false;
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(target: "meshtun::gate", error = %Chain(&error), "cannot report this node's candidate endpoints; retrying");
                }
                failing = true;
                reporter.failed(now);
            }
        }
    }
}
