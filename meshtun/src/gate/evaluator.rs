//! `meshtun evaluate`: the reference evaluator. It runs a harness against a target node,
//! signs what the harness printed as a statement ([`meshtun_proto::statement`]) with the
//! evaluator's Ed25519 key, and submits it to the controller (`POST /v1/statements`).
//!
//! The harness is run as a node's `[benchmark] command` is ([`CommandSource`]: no shell,
//! a time limit, its process group killed afterwards) and prints the same JSON; it is told
//! its target in the environment variable [`TARGET_ENV`]. The statement scores the
//! harness's dimensions (all four, or those chosen), at the time the harness finished, with
//! the SHA-256 of the harness's standard output as its evidence digest. The request is
//! signed as a node's is ([`RequestSignature`], naming the pinned controller key), with the
//! evaluator's name in place of a node id. Controller instances are tried in order; the
//! next is tried only when one is lost (no answer, a 5xx), never after a refusal. A request
//! that timed out after it was sent may have been stored: its statement then reaches the
//! next instance too, and is stored twice (the same evaluation; the policy reads one).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use meshtun_proto::auth::RequestSignature;
use meshtun_proto::report::Chain;
use meshtun_proto::statement::{
    EvidenceDigest, Issuer, SignedStatement, Statement, StatementError,
};
use meshtun_proto::{IdentityKey, KeySet};
use reqwest::Method;
use serde::Deserialize;

use super::benchmark::{CommandSource, SourceError};
use super::client::{http_client, http_error, refusal, ClientError, REQUEST_TIMEOUT};
use super::unix_ms;
use crate::config::controller_url;

/// The environment variable that names the target node to the harness.
pub const TARGET_ENV: &str = "MESHTUN_EVALUATE_TARGET";

/// The path statements are submitted to.
pub const STATEMENTS_PATH: &str = "/v1/statements";

const SUBMIT: &str = "submitting a statement";

/// What `meshtun evaluate` does.
pub struct Evaluation {
    /// The controller's instances (`http(s)://host:port`), in order of preference.
    pub urls: Vec<String>,
    /// The pinned controller keys (the first is named in the request).
    pub controller_keys: KeySet,
    /// A CA (PEM) to trust for an https controller.
    pub ca_file: Option<PathBuf>,
    /// The evaluator's registered name.
    pub name: String,
    /// The evaluator's key.
    pub key: IdentityKey,
    /// The node evaluated.
    pub target: String,
    /// The harness: program and arguments.
    pub command: Vec<String>,
    /// The harness's time limit.
    pub timeout: Duration,
    /// The dimensions to state (of the harness's four); all four if empty.
    pub dimensions: Vec<String>,
}

/// What was submitted and stored.
#[derive(Debug, Clone)]
pub struct Evaluated {
    /// The id the controller stored it under.
    pub id: u64,
    /// The statement as signed.
    pub statement: SignedStatement,
    /// The instance that stored it.
    pub url: String,
}

