//! Signed statements: what an evaluator or a node (a peer observation) says about a node.
//!
//! A statement names its issuer (an evaluator by name, or a node by id: the controller looks
//! the signer's key up accordingly), its subject (a node id), one score in `[0, 1]` per
//! dimension it speaks about, when the evaluation was made, and the SHA-256 digest of the
//! evidence it rests on (a harness's output, say). The issuer signs, with its Ed25519 key,
//! the canonical bytes
//!
//! ```text
//! "meshtun-statement-v1\0"
//! issuer kind        u8 (1 evaluator, 2 node)
//! issuer name        u8 length ‖ UTF-8
//! subject            u8 length ‖ UTF-8
//! evaluated_at_ms    u64, big-endian
//! evidence digest    32 bytes
//! dimension count    u8
//! per dimension, in byte order of the names:
//!     name           u8 length ‖ UTF-8
//!     score          IEEE 754 binary64, big-endian (−0 written as +0)
//! ```
//!
//! Every field has its length or a fixed size, so no two statements share their bytes, and
//! the label keeps a statement from ever being taken for anything else an issuer's key
//! signs. On the wire a [`SignedStatement`] is JSON (`{"statement": {…}, "signature":
//! "base64"}`); the controller rebuilds the canonical bytes from it, so the JSON's own
//! spelling (spaces, key order, how a number is written) does not matter.
//!
//! Bounds, checked by [`Statement::validate`] and by the decoder: at most
//! [`MAX_DIMENSIONS`] dimensions, at least one; names (issuer, subject, dimensions) of 1 to
//! [`MAX_NAME`] characters from `a-z 0-9 - _ .`, starting with a letter or digit; scores
//! finite and in `[0, 1]`; a body of at most [`MAX_STATEMENT_BYTES`].

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::identity::{IdentityKey, IdentityPublic, SIGNATURE_LEN};
use crate::wire::valid_node_id;

/// The label that starts the signed bytes of every statement.
pub const STATEMENT_LABEL: &[u8] = b"meshtun-statement-v1\0";

/// The most dimensions one statement may score.
pub const MAX_DIMENSIONS: usize = 16;

/// The longest name (issuer, subject or dimension), in bytes.
pub const MAX_NAME: usize = 64;

/// The length of an evidence digest (SHA-256), in bytes.
pub const EVIDENCE_LEN: usize = 32;

/// The largest JSON body of a signed statement, in bytes.
pub const MAX_STATEMENT_BYTES: usize = 8 * 1024;

/// Who signed a statement, and so whose key checks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Issuer {
    /// An evaluator registered at the controller, by name.
    Evaluator(String),
    /// An enrolled node, by id: a peer observation ([`crate::observation`]).
    Node(String),
}

impl Issuer {
    /// The evaluator's name or the node's id.
    pub fn name(&self) -> &str {
        match self {
            Self::Evaluator(name) | Self::Node(name) => name,
        }
    }

    fn kind_byte(&self) -> u8 {
        match self {
            Self::Evaluator(_) => 1,
            Self::Node(_) => 2,
        }
    }
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Evaluator(name) => write!(f, "evaluator {name}"),
            Self::Node(id) => write!(f, "node {id}"),
        }
    }
}

/// A SHA-256 digest of the evidence a statement rests on; lower-case hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EvidenceDigest(pub [u8; EVIDENCE_LEN]);

impl EvidenceDigest {
    /// The SHA-256 of `evidence`.
    pub fn of(evidence: &[u8]) -> Self {
        use sha2::{Digest as _, Sha256};
        Self(Sha256::digest(evidence).into())
    }

    /// Parses 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Self, StatementError> {
        let mut bytes = [0u8; EVIDENCE_LEN];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| StatementError::Evidence)?;
        Ok(Self(bytes))
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for EvidenceDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EvidenceDigest({})", self.to_hex())
    }
}

impl fmt::Display for EvidenceDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for EvidenceDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for EvidenceDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// What an issuer says about a node. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Who says it.
    pub issuer: Issuer,
    /// The node it is about.
    pub subject: String,
    /// A score in `[0, 1]` per dimension.
    pub scores: BTreeMap<String, f64>,
    /// When the evaluation was made, Unix milliseconds.
    pub evaluated_at_ms: u64,
    /// The SHA-256 of the evidence.
    pub evidence: EvidenceDigest,
}

/// Why a statement was refused. Messages name the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatementError {
    /// The body is larger than [`MAX_STATEMENT_BYTES`].
    #[error("the statement is {0} bytes, more than the {MAX_STATEMENT_BYTES} allowed")]
    TooLarge(usize),
    /// The body is not a signed statement in JSON.
    #[error("not a signed statement: {0}")]
    Json(String),
    /// A name is empty, too long or has a character outside `a-z 0-9 - _ .`.
    #[error(
        "{field} {value:?} is not a valid name (1 to {MAX_NAME} characters from a-z 0-9 - _ ., \
         starting with a letter or digit)"
    )]
    Name {
        /// `issuer`, `subject` or `dimension`.
        field: &'static str,
        /// The name, escaped and cut to [`MAX_NAME`] characters.
        value: String,
    },
    /// No dimension, or more than [`MAX_DIMENSIONS`].
    #[error("a statement scores 1 to {MAX_DIMENSIONS} dimensions, not {0}")]
    Dimensions(usize),
    /// A score is not a number in `[0, 1]`.
    #[error("score {dimension} = {score} is not a number in [0, 1]")]
    Score {
        /// The dimension.
        dimension: String,
        /// The score.
        score: f64,
    },
    /// The evidence digest is not 32 bytes of hex.
    #[error("evidence is not a SHA-256 digest ({EVIDENCE_LEN} bytes, 64 hex characters)")]
    Evidence,
    /// The signature is not 64 bytes of base64.
    #[error("signature is not {SIGNATURE_LEN} bytes of base64")]
    SignatureEncoding,
    /// The signature does not verify with the issuer's key.
    #[error("the statement's signature does not verify with the key of {0}")]
    BadSignature(Issuer),
}

