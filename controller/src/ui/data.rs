//! `GET /ui/data`: one JSON snapshot of what the dashboard draws. The live part (epoch,
//! decisions, pairs, what the long-poll saw) comes from memory at every request; the history
//! (benchmark series, decisions log) comes from the store, at most once per
//! [`HISTORY_TTL`] whoever asks, and at once after a new epoch. Every list is capped, so the answer's size is bounded
//! whatever the mesh's size.
//!
//! Nothing secret is in it: no epoch secret, PSK, token or private key; not even the nodes'
//! public keys, which an operator does not need here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshtun_proto::wire::EpochInfo;
use meshtun_proto::EpochId;
use parking_lot::Mutex;
use serde::Serialize;

use super::paths::NodeCutoffs;
use super::seen::{Latencies, NodeSeen};
use crate::engine::Engine;
use crate::ha::ClusterStatus;
use crate::membership::topology::peers_of;
use crate::model::{
    BenchmarkRecord, Combine, Decision, Dimension, Minimums, Pin, SourcedEvidence, Topology,
};
use crate::status::status_report;
use crate::store::{EpochSummary, StoreError};

/// Nodes listed at most (the rest are counted in `nodes_total`).
pub const MAX_NODES: usize = 500;
/// Nodes whose score series are plotted at most.
pub const MAX_PLOTTED: usize = 50;
/// Points per plotted node at most.
pub const MAX_POINTS: usize = 240;
/// Pairs drawn on the map at most.
pub const MAX_PAIRS: usize = 2_000;
/// Epochs read for the decisions log and the plot's events.
pub const HISTORY_EPOCHS: usize = 60;
/// Rows of the decisions log at most.
pub const MAX_LOG: usize = 200;
/// How far back the plot goes.
pub const HISTORY_SPAN: Duration = Duration::from_secs(6 * 3600);
/// How long a history read from the store is reused.
pub const HISTORY_TTL: Duration = Duration::from_secs(3);

/// The whole snapshot.
#[derive(Debug, Serialize)]
pub struct Dashboard {
    /// The controller's clock, Unix milliseconds.
    pub now_ms: u64,
    /// The epoch in force and the next one.
    pub epoch: Option<EpochInfo>,
    /// Why the epoch in force was published.
    pub epoch_cause: Option<String>,
    /// Whether this instance decides epochs.
    pub leader: bool,
    /// With several instances: the leader, its term and lease.
    pub cluster: Option<ClusterStatus>,
    /// This instance's name (`[ha] instance`), with several instances.
    pub instance: Option<String>,
    /// The policy's thresholds and topology.
    pub policy: PolicyView,
    /// Nodes by id (at most [`MAX_NODES`]).
    pub nodes: Vec<NodeView>,
    /// Enrolled nodes.
    pub nodes_total: usize,
    /// Pairs that hold keys in the epoch in force (at most [`MAX_PAIRS`]).
    pub pairs: Vec<(String, String)>,
    /// Such pairs in all.
    pub pairs_total: usize,
    /// Whether TURN relay credentials are handed out.
    pub relays_offered: bool,
    /// Decision to bundle or cut-off notice served, for denying epochs.
    pub cutoff_latency: Latencies,
    /// Decision to cut-off, as the nodes measured and reported it.
    pub node_cutoffs: NodeCutoffs,
    /// Score series and decisions log.
    #[serde(serialize_with = "shared")]
    pub history: Arc<History>,
}

fn shared<S: serde::Serializer>(history: &Arc<History>, s: S) -> Result<S::Ok, S::Error> {
    History::serialize(history, s)
}

/// The policy as shown.
#[derive(Debug, Serialize)]
pub struct PolicyView {
    /// Minimum overall score.
    pub threshold: f64,
    /// Per-dimension minimums.
    pub minimums: Minimums,
    /// Oldest acceptable benchmark, milliseconds.
    pub max_age_ms: u64,
    /// Passing evaluations before readmission.
    pub readmit_after: u32,
    /// "full_mesh" or "hub_and_spoke".
    pub topology: &'static str,
    /// The hubs, in hub and spoke.
    pub hubs: Vec<String>,
}

/// One node's row.
#[derive(Debug, Serialize)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// "ALLOWED", "DENIED" or "PENDING".
    pub membership: &'static str,
    /// Why.
    pub reason: Option<String>,
    /// An admin pin.
    pub pin: Option<Pin>,
    /// The score the decision used.
    pub score: Option<f64>,
    /// The newest benchmark stored (as of the last history read).
    pub last_benchmark: Option<Point>,
    /// The dimensions whose value comes from the policy's sources (evaluators, peers), as
    /// the decision in force used them.
    pub sourced: Vec<SourcedView>,
    /// Candidates the node reported, and from where.
    pub path: PathView,
    /// The node's bundle requests.
    pub psk: NodeSeen,
}

