//! The HTTP API (axum, JSON, under `/v1`).
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /health` | anyone | liveness |
//! | `GET /metrics` | anyone | Prometheus text |
//! | `GET /v1/epoch` | anyone | current and next epoch times |
//! | `GET /v1/status` | anyone | decisions with their reasons; no secret |
//! | `POST /v1/enroll` | invite holder | join: proofs of the token and of both keys; a signed reply |
//! | `POST /v1/benchmarks/{node}` | the node, signed | submit a benchmark |
//! | `GET /v1/config/{node}?after=E` | the node, signed | long-poll for a bundle newer than epoch E |
//! | `POST /v1/rotate` | admin token | publish a new epoch now |
//!
//! Node requests are authenticated by [`crate::auth::authenticate`] before anything is read
//! from the body; a 2xx for a benchmark is sent only after the database commit.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::wire::{Benchmark, EnrollRequest, EnrollResponse};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::auth::{admin_token_matches, authenticate, NonceCache, Refusal, SignedRequest};
use crate::engine::Engine;
use crate::model::BenchmarkRecord;
use crate::status::status_report;
use crate::store::StoreError;

/// Largest request body accepted on any route.
pub const MAX_BODY: usize = 64 * 1024;

/// Shared state of the API handlers.
pub struct Api {
    /// The controller's live state.
    pub engine: Arc<Engine>,
    /// Nonces of accepted signed requests.
    pub nonces: NonceCache,
    /// The admin token.
    pub admin_token: Zeroizing<String>,
    /// Longest wait of a long-poll.
    pub long_poll: Duration,
}

/// An error answer: a status and a message, as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: &self.1 })).into_response()
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        ApiError(status, r.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Replay { .. } => ApiError(StatusCode::CONFLICT, e.to_string()),
            other => {
                tracing::error!(error = %other, "database error");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, "database error".into())
            }
        }
    }
}

/// The router.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/epoch", get(epoch))
        .route("/v1/status", get(status))
        .route("/v1/enroll", post(enroll))
        .route("/v1/benchmarks/{node}", post(benchmark))
        .route("/v1/config/{node}", get(config))
        .route("/v1/rotate", post(rotate))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

async fn health() -> &'static str {
    "ok\n"
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        api.engine.metrics.render(),
    )
        .into_response()
}

async fn epoch(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    match api.engine.epoch_info() {
        Some(info) => Ok(Json(info).into_response()),
        None => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no epoch in force yet".into(),
        )),
    }
}

async fn status(State(api): State<Arc<Api>>) -> Response {
    Json(status_report(&api.engine)).into_response()
}

fn now_ms(api: &Api) -> u64 {
    api.engine.clock().now_ms()
}

/// Checks the signature headers of a node request about `node`.
fn check_node(
    api: &Api,
    node: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<RequestSignature, ApiError> {
    let refuse = |r: Refusal| {
        api.engine.metrics.auth_failure();
        ApiError::from(r)
    };
    let sig =
        RequestSignature::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
            .map_err(|e| refuse(e.into()))?;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let request = SignedRequest {
        method: method.as_str(),
        path_and_query: path,
        body,
        path_node: node,
    };
    authenticate(
        &sig,
        &request,
        |id| api.engine.node_identity(id),
        &api.nonces,
        now_ms(api),
    )
    .map_err(refuse)?;
    Ok(sig)
}

#[derive(Serialize)]
struct Accepted {
    node: String,
    seq: u64,
}

async fn benchmark(
    State(api): State<Arc<Api>>,
    Path(node): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let sig = check_node(&api, &node, &method, &uri, &headers, &body)?;
    let now = now_ms(&api);
    let bench = Benchmark::decode(&body, now).map_err(|e| {
        api.engine.metrics.benchmark("rejected");
        ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
    })?;
    let record = BenchmarkRecord {
        node_id: node.clone(),
        suite_version: bench.suite_version,
        scores: bench.scores,
        measured_at_ms: bench.measured_at_ms,
        seq: bench.seq,
        received_ms: now,
    };
    let path = uri.path().to_owned();
    let engine = api.engine.clone();
    let seq = record.seq;
    let stored = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        engine
            .store()
            .insert_benchmark(&record, &body, &sig, &path)?;
        if let Err(error) = engine.check_deny() {
            tracing::error!(%error, "membership check after a benchmark failed");
        }
        Ok(())
    })
    .await
    .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "worker stopped".into()))?;
    if let Err(e) = stored {
        api.engine.metrics.benchmark("rejected");
        return Err(e.into());
    }
    api.engine.metrics.benchmark("accepted");
    Ok((StatusCode::CREATED, Json(Accepted { node, seq })).into_response())
}

/// `?after=EPOCH`.
#[derive(Deserialize)]
struct After {
    after: Option<u64>,
}

async fn config(
    State(api): State<Arc<Api>>,
    Path(node): Path<String>,
    Query(after): Query<After>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_node(&api, &node, &method, &uri, &headers, &[])?;
    match api
        .engine
        .wait_bundle(&node, after.after, api.long_poll)
        .await
    {
        Some((epoch, json)) => {
            api.engine.metrics.bundle("served");
            Ok((
                [
                    (header::CONTENT_TYPE, "application/json".to_owned()),
                    (
                        header::HeaderName::from_static("x-meshtun-epoch"),
                        epoch.to_string(),
                    ),
                ],
                json,
            )
                .into_response())
        }
        None => {
            api.engine.metrics.bundle("not_modified");
            Ok(StatusCode::NOT_MODIFIED.into_response())
        }
    }
}

async fn enroll(State(api): State<Arc<Api>>, body: Bytes) -> Result<Response, ApiError> {
    let enrollment = EnrollRequest::decode(&body).map_err(|e| {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("bad enrollment: {e}"),
        )
    })?;
    // The proofs of both keys need no database: checked before the store is touched.
    enrollment
        .verify_possession(&api.engine.public_key(), api.engine.enrollment_key())
        .map_err(|e| ApiError(StatusCode::FORBIDDEN, e.to_string()))?;
    let engine = api.engine.clone();
    let now = now_ms(&api);
    let digest = enrollment.digest();
    let node = tokio::task::spawn_blocking(move || {
        let node = engine
            .store()
            .redeem_invite(&enrollment, engine.network(), now)?;
        engine.refresh_nodes()?;
        Ok::<_, StoreError>(node)
    })
    .await
    .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "worker stopped".into()))?
    .map_err(|e| match e {
        StoreError::UnknownInvite
        | StoreError::BadInviteProof(_)
        | StoreError::InviteUsed { .. }
        | StoreError::InviteExpired { .. } => ApiError(StatusCode::FORBIDDEN, e.to_string()),
        StoreError::NodeExists(_) | StoreError::WgKeyInUse { .. } => {
            ApiError(StatusCode::CONFLICT, e.to_string())
        }
        StoreError::NoAddresses(_)
        | StoreError::Addresses { .. }
        | StoreError::AddressInUse { .. }
        | StoreError::Endpoint { .. }
        | StoreError::LowOrderKey { .. } => {
            ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        other => ApiError::from(other),
    })?;
    tracing::info!(node = %node.id, "node enrolled with an invite");
    let answer = EnrollResponse {
        request_digest: digest,
        node_id: node.id,
        wg_public_key: node.wg_public_key,
        identity_key: node.identity_key,
        addresses: node.addresses,
        endpoint: node.endpoint,
        network: api.engine.network().prefixes(),
    };
    Ok((
        StatusCode::CREATED,
        Json(api.engine.sign_enrollment(&answer)),
    )
        .into_response())
}

#[derive(Serialize)]
struct Rotated {
    epoch: u64,
}

async fn rotate(State(api): State<Arc<Api>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !admin_token_matches(presented, &api.admin_token) {
        api.engine.metrics.auth_failure();
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "admin token required".into(),
        ));
    }
    let engine = api.engine.clone();
    let epoch = tokio::task::spawn_blocking(move || engine.rotate_now("admin"))
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "worker stopped".into()))??;
    Ok(Json(Rotated { epoch }).into_response())
}
