//! Path reports, the node's side (no I/O): this node's gated peers counted by path
//! ([`PeerStatus::path`]: direct, relayed, trying, none) and when to send the counts to the
//! controller (`PUT /v1/paths/{node}`), for its dashboard. The daemon's task is
//! `daemon::paths`.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use meshtun_proto::paths::PathReport;

use crate::wgcfg::PeerStatus;

/// How often unchanged counts are sent again.
pub const REPORT_EVERY: Duration = Duration::from_secs(30);

/// How long after a failed report the next attempt waits.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Counts the gated peers of `peers` (those with a [`PeerStatus::gate`]) by their path at
/// `now`, `relay` being the TURN relay server in use, if any.
pub fn count(peers: &[PeerStatus], now: SystemTime, relay: Option<SocketAddr>) -> PathReport {
    let mut report = PathReport::default();
    for peer in peers.iter().filter(|p| p.gate.is_some()) {
        let slot = match peer.path(now, relay) {
            "direct" => &mut report.direct,
            "relayed" => &mut report.relayed,
            "trying" => &mut report.trying,
            _ => &mut report.none,
        };
        *slot = slot.saturating_add(1);
    }
    report
}

/// What the controller answered last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored.
    Sent,
    /// Refused or not reached; tried again after [`RETRY_AFTER`].
    Failed,
    /// The controller has no such route (404: an older controller); never asked again.
    Unsupported,
    /// The controller refused the report's cut-offs as an unknown field (422: an older
    /// controller); reports to this instance leave them out from now on.
    NoCutoffs,
}

/// When to report.
#[derive(Debug, Default)]
pub struct Reporter {
    instance: String,
    cutoffs_refused: bool,
    sent: Option<(PathReport, Instant)>,
    failed_at: Option<Instant>,
    unsupported: bool,
}

impl Reporter {
    /// Whether `report` is to be sent at `now`: never once the controller said it has no
    /// such route; otherwise when it changed, or after [`REPORT_EVERY`], but not within
    /// [`RETRY_AFTER`] of a failure.
    pub fn due(&self, report: &PathReport, now: Instant) -> bool {
        if self.unsupported
            || self
                .failed_at
                .is_some_and(|at| now.saturating_duration_since(at) < RETRY_AFTER)
        {
            return false;
        }
        match &self.sent {
            Some((last, at)) => {
                last != report || now.saturating_duration_since(*at) >= REPORT_EVERY
            }
            None => true,
        }
    }

    /// Notes the controller instance in use: when it is another than before, what was
    /// sent to the one before counts for nothing (the new one has nothing to show), so the
    /// next report is due at once.
    pub fn instance(&mut self, url: &str) {
        if self.instance != url {
            url.clone_into(&mut self.instance);
            self.sent = None;
            self.failed_at = None;
            self.cutoffs_refused = false;
        }
    }

    /// Whether reports to the instance in use carry the cut-offs (false once it refused
    /// them as an unknown field, [`Outcome::NoCutoffs`]).
    pub fn takes_cutoffs(&self) -> bool {
        !self.cutoffs_refused
    }

    /// Notes what became of `report`, sent at `now`.
    pub fn answered(&mut self, report: PathReport, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Sent => {
                self.sent = Some((report, now));
                self.failed_at = None;
            }
            Outcome::Failed => self.failed_at = Some(now),
            Outcome::Unsupported => self.unsupported = true,
            Outcome::NoCutoffs => self.cutoffs_refused = true,
        }
    }

    /// Whether the controller said it has no such route.
    pub fn stopped(&self) -> bool {
        self.unsupported
    }
}

#[cfg(test)]
mod tests {
    use meshtun_proto::PrivateKey;

    use super::*;
    use crate::wgcfg::{relayed_endpoint, PeerGate};

    fn peer(gated: bool, endpoint: Option<&str>, handshake_ago: Option<u64>) -> PeerStatus {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        PeerStatus {
            public_key: PrivateKey::generate().public_key(),
            preshared_key: None,
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            endpoint_since: None,
            last_handshake: handshake_ago.map(|s| now - Duration::from_secs(s)),
            rx_bytes: 0,
            tx_bytes: 0,
            persistent_keepalive: None,
            allowed_ips: Vec::new(),
            gate: gated.then(|| PeerGate {
                node_id: "node-x".into(),
                psk_since_ms: 0,
                psk_epoch: None,
                forwards_to: Vec::new(),
            }),
        }
    }

