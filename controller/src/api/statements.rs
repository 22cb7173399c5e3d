//! `POST /v1/statements`: an evaluator's signed statement about a node
//! ([`meshtun_proto::statement`]); a node's (a peer observation) goes to
//! `api::observations`.
//!
//! The request is signed as a node's is ([`crate::auth::authenticate`]: freshness, the
//! shared replay-nonce table, a quota), with the evaluator's key and its name in the
//! `x-meshtun-node` header; the body is the statement, signed again by the same key so that
//! it can be checked on its own later (`audit verify`). Refused with 4xx, storing nothing:
//! a body over [`MAX_STATEMENT_BYTES`] (413); a malformed statement (422); an unknown or removed evaluator, a request or
//! statement signature that does not verify, a stale or replayed request (401); a request
//! signed by another evaluator than the statement's (403); a dimension the evaluator may not
//! speak for (403); an evaluation time in the future or older than [`MAX_STATEMENT_AGE`]
//! (422); a subject that is not enrolled (422); an evaluator over its quota (429). 201 with
//! the statement's id once it is committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::statement::{Issuer, SignedStatement, MAX_STATEMENT_BYTES};
use parking_lot::Mutex;
use serde::Serialize;

use super::observations;
use super::{database_lost, now_ms, worker_stopped, Api, ApiError, DATABASE_ANSWER_LIMIT};
use crate::auth::{authenticate, Refusal, SignedRequest};
use crate::engine::Engine;
use crate::store::{EvaluatorRecord, StoreError};

/// The oldest evaluation accepted: a statement evaluated longer ago than this is refused.
pub const MAX_STATEMENT_AGE: Duration = Duration::from_secs(24 * 3600);

/// How long the evaluators read from the store are used before they are read again. Only
/// the early refusals rest on it: the store checks the evaluator again when it stores.
const EVALUATORS_FOR: Duration = Duration::from_secs(1);

/// The evaluators, read from the store at most once per [`EVALUATORS_FOR`] however many
/// requests name unknown ones (`evaluator add` and `remove` write the store directly).
#[derive(Default)]
pub(super) struct Evaluators {
    cached: Mutex<Option<Read>>,
}

/// The evaluators as read at one time.
struct Read {
    at: Instant,
    by_name: HashMap<String, EvaluatorRecord>,
}

impl Evaluators {
    /// Evaluator `name`, removed or not. Blocking (reads the store when the copy is old).
    fn lookup(&self, engine: &Engine, name: &str) -> Result<Option<EvaluatorRecord>, StoreError> {
        let mut cached = self.cached.lock();
        if let Some(read) = cached.as_ref().filter(|r| r.at.elapsed() < EVALUATORS_FOR) {
            return Ok(read.by_name.get(name).cloned());
        }
        let by_name: HashMap<_, _> = engine
            .store()
            .evaluators()?
            .into_iter()
            .map(|l| (l.evaluator.name.clone(), l.evaluator))
            .collect();
        let found = by_name.get(name).cloned();
        *cached = Some(Read {
            at: Instant::now(),
            by_name,
        });
        Ok(found)
    }
}

#[derive(Serialize)]
struct Stored {
    id: u64,
}

fn refused(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError::new(status, message)
}

/// The handler of `POST /v1/statements`, counting its outcome. See the
/// [module documentation](self).
pub(super) async fn submit(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let answer = store_statement(api.clone(), method, uri, headers, body).await;
    let outcome = if answer.is_ok() {
        "accepted"
    } else {
        "rejected"
    };
    api.engine.metrics.statement(outcome);
    answer
}

async fn store_statement(
    api: Arc<Api>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if body.len() > MAX_STATEMENT_BYTES {
        return Err(refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a statement is at most {MAX_STATEMENT_BYTES} bytes"),
        ));
    }
    let signed = SignedStatement::decode(&body)
        .map_err(|e| refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    if let Issuer::Node(observer) = &signed.statement.issuer {
        let observer = observer.clone();
        return observations::store(api, observer, signed, method, uri, headers, body).await;
    }
    if api.engine.leadership().database_lost() {
        return Err(database_lost());
    }
    let signed = Arc::new(signed);
    let (checker, checked) = (api.clone(), signed.clone());
    let checking = tokio::task::spawn_blocking(move || {
        check(&checker, &checked, &method, &uri, &headers, &body)
    });
    match tokio::time::timeout(DATABASE_ANSWER_LIMIT, checking).await {
        Ok(joined) => joined.map_err(|_| worker_stopped())??,
        Err(_) => {
            return Err(refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "this controller instance's database does not answer; ask another",
            ))
        }
    }
    let (engine, now) = (api.engine.clone(), now_ms(&api));
    let stored = tokio::task::spawn_blocking(move || engine.submit_statement(&signed, now))
        .await
        .map_err(|_| worker_stopped())?;
    let id = stored.map_err(|e| store_refusal(&api, e))?;
    Ok((StatusCode::CREATED, Json(Stored { id })).into_response())
}

