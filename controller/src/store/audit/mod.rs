//! The audit log: an append-only hash chain of everything the controller did.
//!
//! Entry `n` (numbered from 1) is hashed as
//!
//! ```text
//! hash_n = lower-hex(SHA-256("meshtun-audit-v1\n" ‖ prev_hash ‖ "\n" ‖ seq ‖ "\n"
//!                            ‖ at_ms ‖ "\n" ‖ kind ‖ "\n" ‖ entry_json))
//! ```
//!
//! where `prev_hash` is `hash_{n-1}` as 64 lower-case hex characters (64 `0`s for the first
//! entry), `seq` and `at_ms` are decimal ASCII, `kind` is one of the [`AuditKind`] names and
//! `entry_json` is the entry's JSON text, byte for byte as stored. Every field but the last
//! has a fixed alphabet without `\n`, so the input is unambiguous.
//!
//! [`ChainVerifier`] checks a chain entry by entry and is independent of the database, so an
//! offline tool can run it over exported [`AuditEntry`] values. Removing entries from the
//! end of the chain cannot be seen from the chain alone: compare [`AuditReport::head_hash`]
//! with one recorded earlier.
//!
//! Old entries are pruned only behind a signed [`Checkpoint`] (see [`checkpoint`]), and
//! every pruning is itself recorded as a `checkpoint` entry of the chain.

pub mod checkpoint;
mod citations;
mod entries;
mod evaluators;
mod observations;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use meshtun_proto::IdentityPublic;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use checkpoint::{Checkpoint, SignedCheckpoint};
pub use entries::{
    BenchmarkEntry, CheckpointEntry, DecisionEntry, EnrollEntry, EvaluatorAddEntry,
    EvaluatorRemoveEntry, InviteEntry, ObservationEntry, PinEntry, RemoveEntry, RotationEntry,
    StatementEntry,
};
pub use evaluators::EvaluatorKey;

use super::StoreError;

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The label that starts every hashed entry.
pub const HASH_LABEL: &str = "meshtun-audit-v1";

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A node was enrolled ([`EnrollEntry`]).
    Enroll,
    /// A node was removed ([`RemoveEntry`]).
    Remove,
    /// A pin was set or cleared ([`PinEntry`]).
    Pin,
    /// An invite was issued ([`InviteEntry`]).
    Invite,
    /// A benchmark was accepted ([`BenchmarkEntry`]).
    Benchmark,
    /// An epoch was created ([`RotationEntry`]).
    Rotation,
    /// A membership decision was made ([`DecisionEntry`]).
    Decision,
    /// The entries up to a signed checkpoint were pruned ([`CheckpointEntry`]).
    Checkpoint,
    /// An evaluator was added ([`EvaluatorAddEntry`]).
    EvaluatorAdd,
    /// An evaluator was removed ([`EvaluatorRemoveEntry`]).
    EvaluatorRemove,
    /// An evaluator's signed statement was accepted ([`StatementEntry`]).
    Statement,
    /// A node's signed observation of a peer was accepted ([`ObservationEntry`]).
    Observation,
}

impl AuditKind {
    /// Every kind.
    pub const ALL: [AuditKind; 12] = [
        Self::Enroll,
        Self::Remove,
        Self::Pin,
        Self::Invite,
        Self::Benchmark,
        Self::Rotation,
        Self::Decision,
        Self::Checkpoint,
        Self::EvaluatorAdd,
        Self::EvaluatorRemove,
        Self::Statement,
        Self::Observation,
    ];

    /// The name stored and hashed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enroll => "enroll",
            Self::Remove => "remove",
            Self::Pin => "pin",
            Self::Invite => "invite",
            Self::Benchmark => "benchmark",
            Self::Rotation => "rotation",
            Self::Decision => "decision",
            Self::Checkpoint => "checkpoint",
            Self::EvaluatorAdd => "evaluator_add",
            Self::EvaluatorRemove => "evaluator_remove",
            Self::Statement => "statement",
            Self::Observation => "observation",
        }
    }

    /// The kind with this name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the chain, as stored and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When it was appended (controller clock), Unix milliseconds.
    pub at_ms: u64,
    /// An [`AuditKind`] name.
    pub kind: String,
    /// The JSON body, exactly as hashed.
    pub entry: String,
    /// The previous entry's hash ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// This entry's hash (see [`chain_hash`]).
    pub hash: String,
}

