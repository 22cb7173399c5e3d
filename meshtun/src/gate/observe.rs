//! Peer observations, the node's side (sans-IO): which gated peers to observe each round,
//! and the statement ([`meshtun_proto::observation`]) each probe result makes.
//!
//! Every round the daemon (`daemon/observe.rs`) takes the device's gated peers, picks at
//! most `[controller] observe_peers` of them with [`Rounds::next`] (round-robin by node id,
//! so that every peer is covered over successive rounds, and never this node itself),
//! probes them all at once through the tunnel ([`crate::probe`]: one ICMP echo each), reads
//! each one's last handshake again after the probe (the echo starts a handshake if there was
//! none), and makes of each result one statement with [`observation`]:
//!
//! | probe result | scores |
//! |---|---|
//! | answered in `rtt` | `reachable` 1, `latency` from `rtt`, `handshake` |
//! | no answer in time | `reachable` 0, `handshake` |
//! | not probed (no address to probe, no ICMP socket) | no statement |
//!
//! The evidence digest is the SHA-256 of the canonical JSON of what was measured
//! ([`Evidence`]). [`Outcome`] sorts what the controller made of a submission, and
//! [`Warnings`] decides which failures are worth a log line.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use meshtun_proto::observation::{handshake_score, latency_score, HANDSHAKE, LATENCY, REACHABLE};
use meshtun_proto::statement::{EvidenceDigest, Issuer, Statement};
use serde::Serialize;

use super::ClientError;
use crate::probe::Reachability;
use crate::wgcfg::PeerStatus;

/// The round-robin over the gated peers: where the last round stopped.
#[derive(Debug, Default)]
pub struct Rounds {
    /// The node id observed last; the next round starts after it.
    last: Option<String>,
}

impl Rounds {
    /// The gated peers of `peers` to observe this round, as indexes into `peers`: at most
    /// `max`, never `own_id`, each node once, in node-id order starting after the last node
    /// observed in the previous round (and wrapping around).
    pub fn next(&mut self, peers: &[PeerStatus], own_id: &str, max: usize) -> Vec<usize> {
        let mut gated: Vec<(&str, usize)> = peers
            .iter()
            .enumerate()
            .filter_map(|(index, peer)| peer.gate.as_ref().map(|g| (g.node_id.as_str(), index)))
            .filter(|(node, _)| *node != own_id)
            .collect();
        gated.sort_unstable();
        gated.dedup_by(|a, b| a.0 == b.0);
        let start = match &self.last {
            Some(last) => gated.partition_point(|(node, _)| *node <= last.as_str()),
            None => 0,
        };
        let take = max.min(gated.len());
        let chosen: Vec<(&str, usize)> = gated
            .iter()
            .cycle()
            .skip(start)
            .take(take)
            .copied()
            .collect();
        if let Some((node, _)) = chosen.last() {
            self.last = Some((*node).to_owned());
        }
        chosen.into_iter().map(|(_, index)| index).collect()
    }
}

/// What was measured of one peer, as its evidence digest covers it: the canonical JSON of
/// this struct (fields in this order, whole numbers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The peer's node id.
    pub subject: String,
    /// The overlay address probed.
    pub address: IpAddr,
    /// Whether it answered.
    pub reachable: bool,
    /// The round-trip time, in microseconds, when it answered.
    pub rtt_us: Option<u64>,
    /// Milliseconds since the last completed handshake, read after the probe; `None`:
    /// never.
    pub handshake_age_ms: Option<u64>,
}

