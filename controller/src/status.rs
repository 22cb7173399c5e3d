//! `GET /v1/status` and `meshtun-controller status`: the seeds' status.json, with reasons,
//! and nothing secret (no epoch secret, no key material beyond public keys).

use std::collections::BTreeMap;

use meshtun_proto::wire::EpochInfo;
use serde::Serialize;

use crate::engine::Engine;
use crate::ha::ClusterStatus;
use crate::model::Pin;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The epoch in force and the next one, if published.
    pub epoch: Option<EpochInfo>,
    /// Per node, by id.
    pub nodes: BTreeMap<String, NodeStatus>,
    /// Nodes allowed in the epoch in force.
    pub allowed: usize,
    /// Nodes denied in the epoch in force.
    pub denied: usize,
    /// With several instances on PostgreSQL: the leader, its term, and each instance's
    /// last contact, as of this instance's last lease renewal (absent with SQLite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// One node's state.
#[derive(Debug, Serialize)]
pub struct NodeStatus {
    /// "ALLOWED", "DENIED" or "PENDING" (enrolled after the epoch in force was decided).
    pub membership: &'static str,
    /// Why.
    pub reason: Option<String>,
    /// The newest benchmark's overall score.
    pub score: Option<f64>,
    /// Its age when the epoch was decided, milliseconds.
    pub age_ms: Option<u64>,
    /// Its sequence number.
    pub seq: Option<u64>,
    /// An admin pin, if any.
    pub pin: Option<Pin>,
    /// WireGuard public key.
    pub wg_public_key: String,
    /// Advertised endpoint.
    pub endpoint: Option<String>,
    /// Overlay addresses.
    pub addresses: Vec<String>,
}

/// Builds the report from the engine's state.
pub fn status_report(engine: &Engine) -> StatusReport {
    let decisions: BTreeMap<String, _> = engine
        .current_decisions()
        .into_iter()
        .map(|d| (d.node_id.clone(), d))
        .collect();
    let nodes: BTreeMap<String, NodeStatus> = engine
        .nodes()
        .into_iter()
        .map(|n| {
            let d = decisions.get(&n.id);
            let status = NodeStatus {
                membership: match d {
                    Some(d) if d.allowed => "ALLOWED",
                    Some(_) => "DENIED",
                    None => "PENDING",
                },
                reason: d.map(|d| d.reason.clone()),
                score: d.and_then(|d| d.evidence.score),
                age_ms: d.and_then(|d| d.evidence.age_ms),
                seq: d.and_then(|d| d.evidence.seq),
                pin: n.pin,
                wg_public_key: n.wg_public_key.to_base64(),
                endpoint: n.endpoint.clone(),
                addresses: n.addresses.iter().map(|a| a.to_string()).collect(),
            };
            (n.id, status)
        })
        .collect();
    let allowed = decisions.values().filter(|d| d.allowed).count();
    StatusReport {
        epoch: engine.epoch_info(),
        denied: decisions.len() - allowed,
        allowed,
        nodes,
        cluster: engine.leadership().cluster(),
    }
}