/// One sourced dimension of a decision: its value against its minimum, and how many
/// sources it rests on (not who: a peer-sourced dimension may rest on every peer).
#[derive(Debug, Serialize)]
pub struct SourcedView {
    /// The dimension.
    pub dimension: Dimension,
    /// The combined value; `None` when fewer than `k` sources were fresh.
    pub value: Option<f64>,
    /// The lowest passing value, if any.
    pub minimum: Option<f64>,
    /// Distinct sources needed.
    pub k: u32,
    /// How they were combined.
    pub combine: Combine,
    /// Sources counted.
    pub sources: usize,
}

impl From<&SourcedEvidence> for SourcedView {
    fn from(e: &SourcedEvidence) -> Self {
        Self {
            dimension: e.dimension,
            value: e.value,
            minimum: e.minimum,
            k: e.k,
            combine: e.combine,
            sources: e.used.len(),
        }
    }
}

/// How a node is reached: the paths the node says it uses to its peers (if it reported
/// them), and what the controller hands its peers.
#[derive(Debug, Serialize)]
pub struct PathView {
    /// Advertised endpoint.
    pub endpoint: Option<String>,
    /// Candidate addresses reported.
    pub candidates: usize,
    /// Where the last report came from.
    pub observed: Option<String>,
    /// When, Unix milliseconds.
    pub reported_ms: Option<u64>,
    /// The node's own counts of its peers by path, as last reported to this instance.
    pub peers: Option<super::paths::ReportedPaths>,
}

/// One benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Received, Unix milliseconds.
    pub ms: u64,
    /// Measured (node clock), Unix milliseconds.
    pub measured_ms: u64,
    /// Scores.
    pub overall: f64,
    /// Refusal.
    pub refusal: f64,
    /// Honesty.
    pub honesty: f64,
    /// Policy.
    pub policy: f64,
}

impl From<&BenchmarkRecord> for Point {
    fn from(b: &BenchmarkRecord) -> Self {
        Self {
            ms: b.received_ms,
            measured_ms: b.measured_at_ms,
            overall: b.scores.overall,
            refusal: b.scores.refusal,
            honesty: b.scores.honesty,
            policy: b.scores.policy,
        }
    }
}

/// A node's score series, oldest first.
#[derive(Debug, Serialize)]
pub struct Series {
    /// Node id.
    pub node: String,
    /// Points.
    pub points: Vec<Point>,
}

/// A decision, for the log and the plot's markers.
#[derive(Debug, Serialize)]
pub struct LogRow {
    /// When the epoch was decided, Unix milliseconds.
    pub ms: u64,
    /// The epoch.
    pub epoch: EpochId,
    /// Why the epoch was published.
    pub cause: String,
    /// The node.
    pub node: String,
    /// Allowed or not.
    pub allowed: bool,
    /// Whether this changed the node's membership ("denied" or "readmitted").
    pub change: Option<&'static str>,
    /// Why.
    pub reason: String,
}

/// What is read from the store.
#[derive(Debug, Default, Serialize)]
pub struct History {
    /// When it was read, Unix milliseconds.
    pub read_ms: u64,
    /// Start of the plotted span, Unix milliseconds.
    pub since_ms: u64,
    /// Score series (at most [`MAX_PLOTTED`] nodes × [`MAX_POINTS`]).
    pub series: Vec<Series>,
    /// Decisions that denied a node or changed its membership, newest first (at most
    /// [`MAX_LOG`]).
    pub log: Vec<LogRow>,
}

/// The cached history.
#[derive(Debug, Default)]
pub struct HistoryCache {
    cached: Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    at: Instant,
    newest_epoch: Option<EpochId>,
    history: Arc<History>,
}

impl HistoryCache {
    /// The history, read again from the store if older than [`HISTORY_TTL`] or if an epoch
    /// was published since (so that a denial is in the log at once). One reader at a time:
    /// others wait for its answer rather than read again.
    pub fn get(&self, engine: &Engine) -> Result<Arc<History>, StoreError> {
        let mut cached = self.cached.lock();
        let newest_epoch = engine.newest_epoch_id();
        if let Some(c) = cached.as_ref() {
            if c.at.elapsed() < HISTORY_TTL && c.newest_epoch == newest_epoch {
                return Ok(c.history.clone());
            }
        }
        let history = Arc::new(read_history(engine)?);
        *cached = Some(Cached {
            at: Instant::now(),
            newest_epoch,
            history: history.clone(),
        });
        Ok(history)
    }
}

