//! Candidate endpoints: where a node says it can be reached, reported to the controller in
//! a signed `PUT /v1/candidates/{node_id}` and handed to its peers in their bundles.
//!
//! A candidate is a literal `ip:port` (never a name: the controller does not resolve what
//! nodes send). Addresses that can only mean the sender's own host or nobody (unspecified,
//! loopback, multicast, broadcast, IPv4-mapped) are refused, as is port 0. A report holds
//! at most [`MAX_REPORTED`] candidates; peers probe them at a bounded rate (a member that
//! lists someone else's address makes that address receive only a few handshake
//! initiations).

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The most candidates one report holds.
pub const MAX_REPORTED: usize = 6;

/// Largest report body accepted.
pub const MAX_REPORT_BYTES: usize = 2048;

/// A node's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateReport {
    /// Where the node can be reached, best first.
    pub candidates: Vec<SocketAddr>,
    /// The node's WireGuard UDP port: with the address the controller sees the report come
    /// from, the guess for a port-preserving NAT.
    pub listen_port: u16,
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CandidateError {
    /// Not JSON of the right shape, or too large.
    #[error("not a candidate report: {0}")]
    Malformed(String),
    /// More than [`MAX_REPORTED`].
    #[error("{0} candidates: at most {MAX_REPORTED} may be reported")]
    TooMany(usize),
    /// An address no peer could use.
    #[error("candidate {0} cannot be reached by a peer: {1}")]
    Unusable(SocketAddr, &'static str),
    /// Port 0.
    #[error("the WireGuard listen port is 0")]
    NoPort,
}

impl CandidateReport {
    /// Parses and checks a report body.
    pub fn decode(body: &[u8]) -> Result<Self, CandidateError> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(CandidateError::Malformed(format!(
                "{} bytes, more than {MAX_REPORT_BYTES}",
                body.len()
            )));
        }
        let report: Self =
            serde_json::from_slice(body).map_err(|e| CandidateError::Malformed(e.to_string()))?;
        report.check()?;
        Ok(report)
    }

    /// Checks the rules of the module documentation.
    pub fn check(&self) -> Result<(), CandidateError> {
        if self.candidates.len() > MAX_REPORTED {
            return Err(CandidateError::TooMany(self.candidates.len()));
        }
        if self.listen_port == 0 {
            return Err(CandidateError::NoPort);
        }
        for candidate in &self.candidates {
            if let Some(why) = unusable(candidate) {
                return Err(CandidateError::Unusable(*candidate, why));
            }
        }
        Ok(())
    }
}

/// Why `addr` is no candidate, if it is not.
pub fn unusable(addr: &SocketAddr) -> Option<&'static str> {
    if addr.port() == 0 {
        return Some("port 0");
    }
    match addr.ip() {
        ip if ip.is_unspecified() => Some("an unspecified address"),
        ip if ip.is_loopback() => Some("a loopback address"),
        ip if ip.is_multicast() => Some("a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Some("an IPv4-mapped IPv6 address"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            Some("an IPv6 link-local address (it needs a scope)")
        }
        // RFC 6666; meshtun names peers reached through a relay with addresses there.
        IpAddr::V6(v6) if v6.segments()[..4] == [0x0100, 0, 0, 0] => {
            Some("an address of the discard-only prefix 100::/64")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(candidates: &[&str]) -> Vec<u8> {
        let list: Vec<String> = candidates.iter().map(|c| format!("\"{c}\"")).collect();
        format!(
            "{{\"candidates\": [{}], \"listen_port\": 51820}}",
            list.join(", ")
        )
        .into_bytes()
    }

    #[test]
    fn a_good_report_is_read_in_order() {
        let got = CandidateReport::decode(&report(&["198.51.100.4:40001", "[2001:db8::4]:51820"]))
            .unwrap();
        assert_eq!(got.candidates[0], "198.51.100.4:40001".parse().unwrap());
        assert_eq!(got.listen_port, 51820);
    }

    /// What a hostile member might report to turn peers against a host of its choice or
    /// against themselves: refused, naming the candidate.
    #[test]
    fn attack_unusable_names_and_oversized_reports_are_refused() {
        for (bad, why) in [
            ("127.0.0.1:51820", "loopback"),
            ("0.0.0.0:51820", "unspecified"),
            ("224.0.0.1:51820", "multicast"),
            ("255.255.255.255:51820", "broadcast"),
            ("[::ffff:192.0.2.1]:51820", "IPv4-mapped"),
            ("[fe80::1]:51820", "link-local"),
            ("192.0.2.1:0", "port 0"),
            ("[100::6d74:7265:6c79:1]:51820", "discard-only"),
        ] {
            let err = CandidateReport::decode(&report(&[bad]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let many: Vec<String> = (1..=7).map(|i| format!("192.0.2.{i}:1")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            CandidateReport::decode(&report(&many)),
            Err(CandidateError::TooMany(7))
        );
        for junk in [
            &br#"{"candidates": ["host.example:51820"], "listen_port": 1}"#[..],
            br#"{"candidates": [], "listen_port": 0}"#,
            br#"{"candidates": [], "listen_port": 1, "extra": 1}"#,
            b"\xff",
        ] {
            assert!(CandidateReport::decode(junk).is_err(), "{junk:?}");
        }
        assert!(CandidateReport::decode(&vec![b' '; MAX_REPORT_BYTES + 1]).is_err());
    }
}