    #[test]
    fn gated_peers_are_counted_by_path_and_static_ones_are_not() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let relay: SocketAddr = "203.0.113.9:3478".parse().unwrap();
        let relayed = relayed_endpoint(1).to_string();
        let peers = vec![
            peer(true, Some("192.0.2.1:51820"), Some(5)),
            peer(true, Some("192.0.2.2:51820"), Some(170)),
            // Through the relay: a relayed endpoint, or an address on the relay server.
            peer(true, Some(&relayed), Some(1)),
            peer(true, Some("203.0.113.9:50000"), Some(1)),
            // Handshake too old, or none: trying.
            peer(true, Some("192.0.2.3:51820"), Some(181)),
            peer(true, Some("192.0.2.4:51820"), None),
            peer(true, None, None),
            // A static peer, direct, is none of the gate's business.
            peer(false, Some("192.0.2.5:51820"), Some(1)),
        ];
        assert_eq!(
            count(&peers, now, Some(relay)),
            PathReport {
                direct: 2,
                relayed: 2,
                trying: 2,
                none: 1,
                cutoffs: Vec::new(),
            }
        );
        assert_eq!(count(&[], now, None), PathReport::default());
    }

    #[test]
    fn reports_on_change_every_30_s_and_backs_off_after_a_failure() {
        let t0 = Instant::now();
        let one = PathReport {
            direct: 1,
            ..PathReport::default()
        };
        let two = PathReport {
            direct: 2,
            ..PathReport::default()
        };
        let mut r = Reporter::default();
        assert!(r.due(&one, t0));
        r.answered(one.clone(), Outcome::Failed, t0);
        assert!(!r.due(&one, t0 + RETRY_AFTER / 2), "backs off");
        assert!(r.due(&one, t0 + RETRY_AFTER));
        let t1 = t0 + RETRY_AFTER;
        r.answered(one.clone(), Outcome::Sent, t1);
        assert!(!r.due(&one, t1 + Duration::from_secs(1)), "unchanged");
        assert!(r.due(&two, t1 + Duration::from_secs(1)), "changed");
        assert!(!r.due(&one, t1 + REPORT_EVERY - Duration::from_millis(1)));
        assert!(r.due(&one, t1 + REPORT_EVERY), "sent again when old");
        // A new cut-off is a change: sent at once.
        let mut cut = one.clone();
        cut.cutoffs.push(meshtun_proto::paths::CutoffSample {
            epoch: 9,
            peer: "node-d".into(),
            ms: 12,
        });
        assert!(r.due(&cut, t1 + Duration::from_secs(1)), "a new cut-off");
    }

    #[test]
    fn a_move_to_another_instance_makes_the_report_due_at_once() {
        let t0 = Instant::now();
        let one = PathReport {
            direct: 1,
            ..PathReport::default()
        };
        let mut r = Reporter::default();
        r.instance("http://192.0.2.10:8700");
        r.answered(one.clone(), Outcome::Sent, t0);
        let soon = t0 + Duration::from_secs(1);
        r.instance("http://192.0.2.10:8700");
        assert!(!r.due(&one, soon), "same instance, unchanged");
        r.instance("http://192.0.2.11:8700");
        assert!(r.due(&one, soon), "the new instance has nothing to show");
        r.answered(one.clone(), Outcome::Failed, soon);
        r.instance("http://192.0.2.10:8700");
        assert!(
            r.due(&one, soon),
            "a failure at another instance does not hold it back"
        );
    }

    /// An older controller refuses the cut-offs field: the counts go on without it, at
    /// once, until the node moves to another instance.
    #[test]
    fn an_older_controller_gets_the_counts_without_the_cut_offs() {
        let t0 = Instant::now();
        let one = PathReport {
            direct: 1,
            ..PathReport::default()
        };
        let mut r = Reporter::default();
        r.instance("http://192.0.2.10:8700");
        assert!(r.takes_cutoffs());
        r.answered(one.clone(), Outcome::NoCutoffs, t0);
        assert!(!r.takes_cutoffs());
        assert!(r.due(&one, t0), "sent again at once, without them");
        r.instance("http://192.0.2.11:8700");
        assert!(r.takes_cutoffs(), "another instance is asked with them");
    }

    #[test]
    fn an_older_controller_without_the_route_is_never_asked_again() {
        let t0 = Instant::now();
        let mut r = Reporter::default();
        let one = PathReport {
            direct: 1,
            ..PathReport::default()
        };
        r.answered(one.clone(), Outcome::Unsupported, t0);
        assert!(r.stopped());
        assert!(!r.due(&one, t0 + REPORT_EVERY * 10));
        assert!(!r.due(&PathReport::default(), t0 + REPORT_EVERY * 10));
    }
}