/// The hash of an entry, as defined in the [module documentation](self).
pub fn chain_hash(prev_hash: &str, seq: u64, at_ms: u64, kind: &str, entry_json: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("{HASH_LABEL}\n{prev_hash}\n{seq}\n{at_ms}\n{kind}\n").as_bytes());
    h.update(entry_json.as_bytes());
    hex::encode(h.finalize())
}

/// What a verified chain holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AuditReport {
    /// Number of entries.
    pub entries: u64,
    /// Number of entries of each kind.
    pub counts: BTreeMap<AuditKind, u64>,
    /// The last entry's hash ([`GENESIS_HASH`] for an empty chain).
    pub head_hash: String,
    /// Benchmark request signatures checked against the enrolled identity keys (those
    /// before a checkpoint were checked before they were pruned).
    pub signatures_verified: u64,
    /// The last entry pruned, if the chain starts from a checkpoint.
    pub pruned_through: Option<u64>,
    /// Statement signatures in the chain checked against the evaluators' keys (those before
    /// a checkpoint were checked before they were pruned).
    pub statement_signatures: u64,
    /// Rows of the `statements` table whose signatures were checked again.
    pub statement_rows_verified: u64,
    /// Statements recorded by decisions that matched, field by field, a signed statement
    /// earlier in the chain.
    pub decision_statements_matched: u64,
    /// Statements recorded by decisions whose signed statement was pruned behind the
    /// checkpoint the chain starts from (not checked).
    pub decision_statements_pruned: u64,
    /// Peer observation signatures in the chain checked against the observers' identity
    /// keys (those before a checkpoint were checked before they were pruned).
    pub observation_signatures: u64,
    /// Rows of the `observations` table whose signatures were checked again.
    pub observation_rows_verified: u64,
}

