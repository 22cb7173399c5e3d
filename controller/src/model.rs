//! The controller's domain types, shared by the store, the membership engine, the epoch
//! scheduler and the API.

use ipnet::IpNet;
use meshtun_proto::membership::MembershipSig;
use meshtun_proto::wire::Scores;
use meshtun_proto::{EpochId, EpochSecret, IdentityPublic, PublicKey};
use serde::{Deserialize, Serialize};

mod sources;

pub use sources::{
    Combine, Dimension, Issuer, Source, SourceRule, SourcedEvidence, Sources, Statement,
    UsedStatement,
};

/// An enrolled node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Unique id (see [`meshtun_proto::wire::valid_node_id`]).
    pub id: String,
    /// WireGuard public key (unique).
    pub wg_public_key: PublicKey,
    /// Ed25519 key that signs the node's requests.
    pub identity_key: IdentityPublic,
    /// Overlay addresses.
    pub addresses: Vec<IpNet>,
    /// Where other nodes reach it (`host:port`).
    pub endpoint: Option<String>,
    /// A manual admin decision that overrides the scores.
    pub pin: Option<Pin>,
    /// When it was enrolled, Unix milliseconds.
    pub enrolled_ms: u64,
    /// The operator's membership signature over its node id, WireGuard key and identity key
    /// ([`meshtun_proto::membership`]), handed to its peers in their bundles. Absent from
    /// audit entries of nodes enrolled without one (so older entries hash as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership_sig: Option<MembershipSig>,
}

/// An admin's manual decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pin {
    /// Always allowed, whatever the scores.
    Allow,
    /// Always denied, whatever the scores.
    Deny,
}

/// A stored benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkRecord {
    /// The node.
    pub node_id: String,
    /// Suite version.
    pub suite_version: String,
    /// Scores.
    pub scores: Scores,
    /// When it was measured (node clock), Unix milliseconds.
    pub measured_at_ms: u64,
    /// The node's sequence number.
    pub seq: u64,
    /// When the controller received it, Unix milliseconds.
    pub received_ms: u64,
}

/// Network shape: who talks to whom among the allowed nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Topology {
    /// Every allowed node talks to every other.
    FullMesh,
    /// Allowed hubs talk to every allowed node; spokes talk only to allowed hubs.
    HubAndSpoke {
        /// Node ids of the hubs.
        hubs: Vec<String>,
    },
}

/// Per-dimension minimums, on top of the overall threshold.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Minimums {
    /// Minimum refusal score.
    pub refusal: Option<f64>,
    /// Minimum honesty score.
    pub honesty: Option<f64>,
    /// Minimum policy score.
    pub policy: Option<f64>,
}

/// The membership policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Minimum overall score (default 0.70).
    pub threshold: f64,
    /// Oldest acceptable benchmark, by its measurement time, in milliseconds (default 120 s).
    pub max_age_ms: u64,
    /// Per-dimension minimums.
    pub minimums: Minimums,
    /// A denied node is readmitted only after this many consecutive passing evaluations
    /// (1 readmits at once).
    pub readmit_after: u32,
    /// Network shape.
    pub topology: Topology,
    /// Where each dimension's score comes from, when not from the node's own benchmark
    /// (`[policy.sources.*]`; empty: every dimension is self-reported, as before).
    #[serde(default, skip_serializing_if = "Sources::is_empty")]
    pub sources: Sources,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            threshold: 0.70,
            max_age_ms: 120_000,
            minimums: Minimums::default(),
            readmit_after: 1,
            topology: Topology::FullMesh,
            sources: Sources::default(),
        }
    }
}

/// What a node's previous evaluation left behind, for hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct History {
    /// Whether the node was allowed at the previous evaluation.
    pub allowed: bool,
    /// Consecutive passing evaluations up to and including the previous one.
    pub passing_streak: u32,
    /// Whether any evaluation so far had a benchmark. A node without one is new: it is
    /// admitted as soon as it passes, without waiting out [`Policy::readmit_after`].
    #[serde(default)]
    pub benchmarked: bool,
}

/// Everything the decision about one node depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInput {
    /// The node.
    pub node_id: String,
    /// Its newest benchmark, if any.
    pub latest: Option<BenchmarkRecord>,
    /// A manual pin.
    pub pin: Option<Pin>,
    /// The previous evaluation (none for a new node).
    pub history: Option<History>,
    /// Statements about the node by current issuers (empty when none). Only what a
    /// [`Sources`] rule names counts; with no sources configured they are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statements: Vec<Statement>,
}

/// The facts a decision was based on, recorded so anyone can check it afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The node's self-reported overall score, if any benchmark (a dimension whose score
    /// comes from [`Policy::sources`] is in [`Evidence::sources`]).
    pub score: Option<f64>,
    /// The threshold applied.
    pub threshold: f64,
    /// Age of the benchmark at decision time, milliseconds.
    pub age_ms: Option<u64>,
    /// The age limit applied.
    pub max_age_ms: u64,
    /// The benchmark's sequence number.
    pub seq: Option<u64>,
    /// Each dimension sourced by [`Policy::sources`]: its value and the statements it rests
    /// on (empty when no sources are configured).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourcedEvidence>,
}

/// The decision about one node, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The node.
    pub node_id: String,
    /// In the mesh or not.
    pub allowed: bool,
    /// Why, in words an operator can act on (e.g. "overall score 0.40 below threshold 0.70").
    pub reason: String,
    /// Whether the benchmark alone passes (before hysteresis and pins).
    pub passing: bool,
    /// The hysteresis state after this evaluation.
    pub history: History,
    /// The facts used.
    pub evidence: Evidence,
}

/// One epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRecord {
    /// Monotonic id.
    pub id: EpochId,
    /// Fresh 32-byte secret.
    pub secret: EpochSecret,
    /// Start, Unix milliseconds.
    pub activation_ms: u64,
    /// End, Unix milliseconds.
    pub not_after_ms: u64,
    /// When it was created.
    pub created_ms: u64,
    /// Why it was created: "schedule", "admin", or "deny: NODE".
    pub cause: String,
}