/// Checks a name: the node-id alphabet and length.
fn check_name(field: &'static str, value: &str) -> Result<(), StatementError> {
    if valid_node_id(value) && value.len() <= MAX_NAME {
        return Ok(());
    }
    Err(StatementError::Name {
        field,
        value: value
            .chars()
            .take(MAX_NAME)
            .collect::<String>()
            .escape_debug()
            .to_string(),
    })
}

/// Checks a dimension name, as a statement or an evaluator's list would hold it.
pub fn check_dimension(name: &str) -> Result<(), StatementError> {
    check_name("dimension", name)
}

/// Checks an evaluator's name (the node-id alphabet).
pub fn check_evaluator_name(name: &str) -> Result<(), StatementError> {
    check_name("issuer", name)
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    // Names are checked to be at most MAX_NAME (64) bytes before they are encoded.
    out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(name.as_bytes());
}

impl Statement {
    /// Checks the bounds of the [module documentation](self).
    pub fn validate(&self) -> Result<(), StatementError> {
        check_name("issuer", self.issuer.name())?;
        check_name("subject", &self.subject)?;
        if self.scores.is_empty() || self.scores.len() > MAX_DIMENSIONS {
            return Err(StatementError::Dimensions(self.scores.len()));
        }
        for (dimension, &score) in &self.scores {
            check_dimension(dimension)?;
            if !score.is_finite() || !(0.0..=1.0).contains(&score) {
                return Err(StatementError::Score {
                    dimension: dimension.clone(),
                    score,
                });
            }
        }
        Ok(())
    }

    /// The canonical bytes an issuer signs (see the [module documentation](self)), for a
    /// statement that passed [`Statement::validate`].
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATEMENT_LABEL.len() + 256);
        out.extend_from_slice(STATEMENT_LABEL);
        out.push(self.issuer.kind_byte());
        push_name(&mut out, self.issuer.name());
        push_name(&mut out, &self.subject);
        out.extend_from_slice(&self.evaluated_at_ms.to_be_bytes());
        out.extend_from_slice(&self.evidence.0);
        out.push(u8::try_from(self.scores.len()).unwrap_or(u8::MAX));
        for (dimension, score) in &self.scores {
            push_name(&mut out, dimension);
            // −0 and +0 are one score: written the same.
            let score = if *score == 0.0 { 0.0 } else { *score };
            out.extend_from_slice(&score.to_bits().to_be_bytes());
        }
        out
    }

    /// Checks the statement's bounds and signs it with the issuer's `key`.
    pub fn sign(self, key: &IdentityKey) -> Result<SignedStatement, StatementError> {
        self.validate()?;
        let signature = key.sign(&self.signing_bytes());
        Ok(SignedStatement {
            statement: self,
            signature,
        })
    }
}

/// A statement with its issuer's Ed25519 signature over [`Statement::signing_bytes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedStatement {
    /// What is said.
    pub statement: Statement,
    /// The issuer's signature, base64 in JSON.
    #[serde(with = "signature_base64")]
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignedStatement {
    /// Decodes a JSON body: at most [`MAX_STATEMENT_BYTES`], the shape of a signed
    /// statement, within the bounds. The signature is not checked here
    /// ([`SignedStatement::verify`]): the issuer's key is the caller's to find.
    pub fn decode(body: &[u8]) -> Result<Self, StatementError> {
        if body.len() > MAX_STATEMENT_BYTES {
            return Err(StatementError::TooLarge(body.len()));
        }
        let signed: Self =
            serde_json::from_slice(body).map_err(|e| StatementError::Json(e.to_string()))?;
        signed.statement.validate()?;
        Ok(signed)
    }

    /// The JSON body.
    pub fn encode(&self) -> Vec<u8> {
        // Plain data with string keys and finite numbers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks the bounds and the signature with the issuer's key.
    pub fn verify(&self, key: &IdentityPublic) -> Result<(), StatementError> {
        self.statement.validate()?;
        key.verify(&self.statement.signing_bytes(), &self.signature)
            .map_err(|_| StatementError::BadSignature(self.statement.issuer.clone()))
    }
}

/// Base64 (standard, padded) for a signature.
mod signature_base64 {
    use super::*;

    pub fn serialize<S: Serializer>(sig: &[u8; SIGNATURE_LEN], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(sig))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; SIGNATURE_LEN], D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    pub fn parse(text: &str) -> Result<[u8; SIGNATURE_LEN], StatementError> {
        STANDARD
            .decode(text)
            .ok()
            .and_then(|raw| <[u8; SIGNATURE_LEN]>::try_from(raw.as_slice()).ok())
            .ok_or(StatementError::SignatureEncoding)
    }
}

/// Parses a base64 signature as [`SignedStatement`]'s JSON holds it.
pub fn parse_signature(text: &str) -> Result<[u8; SIGNATURE_LEN], StatementError> {
    signature_base64::parse(text)
}

#[cfg(test)]
mod tests;
