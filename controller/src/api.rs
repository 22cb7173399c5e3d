//! The HTTP API (axum, JSON, under `/v1`).
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /health` | anyone | liveness |
//! | `GET /metrics` | the status listener, or the read token | Prometheus text |
//! | `GET /v1/epoch` | anyone | current and next epoch times |
//! | `GET /v1/status` | the status listener, or the read token | decisions with their reasons; no secret |
//! | `POST /v1/enroll` | invite holder | join: proofs of the token and of both keys; a signed reply |
//! | `POST /v1/benchmarks/{node}` | the node, signed | submit a benchmark |
//! | `PUT /v1/paths/{node}` | the node, signed | its counts of its gated peers by path (direct, relayed, trying, none), for the dashboard; in memory only |
//! | `POST /v1/statements` | an evaluator, signed | submit a signed statement about a node ([`statements`]) |
//! | `GET /v1/config/{node}?after=E&cutoff=C` | the node, signed | long-poll for a bundle newer than epoch E, or the cut-off notice (`application/vnd.meshtun.cutoff+json`) of a newer epoch above C whose bundles are not built yet |
//! | `POST /v1/rotate` | admin token | publish a new epoch now |
//! | `GET /ui`, `/ui/data` | the status listener, or the read token | the live dashboard ([`crate::ui`]) |
//!
//! Node requests are authenticated by [`crate::auth::authenticate`] before anything is read
//! from the body, and each spends one request of the node's quota (429 with `Retry-After`
//! beyond it); a 2xx for a benchmark is sent only after the database commit. Every route has
//! a time limit (408 past it): `request_timeout`, plus `long_poll` for the bundle long-poll,
//! whose waiting requests are also capped per node, per source address and in total.
//!
//! [`router`] is the API on `listen`; [`status_router`] is what `status_listen` serves.

mod candidates;
mod observations;
mod paths;
pub mod statements;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::cutoff::CUTOFF_CONTENT_TYPE;
use meshtun_proto::wire::{Benchmark, EnrollRequest, EnrollResponse};
use meshtun_proto::{EpochId, IdentityPublic};
use serde::{Deserialize, Serialize};
use tower_http::timeout::TimeoutLayer;
use zeroize::Zeroizing;

use crate::auth::{
    admin_token_matches, authenticate, NonceCache, NonceStore, Refusal, SignedRequest,
};
use crate::config::Limits;
use crate::engine::cutoff::Served;
use crate::engine::Engine;
use crate::enrollment_sig::check_signature;
use crate::model::BenchmarkRecord;
use crate::quota::{address_key, NodeQuota, Slots};
use crate::status::status_report;
use crate::store::StoreError;
use meshtun_proto::report::{describe, Chain};

/// What the API is set up with, besides the engine.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The admin token (`POST /v1/rotate`; also accepted as a read token).
    pub admin_token: Zeroizing<String>,
    /// The read token for `/metrics` and `/v1/status` on the API listener.
    pub read_token: Option<Zeroizing<String>>,
    /// How far a signed request's time may be from the controller's.
    pub clock_skew: Duration,
    /// Longest wait of a bundle long-poll.
    pub long_poll: Duration,
    /// Time limits, caps and quotas.
    pub limits: Limits,
}

/// Largest request body accepted on any route.
pub const MAX_BODY: usize = 64 * 1024;

/// Long-polls one node may have waiting at once (one, plus one that overlaps a retry).
pub const LONG_POLLS_PER_NODE: u32 = 2;

/// What a client refused a long-poll slot is told to wait, seconds.
const LONG_POLL_RETRY_SECS: u64 = 5;

/// Shared state of the API handlers.
pub struct Api {
    /// The controller's live state.
    pub engine: Arc<Engine>,
    /// Nonces of accepted signed requests: in memory unless [`Api::with_nonces`] shares them.
    pub nonces: Arc<dyn NonceStore>,
    /// Signed requests per node.
    pub quota: NodeQuota,
    /// The admin token.
    pub admin_token: Zeroizing<String>,
    /// The read token for `/metrics` and `/v1/status` (also accepted: the admin token).
    pub read_token: Option<Zeroizing<String>>,
    /// Longest wait of a long-poll.
    pub long_poll: Duration,
    /// Time limits and caps.
    pub limits: Limits,
    /// Waiting long-polls by source address.
    long_polls: Arc<Slots<IpAddr>>,
    /// Waiting long-polls by node.
    node_polls: Arc<Slots<String>>,
    /// Signed requests per evaluator (buckets and limits of their own).
    evaluator_quota: NodeQuota,
    /// The registered evaluators, as last read.
    evaluators: statements::Evaluators,
    /// What the dashboard (`/ui`) shows besides the engine's state.
    pub ui: crate::ui::UiState,
}

impl Api {
    /// The API of `engine`: signed requests are accepted within `settings.clock_skew`,
    /// long-polls wait up to `settings.long_poll`, and clients are held to `settings.limits`.
    pub fn new(engine: Arc<Engine>, settings: ApiSettings) -> Self {
        let ApiSettings {
            admin_token,
            read_token,
            clock_skew,
            long_poll,
            limits,
        } = settings;
        Self {
            engine,
            nonces: Arc::new(NonceCache::new(
                u64::try_from(clock_skew.as_millis()).unwrap_or(u64::MAX),
            )),
            quota: NodeQuota::new(limits.node_rate, limits.node_burst),
            admin_token,
            read_token,
            long_poll,
            limits,
            long_polls: Slots::new(limits.max_long_polls, limits.max_long_polls_per_address),
            node_polls: Slots::new(limits.max_long_polls, LONG_POLLS_PER_NODE),
            evaluator_quota: NodeQuota::new(limits.evaluator_rate, limits.evaluator_burst),
            evaluators: statements::Evaluators::default(),
            ui: crate::ui::UiState::default(),
        }
    }

    /// The API remembering nonces in `nonces` (the table every instance shares, with
    /// several instances on one PostgreSQL) instead of this process's memory.
    pub fn with_nonces(mut self, nonces: Arc<dyn NonceStore>) -> Self {
        self.nonces = nonces;
        self
    }

    /// Long-polls waiting now.
    pub fn waiting_long_polls(&self) -> u32 {
        self.long_polls.held()
    }
}

/// An error answer: a status and a message, as `{"error": "..."}`, with a `Retry-After` (in
/// seconds) when the client should come back later.
#[derive(Debug)]
pub struct ApiError(StatusCode, String, Option<Duration>, Option<u64>);

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into(), None, None)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    /// On a 409 for a benchmark's sequence number: the node's newest stored one, so that a
    /// node whose clock (its sequence source) went back can continue above it.
    #[serde(skip_serializing_if = "Option::is_none")]
    latest_seq: Option<u64>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.1,
            latest_seq: self.3,
        };
        let mut response = (self.0, Json(body)).into_response();
        if let Some(after) = self.2 {
            // Whole seconds, rounded up: a client never comes back too early.
            let secs = after.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        ApiError(status, r.to_string(), r.retry_after(), None)
    }
}

/// The one place a store error becomes an answer: what the client got wrong is said (403
/// for an invite it cannot use, 409 for a conflict, 422 for what it asked for), anything
/// else is logged and answered with a bare 500.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Replay { latest, .. } => {
                ApiError(StatusCode::CONFLICT, describe(&e), None, Some(latest))
            }
            StoreError::UnknownInvite
            | StoreError::BadInviteProof(_)
            | StoreError::InviteUsed { .. }
            | StoreError::InviteExpired { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, describe(&e))
            }
            StoreError::NodeExists(_) | StoreError::WgKeyInUse { .. } => {
                ApiError::new(StatusCode::CONFLICT, describe(&e))
            }
            StoreError::NoAddresses(_)
            | StoreError::Addresses { .. }
            | StoreError::AddressInUse { .. }
            | StoreError::Endpoint { .. }
            | StoreError::LowOrderKey { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, describe(&e))
            }
            StoreError::Fenced(_) | StoreError::NotLeader => {
                ApiError::new(StatusCode::CONFLICT, describe(&e))
            }
            other => {
                tracing::error!(error = %Chain(&other), "database error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "database error")
            }
        }
    }
}

fn timeout(limit: Duration) -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limit)
}

/// The API served on `listen`: `/metrics` and `/v1/status` need the read token (or the admin
/// token) here.
pub fn router(api: Arc<Api>) -> Router {
    let request = api.limits.request_timeout;
    let long_poll = Router::new()
        .route("/v1/config/{node}", get(config))
        .layer(timeout(request.saturating_add(api.long_poll)));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_with_token))
        .route("/v1/epoch", get(epoch))
        .route("/v1/status", get(status_with_token))
        .route("/v1/enroll", post(enroll))
        .route("/v1/benchmarks/{node}", post(benchmark))
        .route("/v1/candidates/{node}", put(candidates::report))
        .route("/v1/paths/{node}", put(paths::report))
        .route("/v1/statements", post(statements::submit))
        .route("/v1/rotate", post(rotate))
        .merge(crate::ui::routes(&api, false))
        .layer(timeout(request))
        .merge(long_poll)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// What `status_listen` serves: `/health`, `/metrics` and `/v1/status`, without a token when
/// `open` (a loopback listener), with the read token otherwise.
pub fn status_router(api: Arc<Api>, open: bool) -> Router {
    let routes = if open {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/v1/status", get(status))
    } else {
        Router::new()
            .route("/metrics", get(metrics_with_token))
            .route("/v1/status", get(status_with_token))
    };
    routes
        .route("/health", get(health))
        .merge(crate::ui::routes(&api, open))
        .layer(timeout(api.limits.request_timeout))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

async fn health() -> &'static str {
    "ok\n"
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// Refuses a read without the read token or the admin token.
fn check_read(api: &Api, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = bearer(headers);
    let read = api
        .read_token
        .as_ref()
        .is_some_and(|t| admin_token_matches(presented, t));
    if read || admin_token_matches(presented, &api.admin_token) {
        return Ok(());
    }
    api.engine.metrics.auth_failure();
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "read token required here; without one, use the status listener (status_listen)",
    ))
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

async fn metrics_with_token(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_read(&api, &headers)?;
    Ok(metrics(State(api)).await)
}

async fn status_with_token(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_read(&api, &headers)?;
    Ok(status(State(api)).await)
}

async fn epoch(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    match api.engine.epoch_info() {
        Some(info) => Ok(Json(info).into_response()),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no epoch in force yet",
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
/// How long a signed request waits for the shared nonce table before it is answered 503
/// (several instances on PostgreSQL): a cut-off database must not hold nodes.
const DATABASE_ANSWER_LIMIT: Duration = Duration::from_secs(2);

/// [`check_node`], off the runtime's workers when the nonces live in a database (its driver
/// blocks, and must not run on a worker).
/// 503 for a request to an instance that has lost its database.
fn database_lost() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "this controller instance has lost its database; ask another",
    )
}

/// Completes when `lost` turns true; never if its sender goes away.
async fn until_lost(mut lost: tokio::sync::watch::Receiver<bool>) {
    if lost.wait_for(|lost| *lost).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A node request that passed [`authenticate`]: its signature, and the controller key it
/// named.
struct Authenticated {
    sig: RequestSignature,
    controller: IdentityPublic,
}

async fn check_signed(
    api: &Arc<Api>,
    node: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Authenticated, ApiError> {
    if !api.nonces.blocks() {
        return check_node(api, node, method, uri, headers, &body);
    }
    if api.engine.leadership().database_lost() {
        return Err(database_lost());
    }
    let (api, node, method, uri, headers) = (
        api.clone(),
        node.to_owned(),
        method.clone(),
        uri.clone(),
        headers.clone(),
    );
    let check = tokio::task::spawn_blocking(move || {
        check_node(&api, &node, &method, &uri, &headers, &body)
    });
    match tokio::time::timeout(DATABASE_ANSWER_LIMIT, check).await {
        Ok(joined) => joined.map_err(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "request check failed")
        })?,
        // A database cut off or stalled: the node had better ask another instance now than
        // wait for this one's connection to time out.
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this controller instance's database does not answer; ask another",
        )),
    }
}

fn check_node(
    api: &Api,
    node: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Authenticated, ApiError> {
    let refuse = |r: Refusal| {
        api.engine.metrics.auth_failure();
        ApiError::from(r)
    };
    let sig =
        RequestSignature::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
            .map_err(|e| refuse(e.into()))?;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let request = SignedRequest {
        controller: api.engine.answers_to(),
        method: method.as_str(),
        path_and_query: path,
        body,
        path_node: node,
    };
    let controller = authenticate(
        &sig,
        &request,
        |id| api.engine.node_identity(id),
        &api.quota,
        api.nonces.as_ref(),
        now_ms(api),
    )
    .map_err(|r| match r {
        Refusal::TooMany { .. } => {
            api.engine.metrics.throttled();
            ApiError::from(r)
        }
        other => refuse(other),
    })?;
    Ok(Authenticated { sig, controller })
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
    let signed = check_signed(&api, &node, &method, &uri, &headers, body.clone()).await?;
    let now = now_ms(&api);
    let bench = Benchmark::decode(&body, now).map_err(|e| {
        api.engine.metrics.benchmark("rejected");
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
    })?;
    let record = BenchmarkRecord {
        node_id: node.clone(),
        suite_version: bench.suite_version,
        scores: bench.scores,
        measured_at_ms: bench.measured_at_ms,
        seq: bench.seq,
        received_ms: now,
    };
    // Stored and verified again over exactly what was signed: the path and the query.
    let path = uri
        .path_and_query()
        .map_or(uri.path(), |p| p.as_str())
        .to_owned();
    let engine = api.engine.clone();
    let seq = record.seq;
    // The engine checks for newly failing nodes soon, at most a few times a second however
    // many benchmarks arrive.
    let stored = tokio::task::spawn_blocking(move || {
        engine.submit_benchmark(&signed.controller, &record, &body, &signed.sig, &path)
    })
    .await
    .map_err(|_| worker_stopped())?;
    if let Err(e) = stored {
        api.engine.metrics.benchmark("rejected");
        return Err(e.into());
    }
    api.engine.metrics.benchmark("accepted");
    Ok((StatusCode::CREATED, Json(Accepted { node, seq })).into_response())
}

/// `?after=EPOCH&cutoff=EPOCH`: the epoch of the node's newest bundle, and of the newest
/// cut-off notice it saw (sent by nodes that read notices; without it none is served).
#[derive(Deserialize)]
struct After {
    after: Option<u64>,
    cutoff: Option<u64>,
}

fn worker_stopped() -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "worker stopped")
}

/// The source address of the request, when the server recorded it.
pub struct Peer(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// Refuses a long-poll over its node's, its address's or the total cap.
fn too_many_polls(what: &str) -> ApiError {
    ApiError(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many waiting bundle requests {what}; retry later"),
        Some(Duration::from_secs(LONG_POLL_RETRY_SECS)),
        None,
    )
}

/// A `200` with `json` of `content_type`, naming `epoch` in `header`.
fn served(content_type: &str, header: &'static str, epoch: EpochId, json: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::HeaderName::from_static(header), epoch.to_string()),
        ],
        json,
    )
        .into_response()
}

async fn config(
    State(api): State<Arc<Api>>,
    Path(node): Path<String>,
    Query(after): Query<After>,
    peer: Peer,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_signed(&api, &node, &method, &uri, &headers, Bytes::new()).await?;
    api.engine.check_after(&node, after.after);
    api.ui.seen.asked(&node, after.after, now_ms(&api));
    let found = match api.engine.serve(&node, after.after, after.cutoff) {
        Some(found) => Some(found),
        None => {
            // Only a request that waits holds a slot.
            let ip = address_key(peer.0.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
            let _mine = api.node_polls.try_take(node.clone()).map_err(|_| {
                api.engine.metrics.throttled();
                too_many_polls(&format!("from node {node}"))
            })?;
            let _address = api.long_polls.try_take(ip).map_err(|full| {
                api.engine.metrics.throttled();
                too_many_polls(match full {
                    crate::quota::Full::PerKey => "from this address",
                    crate::quota::Full::Total => "in total",
                })
            })?;
            let waited = api
                .engine
                .wait_served(&node, after.after, after.cutoff, api.long_poll);
            match api.engine.leadership().lost_watch() {
                None => waited.await,
                Some(lost) => tokio::select! {
                    found = waited => found,
                    () = until_lost(lost) => return Err(database_lost()),
                },
            }
        }
    };
    match found {
        Some(Served::Bundle(epoch, json)) => {
            api.engine.metrics.bundle("served");
            let kind = crate::ui::seen::ServedKind::Bundle;
            api.ui.note_served(&api.engine, &node, kind, epoch);
            Ok(served("application/json", "x-meshtun-epoch", epoch, json))
        }
        Some(Served::CutOff(epoch, json)) => {
            api.engine.metrics.bundle("cutoff_notice");
            let kind = crate::ui::seen::ServedKind::CutoffNotice;
            api.ui.note_served(&api.engine, &node, kind, epoch);
            Ok(served(CUTOFF_CONTENT_TYPE, "x-meshtun-cutoff", epoch, json))
        }
        None => {
            api.engine.metrics.bundle("not_modified");
            Ok(StatusCode::NOT_MODIFIED.into_response())
        }
    }
}

async fn enroll(State(api): State<Arc<Api>>, body: Bytes) -> Result<Response, ApiError> {
    let enrollment = EnrollRequest::decode(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("bad enrollment: {e}"),
        )
    })?;
    // The proofs of both keys need no database: checked before the store is touched.
    enrollment
        .verify_possession(&api.engine.public_key(), api.engine.enrollment_key())
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e.to_string()))?;
    // After the proofs: the signature is checked over keys the node is known to hold.
    let claim = &enrollment.claim;
    check_signature(
        api.engine.membership_key(),
        &claim.node_id,
        &claim.wg_public_key,
        &claim.identity_key,
        claim.membership_sig,
    )
    .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, describe(&e)))?;
    let engine = api.engine.clone();
    let now = now_ms(&api);
    let digest = enrollment.digest();
    let node = tokio::task::spawn_blocking(move || engine.enroll(&enrollment, now))
        .await
        .map_err(|_| worker_stopped())??;
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
    if !admin_token_matches(bearer(&headers), &api.admin_token) {
        api.engine.metrics.auth_failure();
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "admin token required",
        ));
    }
    if !api.engine.leadership().is_leader() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            not_the_leader(&api.engine),
        ));
    }
    let engine = api.engine.clone();
    let epoch = tokio::task::spawn_blocking(move || engine.rotate_now("admin"))
        .await
        .map_err(|_| worker_stopped())??;
    Ok(Json(Rotated { epoch }).into_response())
}

/// What a follower answers to a rotation: it does not decide epochs; the leader does, at
/// the URL named if known.
fn not_the_leader(engine: &Engine) -> String {
    let cluster = engine.leadership().cluster();
    let leader = cluster.as_ref().and_then(|c| {
        let id = c.leader.as_deref()?;
        let url = c
            .instances
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.url.as_str());
        Some(format!("{id} ({})", url.unwrap_or("URL unknown")))
    });
    format!(
        "this instance does not lead, so it publishes no epoch; the leader is {}",
        leader
            .as_deref()
            .unwrap_or("unknown (none holds the lease now)")
    )
}
