//! What the audit chain verifier checks of a recorded peer observation: it was signed by its
//! observer's identity key as the chain enrolled it, and is a peer observation (about
//! another node enrolled at that point, in peer dimensions only).

use std::collections::HashMap;

use meshtun_proto::observation::{is_peer_dimension, PEER_DIMENSIONS};
use meshtun_proto::statement::Issuer;
use meshtun_proto::IdentityPublic;

use super::{AuditError, ObservationEntry};

/// Checks entry `seq`, a recorded observation, against `keys`: node id → (identity key,
/// audit seq of its `enroll` entry), the nodes enrolled at this point of the chain.
pub(super) fn check(
    seq: u64,
    entry: &ObservationEntry,
    keys: &HashMap<String, (IdentityPublic, u64)>,
) -> Result<(), AuditError> {
    let s = &entry.signed.statement;
    let fail = |reason: String| AuditError::ObservationSignature {
        seq,
        id: entry.id,
        node: s.issuer.name().to_owned(),
        reason,
    };
    let Issuer::Node(observer) = &s.issuer else {
        return Err(fail(format!("issued by {}, not a node", s.issuer)));
    };
    let (key, enrolled_at) = keys
        .get(observer)
        .ok_or_else(|| fail("the observer is not enrolled at this point".to_owned()))?;
    entry.signed.verify(key).map_err(|e| {
        fail(format!(
            "{e} (identity key {key} enrolled at audit entry {enrolled_at})"
        ))
    })?;
    if s.subject == *observer {
        return Err(fail("it is about the observer itself".to_owned()));
    }
    if let Some(d) = s.scores.keys().find(|d| !is_peer_dimension(d)) {
        return Err(fail(format!(
            "dimension {d} is not a peer dimension (only {})",
            PEER_DIMENSIONS.join(",")
        )));
    }
    if !keys.contains_key(&s.subject) {
        return Err(fail(format!(
            "its subject {} is not enrolled at this point",
            s.subject
        )));
    }
    Ok(())
}