/// The first broken link of a chain.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Numbering broke: an entry is missing, or entries were moved.
    #[error(
        "audit entry {seq} found where entry {expected} was expected: an entry was deleted \
         or the chain reordered"
    )]
    Sequence {
        /// The entry found.
        seq: u64,
        /// The number the chain needed.
        expected: u64,
    },
    /// The entry does not link to the one before it.
    #[error(
        "audit entry {seq}: prev_hash {found} is not the hash {expected} of the entry before \
         it: an entry was deleted, inserted or reordered"
    )]
    PrevHash {
        /// The entry.
        seq: u64,
        /// Its `prev_hash`.
        found: String,
        /// The previous entry's hash.
        expected: String,
    },
    /// The entry's contents do not hash to its stored hash.
    #[error(
        "audit entry {seq} ({kind}) was modified: its stored hash is {found} but its contents \
         hash to {expected}"
    )]
    Hash {
        /// The entry.
        seq: u64,
        /// Its kind.
        kind: String,
        /// The stored hash.
        found: String,
        /// The recomputed hash.
        expected: String,
    },
    /// The entry's kind is not one meshtun writes.
    #[error("audit entry {seq}: unknown kind {kind:?}")]
    Kind {
        /// The entry.
        seq: u64,
        /// The kind found.
        kind: String,
    },
    /// The entry's body does not have the shape of its kind.
    #[error("audit entry {seq} ({kind}) is malformed: {reason}")]
    Malformed {
        /// The entry.
        seq: u64,
        /// Its kind.
        kind: AuditKind,
        /// What is wrong.
        reason: String,
    },
    /// A recorded benchmark request does not verify with the node's enrolled key.
    #[error("audit entry {seq}: benchmark seq {bench_seq} from node {node}: {reason}")]
    Signature {
        /// The entry.
        seq: u64,
        /// The node.
        node: String,
        /// The benchmark's seq.
        bench_seq: u64,
        /// Why it does not verify.
        reason: String,
    },
    /// A recorded statement does not verify, or breaks the evaluator's rules.
    #[error("audit entry {seq}: statement {id} of evaluator {evaluator}: {reason}")]
    StatementSignature {
        /// The entry.
        seq: u64,
        /// The statement's id.
        id: u64,
        /// The evaluator.
        evaluator: String,
        /// Why it does not verify.
        reason: String,
    },
    /// A statement a decision records is not a signed statement earlier in the chain with
    /// exactly those values.
    #[error("audit entry {seq}: the decision for node {node} in epoch {epoch} records statement {id}: {reason}")]
    DecisionStatement {
        /// The decision's entry.
        seq: u64,
        /// The decision's epoch.
        epoch: u64,
        /// The node decided about.
        node: String,
        /// The statement id the decision records.
        id: u64,
        /// What does not match.
        reason: String,
    },
    /// A recorded peer observation does not verify with its observer's identity key, or is
    /// not a peer observation.
    #[error("audit entry {seq}: observation {id} of node {node}: {reason}")]
    ObservationSignature {
        /// The entry.
        seq: u64,
        /// The observation's id.
        id: u64,
        /// The observer.
        node: String,
        /// Why it does not verify.
        reason: String,
    },
    /// A row of the `observations` table does not verify with its observer's identity key.
    #[error("stored observation {id} of node {node}: {reason}")]
    StoredObservation {
        /// The observation's id.
        id: u64,
        /// The observer.
        node: String,
        /// What is wrong.
        reason: String,
    },
    /// A row of the `statements` table does not verify with its evaluator's key.
    #[error("stored statement {id} of evaluator {evaluator}: {reason}")]
    StoredStatement {
        /// The statement's id.
        id: u64,
        /// The evaluator.
        evaluator: String,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint the chain starts from is not one this controller signed.
    #[error("audit checkpoint at entry {seq}: {reason}")]
    Checkpoint {
        /// The last entry it covers.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// The log could not be read.
    #[error("cannot read the audit log")]
    Read(#[from] StoreError),
}

impl AuditError {
    /// The audit entry where the chain broke (none if it could not be read).
    pub fn seq(&self) -> Option<u64> {
        match self {
            Self::Sequence { seq, .. }
            | Self::PrevHash { seq, .. }
            | Self::Hash { seq, .. }
            | Self::Kind { seq, .. }
            | Self::Malformed { seq, .. }
            | Self::Signature { seq, .. }
            | Self::StatementSignature { seq, .. }
            | Self::DecisionStatement { seq, .. }
            | Self::ObservationSignature { seq, .. }
            | Self::Checkpoint { seq, .. } => Some(*seq),
            Self::StoredStatement { .. } | Self::StoredObservation { .. } | Self::Read(_) => None,
        }
    }
}

/// Checks a chain one entry at a time, in order.
///
/// Besides the links and hashes, it parses every body as its kind's type, and verifies every
/// benchmark request's signature with the identity key the node had at that point of the
/// chain (from its latest `enroll` entry, forgotten at `remove`), and every evaluator
/// statement's signature with the key of the evaluator's `evaluator_add` entry (refusing a
/// statement after its `evaluator_remove`, about a node not enrolled then, or scoring a
/// dimension the evaluator may not speak for), and every peer observation's signature with
/// the observer's identity key at that point (refusing one by or about a node not enrolled
/// then, about the observer itself, or outside the peer dimensions).
#[derive(Debug)]
pub struct ChainVerifier {
    report: AuditReport,
    /// Node id → (identity key, audit seq of the enroll entry).
    keys: HashMap<String, (IdentityPublic, u64)>,
    /// Every evaluator the chain added, removed ones too.
    evaluators: evaluators::Evaluators,
    /// Every signed statement the chain recorded, for the decisions that cite them.
    citations: citations::Citations,
    /// How the decisions' statements matched so far.
    matched: citations::Matched,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    /// A verifier at the start of a chain.
    pub fn new() -> Self {
        Self {
            report: AuditReport {
                head_hash: GENESIS_HASH.to_owned(),
                ..AuditReport::default()
            },
            keys: HashMap::new(),
            evaluators: evaluators::Evaluators::default(),
            citations: citations::Citations::default(),
            matched: citations::Matched::default(),
        }
    }

    /// A verifier that goes on from a checkpoint (already verified): the next entry must
    /// be the one after it, linked to its hash.
    pub fn resume(checkpoint: &Checkpoint) -> Self {
        Self {
            report: AuditReport {
                entries: checkpoint.seq,
                counts: checkpoint.counts.clone(),
                head_hash: checkpoint.hash.clone(),
                signatures_verified: checkpoint.signatures_verified,
                pruned_through: Some(checkpoint.seq),
                statement_signatures: checkpoint.statement_signatures,
                statement_rows_verified: 0,
                decision_statements_matched: 0,
                decision_statements_pruned: 0,
                observation_signatures: checkpoint.observation_signatures,
                observation_rows_verified: 0,
            },
            keys: checkpoint
                .keys
                .iter()
                .map(|(id, (key, seq))| (id.clone(), (*key, *seq)))
                .collect(),
            evaluators: evaluators::Evaluators::resume(checkpoint),
            citations: citations::Citations::resume(checkpoint.last_statement_id),
            matched: citations::Matched::default(),
        }
    }

    /// The state after the last entry pushed, as a checkpoint made at `at_ms`.
    pub fn checkpoint(&self, at_ms: u64) -> Checkpoint {
        Checkpoint {
            seq: self.report.entries,
            hash: self.report.head_hash.clone(),
            at_ms,
            counts: self.report.counts.clone(),
            signatures_verified: self.report.signatures_verified,
            keys: self
                .keys
                .iter()
                .map(|(id, (key, seq))| (id.clone(), (*key, *seq)))
                .collect(),
            evaluators: self.evaluators.keys.clone(),
            statement_signatures: self.report.statement_signatures,
            last_statement_id: self.evaluators.last_statement_id,
            observation_signatures: self.report.observation_signatures,
        }
    }

    /// The key the chain last gave evaluator `name` (removed or not).
    pub fn evaluator_key(&self, name: &str) -> Option<IdentityPublic> {
        self.evaluators.keys.get(name).map(|e| e.key)
    }

    /// The highest statement or observation id the chain recorded (0 for none): both come
    /// from one counter.
    pub fn last_statement_id(&self) -> u64 {
        self.evaluators.last_statement_id
    }

    /// The identity key of node `id`, if it is enrolled at this point of the chain.
    pub fn node_key(&self, id: &str) -> Option<IdentityPublic> {
        self.keys.get(id).map(|(key, _)| *key)
    }

    /// Checks the next entry.
    pub fn push(&mut self, e: &AuditEntry) -> Result<(), AuditError> {
        let expected = self.report.entries + 1;
        if e.seq != expected {
            return Err(AuditError::Sequence {
                seq: e.seq,
                expected,
            });
        }
        if e.prev_hash != self.report.head_hash {
            return Err(AuditError::PrevHash {
                seq: e.seq,
                found: e.prev_hash.clone(),
                expected: self.report.head_hash.clone(),
            });
        }
        let hash = chain_hash(&e.prev_hash, e.seq, e.at_ms, &e.kind, &e.entry);
        if e.hash != hash {
            return Err(AuditError::Hash {
                seq: e.seq,
                kind: e.kind.clone(),
                found: e.hash.clone(),
                expected: hash,
            });
        }
        let kind = AuditKind::parse(&e.kind).ok_or_else(|| AuditError::Kind {
            seq: e.seq,
            kind: e.kind.clone(),
        })?;
        self.check_body(e.seq, kind, &e.entry)?;
        self.report.entries = e.seq;
        self.report.head_hash = hash;
        *self.report.counts.entry(kind).or_default() += 1;
        Ok(())
    }

    /// The number of the last entry pushed (or resumed from); 0 at the genesis.
    pub fn position(&self) -> u64 {
        self.report.entries
    }

    /// The report on every entry pushed so far.
    pub fn finish(self) -> AuditReport {
        AuditReport {
            decision_statements_matched: self.matched.matched,
            decision_statements_pruned: self.matched.pruned,
            ..self.report
        }
    }

    fn check_body(&mut self, seq: u64, kind: AuditKind, json: &str) -> Result<(), AuditError> {
        let malformed = |reason: serde_json::Error| AuditError::Malformed {
            seq,
            kind,
            reason: reason.to_string(),
        };
        match kind {
            AuditKind::Enroll => {
                let e: EnrollEntry = serde_json::from_str(json).map_err(malformed)?;
                self.keys.insert(e.node.id, (e.node.identity_key, seq));
            }
            AuditKind::Remove => {
                let e: RemoveEntry = serde_json::from_str(json).map_err(malformed)?;
                self.keys.remove(&e.node_id);
            }
            AuditKind::Benchmark => {
                let e: BenchmarkEntry = serde_json::from_str(json).map_err(malformed)?;
                self.check_signature(seq, &e)?;
            }
            AuditKind::Pin => drop(serde_json::from_str::<PinEntry>(json).map_err(malformed)?),
            AuditKind::Invite => {
                drop(serde_json::from_str::<InviteEntry>(json).map_err(malformed)?);
            }
            AuditKind::Rotation => {
                drop(serde_json::from_str::<RotationEntry>(json).map_err(malformed)?);
            }
            AuditKind::Decision => {
                let d: DecisionEntry = serde_json::from_str(json).map_err(malformed)?;
                self.citations.check(seq, &d, &mut self.matched)?;
            }
            AuditKind::Checkpoint => {
                drop(serde_json::from_str::<CheckpointEntry>(json).map_err(malformed)?);
            }
            AuditKind::EvaluatorAdd => {
                let e: EvaluatorAddEntry = serde_json::from_str(json).map_err(malformed)?;
                self.evaluators.add(seq, e);
            }
            AuditKind::EvaluatorRemove => {
                let e: EvaluatorRemoveEntry = serde_json::from_str(json).map_err(malformed)?;
                self.evaluators.remove(&e);
            }
            AuditKind::Statement => {
                let e: StatementEntry = serde_json::from_str(json).map_err(malformed)?;
                let enrolled = &self.keys;
                self.evaluators
                    .check(seq, &e, |node| enrolled.contains_key(node))?;
                self.citations.record(e.id, &e.signed.statement);
                self.report.statement_signatures += 1;
            }
            AuditKind::Observation => {
                let e: ObservationEntry = serde_json::from_str(json).map_err(malformed)?;
                observations::check(seq, &e, &self.keys)?;
                self.citations.record(e.id, &e.signed.statement);
                let last = &mut self.evaluators.last_statement_id;
                *last = (*last).max(e.id);
                self.report.observation_signatures += 1;
            }
        }
        Ok(())
    }

    fn check_signature(&mut self, seq: u64, e: &BenchmarkEntry) -> Result<(), AuditError> {
        let fail = |reason: String| AuditError::Signature {
            seq,
            node: e.node_id.clone(),
            bench_seq: e.seq,
            reason,
        };
        let (key, enrolled_at) = self.keys.get(&e.node_id).ok_or_else(|| {
            fail("the node is not enrolled at this point of the chain".to_owned())
        })?;
        e.verify(key).map_err(|reason| {
            fail(format!(
                "{reason} (identity key {key} enrolled at audit entry {enrolled_at})"
            ))
        })?;
        self.report.signatures_verified += 1;
        Ok(())
    }
}

/// Verifies a whole exported chain.
pub fn verify_chain<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> Result<AuditReport, AuditError> {
    let mut verifier = ChainVerifier::new();
    for e in entries {
        verifier.push(e)?;
    }
    Ok(verifier.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, prev: &str, kind: &str, json: &str) -> AuditEntry {
        AuditEntry {
            seq,
            at_ms: 1000,
            kind: kind.to_owned(),
            entry: json.to_owned(),
            prev_hash: prev.to_owned(),
            hash: chain_hash(prev, seq, 1000, kind, json),
        }
    }

    #[test]
    fn the_hash_matches_an_independent_computation() {
        // printf 'meshtun-audit-v1\n%s\n1\n1000\nremove\n{"node_id":"node-a"}' $ZEROS | sha256sum
        assert_eq!(
            chain_hash(GENESIS_HASH, 1, 1000, "remove", r#"{"node_id":"node-a"}"#),
            "7fc8b4a737f38d393b1afae164e8f28780b5c338c08c7eb41bec674c110e97b0"
        );
    }

    #[test]
    fn exported_entries_verify_offline() {
        let first = entry(1, GENESIS_HASH, "remove", r#"{"node_id":"node-a"}"#);
        let second = entry(2, &first.hash, "remove", r#"{"node_id":"node-b"}"#);
        let json = serde_json::to_string(&[&first, &second]).unwrap();
        let back: Vec<AuditEntry> = serde_json::from_str(&json).unwrap();
        let report = verify_chain(&back).unwrap();
        assert_eq!(report.entries, 2);
        assert_eq!(report.counts[&AuditKind::Remove], 2);
        assert_eq!(report.head_hash, second.hash);
    }

    #[test]
    fn unknown_kinds_and_malformed_bodies_are_named() {
        let odd = entry(1, GENESIS_HASH, "party", "{}");
        let err = verify_chain([&odd]).unwrap_err();
        assert_eq!(err.to_string(), "audit entry 1: unknown kind \"party\"");
        let bad = entry(1, GENESIS_HASH, "decision", r#"{"epoch":1}"#);
        let err = verify_chain([&bad]).unwrap_err().to_string();
        assert!(
            err.starts_with("audit entry 1 (decision) is malformed"),
            "{err}"
        );
    }

    #[test]
    fn a_benchmark_from_a_node_never_enrolled_is_refused() {
        let json = r#"{"node_id":"ghost","seq":1,"received_ms":1,"method":"POST","path":"/","body_base64":"","timestamp_ms":1,"nonce":"00","signature":""}"#;
        let err = verify_chain([&entry(1, GENESIS_HASH, "benchmark", json)]).unwrap_err();
        assert!(
            err.to_string()
                .contains("node ghost: the node is not enrolled"),
            "{err}"
        );
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for kind in AuditKind::ALL {
            assert_eq!(AuditKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
        assert_eq!(AuditKind::parse("Enroll"), None);
    }
}
