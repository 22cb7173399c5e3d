//! `PUT /v1/candidates/{node}`: a node's signed report of where it can be reached.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use meshtun_proto::candidates::{unusable, CandidateReport};

use super::{check_signed, now_ms, worker_stopped, Api, ApiError, Peer};
use crate::store::Candidates;

/// Stores the report, with the address it came from (and the node's WireGuard port: the
/// guess for a port-preserving NAT); 204 once stored. A report that breaks the rules of
/// [`meshtun_proto::candidates`] is refused with 422, naming the candidate.
pub(super) async fn report(
    State(api): State<Arc<Api>>,
    Path(node): Path<String>,
    peer: Peer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_signed(&api, &node, &method, &uri, &headers, body.clone()).await?;
    let report = CandidateReport::decode(&body)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let observed = peer
        .0
        .map(|ip| SocketAddr::new(ip, report.listen_port))
        .filter(|addr| unusable(addr).is_none())
        .map(|addr| addr.to_string())
        .unwrap_or_default();
    let candidates = Candidates {
        reported: report
            .candidates
            .iter()
            .map(SocketAddr::to_string)
            .collect(),
        observed,
        reported_ms: now_ms(&api),
    };
    let engine = api.engine.clone();
    tokio::task::spawn_blocking(move || engine.report_candidates(&node, candidates))
        .await
        .map_err(|_| worker_stopped())??;
    Ok(StatusCode::NO_CONTENT.into_response())
}