impl Evidence {
    /// The canonical JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, booleans and whole numbers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// How long ago `last` was, at `now`; `None` if never. A handshake stamped after `now` (the
/// clock stepped back) is taken as just now.
pub fn handshake_age(last: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    last.map(|at| now.duration_since(at).unwrap_or_default())
}

/// The statement `own_id` makes about peer `subject` from its probe result `reach` and its
/// handshake `age` after the probe, evaluated at `now_ms` (Unix milliseconds); unsigned.
/// `None` when the peer was not probed ([`Reachability::Unknown`]) or is this node itself.
pub fn observation(
    own_id: &str,
    subject: &str,
    reach: &Reachability,
    age: Option<Duration>,
    now_ms: u64,
) -> Option<Statement> {
    if subject == own_id {
        return None;
    }
    let (address, rtt) = match reach {
        Reachability::Reachable { address, rtt } => (*address, Some(*rtt)),
        Reachability::Unreachable { address, .. } => (*address, None),
        Reachability::Unknown { .. } => return None,
    };
    let mut scores = BTreeMap::new();
    scores.insert(REACHABLE.to_owned(), if rtt.is_some() { 1.0 } else { 0.0 });
    if let Some(rtt) = rtt {
        scores.insert(LATENCY.to_owned(), latency_score(rtt));
    }
    scores.insert(HANDSHAKE.to_owned(), handshake_score(age));
    let whole = |d: u128| u64::try_from(d).unwrap_or(u64::MAX);
    let evidence = Evidence {
        subject: subject.to_owned(),
        address,
        reachable: rtt.is_some(),
        rtt_us: rtt.map(|r| whole(r.as_micros())),
        handshake_age_ms: age.map(|a| whole(a.as_millis())),
    };
    Some(Statement {
        issuer: Issuer::Node(own_id.to_owned()),
        subject: subject.to_owned(),
        scores,
        evaluated_at_ms: now_ms,
        evidence: EvidenceDigest::of(&evidence.to_json()),
    })
}

/// What became of one observation (the `outcome` label of
/// `meshtun_gate_observations_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The controller stored it.
    Sent,
    /// The controller answered with a refusal (4xx).
    Refused,
    /// It could not be signed, or no controller instance answered (or one answered 5xx or
    /// something malformed).
    Failed,
}

impl Outcome {
    /// The outcome of a failed submission.
    pub fn of(error: &ClientError) -> Self {
        match error {
            ClientError::Unauthorized { .. }
            | ClientError::Forbidden { .. }
            | ClientError::Conflict { .. }
            | ClientError::Rejected { .. }
            | ClientError::Throttled { .. } => Outcome::Refused,
            ClientError::Status { status, .. } if (400..500).contains(status) => Outcome::Refused,
            _ => Outcome::Failed,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// Which failures to log: a failed submission once until the next success, a refusal once
/// per reason until the next success (the controller's policy may refuse every one, every
/// round, for the same reason), anything else once per reason.
#[derive(Debug, Default)]
pub struct Warnings {
    failing: bool,
    refused: Vec<String>,
    others: Vec<String>,
}

/// The most distinct reasons remembered, of each kind (then every new one is logged again).
const MAX_REASONS: usize = 16;

impl Warnings {
    /// A submission was stored.
    pub fn succeeded(&mut self) {
        self.failing = false;
        self.refused.clear();
    }

    /// A submission failed with `error`: whether to log it.
    pub fn should_log(&mut self, error: &ClientError) -> bool {
        match Outcome::of(error) {
            Outcome::Refused => first_time(&mut self.refused, error.to_string()),
            _ => !std::mem::replace(&mut self.failing, true),
        }
    }

    /// A peer could not be probed or its statement signed, for `reason`: whether to log it
    /// (once per reason, whatever the submissions did).
    pub fn should_log_once(&mut self, reason: &str) -> bool {
        first_time(&mut self.others, reason.to_owned())
    }
}

/// Whether `reason` is new to `seen` (then remembered, the oldest forgotten past
/// [`MAX_REASONS`]).
fn first_time(seen: &mut Vec<String>, reason: String) -> bool {
    if seen.contains(&reason) {
        return false;
    }
    if seen.len() >= MAX_REASONS {
        seen.remove(0);
    }
    seen.push(reason);
    true
}

#[cfg(test)]
mod tests;
