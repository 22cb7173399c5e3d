//! Submitting this node's signed statements (peer observations) to the controller.
//!
//! The statement is signed with the node's identity key by its builder
//! ([`crate::gate::observe`]); the request carrying it is signed as the node's other
//! requests are ([`RequestSignature`](meshtun_proto::auth::RequestSignature), with the
//! node's id) and goes to `POST /v1/statements`. An instance that is lost (no answer, a
//! 5xx) is left for the next one, which is tried at once, each instance at most once per
//! statement; a refusal is an answer and is returned as it is. A request that timed out
//! after it was sent may have been stored: its statement then reaches the next instance too
//! (the same observation, stored twice).

use meshtun_proto::statement::{SignedStatement, Statement, StatementError};
use reqwest::{Method, RequestBuilder};
use serde::Deserialize;

use super::{http_error, refusal, ClientError, ControllerClient, REQUEST_TIMEOUT};
use crate::gate::evaluator::STATEMENTS_PATH;

const SUBMIT_STATEMENT: &str = "submitting a statement";

/// The controller's answer to a stored statement (201).
#[derive(Deserialize)]
struct Stored {
    id: u64,
}

impl ControllerClient {
    /// Signs `statement` with this node's identity key (its issuer should be this node).
    pub fn sign_statement(&self, statement: Statement) -> Result<SignedStatement, StatementError> {
        statement.sign(&self.identity)
    }

    /// Submits `statement`, signed by this node. `Ok` with the id the controller stored it
    /// under.
    pub async fn submit_statement(&self, statement: &SignedStatement) -> Result<u64, ClientError> {
        let body = statement.encode();
        let mut attempts = self.instances.urls().len();
        loop {
            let (index, request) = self.statement_request(&body);
            let result = self.note(index, send_statement(request).await);
            attempts = attempts.saturating_sub(1);
            match result {
                Err(ClientError::Http { .. } | ClientError::Server { .. }) if attempts > 0 => {}
                other => return other,
            }
        }
    }

    /// The signed request carrying `body` to the instance in use (returned with it).
    fn statement_request(&self, body: &[u8]) -> (usize, RequestBuilder) {
        let (index, request) = self.signed(Method::POST, STATEMENTS_PATH, body.to_vec());
        let request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(REQUEST_TIMEOUT);
        (index, request)
    }
}