/// Builds the snapshot (blocking: it may read the store).
pub fn dashboard(engine: &Engine, ui: &super::UiState) -> Result<Dashboard, StoreError> {
    let history = ui.history.get(engine)?;
    let status = status_report(engine);
    let candidates = engine.candidates();
    let (mut psk, cutoff_latency) = ui.seen.snapshot();
    ui.paths.retain(|id| status.nodes.contains_key(id));
    let mut reported = ui.paths.snapshot();
    let node_cutoffs = ui.paths.cutoffs();
    let newest: HashMap<&str, &Point> = history
        .series
        .iter()
        .filter_map(|s| Some((s.node.as_str(), s.points.last()?)))
        .collect();
    let current = engine.current();
    let nodes_total = status.nodes.len();
    let nodes = status
        .nodes
        .into_iter()
        .take(MAX_NODES)
        .map(|(id, n)| {
            let c = candidates.get(&id);
            NodeView {
                membership: n.membership,
                reason: n.reason,
                pin: n.pin,
                score: n.score,
                last_benchmark: newest.get(id.as_str()).map(|p| (*p).clone()),
                sourced: current
                    .as_ref()
                    .and_then(|e| e.decisions.get(&id))
                    .map(|d| d.evidence.sources.iter().map(SourcedView::from).collect())
                    .unwrap_or_default(),
                path: PathView {
                    endpoint: n.endpoint,
                    candidates: c.map_or(0, |c| c.reported.len()),
                    observed: c.map(|c| c.observed.clone()),
                    reported_ms: c.map(|c| c.reported_ms),
                    peers: reported.remove(&id),
                },
                psk: psk.remove(&id).unwrap_or_default(),
                id,
            }
        })
        .collect();
    let (pairs, pairs_total) = current
        .as_ref()
        .map(|e| pairs(&e.decisions, &engine.policy().topology))
        .unwrap_or_default();
    Ok(Dashboard {
        now_ms: engine.clock().now_ms(),
        epoch: status.epoch,
        epoch_cause: current.map(|e| e.record.cause.clone()),
        leader: engine.leadership().is_leader(),
        cluster: status.cluster,
        instance: engine.leadership().instance(),
        policy: policy_view(engine),
        nodes,
        nodes_total,
        pairs,
        pairs_total,
        relays_offered: engine.offers_relays(),
        cutoff_latency,
        node_cutoffs,
        history,
    })
}

fn policy_view(engine: &Engine) -> PolicyView {
    let policy = engine.policy();
    let (topology, hubs) = match &policy.topology {
        Topology::FullMesh => ("full_mesh", Vec::new()),
        Topology::HubAndSpoke { hubs } => ("hub_and_spoke", hubs.clone()),
    };
    PolicyView {
        threshold: policy.threshold,
        minimums: policy.minimums,
        max_age_ms: policy.max_age_ms,
        readmit_after: policy.readmit_after,
        topology,
        hubs,
    }
}

/// The pairs of allowed nodes that peer under `topology`, each once (`a < b`), at most
/// [`MAX_PAIRS`], and how many there are in all.
pub fn pairs(
    decisions: &BTreeMap<String, Decision>,
    topology: &Topology,
) -> (Vec<(String, String)>, usize) {
    let allowed: BTreeSet<&str> = decisions
        .values()
        .filter(|d| d.allowed)
        .map(|d| d.node_id.as_str())
        .collect();
    let mut found = BTreeSet::new();
    for node in &allowed {
        for peer in peers_of(node, &allowed, topology) {
            let pair = if *node < peer {
                (*node, peer)
            } else {
                (peer, *node)
            };
            found.insert(pair);
        }
    }
    let total = found.len();
    let shown = found
        .into_iter()
        .take(MAX_PAIRS)
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    (shown, total)
}

fn read_history(engine: &Engine) -> Result<History, StoreError> {
    let store = engine.store();
    let now = engine.clock().now_ms();
    let span = u64::try_from(HISTORY_SPAN.as_millis()).unwrap_or(u64::MAX);
    let since_ms = now.saturating_sub(span);
    let mut series = Vec::new();
    for node in engine.nodes().into_iter().take(MAX_PLOTTED) {
        let mut points: Vec<Point> = store
            .benchmarks(&node.id, MAX_POINTS)?
            .iter()
            .filter(|b| b.received_ms >= since_ms)
            .map(Point::from)
            .collect();
        points.reverse();
        series.push(Series {
            node: node.id,
            points,
        });
    }
    // Summaries: most of these epochs are past the live window, their secrets erased.
    let mut epochs = store.latest_epoch_summaries(HISTORY_EPOCHS)?;
    epochs.reverse();
    let mut decided = Vec::with_capacity(epochs.len());
    for epoch in epochs {
        let decisions = store.decisions(epoch.id)?;
        decided.push((epoch, decisions));
    }
    Ok(History {
        read_ms: now,
        since_ms,
        series,
        log: decisions_log(&decided),
    })
}

/// The decisions that deny a node or change its membership, newest first, from `epochs`
/// (oldest first), at most [`MAX_LOG`].
pub fn decisions_log(epochs: &[(EpochSummary, Vec<Decision>)]) -> Vec<LogRow> {
    let mut before: HashMap<&str, bool> = HashMap::new();
    let mut rows = Vec::new();
    for (epoch, decisions) in epochs {
        for d in decisions {
            let was = before.insert(d.node_id.as_str(), d.allowed);
            let change = match (was, d.allowed) {
                (Some(true), false) => Some("denied"),
                (Some(false), true) => Some("readmitted"),
                (None, false) => Some("denied"),
                _ => None,
            };
            if change.is_none() && d.allowed {
                continue;
            }
            rows.push(LogRow {
                ms: epoch.created_ms,
                epoch: epoch.id,
                cause: epoch.cause.clone(),
                node: d.node_id.clone(),
                allowed: d.allowed,
                change,
                reason: d.reason.clone(),
            });
        }
    }
    rows.reverse();
    rows.truncate(MAX_LOG);
    rows
}
