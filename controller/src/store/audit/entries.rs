//! The JSON bodies of audit entries, one type per kind.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ipnet::IpNet;
use meshtun_proto::auth::{RequestSignature, NONCE_LEN};
use meshtun_proto::identity::SIGNATURE_LEN;
use meshtun_proto::statement::SignedStatement;
use meshtun_proto::{EpochId, IdentityPublic};
use serde::{Deserialize, Serialize};

use crate::model::{Decision, NodeInput, NodeRecord, Pin, Policy};
use crate::store::EvaluatorRecord;

/// `enroll`: a node was added, by an admin or by redeeming an invite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollEntry {
    /// The node as stored, with the identity key its later requests are checked against.
    pub node: NodeRecord,
    /// The hex SHA-256 of the invite token redeemed, if enrolled through an invite.
    pub invite_token_hash: Option<String>,
}

/// `remove`: a node was removed (with its stored benchmarks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoveEntry {
    /// The node.
    pub node_id: String,
}

/// `pin`: an admin set or cleared a node's pin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinEntry {
    /// The node.
    pub node_id: String,
    /// The new pin.
    pub pin: Option<Pin>,
    /// The pin it replaced.
    pub previous: Option<Pin>,
}

/// `invite`: an admin issued an invite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InviteEntry {
    /// The node id the invite is for.
    pub node_id: String,
    /// The hex SHA-256 of the token (the token itself is never stored).
    pub token_hash: String,
    /// When it expires, Unix milliseconds.
    pub expires_ms: u64,
    /// Addresses the admin assigned, overriding the node's request.
    pub addresses: Option<Vec<IpNet>>,
    /// Endpoint the admin assigned, overriding the node's request.
    pub endpoint: Option<String>,
}

/// `benchmark`: a benchmark was accepted; holds the signed request exactly as received, so
/// it can be verified again offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkEntry {
    /// The node (also the signed node id).
    pub node_id: String,
    /// The benchmark's seq.
    pub seq: u64,
    /// When the controller received it, Unix milliseconds.
    pub received_ms: u64,
    /// The signed HTTP method.
    pub method: String,
    /// The signed path and query.
    pub path: String,
    /// The raw request body, base64.
    pub body_base64: String,
    /// The signed timestamp, Unix milliseconds.
    pub timestamp_ms: u64,
    /// The signed nonce, hex.
    pub nonce: String,
    /// The Ed25519 signature, base64.
    pub signature: String,
    /// The controller key the request was signed for (format v2), base64; absent for
    /// requests recorded in format v1, which named no controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_key: Option<String>,
}

impl BenchmarkEntry {
    /// Records a signed request to the controller whose key is `controller`.
    pub fn new(
        controller: &IdentityPublic,
        seq: u64,
        received_ms: u64,
        method: &str,
        path: &str,
        body: &[u8],
        sig: &RequestSignature,
    ) -> Self {
        Self {
            node_id: sig.node.clone(),
            seq,
            received_ms,
            method: method.to_owned(),
            path: path.to_owned(),
            body_base64: STANDARD.encode(body),
            timestamp_ms: sig.timestamp_ms,
            nonce: hex::encode(sig.nonce),
            signature: STANDARD.encode(sig.signature),
            controller_key: Some(controller.to_base64()),
        }
    }

    /// Checks the recorded request's signature with the node's identity key.
    pub fn verify(&self, key: &IdentityPublic) -> Result<(), String> {
        let body = STANDARD
            .decode(&self.body_base64)
            .map_err(|_| "body_base64 is not valid base64".to_owned())?;
        let mut nonce = [0u8; NONCE_LEN];
        hex::decode_to_slice(&self.nonce, &mut nonce)
            .map_err(|_| format!("nonce is not {NONCE_LEN} bytes of hex"))?;
        let signature = STANDARD
            .decode(&self.signature)
            .ok()
            .and_then(|raw| <[u8; SIGNATURE_LEN]>::try_from(raw.as_slice()).ok())
            .ok_or_else(|| format!("signature is not {SIGNATURE_LEN} bytes of base64"))?;
        let sig = RequestSignature {
            node: self.node_id.clone(),
            timestamp_ms: self.timestamp_ms,
            nonce,
            signature,
        };
        match &self.controller_key {
            Some(controller) => {
                let controller = IdentityPublic::from_base64(controller)
                    .map_err(|e| format!("controller_key: {e}"))?;
                sig.verify(key, &controller, &self.method, &self.path, &body)
            }
            None => sig.verify_archived_v1(key, &self.method, &self.path, &body),
        }
        .map_err(|e| e.to_string())
    }
}

/// `rotation`: a new epoch was stored. Its secret is deliberately absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotationEntry {
    /// The epoch.
    pub epoch: EpochId,
    /// Start, Unix milliseconds.
    pub activation_ms: u64,
    /// End, Unix milliseconds.
    pub not_after_ms: u64,
    /// When it was created, Unix milliseconds.
    pub created_ms: u64,
    /// Why it was created.
    pub cause: String,
    /// Nodes allowed in this epoch, sorted.
    pub allowed: Vec<String>,
    /// Nodes denied in this epoch, sorted.
    pub denied: Vec<String>,
}

/// `decision`: one node's membership decision in an epoch, with everything needed to
/// recompute it with the membership engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionEntry {
    /// The epoch.
    pub epoch: EpochId,
    /// The clock the decision was evaluated at, Unix milliseconds.
    pub decided_ms: u64,
    /// The decision, with its reason and evidence.
    pub decision: Decision,
    /// What the engine was given about the node.
    pub input: NodeInput,
    /// The policy applied.
    pub policy: Policy,
}

/// `checkpoint`: the entries up to `through_seq` were pruned, behind a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEntry {
    /// The last entry removed.
    pub through_seq: u64,
    /// Its hash, which the next entry kept links to.
    pub through_hash: String,
    /// How many entries this pruning removed.
    pub removed: u64,
    /// Lower-hex SHA-256 of the signed checkpoint's body.
    pub checkpoint_sha256: String,
}

/// `evaluator_add`: an admin registered an evaluator, with the key its statements are
/// checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluatorAddEntry {
    /// The evaluator as stored.
    pub evaluator: EvaluatorRecord,
}

/// `evaluator_remove`: an admin removed an evaluator; its later statements are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluatorRemoveEntry {
    /// The evaluator.
    pub name: String,
    /// When, Unix milliseconds.
    pub removed_ms: u64,
}

/// `statement`: an evaluator's signed statement was accepted; it holds the statement and its
/// signature, from which the signed bytes are rebuilt and checked again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementEntry {
    /// The stored statement's id.
    pub id: u64,
    /// When the controller received it, Unix milliseconds.
    pub received_ms: u64,
    /// The statement and the evaluator's signature.
    pub signed: SignedStatement,
}

/// `observation`: a node's signed observation of a peer was accepted; it holds the statement
/// and the node's signature, checked again with the node's identity key from its `enroll`
/// entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservationEntry {
    /// The stored observation's id (from the same counter as statement ids).
    pub id: u64,
    /// When the controller received it, Unix milliseconds.
    pub received_ms: u64,
    /// The observation (issued by the observing node) and its signature.
    pub signed: SignedStatement,
}