async fn send_statement(request: RequestBuilder) -> Result<u64, ClientError> {
    let response = request
        .send()
        .await
        .map_err(|e| http_error(SUBMIT_STATEMENT, e))?;
    if !response.status().is_success() {
        return Err(refusal(SUBMIT_STATEMENT, response).await);
    }
    let stored: Stored = response.json().await.map_err(|e| ClientError::Response {
        what: SUBMIT_STATEMENT,
        reason: format!("no statement id in the answer: {e}"),
    })?;
    Ok(stored.id)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use axum::Router;
    use meshtun_proto::auth::{RequestSignature, HEADER_NODE};
    use meshtun_proto::statement::{EvidenceDigest, Issuer, Statement};
    use meshtun_proto::{IdentityKey, KeySet, PrivateKey};

    use super::*;

    fn node_key() -> IdentityKey {
        IdentityKey::from_bytes([7; 32])
    }

    fn controller_key() -> IdentityKey {
        IdentityKey::from_bytes([9; 32])
    }

    fn client(urls: &[String]) -> ControllerClient {
        ControllerClient::with_instances(
            urls,
            KeySet::one(controller_key().public()),
            "node-a",
            node_key(),
            PrivateKey::generate(),
        )
        .unwrap()
    }

    fn observation() -> SignedStatement {
        Statement {
            issuer: Issuer::Node("node-a".into()),
            subject: "node-b".into(),
            scores: BTreeMap::from([("reachable".to_owned(), 1.0)]),
            evaluated_at_ms: 1_800_000_000_000,
            evidence: EvidenceDigest::of(b"{}"),
        }
        .sign(&node_key())
        .unwrap()
    }

    /// Checks a request as the controller does: the request signature by the node over
    /// `POST /v1/statements` and the body, naming the pinned controller key (and no other
    /// key verifies it), and the statement signed by the node's identity key.
    fn check_signed(headers: &HeaderMap, body: &[u8]) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let signature = RequestSignature::from_headers(header).expect("signature headers");
        assert_eq!(header(HEADER_NODE), Some("node-a"));
        let (node, controller) = (node_key().public(), controller_key().public());
        let path = "/v1/statements";
        signature
            .verify(&node, &controller, "POST", path, body)
            .expect("request signature");
        let other = IdentityKey::from_bytes([8; 32]).public();
        assert!(signature
            .verify(&other, &controller, "POST", path, body)
            .is_err());
        assert!(signature.verify(&node, &other, "POST", path, body).is_err());
        let statement = SignedStatement::decode(body).expect("a signed statement");
        statement.verify(&node).expect("statement signature");
    }

    #[test]
    fn the_request_is_signed_by_the_node_for_the_statements_path() {
        let client = client(&["http://192.0.2.1:8700".into()]);
        let body = observation().encode();
        let (index, request) = client.statement_request(&body);
        assert_eq!(index, 0);
        let request = request.build().unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.url().as_str(),
            "http://192.0.2.1:8700/v1/statements"
        );
        assert_eq!(
            request.headers().get("content-type").unwrap(),
            "application/json"
        );
        let sent = request.body().and_then(|b| b.as_bytes()).unwrap();
        assert_eq!(sent, body.as_slice());
        check_signed(request.headers(), sent);
    }

    /// A stub instance answering every statement with `status` and `answer`, counting hits.
    async fn stub(status: StatusCode, answer: &'static str) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let handler = move |State(hits): State<Arc<AtomicUsize>>,
                            headers: HeaderMap,
                            body: Bytes| async move {
            hits.fetch_add(1, Ordering::SeqCst);
            check_signed(&headers, &body);
            (status, answer)
        };
        let app = Router::new()
            .route(STATEMENTS_PATH, post(handler))
            .with_state(hits.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, hits)
    }

    /// A lost instance (5xx) is left for the next, which stores the statement; a refusal is
    /// returned with its reason and not taken to another instance.
    #[tokio::test]
    async fn a_lost_instance_is_skipped_and_a_refusal_is_returned() {
        let (broken, broken_hits) = stub(StatusCode::SERVICE_UNAVAILABLE, "down").await;
        let (working, working_hits) = stub(StatusCode::CREATED, r#"{"id":42}"#).await;
        let failover = client(&[broken, working.clone()]);
        assert_eq!(failover.submit_statement(&observation()).await.unwrap(), 42);
        assert_eq!(broken_hits.load(Ordering::SeqCst), 1);
        assert_eq!(failover.url(), working);

        let why = r#"{"error":"a node's statement about itself is not an observation"}"#;
        let (refusing, refusing_hits) = stub(StatusCode::UNPROCESSABLE_ENTITY, why).await;
        let refused = client(&[refusing, working]);
        let error = refused.submit_statement(&observation()).await.unwrap_err();
        assert!(
            matches!(&error, ClientError::Rejected { reason, .. } if reason.contains("about itself")),
            "{error}"
        );
        assert_eq!(refusing_hits.load(Ordering::SeqCst), 1);
        assert_eq!(
            working_hits.load(Ordering::SeqCst),
            1,
            "not retried elsewhere"
        );

        // Every instance lost: the last failure, each instance tried once.
        let (down, down_hits) = stub(StatusCode::BAD_GATEWAY, "down").await;
        let error = client(&[down]).submit_statement(&observation()).await;
        assert!(
            matches!(error, Err(ClientError::Server { status: 502, .. })),
            "{error:?}"
        );
        assert_eq!(down_hits.load(Ordering::SeqCst), 1);

        // A success without an id is malformed.
        let (odd, _) = stub(StatusCode::CREATED, "{}").await;
        let error = client(&[odd]).submit_statement(&observation()).await;
        assert!(
            matches!(error, Err(ClientError::Response { .. })),
            "{error:?}"
        );
    }
}
