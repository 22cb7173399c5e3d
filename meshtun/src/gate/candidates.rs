//! Which candidate endpoints this node reports to the controller, and when (sans-IO).
//!
//! The candidates are the reflexive addresses STUN saw (what peers behind other NATs can
//! reach), then the host's own addresses with the WireGuard port (what peers on the same
//! network can reach), best first, each once, at most
//! [`meshtun_proto::candidates::MAX_REPORTED`]. Never an overlay address (the
//! tunnel cannot carry its own handshakes), nor one no peer could use. A report goes out
//! when the set changes, and again every [`REPORT_EVERY`] so a controller that lost it (a
//! restore) learns it back; after a failure, not before [`RETRY_AFTER`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use meshtun_proto::candidates::{unusable, CandidateReport, MAX_REPORTED};

/// How often an unchanged report is sent again.
pub const REPORT_EVERY: Duration = Duration::from_secs(300);

/// How long after a failed report the next attempt waits.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The candidates of a node listening on `port`, from its `reflexive` addresses and its
/// `host` addresses, leaving out its `overlay` networks, and its `relayed` address on the
/// TURN relay last (always kept: peers try it only along with the others, and it is the
/// one that passes any NAT).
pub fn gather(
    reflexive: &[SocketAddr],
    host: &[IpAddr],
    port: u16,
    overlay: &[IpNet],
    relayed: Option<SocketAddr>,
) -> Vec<SocketAddr> {
    let room = MAX_REPORTED - usize::from(relayed.is_some());
    let mut hosts: Vec<IpAddr> = host.to_vec();
    // IPv4 first, then by address: a stable order, so an unchanged set is not re-sent.
    hosts.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    let hosts = hosts.into_iter().map(|ip| SocketAddr::new(ip, port));
    let mut list = Vec::with_capacity(MAX_REPORTED);
    for addr in reflexive.iter().copied().chain(hosts) {
        if list.len() >= room {
            break;
        }
        let inside = overlay.iter().any(|net| net.contains(&addr.ip()));
        if !inside && unusable(&addr).is_none() && !list.contains(&addr) {
            list.push(addr);
        }
    }
    list.extend(relayed.filter(|r| !list.contains(r)));
    list
}

/// When to report.
#[derive(Debug, Default)]
pub struct Reporter {
    sent: Option<(CandidateReport, Instant)>,
    failed_at: Option<Instant>,
}

impl Reporter {
    /// The report to send at `now`, if one is due.
    pub fn due(&self, report: &CandidateReport, now: Instant) -> bool {
        if self
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

    /// `report` was stored by the controller at `now`.
    pub fn sent(&mut self, report: CandidateReport, now: Instant) {
        self.sent = Some((report, now));
        self.failed_at = None;
    }

    /// Sending failed at `now`.
    pub fn failed(&mut self, now: Instant) {
        self.failed_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn reflexive_first_then_usable_host_addresses_never_the_overlay() {
        let host: Vec<IpAddr> = [
            "fe80::1",
            "192.0.2.4",
            "127.0.0.1",
            "100.64.0.4",
            "2001:db8::4",
            "10.1.0.4",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let overlay: Vec<IpNet> = vec!["100.64.0.0/24".parse().unwrap()];
        let got = gather(
            &addrs(&["198.51.100.4:40001", "192.0.2.4:51820"]),
            &host,
            51820,
            &overlay,
            None,
        );
        assert_eq!(
            got,
            addrs(&[
                "198.51.100.4:40001",
                "192.0.2.4:51820",
                "10.1.0.4:51820",
                "[2001:db8::4]:51820"
            ])
        );
        let many: Vec<IpAddr> = (1..=20)
            .map(|i| format!("192.0.2.{i}").parse().unwrap())
            .collect();
        assert_eq!(gather(&[], &many, 1, &[], None).len(), MAX_REPORTED);
        // The relayed address is kept, last, however many host addresses there are.
        let relayed: SocketAddr = "203.0.113.9:49200".parse().unwrap();
        let got = gather(&[], &many, 1, &[], Some(relayed));
        assert_eq!(got.len(), MAX_REPORTED);
        assert_eq!(got.last(), Some(&relayed));
    }

    #[test]
    fn a_report_goes_when_it_changes_or_is_old_and_waits_after_a_failure() {
        let t0 = Instant::now();
        let report = |c: &[&str]| CandidateReport {
            candidates: addrs(c),
            listen_port: 51820,
        };
        let mut r = Reporter::default();
        let first = report(&["192.0.2.4:51820"]);
        assert!(r.due(&first, t0));
        r.failed(t0);
        assert!(
            !r.due(&first, t0 + RETRY_AFTER / 2),
            "backs off after a failure"
        );
        assert!(r.due(&first, t0 + RETRY_AFTER));
        r.sent(first.clone(), t0 + RETRY_AFTER);
        let later = t0 + RETRY_AFTER + Duration::from_secs(1);
        assert!(!r.due(&first, later), "unchanged");
        assert!(r.due(&report(&["198.51.100.4:40001"]), later), "changed");
        assert!(
            r.due(&first, t0 + RETRY_AFTER + REPORT_EVERY),
            "sent again when old"
        );
    }
}
