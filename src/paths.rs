//! Path reports: how many of a node's gated peers it reaches directly, through a relay,
//! is still trying, or has no path to, sent to the controller in a signed
//! `PUT /v1/paths/{node_id}` for its dashboard.
//!
//! Counts only: no peer is named, no address is sent. A body is at most
//! [`MAX_REPORT_BYTES`] and each count at most [`MAX_COUNT`].

use serde::{Deserialize, Serialize};

/// Largest report body accepted.
pub const MAX_REPORT_BYTES: usize = 256;

/// The largest count of one path accepted (more peers than any mesh meshtun runs).
pub const MAX_COUNT: u32 = 100_000;

/// A node's counts of its gated peers by path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathReport {
    /// Peers reached directly (a recent handshake, on a peer's own endpoint).
    pub direct: u32,
    /// Peers reached through a relay.
    pub relayed: u32,
    /// Peers being tried (no handshake yet, or a stale one).
    pub trying: u32,
    /// Peers with no endpoint to try.
    pub none: u32,
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not JSON of the right shape, or too large.
    #[error("not a path report: {0}")]
    Malformed(String),
    /// A count above [`MAX_COUNT`].
    #[error("{count} {path} peers: at most {MAX_COUNT} may be reported")]
    TooMany {
        /// Which path.
        path: &'static str,
        /// The count reported.
        count: u32,
    },
}

impl PathReport {
    /// Parses and checks a report body.
    pub fn decode(body: &[u8]) -> Result<Self, PathError> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(PathError::Malformed(format!(
                "{} bytes, more than {MAX_REPORT_BYTES}",
                body.len()
            )));
        }
        let report: Self =
            serde_json::from_slice(body).map_err(|e| PathError::Malformed(e.to_string()))?;
        report.check()?;
        Ok(report)
    }

    /// Checks every count against [`MAX_COUNT`].
    pub fn check(&self) -> Result<(), PathError> {
        for (path, count) in self.counts() {
            if count > MAX_COUNT {
                return Err(PathError::TooMany { path, count });
            }
        }
        Ok(())
    }

    /// The counts with their path names, in the order of the fields.
    pub fn counts(&self) -> [(&'static str, u32); 4] {
        [
            ("direct", self.direct),
            ("relayed", self.relayed),
            ("trying", self.trying),
            ("none", self.none),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_round_trips() {
        let report = PathReport {
            direct: 3,
            relayed: 1,
            trying: 0,
            none: 2,
        };
        let body = serde_json::to_vec(&report).unwrap();
        assert!(body.len() <= MAX_REPORT_BYTES);
        assert_eq!(PathReport::decode(&body), Ok(report));
        // The largest report still fits the cap.
        let max = PathReport {
            direct: MAX_COUNT,
            relayed: MAX_COUNT,
            trying: MAX_COUNT,
            none: MAX_COUNT,
        };
        assert_eq!(
            PathReport::decode(&serde_json::to_vec(&max).unwrap()),
            Ok(max)
        );
    }

    /// Counts past the bound, unknown fields, missing fields, negative or fractional
    /// counts, and bodies past the byte cap are refused, naming what was wrong.
    #[test]
    fn attack_oversized_and_malformed_reports_are_refused() {
        let err = PathReport::decode(br#"{"direct":0,"relayed":100001,"trying":0,"none":0}"#);
        assert_eq!(
            err,
            Err(PathError::TooMany {
                path: "relayed",
                count: 100_001
            })
        );
        assert!(err.unwrap_err().to_string().contains("relayed"));
        for junk in [
            &br#"{"direct":1,"relayed":0,"trying":0,"none":0,"peers":["a"]}"#[..],
            br#"{"direct":1,"relayed":0,"trying":0}"#,
            br#"{"direct":-1,"relayed":0,"trying":0,"none":0}"#,
            br#"{"direct":1.5,"relayed":0,"trying":0,"none":0}"#,
            br#"{"direct":4294967296,"relayed":0,"trying":0,"none":0}"#,
            b"\xff",
            b"",
        ] {
            assert!(
                matches!(PathReport::decode(junk), Err(PathError::Malformed(_))),
                "{junk:?}"
            );
        }
        let mut padded = br#"{"direct":1,"relayed":0,"trying":0,"none":0}"#.to_vec();
        padded.resize(MAX_REPORT_BYTES + 1, b' ');
        let err = PathReport::decode(&padded).unwrap_err().to_string();
        assert!(err.contains("bytes, more than 256"), "{err}");
    }
}
