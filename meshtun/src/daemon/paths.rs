//! The daemon's path reporter: the I/O around [`Reporter`]. Every few seconds it counts
//! this node's gated peers by path and reports the counts, with its newest cut-offs, to the
//! controller when they changed, when the node moved to another controller instance, or
//! every [`REPORT_EVERY`](crate::gate::paths::REPORT_EVERY)
//! ([`crate::gate::paths`]). An older controller without the route (404) is not asked again.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use meshtun_proto::report::Chain;
use tokio::task::JoinHandle;

use super::HostDevice;
use crate::gate::client::ClientError;
use crate::gate::paths::{count, Outcome, Reporter};
use crate::gate::{ControllerClient, SharedGateStatus};

/// How often the peers are counted again.
const CHECK: Duration = Duration::from_secs(5);

/// The running reporter; stopped when dropped.
pub(super) struct PathTask(JoinHandle<()>);

impl Drop for PathTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts reporting the paths to `device`'s gated peers (as `status` marks them) through
/// `client`.
pub(super) fn start(
    device: &Arc<HostDevice>,
    client: Arc<ControllerClient>,
    status: SharedGateStatus,
) -> PathTask {
    let device = Arc::downgrade(device);
    PathTask(tokio::spawn(run(device, client, status)))
}

async fn run(device: Weak<HostDevice>, client: Arc<ControllerClient>, status: SharedGateStatus) {
    let mut reporter = Reporter::default();
    let mut failing = false;
    let mut tick = tokio::time::interval(CHECK);
    while !reporter.stopped() {
        tick.tick().await;
        let Some(device) = device.upgrade() else {
            return;
        };
        let mut device_status = device.status();
        drop(device);
        let (relay, cutoffs) = {
            let status = status.lock();
            status.attach_to(&mut device_status);
            let cutoffs: Vec<_> = status.recent_cutoffs.iter().cloned().collect();
            (status.relay.as_ref().map(|r| r.server), cutoffs)
        };
        let mut report = count(&device_status.peers, SystemTime::now(), relay);
        drop(device_status);
        reporter.instance(client.url());
        if reporter.takes_cutoffs() {
            report.cutoffs = cutoffs;
        }
        let now = Instant::now();
        if !reporter.due(&report, now) {
            continue;
        }
        let outcome = outcome(client.report_paths(&report).await, &mut failing);
        reporter.answered(report, outcome, now);
    }
}

/// What became of a report, logged: a failure once until a report goes through, the
/// controller's lack of the route once.
fn outcome(result: Result<(), ClientError>, failing: &mut bool) -> Outcome {
    match result {
        Ok(()) => {
            *failing = false;
            Outcome::Sent
        }
        Err(ClientError::Rejected { reason, .. }) if reason.contains("unknown field `cutoffs`") => {
            tracing::info!(target: "meshtun::gate", "the controller does not take cut-off times in path reports (an older version): reporting the paths without them");
            Outcome::NoCutoffs
        }
        Err(ClientError::Status { status: 404, .. }) => {
            tracing::info!(target: "meshtun::gate", "the controller does not take path reports (404; an older version): not reporting them");
            Outcome::Unsupported
        }
        Err(error) => {
            if !*failing {
                tracing::warn!(target: "meshtun::gate", error = %Chain(&error), "cannot report the paths to this node's peers; retrying");
            }
            *failing = true;
            Outcome::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> ClientError {
        ClientError::Status {
            what: "reporting the paths to peers",
            status: code,
            reason: "no".into(),
        }
    }

    #[test]
    fn a_404_stops_reporting_and_other_refusals_retry() {
        let mut failing = false;
        assert_eq!(
            outcome(Err(status(404)), &mut failing),
            Outcome::Unsupported
        );
        assert_eq!(outcome(Err(status(400)), &mut failing), Outcome::Failed);
        assert!(failing);
        let rejected = ClientError::Rejected {
            what: "reporting the paths to peers",
            reason: "too many".into(),
        };
        assert_eq!(outcome(Err(rejected), &mut failing), Outcome::Failed);
        // What a controller without the cut-off field answers (serde's words).
        let older = ClientError::Rejected {
            what: "reporting the paths to peers",
            reason: "path report of node-a: not a path report: unknown field `cutoffs`, \
                     expected one of `direct`, `relayed`, `trying`, `none` at line 1 column 55"
                .into(),
        };
        assert_eq!(outcome(Err(older), &mut failing), Outcome::NoCutoffs);
        assert_eq!(outcome(Ok(()), &mut failing), Outcome::Sent);
        assert!(!failing);
    }
}
