//! `POST /v1/statements` with a node as the issuer: a peer observation
//! ([`meshtun_proto::observation`]).
//!
//! The request is a node's signed request like any other ([`super::check_signed`]: the
//! node's identity key, freshness, the shared replay-nonce table, the node's quota), with
//! the observer's id in the `x-meshtun-node` header; the body is the statement, signed again
//! by the same key so that `audit verify` can check it on its own. Refused with 4xx,
//! storing nothing: a request not signed by the observer named in the statement (403); a
//! statement whose signature does not verify with the observer's key (401); a node's
//! statement about itself, or one scoring a dimension other than `reachable`, `latency`
//! and `handshake` (403); an evaluation time in the future or older than
//! [`MAX_STATEMENT_AGE`](super::statements::MAX_STATEMENT_AGE) (422); a subject that is not
//! enrolled (422); a node over its quota (429). 201 with the statement's id once committed.
//!
//! Which observations count, and for what, is the policy's (`[policy.sources.reachable]`
//! with `from = ["peers"]`): only those of nodes allowed in the current epoch that peer
//! with the subject.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use meshtun_proto::observation::{is_peer_dimension, PEER_DIMENSIONS};
use meshtun_proto::statement::SignedStatement;
use serde::Serialize;

use super::statements::check_time;
use super::{check_signed, now_ms, worker_stopped, Api, ApiError};
use crate::store::StoreError;

#[derive(Serialize)]
struct Stored {
    id: u64,
}

fn refused(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError::new(status, message)
}

/// Stores `signed`, a statement whose issuer is node `observer`. See the
/// [module documentation](self).
pub(super) async fn store(
    api: Arc<Api>,
    observer: String,
    signed: SignedStatement,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_signed(&api, &observer, &method, &uri, &headers, body).await?;
    let key = api.engine.node_identity(&observer).ok_or_else(|| {
        // Removed between the request's check and now.
        refused(StatusCode::UNAUTHORIZED, format!("unknown node {observer}"))
    })?;
    if let Err(e) = signed.verify(&key) {
        api.engine.metrics.auth_failure();
        return Err(refused(StatusCode::UNAUTHORIZED, e.to_string()));
    }
    check_content(&observer, &signed)?;
    let now = now_ms(&api);
    check_time(
        signed.statement.evaluated_at_ms,
        now,
        api.nonces.window_ms(),
    )?;
    let engine = api.engine.clone();
    let stored = tokio::task::spawn_blocking(move || engine.submit_observation(&signed, now))
        .await
        .map_err(|_| worker_stopped())?;
    let id = stored.map_err(|e| store_refusal(&api, e))?;
    Ok((StatusCode::CREATED, Json(Stored { id })).into_response())
}

/// A peer observation is about another node, and scores peer dimensions only.
fn check_content(observer: &str, signed: &SignedStatement) -> Result<(), ApiError> {
    let s = &signed.statement;
    if s.subject == observer {
        return Err(refused(
            StatusCode::FORBIDDEN,
            StoreError::SelfObservation(observer.to_owned()).to_string(),
        ));
    }
    if let Some(d) = s.scores.keys().find(|d| !is_peer_dimension(d)) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            format!(
                "node {observer} may score only {} of its peers, not {d}",
                PEER_DIMENSIONS.join(", ")
            ),
        ));
    }
    Ok(())
}

/// What the store refused (the checks it repeats in its transaction), as an answer.
fn store_refusal(api: &Api, e: StoreError) -> ApiError {
    let message = meshtun_proto::report::describe(&e);
    match e {
        StoreError::ObservationSignature { .. } | StoreError::UnknownObserver(_) => {
            api.engine.metrics.auth_failure();
            refused(StatusCode::UNAUTHORIZED, message)
        }
        StoreError::SelfObservation(_)
        | StoreError::NotPeerDimension { .. }
        | StoreError::ObservationIssuer(_) => refused(StatusCode::FORBIDDEN, message),
        StoreError::InvalidObservation { .. } => refused(StatusCode::UNPROCESSABLE_ENTITY, message),
        StoreError::NoSuchNode(node) => refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("node {node} is not enrolled"),
        ),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtun_proto::statement::{EvidenceDigest, Issuer, Statement};
    use meshtun_proto::IdentityKey;
    use std::collections::BTreeMap;

    fn observation(observer: &str, subject: &str, dimension: &str) -> SignedStatement {
        let statement = Statement {
            issuer: Issuer::Node(observer.into()),
            subject: subject.into(),
            scores: BTreeMap::from([(dimension.to_owned(), 1.0)]),
            evaluated_at_ms: 1_000,
            evidence: EvidenceDigest::of(b"echo"),
        };
        statement.sign(&IdentityKey::generate()).unwrap()
    }

    #[test]
    fn a_node_may_score_only_the_peer_dimensions_of_another_node() {
        assert!(check_content("a", &observation("a", "b", "reachable")).is_ok());
        assert!(check_content("a", &observation("a", "b", "latency")).is_ok());
        let own = check_content("a", &observation("a", "a", "reachable")).unwrap_err();
        assert_eq!(own.0, StatusCode::FORBIDDEN);
        assert!(own.1.contains("about itself"), "{}", own.1);
        let honesty = check_content("a", &observation("a", "b", "honesty")).unwrap_err();
        assert_eq!(honesty.0, StatusCode::FORBIDDEN);
        assert!(honesty.1.contains("not honesty"), "{}", honesty.1);
    }
}
