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

#[cfg(test)]
mod tests {
    use meshtun_proto::statement::{EvidenceDigest, Statement};
    use meshtun_proto::IdentityKey;

    use super::super::{
        chain_hash, verify_chain, AuditEntry, AuditKind, EnrollEntry, RemoveEntry, GENESIS_HASH,
    };
    use super::*;
    use crate::store::testutil::node;

    /// Links `bodies` into a chain, as the store would have written them.
    fn chain(bodies: &[(AuditKind, String)]) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for (i, (kind, json)) in bodies.iter().enumerate() {
            let prev = out
                .last()
                .map_or(GENESIS_HASH.to_owned(), |e| e.hash.clone());
            let seq = i as u64 + 1;
            out.push(AuditEntry {
                seq,
                at_ms: 1_000,
                kind: kind.as_str().to_owned(),
                entry: json.clone(),
                hash: chain_hash(&prev, seq, 1_000, kind.as_str(), json),
                prev_hash: prev,
            });
        }
        out
    }

    fn enrolled(id: &str, seed: u8) -> (AuditKind, String) {
        let entry = EnrollEntry {
            node: node(id, seed).0,
            invite_token_hash: None,
        };
        (AuditKind::Enroll, serde_json::to_string(&entry).unwrap())
    }

    fn removed(id: &str) -> (AuditKind, String) {
        let entry = RemoveEntry {
            node_id: id.to_owned(),
        };
        (AuditKind::Remove, serde_json::to_string(&entry).unwrap())
    }

    /// Observation `id` by `issuer` about `subject`, signed with the key of seed `seed`.
    fn observed(
        id: u64,
        issuer: Issuer,
        seed: u8,
        subject: &str,
        dim: &str,
    ) -> (AuditKind, String) {
        let signed = Statement {
            issuer,
            subject: subject.into(),
            scores: [(dim.to_owned(), 1.0)].into(),
            evaluated_at_ms: 1,
            evidence: EvidenceDigest::of(b"probe"),
        }
        .sign(&IdentityKey::from_bytes([seed; 32]))
        .unwrap();
        let entry = ObservationEntry {
            id,
            received_ms: 1,
            signed,
        };
        (
            AuditKind::Observation,
            serde_json::to_string(&entry).unwrap(),
        )
    }

    fn by_a(id: u64, subject: &str, dim: &str) -> (AuditKind, String) {
        observed(id, Issuer::Node("node-a".into()), 1, subject, dim)
    }

    /// Whoever can write the database (but holds no node's key) cannot slip into the log an
    /// observation its observer could not have made: by a node not enrolled then, under
    /// another key, about itself or a stranger, outside the peer dimensions, or passed off
    /// as an evaluator's.
    #[test]
    fn observations_the_observer_could_not_have_made_fail_the_chain() {
        let good = [
            enrolled("node-a", 1),
            enrolled("node-b", 2),
            by_a(1, "node-b", "reachable"),
        ];
        let report = verify_chain(&chain(&good)).unwrap();
        assert_eq!(report.observation_signatures, 1);
        let cases = [
            (
                "after the observer's removal",
                vec![removed("node-a"), by_a(2, "node-b", "reachable")],
                "not enrolled",
            ),
            (
                "after the subject's removal",
                vec![removed("node-b"), by_a(2, "node-b", "reachable")],
                "subject node-b is not enrolled",
            ),
            (
                "about a stranger",
                vec![by_a(2, "node-x", "reachable")],
                "not enrolled",
            ),
            (
                "about itself",
                vec![by_a(2, "node-a", "reachable")],
                "about the observer itself",
            ),
            (
                "outside the peer dimensions",
                vec![by_a(2, "node-b", "honesty")],
                "not a peer dimension",
            ),
            (
                "under another node's key",
                vec![observed(
                    2,
                    Issuer::Node("node-a".into()),
                    2,
                    "node-b",
                    "latency",
                )],
                "does not verify",
            ),
            (
                "under the key of a node enrolled again",
                vec![
                    removed("node-a"),
                    enrolled("node-a", 3),
                    by_a(2, "node-b", "reachable"),
                ],
                "does not verify",
            ),
            (
                "issued as an evaluator",
                vec![observed(
                    2,
                    Issuer::Evaluator("node-a".into()),
                    1,
                    "node-b",
                    "latency",
                )],
                "not a node",
            ),
        ];
        for (what, tail, reason) in cases {
            let mut bodies = good.to_vec();
            bodies.extend(tail);
            let err = verify_chain(&chain(&bodies)).unwrap_err();
            assert!(
                matches!(err, AuditError::ObservationSignature { id: 2, .. }),
                "{what}: {err}"
            );
            assert!(err.to_string().contains(reason), "{what}: {err}");
        }
    }
}
