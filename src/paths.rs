//! Path reports: how many of a node's gated peers it reaches directly, through a relay,
//! is still trying, or has no path to, and how long its last cut-offs took after the
//! controller's decision, sent to the controller in a signed `PUT /v1/paths/{node_id}` for
//! its dashboard.
//!
//! Counts and cut-off times only: no address is sent, and a peer is named only by the
//! node id of a peer this node cut off (the controller decided that denial and knows it).
//! A body is at most [`MAX_REPORT_BYTES`], each count at most [`MAX_COUNT`], and at most
//! [`MAX_CUTOFFS`] cut-offs of at most [`MAX_CUTOFF_MS`] each.

use serde::{Deserialize, Serialize};

use crate::psk::EpochId;
use crate::wire::valid_node_id;

/// Largest report body accepted (the largest valid report is under 2,000 bytes).
pub const MAX_REPORT_BYTES: usize = 4096;

/// Most cut-offs one report carries (the node's newest).
pub const MAX_CUTOFFS: usize = 16;

/// Longest decision-to-cut-off time accepted, milliseconds (a day: a node that was
/// offline when its peer was denied cuts it off when it comes back).
pub const MAX_CUTOFF_MS: u64 = 86_400_000;

/// The largest count of one path accepted (more peers than any mesh meshtun runs).
pub const MAX_COUNT: u32 = 100_000;

/// One cut-off: this node removed `peer` when it applied `epoch`, `ms` after the
/// controller decided that epoch (by this node's clock against the decision's timestamp).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutoffSample {
    /// The epoch that cut the peer off.
    pub epoch: EpochId,
    /// The peer cut off (its node id).
    pub peer: String,
    /// From the decision to the cut-off, milliseconds.
    pub ms: u64,
}

/// A node's counts of its gated peers by path, and its newest cut-offs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The node's newest cut-offs with a known decision time, oldest first (at most
    /// [`MAX_CUTOFFS`]); left out when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cutoffs: Vec<CutoffSample>,
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
    /// More than [`MAX_CUTOFFS`] cut-offs.
    #[error("{0} cut-offs: at most {MAX_CUTOFFS} may be reported")]
    TooManyCutoffs(usize),
    /// A cut-off naming something that is not a node id, or taking longer than
    /// [`MAX_CUTOFF_MS`].
    #[error("cut-off {index}: {what}")]
    BadCutoff {
        /// Its place in the list, from 0.
        index: usize,
        /// What is wrong with it.
        what: String,
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

    /// Checks every count against [`MAX_COUNT`] and the cut-offs against their bounds.
    pub fn check(&self) -> Result<(), PathError> {
        for (path, count) in self.counts() {
            if count > MAX_COUNT {
                return Err(PathError::TooMany { path, count });
            }
        }
        if self.cutoffs.len() > MAX_CUTOFFS {
            return Err(PathError::TooManyCutoffs(self.cutoffs.len()));
        }
        for (index, cutoff) in self.cutoffs.iter().enumerate() {
            let what = if !valid_node_id(&cutoff.peer) {
                format!("{:?} is not a node id", cutoff.peer)
            } else if cutoff.ms > MAX_CUTOFF_MS {
                format!("{} ms, more than {MAX_CUTOFF_MS}", cutoff.ms)
            } else {
                continue;
            };
            return Err(PathError::BadCutoff { index, what });
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
            cutoffs: vec![CutoffSample {
                epoch: 7,
                peer: "node-d".into(),
                ms: 19,
            }],
        };
        let body = serde_json::to_vec(&report).unwrap();
        assert!(body.len() <= MAX_REPORT_BYTES);
        assert_eq!(PathReport::decode(&body), Ok(report));
        // The largest report still fits the cap, with room to spare.
        let max = PathReport {
            direct: MAX_COUNT,
            relayed: MAX_COUNT,
            trying: MAX_COUNT,
            none: MAX_COUNT,
            cutoffs: vec![
                CutoffSample {
                    epoch: u64::MAX,
                    peer: "n".repeat(64),
                    ms: MAX_CUTOFF_MS,
                };
                MAX_CUTOFFS
            ],
        };
        let body = serde_json::to_vec(&max).unwrap();
        assert!(body.len() < 2_000, "{} bytes", body.len());
        assert_eq!(PathReport::decode(&body), Ok(max));
    }

    /// A report without cut-offs is encoded without the field, as nodes before it sent it,
    /// and such a report still decodes.
    #[test]
    fn a_report_without_cutoffs_keeps_the_older_shape() {
        let report = PathReport {
            direct: 1,
            ..PathReport::default()
        };
        let body = serde_json::to_string(&report).unwrap();
        assert_eq!(body, r#"{"direct":1,"relayed":0,"trying":0,"none":0}"#);
        assert_eq!(PathReport::decode(body.as_bytes()), Ok(report));
    }

    /// A member lying about its cut-offs is bounded: too many, a peer that is not a node
    /// id (markup for the dashboard, an overlong name), or an absurd time are refused.
    #[test]
    fn attack_hostile_cutoffs_are_refused() {
        let sample = |peer: &str, ms: u64| CutoffSample {
            epoch: 1,
            peer: peer.into(),
            ms,
        };
        let with = |cutoffs: Vec<CutoffSample>| PathReport {
            cutoffs,
            ..PathReport::default()
        };
        let decode = |r: &PathReport| PathReport::decode(&serde_json::to_vec(r).unwrap());
        assert_eq!(
            decode(&with(vec![sample("a", 1); MAX_CUTOFFS + 1])),
            Err(PathError::TooManyCutoffs(MAX_CUTOFFS + 1))
        );
        for (peer, ms, expect) in [
            ("<img src=x onerror=alert(1)>", 1, "is not a node id"),
            (&"n".repeat(65)[..], 1, "is not a node id"),
            ("", 1, "is not a node id"),
            ("node-d", MAX_CUTOFF_MS + 1, "ms, more than 86400000"),
        ] {
            let err = decode(&with(vec![sample("a", 1), sample(peer, ms)])).unwrap_err();
            assert!(
                matches!(err, PathError::BadCutoff { index: 1, .. }),
                "{err:?}"
            );
            assert!(err.to_string().contains(expect), "{err}");
        }
        let junk = br#"{"direct":0,"relayed":0,"trying":0,"none":0,"cutoffs":[{"epoch":1,"peer":"a","ms":1,"extra":1}]}"#;
        assert!(matches!(
            PathReport::decode(junk),
            Err(PathError::Malformed(_))
        ));
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
        assert!(err.contains("bytes, more than 4096"), "{err}");
    }
}