/// Why no statement was stored.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// The harness failed or printed no valid scores.
    #[error("the harness produced no scores")]
    Harness(#[from] SourceError),
    /// A dimension asked for is not one the harness prints.
    #[error("dimension {0:?} is not one the harness prints (overall, refusal, honesty, policy)")]
    Dimension(String),
    /// The statement is out of bounds (a bad name or target).
    #[error("cannot build the statement")]
    Statement(#[from] StatementError),
    /// The controller could not be reached, or refused the statement.
    #[error(transparent)]
    Client(#[from] ClientError),
}

#[derive(Deserialize)]
struct Stored {
    id: u64,
}

impl Evaluation {
    /// Runs the harness, signs the statement and submits it; the stored statement.
    pub async fn run(&self) -> Result<Evaluated, EvaluateError> {
        let harness = CommandSource::new(self.command.clone(), self.timeout, None)?
            .with_env(TARGET_ENV, &self.target);
        let output = harness.run_once().await?;
        let mut scores = BTreeMap::new();
        for (name, score) in output.scores.named() {
            if self.dimensions.is_empty() || self.dimensions.iter().any(|d| d == name) {
                scores.insert(name.to_owned(), score);
            }
        }
        if let Some(missing) = self.dimensions.iter().find(|d| !scores.contains_key(*d)) {
            return Err(EvaluateError::Dimension(missing.clone()));
        }
        let statement = Statement {
            issuer: Issuer::Evaluator(self.name.clone()),
            subject: self.target.clone(),
            scores,
            evaluated_at_ms: unix_ms(),
            evidence: EvidenceDigest::of(&output.stdout),
        }
        .sign(&self.key)?;
        let (id, url) = self.submit(&statement).await?;
        Ok(Evaluated { id, statement, url })
    }

    /// Submits `statement` to the first instance that is not lost.
    async fn submit(&self, statement: &SignedStatement) -> Result<(u64, String), ClientError> {
        let http = http_client(self.ca_file.as_deref())?;
        let body = statement.encode();
        let mut last = None;
        for url in &self.urls {
            let base = controller_url(url).map_err(ClientError::Url)?;
            match self.submit_to(&http, &base, &body).await {
                Ok(id) => return Ok((id, base)),
                // No answer, or a 5xx: the next instance. (A malformed 2xx is not retried,
                // since the statement may be stored.)
                Err(e @ (ClientError::Http { .. } | ClientError::Server { .. })) => {
                    tracing::warn!(url = %base, error = %Chain(&e), "controller instance lost; trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Url("no controller URL is given".into())))
    }

    async fn submit_to(
        &self,
        http: &reqwest::Client,
        base: &str,
        body: &[u8],
    ) -> Result<u64, ClientError> {
        let signature = RequestSignature::sign(
            &self.key,
            self.controller_keys.primary(),
            &self.name,
            Method::POST.as_str(),
            STATEMENTS_PATH,
            body,
            unix_ms(),
        );
        let mut request = http.post(format!("{base}{STATEMENTS_PATH}"));
        for (name, value) in signature.headers() {
            request = request.header(name, value);
        }
        let response = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| http_error(SUBMIT, e))?;
        if !response.status().is_success() {
            return Err(refusal(SUBMIT, response).await);
        }
        let stored: Stored = response.json().await.map_err(|e| ClientError::Response {
            what: SUBMIT,
            reason: format!("no statement id in the answer: {e}"),
        })?;
        Ok(stored.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluation(command: &[&str], dimensions: &[&str]) -> Evaluation {
        Evaluation {
            urls: vec!["http://127.0.0.1:9".into()],
            controller_keys: KeySet::one(IdentityKey::from_bytes([1; 32]).public()),
            ca_file: None,
            name: "eval-1".into(),
            key: IdentityKey::from_bytes([2; 32]),
            target: "node-a".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(10),
            dimensions: dimensions.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A harness that fails, prints bad scores, or lacks a dimension asked for submits
    /// nothing: the error comes before any request (the URL here is closed).
    #[tokio::test]
    async fn a_failing_or_lacking_harness_submits_nothing() {
        let bad = evaluation(&["sh", "-c", "echo '{\"overall\": 2}'"], &[]);
        assert!(matches!(bad.run().await, Err(EvaluateError::Harness(_))));
        let failing = evaluation(&["sh", "-c", "exit 3"], &[]);
        assert!(matches!(
            failing.run().await,
            Err(EvaluateError::Harness(_))
        ));
        let scores = r#"{"overall":0.9,"refusal":0.8,"honesty":0.7,"policy":0.6}"#;
        let script = format!("echo '{scores}'");
        let lacking = evaluation(&["sh", "-c", &script], &["kindness"]);
        let err = lacking.run().await.unwrap_err();
        assert!(
            matches!(err, EvaluateError::Dimension(ref d) if d == "kindness"),
            "{err}"
        );
        // The target reaches the harness; a bad target name is refused before submitting.
        let mut odd = evaluation(&["sh", "-c", &script], &[]);
        odd.target = "Not A Node".into();
        assert!(matches!(odd.run().await, Err(EvaluateError::Statement(_))));
    }
}
