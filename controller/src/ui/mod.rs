//! The live dashboard at `/ui`: a static page, its script and style (embedded in the binary
//! at compile time: no CDN, nothing fetched from elsewhere), and `GET /ui/data`, the JSON
//! snapshot the script polls every second ([`data`]).
//!
//! Served like `/v1/status`: on the status listener without a token when it is loopback, and
//! otherwise only with the read token (or the admin token), as `Authorization: Bearer TOKEN`
//! or as the password of HTTP Basic authentication (any user name), which is what a browser
//! can send by itself: a refused request is answered 401 with `WWW-Authenticate: Basic`, so
//! that the browser asks for it. Every answer carries a strict Content-Security-Policy
//! (`default-src 'self'`, no inline script or style), `nosniff`, `no-store` and no framing.
//! Without a token, on the loopback listener, only a `Host` that is an IP address or
//! `localhost` is answered, against DNS rebinding.

pub mod data;
pub mod paths;
pub mod seen;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use meshtun_proto::EpochId;
use zeroize::Zeroizing;

use crate::api::Api;
use crate::auth::admin_token_matches;
use crate::engine::Engine;
use seen::{Denying, Seen, ServedKind};

/// The page.
const INDEX_HTML: &str = include_str!("../../ui/index.html");
/// Its script.
const APP_JS: &str = include_str!("../../ui/app.js");
/// Its style.
const APP_CSS: &str = include_str!("../../ui/app.css");

/// The Content-Security-Policy of every `/ui` answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                       img-src 'self'; connect-src 'self'; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

/// The dashboard's state kept by the API: what the long-poll saw, and the cached history.
#[derive(Debug, Default)]
pub struct UiState {
    /// Bundle requests and servings per node.
    pub seen: Seen,
    /// The history read from the store.
    pub history: data::HistoryCache,
    /// The paths nodes report.
    pub paths: paths::Paths,
}

impl UiState {
    /// Notes that `kind` of `epoch` was served to `node` now (from the bundle long-poll).
    pub fn note_served(&self, engine: &Engine, node: &str, kind: ServedKind, epoch: EpochId) {
        let denying = engine
            .epoch_views()
            .into_iter()
            .find(|e| e.record.id == epoch)
            .filter(|e| e.cutoff.is_some())
            .map(|e| Denying {
                epoch,
                decided_ms: e.record.created_ms,
            });
        self.seen
            .served(node, kind, epoch, denying, engine.clock().now_ms());
    }
}

/// The `/ui` routes: open (the loopback status listener), or behind the read token.
pub fn routes(api: &Arc<Api>, open: bool) -> Router<Arc<Api>> {
    let routes = Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(script))
        .route("/ui/app.css", get(style))
        .route("/ui/data", get(snapshot));
    let routes = if open {
        routes.route_layer(axum::middleware::from_fn(require_local_host))
    } else {
        routes.route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            require_read,
        ))
    };
    routes.layer(axum::middleware::map_response(strict_headers))
}

/// On the open (loopback) listener, refuses a request whose `Host` is a name other than
/// `localhost`: a web page whose name an attacker re-points at 127.0.0.1 (DNS rebinding) must
/// not read the dashboard through the operator's browser. An SSH tunnel's
/// `http://127.0.0.1:PORT/ui` or `http://localhost:PORT/ui` passes.
async fn require_local_host(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if host.is_some_and(local_host) {
        return next.run(request).await;
    }
    (
        StatusCode::FORBIDDEN,
        Json(serde_json::json!({
            "error": "the dashboard on the status listener answers only to an IP address or localhost as Host"
        })),
    )
        .into_response()
}

/// Whether `host` (a `Host` header: name or address, and an optional port) is an IP address
/// or `localhost`.
fn local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [IPv6]:port
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Refuses a request without the read token (or the admin token) with 401 and a Basic
/// challenge.
async fn require_read(
    State(api): State<Arc<Api>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if presents_read_token(&api, request.headers()) {
        return next.run(request).await;
    }
    api.engine.metrics.auth_failure();
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({
            "error": "read token required here (as a bearer token, or as the Basic password); \
                      without one, use the status listener (status_listen)"
        })),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"meshtun-controller\", charset=\"UTF-8\""),
    );
    response
}

/// The token a request presents: a bearer token, or the password of Basic authentication.
fn presented(headers: &HeaderMap) -> Option<Zeroizing<String>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(Zeroizing::new(token.to_owned()));
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?,
    );
    let text = std::str::from_utf8(&decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(Zeroizing::new(password.to_owned()))
}

fn presents_read_token(api: &Api, headers: &HeaderMap) -> bool {
    let Some(token) = presented(headers) else {
        return false;
    };
    let read = api
        .read_token
        .as_ref()
        .is_some_and(|t| admin_token_matches(&token, t));
    read || admin_token_matches(&token, &api.admin_token)
}

async fn strict_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn snapshot(State(api): State<Arc<Api>>) -> Response {
    let worker = api.clone();
    let built =
        tokio::task::spawn_blocking(move || data::dashboard(&worker.engine, &worker.ui)).await;
    match built {
        Ok(Ok(dashboard)) => Json(dashboard).into_response(),
        Ok(Err(error)) => {
            tracing::warn!(error = %meshtun_proto::report::Chain(&error), "dashboard: reading the history failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "database error").into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "worker stopped").into_response(),
    }
}

#[cfg(test)]
mod history_tests;
#[cfg(test)]
mod tests;