/// What the store refused, as an answer (the checks it repeats in its transaction).
fn store_refusal(api: &Api, e: StoreError) -> ApiError {
    let message = meshtun_proto::report::describe(&e);
    match e {
        StoreError::UnknownEvaluator(_)
        | StoreError::EvaluatorRemoved(_)
        | StoreError::InvalidStatement { .. } => {
            api.engine.metrics.auth_failure();
            refused(StatusCode::UNAUTHORIZED, message)
        }
        StoreError::DimensionNotAllowed { .. } | StoreError::NodeStatement(_) => {
            refused(StatusCode::FORBIDDEN, message)
        }
        StoreError::NoSuchNode(node) => refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the subject node {node} is not enrolled"),
        ),
        other => other.into(),
    }
}

/// Everything but the store's own checks: the evaluator, the request's signature,
/// freshness, replay and quota, the statement's signature, its time and its dimensions.
/// Blocking (the evaluators and, with several instances, the nonces live in the database).
fn check(
    api: &Api,
    signed: &SignedStatement,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let unauthenticated = |message: String| {
        api.engine.metrics.auth_failure();
        refused(StatusCode::UNAUTHORIZED, message)
    };
    let name = signed.statement.issuer.name();
    let sig = RequestSignature::from_headers(|h| headers.get(h).and_then(|v| v.to_str().ok()))
        .map_err(|e| unauthenticated(e.to_string()))?;
    // The evaluator that signed the request; `authenticate` then refuses (403) one that
    // sends another evaluator's statement.
    let signer = &sig.node;
    let evaluator = api
        .evaluators
        .lookup(&api.engine, signer)?
        .ok_or_else(|| unauthenticated(format!("unknown evaluator {signer}")))?;
    if !evaluator.active() {
        return Err(unauthenticated(format!("evaluator {signer} was removed")));
    }
    let request = SignedRequest {
        controller: api.engine.answers_to(),
        method: method.as_str(),
        path_and_query: uri.path_and_query().map_or(uri.path(), |p| p.as_str()),
        body,
        path_node: name,
    };
    let now = now_ms(api);
    let lookup = |id: &str| (id == evaluator.name).then_some(evaluator.key);
    authenticate(
        &sig,
        &request,
        lookup,
        &api.evaluator_quota,
        api.nonces.as_ref(),
        now,
    )
    .map_err(|r| match r {
        Refusal::TooMany { .. } => {
            api.engine.metrics.throttled();
            ApiError::from(r)
        }
        Refusal::Unauthenticated(m) => unauthenticated(m),
        other => ApiError::from(other),
    })?;
    signed
        .verify(&evaluator.key)
        .map_err(|e| unauthenticated(e.to_string()))?;
    check_time(
        signed.statement.evaluated_at_ms,
        now,
        api.nonces.window_ms(),
    )?;
    if let Some(d) = signed
        .statement
        .scores
        .keys()
        .find(|d| !evaluator.may_score(d))
    {
        let e = StoreError::DimensionNotAllowed {
            evaluator: name.to_owned(),
            dimension: d.clone(),
            allowed: evaluator.dimensions.join(","),
        };
        return Err(refused(StatusCode::FORBIDDEN, e.to_string()));
    }
    Ok(())
}

/// Refuses an evaluation time more than the clock skew ahead of `now_ms`, or older than
/// [`MAX_STATEMENT_AGE`].
pub(super) fn check_time(evaluated_at_ms: u64, now_ms: u64, skew_ms: u64) -> Result<(), ApiError> {
    let max_age = u64::try_from(MAX_STATEMENT_AGE.as_millis()).unwrap_or(u64::MAX);
    if evaluated_at_ms > now_ms.saturating_add(skew_ms) {
        return Err(refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "evaluated_at_ms {evaluated_at_ms} is {} ms ahead of the controller's clock \
                 (at most {skew_ms})",
                evaluated_at_ms - now_ms
            ),
        ));
    }
    if evaluated_at_ms.saturating_add(max_age) < now_ms {
        return Err(refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "evaluated_at_ms {evaluated_at_ms} is {} ms old (at most {max_age})",
                now_ms - evaluated_at_ms
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_times_must_be_neither_ahead_nor_too_old() {
        let now = 10 * 86_400_000;
        let day = 86_400_000;
        assert!(check_time(now, now, 30_000).is_ok());
        assert!(check_time(now + 30_000, now, 30_000).is_ok());
        assert_eq!(
            check_time(now + 30_001, now, 30_000).unwrap_err().0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert!(check_time(now - day, now, 30_000).is_ok());
        assert_eq!(
            check_time(now - day - 1, now, 30_000).unwrap_err().0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert!(check_time(0, u64::MAX, 30_000).is_err());
        assert!(check_time(u64::MAX, 0, 30_000).is_err());
    }
}
